/* OpenAI-compatible chat and completion backends: request JSON in, reply JSON out, transport in
 * http.c. Replies are untrusted: every field is type-checked and a wrong shape is an error on that
 * response, never a crash. */
#include "llm/openai.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/gguf.h"
#include "llm/estimate.h"
#include "llm/http.h"
#include "llm/remote.h"
#include "llm/stream.h"
#include "util/str.h"

#define OPENAI_MAX_STOP 16

typedef struct openai_impl {
    llm_backend base; /* first: the backend pointer is the impl pointer */
    remote_conn conn;
    remote_conn embed; /* POST {base_url}/embeddings, for LLM_EMBED requests */
    int chat;
    chat_template ct; /* completions: renders chat messages (cfg->chat_template) */
    int have_ct;
    openai_body_opts bo;
    const llm_request *reqs; /* the batch being run */
} openai_impl;

/* ---- request bodies ---- */

static int check_request(const llm_request *r, pwb_err *e)
{
    if (r->mode == LLM_RANK)
        return err_set(e, PWB_EUNSUP,
                       "ranking (LLM_RANK) over HTTP needs provider \"openai-completions\" (/v1/completions with "
                       "echo and logprobs, as vLLM and llama.cpp serve it)");
    return llm_request_check(r, e);
}

/* The sampling fields shared by both endpoints. */
static int add_params(cJSON *o, const llm_request *r)
{
    if (r->max_tokens > 0 && !cJSON_AddNumberToObject(o, "max_tokens", r->max_tokens))
        return -1;
    if (!cJSON_AddNumberToObject(o, "temperature", r->temperature))
        return -1;
    /* 0 is the zeroed default and not a meaningful nucleus; leave it to the server */
    if (r->top_p > 0 && r->top_p <= 1 && !cJSON_AddNumberToObject(o, "top_p", r->top_p))
        return -1;
    /* written as an exact integer (a double would round seeds past 2^53); servers take int64 */
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, r->seed & (uint64_t)INT64_MAX);
    if (!cJSON_AddRawToObject(o, "seed", seed))
        return -1;
    if (r->n_stop > 0) {
        cJSON *st = cJSON_AddArrayToObject(o, "stop");
        if (!st)
            return -1;
        for (int k = 0; k < r->n_stop && k < OPENAI_MAX_STOP; k++) {
            if (!r->stop[k] || !*r->stop[k])
                continue;
            cJSON *s = cJSON_CreateString(r->stop[k]);
            if (!s || !cJSON_AddItemToArray(st, s)) {
                cJSON_Delete(s);
                return -1;
            }
        }
    }
    return 0;
}

/* "stream": true, and usage in the last chunk (OpenAI, vLLM and llama.cpp send it when asked). */
static int add_stream(cJSON *o)
{
    if (!cJSON_AddTrueToObject(o, "stream"))
        return -1;
    cJSON *so = cJSON_AddObjectToObject(o, "stream_options");
    return so && cJSON_AddTrueToObject(so, "include_usage") ? 0 : -1;
}

static int build_chat(const openai_body_opts *bo, const llm_request *r, pwb_buf *out, pwb_err *e)
{
    const char *model = bo->model;
    int rc = check_request(r, e);
    if (rc)
        return rc;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return err_set(e, PWB_ENOMEM, "request: out of memory");
    int bad = model && !cJSON_AddStringToObject(o, "model", model);
    cJSON *msgs = bad ? NULL : cJSON_AddArrayToObject(o, "messages");
    bad |= !msgs;
    if (!bad && r->n_messages == 0) {
        cJSON *m = cJSON_CreateObject();
        bad |= !m || !cJSON_AddItemToArray(msgs, m);
        bad |= bad || !cJSON_AddStringToObject(m, "role", "user") || !cJSON_AddStringToObject(m, "content", r->prompt);
    }
    for (int k = 0; !bad && k < r->n_messages; k++) {
        cJSON *m = cJSON_CreateObject();
        if (!m || !cJSON_AddItemToArray(msgs, m)) {
            cJSON_Delete(m);
            bad = 1;
            break;
        }
        bad |= !cJSON_AddStringToObject(m, "role", r->messages[k].role);
        bad |= !cJSON_AddStringToObject(m, "content", r->messages[k].content);
    }
    bad |= bad || add_params(o, r);
    bad |= bad || (bo->stream && add_stream(o));
    if (bad) {
        cJSON_Delete(o);
        return err_set(e, PWB_ENOMEM, "request: out of memory");
    }
    return json_append(out, o, 0) ? err_set(e, PWB_ENOMEM, "request: out of memory") : PWB_OK;
}

