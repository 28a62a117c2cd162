#include "engine/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/arch.h"
#include "engine/kernels.h"
#include "engine/lora.h"
#include "engine/quant.h"

/* Below this much elementwise work a loop stays on one thread: waking the team costs more, above
 * all when the cores are shared. Results never depend on it (rows are independent). */
#define OP_PAR_MIN (1 << 15)

/* ---- RMSNorm ---- */

void op_rmsnorm(float *y, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + (double)eps));
    for (int i = 0; i < n; i++)
        y[i] = x[i] * scale * w[i];
}

void op_rmsnorm_rows(float *y, const float *x, const float *w, int rows, int n, float eps)
{
#pragma omp parallel for schedule(static) if ((int64_t)rows * n >= OP_PAR_MIN)
    for (int r = 0; r < rows; r++)
        op_rmsnorm(y + (size_t)r * n, x + (size_t)r * n, w, n, eps);
}

/* dx_k += r w_k dy_k - (r^3 / n) x_k sum_i w_i dy_i x_i,  r = 1 / sqrt(mean(x^2) + eps). */
void op_rmsnorm_bwd(float *dx, const float *x, const float *w, const float *dy, int n, float eps)
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

void op_rmsnorm_bwd_rows(float *dx, const float *x, const float *w, const float *dy, int rows, int n, float eps)
{
#pragma omp parallel for schedule(static) if ((int64_t)rows * n >= OP_PAR_MIN)
    for (int r = 0; r < rows; r++)
        op_rmsnorm_bwd(dx + (size_t)r * n, x + (size_t)r * n, w, dy + (size_t)r * n, n, eps);
}

/* ---- bias ---- */

void op_add_bias(float *y, const float *b, int rows, int dim)
{
    if (!b)
        return;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < dim; i++)
            y[(size_t)r * dim + i] += b[i];
}

/* ---- RoPE ---- */

void op_rope_freqs(double *inv_freq, float base, int n_rot)
{
    for (int i = 0; i < n_rot / 2; i++)
        inv_freq[i] = pow((double)base, -2.0 * i / (double)n_rot);
}

void op_rope_table(float *cs, int pos, const double *inv_freq, int half)
{
    for (int i = 0; i < half; i++) {
        double a = (double)pos * inv_freq[i];
        cs[2 * i] = (float)cos(a);
        cs[2 * i + 1] = (float)sin(a);
    }
}

/* sign +1 rotates forward, -1 by the opposite angle. */
static void rope_one(float *x, const float *cs, int n_rot, int layout, float sign)
{
    const int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        const float c = cs[2 * i], s = sign * cs[2 * i + 1];
        float *pa = layout == ROPE_ADJACENT ? &x[2 * i] : &x[i];
        float *pb = layout == ROPE_ADJACENT ? &x[2 * i + 1] : &x[i + half];
        const float a = *pa, b = *pb;
        *pa = a * c - b * s;
        *pb = a * s + b * c;
    }
}

void op_rope(float *x, int n_heads, int hd, const float *cs, int n_rot, int layout)
{
    for (int h = 0; h < n_heads; h++)
        rope_one(x + (size_t)h * hd, cs, n_rot, layout, 1.0f);
}

void op_rope_bwd(float *dx, int n_heads, int hd, const float *cs, int n_rot, int layout)
{
    for (int h = 0; h < n_heads; h++)
        rope_one(dx + (size_t)h * hd, cs, n_rot, layout, -1.0f);
}

/* ---- attention ---- */

int op_attn_window(attn_seg *seg, int nseg, int first)
{
    int k = 0;
    for (int i = 0; i < nseg; i++) {
        attn_seg s = seg[i];
        if (s.hi <= first)
            continue;
        if (s.lo < first) {
            const size_t skip = (size_t)(first - s.lo);
            s.k += skip * s.ld;
            s.v += skip * s.ld;
            if (s.dk) {
                s.dk += skip * s.dld;
                s.dv += skip * s.dld;
            }
            s.lo = first;
        }
        seg[k++] = s;
    }
    return k;
}

/* Softmax weights of q over the segments into sc[lo..hi); returns 1 / (sum of exps). */
static float attn_probs(const float *q, const attn_seg *seg, int nseg, int hd, float scale, float *sc)
{
    float mx = -INFINITY;
    for (int g = 0; g < nseg; g++)
        for (int p = seg[g].lo; p < seg[g].hi; p++) {
            float s = kernel_dot_f32(q, seg[g].k + (size_t)(p - seg[g].lo) * seg[g].ld, hd) * scale;
            sc[p] = s;
            if (s > mx)
                mx = s;
        }
    float sum = 0.0f;
    for (int g = 0; g < nseg; g++)
        for (int p = seg[g].lo; p < seg[g].hi; p++) {
            sc[p] = expf(sc[p] - mx);
            sum += sc[p];
        }
    return 1.0f / sum;
}

