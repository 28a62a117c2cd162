#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/db.h"
#include "util/timer.h"

static char tmpdir[256];
static char dbpath[300];

static void setup(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/pwb-store-XXXXXX", t && *t ? t : "/tmp");
    cr_assert_not_null(mkdtemp(tmpdir));
    snprintf(dbpath, sizeof dbpath, "%s/t.db", tmpdir);
}

static void teardown(void)
{
    const char *suffix[] = {"", "-wal", "-shm", "-journal"};
    for (int i = 0; i < 4; i++) {
        char p[320];
        snprintf(p, sizeof p, "%s%s", dbpath, suffix[i]);
        unlink(p);
    }
    rmdir(tmpdir);
}

TestSuite(store, .init = setup, .fini = teardown);

static pwb_db *open_rw(void)
{
    pwb_db *db = NULL;
    pwb_err e;
    err_clear(&e);
    int rc = db_open(&db, dbpath, DB_READWRITE, &e);
    cr_assert_eq(rc, PWB_OK, "db_open: %s", e.msg);
    return db;
}

/* Raw SQLite scalar on a separate connection, to check what is really on disk. */
static long long raw_int(const char *sql)
{
    sqlite3 *h;
    cr_assert_eq(sqlite3_open_v2(dbpath, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &s, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(h));
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW, "%s", sql);
    long long v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(h);
    return v;
}

static void raw_exec(const char *sql)
{
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(dbpath, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(h));
    sqlite3_close(h);
}

static int64_t make_cell(pwb_db *db, int64_t *run_out, const char *method)
{
    pwb_err e;
    int64_t run = 0, cell = 0;
    cr_assert_eq(db_run_find(db, "abc", &run, &e), PWB_OK);
    if (!run)
        cr_assert_eq(db_run_create(db, "demo", "suites/demo.json", "abc", "{}", 42, &run, &e), PWB_OK, "%s", e.msg);
    db_cell c = {.run_id = run, .dataset = "sst2", .split = "validation", .model = "m", .provider = "local",
                 .method = method, .kind = "zero-shot", .template_path = "templates/zs.txt",
                 .template_sha256 = "00", .scoring = "generate", .n_planned = 10, .majority_label_correct_n = -1};
    cr_assert_eq(db_cell_upsert(db, &c, &cell, &e), PWB_OK, "%s", e.msg);
    if (run_out)
        *run_out = run;
    return cell;
}

static db_prediction pred(int64_t cell, long row, int correct)
{
    db_prediction p = {.cell_id = cell, .row = row, .prompt = "p", .prompt_sha256 = "h", .output = "out",
                       .extracted = correct ? "positive" : "negative", .valid = 1, .correct = correct,
                       .latency_s = 0.5, .cpu_s = 0.25, .tokens_in = 10, .tokens_out = 2, .cost_usd = 0.001,
                       .retries = 0, .http_status = 0, .cached = 0, .error = NULL};
    return p;
}

