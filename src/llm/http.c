/* Batched HTTP POSTs over the curl multi interface. One easy handle per concurrency slot, kept for
 * the client's life so the multi handle's connection cache keeps keep-alive connections across
 * batches. Retries wait in a min-heap ordered by the time they may go again. */
#include "llm/http.h"

#include <curl/curl.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "llm/remote.h"
#include "util/log.h"
#include "util/rng.h"
#include "util/str.h"
#include "util/timer.h"

typedef struct http_slot {
    CURL *easy;
    struct http_client *c;
    size_t idx;
    int busy;
    int over_cap;
    pwb_buf body;
    pwb_buf reply;
    char retry_after[64];
    char errbuf[CURL_ERROR_SIZE];
    double sent_at;         /* this attempt's start */
    double est_in, est_out; /* the request's estimated tokens (limiter and budget) */
    double reserved;        /* USD this attempt holds in the budget */
    int charged;            /* the limiter was charged for this attempt */
    int got_first;          /* streamed: the first token arrived, at ttft after sent_at */
    double ttft;
    size_t scan_off;        /* streamed: reply bytes already shown to ops->first_token */
    int sends;              /* times libcurl began sending this attempt (on_prereq) */
} http_slot;

struct http_client {
    CURLM *multi;
    http_slot *slots;
    int n_slots;
    struct curl_slist *hdrs;
    char *url;
    char *secret;
    size_t max_body;
    http_opts o;
    pwb_rng rng;
    double paused_until; /* a Retry-After holds back every send until then, not just its own */
    const http_ops *ops; /* the running batch's, for the streaming check in on_write */
    int in_flight;
};

/* A retry waiting for its time. */
typedef struct http_wait {
    double at;
    size_t idx;
} http_wait;

typedef struct http_heap {
    http_wait *v;
    size_t n, cap;
} http_heap;

enum { REQ_NEW = 0, REQ_SENT, REQ_DONE };

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init_rc;

static void curl_init_once(void) { g_curl_init_rc = curl_global_init(CURL_GLOBAL_ALL); }

/* ---- pure helpers ---- */

double http_retry_after_parse(const char *value, time_t now)
{
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (!*value)
        return -1;
    if (isdigit((unsigned char)*value)) {
        /* delay-seconds; a fraction is not in the RFC but costs nothing to accept */
        double s = 0;
        const char *p = value;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (s < 1e12)
                s = s * 10 + (*p - '0');
            p++;
            digits++;
        }
        if (*p == '.') {
            double f = 0.1;
            p++;
            while (isdigit((unsigned char)*p)) {
                s += (*p - '0') * f;
                f /= 10;
                p++;
            }
        }
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p || !digits)
            return -1;
        return s;
    }
    time_t t = curl_getdate(value, &now);
    if (t == (time_t)-1)
        return -1;
    return t > now ? (double)(t - now) : 0.0;
}

double http_backoff_delay(double base_s, double max_s, int attempt, double u)
{
    if (base_s <= 0 || !(u >= 0))
        return 0;
    if (attempt < 0)
        attempt = 0;
    double cap = base_s;
    /* doubling stops at the ceiling, so a huge attempt count cannot overflow */
    for (int k = 0; k < attempt && (max_s <= 0 || cap < max_s) && cap < 1e9; k++)
        cap *= 2;
    if (max_s > 0 && cap > max_s)
        cap = max_s;
    if (u >= 1)
        u = 0.999999;
    return u * cap;
}

int http_status_retryable(int status) { return status == 429 || (status >= 500 && status <= 599); }

void http_scrub(char *s, size_t n, const char *secret)
{
    if (!s || !secret || !*secret)
        return;
    size_t k = strlen(secret);
    char *p = s, *end = s + n;
    while ((size_t)(end - p) >= k) {
        char *hit = memmem(p, (size_t)(end - p), secret, k);
        if (!hit)
            break;
        memset(hit, '*', k);
        p = hit + k;
    }
}

