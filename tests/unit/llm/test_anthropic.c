/* Anthropic Messages: bodies (system field, max_tokens, roles, stop sequences), replies (content
 * blocks, stop reasons, usage with the prompt cache, errors, SSE streams), and the backend against
 * fakellm's /v1/messages (x-api-key and anthropic-version headers, streaming time to first
 * token, client-side stops, a key echoed back). */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fakesrv.h"
#include "llm/anthropic.h"
#include "util/file.h"
#include "util/rng.h"

static cJSON *build(const llm_request *r, int stream)
{
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    int rc = anthropic_build("claude-x", stream, 0, r, &b, &e);
    cr_assert_eq(rc, PWB_OK, "%s", e.msg);
    cJSON *j = cJSON_Parse(b.data);
    cr_assert_not_null(j, "%s", b.data);
    buf_free(&b);
    return j;
}

Test(anthropic_build, system_top_level_and_required_fields)
{
    llm_message m[] = {{"system", "Be terse."}, {"user", "Hi \"there\""}, {"assistant", "Hello."},
                       {"system", "Answer in English."}, {"user", "Why?"}};
    const char *stop[] = {"\n", "END", "  "};
    llm_request r = {.mode = LLM_GENERATE, .messages = m, .n_messages = 5, .temperature = 0.5, .top_p = 0.9,
                     .seed = 42, .stop = stop, .n_stop = 3};
    cJSON *j = build(&r, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "model")->valuestring, "claude-x");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "system")->valuestring, "Be terse.\n\nAnswer in English.");
    cr_assert_eq(cJSON_GetObjectItem(j, "max_tokens")->valueint, 1024, "required: the default when unset");
    const cJSON *msgs = cJSON_GetObjectItem(j, "messages");
    cr_assert_eq(cJSON_GetArraySize(msgs), 3, "system messages are not turns");
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 0), "content")->valuestring, "Hi \"there\"");
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 1), "role")->valuestring, "assistant");
    cr_assert_float_eq(cJSON_GetObjectItem(j, "temperature")->valuedouble, 0.5, 1e-12);
    cr_assert_float_eq(cJSON_GetObjectItem(j, "top_p")->valuedouble, 0.9, 1e-12);
    cr_assert_null(cJSON_GetObjectItem(j, "seed"), "the API has no seed (and rejects unknown fields)");
    const cJSON *ss = cJSON_GetObjectItem(j, "stop_sequences");
    cr_assert_eq(cJSON_GetArraySize(ss), 1, "whitespace-only stops are applied client-side");
    cr_assert_str_eq(cJSON_GetArrayItem(ss, 0)->valuestring, "END");
    cr_assert_null(cJSON_GetObjectItem(j, "stream"));
    cJSON_Delete(j);

    llm_request p = {.mode = LLM_GENERATE, .prompt = "plain", .max_tokens = 7, .top_p = 1};
    j = build(&p, 1);
    cr_assert_eq(cJSON_GetObjectItem(j, "max_tokens")->valueint, 7);
    cr_assert_null(cJSON_GetObjectItem(j, "top_p"), "1 is the default");
    cr_assert_null(cJSON_GetObjectItem(j, "system"));
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "stream")));
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "messages"), 0), "role")->valuestring,
                     "user");
    cJSON_Delete(j);
}

Test(anthropic_build, rejects_what_the_api_cannot_take)
{
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    llm_message only_sys[] = {{"system", "x"}};
    llm_request r = {.mode = LLM_GENERATE, .messages = only_sys, .n_messages = 1};
    cr_assert_eq(anthropic_build("m", 0, 0, &r, &b, &e), PWB_EINVAL);
    llm_message tool[] = {{"tool", "x"}};
    r.messages = tool;
    cr_assert_eq(anthropic_build("m", 0, 0, &r, &b, &e), PWB_EINVAL);
    cr_assert(strstr(e.msg, "tool"));
    const char *ch[] = {"a"};
    llm_request rk = {.mode = LLM_RANK, .prompt = "p", .choices = ch, .n_choices = 1};
    cr_assert_eq(anthropic_build("m", 0, 0, &rk, &b, &e), PWB_EUNSUP);
    llm_request ok = {.mode = LLM_GENERATE, .prompt = "p"};
    cr_assert_eq(anthropic_build(NULL, 0, 0, &ok, &b, &e), PWB_EINVAL, "model is required");
    buf_free(&b);
}

static int parse(const char *body, llm_response *r, pwb_err *e)
{
    llm_response_clear(r);
    return anthropic_parse_reply(body, strlen(body), r, e);
}

