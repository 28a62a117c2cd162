/* The HTTP transport: Retry-After, backoff, scrubbing, error texts; and the OpenAI backend end to
 * end against the loopback server build/fakellm (PWB_FAKELLM), with faults, retries, the API key,
 * the stop flag, and throughput. Each test starts its own server and kills it at the end. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "llm/backend.h"
#include "llm/http.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/rng.h"
#include "util/timer.h"

/* ---- pure pieces ---- */

Test(http_retry_after, seconds_and_dates)
{
    time_t now = 1445412450; /* Wed, 21 Oct 2015 07:27:30 GMT */
    cr_assert_float_eq(http_retry_after_parse("0", now), 0.0, 1e-9);
    cr_assert_float_eq(http_retry_after_parse("1", now), 1.0, 1e-9);
    cr_assert_float_eq(http_retry_after_parse(" 120 ", now), 120.0, 1e-9);
    cr_assert_float_eq(http_retry_after_parse("1.5", now), 1.5, 1e-9);
    cr_assert(http_retry_after_parse("99999999999999999999999", now) >= 1e12, "huge stays finite");
    cr_assert_eq(http_retry_after_parse("-1", now), -1);
    cr_assert_eq(http_retry_after_parse("", now), -1);
    cr_assert_eq(http_retry_after_parse("   ", now), -1);
    cr_assert_eq(http_retry_after_parse("soon", now), -1);
    cr_assert_eq(http_retry_after_parse("5s", now), -1);
    cr_assert_eq(http_retry_after_parse(NULL, now), -1);
    /* the three HTTP-date forms: IMF-fixdate, RFC 850, asctime */
    cr_assert_float_eq(http_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", now), 30.0, 1e-9);
    cr_assert_float_eq(http_retry_after_parse("Wednesday, 21-Oct-15 07:28:00 GMT", now), 30.0, 1e-9);
    cr_assert_float_eq(http_retry_after_parse("Wed Oct 21 07:28:00 2015", now), 30.0, 1e-9);
    cr_assert_float_eq(http_retry_after_parse("Wed, 21 Oct 2015 07:00:00 GMT", now), 0.0, 1e-9, "past: now");
}

Test(http_backoff, full_jitter_bounds)
{
    const double base = 0.5, max = 30;
    for (int a = 0; a < 200; a++) {
        double cap = fmin(max, base * pow(2, a > 100 ? 100 : a));
        for (double u = 0; u < 1; u += 0.125) {
            double d = http_backoff_delay(base, max, a, u);
            cr_assert(d >= 0 && d <= cap + 1e-9, "attempt %d u %g: %g > %g", a, u, d, cap);
            cr_assert_float_eq(d, u * cap, 1e-9);
        }
        cr_assert(http_backoff_delay(base, max, a, 0.999999) > cap * 0.99);
    }
    cr_assert_float_eq(http_backoff_delay(base, max, 0, 0.5), 0.25, 1e-12);
    cr_assert_float_eq(http_backoff_delay(base, max, 3, 0.5), 2.0, 1e-12);
    cr_assert(http_backoff_delay(base, max, INT_MAX, 0.5) <= 15.0 + 1e-9, "no overflow");
    cr_assert(isfinite(http_backoff_delay(base, 0, 5000, 0.5)), "uncapped stays finite");
    cr_assert_eq(http_backoff_delay(0, max, 3, 0.5), 0);
    cr_assert_eq(http_backoff_delay(base, max, -4, 0.5), 0.25);

    /* full jitter: the mean of many draws is about half the cap */
    pwb_rng rng;
    rng_init(&rng, 3);
    double sum = 0;
    for (int i = 0; i < 20000; i++)
        sum += http_backoff_delay(1, 8, 2, rng_uniform(&rng));
    cr_assert(fabs(sum / 20000 - 2.0) < 0.1, "mean %g", sum / 20000);
}

Test(http_status, retryable)
{
    int yes[] = {429, 500, 502, 503, 504, 599};
    int no[] = {200, 400, 401, 403, 404, 408, 413, 422, 600, 0};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_assert(http_status_retryable(yes[i]), "%d", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert(!http_status_retryable(no[i]), "%d", no[i]);
}

Test(http_scrub, secrets_and_error_text)
{
    char s[] = "aKEY12bKEY12KEY12c";
    http_scrub(s, strlen(s), "KEY12");
    cr_assert_str_eq(s, "a*****b**********c");
    char t[] = "nothing";
    http_scrub(t, strlen(t), NULL);
    http_scrub(t, strlen(t), "");
    cr_assert_str_eq(t, "nothing");

    const char *j = "{\"error\":{\"message\":\"Incorrect API key provided: sk-SECRET99\",\"type\":\"auth\"}}";
    char *m = http_error_text(401, j, strlen(j), "sk-SECRET99");
    cr_assert_str_eq(m, "HTTP 401: Incorrect API key provided: ***********");
    free(m);

    m = http_error_text(502, "", 0, NULL);
    cr_assert_str_eq(m, "HTTP 502");
    free(m);

    /* a long non-JSON body: one line, cut, control bytes gone, the key scrubbed even across the cut */
    pwb_buf b;
    buf_init(&b);
    buf_puts(&b, "<html>\r\n\t<body>");
    while (b.len < HTTP_EXCERPT - 5)
        buf_putc(&b, 'z');
    buf_puts(&b, "sk-SECRET99 and more \x01\x02 text");
    m = http_error_text(503, b.data, b.len, "sk-SECRET99");
    cr_assert(strncmp(m, "HTTP 503: <html> <body>zz", 25) == 0, "%s", m);
    cr_assert_null(strstr(m, "SECRET"), "%s", m);
    cr_assert_null(strstr(m, "sk-"), "no partial key either: %s", m);
    cr_assert_null(strchr(m, '\r'));
    cr_assert(strlen(m) <= HTTP_EXCERPT + 20);
    free(m);
    buf_free(&b);
}

/* ---- the loopback server ---- */

typedef struct fake {
    pid_t pid;
    int port;
    char base[64];
} fake;

static fake g_fake; /* killed by the suite's fini even when an assertion fails */

static void fake_stop(fake *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGTERM);
        int st;
        for (int i = 0; i < 200 && waitpid(f->pid, &st, WNOHANG) == 0; i++)
            usleep(10000);
        if (waitpid(f->pid, &st, WNOHANG) == 0) {
            kill(f->pid, SIGKILL);
            waitpid(f->pid, &st, 0);
        }
    }
    f->pid = 0;
}

