/* One writer per run (schema 8): the run_writers row of the process writing a run. See db.h. */
#include "store/db_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "util/str.h"

/* The process's start time in clock ticks after boot (/proc/PID/stat field 22), 0 when unknown.
 * With the pid it names a process: a pid the kernel reused for another one has another start. */
static long long proc_start(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the command name (field 2) may hold spaces and parentheses: count fields after the last ')' */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    int field = 2;
    for (p++; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    return field == 22 ? strtoll(p, NULL, 10) : 0;
}

static void host_name(char *out, size_t n)
{
    if (gethostname(out, n) != 0)
        str_copy(out, n, "?");
    out[n - 1] = '\0';
}

/* 1 when the process the row names may still be writing. */
static int holder_alive(const db_writer *w, const char *host, double heartbeat_age_s)
{
    if (strcmp(w->host, host) != 0) /* another machine (or container): only its heartbeat tells */
        return heartbeat_age_s < DB_WRITER_STALE_S;
    if (w->pid <= 0 || (kill((pid_t)w->pid, 0) != 0 && errno == ESRCH))
        return 0;
    long long now = proc_start(w->pid);
    return !(w->proc_start && now && now != w->proc_start);
}

int db_run_claim(pwb_db *db, int64_t run_id, db_writer *holder, pwb_err *e)
{
    memset(holder, 0, sizeof *holder);
    if (db->readonly)
        return err_set(e, PWB_EINVAL, "%s: opened read-only", db->path);
    if (db->tx_depth <= 0)
        return err_set(e, PWB_EINVAL, "%s: claiming a run needs a write transaction", db->path);
    char host[256];
    host_name(host, sizeof host);
    long me = (long)getpid();
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db->h,
                           "SELECT pid, host, proc_start, started, heartbeat,"
                           " (julianday('now') - julianday(heartbeat)) * 86400.0 FROM run_writers WHERE run_id = ?1",
                           -1, &s, NULL) != SQLITE_OK)
        return db_fail(db, "read the run's writer", e);
    sqlite3_bind_int64(s, 1, run_id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        holder->pid = sqlite3_column_int64(s, 0);
        const unsigned char *h = sqlite3_column_text(s, 1);
        str_copy(holder->host, sizeof holder->host, h ? (const char *)h : "");
        holder->proc_start = sqlite3_column_int64(s, 2);
        const unsigned char *st = sqlite3_column_text(s, 3);
        str_copy(holder->started, sizeof holder->started, st ? (const char *)st : "");
        double age = sqlite3_column_double(s, 5);
        sqlite3_finalize(s);
        int self = holder->pid == me && !strcmp(holder->host, host);
        if (!self && holder_alive(holder, host, age))
            return err_set(e, PWB_EBUSY, "%s: run %lld is being written by another pwb (pid %lld on %s, since %s)",
                           db->path, (long long)run_id, (long long)holder->pid, holder->host, holder->started);
    } else {
        sqlite3_finalize(s);
        if (rc != SQLITE_DONE)
            return db_fail(db, "read the run's writer", e);
    }
    if (sqlite3_prepare_v2(db->h,
                           "INSERT OR REPLACE INTO run_writers (run_id, pid, host, proc_start) VALUES (?1, ?2, ?3, ?4)",
                           -1, &s, NULL) != SQLITE_OK)
        return db_fail(db, "claim the run", e);
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, me);
    sqlite3_bind_text(s, 3, host, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 4, proc_start(me));
    rc = sqlite3_step(s) == SQLITE_DONE ? PWB_OK : db_fail(db, "claim the run", e);
    sqlite3_finalize(s);
    return rc;
}

/* Runs sql (?1 run id, ?2 pid, ?3 host) on this process's row of the run. */
static int own_row(pwb_db *db, int64_t run_id, const char *sql, const char *what, pwb_err *e)
{
    char host[256];
    host_name(host, sizeof host);
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db->h, sql, -1, &s, NULL) != SQLITE_OK)
        return db_fail(db, what, e);
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)getpid());
    sqlite3_bind_text(s, 3, host, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s) == SQLITE_DONE ? PWB_OK : db_fail(db, what, e);
    sqlite3_finalize(s);
    return rc;
}

int db_run_heartbeat(pwb_db *db, int64_t run_id, pwb_err *e)
{
    return own_row(db, run_id,
                   "UPDATE run_writers SET heartbeat = strftime('%Y-%m-%dT%H:%M:%fZ','now')"
                   " WHERE run_id = ?1 AND pid = ?2 AND host = ?3",
                   "renew the run's heartbeat", e);
}

int db_run_release(pwb_db *db, int64_t run_id, pwb_err *e)
{
    return own_row(db, run_id, "DELETE FROM run_writers WHERE run_id = ?1 AND pid = ?2 AND host = ?3",
                   "release the run", e);
}
