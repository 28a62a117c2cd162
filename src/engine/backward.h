/* Training forward and backward to the input embeddings, for prompt tuning on a frozen model.
 *
 * bwd_run runs a batch of sequences forward, keeping (in F32) the activations the backward pass
 * needs, computes the cross-entropy of chosen target tokens, and propagates its gradient back
 * through the output head and final norm, every layer (residuals, RMSNorm, attention with RoPE in
 * either layout, grouped-query heads, the causal mask, SwiGLU) to the input embeddings. The
 * weights are frozen: no weight gradient is ever formed, so the backward costs about one more
 * forward (kernel_matmul_t for every weight product).
 *
 * Sequences of different lengths are stacked without padding (each attends only to its own
 * earlier positions), which is the same as a padded batch with a padding mask; bwd_seq_padded
 * builds that view from a padded [B][stride] id matrix and per-sequence lengths.
 *
 * Loss: L = (1/n_scored) * sum over sequences of sum over their targets of -log p(target), where
 * n_scored counts the sequences that have targets: the mean over examples of the negative
 * log-likelihood of each one's target tokens (a verbalized label, an answer). Positions whose next token is not a target cost nothing but still
 * carry gradient through attention. */
#ifndef PWB_ENGINE_BACKWARD_H
#define PWB_ENGINE_BACKWARD_H

#include <stddef.h>
#include <stdint.h>

#include "engine/model.h"
#include "util/err.h"

typedef struct bwd_seq {
    /* An earlier sequence of the same batch whose whole input comes first: this sequence's input
     * continues it (positions start at its length) and attends to it. Shared prompt prefixes
     * (the soft prompt, an instruction) are then computed once, forward and backward, for the
     * whole batch. The prefix must not have a prefix itself. NULL: none. */
    const struct bwd_seq *prefix;
    const float *embeds;     /* [n_embeds][n_embd] leading input vectors (a soft prompt), or NULL */
    int n_embeds;
    const int32_t *ids;      /* then n_ids token ids */
    int n_ids;
    int n_tgt;               /* scored positions: the model's output at input position tgt_pos[i] */
    const int *tgt_pos;      /* (0-based over embeds + ids) is scored against targets[i] */
    const int32_t *targets;
    double *tgt_logprob;     /* out, optional [n_tgt]: log p(targets[i]) */
    float *d_embeds;         /* out, optional [n_embeds][n_embd]: dL/d(embeds) is ADDED here, so
                                sequences sharing one soft prompt may share one buffer */
} bwd_seq;

typedef struct bwd_opts {
    /* 0 (default): weight products through kernel_matmul exactly as the engine's forward does
     * (quantized weights see 8-bit activations), so the loss is the one the ranking scores.
     * 1: quantized weights are dequantized (in row blocks) and dotted with F32 activations, so
     * the forward is a smooth function whose gradient the backward computes exactly; for
     * gradient checks and comparisons with a float reference. */
    int exact;
    /* 0 (default): outside exact mode, the backward products use transposed copies of the
     * quantized weights (Q8_0, made once by bwd_ctx_new: about 1.06 bytes per weight) through
     * kernel_matmul, which is several times faster than kernel_matmul_t. 1: no copies (less
     * memory), kernel_matmul_t throughout. */
    int no_transposed;
    /* Token rows per kernel_matmul_t call in the backward (0 = 128): bounds the slice of the
     * gradient each weight row updates so it stays in cache. */
    int tile_rows;
} bwd_opts;

typedef struct bwd_ctx bwd_ctx;

/* The model must outlive the context. o may be NULL (defaults). */
int bwd_ctx_new(bwd_ctx **out, const model *m, const bwd_opts *o, pwb_err *e);
void bwd_ctx_free(bwd_ctx *c);

/* Forward, loss and (when grad is set) backward for n sequences. *loss (may be NULL) gets L as
 * defined above. With grad == 0 only the forward and the loss run (no activations kept beyond a
 * layer), e.g. for finite differences. Every sequence needs at least one input position; targets
 * and positions are checked. Activation memory is about
 * n_layer * tokens * (2*n_embd + q_dim + 2*kv_dim + 2*n_ff) floats. */
int bwd_run(bwd_ctx *c, bwd_seq *seqs, int n, int grad, double *loss, pwb_err *e);

/* A LoRA adapter (engine/lora.h) on the weight products, and where its gradient is ADDED (may be
 * NULL: the adapter is applied but not trained). NULL l: none. Both must outlive their use. */
struct lora;
void bwd_ctx_set_lora(bwd_ctx *c, const struct lora *l, struct lora *grad);
/* Prefix tuning: n virtual positions before every sequence of a run, whose keys (already rotated)
 * and values attention reads like a cached prefix: kv [n][n_layer][2][n_head_kv * head_dim]
 * (keys then values per layer). Sequences' own positions start at n. The gradient is ADDED to
 * grad (same shape; may be NULL). kv NULL or n 0: none. */
void bwd_ctx_set_kv_prefix(bwd_ctx *c, const float *kv, int n, float *grad);

/* Bytes of activations the last bwd_run kept (the scratch high-water mark). */
size_t bwd_ctx_bytes(const bwd_ctx *c);

/* Fills seqs[0..B) from a padded id matrix: sequence b is embeds (shared, may be NULL with
 * n_embeds 0) followed by ids[b * stride + j] for j < lens[b]; padding beyond lens[b] is never
 * read. Target fields are left zero for the caller to set. */
void bwd_seq_padded(bwd_seq *seqs, int B, const float *embeds, int n_embeds, const int32_t *ids, int stride,
                    const int *lens, float *d_embeds);

#endif
