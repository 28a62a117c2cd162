/* The serving scheduler (src/serve/sched.h) on TinyStories-656K: echoed prompt log-probabilities
 * against a plain forward, and a crowd of concurrent jobs (base model, two soft prompts, a LoRA and
 * a prefix-tuning adapter in the same batches, shared prefixes, greedy and seeded sampling, echo)
 * against each job computed alone by the engine with that adapter. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "engine/lora.h"
#include "engine/sample.h"
#include "serve/adapter.h"
#include "serve/sched.h"
#include "util/rng.h"
#include "util/timer.h"
#include "../llm/tinystories.h"

static engine *open_ts(void)
{
    pwb_err e = {0};
    engine *en = NULL;
    engine_opts o = {.n_threads = 1};
    cr_assert_eq(engine_open(&en, ts_gguf(), &o, &e), PWB_OK, "%s", e.msg);
    return en;
}

static int32_t *encode(engine *en, const char *text, int *n)
{
    int32_t *ids = NULL;
    size_t k = 0;
    pwb_err e = {0};
    cr_assert(tokenizer_encode(engine_tokenizer(en), text, strlen(text), 1, 1, &ids, &k, &e) >= 0, "%s", e.msg);
    *n = (int)k;
    return ids;
}

static void add_soft(adapter_set *s, const char *name, int n, int dim, uint64_t seed)
{
    adapter *a = &s->items[s->n++];
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", name);
    a->kind = ADAPTER_SOFT;
    a->n_embeds = n;
    a->dim = dim;
    a->embeds = malloc((size_t)n * dim * sizeof(float));
    pwb_rng r;
    rng_init(&r, seed);
    for (int i = 0; i < n * dim; i++)
        a->embeds[i] = (float)(rng_uniform(&r) - 0.5);
}

/* A LoRA on every module with random A and B (PEFT's zero B would change nothing). */
static void add_lora(adapter_set *s, const char *name, const model *m, uint64_t seed)
{
    adapter *a = &s->items[s->n++];
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", name);
    a->kind = ADAPTER_LORA;
    pwb_err e = {0};
    cr_assert_eq(lora_new(&a->lora, m, 4, 8.0f, (1u << LORA_N_MODULES) - 1, &e), PWB_OK, "%s", e.msg);
    lora_init_peft(&a->lora, seed);
    pwb_rng r;
    rng_init(&r, seed + 1);
    for (int l = 0; l < a->lora.n_layer; l++)
        for (int mod = 0; mod < LORA_N_MODULES; mod++) {
            lora_mat *t = lora_at_mut(&a->lora, l, mod);
            for (int i = 0; t && i < t->out * a->lora.r; i++)
                t->b[i] = (float)(rng_uniform(&r) - 0.5) * 0.2f;
        }
}

/* Prefix tuning: n random virtual positions of keys and values for every layer. */
static void add_prefix(adapter_set *s, const char *name, const model *m, int n, uint64_t seed)
{
    adapter *a = &s->items[s->n++];
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", name);
    a->kind = ADAPTER_PREFIX;
    a->n_kv = n;
    size_t len = (size_t)n * m->hp.n_layer * 2 * m->hp.n_head_kv * m->hp.head_dim;
    a->kv = malloc(len * sizeof(float));
    pwb_rng r;
    rng_init(&r, seed);
    for (size_t i = 0; i < len; i++)
        a->kv[i] = (float)(rng_uniform(&r) - 0.5);
}

/* The engine's own view of an adapter, as the local backend scores with it: its prefix (NULL for
 * base and LoRA) and, for LoRA, the engine's adapter set. */
static engine_prefix *ref_bind(engine *en, const adapter *a)
{
    engine_prefix *p = NULL;
    pwb_err e = {0};
    engine_set_lora(en, a->kind == ADAPTER_LORA ? &a->lora : NULL);
    if (a->kind == ADAPTER_SOFT)
        cr_assert_eq(engine_prefix_new(en, a->embeds, a->n_embeds, NULL, 0, &p, &e), PWB_OK, "%s", e.msg);
    if (a->kind == ADAPTER_PREFIX)
        cr_assert_eq(engine_prefix_new_kv(en, a->kv, a->n_kv, NULL, 0, &p, &e), PWB_OK, "%s", e.msg);
    return p;
}

