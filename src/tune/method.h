/* Tuning methods on a frozen local model, behind one interface so the training loop, optimizers,
 * checkpoints, held-out evaluation and records are shared:
 *
 *   prompt  prompt tuning (Lester et al. 2021): n virtual token embeddings before the input;
 *   lora    LoRA (Hu et al. 2021): low-rank updates of chosen weight products (engine/lora.h);
 *   prefix  prefix tuning (Li & Liang 2021, PEFT's PREFIX_TUNING without the reparameterization):
 *           per-layer keys and values of n virtual positions that attention reads like a cached
 *           prefix.
 *
 * A method's trainable parameters are a list of F32 matrices (tune_params); each method says how
 * to initialise them, how a training batch and the engine see them (the loss and its gradient are
 * the backward pass's), and how they are saved and loaded (PEFT's folder layout, tune/peft.h). */
#ifndef PWB_TUNE_METHOD_H
#define PWB_TUNE_METHOD_H

#include <stddef.h>
#include <stdint.h>

#include "engine/backward.h"
#include "engine/engine.h"
#include "engine/lora.h"
#include "tune/softprompt.h"
#include "util/err.h"

enum tune_method_kind { TUNE_PROMPT = 0, TUNE_LORA = 1, TUNE_PREFIX = 2 };

int tune_method_parse(const char *name); /* "prompt" (or "soft_prompt"), "lora", "prefix"; -1 otherwise */
const char *tune_method_name(int kind);  /* "prompt", "lora", "prefix" */

/* A method's settings beyond the loop's (tune_config). */
typedef struct tune_method_config {
    int kind;               /* enum tune_method_kind */
    int lora_r;             /* 8 */
    double lora_alpha;      /* 16 */
    double lora_dropout;    /* 0.05 */
    unsigned lora_targets;  /* engine/lora.h mask; q and v */
    /* Prefix tuning through PEFT's reparameterization (prefix_projection): 0 none; otherwise the
     * MLP's hidden size (encoder_hidden_size), -1 for PEFT's default, the prefix's token_dim. */
    int prefix_hidden;
} tune_method_config;

void tune_method_config_default(tune_method_config *c);

/* The trained object. prompt holds the soft prompt ([n_tokens][n_embd]) or the prefix
 * ([n_tokens][n_layer * 2 * kv_dim]: for each layer its keys then its values, as PEFT stores
 * PREFIX_TUNING's prompt_embeddings; keys in pwb's row order, see lora_permute_rows). */
/* PEFT's PrefixEncoder with prefix_projection: the prefix is computed, not trained directly,
 *   prefix [n][width] = W2 tanh(W1 emb + b1) + b2,
 * emb [n][td] (td: PEFT's token_dim, the model's kv_dim), W1 [hidden][td], W2 [width][hidden];
 * the outputs are in pwb's key order (as tune_adapter.prompt). Only the computed prefix is saved,
 * as PEFT does. h keeps tanh(...) [n][hidden] for the backward. */
typedef struct prefix_mlp {
    int n, td, hidden, width;
    float *emb, *w1, *b1, *w2, *b2, *h;
} prefix_mlp;

typedef struct tune_adapter {
    int kind;
    soft_prompt prompt;
    lora lora;
    prefix_mlp mlp;       /* prefix tuning with the reparameterization (hidden 0: none) */
} tune_adapter;

void tune_adapter_free(tune_adapter *a);
/* Zero parameters shaped for m (n_tokens: prompt and prefix). */
int tune_adapter_new(tune_adapter *a, const model *m, const tune_method_config *mc, int n_tokens, pwb_err *e);
int tune_adapter_like(tune_adapter *dst, const tune_adapter *src, pwb_err *e); /* same shape, zero */
size_t tune_adapter_n_params(const tune_adapter *a);
/* sha256 hex over the parameters' F32 bytes in order: the adapter's identity. */
void tune_adapter_sha256(const tune_adapter *a, char out[65]);

/* The parameters as matrices, in a fixed order. */
#define TUNE_MAX_MATS (LORA_N_MODULES * MODEL_MAX_LAYERS)
typedef struct tune_params {
    int n;
    float **w;
    size_t *rows, *cols;
} tune_params;

int tune_params_of(tune_adapter *a, tune_params *p, pwb_err *e);
void tune_params_free(tune_params *p);

/* Applies the adapter to the engine's scoring (NULL: none). KV computed before does not change. */
void tune_adapter_bind_engine(engine *en, const tune_adapter *a);
/* A prefix for scoring: the adapter's leading input (soft prompt vectors or prefix keys and
 * values) followed by ids. */
int tune_adapter_prefix(engine *en, const tune_adapter *a, const int32_t *ids, int n_ids, engine_prefix **out,
                        pwb_err *e);
/* Applies the adapter to a training batch: the backward context (lora, prefix keys and values)
 * and the batch's leading sequence s (soft prompt vectors); gradients go to grad (same shape). */
void tune_adapter_bind_batch(bwd_ctx *bc, tune_adapter *a, tune_adapter *grad, bwd_seq *s);
/* With the reparameterization: the prefix from the MLP (after its parameters change) and, after a
 * backward pass left d loss / d prefix in grad->prompt, the MLP's gradients ADDED into grad (the
 * prefix's gradient is then zeroed). No-ops otherwise. */
void tune_adapter_sync(tune_adapter *a);
void tune_adapter_backprop(const tune_adapter *a, tune_adapter *grad);
/* PEFT's initialisation of the MLP (emb standard normal as nn.Embedding, weights and biases of
 * the Linear layers uniform in +-1/sqrt(fan_in)), then the prefix is synced. */
void tune_adapter_init_mlp(tune_adapter *a, uint64_t seed);

/* Positions the adapter puts before the input (soft prompt and prefix tokens; 0 for LoRA). */
int tune_adapter_positions(const tune_adapter *a);

#endif
