/* The schema as numbered migrations. Migration i (1-based) takes a database from user_version
 * i-1 to i. Never edit a migration that has shipped: append a new one. docs/database.md
 * documents the tables and views for users of `pwb query`. */
#include "store/db_internal.h"

/* Timestamps are ISO-8601 UTC text so that `pwb query` shows them readably and they sort. */
#define NOW "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))"

static const char migration_1[] =
    "CREATE TABLE runs (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  suite_name TEXT NOT NULL,\n"
    "  suite_path TEXT,\n"
    "  suite_sha256 TEXT NOT NULL,\n"
    "  suite_json TEXT,\n"
    "  seed INTEGER NOT NULL,\n"
    "  started TEXT NOT NULL DEFAULT " NOW ",\n"
    "  finished TEXT,\n"
    "  status TEXT NOT NULL DEFAULT 'running',\n"
    "  pwb_version TEXT\n"
    ");\n"
    "CREATE INDEX runs_suite ON runs(suite_sha256);\n"
    "\n"
    "CREATE TABLE soft_prompts (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  config_sha256 TEXT NOT NULL UNIQUE,\n"
    "  model TEXT NOT NULL,\n"
    "  dataset TEXT NOT NULL,\n"
    "  n_tokens INTEGER,\n"
    "  init TEXT,\n"
    "  artifact_path TEXT,\n"
    "  trainable_params INTEGER,\n"
    "  artifact_bytes INTEGER,\n"
    "  train_seconds REAL,\n"
    "  examples_seen INTEGER,\n"
    "  steps INTEGER,\n"
    "  best_eval_acc REAL,\n"
    "  created TEXT NOT NULL DEFAULT " NOW ",\n"
    "  updated TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"
    "\n"
    "CREATE TABLE train_steps (\n"
    "  soft_prompt_id INTEGER NOT NULL REFERENCES soft_prompts(id) ON DELETE CASCADE,\n"
    "  step INTEGER NOT NULL,\n"
    "  loss REAL,\n"
    "  lr REAL,\n"
    "  seconds REAL,\n"
    "  examples_seen INTEGER,\n"
    "  PRIMARY KEY (soft_prompt_id, step)\n"
    ") WITHOUT ROWID;\n"
    "\n"
    "CREATE TABLE train_evals (\n"
    "  soft_prompt_id INTEGER NOT NULL REFERENCES soft_prompts(id) ON DELETE CASCADE,\n"
    "  step INTEGER NOT NULL,\n"
    "  accuracy REAL,\n"
    "  loss REAL,\n"
    "  PRIMARY KEY (soft_prompt_id, step)\n"
    ") WITHOUT ROWID;\n"
    "\n"
    "CREATE TABLE cells (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  dataset TEXT NOT NULL,\n"
    "  split TEXT NOT NULL,\n"
    "  model TEXT NOT NULL,\n"
    "  provider TEXT,\n"
    "  method TEXT NOT NULL,\n"
    "  kind TEXT,\n"
    "  template_path TEXT,\n"
    "  template_sha256 TEXT,\n"
    "  scoring TEXT,\n"
    "  n_planned INTEGER,\n"
    "  soft_prompt_id INTEGER REFERENCES soft_prompts(id) ON DELETE SET NULL,\n"
    "  UNIQUE (run_id, dataset, model, method)\n"
    ");\n"
    "\n"
    "CREATE TABLE examples (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  dataset TEXT NOT NULL,\n"
    "  split TEXT NOT NULL,\n"
    "  row INTEGER NOT NULL,\n"
    "  input TEXT,\n"
    "  answer TEXT,\n"
    "  label INTEGER,\n"
    "  UNIQUE (dataset, split, row)\n"
    ");\n"
    "\n"
    "CREATE TABLE predictions (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE,\n"
    "  row INTEGER NOT NULL,\n"
    "  prompt TEXT,\n"
    "  prompt_sha256 TEXT,\n"
    "  output TEXT,\n"
    "  extracted TEXT,\n"
    "  valid INTEGER NOT NULL,\n"
    "  correct INTEGER NOT NULL,\n"
    "  latency_s REAL,\n"
    "  cpu_s REAL,\n"
    "  tokens_in INTEGER,\n"
    "  tokens_out INTEGER,\n"
    "  cost_usd REAL,\n"
    "  retries INTEGER,\n"
    "  http_status INTEGER,\n"
    "  cached INTEGER NOT NULL DEFAULT 0,\n"
    "  error TEXT,\n"
    "  choice_logprobs TEXT,\n"
    "  created TEXT NOT NULL DEFAULT " NOW ",\n"
    "  UNIQUE (cell_id, row)\n"
    ");\n"
    "\n"
    "CREATE TABLE cache (\n"
    "  key TEXT PRIMARY KEY,\n"
    "  value TEXT NOT NULL,\n"
    "  created TEXT NOT NULL DEFAULT " NOW ",\n"
    "  hits INTEGER NOT NULL DEFAULT 0\n"
    ");\n"
    "\n"
    "CREATE VIEW v_runs AS\n"
    "SELECT r.id AS run_id, r.suite_name, r.suite_path, r.suite_sha256, r.seed, r.started,\n"
    "       r.finished, r.status, r.pwb_version,\n"
    "       (SELECT count(*) FROM cells c WHERE c.run_id = r.id) AS n_cells,\n"
    "       (SELECT coalesce(sum(c.n_planned), 0) FROM cells c WHERE c.run_id = r.id) AS n_planned,\n"
    "       (SELECT count(*) FROM predictions p JOIN cells c ON c.id = p.cell_id\n"
    "         WHERE c.run_id = r.id) AS n_predictions,\n"
    "       (SELECT sum(p.cost_usd) FROM predictions p JOIN cells c ON c.id = p.cell_id\n"
    "         WHERE c.run_id = r.id) AS cost_usd\n"
    "FROM runs r;\n"
    "\n"
    "CREATE VIEW v_predictions AS\n"
    "SELECT p.id AS prediction_id, c.run_id, r.suite_name, p.cell_id, c.dataset, c.split, c.model,\n"
    "       c.provider, c.method, c.kind, c.scoring, p.row, x.input, x.answer, x.label,\n"
    "       p.prompt, p.prompt_sha256, p.output, p.extracted, p.valid, p.correct, p.latency_s,\n"
    "       p.cpu_s, p.tokens_in, p.tokens_out, p.cost_usd, p.retries, p.http_status, p.cached,\n"
    "       p.error, p.choice_logprobs, p.created\n"
    "FROM predictions p\n"
    "JOIN cells c ON c.id = p.cell_id\n"
    "JOIN runs r ON r.id = c.run_id\n"
    "LEFT JOIN examples x ON x.dataset = c.dataset AND x.split = c.split AND x.row = p.row;\n"
    "\n"
    "CREATE VIEW v_summary AS\n"
    "SELECT c.run_id, c.id AS cell_id, c.dataset, c.split, c.model, c.provider, c.method, c.kind,\n"
    "       c.scoring, c.n_planned,\n"
    "       count(p.id) AS n,\n"
    "       coalesce(sum(p.correct), 0) AS correct,\n"
    "       CASE WHEN count(p.id) > 0 THEN 1.0 * sum(p.correct) / count(p.id) END AS accuracy,\n"
    "       coalesce(sum(p.valid = 0), 0) AS invalid,\n"
    "       coalesce(sum(p.error IS NOT NULL), 0) AS errors,\n"
    "       avg(p.tokens_in) AS mean_tokens_in,\n"
    "       avg(p.tokens_out) AS mean_tokens_out,\n"
    "       coalesce(sum(p.cost_usd), 0) AS total_cost_usd,\n"
    "       avg(p.latency_s) AS mean_latency_s,\n"
    "       coalesce(sum(p.cpu_s), 0) AS total_cpu_s\n"
    "FROM cells c\n"
    "LEFT JOIN predictions p ON p.cell_id = c.id\n"
    "GROUP BY c.id;\n";

