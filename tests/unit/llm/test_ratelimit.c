/* Rate control: token buckets and AIMD on a simulated clock, then through http.c against fakellm
 * (requests per minute, tokens per minute, and adaptive concurrency under a server that answers
 * 429 past a number of requests in flight). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakesrv.h"
#include "llm/http.h"
#include "llm/openai.h"
#include "llm/ratelimit.h"
#include "util/timer.h"
#include <cjson/cJSON.h>

Test(ratelimit, rpm_bucket_paces_requests)
{
    ratelimit rl;
    ratelimit_init(&rl, &(ratelimit_opts){.max_concurrency = 100, .rpm = 600}, 0.0); /* 10/s, depth 10 */
    double at = -1;
    for (int k = 0; k < 10; k++)
        cr_assert(ratelimit_admit(&rl, 0.0, k, 0, &at), "request %d fits the first second's burst", k);
    cr_assert(!ratelimit_admit(&rl, 0.0, 0, 0, &at));
    cr_assert_float_eq(at, 0.1, 1e-3, "the next token comes after 1/10 s, got %g", at);
    cr_assert(!ratelimit_admit(&rl, 0.05, 0, 0, &at));
    cr_assert(ratelimit_admit(&rl, 0.1001, 0, 0, &at));
    /* over 10 s of steady asking, 10/s go through (plus the initial burst) */
    int sent = 0;
    for (double t = 0.2; t < 10.2; t += 0.001)
        sent += ratelimit_admit(&rl, t, 0, 0, &at);
    cr_assert(sent >= 99 && sent <= 101, "sent %d in 10 s at 600 rpm", sent);
}

Test(ratelimit, tpm_bucket_borrows_and_settles)
{
    ratelimit rl;
    ratelimit_init(&rl, &(ratelimit_opts){.max_concurrency = 4, .tpm = 6000}, 0.0); /* 100 tokens/s, depth 100 */
    double at;
    cr_assert(ratelimit_admit(&rl, 0, 0, 60, &at));
    cr_assert(!ratelimit_admit(&rl, 0, 1, 60, &at), "40 left, 60 wanted");
    cr_assert_float_eq(at, 0.2, 1e-3);
    /* the reply used 10 tokens, not 60: the bucket gets 50 back */
    ratelimit_settle(&rl, 60, 10);
    cr_assert(ratelimit_admit(&rl, 0, 1, 60, &at), "90 left now");
    /* a request larger than the bucket goes when the bucket is full, and borrows */
    ratelimit_init(&rl, &(ratelimit_opts){.max_concurrency = 4, .tpm = 6000}, 0.0);
    cr_assert(ratelimit_admit(&rl, 0, 0, 500, &at), "a full bucket lets a big request through");
    cr_assert(!ratelimit_admit(&rl, 1.0, 0, 10, &at), "400 borrowed: 3 s of debt left after 1 s");
    cr_assert_float_eq(at, 1.0 + 3.1, 1e-3, "%g", at);
    /* unknown usage keeps the estimate; refund gives the charge back */
    ratelimit_settle(&rl, 500, -1);
    ratelimit_refund(&rl, 500);
    cr_assert(ratelimit_admit(&rl, 1.0, 0, 10, &at), "refunded");
}

Test(ratelimit, in_flight_cap_waits_for_a_completion)
{
    ratelimit rl;
    ratelimit_init(&rl, &(ratelimit_opts){.max_concurrency = 3}, 0.0);
    double at = -1;
    cr_assert(ratelimit_admit(&rl, 0, 2, 1e9, &at), "no token limit: any size goes");
    cr_assert(!ratelimit_admit(&rl, 0, 3, 0, &at));
    cr_assert_eq(at, 0, "only a completion can make room");
}

Test(ratelimit, aimd_halves_once_per_round_and_grows_back)
{
    ratelimit rl;
    ratelimit_init(&rl, &(ratelimit_opts){.max_concurrency = 16, .adaptive = 1}, 0.0);
    cr_assert_eq(rl.limit, 16);
    ratelimit_feedback(&rl, 1.0, 0.9, 429);
    cr_assert_eq(rl.limit, 8);
    ratelimit_feedback(&rl, 1.1, 0.95, 429); /* sent before the cut: part of the same burst */
    ratelimit_feedback(&rl, 1.2, 0.99, 503);
    cr_assert_eq(rl.limit, 8, "one cut per round");
    ratelimit_feedback(&rl, 2.0, 1.5, 503);
    cr_assert_eq(rl.limit, 4);
    for (int k = 0; k < 5; k++)
        ratelimit_feedback(&rl, 3.0, 2.5, 500); /* errors that are not throttling change nothing */
    cr_assert_eq(rl.limit, 4);
    for (int k = 0; k < 3; k++)
        ratelimit_feedback(&rl, 3.0, 2.5, 200);
    cr_assert_eq(rl.limit, 4, "+1 needs a full round (4) of successes");
    ratelimit_feedback(&rl, 3.0, 2.5, 200);
    cr_assert_eq(rl.limit, 5);
    for (int k = 0; k < 1000; k++)
        ratelimit_feedback(&rl, 4.0, 3.5, 200);
    cr_assert_eq(rl.limit, 16, "bounded by the maximum");
    for (int k = 0; k < 10; k++)
        ratelimit_feedback(&rl, 5.0 + k, 5.0 + k, 429);
    cr_assert_eq(rl.limit, 1, "never below 1");
    cr_assert_eq(rl.n_throttled, 4 + 10);

    ratelimit fixed;
    ratelimit_init(&fixed, &(ratelimit_opts){.max_concurrency = 16, .grow_after = 2}, 0.0);
    ratelimit_feedback(&fixed, 1.0, 1.0, 429);
    cr_assert_eq(fixed.limit, 16, "not adaptive: the cap stays");
}

