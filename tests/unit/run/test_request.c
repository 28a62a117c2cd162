/* The response cache's key and value forms (src/run/request.c). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "llm/backend.h"
#include "run/request.h"
#include "util/buf.h"

static llm_config cfg(void)
{
    llm_config c;
    llm_config_defaults(&c);
    c.provider = "openai";
    c.base_url = "http://127.0.0.1:8080/v1";
    c.model = "m-1";
    c.api_key_env = "SECRET_KEY_VAR";
    return c;
}

static const llm_message msgs[] = {{"system", "Be brief."}, {"user", "Is \"this\" good?\n"}};

static llm_request req(void)
{
    llm_request r;
    memset(&r, 0, sizeof r);
    r.messages = msgs;
    r.n_messages = 2;
    r.prompt = "flat";
    r.max_tokens = 8;
    r.top_p = 1.0;
    return r;
}

static void key_of(const llm_config *c, const llm_request *r, char key[65])
{
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(req_cache_key(c, r, key, &b), 0);
    buf_free(&b);
}

Test(request, canonical_form_is_fixed)
{
    llm_config c = cfg();
    llm_request r = req();
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(req_canonical(&c, &r, &b), 0);
    cr_assert_str_eq(b.data, "{\"v\":1,\"provider\":\"openai\",\"base_url\":\"http://127.0.0.1:8080/v1\",\"model\":\"m-1\","
                             "\"mode\":\"generate\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                             "{\"role\":\"user\",\"content\":\"Is \\\"this\\\" good?\\n\"}],\"max_tokens\":8,"
                             "\"temperature\":0,\"top_p\":1}");
    cr_assert_null(strstr(b.data, "SECRET"), "the key's variable is not part of the request");
    buf_free(&b);
}

Test(request, key_changes_with_what_changes_the_answer)
{
    llm_config c = cfg();
    llm_request r = req();
    char k0[65], k[65];
    key_of(&c, &r, k0);
    key_of(&c, &r, k);
    cr_assert_str_eq(k0, k, "deterministic");
    cr_assert_eq(strlen(k0), 64);

    llm_request r2 = r;
    r2.max_tokens = 9;
    key_of(&c, &r2, k);
    cr_assert_str_neq(k0, k);
    llm_message other[] = {{"system", "Be brief."}, {"user", "Is \"this\" bad?\n"}};
    r2 = r;
    r2.messages = other;
    key_of(&c, &r2, k);
    cr_assert_str_neq(k0, k);
    llm_config c2 = c;
    c2.model = "m-2";
    key_of(&c2, &r, k);
    cr_assert_str_neq(k0, k);
    c2 = c;
    c2.base_url = "http://127.0.0.1:8081/v1";
    key_of(&c2, &r, k);
    cr_assert_str_neq(k0, k);

    /* what does not change the answer does not change the key */
    c2 = c;
    c2.api_key_env = "OTHER";
    c2.concurrency = 99;
    c2.timeout_s = 1;
    key_of(&c2, &r, k);
    cr_assert_str_eq(k0, k);
    r2 = r;
    r2.seed = 12345; /* greedy: the seed is not used */
    key_of(&c, &r2, k);
    cr_assert_str_eq(k0, k);
}

Test(request, only_temperature_zero_is_cacheable)
{
    llm_request r = req();
    cr_assert(req_cacheable(&r));
    r.temperature = 0.7;
    cr_assert_not(req_cacheable(&r));
}

Test(request, response_round_trip)
{
    llm_response a;
    memset(&a, 0, sizeof a);
    a.text = strdup("positive");
    a.finish_reason = strdup("stop");
    a.tokens_in = 41;
    a.tokens_out = 1;
    a.latency_s = 0.25;
    a.http_status = 200;
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(resp_encode(&a, 0, &b), 0);
    llm_response d;
    cr_assert_eq(resp_decode(b.data, 0, &d), 0);
    cr_assert_str_eq(d.text, "positive");
    cr_assert_str_eq(d.finish_reason, "stop");
    cr_assert_eq(d.tokens_in, 41);
    cr_assert_eq(d.tokens_out, 1);
    cr_assert_float_eq(d.latency_s, 0.25, 1e-12);
    cr_assert_eq(d.http_status, 200);
    cr_assert_null(d.error);
    llm_response_clear(&d);
    llm_response_clear(&a);

    /* rank: the log-probabilities come back exactly */
    memset(&a, 0, sizeof a);
    double lp[3] = {-0.125, -3.5, -1e-9};
    a.choice_logprob = malloc(sizeof lp);
    memcpy(a.choice_logprob, lp, sizeof lp);
    a.choice = 2;
    a.tokens_in = -1;
    a.tokens_out = -1;
    cr_assert_eq(resp_encode(&a, 3, &b), 0);
    cr_assert_eq(resp_decode(b.data, 3, &d), 0);
    cr_assert_eq(d.choice, 2);
    for (int i = 0; i < 3; i++)
        cr_assert_float_eq(d.choice_logprob[i], lp[i], 1e-15);
    cr_assert_eq(d.tokens_in, -1);
    llm_response_clear(&d);
    /* a rank entry read for a different number of choices is a miss */
    cr_assert_neq(resp_decode(b.data, 2, &d), 0);
    cr_assert_null(d.choice_logprob);
    llm_response_clear(&a);
    buf_free(&b);
}

Test(request, damaged_cache_values_are_misses)
{
    const char *bad[] = {"", "null", "[1,2]", "{\"text\": 5}", "{\"tokens_in\": 3}", "{\"text\": \"x\"",
                         "{\"choice_logprob\": [\"a\", 1]}", NULL};
    for (int i = 0; bad[i]; i++) {
        llm_response d;
        int n_choices = i == 6 ? 2 : 0;
        cr_assert_neq(resp_decode(bad[i], n_choices, &d), 0, "accepted: %s", bad[i]);
        cr_assert_null(d.text);
    }
}

/* A cached answer keeps the prompt tokens its provider read from its own cache, so its stored
 * cost (billed at the cached-input price) is the original request's. */
Test(request, cache_keeps_cached_input_tokens)
{
    llm_response r;
    memset(&r, 0, sizeof r);
    r.text = "positive";
    r.tokens_in = 120;
    r.tokens_out = 2;
    r.tokens_cached_in = 100;
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(resp_encode(&r, 0, &b), 0);
    llm_response back;
    cr_assert_eq(resp_decode(b.data, 0, &back), 0);
    cr_assert_eq(back.tokens_in, 120);
    cr_assert_eq(back.tokens_cached_in, 100);
    llm_response_clear(&back);
    r.tokens_cached_in = 0;
    cr_assert_eq(resp_encode(&r, 0, &b), 0);
    cr_assert_null(strstr(b.data, "tokens_cached_in"), "entries without cached tokens keep their old form");
    cr_assert_eq(resp_decode("{\"text\":\"x\",\"tokens_in\":3,\"tokens_cached_in\":-7}", 0, &back), 0);
    cr_assert_eq(back.tokens_cached_in, 0);
    llm_response_clear(&back);
    buf_free(&b);
}
