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

#include "llm/http.h"
#include "util/str.h"

#define OPENAI_MAX_STOP 16

typedef struct openai_impl {
    llm_backend base; /* first: the backend pointer is the impl pointer */
    http_client *http;
    int chat;
    char *model;
    const llm_request *reqs; /* the batch being run */
} openai_impl;

/* ---- request bodies ---- */

static int check_request(const llm_request *r, pwb_err *e)
{
    if (r->mode == LLM_RANK)
        return err_set(e, PWB_EUNSUP, "ranking (LLM_RANK) is not supported by OpenAI-compatible HTTP backends");
    if (r->mode != LLM_GENERATE)
        return err_set(e, PWB_EINVAL, "unknown request mode %d", r->mode);
    if (r->n_messages < 0 || (r->n_messages > 0 && !r->messages))
        return err_set(e, PWB_EINVAL, "request: bad message list");
    if (r->n_messages == 0 && !r->prompt)
        return err_set(e, PWB_EINVAL, "request: neither messages nor prompt given");
    for (int k = 0; k < r->n_messages; k++)
        if (!r->messages[k].role || !r->messages[k].content)
            return err_set(e, PWB_EINVAL, "request: message %d has no role or content", k);
    if (!isfinite(r->temperature) || r->temperature < 0)
        return err_set(e, PWB_EINVAL, "request: temperature must be a finite number >= 0");
    if (!isfinite(r->top_p))
        return err_set(e, PWB_EINVAL, "request: top_p must be finite");
    if (r->n_stop < 0 || (r->n_stop > 0 && !r->stop))
        return err_set(e, PWB_EINVAL, "request: bad stop list");
    return PWB_OK;
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

static int finish_body(cJSON *o, pwb_buf *out, pwb_err *e)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return err_set(e, PWB_ENOMEM, "request: out of memory");
    int rc = buf_puts(out, s) ? err_set(e, PWB_ENOMEM, "request: out of memory") : PWB_OK;
    free(s);
    return rc;
}

int openai_build_chat(const char *model, const llm_request *r, pwb_buf *out, pwb_err *e)
{
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
    if (bad) {
        cJSON_Delete(o);
        return err_set(e, PWB_ENOMEM, "request: out of memory");
    }
    return finish_body(o, out, e);
}

int openai_build_completion(const char *model, const llm_request *r, pwb_buf *out, pwb_err *e)
{
    int rc = check_request(r, e);
    if (rc)
        return rc;
    pwb_buf joined;
    buf_init(&joined);
    const char *prompt = r->prompt;
    if (!prompt || r->n_messages > 0) {
        for (int k = 0; k < r->n_messages; k++)
            if ((k && buf_puts(&joined, "\n\n")) || buf_puts(&joined, r->messages[k].content)) {
                buf_free(&joined);
                return err_set(e, PWB_ENOMEM, "request: out of memory");
            }
        prompt = joined.data ? joined.data : "";
    }
    cJSON *o = cJSON_CreateObject();
    int bad = !o;
    bad |= bad || (model && !cJSON_AddStringToObject(o, "model", model));
    bad |= bad || !cJSON_AddStringToObject(o, "prompt", prompt);
    bad |= bad || add_params(o, r);
    buf_free(&joined);
    if (bad) {
        cJSON_Delete(o);
        return err_set(e, PWB_ENOMEM, "request: out of memory");
    }
    return finish_body(o, out, e);
}

/* ---- replies ---- */

static int usage_count(const cJSON *usage, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(usage, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > 2e9)
        return -1;
    return (int)v->valuedouble;
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
    r->tokens_in = cJSON_IsObject(usage) ? usage_count(usage, "prompt_tokens") : -1;
    r->tokens_out = cJSON_IsObject(usage) ? usage_count(usage, "completion_tokens") : -1;
out:
    buf_free(&text);
    cJSON_Delete(j);
    return rc;
}

/* ---- backend ---- */

