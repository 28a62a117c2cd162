/* Sweeps (grouping in reports, their tables and charts), the break-even point,
 * soft-prompt training curves, and chart sanity on hostile names: every chart well-formed XML with
 * every shape and label inside its viewBox.
 *
 * The synthetic run: sst2/dev, 40 rows (labels: row % 3 != 0 -> positive, majority 27/40 = 67.5%),
 * on model "tiny" (local): zs; few-shot[shots=0|2|4] (sweep "few-shot"); soft[tokens=1|5|20,
 * init=random|class] (sweep "soft", each linked to a soft prompt with 60 training steps and 3
 * evaluations). Row r of a cell with target k correct answers is right when r < k, so accuracy
 * and McNemar counts are simple: two cells with k1 > k2 differ on rows k2..k1-1, all won by the
 * first. CPU-s per example: few-shot[shots=s] 0.1 + 0.05 s; soft 0.02; zs 0.05.
 *
 * Set PWB_CHART_DUMP=DIR to write every chart of this run there (for looking at them). */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report/report.h"
#include "report/stats.h"
#include "report/svg.h"
#include "unit/report/svg_check.h"
#include "util/file.h"
#include "util/str.h"
#include "util/utf8.h"

/* ---- break-even ------------------------------------------------------------------------------ */

Test(break_even, formula)
{
    /* 42.5 s / (0.2 - 0.01) s = 223.68 -> 224 inferences */
    cr_assert_eq(report_break_even(42.5, 0.2, 0.01), 224.0);
    /* exact: 10 / (0.5 - 0.25) = 40 */
    cr_assert_eq(report_break_even(10, 0.5, 0.25), 40.0);
    cr_assert_eq(report_break_even(0, 0.5, 0.25), 0.0);
    /* a soft prompt that is not cheaper per example never pays back */
    cr_assert(isinf(report_break_even(10, 0.2, 0.2)));
    cr_assert(isinf(report_break_even(10, 0.1, 0.3)));
    cr_assert(isnan(report_break_even(NAN, 0.2, 0.1)));
    cr_assert(isnan(report_break_even(10, NAN, 0.1)));
    cr_assert(isnan(report_break_even(10, 0.2, NAN)));
    cr_assert(isnan(report_break_even(-1, 0.2, 0.1)));
}

/* ---- reports over a synthetic sweep run -------------------------------------------------------- */

#define ROWS 40
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

static int64_t add_cell(pwb_db *db, int64_t run, const char *model, const char *provider, const char *method,
                        const char *kind, const char *sweep, const char *point, int correct, int tokens_in,
                        double cpu, double cost)
{
    pwb_err e;
    int64_t id;
    db_cell c = {.run_id = run, .dataset = "sst2", .split = "dev", .model = model, .provider = provider,
                 .method = method, .kind = kind, .scoring = "rank", .n_planned = ROWS,
                 .majority_label_correct_n = -1, .sweep = sweep, .sweep_point = point};
    cr_assert_eq(db_cell_upsert(db, &c, &id, &e), PWB_OK, "%s", e.msg);
    for (long r = 0; r < ROWS; r++) {
        db_prediction p = {.cell_id = id, .row = r, .prompt = "p", .output = "o", .extracted = "x", .valid = 1,
                           .correct = r < correct, .latency_s = cpu, .cpu_s = cpu, .tokens_in = tokens_in,
                           .tokens_out = 1, .cost_usd = cost};
        cr_assert_eq(db_prediction_insert(db, &p, &e), PWB_OK, "%s", e.msg);
    }
    return id;
}

