/* The provider table (src/llm/provider.c): the names a suite may give, presets, default URLs, and
 * that every row resolves and dispatches. */
#include <criterion/criterion.h>
#include <string.h>

#include "llm/provider.h"
#include "llm/remote.h"

Test(providers, provider_names)
{
    const char *ok[] = {"local", "openai", "openai-completions", "ollama", "anthropic", "vllm", "llamacpp",
                        "ollama-openai", "openrouter", "together", "groq"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        cr_assert(llm_provider_find(ok[i]), "%s", ok[i]);
    cr_assert(!llm_provider_find("OpenAI"));
    cr_assert(!llm_provider_find(""));
    cr_assert(!llm_provider_find(NULL));
    cr_assert(llm_preset_known("openai") && llm_preset_known("groq"));
    cr_assert(!llm_preset_known("ollama") && !llm_preset_known("anthropic") && !llm_preset_known("local"));
    cr_assert(llm_provider_has_default_url("ollama", NULL));
    cr_assert(llm_provider_has_default_url("together", NULL));
    cr_assert(llm_provider_has_default_url("openai", "openai"));
    cr_assert(!llm_provider_has_default_url("openai", NULL));
    cr_assert(!llm_provider_has_default_url("openai-completions", NULL));
    cr_assert(!llm_provider_has_default_url("local", NULL));
}

Test(providers, every_row_resolves_to_a_protocol_row)
{
    size_t n = 0;
    const llm_provider *p = llm_provider_list(&n);
    cr_assert_gt(n, 5);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(llm_provider_find(p[i].name), &p[i]);
        cr_assert_not_null(p[i].create, "%s", p[i].name);
        if (p[i].base_url)
            cr_assert(strncmp(p[i].base_url, "https://", 8) == 0 || url_is_loopback(p[i].base_url), "%s",
                      p[i].name);
        llm_config c, out;
        llm_config_defaults(&c);
        c.name = "m";
        c.provider = p[i].name;
        c.base_url = "http://127.0.0.1:9/v1";
        c.model = "x";
        pwb_err e;
        err_clear(&e);
        cr_assert_eq(llm_config_resolve(&c, &out, &e), PWB_OK, "%s: %s", p[i].name, e.msg);
        const llm_provider *proto = llm_provider_find(out.provider);
        cr_assert_not_null(proto, "%s resolves to '%s'", p[i].name, out.provider);
        cr_assert_str_eq(proto->protocol, proto->name, "%s resolves to a wire protocol", p[i].name);
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

Test(providers, names_for_messages)
{
    pwb_buf b;
    buf_init(&b);
    llm_provider_names(&b, 0);
    cr_assert_str_eq(b.data, "local, openai, openai-completions, ollama, anthropic");
    buf_reset(&b);
    llm_provider_names(&b, 1);
    cr_assert(strstr(b.data, "openai, vllm") && strstr(b.data, "groq") && !strstr(b.data, "anthropic"), "%s", b.data);
    buf_free(&b);
}
