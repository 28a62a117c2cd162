/* The local backend with a soft prompt (llm_request.prefix_embeds): each request is scored on
 * [vectors][the tokens tune_encode gives for its messages], so a prompt is scored on exactly what
 * it was trained on. Checked against the engine's plain forward over the same sequence, on
 * TinyStories-656K, with calls that mix vectors, none, and other vectors. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/engine.h"
#include "llm/backend.h"
#include "tinystories.h"
#include "tune/softprompt.h"
#include "tune/train.h"
#include "util/rng.h"


static const char *CHOICES[2] = {"negative", "positive"};
static const char *INPUTS[3] = {"Review: the cat was very happy and the day was fun.\nSentiment: ",
                                "Review: Tom was sad and he cried all day.\nSentiment:",
                                "Lily saw a big dog. Was it good?"};

/* Sum of log p(choice tokens) after [embeds][ids], by one plain forward (no prefix KV). */
static double ref_logprob(engine *en, const soft_prompt *sp, const tune_example *x, int c)
{
    const int V = engine_n_vocab(en), nc = x->cont_lens[c], n = x->n_ids + nc - 1;
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    int *pos = malloc((size_t)nc * sizeof *pos);
    float *lg = malloc((size_t)nc * (size_t)V * sizeof *lg);
    cr_assert(ids && pos && lg);
    memcpy(ids, x->ids, (size_t)x->n_ids * sizeof *ids);
    memcpy(ids + x->n_ids, x->conts[c], (size_t)(nc - 1) * sizeof *ids);
    const int ne = sp ? sp->n_tokens : 0;
    for (int k = 0; k < nc; k++)
        pos[k] = ne + x->n_ids - 1 + k;
    pwb_err e = {0};
    cr_assert_eq(engine_forward_embeds(en, sp ? sp->w : NULL, ne, ids, n, pos, nc, lg, &e), PWB_OK, "%s", e.msg);
    double lp = 0;
    for (int k = 0; k < nc; k++) {
        const float *row = lg + (size_t)k * V;
        double mx = row[0], s = 0;
        for (int v = 1; v < V; v++)
            mx = row[v] > mx ? row[v] : mx;
        for (int v = 0; v < V; v++)
            s += exp(row[v] - mx);
        lp += row[x->conts[c][k]] - mx - log(s);
    }
    free(ids);
    free(pos);
    free(lg);
    return lp;
}

static void random_prompt(soft_prompt *sp, int n, int dim, uint64_t seed)
{
    pwb_err e = {0};
    cr_assert_eq(softprompt_new(sp, n, dim, &e), PWB_OK);
    pwb_rng r;
    rng_init(&r, seed);
    softprompt_init_uniform(sp, &r, -0.5f, 0.5f);
}

Test(local_soft, scores_what_tune_encode_gives, .timeout = 60)
{
    pwb_err e = {0};
    engine *en = NULL;
    cr_assert_eq(engine_open(&en, ts_gguf(), NULL, &e), PWB_OK, "%s", e.msg);
    const int d = engine_n_embd(en);
    chat_template ct;
    cr_assert_eq(chat_template_init(&ct, engine_model(en)->chat_template, NULL, &e), PWB_OK, "%s", e.msg);
    soft_prompt a, b;
    random_prompt(&a, 5, d, 1);
    random_prompt(&b, 3, d, 2);

    llm_config c;
    llm_config_defaults(&c);
    c.provider = "local";
    c.name = "tiny";
    c.model = ts_gguf();
    c.batch = 2;
    c.threads = 1;
    llm_backend *be = NULL;
    cr_assert_eq(llm_backend_create(&be, &c, &e), PWB_OK, "%s", e.msg);

    /* one call: A, A, none, B, B, A (input i % 3) */
    const soft_prompt *which[6] = {&a, &a, NULL, &b, &b, &a};
    llm_message msgs[6];
    llm_request rq[6];
    llm_response out[6];
    memset(out, 0, sizeof out);
    for (int i = 0; i < 6; i++) {
        msgs[i] = (llm_message){.role = "user", .content = INPUTS[i % 3]};
        rq[i] = (llm_request){.mode = LLM_RANK, .messages = &msgs[i], .n_messages = 1, .choices = CHOICES,
                              .n_choices = 2};
        if (which[i])
            rq[i].prefix_embeds = which[i]->w, rq[i].n_prefix_embeds = which[i]->n_tokens, rq[i].prefix_dim = d,
            rq[i].prefix_id = which[i] == &a ? "a" : "b";
    }
    cr_assert_eq(be->run(be, rq, 6, out, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    for (int i = 0; i < 6; i++) {
        cr_assert_null(out[i].error, "request %d: %s", i, out[i].error);
        chat_msg cm = {.role = "user", .content = INPUTS[i % 3]};
        tune_example x;
        cr_assert_eq(tune_encode(engine_model(en), &ct, &cm, 1, CHOICES, 2, 0, &x, &e), PWB_OK, "%s", e.msg);
        cr_expect_eq(out[i].tokens_in, x.n_ids, "request %d: tokens_in counts the input only", i);
        for (int k = 0; k < 2; k++) {
            double want = ref_logprob(en, which[i], &x, k);
            cr_expect(fabs(out[i].choice_logprob[k] - want) < 2e-3, "request %d choice %d: %f vs %f", i, k,
                      out[i].choice_logprob[k], want);
        }
        tune_example_free(&x);
    }
    /* the vectors change what the model says */
    cr_expect(fabs(out[0].choice_logprob[0] - out[3].choice_logprob[0]) > 1e-3);
    for (int i = 0; i < 6; i++)
        llm_response_clear(&out[i]);

    /* the next call without vectors is a plain hard prompt again (the kept prefix is dropped) */
    rq[0].prefix_embeds = NULL, rq[0].n_prefix_embeds = 0, rq[0].prefix_id = NULL;
    cr_assert_eq(be->run(be, rq, 1, out, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    llm_response solo = out[0];
    memset(out, 0, sizeof out);
    rq[2] = rq[0];
    cr_assert_eq(be->run(be, &rq[2], 1, out, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    cr_expect(fabs(solo.choice_logprob[1] - out[0].choice_logprob[1]) < 1e-4);
    llm_response_clear(&solo);
    llm_response_clear(&out[0]);

    /* vectors of the wrong width fail that request alone */
    llm_request bad[2] = {rq[0], rq[0]};
    bad[0].prefix_embeds = a.w, bad[0].n_prefix_embeds = 2, bad[0].prefix_dim = d / 2;
    cr_assert_eq(be->run(be, bad, 2, out, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    cr_assert_not_null(out[0].error);
    cr_expect(strstr(out[0].error, "dimension"), "%s", out[0].error);
    cr_expect_null(out[1].error, "%s", out[1].error);
    llm_response_clear(&out[0]);
    llm_response_clear(&out[1]);

    llm_backend_free(be);
    softprompt_free(&a);
    softprompt_free(&b);
    chat_template_free(&ct);
    engine_close(en);
}
