/* Read model for per-example views: a cell's predictions with their examples (inputs, prompts,
 * outputs). */
#include "store/db_internal.h"

#include <stdlib.h>
#include <string.h>

void db_details_free(db_detail *d, size_t n)
{
    for (size_t i = 0; d && i < n; i++) {
        free(d[i].input);
        free(d[i].answer);
        free(d[i].prompt);
        free(d[i].output);
        free(d[i].extracted);
        free(d[i].choice_logprobs);
    }
    free(d);
}

int db_cell_details(pwb_db *db, int64_t cell_id, db_detail **out, size_t *n, pwb_err *e)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db->h,
                           "SELECT p.row, x.input, x.answer, p.prompt, p.output, p.extracted, p.choice_logprobs,"
                           " p.valid, p.correct, x.label"
                           " FROM predictions p JOIN cells c ON c.id = p.cell_id"
                           " LEFT JOIN examples x ON x.dataset = c.dataset AND x.split = c.split AND x.row = p.row"
                           " WHERE p.cell_id = ?1 ORDER BY p.row",
                           -1, &s, NULL) != SQLITE_OK)
        return db_fail(db, "prepare prediction details", e);
    sqlite3_bind_int64(s, 1, cell_id);
    size_t cap = 0;
    db_detail *v = NULL;
    int st, oom = 0;
    while ((st = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 256;
            db_detail *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                oom = 1;
                break;
            }
            v = nv;
            cap = nc;
        }
        db_detail *d = &v[(*n)++];
        memset(d, 0, sizeof *d);
        d->row = (long)sqlite3_column_int64(s, 0);
        d->input = db_col_dup(s, 1, &oom);
        d->answer = db_col_dup(s, 2, &oom);
        d->prompt = db_col_dup(s, 3, &oom);
        d->output = db_col_dup(s, 4, &oom);
        d->extracted = db_col_dup(s, 5, &oom);
        d->choice_logprobs = db_col_dup(s, 6, &oom);
        d->valid = sqlite3_column_int(s, 7) != 0;
        d->correct = sqlite3_column_int(s, 8) != 0;
        d->label = sqlite3_column_type(s, 9) == SQLITE_NULL ? -1 : sqlite3_column_int(s, 9);
        if (oom)
            break;
    }
    int rc = PWB_OK;
    if (oom)
        rc = err_set(e, PWB_ENOMEM, "%s: out of memory", db->path);
    else if (st != SQLITE_DONE)
        rc = db_fail(db, "read prediction details", e);
    sqlite3_finalize(s);
    if (rc) {
        db_details_free(v, *n);
        *n = 0;
        return rc;
    }
    *out = v;
    return PWB_OK;
}
