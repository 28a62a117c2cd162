/* Reports on a small synthetic database whose numbers were computed by hand:
 *
 * sst2/validation, model "tiny" (local), 10 examples, labels 0 1 1 1 0 1 1 0 1 1 (majority 1: 7/10)
 *   zs   correct 1 1 0 1 0 1 0 1 0 0 = 5/10, rows 2 and 6 invalid, latency 0.1..1.0 s, cpu 0.05/ex
 *   fs   correct 1 1 1 1 0 0 1 1 1 1 = 8/10 (best), latency 0.2 s, cpu 0.2/ex
 *   cot  rows 0-7 only, correct 1 1 1 1 0 0 0 0 = 4/8, latency 2 s, cpu 1.5/ex
 *   soft correct 1 1 1 1 0 0 0 0 1 1 = 6/10, latency 0.01 s, cpu 0.01/ex
 * McNemar vs fs: zs b=4 c=1 -> p = 2*(1+5)/32 = 0.375; cot b=2 c=0 -> 0.5; soft b=2 c=0 -> 0.5;
 *   baseline (label==1: 0 1 1 1 0 1 1 0 1 1) b=2 c=1 -> 2*(1+3)/8 = 1.
 * zs latency p50 = 0.55 s, p95 = 0.9 + 0.55*0.1 = 0.955 s; CPU-s per 1k: 50, 200, 1500, 10.
 * sst2/validation, model "gpt-x" (openai), rows 0-3, correct 1 1 1 0, $0.002/ex -> $2 per 1k;
 *   baseline over labels 0 1 1 1 -> 3/4, vs zs b=1 c=1 -> p = 1.
 * Wilson 95%: 5/10 [23.7, 76.3], 8/10 [49.0, 94.3], 4/8 [21.5, 78.5], 6/10 [31.3, 83.2],
 *   7/10 [39.7, 89.2], 3/4 [30.1, 95.4], 9/10 [59.6, 98.2]. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report/report.h"
#include "report/svg.h"
#include "unit/report/html_check.h"
#include "unit/report/svg_check.h"

static char tmpdir[256];
static char dbpath[300];

static void teardown(void)
{
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[320];
        snprintf(p, sizeof p, "%s%s", dbpath, suffix[i]);
        unlink(p);
    }
    rmdir(tmpdir);
}

static int64_t cell(pwb_db *db, int64_t run, const char *model, const char *provider, const char *method,
                    const char *kind, long planned)
{
    pwb_err e;
    int64_t id;
    db_cell c = {.run_id = run, .dataset = "sst2", .split = "validation", .model = model, .provider = provider,
                 .method = method, .kind = kind, .scoring = "generate", .n_planned = planned,
                 .majority_label_correct_n = -1};
    cr_assert_eq(db_cell_upsert(db, &c, &id, &e), PWB_OK, "%s", e.msg);
    return id;
}

static void preds(pwb_db *db, int64_t cell_id, const char *correct, int tin, int tout, double lat0, double lat_step,
                  double cpu, double cost, const char *invalid)
{
    pwb_err e;
    for (long r = 0; correct[r]; r++) {
        db_prediction p = {.cell_id = cell_id, .row = r, .prompt = "p", .output = "o",
                           .valid = !(invalid && strchr(invalid, (int)('0' + r))), .correct = correct[r] == '1',
                           .latency_s = lat0 + lat_step * (double)r, .cpu_s = cpu, .tokens_in = tin,
                           .tokens_out = tout, .cost_usd = cost};
        p.extracted = p.valid ? "x" : NULL;
        cr_assert_eq(db_prediction_insert(db, &p, &e), PWB_OK, "%s", e.msg);
    }
}

static void raw_exec(const char *sql)
{
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(dbpath, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(h));
    sqlite3_close(h);
}

static void setup(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/pwb-report-XXXXXX", t && *t ? t : "/tmp");
    cr_assert_not_null(mkdtemp(tmpdir));
    snprintf(dbpath, sizeof dbpath, "%s/r.db", tmpdir);
    pwb_db *db;
    pwb_err e;
    cr_assert_eq(db_open(&db, dbpath, DB_READWRITE, &e), PWB_OK, "%s", e.msg);
    int64_t run, run2;
    cr_assert_eq(db_run_create(db, "toy", "suites/toy.json", "0123456789abcdef0123", "{}", 7, &run, &e), PWB_OK);
    const char *labels = "0111011011";
    for (long r = 0; r < 10; r++) {
        char in[32];
        snprintf(in, sizeof in, "text %ld", r);
        int lab = labels[r] - '0';
        cr_assert_eq(db_example_upsert(db, "sst2", "validation", r, in, lab ? "positive" : "negative", lab, &e),
                     PWB_OK);
    }
    cr_assert_eq(db_begin(db, &e), PWB_OK);
    preds(db, cell(db, run, "tiny", "local", "zs", "zero-shot", 10), "1101010100", 20, 3, 0.1, 0.1, 0.05, 0, "26");
    preds(db, cell(db, run, "tiny", "local", "fs", "few-shot", 10), "1111001111", 100, 2, 0.2, 0, 0.2, 0, NULL);
    preds(db, cell(db, run, "tiny", "local", "cot", "cot", 10), "11110000", 40, 50, 2.0, 0, 1.5, 0, NULL);
    int64_t soft = cell(db, run, "tiny", "local", "soft", "soft", 10);
    preds(db, soft, "1111000011", 12, 1, 0.01, 0, 0.01, 0, NULL);
    preds(db, cell(db, run, "gpt-x", "openai", "zs", "zero-shot", 4), "1110", -1, 5, 1.5, 0, NAN, 0.002, NULL);
    db_soft_prompt sp = {.config_sha256 = "cfg", .model = "tiny", .dataset = "sst2", .init = "vocab", .n_tokens = 8,
                         .trainable_params = 4608, .steps = 100, .examples_seen = 1600, .train_seconds = 42.5,
                         .artifact_bytes = 18560, .best_eval_acc = 0.75};
    int64_t spid;
    cr_assert_eq(db_soft_prompt_upsert(db, &sp, &spid, &e), PWB_OK);
    cr_assert_eq(db_cell_set_soft_prompt(db, soft, spid, &e), PWB_OK);
    cr_assert_eq(db_commit(db, &e), PWB_OK);
    cr_assert_eq(db_run_finish(db, run, "done", &e), PWB_OK);
    /* A second run for report_compare: zs only, right on every row but the last. */
    cr_assert_eq(db_run_create(db, "toy", "suites/toy.json", "ffff", "{}", 8, &run2, &e), PWB_OK);
    preds(db, cell(db, run2, "tiny", "local", "zs", "zero-shot", 10), "1111111110", 20, 3, 0.1, 0, 0.05, 0, NULL);
    db_close(db);
    raw_exec("UPDATE runs SET started = '2024-01-02T03:04:05.000Z', pwb_version = '9.9';"
             "UPDATE runs SET finished = '2024-01-02T04:00:00.000Z' WHERE id = 1");
}

