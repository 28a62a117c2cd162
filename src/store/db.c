/* Opening the results database: connection settings, migrations, transactions, the statement
 * cache and read-only queries for `pwb query`. */
#include "store/db_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/file.h"
#include "util/str.h"
#include "util/timer.h"

/* 'PWB1' in PRAGMA application_id marks our files, so pwb refuses to migrate someone else's. */
#define DB_APP_ID 0x50574231
#define DB_BUSY_MS 10000
#define DB_QUERY_MAX_SQL (1u << 20)

static const char *const stmt_sql[ST_COUNT] = {
    [ST_RUN_FIND] = "SELECT id FROM runs WHERE suite_sha256 = ?1 ORDER BY id DESC LIMIT 1",
    [ST_RUN_CREATE] = "INSERT INTO runs (suite_name, suite_path, suite_sha256, suite_json, seed, pwb_version)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_RUN_FINISH] = "UPDATE runs SET status = ?2, finished = strftime('%Y-%m-%dT%H:%M:%fZ','now')"
                      " WHERE id = ?1",
    [ST_CELL_UPSERT] =
        "INSERT INTO cells (run_id, dataset, split, model, provider, method, kind, template_path,"
        " template_sha256, scoring, n_planned, sweep, sweep_point, calibration, train_limit, shot_split,"
        " train_split)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        " ON CONFLICT (run_id, dataset, model, method) DO UPDATE SET split = excluded.split,"
        " provider = excluded.provider, kind = excluded.kind, template_path = excluded.template_path,"
        " template_sha256 = excluded.template_sha256, scoring = excluded.scoring,"
        " n_planned = excluded.n_planned, sweep = excluded.sweep, sweep_point = excluded.sweep_point,"
        " calibration = excluded.calibration, train_limit = excluded.train_limit,"
        " shot_split = excluded.shot_split, train_split = excluded.train_split",
    [ST_CELL_ID] = "SELECT id FROM cells WHERE run_id = ?1 AND dataset = ?2 AND model = ?3 AND method = ?4",
    [ST_CELL_SET_SP] = "UPDATE cells SET soft_prompt_id = ?2 WHERE id = ?1",
    [ST_CELL_SET_PRIOR] = "UPDATE cells SET calib_prior = ?2 WHERE id = ?1",
    [ST_SEARCH_PUT] =
        "INSERT OR REPLACE INTO prompt_searches (cell_id, seed, train_limit, heldout, max_evals, n_candidates,"
        " rounds, evals, examples_read, cpu_s, wall_s, winner, best_heldout_acc, template_path)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [ST_CAND_PUT] = "INSERT OR REPLACE INTO prompt_candidates (search_id, idx, template, instruction, demo_rows,"
                    " last_round, n_eval, correct, accuracy, calib_prior, tried_rows, demo_rationales)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [ST_SEARCH_TPL] = "SELECT template_path FROM prompt_searches WHERE cell_id = ?1",
    [ST_CALIB_INPUT] = "INSERT OR REPLACE INTO calib_inputs (cell_id, idx, input, prompt, choice_logprobs)"
                       " VALUES (?1, ?2, ?3, ?4, ?5)",
    /* The WHERE keeps a resumed run from rewriting every unchanged example. */
    [ST_EXAMPLE_UPSERT] =
        "INSERT INTO examples (dataset, split, row, input, answer, label) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        " ON CONFLICT (dataset, split, row) DO UPDATE SET input = excluded.input,"
        " answer = excluded.answer, label = excluded.label"
        " WHERE input IS NOT excluded.input OR answer IS NOT excluded.answer"
        " OR label IS NOT excluded.label",
    [ST_DONE_ROWS] = "SELECT row FROM predictions WHERE cell_id = ?1 ORDER BY row",
    [ST_PRED_INSERT] =
        "INSERT OR IGNORE INTO predictions (cell_id, row, prompt, prompt_sha256, output, extracted,"
        " valid, correct, latency_s, cpu_s, tokens_in, tokens_out, cost_usd, retries, http_status,"
        " cached, error, choice_logprobs, correct_norm) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
        " ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    [ST_CACHE_GET] = "SELECT value FROM cache WHERE key = ?1",
    [ST_CACHE_HIT] = "UPDATE cache SET hits = hits + 1 WHERE key = ?1",
    [ST_CACHE_PUT] = "INSERT INTO cache (key, value) VALUES (?1, ?2)"
                     " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [ST_SP_UPSERT] =
        "INSERT INTO soft_prompts (config_sha256, model, dataset, n_tokens, init, artifact_path,"
        " trainable_params, artifact_bytes, train_seconds, examples_seen, steps, best_eval_acc, train_cpu_s)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        " ON CONFLICT (config_sha256) DO UPDATE SET model = excluded.model, dataset = excluded.dataset,"
        " n_tokens = excluded.n_tokens, init = excluded.init, artifact_path = excluded.artifact_path,"
        " trainable_params = excluded.trainable_params, artifact_bytes = excluded.artifact_bytes,"
        " train_seconds = excluded.train_seconds, examples_seen = excluded.examples_seen,"
        " steps = excluded.steps, best_eval_acc = excluded.best_eval_acc, train_cpu_s = excluded.train_cpu_s,"
        " updated = strftime('%Y-%m-%dT%H:%M:%fZ','now')",
    [ST_SP_FIND] = "SELECT id FROM soft_prompts WHERE config_sha256 = ?1",
    [ST_STEP_INSERT] = "INSERT OR REPLACE INTO train_steps (soft_prompt_id, step, loss, lr, seconds,"
                       " examples_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_EVAL_INSERT] = "INSERT OR REPLACE INTO train_evals (soft_prompt_id, step, accuracy, loss)"
                       " VALUES (?1, ?2, ?3, ?4)",
};

int db_fail(pwb_db *db, const char *what, pwb_err *e)
{
    const char *path = db && db->path ? db->path : "database";
    const char *msg = db && db->h ? sqlite3_errmsg(db->h) : "out of memory";
    /* A write that failed (SQLITE_FULL: no space; SQLITE_IOERR_WRITE: what a file size limit or
     * quota gives, or a device error) is not a damaged database: exit as a failure, say why. */
    int x = db && db->h ? sqlite3_extended_errcode(db->h) : 0;
    if ((x & 0xff) == SQLITE_FULL || x == SQLITE_IOERR_WRITE)
        return err_set(e, PWB_EWRITE, "%s: %s: cannot write (no space left on the device, a file size limit or an "
                       "I/O error): %s", path, what, msg);
    return err_set(e, PWB_EDB, "%s: %s: %s", path, what, msg);
}

int db_bind_text(sqlite3_stmt *s, int i, const char *v)
{
    return v ? sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
}

char *db_col_dup(sqlite3_stmt *s, int i, int *oom)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    if (!t)
        return NULL;
    char *d = str_dup((const char *)t);
    if (!d)
        *oom = 1;
    return d;
}

