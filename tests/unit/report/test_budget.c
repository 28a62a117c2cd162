/* The report's labelled-data and calibration section: budgets per method ("all" when undeclared)
 * and the stored prior shown as label probabilities named by the stored gold answers. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "report/report.h"

static char tmpdir[256];
static char dbpath[300];

static void setup(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/pwb-budget-XXXXXX", t && *t ? t : "/tmp");
    cr_assert_not_null(mkdtemp(tmpdir));
    snprintf(dbpath, sizeof dbpath, "%s/b.db", tmpdir);
}

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

TestSuite(budget, .init = setup, .fini = teardown);

static int64_t cell(pwb_db *db, int64_t run, const char *method, const char *calibration, long train_limit)
{
    pwb_err e;
    int64_t id;
    db_cell c = {.run_id = run, .dataset = "sst2", .split = "dev", .model = "m", .provider = "local",
                 .method = method, .kind = "zero-shot", .scoring = "rank", .n_planned = 2,
                 .majority_label_correct_n = -1, .has_budget = 1, .calibration = calibration,
                 .train_limit = train_limit};
    cr_assert_eq(db_cell_upsert(db, &c, &id, &e), PWB_OK, "%s", e.msg);
    db_prediction p = {.cell_id = id, .row = 0, .valid = 1, .correct = 1, .cpu_s = 0.1, .tokens_in = 5};
    cr_assert_eq(db_prediction_insert(db, &p, &e), PWB_OK, "%s", e.msg);
    return id;
}

Test(budget, section_shows_budget_and_prior)
{
    pwb_db *db;
    pwb_err e;
    cr_assert_eq(db_open(&db, dbpath, DB_READWRITE, &e), PWB_OK, "%s", e.msg);
    int64_t run;
    cr_assert_eq(db_run_create(db, "b", NULL, "abcd", "{}", 1, &run, &e), PWB_OK);
    cr_assert_eq(db_example_upsert(db, "sst2", "dev", 0, "a", "negative", 0, &e), PWB_OK);
    cr_assert_eq(db_example_upsert(db, "sst2", "dev", 1, "b", "positive", 1, &e), PWB_OK);
    int64_t c1 = cell(db, run, "zs-cal", "contextual", 0);
    cell(db, run, "fs", "none", -1);
    cell(db, run, "fs-16", "none", 16);
    /* log(0.8 * k), log(0.2 * k): the report normalises, so the scale k = 3 must not show */
    double prior[2] = {log(2.4), log(0.6)};
    cr_assert_eq(db_cell_set_calib_prior(db, c1, prior, 2, &e), PWB_OK);
    pwb_report r;
    cr_assert_eq(report_load(&r, db, run, &e), PWB_OK, "%s", e.msg);
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(report_render_md(&r, &b, &e), PWB_OK, "%s", e.msg);
    cr_assert(strstr(b.data, "### Labelled data and calibration") != NULL);
    cr_assert(strstr(b.data, "| zs-cal | zero-shot | 0 | contextual | negative 0.800, positive 0.200 |\n") != NULL,
              "%s", b.data);
    cr_assert(strstr(b.data, "| fs | zero-shot | all | none | \xe2\x80\x94 |\n") != NULL, "%s", b.data);
    cr_assert(strstr(b.data, "| fs-16 | zero-shot | 16 | none |") != NULL, "%s", b.data);
    buf_reset(&b);
    cr_assert_eq(report_render_json(&r, &b, &e), PWB_OK, "%s", e.msg);
    cr_assert(strstr(b.data, "\"calibration\":\t\"contextual\"") != NULL, "%s", b.data);
    cr_assert(strstr(b.data, "\"train_limit\":\t16") != NULL, "%s", b.data);
    buf_free(&b);
    report_free(&r);
    db_close(db);
}

/* The object of method `name` anywhere in the JSON report. */
static const cJSON *json_method(const cJSON *o, const char *name)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "method");
    if (cJSON_IsString(m) && !strcmp(m->valuestring, name))
        return o;
    const cJSON *c;
    cJSON_ArrayForEach(c, o)
    {
        const cJSON *f = cJSON_IsObject(c) || cJSON_IsArray(c) ? json_method(c, name) : NULL;
        if (f)
            return f;
    }
    return NULL;
}

