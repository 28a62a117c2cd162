/* Request parsing (hostile bodies get a message and the field's name) and the adapter registry. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "serve/adapter.h"
#include "serve/api.h"
#include "tune/peft.h"
#include "util/file.h"

static int parse(api_req *r, int chat, const char *body, pwb_err *e)
{
    return api_parse(r, chat, body, strlen(body), e);
}

Test(api, completions_fields)
{
    api_req r;
    pwb_err e = {0};
    cr_assert_eq(parse(&r, 0,
                       "{\"model\":\"sst2\",\"prompt\":\"Hi\",\"max_tokens\":3,\"temperature\":0,\"top_p\":0.5,"
                       "\"seed\":42,\"stop\":[\"\\n\",\".\"],\"logprobs\":2,\"echo\":true,\"user\":\"x\"}",
                       &e),
                 PWB_OK, "%s", e.msg);
    cr_assert_str_eq(r.model, "sst2");
    cr_assert_eq(r.n_prompts, 1);
    cr_assert_str_eq(r.prompts[0], "Hi");
    cr_assert_eq(r.max_tokens, 3);
    cr_assert_eq(r.temperature, 0);
    cr_assert_eq(r.top_p, 0.5);
    cr_assert_eq(r.seed, 42);
    cr_assert_eq(r.n_stop, 2);
    cr_assert_eq(r.logprobs, 2);
    cr_assert(r.echo && !r.stream);
    api_req_free(&r);
    cr_assert_eq(parse(&r, 0, "{\"prompt\":[\"a\",\"b\",\"c\"],\"stop\":\"x\"}", &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(r.n_prompts, 3);
    cr_assert_eq(r.n_stop, 1);
    cr_assert_eq(r.max_tokens, -1, "the endpoint's default");
    cr_assert_eq(r.temperature, 1.0, "OpenAI's default");
    api_req_free(&r);
}

Test(api, chat_fields)
{
    api_req r;
    pwb_err e = {0};
    cr_assert_eq(parse(&r, 1,
                       "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":"
                       "[{\"type\":\"text\",\"text\":\"Hel\"},{\"type\":\"text\",\"text\":\"lo\"}]}],\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true},\"logprobs\":true,\"top_logprobs\":3}",
                       &e),
                 PWB_OK, "%s", e.msg);
    cr_assert_eq(r.n_msgs, 2);
    cr_assert_str_eq(r.msgs[1].content, "Hello");
    cr_assert(r.stream && r.stream_usage);
    cr_assert_eq(r.logprobs, 3);
    api_req_free(&r);
}

Test(api, bad_bodies_name_their_field)
{
    struct {
        int chat;
        const char *body, *param;
    } cases[] = {
        {0, "{\"prompt\": \"x\"", ""},
        {0, "[1,2]", ""},
        {0, "{}", "prompt"},
        {0, "{\"prompt\":[1,2,3]}", "prompt"},
        {0, "{\"prompt\":\"x\",\"max_tokens\":-1}", "max_tokens"},
        {0, "{\"prompt\":\"x\",\"max_tokens\":1.5}", "max_tokens"},
        {0, "{\"prompt\":\"x\",\"temperature\":\"hot\"}", "temperature"},
        {0, "{\"prompt\":\"x\",\"logprobs\":9}", "logprobs"},
        {0, "{\"prompt\":\"x\",\"n\":2}", "n"},
        {0, "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop"},
        {0, "{\"prompt\":\"x\",\"echo\":\"yes\"}", "echo"},
        {0, "{\"prompt\":\"x\",\"model\":7}", "model"},
        {0, "{\"prompt\":[\"a\",\"b\"],\"stream\":true}", "prompt"},
        {1, "{\"messages\":[]}", "messages"},
        {1, "{\"messages\":[{\"content\":\"x\"}]}", "messages"},
        {1, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", "messages"},
        {1, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":50}", "top_logprobs"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        api_req r;
        pwb_err e = {0};
        cr_assert_eq(parse(&r, cases[i].chat, cases[i].body, &e), PWB_EINVAL, "%s", cases[i].body);
        cr_assert_str_eq(r.param, cases[i].param, "%s: param '%s'", cases[i].body, r.param);
        cr_assert(e.msg[0], "a message for the client");
        api_req_free(&r);
    }
}

Test(api, error_object)
{
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(api_error_json(&b, "invalid_request_error", "no \"such\" model", "model", "model_not_found"), PWB_OK);
    cr_assert_str_eq(b.data, "{\"error\":{\"message\":\"no \\\"such\\\" model\",\"type\":\"invalid_request_error\","
                             "\"param\":\"model\",\"code\":\"model_not_found\"}}");
    buf_free(&b);
}

Test(adapter, registry_reads_peft_folders)
{
    char dir[] = "/tmp/pwb-adapter-XXXXXX";
    cr_assert(mkdtemp(dir));
    char soft[300], lora_dir[300], cfg[400];
    snprintf(soft, sizeof soft, "%s/soft", dir);
    snprintf(lora_dir, sizeof lora_dir, "%s/lora", dir);
    peft_prompt p;
    peft_prompt_init(&p);
    p.n_tokens = 3;
    p.dim = 8;
    p.embeddings = calloc(24, sizeof(float));
    p.init = strdup("RANDOM");
    pwb_err e = {0};
    cr_assert_eq(peft_save(soft, &p, NULL, &e), PWB_OK, "%s", e.msg);
    peft_prompt_free(&p);
    cr_assert_eq(mkdir(lora_dir, 0700), 0);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", lora_dir);
    const char *lc = "{\"peft_type\":\"LORA\",\"r\":8,\"lora_alpha\":16,\"target_modules\":[\"q_proj\"]}";
    cr_assert_eq(file_write_atomic(cfg, lc, strlen(lc), &e), PWB_OK);
    char ia3[300];
    snprintf(ia3, sizeof ia3, "%s/ia3", dir);
    cr_assert_eq(mkdir(ia3, 0700), 0);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", ia3);
    const char *ic = "{\"peft_type\":\"IA3\"}";
    cr_assert_eq(file_write_atomic(cfg, ic, strlen(ic), &e), PWB_OK);
    /* only the shapes matter to the registry (LoRA and prefix folders: tests/unit/serve/test_sched.c) */
    model m8 = {0}, m16 = {0};
    m8.hp.n_embd = 8;
    m16.hp.n_embd = 16;

    adapter_set s;
    adapter_set_init(&s);
    char spec[400];
    snprintf(spec, sizeof spec, "sst2=%s", soft);
    cr_assert_eq(adapter_set_add(&s, spec, &m8, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(s.n, 2);
    cr_assert_eq(adapter_set_find(&s, "sst2"), 1);
    cr_assert_eq(s.items[1].n_embeds, 3);
    cr_assert_eq(adapter_set_add(&s, spec, &m8, &e), PWB_EINVAL, "a taken name");
    snprintf(spec, sizeof spec, "base=%s", soft);
    cr_assert_eq(adapter_set_add(&s, spec, &m8, &e), PWB_EINVAL, "base is the model");
    snprintf(spec, sizeof spec, "other=%s", soft);
    cr_assert_eq(adapter_set_add(&s, spec, &m16, &e), PWB_EINVAL, "another hidden size");
    cr_assert(strstr(e.msg, "hidden size"), "%s", e.msg);
    snprintf(spec, sizeof spec, "lo=%s", lora_dir);
    cr_assert_neq(adapter_set_add(&s, spec, &m8, &e), PWB_OK, "a LoRA folder without its weights");
    cr_assert(strstr(e.msg, "adapter 'lo'"), "%s", e.msg); /* (the stub model has no layers to shape it for) */
    snprintf(spec, sizeof spec, "ia3=%s", ia3);
    cr_assert_eq(adapter_set_add(&s, spec, &m8, &e), PWB_EUNSUP);
    cr_assert(strstr(e.msg, "IA3"), "%s", e.msg);
    cr_assert_eq(adapter_set_add(&s, "bad name=/x", &m8, &e), PWB_EINVAL);
    cr_assert_eq(adapter_set_add(&s, "nodir", &m8, &e), PWB_EINVAL);
    cr_assert_eq(adapter_set_add(&s, "gone=/nonexistent/dir", &m8, &e), PWB_EIO);
    cr_assert_eq(s.n, 2, "failures add nothing");
    adapter_set_free(&s);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}
