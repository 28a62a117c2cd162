/* LoRA on the frozen model: the gradients of A and B (and through the adapter to the input)
 * against central finite differences on a random tiny Llama and on TinyStories-656K; the training
 * forward (backward.c) against the inference forward (forward.c); B = 0 changes nothing. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backward.h"
#include "engine/forward.h"
#include "engine/lora.h"
#include "engine/model.h"
#include "unit/engine/tiny_model.h"
#include "util/rng.h"

/* Two sequences continuing one shared prefix, each scored on its last two positions. */
typedef struct lb {
    int32_t pre[3], ids[2][8];
    int tpos[2][2];
    int32_t tgt[2][2];
    bwd_seq seqs[3];
} lb;

static void lb_make(lb *b, const model *m, uint64_t seed)
{
    pwb_rng r;
    rng_init(&r, seed);
    memset(b, 0, sizeof *b);
    const int V = m->hp.n_vocab < 1000 ? m->hp.n_vocab : 1000, lens[2] = {4, 7};
    for (int j = 0; j < 3; j++)
        b->pre[j] = (int32_t)(3 + rng_below(&r, (uint64_t)V - 3));
    b->seqs[0] = (bwd_seq){.ids = b->pre, .n_ids = 3};
    for (int s = 0; s < 2; s++) {
        for (int j = 0; j < lens[s]; j++)
            b->ids[s][j] = (int32_t)(3 + rng_below(&r, (uint64_t)V - 3));
        for (int k = 0; k < 2; k++) {
            b->tgt[s][k] = (int32_t)(3 + rng_below(&r, (uint64_t)V - 3));
            b->tpos[s][k] = lens[s] - 2 + k;
        }
        b->seqs[s + 1] = (bwd_seq){.prefix = &b->seqs[0], .ids = b->ids[s], .n_ids = lens[s], .n_tgt = 2,
                                   .tgt_pos = b->tpos[s], .targets = b->tgt[s]};
    }
}

static double lb_loss(bwd_ctx *c, lb *b)
{
    double L = NAN;
    pwb_err e;
    cr_assert_eq(bwd_run(c, b->seqs, 3, 0, &L, &e), PWB_OK, "%s", e.msg);
    return L;
}

/* Every trainable value of l in order, as pointers (for perturbing) and the matching gradient. */
static size_t flat(lora *l, lora *g, float ***pp, float ***gp)
{
    size_t n = lora_n_params(l), k = 0;
    *pp = malloc(n * sizeof **pp);
    *gp = malloc(n * sizeof **gp);
    for (int layer = 0; layer < l->n_layer; layer++)
        for (int mod = 0; mod < LORA_N_MODULES; mod++) {
            lora_mat *t = lora_at_mut(l, layer, mod), *u = lora_at_mut(g, layer, mod);
            if (!t)
                continue;
            for (size_t i = 0; i < (size_t)l->r * t->in; i++, k++) {
                (*pp)[k] = &t->a[i];
                (*gp)[k] = &u->a[i];
            }
            for (size_t i = 0; i < (size_t)t->out * l->r; i++, k++) {
                (*pp)[k] = &t->b[i];
                (*gp)[k] = &u->b[i];
            }
        }
    return n;
}

static void lora_random(lora *l, uint64_t seed, double sd)
{
    pwb_rng r;
    rng_init(&r, seed);
    float **p, **g;
    lora dummy;
    pwb_err e;
    cr_assert_eq(lora_new_like(&dummy, l, &e), PWB_OK);
    size_t n = flat(l, &dummy, &p, &g);
    for (size_t i = 0; i < n; i++)
        *p[i] = (float)(sd * rng_normal(&r));
    free(p);
    free(g);
    lora_free(&dummy);
}

