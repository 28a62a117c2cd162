/* pwb generate: one prompt through the local engine (a quick look at a model, and the reference
 * check against published greedy token ids); pwb model info: what a model file holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "util/file.h"
#include "util/str.h"
#include "util/timer.h"

#define GEN_MAX_PROMPT (16u << 20)

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    printf("%s:", what);
    for (size_t i = 0; i < n; i++)
        printf(" %d", ids[i]);
    printf("\n");
}

int cmd_generate(const cli_args *a)
{
    const char *path = cli_str(a, "model", NULL);
    if (!path) {
        cli_usage_error(a->cmd, "--model PATH is required");
        return EXIT_PWB_USAGE;
    }
    path = cli_user_file(path);
    long max_tokens, seed, threads;
    double temperature = 0.8, top_p = 0.95;
    if (cli_long(a, "max-tokens", 64, 1, 100000, &max_tokens) || cli_long(a, "seed", 1, 0, 0x7fffffffffffffffL, &seed) ||
        cli_long(a, "threads", 0, 0, 1024, &threads))
        return EXIT_PWB_USAGE;
    const char *ts = cli_str(a, "temperature", NULL), *ps = cli_str(a, "top-p", NULL);
    if ((ts && (str_to_double(ts, &temperature) || temperature < 0 || temperature > 10)) ||
        (ps && (str_to_double(ps, &top_p) || top_p < 0 || top_p > 1))) {
        cli_usage_error(a->cmd, "--temperature wants [0, 10] and --top-p [0, 1]");
        return EXIT_PWB_USAGE;
    }
    if (cli_flag(a, "greedy"))
        temperature = 0;
    int chat = cli_flag(a, "chat") > 0;

    pwb_err e;
    err_clear(&e);
    pwb_buf prompt, text, out;
    buf_init(&prompt);
    buf_init(&text);
    buf_init(&out);
    int rc = PWB_OK;
    if (cli_str(a, "prompt", NULL)) {
        buf_puts(&prompt, cli_str(a, "prompt", NULL));
    } else {
        /* the prompt from standard input */
        char chunk[65536];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0 && !rc)
            if (prompt.len + n > GEN_MAX_PROMPT || buf_append(&prompt, chunk, n))
                rc = err_set(&e, PWB_ERANGE, "prompt longer than %u bytes", GEN_MAX_PROMPT);
        if (!prompt.data)
            buf_puts(&prompt, "");
    }
    engine *en = NULL;
    chat_template ct;
    memset(&ct, 0, sizeof ct);
    int have_ct = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    engine_gen_item it;
    memset(&it, 0, sizeof it);
    engine_opts eo = {.n_threads = (int)threads, .int8_activations = cli_flag(a, "int8")};
    double t0 = timer_wall();
    if (!rc)
        rc = engine_open(&en, path, &eo, &e);
    double t_load = timer_wall() - t0;
    const tokenizer *tok = en ? engine_tokenizer(en) : NULL;
    int32_t stop_ids[8];
    int n_stop = 0;
    if (!rc && chat) {
        const model *m = engine_model(en);
        rc = chat_template_init(&ct, m->chat_template, cli_str(a, "template", NULL), &e);
        have_ct = rc == PWB_OK;
        chat_msg msgs[2];
        int nm = 0;
        if (cli_str(a, "system", NULL))
            msgs[nm++] = (chat_msg){"system", cli_str(a, "system", NULL)};
        msgs[nm++] = (chat_msg){"user", prompt.data};
        if (!rc)
            rc = chat_render(&ct, msgs, (size_t)nm, 1, &text, &e);
        /* Turn-closing tokens end the answer as EOS does. */
        const char *enders[] = {"<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "<|end|>"};
        for (size_t i = 0; i < sizeof enders / sizeof enders[0] && n_stop < 8; i++) {
            int32_t id = tokenizer_token_id(tok, enders[i]);
            if (id >= 0 && id != tokenizer_eos(tok))
                stop_ids[n_stop++] = id;
        }
    } else if (!rc) {
        buf_puts(&text, prompt.data);
    }
    if (!rc && tokenizer_encode(tok, text.data ? text.data : "", text.len, 1, chat, &ids, &n_ids, &e) < 0)
        rc = e.code ? e.code : PWB_EMODEL;
    if (!rc && n_ids == 0)
        rc = err_set(&e, PWB_EINVAL, "the prompt is empty");
    double t1 = timer_wall();
    if (!rc) {
        it.prompt = ids;
        it.n_prompt = (int)n_ids;
        it.max_tokens = (int)max_tokens;
        it.temperature = (float)temperature;
        it.top_p = (float)top_p;
        it.seed = (uint64_t)seed;
        it.stop_ids = stop_ids;
        it.n_stop_ids = n_stop;
        rc = engine_generate(en, NULL, &it, 1, &e);
        if (!rc && it.status == PWB_ERANGE)
            rc = err_set(&e, PWB_ERANGE, "the prompt is %zu tokens, longer than the context of %d that %s holds",
                         n_ids, engine_n_ctx(en), path);
        else if (!rc && it.status)
            rc = err_set(&e, it.status, "generation failed: %s", err_code_name(it.status));
    }
    double t_gen = timer_wall() - t1;
    if (!rc) {
        if (cli_flag(a, "ids")) {
            print_ids("prompt", ids, n_ids);
            print_ids("output", it.out_ids, (size_t)it.n_out);
        } else {
            printf("%s\n", it.text ? it.text : "");
        }
        if (!a->quiet)
            fprintf(stderr, "pwb: %zu prompt tokens, %d generated (%s) in %.2f s (%.1f tok/s); load %.2f s\n", n_ids,
                    it.n_out, it.finish == ENGINE_FINISH_EOS ? "eos" : it.finish == ENGINE_FINISH_STOP ? "stop" : "length",
                    t_gen, t_gen > 0 ? it.n_out / t_gen : 0.0, t_load);
    }
    engine_gen_item_clear(&it);
    free(ids);
    if (have_ct)
        chat_template_free(&ct);
    if (en)
        engine_close(en);
    buf_free(&prompt);
    buf_free(&text);
    buf_free(&out);
    if (rc)
        return cli_fail(&e);
    return EXIT_PWB_OK;
}

int cmd_model_info(const cli_args *a)
{
    pwb_err e;
    err_clear(&e);
    model *m = NULL;
    int rc = model_load(&m, cli_user_file(a->pos[0]), &e);
    if (rc)
        return cli_fail(&e);
    pwb_buf out;
    buf_init(&out);
    rc = model_info(m, &out);
    if (!rc && out.data)
        fputs(out.data, stdout);
    buf_free(&out);
    model_free(m);
    if (rc) {
        fprintf(stderr, "pwb: %s: cannot describe the model\n", a->pos[0]);
        return EXIT_PWB_BACKEND;
    }
    return EXIT_PWB_OK;
}
