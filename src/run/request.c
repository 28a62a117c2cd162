#include "run/request.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tune/method.h"
#include "util/json.h"
#include "util/sha256.h"
#include "util/str.h"

int req_cacheable(const llm_request *r)
{
    /* vectors nobody named cannot be told apart from other vectors, or from none */
    if ((r->n_prefix_embeds > 0 || r->adapter) && (!r->prefix_id || !r->prefix_id[0]))
        return 0;
    return r->temperature == 0.0;
}

static int add_str(cJSON *o, const char *k, const char *v)
{
    return (v ? cJSON_AddStringToObject(o, k, v) : cJSON_AddNullToObject(o, k)) ? 0 : -1;
}

int req_canonical(const llm_config *cfg, const llm_request *r, pwb_buf *out)
{
    cJSON *o = cJSON_CreateObject();
    int bad = !o;
    bad = bad || !cJSON_AddNumberToObject(o, "v", 1);
    bad = bad || add_str(o, "provider", cfg->provider);
    bad = bad || add_str(o, "base_url", cfg->base_url);
    bad = bad || add_str(o, "model", cfg->model);
    if (cfg->chat_template)
        bad = bad || add_str(o, "chat_template", cfg->chat_template);
    bad = bad || add_str(o, "mode", r->mode == LLM_RANK ? "rank" : r->mode == LLM_EMBED ? "embed" : "generate");
    /* only when there is one: hard-prompt keys stay what they were */
    if (r->n_prefix_embeds > 0) {
        bad = bad || add_str(o, "soft_prompt", r->prefix_id);
        bad = bad || !cJSON_AddNumberToObject(o, "soft_tokens", r->n_prefix_embeds);
    }
    if (r->adapter) {
        bad = bad || add_str(o, "adapter", tune_method_name(r->adapter->kind));
        bad = bad || add_str(o, "adapter_sha256", r->prefix_id);
    }
    if (!bad && r->n_messages > 0) {
        cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
        bad = !msgs;
        for (int i = 0; !bad && i < r->n_messages; i++) {
            cJSON *m = cJSON_CreateObject();
            bad = !m || add_str(m, "role", r->messages[i].role) || add_str(m, "content", r->messages[i].content);
            if (m && !cJSON_AddItemToArray(msgs, m)) {
                cJSON_Delete(m);
                bad = 1;
            }
        }
    } else if (!bad) {
        bad = add_str(o, "prompt", r->prompt);
    }
    bad = bad || !cJSON_AddNumberToObject(o, "max_tokens", r->max_tokens);
    bad = bad || !cJSON_AddNumberToObject(o, "temperature", r->temperature);
    bad = bad || !cJSON_AddNumberToObject(o, "top_p", r->top_p);
    if (!bad && r->n_stop > 0) {
        cJSON *a = cJSON_CreateStringArray(r->stop, r->n_stop);
        bad = !a || !cJSON_AddItemToObject(o, "stop", a);
    }
    if (!bad && r->mode == LLM_RANK) {
        cJSON *a = cJSON_CreateStringArray(r->choices, r->n_choices);
        bad = !a || !cJSON_AddItemToObject(o, "choices", a);
    }
    buf_reset(out);
    return json_append(out, o, bad);
}

int req_cache_key(const llm_config *cfg, const llm_request *r, char key[65], pwb_buf *scratch)
{
    if (req_canonical(cfg, r, scratch))
        return -1;
    sha256_hex(scratch->data, scratch->len, key);
    return 0;
}

int resp_encode(const llm_response *r, int n_choices, pwb_buf *out)
{
    cJSON *o = cJSON_CreateObject();
    int bad = !o;
    bad = bad || add_str(o, "text", r->text);
    bad = bad || !cJSON_AddNumberToObject(o, "tokens_in", r->tokens_in);
    bad = bad || !cJSON_AddNumberToObject(o, "tokens_out", r->tokens_out);
    /* only when there were some: entries stay as they were for providers without a prompt cache */
    if (r->tokens_cached_in > 0)
        bad = bad || !cJSON_AddNumberToObject(o, "tokens_cached_in", r->tokens_cached_in);
    bad = bad || !cJSON_AddNumberToObject(o, "latency_s", r->latency_s);
    bad = bad || !cJSON_AddNumberToObject(o, "cpu_s", r->cpu_s);
    bad = bad || !cJSON_AddNumberToObject(o, "http_status", r->http_status);
    bad = bad || add_str(o, "finish_reason", r->finish_reason);
    if (!bad && r->choice_logprob && n_choices > 0) {
        bad = !cJSON_AddNumberToObject(o, "choice", r->choice);
        cJSON *a = bad ? NULL : cJSON_CreateDoubleArray(r->choice_logprob, n_choices);
        bad = bad || !a || !cJSON_AddItemToObject(o, "choice_logprob", a);
    }
    buf_reset(out);
    return json_append(out, o, bad);
}

/* The cache is our own file, but a damaged or foreign row must not crash us: any surprise is a
 * miss. */
int resp_decode(const char *json, int n_choices, llm_response *out)
{
    memset(out, 0, sizeof *out);
    cJSON *o = cJSON_Parse(json);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return -1;
    }
    int bad = 0;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
    if (cJSON_IsString(t))
        bad = !(out->text = str_dup(t->valuestring));
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(o, "finish_reason");
    if (!bad && cJSON_IsString(fr))
        bad = !(out->finish_reason = str_dup(fr->valuestring));
    const cJSON *v;
    out->tokens_in = (v = cJSON_GetObjectItemCaseSensitive(o, "tokens_in")) && cJSON_IsNumber(v) ? v->valueint : -1;
    out->tokens_out = (v = cJSON_GetObjectItemCaseSensitive(o, "tokens_out")) && cJSON_IsNumber(v) ? v->valueint : -1;
    out->tokens_cached_in =
        (v = cJSON_GetObjectItemCaseSensitive(o, "tokens_cached_in")) && cJSON_IsNumber(v) && v->valueint > 0 ? v->valueint : 0;
    out->latency_s = (v = cJSON_GetObjectItemCaseSensitive(o, "latency_s")) && cJSON_IsNumber(v) ? v->valuedouble : 0;
    out->cpu_s = (v = cJSON_GetObjectItemCaseSensitive(o, "cpu_s")) && cJSON_IsNumber(v) ? v->valuedouble : 0;
    out->http_status = (v = cJSON_GetObjectItemCaseSensitive(o, "http_status")) && cJSON_IsNumber(v) ? v->valueint : 0;
    out->choice = -1;
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(o, "choice_logprob");
    if (!bad && n_choices > 0) {
        /* A rank request needs its log-probabilities; without them the entry is useless. */
        if (!cJSON_IsArray(lp) || cJSON_GetArraySize(lp) != n_choices) {
            bad = 1;
        } else {
            out->choice_logprob = calloc((size_t)n_choices, sizeof *out->choice_logprob);
            bad = !out->choice_logprob;
            for (int i = 0; !bad && i < n_choices; i++) {
                const cJSON *x = cJSON_GetArrayItem(lp, i);
                if (!cJSON_IsNumber(x))
                    bad = 1;
                else
                    out->choice_logprob[i] = x->valuedouble;
            }
            v = cJSON_GetObjectItemCaseSensitive(o, "choice");
            out->choice = cJSON_IsNumber(v) && v->valueint >= -1 && v->valueint < n_choices ? v->valueint : -1;
        }
    } else if (!bad && !out->text) {
        bad = 1;
    }
    cJSON_Delete(o);
    if (bad) {
        llm_response_clear(out);
        return -1;
    }
    return 0;
}
