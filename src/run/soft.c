/* The runner's soft-prompt cells (src/run/softjob.h does the training). */
#include "run/run_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"
#include "util/log.h"
#include "util/str.h"

/* The split of d named name, for a soft prompt to train on: one the dataset has loaded already,
 * else loaded now (each kept at its own address: jobs point at it). */
static int train_data(runner *R, rds *d, const char *name, const ds_data **out, pwb_err *e)
{
    if (!strcmp(name, d->split)) {
        *out = &d->eval;
        return PWB_OK;
    }
    for (int i = 0; i < d->n_tr; i++)
        if (!strcmp(d->tr_names[i], name)) {
            *out = &d->tr_data[i];
            return PWB_OK;
        }
    if (!card_split(&d->card, name))
        return err_set(e, PWB_EINVAL, "%s: dataset '%s': card %s has no split '%s' for a soft prompt to train on "
                       "(name one with soft_prompt.train_split)", R->suite.path, d->sd->name, d->card.path, name);
    if (d->n_tr >= d->card.n_splits)
        return err_set(e, PWB_ERANGE, "%s: too many training splits", d->card.path);
    if (!d->tr_names) {
        d->tr_names = calloc((size_t)d->card.n_splits, sizeof *d->tr_names);
        d->tr_data = calloc((size_t)d->card.n_splits, sizeof *d->tr_data);
        if (!d->tr_names || !d->tr_data)
            return err_set(e, PWB_ENOMEM, "out of memory");
    }
    ds_data *x = &d->tr_data[d->n_tr];
    ds_data_init(x);
    if (!(d->tr_names[d->n_tr] = str_dup(name)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    d->n_tr++;
    log_info("loading %s split %s (soft prompt training)", d->card.name, name);
    int rc = dataset_load(&d->card, name, R->o->data_path, x, e);
    if (rc)
        return rc;
    *out = x;
    return PWB_OK;
}

/* Where trained prompts live: run_opts.soft_dir, else "soft" beside the database. */
static void soft_root(const runner *R, pwb_buf *out)
{
    buf_reset(out);
    if (R->o->soft_dir && R->o->soft_dir[0]) {
        buf_puts(out, R->o->soft_dir);
        return;
    }
    pwb_buf dir;
    buf_init(&dir);
    file_dirname(R->o->db_path ? R->o->db_path : "results.db", &dir);
    file_join(out, dir.data ? dir.data : ".", "soft");
    buf_free(&dir);
}

/* A soft-prompt cell: a local model, the training split, the job's keys and plan (nothing is
 * trained or written here). */
int run_soft_prepare(runner *R, rcell *c, pwb_err *e)
{
    rds *d = &R->ds[c->d];
    rmethod *m = &R->me[c->k];
    rmodel *mo = &R->mo[c->m];
    if (strcmp(mo->cfg.provider, "local") != 0)
        return err_set(e, PWB_EUNSUP,
                       "%s: cell %s/%s/%s: method '%s' is a soft prompt, which is trained and scored on a local model "
                       "(provider local); model '%s' is provider %s (to score it through a server that serves the "
                       "trained adapter under a name, e.g. pwb serve --adapter NAME=DIR, give the method "
                       "\"served_model\": \"NAME\")",
                       R->suite.path, d->card.name, mo->sm->name, m->sm->name, m->sm->name, mo->sm->name,
                       mo->sm->provider);
    const soft_settings *sp = &m->sm->soft;
    const char *split = sp->train_split ? sp->train_split : d->soft_split;
    if (!strcmp(split, d->split)) {
        if (!sp->train_split)
            return err_set(e, PWB_EINVAL,
                           "%s: cell %s/%s/%s: the soft prompt would train on '%s', the split it is scored on; "
                           "name another with soft_prompt.train_split",
                           R->suite.path, d->card.name, mo->sm->name, m->sm->name, split);
        log_warn("%s: method '%s' trains its soft prompt on '%s', the split it is scored on", R->suite.path,
                 m->sm->name, split);
    }
    const ds_data *data = NULL;
    int rc = train_data(R, d, split, &data, e);
    if (!rc && data != &d->eval)
        rc = run_check_overlap(R, d, data, "training", sp->train_split ? m->sm->train_line : 0, e);
    if (!rc && !mo->sha[0])
        rc = softjob_model_sha256(mo->cfg.model, mo->sha, e);
    if (rc)
        return rc;
    if (!(c->job = calloc(1, sizeof *c->job)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    softjob_init(c->job);
    pwb_buf root;
    buf_init(&root);
    soft_root(R, &root);
    if (!root.data || !(c->soft_dir = str_dup(root.data))) {
        buf_free(&root);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    buf_free(&root);
    /* A template with shots trains on the shots its queries read (drawn the same way, so they
     * are one shared prefix); each training row is kept out of its own shots. */
    softjob_shots shots = {0};
    if (m->tpl.shots > 0) {
        const ds_data *pool = run_cell_shot_pool(R, c);
        shots = (softjob_shots){.from = pool, .same = pool == data || (pool->split && data->split &&
                                                                           !strcmp(pool->split, data->split) &&
                                                                           pool->n == data->n),
                                   .seed = R->suite.seed};
    }
    softjob_opts o = {.model_path = mo->cfg.model, .model_sha256 = mo->sha, .chat_template = mo->cfg.chat_template,
                      .target_delimiter = mo->sm->target_delimiter,
                      .threads = mo->cfg.threads, .card = &d->card, .split = split, .data = data, .tpl = &m->tpl,
                      .tpl_sha256 = m->tpl_sha, .shots = shots, .sp = *sp, .root = c->soft_dir, .reuse = 1};
    rc = softjob_prepare(c->job, &o, e);
    if (rc)
        err_prefix(e, "%s: cell %s/%s/%s: ", R->suite.path, d->card.name, mo->sm->name, m->sm->name);
    return rc;
}

/* What a soft cell's job did (or, in a dry run, would do), for the summary. */
int run_soft_result(const rcell *c, run_cell_result *cr, int dry)
{
    const softjob *j = c->job;
    free(cr->soft_dir);
    if (!(cr->soft_dir = str_dup(j->dir)))
        return -1;
    cr->soft_n_train = j->n_train;
    cr->soft_n_eval = j->n_eval;
    cr->soft_resumes = j->resumable && !j->reusable;
    if (dry) {
        cr->soft = j->reusable ? RUN_SOFT_REUSED : RUN_SOFT_TRAINED;
        cr->soft_steps = j->planned_steps;
        cr->soft_examples = j->planned_examples;
        cr->soft_seconds = 0;
        cr->soft_best_acc = NAN;
        return 0;
    }
    cr->soft = j->reused ? RUN_SOFT_REUSED : j->trained ? RUN_SOFT_TRAINED : RUN_SOFT_NONE;
    cr->soft_steps = j->res.steps;
    cr->soft_examples = j->res.examples_seen;
    cr->soft_seconds = j->res.seconds;
    cr->soft_best_acc = j->res.best_accuracy;
    cr->soft_resumes = j->res.resumed;
    if (j->res.n_train > 0) {
        cr->soft_n_train = j->res.n_train;
        cr->soft_n_eval = j->res.n_eval;
    }
    return 0;
}
