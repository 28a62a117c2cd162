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
 * The backward walks this in reverse; the products with W^T become kernel_matmul_t (dx = dy W),
 * the attention probabilities are recomputed from the kept q and k rather than stored. */
#include "engine/backward.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"
#include "engine/kernels.h"
#include "engine/quant.h"

#define BWD_LOGIT_ROWS 32          /* scored rows per output-head product: bounds the logits */
#define BWD_WBUF_FLOATS (1 << 20)  /* exact mode: dequantized weight rows per block (4 MiB) */
#define BWD_PAR_MIN (1 << 15)      /* below this much elementwise work a loop stays serial */
#define BWD_MAX_TOKENS (1 << 20)

struct bwd_ctx {
    const model *m;
    bwd_opts o;
    int d, q_dim, kv_dim, ff, n_layer, wide;
    /* per run, grown as needed */
    int cap_T, cap_keep;            /* tokens the buffers hold; whether per-layer copies exist */
    float *act;                     /* kept activations (see act_* below) */
    size_t act_floats;
    float *xn, *att, *h;            /* forward scratch [T][wide], [T][q_dim], [T][ff] */
    float *dx, *dxn, *datt, *dq, *dk, *dv, *du; /* backward scratch */
    float *cs;                      /* [T][n_rot]: cos, sin pairs */
    int *t_seq, *t_pos;             /* per token: its sequence, its position in it */
    int *seq_base;                  /* per sequence: first token index (n + 1 entries) */
    int cap_seqs;
    float *scores;                  /* [threads][2 * cap_len] */
    size_t cap_len;
    int cap_threads;
    float *lg, *dlg, *xf, *dxf;     /* head: [BWD_LOGIT_ROWS][V], [.][V], [.][d], [.][d] */
    float *wbuf;                    /* exact mode: dequantized weight rows */
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

static int is_float_type(int t)
{
    return t == DT_F32 || t == DT_F16 || t == DT_BF16;
}

/* ---- weight products ----------------------------------------------------------------------- */

/* y[B][M] = x[B][K] W^T. */
static int mm(bwd_ctx *c, const pwb_tensor *W, const float *x, int B, float *y, pwb_err *e)
{
    if (!c->o.exact || is_float_type(W->type))
        return kernel_matmul(W, x, B, y, e);
    /* Exact mode: dequantize blocks of rows, then an F32 product writing columns [r0, r0+nr). */
    const int64_t K = W->ne[0], M = W->ne[1] * W->ne[2] * W->ne[3];
    const size_t rb = quant_row_size(W->type, K);
    if (rb == 0 || K <= 0 || M <= 0)
        return err_set(e, PWB_EINVAL, "tensor '%s': bad shape", W->name ? W->name : "?");
    int64_t per = BWD_WBUF_FLOATS / K;
    if (per < 1)
        per = 1;
    for (int64_t r0 = 0; r0 < M; r0 += per) {
        const int64_t nr = M - r0 < per ? M - r0 : per;
        const unsigned char *src = (const unsigned char *)W->data + (size_t)r0 * rb;
        int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (nr * K >= BWD_PAR_MIN)
        for (int64_t r = 0; r < nr; r++)
            bad |= dequant_row(W->type, src + (size_t)r * rb, c->wbuf + (size_t)r * K, K) != PWB_OK;
        if (bad)
            return err_set(e, PWB_EUNSUP, "tensor '%s': cannot dequantize type %s", W->name ? W->name : "?",
                           quant_type_name(W->type));
        pwb_tensor t = {W->name, DT_F32, 2, {K, nr, 1, 1}, c->wbuf, (size_t)(nr * K) * sizeof(float)};
        int rc = kernel_matmul_ex(&t, x, (size_t)K, B, y + r0, (size_t)M, e);
        if (rc != PWB_OK)
            return rc;
    }
    return PWB_OK;
}

/* dx[B][K] (+)= dy[B][M] W, in tiles of rows so each weight row's update stays in cache. */
static int mmt(bwd_ctx *c, const pwb_tensor *W, const float *dy, int B, float *dx, int acc, pwb_err *e)
{
    const int64_t K = W->ne[0], M = W->ne[1] * W->ne[2] * W->ne[3];
    const int tile = c->o.tile_rows > 0 ? c->o.tile_rows : 128;
    for (int r0 = 0; r0 < B; r0 += tile) {
        const int nb = B - r0 < tile ? B - r0 : tile;
        int rc = kernel_matmul_t(W, dy + (size_t)r0 * M, nb, dx + (size_t)r0 * K, acc, e);
        if (rc != PWB_OK)
            return rc;
    }
    return PWB_OK;
}

#define CHECK(x)                                                                                              \
    do {                                                                                                      \
        int rc_ = (x);                                                                                        \
        if (rc_ != PWB_OK)                                                                                    \
            return rc_;                                                                                       \
    } while (0)

/* ---- context ------------------------------------------------------------------------------- */

static void free_run_buffers(bwd_ctx *c)
{
    float **f[] = {&c->act, &c->xn, &c->att, &c->h, &c->dx, &c->dxn, &c->datt, &c->dq, &c->dk, &c->dv, &c->du, &c->cs};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        free(*f[i]);
        *f[i] = NULL;
    }
    free(c->t_seq);
    free(c->t_pos);
    c->t_seq = c->t_pos = NULL;
    c->cap_T = 0;
    c->act_floats = 0;
}

