/* The local engine's public face: open a model, then score or generate in batches.
 *
 *   engine_open / engine_close            a model file or folder, a thread count
 *   engine_prefix_*                       KV of a shared leading input (instruction, few-shot
 *                                         shots, a soft prompt's vectors) computed once
 *   engine_rank                           summed log-probabilities of candidate continuations
 *   engine_generate                       greedy or seeded temperature/top-p generation
 *   engine_logits / engine_forward_embeds full or selected logits, for reference tests and for
 *                                         soft prompts (leading input given as vectors)
 *
 * An engine is used by one thread at a time (it owns the forward scratch); the model inside is
 * read-only and may be shared through engine_model(). Parallelism is inside: OpenMP over weight
 * rows, attention heads and sequences. */
#ifndef PWB_ENGINE_ENGINE_H
#define PWB_ENGINE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/model.h"
#include "engine/tokenizer.h"
#include "util/err.h"

typedef struct engine engine;

typedef struct engine_opts {
    int n_threads;     /* OpenMP threads; 0 leaves the process setting (OMP_NUM_THREADS) alone */
    int step_tokens;   /* stacked tokens per forward step; 0 = 512 */
    int batch_tokens;  /* prompt tokens per rank/generate group; 0 = 1024 */
    int batch_items;   /* sequences per group at most; 0 = 64 */
    int int8_activations; /* 0 (default): weight products in F32 on dequantized weights
                           * (kernel_matmul_exact), the model's function as an F32 copy of it
                           * computes it; 1: activations rounded to 8 bits for the integer kernels
                           * (kernels.h), ~25% faster, ~0.1 in a log-probability from exact */
    int ggml_gelu;     /* 1: the tanh GELU (Gemma 3) as llama.cpp's CPU backend computes it, input
                        * rounded to fp16 and output read from an fp16 table (GGML_GELU_FP16),
                        * so reference tests compare everything else with llama.cpp exactly;
                        * 0 (default): the GELU in F32, the function the model defines */
} engine_opts;

int engine_open(engine **out, const char *path, const engine_opts *o, pwb_err *e);
void engine_close(engine *en);
const model *engine_model(const engine *en);
const tokenizer *engine_tokenizer(const engine *en);
int engine_n_vocab(const engine *en);
int engine_n_embd(const engine *en);
int engine_n_ctx(const engine *en);

/* A LoRA adapter (engine/lora.h) on every later forward pass; NULL: none. It must outlive its
 * use; prefixes computed under another adapter keep that one's KV. */
struct lora;
void engine_set_lora(engine *en, const struct lora *l);

/* ---- shared prefix ------------------------------------------------------------------------- */

typedef struct engine_prefix engine_prefix;

/* Computes the KV of n_embeds vectors ([n_embeds][n_embd], e.g. a soft prompt; may be 0)
 * followed by n_ids token ids. Both may be empty (an empty prefix is allowed). */
int engine_prefix_new(engine *en, const float *embeds, int n_embeds, const int32_t *ids, int n_ids,
                      engine_prefix **out, pwb_err *e);
/* Re-targets the prefix to (its embeds +) ids, keeping the KV of the longest common leading run of
 * ids and computing only the rest. No rank/generate call may be running on it. */
int engine_prefix_set_ids(engine *en, engine_prefix *p, const int32_t *ids, int n_ids, pwb_err *e);
/* A prefix whose first n_kv positions are given keys (already rotated) and values rather than
 * computed: prefix tuning. kv is [n_kv][n_layer][2][n_head_kv * head_dim] (per layer its keys,
 * then its values); ids (may be empty) follow at positions n_kv onwards. */
int engine_prefix_new_kv(engine *en, const float *kv, int n_kv, const int32_t *ids, int n_ids, engine_prefix **out,
                         pwb_err *e);
/* The prefix's keys and values in engine_prefix_new_kv's layout: out [len][n_layer][2][kv_dim]. */
int engine_prefix_kv(const engine_prefix *p, float *out, pwb_err *e);
void engine_prefix_free(engine_prefix *p);
int engine_prefix_len(const engine_prefix *p);            /* positions: embeds + ids */
const int32_t *engine_prefix_ids(const engine_prefix *p, int *n_ids);

/* ---- rank classification ------------------------------------------------------------------- */

