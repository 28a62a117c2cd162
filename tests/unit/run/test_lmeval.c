/* pwb's side of the lm-evaluation-harness agreement on SST-2: lm-evaluation-harness's glue/sst2
 * prompt written the natural way (templates/sst2-lmeval.tmpl: "...Answer:" then " negative" /
 * " positive"), the untrimmed glue_sst2 card, no chat template, ranked by the local backend on
 * SmolLM2, must pick what lm-evaluation-harness picked for every question of the fixture
 * (tests/reference/lmeval_compare.py wrote it from lm-evaluation-harness's hf model on the same
 * GGUF): every question the fixture holds (tests/reference/lmeval_compare.py --limit N writes the first
 * N). */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/backend.h"
#include "task/dataset.h"
#include "task/template.h"

static const char *root(void)
{
    const char *r = getenv("PWB_ROOT");
    return r && r[0] ? r : ".";
}

typedef struct ref_row {
    int gold, pred;
    double ll[2];
} ref_row;

Test(lmeval, sst2_prompt_agrees_with_lm_evaluation_harness, .timeout = 3600)
{
    char model[4096], fixture[4096], card_path[4096], tpl_path[4096], data[4096];
    snprintf(model, sizeof model, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", root());
    FILE *mf = fopen(model, "rb");
    if (!mf)
        cr_skip_test("models/ has no SmolLM2 GGUF (make model)");
    fclose(mf);
    snprintf(fixture, sizeof fixture, "%s/tests/fixtures/reference/sst2_dev_lmeval.txt", root());
    snprintf(card_path, sizeof card_path, "%s/datasets/glue_sst2.json", root());
    snprintf(tpl_path, sizeof tpl_path, "%s/templates/sst2-lmeval.tmpl", root());
    const char *sh = getenv("PWB_SHARED");
    snprintf(data, sizeof data, "%s/datasets", sh && sh[0] ? sh : "../shared");
    static ref_row ref[872];
    int n_ref = 0;
    FILE *f = fopen(fixture, "r");
    cr_assert_not_null(f, "%s", fixture);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        int row, g, p;
        double a, b;
        if (sscanf(line, "row %d gold %d pred %d ll %lf %lf", &row, &g, &p, &a, &b) == 5 && row == n_ref &&
            n_ref < 872)
            ref[n_ref++] = (ref_row){g, p, {a, b}};
    }
    fclose(f);
    cr_assert_gt(n_ref, 0, "no rows in %s", fixture);
    int n = n_ref;

    pwb_err e = {0};
    ds_card c;
    card_init(&c);
    cr_assert_eq(card_load(&c, card_path, &e), PWB_OK, "%s", e.msg);
    ds_data d;
    ds_data_init(&d);
    cr_assert_eq(dataset_load(&c, "dev", data, &d, &e), PWB_OK, "%s", e.msg);
    pwb_template t;
    template_init(&t);
    cr_assert_eq(template_load(&t, tpl_path, &e), PWB_OK, "%s", e.msg);

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
    for (int i = 0; i < n; i++) {
        cr_assert_eq(template_render(&t, &c, &d.ex[i], NULL, 0, &pr[i], &e), PWB_OK, "%s", e.msg);
        cr_assert_eq(pr[i].n, 1);
        msgs[i] = (llm_message){pr[i].msgs[0].role, pr[i].msgs[0].content};
        choices[i] = template_choices(&t, &c, &d.ex[i], &nc[i]);
        rq[i] = (llm_request){.mode = LLM_RANK, .messages = &msgs[i], .n_messages = 1,
                              .choices = (const char *const *)choices[i], .n_choices = nc[i], .max_tokens = 1};
    }
    cr_assert_eq(be->run(be, rq, (size_t)n, rs, NULL, NULL, &e), PWB_OK, "%s", e.msg);
    int agree = 0, correct = 0;
    double worst = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_null(rs[i].error, "row %d: %s", i, rs[i].error);
        const double *lp = rs[i].choice_logprob;
        int pred = lp[1] > lp[0];
        agree += pred == ref[i].pred;
        correct += pred == ref[i].gold;
        for (int k = 0; k < 2; k++)
            worst = fmax(worst, fabs(lp[k] - ref[i].ll[k]));
        cr_expect_eq(pred, ref[i].pred, "row %d: pwb %d (%.4f, %.4f), lm-eval %d (%.4f, %.4f)", i, pred, lp[0], lp[1],
                     ref[i].pred, ref[i].ll[0], ref[i].ll[1]);
    }
    cr_log_info("sst2-lmeval: %d of %d agree with lm-evaluation-harness, accuracy %.2f%%, largest log-likelihood "
                "difference %.4f", agree, n, 100.0 * correct / n, worst);
    for (int i = 0; i < n; i++) {
        llm_response_clear(&rs[i]);
        tpl_prompt_free(&pr[i]);
        dataset_choices_free(choices[i], nc[i]);
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
