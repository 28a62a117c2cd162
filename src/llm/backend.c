/* Backend dispatch, config defaults and response lifetime: the parts of backend.h that are not
 * tied to one provider. */
#include "llm/backend.h"

#include <stdlib.h>
#include <string.h>

#include "llm/anthropic.h"
#include "llm/ollama.h"
#include "llm/openai.h"
#include "llm/remote.h"

#if defined(__has_include)
#if __has_include("llm/local.h")
#include "llm/local.h"
#define PWB_HAVE_LOCAL_H 1
#endif
#endif
#ifndef PWB_HAVE_LOCAL_H
/* The local-engine adapter (src/llm/local.c); declared here until its header lands. */
int llm_local_create(llm_backend **out, const llm_config *cfg, pwb_err *e);
#endif

void llm_response_clear(llm_response *r)
{
    if (!r)
        return;
    free(r->text);
    free(r->error);
    free(r->choice_logprob);
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
    const char *p = rc.provider;
    if (strcmp(p, "openai") == 0 || strcmp(p, "openai-completions") == 0)
        return llm_openai_create(out, &rc, e);
    if (strcmp(p, "ollama") == 0)
        return llm_ollama_create(out, &rc, e);
    if (strcmp(p, "anthropic") == 0)
        return llm_anthropic_create(out, &rc, e);
    if (strcmp(p, "local") == 0)
        return llm_local_create(out, cfg, e);
    return err_set(e, PWB_EUNSUP,
                   "model %s: unknown provider '%.64s' (known: openai, openai-completions, ollama, anthropic, local, "
                   "and the presets vllm, llamacpp, ollama-openai, openrouter, together, groq)",
                   cfg->name ? cfg->name : "?", p);
}

void llm_backend_free(llm_backend *b)
{
    if (b && b->destroy)
        b->destroy(b);
}