TestSuite(report, .init = setup, .fini = teardown);

/* The verdict of tiny: best engineered fs (8/10) against the only tuned method soft (6/10) on 10
 * shared rows: both right 6, only fs 2 (rows 6, 7), only soft 0, neither 2; gap -20.0 points,
 * Newcombe's paired interval [-47.1, +11.4] (hybrid score, from the Wilson intervals 6/10
 * [31.3, 83.2] and 8/10 [49.0, 94.3], phi = (6*2 - 0)/sqrt(6*4*8*2) corrected to (12 - 5)/19.6);
 * McNemar b=2 c=0 -> p = 0.5. soft's labelled examples: examples_seen 1,600 (no train_limit in the
 * suite); its one-time cost 42.5 s wall x CPU/wall 1.0 of its inference = 42.5 CPU-s; break-even
 * V = 42.5 / (0.2 - 0.01) = 223.7 -> 224. Totals: soft 42.5 + 10.0 = 52.5 at 1k, 42.5 + 1,000 =
 * 1,043 at 100k. The examples' extracted answer is "x", which names no label: wrong answers
 * count as "other", invalid ones (zs rows 2, 6) as invalid. */
static const char expected_groups[] =
    "\n"
    "## sst2 (validation) \xc2\xb7 tiny (local)\n"
    "\n"
    "### Verdict\n"
    "\n"
    "**No significant difference** between the best tuned method, **soft**, and the best engineered prompt, **fs**: tuned \xe2\x88\x92 engineered = \xe2\x88\x92" "20.0 points [95% CI \xe2\x88\x92" "47.1, +11.4] on the 10 examples both evaluated (exact McNemar p = 0.500). **soft** used 1,600 labelled examples and 42.5 CPU-s of training; **fs** used an unknown number of labelled examples and no training or search. Counting that one-time cost, **soft** is the cheaper of the two in total only beyond V = 224 inferences (CPU-s per 1,000: 10.0 against 200.0); for fewer, **fs** costs less. The labelled-example count below which the answer flips (N\\*) is not measured: this run has no budget sweep of the tuned method. **fs** is not significantly better than always answering positive (the majority class, 70.0% [39.7, 89.2]; exact McNemar p = 1.000).\n"
    "\n"
    "| arm | method | kind | accuracy [95% CI] | labelled examples | training / search (CPU-s) | CPU-s / 1k inferences |\n"
    "|---|---|---|---|--:|--:|--:|\n"
    "| engineered | fs | few-shot | 80.0% [49.0, 94.3] | unknown | 0 | 200.0 |\n"
    "| tuned | soft | soft | 60.0% [31.3, 83.2] | 1,600 | 42.5 (from wall time) | 10.0 |\n"
    "\n"
    "| tuned \xe2\x88\x92 engineered | gap (points) | 95% CI | exact McNemar p | shared rows | only tuned right | only engineered right | break-even volume V | N\\* (labelled examples) |\n"
    "|---|--:|---|--:|--:|--:|--:|---|---|\n"
    "| soft \xe2\x88\x92 fs | \xe2\x88\x92" "20.0 | [\xe2\x88\x92" "47.1, +11.4] | 0.500 | 10 | 0 | 2 | 224 | not measured |\n"
    "\n"
    "### Methods\n"
    "\n"
    "| method | kind | n | accuracy [95% CI] | p vs best | invalid | tokens in | tokens out | latency p50 / p95 | CPU-s / 1k |\n"
    "|---|---|--:|---|--:|--:|--:|--:|--:|--:|\n"
    "| zs | zero-shot | 10 | 50.0% [23.7, 76.3] | 0.375 | 20.0% | 20.0 | 3.0 | 550.0 ms / 955.0 ms | 50.0 |\n"
    "| **fs** | few-shot | 10 | 80.0% [49.0, 94.3] | best | 0.0% | 100.0 | 2.0 | 200.0 ms / 200.0 ms | 200.0 |\n"
    "| cot | cot | 8/10 | 50.0% [21.5, 78.5] | 0.500 | 0.0% | 40.0 | 50.0 | 2.00 s / 2.00 s | 1500.0 |\n"
    "| soft | soft | 10 | 60.0% [31.3, 83.2] | 0.500 | 0.0% | 12.0 | 1.0 | 10.0 ms / 10.0 ms | 10.0 |\n"
    "| majority class (label 1: positive) | baseline | 10 | 70.0% [39.7, 89.2] | 1.000 | \xe2\x80\x94 | \xe2\x80\x94 | \xe2\x80\x94 | \xe2\x80\x94 | \xe2\x80\x94 |\n"
    "\n"
    "### Cost over volume\n"
    "\n"
    "Total CPU cost of serving V inferences = one-time cost (training or search) + CPU-s per example \xc3\x97 V. *Compared with*: the cheapest engineered prompt (per example) that is at least as accurate; *break-even*: the volume beyond which the method's total cost falls below that prompt's. *Shared prefix*: the local engine keeps the key/value cache of the prompt prefix a batch of requests has in common (the instruction and a few-shot prompt's shots; a soft prompt's virtual tokens) and computes it once per batch of up to 256 requests; its CPU time is divided over that batch, so the per-example figures below include a share of it.\n"
    "\n"
    "| method | arm | accuracy | one-time CPU-s | CPU-s / 1k | total at 1k | total at 100k | compared with | accuracy bought (points) | break-even volume |\n"
    "|---|---|--:|--:|--:|--:|--:|---|--:|---|\n"
    "| zs | engineered | 50.0% | 0 | 50.0 | 50.0 | 5,000 | \xe2\x80\x94 | \xe2\x80\x94 | \xe2\x80\x94 (nothing to repay) |\n"
    "| fs | engineered | 80.0% | 0 | 200.0 | 200 | 20,000 | \xe2\x80\x94 | \xe2\x80\x94 | \xe2\x80\x94 (nothing to repay) |\n"
    "| cot | engineered | 50.0% | 0 | 1500.0 | 1,500 | 150,000 | \xe2\x80\x94 | \xe2\x80\x94 | \xe2\x80\x94 (nothing to repay) |\n"
    "| soft | tuned | 60.0% | 42.5 | 10.0 | 52.5 | 1,043 | fs | \xe2\x88\x92" "20.0 | 224 |\n"
    "\n"
    "### Per-class recall and confusion\n"
    "\n"
    "One row per method and gold label: how its answers to that label's examples spread over the labels (then invalid answers and answers naming no label). *Recall*: the share answered with the gold label. A method that gives one label to at least 95% of the examples is marked *collapsed*.\n"
    "\n"
    "| method | gold | \xe2\x86\x92 negative | \xe2\x86\x92 positive | \xe2\x86\x92 invalid | \xe2\x86\x92 other | recall |\n"
    "|---|---|--:|--:|--:|--:|--:|\n"
    "| zs | negative | 2 | 0 | 0 | 1 | 66.7% |\n"
    "| zs | positive | 0 | 3 | 2 | 2 | 42.9% |\n"
    "| fs | negative | 2 | 0 | 0 | 1 | 66.7% |\n"
    "| fs | positive | 0 | 6 | 0 | 1 | 85.7% |\n"
    "| cot | negative | 1 | 0 | 0 | 2 | 33.3% |\n"
    "| cot | positive | 0 | 3 | 0 | 2 | 60.0% |\n"
    "| soft | negative | 1 | 0 | 0 | 2 | 33.3% |\n"
    "| soft | positive | 0 | 5 | 0 | 2 | 71.4% |\n"
    "\n"
    "### Training cost and break-even\n"
    "\n"
    "Soft prompts are trained once on the frozen model; hard prompts cost nothing to make (0). *Break-even*: the number of inferences after which a tuned method's training CPU time is repaid by its cheaper input, compared with the most accurate few-shot method, **fs**: training CPU-s / (few-shot CPU-s per example \xe2\x88\x92 tuned CPU-s per example); *never* when the tuned method is not cheaper per example.\n"
    "\n"
    "| method | kind | virtual tokens | init | trainable params | artifact bytes | steps | examples seen | training time | best held-out acc | CPU-s / example | break-even (inferences) |\n"
    "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    "| zs | zero-shot | \xe2\x80\x94 | \xe2\x80\x94 | 0 | 0 | 0 | 0 | 0 s | \xe2\x80\x94 | 0.05 | \xe2\x80\x94 |\n"
    "| fs | few-shot | \xe2\x80\x94 | \xe2\x80\x94 | 0 | 0 | 0 | 0 | 0 s | \xe2\x80\x94 | 0.2 | \xe2\x80\x94 |\n"
    "| cot | cot | \xe2\x80\x94 | \xe2\x80\x94 | 0 | 0 | 0 | 0 | 0 s | \xe2\x80\x94 | 1.5 | \xe2\x80\x94 |\n"
    "| soft | soft | 8 | vocab | 4,608 | 18,560 | 100 | 1,600 | 42.50 s | 75.0% | 0.01 | 224 |\n"
    "\n"
    "## sst2 (validation) \xc2\xb7 gpt-x (openai)\n"
    "\n"
    "### Verdict\n"
    "\n"
    "Only engineered methods ran here, so there is no tuned method to weigh them against. The most accurate is **zs** at 75.0% [30.1, 95.4]; **zs** used 0 labelled examples and no training or search. **zs** does not beat always answering positive (the majority class, 75.0% [30.1, 95.4]; exact McNemar p = 1.000): no method here has learned more of the task than its label frequencies.\n"
    "\n"
    "| arm | method | kind | accuracy [95% CI] | labelled examples | training / search (CPU-s) | CPU-s / 1k inferences |\n"
    "|---|---|---|---|--:|--:|--:|\n"
    "| engineered | zs | zero-shot | 75.0% [30.1, 95.4] | 0 | 0 | unknown |\n"
    "\n"
    "### Methods\n"
    "\n"
    "| method | kind | n | accuracy [95% CI] | p vs best | invalid | tokens in | tokens out | latency p50 / p95 | USD / 1k |\n"
    "|---|---|--:|---|--:|--:|--:|--:|--:|--:|\n"
    "| **zs** | zero-shot | 4 | 75.0% [30.1, 95.4] | best | 0.0% | \xe2\x80\x94 | 5.0 | 1.50 s / 1.50 s | $2.0000 |\n"
    "| majority class (label 1: positive) | baseline | 4 | 75.0% [30.1, 95.4] | 1.000 | \xe2\x80\x94 | \xe2\x80\x94 | \xe2\x80\x94 | \xe2\x80\x94 | \xe2\x80\x94 |\n"
    "\n"
    "### Per-class recall and confusion\n"
    "\n"
    "One row per method and gold label: how its answers to that label's examples spread over the labels (then invalid answers and answers naming no label). *Recall*: the share answered with the gold label. A method that gives one label to at least 95% of the examples is marked *collapsed*.\n"
    "\n"
    "| method | gold | \xe2\x86\x92 negative | \xe2\x86\x92 positive | \xe2\x86\x92 invalid | \xe2\x86\x92 other | recall |\n"
    "|---|---|--:|--:|--:|--:|--:|\n"
    "| zs | negative | 1 | 0 | 0 | 0 | 100.0% |\n"
    "| zs | positive | 0 | 2 | 0 | 1 | 66.7% |\n";

