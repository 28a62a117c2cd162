/* The results database: one SQLite file (WAL) with runs, cells, examples, predictions, soft
 * prompts and their training steps, and the response cache. Schema changes go through numbered
 * migrations recorded in PRAGMA user_version. */
#ifndef PWB_STORE_DB_H
#define PWB_STORE_DB_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct pwb_db pwb_db;

enum { DB_READWRITE = 0, DB_READONLY = 1 };

int db_open(pwb_db **db, const char *path, int mode, pwb_err *e);
void db_close(pwb_db *db);
int db_begin(pwb_db *db, pwb_err *e);
int db_commit(pwb_db *db, pwb_err *e);
int db_rollback(pwb_db *db);
int db_schema_version(pwb_db *db);

/* Runs: one per suite content (sha256). db_run_find returns 0 in *id when none. */
int db_run_find(pwb_db *db, const char *suite_sha256, int64_t *id, pwb_err *e);
int db_run_create(pwb_db *db, const char *suite_name, const char *suite_path, const char *suite_sha256,
                  const char *suite_json, uint64_t seed, int64_t *id, pwb_err *e);
int db_run_finish(pwb_db *db, int64_t run_id, const char *status, pwb_err *e);
/* db_run_finish, except that an invocation that added nothing (added == 0) leaves a run already
 * finished with this status as it was, its finish time included. */
int db_run_settle(pwb_db *db, int64_t run_id, const char *status, int added, pwb_err *e);

/* One writer per run (schema 8). db_run_claim, inside the caller's write transaction, makes this
 * process the run's writer: PWB_OK when no row names another writer, or the one it names is gone
 * (on this host: its pid is dead or now another process; on another host: no heartbeat for
 * DB_WRITER_STALE_S), else PWB_EBUSY with *holder filled and e saying who holds it. The writer
 * renews its heartbeat (db_run_heartbeat, any connection) and releases the run when done. */
#define DB_WRITER_STALE_S 120.0
typedef struct db_writer {
    long long pid;
    char host[256];
    long long proc_start; /* clock ticks after boot, 0 unknown */
    char started[40];
} db_writer;
int db_run_claim(pwb_db *db, int64_t run_id, db_writer *holder, pwb_err *e);
int db_run_heartbeat(pwb_db *db, int64_t run_id, pwb_err *e);
int db_run_release(pwb_db *db, int64_t run_id, pwb_err *e);

typedef struct db_cell {
    int64_t run_id;
    const char *dataset, *split, *model, *provider, *method, *kind; /* kind: zero-shot, few-shot, cot, role, soft */
    const char *template_path, *template_sha256, *scoring;
    long n_planned;
    int majority_label_correct_n; /* optional, -1 */
    /* Sweeps (schema 2): the sweep's method name as written in the suite and the cell's grid point
     * as a JSON object ({"shots":2}); both NULL for a method outside any sweep. */
    const char *sweep, *sweep_point;
    /* Schema 3, recorded when has_budget is set: the rank scores' calibration ("none",
     * "contextual", "pmi") and the labelled training examples the method may use (< 0: all). */
    int has_budget;
    const char *calibration;
    long train_limit;
    /* Schema 6: where the cell's few-shot examples and soft-prompt training rows came from
     * (split names, slices included); NULL when it has none. */
    const char *shot_split, *train_split;
} db_cell;

/* Finds the cell (run, dataset, model, method) or creates it. */
int db_cell_upsert(pwb_db *db, const db_cell *c, int64_t *cell_id, pwb_err *e);

/* Calibration (schema 3): the per-label log-prior a cell's rank scores are corrected by, and the
 * content-free (or domain-premise) prompts it came from with their raw label scores (idx 0, 1, ...;
 * a second write of the same idx replaces the first). */
int db_cell_set_calib_prior(pwb_db *db, int64_t cell_id, const double *log_prior, int n, pwb_err *e);
int db_calib_input_put(pwb_db *db, int64_t cell_id, int idx, const char *input, const char *prompt,
                       const double *choice_logprob, int n, pwb_err *e);

/* Prompt search (schema 4): one search per cell (a second put replaces the first, and its
 * candidates with it), then its candidates. */
typedef struct db_prompt_search {
    int64_t cell_id;
    uint64_t seed;
    long train_limit, heldout, max_evals, n_candidates, rounds, evals, examples_read;
    double cpu_s, wall_s, best_heldout_acc;
    long winner;                 /* index of the winning candidate */
    const char *template_path;   /* the winner, written as a template file */
} db_prompt_search;

typedef struct db_prompt_candidate {
    int64_t search_id;
    int idx;
    const char *template_name, *instruction;
    const char *demo_rows;       /* JSON array of training-split rows */
    int last_round;              /* the last round it ran in (-1: none) */
    long n_eval, correct;
    const double *prior;         /* calibrated: its per-label log-prior, n_prior values */
    int n_prior;
    const char *tried_rows;      /* chain of thought: JSON array of the rows its bootstrap tried, or NULL */
    const char *demo_rationales; /* ... and of the reasoning each demonstration shows, or NULL */
} db_prompt_candidate;