void op_attn(const float *q, const attn_seg *seg, int nseg, int hd, float scale, float *sc, float *out)
{
    const float inv = attn_probs(q, seg, nseg, hd, scale, sc);
    memset(out, 0, (size_t)hd * sizeof *out);
    for (int g = 0; g < nseg; g++)
        for (int p = seg[g].lo; p < seg[g].hi; p++)
            kernel_axpy_f32(out, sc[p] * inv, seg[g].v + (size_t)(p - seg[g].lo) * seg[g].ld, hd);
}

/* With P = softmax(s), s_p = scale q.k_p, o = sum P_p v_p:
 * dv_p += P_p do;  dP_p = do.v_p;  ds_p = P_p (dP_p - sum_j P_j dP_j);  dq = scale sum ds_p k_p;
 * dk_p += scale ds_p q. */
void op_attn_bwd(const float *q, const float *dout, const attn_seg *seg, int nseg, int hd, float scale, float *P,
                 float *dP, float *dq)
{
    const float inv = attn_probs(q, seg, nseg, hd, scale, P);
    double dsum = 0.0;
    for (int g = 0; g < nseg; g++)
        for (int p = seg[g].lo; p < seg[g].hi; p++) {
            P[p] *= inv;
            dP[p] = kernel_dot_f32(dout, seg[g].v + (size_t)(p - seg[g].lo) * seg[g].ld, hd);
            dsum += (double)P[p] * dP[p];
        }
    memset(dq, 0, (size_t)hd * sizeof *dq);
    for (int g = 0; g < nseg; g++)
        for (int p = seg[g].lo; p < seg[g].hi; p++) {
            const size_t i = (size_t)(p - seg[g].lo);
            const float ds = P[p] * (dP[p] - (float)dsum) * scale;
            kernel_axpy_f32(dq, ds, seg[g].k + i * seg[g].ld, hd);
            kernel_axpy_f32(seg[g].dk + i * seg[g].dld, ds, q, hd);
            kernel_axpy_f32(seg[g].dv + i * seg[g].dld, P[p], dout, hd);
        }
}

/* ---- gated MLP activation ---- */

#define GELU_A 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_B 0.044715f

/* ggml's GELU with GGML_GELU_FP16 (its default on CPU): 0 below -10, x above 10, else a table
 * indexed by x rounded to fp16 holding fp16(gelu(that fp16 value)), computed in float as
 * 0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))). */
static float gelu_ggml(float x)
{
    if (x <= -10.0f)
        return 0.0f;
    if (x >= 10.0f)
        return x;
    const float t = fp16_to_f32(f32_to_fp16(x));
    return fp16_to_f32(f32_to_fp16(0.5f * t * (1.0f + tanhf(GELU_A * t * (1.0f + GELU_B * t * t)))));
}

void op_glu(float *h, const float *g, const float *u, int64_t n, int act)
{
    if (act == ACT_GELU_TANH_FP16) {
#pragma omp parallel for schedule(static) if (n * 8 >= OP_PAR_MIN)
        for (int64_t i = 0; i < n; i++)
            h[i] = gelu_ggml(g[i]) * u[i];
        return;
    }
    if (act == ACT_GELU_TANH) {
#pragma omp parallel for schedule(static) if (n * 8 >= OP_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            const float x = g[i];
            h[i] = 0.5f * x * (1.0f + tanhf(GELU_A * (x + GELU_B * x * x * x))) * u[i];
        }
        return;
    }
#pragma omp parallel for schedule(static) if (n * 8 >= OP_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void op_glu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n, int act)
{
    if (act != ACT_SILU) {
#pragma omp parallel for schedule(static) if (n * 8 >= OP_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            const float x = g[i], t = tanhf(GELU_A * (x + GELU_B * x * x * x));
            const float gelu = 0.5f * x * (1.0f + t);
            const float dgelu = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_A * (1.0f + 3.0f * GELU_B * x * x);
            du[i] = dh[i] * gelu;
            dg[i] = dh[i] * u[i] * dgelu;
        }
        return;
    }
#pragma omp parallel for schedule(static) if (n * 8 >= OP_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i], sg = 1.0f / (1.0f + expf(-x));
        du[i] = dh[i] * x * sg;
        dg[i] = dh[i] * u[i] * sg * (1.0f + x * (1.0f - sg));
    }
}

/* ---- soft-capping ---- */

void op_softcap(float *x, int64_t n, float c)
{
    if (!(c > 0.0f))
        return;
    for (int64_t i = 0; i < n; i++)
        x[i] = c * tanhf(x[i] / c);
}

