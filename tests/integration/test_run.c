/* pwb run end to end against the loopback server: the four generic templates on the full SST-2
 * dev set, resume, the response cache, report and query, SIGKILL and SIGINT midway, faults. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "integration/harness.h"

#define SST2_DEV 872L
static const char *const generic[] = {"zero-shot=zero-shot", "few-shot=few-shot", "cot=cot", "role=role", NULL};
/* Every reply "Answer: <label>": valid for the one-word templates and for chain of thought. */
static const char *const fake_labels[] = {"--answer-from", "positive,negative", "--prefix", "Answer: ", NULL};

static proc_out pwb_run(const char *suite, const char *db, const char *extra)
{
    if (extra)
        return it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", extra, NULL});
    return it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Every cell of the latest run has exactly n predictions and no (cell, row) twice. */
static void assert_cells_complete(const char *db, long cells, long n)
{
    long got = it_sql_long(db, "SELECT count(*) FROM cells WHERE run_id = (SELECT max(id) FROM runs)");
    cr_assert_eq(got, cells, "cells: %ld", got);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM v_summary WHERE run_id = (SELECT max(id) FROM runs) AND n = %ld AND n_planned = %ld",
             n, n);
    got = it_sql_long(db, sql);
    cr_assert_eq(got, cells, "cells with exactly %ld predictions: %ld of %ld", n, got, cells);
    got = it_sql_long(db, "SELECT count(*) FROM (SELECT cell_id, row FROM predictions GROUP BY 1, 2 "
                          "HAVING count(*) > 1)");
    cr_assert_eq(got, 0, "duplicated (cell, row): %ld", got);
}