static void fini(void) { fake_stop(&g_fake); }

static const char *fake_path(void)
{
    static char path[4096];
    const char *p = getenv("PWB_FAKELLM");
    if (p && *p)
        return p;
    const char *root = getenv("PWB_ROOT");
    snprintf(path, sizeof path, "%s/build/fakellm", root && *root ? root : ".");
    return path;
}

/* Starts fakellm with the given extra arguments (NULL-terminated) and waits for its PORT line. */
static void fake_start(fake *f, const char *const *args)
{
    const char *path = fake_path();
    if (access(path, X_OK) != 0)
        cr_skip_test("fakellm not built at %s (make build/fakellm, or set PWB_FAKELLM)", path);
    const char *argv[64];
    int n = 0;
    argv[n++] = path;
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--idle-exit";
    argv[n++] = "30"; /* a server orphaned by a crashed test still goes away */
    for (int i = 0; args && args[i] && n < 62; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    f->pid = pid;
    char line[64];
    size_t got = 0;
    double t0 = timer_wall();
    while (got < sizeof line - 1 && !memchr(line, '\n', got) && timer_wall() - t0 < 5) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(fds[0], line + got, sizeof line - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fds[0]);
    line[got] = '\0';
    cr_assert_eq(sscanf(line, "PORT %d", &f->port), 1, "fakellm said '%s'", line);
    snprintf(f->base, sizeof f->base, "http://127.0.0.1:%d/v1", f->port);
}

static size_t grab(char *p, size_t s, size_t n, void *ud)
{
    buf_append(ud, p, s * n);
    return s * n;
}

/* GET /stats as parsed JSON. */
static cJSON *fake_stats(const fake *f)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/stats", f->port);
    pwb_buf b;
    buf_init(&b);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, grab);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    cr_assert_eq(rc, CURLE_OK, "GET /stats: %s", curl_easy_strerror(rc));
    cJSON *j = cJSON_Parse(b.data);
    buf_free(&b);
    cr_assert_not_null(j);
    return j;
}

static int stat_of(cJSON *j, const char *k) { return cJSON_GetObjectItem(j, k) ? cJSON_GetObjectItem(j, k)->valueint : -1; }

/* ---- helpers for batches ---- */

typedef struct batch {
    size_t n;
    llm_request *req;
    llm_message *msg;
    char **prompt;
    llm_response *out;
    int *done_count;
    size_t completed;
    size_t stop_after; /* set *stop after this many completions (0: never) */
    volatile sig_atomic_t *stop;
} batch;

