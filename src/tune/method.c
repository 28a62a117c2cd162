#include "tune/method.h"

#include <stdlib.h>
#include <string.h>

#include "util/sha256.h"

static const char *const kinds[] = {"prompt", "lora", "prefix"};

int tune_method_parse(const char *name)
{
    if (!name)
        return -1;
    if (strcmp(name, "soft_prompt") == 0)
        return TUNE_PROMPT;
    for (int i = 0; i < 3; i++)
        if (strcmp(name, kinds[i]) == 0)
            return i;
    return -1;
}

const char *tune_method_name(int kind)
{
    return kind >= 0 && kind < 3 ? kinds[kind] : "?";
}

void tune_method_config_default(tune_method_config *c)
{
    memset(c, 0, sizeof *c);
    c->kind = TUNE_PROMPT;
    c->lora_r = 8;
    c->lora_alpha = 16;
    c->lora_dropout = 0.05;
    c->lora_targets = (1u << LORA_Q) | (1u << LORA_V);
}

void tune_adapter_free(tune_adapter *a)
{
    if (!a)
        return;
    softprompt_free(&a->prompt);
    lora_free(&a->lora);
    memset(a, 0, sizeof *a);
}

static int prefix_width(const model *m)
{
    return m->hp.n_layer * 2 * m->hp.n_head_kv * m->hp.head_dim;
}

int tune_adapter_new(tune_adapter *a, const model *m, const tune_method_config *mc, int n_tokens, pwb_err *e)
{
    memset(a, 0, sizeof *a);
    a->kind = mc->kind;
    switch (mc->kind) {
    case TUNE_PROMPT:
        return softprompt_new(&a->prompt, n_tokens, m->hp.n_embd, e);
    case TUNE_PREFIX:
        return softprompt_new(&a->prompt, n_tokens, prefix_width(m), e);
    case TUNE_LORA: {
        int rc = lora_new(&a->lora, m, mc->lora_r, (float)mc->lora_alpha, mc->lora_targets, e);
        a->lora.dropout = (float)mc->lora_dropout;
        return rc;
    }
    default:
        return err_set(e, PWB_EINVAL, "tune: unknown method %d", mc->kind);
    }
}

int tune_adapter_like(tune_adapter *dst, const tune_adapter *src, pwb_err *e)
{
    memset(dst, 0, sizeof *dst);
    dst->kind = src->kind;
    if (src->kind == TUNE_LORA)
        return lora_new_like(&dst->lora, &src->lora, e);
    return softprompt_new(&dst->prompt, src->prompt.n_tokens, src->prompt.dim, e);
}

size_t tune_adapter_n_params(const tune_adapter *a)
{
    if (a->kind == TUNE_LORA)
        return lora_n_params(&a->lora);
    return (size_t)a->prompt.n_tokens * (size_t)a->prompt.dim;
}

int tune_params_of(tune_adapter *a, tune_params *p, pwb_err *e)
{
    memset(p, 0, sizeof *p);
    int cap = a->kind == TUNE_LORA ? 2 * a->lora.n_layer * LORA_N_MODULES : 1;
    p->w = calloc((size_t)cap, sizeof *p->w);
    p->rows = calloc((size_t)cap, sizeof *p->rows);
    p->cols = calloc((size_t)cap, sizeof *p->cols);
    if (!p->w || !p->rows || !p->cols) {
        tune_params_free(p);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    if (a->kind != TUNE_LORA) {
        p->w[0] = a->prompt.w;
        p->rows[0] = (size_t)a->prompt.n_tokens;
        p->cols[0] = (size_t)a->prompt.dim;
        p->n = 1;
        return PWB_OK;
    }
    for (int l = 0; l < a->lora.n_layer; l++)
        for (int mod = 0; mod < LORA_N_MODULES; mod++) {
            lora_mat *t = lora_at_mut(&a->lora, l, mod);
            if (!t)
                continue;
            p->w[p->n] = t->a;
            p->rows[p->n] = (size_t)a->lora.r;
            p->cols[p->n++] = (size_t)t->in;
            p->w[p->n] = t->b;
            p->rows[p->n] = (size_t)t->out;
            p->cols[p->n++] = (size_t)a->lora.r;
        }
    return PWB_OK;
}

void tune_params_free(tune_params *p)
{
    free(p->w);
    free(p->rows);
    free(p->cols);
    memset(p, 0, sizeof *p);
}

void tune_adapter_sha256(const tune_adapter *a, char out[65])
{
    tune_params p;
    if (tune_params_of((tune_adapter *)a, &p, NULL) != PWB_OK) {
        out[0] = '\0';
        return;
    }
    sha256_ctx c;
    sha256_init(&c);
    for (int i = 0; i < p.n; i++)
        sha256_update(&c, p.w[i], p.rows[i] * p.cols[i] * sizeof(float));
    unsigned char d[32];
    sha256_final(&c, d);
    sha256_to_hex(d, out);
    tune_params_free(&p);
}

void tune_adapter_bind_engine(engine *en, const tune_adapter *a)
{
    engine_set_lora(en, a && a->kind == TUNE_LORA ? &a->lora : NULL);
}

int tune_adapter_prefix(engine *en, const tune_adapter *a, const int32_t *ids, int n_ids, engine_prefix **out,
                        pwb_err *e)
{
    if (a && a->kind == TUNE_PREFIX)
        return engine_prefix_new_kv(en, a->prompt.w, a->prompt.n_tokens, ids, n_ids, out, e);
    if (a && a->kind == TUNE_PROMPT)
        return engine_prefix_new(en, a->prompt.w, a->prompt.n_tokens, ids, n_ids, out, e);
    return engine_prefix_new(en, NULL, 0, ids, n_ids, out, e);
}

void tune_adapter_bind_batch(bwd_ctx *bc, tune_adapter *a, tune_adapter *grad, bwd_seq *s)
{
    bwd_ctx_set_lora(bc, a->kind == TUNE_LORA ? &a->lora : NULL, a->kind == TUNE_LORA && grad ? &grad->lora : NULL);
    if (a->kind == TUNE_PREFIX)
        bwd_ctx_set_kv_prefix(bc, a->prompt.w, a->prompt.n_tokens, grad ? grad->prompt.w : NULL);
    else
        bwd_ctx_set_kv_prefix(bc, NULL, 0, NULL);
    if (s && a->kind == TUNE_PROMPT) {
        s->embeds = a->prompt.w;
        s->n_embeds = a->prompt.n_tokens;
        s->d_embeds = grad ? grad->prompt.w : NULL;
    }
}

int tune_adapter_positions(const tune_adapter *a)
{
    return a->kind == TUNE_LORA ? 0 : a->prompt.n_tokens;
}