static int op_build(void *ctx, size_t i, pwb_buf *body, pwb_err *e)
{
    openai_impl *im = ctx;
    return im->chat ? openai_build_chat(im->model, &im->reqs[i], body, e)
                    : openai_build_completion(im->model, &im->reqs[i], body, e);
}

static int op_parse(void *ctx, size_t i, const char *body, size_t len, llm_response *r, pwb_err *e)
{
    openai_impl *im = ctx;
    return openai_parse_reply(im->chat, body, len, r, e);
}

static int openai_run(llm_backend *b, const llm_request *reqs, size_t n, llm_response *out, llm_done_fn done,
                      void *ctx, pwb_err *e)
{
    openai_impl *im = b->impl;
    if (n && (!reqs || !out))
        return err_set(e, PWB_EINVAL, "%s: no requests or no response array", b->kind);
    im->reqs = reqs;
    http_ops ops = {.build = op_build, .parse = op_parse, .ctx = im};
    int rc = http_client_run(im->http, n, &ops, out, done, ctx, b->stop, e);
    im->reqs = NULL;
    return rc;
}

static void openai_destroy(llm_backend *b)
{
    if (!b)
        return;
    openai_impl *im = b->impl;
    http_client_free(im->http);
    free(im->model);
    free(im);
}

int llm_openai_create(llm_backend **out, const llm_config *cfg, pwb_err *e)
{
    *out = NULL;
    const char *name = cfg->name ? cfg->name : "model";
    int chat = strcmp(cfg->provider, "openai") == 0;
    if (!chat && strcmp(cfg->provider, "openai-completions") != 0)
        return err_set(e, PWB_EINVAL, "%s: provider '%.64s' is not OpenAI-compatible", name, cfg->provider);
    if (!cfg->base_url || !*cfg->base_url)
        return err_set(e, PWB_EINVAL, "%s: no base_url (e.g. http://127.0.0.1:8080/v1)", name);
    const char *key = NULL;
    if (cfg->api_key_env && *cfg->api_key_env) {
        key = getenv(cfg->api_key_env);
        if (!key || !*key)
            return err_set(e, PWB_EINVAL, "%s: environment variable %.128s (api_key_env) is not set", name,
                           cfg->api_key_env);
    }
    pwb_buf url;
    buf_init(&url);
    size_t blen = strlen(cfg->base_url);
    while (blen > 0 && cfg->base_url[blen - 1] == '/')
        blen--;
    if (buf_append(&url, cfg->base_url, blen) || buf_puts(&url, chat ? "/chat/completions" : "/completions")) {
        buf_free(&url);
        return err_set(e, PWB_ENOMEM, "%s: out of memory", name);
    }
    openai_impl *im = calloc(1, sizeof *im);
    if (!im) {
        buf_free(&url);
        return err_set(e, PWB_ENOMEM, "%s: out of memory", name);
    }
    im->chat = chat;
    im->model = cfg->model && *cfg->model ? str_dup(cfg->model) : NULL;
    http_opts o = {
        .url = url.data,
        .secret = key,
        .concurrency = cfg->concurrency,
        .timeout_s = cfg->timeout_s,
        .max_retries = cfg->max_retries < 0 ? 0 : cfg->max_retries,
        .backoff_base_s = cfg->backoff_base_s,
        .backoff_max_s = cfg->backoff_max_s,
    };
    int rc = (cfg->model && *cfg->model && !im->model) ? err_set(e, PWB_ENOMEM, "%s: out of memory", name)
                                                       : http_client_create(&im->http, &o, e);
    buf_free(&url);
    if (rc) {
        err_prefix(e, "%s: ", name);
        free(im->model);
        free(im);
        return rc;
    }
    im->base.kind = chat ? "openai" : "openai-completions";
    im->base.run = openai_run;
    im->base.destroy = openai_destroy;
    im->base.impl = im;
    *out = &im->base;
    return PWB_OK;
}
