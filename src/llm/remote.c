/* Keys, URLs and connections shared by the HTTP providers. See remote.h. */
#include "llm/remote.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llm/estimate.h"
#include "llm/provider.h"
#include "util/str.h"
#include "util/timer.h"

int url_is_loopback(const char *url)
{
    if (!url)
        return 0;
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0)
        p = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        p = url + 8;
    else
        return 0;
    size_t alen = strcspn(p, "/?#");
    /* userinfo ends at the last '@' of the authority */
    for (size_t k = alen; k > 0; k--)
        if (p[k - 1] == '@') {
            p += k;
            alen -= k;
            break;
        }
    char host[256];
    size_t hlen;
    if (alen > 0 && p[0] == '[') {
        const char *rb = memchr(p, ']', alen);
        if (!rb)
            return 0;
        hlen = (size_t)(rb - p - 1);
        p++;
    } else {
        const char *colon = memchr(p, ':', alen);
        hlen = colon ? (size_t)(colon - p) : alen;
    }
    if (hlen == 0 || hlen >= sizeof host)
        return 0;
    memcpy(host, p, hlen);
    host[hlen] = '\0';
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    return 0;
}

int remote_read_key(const llm_config *cfg, const char *url, const char **key, pwb_err *e)
{
    *key = NULL;
    const char *name = cfg->name ? cfg->name : "model";
    if (!cfg->api_key_env || !*cfg->api_key_env)
        return PWB_OK;
    const char *k = getenv(cfg->api_key_env);
    if (!k || !*k)
        return err_set(e, PWB_EINVAL, "%s: environment variable %.128s (api_key_env) is not set", name,
                       cfg->api_key_env);
    if (strncasecmp(url, "http://", 7) == 0 && !url_is_loopback(url) && !cfg->allow_insecure_key)
        return err_set(e, PWB_EINVAL,
                       "%s: refusing to send the API key from %.128s over plain http:// to a host that is not "
                       "loopback; use https://, or set allow_insecure_key if this network is trusted",
                       name, cfg->api_key_env);
    *key = k;
    return PWB_OK;
}

int remote_url(pwb_buf *out, const char *base, const char *path, pwb_err *e)
{
    buf_reset(out);
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    /* path's first segment ("/v1", "/api") when the base already ends with it */
    const char *rest = path;
    if (path[0] == '/') {
        size_t seg = strcspn(path + 1, "/") + 1;
        if (path[seg] == '/' && blen >= seg && memcmp(base + blen - seg, path, seg) == 0)
            rest = path + seg;
    }
    if (buf_append(out, base, blen) || buf_puts(out, rest))
        return err_set(e, PWB_ENOMEM, "out of memory");
    return PWB_OK;
}

int remote_conn_open(remote_conn *conn, const llm_config *cfg, const char *path, const char *const *headers,
                     int n_headers, pwb_err *e)
{
    memset(conn, 0, sizeof *conn);
    const char *name = cfg->name ? cfg->name : "model";
    if (!cfg->base_url || !*cfg->base_url)
        return err_set(e, PWB_EINVAL, "%s: no base_url (e.g. http://127.0.0.1:8080/v1)", name);
    pwb_buf url;
    buf_init(&url);
    const char *key = NULL;
    int rc = remote_url(&url, cfg->base_url, path, e);
    if (!rc)
        rc = remote_read_key(cfg, url.data, &key, e);
    if (rc) {
        buf_free(&url);
        return rc;
    }
    const llm_provider *provider = llm_provider_find(cfg->provider);
    conn->stream = cfg->stream != 0;
    if (cfg->model && *cfg->model && !(conn->model = str_dup(cfg->model))) {
        buf_free(&url);
        return err_set(e, PWB_ENOMEM, "%s: out of memory", name);
    }
    int conc = cfg->concurrency < 1 ? 1 : cfg->concurrency > HTTP_MAX_CONCURRENCY ? HTTP_MAX_CONCURRENCY : cfg->concurrency;
    if (cfg->rpm > 0 || cfg->tpm > 0 || cfg->adaptive_concurrency) {
        ratelimit_opts ro = {.max_concurrency = conc, .rpm = cfg->rpm, .tpm = cfg->tpm,
                             .adaptive = cfg->adaptive_concurrency != 0};
        ratelimit_init(&conn->rl, &ro, timer_wall());
        conn->limited = 1;
    }
    http_opts o = {
        .url = url.data,
        .secret = key,
        .headers = headers,
        .n_headers = n_headers,
        .concurrency = conc,
        .timeout_s = cfg->timeout_s,
        .max_retries = cfg->max_retries < 0 ? 0 : cfg->max_retries,
        .backoff_base_s = cfg->backoff_base_s,
        .backoff_max_s = cfg->backoff_max_s,
        .auth_header = provider ? provider->auth : NULL,
        .limiter = conn->limited ? &conn->rl : NULL,
        .budget = cfg->budget,
    };
    if (cfg->price)
        o.price = *cfg->price;
    rc = http_client_create(&conn->http, &o, e);
    buf_free(&url);
    if (rc) {
        err_prefix(e, "%s: ", name);
        remote_conn_close(conn);
    }
    return rc;
}

