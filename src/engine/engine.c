#include "engine/engine.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"
#include "engine/kernels.h"
#include "engine/lora.h"
#include "engine/sample.h"
#include "util/buf.h"

struct engine {
    model *m;
    fwd_ctx *fc;
    engine_opts o;
};

struct engine_prefix {
    const engine *en;
    kv_cache *kv;
    int n_embeds;
    int32_t *ids;
    int n_ids;
};

/* OpenMP's thread count is per calling thread: set it on every entry so the engine can be
 * driven from any one thread. */
static void engine_enter(const engine *en)
{
    if (en->o.n_threads > 0)
        omp_set_num_threads(en->o.n_threads);
}

int engine_open(engine **out, const char *path, const engine_opts *o, pwb_err *e)
{
    *out = NULL;
    engine *en = calloc(1, sizeof *en);
    if (!en)
        return err_set(e, PWB_ENOMEM, "out of memory");
    if (o)
        en->o = *o;
    if (en->o.step_tokens <= 0)
        en->o.step_tokens = 512;
    if (en->o.batch_tokens <= 0)
        en->o.batch_tokens = 1024;
    if (en->o.batch_items <= 0)
        en->o.batch_items = 64;
    engine_enter(en);
    int rc = model_load(&en->m, path, e);
    if (rc == PWB_OK)
        rc = fwd_ctx_new(&en->fc, en->m, en->o.step_tokens, e);
    if (rc == PWB_OK) {
        fwd_ctx_set_exact(en->fc, !en->o.int8_activations);
        fwd_ctx_set_ggml_gelu(en->fc, en->o.ggml_gelu);
    }
    if (rc != PWB_OK) {
        engine_close(en);
        return rc;
    }
    *out = en;
    return PWB_OK;
}

void engine_close(engine *en)
{
    if (!en)
        return;
    fwd_ctx_free(en->fc);
    model_free(en->m);
    free(en);
}

const model *engine_model(const engine *en) { return en->m; }
const tokenizer *engine_tokenizer(const engine *en) { return en->m->tok; }
int engine_n_vocab(const engine *en) { return en->m->hp.n_vocab; }
int engine_n_embd(const engine *en) { return en->m->hp.n_embd; }
int engine_n_ctx(const engine *en) { return en->m->hp.n_ctx; }

static int ids_ok(const engine *en, const int32_t *ids, int n)
{
    if (n < 0 || (n > 0 && !ids))
        return 0;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= en->m->hp.n_vocab)
            return 0;
    return 1;
}

/* A fresh cache continuing the prefix (or a root when there is none). */
static int child_cache(engine *en, const engine_prefix *p, int cap, kv_cache **out, pwb_err *e)
{
    int len = p ? kv_cache_len(p->kv) : 0;
    return kv_cache_new(out, en->m, len > 0 ? p->kv : NULL, len, cap, e);
}

/* ---- prefix ------------------------------------------------------------------------------- */

int engine_prefix_new(engine *en, const float *embeds, int n_embeds, const int32_t *ids, int n_ids,
                      engine_prefix **out, pwb_err *e)
{
    *out = NULL;
    engine_enter(en);
    if (n_embeds < 0 || (n_embeds && !embeds) || !ids_ok(en, ids, n_ids))
        return err_set(e, PWB_EINVAL, "prefix: bad input");
    engine_prefix *p = calloc(1, sizeof *p);
    if (!p)
        return err_set(e, PWB_ENOMEM, "out of memory");
    p->en = en;
    p->n_embeds = n_embeds;
    int rc = kv_cache_new(&p->kv, en->m, NULL, 0, n_embeds + n_ids, e);
    if (rc == PWB_OK && n_ids > 0) {
        p->ids = malloc((size_t)n_ids * sizeof *p->ids);
        if (!p->ids)
            rc = err_set(e, PWB_ENOMEM, "out of memory");
        else
            memcpy(p->ids, ids, (size_t)n_ids * sizeof *ids);
        p->n_ids = n_ids;
    }
    if (rc == PWB_OK && n_embeds + n_ids > 0) {
        fwd_seq s = {.kv = p->kv, .embeds = embeds, .n_embeds = n_embeds, .ids = ids, .n_ids = n_ids};
        rc = forward_batch(en->fc, &s, 1, e);
    }
    if (rc != PWB_OK) {
        engine_prefix_free(p);
        return rc;
    }
    *out = p;
    return PWB_OK;
}

