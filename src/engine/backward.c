/* Training forward (activations kept in F32) and backward to the input embeddings.
 *
 * Notation per layer l, over the T stacked tokens of the batch:
 *   x_l      residual stream entering the layer        (kept: X(l))
 *   a        = rmsnorm(x_l) * attn_norm
 *   q, k, v  = a Wq^T (+bq), a Wk^T (+bk), a Wv^T (+bv); q, k rotated (RoPE)   (kept: Q, K, V)
 *   o        = softmax(q k^T / sqrt(hd), causal, per sequence) v
 *   xm       = x_l + o Wo^T                             (kept: Xm)
 *   f        = rmsnorm(xm) * ffn_norm
 *   g, u     = f Wg^T, f Wu^T                           (kept: G, U)
 *   x_{l+1}  = xm + (silu(g) * u) Wd^T
 * and at the top, for scored rows only: logits = (rmsnorm(x_L) * out_norm) Wout^T.
 * The backward walks this in reverse. The products with W become kernel_matmul over transposed
 * Q8_0 copies of the weights (or kernel_matmul_t, dx = dy W, in exact mode); the attention
 * probabilities are recomputed from the kept q and k rather than stored. */
#include "engine/backward.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"
#include "engine/kernels.h"
#include "engine/quant.h"

#define BWD_LOGIT_ROWS 32          /* scored rows per output-head product: bounds the logits */
#define BWD_PAR_MIN (1 << 15)      /* below this much elementwise work a loop stays serial */
#define BWD_MAX_TOKENS (1 << 20)

/* Transposed weights of one layer, Q8_0: the backward's products as plain kernel_matmul calls.
 * q, k and v share one matrix ([d][q_dim + 2 kv_dim]) as do gate and up ([d][2 ff]), so their
 * input gradients come out of one product, already summed. */
typedef struct layer_t {
    pwb_tensor qkv, o, gu, down;
} layer_t;

struct bwd_ctx {
    const model *m;
    bwd_opts o;
    int d, q_dim, kv_dim, ff, n_layer, wide;
    layer_t *wt;                    /* NULL: kernel_matmul_t */
    void *wt_mem;
    size_t wt_bytes;
    /* per run, grown as needed */
    int cap_T, cap_keep;
    float *act;                     /* kept activations (see act_of) */
    size_t act_floats;
    float *xn, *att, *h;            /* forward scratch [T][wide], [T][q_dim], [T][ff] */
    float *dx, *dxn, *datt;         /* backward scratch [T][d], [T][wide], [T][q_dim] */
    float *dqkv, *dgu;              /* [T][q_dim + 2 kv_dim], [T][2 ff] */
    float *dq, *dk, *dv, *dg, *du;  /* views into dqkv / dgu */
    int ldq, ldk, ldg;              /* their row strides */
    float *cs;                      /* [T][n_rot]: cos, sin pairs */
    int *t_seq, *t_pos;             /* per token: its sequence, its absolute position */
    int *s_base, *s_len, *s_pidx, *s_plen; /* per sequence: first row, own length, prefix index, length */
    int cap_seqs;
    float *pd;                      /* prefix gradient partials [n_seqs][max_plen][2 kv_dim] */
    size_t cap_pd;
    float *scores;                  /* [threads][2 * cap_len] */
    size_t cap_len;
    int cap_threads;
    float *lg, *dlg, *xf, *dxf;     /* head: [BWD_LOGIT_ROWS][V], [.][V], [.][d], [.][d] */
    double *inv_freq;
    size_t bytes;
};

/* ---- small numerics ------------------------------------------------------------------------ */

static void rope_fwd(float *x, const float *cs, int n_rot, int layout)
{
    const int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        const float c = cs[2 * i], s = cs[2 * i + 1];
        float *pa = layout == ROPE_ADJACENT ? &x[2 * i] : &x[i];
        float *pb = layout == ROPE_ADJACENT ? &x[2 * i + 1] : &x[i + half];
        const float a = *pa, b = *pb;
        *pa = a * c - b * s;
        *pb = a * s + b * c;
    }
}

/* The transpose of the rotation: rotate by the negative angle. */
static void rope_bwd(float *dx, const float *cs, int n_rot, int layout)
{
    const int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        const float c = cs[2 * i], s = cs[2 * i + 1];
        float *pa = layout == ROPE_ADJACENT ? &dx[2 * i] : &dx[i];
        float *pb = layout == ROPE_ADJACENT ? &dx[2 * i + 1] : &dx[i + half];
        const float a = *pa, b = *pb;
        *pa = a * c + b * s;
        *pb = -a * s + b * c;
    }
}

/* dx += d/dx [rmsnorm(x) * w] applied to dy:
 * dx_k += r w_k dy_k - (r^3 / n) x_k sum_i w_i dy_i x_i,  r = 1 / sqrt(mean(x^2) + eps). */
static void rmsnorm_bwd(float *dx, const float *x, const float *w, const float *dy, int n, float eps)
{
    double ss = 0.0, dot = 0.0;
    for (int i = 0; i < n; i++) {
        ss += (double)x[i] * x[i];
        dot += (double)w[i] * dy[i] * x[i];
    }
    const double r = 1.0 / sqrt(ss / n + (double)eps);
    const float a = (float)r, b = (float)(r * r * r * dot / n);
    for (int i = 0; i < n; i++)
        dx[i] += a * w[i] * dy[i] - b * x[i];
}

static void rmsnorm_rows(float *out, const float *x, const float *w, int rows, int n, float eps)
{
#pragma omp parallel for schedule(static) if ((int64_t)rows * n >= BWD_PAR_MIN)
    for (int r = 0; r < rows; r++)
        fwd_rmsnorm(out + (size_t)r * n, x + (size_t)r * n, w, n, eps);
}

