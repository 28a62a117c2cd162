#include "tune/softprompt.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/kernels.h"
#include "engine/tokenizer.h"

int softprompt_new(soft_prompt *sp, int n_tokens, int dim, pwb_err *e)
{
    memset(sp, 0, sizeof *sp);
    if (n_tokens < 1 || n_tokens > SOFTPROMPT_MAX_TOKENS || dim < 1 || dim > MODEL_MAX_EMBD)
        return err_set(e, PWB_EINVAL, "soft prompt: %d x %d is not a valid shape (1..%d tokens)", n_tokens, dim,
                       SOFTPROMPT_MAX_TOKENS);
    sp->w = calloc((size_t)n_tokens * (size_t)dim, sizeof *sp->w);
    if (!sp->w)
        return err_set(e, PWB_ENOMEM, "out of memory");
    sp->n_tokens = n_tokens;
    sp->dim = dim;
    return PWB_OK;
}

void softprompt_free(soft_prompt *sp)
{
    if (!sp)
        return;
    free(sp->w);
    memset(sp, 0, sizeof *sp);
}

int softprompt_copy(soft_prompt *dst, const soft_prompt *src, pwb_err *e)
{
    int rc = softprompt_new(dst, src->n_tokens, src->dim, e);
    if (rc == PWB_OK)
        memcpy(dst->w, src->w, (size_t)src->n_tokens * (size_t)src->dim * sizeof *dst->w);
    return rc;
}

static const char *const init_names[] = {"random", "vocab", "class", "text"};

int softprompt_init_parse(const char *name)
{
    for (int i = 0; name && i < 4; i++)
        if (!strcasecmp(name, init_names[i]))
            return i;
    return -1;
}

const char *softprompt_init_name(int init)
{
    return init >= 0 && init < 4 ? init_names[init] : "?";
}

const char *softprompt_init_peft(int init)
{
    switch (init) {
    case SP_INIT_VOCAB: return "SAMPLE_VOCAB";
    case SP_INIT_TEXT: return "TEXT";
    default: return "RANDOM";
    }
}

void softprompt_init_uniform(soft_prompt *sp, pwb_rng *r, float lo, float hi)
{
    const size_t n = (size_t)sp->n_tokens * (size_t)sp->dim;
    for (size_t i = 0; i < n; i++)
        sp->w[i] = lo + (hi - lo) * (float)rng_uniform(r);
}

/* SentencePiece byte-fallback pieces look like "<0x0A>". */
static int is_byte_piece(const char *s)
{
    return s && strlen(s) == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>';
}

int softprompt_vocab_candidates(const model *m, int32_t **ids, int *n, pwb_err *e)
{
    const int V = m->hp.n_vocab;
    int cap = V < SOFTPROMPT_VOCAB_TOP ? V : SOFTPROMPT_VOCAB_TOP;
    *ids = malloc((size_t)(cap > 0 ? cap : 1) * sizeof **ids);
    *n = 0;
    if (!*ids)
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (int32_t id = 0; id < V && *n < cap; id++) {
        if (m->tok && (tokenizer_is_special(m->tok, id) || is_byte_piece(tokenizer_token_text(m->tok, id))))
            continue;
        (*ids)[(*n)++] = id;
    }
    if (*n == 0) {
        free(*ids);
        *ids = NULL;
        return err_set(e, PWB_EINVAL, "soft prompt: the vocabulary has no ordinary tokens to sample");
    }
    return PWB_OK;
}

int softprompt_init_vocab(soft_prompt *sp, const model *m, int from, pwb_rng *r, pwb_err *e)
{
    if (sp->dim != m->hp.n_embd)
        return err_set(e, PWB_EINVAL, "soft prompt: dimension %d, model hidden size %d", sp->dim, m->hp.n_embd);
    if (from >= sp->n_tokens)
        return PWB_OK;
    int32_t *ids;
    int n;
    int rc = softprompt_vocab_candidates(m, &ids, &n, e);
    for (int i = from; rc == PWB_OK && i < sp->n_tokens; i++)
        rc = model_embed_token(m, ids[rng_below(r, (uint64_t)n)], sp->w + (size_t)i * sp->dim, e);
    free(ids);
    return rc;
}

int softprompt_init_class(soft_prompt *sp, const model *m, const int32_t *const *label_ids, const int *label_lens,
                          int n_labels, pwb_rng *r, pwb_err *e)
{
    if (sp->dim != m->hp.n_embd)
        return err_set(e, PWB_EINVAL, "soft prompt: dimension %d, model hidden size %d", sp->dim, m->hp.n_embd);
    if (n_labels < 1)
        return err_set(e, PWB_EINVAL, "soft prompt: class-label initialisation needs labels");
    const int d = sp->dim, rows = n_labels < sp->n_tokens ? n_labels : sp->n_tokens;
    float *tmp = malloc((size_t)d * sizeof *tmp);
    if (!tmp)
        return err_set(e, PWB_ENOMEM, "out of memory");
    int rc = PWB_OK;
    for (int i = 0; rc == PWB_OK && i < rows; i++) {
        float *dst = sp->w + (size_t)i * d;
        memset(dst, 0, (size_t)d * sizeof *dst);
        if (label_lens[i] < 1 || !label_ids[i]) {
            rc = err_set(e, PWB_EINVAL, "soft prompt: label %d has no tokens", i);
            break;
        }
        for (int k = 0; rc == PWB_OK && k < label_lens[i]; k++) {
            if (label_ids[i][k] < 0 || label_ids[i][k] >= m->hp.n_vocab) {
                rc = err_set(e, PWB_EINVAL, "soft prompt: label %d: token id %d out of range", i, (int)label_ids[i][k]);
                break;
            }
            rc = model_embed_token(m, label_ids[i][k], tmp, e);
            for (int j = 0; rc == PWB_OK && j < d; j++)
                dst[j] += tmp[j] / (float)label_lens[i];
        }
    }
    free(tmp);
    if (rc == PWB_OK)
        rc = softprompt_init_vocab(sp, m, rows, r, e);
    return rc;
}

int softprompt_init_text(soft_prompt *sp, const model *m, const char *text, pwb_err *e)
{
    if (sp->dim != m->hp.n_embd)
        return err_set(e, PWB_EINVAL, "soft prompt: dimension %d, model hidden size %d", sp->dim, m->hp.n_embd);
    if (!m->tok)
        return err_set(e, PWB_EINVAL, "soft prompt: text initialisation needs the model's tokenizer");
    if (!text)
        text = "";
    int32_t *ids = NULL;
    size_t n = 0;
    if (tokenizer_encode(m->tok, text, strlen(text), 0, 0, &ids, &n, e) < 0)
        return e ? e->code : PWB_EPARSE;
    if (n == 0) {
        free(ids);
        return err_set(e, PWB_EINVAL, "soft prompt: the initialisation text has no tokens");
    }
    int rc = PWB_OK;
    for (int i = 0; rc == PWB_OK && i < sp->n_tokens; i++)
        rc = model_embed_token(m, ids[(size_t)i % n], sp->w + (size_t)i * sp->dim, e);
    free(ids);
    return rc;
}