static void add_soft_prompt(pwb_db *db, int64_t cell, const char *key, const char *model, int tokens,
                            const char *init, double seconds, double final_acc)
{
    pwb_err e;
    db_soft_prompt sp = {.config_sha256 = key, .model = model, .dataset = "sst2", .init = init, .n_tokens = tokens,
                         .trainable_params = 576L * tokens, .artifact_bytes = 576L * 4 * tokens + 128,
                         .examples_seen = 480, .steps = 60, .train_seconds = seconds, .best_eval_acc = final_acc};
    int64_t id;
    cr_assert_eq(db_soft_prompt_upsert(db, &sp, &id, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(db_cell_set_soft_prompt(db, cell, id, &e), PWB_OK);
    for (long s = 1; s <= 60; s++) {
        double loss = 0.3 + 2.0 * exp(-s / (5.0 + tokens)) + 0.05 * sin((double)s * 1.7);
        cr_assert_eq(db_train_step_insert(db, id, s, loss, 0.3, 0.1 * (double)s, 8 * s, &e), PWB_OK);
    }
    for (long s = 20; s <= 60; s += 20)
        cr_assert_eq(db_train_eval_insert(db, id, s, final_acc - 0.1 * (60 - s) / 40.0, 0.5, &e), PWB_OK);
}

static void setup(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/pwb-sweep-XXXXXX", t && *t ? t : "/tmp");
    cr_assert_not_null(mkdtemp(tmpdir));
    snprintf(dbpath, sizeof dbpath, "%s/s.db", tmpdir);
    pwb_db *db;
    pwb_err e;
    cr_assert_eq(db_open(&db, dbpath, DB_READWRITE, &e), PWB_OK, "%s", e.msg);
    int64_t run;
    cr_assert_eq(db_run_create(db, "sweeps", "suites/sw.json", "abcdef", "{}", 1, &run, &e), PWB_OK);
    cr_assert_eq(db_begin(db, &e), PWB_OK);
    for (long r = 0; r < ROWS; r++) {
        int lab = r % 3 != 0;
        cr_assert_eq(db_example_upsert(db, "sst2", "dev", r, "text", lab ? "positive" : "negative", lab, &e), PWB_OK);
    }
    add_cell(db, run, "tiny", "local", "zs", "zero-shot", NULL, NULL, 24, 30, 0.05, 0);
    const int shots[3] = {0, 2, 4}, fs_correct[3] = {22, 30, 29};
    for (int i = 0; i < 3; i++) {
        char name[32], point[32];
        snprintf(name, sizeof name, "few-shot[shots=%d]", shots[i]);
        snprintf(point, sizeof point, "{\"shots\":%d}", shots[i]);
        add_cell(db, run, "tiny", "local", name, "few-shot", "few-shot", point, fs_correct[i], 30 + 40 * shots[i],
                 0.05 + 0.1 * shots[i], 0);
    }
    const int tokens[3] = {1, 5, 20};
    const char *inits[2] = {"random", "class"};
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 2; k++) {
            char name[48], point[64], key[32];
            snprintf(name, sizeof name, "soft[tokens=%d,init=%s]", tokens[i], inits[k]);
            snprintf(point, sizeof point, "{\"tokens\":%d,\"init\":\"%s\"}", tokens[i], inits[k]);
            snprintf(key, sizeof key, "cfg-%d-%d", i, k);
            int correct = 26 + 3 * i + 2 * k; /* 26..34 */
            int64_t c = add_cell(db, run, "tiny", "local", name, "soft", "soft", point, correct, 30, 0.02, 0);
            add_soft_prompt(db, c, key, "tiny", tokens[i], inits[k], 30.0 + 10 * i, (double)correct / ROWS);
        }
    /* A second model with hostile names: markup, quotes, a control character, invalid UTF-8, a
     * very long method name, a sweep point that is not JSON, and a priced remote cost. */
    add_cell(db, run, "evil <model> & \"co\"", "openai", "plain", "zero-shot", NULL, NULL, 20, 50, NAN, 0.0002);
    add_cell(db, run, "evil <model> & \"co\"", "openai",
             "a-very-long-method-name-that-goes-on-and-on-and-on-well-past-any-label-column<&>", "few-shot", NULL,
             NULL, 33, 900, NAN, 0.004);
    add_cell(db, run, "evil <model> & \"co\"", "openai", "bad\x01name\xff\xfe", "cot", "odd<sweep>", "not json", 28,
             400, NAN, 0.001);
    int64_t soft = add_cell(db, run, "evil <model> & \"co\"", "openai", "s</title>oft", "soft", "odd<sweep>",
                            "{\"k&\":\"<v>\"}", 31, 30, NAN, 0.00003);
    add_soft_prompt(db, soft, "cfg-evil", "evil", 3, "r&d", 5, 0.7);
    cr_assert_eq(db_commit(db, &e), PWB_OK);
    db_close(db);
}

TestSuite(sweep_report, .init = setup, .fini = teardown);

static void load(pwb_db **db, pwb_report *r)
{
    pwb_err e;
    cr_assert_eq(db_open(db, dbpath, DB_READONLY, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(report_load(r, *db, 0, &e), PWB_OK, "%s", e.msg);
}

Test(sweep_report, groups_sweeps_and_breaks_even)
{
    pwb_db *db;
    pwb_report r;
    load(&db, &r);
    cr_assert_eq(r.n_groups, 2);
    report_group *g = &r.groups[0];
    cr_assert_eq(g->n_rows, 1 + 3 + 6 + 1);
    cr_assert_eq(g->n_sweeps, 2);
    report_sweep *fs = &g->sweeps[0], *soft = &g->sweeps[1];
    cr_assert_str_eq(fs->name, "few-shot");
    cr_assert_eq(fs->n_axes, 1);
    cr_assert_str_eq(fs->axes[0], "shots");
    cr_assert_eq(fs->n_rows, 3);
    cr_assert_eq(fs->rows[0], 1);
    cr_assert_eq(fs->best, 1); /* shots=2: 30/40 */
    cr_assert(g->rows[2].is_sweep_best);
    cr_assert_str_eq(g->rows[3].sweep_values[0], "4");
    /* shots=4 (29) vs the sweep's best (30): one discordant row -> p = 1; shots=0 (22): 8 -> 2/256 */
    cr_assert_float_eq(g->rows[3].sweep_p, 1.0, 1e-12);
    cr_assert_float_eq(g->rows[1].sweep_p, stats_mcnemar_exact(8, 0), 1e-12);
    cr_assert_float_eq(g->rows[1].sweep_p, 2.0 / 256.0, 1e-12);
    cr_assert_str_eq(soft->name, "soft");
    cr_assert_eq(soft->n_axes, 2);
    cr_assert_str_eq(soft->axes[0], "tokens");
    cr_assert_str_eq(soft->axes[1], "init");
    cr_assert_eq(soft->x_axis, 0);
    cr_assert_eq(soft->n_rows, 6);
    cr_assert_eq(soft->best, 5); /* tokens=20, class: 34/40 */
    cr_assert_str_eq(g->rows[soft->rows[5]].sweep_values[1], "class");
    /* the overall best is that soft prompt; break-even against the best few-shot (shots=2, 0.25 CPU-s
     * per example): tokens=20 trained 50 s -> 50 / (0.25 - 0.02) = 217.4 -> 218 inferences */
    cr_assert_eq(g->best, 9);
    cr_assert_eq(g->few_shot_ref, 2);
    cr_assert_float_eq(g->rows[9].cpu_per_example, 0.02, 1e-12);
    cr_assert_eq(g->rows[9].break_even, 218.0);
    cr_assert_eq(g->rows[9].break_even_ref, 2);
    /* tokens=1: 30 s / 0.23 = 130.4 -> 131 */
    cr_assert_eq(g->rows[4].break_even, 131.0);
    cr_assert_eq(g->rows[4].n_train_steps, 60);
    cr_assert_eq(g->rows[4].n_train_evals, 3);
    cr_assert_eq(g->rows[4].train_evals[2].step, 60);
    cr_assert(isnan(g->rows[0].break_even)); /* a hard prompt */
    cr_assert_eq(g->baseline, 10);
    cr_assert_eq(g->rows[10].correct, 26); /* 26 of 40 rows have label 1 (r % 3 != 0) */
    /* the hostile group: a point that is not JSON has no values, and the sweep still groups */
    report_group *h = &r.groups[1];
    cr_assert_eq(h->n_sweeps, 1);
    cr_assert_str_eq(h->sweeps[0].name, "odd<sweep>");
    cr_assert_eq(h->sweeps[0].n_rows, 2);
    cr_assert_eq(h->cost_unit, REPORT_COST_USD);
    cr_assert_eq(h->few_shot_ref, -1); /* no CPU timings on the remote model */
    cr_assert(isnan(h->rows[3].break_even));
    report_free(&r);
    db_close(db);
}

Test(sweep_report, markdown_sweep_tables)
{
    pwb_db *db;
    pwb_report r;
    load(&db, &r);
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    r.chart_dir = "";
    r.chart_prefix = "rep";
    cr_assert_eq(report_render_md(&r, &b, &e), PWB_OK, "%s", e.msg);
    const char *fs = strstr(b.data, "\n### Sweep: few-shot (shots)\n");
    cr_assert_not_null(fs, "%s", b.data);
    cr_assert(strstr(fs, "| shots | n | accuracy [95% CI] | p vs sweep best | tokens in | CPU-s / 1k |\n"
                         "|--:|--:|---|--:|--:|--:|\n"
                         "| 0 | 40 | 55.0% [39.8, 69.3] | 0.008 | 30.0 | 50.0 |\n"
                         "| **2** | 40 | 75.0% [59.8, 85.8] | best | 110.0 | 250.0 |\n"
                         "| 4 | 40 | 72.5% [57.2, 83.9] | 1.000 | 190.0 | 450.0 |\n"
                         "\nMajority-class baseline: 65.0%.\n") != NULL,
              "%s", fs);
    cr_assert(strstr(fs, "\n![sweep: sst2 \xc2\xb7 tiny \xc2\xb7 few-shot](rep-sst2-dev-tiny-sweep-few-shot.svg)\n") !=
              NULL);
    const char *soft = strstr(b.data, "\n### Sweep: soft (tokens \xc3\x97 init)\n");
    cr_assert_not_null(soft);
    cr_assert(strstr(soft, "| tokens | init | n | accuracy [95% CI] | p vs sweep best | tokens in | CPU-s / 1k | "
                           "training time |\n|--:|--:|--:|---|--:|--:|--:|--:|\n"
                           "| 1 | random | 40 | 65.0% [49.5, 77.9] | 0.008 | 30.0 | 20.0 | 30.00 s |\n") != NULL,
              "%s", soft);
    cr_assert(strstr(soft, "| **20** | **class** | 40 | 85.0% [70.9, 92.9] | best | 30.0 | 20.0 | 50.00 s |\n") != NULL,
              "%s", soft);
    /* the training cost table: the break-even against few-shot[shots=2] */
    cr_assert(strstr(b.data, "compared with the most accurate few-shot method, **few-shot[shots=2]**") != NULL);
    cr_assert(strstr(b.data, "| soft[tokens=20,init=class] | soft | 20 | class | 11,520 | 46,208 | 60 | 480 | "
                             "50.00 s | 85.0% | 0.02 | 218 |\n") != NULL,
              "%s", b.data);
    cr_assert(strstr(b.data, "](rep-sst2-dev-tiny-training.svg)\n") != NULL);
    /* the hostile group's names are escaped for markdown tables and alt text */
    cr_assert(strstr(b.data, "\n## sst2 (dev) \xc2\xb7 evil &lt;model&gt; & \"co\" (openai)\n") != NULL);
    cr_assert(strstr(b.data, "\n### Sweep: odd&lt;sweep&gt; ()\n") != NULL);
    cr_assert(strstr(b.data, "| s&lt;/title&gt;oft | 40 | 77.5% [62.5, 87.7] | best |") != NULL, "%s", b.data);
    cr_assert(strstr(b.data, "| bad name?? | cot | 40 |") != NULL, "%s", b.data);
    cr_assert(strstr(b.data, "](rep-sst2-dev-evil__model_____co_-sweep-odd_sweep_.svg)\n") != NULL, "%s", b.data);
    cr_assert(utf8_valid(b.data, b.len));
    buf_free(&b);
    report_free(&r);
    db_close(db);
}

Test(sweep_report, csv_and_json_carry_sweeps)
{
    pwb_db *db;
    pwb_report r;
    load(&db, &r);
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    cr_assert_eq(report_render_csv(&r, &b, &e), PWB_OK);
    cr_assert(strstr(b.data, ",0.25,0,0,0,0,0,,,,,,,few-shot,\"{\"\"shots\"\":2}\",\r\n") != NULL, "%s", b.data);
    cr_assert(strstr(b.data, ",218,0,few-shot[shots=2],soft,\"{\"\"tokens\"\":20,\"\"init\"\":\"\"class\"\"}\",\r\n") !=
                  NULL,
              "%s", b.data);
    buf_reset(&b);
    cr_assert_eq(report_render_json(&r, &b, &e), PWB_OK);
    cr_assert(utf8_valid(b.data, b.len));
    cJSON *root = cJSON_Parse(b.data);
    cr_assert_not_null(root);
    cJSON *g0 = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "groups"), 0);
    cJSON *sweeps = cJSON_GetObjectItem(g0, "sweeps");
    cr_assert_eq(cJSON_GetArraySize(sweeps), 2);
    cJSON *soft = cJSON_GetArrayItem(sweeps, 1);
    cr_assert_str_eq(cJSON_GetObjectItem(soft, "x_axis")->valuestring, "tokens");
    cr_assert_str_eq(cJSON_GetObjectItem(soft, "best_method")->valuestring, "soft[tokens=20,init=class]");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(soft, "methods")), 6);
    cJSON *row = cJSON_GetArrayItem(cJSON_GetObjectItem(g0, "rows"), 9);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(row, "sweep_point"), "tokens")->valuedouble, 20);
    cJSON *sp = cJSON_GetObjectItem(row, "soft_prompt");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(sp, "train_steps")), 60);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(sp, "train_evals")), 3);
    cJSON_Delete(root);
    buf_free(&b);
    report_free(&r);
    db_close(db);
}

