/* Soft-prompt training jobs, shared by `pwb tune` and the runner: what identifies a training
 * (its configuration keys), the examples it reads (a split's labelled rows rendered by a template
 * and the model's chat template, tokenized by tune_encode exactly as the local backend's rank
 * classification reads them), and the job itself: train with a checkpoint (or load a finished
 * prompt of the same configuration), write the PEFT folder, and record the soft_prompts,
 * train_steps and train_evals rows.
 *
 * Two keys, both sha256 hex over the model file's bytes, the card file, the training split's
 * file, the template file, the chat template override and every training setting:
 *   key       leaves the length (steps, epochs) out under a constant rate: the example stream and
 *             every update are the same whatever the total, so a finished run asked for more
 *             steps continues from its checkpoint as a longer run would have gone. The checkpoint
 *             and `pwb tune`'s soft_prompts row carry it.
 *   full_key  includes the length: it names one trained prompt. The runner keeps each prompt in
 *             <soft dir>/<full_key's first 16 hex>/ and records its soft_prompts row under it. */
#ifndef PWB_RUN_SOFTJOB_H
#define PWB_RUN_SOFTJOB_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "task/dataset.h"
#include "run/suite.h"
#include "task/template.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "store/db.h"
#include "tune/train.h"
#include "util/err.h"

/* A template's shots during training: drawn as the runner draws them for a query (the same seed,
 * so every example reads the same shots the scored queries read, a shared prefix). */
typedef struct softjob_shots {
    const ds_data *from;        /* the shot split, loaded */
    int same;                   /* from is the training split: a row never gets itself as a shot */
    uint64_t seed;              /* the runner's suite seed */
} softjob_shots;

typedef struct softjob_opts {
    const char *model_path;     /* the frozen local model (GGUF file or Hugging Face folder) */
    const char *model_sha256;   /* softjob_model_sha256 of it when the caller has it; NULL: computed */
    const char *chat_template;  /* override of the model's chat template family; NULL: its own */
    const char *target_delimiter; /* before each label when tpl names none (suite model's); NULL: none */
    int threads;                /* engine threads (0: OMP_NUM_THREADS) */
    const ds_card *card;        /* a label task */
    const char *split;          /* the training split's name */
    const ds_data *data;        /* that split, loaded */
    const pwb_template *tpl;    /* renders each input (with its shots when shots is set) */
    const char *tpl_sha256;     /* of the template file */
    softjob_shots shots;        /* where tpl's shots come from; shots.from NULL: rendered without */
    soft_settings sp;           /* the settings */
    const char *dir;            /* the PEFT folder; its checkpoint.bin makes training resumable */
    const char *root;           /* with dir NULL: the folder is <root>/<full_key's first 16 hex> */
    int reuse;                  /* load a finished prompt of this full_key from dir instead of training */
    int fresh;                  /* remove dir's checkpoint first (start over) */
    pwb_db *db;                 /* NULL: record nothing */
    volatile sig_atomic_t *stop;/* checked between steps (Ctrl-C) */
    FILE *progress;             /* training progress bar; NULL: silent */
    const char *progress_label; /* NULL: "tune" */
    double progress_after_s;    /* work after the training, for its ETA (pwb_progress.after_s) */
    const char *progress_after_what;
    void (*on_eval)(void *ctx, const tune_eval_info *v); /* each held-out evaluation (may be NULL) */
    void *ctx;
} softjob_opts;

typedef struct softjob {
    softjob_opts o;
    tune_config cfg;            /* the settings as the tuner takes them */
    char *dir;                  /* the PEFT folder (o.dir, or under o.root) */
    char model_sha256[65], tpl_sha256[65];
    char key[65], full_key[65]; /* see above */
    /* the plan (softjob_prepare) */
    size_t *idx;                /* the sampled labelled rows of the split (held-out slice included) */
    size_t n_sampled;
    int n_train, n_eval;
    long planned_steps;
    int64_t planned_examples;
    int reusable;               /* o.reuse and dir holds the finished prompt of full_key */
    int resumable;              /* dir holds a checkpoint */
    /* softjob_run */
    engine *en;                 /* opened for training (NULL when the prompt was reused) */
    chat_template ct;
    int have_ct;
    soft_prompt prompt;         /* the trained (best) or loaded prompt (prompt tuning) */
    tune_adapter adapter;       /* the trained or loaded LoRA or prefix (cfg.method.kind) */
    tune_result res;            /* what training did, in total (from the record when reused) */
    int trained, reused;
    int64_t sp_id;              /* the soft_prompts row (0 without a database) */
    int64_t artifact_bytes;     /* adapter_model.safetensors */
    char prompt_sha256[65];     /* of the prompt's (adapter's) F32 values: its identity for the response cache */
} softjob;

void softjob_init(softjob *j);
void softjob_free(softjob *j);

/* Checks the settings against the card (a label task with two labels or more) and the template,
 * derives the keys (hashing the model, card, split and template files), samples the rows and
 * plans the length; with o->reuse, checks whether o->dir holds the finished prompt. Opens no
 * model and writes nothing. o (and what it points to) must outlive j. */
int softjob_prepare(softjob *j, const softjob_opts *o, pwb_err *e);
/* Loads the finished prompt (o.reuse and found) or trains (resuming dir's checkpoint), writes the
 * PEFT folder and records the rows; j->prompt holds the prompt on return. PWB_EINTR when
 * stopped through o.stop (the checkpoint is written: the same job resumes). */
int softjob_run(softjob *j, pwb_err *e);

/* Closes the engine training opened (the prompt and the results stay). */
void softjob_close_model(softjob *j);

/* sha256 of a model: a file's bytes; for a folder, over its .json and .safetensors files' names
 * and sha256s in name order. About 0.5 s per 100 MB. */
int softjob_model_sha256(const char *path, char out[65], pwb_err *e);
/* The labelled rows of d in a seeded sample (limit > 0: at most limit of them, in file order);
 * *idx malloc'd. Returns how many. */
size_t softjob_sample(const ds_data *d, long limit, uint64_t seed, size_t **idx);
/* Renders and tokenizes the rows idx[0..n) of d as the local backend's rank classification
 * reads them (template with the shots sh draws, or none when sh is NULL; chat template ct; the
 * card's verbalizers as choices, after the template's target_delimiter or else delim). */
int softjob_encode(const model *m, const chat_template *ct, const pwb_template *tp, const softjob_shots *sh,
                   const char *delim, const ds_card *card, const ds_data *d, const size_t *idx, size_t n,
                   tune_example **out, pwb_err *e);
void softjob_examples_free(tune_example *ex, size_t n);

#endif
