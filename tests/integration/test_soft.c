/* Soft prompts through the binary, on TinyStories-656K and SST-2: `pwb tune` (one shared job with
 * the runner), a suite with a soft-prompt method (dry run, training, reuse, the report's training
 * cost), and Ctrl-C in the middle of a suite's training. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "integration/harness.h"

static char g_model[1024];

static int have_model(void)
{
    snprintf(g_model, sizeof g_model, "%s/models/tinystories-656k/TinyStories-656K-Q8_0.gguf",
             it_env("PWB_SHARED", "../shared"));
    return it_exists(g_model);
}

static char *suite_with(const char *dir, const char *methods)
{
    char text[4096];
    snprintf(text, sizeof text,
             "{\"name\": \"soft-it\", \"seed\": 2, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": 30}],"
             " \"models\": [{\"name\": \"tiny\", \"provider\": \"local\", \"model\": \"%s\", \"price\": {\"cpu_hour\": 0.05}}],"
             " \"methods\": [%s]}",
             g_model, methods);
    char *path = it_path(dir, "soft.json");
    it_write(path, text);
    return path;
}

Test(soft, tune_command_trains_resumes_and_scores, .timeout = 60)
{
    if (!have_model())
        cr_skip("no %s", g_model);
    char *dir = it_tmpdir();
    char *out = it_path(dir, "prompt"), *db = it_path(dir, "t.db");
    const char *argv[] = {it_pwb(), "tune", "--model", g_model, "--dataset", "sst2", "--out", out, "--tokens", "4",
                          "--steps", "6", "--batch", "4", "--lr", "0.01", "--train-limit", "40", "--eval-n", "12",
                          "--eval-every", "3", "--test-split", "dev", "--test-limit", "20", "--baseline", "--db", db,
                          "-q", NULL};
    proc_out p = it_run(argv);
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    cr_assert(strstr(p.out, "(4 x 128, class init)"), "%s", p.out);
    cr_assert(strstr(p.out, "steps 6, examples 24"), "%s", p.out);
    cr_assert(strstr(p.out, "dev without the soft prompt (template zero-shot): accuracy"), "%s", p.out);
    cr_assert(strstr(p.out, "dev with the soft prompt: accuracy"), "%s", p.out);
    proc_out_free(&p);
    char *st = it_path(out, "adapter_model.safetensors");
    cr_assert(it_exists(st));
    cr_assert_eq(it_sql_long(db, "SELECT steps FROM soft_prompts"), 6);
    cr_assert_eq(it_sql_long(db, "SELECT train_cpu_s > 0 FROM soft_prompts"), 1, "training CPU measured");
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM train_steps"), 6);
    /* the same command continues its checkpoint (nothing left to do) */
    p = it_run(argv);
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "steps 6, examples 24") && strstr(p.out, "resumed"), "%s", p.out);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM soft_prompts"), 1);
    it_rmtree(dir);
    free(st);
    free(out);
    free(db);
    free(dir);
}

