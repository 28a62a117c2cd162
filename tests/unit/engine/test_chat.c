/* Chat templates: detection from real template texts and exact renderings. The expected strings
 * are what the Hugging Face Jinja templates render (checked with jinja2), without the leading BOS,
 * which the tokenizer adds. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/tokenizer.h"
#include "util/buf.h"

/* SmolLM2-135M-Instruct's tokenizer.chat_template (from the GGUF). */
static const char SMOLLM2_TPL[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/* Qwen2-style: no default system prompt in a literal of its own. */
static const char CHATML_PLAIN_TPL[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static const char LLAMA3_TPL[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}";

static const char GEMMA_TPL[] =
    "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + "
    "'<end_of_turn>\\n' }}{% endfor %}";

static const char MISTRAL_TPL[] =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] "
    "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}";

static const char LLAMA2_TPL[] =
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% endif %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}";

static const chat_msg CONV[] = {
    {"user", "Hi there"},
    {"assistant", " Hello! "},
    {"user", "Is 7 prime?\n"},
};

static const chat_msg SYS_CONV[] = {
    {"system", "Be brief."},
    {"user", "Hi there"},
    {"assistant", " Hello! "},
    {"user", "Is 7 prime?\n"},
};

static void expect_render(const char *tpl, const char *name, const chat_msg *m, size_t n, int gen, const char *want)
{
    chat_template ct;
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(chat_template_init(&ct, tpl, name, &e), PWB_OK, "%s", e.msg);
    pwb_buf out;
    buf_init(&out);
    cr_assert_eq(chat_render(&ct, m, n, gen, &out, &e), PWB_OK, "%s", e.msg);
    cr_expect_str_eq(out.data ? out.data : "", want, "%s rendering:\n got: %s\nwant: %s", chat_kind_name(ct.kind),
                     out.data ? out.data : "", want);
    buf_free(&out);
    chat_template_free(&ct);
}

Test(chat, detect)
{
    cr_assert_eq(chat_detect(SMOLLM2_TPL), CHAT_CHATML);
    cr_assert_eq(chat_detect(CHATML_PLAIN_TPL), CHAT_CHATML);
    cr_assert_eq(chat_detect(LLAMA3_TPL), CHAT_LLAMA3);
    cr_assert_eq(chat_detect(GEMMA_TPL), CHAT_GEMMA);
    cr_assert_eq(chat_detect(MISTRAL_TPL), CHAT_MISTRAL);
    cr_assert_eq(chat_detect(LLAMA2_TPL), CHAT_LLAMA2);
    cr_assert_eq(chat_detect(NULL), CHAT_NONE);
    cr_assert_eq(chat_detect(""), CHAT_NONE);
    cr_assert_eq(chat_detect("{{ messages[0]['content'] }}"), CHAT_UNKNOWN);
}

Test(chat, names)
{
    cr_assert_eq(chat_kind_from_name("chatml"), CHAT_CHATML);
    cr_assert_eq(chat_kind_from_name("ChatML"), CHAT_CHATML);
    cr_assert_eq(chat_kind_from_name("llama3"), CHAT_LLAMA3);
    cr_assert_eq(chat_kind_from_name("gemma"), CHAT_GEMMA);
    cr_assert_eq(chat_kind_from_name("mistral"), CHAT_MISTRAL);
    cr_assert_eq(chat_kind_from_name("llama2"), CHAT_LLAMA2);
    cr_assert_eq(chat_kind_from_name("none"), CHAT_NONE);
    cr_assert_eq(chat_kind_from_name("vicuna"), CHAT_UNKNOWN);
    cr_assert_eq(chat_kind_from_name(NULL), CHAT_UNKNOWN);
    for (int k = CHAT_NONE; k <= CHAT_LLAMA2; k++) cr_assert_eq(chat_kind_from_name(chat_kind_name(k)), k);
    cr_assert_str_eq(chat_kind_name(CHAT_UNKNOWN), "unknown");
}

