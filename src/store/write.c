/* Writes: runs, cells, examples, predictions, the response cache, soft prompts and their
 * training curves. Every function uses a cached statement from db_stmt. */
#include "store/db_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/str.h"

#ifndef PWB_VERSION
#define PWB_VERSION "0.1.0"
#endif

/* Steps a statement that returns no rows, then resets it. */
static int step_done(pwb_db *db, sqlite3_stmt *s, const char *what, pwb_err *e)
{
    int rc = sqlite3_step(s);
    int out = rc == SQLITE_DONE ? PWB_OK : db_fail(db, what, e);
    sqlite3_reset(s);
    return out;
}

/* Steps a statement that returns at most one integer; *id = 0 when no row. */
static int step_id(pwb_db *db, sqlite3_stmt *s, const char *what, int64_t *id, pwb_err *e)
{
    int rc = sqlite3_step(s);
    int out = PWB_OK;
    *id = 0;
    if (rc == SQLITE_ROW)
        *id = sqlite3_column_int64(s, 0);
    else if (rc != SQLITE_DONE)
        out = db_fail(db, what, e);
    sqlite3_reset(s);
    return out;
}

static int need_rw(pwb_db *db, pwb_err *e)
{
    if (db->readonly)
        return err_set(e, PWB_EINVAL, "%s: opened read-only", db->path);
    return PWB_OK;
}

/* [-0.1,-2.3]; non-finite values become null (JSON has no infinities). */
static int logprobs_json(pwb_buf *b, const double *v, int n)
{
    if (buf_putc(b, '['))
        return -1;
    for (int i = 0; i < n; i++) {
        int r = isfinite(v[i]) ? buf_printf(b, "%s%.9g", i ? "," : "", v[i]) : buf_printf(b, "%snull", i ? "," : "");
        if (r)
            return -1;
    }
    return buf_putc(b, ']');
}

int db_run_find(pwb_db *db, const char *suite_sha256, int64_t *id, pwb_err *e)
{
    *id = 0;
    sqlite3_stmt *s = db_stmt(db, ST_RUN_FIND, e);
    if (!s)
        return PWB_EDB;
    db_bind_text(s, 1, suite_sha256);
    return step_id(db, s, "find run", id, e);
}

int db_run_create(pwb_db *db, const char *suite_name, const char *suite_path, const char *suite_sha256,
                  const char *suite_json, uint64_t seed, int64_t *id, pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    if (!suite_name || !suite_sha256)
        return err_set(e, PWB_EINVAL, "%s: a run needs a suite name and sha256", db->path);
    sqlite3_stmt *s = db_stmt(db, ST_RUN_CREATE, e);
    if (!s)
        return PWB_EDB;
    db_bind_text(s, 1, suite_name);
    db_bind_text(s, 2, suite_path);
    db_bind_text(s, 3, suite_sha256);
    db_bind_text(s, 4, suite_json);
    /* Stored as the same 64 bits; db_run_get casts back, so every seed round-trips. */
    sqlite3_bind_int64(s, 5, (sqlite3_int64)seed);
    db_bind_text(s, 6, PWB_VERSION);
    if ((rc = step_done(db, s, "create run", e)))
        return rc;
    *id = sqlite3_last_insert_rowid(db->h);
    return PWB_OK;
}

int db_run_finish(pwb_db *db, int64_t run_id, const char *status, pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    sqlite3_stmt *s = db_stmt(db, ST_RUN_FINISH, e);
    if (!s)
        return PWB_EDB;
    sqlite3_bind_int64(s, 1, run_id);
    db_bind_text(s, 2, status ? status : "done");
    if ((rc = step_done(db, s, "finish run", e)))
        return rc;
    if (sqlite3_changes(db->h) == 0)
        return err_set(e, PWB_EINVAL, "%s: no run %lld", db->path, (long long)run_id);
    return PWB_OK;
}