static pwb_db *open_ro(void)
{
    pwb_db *db;
    pwb_err e;
    cr_assert_eq(db_open(&db, dbpath, DB_READONLY, &e), PWB_OK, "%s", e.msg);
    return db;
}

Test(report, markdown_exact_numbers)
{
    pwb_db *db = open_ro();
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    cr_assert_eq(report_write(db, 1, REPORT_MD, &b, &e), PWB_OK, "%s", e.msg);
    cr_assert(strncmp(b.data, "# pwb report: run 1 (toy)\n\n- Suite: `toy` from `suites/toy.json`, sha256 "
                              "`0123456789ab`\n- Seed 7, status `done`, started 2024-01-02T03:04:05.000Z, "
                              "finished 2024-01-02T04:00:00.000Z, pwb 9.9\n",
                      strlen("# pwb report: run 1 (toy)\n\n- Suite: `toy` from `suites/toy.json`, sha256 "
                             "`0123456789ab`\n- Seed 7, status `done`, started 2024-01-02T03:04:05.000Z, "
                             "finished 2024-01-02T04:00:00.000Z, pwb 9.9\n")) == 0,
              "%s", b.data);
    const char *groups = strstr(b.data, "\n## ");
    cr_assert_not_null(groups);
    cr_assert_str_eq(groups, expected_groups, "got:\n%s", groups);
    buf_free(&b);
    db_close(db);
}

