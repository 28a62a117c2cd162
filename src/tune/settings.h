/* A tuning method's settings, described once as a table of fields. A suite method's settings object
 * ("soft_prompt"), `pwb tune`'s options (the same names, '-' for '_') and the training job read and
 * check them through the table, so a bound or a choice is written in one place.
 *
 * Another method ("lora", "prefix") adds its settings struct, its tune_field table and a
 * tune_method beside tune_soft_method, and appends it to tune_methods[]. */
#ifndef PWB_TUNE_SETTINGS_H
#define PWB_TUNE_SETTINGS_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "tune/train.h"
#include "util/err.h"

enum tune_field_type { TF_INT, TF_LONG, TF_U64, TF_DOUBLE, TF_BOOL, TF_STR };

typedef struct tune_field {
    const char *key;             /* the JSON key */
    int type;                    /* enum tune_field_type */
    size_t offset;               /* of the value in the settings struct */
    double lo, hi;               /* numbers: the accepted range */
    int unset_below_zero;        /* numbers: a negative value means "the default" (and is accepted) */
    const char *const *choices;  /* TF_STR: the accepted values, NULL-terminated; NULL: any non-empty text */
    const char *choices_text;    /* for messages: "random, vocab, class or text" */
} tune_field;

typedef struct tune_method {
    const char *key;             /* the suite method's settings object: "soft_prompt" */
    const tune_field *fields;
    int n_fields;
    void (*defaults)(void *s);
    /* Rules between fields, after each field's own; NULL when none. */
    int (*check)(const void *s, const char *path, const char *where, pwb_err *e);
} tune_method;

/* ---- soft prompts (prompt tuning, src/tune/softprompt.h) ---------------------------------------- */

/* Strings are borrowed from the suite's JSON or the command line. */
typedef struct soft_settings {
    int tokens;              /* virtual tokens (20), 1..SOFTPROMPT_MAX_TOKENS */
    const char *init;        /* "random", "vocab", "class" (default) or "text" */
    const char *init_text;   /* init "text": the text whose embeddings start the prompt */
    long steps;              /* optimizer steps; 0: from epochs */
    double epochs;           /* epochs over the training examples when steps is 0 (1) */
    int batch;               /* examples per step (8) */
    const char *optimizer;   /* "adafactor" (default) or "adamw" */
    double lr;               /* < 0: the optimizer's default (adafactor 0.3, adamw 1e-3) */
    double weight_decay;     /* < 0: the optimizer's default (adafactor 1e-5, adamw 0.01) */
    long warmup;             /* linear warmup steps, then linear decay; 0: a constant rate */
    double clip;             /* global L2 gradient clipping; < 0: the default (1.0); 0: off */
    uint64_t seed;           /* initialisation, sampling, shuffling (1) */
    long train_limit;        /* at most this many training examples (0: all) */
    int eval_n;              /* held-out examples of the training split (200; 0: none) */
    long eval_every;         /* steps between evaluations (50; 0: at the end only) */
    int patience;            /* evaluations without improvement before stopping (0: never) */
    const char *train_split; /* NULL: the card's few-shot split, else "train" */
    int exact;               /* backward with F32 activations throughout (slower) */
    int scale_parameter;     /* Adafactor: lr relative to each parameter's RMS (0: absolute steps) */
    /* LoRA and prefix tuning take the same struct: method says which (set by the method's
     * defaults), and LoRA's own settings follow. */
    const char *method;      /* "prompt" (soft_prompt), "lora", "prefix" */
    int r;                   /* LoRA rank (8) */
    double alpha;            /* LoRA alpha (16): the update is scaled by alpha / r */
    double dropout;          /* LoRA dropout on the adapted inputs while training (0.05) */
    const char *targets;     /* LoRA target modules (engine/lora.h): "q,v" (default), "q-k-v-o" */
    int prefix_projection;   /* prefix: PEFT's reparameterization MLP (0: none) */
    int encoder_hidden_size; /* its hidden size (0: PEFT's default, the prefix's token_dim) */
} soft_settings;

/* "soft_prompt": prompt tuning; "lora": LoRA (no tokens or init, AdamW by default); "prefix":
 * prefix tuning (the soft prompt's settings, AdamW by default). */
extern const tune_method tune_soft_method, tune_lora_method, tune_prefix_method;

void soft_settings_defaults(soft_settings *s);
/* The method whose settings s holds (by s->method). */
const tune_method *soft_settings_method(const soft_settings *s);
/* The training configuration the settings describe (checked first, as tune_settings_check). */
int soft_settings_config(const soft_settings *s, tune_config *c, pwb_err *e);

/* ---- any method ------------------------------------------------------------------------------ */

/* Every method, NULL-terminated. */
extern const tune_method *const tune_methods[];

const tune_field *tune_field_find(const tune_method *m, const char *key);

/* Reads the settings object o into s (the method's defaults for what it leaves out). Unknown keys
 * (other than comments: "_x", "x-x", "comment") and values out of range are errors naming path and
 * where: "suites/x.json: methods[2].soft_prompt.tokens must be an integer from 1 to 4096". Strings
 * in s point into o. */
int tune_settings_parse(const tune_method *m, const cJSON *o, const char *path, const char *where, void *s,
                        pwb_err *e);
/* Sets one field from text (a command-line value; a TF_BOOL field from "1"/"0"/"true"/"false").
 * Errors read "<key>: '<text>' is not ..."; text is borrowed by string fields. */
int tune_settings_set(const tune_method *m, void *s, const char *key, const char *text, pwb_err *e);
/* Checks every field and the method's rules: for settings set field by field. */
int tune_settings_check(const tune_method *m, const void *s, const char *path, const char *where, pwb_err *e);

#endif
