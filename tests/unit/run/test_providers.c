/* The suite parser's provider and preset names (bench may not include llm/) agree with the
 * presets src/llm/remote.c knows and with the providers llm_backend_create accepts. */
#include <criterion/criterion.h>
#include <string.h>

#include "run/suite.h"
#include "llm/backend.h"
#include "llm/remote.h"

Test(providers, suite_names_match_llm_presets)
{
    size_t n = 0;
    const llm_preset *p = llm_preset_list(&n);
    cr_assert_gt(n, 5);
    for (size_t i = 0; i < n; i++) {
        cr_assert(suite_provider_known(p[i].name), "the suite rejects provider '%s'", p[i].name);
        cr_assert(suite_provider_has_default_url(p[i].name, NULL) || !strcmp(p[i].name, "openai"),
                  "'%s' has a default base URL", p[i].name);
        if (!strcmp(p[i].api, "openai"))
            cr_assert(suite_preset_known(p[i].name), "the suite rejects preset '%s'", p[i].name);
        else
            cr_assert(!suite_preset_known(p[i].name), "'%s' is not an OpenAI-compatible preset", p[i].name);
    }
    /* and every name the suite accepts resolves in llm (no surprise at backend creation) */
    const char *names[] = {"openai", "openai-completions", "ollama", "anthropic", "vllm", "llamacpp", "ollama-openai",
                           "openrouter", "together", "groq"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        cr_assert(suite_provider_known(names[i]));
        llm_config c, out;
        llm_config_defaults(&c);
        c.name = "m";
        c.provider = names[i];
        c.base_url = "http://127.0.0.1:9/v1";
        c.model = "x";
        pwb_err e;
        err_clear(&e);
        cr_assert_eq(llm_config_resolve(&c, &out, &e), PWB_OK, "%s: %s", names[i], e.msg);
    }
}

Test(providers, preset_gives_base_url_and_needs_key)
{
    llm_config c, out;
    llm_config_defaults(&c);
    c.name = "m";
    c.provider = "openai-completions";
    c.preset = "vllm";
    c.model = "x";
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(llm_config_resolve(&c, &out, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(out.base_url, "http://127.0.0.1:8000/v1");
    cr_assert_str_eq(out.provider, "openai-completions");
    c.provider = "together";
    c.preset = NULL;
    cr_assert_neq(llm_config_resolve(&c, &out, &e), PWB_OK);
    cr_assert_not_null(strstr(e.msg, "TOGETHER_API_KEY"), "%s", e.msg);
}

#include "run/request.h"
#include "util/buf.h"

/* A cached answer keeps the prompt tokens its provider read from its own cache, so its stored
 * cost (billed at the cached-input price) is the original request's. */
Test(providers, cache_keeps_cached_input_tokens)
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