int openai_prompt_text(const openai_body_opts *bo, const llm_request *r, pwb_buf *out, pwb_err *e)
{
    buf_reset(out);
    if (r->n_messages == 0)
        return buf_puts(out, r->prompt ? r->prompt : "") ? err_set(e, PWB_ENOMEM, "request: out of memory") : PWB_OK;
    if (bo && bo->ct) {
        chat_msg stack[16], *msgs = r->n_messages <= 16 ? stack : malloc((size_t)r->n_messages * sizeof *msgs);
        if (!msgs)
            return err_set(e, PWB_ENOMEM, "request: out of memory");
        for (int k = 0; k < r->n_messages; k++)
            msgs[k] = (chat_msg){.role = r->messages[k].role, .content = r->messages[k].content};
        int rc = chat_render(bo->ct, msgs, (size_t)r->n_messages, 1, out, e);
        if (msgs != stack)
            free(msgs);
        if (rc)
            return err_prefix(e, "chat template: ");
    } else {
        for (int k = 0; k < r->n_messages; k++)
            if ((k && buf_puts(out, "\n\n")) || buf_puts(out, r->messages[k].content))
                return err_set(e, PWB_ENOMEM, "request: out of memory");
    }
    if (!out->data && buf_puts(out, ""))
        return err_set(e, PWB_ENOMEM, "request: out of memory");
    return PWB_OK;
}

static int build_completion(const openai_body_opts *bo, const llm_request *r, pwb_buf *out, pwb_err *e)
{
    const char *model = bo->model;
    int rc = check_request(r, e);
    if (rc)
        return rc;
    pwb_buf joined;
    buf_init(&joined);
    if ((rc = openai_prompt_text(bo, r, &joined, e))) {
        buf_free(&joined);
        return rc;
    }
    const char *prompt = joined.data;
    cJSON *o = cJSON_CreateObject();
    int bad = !o;
    bad |= bad || (model && !cJSON_AddStringToObject(o, "model", model));
    bad |= bad || !cJSON_AddStringToObject(o, "prompt", prompt);
    bad |= bad || add_params(o, r);
    bad |= bad || (bo->stream && add_stream(o));
    buf_free(&joined);
    if (bad) {
        cJSON_Delete(o);
        return err_set(e, PWB_ENOMEM, "request: out of memory");
    }
    return json_append(out, o, 0) ? err_set(e, PWB_ENOMEM, "request: out of memory") : PWB_OK;
}

int openai_build(const openai_body_opts *bo, int chat, const llm_request *r, pwb_buf *out, pwb_err *e)
{
    return chat ? build_chat(bo, r, out, e) : build_completion(bo, r, out, e);
}

int openai_build_chat(const char *model, const llm_request *r, pwb_buf *out, pwb_err *e)
{
    openai_body_opts bo = {.model = model};
    return build_chat(&bo, r, out, e);
}

int openai_build_completion(const char *model, const llm_request *r, pwb_buf *out, pwb_err *e)
{
    openai_body_opts bo = {.model = model};
    return build_completion(&bo, r, out, e);
}

/* ---- replies ---- */

/* usage.prompt_tokens_details.cached_tokens (OpenAI's prompt cache), 0 when absent. */
static int cached_tokens(const cJSON *usage)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens_details");
    int c = cJSON_IsObject(d) ? remote_json_count(d, "cached_tokens") : -1;
    return c > 0 ? c : 0;
}

/* message.content as a string, or as a list of {"type":"text","text":...} parts. */
static int content_text(const cJSON *content, pwb_buf *out)
{
    if (cJSON_IsString(content) && content->valuestring)
        return buf_puts(out, content->valuestring) ? -1 : 1;
    if (!cJSON_IsArray(content))
        return 0;
    int any = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (cJSON_IsString(t) && t->valuestring) {
            if (buf_puts(out, t->valuestring))
                return -1;
            any = 1;
        }
    }
    return any;
}

