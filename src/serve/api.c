#include "serve/api.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/str.h"
#include "util/utf8.h"

/* ---- requests ------------------------------------------------------------------------------ */

static int bad(api_req *r, pwb_err *e, const char *param, const char *msg)
{
    str_copy(r->param, sizeof r->param, param ? param : "");
    return err_set(e, PWB_EINVAL, "%s", msg);
}

/* A number field within [lo, hi]; absent keeps *out. */
static int num_field(api_req *r, const char *key, double lo, double hi, double *out, pwb_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v || cJSON_IsNull(v))
        return PWB_OK;
    char msg[160];
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi)) {
        snprintf(msg, sizeof msg, "'%s' must be a number in [%g, %g]", key, lo, hi);
        return bad(r, e, key, msg);
    }
    *out = v->valuedouble;
    return PWB_OK;
}

static int int_field(api_req *r, const char *key, double lo, double hi, int *out, pwb_err *e)
{
    double d = *out;
    int rc = num_field(r, key, lo, hi, &d, e);
    if (rc == PWB_OK && d != floor(d)) {
        char msg[160];
        snprintf(msg, sizeof msg, "'%s' must be an integer", key);
        return bad(r, e, key, msg);
    }
    *out = (int)d;
    return rc;
}

static int bool_field(api_req *r, const char *key, int *out, pwb_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v || cJSON_IsNull(v))
        return PWB_OK;
    if (!cJSON_IsBool(v)) {
        char msg[160];
        snprintf(msg, sizeof msg, "'%s' must be true or false", key);
        return bad(r, e, key, msg);
    }
    *out = cJSON_IsTrue(v);
    return PWB_OK;
}

