/* `pwb serve` on loopback with TinyStories-656K, a soft prompt, a LoRA and a prefix-tuning
 * adapter, started and stopped per test: routes and error objects, limits (10 MB body, 1,000
 * connections at once, a client leaving mid-stream), bearer token, SIGTERM draining, pwb's own HTTP
 * backends against the local backend with the same adapter (rank via echo log-probabilities; chat
 * generation), the official `openai` Python client (skipped when $PWB_PYTHON, else python3,
 * cannot import openai), and a load test: concurrent clients x requests over mixed adapters, every
 * answer checked, p50/p95 latency and RSS printed (PWB_SERVE_LOAD=CLIENTSxREQUESTS, default 16x5;
 * `make bench` runs 64x20). */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "engine/engine.h"
#include "harness.h"
#include "llm/backend.h"
#include "tune/method.h"
#include "tune/peft.h"
#include "tune/train.h"
#include "util/buf.h"
#include "util/json.h"
#include "util/timer.h"

typedef struct server {
    pid_t pid;
    int port;
    char dir[512];
    char soft[600], lora[600], prefix[600];
    char url[128];
    char err_path[600];
} server;

static float *g_soft; /* the soft prompt served as "soft" */
static int g_soft_n = 4, g_dim;
/* served as "lora" and "prefix": random values (a zero LoRA B would change nothing) */
static tune_adapter g_lora, g_prefix;
static int g_tuned;

