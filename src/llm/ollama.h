/* Ollama's native chat API: POST {base_url}/api/chat (base_url default http://127.0.0.1:11434).
 * Sends model, messages, "stream" (Ollama streams unless told not to) and options: temperature,
 * top_p (when in (0, 1]), seed, num_predict (max_tokens, when > 0), stop. Reads message.content,
 * done_reason, and usage from prompt_eval_count / eval_count (-1 when absent: Ollama leaves
 * prompt_eval_count out when the whole prompt came from its cache). Streamed replies are NDJSON,
 * one object a line, the last with "done": true. No ranking (LLM_RANK). */
#ifndef PWB_LLM_OLLAMA_H
#define PWB_LLM_OLLAMA_H

#include <stddef.h>

#include "llm/backend.h"
#include "util/buf.h"
#include "util/err.h"

int llm_ollama_create(llm_backend **out, const llm_config *cfg, pwb_err *e);

int ollama_build(const char *model, int stream, const llm_request *r, pwb_buf *out, pwb_err *e);
/* A whole reply; PWB_EPARSE when not JSON, PWB_EHTTP for an error object or a wrong shape. */
int ollama_parse_reply(const char *body, size_t len, llm_response *r, pwb_err *e);
/* An NDJSON stream (a single object is parsed as a whole reply); PWB_EPARSE when a line is not
 * JSON or the stream ends before "done": true. */
int ollama_parse_stream(const char *body, size_t len, llm_response *r, pwb_err *e);
int ollama_first_token(const char *data, size_t len);

#endif
