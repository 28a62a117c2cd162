/* Calibrated rank cells: before a cell's rows are scored, its prompt is rendered with the
 * content-free inputs (contextual) or cut to its domain premise (pmi), the labels are ranked after
 * them (through the response cache like any request), and the prior they give is stored with the
 * cell and subtracted from every row's label scores (task/calib.h). */
#include "run/run_internal.h"

#include <stdlib.h>
#include <string.h>

#include "run/request.h"

int run_items_answer(runner *R, rcell *c, item *items, size_t n, pwb_err *e)
{
    const int n_labels = R->ds[c->d].card.n_labels;
    llm_request *reqs = calloc(n ? n : 1, sizeof *reqs);
    llm_response *out = calloc(n ? n : 1, sizeof *out);
    size_t *map = calloc(n ? n : 1, sizeof *map);
    pwb_buf scratch;
    buf_init(&scratch);
    int rc = !reqs || !out || !map ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    if (!rc)
        rc = run_cache_lookup(R, c, items, n, e);
    size_t nm = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        R->prog_done -= items[i].cached; /* the lookup counts rows; these are not rows */
        if (!items[i].cached) {
            reqs[nm] = items[i].req;
            map[nm++] = i;
        }
    }
    if (!rc && nm > 0) {
        llm_backend *be = run_cell_backend(R, c);
        rc = be->run(be, reqs, nm, out, NULL, NULL, e);
        for (size_t j = 0; j < nm; j++) {
            items[map[j]].resp = out[j];
            memset(&out[j], 0, sizeof out[j]);
        }
        if (!rc && !(rc = db_begin(R->db, e))) {
            for (size_t j = 0; !rc && j < nm; j++) {
                item *it = &items[map[j]];
                if (!it->cacheable || it->resp.error || !(it->resp.text || it->resp.choice_logprob))
                    continue;
                if (resp_encode(&it->resp, it->req.mode == LLM_RANK ? n_labels : 0, &scratch))
                    rc = err_set(e, PWB_ENOMEM, "out of memory");
                else
                    rc = db_cache_put(R->db, it->key, scratch.data, e);
            }
            if (rc)
                db_rollback(R->db);
            else
                rc = db_commit(R->db, e);
        }
    }
    free(reqs);
    free(out);
    free(map);
    buf_free(&scratch);
    return rc;
}

int run_calibrate(runner *R, rcell *c, pwb_err *e)
{
    const rmethod *m = &R->me[c->k];
    const int nl = R->ds[c->d].card.n_labels;
    const int n = m->calib == CALIB_PMI ? 1 : CALIB_N_CONTENT_FREE;
    item items[CALIB_N_CONTENT_FREE];
    memset(items, 0, sizeof items);
    c->calib_cpu_s = 0;
    pwb_buf scratch;
    buf_init(&scratch);
    double *lp = calloc((size_t)n * (size_t)nl, sizeof *lp);
    free(c->prior);
    c->prior = calloc((size_t)nl, sizeof *c->prior);
    int rc = !lp || !c->prior ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    int built = 0;
    for (; built < n && !rc; built++)
        rc = run_item_build_input(R, c, &items[built], calib_content_free[built], m->calib == CALIB_PMI, &scratch, e);
    if (!rc)
        rc = run_items_answer(R, c, items, (size_t)n, e);
    for (int i = 0; !rc && i < n; i++) {
        if (!items[i].cached && items[i].resp.cpu_s > 0)
            c->calib_cpu_s += items[i].resp.cpu_s;
        const llm_response *rp = &items[i].resp;
        if (rp->error || !rp->choice_logprob)
            rc = err_set(e, PWB_EIO, "%s: method '%s': calibration input %d: %s", R->suite.path, m->sm->name, i,
                         rp->error ? rp->error : "no label scores");
        else
            memcpy(lp + (size_t)i * (size_t)nl, rp->choice_logprob, (size_t)nl * sizeof *lp);
    }
    if (!rc && m->calib == CALIB_PMI)
        memcpy(c->prior, lp, (size_t)nl * sizeof *lp);
    else if (!rc && calib_prior_contextual(lp, n, nl, c->prior))
        rc = err_set(e, PWB_ERANGE, "%s: method '%s': the content-free inputs gave label scores that are not finite",
                     R->suite.path, m->sm->name);
    /* the prior and its inputs with the cell, in one transaction (a search's candidates keep
     * theirs with the candidate) */
    if (!rc && !c->calib_nostore && !(rc = db_begin(R->db, e))) {
        for (int i = 0; !rc && i < n; i++) {
            item *it = &items[i];
            rc = db_calib_input_put(R->db, c->id, i, m->calib == CALIB_PMI ? NULL : calib_content_free[i],
                                    it->flat.data, it->resp.choice_logprob, nl, e);
        }
        if (!rc)
            rc = db_cell_set_calib_prior(R->db, c->id, c->prior, nl, e);
        if (rc)
            db_rollback(R->db);
        else
            rc = db_commit(R->db, e);
    }
    for (int i = 0; i < built; i++)
        run_item_free(&items[i]);
    free(lp);
    buf_free(&scratch);
    if (rc) {
        free(c->prior);
        c->prior = NULL;
    }
    return rc;
}