/* ---- through http.c ---- */

static fakesrv g_srv;
static void fini(void) { fakesrv_stop(&g_srv); }
TestSuite(ratelimit_http, .fini = fini, .timeout = 60);

typedef struct ctx {
    test_reqs *t;
    int hide_usage; /* parse drops the usage: the limiter keeps its estimates */
} ctx;

static int op_build(void *c, size_t i, pwb_buf *body, pwb_err *e)
{
    return openai_build_chat("m", &((ctx *)c)->t->req[i], body, e);
}
static int op_parse(void *c, size_t i, const char *body, size_t len, llm_response *r, pwb_err *e)
{
    int rc = openai_parse_reply(1, body, len, r, e);
    if (((ctx *)c)->hide_usage)
        r->tokens_in = r->tokens_out = -1;
    return rc;
}
static void op_est(void *c, size_t i, double *in, double *out)
{
    *in = 100; /* every request estimated at 100 + 0 tokens */
    *out = 0;
}

static double run_batch_u(http_client *h, test_reqs *t, int hide_usage)
{
    ctx c = {t, hide_usage};
    http_ops ops = {.build = op_build, .parse = op_parse, .ctx = &c, .estimate = op_est};
    pwb_err e;
    double t0 = timer_wall();
    int rc = http_client_run(h, t->n, &ops, t->out, test_reqs_on_done, t, NULL, &e);
    double dt = timer_wall() - t0;
    cr_assert_eq(rc, PWB_OK, "%s", e.msg);
    for (size_t i = 0; i < t->n; i++) {
        cr_assert_null(t->out[i].error, "%zu: %s", i, t->out[i].error);
        cr_assert_eq(t->done[i], 1);
    }
    return dt;
}

static double run_batch(http_client *h, test_reqs *t) { return run_batch_u(h, t, 0); }

static http_client *client(ratelimit *rl, int conc, int retries)
{
    char url[128];
    snprintf(url, sizeof url, "%s/chat/completions", g_srv.base);
    http_opts o = {.url = url, .concurrency = conc, .timeout_s = 10, .max_retries = retries,
                   .backoff_base_s = 0.01, .backoff_max_s = 0.05, .limiter = rl, .jitter_seed = 7};
    http_client *h = NULL;
    pwb_err e;
    cr_assert_eq(http_client_create(&h, &o, &e), PWB_OK, "%s", e.msg);
    return h;
}

Test(ratelimit_http, rpm_limit_spreads_requests)
{
    fakesrv_start(&g_srv, (const char *const[]){"--reply", "ok", NULL});
    test_reqs t;
    test_reqs_init(&t, 30, 4);
    ratelimit rl;
    ratelimit_init(&rl, &(ratelimit_opts){.max_concurrency = 8, .rpm = 1200}, timer_wall()); /* 20/s */
    http_client *h = client(&rl, 8, 0);
    double dt = run_batch(h, &t);
    /* 20 in the first second's burst, then 10 more at 20/s: at least 0.45 s */
    cr_assert(dt >= 0.45 && dt < 3.0, "30 requests at 1200 rpm took %.3f s", dt);
    http_client_free(h);
    test_reqs_free(&t);

    /* without a limit the same batch is much faster */
    test_reqs_init(&t, 30, 4);
    h = client(NULL, 8, 0);
    double fast = run_batch(h, &t);
    cr_assert(fast < 0.3, "unlimited: %.3f s", fast);
    http_client_free(h);
    test_reqs_free(&t);
}

Test(ratelimit_http, tpm_limit_uses_estimates_then_usage)
{
    fakesrv_start(&g_srv, (const char *const[]){"--reply", "ok", NULL});
    /* 200 tokens/s, depth 200, 100-token estimates: with the usage hidden, two go at once and
     * then one every 0.5 s: four take >= 1 s */
    test_reqs t;
    test_reqs_init(&t, 4, 4);
    ratelimit rl;
    ratelimit_init(&rl, &(ratelimit_opts){.max_concurrency = 4, .tpm = 12000}, timer_wall());
    http_client *h = client(&rl, 4, 0);
    double dt = run_batch_u(h, &t, 1);
    cr_assert(dt >= 0.95 && dt < 2.5, "estimates only: %.3f s", dt);
    http_client_free(h);
    test_reqs_free(&t);

    /* the same with the replies' usage (~10 tokens each): settling gives the rest back */
    test_reqs_init(&t, 24, 4);
    ratelimit_init(&rl, &(ratelimit_opts){.max_concurrency = 1, .tpm = 12000}, timer_wall());
    h = client(&rl, 1, 0);
    dt = run_batch(h, &t);
    /* by estimates alone 24 x 100 tokens would take (2400 - 200) / 200 = 11 s */
    cr_assert(dt < 1.5, "settled to usage: %.3f s", dt);
    for (size_t i = 0; i < t.n; i++)
        cr_assert(t.out[i].tokens_in > 0 && t.out[i].tokens_in < 20);
    http_client_free(h);
    test_reqs_free(&t);
}

