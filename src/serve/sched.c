#include "serve/sched.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"
#include "engine/sample.h"
#include "util/log.h"
#include "util/str.h"
#include "util/timer.h"

#define SCHED_MAX_STOP_IDS 4
#define SCHED_POOL_MAX 64        /* pooled prompts at most */
#define SCHED_LOGIT_ROWS 128     /* prompt rows scored per step (each holds n_vocab logits) */
#define SCHED_MIN_SHARE 8        /* leading ids worth waiting for another request's prompt */

/* A KV cache shared by reference: a running sequence, a pooled prompt, a soft prompt's vectors. */
typedef struct skv {
    kv_cache *kv;
    int refs;
    struct skv *parent;
} skv;

typedef struct donor {
    skv *k;
    int adapter;
    int32_t *ids;      /* the prompt ids whose positions k holds (after the adapter's vectors) */
    int n;
    sched_tok *lp;     /* their log-probabilities ([n], [0] unused), NULL when not computed */
    uint64_t used;
} donor;

/* The scheduler's state of one running job. */
typedef struct sched_run {
    skv *k;
    int pos;           /* prompt ids in the cache */
    int32_t feed;      /* the token the next decode step reads */
    sampler smp;
    int decoding;
    struct sched_job *wait_for; /* a running job whose prompt this one continues, once it has read */
    int wait_n;                 /* this many ids of it (no cache of its own until then) */
} sched_run;

struct sched {
    engine *en;
    const model *m;
    const tokenizer *tok;
    fwd_ctx *fc;
    const adapter_set *ads;
    skv *roots[ADAPTER_MAX];
    sched_opts o;
    int32_t stop_ids[SCHED_MAX_STOP_IDS];
    int n_stop_ids;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sched_job *q_head, *q_tail;
    int n_queued;
    sched_job **active;
    int n_active;
    int draining;
    donor pool[SCHED_POOL_MAX];
    int n_pool;
    uint64_t clock;
    float *logits;     /* [rows][n_vocab] */
    int logit_rows;
    sched_stats st;
};

/* ---- references ---------------------------------------------------------------------------- */

static void skv_release(skv *k)
{
    while (k && --k->refs == 0) {
        skv *p = k->parent;
        kv_cache_free(k->kv);
        free(k);
        k = p;
    }
}

static int skv_new(skv **out, const model *m, skv *parent, int n_parent, int cap, pwb_err *e)
{
    *out = NULL;
    skv *k = calloc(1, sizeof *k);
    if (!k)
        return err_set(e, PWB_ENOMEM, "out of memory");
    int rc = kv_cache_new(&k->kv, m, parent ? parent->kv : NULL, parent ? n_parent : 0, cap, e);
    if (rc != PWB_OK) {
        free(k);
        return rc;
    }
    k->refs = 1;
    k->parent = parent;
    if (parent)
        parent->refs++;
    *out = k;
    return PWB_OK;
}

sched_job *sched_job_new(const int32_t *ids, int n_ids)
{
    if (n_ids < 1 || !ids)
        return NULL;
    sched_job *j = calloc(1, sizeof *j);
    if (!j || !(j->ids = malloc((size_t)n_ids * sizeof *ids))) {
        free(j);
        return NULL;
    }
    memcpy(j->ids, ids, (size_t)n_ids * sizeof *ids);
    j->n_ids = n_ids;
    j->logprobs = -1;
    j->top_p = 1.0f;
    j->refs_ = 1;
    buf_init(&j->text);
    return j;
}

int sched_job_add_stop(sched_job *j, const char *s)
{
    if (j->n_stop >= SCHED_MAX_STOP)
        return PWB_ERANGE;
    if (!s || !*s)
        return PWB_OK;
    if (!(j->stop[j->n_stop] = str_dup(s)))
        return PWB_ENOMEM;
    j->n_stop++;
    return PWB_OK;
}

static void job_free(sched_job *j)
{
    free(j->ids);
    for (int i = 0; i < j->n_stop; i++)
        free(j->stop[i]);
    free(j->prompt_lp);
    free(j->out_ids);
    free(j->out_lp);
    buf_free(&j->text);
    free(j);
}

/* Called with the lock held. */
static void job_unref_locked(sched_job *j)
{
    if (j && --j->refs_ == 0)
        job_free(j);
}