/* A message's content: a string, or an array of {"type": "text", "text": ...} parts joined. */
static int content_of(api_req *r, const cJSON *c, const char **out, pwb_err *e)
{
    if (!c || cJSON_IsNull(c)) {
        *out = "";
        return PWB_OK;
    }
    if (cJSON_IsString(c)) {
        *out = c->valuestring;
        return PWB_OK;
    }
    if (!cJSON_IsArray(c))
        return bad(r, e, "messages", "a message's content must be a string or an array of text parts");
    pwb_buf b;
    buf_init(&b);
    const cJSON *p;
    cJSON_ArrayForEach(p, c)
    {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "type"));
        const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, "text"));
        if (!type || strcmp(type, "text") != 0 || !text) {
            buf_free(&b);
            return bad(r, e, "messages", "only text content parts are supported");
        }
        buf_puts(&b, text);
    }
    char **o = realloc(r->owned, (size_t)(r->n_owned + 1) * sizeof *o);
    if (!o) {
        buf_free(&b);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    r->owned = o;
    if (!(o[r->n_owned] = b.data ? buf_take(&b) : str_dup(""))) {
        buf_free(&b);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    *out = o[r->n_owned++];
    return PWB_OK;
}

int api_parse(api_req *r, int chat, const char *body, size_t len, pwb_err *e)
{
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->max_tokens = -1;
    r->temperature = 1.0;
    r->top_p = 1.0;
    r->logprobs = -1;
    r->root = cJSON_ParseWithLength(body, len);
    if (!r->root)
        return bad(r, e, NULL, "the body is not valid JSON");
    if (!cJSON_IsObject(r->root))
        return bad(r, e, NULL, "the body must be a JSON object");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(r->root, "model");
    if (m && !cJSON_IsNull(m) && !cJSON_IsString(m))
        return bad(r, e, "model", "'model' must be a string");
    r->model = cJSON_IsString(m) ? m->valuestring : NULL;
    int rc, n = 1;
    if ((rc = int_field(r, "max_tokens", 0, 1 << 20, &r->max_tokens, e)) ||
        (chat && (rc = int_field(r, "max_completion_tokens", 0, 1 << 20, &r->max_tokens, e))) ||
        (rc = num_field(r, "temperature", 0, 2, &r->temperature, e)) ||
        (rc = num_field(r, "top_p", 0, 1, &r->top_p, e)) || (rc = int_field(r, "n", 1, 1, &n, e)) ||
        (rc = bool_field(r, "stream", &r->stream, e)))
        return rc;
    double seed = 0;
    if ((rc = num_field(r, "seed", -9.2e18, 1.8e19, &seed, e)))
        return rc;
    r->seed = seed < 0 ? (uint64_t)(int64_t)seed : (uint64_t)seed;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(r->root, "stream_options");
    if (cJSON_IsObject(so))
        r->stream_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    /* stop: a string or up to four */
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(r->root, "stop");
    if (cJSON_IsString(st)) {
        r->stop[r->n_stop++] = st->valuestring;
    } else if (cJSON_IsArray(st)) {
        const cJSON *x;
        cJSON_ArrayForEach(x, st)
        {
            if (!cJSON_IsString(x) || r->n_stop >= SCHED_MAX_STOP)
                return bad(r, e, "stop", "'stop' must be a string or an array of at most 4 strings");
            r->stop[r->n_stop++] = x->valuestring;
        }
    } else if (st && !cJSON_IsNull(st)) {
        return bad(r, e, "stop", "'stop' must be a string or an array of at most 4 strings");
    }
    for (int i = 0; i < r->n_stop; i++)
        if (strlen(r->stop[i]) > API_MAX_STOP_BYTES)
            return bad(r, e, "stop", "a stop string is longer than 256 bytes");
    if (chat) {
        int want = 0, top = 0;
        if ((rc = bool_field(r, "logprobs", &want, e)) || (rc = int_field(r, "top_logprobs", 0, SCHED_MAX_TOP, &top, e)))
            return rc;
        r->logprobs = want ? top : -1;
        const cJSON *ms = cJSON_GetObjectItemCaseSensitive(r->root, "messages");
        int nm = cJSON_IsArray(ms) ? cJSON_GetArraySize(ms) : -1;
        if (nm < 1 || nm > API_MAX_MESSAGES)
            return bad(r, e, "messages", "'messages' must be an array of 1 to 256 messages");
        if (!(r->msgs = calloc((size_t)nm, sizeof *r->msgs)))
            return err_set(e, PWB_ENOMEM, "out of memory");
        const cJSON *x;
        cJSON_ArrayForEach(x, ms)
        {
            const char *role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(x, "role"));
            if (!cJSON_IsObject(x) || !role || !*role || strlen(role) > 32)
                return bad(r, e, "messages", "each message needs a 'role' string");
            chat_msg *cm = &r->msgs[r->n_msgs++];
            cm->role = role;
            if ((rc = content_of(r, cJSON_GetObjectItemCaseSensitive(x, "content"), &cm->content, e)))
                return rc;
        }
        return PWB_OK;
    }
    if ((rc = int_field(r, "logprobs", 0, SCHED_MAX_TOP, &r->logprobs, e)) || (rc = bool_field(r, "echo", &r->echo, e)))
        return rc;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(r->root, "prompt");
    if (cJSON_IsString(p)) {
        r->prompts[r->n_prompts++] = p->valuestring;
    } else if (cJSON_IsArray(p) && cJSON_GetArraySize(p) >= 1 && cJSON_GetArraySize(p) <= API_MAX_PROMPTS) {
        const cJSON *x;
        cJSON_ArrayForEach(x, p)
        {
            if (!cJSON_IsString(x))
                return bad(r, e, "prompt", "'prompt' must be a string or an array of strings (token ids are not supported)");
            r->prompts[r->n_prompts++] = x->valuestring;
        }
    } else {
        return bad(r, e, "prompt", "'prompt' must be a string or an array of 1 to 16 strings");
    }
    if (r->stream && r->n_prompts > 1)
        return bad(r, e, "prompt", "a streamed completion takes one prompt");
    return PWB_OK;
}

void api_req_free(api_req *r)
{
    cJSON_Delete(r->root);
    free(r->msgs);
    for (int i = 0; i < r->n_owned; i++)
        free(r->owned[i]);
    free(r->owned);
    memset(r, 0, sizeof *r);
}

/* ---- replies ------------------------------------------------------------------------------- */

