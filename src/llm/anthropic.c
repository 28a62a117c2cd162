/* Anthropic Messages: bodies, replies (whole or SSE), backend. See anthropic.h. */
#include "llm/anthropic.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/remote.h"
#include "llm/stream.h"
#include "util/str.h"

#define ANTHROPIC_MAX_STOP 16

static int whitespace_only(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != '\f' && *s != '\v')
            return 0;
    return 1;
}

int anthropic_build(const char *model, int stream, int default_max_tokens, const llm_request *r, pwb_buf *out,
                    pwb_err *e)
{
    if (r->mode == LLM_RANK)
        return err_set(e, PWB_EUNSUP, "ranking (LLM_RANK) is not supported by Anthropic's Messages API");
    int rc = llm_request_check(r, e);
    if (rc)
        return rc;
    if (!model)
        return err_set(e, PWB_EINVAL, "request: anthropic needs a model name");
    pwb_buf sys;
    buf_init(&sys);
    cJSON *o = cJSON_CreateObject();
    int bad = !o || !cJSON_AddStringToObject(o, "model", model);
    int max = r->max_tokens > 0 ? r->max_tokens : default_max_tokens > 0 ? default_max_tokens : 1024;
    bad |= bad || !cJSON_AddNumberToObject(o, "max_tokens", max);
    cJSON *msgs = bad ? NULL : cJSON_AddArrayToObject(o, "messages");
    bad |= !msgs;
    int n_turns = 0;
    int n = r->n_messages > 0 ? r->n_messages : 1;
    for (int k = 0; !bad && k < n; k++) {
        const char *role = r->n_messages > 0 ? r->messages[k].role : "user";
        const char *content = r->n_messages > 0 ? r->messages[k].content : r->prompt;
        if (strcmp(role, "system") == 0) {
            bad |= (sys.len && buf_puts(&sys, "\n\n")) || buf_puts(&sys, content);
            continue;
        }
        if (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0) {
            cJSON_Delete(o);
            buf_free(&sys);
            return err_set(e, PWB_EINVAL, "request: anthropic takes roles system, user and assistant, not '%.32s'",
                           role);
        }
        cJSON *m = cJSON_CreateObject();
        if (!m || !cJSON_AddItemToArray(msgs, m)) {
            cJSON_Delete(m);
            bad = 1;
            break;
        }
        bad |= !cJSON_AddStringToObject(m, "role", role) || !cJSON_AddStringToObject(m, "content", content);
        n_turns++;
    }
    if (!bad && n_turns == 0) {
        cJSON_Delete(o);
        buf_free(&sys);
        return err_set(e, PWB_EINVAL, "request: anthropic needs a user message besides the system prompt");
    }
    bad |= bad || (sys.len && !cJSON_AddStringToObject(o, "system", sys.data));
    bad |= bad || !cJSON_AddNumberToObject(o, "temperature", r->temperature);
    bad |= bad || (r->top_p > 0 && r->top_p < 1 && !cJSON_AddNumberToObject(o, "top_p", r->top_p));
    cJSON *st = NULL;
    for (int k = 0; !bad && k < r->n_stop && k < ANTHROPIC_MAX_STOP; k++) {
        if (!r->stop[k] || whitespace_only(r->stop[k]))
            continue; /* the API rejects these; the text is cut client-side */
        if (!st && !(st = cJSON_AddArrayToObject(o, "stop_sequences"))) {
            bad = 1;
            break;
        }
        cJSON *s = cJSON_CreateString(r->stop[k]);
        if (!s || !cJSON_AddItemToArray(st, s)) {
            cJSON_Delete(s);
            bad = 1;
        }
    }
    bad |= bad || (stream && !cJSON_AddTrueToObject(o, "stream"));
    buf_free(&sys);
    return json_append(out, o, bad) ? err_set(e, PWB_ENOMEM, "request: out of memory") : PWB_OK;
}

/* ---- replies ---- */

static const char *reason_name(const char *stop_reason)
{
    if (strcmp(stop_reason, "end_turn") == 0 || strcmp(stop_reason, "stop_sequence") == 0)
        return "stop";
    if (strcmp(stop_reason, "max_tokens") == 0)
        return "length";
    return stop_reason;
}

