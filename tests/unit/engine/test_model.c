/* Model loading from GGUF and Hugging Face folders, the summary, hostile inputs, and SmolLM2-135M
 * end to end when its GGUF is present under PWB_ROOT/models. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "util/file.h"

static char g_path[4096];

static const char *shared_path(const char *rel)
{
    const char *s = getenv("PWB_SHARED");
    const char *root = getenv("PWB_ROOT");
    if (s && *s)
        snprintf(g_path, sizeof g_path, "%s/%s", s, rel);
    else
        snprintf(g_path, sizeof g_path, "%s/../shared/%s", root && *root ? root : ".", rel);
    return g_path;
}

static const char *smollm2_path(void)
{
    static char p[4096];
    const char *root = getenv("PWB_ROOT");
    snprintf(p, sizeof p, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", root && *root ? root : ".");
    return p;
}

#define TS_GGUF "models/tinystories-656k/TinyStories-656K-Q8_0.gguf"
#define TS_HF "models/tinystories-656k"

static void check_tinystories_dims(const model *m)
{
    const model_hparams *hp = &m->hp;
    cr_expect_str_eq(hp->arch, "llama");
    cr_expect_eq(hp->n_layer, 2);
    cr_expect_eq(hp->n_embd, 128);
    cr_expect_eq(hp->n_ff, 384);
    cr_expect_eq(hp->n_head, 8);
    cr_expect_eq(hp->n_head_kv, 4);
    cr_expect_eq(hp->head_dim, 16);
    cr_expect_eq(hp->n_rot, 16);
    cr_expect_eq(hp->n_vocab, 2048);
    cr_expect_eq(hp->n_ctx, 512);
    cr_expect_float_eq(hp->rope_base, 10000.0f, 1e-3f);
    cr_expect_float_eq(hp->norm_eps, 1e-6f, 1e-9f);
    cr_expect_eq(hp->tied, 1);
    cr_expect_eq(hp->qkv_bias, 0);
    cr_expect_eq(m->n_params, 656000);
    cr_expect_eq(tokenizer_n_vocab(m->tok), 2048u);
    cr_expect_eq(tokenizer_bos(m->tok), 1);
    cr_expect_eq(tokenizer_eos(m->tok), 2);
    cr_expect_null(m->chat_template);
    for (int l = 0; l < hp->n_layer; l++) {
        cr_expect_not_null(m->layers[l].attn_norm);
        cr_expect_null(m->layers[l].bq);
    }
}

Test(model, tinystories_gguf)
{
    model *m = NULL;
    pwb_err e = {0};
    cr_assert_eq(model_load(&m, shared_path(TS_GGUF), &e), PWB_OK, "%s", e.msg);
    check_tinystories_dims(m);
    cr_expect_eq(m->format, MODEL_FMT_GGUF);
    cr_expect_eq(m->hp.rope_layout, ROPE_ADJACENT);
    cr_expect_eq(m->tok_embd.type, DT_Q8_0);
    cr_expect_eq(m->output.data, m->tok_embd.data, "tied head shares the embedding");
    cr_expect_eq(m->file_bytes, 749728u);
    model_summary s;
    model_summarize(m, &s);
    cr_expect_str_eq(s.format, "gguf");
    cr_expect_eq(s.dtype_count[DT_Q8_0], 15);
    cr_expect_eq(s.dtype_count[DT_F32], 5);
    cr_expect_str_eq(s.tokenizer_kind, "llama");
    cr_expect_str_eq(s.template_kind, "none");
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(model_info(m, &b), PWB_OK);
    cr_expect(strstr(b.data, "2 layers, hidden 128") != NULL, "%s", b.data);
    cr_expect(strstr(b.data, "Q8_0 x15") != NULL, "%s", b.data);
    cr_expect(strstr(b.data, "adjacent pairs") != NULL, "%s", b.data);
    cr_expect(strstr(b.data, "656000") != NULL, "%s", b.data);
    buf_free(&b);
    model_free(m);
}

Test(model, tinystories_safetensors_folder_and_file)
{
    model *m = NULL;
    pwb_err e = {0};
    cr_assert_eq(model_load(&m, shared_path(TS_HF), &e), PWB_OK, "%s", e.msg);
    check_tinystories_dims(m);
    cr_expect_eq(m->format, MODEL_FMT_HF);
    cr_expect_eq(m->hp.rope_layout, ROPE_HALF);
    cr_expect_eq(m->tok_embd.type, DT_F32);
    model_summary s;
    model_summarize(m, &s);
    cr_expect_str_eq(s.format, "safetensors");
    cr_expect_eq(s.dtype_count[DT_F32], 20);
    model_free(m);
    /* The .safetensors file itself names its folder. */
    cr_assert_eq(model_load(&m, shared_path(TS_HF "/model.safetensors"), &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(m->hp.n_layer, 2);
    model_free(m);
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

Test(model, hostile_inputs_fail_cleanly)
{
    model *m = NULL;
    pwb_err e = {0};
    cr_expect_neq(model_load(&m, "/nonexistent/model.gguf", &e), PWB_OK);
    cr_expect_null(m);
    cr_expect_neq(model_load(&m, "", &e), PWB_OK);
    char dir[] = "/tmp/pwb_model_XXXXXX";
    cr_assert(mkdtemp(dir));
    char p[4200];
    /* Truncations of a real GGUF at many lengths: every one must fail, none may crash. */
    pwb_buf g;
    buf_init(&g);
    cr_assert_eq(file_read_all(shared_path(TS_GGUF), 1 << 22, &g, &e), PWB_OK);
    snprintf(p, sizeof p, "%s/t.gguf", dir);
    size_t cuts[] = {4, 8, 24, 100, 1000, 5000, 100000, g.len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        write_file(p, g.data, cuts[i]);
        cr_expect_neq(model_load(&m, p, &e), PWB_OK, "truncated at %zu loaded", cuts[i]);
    }
    /* Garbage after a GGUF magic. */
    unsigned char junk[4096];
    memcpy(junk, "GGUF", 4);
    for (size_t i = 4; i < sizeof junk; i++)
        junk[i] = (unsigned char)(i * 2654435761u >> 13);
    write_file(p, junk, sizeof junk);
    cr_expect_neq(model_load(&m, p, &e), PWB_OK);
    /* A text file is neither format. */
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    write_file(p, "hello", 5);
    cr_expect_eq(model_load(&m, p, &e), PWB_EUNSUP, "%s", e.msg);
    unlink(p);
    /* A folder without config.json. */
    cr_expect_neq(model_load(&m, dir, &e), PWB_OK);
    /* A config with impossible dimensions. */
    snprintf(p, sizeof p, "%s/config.json", dir);
    const char *cfg = "{\"model_type\":\"llama\",\"hidden_size\":100,\"num_attention_heads\":7,"
                      "\"num_hidden_layers\":2,\"intermediate_size\":8}";
    write_file(p, cfg, strlen(cfg));
    cr_expect_neq(model_load(&m, dir, &e), PWB_OK);
    cr_expect(strstr(e.msg, "config.json") != NULL, "%s", e.msg);
    const char *cfg2 = "{\"model_type\":\"gpt_neox\"}";
    write_file(p, cfg2, strlen(cfg2));
    cr_expect_eq(model_load(&m, dir, &e), PWB_EUNSUP, "%s", e.msg);
    unlink(p);
    snprintf(p, sizeof p, "%s/t.gguf", dir);
    unlink(p);
    rmdir(dir);
    buf_free(&g);
}

/* ---- SmolLM2-135M-Instruct (Q4_1 GGUF), when present ---- */

static engine *open_smollm2(void)
{
    if (!file_exists(smollm2_path()))
        return NULL;
    engine *en = NULL;
    pwb_err e = {0};
    engine_opts o = {.n_threads = 1}; /* robust to a busy machine; results do not depend on it */
    cr_assert_eq(engine_open(&en, smollm2_path(), &o, &e), PWB_OK, "%s", e.msg);
    return en;
}

static int32_t *chat_ids(engine *en, const char *user, int *n)
{
    chat_template ct;
    pwb_err e = {0};
    cr_assert_eq(chat_template_init(&ct, engine_model(en)->chat_template, NULL, &e), PWB_OK, "%s", e.msg);
    chat_msg msg = {.role = "user", .content = user};
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(chat_render(&ct, &msg, 1, 1, &b, &e), PWB_OK, "%s", e.msg);
    int32_t *ids = NULL;
    size_t k = 0;
    cr_assert(tokenizer_encode(engine_tokenizer(en), b.data, b.len, 1, 1, &ids, &k, &e) > 0, "%s", e.msg);
    *n = (int)k;
    buf_free(&b);
    chat_template_free(&ct);
    return ids;
}

Test(smollm2, loads)
{
    engine *en = open_smollm2();
    if (!en)
        cr_skip_test("SmolLM2 GGUF not present (make model)");
    const model *m = engine_model(en);
    cr_expect_eq(m->hp.n_layer, 30);
    cr_expect_eq(m->hp.n_embd, 576);
    cr_expect_eq(m->hp.n_ff, 1536);
    cr_expect_eq(m->hp.n_head, 9);
    cr_expect_eq(m->hp.n_head_kv, 3);
    cr_expect_eq(m->hp.head_dim, 64);
    cr_expect_eq(m->hp.n_vocab, 49152);
    cr_expect_eq(m->hp.tied, 1);
    cr_expect_float_eq(m->hp.rope_base, 100000.0f, 1e-1f);
    model_summary s;
    model_summarize(m, &s);
    cr_expect_eq(s.dtype_count[DT_Q4_1], 210);
    cr_expect_str_eq(s.template_kind, "chatml");
    cr_expect_str_eq(s.tokenizer_kind, "gpt2");
    cr_expect(s.n_params > 134000000 && s.n_params < 135000000);
    engine_close(en);
}

Test(smollm2, chat_greedy_is_sensible)
{
    engine *en = open_smollm2();
    if (!en)
        cr_skip_test("SmolLM2 GGUF not present (make model)");
    int n;
    int32_t *ids = chat_ids(en, "What is the capital of France?", &n);
    int32_t im_end = tokenizer_token_id(engine_tokenizer(en), "<|im_end|>");
    cr_assert(im_end >= 0);
    engine_gen_item it = {.prompt = ids, .n_prompt = n, .max_tokens = 12, .stop_ids = &im_end, .n_stop_ids = 1};
    pwb_err e = {0};
    cr_assert_eq(engine_generate(en, NULL, &it, 1, &e), PWB_OK, "%s", e.msg);
    cr_log_info("SmolLM2 greedy: \"%s\" (%d tokens)", it.text, it.n_out);
    cr_expect(it.n_out > 0 && strlen(it.text) > 0);
    /* The first answer token is a near tie ("The" vs "L", within 0.1 logit with F32 activations)
     * that 8-bit activation rounding tips to "L" (llama.cpp answers "L'Étoile, la Marseillaise..."
     * too), so the fact is checked from inside the answer. */
    engine_gen_item_clear(&it);
    const char *lead = "The capital of France is";
    int32_t *li = NULL;
    size_t nl = 0;
    cr_assert(tokenizer_encode(engine_tokenizer(en), lead, strlen(lead), 0, 0, &li, &nl, &e) > 0);
    int32_t *full = malloc(((size_t)n + nl) * sizeof *full);
    memcpy(full, ids, (size_t)n * sizeof *full);
    memcpy(full + n, li, nl * sizeof *full);
    it = (engine_gen_item){.prompt = full, .n_prompt = n + (int)nl, .max_tokens = 6, .stop_ids = &im_end,
                           .n_stop_ids = 1};
    cr_assert_eq(engine_generate(en, NULL, &it, 1, &e), PWB_OK, "%s", e.msg);
    cr_log_info("SmolLM2 greedy after \"%s\": \"%s\"", lead, it.text);
    cr_expect(strstr(it.text, "Paris") != NULL, "answer: %s", it.text);
    engine_gen_item_clear(&it);
    free(full);
    free(li);
    free(ids);
    engine_close(en);
}

Test(smollm2, rank_classification)
{
    engine *en = open_smollm2();
    if (!en)
        cr_skip_test("SmolLM2 GGUF not present (make model)");
    const char *reviews[2] = {"Review: a wonderful, moving film with brilliant acting.\nIs the sentiment of this "
                              "review positive or negative? Answer with one word.",
                              "Review: a dull, tedious mess and a waste of time.\nIs the sentiment of this review "
                              "positive or negative? Answer with one word."};
    const tokenizer *tok = engine_tokenizer(en);
    int32_t *pos = NULL, *neg = NULL;
    size_t np = 0, nn = 0;
    pwb_err e = {0};
    cr_assert(tokenizer_encode(tok, "positive", 8, 0, 0, &pos, &np, &e) > 0);
    cr_assert(tokenizer_encode(tok, "negative", 8, 0, 0, &neg, &nn, &e) > 0);
    const int32_t *conts[2] = {neg, pos};
    int clen[2] = {(int)nn, (int)np};
    double lp[2][2];
    engine_rank_item items[2];
    int32_t *ids[2];
    for (int i = 0; i < 2; i++) {
        int n;
        ids[i] = chat_ids(en, reviews[i], &n);
        items[i] = (engine_rank_item){.prompt = ids[i], .n_prompt = n, .conts = conts, .cont_lens = clen, .n_conts = 2,
                                      .logprob = lp[i]};
    }
    cr_assert_eq(engine_rank(en, NULL, items, 2, &e), PWB_OK, "%s", e.msg);
    cr_log_info("SmolLM2 rank: good review neg %.3f pos %.3f; bad review neg %.3f pos %.3f", lp[0][0], lp[0][1],
                lp[1][0], lp[1][1]);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 2; k++)
            cr_expect(lp[i][k] < 0.0 && lp[i][k] > -40.0);
    /* A 135M model is a weak judge; what must hold is the direction between the two reviews. */
    cr_expect(lp[0][1] > lp[0][0], "the glowing review should score 'positive' higher");
    cr_expect(lp[0][1] - lp[0][0] > lp[1][1] - lp[1][0] + 0.3, "'positive' should lead more for the glowing review");
    free(ids[0]);
    free(ids[1]);
    free(pos);
    free(neg);
    engine_close(en);
}