static void rmsnorm_bwd_rows(float *dx, const float *x, const float *w, const float *dy, int rows, int n,
                             float eps)
{
#pragma omp parallel for schedule(static) if ((int64_t)rows * n >= BWD_PAR_MIN)
    for (int r = 0; r < rows; r++)
        rmsnorm_bwd(dx + (size_t)r * n, x + (size_t)r * n, w, dy + (size_t)r * n, n, eps);
}

static void add_bias(float *y, const float *b, int rows, int dim)
{
    if (!b)
        return;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < dim; i++)
            y[(size_t)r * dim + i] += b[i];
}

static int64_t rows_of(const pwb_tensor *W)
{
    return W->ne[1] * W->ne[2] * W->ne[3];
}

#define CHECK(x)                                                                                              \
    do {                                                                                                      \
        int rc_ = (x);                                                                                        \
        if (rc_ != PWB_OK)                                                                                    \
            return rc_;                                                                                       \
    } while (0)

/* ---- weight products ----------------------------------------------------------------------- */

/* y[B][M] = x[B][K] W^T. */
static int mm(bwd_ctx *c, const pwb_tensor *W, const float *x, int B, float *y, pwb_err *e)
{
    if (!c->o.exact)
        return kernel_matmul(W, x, B, y, e);
    const int64_t K = W->ne[0], M = rows_of(W);
    return kernel_matmul_exact(W, x, K > 0 ? (size_t)K : 0, B, y, M > 0 ? (size_t)M : 0, e);
}

/* dx[B][K] (+)= dy[B][M] W with dy rows ldy floats apart, in tiles of rows so each weight row's
 * update stays in cache. */
static int mmt(bwd_ctx *c, const pwb_tensor *W, const float *dy, size_t ldy, int B, float *dx, int acc,
               pwb_err *e)
{
    const int64_t K = W->ne[0], M = rows_of(W);
    const int tile = c->o.tile_rows > 0 ? c->o.tile_rows : 128;
    if (ldy != (size_t)M)
        return err_set(e, PWB_EINVAL, "backward: strided gradient for '%s'", W->name ? W->name : "?");
    for (int r0 = 0; r0 < B; r0 += tile) {
        const int nb = B - r0 < tile ? B - r0 : tile;
        CHECK(kernel_matmul_t(W, dy + (size_t)r0 * M, nb, dx + (size_t)r0 * K, acc, e));
    }
    return PWB_OK;
}

/* ---- transposed weights -------------------------------------------------------------------- */

static int dequant_all(const pwb_tensor *W, float *dst)
{
    const int64_t K = W->ne[0], M = rows_of(W);
    const size_t rb = quant_row_size(W->type, K);
    for (int64_t m = 0; m < M; m++)
        if (dequant_row(W->type, (const unsigned char *)W->data + (size_t)m * rb, dst + (size_t)m * K, K) != PWB_OK)
            return -1;
    return 0;
}

/* out: K rows of Q8_0, row k = column k of each W in turn (all W are [*][K]). */
static int transpose_q8(const pwb_tensor *const *W, int nw, int64_t K, float *tmp, unsigned char *out,
                        pwb_tensor *t, const char *name)
{
    int64_t M = 0, off[4];
    for (int i = 0; i < nw; i++) {
        if (W[i]->ne[0] != K || dequant_all(W[i], tmp + (size_t)M * K))
            return -1;
        off[i] = M;
        M += rows_of(W[i]);
    }
    const size_t rb = quant_row_size(DT_Q8_0, M);
    int bad = 0;
#pragma omp parallel reduction(| : bad)
    {
        float *row = malloc((size_t)M * sizeof *row);
        bad |= !row;
#pragma omp for schedule(static)
        for (int64_t k = 0; k < K; k++) {
            if (!row)
                continue;
            for (int i = 0; i < nw; i++)
                for (int64_t m = 0; m < rows_of(W[i]); m++)
                    row[off[i] + m] = tmp[(size_t)(off[i] + m) * K + k];
            quantize_row_q8_0(row, (block_q8_0 *)(void *)(out + (size_t)k * rb), M);
        }
        free(row);
    }
    *t = (pwb_tensor){name, DT_Q8_0, 2, {M, K, 1, 1}, out, rb * (size_t)K};
    return bad ? -1 : 0;
}

/* Q8_0 copies of every layer's weights, transposed (only when every product's output width is a
 * multiple of the block; quantized or float originals alike). */
