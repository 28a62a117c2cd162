#include "tune/method.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels.h"
#include "util/rng.h"
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
    prefix_mlp *p = &a->mlp;
    free(p->emb);
    free(p->w1);
    free(p->b1);
    free(p->w2);
    free(p->b2);
    free(p->h);
    memset(a, 0, sizeof *a);
}

/* Zero MLP of that shape. */
static int mlp_new(prefix_mlp *p, int n, int td, int hidden, int width, pwb_err *e)
{
    if (hidden < 1 || hidden > (1 << 16) || td < 1)
        return err_set(e, PWB_EINVAL, "tune: bad prefix projection size %d", hidden);
    p->n = n;
    p->td = td;
    p->hidden = hidden;
    p->width = width;
    p->emb = calloc((size_t)n * td, sizeof(float));
    p->w1 = calloc((size_t)hidden * td, sizeof(float));
    p->b1 = calloc((size_t)hidden, sizeof(float));
    p->w2 = calloc((size_t)width * hidden, sizeof(float));
    p->b2 = calloc((size_t)width, sizeof(float));
    p->h = calloc((size_t)n * hidden, sizeof(float));
    if (!p->emb || !p->w1 || !p->b1 || !p->w2 || !p->b2 || !p->h)
        return err_set(e, PWB_ENOMEM, "out of memory (prefix projection)");
    return PWB_OK;
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
    case TUNE_PREFIX: {
        int rc = softprompt_new(&a->prompt, n_tokens, prefix_width(m), e);
        const int td = m->hp.n_head_kv * m->hp.head_dim;
        if (rc == PWB_OK && mc->prefix_hidden)
            rc = mlp_new(&a->mlp, n_tokens, td, mc->prefix_hidden < 0 ? td : mc->prefix_hidden, prefix_width(m), e);
        if (rc)
            tune_adapter_free(a);
        return rc;
    }
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
    const prefix_mlp *p = &src->mlp;
    int rc = softprompt_new(&dst->prompt, src->prompt.n_tokens, src->prompt.dim, e);
    if (rc == PWB_OK && p->hidden)
        rc = mlp_new(&dst->mlp, p->n, p->td, p->hidden, p->width, e);
    if (rc)
        tune_adapter_free(dst);
    return rc;
}

size_t tune_adapter_n_params(const tune_adapter *a)
{
    if (a->kind == TUNE_LORA)
        return lora_n_params(&a->lora);
    const prefix_mlp *p = &a->mlp;
    if (p->hidden)
        return (size_t)p->n * p->td + (size_t)p->hidden * (p->td + 1) + (size_t)p->width * (p->hidden + 1);
    return (size_t)a->prompt.n_tokens * (size_t)a->prompt.dim;
}

static void param_add(tune_params *p, float *w, size_t rows, size_t cols)
{
    p->w[p->n] = w;
    p->rows[p->n] = rows;
    p->cols[p->n++] = cols;
}

