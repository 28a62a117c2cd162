/* Read models for the reports: runs, the cells of a run, and per-cell outcomes joined with the
 * examples' gold labels. Not hot paths, so statements are prepared per call. */
#include "store/db_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int prepare(pwb_db *db, const char *sql, sqlite3_stmt **s, pwb_err *e)
{
    if (sqlite3_prepare_v2(db->h, sql, -1, s, NULL) != SQLITE_OK)
        return db_fail(db, "prepare read", e);
    return PWB_OK;
}

static double col_dbl(sqlite3_stmt *s, int i)
{
    return sqlite3_column_type(s, i) == SQLITE_NULL ? NAN : sqlite3_column_double(s, i);
}

static int64_t col_i64(sqlite3_stmt *s, int i, int64_t null_value)
{
    return sqlite3_column_type(s, i) == SQLITE_NULL ? null_value : sqlite3_column_int64(s, i);
}

void db_run_info_free(db_run_info *r)
{
    if (!r)
        return;
    free(r->suite_name);
    free(r->suite_path);
    free(r->suite_sha256);
    free(r->started);
    free(r->finished);
    free(r->status);
    free(r->pwb_version);
    free(r->suite_json);
    memset(r, 0, sizeof *r);
}

int db_run_get(pwb_db *db, int64_t run_id, db_run_info *out, pwb_err *e)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s;
    int rc = prepare(db,
                     "SELECT id, suite_name, suite_path, suite_sha256, started, finished, status, pwb_version,"
                     " seed, suite_json FROM runs WHERE id = ?1 OR (?1 = 0 AND id = (SELECT max(id) FROM runs))",
                     &s, e);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, run_id);
    int st = sqlite3_step(s);
    if (st == SQLITE_DONE) {
        sqlite3_finalize(s);
        if (run_id == 0)
            return err_set(e, PWB_EINVAL, "%s: no runs in this database", db->path);
        return err_set(e, PWB_EINVAL, "%s: no run %lld", db->path, (long long)run_id);
    }
    if (st != SQLITE_ROW) {
        rc = db_fail(db, "read run", e);
        sqlite3_finalize(s);
        return rc;
    }
    int oom = 0;
    out->id = sqlite3_column_int64(s, 0);
    out->suite_name = db_col_dup(s, 1, &oom);
    out->suite_path = db_col_dup(s, 2, &oom);
    out->suite_sha256 = db_col_dup(s, 3, &oom);
    out->started = db_col_dup(s, 4, &oom);
    out->finished = db_col_dup(s, 5, &oom);
    out->status = db_col_dup(s, 6, &oom);
    out->pwb_version = db_col_dup(s, 7, &oom);
    out->seed = (uint64_t)sqlite3_column_int64(s, 8);
    out->suite_json = db_col_dup(s, 9, &oom);
    sqlite3_finalize(s);
    if (oom) {
        db_run_info_free(out);
        return err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
    }
    return PWB_OK;
}

void db_cells_free(db_cell_info *cells, size_t n)
{
    if (!cells)
        return;
    for (size_t i = 0; i < n; i++) {
        db_cell_info *c = &cells[i];
        free(c->dataset);
        free(c->split);
        free(c->model);
        free(c->provider);
        free(c->method);
        free(c->kind);
        free(c->template_path);
        free(c->scoring);
        free(c->sweep);
        free(c->sweep_point);
        free(c->calibration);
        free(c->calib_prior);
        free(c->shot_split);
    }
    free(cells);
}

int db_cells_list(pwb_db *db, int64_t run_id, db_cell_info **cells, size_t *n, pwb_err *e)
{
    *cells = NULL;
    *n = 0;
    sqlite3_stmt *s;
    int rc = prepare(db,
                     "SELECT id, run_id, soft_prompt_id, dataset, split, model, provider, method, kind,"
                     " template_path, scoring, n_planned, sweep, sweep_point, calibration, calib_prior, train_limit,"
                     " shot_split FROM cells WHERE run_id = ?1"
                     " ORDER BY id",
                     &s, e);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, run_id);
    size_t cap = 0;
    db_cell_info *v = NULL;
    int st, oom = 0;
    while ((st = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            db_cell_info *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                oom = 1;
                break;
            }
            v = nv;
            cap = nc;
        }
        db_cell_info *c = &v[(*n)++];
        memset(c, 0, sizeof *c);
        c->id = sqlite3_column_int64(s, 0);
        c->run_id = sqlite3_column_int64(s, 1);
        c->soft_prompt_id = col_i64(s, 2, 0);
        c->dataset = db_col_dup(s, 3, &oom);
        c->split = db_col_dup(s, 4, &oom);
        c->model = db_col_dup(s, 5, &oom);
        c->provider = db_col_dup(s, 6, &oom);
        c->method = db_col_dup(s, 7, &oom);
        c->kind = db_col_dup(s, 8, &oom);
        c->template_path = db_col_dup(s, 9, &oom);
        c->scoring = db_col_dup(s, 10, &oom);
        c->n_planned = (long)col_i64(s, 11, 0);
        c->sweep = db_col_dup(s, 12, &oom);
        c->sweep_point = db_col_dup(s, 13, &oom);
        c->calibration = db_col_dup(s, 14, &oom);
        c->calib_prior = db_col_dup(s, 15, &oom);
        c->train_limit = (long)col_i64(s, 16, -1);
        c->shot_split = db_col_dup(s, 17, &oom);
        if (oom)
            break;
    }
    if (oom)
        rc = err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
    else if (st != SQLITE_DONE)
        rc = db_fail(db, "read cells", e);
    sqlite3_finalize(s);
    if (rc) {
        db_cells_free(v, *n);
        *n = 0;
        return rc;
    }
    *cells = v;
    return PWB_OK;
}