void op_softcap_bwd(float *dx, const float *y, int64_t n, float c)
{
    if (!(c > 0.0f))
        return;
    for (int64_t i = 0; i < n; i++) {
        const float t = y[i] / c;
        dx[i] *= 1.0f - t * t;
    }
}

/* ---- weight products ---- */

const pwb_tensor *wprod_weight(const model *m, int layer, int slot)
{
    if (slot == WS_OUTPUT)
        return &m->output;
    if (layer < 0 || layer >= m->hp.n_layer || slot < 0 || slot >= WS_COUNT_)
        return NULL;
    const model_layer *L = &m->layers[layer];
    const pwb_tensor *w[WS_COUNT_] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down, NULL};
    return w[slot];
}

static int64_t rows_of(const pwb_tensor *W)
{
    return W->ne[1] * W->ne[2] * W->ne[3];
}

int weight_product_grad(const wprod *c, lora *grad, int layer, int slot, const float *x, const float *dy, int B,
                        pwb_err *e)
{
    if (!c->lora || !grad || slot >= WS_OUTPUT || !lora_at(c->lora, layer, slot))
        return PWB_OK;
    const lora_mat *t = lora_at(c->lora, layer, slot);
    return lora_bwd(c->lora, grad, layer, slot, x, (size_t)t->in, dy, (size_t)t->out, B, NULL, 0, 0, e);
}

_Static_assert((int)LORA_Q == (int)WS_Q && (int)LORA_K == (int)WS_K && (int)LORA_V == (int)WS_V &&
                   (int)LORA_O == (int)WS_O && (int)LORA_GATE == (int)WS_GATE && (int)LORA_UP == (int)WS_UP &&
                   (int)LORA_DOWN == (int)WS_DOWN,
               "LoRA's modules are numbered as the weight slots");

/* dx (+)= dy W for the base weight alone. */
static int base_bwd(const wprod *c, const pwb_tensor *W, int layer, int slot, const float *in, int B, float *out,
                    int acc, pwb_err *e)
{
    const int64_t K = W->ne[0], M = rows_of(W);
    const pwb_tensor *T = c->wt && slot != WS_OUTPUT ? &c->wt[(size_t)layer * WS_COUNT_ + (size_t)slot] : NULL;
    if (T && T->data) {
        if (!acc)
            return kernel_matmul(T, in, B, out, e);
        if ((size_t)B * (size_t)K > c->tmp_cap)
            return err_set(e, PWB_EINVAL, "weight product: scratch too small");
        int rc = kernel_matmul(T, in, B, c->tmp, e);
        if (rc != PWB_OK)
            return rc;
        kernel_axpy_f32(out, 1.0f, c->tmp, (int64_t)B * K);
        return PWB_OK;
    }
    /* Tiles of token rows, so each weight row's update of the gradient stays in cache. */
    const int tile = c->tile_rows > 0 ? c->tile_rows : 128;
    for (int r0 = 0; r0 < B; r0 += tile) {
        const int nb = B - r0 < tile ? B - r0 : tile;
        int rc = kernel_matmul_t(W, in + (size_t)r0 * M, nb, out + (size_t)r0 * K, acc, e);
        if (rc != PWB_OK)
            return rc;
    }
    return PWB_OK;
}

int weight_product(const wprod *c, int layer, int slot, int dir, const float *in, int B, float *out, int acc,
                   pwb_err *e)
{
    const pwb_tensor *W = wprod_weight(c->m, layer, slot);
    if (!W)
        return err_set(e, PWB_EINVAL, "weight product: no weight (layer %d, slot %d)", layer, slot);
    const int64_t K = W->ne[0], M = rows_of(W);
    /* LoRA's modules are the layers' slots (enum lora_module follows enum wslot up to WS_DOWN). */
    const int adapted = c->lora && slot < WS_OUTPUT && lora_at(c->lora, layer, slot);
    int rc;
    if (dir == WP_FWD) {
        if (acc)
            return err_set(e, PWB_EINVAL, "weight product: a forward product cannot accumulate");
        rc = !c->exact ? kernel_matmul(W, in, B, out, e)
                       : kernel_matmul_exact(W, in, K > 0 ? (size_t)K : 0, B, out, M > 0 ? (size_t)M : 0, e);
        if (rc == PWB_OK && adapted)
            rc = lora_fwd(c->lora, layer, slot, in, (size_t)K, B, out, (size_t)M, 0, e);
        return rc;
    }
    rc = base_bwd(c, W, layer, slot, in, B, out, acc, e);
    if (rc == PWB_OK && adapted)
        rc = lora_bwd(c->lora, NULL, layer, slot, NULL, 0, in, (size_t)M, B, out, (size_t)K, 0, e);
    return rc;
}
