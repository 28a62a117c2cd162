/* The backward pass to the input embeddings, checked against central finite differences (a random
 * tiny Llama built in memory, TinyStories-656K in both its safetensors and Q8_0 GGUF forms) and
 * against PyTorch autograd on SmolLM2-135M (vectors committed under tests/fixtures/grad/). */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backward.h"
#include "engine/forward.h"
#include "engine/model.h"
#include "unit/engine/tiny_model.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/json.h"
#include "util/rng.h"
#include "util/timer.h"

/* Two sequences of different lengths sharing one soft prompt, each scored on its last two
 * positions: the shape of a training batch (padding, shared prompt, several targets). With
 * use_prefix the soft prompt and the first three ids form a prefix sequence the two continue. */
typedef struct gc_batch {
    int n_soft, d, use_prefix, n;
    float *soft;
    int32_t ids[2][16];
    int lens[2];
    int tpos[2][2];
    int32_t tgt[2][2];
    bwd_seq seqs[3];
} gc_batch;

#define GC_SHARED 3

static void gc_batch_make(gc_batch *b, const model *m, int n_soft, uint64_t seed, int use_prefix)
{
    pwb_rng r;
    rng_init(&r, seed);
    memset(b, 0, sizeof *b);
    b->n_soft = n_soft;
    b->d = m->hp.n_embd;
    b->use_prefix = use_prefix;
    b->soft = malloc((size_t)n_soft * b->d * sizeof(float));
    for (int i = 0; i < n_soft * b->d; i++)
        b->soft[i] = (float)(rng_uniform(&r) - 0.5);
    b->lens[0] = 5;
    b->lens[1] = 11;
    int V = m->hp.n_vocab < 1000 ? m->hp.n_vocab : 1000;
    for (int s = 0; s < 2; s++) {
        for (int j = 0; j < b->lens[s]; j++)
            b->ids[s][j] = (int32_t)(3 + rng_below(&r, (uint64_t)V - 3));
        for (int k = 0; k < 2; k++)
            b->tgt[s][k] = (int32_t)(3 + rng_below(&r, (uint64_t)V - 3));
    }
    for (int j = 0; j < GC_SHARED; j++)
        b->ids[1][j] = b->ids[0][j];
    if (!use_prefix) {
        b->n = 2;
        bwd_seq_padded(b->seqs, 2, b->soft, n_soft, &b->ids[0][0], 16, b->lens, NULL);
        for (int s = 0; s < 2; s++)
            for (int k = 0; k < 2; k++)
                b->tpos[s][k] = n_soft + b->lens[s] - 2 + k;
    } else {
        b->n = 3;
        b->seqs[0] = (bwd_seq){.embeds = b->soft, .n_embeds = n_soft, .ids = b->ids[0], .n_ids = GC_SHARED};
        for (int s = 0; s < 2; s++) {
            b->seqs[s + 1] = (bwd_seq){.prefix = &b->seqs[0], .ids = b->ids[s] + GC_SHARED,
                                       .n_ids = b->lens[s] - GC_SHARED};
            for (int k = 0; k < 2; k++)
                b->tpos[s][k] = b->lens[s] - GC_SHARED - 2 + k;
        }
    }
    for (int s = 0; s < 2; s++) {
        bwd_seq *q = &b->seqs[s + use_prefix];
        q->n_tgt = 2;
        q->tgt_pos = b->tpos[s];
        q->targets = b->tgt[s];
    }
}

static void gc_set_grad(gc_batch *b, float *g)
{
    for (int s = 0; s < b->n; s++)
        b->seqs[s].d_embeds = b->seqs[s].n_embeds ? g : NULL;
}

static double gc_loss(bwd_ctx *c, gc_batch *b)
{
    double L = NAN;
    pwb_err e;
    int rc = bwd_run(c, b->seqs, b->n, 0, &L, &e);
    cr_assert_eq(rc, PWB_OK, "%s", e.msg);
    return L;
}

typedef struct gc_result {
    double rel_l2;   /* ||fd - g|| / ||g|| over the checked coordinates */
    double rel_dir;  /* |fd along g/|g| - |g|| / |g| */
    double gnorm;
    int n;
} gc_result;

/* Central differences on every coordinate of the soft prompt (or a seeded sample of max_coords
 * of them) plus along the gradient's own direction. */