sqlite3_stmt *db_stmt(pwb_db *db, int id, pwb_err *e)
{
    if (id < 0 || id >= ST_COUNT) {
        err_set(e, PWB_EINVAL, "db: bad statement id %d", id);
        return NULL;
    }
    sqlite3_stmt *s = db->st[id];
    if (!s) {
        if (sqlite3_prepare_v3(db->h, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK) {
            db_fail(db, "prepare", e);
            return NULL;
        }
        db->st[id] = s;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

static int exec(pwb_db *db, const char *sql, const char *what, pwb_err *e)
{
    if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(db, what, e);
    return PWB_OK;
}

static int pragma_int(pwb_db *db, const char *sql, int *out, pwb_err *e)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db->h, sql, -1, &s, NULL) != SQLITE_OK)
        return db_fail(db, sql, e);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(s);
        return db_fail(db, sql, e);
    }
    *out = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return PWB_OK;
}

static int check_version(pwb_db *db, int version, pwb_err *e)
{
    if (version > db_n_migrations)
        return err_set(e, PWB_EDB,
                       "%s: schema version %d is newer than this pwb knows (%d); use a newer pwb",
                       db->path, version, db_n_migrations);
    return PWB_OK;
}

static int check_app_id(pwb_db *db, pwb_err *e)
{
    int app = 0;
    int rc = pragma_int(db, "PRAGMA application_id", &app, e);
    if (rc)
        return rc;
    if (app != 0 && app != DB_APP_ID)
        return err_set(e, PWB_EDB, "%s: not a pwb database (application_id %d)", db->path, app);
    return PWB_OK;
}

