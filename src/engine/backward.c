/* Training forward (activations kept in F32) and backward to the input embeddings.
 *
 * Notation per layer l, over the T stacked tokens of the batch (optional parts in brackets, as the
 * architecture's row sets them, arch.h):
 *   x_l      residual stream entering the layer        (kept: X(l))
 *   a        = rmsnorm(x_l) * attn_norm
 *   q, k, v  = a Wq^T (+bq), a Wk^T (+bk), a Wv^T (+bv)  (kept before the QK norm: Qp, Kp)
 *              [q, k = per-head rmsnorm * q_norm, k_norm]; q, k rotated (RoPE)   (kept: Q, K, V)
 *   o        = softmax(scale q k^T, causal [, window], per sequence) v
 *   ao       = o Wo^T                                   (kept when post-normed: AO)
 *   xm       = x_l + [rmsnorm(ao) * post_attn_norm | ao] (kept: Xm)
 *   f        = rmsnorm(xm) * ffn_norm
 *   g, u     = f Wg^T, f Wu^T                           (kept: G, U)
 *   fo       = (act(g) * u) Wd^T                        (kept when post-normed: FO)
 *   x_{l+1}  = xm + [rmsnorm(fo) * post_ffn_norm | fo]
 * and at the top, for scored rows only: logits = [softcap]((rmsnorm(x_L) * out_norm) Wout^T).
 * The backward walks this in reverse with the paired operations of ops.h; every product with a
 * weight is weight_product() (over transposed Q8_0 copies of the weights, or kernel_matmul_t in
 * exact mode); the attention probabilities are recomputed from the kept q and k rather than
 * stored. */
#include "engine/backward.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels.h"
#include "engine/lora.h"
#include "engine/ops.h"
#include "engine/quant.h"

#define BWD_LOGIT_ROWS 32          /* scored rows per output-head product: bounds the logits */
#define BWD_PAR_MIN (1 << 15)      /* below this much elementwise work a loop stays serial */
#define BWD_MAX_TOKENS (1 << 20)

/* Which optional parts the model's layers have (the same in every layer). */
typedef struct layer_kind {
    int qk_norm, post_norm;
} layer_kind;

struct bwd_ctx {
    const model *m;
    bwd_opts o;
    layer_kind lk;
    int d, q_dim, kv_dim, ff, n_layer, wide;
    wprod wp;                       /* weight products; wp.wt: transposed copies or NULL */
    pwb_tensor *wt;                 /* [n_layer * WS_COUNT_] */
    void *wt_mem;
    size_t wt_bytes;
    /* per run, grown as needed */
    int cap_T, cap_keep;
    float *act;                     /* kept activations (see act_of) */
    size_t act_floats;
    float *xn, *att, *h;            /* forward scratch [T][wide], [T][q_dim], [T][ff] */
    float *dx, *dxn, *datt, *tmp;   /* backward scratch [T][d], [T][wide], [T][q_dim], [T][wide] */
    float *dqkv, *dgu;              /* [T][q_dim] [T][kv_dim] [T][kv_dim] one after the other; [T][ff] x 2 */
    float *dq, *dk, *dv, *dg, *du;  /* views into dqkv / dgu */
    float *dkp;                     /* QK norm: key gradient before the norm [T][kv_dim] */
    float *cs, *cs_swa;             /* [T][n_rot]: cos, sin pairs (global layers, window layers) */
    int *t_seq, *t_pos;             /* per token: its sequence, its absolute position */
    int *s_base, *s_len, *s_pidx, *s_plen; /* per sequence: first row, own length, prefix index, length */
    int cap_seqs;
    float *pd;                      /* prefix gradient partials [n_seqs][max_plen][2 kv_dim] */
    size_t cap_pd;
    float *scores;                  /* [threads][2 * cap_len] */
    size_t cap_len;
    int cap_threads;
    float *lg, *dlg, *xf, *dxf;     /* head: [BWD_LOGIT_ROWS][V], [.][V], [.][d], [.][d] */
    double *inv_freq, *inv_freq_swa;
    size_t bytes;
    /* LoRA (the adapter itself is c->wp.lora): its gradient, and the products' inputs the base
     * pass does not keep: the attention output per layer (o adapted), the MLP's hidden rows (down). */
    lora *lora_grad;
    float *lora_att, *lora_h;
    size_t cap_lora_att, cap_lora_h;
    /* Prefix tuning: vP virtual positions before every sequence, keys and values given per layer
     * ([vP][n_layer][2][kv_dim]), gradient added to vgrad; vpd holds each sequence's share. */
    const float *vkv;
    float *vgrad, *vpd;
    int vP;
    size_t cap_vpd;
};