typedef struct engine_rank_item {
    const int32_t *prompt;       /* ids after the prefix; at least one */
    int n_prompt;
    const int32_t *const *conts; /* candidate continuations (e.g. tokenized label verbalizers) */
    const int *cont_lens;        /* each at least one token */
    int n_conts;
    double *logprob;             /* out [n_conts]: sum over the continuation of log p(token | before) */
    int status;                  /* out: PWB_OK, or why this item alone failed */
} engine_rank_item;

/* Computes each prompt once (batched across items) and scores all its continuations from its KV:
 * single-token continuations need only the prompt's last logits, longer ones run their tokens
 * (batched) as children of the prompt's cache. prefix may be NULL. An item with bad input gets
 * its status set and is skipped; the return value is an error only when nothing could run. */
int engine_rank(engine *en, const engine_prefix *prefix, engine_rank_item *items, int n, pwb_err *e);

/* ---- generation ---------------------------------------------------------------------------- */

enum engine_finish {
    ENGINE_FINISH_LENGTH = 0, /* max_tokens reached (or the context filled) */
    ENGINE_FINISH_EOS = 1,    /* EOS or one of stop_ids */
    ENGINE_FINISH_STOP = 2    /* a stop string appeared; text is cut before it */
};

typedef struct engine_gen_item {
    const int32_t *prompt;       /* ids after the prefix; at least one */
    int n_prompt;
    int max_tokens;
    float temperature;           /* <= 0: greedy */
    float top_p;                 /* 0 or >= 1: off */
    uint64_t seed;
    const char *const *stop;     /* stop strings (may be NULL) */
    int n_stop;
    const int32_t *stop_ids;     /* stop tokens besides the tokenizer's EOS (e.g. <|im_end|>) */
    int n_stop_ids;
    int ignore_eos;              /* benchmarks: do not stop at the tokenizer's EOS */
    /* out */
    int32_t *out_ids;            /* malloc'd generated ids, the stopping token excluded */
    int n_out;
    char *text;                  /* malloc'd decoded text (special tokens not rendered) */
    int finish;                  /* enum engine_finish */
    int status;                  /* PWB_OK or why this item alone failed */
} engine_gen_item;

/* Runs all items together (prompts prefilled as one batch, then one decode step for every live
 * sequence at a time). Sampling is per item from its own seed, so results do not depend on the
 * batch. prefix may be NULL. */
int engine_generate(engine *en, const engine_prefix *prefix, engine_gen_item *items, int n, pwb_err *e);
void engine_gen_item_clear(engine_gen_item *it); /* frees out_ids and text */

/* ---- raw forward --------------------------------------------------------------------------- */

/* Logits at every position of ids (n of them) after the prefix (may be NULL): out [n][n_vocab]. */
int engine_logits(engine *en, const engine_prefix *prefix, const int32_t *ids, int n, float *out,
                  pwb_err *e);
/* B sequences given padded: ids[b * stride + j] for j < lens[b]. With all_positions out is
 * [B][stride][n_vocab] (rows past a sequence's length are left alone), else [B][n_vocab] holding
 * each sequence's last position. Runs as one batch. */
int engine_logits_padded(engine *en, const engine_prefix *prefix, const int32_t *ids, int stride,
                         const int *lens, int B, int all_positions, float *out, pwb_err *e);
/* The input is n_embeds vectors ([n_embeds][n_embd]) followed by n_ids ids; logits for n_out
 * positions (out_pos indexes that input; NULL means the last n_out) into out [n_out][n_vocab]. */
int engine_forward_embeds(engine *en, const float *embeds, int n_embeds, const int32_t *ids, int n_ids,
                          const int *out_pos, int n_out, float *out, pwb_err *e);
/* Sentence embeddings: for each of B sequences (ids[b], lens[b] >= 1 tokens, no prefix) the mean
 * over its positions of the final-normed hidden state the output head reads: out [B][n_embd].
 * One batch; the output head is not run. */
int engine_mean_hidden(engine *en, const int32_t *const *ids, const int *lens, int B, float *out, pwb_err *e);
/* Token embeddings as the model's first layer sees them: out [n][n_embd]. */
int engine_embed_ids(engine *en, const int32_t *ids, int n, float *out, pwb_err *e);

#endif
