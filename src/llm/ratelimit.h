/* Per-model rate control for the HTTP backends: a cap on requests in flight that can adapt (AIMD:
 * halve on 429/503, +1 after a round of successes) and token buckets for requests per minute and
 * tokens per minute. Pure bookkeeping on a clock the caller passes in (seconds, timer_wall()), so
 * it is tested without a network; http.c asks it before every send and tells it every outcome.
 *
 * Buckets hold at most burst_s seconds of their rate (default 1 s, at least one request's worth),
 * so a limit of 600 RPM sends about 10 requests a second rather than 600 at once and then
 * nothing for a minute: providers enforce their per-minute limits over shorter windows too.
 * A request may go when its bucket holds min(its cost, the depth); the level may then go
 * negative (a large request borrows from the next seconds), which keeps the long-run rate exact.
 * Token costs are estimates made before sending (prompt and max_tokens); ratelimit_settle
 * corrects the bucket once the reply's usage is known. */
#ifndef PWB_LLM_RATELIMIT_H
#define PWB_LLM_RATELIMIT_H

typedef struct ratelimit_opts {
    int max_concurrency; /* upper bound on requests in flight; < 1 taken as 1 */
    double rpm;          /* requests per minute; <= 0: unlimited */
    double tpm;          /* tokens per minute (prompt + completion); <= 0: unlimited */
    int adaptive;        /* AIMD on the in-flight cap */
    int grow_after;      /* successes per +1; <= 0: the current cap (one round of requests) */
    double burst_s;      /* bucket depth in seconds of rate; <= 0: 1 s */
} ratelimit_opts;

typedef struct rl_bucket {
    double rate;  /* units per second; 0: unlimited */
    double depth; /* most it holds */
    double level; /* may be negative (debt) */
    double t;     /* when level was last brought up to date */
} rl_bucket;

typedef struct ratelimit {
    ratelimit_opts o;
    int limit;        /* current cap on requests in flight */
    int successes;    /* since the last change of the cap */
    double last_cut;  /* when the cap was last halved; attempts sent before it do not cut again */
    rl_bucket req, tok;
    long n_throttled; /* 429/503 replies seen */
    long n_cuts, n_grows;
} ratelimit;

void ratelimit_init(ratelimit *rl, const ratelimit_opts *o, double now);

/* Whether a request estimated at `tokens` may be sent now, with in_flight requests already out.
 * On yes (1) both buckets are charged. On no (0), *retry_at is when to ask again, or 0 when only
 * a completing request can make room (the in-flight cap). */
int ratelimit_admit(ratelimit *rl, double now, int in_flight, double tokens, double *retry_at);
/* Gives back what ratelimit_admit charged for a request that was not sent after all. */
void ratelimit_refund(ratelimit *rl, double tokens);
/* Corrects the token bucket by used - estimated once a reply's usage is known (used < 0: unknown,
 * the estimate stands). */
void ratelimit_settle(ratelimit *rl, double estimated, double used);
/* The outcome of an attempt sent at sent_at: status 429 or 503 halves the cap (when adaptive, and
 * only for attempts sent after the last cut: they were sent under the old cap), 2xx counts
 * towards the next +1. Other outcomes leave the cap alone. */
void ratelimit_feedback(ratelimit *rl, double now, double sent_at, int status);

#endif
