/* pwb's LoRA and prefix gradients against PyTorch autograd through Hugging Face PEFT on
 * SmolLM2-135M: tests/reference/peft_grad_reference.py loads the committed adapters
 * (tests/fixtures/peft/pwb_lora, pwb_prefix) with PEFT on the same GGUF in float64 and writes the
 * gradient of the training loss on three SST-2 sentences as PEFT folders
 * (tests/fixtures/grad/peft_*_grad), read here with pwb's own adapter reader. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backward.h"
#include "engine/lora.h"
#include "engine/model.h"
#include "tune/peft.h"
#include "unit/engine/tiny_model.h"
#include "util/file.h"
#include "util/json.h"

#define MAX_EX 4
#define MAX_IDS 128
#define MAX_TGT 8

typedef struct gbatch {
    int B, lcp;
    int32_t ids[MAX_EX][MAX_IDS], tgt[MAX_EX][MAX_TGT];
    int n_ids[MAX_EX], n_tgt[MAX_EX], pos[MAX_EX][MAX_TGT];
    double lp[MAX_EX][MAX_TGT];
    bwd_seq seqs[MAX_EX + 1];
} gbatch;

static void ints_of(const cJSON *arr, int32_t *out, int cap, int *n)
{
    cr_assert(cJSON_IsArray(arr));
    *n = cJSON_GetArraySize(arr);
    cr_assert(*n > 0 && *n <= cap);
    for (int i = 0; i < *n; i++)
        out[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valueint;
}

/* As training runs it: the ids all examples start with form one shared sequence the others continue. */
static void batch_of(gbatch *g, const cJSON *fx)
{
    memset(g, 0, sizeof *g);
    const cJSON *exs = cJSON_GetObjectItem(fx, "examples");
    g->B = cJSON_GetArraySize(exs);
    cr_assert(g->B >= 2 && g->B <= MAX_EX);
    for (int b = 0; b < g->B; b++) {
        const cJSON *x = cJSON_GetArrayItem(exs, b);
        int np;
        int32_t p32[MAX_TGT];
        ints_of(cJSON_GetObjectItem(x, "ids"), g->ids[b], MAX_IDS, &g->n_ids[b]);
        ints_of(cJSON_GetObjectItem(x, "targets"), g->tgt[b], MAX_TGT, &g->n_tgt[b]);
        ints_of(cJSON_GetObjectItem(x, "tgt_pos"), p32, MAX_TGT, &np);
        cr_assert_eq(np, g->n_tgt[b]);
        for (int k = 0; k < np; k++)
            g->pos[b][k] = p32[k];
    }
    int lcp = g->n_ids[0] - 1;
    for (int b = 1; b < g->B; b++) {
        int k = 0;
        while (k < lcp && k < g->n_ids[b] - 1 && g->ids[b][k] == g->ids[0][k])
            k++;
        lcp = k;
    }
    cr_assert_gt(lcp, 10);
    g->lcp = lcp;
    g->seqs[0] = (bwd_seq){.ids = g->ids[0], .n_ids = lcp};
    for (int b = 0; b < g->B; b++) {
        for (int k = 0; k < g->n_tgt[b]; k++)
            g->pos[b][k] -= lcp;
        g->seqs[b + 1] = (bwd_seq){.prefix = &g->seqs[0], .ids = g->ids[b] + lcp, .n_ids = g->n_ids[b] - lcp,
                                   .n_tgt = g->n_tgt[b], .tgt_pos = g->pos[b], .targets = g->tgt[b],
                                   .tgt_logprob = g->lp[b]};
    }
}

typedef struct cmp {
    double dot, n1, n2, d2;
} cmp;

static void cmp_add(cmp *c, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        c->dot += (double)a[i] * b[i];
        c->n1 += (double)a[i] * a[i];
        c->n2 += (double)b[i] * b[i];
        c->d2 += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    }
}

/* The model, the fixture's header and, for kind, its entry, the adapter folder and the gradient's. */
typedef struct fixture {
    model *m;
    cJSON *fx;
    const cJSON *ad;
    char adapter[8300], grad[8300];
} fixture;

static void fixture_open(fixture *f, const char *kind)
{
    char mpath[4096], fdir[4096], jpath[4200];
    snprintf(mpath, sizeof mpath, "%.4000s/models/SmolLM2-135M-Instruct.Q4_1.gguf", t_root());
    if (!file_exists(mpath))
        cr_skip_test("%s not found (make model)", mpath);
    snprintf(fdir, sizeof fdir, "%.4000s/tests/fixtures/grad", t_root());
    snprintf(jpath, sizeof jpath, "%s/peft_grad.json", fdir);
    pwb_err e;
    f->fx = json_parse_file(jpath, 1 << 20, &e);
    cr_assert_not_null(f->fx, "%s", e.msg);
    f->ad = cJSON_GetObjectItem(cJSON_GetObjectItem(f->fx, "adapters"), kind);
    cr_assert_not_null(f->ad, "peft_grad.json: no %s entry", kind);
    snprintf(f->adapter, sizeof f->adapter, "%s/../../%s", fdir, json_str(f->ad, "adapter", ""));
    snprintf(f->grad, sizeof f->grad, "%s/%s", fdir, json_str(f->ad, "grad_dir", ""));
    cr_assert_eq(model_load(&f->m, mpath, &e), PWB_OK, "%s", e.msg);
}