/* The label an extracted answer names: its word among words[] without case and surrounding
 * blanks (what v_confusion does in SQL). */
static int answer_label(const unsigned char *ans, char *const *words, int nw)
{
    if (!ans)
        return DB_PRED_OTHER;
    while (*ans == ' ' || *ans == '\t' || *ans == '\n' || *ans == '\r')
        ans++;
    size_t len = strlen((const char *)ans);
    while (len && (ans[len - 1] == ' ' || ans[len - 1] == '\t' || ans[len - 1] == '\n' || ans[len - 1] == '\r'))
        len--;
    for (int i = 0; i < nw; i++)
        if (words[i] && strlen(words[i]) == len && !strncasecmp(words[i], (const char *)ans, len))
            return i;
    return DB_PRED_OTHER;
}

int db_cell_outcomes(pwb_db *db, int64_t cell_id, db_outcome **out, size_t *n, pwb_err *e)
{
    *out = NULL;
    *n = 0;
    char **words = NULL;
    int nw = 0;
    sqlite3_stmt *s;
    int rc = prepare(db, "SELECT dataset, split FROM cells WHERE id = ?1", &s, e);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, cell_id);
    if (sqlite3_step(s) == SQLITE_ROW)
        rc = db_split_labels(db, (const char *)sqlite3_column_text(s, 0), (const char *)sqlite3_column_text(s, 1),
                            &words, &nw, e);
    sqlite3_finalize(s);
    if (rc)
        return rc;
    rc = prepare(db,
                 "SELECT p.row, p.valid, p.correct, x.label, p.tokens_in, p.tokens_out, p.latency_s,"
                 " p.cpu_s, p.cost_usd, p.cached, p.error IS NOT NULL, p.extracted, p.correct_norm"
                 " FROM predictions p JOIN cells c ON c.id = p.cell_id"
                 " LEFT JOIN examples x ON x.dataset = c.dataset AND x.split = c.split AND x.row = p.row"
                 " WHERE p.cell_id = ?1 ORDER BY p.row",
                 &s, e);
    if (rc) {
        db_labels_free(words, nw);
        return rc;
    }
    sqlite3_bind_int64(s, 1, cell_id);
    size_t cap = 0;
    db_outcome *v = NULL;
    int st;
    while ((st = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            db_outcome *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                free(v);
                sqlite3_finalize(s);
                db_labels_free(words, nw);
                *n = 0;
                return err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
            }
            v = nv;
            cap = nc;
        }
        db_outcome *o = &v[(*n)++];
        o->row = (long)sqlite3_column_int64(s, 0);
        o->valid = sqlite3_column_int(s, 1) != 0;
        o->correct = sqlite3_column_int(s, 2) != 0;
        o->label = (int)col_i64(s, 3, -1);
        o->tokens_in = (int)col_i64(s, 4, -1);
        o->tokens_out = (int)col_i64(s, 5, -1);
        o->latency_s = col_dbl(s, 6);
        o->cpu_s = col_dbl(s, 7);
        o->cost_usd = col_dbl(s, 8);
        o->cached = sqlite3_column_int(s, 9) != 0;
        o->error = sqlite3_column_int(s, 10) != 0;
        o->predicted = o->correct && o->label >= 0 ? o->label
                       : !o->valid                 ? DB_PRED_INVALID
                                                   : answer_label(sqlite3_column_text(s, 11), words, nw);
        o->correct_norm = (int)col_i64(s, 12, -1);
    }
    db_labels_free(words, nw);
    if (st != SQLITE_DONE) {
        rc = db_fail(db, "read predictions", e);
        free(v);
        v = NULL;
        *n = 0;
    }
    sqlite3_finalize(s);
    *out = v;
    return rc;
}