Test(run, sst2_generic_templates_end_to_end, .timeout = 240)
{
    char *dir = it_tmpdir();
    fake_llm f;
    cr_assert_eq(fake_start(&f, dir, fake_labels), 0, "fakellm did not start");
    char *suite = it_suite(dir, "sst2-suite.json", "sst2", "dev", 0, &f, 16, 3, generic);
    char *db = it_path(dir, "results.db");

    proc_out p = pwb_run(suite, db, NULL);
    cr_assert_eq(p.status, 0, "pwb run: exit %d\n%s%s", p.status, p.out, p.err);
    /* "run 1: 3488 new predictions in 1.7 s (2095/s), ..." */
    const char *rate = strstr(p.out, "s (");
    cr_log_info("pwb run, 4 x 872 SST-2 dev against fakellm at concurrency 16: %.*s", (int)strcspn(p.out, "\n"),
                p.out);
    cr_assert(rate, "no rate in: %s", p.out);
    cr_assert(strstr(p.out, "3488 new predictions"), "%s", p.out);
    cr_assert(strstr(p.out, "zero-shot") && strstr(p.out, "few-shot") && strstr(p.out, "cot") && strstr(p.out, "role"));
    proc_out_free(&p);
    assert_cells_complete(db, 4, SST2_DEV);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NOT NULL"), 0);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE valid = 0"), 0,
                 "every 'Answer: <label>' reply is a valid answer");
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE cached = 1"), 0);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM examples WHERE dataset = 'sst2' AND split = 'dev'"), SST2_DEV);
    /* few-shot prompts carry shots, and cost follows the suite's prices */
    cr_assert_gt(it_sql_long(db, "SELECT min(tokens_in) FROM v_predictions WHERE method = 'few-shot'"),
                 it_sql_long(db, "SELECT max(tokens_in) FROM v_predictions WHERE method = 'zero-shot'"));
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE abs(cost_usd - (tokens_in * 0.5 + "
                                 "tokens_out * 1.5) / 1e6) > 1e-12"),
                 0);
    /* accuracy is what the table says: the extracted label against the gold one */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE correct != (extracted = answer)"), 0);

    /* The same suite again continues the same run: nothing left to do. */
    char sha[65], sha2[65];
    p = pwb_run(suite, db, NULL);
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "(resumed): 0 new predictions"), "%s", p.out);
    cr_assert(strstr(p.out, "3488 already done"), "%s", p.out);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM runs"), 1);

    /* report: markdown (default), csv, json, to a file */
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "sst2"), "%s", p.out);
    cr_assert(strstr(p.out, "| zero-shot") || strstr(p.out, "zero-shot |"), "%s", p.out);
    cr_assert(strstr(p.out, "majority"), "the baseline row: %s", p.out);
    proc_out_free(&p);
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, "--format", "json", NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cJSON *j = cJSON_Parse(p.out);
    cr_assert(j, "report --format json is not JSON: %.200s", p.out);
    cJSON_Delete(j);
    proc_out_free(&p);
    char *md = it_path(dir, "report.md");
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, "-o", md, "--run", "1", NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    char *mdtext = it_read(md);
    cr_assert(mdtext && strstr(mdtext, "role"));
    free(mdtext);
    proc_out_free(&p);
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, "--run", "99", NULL});
    cr_assert_neq(p.status, 0, "a run that does not exist");
    proc_out_free(&p);

    /* query: every format, and the database is read-only to it */
    it_sha256(db, sha);
    p = it_run((const char *const[]){it_pwb(), "query", "--db", db, "--format", "csv",
                                     "SELECT method, n FROM v_summary ORDER BY method", NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert_str_eq(p.out, "method,n\r\ncot,872\r\nfew-shot,872\r\nrole,872\r\nzero-shot,872\r\n");
    proc_out_free(&p);
    p = it_run((const char *const[]){it_pwb(), "query", "--db", db, "-f", "json",
                                     "SELECT count(*) AS n, sum(correct) AS c FROM predictions", NULL});
    cr_assert_eq(p.status, 0);
    j = cJSON_Parse(p.out);
    cr_assert(cJSON_IsArray(j) && cJSON_GetArraySize(j) == 1, "%s", p.out);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "n")->valueint, 4 * SST2_DEV);
    cJSON_Delete(j);
    proc_out_free(&p);
    p = it_run((const char *const[]){it_pwb(), "query", "--db", db, "SELECT dataset, method, n FROM v_summary", NULL});
    cr_assert_eq(p.status, 0);
    cr_assert(strstr(p.out, "dataset") && strstr(p.out, "872"), "%s", p.out);
    proc_out_free(&p);
    p = it_run((const char *const[]){it_pwb(), "query", "--db", db, "-f", "md", "SELECT 1 AS one", NULL});
    cr_assert_str_eq(p.out, "| one |\n|---:|\n| 1 |\n");
    proc_out_free(&p);
    p = it_run((const char *const[]){it_pwb(), "query", "--db", db, "DELETE FROM predictions", NULL});
    cr_assert_neq(p.status, 0, "a write must be refused");
    proc_out_free(&p);
    p = it_run((const char *const[]){it_pwb(), "query", "--db", db, "SELECT 1; DROP TABLE runs", NULL});
    cr_assert_neq(p.status, 0);
    proc_out_free(&p);
    it_sha256(db, sha2);
    cr_assert_str_eq(sha, sha2, "pwb query changed the database");
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions"), 4 * SST2_DEV);

    /* --fresh starts a new run; temperature 0 makes every request deterministic: all cached. */
    p = pwb_run(suite, db, "--fresh");
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "run 2:"), "%s", p.out);
    proc_out_free(&p);
    assert_cells_complete(db, 4, SST2_DEV);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE run_id = 2 AND cached = 1"), 4 * SST2_DEV);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions a JOIN v_predictions b ON a.run_id = 1 AND "
                                 "b.run_id = 2 AND a.method = b.method AND a.row = b.row AND a.output IS b.output"),
                 4 * SST2_DEV, "cached answers equal the original ones");
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, "--compare", "1", NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "run 1 vs run 2") && strstr(p.out, "+0.0"), "%s", p.out);
    proc_out_free(&p);

    fake_stop(&f);
    it_rmtree(dir);
    free(md);
    free(suite);
    free(db);
    free(dir);
}

/* Counts committed predictions while pwb writes (WAL lets a reader in). */
static long predictions(const char *db) { return it_sql_long(db, "SELECT count(*) FROM predictions"); }