/* Printable one-line excerpt: control bytes and non-ASCII become ' ' / '?', runs of blanks fold. */
static void put_excerpt(pwb_buf *out, const char *s, size_t n, size_t max)
{
    size_t start = out->len;
    int blank = 0;
    for (size_t i = 0; i < n && out->len - start < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f) {
            if (!blank && out->len > start)
                buf_putc(out, ' ');
            blank = 1;
            continue;
        }
        if (ch == ' ') {
            if (!blank && out->len > start)
                buf_putc(out, ' ');
            blank = 1;
            continue;
        }
        blank = 0;
        buf_putc(out, ch < 0x80 ? (char)ch : '?');
    }
    while (out->len > start && out->data[out->len - 1] == ' ')
        out->data[--out->len] = '\0';
    if (out->len - start >= max)
        buf_puts(out, "...");
}

char *http_error_text(int status, const char *body, size_t len, const char *secret)
{
    pwb_buf out;
    buf_init(&out);
    buf_printf(&out, "HTTP %d", status);
    size_t klen = secret ? strlen(secret) : 0;
    const char *msg = NULL;
    cJSON *j = NULL;
    /* Skip leading blanks to see whether this looks like a JSON error object. */
    size_t off = 0;
    while (off < len && (body[off] == ' ' || body[off] == '\n' || body[off] == '\r' || body[off] == '\t'))
        off++;
    if (off < len && body[off] == '{' && len <= (1u << 20)) {
        j = cJSON_ParseWithLength(body, len);
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
        const cJSON *m = NULL;
        if (cJSON_IsObject(err))
            m = cJSON_GetObjectItemCaseSensitive(err, "message");
        else if (cJSON_IsString(err))
            m = err;
        if (!cJSON_IsString(m))
            m = cJSON_GetObjectItemCaseSensitive(j, "message");
        if (cJSON_IsString(m) && m->valuestring && *m->valuestring)
            msg = m->valuestring;
    }
    const char *src = msg ? msg : body;
    size_t srclen = msg ? strlen(msg) : len;
    if (srclen > 0) {
        /* Copy a little past the excerpt so that a key straddling the cut is scrubbed whole. */
        size_t take = srclen < HTTP_EXCERPT * 4 + klen ? srclen : HTTP_EXCERPT * 4 + klen;
        char *tmp = malloc(take + 1);
        if (tmp) {
            memcpy(tmp, src, take);
            tmp[take] = '\0';
            http_scrub(tmp, take, secret);
            buf_puts(&out, ": ");
            put_excerpt(&out, tmp, take, HTTP_EXCERPT);
            if (out.len >= 2 && strcmp(out.data + out.len - 2, ": ") == 0)
                out.data[out.len -= 2] = '\0';
            free(tmp);
        }
    }
    cJSON_Delete(j);
    if (!out.data)
        return NULL;
    return buf_take(&out);
}

/* ---- retry heap ---- */

static int heap_push(http_heap *h, double at, size_t idx)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        http_wait *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->v[p].at <= at)
            break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i].at = at;
    h->v[i].idx = idx;
    return 0;
}

static http_wait heap_pop(http_heap *h)
{
    http_wait top = h->v[0];
    http_wait last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        double mv = last.at;
        if (l < h->n && h->v[l].at < mv) {
            m = l;
            mv = h->v[l].at;
        }
        if (r < h->n && h->v[r].at < mv)
            m = r;
        if (m == i)
            break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n)
        h->v[i] = last;
    return top;
}

/* ---- curl callbacks ---- */

/* Streamed replies: shows the complete lines that arrived to ops->first_token until it sees the
 * first generated token. Each byte is shown once, so this is linear in the reply. */
