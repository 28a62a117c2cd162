/* Calibration against values worked out by hand (see each test's comment). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "task/calib.h"
#include "util/err.h"

Test(calib, names_round_trip)
{
    cr_assert_eq(calib_kind_parse(NULL), CALIB_NONE);
    cr_assert_eq(calib_kind_parse("none"), CALIB_NONE);
    cr_assert_eq(calib_kind_parse("contextual"), CALIB_CONTEXTUAL);
    cr_assert_eq(calib_kind_parse("pmi"), CALIB_PMI);
    cr_assert_eq(calib_kind_parse("Contextual"), -1);
    cr_assert_eq(calib_kind_parse(""), -1);
    cr_assert_str_eq(calib_kind_name(CALIB_PMI), "pmi");
    cr_assert_str_eq(calib_kind_name(7), "unknown");
    cr_assert_str_eq(calib_content_free[0], "N/A");
    cr_assert_str_eq(calib_content_free[1], "");
    cr_assert_str_eq(calib_content_free[2], "[MASK]");
}

/* Three content-free rows over two labels, given as unnormalised probabilities:
 *   (0.8, 0.2) -> (0.80, 0.20);  (0.6, 0.2) -> (0.75, 0.25);  (0.9, 0.1) -> (0.90, 0.10)
 * mean p_cf = (2.45/3, 0.55/3) = (0.816667, 0.183333). */
Test(calib, contextual_prior_by_hand)
{
    double lp[6] = {log(0.8), log(0.2), log(0.6), log(0.2), log(0.9), log(0.1)};
    double prior[2];
    cr_assert_eq(calib_prior_contextual(lp, 3, 2, prior), PWB_OK);
    cr_assert_float_eq(exp(prior[0]), 2.45 / 3, 1e-12);
    cr_assert_float_eq(exp(prior[1]), 0.55 / 3, 1e-12);
    /* a query at (0.7, 0.3): raw argmax is label 0; calibrated 0.7/0.8167 = 0.857 < 0.3/0.1833 = 1.636 */
    double q[2] = {log(0.7), log(0.3)};
    cr_assert_eq(calib_choose(q, NULL, 2), 0);
    cr_assert_eq(calib_choose(q, prior, 2), 1);
    /* (0.9, 0.1): 0.9/0.8167 = 1.102 > 0.1/0.1833 = 0.545, label 0 stays */
    double q2[2] = {log(0.9), log(0.1)};
    cr_assert_eq(calib_choose(q2, prior, 2), 0);
}

/* Normalisation is per row: adding a constant to every label of a row changes nothing, and log
 * values far below exp's range (summed multi-token labels) must not underflow to 0/0. */
Test(calib, contextual_rows_normalised_and_stable)
{
    double a[4] = {-1000 + log(0.25), -1000 + log(0.75), -2 + log(0.25), -2 + log(0.75)};
    double prior[2];
    cr_assert_eq(calib_prior_contextual(a, 2, 2, prior), PWB_OK);
    cr_assert_float_eq(exp(prior[0]), 0.25, 1e-12);
    cr_assert_float_eq(exp(prior[1]), 0.75, 1e-12);
}

/* Four labels, one content-free input: prior = softmax(lp) exactly. */
Test(calib, contextual_four_labels)
{
    double lp[4] = {log(1.0), log(2.0), log(3.0), log(4.0)};
    double prior[4];
    cr_assert_eq(calib_prior_contextual(lp, 1, 4, prior), PWB_OK);
    for (int l = 0; l < 4; l++)
        cr_assert_float_eq(exp(prior[l]), (l + 1) / 10.0, 1e-12);
    /* (0.4, 0.3, 0.2, 0.1) calibrated: 4.0, 1.5, 0.667, 0.25 -> label 0; (0.1, 0.15, 0.3, 0.45)
     * calibrated: 1.0, 0.75, 1.0, 1.125 -> label 3 */
    double q[4] = {log(0.4), log(0.3), log(0.2), log(0.1)};
    cr_assert_eq(calib_choose(q, prior, 4), 0);
    double q2[4] = {log(0.1), log(0.15), log(0.3), log(0.45)};
    cr_assert_eq(calib_choose(q2, prior, 4), 3);
}

/* PMI subtracts the premise's raw log-probabilities: scores (-2, -3) with premise (-1, -4) give
 * (-1, +1): label 1, where the raw scores chose label 0. */
Test(calib, pmi_by_hand)
{
    double lp[2] = {-2, -3}, premise[2] = {-1, -4};
    cr_assert_eq(calib_choose(lp, NULL, 2), 0);
    cr_assert_eq(calib_choose(lp, premise, 2), 1);
    /* equal scores: the first label wins */
    double tie[2] = {-1, -1};
    cr_assert_eq(calib_choose(tie, NULL, 2), 0);
}

Test(calib, rejects_bad_input)
{
    double prior[2];
    double bad[2] = {NAN, 0};
    cr_assert_eq(calib_prior_contextual(bad, 1, 2, prior), PWB_EINVAL);
    cr_assert_eq(calib_prior_contextual(bad, 0, 2, prior), PWB_EINVAL);
    cr_assert_eq(calib_choose(bad, NULL, 2), -1);
    cr_assert_eq(calib_choose(bad, NULL, 0), -1);
    double lp[2] = {-1, -2}, inf[2] = {INFINITY, 0};
    cr_assert_eq(calib_choose(lp, inf, 2), -1);
}

static tpl_message msg(const char *role, const char *content)
{
    tpl_message m = {strdup(role), strdup(content)};
    return m;
}

/* The domain premise keeps the system message, drops the shots and the input, keeps the text after
 * the input and any later message. */
Test(calib, premise_cuts_at_the_input)
{
    tpl_prompt p;
    p.n = 5;
    p.msgs = calloc(5, sizeof *p.msgs);
    p.msgs[0] = msg("system", "You label reviews.");
    p.msgs[1] = msg("user", "Review: good film");
    p.msgs[2] = msg("assistant", "positive");
    p.msgs[3] = msg("user", "Review: " CALIB_MARKER "\n Is it positive or negative?");
    p.msgs[4] = msg("assistant", "The answer is");
    pwb_err e;
    cr_assert_eq(calib_premise(&p, &e), PWB_OK);
    cr_assert_eq(p.n, 3);
    cr_assert_str_eq(p.msgs[0].content, "You label reviews.");
    cr_assert_str_eq(p.msgs[1].role, "user");
    cr_assert_str_eq(p.msgs[1].content, "Is it positive or negative?");
    cr_assert_str_eq(p.msgs[2].content, "The answer is");
    tpl_prompt_free(&p);
    p.n = 1;
    p.msgs = calloc(1, sizeof *p.msgs);
    p.msgs[0] = msg("user", "no input here");
    cr_assert_eq(calib_premise(&p, &e), PWB_EINVAL);
    cr_assert(strstr(e.msg, "input") != NULL);
    tpl_prompt_free(&p);
}