int db_run_settle(pwb_db *db, int64_t run_id, const char *status, int added, pwb_err *e)
{
    if (!added && status) {
        sqlite3_stmt *s = NULL;
        if (sqlite3_prepare_v2(db->h, "SELECT status = ?2 AND finished IS NOT NULL FROM runs WHERE id = ?1", -1, &s,
                               NULL) != SQLITE_OK)
            return db_fail(db, "read the run's status", e);
        sqlite3_bind_int64(s, 1, run_id);
        db_bind_text(s, 2, status);
        int same = sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) == 1;
        sqlite3_finalize(s);
        if (same)
            return PWB_OK;
    }
    return db_run_finish(db, run_id, status, e);
}

int db_cell_upsert(pwb_db *db, const db_cell *c, int64_t *cell_id, pwb_err *e)
{
    *cell_id = 0;
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    if (!c->dataset || !c->model || !c->method)
        return err_set(e, PWB_EINVAL, "%s: a cell needs a dataset, a model and a method", db->path);
    sqlite3_stmt *s = db_stmt(db, ST_CELL_UPSERT, e);
    if (!s)
        return PWB_EDB;
    sqlite3_bind_int64(s, 1, c->run_id);
    db_bind_text(s, 2, c->dataset);
    db_bind_text(s, 3, c->split ? c->split : "");
    db_bind_text(s, 4, c->model);
    db_bind_text(s, 5, c->provider);
    db_bind_text(s, 6, c->method);
    db_bind_text(s, 7, c->kind);
    db_bind_text(s, 8, c->template_path);
    db_bind_text(s, 9, c->template_sha256);
    db_bind_text(s, 10, c->scoring);
    sqlite3_bind_int64(s, 11, c->n_planned);
    db_bind_text(s, 12, c->sweep);
    db_bind_text(s, 13, c->sweep_point);
    if (c->has_budget) {
        db_bind_text(s, 14, c->calibration ? c->calibration : "none");
        if (c->train_limit >= 0)
            sqlite3_bind_int64(s, 15, c->train_limit);
    }
    db_bind_text(s, 16, c->shot_split);
    db_bind_text(s, 17, c->train_split);
    if ((rc = step_done(db, s, "upsert cell", e)))
        return rc;
    if (!(s = db_stmt(db, ST_CELL_ID, e)))
        return PWB_EDB;
    sqlite3_bind_int64(s, 1, c->run_id);
    db_bind_text(s, 2, c->dataset);
    db_bind_text(s, 3, c->model);
    db_bind_text(s, 4, c->method);
    if ((rc = step_id(db, s, "find cell", cell_id, e)))
        return rc;
    if (*cell_id == 0)
        return err_set(e, PWB_EDB, "%s: cell vanished after upsert", db->path);
    return PWB_OK;
}

int db_cell_set_soft_prompt(pwb_db *db, int64_t cell_id, int64_t soft_prompt_id, pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    sqlite3_stmt *s = db_stmt(db, ST_CELL_SET_SP, e);
    if (!s)
        return PWB_EDB;
    sqlite3_bind_int64(s, 1, cell_id);
    if (soft_prompt_id > 0)
        sqlite3_bind_int64(s, 2, soft_prompt_id);
    return step_done(db, s, "link cell to soft prompt", e);
}

int db_cell_set_calib_prior(pwb_db *db, int64_t cell_id, const double *log_prior, int n, pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    sqlite3_stmt *s = db_stmt(db, ST_CELL_SET_PRIOR, e);
    if (!s)
        return PWB_EDB;
    pwb_buf b;
    buf_init(&b);
    if (log_prior && n > 0 && logprobs_json(&b, log_prior, n)) {
        buf_free(&b);
        return err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
    }
    sqlite3_bind_int64(s, 1, cell_id);
    if (b.len)
        sqlite3_bind_text(s, 2, b.data, (int)b.len, SQLITE_STATIC);
    rc = step_done(db, s, "set calibration prior", e);
    sqlite3_clear_bindings(s);
    buf_free(&b);
    return rc;
}