void db_soft_prompt_info_free(db_soft_prompt_info *sp)
{
    if (!sp)
        return;
    free(sp->config_sha256);
    free(sp->model);
    free(sp->dataset);
    free(sp->init);
    free(sp->artifact_path);
    memset(sp, 0, sizeof *sp);
}

int db_soft_prompt_get(pwb_db *db, int64_t id, db_soft_prompt_info *out, pwb_err *e)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s;
    int rc = prepare(db,
                     "SELECT id, config_sha256, model, dataset, init, artifact_path, n_tokens,"
                     " trainable_params, artifact_bytes, examples_seen, steps, train_seconds, best_eval_acc,"
                     " train_cpu_s FROM soft_prompts WHERE id = ?1",
                     &s, e);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    int st = sqlite3_step(s);
    if (st != SQLITE_ROW) {
        rc = st == SQLITE_DONE ? err_set(e, PWB_EINVAL, "%s: no soft prompt %lld", db->path, (long long)id)
                               : db_fail(db, "read soft prompt", e);
        sqlite3_finalize(s);
        return rc;
    }
    int oom = 0;
    out->id = sqlite3_column_int64(s, 0);
    out->config_sha256 = db_col_dup(s, 1, &oom);
    out->model = db_col_dup(s, 2, &oom);
    out->dataset = db_col_dup(s, 3, &oom);
    out->init = db_col_dup(s, 4, &oom);
    out->artifact_path = db_col_dup(s, 5, &oom);
    out->n_tokens = (int)col_i64(s, 6, 0);
    out->trainable_params = col_i64(s, 7, -1);
    out->artifact_bytes = col_i64(s, 8, -1);
    out->examples_seen = col_i64(s, 9, -1);
    out->steps = col_i64(s, 10, -1);
    out->train_seconds = col_dbl(s, 11);
    out->best_eval_acc = col_dbl(s, 12);
    out->train_cpu_s = col_dbl(s, 13);
    sqlite3_finalize(s);
    if (oom) {
        db_soft_prompt_info_free(out);
        return err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
    }
    return PWB_OK;
}

/* Training curves are read whole: a run of 10^5 steps is a few MB, and the charts thin them out. */
#define DB_CURVE_MAX 10000000

int db_train_steps_list(pwb_db *db, int64_t soft_prompt_id, db_train_step_info **out, size_t *n, pwb_err *e)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s;
    int rc = prepare(db,
                     "SELECT step, loss, lr, seconds, examples_seen FROM train_steps"
                     " WHERE soft_prompt_id = ?1 ORDER BY step",
                     &s, e);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, soft_prompt_id);
    size_t cap = 0;
    db_train_step_info *v = NULL;
    int st;
    while ((st = sqlite3_step(s)) == SQLITE_ROW && *n < DB_CURVE_MAX) {
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            db_train_step_info *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                rc = err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
                break;
            }
            v = nv;
            cap = nc;
        }
        db_train_step_info *p = &v[(*n)++];
        p->step = (long)sqlite3_column_int64(s, 0);
        p->loss = col_dbl(s, 1);
        p->lr = col_dbl(s, 2);
        p->seconds = col_dbl(s, 3);
        p->examples_seen = col_i64(s, 4, -1);
    }
    if (!rc && st != SQLITE_DONE && st != SQLITE_ROW)
        rc = db_fail(db, "read training steps", e);
    sqlite3_finalize(s);
    if (rc) {
        free(v);
        *n = 0;
        return rc;
    }
    *out = v;
    return PWB_OK;
}

int db_train_evals_list(pwb_db *db, int64_t soft_prompt_id, db_train_eval_info **out, size_t *n, pwb_err *e)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s;
    int rc = prepare(db,
                     "SELECT step, accuracy, loss FROM train_evals WHERE soft_prompt_id = ?1 ORDER BY step",
                     &s, e);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, soft_prompt_id);
    size_t cap = 0;
    db_train_eval_info *v = NULL;
    int st;
    while ((st = sqlite3_step(s)) == SQLITE_ROW && *n < DB_CURVE_MAX) {
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 32;
            db_train_eval_info *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                rc = err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
                break;
            }
            v = nv;
            cap = nc;
        }
        db_train_eval_info *p = &v[(*n)++];
        p->step = (long)sqlite3_column_int64(s, 0);
        p->accuracy = col_dbl(s, 1);
        p->loss = col_dbl(s, 2);
    }
    if (!rc && st != SQLITE_DONE && st != SQLITE_ROW)
        rc = db_fail(db, "read training evaluations", e);
    sqlite3_finalize(s);
    if (rc) {
        free(v);
        *n = 0;
        return rc;
    }
    *out = v;
    return PWB_OK;
}

