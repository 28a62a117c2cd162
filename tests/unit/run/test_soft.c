/* Soft-prompt methods in suites: the settings' validation (src/run/suite.c), the response cache
 * key's soft-prompt identity (src/run/request.c), and the runner end to end on TinyStories-656K
 * and SST-2 (src/run/run.c, src/run/softjob.c): train once, reuse after, resume an interrupted
 * training, refuse bad configurations before any database write. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "run/suite.h"
#include "llm/backend.h"
#include "run/request.h"
#include "run/run.h"
#include "run/softjob.h"
#include "task/card.h"
#include "tune/softprompt.h"
#include "tune/train.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/log.h"

/* ---- the suite's soft_prompt object --------------------------------------------------------- */

#define DS "\"datasets\":[\"sst2\"]"
#define MO "\"models\":[{\"name\":\"m\",\"provider\":\"local\",\"model\":\"x.gguf\"}]"

static int parse_methods(pwb_suite *s, const char *methods, pwb_err *e)
{
    char text[4096];
    snprintf(text, sizeof text, "{\"name\":\"x\"," DS "," MO ",\"methods\":[%s]}", methods);
    suite_init(s);
    err_clear(e);
    return suite_parse(s, text, strlen(text), "suites/soft.json", e);
}

static void bad(const char *methods, const char *needle)
{
    pwb_suite s;
    pwb_err e;
    cr_assert_neq(parse_methods(&s, methods, &e), PWB_OK, "accepted: %s", methods);
    cr_assert(strstr(e.msg, needle), "'%s' lacks '%s'", e.msg, needle);
    cr_assert(!strncmp(e.msg, "suites/soft.json: ", 18), "%s", e.msg);
    suite_free(&s);
}

Test(soft_suite, settings_parse_with_defaults)
{
    pwb_suite s;
    pwb_err e;
    cr_assert_eq(parse_methods(&s,
                               "{\"name\":\"soft-20\",\"template\":\"zero-shot\",\"soft_prompt\":{\"tokens\":20,"
                               "\"init\":\"class\",\"steps\":200,\"lr\":0.01,\"batch\":8,\"train_limit\":2000,"
                               "\"eval_n\":100,\"eval_every\":50,\"optimizer\":\"adamw\",\"weight_decay\":0,"
                               "\"clip\":0.5,\"warmup\":10,\"seed\":7,\"patience\":3,\"train_split\":\"train\","
                               "\"exact\":true,\"epochs\":2}},"
                               "{\"name\":\"soft-d\",\"soft_prompt\":{}}",
                               &e),
                 PWB_OK, "%s", e.msg);
    const soft_settings *p = &s.methods[0].soft;
    cr_expect_eq(p->tokens, 20);
    cr_expect_str_eq(p->init, "class");
    cr_expect_eq(p->steps, 200);
    cr_expect_float_eq(p->lr, 0.01, 1e-12);
    cr_expect_eq(p->batch, 8);
    cr_expect_eq(p->train_limit, 2000);
    cr_expect_eq(p->eval_n, 100);
    cr_expect_eq(p->eval_every, 50);
    cr_expect_str_eq(p->optimizer, "adamw");
    cr_expect_float_eq(p->weight_decay, 0, 1e-12);
    cr_expect_float_eq(p->clip, 0.5, 1e-12);
    cr_expect_eq(p->warmup, 10);
    cr_expect_eq(p->seed, 7);
    cr_expect_eq(p->patience, 3);
    cr_expect_str_eq(p->train_split, "train");
    cr_expect_eq(p->exact, 1);
    cr_expect_float_eq(p->epochs, 2, 1e-12);
    cr_expect_eq(p->scale_parameter, 0);
    cr_expect_str_eq(s.methods[0].scoring, "rank", "a soft prompt ranks its labels by default");
    const soft_settings *d = &s.methods[1].soft;
    cr_expect_eq(d->tokens, 20);
    cr_expect_str_eq(d->init, "class");
    cr_expect_eq(d->steps, 0);
    cr_expect_eq(d->batch, 8);
    cr_expect(d->lr < 0, "the optimizer's rate");
    cr_expect_eq(d->eval_n, 200);
    cr_expect_eq(d->seed, 1);
    cr_expect_eq(d->scale_parameter, 0, "absolute steps by default");
    suite_free(&s);
    cr_assert_eq(parse_methods(&s, "{\"name\":\"s\",\"soft_prompt\":{\"lr\":0.1,\"scale_parameter\":true}}", &e), PWB_OK,
                 "%s", e.msg);
    cr_expect_eq(s.methods[0].soft.scale_parameter, 1);
    cr_expect_null(s.methods[1].template_path, "zero-shot is the runner's default");
    suite_free(&s);

    /* a sweep's points are validated one by one */
    cr_assert_eq(parse_methods(&s, "{\"name\":\"s\",\"soft_prompt\":{\"steps\":5},\"sweep\":{\"tokens\":[1,5],"
                                   "\"init\":[\"random\",\"vocab\"]}}",
                               &e),
                 PWB_OK, "%s", e.msg);
    cr_assert_eq(s.n_methods, 4);
    cr_expect_eq(s.methods[2].soft.tokens, 5);
    cr_expect_str_eq(s.methods[2].soft.init, "random");
    cr_expect_eq(s.methods[2].soft.steps, 5);
    suite_free(&s);
}

