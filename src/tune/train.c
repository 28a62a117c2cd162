#include "tune/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "engine/backward.h"
#include "engine/tokenizer.h"
#include "tune/peft.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/rng.h"
#include "util/str.h"
#include "util/timer.h"

/* ---- examples ------------------------------------------------------------------------------ */

void tune_example_free(tune_example *x)
{
    if (!x)
        return;
    free(x->ids);
    for (int i = 0; x->conts && i < x->n_labels; i++)
        free(x->conts[i]);
    free(x->conts);
    free(x->cont_lens);
    memset(x, 0, sizeof *x);
}

int tune_tokenize(const model *m, const char *text, int add_special, int parse_special, int32_t **ids, int *n,
                  pwb_err *e)
{
    size_t k = 0;
    *ids = NULL;
    *n = 0;
    if (!m->tok)
        return err_set(e, PWB_EINVAL, "the model has no tokenizer");
    if (tokenizer_encode(m->tok, text, strlen(text), add_special, parse_special, ids, &k, e) < 0)
        return e && e->code ? e->code : PWB_EPARSE;
    if (k > (size_t)m->hp.n_ctx) {
        free(*ids);
        *ids = NULL;
        return err_set(e, PWB_ERANGE, "%zu tokens exceed the model's context of %d", k, m->hp.n_ctx);
    }
    *n = (int)k;
    return PWB_OK;
}

int tune_rank_tokens(const model *m, const char *prompt, const char *const *choices, int n_choices, tune_example *out,
                     pwb_err *e)
{
    memset(out, 0, sizeof *out);
    out->label = -1;
    if (n_choices < 1 || !choices)
        return err_set(e, PWB_EINVAL, "rank: no choices");
    pwb_buf text, chb;
    buf_init(&text);
    buf_init(&chb);
    int rc = buf_puts(&text, prompt) || buf_reserve(&text, 0) ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    if (rc == PWB_OK)
        rc = tune_tokenize(m, text.data, 1, 1, &out->ids, &out->n_ids, e);
    if (rc == PWB_OK && out->n_ids == 0)
        rc = err_set(e, PWB_EINVAL, "empty prompt");
    /* A prompt ending in spaces ("Answer: ") hands them to the choices, as lm-eval-harness does: a
     * BPE vocabulary glues a space to the word after it, so " positive" is the natural token. */
    size_t plen = text.len, nsp = 0;
    while (rc == PWB_OK && nsp < plen && text.data[plen - 1 - nsp] == ' ')
        nsp++;
    if (rc == PWB_OK && nsp > 0 && nsp < plen) {
        plen -= nsp;
        text.data[plen] = '\0';
        text.len = plen;
        free(out->ids);
        out->ids = NULL;
        rc = tune_tokenize(m, text.data, 1, 1, &out->ids, &out->n_ids, e);
        if (rc == PWB_OK && out->n_ids == 0)
            rc = err_set(e, PWB_EINVAL, "empty prompt");
    }
    if (rc == PWB_OK) {
        out->conts = calloc((size_t)n_choices, sizeof *out->conts);
        out->cont_lens = calloc((size_t)n_choices, sizeof *out->cont_lens);
        out->n_labels = n_choices;
        if (!out->conts || !out->cont_lens)
            rc = err_set(e, PWB_ENOMEM, "out of memory");
    }
    for (int c = 0; rc == PWB_OK && c < n_choices; c++) {
        buf_reset(&chb);
        for (size_t k = 0; k < nsp; k++)
            buf_putc(&chb, ' ');
        buf_puts(&chb, choices[c] ? choices[c] : "");
        const char *ch = chb.data ? chb.data : "";
        /* As the model reads it after the prompt; the choice alone when joining the texts would
         * change the prompt's own tokens. */
        text.len = plen;
        text.data[plen] = '\0';
        buf_puts(&text, ch);
        int32_t *full = NULL;
        int nf = 0;
        rc = tune_tokenize(m, text.data, 1, 1, &full, &nf, e);
        if (rc != PWB_OK)
            break;
        if (nf > out->n_ids && memcmp(full, out->ids, (size_t)out->n_ids * sizeof *full) == 0) {
            out->cont_lens[c] = nf - out->n_ids;
            out->conts[c] = malloc((size_t)out->cont_lens[c] * sizeof(int32_t));
            if (out->conts[c])
                memcpy(out->conts[c], full + out->n_ids, (size_t)out->cont_lens[c] * sizeof(int32_t));
            free(full);
        } else {
            free(full);
            rc = tune_tokenize(m, ch, 0, 0, &out->conts[c], &out->cont_lens[c], e);
            if (rc != PWB_OK)
                break;
        }
        if (!out->conts[c] || out->cont_lens[c] < 1)
            rc = err_set(e, out->cont_lens[c] < 1 ? PWB_EINVAL : PWB_ENOMEM, "%s",
                         out->cont_lens[c] < 1 ? "empty choice" : "out of memory");
    }
    buf_free(&text);
    buf_free(&chb);
    if (rc != PWB_OK)
        tune_example_free(out);
    return rc;
}

