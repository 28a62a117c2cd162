/* Anthropic's Messages API: POST {base_url}/v1/messages (base_url default
 * https://api.anthropic.com) with "x-api-key: <key>" and "anthropic-version: 2023-06-01".
 *
 * System messages go to the top-level "system" field (joined with blank lines); the others must be
 * "user" or "assistant". max_tokens is required by the API: a request without one sends
 * cfg->default_max_tokens (1024). Sends temperature, top_p (when in (0, 1)), stop_sequences (the
 * API rejects whitespace-only ones, so those are applied to the text here instead); no seed (the
 * API has none). Reads the text blocks of "content", stop_reason (end_turn and stop_sequence read
 * as "stop", max_tokens as "length") and usage: input_tokens plus the cache's read and creation
 * tokens as tokens_in, cache_read_input_tokens as tokens_cached_in, output_tokens. Streamed
 * replies are SSE (message_start, content_block_delta, message_delta, message_stop). No ranking. */
#ifndef PWB_LLM_ANTHROPIC_H
#define PWB_LLM_ANTHROPIC_H

#include <stddef.h>

#include "llm/backend.h"
#include "util/buf.h"
#include "util/err.h"

#define ANTHROPIC_VERSION "2023-06-01"

int llm_anthropic_create(llm_backend **out, const llm_config *cfg, pwb_err *e);

int anthropic_build(const char *model, int stream, int default_max_tokens, const llm_request *r, pwb_buf *out,
                    pwb_err *e);
/* PWB_EPARSE when not JSON, PWB_EHTTP for an error object or a wrong shape. */
int anthropic_parse_reply(const char *body, size_t len, llm_response *r, pwb_err *e);
/* An SSE stream (a single JSON object is parsed as a whole reply); PWB_EPARSE when an event is not
 * JSON or the stream ends before message_stop; PWB_EHTTP for an error event. */
int anthropic_parse_stream(const char *body, size_t len, llm_response *r, pwb_err *e);
int anthropic_first_token(const char *data, size_t len);

#endif