static const char *ts_path(void)
{
    static char p[1024];
    snprintf(p, sizeof p, "%s/models/tinystories-656k/TinyStories-656K-Q8_0.gguf",
             it_env("PWB_SHARED", "../shared"));
    return p;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Starts pwb serve with the extra arguments; writes the soft prompt first. */
static void server_start(server *s, const char *const *extra, const char *key_env_val)
{
    memset(s, 0, sizeof *s);
    char *d = it_tmpdir();
    snprintf(s->dir, sizeof s->dir, "%s", d);
    free(d);
    snprintf(s->soft, sizeof s->soft, "%s/soft", s->dir);
    pwb_err e = {0};
    engine *en = NULL;
    cr_assert_eq(engine_open(&en, ts_path(), NULL, &e), PWB_OK, "%s", e.msg);
    g_dim = engine_n_embd(en);
    if (!g_tuned) {
        tune_method_config mc;
        tune_method_config_default(&mc);
        mc.kind = TUNE_LORA;
        mc.lora_r = 4;
        mc.lora_targets = lora_targets_parse("q,k,v,o,gate,up,down");
        cr_assert_eq(tune_adapter_new(&g_lora, engine_model(en), &mc, 0, &e), PWB_OK, "%s", e.msg);
        tune_params tp;
        cr_assert_eq(tune_params_of(&g_lora, &tp, &e), PWB_OK, "%s", e.msg);
        for (int k = 0; k < tp.n; k++)
            for (size_t i = 0; i < tp.rows[k] * tp.cols[k]; i++)
                tp.w[k][i] = (float)sin(0.71 * (double)i + k) * 0.2f;
        tune_params_free(&tp);
        mc.kind = TUNE_PREFIX;
        cr_assert_eq(tune_adapter_new(&g_prefix, engine_model(en), &mc, 3, &e), PWB_OK, "%s", e.msg);
        for (size_t i = 0; i < (size_t)g_prefix.prompt.n_tokens * g_prefix.prompt.dim; i++)
            g_prefix.prompt.w[i] = (float)cos(0.53 * (double)i) * 0.5f;
        g_tuned = 1;
    }
    snprintf(s->lora, sizeof s->lora, "%s/lora", s->dir);
    snprintf(s->prefix, sizeof s->prefix, "%s/prefix", s->dir);
    cr_assert_eq(tune_adapter_save(s->lora, engine_model(en), &g_lora, 0, NULL, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(tune_adapter_save(s->prefix, engine_model(en), &g_prefix, 0, NULL, NULL, NULL, &e), PWB_OK, "%s",
                 e.msg);
    engine_close(en);
    peft_prompt p;
    peft_prompt_init(&p);
    p.n_tokens = (size_t)g_soft_n;
    p.dim = (size_t)g_dim;
    p.embeddings = malloc((size_t)g_soft_n * g_dim * sizeof(float));
    for (int i = 0; i < g_soft_n * g_dim; i++)
        p.embeddings[i] = (float)sin(0.37 * i) * 0.3f;
    if (!g_soft) {
        g_soft = malloc((size_t)g_soft_n * g_dim * sizeof(float));
        memcpy(g_soft, p.embeddings, (size_t)g_soft_n * g_dim * sizeof(float));
    }
    p.init = strdup("RANDOM");
    cr_assert_eq(peft_save(s->soft, &p, NULL, &e), PWB_OK, "%s", e.msg);
    peft_prompt_free(&p);
    char port_file[600], adapter[700], a_lora[700], a_prefix[700];
    snprintf(port_file, sizeof port_file, "%s/port", s->dir);
    snprintf(adapter, sizeof adapter, "soft=%s", s->soft);
    snprintf(a_lora, sizeof a_lora, "lora=%s", s->lora);
    snprintf(a_prefix, sizeof a_prefix, "prefix=%s", s->prefix);
    snprintf(s->err_path, sizeof s->err_path, "%s/serve.err", s->dir);
    const char *argv[40];
    int n = 0;
    argv[n++] = it_pwb();
    argv[n++] = "serve";
    argv[n++] = "--model";
    argv[n++] = ts_path();
    argv[n++] = "--adapter";
    argv[n++] = adapter;
    argv[n++] = "--adapter";
    argv[n++] = a_lora;
    argv[n++] = "--adapter";
    argv[n++] = a_prefix;
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--port-file";
    argv[n++] = port_file;
    argv[n++] = "--threads";
    argv[n++] = "1";
    for (int i = 0; extra && extra[i] && n < 38; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    s->pid = fork();
    if (s->pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* no server outlives a crashed test */
#endif
        if (key_env_val)
            setenv("PWB_TEST_SERVE_KEY", key_env_val, 1);
        freopen(s->err_path, "w", stderr);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 1000 && !s->port; i++) {
        char *t = it_read(port_file);
        if (t)
            s->port = atoi(t);
        free(t);
        if (!s->port)
            sleep_ms(10);
    }
    char *log = it_read(s->err_path);
    cr_assert_gt(s->port, 0, "pwb serve did not start: %s", log ? log : "");
    free(log);
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
}

/* SIGTERM, then the exit code. */
static int server_stop(server *s)
{
    int rc = -1;
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        rc = it_wait(s->pid);
        s->pid = 0;
    }
    it_rmtree(s->dir);
    return rc;
}

typedef struct resp {
    long status;
    pwb_buf body;
} resp;

static size_t sink(char *p, size_t sz, size_t n, void *ud)
{
    buf_append(&((resp *)ud)->body, p, sz * n);
    return sz * n;
}

/* One request; body NULL means GET. */
static resp http(const server *s, const char *path, const char *body, size_t body_len, const char *auth)
{
    resp r = {0};
    buf_init(&r.body);
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "%s%s", s->url, path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (auth)
        h = curl_slist_append(h, auth);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r.body.data)
        buf_puts(&r.body, "");
    return r;
}

static resp post(const server *s, const char *path, const char *body)
{
    return http(s, path, body, strlen(body), NULL);
}

/* The error object's type (malloc'd), NULL when the body is not one. */
static char *error_type(const resp *r)
{
    cJSON *j = cJSON_Parse(r->body.data);
    const cJSON *er = cJSON_GetObjectItemCaseSensitive(j, "error");
    const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(er, "type"));
    const char *m = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(er, "message"));
    char *out = t && m && *m ? strdup(t) : NULL;
    cJSON_Delete(j);
    return out;
}

static void expect_error(const server *s, const char *path, const char *body, size_t len, long status)
{
    resp r = http(s, path, body, len, NULL);
    cr_assert_eq(r.status, status, "%s: status %ld, want %ld: %.300s", path, r.status, status, r.body.data);
    char *t = error_type(&r);
    cr_assert(t, "an OpenAI error object: %.300s", r.body.data);
    free(t);
    buf_free(&r.body);
}