Test(anthropic_parse, blocks_reasons_usage_errors)
{
    llm_response r = {0};
    pwb_err e;
    const char *ok = "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":["
                     "{\"type\":\"thinking\",\"thinking\":\"hmm\"},{\"type\":\"text\",\"text\":\"Hello\"},"
                     "{\"type\":\"text\",\"text\":\", world\"}],\"stop_reason\":\"max_tokens\","
                     "\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":90,\"cache_creation_input_tokens\":5,"
                     "\"output_tokens\":3}}";
    cr_assert_eq(parse(ok, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.text, "Hello, world", "text blocks only");
    cr_assert_str_eq(r.finish_reason, "length");
    cr_assert_eq(r.tokens_in, 105, "uncached + cache read + cache write");
    cr_assert_eq(r.tokens_cached_in, 90);
    cr_assert_eq(r.tokens_out, 3);

    cr_assert_eq(parse("{\"type\":\"message\",\"content\":[],\"stop_reason\":\"end_turn\"}", &r, &e), PWB_OK);
    cr_assert_str_eq(r.text, "");
    cr_assert_str_eq(r.finish_reason, "stop");
    cr_assert_eq(r.tokens_in, -1);
    cr_assert_eq(r.tokens_out, -1);

    cr_assert_eq(parse("{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}", &r, &e),
                 PWB_EHTTP);
    cr_assert(strstr(e.msg, "Overloaded"), "%s", e.msg);
    cr_assert_eq(parse("{\"type\":\"message\",\"content\":\"text\"}", &r, &e), PWB_EHTTP);
    cr_assert_eq(parse("[1]", &r, &e), PWB_EHTTP);
    cr_assert_eq(parse("{\"content\":[{\"type\":\"text\",\"te", &r, &e), PWB_EPARSE);
    llm_response_clear(&r);
}

static const char g_stream[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
    ": a comment\n"
    "event: ping\ndata: {\"type\": \"ping\"}\n\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\r\n\r\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n\n";

Test(anthropic_parse, sse_stream)
{
    llm_response r = {0};
    pwb_err e;
    cr_assert_eq(anthropic_parse_stream(g_stream, strlen(g_stream), &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.text, "Hello");
    cr_assert_str_eq(r.finish_reason, "stop");
    cr_assert_eq(r.tokens_in, 12);
    cr_assert_eq(r.tokens_out, 2);
    /* cut before message_stop: retried */
    const char *cut = strstr(g_stream, "event: message_stop");
    cr_assert_eq(anthropic_parse_stream(g_stream, (size_t)(cut - g_stream), &r, &e), PWB_EPARSE);
    /* an error event mid-stream */
    const char *err = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n"
                      "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                      "\"message\":\"Overloaded\"}}\n\n";
    cr_assert_eq(anthropic_parse_stream(err, strlen(err), &r, &e), PWB_EHTTP);
    cr_assert(strstr(e.msg, "Overloaded"));
    /* a server that did not stream */
    const char *whole = "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"one piece\"}]}";
    cr_assert_eq(anthropic_parse_stream(whole, strlen(whole), &r, &e), PWB_OK);
    cr_assert_str_eq(r.text, "one piece");
    /* first-token detection sees deltas with text only */
    const char *delta = strstr(g_stream, "event: content_block_delta");
    cr_assert(!anthropic_first_token(g_stream, (size_t)(delta - g_stream)));
    cr_assert(anthropic_first_token(g_stream, strlen(g_stream)));
    llm_response_clear(&r);

    /* random cuts and bytes never crash */
    pwb_rng rng;
    rng_init(&rng, 5);
    char buf[sizeof g_stream];
    for (int it = 0; it < 2000; it++) {
        memcpy(buf, g_stream, sizeof g_stream);
        for (int k = 0; k < 3; k++)
            buf[rng_below(&rng, sizeof g_stream - 1)] = (char)rng_below(&rng, 256);
        size_t len = rng_below(&rng, sizeof g_stream);
        int rc = anthropic_parse_stream(buf, len, &r, &e);
        cr_assert(rc == PWB_OK || e.msg[0]);
        anthropic_first_token(buf, len);
        llm_response_clear(&r);
    }
}

/* ---- against fakellm ---- */

static fakesrv g_srv;
static void fini(void) { fakesrv_stop(&g_srv); }
TestSuite(anthropic_http, .fini = fini, .timeout = 60);

static llm_backend *backend(const char *key_env, int stream)
{
    llm_config c;
    llm_config_defaults(&c);
    c.name = "claude";
    c.provider = "anthropic";
    c.base_url = g_srv.root;
    c.model = "claude-3-5-haiku-latest";
    c.api_key_env = key_env;
    c.stream = stream;
    c.max_retries = 3;
    c.backoff_base_s = 0.01;
    c.backoff_max_s = 0.02;
    llm_backend *b = NULL;
    pwb_err e;
    cr_assert_eq(llm_backend_create(&b, &c, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(b->kind, "anthropic");
    return b;
}

Test(anthropic_http, headers_usage_and_replies)
{
    char logp[256];
    fakesrv_temp(logp, sizeof logp, "anthropic");
    fakesrv_start(&g_srv, (const char *const[]){"--require-key", "sk-ant-TESTKEY-123", "--log", logp, "--echo",
                                                "--rate-500", "0.2", "--seed", "3", NULL});
    setenv("PWB_TEST_ANTHROPIC_KEY", "sk-ant-TESTKEY-123", 1);
    llm_backend *be = backend("PWB_TEST_ANTHROPIC_KEY", 0);
    test_reqs t;
    test_reqs_init(&t, 12, 2);
    pwb_err e;
    cr_assert_eq(be->run(be, t.req, t.n, t.out, test_reqs_on_done, &t, &e), PWB_OK, "%s", e.msg);
    for (size_t i = 0; i < t.n; i++) {
        cr_assert_null(t.out[i].error, "%s", t.out[i].error);
        cr_assert_eq(t.done[i], 1);
        cr_assert_str_eq(t.out[i].text, "question number", "the user turn echoed, cut to max_tokens 2");
        cr_assert_str_eq(t.out[i].finish_reason, "length");
        cr_assert_eq(t.out[i].tokens_in, 8, "system + user words");
        cr_assert_eq(t.out[i].tokens_out, 2);
    }
    cr_assert_eq(fakesrv_stat(&g_srv, "unauthorized"), 0);
    llm_backend_free(be);
    fakesrv_stop(&g_srv);

    pwb_buf log;
    buf_init(&log);
    cr_assert_eq(file_read_all(logp, 1 << 24, &log, &e), PWB_OK);
    cr_assert(strstr(log.data, "\"x-api-key\":\"sk-ant-TESTKEY-123\""), "the key goes in x-api-key");
    cr_assert(strstr(log.data, "\"anthropic-version\":\"2023-06-01\""));
    cr_assert_null(strstr(log.data, "\"authorization\""), "no Bearer header");
    cr_assert(strstr(log.data, "\"path\":\"/v1/messages\""));
    cr_assert(strstr(log.data, "\\\"system\\\":\\\"Answer briefly.\\\""), "system is top-level");
    buf_free(&log);
    unlink(logp);
    test_reqs_free(&t);
    unsetenv("PWB_TEST_ANTHROPIC_KEY");
}

Test(anthropic_http, streamed_with_time_to_first_token)
{
    fakesrv_start(&g_srv, (const char *const[]){"--reply", "one two three four", "--first-token-ms", "80",
                                                "--stream-gap-ms", "250", NULL});
    llm_backend *be = backend(NULL, 1);
    test_reqs t;
    test_reqs_init(&t, 3, 0);
    const char *stop[] = {"\n", " four"};
    for (size_t i = 0; i < t.n; i++) {
        t.req[i].stop = stop;
        t.req[i].n_stop = 2;
    }
    pwb_err e;
    cr_assert_eq(be->run(be, t.req, t.n, t.out, test_reqs_on_done, &t, &e), PWB_OK, "%s", e.msg);
    for (size_t i = 0; i < t.n; i++) {
        const llm_response *r = &t.out[i];
        cr_assert_null(r->error, "%s", r->error);
        cr_assert_str_eq(r->text, "one two three", "stopped at \" four\"");
        cr_assert_str_eq(r->finish_reason, "stop");
        cr_assert(r->ttft_s >= 0.07 && r->ttft_s < 0.25, "ttft %.3f", r->ttft_s);
        cr_assert(r->latency_s >= r->ttft_s + 0.2, "latency %.3f after ttft %.3f", r->latency_s, r->ttft_s);
        cr_assert_eq(r->tokens_out, 3);
    }
    llm_backend_free(be);
    test_reqs_free(&t);
}

Test(anthropic_http, echoed_key_never_kept)
{
    const char *key = "sk-ant-PLANTED-7f3a9c";
    fakesrv_start(&g_srv, (const char *const[]){"--leak-auth", "--fail-first", "2", "--fail-kind", "500", NULL});
    setenv("PWB_TEST_ANTHROPIC_KEY", key, 1);
    for (int stream = 0; stream <= 1; stream++) {
        llm_backend *be = backend("PWB_TEST_ANTHROPIC_KEY", stream);
        test_reqs t;
        test_reqs_init(&t, 4, 0);
        pwb_err e;
        cr_assert_eq(be->run(be, t.req, t.n, t.out, test_reqs_on_done, &t, &e), PWB_OK, "%s", e.msg);
        for (size_t i = 0; i < t.n; i++) {
            cr_assert_null(t.out[i].error, "%s", t.out[i].error);
            cr_assert(strstr(t.out[i].text, "[auth: "), "the server did echo it: %s", t.out[i].text);
            cr_assert_null(strstr(t.out[i].text, "PLANTED"), "%s", t.out[i].text);
        }
        llm_backend_free(be);
        test_reqs_free(&t);
    }
    unsetenv("PWB_TEST_ANTHROPIC_KEY");
}
