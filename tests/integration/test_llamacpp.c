/* A real OpenAI-compatible server: llama.cpp's, from llama-cpp-python[server] (PyPI), serving
 * SmolLM2-135M-Instruct (models/, `make model`) on loopback, started and stopped by the test.
 * Through pwb's HTTP backends: greedy chat requests (their prompt tokens against pwb's dry-run
 * count, their text against pwb's local engine), a streamed request (time to first token), and a
 * rank request over /v1/completions with echo + logprobs, after BOS text and without: against the
 * local engine's rank when the server's echo log-probabilities are aligned, else (llama-cpp-python
 * 0.3 without BOS text: shifted by one position) pwb's refusal naming the shift.
 * Skips when python3 cannot import llama_cpp.server or the model file is missing. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "llm/backend.h"
#include "llm/estimate.h"
#include "util/buf.h"
#include "util/json.h"
#include "util/timer.h"

static pid_t g_pid;
static char g_log[512];

static void server_stop(void)
{
    if (g_pid > 0) {
        kill(g_pid, SIGTERM);
        int st;
        for (int i = 0; i < 500 && waitpid(g_pid, &st, WNOHANG) == 0; i++)
            usleep(10000);
        if (waitpid(g_pid, &st, WNOHANG) == 0) {
            kill(g_pid, SIGKILL);
            waitpid(g_pid, &st, 0);
        }
    }
    g_pid = 0;
    if (g_log[0])
        unlink(g_log);
    g_log[0] = '\0';
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    return ntohs(a.sin_port);
}

static size_t sink(char *p, size_t s, size_t n, void *ud) { return s * n; }

static long http_get(const char *url)
{
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    return code;
}

static size_t keep(char *p, size_t s, size_t n, void *ud)
{
    buf_append((pwb_buf *)ud, p, s * n);
    return s * n;
}

/* Whether the server's echo is one position off, asked directly, not through pwb: the first prompt
 * token has a log-probability (nothing comes before it), or the echoed tokens end before the one it
 * generated (llama-cpp-python 0.3 without BOS text: every value is the previous position's). */
static int echo_shifted(const char *base, const char *prompt)
{
    char url[160];
    snprintf(url, sizeof url, "%s/completions", base);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "prompt", prompt);
    cJSON_AddNumberToObject(req, "max_tokens", 1);
    cJSON_AddNumberToObject(req, "temperature", 0);
    cJSON_AddNumberToObject(req, "logprobs", 1);
    cJSON_AddBoolToObject(req, "echo", 1);
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    pwb_buf out;
    buf_init(&out);
    CURL *h = curl_easy_init();
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 120000L);
    cr_assert_eq(curl_easy_perform(h), CURLE_OK);
    curl_easy_cleanup(h);
    curl_slist_free_all(hd);
    free(body);
    cJSON *j = out.data ? cJSON_Parse(out.data) : NULL;
    const cJSON *ch = j ? cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0) : NULL;
    const cJSON *tl = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "token_logprobs");
    cr_assert(cJSON_IsArray(tl) && cJSON_GetArraySize(tl) > 1, "echo reply: %s", out.data ? out.data : "");
    /* shifted: a number for the first token, or the generated token missing at the end (the
     * last echoed token is then the prompt's, not the end of the reply's text) */
    int shifted = cJSON_IsNumber(cJSON_GetArrayItem(tl, 0));
    const cJSON *tk = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "logprobs"), "tokens");
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(ch, "text"));
    const char *last = cJSON_GetStringValue(cJSON_GetArrayItem(tk, cJSON_GetArraySize(tk) - 1));
    if (text && last && strlen(last) <= strlen(text) && strcmp(text + strlen(text) - strlen(last), last) != 0)
        shifted = 1;
    cJSON_Delete(j);
    buf_free(&out);
    return shifted;
}

