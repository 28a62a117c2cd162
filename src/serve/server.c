#include "serve/server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/chat.h"
#include "serve/api.h"
#include "util/log.h"
#include "util/str.h"
#include "util/timer.h"

struct serve {
    engine *en;
    const tokenizer *tok;
    chat_template ct;
    const adapter_set *ads;
    sched *s;
    serve_opts o;
    struct MHD_Daemon *d;
    int port;
    int quiesced;
    pthread_mutex_t mu;      /* the list of requests, counters */
    struct req_ctx *reqs;
    int inflight;
    unsigned long next_id;
    long started;
};

enum { R_READING = 0, R_WAITING, R_STREAMING, R_ANSWERED };

typedef struct req_ctx {
    serve *sv;
    struct MHD_Connection *conn;
    int route;               /* 0: other, 1: completions, 2: chat */
    int state;
    pwb_buf body;
    int too_big;
    api_req ar;
    int have_ar;
    sched_job *jobs[API_MAX_PROMPTS];
    int n_jobs;
    int suspended;           /* under the scheduler's lock */
    int timed_out;
    double t0;
    char id[40];
    /* streaming */
    pwb_buf out;
    size_t out_off;
    size_t sent;             /* bytes of the job's text sent */
    int first_sent, end_sent;
    struct req_ctx *next, *prev;
} req_ctx;

/* ---- replies ------------------------------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *json, size_t n)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)json, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result reply_error(req_ctx *q, struct MHD_Connection *c, unsigned status, const char *type,
                                   const char *msg, const char *param, const char *code)
{
    pwb_buf b;
    buf_init(&b);
    api_error_json(&b, type, msg, param, code);
    if (q)
        q->state = R_ANSWERED;
    enum MHD_Result ok = reply(c, status, b.data ? b.data : "{}", b.data ? b.len : 2);
    buf_free(&b);
    return ok;
}

/* ---- request bookkeeping ------------------------------------------------------------------- */

static void on_news(void *ctx)
{
    req_ctx *q = ctx;
    /* the scheduler's lock is held: q is alive (its jobs' notify is cleared before it goes) */
    if (q->suspended) {
        q->suspended = 0;
        MHD_resume_connection(q->conn);
    }
}

static void req_free(req_ctx *q)
{
    serve *sv = q->sv;
    pthread_mutex_lock(&sv->mu);
    if (q->prev)
        q->prev->next = q->next;
    else if (sv->reqs == q)
        sv->reqs = q->next;
    if (q->next)
        q->next->prev = q->prev;
    sv->inflight--;
    pthread_mutex_unlock(&sv->mu);
    sched_lock(sv->s);
    for (int i = 0; i < q->n_jobs; i++) {
        q->jobs[i]->notify = NULL;
        q->jobs[i]->cancel |= !q->jobs[i]->done; /* the client left before its reply */
    }
    sched_unlock(sv->s);
    for (int i = 0; i < q->n_jobs; i++)
        sched_job_release(sv->s, q->jobs[i]);
    if (q->have_ar)
        api_req_free(&q->ar);
    buf_free(&q->body);
    buf_free(&q->out);
    free(q);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    req_ctx *q = *con_cls;
    if (!q)
        return;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && q->n_jobs)
        log_info("serve: request %s ended early (%d): its work is cancelled", q->id, (int)toe);
    req_free(q);
    *con_cls = NULL;
}

/* ---- helpers ------------------------------------------------------------------------------- */

/* Constant time in the length of the expected key. */
static int key_ok(const char *want, const char *header)
{
    if (!header || strncmp(header, "Bearer ", 7) != 0)
        return 0;
    const char *got = header + 7;
    size_t n = strlen(want), m = strlen(got);
    unsigned diff = n != m;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < m ? got[i] : 0);
    return diff == 0;
}

static int all_done_locked(const req_ctx *q)
{
    for (int i = 0; i < q->n_jobs; i++)
        if (!q->jobs[i]->done)
            return 0;
    return 1;
}

static void reply_info(req_ctx *q, api_reply *a)
{
    a->tok = q->sv->tok;
    a->id = q->id;
    a->model = q->sv->ads->items[q->jobs[0]->adapter].name;
    a->created = (long)time(NULL);
}