int tune_encode(const model *m, const chat_template *ct, const chat_msg *msgs, int n_msgs,
                const char *const *choices, int n_choices, int label, tune_example *out, pwb_err *e)
{
    memset(out, 0, sizeof *out);
    if (!m->tok)
        return err_set(e, PWB_EINVAL, "the model has no tokenizer");
    if (n_msgs < 1 || !msgs || n_choices < 1 || !choices)
        return err_set(e, PWB_EINVAL, "tune: an example needs messages and choices");
    if (label < -1 || label >= n_choices)
        return err_set(e, PWB_EINVAL, "tune: label %d out of range", label);
    pwb_buf text;
    buf_init(&text);
    chat_template none = {0};
    int rc = PWB_OK;
    if (!ct) {
        rc = chat_template_init(&none, NULL, "none", e);
        ct = &none;
    }
    if (rc == PWB_OK)
        rc = chat_render(ct, msgs, (size_t)n_msgs, 1, &text, e);
    if (rc == PWB_OK)
        rc = tune_rank_tokens(m, text.data ? text.data : "", choices, n_choices, out, e);
    if (rc == PWB_OK)
        out->label = label;
    chat_template_free(&none);
    buf_free(&text);
    return rc;
}

/* ---- configuration ------------------------------------------------------------------------- */

void tune_config_default(tune_config *c)
{
    memset(c, 0, sizeof *c);
    tune_method_config_default(&c->method);
    c->n_tokens = 20;
    c->init = SP_INIT_CLASS;
    c->epochs = 1.0;
    c->batch = 8;
    optim_config_default(&c->opt, OPTIM_ADAFACTOR);
    c->seed = 1;
    c->eval_n = 200;
    c->eval_every = 50;
}

/* ---- checkpoint ---------------------------------------------------------------------------- */

/* PWBTUNE2 added cpu_seconds at the end of the header; PWBTUNE1 checkpoints still resume (their
 * CPU time so far is unknown and stays so). */
#define CKPT_MAGIC "PWBTUNE2"
#define CKPT_MAGIC_V1 "PWBTUNE1"

/* n_tokens and dim: the shape of a single matrix (a soft prompt, as before methods existed), or
 * for several the number of matrices and of values in all. */
typedef struct ckpt_hdr {
    char magic[8];
    int32_t n_tokens, dim, has_best, evals_since_best;
    int64_t step, examples_seen, best_step, state_n;
    double best_acc, best_loss, seconds, last_loss;
    char key[80];
    double cpu_seconds; /* PWBTUNE2 onwards */
} ckpt_hdr;
#define CKPT_HDR_V1_SIZE offsetof(ckpt_hdr, cpu_seconds)

typedef struct train_state {
    long step;
    int64_t examples_seen;
    double seconds, cpu_seconds, last_loss; /* cpu_seconds: NAN when unknown (an old checkpoint) */
    int has_best, evals_since_best;
    long best_step;
    double best_acc, best_loss;
    tune_adapter best;
} train_state;

/* The trainable values and their optimizers, matrix by matrix. */
typedef struct train_mats {
    tune_params p, best, grad;
    optimizer *opt;
    size_t n_values, state_n;
} train_mats;

static void mats_shape(const train_mats *t, int32_t *a, int32_t *b)
{
    *a = t->p.n == 1 ? (int32_t)t->p.rows[0] : (int32_t)t->p.n;
    *b = t->p.n == 1 ? (int32_t)t->p.cols[0] : (int32_t)t->n_values;
}

static void mats_copy(const tune_params *dst, const tune_params *src)
{
    for (int i = 0; i < src->n; i++)
        memcpy(dst->w[i], src->w[i], src->rows[i] * src->cols[i] * sizeof(float));
}

static int ckpt_save(const char *path, const char *key, const train_state *st, const train_mats *t, pwb_err *e)
{
    ckpt_hdr h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CKPT_MAGIC, 8);
    mats_shape(t, &h.n_tokens, &h.dim);
    h.has_best = st->has_best;
    h.evals_since_best = st->evals_since_best;
    h.step = st->step;
    h.examples_seen = st->examples_seen;
    h.best_step = st->best_step;
    h.best_acc = st->best_acc;
    h.best_loss = st->best_loss;
    h.seconds = st->seconds;
    h.cpu_seconds = st->cpu_seconds;
    h.last_loss = st->last_loss;
    h.state_n = (int64_t)t->state_n;
    str_copy(h.key, sizeof h.key, key ? key : "");
    const size_t n = sizeof h + (t->n_values * (st->has_best ? 2 : 1) + t->state_n) * sizeof(float);
    unsigned char *buf = malloc(n);
    if (!buf)
        return err_set(e, PWB_ENOMEM, "out of memory");
    unsigned char *q = buf;
    memcpy(q, &h, sizeof h);
    q += sizeof h;
    for (int i = 0; i < t->p.n; i++) {
        memcpy(q, t->p.w[i], t->p.rows[i] * t->p.cols[i] * sizeof(float));
        q += t->p.rows[i] * t->p.cols[i] * sizeof(float);
    }
    for (int i = 0; st->has_best && i < t->p.n; i++) {
        memcpy(q, t->best.w[i], t->p.rows[i] * t->p.cols[i] * sizeof(float));
        q += t->p.rows[i] * t->p.cols[i] * sizeof(float);
    }
    for (int i = 0; i < t->p.n; i++) {
        optim_state_save(&t->opt[i], (float *)(void *)q);
        q += optim_state_size(&t->opt[i]) * sizeof(float);
    }
    int rc = file_write_atomic(path, buf, n, e);
    free(buf);
    return rc;
}