/* A database with one run of `suite` over two SST-2 dev rows. */
static pwb_db *open_run(const char *suite, int64_t *run)
{
    pwb_db *db;
    pwb_err e;
    cr_assert_eq(db_open(&db, dbpath, DB_READWRITE, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(db_run_create(db, "b", NULL, "abcd", suite, 1, run, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(db_example_upsert(db, "sst2", "dev", 0, "a", "negative", 0, &e), PWB_OK);
    cr_assert_eq(db_example_upsert(db, "sst2", "dev", 1, "b", "positive", 1, &e), PWB_OK);
    return db;
}

/* The run's JSON report, parsed. */
static cJSON *report_json(pwb_db *db, int64_t run)
{
    pwb_err e;
    pwb_report r;
    cr_assert_eq(report_load(&r, db, run, &e), PWB_OK, "%s", e.msg);
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(report_render_json(&r, &b, &e), PWB_OK, "%s", e.msg);
    cJSON *doc = cJSON_Parse(b.data);
    cr_assert_not_null(doc, "%s", b.data);
    buf_free(&b);
    report_free(&r);
    return doc;
}

/* A method's labelled_examples in the JSON report, -1 when absent. */
static double labelled_of(const cJSON *doc, const char *method)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(json_method(doc, method), "labelled_examples");
    return cJSON_IsNumber(n) ? n->valuedouble : -1;
}

/* Shots picked per query among the nearest of a pool read the whole pool: the verdict counts the
 * pool, while fixed balanced shots count as the shots shown. */
Test(budget, similar_shots_count_their_pool)
{
    const char *suite = "{\"name\":\"b\",\"methods\":["
                        "{\"name\":\"sim\",\"template\":\"zero-shot\",\"shots\":4,\"shot_pick\":\"similar\","
                        "\"train_limit\":1000},"
                        "{\"name\":\"bal\",\"template\":\"zero-shot\",\"shots\":4,\"shot_pick\":\"balanced\","
                        "\"train_limit\":1000}]}";
    int64_t run;
    pwb_db *db = open_run(suite, &run);
    cell(db, run, "sim", "none", 1000);
    cell(db, run, "bal", "none", 1000);
    cJSON *doc = report_json(db, run);
    cr_assert_eq(labelled_of(doc, "sim"), 1000);
    cr_assert_eq(labelled_of(doc, "bal"), 4);
    cJSON_Delete(doc);
    db_close(db);
}

/* A tuned method's budget: its training rows and the held-out rows it evaluates on, as the
 * labelled-data table counts them, also when one epoch saw fewer rows than that (AG News: 4,000
 * seen of train_limit 4,000 + 100 held out is 4,100, not 4,000); with more steps than rows, the
 * declared budget. */
Test(budget, tuned_budget_counts_held_out_rows)
{
    pwb_err e;
    const char *suite = "{\"name\":\"b\",\"methods\":["
                        "{\"name\":\"lora\",\"template\":\"zero-shot\",\"lora\":{\"r\":8,\"steps\":500,"
                        "\"batch\":8,\"train_limit\":4000,\"eval_n\":100}},"
                        "{\"name\":\"soft\",\"template\":\"zero-shot\",\"soft_prompt\":{\"tokens\":20,"
                        "\"steps\":500,\"batch\":8,\"train_limit\":2000,\"eval_n\":100}}]}";
    int64_t run;
    pwb_db *db = open_run(suite, &run);
    const char *names[2] = {"lora", "soft"};
    for (int i = 0; i < 2; i++) {
        int64_t c = cell(db, run, names[i], "none", i ? 2100 : 4100);
        db_soft_prompt sp = {.config_sha256 = names[i], .model = "m", .dataset = "sst2", .init = "class",
                             .n_tokens = 20, .trainable_params = 100, .artifact_bytes = 400, .examples_seen = 4000,
                             .steps = 500, .train_seconds = 60, .best_eval_acc = 0.9, .train_cpu_s = 100};
        int64_t id;
        cr_assert_eq(db_soft_prompt_upsert(db, &sp, &id, &e), PWB_OK, "%s", e.msg);
        cr_assert_eq(db_cell_set_soft_prompt(db, c, id, &e), PWB_OK);
    }
    cJSON *doc = report_json(db, run);
    cr_assert_eq(labelled_of(doc, "lora"), 4100);
    cr_assert_eq(labelled_of(doc, "soft"), 2100);
    cJSON_Delete(doc);
    db_close(db);
}
