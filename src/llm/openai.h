/* OpenAI-compatible HTTP backends: "openai" posts {base_url}/chat/completions, "openai-completions"
 * posts {base_url}/completions. Works with OpenAI, vLLM, llama.cpp's llama-server, Ollama's /v1. */
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

#endif