const char *api_finish_name(const sched_job *j)
{
    return j->finish == SCHED_FINISH_STOP ? "stop" : "length";
}

/* A token's text for JSON: its piece when that is valid UTF-8, else "bytes:\xNN..." as OpenAI
 * writes partial characters. bytes (optional) gets the raw bytes as numbers. */
static cJSON *token_text(const tokenizer *tok, int32_t id, int skip, int *drop_space, pwb_buf *scratch, cJSON **bytes)
{
    buf_reset(scratch);
    if (!skip)
        tokenizer_token_piece(tok, id, 1, scratch);
    if (drop_space && *drop_space && scratch->data && scratch->len > 0) {
        /* SentencePiece's dummy prefix: a space the text sent does not have */
        if (scratch->data[0] == ' ')
            memmove(scratch->data, scratch->data + 1, scratch->len--);
        *drop_space = 0;
    }
    const char *p = scratch->data ? scratch->data : "";
    size_t n = scratch->data ? scratch->len : 0;
    if (bytes) {
        *bytes = cJSON_CreateArray();
        for (size_t i = 0; *bytes && i < n; i++)
            cJSON_AddItemToArray(*bytes, cJSON_CreateNumber((unsigned char)p[i]));
    }
    if (utf8_valid(p, n))
        return cJSON_CreateString(p);
    pwb_buf h;
    buf_init(&h);
    buf_puts(&h, "bytes:");
    for (size_t i = 0; i < n; i++)
        buf_printf(&h, "\\x%02x", (unsigned char)p[i]);
    cJSON *s = cJSON_CreateString(h.data ? h.data : "");
    buf_free(&h);
    return s;
}

static cJSON *num_or_null(double v)
{
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

/* The legacy completions "logprobs" object over echoed prompt tokens (may be NULL) then
 * generated ones. */
static cJSON *completion_logprobs(const api_reply *a, const sched_job *j, int echo, int top, const char *prompt)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens"), *lps = cJSON_AddArrayToObject(o, "token_logprobs"),
          *tops = cJSON_AddArrayToObject(o, "top_logprobs"), *offs = cJSON_AddArrayToObject(o, "text_offset");
    if (!tokens || !lps || !tops || !offs) {
        cJSON_Delete(o);
        return NULL;
    }
    pwb_buf piece;
    buf_init(&piece);
    size_t off = 0;
    int bos_added = 0;
    if (echo && j->n_ids > 0 && j->ids[0] == tokenizer_bos(a->tok)) {
        /* a BOS the tokenizer added is not in the text sent */
        const char *bt = tokenizer_token_text(a->tok, j->ids[0]);
        bos_added = !bt || strncmp(prompt, bt, strlen(bt)) != 0;
    }
    int n_prompt = echo ? j->n_ids : 0, drop_space = echo && prompt[0] != ' ';
    for (int i = 0; i < n_prompt + j->n_out; i++) {
        const sched_tok *t = i < n_prompt ? &j->prompt_lp[i] : (j->out_lp ? &j->out_lp[i - n_prompt] : NULL);
        int32_t id = i < n_prompt ? j->ids[i] : j->out_ids[i - n_prompt];
        int skip = i == 0 && bos_added;
        cJSON_AddItemToArray(tokens, token_text(a->tok, id, skip, i < n_prompt ? &drop_space : NULL, &piece, NULL));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        off += utf8_codepoints(piece.data ? piece.data : "", piece.data ? piece.len : 0);
        if (!t || !isfinite(t->logprob)) {
            cJSON_AddItemToArray(lps, cJSON_CreateNull());
            cJSON_AddItemToArray(tops, cJSON_CreateNull());
            continue;
        }
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(t->logprob));
        cJSON *tp = cJSON_CreateObject();
        for (int k = 0; tp && k < t->n_top && k < top; k++) {
            cJSON *s = token_text(a->tok, t->top_id[k], 0, NULL, &piece, NULL);
            const char *key = cJSON_GetStringValue(s);
            if (key && !cJSON_GetObjectItemCaseSensitive(tp, key))
                cJSON_AddItemToObject(tp, key, cJSON_CreateNumber(t->top_lp[k]));
            cJSON_Delete(s);
        }
        cJSON_AddItemToArray(tops, tp ? tp : cJSON_CreateNull());
    }
    buf_free(&piece);
    return o;
}

