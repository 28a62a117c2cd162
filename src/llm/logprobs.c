/* LLM_RANK over /v1/completions with echo + logprobs: the completions backend's ranking path. See openai.h. */
#include "llm/openai.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/estimate.h"
#include "llm/remote.h"
#include "util/str.h"
#include "util/utf8.h"

#define LOGPROBS_MAX_TOKENS (1 << 20) /* echoed tokens looked at, at most */

/* ---- one call ---- */

/* prompt + choice into text, with the prompt's trailing spaces moved into the choice. */
static int rank_text(const openai_body_opts *bo, const llm_request *r, int k, pwb_buf *text, size_t *start,
                     size_t *end, pwb_err *e)
{
    if (r->n_choices < 1 || !r->choices || k < 0 || k >= r->n_choices)
        return err_set(e, PWB_EINVAL, "rank request without choices");
    const char *choice = r->choices[k];
    if (!choice || !*choice)
        return err_set(e, PWB_EINVAL, "choice %d is empty", k);
    int rc = openai_prompt_text(bo, r, text, e);
    if (rc)
        return rc;
    size_t plen = text->len;
    while (plen > 0 && text->data[plen - 1] == ' ')
        plen--;
    if (plen == 0)
        return err_set(e, PWB_EINVAL, "rank request with an empty prompt: the choice's first token has no context");
    *start = utf8_codepoints(text->data, plen);
    if (buf_puts(text, choice))
        return err_set(e, PWB_ENOMEM, "request: out of memory");
    *end = utf8_codepoints(text->data, text->len);
    return PWB_OK;
}

int logprobs_build(const openai_body_opts *bo, const llm_request *r, int k, pwb_buf *body, size_t *start,
                   size_t *end, pwb_err *e)
{
    int rc = llm_request_check(r, e);
    if (rc)
        return rc;
    pwb_buf text;
    buf_init(&text);
    if ((rc = rank_text(bo, r, k, &text, start, end, e))) {
        buf_free(&text);
        return rc;
    }
    cJSON *o = cJSON_CreateObject();
    int bad = !o;
    bad |= bad || (bo->model && !cJSON_AddStringToObject(o, "model", bo->model));
    bad |= bad || !cJSON_AddStringToObject(o, "prompt", text.data);
    bad |= bad || !cJSON_AddNumberToObject(o, "max_tokens", 1);
    bad |= bad || !cJSON_AddNumberToObject(o, "temperature", 0);
    bad |= bad || !cJSON_AddNumberToObject(o, "logprobs", 1);
    bad |= bad || !cJSON_AddTrueToObject(o, "echo");
    buf_free(&text);
    return json_append(body, o, bad) ? err_set(e, PWB_ENOMEM, "request: out of memory") : PWB_OK;
}

/* Whether the reply's text ends with its last gen echoed tokens (the generated ones), as it must
 * when the arrays line up with the tokens. A token written "bytes:..." (part of a character) is
 * not text to compare: then nothing is concluded. */
static int echo_ends_with_reply(const cJSON *c0, const cJSON *tk, int n, int gen)
{
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c0, "text"));
    if (!text)
        return 1;
    size_t need = 0;
    for (int i = n - gen; i < n; i++) {
        const char *t = cJSON_GetStringValue(cJSON_GetArrayItem(tk, i));
        if (!t || str_starts(t, "bytes:"))
            return 1;
        need += strlen(t);
    }
    size_t tl = strlen(text);
    if (need > tl)
        return 0;
    size_t at = tl - need;
    for (int i = n - gen; i < n; i++) {
        const char *t = cJSON_GetStringValue(cJSON_GetArrayItem(tk, i));
        size_t k = strlen(t);
        if (memcmp(text + at, t, k) != 0)
            return 0;
        at += k;
    }
    return 1;
}