/* A training job that measured its CPU time: the verdict's one-time cost is that figure, not an
 * estimate from wall time. */
Test(report, measured_training_cpu_replaces_the_wall_time_estimate)
{
    raw_exec("UPDATE soft_prompts SET train_cpu_s = 80.25");
    pwb_db *db = open_ro();
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    cr_assert_eq(report_write(db, 1, REPORT_MD, &b, &e), PWB_OK, "%s", e.msg);
    cr_assert(strstr(b.data, "| tuned | soft | soft | 60.0% [31.3, 83.2] | 1,600 | 80.2 | 10.0 |\n") != NULL, "%s",
              b.data);
    cr_assert_null(strstr(b.data, "(from wall time)"));
    /* the training table's break-even is CPU over CPU, as the verdict's: ceil(80.25 / (0.2 - 0.01)) */
    cr_assert(strstr(b.data, "| 42.50 s | 75.0% | 0.01 | 423 |\n") != NULL, "%s", b.data);
    buf_free(&b);
    db_close(db);
}

Test(report, load_model_numbers)
{
    pwb_db *db = open_ro();
    pwb_report r;
    pwb_err e;
    cr_assert_eq(report_load(&r, db, 1, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(r.n_groups, 2);
    report_group *g = &r.groups[0];
    cr_assert_eq(g->n_rows, 5);
    cr_assert_eq(g->best, 1);
    cr_assert_eq(g->cost_unit, REPORT_COST_CPU_S);
    cr_assert_eq(g->rows[0].mcnemar_b, 4);
    cr_assert_eq(g->rows[0].mcnemar_c, 1);
    cr_assert_float_eq(g->rows[0].mcnemar_p, 0.375, 1e-12);
    cr_assert_float_eq(g->rows[0].latency_p95, 0.955, 1e-9);
    cr_assert_eq(g->rows[2].mcnemar_shared, 8);
    cr_assert(g->rows[4].is_baseline);
    cr_assert_eq(g->rows[4].majority_label, 1);
    cr_assert_eq(g->rows[4].correct, 7);
    cr_assert(isnan(g->rows[1].mcnemar_p));
    cr_assert_eq(r.groups[1].cost_unit, REPORT_COST_USD);
    cr_assert_float_eq(r.groups[1].rows[0].cost_per_1k, 2.0, 1e-12);
    report_free(&r);
    /* Latest run by default. */
    cr_assert_eq(report_load(&r, db, 0, &e), PWB_OK);
    cr_assert_eq(r.run.id, 2);
    report_free(&r);
    cr_assert_eq(report_load(&r, db, 42, &e), PWB_EINVAL);
    db_close(db);
}

Test(report, csv_rows)
{
    pwb_db *db = open_ro();
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    cr_assert_eq(report_write(db, 1, REPORT_CSV, &b, &e), PWB_OK, "%s", e.msg);
    int lines = 0;
    for (const char *p = b.data; (p = strstr(p, "\r\n")); p += 2)
        lines++;
    cr_assert_eq(lines, 1 + 5 + 2);
    cr_assert(strstr(b.data, "\r\n1,sst2,validation,tiny,local,zs,zero-shot,0,0,10,10,5,0.5,0.2365930905,"
                             "0.7634069095,0.375,10,4,1,2,0.2,0,20,3,0.55,0.955,0,,0.5,50,0.05,0,0,0,0,0,,,,,,,,,"
                             "\r\n") != NULL,
              "%s", b.data);
    cr_assert(strstr(b.data, "1,sst2,validation,gpt-x,openai,zs,zero-shot,1,0,4,4,3,0.75,") != NULL);
    /* the soft prompt's training beside the hard prompts' zeros, and its break-even against fs */
    cr_assert(strstr(b.data, ",10,0.01,4608,18560,42.5,1600,100,8,vocab,0.75,224,0,fs,,,\r\n") != NULL, "%s", b.data);
    /* every line has as many fields as the header */
    int header_fields = 1, fields = 1;
    for (const char *p = b.data; *p && *p != '\r'; p++)
        header_fields += *p == ',';
    cr_assert_eq(header_fields, 45);
    for (const char *p = strstr(b.data, "\r\n") + 2; *p; p++) {
        if (*p == '\r') {
            cr_assert_eq(fields, header_fields, "line before %.40s", p);
            fields = 1;
            p++;
        } else {
            fields += *p == ',';
        }
    }
    buf_free(&b);
    db_close(db);
}

Test(report, json_document)
{
    pwb_db *db = open_ro();
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    cr_assert_eq(report_write(db, 1, REPORT_JSON, &b, &e), PWB_OK, "%s", e.msg);
    cJSON *root = cJSON_Parse(b.data);
    cr_assert_not_null(root, "invalid JSON: %s", b.data);
    cJSON *run = cJSON_GetObjectItem(root, "run");
    cr_assert_eq(cJSON_GetObjectItem(run, "seed")->valuedouble, 7.0);
    cJSON *groups = cJSON_GetObjectItem(root, "groups");
    cr_assert_eq(cJSON_GetArraySize(groups), 2);
    cJSON *g0 = cJSON_GetArrayItem(groups, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(g0, "best_method")->valuestring, "fs");
    cJSON *rows = cJSON_GetObjectItem(g0, "rows");
    cJSON *zs = cJSON_GetArrayItem(rows, 0);
    cr_assert_float_eq(cJSON_GetObjectItem(zs, "mcnemar_p")->valuedouble, 0.375, 1e-12);
    cr_assert_float_eq(cJSON_GetObjectItem(zs, "ci_low")->valuedouble, 0.236593090512564, 1e-9);
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 1), "mcnemar_p")));
    cJSON *soft = cJSON_GetArrayItem(rows, 3);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(soft, "soft_prompt"), "steps")->valuedouble, 100.0);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(soft, "break_even"), "inferences")->valuedouble, 224.0);
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(soft, "break_even"), "vs")->valuestring, "fs");
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(zs, "training"), "trainable_params")->valuedouble, 0.0);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(soft, "training"), "trainable_params")->valuedouble, 4608.0);
    cr_assert_float_eq(cJSON_GetObjectItem(soft, "cpu_s_per_example")->valuedouble, 0.01, 1e-12);
    /* the verdict and the rows' arms, labelled examples and confusion counts */
    cr_assert_str_eq(cJSON_GetObjectItem(soft, "arm")->valuestring, "tuned");
    cr_assert_eq(cJSON_GetObjectItem(soft, "labelled_examples")->valuedouble, 1600.0);
    cJSON *cm = cJSON_GetObjectItem(soft, "confusion");
    cr_assert_eq(cJSON_GetArraySize(cm), 2);
    cr_assert_eq(cJSON_GetArrayItem(cJSON_GetArrayItem(cm, 1), 1)->valuedouble, 5.0); /* positive -> positive */
    cr_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(g0, "label_words"), 1)->valuestring, "positive");
    cJSON *vd = cJSON_GetObjectItem(g0, "verdict");
    cr_assert_str_eq(cJSON_GetObjectItem(vd, "engineered")->valuestring, "fs");
    cr_assert_str_eq(cJSON_GetObjectItem(vd, "tuned")->valuestring, "soft");
    cr_assert_float_eq(cJSON_GetObjectItem(vd, "gap")->valuedouble, -0.2, 1e-12);
    cr_assert_eq(cJSON_GetObjectItem(vd, "break_even_volume")->valuedouble, 224.0);
    cr_assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 4), "training")); /* baseline */
    cJSON_Delete(root);
    buf_free(&b);
    db_close(db);
}

