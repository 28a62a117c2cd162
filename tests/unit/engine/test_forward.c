/* Forward pass, KV cache, prefix reuse, ranking and generation on the real TinyStories-656K model
 * (GGUF Q8_0 and safetensors F32), checked against reference token ids and slow recomputation. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/forward.h"
#include "engine/kernels.h"
#include "engine/quant.h"

static char g_path[4096];

static const char *shared_path(const char *rel)
{
    const char *s = getenv("PWB_SHARED");
    const char *root = getenv("PWB_ROOT");
    if (s && *s)
        snprintf(g_path, sizeof g_path, "%s/%s", s, rel);
    else
        snprintf(g_path, sizeof g_path, "%s/../shared/%s", root && *root ? root : ".", rel);
    return g_path;
}

#define TS_GGUF "models/tinystories-656k/TinyStories-656K-Q8_0.gguf"
#define TS_HF "models/tinystories-656k"

static const int32_t REF_GREEDY[24] = {147, 201, 282, 215, 286, 598, 1662, 356, 499, 826, 1363, 1145,
                                       1652, 615, 242, 1482, 951, 628, 499, 826, 872, 921, 318, 385};

/* One thread unless a test asks for more: OpenMP teams on a busy shared machine spin-wait badly,
 * and the numbers must not depend on the thread count anyway. */
static int g_threads = 1;

static engine *open_model(const char *rel, int step_tokens)
{
    engine *en = NULL;
    pwb_err e = {0};
    engine_opts o = {.step_tokens = step_tokens, .n_threads = g_threads};
    int rc = engine_open(&en, shared_path(rel), &o, &e);
    cr_assert_eq(rc, PWB_OK, "engine_open %s: %s", rel, e.msg);
    return en;
}

static float max_abs_diff(const float *a, const float *b, size_t n)
{
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= m))
            m = d; /* NaN propagates as a failure */
    }
    return m;
}

/* Fixed pseudo-random token ids in [3, n_vocab). */
static void fill_ids(int32_t *ids, int n, uint32_t seed, int n_vocab)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = 3 + (int32_t)((seed >> 8) % (uint32_t)(n_vocab - 3));
    }
}