static gc_result grad_check(const model *m, int exact, int n_soft, double eps, int max_coords, uint64_t seed,
                            int use_prefix)
{
    bwd_opts o = {.exact = exact};
    bwd_ctx *c;
    pwb_err e;
    /* Hundreds of tiny runs: one thread avoids waking a team for each (and spinning on a busy host). */
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    cr_assert_eq(bwd_ctx_new(&c, m, &o, &e), PWB_OK, "%s", e.msg);
    gc_batch b;
    gc_batch_make(&b, m, n_soft, seed, use_prefix);
    const int N = n_soft * b.d;
    float *g = calloc((size_t)N, sizeof *g);
    gc_set_grad(&b, g);
    double L0;
    cr_assert_eq(bwd_run(c, b.seqs, b.n, 1, &L0, &e), PWB_OK, "%s", e.msg);
    cr_assert(isfinite(L0) && L0 > 0);
    double L0b = gc_loss(c, &b);
    cr_assert_float_eq(L0, L0b, 1e-9 * fabs(L0) + 1e-12, "loss with and without grad: %.9g vs %.9g", L0, L0b);

    pwb_rng r;
    rng_init(&r, seed ^ 0x5eed);
    int n = N < max_coords ? N : max_coords;
    double num = 0, den = 0, gn = 0;
    for (int i = 0; i < N; i++)
        gn += (double)g[i] * g[i];
    gn = sqrt(gn);
    for (int k = 0; k < n; k++) {
        int i = N <= max_coords ? k : (int)rng_below(&r, (uint64_t)N);
        float keep = b.soft[i];
        b.soft[i] = (float)(keep + eps);
        double lp = gc_loss(c, &b);
        b.soft[i] = (float)(keep - eps);
        double lm = gc_loss(c, &b);
        b.soft[i] = keep;
        /* the step actually taken in float */
        double h = ((double)(float)(keep + eps) - (double)(float)(keep - eps));
        double fd = (lp - lm) / h;
        num += (fd - g[i]) * (fd - g[i]);
        den += (double)g[i] * g[i];
    }
    /* Along u = g / |g|: the directional derivative is |g|. */
    float *base = malloc((size_t)N * sizeof *base);
    memcpy(base, b.soft, (size_t)N * sizeof *base);
    double dstep = eps;
    for (int i = 0; i < N; i++)
        b.soft[i] = (float)(base[i] + dstep * g[i] / gn);
    double lp = gc_loss(c, &b);
    for (int i = 0; i < N; i++)
        b.soft[i] = (float)(base[i] - dstep * g[i] / gn);
    double lm = gc_loss(c, &b);
    double dir = (lp - lm) / (2 * dstep);
    gc_result res = {sqrt(num / den), fabs(dir - gn) / gn, gn, n};
    free(base);
    free(g);
    free(b.soft);
    bwd_ctx_free(c);
    omp_set_num_threads(threads);
    return res;
}

static void expect_ok(const char *what, gc_result r)
{
    cr_log_info("%s: %d coords, |g| %.4g, rel L2 err %.2e, directional err %.2e", what, r.n, r.gnorm, r.rel_l2,
                r.rel_dir);
    cr_expect(r.gnorm > 0, "%s: zero gradient", what);
    cr_expect_lt(r.rel_l2, 1e-2, "%s: relative L2 error %.3g", what, r.rel_l2);
    cr_expect_lt(r.rel_dir, 1e-2, "%s: directional error %.3g", what, r.rel_dir);
}

