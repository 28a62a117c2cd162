/* OpenAI-compatible request bodies and reply parsing: escaping, field choices, hostile replies. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "llm/backend.h"
#include "llm/openai.h"
#include "util/buf.h"
#include "util/rng.h"

static cJSON *build(int chat, const llm_request *r)
{
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    err_clear(&e);
    int rc = chat ? openai_build_chat("m-1", r, &b, &e) : openai_build_completion("m-1", r, &b, &e);
    cr_assert_eq(rc, PWB_OK, "build failed: %s", e.msg);
    cJSON *j = cJSON_Parse(b.data);
    cr_assert_not_null(j, "body is not JSON: %s", b.data);
    buf_free(&b);
    return j;
}

Test(openai_build, chat_escapes_and_fields)
{
    const char *nasty = "say \"hi\"\\ now\nnext\tline \x01 h\xc3\xa9llo \xe2\x98\x83 </script>";
    llm_message msgs[] = {{"system", "You are terse."}, {"user", nasty}};
    const char *stops[] = {"\n\n", "END"};
    llm_request r = {.mode = LLM_GENERATE, .messages = msgs, .n_messages = 2, .max_tokens = 7,
                     .temperature = 0.0, .top_p = 0.9, .seed = 1ULL << 60, .stop = stops, .n_stop = 2};
    cJSON *j = build(1, &r);
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "model")), "m-1");
    cJSON *m = cJSON_GetObjectItem(j, "messages");
    cr_assert_eq(cJSON_GetArraySize(m), 2);
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 0), "role")), "system");
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 1), "content")), nasty);
    cr_assert_eq(cJSON_GetObjectItem(j, "max_tokens")->valueint, 7);
    cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(j, "temperature")));
    cr_assert_float_eq(cJSON_GetObjectItem(j, "temperature")->valuedouble, 0.0, 1e-12);
    cr_assert_float_eq(cJSON_GetObjectItem(j, "top_p")->valuedouble, 0.9, 1e-12);
    cJSON *st = cJSON_GetObjectItem(j, "stop");
    cr_assert_eq(cJSON_GetArraySize(st), 2);
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetArrayItem(st, 0)), "\n\n");
    cJSON_Delete(j);

    /* the seed goes out as an exact integer, not a rounded double */
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(openai_build_chat(NULL, &r, &b, NULL), PWB_OK);
    cr_assert(strstr(b.data, "\"seed\":1152921504606846976"), "%s", b.data);
    cr_assert_null(strstr(b.data, "\"model\""), "no model field when model is NULL");
    buf_free(&b);
}

Test(openai_build, defaults_left_to_server)
{
    llm_request r = {.prompt = "just a prompt"};
    cJSON *j = build(1, &r);
    cr_assert_null(cJSON_GetObjectItem(j, "top_p"), "top_p 0 means unset");
    cr_assert_null(cJSON_GetObjectItem(j, "max_tokens"));
    cr_assert_null(cJSON_GetObjectItem(j, "stop"));
    cJSON *m = cJSON_GetObjectItem(j, "messages");
    cr_assert_eq(cJSON_GetArraySize(m), 1, "a prompt becomes one user message");
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 0), "role")), "user");
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 0), "content")), "just a prompt");
    cJSON_Delete(j);
}

Test(openai_build, completion_prompt_and_joined_messages)
{
    llm_request r = {.prompt = "Q: 2+2?\nA:", .max_tokens = 3};
    cJSON *j = build(0, &r);
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "prompt")), "Q: 2+2?\nA:");
    cr_assert_null(cJSON_GetObjectItem(j, "messages"));
    cJSON_Delete(j);

    llm_message msgs[] = {{"system", "sys"}, {"user", "usr"}};
    llm_request r2 = {.messages = msgs, .n_messages = 2};
    j = build(0, &r2);
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(j, "prompt")), "sys\n\nusr");
    cJSON_Delete(j);
}

Test(openai_build, rejects_bad_requests)
{
    pwb_buf b;
    buf_init(&b);
    pwb_err e;
    const char *ch[] = {"yes", "no"};
    llm_request rank = {.mode = LLM_RANK, .prompt = "p", .choices = ch, .n_choices = 2};
    cr_assert_eq(openai_build_chat("m", &rank, &b, &e), PWB_EUNSUP);
    llm_request nan_t = {.prompt = "p", .temperature = NAN};
    cr_assert_eq(openai_build_chat("m", &nan_t, &b, &e), PWB_EINVAL);
    llm_message bad[] = {{"user", NULL}};
    llm_request nocontent = {.messages = bad, .n_messages = 1};
    cr_assert_eq(openai_build_chat("m", &nocontent, &b, &e), PWB_EINVAL);
    llm_request empty = {0};
    cr_assert_eq(openai_build_completion("m", &empty, &b, &e), PWB_EINVAL);
    cr_assert_eq(b.len, 0, "nothing written on error");
    buf_free(&b);
}

static int parse(int chat, const char *body, llm_response *r, pwb_err *e)
{
    memset(r, 0, sizeof *r);
    err_clear(e);
    return openai_parse_reply(chat, body, strlen(body), r, e);
}