int engine_prefix_new_kv(engine *en, const float *kv, int n_kv, const int32_t *ids, int n_ids, engine_prefix **out,
                         pwb_err *e)
{
    *out = NULL;
    engine_enter(en);
    if (n_kv < 1 || !kv || !ids_ok(en, ids, n_ids))
        return err_set(e, PWB_EINVAL, "prefix: bad input");
    if ((int64_t)n_kv + n_ids > en->m->hp.n_ctx)
        return err_set(e, PWB_ERANGE, "prefix: %d positions exceed the context of %d", n_kv + n_ids, en->m->hp.n_ctx);
    engine_prefix *p = NULL;
    int rc = engine_prefix_new(en, NULL, 0, NULL, 0, &p, e);
    if (rc != PWB_OK)
        return rc;
    rc = kv_cache_reserve(p->kv, n_kv + n_ids, e);
    if (rc == PWB_OK)
        rc = kv_cache_append(p->kv, kv, n_kv, e);
    if (rc == PWB_OK) {
        p->n_embeds = n_kv;
        rc = engine_prefix_set_ids(en, p, ids, n_ids, e);
    }
    if (rc != PWB_OK) {
        engine_prefix_free(p);
        return rc;
    }
    *out = p;
    return PWB_OK;
}

int engine_prefix_kv(const engine_prefix *p, float *out, pwb_err *e)
{
    const kv_cache *c = p->kv;
    const model_hparams *hp = &c->m->hp;
    if (c->n_parent || c->n < 1)
        return err_set(e, PWB_EINVAL, "prefix: no keys and values of its own");
    const size_t kvd = (size_t)hp->n_head_kv * hp->head_dim, row = (size_t)hp->n_layer * 2 * kvd;
    for (int i = 0; i < c->n; i++)
        for (int l = 0; l < hp->n_layer; l++) {
            memcpy(out + (size_t)i * row + 2 * (size_t)l * kvd, c->k[l] + (size_t)i * kvd, kvd * sizeof(float));
            memcpy(out + (size_t)i * row + (2 * (size_t)l + 1) * kvd, c->v[l] + (size_t)i * kvd, kvd * sizeof(float));
        }
    return PWB_OK;
}

void engine_set_lora(engine *en, const lora *l)
{
    fwd_ctx_set_lora(en->fc, l);
}

int engine_prefix_set_ids(engine *en, engine_prefix *p, const int32_t *ids, int n_ids, pwb_err *e)
{
    engine_enter(en);
    if (!ids_ok(en, ids, n_ids))
        return err_set(e, PWB_EINVAL, "prefix: bad token ids");
    int keep = 0;
    while (keep < p->n_ids && keep < n_ids && p->ids[keep] == ids[keep])
        keep++;
    kv_cache_truncate(p->kv, p->n_embeds + keep);
    p->n_ids = keep;
    if (n_ids == keep)
        return PWB_OK;
    int32_t *ni = realloc(p->ids, (size_t)n_ids * sizeof *ni);
    if (!ni)
        return err_set(e, PWB_ENOMEM, "out of memory");
    p->ids = ni;
    memcpy(p->ids + keep, ids + keep, (size_t)(n_ids - keep) * sizeof *ids);
    fwd_seq s = {.kv = p->kv, .ids = ids + keep, .n_ids = n_ids - keep};
    int rc = forward_batch(en->fc, &s, 1, e);
    if (rc != PWB_OK) {
        kv_cache_truncate(p->kv, p->n_embeds + keep);
        return rc;
    }
    p->n_ids = n_ids;
    return PWB_OK;
}

void engine_prefix_free(engine_prefix *p)
{
    if (!p)
        return;
    kv_cache_free(p->kv);
    free(p->ids);
    free(p);
}

int engine_prefix_len(const engine_prefix *p)
{
    return p ? kv_cache_len(p->kv) : 0;
}

const int32_t *engine_prefix_ids(const engine_prefix *p, int *n_ids)
{
    *n_ids = p ? p->n_ids : 0;
    return p ? p->ids : NULL;
}

/* ---- rank ---------------------------------------------------------------------------------- */

