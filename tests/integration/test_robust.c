/* Failing safe, end to end: pwb query's statement guard and result sets, and data pwb cannot store
 * faithfully (NUL bytes) refused with file:line and exit 3 before the database is touched. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "integration/harness.h"

static const char *const fake_labels[] = {"--prefix", "Answer: ", NULL};

static void write_bytes(const char *dir, const char *name, const char *data, size_t n)
{
    char *p = it_path(dir, name);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    fwrite(data, 1, n, f);
    fclose(f);
    free(p);
}

static void write_card(const char *dir, const char *name, const char *file, const char *format)
{
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"name\": \"%s\", \"task\": \"classification\", \"input_field\": \"text\", \"answer_field\": \"label\","
             " \"labels\": [{\"value\": \"pos\", \"verbalizer\": \"positive\"}, {\"value\": \"neg\", \"verbalizer\": "
             "\"negative\"}], \"splits\": {\"dev\": {\"file\": \"%s\", \"format\": \"%s\"%s}}}\n",
             name, file, format, strcmp(format, "jsonl") ? ", \"header\": true" : "");
    char fn[256];
    snprintf(fn, sizeof fn, "%s.json", name);
    write_bytes(dir, fn, buf, strlen(buf));
}

static proc_out query(const char *db, const char *const *extra)
{
    const char *argv[16] = {it_pwb(), "query", "--db", db};
    int n = 4;
    for (int i = 0; extra[i] && n < 15; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    return it_run(argv);
}

Test(robust, query_guard_result_sets_and_nul_data, .timeout = 120)
{
    char *dir = it_tmpdir();
    fake_llm f;
    cr_assert_eq(fake_start(&f, dir, fake_labels), 0);
    const char good[] = "{\"text\": \"a fine film\", \"label\": \"pos\"}\n{\"text\": \"dull\", \"label\": \"neg\"}\n";
    write_bytes(dir, "good.jsonl", good, sizeof good - 1);
    write_card(dir, "good", "good.jsonl", "jsonl");
    char *db = it_path(dir, "results.db");
    const char *const zs[] = {"zero-shot=zero-shot", NULL};
    char *suite = it_suite(dir, "good-suite.json", "good", NULL, 0, &f, 2, 0, zs);
    proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    proc_out_free(&p);
    char before[65], after[65];
    it_sha256(db, before);

    /* refused statements: exit 3, one line, nothing printed, the database unchanged */
    const char *refused[] = {"/* harmless */ BEGIN", "-- note\nBEGIN EXCLUSIVE", "SELECT 1; /**/ COMMIT",
                             "SELECT 1; DELETE FROM predictions", "SELECT fts3_tokenizer('simple')", "SELEC 1"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        p = query(db, (const char *const[]){"--", refused[i], NULL});
        cr_expect_eq(p.status, 3, "'%s': exit %d, %s", refused[i], p.status, p.err);
        cr_expect_str_eq(p.out, "", "'%s' printed rows before the refusal: %s", refused[i], p.out);
        proc_out_free(&p);
    }
    it_sha256(db, after);
    cr_assert_str_eq(before, after);

    /* two result sets with different columns, in every format */
    const char *two = "SELECT 1 AS alpha; SELECT 2 AS beta, 3 AS gamma";
    const char *formats[] = {"table", "md", "csv", "json"};
    for (size_t i = 0; i < 4; i++) {
        p = query(db, (const char *const[]){"-f", formats[i], two, NULL});
        cr_expect_eq(p.status, 0, "%s: exit %d, %s", formats[i], p.status, p.err);
        cr_expect(strstr(p.out, "alpha") && strstr(p.out, "beta") && strstr(p.out, "gamma"), "%s: %s", formats[i],
                  p.out);
        proc_out_free(&p);
    }
    p = query(db, (const char *const[]){"-f", "json", two, NULL});
    cr_assert(strstr(p.out, "\"beta\": \"2\"") || strstr(p.out, "\"beta\": 2") || strstr(p.out, "\"beta\":"), "%s", p.out);
    proc_out_free(&p);

    /* a time limit: exit 6 */
    p = query(db, (const char *const[]){"--timeout", "0.3",
                                        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT count(*) FROM c",
                                        NULL});
    cr_assert_eq(p.status, 6, "exit %d: %s", p.status, p.err);
    proc_out_free(&p);
    p = query(db, (const char *const[]){"--timeout", "nan", "SELECT 1", NULL});
    cr_assert_eq(p.status, 2, "exit %d: %s", p.status, p.err);
    proc_out_free(&p);

    /* NUL bytes in the data: exit 3 naming file:line, the database untouched */
    static const struct {
        const char *name, *file, *format, *data;
        size_t len;
        const char *where;
    } nul[] = {
        {"nj", "nj.jsonl", "jsonl", "{\"text\": \"ok\", \"label\": \"pos\"}\n{\"text\": \"a\\u0000b\", \"label\": \"neg\"}\n", 0,
         "nj.jsonl:2:"},
        {"nr", "nr.jsonl", "jsonl", "{\"text\": \"a\0b\", \"label\": \"neg\"}\n", 33, "nr.jsonl:1:"},
        {"nt", "nt.tsv", "tsv", "text\tlabel\nfine\tpos\nba\0d\tneg\n", 26, "nt.tsv:3:"},
        {"nc", "nc.csv", "csv", "text,label\n\"fi\0ne\",pos\n", 22, "nc.csv:2:"},
    };
    for (size_t i = 0; i < sizeof nul / sizeof nul[0]; i++) {
        write_bytes(dir, nul[i].file, nul[i].data, nul[i].len ? nul[i].len : strlen(nul[i].data));
        write_card(dir, nul[i].name, nul[i].file, nul[i].format);
        char sf[64];
        snprintf(sf, sizeof sf, "%s-suite.json", nul[i].name);
        char *s = it_suite(dir, sf, nul[i].name, NULL, 0, &f, 2, 0, zs);
        p = it_run((const char *const[]){it_pwb(), "run", s, "--db", db, NULL});
        cr_expect_eq(p.status, 3, "%s: exit %d, %s", nul[i].file, p.status, p.err);
        cr_expect(strstr(p.err, nul[i].where) && strstr(p.err, "NUL"), "%s: %s", nul[i].file, p.err);
        proc_out_free(&p);
        free(s);
    }
    it_sha256(db, after);
    cr_assert_str_eq(before, after);
    fake_stop(&f);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}

