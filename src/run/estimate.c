/* The dry run: renders every cell's requests as the run would and counts what they send. */
#include "run/run_internal.h"

#include <stdlib.h>
#include <string.h>

#include "llm/estimate.h"
#include "util/str.h"

/* Renders every sampled example of cell c, as the run would, and counts what its requests send. */
static int estimate_cell(runner *R, rcell *c, llm_counter *counter, run_cell_result *cr, pwb_err *e)
{
    const rmodel *mo = &R->mo[c->m];
    size_t chunk = R->o->chunk > 0 && R->o->chunk <= RUN_MAX_CHUNK ? (size_t)R->o->chunk : RUN_DEFAULT_CHUNK;
    item *items = calloc(chunk, sizeof *items);
    llm_request *reqs = calloc(chunk, sizeof *reqs);
    pwb_buf scratch;
    buf_init(&scratch);
    int rc = (!items || !reqs) ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    for (size_t start = 0; !rc && start < c->n_rows && !run_stopped(R); start += chunk) {
        size_t n = c->n_rows - start < chunk ? c->n_rows - start : chunk;
        memset(items, 0, n * sizeof *items);
        size_t built = 0;
        for (; built < n && !rc; built++)
            rc = run_item_build(R, c, &items[built], c->rows[start + built], &scratch, e);
        for (size_t i = 0; !rc && i < n; i++)
            reqs[i] = items[i].req;
        if (!rc)
            rc = llm_counter_add(counter, reqs, n, mo->price.known ? &mo->price : NULL, &cr->est, e);
        if (rc)
            err_prefix(e, "%s: cell %s/%s/%s: ", R->suite.path, cr->dataset, cr->model, cr->method);
        for (size_t i = 0; i < built; i++)
            run_item_free(&items[i]);
    }
    free(items);
    free(reqs);
    buf_free(&scratch);
    cr->est_exact = llm_counter_exact(counter);
    cr->est_priced = mo->price.known;
    str_copy(cr->est_method, sizeof cr->est_method, llm_counter_method(counter));
    return rc;
}

/* Per cell: requests, HTTP calls, prompt tokens (with the model's own tokenizer where pwb has it),
 * the most that may be generated, and the cost at the model's price. Sends nothing. */
static int dry_run_estimate(runner *R, pwb_err *e)
{
    run_result *r = R->r;
    llm_counter **counters = calloc((size_t)(R->nmo ? R->nmo : 1), sizeof *counters);
    if (!counters)
        return err_set(e, PWB_ENOMEM, "out of memory");
    int rc = PWB_OK;
    for (int i = 0; i < R->ncells && !rc && !run_stopped(R); i++) {
        rcell *c = &R->cells[i];
        rmodel *mo = &R->mo[c->m];
        if (!counters[c->m] && (rc = llm_counter_open(&counters[c->m], &mo->cfg, e))) {
            err_prefix(e, "%s: model '%s': ", R->suite.path, mo->sm->name);
            break;
        }
        run_cell_result *cr = &r->cells[i];
        if ((rc = estimate_cell(R, c, counters[c->m], cr, e)))
            break;
        r->est.requests += cr->est.requests;
        r->est.calls += cr->est.calls;
        r->est.tokens_in += cr->est.tokens_in;
        r->est.tokens_out_max += cr->est.tokens_out_max;
        r->est.cost_usd += cr->est.cost_usd;
    }
    for (int i = 0; i < R->nmo; i++)
        llm_counter_free(counters[i]);
    free(counters);
    if (!rc && run_stopped(R))
        rc = err_set(e, PWB_EINTR, "interrupted");
    return rc;
}

int run_estimate(runner *R, pwb_err *e)
{
    run_result *r = R->r;
    r->cells = calloc((size_t)(R->ncells ? R->ncells : 1), sizeof *r->cells);
    if (!r->cells)
        return err_set(e, PWB_ENOMEM, "out of memory");
    r->n_cells = R->ncells;
    for (int i = 0; i < R->ncells; i++) {
        rcell *c = &R->cells[i];
        run_cell_result *cr = &r->cells[i];
        cr->dataset = str_dup(R->ds[c->d].card.name);
        cr->model = str_dup(R->mo[c->m].sm->name);
        cr->method = str_dup(R->me[c->k].sm->name);
        cr->n_planned = (long)c->n_rows;
        if (!cr->dataset || !cr->model || !cr->method || (c->job && run_soft_result(c, cr, 1)))
            return err_set(e, PWB_ENOMEM, "out of memory");
    }
    return dry_run_estimate(R, e);
}
