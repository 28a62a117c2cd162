/* Cost control: the shipped price table and its lookup, request costs, the --max-cost budget (alone
 * and through a backend against fakellm), and the dry run's token counter (by rule, and with the
 * model's own tokenizer checked against what the local engine reports). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/tokenizer.h"
#include "fakesrv.h"
#include "llm/backend.h"
#include "llm/budget.h"
#include "llm/estimate.h"
#include "llm/prices.h"
#include "util/buf.h"

static const char *root(void)
{
    const char *r = getenv("PWB_ROOT");
    return r && *r ? r : ".";
}

static void shared_path(char *out, size_t cap, const char *rel)
{
    const char *s = getenv("PWB_SHARED");
    if (s && *s)
        snprintf(out, cap, "%s/%s", s, rel);
    else
        snprintf(out, cap, "%s/../shared/%s", root(), rel);
}

/* ---- the table ---- */

Test(prices, shipped_table_loads_and_is_dated)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/prices/prices.json", root());
    price_table t;
    prices_init(&t);
    pwb_err e;
    cr_assert_eq(prices_load(&t, path, &e), PWB_OK, "%s", e.msg);
    cr_assert(t.n >= 10, "%zu models", t.n);
    cr_assert_not_null(t.as_of);
    cr_assert_eq(strlen(t.as_of), 10, "a date: %s", t.as_of);
    llm_price p;
    cr_assert(prices_lookup(&t, "gpt-4o-mini", &p));
    cr_assert(p.known && p.in_per_m > 0 && p.out_per_m > p.in_per_m);
    cr_assert(p.cached_in_per_m >= 0 && p.cached_in_per_m < p.in_per_m);
    /* dated ids find their family, the longest match wins */
    llm_price q;
    cr_assert(prices_lookup(&t, "gpt-4o-mini-2024-07-18", &q));
    cr_assert_float_eq(q.in_per_m, p.in_per_m, 1e-12);
    llm_price big;
    cr_assert(prices_lookup(&t, "gpt-4o-2024-08-06", &big));
    cr_assert(big.in_per_m > p.in_per_m, "gpt-4o, not gpt-4o-mini");
    cr_assert(prices_lookup(&t, "claude-3-5-haiku-20241022", &q));
    cr_assert(prices_lookup(&t, "openai/gpt-4o-mini", &q), "OpenRouter's provider/model ids");
    cr_assert_float_eq(q.in_per_m, p.in_per_m, 1e-12);
    cr_assert(!prices_lookup(&t, "SmolLM2-135M-Instruct", &q));
    cr_assert(!q.known);
    cr_assert(!prices_lookup(&t, "", &q));
    cr_assert(!prices_lookup(NULL, "gpt-4o", &q));
    /* a suite's price wins over the table */
    llm_price suite = {.known = 1, .in_per_m = 9, .out_per_m = 9, .cached_in_per_m = -1};
    cr_assert(prices_resolve(&t, "gpt-4o-mini", &suite, &q));
    cr_assert_float_eq(q.in_per_m, 9, 1e-12);
    cr_assert(prices_resolve(&t, "gpt-4o-mini", NULL, &q));
    cr_assert_float_eq(q.in_per_m, p.in_per_m, 1e-12);
    llm_price none = {0};
    cr_assert(!prices_resolve(&t, "my-local-model", &none, &q));
    prices_free(&t);

    /* prices_find: PWB_PRICES wins; a missing one is an error naming it */
    pwb_buf b;
    buf_init(&b);
    setenv("PWB_PRICES", path, 1);
    cr_assert_eq(prices_find(&b, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(b.data, path);
    setenv("PWB_PRICES", "/nonexistent/prices.json", 1);
    cr_assert_eq(prices_find(&b, &e), PWB_EIO);
    cr_assert(strstr(e.msg, "/nonexistent/prices.json"));
    unsetenv("PWB_PRICES");
    buf_free(&b);
}

Test(prices, prefix_lookup_stops_at_boundaries)
{
    const char *j = "{\"models\":{\"gpt-4\":{\"input\":30,\"output\":60},"
                    "\"gpt-4o\":{\"input\":2.5,\"output\":10},"
                    "\"_note\":\"comments are skipped\","
                    "\"llama3.2\":{\"input\":0,\"output\":0}}}";
    price_table t;
    prices_init(&t);
    pwb_err e;
    cr_assert_eq(prices_parse(&t, j, strlen(j), "t.json", &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(t.n, 3);
    llm_price p;
    cr_assert(prices_lookup(&t, "gpt-4-0613", &p));
    cr_assert_float_eq(p.in_per_m, 30, 1e-12);
    cr_assert(prices_lookup(&t, "gpt-4o-2024-05-13", &p));
    cr_assert_float_eq(p.in_per_m, 2.5, 1e-12);
    cr_assert(!prices_lookup(&t, "gpt-4.1", &p), "'.' is not a boundary: gpt-4.1 is not gpt-4");
    cr_assert(!prices_lookup(&t, "gpt-4x", &p));
    cr_assert(prices_lookup(&t, "llama3.2:1b", &p), "Ollama tags");
    cr_assert(p.known && p.in_per_m == 0);
    cr_assert_lt(p.cached_in_per_m, 0, "not given");
    prices_free(&t);
}

Test(prices, bad_tables_are_errors)
{
    const char *bad[] = {
        "{\"models\":{\"m\":{\"input\":-1,\"output\":1}}}",
        "{\"models\":{\"m\":{\"input\":1}}}",
        "{\"models\":{\"m\":{\"input\":\"1\",\"output\":1}}}",
        "{\"models\":{\"m\":[1,2]}}",
        "{\"models\":{\"m\":{\"input\":1,\"output\":1},\"m\":{\"input\":1,\"output\":1}}}",
        "{\"models\":[]}",
        "[]",
        "{\"models\":{\"m\":{\"input\":1,\"output\":1e400}}}",
        "{\"models\":{\"m\":{\"input\":1,\"output\":1,\"cached_input\":-3}}}",
        "{\"models\":",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        price_table t;
        prices_init(&t);
        pwb_err e;
        err_clear(&e);
        cr_assert_neq(prices_parse(&t, bad[i], strlen(bad[i]), "bad.json", &e), PWB_OK, "case %zu", i);
        cr_assert(strstr(e.msg, "bad.json"), "case %zu names the file: %s", i, e.msg);
        cr_assert_eq(t.n, 0);
        prices_free(&t);
    }
}

Test(prices, cost_arithmetic)
{
    llm_price p = {.known = 1, .in_per_m = 2.5, .out_per_m = 10, .cached_in_per_m = 1.25};
    cr_assert_float_eq(llm_estimate_cost(&p, 1e6, 5e5, 0), 2.5 + 5.0, 1e-9);
    cr_assert_float_eq(llm_estimate_cost(&p, 1e6, 0, 4e5), 0.6 * 2.5 + 0.4 * 1.25, 1e-9);
    cr_assert_float_eq(llm_estimate_cost(&p, 100, 0, 1000), 100 * 1.25 / 1e6, 1e-15, "cached <= prompt");
    cr_assert_eq(llm_estimate_cost(&p, -5, -5, -5), 0);
    p.cached_in_per_m = -1;
    cr_assert_float_eq(llm_estimate_cost(&p, 1e6, 0, 1e6), 2.5, 1e-9, "no cached price: billed as input");
    llm_price unknown = {0};
    cr_assert_eq(llm_estimate_cost(&unknown, 1e9, 1e9, 0), 0);
    cr_assert_eq(llm_estimate_cost(NULL, 1e9, 1e9, 0), 0);
}

/* ---- the budget ---- */

Test(budget, reserve_settle_refuse)
{
    llm_budget b;
    llm_budget_init(&b, 1.0, 0.25);
    pwb_err e;
    cr_assert_eq(llm_budget_reserve(&b, 0.5, &e), PWB_OK);
    cr_assert_float_eq(llm_budget_remaining(&b), 0.25, 1e-12);
    cr_assert_eq(llm_budget_reserve(&b, 0.3, &e), PWB_ELIMIT);
    cr_assert(strstr(e.msg, "cost limit of $1.0000"), "%s", e.msg);
    cr_assert_eq(b.refused, 1);
    llm_budget_settle(&b, 0.5, 0.1); /* it cost less than it held */
    cr_assert_float_eq(llm_budget_spent(&b), 0.35, 1e-12);
    cr_assert_eq(llm_budget_reserve(&b, 0.3, &e), PWB_OK, "room again");
    cr_assert_eq(llm_budget_reserve(&b, INFINITY, &e), PWB_ELIMIT);
    cr_assert_eq(llm_budget_reserve(&b, NAN, &e), PWB_OK, "NaN holds nothing");
    llm_budget_settle(&b, 0.3, 0);
    llm_budget_add(&b, 0.6);
    cr_assert_float_eq(llm_budget_spent(&b), 0.95, 1e-12);
    llm_budget_free(&b);

    llm_budget over;
    llm_budget_init(&over, 1.0, 5.0); /* a resumed run that already spent more than the limit */
    cr_assert_eq(llm_budget_reserve(&over, 0, &e), PWB_OK, "a free request still goes");
    cr_assert_eq(llm_budget_reserve(&over, 1e-9, &e), PWB_ELIMIT);
    llm_budget_settle(&over, 0, -10);
    cr_assert_float_eq(llm_budget_spent(&over), 5.0, 1e-12, "negative costs are ignored");
    llm_budget_free(&over);

    llm_budget none;
    llm_budget_init(&none, 0, 0);
    cr_assert_eq(llm_budget_reserve(&none, 1e12, &e), PWB_OK, "no limit");
    llm_budget_free(&none);
}

static fakesrv g_srv;
static void fini(void) { fakesrv_stop(&g_srv); }
TestSuite(budget_http, .fini = fini, .timeout = 60);

/* A dollar a token: each request holds ~28 (about 24 estimated prompt tokens + max_tokens 4) and
 * costs 9 (8 prompt words + 1 reply word, fakellm's usage). */
static int run_with_budget(double limit, int conc, test_reqs *t, llm_budget *b, pwb_err *e)
{
    llm_price price = {.known = 1, .in_per_m = 1e6, .out_per_m = 1e6, .cached_in_per_m = -1};
    llm_budget_init(b, limit, 0);
    llm_config c;
    llm_config_defaults(&c);
    c.name = "paid";
    c.base_url = g_srv.base;
    c.model = "m";
    c.concurrency = conc;
    c.max_retries = 0;
    c.price = &price;
    c.budget = b;
    llm_backend *be = NULL;
    cr_assert_eq(llm_backend_create(&be, &c, e), PWB_OK, "%s", e->msg);
    int rc = be->run(be, t->req, t->n, t->out, test_reqs_on_done, t, e);
    llm_backend_free(be);
    return rc;
}

Test(budget_http, max_cost_stops_before_the_limit)
{
    fakesrv_start(&g_srv, (const char *const[]){"--reply", "ok", NULL});
    for (int conc = 1; conc <= 4; conc += 3) {
        int before = fakesrv_stat(&g_srv, "requests");
        test_reqs t;
        test_reqs_init(&t, 40, 4);
        llm_budget b;
        pwb_err e;
        err_clear(&e);
        int rc = run_with_budget(100.0, conc, &t, &b, &e);
        cr_assert_eq(rc, PWB_ELIMIT, "conc %d: rc %d %s", conc, rc, e.msg);
        cr_assert(strstr(e.msg, "cost limit"), "%s", e.msg);
        int answered = 0;
        for (size_t i = 0; i < t.n; i++) {
            if (!t.out[i].error) {
                answered++;
                cr_assert_eq(t.done[i], 1);
                cr_assert_eq(t.out[i].tokens_in + t.out[i].tokens_out, 9);
            } else {
                cr_assert_eq(t.done[i], 0, "an unsent request is not reported done");
                cr_assert_str_eq(t.out[i].error, "not sent: cost limit reached");
            }
        }
        double spent = llm_budget_spent(&b);
        cr_log_info("concurrency %d: %d answered, $%.0f spent of $100", conc, answered, spent);
        cr_assert(spent <= 100.0, "spent %g", spent);
        cr_assert_float_eq(spent, 9.0 * answered, 1e-9, "billed at the replies' usage");
        cr_assert(answered >= 8 && answered <= 10, "%d", answered);
        cr_assert_eq(fakesrv_stat(&g_srv, "requests") - before, answered, "nothing unsent reached the server");
        cr_assert_eq(b.reserved_usd, 0, "nothing held after the batch");
        llm_budget_free(&b);
        test_reqs_free(&t);
    }
    /* a budget that fits the whole batch changes nothing */
    test_reqs t;
    test_reqs_init(&t, 20, 4);
    llm_budget b;
    pwb_err e;
    cr_assert_eq(run_with_budget(1000.0, 4, &t, &b, &e), PWB_OK, "%s", e.msg);
    cr_assert_float_eq(llm_budget_spent(&b), 180.0, 1e-9);
    llm_budget_free(&b);
    test_reqs_free(&t);
}

/* ---- token estimates ---- */

Test(estimate, rule_of_four)
{
    cr_assert_eq(llm_text_tokens_estimate(0), 0);
    cr_assert_eq(llm_text_tokens_estimate(1), 1);
    cr_assert_eq(llm_text_tokens_estimate(8), 2);
    cr_assert_eq(llm_text_tokens_estimate(9), 3);
    llm_message m[2] = {{"system", "12345678"}, {"user", "1234"}};
    llm_request r = {.mode = LLM_GENERATE, .messages = m, .n_messages = 2, .max_tokens = 7};
    double in, out;
    llm_request_estimate(&r, &in, &out);
    cr_assert_float_eq(in, LLM_EST_REPLY_TOKENS + (LLM_EST_MSG_TOKENS + 2) + (LLM_EST_MSG_TOKENS + 1), 1e-12);
    cr_assert_float_eq(out, 7, 1e-12);
    r.max_tokens = 0;
    llm_request_estimate(&r, &in, &out);
    cr_assert_float_eq(out, LLM_EST_DEFAULT_OUT, 1e-12);
    const char *ch[] = {"no", "yes!"};
    llm_request rk = {.mode = LLM_RANK, .prompt = "12345678", .choices = ch, .n_choices = 2};
    llm_request_estimate(&rk, &in, &out);
    cr_assert_float_eq(in, (2 + 1) + (2 + 1), 1e-12, "prompt once per choice, plus the choice");
    cr_assert_float_eq(out, 2, 1e-12);

    /* the counter without a tokenizer is the same rule, and estimates cost */
    llm_config c;
    llm_config_defaults(&c);
    c.provider = "openai-completions";
    llm_counter *ctr = NULL;
    pwb_err e;
    cr_assert_eq(llm_counter_open(&ctr, &c, &e), PWB_OK, "%s", e.msg);
    cr_assert(!llm_counter_exact(ctr));
    cr_assert_str_eq(llm_counter_method(ctr), "bytes/4");
    llm_request reqs[2] = {r, rk};
    reqs[0].max_tokens = 10;
    llm_price p = {.known = 1, .in_per_m = 1e6, .out_per_m = 2e6};
    llm_estimate est = {0};
    cr_assert_eq(llm_counter_add(ctr, reqs, 2, &p, &est, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(est.requests, 2);
    cr_assert_eq(est.calls, 3, "a rank over completions is one call per choice");
    cr_assert_float_eq(est.tokens_in, 14 + 6, 1e-9);
    cr_assert_float_eq(est.tokens_out_max, 10 + 2, 1e-9);
    cr_assert_float_eq(est.cost_usd, 20 + 2 * 12, 1e-9);
    llm_counter_free(ctr);
}

Test(estimate, tokenizer_counts_what_the_local_engine_reports)
{
    char model[4096];
    shared_path(model, sizeof model, "models/tinystories-656k/TinyStories-656K-Q8_0.gguf");
    if (access(model, R_OK) != 0)
        cr_skip_test("no %s", model);
    llm_config c;
    llm_config_defaults(&c);
    c.name = "tiny";
    c.provider = "local";
    c.model = model;
    c.threads = 1;
    llm_counter *ctr = NULL;
    pwb_err e;
    cr_assert_eq(llm_counter_open(&ctr, &c, &e), PWB_OK, "%s", e.msg);
    cr_assert(llm_counter_exact(ctr));
    cr_assert(strstr(llm_counter_method(ctr), "tokenizer "));
    const char *prompts[] = {"Once upon a time, there was a little dog named Max.",
                             "Lily and Tom went to the park. They saw a big, red ball",
                             "The sun"};
    llm_request reqs[3];
    for (int i = 0; i < 3; i++)
        reqs[i] = (llm_request){.mode = LLM_GENERATE, .prompt = prompts[i], .max_tokens = 2};
    llm_estimate est = {0};
    cr_assert_eq(llm_counter_add(ctr, reqs, 3, NULL, &est, &e), PWB_OK, "%s", e.msg);
    llm_counter_free(ctr);

    llm_backend *b = NULL;
    cr_assert_eq(llm_backend_create(&b, &c, &e), PWB_OK, "%s", e.msg);
    llm_response out[3] = {0};
    cr_assert_eq(b->run(b, reqs, 3, out, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    double used = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert_null(out[i].error, "%s", out[i].error);
        used += out[i].tokens_in;
        llm_response_clear(&out[i]);
    }
    llm_backend_free(b);
    cr_assert_float_eq(est.tokens_in, used, 1e-9, "dry run %g vs engine %g", est.tokens_in, used);
    cr_assert_float_eq(est.tokens_out_max, 6, 1e-9);
}

Test(estimate, chat_template_counts_like_the_server)
{
    char gguf[4096], tj[4096];
    snprintf(gguf, sizeof gguf, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", root());
    shared_path(tj, sizeof tj, "models/smollm2-tokenizer/tokenizer.json");
    if (access(gguf, R_OK) != 0 || access(tj, R_OK) != 0)
        cr_skip_test("SmolLM2 GGUF (make model) or its tokenizer.json missing");
    /* an HTTP model served from this GGUF (llama.cpp) names it as its tokenizer */
    llm_config c;
    llm_config_defaults(&c);
    c.name = "smol";
    c.provider = "llamacpp";
    c.tokenizer = gguf;
    llm_counter *ctr = NULL;
    pwb_err e;
    cr_assert_eq(llm_counter_open(&ctr, &c, &e), PWB_OK, "%s", e.msg);
    llm_message m[] = {{"user", "Is this review positive or negative? A gripping, funny film."}};
    llm_request r = {.mode = LLM_GENERATE, .messages = m, .n_messages = 1, .max_tokens = 5};
    long n = 0;
    cr_assert_eq(llm_counter_prompt_tokens(ctr, &r, &n, &e), PWB_OK, "%s", e.msg);
    llm_counter_free(ctr);
    /* the same text rendered by hand (ChatML with SmolLM2's default system turn), counted with the
     * model's tokenizer.json */
    const char *rendered = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                           "Face<|im_end|>\n<|im_start|>user\nIs this review positive or negative? A gripping, "
                           "funny film.<|im_end|>\n<|im_start|>assistant\n";
    tokenizer *tok = NULL;
    cr_assert_eq(tokenizer_from_json(&tok, tj, &e), PWB_OK, "%s", e.msg);
    int32_t *ids = NULL;
    size_t k = 0;
    cr_assert(tokenizer_encode(tok, rendered, strlen(rendered), 1, 1, &ids, &k, &e) >= 0);
    free(ids);
    tokenizer_free(tok);
    cr_assert_eq((size_t)n, k, "counter %ld, by hand %zu", n, k);
    cr_assert(k > 30 && k < 60, "%zu", k);

    /* a tokenizer file that does not exist is an error that names it */
    c.tokenizer = "/nonexistent/tokenizer.json";
    cr_assert_neq(llm_counter_open(&ctr, &c, &e), PWB_OK);
    cr_assert(strstr(e.msg, "smol"), "%s", e.msg);
}
