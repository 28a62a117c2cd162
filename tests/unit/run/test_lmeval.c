/* pwb's side of the lm-evaluation-harness agreement (docs/formats.md): lm-evaluation-harness's own
 * prompts written the natural way (templates/sst2-lmeval.tmpl: "...Answer:" then " negative" /
 * " positive"; templates/mc-lmeval.tmpl: the commonsense_qa prompt, then " A" ... " E"), the cards
 * as they are, no chat template, ranked by the local backend on SmolLM2, must pick what
 * lm-evaluation-harness picked and give the same log-likelihoods. The fixtures hold every question
 * (tests/reference/lmeval_compare.py wrote them from lm-evaluation-harness's hf model on the same
 * GGUF); the test checks the first 8 and a spread of the rest (every stride-th), and every one with
 * PWB_LMEVAL_ALL=1. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/backend.h"
#include "task/dataset.h"
#include "task/template.h"

/* Log-likelihoods agree this closely (both sides dequantise to float32; measured on SST-2 dev:
 * 7.4e-5 at most, on all of CommonsenseQA dev 5e-5). */
#define LL_TOL 1e-3
/* A question whose two best options lm-evaluation-harness scored closer than this is a tie to
 * float rounding: either pick is agreement. */
#define TIE 1e-4
#define MAX_ROWS 2000
#define MAX_OPT 8

static const char *root(void)
{
    const char *r = getenv("PWB_ROOT");
    return r && r[0] ? r : ".";
}

typedef struct ref_row {
    int gold, pred, n;
    double ll[MAX_OPT];
} ref_row;

typedef struct lmeval_case {
    const char *fixture, *card, *tpl, *split;
    int stride;
} lmeval_case;

/* Reads "row i gold g pred p ll a b ..." lines; returns the number of rows (rows 0..n-1 in order). */
static int read_fixture(const char *path, ref_row *ref)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        int row, g, p, off = 0;
        if (sscanf(line, "row %d gold %d pred %d ll %n", &row, &g, &p, &off) != 3 || !off || row != n ||
            n >= MAX_ROWS)
            continue;
        ref_row *r = &ref[n++];
        *r = (ref_row){.gold = g, .pred = p};
        char *s = line + off, *end;
        for (double v; r->n < MAX_OPT && (v = strtod(s, &end), end != s); s = end)
            r->ll[r->n++] = v;
    }
    fclose(f);
    return n;
}

static int argmax(const double *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        b = v[i] > v[b] ? i : b;
    return b;
}

/* lm-evaluation-harness's margin between its two best options. */
static double margin(const ref_row *r)
{
    double best = -INFINITY, second = -INFINITY;
    for (int i = 0; i < r->n; i++) {
        if (r->ll[i] > best) {
            second = best;
            best = r->ll[i];
        } else if (r->ll[i] > second) {
            second = r->ll[i];
        }
    }
    return best - second;
}