static void scan_first_token(http_slot *s)
{
    const http_ops *ops = s->c->ops;
    size_t len = s->reply.len;
    if (len <= s->scan_off)
        return;
    const char *nl = memrchr(s->reply.data + s->scan_off, '\n', len - s->scan_off);
    if (!nl)
        return;
    size_t upto = (size_t)(nl - s->reply.data) + 1;
    if (ops->first_token(ops->ctx, s->idx, s->reply.data + s->scan_off, upto - s->scan_off)) {
        s->got_first = 1;
        s->ttft = timer_wall() - s->sent_at;
    }
    s->scan_off = upto;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    http_slot *s = ud;
    size_t n = size * nmemb;
    if (s->reply.len + n > s->c->max_body || buf_append(&s->reply, p, n)) {
        s->over_cap = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (!s->got_first && s->c->ops && s->c->ops->first_token)
        scan_first_token(s);
    return n;
}

static size_t on_header(char *p, size_t size, size_t nitems, void *ud)
{
    http_slot *s = ud;
    size_t n = size * nitems;
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        s->retry_after[0] = '\0'; /* a new response (after 100 Continue or a redirect) */
    } else if (n > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
        size_t vlen = n - 12;
        if (vlen >= sizeof s->retry_after)
            vlen = sizeof s->retry_after - 1;
        memcpy(s->retry_after, p + 12, vlen);
        s->retry_after[vlen] = '\0';
        str_trim(s->retry_after);
    }
    return n;
}

/* ---- client ---- */

static int header_ok(const char *h) { return h && !strpbrk(h, "\r\n"); }

/* An HTTP field name: RFC 9110 token characters only. */
static int header_name_ok(const char *h)
{
    if (!h || !*h || strlen(h) > 64)
        return 0;
    for (; *h; h++)
        if (!isalnum((unsigned char)*h) && !strchr("!#$%&'*+-.^_`|~", *h))
            return 0;
    return 1;
}

const ratelimit *http_client_limiter(const http_client *c) { return c ? c->o.limiter : NULL; }

void http_client_free(http_client *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_slots; i++) {
        http_slot *s = &c->slots[i];
        if (s->easy) {
            if (s->busy && c->multi)
                curl_multi_remove_handle(c->multi, s->easy);
            curl_easy_cleanup(s->easy);
        }
        buf_free(&s->body);
        buf_free(&s->reply);
    }
    free(c->slots);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    for (struct curl_slist *l = c->hdrs; l; l = l->next)
        if (l->data)
            explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(c->hdrs);
    if (c->secret) {
        explicit_bzero(c->secret, strlen(c->secret));
        free(c->secret);
    }
    free(c->url);
    free(c);
}

static int add_header(http_client *c, const char *h, pwb_err *e)
{
    struct curl_slist *l = curl_slist_append(c->hdrs, h);
    if (!l)
        return err_set(e, PWB_ENOMEM, "http: out of memory");
    c->hdrs = l;
    return PWB_OK;
}

#if LIBCURL_VERSION_NUM >= 0x075000
/* Called each time libcurl is about to send the request. When a reused keep-alive connection dies
 * before a byte of reply, libcurl sends the request again on a fresh connection by itself; the
 * server may have read (and billed) the first one, and that second send would be neither counted
 * nor limited by max_retries, the cost guard or the rate limiter. So the attempt ends there, as a
 * failed one, and goes through pwb's own retry. */
static int on_prereq(void *ctx, char *ip, char *local_ip, int port, int local_port)
{
    (void)ip;
    (void)local_ip;
    (void)port;
    (void)local_port;
    http_slot *s = ctx;
    return ++s->sends > 1 ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}
#endif

static int slot_setup(http_client *c, http_slot *s, pwb_err *e)
{
    s->c = c;
    buf_init(&s->body);
    buf_init(&s->reply);
    s->easy = curl_easy_init();
    if (!s->easy)
        return err_set(e, PWB_ENOMEM, "http: curl_easy_init failed");
    CURL *h = s->easy;
    long tmo = c->o.timeout_s > 0 ? (long)ceil(c->o.timeout_s * 1000.0) : 0;
    double ct = c->o.connect_timeout_s > 0 ? c->o.connect_timeout_s
                : (c->o.timeout_s > 0 && c->o.timeout_s < 10 ? c->o.timeout_s : 10);
    int bad = 0;
    bad |= curl_easy_setopt(h, CURLOPT_URL, c->url) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->hdrs) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_POST, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, s) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_HEADERDATA, s) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_PRIVATE, s) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_ERRORBUFFER, s->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, tmo) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)ceil(ct * 1000.0)) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_USERAGENT, "pwb") != CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075000
    bad |= curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, on_prereq) != CURLE_OK;
    bad |= curl_easy_setopt(h, CURLOPT_PREREQDATA, s) != CURLE_OK;