/* The chat "logprobs": {"content": [{token, logprob, bytes, top_logprobs}]}. */
static cJSON *chat_logprobs(const api_reply *a, const sched_job *j, int top)
{
    cJSON *o = cJSON_CreateObject(), *content = o ? cJSON_AddArrayToObject(o, "content") : NULL;
    if (!content) {
        cJSON_Delete(o);
        return NULL;
    }
    pwb_buf piece;
    buf_init(&piece);
    for (int i = 0; j->out_lp && i < j->n_out; i++) {
        const sched_tok *t = &j->out_lp[i];
        cJSON *x = cJSON_CreateObject(), *bytes = NULL;
        cJSON_AddItemToArray(content, x);
        cJSON_AddItemToObject(x, "token", token_text(a->tok, t->id, 0, NULL, &piece, &bytes));
        cJSON_AddItemToObject(x, "logprob", num_or_null(t->logprob));
        cJSON_AddItemToObject(x, "bytes", bytes);
        cJSON *tl = cJSON_AddArrayToObject(x, "top_logprobs");
        for (int k = 0; tl && k < t->n_top && k < top; k++) {
            cJSON *y = cJSON_CreateObject(), *yb = NULL;
            cJSON_AddItemToArray(tl, y);
            cJSON_AddItemToObject(y, "token", token_text(a->tok, t->top_id[k], 0, NULL, &piece, &yb));
            cJSON_AddItemToObject(y, "logprob", num_or_null(t->top_lp[k]));
            cJSON_AddItemToObject(y, "bytes", yb);
        }
    }
    buf_free(&piece);
    return o;
}

static cJSON *usage_of(sched_job *const *jobs, int n)
{
    long in = 0, out = 0, cached = 0;
    for (int i = 0; i < n; i++) {
        in += jobs[i]->n_ids;
        out += jobs[i]->n_out;
        cached += jobs[i]->n_cached;
    }
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)in);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)out);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(in + out));
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    if (d)
        cJSON_AddNumberToObject(d, "cached_tokens", (double)cached);
    return u;
}

static cJSON *reply_head(const api_reply *a, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "id", a->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)a->created);
    cJSON_AddStringToObject(o, "model", a->model);
    cJSON_AddStringToObject(o, "system_fingerprint", "pwb");
    return o;
}

static int emit(cJSON *o, pwb_buf *out, const char *pre, const char *post)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s)
        return PWB_ENOMEM;
    int rc = buf_puts(out, pre) || buf_puts(out, s) || buf_puts(out, post) ? PWB_ENOMEM : PWB_OK;
    free(s);
    return rc;
}

