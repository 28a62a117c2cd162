#include "llm/local.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/engine.h"
#include "tune/method.h"
#include "tune/train.h"
#include "util/buf.h"
#include "util/str.h"
#include "util/timer.h"

#define LOCAL_DEFAULT_MAX_TOKENS 256
#define LOCAL_MAX_STOP_IDS 4

typedef struct local_impl {
    engine *en;
    chat_template ct;
    int32_t stop_ids[LOCAL_MAX_STOP_IDS];
    int n_stop_ids;
    engine_prefix *prefix; /* the last call's shared prefix, kept for the next call */
    float *pfx_embeds;     /* a copy of the vectors the prefix starts with (a soft prompt), NULL: none */
    int n_pfx_embeds;
    const tune_adapter *pfx_adapter; /* the adapter the kept prefix was computed with */
    int batch;
    char *name;
} local_impl;

/* One request, rendered and tokenized. */
typedef struct local_prep {
    int32_t *ids;
    int n;
    int32_t **conts;
    int *clen;
    int n_conts;
    char *err;
    double work;  /* tokens this request costs the engine: its share of a batch's time */
} local_prep;

static void prep_free(local_prep *p)
{
    free(p->ids);
    for (int i = 0; p->conts && i < p->n_conts; i++)
        free(p->conts[i]);
    free(p->conts);
    free(p->clen);
    free(p->err);
    memset(p, 0, sizeof *p);
}

static char *msg_dup(const pwb_err *e, const char *what)
{
    pwb_buf b;
    buf_init(&b);
    buf_printf(&b, "%s: %s", what, e->msg);
    return buf_take(&b);
}

/* Renders and tokenizes one request; failures land in p->err. */
static void prep_request(local_impl *im, const llm_request *r, local_prep *p, pwb_buf *text)
{
    pwb_err e = {0};
    buf_reset(text);
    const int d = engine_n_embd(im->en);
    if (r->n_prefix_embeds < 0 || (r->n_prefix_embeds > 0 && (!r->prefix_embeds || r->prefix_dim != d))) {
        char msg[128];
        snprintf(msg, sizeof msg, "soft prompt of %d vectors of dimension %d; the model's hidden size is %d",
                 r->n_prefix_embeds, r->prefix_dim, d);
        p->err = str_dup(msg);
        return;
    }
    if (r->n_messages > 0) {
        if (!r->messages) {
            p->err = str_dup("request has n_messages but no messages");
            return;
        }
        chat_msg stack[16], *msgs = r->n_messages <= 16 ? stack : malloc((size_t)r->n_messages * sizeof *msgs);
        if (!msgs) {
            p->err = str_dup("out of memory");
            return;
        }
        for (int i = 0; i < r->n_messages; i++)
            msgs[i] = (chat_msg){.role = r->messages[i].role, .content = r->messages[i].content};
        int rc = chat_render(&im->ct, msgs, (size_t)r->n_messages, 1, text, &e);
        if (msgs != stack)
            free(msgs);
        if (rc != PWB_OK) {
            p->err = msg_dup(&e, "chat template");
            return;
        }
    } else {
        buf_puts(text, r->prompt ? r->prompt : "");
    }
    if (!text->data && buf_reserve(text, 0)) {
        p->err = str_dup("out of memory");
        return;
    }
    const model *m = engine_model(im->en);
    if (r->mode == LLM_EMBED) {
        p->err = str_dup("embedding requests go in a call of their own");
        return;
    }
    if (r->mode == LLM_RANK) {
        if (r->n_choices < 1 || !r->choices) {
            p->err = str_dup("rank request without choices");
            return;
        }
        /* the sequence training reads too (tune_rank_tokens) */
        tune_example x;
        if (tune_rank_tokens(m, text->data, r->choices, r->n_choices, &x, &e) != PWB_OK) {
            p->err = msg_dup(&e, "tokenize");
            return;
        }
        p->ids = x.ids;
        p->n = x.n_ids;
        p->conts = x.conts;
        p->clen = x.cont_lens;
        p->n_conts = x.n_labels;
    } else if (tune_tokenize(m, text->data, 1, 1, &p->ids, &p->n, &e) != PWB_OK) {
        p->err = msg_dup(&e, "tokenize");
        return;
    } else if (p->n == 0) {
        p->err = str_dup("empty prompt");
        return;
    }
    if (r->n_prefix_embeds > 0 && (int64_t)r->n_prefix_embeds + p->n >= engine_n_ctx(im->en)) {
        p->err = str_dup("soft prompt and prompt exceed the model's context");
        return;
    }
    p->work = p->n;
    for (int c = 0; c < p->n_conts; c++)
        p->work += p->clen[c] - 1;
}