/* Applies each pending migration in its own IMMEDIATE transaction; the version is re-read under
 * the write lock, so two processes opening a fresh file at once do not both migrate it. */
static int migrate(pwb_db *db, pwb_err *e)
{
    for (;;) {
        int rc = exec(db, "BEGIN IMMEDIATE", "begin migration", e);
        if (rc)
            return rc;
        int version = 0;
        if ((rc = pragma_int(db, "PRAGMA user_version", &version, e)) || (rc = check_version(db, version, e)))
            goto fail;
        if (version == db_n_migrations)
            return exec(db, "COMMIT", "commit", e);
        if (version == 0) {
            /* A fresh file must be empty: refuse to add our tables to someone else's database. */
            int n = 0;
            if ((rc = pragma_int(db, "SELECT count(*) FROM sqlite_schema", &n, e)))
                goto fail;
            if (n > 0) {
                rc = err_set(e, PWB_EDB, "%s: not a pwb database (it has tables but no pwb schema version)",
                             db->path);
                goto fail;
            }
            char sql[64];
            snprintf(sql, sizeof sql, "PRAGMA application_id = %d", DB_APP_ID);
            if ((rc = exec(db, sql, "set application_id", e)))
                goto fail;
        }
        char what[48];
        snprintf(what, sizeof what, "migration %d", version + 1);
        if ((rc = exec(db, db_migrations[version], what, e)))
            goto fail;
        char sql[48];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", version + 1);
        if ((rc = exec(db, sql, what, e)) || (rc = exec(db, "COMMIT", what, e)))
            goto fail;
        continue;
    fail:
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
}

int db_open(pwb_db **out, const char *path, int mode, pwb_err *e)
{
    *out = NULL;
    if (!path || !*path)
        return err_set(e, PWB_EINVAL, "db: empty database path");
    pwb_db *db = calloc(1, sizeof *db);
    if (!db || !(db->path = str_dup(path))) {
        free(db);
        return err_set(e, PWB_ENOMEM, "db: out of memory");
    }
    db->readonly = mode == DB_READONLY;
    int flags = db->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = PWB_OK;
    if (!db->readonly && strcmp(path, ":memory:") != 0) {
        /* The default database lives in results/, which a fresh checkout lacks. */
        pwb_buf dir;
        buf_init(&dir);
        file_dirname(path, &dir);
        if (dir.data && !file_is_dir(dir.data))
            rc = file_mkdirs(dir.data, e);
        buf_free(&dir);
        if (rc)
            goto fail;
    }
    if (sqlite3_open_v2(path, &db->h, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        rc = db_fail(db, "open", e);
        goto fail;
    }
    sqlite3_extended_result_codes(db->h, 1);
    sqlite3_busy_timeout(db->h, DB_BUSY_MS);
    if ((rc = exec(db, "PRAGMA foreign_keys = ON", "enable foreign keys", e)))
        goto fail;
    if ((rc = check_app_id(db, e)))
        goto fail;
    if (db->readonly) {
        /* A read-only handle must not ATTACH other files (pwb query takes arbitrary SQL). */
        sqlite3_limit(db->h, SQLITE_LIMIT_ATTACHED, 0);
        int version = 0;
        if ((rc = pragma_int(db, "PRAGMA user_version", &version, e)) || (rc = check_version(db, version, e)))
            goto fail;
        if (version < db_n_migrations) {
            rc = err_set(e, PWB_EDB, "%s: schema version %d is older than %d; open it once read-write "
                         "(e.g. pwb run) to migrate it", path, version, db_n_migrations);
            goto fail;
        }
        *out = db;
        return PWB_OK;
    }
    /* WAL: readers (pwb query, pwb report) never block the runner; synchronous=NORMAL in WAL mode
     * loses at most the last commits on power loss, never consistency, and a killed process loses
     * nothing committed. */
    if ((rc = exec(db, "PRAGMA journal_mode = WAL", "enable WAL", e)) ||
        (rc = exec(db, "PRAGMA synchronous = NORMAL", "set synchronous", e)))
        goto fail;
    if ((rc = migrate(db, e)))
        goto fail;
    *out = db;
    return PWB_OK;
fail:
    db_close(db);
    return rc;
}

void db_close(pwb_db *db)
{
    if (!db)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(db->st[i]);
    if (db->tx_depth > 0)
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db->h);
    free(db->path);
    free(db);
}

int db_begin(pwb_db *db, pwb_err *e)
{
    if (db->tx_depth == 0) {
        /* IMMEDIATE takes the write lock now, so a batch never fails half-way on SQLITE_BUSY
         * when upgrading from a read lock. */
        int rc = exec(db, db->readonly ? "BEGIN" : "BEGIN IMMEDIATE", "begin", e);
        if (rc)
            return rc;
    }
    db->tx_depth++;
    return PWB_OK;
}

int db_commit(pwb_db *db, pwb_err *e)
{
    if (db->tx_depth <= 0)
        return err_set(e, PWB_EINVAL, "%s: commit without begin", db->path);
    if (db->tx_depth == 1) {
        int rc = exec(db, "COMMIT", "commit", e);
        if (rc)
            return rc;
    }
    db->tx_depth--;
    return PWB_OK;
}

int db_rollback(pwb_db *db)
{
    if (!db || db->tx_depth <= 0)
        return PWB_OK;
    db->tx_depth = 0;
    return sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK ? PWB_OK : PWB_EDB;
}

int db_in_transaction(pwb_db *db)
{
    return db && db->tx_depth > 0;
}

int db_schema_version(pwb_db *db)
{
    int v = -1;
    if (pragma_int(db, "PRAGMA user_version", &v, NULL))
        return -1;
    return v;
}

int db_schema_latest(void)
{
    return db_n_migrations;
}

/* pwb query's guard, consulted by SQLite while it compiles each statement: reads, plain SELECT
 * machinery and functions only. It sees the parsed statement, so no comment or spelling can hide a
 * transaction, an ATTACH or a write; fts3_tokenizer (which can reach raw pointers) is refused too. */
typedef struct query_guard {
    const char *why; /* the first refusal, for the message */
} query_guard;

static int query_authorize(void *ctx, int action, const char *a, const char *b, const char *db_name,
                           const char *trigger)
{
    query_guard *g = ctx;
    const char *why = NULL;
    switch (action) {
    case SQLITE_SELECT:
    case SQLITE_READ:
    case SQLITE_RECURSIVE:
        return SQLITE_OK;
    case SQLITE_FUNCTION:
        if (b && (!strcasecmp(b, "fts3_tokenizer") || !strcasecmp(b, "load_extension")))
            why = "the function is not allowed";
        break;
    case SQLITE_PRAGMA: {
        /* Without an argument a pragma reads; with one only these, whose argument names a table
         * or an index, are reads (the rest set something). */
        static const char *const reads[] = {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
                                            "foreign_key_list", "integrity_check", "quick_check", "table_list"};
        int ok = !b;
        for (size_t i = 0; !ok && a && i < sizeof reads / sizeof reads[0]; i++)
            ok = !strcasecmp(a, reads[i]);
        if (!ok)
            why = "PRAGMA with a value is not allowed";
        break;
    }
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
        why = "transaction statements are not allowed";
        break;
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
        why = "ATTACH and DETACH are not allowed";
        break;
    default:
        why = "only read-only statements are allowed (SELECT, WITH, EXPLAIN, read-only PRAGMA)";
        break;
    }
    if (why && !g->why)
        g->why = why;
    return why ? SQLITE_DENY : SQLITE_OK;
}

/* A time limit through the progress handler: SQLite checks it every few thousand VM steps. */
typedef struct query_clock {
    double deadline;
    int expired;
} query_clock;

static int query_tick(void *ctx)
{
    query_clock *c = ctx;
    if (c->deadline > 0 && timer_wall() > c->deadline)
        c->expired = 1;
    return c->expired;
}

#define DB_QUERY_MAX_STMTS 64

int db_query(pwb_db *db, const char *sql, double timeout_s, db_row_fn row, void *ctx, pwb_err *e)
{
    if (!sql)
        return err_set(e, PWB_EINVAL, "query: no SQL");
    size_t len = strnlen(sql, DB_QUERY_MAX_SQL + 1);
    if (len > DB_QUERY_MAX_SQL)
        return err_set(e, PWB_ERANGE, "query: SQL longer than %u bytes", DB_QUERY_MAX_SQL);
    if (!isfinite(timeout_s) || timeout_s < 0)
        return err_set(e, PWB_EINVAL, "query: bad time limit");
    /* Every statement is compiled and checked before the first one runs. */
    sqlite3_stmt *st[DB_QUERY_MAX_STMTS];
    int n = 0, rc = PWB_OK;
    query_guard g = {0};
    sqlite3_db_config(db->h, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, (int *)NULL);
    sqlite3_set_authorizer(db->h, query_authorize, &g);
    for (const char *p = sql, *end = sql + len; p < end && !rc;) {
        sqlite3_stmt *s = NULL;
        const char *tail = NULL;
        if (sqlite3_prepare_v2(db->h, p, (int)(end - p), &s, &tail) != SQLITE_OK) {
            rc = g.why ? err_set(e, PWB_EINVAL, "query: statement %d: %s", n + 1, g.why)
                       : err_set(e, PWB_EINVAL, "query: statement %d: %s", n + 1, sqlite3_errmsg(db->h));
            break;
        }
        p = tail && tail > p ? tail : end;
        if (!s) /* whitespace or a comment */
            continue;
        if (n == DB_QUERY_MAX_STMTS) {
            sqlite3_finalize(s);
            rc = err_set(e, PWB_ERANGE, "query: more than %d statements", DB_QUERY_MAX_STMTS);
        } else if (st[n++] = s, !sqlite3_stmt_readonly(s)) {
            /* A second guard after the authorizer and SQLITE_OPEN_READONLY. */
            rc = err_set(e, PWB_EINVAL, "query: statement %d: only read-only statements are allowed (SELECT, "
                         "WITH, EXPLAIN, read-only PRAGMA)", n);
        }
    }
    sqlite3_set_authorizer(db->h, NULL, NULL);
    if (!rc && n == 0)
        rc = err_set(e, PWB_EINVAL, "query: no SQL statement");
    query_clock clock = {timeout_s > 0 ? timer_wall() + timeout_s : 0, 0};
    if (timeout_s > 0)
        sqlite3_progress_handler(db->h, 1000, query_tick, &clock);
    for (int k = 0; k < n && !rc; k++) {
        sqlite3_stmt *s = st[k];
        int ncols = sqlite3_column_count(s);
        const char **names = ncols > 0 ? calloc((size_t)ncols * 2, sizeof *names) : NULL;
        if (ncols > 0 && !names) {
            rc = err_set(e, PWB_ENOMEM, "query: out of memory");
            break;
        }
        const char **vals = names ? names + ncols : NULL;
        for (int i = 0; i < ncols; i++)
            names[i] = sqlite3_column_name(s, i);
        int step;
        while ((step = sqlite3_step(s)) == SQLITE_ROW) {
            for (int i = 0; i < ncols; i++)
                vals[i] = (const char *)sqlite3_column_text(s, i);
            int r = row ? row(ctx, k, ncols, names, vals) : 0;
            if (r) {
                rc = err_set(e, r, "query: stopped by the row callback");
                break;
            }
        }
        if (!rc && clock.expired)
            rc = err_set(e, PWB_ELIMIT, "query: stopped after the %g s time limit (--timeout)", timeout_s);
        else if (!rc && step != SQLITE_DONE)
            rc = db_fail(db, "query", e);
        free(names);
    }
    sqlite3_progress_handler(db->h, 0, NULL, NULL);
    for (int k = 0; k < n; k++)
        sqlite3_finalize(st[k]);
    return rc;
}