static void greedy_ref(const char *rel)
{
    engine *en = open_model(rel, 0);
    pwb_err e = {0};
    int32_t bos = 1;
    engine_gen_item it = {.prompt = &bos, .n_prompt = 1, .max_tokens = 24};
    cr_assert_eq(engine_generate(en, NULL, &it, 1, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(it.status, PWB_OK);
    cr_assert_eq(it.n_out, 24, "%s: generated %d tokens", rel, it.n_out);
    for (int i = 0; i < 24; i++)
        cr_expect_eq(it.out_ids[i], REF_GREEDY[i], "%s: token %d is %d, expected %d", rel, i, it.out_ids[i],
                     REF_GREEDY[i]);
    cr_expect_eq(it.finish, ENGINE_FINISH_LENGTH);
    engine_gen_item_clear(&it);
    engine_close(en);
}

Test(forward, greedy_reference_gguf_q8_0)
{
    greedy_ref(TS_GGUF);
}

Test(forward, greedy_reference_safetensors)
{
    greedy_ref(TS_HF);
}

/* A deliberately naive forward pass (F32 weights dequantized once, scalar loops, one sequence,
 * rotate-half or adjacent RoPE as the model says) to check the engine's against. */
static float *deq(const pwb_tensor *t)
{
    int64_t rows = t->ne[1], cols = t->ne[0];
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    size_t rb = quant_row_size(t->type, cols);
    for (int64_t r = 0; r < rows; r++)
        cr_assert_eq(dequant_row(t->type, (const char *)t->data + r * rb, w + r * cols, cols), PWB_OK);
    return w;
}

static void naive_mv(const float *W, int M, int K, const float *x, float *y)
{
    for (int m = 0; m < M; m++) {
        double s = 0;
        for (int k = 0; k < K; k++)
            s += (double)W[(size_t)m * K + k] * x[k];
        y[m] = (float)s;
    }
}

static void naive_norm(const float *x, const float *w, int n, float eps, float *y)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        y[i] = (float)(x[i] * s * w[i]);
}

static void naive_rope(float *x, int pos, const model_hparams *hp)
{
    int half = hp->n_rot / 2;
    for (int i = 0; i < half; i++) {
        double th = pos / pow(hp->rope_base, 2.0 * i / hp->n_rot);
        int a = hp->rope_layout == ROPE_HALF ? i : 2 * i, b = hp->rope_layout == ROPE_HALF ? i + half : 2 * i + 1;
        double x0 = x[a], x1 = x[b];
        x[a] = (float)(x0 * cos(th) - x1 * sin(th));
        x[b] = (float)(x0 * sin(th) + x1 * cos(th));
    }
}

static void naive_logits(const model *m, const int32_t *ids, int n, float *out)
{
    const model_hparams *hp = &m->hp;
    int d = hp->n_embd, hd = hp->head_dim, qd = hp->n_head * hd, kvd = hp->n_head_kv * hd, ff = hp->n_ff;
    float *x = calloc((size_t)n * d, sizeof *x), *xn = malloc((size_t)d * sizeof *xn);
    float *K = malloc((size_t)n * kvd * sizeof *K), *Vv = malloc((size_t)n * kvd * sizeof *Vv);
    float *q = malloc((size_t)qd * sizeof *q), *att = malloc((size_t)qd * sizeof *att), *o = malloc((size_t)d * 4);
    float *g = malloc((size_t)ff * 4), *u = malloc((size_t)ff * 4), *sc = malloc((size_t)n * 4);
    float *E = deq(&m->tok_embd);
    for (int t = 0; t < n; t++)
        memcpy(x + (size_t)t * d, E + (size_t)ids[t] * d, (size_t)d * 4);
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        float *wq = deq(&L->wq), *wk = deq(&L->wk), *wv = deq(&L->wv), *wo = deq(&L->wo);
        float *wg = deq(&L->w_gate), *wu = deq(&L->w_up), *wd = deq(&L->w_down);
        for (int t = 0; t < n; t++) {
            naive_norm(x + (size_t)t * d, L->attn_norm, d, hp->norm_eps, xn);
            naive_mv(wk, kvd, d, xn, K + (size_t)t * kvd);
            naive_mv(wv, kvd, d, xn, Vv + (size_t)t * kvd);
            for (int i = 0; i < kvd; i++) {
                K[(size_t)t * kvd + i] += L->bk ? L->bk[i] : 0.0f;
                Vv[(size_t)t * kvd + i] += L->bv ? L->bv[i] : 0.0f;
            }
            for (int h = 0; h < hp->n_head_kv; h++)
                naive_rope(K + (size_t)t * kvd + h * hd, t, hp);
        }
        float *xnew = malloc((size_t)n * d * 4);
        memcpy(xnew, x, (size_t)n * d * 4);
        for (int t = 0; t < n; t++) {
            naive_norm(x + (size_t)t * d, L->attn_norm, d, hp->norm_eps, xn);
            naive_mv(wq, qd, d, xn, q);
            for (int i = 0; L->bq && i < qd; i++)
                q[i] += L->bq[i];
            for (int h = 0; h < hp->n_head; h++) {
                float *qh = q + h * hd;
                naive_rope(qh, t, hp);
                int kh = h / (hp->n_head / hp->n_head_kv);
                double mx = -1e30, sum = 0;
                for (int p = 0; p <= t; p++) {
                    double s = 0;
                    for (int i = 0; i < hd; i++)
                        s += (double)qh[i] * K[(size_t)p * kvd + kh * hd + i];
                    sc[p] = (float)(s / sqrt(hd));
                    if (sc[p] > mx)
                        mx = sc[p];
                }
                for (int p = 0; p <= t; p++)
                    sum += exp(sc[p] - mx);
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int p = 0; p <= t; p++)
                        a += exp(sc[p] - mx) / sum * Vv[(size_t)p * kvd + kh * hd + i];
                    att[h * hd + i] = (float)a;
                }
            }
            naive_mv(wo, d, qd, att, o);
            for (int i = 0; i < d; i++)
                xnew[(size_t)t * d + i] += o[i];
            naive_norm(xnew + (size_t)t * d, L->ffn_norm, d, hp->norm_eps, xn);
            naive_mv(wg, ff, d, xn, g);
            naive_mv(wu, ff, d, xn, u);
            for (int i = 0; i < ff; i++)
                g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
            naive_mv(wd, d, ff, g, o);
            for (int i = 0; i < d; i++)
                xnew[(size_t)t * d + i] += o[i];
        }
        memcpy(x, xnew, (size_t)n * d * 4);
        free(xnew);
        free(wq), free(wk), free(wv), free(wo), free(wg), free(wu), free(wd);
    }
    float *H = deq(&m->output);
    for (int t = 0; t < n; t++) {
        naive_norm(x + (size_t)t * d, m->output_norm, d, hp->norm_eps, xn);
        naive_mv(H, hp->n_vocab, d, xn, out + (size_t)t * hp->n_vocab);
    }
    free(H), free(E), free(x), free(xn), free(K), free(Vv), free(q), free(att), free(o), free(g), free(u), free(sc);
}

static void check_naive_engine(engine *en, const char *rel, float tol);

static void check_naive(const char *rel, float tol)
{
    engine *en = open_model(rel, 0);
    check_naive_engine(en, rel, tol);
    engine_close(en);
}