static void expect_healthy(const server *s)
{
    resp r = http(s, "/health", NULL, 0, NULL);
    cr_assert_eq(r.status, 200, "%s", r.body.data);
    cr_assert(strstr(r.body.data, "\"status\":\"ok\""), "%s", r.body.data);
    buf_free(&r.body);
    r = post(s, "/v1/completions", "{\"prompt\":\"Once upon a time\",\"max_tokens\":3,\"temperature\":0}");
    cr_assert_eq(r.status, 200, "%s", r.body.data);
    buf_free(&r.body);
}

Test(serve, routes_errors_and_limits, .timeout = 120)
{
    server s;
    server_start(&s, NULL, NULL);
    resp r = http(&s, "/v1/models", NULL, 0, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body.data, "\"id\":\"base\"") && strstr(r.body.data, "\"id\":\"soft\""), "%s", r.body.data);
    buf_free(&r.body);
    /* echo: the first token has no log-probability, the others do */
    r = post(&s, "/v1/completions",
             "{\"model\":\"soft\",\"prompt\":\"Once upon a time there was\",\"max_tokens\":2,\"temperature\":0,"
             "\"logprobs\":1,\"echo\":true}");
    cr_assert_eq(r.status, 200, "%s", r.body.data);
    cJSON *j = cJSON_Parse(r.body.data);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c0, "logprobs"), "token_logprobs");
    cr_assert(cJSON_IsArray(lp) && cJSON_GetArraySize(lp) > 3);
    cr_assert(cJSON_IsNull(cJSON_GetArrayItem(lp, 0)));
    cr_assert(cJSON_IsNumber(cJSON_GetArrayItem(lp, 1)));
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c0, "text"));
    cr_assert(text && strncmp(text, "Once upon a time there was", 26) == 0, "echo returns the prompt first");
    cJSON_Delete(j);
    buf_free(&r.body);
    /* errors: the OpenAI object and a 4xx, and the server keeps serving */
    expect_error(&s, "/v1/completions", "{\"prompt\": \"x\", ", 16, 400);
    expect_error(&s, "/v1/chat/completions", "{\"messages\": 3}", 15, 400);
    expect_error(&s, "/v1/completions", "{\"model\":\"nope\",\"prompt\":\"x\"}", 29, 404);
    expect_error(&s, "/v1/nothing", "{}", 2, 404);
    expect_error(&s, "/v1/completions", NULL, 0, 405);
    size_t big = 10u << 20;
    char *huge = malloc(big + 1);
    memset(huge, 'a', big);
    memcpy(huge, "{\"prompt\":\"", 11);
    memcpy(huge + big - 2, "\"}", 2);
    huge[big] = '\0';
    expect_error(&s, "/v1/completions", huge, big, 413);
    free(huge);
    expect_healthy(&s);
    cr_assert_eq(server_stop(&s), 0);
}

Test(serve, bearer_token, .timeout = 60)
{
    server s;
    const char *extra[] = {"--api-key-env", "PWB_TEST_SERVE_KEY", NULL};
    server_start(&s, extra, "sekrit-123");
    resp r = http(&s, "/v1/models", NULL, 0, NULL);
    cr_assert_eq(r.status, 401);
    buf_free(&r.body);
    r = http(&s, "/v1/models", NULL, 0, "Authorization: Bearer wrong-123");
    cr_assert_eq(r.status, 401);
    buf_free(&r.body);
    r = http(&s, "/v1/models", NULL, 0, "Authorization: Bearer sekrit-123");
    cr_assert_eq(r.status, 200, "%s", r.body.data);
    buf_free(&r.body);
    r = http(&s, "/health", NULL, 0, NULL);
    cr_assert_eq(r.status, 200, "health needs no key");
    buf_free(&r.body);
    cr_assert_eq(server_stop(&s), 0);
}

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int send_all(int fd, const char *s)
{
    size_t n = strlen(s), off = 0;
    while (off < n) {
        ssize_t k = send(fd, s + off, n - off, MSG_NOSIGNAL);
        if (k <= 0)
            return -1;
        off += (size_t)k;
    }
    return 0;
}