static void agree(const lmeval_case *k)
{
    char model[4096], fixture[4096], card_path[4096], tpl_path[4096], data[4096];
    snprintf(model, sizeof model, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", root());
    FILE *mf = fopen(model, "rb");
    if (!mf)
        cr_skip_test("models/ has no SmolLM2 GGUF (make model)");
    fclose(mf);
    snprintf(fixture, sizeof fixture, "%s/tests/fixtures/reference/%s", root(), k->fixture);
    snprintf(card_path, sizeof card_path, "%s/datasets/%s", root(), k->card);
    snprintf(tpl_path, sizeof tpl_path, "%s/templates/%s", root(), k->tpl);
    const char *sh = getenv("PWB_SHARED");
    snprintf(data, sizeof data, "%s/datasets", sh && sh[0] ? sh : "../shared");
    static ref_row ref[MAX_ROWS];
    int n_ref = read_fixture(fixture, ref);
    cr_assert_gt(n_ref, 0, "no rows in %s", fixture);
    const char *all = getenv("PWB_LMEVAL_ALL");
    int stride = all && !strcmp(all, "1") ? 1 : k->stride;

    pwb_err e = {0};
    ds_card c;
    card_init(&c);
    cr_assert_eq(card_load(&c, card_path, &e), PWB_OK, "%s", e.msg);
    ds_data d;
    ds_data_init(&d);
    if (dataset_load(&c, k->split, data, &d, &e) != PWB_OK)
        cr_skip_test("%s", e.msg);
    cr_assert_geq(d.n, (size_t)n_ref);
    pwb_template t;
    template_init(&t);
    cr_assert_eq(template_load(&t, tpl_path, &e), PWB_OK, "%s", e.msg);

    int rows[MAX_ROWS], n = 0;
    for (int i = 0; i < n_ref; i++)
        if (i < 8 || i % stride == 0)
            rows[n++] = i;
    llm_config cfg;
    llm_config_defaults(&cfg);
    cfg.provider = "local";
    cfg.name = "smollm2";
    cfg.model = model;
    cfg.chat_template = "none";
    cfg.threads = 1; /* OpenMP teams spin-wait badly on a busy shared machine */
    llm_backend *be = NULL;
    cr_assert_eq(llm_backend_create(&be, &cfg, &e), PWB_OK, "%s", e.msg);
    llm_request *rq = calloc((size_t)n, sizeof *rq);
    llm_response *rs = calloc((size_t)n, sizeof *rs);
    llm_message *msgs = calloc((size_t)n, sizeof *msgs);
    tpl_prompt *pr = calloc((size_t)n, sizeof *pr);
    char ***choices = calloc((size_t)n, sizeof *choices);
    int *nc = calloc((size_t)n, sizeof *nc);
    cr_assert(rq && rs && msgs && pr && choices && nc);
    for (int j = 0; j < n; j++) {
        const ds_example *x = &d.ex[rows[j]];
        cr_assert_eq(template_render(&t, &c, x, NULL, 0, &pr[j], &e), PWB_OK, "%s", e.msg);
        cr_assert_eq(pr[j].n, 1);
        msgs[j] = (llm_message){pr[j].msgs[0].role, pr[j].msgs[0].content};
        choices[j] = template_choices(&t, &c, x, &nc[j]);
        cr_assert_eq(nc[j], ref[rows[j]].n, "row %d: %d options, the fixture has %d", rows[j], nc[j], ref[rows[j]].n);
        rq[j] = (llm_request){.mode = LLM_RANK, .messages = &msgs[j], .n_messages = 1,
                              .choices = (const char *const *)choices[j], .n_choices = nc[j], .max_tokens = 1};
    }
    cr_assert_eq(be->run(be, rq, (size_t)n, rs, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    int same = 0, correct = 0, ties = 0;
    double worst = 0;
    for (int j = 0; j < n; j++) {
        const ref_row *r = &ref[rows[j]];
        cr_assert_null(rs[j].error, "row %d: %s", rows[j], rs[j].error);
        const double *lp = rs[j].choice_logprob;
        int pred = argmax(lp, nc[j]);
        same += pred == r->pred;
        correct += pred == r->gold;
        for (int o = 0; o < nc[j]; o++) {
            worst = fmax(worst, fabs(lp[o] - r->ll[o]));
            cr_expect_leq(fabs(lp[o] - r->ll[o]), LL_TOL, "row %d option %d: pwb %.6f, lm-eval %.6f", rows[j], o, lp[o],
                          r->ll[o]);
        }
        if (pred != r->pred && margin(r) < TIE)
            ties++;
        else
            cr_expect_eq(pred, r->pred, "row %d: pwb picks %d (%.4f), lm-eval %d (%.4f)", rows[j], pred, lp[pred],
                         r->pred, r->ll[r->pred]);
    }
    cr_log_info("%s: %d of %d checked questions agree with lm-evaluation-harness (%d more tie), accuracy %.2f%%, "
                "largest log-likelihood difference %.5f", k->tpl, same, n, ties, 100.0 * correct / n, worst);
    for (int j = 0; j < n; j++) {
        llm_response_clear(&rs[j]);
        tpl_prompt_free(&pr[j]);
        dataset_choices_free(choices[j], nc[j]);
    }
    free(rq);
    free(rs);
    free(msgs);
    free(pr);
    free(choices);
    free(nc);
    llm_backend_free(be);
    template_free(&t);
    ds_data_free(&d);
    card_free(&c);
}

Test(lmeval, sst2_prompt_agrees_with_lm_evaluation_harness, .timeout = 3600)
{
    agree(&(lmeval_case){"sst2_dev_lmeval.txt", "glue_sst2.json", "sst2-lmeval.tmpl", "dev", 29});
}
Test(lmeval, commonsense_qa_prompt_agrees_with_lm_evaluation_harness, .timeout = 3600)
{
    agree(&(lmeval_case){"commonsense_qa_validation_lmeval.txt", "commonsense_qa.json", "mc-lmeval.tmpl",
                         "validation", 61});
}