Test(report, compare_runs)
{
    pwb_db *db = open_ro();
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    cr_assert_eq(report_compare(db, 1, 2, REPORT_MD, &b, &e), PWB_OK, "%s", e.msg);
    cr_assert(strstr(b.data, "\n## sst2 (validation) \xc2\xb7 tiny\n\n| method | n A | accuracy A [95% CI] | n B | "
                             "accuracy B [95% CI] | delta | shared | A only | B only | p | tokens in A \xe2\x86\x92 B | "
                             "tokens out A \xe2\x86\x92 B | CPU-s / 1k A \xe2\x86\x92 B |\n") != NULL,
              "%s", b.data);
    cr_assert(strstr(b.data, "| zs | 10 | 50.0% [23.7, 76.3] | 10 | 90.0% [59.6, 98.2] | +40.0 | "
                             "10 | 0 | 4 | 0.125 | 20.0 \xe2\x86\x92 20.0 | 3.0 \xe2\x86\x92 3.0 | "
                             "50.0 \xe2\x86\x92 50.0 |\n") != NULL,
              "%s", b.data);
    cr_assert(strstr(b.data, "| fs | 10 | 80.0% [49.0, 94.3] | 0 | \xe2\x80\x94 | \xe2\x80\x94 | "
                             "0 | 0 | 0 | \xe2\x80\x94 | 100.0 \xe2\x86\x92 \xe2\x80\x94 |") != NULL,
              "%s", b.data);
    /* the remote model is costed in dollars */
    cr_assert(strstr(b.data, "| zs | 4 | 75.0% [30.1, 95.4] | 0 | \xe2\x80\x94 | \xe2\x80\x94 | 0 | 0 | 0 | "
                             "\xe2\x80\x94 | \xe2\x80\x94 \xe2\x86\x92 \xe2\x80\x94 | 5.0 \xe2\x86\x92 "
                             "\xe2\x80\x94 | $2.0000 \xe2\x86\x92 \xe2\x80\x94 |\n") != NULL,
              "%s", b.data);
    buf_reset(&b);
    cr_assert_eq(report_compare(db, 1, 2, REPORT_CSV, &b, &e), PWB_OK);
    cr_assert(strstr(b.data, "1,2,sst2,validation,tiny,zs,10,5,0.5,10,9,0.9,0.4,10,0,4,0.125,20,20,3,3,cpu_s,50,50\r\n") !=
                  NULL,
              "%s", b.data);
    buf_reset(&b);
    cr_assert_eq(report_compare(db, 1, 2, REPORT_JSON, &b, &e), PWB_OK);
    cJSON *root = cJSON_Parse(b.data);
    cr_assert_not_null(root);
    cJSON *rows = cJSON_GetObjectItem(root, "rows");
    cr_assert_eq(cJSON_GetArraySize(rows), 5);
    cJSON *zs = cJSON_GetArrayItem(rows, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(zs, "cost_unit")->valuestring, "cpu_s");
    cr_assert_float_eq(cJSON_GetObjectItem(zs, "cost_per_1k_b")->valuedouble, 50.0, 1e-9);
    cr_assert_float_eq(cJSON_GetObjectItem(zs, "mean_tokens_in_a")->valuedouble, 20.0, 1e-9);
    cJSON_Delete(root);
    cr_assert_eq(report_compare(db, 1, 99, REPORT_MD, &b, &e), PWB_EINVAL);
    buf_free(&b);
    db_close(db);
}

