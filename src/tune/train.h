/* Prompt tuning: trains a soft prompt on a frozen local model.
 *
 * Objective: cross-entropy of the verbalized label's tokens given [soft prompt][rendered input],
 * averaged over the examples of a batch. The input is rendered exactly as the local backend's rank
 * classification renders it (chat template with the assistant's turn opened, trailing spaces
 * handed to the choices, each choice tokenized as the continuation of the prompt): both call
 * tune_rank_tokens, so a trained prompt is scored on the same token sequences it was trained on.
 *
 * Loop: a seeded held-out slice of the training examples is set aside; the rest (up to a limit)
 * is visited in seeded shuffled epochs, `batch` examples per step, for `steps` steps (or
 * `epochs`). The held-out slice is scored before the first step (step 0: the initial prompt is the
 * first candidate for best). Each step runs one forward/backward over the batch, the soft prompt and the ids all
 * the batch's inputs start with forming one shared prefix, computed once. Every eval_every steps
 * (and at the end) the held-out slice is scored by rank classification (engine_rank); the best
 * prompt so far is kept and returned, and training stops after `patience` evaluations without
 * improvement. A checkpoint (prompt, best prompt, optimizer state, counters) is written at each
 * evaluation, every checkpoint_every steps and on interruption; training resumes from it. Each
 * step and each evaluation is reported through hooks (the CLI writes them to the database); a
 * progress bar shows loss, accuracy and ETA. */
#ifndef PWB_TUNE_TRAIN_H
#define PWB_TUNE_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/chat.h"
#include "engine/engine.h"
#include "tune/method.h"
#include "tune/optim.h"
#include "tune/softprompt.h"
#include "util/err.h"
#include "util/progress.h"

/* One classification example as the model reads it. */
typedef struct tune_example {
    int32_t *ids;          /* the rendered prompt's tokens */
    int n_ids;
    int n_labels;
    int32_t **conts;       /* [n_labels]: each label's tokens as the continuation of this prompt */
    int *cont_lens;
    int label;             /* the gold label's index, -1 when unknown */
} tune_example;

void tune_example_free(tune_example *x);

/* The token sequence rank classification reads, one function for training and for the local
 * backend's LLM_RANK (src/llm/local.c), so a prompt is scored on the tokens it was trained on: the
 * rendered prompt tokenized with special tokens parsed (BOS as the tokenizer wants); spaces that
 * end it handed to every choice (a BPE vocabulary glues a space to the word after it); each choice
 * tokenized as the continuation of the prompt, or alone when joining them would change the
 * prompt's own tokens. Fills out's ids, conts, cont_lens and n_labels (label -1). */
int tune_rank_tokens(const model *m, const char *prompt, const char *const *choices, int n_choices, tune_example *out,
                     pwb_err *e);

/* Renders msgs with the chat template (assistant turn opened; ct NULL: the contents joined as
 * CHAT_NONE does) and encodes the result with tune_rank_tokens. */
int tune_encode(const model *m, const chat_template *ct, const chat_msg *msgs, int n_msgs,
                const char *const *choices, int n_choices, int label, tune_example *out, pwb_err *e);

/* text's tokens (malloc'd), at most the model's context: PWB_ERANGE beyond it. */
int tune_tokenize(const model *m, const char *text, int add_special, int parse_special, int32_t **ids, int *n,
                  pwb_err *e);

typedef struct tune_config {
    tune_method_config method; /* which method and its own settings (prompt tuning) */
    int n_tokens;           /* virtual tokens (20): prompt and prefix tuning */
    int init;               /* enum sp_init (SP_INIT_CLASS) */
    const char *init_text;  /* SP_INIT_TEXT */
    long steps;             /* optimizer steps; 0: from epochs */
    double epochs;          /* when steps == 0 (1.0) */
    int batch;              /* examples per step (8) */
    optim_config opt;       /* Adafactor as in the paper by default */
    uint64_t seed;          /* init, split, shuffling (1) */
    long train_limit;       /* at most this many training examples after the held-out slice (0: all) */
    int eval_n;             /* held-out examples (200); 0: no evaluation, the last prompt is kept */
    long eval_every;        /* steps between evaluations (50); 0: only at the end */
    int patience;           /* evaluations without improvement before stopping; 0: never stop early */
    long checkpoint_every;  /* steps between checkpoints besides evaluations (0: none) */
    const char *checkpoint; /* checkpoint file, NULL: none */
    const char *config_key; /* identifies the configuration in the checkpoint (resume refuses others) */
    int exact;              /* backward in exact mode (slower; bwd_opts.exact) */
} tune_config;