static void fixture_close(fixture *f)
{
    model_free(f->m);
    cJSON_Delete(f->fx);
}

/* One exact (F32 activations) forward and backward of the fixture's batch with the adapter bound;
 * returns the loss. */
static double run_exact(const fixture *f, gbatch *gb, const lora *l, lora *g, const float *kv, int n, float *gkv)
{
    pwb_err e;
    batch_of(gb, f->fx);
    bwd_opts o = {.exact = 1};
    bwd_ctx *c;
    cr_assert_eq(bwd_ctx_new(&c, f->m, &o, &e), PWB_OK, "%s", e.msg);
    if (l)
        bwd_ctx_set_lora(c, l, g);
    if (kv)
        bwd_ctx_set_kv_prefix(c, kv, n, gkv);
    double loss;
    cr_assert_eq(bwd_run(c, gb->seqs, gb->B + 1, 1, &loss, &e), PWB_OK, "%s", e.msg);
    bwd_ctx_free(c);
    return loss;
}

/* The exact run's (F32 activations) loss, log-probabilities and gradient against the fixture's. */
static void check(const char *kind, gbatch *g, const cJSON *ad, const cmp *r, double loss)
{
    double maxlp = 0;
    const cJSON *lps = cJSON_GetObjectItem(ad, "logprobs");
    for (int b = 0; b < g->B; b++)
        for (int k = 0; k < g->n_tgt[b]; k++)
            maxlp = fmax(maxlp, fabs(g->lp[b][k] - cJSON_GetArrayItem(cJSON_GetArrayItem(lps, b), k)->valuedouble));
    const double ref_loss = json_num(ad, "loss", NAN), cosine = r->dot / sqrt(r->n1 * r->n2),
                 rel = sqrt(r->d2 / r->n2);
    cr_log_info("SmolLM2 %s vs PEFT + torch autograd: loss %.6f vs %.6f, max |dlogp| %.2e, grad cosine %.6f, "
                "rel L2 %.3e, |grad| %.4f vs %.4f",
                kind, loss, ref_loss, maxlp, cosine, rel, sqrt(r->n1), sqrt(r->n2));
    cr_expect_float_eq(loss, ref_loss, 1e-3 * ref_loss);
    cr_expect_lt(maxlp, 1e-2);
    cr_expect_gt(cosine, 0.999);
    cr_expect_lt(rel, 1e-2);
    cr_expect_float_eq(sqrt(r->n2), json_num(ad, "grad_l2", NAN), 1e-4 * sqrt(r->n2));
}

Test(peft_grad, lora_matches_peft_autograd, .timeout = 300)
{
    fixture f;
    fixture_open(&f, "lora");
    pwb_err e;
    lora l, ref, g;
    cr_assert_eq(peft_lora_load(f.adapter, f.m, &l, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(peft_lora_load(f.grad, f.m, &ref, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(lora_new_like(&g, &l, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(l.dropout, 0.0f);
    gbatch gb;
    const double loss = run_exact(&f, &gb, &l, &g, NULL, 0, NULL);
    cmp r = {0};
    int mats = 0;
    for (int layer = 0; layer < f.m->hp.n_layer; layer++)
        for (int mod = 0; mod < LORA_N_MODULES; mod++) {
            const lora_mat *a = lora_at(&g, layer, mod), *b = lora_at(&ref, layer, mod);
            cr_assert_eq(!a, !b);
            if (!a)
                continue;
            cmp_add(&r, a->a, b->a, (size_t)l.r * a->in);
            cmp_add(&r, a->b, b->b, (size_t)a->out * l.r);
            mats++;
        }
    cr_assert_eq(mats, 3 * f.m->hp.n_layer);
    check("LoRA r 2 on q, k, v", &gb, f.ad, &r, loss);
    lora_free(&l);
    lora_free(&ref);
    lora_free(&g);
    fixture_close(&f);
}

Test(peft_grad, prefix_matches_peft_autograd, .timeout = 300)
{
    fixture f;
    fixture_open(&f, "prefix");
    pwb_err e;
    float *kv, *ref;
    int n, n_ref;
    cr_assert_eq(peft_prefix_load(f.adapter, f.m, &kv, &n, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(peft_prefix_load(f.grad, f.m, &ref, &n_ref, &e), PWB_OK, "%s", e.msg);
    cr_assert_eq(n, n_ref);
    const size_t N = (size_t)n * f.m->hp.n_layer * 2 * f.m->hp.n_head_kv * f.m->hp.head_dim;
    float *g = calloc(N, sizeof *g);
    gbatch gb;
    const double loss = run_exact(&f, &gb, NULL, NULL, kv, n, g);
    cmp r = {0};
    cmp_add(&r, g, ref, N);
    check("4-token prefix", &gb, f.ad, &r, loss);
    free(kv);
    free(ref);
    free(g);
    fixture_close(&f);
}