/* Migration 2: sweeps. A suite method with a "sweep" expands into one method per grid point; the
 * cell records the sweep it belongs to (the method's name as written) and its point as a JSON
 * object in the sweep's axis order ({"tokens":20,"init":"class"}), so reports group them without
 * parsing method names. v_summary gains the two columns and the soft prompt link, at its end. */
static const char migration_2[] =
    "ALTER TABLE cells ADD COLUMN sweep TEXT;\n"
    "ALTER TABLE cells ADD COLUMN sweep_point TEXT;\n"
    "DROP VIEW v_summary;\n"
    "CREATE VIEW v_summary AS\n"
    "SELECT c.run_id, c.id AS cell_id, c.dataset, c.split, c.model, c.provider, c.method, c.kind,\n"
    "       c.scoring, c.n_planned,\n"
    "       count(p.id) AS n,\n"
    "       coalesce(sum(p.correct), 0) AS correct,\n"
    "       CASE WHEN count(p.id) > 0 THEN 1.0 * sum(p.correct) / count(p.id) END AS accuracy,\n"
    "       coalesce(sum(p.valid = 0), 0) AS invalid,\n"
    "       coalesce(sum(p.error IS NOT NULL), 0) AS errors,\n"
    "       avg(p.tokens_in) AS mean_tokens_in,\n"
    "       avg(p.tokens_out) AS mean_tokens_out,\n"
    "       coalesce(sum(p.cost_usd), 0) AS total_cost_usd,\n"
    "       avg(p.latency_s) AS mean_latency_s,\n"
    "       coalesce(sum(p.cpu_s), 0) AS total_cpu_s,\n"
    "       c.sweep, c.sweep_point, c.soft_prompt_id\n"
    "FROM cells c\n"
    "LEFT JOIN predictions p ON p.cell_id = c.id\n"
    "GROUP BY c.id;\n";

