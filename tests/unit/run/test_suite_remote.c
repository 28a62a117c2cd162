/* Suite fields for remote models (src/run/suite.c): presets, streaming, rate limits, keys over
 * http, a tokenizer for --dry-run, the cached-input price; and their errors, which name the file
 * and the field. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "run/suite.h"

#define HEAD "{\"name\":\"x\",\"datasets\":[\"sst2\"],\"methods\":[{\"name\":\"z\",\"template\":\"zero-shot\"}],"

static int parse(pwb_suite *s, const char *json, pwb_err *e)
{
    suite_init(s);
    err_clear(e);
    return suite_parse(s, json, strlen(json), "suites/remote.json", e);
}

static void bad(const char *models, const char *want)
{
    char json[2048];
    snprintf(json, sizeof json, HEAD "\"models\":[%s]}", models);
    pwb_suite s;
    pwb_err e;
    cr_assert_neq(parse(&s, json, &e), PWB_OK, "accepted: %s", json);
    cr_assert_not_null(strstr(e.msg, want), "want '%s', got '%s'", want, e.msg);
    cr_assert_not_null(strstr(e.msg, "suites/remote.json"), "%s", e.msg);
    suite_free(&s);
}

Test(suite_remote, fields_parse)
{
    const char *json = HEAD "\"models\":["
                            "{\"name\":\"a\",\"provider\":\"openai\",\"preset\":\"openrouter\",\"model\":\"openai/gpt-4o\","
                            "\"api_key_env\":\"OPENROUTER_API_KEY\",\"stream\":true,\"rpm\":500,\"tpm\":200000,"
                            "\"adaptive_concurrency\":true,\"price\":{\"input\":2.5,\"output\":10,\"cached_input\":1.25}},"
                            "{\"name\":\"b\",\"provider\":\"groq\",\"model\":\"llama-3.1-8b-instant\","
                            "\"api_key_env\":\"GROQ_API_KEY\"},"
                            "{\"name\":\"c\",\"provider\":\"ollama\",\"model\":\"llama3.2\"},"
                            "{\"name\":\"d\",\"provider\":\"anthropic\",\"model\":\"claude-3-5-haiku\",\"api_key_env\":\"K\"},"
                            "{\"name\":\"e\",\"provider\":\"openai-completions\",\"base_url\":\"http://10.0.0.5:8000/v1\","
                            "\"model\":\"m\",\"api_key_env\":\"K\",\"allow_insecure_key\":true,"
                            "\"tokenizer\":\"models/x/tokenizer.json\",\"price\":{\"cpu_hour\":1}}]}";
    pwb_suite s;
    pwb_err e;
    cr_assert_eq(parse(&s, json, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(s.n_models, 5);
    const suite_model *a = &s.models[0], *b = &s.models[1], *c = &s.models[2], *d = &s.models[3], *m = &s.models[4];
    cr_assert_str_eq(a->preset, "openrouter");
    cr_assert_null(a->base_url, "a preset gives the base URL");
    cr_assert_eq(a->stream, 1);
    cr_assert_float_eq(a->rpm, 500, 1e-9);
    cr_assert_float_eq(a->tpm, 200000, 1e-9);
    cr_assert_eq(a->adaptive_concurrency, 1);
    cr_assert_eq(a->allow_insecure_key, 0);
    cr_assert_eq(a->price_given, 1);
    cr_assert_float_eq(a->price_cached_in_per_m, 1.25, 1e-12);
    cr_assert_str_eq(b->provider, "groq");
    cr_assert_null(b->preset);
    cr_assert_eq(b->price_given, 0, "no price in the suite: the shipped table decides");
    cr_assert_lt(b->price_cached_in_per_m, 0, "cached_input not given");
    cr_assert_eq(b->stream, 0);
    cr_assert_float_eq(b->rpm, 0, 1e-12);
    cr_assert_null(c->base_url);
    cr_assert_str_eq(d->provider, "anthropic");
    cr_assert_eq(m->allow_insecure_key, 1);
    cr_assert_str_eq(m->tokenizer, "models/x/tokenizer.json");
    cr_assert_eq(m->price_given, 0, "cpu_hour alone is not a token price");
    suite_free(&s);
}

Test(suite_remote, errors_name_file_and_field)
{
    bad("{\"name\":\"m\",\"provider\":\"openia\",\"model\":\"x\",\"base_url\":\"http://h\"}",
        "models[0].provider 'openia' is not a provider");
    bad("{\"name\":\"m\",\"provider\":\"openai\",\"preset\":\"nosuch\",\"model\":\"x\"}", "models[0].preset 'nosuch'");
    bad("{\"name\":\"m\",\"provider\":\"ollama\",\"preset\":\"vllm\",\"model\":\"x\"}",
        "models[0].preset is for provider openai or openai-completions");
    bad("{\"name\":\"m\",\"provider\":\"openai-completions\",\"model\":\"x\"}", "models[0].base_url is required");
    bad("{\"name\":\"m\",\"provider\":\"vllm\",\"model\":\"x\",\"stream\":\"yes\"}", "models[0].stream must be true or false");
    bad("{\"name\":\"m\",\"provider\":\"vllm\",\"model\":\"x\",\"rpm\":-1}", "models[0].rpm must be a number from 0");
    bad("{\"name\":\"m\",\"provider\":\"vllm\",\"model\":\"x\",\"tpm\":\"many\"}", "models[0].tpm must be a number");
    bad("{\"name\":\"m\",\"provider\":\"vllm\",\"model\":\"x\",\"adaptive_concurrency\":2}",
        "models[0].adaptive_concurrency must be true or false");
    bad("{\"name\":\"m\",\"provider\":\"vllm\",\"model\":\"x\",\"allow_insecure_key\":null,\"tokenizer\":\"\"}",
        "models[0].tokenizer must be a non-empty string");
    bad("{\"name\":\"m\",\"provider\":\"local\",\"model\":\"x.gguf\",\"tokenizer\":\"t.json\"}",
        "models[0].tokenizer: a local model counts with its own tokenizer");
    bad("{\"name\":\"m\",\"provider\":\"vllm\",\"model\":\"x\",\"price\":{\"cached_input\":-0.5}}",
        "models[0].price.cached_input must be a number from 0");
    bad("{\"name\":\"m\",\"provider\":\"vllm\",\"model\":\"x\",\"streaming\":true}", "models[0].unknown field 'streaming'");
}