Test(soft_suite, bad_settings_name_file_and_field)
{
    bad("{\"name\":\"s\",\"soft_prompt\":{\"tokns\":20}}", "methods[0].soft_prompt.unknown field 'tokns'");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"tokens\":0}}", "methods[0].soft_prompt.tokens must be an integer from 1");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"tokens\":5000}}", "tokens must be an integer from 1 to 4096");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"tokens\":2.5}}", "tokens must be an integer");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"init\":\"zeros\"}}", "init 'zeros' is not random, vocab, class or text");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"init\":\"text\"}}", "init_text is required with init \"text\"");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"optimizer\":\"sgd\"}}", "optimizer 'sgd' is not adafactor or adamw");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"lr\":0}}", "soft_prompt.lr must be a number");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"lr\":\"fast\"}}", "soft_prompt.lr must be a number");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"batch\":0}}", "soft_prompt.batch must be an integer from 1 to 1024");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"steps\":-1}}", "soft_prompt.steps must be an integer");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"train_split\":\"\"}}", "train_split must be a non-empty string");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"exact\":\"yes\"}}", "exact must be true or false");
    bad("{\"name\":\"s\",\"soft_prompt\":{\"optimizer\":\"adamw\",\"scale_parameter\":true}}",
        "scale_parameter is an Adafactor setting (optimizer is adamw)");
    bad("{\"name\":\"s\",\"lora\":{\"scale_parameter\":true}}", "scale_parameter is an Adafactor setting");
    bad("{\"name\":\"s\",\"soft_prompt\":{},\"sweep\":{\"colour\":[1,2]}}", "sweep.colour is not a soft_prompt setting");
    bad("{\"name\":\"s\",\"soft_prompt\":{},\"sweep\":{\"lr\":[0.1,0]}}", "(point s[lr=0]).soft_prompt.lr must be");
}

/* ---- the cache key --------------------------------------------------------------------------- */

Test(soft_suite, cache_key_names_the_soft_prompt)
{
    llm_config c;
    llm_config_defaults(&c);
    c.provider = "local";
    c.model = "models/m.gguf";
    const llm_message msgs[] = {{"user", "Review: fine.\nSentiment:"}};
    const char *choices[] = {"negative", "positive"};
    llm_request r;
    memset(&r, 0, sizeof r);
    r.mode = LLM_RANK;
    r.messages = msgs;
    r.n_messages = 1;
    r.choices = choices;
    r.n_choices = 2;
    r.top_p = 1;
    float v[8] = {0};
    char hard[65], soft_a[65], soft_b[65], soft_a2[65];
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(req_cache_key(&c, &r, hard, &b), 0);
    cr_assert_null(strstr(b.data, "soft"), "a hard prompt's key is what it was: %s", b.data);
    r.prefix_embeds = v;
    r.n_prefix_embeds = 2;
    r.prefix_dim = 4;
    cr_expect(!req_cacheable(&r), "vectors without an identity are never cached");
    r.prefix_id = "aaaa";
    cr_expect(req_cacheable(&r));
    cr_assert_eq(req_cache_key(&c, &r, soft_a, &b), 0);
    cr_assert(strstr(b.data, "\"soft_prompt\":\"aaaa\""), "%s", b.data);
    r.prefix_id = "bbbb";
    cr_assert_eq(req_cache_key(&c, &r, soft_b, &b), 0);
    r.prefix_id = "aaaa";
    cr_assert_eq(req_cache_key(&c, &r, soft_a2, &b), 0);
    cr_expect_str_neq(hard, soft_a);
    cr_expect_str_neq(soft_a, soft_b);
    cr_expect_str_eq(soft_a, soft_a2);
    buf_free(&b);
}

/* ---- the runner ------------------------------------------------------------------------------ */

static char g_model[2048], g_data[2048], g_cards[2048], g_tpls[2048];

static int env_paths(void)
{
    const char *sh = getenv("PWB_SHARED"), *root = getenv("PWB_ROOT");
    root = root && *root ? root : ".";
    char shared[1024];
    if (sh && *sh)
        snprintf(shared, sizeof shared, "%s", sh);
    else
        snprintf(shared, sizeof shared, "%s/../shared", root);
    snprintf(g_model, sizeof g_model, "%s/models/tinystories-656k/TinyStories-656K-Q8_0.gguf", shared);
    snprintf(g_data, sizeof g_data, "%s/datasets", shared);
    snprintf(g_cards, sizeof g_cards, "%s/datasets", root);
    snprintf(g_tpls, sizeof g_tpls, "%s/templates", root);
    return file_exists(g_model) && file_exists(g_data);
}

