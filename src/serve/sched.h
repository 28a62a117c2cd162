/* Continuous batching over the local engine's forward pass.
 *
 * One thread owns the model's forward scratch and runs steps. Each step stacks, in one
 * forward_batch: one token for every sequence that is generating, and the next chunk of every
 * prompt that is still being read, up to a token budget. A request submitted while others run
 * joins at the next step; a finished one leaves at once. Sequences of different adapters share the
 * step: a soft prompt is the KV of its vectors, computed once at startup, and a prefix-tuning
 * adapter the KV it was trained as; its requests' caches hang under that (forward.h's parent
 * caches), so the batch does not care whose vectors lead a row. A LoRA adapter's low-rank terms
 * are added to its own rows of each product (fwd_seq.lora), so base, soft-prompt, prefix and LoRA
 * rows share one forward.
 *
 * Prefix reuse: a finished request's cache (its prompt's positions) is kept in a small pool with
 * its token ids, and the log-probabilities of its prompt tokens when they were computed. A new
 * request of the same adapter starts as a child of the pooled cache sharing the longest run of
 * leading ids with it, so an instruction, few-shot shots or the same prompt with another candidate
 * continuation (rank classification over echo) is computed once. The pool is bounded by positions
 * and LRU-evicted.
 *
 * Results do not depend on the batch: the engine's products treat each row alone, sampling is per
 * request from its own seed (as engine_generate), and a prompt token's log-probability is the same
 * number whether its row ran here or in the request that filled the pool. */
#ifndef PWB_SERVE_SCHED_H
#define PWB_SERVE_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "serve/adapter.h"
#include "util/buf.h"
#include "util/err.h"

#define SCHED_MAX_TOP 5
#define SCHED_MAX_STOP 4

typedef struct sched sched;

typedef struct sched_opts {
    int step_tokens;      /* stacked tokens per step; 0: 256 */
    int max_active;       /* sequences in the running batch; 0: 64 */
    int max_queue;        /* waiting requests beyond which submit refuses (busy); 0: 1024 */
    int pool_positions;   /* KV positions the prefix pool may hold; 0: 4096; -1: no pool */
    int n_threads;        /* OpenMP threads of the scheduler's thread; 0: the process setting */
    int int8_activations; /* as engine_opts: 0 (default) exact F32 products, as the local backend */
} sched_opts;

/* One token with its log-probability and, when asked, the most likely alternatives. */
typedef struct sched_tok {
    int32_t id;
    double logprob;       /* NAN for the first prompt token (nothing before it) */
    int n_top;
    int32_t top_id[SCHED_MAX_TOP];
    double top_lp[SCHED_MAX_TOP];
} sched_tok;

enum sched_finish { SCHED_FINISH_LENGTH = 0, SCHED_FINISH_STOP = 1 };

typedef struct sched_job {
    /* ---- the request (set before sched_submit, then read-only) ---- */
    int adapter;              /* index in the adapter set */
    int32_t *ids;             /* the prompt (owned, at least one id) */
    int n_ids;
    int echo;                 /* log-probabilities of the prompt's tokens */
    int logprobs;             /* -1: none for generated tokens; 0..SCHED_MAX_TOP: with that many alternatives */
    int max_tokens;           /* 0: score the prompt only */
    float temperature, top_p;
    uint64_t seed;
    char *stop[SCHED_MAX_STOP];
    int n_stop;
    void (*notify)(void *ctx); /* called under the scheduler's lock when waiting is set and there is news */
    void *notify_ctx;
    /* ---- results: read under sched_lock, or freely once done ---- */
    int waiting;              /* the reader sets it (under the lock) before it sleeps */
    int cancel;               /* the reader sets it: the client is gone */
    int done;
    int status;               /* PWB_OK, else err says why */
    char err[256];
    sched_tok *prompt_lp;     /* echo: [n_ids] */
    int32_t *out_ids;
    sched_tok *out_lp;        /* logprobs >= 0: [n_out] */
    int n_out;
    pwb_buf text;             /* generated text; the final text once done (a stop string cut off) */
    size_t n_stable;          /* bytes of text that will not change (whole characters, no stop prefix) */
    int finish;               /* enum sched_finish */
    int n_cached;             /* prompt tokens whose KV came from the pool */
    double t_submit, t_first, t_done;
    /* ---- the scheduler's own ---- */
    struct sched_run *run_;
    int refs_;
    struct sched_job *next_;
} sched_job;

/* A job holding a copy of ids; stop strings are added with sched_job_add_stop. */
sched_job *sched_job_new(const int32_t *ids, int n_ids);
int sched_job_add_stop(sched_job *j, const char *s);
/* Drops the caller's reference (the scheduler holds its own while the job runs). */
void sched_job_release(sched *s, sched_job *j);

/* Takes the engine (not owned; used by the scheduler's thread only from now on) and the adapters
 * (not owned, read-only); computes each soft prompt's KV and starts the thread. */
int sched_start(sched **out, engine *en, const adapter_set *ads, const sched_opts *o, pwb_err *e);
/* Queues j (the scheduler takes a reference). PWB_ERANGE when the queue is full, PWB_EINTR when
 * draining, PWB_EINVAL for a job that cannot run (prompt and generation beyond the context...). */
int sched_submit(sched *s, sched_job *j, pwb_err *e);
/* Positions a request of adapter a with n_ids prompt ids and max_tokens would need, and the
 * context. */
int sched_positions(const sched *s, int ad, int n_ids, int *n_ctx);
void sched_lock(sched *s);
void sched_unlock(sched *s);
/* Marks the job cancelled (its client left); it stops at the next step. */
void sched_cancel(sched *s, sched_job *j);
/* Stops taking new jobs; the thread finishes every queued and running one, then exits. */
void sched_drain(sched *s);
/* Jobs queued or running. */
int sched_busy(sched *s);
typedef struct sched_stats {
    long steps, jobs_done, tokens_prefill, tokens_decode, tokens_cached;
    int active, queued, pool_entries, pool_positions;
} sched_stats;
void sched_get_stats(sched *s, sched_stats *st);
/* Drains, joins the thread, frees everything (the engine stays the caller's). */
void sched_free(sched *s);

#endif
