#include <criterion/criterion.h>
#include <string.h>

#include "run/suite.h"
#include "unit/task/helpers.h"
#include "util/rng.h"
#include "util/sha256.h"
#include "util/str.h"

Test(suite, parses_every_field)
{
    pwb_suite s;
    suite_init(&s);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(suite_load(&s, t_repo("tests/fixtures/task/suite_ok.json"), &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(s.name, "fixture-suite");
    cr_assert_eq(s.seed, 1234);
    cr_assert_eq(s.n_datasets, 2);
    cr_assert_str_eq(s.datasets[0].split, "dev");
    cr_assert_eq(s.datasets[0].limit, 200);
    cr_assert_str_eq(s.datasets[1].name, "ag_news");
    cr_assert_null(s.datasets[1].split);
    cr_assert_eq(s.datasets[1].limit, 0);
    cr_assert_eq(s.n_models, 2);
    const suite_model *m = &s.models[0];
    cr_assert_str_eq(m->provider, "local");
    cr_assert_eq(m->concurrency, 1);
    cr_assert_eq(m->timeout_s, 60);
    cr_assert_eq(m->max_retries, 3);
    cr_assert_eq(m->price_cpu_hour, 0.05);
    cr_assert_eq(m->max_tokens, 32);
    cr_assert_str_eq(m->chat_template, "chatml");
    m = &s.models[1];
    cr_assert_str_eq(m->base_url, "http://127.0.0.1:8080/v1");
    cr_assert_str_eq(m->api_key_env, "OPENAI_API_KEY");
    cr_assert_eq(m->concurrency, 8);
    cr_assert_eq(m->timeout_s, 30);
    cr_assert_eq(m->max_retries, 2);
    cr_assert_eq(m->price_in_per_m, 0.15);
    cr_assert_eq(m->price_out_per_m, 0.6);
    cr_assert_eq(m->temperature, 0.2);
    cr_assert_not_null(m->raw);
    cr_assert_eq(s.n_methods, 3);
    cr_assert_str_eq(s.methods[0].scoring, "generate");
    cr_assert_eq(s.methods[0].shots, -1);
    cr_assert_eq(s.methods[1].shots, 8);
    cr_assert_str_eq(s.methods[1].scoring, "rank");
    cr_assert_null(s.methods[2].template_path);
    cr_assert_not_null(s.methods[2].soft_prompt);
    cr_assert_eq(cJSON_GetObjectItem(s.methods[2].soft_prompt, "tokens")->valueint, 20);
    /* sha256 of the minified JSON: whitespace does not change it, content does */
    char *min = cJSON_PrintUnformatted(s.json);
    char hex[65];
    sha256_hex(min, strlen(min), hex);
    cr_assert_str_eq(s.sha256, hex);
    pwb_suite s2;
    suite_init(&s2);
    cr_assert_eq(suite_parse(&s2, min, strlen(min), "min.json", &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(s2.sha256, s.sha256);
    free(min);
    suite_free(&s2);
    /* templates: a bare name resolves to templates/<name>.tmpl */
    pwb_buf p;
    buf_init(&p);
    cr_assert_eq(suite_resolve_template(&s, &s.methods[0], t_repo("templates"), &p, &e), PWB_OK, "%s", e.msg);
    cr_assert(str_ends(p.data, "templates/zero-shot.tmpl"), "%s", p.data);
    buf_free(&p);
    suite_free(&s);
}

static void bad(const char *json, const char *want)
{
    pwb_suite s;
    suite_init(&s);
    pwb_err e;
    err_clear(&e);
    int rc = suite_parse(&s, json, strlen(json), "suites/bad.json", &e);
    cr_assert_neq(rc, PWB_OK, "accepted: %s", json);
    cr_assert_not_null(strstr(e.msg, want), "want '%s', got '%s'", want, e.msg);
    cr_assert_not_null(strstr(e.msg, "suites/bad.json"), "%s", e.msg);
    suite_free(&s);
}

#define DS "\"datasets\":[\"sst2\"]"
#define MO "\"models\":[{\"name\":\"m\",\"provider\":\"local\",\"model\":\"x.gguf\"}]"
#define ME "\"methods\":[{\"name\":\"z\",\"template\":\"zero-shot\"}]"

Test(suite, errors_name_file_and_field)
{
    bad("{\"name\":\"x\",", "malformed JSON");
    bad("[]", "a suite is a JSON object");
    bad("{" DS "," MO "," ME "}", "suite.name is required");
    bad("{\"name\":\"x\",\"sede\":1," DS "," MO "," ME "}", "unknown field 'sede'");
    bad("{\"name\":\"x\",\"seed\":-1," DS "," MO "," ME "}", "seed must be an integer");
    bad("{\"name\":\"x\",\"datasets\":[]," MO "," ME "}", "'datasets' must be a non-empty array");
    bad("{\"name\":\"x\",\"datasets\":[{\"name\":\"sst2\",\"limit\":2.5}]," MO "," ME "}",
        "datasets[0].limit must be an integer");
    bad("{\"name\":\"x\",\"datasets\":[\"sst2\",\"sst2\"]," MO "," ME "}", "datasets[1]: dataset 'sst2' listed twice");
    bad("{\"name\":\"x\"," DS ",\"models\":[{\"name\":\"m\",\"model\":\"x\"}]," ME "}", "models[0].provider is required");
    bad("{\"name\":\"x\"," DS ",\"models\":[{\"name\":\"m\",\"provider\":\"openai\",\"model\":\"x\"}]," ME "}",
        "models[0].base_url is required");
    bad("{\"name\":\"x\"," DS ",\"models\":[{\"name\":\"m\",\"provider\":\"openai\",\"model\":\"x\","
        "\"base_url\":\"ftp://h\"}]," ME "}",
        "models[0].base_url must start with http");
    bad("{\"name\":\"x\"," DS ",\"models\":[{\"name\":\"m\",\"provider\":\"local\",\"model\":\"x\","
        "\"price\":{\"input\":-1}}]," ME "}",
        "models[0].price.input must be a number");
    bad("{\"name\":\"x\"," DS ",\"models\":[{\"name\":\"m\",\"provider\":\"local\",\"model\":\"x\","
        "\"price\":{\"inptu\":1}}]," ME "}",
        "models[0].price.unknown field 'inptu'");
    bad("{\"name\":\"x\"," DS ",\"models\":[{\"name\":\"m\",\"provider\":\"local\",\"model\":\"x\","
        "\"concurrency\":0}]," ME "}",
        "models[0].concurrency must be an integer from 1");
    bad("{\"name\":\"x\"," DS ",\"models\":[{\"name\":\"m\",\"provider\":\"local\",\"model\":\"x\"},"
        "{\"name\":\"m\",\"provider\":\"local\",\"model\":\"y\"}]," ME "}",
        "models[1]: model name 'm' used twice");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\"}]}", "methods[0] needs a template or a soft_prompt");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\",\"scoring\":\"vote\"}]}",
        "methods[0].scoring must be");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\",\"shots\":100}]}",
        "methods[0].shots must be an integer from -1 to 64");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"soft_prompt\":[1]}]}",
        "methods[0].soft_prompt must be an object");
}

