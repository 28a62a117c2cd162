/* The runner: prepare (prepare.c, soft.c), then either the dry run's estimate (estimate.c) or
 * plan (plan.c) and execute (execute.c); run_internal.h holds the state they share. */
#include "run/run_internal.h"

#include <stdlib.h>
#include <string.h>

void run_opts_init(run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->chunk = RUN_DEFAULT_CHUNK;
    o->card_dirs = "datasets";
    o->data_path = "";
    o->template_dirs = "templates";
}

void run_result_free(run_result *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_cells; i++) {
        free(r->cells[i].dataset);
        free(r->cells[i].model);
        free(r->cells[i].method);
        free(r->cells[i].soft_dir);
        free(r->cells[i].search_template);
    }
    free(r->cells);
    memset(r, 0, sizeof *r);
}

/* ---- the whole run ------------------------------------------------------------------------ */

static void runner_free(runner *R)
{
    for (int i = 0; i < R->nds; i++) {
        rds *d = &R->ds[i];
        card_free(&d->card);
        ds_data_free(&d->eval);
        ds_data_free(&d->shots);
        free(d->sample);
        free(d->split);
        free(d->shot_split);
        free(d->soft_split);
        for (int k = 0; k < d->n_tr; k++) {
            free(d->tr_names[k]);
            ds_data_free(&d->tr_data[k]);
        }
        free(d->tr_names);
        free(d->tr_data);
    }
    free(R->ds);
    for (int i = 0; i < R->nme; i++) {
        template_free(&R->me[i].tpl);
        for (int t = 0; t < R->me[i].n_xtpl; t++)
            template_free(&R->me[i].xtpl[t]);
        free(R->me[i].xtpl);
        free(R->me[i].tpl_path);
    }
    free(R->me);
    for (int i = 0; i < R->nmo; i++) {
        if (R->mo[i].be)
            llm_backend_free(R->mo[i].be);
        buf_free(&R->mo[i].tokenizer);
        buf_free(&R->mo[i].file);
    }
    free(R->mo);
    for (int i = 0; i < R->ncells; i++) {
        if (R->cells[i].sc)
            scorer_free(R->cells[i].sc);
        free(R->cells[i].todo);
        free(R->cells[i].own_rows);
        if (R->cells[i].be)
            llm_backend_free(R->cells[i].be);
        free(R->cells[i].pool.ex); /* a view: its examples belong to the shot split */
        free(R->cells[i].prior);
        template_free(&R->cells[i].own_tpl);
        free(R->cells[i].words.labels); /* a view: only the array is its own */
        free(R->cells[i].near);
        softjob_free(R->cells[i].job);
        free(R->cells[i].job);
        free(R->cells[i].soft_dir);
    }
    free(R->cells);
    prices_free(&R->prices);
    llm_budget_free(&R->budget);
    if (R->db) {
        run_writer_stop(R);
        db_close(R->db);
    }
    suite_free(&R->suite);
    buf_free(&R->suite_dir);
    pthread_mutex_destroy(&R->lock);
}

/* Each cell's counts as the database holds them, earlier invocations of the run included. */
static int tally(runner *R, pwb_err *e)
{
    run_result *r = R->r;
    db_cell_tally *t = calloc((size_t)(r->n_cells ? r->n_cells : 1), sizeof *t);
    if (!t)
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (int i = 0; i < r->n_cells; i++) {
        const run_cell_result *c = &r->cells[i];
        t[i] = (db_cell_tally){c->cell_id, c->n, c->correct, c->invalid, c->errors, c->cost_usd};
    }
    int rc = db_run_tallies(R->db, r->run_id, t, (size_t)r->n_cells, e);
    for (int i = 0; !rc && i < r->n_cells; i++) {
        run_cell_result *c = &r->cells[i];
        c->n = t[i].n;
        c->correct = t[i].correct;
        c->invalid = t[i].invalid;
        c->errors = t[i].errors;
        c->cost_usd = t[i].cost_usd;
    }
    free(t);
    return rc;
}

/* Whether this invocation changed the run: new predictions, a training, a prompt search. */
static int added(const runner *R)
{
    if (R->r->n_new > 0)
        return 1;
    for (int i = 0; i < R->ncells; i++)
        if ((R->cells[i].job && R->cells[i].job->trained) || R->cells[i].search_evals > 0)
            return 1;
    return 0;
}

int run_suite(const run_opts *o, run_result *r, pwb_err *e)
{
    memset(r, 0, sizeof *r);
    runner R;
    memset(&R, 0, sizeof R);
    R.o = o;
    R.r = r;
    suite_init(&R.suite);
    buf_init(&R.suite_dir);
    pthread_mutex_init(&R.lock, NULL);
    prices_init(&R.prices);
    llm_budget_init(&R.budget, o->max_cost_usd, 0);
    int rc = run_prepare(&R, e);
    if (!rc && run_stopped(&R)) /* Ctrl-C while loading: leave the database alone */
        rc = err_set(e, PWB_EINTR, "interrupted before the run started");
    if (!rc && o->dry_run) {
        rc = run_estimate(&R, e);
    } else if (!rc) {
        rc = run_plan(&R, e);
        if (!rc)
            rc = run_execute(&R, e);
        if (R.db && r->run_id && R.claimed) { /* only the run's writer says how it ended */
            pwb_err e2;
            err_clear(&e2);
            int rc2 = tally(&R, &e2);
            if (!rc2)
                rc2 = db_run_settle(R.db, r->run_id,
                                    rc == PWB_OK       ? "complete"
                                    : rc == PWB_EINTR  ? "interrupted"
                                    : rc == PWB_ELIMIT ? "limited"
                                                       : "failed",
                                    added(&R), &e2);
            if (rc2 && !rc) {
                *e = e2;
                rc = rc2;
            }
        }
    }
    runner_free(&R);
    return rc;
}
