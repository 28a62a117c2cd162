/* Ollama's native /api/chat: bodies (options), replies (whole and NDJSON streams, usage from
 * prompt_eval_count / eval_count, errors), and the backend against fakellm's /api/chat. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fakesrv.h"
#include "llm/ollama.h"
#include "util/file.h"
#include "util/rng.h"

Test(ollama_build, options_and_stream_flag)
{
    llm_message m[] = {{"system", "Be terse."}, {"user", "Hi"}};
    const char *stop[] = {"\n", ""};
    llm_request r = {.mode = LLM_GENERATE, .messages = m, .n_messages = 2, .max_tokens = 12, .temperature = 0.2,
                     .top_p = 0.95, .seed = 7, .stop = stop, .n_stop = 2};
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    cr_assert_eq(ollama_build("llama3.2:1b", 0, &r, &b, &e), PWB_OK, "%s", e.msg);
    cJSON *j = cJSON_Parse(b.data);
    cr_assert_not_null(j);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "model")->valuestring, "llama3.2:1b");
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "stream")), "Ollama streams unless told not to");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "messages")), 2, "system stays a message");
    const cJSON *o = cJSON_GetObjectItem(j, "options");
    cr_assert_eq(cJSON_GetObjectItem(o, "num_predict")->valueint, 12);
    cr_assert_float_eq(cJSON_GetObjectItem(o, "temperature")->valuedouble, 0.2, 1e-12);
    cr_assert_float_eq(cJSON_GetObjectItem(o, "top_p")->valuedouble, 0.95, 1e-12);
    cr_assert_eq(cJSON_GetObjectItem(o, "seed")->valueint, 7);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "stop")), 1, "empty stops dropped");
    cr_assert_null(cJSON_GetObjectItem(j, "max_tokens"), "options carry it");
    cJSON_Delete(j);

    buf_reset(&b);
    llm_request p = {.mode = LLM_GENERATE, .prompt = "plain", .seed = (uint64_t)1 << 40};
    cr_assert_eq(ollama_build("m", 1, &p, &b, &e), PWB_OK);
    j = cJSON_Parse(b.data);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "stream")));
    o = cJSON_GetObjectItem(j, "options");
    cr_assert_null(cJSON_GetObjectItem(o, "num_predict"), "0: the server's default");
    cr_assert(cJSON_GetObjectItem(o, "seed")->valuedouble < 2147483648.0, "an int32 seed");
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "messages"), 0), "role")->valuestring,
                     "user");
    cJSON_Delete(j);

    const char *ch[] = {"a"};
    llm_request rk = {.mode = LLM_RANK, .prompt = "p", .choices = ch, .n_choices = 1};
    cr_assert_eq(ollama_build("m", 0, &rk, &b, &e), PWB_EUNSUP);
    cr_assert_eq(ollama_build(NULL, 0, &p, &b, &e), PWB_EINVAL);
    buf_free(&b);
}

Test(ollama_parse, whole_and_streamed)
{
    llm_response r = {0};
    pwb_err e;
    const char *whole = "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi there\"},\"done\":true,"
                        "\"done_reason\":\"length\",\"prompt_eval_count\":26,\"eval_count\":2}";
    cr_assert_eq(ollama_parse_reply(whole, strlen(whole), &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.text, "Hi there");
    cr_assert_str_eq(r.finish_reason, "length");
    cr_assert_eq(r.tokens_in, 26);
    cr_assert_eq(r.tokens_out, 2);
    /* a prompt Ollama had cached: no prompt_eval_count */
    const char *cached = "{\"message\":{\"content\":\"x\"},\"done\":true,\"eval_count\":1}";
    cr_assert_eq(ollama_parse_reply(cached, strlen(cached), &r, &e), PWB_OK);
    cr_assert_eq(r.tokens_in, -1);
    cr_assert_eq(r.tokens_out, 1);
    const char *err = "{\"error\":\"model 'nope' not found\"}";
    cr_assert_eq(ollama_parse_reply(err, strlen(err), &r, &e), PWB_EHTTP);
    cr_assert(strstr(e.msg, "not found"));
    cr_assert_eq(ollama_parse_reply("{\"done\":true}", 13, &r, &e), PWB_EHTTP);
    cr_assert_eq(ollama_parse_reply("{\"message\":{\"cont", 17, &r, &e), PWB_EPARSE);

    const char *stream = "{\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n"
                         "\n"
                         "{\"message\":{\"role\":\"assistant\",\"content\":\"lo\"},\"done\":false}\r\n"
                         "{\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\","
                         "\"prompt_eval_count\":5,\"eval_count\":2}\n";
    cr_assert_eq(ollama_parse_stream(stream, strlen(stream), &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.text, "Hello");
    cr_assert_str_eq(r.finish_reason, "stop");
    cr_assert_eq(r.tokens_in, 5);
    const char *last = strstr(stream, "{\"message\":{\"role\":\"assistant\",\"content\":\"\"}");
    cr_assert_eq(ollama_parse_stream(stream, (size_t)(last - stream), &r, &e), PWB_EPARSE, "no done line: retried");
    cr_assert(!ollama_first_token(stream, 0));
    cr_assert(ollama_first_token(stream, strlen(stream)));
    const char *mid = "{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"error\":\"out of memory\"}\n";
    cr_assert_eq(ollama_parse_stream(mid, strlen(mid), &r, &e), PWB_EHTTP);
    cr_assert_eq(ollama_parse_stream(whole, strlen(whole), &r, &e), PWB_OK, "one object is a whole reply");
    llm_response_clear(&r);

    pwb_rng rng;
    rng_init(&rng, 9);
    size_t n = strlen(stream);
    char *buf = malloc(n + 1);
    for (int it = 0; it < 2000; it++) {
        memcpy(buf, stream, n + 1);
        for (int k = 0; k < 3; k++)
            buf[rng_below(&rng, n)] = (char)rng_below(&rng, 256);
        size_t len = rng_below(&rng, n + 1);
        int rc = ollama_parse_stream(buf, len, &r, &e);
        cr_assert(rc == PWB_OK || e.msg[0]);
        llm_response_clear(&r);
    }
    free(buf);
}