#define CHECK(x)                                                                                              \
    do {                                                                                                      \
        int rc_ = (x);                                                                                        \
        if (rc_ != PWB_OK)                                                                                    \
            return rc_;                                                                                       \
    } while (0)

static int64_t rows_of(const pwb_tensor *W)
{
    return W->ne[1] * W->ne[2] * W->ne[3];
}

/* ---- transposed weights -------------------------------------------------------------------- */

/* out: K rows of Q8_0, row k = column k of W ([M][K]); tmp: M * K floats. */
static int transpose_q8(const pwb_tensor *W, float *tmp, unsigned char *out, pwb_tensor *t, const char *name)
{
    const int64_t K = W->ne[0], M = rows_of(W);
    const size_t wrb = quant_row_size(W->type, K);
    for (int64_t m = 0; m < M; m++)
        if (dequant_row(W->type, (const unsigned char *)W->data + (size_t)m * wrb, tmp + (size_t)m * K, K) != PWB_OK)
            return -1;
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
            for (int64_t m = 0; m < M; m++)
                row[m] = tmp[(size_t)m * K + k];
            quantize_row_q8_0(row, (block_q8_0 *)(void *)(out + (size_t)k * rb), M);
        }
        free(row);
    }
    *t = (pwb_tensor){name, DT_Q8_0, 2, {M, K, 1, 1}, out, rb * (size_t)K};
    return bad ? -1 : 0;
}

/* Q8_0 copies of every layer weight, transposed (only when every product's output width is a
 * multiple of the block; quantized or float originals alike). */
static int build_transposed(bwd_ctx *c, pwb_err *e)
{
    const model *m = c->m;
    const int nl = m->hp.n_layer;
    size_t total = 0, biggest = 0;
    for (int l = 0; l < nl; l++)
        for (int s = 0; s < WS_OUTPUT; s++) {
            const pwb_tensor *W = wprod_weight(m, l, s);
            if (!quant_supported(W->type) || W->n_dims > 2 || rows_of(W) % QK8_0)
                return PWB_OK;
            total += quant_row_size(DT_Q8_0, rows_of(W)) * (size_t)W->ne[0];
            if ((size_t)(rows_of(W) * W->ne[0]) > biggest)
                biggest = (size_t)(rows_of(W) * W->ne[0]);
        }
    static const char *names[WS_OUTPUT] = {"wq^T", "wk^T", "wv^T", "wo^T", "gate^T", "up^T", "down^T"};
    c->wt = calloc((size_t)nl * WS_COUNT_, sizeof *c->wt);
    c->wt_mem = malloc(total ? total : 1);
    float *tmp = malloc((biggest ? biggest : 1) * sizeof(float));
    int bad = !c->wt || !c->wt_mem || !tmp;
    unsigned char *base = c->wt_mem;
    for (int l = 0; !bad && l < nl; l++)
        for (int s = 0; !bad && s < WS_OUTPUT; s++) {
            pwb_tensor *t = &c->wt[(size_t)l * WS_COUNT_ + (size_t)s];
            bad = transpose_q8(wprod_weight(m, l, s), tmp, base, t, names[s]);
            base += t->nbytes;
        }
    free(tmp);
    if (bad) {
        free(c->wt);
        free(c->wt_mem);
        c->wt = NULL;
        c->wt_mem = NULL;
        return err_set(e, PWB_ENOMEM, "backward: cannot build the transposed weights");
    }
    c->wt_bytes = total;
    c->wp.wt = c->wt;
    return PWB_OK;
}

/* ---- context ------------------------------------------------------------------------------- */