int db_run_spent_usd(pwb_db *db, int64_t run_id, double *usd, pwb_err *e)
{
    *usd = 0;
    sqlite3_stmt *s;
    int rc = prepare(db,
                     "SELECT coalesce(sum(p.cost_usd), 0) FROM predictions p JOIN cells c ON c.id = p.cell_id"
                     " WHERE c.run_id = ?1 AND p.cached = 0",
                     &s, e);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, run_id);
    if (sqlite3_step(s) == SQLITE_ROW)
        *usd = sqlite3_column_double(s, 0);
    else
        rc = db_fail(db, "read the run's spending", e);
    sqlite3_finalize(s);
    return rc;
}

int db_run_tallies(pwb_db *db, int64_t run_id, db_cell_tally *cells, size_t n, pwb_err *e)
{
    sqlite3_stmt *s;
    int rc = prepare(db, "SELECT cell_id, n, correct, invalid, errors, total_cost_usd FROM v_summary WHERE run_id = ?1",
                     &s, e);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, run_id);
    int st;
    while ((st = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0);
        for (size_t i = 0; i < n; i++) {
            if (cells[i].cell_id != id)
                continue;
            cells[i].n = (long)sqlite3_column_int64(s, 1);
            cells[i].correct = (long)sqlite3_column_int64(s, 2);
            cells[i].invalid = (long)sqlite3_column_int64(s, 3);
            cells[i].errors = (long)sqlite3_column_int64(s, 4);
            cells[i].cost_usd = sqlite3_column_double(s, 5);
        }
    }
    if (st != SQLITE_DONE)
        rc = db_fail(db, "read the run's summary", e);
    sqlite3_finalize(s);
    return rc;
}

void db_labels_free(char **names, int n)
{
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

int db_split_labels(pwb_db *db, const char *dataset, const char *split, char ***names, int *n, pwb_err *e)
{
    *names = NULL;
    *n = 0;
    sqlite3_stmt *s;
    /* labels are small indices (a card caps them); the bound keeps a damaged file from asking for
     * a huge array */
    int rc = prepare(db,
                     "SELECT label, min(answer) FROM examples WHERE dataset = ?1 AND split = ?2"
                     " AND label BETWEEN 0 AND 4095 GROUP BY label ORDER BY label",
                     &s, e);
    if (rc)
        return rc;
    db_bind_text(s, 1, dataset);
    db_bind_text(s, 2, split ? split : "");
    char **v = NULL;
    int cap = 0, st, oom = 0;
    while ((st = sqlite3_step(s)) == SQLITE_ROW) {
        int lab = sqlite3_column_int(s, 0);
        if (lab >= cap) {
            int nc = lab + 1;
            char **nv = realloc(v, (size_t)nc * sizeof *nv);
            if (!nv) {
                oom = 1;
                break;
            }
            memset(nv + cap, 0, (size_t)(nc - cap) * sizeof *nv);
            v = nv;
            cap = nc;
        }
        v[lab] = db_col_dup(s, 1, &oom);
        if (oom)
            break;
    }
    if (oom)
        rc = err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
    else if (st != SQLITE_DONE)
        rc = db_fail(db, "read labels", e);
    sqlite3_finalize(s);
    if (rc) {
        db_labels_free(v, cap);
        return rc;
    }
    *names = v;
    *n = cap;
    return PWB_OK;
}

int db_prompt_search_get(pwb_db *db, int64_t cell_id, db_prompt_search_info *out, pwb_err *e)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s;
    int rc = prepare(db,
                     "SELECT train_limit, heldout, max_evals, n_candidates, rounds, evals, examples_read, winner,"
                     " cpu_s, wall_s, best_heldout_acc FROM prompt_searches WHERE cell_id = ?1",
                     &s, e);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, cell_id);
    int st = sqlite3_step(s);
    if (st == SQLITE_ROW) {
        long *v[] = {&out->train_limit, &out->heldout, &out->max_evals, &out->n_candidates, &out->rounds,
                     &out->evals, &out->examples_read, &out->winner};
        for (int i = 0; i < 8; i++)
            *v[i] = (long)col_i64(s, i, -1);
        out->cpu_s = col_dbl(s, 8);
        out->wall_s = col_dbl(s, 9);
        out->best_heldout_acc = col_dbl(s, 10);
        out->found = 1;
    } else if (st != SQLITE_DONE) {
        rc = db_fail(db, "read prompt search", e);
    }
    sqlite3_finalize(s);
    return rc;
}