Test(backward, tiny_random_model_finite_differences_adjacent_rope)
{
    tiny_model *t = tiny_model_new(11, 2, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    cr_assert_not_null(t);
    expect_ok("tiny adjacent", grad_check(&t->m, 1, 3, 1e-2, 1 << 30, 1, 0));
    tiny_model_free(t);
}

Test(backward, tiny_random_model_finite_differences_half_rope_with_biases)
{
    tiny_model *t = tiny_model_new(12, 2, 32, 4, 2, 64, 48, ROPE_HALF, 1);
    cr_assert_not_null(t);
    expect_ok("tiny half+bias", grad_check(&t->m, 1, 3, 1e-2, 1 << 30, 2, 0));
    tiny_model_free(t);
}

Test(backward, tiny_model_shared_prefix_finite_differences)
{
    tiny_model *t = tiny_model_new(13, 3, 32, 4, 4, 64, 48, ROPE_ADJACENT, 0);
    cr_assert_not_null(t);
    expect_ok("tiny mha, prefix", grad_check(&t->m, 1, 2, 1e-2, 1 << 30, 3, 1));
    tiny_model_free(t);
}

/* Gemma 3's operations (QK norms, post-norms, GeGLU, embedding scale, soft-capping, a sliding
 * window of 4 on layer 0, which the 11-token sequences exceed) against finite differences, with and
 * without a shared prefix. */
Test(backward, tiny_gemma_finite_differences)
{
    tiny_model *t = tiny_model_new(14, 2, 32, 2, 1, 64, 48, ROPE_HALF, 0);
    cr_assert_not_null(t);
    tiny_model_gemma(t, 15, 4);
    cr_assert_eq(t->used <= t->cap, 1);
    expect_ok("tiny gemma", grad_check(&t->m, 1, 3, 1e-2, 1 << 30, 4, 0));
    expect_ok("tiny gemma, prefix", grad_check(&t->m, 1, 2, 1e-2, 1 << 30, 5, 1));
    tiny_model_free(t);
}

static model *load_or_skip(const char *rel)
{
    const char *p = t_path(t_shared(), rel);
    if (!file_exists(p))
        cr_skip_test("%s not found (set PWB_SHARED)", p);
    model *m = NULL;
    pwb_err e;
    cr_assert_eq(model_load(&m, p, &e), PWB_OK, "%s", e.msg);
    return m;
}

#define TS_DIR "models/tinystories-656k"
#define TS_GGUF "models/tinystories-656k/TinyStories-656K-Q8_0.gguf"

Test(backward, tinystories_safetensors_finite_differences)
{
    model *m = load_or_skip(TS_DIR);
    cr_assert_eq(m->hp.rope_layout, ROPE_HALF);
    expect_ok("tinystories safetensors", grad_check(m, 1, 4, 1e-2, 160, 4, 0));
    model_free(m);
}

Test(backward, tinystories_q8_0_gguf_finite_differences)
{
    model *m = load_or_skip(TS_GGUF);
    cr_assert_eq(m->hp.rope_layout, ROPE_ADJACENT);
    cr_assert_eq(m->layers[0].wq.type, DT_Q8_0);
    expect_ok("tinystories q8_0 (exact), prefix", grad_check(m, 1, 4, 1e-2, 160, 5, 1));
    model_free(m);
}

/* Runs a batch, returning the loss and the soft prompt's gradient (malloc'd). */
static float *run_grad(bwd_ctx *c, gc_batch *b, double *loss)
{
    float *g = calloc((size_t)b->n_soft * b->d, sizeof *g);
    gc_set_grad(b, g);
    pwb_err e;
    cr_assert_eq(bwd_run(c, b->seqs, b->n, 1, loss, &e), PWB_OK, "%s", e.msg);
    return g;
}

static double rel_diff(const float *a, const float *b, int n, double *cosine)
{
    double num = 0, den = 0, ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (cosine)
        *cosine = ab / sqrt(aa * bb);
    return sqrt(num / den);
}

/* The same examples as one flat padded batch and as a shared prefix with two continuations: the
 * same loss and the same gradient; and each example's share of a batch gradient is what it gets
 * alone (the batch is the mean). */
static void check_batch_forms(const model *m, int exact)
{
    bwd_opts o = {.exact = exact};
    bwd_ctx *c;
    pwb_err e;
    cr_assert_eq(bwd_ctx_new(&c, m, &o, &e), PWB_OK, "%s", e.msg);
    gc_batch flat, pre;
    gc_batch_make(&flat, m, 3, 77, 0);
    gc_batch_make(&pre, m, 3, 77, 1);
    const int N = 3 * m->hp.n_embd;
    double lf, lp;
    float *gf = run_grad(c, &flat, &lf), *gp = run_grad(c, &pre, &lp);
    /* Engine mode quantizes each gradient row to 8 bits before the backward products, and a
     * prefix row sums what the flat rows carry separately: equal up to that rounding. */
    const double tol = exact ? 1e-4 : 3e-2;
    cr_expect_float_eq(lf, lp, 1e-4 * lf, "flat %.7g vs prefix %.7g", lf, lp);
    double rd = rel_diff(gp, gf, N, NULL);
    cr_expect_lt(rd, tol, "prefix vs flat gradient: %.3g", rd);
    /* each alone */
    double la, lb;
    flat.n = 1;
    float *ga = run_grad(c, &flat, &la);
    bwd_seq keep = flat.seqs[0];
    flat.seqs[0] = flat.seqs[1];
    float *gb = run_grad(c, &flat, &lb);
    flat.seqs[0] = keep;
    cr_expect_float_eq((la + lb) / 2, lf, 1e-5 * lf);
    for (int i = 0; i < N; i++)
        ga[i] = (ga[i] + gb[i]) / 2;
    rd = rel_diff(ga, gf, N, NULL);
    cr_expect_lt(rd, tol, "batch gradient vs the mean of single ones: %.3g", rd);
    free(gf);
    free(gp);
    free(ga);
    free(gb);
    free(flat.soft);
    free(pre.soft);
    bwd_ctx_free(c);
}

Test(backward, batch_forms_agree_tiny)
{
    tiny_model *t = tiny_model_new(21, 2, 32, 4, 2, 64, 48, ROPE_HALF, 1);
    check_batch_forms(&t->m, 1);
    tiny_model_free(t);
}

Test(backward, batch_forms_agree_tiny_gemma)
{
    tiny_model *t = tiny_model_new(22, 2, 32, 2, 1, 64, 48, ROPE_HALF, 0);
    tiny_model_gemma(t, 23, 4);
    check_batch_forms(&t->m, 1);
    tiny_model_free(t);
}

Test(backward, batch_forms_agree_tinystories_gguf)
{
    model *m = load_or_skip(TS_GGUF);
    check_batch_forms(m, 0);
    model_free(m);
}

/* Engine mode (8-bit activations, transposed Q8_0 weights in the backward) against exact mode and
 * against kernel_matmul_t: close, as the training needs; and its loss is what the engine's own
 * forward gives for the same targets. */
Test(backward, engine_mode_close_to_exact_and_to_forward)
{
    model *m = load_or_skip(TS_GGUF);
    bwd_opts ox = {.exact = 1}, of = {0}, on = {.no_transposed = 1};
    bwd_ctx *cx, *cf, *cn;
    pwb_err e;
    cr_assert_eq(bwd_ctx_new(&cx, m, &ox, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(bwd_ctx_new(&cf, m, &of, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(bwd_ctx_new(&cn, m, &on, &e), PWB_OK, "%s", e.msg);
    cr_assert_gt(bwd_ctx_bytes(cf), bwd_ctx_bytes(cn), "transposed copies were not made");
    gc_batch b;
    gc_batch_make(&b, m, 4, 99, 0);
    const int N = 4 * m->hp.n_embd;
    double lx, lf, ln, cos_f, cos_n;
    double lp_f[2][2];
    float *gx = run_grad(cx, &b, &lx);
    b.seqs[0].tgt_logprob = lp_f[0];
    b.seqs[1].tgt_logprob = lp_f[1];
    float *gf = run_grad(cf, &b, &lf), *gn = run_grad(cn, &b, &ln);
    double rf = rel_diff(gf, gx, N, &cos_f), rn = rel_diff(gn, gx, N, &cos_n);
    cr_log_info("engine mode vs exact: loss %.6f vs %.6f; grad rel %.3g (cos %.5f), without transposed copies "
                "rel %.3g (cos %.5f)", lf, lx, rf, cos_f, rn, cos_n);
    cr_expect_float_eq(lf, lx, 0.02 * lx);
    cr_expect_float_eq(lf, ln, 1e-6 * lf);
    cr_expect_gt(cos_f, 0.99);
    cr_expect_gt(cos_n, 0.995);

    /* The engine's forward on the same inputs scores the same log-probabilities. */
    fwd_ctx *fc;
    cr_assert_eq(fwd_ctx_new(&fc, m, 0, &e), PWB_OK, "%s", e.msg);
    for (int s = 0; s < 2; s++) {
        kv_cache *kv;
        cr_assert_eq(kv_cache_new(&kv, m, NULL, 0, 32, &e), PWB_OK, "%s", e.msg);
        double lp[2];
        fwd_seq fs = {.kv = kv, .embeds = b.soft, .n_embeds = 4, .ids = b.ids[s], .n_ids = b.lens[s], .n_out = 2,
                      .out_pos = b.tpos[s], .targets = b.tgt[s], .logprobs = lp};
        cr_assert_eq(forward_batch(fc, &fs, 1, &e), PWB_OK, "%s", e.msg);
        for (int k = 0; k < 2; k++)
            cr_expect_float_eq(lp[k], lp_f[s][k], 1e-3 * fabs(lp[k]) + 1e-4, "seq %d target %d: %.6f vs %.6f", s, k,
                               lp[k], lp_f[s][k]);
        kv_cache_free(kv);
    }
    fwd_ctx_free(fc);
    free(gx);
    free(gf);
    free(gn);
    free(b.soft);
    bwd_ctx_free(cx);
    bwd_ctx_free(cf);
    bwd_ctx_free(cn);
    model_free(m);
}

Test(backward, rejects_bad_batches)
{
    tiny_model *t = tiny_model_new(5, 1, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    bwd_ctx *c;
    pwb_err e;
    cr_assert_eq(bwd_ctx_new(&c, &t->m, NULL, &e), PWB_OK);
    int32_t ids[4] = {1, 2, 3, 4}, bad_id[1] = {64}, tgt[1] = {5};
    int pos_bad[1] = {4}, pos_ok[1] = {3};
    double L;
    bwd_seq s = {.ids = ids, .n_ids = 4, .n_tgt = 1, .tgt_pos = pos_bad, .targets = tgt};
    cr_expect_eq(bwd_run(c, &s, 1, 1, &L, &e), PWB_EINVAL);
    s.tgt_pos = pos_ok;
    cr_expect_eq(bwd_run(c, &s, 1, 1, &L, &e), PWB_OK, "%s", e.msg);
    s.ids = bad_id;
    s.n_ids = 1;
    s.n_tgt = 0;
    cr_expect_eq(bwd_run(c, &s, 1, 1, &L, &e), PWB_EINVAL);
    bwd_seq two[2] = {{.ids = ids, .n_ids = 4}, {.ids = ids, .n_ids = 4}};
    two[0].prefix = &two[1]; /* a prefix must come first */
    cr_expect_eq(bwd_run(c, two, 2, 0, &L, &e), PWB_EINVAL);
    cr_expect_eq(bwd_run(c, two, 0, 0, &L, &e), PWB_EINVAL);
    bwd_seq empty = {0};
    cr_expect_eq(bwd_run(c, &empty, 1, 0, &L, &e), PWB_EINVAL);
    bwd_ctx_free(c);
    tiny_model_free(t);
}

/* ---- against PyTorch autograd on SmolLM2 (tests/reference/torch_grad_reference.py) ---------- */

static float *read_f32(const char *path, size_t n)
{
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    cr_assert_eq(file_read_all(path, 64u << 20, &b, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(b.len, n * sizeof(float), "%s: %zu bytes, expected %zu", path, b.len, n * sizeof(float));
    float *out = malloc(n * sizeof *out);
    memcpy(out, b.data, n * sizeof *out);
    buf_free(&b);
    return out;
}

static int32_t *json_ids(const cJSON *arr, int *n)
{
    cr_assert(cJSON_IsArray(arr));
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc((size_t)(*n > 0 ? *n : 1) * sizeof *ids);
    for (int i = 0; i < *n; i++)
        ids[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valueint;
    return ids;
}

Test(backward, smollm2_matches_torch_autograd, .timeout = 300)
{
    char mpath[4096], fdir[4096], jpath[4200], ppath[4200], gpath[4200];
    snprintf(mpath, sizeof mpath, "%.4000s/models/SmolLM2-135M-Instruct.Q4_1.gguf", t_root());
    if (!file_exists(mpath))
        cr_skip_test("%s not found (make model)", mpath);
    snprintf(fdir, sizeof fdir, "%.4000s/tests/fixtures/grad", t_root());
    snprintf(jpath, sizeof jpath, "%s/smollm2_sst2.json", fdir);
    pwb_err e;
    cJSON *fx = json_parse_file(jpath, 1 << 20, &e);
    cr_assert_not_null(fx, "%s", e.msg);
    const int n_soft = json_int(fx, "n_soft", 0), d = json_int(fx, "hidden", 0);
    const double ref_loss = json_num(fx, "loss", NAN);
    snprintf(ppath, sizeof ppath, "%s/%s", fdir, json_str(fx, "prompt_file", ""));
    snprintf(gpath, sizeof gpath, "%s/%s", fdir, json_str(fx, "grad_file", ""));
    float *soft = read_f32(ppath, (size_t)n_soft * d), *ref = read_f32(gpath, (size_t)n_soft * d);

    model *m;
    cr_assert_eq(model_load(&m, mpath, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(m->hp.n_embd, d);
    const cJSON *exs = cJSON_GetObjectItem(fx, "examples");
    const int B = cJSON_GetArraySize(exs);
    cr_assert(B >= 2 && B <= 4);
    int32_t *ids[4], *tg[4];
    int n_ids[4], n_tg[4], *pos[4];
    double ref_lp[4][8];
    for (int b = 0; b < B; b++) {
        const cJSON *x = cJSON_GetArrayItem(exs, b);
        ids[b] = json_ids(cJSON_GetObjectItem(x, "ids"), &n_ids[b]);
        tg[b] = json_ids(cJSON_GetObjectItem(x, "targets"), &n_tg[b]);
        int np;
        int32_t *p32 = json_ids(cJSON_GetObjectItem(x, "tgt_pos"), &np);
        cr_assert(np == n_tg[b] && np <= 8);
        pos[b] = malloc((size_t)np * sizeof(int));
        const cJSON *lp = cJSON_GetObjectItem(x, "logprobs");
        for (int k = 0; k < np; k++) {
            pos[b][k] = p32[k];
            ref_lp[b][k] = cJSON_GetArrayItem(lp, k)->valuedouble;
        }
        free(p32);
    }
    /* As training runs it: the soft prompt and the ids all examples start with form one prefix. */
    int lcp = n_ids[0] - 1;
    for (int b = 1; b < B; b++) {
        int k = 0;
        while (k < lcp && k < n_ids[b] - 1 && ids[b][k] == ids[0][k])
            k++;
        lcp = k;
    }
    cr_assert_gt(lcp, 10);
    bwd_seq seqs[5];
    int cpos[4][8];
    double lp[4][8];
    seqs[0] = (bwd_seq){.embeds = soft, .n_embeds = n_soft, .ids = ids[0], .n_ids = lcp};
    for (int b = 0; b < B; b++) {
        for (int k = 0; k < n_tg[b]; k++)
            cpos[b][k] = pos[b][k] - n_soft - lcp;
        seqs[b + 1] = (bwd_seq){.prefix = &seqs[0], .ids = ids[b] + lcp, .n_ids = n_ids[b] - lcp, .n_tgt = n_tg[b],
                                .tgt_pos = cpos[b], .targets = tg[b], .tgt_logprob = lp[b]};
    }
    const int N = n_soft * d;
    /* Engine mode (8-bit activations) is reported too when slow tests are asked for. */
    const char *slow = getenv("PWB_SLOW_TESTS");
    const int modes = slow && slow[0] && strcmp(slow, "0") ? 2 : 1;
    for (int mode = 0; mode < modes; mode++) {
        bwd_opts o = {.exact = mode == 0};
        bwd_ctx *c;
        cr_assert_eq(bwd_ctx_new(&c, m, &o, &e), PWB_OK, "%s", e.msg);
        float *g = calloc((size_t)N, sizeof *g);
        seqs[0].d_embeds = g;
        double loss, cosine, t0 = timer_wall();
        cr_assert_eq(bwd_run(c, seqs, B + 1, 1, &loss, &e), PWB_OK, "%s", e.msg);
        double dt = timer_wall() - t0;
        double rel = rel_diff(g, ref, N, &cosine), maxlp = 0;
        for (int b = 0; b < B; b++)
            for (int k = 0; k < n_tg[b]; k++)
                maxlp = fmax(maxlp, fabs(lp[b][k] - ref_lp[b][k]));
        cr_log_info("SmolLM2 vs torch (%s, %.1f s): loss %.6f vs %.6f, max |dlogp| %.2e, grad cosine %.6f, "
                    "rel L2 %.3e", mode == 0 ? "exact" : "engine mode", dt, loss, ref_loss, maxlp, cosine, rel);
        if (mode == 0) {
            cr_expect_float_eq(loss, ref_loss, 1e-3 * ref_loss);
            cr_expect_lt(maxlp, 1e-2);
            cr_expect_gt(cosine, 0.999);
            cr_expect_lt(rel, 1e-2);
        } else {
            /* 8-bit activations and gradients through 30 layers: close, not equal */
            cr_expect_float_eq(loss, ref_loss, 0.1 * ref_loss);
            cr_expect_gt(cosine, 0.99);
        }
        free(g);
        bwd_ctx_free(c);
    }
    for (int b = 0; b < B; b++) {
        free(ids[b]);
        free(tg[b]);
        free(pos[b]);
    }
    free(soft);
    free(ref);
    model_free(m);
    cJSON_Delete(fx);
}

/* The inference forward (forward.c, KV caches, a prefix in a parent cache) and the training
 * forward (backward.c) compute the same Gemma-style function, sliding window included. */
Test(backward, tiny_gemma_forward_agrees_with_training_forward)
{
    tiny_model *t = tiny_model_new(31, 2, 32, 2, 1, 64, 48, ROPE_HALF, 0);
    tiny_model_gemma(t, 32, 4);
    const model *m = &t->m;
    enum { N = 11, P = 5 };
    int32_t ids[N], tgt[N];
    int pos[N];
    double lp_b[N], lp_f[N];
    pwb_rng r;
    rng_init(&r, 33);
    for (int i = 0; i < N; i++) {
        ids[i] = (int32_t)rng_below(&r, 64);
        tgt[i] = (int32_t)rng_below(&r, 64);
        pos[i] = i;
    }
    pwb_err e;
    bwd_opts o = {.exact = 1};
    bwd_ctx *c;
    cr_assert_eq(bwd_ctx_new(&c, m, &o, &e), PWB_OK, "%s", e.msg);
    bwd_seq s = {.ids = ids, .n_ids = N, .n_tgt = N, .tgt_pos = pos, .targets = tgt, .tgt_logprob = lp_b};
    cr_assert_eq(bwd_run(c, &s, 1, 0, NULL, &e), PWB_OK, "%s", e.msg);
    /* The same tokens given as input vectors (model_embed_token: scaled rows) change nothing. */
    float emb[N * 32];
    double lp_v[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(model_embed_token(m, ids[i], emb + i * 32, &e), PWB_OK);
    bwd_seq sv = {.embeds = emb, .n_embeds = N, .n_tgt = N, .tgt_pos = pos, .targets = tgt, .tgt_logprob = lp_v};
    cr_assert_eq(bwd_run(c, &sv, 1, 0, NULL, &e), PWB_OK, "%s", e.msg);
    for (int i = 0; i < N; i++)
        cr_expect(fabs(lp_b[i] - lp_v[i]) < 1e-6, "position %d: ids %.6f vs vectors %.6f", i, lp_b[i], lp_v[i]);
    bwd_ctx_free(c);

    fwd_ctx *f;
    cr_assert_eq(fwd_ctx_new(&f, m, 0, &e), PWB_OK, "%s", e.msg);
    fwd_ctx_set_exact(f, 1);
    kv_cache *root, *leaf;
    cr_assert_eq(kv_cache_new(&root, m, NULL, 0, 0, &e), PWB_OK);
    fwd_seq a = {.kv = root, .ids = ids, .n_ids = P, .n_out = P, .targets = tgt, .logprobs = lp_f};
    cr_assert_eq(forward_batch(f, &a, 1, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(kv_cache_new(&leaf, m, root, P, 0, &e), PWB_OK);
    fwd_seq b = {.kv = leaf, .ids = ids + P, .n_ids = N - P, .n_out = N - P, .targets = tgt + P, .logprobs = lp_f + P};
    cr_assert_eq(forward_batch(f, &b, 1, &e), PWB_OK, "%s", e.msg);
    for (int i = 0; i < N; i++)
        cr_expect(fabs(lp_b[i] - lp_f[i]) < 1e-4, "position %d: training %.6f vs inference %.6f", i, lp_b[i], lp_f[i]);
    kv_cache_free(leaf);
    kv_cache_free(root);
    fwd_ctx_free(f);
    tiny_model_free(t);
}

/* ---- Gemma 3's operations against PyTorch autograd (tests/reference/torch_tiny_gemma.py) ----- */

typedef struct fx_model {
    model m;
    model_layer layers[4];
    float *data;
    const cJSON *tensors;
    int n_floats;
} fx_model;

/* The fixture's tensor `name`, checked to hold rows x cols floats (rows 1 for a vector). */
static float *fx_tensor(fx_model *f, const char *name, int rows, int cols)
{
    const cJSON *t;
    cJSON_ArrayForEach(t, f->tensors)
    {
        if (strcmp(json_str(t, "name", ""), name) != 0)
            continue;
        const cJSON *sh = cJSON_GetObjectItem(t, "shape");
        int n = 1;
        for (int i = 0; i < cJSON_GetArraySize(sh); i++)
            n *= cJSON_GetArrayItem(sh, i)->valueint;
        const int off = json_int(t, "offset", -1);
        cr_assert(n == rows * cols && off >= 0 && off + n <= f->n_floats, "%s: shape or offset", name);
        return f->data + off;
    }
    cr_assert_fail("fixture has no tensor %s", name);
    return NULL;
}

/* A weight matrix from the fixture's tensor `name`; label names it in messages. */
static pwb_tensor fx_weight(fx_model *f, const char *name, const char *label, int rows, int cols)
{
    pwb_tensor x = {label, DT_F32, 2, {cols, rows, 1, 1}, fx_tensor(f, name, rows, cols),
                    (size_t)rows * cols * sizeof(float)};
    return x;
}

Test(backward, tiny_gemma_matches_torch_autograd)
{
    char fdir[4096], jpath[4200], dpath[4200];
    snprintf(fdir, sizeof fdir, "%.4000s/tests/fixtures/grad", t_root());
    snprintf(jpath, sizeof jpath, "%s/tiny_gemma.json", fdir);
    pwb_err e;
    cJSON *fx = json_parse_file(jpath, 1 << 20, &e);
    cr_assert_not_null(fx, "%s", e.msg);
    const cJSON *cfg = cJSON_GetObjectItem(fx, "config");
    fx_model *f = calloc(1, sizeof *f);
    f->n_floats = json_int(fx, "n_floats", 0);
    snprintf(dpath, sizeof dpath, "%s/%s", fdir, json_str(fx, "data_file", ""));
    f->data = read_f32(dpath, (size_t)f->n_floats);
    f->tensors = cJSON_GetObjectItem(fx, "tensors");
    model_hparams *hp = &f->m.hp;
    snprintf(hp->arch, sizeof hp->arch, "gemma3");
    hp->n_layer = json_int(cfg, "n_layer", 0);
    hp->n_embd = json_int(cfg, "hidden", 0);
    hp->n_head = json_int(cfg, "n_head", 0);
    hp->n_head_kv = json_int(cfg, "n_head_kv", 0);
    hp->head_dim = hp->n_rot = json_int(cfg, "head_dim", 0);
    hp->n_ff = json_int(cfg, "n_ff", 0);
    hp->n_vocab = json_int(cfg, "n_vocab", 0);
    hp->n_ctx = 64;
    hp->norm_eps = (float)json_num(cfg, "norm_eps", 0);
    hp->rope_base = (float)json_num(cfg, "rope_base", 0);
    hp->rope_base_swa = (float)json_num(cfg, "rope_base_swa", 0);
    hp->rope_layout = ROPE_HALF;
    hp->act = ACT_GELU_TANH;
    hp->embd_scale = sqrtf((float)hp->n_embd);
    hp->n_swa = json_int(cfg, "window", 0);
    hp->final_softcap = (float)json_num(cfg, "final_softcap", 0);
    cr_assert(hp->n_layer >= 1 && hp->n_layer <= 4 && hp->n_embd > 0 && hp->n_swa > 0);
    const int d = hp->n_embd, hd = hp->head_dim, ff = hp->n_ff, V = hp->n_vocab;
    const int qd = hp->n_head * hd, kd = hp->n_head_kv * hd;
    f->m.tok_embd = fx_weight(f, "token_embd", "token_embd", V, d);
    f->m.output = fx_weight(f, "output", "output", V, d);
    f->m.output_norm = fx_tensor(f, "output_norm", 1, d);
    const cJSON *swa = cJSON_GetObjectItem(cfg, "swa_layers");
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &f->layers[l];
        char n[64];
#define FX_NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", l, s), n)
        L->attn_norm = fx_tensor(f, FX_NAME("attn_norm"), 1, d);
        L->ffn_norm = fx_tensor(f, FX_NAME("ffn_norm"), 1, d);
        L->q_norm = fx_tensor(f, FX_NAME("attn_q_norm"), 1, hd);
        L->k_norm = fx_tensor(f, FX_NAME("attn_k_norm"), 1, hd);
        L->post_attn_norm = fx_tensor(f, FX_NAME("post_attention_norm"), 1, d);
        L->post_ffn_norm = fx_tensor(f, FX_NAME("post_ffw_norm"), 1, d);
        L->wq = fx_weight(f, FX_NAME("attn_q"), "wq", qd, d);
        L->wk = fx_weight(f, FX_NAME("attn_k"), "wk", kd, d);
        L->wv = fx_weight(f, FX_NAME("attn_v"), "wv", kd, d);
        L->wo = fx_weight(f, FX_NAME("attn_output"), "wo", d, qd);
        L->w_gate = fx_weight(f, FX_NAME("ffn_gate"), "w_gate", ff, d);
        L->w_up = fx_weight(f, FX_NAME("ffn_up"), "w_up", ff, d);
        L->w_down = fx_weight(f, FX_NAME("ffn_down"), "w_down", d, ff);
#undef FX_NAME
        for (int i = 0; i < cJSON_GetArraySize(swa); i++)
            L->swa |= cJSON_GetArrayItem(swa, i)->valueint == l;
    }
    f->m.layers = f->layers;
    const int n_soft = json_int(cfg, "n_soft", 0), N = n_soft * d;
    const float *soft = fx_tensor(f, "soft_prompt", n_soft, d), *ref = fx_tensor(f, "grad", n_soft, d);
    const double ref_loss = json_num(fx, "loss", NAN);

    const cJSON *exs = cJSON_GetObjectItem(fx, "examples");
    const int B = cJSON_GetArraySize(exs);
    cr_assert(B == 2);
    int32_t *ids[2], *tg[2];
    int n_ids[2], n_tg[2], pos[2][2];
    double ref_lp[2][2], lp[2][2];
    for (int b = 0; b < B; b++) {
        const cJSON *x = cJSON_GetArrayItem(exs, b);
        ids[b] = json_ids(cJSON_GetObjectItem(x, "ids"), &n_ids[b]);
        tg[b] = json_ids(cJSON_GetObjectItem(x, "targets"), &n_tg[b]);
        cr_assert(n_tg[b] == 2 && n_soft + n_ids[b] > hp->n_swa + 2, "the window must cut the sequence");
        for (int k = 0; k < 2; k++) {
            pos[b][k] = cJSON_GetArrayItem(cJSON_GetObjectItem(x, "tgt_pos"), k)->valueint;
            ref_lp[b][k] = cJSON_GetArrayItem(cJSON_GetObjectItem(x, "logprobs"), k)->valuedouble;
        }
    }
    /* Two forms of the same batch: each sequence whole, and the soft prompt as a shared prefix. */
    for (int form = 0; form < 2; form++) {
        bwd_opts o = {.exact = 1};
        bwd_ctx *c;
        cr_assert_eq(bwd_ctx_new(&c, &f->m, &o, &e), PWB_OK, "%s", e.msg);
        float *g = calloc((size_t)N, sizeof *g);
        bwd_seq seqs[3];
        int cpos[2][2];
        int ns = 0;
        if (form == 1)
            seqs[ns++] = (bwd_seq){.embeds = soft, .n_embeds = n_soft, .d_embeds = g};
        for (int b = 0; b < B; b++) {
            for (int k = 0; k < 2; k++)
                cpos[b][k] = pos[b][k] - (form == 1 ? n_soft : 0);
            seqs[ns++] = form == 1 ? (bwd_seq){.prefix = &seqs[0], .ids = ids[b], .n_ids = n_ids[b], .n_tgt = 2,
                                               .tgt_pos = cpos[b], .targets = tg[b], .tgt_logprob = lp[b]}
                                   : (bwd_seq){.embeds = soft, .n_embeds = n_soft, .ids = ids[b], .n_ids = n_ids[b],
                                               .n_tgt = 2, .tgt_pos = cpos[b], .targets = tg[b],
                                               .tgt_logprob = lp[b], .d_embeds = g};
        }
        double loss, cosine;
        cr_assert_eq(bwd_run(c, seqs, ns, 1, &loss, &e), PWB_OK, "%s", e.msg);
        double rel = rel_diff(g, ref, N, &cosine), maxlp = 0;
        for (int b = 0; b < B; b++)
            for (int k = 0; k < 2; k++)
                maxlp = fmax(maxlp, fabs(lp[b][k] - ref_lp[b][k]));
        cr_log_info("tiny Gemma vs torch (%s): loss %.8f vs %.8f, max |dlogp| %.2e, grad cosine %.8f, rel L2 %.3e",
                    form ? "shared prefix" : "whole sequences", loss, ref_loss, maxlp, cosine, rel);
        /* F32 against float64 over two layers: agreement to a few units in the 6th digit */
        cr_expect(fabs(loss - ref_loss) < 1e-5 * ref_loss, "loss %.8f vs torch %.8f", loss, ref_loss);
        cr_expect_lt(maxlp, 1e-4);
        cr_expect_lt(rel, 1e-4, "gradient rel L2 %.3e vs torch", rel);
        free(g);
        bwd_ctx_free(c);
    }
    for (int b = 0; b < B; b++) {
        free(ids[b]);
        free(tg[b]);
    }
    free(f->data);
    free(f);
    cJSON_Delete(fx);
}