static void free_run_buffers(bwd_ctx *c)
{
    float **f[] = {&c->act, &c->xn, &c->att, &c->h, &c->dx, &c->dxn, &c->datt, &c->tmp, &c->dqkv, &c->dgu,
                   &c->dkp, &c->cs, &c->cs_swa};
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

void bwd_ctx_set_lora(bwd_ctx *c, const lora *l, lora *grad)
{
    c->wp.lora = l;
    c->lora_grad = l ? grad : NULL;
}

void bwd_ctx_set_kv_prefix(bwd_ctx *c, const float *kv, int n, float *grad)
{
    c->vkv = n > 0 ? kv : NULL;
    c->vP = kv && n > 0 ? n : 0;
    c->vgrad = grad;
}

void bwd_ctx_free(bwd_ctx *c)
{
    if (!c)
        return;
    free_run_buffers(c);
    free(c->lora_att);
    free(c->lora_h);
    free(c->vpd);
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
    free(c->inv_freq_swa);
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
    layer_kind lk = {m->layers[0].q_norm != NULL, m->layers[0].post_attn_norm != NULL};
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        if ((L->q_norm != NULL) != lk.qk_norm || (L->k_norm != NULL) != lk.qk_norm ||
            (L->post_attn_norm != NULL) != lk.post_norm || (L->post_ffn_norm != NULL) != lk.post_norm)
            return err_set(e, PWB_EINVAL, "backward: layers of different kinds are not supported");
    }
    bwd_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(e, PWB_ENOMEM, "out of memory");
    c->m = m;
    if (o)
        c->o = *o;
    c->lk = lk;
    c->wp = (wprod){.m = m, .exact = c->o.exact, .tile_rows = c->o.tile_rows};
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
    c->inv_freq_swa = malloc((size_t)(hp->n_rot / 2 + 1) * sizeof(double));
    if (!c->lg || !c->dlg || !c->xf || !c->dxf || !c->inv_freq || !c->inv_freq_swa) {
        bwd_ctx_free(c);
        return err_set(e, PWB_ENOMEM, "out of memory (backward context)");
    }
    op_rope_freqs(c->inv_freq, hp->rope_base, hp->n_rot);
    op_rope_freqs(c->inv_freq_swa, hp->rope_base_swa > 0.0f ? hp->rope_base_swa : hp->rope_base, hp->n_rot);
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
    /* Xm, Q, K, V, G, U per token; Qp, Kp with QK norms; AO, FO with post-norms */
    return (size_t)c->d + (size_t)c->q_dim + 2 * (size_t)c->kv_dim + 2 * (size_t)c->ff +
           (c->lk.qk_norm ? (size_t)c->q_dim + (size_t)c->kv_dim : 0) + (c->lk.post_norm ? 2 * (size_t)c->d : 0);
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
        const size_t t = (size_t)T, n_rot = (size_t)c->m->hp.n_rot + 1;
        const size_t nl = keep ? (size_t)c->n_layer : 1;
        /* X(0..L) then per layer [Xm Q K V G U (Qp Kp) (AO FO)] */
        c->act_floats = (nl + 1) * t * (size_t)c->d + nl * t * layer_floats(c);
        c->act = kernel_alloc_f32(c->act_floats);
        c->xn = kernel_alloc_f32(t * (size_t)c->wide);
        c->att = kernel_alloc_f32(t * (size_t)c->q_dim);
        c->h = kernel_alloc_f32(t * (size_t)c->ff);
        c->cs = kernel_alloc_f32(t * n_rot);
        c->cs_swa = kernel_alloc_f32(t * n_rot);
        c->t_seq = malloc(t * sizeof(int));
        c->t_pos = malloc(t * sizeof(int));
        int ok = c->act && c->xn && c->att && c->h && c->cs && c->cs_swa && c->t_seq && c->t_pos;
        size_t scratch = t * ((size_t)c->wide + c->q_dim + c->ff + 2 * n_rot);
        if (ok && keep) {
            c->dx = kernel_alloc_f32(t * (size_t)c->d);
            c->dxn = kernel_alloc_f32(t * (size_t)c->wide);
            c->datt = kernel_alloc_f32(t * (size_t)c->q_dim);
            c->tmp = kernel_alloc_f32(t * (size_t)c->wide);
            c->dqkv = kernel_alloc_f32(t * (size_t)(c->q_dim + 2 * c->kv_dim));
            c->dgu = kernel_alloc_f32(t * 2 * (size_t)c->ff);
            c->dkp = c->lk.qk_norm ? kernel_alloc_f32(t * (size_t)c->kv_dim) : NULL;
            ok = c->dx && c->dxn && c->datt && c->tmp && c->dqkv && c->dgu && (c->dkp || !c->lk.qk_norm);
            scratch += t * ((size_t)c->d + 2 * (size_t)c->wide + 2 * (size_t)c->q_dim + 2 * (size_t)c->kv_dim +
                            2 * (size_t)c->ff + (c->lk.qk_norm ? (size_t)c->kv_dim : 0));
        }
        if (!ok) {
            free_run_buffers(c);
            return err_set(e, PWB_ENOMEM, "out of memory (training activations for %d tokens)", T);
        }
        c->cap_T = T;
        c->cap_keep = keep;
        c->bytes = (c->act_floats + scratch) * sizeof(float);
    }
    if (keep) {
        const size_t t = (size_t)T;
        c->dq = c->dqkv;
        c->dk = c->dqkv + t * (size_t)c->q_dim;
        c->dv = c->dk + t * (size_t)c->kv_dim;
        c->dg = c->dgu;
        c->du = c->dgu + t * (size_t)c->ff;
        c->wp.tmp = c->tmp;
        c->wp.tmp_cap = (size_t)c->cap_T * (size_t)c->wide;
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

/* The adapters' own buffers (see struct bwd_ctx). */
static int ensure_adapters(bwd_ctx *c, int T, int keep, int n_seqs, pwb_err *e)
{
    if (!keep)
        return PWB_OK;
    const lora *l = c->wp.lora;
    if (l && l->n_layer != c->n_layer)
        return err_set(e, PWB_EINVAL, "backward: the LoRA adapter has %d layers, the model %d", l->n_layer, c->n_layer);
    const size_t att = l && (l->targets & (1u << LORA_O)) ? (size_t)c->n_layer * T * c->q_dim : 0;
    const size_t h = l && (l->targets & (1u << LORA_DOWN)) ? (size_t)T * c->ff : 0;
    const size_t vpd = (size_t)n_seqs * c->vP * 2 * c->kv_dim;
    int ok = 1;
    if (att > c->cap_lora_att && (c->lora_att = grow(c->lora_att, att * sizeof(float), &ok), ok))
        c->cap_lora_att = att;
    if (ok && h > c->cap_lora_h && (c->lora_h = grow(c->lora_h, h * sizeof(float), &ok), ok))
        c->cap_lora_h = h;
    if (ok && vpd > c->cap_vpd && (c->vpd = grow(c->vpd, vpd * sizeof(float), &ok), ok))
        c->cap_vpd = vpd;
    return ok ? PWB_OK : err_set(e, PWB_ENOMEM, "out of memory (adapter activations for %d tokens)", T);
}

/* Kept activations of layer l (per-layer copies only when keep; else one shared set). */
typedef struct layer_act {
    float *x_in, *xm, *x_out, *q, *k, *v, *g, *u;
    float *qp, *kp;  /* q, k before their norms (QK norm only) */
    float *ao, *fo;  /* sublayer outputs before their norms (post-norms only) */
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
    float *next = a.u + t * (size_t)c->ff;
    a.qp = a.kp = a.ao = a.fo = NULL;
    if (c->lk.qk_norm) {
        a.qp = next;
        a.kp = a.qp + t * (size_t)c->q_dim;
        next = a.kp + t * (size_t)c->kv_dim;
    }
    if (c->lk.post_norm) {
        a.ao = next;
        a.fo = a.ao + t * d;
    }
    return a;
}

/* ---- attention ----------------------------------------------------------------------------- */

static float attn_scale(const model_hparams *hp)
{
    return hp->attn_scale > 0.0f ? hp->attn_scale : 1.0f / sqrtf((float)hp->head_dim);
}

/* The keys query row t (the i-th of sequence s) sees, for kv head kvh: its prefix's rows, then its
 * own rows up to itself; with gradients when g is set (the prefix's go to this task's share pdk of
 * c->pd). Returns the segment count after the layer's window. */
static int key_segs(const bwd_ctx *c, const layer_act *a, int l, int s, int i, int kvh, int grad, float *pdk,
                    float *vdk, attn_seg seg[3])
{
    const int hd = c->m->hp.head_dim, kv_dim = c->kv_dim, plen = c->s_plen[s], base = c->s_base[s], vP = c->vP;
    const size_t off = (size_t)kvh * hd;
    int n = 0;
    if (vP) { /* prefix tuning's virtual positions (their gradient to this task's share vdk) */
        const float *k = c->vkv + 2 * (size_t)l * kv_dim + off;
        seg[n++] = (attn_seg){k, k + kv_dim, (size_t)c->n_layer * 2 * kv_dim, grad ? vdk : NULL,
                              grad ? vdk + kv_dim : NULL, 2 * (size_t)kv_dim, 0, vP};
    }
    if (plen) {
        const size_t pb = (size_t)c->s_base[c->s_pidx[s]];
        seg[n++] = (attn_seg){a->k + pb * kv_dim + off, a->v + pb * kv_dim + off, (size_t)kv_dim,
                              grad ? pdk : NULL, grad ? pdk + kv_dim : NULL, 2 * (size_t)kv_dim, vP, vP + plen};
    }
    seg[n++] = (attn_seg){a->k + (size_t)base * kv_dim + off, a->v + (size_t)base * kv_dim + off, (size_t)kv_dim,
                          grad ? c->dk + (size_t)base * kv_dim + off : NULL,
                          grad ? c->dv + (size_t)base * kv_dim + off : NULL, (size_t)kv_dim, vP + plen,
                          vP + plen + i + 1};
    const int window = c->m->layers[l].swa ? c->m->hp.n_swa : 0;
    return window > 0 ? op_attn_window(seg, n, vP + plen + i + 1 - window) : n;
}

/* o = softmax(q k^T * scale) v per sequence, causal. Parallel over (token, head). */
static void attn_fwd(bwd_ctx *c, const layer_act *a, int l, int T)
{
    const model_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, n_head = hp->n_head, group = hp->n_head / hp->n_head_kv;
    const int q_dim = c->q_dim;
    const float scale = attn_scale(hp);
    int64_t work = 0;
    for (int t = 0; t < T; t++)
        work += (int64_t)(c->t_pos[t] + 1) * q_dim;
#pragma omp parallel for schedule(dynamic, 4) if (work >= BWD_PAR_MIN)
    for (int64_t task = 0; task < (int64_t)T * n_head; task++) {
        const int t = (int)(task / n_head), h = (int)(task % n_head);
        const int s = c->t_seq[t];
        attn_seg seg[3];
        const int nseg = key_segs(c, a, l, s, t - c->s_base[s], h / group, 0, NULL, NULL, seg);
        float *sc = c->scores + (size_t)omp_get_thread_num() * 2 * c->cap_len;
        op_attn(a->q + (size_t)t * q_dim + (size_t)h * hd, seg, nseg, hd, scale, sc,
                c->att + (size_t)t * q_dim + (size_t)h * hd);
    }
}

/* From do (c->datt) to dq, dk, dv (overwritten). A task per (sequence, kv head) owns that head's
 * dk/dv rows and its query heads' dq rows; what its queries send to a prefix's keys and values goes
 * to its own slice of c->pd and is summed into the prefix's rows afterwards. */
static void attn_bwd(bwd_ctx *c, const layer_act *a, int l, int n_seqs, size_t max_plen)
{
    const model_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, n_kv = hp->n_head_kv, group = hp->n_head / hp->n_head_kv;
    const int q_dim = c->q_dim, kv_dim = c->kv_dim;
    const float scale = attn_scale(hp);
    int64_t work = 0;
    for (int s = 0; s < n_seqs; s++)
        work += (int64_t)c->s_len[s] * (c->s_len[s] + c->s_plen[s]) * q_dim;
#pragma omp parallel for schedule(dynamic, 1) if (work >= BWD_PAR_MIN)
    for (int64_t task = 0; task < (int64_t)n_seqs * n_kv; task++) {
        const int s = (int)(task / n_kv), kvh = (int)(task % n_kv);
        const int base = c->s_base[s], len = c->s_len[s], plen = c->s_plen[s];
        /* this task's share of its prefix's key/value gradients: [plen][2 kv_dim] */
        float *pdk = plen ? c->pd + (size_t)s * max_plen * 2 * kv_dim + (size_t)kvh * hd : NULL;
        for (int p = 0; p < len; p++) {
            memset(c->dk + (size_t)(base + p) * kv_dim + (size_t)kvh * hd, 0, (size_t)hd * sizeof(float));
            memset(c->dv + (size_t)(base + p) * kv_dim + (size_t)kvh * hd, 0, (size_t)hd * sizeof(float));
        }
        for (int p = 0; p < plen; p++) {
            memset(pdk + (size_t)p * 2 * kv_dim, 0, (size_t)hd * sizeof(float));
            memset(pdk + (size_t)p * 2 * kv_dim + kv_dim, 0, (size_t)hd * sizeof(float));
        }
        /* and of the virtual prefix's: [vP][2 kv_dim] */
        float *vdk = c->vP ? c->vpd + (size_t)s * c->vP * 2 * kv_dim + (size_t)kvh * hd : NULL;
        for (int p = 0; p < c->vP; p++) {
            memset(vdk + (size_t)p * 2 * kv_dim, 0, (size_t)hd * sizeof(float));
            memset(vdk + (size_t)p * 2 * kv_dim + kv_dim, 0, (size_t)hd * sizeof(float));
        }
        float *P = c->scores + (size_t)omp_get_thread_num() * 2 * c->cap_len;
        float *dP = P + c->cap_len;
        for (int h = kvh * group; h < (kvh + 1) * group; h++)
            for (int i = 0; i < len; i++) {
                const size_t t = (size_t)(base + i);
                attn_seg seg[3];
                const int nseg = key_segs(c, a, l, s, i, kvh, 1, pdk, vdk, seg);
                op_attn_bwd(a->q + t * q_dim + (size_t)h * hd, c->datt + t * q_dim + (size_t)h * hd, seg, nseg, hd,
                            scale, P, dP, c->dq + t * q_dim + (size_t)h * hd);
            }
    }
    /* Each sequence's share of the virtual prefix's key and value gradients, in sequence order. */
    for (int s = 0; c->vgrad && s < n_seqs; s++)
        for (int p = 0; p < c->vP; p++)
            kernel_axpy_f32(c->vgrad + ((size_t)p * c->n_layer * 2 + 2 * (size_t)l) * kv_dim, 1.0f,
                            c->vpd + ((size_t)s * c->vP + (size_t)p) * 2 * kv_dim, 2 * (int64_t)kv_dim);
    /* Children's shares of their prefix's key and value gradients, in sequence order. */
    for (int s = 0; s < n_seqs; s++) {
        const int plen = c->s_plen[s];
        if (!plen)
            continue;
        const size_t pb = (size_t)c->s_base[c->s_pidx[s]];
        const float *src = c->pd + (size_t)s * max_plen * 2 * kv_dim;
        for (int p = 0; p < plen; p++) {
            kernel_axpy_f32(c->dk + (pb + p) * kv_dim, 1.0f, src + (size_t)p * 2 * kv_dim, kv_dim);
            kernel_axpy_f32(c->dv + (pb + p) * kv_dim, 1.0f, src + (size_t)p * 2 * kv_dim + kv_dim, kv_dim);
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
        plen += c->vP; /* prefix tuning's virtual positions come first */
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
        if ((size_t)(plen - c->vP) > *max_plen)
            *max_plen = (size_t)(plen - c->vP);
        *T += own;
    }
    if (*T > BWD_MAX_TOKENS)
        return err_set(e, PWB_ERANGE, "backward: batch of %lld tokens is too large", (long long)*T);
    return PWB_OK;
}

static void add_rows(float *y, const float *a, const float *b, int T, int d)
{
#pragma omp parallel for schedule(static) if ((int64_t)T * d >= BWD_PAR_MIN)
    for (int t = 0; t < T; t++)
        for (int i = 0; i < d; i++)
            y[(size_t)t * d + i] = a[(size_t)t * d + i] + b[(size_t)t * d + i];
}

#define WP(layer, slot, dir, in, B, out, acc) CHECK(weight_product(&c->wp, (layer), (slot), (dir), (in), (B), (out), (acc), e))

static int forward_layers(bwd_ctx *c, bwd_seq *seqs, int T, int keep, pwb_err *e)
{
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int d = c->d, hd = hp->head_dim, ff = c->ff;
    const float eps = hp->norm_eps;
    /* Inputs (token embeddings scaled where the architecture says; input vectors as given) and
     * rope tables. */
    float *x0 = act_of(c, 0, T, keep).x_in;
    for (int t = 0; t < T; t++) {
        const int si = c->t_seq[t];
        const bwd_seq *s = &seqs[si];
        const int j = t - c->s_base[si], pos = c->t_pos[t];
        float *dst = x0 + (size_t)t * d;
        if (j < s->n_embeds) {
            memcpy(dst, s->embeds + (size_t)j * d, (size_t)d * sizeof *dst);
        } else {
            CHECK(model_embed_token(m, s->ids[j - s->n_embeds], dst, e));
        }
        op_rope_table(c->cs + (size_t)t * hp->n_rot, pos, c->inv_freq, hp->n_rot / 2);
        op_rope_table(c->cs_swa + (size_t)t * hp->n_rot, pos, c->inv_freq_swa, hp->n_rot / 2);
    }
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        const float *cs_l = L->swa ? c->cs_swa : c->cs;
        layer_act a = act_of(c, l, T, keep);
        op_rmsnorm_rows(c->xn, a.x_in, L->attn_norm, T, d, eps);
        float *q = a.qp ? a.qp : a.q, *k = a.kp ? a.kp : a.k;
        WP(l, WS_Q, WP_FWD, c->xn, T, q, 0);
        WP(l, WS_K, WP_FWD, c->xn, T, k, 0);
        WP(l, WS_V, WP_FWD, c->xn, T, a.v, 0);
        op_add_bias(q, L->bq, T, c->q_dim);
        op_add_bias(k, L->bk, T, c->kv_dim);
        op_add_bias(a.v, L->bv, T, c->kv_dim);
        if (a.qp) {
            op_rmsnorm_rows(a.q, a.qp, L->q_norm, T * hp->n_head, hd, eps);
            op_rmsnorm_rows(a.k, a.kp, L->k_norm, T * hp->n_head_kv, hd, eps);
        }
        for (int t = 0; t < T; t++) {
            const float *cs = cs_l + (size_t)t * hp->n_rot;
            op_rope(a.q + (size_t)t * c->q_dim, hp->n_head, hd, cs, hp->n_rot, hp->rope_layout);
            op_rope(a.k + (size_t)t * c->kv_dim, hp->n_head_kv, hd, cs, hp->n_rot, hp->rope_layout);
        }
        attn_fwd(c, &a, l, T);
        if (keep && c->lora_grad && lora_at(c->wp.lora, l, LORA_O)) /* the o adapter's input, for its gradient */
            memcpy(c->lora_att + (size_t)l * T * c->q_dim, c->att, (size_t)T * c->q_dim * sizeof(float));
        WP(l, WS_O, WP_FWD, c->att, T, a.ao ? a.ao : c->xn, 0);
        if (a.ao)
            op_rmsnorm_rows(c->xn, a.ao, L->post_attn_norm, T, d, eps);
        add_rows(a.xm, a.x_in, c->xn, T, d);
        op_rmsnorm_rows(c->xn, a.xm, L->ffn_norm, T, d, eps);
        WP(l, WS_GATE, WP_FWD, c->xn, T, a.g, 0);
        WP(l, WS_UP, WP_FWD, c->xn, T, a.u, 0);
        op_glu(c->h, a.g, a.u, (int64_t)T * ff, hp->act);
        WP(l, WS_DOWN, WP_FWD, c->h, T, a.fo ? a.fo : c->xn, 0);
        if (a.fo)
            op_rmsnorm_rows(c->xn, a.fo, L->post_ffn_norm, T, d, eps);
        add_rows(a.x_out, a.xm, c->xn, T, d);
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
    const float eps = m->hp.norm_eps, cap = m->hp.final_softcap;
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
            op_rmsnorm(c->xf + (size_t)b * d, xL + (size_t)rows_t[b] * d, m->output_norm, d, eps);
        WP(-1, WS_OUTPUT, WP_FWD, c->xf, nb, c->lg, 0);
        double part = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : part) if (nb > 1)
        for (int b = 0; b < nb; b++) {
            float *lg = c->lg + (size_t)b * V;
            op_softcap(lg, V, cap);
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
                op_softcap_bwd(dl, lg, V, cap);
            }
        }
        total += part;
        if (grad) {
            WP(-1, WS_OUTPUT, WP_BWD, c->dlg, nb, c->dxf, 0);
            for (int b = 0; b < nb; b++)
                op_rmsnorm_bwd(c->dx + (size_t)rows_t[b] * d, xL + (size_t)rows_t[b] * d, m->output_norm,
                               c->dxf + (size_t)b * d, d, eps);
        }
    }
    if (loss)
        *loss = total * w;
    return PWB_OK;
}