/* Central differences on max_coords sampled values of A and B, and along the gradient. */
static void check(const model *m, unsigned targets, float dropout, double sd, int max_coords, uint64_t seed,
                  const char *what)
{
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    pwb_err e;
    bwd_opts o = {.exact = 1};
    bwd_ctx *c;
    cr_assert_eq(bwd_ctx_new(&c, m, &o, &e), PWB_OK, "%s", e.msg);
    lora l, g;
    cr_assert_eq(lora_new(&l, m, 4, 8.0f, targets, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(lora_new_like(&g, &l, &e), PWB_OK);
    lora_random(&l, seed, sd);
    l.dropout = dropout;
    lora_set_training(&l, dropout > 0, seed * 7 + 1);
    bwd_ctx_set_lora(c, &l, &g);
    lb b;
    lb_make(&b, m, seed);
    double L0;
    cr_assert_eq(bwd_run(c, b.seqs, 3, 1, &L0, &e), PWB_OK, "%s", e.msg);
    cr_assert_float_eq(L0, lb_loss(c, &b), 1e-9 * fabs(L0));
    float **p, **gp;
    const size_t N = flat(&l, &g, &p, &gp);
    pwb_rng r;
    rng_init(&r, seed ^ 0x10a);
    const double eps = 1e-2;
    double num = 0, den = 0, gn = 0;
    for (size_t i = 0; i < N; i++)
        gn += (double)*gp[i] * *gp[i];
    gn = sqrt(gn);
    for (int k = 0; k < max_coords; k++) {
        size_t i = (size_t)rng_below(&r, N);
        float keep = *p[i];
        *p[i] = (float)(keep + eps);
        double lp = lb_loss(c, &b);
        *p[i] = (float)(keep - eps);
        double lm = lb_loss(c, &b);
        *p[i] = keep;
        double fd = (lp - lm) / ((double)(float)(keep + eps) - (double)(float)(keep - eps));
        num += (fd - *gp[i]) * (fd - *gp[i]);
        den += (double)*gp[i] * *gp[i];
    }
    float *base = malloc(N * sizeof *base);
    for (size_t i = 0; i < N; i++)
        base[i] = *p[i];
    for (size_t i = 0; i < N; i++)
        *p[i] = (float)(base[i] + eps * *gp[i] / gn);
    double lp = lb_loss(c, &b);
    for (size_t i = 0; i < N; i++)
        *p[i] = (float)(base[i] - eps * *gp[i] / gn);
    double lm = lb_loss(c, &b);
    double dir = (lp - lm) / (2 * eps);
    cr_log_info("%s: %zu params, |g| %.4g, rel L2 %.2e, directional %.2e", what, N, gn, sqrt(num / den),
                fabs(dir - gn) / gn);
    cr_expect(gn > 0, "%s: zero gradient", what);
    cr_expect_lt(sqrt(num / den), 2e-2, "%s: relative L2 error %.3g", what, sqrt(num / den));
    cr_expect_lt(fabs(dir - gn) / gn, 1e-2, "%s: directional error", what);
    free(base);
    free(p);
    free(gp);
    lora_free(&l);
    lora_free(&g);
    bwd_ctx_free(c);
    omp_set_num_threads(threads);
}

#define ALL ((1u << LORA_N_MODULES) - 1)

/* TinyStories-656K (Q8_0 GGUF, RoPE on adjacent pairs), or the test is skipped. */
static model *tinystories(void)
{
    const char *p = t_path(t_shared(), "models/tinystories-656k/TinyStories-656K-Q8_0.gguf");
    if (!file_exists(p))
        cr_skip_test("%s not found (set PWB_SHARED)", p);
    model *m;
    pwb_err e;
    cr_assert_eq(model_load(&m, p, &e), PWB_OK, "%s", e.msg);
    return m;
}

Test(lora, tiny_all_modules_finite_differences)
{
    tiny_model *t = tiny_model_new(21, 2, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    check(&t->m, ALL, 0.0f, 0.1, 300, 1, "tiny all");
    for (int m = 0; m < LORA_N_MODULES; m++)
        check(&t->m, 1u << m, 0.0f, 0.3, 100, 10 + (uint64_t)m, lora_module_name(m));
    tiny_model_free(t);
}

Test(lora, tiny_half_rope_biases_with_dropout)
{
    tiny_model *t = tiny_model_new(22, 2, 32, 4, 2, 64, 48, ROPE_HALF, 1);
    check(&t->m, ALL, 0.25f, 0.1, 300, 2, "tiny dropout");
    tiny_model_free(t);
}

Test(lora, tinystories_gguf_q_v)
{
    model *m = tinystories();
    check(m, (1u << LORA_Q) | (1u << LORA_V) | (1u << LORA_DOWN), 0.0f, 0.3, 120, 3, "tinystories q,v,down");
    model_free(m);
}

/* The inference forward with the adapter gives the training forward's log-probabilities. */
Test(lora, inference_forward_matches_training_forward)
{
    tiny_model *t = tiny_model_new(23, 2, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    const model *m = &t->m;
    pwb_err e;
    lora l;
    cr_assert_eq(lora_new(&l, m, 2, 4.0f, ALL, &e), PWB_OK);
    lora_random(&l, 5, 0.3);
    bwd_opts o = {.exact = 1};
    bwd_ctx *c;
    cr_assert_eq(bwd_ctx_new(&c, m, &o, &e), PWB_OK);
    bwd_ctx_set_lora(c, &l, NULL);
    const int32_t ids[6] = {5, 9, 11, 3, 40, 7};
    const int tpos[2] = {4, 5};
    const int32_t tgt[2] = {12, 13};
    double lp_train[2];
    bwd_seq s = {.ids = ids, .n_ids = 6, .n_tgt = 2, .tgt_pos = tpos, .targets = tgt, .tgt_logprob = lp_train};
    double L;
    cr_assert_eq(bwd_run(c, &s, 1, 0, &L, &e), PWB_OK, "%s", e.msg);

    fwd_ctx *f;
    cr_assert_eq(fwd_ctx_new(&f, m, 0, &e), PWB_OK);
    fwd_ctx_set_exact(f, 1);
    kv_cache *kv;
    cr_assert_eq(kv_cache_new(&kv, m, NULL, 0, 8, &e), PWB_OK);
    double lp_inf[2], lp_base[2];
    fwd_seq q = {.kv = kv, .ids = ids, .n_ids = 6, .n_out = 2, .out_pos = tpos, .targets = tgt, .logprobs = lp_inf};
    fwd_ctx_set_lora(f, &l);
    cr_assert_eq(forward_batch(f, &q, 1, &e), PWB_OK, "%s", e.msg);
    for (int i = 0; i < 2; i++)
        cr_expect_float_eq(lp_inf[i], lp_train[i], 1e-4, "position %d: %g vs %g", i, lp_inf[i], lp_train[i]);
    /* Without the adapter the scores move (the adapter does something). */
    kv_cache_truncate(kv, 0);
    fwd_ctx_set_lora(f, NULL);
    q.logprobs = lp_base;
    cr_assert_eq(forward_batch(f, &q, 1, &e), PWB_OK);
    cr_expect(fabs(lp_base[0] - lp_inf[0]) > 1e-3);
    /* B = 0 (a fresh PEFT init) is the base model. */
    lora_init_peft(&l, 9);
    kv_cache_truncate(kv, 0);
    fwd_ctx_set_lora(f, &l);
    q.logprobs = lp_inf;
    cr_assert_eq(forward_batch(f, &q, 1, &e), PWB_OK);
    cr_expect_float_eq(lp_inf[0], lp_base[0], 1e-6);
    kv_cache_free(kv);
    fwd_ctx_free(f);
    bwd_ctx_free(c);
    lora_free(&l);
    tiny_model_free(t);
}

Test(lora, targets_and_permutation)
{
    cr_expect_eq(lora_targets_parse("q,v"), (1u << LORA_Q) | (1u << LORA_V));
    cr_expect_eq(lora_targets_parse("q_proj v_proj down"), (1u << LORA_Q) | (1u << LORA_V) | (1u << LORA_DOWN));
    cr_expect_eq(lora_targets_parse("q,x"), 0u);
    cr_expect_eq(lora_targets_parse(""), 0u);
    tiny_model *t = tiny_model_new(24, 1, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    /* head_dim 8: pwb rows 0..7 of head 0 are HF rows 0,4,1,5,2,6,3,7 */
    float w[32];
    for (int i = 0; i < 32; i++)
        w[i] = (float)i;
    pwb_err e;
    cr_assert_eq(lora_permute_rows(&t->m, 0, w, 1, 1, &e), PWB_OK);
    const float hf0[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    for (int i = 0; i < 8; i++)
        cr_expect_eq(w[i], hf0[i], "row %d: %g", i, w[i]);
    cr_assert_eq(lora_permute_rows(&t->m, 0, w, 1, 0, &e), PWB_OK);
    for (int i = 0; i < 32; i++)
        cr_expect_eq(w[i], (float)i);
    tiny_model_free(t);
}

/* Prefix tuning: the gradient of the virtual keys and values against central differences, and the
 * training forward against the inference forward reading them as a cached prefix. */
static void check_prefix(const model *m, int n_virtual, int max_coords, uint64_t seed, const char *what)
{
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    pwb_err e;
    bwd_opts o = {.exact = 1};
    bwd_ctx *c;
    cr_assert_eq(bwd_ctx_new(&c, m, &o, &e), PWB_OK, "%s", e.msg);
    const size_t N = (size_t)n_virtual * m->hp.n_layer * 2 * m->hp.n_head_kv * m->hp.head_dim;
    float *kv = malloc(N * sizeof *kv), *g = calloc(N, sizeof *g);
    pwb_rng r;
    rng_init(&r, seed);
    for (size_t i = 0; i < N; i++)
        kv[i] = (float)(0.5 * rng_normal(&r));
    bwd_ctx_set_kv_prefix(c, kv, n_virtual, g);
    lb b;
    lb_make(&b, m, seed);
    double L0;
    cr_assert_eq(bwd_run(c, b.seqs, 3, 1, &L0, &e), PWB_OK, "%s", e.msg);
    double num = 0, den = 0, gn = 0;
    for (size_t i = 0; i < N; i++)
        gn += (double)g[i] * g[i];
    gn = sqrt(gn);
    const double eps = 1e-2;
    for (int k = 0; k < max_coords; k++) {
        size_t i = (size_t)rng_below(&r, N);
        float keep = kv[i];
        kv[i] = (float)(keep + eps);
        double lp = lb_loss(c, &b);
        kv[i] = (float)(keep - eps);
        double lm = lb_loss(c, &b);
        kv[i] = keep;
        double fd = (lp - lm) / ((double)(float)(keep + eps) - (double)(float)(keep - eps));
        num += (fd - g[i]) * (fd - g[i]);
        den += (double)g[i] * g[i];
    }
    cr_log_info("%s: %zu values, |g| %.4g, rel L2 %.2e", what, N, gn, sqrt(num / den));
    cr_expect(gn > 0, "%s: zero gradient", what);
    cr_expect_lt(sqrt(num / den), 2e-2, "%s: relative L2 error %.3g", what, sqrt(num / den));

    /* The inference forward over a cached prefix of those keys and values gives the same scores. */
    fwd_ctx *f;
    cr_assert_eq(fwd_ctx_new(&f, m, 0, &e), PWB_OK);
    fwd_ctx_set_exact(f, 1);
    kv_cache *root, *kid;
    cr_assert_eq(kv_cache_new(&root, m, NULL, 0, n_virtual, &e), PWB_OK);
    const int kvd = m->hp.n_head_kv * m->hp.head_dim;
    for (int l = 0; l < m->hp.n_layer; l++)
        for (int p = 0; p < n_virtual; p++) {
            memcpy(root->k[l] + (size_t)p * kvd, kv + ((size_t)p * m->hp.n_layer * 2 + 2 * (size_t)l) * kvd,
                   (size_t)kvd * sizeof(float));
            memcpy(root->v[l] + (size_t)p * kvd, kv + ((size_t)p * m->hp.n_layer * 2 + 2 * (size_t)l + 1) * kvd,
                   (size_t)kvd * sizeof(float));
        }
    root->n = n_virtual;
    double lp_train[2], lp_inf[2];
    b.seqs[2].tgt_logprob = lp_train;
    cr_assert_eq(bwd_run(c, b.seqs, 3, 0, NULL, &e), PWB_OK);
    int32_t all[16];
    memcpy(all, b.pre, 3 * sizeof(int32_t));
    memcpy(all + 3, b.ids[1], 7 * sizeof(int32_t));
    const int pos[2] = {3 + b.tpos[1][0], 3 + b.tpos[1][1]};
    cr_assert_eq(kv_cache_new(&kid, m, root, n_virtual, 10, &e), PWB_OK);
    fwd_seq q = {.kv = kid, .ids = all, .n_ids = 10, .n_out = 2, .out_pos = pos, .targets = b.tgt[1], .logprobs = lp_inf};
    cr_assert_eq(forward_batch(f, &q, 1, &e), PWB_OK, "%s", e.msg);
    for (int i = 0; i < 2; i++)
        cr_expect_float_eq(lp_inf[i], lp_train[i], 1e-4, "%s: position %d: %g vs %g", what, i, lp_inf[i], lp_train[i]);
    kv_cache_free(kid);
    kv_cache_free(root);
    fwd_ctx_free(f);
    free(kv);
    free(g);
    bwd_ctx_free(c);
    omp_set_num_threads(threads);
}

Test(lora, prefix_tuning_tiny_finite_differences)
{
    tiny_model *t = tiny_model_new(25, 2, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    check_prefix(&t->m, 3, 300, 4, "tiny prefix");
    tiny_model_free(t);
}

Test(lora, prefix_tuning_tinystories)
{
    model *m = tinystories();
    check_prefix(m, 2, 120, 5, "tinystories prefix");
    model_free(m);
}

/* Dropout drops about p of the adapter's inputs, scales the rest by 1 / (1 - p), draws another
 * mask for another row or step, and none outside training. With A = 1 (rank 1) and B = 1 each
 * output is s times the sum of the row's kept multipliers. */
Test(lora, dropout_rate_and_masks)
{
    tiny_model *t = tiny_model_new(26, 1, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    lora l;
    pwb_err e;
    cr_assert_eq(lora_new(&l, &t->m, 1, 1.0f, 1u << LORA_Q, &e), PWB_OK);
    lora_mat *q = lora_at_mut(&l, 0, LORA_Q);
    for (int i = 0; i < q->in; i++)
        q->a[i] = 1.0f;
    for (int o = 0; o < q->out; o++)
        q->b[o] = 1.0f;
    enum { ROWS = 512 };
    const int in = q->in, out = q->out;
    float *x = malloc((size_t)ROWS * in * sizeof *x), *y = calloc((size_t)ROWS * out, sizeof *y);
    for (int i = 0; i < ROWS * in; i++)
        x[i] = 1.0f;
    l.dropout = 0.25f;
    lora_set_training(&l, 1, 77);
    cr_assert_eq(lora_fwd(&l, 0, LORA_Q, x, (size_t)in, ROWS, y, (size_t)out, 0, &e), PWB_OK);
    long kept = 0, same = 0;
    for (int b = 0; b < ROWS; b++) {
        const double k = y[(size_t)b * out] * (1.0 - l.dropout); /* kept inputs of row b */
        cr_assert_float_eq(k, round(k), 1e-3, "row %d: %g is not a count of kept inputs", b, k);
        kept += lround(k);
        same += b > 0 && y[(size_t)b * out] == y[(size_t)(b - 1) * out];
    }
    const double dropped = 1.0 - (double)kept / ((double)ROWS * in);
    cr_log_info("dropout 0.25: %.4f of %d inputs dropped", dropped, ROWS * in);
    cr_expect_float_eq(dropped, 0.25, 0.015, "dropped %.4f", dropped);
    cr_expect_lt(same, ROWS / 4, "rows draw masks of their own");
    /* another step, another mask; no dropout outside training */
    float *y2 = calloc((size_t)ROWS * out, sizeof *y2);
    lora_set_training(&l, 1, 78);
    cr_assert_eq(lora_fwd(&l, 0, LORA_Q, x, (size_t)in, ROWS, y2, (size_t)out, 0, &e), PWB_OK);
    cr_expect_neq(memcmp(y, y2, (size_t)ROWS * out * sizeof *y), 0);
    lora_set_training(&l, 0, 0);
    memset(y2, 0, (size_t)ROWS * out * sizeof *y2);
    cr_assert_eq(lora_fwd(&l, 0, LORA_Q, x, (size_t)in, ROWS, y2, (size_t)out, 0, &e), PWB_OK);
    for (int b = 0; b < ROWS; b++)
        cr_expect_float_eq(y2[(size_t)b * out], (float)in, 1e-4);
    free(x);
    free(y);
    free(y2);
    lora_free(&l);
    tiny_model_free(t);
}
