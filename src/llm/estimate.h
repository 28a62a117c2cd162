/* Token estimates.
 *
 * At send time (rate limits, the cost guard) every provider uses the same cheap rule: a token per
 * 4 bytes of text, plus a few tokens per chat message for its role markers. For a dry run,
 * llm_counter counts the way the model will: with the model's own tokenizer where pwb has it (the
 * local engine's model, or the file an HTTP model names in cfg->tokenizer: a tokenizer.json, a
 * GGUF or a Hugging Face folder), rendering chat messages with the model's chat template (or
 * cfg->chat_template) as a llama.cpp server or the local engine does; else by the rule above. */
#ifndef PWB_LLM_ESTIMATE_H
#define PWB_LLM_ESTIMATE_H

#include <stddef.h>

#include "llm/backend.h"
#include "llm/prices.h"
#include "util/err.h"

#define LLM_EST_BYTES_PER_TOKEN 4
#define LLM_EST_MSG_TOKENS 4     /* a chat message's role markers */
#define LLM_EST_REPLY_TOKENS 3   /* the assistant turn a chat prompt opens */
#define LLM_EST_DEFAULT_OUT 1024 /* assumed most a request without max_tokens generates */

/* ceil(bytes / 4) */
double llm_text_tokens_estimate(size_t bytes);
/* The rule above for one request as one HTTP call: prompt tokens, and the most it may generate
 * (max_tokens, else LLM_EST_DEFAULT_OUT). LLM_RANK counts the prompt once per choice plus the
 * choices, and 1 generated token per choice (a rank over /v1/completions sends max_tokens 1). */
void llm_request_estimate(const llm_request *r, double *tokens_in, double *tokens_out_max);

typedef struct llm_counter llm_counter;

/* For cfg's model (provider "local": cfg->model; HTTP: cfg->tokenizer, when given). A tokenizer
 * that cannot be loaded is an error (the suite named it), not a silent fallback. */
int llm_counter_open(llm_counter **out, const llm_config *cfg, pwb_err *e);
void llm_counter_free(llm_counter *c);
/* 1 when counting with the model's tokenizer, 0 for the bytes/4 rule. */
int llm_counter_exact(const llm_counter *c);
/* "tokenizer <path>" or "bytes/4", for the dry-run table. */
const char *llm_counter_method(const llm_counter *c);
/* Prompt tokens of one request as the model sees it (for LLM_RANK: of its prompt alone). */
int llm_counter_prompt_tokens(llm_counter *c, const llm_request *r, long *tokens, pwb_err *e);

typedef struct llm_estimate {
    long requests;         /* llm_requests */
    long calls;            /* HTTP requests (a rank over /v1/completions sends one per choice) */
    double tokens_in;      /* prompt tokens the model will be sent */
    double tokens_out_max; /* the most it may generate: max_tokens (LLM_EST_DEFAULT_OUT when 0) */
    double cost_usd;       /* tokens_in and tokens_out_max at price: an upper bound for generation */
} llm_estimate;

/* Adds the estimate of reqs[0..n) to est (zero it first); price may be NULL (cost 0). Sends
 * nothing. A request that cannot be rendered (bad chat template role) is an error. */
int llm_counter_add(llm_counter *c, const llm_request *reqs, size_t n, const llm_price *price, llm_estimate *est,
                    pwb_err *e);

#endif