int api_reply_json(const api_reply *a, const api_req *r, sched_job *const *jobs, int n, pwb_buf *out)
{
    cJSON *o = reply_head(a, r->chat ? "chat.completion" : "text_completion");
    cJSON *choices = o ? cJSON_AddArrayToObject(o, "choices") : NULL;
    if (!choices) {
        cJSON_Delete(o);
        return PWB_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        const sched_job *j = jobs[i];
        cJSON *c = cJSON_CreateObject();
        cJSON_AddItemToArray(choices, c);
        cJSON_AddNumberToObject(c, "index", i);
        const char *text = j->text.data ? j->text.data : "";
        if (r->chat) {
            cJSON *m = cJSON_AddObjectToObject(c, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddStringToObject(m, "content", text);
            if (r->logprobs >= 0)
                cJSON_AddItemToObject(c, "logprobs", chat_logprobs(a, j, r->logprobs));
            else
                cJSON_AddNullToObject(c, "logprobs");
        } else {
            if (r->echo) {
                pwb_buf t;
                buf_init(&t);
                buf_puts(&t, r->prompts[i]);
                buf_puts(&t, text);
                cJSON_AddStringToObject(c, "text", t.data ? t.data : "");
                buf_free(&t);
            } else {
                cJSON_AddStringToObject(c, "text", text);
            }
            if (r->logprobs >= 0)
                cJSON_AddItemToObject(c, "logprobs", completion_logprobs(a, j, r->echo, r->logprobs, r->prompts[i]));
            else
                cJSON_AddNullToObject(c, "logprobs");
        }
        cJSON_AddStringToObject(c, "finish_reason", api_finish_name(j));
    }
    cJSON_AddItemToObject(o, "usage", usage_of(jobs, n));
    return emit(o, out, "", "");
}

int api_stream_chunk(const api_reply *a, const api_req *r, const char *delta, size_t n, int first,
                     const char *finish, pwb_buf *out)
{
    cJSON *o = reply_head(a, r->chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = o ? cJSON_AddArrayToObject(o, "choices") : NULL;
    cJSON *c = cJSON_CreateObject();
    if (!choices || !c) {
        cJSON_Delete(o);
        cJSON_Delete(c);
        return PWB_ENOMEM;
    }
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    char *text = str_ndup(delta ? delta : "", delta ? n : 0);
    if (r->chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (first)
            cJSON_AddStringToObject(d, "role", "assistant");
        if (!finish)
            cJSON_AddStringToObject(d, "content", text ? text : "");
    } else {
        cJSON_AddStringToObject(c, "text", text ? text : "");
    }
    free(text);
    cJSON_AddNullToObject(c, "logprobs");
    if (finish)
        cJSON_AddStringToObject(c, "finish_reason", finish);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    return emit(o, out, "data: ", "\n\n");
}

int api_stream_usage(const api_reply *a, const api_req *r, const sched_job *j, pwb_buf *out)
{
    cJSON *o = reply_head(a, r->chat ? "chat.completion.chunk" : "text_completion");
    if (!o || !cJSON_AddArrayToObject(o, "choices")) {
        cJSON_Delete(o);
        return PWB_ENOMEM;
    }
    sched_job *const js[1] = {(sched_job *)j};
    cJSON_AddItemToObject(o, "usage", usage_of(js, 1));
    return emit(o, out, "data: ", "\n\n");
}

int api_error_json(pwb_buf *out, const char *type, const char *msg, const char *param, const char *code)
{
    cJSON *o = cJSON_CreateObject(), *er = o ? cJSON_AddObjectToObject(o, "error") : NULL;
    if (!er) {
        cJSON_Delete(o);
        return PWB_ENOMEM;
    }
    cJSON_AddStringToObject(er, "message", msg ? msg : "error");
    cJSON_AddStringToObject(er, "type", type ? type : "invalid_request_error");
    if (param && *param)
        cJSON_AddStringToObject(er, "param", param);
    else
        cJSON_AddNullToObject(er, "param");
    if (code && *code)
        cJSON_AddStringToObject(er, "code", code);
    else
        cJSON_AddNullToObject(er, "code");
    return emit(o, out, "", "");
}

int api_models_json(const adapter_set *ads, long created, pwb_buf *out)
{
    cJSON *o = cJSON_CreateObject(), *data = o ? cJSON_AddArrayToObject(o, "data") : NULL;
    if (!data) {
        cJSON_Delete(o);
        return PWB_ENOMEM;
    }
    cJSON_AddStringToObject(o, "object", "list");
    for (int i = 0; i < ads->n; i++) {
        const adapter *ad = &ads->items[i];
        cJSON *m = cJSON_CreateObject();
        cJSON_AddItemToArray(data, m);
        cJSON_AddStringToObject(m, "id", ad->name);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", (double)created);
        cJSON_AddStringToObject(m, "owned_by", "pwb");
        cJSON_AddStringToObject(m, "kind", adapter_kind_name(ad->kind));
        if (adapter_positions(ad) > 0)
            cJSON_AddNumberToObject(m, "virtual_tokens", adapter_positions(ad));
        if (ad->kind == ADAPTER_LORA)
            cJSON_AddNumberToObject(m, "r", ad->lora.r);
        if (i > 0)
            cJSON_AddStringToObject(m, "parent", "base");
    }
    return emit(o, out, "", "");
}