Test(sweep_report, every_chart_is_valid_and_inside_its_box)
{
    pwb_db *db;
    pwb_report r;
    load(&db, &r);
    r.chart_prefix = "rep";
    report_chart *charts;
    size_t n;
    pwb_err e;
    cr_assert_eq(report_charts_list(&r, &charts, &n, &e), PWB_OK);
    /* tiny: accuracy, cost, training, 2 sweeps, volume, budget, models (two models on sst2/dev);
     * evil: accuracy, cost, training, 1 sweep, budget (its costs are not recorded: no volume) */
    cr_assert_eq(n, 13);
    cr_assert_str_eq(charts[7].file, "rep-sst2-dev-models.svg");
    cr_assert_eq(charts[2].kind, REPORT_CHART_TRAINING);
    cr_assert_str_eq(charts[4].file, "rep-sst2-dev-tiny-sweep-soft.svg");
    const char *dump = getenv("PWB_CHART_DUMP");
    pwb_buf b, path;
    buf_init(&b);
    buf_init(&path);
    for (size_t i = 0; i < n; i++) {
        buf_reset(&b);
        cr_assert_eq(report_chart_render(&r, &charts[i], &b, &e), PWB_OK, "%s", e.msg);
        const char *bad = svg_wellformed(b.data);
        cr_assert_null(bad, "%s: %s", charts[i].file, bad);
        bad = svg_in_bounds(b.data);
        cr_assert_null(bad, "%s: %s", charts[i].file, bad);
        /* raw names never reach the XML */
        cr_assert_null(strstr(b.data, "<model>"), "%s", charts[i].file);
        cr_assert_null(strstr(b.data, "\xff"), "%s", charts[i].file);
        if (dump && *dump) {
            buf_reset(&path);
            file_join(&path, dump, charts[i].file);
            cr_assert_eq(file_write_atomic(path.data, b.data, b.len, &e), PWB_OK, "%s", e.msg);
        }
    }
    /* the soft sweep chart: a line per init over the token counts, the best point ringed */
    buf_reset(&b);
    cr_assert_eq(report_chart_render(&r, &charts[4], &b, &e), PWB_OK);
    cr_assert_eq((int)(strstr(b.data, "init=random") != NULL) + (int)(strstr(b.data, "init=class") != NULL), 2);
    int lines = 0;
    for (const char *p = b.data; (p = strstr(p, "<polyline ")); p++)
        lines++;
    cr_assert_eq(lines, 2);
    cr_assert(strstr(b.data, "r=\"7.5\" fill=\"#222222\"") != NULL);
    buf_free(&b);
    buf_free(&path);
    report_charts_free(charts, n);
    report_free(&r);
    db_close(db);
}