#endif
    /* Redirects could carry the Authorization header to another host: never follow them. */
    bad |= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500
    bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
#endif
    /* libcurl takes a proxy from http_proxy/https_proxy. A loopback server is never behind one, and
     * a key crosses a proxy only inside TLS (CONNECT): a plain-http proxy would read it. */
    if (url_is_loopback(c->url) || (c->secret && strncasecmp(c->url, "https://", 8) != 0))
        bad |= curl_easy_setopt(h, CURLOPT_NOPROXY, "*") != CURLE_OK;
    if (bad)
        return err_set(e, PWB_EHTTP, "http: libcurl rejected an option");
    return PWB_OK;
}

int http_client_create(http_client **out, const http_opts *o, pwb_err *e)
{
    *out = NULL;
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init_rc != CURLE_OK)
        return err_set(e, PWB_EHTTP, "http: curl_global_init failed: %s", curl_easy_strerror(g_curl_init_rc));
    if (!o->url || !(str_starts(o->url, "http://") || str_starts(o->url, "https://")))
        return err_set(e, PWB_EINVAL, "http: endpoint must be an http:// or https:// URL");
    if (!header_ok(o->url))
        return err_set(e, PWB_EINVAL, "http: endpoint URL contains a line break");
    if (o->secret && !header_ok(o->secret))
        return err_set(e, PWB_EINVAL, "http: API key contains a line break");
    if (o->auth_header && !header_name_ok(o->auth_header))
        return err_set(e, PWB_EINVAL, "http: bad auth header name");
    for (int i = 0; i < o->n_headers; i++)
        if (!header_ok(o->headers[i]) || !strchr(o->headers[i], ':'))
            return err_set(e, PWB_EINVAL, "http: bad extra header #%d", i + 1);

    http_client *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(e, PWB_ENOMEM, "http: out of memory");
    c->o = *o;
    c->o.url = c->o.secret = NULL; /* the copies below are the client's own */
    c->o.headers = NULL;
    c->o.n_headers = 0;
    c->max_body = o->max_body ? o->max_body : HTTP_MAX_BODY;
    int conc = o->concurrency < 1 ? 1 : o->concurrency > HTTP_MAX_CONCURRENCY ? HTTP_MAX_CONCURRENCY : o->concurrency;
    c->url = str_dup(o->url);
    c->secret = o->secret && *o->secret ? str_dup(o->secret) : NULL;
    c->slots = calloc((size_t)conc, sizeof *c->slots);
    c->multi = curl_multi_init();
    int rc = PWB_OK;
    if (!c->url || (o->secret && *o->secret && !c->secret) || !c->slots || !c->multi)
        rc = err_set(e, PWB_ENOMEM, "http: out of memory");
    if (!rc)
        rc = add_header(c, "Content-Type: application/json", e);
    if (!rc)
        rc = add_header(c, "Accept: application/json", e);
    if (!rc)
        rc = add_header(c, "Expect:", e); /* no 100-continue round trip on large bodies */
    for (int i = 0; !rc && i < o->n_headers; i++)
        rc = add_header(c, o->headers[i], e);
    if (!rc && c->secret) {
        pwb_buf h;
        buf_init(&h);
        int bad = o->auth_header ? buf_printf(&h, "%s: %s", o->auth_header, c->secret)
                                 : buf_printf(&h, "Authorization: Bearer %s", c->secret);
        c->o.auth_header = NULL; /* the caller's string; not needed past here */
        if (bad)
            rc = err_set(e, PWB_ENOMEM, "http: out of memory");
        else
            rc = add_header(c, h.data, e);
        if (h.data)
            explicit_bzero(h.data, h.len);
        buf_free(&h);
    }
    if (!rc) {
        curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)conc);
        curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conc);
    }
    for (int i = 0; !rc && i < conc; i++) {
        c->n_slots = i + 1;
        rc = slot_setup(c, &c->slots[i], e);
    }
    if (rc) {
        http_client_free(c);
        return rc;
    }
    uint64_t seed = o->jitter_seed ? o->jitter_seed
                                   : (uint64_t)(timer_epoch() * 1e6) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
    rng_init(&c->rng, seed);
    *out = c;
    return PWB_OK;
}