static void batch_init(batch *b, size_t n)
{
    memset(b, 0, sizeof *b);
    b->n = n;
    b->req = calloc(n, sizeof *b->req);
    b->msg = calloc(n * 2, sizeof *b->msg);
    b->prompt = calloc(n, sizeof *b->prompt);
    b->out = calloc(n, sizeof *b->out);
    b->done_count = calloc(n, sizeof *b->done_count);
    for (size_t i = 0; i < n; i++) {
        char tmp[96];
        snprintf(tmp, sizeof tmp, "question number %zu: is \"this\" fine?", i);
        b->prompt[i] = strdup(tmp);
        b->msg[2 * i] = (llm_message){"system", "Answer briefly."};
        b->msg[2 * i + 1] = (llm_message){"user", b->prompt[i]};
        b->req[i] = (llm_request){.mode = LLM_GENERATE, .messages = &b->msg[2 * i], .n_messages = 2,
                                  .max_tokens = 16, .temperature = 0, .seed = i};
    }
}

static void batch_free(batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->prompt[i]);
        llm_response_clear(&b->out[i]);
    }
    free(b->req);
    free(b->msg);
    free(b->prompt);
    free(b->out);
    free(b->done_count);
}

static void on_done(void *ctx, size_t i, const llm_response *r)
{
    batch *b = ctx;
    cr_assert(i < b->n);
    cr_assert_eq(r, &b->out[i]);
    b->done_count[i]++;
    b->completed++;
    if (b->stop_after && b->completed >= b->stop_after && b->stop)
        *b->stop = 1;
}

static llm_backend *make_backend(const fake *f, const char *provider, int conc, double timeout, int retries,
                                 const char *key_env)
{
    llm_config c;
    llm_config_defaults(&c);
    c.name = "fake";
    c.provider = provider;
    c.base_url = f->base;
    c.model = "fake-model";
    c.api_key_env = key_env;
    c.concurrency = conc;
    c.timeout_s = timeout;
    c.max_retries = retries;
    c.backoff_base_s = 0.01;
    c.backoff_max_s = 0.05;
    llm_backend *b = NULL;
    pwb_err e;
    int rc = llm_backend_create(&b, &c, &e);
    cr_assert_eq(rc, PWB_OK, "create: %s", e.msg);
    return b;
}

TestSuite(http_fake, .fini = fini, .timeout = 60);

Test(http_fake, all_succeed_with_keepalive)
{
    const char *args[] = {"--echo", NULL};
    fake_start(&g_fake, args);
    llm_backend *be = make_backend(&g_fake, "openai", 16, 10, 0, NULL);
    batch b;
    batch_init(&b, 200);
    pwb_err e;
    int rc = be->run(be, b.req, b.n, b.out, on_done, &b, &e);
    cr_assert_eq(rc, PWB_OK, "%s", e.msg);
    for (size_t i = 0; i < b.n; i++) {
        llm_response *r = &b.out[i];
        cr_assert_null(r->error, "request %zu: %s", i, r->error);
        cr_assert_str_eq(r->text, b.prompt[i], "request %zu", i);
        cr_assert_eq(r->http_status, 200);
        cr_assert_eq(r->retries, 0);
        cr_assert_eq(r->tokens_in, 2 + 6, "whitespace words of both messages");
        cr_assert_eq(r->tokens_out, 6);
        cr_assert_str_eq(r->finish_reason, "stop");
        cr_assert(r->latency_s > 0 && r->latency_s < 10);
        cr_assert_eq(b.done_count[i], 1);
    }
    /* a second batch on the same backend reuses the connections */
    batch b2;
    batch_init(&b2, 50);
    cr_assert_eq(be->run(be, b2.req, b2.n, b2.out, NULL, NULL, &e), PWB_OK);
    cJSON *s = fake_stats(&g_fake);
    cr_assert_eq(stat_of(s, "requests"), 250);
    cr_assert(stat_of(s, "connections") <= 16 + 1, "keep-alive: %d connections", stat_of(s, "connections"));
    cJSON_Delete(s);
    batch_free(&b2);
    batch_free(&b);
    llm_backend_free(be);
    fake_stop(&g_fake);
}