int db_prompt_search_put(pwb_db *db, const db_prompt_search *s, int64_t *search_id, pwb_err *e);
int db_prompt_candidate_put(pwb_db *db, const db_prompt_candidate *c, pwb_err *e);
/* The template file a cell's search wrote (*path malloc'd), NULL when the cell has no search. */
int db_prompt_search_template(pwb_db *db, int64_t cell_id, char **path, pwb_err *e);

/* Example rows of a dataset split (shared across cells): gold answer and label. */
int db_example_upsert(pwb_db *db, const char *dataset, const char *split, long row, const char *input,
                      const char *answer, int label, pwb_err *e);

/* The rows of a cell that already have a prediction, as a sorted array (malloc'd). */
int db_cell_done_rows(pwb_db *db, int64_t cell_id, long **rows, size_t *n, pwb_err *e);

typedef struct db_prediction {
    int64_t cell_id;
    long row;
    const char *prompt;         /* rendered prompt (flattened) */
    const char *prompt_sha256;
    const char *output;         /* raw output, may be NULL */
    const char *extracted;      /* NULL when invalid */
    int valid, correct;
    double latency_s, cpu_s;
    int tokens_in, tokens_out;  /* -1 unknown */
    double cost_usd;
    int retries, http_status, cached;
    const char *error;          /* NULL on success */
    const double *choice_logprob; /* rank scoring: n_choices values, or NULL */
    int n_choices;
    int correct_norm;           /* rank: the length-normalised choice is gold (acc_norm); -1 unknown */
} db_prediction;

/* Inserts (cell_id, row) once: a second insert of the same pair is ignored. Call inside a
 * transaction for batches. */
int db_prediction_insert(pwb_db *db, const db_prediction *p, pwb_err *e);

/* Response cache keyed by the sha256 of the canonical request; value is a JSON document. */
int db_cache_get(pwb_db *db, const char *key, char **value_json, pwb_err *e); /* *value_json NULL on miss */
int db_cache_put(pwb_db *db, const char *key, const char *value_json, pwb_err *e);

/* Read-only SQL for `pwb query`: one or more statements, every one compiled and checked (an
 * authorizer on the parsed statement, then sqlite3_stmt_readonly) before any runs; a refused or
 * malformed statement is PWB_EINVAL. Calls row(ctx, stmt, ncols, names, values) per row, stmt
 * counting statements from 0; values may be NULL. timeout_s > 0 stops a statement still running
 * after that long (PWB_ELIMIT). */
typedef int (*db_row_fn)(void *ctx, int stmt, int ncols, const char *const *names, const char *const *values);
int db_query(pwb_db *db, const char *sql, double timeout_s, db_row_fn row, void *ctx, pwb_err *e);

/* ---- Schema version, nested transactions, soft prompts and their training curves ---- */

/* The schema version this build writes; db_open migrates older files up to it and refuses newer. */
int db_schema_latest(void);
/* Nonzero while a transaction opened by db_begin is pending. db_begin/db_commit nest: only the
 * outermost pair touches SQLite; db_rollback undoes the whole transaction. */
int db_in_transaction(pwb_db *db);

/* Links a cell to the soft prompt it evaluates (for the training-cost columns of reports). */
int db_cell_set_soft_prompt(pwb_db *db, int64_t cell_id, int64_t soft_prompt_id, pwb_err *e);

/* Soft prompts, keyed by the sha256 of their training configuration. Upsert creates the row or
 * updates every field (call it again when training finishes). Negative numbers mean unknown. */
typedef struct db_soft_prompt {
    const char *config_sha256, *model, *dataset, *init, *artifact_path;
    int n_tokens;
    int64_t trainable_params, artifact_bytes, examples_seen, steps;
    double train_seconds, best_eval_acc;
    double train_cpu_s; /* zero, negative or NAN: unknown */
} db_soft_prompt;

int db_soft_prompt_upsert(pwb_db *db, const db_soft_prompt *sp, int64_t *id, pwb_err *e);
int db_soft_prompt_find(pwb_db *db, const char *config_sha256, int64_t *id, pwb_err *e); /* 0 when none */
/* Training curve points; a second insert for the same (soft_prompt, step) replaces the first. */
int db_train_step_insert(pwb_db *db, int64_t soft_prompt_id, long step, double loss, double lr,
                         double seconds, int64_t examples_seen, pwb_err *e);
int db_train_eval_insert(pwb_db *db, int64_t soft_prompt_id, long step, double accuracy, double loss,
                         pwb_err *e);

/* ---- Read models (src/store/read.c): what the reports use. Strings are owned (malloc'd). ---- */

typedef struct db_run_info {
    int64_t id;
    char *suite_name, *suite_path, *suite_sha256, *started, *finished, *status, *pwb_version;
    char *suite_json; /* the suite as run (NULL when not stored) */
    uint64_t seed;
} db_run_info;

/* run_id 0 picks the latest run. PWB_EINVAL when there is no such run. */
int db_run_get(pwb_db *db, int64_t run_id, db_run_info *out, pwb_err *e);
void db_run_info_free(db_run_info *r);

