/* The OpenAI wire format: request bodies of /v1/completions and /v1/chat/completions read into
 * api_req (hostile input: types, ranges and counts checked, messages for the client), and the
 * replies built from finished scheduler jobs: whole objects, SSE chunks, error objects, the model
 * list.
 *
 * Log-probabilities (completions): with "logprobs": N the reply carries, per token, its text, its
 * log-probability given the tokens before it, the N most likely alternatives and text_offset (in
 * Unicode code points of the returned text). With "echo" the prompt's tokens come first and the
 * first of them has null for both, having nothing before it; a server that puts a number there
 * scores row i's logits as token i (shifted by one). */
#ifndef PWB_SERVE_API_H
#define PWB_SERVE_API_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "engine/chat.h"
#include "engine/tokenizer.h"
#include "serve/sched.h"
#include "util/buf.h"
#include "util/err.h"

#define API_MAX_PROMPTS 16
#define API_MAX_MESSAGES 256
#define API_MAX_STOP_BYTES 256

typedef struct api_req {
    int chat;                          /* /v1/chat/completions */
    const char *model;                 /* NULL: "base" */
    const char *prompts[API_MAX_PROMPTS];
    int n_prompts;
    chat_msg *msgs;
    int n_msgs;
    int max_tokens;                    /* -1: the endpoint's default */
    double temperature, top_p;
    uint64_t seed;
    const char *stop[SCHED_MAX_STOP];
    int n_stop;
    int logprobs;                      /* -1: none, else alternatives per token (0..SCHED_MAX_TOP) */
    int echo, stream, stream_usage;
    char param[64];                    /* the offending field when parsing failed */
    cJSON *root;
    char **owned;                      /* joined content parts */
    int n_owned;
} api_req;

/* Parses and checks a body. On failure e->msg is meant for the client and r->param names the
 * field. */
int api_parse(api_req *r, int chat, const char *body, size_t len, pwb_err *e);
void api_req_free(api_req *r);

/* What every reply names. */
typedef struct api_reply {
    const tokenizer *tok;
    const char *id;          /* "cmpl-..." / "chatcmpl-..." */
    const char *model;       /* the adapter's name */
    long created;
} api_reply;

/* The whole reply to r from its finished jobs (one per prompt; chat: one). */
int api_reply_json(const api_reply *a, const api_req *r, sched_job *const *jobs, int n, pwb_buf *out);
/* One SSE event "data: {...}\n\n" of a streamed reply: delta text (role first for chat), or, with
 * finish set, the closing chunk with its reason; usage_job adds the usage-only chunk. */
int api_stream_chunk(const api_reply *a, const api_req *r, const char *delta, size_t n, int first,
                     const char *finish, pwb_buf *out);
int api_stream_usage(const api_reply *a, const api_req *r, const sched_job *j, pwb_buf *out);
/* {"error": {"message", "type", "param", "code"}} */
int api_error_json(pwb_buf *out, const char *type, const char *msg, const char *param, const char *code);
/* GET /v1/models */
int api_models_json(const adapter_set *ads, long created, pwb_buf *out);
const char *api_finish_name(const sched_job *j);

#endif