int openai_parse_reply(int chat, const char *body, size_t len, llm_response *r, pwb_err *e)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!j)
        return err_set(e, PWB_EPARSE, "reply is not valid JSON (%zu bytes)", len);
    int rc = PWB_OK;
    pwb_buf text;
    buf_init(&text);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    if (!cJSON_IsObject(j)) {
        rc = err_set(e, PWB_EHTTP, "reply is not a JSON object");
        goto out;
    }
    if (!choices) {
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
        const char *m = cJSON_IsObject(err) ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "message"))
                        : cJSON_GetStringValue(err);
        if (err)
            rc = err_set(e, PWB_EHTTP, "server error: %.200s", m ? m : "(no message)");
        else
            rc = err_set(e, PWB_EHTTP, "reply has no 'choices'");
        goto out;
    }
    if (!cJSON_IsArray(choices) || cJSON_GetArraySize(choices) < 1) {
        rc = err_set(e, PWB_EHTTP, "reply: 'choices' is not a non-empty array");
        goto out;
    }
    const cJSON *c0 = cJSON_GetArrayItem(choices, 0);
    if (!cJSON_IsObject(c0)) {
        rc = err_set(e, PWB_EHTTP, "reply: choices[0] is not an object");
        goto out;
    }
    int got;
    if (chat) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(c0, "message");
        if (!cJSON_IsObject(msg)) {
            rc = err_set(e, PWB_EHTTP, "reply: choices[0].message is missing or not an object");
            goto out;
        }
        got = content_text(cJSON_GetObjectItemCaseSensitive(msg, "content"), &text);
        if (got == 0) {
            rc = err_set(e, PWB_EHTTP, "reply: choices[0].message.content is missing or not text");
            goto out;
        }
    } else {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(c0, "text");
        got = cJSON_IsString(t) && t->valuestring ? (buf_puts(&text, t->valuestring) ? -1 : 1) : 0;
        if (got == 0) {
            rc = err_set(e, PWB_EHTTP, "reply: choices[0].text is missing or not a string");
            goto out;
        }
    }
    if (got < 0 || (!text.data && buf_puts(&text, ""))) {
        rc = err_set(e, PWB_ENOMEM, "reply: out of memory");
        goto out;
    }
    const char *fr = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c0, "finish_reason"));
    char *frc = fr ? str_ndup(fr, strnlen(fr, 64)) : NULL;
    if (fr && !frc) {
        rc = err_set(e, PWB_ENOMEM, "reply: out of memory");
        goto out;
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
    free(r->text);
    free(r->finish_reason);
    r->text = buf_take(&text);
    r->finish_reason = frc;
    r->tokens_in = cJSON_IsObject(usage) ? remote_json_count(usage, "prompt_tokens") : -1;
    r->tokens_out = cJSON_IsObject(usage) ? remote_json_count(usage, "completion_tokens") : -1;
    r->tokens_cached_in = cached_tokens(usage);
out:
    buf_free(&text);
    cJSON_Delete(j);
    return rc;
}

/* ---- streamed replies ---- */

typedef struct sse_acc {
    int chat;
    pwb_buf text;
    char finish[64];
    int tokens_in, tokens_out, cached;
    int done, events, garbled, oom;
    char err[256];
} sse_acc;

static int on_chunk(void *ctx, const char *event, const char *data, size_t len)
{
    sse_acc *a = ctx;
    a->events++;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        a->done = 1;
        return 1;
    }
    cJSON *j = remote_stream_object(data, len, a->err, sizeof a->err, &a->garbled);
    if (!j)
        return 1;
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    if (cJSON_IsObject(c0)) {
        const cJSON *t = a->chat ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c0, "delta"), "content")
                                 : cJSON_GetObjectItemCaseSensitive(c0, "text");
        if (cJSON_IsString(t) && t->valuestring && buf_puts(&a->text, t->valuestring))
            a->oom = 1;
        const char *fr = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c0, "finish_reason"));
        if (fr)
            str_copy(a->finish, sizeof a->finish, fr);
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
    if (cJSON_IsObject(usage)) {
        a->tokens_in = remote_json_count(usage, "prompt_tokens");
        a->tokens_out = remote_json_count(usage, "completion_tokens");
        a->cached = cached_tokens(usage);
    }
    cJSON_Delete(j);
    return a->oom;
}