Test(serve, floods_disconnects_and_drain, .timeout = 180)
{
    /* this process holds one end of every connection, the server (which inherits the limit) the
     * other: raise the descriptor limit to what the system allows */
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 1200)
        cr_skip_test("the descriptor limit (%ld) is below 1,200", (long)rl.rlim_max);
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 4096 ? 4096 : rl.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    server s;
    server_start(&s, NULL, NULL);
    /* 1,000 connections open at once, each asking for /health: every one gets an answer (200, or
     * 503 beyond the in-flight limit). Each asks as soon as it is connected: on a loaded machine
     * a full accept queue can stretch the connecting phase past the server's 30 s idle timeout,
     * which rightly closes a connection that has not asked yet. */
    enum { NC = 1000 };
    static int fds[NC];
    int opened = 0;
    for (int i = 0; i < NC; i++)
        if ((fds[i] = connect_port(s.port)) >= 0) {
            opened++;
            send_all(fds[i], "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        }
    cr_assert_eq(opened, NC);
    int ok = 0, busy = 0;
    for (int i = 0; i < NC; i++) {
        char buf[64] = {0};
        ssize_t k = recv(fds[i], buf, sizeof buf - 1, MSG_WAITALL);
        if (k > 12 && strncmp(buf, "HTTP/1.1 200", 12) == 0)
            ok++;
        else if (k > 12 && strncmp(buf, "HTTP/1.1 503", 12) == 0)
            busy++;
        close(fds[i]);
    }
    cr_log_info("1,000 connections: %d answered 200, %d answered 503", ok, busy);
    cr_assert_eq(ok + busy, NC, "every connection got an answer");
    expect_healthy(&s);
    /* a client that leaves mid-stream: its work stops, the server goes on */
    int fd = connect_port(s.port);
    const char *body = "{\"prompt\":\"Once upon a time\",\"max_tokens\":400,\"temperature\":0.8,\"stream\":true}";
    char req[512];
    snprintf(req, sizeof req,
             "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    cr_assert_eq(send_all(fd, req), 0);
    char buf[4096];
    ssize_t k = recv(fd, buf, sizeof buf - 1, 0);
    cr_assert_gt(k, 0);
    buf[k] = '\0';
    cr_assert(strstr(buf, "text/event-stream"), "%s", buf);
    close(fd);
    int idle = 0;
    for (int i = 0; i < 500 && !idle; i++) {
        resp h = http(&s, "/health", NULL, 0, NULL);
        idle = strstr(h.body.data, "\"running\":0,\"queued\":0") != NULL;
        buf_free(&h.body);
        if (!idle)
            sleep_ms(20);
    }
    cr_assert(idle, "the abandoned stream's job was cancelled");
    expect_healthy(&s);
    /* SIGTERM while a request runs: it is answered in full, then the server exits 0 */
    fd = connect_port(s.port);
    body = "{\"prompt\":\"Once upon a time\",\"max_tokens\":300,\"temperature\":0.8,\"seed\":3}";
    snprintf(req, sizeof req,
             "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    cr_assert_eq(send_all(fd, req), 0);
    /* once the server has taken it (a fixed wait loses the race on a loaded machine): in flight
     * beside the /health request asking */
    int running = 0;
    for (int i = 0; i < 500 && !running; i++) {
        resp h = http(&s, "/health", NULL, 0, NULL);
        running = h.body.data && strstr(h.body.data, "\"requests_in_flight\":2") != NULL;
        buf_free(&h.body);
        if (!running)
            sleep_ms(10);
    }
    cr_assert(running, "the request is in flight");
    kill(s.pid, SIGTERM);
    pwb_buf got;
    buf_init(&got);
    while ((k = recv(fd, buf, sizeof buf, 0)) > 0)
        buf_append(&got, buf, (size_t)k);
    close(fd);
    cr_assert(got.data && strncmp(got.data, "HTTP/1.1 200", 12) == 0, "%.200s", got.data ? got.data : "(nothing)");
    cr_assert(strstr(got.data, "\"completion_tokens\":"), "a whole reply: %.300s", got.data);
    buf_free(&got);
    int rc = it_wait(s.pid);
    s.pid = 0;
    char *log = it_read(s.err_path);
    cr_assert_eq(rc, 0, "%s", log ? log : "");
    cr_assert(log && strstr(log, "finishing 1 request"), "%s", log ? log : "");
    free(log);
    server_stop(&s);
}

/* ---- pwb's own HTTP backends against the local backend ------------------------------------ */

static llm_backend *backend(const char *provider, const char *model_id, const char *base_url, pwb_err *e)
{
    llm_config c;
    llm_config_defaults(&c);
    c.name = "t";
    c.provider = provider;
    c.model = model_id;
    c.base_url = base_url;
    c.threads = 1;
    c.max_retries = 0;
    c.concurrency = 4;
    llm_backend *b = NULL;
    cr_assert_eq(llm_backend_create(&b, &c, e), PWB_OK, "%s", e->msg);
    return b;
}

/* Whether prompt + choice tokenizes as prompt's tokens then the choice's (spaces that end the
 * prompt go to the choice, as both sides do). */
static int joint_intact(const char *prompt, const char *choice)
{
    static engine *en;
    pwb_err e = {0};
    if (!en)
        cr_assert_eq(engine_open(&en, ts_path(), NULL, &e), PWB_OK, "%s", e.msg);
    size_t pl = strlen(prompt);
    while (pl > 0 && prompt[pl - 1] == ' ')
        pl--;
    char joint[512];
    snprintf(joint, sizeof joint, "%s%s", prompt, choice);
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    tokenizer_encode(engine_tokenizer(en), prompt, pl, 1, 1, &a, &na, &e);
    tokenizer_encode(engine_tokenizer(en), joint, strlen(joint), 1, 1, &b, &nb, &e);
    int ok = a && b && nb > na && memcmp(a, b, na * sizeof *a) == 0;
    free(a);
    free(b);
    return ok;
}

Test(serve, own_backend_closes_the_loop, .timeout = 180)
{
    int n_intact = 0;
    server s;
    server_start(&s, NULL, NULL);
    pwb_err e = {0};
    char base_url[160];
    snprintf(base_url, sizeof base_url, "%s/v1", s.url);
    llm_backend *local = backend("local", ts_path(), NULL, &e);
    static const char *choices[] = {"happy.", "sad.\n", "\nThe end."};
    static const char *prompts[] = {"Once upon a time there was a girl. She was very ", "Tom lost his toy and he was",
                                    "Lily went to the park and found a dog"};
    static const char *names[] = {"base", "soft", "lora", "prefix"};
    for (int soft = 0; soft < 4; soft++) {
        llm_backend *http_b = backend("openai-completions", names[soft], base_url, &e);
        llm_request q[3];
        llm_response rl[3], rh[3];
        memset(q, 0, sizeof q);
        memset(rl, 0, sizeof rl);
        memset(rh, 0, sizeof rh);
        for (int i = 0; i < 3; i++) {
            q[i] = (llm_request){.mode = LLM_RANK, .prompt = prompts[i], .choices = choices, .n_choices = 3,
                                 .max_tokens = 1, .temperature = 0, .top_p = 1};
        }
        cr_assert_eq(http_b->run(http_b, q, 3, rh, NULL, NULL, &e), PWB_OK, "%s", e.msg);
        for (int i = 0; soft == 1 && i < 3; i++) {
            q[i].prefix_embeds = g_soft;
            q[i].n_prefix_embeds = g_soft_n;
            q[i].prefix_dim = g_dim;
        }
        for (int i = 0; soft >= 2 && i < 3; i++)
            q[i].adapter = soft == 2 ? &g_lora : &g_prefix;
        cr_assert_eq(local->run(local, q, 3, rl, NULL, NULL, &e), PWB_OK, "%s", e.msg);
        for (int i = 0; i < 3; i++) {
            cr_assert_null(rh[i].error, "%s", rh[i].error);
            cr_assert_null(rl[i].error, "%s", rl[i].error);
            int all = 1;
            for (int k = 0; k < 3; k++) {
                /* the server reads prompt + choice as one text; the local backend does too unless that
                 * changes the prompt's own tokens (then it tokenizes the choice alone) */
                if (!joint_intact(prompts[i], choices[k])) {
                    all = 0;
                    continue;
                }
                n_intact++;
                cr_assert(fabs(rh[i].choice_logprob[k] - rl[i].choice_logprob[k]) < 1e-6,
                          "%s prompt %d choice %d: served %.9f, local %.9f", names[soft], i, k, rh[i].choice_logprob[k],
                          rl[i].choice_logprob[k]);
            }
            if (all)
                cr_assert_eq(rh[i].choice, rl[i].choice, "%s prompt %d: the same prediction", names[soft], i);
            llm_response_clear(&rh[i]);
            llm_response_clear(&rl[i]);
        }
        /* generation through chat: the same text as the local engine */
        llm_backend *chat = backend("openai", names[soft], base_url, &e);
        llm_message m = {.role = "user", .content = "Once upon a time"};
        llm_request g = {.mode = LLM_GENERATE, .messages = &m, .n_messages = 1, .max_tokens = 24,
                         .temperature = 0.7, .top_p = 0.9, .seed = 5};
        llm_response gh = {0}, gl = {0};
        cr_assert_eq(chat->run(chat, &g, 1, &gh, NULL, NULL, &e), PWB_OK, "%s", e.msg);
        if (soft == 1) {
            g.prefix_embeds = g_soft;
            g.n_prefix_embeds = g_soft_n;
            g.prefix_dim = g_dim;
        }
        if (soft >= 2)
            g.adapter = soft == 2 ? &g_lora : &g_prefix;
        cr_assert_eq(local->run(local, &g, 1, &gl, NULL, NULL, &e), PWB_OK, "%s", e.msg);
        cr_assert_null(gh.error, "%s", gh.error);
        cr_assert_str_eq(gh.text, gl.text, "served '%s', local '%s'", gh.text, gl.text);
        cr_assert_eq(gh.tokens_out, gl.tokens_out);
        llm_response_clear(&gh);
        llm_response_clear(&gl);
        llm_backend_free(chat);
        llm_backend_free(http_b);
    }
    llm_backend_free(local);
    cr_log_info("%d of 36 prompt/choice pairs tokenized jointly, all equal", n_intact);
    cr_assert_geq(n_intact, 12, "enough pairs compared");
    cr_assert_eq(server_stop(&s), 0);
}

Test(serve, official_openai_client, .timeout = 120)
{
    const char *py = it_env("PWB_PYTHON", "python3");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s -c 'import openai' >/dev/null 2>&1", py);
    if (system(cmd) != 0)
        cr_skip_test("%s cannot import openai (set PWB_PYTHON to a Python that can)", py);
    server s;
    server_start(&s, NULL, NULL);
    snprintf(cmd, sizeof cmd, "%s %s/tests/integration/serve_openai.py %s/v1 2>&1", py, it_root(), s.url);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    pwb_buf out;
    buf_init(&out);
    char line[512];
    while (fgets(line, sizeof line, p))
        buf_puts(&out, line);
    int rc = pclose(p);
    cr_log_info("%s", out.data ? out.data : "");
    cr_assert_eq(rc, 0, "%s", out.data ? out.data : "");
    cr_assert(out.data && strstr(out.data, "openai client: all checks passed"), "%s", out.data ? out.data : "");
    buf_free(&out);
    cr_assert_eq(server_stop(&s), 0);
}

/* ---- load ---------------------------------------------------------------------------------- */

typedef struct load_arg {
    const server *s;
    int client, n_req;
    const char *const *want; /* expected reply text per kind */
    double *lat;
    int bad;
} load_arg;

static const char *load_body(int kind)
{
    static const char *bodies[] = {
        "{\"model\":\"base\",\"prompt\":\"Once upon a time there was a cat\",\"max_tokens\":8,\"temperature\":0}",
        "{\"model\":\"soft\",\"prompt\":\"Once upon a time there was a cat\",\"max_tokens\":8,\"temperature\":0}",
        "{\"model\":\"soft\",\"prompt\":\"Tom was sad because\",\"max_tokens\":1,\"temperature\":0,\"logprobs\":1,\"echo\":true}",
        "{\"model\":\"base\",\"messages\":[{\"role\":\"user\",\"content\":\"Lily and the dog\"}],\"max_tokens\":8,"
        "\"temperature\":0.8,\"seed\":9}",
    };
    return bodies[kind];
}

/* The part of a reply that must not vary: its text, or the echoed log-probabilities. */
static char *answer_of(const char *body)
{
    cJSON *j = cJSON_Parse(body);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(c0, "message");
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(c0, "logprobs");
    char *out = NULL;
    if (cJSON_IsObject(lp))
        out = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(lp, "token_logprobs"));
    else if (msg)
        out = strdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "content")) ?: "");
    else if (c0)
        out = strdup(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c0, "text")) ?: "");
    cJSON_Delete(j);
    return out;
}