Test(run, sigkill_midway_then_rerun_completes, .timeout = 240)
{
    char *dir = it_tmpdir();
    fake_llm f;
    /* Some slow replies stretch the run to several seconds, so that the kill lands midway. */
    const char *const slow[] = {"--answer-from", "positive,negative", "--rate-slow", "0.05", "--slow-ms", "150", NULL};
    cr_assert_eq(fake_start(&f, dir, slow), 0);
    char *suite = it_suite(dir, "sst2-suite.json", "sst2", "dev", 0, &f, 16, 3, generic);
    char *db = it_path(dir, "results.db");
    char *err = it_path(dir, "err");
    const char *argv[] = {it_pwb(), "run", suite, "--db", db, "-q", "--chunk", "64", NULL};
    long at_kill = 0;
    for (int round = 0; round < 2; round++) {
        pid_t pid = it_spawn(argv, NULL, err);
        cr_assert_gt(pid, 0);
        long target = round == 0 ? 600 : 2200; /* kill once in the first cells, once in a later one */
        for (int i = 0; i < 2000 && predictions(db) < target; i++)
            sleep_ms(10);
        kill(pid, SIGKILL);
        cr_assert_eq(it_wait(pid), 128 + SIGKILL, "pwb finished before the kill");
        at_kill = predictions(db);
        cr_log_info("killed with %ld predictions committed", at_kill);
        cr_assert_lt(at_kill, 4 * SST2_DEV, "the kill came too late to test anything");
        cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM (SELECT cell_id, row FROM predictions GROUP BY 1, 2 "
                                     "HAVING count(*) > 1)"),
                     0);
    }
    proc_out p = pwb_run(suite, db, NULL);
    cr_assert_eq(p.status, 0, "rerun: %d %s%s", p.status, p.out, p.err);
    cr_assert(strstr(p.out, "(resumed)"), "%s", p.out);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM runs"), 1, "the rerun continues the killed run");
    assert_cells_complete(db, 4, SST2_DEV);
    cr_assert_eq(predictions(db), 4 * SST2_DEV);
    char *ic = it_sql_text(db, "PRAGMA integrity_check");
    cr_assert(ic && strcmp(ic, "ok") == 0, "integrity_check: %s", ic ? ic : "(null)");
    free(ic);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(err);
    free(dir);
}

Test(run, sigint_stops_cleanly_exit_130, .timeout = 120)
{
    char *dir = it_tmpdir();
    fake_llm f;
    const char *const slow[] = {"--answer-from", "positive,negative", "--rate-slow", "0.1", "--slow-ms", "200", NULL};
    cr_assert_eq(fake_start(&f, dir, slow), 0);
    const char *const one[] = {"zero-shot=zero-shot", NULL};
    char *suite = it_suite(dir, "sst2-suite.json", "sst2", "dev", 0, &f, 8, 3, one);
    char *db = it_path(dir, "results.db");
    char *err = it_path(dir, "err");
    const char *argv[] = {it_pwb(), "run", suite, "--db", db, "--chunk", "64", NULL};
    pid_t pid = it_spawn(argv, NULL, err);
    for (int i = 0; i < 2000 && predictions(db) < 100; i++)
        sleep_ms(10);
    kill(pid, SIGINT);
    int st = it_wait(pid);
    long kept = predictions(db);
    char *e = it_read(err);
    cr_assert_eq(st, 130, "exit %d: %s", st, e);
    cr_assert(e && strstr(e, "interrupted"), "%s", e);
    free(e);
    cr_assert_lt(kept, SST2_DEV);
    cr_assert_gt(kept, 0);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NOT NULL"), 0,
                 "requests cut short are not stored as failures");
    proc_out p = pwb_run(suite, db, NULL);
    cr_assert_eq(p.status, 0, "%s", p.err);
    proc_out_free(&p);
    assert_cells_complete(db, 1, SST2_DEV);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(err);
    free(dir);
}

