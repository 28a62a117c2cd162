/* Backend dispatch (through the provider table, provider.h), config defaults, the request checks
 * every provider shares and response lifetime: the parts of backend.h not tied to one provider. */
#include "llm/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm/provider.h"
#include "util/buf.h"

void llm_response_clear(llm_response *r)
{
    if (!r)
        return;
    free(r->text);
    free(r->error);
    free(r->choice_logprob);
    free(r->embedding);
    free(r->finish_reason);
    memset(r, 0, sizeof *r);
}

void llm_config_defaults(llm_config *c)
{
    memset(c, 0, sizeof *c);
    c->provider = "openai";
    c->concurrency = 4;
    c->timeout_s = 60.0;
    c->max_retries = 4;
    c->backoff_base_s = 0.5;
    c->backoff_max_s = 30.0;
    c->threads = 0; /* local: 0 = one per core */
    c->batch = 8;
}

int llm_backend_create(llm_backend **out, const llm_config *cfg, pwb_err *e)
{
    *out = NULL;
    if (!cfg || !cfg->provider || !*cfg->provider)
        return err_set(e, PWB_EINVAL, "model%s%s: no provider given", cfg && cfg->name ? " " : "",
                       cfg && cfg->name ? cfg->name : "");
    llm_config rc;
    int r = llm_config_resolve(cfg, &rc, e);
    if (r)
        return r;
    const llm_provider *p = llm_provider_find(rc.provider);
    if (p)
        return p->create(out, &rc, e);
    pwb_buf known, presets;
    buf_init(&known);
    buf_init(&presets);
    llm_provider_names(&known, 0);
    llm_provider_names(&presets, 1);
    err_set(e, PWB_EUNSUP, "model %s: unknown provider '%.64s' (known: %s, and the presets %s)",
            cfg->name ? cfg->name : "?", rc.provider, known.data ? known.data : "", presets.data ? presets.data : "");
    buf_free(&known);
    buf_free(&presets);
    return PWB_EUNSUP;
}

int llm_request_check(const llm_request *r, pwb_err *e)
{
    if (r->mode == LLM_EMBED)
        return err_set(e, PWB_EUNSUP, "embeddings come from the local engine or an OpenAI-compatible /embeddings "
                       "endpoint");
    if (r->mode != LLM_GENERATE && r->mode != LLM_RANK)
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

void llm_backend_free(llm_backend *b)
{
    if (b && b->destroy)
        b->destroy(b);
}