/* From any folder, with no data or template path exported, pwb finds the checkout's cards,
 * templates, suites and the build's data folder. */
Test(robust, works_from_any_folder_without_exports, .timeout = 120)
{
    char *dir = it_tmpdir();
    char root[4096], suite[4200];
    cr_assert_not_null(realpath(it_root(), root));
    snprintf(suite, sizeof suite, "%s/suites/demo.json", root);
    /* it_run starts pwb in $PWB_ROOT: here, a folder that is not the checkout */
    setenv("PWB_ROOT", dir, 1);
    unsetenv("PWB_DATA_PATH");
    unsetenv("PWB_TEMPLATE_PATH");
    const char *const *cmds[] = {
        (const char *const[]){it_pwb(), "dataset", "show", "sst2", NULL},
        (const char *const[]){it_pwb(), "dataset", "list", NULL},
        (const char *const[]){it_pwb(), "template", "check", NULL},
        (const char *const[]){it_pwb(), "template", "show", "role", NULL},
        (const char *const[]){it_pwb(), "run", suite, "--dry-run", "--db", "x.db", NULL},
        (const char *const[]){it_pwb(), "run", "suites/demo.json", "--dry-run", "--db", "x.db", NULL},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        proc_out p = it_run(cmds[i]);
        cr_expect_eq(p.status, 0, "pwb %s %s: exit %d: %s", cmds[i][1], cmds[i][2], p.status, p.err);
        proc_out_free(&p);
    }
    /* the search path names each folder once, however often it is spelled */
    char dp[3 * 4096 + 64];
    snprintf(dp, sizeof dp, "%s/datasets:%s/datasets/:%s/suites/../datasets", root, root, root);
    setenv("PWB_DATA_PATH", dp, 1);
    proc_out p = it_run((const char *const[]){it_pwb(), "dataset", "show", "no-such-card", NULL});
    cr_assert_eq(p.status, 3, "%s", p.err);
    char own[4200];
    snprintf(own, sizeof own, "%s/datasets", root);
    const char *first = strstr(p.err, own);
    cr_assert(first && !strstr(first + 1, own), "%s", p.err);
    proc_out_free(&p);
    it_rmtree(dir);
    free(dir);
}

