/* Batched HTTP POSTs over the libcurl multi interface: bounded concurrency on reused keep-alive
 * connections, per-attempt timeouts, retries with exponential backoff and full jitter, Retry-After,
 * size-capped replies, and a secret (the API key) scrubbed from everything handed back.
 * Provider modules (openai.c) supply the request bodies and parse the replies. */
#ifndef PWB_LLM_HTTP_H
#define PWB_LLM_HTTP_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "llm/backend.h"
#include "llm/budget.h"
#include "llm/prices.h"
#include "llm/ratelimit.h"
#include "util/buf.h"
#include "util/err.h"

#define HTTP_MAX_BODY (8u << 20)      /* default reply cap */
#define HTTP_MAX_CONCURRENCY 256
#define HTTP_EXCERPT 200              /* bytes of an error body quoted in a response's error */
#define HTTP_RETRY_AFTER_FLOOR 60.0   /* Retry-After (on 429/503) is honoured up to max(this,
                                       * backoff_max_s) and pauses all of the client's sends */

typedef struct http_opts {
    const char *url;           /* the one endpoint every request of this client goes to */
    const char *secret;        /* API key: sent as "Authorization: Bearer <secret>", scrubbed; may be NULL */
    const char *const *headers;/* extra "Name: value" lines */
    int n_headers;
    int concurrency;           /* transfers in flight, 1..HTTP_MAX_CONCURRENCY */
    double timeout_s;          /* whole attempt; <= 0: none */
    double connect_timeout_s;  /* <= 0: min(timeout_s, 10) */
    int max_retries;           /* attempts beyond the first */
    double backoff_base_s;
    double backoff_max_s;
    size_t max_body;           /* reply cap in bytes; 0: HTTP_MAX_BODY */
    uint64_t jitter_seed;      /* 0: seeded from time and pid */
    /* Added for remote providers; zero values keep the behaviour above. */
    const char *auth_header;   /* send the secret as "<auth_header>: <secret>" (e.g. "x-api-key");
                                * NULL: "Authorization: Bearer <secret>" */
    ratelimit *limiter;        /* asked before every send, told every outcome; not owned */
    llm_budget *budget;        /* cost guard: each attempt reserves its worst case; not owned */
    llm_price price;           /* what the budget charges */
} http_opts;

/* The provider's half of a batch. */
typedef struct http_ops {
    /* Writes request i's body into body (empty on entry). An error fails request i without
     * sending it; e->msg becomes its error. */
    int (*build)(void *ctx, size_t i, pwb_buf *body, pwb_err *e);
    /* Parses a 2xx reply (NUL-terminated, len bytes) into r: text, finish_reason, tokens.
     * PWB_EPARSE means the body was not JSON at all (a truncated or garbled reply) and the request
     * is retried; any other error fails it for good with e->msg as its error. */
    int (*parse)(void *ctx, size_t i, const char *body, size_t len, llm_response *r, pwb_err *e);
    void *ctx;
    /* Optional: request i's estimated prompt tokens and the most it may generate, for the rate
     * limiter (their sum) and the cost guard. Without it a request counts 0 tokens. */
    void (*estimate)(void *ctx, size_t i, double *tokens_in, double *tokens_out_max);
    /* Optional, for streamed replies: called as the body arrives with the complete lines not
     * seen before (data[0..len), ending in '\n') until it returns 1, meaning they carry the first
     * generated token; the time from sending the attempt to then becomes r->ttft_s. */
    int (*first_token)(void *ctx, size_t i, const char *data, size_t len);
} http_ops;

typedef struct http_client http_client;

int http_client_create(http_client **out, const http_opts *o, pwb_err *e);
void http_client_free(http_client *c);

/* Runs requests 0..n-1 and fills out[0..n) (zeroed by the caller). Each response gets its text or
 * its error, http_status, retries and latency_s (first send to final answer, backoff included);
 * done(done_ctx, i, &out[i]) is called as each one completes. Returns PWB_OK when every request
 * got an answer or a final error; PWB_EINTR when *stop was set (every unfinished response then
 * carries the error "interrupted" and done is not called for it); PWB_ELIMIT when the cost guard
 * refused a request with nothing left in flight (unfinished responses carry the error "not sent:
 * cost limit reached", done is not called for them, e says why); another code only when the
 * batch could not run at all.
 *
 * With a limiter, a request waits until ratelimit_admit lets it go (the in-flight cap, RPM, TPM);
 * with a budget, until its reservation fits (requests in flight may settle for less than they
 * held). */
int http_client_run(http_client *c, size_t n, const http_ops *ops, llm_response *out, llm_done_fn done,
                    void *done_ctx, volatile sig_atomic_t *stop, pwb_err *e);

/* The client's limiter (NULL when none), for reports and tests. */
const ratelimit *http_client_limiter(const http_client *c);

/* Pieces exposed for tests. */

/* Retry-After value (delay-seconds or an HTTP-date, RFC 9110 10.2.3) as seconds from now;
 * -1 when absent or unparseable. Dates in the past give 0. */
double http_retry_after_parse(const char *value, time_t now);
/* Full-jitter backoff for retry number attempt (0 = first retry): u * min(max, base * 2^attempt),
 * u in [0, 1). */
double http_backoff_delay(double base_s, double max_s, int attempt, double u);
/* 1 for statuses worth retrying: 429 and 5xx. */
int http_status_retryable(int status);
/* Overwrites each occurrence of secret in s[0..n) with '*'. */
void http_scrub(char *s, size_t n, const char *secret);
/* "HTTP <status>: <message>" for a failed reply: the JSON error.message when there is one, else
 * a printable excerpt of the body; secret scrubbed. Returns malloc'd text or NULL on ENOMEM. */
char *http_error_text(int status, const char *body, size_t len, const char *secret);

#endif