static int build_transposed(bwd_ctx *c, pwb_err *e)
{
    const model *m = c->m;
    const int64_t d = c->d, q = c->q_dim, kv = c->kv_dim, ff = c->ff;
    if (d % QK8_0 || (q + 2 * kv) % QK8_0 || (2 * ff) % QK8_0)
        return PWB_OK;
    for (int l = 0; l < m->hp.n_layer; l++) {
        const model_layer *L = &m->layers[l];
        const pwb_tensor *all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++)
            if (!quant_supported(all[i]->type) || all[i]->n_dims > 2)
                return PWB_OK;
        if (L->wq.ne[0] != d || rows_of(&L->wq) != q || rows_of(&L->wk) != kv || rows_of(&L->wv) != kv ||
            L->wo.ne[0] != q || rows_of(&L->wo) != d || rows_of(&L->w_gate) != ff || rows_of(&L->w_up) != ff ||
            L->w_down.ne[0] != ff || rows_of(&L->w_down) != d)
            return PWB_OK;
    }
    const size_t r_qkv = quant_row_size(DT_Q8_0, q + 2 * kv) * (size_t)d, r_o = quant_row_size(DT_Q8_0, d) * (size_t)q;
    const size_t r_gu = quant_row_size(DT_Q8_0, 2 * ff) * (size_t)d, r_dn = quant_row_size(DT_Q8_0, d) * (size_t)ff;
    const size_t per_layer = r_qkv + r_o + r_gu + r_dn;
    c->wt = calloc((size_t)m->hp.n_layer, sizeof *c->wt);
    c->wt_mem = malloc(per_layer * (size_t)m->hp.n_layer);
    float *tmp = malloc((size_t)(2 * ff * d > (q + 2 * kv) * d ? 2 * ff * d : (q + 2 * kv) * d) * sizeof(float));
    int bad = !c->wt || !c->wt_mem || !tmp;
    for (int l = 0; !bad && l < m->hp.n_layer; l++) {
        const model_layer *L = &m->layers[l];
        unsigned char *base = (unsigned char *)c->wt_mem + per_layer * (size_t)l;
        layer_t *T = &c->wt[l];
        const pwb_tensor *qkv[] = {&L->wq, &L->wk, &L->wv}, *o[] = {&L->wo}, *gu[] = {&L->w_gate, &L->w_up},
                         *dn[] = {&L->w_down};
        bad = transpose_q8(qkv, 3, d, tmp, base, &T->qkv, "qkv^T") ||
              transpose_q8(o, 1, q, tmp, base + r_qkv, &T->o, "wo^T") ||
              transpose_q8(gu, 2, d, tmp, base + r_qkv + r_o, &T->gu, "gate_up^T") ||
              transpose_q8(dn, 1, ff, tmp, base + r_qkv + r_o + r_gu, &T->down, "down^T");
    }
    free(tmp);
    if (bad) {
        free(c->wt);
        free(c->wt_mem);
        c->wt = NULL;
        c->wt_mem = NULL;
        return err_set(e, PWB_ENOMEM, "backward: cannot build the transposed weights");
    }
    c->wt_bytes = per_layer * (size_t)m->hp.n_layer;
    return PWB_OK;
}

/* ---- context ------------------------------------------------------------------------------- */

static void free_run_buffers(bwd_ctx *c)
{
    float **f[] = {&c->act, &c->xn, &c->att, &c->h, &c->dx, &c->dxn, &c->datt, &c->dqkv, &c->dgu, &c->cs};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        free(*f[i]);
        *f[i] = NULL;
    }
    free(c->t_seq);
    free(c->t_pos);
    c->t_seq = c->t_pos = NULL;
    c->cap_T = 0;
    c->cap_keep = 0;
    c->act_floats = 0;
}

void bwd_ctx_free(bwd_ctx *c)
{
    if (!c)
        return;
    free_run_buffers(c);
    free(c->s_base);
    free(c->s_len);
    free(c->s_pidx);
    free(c->s_plen);
    free(c->pd);
    free(c->scores);
    free(c->lg);
    free(c->dlg);
    free(c->xf);
    free(c->dxf);
    free(c->inv_freq);
    free(c->wt);
    free(c->wt_mem);
    free(c);
}

int bwd_ctx_new(bwd_ctx **out, const model *m, const bwd_opts *o, pwb_err *e)
{
    *out = NULL;
    const model_hparams *hp = &m->hp;
    if (hp->n_layer <= 0 || hp->n_embd <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 ||
        hp->n_head % hp->n_head_kv || hp->head_dim <= 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2 ||
        hp->n_ff <= 0 || hp->n_vocab <= 0 || !m->layers)
        return err_set(e, PWB_EINVAL, "backward: unsupported model shape");
    bwd_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(e, PWB_ENOMEM, "out of memory");
    c->m = m;
    if (o)
        c->o = *o;
    c->d = hp->n_embd;
    c->q_dim = hp->n_head * hp->head_dim;
    c->kv_dim = hp->n_head_kv * hp->head_dim;
    c->ff = hp->n_ff;
    c->n_layer = hp->n_layer;
    c->wide = c->q_dim > c->d ? c->q_dim : c->d;
    const size_t V = (size_t)hp->n_vocab;
    c->lg = malloc(BWD_LOGIT_ROWS * V * sizeof(float));
    c->dlg = malloc(BWD_LOGIT_ROWS * V * sizeof(float));
    c->xf = malloc((size_t)BWD_LOGIT_ROWS * (size_t)c->d * sizeof(float));
    c->dxf = malloc((size_t)BWD_LOGIT_ROWS * (size_t)c->d * sizeof(float));
    c->inv_freq = malloc((size_t)(hp->n_rot / 2 + 1) * sizeof(double));
    if (!c->lg || !c->dlg || !c->xf || !c->dxf || !c->inv_freq) {
        bwd_ctx_free(c);
        return err_set(e, PWB_ENOMEM, "out of memory (backward context)");
    }
    for (int i = 0; i < hp->n_rot / 2; i++)
        c->inv_freq[i] = pow((double)hp->rope_base, -2.0 * i / (double)hp->n_rot);
    if (!c->o.exact && !c->o.no_transposed) {
        int rc = build_transposed(c, e);
        if (rc != PWB_OK) {
            bwd_ctx_free(c);
            return rc;
        }
    }
    *out = c;
    return PWB_OK;
}

size_t bwd_ctx_bytes(const bwd_ctx *c)
{
    return c ? c->bytes + c->wt_bytes : 0;
}

static size_t layer_floats(const bwd_ctx *c)
{
    /* Xm, Q, K, V, G, U per token */
    return (size_t)c->d + (size_t)c->q_dim + 2 * (size_t)c->kv_dim + 2 * (size_t)c->ff;
}

static void *grow(void *p, size_t bytes, int *ok)
{
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) {
        *ok = 0;
        return p;
    }
    return q;
}

