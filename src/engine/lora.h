/* LoRA (Hu et al. 2021) on the frozen, still quantized, weights: each adapted product
 * y = x W^T becomes y = x W^T + s * (drop(x) A^T) B^T, s = alpha / r, with A [r][in] and B [out][r]
 * in F32. The adapter is applied unmerged, so one base model serves many adapters.
 *
 * The forward pass (forward.c, backward.c) calls lora_fwd after each adapted base product; the
 * backward pass calls lora_bwd with the product's input and output gradient, which adds the
 * gradients of A and B (never of W) and the adapter's share of the input gradient.
 *
 * Dropout (training only) is a hash of (seed, layer, module, row, column), so the backward
 * recomputes the forward's mask instead of storing it.
 *
 * Layout: pwb's rows of q and k follow the model's RoPE pairing; for a GGUF Llama file those are
 * llama.cpp's permuted rows, so B of q and k is permuted when read from or written to PEFT's
 * (Hugging Face) order: lora_permute_rows. */
#ifndef PWB_ENGINE_LORA_H
#define PWB_ENGINE_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "engine/model.h"
#include "util/err.h"

enum lora_module { LORA_Q, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_N_MODULES };

#define LORA_MAX_RANK 4096

typedef struct lora_mat {
    int in, out;
    float *a;   /* [r][in], NULL when the module is not adapted */
    float *b;   /* [out][r] */
} lora_mat;

typedef struct lora {
    int r;
    float alpha;
    unsigned targets;     /* bit (1u << enum lora_module) */
    int n_layer;
    lora_mat *mats;       /* [n_layer][LORA_N_MODULES] */
    float dropout;        /* probability; applied only while training (lora_set_training) */
    uint64_t drop_seed;
    int training;
} lora;

/* "q", "k", "v", "o", "gate", "up", "down" or PEFT's "q_proj" ... "down_proj"; -1 otherwise. */
int lora_module_parse(const char *name);
const char *lora_module_name(int mod);       /* "q" ... */
const char *lora_module_peft(int mod);       /* "self_attn.q_proj" ... "mlp.down_proj" */
/* A list separated by commas, spaces or dashes ("q,v", "q-v": a name, as sweeps want) into a
 * target mask; 0 on an unknown name. */
unsigned lora_targets_parse(const char *list);

/* A zero adapter shaped for m (A and B zero). */
int lora_new(lora *l, const model *m, int r, float alpha, unsigned targets, pwb_err *e);
void lora_free(lora *l);
/* Same shape as src, zero-filled (e.g. for gradients). */
int lora_new_like(lora *dst, const lora *src, pwb_err *e);
int lora_copy_values(lora *dst, const lora *src); /* same shape; -1 otherwise */
void lora_zero(lora *l);
float lora_scale(const lora *l);
const lora_mat *lora_at(const lora *l, int layer, int mod); /* NULL when not adapted */
lora_mat *lora_at_mut(lora *l, int layer, int mod);
/* Trainable values in total. */
size_t lora_n_params(const lora *l);
/* PEFT's initialisation: A kaiming-uniform with a = sqrt(5) (uniform in +-1/sqrt(in)), B zero. */
void lora_init_peft(lora *l, uint64_t seed);
void lora_set_training(lora *l, int training, uint64_t step_seed);

/* y[B][out] (row stride ldy) += s * (drop(x) A^T) B^T for the rows of x [B][in] (stride ldx).
 * row0 numbers the rows for dropout (the same row must get the same number in lora_bwd). */
int lora_fwd(const lora *l, int layer, int mod, const float *x, size_t ldx, int B, float *y, size_t ldy,
             int row0, pwb_err *e);
/* For dy [B][out] (stride ldy), the gradient of y with respect to the product's output:
 *   g  += gradients of A and B (g shaped like l; may be NULL: none, and then x may be NULL),
 *   dx [B][in] (stride ldx) += s * (dy B) A  (masked as the forward's dropout; dx may be NULL). */
int lora_bwd(const lora *l, lora *g, int layer, int mod, const float *x, size_t ldx, const float *dy, size_t ldy,
             int B, float *dx, size_t ldx_out, int row0, pwb_err *e);

/* Between pwb's row order and Hugging Face's for an output-side matrix of q (kv = 0) or k (kv = 1)
 * ([rows][cols], rows = heads * head_dim): to_hf = 1 maps pwb's rows to HF's. A no-op for models
 * whose RoPE pairs halves (their rows are HF's already). */
int lora_permute_rows(const model *m, int kv, float *w, int cols, int to_hf, pwb_err *e);

#endif
