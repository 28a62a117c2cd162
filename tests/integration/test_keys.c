/* A planted API key, end to end: pwb run against a hostile loopback server that echoes the key
 * into replies and error bodies (fakellm --leak-auth, with faults so some errors are kept), then
 * pwb report and pwb query over the results. The key must appear in no file pwb wrote (the
 * database, its WAL, the report) and in none of pwb's output, debug logging included. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "integration/harness.h"

#define KEY "sk-pwbtest-PLANTED-4c1f9e77a0"

static int contains_key(const char *data, size_t n)
{
    return n >= sizeof KEY - 1 && memmem(data, n, KEY, sizeof KEY - 1) != NULL;
}

/* Every regular file under dir: none holds the key. Returns how many were looked at. */
static int scan_tree(const char *dir)
{
    int files = 0;
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *p = it_path(dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            files += scan_tree(p);
        } else if (lstat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            FILE *f = fopen(p, "rb");
            cr_assert_not_null(f, "%s", p);
            char *buf = malloc((size_t)st.st_size + 1);
            size_t n = fread(buf, 1, (size_t)st.st_size, f);
            fclose(f);
            /* fakellm's own request log holds the key by design: it is the server's file */
            if (!strstr(de->d_name, "fakellm") && !strstr(de->d_name, "server"))
                cr_assert(!contains_key(buf, n), "the key is in %s", p);
            free(buf);
            files++;
        }
        free(p);
    }
    closedir(d);
    return files;
}

static void no_key_in_output(const proc_out *p, const char *what)
{
    cr_assert(!contains_key(p->out, strlen(p->out)), "%s: the key is on stdout", what);
    cr_assert(!contains_key(p->err, strlen(p->err)), "%s: the key is on stderr", what);
}

Test(keys_e2e, planted_key_in_no_file_and_no_output, .timeout = 120)
{
    char *dir = it_tmpdir();
    fake_llm f;
    const char *const args[] = {"--leak-auth", "--require-key", KEY, "--answer-from", "positive,negative",
                                "--rate-500", "0.3", "--seed", "4", NULL};
    cr_assert_eq(fake_start(&f, dir, args), 0, "fakellm did not start");
    setenv("PWB_IT_PLANTED_KEY", KEY, 1);
    char *suite = it_path(dir, "keys.json");
    char text[1024];
    snprintf(text, sizeof text,
             "{\"name\": \"keys\", \"seed\": 3, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 40}],"
             " \"models\": [{\"name\": \"leaky\", \"provider\": \"openai\", \"base_url\": \"%s\", \"model\": \"m\","
             " \"api_key_env\": \"PWB_IT_PLANTED_KEY\", \"concurrency\": 4, \"max_retries\": 0, \"timeout_s\": 5}],"
             " \"methods\": [{\"name\": \"zero-shot\", \"template\": \"zero-shot\"}]}",
             f.base_url);
    it_write(suite, text);
    char *db = it_path(dir, "out.db");
    proc_out r = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "--no-cache", "-v", "-v", NULL});
    no_key_in_output(&r, "pwb run");
    /* no retries and 30% failures: some predictions carry the server's error, which quoted the key */
    long errors = it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NOT NULL AND error != ''");
    long ok = it_sql_long(db, "SELECT count(*) FROM predictions WHERE error IS NULL OR error = ''");
    cr_assert(errors > 0 && ok > 0, "errors %ld, answers %ld (exit %d): %s", errors, ok, r.status, r.err);
    long echoed = it_sql_long(db, "SELECT count(*) FROM predictions WHERE output LIKE '%[auth: %'");
    cr_assert(echoed > 0, "the server echoed the header into replies");
    proc_out_free(&r);

    char *rep = it_path(dir, "report.md");
    r = it_run((const char *const[]){it_pwb(), "report", "--db", db, "-o", rep, "-v", "-v", NULL});
    no_key_in_output(&r, "pwb report");
    proc_out_free(&r);
    r = it_run((const char *const[]){it_pwb(), "query", "SELECT output, error FROM predictions", "--db", db, NULL});
    no_key_in_output(&r, "pwb query");
    cr_assert(strstr(r.out, "HTTP 500"), "the errors are there, scrubbed");
    proc_out_free(&r);

    int files = scan_tree(dir);
    cr_assert(files >= 3, "looked at %d files", files);
    fake_stop(&f);
    unsetenv("PWB_IT_PLANTED_KEY");
    it_rmtree(dir);
    free(rep);
    free(db);
    free(suite);
    free(dir);
}