static void check_naive_engine(engine *en, const char *rel, float tol)
{
    const model *m = engine_model(en);
    int n = 11, V = m->hp.n_vocab;
    int32_t ids[11];
    ids[0] = 1;
    fill_ids(ids + 1, n - 1, 7, V);
    float *a = malloc((size_t)n * V * 4), *b = malloc((size_t)n * V * 4);
    pwb_err e = {0};
    cr_assert_eq(engine_logits(en, NULL, ids, n, a, &e), PWB_OK, "%s", e.msg);
    naive_logits(m, ids, n, b);
    float d = max_abs_diff(a, b, (size_t)n * V);
    cr_expect(d < tol, "%s: engine vs naive logits differ by %g (tolerance %g)", rel, d, tol);
    /* And the argmax agrees at every position. */
    for (int t = 0; t < n; t++) {
        int ia = 0, ib = 0;
        for (int v = 1; v < V; v++) {
            if (a[(size_t)t * V + v] > a[(size_t)t * V + ia])
                ia = v;
            if (b[(size_t)t * V + v] > b[(size_t)t * V + ib])
                ib = v;
        }
        cr_expect_eq(ia, ib, "%s: position %d argmax %d vs naive %d", rel, t, ia, ib);
    }
    free(a);
    free(b);
}

Test(forward, matches_naive_f32)
{
    check_naive(TS_HF, 1e-4f);
}

/* Q8_0 weights: the kernels also quantize activations to 8 bits, so allow more. */
Test(forward, matches_naive_q8_0)
{
    check_naive(TS_GGUF, 0.25f);
}

/* Many sequences of different lengths, padded, in one batch == each alone; also when the batch
 * is split into steps smaller than a sequence. */