static void set_error(llm_response *r, const char *msg)
{
    free(r->error);
    r->error = str_dup(msg);
}

static const char *finish_name(int finish)
{
    return finish == ENGINE_FINISH_LENGTH ? "length" : "stop";
}

/* One batch of requests [i0, i1): everything in it runs as one engine call per mode. */
static int run_batch(local_impl *im, const llm_request *reqs, local_prep *pp, size_t i0, size_t i1,
                     llm_response *out, const double prefix_share[2], int lcp, pwb_err *e)
{
    size_t nb = i1 - i0;
    engine_rank_item *ri = calloc(nb, sizeof *ri);
    engine_gen_item *gi = calloc(nb, sizeof *gi);
    size_t *rmap = calloc(nb, sizeof *rmap), *gmap = calloc(nb, sizeof *gmap);
    int nr = 0, ng = 0, rc = PWB_OK;
    if (!ri || !gi || !rmap || !gmap) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    double w0 = timer_wall(), c0 = timer_cpu(), work = 0;
    for (size_t i = i0; i < i1; i++) {
        const llm_request *r = &reqs[i];
        local_prep *p = &pp[i];
        if (p->err)
            continue;
        work += p->work;
        if (r->mode == LLM_RANK) {
            out[i].choice_logprob = calloc((size_t)p->n_conts, sizeof(double));
            if (!out[i].choice_logprob) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                goto done;
            }
            ri[nr] = (engine_rank_item){.prompt = p->ids + lcp, .n_prompt = p->n - lcp,
                                        .conts = (const int32_t *const *)p->conts, .cont_lens = p->clen,
                                        .n_conts = p->n_conts, .logprob = out[i].choice_logprob};
            rmap[nr++] = i;
        } else {
            int mt = r->max_tokens > 0 ? r->max_tokens : LOCAL_DEFAULT_MAX_TOKENS;
            gi[ng] = (engine_gen_item){.prompt = p->ids + lcp, .n_prompt = p->n - lcp, .max_tokens = mt,
                                       .temperature = (float)r->temperature,
                                       .top_p = r->top_p > 0 ? (float)r->top_p : 1.0f, .seed = r->seed,
                                       .stop = r->stop, .n_stop = r->stop ? r->n_stop : 0,
                                       .stop_ids = im->stop_ids, .n_stop_ids = im->n_stop_ids};
            gmap[ng++] = i;
        }
    }
    if (nr && (rc = engine_rank(im->en, im->prefix, ri, nr, e)) != PWB_OK)
        goto done;
    if (ng && (rc = engine_generate(im->en, im->prefix, gi, ng, e)) != PWB_OK)
        goto done;
    for (int k = 0; k < nr; k++) {
        llm_response *o = &out[rmap[k]];
        if (ri[k].status != PWB_OK) {
            set_error(o, ri[k].status == PWB_ERANGE ? "prompt and choice exceed the model's context"
                                                    : "invalid rank request");
            free(o->choice_logprob);
            o->choice_logprob = NULL;
            continue;
        }
        o->choice = 0;
        for (int c = 1; c < ri[k].n_conts; c++)
            if (o->choice_logprob[c] > o->choice_logprob[o->choice])
                o->choice = c;
        o->tokens_out = 0;
    }
    for (int k = 0; k < ng; k++) {
        llm_response *o = &out[gmap[k]];
        if (gi[k].status != PWB_OK) {
            set_error(o, gi[k].status == PWB_ERANGE ? "prompt exceeds the model's context" : "invalid request");
            continue;
        }
        o->text = gi[k].text;
        gi[k].text = NULL;
        o->tokens_out = gi[k].n_out;
        o->finish_reason = str_dup(finish_name(gi[k].finish));
        pp[gmap[k]].work += gi[k].n_out;
        work += gi[k].n_out;
    }
    /* Share the batch's time out by tokens. */
    double wall = timer_wall() - w0, cpu = timer_cpu() - c0;
    for (size_t i = i0; i < i1; i++) {
        llm_response *o = &out[i];
        o->tokens_in = pp[i].err ? -1 : pp[i].n;
        if (pp[i].err || o->error) {
            if (!o->error)
                set_error(o, pp[i].err);
            if (o->choice_logprob) {
                free(o->choice_logprob);
                o->choice_logprob = NULL;
            }
            o->choice = -1;
            o->tokens_out = -1;
            continue;
        }
        double share = work > 0 ? pp[i].work / work : 1.0 / (double)nb;
        o->latency_s = wall * share + prefix_share[0];
        o->cpu_s = cpu * share + prefix_share[1];
        if (reqs[i].mode != LLM_RANK)
            o->choice = -1;
    }