/* Returns PWB_OK with *found = 1 when a matching checkpoint was loaded. */
static int ckpt_load(const char *path, const char *key, train_state *st, train_mats *t, int *found, pwb_err *e)
{
    *found = 0;
    if (!file_exists(path))
        return PWB_OK;
    pwb_buf b;
    buf_init(&b);
    int rc = file_read_all(path, (size_t)1 << 31, &b, e);
    if (rc != PWB_OK)
        return rc;
    ckpt_hdr h;
    memset(&h, 0, sizeof h);
    int32_t r0, c0;
    mats_shape(t, &r0, &c0);
    size_t hdr_size = sizeof h;
    if (b.len >= 8 && memcmp(b.data, CKPT_MAGIC_V1, 8) == 0)
        hdr_size = CKPT_HDR_V1_SIZE;
    if (b.len < hdr_size) {
        buf_free(&b);
        return err_set(e, PWB_EPARSE, "%s: not a pwb tuning checkpoint", path);
    }
    memcpy(&h, b.data, hdr_size);
    if (hdr_size == CKPT_HDR_V1_SIZE) {
        memcpy(h.magic, CKPT_MAGIC, 8);
        h.cpu_seconds = NAN;
    }
    h.key[sizeof h.key - 1] = '\0';
    if (memcmp(h.magic, CKPT_MAGIC, 8) != 0 || h.n_tokens != r0 || h.dim != c0 ||
        h.state_n != (int64_t)t->state_n || h.step < 0 ||
        b.len != hdr_size + (t->n_values * (h.has_best ? 2 : 1) + (size_t)h.state_n) * sizeof(float)) {
        buf_free(&b);
        return err_set(e, PWB_EPARSE, "%s: not a checkpoint of these parameters (shape or optimizer differ)", path);
    }
    if (strcmp(h.key, key ? key : "") != 0) {
        buf_free(&b);
        return err_set(e, PWB_EINVAL, "%s: checkpoint of another training configuration (%s); remove it to start over",
                       path, h.key);
    }
    const unsigned char *q = (const unsigned char *)b.data + hdr_size;
    for (int i = 0; i < t->p.n; i++) {
        memcpy(t->p.w[i], q, t->p.rows[i] * t->p.cols[i] * sizeof(float));
        q += t->p.rows[i] * t->p.cols[i] * sizeof(float);
    }
    for (int i = 0; h.has_best && i < t->p.n; i++) {
        memcpy(t->best.w[i], q, t->p.rows[i] * t->p.cols[i] * sizeof(float));
        q += t->p.rows[i] * t->p.cols[i] * sizeof(float);
    }
    float *state = malloc((size_t)(h.state_n > 0 ? h.state_n : 1) * sizeof(float));
    if (!state) {
        buf_free(&b);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    memcpy(state, q, (size_t)h.state_n * sizeof(float));
    for (int i = 0, off = 0; i < t->p.n; i++) {
        optim_state_load(&t->opt[i], state + off);
        off += (int)optim_state_size(&t->opt[i]);
        t->opt[i].step = h.step;
    }
    free(state);
    st->step = h.step;
    st->examples_seen = h.examples_seen;
    st->seconds = h.seconds;
    st->cpu_seconds = h.cpu_seconds;
    st->last_loss = h.last_loss;
    st->has_best = h.has_best;
    st->evals_since_best = h.evals_since_best;
    st->best_step = h.best_step;
    st->best_acc = h.best_acc;
    st->best_loss = h.best_loss;
    buf_free(&b);
    *found = 1;
    return PWB_OK;
}

/* ---- evaluation ---------------------------------------------------------------------------- */

static int common_prefix(const tune_example *ex, const size_t *idx, size_t n)
{
    if (n == 0)
        return 0;
    const tune_example *a = &ex[idx ? idx[0] : 0];
    int lcp = a->n_ids - 1;
    for (size_t i = 1; i < n && lcp > 0; i++) {
        const tune_example *b = &ex[idx ? idx[i] : i];
        int k = 0;
        while (k < lcp && k < b->n_ids - 1 && b->ids[k] == a->ids[k])
            k++;
        lcp = k;
    }
    return lcp > 0 ? lcp : 0;
}

static int evaluate_idx(engine *en, const tune_adapter *ad, const tune_example *ex, const size_t *idx, size_t n,
                        double *accuracy, double *loss, int *pred, pwb_err *e)
{
    *accuracy = NAN;
    *loss = NAN;
    if (n == 0)
        return PWB_OK;
    const int lcp = common_prefix(ex, idx, n);
    const tune_example *first = &ex[idx ? idx[0] : 0];
    engine_prefix *pre = NULL;
    tune_adapter_bind_engine(en, ad);
    int rc = tune_adapter_prefix(en, ad, first->ids, lcp, &pre, e);
    if (rc != PWB_OK) {
        tune_adapter_bind_engine(en, NULL);
        return rc;
    }
    engine_rank_item *items = calloc(n, sizeof *items);
    double *lp = NULL;
    int nl = first->n_labels;
    if (items)
        lp = malloc(n * (size_t)nl * sizeof *lp);
    if (!items || !lp) {
        free(items);
        engine_prefix_free(pre);
        tune_adapter_bind_engine(en, NULL);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const tune_example *x = &ex[idx ? idx[i] : i];
        items[i] = (engine_rank_item){.prompt = x->ids + lcp, .n_prompt = x->n_ids - lcp,
                                      .conts = (const int32_t *const *)x->conts, .cont_lens = x->cont_lens,
                                      .n_conts = x->n_labels, .logprob = lp + i * (size_t)nl};
    }
    rc = engine_rank(en, pre, items, (int)n, e);
    tune_adapter_bind_engine(en, NULL);
    size_t correct = 0, scored = 0;
    double nll = 0;
    for (size_t i = 0; rc == PWB_OK && i < n; i++) {
        const tune_example *x = &ex[idx ? idx[i] : i];
        if (items[i].status != PWB_OK) {
            rc = err_set(e, items[i].status, "tune: example %zu could not be scored", i);
            break;
        }
        int best = 0;
        for (int c = 1; c < x->n_labels; c++)
            if (items[i].logprob[c] > items[i].logprob[best])
                best = c;
        if (pred)
            pred[i] = best;
        if (x->label >= 0) {
            scored++;
            correct += best == x->label;
            nll += -items[i].logprob[x->label];
        }
    }
    if (rc == PWB_OK && scored) {
        *accuracy = (double)correct / (double)scored;
        *loss = nll / (double)scored;
    }
    free(lp);
    free(items);
    engine_prefix_free(pre);
    return rc;
}

int tune_evaluate_adapter(engine *en, const tune_adapter *ad, const tune_example *ex, size_t n, double *accuracy,
                          double *loss, int *pred, pwb_err *e)
{
    for (size_t i = 0; i < n; i++)
        if (ex[i].n_labels != ex[0].n_labels || ex[i].n_ids < 1)
            return err_set(e, PWB_EINVAL, "tune: example %zu: labels or prompt do not match the others", i);
    return evaluate_idx(en, ad, ex, NULL, n, accuracy, loss, pred, e);
}

int tune_evaluate(engine *en, const soft_prompt *prompt, const tune_example *ex, size_t n, double *accuracy,
                  double *loss, int *pred, pwb_err *e)
{
    tune_adapter a;
    memset(&a, 0, sizeof a);
    a.kind = TUNE_PROMPT;
    if (prompt)
        a.prompt = *prompt; /* borrowed */
    return tune_evaluate_adapter(en, prompt ? &a : NULL, ex, n, accuracy, loss, pred, e);
}

/* ---- training ------------------------------------------------------------------------------ */

typedef struct batch_buf {
    bwd_seq *seqs;
    int32_t **ids;
    int *tpos;      /* [B][max_cont] */
    int max_cont;
} batch_buf;

/* The training stream: epoch k visits the training indices in a seeded permutation of its own. */
static void epoch_perm(uint64_t seed, long epoch, const size_t *train, size_t n, size_t *perm)
{
    pwb_rng r;
    rng_init(&r, seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(epoch + 1)));
    memcpy(perm, train, n * sizeof *perm);
    rng_shuffle_idx(&r, perm, n);
}