void tune_config_default(tune_config *c);

typedef struct tune_step_info {
    long step, total_steps;
    double loss, lr, grad_norm, seconds;   /* seconds: this step's wall time */
    int64_t examples_seen;
} tune_step_info;

typedef struct tune_eval_info {
    long step;
    double accuracy, loss;  /* loss: mean -log p(gold label) */
    int n;
    int is_best;
} tune_eval_info;

typedef struct tune_hooks {
    /* A nonzero return stops training (as an interruption: checkpoint written, PWB_EINTR). */
    int (*on_step)(void *ctx, const tune_step_info *s);
    int (*on_eval)(void *ctx, const tune_eval_info *v);
    void *ctx;
    pwb_progress *progress;          /* may be NULL */
    volatile sig_atomic_t *stop;     /* checked between steps; may be NULL */
} tune_hooks;

typedef struct tune_result {
    long steps;             /* steps done in total (including before a resume) */
    int64_t examples_seen;
    double seconds;         /* training wall time in total */
    double cpu_seconds;     /* training CPU time (all threads) in total; NAN: unknown */
    double best_accuracy;   /* NAN without evaluation */
    long best_step;
    double last_loss;
    int n_train, n_eval;
    int resumed, stopped_early;
} tune_result;

/* Trains on ex[0..n) (all with the same n_labels and a gold label). out is initialised here (per
 * cfg->init, or from the checkpoint when one matches) and holds the best (or last) prompt on
 * return. hooks may be NULL. Returns PWB_EINTR after writing the checkpoint when stopped. */
int tune_train(engine *en, const tune_config *cfg, const tune_example *ex, size_t n, soft_prompt *out,
               const tune_hooks *hooks, tune_result *res, pwb_err *e);

/* The same loop for any method (cfg->method): out is initialised here (per cfg->init for prompt
 * and prefix tuning, as PEFT does for LoRA, or from the checkpoint) and holds the best (or last)
 * parameters on return. */
int tune_train_adapter(engine *en, const tune_config *cfg, const tune_example *ex, size_t n, tune_adapter *out,
                       const tune_hooks *hooks, tune_result *res, pwb_err *e);
/* tune_evaluate with any adapter (NULL: the bare model). */
int tune_evaluate_adapter(engine *en, const tune_adapter *ad, const tune_example *ex, size_t n, double *accuracy,
                          double *loss, int *pred, pwb_err *e);

/* Rank classification of ex[0..n) with the soft prompt in front (prompt NULL: none): accuracy
 * and mean -log p(gold label); pred (may be NULL) gets each example's argmax label. */
int tune_evaluate(engine *en, const soft_prompt *prompt, const tune_example *ex, size_t n, double *accuracy,
                  double *loss, int *pred, pwb_err *e);

/* The PEFT folder (tune/peft.h) for a trained prompt; training_json (may be NULL) goes into
 * DIR/pwb_training.json. */
int tune_save(const char *dir, const soft_prompt *sp, int init, const char *init_text, const char *base_model,
              const char *training_json, pwb_err *e);
/* Reads a PEFT folder (pwb's or PEFT's) into sp; dim > 0 checks the token dimension. */
int tune_load(const char *dir, int dim, soft_prompt *sp, pwb_err *e);
/* Any method's PEFT folder (tune/peft.h); init and init_text matter to prompt tuning only. */
int tune_adapter_save(const char *dir, const model *m, const tune_adapter *a, int init, const char *init_text,
                      const char *base_model, const char *training_json, pwb_err *e);
/* A PEFT folder of any of the three methods (peft_type says which), checked against m. */
int tune_adapter_load(const char *dir, const model *m, tune_adapter *a, pwb_err *e);

#endif