int db_calib_input_put(pwb_db *db, int64_t cell_id, int idx, const char *input, const char *prompt,
                       const double *choice_logprob, int n, pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    sqlite3_stmt *s = db_stmt(db, ST_CALIB_INPUT, e);
    if (!s)
        return PWB_EDB;
    pwb_buf b;
    buf_init(&b);
    if (choice_logprob && n > 0 && logprobs_json(&b, choice_logprob, n)) {
        buf_free(&b);
        return err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
    }
    sqlite3_bind_int64(s, 1, cell_id);
    sqlite3_bind_int(s, 2, idx);
    db_bind_text(s, 3, input);
    db_bind_text(s, 4, prompt);
    if (b.len)
        sqlite3_bind_text(s, 5, b.data, (int)b.len, SQLITE_STATIC);
    rc = step_done(db, s, "store calibration input", e);
    sqlite3_clear_bindings(s);
    buf_free(&b);
    return rc;
}

int db_prompt_search_put(pwb_db *db, const db_prompt_search *ps, int64_t *search_id, pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    sqlite3_stmt *s = db_stmt(db, ST_SEARCH_PUT, e);
    if (!s)
        return PWB_EDB;
    sqlite3_bind_int64(s, 1, ps->cell_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)ps->seed);
    const long v[] = {ps->train_limit, ps->heldout, ps->max_evals, ps->n_candidates, ps->rounds, ps->evals,
                      ps->examples_read};
    for (int i = 0; i < 7; i++)
        sqlite3_bind_int64(s, 3 + i, v[i]);
    sqlite3_bind_double(s, 10, ps->cpu_s);
    sqlite3_bind_double(s, 11, ps->wall_s);
    sqlite3_bind_int64(s, 12, ps->winner);
    sqlite3_bind_double(s, 13, ps->best_heldout_acc);
    db_bind_text(s, 14, ps->template_path);
    if ((rc = step_done(db, s, "store prompt search", e)))
        return rc;
    *search_id = sqlite3_last_insert_rowid(db->h);
    return PWB_OK;
}

int db_prompt_candidate_put(pwb_db *db, const db_prompt_candidate *c, pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    sqlite3_stmt *s = db_stmt(db, ST_CAND_PUT, e);
    if (!s)
        return PWB_EDB;
    pwb_buf b;
    buf_init(&b);
    if (c->prior && c->n_prior > 0 && logprobs_json(&b, c->prior, c->n_prior)) {
        buf_free(&b);
        return err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
    }
    sqlite3_bind_int64(s, 1, c->search_id);
    sqlite3_bind_int(s, 2, c->idx);
    db_bind_text(s, 3, c->template_name);
    db_bind_text(s, 4, c->instruction);
    db_bind_text(s, 5, c->demo_rows);
    sqlite3_bind_int(s, 6, c->last_round);
    sqlite3_bind_int64(s, 7, c->n_eval);
    sqlite3_bind_int64(s, 8, c->correct);
    if (c->n_eval > 0)
        sqlite3_bind_double(s, 9, (double)c->correct / (double)c->n_eval);
    if (b.len)
        sqlite3_bind_text(s, 10, b.data, (int)b.len, SQLITE_STATIC);
    db_bind_text(s, 11, c->tried_rows);
    db_bind_text(s, 12, c->demo_rationales);
    rc = step_done(db, s, "store prompt candidate", e);
    sqlite3_clear_bindings(s);
    buf_free(&b);
    return rc;
}

int db_prompt_search_template(pwb_db *db, int64_t cell_id, char **path, pwb_err *e)
{
    *path = NULL;
    sqlite3_stmt *s = db_stmt(db, ST_SEARCH_TPL, e);
    if (!s)
        return PWB_EDB;
    sqlite3_bind_int64(s, 1, cell_id);
    int st = sqlite3_step(s), oom = 0, rc = PWB_OK;
    if (st == SQLITE_ROW)
        *path = db_col_dup(s, 0, &oom);
    else if (st != SQLITE_DONE)
        rc = db_fail(db, "read prompt search", e);
    sqlite3_reset(s);
    if (oom)
        rc = err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
    return rc;
}

int db_example_upsert(pwb_db *db, const char *dataset, const char *split, long row, const char *input,
                      const char *answer, int label, pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    if (!dataset)
        return err_set(e, PWB_EINVAL, "%s: an example needs a dataset", db->path);
    sqlite3_stmt *s = db_stmt(db, ST_EXAMPLE_UPSERT, e);
    if (!s)
        return PWB_EDB;
    db_bind_text(s, 1, dataset);
    db_bind_text(s, 2, split ? split : "");
    sqlite3_bind_int64(s, 3, row);
    db_bind_text(s, 4, input);
    db_bind_text(s, 5, answer);
    if (label >= 0)
        sqlite3_bind_int(s, 6, label);
    return step_done(db, s, "upsert example", e);
}

