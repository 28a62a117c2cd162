/* pwb run with the remote-LLM features wired in: --max-cost stops a run before it passes the limit
 * and a rerun with a higher limit completes it; a 1,000-example run through 20% faults (429 with
 * Retry-After, 500, dropped connections, timeouts) completes with every prediction once and its
 * retries recorded; --dry-run's token estimate against the tokens a local model really used;
 * --dry-run sends nothing and touches no database; presets and the non-OpenAI providers resolve
 * and run; rank scoring over /v1/completions, and a clear error for a provider that cannot rank. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "integration/harness.h"

static proc_out pwb(const char *const *argv) { return it_run(argv); }

static size_t on_body(char *p, size_t sz, size_t n, void *ctx)
{
    size_t k = sz * n;
    char **s = ctx;
    size_t have = *s ? strlen(*s) : 0;
    char *t = realloc(*s, have + k + 1);
    if (!t)
        return 0;
    memcpy(t + have, p, k);
    t[have + k] = '\0';
    *s = t;
    return k;
}

/* fakellm's GET /stats as JSON (NULL on failure). */
static cJSON *fake_stats(const fake_llm *f)
{
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/stats", f->port);
    CURL *h = curl_easy_init();
    char *body = NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 5L);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    cJSON *j = rc == CURLE_OK && body ? cJSON_Parse(body) : NULL;
    free(body);
    return j;
}

static long stat_of(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : -1;
}

/* No (cell, row) twice in the database. */
static long duplicates(const char *db)
{
    return it_sql_long(db, "SELECT count(*) FROM (SELECT cell_id, row FROM predictions GROUP BY 1, 2 "
                           "HAVING count(*) > 1)");
}

static char *write_suite(const char *dir, const char *file, const char *text)
{
    char *p = it_path(dir, file);
    it_write(p, text);
    return p;
}

/* ---- --max-cost --------------------------------------------------------------------------- */

Test(run_remote, max_cost_stops_before_the_limit_and_a_rerun_completes, .timeout = 120)
{
    char *dir = it_tmpdir();
    fake_llm f;
    const char *const args[] = {"--answer-from", "positive,negative", NULL};
    cr_assert_eq(fake_start(&f, dir, args), 0, "fakellm did not start");
    /* $100 per million tokens: a zero-shot SST-2 request costs about $0.006, so 100 of them ~$0.6 */
    char text[1024];
    snprintf(text, sizeof text,
             "{\"name\": \"cost\", \"seed\": 5, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 100}],"
             " \"models\": [{\"name\": \"paid\", \"provider\": \"openai\", \"base_url\": \"%s\", \"model\": \"paid-1\","
             " \"concurrency\": 4, \"max_retries\": 2, \"timeout_s\": 5, \"price\": {\"input\": 100, \"output\": 100}}],"
             " \"methods\": [{\"name\": \"zero-shot\", \"template\": \"zero-shot\"}]}",
             f.base_url);
    char *suite = write_suite(dir, "cost.json", text);
    char *db = it_path(dir, "cost.db");
    const double limit = 0.25;

    proc_out p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", "--chunk", "16", "--max-cost",
                                           "0.25", NULL});
    cr_assert_eq(p.status, 6, "exit %d (6: a limit): %s%s", p.status, p.out, p.err);
    cr_assert(strstr(p.err, "cost limit of $0.2500 reached"), "%s", p.err);
    cr_assert(strstr(p.err, "higher --max-cost"), "%s", p.err);
    cr_assert(strstr(p.out, "limit reached"), "%s", p.out);
    proc_out_free(&p);
    long kept = it_sql_long(db, "SELECT count(*) FROM predictions");
    char *spent_s = it_sql_text(db, "SELECT sum(cost_usd) FROM predictions");
    double spent = spent_s ? strtod(spent_s, NULL) : -1;
    free(spent_s);
    cr_log_info("--max-cost %.2f: %ld of 100 predictions kept, $%.4f spent", limit, kept, spent);
    cr_assert(kept > 10 && kept < 100, "kept %ld", kept);
    cr_assert(spent > 0 && spent <= limit, "spent $%.6f with a limit of $%.2f", spent, limit);
    /* the last request that fitted left less than one request's worst case */
    cr_assert_gt(spent, limit - 0.03, "stopped far below the limit: $%.4f", spent);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NOT NULL"), 0,
                 "requests not sent are not stored");
    cr_assert_eq(duplicates(db), 0);
    char *status = it_sql_text(db, "SELECT status FROM runs");
    cr_assert(status && !strcmp(status, "limited"), "run status %s", status ? status : "(null)");
    free(status);
    cJSON *st = fake_stats(&f);
    cr_assert_eq(stat_of(st, "requests"), kept, "the server saw exactly the stored requests");
    cJSON_Delete(st);

    /* The same limit again: what the run already spent counts, so nothing more is sent. */
    p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", "--max-cost", "0.25", NULL});
    cr_assert_eq(p.status, 6, "exit %d: %s%s", p.status, p.out, p.err);
    cr_assert(strstr(p.out, "(resumed): 0 new predictions"), "%s", p.out);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions"), kept);

    /* A higher limit completes the run: every prediction exactly once. */
    p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", "--max-cost", "10", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    cr_assert(strstr(p.out, "(resumed)"), "%s", p.out);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM runs"), 1);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions"), 100);
    cr_assert_eq(it_sql_long(db, "SELECT count(DISTINCT row) FROM predictions"), 100);
    cr_assert_eq(duplicates(db), 0);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NOT NULL"), 0);
    /* stored costs are the price applied to the recorded usage */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE abs(cost_usd - (tokens_in + tokens_out) * "
                                 "100 / 1e6) > 1e-12"),
                 0);
    status = it_sql_text(db, "SELECT status FROM runs");
    cr_assert(status && !strcmp(status, "complete"), "run status %s", status ? status : "(null)");
    free(status);

    p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "--max-cost", "abc", NULL});
    cr_assert_eq(p.status, 2, "a malformed --max-cost is a usage error");
    proc_out_free(&p);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}