Test(soft, suite_method_trains_then_reuses, .timeout = 60)
{
    if (!have_model())
        cr_skip("no %s", g_model);
    char *dir = it_tmpdir();
    char *suite = suite_with(dir, "{\"name\": \"zs\", \"template\": \"zero-shot\", \"scoring\": \"rank\"},"
                                  " {\"name\": \"soft\", \"soft_prompt\": {\"tokens\": 4, \"steps\": 6, \"batch\": 4,"
                                  " \"lr\": 0.01, \"train_limit\": 40, \"eval_n\": 12, \"eval_every\": 3}}");
    char *db = it_path(dir, "r.db");
    proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "--dry-run", NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    cr_assert(strstr(p.out, "soft prompt sst2/tiny/soft: will train 6 steps, 24 examples (40 training, 12 held out)"),
              "%s", p.out);
    proc_out_free(&p);
    cr_assert(!it_exists(db));

    p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    cr_assert(strstr(p.out, "soft prompt sst2/tiny/soft: trained 6 steps, 24 examples"), "%s", p.out);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE method = 'soft' AND error IS NULL"), 30);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM train_steps"), 6);

    /* the report shows what it cost to make */
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "Training cost"), "%s", p.out);
    cr_assert(strstr(p.out, "| soft | soft | 4 | class | 512 |"), "%s", p.out);
    proc_out_free(&p);

    /* a new run of the suite loads the prompt */
    p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", "--fresh", NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    cr_assert(strstr(p.out, "soft prompt sst2/tiny/soft: reused the one trained before (6 steps, 24 examples, "), "%s",
              p.out);
    cr_assert(strstr(p.out, "60 from cache"), "the soft cell too: %s", p.out);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM train_steps"), 6);
    cr_assert_eq(it_sql_long(db, "SELECT count(DISTINCT soft_prompt_id) FROM cells WHERE method = 'soft'"), 1);

    /* an HTTP model cannot carry a soft prompt: a clear error, exit 3, before the database */
    char *bad = it_path(dir, "bad.json");
    it_write(bad, "{\"name\": \"b\", \"datasets\": [\"sst2\"], \"models\": [{\"name\": \"web\", \"provider\": \"openai\","
                  " \"base_url\": \"http://127.0.0.1:9/v1\", \"model\": \"m\"}], \"methods\": [{\"name\": \"soft\","
                  " \"soft_prompt\": {}}]}");
    char *db2 = it_path(dir, "none.db");
    p = it_run((const char *const[]){it_pwb(), "run", bad, "--db", db2, NULL});
    cr_assert_neq(p.status, 0);
    cr_assert(strstr(p.err, "needs") || strstr(p.err, "local model"), "%s", p.err);
    proc_out_free(&p);
    cr_assert(!it_exists(db2));
    it_rmtree(dir);
    free(bad);
    free(db2);
    free(suite);
    free(db);
    free(dir);
}

Test(soft, sweep_trains_each_point, .timeout = 60)
{
    if (!have_model())
        cr_skip("no %s", g_model);
    char *dir = it_tmpdir();
    char *suite = suite_with(dir, "{\"name\": \"soft\", \"soft_prompt\": {\"steps\": 3, \"batch\": 4, \"lr\": 0.01,"
                                  " \"train_limit\": 24, \"eval_n\": 8}, \"sweep\": {\"tokens\": [1, 3],"
                                  " \"init\": [\"random\", \"class\"]}}");
    char *db = it_path(dir, "r.db");
    proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    cr_assert(strstr(p.out, "soft prompt sst2/tiny/soft[tokens=3,init=class]: trained 3 steps"), "%s", p.out);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM soft_prompts"), 4, "a prompt per point");
    cr_assert_eq(it_sql_long(db, "SELECT count(DISTINCT artifact_path) FROM soft_prompts"), 4);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM soft_prompts WHERE n_tokens = 3 AND init = 'class'"), 1);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM train_steps"), 12);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cells WHERE sweep = 'soft' AND soft_prompt_id IS NOT NULL"), 4);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions p JOIN cells c ON c.id = p.cell_id "
                                 "WHERE c.sweep = 'soft' AND p.error IS NULL"), 120);
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "| tokens | init | n |"), "the sweep table: %s", p.out);
    cr_assert(strstr(p.out, "training time |"), "%s", p.out);
    proc_out_free(&p);
    it_rmtree(dir);
    free(suite);
    free(db);
    free(dir);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