Test(http_fake, faults_are_retried_to_success)
{
    const char *args[] = {"--echo", "--seed", "11", "--rate-429", "0.05", "--rate-500", "0.05",
                          "--rate-503", "0.02", "--rate-drop", "0.05", "--rate-slow", "0.05",
                          "--rate-malformed", "0.02", "--slow-ms", "1500", "--retry-after", "0", NULL};
    fake_start(&g_fake, args);
    llm_backend *be = make_backend(&g_fake, "openai", 16, 0.4, 12, NULL);
    batch b;
    batch_init(&b, 200);
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, b.n, b.out, on_done, &b, &e), PWB_OK, "%s", e.msg);
    int retries = 0, retried = 0;
    for (size_t i = 0; i < b.n; i++) {
        llm_response *r = &b.out[i];
        cr_assert_null(r->error, "request %zu: %s", i, r->error);
        cr_assert_str_eq(r->text, b.prompt[i]);
        cr_assert_eq(r->http_status, 200);
        cr_assert_eq(b.done_count[i], 1, "request %zu completed %d times", i, b.done_count[i]);
        retries += r->retries;
        retried += r->retries > 0;
    }
    cr_assert_eq(b.completed, b.n);
    cJSON *s = fake_stats(&g_fake);
    int faults = stat_of(s, "status_429") + stat_of(s, "status_500") + stat_of(s, "status_503") +
                 stat_of(s, "drop") + stat_of(s, "slow") + stat_of(s, "malformed");
    cr_assert(faults >= 20, "about 24%% of requests should fault: %d", faults);
    cr_assert(retried >= 15, "%d requests retried", retried);
    /* every server-side fault costs the client one counted attempt, a dropped keep-alive
     * connection included (libcurl's own resend of it is not let through uncounted) */
    cr_assert_eq(retries, faults, "%d retries for %d faults", retries, faults);
    cr_assert_eq(stat_of(s, "requests"), (int)b.n + retries);
    cJSON_Delete(s);
    batch_free(&b);
    llm_backend_free(be);
    fake_stop(&g_fake);
}

/* The server reads the second request of a kept-alive connection, then closes it without a reply.
 * libcurl would send it again on a fresh connection by itself; pwb counts that as a retry, and
 * with max_retries 0 the request fails instead of reaching the server twice. */
Test(http_fake, a_dropped_keepalive_connection_is_a_counted_retry)
{
    for (int max_retries = 0; max_retries <= 2; max_retries += 2) {
        const char *args[] = {"--echo", "--script", "ok,drop", NULL};
        fake_start(&g_fake, args);
        llm_backend *be = make_backend(&g_fake, "openai", 1, 5, max_retries, NULL);
        batch b;
        batch_init(&b, 2);
        pwb_err e;
        cr_assert_eq(be->run(be, b.req, b.n, b.out, on_done, &b, &e), PWB_OK, "%s", e.msg);
        cr_assert_null(b.out[0].error, "%s", b.out[0].error);
        cr_assert_eq(b.out[0].retries, 0);
        cJSON *s = fake_stats(&g_fake);
        cr_log_info("max_retries %d: %d connections, %d requests", max_retries, stat_of(s, "connections"),
                    stat_of(s, "requests"));
        if (max_retries == 0) {
            cr_assert_not_null(b.out[1].error, "sent twice with max_retries 0");
            cr_assert(strstr(b.out[1].error, "kept-alive connection dropped"), "%s", b.out[1].error);
            cr_assert_eq(b.out[1].retries, 0);
            cr_assert_eq(stat_of(s, "requests"), 2, "the server saw the dropped request once");
        } else {
            cr_assert_null(b.out[1].error, "%s", b.out[1].error);
            cr_assert_eq(b.out[1].retries, 1, "the resend is a retry");
            cr_assert_eq(stat_of(s, "requests"), 3);
        }
        cJSON_Delete(s);
        batch_free(&b);
        llm_backend_free(be);
        fake_stop(&g_fake);
    }
}

Test(http_fake, no_retries_failures_carry_errors)
{
    const char *args[] = {"--echo", "--fail-first", "20", "--fail-kind", "500", NULL};
    fake_start(&g_fake, args);
    llm_backend *be = make_backend(&g_fake, "openai", 8, 5, 0, NULL);
    batch b;
    batch_init(&b, 100);
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, b.n, b.out, on_done, &b, &e), PWB_OK, "%s", e.msg);
    int failed = 0;
    for (size_t i = 0; i < b.n; i++) {
        llm_response *r = &b.out[i];
        cr_assert_eq(b.done_count[i], 1);
        cr_assert_eq(r->retries, 0);
        if (r->error) {
            failed++;
            cr_assert_null(r->text);
            cr_assert_eq(r->http_status, 500);
            cr_assert(strstr(r->error, "HTTP 500") && strstr(r->error, "the fake model failed"), "%s", r->error);
        } else {
            cr_assert_str_eq(r->text, b.prompt[i]);
        }
    }
    cr_assert_eq(failed, 20);
    batch_free(&b);
    llm_backend_free(be);
    fake_stop(&g_fake);
}