Test(suite, missing_file)
{
    pwb_suite s;
    suite_init(&s);
    pwb_err e;
    cr_assert_eq(suite_load(&s, "/nonexistent/suite.json", &e), PWB_EIO);
    cr_assert_not_null(strstr(e.msg, "/nonexistent/suite.json"));
    cr_assert_null(s.name);
}

/* methods[].limit (also carried into every sweep point) and a local model's batch. */
Test(suite, method_limit_and_local_batch)
{
    const char *json = "{\"name\":\"x\"," DS ",\"models\":[{\"name\":\"m\",\"provider\":\"local\",\"model\":\"x\","
                       "\"batch\":32}],\"methods\":[{\"name\":\"z\",\"template\":\"zero-shot\"},"
                       "{\"name\":\"f\",\"template\":\"few-shot\",\"limit\":200,\"sweep\":{\"shots\":[0,2]}}]}";
    pwb_suite s;
    suite_init(&s);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(suite_parse(&s, json, strlen(json), "suites/ok.json", &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(s.models[0].batch, 32);
    cr_assert_eq(s.n_methods, 3);
    cr_assert_eq(s.methods[0].limit, 0);
    cr_assert_eq(s.methods[1].limit, 200);
    cr_assert_eq(s.methods[2].limit, 200);
    cr_assert_eq(s.methods[2].shots, 2);
    suite_free(&s);
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\",\"limit\":-1}]}",
        "methods[0].limit must be an integer from 0");
    bad("{\"name\":\"x\"," DS ",\"models\":[{\"name\":\"m\",\"provider\":\"openai\",\"model\":\"x\","
        "\"base_url\":\"http://127.0.0.1:1/v1\",\"batch\":4}]," ME "}",
        "models[0].batch is for local models");
}

/* "lora" and "prefix" methods beside "soft_prompt": the same settings, LoRA's own, sweeps over them. */
Test(suite, lora_and_prefix_methods)
{
    const char *json = "{\"name\":\"x\"," DS "," MO ",\"methods\":["
                       "{\"name\":\"l\",\"lora\":{\"r\":4,\"targets\":\"q,v,o\",\"steps\":10}},"
                       "{\"name\":\"p\",\"prefix\":{\"tokens\":8}},"
                       "{\"name\":\"s\",\"lora\":{},\"sweep\":{\"r\":[2,16],\"targets\":[\"q-v\",\"q-k-v-o\"]}}]}";
    pwb_suite s;
    suite_init(&s);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(suite_parse(&s, json, strlen(json), "suites/ok.json", &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(s.n_methods, 6);
    cr_expect_str_eq(s.methods[0].soft.method, "lora");
    cr_expect_eq(s.methods[0].soft.r, 4);
    cr_expect_str_eq(s.methods[0].soft.targets, "q,v,o");
    cr_expect_str_eq(s.methods[0].soft.optimizer, "adamw");
    cr_expect_str_eq(s.methods[0].scoring, "rank");
    cr_expect_str_eq(s.methods[1].soft.method, "prefix");
    cr_expect_eq(s.methods[1].soft.tokens, 8);
    cr_expect_str_eq(s.methods[2].soft.method, "lora");
    cr_expect_eq(s.methods[5].soft.r, 16);
    cr_expect_str_eq(s.methods[5].soft.targets, "q-k-v-o");
    suite_free(&s);
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"prefix\":{\"r\":4}}]}",
        "methods[0].prefix.unknown field 'r'");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"lora\":{\"targets\":\"q,x\"}}]}",
        "methods[0].lora.targets 'q,x' is not a list");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"lora\":{},\"prefix\":{}}]}",
        "methods[0] has both lora and prefix");
}