/* ---- one writer per run ------------------------------------------------------------------- */

/* Waits (up to 30 s) until the first run is under way: it has committed a prediction. */
static int wait_for_writer(const char *db)
{
    for (int i = 0; i < 300; i++) {
        if (it_sql_long(db, "SELECT count(*) FROM predictions") > 0)
            return 0;
        usleep(100 * 1000);
    }
    return -1;
}

/* Starts fakellm with every reply slow_ms late, and writes a suite of `limit` SST-2 rows on it. */
static char *paid_suite(const char *dir, fake_llm *f, const char *slow_ms, int limit)
{
    const char *const args[] = {"--answer-from", "positive,negative", "--rate-slow", "1", "--slow-ms", slow_ms, NULL};
    cr_assert_eq(fake_start(f, dir, args), 0, "fakellm did not start");
    /* $100 per million tokens: a zero-shot SST-2 request costs about $0.006 */
    char text[1024];
    snprintf(text, sizeof text,
             "{\"name\": \"two\", \"seed\": 5, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": %d}],"
             " \"models\": [{\"name\": \"paid\", \"provider\": \"openai\", \"base_url\": \"%s\", \"model\": \"paid-1\","
             " \"concurrency\": 2, \"max_retries\": 2, \"timeout_s\": 5, \"price\": {\"input\": 100, \"output\": 100}}],"
             " \"methods\": [{\"name\": \"zero-shot\", \"template\": \"zero-shot\"}]}",
             limit, f->base_url);
    return write_suite(dir, "two.json", text);
}