void bwd_ctx_free(bwd_ctx *c)
{
    if (!c)
        return;
    free_run_buffers(c);
    free(c->seq_base);
    free(c->scores);
    free(c->lg);
    free(c->dlg);
    free(c->xf);
    free(c->dxf);
    free(c->wbuf);
    free(c->inv_freq);
    free(c);
}

int bwd_ctx_new(bwd_ctx **out, const model *m, const bwd_opts *o, pwb_err *e)
{
    *out = NULL;
    const model_hparams *hp = &m->hp;
    if (hp->n_layer <= 0 || hp->n_embd <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 ||
        hp->n_head % hp->n_head_kv || hp->head_dim <= 0 || hp->n_rot > hp->head_dim || hp->n_rot % 2 ||
        hp->n_ff <= 0 || hp->n_vocab <= 0)
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
    if (c->o.exact)
        c->wbuf = malloc((size_t)(BWD_WBUF_FLOATS > c->d + c->ff ? BWD_WBUF_FLOATS : 2 * (c->d + c->ff)) *
                         sizeof(float));
    if (!c->lg || !c->dlg || !c->xf || !c->dxf || !c->inv_freq || (c->o.exact && !c->wbuf)) {
        bwd_ctx_free(c);
        return err_set(e, PWB_ENOMEM, "out of memory (backward context)");
    }
    for (int i = 0; i < hp->n_rot / 2; i++)
        c->inv_freq[i] = pow((double)hp->rope_base, -2.0 * i / (double)hp->n_rot);
    *out = c;
    return PWB_OK;
}

size_t bwd_ctx_bytes(const bwd_ctx *c)
{
    return c ? c->bytes : 0;
}

static size_t layer_floats(const bwd_ctx *c)
{
    /* Xm, Q, K, V, G, U per token */
    return (size_t)c->d + (size_t)c->q_dim + 2 * (size_t)c->kv_dim + 2 * (size_t)c->ff;
}

