/* The runner's second phase: the run, its cells and their finished rows in the database. */
#include "run/run_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/file.h"
#include "util/str.h"

/* The cell's rows whose gold label is the dataset's majority label. */
static int cell_majority_n(const rds *d, const rcell *c)
{
    if (d->majority < 0)
        return -1;
    int k = 0;
    for (size_t j = 0; j < c->n_rows; j++)
        k += d->eval.ex[c->rows[j]].label == d->majority;
    return k;
}

/* The kind a cell records: a zero-shot template given shots by its method is a few-shot prompt. */
static int cell_template_kind(const rmethod *m)
{
    return m->tpl.kind == TPL_ZERO_SHOT && m->tpl.shots > 0 ? TPL_FEW_SHOT : m->tpl.kind;
}

/* A tuned cell's kind: "soft" for a soft prompt (as recorded since the first schema), else the
 * method's own name ("lora", "prefix"), which the report lists among the tuned kinds. */
static const char *cell_tuned_kind(const rmethod *m)
{
    const char *t = m->sm->soft.method;
    return t && strcmp(t, "prompt") != 0 ? t : "soft";
}

static int write_examples(runner *R, rds *d, pwb_err *e)
{
    if (d->examples_written)
        return PWB_OK;
    for (size_t j = 0; j < d->n_sample; j++) {
        const ds_example *x = &d->eval.ex[d->sample[j]];
        int rc = db_example_upsert(R->db, d->card.name, d->split, (long)x->row, x->input, x->answer, x->label, e);
        if (rc)
            return rc;
    }
    d->examples_written = 1;
    return PWB_OK;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

int run_plan(runner *R, pwb_err *e)
{
    const run_opts *o = R->o;
    run_result *r = R->r;
    if (o->require_existing && !file_exists(o->db_path))
        return err_set(e, PWB_EINVAL, "%s: no such database, so no run of %s to resume (drop --resume to start one)",
                       o->db_path, o->suite_path);
    pwb_buf dir;
    buf_init(&dir);
    file_dirname(o->db_path, &dir);
    int rc = file_mkdirs(dir.data, e);
    buf_free(&dir);
    if (rc)
        return rc;
    if ((rc = db_open(&R->db, o->db_path, DB_READWRITE, e)))
        return rc;
    /* Find (or start) the run and become its one writer in the same transaction, so two processes
     * never both write it; with --wait, try again until the other one is done. */
    int64_t run_id = 0;
    for (;;) {
        if ((rc = db_begin(R->db, e)))
            return rc;
        run_id = 0;
        if (!o->fresh)
            rc = db_run_find(R->db, R->run_key, &run_id, e);
        if (!rc && run_id == 0 && o->require_existing)
            rc = err_set(e, PWB_EINVAL, "%s: no earlier run of %s to resume (drop --resume to start one)",
                         o->db_path, o->suite_path);
        r->resumed = run_id != 0;
        if (!rc && run_id == 0) {
            char *json = cJSON_PrintUnformatted(R->suite.json);
            rc = db_run_create(R->db, R->suite.name ? R->suite.name : "suite", R->suite.path, R->run_key, json,
                               R->suite.seed, &run_id, e);
            cJSON_free(json);
        }
        if (!rc)
            rc = run_claim(R, run_id, e);
        if (rc != PWB_EBUSY || !o->wait || run_stopped(R))
            break;
        db_rollback(R->db);
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (rc) {
        db_rollback(R->db);
        return rc == PWB_EBUSY && run_stopped(R) ? err_set(e, PWB_EINTR, "interrupted while waiting for the run") : rc;
    }
    r->run_id = run_id;
    for (int i = 0; i < R->ncells && !rc; i++) {
        rcell *c = &R->cells[i];
        rds *d = &R->ds[c->d];
        rmethod *m = &R->me[c->k];
        rmodel *mo = &R->mo[c->m];
        if ((rc = write_examples(R, d, e)))
            break;
        db_cell cell = {
            .run_id = run_id,
            .dataset = d->card.name,
            .split = d->split,
            .model = mo->sm->name,
            .provider = mo->sm->provider,
            .method = m->sm->name,
            .kind = m->soft ? cell_tuned_kind(m) : m->sm->optimize ? "optimized" : template_kind_name(cell_template_kind(m)),
            .template_path = m->tpl_path,
            .template_sha256 = m->tpl_sha,
            .scoring = m->rank ? "rank" : "generate",
            .n_planned = (long)c->n_rows,
            .majority_label_correct_n = cell_majority_n(d, c),
            .sweep = m->sm->sweep,
            .sweep_point = m->sm->sweep_point,
            .has_budget = 1,
            .calibration = calib_kind_name(m->calib),
            .train_limit = run_cell_budget(R, c),
            .shot_split = m->tpl.shots > 0 ? d->shot_split : NULL,
            .train_split = m->soft ? (m->sm->soft.train_split ? m->sm->soft.train_split : d->soft_split) : NULL,
        };
        rc = db_cell_upsert(R->db, &cell, &c->id, e);
    }
    if (rc) {
        db_rollback(R->db);
        return rc;
    }
    if ((rc = db_commit(R->db, e)))
        return rc;
    run_writer_start(R);
    /* What is left per cell: the sample minus the rows already predicted. */
    r->cells = calloc((size_t)(R->ncells ? R->ncells : 1), sizeof *r->cells);
    if (!r->cells)
        return err_set(e, PWB_ENOMEM, "out of memory");
    r->n_cells = R->ncells;
    long total = 0;
    for (int i = 0; i < R->ncells; i++) {
        rcell *c = &R->cells[i];
        rds *d = &R->ds[c->d];
        run_cell_result *cr = c->res = &r->cells[i];
        cr->cell_id = c->id;
        cr->dataset = str_dup(d->card.name);
        cr->model = str_dup(R->mo[c->m].sm->name);
        cr->method = str_dup(R->me[c->k].sm->name);
        cr->n_planned = (long)c->n_rows;
        if (!cr->dataset || !cr->model || !cr->method)
            return err_set(e, PWB_ENOMEM, "out of memory");
        long *done = NULL;
        size_t n_done = 0;
        if ((rc = db_cell_done_rows(R->db, c->id, &done, &n_done, e)))
            return rc;
        c->todo = malloc((d->n_sample ? d->n_sample : 1) * sizeof *c->todo);
        if (!c->todo) {
            free(done);
            return err_set(e, PWB_ENOMEM, "out of memory");
        }
        for (size_t s = 0; s < c->n_rows; s++) {
            long row = (long)d->eval.ex[c->rows[s]].row;
            if (n_done && bsearch(&row, done, n_done, sizeof *done, cmp_long))
                r->n_skipped++;
            else
                c->todo[c->n_todo++] = c->rows[s];
        }
        free(done);
        total += (long)c->n_todo;
    }
    progress_init(&R->prog, o->progress, "run", total);
    return PWB_OK;
}