Test(http_fake, client_errors_are_not_retried)
{
    const char *args[] = {"--require-key", "right-key", NULL};
    fake_start(&g_fake, args);
    setenv("PWB_TEST_WRONG_KEY", "wrong-key-123", 1);
    llm_backend *be = make_backend(&g_fake, "openai", 4, 5, 5, "PWB_TEST_WRONG_KEY");
    batch b;
    batch_init(&b, 10);
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, b.n, b.out, NULL, NULL, &e), PWB_OK);
    for (size_t i = 0; i < b.n; i++) {
        cr_assert_eq(b.out[i].http_status, 401);
        cr_assert_eq(b.out[i].retries, 0, "4xx is final");
        cr_assert(strstr(b.out[i].error, "HTTP 401: invalid API key"), "%s", b.out[i].error);
    }
    cJSON *s = fake_stats(&g_fake);
    cr_assert_eq(stat_of(s, "unauthorized"), 10);
    cJSON_Delete(s);
    batch_free(&b);
    llm_backend_free(be);
    fake_stop(&g_fake);
}

/* A fresh temporary file name for fakellm's --log. */
static void temp_log(char *path, size_t cap)
{
    const char *dir = getenv("TMPDIR");
    snprintf(path, cap, "%s/pwb-fakellm-log-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
    close(fd);
}

static int contains(const char *s, const char *needle) { return s && strstr(s, needle); }

Test(http_fake, api_key_sent_but_never_echoed)
{
    const char *key = "sk-PLANTED-4e1f9c0b7d";
    char logpath[512];
    temp_log(logpath, sizeof logpath);
    /* a hostile server: echoes the Authorization header into replies and error bodies */
    const char *args[] = {"--leak-auth", "--require-key", key, "--fail-first", "6", "--fail-kind", "429",
                          "--retry-after", "0", "--log", logpath, NULL};
    fake_start(&g_fake, args);
    setenv("PWB_TEST_PLANTED_KEY", key, 1);
    llm_backend *be = make_backend(&g_fake, "openai", 2, 5, 0, "PWB_TEST_PLANTED_KEY");
    batch b;
    batch_init(&b, 20);
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, b.n, b.out, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    int errors = 0, texts = 0;
    for (size_t i = 0; i < b.n; i++) {
        llm_response *r = &b.out[i];
        cr_assert(!contains(r->text, "PLANTED") && !contains(r->error, "PLANTED") &&
                      !contains(r->finish_reason, "PLANTED"),
                  "key leaked in response %zu: text=%s error=%s", i, r->text, r->error);
        errors += r->error != NULL;
        texts += contains(r->text, "[auth: Bearer ****") != 0; /* the echo arrived, scrubbed */
        if (r->error)
            cr_assert(strstr(r->error, "HTTP 429"), "%s", r->error);
    }
    cr_assert_eq(errors, 6);
    cr_assert_eq(texts, 14);
    cr_assert(!contains(e.msg, "PLANTED"));
    llm_backend_free(be);
    fake_stop(&g_fake);

    /* ...and it was really sent, in the Authorization header of every request */
    pwb_buf log;
    buf_init(&log);
    cr_assert_eq(file_read_all(logpath, 1 << 24, &log, &e), PWB_OK, "%s", e.msg);
    unlink(logpath);
    int lines = 0;
    for (char *line = strtok(log.data, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        cr_assert_not_null(j);
        cJSON *h = cJSON_GetObjectItem(j, "headers");
        char want[128];
        snprintf(want, sizeof want, "Bearer %s", key);
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(h, "authorization")), want);
        cr_assert(!contains(cJSON_GetStringValue(cJSON_GetObjectItem(j, "body")), "PLANTED"), "not in bodies");
        cJSON_Delete(j);
        lines++;
    }
    cr_assert_eq(lines, 20);
    buf_free(&log);
    batch_free(&b);
}

/* ---- proxies ---- */

/* A loopback listener standing in for an http_proxy: it records what arrives and closes. */
typedef struct proxy_spy {
    int fd, port, stop;
    pwb_buf seen;
    pthread_t th;
} proxy_spy;