int logprobs_parse(const char *body, size_t len, size_t start, size_t end, double *logprob, int *n_tokens,
                   llm_response *r, pwb_err *e)
{
    *logprob = 0;
    *n_tokens = 0;
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!j)
        return err_set(e, PWB_EPARSE, "reply is not valid JSON (%zu bytes)", len);
    int rc = PWB_OK;
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    const cJSON *c0 = cJSON_GetArrayItem(choices, 0);
    if (!cJSON_IsObject(j) || !cJSON_IsObject(c0)) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
        const char *m = cJSON_IsObject(err) ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "message"))
                                            : cJSON_GetStringValue(err);
        rc = err ? err_set(e, PWB_EHTTP, "server error: %.200s", m ? m : "(no message)")
                 : err_set(e, PWB_EHTTP, "reply: no choices[0] object");
        goto out;
    }
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(c0, "logprobs");
    const cJSON *tl = cJSON_GetObjectItemCaseSensitive(lp, "token_logprobs");
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(lp, "text_offset");
    const cJSON *tk = cJSON_GetObjectItemCaseSensitive(lp, "tokens");
    if (!cJSON_IsObject(lp) || !cJSON_IsArray(tl) || !cJSON_IsArray(to)) {
        rc = err_set(e, PWB_EUNSUP,
                     "the server returned no prompt log-probabilities (choices[0].logprobs.token_logprobs and "
                     "text_offset): it cannot rank; it must support /v1/completions with echo and logprobs (vLLM, "
                     "llama.cpp), or use scoring \"generate\"");
        goto out;
    }
    int n = cJSON_GetArraySize(tl);
    if (cJSON_GetArraySize(to) < n)
        n = cJSON_GetArraySize(to);
    if (n > LOGPROBS_MAX_TOKENS)
        n = LOGPROBS_MAX_TOKENS;
    int have_tokens = cJSON_IsArray(tk) && cJSON_GetArraySize(tk) >= n;
    /* Where the choice ends in the server's offsets: at the first generated token when usage says
     * how many were generated. llama-cpp-python measures offsets in the detokenized text, where
     * special tokens (<|im_start|>) count nothing, so the prompt's own length does not line up;
     * the generated tokens always come last. Without usage: the prompt's length as sent. */
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
    int gen = cJSON_IsObject(usage) ? remote_json_count(usage, "completion_tokens") : -1;
    if (gen >= 0 && gen <= n && n == cJSON_GetArraySize(tl) && n == cJSON_GetArraySize(to)) {
        double g_at;
        if (gen > 0) {
            const cJSON *og = cJSON_GetArrayItem(to, n - gen);
            g_at = cJSON_IsNumber(og) ? og->valuedouble : -1;
        } else {
            /* nothing generated: the end of the last token */
            const cJSON *ol = cJSON_GetArrayItem(to, n - 1);
            const cJSON *tl1 = have_tokens ? cJSON_GetArrayItem(tk, n - 1) : NULL;
            g_at = cJSON_IsNumber(ol) && cJSON_IsString(tl1) && tl1->valuestring
                       ? ol->valuedouble + (double)utf8_codepoints(tl1->valuestring, strlen(tl1->valuestring))
                       : -1;
        }
        if (g_at >= (double)(end - start) && g_at < 1e12) {
            size_t span = end - start;
            end = (size_t)g_at;
            start = end - span;
        }
    }
    /* The first echoed token has nothing before it, so its log-probability must be null. A number
     * there means the server scores row i's logits as token i (llama-cpp-python 0.3's server):
     * every echoed value is then the previous position's, and no sum of them can be trusted. */
    if (n > 0 && cJSON_IsNumber(tl->child) && cJSON_IsNumber(to->child) && to->child->valuedouble < (double)end) {
        rc = err_set(e, PWB_EUNSUP,
                     "the server gave the first echoed token a log-probability (%g), but nothing comes before it: "
                     "its echo log-probabilities are shifted by one position, so pwb cannot trust them to rank; "
                     "use another server or scoring \"generate\"",
                     tl->child->valuedouble);
        goto out;
    }
    if (gen > 0 && have_tokens && n == cJSON_GetArraySize(tk) && !echo_ends_with_reply(c0, tk, n, gen)) {
        rc = err_set(e, PWB_EUNSUP,
                     "the server's echoed tokens end without the token it generated: its echo log-probabilities are "
                     "shifted by one position (llama-cpp-python 0.3 does this when the prompt does not start with "
                     "the model's BOS text), so pwb cannot trust them to rank; use a chat template that starts "
                     "with BOS, another server, or scoring \"generate\"");
        goto out;
    }
    /* Walk the arrays together (cJSON arrays are lists: indexing each would be quadratic). */
    const cJSON *l = tl->child, *o = to->child, *t = have_tokens ? tk->child : NULL;
    double sum = 0, prev_off = -1;
    int used = 0, first_off_seen = 0;
    double first_off = 0;
    for (int k = 0; k < n && l && o; k++, l = l->next, o = o->next, t = t ? t->next : NULL) {
        if (!cJSON_IsNumber(o) || !(o->valuedouble >= 0) || o->valuedouble > 1e12 || o->valuedouble < prev_off) {
            rc = err_set(e, PWB_EHTTP, "reply: logprobs.text_offset[%d] is not a non-decreasing offset", k);
            goto out;
        }
        double off = o->valuedouble;
        prev_off = off;
        if (!first_off_seen) {
            first_off = off;
            first_off_seen = 1;
        }
        /* the token spans [off, next offset), the last one its own length */
        double tend;
        if (o->next && k + 1 < n && cJSON_IsNumber(o->next))
            tend = o->next->valuedouble;
        else if (t && cJSON_IsString(t) && t->valuestring)
            tend = off + (double)utf8_codepoints(t->valuestring, strlen(t->valuestring));
        else
            tend = off + 1;
        if (tend <= off) /* a zero-width token (a split character): it belongs where it starts */
            tend = off + (off < (double)end && off >= (double)start ? 0.5 : 0);
        if (!(off < (double)end && tend > (double)start))
            continue;
        if (!cJSON_IsNumber(l) || !isfinite(l->valuedouble) || l->valuedouble > 1e-6) {
            rc = err_set(e, PWB_EHTTP,
                         "reply: token %d of the choice has no log-probability (%s)", k,
                         cJSON_IsNull(l) ? "null: the choice starts the text?" : "not a number <= 0");
            goto out;
        }
        sum += l->valuedouble;
        used++;
    }
    if (used == 0) {
        if (first_off_seen && first_off >= (double)end)
            rc = err_set(e, PWB_EUNSUP,
                         "the server did not echo the prompt (its log-probabilities start at character %.0f, past "
                         "the choice): it cannot rank; it must honour \"echo\": true",
                         first_off);
        else
            rc = err_set(e, PWB_EUNSUP,
                         "the server's log-probabilities cover none of the choice's characters [%zu, %zu): it "
                         "cannot rank",
                         start, end);
        goto out;
    }
    *logprob = sum;
    *n_tokens = used;
    if (r) {
        r->tokens_in = cJSON_IsObject(usage) ? remote_json_count(usage, "prompt_tokens") : -1;
        r->tokens_out = cJSON_IsObject(usage) ? remote_json_count(usage, "completion_tokens") : -1;
    }
