/* pwb tune: train a soft prompt (prompt tuning) for a dataset on a frozen local model and write it
 * as a PEFT folder. Examples are rendered with a template (default zero-shot) and the model's chat
 * template, exactly as the local backend's rank classification sees them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/dataset.h"
#include "bench/template.h"
#include "cli/catalog.h"
#include "cli/cli.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "store/db.h"
#include "tune/train.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/json.h"
#include "util/log.h"
#include "util/rng.h"
#include "util/sha256.h"
#include "util/str.h"
#include "util/timer.h"

typedef struct tune_cli {
    pwb_db *db;
    int64_t sp_id;
    int quiet;
    long logged;
} tune_cli;

static int on_step(void *ctx, const tune_step_info *s)
{
    tune_cli *t = ctx;
    if (t->db) {
        pwb_err e;
        if (db_train_step_insert(t->db, t->sp_id, s->step, s->loss, s->lr, s->seconds, s->examples_seen, &e))
            log_warn("tune: could not record step %ld: %s", s->step, e.msg);
    }
    return 0;
}

static int on_eval(void *ctx, const tune_eval_info *v)
{
    tune_cli *t = ctx;
    if (t->db) {
        pwb_err e;
        if (db_train_eval_insert(t->db, t->sp_id, v->step, v->accuracy, v->loss, &e))
            log_warn("tune: could not record evaluation at step %ld: %s", v->step, e.msg);
    }
    if (!t->quiet)
        fprintf(stderr, "\npwb: step %ld: held-out accuracy %.4f (n %d), loss %.4f%s\n", v->step, v->accuracy, v->n,
                v->loss, v->is_best ? " (best)" : "");
    return 0;
}

/* Renders and tokenizes the rows idx[0..n) of a split. */
static int encode_split(const model *m, const chat_template *ct, const pwb_template *tp, const ds_card *card,
                        const ds_data *d, const size_t *idx, size_t n, tune_example **out, pwb_err *e)
{
    const char **choices = calloc((size_t)card->n_labels, sizeof *choices);
    tune_example *ex = calloc(n ? n : 1, sizeof *ex);
    if (!choices || !ex) {
        free(choices);
        free(ex);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    for (int l = 0; l < card->n_labels; l++)
        choices[l] = card->labels[l].verbalizer;
    int rc = PWB_OK;
    for (size_t i = 0; rc == PWB_OK && i < n; i++) {
        const ds_example *x = &d->ex[idx[i]];
        tpl_prompt pr = {0};
        rc = template_render(tp, card, x, NULL, 0, &pr, e);
        chat_msg *msgs = rc == PWB_OK ? calloc((size_t)(pr.n > 0 ? pr.n : 1), sizeof *msgs) : NULL;
        if (rc == PWB_OK && !msgs)
            rc = err_set(e, PWB_ENOMEM, "out of memory");
        for (int k = 0; rc == PWB_OK && k < pr.n; k++)
            msgs[k] = (chat_msg){.role = pr.msgs[k].role, .content = pr.msgs[k].content};
        if (rc == PWB_OK)
            rc = tune_encode(m, ct, msgs, pr.n, choices, card->n_labels, x->label, &ex[i], e);
        if (rc != PWB_OK)
            err_prefix(e, "%s row %zu: ", d->split ? d->split : "", x->row);
        free(msgs);
        tpl_prompt_free(&pr);
    }
    free(choices);
    if (rc != PWB_OK) {
        for (size_t i = 0; i < n; i++)
            tune_example_free(&ex[i]);
        free(ex);
        return rc;
    }
    *out = ex;
    return PWB_OK;
}

static void free_examples(tune_example *ex, size_t n)
{
    for (size_t i = 0; ex && i < n; i++)
        tune_example_free(&ex[i]);
    free(ex);
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Only rows with a gold label can train or score. */
static size_t labelled_sample(const ds_data *d, long limit, uint64_t seed, size_t **idx)
{
    size_t *all = malloc((d->n ? d->n : 1) * sizeof *all);
    if (!all)
        return 0;
    size_t n = dataset_sample(d, 0, seed, all), k = 0;
    for (size_t i = 0; i < n; i++)
        if (d->ex[all[i]].label >= 0)
            all[k++] = all[i];
    if (limit > 0 && (size_t)limit < k) {
        /* a seeded choice of `limit` of them, kept in file order */
        pwb_rng r;
        rng_init(&r, seed ^ 0x7e57u);
        rng_shuffle_idx(&r, all, k);
        k = (size_t)limit;
        qsort(all, k, sizeof *all, cmp_size);
    }
    *idx = all;
    return k;
}

static int parse_double(const cli_args *a, const char *name, double def, double lo, double hi, double *out)
{
    const char *s = cli_str(a, name, NULL);
    *out = def;
    if (!s)
        return 0;
    if (str_to_double(s, out) || !(*out >= lo && *out <= hi)) {
        cli_usage_error(a->cmd, "--%s: '%s' is not a number in [%g, %g]", name, s, lo, hi);
        return -1;
    }
    return 0;
}

int cmd_tune(const cli_args *a)
{
    const char *model_path = cli_str(a, "model", NULL), *dsname = cli_str(a, "dataset", NULL);
    const char *out_dir = cli_str(a, "out", NULL);
    if (!model_path || !dsname || !out_dir) {
        cli_usage_error(a->cmd, "--model, --dataset and --out are required");
        return EXIT_PWB_USAGE;
    }
    tune_config cfg;
    tune_config_default(&cfg);
    long tokens, steps, batch, seed, train_limit, eval_n, eval_every, patience, threads, test_limit, warmup;
    double lr = -1, epochs;
    if (cli_long(a, "tokens", 20, 1, SOFTPROMPT_MAX_TOKENS, &tokens) || cli_long(a, "steps", 0, 0, 100000000L, &steps) ||
        cli_long(a, "batch", 8, 1, 1024, &batch) || cli_long(a, "seed", 1, 0, 0x7fffffffffffffffL, &seed) ||
        cli_long(a, "train-limit", 0, 0, 100000000L, &train_limit) || cli_long(a, "eval-n", 200, 0, 1000000, &eval_n) ||
        cli_long(a, "eval-every", 50, 0, 100000000L, &eval_every) || cli_long(a, "patience", 0, 0, 1000000, &patience) ||
        cli_long(a, "threads", 0, 0, 1024, &threads) || cli_long(a, "test-limit", 0, 0, 100000000L, &test_limit) ||
        cli_long(a, "warmup", 0, 0, 100000000L, &warmup) ||
        parse_double(a, "epochs", 1.0, 1e-6, 1e6, &epochs) || parse_double(a, "lr", -1, 0, 1e3, &lr))
        return EXIT_PWB_USAGE;
    const char *init_name = cli_str(a, "init", "class"), *opt_name = cli_str(a, "optimizer", "adafactor");
    const int init = softprompt_init_parse(init_name), okind = optim_parse_kind(opt_name);
    if (init < 0) {
        cli_usage_error(a->cmd, "--init: '%s' is not random, vocab, class or text", init_name);
        return EXIT_PWB_USAGE;
    }
    if (okind < 0) {
        cli_usage_error(a->cmd, "--optimizer: '%s' is not adafactor or adamw", opt_name);
        return EXIT_PWB_USAGE;
    }
    const char *init_text = cli_str(a, "init-text", NULL);
    if (init == SP_INIT_TEXT && (!init_text || !init_text[0])) {
        cli_usage_error(a->cmd, "--init text needs --init-text TEXT");
        return EXIT_PWB_USAGE;
    }
    cfg.n_tokens = (int)tokens;
    cfg.init = init;
    cfg.init_text = init_text;
    cfg.steps = steps;
    cfg.epochs = epochs;
    cfg.batch = (int)batch;
    cfg.seed = (uint64_t)seed;
    cfg.train_limit = train_limit;
    cfg.eval_n = (int)eval_n;
    cfg.eval_every = eval_every;
    cfg.patience = (int)patience;
    cfg.exact = cli_flag(a, "exact") > 0;
    optim_config_default(&cfg.opt, okind);
    if (lr >= 0)
        cfg.opt.lr = lr;
    if (warmup > 0) {
        cfg.opt.schedule = SCHED_WARMUP_LINEAR;
        cfg.opt.warmup_steps = warmup;
    }
    const char *tpl_name = cli_str(a, "template", "zero-shot");

    pwb_err e;
    err_clear(&e);
    pwb_buf path, key, ckpt, json;
    buf_init(&path);
    buf_init(&key);
    buf_init(&ckpt);
    buf_init(&json);
    pwb_template tp;
    template_init(&tp);
    ds_card card;
    card_init(&card);
    ds_data train, test;
    ds_data_init(&train);
    ds_data_init(&test);
    engine *en = NULL;
    chat_template ct = {0};
    tune_example *ex = NULL, *tex = NULL;
    size_t n_ex = 0, n_tex = 0, *idx = NULL;
    soft_prompt sp = {0};
    tune_cli tc = {.quiet = a->quiet};
    int have_ct = 0;

    int rc = catalog_template_path(tpl_name, "templates", &path, &e);
    if (!rc)
        rc = template_load(&tp, path.data, &e);
    if (!rc)
        rc = catalog_load_card(dsname, NULL, &card, &e);
    if (!rc && (card.task != DS_CLASSIFICATION && card.task != DS_MULTIPLE_CHOICE))
        rc = err_set(&e, PWB_EUNSUP, "%s: soft prompts train on label tasks (classification); this card is %s",
                     card.path, ds_task_name(card.task));
    if (!rc && card.n_labels < 2)
        rc = err_set(&e, PWB_EINVAL, "%s: needs at least two labels", card.path);
    if (!rc)
        rc = template_check(&tp, &card, &e);
    if (!rc && tp.shots > 0)
        log_warn("tune: template %s asks for %d shots; soft prompts are trained without shots", tp.name, tp.shots);
    const char *split = cli_str(a, "split", card.few_shot_split ? card.few_shot_split : "train");
    if (!rc)
        rc = dataset_load(&card, split, cli_data_path(), &train, &e);
    if (!rc) {
        /* the held-out slice comes out of the sample too */
        long want = train_limit > 0 ? train_limit + eval_n : 0;
        n_ex = labelled_sample(&train, want, (uint64_t)seed, &idx);
        if (n_ex == 0)
            rc = err_set(&e, PWB_EINVAL, "%s: split '%s' has no labelled rows", card.path, split);
    }
    engine_opts eo = {.n_threads = (int)threads};
    if (!rc)
        rc = engine_open(&en, model_path, &eo, &e);
    if (!rc) {
        rc = chat_template_init(&ct, engine_model(en)->chat_template, cli_str(a, "chat-template", NULL), &e);
        have_ct = rc == PWB_OK;
    }
    if (!rc)
        rc = encode_split(engine_model(en), &ct, &tp, &card, &train, idx, n_ex, &ex, &e);
    free(idx);
    idx = NULL;

    /* What identifies this training: the checkpoint refuses to resume any other. The length is
     * left out under a constant rate: the example stream and every update are the same whatever
     * the total, so asking a finished run for more steps continues it exactly as a longer run
     * would have gone. */
    if (!rc) {
        char hex[65], len[64] = "";
        if (warmup > 0)
            snprintf(len, sizeof len, " steps=%ld epochs=%g", steps, epochs);
        buf_printf(&key, "pwb-tune/1 model=%s dataset=%s split=%s template=%s tokens=%d init=%s init_text=%s "
                         "batch=%d optimizer=%s lr=%g warmup=%ld seed=%ld train_limit=%ld "
                         "eval_n=%ld eval_every=%ld patience=%ld exact=%d chat=%s%s",
                   model_path, card.name, split, tp.name, cfg.n_tokens, init_name, init_text ? init_text : "",
                   cfg.batch, opt_name, cfg.opt.lr, warmup, seed, train_limit, eval_n, eval_every, patience,
                   cfg.exact, chat_kind_name(ct.kind), len);
        sha256_hex(key.data, key.len, hex);
        buf_reset(&key);
        buf_puts(&key, hex);
        cfg.config_key = key.data;
        rc = file_mkdirs(out_dir, &e);
        if (!rc) {
            file_join(&ckpt, out_dir, "checkpoint.bin");
            if (cli_flag(a, "fresh"))
                remove(ckpt.data);
            cfg.checkpoint = ckpt.data;
        }
    }
    const char *db_path = cli_str(a, "db", NULL);
    if (!db_path || !db_path[0])
        db_path = getenv("PWB_DB");
    if (!rc && db_path && db_path[0]) {
        rc = db_open(&tc.db, db_path, DB_READWRITE, &e);
        db_soft_prompt row = {.config_sha256 = key.data, .model = model_path, .dataset = card.name,
                              .init = init_name, .artifact_path = out_dir, .n_tokens = cfg.n_tokens,
                              .trainable_params = (int64_t)cfg.n_tokens * engine_n_embd(en), .artifact_bytes = -1,
                              .examples_seen = -1, .steps = -1, .train_seconds = -1, .best_eval_acc = -1};
        if (!rc)
            rc = db_soft_prompt_upsert(tc.db, &row, &tc.sp_id, &e);
    }

    tune_result res;
    memset(&res, 0, sizeof res);
    if (!rc) {
        pwb_progress prog;
        long total = steps > 0 ? steps : 0;
        if (!total) {
            size_t n_eval = (size_t)eval_n > n_ex / 2 ? n_ex / 2 : (size_t)eval_n;
            size_t n_train = n_ex - n_eval;
            if (train_limit > 0 && (size_t)train_limit < n_train)
                n_train = (size_t)train_limit;
            total = (long)ceil(epochs * (double)n_train / (double)(cfg.batch < (int)n_train ? cfg.batch : (int)n_train));
        }
        progress_init(&prog, a->quiet ? NULL : stderr, "tune", total);
        if (!a->quiet)
            fprintf(stderr, "pwb: tuning %d virtual tokens (%s init) on %s/%s: %zu examples, %s lr %g, batch %d\n",
                    cfg.n_tokens, init_name, card.name, split, n_ex, opt_name, cfg.opt.lr, cfg.batch);
        cli_signals_install();
        tune_hooks hooks = {.on_step = on_step, .on_eval = on_eval, .ctx = &tc, .progress = &prog, .stop = &cli_stop};
        rc = tune_train(en, &cfg, ex, n_ex, &sp, &hooks, &res, &e);
        progress_finish(&prog);
    }
    if (!rc) {
        /* pwb's own record beside the PEFT files */
        cJSON *j = cJSON_CreateObject();
        if (j) {
            cJSON_AddStringToObject(j, "pwb_version", PWB_VERSION);
            cJSON_AddStringToObject(j, "config_sha256", key.data);
            cJSON_AddStringToObject(j, "model", model_path);
            cJSON_AddStringToObject(j, "dataset", card.name);
            cJSON_AddStringToObject(j, "split", split);
            cJSON_AddStringToObject(j, "template", tp.name);
            cJSON_AddStringToObject(j, "chat_template", chat_kind_name(ct.kind));
            cJSON_AddStringToObject(j, "init", init_name);
            if (init_text)
                cJSON_AddStringToObject(j, "init_text", init_text);
            cJSON_AddStringToObject(j, "optimizer", opt_name);
            cJSON_AddNumberToObject(j, "lr", cfg.opt.lr);
            cJSON_AddNumberToObject(j, "warmup_steps", (double)warmup);
            cJSON_AddNumberToObject(j, "batch", cfg.batch);
            cJSON_AddNumberToObject(j, "seed", (double)seed);
            cJSON_AddNumberToObject(j, "steps", (double)res.steps);
            cJSON_AddNumberToObject(j, "examples_seen", (double)res.examples_seen);
            cJSON_AddNumberToObject(j, "n_train", res.n_train);
            cJSON_AddNumberToObject(j, "n_eval", res.n_eval);
            cJSON_AddNumberToObject(j, "train_seconds", res.seconds);
            cJSON_AddNumberToObject(j, "last_loss", res.last_loss);
            if (isnan(res.best_accuracy))
                cJSON_AddNullToObject(j, "best_eval_accuracy");
            else
                cJSON_AddNumberToObject(j, "best_eval_accuracy", res.best_accuracy);
            cJSON_AddNumberToObject(j, "best_step", (double)res.best_step);
            cJSON_AddNumberToObject(j, "trainable_params", (double)sp.n_tokens * sp.dim);
            char *text = cJSON_Print(j);
            if (text) {
                buf_puts(&json, text);
                buf_putc(&json, '\n');
                cJSON_free(text);
            }
            cJSON_Delete(j);
        }
        rc = tune_save(out_dir, &sp, init, init_text, model_path, json.data, &e);
    }
    if (!rc && tc.db) {
        pwb_buf st;
        buf_init(&st);
        file_join(&st, out_dir, "adapter_model.safetensors");
        pwb_buf tmp;
        buf_init(&tmp);
        int64_t bytes = file_read_all(st.data, 64u << 20, &tmp, NULL) == PWB_OK ? (int64_t)tmp.len : -1;
        buf_free(&tmp);
        buf_free(&st);
        db_soft_prompt row = {.config_sha256 = key.data, .model = model_path, .dataset = card.name,
                              .init = init_name, .artifact_path = out_dir, .n_tokens = sp.n_tokens,
                              .trainable_params = (int64_t)sp.n_tokens * sp.dim, .artifact_bytes = bytes,
                              .examples_seen = res.examples_seen, .steps = res.steps, .train_seconds = res.seconds,
                              .best_eval_acc = isnan(res.best_accuracy) ? -1 : res.best_accuracy};
        rc = db_soft_prompt_upsert(tc.db, &row, &tc.sp_id, &e);
    }
    if (!rc) {
        printf("soft prompt: %s (%d x %d, %s init)\n", out_dir, sp.n_tokens, sp.dim, init_name);
        printf("steps %ld, examples %lld, %.1f s (%.3f s/step)%s\n", res.steps, (long long)res.examples_seen,
               res.seconds, res.steps ? res.seconds / (double)res.steps : 0.0, res.resumed ? ", resumed" : "");
        if (!isnan(res.best_accuracy))
            printf("held-out accuracy %.4f (n %d) at step %ld%s\n", res.best_accuracy, res.n_eval, res.best_step,
                   res.stopped_early ? ", stopped early" : "");
    }
    /* Optional scoring of another split (e.g. dev) by rank classification. */
    const char *test_split = cli_str(a, "test-split", NULL);
    if (!rc && test_split) {
        rc = dataset_load(&card, test_split, cli_data_path(), &test, &e);
        if (!rc) {
            n_tex = labelled_sample(&test, test_limit, (uint64_t)seed, &idx);
            rc = encode_split(engine_model(en), &ct, &tp, &card, &test, idx, n_tex, &tex, &e);
        }
        double acc, loss, t0 = timer_wall();
        if (!rc && cli_flag(a, "baseline")) {
            rc = tune_evaluate(en, NULL, tex, n_tex, &acc, &loss, NULL, &e);
            if (!rc)
                printf("%s without the soft prompt (template %s): accuracy %.4f (n %zu), loss %.4f\n", test_split,
                       tp.name, acc, n_tex, loss);
        }
        if (!rc)
            rc = tune_evaluate(en, &sp, tex, n_tex, &acc, &loss, NULL, &e);
        if (!rc)
            printf("%s with the soft prompt: accuracy %.4f (n %zu), loss %.4f (%.1f s)\n", test_split, acc, n_tex, loss,
                   timer_wall() - t0);
    }
    int code = EXIT_PWB_OK;
    if (rc == PWB_EINTR) {
        fprintf(stderr, "pwb: interrupted at step %ld; run the same command again to resume\n", res.steps);
        code = EXIT_PWB_INTERRUPTED;
    } else if (rc) {
        code = cli_fail(&e);
    }
    free(idx);
    free_examples(ex, n_ex);
    free_examples(tex, n_tex);
    softprompt_free(&sp);
    if (have_ct)
        chat_template_free(&ct);
    engine_close(en);
    db_close(tc.db);
    ds_data_free(&train);
    ds_data_free(&test);
    card_free(&card);
    template_free(&tp);
    buf_free(&path);
    buf_free(&key);
    buf_free(&ckpt);
    buf_free(&json);
    return code;
}