static int rank_item_check(const engine *en, int base, engine_rank_item *it)
{
    if (!it->logprob || it->n_conts < 1 || !it->conts || !it->cont_lens || it->n_prompt < 1 ||
        !ids_ok(en, it->prompt, it->n_prompt))
        return PWB_EINVAL;
    int maxc = 0;
    for (int c = 0; c < it->n_conts; c++) {
        if (it->cont_lens[c] < 1 || !ids_ok(en, it->conts[c], it->cont_lens[c]))
            return PWB_EINVAL;
        if (it->cont_lens[c] > maxc)
            maxc = it->cont_lens[c];
    }
    if ((int64_t)base + it->n_prompt + maxc - 1 > en->m->hp.n_ctx)
        return PWB_ERANGE;
    return PWB_OK;
}

static int rank_group(engine *en, const engine_prefix *prefix, engine_rank_item **g, int ng, pwb_err *e)
{
    const int V = en->m->hp.n_vocab;
    int rc = PWB_OK;
    kv_cache **kv = calloc((size_t)ng, sizeof *kv);
    fwd_seq *seqs = calloc((size_t)ng, sizeof *seqs);
    float *last = malloc((size_t)ng * V * sizeof *last);
    int n_multi = 0, n_multi_tok = 0;
    kv_cache **ckv = NULL;
    fwd_seq *cseqs = NULL;
    double *clp = NULL;
    if (!kv || !seqs || !last) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < ng; i++) {
        if ((rc = child_cache(en, prefix, g[i]->n_prompt, &kv[i], e)) != PWB_OK)
            goto done;
        seqs[i] = (fwd_seq){.kv = kv[i], .ids = g[i]->prompt, .n_ids = g[i]->n_prompt, .n_out = 1,
                            .logits = last + (size_t)i * V};
    }
    if ((rc = forward_batch(en->fc, seqs, ng, e)) != PWB_OK)
        goto done;
    for (int i = 0; i < ng; i++) {
        const float *row = last + (size_t)i * V;
        double lse = sample_logsumexp(row, V);
        for (int c = 0; c < g[i]->n_conts; c++) {
            g[i]->logprob[c] = (double)row[g[i]->conts[c][0]] - lse;
            if (g[i]->cont_lens[c] > 1) {
                n_multi++;
                n_multi_tok += g[i]->cont_lens[c] - 1;
            }
        }
    }
    if (n_multi == 0)
        goto done;
    /* Longer continuations: each runs its tokens but the last as a child of its prompt's cache. */
    ckv = calloc((size_t)n_multi, sizeof *ckv);
    cseqs = calloc((size_t)n_multi, sizeof *cseqs);
    clp = malloc((size_t)n_multi_tok * sizeof *clp);
    if (!ckv || !cseqs || !clp) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    int k = 0, off = 0;
    for (int i = 0; i < ng; i++)
        for (int c = 0; c < g[i]->n_conts; c++) {
            int L = g[i]->cont_lens[c];
            if (L < 2)
                continue;
            if ((rc = kv_cache_new(&ckv[k], en->m, kv[i], kv_cache_len(kv[i]), L - 1, e)) != PWB_OK)
                goto done;
            cseqs[k] = (fwd_seq){.kv = ckv[k], .ids = g[i]->conts[c], .n_ids = L - 1, .n_out = L - 1,
                                 .targets = g[i]->conts[c] + 1, .logprobs = clp + off};
            off += L - 1;
            k++;
        }
    if ((rc = forward_batch(en->fc, cseqs, n_multi, e)) != PWB_OK)
        goto done;
    k = 0;
    off = 0;
    for (int i = 0; i < ng; i++)
        for (int c = 0; c < g[i]->n_conts; c++) {
            int L = g[i]->cont_lens[c];
            if (L < 2)
                continue;
            for (int j = 0; j < L - 1; j++)
                g[i]->logprob[c] += clp[off + j];
            off += L - 1;
            k++;
        }
done:
    for (int i = 0; ckv && i < n_multi; i++)
        kv_cache_free(ckv[i]);
    for (int i = 0; kv && i < ng; i++)
        kv_cache_free(kv[i]);
    free(ckv);
    free(cseqs);
    free(clp);
    free(kv);
    free(seqs);
    free(last);
    return rc;
}

int engine_rank(engine *en, const engine_prefix *prefix, engine_rank_item *items, int n, pwb_err *e)
{
    if (n < 0 || (n && !items))
        return err_set(e, PWB_EINVAL, "rank: bad batch");
    engine_enter(en);
    int base = engine_prefix_len(prefix);
    engine_rank_item **g = malloc(((size_t)n + 1) * sizeof *g);
    if (!g)
        return err_set(e, PWB_ENOMEM, "out of memory");
    int rc = PWB_OK, i = 0;
    for (int j = 0; j < n; j++)
        items[j].status = rank_item_check(en, base, &items[j]);
    while (i < n && rc == PWB_OK) {
        int ng = 0, tok = 0;
        while (i < n && ng < en->o.batch_items && (ng == 0 || tok + items[i].n_prompt <= en->o.batch_tokens)) {
            if (items[i].status == PWB_OK) {
                g[ng++] = &items[i];
                tok += items[i].n_prompt;
            }
            i++;
        }
        if (ng)
            rc = rank_group(en, prefix, g, ng, e);
    }
    free(g);
    return rc;
}

