/* `pwb serve`'s HTTP side: libmicrohttpd on a loopback (by default) port, OpenAI's routes
 *
 *   GET  /health                 {"status": "ok", ...scheduler counters}
 *   GET  /v1/models              the base model and every adapter
 *   POST /v1/completions         prompt(s), echo, logprobs, stream
 *   POST /v1/chat/completions    messages rendered with the model's chat template, stream
 *
 * Requests are tokenized on the HTTP threads and answered by the scheduler (sched.h); a
 * connection waiting for its reply is suspended, so a few threads carry many connections. Limits:
 * body bytes (413), request line + headers (libmicrohttpd's per-connection memory: 431),
 * connections, requests in flight (503 beyond), idle time per connection, and time per request
 * (its jobs cancelled, 504). Every error is OpenAI's error object. With an API key set, every route
 * but /health wants "Authorization: Bearer KEY" (401). */
#ifndef PWB_SERVE_SERVER_H
#define PWB_SERVE_SERVER_H

#include <stddef.h>

#include "engine/engine.h"
#include "serve/adapter.h"
#include "serve/sched.h"
#include "util/err.h"

typedef struct serve_opts {
    const char *host;           /* numeric address to bind; NULL: 127.0.0.1 */
    int port;                   /* 0: a free port (serve_port says which) */
    size_t max_body;            /* 0: 1 MiB */
    size_t max_header;          /* 0: 32 KiB */
    int max_connections;        /* 0: 1024 */
    int max_inflight;           /* 0: 256 */
    int idle_timeout_s;         /* 0: 30 */
    double request_timeout_s;   /* 0: 600 */
    int http_threads;           /* 0: 2 */
    const char *api_key;        /* NULL or "": no authentication */
    const char *chat_template;  /* override of the model's template family, NULL: the model's */
    const char *model_name;     /* shown in /health */
} serve_opts;

typedef struct serve serve;

/* Starts listening. en, ads and s stay the caller's and must outlive the server. */
int serve_start(serve **out, engine *en, const adapter_set *ads, sched *s, const serve_opts *o, pwb_err *e);
int serve_port(const serve *sv);
/* Cancels requests past the time limit; call about once a second. */
void serve_tick(serve *sv);
/* Requests being answered. */
int serve_inflight(serve *sv);
/* Stops accepting connections (open ones are still answered). */
void serve_quiesce(serve *sv);
/* Closes every connection and frees the server. */
void serve_stop(serve *sv);

#endif
