/* Soft-prompt initialisations: ranges, the vocabulary proxy, class labels, text. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "tune/softprompt.h"
#include "unit/engine/tiny_model.h"
#include "util/rng.h"

static model *load_ts(void)
{
    const char *p = t_path(t_shared(), "models/tinystories-656k/TinyStories-656K-Q8_0.gguf");
    if (!file_exists(p))
        cr_skip_test("%s not found (set PWB_SHARED)", p);
    model *m = NULL;
    pwb_err e;
    cr_assert_eq(model_load(&m, p, &e), PWB_OK, "%s", e.msg);
    return m;
}

static int row_is_embedding_of(const model *m, const float *row, int32_t id)
{
    float *emb = malloc((size_t)m->hp.n_embd * sizeof *emb);
    cr_assert_eq(kernel_get_row(&m->tok_embd, id, emb, NULL), PWB_OK);
    int same = memcmp(emb, row, (size_t)m->hp.n_embd * sizeof *emb) == 0;
    free(emb);
    return same;
}

Test(softprompt, names_and_shapes)
{
    cr_expect_eq(softprompt_init_parse("random"), SP_INIT_RANDOM);
    cr_expect_eq(softprompt_init_parse("Vocab"), SP_INIT_VOCAB);
    cr_expect_eq(softprompt_init_parse("class"), SP_INIT_CLASS);
    cr_expect_eq(softprompt_init_parse("text"), SP_INIT_TEXT);
    cr_expect_eq(softprompt_init_parse("labels"), -1);
    cr_expect_eq(softprompt_init_parse(NULL), -1);
    cr_expect_str_eq(softprompt_init_name(SP_INIT_CLASS), "class");
    cr_expect_str_eq(softprompt_init_peft(SP_INIT_VOCAB), "SAMPLE_VOCAB");
    cr_expect_str_eq(softprompt_init_peft(SP_INIT_TEXT), "TEXT");
    cr_expect_str_eq(softprompt_init_peft(SP_INIT_RANDOM), "RANDOM");
    soft_prompt sp;
    pwb_err e;
    cr_expect_eq(softprompt_new(&sp, 0, 16, &e), PWB_EINVAL);
    cr_expect_eq(softprompt_new(&sp, 4, 0, &e), PWB_EINVAL);
    cr_expect_eq(softprompt_new(&sp, SOFTPROMPT_MAX_TOKENS + 1, 16, &e), PWB_EINVAL);
    cr_assert_eq(softprompt_new(&sp, 4, 16, &e), PWB_OK);
    for (int i = 0; i < 64; i++)
        cr_expect_eq(sp.w[i], 0.0f);
    soft_prompt cp;
    sp.w[5] = 2.5f;
    cr_assert_eq(softprompt_copy(&cp, &sp, &e), PWB_OK);
    cr_expect_eq(cp.w[5], 2.5f);
    softprompt_free(&cp);
    softprompt_free(&sp);
    cr_expect_null(sp.w);
}

Test(softprompt, uniform_is_in_range_and_seeded)
{
    soft_prompt a, b;
    cr_assert_eq(softprompt_new(&a, 20, 64, NULL), PWB_OK);
    cr_assert_eq(softprompt_new(&b, 20, 64, NULL), PWB_OK);
    pwb_rng r1, r2;
    rng_init(&r1, 7);
    rng_init(&r2, 7);
    softprompt_init_uniform(&a, &r1, -0.5f, 0.5f);
    softprompt_init_uniform(&b, &r2, -0.5f, 0.5f);
    double mean = 0, lo = 1, hi = -1;
    for (int i = 0; i < 20 * 64; i++) {
        cr_assert(a.w[i] >= -0.5f && a.w[i] <= 0.5f);
        mean += a.w[i];
        lo = fmin(lo, a.w[i]);
        hi = fmax(hi, a.w[i]);
    }
    mean /= 20 * 64;
    cr_expect_lt(fabs(mean), 0.05, "mean %g", mean);
    cr_expect_lt(lo, -0.45);
    cr_expect_gt(hi, 0.45);
    cr_expect_eq(memcmp(a.w, b.w, 20 * 64 * sizeof(float)), 0, "same seed, same prompt");
    softprompt_free(&a);
    softprompt_free(&b);
}

Test(softprompt, vocab_candidates_skip_special_and_byte_tokens)
{
    model *m = load_ts();
    int32_t *ids;
    int n;
    pwb_err e;
    cr_assert_eq(softprompt_vocab_candidates(m, &ids, &n, &e), PWB_OK, "%s", e.msg);
    /* TinyStories: 2048 tokens, all below 5,000: every one but the specials and byte pieces. */
    int expect = 0;
    for (int32_t id = 0; id < m->hp.n_vocab; id++) {
        const char *t = tokenizer_token_text(m->tok, id);
        expect += !tokenizer_is_special(m->tok, id) && !(t && strlen(t) == 6 && strncmp(t, "<0x", 3) == 0);
    }
    cr_expect_eq(n, expect, "%d candidates, expected %d", n, expect);
    cr_expect_eq(n, 2048 - 3, "%d candidates", n);
    for (int i = 0; i < n; i++) {
        cr_assert(!tokenizer_is_special(m->tok, ids[i]), "special token %d", ids[i]);
        const char *t = tokenizer_token_text(m->tok, ids[i]);
        cr_assert(!(t && strncmp(t, "<0x", 3) == 0), "byte token %s", t);
        if (i)
            cr_assert_gt(ids[i], ids[i - 1], "in vocabulary order");
    }
    soft_prompt sp;
    cr_assert_eq(softprompt_new(&sp, 6, m->hp.n_embd, &e), PWB_OK);
    pwb_rng r;
    rng_init(&r, 3);
    cr_assert_eq(softprompt_init_vocab(&sp, m, 0, &r, &e), PWB_OK, "%s", e.msg);
    for (int row = 0; row < 6; row++) {
        int found = 0;
        for (int i = 0; i < n && !found; i++)
            found = row_is_embedding_of(m, sp.w + (size_t)row * sp.dim, ids[i]);
        cr_expect(found, "row %d is no candidate's embedding", row);
    }
    softprompt_free(&sp);
    free(ids);
    model_free(m);
}