Test(openai_parse, good_chat_and_completion)
{
    llm_response r;
    pwb_err e;
    const char *chat = "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
                       "\"positive \\u00e9\\n\"},\"finish_reason\":\"stop\"}],"
                       "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}";
    cr_assert_eq(parse(1, chat, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.text, "positive \xc3\xa9\n");
    cr_assert_str_eq(r.finish_reason, "stop");
    cr_assert_eq(r.tokens_in, 12);
    cr_assert_eq(r.tokens_out, 3);
    llm_response_clear(&r);
    cr_assert_null(r.text);

    const char *cmpl = "{\"choices\":[{\"text\":\" 4\",\"finish_reason\":\"length\"}]}";
    cr_assert_eq(parse(0, cmpl, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.text, " 4");
    cr_assert_str_eq(r.finish_reason, "length");
    cr_assert_eq(r.tokens_in, -1, "no usage: unknown");
    cr_assert_eq(r.tokens_out, -1);
    llm_response_clear(&r);

    /* content as a list of parts; finish_reason null; usage of the wrong types */
    const char *parts = "{\"choices\":[{\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                        "{\"type\":\"text\",\"text\":\"b\"}]},\"finish_reason\":null}],"
                        "\"usage\":{\"prompt_tokens\":\"12\",\"completion_tokens\":-4}}";
    cr_assert_eq(parse(1, parts, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.text, "ab");
    cr_assert_null(r.finish_reason);
    cr_assert_eq(r.tokens_in, -1);
    cr_assert_eq(r.tokens_out, -1);
    llm_response_clear(&r);
}

Test(openai_parse, wrong_shapes_are_errors)
{
    static const struct {
        int chat;
        const char *body;
        const char *want; /* substring of the error */
    } cases[] = {
        {1, "{}", "choices"},
        {1, "{\"choices\":[]}", "choices"},
        {1, "{\"choices\":{}}", "choices"},
        {1, "{\"choices\":[\"text\"]}", "choices[0]"},
        {1, "{\"choices\":[{\"text\":\"x\"}]}", "message"},
        {1, "{\"choices\":[{\"message\":\"x\"}]}", "message"},
        {1, "{\"choices\":[{\"message\":{\"content\":42}}]}", "content"},
        {1, "{\"choices\":[{\"message\":{\"content\":null}}]}", "content"},
        {1, "{\"choices\":[{\"message\":{\"role\":\"assistant\"}}]}", "content"},
        {0, "{\"choices\":[{\"message\":{\"content\":\"x\"}}]}", "text"},
        {0, "{\"choices\":[{\"text\":[1,2]}]}", "text"},
        {1, "[1,2,3]", "object"},
        {1, "\"str\"", "object"},
        {1, "{\"error\":{\"message\":\"model overloaded\",\"type\":\"server_error\"}}", "model overloaded"},
        {1, "{\"error\":\"plain\"}", "plain"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        llm_response r;
        pwb_err e;
        int rc = parse(cases[k].chat, cases[k].body, &r, &e);
        cr_assert_eq(rc, PWB_EHTTP, "case %zu (%s): rc %d", k, cases[k].body, rc);
        cr_assert(strstr(e.msg, cases[k].want), "case %zu: '%s' lacks '%s'", k, e.msg, cases[k].want);
        cr_assert_null(r.text, "case %zu: no text on error", k);
        llm_response_clear(&r);
    }
}

Test(openai_parse, not_json_is_retryable_parse_error)
{
    llm_response r;
    pwb_err e;
    cr_assert_eq(parse(1, "", &r, &e), PWB_EPARSE);
    cr_assert_eq(parse(1, "<html>502 Bad Gateway</html>", &r, &e), PWB_EPARSE);
    cr_assert_eq(parse(1, "{\"choices\":[{\"message\":{\"content\":\"trunc", &r, &e), PWB_EPARSE);
    /* length is honoured: a valid prefix followed by junk past len */
    const char *s = "{\"choices\":[{\"text\":\"ok\"}]}GARBAGE";
    memset(&r, 0, sizeof r);
    cr_assert_eq(openai_parse_reply(0, s, strlen(s) - 7, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.text, "ok");
    llm_response_clear(&r);
}

Test(openai_parse, huge_and_deep)
{
    /* a 6 MB content string */
    size_t n = 6u << 20;
    pwb_buf b;
    buf_init(&b);
    buf_puts(&b, "{\"choices\":[{\"message\":{\"content\":\"");
    for (size_t i = 0; i < n; i++)
        buf_putc(&b, (char)('a' + i % 26));
    buf_puts(&b, "\"}}]}");
    llm_response r = {0};
    pwb_err e;
    cr_assert_eq(openai_parse_reply(1, b.data, b.len, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(strlen(r.text), n);
    llm_response_clear(&r);
    buf_free(&b);

    /* nesting far beyond cJSON's limit must fail cleanly, not blow the stack */
    buf_init(&b);
    for (int i = 0; i < 200000; i++)
        buf_putc(&b, '[');
    cr_assert_eq(openai_parse_reply(1, b.data, b.len, &r, &e), PWB_EPARSE);
    buf_free(&b);
}

Test(openai_parse, random_garbage_never_crashes)
{
    const char *good = "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"positive\"},"
                       "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}";
    size_t gl = strlen(good);
    pwb_rng rng;
    rng_init(&rng, 7);
    char buf[512];
    int ok = 0;
    for (int it = 0; it < 5000; it++) {
        size_t len = gl;
        memcpy(buf, good, gl);
        int muts = 1 + (int)rng_below(&rng, 4);
        for (int m = 0; m < muts && len > 0; m++) {
            size_t at = rng_below(&rng, len);
            switch (rng_below(&rng, 3)) {
            case 0: buf[at] = (char)rng_below(&rng, 256); break;
            case 1: len = at; break;                           /* truncate */
            default: buf[at] = "{}[]\":,0n"[rng_below(&rng, 9)]; break;
            }
        }
        llm_response r = {0};
        pwb_err e;
        int rc = openai_parse_reply(1, buf, len, &r, &e);
        if (rc == PWB_OK) {
            cr_assert_not_null(r.text);
            ok++;
        } else {
            cr_assert(rc == PWB_EPARSE || rc == PWB_EHTTP, "rc %d", rc);
            cr_assert_null(r.text);
        }
        llm_response_clear(&r);
    }
    cr_assert(ok > 0, "some mutations keep a valid reply");
}

Test(backend, config_defaults_and_create_errors)
{
    llm_config c;
    llm_config_defaults(&c);
    cr_assert_str_eq(c.provider, "openai");
    cr_assert(c.concurrency >= 1);
    cr_assert(c.timeout_s > 0);
    cr_assert(c.max_retries >= 0);
    cr_assert(c.backoff_base_s > 0 && c.backoff_max_s >= c.backoff_base_s);

    llm_backend *b = NULL;
    pwb_err e;
    c.name = "m";
    cr_assert_eq(llm_backend_create(&b, &c, &e), PWB_EINVAL, "no base_url");
    cr_assert_null(b);

    c.base_url = "http://127.0.0.1:9/v1";
    c.api_key_env = "PWB_TEST_SURELY_UNSET_KEY_VAR";
    unsetenv(c.api_key_env);
    cr_assert_eq(llm_backend_create(&b, &c, &e), PWB_EINVAL);
    cr_assert(strstr(e.msg, "PWB_TEST_SURELY_UNSET_KEY_VAR"), "%s", e.msg);

    c.api_key_env = NULL;
    c.base_url = "ftp://example/v1";
    cr_assert_neq(llm_backend_create(&b, &c, &e), PWB_OK);

    c.base_url = "http://127.0.0.1:9/v1/";
    c.provider = "no-such-provider";
    cr_assert_eq(llm_backend_create(&b, &c, &e), PWB_EUNSUP);
    cr_assert(strstr(e.msg, "no-such-provider"));

    c.provider = "openai-completions";
    cr_assert_eq(llm_backend_create(&b, &c, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(b->kind, "openai-completions");
    llm_backend_free(b);
}

Test(backend, response_clear)
{
    llm_response r = {0};
    r.text = strdup("t");
    r.error = strdup("e");
    r.finish_reason = strdup("stop");
    r.choice_logprob = calloc(3, sizeof(double));
    r.retries = 3;
    llm_response_clear(&r);
    cr_assert_null(r.text);
    cr_assert_null(r.error);
    cr_assert_null(r.choice_logprob);
    cr_assert_eq(r.retries, 0);
    llm_response_clear(&r); /* twice is fine */
    llm_response_clear(NULL);
}

/* /embeddings replies: the vector and its token count; a missing, empty or non-numeric vector is an
 * error, text that is not JSON a retryable parse error. */
Test(openai_parse, embeddings_reply)
{
    llm_response r;
    memset(&r, 0, sizeof r);
    pwb_err e = {0};
    const char *ok = "{\"data\":[{\"embedding\":[0.5,-1,2e-3],\"index\":0}],\"usage\":{\"prompt_tokens\":7}}";
    cr_assert_eq(openai_parse_embedding(ok, strlen(ok), &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(r.n_embedding, 3);
    cr_assert_float_eq(r.embedding[0], 0.5f, 1e-7);
    cr_assert_float_eq(r.embedding[1], -1.0f, 1e-7);
    cr_assert_float_eq(r.embedding[2], 0.002f, 1e-7);
    cr_assert_eq(r.tokens_in, 7);
    llm_response_clear(&r);
    const char *bad[] = {"{\"data\":[]}", "{\"data\":[{\"embedding\":[]}]}", "{\"data\":[{\"embedding\":[1,\"x\"]}]}",
                         "{\"data\":{\"embedding\":[1]}}", "[1,2]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_neq(openai_parse_embedding(bad[i], strlen(bad[i]), &r, &e), PWB_OK, "%s", bad[i]);
        cr_assert_null(r.embedding);
        llm_response_clear(&r);
    }
    cr_assert_eq(openai_parse_embedding("{\"data\":", 8, &r, &e), PWB_EPARSE);
}
