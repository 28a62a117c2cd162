/* The Llama forward pass over many sequences at once, with a KV cache per sequence.
 *
 * Tokens of all sequences in a batch are stacked (ragged, no padding) so that every weight matmul
 * runs once per layer with all of them as its B dimension. Attention is plain C, parallel over
 * (token, head). A sequence's cache may start from a read-only parent cache (a shared prompt
 * prefix computed once), which it references rather than copies.
 *
 * Logits are computed only where asked: the output head (vocab x hidden) is the most expensive
 * single matmul, so callers ask for the last position (generation), a few label positions
 * (ranking), or every position (reference tests). */
#ifndef PWB_ENGINE_FORWARD_H
#define PWB_ENGINE_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "engine/model.h"
#include "util/err.h"

#define KV_MAX_DEPTH 16 /* parent chain length limit */

/* Keys and values of one sequence for every layer: positions [n_parent, n_parent + n) are held
 * here, positions [0, n_parent) are read from the parent chain. */
typedef struct kv_cache {
    const model *m;
    const struct kv_cache *parent; /* must outlive this cache and keep >= n_parent positions */
    int n_parent;
    int depth;                     /* 0 for a root */
    int n;                         /* own positions filled */
    int cap;                       /* own positions allocated */
    int kv_dim;                    /* n_head_kv * head_dim */
    float **k, **v;                /* [n_layer] -> [cap][kv_dim] */
} kv_cache;

/* parent may be NULL (then n_parent must be 0); n_parent <= kv_cache_len(parent). cap_hint
 * reserves room for that many own positions. */
int kv_cache_new(kv_cache **out, const model *m, const kv_cache *parent, int n_parent, int cap_hint,
                 pwb_err *e);
void kv_cache_free(kv_cache *c);
int kv_cache_len(const kv_cache *c); /* n_parent + n */
/* Drops own positions beyond len (len >= n_parent). A parent must not be truncated below the
 * n_parent of a live child. */
void kv_cache_truncate(kv_cache *c, int len);
int kv_cache_reserve(kv_cache *c, int extra, pwb_err *e);
/* Appends n positions of given keys (already rotated) and values, kv [n][n_layer][2][kv_dim] (per
 * layer its keys, then its values): prefix tuning's virtual positions. */
int kv_cache_append(kv_cache *c, const float *kv, int n, pwb_err *e);

struct lora;

/* One sequence's share of a batch: the new input is n_embeds embedding rows followed by n_ids
 * token ids, placed at positions kv_cache_len(kv) onwards (the cache grows by n_embeds + n_ids).
 * Outputs, for n_out input positions (out_pos[i] indexes the new input, 0-based; NULL means the
 * last n_out positions):
 *   logits    [n_out][n_vocab] raw logits, if non-NULL;
 *   logprobs  [n_out] log-softmax at targets[i], if both are non-NULL (no logits stored);
 *   hidden    [n_out][n_embd] the final-normed hidden states the output head reads, if non-NULL
 *             (a step whose rows want nothing else skips the head).
 * lora, when set, adds that adapter's low-rank terms to this sequence's rows only (on top of the
 * context's, fwd_ctx_set_lora), so sequences of different adapters share one batch. */
typedef struct fwd_seq {
    kv_cache *kv;
    const float *embeds;   /* [n_embeds][n_embd] */
    int n_embeds;
    const int32_t *ids;
    int n_ids;
    int n_out;
    const int *out_pos;
    float *logits;
    const int32_t *targets;
    double *logprobs;
    const struct lora *lora;
    float *hidden;
} fwd_seq;

typedef struct fwd_ctx fwd_ctx;

/* Scratch for up to max_tokens stacked tokens per step (larger batches are split into steps of
 * that size; a sequence may straddle two steps). 0 picks a default. One fwd_ctx per thread. */
int fwd_ctx_new(fwd_ctx **out, const model *m, int max_tokens, pwb_err *e);
void fwd_ctx_free(fwd_ctx *c);
const model *fwd_ctx_model(const fwd_ctx *c);
/* Exact arithmetic (kernel_matmul_exact: no 8-bit activation rounding) for this context's steps. */
void fwd_ctx_set_exact(fwd_ctx *c, int exact);
/* 1: the tanh GELU as llama.cpp's CPU backend computes it (engine_opts.ggml_gelu). */
void fwd_ctx_set_ggml_gelu(fwd_ctx *c, int on);
/* A LoRA adapter (engine/lora.h) on this context's weight products; NULL: none. It must outlive
 * its use and KV computed without it is not valid with it. */
void fwd_ctx_set_lora(fwd_ctx *c, const struct lora *l);

/* Runs the batch. Every kv must belong to this model and appear at most once. On error the
 * caches may hold partial positions: truncate them to their old lengths before reuse. */
int forward_batch(fwd_ctx *c, fwd_seq *seqs, int n, pwb_err *e);

/* Rotates one head vector in place at position pos (RoPE base hp->rope_base), for tests. */
void fwd_rope(float *x, int pos, const model_hparams *hp);

#endif