static void *spy_loop(void *p)
{
    proxy_spy *s = p;
    while (!s->stop) {
        struct pollfd pf = {.fd = s->fd, .events = POLLIN};
        if (poll(&pf, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        char buf[4096];
        ssize_t r;
        struct pollfd pc = {.fd = c, .events = POLLIN};
        while (poll(&pc, 1, 300) > 0 && (r = read(c, buf, sizeof buf)) > 0)
            buf_append(&s->seen, buf, (size_t)r);
        buf_puts(&s->seen, "\n--connection--\n");
        close(c);
    }
    return NULL;
}

static void spy_start(proxy_spy *s)
{
    memset(s, 0, sizeof *s);
    buf_init(&s->seen);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(s->fd, 16), 0);
    getsockname(s->fd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&s->th, NULL, spy_loop, s), 0);
}

static void spy_stop(proxy_spy *s)
{
    s->stop = 1;
    pthread_join(s->th, NULL);
    close(s->fd);
}

static void run_through_proxy(const char *url, const char *key_env, int insecure)
{
    llm_config c;
    llm_config_defaults(&c);
    c.name = "fake";
    c.provider = "openai";
    c.base_url = url;
    c.model = "fake-model";
    c.api_key_env = key_env;
    c.allow_insecure_key = insecure;
    c.timeout_s = 2;
    c.max_retries = 0;
    llm_backend *be = NULL;
    pwb_err e;
    cr_assert_eq(llm_backend_create(&be, &c, &e), PWB_OK, "%s", e.msg);
    batch b;
    batch_init(&b, 1);
    be->run(be, b.req, b.n, b.out, NULL, NULL, &e);
    batch_free(&b);
    llm_backend_free(be);
}

/* A key never crosses a plain-http proxy taken from the environment: a loopback server is reached
 * directly, and a plain-http host with a key is too; only a keyless request goes through. */
Test(http_fake, key_never_crosses_a_plain_http_proxy)
{
    const char *args[] = {"--echo", NULL};
    fake_start(&g_fake, args);
    proxy_spy spy;
    spy_start(&spy);
    char proxy[64];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", spy.port);
    setenv("http_proxy", proxy, 1);
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    setenv("PWB_TEST_PROXY_KEY", "sk-PROXY-7c1d", 1);
    run_through_proxy(g_fake.base, "PWB_TEST_PROXY_KEY", 0);
    run_through_proxy("http://pwb-test.invalid/v1", "PWB_TEST_PROXY_KEY", 1);
    size_t with_key = spy.seen.len;
    run_through_proxy("http://pwb-test.invalid/v1", NULL, 0); /* keyless: the proxy is used */
    spy_stop(&spy);
    unsetenv("http_proxy");
    fake_stop(&g_fake);
    const char *seen = spy.seen.data ? spy.seen.data : "";
    cr_assert_eq(with_key, 0, "the proxy received: %s", seen);
    cr_assert(strstr(seen, "pwb-test.invalid"), "the keyless request should have used the proxy: '%s'", seen);
    cr_assert(!strstr(seen, "PROXY-7c1d") && !strcasestr(seen, "authorization"), "%s", seen);
    buf_free(&spy.seen);
}

static void *set_stop_later(void *p)
{
    usleep(200 * 1000);
    *(volatile sig_atomic_t *)p = 1;
    return NULL;
}

Test(http_fake, stop_flag_interrupts_in_flight)
{
    const char *args[] = {"--rate-slow", "1", "--slow-ms", "20000", NULL};
    fake_start(&g_fake, args);
    llm_backend *be = make_backend(&g_fake, "openai", 8, 30, 3, NULL);
    volatile sig_atomic_t stop = 0;
    be->stop = &stop;
    batch b;
    batch_init(&b, 40);
    pthread_t th;
    pthread_create(&th, NULL, set_stop_later, (void *)&stop);
    pwb_err e;
    double t0 = timer_wall();
    int rc = be->run(be, b.req, b.n, b.out, on_done, &b, &e);
    double dt = timer_wall() - t0;
    pthread_join(th, NULL);
    cr_assert_eq(rc, PWB_EINTR);
    cr_assert(dt < 1.5, "took %.2f s to notice the stop flag", dt);
    for (size_t i = 0; i < b.n; i++) {
        cr_assert_str_eq(b.out[i].error, "interrupted");
        cr_assert_null(b.out[i].text);
        cr_assert_eq(b.done_count[i], 0);
    }
    cr_assert(b.out[0].latency_s > 0.1, "in-flight requests keep their latency");
    batch_free(&b);
    llm_backend_free(be);
    fake_stop(&g_fake);
}