Test(run_remote, one_writer_per_run_and_a_killed_writer_is_taken_over, .timeout = 180)
{
    char *dir = it_tmpdir();
    fake_llm f;
    /* every reply takes 60 ms: 60 rows two at a time keep the first writer busy ~2 s */
    char *suite = paid_suite(dir, &f, "60", 60);
    char *db = it_path(dir, "two.db");
    char *aerr = it_path(dir, "a.err"), *cerr = it_path(dir, "c.err"), *cout = it_path(dir, "c.out");

    pid_t a = it_spawn((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", "--chunk", "4", NULL}, NULL, aerr);
    cr_assert_eq(wait_for_writer(db), 0, "the first pwb never wrote a prediction");
    /* a second writer exits 7 at once and says who holds the run */
    proc_out b = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(b.status, 7, "exit %d (7: another pwb writes the run): %s%s", b.status, b.out, b.err);
    char who[64];
    snprintf(who, sizeof who, "being written by another pwb (pid %ld on ", (long)a);
    cr_assert(strstr(b.err, who), "%s", b.err);
    cr_assert(strstr(b.err, "--wait"), "%s", b.err);
    proc_out_free(&b);
    /* a third one waits for the first, then finds nothing left to do */
    pid_t c = it_spawn((const char *const[]){it_pwb(), "run", suite, "--db", db, "--wait", NULL}, cout, cerr);
    cr_assert_eq(it_wait(a), 0, "first writer: %s", it_read(aerr));
    cr_assert_eq(it_wait(c), 0, "waiting writer: %s", it_read(cerr));
    char *cerr_s = it_read(cerr), *cout_s = it_read(cout);
    cr_assert(strstr(cerr_s, "waiting for pid"), "%s", cerr_s);
    cr_assert(strstr(cout_s, "(resumed): 0 new predictions"), "%s", cout_s);
    free(cerr_s);
    free(cout_s);
    cJSON *st = fake_stats(&f);
    cr_assert_eq(stat_of(st, "requests"), 60, "the server saw every request once");
    cJSON_Delete(st);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions"), 60);
    cr_assert_eq(duplicates(db), 0);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM run_writers"), 0, "the writers released the run");

    /* A writer killed with SIGKILL leaves its row; the next run sees the process gone and takes over. */
    char *db2 = it_path(dir, "killed.db");
    a = it_spawn((const char *const[]){it_pwb(), "run", suite, "--db", db2, "-q", "--chunk", "4", NULL}, NULL, NULL);
    cr_assert_eq(wait_for_writer(db2), 0);
    kill(a, SIGKILL);
    cr_assert_eq(it_wait(a), 128 + SIGKILL);
    cr_assert_eq(it_sql_long(db2, "SELECT count(*) FROM run_writers"), 1, "SIGKILL left the row");
    b = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db2, "-q", NULL});
    cr_assert_eq(b.status, 0, "exit %d: %s%s", b.status, b.out, b.err);
    proc_out_free(&b);
    cr_assert_eq(it_sql_long(db2, "SELECT count(*) FROM predictions"), 60);
    cr_assert_eq(duplicates(db2), 0);
    cr_assert_eq(it_sql_long(db2, "SELECT count(*) FROM run_writers"), 0);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(db2);
    free(aerr);
    free(cerr);
    free(cout);
    free(dir);
}

Test(run_remote, max_cost_holds_across_two_concurrent_runs, .timeout = 180)
{
    char *dir = it_tmpdir();
    fake_llm f;
    char *suite = paid_suite(dir, &f, "40", 100);
    char *db = it_path(dir, "cap.db");
    const double limit = 0.25;
    /* two runs of the same suite at once, each with the limit: together they stay under it */
    const char *const argv[] = {it_pwb(), "run", suite, "--db", db, "-q", "--chunk", "8", "--max-cost", "0.25",
                                "--wait", NULL};
    pid_t a = it_spawn(argv, NULL, NULL);
    cr_assert_eq(wait_for_writer(db), 0);
    pid_t b = it_spawn(argv, NULL, NULL);
    int sa = it_wait(a), sb = it_wait(b);
    cr_assert(sa == 6 && sb == 6, "exits %d and %d (6: the limit)", sa, sb);
    long kept = it_sql_long(db, "SELECT count(*) FROM predictions");
    char *spent_s = it_sql_text(db, "SELECT sum(cost_usd) FROM predictions");
    double spent = spent_s ? strtod(spent_s, NULL) : -1;
    free(spent_s);
    cJSON *st = fake_stats(&f);
    long sent = stat_of(st, "requests");
    cJSON_Delete(st);
    cr_log_info("two concurrent runs with --max-cost %.2f: %ld predictions, $%.4f spent, %ld requests sent", limit,
                kept, spent, sent);
    cr_assert(kept > 10 && kept < 100, "kept %ld", kept);
    cr_assert(spent > 0 && spent <= limit, "spent $%.6f with a limit of $%.2f", spent, limit);
    cr_assert_eq(sent, kept, "the server saw exactly the stored requests");
    cr_assert_eq(duplicates(db), 0);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}

/* ---- faults ------------------------------------------------------------------------------- */