static int ensure(bwd_ctx *c, int T, int keep, int n_seqs, size_t max_len, size_t max_plen, pwb_err *e)
{
    if (T > c->cap_T || keep > c->cap_keep) {
        free_run_buffers(c);
        const size_t t = (size_t)T;
        const size_t nl = keep ? (size_t)c->n_layer : 1;
        /* X(0..L) then per layer [Xm Q K V G U] */
        c->act_floats = (nl + 1) * t * (size_t)c->d + nl * t * layer_floats(c);
        c->act = malloc(c->act_floats * sizeof(float));
        c->xn = malloc(t * (size_t)c->wide * sizeof(float));
        c->att = malloc(t * (size_t)c->q_dim * sizeof(float));
        c->h = malloc(t * (size_t)c->ff * sizeof(float));
        c->cs = malloc(t * (size_t)(c->m->hp.n_rot + 1) * sizeof(float));
        c->t_seq = malloc(t * sizeof(int));
        c->t_pos = malloc(t * sizeof(int));
        int ok = c->act && c->xn && c->att && c->h && c->cs && c->t_seq && c->t_pos;
        if (ok && keep) {
            c->dx = malloc(t * (size_t)c->d * sizeof(float));
            c->dxn = malloc(t * (size_t)c->wide * sizeof(float));
            c->datt = malloc(t * (size_t)c->q_dim * sizeof(float));
            c->dqkv = malloc(t * (size_t)(c->q_dim + 2 * c->kv_dim) * sizeof(float));
            c->dgu = malloc(t * 2 * (size_t)c->ff * sizeof(float));
            ok = c->dx && c->dxn && c->datt && c->dqkv && c->dgu;
        }
        if (!ok) {
            free_run_buffers(c);
            return err_set(e, PWB_ENOMEM, "out of memory (training activations for %d tokens)", T);
        }
        c->cap_T = T;
        c->cap_keep = keep;
        size_t scratch = t * ((size_t)c->wide + c->q_dim + c->ff + c->m->hp.n_rot + 1);
        if (keep)
            scratch += t * ((size_t)c->d + c->wide + 2 * (size_t)c->q_dim + 2 * (size_t)c->kv_dim + 2 * c->ff);
        c->bytes = (c->act_floats + scratch) * sizeof(float);
    }
    if (keep) {
        /* One buffer each for [dq dk dv] and [dg du]: with transposed weights a row of it is the
         * input of one product; for kernel_matmul_t the parts are laid out one after the other. */
        const size_t t = (size_t)T, qkv = (size_t)(c->q_dim + 2 * c->kv_dim);
        if (c->wt) {
            c->dq = c->dqkv;
            c->dk = c->dqkv + c->q_dim;
            c->dv = c->dk + c->kv_dim;
            c->ldq = c->ldk = (int)qkv;
            c->dg = c->dgu;
            c->du = c->dgu + c->ff;
            c->ldg = 2 * c->ff;
        } else {
            c->dq = c->dqkv;
            c->dk = c->dqkv + t * (size_t)c->q_dim;
            c->dv = c->dk + t * (size_t)c->kv_dim;
            c->ldq = c->q_dim;
            c->ldk = c->kv_dim;
            c->dg = c->dgu;
            c->du = c->dgu + t * (size_t)c->ff;
            c->ldg = c->ff;
        }
    }
    int ok = 1;
    if (n_seqs > c->cap_seqs) {
        c->s_base = grow(c->s_base, (size_t)n_seqs * sizeof(int), &ok);
        c->s_len = grow(c->s_len, (size_t)n_seqs * sizeof(int), &ok);
        c->s_pidx = grow(c->s_pidx, (size_t)n_seqs * sizeof(int), &ok);
        c->s_plen = grow(c->s_plen, (size_t)n_seqs * sizeof(int), &ok);
        if (!ok)
            return err_set(e, PWB_ENOMEM, "out of memory");
        c->cap_seqs = n_seqs;
    }
    const size_t pd = keep ? (size_t)n_seqs * max_plen * 2 * (size_t)c->kv_dim : 0;
    if (pd > c->cap_pd) {
        c->pd = grow(c->pd, pd * sizeof(float), &ok);
        if (!ok)
            return err_set(e, PWB_ENOMEM, "out of memory");
        c->cap_pd = pd;
    }
    const int nth = omp_get_max_threads();
    if (max_len > c->cap_len || nth > c->cap_threads) {
        free(c->scores);
        c->scores = malloc((size_t)nth * 2 * max_len * sizeof(float));
        if (!c->scores) {
            c->cap_len = 0;
            c->cap_threads = 0;
            return err_set(e, PWB_ENOMEM, "out of memory");
        }
        c->cap_len = max_len;
        c->cap_threads = nth;
    }
    return PWB_OK;
}

/* Kept activations of layer l (per-layer copies only when keep; else one shared set). */
typedef struct layer_act {
    float *x_in, *xm, *x_out, *q, *k, *v, *g, *u;
} layer_act;

static layer_act act_of(const bwd_ctx *c, int l, int T, int keep)
{
    layer_act a;
    const size_t t = (size_t)T, d = (size_t)c->d;
    const int nl = keep ? c->n_layer : 1;
    float *X = c->act;
    float *base = c->act + (size_t)(nl + 1) * t * d + (size_t)(keep ? l : 0) * t * layer_floats(c);
    a.x_in = keep ? X + (size_t)l * t * d : X;
    a.x_out = keep ? X + (size_t)(l + 1) * t * d : X;
    a.xm = base;
    a.q = a.xm + t * d;
    a.k = a.q + t * (size_t)c->q_dim;
    a.v = a.k + t * (size_t)c->kv_dim;
    a.g = a.v + t * (size_t)c->kv_dim;
    a.u = a.g + t * (size_t)c->ff;
    return a;
}