void sched_job_release(sched *s, sched_job *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&s->mu);
    job_unref_locked(j);
    pthread_mutex_unlock(&s->mu);
}

void sched_lock(sched *s) { pthread_mutex_lock(&s->mu); }
void sched_unlock(sched *s) { pthread_mutex_unlock(&s->mu); }

static void wake_reader(sched_job *j)
{
    if (j->waiting && j->notify) {
        j->waiting = 0;
        j->notify(j->notify_ctx);
    }
}

/* ---- the pool ------------------------------------------------------------------------------ */

static int pool_positions(const sched *s)
{
    int n = 0;
    for (int i = 0; i < s->n_pool; i++)
        n += s->pool[i].k->kv->n;
    return n;
}

static void pool_drop(sched *s, int i)
{
    donor *d = &s->pool[i];
    skv_release(d->k);
    free(d->ids);
    free(d->lp);
    s->pool[i] = s->pool[--s->n_pool];
}

static void pool_trim(sched *s, int max_positions)
{
    while (s->n_pool > 0 && (s->n_pool >= SCHED_POOL_MAX || pool_positions(s) > max_positions)) {
        int lru = 0;
        for (int i = 1; i < s->n_pool; i++)
            if (s->pool[i].used < s->pool[lru].used)
                lru = i;
        pool_drop(s, lru);
    }
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb)
{
    int k = 0;
    while (k < na && k < nb && a[k] == b[k])
        k++;
    return k;
}

/* The pooled prompt to continue for j: *reuse ids of j come from it. NULL when none helps. */
static donor *pool_find(sched *s, const sched_job *j, int *reuse)
{
    donor *best = NULL;
    int best_n = 0;
    for (int i = 0; i < s->n_pool; i++) {
        donor *d = &s->pool[i];
        if (d->adapter != j->adapter || (j->echo && !d->lp) || d->k->kv->depth >= KV_MAX_DEPTH - 1)
            continue;
        /* the job must run at least its last id itself (its logits start the reply); with echo,
         * also the position before its first new id (that id's log-probability) */
        int l = common_prefix(d->ids, d->n, j->ids, j->n_ids);
        if (l > j->n_ids - 1)
            l = j->n_ids - 1;
        if (j->echo)
            l--;
        if (l > best_n) {
            best_n = l;
            best = d;
        }
    }
    *reuse = best ? best_n : 0;
    return best;
}

/* Keeps a finished job's prompt positions for later requests. */
static void pool_add(sched *s, sched_job *j)
{
    sched_run *r = j->run_;
    if (s->o.pool_positions < 0 || !r->k || r->pos < 1 || r->k->kv->depth >= KV_MAX_DEPTH - 1 || r->k->kv->n < 1)
        return;
    int base = adapter_positions(&s->ads->items[j->adapter]);
    int n = r->pos;
    /* the prompt's own positions only (the reply's are of no use to another request) */
    if (base + n < r->k->kv->n_parent)
        return;
    kv_cache_truncate(r->k->kv, base + n);
    if (r->k->kv->n < 1)
        return;
    pool_trim(s, s->o.pool_positions - r->k->kv->n);
    donor *d = &s->pool[s->n_pool];
    memset(d, 0, sizeof *d);
    if (!(d->ids = malloc((size_t)n * sizeof *d->ids)))
        return;
    memcpy(d->ids, j->ids, (size_t)n * sizeof *d->ids);
    if (j->echo && j->prompt_lp) {
        if (!(d->lp = malloc((size_t)n * sizeof *d->lp))) {
            free(d->ids);
            return;
        }
        memcpy(d->lp, j->prompt_lp, (size_t)n * sizeof *d->lp);
    }
    d->n = n;
    d->adapter = j->adapter;
    d->k = r->k;
    d->used = ++s->clock;
    r->k = NULL; /* the pool holds the reference now */
    s->n_pool++;
}

/* ---- jobs ---------------------------------------------------------------------------------- */

int sched_positions(const sched *s, int ad, int n_ids, int *n_ctx)
{
    *n_ctx = s->m->hp.n_ctx;
    return adapter_positions(&s->ads->items[ad]) + n_ids;
}

