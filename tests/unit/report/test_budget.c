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

/* Shots picked per query among the nearest of a pool read the whole pool: the verdict counts the
 * pool, while fixed balanced shots count as the shots shown. */
Test(budget, similar_shots_count_their_pool)
{
    pwb_db *db;
    pwb_err e;
    cr_assert_eq(db_open(&db, dbpath, DB_READWRITE, &e), PWB_OK, "%s", e.msg);
    const char *suite = "{\"name\":\"b\",\"methods\":["
                        "{\"name\":\"sim\",\"template\":\"zero-shot\",\"shots\":4,\"shot_pick\":\"similar\","
                        "\"train_limit\":1000},"
                        "{\"name\":\"bal\",\"template\":\"zero-shot\",\"shots\":4,\"shot_pick\":\"balanced\","
                        "\"train_limit\":1000}]}";
    int64_t run;
    cr_assert_eq(db_run_create(db, "b", NULL, "abcd", suite, 1, &run, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(db_example_upsert(db, "sst2", "dev", 0, "a", "negative", 0, &e), PWB_OK);
    cr_assert_eq(db_example_upsert(db, "sst2", "dev", 1, "b", "positive", 1, &e), PWB_OK);
    cell(db, run, "sim", "none", 1000);
    cell(db, run, "bal", "none", 1000);
    pwb_report r;
    cr_assert_eq(report_load(&r, db, run, &e), PWB_OK, "%s", e.msg);
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(report_render_json(&r, &b, &e), PWB_OK, "%s", e.msg);
    cJSON *doc = cJSON_Parse(b.data);
    cr_assert_not_null(doc, "%s", b.data);
    const cJSON *sim = json_method(doc, "sim"), *bal = json_method(doc, "bal");
    cr_assert(sim && bal, "%s", b.data);
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(sim, "labelled_examples");
    const cJSON *nb = cJSON_GetObjectItemCaseSensitive(bal, "labelled_examples");
    cr_assert(cJSON_IsNumber(ns) && ns->valuedouble == 1000, "%s", b.data);
    cr_assert(cJSON_IsNumber(nb) && nb->valuedouble == 4, "%s", b.data);
    cJSON_Delete(doc);
    buf_free(&b);
    report_free(&r);
    db_close(db);
}
