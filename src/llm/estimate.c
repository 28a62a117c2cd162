/* Token estimates: the bytes/4 rule and the dry run's counter. See estimate.h. */
#include "llm/estimate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "util/buf.h"
#include "util/str.h"

double llm_text_tokens_estimate(size_t bytes)
{
    return (double)((bytes + LLM_EST_BYTES_PER_TOKEN - 1) / LLM_EST_BYTES_PER_TOKEN);
}

static size_t slen(const char *s) { return s ? strlen(s) : 0; }

/* Prompt tokens by the rule: messages with their markers, or the raw prompt. */
static double prompt_rule(const llm_request *r)
{
    if (r->n_messages > 0 && r->messages) {
        double t = LLM_EST_REPLY_TOKENS;
        for (int k = 0; k < r->n_messages; k++)
            t += LLM_EST_MSG_TOKENS + llm_text_tokens_estimate(slen(r->messages[k].content));
        return t;
    }
    return llm_text_tokens_estimate(slen(r->prompt));
}

void llm_request_estimate(const llm_request *r, double *tokens_in, double *tokens_out_max)
{
    double p = prompt_rule(r);
    if (r->mode == LLM_RANK && r->n_choices > 0 && r->choices) {
        double t = 0;
        for (int k = 0; k < r->n_choices; k++)
            t += p + llm_text_tokens_estimate(slen(r->choices[k]));
        *tokens_in = t;
        *tokens_out_max = r->n_choices;
        return;
    }
    *tokens_in = p;
    *tokens_out_max = r->max_tokens > 0 ? r->max_tokens : LLM_EST_DEFAULT_OUT;
}

/* ---- the dry run's counter ---- */

struct llm_counter {
    model *m;             /* owns tok and the template text when loaded from a model file */
    tokenizer *own_tok;   /* from a tokenizer.json */
    const tokenizer *tok; /* NULL: the bytes/4 rule */
    chat_template ct;
    int have_ct;
    int completions;      /* prompts are sent raw (openai-completions) */
    int local;            /* the local engine: a rank scores the prompt once */
    char method[320];
    pwb_buf text;
};

int llm_counter_open(llm_counter **out, const llm_config *cfg, pwb_err *e)
{
    *out = NULL;
    llm_counter *c = calloc(1, sizeof *c);
    if (!c)
        return err_set(e, PWB_ENOMEM, "out of memory");
    buf_init(&c->text);
    const char *prov = cfg->provider ? cfg->provider : "";
    c->local = strcmp(prov, "local") == 0;
    c->completions = strcmp(prov, "openai-completions") == 0;
    const char *path = c->local ? cfg->model : cfg->tokenizer;
    const char *name = cfg->name ? cfg->name : "model";
    int rc = PWB_OK;
    if (path && *path) {
        if (str_ends(path, ".json")) {
            rc = tokenizer_from_json(&c->own_tok, path, e);
            c->tok = c->own_tok;
        } else {
            rc = model_load(&c->m, path, e);
            c->tok = c->m ? c->m->tok : NULL;
        }
        if (rc) {
            err_prefix(e, "%s: tokenizer: ", name);
            llm_counter_free(c);
            return rc;
        }
        const char *jinja = c->m ? c->m->chat_template : NULL;
        /* The local engine always renders with a template, "none" (contents joined by blank
         * lines) when the model has none: count the same text, not the rule's role markers. */
        if (jinja || (cfg->chat_template && *cfg->chat_template) || c->local) {
            pwb_err te;
            err_clear(&te);
            rc = chat_template_init(&c->ct, jinja, cfg->chat_template, &te);
            if (rc == PWB_OK)
                c->have_ct = 1;
            else if (cfg->chat_template && *cfg->chat_template) {
                err_set(e, rc, "%s: %s", name, te.msg);
                llm_counter_free(c);
                return rc;
            }
            /* a model template pwb does not recognise: count the messages by the rule */
        }
        snprintf(c->method, sizeof c->method, "tokenizer %.300s", path);
    } else {
        snprintf(c->method, sizeof c->method, "bytes/%d", LLM_EST_BYTES_PER_TOKEN);
    }
    *out = c;
    return PWB_OK;
}

void llm_counter_free(llm_counter *c)
{
    if (!c)
        return;
    if (c->have_ct)
        chat_template_free(&c->ct);
    tokenizer_free(c->own_tok);
    model_free(c->m);
    buf_free(&c->text);
    free(c);
}

int llm_counter_exact(const llm_counter *c) { return c && c->tok; }
const char *llm_counter_method(const llm_counter *c) { return c ? c->method : "bytes/4"; }

static int count_text(llm_counter *c, const char *text, size_t n, int add_special, long *out, pwb_err *e)
{
    int32_t *ids = NULL;
    size_t k = 0;
    if (tokenizer_encode(c->tok, text, n, add_special, 1, &ids, &k, e) < 0)
        return e && e->code ? e->code : PWB_EPARSE;
    free(ids);
    *out = (long)k;
    return PWB_OK;
}

