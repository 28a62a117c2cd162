/* The decoder architectures the engine runs, as data: one row per architecture.
 *
 * A row names every tensor in both file formats (GGUF and Hugging Face safetensors) by its role
 * in a layer, and sets the flags the shared layer operations (ops.h) read: which norms and biases
 * exist, the MLP activation, the RoPE layout and bases, the sliding-window pattern, the embedding
 * scale and logit soft-capping. Loading (model.c), the forward pass (forward.c) and the backward
 * pass (backward.c) contain no per-architecture branches; a Llama-family variant whose layers are
 * made of these operations is one more row in arch.c (docs/engine.md shows the Gemma 3 row). */
#ifndef PWB_ENGINE_ARCH_H
#define PWB_ENGINE_ARCH_H

#include <stddef.h>

/* The MLP's gate activation: out = act(gate) * up. */
/* ACT_GELU_TANH_FP16 is no architecture's: the tanh GELU as llama.cpp's CPU backend computes it
 * (engine_opts.ggml_gelu), for reference checks; its backward is the smooth GELU's. */
enum arch_act { ACT_SILU = 0, ACT_GELU_TANH = 1, ACT_GELU_TANH_FP16 = 2 };

/* Tensors of one layer, by role. */
enum arch_role {
    AR_ATTN_NORM,      /* RMSNorm before attention */
    AR_Q, AR_K, AR_V, AR_O,
    AR_Q_BIAS, AR_K_BIAS, AR_V_BIAS,
    AR_Q_NORM, AR_K_NORM,   /* RMSNorm of each query / key head (over head_dim), before RoPE */
    AR_POST_ATTN_NORM, /* RMSNorm of the attention output before the residual add */
    AR_FFN_NORM,       /* RMSNorm before the MLP */
    AR_GATE, AR_UP, AR_DOWN,
    AR_POST_FFN_NORM,  /* RMSNorm of the MLP output before the residual add */
    AR_COUNT_
};

/* Tensor names in one file format. Layer l's names follow layer_prefix, l and a dot ("blk.3."); a NULL
 * name means the architecture has no such tensor. Biases are taken when the file has them. */
typedef struct arch_names {
    const char *embd, *output, *output_norm;
    const char *layer_prefix;
    const char *layer[AR_COUNT_];
} arch_names;

typedef struct arch_row {
    const char *gguf_arch;     /* general.architecture */
    const char *hf_type;       /* config.json model_type (NULL: no Hugging Face loader) */
    const arch_names *gguf, *hf;
    int rope_gguf;             /* RoPE layout of GGUF files (enum rope_layout); HF rotates halves */
    int act;                   /* enum arch_act */
    int embd_scale;            /* token embeddings (not input vectors) times sqrt(n_embd) */
    int hf_norm_shift;         /* HF stores RMSNorm weights as w and applies (1 + w); llama.cpp's
                                  converter adds the 1, so GGUF weights are used as they are */
    int swa_period;            /* layer l attends globally when (l + 1) % swa_period == 0, else
                                  within the sliding window; 0: every layer is global */
    float rope_base_swa;       /* RoPE base of the window layers unless the file names one */
} arch_row;

const arch_row *arch_find_gguf(const char *name);
const arch_row *arch_find_hf(const char *model_type);
/* "llama, mistral, qwen2, gemma3" (the GGUF names, for error messages) into buf. */
void arch_list(char *buf, size_t cap);

#endif