/* Migration 3: calibrated rank scoring and labelled-data budgets. A cell records its calibration
 * ("none", "contextual", "pmi"), the per-label log-prior its rank scores were corrected by (a JSON
 * array in label order; predictions keep the raw log-likelihoods in choice_logprobs, so any row can
 * be re-scored without the model), and the labelled training examples its method may use for shots,
 * search or training (train_limit; 0 for a method that reads none). calib_inputs keeps the
 * content-free prompts the prior came from and their raw label scores. */
static const char migration_3[] =
    "ALTER TABLE cells ADD COLUMN calibration TEXT;\n"
    "ALTER TABLE cells ADD COLUMN calib_prior TEXT;\n"
    "ALTER TABLE cells ADD COLUMN train_limit INTEGER;\n"
    "CREATE TABLE calib_inputs (\n"
    "  cell_id INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE,\n"
    "  idx INTEGER NOT NULL,\n"
    "  input TEXT,\n"
    "  prompt TEXT,\n"
    "  choice_logprobs TEXT,\n"
    "  PRIMARY KEY (cell_id, idx)\n"
    ") WITHOUT ROWID;\n";

/* Migration 4: prompt search. One row per searched cell: its budget (labelled rows of the
 * training split, held-out slice, label rankings allowed), what it spent (rankings, distinct
 * labelled rows read, CPU and wall seconds: the search's cost, as a soft prompt's training), the
 * winner and the template file written for it; and every candidate with its held-out score. */
static const char migration_4[] =
    "CREATE TABLE prompt_searches (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  cell_id INTEGER NOT NULL UNIQUE REFERENCES cells(id) ON DELETE CASCADE,\n"
    "  seed INTEGER,\n"
    "  train_limit INTEGER,\n"
    "  heldout INTEGER,\n"
    "  max_evals INTEGER,\n"
    "  n_candidates INTEGER,\n"
    "  rounds INTEGER,\n"
    "  evals INTEGER,\n"
    "  examples_read INTEGER,\n"
    "  cpu_s REAL,\n"
    "  wall_s REAL,\n"
    "  winner INTEGER,\n"
    "  best_heldout_acc REAL,\n"
    "  template_path TEXT,\n"
    "  created TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"
    "CREATE TABLE prompt_candidates (\n"
    "  search_id INTEGER NOT NULL REFERENCES prompt_searches(id) ON DELETE CASCADE,\n"
    "  idx INTEGER NOT NULL,\n"
    "  template TEXT,\n"
    "  instruction TEXT,\n"
    "  demo_rows TEXT,\n"
    "  last_round INTEGER,\n"
    "  n_eval INTEGER,\n"
    "  correct INTEGER,\n"
    "  accuracy REAL,\n"
    "  calib_prior TEXT,\n"
    "  PRIMARY KEY (search_id, idx)\n"
    ") WITHOUT ROWID;\n";

/* Migration 5: the confusion matrix as a view. A prediction's label is the gold label whose
 * answer word (examples.answer, the card's verbalizer) equals its extracted answer, compared
 * without case; a correct prediction is its gold label whatever it extracted. An invalid answer
 * is -1 ('(invalid)'), a valid one that names no label -2 ('(other)'). Labelled examples only. */
