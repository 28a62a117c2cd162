/* LLM_RANK over /v1/completions: call bodies, summing echoed log-probabilities by text offset
 * (code points, straddling tokens, missing or unechoed log-probabilities, hostile replies), and
 * whole batches against fakellm, whose fake log-probabilities the tests recompute. */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "fakesrv.h"
#include "llm/openai.h"
#include "util/rng.h"
#include "util/utf8.h"

/* fakellm's fake log-probability of a token (see fake_logprob there). */
static double fake_lp(const char *word, const char *favor)
{
    if (favor && strcmp(word, favor) == 0)
        return -0.05;
    uint32_t h = 2166136261u;
    for (const char *s = word; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return -(0.1 + (double)(h % 400u) / 100.0);
}

Test(logprobs_build, body_and_span)
{
    const char *ch[] = {"positive", "very negative"};
    llm_request r = {.mode = LLM_RANK, .prompt = "Café review: fine. Sentiment: ", .choices = ch, .n_choices = 2,
                     .temperature = 0.7};
    openai_body_opts bo = {.model = "m"};
    pwb_buf b;
    buf_init(&b);
    size_t start = 0, end = 0;
    pwb_err e;
    cr_assert_eq(logprobs_build(&bo, &r, 1, &b, &start, &end, &e), PWB_OK, "%s", e.msg);
    cJSON *j = cJSON_Parse(b.data);
    cr_assert_not_null(j);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "prompt")->valuestring, "Café review: fine. Sentiment: very negative");
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "echo")));
    cr_assert_eq(cJSON_GetObjectItem(j, "logprobs")->valueint, 1);
    cr_assert_eq(cJSON_GetObjectItem(j, "max_tokens")->valueint, 1);
    cr_assert_eq(cJSON_GetObjectItem(j, "temperature")->valuedouble, 0, "greedy, whatever the request says");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "model")->valuestring, "m");
    cJSON_Delete(j);
    /* the span starts before the prompt's trailing space, in code points ("é" is one) */
    cr_assert_eq(start, strlen("Cafe review: fine. Sentiment:"));
    cr_assert_eq(end, strlen("Cafe review: fine. Sentiment: very negative"));
    cr_assert_eq(utf8_codepoints("Café", strlen("Café")), 4);

    /* bad requests */
    buf_reset(&b);
    cr_assert_eq(logprobs_build(&bo, &r, 2, &b, &start, &end, &e), PWB_EINVAL, "no such choice");
    const char *empty[] = {""};
    llm_request r2 = r;
    r2.choices = empty;
    r2.n_choices = 1;
    cr_assert_eq(logprobs_build(&bo, &r2, 0, &b, &start, &end, &e), PWB_EINVAL);
    r2 = r;
    r2.prompt = "   ";
    cr_assert_eq(logprobs_build(&bo, &r2, 0, &b, &start, &end, &e), PWB_EINVAL, "no context");
    buf_free(&b);
}

