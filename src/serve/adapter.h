/* The adapters a server offers, by name: "base" (the frozen model alone) and every --adapter
 * NAME=DIR. A request's "model" field picks one.
 *
 * An adapter folder is a Hugging Face PEFT folder (adapter_config.json + adapter_model.safetensors).
 * Kinds: PROMPT_TUNING (a soft prompt: vectors read before the input, docs/soft-prompts.md). The
 * registry reads peft_type first, so LoRA and prefix tuning get their own kind here and their own
 * per-row work in the scheduler when the tune layer can load them; until then such a folder is
 * refused by name at startup rather than served as the base model. */
#ifndef PWB_SERVE_ADAPTER_H
#define PWB_SERVE_ADAPTER_H

#include "util/err.h"

#define ADAPTER_MAX 64
#define ADAPTER_NAME_MAX 64

enum adapter_kind { ADAPTER_BASE = 0, ADAPTER_SOFT = 1 };

typedef struct adapter {
    char name[ADAPTER_NAME_MAX + 1];
    int kind;          /* enum adapter_kind */
    char *dir;         /* the folder it came from, NULL for the base */
    float *embeds;     /* ADAPTER_SOFT: [n_embeds][dim] */
    int n_embeds;
    int dim;
} adapter;

typedef struct adapter_set {
    adapter items[ADAPTER_MAX]; /* items[0] is the base */
    int n;
} adapter_set;

/* An empty set holding only "base". */
void adapter_set_init(adapter_set *s);
void adapter_set_free(adapter_set *s);
/* Adds "NAME=DIR" for a model of hidden size dim. Names: 1-64 of [A-Za-z0-9._-], unique, not
 * "base". */
int adapter_set_add(adapter_set *s, const char *spec, int dim, pwb_err *e);
/* Index of name, -1 when unknown. */
int adapter_set_find(const adapter_set *s, const char *name);
const char *adapter_kind_name(int kind);

#endif