Test(soft, sigint_during_training_then_resume, .timeout = 90)
{
    if (!have_model())
        cr_skip("no %s", g_model);
    char *dir = it_tmpdir();
    char *suite = suite_with(dir, "{\"name\": \"soft\", \"soft_prompt\": {\"tokens\": 4, \"steps\": 60, \"batch\": 4,"
                                  " \"lr\": 0.01, \"train_limit\": 40, \"eval_n\": 12, \"eval_every\": 3}}");
    char *db = it_path(dir, "r.db"), *err = it_path(dir, "err");
    proc_out d = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "--dry-run", NULL});
    cr_assert_eq(d.status, 0, "%s", d.err);
    const char *semi = strstr(d.out, "held out); ");
    cr_assert(semi, "%s", d.out);
    char folder[1024];
    snprintf(folder, sizeof folder, "%.*s", (int)strcspn(semi + 11, "\n"), semi + 11);
    proc_out_free(&d);
    char *ckpt = it_path(folder, "checkpoint.bin");
    const char *argv[] = {it_pwb(), "run", suite, "--db", db, NULL};
    pid_t pid = it_spawn(argv, NULL, err);
    for (int i = 0; i < 20000 && !it_exists(ckpt); i++)
        sleep_ms(1);
    kill(pid, SIGINT);
    int st = it_wait(pid);
    char *e = it_read(err);
    cr_assert_eq(st, 130, "exit %d: %s", st, e);
    cr_assert(e && strstr(e, "interrupted while training the soft prompt of sst2/tiny/soft"), "%s", e);
    free(e);
    long steps = it_sql_long(db, "SELECT count(*) FROM train_steps");
    cr_assert(steps >= 3 && steps < 60, "%ld steps before the stop", steps);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions"), 0);
    proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    cr_assert(strstr(p.out, "trained 60 steps, 240 examples (40 training, 12 held out), resumed"), "%s", p.out);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM train_steps"), 60);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions"), 30);
    it_rmtree(dir);
    free(ckpt);
    free(suite);
    free(db);
    free(err);
    free(dir);
}

/* LoRA and prefix tuning through `pwb tune` and a suite: PEFT folders, the same rows, reuse, cache. */
Test(soft, lora_and_prefix_tune_and_suite, .timeout = 120)
{
    if (!have_model())
        cr_skip("no %s", g_model);
    char *dir = it_tmpdir();
    char *out = it_path(dir, "lora");
    const char *argv[] = {it_pwb(), "tune", "--method", "lora", "--r", "4", "--targets", "q,v,down", "--model", g_model,
                          "--dataset", "sst2", "--out", out, "--steps", "4", "--batch", "4", "--train-limit", "24",
                          "--eval-n", "8", "--eval-every", "2", "--test-split", "dev", "--test-limit", "12", "-q", NULL};
    proc_out p = it_run(argv);
    cr_assert_eq(p.status, 0, "exit %d: %s%s", p.status, p.out, p.err);
    cr_assert(strstr(p.out, "LoRA adapter: "), "%s", p.out);
    cr_assert(strstr(p.out, "dev with the LoRA adapter: accuracy"), "%s", p.out);
    proc_out_free(&p);
    char *cfg = it_path(out, "adapter_config.json");
    char *text = it_read(cfg);
    cr_assert(text && strstr(text, "\"LORA\"") && strstr(text, "\"down_proj\""), "%s", text ? text : "");
    free(text);

    char *suite = suite_with(dir, "{\"name\": \"lo\", \"lora\": {\"r\": 2, \"steps\": 3, \"batch\": 4, \"train_limit\": 24,"
                                  " \"eval_n\": 8}}, {\"name\": \"px\", \"prefix\": {\"tokens\": 3, \"steps\": 3,"
                                  " \"batch\": 4, \"train_limit\": 24, \"eval_n\": 8}}");
    char *db = it_path(dir, "r.db");
    p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    proc_out_free(&p);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM v_predictions WHERE method IN ('lo', 'px') AND error IS NULL"),
                 60);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM soft_prompts WHERE trainable_params > 0"), 2);
    /* each cell records its method's own kind, which the report counts as tuned */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cells WHERE (method = 'lo' AND kind = 'lora')"
                                 " OR (method = 'px' AND kind = 'prefix')"),
                 2);
    /* again: both adapters reused and every answer from the cache */
    p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", "--fresh", NULL});
    cr_assert_eq(p.status, 0, "%s%s", p.out, p.err);
    cr_assert(strstr(p.out, "60 from cache"), "%s", p.out);
    proc_out_free(&p);
    it_rmtree(dir);
    free(cfg);
    free(suite);
    free(db);
    free(out);
    free(dir);
}
