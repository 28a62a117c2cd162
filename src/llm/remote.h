/* What the HTTP providers (openai.c, ollama.c, anthropic.c) share: the API key
 * and where it may be sent, endpoint URLs, and one connection (http client + rate limiter) built
 * from an llm_config.
 *
 * Each provider's default base URL, key header and key variable are its row of the provider table
 * (provider.h); llm_config_resolve applies them.
 *
 * The key: read once from getenv(cfg->api_key_env); never sent over plain http:// to a host other
 * than loopback (localhost, 127.0.0.0/8, ::1) unless cfg->allow_insecure_key. TLS verification is
 * libcurl's default and pwb never turns it off. */
#ifndef PWB_LLM_REMOTE_H
#define PWB_LLM_REMOTE_H

#include <stddef.h>

#include "llm/backend.h"
#include "llm/http.h"
#include "llm/ratelimit.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json.h"

/* 1 when url is http(s) to localhost, 127.0.0.0/8 or ::1. */
int url_is_loopback(const char *url);

/* Reads the key named by cfg->api_key_env (NULL when none is named) and checks that it may go to
 * url. Errors name the variable, never the value. */
int remote_read_key(const llm_config *cfg, const char *url, const char **key, pwb_err *e);

/* base (trailing '/' dropped) + path, where a base that already ends with path's first segment
 * does not repeat it: ("https://api.anthropic.com/v1", "/v1/messages") gives .../v1/messages. */
int remote_url(pwb_buf *out, const char *base, const char *path, pwb_err *e);

/* One model's connection. Lives inside its backend (the limiter's address is handed to http.c). */
typedef struct remote_conn {
    http_client *http;
    ratelimit rl;
    int limited;          /* rl is in use */
    char *model;          /* model id sent to the server, NULL when none */
    int stream;
} remote_conn;

/* Opens conn for cfg (already resolved): the URL from cfg->base_url + path, the key sent as its
 * provider's row says (provider.h), extra headers, the limiter from cfg->rpm/tpm/adaptive_concurrency,
 * the budget and price from cfg. */
int remote_conn_open(remote_conn *conn, const llm_config *cfg, const char *path, const char *const *headers,
                     int n_headers, pwb_err *e);
void remote_conn_close(remote_conn *conn);

/* A backend for one wire protocol on a remote_conn (ollama.c, anthropic.c). */
typedef struct remote_backend remote_backend;
typedef struct remote_proto {
    const char *kind;
    int (*build)(const remote_backend *rb, const llm_request *r, pwb_buf *body, pwb_err *e);
    /* a 2xx reply, streamed or not as rb->conn.stream says; error codes as http_ops.parse */
    int (*parse)(const remote_backend *rb, const llm_request *r, const char *body, size_t len, llm_response *out,
                 pwb_err *e);
    int (*first_token)(const char *data, size_t len); /* streamed: complete lines carry a token */
} remote_proto;

struct remote_backend {
    llm_backend base; /* first */
    remote_conn conn;
    const remote_proto *proto;
    int default_max_tokens;
    const llm_request *reqs; /* the batch being run */
};

int remote_backend_create(llm_backend **out, const llm_config *cfg, const remote_proto *proto, const char *path,
                          const char *const *headers, int n_headers, pwb_err *e);

/* ---- JSON bodies and replies, as every provider writes and reads them ---- */

/* A token count in o: a number from 0 to 2e9, else -1 (absent or untrusted). */
int remote_json_count(const cJSON *o, const char *key);
/* 1 when body (after whitespace) starts a JSON object: a reply sent whole although streaming was
 * asked for. */
int remote_looks_like_object(const char *body, size_t len);
/* One streamed event's JSON object, or NULL: *garbled set when it is not an object, err filled
 * ("server error: ...") when it carries an "error". */
cJSON *remote_stream_object(const char *data, size_t len, char *err, size_t err_cap, int *garbled);

/* Applies stop strings to generated text the way a server would (cut at the earliest); for
 * providers that cannot take some stops (Anthropic rejects whitespace-only ones). */
void remote_apply_stops(char *text, const char *const *stop, int n_stop);

#endif