Test(run, faults_are_retried_and_recorded, .timeout = 180)
{
    char *dir = it_tmpdir();
    fake_llm f;
    /* 20% of requests fail (500, 503, a dropped connection, malformed JSON); 503s say Retry-After: 0. */
    const char *const faulty[] = {"--answer-from", "positive,negative", "--rate-500", "0.08", "--rate-503", "0.04",
                                  "--rate-drop", "0.04", "--rate-malformed", "0.04", "--retry-after", "0",
                                  "--seed", "3", NULL};
    cr_assert_eq(fake_start(&f, dir, faulty), 0);
    const char *const two[] = {"zero-shot=zero-shot", "role=role", NULL};
    char *suite = it_suite(dir, "faults-suite.json", "sst2", "dev", 150, &f, 16, 8, two);
    char *db = it_path(dir, "results.db");
    proc_out p = pwb_run(suite, db, NULL);
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    assert_cells_complete(db, 2, 150);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NOT NULL"), 0);
    long retried = it_sql_long(db, "SELECT count(*) FROM predictions WHERE retries > 0");
    cr_log_info("%ld of 300 predictions needed retries", retried);
    cr_assert_gt(retried, 20, "about 20%% of 300 requests fail at first: %ld retried", retried);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE http_status != 200"), 0);
    fake_stop(&f);

    /* With the server gone for good, requests fail after their retries: recorded, exit 1. */
    const char *const one[] = {"zero-shot=zero-shot", NULL};
    char *dead = it_suite(dir, "dead-suite.json", "sst2", "dev", 5, &f, 4, 0, one);
    p = pwb_run(dead, db, "--no-cache"); /* the cache holds these answers from the run above */
    cr_assert_eq(p.status, 1, "exit %d: %s", p.status, p.err);
    cr_assert(strstr(p.err, "5 predictions failed"), "%s", p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE run_id = 2 AND error IS NOT NULL"), 5);
    it_rmtree(dir);
    free(suite);
    free(dead);
    free(db);
    free(dir);
}

/* methods[].limit: a method scores the first N rows of the dataset's sample, the very rows a
 * dataset limit of N picks, while the other methods score them all. */
Test(run, method_limit_scores_a_prefix_of_the_sample, .timeout = 120)
{
    char *dir = it_tmpdir();
    fake_llm f;
    cr_assert_eq(fake_start(&f, dir, fake_labels), 0, "fakellm did not start");
    char *suite = it_path(dir, "limit.json"), *small = it_path(dir, "small.json");
    char text[1024];
    snprintf(text, sizeof text,
             "{\"name\": \"limit\", \"seed\": 3, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": %d}],"
             " \"models\": [{\"name\": \"fake\", \"provider\": \"openai\", \"base_url\": \"%s\", \"model\": \"m\"}],"
             " \"methods\": [{\"name\": \"all\", \"template\": \"zero-shot\"},"
             " {\"name\": \"some\", \"template\": \"role\"%s}]}",
             60, f.base_url, ", \"limit\": 25");
    it_write(suite, text);
    snprintf(text, sizeof text,
             "{\"name\": \"small\", \"seed\": 3, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": %d}],"
             " \"models\": [{\"name\": \"fake\", \"provider\": \"openai\", \"base_url\": \"%s\", \"model\": \"m\"}],"
             " \"methods\": [{\"name\": \"some\", \"template\": \"role\"%s}]}",
             25, f.base_url, "");
    it_write(small, text);
    char *db = it_path(dir, "r.db"), *db2 = it_path(dir, "s.db");
    proc_out p = pwb_run(suite, db, NULL);
    cr_assert_eq(p.status, 0, "pwb run: exit %d\n%s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    p = pwb_run(small, db2, NULL);
    cr_assert_eq(p.status, 0, "pwb run: exit %d\n%s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    cr_expect_eq(it_sql_long(db, "SELECT n FROM v_summary WHERE method = 'all'"), 60);
    cr_expect_eq(it_sql_long(db, "SELECT n_planned FROM v_summary WHERE method = 'some'"), 25);
    cr_expect_eq(it_sql_long(db, "SELECT n FROM v_summary WHERE method = 'some'"), 25);
    char *rows_a = it_sql_text(db, "SELECT group_concat(row) FROM (SELECT p.row FROM predictions p JOIN cells c "
                                   "ON c.id = p.cell_id WHERE c.method = 'some' ORDER BY p.row)");
    char *rows_b = it_sql_text(db2, "SELECT group_concat(row) FROM (SELECT p.row FROM predictions p JOIN cells c "
                                    "ON c.id = p.cell_id WHERE c.method = 'some' ORDER BY p.row)");
    cr_assert(rows_a && rows_b);
    cr_expect_str_eq(rows_a, rows_b, "a method limit of 25 and a dataset limit of 25 score the same rows");
    free(rows_a);
    free(rows_b);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(small);
    free(db);
    free(db2);
    free(dir);
}

/* Running a finished suite again adds nothing: the run keeps its finish time, and no empty
 * progress line is printed. */
Test(run, a_rerun_that_adds_nothing_changes_nothing, .timeout = 60)
{
    char *dir = it_tmpdir();
    fake_llm f;
    cr_assert_eq(fake_start(&f, dir, fake_labels), 0, "fakellm did not start");
    char *suite = it_suite(dir, "again.json", "sst2", "dev", 20, &f, 2, 0, (const char *const[]){"zs=zero-shot", NULL});
    char *db = it_path(dir, "again.db");
    proc_out p = pwb_run(suite, db, NULL);
    cr_assert_eq(p.status, 0, "exit %d: %s", p.status, p.err);
    proc_out_free(&p);
    char *before = it_sql_text(db, "SELECT finished FROM runs");
    cr_assert_not_null(before);
    sleep_ms(30);
    p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s", p.status, p.err);
    cr_assert(strstr(p.out, "(resumed): 0 new predictions"), "%s", p.out);
    cr_assert(!strstr(p.err, "run:"), "a progress line for nothing: %s", p.err);
    proc_out_free(&p);
    char *after = it_sql_text(db, "SELECT finished FROM runs");
    cr_assert(after && !strcmp(before, after), "finished %s, then %s", before, after ? after : "(null)");
    char *status = it_sql_text(db, "SELECT status FROM runs");
    cr_assert(status && !strcmp(status, "complete"), "%s", status ? status : "(null)");
    free(status);
    free(before);
    free(after);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}
