/* Soft-prompt artifacts in the layout Hugging Face PEFT reads and writes for PROMPT_TUNING:
 * DIR/adapter_config.json and DIR/adapter_model.safetensors holding one F32 tensor
 * "prompt_embeddings" of shape [num_virtual_tokens, token_dim]. pwb's own training record goes
 * into DIR/pwb_training.json so the PEFT config stays loadable by PEFT itself. */
#ifndef PWB_TUNE_PEFT_H
#define PWB_TUNE_PEFT_H

#include <stddef.h>

#include "engine/lora.h"
#include "engine/model.h"
#include "util/err.h"

typedef struct peft_prompt {
    size_t n_tokens;      /* num_virtual_tokens */
    size_t dim;           /* token_dim */
    float *embeddings;    /* [n_tokens * dim], owned */
    char *init;           /* PEFT prompt_tuning_init: "RANDOM", "SAMPLE_VOCAB" or "TEXT" */
    char *init_text;      /* prompt_tuning_init_text, may be NULL */
    char *base_model;     /* base_model_name_or_path, may be NULL */
    int num_layers, num_heads;
} peft_prompt;

void peft_prompt_init(peft_prompt *p);
void peft_prompt_free(peft_prompt *p);
/* Writes the folder (created if needed); files are replaced atomically. training_json may be NULL. */
int peft_save(const char *dir, const peft_prompt *p, const char *training_json, pwb_err *e);
/* Reads a PEFT folder (made by pwb or by PEFT). Checks peft_type, the tensor's dtype and shape
 * against num_virtual_tokens/token_dim. */
int peft_load(const char *dir, peft_prompt *p, pwb_err *e);

/* LoRA (peft_type LORA): adapter_config.json (r, lora_alpha, lora_dropout, target_modules as PEFT
 * names) and F32 tensors base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight [r][in]
 * and ...lora_B.weight [out][r], B's rows of q and k in Hugging Face's order (m says whether
 * pwb's differ: lora_permute_rows). Loading checks every tensor's shape against m and refuses what
 * pwb does not compute (DoRA, rsLoRA, biases, per-layer patterns). */
int peft_lora_save(const char *dir, const model *m, const lora *l, const char *base_model, const char *training_json,
                   pwb_err *e);
int peft_lora_load(const char *dir, const model *m, lora *l, pwb_err *e);

/* Prefix tuning (peft_type PREFIX_TUNING, no projection stored: PEFT saves the projected values):
 * "prompt_embeddings" [n][n_layer * 2 * kv_dim], per layer keys then values, keys in Hugging Face's
 * order; token_dim and num_attention_heads as PEFT records them for grouped-query attention
 * (kv_dim, n_head_kv). kv is engine_prefix_new_kv's layout. projection: the hidden size of the
 * reparameterization MLP that computed kv (prefix_projection true, encoder_hidden_size), 0 none;
 * the folder loads the same either way. */
int peft_prefix_save(const char *dir, const model *m, const float *kv, int n, int projection, const char *base_model,
                     const char *training_json, pwb_err *e);
int peft_prefix_load(const char *dir, const model *m, float **kv, int *n, pwb_err *e);

/* The method of a PEFT folder (enum tune_method_kind), -1 with e set when unknown. */
int peft_kind(const char *dir, pwb_err *e);

#endif
