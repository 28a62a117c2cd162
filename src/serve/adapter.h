/* The adapters a server offers, by name: "base" (the frozen model alone) and every --adapter
 * NAME=DIR. A request's "model" field picks one.
 *
 * An adapter folder is a Hugging Face PEFT folder (adapter_config.json + adapter_model.safetensors,
 * tune/peft.h), its peft_type the kind:
 *   PROMPT_TUNING  a soft prompt: vectors read before the input (docs/soft-prompts.md);
 *   LORA           low-rank terms on the weight products (engine/lora.h), added per row;
 *   PREFIX_TUNING  per-layer keys and values of virtual positions, a cached prefix.
 * Each is checked against the model at startup. */
#ifndef PWB_SERVE_ADAPTER_H
#define PWB_SERVE_ADAPTER_H

#include "engine/lora.h"
#include "engine/model.h"
#include "util/err.h"

#define ADAPTER_MAX 64
#define ADAPTER_NAME_MAX 64

enum adapter_kind { ADAPTER_BASE = 0, ADAPTER_SOFT = 1, ADAPTER_LORA = 2, ADAPTER_PREFIX = 3 };

typedef struct adapter {
    char name[ADAPTER_NAME_MAX + 1];
    int kind;          /* enum adapter_kind */
    char *dir;         /* the folder it came from, NULL for the base */
    float *embeds;     /* ADAPTER_SOFT: [n_embeds][dim] */
    int n_embeds;
    int dim;
    lora lora;         /* ADAPTER_LORA */
    float *kv;         /* ADAPTER_PREFIX: [n_kv][n_layer][2][kv_dim] (engine_prefix_new_kv's layout) */
    int n_kv;
} adapter;

typedef struct adapter_set {
    adapter items[ADAPTER_MAX]; /* items[0] is the base */
    int n;
} adapter_set;

/* An empty set holding only "base". */
void adapter_set_init(adapter_set *s);
void adapter_set_free(adapter_set *s);
/* Adds "NAME=DIR" for model m (shapes are checked against it). Names: 1-64 of [A-Za-z0-9._-],
 * unique, not "base". */
int adapter_set_add(adapter_set *s, const char *spec, const model *m, pwb_err *e);
/* Positions the adapter puts before a request's tokens (virtual tokens; 0 for base and LoRA). */
int adapter_positions(const adapter *a);
/* Index of name, -1 when unknown. */
int adapter_set_find(const adapter_set *s, const char *name);
const char *adapter_kind_name(int kind);

#endif