static fakesrv g_srv;
static void fini(void) { fakesrv_stop(&g_srv); }
TestSuite(ollama_http, .fini = fini, .timeout = 60);

static llm_backend *backend(int stream, const char *base)
{
    llm_config c;
    llm_config_defaults(&c);
    c.name = "olla";
    c.provider = "ollama";
    c.base_url = base;
    c.model = "llama3.2:1b";
    c.stream = stream;
    c.max_retries = 4;
    c.backoff_base_s = 0.01;
    c.backoff_max_s = 0.02;
    llm_backend *b = NULL;
    pwb_err e;
    cr_assert_eq(llm_backend_create(&b, &c, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(b->kind, "ollama");
    return b;
}

Test(ollama_http, chat_whole_and_streamed)
{
    char logp[256];
    fakesrv_temp(logp, sizeof logp, "ollama");
    fakesrv_start(&g_srv, (const char *const[]){"--reply", "alpha beta gamma", "--log", logp, "--rate-503", "0.2",
                                                "--rate-malformed", "0.1", "--seed", "4", "--first-token-ms", "60",
                                                "--stream-gap-ms", "150", NULL});
    for (int stream = 0; stream <= 1; stream++) {
        /* "/api" at the end of the base URL is not doubled */
        char base[96];
        snprintf(base, sizeof base, "%s%s", g_srv.root, stream ? "/api" : "");
        llm_backend *be = backend(stream, base);
        test_reqs t;
        test_reqs_init(&t, 6, 2);
        pwb_err e;
        cr_assert_eq(be->run(be, t.req, t.n, t.out, test_reqs_on_done, &t, &e), PWB_OK, "%s", e.msg);
        for (size_t i = 0; i < t.n; i++) {
            const llm_response *r = &t.out[i];
            cr_assert_null(r->error, "%s", r->error);
            cr_assert_eq(t.done[i], 1);
            cr_assert_str_eq(r->text, "alpha beta", "num_predict 2");
            cr_assert_str_eq(r->finish_reason, "length");
            cr_assert_eq(r->tokens_in, 8, "prompt_eval_count");
            cr_assert_eq(r->tokens_out, 2, "eval_count");
            if (stream) {
                cr_assert(r->ttft_s >= 0.05 && r->ttft_s < 0.15, "ttft %.3f", r->ttft_s);
                cr_assert(r->latency_s >= r->ttft_s + 0.12, "latency %.3f ttft %.3f", r->latency_s, r->ttft_s);
            } else {
                cr_assert_eq(r->ttft_s, 0, "not streamed: no ttft");
            }
        }
        llm_backend_free(be);
        test_reqs_free(&t);
    }
    fakesrv_stop(&g_srv);
    pwb_buf log;
    buf_init(&log);
    pwb_err e;
    cr_assert_eq(file_read_all(logp, 1 << 24, &log, &e), PWB_OK);
    cr_assert(strstr(log.data, "\"path\":\"/api/chat\""));
    cr_assert_null(strstr(log.data, "/api/api"));
    cr_assert(strstr(log.data, "\\\"num_predict\\\":2"));
    buf_free(&log);
    unlink(logp);
}
