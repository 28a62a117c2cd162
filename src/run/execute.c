/* The runner's third phase: per cell, per chunk of rows: render, cache, backend, score, one
 * transaction. */
#include "run/run_internal.h"

#include <stdlib.h>
#include <string.h>

#include "llm/estimate.h"
#include "run/request.h"
#include "util/timer.h"

typedef struct chunk_ctx {
    runner *R;
    item *items;
    const size_t *map; /* request index -> item index */
    size_t n_cb;       /* completions reported through the callback */
    int cell;          /* its index in R->cells */
} chunk_ctx;

static void eta_rows(runner *R, int i);

/* Runs on the backend's thread(s) while the runner waits in run(). */
static void on_done(void *ctx, size_t index, const llm_response *resp)
{
    (void)resp;
    chunk_ctx *cc = ctx;
    pthread_mutex_lock(&cc->R->lock);
    cc->items[cc->map[index]].finished = 1;
    cc->n_cb++;
    cc->R->prog_done++;
    eta_rows(cc->R, cc->cell);
    progress_update(&cc->R->prog, cc->R->prog_done, cc->R->prog_label);
    pthread_mutex_unlock(&cc->R->lock);
}

/* What a response cost, at the price the HTTP backend's cost guard also bills (so the stored
 * costs add up to what --max-cost counted), plus CPU time at the suite's cpu_hour. */
static double cost_of(const rmodel *m, const llm_response *r)
{
    double c = llm_estimate_cost(&m->price, r->tokens_in, r->tokens_out, r->tokens_cached_in);
    if (r->cpu_s > 0)
        c += r->cpu_s * m->sm->price_cpu_hour / 3600.0;
    return c;
}

/* lm-evaluation-harness's acc_norm: the choice with the most log-probability per byte of its
 * text (the target delimiter not counted). */
static int norm_choice(const rmethod *m, const rmodel *mo, const item *it, const double *lp, int n)
{
    const char *d = template_delimiter(&m->tpl, mo->sm->target_delimiter);
    size_t dl = d ? strlen(d) : 0;
    int best = -1;
    double best_v = 0;
    for (int i = 0; i < n && i < it->n_choices; i++) {
        size_t len = strlen(it->choices[i]);
        double v = lp[i] / (double)(len > dl ? len - dl : 1);
        if (best < 0 || v > best_v) {
            best = i;
            best_v = v;
        }
    }
    return best;
}

static int store_item(runner *R, rcell *c, item *it, pwb_buf *scratch, pwb_err *e)
{
    rds *d = &R->ds[c->d];
    rmethod *m = &R->me[c->k];
    const ds_example *x = &d->eval.ex[it->ex];
    llm_response *rp = &it->resp;
    db_prediction p;
    memset(&p, 0, sizeof p);
    p.cell_id = c->id;
    p.row = (long)x->row;
    p.prompt = it->flat.data;
    p.prompt_sha256 = it->psha;
    p.output = rp->text;
    score_result sr;
    memset(&sr, 0, sizeof sr);
    if (rp->error) {
        p.error = rp->error;
    } else if (m->rank) {
        int n = d->card.n_labels, ch = rp->choice;
        /* calibrated: the raw scores stay stored, the choice is theirs less the cell's prior */
        if (rp->choice_logprob && (c->prior || ch < 0 || ch >= n))
            ch = calib_choose(rp->choice_logprob, c->prior, n);
        if (ch >= 0 && ch < n) {
            p.extracted = d->card.labels[ch].verbalizer;
            if (!p.output)
                p.output = p.extracted;
            p.valid = 1;
            p.correct = ch == x->label;
        }
        p.choice_logprob = rp->choice_logprob;
        p.n_choices = rp->choice_logprob ? n : 0;
        p.correct_norm = rp->choice_logprob ? norm_choice(m, &R->mo[c->m], it, rp->choice_logprob, n) == x->label : -1;
    } else if (scorer_score(c->sc, rp->text ? rp->text : "", x, &sr) == PWB_OK) {
        p.extracted = sr.extracted;
        p.valid = sr.valid;
        p.correct = sr.correct;
    } else {
        p.error = "scoring failed";
    }
    p.latency_s = rp->latency_s;
    p.cpu_s = rp->cpu_s;
    p.tokens_in = rp->tokens_in;
    p.tokens_out = rp->tokens_out;
    /* A cached answer keeps what the original request cost, so a report describes the method and
     * not the cache; `cached` says that nothing was spent this time. */
    p.cost_usd = cost_of(&R->mo[c->m], rp);
    p.retries = rp->retries;
    p.http_status = rp->http_status;
    p.cached = it->cached;
    int rc = db_prediction_insert(R->db, &p, e);
    /* HTTP backends bill the cost guard themselves; a local model's CPU time is added here */
    if (!rc && !it->cached && R->o->max_cost_usd > 0 && !strcmp(R->mo[c->m].cfg.provider, "local"))
        llm_budget_add(&R->budget, p.cost_usd);
    if (!rc && it->cacheable && !it->cached && !rp->error && (rp->text || rp->choice_logprob)) {
        if (resp_encode(rp, m->rank ? d->card.n_labels : 0, scratch))
            rc = err_set(e, PWB_ENOMEM, "out of memory");
        else
            rc = db_cache_put(R->db, it->key, scratch->data, e);
    }
    if (!rc) {
        run_cell_result *cr = c->res;
        cr->n_new++;
        cr->n_cached += it->cached;
        R->r->n_new++;
        R->r->n_cached += it->cached;
        R->r->n_errors += p.error != NULL;
    }
    score_result_clear(&sr);
    return rc;
}