static char *tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    char buf[512];
    snprintf(buf, sizeof buf, "%s/pwb-soft-XXXXXX", t && *t ? t : "/tmp");
    char *d = mkdtemp(buf);
    cr_assert_not_null(d);
    return strdup(d);
}

static void rmtree(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static char *write_suite(const char *dir, const char *name, const char *methods, const char *models)
{
    char *path = malloc(1024), local[2300], doc[8192];
    snprintf(path, 1024, "%s/%s", dir, name);
    snprintf(local, sizeof local, "[{\"name\": \"tiny\", \"provider\": \"local\", \"model\": \"%s\"}]", g_model);
    snprintf(doc, sizeof doc,
             "{\"name\": \"soft-test\", \"seed\": 5, \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", "
             "\"limit\": 24}], \"models\": %s, \"methods\": [%s]}",
             models ? models : local, methods);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(doc, f);
    fclose(f);
    return path;
}

static void opts_for(run_opts *o, const char *suite, const char *db)
{
    run_opts_init(o);
    o->suite_path = suite;
    o->db_path = db;
    o->card_dirs = g_cards;
    o->data_path = g_data;
    o->template_dirs = g_tpls;
}

static long sql_long(const char *db, const char *sql)
{
    sqlite3 *h = NULL;
    long v = -1;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            v = (long)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(h);
    return v;
}

static double sql_double(const char *db, const char *sql)
{
    sqlite3 *h = NULL;
    double v = NAN;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_double(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(h);
    return v;
}

#define SOFT_SETTINGS                                                                                                  \
    "\"tokens\": 4, \"init\": \"class\", \"batch\": 4, \"lr\": 0.01, \"train_limit\": 48, "            \
    "\"eval_n\": 16, \"eval_every\": 4"

Test(soft_run, trains_once_then_reuses, .timeout = 60)
{
    if (!env_paths())
        cr_skip("no TinyStories model or datasets");
    char *dir = tmpdir();
    char *suite = write_suite(dir, "s.json",
                              "{\"name\": \"zs\", \"template\": \"zero-shot\", \"scoring\": \"rank\"},"
                              "{\"name\": \"soft\", \"template\": \"zero-shot\", \"soft_prompt\": {" SOFT_SETTINGS
                              ", \"steps\": 8}},"
                              /* the same prompt, generating: it shares the trained folder */
                              "{\"name\": \"soft-gen\", \"scoring\": \"generate\", \"soft_prompt\": {" SOFT_SETTINGS
                              ", \"steps\": 8}}",
                              NULL);
    char db[1024];
    snprintf(db, sizeof db, "%s/r.db", dir);
    run_opts o;
    opts_for(&o, suite, db);
    run_result r;
    pwb_err e;
    err_clear(&e);

    /* the dry run plans the training and writes nothing */
    o.dry_run = 1;
    cr_assert_eq(run_suite(&o, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(r.n_cells, 3);
    cr_expect_eq(r.cells[0].soft, RUN_SOFT_NONE);
    cr_expect_str_eq(r.cells[2].soft_dir, r.cells[1].soft_dir, "scoring is no part of the prompt's identity");
    cr_expect_eq(r.cells[1].soft, RUN_SOFT_TRAINED, "would train");
    cr_expect_eq(r.cells[1].soft_steps, 8);
    cr_expect_eq(r.cells[1].soft_examples, 32);
    cr_expect_eq(r.cells[1].soft_n_train, 48);
    cr_expect_eq(r.cells[1].soft_n_eval, 16);
    char *art = strdup(r.cells[1].soft_dir);
    cr_expect(strstr(art, "/soft/") != NULL, "beside the database: %s", art);
    run_result_free(&r);
    cr_expect(!file_exists(db), "a dry run opens no database");
    cr_expect(!file_exists(art), "nor trains");

    /* first run: trains */
    o.dry_run = 0;
    cr_assert_eq(run_suite(&o, &r, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(r.cells[1].soft, RUN_SOFT_TRAINED);
    cr_expect_eq(r.cells[1].soft_steps, 8);
    cr_expect_gt(r.cells[1].soft_seconds, 0);
    cr_expect_eq(r.cells[1].n, 24);
    cr_expect_eq(r.cells[2].soft, RUN_SOFT_REUSED, "trained by the cell before");
    cr_expect_eq(r.cells[2].n, 24);
    run_result_free(&r);
    char st[1100];
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", art);
    struct stat s1, s2;
    cr_assert_eq(stat(st, &s1), 0, "no artifact in %s", art);
    soft_prompt sp;
    cr_assert_eq(tune_load(art, 0, &sp, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(sp.n_tokens, 4);
    cr_expect_eq(sp.dim, 128, "TinyStories' hidden size");
    softprompt_free(&sp);
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM soft_prompts"), 1);
    cr_expect_gt(sql_double(db, "SELECT train_seconds FROM soft_prompts"), 0);
    cr_expect_eq(sql_long(db, "SELECT steps FROM soft_prompts"), 8);
    cr_expect_eq(sql_long(db, "SELECT examples_seen FROM soft_prompts"), 32);
    cr_expect_eq(sql_long(db, "SELECT trainable_params FROM soft_prompts"), 4 * 128);
    cr_expect_eq(sql_long(db, "SELECT artifact_bytes FROM soft_prompts"), (long)s1.st_size);
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM train_steps"), 8);
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM train_evals"), 3, "steps 0, 4 and 8");
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM cells WHERE method LIKE 'soft%' AND kind = 'soft' AND "
                              "soft_prompt_id = (SELECT id FROM soft_prompts)"),
                 2, "the cells are linked to their prompt");
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM predictions p JOIN cells c ON c.id = p.cell_id WHERE "
                              "c.method = 'soft-gen' AND p.error IS NULL AND p.output IS NOT NULL AND p.tokens_out > 0"),
                 24, "generation with the soft prompt in front");
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM predictions p JOIN cells c ON c.id = p.cell_id WHERE "
                              "c.method = 'soft' AND p.error IS NULL AND p.valid = 1 AND p.tokens_in > 0"),
                 24, "a prediction for every row");
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM predictions WHERE cached = 1"), 0,
                 "the soft cell is not answered from the hard prompt's cache entries");
    /* same rendered inputs, same token counts (virtual tokens are not counted), other answers */
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM predictions a JOIN predictions b ON a.row = b.row AND "
                              "a.cell_id < b.cell_id WHERE a.prompt_sha256 = b.prompt_sha256 AND "
                              "a.tokens_in = b.tokens_in AND a.choice_logprobs != b.choice_logprobs"),
                 24);
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM cache"), 72, "one entry per cell and row");

    /* --fresh: a new run of the same suite reuses the prompt and its cache entries */
    o.fresh = 1;
    cr_assert_eq(run_suite(&o, &r, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(r.cells[1].soft, RUN_SOFT_REUSED);
    cr_expect_eq(r.cells[1].soft_steps, 8, "from the artifact's record");
    cr_expect_eq(r.cells[1].n_cached, 24);
    cr_expect_eq(r.cells[1].n, 24);
    run_result_free(&r);
    cr_assert_eq(stat(st, &s2), 0);
    cr_expect_eq(s2.st_size, s1.st_size);
    cr_expect_eq(s2.st_mtim.tv_sec, s1.st_mtim.tv_sec, "not written again");
    cr_expect_eq(s2.st_mtim.tv_nsec, s1.st_mtim.tv_nsec, "not written again");
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM soft_prompts"), 1);
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM train_steps"), 8, "no new training");
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM cells WHERE method LIKE 'soft%' AND soft_prompt_id IS NOT NULL"), 4);

    /* another database beside it: the prompt is loaded, its row made from pwb_training.json */
    char db2[1100];
    snprintf(db2, sizeof db2, "%s/other.db", dir);
    opts_for(&o, suite, db2);
    cr_assert_eq(run_suite(&o, &r, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(r.cells[1].soft, RUN_SOFT_REUSED);
    cr_expect_eq(r.cells[1].n, 24);
    run_result_free(&r);
    cr_expect_eq(sql_long(db2, "SELECT steps FROM soft_prompts"), 8);
    cr_expect_eq(sql_long(db2, "SELECT examples_seen FROM soft_prompts"), 32);
    cr_expect_eq(sql_long(db2, "SELECT artifact_bytes FROM soft_prompts"), (long)s1.st_size);
    cr_expect(fabs(sql_double(db2, "SELECT train_seconds FROM soft_prompts") -
                   sql_double(db, "SELECT train_seconds FROM soft_prompts")) < 1e-6);
    cr_expect_eq(sql_long(db2, "SELECT count(*) FROM train_steps"), 0, "no curve: it was not trained here");
    cr_expect_eq(sql_long(db2, "SELECT count(*) FROM cells WHERE soft_prompt_id IS NOT NULL"), 2);
    opts_for(&o, suite, db);

    /* the dry run now says it will be reused */
    o.fresh = 0;
    o.dry_run = 1;
    cr_assert_eq(run_suite(&o, &r, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(r.cells[1].soft, RUN_SOFT_REUSED);
    run_result_free(&r);

    /* the folder's vectors replaced by ones of another width, then by a NaN: the run refuses the
     * prompt when it loads it, saying why, and trains it again instead of scoring with it */
    char db3[1100], other[1100];
    snprintf(other, sizeof other, "%s/other-prompt", dir);
    o.dry_run = 0;
    for (int k = 0; k < 2; k++) {
        soft_prompt w = {.n_tokens = 4, .dim = k ? 128 : 64};
        w.w = calloc((size_t)w.n_tokens * w.dim, sizeof(float));
        if (k)
            w.w[5] = NAN;
        cr_assert_eq(tune_save(other, &w, 0, NULL, NULL, NULL, &e), PWB_OK, "%s", e.msg);
        softprompt_free(&w);
        const char *files[] = {"adapter_model.safetensors", "adapter_config.json"};
        for (int f = 0; f < 2; f++) {
            char from[1200], to[1200];
            snprintf(from, sizeof from, "%s/%s", other, files[f]);
            snprintf(to, sizeof to, "%s/%s", art, files[f]);
            pwb_buf b;
            buf_init(&b);
            cr_assert_eq(file_read_all(from, 1 << 20, &b, &e), PWB_OK, "%s", e.msg);
            cr_assert_eq(file_write_atomic(to, b.data, b.len, &e), PWB_OK, "%s", e.msg);
            buf_free(&b);
        }
        snprintf(db3, sizeof db3, "%s/damaged-%d.db", dir, k);
        opts_for(&o, suite, db3);
        FILE *logf = tmpfile();
        log_set_stream(logf);
        cr_assert_eq(run_suite(&o, &r, &e), PWB_OK, "%s", e.msg);
        log_set_stream(stderr);
        cr_expect_eq(r.cells[1].soft, RUN_SOFT_TRAINED, "a damaged prompt was used");
        cr_expect_eq(r.cells[1].errors, 0);
        run_result_free(&r);
        char said[2048] = "";
        rewind(logf);
        said[fread(said, 1, sizeof said - 1, logf)] = '\0';
        fclose(logf);
        cr_expect(strstr(said, k ? "not finite" : "dimension 64, the model's hidden size is 128"), "%s", said);
        cr_assert_eq(tune_load(art, 128, &sp, &e), PWB_OK, "trained again: %s", e.msg);
        softprompt_free(&sp);
    }

    /* another length is another prompt, in its own folder */
    free(suite);
    suite = write_suite(dir, "s2.json",
                        "{\"name\": \"soft\", \"soft_prompt\": {" SOFT_SETTINGS ", \"steps\": 4}}", NULL);
    opts_for(&o, suite, db);
    o.dry_run = 1;
    cr_assert_eq(run_suite(&o, &r, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(r.cells[0].soft, RUN_SOFT_TRAINED);
    cr_expect_str_neq(r.cells[0].soft_dir, art);
    run_result_free(&r);

    free(art);
    free(suite);
    rmtree(dir);
    free(dir);
}

Test(soft_run, bad_configurations_stop_before_the_database, .timeout = 30)
{
    if (!env_paths())
        cr_skip("no TinyStories model or datasets");
    char *dir = tmpdir();
    char db[1024];
    snprintf(db, sizeof db, "%s/r.db", dir);
    struct {
        const char *methods, *models, *needle;
    } cases[] = {
        {"{\"name\": \"soft\", \"soft_prompt\": {\"tokens\": 0}}", NULL, "soft_prompt.tokens must be an integer"},
        {"{\"name\": \"soft\", \"soft_prompt\": {\"tokenz\": 4}}", NULL, "soft_prompt.unknown field 'tokenz'"},
        {"{\"name\": \"soft\", \"soft_prompt\": {\"tokens\": 4}}",
         "[{\"name\": \"web\", \"provider\": \"openai\", \"base_url\": \"http://127.0.0.1:9/v1\", \"model\": \"m\"}]",
         "method 'soft' is a soft prompt, which is trained and scored on a local model (provider local); model 'web' "
         "is provider openai"},
        {"{\"name\": \"soft\", \"soft_prompt\": {\"tokens\": 4, \"train_split\": \"nope\"}}", NULL,
         "has no split 'nope' for a soft prompt to train on"},
        {"{\"name\": \"soft\", \"template\": \"no-such-template\", \"soft_prompt\": {\"tokens\": 4}}", NULL,
         "template 'no-such-template' not found"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *suite = write_suite(dir, "bad.json", cases[i].methods, cases[i].models);
        run_opts o;
        opts_for(&o, suite, db);
        run_result r;
        pwb_err e;
        err_clear(&e);
        cr_expect_neq(run_suite(&o, &r, &e), PWB_OK, "case %zu accepted", i);
        cr_expect(strstr(e.msg, cases[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i, e.msg, cases[i].needle);
        cr_expect(strstr(e.msg, "bad.json") != NULL, "case %zu names the suite: %s", i, e.msg);
        run_result_free(&r);
        cr_expect(!file_exists(db), "case %zu wrote a database", i);
        free(suite);
    }
    char soft[1100];
    snprintf(soft, sizeof soft, "%s/soft", dir);
    cr_expect(!file_exists(soft), "nor a soft prompt folder");
    rmtree(dir);
    free(dir);
}

/* Sets *stop once the checkpoint appears (after the first evaluation of the training). */
typedef struct watcher {
    const char *path;
    volatile sig_atomic_t *stop;
    volatile int quit;
} watcher;

static void *watch(void *arg)
{
    watcher *w = arg;
    for (int i = 0; i < 20000 && !w->quit; i++) {
        if (file_exists(w->path)) {
            *w->stop = 1;
            break;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

Test(soft_run, interrupted_training_resumes, .timeout = 90)
{
    if (!env_paths())
        cr_skip("no TinyStories model or datasets");
    char *dir = tmpdir();
    char *suite = write_suite(dir, "s.json",
                              "{\"name\": \"soft\", \"soft_prompt\": {\"tokens\": 4, \"steps\": 24, \"batch\": 4, "
                              "\"lr\": 0.01, \"train_limit\": 48, \"eval_n\": 16, \"eval_every\": 4}}",
                              NULL);
    char db[1024], other[1024];
    snprintf(db, sizeof db, "%s/r.db", dir);
    snprintf(other, sizeof other, "%s/straight/r.db", dir);
    run_opts o;
    opts_for(&o, suite, db);
    run_result r;
    pwb_err e;
    err_clear(&e);
    o.dry_run = 1;
    cr_assert_eq(run_suite(&o, &r, &e), PWB_OK, "%s", e.msg);
    char ckpt[1100];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.bin", r.cells[0].soft_dir);
    char *art = strdup(r.cells[0].soft_dir);
    run_result_free(&r);

    /* stopped once the first checkpoint is written (the evaluation at step 4) */
    volatile sig_atomic_t stop = 0;
    watcher w = {ckpt, &stop, 0};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, watch, &w), 0);
    o.dry_run = 0;
    o.stop = &stop;
    int rc = run_suite(&o, &r, &e);
    w.quit = 1;
    pthread_join(th, NULL);
    cr_assert_eq(rc, PWB_EINTR, "rc %d: %s", rc, e.msg);
    cr_expect(strstr(e.msg, "interrupted while training the soft prompt"), "%s", e.msg);
    cr_expect(strstr(e.msg, "run the suite again to resume"), "%s", e.msg);
    cr_expect(r.interrupted);
    long done = r.cells[0].soft_steps;
    cr_expect(done >= 4 && done < 24, "stopped at step %ld", done);
    run_result_free(&r);
    cr_expect(file_exists(ckpt));
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM predictions"), 0, "nothing scored with half a prompt");
    cr_expect_eq(sql_long(db, "SELECT status = 'interrupted' FROM runs"), 1);

    /* the rerun continues the checkpoint */
    stop = 0;
    cr_assert_eq(run_suite(&o, &r, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(r.cells[0].soft, RUN_SOFT_TRAINED);
    cr_expect(r.cells[0].soft_resumes, "resumed from the checkpoint");
    cr_expect_eq(r.cells[0].soft_steps, 24);
    cr_expect_eq(r.cells[0].n, 24);
    run_result_free(&r);
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM train_steps"), 24, "every step once");
    cr_expect_eq(sql_long(db, "SELECT max(step) FROM train_steps"), 24);
    cr_expect_eq(sql_long(db, "SELECT steps FROM soft_prompts"), 24);

    /* the same as an uninterrupted training (another folder) */
    soft_prompt a, b;
    cr_assert_eq(tune_load(art, 0, &a, &e), PWB_OK, "%s", e.msg);
    opts_for(&o, suite, other);
    cr_assert_eq(run_suite(&o, &r, &e), PWB_OK, "%s", e.msg);
    cr_expect(!r.cells[0].soft_resumes);
    cr_assert_eq(tune_load(r.cells[0].soft_dir, 0, &b, &e), PWB_OK, "%s", e.msg);
    run_result_free(&r);
    cr_assert_eq(a.n_tokens * a.dim, b.n_tokens * b.dim);
    for (int i = 0; i < a.n_tokens * a.dim; i++)
        cr_assert_float_eq(a.w[i], b.w[i], 1e-5, "element %d", i);
    softprompt_free(&a);
    softprompt_free(&b);
    free(art);
    free(suite);
    rmtree(dir);
    free(dir);
}

Test(soft_suite, model_identity_is_its_bytes)
{
    if (!env_paths())
        cr_skip("no TinyStories model");
    char a[65], b[65], f[65], want[65];
    pwb_err e;
    cr_assert_eq(softjob_model_sha256(g_model, a, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(file_sha256(g_model, want, &e), PWB_OK);
    cr_expect_str_eq(a, want, "a file: its sha256");
    /* a Hugging Face folder: its .json and .safetensors files */
    char dir[2100];
    snprintf(dir, sizeof dir, "%s", g_model);
    *strrchr(dir, '/') = '\0';
    cr_assert_eq(softjob_model_sha256(dir, f, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(softjob_model_sha256(dir, b, &e), PWB_OK, "%s", e.msg);
    cr_expect_str_eq(f, b);
    cr_expect_str_neq(f, a);
    cr_expect_eq(strlen(f), 64);
    cr_expect_neq(softjob_model_sha256("/nonexistent/model.gguf", b, &e), PWB_OK);
}

/* ---- a template's shots during training -------------------------------------------------------- */

/* Common leading ids of two examples. */
static int common_ids(const tune_example *a, const tune_example *b)
{
    int k = 0;
    while (k < a->n_ids && k < b->n_ids && a->ids[k] == b->ids[k])
        k++;
    return k;
}

Test(soft_run, training_reads_the_shots_its_queries_read, .timeout = 30)
{
    if (!env_paths())
        cr_skip("no TinyStories model or datasets");
    pwb_err e;
    err_clear(&e);
    ds_card card;
    ds_data d;
    pwb_template few, none;
    char tp[2200];
    card_init(&card);
    cr_assert_eq(card_find(&card, "sst2", g_cards, &e), PWB_OK, "%s", e.msg);
    ds_data_init(&d);
    cr_assert_eq(dataset_load(&card, "dev", g_data, &d, &e), PWB_OK, "%s", e.msg);
    snprintf(tp, sizeof tp, "%s/few-shot.tmpl", g_tpls);
    template_init(&few);
    cr_assert_eq(template_load(&few, tp, &e), PWB_OK, "%s", e.msg);
    none = few;
    none.shots = 0;
    engine *en = NULL;
    engine_opts eo = {.n_threads = 1};
    cr_assert_eq(engine_open(&en, g_model, &eo, &e), PWB_OK, "%s", e.msg);
    chat_template ct;
    cr_assert_eq(chat_template_init(&ct, NULL, "none", &e), PWB_OK, "%s", e.msg);

    /* the rows the runner's queries get as shots, and two rows that are not among them */
    size_t shot_rows[4], idx[3];
    cr_assert_eq(template_pick_shots(&few, &card, &d, SIZE_MAX, 1, 5, shot_rows, &e), PWB_OK, "%s", e.msg);
    int n = 0;
    for (size_t r = 0; r < d.n && n < 2; r++) {
        int is_shot = 0;
        for (int k = 0; k < 4; k++)
            is_shot |= shot_rows[k] == r;
        if (!is_shot)
            idx[n++] = r;
    }
    idx[2] = shot_rows[0]; /* a training row that is itself one of the shots */
    softjob_shots sh = {.from = &d, .same = 1, .seed = 5};
    tune_example *with = NULL, *without = NULL;
    cr_assert_eq(softjob_encode(engine_model(en), &ct, &few, &sh, NULL, &card, &d, idx, 3, &with, &e), PWB_OK, "%s",
                 e.msg);
    cr_assert_eq(softjob_encode(engine_model(en), &ct, &none, NULL, NULL, &card, &d, idx, 3, &without, &e), PWB_OK,
                 "%s", e.msg);
    /* The shots add tokens, and two ordinary rows share them as one prefix longer than the
     * instruction alone. */
    for (int i = 0; i < 3; i++)
        cr_expect_gt(with[i].n_ids, without[i].n_ids + 20, "row %zu: %d vs %d ids", idx[i], with[i].n_ids,
                     without[i].n_ids);
    const int shared = common_ids(&with[0], &with[1]), bare = common_ids(&without[0], &without[1]);
    cr_expect_gt(shared, bare + 20, "shared prefix %d ids, without shots %d", shared, bare);
    /* the row that is a shot never reads itself: its shots differ from the others' */
    cr_expect_lt(common_ids(&with[2], &with[0]), shared, "a query is not its own shot");
    /* the same as encoding the query rendered by hand with those shots */
    const ds_example *shots[4];
    for (int k = 0; k < 4; k++)
        shots[k] = &d.ex[shot_rows[k]];
    tpl_prompt pr = {0};
    cr_assert_eq(template_render(&few, &card, &d.ex[idx[0]], shots, 4, &pr, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(pr.n, 1);
    cr_expect(strstr(pr.msgs[0].content, d.ex[shot_rows[1]].input) != NULL);
    chat_msg msg = {.role = pr.msgs[0].role, .content = pr.msgs[0].content};
    tune_example hand;
    const char *choices[] = {"negative", "positive"};
    cr_assert_eq(tune_encode(engine_model(en), &ct, &msg, 1, choices, 2, d.ex[idx[0]].label, &hand, &e), PWB_OK,
                 "%s", e.msg);
    cr_expect_eq(hand.n_ids, with[0].n_ids);
    cr_expect_eq(common_ids(&hand, &with[0]), hand.n_ids, "the training input is the query's rendering");
    tune_example_free(&hand);
    tpl_prompt_free(&pr);
    softjob_examples_free(with, 3);
    softjob_examples_free(without, 3);
    chat_template_free(&ct);
    engine_close(en);
    template_free(&few);
    ds_data_free(&d);
    card_free(&card);
}

Test(soft_run, a_soft_prompt_with_shots_trains_and_scores_with_them, .timeout = 90)
{
    if (!env_paths())
        cr_skip("no TinyStories model or datasets");
    char *dir = tmpdir();
    char *suite = write_suite(dir, "s.json",
                              "{\"name\": \"fs\", \"template\": \"few-shot\", \"shots\": 2, \"scoring\": \"rank\"},"
                              "{\"name\": \"soft\", \"template\": \"few-shot\", \"shots\": 0, \"soft_prompt\": {"
                              SOFT_SETTINGS ", \"steps\": 4}},"
                              "{\"name\": \"soft-shots\", \"template\": \"few-shot\", \"shots\": 2, \"soft_prompt\": {"
                              SOFT_SETTINGS ", \"steps\": 4}},"
                              "{\"name\": \"soft-scaled\", \"template\": \"few-shot\", \"shots\": 0, \"soft_prompt\": {"
                              SOFT_SETTINGS ", \"steps\": 4, \"scale_parameter\": true}}",
                              NULL);
    char db[1024];
    snprintf(db, sizeof db, "%s/r.db", dir);
    run_opts o;
    opts_for(&o, suite, db);
    run_result r;
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(run_suite(&o, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(r.n_cells, 4);
    cr_expect_eq(r.cells[2].soft, RUN_SOFT_TRAINED);
    cr_expect_str_neq(r.cells[1].soft_dir, r.cells[2].soft_dir, "the shots are part of the prompt's identity");
    cr_expect_str_neq(r.cells[1].soft_dir, r.cells[3].soft_dir, "and so is scale_parameter");
    char *r_dir_shots = strdup(r.cells[2].soft_dir);
    run_result_free(&r);
    /* scored with the shots: as many input tokens as the plain few-shot prompt, more than without */
    const double fs = sql_double(db, "SELECT avg(tokens_in) FROM v_predictions WHERE method = 'fs'");
    const double soft = sql_double(db, "SELECT avg(tokens_in) FROM v_predictions WHERE method = 'soft'");
    const double shots = sql_double(db, "SELECT avg(tokens_in) FROM v_predictions WHERE method = 'soft-shots'");
    cr_expect(fabs(shots - fs) < 1e-9, "soft-shots %.1f vs few-shot %.1f tokens in", shots, fs);
    cr_expect_gt(shots, soft + 20, "soft-shots %.1f vs soft %.1f tokens in", shots, soft);
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM v_predictions WHERE method = 'soft-shots' AND error IS NULL"),
                 24);
    /* the cell says where its shots came from (the report counts them), the prompt's record says what it reads */
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM cells WHERE method = 'soft-shots' AND shot_split = 'train'"), 1);
    cr_expect_eq(sql_long(db, "SELECT count(*) FROM cells WHERE method = 'soft' AND shot_split IS NULL"), 1);
    char rec[1200];
    snprintf(rec, sizeof rec, "%s/pwb_training.json", r_dir_shots);
    pwb_buf json;
    buf_init(&json);
    cr_assert_eq(file_read_all(rec, 1 << 20, &json, &e), PWB_OK, "%s", e.msg);
    cr_expect(json.data && strstr(json.data, "\"shots\"") && strstr(json.data, "balanced"), "%s", json.data);
    buf_free(&json);
    free(r_dir_shots);
    /* shot_pick similar gives every query its own shots: refused before the database is written */
    char *bad = write_suite(dir, "bad.json",
                            "{\"name\": \"s\", \"template\": \"few-shot\", \"shot_pick\": \"similar\", "
                            "\"soft_prompt\": {" SOFT_SETTINGS ", \"steps\": 4}}",
                            NULL);
    char db2[1024];
    snprintf(db2, sizeof db2, "%s/bad.db", dir);
    opts_for(&o, bad, db2);
    err_clear(&e);
    cr_expect_neq(run_suite(&o, &r, &e), PWB_OK);
    cr_expect(strstr(e.msg, "shot_pick similar") != NULL, "%s", e.msg);
    cr_expect(!file_exists(db2));
    free(bad);
    rmtree(dir);
    free(suite);
    free(dir);
}