/* ---- attention ----------------------------------------------------------------------------- */

/* The keys a query of sequence s sees come in two runs of rows: its prefix's [0, plen) and its own
 * [0, j]. Position p < plen is row pbase + p, else row base + p - plen. */
static inline size_t key_row(const bwd_ctx *c, int s, int p)
{
    const int plen = c->s_plen[s];
    return p < plen ? (size_t)c->s_base[c->s_pidx[s]] + (size_t)p : (size_t)c->s_base[s] + (size_t)(p - plen);
}

/* o = softmax(q k^T * scale) v per sequence, causal. Parallel over (token, head). */
static void attn_fwd(bwd_ctx *c, const layer_act *a, int T)
{
    const model_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, n_head = hp->n_head, group = hp->n_head / hp->n_head_kv;
    const int q_dim = c->q_dim, kv_dim = c->kv_dim;
    const float scale = 1.0f / sqrtf((float)hd);
    int64_t work = 0;
    for (int t = 0; t < T; t++)
        work += (int64_t)(c->t_pos[t] + 1) * q_dim;
#pragma omp parallel for schedule(dynamic, 4) if (work >= BWD_PAR_MIN)
    for (int64_t task = 0; task < (int64_t)T * n_head; task++) {
        const int t = (int)(task / n_head), h = (int)(task % n_head);
        const int s = c->t_seq[t], npos = c->t_pos[t] + 1, kvh = h / group;
        const float *qv = a->q + (size_t)t * q_dim + (size_t)h * hd;
        float *sc = c->scores + (size_t)omp_get_thread_num() * 2 * c->cap_len;
        float mx = -INFINITY;
        for (int p = 0; p < npos; p++) {
            sc[p] = kernel_dot_f32(qv, a->k + key_row(c, s, p) * kv_dim + (size_t)kvh * hd, hd) * scale;
            if (sc[p] > mx)
                mx = sc[p];
        }
        float sum = 0.0f;
        for (int p = 0; p < npos; p++) {
            sc[p] = expf(sc[p] - mx);
            sum += sc[p];
        }
        const float inv = 1.0f / sum;
        float *o = c->att + (size_t)t * q_dim + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof *o);
        for (int p = 0; p < npos; p++)
            kernel_axpy_f32(o, sc[p] * inv, a->v + key_row(c, s, p) * kv_dim + (size_t)kvh * hd, hd);
    }
}

/* From do (c->datt) to dq, dk, dv (overwritten). A task per (sequence, kv head) owns that head's
 * dk/dv rows and its query heads' dq rows; what its queries send to a prefix's keys and values goes
 * to its own slice of c->pd and is summed into the prefix's rows afterwards. */
static void attn_bwd(bwd_ctx *c, const layer_act *a, int n_seqs, size_t max_plen)
{
    const model_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, n_kv = hp->n_head_kv, group = hp->n_head / hp->n_head_kv;
    const int q_dim = c->q_dim, kv_dim = c->kv_dim, ldq = c->ldq, ldk = c->ldk;
    const float scale = 1.0f / sqrtf((float)hd);
    int64_t work = 0;
    for (int s = 0; s < n_seqs; s++)
        work += (int64_t)c->s_len[s] * (c->s_len[s] + c->s_plen[s]) * q_dim;
#pragma omp parallel for schedule(dynamic, 1) if (work >= BWD_PAR_MIN)
    for (int64_t task = 0; task < (int64_t)n_seqs * n_kv; task++) {
        const int s = (int)(task / n_kv), kvh = (int)(task % n_kv);
        const int base = c->s_base[s], len = c->s_len[s], plen = c->s_plen[s];
        const size_t pb = plen ? (size_t)c->s_base[c->s_pidx[s]] : 0;
        /* this task's share of its prefix's key/value gradients: [plen][2 kv_dim] */
        float *pdk = plen ? c->pd + (size_t)s * max_plen * 2 * kv_dim + (size_t)kvh * hd : NULL;
        float *pdv = plen ? pdk + kv_dim : NULL;
        for (int p = 0; p < len; p++) {
            memset(c->dk + (size_t)(base + p) * ldk + (size_t)kvh * hd, 0, (size_t)hd * sizeof(float));
            memset(c->dv + (size_t)(base + p) * ldk + (size_t)kvh * hd, 0, (size_t)hd * sizeof(float));
        }
        for (int p = 0; p < plen; p++) {
            memset(pdk + (size_t)p * 2 * kv_dim, 0, (size_t)hd * sizeof(float));
            memset(pdv + (size_t)p * 2 * kv_dim, 0, (size_t)hd * sizeof(float));
        }
        float *P = c->scores + (size_t)omp_get_thread_num() * 2 * c->cap_len;
        float *dP = P + c->cap_len;
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            for (int i = 0; i < len; i++) {
                const size_t t = (size_t)(base + i);
                const int npos = plen + i + 1;
                const float *qv = a->q + t * q_dim + (size_t)h * hd;
                const float *dO = c->datt + t * q_dim + (size_t)h * hd;
                float *dq = c->dq + t * ldq + (size_t)h * hd;
                float mx = -INFINITY;
                for (int p = 0; p < npos; p++) {
                    const size_t r = p < plen ? pb + p : (size_t)(base + p - plen);
                    P[p] = kernel_dot_f32(qv, a->k + r * kv_dim + (size_t)kvh * hd, hd) * scale;
                    if (P[p] > mx)
                        mx = P[p];
                }
                float sum = 0.0f;
                for (int p = 0; p < npos; p++) {
                    P[p] = expf(P[p] - mx);
                    sum += P[p];
                }
                const float inv = 1.0f / sum;
                double dsum = 0.0;
                for (int p = 0; p < npos; p++) {
                    const size_t r = p < plen ? pb + p : (size_t)(base + p - plen);
                    P[p] *= inv;
                    dP[p] = kernel_dot_f32(dO, a->v + r * kv_dim + (size_t)kvh * hd, hd);
                    dsum += (double)P[p] * dP[p];
                }
                memset(dq, 0, (size_t)hd * sizeof *dq);
                for (int p = 0; p < npos; p++) {
                    const size_t r = p < plen ? pb + p : (size_t)(base + p - plen);
                    const float ds = P[p] * (dP[p] - (float)dsum) * scale;
                    float *gk, *gv;
                    if (p < plen) {
                        gk = pdk + (size_t)p * 2 * kv_dim;
                        gv = pdv + (size_t)p * 2 * kv_dim;
                    } else {
                        gk = c->dk + (size_t)(base + p - plen) * ldk + (size_t)kvh * hd;
                        gv = c->dv + (size_t)(base + p - plen) * ldk + (size_t)kvh * hd;
                    }
                    kernel_axpy_f32(dq, ds, a->k + r * kv_dim + (size_t)kvh * hd, hd);
                    kernel_axpy_f32(gk, ds, qv, hd);
                    kernel_axpy_f32(gv, P[p], dO, hd);
                }
            }
        }
    }
    /* Children's shares of their prefix's key and value gradients, in sequence order. */
    for (int s = 0; s < n_seqs; s++) {
        const int plen = c->s_plen[s];
        if (!plen)
            continue;
        const size_t pb = (size_t)c->s_base[c->s_pidx[s]];
        const float *src = c->pd + (size_t)s * max_plen * 2 * kv_dim;
        for (int p = 0; p < plen; p++) {
            kernel_axpy_f32(c->dk + (pb + p) * ldk, 1.0f, src + (size_t)p * 2 * kv_dim, kv_dim);
            kernel_axpy_f32(c->dv + (pb + p) * ldk, 1.0f, src + (size_t)p * 2 * kv_dim + kv_dim, kv_dim);
        }
    }
}

