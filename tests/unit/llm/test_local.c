/* The local backend: llm_backend over the engine, on TinyStories-656K (and SmolLM2 when present).
 * Batched calls with a shared prefix must give exactly what single calls give. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "llm/backend.h"
#include "tinystories.h"
#include "llm/local.h"
#include "util/file.h"


static llm_backend *open_local(const char *path, int batch)
{
    llm_config c;
    llm_config_defaults(&c);
    c.provider = "local";
    c.name = "test-local";
    c.model = path;
    c.batch = batch;
    c.threads = 1; /* OpenMP teams spin-wait badly on a busy shared machine */
    llm_backend *b = NULL;
    pwb_err e = {0};
    cr_assert_eq(llm_backend_create(&b, &c, &e), PWB_OK, "%s", e.msg);
    cr_assert_str_eq(b->kind, "local");
    return b;
}

static int g_done_count;
static void on_done(void *ctx, size_t index, const llm_response *r)
{
    (void)r;
    int *seen = ctx;
    seen[index]++;
    g_done_count++;
}

static const char *PROMPTS[4] = {"Once upon a time, there was a little girl named Lily. She",
                                 "Once upon a time, there was a little dog",
                                 "Once upon a time, there was a big red ball. One day",
                                 "Tom and Sue went to the park."};