/* The gradient of a sublayer's output y from that of the residual (c->dx): through its post-norm
 * into c->dxn when it has one (y kept), else c->dx itself. */
static const float *post_norm_bwd(bwd_ctx *c, const float *y, const float *w, int T)
{
    if (!y)
        return c->dx;
    memset(c->dxn, 0, (size_t)T * (size_t)c->d * sizeof(float));
    op_rmsnorm_bwd_rows(c->dxn, y, w, c->dx, T, c->d, c->m->hp.norm_eps);
    return c->dxn;
}

static int backward_layers(bwd_ctx *c, int n, int T, size_t max_plen, pwb_err *e)
{
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int d = c->d, hd = hp->head_dim, ff = c->ff;
    const float eps = hp->norm_eps;
    for (int l = hp->n_layer - 1; l >= 0; l--) {
        const model_layer *L = &m->layers[l];
        const float *cs_l = L->swa ? c->cs_swa : c->cs;
        layer_act a = act_of(c, l, T, 1);
        /* MLP: through the post-norm, dh = dfo Wd; dg, du from the gated activation. An adapted
         * product's own weights get their gradient from its input (recomputed) and dy. */
        const float *dfo = post_norm_bwd(c, a.fo, L->post_ffn_norm, T);
        WP(l, WS_DOWN, WP_BWD, dfo, T, c->h, 0);
        if (c->lora_grad && lora_at(c->wp.lora, l, LORA_DOWN)) {
            op_glu(c->lora_h, a.g, a.u, (int64_t)T * ff, hp->act);
            CHECK(weight_product_grad(&c->wp, c->lora_grad, l, WS_DOWN, c->lora_h, dfo, T, e));
        }
        op_glu_bwd(c->dg, c->du, c->h, a.g, a.u, (int64_t)T * ff, hp->act);
        WP(l, WS_GATE, WP_BWD, c->dg, T, c->dxn, 0);
        WP(l, WS_UP, WP_BWD, c->du, T, c->dxn, 1);
        if (c->lora_grad && (lora_at(c->wp.lora, l, LORA_GATE) || lora_at(c->wp.lora, l, LORA_UP))) {
            op_rmsnorm_rows(c->xn, a.xm, L->ffn_norm, T, d, eps);
            CHECK(weight_product_grad(&c->wp, c->lora_grad, l, WS_GATE, c->xn, c->dg, T, e));
            CHECK(weight_product_grad(&c->wp, c->lora_grad, l, WS_UP, c->xn, c->du, T, e));
        }
        op_rmsnorm_bwd_rows(c->dx, a.xm, L->ffn_norm, c->dxn, T, d, eps);
        /* Attention. */
        const float *dao = post_norm_bwd(c, a.ao, L->post_attn_norm, T);
        WP(l, WS_O, WP_BWD, dao, T, c->datt, 0);
        if (c->lora_grad && lora_at(c->wp.lora, l, LORA_O))
            CHECK(weight_product_grad(&c->wp, c->lora_grad, l, WS_O, c->lora_att + (size_t)l * T * c->q_dim, dao, T, e));
        attn_bwd(c, &a, l, n, max_plen);
#pragma omp parallel for schedule(static) if ((int64_t)T * c->q_dim >= BWD_PAR_MIN)
        for (int t = 0; t < T; t++) {
            const float *cs = cs_l + (size_t)t * hp->n_rot;
            op_rope_bwd(c->dq + (size_t)t * c->q_dim, hp->n_head, hd, cs, hp->n_rot, hp->rope_layout);
            op_rope_bwd(c->dk + (size_t)t * c->kv_dim, hp->n_head_kv, hd, cs, hp->n_rot, hp->rope_layout);
        }
        const float *dq = c->dq, *dk = c->dk;
        if (a.qp) {
            /* Through the per-head norms: datt is free again and holds dq before the norm. */
            memset(c->datt, 0, (size_t)T * c->q_dim * sizeof(float));
            memset(c->dkp, 0, (size_t)T * c->kv_dim * sizeof(float));
            op_rmsnorm_bwd_rows(c->datt, a.qp, L->q_norm, c->dq, T * hp->n_head, hd, eps);
            op_rmsnorm_bwd_rows(c->dkp, a.kp, L->k_norm, c->dk, T * hp->n_head_kv, hd, eps);
            dq = c->datt;
            dk = c->dkp;
        }
        WP(l, WS_Q, WP_BWD, dq, T, c->dxn, 0);
        WP(l, WS_K, WP_BWD, dk, T, c->dxn, 1);
        WP(l, WS_V, WP_BWD, c->dv, T, c->dxn, 1);
        if (c->lora_grad && (lora_at(c->wp.lora, l, LORA_Q) || lora_at(c->wp.lora, l, LORA_K) ||
                             lora_at(c->wp.lora, l, LORA_V))) {
            op_rmsnorm_rows(c->xn, a.x_in, L->attn_norm, T, d, eps);
            CHECK(weight_product_grad(&c->wp, c->lora_grad, l, WS_Q, c->xn, dq, T, e));
            CHECK(weight_product_grad(&c->wp, c->lora_grad, l, WS_K, c->xn, dk, T, e));
            CHECK(weight_product_grad(&c->wp, c->lora_grad, l, WS_V, c->xn, c->dv, T, e));
        }
        op_rmsnorm_bwd_rows(c->dx, a.x_in, L->attn_norm, c->dxn, T, d, eps);
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
    CHECK(ensure_adapters(c, T, keep, n, e));
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
            c->t_pos[t] = c->vP + c->s_plen[s] + j;
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