Test(run_remote, thousand_examples_through_20_percent_faults, .timeout = 300)
{
    char *dir = it_tmpdir();
    fake_llm f;
    /* 20% of attempts fail: 429 with Retry-After: 1, 500, a dropped connection, and a reply slower
     * than the suite's 1 s timeout. */
    const char *const faulty[] = {"--answer-from", "World,Sports,Business,Sci/Tech", "--rate-429", "0.05",
                                  "--rate-500", "0.06", "--rate-drop", "0.05", "--rate-slow", "0.04", "--slow-ms",
                                  "1500", "--retry-after", "1", "--seed", "11", NULL};
    cr_assert_eq(fake_start(&f, dir, faulty), 0, "fakellm did not start");
    char text[1024];
    snprintf(text, sizeof text,
             "{\"name\": \"faults\", \"seed\": 2, \"datasets\": [{\"name\": \"ag_news\", \"limit\": 1000}],"
             " \"models\": [{\"name\": \"flaky\", \"provider\": \"openai\", \"base_url\": \"%s\", \"model\": \"flaky-1\","
             " \"concurrency\": 64, \"max_retries\": 10, \"timeout_s\": 1}],"
             " \"methods\": [{\"name\": \"zero-shot\", \"template\": \"zero-shot\"}]}",
             f.base_url);
    char *suite = write_suite(dir, "faults.json", text);
    char *db = it_path(dir, "faults.db");
    proc_out p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    cr_log_info("1,000 examples, 20%% faults: %.*s", (int)strcspn(p.out, "\n"), p.out);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions"), 1000);
    cr_assert_eq(it_sql_long(db, "SELECT count(DISTINCT row) FROM predictions"), 1000);
    cr_assert_eq(duplicates(db), 0);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NOT NULL"), 0);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE http_status != 200"), 0);
    long retried = it_sql_long(db, "SELECT count(*) FROM predictions WHERE retries > 0");
    long retries = it_sql_long(db, "SELECT sum(retries) FROM predictions");
    cJSON *st = fake_stats(&f);
    cr_assert_not_null(st);
    long sent = stat_of(st, "requests");
    cr_log_info("%ld predictions retried, %ld retries; the server saw %ld requests: 429 %ld, 500 %ld, drop %ld, "
                "slow %ld",
                retried, retries, sent, stat_of(st, "status_429"), stat_of(st, "status_500"), stat_of(st, "drop"),
                stat_of(st, "slow"));
    cr_assert(stat_of(st, "status_429") > 10 && stat_of(st, "status_500") > 10 && stat_of(st, "drop") > 10 &&
                  stat_of(st, "slow") > 10,
              "every kind of fault happened");
    cr_assert_gt(retried, 150, "about 20%% of 1,000 requests fail at first: %ld retried", retried);
    /* Every attempt the server saw beyond the first of each row is a recorded retry: a dropped
     * keep-alive connection too, which libcurl would otherwise send again by itself, uncounted. */
    cr_assert_eq(retries, sent - 1000, "retries recorded %ld, attempts beyond the first %ld", retries, sent - 1000);
    cJSON_Delete(st);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}

/* ---- --dry-run ---------------------------------------------------------------------------- */

/* The tokens_in column of the dry-run table's row for method (-1 when absent). */
static double dry_tokens(const char *out, const char *method)
{
    const char *line = out;
    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        char buf[512];
        snprintf(buf, sizeof buf, "%.*s", (int)(n < sizeof buf ? n : sizeof buf - 1), line);
        char ds[64], model[64], meth[64];
        long req, calls;
        double tin;
        if (sscanf(buf, "%63s %63s %63s %ld %ld %lf", ds, model, meth, &req, &calls, &tin) == 6 &&
            !strcmp(meth, method))
            return tin;
        line = end ? end + 1 : NULL;
    }
    return -1;
}