out:
    cJSON_Delete(j);
    return rc;
}

/* ---- a mixed batch ---- */

typedef struct lp_call {
    size_t req;
    int choice; /* -1: a generation request */
    size_t start, end;
    double logprob;
} lp_call;

typedef struct lp_run {
    const openai_body_opts *bo;
    const llm_request *reqs;
    llm_response *out;
    lp_call *calls;
    llm_response *cout; /* one per call */
    int *left;          /* calls of each request not yet complete */
    int *tok_unknown;   /* a call of the request had no usage */
    llm_done_fn done;
    void *done_ctx;
} lp_run;

static int op_build(void *ctx, size_t i, pwb_buf *body, pwb_err *e)
{
    lp_run *L = ctx;
    lp_call *c = &L->calls[i];
    const llm_request *r = &L->reqs[c->req];
    if (c->choice < 0)
        return openai_build(L->bo, 0, r, body, e);
    return logprobs_build(L->bo, r, c->choice, body, &c->start, &c->end, e);
}

static int op_parse(void *ctx, size_t i, const char *body, size_t len, llm_response *r, pwb_err *e)
{
    lp_run *L = ctx;
    lp_call *c = &L->calls[i];
    if (c->choice < 0)
        return L->bo->stream ? openai_parse_stream(0, body, len, r, e) : openai_parse_reply(0, body, len, r, e);
    int ntok = 0;
    return logprobs_parse(body, len, c->start, c->end, &c->logprob, &ntok, r, e);
}

static void op_estimate(void *ctx, size_t i, double *in, double *out)
{
    lp_run *L = ctx;
    const lp_call *c = &L->calls[i];
    const llm_request *r = &L->reqs[c->req];
    if (c->choice < 0) {
        llm_request_estimate(r, in, out);
        return;
    }
    llm_request one = *r;
    one.mode = LLM_GENERATE;
    one.max_tokens = 1;
    double p = 0, o = 0;
    llm_request_estimate(&one, &p, &o);
    const char *ch = r->choices && c->choice < r->n_choices ? r->choices[c->choice] : NULL;
    *in = p + llm_text_tokens_estimate(ch ? strlen(ch) : 0);
    *out = 1;
}

static int op_first(void *ctx, size_t i, const char *data, size_t len)
{
    lp_run *L = ctx;
    return L->calls[i].choice < 0 ? openai_first_token(0, data, len) : 0;
}

/* Closes rank request q once all its calls are in. */
static void finish_rank(lp_run *L, size_t q)
{
    llm_response *o = &L->out[q];
    const llm_request *r = &L->reqs[q];
    if (L->tok_unknown[q])
        o->tokens_in = o->tokens_out = -1;
    if (o->error) {
        free(o->choice_logprob);
        o->choice_logprob = NULL;
        o->choice = -1;
    } else {
        int best = 0;
        for (int k = 1; k < r->n_choices; k++)
            if (o->choice_logprob[k] > o->choice_logprob[best])
                best = k;
        o->choice = best;
    }
    if (L->done)
        L->done(L->done_ctx, q, o);
}