int run_cache_lookup(runner *R, rcell *c, item *items, size_t n, pwb_err *e)
{
    size_t n_cacheable = 0;
    for (size_t i = 0; i < n; i++)
        n_cacheable += items[i].cacheable;
    if (!n_cacheable)
        return PWB_OK;
    int rc = db_begin(R->db, e);
    for (size_t i = 0; i < n && !rc; i++) {
        if (!items[i].cacheable)
            continue;
        /* by the request, not the method: a rank method's search also generates (optimize.c) */
        int n_choices = items[i].req.mode == LLM_RANK ? R->ds[c->d].card.n_labels : 0;
        char *json = NULL;
        rc = db_cache_get(R->db, items[i].key, &json, e);
        if (!rc && json && resp_decode(json, n_choices, &items[i].resp) == 0) {
            items[i].cached = items[i].finished = 1;
            R->prog_done++;
        }
        free(json);
    }
    if (rc) {
        db_rollback(R->db);
        return rc;
    }
    return db_commit(R->db, e);
}

/* ---- the cost limit (--max-cost) ---------------------------------------------------------- */

/* 1 when a local model with a price must not start another chunk: the limit is spent. (HTTP
 * backends check every request themselves, before it is sent.) */
static int budget_spent_for(runner *R, const rmodel *mo)
{
    if (R->o->max_cost_usd <= 0 || strcmp(mo->cfg.provider, "local") != 0)
        return 0;
    if (!(mo->sm->price_cpu_hour > 0) && !mo->price.known)
        return 0;
    return llm_budget_spent(&R->budget) >= R->o->max_cost_usd;
}

/* What earlier invocations of this run spent (answers from the cache cost nothing this time):
 * it counts towards the limit, so resuming cannot spend the limit twice. */
static int budget_resume(runner *R, pwb_err *e)
{
    if (R->o->max_cost_usd <= 0 || !R->r->run_id)
        return PWB_OK;
    double spent = 0;
    int rc = db_run_spent_usd(R->db, R->r->run_id, &spent, e);
    if (!rc && spent > 0)
        llm_budget_add(&R->budget, spent);
    return rc;
}

/* ---- the whole run's ETA ------------------------------------------------------------------- */

/* Seconds per row answered by this invocation, training excluded (prog.start moves past it); 0
 * before the first. */
static double row_seconds(const runner *R)
{
    double el = timer_wall() - R->prog.start;
    return R->prog_done > 0 && el > 0 ? el / (double)R->prog_done : 0;
}

/* Seconds of soft-prompt training still ahead in cells from..ncells-1: their steps times the step
 * time an earlier training of this invocation took, else one estimated from the row time (a step
 * reads `batch` examples forward and backward, about three forward passes each); -1 when neither
 * is known yet. */
static double training_ahead_s(const runner *R, int from)
{
    double s = 0;
    for (int i = from; i < R->ncells; i++) {
        const rcell *c = &R->cells[i];
        if (!c->job || c->n_todo == 0 || c->job->reusable)
            continue;
        double step_s = R->step_s > 0 ? R->step_s : 3.0 * c->job->cfg.batch * row_seconds(R);
        if (!(step_s > 0))
            return -1;
        s += (double)c->job->planned_steps * step_s;
    }
    return s;
}

/* The run bar's ETA counts the training still ahead of cell i's rows. */
static void eta_rows(runner *R, int i)
{
    double t = training_ahead_s(R, i + 1);
    progress_set_after(&R->prog, t, t < 0 ? "training" : NULL);
}