/* ---- one batch ---- */

typedef struct http_run {
    http_client *c;
    const http_ops *ops;
    llm_response *out;
    size_t n;
    llm_done_fn done;
    void *done_ctx;
    unsigned char *state;
    int *attempts;
    double *t0;
    http_heap wait;
    size_t finished;
    size_t next; /* the next new request */
} http_run;

enum { GATE_GO = 0, GATE_WAIT, GATE_BUDGET };

/* Asks the limiter and the budget whether request i may go now on slot s. On GATE_GO the slot
 * holds the charges (given back by ungate when it is not sent after all, settled by complete);
 * on GATE_WAIT *retry_at is when to ask again (0: when a transfer completes); GATE_BUDGET means
 * the reservation does not fit (be says why). */
static int gate(http_run *R, http_slot *s, size_t i, double now, double *retry_at, pwb_err *be)
{
    http_client *c = R->c;
    s->est_in = s->est_out = s->reserved = 0;
    s->charged = 0;
    *retry_at = 0;
    if (!c->o.limiter && !c->o.budget)
        return GATE_GO;
    if (R->ops->estimate) {
        R->ops->estimate(R->ops->ctx, i, &s->est_in, &s->est_out);
        if (!(s->est_in >= 0) || !isfinite(s->est_in))
            s->est_in = 0;
        if (!(s->est_out >= 0) || !isfinite(s->est_out))
            s->est_out = 0;
    }
    if (c->o.limiter) {
        if (!ratelimit_admit(c->o.limiter, now, c->in_flight, s->est_in + s->est_out, retry_at))
            return GATE_WAIT;
        s->charged = 1;
    }
    if (c->o.budget) {
        double usd = llm_estimate_cost(&c->o.price, s->est_in, s->est_out, 0);
        if (llm_budget_reserve(c->o.budget, usd, be) != PWB_OK) {
            if (s->charged)
                ratelimit_refund(c->o.limiter, s->est_in + s->est_out);
            s->charged = 0;
            return GATE_BUDGET;
        }
        s->reserved = usd;
    }
    return GATE_GO;
}

/* Gives back what gate charged for an attempt that was not sent. */
static void ungate(http_client *c, http_slot *s)
{
    if (s->charged && c->o.limiter)
        ratelimit_refund(c->o.limiter, s->est_in + s->est_out);
    if (s->reserved > 0 && c->o.budget)
        llm_budget_settle(c->o.budget, s->reserved, 0);
    s->charged = 0;
    s->reserved = 0;
}

static void finish(http_run *R, size_t i, double now)
{
    llm_response *r = &R->out[i];
    r->latency_s = now - R->t0[i];
    R->state[i] = REQ_DONE;
    R->finished++;
    if (R->done)
        R->done(R->done_ctx, i, r);
}

static void fail(http_run *R, size_t i, const char *msg, double now)
{
    llm_response *r = &R->out[i];
    free(r->text);
    r->text = NULL;
    free(r->finish_reason);
    r->finish_reason = NULL;
    free(r->error);
    r->error = NULL;
    pwb_buf b;
    buf_init(&b);
    if (R->attempts[i] > 1)
        buf_printf(&b, "%s (after %d attempts)", msg, R->attempts[i]);
    else
        buf_puts(&b, msg);
    if (b.data) {
        http_scrub(b.data, b.len, R->c->secret);
        r->error = buf_take(&b);
    } else {
        r->error = str_dup("error (out of memory)");
    }
    finish(R, i, now);
}