Test(http_fake, stop_from_done_callback)
{
    fake_start(&g_fake, NULL);
    llm_backend *be = make_backend(&g_fake, "openai", 4, 10, 0, NULL);
    volatile sig_atomic_t stop = 0;
    be->stop = &stop;
    batch b;
    batch_init(&b, 500);
    b.stop = &stop;
    b.stop_after = 10;
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, b.n, b.out, on_done, &b, &e), PWB_EINTR);
    size_t ok = 0, intr = 0;
    for (size_t i = 0; i < b.n; i++) {
        if (b.out[i].text) {
            ok++;
            cr_assert_eq(b.done_count[i], 1);
            cr_assert_null(b.out[i].error);
        } else {
            intr++;
            cr_assert_str_eq(b.out[i].error, "interrupted");
            cr_assert_eq(b.done_count[i], 0);
        }
    }
    cr_assert(ok >= 10 && ok < 30, "%zu completed", ok);
    cr_assert_eq(ok + intr, b.n);
    cr_assert_eq(ok, b.completed);
    batch_free(&b);
    llm_backend_free(be);
    fake_stop(&g_fake);
}

static void retry_after_case(const char *const *args, double min_s)
{
    fake_start(&g_fake, args);
    llm_backend *be = make_backend(&g_fake, "openai", 1, 5, 2, NULL);
    batch b;
    batch_init(&b, 1);
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, 1, b.out, NULL, NULL, &e), PWB_OK);
    cr_assert_null(b.out[0].error, "%s", b.out[0].error);
    cr_assert_eq(b.out[0].retries, 1);
    cr_assert(b.out[0].latency_s >= min_s, "waited only %.3f s", b.out[0].latency_s);
    cr_assert(b.out[0].latency_s < 4.0, "waited %.3f s", b.out[0].latency_s);
    batch_free(&b);
    llm_backend_free(be);
    fake_stop(&g_fake);
}

Test(http_fake, retry_after_seconds_honoured)
{
    /* the backoff (at most 0.05 s here) is overridden by the server's Retry-After: 1 */
    const char *args[] = {"--script", "429", "--retry-after", "1", NULL};
    retry_after_case(args, 0.95);
}

Test(http_fake, retry_after_date_honoured)
{
    /* an HTTP-date 2 s ahead has 1 s resolution: at least ~1 s of waiting */
    const char *args[] = {"--script", "503", "--retry-after", "2", "--retry-after-date", NULL};
    retry_after_case(args, 0.9);
}

Test(http_fake, retry_after_pauses_all_sends)
{
    /* The first request gets 429 + Retry-After: 1; the others must not be sent meanwhile. */
    char logpath[512];
    temp_log(logpath, sizeof logpath);
    const char *args[] = {"--script", "429", "--retry-after", "1", "--log", logpath, NULL};
    fake_start(&g_fake, args);
    llm_backend *be = make_backend(&g_fake, "openai", 1, 5, 2, NULL);
    batch b;
    batch_init(&b, 30);
    pwb_err e;
    double t0 = timer_wall();
    cr_assert_eq(be->run(be, b.req, b.n, b.out, NULL, NULL, &e), PWB_OK);
    double dt = timer_wall() - t0;
    for (size_t i = 0; i < b.n; i++)
        cr_assert_null(b.out[i].error, "%s", b.out[i].error);
    cr_assert_eq(b.out[0].retries, 1);
    cr_assert(dt >= 0.95, "batch took %.3f s", dt);
    llm_backend_free(be);
    fake_stop(&g_fake);
    pwb_buf log;
    buf_init(&log);
    cr_assert_eq(file_read_all(logpath, 1 << 22, &log, &e), PWB_OK);
    unlink(logpath);
    double t429 = -1;
    int lines = 0, during = 0;
    for (char *line = strtok(log.data, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        cr_assert_not_null(j);
        double t = cJSON_GetObjectItem(j, "t")->valuedouble;
        if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "fault")), "429") == 0)
            t429 = t;
        else if (t429 >= 0 && t < t429 + 0.9)
            during++;
        cJSON_Delete(j);
        lines++;
    }
    cr_assert(t429 >= 0);
    cr_assert_eq(during, 0, "%d requests sent during the Retry-After pause", during);
    cr_assert_eq(lines, 31);
    buf_free(&log);
    batch_free(&b);
}

Test(http_fake, oversized_reply_is_final_error)
{
    const char *args[] = {"--pad", "9000000", NULL};
    fake_start(&g_fake, args);
    llm_backend *be = make_backend(&g_fake, "openai", 2, 10, 3, NULL);
    batch b;
    batch_init(&b, 2);
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, b.n, b.out, NULL, NULL, &e), PWB_OK);
    for (size_t i = 0; i < b.n; i++) {
        cr_assert(contains(b.out[i].error, "larger than"), "%s", b.out[i].error);
        cr_assert_eq(b.out[i].retries, 0);
        cr_assert_null(b.out[i].text);
    }
    batch_free(&b);
    llm_backend_free(be);
    fake_stop(&g_fake);
}