/* ---- one run ------------------------------------------------------------------------------- */

static int check_seqs(bwd_ctx *c, const bwd_seq *seqs, int n, int64_t *T, size_t *max_len, size_t *max_plen,
                      pwb_err *e)
{
    const model_hparams *hp = &c->m->hp;
    *T = 0;
    *max_len = 1;
    *max_plen = 0;
    if (n <= 0 || !seqs)
        return err_set(e, PWB_EINVAL, "backward: empty batch");
    for (int i = 0; i < n; i++) {
        const bwd_seq *s = &seqs[i];
        if (s->n_embeds < 0 || s->n_ids < 0 || (s->n_embeds && !s->embeds) || (s->n_ids && !s->ids))
            return err_set(e, PWB_EINVAL, "backward: sequence %d: bad input", i);
        const int64_t own = (int64_t)s->n_embeds + s->n_ids;
        int64_t plen = 0;
        if (s->prefix) {
            if (s->prefix < seqs || s->prefix >= s || s->prefix->prefix)
                return err_set(e, PWB_EINVAL, "backward: sequence %d: its prefix must be an earlier sequence "
                                              "of the batch without a prefix of its own", i);
            plen = (int64_t)s->prefix->n_embeds + s->prefix->n_ids;
        }
        if (own <= 0)
            return err_set(e, PWB_EINVAL, "backward: sequence %d is empty", i);
        if (own + plen > hp->n_ctx)
            return err_set(e, PWB_ERANGE, "backward: sequence %d: %lld positions exceed the context of %d", i,
                           (long long)(own + plen), hp->n_ctx);
        for (int j = 0; j < s->n_ids; j++)
            if (s->ids[j] < 0 || s->ids[j] >= hp->n_vocab)
                return err_set(e, PWB_EINVAL, "backward: sequence %d: token id %d out of range", i, (int)s->ids[j]);
        if (s->n_tgt < 0 || (s->n_tgt && (!s->tgt_pos || !s->targets)))
            return err_set(e, PWB_EINVAL, "backward: sequence %d: bad targets", i);
        for (int j = 0; j < s->n_tgt; j++) {
            if (s->tgt_pos[j] < 0 || s->tgt_pos[j] >= own)
                return err_set(e, PWB_EINVAL, "backward: sequence %d: target position %d out of range", i,
                               s->tgt_pos[j]);
            if (s->targets[j] < 0 || s->targets[j] >= hp->n_vocab)
                return err_set(e, PWB_EINVAL, "backward: sequence %d: target id %d out of range", i,
                               (int)s->targets[j]);
        }
        if ((size_t)(own + plen) > *max_len)
            *max_len = (size_t)(own + plen);
        if ((size_t)plen > *max_plen)
            *max_plen = (size_t)plen;
        *T += own;
    }
    if (*T > BWD_MAX_TOKENS)
        return err_set(e, PWB_ERANGE, "backward: batch of %lld tokens is too large", (long long)*T);
    return PWB_OK;
}