/* ---- generation ---------------------------------------------------------------------------- */

void engine_gen_item_clear(engine_gen_item *it)
{
    free(it->out_ids);
    free(it->text);
    it->out_ids = NULL;
    it->text = NULL;
    it->n_out = 0;
}

typedef struct gen_state {
    kv_cache *kv;
    sampler smp;
    int live;
    int32_t next;       /* token to feed on the next step */
    pwb_buf text;
} gen_state;

static int gen_is_stop_id(const engine *en, const engine_gen_item *it, int32_t tok)
{
    if (!it->ignore_eos && tok == tokenizer_eos(en->m->tok))
        return 1;
    for (int i = 0; i < it->n_stop_ids; i++)
        if (it->stop_ids[i] == tok)
            return 1;
    return 0;
}

/* Decodes the ids so far; on a stop string, cuts the text before it and returns 1. */
static int gen_check_stop(const engine *en, engine_gen_item *it, pwb_buf *text)
{
    buf_reset(text);
    tokenizer_decode(en->m->tok, it->out_ids, (size_t)it->n_out, 0, text);
    if (!text->data)
        return 0;
    size_t cut = text->len;
    int hit = 0;
    for (int s = 0; s < it->n_stop; s++) {
        if (!it->stop[s] || !*it->stop[s])
            continue;
        const char *p = strstr(text->data, it->stop[s]);
        if (p && (size_t)(p - text->data) < cut) {
            cut = (size_t)(p - text->data);
            hit = 1;
        }
    }
    if (hit) {
        text->len = cut;
        text->data[cut] = '\0';
    }
    return hit;
}

static int gen_group(engine *en, const engine_prefix *prefix, engine_gen_item **g, int ng, pwb_err *e)
{
    const int V = en->m->hp.n_vocab, n_ctx = en->m->hp.n_ctx;
    int rc = PWB_OK;
    gen_state *st = calloc((size_t)ng, sizeof *st);
    fwd_seq *seqs = calloc((size_t)ng, sizeof *seqs);
    int *map = malloc((size_t)ng * sizeof *map);
    float *lg = malloc((size_t)ng * V * sizeof *lg);
    if (!st || !seqs || !map || !lg) {
        free(st);
        free(seqs);
        free(map);
        free(lg);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    for (int i = 0; i < ng; i++) {
        engine_gen_item *it = g[i];
        buf_init(&st[i].text);
        sampler_init(&st[i].smp, it->temperature, it->top_p > 0.0f ? it->top_p : 1.0f, it->seed);
        it->out_ids = malloc(((size_t)it->max_tokens + 1) * sizeof *it->out_ids);
        if (!it->out_ids) {
            rc = err_set(e, PWB_ENOMEM, "out of memory");
            goto done;
        }
        int cap = it->n_prompt + it->max_tokens;
        if (cap > n_ctx - engine_prefix_len(prefix))
            cap = n_ctx - engine_prefix_len(prefix);
        if ((rc = child_cache(en, prefix, cap, &st[i].kv, e)) != PWB_OK)
            goto done;
        seqs[i] = (fwd_seq){.kv = st[i].kv, .ids = it->prompt, .n_ids = it->n_prompt, .n_out = 1,
                            .logits = lg + (size_t)i * V};
        map[i] = i;
    }
    /* Prefill every prompt as one batch, then one token per live sequence per step. */
    if ((rc = forward_batch(en->fc, seqs, ng, e)) != PWB_OK)
        goto done;
    int nlive = ng;
    for (;;) {
        int nseq = 0;
        for (int r = 0; r < nlive; r++) {
            int i = map[r];
            engine_gen_item *it = g[i];
            int32_t tok = sampler_pick(&st[i].smp, lg + (size_t)r * V, V);
            if (tok < 0) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                goto done;
            }
            if (gen_is_stop_id(en, it, tok)) {
                it->finish = ENGINE_FINISH_EOS;
                continue;
            }
            it->out_ids[it->n_out++] = tok;
            if (it->n_stop > 0 && gen_check_stop(en, it, &st[i].text)) {
                it->finish = ENGINE_FINISH_STOP;
                it->text = buf_take(&st[i].text);
                continue;
            }
            if (it->n_out >= it->max_tokens || kv_cache_len(st[i].kv) >= n_ctx) {
                it->finish = ENGINE_FINISH_LENGTH;
                continue;
            }
            st[i].next = tok;
            map[nseq] = i;
            seqs[nseq] = (fwd_seq){.kv = st[i].kv, .ids = &st[i].next, .n_ids = 1, .n_out = 1,
                                   .logits = lg + (size_t)nseq * V};
            nseq++;
        }
        nlive = nseq;
        if (nlive == 0)
            break;
        if ((rc = forward_batch(en->fc, seqs, nlive, e)) != PWB_OK)
            goto done;
    }
    for (int i = 0; i < ng; i++) {
        engine_gen_item *it = g[i];
        if (it->text)
            continue;
        buf_reset(&st[i].text);
        tokenizer_decode(en->m->tok, it->out_ids, (size_t)it->n_out, 0, &st[i].text);
        it->text = buf_take(&st[i].text);
        if (!it->text) {
            rc = err_set(e, PWB_ENOMEM, "out of memory");
            goto done;
        }
    }
done:
    for (int i = 0; i < ng; i++) {
        kv_cache_free(st[i].kv);
        sampler_free(&st[i].smp);
        buf_free(&st[i].text);
    }
    free(st);
    free(seqs);
    free(map);
    free(lg);
    return rc;
}