int openai_parse_stream(int chat, const char *body, size_t len, llm_response *r, pwb_err *e)
{
    if (remote_looks_like_object(body, len)) /* the server ignored "stream" and answered in one piece */
        return openai_parse_reply(chat, body, len, r, e);
    sse_acc a = {.chat = chat, .tokens_in = -1, .tokens_out = -1};
    buf_init(&a.text);
    sse_each(body, len, on_chunk, &a);
    int rc = PWB_OK;
    if (a.oom)
        rc = err_set(e, PWB_ENOMEM, "reply: out of memory");
    else if (a.err[0])
        rc = err_set(e, PWB_EHTTP, "%s", a.err);
    else if (a.garbled)
        rc = err_set(e, PWB_EPARSE, "stream: an event is not valid JSON (%zu bytes)", len);
    else if (!a.events)
        rc = err_set(e, PWB_EPARSE, "stream: no events in the reply (%zu bytes)", len);
    else if (!a.done && !a.finish[0])
        rc = err_set(e, PWB_EPARSE, "stream ended before [DONE]");
    if (!rc && !a.text.data && buf_puts(&a.text, ""))
        rc = err_set(e, PWB_ENOMEM, "reply: out of memory");
    if (!rc) {
        char *fr = a.finish[0] ? str_dup(a.finish) : NULL;
        free(r->text);
        free(r->finish_reason);
        r->text = buf_take(&a.text);
        r->finish_reason = fr;
        r->tokens_in = a.tokens_in;
        r->tokens_out = a.tokens_out;
        r->tokens_cached_in = a.cached;
    }
    buf_free(&a.text);
    return rc;
}

static int first_fn(void *ctx, const char *event, const char *data, size_t len)
{
    int chat = *(const int *)ctx;
    cJSON *j = cJSON_ParseWithLength(data, len);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *t = chat ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c0, "delta"), "content")
                          : cJSON_GetObjectItemCaseSensitive(c0, "text");
    int got = cJSON_IsString(t) && t->valuestring && t->valuestring[0];
    cJSON_Delete(j);
    return got;
}

int openai_first_token(int chat, const char *data, size_t len)
{
    return stream_lines_each(1, data, len, first_fn, &chat) > 0;
}

/* ---- backend ---- */

static int op_build(void *ctx, size_t i, pwb_buf *body, pwb_err *e)
{
    openai_impl *im = ctx;
    return openai_build(&im->bo, im->chat, &im->reqs[i], body, e);
}

static int op_parse(void *ctx, size_t i, const char *body, size_t len, llm_response *r, pwb_err *e)
{
    openai_impl *im = ctx;
    return im->bo.stream ? openai_parse_stream(im->chat, body, len, r, e) : openai_parse_reply(im->chat, body, len, r, e);
}

static void op_estimate(void *ctx, size_t i, double *in, double *out)
{
    openai_impl *im = ctx;
    llm_request_estimate(&im->reqs[i], in, out);
}

static int op_first(void *ctx, size_t i, const char *data, size_t len)
{
    openai_impl *im = ctx;
    return openai_first_token(im->chat, data, len);
}

/* ---- embeddings: POST /embeddings {"model", "input"} -> data[0].embedding ---- */

static int emb_build(void *ctx, size_t i, pwb_buf *body, pwb_err *e)
{
    openai_impl *im = ctx;
    const llm_request *r = &im->reqs[i];
    if (r->mode != LLM_EMBED)
        return err_set(e, PWB_EINVAL, "embedding requests go in a call of their own");
    cJSON *o = cJSON_CreateObject();
    int bad = !o || (im->bo.model && !cJSON_AddStringToObject(o, "model", im->bo.model)) ||
              !cJSON_AddStringToObject(o, "input", r->prompt ? r->prompt : "") ||
              !cJSON_AddStringToObject(o, "encoding_format", "float");
    return json_append(body, o, bad) ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
}

int openai_parse_embedding(const char *body, size_t len, llm_response *r, pwb_err *e)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!j)
        return err_set(e, PWB_EPARSE, "embeddings reply is not JSON");
    const cJSON *d = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "data"), 0);
    const cJSON *v = d ? cJSON_GetObjectItemCaseSensitive(d, "embedding") : NULL;
    int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 0;
    int rc = PWB_OK;
    if (n < 1 || n > (1 << 16))
        rc = err_set(e, PWB_EINVAL, "embeddings reply without data[0].embedding (a list of at most 65536 numbers)");
    else if (!(r->embedding = malloc((size_t)n * sizeof *r->embedding)))
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < n; i++) {
        const cJSON *x = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble))
            rc = err_set(e, PWB_EINVAL, "embeddings reply: element %d is not a finite number", i);
        else
            r->embedding[i] = (float)x->valuedouble;
    }
    if (rc) {
        free(r->embedding);
        r->embedding = NULL;
    } else {
        r->n_embedding = n;
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "usage"), "prompt_tokens");
        r->tokens_in = cJSON_IsNumber(pt) ? pt->valueint : -1;
        r->tokens_out = 0;
        r->choice = -1;
    }
    cJSON_Delete(j);
    return rc;
}