/* Misspellings get a suggestion; an unknown suite key its file:line. */
Test(robust, did_you_mean, .timeout = 60)
{
    char *dir = it_tmpdir();
    char *suite = it_path(dir, "s.json");
    it_write(suite, "{\n  \"name\": \"x\",\n  \"seedd\": 1,\n  \"datasets\": [{\"name\": \"sst2\"}],\n"
                    "  \"models\": [], \"methods\": []\n}\n");
    const struct {
        const char *const *argv;
        int status;
        const char *want;
    } cases[] = {
        {(const char *const[]){"rn", NULL}, 2, "did you mean 'run'"},
        {(const char *const[]){"query", "--formt", "csv", "SELECT 1", NULL}, 2, "did you mean --format"},
        {(const char *const[]){"dataset", "show", "sst22", NULL}, 3, "did you mean 'sst2'"},
        {(const char *const[]){"template", "show", "rol", NULL}, 3, "did you mean 'role'"},
        {(const char *const[]){"run", "SUITE", "--dry-run", NULL}, 3, "s.json:3: unknown field 'seedd' (did you mean 'seed'?)"},
        {(const char *const[]){"generate", "--model", "models/SmolLM2-135M-Instruct.Q9.gguf", "--prompt", "x", NULL}, 3,
         "make model"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[16] = {it_pwb()};
        int n = 1;
        for (int k = 0; cases[i].argv[k] && n < 15; k++)
            argv[n++] = strcmp(cases[i].argv[k], "SUITE") ? cases[i].argv[k] : suite;
        argv[n] = NULL;
        proc_out p = it_run(argv);
        cr_expect_eq(p.status, cases[i].status, "case %zu: exit %d: %s", i, p.status, p.err);
        cr_expect(strstr(p.err, cases[i].want), "case %zu: no \"%s\" in: %s", i, cases[i].want, p.err);
        proc_out_free(&p);
    }
    it_rmtree(dir);
    free(suite);
    free(dir);
}

/* A full disk is exit 1 with a message that says so: for the database (here a file size limit,
 * which needs no privilege: SQLite's write fails as on a full disk) what was committed stays and a
 * rerun completes; for the output, /dev/full. */
Test(robust, full_disk_exits_1_and_keeps_what_was_written, .timeout = 120)
{
    char *dir = it_tmpdir();
    fake_llm f;
    cr_assert_eq(fake_start(&f, dir, fake_labels), 0);
    char *suite = it_suite(dir, "full.json", "sst2", "dev", 300, &f, 4, 0,
                           (const char *const[]){"zero-shot=zero-shot", "role=role", NULL});
    char *db = it_path(dir, "full.db");
    const char *const run[] = {it_pwb(), "run", suite, "--db", db, "-q", "--chunk", "16", NULL};
    proc_out p = it_run_limited(run, 640 * 1024);
    cr_assert_eq(p.status, 1, "exit %d (1: a full disk): %s", p.status, p.err);
    cr_assert(strstr(p.err, "cannot write (no space left"), "%s", p.err);
    proc_out_free(&p);
    long kept = it_sql_long(db, "SELECT count(*) FROM predictions");
    cr_log_info("file size limit 640 KiB: %ld of 600 predictions kept", kept);
    cr_assert(kept > 0 && kept < 600, "kept %ld", kept);
    p = it_run(run);
    cr_assert_eq(p.status, 0, "exit %d: %s", p.status, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions"), 600);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM (SELECT 1 FROM predictions GROUP BY cell_id, row "
                                 "HAVING count(*) > 1)"), 0);
    /* output to a full device (/dev/full: every write fails with ENOSPC) */
    if (it_exists("/dev/full")) {
        char *err = it_path(dir, "query.err");
        pid_t q = it_spawn((const char *const[]){it_pwb(), "query", "--db", db, "SELECT * FROM predictions", NULL},
                           "/dev/full", err);
        cr_assert_eq(it_wait(q), 1, "pwb query > /dev/full: %s", it_read(err));
        free(err);
    }
    fake_stop(&f);
    it_rmtree(dir);
    free(db);
    free(suite);
    free(dir);
}

/* pwb generate says why it failed: a prompt longer than the model's context. */
Test(robust, generate_says_the_prompt_exceeds_the_context, .timeout = 60)
{
    char model[1024];
    if (it_tiny_model(model, sizeof model))
        cr_skip("no %s", model);
    size_t n = 40000;
    char *prompt = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        prompt[i] = "once upon a time "[i % 17];
    prompt[n] = '\0';
    proc_out p = it_run((const char *const[]){it_pwb(), "generate", "--model", model, "--prompt", prompt, NULL});
    cr_assert_eq(p.status, 3, "exit %d (3: bad input): %s", p.status, p.err);
    cr_assert(strstr(p.err, "tokens, longer than the context of"), "%s", p.err);
    proc_out_free(&p);
    free(prompt);
}
