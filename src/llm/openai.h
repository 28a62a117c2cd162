/* OpenAI-compatible HTTP backends: "openai" posts {base_url}/chat/completions, "openai-completions"
 * posts {base_url}/completions. Works with OpenAI, vLLM, llama.cpp's llama-server, Ollama's /v1,
 * OpenRouter, Together, Groq (presets in remote.h). "openai-completions" also ranks (LLM_RANK)
 * through echo + logprobs (logprobs.c, below). */
#ifndef PWB_LLM_OPENAI_H
#define PWB_LLM_OPENAI_H

#include <signal.h>
#include <stddef.h>

#include "llm/backend.h"
#include "llm/http.h"
#include "util/buf.h"
#include "util/err.h"

/* Creates the backend for cfg->provider "openai" or "openai-completions". Reads the API key from
 * getenv(cfg->api_key_env) when api_key_env is set (an unset or empty variable is an error). */
int llm_openai_create(llm_backend **out, const llm_config *cfg, pwb_err *e);

/* Request bodies (JSON) for one request. A chat body from a prompt-only request sends the prompt
 * as one user message; a completion body from a chat request joins the message contents with
 * blank lines. model may be NULL (then no "model" field). LLM_RANK is PWB_EUNSUP. */
int openai_build_chat(const char *model, const llm_request *r, pwb_buf *out, pwb_err *e);
int openai_build_completion(const char *model, const llm_request *r, pwb_buf *out, pwb_err *e);

/* Parses a 2xx reply body into r (text, finish_reason, tokens_in/out; -1 when usage is absent).
 * chat selects choices[0].message.content, else choices[0].text. Returns PWB_EPARSE when the body
 * is not JSON, PWB_EHTTP when it is JSON of the wrong shape or an error object. */
int openai_parse_reply(int chat, const char *body, size_t len, llm_response *r, pwb_err *e);
/* An /embeddings reply: data[0].embedding into r->embedding, usage.prompt_tokens into tokens_in. */
int openai_parse_embedding(const char *body, size_t len, llm_response *r, pwb_err *e);

/* ---- bodies beyond the request: streaming, rendered completion prompts ---- */

struct chat_template;

/* How bodies are built beyond the request itself. */
typedef struct openai_body_opts {
    const char *model;               /* may be NULL */
    int stream;                      /* "stream": true, "stream_options": {"include_usage": true} */
    const struct chat_template *ct;  /* completions: render chat messages with it (NULL: join them
                                      * with blank lines) */
} openai_body_opts;

int openai_build(const openai_body_opts *bo, int chat, const llm_request *r, pwb_buf *out, pwb_err *e);
/* The prompt a completions body carries for r: r->prompt, or the messages rendered/joined. */
int openai_prompt_text(const openai_body_opts *bo, const llm_request *r, pwb_buf *out, pwb_err *e);

/* Parses a streamed (SSE) reply: the text of every chunk's choices[0].delta.content (chat) or
 * choices[0].text, the last finish_reason, usage from the final chunk (-1 when absent). A body
 * that is one JSON object is parsed as openai_parse_reply does (a server that does not stream).
 * PWB_EPARSE (retried) when an event is not JSON or the stream ends before "[DONE]" or a
 * finish_reason; PWB_EHTTP for an error event. */
int openai_parse_stream(int chat, const char *body, size_t len, llm_response *r, pwb_err *e);
/* 1 when the complete SSE lines data[0..len) carry a non-empty token (http_ops.first_token). */
int openai_first_token(int chat, const char *data, size_t len);

/* ---- ranking (logprobs.c): the completions backend's LLM_RANK path ----
 *
 * Rank classification (LLM_RANK) over HTTP, for servers whose /v1/completions returns the prompt's
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