done:
    for (int k = 0; gi && k < ng; k++)
        engine_gen_item_clear(&gi[k]);
    free(ri);
    free(gi);
    free(rmap);
    free(gmap);
    return rc;
}

/* Points the kept prefix at embeds (n of them) + ids: its KV is kept where they agree with the
 * last call's, computed afresh when the vectors differ. */
static int set_prefix(local_impl *im, const tune_adapter *ad, const float *embeds, int n_embeds, const int32_t *ids,
                      int n_ids, pwb_err *e)
{
    const size_t bytes = (size_t)n_embeds * (size_t)engine_n_embd(im->en) * sizeof(float);
    /* An adapter's prefix is never kept across calls: the pointer may name other values later. */
    if (im->prefix && (ad || im->pfx_adapter || n_embeds != im->n_pfx_embeds ||
                       (n_embeds > 0 && memcmp(embeds, im->pfx_embeds, bytes)))) {
        engine_prefix_free(im->prefix);
        im->prefix = NULL;
    }
    int rc;
    if (!im->prefix) {
        free(im->pfx_embeds);
        im->pfx_embeds = NULL;
        im->n_pfx_embeds = 0;
        if (n_embeds > 0 && !(im->pfx_embeds = malloc(bytes)))
            return err_set(e, PWB_ENOMEM, "out of memory");
        tune_adapter_bind_engine(im->en, ad);
        im->pfx_adapter = ad;
        rc = ad ? tune_adapter_prefix(im->en, ad, ids, n_ids, &im->prefix, e)
                : engine_prefix_new(im->en, embeds, n_embeds, ids, n_ids, &im->prefix, e);
        if (rc == PWB_OK && n_embeds > 0) {
            memcpy(im->pfx_embeds, embeds, bytes);
            im->n_pfx_embeds = n_embeds;
        }
    } else {
        rc = engine_prefix_set_ids(im->en, im->prefix, ids, n_ids, e);
    }
    if (rc != PWB_OK) {
        engine_prefix_free(im->prefix);
        im->prefix = NULL;
    }
    return rc;
}

/* Requests [g0, g1), which share their leading vectors (or have none): one shared prefix, then
 * batches. */