int engine_generate(engine *en, const engine_prefix *prefix, engine_gen_item *items, int n, pwb_err *e)
{
    if (n < 0 || (n && !items))
        return err_set(e, PWB_EINVAL, "generate: bad batch");
    engine_enter(en);
    int base = engine_prefix_len(prefix);
    for (int j = 0; j < n; j++) {
        engine_gen_item *it = &items[j];
        it->out_ids = NULL;
        it->text = NULL;
        it->n_out = 0;
        it->finish = ENGINE_FINISH_LENGTH;
        it->status = PWB_OK;
        if (it->n_prompt < 1 || !ids_ok(en, it->prompt, it->n_prompt) || it->max_tokens < 0 ||
            it->n_stop < 0 || (it->n_stop && !it->stop) || it->n_stop_ids < 0 || (it->n_stop_ids && !it->stop_ids))
            it->status = PWB_EINVAL;
        else if ((int64_t)base + it->n_prompt > en->m->hp.n_ctx)
            it->status = PWB_ERANGE;
    }
    engine_gen_item **g = malloc(((size_t)n + 1) * sizeof *g);
    if (!g)
        return err_set(e, PWB_ENOMEM, "out of memory");
    int rc = PWB_OK, i = 0;
    while (i < n && rc == PWB_OK) {
        int ng = 0, tok = 0;
        while (i < n && ng < en->o.batch_items && (ng == 0 || tok + items[i].n_prompt <= en->o.batch_tokens)) {
            if (items[i].status == PWB_OK) {
                if (items[i].max_tokens == 0) {
                    items[i].text = calloc(1, 1);
                    if (!items[i].text)
                        rc = err_set(e, PWB_ENOMEM, "out of memory");
                } else {
                    g[ng++] = &items[i];
                    tok += items[i].n_prompt;
                }
            }
            i++;
        }
        if (ng && rc == PWB_OK)
            rc = gen_group(en, prefix, g, ng, e);
    }
    free(g);
    return rc;
}

/* ---- raw forward --------------------------------------------------------------------------- */

int engine_logits(engine *en, const engine_prefix *prefix, const int32_t *ids, int n, float *out, pwb_err *e)
{
    int lens = n;
    return engine_logits_padded(en, prefix, ids, n, &lens, 1, 1, out, e);
}

