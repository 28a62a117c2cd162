#include "engine/arch.h"

#include <stdio.h>
#include <string.h>

#include "engine/model.h"

/* llama.cpp's names, shared by every GGUF architecture here. */
static const arch_names gguf_names = {
    "token_embd.weight", "output.weight", "output_norm.weight", "blk.",
    {
        [AR_ATTN_NORM] = "attn_norm.weight",
        [AR_Q] = "attn_q.weight", [AR_K] = "attn_k.weight", [AR_V] = "attn_v.weight",
        [AR_O] = "attn_output.weight",
        [AR_Q_BIAS] = "attn_q.bias", [AR_K_BIAS] = "attn_k.bias", [AR_V_BIAS] = "attn_v.bias",
        [AR_FFN_NORM] = "ffn_norm.weight",
        [AR_GATE] = "ffn_gate.weight", [AR_UP] = "ffn_up.weight", [AR_DOWN] = "ffn_down.weight",
    },
};

static const arch_names gguf_gemma3_names = {
    "token_embd.weight", "output.weight", "output_norm.weight", "blk.",
    {
        [AR_ATTN_NORM] = "attn_norm.weight",
        [AR_Q] = "attn_q.weight", [AR_K] = "attn_k.weight", [AR_V] = "attn_v.weight",
        [AR_O] = "attn_output.weight",
        [AR_Q_NORM] = "attn_q_norm.weight", [AR_K_NORM] = "attn_k_norm.weight",
        [AR_POST_ATTN_NORM] = "post_attention_norm.weight",
        [AR_FFN_NORM] = "ffn_norm.weight",
        [AR_GATE] = "ffn_gate.weight", [AR_UP] = "ffn_up.weight", [AR_DOWN] = "ffn_down.weight",
        [AR_POST_FFN_NORM] = "post_ffw_norm.weight",
    },
};

/* Hugging Face (transformers) names. */
static const arch_names hf_names = {
    "model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.",
    {
        [AR_ATTN_NORM] = "input_layernorm.weight",
        [AR_Q] = "self_attn.q_proj.weight", [AR_K] = "self_attn.k_proj.weight",
        [AR_V] = "self_attn.v_proj.weight", [AR_O] = "self_attn.o_proj.weight",
        [AR_Q_BIAS] = "self_attn.q_proj.bias", [AR_K_BIAS] = "self_attn.k_proj.bias",
        [AR_V_BIAS] = "self_attn.v_proj.bias",
        [AR_FFN_NORM] = "post_attention_layernorm.weight",
        [AR_GATE] = "mlp.gate_proj.weight", [AR_UP] = "mlp.up_proj.weight", [AR_DOWN] = "mlp.down_proj.weight",
    },
};

/* Gemma 3 calls its pre-MLP norm pre_feedforward_layernorm; post_attention_layernorm is the norm
 * of the attention output. */
static const arch_names hf_gemma3_names = {
    "model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.",
    {
        [AR_ATTN_NORM] = "input_layernorm.weight",
        [AR_Q] = "self_attn.q_proj.weight", [AR_K] = "self_attn.k_proj.weight",
        [AR_V] = "self_attn.v_proj.weight", [AR_O] = "self_attn.o_proj.weight",
        [AR_Q_NORM] = "self_attn.q_norm.weight", [AR_K_NORM] = "self_attn.k_norm.weight",
        [AR_POST_ATTN_NORM] = "post_attention_layernorm.weight",
        [AR_FFN_NORM] = "pre_feedforward_layernorm.weight",
        [AR_GATE] = "mlp.gate_proj.weight", [AR_UP] = "mlp.up_proj.weight", [AR_DOWN] = "mlp.down_proj.weight",
        [AR_POST_FFN_NORM] = "post_feedforward_layernorm.weight",
    },
};

/* llama.cpp permutes the q/k rows of Llama and Mistral (adjacent-pair RoPE) but not of Qwen2 or
 * Gemma 3 (rotate halves, as in the Hugging Face checkpoints). */
static const arch_row rows[] = {
    /* gguf      hf              names                     rope           act            scale shift swa  base_swa */
    {"llama",   "llama",       &gguf_names,        &hf_names,        ROPE_ADJACENT, ACT_SILU,      0, 0, 0, 0.0f},
    {"mistral", "mistral",     &gguf_names,        &hf_names,        ROPE_ADJACENT, ACT_SILU,      0, 0, 0, 0.0f},
    {"qwen2",   "qwen2",       &gguf_names,        &hf_names,        ROPE_HALF,     ACT_SILU,      0, 0, 0, 0.0f},
    {"gemma3",  "gemma3_text", &gguf_gemma3_names, &hf_gemma3_names, ROPE_HALF,     ACT_GELU_TANH, 1, 1, 6, 10000.0f},
};

const arch_row *arch_find_gguf(const char *name)
{
    for (size_t i = 0; name && i < sizeof rows / sizeof rows[0]; i++)
        if (strcmp(rows[i].gguf_arch, name) == 0)
            return &rows[i];
    return NULL;
}

const arch_row *arch_find_hf(const char *model_type)
{
    for (size_t i = 0; model_type && i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i].hf_type && strcmp(rows[i].hf_type, model_type) == 0)
            return &rows[i];
    return NULL;
}

void arch_list(char *buf, size_t cap)
{
    size_t n = 0;
    if (cap)
        buf[0] = '\0';
    for (size_t i = 0; i < sizeof rows / sizeof rows[0] && n < cap; i++) {
        int w = snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", rows[i].gguf_arch);
        n += w > 0 ? (size_t)w : 0;
    }
}
