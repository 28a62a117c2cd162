/* Ollama's /api/chat: bodies, replies (whole or NDJSON stream), backend. See ollama.h. */
#include "llm/ollama.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/remote.h"
#include "llm/stream.h"
#include "util/str.h"

#define OLLAMA_MAX_STOP 16

int ollama_build(const char *model, int stream, const llm_request *r, pwb_buf *out, pwb_err *e)
{
    if (r->mode == LLM_RANK)
        return err_set(e, PWB_EUNSUP, "ranking (LLM_RANK) is not supported by Ollama's /api/chat");
    int rc = llm_request_check(r, e);
    if (rc)
        return rc;
    if (!model)
        return err_set(e, PWB_EINVAL, "request: ollama needs a model name");
    cJSON *o = cJSON_CreateObject();
    int bad = !o || !cJSON_AddStringToObject(o, "model", model);
    cJSON *msgs = bad ? NULL : cJSON_AddArrayToObject(o, "messages");
    bad |= !msgs;
    int n = r->n_messages > 0 ? r->n_messages : 1;
    for (int k = 0; !bad && k < n; k++) {
        cJSON *m = cJSON_CreateObject();
        if (!m || !cJSON_AddItemToArray(msgs, m)) {
            cJSON_Delete(m);
            bad = 1;
            break;
        }
        const char *role = r->n_messages > 0 ? r->messages[k].role : "user";
        const char *content = r->n_messages > 0 ? r->messages[k].content : r->prompt;
        bad |= !cJSON_AddStringToObject(m, "role", role) || !cJSON_AddStringToObject(m, "content", content);
    }
    bad |= bad || !cJSON_AddBoolToObject(o, "stream", stream != 0);
    cJSON *opt = bad ? NULL : cJSON_AddObjectToObject(o, "options");
    bad |= !opt;
    bad |= bad || !cJSON_AddNumberToObject(opt, "temperature", r->temperature);
    bad |= bad || (r->top_p > 0 && r->top_p <= 1 && !cJSON_AddNumberToObject(opt, "top_p", r->top_p));
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, r->seed & (uint64_t)INT32_MAX); /* Ollama's seed is an int */
    bad |= bad || !cJSON_AddRawToObject(opt, "seed", seed);
    bad |= bad || (r->max_tokens > 0 && !cJSON_AddNumberToObject(opt, "num_predict", r->max_tokens));
    if (!bad && r->n_stop > 0) {
        cJSON *st = cJSON_AddArrayToObject(opt, "stop");
        bad |= !st;
        for (int k = 0; !bad && k < r->n_stop && k < OLLAMA_MAX_STOP; k++) {
            if (!r->stop[k] || !*r->stop[k])
                continue;
            cJSON *s = cJSON_CreateString(r->stop[k]);
            if (!s || !cJSON_AddItemToArray(st, s)) {
                cJSON_Delete(s);
                bad = 1;
            }
        }
    }
    return json_append(out, o, bad) ? err_set(e, PWB_ENOMEM, "request: out of memory") : PWB_OK;
}

/* What one object (a whole reply or a stream line) carries. */
typedef struct ollama_acc {
    pwb_buf text;
    char reason[64];
    int tokens_in, tokens_out;
    int done, lines, garbled, oom, content_seen;
    char err[256];
} ollama_acc;

static int on_obj(void *ctx, const char *event, const char *data, size_t len)
{
    ollama_acc *a = ctx;
    a->lines++;
    cJSON *j = remote_stream_object(data, len, a->err, sizeof a->err, &a->garbled);
    if (!j)
        return 1;
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (cJSON_IsString(c) && c->valuestring) {
        a->content_seen = 1;
        if (buf_puts(&a->text, c->valuestring))
            a->oom = 1;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "done"))) {
        a->done = 1;
        const char *dr = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "done_reason"));
        if (dr)
            str_copy(a->reason, sizeof a->reason, dr);
        a->tokens_in = remote_json_count(j, "prompt_eval_count");
        a->tokens_out = remote_json_count(j, "eval_count");
    }
    cJSON_Delete(j);
    return a->oom;
}

static int finish(ollama_acc *a, int whole, size_t len, llm_response *r, pwb_err *e)
{
    int rc = PWB_OK;
    if (a->oom)
        rc = err_set(e, PWB_ENOMEM, "reply: out of memory");
    else if (a->err[0])
        rc = err_set(e, PWB_EHTTP, "%s", a->err);
    else if (a->garbled)
        rc = err_set(e, PWB_EPARSE, "%s is not valid JSON (%zu bytes)", whole ? "reply" : "a stream line", len);
    else if (whole && !a->content_seen)
        rc = err_set(e, PWB_EHTTP, "reply: message.content is missing or not a string");
    else if (!whole && !a->done)
        rc = err_set(e, PWB_EPARSE, "stream ended before \"done\": true");
    if (!rc && !a->text.data && buf_puts(&a->text, ""))
        rc = err_set(e, PWB_ENOMEM, "reply: out of memory");
    if (!rc) {
        char *fr = a->reason[0] ? str_dup(a->reason) : NULL;
        free(r->text);
        free(r->finish_reason);
        r->text = buf_take(&a->text);
        r->finish_reason = fr;
        r->tokens_in = a->tokens_in;
        r->tokens_out = a->tokens_out;
    }
    buf_free(&a->text);
    return rc;
}

int ollama_parse_reply(const char *body, size_t len, llm_response *r, pwb_err *e)
{
    ollama_acc a = {.tokens_in = -1, .tokens_out = -1};
    buf_init(&a.text);
    if (len == 0 || on_obj(&a, NULL, body, len) < 0)
        a.garbled = 1;
    return finish(&a, 1, len, r, e);
}

int ollama_parse_stream(const char *body, size_t len, llm_response *r, pwb_err *e)
{
    ollama_acc a = {.tokens_in = -1, .tokens_out = -1};
    buf_init(&a.text);
    ndjson_each(body, len, on_obj, &a);
    if (a.lines == 0)
        a.garbled = 1;
    /* one object, done or not, is a server that answered in one piece */
    if (a.lines == 1 && !a.garbled && !a.err[0] && !a.done && a.content_seen)
        a.done = 1;
    return finish(&a, 0, len, r, e);
}

static int first_fn(void *ctx, const char *event, const char *data, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(data, len);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "message"), "content");
    int got = cJSON_IsString(c) && c->valuestring && c->valuestring[0];
    cJSON_Delete(j);
    return got;
}

int ollama_first_token(const char *data, size_t len) { return stream_lines_each(0, data, len, first_fn, NULL) > 0; }

/* ---- backend ---- */

static int p_build(const remote_backend *rb, const llm_request *r, pwb_buf *body, pwb_err *e)
{
    return ollama_build(rb->conn.model, rb->conn.stream, r, body, e);
}

static int p_parse(const remote_backend *rb, const llm_request *r, const char *body, size_t len, llm_response *out,
                   pwb_err *e)
{
    return rb->conn.stream ? ollama_parse_stream(body, len, out, e) : ollama_parse_reply(body, len, out, e);
}

static const remote_proto g_ollama = {"ollama", p_build, p_parse, ollama_first_token};

int llm_ollama_create(llm_backend **out, const llm_config *cfg, pwb_err *e)
{
    *out = NULL;
    if (!cfg->model || !*cfg->model)
        return err_set(e, PWB_EINVAL, "%s: ollama needs a model name (e.g. \"llama3.2:1b\")", cfg->name ? cfg->name : "model");
    return remote_backend_create(out, cfg, &g_ollama, "/api/chat", NULL, 0, e);
}