Test(run_remote, dry_run_estimate_within_5_percent_of_real_tokens, .timeout = 120)
{
    char model[1024];
    if (it_tiny_model(model, sizeof model))
        cr_skip("no %s", model);
    char *dir = it_tmpdir();
    char text[2048];
    /* four shapes of request: one user message, system + user, a rank (the prompt scored once),
     * and few-shot (longer prompts) */
    snprintf(text, sizeof text,
             "{\"name\": \"est\", \"seed\": 9, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\"}],"
             " \"models\": [{\"name\": \"tiny\", \"provider\": \"local\", \"model\": \"%s\", \"price\": {\"cpu_hour\": 0.05}}],"
             " \"methods\": [{\"name\": \"zero-shot\", \"template\": \"zero-shot\"}, {\"name\": \"role\", \"template\": \"role\"},"
             " {\"name\": \"rank\", \"template\": \"zero-shot\", \"scoring\": \"rank\"},"
             " {\"name\": \"few-shot\", \"template\": \"few-shot\", \"shots\": 2}]}",
             model);
    char *suite = write_suite(dir, "est.json", text);
    char *db = it_path(dir, "est.db");
    proc_out d = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "--dry-run", "--limit", "8", NULL});
    cr_assert_eq(d.status, 0, "exit %d: %s%s", d.status, d.out, d.err);
    cr_assert(!it_exists(db), "--dry-run created the database");
    cr_assert(strstr(d.out, "tokenizer TinyStories-656K-Q8_0.gguf"), "counted with the model's tokenizer: %s", d.out);
    proc_out p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", "--limit", "8", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    const char *methods[] = {"zero-shot", "role", "rank", "few-shot"};
    for (int i = 0; i < 4; i++) {
        double est = dry_tokens(d.out, methods[i]);
        char sql[256];
        snprintf(sql, sizeof sql,
                 "SELECT sum(tokens_in) FROM v_predictions WHERE method = '%s' AND tokens_in > 0 AND error IS NULL",
                 methods[i]);
        long real = it_sql_long(db, sql);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM v_predictions WHERE method = '%s' AND tokens_in > 0", methods[i]);
        cr_assert_eq(it_sql_long(db, sql), 8, "%s: every prediction records its tokens", methods[i]);
        cr_log_info("%s: dry run %.0f prompt tokens, the run used %ld", methods[i], est, real);
        cr_assert_gt(est, 0, "%s: no estimate in %s", methods[i], d.out);
        cr_assert_gt(real, 8 * 10, "%s: %ld tokens", methods[i], real);
        cr_assert_leq(fabs(est - (double)real), 0.05 * (double)real, "%s: estimate %.0f, real %ld", methods[i], est,
                      real);
    }
    proc_out_free(&d);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}

Test(run_remote, dry_run_sends_nothing_and_prices_by_the_table, .timeout = 60)
{
    char *dir = it_tmpdir();
    fake_llm f;
    const char *const args[] = {"--answer-from", "positive,negative", NULL};
    cr_assert_eq(fake_start(&f, dir, args), 0);
    setenv("PWB_IT_GROQ_KEY", "gsk-test-not-a-key", 1);
    char text[2048];
    /* a hosted preset (never contacted in a dry run; its model is in prices/prices.json) and the
     * loopback server, whose tokenizer is SmolLM2's */
    snprintf(text, sizeof text,
             "{\"name\": \"dry\", \"seed\": 1, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 30}],"
             " \"models\": [{\"name\": \"groq\", \"provider\": \"groq\", \"model\": \"llama-3.1-8b-instant\","
             " \"api_key_env\": \"PWB_IT_GROQ_KEY\", \"rpm\": 30, \"tpm\": 6000},"
             " {\"name\": \"fake\", \"provider\": \"openai\", \"base_url\": \"%s\", \"model\": \"fake-1\","
             " \"tokenizer\": \"%s/models/smollm2-tokenizer/tokenizer.json\", \"price\": {\"input\": 2, \"output\": 4}}],"
             " \"methods\": [{\"name\": \"zero-shot\", \"template\": \"zero-shot\"}]}",
             f.base_url, it_env("PWB_SHARED", "../shared"));
    char *suite = write_suite(dir, "dry.json", text);
    char *db = it_path(dir, "dry.db");
    proc_out d = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "--dry-run", NULL});
    cr_assert_eq(d.status, 0, "exit %d: %s%s", d.status, d.out, d.err);
    cr_assert(!it_exists(db), "--dry-run created the database");
    cJSON *st = fake_stats(&f);
    cr_assert_eq(stat_of(st, "requests"), 0, "--dry-run sent requests");
    cJSON_Delete(st);
    cr_assert(strstr(d.out, "tokenizer tokenizer.json"), "%s", d.out);
    cr_assert(strstr(d.out, "bytes/4"), "groq has no tokenizer: %s", d.out);
    /* both priced: groq's from the shipped table, fake's from the suite */
    char ds[64], model[64], meth[64], how[128];
    long req, calls;
    double tin, tout, cost;
    int priced = 0;
    for (const char *line = d.out; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (sscanf(line, "%63s %63s %63s %ld %ld %lf %lf %lf %127s", ds, model, meth, &req, &calls, &tin, &tout, &cost,
                   how) == 9) {
            cr_assert_eq(req, 30);
            cr_assert_eq(tout, 30 * 8, "zero-shot's max_tokens is 8");
            double in_p = !strcmp(model, "groq") ? 0.05 : 2, out_p = !strcmp(model, "groq") ? 0.08 : 4;
            cr_assert_float_eq(cost, (tin * in_p + tout * out_p) / 1e6, 1e-4, "%s: %s", model, line);
            priced++;
        }
    }
    cr_assert_eq(priced, 2, "%s", d.out);
    proc_out_free(&d);

    /* a hosted preset without a key variable: the error names the usual one */
    snprintf(text, sizeof text,
             "{\"name\": \"nokey\", \"datasets\": [\"sst2\"], \"models\": [{\"name\": \"g\", \"provider\": \"groq\","
             " \"model\": \"llama-3.1-8b-instant\"}], \"methods\": [{\"name\": \"z\", \"template\": \"zero-shot\"}]}");
    char *nokey = write_suite(dir, "nokey.json", text);
    d = pwb((const char *const[]){it_pwb(), "run", nokey, "--db", db, "--dry-run", NULL});
    cr_assert_eq(d.status, 3, "exit %d: %s", d.status, d.err);
    cr_assert(strstr(d.err, "GROQ_API_KEY") && strstr(d.err, "nokey.json"), "%s", d.err);
    proc_out_free(&d);
    cr_assert(!it_exists(db));
    unsetenv("PWB_IT_GROQ_KEY");
    fake_stop(&f);
    it_rmtree(dir);
    free(nokey);
    free(suite);
    free(db);
    free(dir);
}