static void on_call_done(void *ctx, size_t i, const llm_response *cr)
{
    lp_run *L = ctx;
    lp_call *c = &L->calls[i];
    llm_response *o = &L->out[c->req];
    llm_response *src = &L->cout[i];
    if (c->choice < 0) {
        *o = *src; /* hands over the malloc'd members */
        memset(src, 0, sizeof *src);
        if (L->done)
            L->done(L->done_ctx, c->req, o);
        return;
    }
    o->retries += src->retries;
    o->http_status = src->http_status;
    if (src->latency_s > o->latency_s)
        o->latency_s = src->latency_s;
    if (src->tokens_in < 0 || src->tokens_out < 0)
        L->tok_unknown[c->req] = 1;
    else {
        o->tokens_in += src->tokens_in;
        o->tokens_out += src->tokens_out;
    }
    if (src->error) {
        if (!o->error) {
            pwb_buf b;
            buf_init(&b);
            buf_printf(&b, "choice %d: %s", c->choice, src->error);
            o->error = b.data ? buf_take(&b) : str_dup("choice failed");
        }
    } else if (o->choice_logprob) {
        o->choice_logprob[c->choice] = c->logprob;
    }
    llm_response_clear(src);
    if (--L->left[c->req] == 0)
        finish_rank(L, c->req);
}

int logprobs_run(http_client *http, const openai_body_opts *bo, const llm_request *reqs, size_t n, llm_response *out,
                 llm_done_fn done, void *done_ctx, volatile sig_atomic_t *stop, pwb_err *e)
{
    size_t ncalls = 0;
    for (size_t i = 0; i < n; i++) {
        const llm_request *r = &reqs[i];
        if (r->mode == LLM_RANK && r->n_choices > 0 && r->choices) {
            if ((size_t)r->n_choices > (SIZE_MAX / sizeof(lp_call)) / 4 - ncalls)
                return err_set(e, PWB_ERANGE, "rank batch too large");
            ncalls += (size_t)r->n_choices;
        } else {
            ncalls++;
        }
    }
    lp_run L = {.bo = bo, .reqs = reqs, .out = out, .done = done, .done_ctx = done_ctx};
    L.calls = calloc(ncalls ? ncalls : 1, sizeof *L.calls);
    L.cout = calloc(ncalls ? ncalls : 1, sizeof *L.cout);
    L.left = calloc(n ? n : 1, sizeof *L.left);
    L.tok_unknown = calloc(n ? n : 1, sizeof *L.tok_unknown);
    int rc = PWB_OK;
    if (!L.calls || !L.cout || !L.left || !L.tok_unknown) {
        rc = err_set(e, PWB_ENOMEM, "out of memory for %zu calls", ncalls);
        goto out;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        const llm_request *r = &reqs[i];
        if (r->mode == LLM_RANK && r->n_choices > 0 && r->choices) {
            out[i].choice_logprob = calloc((size_t)r->n_choices, sizeof *out[i].choice_logprob);
            if (!out[i].choice_logprob) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                goto out;
            }
            out[i].choice = -1;
            for (int k = 0; k < r->n_choices; k++)
                L.calls[j++] = (lp_call){.req = i, .choice = k};
            L.left[i] = r->n_choices;
        } else {
            /* generation, or a rank request without choices (its build fails with a clear error) */
            L.calls[j++] = (lp_call){.req = i, .choice = r->mode == LLM_RANK ? 0 : -1};
            L.left[i] = 1;
            if (r->mode == LLM_RANK)
                out[i].choice = -1;
        }
    }
    http_ops ops = {.build = op_build, .parse = op_parse, .ctx = &L, .estimate = op_estimate,
                    .first_token = bo->stream ? op_first : NULL};
    rc = http_client_run(http, ncalls, &ops, L.cout, on_call_done, &L, stop, e);
    if (rc == PWB_EINTR || rc == PWB_ELIMIT) {
        /* requests with calls still out: their calls carry the reason; done was not called */
        for (size_t i = 0; i < ncalls; i++) {
            size_t q = L.calls[i].req;
            if (L.left[q] > 0 && !out[q].error && L.cout[i].error) {
                out[q].error = str_dup(L.cout[i].error);
                free(out[q].choice_logprob);
                out[q].choice_logprob = NULL;
            }
        }
    }
out:
    if (L.cout)
        for (size_t i = 0; i < ncalls; i++)
            llm_response_clear(&L.cout[i]);
    free(L.calls);
    free(L.cout);
    free(L.left);
    free(L.tok_unknown);
    return rc;
}