Test(store, migrates_fresh_and_reopens)
{
    pwb_db *db = open_rw();
    cr_assert_eq(db_schema_version(db), db_schema_latest());
    cr_assert_geq(db_schema_latest(), 1);
    db_close(db);
    cr_assert_eq(raw_int("PRAGMA user_version"), db_schema_latest());
    cr_assert_eq(raw_int("SELECT count(*) FROM sqlite_schema WHERE type='table' AND name IN "
                         "('runs','cells','examples','predictions','soft_prompts','train_steps',"
                         "'train_evals','cache')"), 8);
    cr_assert_eq(raw_int("SELECT count(*) FROM sqlite_schema WHERE type='view'"), 4); /* + v_confusion */
    long long nobj = raw_int("SELECT count(*) FROM sqlite_schema");
    /* Re-opening applies nothing and changes nothing. */
    db = open_rw();
    cr_assert_eq(db_schema_version(db), db_schema_latest());
    db_close(db);
    cr_assert_eq(raw_int("SELECT count(*) FROM sqlite_schema"), nobj);
    cr_assert_eq(raw_int("SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);
    /* Read-only open of a migrated file works. */
    pwb_err e;
    cr_assert_eq(db_open(&db, dbpath, DB_READONLY, &e), PWB_OK, "%s", e.msg);
    db_close(db);
}

Test(store, refuses_future_version)
{
    db_close(open_rw());
    raw_exec("PRAGMA user_version = 99");
    pwb_db *db = NULL;
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(db_open(&db, dbpath, DB_READWRITE, &e), PWB_EDB);
    cr_assert_null(db);
    cr_assert(strstr(e.msg, "newer") != NULL, "%s", e.msg);
    cr_assert_eq(db_open(&db, dbpath, DB_READONLY, &e), PWB_EDB);
    cr_assert_eq(raw_int("PRAGMA user_version"), 99); /* untouched */
}

Test(store, refuses_foreign_database)
{
    raw_exec("CREATE TABLE t(x)");
    pwb_db *db = NULL;
    pwb_err e;
    cr_assert_eq(db_open(&db, dbpath, DB_READWRITE, &e), PWB_EDB);
    cr_assert(strstr(e.msg, "not a pwb database") != NULL, "%s", e.msg);
    cr_assert_eq(raw_int("SELECT count(*) FROM sqlite_schema"), 1);
}

Test(store, creates_parent_directory)
{
    char sub[320], path[340];
    snprintf(sub, sizeof sub, "%s/results", tmpdir);
    snprintf(path, sizeof path, "%s/pwb.db", sub);
    pwb_db *db = NULL;
    pwb_err e;
    cr_assert_eq(db_open(&db, path, DB_READWRITE, &e), PWB_OK, "%s", e.msg);
    db_close(db);
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[360];
        snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        unlink(p);
    }
    cr_assert_eq(rmdir(sub), 0);
}

Test(store, readonly_open_of_missing_file_fails)
{
    pwb_db *db = NULL;
    pwb_err e;
    cr_assert_eq(db_open(&db, dbpath, DB_READONLY, &e), PWB_EDB);
    cr_assert_null(db);
}

Test(store, runs_and_cells)
{
    pwb_db *db = open_rw();
    pwb_err e;
    int64_t run = -1, run2 = 0;
    cr_assert_eq(db_run_find(db, "abc", &run, &e), PWB_OK);
    cr_assert_eq(run, 0);
    cr_assert_eq(db_run_create(db, "demo", "suites/demo.json", "abc", "{}", UINT64_MAX - 1, &run, &e), PWB_OK);
    cr_assert_gt(run, 0);
    cr_assert_eq(db_run_find(db, "abc", &run2, &e), PWB_OK);
    cr_assert_eq(run2, run);
    int64_t c1 = make_cell(db, NULL, "zs"), c1b = make_cell(db, NULL, "zs"), c2 = make_cell(db, NULL, "fs");
    cr_assert_eq(c1, c1b);
    cr_assert_neq(c1, c2);
    cr_assert_eq(db_run_finish(db, run, "done", &e), PWB_OK);
    cr_assert_eq(db_run_finish(db, 999, "done", &e), PWB_EINVAL);
    db_run_info ri;
    cr_assert_eq(db_run_get(db, 0, &ri, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(ri.id, run);
    cr_assert_eq(ri.seed, UINT64_MAX - 1);
    cr_assert_str_eq(ri.status, "done");
    cr_assert_not_null(ri.finished);
    cr_assert_str_eq(ri.suite_path, "suites/demo.json");
    db_run_info_free(&ri);
    db_cell_info *cells;
    size_t n;
    cr_assert_eq(db_cells_list(db, run, &cells, &n, &e), PWB_OK);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(cells[0].method, "zs");
    cr_assert_str_eq(cells[1].method, "fs");
    cr_assert_str_eq(cells[1].split, "validation");
    cr_assert_eq(cells[1].n_planned, 10);
    db_cells_free(cells, n);
    db_close(db);
}

Test(store, prediction_insert_is_idempotent)
{
    pwb_db *db = open_rw();
    pwb_err e;
    int64_t cell = make_cell(db, NULL, "zs");
    db_prediction p = pred(cell, 7, 1);
    double lp[2] = {-0.25, -INFINITY};
    p.choice_logprob = lp;
    p.n_choices = 2;
    cr_assert_eq(db_prediction_insert(db, &p, &e), PWB_OK, "%s", e.msg);
    p.correct = 0;
    p.output = "other";
    cr_assert_eq(db_prediction_insert(db, &p, &e), PWB_OK, "%s", e.msg);
    db_prediction q = pred(cell, 3, 0);
    q.tokens_in = -1;
    q.latency_s = NAN;
    cr_assert_eq(db_prediction_insert(db, &q, &e), PWB_OK);
    long *rows;
    size_t n;
    cr_assert_eq(db_cell_done_rows(db, cell, &rows, &n, &e), PWB_OK);
    cr_assert_eq(n, 2);
    cr_assert_eq(rows[0], 3);
    cr_assert_eq(rows[1], 7);
    free(rows);
    db_close(db);
    cr_assert_eq(raw_int("SELECT count(*) FROM predictions WHERE row = 7"), 1);
    cr_assert_eq(raw_int("SELECT correct FROM predictions WHERE row = 7"), 1); /* first insert wins */
    cr_assert_eq(raw_int("SELECT choice_logprobs = '[-0.25,null]' FROM predictions WHERE row = 7"), 1);
    cr_assert_eq(raw_int("SELECT tokens_in IS NULL AND latency_s IS NULL FROM predictions WHERE row = 3"), 1);
    cr_assert_eq(raw_int("SELECT http_status IS NULL FROM predictions WHERE row = 3"), 1);
}

Test(store, batched_transactions_roll_back)
{
    pwb_db *db = open_rw();
    pwb_err e;
    int64_t cell = make_cell(db, NULL, "zs");
    cr_assert_eq(db_begin(db, &e), PWB_OK);
    cr_assert_eq(db_begin(db, &e), PWB_OK); /* nests */
    db_prediction p = pred(cell, 1, 1);
    cr_assert_eq(db_prediction_insert(db, &p, &e), PWB_OK);
    cr_assert_eq(db_commit(db, &e), PWB_OK);
    cr_assert(db_in_transaction(db));
    cr_assert_eq(db_rollback(db), PWB_OK);
    cr_assert_not(db_in_transaction(db));
    cr_assert_eq(db_commit(db, &e), PWB_EINVAL);
    long *rows;
    size_t n;
    cr_assert_eq(db_cell_done_rows(db, cell, &rows, &n, &e), PWB_OK);
    cr_assert_eq(n, 0);
    free(rows);
    db_close(db);
}

/* A child inserts batches of 256 rows per transaction, forever; the parent SIGKILLs it mid-run
 * and then checks that only whole batches are visible. */
Test(store, crash_leaves_no_partial_batch)
{
    db_close(open_rw());
    enum { BATCH = 256 };
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        pwb_db *db = NULL;
        pwb_err e;
        if (db_open(&db, dbpath, DB_READWRITE, &e))
            _exit(2);
        int64_t cell = make_cell(db, NULL, "zs");
        for (long b = 0;; b++) {
            if (db_begin(db, &e))
                _exit(3);
            for (long i = 0; i < BATCH; i++) {
                db_prediction p = pred(cell, b * BATCH + i, (int)(i & 1));
                if (db_prediction_insert(db, &p, &e))
                    _exit(4);
            }
            if (db_commit(db, &e))
                _exit(5);
            if (b == 3 && write(fds[1], "x", 1) != 1)
                _exit(6);
        }
    }
    close(fds[1]);
    char c;
    cr_assert_eq(read(fds[0], &c, 1), 1, "child never committed 4 batches");
    usleep(20000);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    close(fds[0]);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child exited on its own: %d", status);
    pwb_db *db = open_rw();
    pwb_err e;
    int64_t run;
    int64_t cell = make_cell(db, &run, "zs");
    long *rows;
    size_t n;
    cr_assert_eq(db_cell_done_rows(db, cell, &rows, &n, &e), PWB_OK);
    cr_assert_geq(n, 4 * BATCH);
    cr_assert_eq(n % BATCH, 0, "partial batch visible: %zu rows", n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(rows[i], (long)i);
    free(rows);
    db_close(db);
    cr_assert_eq(raw_int("SELECT count(*) FROM pragma_integrity_check WHERE integrity_check = 'ok'"), 1);
}

Test(store, cache_get_put)
{
    pwb_db *db = open_rw();
    pwb_err e;
    char *v = (char *)1;
    cr_assert_eq(db_cache_get(db, "k1", &v, &e), PWB_OK);
    cr_assert_null(v);
    cr_assert_eq(db_cache_put(db, "k1", "{\"text\":\"hi\"}", &e), PWB_OK);
    cr_assert_eq(db_cache_get(db, "k1", &v, &e), PWB_OK);
    cr_assert_str_eq(v, "{\"text\":\"hi\"}");
    free(v);
    cr_assert_eq(db_cache_put(db, "k1", "{\"text\":\"ho\"}", &e), PWB_OK);
    cr_assert_eq(db_cache_get(db, "k1", &v, &e), PWB_OK);
    cr_assert_str_eq(v, "{\"text\":\"ho\"}");
    free(v);
    db_close(db);
    cr_assert_eq(raw_int("SELECT hits FROM cache WHERE key = 'k1'"), 2);
    cr_assert_eq(raw_int("SELECT count(*) FROM cache"), 1);
}

struct rows_ctx {
    int nrows, ncols;
    char first[64];
};

static int collect(void *ctx, int stmt, int ncols, const char *const *names, const char *const *values)
{
    struct rows_ctx *r = ctx;
    if (r->nrows == 0 && values[0])
        snprintf(r->first, sizeof r->first, "%s=%s", names[0], values[0]);
    r->nrows++;
    r->ncols = ncols;
    return 0;
}

Test(store, query_is_read_only)
{
    pwb_db *db = open_rw();
    make_cell(db, NULL, "zs");
    db_close(db);
    pwb_err e;
    cr_assert_eq(db_open(&db, dbpath, DB_READONLY, &e), PWB_OK, "%s", e.msg);
    struct rows_ctx r = {0};
    cr_assert_eq(db_query(db, "SELECT method FROM cells; SELECT 1, 2;", 0, collect, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(r.nrows, 2);
    cr_assert_eq(r.ncols, 2);
    cr_assert_str_eq(r.first, "method=zs");
    cr_assert_neq(db_query(db, "INSERT INTO cache (key, value) VALUES ('a', '1')", 0, collect, &r, &e), PWB_OK);
    cr_assert_neq(db_query(db, "DELETE FROM cells", 0, collect, &r, &e), PWB_OK);
    cr_assert_neq(db_query(db, "ATTACH 'x.db' AS x", 0, collect, &r, &e), PWB_OK);
    cr_assert_neq(db_query(db, "SELECT * FROM nope", 0, collect, &r, &e), PWB_OK);
    cr_assert_neq(db_query(db, "  ", 0, collect, &r, &e), PWB_OK);
    db_close(db);
    /* The statement guard holds on a read-write handle too. */
    db = open_rw();
    cr_assert_eq(db_query(db, "SELECT 1; DROP TABLE cache", 0, collect, &r, &e), PWB_EINVAL);
    cr_assert(strstr(e.msg, "read-only") != NULL, "%s", e.msg);
    db_close(db);
    cr_assert_eq(raw_int("SELECT count(*) FROM cache"), 0);
    cr_assert_eq(raw_int("SELECT count(*) FROM cells"), 1);
    cr_assert_eq(raw_int("SELECT count(*) FROM sqlite_schema WHERE name = 'cache'"), 1);
}

/* The guard looks at the parsed statement, all of them before any runs: a comment in front changes
 * nothing, a refused statement anywhere means no rows at all, fts3_tokenizer is off, and a time
 * limit stops a runaway statement. */
Test(store, query_guard_on_parsed_statements)
{
    pwb_db *db = open_rw();
    make_cell(db, NULL, "zs");
    pwb_err e;
    struct rows_ctx r = {0};
    const char *refused[] = {
        "/* just reading */ BEGIN",
        "-- a comment\nBEGIN IMMEDIATE",
        "  /**/COMMIT",
        "/* x */ SAVEPOINT s",
        "/* x */ ATTACH ':memory:' AS x",
        "/* x */ DETACH main",
        "SELECT 1; /* x */ END",
        "SELECT fts3_tokenizer('simple')",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 7",
        "CREATE TEMP TABLE t (x)",
        "WITH x AS (SELECT 1) DELETE FROM cells",
        "SELECT 1; INSERT INTO cache (key, value) VALUES ('a', '1')",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        memset(&r, 0, sizeof r);
        err_clear(&e);
        cr_expect_eq(db_query(db, refused[i], 0, collect, &r, &e), PWB_EINVAL, "'%s' was not refused", refused[i]);
        cr_expect_eq(r.nrows, 0, "'%s': %d rows came out before the refusal", refused[i], r.nrows);
    }
    cr_assert_eq(raw_int("SELECT count(*) FROM cache"), 0);
    /* reads that stay allowed */
    memset(&r, 0, sizeof r);
    cr_assert_eq(db_query(db, "PRAGMA table_info(cells); PRAGMA user_version", 0, collect, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_gt(r.nrows, 2);
    memset(&r, 0, sizeof r);
    double t0 = timer_wall();
    cr_assert_eq(db_query(db, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT count(*) FROM c", 0.2,
                          collect, &r, &e), PWB_ELIMIT);
    cr_assert_lt(timer_wall() - t0, 30, "the limit did not stop it");
    cr_assert(strstr(e.msg, "time limit"), "%s", e.msg);
    cr_assert_eq(db_query(db, "SELECT 1", NAN, collect, &r, &e), PWB_EINVAL);
    db_close(db);
}

Test(store, views)
{
    pwb_db *db = open_rw();
    pwb_err e;
    int64_t run;
    int64_t cell = make_cell(db, &run, "zs");
    for (long r = 0; r < 4; r++) {
        char in[32], ans[16];
        snprintf(in, sizeof in, "text %ld", r);
        snprintf(ans, sizeof ans, "%s", r % 2 ? "positive" : "negative");
        cr_assert_eq(db_example_upsert(db, "sst2", "validation", r, in, ans, (int)(r % 2), &e), PWB_OK);
    }
    cr_assert_eq(db_example_upsert(db, "sst2", "validation", 0, "text 0", "negative", 0, &e), PWB_OK);
    /* rows 0..3: correct 1,1,0,0; row 3 invalid; tokens_in 10,20,30,unknown; cost 0.001 each */
    int correct[4] = {1, 1, 0, 0};
    int tin[4] = {10, 20, 30, -1};
    for (long r = 0; r < 4; r++) {
        db_prediction p = pred(cell, r, correct[r]);
        p.tokens_in = tin[r];
        p.latency_s = 0.5 * (double)(r + 1);
        if (r == 3) {
            p.valid = 0;
            p.extracted = NULL;
        }
        if (r == 2) /* wrong on a negative example: a label word in another case, with blanks */
            p.extracted = " POSITIVE ";
        cr_assert_eq(db_prediction_insert(db, &p, &e), PWB_OK);
    }
    db_close(db);
    /* v_confusion: gold x answered label with both words; invalid answers are -1 */
    cr_assert_eq(raw_int("SELECT count(*) FROM v_confusion"), 4);
    cr_assert_eq(raw_int("SELECT n FROM v_confusion WHERE gold = 0 AND predicted = 0 AND gold_word = 'negative'"
                         " AND predicted_word = 'negative'"), 1);
    cr_assert_eq(raw_int("SELECT n FROM v_confusion WHERE gold = 0 AND predicted = 1 AND predicted_word = 'positive'"),
                 1);
    cr_assert_eq(raw_int("SELECT n FROM v_confusion WHERE gold = 1 AND predicted = 1"), 1);
    cr_assert_eq(raw_int("SELECT n FROM v_confusion WHERE gold = 1 AND predicted = -1 AND predicted_word = '(invalid)'"),
                 1);
    cr_assert_eq(raw_int("SELECT count(*) FROM examples"), 4);
    cr_assert_eq(raw_int("SELECT n FROM v_summary"), 4);
    cr_assert_eq(raw_int("SELECT correct FROM v_summary"), 2);
    cr_assert_eq(raw_int("SELECT accuracy = 0.5 FROM v_summary"), 1);
    cr_assert_eq(raw_int("SELECT invalid FROM v_summary"), 1);
    cr_assert_eq(raw_int("SELECT mean_tokens_in = 20.0 FROM v_summary"), 1);
    cr_assert_eq(raw_int("SELECT abs(total_cost_usd - 0.004) < 1e-12 FROM v_summary"), 1);
    cr_assert_eq(raw_int("SELECT mean_latency_s = 1.25 FROM v_summary"), 1);
    cr_assert_eq(raw_int("SELECT count(*) FROM v_predictions WHERE answer = 'positive' AND row IN (1, 3)"), 2);
    cr_assert_eq(raw_int("SELECT label FROM v_predictions WHERE row = 1"), 1);
    cr_assert_eq(raw_int("SELECT n_predictions FROM v_runs"), 4);
    cr_assert_eq(raw_int("SELECT n_cells FROM v_runs"), 1);
    cr_assert_eq(raw_int("SELECT n_planned FROM v_runs"), 10);
    /* The read model sees the same and joins the labels. */
    cr_assert_eq(db_open(&db, dbpath, DB_READONLY, &e), PWB_OK);
    db_outcome *o;
    size_t n;
    cr_assert_eq(db_cell_outcomes(db, cell, &o, &n, &e), PWB_OK);
    cr_assert_eq(n, 4);
    cr_assert_eq(o[1].label, 1);
    cr_assert_eq(o[3].valid, 0);
    cr_assert_eq(o[3].tokens_in, -1);
    cr_assert_float_eq(o[2].latency_s, 1.5, 1e-12);
    /* the label each answer names, as v_confusion has it */
    cr_assert_eq(o[0].predicted, 0);
    cr_assert_eq(o[1].predicted, 1);
    cr_assert_eq(o[2].predicted, 1);
    cr_assert_eq(o[3].predicted, DB_PRED_INVALID);
    free(o);
    char **words;
    int nw;
    cr_assert_eq(db_split_labels(db, "sst2", "validation", &words, &nw, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(nw, 2);
    cr_assert_str_eq(words[0], "negative");
    cr_assert_str_eq(words[1], "positive");
    db_labels_free(words, nw);
    cr_assert_eq(db_split_labels(db, "nope", "x", &words, &nw, &e), PWB_OK);
    cr_assert_eq(nw, 0);
    db_detail *d;
    cr_assert_eq(db_cell_details(db, cell, &d, &n, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(d[2].input, "text 2");
    cr_assert_str_eq(d[2].answer, "negative");
    cr_assert_str_eq(d[2].extracted, " POSITIVE ");
    cr_assert_str_eq(d[2].prompt, "p");
    cr_assert_eq(d[2].label, 0);
    cr_assert_eq(d[3].valid, 0);
    cr_assert_null(d[3].extracted);
    db_details_free(d, n);
    db_close(db);
}

Test(store, run_tallies_and_spending)
{
    pwb_db *db = open_rw();
    pwb_err e;
    int64_t run;
    int64_t cell = make_cell(db, &run, "zs");
    int correct[3] = {1, 0, 1};
    for (long r = 0; r < 3; r++) {
        db_prediction p = pred(cell, r, correct[r]);
        p.cost_usd = 0.25 * (double)(r + 1);
        p.cached = r == 2; /* paid for once, by the request that stored it */
        if (r == 1)
            p.error = "timeout";
        cr_assert_eq(db_prediction_insert(db, &p, &e), PWB_OK, "%s", e.msg);
    }
    double spent = -1;
    cr_assert_eq(db_run_spent_usd(db, run, &spent, &e), PWB_OK, "%s", e.msg);
    cr_assert_float_eq(spent, 0.75, 1e-12);
    cr_assert_eq(db_run_spent_usd(db, run + 1, &spent, &e), PWB_OK);
    cr_assert_float_eq(spent, 0.0, 1e-12);
    /* the second entry names no cell of the run: left as it was */
    db_cell_tally t[2] = {{.cell_id = cell}, {.cell_id = cell + 100, .n = 7}};
    cr_assert_eq(db_run_tallies(db, run, t, 2, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(t[0].n, 3);
    cr_assert_eq(t[0].correct, 2);
    cr_assert_eq(t[0].errors, 1);
    cr_assert_eq(t[0].invalid, 0);
    cr_assert_float_eq(t[0].cost_usd, 1.5, 1e-12);
    cr_assert_eq(t[1].n, 7);
    db_close(db);
}

Test(store, soft_prompts_and_training_curve)
{
    pwb_db *db = open_rw();
    pwb_err e;
    db_soft_prompt sp = {.config_sha256 = "cfg1", .model = "tiny", .dataset = "sst2", .init = "vocab",
                         .artifact_path = "results/soft/x", .n_tokens = 8, .trainable_params = 8 * 64,
                         .artifact_bytes = -1, .examples_seen = -1, .steps = -1, .train_seconds = -1,
                         .best_eval_acc = -1};
    int64_t id = 0, id2 = 0, found = 0;
    cr_assert_eq(db_soft_prompt_upsert(db, &sp, &id, &e), PWB_OK, "%s", e.msg);
    cr_assert_gt(id, 0);
    for (long s = 1; s <= 3; s++)
        cr_assert_eq(db_train_step_insert(db, id, s, 1.0 / (double)s, 0.01, 0.1 * (double)s, s * 4, &e), PWB_OK);
    cr_assert_eq(db_train_step_insert(db, id, 3, 0.2, 0.01, 0.3, 12, &e), PWB_OK); /* replaces */
    cr_assert_eq(db_train_eval_insert(db, id, 3, 0.75, 0.5, &e), PWB_OK);
    sp.steps = 3;
    sp.best_eval_acc = 0.75;
    sp.train_seconds = 0.3;
    sp.artifact_bytes = 2048;
    cr_assert_eq(db_soft_prompt_upsert(db, &sp, &id2, &e), PWB_OK);
    cr_assert_eq(id2, id);
    cr_assert_eq(db_soft_prompt_find(db, "cfg1", &found, &e), PWB_OK);
    cr_assert_eq(found, id);
    cr_assert_eq(db_soft_prompt_find(db, "nope", &found, &e), PWB_OK);
    cr_assert_eq(found, 0);
    int64_t cell = make_cell(db, NULL, "soft");
    cr_assert_eq(db_cell_set_soft_prompt(db, cell, id, &e), PWB_OK);
    db_soft_prompt_info info;
    cr_assert_eq(db_soft_prompt_get(db, id, &info, &e), PWB_OK);
    cr_assert(isnan(info.train_cpu_s), "no CPU time recorded: unknown, not 0");
    db_soft_prompt_info_free(&info);
    sp.train_cpu_s = 0.55;
    cr_assert_eq(db_soft_prompt_upsert(db, &sp, &id2, &e), PWB_OK);
    cr_assert_eq(db_soft_prompt_get(db, id, &info, &e), PWB_OK);
    cr_assert_float_eq(info.train_cpu_s, 0.55, 1e-12);
    cr_assert_eq(info.steps, 3);
    cr_assert_eq(info.artifact_bytes, 2048);
    cr_assert_eq(info.examples_seen, -1);
    cr_assert_float_eq(info.best_eval_acc, 0.75, 1e-12);
    cr_assert_str_eq(info.init, "vocab");
    db_soft_prompt_info_free(&info);
    db_close(db);
    cr_assert_eq(raw_int("SELECT count(*) FROM train_steps"), 3);
    cr_assert_eq(raw_int("SELECT examples_seen FROM train_steps WHERE step = 3"), 12);
    cr_assert_eq(raw_int("SELECT soft_prompt_id FROM cells WHERE method = 'soft'"), id);
}

/* Throughput of the runner's write path: batches of 256 predictions per transaction. */
Test(store, insert_throughput)
{
    pwb_db *db = open_rw();
    pwb_err e;
    int64_t cell = make_cell(db, NULL, "zs");
    enum { BATCH = 256, NB = 80 };
    char prompt[600];
    memset(prompt, 'a', sizeof prompt - 1);
    prompt[sizeof prompt - 1] = '\0';
    double t0 = timer_wall();
    for (long b = 0; b < NB; b++) {
        cr_assert_eq(db_begin(db, &e), PWB_OK);
        for (long i = 0; i < BATCH; i++) {
            db_prediction p = pred(cell, b * BATCH + i, (int)(i & 1));
            p.prompt = prompt;
            cr_assert_eq(db_prediction_insert(db, &p, &e), PWB_OK);
        }
        cr_assert_eq(db_commit(db, &e), PWB_OK);
    }
    double dt = timer_wall() - t0;
    double rate = (double)(BATCH * NB) / dt;
    cr_log_info("store: %.0f predictions/s inserted in batches of %d (%d rows in %.3f s)", rate, BATCH,
                BATCH * NB, dt);
    cr_assert_gt(rate, 1000.0);
    db_close(db);
}

/* Claims under a write transaction, as the runner does. */
static int claim(pwb_db *db, int64_t run, db_writer *w, pwb_err *e)
{
    cr_assert_eq(db_begin(db, e), PWB_OK);
    int rc = db_run_claim(db, run, w, e);
    if (rc)
        db_rollback(db);
    else
        cr_assert_eq(db_commit(db, e), PWB_OK);
    return rc;
}

Test(store, one_writer_per_run)
{
    pwb_db *db = open_rw();
    pwb_err e;
    db_writer w;
    int64_t run = 0;
    make_cell(db, &run, "zs");
    char host[256];
    cr_assert_eq(gethostname(host, sizeof host), 0);
    host[sizeof host - 1] = '\0';
    char sql[700];

    /* free, then ours (claiming again is fine), then released */
    cr_assert_eq(claim(db, run, &w, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(raw_int("SELECT pid FROM run_writers"), (long long)getpid());
    cr_assert_gt(raw_int("SELECT proc_start FROM run_writers"), 0, "the start time from /proc");
    cr_assert_eq(claim(db, run, &w, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(db_run_heartbeat(db, run, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(db_run_release(db, run, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(raw_int("SELECT count(*) FROM run_writers"), 0);

    /* a live process on this host holds it: busy, and the message names it */
    pid_t child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    snprintf(sql, sizeof sql, "INSERT INTO run_writers (run_id, pid, host) VALUES (%lld, %d, '%s')", (long long)run,
             (int)child, host);
    raw_exec(sql);
    cr_assert_eq(claim(db, run, &w, &e), PWB_EBUSY);
    cr_assert_eq(w.pid, child);
    char want[300];
    snprintf(want, sizeof want, "pid %d on %s", (int)child, host);
    cr_assert(strstr(e.msg, want), "%s", e.msg);
    /* the same pid with another start time is another process: the holder is gone */
    snprintf(sql, sizeof sql, "UPDATE run_writers SET proc_start = 1");
    raw_exec(sql);
    cr_assert_eq(claim(db, run, &w, &e), PWB_OK, "a reused pid is not the writer: %s", e.msg);
    /* killed: its row stays, and is taken over */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    snprintf(sql, sizeof sql, "UPDATE run_writers SET pid = %d, proc_start = 0", (int)child);
    raw_exec(sql);
    cr_assert_eq(claim(db, run, &w, &e), PWB_OK, "a dead writer is taken over: %s", e.msg);
    cr_assert_eq(raw_int("SELECT pid FROM run_writers"), (long long)getpid());

    /* another host: alive while its heartbeat is fresh, taken over once it is old */
    raw_exec("UPDATE run_writers SET pid = 1, host = 'elsewhere'");
    cr_assert_eq(claim(db, run, &w, &e), PWB_EBUSY);
    cr_assert(strstr(e.msg, "on elsewhere"), "%s", e.msg);
    raw_exec("UPDATE run_writers SET heartbeat = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-3 minutes')");
    cr_assert_eq(claim(db, run, &w, &e), PWB_OK, "a stale heartbeat: %s", e.msg);
    /* a release by a process that does not hold the run changes nothing */
    raw_exec("UPDATE run_writers SET pid = 1, host = 'elsewhere'");
    cr_assert_eq(db_run_release(db, run, &e), PWB_OK);
    cr_assert_eq(raw_int("SELECT count(*) FROM run_writers"), 1);
    db_close(db);
}