/* The finished jobs' reply (or their error). */
static enum MHD_Result answer(req_ctx *q)
{
    for (int i = 0; i < q->n_jobs; i++) {
        sched_job *j = q->jobs[i];
        if (j->status != PWB_OK) {
            if (q->timed_out)
                return reply_error(q, q->conn, MHD_HTTP_GATEWAY_TIMEOUT, "timeout_error",
                                   "the request took longer than the server's limit", NULL, "timeout");
            return reply_error(q, q->conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "server_error", j->err, NULL, NULL);
        }
    }
    api_reply a;
    reply_info(q, &a);
    pwb_buf b;
    buf_init(&b);
    int rc = api_reply_json(&a, &q->ar, q->jobs, q->n_jobs, &b);
    q->state = R_ANSWERED;
    enum MHD_Result ok = rc == PWB_OK ? reply(q->conn, MHD_HTTP_OK, b.data, b.len)
                                      : reply_error(q, q->conn, 500, "server_error", "out of memory", NULL, NULL);
    buf_free(&b);
    return ok;
}

/* ---- streaming ----------------------------------------------------------------------------- */

/* Appends what the job has produced since the last call to q->out (lock held). 1 at the end. */
static int stream_more_locked(req_ctx *q)
{
    sched_job *j = q->jobs[0];
    api_reply a;
    reply_info(q, &a);
    if (!q->first_sent) {
        /* chat opens with the role; an echoed completion with its prompt */
        const char *p = !q->ar.chat && q->ar.echo ? q->ar.prompts[0] : "";
        api_stream_chunk(&a, &q->ar, p, strlen(p), 1, NULL, &q->out);
        q->first_sent = 1;
    }
    if (j->n_stable > q->sent && j->text.data) {
        api_stream_chunk(&a, &q->ar, j->text.data + q->sent, j->n_stable - q->sent, 0, NULL, &q->out);
        q->sent = j->n_stable;
    }
    if (!j->done || q->end_sent)
        return q->end_sent;
    if (j->status != PWB_OK) {
        api_error_json(&q->out, q->timed_out ? "timeout_error" : "server_error",
                       q->timed_out ? "the request took longer than the server's limit" : j->err, NULL, NULL);
        /* the error object as an event of its own */
        pwb_buf ev;
        buf_init(&ev);
        buf_puts(&ev, "data: ");
        buf_append(&ev, q->out.data + q->out_off, q->out.len - q->out_off);
        buf_puts(&ev, "\n\n");
        q->out.len = q->out_off;
        buf_append(&q->out, ev.data, ev.len);
        buf_free(&ev);
    } else {
        api_stream_chunk(&a, &q->ar, NULL, 0, 0, api_finish_name(j), &q->out);
        if (q->ar.stream_usage)
            api_stream_usage(&a, &q->ar, j, &q->out);
    }
    buf_puts(&q->out, "data: [DONE]\n\n");
    q->end_sent = 1;
    return 1;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    req_ctx *q = cls;
    sched *s = q->sv->s;
    sched_lock(s);
    if (q->out_off >= q->out.len) {
        buf_reset(&q->out);
        q->out_off = 0;
        stream_more_locked(q);
    }
    size_t n = q->out.len - q->out_off;
    if (n == 0) {
        if (q->end_sent) {
            sched_unlock(s);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        /* nothing yet: sleep until the scheduler has news */
        q->jobs[0]->waiting = 1;
        q->suspended = 1;
        MHD_suspend_connection(q->conn);
        sched_unlock(s);
        return 0;
    }
    if (n > max)
        n = max;
    memcpy(buf, q->out.data + q->out_off, n);
    q->out_off += n;
    sched_unlock(s);
    return (ssize_t)n;
}

/* ---- the routes ---------------------------------------------------------------------------- */

static enum MHD_Result route_health(req_ctx *q)
{
    serve *sv = q->sv;
    sched_stats st;
    sched_get_stats(sv->s, &st);
    pwb_buf b;
    buf_init(&b);
    pthread_mutex_lock(&sv->mu);
    int inflight = sv->inflight;
    pthread_mutex_unlock(&sv->mu);
    buf_printf(&b,
               "{\"status\":\"%s\",\"model\":\"%s\",\"adapters\":%d,\"requests_in_flight\":%d,\"running\":%d,"
               "\"queued\":%d,\"steps\":%ld,\"jobs_done\":%ld,\"tokens_prefill\":%ld,\"tokens_decode\":%ld,"
               "\"tokens_cached\":%ld,\"pool_entries\":%d,\"pool_positions\":%d}",
               sv->quiesced ? "draining" : "ok", "base", sv->ads->n - 1, inflight, st.active, st.queued, st.steps,
               st.jobs_done, st.tokens_prefill, st.tokens_decode, st.tokens_cached, st.pool_entries,
               st.pool_positions);
    q->state = R_ANSWERED;
    enum MHD_Result ok = reply(q->conn, MHD_HTTP_OK, b.data, b.len);
    buf_free(&b);
    return ok;
}

static enum MHD_Result route_models(req_ctx *q)
{
    pwb_buf b;
    buf_init(&b);
    api_models_json(q->sv->ads, q->sv->started, &b);
    q->state = R_ANSWERED;
    enum MHD_Result ok = reply(q->conn, MHD_HTTP_OK, b.data, b.len);
    buf_free(&b);
    return ok;
}

/* Parses, tokenizes and submits a completions / chat request. */
static enum MHD_Result route_generate(req_ctx *q)
{
    serve *sv = q->sv;
    pwb_err e = {0};
    int chat = q->route == 2;
    q->have_ar = 1;
    if (api_parse(&q->ar, chat, q->body.data ? q->body.data : "", q->body.len, &e) != PWB_OK)
        return reply_error(q, q->conn, e.code == PWB_ENOMEM ? 500 : MHD_HTTP_BAD_REQUEST, "invalid_request_error",
                           e.msg, q->ar.param, NULL);
    const char *name = q->ar.model && *q->ar.model ? q->ar.model : "base";
    int ad = adapter_set_find(sv->ads, name);
    if (ad < 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "The model '%.80s' does not exist; GET /v1/models lists the base and its adapters",
                 name);
        return reply_error(q, q->conn, MHD_HTTP_NOT_FOUND, "invalid_request_error", msg, "model", "model_not_found");
    }
    pwb_buf text;
    buf_init(&text);
    int n_texts = chat ? 1 : q->ar.n_prompts;
    for (int i = 0; i < n_texts; i++) {
        const char *t;
        size_t tl;
        if (chat) {
            if (chat_render(&sv->ct, q->ar.msgs, (size_t)q->ar.n_msgs, 1, &text, &e) != PWB_OK) {
                buf_free(&text);
                return reply_error(q, q->conn, MHD_HTTP_BAD_REQUEST, "invalid_request_error", e.msg, "messages", NULL);
            }
            t = text.data ? text.data : "";
            tl = text.len;
        } else {
            t = q->ar.prompts[i];
            tl = strlen(t);
        }
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = tokenizer_encode(sv->tok, t, tl, 1, 1, &ids, &n, &e) < 0 ? (e.code ? e.code : PWB_EPARSE) : PWB_OK;
        int n_ctx = 0, need = rc == PWB_OK ? sched_positions(sv->s, ad, (int)(n < 1u << 30 ? n : 1u << 30), &n_ctx) : 0;
        if (rc == PWB_OK && (n == 0 || need > n_ctx)) {
            rc = PWB_ERANGE;
            if (n == 0)
                err_set(&e, PWB_EINVAL, "the prompt is empty");
            else
                err_set(&e, PWB_ERANGE, "the prompt needs %d positions; the model's context is %d", need, n_ctx);
        }
        sched_job *j = rc == PWB_OK ? sched_job_new(ids, (int)n) : NULL;
        free(ids);
        if (!j) {
            buf_free(&text);
            return reply_error(q, q->conn, MHD_HTTP_BAD_REQUEST, "invalid_request_error",
                               rc == PWB_OK ? "out of memory" : e.msg, chat ? "messages" : "prompt",
                               rc == PWB_ERANGE ? "context_length_exceeded" : NULL);
        }
        q->jobs[q->n_jobs++] = j;
        j->adapter = ad;
        j->echo = !chat && q->ar.echo;
        j->logprobs = q->ar.logprobs;
        /* a reply cannot outgrow the context (the engine stops there too) */
        j->max_tokens = q->ar.max_tokens >= 0 ? q->ar.max_tokens : chat ? n_ctx - need : 16;
        if (j->max_tokens > n_ctx - need)
            j->max_tokens = n_ctx - need;
        j->temperature = (float)q->ar.temperature;
        j->top_p = (float)q->ar.top_p;
        j->seed = q->ar.seed;
        j->notify = on_news;
        j->notify_ctx = q;
        for (int k = 0; k < q->ar.n_stop; k++)
            sched_job_add_stop(j, q->ar.stop[k]);
    }
    buf_free(&text);
    for (int i = 0; i < q->n_jobs; i++) {
        if (sched_submit(sv->s, q->jobs[i], &e) != PWB_OK) {
            /* those already queued are cancelled when the request ends */
            unsigned st = e.code == PWB_EINVAL ? MHD_HTTP_BAD_REQUEST : MHD_HTTP_SERVICE_UNAVAILABLE;
            return reply_error(q, q->conn, st, st == 400 ? "invalid_request_error" : "server_busy", e.msg, NULL, NULL);
        }
    }
    if (q->ar.stream) {
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, q, NULL);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        q->state = R_STREAMING;
        enum MHD_Result ok = MHD_queue_response(q->conn, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ok;
    }
    q->state = R_WAITING;
    return MHD_YES;
}