static const char *gguf_path(void)
{
    static char p[4096];
    const char *env = getenv("PWB_SMOLLM2_GGUF");
    if (env && *env)
        return env;
    const char *root = getenv("PWB_ROOT");
    snprintf(p, sizeof p, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", root && *root ? root : ".");
    return p;
}

/* Starts the server; fills base ("http://127.0.0.1:<port>/v1"). */
static void server_start(char *base, size_t cap)
{
    if (system("python3 -c 'import llama_cpp.server' >/dev/null 2>&1") != 0)
        cr_skip_test("python3 cannot import llama_cpp.server (pip install 'llama-cpp-python[server]')");
    const char *model = gguf_path();
    if (access(model, R_OK) != 0)
        cr_skip_test("no %s (make model)", model);
    int port = free_port();
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    const char *tmp = getenv("TMPDIR");
    snprintf(g_log, sizeof g_log, "%s/pwb-llamacpp-%d.log", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlives the test */
#endif
        int fd = open(g_log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp("python3", "python3", "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1", "--port",
               ports, "--n_threads", "1", "--n_ctx", "1024", (char *)NULL);
        _exit(127);
    }
    g_pid = pid;
    snprintf(base, cap, "http://127.0.0.1:%d/v1", port);
    char url[128];
    snprintf(url, sizeof url, "%s/models", base);
    double t0 = timer_wall();
    while (http_get(url) != 200) {
        int st;
        cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "the server exited; see its log");
        cr_assert(timer_wall() - t0 < 120, "the server did not come up in 120 s");
        usleep(200000);
    }
    cr_log_info("llama.cpp server up in %.1f s on %s", timer_wall() - t0, base);
}

TestSuite(llamacpp, .fini = server_stop, .timeout = 400);

static llm_backend *backend(llm_config *c, pwb_err *e)
{
    llm_backend *b = NULL;
    cr_assert_eq(llm_backend_create(&b, c, e), PWB_OK, "%s: %s", c->provider, e->msg);
    return b;
}

Test(llamacpp, chat_stream_and_rank_through_pwb)
{
    char base[96];
    server_start(base, sizeof base);
    pwb_err e;

    /* ---- greedy chat ---- */
    /* Questions whose first reply token leads the runner-up by more than 1 nat on llama.cpp: where
     * two are within ~0.1 ("What is the capital of France?" without "Answer in one word."), the
     * server's 8-bit activations and pwb's exact products may pick either. */
    static const char *questions[] = {"What is the capital of France? Answer in one word.", "Name three colors.",
                                      "What color is the sky on a clear day?"};
    llm_message msg[3][1];
    llm_request req[3];
    for (int i = 0; i < 3; i++) {
        msg[i][0] = (llm_message){"user", questions[i]};
        req[i] = (llm_request){.mode = LLM_GENERATE, .messages = msg[i], .n_messages = 1, .max_tokens = 24, .seed = 1};
    }
    llm_config c;
    llm_config_defaults(&c);
    c.name = "smol-http";
    c.provider = "llamacpp";
    c.base_url = base;
    c.model = "smollm2";
    c.concurrency = 2;
    c.timeout_s = 120;
    c.tokenizer = gguf_path();
    llm_backend *http = backend(&c, &e);
    llm_response out[3] = {{0}};
    double t0 = timer_wall();
    cr_assert_eq(http->run(http, req, 3, out, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    cr_log_info("3 chat requests in %.2f s", timer_wall() - t0);

    /* the dry run's count against the server's usage */
    llm_counter *ctr = NULL;
    cr_assert_eq(llm_counter_open(&ctr, &c, &e), PWB_OK, "%s", e.msg);
    for (int i = 0; i < 3; i++) {
        cr_assert_null(out[i].error, "%s", out[i].error);
        cr_assert(out[i].text && *out[i].text);
        cr_assert(out[i].tokens_out > 0 && out[i].tokens_out <= 24);
        long est = 0;
        cr_assert_eq(llm_counter_prompt_tokens(ctr, &req[i], &est, &e), PWB_OK, "%s", e.msg);
        cr_log_info("request %d: prompt tokens: server %d, pwb dry run %ld; reply: %s", i, out[i].tokens_in, est,
                    out[i].text);
        cr_assert(fabs((double)est - out[i].tokens_in) <= 0.05 * out[i].tokens_in, "estimate %ld vs %d", est,
                  out[i].tokens_in);
    }
    llm_counter_free(ctr);

    /* the local engine on the same file, greedy: the same text (the first words at least: two
     * implementations of the Q4_1 kernels may part ways after a near tie) */
    llm_config lc;
    llm_config_defaults(&lc);
    lc.name = "smol-local";
    lc.provider = "local";
    lc.model = gguf_path();
    lc.threads = 1;
    llm_backend *local = backend(&lc, &e);
    llm_response lout[3] = {{0}};
    cr_assert_eq(local->run(local, req, 3, lout, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    int same = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert_null(lout[i].error, "%s", lout[i].error);
        cr_log_info("request %d: local engine: %s", i, lout[i].text);
        cr_assert_eq(lout[i].tokens_in, out[i].tokens_in, "the same prompt tokens as the server");
        size_t k = strlen(out[i].text) < 12 ? strlen(out[i].text) : 12;
        same += strncmp(out[i].text, lout[i].text, k) == 0;
    }
    cr_assert(same >= 2, "greedy replies agree on their start for %d of 3", same);

    /* ---- streamed: time to first token ---- */
    llm_config sc = c;
    sc.stream = 1;
    llm_backend *stream = backend(&sc, &e);
    llm_response sout = {0};
    cr_assert_eq(stream->run(stream, &req[0], 1, &sout, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    cr_assert_null(sout.error, "%s", sout.error);
    cr_assert_str_eq(sout.text, out[0].text, "streamed greedy text = whole greedy text");
    cr_assert(sout.ttft_s > 0 && sout.ttft_s < sout.latency_s, "ttft %.3f latency %.3f", sout.ttft_s, sout.latency_s);
    cr_log_info("streamed: ttft %.3f s, latency %.3f s", sout.ttft_s, sout.latency_s);
    llm_response_clear(&sout);
    llm_backend_free(stream);

    /* ---- rank over /v1/completions (echo + logprobs) against the local engine ---- */
    /* Twice: after SmolLM2's BOS text, as a chat prompt starts (llama-cpp-python 0.3 then aligns
     * its prompt log-probabilities), and raw (it then scores row i's logits as token i: every
     * echoed value is the previous position's). Whichever the server does, asked directly: aligned,
     * pwb's rank must give the local engine's numbers; shifted, pwb must refuse and say why.
     * Short prompts: it sorts the whole vocabulary for every echoed token (~0.5 s each). */
    static const char *choices[] = {"positive", "negative"};
    static const char *rank_prompts[] = {"<|im_start|>A gripping, funny film. Sentiment: ",
                                         "A gripping, funny film. Sentiment: "};
    llm_config rc = c;
    rc.provider = "openai-completions";
    rc.preset = "llamacpp";
    llm_backend *rank = backend(&rc, &e);
    for (int p = 0; p < 2; p++) {
        llm_request rk = {.mode = LLM_RANK, .prompt = rank_prompts[p], .choices = choices, .n_choices = 2};
        llm_response rr = {0}, lr = {0};
        const int shifted = echo_shifted(base, rk.prompt);
        t0 = timer_wall();
        int run_rc = rank->run(rank, &rk, 1, &rr, NULL, NULL, &e);
        cr_log_info("rank %s BOS over HTTP: %.2f s (the server's echo is %s)", p ? "without" : "after",
                    timer_wall() - t0, shifted ? "shifted by one position" : "aligned");
        if (shifted) {
            const char *why = run_rc != PWB_OK ? e.msg : rr.error;
            cr_assert(why && strstr(why, "shifted by one position"), "a clear refusal, got: %s",
                      why ? why : "(none)");
            cr_log_info("pwb refused: %s", why);
        } else {
            cr_assert_eq(run_rc, PWB_OK, "%s", e.msg);
            cr_assert_null(rr.error, "%s", rr.error);
            cr_assert_eq(local->run(local, &rk, 1, &lr, NULL, NULL, &e), PWB_OK, "%s", e.msg);
            cr_assert_null(lr.error, "%s", lr.error);
            for (int k = 0; k < 2; k++) {
                cr_log_info("choice %s: llama.cpp %.4f, local engine %.4f", choices[k], rr.choice_logprob[k],
                            lr.choice_logprob[k]);
                cr_assert(fabs(rr.choice_logprob[k] - lr.choice_logprob[k]) < 0.25, "%s: %.4f vs %.4f", choices[k],
                          rr.choice_logprob[k], lr.choice_logprob[k]);
            }
            cr_assert_eq(rr.choice, lr.choice);
        }
        llm_response_clear(&rr);
        llm_response_clear(&lr);
    }
    llm_backend_free(rank);

    for (int i = 0; i < 3; i++) {
        llm_response_clear(&out[i]);
        llm_response_clear(&lout[i]);
    }
    llm_backend_free(local);
    llm_backend_free(http);
    server_stop();
}