/* ---- providers ---------------------------------------------------------------------------- */

Test(run_remote, presets_and_providers_run_and_rank_over_completions, .timeout = 120)
{
    char *dir = it_tmpdir();
    fake_llm f;
    /* chat replies name a label; /v1/completions log-probabilities favour "positive" */
    const char *const args[] = {"--answer-from", "positive,negative", "--favor", "positive", NULL};
    cr_assert_eq(fake_start(&f, dir, args), 0);
    setenv("PWB_IT_ANTHROPIC_KEY", "sk-ant-test", 1);
    char root[96];
    snprintf(root, sizeof root, "http://127.0.0.1:%d", f.port);
    char text[4096];
    snprintf(text, sizeof text,
             "{\"name\": \"providers\", \"seed\": 4, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 20}],"
             " \"models\": ["
             "  {\"name\": \"vllm\", \"provider\": \"vllm\", \"base_url\": \"%s/v1\", \"model\": \"m\", \"stream\": true,"
             "   \"rpm\": 6000, \"adaptive_concurrency\": true},"
             "  {\"name\": \"llamacpp\", \"provider\": \"openai-completions\", \"preset\": \"llamacpp\","
             "   \"base_url\": \"%s/v1\", \"model\": \"m\"},"
             "  {\"name\": \"ollama\", \"provider\": \"ollama\", \"base_url\": \"%s\", \"model\": \"m\"},"
             "  {\"name\": \"claude\", \"provider\": \"anthropic\", \"base_url\": \"%s\", \"model\": \"claude-3-5-haiku\","
             "   \"api_key_env\": \"PWB_IT_ANTHROPIC_KEY\"}],"
             " \"methods\": [{\"name\": \"zero-shot\", \"template\": \"zero-shot\"}]}",
             root, root, root, root);
    char *suite = write_suite(dir, "providers.json", text);
    char *db = it_path(dir, "providers.db");
    proc_out p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_summary WHERE n = 20"), 4, "four cells of 20");
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NOT NULL OR valid = 0"), 0);
    /* claude-3-5-haiku is priced by the shipped table ($0.80 / $4.00 per million) */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE model = 'claude' AND abs(cost_usd - "
                                 "(tokens_in * 0.8 + tokens_out * 4.0) / 1e6) > 1e-12 OR (model = 'claude' AND "
                                 "cost_usd <= 0)"),
                 0);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE model != 'claude' AND cost_usd != 0"), 0);

    /* rank over /v1/completions (echo + logprobs): the favoured label wins every row */
    snprintf(text, sizeof text,
             "{\"name\": \"rank\", \"seed\": 4, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 10}],"
             " \"models\": [{\"name\": \"cmpl\", \"provider\": \"openai-completions\", \"preset\": \"vllm\","
             " \"base_url\": \"%s/v1\", \"model\": \"m\"}],"
             " \"methods\": [{\"name\": \"rank\", \"template\": \"zero-shot\", \"scoring\": \"rank\"}]}",
             root);
    char *rank = write_suite(dir, "rank.json", text);
    p = pwb((const char *const[]){it_pwb(), "run", rank, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE method = 'rank' AND extracted = 'positive' "
                                 "AND choice_logprobs IS NOT NULL"),
                 10);

    /* a chat provider cannot rank: the error names the cell, and nothing is written */
    snprintf(text, sizeof text,
             "{\"name\": \"norank\", \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 3}],"
             " \"models\": [{\"name\": \"chat\", \"provider\": \"openai\", \"base_url\": \"%s/v1\", \"model\": \"m\"}],"
             " \"methods\": [{\"name\": \"ranked\", \"template\": \"zero-shot\", \"scoring\": \"rank\"}]}",
             root);
    char *norank = write_suite(dir, "norank.json", text);
    char *db2 = it_path(dir, "norank.db");
    p = pwb((const char *const[]){it_pwb(), "run", norank, "--db", db2, "-q", NULL});
    cr_assert_eq(p.status, 3, "exit %d: %s", p.status, p.err);
    cr_assert(strstr(p.err, "norank.json: cell sst2/chat/ranked") && strstr(p.err, "openai-completions"), "%s", p.err);
    proc_out_free(&p);
    cr_assert(!it_exists(db2), "nothing written");

    /* an unknown provider or preset: the error names the file and the field */
    snprintf(text, sizeof text,
             "{\"name\": \"bad\", \"datasets\": [\"sst2\"], \"models\": [{\"name\": \"x\", \"provider\": \"openai\","
             " \"preset\": \"nosuch\", \"model\": \"m\"}], \"methods\": [{\"name\": \"z\", \"template\": \"zero-shot\"}]}");
    char *bad = write_suite(dir, "bad.json", text);
    p = pwb((const char *const[]){it_pwb(), "run", bad, "--db", db2, "--dry-run", NULL});
    cr_assert_eq(p.status, 3);
    cr_assert(strstr(p.err, "bad.json: models[0].preset 'nosuch'"), "%s", p.err);
    proc_out_free(&p);
    unsetenv("PWB_IT_ANTHROPIC_KEY");
    fake_stop(&f);
    it_rmtree(dir);
    free(bad);
    free(norank);
    free(db2);
    free(rank);
    free(suite);
    free(db);
    free(dir);
}