/* A training bar's ETA counts the rows still to answer and the trainings after cell i's. */
static void eta_training(runner *R, int i, softjob_opts *o)
{
    const long rows = R->prog.total - R->prog_done;
    const double rs = row_seconds(R);
    double t = training_ahead_s(R, i + 1);
    o->progress_after_what = t < 0 ? "training" : "scoring";
    if (t >= 0)
        t = rows <= 0 ? t : rs > 0 ? t + (double)rows * rs : -1;
    o->progress_after_s = t;
}

static int run_cell(runner *R, rcell *c, pwb_err *e)
{
    size_t chunk = R->o->chunk > 0 ? (size_t)R->o->chunk : RUN_DEFAULT_CHUNK;
    if (chunk > RUN_MAX_CHUNK)
        chunk = RUN_MAX_CHUNK;
    rmodel *mo = &R->mo[c->m];
    item *items = calloc(chunk, sizeof *items);
    llm_request *reqs = calloc(chunk, sizeof *reqs);
    llm_response *out = calloc(chunk, sizeof *out);
    size_t *map = calloc(chunk, sizeof *map);
    pwb_buf scratch;
    buf_init(&scratch);
    int rc = (!items || !reqs || !out || !map) ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    snprintf(R->prog_label, sizeof R->prog_label, "%s/%s/%s", R->ds[c->d].card.name, mo->sm->name,
             R->me[c->k].sm->name);
    for (size_t start = 0; !rc && start < c->n_todo && !run_stopped(R); start += chunk) {
        size_t n = c->n_todo - start < chunk ? c->n_todo - start : chunk;
        memset(items, 0, n * sizeof *items);
        size_t built = 0;
        for (; built < n && !rc; built++)
            rc = run_item_build(R, c, &items[built], c->todo[start + built], &scratch, e);
        if (!rc)
            rc = run_cache_lookup(R, c, items, n, e);
        size_t nm = 0;
        for (size_t i = 0; !rc && i < n; i++) {
            if (items[i].cached)
                continue;
            reqs[nm] = items[i].req;
            map[nm++] = i;
        }
        int interrupted = 0, limited = 0;
        eta_rows(R, (int)(c - R->cells));
        if (!rc && nm > 0 && budget_spent_for(R, mo)) {
            limited = 1; /* a local model's CPU time: counted after each chunk, checked before the next */
            err_set(&R->limit_err, PWB_ELIMIT, "cost limit of $%.4f reached: $%.4f spent", R->o->max_cost_usd,
                    llm_budget_spent(&R->budget));
        } else if (!rc && nm > 0) {
            memset(out, 0, nm * sizeof *out);
            chunk_ctx cc = {R, items, map, 0, (int)(c - R->cells)};
            llm_backend *be = run_cell_backend(R, c);
            rc = be->run(be, reqs, nm, out, on_done, &cc, e);
            interrupted = rc == PWB_EINTR || run_stopped(R);
            /* Over the cost limit: like a stop, only the requests that completed (done was called
             * for them) are kept; the unsent ones carry "not sent: cost limit reached". */
            limited = rc == PWB_ELIMIT;
            if (limited)
                R->limit_err = *e;
            if (rc == PWB_EINTR || limited)
                rc = PWB_OK;
            for (size_t j = 0; j < nm; j++) {
                items[map[j]].resp = out[j];
                memset(&out[j], 0, sizeof out[j]);
                if (!interrupted && !limited)
                    items[map[j]].finished = 1;
            }
            if (!interrupted && !limited)
                R->prog_done += (long)(nm - cc.n_cb); /* a backend that does not report each one */
        }
        progress_update(&R->prog, R->prog_done, R->prog_label);
        if (!rc) {
            /* One transaction per chunk: a crash loses at most this chunk, never half a row. */
            rc = db_begin(R->db, e);
            for (size_t i = 0; !rc && i < n; i++) {
                item *it = &items[i];
                /* Stopped midway: keep the answers that completed; a request cut short may carry an
                 * error that says so, and must be asked again next time. */
                if (!it->finished || (interrupted && it->resp.error))
                    continue;
                rc = store_item(R, c, it, &scratch, e);
            }
            if (rc)
                db_rollback(R->db);
            else
                rc = db_commit(R->db, e);
        }
        for (size_t i = 0; i < built; i++)
            run_item_free(&items[i]);
        if (!rc && limited) {
            R->limited = 1;
            rc = PWB_ELIMIT;
        }
        if (interrupted || limited)
            break;
    }
    free(items);
    free(reqs);
    free(out);
    free(map);
    buf_free(&scratch);
    return rc;
}