typedef struct an_acc {
    pwb_buf text;
    char reason[64];
    int in, cache_read, cache_new, out;
    int started, stopped, events, garbled, oom, content_seen;
    char err[256];
} an_acc;

static void take_usage(an_acc *a, const cJSON *u)
{
    if (!cJSON_IsObject(u))
        return;
    int v;
    if ((v = remote_json_count(u, "input_tokens")) >= 0)
        a->in = v;
    if ((v = remote_json_count(u, "cache_read_input_tokens")) >= 0)
        a->cache_read = v;
    if ((v = remote_json_count(u, "cache_creation_input_tokens")) >= 0)
        a->cache_new = v;
    if ((v = remote_json_count(u, "output_tokens")) >= 0)
        a->out = v;
}

static void take_error(an_acc *a, const cJSON *err)
{
    const char *m = cJSON_IsObject(err) ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "message"))
                                        : cJSON_GetStringValue(err);
    snprintf(a->err, sizeof a->err, "server error: %.200s", m ? m : "(no message)");
}

static void take_stop(an_acc *a, const char *sr)
{
    if (sr)
        str_copy(a->reason, sizeof a->reason, reason_name(sr));
}

/* A whole message object. */
static void take_message(an_acc *a, const cJSON *j)
{
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(j, "content");
    if (cJSON_IsArray(content)) {
        a->content_seen = 1;
        const cJSON *blk;
        cJSON_ArrayForEach(blk, content) {
            const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(blk, "type"));
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(blk, "text");
            if (type && strcmp(type, "text") == 0 && cJSON_IsString(t) && t->valuestring && buf_puts(&a->text, t->valuestring))
                a->oom = 1;
        }
    }
    take_stop(a, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "stop_reason")));
    take_usage(a, cJSON_GetObjectItemCaseSensitive(j, "usage"));
}

static void fill(an_acc *a, llm_response *r)
{
    free(r->text);
    free(r->finish_reason);
    r->text = buf_take(&a->text);
    r->finish_reason = a->reason[0] ? str_dup(a->reason) : NULL;
    r->tokens_in = a->in < 0 ? -1 : a->in + (a->cache_read > 0 ? a->cache_read : 0) + (a->cache_new > 0 ? a->cache_new : 0);
    r->tokens_out = a->out;
    r->tokens_cached_in = a->cache_read > 0 ? a->cache_read : 0;
}

int anthropic_parse_reply(const char *body, size_t len, llm_response *r, pwb_err *e)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!j)
        return err_set(e, PWB_EPARSE, "reply is not valid JSON (%zu bytes)", len);
    an_acc a = {.in = -1, .out = -1, .cache_read = -1, .cache_new = -1};
    buf_init(&a.text);
    int rc = PWB_OK;
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (!cJSON_IsObject(j)) {
        rc = err_set(e, PWB_EHTTP, "reply is not a JSON object");
    } else if (err || (type && strcmp(type, "error") == 0)) {
        take_error(&a, err);
        rc = err_set(e, PWB_EHTTP, "%s", a.err);
    } else {
        take_message(&a, j);
        if (a.oom)
            rc = err_set(e, PWB_ENOMEM, "reply: out of memory");
        else if (!a.content_seen)
            rc = err_set(e, PWB_EHTTP, "reply: 'content' is missing or not an array of blocks");
        else if (!a.text.data && buf_puts(&a.text, ""))
            rc = err_set(e, PWB_ENOMEM, "reply: out of memory");
        if (!rc)
            fill(&a, r);
    }
    buf_free(&a.text);
    cJSON_Delete(j);
    return rc;
}