/* served_model: the model id a method asks HTTP models for (a served adapter). */
Test(suite, served_model)
{
    const char *json = "{\"name\":\"x\"," DS "," MO ",\"methods\":["
                       "{\"name\":\"l\",\"lora\":{\"r\":4},\"template\":\"sst2-review\","
                       "\"served_model\":\"sst2-lora\"},"
                       "{\"name\":\"h\",\"template\":\"zero-shot\"}]}";
    pwb_suite s;
    suite_init(&s);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(suite_parse(&s, json, strlen(json), "suites/ok.json", &e), PWB_OK, "%s", e.msg);
    cr_expect_str_eq(s.methods[0].served_model, "sst2-lora");
    cr_expect_null(s.methods[1].served_model);
    suite_free(&s);
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\",\"served_model\":3}]}",
        "methods[0].served_model must be a non-empty string");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\",\"served_model\":\"a\\nb\"}]}",
        "methods[0].served_model: a model id of at most 256 printable");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"lora\":{},\"served_model\":\"a\","
        "\"sweep\":{\"r\":[2,4]}}]}",
        "methods[0].served_model names one served adapter; a sweep makes many");
}

/* Hostile input: random text built from JSON's special characters never crashes the suite parser
 * (run under `make asan` too); it may only fail with an error. */