static int ensure(bwd_ctx *c, int T, int keep, int n_seqs, size_t max_len, pwb_err *e)
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
            c->dq = malloc(t * (size_t)c->q_dim * sizeof(float));
            c->dk = malloc(t * (size_t)c->kv_dim * sizeof(float));
            c->dv = malloc(t * (size_t)c->kv_dim * sizeof(float));
            c->du = malloc(t * (size_t)c->ff * sizeof(float));
            ok = c->dx && c->dxn && c->datt && c->dq && c->dk && c->dv && c->du;
        }
        if (!ok) {
            free_run_buffers(c);
            c->cap_keep = 0;
            return err_set(e, PWB_ENOMEM, "out of memory (training activations for %d tokens)", T);
        }
        c->cap_T = T;
        c->cap_keep = keep;
        size_t scratch = t * ((size_t)c->wide + c->q_dim + c->ff + c->m->hp.n_rot + 1);
        if (keep)
            scratch += t * ((size_t)c->d + c->wide + 2 * (size_t)c->q_dim + 2 * (size_t)c->kv_dim + c->ff);
        c->bytes = (c->act_floats + scratch) * sizeof(float);
    }
    if (n_seqs + 1 > c->cap_seqs) {
        free(c->seq_base);
        c->seq_base = malloc(((size_t)n_seqs + 1) * sizeof(int));
        if (!c->seq_base) {
            c->cap_seqs = 0;
            return err_set(e, PWB_ENOMEM, "out of memory");
        }
        c->cap_seqs = n_seqs + 1;
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
        const int base = c->seq_base[c->t_seq[t]], npos = c->t_pos[t] + 1, kvh = h / group;
        const float *qv = a->q + (size_t)t * q_dim + (size_t)h * hd;
        const float *K = a->k + (size_t)base * kv_dim + (size_t)kvh * hd;
        const float *Vv = a->v + (size_t)base * kv_dim + (size_t)kvh * hd;
        float *sc = c->scores + (size_t)omp_get_thread_num() * 2 * c->cap_len;
        float mx = -INFINITY;
        for (int p = 0; p < npos; p++) {
            sc[p] = kernel_dot_f32(qv, K + (size_t)p * kv_dim, hd) * scale;
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
            kernel_axpy_f32(o, sc[p] * inv, Vv + (size_t)p * kv_dim, hd);
    }
}

/* From do (c->datt) to dq, dk, dv (overwritten). One task per (sequence, kv head) owns that
 * head's dk/dv rows and its query heads' dq rows, so nothing is shared between threads. */
static void attn_bwd(bwd_ctx *c, const layer_act *a, int n_seqs)
{
    const model_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, n_kv = hp->n_head_kv, group = hp->n_head / hp->n_head_kv;
    const int q_dim = c->q_dim, kv_dim = c->kv_dim;
    const float scale = 1.0f / sqrtf((float)hd);
    int64_t work = 0;
    for (int s = 0; s < n_seqs; s++) {
        int64_t len = c->seq_base[s + 1] - c->seq_base[s];
        work += len * len * q_dim;
    }
#pragma omp parallel for schedule(dynamic, 1) if (work >= BWD_PAR_MIN)
    for (int64_t task = 0; task < (int64_t)n_seqs * n_kv; task++) {
        const int s = (int)(task / n_kv), kvh = (int)(task % n_kv);
        const int base = c->seq_base[s], len = c->seq_base[s + 1] - base;
        const float *K = a->k + (size_t)base * kv_dim + (size_t)kvh * hd;
        const float *Vv = a->v + (size_t)base * kv_dim + (size_t)kvh * hd;
        float *dK = c->dk + (size_t)base * kv_dim + (size_t)kvh * hd;
        float *dV = c->dv + (size_t)base * kv_dim + (size_t)kvh * hd;
        for (int p = 0; p < len; p++) {
            memset(dK + (size_t)p * kv_dim, 0, (size_t)hd * sizeof(float));
            memset(dV + (size_t)p * kv_dim, 0, (size_t)hd * sizeof(float));
        }
        float *P = c->scores + (size_t)omp_get_thread_num() * 2 * c->cap_len;
        float *dP = P + c->cap_len;
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            for (int i = 0; i < len; i++) {
                const size_t t = (size_t)(base + i);
                const float *qv = a->q + t * q_dim + (size_t)h * hd;
                const float *dO = c->datt + t * q_dim + (size_t)h * hd;
                float *dq = c->dq + t * q_dim + (size_t)h * hd;
                float mx = -INFINITY;
                for (int p = 0; p <= i; p++) {
                    P[p] = kernel_dot_f32(qv, K + (size_t)p * kv_dim, hd) * scale;
                    if (P[p] > mx)
                        mx = P[p];
                }
                float sum = 0.0f;
                for (int p = 0; p <= i; p++) {
                    P[p] = expf(P[p] - mx);
                    sum += P[p];
                }
                const float inv = 1.0f / sum;
                double dsum = 0.0;
                for (int p = 0; p <= i; p++) {
                    P[p] *= inv;
                    dP[p] = kernel_dot_f32(dO, Vv + (size_t)p * kv_dim, hd);
                    dsum += (double)P[p] * dP[p];
                }
                memset(dq, 0, (size_t)hd * sizeof *dq);
                for (int p = 0; p <= i; p++) {
                    const float ds = P[p] * (dP[p] - (float)dsum) * scale;
                    kernel_axpy_f32(dq, ds, K + (size_t)p * kv_dim, hd);
                    kernel_axpy_f32(dK + (size_t)p * kv_dim, ds, qv, hd);
                    kernel_axpy_f32(dV + (size_t)p * kv_dim, P[p], dO, hd);
                }
            }
        }
    }
}