/* A model's target_delimiter (a base model's raw prompts) goes before each label a template ranks
 * without one of its own; the other model of the same suite ranks the labels as they are. */
Test(run_remote, model_target_delimiter_goes_before_each_label, .timeout = 60)
{
    char *dir = it_tmpdir();
    char *log = it_path(dir, "requests.log");
    fake_llm f;
    const char *const args[] = {"--favor", "positive", "--log", log, NULL};
    cr_assert_eq(fake_start(&f, dir, args), 0);
    char text[2048];
    snprintf(text, sizeof text,
             "{\"name\": \"delim\", \"seed\": 4, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 2}],"
             " \"models\": [{\"name\": \"base\", \"provider\": \"openai-completions\", \"preset\": \"vllm\","
             " \"base_url\": \"http://127.0.0.1:%d/v1\", \"model\": \"base\", \"target_delimiter\": \" \"},"
             " {\"name\": \"plain\", \"provider\": \"openai-completions\", \"preset\": \"vllm\","
             " \"base_url\": \"http://127.0.0.1:%d/v1\", \"model\": \"plain\"}],"
             " \"methods\": [{\"name\": \"rank\", \"template\": \"zero-shot\", \"scoring\": \"rank\"}]}",
             f.port, f.port);
    char *suite = write_suite(dir, "delim.json", text);
    char *db = it_path(dir, "delim.db");
    proc_out p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    fake_stop(&f);
    char *body = it_read(log);
    cr_assert_not_null(body);
    /* zero-shot ends "...: negative or positive." and the label follows it */
    cr_assert(strstr(body, "negative or positive. positive") && strstr(body, "negative or positive. negative"),
              "the base model's labels follow a space");
    cr_assert(strstr(body, "negative or positive.positive"), "the other model's labels follow directly");
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE extracted = 'positive'"), 4);
    free(body);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(log);
    free(dir);
}

