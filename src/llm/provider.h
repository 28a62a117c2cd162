/* The providers a model may name, one row each, as curl's Curl_scheme table describes each
 * protocol once: the name, the backend's constructor, the default base URL, how the key is sent,
 * the variable people keep it in, and what the backend can do. llm_backend_create dispatches on
 * it, llm_config_resolve applies its URLs and keys, and the suite parser checks names against it.
 *
 * Two kinds of row: a wire protocol (local, openai, openai-completions, ollama, anthropic), whose
 * backend is its own file, and a preset (vllm, groq, ...): an OpenAI-compatible server that a model
 * names as its provider, or as the preset of provider openai or openai-completions; "openai" is
 * both. Adding an HTTP provider: an OpenAI-compatible server is one preset row in provider.c; a new
 * wire protocol is its file (request builder, reply parser and constructor over remote_backend,
 * see remote.h) and its row. */
#ifndef PWB_LLM_PROVIDER_H
#define PWB_LLM_PROVIDER_H

#include <stddef.h>

#include "llm/backend.h"
#include "util/buf.h"

enum llm_provider_flag {
    LLM_PROVIDER_RANKS = 1 << 0,        /* can rank labels (LLM_RANK) */
    LLM_PROVIDER_PRESET = 1 << 1,       /* an OpenAI-compatible server: may be named as a preset */
    LLM_PROVIDER_TAKES_PRESET = 1 << 2, /* its base URL and key come from a preset, when one is named */
    LLM_PROVIDER_PROMPT = 1 << 3,       /* sends a prompt, not chat messages (messages only through a
                                         * chat_template) */
};

typedef struct llm_provider {
    const char *name;      /* as a suite's provider (or preset) names it: "groq" */
    const char *protocol;  /* the wire protocol row whose backend it uses: itself, or "openai" */
    int (*create)(llm_backend **out, const llm_config *cfg, pwb_err *e);
    const char *base_url;  /* the default base URL; NULL: the model gives one (local: none) */
    const char *auth;      /* the header that carries the key; NULL: "Authorization: Bearer" */
    const char *key_env;   /* where people usually keep the key, for messages; NULL: keyless */
    unsigned flags;        /* enum llm_provider_flag */
} llm_provider;

/* NULL when name (may be NULL) is no provider. */
const llm_provider *llm_provider_find(const char *name);
/* Every row, for help text and tests. */
const llm_provider *llm_provider_list(size_t *n);
/* A name a model may give as the preset of provider openai / openai-completions. */
int llm_preset_known(const char *name);
/* 1 when a model of this provider (and preset, may be NULL) needs no base_url of its own. */
int llm_provider_has_default_url(const char *provider, const char *preset);
/* Copies cfg into out with its provider's row applied: a preset named as provider becomes its
 * protocol ("groq": provider "openai", preset "groq"); base_url defaults to the preset's (provider
 * "ollama": http://127.0.0.1:11434, "anthropic": https://api.anthropic.com); a hosted preset's
 * endpoint without api_key_env is an error that names the usual variable. The strings still
 * belong to cfg or are static. PWB_EINVAL for an unknown preset. The runner resolves before it
 * keys its response cache, so that the base URL a preset implies is part of the key. */
int llm_config_resolve(const llm_config *cfg, llm_config *out, pwb_err *e);

/* The names for messages: the wire protocols ("local, openai, ...") or the presets. */
void llm_provider_names(pwb_buf *out, int presets);

#endif
