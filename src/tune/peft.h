/* Soft-prompt artifacts in the layout Hugging Face PEFT reads and writes for PROMPT_TUNING:
 * DIR/adapter_config.json and DIR/adapter_model.safetensors holding one F32 tensor
 * "prompt_embeddings" of shape [num_virtual_tokens, token_dim]. pwb's own training record goes
 * into DIR/pwb_training.json so the PEFT config stays loadable by PEFT itself. */
#ifndef PWB_TUNE_PEFT_H
#define PWB_TUNE_PEFT_H

#include <stddef.h>

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

#endif
