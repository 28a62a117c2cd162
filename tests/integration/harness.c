#include "integration/harness.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "util/file.h"

const char *it_env(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && v[0] ? v : def;
}

const char *it_pwb(void) { return it_env("PWB_BIN", "build/pwb"); }
const char *it_root(void) { return it_env("PWB_ROOT", "."); }

char *it_tmpdir(void)
{
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/pwb-it-XXXXXX", it_env("TMPDIR", "/tmp"));
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void it_rmtree(const char *path)
{
    if (path && strstr(path, "pwb-it-")) /* never anything we did not make */
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *it_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void it_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
}

char *it_read(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    size_t k;
    while (s && (k = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (cap - n < 2) {
            char *t = realloc(s, cap *= 2);
            if (!t)
                free(s);
            s = t;
        }
    }
    fclose(f);
    if (s)
        s[n] = '\0';
    return s;
}

int it_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

void it_sha256(const char *path, char out[65])
{
    out[0] = '\0';
    if (it_exists(path) && file_sha256(path, out, NULL) != 0)
        out[0] = '\0';
}

int it_tiny_model(char *out, size_t cap)
{
    snprintf(out, cap, "%s/models/tinystories-656k/TinyStories-656K-Q8_0.gguf", it_env("PWB_SHARED", "../shared"));
    return it_exists(out) ? 0 : -1;
}

/* max_file > 0: the child may write no file past that many bytes (RLIMIT_FSIZE), and a write
 * past it fails with EFBIG instead of killing it (SIGXFSZ ignored, which exec keeps): a full disk
 * that needs no privilege. */
static pid_t spawn_limited(const char *const *argv, const char *out_path, const char *err_path, long max_file)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (chdir(it_root()) != 0)
        _exit(126);
    int fo = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open(err_path ? err_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fo < 0 || fe < 0)
        _exit(126);
    dup2(fo, 1);
    dup2(fe, 2);
    close(fo);
    close(fe);
    /* Criterion's workers may ignore signals; the child must see SIGINT/SIGTERM normally. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    if (max_file > 0) {
        struct rlimit rl = {(rlim_t)max_file, (rlim_t)max_file};
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(126);
    }
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

pid_t it_spawn(const char *const *argv, const char *out_path, const char *err_path)
{
    return spawn_limited(argv, out_path, err_path, 0);
}

int it_wait(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

proc_out it_run(const char *const *argv) { return it_run_limited(argv, 0); }

proc_out it_run_limited(const char *const *argv, long max_file)
{
    proc_out p = {-1, NULL, NULL};
    char *dir = it_tmpdir();
    if (!dir)
        return p;
    char *o = it_path(dir, "out"), *e = it_path(dir, "err");
    pid_t pid = spawn_limited(argv, o, e, max_file);
    p.status = pid > 0 ? it_wait(pid) : -1;
    p.out = it_read(o);
    p.err = it_read(e);
    if (!p.out)
        p.out = strdup("");
    if (!p.err)
        p.err = strdup("");
    it_rmtree(dir);
    free(o);
    free(e);
    free(dir);
    return p;
}

void proc_out_free(proc_out *p)
{
    free(p->out);
    free(p->err);
    p->out = p->err = NULL;
}

int fake_start(fake_llm *f, const char *dir, const char *const *extra)
{
    memset(f, 0, sizeof *f);
    const char *argv[64];
    int n = 0;
    argv[n++] = it_env("PWB_FAKELLM", "build/fakellm");
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--idle-exit";
    argv[n++] = "30"; /* a test that fails midway leaves no server behind for long */
    for (int i = 0; extra && extra[i] && n < 62; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    snprintf(f->out_path, sizeof f->out_path, "%s/fakellm.out", dir);
    f->pid = it_spawn(argv, f->out_path, NULL);
    if (f->pid <= 0)
        return -1;
    for (int tries = 0; tries < 500; tries++) { /* up to 5 s */
        char *s = it_read(f->out_path);
        const char *p = s ? strstr(s, "PORT ") : NULL;
        if (p && strchr(p, '\n')) {
            f->port = atoi(p + 5);
            free(s);
            snprintf(f->base_url, sizeof f->base_url, "http://127.0.0.1:%d/v1", f->port);
            return f->port > 0 ? 0 : -1;
        }
        free(s);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fake_stop(f);
    return -1;
}

void fake_stop(fake_llm *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGTERM);
        it_wait(f->pid);
        f->pid = 0;
    }
}

char *it_suite(const char *dir, const char *file, const char *dataset, const char *split, long limit,
               const fake_llm *f, int concurrency, int max_retries, const char *const *methods)
{
    char *path = it_path(dir, file);
    FILE *o = path ? fopen(path, "w") : NULL;
    if (!o) {
        free(path);
        return NULL;
    }
    fprintf(o, "{\n  \"name\": \"%s\",\n  \"seed\": 7,\n  \"datasets\": [{\"name\": \"%s\"", file, dataset);
    if (split)
        fprintf(o, ", \"split\": \"%s\"", split);
    if (limit > 0)
        fprintf(o, ", \"limit\": %ld", limit);
    fprintf(o, "}],\n  \"models\": [{\"name\": \"fake\", \"provider\": \"openai\", \"base_url\": \"%s\", "
               "\"model\": \"fake-1\", \"concurrency\": %d, \"max_retries\": %d, \"timeout_s\": 5, "
               "\"price\": {\"input\": 0.5, \"output\": 1.5}}],\n  \"methods\": [",
            f ? f->base_url : "http://127.0.0.1:9/v1", concurrency, max_retries);
    for (int i = 0; methods[i]; i++) {
        const char *eq = strchr(methods[i], '=');
        int nl = eq ? (int)(eq - methods[i]) : (int)strlen(methods[i]);
        fprintf(o, "%s{\"name\": \"%.*s\", \"template\": \"%s\"}", i ? ", " : "", nl, methods[i],
                eq ? eq + 1 : methods[i]);
    }
    fprintf(o, "]\n}\n");
    fclose(o);
    return path;
}

long it_sql_long(const char *db, const char *sql)
{
    sqlite3 *h = NULL;
    long v = -1;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(h);
        return -1;
    }
    sqlite3_busy_timeout(h, 5000);
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(h, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = (long)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(h);
    return v;
}

char *it_sql_text(const char *db, const char *sql)
{
    sqlite3 *h = NULL;
    char *v = NULL;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(h);
        return NULL;
    }
    sqlite3_busy_timeout(h, 5000);
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(h, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW &&
        sqlite3_column_text(s, 0))
        v = strdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(h);
    return v;
}