/* The prompt text the model sees, into c->text; 0 when it is counted another way (messages
 * without a template). */
static int render(llm_counter *c, const llm_request *r, int *rendered, pwb_err *e)
{
    buf_reset(&c->text);
    *rendered = 1;
    if (r->n_messages <= 0 || !r->messages)
        return buf_puts(&c->text, r->prompt ? r->prompt : "") ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    if (c->have_ct) {
        chat_msg stack[16], *msgs = r->n_messages <= 16 ? stack : malloc((size_t)r->n_messages * sizeof *msgs);
        if (!msgs)
            return err_set(e, PWB_ENOMEM, "out of memory");
        for (int i = 0; i < r->n_messages; i++)
            msgs[i] = (chat_msg){.role = r->messages[i].role, .content = r->messages[i].content};
        int rc = chat_render(&c->ct, msgs, (size_t)r->n_messages, 1, &c->text, e);
        if (msgs != stack)
            free(msgs);
        return rc;
    }
    if (c->completions) {
        /* what openai.c sends: the contents joined with blank lines */
        for (int k = 0; k < r->n_messages; k++)
            if ((k && buf_puts(&c->text, "\n\n")) || buf_puts(&c->text, r->messages[k].content ? r->messages[k].content : ""))
                return err_set(e, PWB_ENOMEM, "out of memory");
        return PWB_OK;
    }
    *rendered = 0;
    return PWB_OK;
}

int llm_counter_prompt_tokens(llm_counter *c, const llm_request *r, long *tokens, pwb_err *e)
{
    *tokens = 0;
    if (!c->tok) {
        *tokens = (long)prompt_rule(r);
        return PWB_OK;
    }
    int rendered;
    int rc = render(c, r, &rendered, e);
    if (rc)
        return rc;
    if (rendered)
        return count_text(c, c->text.data ? c->text.data : "", c->text.len, 1, tokens, e);
    long t = LLM_EST_REPLY_TOKENS;
    for (int k = 0; k < r->n_messages; k++) {
        long m = 0;
        const char *s = r->messages[k].content ? r->messages[k].content : "";
        if ((rc = count_text(c, s, strlen(s), 0, &m, e)))
            return rc;
        t += LLM_EST_MSG_TOKENS + m;
    }
    *tokens = t;
    return PWB_OK;
}

/* Tokens of prompt + choice as one text (how a completions server sees a rank call). */
static int rank_call_tokens(llm_counter *c, const llm_request *r, const char *choice, double *out, pwb_err *e)
{
    if (!c->tok) {
        *out = prompt_rule(r) + llm_text_tokens_estimate(slen(choice));
        return PWB_OK;
    }
    int rendered;
    int rc = render(c, r, &rendered, e);
    if (rc)
        return rc;
    long t = 0;
    if (!rendered) {
        long p = 0, ch = 0;
        if ((rc = llm_counter_prompt_tokens(c, r, &p, e)) ||
            (rc = count_text(c, choice ? choice : "", slen(choice), 0, &ch, e)))
            return rc;
        *out = (double)(p + ch);
        return PWB_OK;
    }
    if (buf_puts(&c->text, choice ? choice : ""))
        return err_set(e, PWB_ENOMEM, "out of memory");
    if ((rc = count_text(c, c->text.data, c->text.len, 1, &t, e)))
        return rc;
    *out = (double)t;
    return PWB_OK;
}

int llm_counter_add(llm_counter *c, const llm_request *reqs, size_t n, const llm_price *price, llm_estimate *est,
                    pwb_err *e)
{
    for (size_t i = 0; i < n; i++) {
        const llm_request *r = &reqs[i];
        double in = 0, out = 0;
        long calls = 1;
        int rc = PWB_OK;
        if (r->mode == LLM_RANK && c->completions && r->n_choices > 0 && r->choices) {
            calls = r->n_choices;
            for (int k = 0; k < r->n_choices && !rc; k++) {
                double t = 0;
                rc = rank_call_tokens(c, r, r->choices[k], &t, e);
                in += t;
            }
            out = r->n_choices;
        } else {
            long p = 0;
            rc = llm_counter_prompt_tokens(c, r, &p, e);
            in = (double)p;
            out = r->mode == LLM_RANK ? 0 : r->max_tokens > 0 ? r->max_tokens : LLM_EST_DEFAULT_OUT;
        }
        if (rc)
            return err_prefix(e, "request %zu: ", i);
        est->requests++;
        est->calls += calls;
        est->tokens_in += in;
        est->tokens_out_max += out;
        est->cost_usd += llm_estimate_cost(price, in, out, 0);
    }
    return PWB_OK;
}