int engine_logits_padded(engine *en, const engine_prefix *prefix, const int32_t *ids, int stride,
                         const int *lens, int B, int all_positions, float *out, pwb_err *e)
{
    if (B < 0 || stride < 0 || (B && (!ids || !lens || !out)))
        return err_set(e, PWB_EINVAL, "logits: bad batch");
    engine_enter(en);
    const size_t V = (size_t)en->m->hp.n_vocab;
    kv_cache **kv = calloc((size_t)B + 1, sizeof *kv);
    fwd_seq *seqs = calloc((size_t)B + 1, sizeof *seqs);
    int rc = PWB_OK;
    if (!kv || !seqs) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    for (int b = 0; b < B; b++) {
        if (lens[b] < 1 || lens[b] > stride) {
            rc = err_set(e, PWB_EINVAL, "logits: sequence %d has length %d (stride %d)", b, lens[b], stride);
            goto done;
        }
        if ((rc = child_cache(en, prefix, lens[b], &kv[b], e)) != PWB_OK)
            goto done;
        seqs[b] = (fwd_seq){.kv = kv[b], .ids = ids + (size_t)b * stride, .n_ids = lens[b],
                            .n_out = all_positions ? lens[b] : 1,
                            .logits = out + (all_positions ? (size_t)b * stride * V : (size_t)b * V)};
    }
    rc = forward_batch(en->fc, seqs, B, e);
done:
    for (int b = 0; kv && b < B; b++)
        kv_cache_free(kv[b]);
    free(kv);
    free(seqs);
    return rc;
}

int engine_forward_embeds(engine *en, const float *embeds, int n_embeds, const int32_t *ids, int n_ids,
                          const int *out_pos, int n_out, float *out, pwb_err *e)
{
    engine_enter(en);
    if (n_embeds < 0 || n_ids < 0 || n_embeds + n_ids < 1 || (n_out && !out))
        return err_set(e, PWB_EINVAL, "forward: bad input");
    kv_cache *kv = NULL;
    int rc = kv_cache_new(&kv, en->m, NULL, 0, n_embeds + n_ids, e);
    if (rc != PWB_OK)
        return rc;
    fwd_seq s = {.kv = kv, .embeds = embeds, .n_embeds = n_embeds, .ids = ids, .n_ids = n_ids,
                 .n_out = n_out, .out_pos = out_pos, .logits = out};
    rc = forward_batch(en->fc, &s, 1, e);
    kv_cache_free(kv);
    return rc;
}

int engine_mean_hidden(engine *en, const int32_t *const *ids, const int *lens, int B, float *out, pwb_err *e)
{
    if (B < 0 || (B && (!ids || !lens || !out)))
        return err_set(e, PWB_EINVAL, "mean hidden: bad batch");
    engine_enter(en);
    const size_t d = (size_t)en->m->hp.n_embd;
    size_t total = 0;
    for (int b = 0; b < B; b++) {
        if (lens[b] < 1 || !ids_ok(en, ids[b], lens[b]))
            return err_set(e, PWB_EINVAL, "mean hidden: sequence %d is empty or has bad token ids", b);
        total += (size_t)lens[b];
    }
    kv_cache **kv = calloc((size_t)B + 1, sizeof *kv);
    fwd_seq *seqs = calloc((size_t)B + 1, sizeof *seqs);
    float *h = malloc((total ? total : 1) * d * sizeof *h);
    int rc = PWB_OK;
    if (!kv || !seqs || !h) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    size_t at = 0;
    for (int b = 0; b < B && !rc; b++) {
        rc = kv_cache_new(&kv[b], en->m, NULL, 0, lens[b], e);
        seqs[b] = (fwd_seq){.kv = kv[b], .ids = ids[b], .n_ids = lens[b], .n_out = lens[b], .hidden = h + at * d};
        at += (size_t)lens[b];
    }
    if (!rc)
        rc = forward_batch(en->fc, seqs, B, e);
    for (int b = 0, at2 = 0; !rc && b < B; at2 += lens[b], b++) {
        float *o = out + (size_t)b * d;
        for (size_t j = 0; j < d; j++) {
            double sum = 0;
            for (int t = 0; t < lens[b]; t++)
                sum += h[((size_t)at2 + (size_t)t) * d + j];
            o[j] = (float)(sum / lens[b]);
        }
    }
done:
    for (int b = 0; kv && b < B; b++)
        kv_cache_free(kv[b]);
    free(kv);
    free(seqs);
    free(h);
    return rc;
}

int engine_embed_ids(engine *en, const int32_t *ids, int n, float *out, pwb_err *e)
{
    if (!ids_ok(en, ids, n))
        return err_set(e, PWB_EINVAL, "embed: bad token ids");
    const size_t d = (size_t)en->m->hp.n_embd;
    for (int i = 0; i < n; i++) {
        int rc = model_embed_token(en->m, ids[i], out + (size_t)i * d, e);
        if (rc != PWB_OK)
            return rc;
    }
    return PWB_OK;
}
