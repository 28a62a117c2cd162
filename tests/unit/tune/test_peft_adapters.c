/* LoRA and prefix-tuning adapters in PEFT's format: write/read round trips on a random tiny model,
 * what the reader refuses, training through the method interface, and agreement with Hugging Face
 * PEFT on SmolLM2 (vectors made by tests/reference/peft_reference.py under tests/fixtures/peft/:
 * PEFT loaded pwb's adapters, and pwb loads one PEFT made). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/lora.h"
#include "engine/safetensors.h"
#include "tune/method.h"
#include "tune/peft.h"
#include "tune/train.h"
#include "unit/engine/tiny_model.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/json.h"

static char *tmpdir(const char *tag)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "/tmp/pwb-peft-%s-%d", tag, (int)getpid());
    return buf;
}

static void fill(float *w, size_t n, uint64_t seed)
{
    pwb_rng r;
    rng_init(&r, seed);
    for (size_t i = 0; i < n; i++)
        w[i] = (float)(rng_uniform(&r) - 0.5);
}

Test(peft_adapters, lora_round_trip_and_names)
{
    tiny_model *t = tiny_model_new(31, 2, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    pwb_err e;
    tune_method_config mc;
    tune_method_config_default(&mc);
    mc.kind = TUNE_LORA;
    mc.lora_r = 3;
    mc.lora_targets = (1u << LORA_Q) | (1u << LORA_K) | (1u << LORA_DOWN);
    tune_adapter a, b;
    cr_assert_eq(tune_adapter_new(&a, &t->m, &mc, 0, &e), PWB_OK, "%s", e.msg);
    tune_params p;
    cr_assert_eq(tune_params_of(&a, &p, &e), PWB_OK);
    cr_expect_eq(p.n, 2 * 2 * 3);
    for (int i = 0; i < p.n; i++)
        fill(p.w[i], p.rows[i] * p.cols[i], 100 + (uint64_t)i);
    const char *dir = tmpdir("lora");
    cr_assert_eq(tune_adapter_save(dir, &t->m, &a, 0, NULL, "tiny", NULL, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(tune_adapter_load(dir, &t->m, &b, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(b.kind, TUNE_LORA);
    cr_expect_eq(b.lora.r, 3);
    cr_expect_eq(b.lora.targets, mc.lora_targets);
    char ha[65], hb[65];
    tune_adapter_sha256(&a, ha);
    tune_adapter_sha256(&b, hb);
    cr_expect_str_eq(ha, hb, "values change in a round trip");
    /* an infinity in any matrix is refused when loaded */
    tune_adapter_free(&b);
    const float keep = p.w[1][2];
    p.w[1][2] = INFINITY;
    char bad_dir[300];
    snprintf(bad_dir, sizeof bad_dir, "%s-inf", dir);
    cr_assert_eq(tune_adapter_save(bad_dir, &t->m, &a, 0, NULL, "tiny", NULL, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(tune_adapter_load(bad_dir, &t->m, &b, &e), PWB_EPARSE);
    cr_expect(strstr(e.msg, "not finite"), "%s", e.msg);
    p.w[1][2] = keep;
    cr_assert_eq(tune_adapter_load(dir, &t->m, &b, &e), PWB_OK, "%s", e.msg);
    /* PEFT's names and B of q in Hugging Face's row order on disk */
    pwb_buf path;
    buf_init(&path);
    file_join(&path, dir, "adapter_model.safetensors");
    safetensors_file *st;
    cr_assert_eq(safetensors_open(&st, path.data, &e), PWB_OK);
    const pwb_tensor *qb = safetensors_find_tensor(st, "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight");
    cr_assert_not_null(qb);
    cr_expect_eq(qb->ne[0], 3);
    cr_expect_eq(qb->ne[1], 32);
    const float *hf = qb->data, *pw = lora_at(&a.lora, 1, LORA_Q)->b;
    /* head_dim 8: HF row 1 is pwb row 2 */
    cr_expect_eq(hf[1 * 3], pw[2 * 3]);
    cr_expect_not_null(safetensors_find_tensor(st, "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"));
    safetensors_close(st);
    file_join(&path, dir, "adapter_config.json");
    cJSON *c = json_parse_file(path.data, 1 << 20, &e);
    cr_assert_not_null(c);
    cr_expect_str_eq(json_str(c, "peft_type", ""), "LORA");
    cr_expect_eq(json_int(c, "r", 0), 3);
    cJSON_Delete(c);
    /* A model of another shape is refused. */
    tiny_model *t2 = tiny_model_new(32, 3, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    tune_adapter x;
    cr_expect_neq(tune_adapter_load(dir, &t2->m, &x, &e), PWB_OK);
    /* So is what pwb does not compute. */
    const char *dora = "{\"peft_type\":\"LORA\",\"r\":3,\"lora_alpha\":6,\"target_modules\":[\"q_proj\"],\"use_dora\":true}";
    cr_assert_eq(file_write_atomic(path.data, dora, strlen(dora), &e), PWB_OK);
    cr_expect_eq(tune_adapter_load(dir, &t->m, &x, &e), PWB_EUNSUP);
    const char *regex = "{\"peft_type\":\"LORA\",\"r\":3,\"lora_alpha\":6,\"target_modules\":\".*proj\"}";
    cr_assert_eq(file_write_atomic(path.data, regex, strlen(regex), &e), PWB_OK);
    cr_expect_eq(tune_adapter_load(dir, &t->m, &x, &e), PWB_EUNSUP);
    buf_free(&path);
    tune_params_free(&p);
    tune_adapter_free(&a);
    tune_adapter_free(&b);
    tiny_model_free(t);
    tiny_model_free(t2);
}

Test(peft_adapters, prefix_round_trip)
{
    tiny_model *t = tiny_model_new(33, 2, 32, 4, 2, 64, 48, ROPE_ADJACENT, 0);
    pwb_err e;
    tune_method_config mc;
    tune_method_config_default(&mc);
    mc.kind = TUNE_PREFIX;
    tune_adapter a, b;
    cr_assert_eq(tune_adapter_new(&a, &t->m, &mc, 5, &e), PWB_OK);
    cr_expect_eq(a.prompt.dim, 2 * 2 * 16);
    fill(a.prompt.w, (size_t)5 * a.prompt.dim, 7);
    const char *dir = tmpdir("prefix");
    cr_assert_eq(tune_adapter_save(dir, &t->m, &a, 0, NULL, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(tune_adapter_load(dir, &t->m, &b, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(b.kind, TUNE_PREFIX);
    cr_expect_eq(b.prompt.n_tokens, 5);
    cr_expect_eq(memcmp(a.prompt.w, b.prompt.w, (size_t)5 * a.prompt.dim * sizeof(float)), 0);
    tune_adapter_free(&b);
    /* a model with other key/value widths is refused with both shapes named */
    tiny_model *t2 = tiny_model_new(33, 2, 32, 4, 4, 64, 48, ROPE_ADJACENT, 0);
    cr_expect_eq(tune_adapter_load(dir, &t2->m, &b, &e), PWB_EPARSE);
    cr_expect(strstr(e.msg, "is [5, 64], the model needs [5, 128]"), "%s", e.msg);
    tiny_model_free(t2);
    /* a value that is not finite is refused */
    a.prompt.w[17] = NAN;
    cr_assert_eq(tune_adapter_save(dir, &t->m, &a, 0, NULL, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    cr_expect_eq(tune_adapter_load(dir, &t->m, &b, &e), PWB_EPARSE);
    cr_expect(strstr(e.msg, "not finite"), "%s", e.msg);
    tune_adapter_free(&a);
    tiny_model_free(t);
}

/* ---- against Hugging Face PEFT on SmolLM2 ------------------------------------------------- */

static double max_diff_vs_reference(engine *en, const tune_adapter *a, const cJSON *fx, int *top_ok)
{
    const cJSON *ps = cJSON_GetObjectItem(fx, "prompts");
    const int V = engine_n_vocab(en);
    double worst = 0;
    *top_ok = 1;
    for (int k = 0; k < cJSON_GetArraySize(ps); k++) {
        const cJSON *p = cJSON_GetArrayItem(ps, k), *ids = cJSON_GetObjectItem(p, "ids");
        const int n = cJSON_GetArraySize(ids);
        int32_t *x = malloc((size_t)n * sizeof *x);
        for (int i = 0; i < n; i++)
            x[i] = cJSON_GetArrayItem(ids, i)->valueint;
        float *lg = malloc((size_t)n * V * sizeof *lg);
        pwb_err e;
        engine_prefix *pre = NULL;
        tune_adapter_bind_engine(en, a);
        cr_assert_eq(tune_adapter_prefix(en, a, NULL, 0, &pre, &e), PWB_OK, "%s", e.msg);
        cr_assert_eq(engine_logits(en, pre, x, n, lg, &e), PWB_OK, "%s", e.msg);
        tune_adapter_bind_engine(en, NULL);
        engine_prefix_free(pre);
        const float *last = lg + (size_t)(n - 1) * V;
        const cJSON *vid = cJSON_GetObjectItem(p, "vocab_ids"), *ref = cJSON_GetObjectItem(p, "logits");
        for (int i = 0; i < cJSON_GetArraySize(vid); i++) {
            const double d = fabs(last[cJSON_GetArrayItem(vid, i)->valueint] - cJSON_GetArrayItem(ref, i)->valuedouble);
            if (d > worst)
                worst = d;
        }
        int best = 0;
        for (int v = 1; v < V; v++)
            if (last[v] > last[best])
                best = v;
        *top_ok &= best == cJSON_GetArrayItem(cJSON_GetObjectItem(p, "top"), 0)->valueint;
        free(lg);
        free(x);
    }
    return worst;
}

static void check_fixture(const char *name, int kind)
{
    char mpath[4096], dir[4096], jpath[4200];
    snprintf(mpath, sizeof mpath, "%.4000s/models/SmolLM2-135M-Instruct.Q4_1.gguf", t_root());
    if (!file_exists(mpath))
        cr_skip_test("%s not found (make model)", mpath);
    snprintf(dir, sizeof dir, "%.4000s/tests/fixtures/peft/%s", t_root(), name);
    snprintf(jpath, sizeof jpath, "%s/reference_logits.json", dir);
    pwb_err e;
    cJSON *fx = json_parse_file(jpath, 4 << 20, &e);
    cr_assert_not_null(fx, "%s", e.msg);
    engine *en;
    cr_assert_eq(engine_open(&en, mpath, NULL, &e), PWB_OK, "%s", e.msg);
    tune_adapter a;
    cr_assert_eq(tune_adapter_load(dir, engine_model(en), &a, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(a.kind, kind);
    int top_ok;
    const double d = max_diff_vs_reference(en, &a, fx, &top_ok);
    double d0 = 0;
    int top0;
    /* Without the adapter pwb is much further from PEFT's numbers: the adapter is what agrees. */
    d0 = max_diff_vs_reference(en, NULL, fx, &top0);
    cr_log_info("%s: max |logit - PEFT| %.2e with the adapter, %.2e without", name, d, d0);
    cr_expect_lt(d, 1e-3, "%s: logits differ from PEFT's by %.3g", name, d);
    cr_expect(top_ok, "%s: the top token differs from PEFT's", name);
    cr_expect_gt(d0, 100 * d, "%s: the adapter hardly moves the logits (%.3g)", name, d0);
    tune_adapter_free(&a);
    engine_close(en);
    cJSON_Delete(fx);
}

Test(peft_reference, pwb_lora_loaded_by_peft, .timeout = 300)
{
    check_fixture("pwb_lora", TUNE_LORA);
}

Test(peft_reference, pwb_prefix_loaded_by_peft, .timeout = 300)
{
    check_fixture("pwb_prefix", TUNE_PREFIX);
}

Test(peft_reference, peft_lora_loaded_by_pwb, .timeout = 300)
{
    check_fixture("peft_lora", TUNE_LORA);
}
