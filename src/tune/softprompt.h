/* A soft prompt: n virtual tokens, each a vector of the model's hidden size (F32, row-major
 * [n_tokens][dim]), prepended to the input embeddings of a frozen model (Lester et al. 2021).
 *
 * Initialisations (the paper's section 3.2):
 *   random  uniform in [-0.5, 0.5];
 *   vocab   embeddings of tokens sampled from the 5,000 most frequent ones. A tokenizer file holds no
 *           frequencies, so the proxy is the vocabulary's order: BPE vocabularies number tokens in
 *           merge order, and earlier merges are the more frequent pairs, so the candidates are the
 *           first 5,000 ids that are neither special (control) tokens nor byte-fallback tokens
 *           ("<0x0A>"); for a vocabulary smaller than that, all such ids;
 *   class   row i < n_labels: the embedding of label i's verbalizer averaged over its tokens; the
 *           remaining rows sampled vocabulary as above;
 *   text    the embeddings of a given text's tokens, cut to n or repeated to fill it (as PEFT's
 *           TEXT initialisation does). */
#ifndef PWB_TUNE_SOFTPROMPT_H
#define PWB_TUNE_SOFTPROMPT_H

#include <stdint.h>

#include "engine/model.h"
#include "util/err.h"
#include "util/rng.h"

#define SOFTPROMPT_VOCAB_TOP 5000
#define SOFTPROMPT_MAX_TOKENS 4096

enum sp_init { SP_INIT_RANDOM = 0, SP_INIT_VOCAB = 1, SP_INIT_CLASS = 2, SP_INIT_TEXT = 3 };

typedef struct soft_prompt {
    int n_tokens, dim;
    float *w;          /* [n_tokens * dim] */
} soft_prompt;

int softprompt_new(soft_prompt *sp, int n_tokens, int dim, pwb_err *e); /* zero-filled */
void softprompt_free(soft_prompt *sp);
int softprompt_copy(soft_prompt *dst, const soft_prompt *src, pwb_err *e);

int softprompt_init_parse(const char *name); /* "random", "vocab", "class", "text"; -1 otherwise */
const char *softprompt_init_name(int init);
/* The PEFT adapter_config value: RANDOM, SAMPLE_VOCAB, TEXT (class-label init has no PEFT name:
 * it is recorded as RANDOM, the vectors being what matters, and "class" in pwb_training.json). */
const char *softprompt_init_peft(int init);

void softprompt_init_uniform(soft_prompt *sp, pwb_rng *r, float lo, float hi);
/* The vocabulary-init candidates (see above): *ids malloc'd, *n of them (at least one). */
int softprompt_vocab_candidates(const model *m, int32_t **ids, int *n, pwb_err *e);
/* Rows [from, n_tokens) from sampled vocabulary. */
int softprompt_init_vocab(soft_prompt *sp, const model *m, int from, pwb_rng *r, pwb_err *e);
/* label_ids[i] (label_lens[i] >= 1 tokens) is label i's verbalizer as the model reads it. */
int softprompt_init_class(soft_prompt *sp, const model *m, const int32_t *const *label_ids, const int *label_lens,
                          int n_labels, pwb_rng *r, pwb_err *e);
/* The text is tokenized without special tokens; PWB_EINVAL when it has none. */
int softprompt_init_text(soft_prompt *sp, const model *m, const char *text, pwb_err *e);

#endif
