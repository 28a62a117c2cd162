/* See fakesrv.h. */
#include "fakesrv.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "util/buf.h"
#include "util/timer.h"

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

void fakesrv_start(fakesrv *f, const char *const *args)
{
    const char *path = fake_path();
    if (access(path, X_OK) != 0)
        cr_skip_test("fakellm not built at %s (make build/fakellm, or set PWB_FAKELLM)", path);
    const char *argv[80];
    int n = 0;
    argv[n++] = path;
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--idle-exit";
    argv[n++] = "30"; /* an orphaned server still goes away */
    for (int i = 0; args && args[i] && n < 78; i++)
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
    snprintf(f->root, sizeof f->root, "http://127.0.0.1:%d", f->port);
}

void fakesrv_stop(fakesrv *f)
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

static size_t grab(char *p, size_t s, size_t n, void *ud)
{
    buf_append(ud, p, s * n);
    return s * n;
}

cJSON *fakesrv_stats(const fakesrv *f)
{
    char url[128];
    snprintf(url, sizeof url, "%s/stats", f->root);
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

int fakesrv_stat(const fakesrv *f, const char *key)
{
    cJSON *j = fakesrv_stats(f);
    const cJSON *v = cJSON_GetObjectItem(j, key);
    int r = cJSON_IsNumber(v) ? v->valueint : -1;
    cJSON_Delete(j);
    return r;
}

void fakesrv_temp(char *path, size_t cap, const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, cap, "%s/pwb-%s-%d-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag, (int)getpid());
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
}

void test_reqs_init(test_reqs *t, size_t n, int max_tokens)
{
    memset(t, 0, sizeof *t);
    t->n = n;
    t->req = calloc(n, sizeof *t->req);
    t->msg = calloc(2 * n, sizeof *t->msg);
    t->text = calloc(n, sizeof *t->text);
    t->out = calloc(n, sizeof *t->out);
    t->done = calloc(n, sizeof *t->done);
    cr_assert(t->req && t->msg && t->text && t->out && t->done);
    for (size_t i = 0; i < n; i++) {
        char tmp[96];
        snprintf(tmp, sizeof tmp, "question number %zu: is this fine?", i);
        t->text[i] = strdup(tmp);
        t->msg[2 * i] = (llm_message){"system", "Answer briefly."};
        t->msg[2 * i + 1] = (llm_message){"user", t->text[i]};
        t->req[i] = (llm_request){.mode = LLM_GENERATE, .messages = &t->msg[2 * i], .n_messages = 2,
                                  .max_tokens = max_tokens, .seed = i};
    }
}

void test_reqs_free(test_reqs *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->text[i]);
        llm_response_clear(&t->out[i]);
    }
    free(t->req);
    free(t->msg);
    free(t->text);
    free(t->out);
    free(t->done);
    memset(t, 0, sizeof *t);
}

void test_reqs_on_done(void *ctx, size_t i, const llm_response *r)
{
    test_reqs *t = ctx;
    cr_assert(i < t->n);
    cr_assert_eq(r, &t->out[i]);
    t->done[i]++;
}