/* A waiting request: its reply when every job is done, else sleep until news. */
static enum MHD_Result wait_or_answer(req_ctx *q)
{
    sched_lock(q->sv->s);
    if (!all_done_locked(q)) {
        for (int i = 0; i < q->n_jobs; i++)
            q->jobs[i]->waiting = 1;
        q->suspended = 1;
        MHD_suspend_connection(q->conn);
        sched_unlock(q->sv->s);
        return MHD_YES;
    }
    sched_unlock(q->sv->s);
    return answer(q);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    serve *sv = cls;
    req_ctx *q = *con_cls;
    if (!q) {
        if (!(q = calloc(1, sizeof *q)))
            return MHD_NO;
        q->sv = sv;
        q->conn = c;
        q->t0 = timer_wall();
        buf_init(&q->body);
        buf_init(&q->out);
        pthread_mutex_lock(&sv->mu);
        int busy = sv->inflight >= sv->o.max_inflight;
        snprintf(q->id, sizeof q->id, "%lx", ++sv->next_id);
        q->next = sv->reqs;
        if (sv->reqs)
            sv->reqs->prev = q;
        sv->reqs = q;
        sv->inflight++;
        pthread_mutex_unlock(&sv->mu);
        *con_cls = q;
        int post = strcmp(method, "POST") == 0;
        q->route = !strcmp(url, "/v1/completions") ? 1 : !strcmp(url, "/v1/chat/completions") ? 2 : 0;
        if (busy)
            return reply_error(q, c, MHD_HTTP_SERVICE_UNAVAILABLE, "server_busy",
                               "too many requests in flight; retry shortly", NULL, NULL);
        if (strcmp(url, "/health") != 0 && sv->o.api_key && *sv->o.api_key &&
            !key_ok(sv->o.api_key, MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)))
            return reply_error(q, c, MHD_HTTP_UNAUTHORIZED, "invalid_request_error",
                               "missing or wrong API key (Authorization: Bearer KEY)", NULL, "invalid_api_key");
        if (q->route && !post)
            return reply_error(q, c, MHD_HTTP_METHOD_NOT_ALLOWED, "invalid_request_error", "use POST", NULL, NULL);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        long len = 0;
        if (q->route && cl && (str_to_long(cl, &len) || len < 0 || (size_t)len > sv->o.max_body)) {
            char msg[128];
            snprintf(msg, sizeof msg, "the body is larger than the server's limit of %zu bytes", sv->o.max_body);
            return reply_error(q, c, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request_error", msg, NULL, NULL);
        }
        return MHD_YES;
    }
    if (q->state == R_ANSWERED || q->state == R_STREAMING) {
        *upload_size = 0; /* an early reply: the rest of the body is dropped */
        return MHD_YES;
    }
    if (q->state == R_WAITING)
        return wait_or_answer(q);
    if (*upload_size > 0) {
        if (!q->too_big && q->body.len + *upload_size <= q->sv->o.max_body)
            buf_append(&q->body, upload, *upload_size);
        else
            q->too_big = 1;
        *upload_size = 0;
        return MHD_YES;
    }
    if (q->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "the body is larger than the server's limit of %zu bytes", sv->o.max_body);
        return reply_error(q, c, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request_error", msg, NULL, NULL);
    }
    if (!strcmp(url, "/health") && !strcmp(method, "GET"))
        return route_health(q);
    if (!strcmp(url, "/v1/models") && !strcmp(method, "GET"))
        return route_models(q);
    if (!q->route)
        return reply_error(q, c, MHD_HTTP_NOT_FOUND, "invalid_request_error", "no such route", NULL, NULL);
    enum MHD_Result ok = route_generate(q);
    if (q->state == R_WAITING)
        return wait_or_answer(q);
    return ok;
}