/* Calibrated rank scoring over /v1/completions. The fake server scores a label by its word alone,
 * whatever the prompt, and favours "positive": uncalibrated, positive wins every row; the domain
 * premise (pmi) gives exactly the same scores, so every label ties at 0 and the first (negative)
 * wins; contextual calibration stores three content-free inputs and the prior they give.
 * The raw scores stay stored, so the calibrated choice is re-derived from them in SQL. */
Test(run_remote, calibrated_rank_over_completions, .timeout = 120)
{
    char *dir = it_tmpdir();
    fake_llm f;
    const char *const args[] = {"--favor", "positive", NULL};
    cr_assert_eq(fake_start(&f, dir, args), 0);
    char text[4096];
    snprintf(text, sizeof text,
             "{\"name\": \"cal\", \"seed\": 4, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 8}],"
             " \"models\": [{\"name\": \"cmpl\", \"provider\": \"openai-completions\", \"preset\": \"vllm\","
             " \"base_url\": \"http://127.0.0.1:%d/v1\", \"model\": \"m\"}],"
             " \"methods\": [{\"name\": \"raw\", \"template\": \"zero-shot\", \"scoring\": \"rank\"},"
             "  {\"name\": \"pmi\", \"template\": \"zero-shot\", \"scoring\": \"rank\", \"calibration\": \"pmi\"},"
             "  {\"name\": \"cc\", \"template\": \"few-shot\", \"scoring\": \"rank\", \"calibration\": \"contextual\","
             "   \"train_limit\": 16}]}",
             f.port);
    char *suite = write_suite(dir, "cal.json", text);
    char *db = it_path(dir, "cal.db");
    proc_out p = pwb((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE method = 'raw' AND extracted = 'positive'"),
                 8);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE method = 'pmi' AND extracted = 'negative'"
                                 " AND choice_logprobs IS NOT NULL"),
                 8);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM calib_inputs i JOIN cells c ON c.id = i.cell_id"
                                 " WHERE c.method = 'pmi' AND i.input IS NULL AND i.prompt NOT LIKE '%Text:%'"),
                 1, "the premise is the prompt after its input");
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM calib_inputs i JOIN cells c ON c.id = i.cell_id"
                                 " WHERE c.method = 'cc' AND i.choice_logprobs IS NOT NULL"),
                 3);
    char *v = it_sql_text(db, "SELECT group_concat(coalesce(calibration, '-') || ':' || coalesce(train_limit, 'all'),"
                              " ' ') FROM cells ORDER BY id");
    cr_assert_str_eq(v, "none:0 pmi:0 contextual:16");
    free(v);
    /* the three content-free inputs score alike here, so the prior is their label distribution:
     * its log-probabilities differ by what the raw scores differ by */
    cr_assert_eq(it_sql_long(db, "SELECT abs((json_extract(c.calib_prior, '$[0]') - json_extract(c.calib_prior, '$[1]'))"
                                 " - (json_extract(i.choice_logprobs, '$[0]') - json_extract(i.choice_logprobs, '$[1]')))"
                                 " < 1e-6 FROM cells c JOIN calib_inputs i ON i.cell_id = c.id"
                                 " WHERE c.method = 'cc' AND i.idx = 0"),
                 1);
    /* re-scored from the stored raw scores and the prior, without the model: the same choices */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions p JOIN cells c ON c.id = p.cell_id"
                                 " WHERE c.calib_prior IS NOT NULL AND p.extracted != CASE WHEN"
                                 " json_extract(p.choice_logprobs, '$[1]') - json_extract(c.calib_prior, '$[1]') >"
                                 " json_extract(p.choice_logprobs, '$[0]') - json_extract(c.calib_prior, '$[0]')"
                                 " THEN 'positive' ELSE 'negative' END"),
                 0);
    /* the report shows the budget and the prior */
    p = pwb((const char *const[]){it_pwb(), "report", "--db", db, NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "| cc | few-shot | 16 | contextual | negative 0.") != NULL, "%s", p.out);
    proc_out_free(&p);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}