/* A server that throttles past 3 requests in flight: AIMD converges below it and keeps the 429s
 * down, where a fixed concurrency of 12 keeps hitting it. */
static long throttled_run(int adaptive, int *final_limit)
{
    fakesrv_start(&g_srv, (const char *const[]){"--reply", "ok", "--rate-slow", "1", "--slow-ms", "40",
                                                "--max-inflight", "3", "--retry-after", "-1", NULL});
    test_reqs t;
    test_reqs_init(&t, 60, 4);
    ratelimit rl;
    ratelimit_init(&rl, &(ratelimit_opts){.max_concurrency = 12, .adaptive = adaptive}, timer_wall());
    http_client *h = client(&rl, 12, 50);
    run_batch(h, &t);
    long thr = fakesrv_stat(&g_srv, "throttled");
    cr_assert_eq(fakesrv_stat(&g_srv, "ok") + fakesrv_stat(&g_srv, "slow"), 60, "every request answered once");
    *final_limit = rl.limit;
    if (adaptive)
        cr_assert(rl.n_cuts >= 2, "cuts: %ld", rl.n_cuts);
    http_client_free(h);
    test_reqs_free(&t);
    fakesrv_stop(&g_srv);
    return thr;
}

Test(ratelimit_http, adaptive_concurrency_backs_off_on_429)
{
    int lim_fixed, lim_adapt;
    long fixed = throttled_run(0, &lim_fixed);
    long adapt = throttled_run(1, &lim_adapt);
    cr_log_info("429s: fixed concurrency 12: %ld, adaptive: %ld (final cap %d)", fixed, adapt, lim_adapt);
    cr_assert_eq(lim_fixed, 12);
    cr_assert(lim_adapt <= 6, "adaptive cap ends near the server's 3, got %d", lim_adapt);
    cr_assert(adapt * 3 < fixed, "adaptive: %ld 429s, fixed: %ld", adapt, fixed);
}

/* The limiter under faults: 20% of attempts fail (429 with Retry-After 0, 500, dropped
 * connections, timeouts); with AIMD and an RPM limit on, every request still completes exactly
 * once, the retries are counted, and nothing is left charged. */
Test(ratelimit_http, faults_with_limits_complete_exactly_once)
{
    fakesrv_start(&g_srv, (const char *const[]){"--reply", "ok", "--seed", "12", "--rate-429", "0.06", "--retry-after",
                                                "0", "--rate-500", "0.06", "--rate-drop", "0.04", "--rate-slow",
                                                "0.04", "--slow-ms", "400", NULL});
    test_reqs t;
    test_reqs_init(&t, 400, 4);
    ratelimit rl;
    ratelimit_init(&rl, &(ratelimit_opts){.max_concurrency = 16, .rpm = 60000, .adaptive = 1}, timer_wall());
    char url[128];
    snprintf(url, sizeof url, "%s/chat/completions", g_srv.base);
    http_opts o = {.url = url, .concurrency = 16, .timeout_s = 0.25, .max_retries = 20, .backoff_base_s = 0.005,
                   .backoff_max_s = 0.02, .limiter = &rl, .jitter_seed = 3};
    http_client *h = NULL;
    pwb_err e;
    cr_assert_eq(http_client_create(&h, &o, &e), PWB_OK, "%s", e.msg);
    double dt = run_batch(h, &t);
    long retries = 0;
    for (size_t i = 0; i < t.n; i++)
        retries += t.out[i].retries;
    cJSON *s = fakesrv_stats(&g_srv);
    int drops = cJSON_GetObjectItem(s, "drop")->valueint;
    int faults = cJSON_GetObjectItem(s, "status_429")->valueint + cJSON_GetObjectItem(s, "status_500")->valueint +
                 drops + cJSON_GetObjectItem(s, "slow")->valueint;
    cJSON_Delete(s);
    cr_log_info("400 requests, %d faults, %ld retries, %.2f s, final cap %d", faults, retries, dt, rl.limit);
    cr_assert(faults >= 50, "%d", faults);
    /* each fault costs one attempt, but curl itself resends a request whose reused connection was
     * dropped (the server counts it, the client does not) */
    cr_assert(retries >= faults - drops && retries <= faults, "retries %ld for %d faults (%d drops)", retries, faults,
              drops);
    cr_assert(rl.n_throttled > 0);
    http_client_free(h);
    test_reqs_free(&t);
}
