/* Streamed replies: the SSE and NDJSON walkers, OpenAI chunk streams (text, finish_reason, usage
 * in the last chunk, truncation, error events), and "stream": true end to end against fakellm,
 * with time to first token, faults and retries. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakesrv.h"
#include "llm/openai.h"
#include "llm/stream.h"
#include "util/buf.h"

typedef struct seen {
    pwb_buf all;
    int n;
    int stop_at;
} seen;

static int collect(void *ctx, const char *event, const char *data, size_t len)
{
    seen *s = ctx;
    cr_assert_eq(strlen(data), len, "NUL-terminated");
    buf_printf(&s->all, "[%s|%s]", event ? event : "-", data);
    return ++s->n == s->stop_at ? 7 : 0;
}

Test(stream, sse_events_and_ndjson_lines)
{
    const char *sse = ": comment\n"
                      "event: a\ndata: one\n\n"
                      "data: two\r\ndata:  three\r\n\r\n"
                      "id: 5\nretry: 10\n\n" /* no data: not delivered */
                      "data:four";            /* last event without its blank line */
    seen s = {.stop_at = -1};
    buf_init(&s.all);
    cr_assert_eq(sse_each(sse, strlen(sse), collect, &s), 0);
    cr_assert_str_eq(s.all.data, "[a|one][-|two\n three][-|four]");
    buf_reset(&s.all);
    s.n = 0;
    s.stop_at = 2;
    cr_assert_eq(sse_each(sse, strlen(sse), collect, &s), 7, "a callback's non-zero stops the walk");
    cr_assert_eq(s.n, 2);

    const char *nd = "{\"a\":1}\n\n  \n{\"b\":2}\r\n{\"c\":3}";
    buf_reset(&s.all);
    s.n = 0;
    s.stop_at = -1;
    cr_assert_eq(ndjson_each(nd, strlen(nd), collect, &s), 0);
    cr_assert_str_eq(s.all.data, "[-|{\"a\":1}][-|{\"b\":2}][-|{\"c\":3}]");

    buf_reset(&s.all);
    s.n = 0;
    cr_assert_eq(stream_lines_each(1, sse, strlen(sse), collect, &s), 0);
    cr_assert_str_eq(s.all.data, "[-|one][-|two][-| three][-|four]", "data lines one by one");
    buf_free(&s.all);
    cr_assert_eq(sse_each("", 0, collect, &s), 0);
}

static const char g_chat[] =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\u00e9\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,"
    "\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n"
    "data: [DONE]\n\n";