Test(logprobs_build, chat_messages_rendered_with_a_template)
{
    chat_template ct;
    pwb_err e;
    cr_assert_eq(chat_template_init(&ct, NULL, "chatml", &e), PWB_OK, "%s", e.msg);
    llm_message m[] = {{"system", "Classify."}, {"user", "Great film."}};
    llm_request r = {.mode = LLM_GENERATE, .messages = m, .n_messages = 2};
    openai_body_opts bo = {.ct = &ct};
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(openai_prompt_text(&bo, &r, &b, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(b.data, "<|im_start|>system\nClassify.<|im_end|>\n<|im_start|>user\nGreat film.<|im_end|>\n"
                             "<|im_start|>assistant\n");
    openai_body_opts plain = {0};
    cr_assert_eq(openai_prompt_text(&plain, &r, &b, &e), PWB_OK);
    cr_assert_str_eq(b.data, "Classify.\n\nGreat film.", "no template: joined as before");
    buf_free(&b);
    chat_template_free(&ct);
}

static int parse(const char *body, size_t start, size_t end, double *lp, int *n, llm_response *r, pwb_err *e)
{
    return logprobs_parse(body, strlen(body), start, end, lp, n, r, e);
}

Test(logprobs_parse, sums_the_choice_tokens)
{
    const char *j = "{\"choices\":[{\"text\":\"The answer: yes!\",\"logprobs\":{\"tokens\":[\"The\",\" answer\",\":\","
                    "\" yes\",\"!\"],\"token_logprobs\":[null,-1.0,-0.5,-0.25,-9],\"text_offset\":[0,3,10,11,15]}}],"
                    "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}";
    double lp;
    int n;
    llm_response r = {0};
    pwb_err e;
    cr_assert_eq(parse(j, 11, 15, &lp, &n, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_float_eq(lp, -0.25, 1e-12);
    cr_assert_eq(n, 1);
    cr_assert_eq(r.tokens_in, 4);
    cr_assert_eq(r.tokens_out, 1);
    /* a longer choice ": yes" covers two tokens */
    cr_assert_eq(parse(j, 10, 15, &lp, &n, NULL, &e), PWB_OK);
    cr_assert_float_eq(lp, -0.75, 1e-12);
    cr_assert_eq(n, 2);

    /* a token that straddles the boundary belongs to the choice; generated tokens past it do not */
    const char *s = "{\"choices\":[{\"logprobs\":{\"tokens\":[\"The\",\" answer:\",\" ye\",\"s\",\"!\"],"
                    "\"token_logprobs\":[null,-1.0,-0.5,-0.25,-9],\"text_offset\":[0,3,11,14,15]}}]}";
    cr_assert_eq(parse(s, 12, 15, &lp, &n, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_float_eq(lp, -0.75, 1e-12);
    cr_assert_eq(n, 2);
    cr_assert_eq(r.tokens_in, -1, "no usage");

    /* offsets are code points: "ééé" is 3 characters but 6 bytes */
    const char *u = "{\"choices\":[{\"logprobs\":{\"tokens\":[\"é\",\"é\",\"é\",\" x\",\"y\"],"
                    "\"token_logprobs\":[null,-1,-2,-3,-4],\"text_offset\":[0,1,2,3,5]}}]}";
    cr_assert_eq(parse(u, 3, 5, &lp, &n, NULL, &e), PWB_OK, "%s", e.msg);
    cr_assert_float_eq(lp, -3, 1e-12);
}

/* llama-cpp-python: offsets in the detokenized text, where <|im_start|> and <|im_end|> have no
 * length; the generated tokens (usage.completion_tokens) anchor the choice's end. */
Test(logprobs_parse, anchored_at_the_generated_tokens)
{
    const char *sent = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    size_t start = strlen(sent), end = start + strlen("positive");
    const char *j = "{\"choices\":[{\"logprobs\":{\"tokens\":[\"user\",\"\\n\",\"Hi\",\"\\n\",\"ass\",\"istant\","
                    "\"\\n\",\"positive\",\".\"],\"token_logprobs\":[null,-1,-2,-1,-3,-0.1,-0.2,-4.5,-1.5],"
                    "\"text_offset\":[0,4,5,7,8,11,17,18,26]}}],\"usage\":{\"prompt_tokens\":12,"
                    "\"completion_tokens\":1}}";
    double lp;
    int n;
    llm_response r = {0};
    pwb_err e;
    cr_assert_eq(parse(j, start, end, &lp, &n, &r, &e), PWB_OK, "%s", e.msg);
    cr_assert_float_eq(lp, -4.5, 1e-12);
    cr_assert_eq(n, 1);
    cr_assert_eq(r.tokens_in, 12);
    /* nothing generated (max_tokens 0, as vLLM allows): the end of the last token */
    const char *j0 = "{\"choices\":[{\"logprobs\":{\"tokens\":[\"user\",\"\\n\",\"Hi\",\" positive\"],"
                     "\"token_logprobs\":[null,-1,-2,-4.5],\"text_offset\":[0,4,5,7]}}],"
                     "\"usage\":{\"completion_tokens\":0}}";
    cr_assert_eq(parse(j0, 40, 49, &lp, &n, NULL, &e), PWB_OK, "%s", e.msg);
    cr_assert_float_eq(lp, -4.5, 1e-12);
    /* without usage the prompt's own length is used, which these offsets do not match */
    const char *nu = strstr(j, ",\"usage\"");
    char *copy = strndup(j, (size_t)(nu - j));
    pwb_buf b;
    buf_init(&b);
    buf_printf(&b, "%s}", copy);
    free(copy);
    cr_assert_eq(parse(b.data, start, end, &lp, &n, NULL, &e), PWB_EUNSUP);
    buf_free(&b);
}

Test(logprobs_parse, servers_that_cannot_rank_say_so)
{
    double lp;
    int n;
    pwb_err e;
    const char *nolp = "{\"choices\":[{\"text\":\"x\",\"logprobs\":null}]}";
    cr_assert_eq(parse(nolp, 0, 1, &lp, &n, NULL, &e), PWB_EUNSUP);
    cr_assert(strstr(e.msg, "no prompt log-probabilities"), "%s", e.msg);
    const char *noarr = "{\"choices\":[{\"text\":\"x\",\"logprobs\":{\"tokens\":[\"x\"]}}]}";
    cr_assert_eq(parse(noarr, 0, 1, &lp, &n, NULL, &e), PWB_EUNSUP);
    /* echo ignored: only the generated token, at the end of the prompt */
    const char *noecho = "{\"choices\":[{\"text\":\"!\",\"logprobs\":{\"tokens\":[\"!\"],\"token_logprobs\":[-1],"
                         "\"text_offset\":[15]}}]}";
    cr_assert_eq(parse(noecho, 11, 15, &lp, &n, NULL, &e), PWB_EUNSUP);
    cr_assert(strstr(e.msg, "did not echo"), "%s", e.msg);
    /* a number for the first echoed token: the server's echo is shifted by one position */
    const char *shifted = "{\"choices\":[{\"logprobs\":{\"tokens\":[\"The\",\" answer\",\":\",\" yes\"],"
                          "\"token_logprobs\":[-3.5,-1.0,-0.5,-0.25],\"text_offset\":[0,3,10,11]}}]}";
    cr_assert_eq(parse(shifted, 11, 15, &lp, &n, NULL, &e), PWB_EUNSUP);
    cr_assert(strstr(e.msg, "shifted by one"), "%s", e.msg);
    /* llama-cpp-python 0.3 without BOS text: the first value null, but the generated token left out
     * of the echo and every value one position off (the last echoed token is the prompt's) */
    const char *nobos = "{\"choices\":[{\"text\":\"The answer: yes.\",\"logprobs\":{\"tokens\":[\"The\",\" answer\","
                        "\":\",\" yes\"],\"token_logprobs\":[null,-1.0,-0.5,-0.25],\"text_offset\":[0,3,10,11]}}],"
                        "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}";
    cr_assert_eq(parse(nobos, 11, 15, &lp, &n, NULL, &e), PWB_EUNSUP);
    cr_assert(strstr(e.msg, "shifted by one"), "%s", e.msg);
    /* the same with the generated token echoed last: lines up, ranks */
    const char *aligned = "{\"choices\":[{\"text\":\"The answer: yes.\",\"logprobs\":{\"tokens\":[\"The\",\" answer\","
                          "\":\",\" yes\",\".\"],\"token_logprobs\":[null,-1.0,-0.5,-0.25,-0.1],"
                          "\"text_offset\":[0,3,10,11,15]}}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}";
    cr_assert_eq(parse(aligned, 11, 15, &lp, &n, NULL, &e), PWB_OK, "%s", e.msg);
    cr_assert_float_eq(lp, -0.25, 1e-12);
    /* a null inside the choice */
    const char *nul = "{\"choices\":[{\"logprobs\":{\"token_logprobs\":[null,null],\"text_offset\":[0,3]}}]}";
    cr_assert_eq(parse(nul, 3, 5, &lp, &n, NULL, &e), PWB_EHTTP);
    cr_assert(strstr(e.msg, "no log-probability"), "%s", e.msg);
    /* positive log-probabilities and decreasing offsets are lies */
    const char *pos = "{\"choices\":[{\"logprobs\":{\"token_logprobs\":[null,0.5],\"text_offset\":[0,3]}}]}";
    cr_assert_eq(parse(pos, 3, 5, &lp, &n, NULL, &e), PWB_EHTTP);
    const char *dec = "{\"choices\":[{\"logprobs\":{\"token_logprobs\":[null,-1],\"text_offset\":[4,3]}}]}";
    cr_assert_eq(parse(dec, 3, 5, &lp, &n, NULL, &e), PWB_EHTTP);
    cr_assert_eq(parse("{\"error\":{\"message\":\"logits_all is off\"}}", 0, 1, &lp, &n, NULL, &e), PWB_EHTTP);
    cr_assert(strstr(e.msg, "logits_all is off"));
    cr_assert_eq(parse("{\"choices\":[{\"logprobs\":{\"token_lo", 0, 1, &lp, &n, NULL, &e), PWB_EPARSE, "retried");
}

Test(logprobs_parse, random_garbage_never_crashes)
{
    const char *good = "{\"choices\":[{\"text\":\"The answer: yes\",\"logprobs\":{\"tokens\":[\"The\",\" answer\",\":\","
                       "\" yes\"],\"token_logprobs\":[null,-1.0,-0.5,-0.25],\"text_offset\":[0,3,10,11]}}],"
                       "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}";
    size_t n = strlen(good);
    pwb_rng rng;
    rng_init(&rng, 11);
    char *buf = malloc(n + 1);
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, good, n + 1);
        int muts = 1 + (int)rng_below(&rng, 4);
        for (int k = 0; k < muts; k++)
            buf[rng_below(&rng, n)] = (char)(rng_below(&rng, 2) ? "{}[],:\"0-9en."[rng_below(&rng, 13)] : (char)rng_below(&rng, 256));
        size_t len = rng_below(&rng, 8) ? n : rng_below(&rng, n + 1);
        double lp = 1;
        int nt = -1;
        llm_response r = {0};
        pwb_err e;
        int rc = logprobs_parse(buf, len, 11, 15, &lp, &nt, &r, &e);
        if (rc == PWB_OK)
            cr_assert(lp <= 1e-6 && nt >= 1);
        else
            cr_assert(e.msg[0]);
    }
    free(buf);
}

/* ---- against fakellm ---- */

static fakesrv g_srv;
static void fini(void) { fakesrv_stop(&g_srv); }
TestSuite(logprobs_http, .fini = fini, .timeout = 60);

static llm_backend *backend(const char *provider, int retries)
{
    llm_config c;
    llm_config_defaults(&c);
    c.name = "rank";
    c.provider = provider;
    c.base_url = g_srv.base;
    c.model = "m";
    c.concurrency = 4;
    c.max_retries = retries;
    c.backoff_base_s = 0.005;
    c.backoff_max_s = 0.02;
    llm_backend *b = NULL;
    pwb_err e;
    cr_assert_eq(llm_backend_create(&b, &c, &e), PWB_OK, "%s", e.msg);
    return b;
}

typedef struct batch {
    llm_request req[8];
    llm_response out[8];
    int done[8];
    size_t n;
} batch;

static void on_done(void *ctx, size_t i, const llm_response *r)
{
    batch *b = ctx;
    cr_assert(i < b->n);
    cr_assert_eq(r, &b->out[i]);
    b->done[i]++;
}

static const char *g_choices[] = {"negative", "positive", "very positive"};
static const char *g_prompts[] = {"Review: a gripping, funny film. Sentiment: ", "Review: dull. Sentiment: ",
                                  "Review: loved it!\nSentiment: "};

static void make_batch(batch *b)
{
    memset(b, 0, sizeof *b);
    for (int i = 0; i < 3; i++)
        b->req[i] = (llm_request){.mode = LLM_RANK, .prompt = g_prompts[i], .choices = g_choices, .n_choices = 3};
    b->req[3] = (llm_request){.mode = LLM_GENERATE, .prompt = "Say hi", .max_tokens = 3};
    b->n = 4;
}

static void check_batch(batch *b)
{
    for (size_t i = 0; i < 3; i++) {
        llm_response *r = &b->out[i];
        cr_assert_null(r->error, "%zu: %s", i, r->error);
        cr_assert_eq(b->done[i], 1);
        cr_assert_not_null(r->choice_logprob);
        cr_assert_null(r->text);
        cr_assert_float_eq(r->choice_logprob[0], fake_lp("negative", "positive"), 1e-9);
        cr_assert_float_eq(r->choice_logprob[1], -0.05, 1e-9);
        cr_assert_float_eq(r->choice_logprob[2], fake_lp("very", "positive") - 0.05, 1e-9, "two tokens summed");
        cr_assert_eq(r->choice, 1);
        cr_assert(r->tokens_in > 0 && r->tokens_out >= 0, "usage summed over the calls");
        cr_assert(r->latency_s > 0);
    }
    cr_assert_eq(b->done[3], 1);
    cr_assert_str_eq(b->out[3].text, "hi there", "the generation in the same batch");
}

Test(logprobs_http, ranks_and_generates_in_one_batch)
{
    fakesrv_start(&g_srv, (const char *const[]){"--favor", "positive", "--rule", "Say hi=hi there", NULL});
    llm_backend *be = backend("openai-completions", 0);
    batch b;
    make_batch(&b);
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, b.n, b.out, on_done, &b, &e), PWB_OK, "%s", e.msg);
    check_batch(&b);
    cr_assert_eq(fakesrv_stat(&g_srv, "requests"), 3 * 3 + 1, "one call per choice");
    for (size_t i = 0; i < b.n; i++)
        llm_response_clear(&b.out[i]);
    llm_backend_free(be);
}

Test(logprobs_http, failed_calls_are_retried)
{
    fakesrv_start(&g_srv, (const char *const[]){"--favor", "positive", "--rule", "Say hi=hi there", "--seed", "5",
                                                "--rate-500", "0.25", "--rate-drop", "0.1", "--rate-malformed", "0.1",
                                                NULL});
    llm_backend *be = backend("openai-completions", 12);
    batch b;
    make_batch(&b);
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, b.n, b.out, on_done, &b, &e), PWB_OK, "%s", e.msg);
    check_batch(&b);
    int retries = 0;
    for (size_t i = 0; i < b.n; i++) {
        retries += b.out[i].retries;
        llm_response_clear(&b.out[i]);
    }
    cr_assert(retries > 0, "faults were injected");
    int posts = fakesrv_stat(&g_srv, "requests"), drops = fakesrv_stat(&g_srv, "drop");
    /* curl itself resends a request whose reused connection was dropped: the server sees it, the
     * client does not count it */
    cr_assert(posts >= 10 + retries && posts <= 10 + retries + drops, "posts %d, retries %d, drops %d", posts,
              retries, drops);
    llm_backend_free(be);
}