/* A soft cell's prompt, before its rows are scored: loaded when its configuration was trained
 * before, else trained (resuming a checkpoint); the cell is linked to its soft_prompts row. */
static int soft_prompt_for(runner *R, rcell *c, pwb_err *e)
{
    softjob *j = c->job;
    char label[64];
    snprintf(label, sizeof label, "train %s", R->me[c->k].sm->name);
    j->o.db = R->db;
    j->o.stop = R->o->stop;
    j->o.progress = R->o->progress;
    j->o.progress_label = label;
    eta_training(R, (int)(c - R->cells), &j->o);
    char what[64];
    if (j->cfg.method.kind == TUNE_LORA)
        snprintf(what, sizeof what, "a LoRA adapter of rank %d", j->cfg.method.lora_r);
    else
        snprintf(what, sizeof what, "a %s of %d tokens", j->cfg.method.kind == TUNE_PREFIX ? "prefix" : "soft prompt",
                 j->cfg.n_tokens);
    if (R->o->progress && !j->reusable)
        fprintf(R->o->progress, "pwb: %s/%s/%s: training %s, %ld steps of %d examples, into %s\n",
                R->ds[c->d].card.name, R->mo[c->m].sm->name, R->me[c->k].sm->name, what, j->planned_steps,
                j->cfg.batch, j->dir);
    double t0 = timer_wall();
    int rc = softjob_run(j, e);
    j->o.progress_label = NULL;
    /* training is no part of the answering rate the run's progress bar and summary show */
    const double dt = timer_wall() - t0;
    R->r->soft_wall_s += dt;
    R->prog.start += dt;
    if (j->trained && j->res.steps > 0) /* times the trainings still ahead */
        R->step_s = dt / (double)j->res.steps;
    if (run_soft_result(c, c->res, 0))
        return err_set(e, PWB_ENOMEM, "out of memory");
    if (rc == PWB_EINTR)
        return err_set(e, PWB_EINTR, "interrupted while training the soft prompt of %s/%s/%s at step %ld of %ld "
                       "(checkpoint in %s): run the suite again to resume", R->ds[c->d].card.name,
                       R->mo[c->m].sm->name, R->me[c->k].sm->name, j->res.steps, j->planned_steps, j->dir);
    if (rc)
        return err_prefix(e, "%s/%s/%s: soft prompt: ", R->ds[c->d].card.name, R->mo[c->m].sm->name,
                          R->me[c->k].sm->name);
    softjob_close_model(j); /* the training engine's memory is no longer needed */
    return j->sp_id > 0 ? db_cell_set_soft_prompt(R->db, c->id, j->sp_id, e) : PWB_OK;
}

int run_execute(runner *R, pwb_err *e)
{
    double t0 = timer_wall();
    int rc = budget_resume(R, e);
    int soft_stop = 0;
    for (int i = 0; i < R->ncells && !rc && !run_stopped(R); i++) {
        rcell *c = &R->cells[i];
        if (c->job && c->n_todo > 0) {
            rc = soft_prompt_for(R, c, e);
            if (rc == PWB_EINTR) {
                soft_stop = 1;
                break;
            }
        }
        if (!rc && R->me[c->k].sm->optimize && (c->n_todo > 0 || R->o->search_only))
            rc = run_optimize(R, c, e);
        if (R->o->search_only)
            continue;
        if (!rc && R->me[c->k].rank && R->me[c->k].calib != CALIB_NONE && c->n_todo > 0)
            rc = run_calibrate(R, c, e);
        if (!rc)
            rc = run_cell_neighbours(R, c, e);
        if (!rc)
            rc = run_cell(R, c, e);
        if (c->job) { /* the vectors (adapter) were for this cell only */
            softprompt_free(&c->job->prompt);
            tune_adapter_free(&c->job->adapter);
        }
    }
    R->r->wall_s = timer_wall() - t0 - R->r->soft_wall_s;
    progress_finish(&R->prog);
    if (R->o->max_cost_usd > 0)
        R->r->spent_usd = llm_budget_spent(&R->budget);
    if (soft_stop) {
        R->r->interrupted = 1;
    } else if (rc == PWB_ELIMIT && R->limited) {
        R->r->limited = 1;
        rc = err_set(e, PWB_ELIMIT, "%.700s; %ld predictions kept, the rest not sent: run again with a higher "
                     "--max-cost to continue", R->limit_err.msg, R->r->n_new);
    } else if (!rc && run_stopped(R)) {
        R->r->interrupted = 1;
        rc = err_set(e, PWB_EINTR, "interrupted: %ld predictions kept; run the suite again to resume", R->r->n_new);
    }
    return rc;
}