static int emb_parse(void *ctx, size_t i, const char *body, size_t len, llm_response *r, pwb_err *e)
{
    return openai_parse_embedding(body, len, r, e);
}

static void emb_estimate(void *ctx, size_t i, double *in, double *out)
{
    openai_impl *im = ctx;
    const char *t = im->reqs[i].prompt;
    *in = t ? (double)strlen(t) / 4.0 : 0;
    *out = 0;
}

static int openai_run(llm_backend *b, const llm_request *reqs, size_t n, llm_response *out, llm_done_fn done,
                      void *ctx, pwb_err *e)
{
    openai_impl *im = b->impl;
    if (n && (!reqs || !out))
        return err_set(e, PWB_EINVAL, "%s: no requests or no response array", b->kind);
    if (n && reqs[0].mode == LLM_EMBED) {
        im->reqs = reqs;
        http_ops eo = {.build = emb_build, .parse = emb_parse, .ctx = im, .estimate = emb_estimate};
        int rc = http_client_run(im->embed.http, n, &eo, out, done, ctx, b->stop, e);
        im->reqs = NULL;
        return rc;
    }
    if (!im->chat)
        for (size_t i = 0; i < n; i++)
            if (reqs[i].mode == LLM_RANK)
                return logprobs_run(im->conn.http, &im->bo, reqs, n, out, done, ctx, b->stop, e);
    im->reqs = reqs;
    http_ops ops = {.build = op_build, .parse = op_parse, .ctx = im, .estimate = op_estimate,
                    .first_token = im->bo.stream ? op_first : NULL};
    int rc = http_client_run(im->conn.http, n, &ops, out, done, ctx, b->stop, e);
    im->reqs = NULL;
    return rc;
}

static void openai_destroy(llm_backend *b)
{
    if (!b)
        return;
    openai_impl *im = b->impl;
    remote_conn_close(&im->conn);
    remote_conn_close(&im->embed);
    if (im->have_ct)
        chat_template_free(&im->ct);
    free(im);
}

int llm_openai_create(llm_backend **out, const llm_config *cfg, pwb_err *e)
{
    *out = NULL;
    const char *name = cfg->name ? cfg->name : "model";
    int chat = strcmp(cfg->provider, "openai") == 0;
    if (!chat && strcmp(cfg->provider, "openai-completions") != 0)
        return err_set(e, PWB_EINVAL, "%s: provider '%.64s' is not OpenAI-compatible", name, cfg->provider);
    openai_impl *im = calloc(1, sizeof *im);
    if (!im)
        return err_set(e, PWB_ENOMEM, "%s: out of memory", name);
    im->chat = chat;
    int rc = remote_conn_open(&im->conn, cfg, chat ? "/chat/completions" : "/completions", NULL, 0, e);
    if (!rc)
        rc = remote_conn_open(&im->embed, cfg, "/embeddings", NULL, 0, e);
    if (!rc && !chat && cfg->chat_template && *cfg->chat_template) {
        /* the model's own GGUF (cfg->tokenizer) carries its Jinja template: its default system
         * prompt then comes along, so the prompt is the one the local backend renders */
        gguf_file *g = NULL;
        pwb_err ge = {0};
        const char *jinja = NULL;
        if (cfg->tokenizer && str_ends(cfg->tokenizer, ".gguf") && gguf_open(&g, cfg->tokenizer, &ge) == PWB_OK)
            jinja = gguf_get_str(g, "tokenizer.chat_template", NULL);
        rc = chat_template_init(&im->ct, jinja, cfg->chat_template, e);
        gguf_close(g);
        if (rc)
            err_prefix(e, "%s: ", name);
        else
            im->have_ct = 1;
    }
    if (rc) {
        remote_conn_close(&im->conn);
        remote_conn_close(&im->embed);
        free(im);
        return rc;
    }
    im->bo = (openai_body_opts){.model = im->conn.model, .stream = im->conn.stream, .ct = im->have_ct ? &im->ct : NULL};
    im->base.kind = chat ? "openai" : "openai-completions";
    im->base.run = openai_run;
    im->base.destroy = openai_destroy;
    im->base.impl = im;
    *out = &im->base;
    return PWB_OK;
}