Test(report, format_names)
{
    int f = -1;
    pwb_err e;
    cr_assert_eq(report_format_parse("md", &f, &e), PWB_OK);
    cr_assert_eq(f, REPORT_MD);
    cr_assert_eq(report_format_parse("JSON", &f, &e), PWB_OK);
    cr_assert_eq(f, REPORT_JSON);
    cr_assert_eq(report_format_parse("csv", &f, &e), PWB_OK);
    cr_assert_eq(f, REPORT_CSV);
    cr_assert_eq(report_format_parse("xml", &f, &e), PWB_EINVAL);
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

Test(report, svg_chart_and_markdown_link)
{
    pwb_db *db = open_ro();
    pwb_report r;
    pwb_err e;
    cr_assert_eq(report_load(&r, db, 1, &e), PWB_OK, "%s", e.msg);
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(report_svg_group(&r.groups[0], &b, &e), PWB_OK);
    cr_assert(strncmp(b.data, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg ", 44) == 0);
    cr_assert(strstr(b.data, "</svg>\n") == b.data + b.len - 7);
    const char *bad = svg_wellformed(b.data);
    cr_assert_null(bad, "%s", bad);
    bad = svg_in_bounds(b.data);
    cr_assert_null(bad, "%s", bad);
    /* background + one bar per row with predictions (4 methods + baseline) + 3 key swatches */
    cr_assert_eq(count_of(b.data, "<rect "), 1 + 5 + 3);
    cr_assert_eq(count_of(b.data, "<path "), 5);
    /* fs: 80% of the plot, the best hard prompt in dark blue. The label column fits "majority class"
     * (14 x 0.62 x 12 px + 18 = 122.16 px), so the plot spans 760 - 122.16 - 70 = 567.84 px: the
     * bar is 454.27 px and the whiskers sit at 49.02% (400.5) and 94.33% (657.8). */
    cr_assert(strstr(b.data, "<rect x=\"122.2\" y=\"90.0\" width=\"454.3\" height=\"18.0\" fill=\"#2b6cb0\"><title>"
                             "fs: 80.0% [49.0, 94.3], n=10") != NULL,
              "%s", b.data);
    cr_assert(strstr(b.data, "M400.5 99.0H657.8") != NULL, "%s", b.data);
    /* the soft prompt in orange */
    cr_assert(strstr(b.data, "fill=\"#f6b26b\"><title>soft: 60.0%") != NULL, "%s", b.data);
    buf_reset(&b);
    cr_assert_eq(report_svg_filename(&r.groups[1], &b), 0);
    cr_assert_str_eq(b.data, "sst2-validation-gpt-x.svg");
    buf_reset(&b);
    r.chart_dir = "charts";
    r.chart_prefix = "x";
    cr_assert_eq(report_render_md(&r, &b, &e), PWB_OK);
    cr_assert(strstr(b.data, "\n![accuracy by method: sst2 \xc2\xb7 tiny](charts/x-sst2-validation-tiny-accuracy.svg)\n") !=
                  NULL,
              "%s", b.data);
    cr_assert(strstr(b.data, "](charts/x-sst2-validation-tiny-cost.svg)\n") != NULL);
    cr_assert(strstr(b.data, "](charts/x-sst2-validation-gpt-x-cost.svg)\n") != NULL);
    /* no training curve was recorded, so no training chart */
    cr_assert_null(strstr(b.data, "training.svg"));
    report_chart *charts;
    size_t nch;
    cr_assert_eq(report_charts_list(&r, &charts, &nch, &e), PWB_OK);
    /* tiny: accuracy, cost, volume (soft's training), budget (both arms' labelled counts), models (two
     * models on sst2/validation); gpt-x: accuracy, cost */
    cr_assert_eq(nch, 7);
    static const char *const files[] = {"x-sst2-validation-tiny-accuracy.svg", "x-sst2-validation-tiny-cost.svg",
                                        "x-sst2-validation-tiny-volume.svg",   "x-sst2-validation-tiny-budget.svg",
                                        "x-sst2-validation-models.svg",        "x-sst2-validation-gpt-x-accuracy.svg",
                                        "x-sst2-validation-gpt-x-cost.svg"};
    static const char *const titles[] = {"accuracy by method", "against cost", "total cost against inferences served",
                                         "accuracy against labelled examples used", "best accuracy by model"};
    for (size_t i = 0; i < nch; i++) {
        cr_assert_str_eq(charts[i].file, files[i]);
        buf_reset(&b);
        cr_assert_eq(report_chart_render(&r, &charts[i], &b, &e), PWB_OK, "%s", e.msg);
        bad = svg_wellformed(b.data);
        cr_assert_null(bad, "%s: %s", charts[i].file, bad);
        bad = svg_in_bounds(b.data);
        cr_assert_null(bad, "%s: %s", charts[i].file, bad);
        int k = charts[i].kind == REPORT_CHART_MODELS ? 4 : charts[i].kind == REPORT_CHART_BUDGET ? 3
                : charts[i].kind == REPORT_CHART_VOLUME ? 2 : charts[i].kind == REPORT_CHART_COST ? 1 : 0;
        cr_assert(strstr(b.data, titles[k]) != NULL, "%s", charts[i].file);
    }
    /* the break-even volume of the verdict (224) is marked on the volume chart */
    buf_reset(&b);
    cr_assert_eq(report_chart_render(&r, &charts[2], &b, &e), PWB_OK);
    cr_assert(strstr(b.data, ">V = 224<") != NULL, "%s", b.data);
    report_charts_free(charts, nch);
    buf_free(&b);
    report_free(&r);
    db_close(db);
}

Test(report, svg_escapes_names)
{
    report_row row = {.method = "a<b&\"c\"", .kind = "zero-shot", .n = 4, .correct = 2, .accuracy = 0.5,
                      .ci_lo = 0.15, .ci_hi = 0.85, .is_best = 1};
    report_group g = {.dataset = "d&d", .split = "", .model = "m/1 <x>", .rows = &row, .n_rows = 1,
                      .best = 0, .baseline = -1, .few_shot_ref = -1};
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    cr_assert_eq(report_svg_group(&g, &b, &e), PWB_OK);
    cr_assert(strstr(b.data, "a&lt;b&amp;&quot;c&quot;") != NULL);
    cr_assert(strstr(b.data, "d&amp;d \xc2\xb7 m/1 &lt;x&gt;") != NULL);
    cr_assert_null(strstr(b.data, "a<b"));
    const char *bad = svg_wellformed(b.data);
    cr_assert_null(bad, "%s", bad);
    buf_reset(&b);
    cr_assert_eq(report_svg_filename(&g, &b), 0);
    cr_assert_str_eq(b.data, "d_d-m_1__x_.svg");
    buf_free(&b);
}

/* The HTML page holds every table row of the markdown report, its charts inline as well-formed
 * SVG, loads nothing from elsewhere, and carries the per-example data as parseable JSON. */
Test(report, html_has_every_markdown_row)
{
    pwb_db *db = open_ro();
    pwb_report r;
    pwb_err e;
    cr_assert_eq(report_load(&r, db, 1, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(report_load_details(&r, db, &e), PWB_OK, "%s", e.msg);
    pwb_buf md, html;
    buf_init(&md);
    buf_init(&html);
    r.chart_dir = "";
    cr_assert_eq(report_render_md(&r, &md, &e), PWB_OK);
    cr_assert_eq(report_render(&r, REPORT_HTML, &html, &e), PWB_OK, "%s", e.msg);
    cr_assert(!strncmp(html.data, "<!DOCTYPE html>", 15));
    const char *missing = html_missing_row(md.data, html.data);
    cr_assert_null(missing, "markdown row not in the HTML: %s", missing);
    /* a row the test knows, to be sure the check compares something */
    cr_assert(strstr(html.data, "<td>soft \xe2\x88\x92 fs</td><td class=\"num\">\xe2\x88\x92" "20.0</td>") != NULL);
    const char *off = html_offline(html.data);
    cr_assert_null(off, "loads something: %.60s", off);
    /* every chart the markdown links is inline, and well-formed */
    int nsvg = 0;
    for (const char *p = strstr(html.data, "<svg"); p; p = strstr(p + 1, "<svg")) {
        const char *end = strstr(p, "</svg>");
        cr_assert_not_null(end);
        size_t n = (size_t)(end + 6 - p);
        char *one = malloc(n + 1);
        memcpy(one, p, n);
        one[n] = 0;
        const char *bad = svg_wellformed(one);
        cr_assert_null(bad, "%s", bad);
        free(one);
        nsvg++;
    }
    cr_assert_eq(nsvg, 7);
    cr_assert_null(strstr(html.data, "](x-"), "a markdown image link was left as text");
    /* the per-example data: one group per dataset x model; fs and soft disagree on rows 6 and 7 */
    const char *js = strstr(html.data, "id=\"pwb-data\">");
    cr_assert_not_null(js);
    js += strlen("id=\"pwb-data\">");
    const char *jend = strstr(js, "</script>");
    char *txt = malloc((size_t)(jend - js) + 1);
    memcpy(txt, js, (size_t)(jend - js));
    txt[jend - js] = 0;
    cJSON *root = cJSON_Parse(txt);
    free(txt);
    cr_assert_not_null(root);
    cJSON *g0 = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "groups"), 0);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(g0, "rows")), 10);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(g0, "methods")), 4);
    /* the default pair is the verdict's: fs (1) against soft (3) */
    cr_assert_eq(cJSON_GetObjectItem(g0, "a")->valueint, 1);
    cr_assert_eq(cJSON_GetObjectItem(g0, "b")->valueint, 3);
    cJSON *fs = cJSON_GetArrayItem(cJSON_GetObjectItem(g0, "methods"), 1);
    cr_assert(cJSON_IsTrue(cJSON_GetArrayItem(cJSON_GetObjectItem(fs, "c"), 6)));
    cr_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(g0, "input"), 6)->valuestring, "text 6");
    cJSON_Delete(root);
    buf_free(&md);
    buf_free(&html);
    report_free(&r);
    db_close(db);
}