int sched_submit(sched *s, sched_job *j, pwb_err *e)
{
    int n_ctx;
    if (j->adapter < 0 || j->adapter >= s->ads->n)
        return err_set(e, PWB_EINVAL, "no such adapter");
    if (j->max_tokens < 0 || j->logprobs > SCHED_MAX_TOP)
        return err_set(e, PWB_EINVAL, "bad request");
    if (sched_positions(s, j->adapter, j->n_ids, &n_ctx) > n_ctx)
        return err_set(e, PWB_ERANGE, "the prompt's %d tokens exceed the model's context of %d", j->n_ids, n_ctx);
    for (int i = 0; i < j->n_ids; i++)
        if (j->ids[i] < 0 || j->ids[i] >= s->m->hp.n_vocab)
            return err_set(e, PWB_EINVAL, "token id %d out of range", (int)j->ids[i]);
    pthread_mutex_lock(&s->mu);
    int rc = PWB_OK;
    if (s->draining)
        rc = err_set(e, PWB_EINTR, "the server is shutting down");
    else if (s->n_queued >= s->o.max_queue)
        rc = err_set(e, PWB_ERANGE, "the server is busy (%d requests waiting)", s->n_queued);
    else {
        j->refs_++;
        j->t_submit = timer_wall();
        j->next_ = NULL;
        if (s->q_tail)
            s->q_tail->next_ = j;
        else
            s->q_head = j;
        s->q_tail = j;
        s->n_queued++;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void sched_cancel(sched *s, sched_job *j)
{
    pthread_mutex_lock(&s->mu);
    j->cancel = 1;
    pthread_mutex_unlock(&s->mu);
}

int sched_busy(sched *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n_queued + s->n_active;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void sched_get_stats(sched *s, sched_stats *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    st->active = s->n_active;
    st->queued = s->n_queued;
    pthread_mutex_unlock(&s->mu);
}

/* Ends a job (lock held): publishes, wakes its reader, frees the scheduler's state. */
static void job_finish_locked(sched *s, sched_job *j, int status, const char *msg)
{
    if (status != PWB_OK && j->status == PWB_OK) {
        j->status = status;
        str_copy(j->err, sizeof j->err, msg ? msg : "failed");
    }
    j->n_stable = j->text.len;
    j->done = 1;
    j->t_done = timer_wall();
    s->st.jobs_done++;
    wake_reader(j);
}

static void run_free(sched *s, sched_job *j, int pool)
{
    sched_run *r = j->run_;
    if (!r)
        return;
    if (r->wait_for)
        job_unref_locked(r->wait_for);
    if (pool && j->status == PWB_OK && !j->cancel && r->k)
        pool_add(s, j);
    skv_release(r->k);
    sampler_free(&r->smp);
    free(r);
    j->run_ = NULL;
}

/* Gives j its cache: a child of parent (NULL: the adapter's root) at reuse of j's ids, whose
 * log-probabilities lp (when j echoes) already holds. */
static int job_attach(sched *s, sched_job *j, skv *parent, int reuse, const sched_tok *lp, pwb_err *e)
{
    sched_run *r = j->run_;
    int base = s->roots[j->adapter] ? kv_cache_len(s->roots[j->adapter]->kv) : 0;
    int cap = j->n_ids - reuse + j->max_tokens;
    if (cap > s->m->hp.n_ctx - base - reuse)
        cap = s->m->hp.n_ctx - base - reuse;
    int rc = skv_new(&r->k, s->m, parent ? parent : s->roots[j->adapter], base + reuse, cap > 0 ? cap : 1, e);
    if (rc != PWB_OK)
        return rc;
    if (j->echo && reuse > 0)
        memcpy(j->prompt_lp + 1, lp + 1, (size_t)reuse * sizeof *lp);
    r->pos = reuse;
    j->n_cached = reuse;
    s->st.tokens_cached += reuse;
    r->feed = j->ids[j->n_ids - 1];
    if (r->pos >= j->n_ids - 1)
        r->decoding = j->max_tokens > 0;
    return PWB_OK;
}

/* Sets up a popped job (lock held): its outputs, then its cache, or a lead to wait for. */
static int job_admit(sched *s, sched_job *j, pwb_err *e)
{
    sched_run *r = calloc(1, sizeof *r);
    if (!r)
        return err_set(e, PWB_ENOMEM, "out of memory");
    j->run_ = r;
    sampler_init(&r->smp, j->temperature, j->top_p > 0 ? j->top_p : 1.0f, j->seed);
    if (j->echo && !(j->prompt_lp = calloc((size_t)j->n_ids, sizeof *j->prompt_lp)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    if (j->echo) {
        for (int i = 0; i < j->n_ids; i++)
            j->prompt_lp[i].id = j->ids[i];
        j->prompt_lp[0].logprob = NAN;
    }
    if (j->logprobs >= 0 && j->max_tokens > 0 && !(j->out_lp = calloc((size_t)j->max_tokens, sizeof *j->out_lp)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    if (j->max_tokens > 0 && !(j->out_ids = malloc((size_t)j->max_tokens * sizeof *j->out_ids)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    int reuse = 0;
    donor *d = pool_find(s, j, &reuse);
    /* a request admitted beside another with the same leading ids (rank classification sends one
     * per label at once) waits for that one's prompt instead of computing it a second time */
    sched_job *lead = NULL;
    int lead_n = 0;
    for (int i = 0; i < s->n_active; i++) {
        sched_job *a = s->active[i];
        sched_run *ar = a->run_;
        if (a->done || a->adapter != j->adapter || !ar || !ar->k || ar->wait_for || (j->echo && !a->echo) ||
            ar->k->kv->depth >= KV_MAX_DEPTH - 1)
            continue;
        int l = common_prefix(a->ids, a->n_ids, j->ids, j->n_ids);
        if (l > j->n_ids - 1)
            l = j->n_ids - 1;
        if (l > a->n_ids - 1) /* positions it computes in its prefill */
            l = a->n_ids - 1;
        if (j->echo)
            l--;
        if (l > lead_n) {
            lead_n = l;
            lead = a;
        }
    }
    if (lead && lead_n >= reuse + SCHED_MIN_SHARE) {
        lead->refs_++;
        r->wait_for = lead;
        r->wait_n = lead_n;
        r->feed = j->ids[j->n_ids - 1];
        return PWB_OK;
    }
    if (d)
        d->used = ++s->clock;
    return job_attach(s, j, d ? d->k : NULL, reuse, d ? d->lp : NULL, e);
}

/* A waiting job whose lead has read far enough continues its cache; one whose lead is gone takes
 * what the pool has (lock held). */
static void resolve_waits(sched *s)
{
    for (int i = 0; i < s->n_active; i++) {
        sched_job *j = s->active[i];
        sched_run *r = j->run_;
        if (!r || !r->wait_for || j->done)
            continue;
        sched_job *a = r->wait_for;
        int rc = PWB_OK;
        pwb_err e = {0};
        if (a->done || !a->run_ || !a->run_->k) {
            int reuse = 0;
            donor *d = pool_find(s, j, &reuse);
            if (d)
                d->used = ++s->clock;
            rc = job_attach(s, j, d ? d->k : NULL, reuse, d ? d->lp : NULL, &e);
        } else if (a->run_->pos >= r->wait_n) {
            rc = job_attach(s, j, a->run_->k, r->wait_n, a->prompt_lp, &e);
        } else {
            continue;
        }
        r->wait_for = NULL;
        job_unref_locked(a);
        if (rc != PWB_OK)
            job_finish_locked(s, j, rc, e.msg);
    }
}
/* Top n of a row of log-probabilities (ties: the lower id first). */
static void top_k(const float *row, int V, double lse, int n, sched_tok *t)
{
    t->n_top = 0;
    for (int v = 0; v < V && n > 0; v++) {
        int k = t->n_top;
        if (k == n && row[v] <= row[t->top_id[k - 1]])
            continue;
        if (k < n)
            t->n_top++;
        else
            k = n - 1;
        while (k > 0 && row[t->top_id[k - 1]] < row[v]) {
            t->top_id[k] = t->top_id[k - 1];
            k--;
        }
        t->top_id[k] = v;
    }
    for (int i = 0; i < t->n_top; i++)
        t->top_lp[i] = (double)row[t->top_id[i]] - lse;
}

static int is_stop_id(const sched *s, int32_t tok)
{
    if (tok == tokenizer_eos(s->tok))
        return 1;
    for (int i = 0; i < s->n_stop_ids; i++)
        if (s->stop_ids[i] == tok)
            return 1;
    return 0;
}

/* Bytes of text safe to stream: whole UTF-8 characters, and not the start of a stop string. */
static size_t stable_len(const sched_job *j)
{
    size_t n = j->text.len;
    const unsigned char *t = (const unsigned char *)j->text.data;
    /* an unfinished character at the end */
    size_t k = 0;
    while (k < 4 && k < n && (t[n - 1 - k] & 0xC0) == 0x80)
        k++;
    if (k < n) {
        unsigned char lead = t[n - 1 - k];
        int need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (need > (int)k + 1)
            n -= k + 1;
    }
    /* a tail that could grow into a stop string */
    for (int s = 0; s < j->n_stop; s++) {
        size_t L = strlen(j->stop[s]);
        for (size_t m = L - 1; m > 0; m--)
            if (m <= n && memcmp(j->text.data + n - m, j->stop[s], m) == 0) {
                n -= m;
                break;
            }
    }
    return n;
}

/* After a new token (lock held): the text so far; 1 when a stop string appeared (text cut). */
static int update_text(sched *s, sched_job *j)
{
    buf_reset(&j->text);
    tokenizer_decode(s->tok, j->out_ids, (size_t)j->n_out, 0, &j->text);
    if (!j->text.data)
        return 0;
    size_t cut = j->text.len;
    int hit = 0;
    for (int i = 0; i < j->n_stop; i++) {
        const char *p = strstr(j->text.data, j->stop[i]);
        if (p && (size_t)(p - j->text.data) < cut) {
            cut = (size_t)(p - j->text.data);
            hit = 1;
        }
    }
    if (hit) {
        j->text.len = cut;
        j->text.data[cut] = '\0';
    }
    size_t st = hit ? cut : stable_len(j);
    if (st > j->n_stable)
        j->n_stable = st;
    return hit;
}

/* ---- the loop ------------------------------------------------------------------------------ */

/* The job's LoRA, applied to its rows alone (NULL for other kinds). */
static const lora *job_lora(const sched *s, const sched_job *j)
{
    const adapter *a = &s->ads->items[j->adapter];
    return a->kind == ADAPTER_LORA ? &a->lora : NULL;
}

typedef struct slot {
    sched_job *j;
    int kind;        /* 0: prompt chunk, 1: decode */
    int from, n;     /* prompt chunk: ids [from, from + n) */
    int row;         /* first logits row */
} slot;

static void step(sched *s, fwd_seq *seqs, slot *sl)
{
    const int V = s->m->hp.n_vocab;
    int ns = 0, tokens = 0, rows = 0;
    pwb_err e = {0};
    /* generating sequences first (one token each), then prompt chunks in arrival order */
    for (int i = 0; i < s->n_active; i++) {
        sched_job *j = s->active[i];
        if (!j->run_->k || !j->run_->decoding || rows >= s->logit_rows)
            continue;
        sl[ns] = (slot){.j = j, .kind = 1, .row = rows};
        seqs[ns] = (fwd_seq){.kv = j->run_->k->kv, .ids = &j->run_->feed, .n_ids = 1, .n_out = 1,
                             .logits = s->logits + (size_t)rows * V, .lora = job_lora(s, j)};
        rows++;
        tokens++;
        ns++;
    }
    for (int i = 0; i < s->n_active && tokens < s->o.step_tokens; i++) {
        sched_job *j = s->active[i];
        sched_run *r = j->run_;
        if (!r->k || r->decoding)
            continue;
        int n = j->n_ids - 1 - r->pos, budget = s->o.step_tokens - tokens;
        if (n > budget)
            n = budget;
        if (j->echo && n > s->logit_rows - rows)
            n = s->logit_rows - rows;
        if (n <= 0)
            continue;
        sl[ns] = (slot){.j = j, .kind = 0, .from = r->pos, .n = n, .row = rows};
        seqs[ns] = (fwd_seq){.kv = r->k->kv, .ids = j->ids + r->pos, .n_ids = n, .lora = job_lora(s, j)};
        if (j->echo) {
            seqs[ns].n_out = n;
            seqs[ns].logits = s->logits + (size_t)rows * V;
            rows += n;
        }
        tokens += n;
        ns++;
    }
    if (ns == 0)
        return;
    for (int i = 0; i < ns; i++)
        if (kv_cache_reserve(seqs[i].kv, seqs[i].n_ids, &e) != PWB_OK)
            break;
    int rc = e.code ? e.code : forward_batch(s->fc, seqs, ns, &e);
    pthread_mutex_lock(&s->mu);
    s->st.steps++;
    for (int i = 0; i < ns; i++) {
        sched_job *j = sl[i].j;
        sched_run *r = j->run_;
        if (rc != PWB_OK) {
            job_finish_locked(s, j, rc, e.msg);
            continue;
        }
        if (sl[i].kind == 0) {
            s->st.tokens_prefill += sl[i].n;
            for (int k = 0; j->echo && k < sl[i].n; k++) {
                const float *row = s->logits + (size_t)(sl[i].row + k) * V;
                sched_tok *t = &j->prompt_lp[sl[i].from + k + 1];
                double lse = sample_logsumexp(row, V);
                t->logprob = (double)row[t->id] - lse;
                top_k(row, V, lse, j->logprobs > 0 ? j->logprobs : 0, t);
            }
            r->pos += sl[i].n;
            if (r->pos >= j->n_ids - 1) {
                if (j->max_tokens == 0)
                    job_finish_locked(s, j, PWB_OK, NULL);
                else
                    r->decoding = 1;
            }
            continue;
        }
        s->st.tokens_decode++;
        if (!j->t_first)
            j->t_first = timer_wall();
        if (r->pos < j->n_ids)
            r->pos = j->n_ids; /* the last prompt id has been read */
        const float *row = s->logits + (size_t)sl[i].row * V;
        int32_t tok = sampler_pick(&r->smp, row, V);
        if (tok < 0) {
            job_finish_locked(s, j, PWB_ENOMEM, "out of memory");
            continue;
        }
        if (is_stop_id(s, tok)) {
            j->finish = SCHED_FINISH_STOP;
            job_finish_locked(s, j, PWB_OK, NULL);
            continue;
        }
        if (j->out_lp) {
            sched_tok *t = &j->out_lp[j->n_out];
            double lse = sample_logsumexp(row, V);
            t->id = tok;
            t->logprob = (double)row[tok] - lse;
            top_k(row, V, lse, j->logprobs, t);
        }
        j->out_ids[j->n_out++] = tok;
        if (update_text(s, j)) {
            j->finish = SCHED_FINISH_STOP;
            job_finish_locked(s, j, PWB_OK, NULL);
            continue;
        }
        if (j->n_out >= j->max_tokens || kv_cache_len(r->k->kv) >= s->m->hp.n_ctx) {
            j->finish = SCHED_FINISH_LENGTH;
            job_finish_locked(s, j, PWB_OK, NULL);
            continue;
        }
        r->feed = tok;
        wake_reader(j);
    }
    pthread_mutex_unlock(&s->mu);
}

/* Removes finished and cancelled jobs from the running set (lock held for the job fields). */
static void sweep(sched *s)
{
    int w = 0;
    for (int i = 0; i < s->n_active; i++) {
        sched_job *j = s->active[i];
        if (!j->done && j->cancel)
            job_finish_locked(s, j, PWB_EINTR, "cancelled: the client went away");
        if (j->done) {
            run_free(s, j, 1);
            job_unref_locked(j);
            continue;
        }
        s->active[w++] = j;
    }
    s->n_active = w;
    s->st.pool_entries = s->n_pool;
    s->st.pool_positions = pool_positions(s);
}

static void *loop(void *arg)
{
    sched *s = arg;
    const int n_max = s->o.max_active;
    fwd_seq *seqs = calloc((size_t)n_max, sizeof *seqs);
    slot *sl = calloc((size_t)n_max, sizeof *sl);
    if (s->o.n_threads > 0)
        omp_set_num_threads(s->o.n_threads);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        sweep(s);
        while (s->n_active == 0 && !s->q_head && !s->draining)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->n_active == 0 && !s->q_head && s->draining)
            break;
        /* admit waiting jobs while there is room */
        while (s->q_head && s->n_active < n_max) {
            sched_job *j = s->q_head;
            s->q_head = j->next_;
            if (!s->q_head)
                s->q_tail = NULL;
            s->n_queued--;
            if (j->cancel) {
                job_finish_locked(s, j, PWB_EINTR, "cancelled: the client went away");
                job_unref_locked(j);
                continue;
            }
            pwb_err e = {0};
            int rc = !seqs || !sl ? err_set(&e, PWB_ENOMEM, "out of memory") : job_admit(s, j, &e);
            if (rc == PWB_OK && j->max_tokens == 0 && !j->echo)
                rc = -1; /* nothing to compute */
            if (rc != PWB_OK) {
                job_finish_locked(s, j, rc < 0 ? PWB_OK : rc, e.msg);
                run_free(s, j, 0);
                job_unref_locked(j);
                continue;
            }
            if (j->n_ids == 1 && j->max_tokens == 0) {
                job_finish_locked(s, j, PWB_OK, NULL);
                run_free(s, j, 0);
                job_unref_locked(j);
                continue;
            }
            s->active[s->n_active++] = j;
        }
        resolve_waits(s);
        pthread_mutex_unlock(&s->mu);
        if (seqs && sl)
            step(s, seqs, sl);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    free(seqs);
    free(sl);
    return NULL;
}

int sched_start(sched **out, engine *en, const adapter_set *ads, const sched_opts *o, pwb_err *e)
{
    *out = NULL;
    sched *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(e, PWB_ENOMEM, "out of memory");
    s->en = en;
    s->m = engine_model(en);
    s->tok = engine_tokenizer(en);
    s->ads = ads;
    if (o)
        s->o = *o;
    if (s->o.step_tokens <= 0)
        s->o.step_tokens = 256;
    if (s->o.max_active <= 0)
        s->o.max_active = 64;
    if (s->o.max_queue <= 0)
        s->o.max_queue = 1024;
    if (s->o.pool_positions == 0)
        s->o.pool_positions = 4096;
    s->logit_rows = SCHED_LOGIT_ROWS > s->o.max_active ? SCHED_LOGIT_ROWS : s->o.max_active;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int rc = PWB_OK;
    if (!(s->active = calloc((size_t)s->o.max_active, sizeof *s->active)) ||
        !(s->logits = malloc((size_t)s->logit_rows * (size_t)s->m->hp.n_vocab * sizeof *s->logits)))
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    if (rc == PWB_OK)
        rc = fwd_ctx_new(&s->fc, s->m, s->o.step_tokens, e);
    if (rc == PWB_OK)
        fwd_ctx_set_exact(s->fc, !s->o.int8_activations);
    /* each soft prompt's vectors computed once; each prefix's keys and values as given */
    if (s->o.n_threads > 0)
        omp_set_num_threads(s->o.n_threads);
    for (int i = 0; rc == PWB_OK && i < ads->n; i++) {
        const adapter *a = &ads->items[i];
        if (a->kind != ADAPTER_SOFT && a->kind != ADAPTER_PREFIX)
            continue;
        if ((rc = skv_new(&s->roots[i], s->m, NULL, 0, adapter_positions(a), e)) != PWB_OK)
            break;
        if (a->kind == ADAPTER_PREFIX) {
            rc = kv_cache_append(s->roots[i]->kv, a->kv, a->n_kv, e);
            continue;
        }
        fwd_seq q = {.kv = s->roots[i]->kv, .embeds = a->embeds, .n_embeds = a->n_embeds};
        rc = forward_batch(s->fc, &q, 1, e);
    }
    /* turn-closing tokens end a reply as EOS does (as the local backend) */
    const char *enders[] = {"<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "<|end|>"};
    for (size_t i = 0; i < sizeof enders / sizeof enders[0] && s->n_stop_ids < SCHED_MAX_STOP_IDS; i++) {
        int32_t id = tokenizer_token_id(s->tok, enders[i]);
        if (id >= 0 && id != tokenizer_eos(s->tok))
            s->stop_ids[s->n_stop_ids++] = id;
    }
    if (rc == PWB_OK && pthread_create(&s->th, NULL, loop, s) != 0)
        rc = err_set(e, PWB_EIO, "cannot start the scheduler thread");
    if (rc != PWB_OK) {
        sched_free(s);
        return rc;
    }
    s->started = 1;
    *out = s;
    return PWB_OK;
}

void sched_drain(sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->draining = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void sched_free(sched *s)
{
    if (!s)
        return;
    if (s->started) {
        sched_drain(s);
        pthread_join(s->th, NULL);
    }
    for (int i = 0; i < s->n_active; i++) {
        run_free(s, s->active[i], 0);
        job_unref_locked(s->active[i]);
    }
    while (s->q_head) {
        sched_job *j = s->q_head;
        s->q_head = j->next_;
        job_unref_locked(j);
    }
    while (s->n_pool > 0)
        pool_drop(s, 0);
    for (int i = 0; i < ADAPTER_MAX; i++)
        skv_release(s->roots[i]);
    fwd_ctx_free(s->fc);
    free(s->logits);
    free(s->active);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