Test(chat, init_errors)
{
    chat_template ct;
    pwb_err e;
    err_clear(&e);
    cr_assert_eq(chat_template_init(&ct, "{{ messages }}", NULL, &e), PWB_EUNSUP);
    cr_assert_neq(e.msg[0], 0);
    cr_assert_eq(chat_template_init(&ct, NULL, "vicuna", &e), PWB_EINVAL);
    /* An override wins over what the template says. */
    cr_assert_eq(chat_template_init(&ct, "{{ messages }}", "chatml", &e), PWB_OK);
    cr_assert_eq(ct.kind, CHAT_CHATML);
    cr_assert_null(ct.default_system);
    chat_template_free(&ct);
}

Test(chat, smollm2_default_system)
{
    chat_template ct;
    pwb_err e;
    cr_assert_eq(chat_template_init(&ct, SMOLLM2_TPL, NULL, &e), PWB_OK);
    cr_assert_str_eq(ct.default_system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    chat_template_free(&ct);
    cr_assert_eq(chat_template_init(&ct, CHATML_PLAIN_TPL, NULL, &e), PWB_OK);
    cr_assert_null(ct.default_system); /* '<|im_start|>' + message['role'] is no literal prompt */
    chat_template_free(&ct);
}

Test(chat, chatml)
{
    expect_render(SMOLLM2_TPL, NULL, CONV, 3, 1,
                  "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                  "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n Hello! <|im_end|>\n"
                  "<|im_start|>user\nIs 7 prime?\n<|im_end|>\n<|im_start|>assistant\n");
    expect_render(SMOLLM2_TPL, NULL, SYS_CONV, 4, 1,
                  "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                  "<|im_start|>assistant\n Hello! <|im_end|>\n<|im_start|>user\nIs 7 prime?\n<|im_end|>\n"
                  "<|im_start|>assistant\n");
    expect_render(CHATML_PLAIN_TPL, NULL, CONV, 1, 0, "<|im_start|>user\nHi there<|im_end|>\n");
    /* No messages: the template's loop never runs, so no default system turn either. */
    expect_render(SMOLLM2_TPL, NULL, NULL, 0, 1, "<|im_start|>assistant\n");
}

Test(chat, llama3)
{
    expect_render(LLAMA3_TPL, NULL, CONV, 3, 1,
                  "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nIs 7 prime?<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
    expect_render(NULL, "llama3", SYS_CONV, 2, 0,
                  "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>");
}

Test(chat, gemma)
{
    expect_render(GEMMA_TPL, NULL, CONV, 3, 1,
                  "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
                  "<start_of_turn>user\nIs 7 prime?<end_of_turn>\n<start_of_turn>model\n");
    /* No system role: its text opens the first user turn (as Gemma 3's template does). */
    expect_render(GEMMA_TPL, NULL, SYS_CONV, 2, 1,
                  "<start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\n");
    static const chat_msg only_sys[] = {{"system", "Be brief."}};
    expect_render(GEMMA_TPL, NULL, only_sys, 1, 0, "<start_of_turn>user\nBe brief.<end_of_turn>\n");
    chat_template ct;
    pwb_err e;
    cr_assert_eq(chat_template_init(&ct, GEMMA_TPL, NULL, &e), PWB_OK);
    static const chat_msg two_sys[] = {{"system", "a"}, {"user", "b"}, {"system", "c"}};
    pwb_buf out;
    buf_init(&out);
    cr_assert_eq(chat_render(&ct, two_sys, 3, 0, &out, &e), PWB_EINVAL);
    cr_assert(strstr(e.msg, "system"));
    buf_free(&out);
    chat_template_free(&ct);
}

Test(chat, mistral)
{
    expect_render(MISTRAL_TPL, NULL, CONV, 3, 1, "[INST] Hi there [/INST] Hello! </s>[INST] Is 7 prime?\n [/INST]");
    expect_render(MISTRAL_TPL, NULL, SYS_CONV, 2, 1, "[INST] Be brief.\n\nHi there [/INST]");
}

Test(chat, llama2)
{
    expect_render(LLAMA2_TPL, NULL, CONV, 3, 1, "[INST] Hi there [/INST] Hello! </s><s>[INST] Is 7 prime? [/INST]");
    expect_render(LLAMA2_TPL, NULL, SYS_CONV, 4, 1,
                  "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello! </s><s>[INST] Is 7 prime? [/INST]");
}

Test(chat, set_tokens)
{
    chat_template ct;
    pwb_err e;
    cr_assert_eq(chat_template_init(&ct, NULL, "mistral", &e), PWB_OK);
    cr_assert_eq(chat_template_set_tokens(&ct, NULL, "<|end|>", &e), PWB_OK);
    pwb_buf out;
    buf_init(&out);
    cr_assert_eq(chat_render(&ct, CONV, 2, 0, &out, &e), PWB_OK);
    cr_assert_str_eq(out.data, "[INST] Hi there [/INST] Hello! <|end|>");
    buf_free(&out);
    chat_template_free(&ct);
}

Test(chat, none)
{
    expect_render(NULL, NULL, SYS_CONV, 4, 1, "Be brief.\n\nHi there\n\n Hello! \n\nIs 7 prime?\n");
    static const chat_msg one[] = {{"user", "Once upon a time"}};
    expect_render("", NULL, one, 1, 1, "Once upon a time");
    static const chat_msg gaps[] = {{"system", ""}, {"user", "x"}, {"assistant", NULL}};
    expect_render(NULL, "none", gaps, 3, 0, "x");
}

Test(chat, bad_args)
{
    chat_template ct;
    pwb_err e;
    cr_assert_eq(chat_template_init(&ct, SMOLLM2_TPL, NULL, &e), PWB_OK);
    pwb_buf out;
    buf_init(&out);
    static const chat_msg norole[] = {{NULL, "x"}};
    cr_assert_eq(chat_render(&ct, norole, 1, 0, &out, &e), PWB_EINVAL);
    cr_assert_eq(chat_render(&ct, NULL, 2, 0, &out, &e), PWB_EINVAL);
    buf_free(&out);
    chat_template_free(&ct);
}

/* The rendering tokenizes into SmolLM2's special tokens. */
Test(chat, smollm2_tokens)
{
    const char *sh = getenv("PWB_SHARED");
    pwb_buf p;
    buf_init(&p);
    buf_printf(&p, "%s/models/smollm2-tokenizer/tokenizer.json", sh && sh[0] ? sh : "../shared");
    tokenizer *t = NULL;
    pwb_err e;
    if (tokenizer_from_json(&t, p.data, &e) != PWB_OK) cr_skip_test("%s", e.msg);
    chat_template ct;
    cr_assert_eq(chat_template_init(&ct, SMOLLM2_TPL, NULL, &e), PWB_OK);
    static const chat_msg m[] = {{"user", "hi"}};
    pwb_buf out;
    buf_init(&out);
    cr_assert_eq(chat_render(&ct, m, 1, 1, &out, &e), PWB_OK);
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_geq(tokenizer_encode(t, out.data, out.len, 1, 1, &ids, &n, &e), 0);
    /* <|im_start|> system \n ... <|im_end|> \n <|im_start|> user \n hi <|im_end|> \n <|im_start|> assistant \n */
    cr_assert_eq(ids[0], 1);
    size_t n_start = 0, n_end = 0;
    for (size_t i = 0; i < n; i++) n_start += ids[i] == 1, n_end += ids[i] == 2;
    cr_assert_eq(n_start, 3);
    cr_assert_eq(n_end, 2);
    cr_assert_eq(ids[n - 1], 198); /* "\n" */
    free(ids);
    buf_free(&out);
    buf_free(&p);
    chat_template_free(&ct);
    tokenizer_free(t);
}