Test(softprompt, vocab_candidates_of_a_model_without_tokenizer_are_the_first_ids)
{
    tiny_model *t = tiny_model_new(1, 1, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    int32_t *ids;
    int n;
    cr_assert_eq(softprompt_vocab_candidates(&t->m, &ids, &n, NULL), PWB_OK);
    cr_expect_eq(n, 64);
    cr_expect_eq(ids[63], 63);
    free(ids);
    tiny_model_free(t);
}

Test(softprompt, class_labels_then_vocabulary)
{
    model *m = load_ts();
    const int d = m->hp.n_embd;
    int32_t *l0, *l1;
    size_t n0, n1;
    pwb_err e;
    cr_assert_geq(tokenizer_encode(m->tok, "happy", 5, 0, 0, &l0, &n0, &e), 0);
    cr_assert_geq(tokenizer_encode(m->tok, "sad dog", 7, 0, 0, &l1, &n1, &e), 0);
    cr_assert_geq(n1, 2);
    const int32_t *labels[2] = {l0, l1};
    int lens[2] = {(int)n0, (int)n1};
    soft_prompt sp;
    cr_assert_eq(softprompt_new(&sp, 5, d, &e), PWB_OK);
    pwb_rng r;
    rng_init(&r, 9);
    cr_assert_eq(softprompt_init_class(&sp, m, labels, lens, 2, &r, &e), PWB_OK, "%s", e.msg);
    float *emb = malloc((size_t)d * sizeof *emb), *mean = calloc((size_t)d, sizeof *mean);
    for (int k = 0; k < lens[1]; k++) {
        kernel_get_row(&m->tok_embd, l1[k], emb, NULL);
        for (int j = 0; j < d; j++)
            mean[j] += emb[j] / (float)lens[1];
    }
    for (int j = 0; j < d; j++)
        cr_assert_float_eq(sp.w[d + j], mean[j], 1e-6, "row 1 is the mean of label 1's tokens");
    if (n0 == 1)
        cr_expect(row_is_embedding_of(m, sp.w, l0[0]));
    /* the rest: vocabulary rows, not zero */
    for (int row = 2; row < 5; row++) {
        double s = 0;
        for (int j = 0; j < d; j++)
            s += fabs(sp.w[(size_t)row * d + j]);
        cr_expect_gt(s, 0.0);
    }
    /* more labels than rows: only the first rows, no overflow */
    soft_prompt one;
    cr_assert_eq(softprompt_new(&one, 1, d, &e), PWB_OK);
    cr_assert_eq(softprompt_init_class(&one, m, labels, lens, 2, &r, &e), PWB_OK);
    cr_expect_eq(softprompt_init_class(&one, m, labels, lens, 0, &r, &e), PWB_EINVAL);
    softprompt_free(&one);
    free(emb);
    free(mean);
    free(l0);
    free(l1);
    softprompt_free(&sp);
    model_free(m);
}

Test(softprompt, text_is_cut_or_repeated)
{
    model *m = load_ts();
    const int d = m->hp.n_embd;
    const char *text = "Once upon a time";
    int32_t *ids;
    size_t n;
    pwb_err e;
    cr_assert_geq(tokenizer_encode(m->tok, text, strlen(text), 0, 0, &ids, &n, &e), 0);
    cr_assert_geq(n, 2);
    soft_prompt longp, shortp;
    cr_assert_eq(softprompt_new(&longp, (int)n + 3, d, &e), PWB_OK);
    cr_assert_eq(softprompt_new(&shortp, 1, d, &e), PWB_OK);
    cr_assert_eq(softprompt_init_text(&longp, m, text, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(softprompt_init_text(&shortp, m, text, &e), PWB_OK, "%s", e.msg);
    for (size_t i = 0; i < n + 3; i++)
        cr_expect(row_is_embedding_of(m, longp.w + i * d, ids[i % n]), "row %zu", i);
    cr_expect(row_is_embedding_of(m, shortp.w, ids[0]));
    cr_expect_eq(softprompt_init_text(&shortp, m, "", &e), PWB_EINVAL);
    soft_prompt wrong;
    cr_assert_eq(softprompt_new(&wrong, 2, d + 1, &e), PWB_OK);
    cr_expect_eq(softprompt_init_text(&wrong, m, text, &e), PWB_EINVAL);
    softprompt_free(&wrong);
    free(ids);
    softprompt_free(&longp);
    softprompt_free(&shortp);
    model_free(m);
}