int db_cell_done_rows(pwb_db *db, int64_t cell_id, long **rows, size_t *n, pwb_err *e)
{
    *rows = NULL;
    *n = 0;
    sqlite3_stmt *s = db_stmt(db, ST_DONE_ROWS, e);
    if (!s)
        return PWB_EDB;
    sqlite3_bind_int64(s, 1, cell_id);
    size_t cap = 0;
    long *v = NULL;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            long *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                free(v);
                sqlite3_reset(s);
                return err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
            }
            v = nv;
            cap = nc;
        }
        v[(*n)++] = (long)sqlite3_column_int64(s, 0);
    }
    if (rc != SQLITE_DONE) {
        int out = db_fail(db, "done rows", e);
        sqlite3_reset(s);
        free(v);
        *n = 0;
        return out;
    }
    sqlite3_reset(s);
    *rows = v;
    return PWB_OK;
}


int db_prediction_insert(pwb_db *db, const db_prediction *p, pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    sqlite3_stmt *s = db_stmt(db, ST_PRED_INSERT, e);
    if (!s)
        return PWB_EDB;
    pwb_buf lp;
    buf_init(&lp);
    if (p->choice_logprob && p->n_choices > 0 && logprobs_json(&lp, p->choice_logprob, p->n_choices)) {
        buf_free(&lp);
        return err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
    }
    sqlite3_bind_int64(s, 1, p->cell_id);
    sqlite3_bind_int64(s, 2, p->row);
    db_bind_text(s, 3, p->prompt);
    db_bind_text(s, 4, p->prompt_sha256);
    db_bind_text(s, 5, p->output);
    db_bind_text(s, 6, p->extracted);
    sqlite3_bind_int(s, 7, p->valid != 0);
    sqlite3_bind_int(s, 8, p->correct != 0);
    sqlite3_bind_double(s, 9, p->latency_s); /* NaN binds as NULL */
    sqlite3_bind_double(s, 10, p->cpu_s);
    if (p->tokens_in >= 0)
        sqlite3_bind_int(s, 11, p->tokens_in);
    if (p->tokens_out >= 0)
        sqlite3_bind_int(s, 12, p->tokens_out);
    sqlite3_bind_double(s, 13, p->cost_usd);
    sqlite3_bind_int(s, 14, p->retries);
    if (p->http_status > 0)
        sqlite3_bind_int(s, 15, p->http_status);
    sqlite3_bind_int(s, 16, p->cached != 0);
    db_bind_text(s, 17, p->error);
    if (lp.len)
        sqlite3_bind_text(s, 18, lp.data, (int)lp.len, SQLITE_STATIC);
    if (p->correct_norm >= 0 && p->choice_logprob)
        sqlite3_bind_int(s, 19, p->correct_norm != 0);
    rc = step_done(db, s, "insert prediction", e);
    sqlite3_clear_bindings(s); /* lp's memory is gone after this function */
    buf_free(&lp);
    return rc;
}

int db_cache_get(pwb_db *db, const char *key, char **value_json, pwb_err *e)
{
    *value_json = NULL;
    sqlite3_stmt *s = db_stmt(db, ST_CACHE_GET, e);
    if (!s)
        return PWB_EDB;
    db_bind_text(s, 1, key);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s);
        return PWB_OK;
    }
    if (rc != SQLITE_ROW) {
        int out = db_fail(db, "cache get", e);
        sqlite3_reset(s);
        return out;
    }
    int oom = 0;
    *value_json = db_col_dup(s, 0, &oom);
    sqlite3_reset(s);
    if (oom)
        return err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
    if (db->readonly)
        return PWB_OK;
    /* The hit counter is statistics only: a failure to bump it must not fail the lookup. */
    if ((s = db_stmt(db, ST_CACHE_HIT, NULL))) {
        db_bind_text(s, 1, key);
        sqlite3_step(s);
        sqlite3_reset(s);
    }
    return PWB_OK;
}