static int init_prompt(const model *m, const tune_config *cfg, const tune_example *ex, soft_prompt *sp, pwb_err *e)
{
    pwb_rng r;
    rng_init(&r, cfg->seed ^ 0x50F7u);
    switch (cfg->init) {
    case SP_INIT_RANDOM:
        softprompt_init_uniform(sp, &r, -0.5f, 0.5f);
        return PWB_OK;
    case SP_INIT_VOCAB:
        return softprompt_init_vocab(sp, m, 0, &r, e);
    case SP_INIT_CLASS:
        return softprompt_init_class(sp, m, (const int32_t *const *)ex->conts, ex->cont_lens, ex->n_labels, &r, e);
    case SP_INIT_TEXT:
        return softprompt_init_text(sp, m, cfg->init_text, e);
    default:
        return err_set(e, PWB_EINVAL, "tune: unknown initialisation %d", cfg->init);
    }
}

/* Prefix tuning starts from real activations (Li & Liang 2021 found that better than random):
 * the keys and values the model computes for n tokens, chosen as a soft prompt's init chooses
 * them (class: each label's first token first, then sampled vocabulary; vocab; text). random:
 * uniform in [-0.5, 0.5]. */
static int init_prefix(engine *en, const tune_config *cfg, const tune_example *ex, soft_prompt *kv, pwb_err *e)
{
    const model *m = engine_model(en);
    pwb_rng r;
    rng_init(&r, cfg->seed ^ 0x50F7u);
    if (cfg->init == SP_INIT_RANDOM) {
        softprompt_init_uniform(kv, &r, -0.5f, 0.5f);
        return PWB_OK;
    }
    const int n = kv->n_tokens;
    int32_t *ids = malloc((size_t)n * sizeof *ids), *cand = NULL;
    int n_cand = 0, k = 0, rc = ids ? PWB_OK : err_set(e, PWB_ENOMEM, "out of memory");
    if (rc == PWB_OK && cfg->init == SP_INIT_TEXT) {
        int32_t *t = NULL;
        size_t nt = 0;
        if (tokenizer_encode(m->tok, cfg->init_text ? cfg->init_text : "", strlen(cfg->init_text ? cfg->init_text : ""),
                             0, 0, &t, &nt, e) < 0 || nt == 0)
            rc = err_set(e, PWB_EINVAL, "tune: the init text has no tokens");
        for (; rc == PWB_OK && k < n; k++)
            ids[k] = t[(size_t)k % nt];
        free(t);
    }
    if (rc == PWB_OK && cfg->init == SP_INIT_CLASS)
        for (int c = 0; c < ex->n_labels && k < n; c++)
            ids[k++] = ex->conts[c][0];
    if (rc == PWB_OK && k < n)
        rc = softprompt_vocab_candidates(m, &cand, &n_cand, e);
    for (; rc == PWB_OK && k < n; k++)
        ids[k] = cand[rng_below(&r, (uint64_t)n_cand)];
    engine_prefix *p = NULL;
    if (rc == PWB_OK)
        rc = engine_prefix_new(en, NULL, 0, ids, n, &p, e);
    if (rc == PWB_OK)
        rc = engine_prefix_kv(p, kv->w, e);
    engine_prefix_free(p);
    free(ids);
    free(cand);
    return rc;
}