Test(stream, openai_chunks)
{
    llm_response r = {0};
    pwb_err e;
    cr_assert_eq(openai_parse_stream(1, g_chat, strlen(g_chat), &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.text, "Hello \xc3\xa9");
    cr_assert_str_eq(r.finish_reason, "length");
    cr_assert_eq(r.tokens_in, 9);
    cr_assert_eq(r.tokens_out, 2);
    cr_assert_eq(r.tokens_cached_in, 4);
    /* the role-only first chunk is not a token; the second is */
    const char *second = strstr(g_chat, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel");
    cr_assert(!openai_first_token(1, g_chat, (size_t)(second - g_chat)));
    cr_assert(openai_first_token(1, g_chat, strlen(g_chat)));

    /* cut before a finish_reason or [DONE]: retried */
    const char *fin = strstr(g_chat, "data: {\"choices\":[{\"index\":0,\"delta\":{},");
    cr_assert_eq(openai_parse_stream(1, g_chat, (size_t)(fin - g_chat), &r, &e), PWB_EPARSE);
    /* a finish_reason without [DONE] (some servers) is complete */
    const char *usage = strstr(g_chat, "data: {\"choices\":[],");
    cr_assert_eq(openai_parse_stream(1, g_chat, (size_t)(usage - g_chat), &r, &e), PWB_OK);
    cr_assert_eq(r.tokens_in, -1);
    /* a garbled chunk: retried; an error chunk: final */
    cr_assert_eq(openai_parse_stream(1, "data: {\"choi\n\ndata: [DONE]\n\n", 27, &r, &e), PWB_EPARSE);
    const char *err = "data: {\"error\":{\"message\":\"context length exceeded\"}}\n\n";
    cr_assert_eq(openai_parse_stream(1, err, strlen(err), &r, &e), PWB_EHTTP);
    cr_assert(strstr(e.msg, "context length"));
    cr_assert_eq(openai_parse_stream(1, "", 0, &r, &e), PWB_EPARSE);
    /* a server that ignored "stream" */
    const char *whole = "{\"choices\":[{\"message\":{\"content\":\"whole\"},\"finish_reason\":\"stop\"}]}";
    cr_assert_eq(openai_parse_stream(1, whole, strlen(whole), &r, &e), PWB_OK);
    cr_assert_str_eq(r.text, "whole");
    /* completions stream text in choices[0].text */
    const char *cmpl = "data: {\"choices\":[{\"text\":\"ab\",\"finish_reason\":null}]}\n\n"
                       "data: {\"choices\":[{\"text\":\"c\",\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    cr_assert_eq(openai_parse_stream(0, cmpl, strlen(cmpl), &r, &e), PWB_OK);
    cr_assert_str_eq(r.text, "abc");
    cr_assert(openai_first_token(0, cmpl, strlen(cmpl)));
    llm_response_clear(&r);

    /* body fields */
    pwb_buf b;
    buf_init(&b);
    llm_request q = {.mode = LLM_GENERATE, .prompt = "hi"};
    openai_body_opts bo = {.model = "m", .stream = 1};
    cr_assert_eq(openai_build(&bo, 1, &q, &b, &e), PWB_OK);
    cJSON *j = cJSON_Parse(b.data);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "stream")));
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "stream_options"), "include_usage")));
    cJSON_Delete(j);
    buf_free(&b);
}

static fakesrv g_srv;
static void fini(void) { fakesrv_stop(&g_srv); }
TestSuite(stream_http, .fini = fini, .timeout = 60);

Test(stream_http, ttft_and_retries_through_openai_streams)
{
    fakesrv_start(&g_srv, (const char *const[]){"--reply", "a b c d e", "--first-token-ms", "50", "--stream-gap-ms",
                                                "200", "--rate-500", "0.2", "--rate-drop", "0.1", "--seed", "2", NULL});
    for (int chat = 1; chat >= 0; chat--) {
        llm_config c;
        llm_config_defaults(&c);
        c.name = "s";
        c.provider = chat ? "vllm" : "openai-completions"; /* a preset is the chat protocol */
        c.base_url = g_srv.base;
        c.model = "m";
        c.stream = 1;
        c.concurrency = 8;
        c.max_retries = 8;
        c.backoff_base_s = 0.01;
        c.backoff_max_s = 0.02;
        llm_backend *be = NULL;
        pwb_err e;
        cr_assert_eq(llm_backend_create(&be, &c, &e), PWB_OK, "%s", e.msg);
        cr_assert_str_eq(be->kind, chat ? "openai" : "openai-completions");
        test_reqs t;
        test_reqs_init(&t, 16, 4);
        cr_assert_eq(be->run(be, t.req, t.n, t.out, test_reqs_on_done, &t, &e), PWB_OK, "%s", e.msg);
        for (size_t i = 0; i < t.n; i++) {
            const llm_response *r = &t.out[i];
            cr_assert_null(r->error, "%s", r->error);
            cr_assert_eq(t.done[i], 1);
            cr_assert_str_eq(r->text, "a b c d");
            cr_assert_str_eq(r->finish_reason, "length");
            cr_assert_eq(r->tokens_out, 4, "usage from the last chunk");
            cr_assert(r->ttft_s >= 0.045 && r->ttft_s < 0.18, "ttft %.3f", r->ttft_s);
            cr_assert(r->latency_s >= r->ttft_s + 0.18, "latency %.3f", r->latency_s);
        }
        llm_backend_free(be);
        test_reqs_free(&t);
    }
}