static int forward_layers(bwd_ctx *c, bwd_seq *seqs, int T, int keep, pwb_err *e)
{
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int d = c->d, hd = hp->head_dim, ff = c->ff;
    /* Inputs and rope tables. */
    float *x0 = act_of(c, 0, T, keep).x_in;
    for (int t = 0; t < T; t++) {
        const int si = c->t_seq[t];
        const bwd_seq *s = &seqs[si];
        const int j = t - c->s_base[si], pos = c->t_pos[t];
        float *dst = x0 + (size_t)t * d;
        if (j < s->n_embeds)
            memcpy(dst, s->embeds + (size_t)j * d, (size_t)d * sizeof *dst);
        else
            CHECK(kernel_get_row(&m->tok_embd, s->ids[j - s->n_embeds], dst, e));
        float *cs = c->cs + (size_t)t * hp->n_rot;
        for (int i = 0; i < hp->n_rot / 2; i++) {
            const double ang = (double)pos * c->inv_freq[i];
            cs[2 * i] = (float)cos(ang);
            cs[2 * i + 1] = (float)sin(ang);
        }
    }
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        layer_act a = act_of(c, l, T, keep);
        rmsnorm_rows(c->xn, a.x_in, L->attn_norm, T, d, hp->norm_eps);
        CHECK(mm(c, &L->wq, c->xn, T, a.q, e));
        CHECK(mm(c, &L->wk, c->xn, T, a.k, e));
        CHECK(mm(c, &L->wv, c->xn, T, a.v, e));
        add_bias(a.q, L->bq, T, c->q_dim);
        add_bias(a.k, L->bk, T, c->kv_dim);
        add_bias(a.v, L->bv, T, c->kv_dim);
        for (int t = 0; t < T; t++) {
            const float *cs = c->cs + (size_t)t * hp->n_rot;
            for (int h = 0; h < hp->n_head; h++)
                rope_fwd(a.q + (size_t)t * c->q_dim + (size_t)h * hd, cs, hp->n_rot, hp->rope_layout);
            for (int h = 0; h < hp->n_head_kv; h++)
                rope_fwd(a.k + (size_t)t * c->kv_dim + (size_t)h * hd, cs, hp->n_rot, hp->rope_layout);
        }
        attn_fwd(c, &a, T);
        CHECK(mm(c, &L->wo, c->att, T, c->xn, e));
#pragma omp parallel for schedule(static) if ((int64_t)T * d >= BWD_PAR_MIN)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < d; i++)
                a.xm[(size_t)t * d + i] = a.x_in[(size_t)t * d + i] + c->xn[(size_t)t * d + i];
        rmsnorm_rows(c->xn, a.xm, L->ffn_norm, T, d, hp->norm_eps);
        CHECK(mm(c, &L->w_gate, c->xn, T, a.g, e));
        CHECK(mm(c, &L->w_up, c->xn, T, a.u, e));
#pragma omp parallel for schedule(static) if ((int64_t)T * ff * 8 >= BWD_PAR_MIN)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < ff; i++) {
                const float g = a.g[(size_t)t * ff + i];
                c->h[(size_t)t * ff + i] = g / (1.0f + expf(-g)) * a.u[(size_t)t * ff + i];
            }
        CHECK(mm(c, &L->w_down, c->h, T, c->xn, e));
#pragma omp parallel for schedule(static) if ((int64_t)T * d >= BWD_PAR_MIN)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < d; i++)
                a.x_out[(size_t)t * d + i] = a.xm[(size_t)t * d + i] + c->xn[(size_t)t * d + i];
    }
    return PWB_OK;
}

static double logsumexp(const float *x, int n)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += exp((double)(x[i] - mx));
    return (double)mx + log(s);
}

/* The output head over scored rows: loss, and with grad the gradient into c->dx (zeroed here). */
static int head(bwd_ctx *c, bwd_seq *seqs, int n, int T, int grad, double *loss, const float *xL, pwb_err *e)
{
    const model *m = c->m;
    const int d = c->d, V = m->hp.n_vocab;
    const float eps = m->hp.norm_eps;
    int n_scored = 0;
    for (int s = 0; s < n; s++)
        n_scored += seqs[s].n_tgt > 0;
    const double w = n_scored ? 1.0 / n_scored : 0.0;
    if (grad)
        memset(c->dx, 0, (size_t)T * (size_t)d * sizeof(float));
    double total = 0.0;
    int rows_t[BWD_LOGIT_ROWS], rows_s[BWD_LOGIT_ROWS], rows_j[BWD_LOGIT_ROWS];
    int s = 0, j = 0;
    for (;;) {
        /* Gather the next block of scored rows, in sequence order. */
        int nb = 0;
        while (s < n && nb < BWD_LOGIT_ROWS) {
            if (j >= seqs[s].n_tgt) {
                s++;
                j = 0;
                continue;
            }
            rows_t[nb] = c->s_base[s] + seqs[s].tgt_pos[j];
            rows_s[nb] = s;
            rows_j[nb] = j;
            nb++;
            j++;
        }
        if (nb == 0)
            break;
        for (int b = 0; b < nb; b++)
            fwd_rmsnorm(c->xf + (size_t)b * d, xL + (size_t)rows_t[b] * d, m->output_norm, d, eps);
        CHECK(mm(c, &m->output, c->xf, nb, c->lg, e));
        double part = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : part) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            const float *lg = c->lg + (size_t)b * V;
            const int32_t tgt = seqs[rows_s[b]].targets[rows_j[b]];
            const double lse = logsumexp(lg, V);
            const double lp = (double)lg[tgt] - lse;
            if (seqs[rows_s[b]].tgt_logprob)
                seqs[rows_s[b]].tgt_logprob[rows_j[b]] = lp;
            part += -lp;
            if (grad) {
                float *dl = c->dlg + (size_t)b * V;
                for (int v = 0; v < V; v++)
                    dl[v] = (float)(w * exp((double)lg[v] - lse));
                dl[tgt] -= (float)w;
            }
        }
        total += part;
        if (grad) {
            CHECK(kernel_matmul_t(&m->output, c->dlg, nb, c->dxf, 0, e));
            for (int b = 0; b < nb; b++)
                rmsnorm_bwd(c->dx + (size_t)rows_t[b] * d, xL + (size_t)rows_t[b] * d, m->output_norm,
                            c->dxf + (size_t)b * d, d, eps);
        }
    }
    if (loss)
        *loss = total * w;
    return PWB_OK;
}