static double l2_all(const tune_params *p)
{
    double s = 0;
    for (int i = 0; i < p->n; i++)
        for (size_t k = 0; k < p->rows[i] * p->cols[i]; k++)
            s += (double)p->w[i][k] * p->w[i][k];
    return sqrt(s);
}

static void mats_free(train_mats *t)
{
    for (int i = 0; t->opt && i < t->p.n; i++)
        optim_free(&t->opt[i]);
    free(t->opt);
    tune_params_free(&t->p);
    tune_params_free(&t->best);
    tune_params_free(&t->grad);
}

int tune_train_adapter(engine *en, const tune_config *cfg, const tune_example *ex, size_t n, tune_adapter *out,
                       const tune_hooks *hooks, tune_result *res, pwb_err *e)
{
    const model *m = engine_model(en);
    const int kind = cfg->method.kind;
    memset(res, 0, sizeof *res);
    res->best_accuracy = NAN;
    memset(out, 0, sizeof *out);
    if (n == 0 || !ex)
        return err_set(e, PWB_EINVAL, "tune: no training examples");
    const int n_pos = kind == TUNE_LORA ? 0 : cfg->n_tokens;
    if (cfg->batch < 1 || (kind != TUNE_LORA && cfg->n_tokens < 1) || (cfg->steps <= 0 && !(cfg->epochs > 0)) ||
        cfg->eval_n < 0)
        return err_set(e, PWB_EINVAL, "tune: bad configuration (batch %d, tokens %d, steps %ld, epochs %g)",
                       cfg->batch, cfg->n_tokens, cfg->steps, cfg->epochs);
    int max_cont = 1;
    for (size_t i = 0; i < n; i++) {
        const tune_example *x = &ex[i];
        if (x->n_labels != ex[0].n_labels || x->label < 0 || x->label >= x->n_labels || x->n_ids < 1 || !x->conts)
            return err_set(e, PWB_EINVAL, "tune: example %zu: no gold label, no prompt, or other labels", i);
        for (int c = 0; c < x->n_labels; c++)
            if (x->cont_lens[c] > max_cont)
                max_cont = x->cont_lens[c];
        if ((int64_t)n_pos + x->n_ids + max_cont > m->hp.n_ctx)
            return err_set(e, PWB_ERANGE, "tune: example %zu does not fit the model's context of %d", i, m->hp.n_ctx);
    }

    /* Held-out slice and training indices. */
    size_t *all = malloc(n * sizeof *all), *perm = malloc(n * sizeof *perm);
    if (!all || !perm) {
        free(all);
        free(perm);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        all[i] = i;
    pwb_rng split;
    rng_init(&split, cfg->seed ^ 0x5711u);
    rng_shuffle_idx(&split, all, n);
    size_t n_eval = (size_t)cfg->eval_n;
    if (n_eval > n / 2)
        n_eval = n / 2;
    size_t *eval_idx = all, *train = all + n_eval;
    size_t n_train = n - n_eval;
    if (cfg->train_limit > 0 && (size_t)cfg->train_limit < n_train)
        n_train = (size_t)cfg->train_limit;
    res->n_train = (int)n_train;
    res->n_eval = (int)n_eval;
    const int B = cfg->batch < (int)n_train ? cfg->batch : (int)n_train;
    long total = cfg->steps > 0 ? cfg->steps : (long)ceil(cfg->epochs * (double)n_train / B);
    if (total < 1)
        total = 1;

    optim_config oc = cfg->opt;
    if (oc.total_steps <= 0)
        oc.total_steps = total;
    train_mats tm;
    memset(&tm, 0, sizeof tm);
    train_state st;
    memset(&st, 0, sizeof st);
    st.best_acc = -1;
    tune_adapter grad;
    memset(&grad, 0, sizeof grad);
    bwd_ctx *bc = NULL;
    batch_buf bb = {0};
    size_t *bx = malloc((size_t)B * sizeof *bx);
    long cur_epoch = -1;
    int stopping = 0;
    char extra[96];
    int rc = tune_adapter_new(out, m, &cfg->method, cfg->n_tokens, e);
    if (rc == PWB_OK)
        rc = tune_adapter_like(&st.best, out, e);
    if (rc == PWB_OK)
        rc = tune_adapter_like(&grad, out, e);
    if (rc == PWB_OK)
        rc = tune_params_of(out, &tm.p, e);
    if (rc == PWB_OK)
        rc = tune_params_of(&st.best, &tm.best, e);
    if (rc == PWB_OK)
        rc = tune_params_of(&grad, &tm.grad, e);
    if (rc == PWB_OK && !(tm.opt = calloc((size_t)tm.p.n, sizeof *tm.opt)))
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    /* Several matrices are clipped together (one global norm) before their updates. */
    optim_config oc_each = oc;
    if (tm.p.n > 1)
        oc_each.grad_clip_norm = 0;
    for (int i = 0; rc == PWB_OK && i < tm.p.n; i++) {
        rc = optim_init(&tm.opt[i], &oc_each, tm.p.rows[i], tm.p.cols[i], e);
        tm.n_values += tm.p.rows[i] * tm.p.cols[i];
        tm.state_n += rc == PWB_OK ? optim_state_size(&tm.opt[i]) : 0;
    }
    if (rc != PWB_OK)
        goto done;
    int found = 0;
    if (cfg->checkpoint)
        rc = ckpt_load(cfg->checkpoint, cfg->config_key, &st, &tm, &found, e);
    if (rc == PWB_OK && !found) {
        if (kind == TUNE_PROMPT)
            rc = init_prompt(m, cfg, &ex[0], &out->prompt, e);
        else if (kind == TUNE_PREFIX && out->mlp.hidden)
            tune_adapter_init_mlp(out, cfg->seed); /* PEFT's random start: the MLP computes the prefix */
        else if (kind == TUNE_PREFIX)
            rc = init_prefix(en, cfg, &ex[0], &out->prompt, e);
        else
            lora_init_peft(&out->lora, cfg->seed ^ 0x10A4u);
    }
    if (rc != PWB_OK)
        goto done;
    tune_adapter_sync(out);
    res->resumed = found;

    bwd_opts bo = {.exact = cfg->exact};
    rc = bwd_ctx_new(&bc, m, &bo, e);
    bb.seqs = calloc((size_t)B + 1, sizeof *bb.seqs);
    bb.ids = calloc((size_t)B, sizeof *bb.ids);
    bb.tpos = malloc((size_t)B * (size_t)max_cont * sizeof *bb.tpos);
    bb.max_cont = max_cont;
    if (rc == PWB_OK && (!bb.seqs || !bb.ids || !bb.tpos || !bx))
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    for (int b = 0; rc == PWB_OK && b < B; b++) {
        bb.ids[b] = malloc(((size_t)m->hp.n_ctx + 1) * sizeof(int32_t));
        if (!bb.ids[b])
            rc = err_set(e, PWB_ENOMEM, "out of memory");
    }
    if (rc != PWB_OK)
        goto done;

    /* Step 0: the initial parameters are the first candidate, so training never returns worse
     * than it started (as the held-out slice sees it). */
    if (n_eval > 0 && !found) {
        double acc, el;
        rc = evaluate_idx(en, out, ex, eval_idx, n_eval, &acc, &el, NULL, e);
        if (rc != PWB_OK)
            goto done;
        mats_copy(&tm.best, &tm.p);
        st.has_best = 1;
        st.best_acc = acc;
        st.best_loss = el;
        st.best_step = 0;
        tune_eval_info vi = {0, acc, el, (int)n_eval, 1};
        if (hooks && hooks->on_eval && hooks->on_eval(hooks->ctx, &vi))
            stopping = 2;
    }
    for (long step = st.step + 1; step <= total && !stopping; step++) {
        double t0 = timer_wall(), c0 = timer_cpu();
        /* This step's examples from the stream of epochs. */
        for (int b = 0; b < B; b++) {
            int64_t k = (int64_t)(step - 1) * B + b;
            long epoch = (long)(k / (int64_t)n_train);
            if (epoch != cur_epoch) {
                epoch_perm(cfg->seed, epoch, train, n_train, perm);
                cur_epoch = epoch;
            }
            bx[b] = perm[k % (int64_t)n_train];
        }
        const int lcp = common_prefix(ex, bx, (size_t)B);
        bb.seqs[0] = (bwd_seq){.ids = ex[bx[0]].ids, .n_ids = lcp};
        tune_adapter_bind_batch(bc, out, &grad, &bb.seqs[0]);
        /* Without leading vectors or shared ids there is no prefix sequence. */
        const int has0 = bb.seqs[0].n_embeds + lcp > 0;
        for (int b = 0; b < B; b++) {
            const tune_example *x = &ex[bx[b]];
            const int own = x->n_ids - lcp, nc = x->cont_lens[x->label];
            /* the prompt's tail, then the label's tokens but the last as teacher-forced input */
            memcpy(bb.ids[b], x->ids + lcp, (size_t)own * sizeof(int32_t));
            memcpy(bb.ids[b] + own, x->conts[x->label], (size_t)(nc - 1) * sizeof(int32_t));
            int *tp = bb.tpos + (size_t)b * max_cont;
            for (int k = 0; k < nc; k++)
                tp[k] = own - 1 + k;
            bb.seqs[b + 1] = (bwd_seq){.prefix = has0 ? &bb.seqs[0] : NULL, .ids = bb.ids[b], .n_ids = own + nc - 1,
                                       .n_tgt = nc, .tgt_pos = tp, .targets = x->conts[x->label]};
        }
        for (int i = 0; i < tm.grad.n; i++)
            memset(tm.grad.w[i], 0, tm.grad.rows[i] * tm.grad.cols[i] * sizeof(float));
        if (kind == TUNE_LORA)
            lora_set_training(&out->lora, 1, cfg->seed * 0x9E3779B97F4A7C15ull + (uint64_t)step);
        double loss;
        rc = bwd_run(bc, has0 ? bb.seqs : bb.seqs + 1, has0 ? B + 1 : B, 1, &loss, e);
        if (kind == TUNE_LORA)
            lora_set_training(&out->lora, 0, 0);
        if (rc != PWB_OK)
            goto done;
        if (!isfinite(loss)) {
            rc = err_set(e, PWB_ERANGE, "tune: the loss diverged at step %ld (try a smaller learning rate)", step);
            goto done;
        }
        tune_adapter_backprop(out, &grad);
        const double gn = l2_all(&tm.grad);
        if (tm.p.n > 1 && oc.grad_clip_norm > 0 && gn > oc.grad_clip_norm)
            for (int i = 0; i < tm.grad.n; i++)
                for (size_t k = 0; k < tm.grad.rows[i] * tm.grad.cols[i]; k++)
                    tm.grad.w[i][k] *= (float)(oc.grad_clip_norm / gn);
        double lr = 0;
        for (int i = 0; i < tm.p.n; i++)
            lr = optim_step(&tm.opt[i], tm.p.w[i], tm.grad.w[i]);
        tune_adapter_sync(out);
        const double dt = timer_wall() - t0;
        st.step = step;
        st.examples_seen += B;
        st.seconds += dt;
        st.cpu_seconds += timer_cpu() - c0;
        st.last_loss = loss;
        tune_step_info si = {step, total, loss, lr, gn, dt, st.examples_seen};
        if (hooks && hooks->on_step && hooks->on_step(hooks->ctx, &si))
            stopping = 2;

        /* Evaluation, early stopping, checkpoints. */
        int do_eval = n_eval > 0 && ((cfg->eval_every > 0 && step % cfg->eval_every == 0) || step == total);
        if (do_eval) {
            double acc, el;
            rc = evaluate_idx(en, out, ex, eval_idx, n_eval, &acc, &el, NULL, e);
            if (rc != PWB_OK)
                goto done;
            int better = !st.has_best || acc > st.best_acc || (acc == st.best_acc && el < st.best_loss);
            if (better) {
                mats_copy(&tm.best, &tm.p);
                st.has_best = 1;
                st.best_acc = acc;
                st.best_loss = el;
                st.best_step = step;
                st.evals_since_best = 0;
            } else {
                st.evals_since_best++;
            }
            tune_eval_info vi = {step, acc, el, (int)n_eval, better};
            if (hooks && hooks->on_eval && hooks->on_eval(hooks->ctx, &vi))
                stopping = 2;
            if (cfg->patience > 0 && st.evals_since_best >= cfg->patience) {
                res->stopped_early = 1;
                stopping = stopping ? stopping : 1;
            }
        }
        if (hooks && hooks->stop && *hooks->stop)
            stopping = 2;
        if (cfg->checkpoint && (do_eval || stopping || step == total ||
                                (cfg->checkpoint_every > 0 && step % cfg->checkpoint_every == 0))) {
            rc = ckpt_save(cfg->checkpoint, cfg->config_key, &st, &tm, e);
            if (rc != PWB_OK)
                goto done;
        }
        if (hooks && hooks->progress) {
            if (st.has_best)
                snprintf(extra, sizeof extra, "loss %.4f  best acc %.3f", loss, st.best_acc);
            else
                snprintf(extra, sizeof extra, "loss %.4f", loss);
            progress_update(hooks->progress, step, extra);
        }
    }
    if (stopping == 2)
        rc = err_set(e, PWB_EINTR, "tune: stopped at step %ld (checkpoint written%s)", st.step,
                     cfg->checkpoint ? "" : ": none configured");
    else if (st.has_best) {
        mats_copy(&tm.p, &tm.best);
        tune_adapter_sync(out);
    }

done:
    res->steps = st.step;
    res->examples_seen = st.examples_seen;
    res->seconds = st.seconds;
    res->cpu_seconds = st.cpu_seconds;
    res->last_loss = st.last_loss;
    if (st.has_best) {
        res->best_accuracy = st.best_acc;
        res->best_step = st.best_step;
    }
    for (int b = 0; bb.ids && b < B; b++)
        free(bb.ids[b]);
    free(bb.ids);
    free(bb.seqs);
    free(bb.tpos);
    free(bx);
    bwd_ctx_free(bc);
    mats_free(&tm);
    tune_adapter_free(&grad);
    tune_adapter_free(&st.best);
    free(all);
    free(perm);
    if (rc != PWB_OK && rc != PWB_EINTR)
        tune_adapter_free(out);
    return rc;
}

int tune_train(engine *en, const tune_config *cfg, const tune_example *ex, size_t n, soft_prompt *out,
               const tune_hooks *hooks, tune_result *res, pwb_err *e)
{
    tune_config c = *cfg;
    c.method.kind = TUNE_PROMPT;
    tune_adapter a;
    int rc = tune_train_adapter(en, &c, ex, n, &a, hooks, res, e);
    *out = a.prompt; /* moved: a owns nothing else */
    return rc;
}

/* ---- artifacts ----------------------------------------------------------------------------- */

int tune_save(const char *dir, const soft_prompt *sp, int init, const char *init_text, const char *base_model,
              const char *training_json, pwb_err *e)
{
    /* Borrowed pointers: the struct is only read. */
    peft_prompt p;
    peft_prompt_init(&p);
    p.n_tokens = (size_t)sp->n_tokens;
    p.dim = (size_t)sp->dim;
    p.embeddings = sp->w;
    p.init = (char *)softprompt_init_peft(init);
    p.init_text = init == SP_INIT_TEXT ? (char *)init_text : NULL;
    p.base_model = (char *)base_model;
    return peft_save(dir, &p, training_json, e);
}

int tune_load(const char *dir, int dim, soft_prompt *sp, pwb_err *e)
{
    memset(sp, 0, sizeof *sp);
    peft_prompt p;
    peft_prompt_init(&p);
    int rc = peft_load(dir, &p, e);
    if (rc == PWB_OK && dim > 0 && p.dim != (size_t)dim)
        rc = err_set(e, PWB_EINVAL, "%s: soft prompt of dimension %zu, the model's hidden size is %d", dir, p.dim, dim);
    if (rc == PWB_OK && (p.n_tokens < 1 || p.n_tokens > SOFTPROMPT_MAX_TOKENS))
        rc = err_set(e, PWB_ERANGE, "%s: %zu virtual tokens", dir, p.n_tokens);
    if (rc == PWB_OK) {
        sp->n_tokens = (int)p.n_tokens;
        sp->dim = (int)p.dim;
        sp->w = p.embeddings;
        p.embeddings = NULL;
    }
    peft_prompt_free(&p);
    return rc;
}

int tune_adapter_save(const char *dir, const model *m, const tune_adapter *a, int init, const char *init_text,
                      const char *base_model, const char *training_json, pwb_err *e)
{
    switch (a->kind) {
    case TUNE_PROMPT:
        return tune_save(dir, &a->prompt, init, init_text, base_model, training_json, e);
    case TUNE_LORA:
        return peft_lora_save(dir, m, &a->lora, base_model, training_json, e);
    case TUNE_PREFIX:
        return peft_prefix_save(dir, m, a->prompt.w, a->prompt.n_tokens, a->mlp.hidden, base_model, training_json, e);
    default:
        return err_set(e, PWB_EINVAL, "tune: unknown method %d", a->kind);
    }
}

int tune_adapter_load(const char *dir, const model *m, tune_adapter *a, pwb_err *e)
{
    memset(a, 0, sizeof *a);
    const int kind = peft_kind(dir, e);
    if (kind < 0)
        return e && e->code ? e->code : PWB_EPARSE;
    a->kind = kind;
    if (kind == TUNE_PROMPT)
        return tune_load(dir, m->hp.n_embd, &a->prompt, e);
    if (kind == TUNE_LORA)
        return peft_lora_load(dir, m, &a->lora, e);
    int rc = peft_prefix_load(dir, m, &a->prompt.w, &a->prompt.n_tokens, e);
    a->prompt.dim = m->hp.n_layer * 2 * m->hp.n_head_kv * m->hp.head_dim;
    return rc;
}