static void expect_unranked(const char *const *args, const char *why)
{
    fakesrv_start(&g_srv, args);
    llm_backend *be = backend("openai-completions", 3);
    batch b;
    make_batch(&b);
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, b.n, b.out, on_done, &b, &e), PWB_OK, "%s", e.msg);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_not_null(b.out[i].error);
        cr_assert(strstr(b.out[i].error, why), "%s", b.out[i].error);
        cr_assert(strstr(b.out[i].error, "cannot rank"), "%s", b.out[i].error);
        cr_assert_null(b.out[i].choice_logprob);
        cr_assert_eq(b.out[i].choice, -1);
        cr_assert_eq(b.done[i], 1);
        cr_assert_eq(b.out[i].retries, 0, "not worth retrying");
    }
    cr_assert_null(b.out[3].error, "generation unaffected");
    for (size_t i = 0; i < b.n; i++)
        llm_response_clear(&b.out[i]);
    llm_backend_free(be);
    fakesrv_stop(&g_srv);
}

Test(logprobs_http, servers_without_prompt_logprobs_fail_clearly)
{
    expect_unranked((const char *const[]){"--no-logprobs", NULL}, "no prompt log-probabilities");
    expect_unranked((const char *const[]){"--ignore-echo", NULL}, "did not echo");
}

Test(logprobs_http, chat_endpoint_cannot_rank)
{
    fakesrv_start(&g_srv, NULL);
    llm_backend *be = backend("openai", 0);
    batch b;
    make_batch(&b);
    pwb_err e;
    cr_assert_eq(be->run(be, b.req, 1, b.out, on_done, &b, &e), PWB_OK, "%s", e.msg);
    cr_assert(strstr(b.out[0].error, "openai-completions"), "%s", b.out[0].error);
    cr_assert_eq(fakesrv_stat(&g_srv, "requests"), 0);
    llm_response_clear(&b.out[0]);
    llm_backend_free(be);
}
