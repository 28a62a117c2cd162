/* pwb tune: train a soft prompt (prompt tuning), a LoRA adapter or a prefix (--method) for a
 * dataset on a frozen local model and write it as a PEFT folder. The job (examples rendered with a template and the model's chat template as
 * the local backend's rank classification reads them, keys, checkpoint, rows) is src/run/softjob,
 * shared with the runner; this file parses the options and prints. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "task/dataset.h"
#include "run/suite.h"
#include "task/template.h"
#include "task/catalog.h"
#include "cli/cli.h"
#include "run/softjob.h"
#include "tune/settings.h"
#include "store/db.h"
#include "tune/train.h"
#include "util/buf.h"
#include "util/str.h"
#include "util/timer.h"

/* Each held-out evaluation, as it happens. */
static void print_eval(void *ctx, const tune_eval_info *v)
{
    if (!*(const int *)ctx)
        fprintf(stderr, "\npwb: step %ld: held-out accuracy %.4f (n %d), loss %.4f%s\n", v->step, v->accuracy, v->n,
                v->loss, v->is_best ? " (best)" : "");
}

/* The method's settings from their options (tune/settings.h's names, '-' for '_'); an option of
 * another method is an error rather than ignored. */
static int soft_options(const cli_args *a, soft_settings *sp)
{
    const char *name = cli_str(a, "method", "prompt");
    const int kind = tune_method_parse(name);
    if (kind < 0) {
        cli_usage_error(a->cmd, "--method: '%s' is not prompt, lora or prefix", name);
        return -1;
    }
    const tune_method *m = kind == TUNE_LORA ? &tune_lora_method : kind == TUNE_PREFIX ? &tune_prefix_method
                                                                                        : &tune_soft_method;
    m->defaults(sp);
    static const char *const lora_only[] = {"r", "alpha", "dropout", "targets", NULL},
                             *const prompt_only[] = {"tokens", "init", "init-text", NULL},
                             *const prefix_only[] = {"prefix-projection", "encoder-hidden-size", NULL};
    const char *const *others[] = {kind == TUNE_LORA ? prompt_only : lora_only, kind == TUNE_PREFIX ? NULL : prefix_only};
    for (int k = 0; k < 2; k++)
        for (int i = 0; others[k] && others[k][i]; i++)
            if (cli_str(a, others[k][i], NULL) || cli_flag(a, others[k][i]) > 0) {
                cli_usage_error(a->cmd, "--%s is not a setting of --method %s", others[k][i], name);
                return -1;
            }
    pwb_err e;
    err_clear(&e);
    for (int i = 0; i < m->n_fields; i++) {
        const tune_field *f = &m->fields[i];
        char opt[64];
        str_copy(opt, sizeof opt, f->key);
        for (char *c = opt; *c; c++)
            if (*c == '_')
                *c = '-';
        const char *v = f->type == TF_BOOL ? (cli_flag(a, opt) > 0 ? "1" : NULL) : cli_str(a, opt, NULL);
        if (v && tune_settings_set(m, sp, f->key, v, &e)) {
            cli_usage_error(a->cmd, "--%s: %s", opt, e.msg);
            return -1;
        }
    }
    if (tune_settings_check(m, sp, NULL, "", &e)) {
        cli_usage_error(a->cmd, "%s", e.msg);
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
    soft_settings sp;
    long threads, test_limit;
    if (soft_options(a, &sp) || cli_long(a, "threads", 0, 0, 1024, &threads) ||
        cli_long(a, "test-limit", 0, 0, 100000000L, &test_limit))
        return EXIT_PWB_USAGE;
    const char *tpl_name = cli_str(a, "template", "zero-shot");

    pwb_err e;
    err_clear(&e);
    pwb_buf path;
    buf_init(&path);
    pwb_template tp;
    template_init(&tp);
    ds_card card;
    card_init(&card);
    ds_data train, test;
    ds_data_init(&train);
    ds_data_init(&test);
    softjob job;
    softjob_init(&job);
    tune_example *tex = NULL;
    size_t n_tex = 0, *idx = NULL;
    pwb_db *db = NULL;
    int quiet = a->quiet;

    int rc = catalog_template_path(tpl_name, cli_template_dirs(a), &path, &e);
    if (!rc)
        rc = template_load(&tp, path.data, &e);
    if (!rc)
        rc = catalog_load_card(dsname, NULL, &card, &e);
    const char *split = cli_str(a, "split", card.few_shot_split ? card.few_shot_split : "train");
    if (!rc && (card.task == DS_CLASSIFICATION || card.task == DS_MULTIPLE_CHOICE))
        rc = dataset_load(&card, split, cli_data_path(), &train, &e);
    const char *db_path = cli_str(a, "db", NULL);
    if (!db_path || !db_path[0])
        db_path = getenv("PWB_DB");
    if (!rc) {
        softjob_opts o = {.model_path = model_path, .chat_template = cli_str(a, "chat-template", NULL),
                          .target_delimiter = cli_str(a, "target-delimiter", NULL),
                          .threads = (int)threads, .card = &card, .split = split, .data = &train, .tpl = &tp,
                          .sp = sp, .dir = out_dir, .fresh = cli_flag(a, "fresh") > 0, .stop = &cli_stop,
                          .progress = quiet ? NULL : stderr, .on_eval = print_eval, .ctx = &quiet};
        rc = softjob_prepare(&job, &o, &e);
    }
    if (!rc && db_path && db_path[0]) {
        rc = db_open(&db, db_path, DB_READWRITE, &e);
        job.o.db = db;
    }
    if (!rc) {
        const int method = job.cfg.method.kind;
        if (!quiet && method == TUNE_LORA)
            fprintf(stderr, "pwb: tuning LoRA r %d alpha %g on %s on %s/%s: %zu examples, %s lr %g, batch %d\n", sp.r,
                    sp.alpha, sp.targets, card.name, split, job.n_sampled, sp.optimizer, job.cfg.opt.lr, job.cfg.batch);
        else if (!quiet)
            fprintf(stderr, "pwb: tuning %d virtual tokens (%s, %s init) on %s/%s: %zu examples, %s lr %g, batch %d\n",
                    job.cfg.n_tokens,
                    method != TUNE_PREFIX ? "soft prompt" : sp.prefix_projection ? "prefix through an MLP" : "prefix",
                    sp.prefix_projection ? "PEFT's random" : sp.init, card.name, split, job.n_sampled, sp.optimizer,
                    job.cfg.opt.lr, job.cfg.batch);
        cli_signals_install();
        rc = softjob_run(&job, &e);
    }
    const tune_result *res = &job.res;
    const soft_prompt *prompt = &job.prompt;
    const int method = job.cfg.method.kind;
    const char *what = method == TUNE_LORA ? "LoRA adapter" : method == TUNE_PREFIX ? "prefix" : "soft prompt";
    if (!rc && method != TUNE_PROMPT)
        printf("%s: %s (%zu trainable parameters, %lld bytes)\n", what, out_dir, tune_adapter_n_params(&job.adapter),
               (long long)job.artifact_bytes);
    else if (!rc)
        printf("soft prompt: %s (%d x %d, %s init)\n", out_dir, prompt->n_tokens, prompt->dim, sp.init);
    if (!rc) {
        printf("steps %ld, examples %lld, %.1f s (%.3f s/step)%s\n", res->steps, (long long)res->examples_seen,
               res->seconds, res->steps ? res->seconds / (double)res->steps : 0.0, res->resumed ? ", resumed" : "");
        if (isfinite(res->cpu_seconds))
            printf("training CPU %.1f s (all threads)\n", res->cpu_seconds);
        if (!isnan(res->best_accuracy))
            printf("held-out accuracy %.4f (n %d) at step %ld%s\n", res->best_accuracy, res->n_eval, res->best_step,
                   res->stopped_early ? ", stopped early" : "");
    }
    /* Optional scoring of another split (e.g. dev) by rank classification. */
    const char *test_split = cli_str(a, "test-split", NULL);
    if (!rc && test_split) {
        rc = dataset_load(&card, test_split, cli_data_path(), &test, &e);
        if (!rc) {
            n_tex = softjob_sample(&test, test_limit, sp.seed, &idx);
            rc = softjob_encode(engine_model(job.en), &job.ct, &tp, NULL, job.o.target_delimiter, &card, &test, idx,
                                n_tex, &tex, &e);
        }
        double acc, loss, t0 = timer_wall();
        if (!rc && cli_flag(a, "baseline")) {
            rc = tune_evaluate(job.en, NULL, tex, n_tex, &acc, &loss, NULL, &e);
            if (!rc)
                printf("%s without the soft prompt (template %s): accuracy %.4f (n %zu), loss %.4f\n", test_split,
                       tp.name, acc, n_tex, loss);
        }
        if (!rc)
            rc = method == TUNE_PROMPT ? tune_evaluate(job.en, prompt, tex, n_tex, &acc, &loss, NULL, &e)
                                       : tune_evaluate_adapter(job.en, &job.adapter, tex, n_tex, &acc, &loss, NULL, &e);
        if (!rc)
            printf("%s with the %s: accuracy %.4f (n %zu), loss %.4f (%.1f s)\n", test_split, what, acc, n_tex, loss,
                   timer_wall() - t0);
    }
    int code = EXIT_PWB_OK;
    if (rc == PWB_EINTR) {
        fprintf(stderr, "pwb: interrupted at step %ld; run the same command again to resume\n", res->steps);
        code = EXIT_PWB_INTERRUPTED;
    } else if (rc) {
        code = cli_fail(&e);
    }
    free(idx);
    softjob_examples_free(tex, n_tex);
    softjob_free(&job);
    db_close(db);
    ds_data_free(&train);
    ds_data_free(&test);
    card_free(&card);
    template_free(&tp);
    buf_free(&path);
    return code;
}
