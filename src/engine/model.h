/* A Llama-family decoder (Llama, SmolLM2, TinyLlama, Mistral, Qwen2 with q/k/v biases, Gemma 3;
 * one row each in arch.c) loaded
 * from a GGUF file or a Hugging Face folder (config.json + model.safetensors + tokenizer.json).
 *
 * The weights stay in the mapped file (quantized or not); only the small vectors (norms, biases)
 * are converted to F32 and owned here. The model also owns its tokenizer and its chat template
 * string. Read-only after model_load, so one model can serve many threads. */
#ifndef PWB_ENGINE_MODEL_H
#define PWB_ENGINE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tensor.h"
#include "engine/tokenizer.h"
#include "util/buf.h"
#include "util/err.h"

enum model_format { MODEL_FMT_GGUF = 1, MODEL_FMT_HF = 2 };

/* Which element pairs RoPE rotates. llama.cpp's converter permutes the q/k rows of Llama-style
 * models so that GGUF files rotate adjacent pairs (x[2i], x[2i+1]); Hugging Face checkpoints (and
 * GGUF Qwen2, which llama.cpp does not permute) rotate halves (x[i], x[i + n_rot/2]). */
enum rope_layout { ROPE_ADJACENT = 0, ROPE_HALF = 1 };

/* Hard caps for hostile files: far above any model the engine is meant for. */
#define MODEL_MAX_LAYERS 512
#define MODEL_MAX_EMBD (1 << 16)
#define MODEL_MAX_HEADS 1024
#define MODEL_MAX_VOCAB (1 << 22)
#define MODEL_MAX_HEAD_DIM 1024

typedef struct model_hparams {
    char arch[32];        /* "llama", "qwen2", "mistral", ... */
    int n_layer;
    int n_embd;           /* hidden size */
    int n_ff;             /* MLP intermediate size */
    int n_head;
    int n_head_kv;
    int head_dim;
    int n_rot;            /* rotated dims per head (= head_dim for the Llama family) */
    int n_vocab;
    int n_ctx;            /* trained context length */
    float rope_base;
    float norm_eps;
    int rope_layout;      /* enum rope_layout */
    int tied;             /* output head shares token_embd */
    int qkv_bias;         /* q/k/v projections carry biases (Qwen2) */
    /* Set from the architecture's row (arch.h); zero is the plain Llama layer. */
    int act;              /* enum arch_act: the MLP gate's activation */
    float embd_scale;     /* token embeddings are multiplied by it (0: not scaled) */
    float attn_scale;     /* query scale before q.k (0: 1/sqrt(head_dim)) */
    int n_swa;            /* sliding window of the layers marked swa, in positions (0: none) */
    float rope_base_swa;  /* RoPE base of the window layers */
    float final_softcap;  /* logits = c * tanh(logits / c) (0: none) */
} model_hparams;

typedef struct model_layer {
    const float *attn_norm, *ffn_norm;   /* [n_embd], owned by the model */
    const float *bq, *bk, *bv;           /* NULL when absent */
    const float *q_norm, *k_norm;        /* [head_dim] per-head RMSNorm before RoPE, or NULL */
    const float *post_attn_norm, *post_ffn_norm; /* [n_embd] norms of the sublayer outputs, or NULL */
    int swa;                             /* attends within hp.n_swa positions, RoPE base rope_base_swa */
    pwb_tensor wq, wk, wv, wo;           /* [n_head*hd, n_embd] ... (GGUF order: ne[0] = in) */
    pwb_tensor w_gate, w_up, w_down;
} model_layer;

typedef struct model {
    model_hparams hp;
    int format;                 /* enum model_format */
    char *path;                 /* what was opened (file or folder) */
    size_t file_bytes;          /* bytes of the weight file */
    pwb_tensor tok_embd;        /* [n_vocab, n_embd] */
    pwb_tensor output;          /* the head; a copy of tok_embd when tied */
    const float *output_norm;   /* [n_embd] */
    model_layer *layers;
    tokenizer *tok;
    char *chat_template;        /* the model's Jinja template, NULL when it has none */
    int64_t n_params;           /* elements of every tensor (a tied head counted once) */
    void *impl_;                /* private: the open files and owned buffers */
} model;

/* path: a .gguf file, a Hugging Face folder, or a .safetensors file inside one. */
int model_load(model **out, const char *path, pwb_err *e);
void model_free(model *m);

/* Token id's input vector as the first layer sees it: its embedding row, times hp.embd_scale where
 * the architecture scales embeddings (Gemma). Soft prompts live in this space (input vectors are
 * not scaled), so a prompt initialised from token text starts as that text. dst: [n_embd]. */
int model_embed_token(const model *m, int32_t id, float *dst, pwb_err *e);

/* A short human summary (`pwb model info`): architecture, dimensions, parameter count, tensor
 * dtypes, file size, tokenizer kind, chat template kind. Appended to out. */
int model_info(const model *m, pwb_buf *out);

/* The same facts as fields, for tools that print their own way. */
typedef struct model_summary {
    const char *format;        /* "gguf" or "safetensors" */
    const char *arch;
    int64_t n_params;
    size_t file_bytes;
    int dtype_count[DT_COUNT_];/* number of tensors of each type */
    const char *tokenizer_kind;/* "gpt2" (byte-level BPE), "llama" (SentencePiece BPE), "hf-json" */
    const char *template_kind; /* "chatml", "llama3", ... "none", "unknown" */
} model_summary;
void model_summarize(const model *m, model_summary *s);

#endif
