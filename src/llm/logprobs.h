/* Rank classification (LLM_RANK) over HTTP, for servers whose /v1/completions returns the prompt's
 * log-probabilities: vLLM, llama.cpp's server (llama-cpp-python), OpenAI's legacy completions.
 *
 * Each choice is one call: {"prompt": prompt + choice, "echo": true, "logprobs": 1,
 * "max_tokens": 1, "temperature": 0}. (max_tokens 1, not 0: llama-cpp-python reads 0 as "until
 * the context is full", and the one generated token lies past the choice, so it is never
 * counted.) The reply's choices[0].logprobs gives each echoed token's text_offset (in characters,
 * i.e. Unicode code points) and token_logprobs; the choice's score is the sum over the tokens that
 * overlap the choice's characters, which end where the generated tokens begin (the last
 * usage.completion_tokens of them; llama-cpp-python counts offsets in the detokenized text, where
 * special tokens such as <|im_start|> have no length), or, without usage, at the end of the prompt
 * sent. Spaces that end the prompt are moved to
 * the front of the choice ("Answer: " + "positive" scores " positive"), as the local engine does.
 * A server that returns no prompt log-probabilities gets a clear error on the response. */
#ifndef PWB_LLM_LOGPROBS_H
#define PWB_LLM_LOGPROBS_H

#include <signal.h>
#include <stddef.h>

#include "llm/backend.h"
#include "llm/http.h"
#include "llm/openai.h"
#include "util/buf.h"
#include "util/err.h"

/* The body of the call for request r's choice k; *start and *end are the choice's span in code
 * points of the prompt text sent. */
int logprobs_build(const openai_body_opts *bo, const llm_request *r, int k, pwb_buf *body, size_t *start,
                   size_t *end, pwb_err *e);

/* Sums the log-probabilities of the echoed tokens overlapping [start, end) into *logprob (and how
 * many into *n_tokens); usage into r->tokens_in/out when present. PWB_EPARSE when the body is not
 * JSON (retried); PWB_EUNSUP when the server gave no prompt log-probabilities (no echo, or no
 * logprobs); PWB_EHTTP for other wrong shapes. */
int logprobs_parse(const char *body, size_t len, size_t start, size_t end, double *logprob, int *n_tokens,
                   llm_response *r, pwb_err *e);

/* Runs a completions batch in which some requests are LLM_RANK: generation requests as usual, and
 * one call per choice for the others, all through http (so retries, limits, the cost guard and
 * concurrency apply to each call). out[i] of a rank request gets choice_logprob[n_choices],
 * choice (the argmax), tokens summed over its calls, retries summed, latency_s the longest call;
 * a failed call fails its request ("choice k: <error>"). done is called once per request, when
 * its last call completes. Return codes as http_client_run. */
int logprobs_run(http_client *http, const openai_body_opts *bo, const llm_request *reqs, size_t n, llm_response *out,
                 llm_done_fn done, void *done_ctx, volatile sig_atomic_t *stop, pwb_err *e);


#endif