static int on_event(void *ctx, const char *event, const char *data, size_t len)
{
    an_acc *a = ctx;
    a->events++;
    cJSON *j = cJSON_ParseWithLength(data, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        a->garbled = 1;
        return 1;
    }
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
    if (!type)
        type = event ? event : "";
    int stop = 0;
    if (strcmp(type, "message_start") == 0) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
        a->started = 1;
        take_usage(a, cJSON_GetObjectItemCaseSensitive(m, "usage"));
    } else if (strcmp(type, "content_block_delta") == 0) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "delta");
        const char *dt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "type"));
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(d, "text");
        if (dt && strcmp(dt, "text_delta") == 0 && cJSON_IsString(t) && t->valuestring && buf_puts(&a->text, t->valuestring))
            a->oom = 1;
    } else if (strcmp(type, "message_delta") == 0) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "delta");
        take_stop(a, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "stop_reason")));
        take_usage(a, cJSON_GetObjectItemCaseSensitive(j, "usage"));
    } else if (strcmp(type, "message_stop") == 0) {
        a->stopped = 1;
        stop = 1;
    } else if (strcmp(type, "error") == 0) {
        take_error(a, cJSON_GetObjectItemCaseSensitive(j, "error"));
        stop = 1;
    }
    cJSON_Delete(j);
    return stop || a->oom;
}

int anthropic_parse_stream(const char *body, size_t len, llm_response *r, pwb_err *e)
{
    if (remote_looks_like_object(body, len))
        return anthropic_parse_reply(body, len, r, e);
    an_acc a = {.in = -1, .out = -1, .cache_read = -1, .cache_new = -1};
    buf_init(&a.text);
    sse_each(body, len, on_event, &a);
    int rc = PWB_OK;
    if (a.oom)
        rc = err_set(e, PWB_ENOMEM, "reply: out of memory");
    else if (a.err[0])
        rc = err_set(e, PWB_EHTTP, "%s", a.err);
    else if (a.garbled)
        rc = err_set(e, PWB_EPARSE, "stream: an event is not valid JSON (%zu bytes)", len);
    else if (!a.started || !a.stopped)
        rc = err_set(e, PWB_EPARSE, "stream ended before message_stop");
    if (!rc && !a.text.data && buf_puts(&a.text, ""))
        rc = err_set(e, PWB_ENOMEM, "reply: out of memory");
    if (!rc)
        fill(&a, r);
    buf_free(&a.text);
    return rc;
}

static int first_fn(void *ctx, const char *event, const char *data, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(data, len);
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "delta"), "text");
    int got = type && strcmp(type, "content_block_delta") == 0 && cJSON_IsString(t) && t->valuestring &&
              t->valuestring[0];
    cJSON_Delete(j);
    return got;
}

int anthropic_first_token(const char *data, size_t len) { return stream_lines_each(1, data, len, first_fn, NULL) > 0; }

/* ---- backend ---- */

static int p_build(const remote_backend *rb, const llm_request *r, pwb_buf *body, pwb_err *e)
{
    return anthropic_build(rb->conn.model, rb->conn.stream, rb->default_max_tokens, r, body, e);
}

static int p_parse(const remote_backend *rb, const llm_request *r, const char *body, size_t len, llm_response *out,
                   pwb_err *e)
{
    int rc = rb->conn.stream ? anthropic_parse_stream(body, len, out, e) : anthropic_parse_reply(body, len, out, e);
    if (rc == PWB_OK && r->n_stop > 0 && out->text) {
        size_t before = strlen(out->text);
        remote_apply_stops(out->text, r->stop, r->n_stop);
        if (strlen(out->text) < before) {
            free(out->finish_reason);
            out->finish_reason = str_dup("stop");
        }
    }
    return rc;
}

static const remote_proto g_anthropic = {"anthropic", p_build, p_parse, anthropic_first_token};

int llm_anthropic_create(llm_backend **out, const llm_config *cfg, pwb_err *e)
{
    *out = NULL;
    if (!cfg->model || !*cfg->model)
        return err_set(e, PWB_EINVAL, "%s: anthropic needs a model name (e.g. \"claude-3-5-haiku-latest\")",
                       cfg->name ? cfg->name : "model");
    static const char *const headers[] = {"anthropic-version: " ANTHROPIC_VERSION};
    return remote_backend_create(out, cfg, &g_anthropic, "/v1/messages", headers, 1, e);
}
