/* OpenAI-compatible HTTP backends: "openai" posts {base_url}/chat/completions, "openai-completions"
 * posts {base_url}/completions. Works with OpenAI, vLLM, llama.cpp's llama-server, Ollama's /v1,
 * OpenRouter, Together, Groq (presets in remote.h). "openai-completions" also ranks (LLM_RANK)
 * through echo + logprobs (logprobs.h). */
#ifndef PWB_LLM_OPENAI_H
#define PWB_LLM_OPENAI_H

#include <stddef.h>

#include "llm/backend.h"
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

/* ---- added: streaming, rendered completion prompts, ranking ---- */

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
/* The request checks shared by every OpenAI body (mode, messages, temperature, top_p, stop). */
int openai_check_common(const llm_request *r, pwb_err *e);

/* Parses a streamed (SSE) reply: the text of every chunk's choices[0].delta.content (chat) or
 * choices[0].text, the last finish_reason, usage from the final chunk (-1 when absent). A body
 * that is one JSON object is parsed as openai_parse_reply does (a server that does not stream).
 * PWB_EPARSE (retried) when an event is not JSON or the stream ends before "[DONE]" or a
 * finish_reason; PWB_EHTTP for an error event. */
int openai_parse_stream(int chat, const char *body, size_t len, llm_response *r, pwb_err *e);
/* 1 when the complete SSE lines data[0..len) carry a non-empty token (http_ops.first_token). */
int openai_first_token(int chat, const char *data, size_t len);

#endif