/* Waits for a job (polling: the test has no HTTP side to wake). */
static void wait_done(sched *s, sched_job *j)
{
    double t0 = timer_wall();
    for (;;) {
        sched_lock(s);
        int d = j->done;
        sched_unlock(s);
        if (d)
            return;
        cr_assert(timer_wall() - t0 < 60, "job did not finish");
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* log p(ids[i] | before) for i >= 1 by one forward of [embeds][ids] (a soft prompt), or of ids
 * after the adapter's prefix keys and values, or with its LoRA. */
static void ref_prompt_lp(engine *en, const adapter *a, const int32_t *ids, int n, double *out)
{
    const int V = engine_n_vocab(en), ne = a->kind == ADAPTER_SOFT ? a->n_embeds : 0;
    float *lg = malloc((size_t)n * V * sizeof *lg);
    int *pos = malloc((size_t)n * sizeof *pos);
    for (int i = 0; i < n; i++)
        pos[i] = ne + i;
    pwb_err e = {0};
    engine_prefix *p = a->kind == ADAPTER_PREFIX ? ref_bind(en, a) : NULL;
    engine_set_lora(en, a->kind == ADAPTER_LORA ? &a->lora : NULL);
    if (p)
        cr_assert_eq(engine_logits(en, p, ids, n, lg, &e), PWB_OK, "%s", e.msg);
    else
        cr_assert_eq(engine_forward_embeds(en, ne ? a->embeds : NULL, ne, ids, n, pos, n, lg, &e), PWB_OK, "%s",
                     e.msg);
    engine_set_lora(en, NULL);
    engine_prefix_free(p);
    out[0] = NAN;
    for (int i = 1; i < n; i++) {
        const float *row = lg + (size_t)(i - 1) * V;
        out[i] = (double)row[ids[i]] - sample_logsumexp(row, V);
    }
    free(lg);
    free(pos);
}

Test(sched, echo_logprobs_match_a_plain_forward, .timeout = 120)
{
    engine *en = open_ts(), *ref = open_ts();
    adapter_set ads;
    adapter_set_init(&ads);
    add_soft(&ads, "soft", 4, engine_n_embd(en), 7);
    add_lora(&ads, "lora", engine_model(en), 8);
    add_prefix(&ads, "prefix", engine_model(en), 5, 9);
    sched *s = NULL;
    pwb_err e = {0};
    sched_opts so = {.n_threads = 1, .step_tokens = 16}; /* small steps: prompts straddle them */
    cr_assert_eq(sched_start(&s, en, &ads, &so, &e), PWB_OK, "%s", e.msg);
    const char *text = "Once upon a time there was a little girl named Lily. She loved to play outside in the sun.";
    int n;
    int32_t *ids = encode(en, text, &n);
    cr_assert_gt(n, 10);
    double base_lp = 0; /* the base model's last log-probability: the adapters must change it */
    for (int a = 0; a < ads.n; a++) {
        for (int rep = 0; rep < 2; rep++) { /* the second reads the pooled prefix */
            sched_job *j = sched_job_new(ids, n);
            j->adapter = a;
            j->echo = 1;
            j->logprobs = 2;
            cr_assert_eq(sched_submit(s, j, &e), PWB_OK, "%s", e.msg);
            wait_done(s, j);
            cr_assert_eq(j->status, PWB_OK, "%s", j->err);
            if (rep == 1)
                cr_assert_gt(j->n_cached, n / 2, "the second request reuses the first one's KV (%d)", j->n_cached);
            double *want = malloc((size_t)n * sizeof *want);
            ref_prompt_lp(ref, &ads.items[a], ids, n, want);
            cr_assert(isnan(j->prompt_lp[0].logprob), "the first token has nothing before it");
            for (int i = 1; i < n; i++) {
                cr_assert(fabs(j->prompt_lp[i].logprob - want[i]) < 1e-9, "adapter %d token %d: %.12f vs %.12f", a, i,
                          j->prompt_lp[i].logprob, want[i]);
                cr_assert_eq(j->prompt_lp[i].n_top, 2);
                cr_assert_geq(j->prompt_lp[i].top_lp[0], j->prompt_lp[i].logprob - 1e-12);
                cr_assert_geq(j->prompt_lp[i].top_lp[0], j->prompt_lp[i].top_lp[1]);
            }
            if (a == 0)
                base_lp = want[n - 1];
            else
                cr_assert(fabs(want[n - 1] - base_lp) > 1e-4, "adapter %d changes the model", a);
            free(want);
            sched_job_release(s, j);
        }
    }
    free(ids);
    sched_free(s);
    adapter_set_free(&ads);
    engine_close(en);
    engine_close(ref);
}

Test(sched, a_crowd_of_mixed_jobs_matches_each_alone, .timeout = 300)
{
    engine *en = open_ts(), *ref = open_ts();
    const int d = engine_n_embd(en);
    adapter_set ads;
    adapter_set_init(&ads);
    add_soft(&ads, "a", 5, d, 1);
    add_soft(&ads, "b", 3, d, 2);
    add_lora(&ads, "c", engine_model(en), 3);
    add_prefix(&ads, "p", engine_model(en), 4, 4);
    sched *s = NULL;
    pwb_err e = {0};
    sched_opts so = {.n_threads = 1, .step_tokens = 48, .max_active = 8}; /* more jobs than room: they queue */
    cr_assert_eq(sched_start(&s, en, &ads, &so, &e), PWB_OK, "%s", e.msg);
    const char *texts[] = {"Once upon a time there was a dog.", "Once upon a time there was a cat who liked milk.",
                           "Tom and Sue went to the park.", "Once upon a time"};
    enum { NJ = 40 };
    sched_job *jobs[NJ];
    for (int k = 0; k < NJ; k++) {
        int n;
        int32_t *ids = encode(en, texts[k % 4], &n);
        sched_job *j = jobs[k] = sched_job_new(ids, n);
        free(ids);
        j->adapter = (k / 4) % ads.n;
        j->echo = k % 2;
        j->max_tokens = k % 5 == 4 ? 0 : 6 + k % 7;
        j->temperature = k % 3 == 0 ? 0.0f : 0.9f;
        j->top_p = 0.95f;
        j->seed = 100 + (uint64_t)k;
        j->logprobs = 0;
        cr_assert_eq(sched_submit(s, j, &e), PWB_OK, "%s", e.msg);
    }
    for (int k = 0; k < NJ; k++)
        wait_done(s, jobs[k]);
    sched_stats st;
    sched_get_stats(s, &st);
    cr_assert_gt(st.tokens_cached, 0, "shared prefixes were reused");
    cr_log_info("steps %ld, prefill %ld, decode %ld, cached %ld", st.steps, st.tokens_prefill, st.tokens_decode,
                st.tokens_cached);
    /* each alone, through the engine's own prefix + generate */
    for (int k = 0; k < NJ; k++) {
        sched_job *j = jobs[k];
        cr_assert_eq(j->status, PWB_OK, "%s", j->err);
        const adapter *a = &ads.items[j->adapter];
        if (j->echo) {
            double *want = malloc((size_t)j->n_ids * sizeof *want);
            ref_prompt_lp(ref, a, j->ids, j->n_ids, want);
            for (int i = 1; i < j->n_ids; i++)
                cr_assert(fabs(j->prompt_lp[i].logprob - want[i]) < 1e-9, "job %d token %d", k, i);
            free(want);
        }
        if (j->max_tokens == 0) {
            cr_assert_eq(j->n_out, 0);
            continue;
        }
        engine_prefix *p = ref_bind(ref, a);
        engine_gen_item it = {.prompt = j->ids, .n_prompt = j->n_ids, .max_tokens = j->max_tokens,
                              .temperature = j->temperature, .top_p = j->top_p, .seed = j->seed};
        cr_assert_eq(engine_generate(ref, p, &it, 1, &e), PWB_OK, "%s", e.msg);
        engine_set_lora(ref, NULL);
        cr_assert_eq(it.n_out, j->n_out, "job %d: %d tokens alone, %d in the crowd", k, it.n_out, j->n_out);
        for (int i = 0; i < it.n_out; i++)
            cr_assert_eq(it.out_ids[i], j->out_ids[i], "job %d token %d", k, i);
        cr_assert_str_eq(it.text, j->text.data ? j->text.data : "");
        cr_assert_eq(it.finish == ENGINE_FINISH_LENGTH, j->finish == SCHED_FINISH_LENGTH, "job %d finish", k);
        for (int i = 0; i < j->n_out; i++)
            cr_assert(j->out_lp[i].logprob <= 0 && j->out_lp[i].id == j->out_ids[i]);
        engine_gen_item_clear(&it);
        engine_prefix_free(p);
    }
    for (int k = 0; k < NJ; k++)
        sched_job_release(s, jobs[k]);
    sched_free(s);
    adapter_set_free(&ads);
    engine_close(en);
    engine_close(ref);
}

Test(sched, stop_strings_cancel_and_limits, .timeout = 120)
{
    engine *en = open_ts();
    adapter_set ads;
    adapter_set_init(&ads);
    sched *s = NULL;
    pwb_err e = {0};
    sched_opts so = {.n_threads = 1, .max_queue = 2};
    cr_assert_eq(sched_start(&s, en, &ads, &so, &e), PWB_OK, "%s", e.msg);
    int n;
    int32_t *ids = encode(en, "Once upon a time", &n);
    /* greedy text, then the same with a stop string taken from inside it */
    sched_job *j = sched_job_new(ids, n);
    j->max_tokens = 20;
    cr_assert_eq(sched_submit(s, j, &e), PWB_OK);
    wait_done(s, j);
    cr_assert_gt(j->text.len, 8);
    char stop[5];
    memcpy(stop, j->text.data + 5, 4);
    stop[4] = '\0';
    sched_job *k = sched_job_new(ids, n);
    k->max_tokens = 20;
    cr_assert_eq(sched_job_add_stop(k, stop), PWB_OK);
    cr_assert_eq(sched_submit(s, k, &e), PWB_OK);
    wait_done(s, k);
    cr_assert_eq(k->finish, SCHED_FINISH_STOP);
    cr_assert(k->text.len <= 5 && strncmp(k->text.data ? k->text.data : "", j->text.data, k->text.len) == 0);
    /* a cancelled job ends with an error and frees its place */
    sched_job *c = sched_job_new(ids, n);
    c->max_tokens = 100000;
    cr_assert_eq(sched_submit(s, c, &e), PWB_OK);
    sched_cancel(s, c);
    wait_done(s, c);
    cr_assert_eq(c->status, PWB_EINTR);
    /* a prompt beyond the context is refused up front */
    int32_t *big = calloc(100000, sizeof *big);
    sched_job *b = sched_job_new(big, 100000);
    cr_assert_eq(sched_submit(s, b, &e), PWB_ERANGE);
    sched_job_release(s, b);
    free(big);
    sched_job_release(s, j);
    sched_job_release(s, k);
    sched_job_release(s, c);
    free(ids);
    sched_free(s);
    adapter_set_free(&ads);
    engine_close(en);
}

Test(sched, requests_sharing_a_prompt_at_once_compute_it_once, .timeout = 120)
{
    engine *en = open_ts(), *ref = open_ts();
    adapter_set ads;
    adapter_set_init(&ads);
    add_soft(&ads, "soft", 3, engine_n_embd(en), 5);
    sched *s = NULL;
    pwb_err e = {0};
    sched_opts so = {.n_threads = 1, .step_tokens = 8};
    cr_assert_eq(sched_start(&s, en, &ads, &so, &e), PWB_OK, "%s", e.msg);
    int n;
    int32_t *ids = encode(en, "Once upon a time there was a little girl named Lily. She loved to play", &n);
    /* the same prompt with three different last tokens (rank classification's label requests) */
    sched_job *j[3];
    for (int k = 0; k < 3; k++) {
        ids[n - 1] = (int32_t)(10 + k);
        j[k] = sched_job_new(ids, n);
        j[k]->adapter = 1;
        j[k]->echo = 1;
        j[k]->logprobs = 0;
    }
    for (int k = 0; k < 3; k++)
        cr_assert_eq(sched_submit(s, j[k], &e), PWB_OK, "%s", e.msg);
    for (int k = 0; k < 3; k++)
        wait_done(s, j[k]);
    sched_stats st;
    sched_get_stats(s, &st);
    cr_log_info("prefill %ld tokens for 3 prompts of %d, %ld read from another's cache", st.tokens_prefill, n,
                st.tokens_cached);
    cr_assert_lt(st.tokens_prefill, 2 * (n - 1), "the shared prompt was computed once, not three times");
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(j[k]->status, PWB_OK, "%s", j[k]->err);
        double *want = malloc((size_t)n * sizeof *want);
        ref_prompt_lp(ref, &ads.items[1], j[k]->ids, n, want);
        for (int i = 1; i < n; i++)
            cr_assert(fabs(j[k]->prompt_lp[i].logprob - want[i]) < 1e-9, "job %d token %d", k, i);
        free(want);
        sched_job_release(s, j[k]);
    }
    free(ids);
    sched_free(s);
    adapter_set_free(&ads);
    engine_close(en);
    engine_close(ref);
}