int db_cache_put(pwb_db *db, const char *key, const char *value_json, pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    if (!key || !value_json)
        return err_set(e, PWB_EINVAL, "%s: cache put needs a key and a value", db->path);
    sqlite3_stmt *s = db_stmt(db, ST_CACHE_PUT, e);
    if (!s)
        return PWB_EDB;
    db_bind_text(s, 1, key);
    db_bind_text(s, 2, value_json);
    return step_done(db, s, "cache put", e);
}

static void bind_opt_i64(sqlite3_stmt *s, int i, int64_t v)
{
    if (v >= 0)
        sqlite3_bind_int64(s, i, v);
}

static void bind_opt_dbl(sqlite3_stmt *s, int i, double v)
{
    if (v >= 0 && isfinite(v))
        sqlite3_bind_double(s, i, v);
}

int db_soft_prompt_upsert(pwb_db *db, const db_soft_prompt *sp, int64_t *id, pwb_err *e)
{
    *id = 0;
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    if (!sp->config_sha256 || !sp->model || !sp->dataset)
        return err_set(e, PWB_EINVAL, "%s: a soft prompt needs a config hash, a model and a dataset", db->path);
    sqlite3_stmt *s = db_stmt(db, ST_SP_UPSERT, e);
    if (!s)
        return PWB_EDB;
    db_bind_text(s, 1, sp->config_sha256);
    db_bind_text(s, 2, sp->model);
    db_bind_text(s, 3, sp->dataset);
    if (sp->n_tokens > 0)
        sqlite3_bind_int(s, 4, sp->n_tokens);
    db_bind_text(s, 5, sp->init);
    db_bind_text(s, 6, sp->artifact_path);
    bind_opt_i64(s, 7, sp->trainable_params);
    bind_opt_i64(s, 8, sp->artifact_bytes);
    bind_opt_dbl(s, 9, sp->train_seconds);
    bind_opt_i64(s, 10, sp->examples_seen);
    bind_opt_i64(s, 11, sp->steps);
    bind_opt_dbl(s, 12, sp->best_eval_acc);
    if (sp->train_cpu_s > 0) /* 0 is what a record without the measurement holds */
        bind_opt_dbl(s, 13, sp->train_cpu_s);
    if ((rc = step_done(db, s, "upsert soft prompt", e)))
        return rc;
    return db_soft_prompt_find(db, sp->config_sha256, id, e);
}

int db_soft_prompt_find(pwb_db *db, const char *config_sha256, int64_t *id, pwb_err *e)
{
    *id = 0;
    sqlite3_stmt *s = db_stmt(db, ST_SP_FIND, e);
    if (!s)
        return PWB_EDB;
    db_bind_text(s, 1, config_sha256);
    return step_id(db, s, "find soft prompt", id, e);
}

int db_train_step_insert(pwb_db *db, int64_t soft_prompt_id, long step, double loss, double lr,
                         double seconds, int64_t examples_seen, pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    sqlite3_stmt *s = db_stmt(db, ST_STEP_INSERT, e);
    if (!s)
        return PWB_EDB;
    sqlite3_bind_int64(s, 1, soft_prompt_id);
    sqlite3_bind_int64(s, 2, step);
    sqlite3_bind_double(s, 3, loss);
    sqlite3_bind_double(s, 4, lr);
    sqlite3_bind_double(s, 5, seconds);
    bind_opt_i64(s, 6, examples_seen);
    return step_done(db, s, "insert training step", e);
}

int db_train_eval_insert(pwb_db *db, int64_t soft_prompt_id, long step, double accuracy, double loss,
                         pwb_err *e)
{
    int rc = need_rw(db, e);
    if (rc)
        return rc;
    sqlite3_stmt *s = db_stmt(db, ST_EVAL_INSERT, e);
    if (!s)
        return PWB_EDB;
    sqlite3_bind_int64(s, 1, soft_prompt_id);
    sqlite3_bind_int64(s, 2, step);
    sqlite3_bind_double(s, 3, accuracy);
    sqlite3_bind_double(s, 4, loss);
    return step_done(db, s, "insert training eval", e);
}