int tune_params_of(tune_adapter *a, tune_params *p, pwb_err *e)
{
    memset(p, 0, sizeof *p);
    int cap = a->kind == TUNE_LORA ? 2 * a->lora.n_layer * LORA_N_MODULES : 5;
    p->w = calloc((size_t)cap, sizeof *p->w);
    p->rows = calloc((size_t)cap, sizeof *p->rows);
    p->cols = calloc((size_t)cap, sizeof *p->cols);
    if (!p->w || !p->rows || !p->cols) {
        tune_params_free(p);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    const prefix_mlp *q = &a->mlp;
    if (a->kind != TUNE_LORA && q->hidden) { /* the MLP is trained, the prefix computed */
        param_add(p, q->emb, (size_t)q->n, (size_t)q->td);
        param_add(p, q->w1, (size_t)q->hidden, (size_t)q->td);
        param_add(p, q->b1, 1, (size_t)q->hidden);
        param_add(p, q->w2, (size_t)q->width, (size_t)q->hidden);
        param_add(p, q->b2, 1, (size_t)q->width);
        return PWB_OK;
    }
    if (a->kind != TUNE_LORA) {
        param_add(p, a->prompt.w, (size_t)a->prompt.n_tokens, (size_t)a->prompt.dim);
        return PWB_OK;
    }
    for (int l = 0; l < a->lora.n_layer; l++)
        for (int mod = 0; mod < LORA_N_MODULES; mod++) {
            lora_mat *t = lora_at_mut(&a->lora, l, mod);
            if (!t)
                continue;
            param_add(p, t->a, (size_t)a->lora.r, (size_t)t->in);
            param_add(p, t->b, (size_t)t->out, (size_t)a->lora.r);
        }
    return PWB_OK;
}

void tune_adapter_sync(tune_adapter *a)
{
    const prefix_mlp *p = &a->mlp;
    if (a->kind != TUNE_PREFIX || !p->hidden)
        return;
    for (int t = 0; t < p->n; t++) {
        float *h = p->h + (size_t)t * p->hidden, *out = a->prompt.w + (size_t)t * p->width;
        const float *x = p->emb + (size_t)t * p->td;
        for (int j = 0; j < p->hidden; j++)
            h[j] = tanhf(p->b1[j] + kernel_dot_f32(p->w1 + (size_t)j * p->td, x, p->td));
#pragma omp parallel for schedule(static) if ((int64_t)p->width * p->hidden >= (1 << 16))
        for (int o = 0; o < p->width; o++)
            out[o] = p->b2[o] + kernel_dot_f32(p->w2 + (size_t)o * p->hidden, h, p->hidden);
    }
}

void tune_adapter_backprop(const tune_adapter *a, tune_adapter *grad)
{
    const prefix_mlp *p = &a->mlp;
    if (a->kind != TUNE_PREFIX || !p->hidden)
        return;
    prefix_mlp *g = &grad->mlp;
    float *da = malloc((size_t)p->hidden * sizeof *da);
    if (!da) /* the caller's gradient stays without the MLP's share; nothing to report it through */
        return;
    for (int t = 0; t < p->n; t++) {
        const float *dp = grad->prompt.w + (size_t)t * p->width, *h = p->h + (size_t)t * p->hidden;
        const float *x = p->emb + (size_t)t * p->td;
        /* dW2 += dp h^T, db2 += dp, dh = W2^T dp (row by row: W2 is [width][hidden]) */
        memset(da, 0, (size_t)p->hidden * sizeof *da);
        for (int o = 0; o < p->width; o++) {
            if (dp[o] == 0.0f)
                continue;
            kernel_axpy_f32(g->w2 + (size_t)o * p->hidden, dp[o], h, p->hidden);
            kernel_axpy_f32(da, dp[o], p->w2 + (size_t)o * p->hidden, p->hidden);
            g->b2[o] += dp[o];
        }
        /* through tanh: da = dh (1 - h^2); dW1 += da x^T, db1 += da, demb += W1^T da */
        for (int j = 0; j < p->hidden; j++) {
            da[j] *= 1.0f - h[j] * h[j];
            kernel_axpy_f32(g->w1 + (size_t)j * p->td, da[j], x, p->td);
            g->b1[j] += da[j];
            kernel_axpy_f32(g->emb + (size_t)t * p->td, da[j], p->w1 + (size_t)j * p->td, p->td);
        }
    }
    free(da);
    memset(grad->prompt.w, 0, (size_t)grad->prompt.n_tokens * grad->prompt.dim * sizeof(float));
}

void tune_adapter_init_mlp(tune_adapter *a, uint64_t seed)
{
    prefix_mlp *p = &a->mlp;
    if (a->kind != TUNE_PREFIX || !p->hidden)
        return;
    pwb_rng r;
    rng_init(&r, seed ^ 0x3A7Fu);
    for (size_t i = 0; i < (size_t)p->n * p->td; i++)
        p->emb[i] = (float)rng_normal(&r);
    const double b1 = 1.0 / sqrt((double)p->td), b2 = 1.0 / sqrt((double)p->hidden);
    for (size_t i = 0; i < (size_t)p->hidden * p->td; i++)
        p->w1[i] = (float)((2.0 * rng_uniform(&r) - 1.0) * b1);
    for (int j = 0; j < p->hidden; j++)
        p->b1[j] = (float)((2.0 * rng_uniform(&r) - 1.0) * b1);
    for (size_t i = 0; i < (size_t)p->width * p->hidden; i++)
        p->w2[i] = (float)((2.0 * rng_uniform(&r) - 1.0) * b2);
    for (int o = 0; o < p->width; o++)
        p->b2[o] = (float)((2.0 * rng_uniform(&r) - 1.0) * b2);
    tune_adapter_sync(a);
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
    if (a->kind == TUNE_PREFIX && a->mlp.hidden) { /* what scores: the computed prefix, as a loaded folder holds */
        tune_adapter v = {.kind = TUNE_PREFIX, .prompt = a->prompt};
        tune_adapter_sha256(&v, out);
        return;
    }
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
