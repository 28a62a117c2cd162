/* Layer operations of the decoder, each forward beside its backward (as llm.c pairs
 * layernorm_forward with layernorm_backward), shared by the inference forward (forward.c) and the
 * training forward and backward (backward.c); and weight_product, the one function through which
 * every weight matrix multiplies activations in either pass.
 *
 * Rows are row-major F32. Backward functions ADD into their input gradient unless they say
 * otherwise, so contributions from several paths sum. */
#ifndef PWB_ENGINE_OPS_H
#define PWB_ENGINE_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/model.h"
#include "util/err.h"

/* ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w ---- */
void op_rmsnorm(float *y, const float *x, const float *w, int n, float eps); /* y may be x */
void op_rmsnorm_rows(float *y, const float *x, const float *w, int rows, int n, float eps);
/* dx += d/dx [rmsnorm(x) * w] applied to dy */
void op_rmsnorm_bwd(float *dx, const float *x, const float *w, const float *dy, int n, float eps);
void op_rmsnorm_bwd_rows(float *dx, const float *x, const float *w, const float *dy, int rows, int n, float eps);

/* ---- bias: y[r] += b (its gradient to the input is the identity) ---- */
void op_add_bias(float *y, const float *b, int rows, int dim); /* b may be NULL */

/* ---- RoPE ---- */
/* inv_freq[i] = base^(-2i / n_rot), i < n_rot / 2 */
void op_rope_freqs(double *inv_freq, float base, int n_rot);
/* cs[2i], cs[2i+1] = cos, sin of pos * inv_freq[i] */
void op_rope_table(float *cs, int pos, const double *inv_freq, int half);
/* Rotates the n_heads head vectors (hd floats apart) of one token in place; the backward rotates
 * the gradient by the opposite angle (the transpose). layout: enum rope_layout. */
void op_rope(float *x, int n_heads, int hd, const float *cs, int n_rot, int layout);
void op_rope_bwd(float *dx, int n_heads, int hd, const float *cs, int n_rot, int layout);

/* ---- attention of one query head ----
 * The keys a query sees come in segments of consecutive positions [lo, hi): position p's key is
 * k + (p - lo) * ld (same for v). Segments are given in ascending position order, which fixes the
 * summation order (a reused prefix gives bitwise the results of a full recompute). The backward
 * adds its key and value gradients at dk/dv + (p - lo) * dld. */
typedef struct attn_seg {
    const float *k, *v;
    size_t ld;
    float *dk, *dv;
    size_t dld;
    int lo, hi;
} attn_seg;

/* Drops positions before first (a sliding window): segments shrink or vanish; returns the count. */
int op_attn_window(attn_seg *seg, int nseg, int first);
/* out[hd] = softmax(scale q.k) v over the segments. sc: scratch indexed by position. */
void op_attn(const float *q, const attn_seg *seg, int nseg, int hd, float scale, float *sc, float *out);
/* From dout: dq (overwritten), dk and dv (added into the segments' gradient rows). P, dP: scratch
 * indexed by position. */
void op_attn_bwd(const float *q, const float *dout, const attn_seg *seg, int nseg, int hd, float scale, float *P,
                 float *dP, float *dq);

/* ---- gated MLP activation: h = act(g) * u ---- */
void op_glu(float *h, const float *g, const float *u, int64_t n, int act); /* h may be g; act: enum arch_act */
/* dg, du (overwritten) from dh */
void op_glu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n, int act);

/* ---- logit soft-capping: y = c tanh(x / c) ---- */
void op_softcap(float *x, int64_t n, float c);                    /* in place; c <= 0: identity */
void op_softcap_bwd(float *dx, const float *y, int64_t n, float c); /* dx *= 1 - (y/c)^2, y capped */

/* ---- weight products ----
 * Every product of a weight matrix with activations, forward and backward, goes through
 * weight_product(), named by (layer, slot): the single place where an adapter (LoRA) adds its
 * low-rank term, or a kernel is chosen. */
enum wslot { WS_Q, WS_K, WS_V, WS_O, WS_GATE, WS_UP, WS_DOWN, WS_OUTPUT, WS_COUNT_ };
enum wdir { WP_FWD = 0, WP_BWD = 1 };

typedef struct wprod {
    const model *m;
    /* 0: quantized weights see 8-bit activations (kernel_matmul); 1: exact F32 products
     * (kernel_matmul_exact forward, kernel_matmul_t backward). */
    int exact;
    /* Optional transposed Q8_0 copies, [n_layer * WS_COUNT_] (entries with data NULL absent):
     * a backward product with a copy is a forward kernel_matmul on it. */
    const pwb_tensor *wt;
    int tile_rows;          /* backward without a copy: token rows per kernel_matmul_t call (0: 128) */
    float *tmp;             /* backward with a copy and acc: scratch of tmp_cap floats */
    size_t tmp_cap;
    /* A LoRA adapter (engine/lora.h) on the layers' products, unmerged: the forward adds its
     * low-rank term, the backward its share of the input gradient; NULL: none. */
    const struct lora *lora;
} wprod;

/* The weight of (layer, slot); layer is ignored for WS_OUTPUT. NULL when out of range. */
const pwb_tensor *wprod_weight(const model *m, int layer, int slot);

/* W = wprod_weight(c->m, layer, slot), [M rows, K cols]:
 *   WP_FWD: out[B][M] = in[B][K] W^T        (acc must be 0)
 *   WP_BWD: out[B][K] (+)= in[B][M] W       (acc: add to out, else overwrite) */
int weight_product(const wprod *c, int layer, int slot, int dir, const float *in, int B, float *out, int acc,
                   pwb_err *e);
/* The gradients of the adapter's own weights at (layer, slot) ADDED to grad (shaped like c->lora),
 * from the forward product's input x [B][K] and the gradient dy [B][M] of its output. No base
 * weight gets a gradient. A no-op without an adapter there. */
int weight_product_grad(const wprod *c, struct lora *grad, int layer, int slot, const float *x, const float *dy,
                        int B, pwb_err *e);

#endif