static int run_group(llm_backend *b, local_impl *im, const llm_request *reqs, local_prep *pp, size_t g0, size_t g1,
                     llm_response *out, llm_done_fn done, void *ctx, pwb_err *e)
{
    /* The group's longest common prefix, one token short of the shortest prompt (each request
     * must run at least one token of its own to get its logits). */
    int lcp = -1;
    size_t first = g1;
    for (size_t i = g0; i < g1; i++) {
        if (pp[i].err)
            continue;
        if (first == g1) {
            first = i;
            lcp = pp[i].n - 1;
            continue;
        }
        int k = 0;
        while (k < lcp && k < pp[i].n - 1 && pp[i].ids[k] == pp[first].ids[k])
            k++;
        lcp = k;
    }
    int rc = PWB_OK;
    double prefix_share[2] = {0, 0}; /* wall, cpu per request */
    if (first < g1) {
        double w0 = timer_wall(), c0 = timer_cpu();
        const llm_request *r = &reqs[first];
        rc = set_prefix(im, r->adapter, r->n_prefix_embeds > 0 ? r->prefix_embeds : NULL,
                        r->n_prefix_embeds > 0 ? r->n_prefix_embeds : 0, pp[first].ids, lcp, e);
        if (rc != PWB_OK)
            return rc;
        size_t nvalid = 0;
        for (size_t i = g0; i < g1; i++)
            nvalid += !pp[i].err;
        prefix_share[0] = (timer_wall() - w0) / (double)nvalid;
        prefix_share[1] = (timer_cpu() - c0) / (double)nvalid;
    } else {
        lcp = 0;
    }
    size_t step = im->batch > 0 ? (size_t)im->batch : 1;
    for (size_t i0 = g0; i0 < g1; i0 += step) {
        if (b->stop && *b->stop)
            return err_set(e, PWB_EINTR, "interrupted");
        size_t i1 = i0 + step < g1 ? i0 + step : g1;
        if ((rc = run_batch(im, reqs, pp, i0, i1, out, prefix_share, lcp, e)) != PWB_OK)
            return rc;
        for (size_t i = i0; done && i < i1; i++)
            done(ctx, i, &out[i]);
    }
    return PWB_OK;
}

static int same_vectors(const llm_request *a, const llm_request *b)
{
    int na = a->n_prefix_embeds > 0 ? a->n_prefix_embeds : 0, nb = b->n_prefix_embeds > 0 ? b->n_prefix_embeds : 0;
    return na == nb && (na == 0 || a->prefix_embeds == b->prefix_embeds) && a->adapter == b->adapter;
}

/* LLM_EMBED: each prompt's tokens (no chat template), the mean of the model's last hidden states
 * over them, im->batch sequences per engine call. */
static int local_embed(llm_backend *b, local_impl *im, const llm_request *reqs, size_t n, llm_response *out,
                       llm_done_fn done, void *ctx, pwb_err *e)
{
    const model *m = engine_model(im->en);
    const int d = engine_n_embd(im->en);
    size_t step = im->batch > 0 ? (size_t)im->batch : 1;
    int32_t **ids = calloc(step, sizeof *ids);
    int *lens = calloc(step, sizeof *lens);
    size_t *map = calloc(step, sizeof *map);
    float *vec = malloc(step * (size_t)d * sizeof *vec);
    int rc = !ids || !lens || !map || !vec ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    for (size_t i0 = 0; !rc && i0 < n; i0 += step) {
        if (b->stop && *b->stop) {
            rc = err_set(e, PWB_EINTR, "interrupted");
            break;
        }
        size_t i1 = i0 + step < n ? i0 + step : n;
        int nb = 0;
        double w0 = timer_wall(), c0 = timer_cpu(), work = 0;
        for (size_t i = i0; i < i1; i++) {
            pwb_err te = {0};
            out[i].choice = -1;
            if (reqs[i].mode != LLM_EMBED) {
                set_error(&out[i], "embedding requests go in a call of their own");
                continue;
            }
            if (tune_tokenize(m, reqs[i].prompt ? reqs[i].prompt : "", 0, 0, &ids[nb], &lens[nb], &te) != PWB_OK ||
                lens[nb] == 0) {
                set_error(&out[i], lens[nb] == 0 && !te.code ? "empty text" : te.msg);
                free(ids[nb]);
                ids[nb] = NULL;
                continue;
            }
            work += lens[nb];
            map[nb++] = i;
        }
        if (nb > 0)
            rc = engine_mean_hidden(im->en, (const int32_t *const *)ids, lens, nb, vec, e);
        double wall = timer_wall() - w0, cpu = timer_cpu() - c0;
        for (int k = 0; k < nb; k++) {
            llm_response *o = &out[map[k]];
            o->tokens_in = lens[k];
            o->tokens_out = 0;
            o->latency_s = work > 0 ? wall * lens[k] / work : 0;
            o->cpu_s = work > 0 ? cpu * lens[k] / work : 0;
            if (!rc && (o->embedding = malloc((size_t)d * sizeof *o->embedding))) {
                memcpy(o->embedding, vec + (size_t)k * d, (size_t)d * sizeof *vec);
                o->n_embedding = d;
            } else if (!rc) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
            }
            free(ids[k]);
            ids[k] = NULL;
        }
        for (size_t i = i0; !rc && done && i < i1; i++)
            done(ctx, i, &out[i]);
    }
    free(ids);
    free(lens);
    free(map);
    free(vec);
    return rc;
}

