/* The provider table and what is read from it: dispatch names, presets, default URLs and keys.
 * See provider.h. */
#include "llm/provider.h"

#include <string.h>

#include "llm/anthropic.h"
#include "llm/local.h"
#include "llm/ollama.h"
#include "llm/openai.h"

enum { RANKS = LLM_PROVIDER_RANKS, PRESET = LLM_PROVIDER_PRESET, TAKES = LLM_PROVIDER_TAKES_PRESET,
       PROMPT = LLM_PROVIDER_PROMPT };

static const llm_provider g_providers[] = {
    /* name, protocol, constructor, default base URL, key header, key variable, flags */
    {"local", "local", llm_local_create, NULL, NULL, NULL, RANKS},
    {"openai", "openai", llm_openai_create, "https://api.openai.com/v1", NULL, "OPENAI_API_KEY", PRESET | TAKES},
    {"openai-completions", "openai-completions", llm_openai_create, NULL, NULL, NULL, RANKS | TAKES | PROMPT},
    {"ollama", "ollama", llm_ollama_create, "http://127.0.0.1:11434", NULL, NULL, 0},
    {"anthropic", "anthropic", llm_anthropic_create, "https://api.anthropic.com", "x-api-key", "ANTHROPIC_API_KEY", 0},
    {"vllm", "openai", llm_openai_create, "http://127.0.0.1:8000/v1", NULL, NULL, PRESET},
    {"llamacpp", "openai", llm_openai_create, "http://127.0.0.1:8080/v1", NULL, NULL, PRESET},
    {"ollama-openai", "openai", llm_openai_create, "http://127.0.0.1:11434/v1", NULL, NULL, PRESET},
    {"openrouter", "openai", llm_openai_create, "https://openrouter.ai/api/v1", NULL, "OPENROUTER_API_KEY", PRESET},
    {"together", "openai", llm_openai_create, "https://api.together.xyz/v1", NULL, "TOGETHER_API_KEY", PRESET},
    {"groq", "openai", llm_openai_create, "https://api.groq.com/openai/v1", NULL, "GROQ_API_KEY", PRESET},
};

#define N_PROVIDERS (sizeof g_providers / sizeof g_providers[0])

const llm_provider *llm_provider_list(size_t *n)
{
    *n = N_PROVIDERS;
    return g_providers;
}

const llm_provider *llm_provider_find(const char *name)
{
    for (size_t i = 0; name && i < N_PROVIDERS; i++)
        if (strcmp(g_providers[i].name, name) == 0)
            return &g_providers[i];
    return NULL;
}

int llm_preset_known(const char *name)
{
    const llm_provider *p = llm_provider_find(name);
    return p && (p->flags & LLM_PROVIDER_PRESET);
}

int llm_provider_has_default_url(const char *provider, const char *preset)
{
    const llm_provider *p = llm_provider_find(provider);
    if (!p)
        return 0;
    if (p->flags & LLM_PROVIDER_TAKES_PRESET)
        return llm_preset_known(preset);
    return p->base_url != NULL;
}

void llm_provider_names(pwb_buf *out, int presets)
{
    const char *sep = "";
    for (size_t i = 0; i < N_PROVIDERS; i++) {
        const llm_provider *p = &g_providers[i];
        if (presets ? !(p->flags & LLM_PROVIDER_PRESET) : strcmp(p->protocol, p->name) != 0)
            continue;
        buf_printf(out, "%s%s", sep, p->name);
        sep = ", ";
    }
}

int llm_config_resolve(const llm_config *cfg, llm_config *out, pwb_err *e)
{
    *out = *cfg;
    const char *name = cfg->name ? cfg->name : "model";
    const char *pname = cfg->provider;
    if (!pname || !*pname)
        return err_set(e, PWB_EINVAL, "model %s: no provider given", name);
    const llm_provider *p = llm_provider_find(pname), *pr = NULL;
    if (p && (p->flags & LLM_PROVIDER_TAKES_PRESET)) {
        if (cfg->preset && *cfg->preset) {
            pr = llm_provider_find(cfg->preset);
            if (!llm_preset_known(cfg->preset)) {
                pwb_buf known;
                buf_init(&known);
                llm_provider_names(&known, 1);
                err_set(e, PWB_EINVAL, "model %s: unknown OpenAI-compatible preset '%.64s' (known: %s)", name,
                        cfg->preset, known.data ? known.data : "");
                buf_free(&known);
                return PWB_EINVAL;
            }
        }
    } else if (p && p->base_url) {
        /* a preset (or a protocol with a usual address) named as the provider */
        pr = p;
        out->provider = p->protocol;
        out->preset = p->name;
    }
    int hosted = 0; /* the preset's own (hosted) endpoint, which wants a key; a base_url of the
                     * user's own (a proxy, a test server) may not */
    if (pr && (!out->base_url || !*out->base_url)) {
        out->base_url = pr->base_url;
        hosted = 1;
    }
    if (hosted && pr->key_env && (!cfg->api_key_env || !*cfg->api_key_env))
        return err_set(e, PWB_EINVAL,
                       "model %s: %s needs an API key: name its environment variable in api_key_env (e.g. %s)", name,
                       pr->name, pr->key_env);
    return PWB_OK;
}
