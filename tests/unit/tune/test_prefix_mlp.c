/* Prefix tuning through PEFT's reparameterization MLP (prefix_projection): finite differences of
 * the loss with respect to every MLP parameter matrix on a random tiny Llama, and the folder it
 * saves (the computed prefix, as PEFT saves it). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/backward.h"
#include "tune/method.h"
#include "tune/peft.h"
#include "tune/train.h"
#include "unit/engine/tiny_model.h"
#include "util/file.h"
#include "util/json.h"
#include "util/rng.h"

/* Two sequences of random ids, each scored on its last two positions. */
typedef struct mbatch {
    int32_t ids[2][12], tgt[2][2];
    int tpos[2][2];
    bwd_seq seqs[2];
} mbatch;

static void mbatch_make(mbatch *b, const model *m, uint64_t seed)
{
    pwb_rng r;
    rng_init(&r, seed);
    memset(b, 0, sizeof *b);
    const int lens[2] = {7, 12};
    for (int s = 0; s < 2; s++) {
        for (int j = 0; j < lens[s]; j++)
            b->ids[s][j] = (int32_t)(3 + rng_below(&r, (uint64_t)m->hp.n_vocab - 3));
        for (int k = 0; k < 2; k++) {
            b->tgt[s][k] = (int32_t)(3 + rng_below(&r, (uint64_t)m->hp.n_vocab - 3));
            b->tpos[s][k] = lens[s] - 2 + k;
        }
        b->seqs[s] = (bwd_seq){.ids = b->ids[s], .n_ids = lens[s], .n_tgt = 2, .tgt_pos = b->tpos[s],
                               .targets = b->tgt[s]};
    }
}

static double loss_of(bwd_ctx *c, mbatch *b, tune_adapter *a)
{
    tune_adapter_sync(a);
    double loss;
    pwb_err e;
    cr_assert_eq(bwd_run(c, b->seqs, 2, 0, &loss, &e), PWB_OK, "%s", e.msg);
    return loss;
}

static tune_adapter *mlp_adapter(const model *m, int n, int hidden, tune_adapter *a)
{
    tune_method_config mc;
    tune_method_config_default(&mc);
    mc.kind = TUNE_PREFIX;
    mc.prefix_hidden = hidden;
    pwb_err e;
    cr_assert_eq(tune_adapter_new(a, m, &mc, n, &e), PWB_OK, "%s", e.msg);
    tune_adapter_init_mlp(a, 11);
    return a;
}

Test(prefix_mlp, finite_differences_of_every_parameter)
{
    tiny_model *t = tiny_model_new(41, 2, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    const model *m = &t->m;
    tune_adapter a, g;
    mlp_adapter(m, 3, 6, &a);
    pwb_err e;
    cr_assert_eq(tune_adapter_like(&g, &a, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(a.mlp.td, m->hp.n_head_kv * m->hp.head_dim);
    cr_assert_eq(tune_adapter_n_params(&a), (size_t)3 * a.mlp.td + 6 * (a.mlp.td + 1) + (size_t)a.mlp.width * 7);
    mbatch b;
    mbatch_make(&b, m, 5);
    bwd_opts o = {.exact = 1};
    bwd_ctx *c;
    cr_assert_eq(bwd_ctx_new(&c, m, &o, &e), PWB_OK, "%s", e.msg);
    tune_adapter_bind_batch(c, &a, &g, NULL);
    cr_assert_eq(bwd_run(c, b.seqs, 2, 1, NULL, &e), PWB_OK, "%s", e.msg);
    tune_adapter_backprop(&a, &g);
    for (int i = 0; i < g.prompt.n_tokens * g.prompt.dim; i++)
        cr_assert_eq(g.prompt.w[i], 0.0f, "the prefix's gradient is consumed");
    tune_params p, gp;
    cr_assert_eq(tune_params_of(&a, &p, &e), PWB_OK);
    cr_assert_eq(tune_params_of(&g, &gp, &e), PWB_OK);
    cr_assert_eq(p.n, 5, "emb, W1, b1, W2, b2");
    static const char *const names[] = {"emb", "W1", "b1", "W2", "b2"};
    const double eps = 1e-2;
    for (int k = 0; k < p.n; k++) {
        const size_t N = p.rows[k] * p.cols[k], stride = N > 200 ? N / 200 : 1;
        double num = 0, den = 0;
        for (size_t i = 0; i < N; i += stride) {
            float *w = &p.w[k][i];
            const float keep = *w;
            *w = keep + (float)eps;
            const double lp = loss_of(c, &b, &a);
            *w = keep - (float)eps;
            const double lm = loss_of(c, &b, &a);
            *w = keep;
            const double fd = (lp - lm) / ((double)(float)(keep + (float)eps) - (double)(float)(keep - (float)eps));
            num += (fd - gp.w[k][i]) * (fd - gp.w[k][i]);
            den += (double)gp.w[k][i] * gp.w[k][i];
        }
        tune_adapter_sync(&a);
        cr_log_info("prefix MLP %s: %zu of %zu values, rel L2 %.2e", names[k], (N + stride - 1) / stride, N,
                    sqrt(num / den));
        cr_expect_gt(den, 0, "%s: zero gradient", names[k]);
        cr_expect_lt(sqrt(num / den), 1e-2, "%s: relative L2 error %.3g", names[k], sqrt(num / den));
    }
    tune_params_free(&p);
    tune_params_free(&gp);
    bwd_ctx_free(c);
    tune_adapter_free(&a);
    tune_adapter_free(&g);
    tiny_model_free(t);
}

Test(prefix_mlp, saves_the_computed_prefix_as_peft_does)
{
    tiny_model *t = tiny_model_new(43, 2, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    const model *m = &t->m;
    tune_adapter a, back;
    mlp_adapter(m, 4, 10, &a);
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/pwb-prefix-mlp-%d", (int)getpid());
    pwb_err e;
    cr_assert_eq(tune_adapter_save(dir, m, &a, SP_INIT_RANDOM, NULL, "tiny", NULL, &e), PWB_OK, "%s", e.msg);
    char cpath[300];
    snprintf(cpath, sizeof cpath, "%s/adapter_config.json", dir);
    cJSON *cfg = json_parse_file(cpath, 1 << 16, &e);
    cr_assert_not_null(cfg, "%s", e.msg);
    cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(cfg, "prefix_projection")));
    cr_expect_eq(json_int(cfg, "encoder_hidden_size", 0), 10);
    cJSON_Delete(cfg);
    cr_assert_eq(tune_adapter_load(dir, m, &back, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(back.kind, TUNE_PREFIX);
    cr_assert_eq(back.mlp.hidden, 0, "a loaded folder holds the prefix, not the MLP");
    cr_assert_eq(back.prompt.n_tokens * back.prompt.dim, a.prompt.n_tokens * a.prompt.dim);
    cr_expect_eq(memcmp(back.prompt.w, a.prompt.w, (size_t)a.prompt.n_tokens * a.prompt.dim * sizeof(float)), 0);
    char sa[65], sb[65];
    tune_adapter_sha256(&a, sa);
    tune_adapter_sha256(&back, sb);
    cr_expect_str_eq(sa, sb, "the identity is the prefix's, trained or loaded");
    tune_adapter_free(&a);
    tune_adapter_free(&back);
    for (int i = 0; i < 2; i++) {
        static const char *const files[] = {"adapter_config.json", "adapter_model.safetensors"};
        snprintf(cpath, sizeof cpath, "%s/%s", dir, files[i]);
        unlink(cpath);
    }
    rmdir(dir);
    tiny_model_free(t);
}
