/* Private to src/store: the handle, its statement cache and helpers shared by the store files. */
#ifndef PWB_STORE_DB_INTERNAL_H
#define PWB_STORE_DB_INTERNAL_H

#include <sqlite3.h>

#include "store/db.h"

/* Statements prepared once per handle (SQLITE_PREPARE_PERSISTENT) and reset after each use:
 * preparing costs more than running a one-row insert, and the runner inserts thousands. */
enum db_stmt_id {
    ST_RUN_FIND,
    ST_RUN_CREATE,
    ST_RUN_FINISH,
    ST_CELL_UPSERT,
    ST_CELL_ID,
    ST_CELL_SET_SP,
    ST_CELL_SET_PRIOR,
    ST_CALIB_INPUT,
    ST_SEARCH_PUT,
    ST_CAND_PUT,
    ST_SEARCH_TPL,
    ST_EXAMPLE_UPSERT,
    ST_DONE_ROWS,
    ST_PRED_INSERT,
    ST_CACHE_GET,
    ST_CACHE_HIT,
    ST_CACHE_PUT,
    ST_SP_UPSERT,
    ST_SP_FIND,
    ST_STEP_INSERT,
    ST_EVAL_INSERT,
    ST_COUNT
};

struct pwb_db {
    sqlite3 *h;
    char *path;
    int readonly;
    int tx_depth;
    sqlite3_stmt *st[ST_COUNT];
};

extern const char *const db_migrations[];
extern const int db_n_migrations;

/* The cached statement, reset and with cleared bindings; NULL with e set on failure. */
sqlite3_stmt *db_stmt(pwb_db *db, int id, pwb_err *e);
/* Fills e with "<path>: <what>: <sqlite message>" and returns PWB_EDB. */
int db_fail(pwb_db *db, const char *what, pwb_err *e);
/* Binds text or NULL. */
int db_bind_text(sqlite3_stmt *s, int i, const char *v);
/* Copies column i as an owned string (NULL for SQL NULL). Sets *oom on allocation failure. */
char *db_col_dup(sqlite3_stmt *s, int i, int *oom);

#endif