/* Starts request i on free slot s; a request whose body cannot be built fails here. */
static int start(http_run *R, http_slot *s, size_t i, double now)
{
    http_client *c = R->c;
    if (R->state[i] == REQ_NEW) {
        R->t0[i] = now;
        R->state[i] = REQ_SENT;
        R->out[i].tokens_in = R->out[i].tokens_out = -1;
    }
    R->attempts[i]++;
    buf_reset(&s->body);
    buf_reset(&s->reply);
    s->over_cap = 0;
    s->retry_after[0] = '\0';
    s->errbuf[0] = '\0';
    s->got_first = 0;
    s->ttft = 0;
    s->scan_off = 0;
    s->sends = 0;
    pwb_err be;
    err_clear(&be);
    if (R->ops->build(R->ops->ctx, i, &s->body, &be) != PWB_OK) {
        ungate(c, s);
        fail(R, i, be.msg[0] ? be.msg : "could not build the request", now);
        return 0;
    }
    if (!s->body.data && buf_puts(&s->body, "")) {
        ungate(c, s);
        fail(R, i, "out of memory", now);
        return 0;
    }
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body.data);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->body.len);
    s->idx = i; /* before the transfer starts: on_write may need it */
    s->sent_at = now;
    if (curl_multi_add_handle(c->multi, s->easy) != CURLM_OK) {
        ungate(c, s);
        fail(R, i, "http: curl_multi_add_handle failed", now);
        return 0;
    }
    s->busy = 1;
    c->in_flight++;
    return 1;
}

static int curl_retryable(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_BAD_CONTENT_ENCODING:
        return 1;
    default:
        return 0;
    }
}

/* Settles an attempt's charges once it ended: with its reply's usage when r is given (a parsed
 * 2xx), else a 2xx that could not be used is billed at what it held, anything else at nothing. */
static void settle(http_client *c, http_slot *s, const llm_response *r)
{
    long status = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    int known = r && r->tokens_in >= 0 && r->tokens_out >= 0;
    if (c->o.limiter && s->charged && known)
        ratelimit_settle(c->o.limiter, s->est_in + s->est_out, (double)r->tokens_in + r->tokens_out);
    if (c->o.budget && (s->reserved > 0 || c->o.price.known)) {
        double actual = 0;
        if (known)
            actual = llm_estimate_cost(&c->o.price, r->tokens_in, r->tokens_out, r->tokens_cached_in);
        else if (status >= 200 && status < 300)
            actual = s->reserved;
        llm_budget_settle(c->o.budget, s->reserved, actual);
    }
    s->charged = 0;
    s->reserved = 0;
}