/* ---- lifetime ------------------------------------------------------------------------------ */

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    log_debug("serve: libmicrohttpd: %s", msg);
}

int serve_start(serve **out, engine *en, const adapter_set *ads, sched *s, const serve_opts *o, pwb_err *e)
{
    *out = NULL;
    serve *sv = calloc(1, sizeof *sv);
    if (!sv)
        return err_set(e, PWB_ENOMEM, "out of memory");
    sv->en = en;
    sv->tok = engine_tokenizer(en);
    sv->ads = ads;
    sv->s = s;
    if (o)
        sv->o = *o;
    if (!sv->o.host)
        sv->o.host = "127.0.0.1";
    if (!sv->o.max_body)
        sv->o.max_body = 1u << 20;
    if (!sv->o.max_header)
        sv->o.max_header = 32u << 10;
    if (sv->o.max_connections <= 0)
        sv->o.max_connections = 1024;
    if (sv->o.max_inflight <= 0)
        sv->o.max_inflight = 256;
    if (sv->o.idle_timeout_s <= 0)
        sv->o.idle_timeout_s = 30;
    if (sv->o.request_timeout_s <= 0)
        sv->o.request_timeout_s = 600;
    if (sv->o.http_threads <= 0)
        sv->o.http_threads = 2;
    /* leave descriptors for the model files and logs */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)sv->o.max_connections + 64 > rl.rlim_cur)
        sv->o.max_connections = rl.rlim_cur > 128 ? (int)rl.rlim_cur - 64 : 64;
    sv->started = (long)time(NULL);
    pthread_mutex_init(&sv->mu, NULL);
    int rc = chat_template_init(&sv->ct, engine_model(en)->chat_template, sv->o.chat_template, e);
    if (rc != PWB_OK) {
        pthread_mutex_destroy(&sv->mu);
        free(sv);
        return rc;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, sv->o.host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)sv->o.port);
    } else if (inet_pton(AF_INET6, sv->o.host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)sv->o.port);
        flags |= MHD_USE_IPv6;
    } else {
        err_set(e, PWB_EINVAL, "--host '%s' is not a numeric IPv4 or IPv6 address", sv->o.host);
        chat_template_free(&sv->ct);
        pthread_mutex_destroy(&sv->mu);
        free(sv);
        return PWB_EINVAL;
    }
    sv->d = MHD_start_daemon(flags, (uint16_t)sv->o.port, NULL, NULL, on_request, sv,
                             MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                             MHD_OPTION_THREAD_POOL_SIZE, (unsigned)sv->o.http_threads,
                             MHD_OPTION_CONNECTION_LIMIT, (unsigned)sv->o.max_connections,
                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)sv->o.idle_timeout_s,
                             MHD_OPTION_CONNECTION_MEMORY_LIMIT, sv->o.max_header,
                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, sv,
                             MHD_OPTION_EXTERNAL_LOGGER, mhd_log, sv,
                             MHD_OPTION_END);
    if (!sv->d) {
        chat_template_free(&sv->ct);
        pthread_mutex_destroy(&sv->mu);
        free(sv);
        return err_set(e, PWB_EIO, "cannot listen on %s:%d (in use, or not an address of this machine)",
                       o && o->host ? o->host : "127.0.0.1", o ? o->port : 0);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(sv->d, MHD_DAEMON_INFO_BIND_PORT);
    sv->port = di ? di->port : sv->o.port;
    *out = sv;
    return PWB_OK;
}

int serve_port(const serve *sv) { return sv->port; }

int serve_inflight(serve *sv)
{
    pthread_mutex_lock(&sv->mu);
    int n = sv->inflight;
    pthread_mutex_unlock(&sv->mu);
    return n;
}

void serve_tick(serve *sv)
{
    double now = timer_wall();
    pthread_mutex_lock(&sv->mu);
    for (req_ctx *q = sv->reqs; q; q = q->next) {
        if (q->timed_out || now - q->t0 < sv->o.request_timeout_s || !q->n_jobs)
            continue;
        q->timed_out = 1;
        for (int i = 0; i < q->n_jobs; i++)
            sched_cancel(sv->s, q->jobs[i]);
    }
    pthread_mutex_unlock(&sv->mu);
}

void serve_quiesce(serve *sv)
{
    if (sv->quiesced)
        return;
    sv->quiesced = 1;
    MHD_socket fd = MHD_quiesce_daemon(sv->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

void serve_stop(serve *sv)
{
    if (!sv)
        return;
    MHD_stop_daemon(sv->d);
    chat_template_free(&sv->ct);
    pthread_mutex_destroy(&sv->mu);
    free(sv);
}