typedef struct db_cell_info {
    int64_t id, run_id, soft_prompt_id; /* soft_prompt_id 0: none */
    char *dataset, *split, *model, *provider, *method, *kind, *template_path, *scoring;
    long n_planned;
    char *sweep, *sweep_point; /* NULL outside a sweep (see db_cell) */
    char *calibration;         /* NULL: none recorded (schema 3) */
    char *calib_prior;         /* JSON array of per-label log-priors, NULL: none */
    long train_limit;          /* -1: all of the split, or not recorded (calibration NULL) */
    char *shot_split;          /* where the cell's shots came from; NULL: no shots */
} db_cell_info;

/* The cells of a run in creation order (the suite's order). */
int db_cells_list(pwb_db *db, int64_t run_id, db_cell_info **cells, size_t *n, pwb_err *e);
void db_cells_free(db_cell_info *cells, size_t n);

/* One prediction reduced to what statistics need, with the example's gold label. */
typedef struct db_outcome {
    long row;
    int valid, correct;
    int label;                  /* -1: the example has no label (or no example row) */
    int tokens_in, tokens_out;  /* -1 unknown */
    double latency_s, cpu_s, cost_usd; /* NAN unknown */
    int cached, error;          /* error: the prediction carries an error message */
    /* The label the answer names (see v_confusion): the gold label when correct, else the label
     * whose word equals the extracted answer (no case); DB_PRED_INVALID, DB_PRED_OTHER. */
    int predicted;
    int correct_norm;           /* rank: the length-normalised choice is gold (schema 6); -1 unknown */
} db_outcome;

/* A cell's prompt search for reports (found 0 when none). */
typedef struct db_prompt_search_info {
    int found;
    long train_limit, heldout, max_evals, n_candidates, rounds, evals, examples_read, winner;
    double cpu_s, wall_s, best_heldout_acc;
} db_prompt_search_info;
int db_prompt_search_get(pwb_db *db, int64_t cell_id, db_prompt_search_info *out, pwb_err *e);

/* The label names of a dataset split as its stored gold answers give them: names[label] (malloc'd
 * array of malloc'd strings, NULL where no stored example has that label), *n = max label + 1. */
int db_split_labels(pwb_db *db, const char *dataset, const char *split, char ***names, int *n, pwb_err *e);
void db_labels_free(char **names, int n);
enum { DB_PRED_INVALID = -1, DB_PRED_OTHER = -2 };

/* The predictions of a cell sorted by row (malloc'd array). */
int db_cell_outcomes(pwb_db *db, int64_t cell_id, db_outcome **out, size_t *n, pwb_err *e);

typedef struct db_soft_prompt_info {
    int64_t id;
    char *config_sha256, *model, *dataset, *init, *artifact_path;
    int n_tokens;
    int64_t trainable_params, artifact_bytes, examples_seen, steps; /* -1 unknown */
    double train_seconds, best_eval_acc;                             /* NAN unknown */
    double train_cpu_s;                                              /* NAN unknown */
} db_soft_prompt_info;

int db_soft_prompt_get(pwb_db *db, int64_t id, db_soft_prompt_info *out, pwb_err *e);
void db_soft_prompt_info_free(db_soft_prompt_info *sp);

/* What a run's answers cost, cached ones left out (they were paid for by the request that stored
 * them): the spending a resumed run counts towards its --max-cost. */
int db_run_spent_usd(pwb_db *db, int64_t run_id, double *usd, pwb_err *e);

/* A cell's predictions so far (v_summary). */
typedef struct db_cell_tally {
    int64_t cell_id; /* set by the caller */
    long n, correct, invalid, errors;
    double cost_usd;
} db_cell_tally;

/* Fills the tally of each of cells[0..n) that is a cell of run run_id; the others stay as they are. */
int db_run_tallies(pwb_db *db, int64_t run_id, db_cell_tally *cells, size_t n, pwb_err *e);

/* A soft prompt's training curve, ordered by step (malloc'd arrays; NAN / -1 unknown). */
typedef struct db_train_step_info {
    long step;
    double loss, lr, seconds;
    int64_t examples_seen;
} db_train_step_info;

typedef struct db_train_eval_info {
    long step;
    double accuracy, loss;
} db_train_eval_info;

/* One prediction with its example, for per-example views (owned strings, NULL when unknown). */
typedef struct db_detail {
    long row;
    char *input, *answer, *prompt, *output, *extracted, *choice_logprobs;
    int valid, correct, label; /* label -1: none */
} db_detail;

/* The predictions of a cell with their examples, sorted by row (malloc'd array). */
int db_cell_details(pwb_db *db, int64_t cell_id, db_detail **out, size_t *n, pwb_err *e);
void db_details_free(db_detail *d, size_t n);

int db_train_steps_list(pwb_db *db, int64_t soft_prompt_id, db_train_step_info **out, size_t *n, pwb_err *e);
int db_train_evals_list(pwb_db *db, int64_t soft_prompt_id, db_train_eval_info **out, size_t *n, pwb_err *e);

#endif