Test(suite, garbage_never_crashes)
{
    static const char alphabet[] = "a,b,x,y\"\"\n\r\t{}:[]\\\xc3\xa9";
    pwb_rng r;
    rng_init(&r, 7);
    char buf[512];
    for (int i = 0; i < 600; i++) {
        size_t n = (size_t)rng_below(&r, sizeof buf - 1);
        for (size_t k = 0; k < n; k++)
            buf[k] = alphabet[rng_below(&r, sizeof alphabet - 1)];
        buf[n] = '\0';
        pwb_suite s;
        pwb_err e;
        suite_init(&s);
        int rc = suite_parse(&s, buf, n, "x.json", &e);
        cr_assert(rc == PWB_OK || e.msg[0], "a refused suite says why");
        suite_free(&s);
    }
}

/* Example selection and label words: method keys that override the template, kept through sweeps. */
Test(suite, shot_pick_turns_and_label_words)
{
    const char *json = "{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"n\",\"template\":\"sst2-review\","
                       "\"shots\":4,\"shot_pick\":\"similar\",\"shots_as_turns\":true,\"train_limit\":100,"
                       "\"label_words\":[\"bad\",\"great\"],\"scoring\":\"rank\","
                       "\"sweep\":{\"calibration\":[\"none\",\"contextual\"]}},"
                       "{\"name\":\"z\",\"template\":\"zero-shot\"}]}";
    pwb_suite s;
    suite_init(&s);
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(suite_parse(&s, json, strlen(json), "suites/ok.json", &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(s.n_methods, 3);
    for (int i = 0; i < 2; i++) {
        cr_assert_str_eq(s.methods[i].shot_pick, "similar");
        cr_assert_eq(s.methods[i].shots_as_turns, 1);
        cr_assert_eq(s.methods[i].n_label_words, 2);
        cr_assert_str_eq(s.methods[i].label_words[1], "great");
    }
    cr_assert_null(s.methods[2].shot_pick);
    cr_assert_eq(s.methods[2].shots_as_turns, -1);
    cr_assert_eq(s.methods[2].n_label_words, 0);
    suite_free(&s);
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\",\"shot_pick\":\"near\"}]}",
        "methods[0].shot_pick must be \"first\", \"random\", \"balanced\" or \"similar\"");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\",\"shots_as_turns\":\"y\"}]}",
        "methods[0].shots_as_turns must be true or false");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\",\"label_words\":[\"a\",3]}]}",
        "methods[0].label_words[1] must be a non-empty string");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\",\"label_words\":\"a\"}]}",
        "methods[0].label_words must be a list of words");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"soft_prompt\":{\"tokens\":4},"
        "\"label_words\":[\"a\",\"b\"]}]}",
        "methods[0]: label_words are for hard prompts");
    /* shot_pick as a sweep axis */
    const char *sw = "{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"p\",\"template\":\"few-shot\","
                     "\"train_limit\":100,\"sweep\":{\"shot_pick\":[\"balanced\",\"similar\"]}}]}";
    suite_init(&s);
    cr_assert_eq(suite_parse(&s, sw, strlen(sw), "suites/ok.json", &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(s.n_methods, 2);
    cr_assert_str_eq(s.methods[1].name, "p[shot_pick=similar]");
    cr_assert_str_eq(s.methods[1].shot_pick, "similar");
    cr_assert_str_eq(s.methods[0].shot_pick, "balanced");
    suite_free(&s);
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\","
        "\"sweep\":{\"shot_pick\":[\"near\"]}}]}",
        "one of first, random, balanced, similar");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\",\"shot_pick\":\"first\","
        "\"sweep\":{\"shot_pick\":[\"similar\"]}}]}",
        "give shot_pick or sweep.shot_pick, not both");
    bad("{\"name\":\"x\"," DS "," MO ",\"methods\":[{\"name\":\"z\",\"template\":\"t\",\"scoring\":\"rank\","
        "\"train_limit\":400,\"optimize\":{\"propose\":-1}}]}",
        "methods[0].optimize.propose must be an integer from 0");
}
