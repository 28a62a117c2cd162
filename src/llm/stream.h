/* Streamed replies, read once the transfer is complete: server-sent events (OpenAI, Anthropic:
 * "event:" and "data:" lines, events separated by a blank line, data lines of one event joined
 * with '\n') and NDJSON (Ollama: one JSON object a line). The bodies are capped by http.c; the
 * events are untrusted text that the provider parses. */
#ifndef PWB_LLM_STREAM_H
#define PWB_LLM_STREAM_H

#include <stddef.h>

#define STREAM_MAX_EVENTS 1000000

/* Called for each event (event: its "event:" name or NULL; data NUL-terminated, len bytes).
 * A non-zero return stops the walk and is returned. */
typedef int (*stream_event_fn)(void *ctx, const char *event, const char *data, size_t len);

/* Walks the SSE events of body[0..len): comments (':') and fields other than event/data are
 * skipped; an event without data is not delivered; a last event without its blank line is. */
int sse_each(const char *body, size_t len, stream_event_fn fn, void *ctx);
/* Walks the non-blank lines of body[0..len) (event NULL). */
int ndjson_each(const char *body, size_t len, stream_event_fn fn, void *ctx);

/* For the incremental first-token check: calls fn for each "data:" line (SSE) or each line
 * (NDJSON) of the complete lines in data[0..len), as above, until fn returns non-zero. */
int stream_lines_each(int sse, const char *data, size_t len, stream_event_fn fn, void *ctx);

#endif
