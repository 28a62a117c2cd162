/* Migration 2 (sweeps): a version-1 file is upgraded in place, keeping its rows; cells carry the
 * sweep and its point; v_summary shows them; training curves read back in step order. */
#include <criterion/criterion.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/db.h"
#include "store/db_internal.h"

static char tmpdir[256];
static char path[300];

static void setup(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/pwb-mig-XXXXXX", t && *t ? t : "/tmp");
    cr_assert_not_null(mkdtemp(tmpdir));
    snprintf(path, sizeof path, "%s/m.db", tmpdir);
}

static void teardown(void)
{
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[320];
        snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        unlink(p);
    }
    rmdir(tmpdir);
}

TestSuite(migration, .init = setup, .fini = teardown);

static void raw(const char *sql)
{
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    char *err = NULL;
    cr_assert_eq(sqlite3_exec(h, sql, NULL, NULL, &err), SQLITE_OK, "%s", err ? err : "");
    sqlite3_close(h);
}

static char *raw_text(const char *sql)
{
    sqlite3 *h;
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &s, NULL), SQLITE_OK, "%s", sqlite3_errmsg(h));
    char *out = NULL;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
        out = strdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(h);
    return out;
}

Test(migration, upgrades_a_version_1_file_in_place)
{
    cr_assert_geq(db_n_migrations, 2);
    /* A file as pwb with schema 1 wrote it, with one run, cell and prediction. */
    raw("PRAGMA application_id = 1347895857;");
    raw(db_migrations[0]);
    raw("PRAGMA user_version = 1;"
        "INSERT INTO runs (suite_name, suite_sha256, seed) VALUES ('old', 'aa', 1);"
        "INSERT INTO cells (run_id, dataset, split, model, method) VALUES (1, 'sst2', 'dev', 'm', 'zs');"
        "INSERT INTO predictions (cell_id, row, valid, correct) VALUES (1, 0, 1, 1);");
    /* Read-only handles do not migrate: they ask for a read-write open first. */
    pwb_db *db;
    pwb_err e;
    cr_assert_eq(db_open(&db, path, DB_READONLY, &e), PWB_EDB);
    cr_assert(strstr(e.msg, "older") != NULL, "%s", e.msg);
    cr_assert_eq(db_open(&db, path, DB_READWRITE, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(db_schema_version(db), db_schema_latest());
    db_close(db);
    char *v = raw_text("SELECT method || ':' || coalesce(sweep, 'none') || ':' || n FROM v_summary");
    cr_assert_str_eq(v, "zs:none:1");
    free(v);
}

Test(migration, cells_keep_their_sweep_point)
{
    pwb_db *db;
    pwb_err e;
    cr_assert_eq(db_open(&db, path, DB_READWRITE, &e), PWB_OK, "%s", e.msg);
    int64_t run, c1, c2;
    cr_assert_eq(db_run_create(db, "s", NULL, "bb", "{}", 1, &run, &e), PWB_OK);
    db_cell c = {.run_id = run, .dataset = "sst2", .split = "dev", .model = "m", .method = "fs[shots=2]",
                 .kind = "few-shot", .n_planned = 3, .majority_label_correct_n = -1, .sweep = "fs",
                 .sweep_point = "{\"shots\":2}"};
    cr_assert_eq(db_cell_upsert(db, &c, &c1, &e), PWB_OK, "%s", e.msg);
    db_cell d = {.run_id = run, .dataset = "sst2", .split = "dev", .model = "m", .method = "zs", .kind = "zero-shot",
                 .majority_label_correct_n = -1};
    cr_assert_eq(db_cell_upsert(db, &d, &c2, &e), PWB_OK);
    /* an upsert updates the point */
    c.sweep_point = "{\"shots\":2,\"x\":1}";
    int64_t again;
    cr_assert_eq(db_cell_upsert(db, &c, &again, &e), PWB_OK);
    cr_assert_eq(again, c1);
    db_cell_info *cells;
    size_t n;
    cr_assert_eq(db_cells_list(db, run, &cells, &n, &e), PWB_OK);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(cells[0].sweep, "fs");
    cr_assert_str_eq(cells[0].sweep_point, "{\"shots\":2,\"x\":1}");
    cr_assert_null(cells[1].sweep);
    cr_assert_null(cells[1].sweep_point);
    db_cells_free(cells, n);
    /* training curves, inserted out of order, read back by step */
    db_soft_prompt sp = {.config_sha256 = "k", .model = "m", .dataset = "sst2", .n_tokens = 4, .trainable_params = -1,
                         .artifact_bytes = -1, .examples_seen = -1, .steps = -1, .train_seconds = NAN,
                         .best_eval_acc = NAN};
    int64_t spid;
    cr_assert_eq(db_soft_prompt_upsert(db, &sp, &spid, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(db_train_step_insert(db, spid, 2, 0.5, 0.3, 2.0, 16, &e), PWB_OK);
    cr_assert_eq(db_train_step_insert(db, spid, 1, 0.9, 0.3, 1.0, 8, &e), PWB_OK);
    cr_assert_eq(db_train_eval_insert(db, spid, 2, 0.75, 0.4, &e), PWB_OK);
    db_train_step_info *steps;
    db_train_eval_info *evals;
    size_t ns, ne;
    cr_assert_eq(db_train_steps_list(db, spid, &steps, &ns, &e), PWB_OK);
    cr_assert_eq(ns, 2);
    cr_assert_eq(steps[0].step, 1);
    cr_assert_float_eq(steps[0].loss, 0.9, 1e-12);
    cr_assert_eq(steps[1].examples_seen, 16);
    cr_assert_eq(db_train_evals_list(db, spid, &evals, &ne, &e), PWB_OK);
    cr_assert_eq(ne, 1);
    cr_assert_float_eq(evals[0].accuracy, 0.75, 1e-12);
    free(steps);
    free(evals);
    cr_assert_eq(db_train_steps_list(db, 999, &steps, &ns, &e), PWB_OK);
    cr_assert_eq(ns, 0);
    free(steps);
    db_close(db);
    char *v = raw_text("SELECT sweep_point FROM v_summary WHERE method = 'fs[shots=2]'");
    cr_assert_str_eq(v, "{\"shots\":2,\"x\":1}");
    free(v);
}

/* Migration 3: a cell keeps its calibration, its prior (JSON, label order) and its data budget;
 * the content-free prompts keep their raw scores; an unknown budget reads back as -1. */
Test(migration, cells_keep_calibration_and_budget)
{
    pwb_db *db;
    pwb_err e;
    cr_assert_eq(db_open(&db, path, DB_READWRITE, &e), PWB_OK, "%s", e.msg);
    cr_assert_geq(db_schema_version(db), 3);
    int64_t run, c1, c2;
    cr_assert_eq(db_run_create(db, "s", NULL, "cc", "{}", 1, &run, &e), PWB_OK);
    db_cell c = {.run_id = run, .dataset = "sst2", .split = "dev", .model = "m", .method = "zs-cal",
                 .kind = "zero-shot", .scoring = "rank", .majority_label_correct_n = -1,
                 .has_budget = 1, .calibration = "contextual", .train_limit = 0};
    cr_assert_eq(db_cell_upsert(db, &c, &c1, &e), PWB_OK, "%s", e.msg);
    db_cell d = {.run_id = run, .dataset = "sst2", .split = "dev", .model = "m", .method = "fs",
                 .majority_label_correct_n = -1, .train_limit = 16};
    cr_assert_eq(db_cell_upsert(db, &d, &c2, &e), PWB_OK, "%s", e.msg);
    double prior[2] = {-0.2, -1.7};
    cr_assert_eq(db_cell_set_calib_prior(db, c1, prior, 2, &e), PWB_OK, "%s", e.msg);
    double lp[2] = {-1.5, -3.25};
    cr_assert_eq(db_calib_input_put(db, c1, 0, "N/A", "p0", lp, 2, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(db_calib_input_put(db, c1, 0, "N/A", "p0", lp, 2, &e), PWB_OK, "a rewrite replaces");
    cr_assert_eq(db_calib_input_put(db, c1, 1, "", "p1", lp, 2, &e), PWB_OK);
    db_cell_info *cells;
    size_t n;
    cr_assert_eq(db_cells_list(db, run, &cells, &n, &e), PWB_OK);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(cells[0].calibration, "contextual");
    cr_assert_str_eq(cells[0].calib_prior, "[-0.2,-1.7]");
    cr_assert_eq(cells[0].train_limit, 0);
    cr_assert_null(cells[1].calibration, "without has_budget nothing is recorded");
    cr_assert_null(cells[1].calib_prior);
    cr_assert_eq(cells[1].train_limit, -1);
    db_cells_free(cells, n);
    db_close(db);
    char *v = raw_text("SELECT count(*) || ':' || max(choice_logprobs) FROM calib_inputs");
    cr_assert_str_eq(v, "2:[-1.5,-3.25]");
    free(v);
}