static void batched_vs_single(const char *rel, int step_tokens)
{
    engine *en = open_model(rel, step_tokens);
    int V = engine_n_vocab(en);
    enum { B = 4, S = 14 };
    int lens[B] = {5, 14, 1, 9};
    int32_t ids[B * S];
    for (int i = 0; i < B * S; i++)
        ids[i] = 0; /* padding */
    for (int b = 0; b < B; b++) {
        ids[b * S] = 1;
        fill_ids(ids + b * S + 1, lens[b] - 1, 100 + b, V);
    }
    float *all = malloc((size_t)B * S * V * 4), *one = malloc((size_t)S * V * 4), *last = malloc((size_t)B * V * 4);
    pwb_err e = {0};
    cr_assert_eq(engine_logits_padded(en, NULL, ids, S, lens, B, 1, all, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(engine_logits_padded(en, NULL, ids, S, lens, B, 0, last, &e), PWB_OK, "%s", e.msg);
    for (int b = 0; b < B; b++) {
        cr_assert_eq(engine_logits(en, NULL, ids + b * S, lens[b], one, &e), PWB_OK, "%s", e.msg);
        float d = max_abs_diff(all + (size_t)b * S * V, one, (size_t)lens[b] * V);
        cr_expect(d < 1e-4f, "%s step %d: sequence %d batched vs alone differ by %g", rel, step_tokens, b, d);
        d = max_abs_diff(last + (size_t)b * V, one + (size_t)(lens[b] - 1) * V, (size_t)V);
        cr_expect(d < 1e-4f, "%s: sequence %d last-position logits differ by %g", rel, b, d);
    }
    free(all);
    free(one);
    free(last);
    engine_close(en);
}

Test(forward, batched_equals_single_gguf)
{
    g_threads = 2; /* the parallel paths must give the same numbers */
    batched_vs_single(TS_GGUF, 0);
}

Test(forward, batched_equals_single_hf_small_steps)
{
    batched_vs_single(TS_HF, 7);
}

/* Prefix KV computed once then reused by several continuations == recomputing everything. */
Test(forward, prefix_reuse_equals_full)
{
    engine *en = open_model(TS_GGUF, 0);
    int V = engine_n_vocab(en);
    int32_t pre[9], full[9 + 6];
    pre[0] = 1;
    fill_ids(pre + 1, 8, 5, V);
    engine_prefix *p = NULL;
    pwb_err e = {0};
    cr_assert_eq(engine_prefix_new(en, NULL, 0, pre, 9, &p, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(engine_prefix_len(p), 9);
    float *a = malloc((size_t)15 * V * 4), *b = malloc((size_t)15 * V * 4);
    for (int k = 0; k < 3; k++) {
        int32_t suf[6];
        fill_ids(suf, 6, 40 + k, V);
        memcpy(full, pre, sizeof pre);
        memcpy(full + 9, suf, sizeof suf);
        cr_assert_eq(engine_logits(en, p, suf, 6, a, &e), PWB_OK, "%s", e.msg);
        cr_assert_eq(engine_logits(en, NULL, full, 15, b, &e), PWB_OK, "%s", e.msg);
        float d = max_abs_diff(a, b + (size_t)9 * V, (size_t)6 * V);
        cr_expect(d < 1e-4f, "continuation %d: prefix-reused logits differ by %g", k, d);
    }
    /* Re-targeting keeps the common part and recomputes the rest. */
    int32_t pre2[12];
    memcpy(pre2, pre, 5 * sizeof *pre);
    fill_ids(pre2 + 5, 7, 77, V);
    cr_assert_eq(engine_prefix_set_ids(en, p, pre2, 12, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(engine_prefix_len(p), 12);
    int32_t suf[3] = {10, 20, 30};
    int32_t full2[15];
    memcpy(full2, pre2, sizeof pre2);
    memcpy(full2 + 12, suf, sizeof suf);
    cr_assert_eq(engine_logits(en, p, suf, 3, a, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(engine_logits(en, NULL, full2, 15, b, &e), PWB_OK, "%s", e.msg);
    float d = max_abs_diff(a, b + (size_t)12 * V, (size_t)3 * V);
    cr_expect(d < 1e-4f, "after set_ids: logits differ by %g", d);
    engine_prefix_free(p);
    free(a);
    free(b);
    engine_close(en);
}

/* Chained caches: a child of a child reads positions from both ancestors. */
Test(forward, kv_chain_three_levels)
{
    engine *en = open_model(TS_HF, 0);
    const model *m = engine_model(en);
    int V = m->hp.n_vocab;
    fwd_ctx *fc = NULL;
    pwb_err e = {0};
    cr_assert_eq(fwd_ctx_new(&fc, m, 0, &e), PWB_OK);
    int32_t ids[12];
    ids[0] = 1;
    fill_ids(ids + 1, 11, 9, V);
    kv_cache *a = NULL, *b = NULL, *c = NULL, *full = NULL;
    cr_assert_eq(kv_cache_new(&a, m, NULL, 0, 0, &e), PWB_OK);
    fwd_seq s = {.kv = a, .ids = ids, .n_ids = 4};
    cr_assert_eq(forward_batch(fc, &s, 1, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(kv_cache_new(&b, m, a, 3, 0, &e), PWB_OK); /* uses only 3 of a's 4 positions */
    s = (fwd_seq){.kv = b, .ids = ids + 3, .n_ids = 5};
    cr_assert_eq(forward_batch(fc, &s, 1, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(kv_cache_len(b), 8);
    cr_assert_eq(kv_cache_new(&c, m, b, 8, 0, &e), PWB_OK);
    float *lc = malloc((size_t)4 * V * 4), *lf = malloc((size_t)12 * V * 4);
    s = (fwd_seq){.kv = c, .ids = ids + 8, .n_ids = 4, .n_out = 4, .logits = lc};
    cr_assert_eq(forward_batch(fc, &s, 1, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(kv_cache_new(&full, m, NULL, 0, 0, &e), PWB_OK);
    s = (fwd_seq){.kv = full, .ids = ids, .n_ids = 12, .n_out = 12, .logits = lf};
    cr_assert_eq(forward_batch(fc, &s, 1, &e), PWB_OK, "%s", e.msg);
    float d = max_abs_diff(lc, lf + (size_t)8 * V, (size_t)4 * V);
    cr_expect(d < 1e-4f, "chained cache logits differ by %g", d);
    /* Bad input is refused before any cache changes. */
    int32_t bad = V;
    s = (fwd_seq){.kv = c, .ids = &bad, .n_ids = 1};
    cr_expect_neq(forward_batch(fc, &s, 1, &e), PWB_OK);
    cr_expect_eq(kv_cache_len(c), 12);
    fwd_seq two[2] = {{.kv = c, .ids = ids, .n_ids = 1}, {.kv = c, .ids = ids, .n_ids = 1}};
    cr_expect_eq(forward_batch(fc, two, 2, &e), PWB_EINVAL);
    kv_cache *deep = NULL;
    cr_expect_neq(kv_cache_new(&deep, m, a, 5, 0, &e), PWB_OK); /* a holds only 4 */
    kv_cache_free(full);
    kv_cache_free(c);
    kv_cache_free(b);
    kv_cache_free(a);
    free(lc);
    free(lf);
    fwd_ctx_free(fc);
    engine_close(en);
}

static double slow_logprob(const float *logits_row, int V, int32_t target)
{
    double mx = logits_row[0];
    for (int v = 1; v < V; v++)
        if (logits_row[v] > mx)
            mx = logits_row[v];
    double s = 0;
    for (int v = 0; v < V; v++)
        s += exp(logits_row[v] - mx);
    return logits_row[target] - mx - log(s);
}

/* Rank classification == log-softmax of full logits computed the slow way, for single- and
 * multi-token continuations, with and without a shared prefix, across a batch. */
static void rank_check(const char *rel)
{
    engine *en = open_model(rel, 0);
    int V = engine_n_vocab(en);
    enum { N = 3, K = 3 };
    int32_t pre[4] = {1, 0, 0, 0};
    fill_ids(pre + 1, 3, 3, V);
    int32_t prompts[N][6];
    int plen[N] = {6, 2, 4};
    int32_t c0[1] = {147}, c1[3] = {201, 282, 215}, c2[2] = {598, 17};
    const int32_t *conts[K] = {c0, c1, c2};
    int clen[K] = {1, 3, 2};
    double lp[N][K], lp2[N][K];
    engine_rank_item items[N], items2[N];
    for (int i = 0; i < N; i++) {
        fill_ids(prompts[i], plen[i], 60 + i, V);
        items[i] = (engine_rank_item){.prompt = prompts[i], .n_prompt = plen[i], .conts = conts, .cont_lens = clen,
                                      .n_conts = K, .logprob = lp[i]};
    }
    engine_prefix *p = NULL;
    pwb_err e = {0};
    cr_assert_eq(engine_prefix_new(en, NULL, 0, pre, 4, &p, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(engine_rank(en, p, items, N, &e), PWB_OK, "%s", e.msg);
    float *lg = malloc((size_t)16 * V * 4);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(items[i].status, PWB_OK);
        for (int k = 0; k < K; k++) {
            int32_t full[16];
            int n = 0;
            for (int j = 0; j < 4; j++)
                full[n++] = pre[j];
            for (int j = 0; j < plen[i]; j++)
                full[n++] = prompts[i][j];
            int start = n;
            for (int j = 0; j < clen[k]; j++)
                full[n++] = conts[k][j];
            cr_assert_eq(engine_logits(en, NULL, full, n, lg, &e), PWB_OK, "%s", e.msg);
            double want = 0;
            for (int j = start; j < n; j++)
                want += slow_logprob(lg + (size_t)(j - 1) * V, V, full[j]);
            cr_expect(fabs(lp[i][k] - want) < 1e-4, "%s: item %d cont %d: rank %f, slow %f", rel, i, k, lp[i][k],
                      want);
            cr_expect(lp[i][k] < 0.0);
        }
    }
    /* Without the prefix object, prefix tokens inlined in each prompt: same numbers. */
    int32_t inl[N][10];
    for (int i = 0; i < N; i++) {
        memcpy(inl[i], pre, sizeof pre);
        memcpy(inl[i] + 4, prompts[i], (size_t)plen[i] * sizeof(int32_t));
        items2[i] = items[i];
        items2[i].prompt = inl[i];
        items2[i].n_prompt = plen[i] + 4;
        items2[i].logprob = lp2[i];
    }
    cr_assert_eq(engine_rank(en, NULL, items2, N, &e), PWB_OK, "%s", e.msg);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++)
            cr_expect(fabs(lp2[i][k] - lp[i][k]) < 1e-4, "inline prefix: %f vs %f", lp2[i][k], lp[i][k]);
    /* A bad item fails alone. */
    int32_t badc[1] = {-5};
    const int32_t *bconts[1] = {badc};
    int blen[1] = {1};
    double blp[1];
    engine_rank_item mixed[2] = {items[0], {.prompt = prompts[0], .n_prompt = 2, .conts = bconts, .cont_lens = blen,
                                            .n_conts = 1, .logprob = blp}};
    double keep = lp[0][1];
    cr_assert_eq(engine_rank(en, p, mixed, 2, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(mixed[0].status, PWB_OK);
    cr_expect_neq(mixed[1].status, PWB_OK);
    cr_expect(fabs(lp[0][1] - keep) < 1e-9);
    engine_prefix_free(p);
    free(lg);
    engine_close(en);
}

Test(forward, rank_equals_slow_logsoftmax_gguf)
{
    rank_check(TS_GGUF);
}

Test(forward, rank_equals_slow_logsoftmax_hf)
{
    rank_check(TS_HF);
}

/* Leading input given as vectors: the token embeddings themselves give the same logits. */
Test(forward, embeds_prefix_equals_ids)
{
    engine *en = open_model(TS_GGUF, 0);
    int V = engine_n_vocab(en), d = engine_n_embd(en);
    int32_t ids[8];
    ids[0] = 1;
    fill_ids(ids + 1, 7, 11, V);
    float *emb = malloc((size_t)3 * d * 4), *a = malloc((size_t)8 * V * 4), *b = malloc((size_t)8 * V * 4);
    pwb_err e = {0};
    cr_assert_eq(engine_embed_ids(en, ids, 3, emb, &e), PWB_OK);
    cr_assert_eq(engine_logits(en, NULL, ids, 8, a, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(engine_forward_embeds(en, emb, 3, ids + 3, 5, NULL, 8, b, &e), PWB_OK, "%s", e.msg);
    float dd = max_abs_diff(a, b, (size_t)8 * V);
    cr_expect(dd < 1e-4f, "embeds vs ids differ by %g", dd);
    /* Selected positions only. */
    int pos[2] = {6, 2};
    cr_assert_eq(engine_forward_embeds(en, emb, 3, ids + 3, 5, pos, 2, b, &e), PWB_OK, "%s", e.msg);
    cr_expect(max_abs_diff(a + (size_t)6 * V, b, (size_t)V) < 1e-4f);
    cr_expect(max_abs_diff(a + (size_t)2 * V, b + V, (size_t)V) < 1e-4f);
    /* A soft prefix made of vectors, reused by rank: perturbing it changes the scores. */
    engine_prefix *p = NULL;
    cr_assert_eq(engine_prefix_new(en, emb, 3, NULL, 0, &p, &e), PWB_OK, "%s", e.msg);
    int32_t c0[1] = {147};
    const int32_t *conts[1] = {c0};
    int cl[1] = {1};
    double lp1, lp2;
    engine_rank_item it = {.prompt = ids + 3, .n_prompt = 5, .conts = conts, .cont_lens = cl, .n_conts = 1, .logprob = &lp1};
    cr_assert_eq(engine_rank(en, p, &it, 1, &e), PWB_OK, "%s", e.msg);
    cr_expect(fabs(lp1 - slow_logprob(a + (size_t)7 * V, V, 147)) < 1e-4);
    engine_prefix_free(p);
    for (int i = 0; i < 3 * d; i++)
        emb[i] *= 1.5f;
    cr_assert_eq(engine_prefix_new(en, emb, 3, NULL, 0, &p, &e), PWB_OK, "%s", e.msg);
    it.logprob = &lp2;
    cr_assert_eq(engine_rank(en, p, &it, 1, &e), PWB_OK, "%s", e.msg);
    cr_expect(fabs(lp1 - lp2) > 1e-3, "scaled soft prefix left the score unchanged (%f)", lp1);
    engine_prefix_free(p);
    free(emb);
    free(a);
    free(b);
    engine_close(en);
}

/* Seeded sampling: same seed, same tokens, alone or in a batch; another seed differs. */
Test(forward, seeded_sampling_reproducible)
{
    engine *en = open_model(TS_GGUF, 0);
    int32_t bos = 1;
    engine_gen_item a = {.prompt = &bos, .n_prompt = 1, .max_tokens = 30, .temperature = 1.0f, .top_p = 0.95f, .seed = 42};
    engine_gen_item batch[3] = {a, a, a};
    batch[1].seed = 7;
    batch[2].temperature = 0.0f;
    pwb_err e = {0};
    cr_assert_eq(engine_generate(en, NULL, &a, 1, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(engine_generate(en, NULL, batch, 3, &e), PWB_OK, "%s", e.msg);
    cr_assert(a.n_out > 0);
    cr_expect_eq(batch[0].n_out, a.n_out);
    cr_expect(memcmp(batch[0].out_ids, a.out_ids, (size_t)a.n_out * 4) == 0, "same seed, different tokens");
    cr_expect_str_eq(batch[0].text, a.text);
    int n = batch[1].n_out < a.n_out ? batch[1].n_out : a.n_out;
    cr_expect(n < 5 || memcmp(batch[1].out_ids, a.out_ids, (size_t)n * 4) != 0, "seed 7 reproduced seed 42");
    for (int i = 0; i < 24 && i < batch[2].n_out; i++)
        cr_expect_eq(batch[2].out_ids[i], REF_GREEDY[i], "greedy item in a sampled batch diverged at %d", i);
    int differs_from_greedy = 0;
    for (int i = 0; i < a.n_out && i < 24; i++)
        differs_from_greedy |= a.out_ids[i] != REF_GREEDY[i];
    cr_expect(differs_from_greedy, "temperature 1.0 reproduced the greedy text");
    engine_gen_item_clear(&a);
    for (int i = 0; i < 3; i++)
        engine_gen_item_clear(&batch[i]);
    engine_close(en);
}

/* Stop tokens end generation before the token; stop strings cut the text. */
Test(forward, stop_tokens_and_strings)
{
    engine *en = open_model(TS_GGUF, 0);
    int32_t bos = 1;
    int32_t stop_id = REF_GREEDY[5];
    engine_gen_item it = {.prompt = &bos, .n_prompt = 1, .max_tokens = 24, .stop_ids = &stop_id, .n_stop_ids = 1};
    pwb_err e = {0};
    cr_assert_eq(engine_generate(en, NULL, &it, 1, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(it.n_out, 5);
    cr_expect_eq(it.finish, ENGINE_FINISH_EOS);
    engine_gen_item_clear(&it);
    /* Stop string: whatever the 4th greedy token decodes to, text must end before it. */
    engine_gen_item full = {.prompt = &bos, .n_prompt = 1, .max_tokens = 8};
    cr_assert_eq(engine_generate(en, NULL, &full, 1, &e), PWB_OK, "%s", e.msg);
    pwb_buf t3;
    buf_init(&t3);
    tokenizer_decode(engine_tokenizer(en), REF_GREEDY, 3, 0, &t3);
    const char *stop = "zzzz-never";
    const char *stops[2] = {stop, full.text + t3.len + 1};
    engine_gen_item st = {.prompt = &bos, .n_prompt = 1, .max_tokens = 8, .stop = stops, .n_stop = 2};
    cr_assert_eq(engine_generate(en, NULL, &st, 1, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(st.finish, ENGINE_FINISH_STOP, "text '%s' stop '%s'", full.text, stops[1]);
    cr_expect(strlen(st.text) <= t3.len + 1, "'%s' not cut before '%s'", st.text, stops[1]);
    cr_expect(strncmp(st.text, full.text, strlen(st.text)) == 0);
    buf_free(&t3);
    engine_gen_item_clear(&full);
    engine_gen_item_clear(&st);
    engine_close(en);
}

Test(forward, rope_layouts_differ_and_preserve_norm)
{
    model_hparams hp = {.n_rot = 8, .head_dim = 8, .rope_base = 10000.0f, .rope_layout = ROPE_ADJACENT};
    float a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8];
    memcpy(b, a, sizeof a);
    fwd_rope(a, 0, &hp);
    for (int i = 0; i < 8; i++)
        cr_expect_float_eq(a[i], b[i], 1e-6f, "position 0 must be the identity");
    fwd_rope(a, 5, &hp);
    hp.rope_layout = ROPE_HALF;
    fwd_rope(b, 5, &hp);
    double na = 0, nb = 0;
    for (int i = 0; i < 8; i++) {
        na += a[i] * a[i];
        nb += b[i] * b[i];
    }
    cr_expect(fabs(na - 204.0) < 1e-3 && fabs(nb - 204.0) < 1e-3, "rotation must keep the norm");
    cr_expect(fabsf(a[0] - b[0]) > 1e-3f, "adjacent and half layouts must differ");
    /* Pair (x0, x1) at frequency 0 rotated by 5 rad in the adjacent layout. */
    cr_expect_float_eq(a[0], (float)(1 * cos(5.0) - 2 * sin(5.0)), 1e-5f);
    cr_expect_float_eq(a[1], (float)(1 * sin(5.0) + 2 * cos(5.0)), 1e-5f);
    /* ... and (x0, x4) in the half layout. */
    cr_expect_float_eq(b[0], (float)(1 * cos(5.0) - 5 * sin(5.0)), 1e-5f);
    cr_expect_float_eq(b[4], (float)(1 * sin(5.0) + 5 * cos(5.0)), 1e-5f);
}

/* A synthetic Qwen2-style Hugging Face folder: q/k/v biases, an untied lm_head, random weights,
 * written with the safetensors writer; the engine must agree with the naive forward. */
#include <sys/stat.h>
#include <unistd.h>

#include "engine/safetensors.h"
#include "util/file.h"

static float frand(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return ((float)((*s >> 8) & 0xffff) / 65535.0f - 0.5f) * 0.4f;
}

static void write_synthetic(const char *dir, int with_bias, int drop_tensor)
{
    enum { D = 32, H = 4, HKV = 2, HD = 8, FF = 64, NL = 2, VOC = 2048 };
    mkdir(dir, 0755);
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    cr_assert(f);
    fprintf(f, "{\"model_type\": \"qwen2\", \"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d,"
               " \"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"rms_norm_eps\": 1e-6,"
               " \"rope_theta\": 1000000.0, \"max_position_embeddings\": 64, \"vocab_size\": %d,"
               " \"tie_word_embeddings\": false}", D, FF, NL, H, HKV, VOC);
    fclose(f);
    pwb_buf tj;
    buf_init(&tj);
    pwb_err e = {0};
    cr_assert_eq(file_read_all(shared_path(TS_HF "/tokenizer.json"), 1 << 24, &tj, &e), PWB_OK, "%s", e.msg);
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    cr_assert_eq(file_write_atomic(p, tj.data, tj.len, &e), PWB_OK);
    buf_free(&tj);
    pwb_tensor t[64];
    char names[64][96];
    float *bufs[64];
    int n = 0;
    uint32_t seed = 17;
#define ADD(nm, rows, cols, bias1)                                                                    \
    do {                                                                                           \
        snprintf(names[n], sizeof names[n], "%s", nm);                                             \
        int64_t r_ = (rows), c_ = (cols);                                                          \
        bufs[n] = malloc((size_t)(r_ * c_) * 4);                                                   \
        for (int64_t i_ = 0; i_ < r_ * c_; i_++)                                                   \
            bufs[n][i_] = (bias1) ? 1.0f + frand(&seed) : frand(&seed);                            \
        t[n] = (pwb_tensor){.name = names[n], .type = DT_F32, .n_dims = r_ > 1 ? 2 : 1,            \
                            .ne = {c_, r_ > 1 ? r_ : 1, 1, 1}, .data = bufs[n],                    \
                            .nbytes = (size_t)(r_ * c_) * 4};                                      \
        n++;                                                                                       \
    } while (0)
    ADD("model.embed_tokens.weight", VOC, D, 0);
    if (drop_tensor != 1)
        ADD("lm_head.weight", VOC, D, 0);
    ADD("model.norm.weight", 1, D, 1);
    for (int l = 0; l < NL; l++) {
        char nm[96];
#define LADD(suf, rows, cols, b)                                                                   \
        snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suf);                                     \
        ADD(nm, rows, cols, b)
        LADD("input_layernorm.weight", 1, D, 1);
        LADD("post_attention_layernorm.weight", 1, D, 1);
        LADD("self_attn.q_proj.weight", H * HD, D, 0);
        if (drop_tensor != 2 || l != 1) {
            LADD("self_attn.k_proj.weight", HKV * HD, D, 0);
        }
        LADD("self_attn.v_proj.weight", HKV * HD, D, 0);
        LADD("self_attn.o_proj.weight", D, H * HD, 0);
        LADD("mlp.gate_proj.weight", FF, D, 0);
        LADD("mlp.up_proj.weight", FF, D, 0);
        LADD("mlp.down_proj.weight", D, FF, 0);
        if (with_bias) {
            LADD("self_attn.q_proj.bias", 1, H * HD, 0);
            LADD("self_attn.k_proj.bias", 1, HKV * HD, 0);
            LADD("self_attn.v_proj.bias", 1, HKV * HD, 0);
        }
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    cr_assert_eq(safetensors_write(p, t, (size_t)n, NULL, 0, &e), PWB_OK, "%s", e.msg);
    for (int i = 0; i < n; i++)
        free(bufs[i]);
}

Test(forward, synthetic_qwen2_bias_untied)
{
    char dir[] = "/tmp/pwb_fwd_qwen2_XXXXXX";
    cr_assert(mkdtemp(dir));
    write_synthetic(dir, 1, 0);
    engine *en = NULL;
    pwb_err e = {0};
    cr_assert_eq(engine_open(&en, dir, NULL, &e), PWB_OK, "%s", e.msg);
    const model *m = engine_model(en);
    cr_expect_eq(m->hp.qkv_bias, 1);
    cr_expect_eq(m->hp.tied, 0);
    cr_expect_eq(m->hp.rope_layout, ROPE_HALF);
    cr_expect_str_eq(m->hp.arch, "qwen2");
    cr_expect_neq(m->output.data, m->tok_embd.data);
    check_naive_engine(en, "synthetic qwen2", 1e-4f);
    /* Past the context (64) is refused, not computed. */
    int32_t ids[65] = {0};
    float *lg = malloc((size_t)65 * 2048 * 4);
    cr_expect_eq(engine_logits(en, NULL, ids, 65, lg, &e), PWB_ERANGE);
    free(lg);
    engine_close(en);
    /* A missing tensor is named in the error. */
    write_synthetic(dir, 0, 2);
    cr_expect_neq(engine_open(&en, dir, NULL, &e), PWB_OK);
    cr_expect(strstr(e.msg, "model.layers.1.self_attn.k_proj.weight") != NULL, "%s", e.msg);
    /* No lm_head and tie_word_embeddings false: the head falls back to the embedding (tied). */
    write_synthetic(dir, 0, 1);
    cr_assert_eq(engine_open(&en, dir, NULL, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(engine_model(en)->hp.tied, 1);
    cr_expect_eq(engine_model(en)->hp.qkv_bias, 0);
    engine_close(en);
    char p[4200];
    const char *files[] = {"config.json", "tokenizer.json", "model.safetensors"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* Sentence embeddings: a batch gives each sequence what it gets alone, a sequence's mean is its
 * prefix's mean moved by its later positions only (causal), and the head is not needed. */
Test(forward, mean_hidden_batched_equals_single)
{
    engine *en = open_model(TS_GGUF, 5);
    int V = engine_n_vocab(en), d = engine_n_embd(en);
    int32_t a[9], b[4];
    fill_ids(a, 9, 3, V);
    fill_ids(b, 4, 4, V);
    const int32_t *ids[2] = {a, b};
    int lens[2] = {9, 4};
    float *two = malloc((size_t)2 * d * 4), *one = malloc((size_t)d * 4), *pre = malloc((size_t)d * 4);
    pwb_err e = {0};
    cr_assert_eq(engine_mean_hidden(en, ids, lens, 2, two, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(engine_mean_hidden(en, ids + 1, lens + 1, 1, one, &e), PWB_OK, "%s", e.msg);
    cr_expect(max_abs_diff(two + d, one, (size_t)d) < 1e-5f);
    cr_assert_eq(engine_mean_hidden(en, ids, lens, 1, one, &e), PWB_OK, "%s", e.msg);
    cr_expect(max_abs_diff(two, one, (size_t)d) < 1e-5f);
    /* b's first token alone vs a sequence starting with it: different means, both finite */
    int l1 = 1;
    cr_assert_eq(engine_mean_hidden(en, ids + 1, &l1, 1, pre, &e), PWB_OK, "%s", e.msg);
    cr_expect(max_abs_diff(pre, two + d, (size_t)d) > 1e-3f);
    for (int j = 0; j < d; j++)
        cr_assert(isfinite(two[j]) && isfinite(pre[j]));
    /* empty or out-of-range input is refused */
    int l0 = 0;
    cr_expect_neq(engine_mean_hidden(en, ids, &l0, 1, one, &e), PWB_OK);
    int32_t bad = V + 5;
    const int32_t *pb = &bad;
    cr_expect_neq(engine_mean_hidden(en, &pb, &l1, 1, one, &e), PWB_OK);
    free(two);
    free(one);
    free(pre);
    engine_close(en);
}