/* Decides what a finished transfer means for its request: success, retry, or final error. */
static void complete(http_run *R, http_slot *s, CURLcode rc, double now)
{
    http_client *c = R->c;
    size_t i = s->idx;
    llm_response *r = &R->out[i];
    long status = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(c->multi, s->easy);
    s->busy = 0;
    c->in_flight--;
    r->http_status = (int)status;
    /* The key could come back in anything the server echoes: scrub the raw reply first. */
    http_scrub(s->reply.data, s->reply.len, c->secret);
    if (c->o.limiter)
        ratelimit_feedback(c->o.limiter, now, s->sent_at, rc == CURLE_OK ? (int)status : 0);

    char *why = NULL;     /* malloc'd reason for a failed attempt */
    int retry = 0;
    double retry_after = -1;
    if (rc == CURLE_OK && status >= 200 && status < 300) {
        pwb_err pe;
        err_clear(&pe);
        const char *body = s->reply.data ? s->reply.data : "";
        int prc = R->ops->parse(R->ops->ctx, i, body, s->reply.len, r, &pe);
        settle(c, s, prc == PWB_OK ? r : NULL);
        if (prc == PWB_OK) {
            r->ttft_s = s->got_first ? s->ttft : 0;
            if (r->text)
                http_scrub(r->text, strlen(r->text), c->secret);
            if (r->finish_reason)
                http_scrub(r->finish_reason, strlen(r->finish_reason), c->secret);
            finish(R, i, now);
            return;
        }
        free(r->text);
        r->text = NULL;
        free(r->finish_reason);
        r->finish_reason = NULL;
        r->tokens_in = r->tokens_out = -1;
        retry = prc == PWB_EPARSE;
        pwb_buf b;
        buf_init(&b);
        buf_printf(&b, "HTTP %ld: %s", status, pe.msg[0] ? pe.msg : "unusable reply");
        why = buf_take(&b);
    } else if (rc == CURLE_OK) {
        settle(c, s, NULL);
        why = http_error_text((int)status, s->reply.data ? s->reply.data : "", s->reply.len, c->secret);
        retry = http_status_retryable((int)status);
        if ((status == 429 || status == 503) && s->retry_after[0])
            retry_after = http_retry_after_parse(s->retry_after, time(NULL));
    } else {
        settle(c, s, NULL);
        pwb_buf b;
        buf_init(&b);
        int resent = s->sends > 1 && rc == CURLE_ABORTED_BY_CALLBACK;
        if (resent)
            buf_puts(&b, "connection closed before a reply (a kept-alive connection dropped)");
        else if (s->over_cap)
            buf_printf(&b, "reply larger than %zu bytes", c->max_body);
        else if (rc == CURLE_OPERATION_TIMEDOUT)
            buf_printf(&b, "timeout after %.3g s", c->o.timeout_s);
        else
            buf_printf(&b, "%s%s%s", curl_easy_strerror(rc), s->errbuf[0] ? ": " : "", s->errbuf);
        why = buf_take(&b);
        retry = resent || (!s->over_cap && curl_retryable(rc));
        r->http_status = status > 0 ? (int)status : 0;
    }
    if (retry && R->attempts[i] <= c->o.max_retries) {
        double delay;
        if (retry_after >= 0) {
            double cap = c->o.backoff_max_s > HTTP_RETRY_AFTER_FLOOR ? c->o.backoff_max_s : HTTP_RETRY_AFTER_FLOOR;
            delay = retry_after < cap ? retry_after : cap;
            /* the server asked the client, not one request, to wait: hold back all sends */
            if (now + delay > c->paused_until)
                c->paused_until = now + delay;
        } else {
            delay = http_backoff_delay(c->o.backoff_base_s, c->o.backoff_max_s, R->attempts[i] - 1,
                                       rng_uniform(&c->rng));
        }
        if (log_enabled(LOG_DEBUG))
            log_debug("http: request %zu attempt %d failed (%s); retrying in %.2f s", i, R->attempts[i],
                      why ? why : "?", delay);
        if (heap_push(&R->wait, now + delay, i) == 0) {
            r->retries++;
            free(why);
            return;
        }
    }
    fail(R, i, why ? why : "request failed", now);
    free(why);
}

/* Abandons the batch: transfers in flight are dropped (their reservations count as spent: the
 * server may still bill them) and every unfinished response gets msg as its error. */
static void stop_all(http_run *R, double now, const char *msg)
{
    http_client *c = R->c;
    for (int k = 0; k < c->n_slots; k++) {
        http_slot *s = &c->slots[k];
        if (s->busy) {
            curl_multi_remove_handle(c->multi, s->easy);
            s->busy = 0;
            c->in_flight--;
            if (c->o.budget && s->reserved > 0)
                llm_budget_settle(c->o.budget, s->reserved, s->reserved);
            s->reserved = 0;
            s->charged = 0;
        }
    }
    for (size_t i = 0; i < R->n; i++) {
        if (R->state[i] == REQ_DONE)
            continue;
        llm_response *r = &R->out[i];
        free(r->text);
        r->text = NULL;
        free(r->error);
        r->error = str_dup(msg);
        if (R->state[i] == REQ_SENT)
            r->latency_s = now - R->t0[i];
    }
}