static const char migration_5[] =
    "CREATE VIEW v_confusion AS\n"
    "WITH words AS (\n"
    "  SELECT dataset, split, label, min(answer) AS word FROM examples\n"
    "  WHERE label >= 0 GROUP BY dataset, split, label),\n"
    "pl AS (\n"
    "  SELECT c.run_id, c.id AS cell_id, c.dataset, c.split, c.model, c.method, c.kind, x.label AS gold,\n"
    "         CASE WHEN p.correct THEN x.label WHEN NOT p.valid THEN -1\n"
    "              ELSE coalesce((SELECT w.label FROM words w WHERE w.dataset = c.dataset AND w.split = c.split\n"
    "                             AND lower(w.word) = lower(trim(p.extracted))), -2) END AS predicted\n"
    "  FROM predictions p JOIN cells c ON c.id = p.cell_id\n"
    "  JOIN examples x ON x.dataset = c.dataset AND x.split = c.split AND x.row = p.row\n"
    "  WHERE x.label >= 0)\n"
    "SELECT pl.run_id, pl.cell_id, pl.dataset, pl.split, pl.model, pl.method, pl.kind,\n"
    "       pl.gold, gw.word AS gold_word, pl.predicted,\n"
    "       CASE pl.predicted WHEN -1 THEN '(invalid)' WHEN -2 THEN '(other)' ELSE pw.word END AS predicted_word,\n"
    "       count(*) AS n\n"
    "FROM pl\n"
    "LEFT JOIN words gw ON gw.dataset = pl.dataset AND gw.split = pl.split AND gw.label = pl.gold\n"
    "LEFT JOIN words pw ON pw.dataset = pl.dataset AND pw.split = pl.split AND pw.label = pl.predicted\n"
    "GROUP BY pl.cell_id, pl.gold, pl.predicted;\n";

/* Migration 6: benchmarks in their own format. A cell records the splits its few-shot examples and
 * its soft prompt's training rows came from (slices such as "validation@1[:200]"; NULL: none),
 * and a rank prediction whether the length-normalised choice (log-probability per byte of the
 * continuation, lm-evaluation-harness's acc_norm) is the gold one. */
static const char migration_6[] =
    "ALTER TABLE cells ADD COLUMN shot_split TEXT;\n"
    "ALTER TABLE cells ADD COLUMN train_split TEXT;\n"
    "ALTER TABLE predictions ADD COLUMN correct_norm INTEGER;\n";

/* Migration 7: a tuned prompt's or adapter's training CPU time (all threads), measured by the
 * training job; before it the report could only estimate CPU from wall time. */
static const char migration_7[] = "ALTER TABLE soft_prompts ADD COLUMN train_cpu_s REAL;\n";

/* Migration 8: one writer per run. The process writing a run holds its row: pid, host, the
 * process's start time (clock ticks after boot, /proc; 0 unknown) to tell a reused pid, and a
 * heartbeat it renews while it runs. A second `pwb run` of the same run finds the row and exits
 * (or waits, --wait); a row whose process is gone (same host, pid dead or reused; other host, no
 * heartbeat for a while) is taken over, so a SIGKILL never locks a run for good. */
static const char migration_8[] =
    "CREATE TABLE run_writers (\n"
    "  run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  pid INTEGER NOT NULL,\n"
    "  host TEXT NOT NULL,\n"
    "  proc_start INTEGER NOT NULL DEFAULT 0,\n"
    "  started TEXT NOT NULL DEFAULT " NOW ",\n"
    "  heartbeat TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n";

/* Migration 9: a prompt search's chain-of-thought candidates bootstrap their demonstrations: the
 * demo-pool rows they tried, and the model's own reasoning each kept demonstration shows (JSON
 * arrays; NULL for a candidate that bootstrapped nothing). */
static const char migration_9[] = "ALTER TABLE prompt_candidates ADD COLUMN tried_rows TEXT;\n"
                                  "ALTER TABLE prompt_candidates ADD COLUMN demo_rationales TEXT;\n";

const char *const db_migrations[] = {migration_1, migration_2, migration_3, migration_4, migration_5,
                                     migration_6, migration_7, migration_8, migration_9};
const int db_n_migrations = (int)(sizeof db_migrations / sizeof db_migrations[0]);
