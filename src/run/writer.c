/* One writer per run: the claim on the run's run_writers row (plan.c takes it with the run) and
 * the heartbeat that tells processes on other hosts the writer is still there. */
#include "run/run_internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define HEARTBEAT_S 15

static void *heartbeat_main(void *arg)
{
    runner *R = arg;
    pwb_db *db = NULL;
    pwb_err e;
    err_clear(&e);
    /* its own connection: the runner's is used by the runner's thread */
    if (db_open(&db, R->o->db_path, DB_READWRITE, &e) != PWB_OK) {
        log_warn("%s: cannot renew the run's heartbeat: %s", R->o->db_path, e.msg);
        return NULL;
    }
    pthread_mutex_lock(&R->hb_mu);
    while (!R->hb_stop) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += HEARTBEAT_S;
        if (pthread_cond_timedwait(&R->hb_cv, &R->hb_mu, &t) == ETIMEDOUT && !R->hb_stop) {
            pthread_mutex_unlock(&R->hb_mu);
            if (db_run_heartbeat(db, R->r->run_id, &e) != PWB_OK)
                log_debug("%s", e.msg); /* a busy database: the next beat is soon enough */
            pthread_mutex_lock(&R->hb_mu);
        }
    }
    pthread_mutex_unlock(&R->hb_mu);
    db_close(db);
    return NULL;
}

int run_claim(runner *R, int64_t run_id, pwb_err *e)
{
    db_writer holder;
    int rc = db_run_claim(R->db, run_id, &holder, e);
    if (rc != PWB_EBUSY)
        return rc;
    if (R->o->wait) {
        if (R->o->progress && !R->waited)
            fprintf(R->o->progress, "pwb: waiting for pid %lld on %s, which is writing this run (since %s)\n",
                    holder.pid, holder.host, holder.started);
        R->waited = 1;
        return rc;
    }
    char msg[sizeof e->msg];
    str_copy(msg, sizeof msg, e->msg);
    return err_set(e, PWB_EBUSY, "%.800s: run the suite again when it ends, or pass --wait to continue after it", msg);
}

void run_writer_start(runner *R)
{
    R->claimed = 1;
    pthread_mutex_init(&R->hb_mu, NULL);
    pthread_cond_init(&R->hb_cv, NULL);
    R->hb_on = pthread_create(&R->hb, NULL, heartbeat_main, R) == 0;
}

void run_writer_stop(runner *R)
{
    if (!R->claimed)
        return;
    if (R->hb_on) {
        pthread_mutex_lock(&R->hb_mu);
        R->hb_stop = 1;
        pthread_cond_signal(&R->hb_cv);
        pthread_mutex_unlock(&R->hb_mu);
        pthread_join(R->hb, NULL);
    }
    pthread_cond_destroy(&R->hb_cv);
    pthread_mutex_destroy(&R->hb_mu);
    pwb_err e;
    err_clear(&e);
    if (db_run_release(R->db, R->r->run_id, &e) != PWB_OK)
        log_warn("%s", e.msg); /* the next writer sees this process gone and takes over */
    R->claimed = 0;
}
