/* The backend interface: one batch of requests in, one response per request out.
 * Implementations: HTTP (OpenAI-compatible chat and completions) and the local engine.
 * The runner (src/run) owns caching and storage; a backend only talks to its model. */
#ifndef PWB_LLM_BACKEND_H
#define PWB_LLM_BACKEND_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct llm_message {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} llm_message;

enum llm_mode {
    LLM_GENERATE = 0, /* produce text from messages (chat) or prompt (completion) */
    LLM_RANK = 1,     /* score each choice as a continuation; no text generated */
    LLM_EMBED = 2     /* an embedding of prompt (raw text, no chat template): the local engine's
                       * mean-pooled last hidden state, or an OpenAI-compatible /embeddings
                       * endpoint; a call holds embedding requests alone */
};

typedef struct llm_request {
    int mode;
    const llm_message *messages; /* chat form; n_messages > 0 */
    int n_messages;
    const char *prompt;          /* raw completion form, used when n_messages == 0 */
    int max_tokens;
    double temperature;          /* 0 = greedy */
    double top_p;
    uint64_t seed;
    const char *const *stop;
    int n_stop;
    const char *const *choices;  /* LLM_RANK: candidate continuations (e.g. label verbalizers) */
    int n_choices;
    /* Local backend: vectors read before the rendered input (a soft prompt), row-major
     * [n_prefix_embeds][prefix_dim]; prefix_dim must be the model's hidden size. Requests of one
     * call that share them should pass the same pointer (they share its KV). tokens_in counts
     * the rendered input only, not these. */
    const float *prefix_embeds;
    int n_prefix_embeds;
    int prefix_dim;
    const char *prefix_id;       /* what identifies the vectors (sha256 of them): part of the
                                  * response cache's key; a request with vectors but no id is not cached */
    /* Local backend: a LoRA or prefix-tuning adapter (tune/method.h) the model runs with; its
     * identity is prefix_id (sha256 of its values) as for vectors. Requests of one call that share
     * it should pass the same pointer. NULL: none. */
    const struct tune_adapter *adapter;
} llm_request;

typedef struct llm_response {
    char *text;            /* malloc'd generated text (NULL for LLM_RANK or on error) */
    char *error;           /* malloc'd message when the request failed for good, else NULL */
    int http_status;       /* last HTTP status, 0 for local */
    int retries;           /* attempts beyond the first */
    int tokens_in;         /* prompt tokens (usage), -1 if unknown */
    int tokens_out;        /* generated tokens, -1 if unknown */
    double latency_s;      /* wall seconds for this request including retries */
    double cpu_s;          /* CPU seconds spent on it (local backend), 0 otherwise */
    double ttft_s;         /* time to first token when streamed, else 0 */
    double *choice_logprob;/* LLM_RANK: malloc'd [n_choices] summed log-probabilities */
    float *embedding;      /* LLM_EMBED: malloc'd [n_embedding] */
    int n_embedding;
    int choice;            /* LLM_RANK: argmax index, -1 if none */
    char *finish_reason;   /* malloc'd, may be NULL */
    int tokens_cached_in;  /* of tokens_in, read from the provider's prompt cache (billed at the
                            * cached-input price); 0 when none or unknown */
} llm_response;

void llm_response_clear(llm_response *r); /* frees members, zeroes */

/* Called from the backend's thread as each response completes (optional). */
typedef void (*llm_done_fn)(void *ctx, size_t index, const llm_response *r);

typedef struct llm_config {
    const char *name;          /* suite's name for the model */
    const char *provider;      /* "openai" (chat), "openai-completions", "local" */
    const char *base_url;      /* HTTP: e.g. http://127.0.0.1:8080/v1 */
    const char *model;         /* HTTP: model id sent to the server; local: model path */
    const char *api_key_env;   /* name of the env var holding the key; the key itself never stored */
    int concurrency;           /* HTTP in-flight requests */
    double timeout_s;          /* per attempt */
    int max_retries;
    double backoff_base_s;     /* first retry delay; doubles with jitter */
    double backoff_max_s;
    int threads;               /* local: worker threads */
    int batch;                 /* local: examples per forward batch */
    const char *chat_template; /* local: override ("chatml", "llama3", "gemma", "none");
                                * openai-completions: renders chat messages into the prompt */
    /* Remote providers (docs/http-backends.md). Zero values keep the behaviour above. */
    const char *preset;        /* OpenAI-compatible server preset for base_url and auth: "openai",
                                * "vllm", "llamacpp", "ollama-openai", "openrouter", "together",
                                * "groq"; provider may also name one of them (but "openai") */
    int stream;                /* HTTP: stream replies (SSE / NDJSON) and record ttft_s */
    double rpm;                /* HTTP: requests per minute; <= 0: no limit */
    double tpm;                /* HTTP: tokens per minute (prompt + completion); <= 0: no limit */
    int adaptive_concurrency;  /* HTTP: halve concurrency on 429/503, +1 after a round of successes */
    int allow_insecure_key;    /* HTTP: allow sending the key over http:// to a non-loopback host */
    const char *tokenizer;     /* HTTP: tokenizer.json or GGUF that counts this model's tokens (dry run) */
    int default_max_tokens;    /* anthropic: max_tokens sent when a request has none (0: 1024) */
    const struct llm_price *price; /* HTTP: the model's price for the cost guard (caller-owned) */
    struct llm_budget *budget; /* HTTP: the --max-cost guard, shared by a run's models (caller-owned) */
} llm_config;

void llm_config_defaults(llm_config *c);

typedef struct llm_backend llm_backend;
struct llm_backend {
    const char *kind;
    /* Fills out[0..n) (caller zeroes them first). Returns PWB_OK even when individual
     * requests failed (their error field says why); an error return means the batch could not
     * run at all. Checks *stop between requests and returns PWB_EINTR when it is set. */
    int (*run)(llm_backend *b, const llm_request *reqs, size_t n, llm_response *out, llm_done_fn done,
               void *ctx, pwb_err *e);
    void (*destroy)(llm_backend *b);
    volatile sig_atomic_t *stop; /* set by the caller; may be NULL */
    void *impl;
};

/* Creates the backend named by cfg->provider, a row of the provider table (provider.h): "openai",
 * "openai-completions", "ollama", "anthropic", "local", or an OpenAI-compatible preset name
 * (llm_config_resolve). */
int llm_backend_create(llm_backend **out, const llm_config *cfg, pwb_err *e);
void llm_backend_free(llm_backend *b);

/* The checks every provider makes of a request before building its body: mode, messages or
 * prompt, temperature, top_p, stop list. */
int llm_request_check(const llm_request *r, pwb_err *e);

#endif