Test(local, generate_batched_equals_single)
{
    llm_backend *b = open_local(ts_gguf(), 3);
    llm_request rq[4];
    llm_response all[4], one[4];
    memset(all, 0, sizeof all);
    memset(one, 0, sizeof one);
    for (int i = 0; i < 4; i++)
        rq[i] = (llm_request){.mode = LLM_GENERATE, .prompt = PROMPTS[i], .max_tokens = 12};
    int seen[4] = {0};
    g_done_count = 0;
    pwb_err e = {0};
    cr_assert_eq(b->run(b, rq, 4, all, on_done, seen, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(g_done_count, 4);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(seen[i], 1);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(b->run(b, &rq[i], 1, &one[i], NULL, NULL, &e), PWB_OK, "%s", e.msg);
    for (int i = 0; i < 4; i++) {
        cr_assert_null(all[i].error, "%s", all[i].error);
        cr_assert_not_null(all[i].text);
        cr_expect_str_eq(all[i].text, one[i].text, "request %d: batched '%s' vs single '%s'", i, all[i].text,
                         one[i].text);
        cr_expect(all[i].tokens_in > 5);
        cr_expect_eq(all[i].tokens_in, one[i].tokens_in);
        cr_expect(all[i].tokens_out >= 1 && all[i].tokens_out <= 12);
        cr_expect(all[i].latency_s > 0.0);
        cr_expect(all[i].cpu_s >= 0.0);
        cr_expect_eq(all[i].http_status, 0);
        cr_expect_not_null(all[i].finish_reason);
        cr_expect_eq(all[i].choice, -1);
    }
    cr_log_info("local greedy: \"%s\" -> \"%s\"", PROMPTS[0], all[0].text);
    /* The story model continues the first prompt the way its training data does. */
    cr_expect(strlen(all[0].text) > 10);
    for (int i = 0; i < 4; i++) {
        llm_response_clear(&all[i]);
        llm_response_clear(&one[i]);
    }
    llm_backend_free(b);
}

/* Log-probabilities from the backend == the engine's slow path on the full token sequence. */
Test(local, rank_matches_engine)
{
    llm_backend *b = open_local(ts_gguf(), 8);
    const char *choices[3] = {" girl", " dog", " big red truck"};
    llm_request rq[3];
    llm_response out[3];
    memset(out, 0, sizeof out);
    const char *prompts[3] = {"Once upon a time, there was a little", "Once upon a time, there was a",
                              "Lily saw a"};
    for (int i = 0; i < 3; i++)
        rq[i] = (llm_request){.mode = LLM_RANK, .prompt = prompts[i], .choices = choices, .n_choices = 3};
    pwb_err e = {0};
    cr_assert_eq(b->run(b, rq, 3, out, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    engine *en = NULL;
    cr_assert_eq(engine_open(&en, ts_gguf(), NULL, &e), PWB_OK, "%s", e.msg);
    int V = engine_n_vocab(en);
    for (int i = 0; i < 3; i++) {
        cr_assert_null(out[i].error, "%s", out[i].error);
        cr_assert_not_null(out[i].choice_logprob);
        cr_expect_null(out[i].text);
        int best = 0;
        for (int c = 0; c < 3; c++) {
            /* The backend's rule: prompt + choice tokenized together when that keeps the prompt's
             * tokens, else the choice alone (this story vocabulary has tokens spanning words, so
             * both paths occur here). */
            char full[256];
            snprintf(full, sizeof full, "%s%s", prompts[i], choices[c]);
            int32_t *pi = NULL, *fi = NULL;
            size_t np = 0, nf = 0;
            const tokenizer *tok = engine_tokenizer(en);
            cr_assert(tokenizer_encode(tok, prompts[i], strlen(prompts[i]), 1, 1, &pi, &np, &e) > 0);
            cr_assert(tokenizer_encode(tok, full, strlen(full), 1, 1, &fi, &nf, &e) > 0);
            if (!(nf > np && memcmp(pi, fi, np * sizeof *pi) == 0)) {
                int32_t *ci = NULL;
                size_t nc = 0;
                cr_assert(tokenizer_encode(tok, choices[c], strlen(choices[c]), 0, 0, &ci, &nc, &e) > 0);
                free(fi);
                fi = malloc((np + nc) * sizeof *fi);
                memcpy(fi, pi, np * sizeof *fi);
                memcpy(fi + np, ci, nc * sizeof *fi);
                nf = np + nc;
                free(ci);
            }
            float *lg = malloc(nf * (size_t)V * sizeof *lg);
            cr_assert_eq(engine_logits(en, NULL, fi, (int)nf, lg, &e), PWB_OK, "%s", e.msg);
            double want = 0;
            for (size_t j = np; j < nf; j++) {
                const float *row = lg + (j - 1) * (size_t)V;
                double mx = row[0], s = 0;
                for (int v = 1; v < V; v++)
                    mx = row[v] > mx ? row[v] : mx;
                for (int v = 0; v < V; v++)
                    s += exp(row[v] - mx);
                want += row[fi[j]] - mx - log(s);
            }
            cr_expect(fabs(out[i].choice_logprob[c] - want) < 1e-4, "prompt %d choice %d: %f vs %f", i, c,
                      out[i].choice_logprob[c], want);
            if (out[i].choice_logprob[c] > out[i].choice_logprob[best])
                best = c;
            free(lg);
            free(pi);
            free(fi);
        }
        cr_expect_eq(out[i].choice, best);
        cr_expect(out[i].tokens_in > 0);
    }
    for (int i = 0; i < 3; i++)
        llm_response_clear(&out[i]);
    engine_close(en);
    llm_backend_free(b);
}

Test(local, bad_requests_fail_alone_and_stop_interrupts)
{
    llm_backend *b = open_local(ts_gguf(), 2);
    const char *choices[1] = {" girl"};
    llm_message msg = {.role = "user", .content = "Once upon a time"};
    llm_request rq[3] = {
        {.mode = LLM_RANK, .prompt = "Once upon a time", .choices = NULL, .n_choices = 0},
        {.mode = LLM_RANK, .prompt = "Once upon a time there was a little", .choices = choices, .n_choices = 1},
        {.mode = LLM_GENERATE, .messages = &msg, .n_messages = 1, .max_tokens = 3},
    };
    llm_response out[3];
    memset(out, 0, sizeof out);
    pwb_err e = {0};
    cr_assert_eq(b->run(b, rq, 3, out, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    cr_expect_not_null(out[0].error);
    cr_expect_null(out[0].choice_logprob);
    cr_expect_eq(out[0].choice, -1);
    cr_expect_null(out[1].error, "%s", out[1].error);
    cr_expect_eq(out[1].choice, 0);
    cr_expect_null(out[2].error, "%s", out[2].error);
    cr_expect_not_null(out[2].text);
    for (int i = 0; i < 3; i++)
        llm_response_clear(&out[i]);
    volatile sig_atomic_t stop = 1;
    b->stop = &stop;
    cr_expect_eq(b->run(b, rq + 1, 1, out, NULL, NULL, &e), PWB_EINTR);
    llm_response_clear(&out[0]);
    llm_backend_free(b);

    llm_config c;
    llm_config_defaults(&c);
    c.provider = "local";
    c.model = "/nonexistent/model.gguf";
    llm_backend *nb = NULL;
    cr_expect_neq(llm_backend_create(&nb, &c, &e), PWB_OK);
    cr_expect_null(nb);
    c.model = ts_gguf();
    c.chat_template = "no-such-template";
    cr_expect_neq(llm_backend_create(&nb, &c, &e), PWB_OK);
}

Test(local, smollm2_chat)
{
    char p[4096];
    const char *root = getenv("PWB_ROOT");
    snprintf(p, sizeof p, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", root && *root ? root : ".");
    if (!file_exists(p))
        cr_skip_test("SmolLM2 GGUF not present (make model)");
    llm_backend *b = open_local(p, 4);
    llm_message m1 = {.role = "user", .content = "What is the capital of France?"};
    llm_message m2 = {.role = "user", .content = "Review: a wonderful, moving film.\nIs the sentiment of this review "
                                                 "positive or negative? Answer with one word."};
    const char *labels[2] = {"negative", "positive"};
    /* Raw completion form: the ChatML text with the answer begun, ranked over three cities. */
    const char *raw = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
                      "The capital of France is";
    const char *cities[3] = {" London", " Paris", " Berlin"};
    llm_request rq[3] = {{.mode = LLM_GENERATE, .messages = &m1, .n_messages = 1, .max_tokens = 12},
                         {.mode = LLM_RANK, .messages = &m2, .n_messages = 1, .choices = labels, .n_choices = 2},
                         {.mode = LLM_RANK, .prompt = raw, .choices = cities, .n_choices = 3}};
    llm_response out[3];
    memset(out, 0, sizeof out);
    pwb_err e = {0};
    cr_assert_eq(b->run(b, rq, 3, out, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    cr_assert_null(out[0].error, "%s", out[0].error);
    cr_log_info("SmolLM2 via local backend: \"%s\" (%d in, %d out, %s)", out[0].text, out[0].tokens_in,
                out[0].tokens_out, out[0].finish_reason);
    cr_expect(out[0].tokens_out > 0 && out[0].tokens_in > 20);
    cr_expect(strstr(out[0].text, "<|im_end|>") == NULL);
    cr_assert_null(out[1].error, "%s", out[1].error);
    cr_expect_eq(out[1].choice, 1, "neg %f pos %f", out[1].choice_logprob[0], out[1].choice_logprob[1]);
    cr_assert_null(out[2].error, "%s", out[2].error);
    cr_expect_eq(out[2].choice, 1, "London %f Paris %f Berlin %f", out[2].choice_logprob[0],
                 out[2].choice_logprob[1], out[2].choice_logprob[2]);
    for (int i = 0; i < 3; i++)
        llm_response_clear(&out[i]);
    llm_backend_free(b);
}