/* ---- one run ------------------------------------------------------------------------------- */

static int check_seqs(const bwd_ctx *c, const bwd_seq *seqs, int n, int64_t *T, size_t *max_len, pwb_err *e)
{
    const model_hparams *hp = &c->m->hp;
    *T = 0;
    *max_len = 1;
    if (n <= 0 || !seqs)
        return err_set(e, PWB_EINVAL, "backward: empty batch");
    for (int i = 0; i < n; i++) {
        const bwd_seq *s = &seqs[i];
        if (s->n_embeds < 0 || s->n_ids < 0 || (s->n_embeds && !s->embeds) || (s->n_ids && !s->ids))
            return err_set(e, PWB_EINVAL, "backward: sequence %d: bad input", i);
        const int64_t len = (int64_t)s->n_embeds + s->n_ids;
        if (len <= 0)
            return err_set(e, PWB_EINVAL, "backward: sequence %d is empty", i);
        if (len > hp->n_ctx)
            return err_set(e, PWB_ERANGE, "backward: sequence %d: %lld positions exceed the context of %d", i,
                           (long long)len, hp->n_ctx);
        for (int j = 0; j < s->n_ids; j++)
            if (s->ids[j] < 0 || s->ids[j] >= hp->n_vocab)
                return err_set(e, PWB_EINVAL, "backward: sequence %d: token id %d out of range", i, (int)s->ids[j]);
        if (s->n_tgt < 0 || (s->n_tgt && (!s->tgt_pos || !s->targets)))
            return err_set(e, PWB_EINVAL, "backward: sequence %d: bad targets", i);
        for (int j = 0; j < s->n_tgt; j++) {
            if (s->tgt_pos[j] < 0 || s->tgt_pos[j] >= len)
                return err_set(e, PWB_EINVAL, "backward: sequence %d: target position %d out of range", i,
                               s->tgt_pos[j]);
            if (s->targets[j] < 0 || s->targets[j] >= hp->n_vocab)
                return err_set(e, PWB_EINVAL, "backward: sequence %d: target id %d out of range", i,
                               (int)s->targets[j]);
        }
        if ((size_t)len > *max_len)
            *max_len = (size_t)len;
        *T += len;
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
        const bwd_seq *s = &seqs[c->t_seq[t]];
        const int j = c->t_pos[t];
        float *dst = x0 + (size_t)t * d;
        if (j < s->n_embeds)
            memcpy(dst, s->embeds + (size_t)j * d, (size_t)d * sizeof *dst);
        else
            CHECK(kernel_get_row(&m->tok_embd, s->ids[j - s->n_embeds], dst, e));
        float *cs = c->cs + (size_t)t * hp->n_rot;
        for (int i = 0; i < hp->n_rot / 2; i++) {
            const double ang = (double)j * c->inv_freq[i];
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
static int head(bwd_ctx *c, bwd_seq *seqs, int n, int T, int grad, double *loss, float *xL, pwb_err *e)
{
    const model *m = c->m;
    const int d = c->d, V = m->hp.n_vocab;
    const float eps = m->hp.norm_eps;
    const double w = 1.0 / n;
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
            rows_t[nb] = c->seq_base[s] + seqs[s].tgt_pos[j];
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

static int backward_layers(bwd_ctx *c, int n, int T, pwb_err *e)
{
    const model *m = c->m;
    const model_hparams *hp = &m->hp;
    const int d = c->d, hd = hp->head_dim, ff = c->ff;
    for (int l = hp->n_layer - 1; l >= 0; l--) {
        const model_layer *L = &m->layers[l];
        layer_act a = act_of(c, l, T, 1);
        /* SwiGLU MLP: dh = dx Wd; dg = dh u silu'(g); du = dh silu(g). */
        float *dh = c->h;
        CHECK(mmt(c, &L->w_down, c->dx, T, dh, 0, e));
#pragma omp parallel for schedule(static) if ((int64_t)T * ff * 8 >= BWD_PAR_MIN)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < ff; i++) {
                const size_t k = (size_t)t * ff + i;
                const float g = a.g[k], sg = 1.0f / (1.0f + expf(-g));
                c->du[k] = dh[k] * g * sg;
                dh[k] = dh[k] * a.u[k] * sg * (1.0f + g * (1.0f - sg));
            }
        CHECK(mmt(c, &L->w_gate, dh, T, c->dxn, 0, e));
        CHECK(mmt(c, &L->w_up, c->du, T, c->dxn, 1, e));
        rmsnorm_bwd_rows(c->dx, a.xm, L->ffn_norm, c->dxn, T, d, hp->norm_eps);
        /* Attention. */
        CHECK(mmt(c, &L->wo, c->dx, T, c->datt, 0, e));
        attn_bwd(c, &a, n);
        for (int t = 0; t < T; t++) {
            const float *cs = c->cs + (size_t)t * hp->n_rot;
            for (int h = 0; h < hp->n_head; h++)
                rope_bwd(c->dq + (size_t)t * c->q_dim + (size_t)h * hd, cs, hp->n_rot, hp->rope_layout);
            for (int h = 0; h < hp->n_head_kv; h++)
                rope_bwd(c->dk + (size_t)t * c->kv_dim + (size_t)h * hd, cs, hp->n_rot, hp->rope_layout);
        }
        CHECK(mmt(c, &L->wq, c->dq, T, c->dxn, 0, e));
        CHECK(mmt(c, &L->wk, c->dk, T, c->dxn, 1, e));
        CHECK(mmt(c, &L->wv, c->dv, T, c->dxn, 1, e));
        rmsnorm_bwd_rows(c->dx, a.x_in, L->attn_norm, c->dxn, T, d, hp->norm_eps);
    }
    return PWB_OK;
}

int bwd_run(bwd_ctx *c, bwd_seq *seqs, int n, int grad, double *loss, pwb_err *e)
{
    int64_t T64;
    size_t max_len;
    CHECK(check_seqs(c, seqs, n, &T64, &max_len, e));
    const int T = (int)T64, keep = grad != 0;
    CHECK(ensure(c, T, keep, n, max_len, e));
    int t = 0;
    for (int s = 0; s < n; s++) {
        c->seq_base[s] = t;
        const int len = seqs[s].n_embeds + seqs[s].n_ids;
        for (int j = 0; j < len; j++, t++) {
            c->t_seq[t] = s;
            c->t_pos[t] = j;
        }
    }
    c->seq_base[n] = t;
    CHECK(forward_layers(c, seqs, T, keep, e));
    float *xL = act_of(c, c->n_layer - 1, T, keep).x_out;
    CHECK(head(c, seqs, n, T, grad, loss, xL, e));
    if (!grad)
        return PWB_OK;
    CHECK(backward_layers(c, n, T, e));
    /* dx is now dL/d(input embeddings); hand the leading vectors' rows out. */
    const int d = c->d;
    for (int s = 0; s < n; s++) {
        if (!seqs[s].d_embeds)
            continue;
        for (int j = 0; j < seqs[s].n_embeds; j++)
            kernel_axpy_f32(seqs[s].d_embeds + (size_t)j * d, 1.0f, c->dx + (size_t)(c->seq_base[s] + j) * d, d);
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