static int backward_layers(bwd_ctx *c, int n, int T, size_t max_plen, pwb_err *e)
{
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int d = c->d, hd = hp->head_dim, ff = c->ff, ldg = c->ldg;
    for (int l = hp->n_layer - 1; l >= 0; l--) {
        const model_layer *L = &m->layers[l];
        const layer_t *W = c->wt ? &c->wt[l] : NULL;
        layer_act a = act_of(c, l, T, 1);
        /* SwiGLU MLP: dh = dx Wd; dg = dh u silu'(g); du = dh silu(g). */
        float *dh = c->h;
        if (W)
            CHECK(kernel_matmul(&W->down, c->dx, T, dh, e));
        else
            CHECK(mmt(c, &L->w_down, c->dx, (size_t)d, T, dh, 0, e));
#pragma omp parallel for schedule(static) if ((int64_t)T * ff * 8 >= BWD_PAR_MIN)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < ff; i++) {
                const size_t k = (size_t)t * ff + i, o = (size_t)t * ldg + i;
                const float g = a.g[k], sg = 1.0f / (1.0f + expf(-g));
                c->du[o] = dh[k] * g * sg;
                c->dg[o] = dh[k] * a.u[k] * sg * (1.0f + g * (1.0f - sg));
            }
        if (W) {
            CHECK(kernel_matmul(&W->gu, c->dgu, T, c->dxn, e));
        } else {
            CHECK(mmt(c, &L->w_gate, c->dg, (size_t)ldg, T, c->dxn, 0, e));
            CHECK(mmt(c, &L->w_up, c->du, (size_t)ldg, T, c->dxn, 1, e));
        }
        rmsnorm_bwd_rows(c->dx, a.xm, L->ffn_norm, c->dxn, T, d, hp->norm_eps);
        /* Attention. */
        if (W)
            CHECK(kernel_matmul(&W->o, c->dx, T, c->datt, e));
        else
            CHECK(mmt(c, &L->wo, c->dx, (size_t)d, T, c->datt, 0, e));
        attn_bwd(c, &a, n, max_plen);
#pragma omp parallel for schedule(static) if ((int64_t)T * c->q_dim >= BWD_PAR_MIN)
        for (int t = 0; t < T; t++) {
            const float *cs = c->cs + (size_t)t * hp->n_rot;
            for (int h = 0; h < hp->n_head; h++)
                rope_bwd(c->dq + (size_t)t * c->ldq + (size_t)h * hd, cs, hp->n_rot, hp->rope_layout);
            for (int h = 0; h < hp->n_head_kv; h++)
                rope_bwd(c->dk + (size_t)t * c->ldk + (size_t)h * hd, cs, hp->n_rot, hp->rope_layout);
        }
        if (W) {
            CHECK(kernel_matmul(&W->qkv, c->dqkv, T, c->dxn, e));
        } else {
            CHECK(mmt(c, &L->wq, c->dq, (size_t)c->ldq, T, c->dxn, 0, e));
            CHECK(mmt(c, &L->wk, c->dk, (size_t)c->ldk, T, c->dxn, 1, e));
            CHECK(mmt(c, &L->wv, c->dv, (size_t)c->ldk, T, c->dxn, 1, e));
        }
        rmsnorm_bwd_rows(c->dx, a.x_in, L->attn_norm, c->dxn, T, d, hp->norm_eps);
    }
    return PWB_OK;
}

int bwd_run(bwd_ctx *c, bwd_seq *seqs, int n, int grad, double *loss, pwb_err *e)
{
    int64_t T64;
    size_t max_len, max_plen;
    CHECK(check_seqs(c, seqs, n, &T64, &max_len, &max_plen, e));
    const int T = (int)T64, keep = grad != 0;
    CHECK(ensure(c, T, keep, n, max_len, max_plen, e));
    int t = 0;
    for (int s = 0; s < n; s++) {
        const bwd_seq *q = &seqs[s];
        const int own = q->n_embeds + q->n_ids;
        c->s_base[s] = t;
        c->s_len[s] = own;
        c->s_pidx[s] = q->prefix ? (int)(q->prefix - seqs) : -1;
        c->s_plen[s] = q->prefix ? q->prefix->n_embeds + q->prefix->n_ids : 0;
        for (int j = 0; j < own; j++, t++) {
            c->t_seq[t] = s;
            c->t_pos[t] = c->s_plen[s] + j;
        }
    }
    CHECK(forward_layers(c, seqs, T, keep, e));
    const float *xL = act_of(c, c->n_layer - 1, T, keep).x_out;
    CHECK(head(c, seqs, n, T, grad, loss, xL, e));
    if (!grad)
        return PWB_OK;
    CHECK(backward_layers(c, n, T, max_plen, e));
    /* dx is now dL/d(input embeddings); hand the leading vectors' rows out. */
    const int d = c->d;
    for (int s = 0; s < n; s++) {
        if (!seqs[s].d_embeds)
            continue;
        for (int j = 0; j < seqs[s].n_embeds; j++)
            kernel_axpy_f32(seqs[s].d_embeds + (size_t)j * d, 1.0f, c->dx + (size_t)(c->s_base[s] + j) * d, d);
    }
    return PWB_OK;
}

void bwd_seq_padded(bwd_seq *seqs, int B, const float *embeds, int n_embeds, const int32_t *ids, int stride,
                    const int *lens, float *d_embeds)
{
    for (int b = 0; b < B; b++) {
        memset(&seqs[b], 0, sizeof seqs[b]);
        seqs[b].embeds = embeds;
        seqs[b].n_embeds = n_embeds;
        seqs[b].ids = ids + (size_t)b * (size_t)stride;
        seqs[b].n_ids = lens[b];
        seqs[b].d_embeds = d_embeds;
    }
}