int http_client_run(http_client *c, size_t n, const http_ops *ops, llm_response *out, llm_done_fn done,
                    void *done_ctx, volatile sig_atomic_t *stop, pwb_err *e)
{
    if (n == 0)
        return PWB_OK;
    http_run R = {.c = c, .ops = ops, .out = out, .n = n, .done = done, .done_ctx = done_ctx};
    R.state = calloc(n, 1);
    R.attempts = calloc(n, sizeof *R.attempts);
    R.t0 = calloc(n, sizeof *R.t0);
    if (!R.state || !R.attempts || !R.t0) {
        free(R.state);
        free(R.attempts);
        free(R.t0);
        return err_set(e, PWB_ENOMEM, "http: out of memory for %zu requests", n);
    }
    int rc = PWB_OK;
    c->ops = ops;
    pwb_err be;
    err_clear(&be);
    while (R.finished < n) {
        double now = timer_wall();
        if (stop && *stop) {
            stop_all(&R, now, "interrupted");
            rc = err_set(e, PWB_EINTR, "interrupted");
            break;
        }
        /* Fill free slots: due retries first, then new requests, each as the limiter and the
         * budget allow; the first request held back holds back the rest (order is kept). */
        int blocked = GATE_GO;
        double gate_at = 0;
        for (int k = 0; k < c->n_slots && now >= c->paused_until && blocked == GATE_GO; k++) {
            http_slot *s = &c->slots[k];
            while (!s->busy) {
                int due = R.wait.n && R.wait.v[0].at <= now;
                if (!due && R.next >= n)
                    break;
                size_t i = due ? R.wait.v[0].idx : R.next;
                if ((blocked = gate(&R, s, i, now, &gate_at, &be)) != GATE_GO)
                    break;
                if (due)
                    heap_pop(&R.wait);
                else
                    R.next++;
                start(&R, s, i, now);
            }
        }
        if (blocked == GATE_BUDGET && c->in_flight == 0) {
            /* nothing in flight can settle for less: the limit is reached */
            stop_all(&R, now, "not sent: cost limit reached");
            rc = err_set(e, PWB_ELIMIT, "%s", be.msg);
            break;
        }
        int running = 0;
        CURLMcode mc = curl_multi_perform(c->multi, &running);
        if (mc != CURLM_OK) {
            stop_all(&R, now, "interrupted");
            rc = err_set(e, PWB_EHTTP, "http: curl_multi_perform: %s", curl_multi_strerror(mc));
            break;
        }
        int freed = 0, left;
        CURLMsg *m;
        while ((m = curl_multi_info_read(c->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            http_slot *s = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            CURLcode res = m->data.result;
            if (s && s->busy) {
                complete(&R, s, res, timer_wall());
                freed = 1;
            }
        }
        if (R.finished >= n)
            break;
        /* Freed slots with work ready: loop at once rather than sleep. */
        now = timer_wall();
        int work_ready = now >= c->paused_until && (R.next < n || (R.wait.n && R.wait.v[0].at <= now));
        if (freed && work_ready)
            continue;
        /* Sleep until socket activity, the next due work for a free slot, or 50 ms (the stop
         * flag's latency). With every slot busy, or a request waiting for the in-flight cap or
         * for the budget, only a transfer can change anything. */
        int free_slot = 0;
        for (int k = 0; k < c->n_slots && !free_slot; k++)
            free_slot = !c->slots[k].busy;
        double wait_s = 0.05;
        if (free_slot && (R.next < n || R.wait.n) && !(blocked != GATE_GO && gate_at <= 0)) {
            double at = R.next < n ? now : R.wait.v[0].at;
            if (R.wait.n && R.wait.v[0].at < at)
                at = R.wait.v[0].at;
            if (at < c->paused_until)
                at = c->paused_until;
            if (blocked == GATE_WAIT && gate_at > at)
                at = gate_at;
            if (at - now < wait_s)
                wait_s = at - now > 0 ? at - now : 0;
        }
        curl_multi_poll(c->multi, NULL, 0, (int)(wait_s * 1000.0 + 0.999), NULL);
    }
    c->ops = NULL;
    free(R.wait.v);
    free(R.state);
    free(R.attempts);
    free(R.t0);
    return rc;
}