void remote_conn_close(remote_conn *conn)
{
    if (!conn)
        return;
    http_client_free(conn->http);
    free(conn->model);
    memset(conn, 0, sizeof *conn);
}

void remote_apply_stops(char *text, const char *const *stop, int n_stop)
{
    if (!text || !stop)
        return;
    char *cut = NULL;
    for (int k = 0; k < n_stop; k++) {
        if (!stop[k] || !*stop[k])
            continue;
        char *hit = strstr(text, stop[k]);
        if (hit && (!cut || hit < cut))
            cut = hit;
    }
    if (cut)
        *cut = '\0';
}

/* ---- a backend for one wire protocol ---- */

static int rb_build(void *ctx, size_t i, pwb_buf *body, pwb_err *e)
{
    remote_backend *rb = ctx;
    return rb->proto->build(rb, &rb->reqs[i], body, e);
}

static int rb_parse(void *ctx, size_t i, const char *body, size_t len, llm_response *r, pwb_err *e)
{
    remote_backend *rb = ctx;
    return rb->proto->parse(rb, &rb->reqs[i], body, len, r, e);
}

static void rb_estimate(void *ctx, size_t i, double *in, double *out)
{
    remote_backend *rb = ctx;
    llm_request_estimate(&rb->reqs[i], in, out);
}

static int rb_first(void *ctx, size_t i, const char *data, size_t len)
{
    remote_backend *rb = ctx;
    return rb->proto->first_token(data, len);
}

static int rb_run(llm_backend *b, const llm_request *reqs, size_t n, llm_response *out, llm_done_fn done, void *ctx,
                  pwb_err *e)
{
    remote_backend *rb = b->impl;
    if (n && (!reqs || !out))
        return err_set(e, PWB_EINVAL, "%s: no requests or no response array", b->kind);
    rb->reqs = reqs;
    http_ops ops = {.build = rb_build, .parse = rb_parse, .ctx = rb, .estimate = rb_estimate,
                    .first_token = rb->conn.stream && rb->proto->first_token ? rb_first : NULL};
    int rc = http_client_run(rb->conn.http, n, &ops, out, done, ctx, b->stop, e);
    rb->reqs = NULL;
    return rc;
}

static void rb_destroy(llm_backend *b)
{
    if (!b)
        return;
    remote_backend *rb = b->impl;
    remote_conn_close(&rb->conn);
    free(rb);
}

int remote_backend_create(llm_backend **out, const llm_config *cfg, const remote_proto *proto, const char *path,
                          const char *const *headers, int n_headers, pwb_err *e)
{
    *out = NULL;
    remote_backend *rb = calloc(1, sizeof *rb);
    if (!rb)
        return err_set(e, PWB_ENOMEM, "out of memory");
    int rc = remote_conn_open(&rb->conn, cfg, path, headers, n_headers, e);
    if (rc) {
        free(rb);
        return rc;
    }
    rb->proto = proto;
    rb->default_max_tokens = cfg->default_max_tokens > 0 ? cfg->default_max_tokens : 1024;
    rb->base.kind = proto->kind;
    rb->base.run = rb_run;
    rb->base.destroy = rb_destroy;
    rb->base.impl = rb;
    *out = &rb->base;
    return PWB_OK;
}

int remote_json_count(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > 2e9)
        return -1;
    return (int)v->valuedouble;
}

int remote_looks_like_object(const char *body, size_t len)
{
    size_t k = 0;
    while (k < len && (body[k] == ' ' || body[k] == '\t' || body[k] == '\r' || body[k] == '\n'))
        k++;
    return k < len && body[k] == '{';
}

cJSON *remote_stream_object(const char *data, size_t len, char *err, size_t err_cap, int *garbled)
{
    cJSON *j = cJSON_ParseWithLength(data, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        *garbled = 1;
        return NULL;
    }
    const cJSON *er = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (er) {
        const char *m = cJSON_IsObject(er) ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(er, "message"))
                                           : cJSON_GetStringValue(er);
        snprintf(err, err_cap, "server error: %.200s", m ? m : "(no message)");
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}