static int local_run(llm_backend *b, const llm_request *reqs, size_t n, llm_response *out, llm_done_fn done,
                     void *ctx, pwb_err *e)
{
    local_impl *im = b->impl;
    if (n == 0)
        return PWB_OK;
    if (!reqs || !out)
        return err_set(e, PWB_EINVAL, "local: no requests");
    if (reqs[0].mode == LLM_EMBED)
        return local_embed(b, im, reqs, n, out, done, ctx, e);
    local_prep *pp = calloc(n, sizeof *pp);
    if (!pp)
        return err_set(e, PWB_ENOMEM, "out of memory");
    pwb_buf text;
    buf_init(&text);
    for (size_t i = 0; i < n; i++) {
        out[i].choice = -1;
        prep_request(im, &reqs[i], &pp[i], &text);
    }
    buf_free(&text);
    /* Runs of requests with the same leading vectors share a prefix (a soft prompt's cell sends
     * one run; hard prompts have none). */
    int rc = PWB_OK;
    for (size_t g0 = 0, g1; rc == PWB_OK && g0 < n; g0 = g1) {
        for (g1 = g0 + 1; g1 < n && same_vectors(&reqs[g1], &reqs[g0]);)
            g1++;
        rc = run_group(b, im, reqs, pp, g0, g1, out, done, ctx, e);
    }
    for (size_t i = 0; i < n; i++)
        prep_free(&pp[i]);
    free(pp);
    return rc;
}

static void local_destroy(llm_backend *b)
{
    if (!b)
        return;
    local_impl *im = b->impl;
    if (im) {
        engine_prefix_free(im->prefix);
        free(im->pfx_embeds);
        engine_close(im->en);
        chat_template_free(&im->ct);
        free(im->name);
        free(im);
    }
    free(b);
}

int llm_local_create(llm_backend **out, const llm_config *cfg, pwb_err *e)
{
    *out = NULL;
    if (!cfg || !cfg->model || !*cfg->model)
        return err_set(e, PWB_EINVAL, "local backend: no model path given");
    llm_backend *b = calloc(1, sizeof *b);
    local_impl *im = calloc(1, sizeof *im);
    if (!b || !im) {
        free(b);
        free(im);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    b->kind = "local";
    b->run = local_run;
    b->destroy = local_destroy;
    b->impl = im;
    im->batch = cfg->batch > 0 ? cfg->batch : 16;
    im->name = str_dup(cfg->name ? cfg->name : cfg->model);
    engine_opts o = {.n_threads = cfg->threads > 0 ? cfg->threads : 0, .batch_items = im->batch};
    const char *who = cfg->name ? cfg->name : cfg->model;
    int rc = engine_open(&im->en, cfg->model, &o, e);
    if (rc == PWB_OK)
        rc = chat_template_init(&im->ct, engine_model(im->en)->chat_template, cfg->chat_template, e);
    if (rc != PWB_OK) {
        err_prefix(e, "model %s: ", who);
        local_destroy(b);
        return rc;
    }
    /* Turn-closing tokens end a generation like EOS does. */
    const char *enders[] = {"<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "<|end|>"};
    const tokenizer *tok = engine_tokenizer(im->en);
    for (size_t i = 0; i < sizeof enders / sizeof enders[0] && im->n_stop_ids < LOCAL_MAX_STOP_IDS; i++) {
        int32_t id = tokenizer_token_id(tok, enders[i]);
        if (id >= 0 && id != tokenizer_eos(tok))
            im->stop_ids[im->n_stop_ids++] = id;
    }
    *out = b;
    return PWB_OK;
}