static void *load_client(void *p)
{
    load_arg *a = p;
    for (int i = 0; i < a->n_req; i++) {
        int kind = (a->client + i) % 4;
        double t0 = timer_wall();
        resp r = post(a->s, kind == 3 ? "/v1/chat/completions" : "/v1/completions", load_body(kind));
        a->lat[i] = timer_wall() - t0;
        char *got = r.status == 200 ? answer_of(r.body.data) : NULL;
        if (!got || strcmp(got, a->want[kind]) != 0)
            a->bad++;
        free(got);
        buf_free(&r.body);
    }
    return NULL;
}

static long rss_kb(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *t = it_read(path);
    const char *p = t ? strstr(t, "VmRSS:") : NULL;
    long kb = p ? atol(p + 6) : -1;
    free(t);
    return kb;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double run_round(const server *s, int clients, int n_req, const char *const *want, double *lat, int *bad)
{
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    load_arg *args = calloc((size_t)clients, sizeof *args);
    double t0 = timer_wall();
    for (int c = 0; c < clients; c++) {
        args[c] = (load_arg){.s = s, .client = c, .n_req = n_req, .want = want, .lat = lat + (size_t)c * n_req};
        pthread_create(&th[c], NULL, load_client, &args[c]);
    }
    *bad = 0;
    for (int c = 0; c < clients; c++) {
        pthread_join(th[c], NULL);
        *bad += args[c].bad;
    }
    double wall = timer_wall() - t0;
    free(th);
    free(args);
    return wall;
}

Test(serve, load_mixed_adapters, .timeout = 600)
{
    int clients = 16, n_req = 5;
    const char *spec = getenv("PWB_SERVE_LOAD");
    if (spec && sscanf(spec, "%dx%d", &clients, &n_req) != 2)
        cr_assert_fail("PWB_SERVE_LOAD wants CLIENTSxREQUESTS, e.g. 64x20");
    cr_assert(clients >= 1 && clients <= 512 && n_req >= 1 && n_req <= 1000);
    server s;
    server_start(&s, NULL, NULL);
    /* each kind's answer, asked alone first */
    char *want[4];
    for (int k = 0; k < 4; k++) {
        resp r = post(&s, k == 3 ? "/v1/chat/completions" : "/v1/completions", load_body(k));
        cr_assert_eq(r.status, 200, "%s", r.body.data);
        want[k] = answer_of(r.body.data);
        cr_assert(want[k]);
        buf_free(&r.body);
    }
    double *lat = calloc((size_t)clients * n_req, sizeof *lat);
    int bad = 0;
    /* a warm-up round sets the memory the pool and scratch settle at; the measured round must not grow it */
    run_round(&s, clients, n_req, (const char *const *)want, lat, &bad);
    cr_assert_eq(bad, 0, "%d wrong answers in the warm-up round", bad);
    long rss0 = rss_kb(s.pid);
    double wall = run_round(&s, clients, n_req, (const char *const *)want, lat, &bad);
    long rss1 = rss_kb(s.pid);
    int n = clients * n_req;
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    double p50 = lat[n / 2], p95 = lat[(int)(n * 0.95) < n ? (int)(n * 0.95) : n - 1];
    char line[300];
    snprintf(line, sizeof line,
             "serve load: %d clients x %d requests (mixed base/soft, completions/chat/echo): %d wrong, %.1f req/s, "
             "p50 %.3f s, p95 %.3f s, RSS %ld -> %ld KiB",
             clients, n_req, bad, n / wall, p50, p95, rss0, rss1);
    cr_log_info("%s", line);
    fprintf(stderr, "%s\n", line);
    cr_assert_eq(bad, 0, "every request answered correctly");
    free(lat);
    for (int k = 0; k < 4; k++)
        free(want[k]);
#if !defined(__SANITIZE_ADDRESS__) /* AddressSanitizer's quarantine holds freed memory back */
    cr_assert_lt(rss1, rss0 + rss0 / 10 + 8192, "RSS flat: %ld -> %ld KiB", rss0, rss1);
#endif
    cr_assert_eq(server_stop(&s), 0);
}