Test(http_fake, completions_endpoint)
{
    char logpath[512];
    temp_log(logpath, sizeof logpath);
    const char *args[] = {"--answer-from", "positive,negative", "--log", logpath, NULL};
    fake_start(&g_fake, args);
    llm_backend *be = make_backend(&g_fake, "openai-completions", 4, 5, 0, NULL);
    llm_request req[2] = {{.prompt = "Review: great film\nSentiment:", .max_tokens = 1},
                          {.prompt = "Review: dull\nSentiment:", .max_tokens = 1}};
    llm_response out[2] = {{0}};
    pwb_err e;
    cr_assert_eq(be->run(be, req, 2, out, NULL, NULL, &e), PWB_OK);
    for (int i = 0; i < 2; i++) {
        cr_assert_null(out[i].error, "%s", out[i].error);
        cr_assert(strcmp(out[i].text, "positive") == 0 || strcmp(out[i].text, "negative") == 0, "%s", out[i].text);
        cr_assert_eq(out[i].tokens_in, i == 0 ? 4 : 3, "whitespace words of the prompt");
        cr_assert_eq(out[i].tokens_out, 1);
        llm_response_clear(&out[i]);
    }
    llm_backend_free(be);
    fake_stop(&g_fake);
    pwb_buf log;
    buf_init(&log);
    cr_assert_eq(file_read_all(logpath, 1 << 20, &log, &e), PWB_OK);
    unlink(logpath);
    cr_assert(strstr(log.data, "\"path\":\"/v1/completions\""), "%s", log.data);
    cr_assert(strstr(log.data, "\\\"prompt\\\":\\\"Review: great film\\\\nSentiment:\\\""), "%s", log.data);
    buf_free(&log);
}

Test(http_fake, connection_refused_fails_after_retries)
{
    /* a port that was free a moment ago */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(s, (struct sockaddr *)&a, &al);
    close(s);
    fake f = {.port = ntohs(a.sin_port)};
    snprintf(f.base, sizeof f.base, "http://127.0.0.1:%d/v1", f.port);
    llm_backend *be = make_backend(&f, "openai", 2, 2, 2, NULL);
    batch b;
    batch_init(&b, 3);
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, b.n, b.out, on_done, &b, &e), PWB_OK);
    for (size_t i = 0; i < b.n; i++) {
        cr_assert_eq(b.out[i].retries, 2);
        cr_assert(contains(b.out[i].error, "connect"), "%s", b.out[i].error);
        cr_assert(contains(b.out[i].error, "after 3 attempts"), "%s", b.out[i].error);
        cr_assert_eq(b.out[i].http_status, 0);
        cr_assert_eq(b.done_count[i], 1);
    }
    batch_free(&b);
    llm_backend_free(be);
}

/* Throughput through the whole backend at concurrency 16. PWB_HTTP_BENCH_N sets the batch size
 * (the reported figure uses 20000); the default keeps the test short. */
Test(http_fake, throughput, .timeout = 120)
{
    size_t n = 2000;
    const char *env = getenv("PWB_HTTP_BENCH_N");
    if (env && atol(env) > 0)
        n = (size_t)atol(env);
    const char *args[] = {"--answer-from", "positive,negative", NULL};
    fake_start(&g_fake, args);
    llm_backend *be = make_backend(&g_fake, "openai", 16, 10, 2, NULL);
    batch b;
    batch_init(&b, n);
    pwb_err e;
    double t0 = timer_wall();
    cr_assert_eq(be->run(be, b.req, b.n, b.out, on_done, &b, &e), PWB_OK, "%s", e.msg);
    double dt = timer_wall() - t0;
    for (size_t i = 0; i < n; i++)
        cr_assert_null(b.out[i].error, "%zu: %s", i, b.out[i].error);
    double rate = (double)n / dt;
    cr_log_info("http throughput: %zu requests in %.2f s = %.0f requests/s at concurrency 16", n, dt, rate);
    fprintf(stderr, "http throughput: %zu requests in %.2f s = %.0f requests/s at concurrency 16\n", n, dt, rate);
    cr_assert(rate > 200, "only %.0f requests/s", rate);
    batch_free(&b);
    llm_backend_free(be);
    fake_stop(&g_fake);
}
