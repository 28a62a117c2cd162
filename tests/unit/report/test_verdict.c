/* The verdict on hand-built groups: which pair it weighs, the gap with its interval and McNemar
 * p, the volume at which the answer flips (or why it never does), and N* from a budget sweep.
 *
 * Group: zs (engineered, 0 labelled, 55/100), fs (engineered few-shot, 4 labelled, 60/100),
 * soft-16/64/256 (tuned, 16/64/256 labelled examples, 50/70/80 of 100, 100 CPU-s of training).
 * Outcomes over rows 0..99: fs right on rows 0..59; soft-256 right on rows 0..54 and 60..84
 * (80/100): both right 55, only fs 5, only soft 25, neither 15 -> gap +20.0 points, exact
 * McNemar p = 2 * P[X <= 5 | 30, 1/2] = 0.000325. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "report/report.h"
#include "report/report_internal.h"
#include "report/stats.h"

static db_outcome fs_o[100], zs_o[100], s16_o[100], s64_o[100], s256_o[100];

static void outcomes(db_outcome *o, int lo1, int hi1, int lo2, int hi2)
{
    for (int r = 0; r < 100; r++) {
        o[r].row = r;
        o[r].valid = 1;
        o[r].label = r % 2;
        o[r].correct = (r >= lo1 && r < hi1) || (r >= lo2 && r < hi2);
        o[r].predicted = o[r].correct ? o[r].label : 1 - o[r].label;
    }
}

static report_row row(const char *method, const char *kind, int arm, long labelled, double acc, double fixed,
                      double cpu)
{
    report_row w;
    memset(&w, 0, sizeof w);
    w.method = (char *)method;
    w.kind = (char *)kind;
    w.arm = arm;
    w.n = 100;
    w.correct = (long)(acc * 100 + 0.5);
    w.accuracy = acc;
    stats_wilson(w.correct, 100, STATS_Z95, &w.ci_lo, &w.ci_hi);
    w.labelled = labelled;
    w.fixed_cpu_s = fixed;
    w.cpu_per_example = cpu;
    return w;
}

static void build(report_group *g, report_row *rows, double soft_cpu)
{
    outcomes(zs_o, 0, 55, 0, 0);
    outcomes(fs_o, 0, 60, 0, 0);
    outcomes(s16_o, 0, 50, 0, 0);
    outcomes(s64_o, 0, 70, 0, 0);
    outcomes(s256_o, 0, 55, 60, 85);
    rows[0] = row("zs", "zero-shot", REPORT_ARM_ENGINEERED, 0, 0.55, 0, 0.05);
    rows[1] = row("fs", "few-shot", REPORT_ARM_ENGINEERED, 4, 0.60, 0, 0.10);
    rows[2] = row("soft-16", "soft", REPORT_ARM_TUNED, 16, 0.50, 100, soft_cpu);
    rows[3] = row("soft-64", "soft", REPORT_ARM_TUNED, 64, 0.70, 100, soft_cpu);
    rows[4] = row("soft-256", "soft", REPORT_ARM_TUNED, 256, 0.80, 100, soft_cpu);
    memset(g, 0, sizeof *g);
    g->dataset = "d";
    g->model = "m";
    g->rows = rows;
    g->n_rows = 5;
    g->baseline = -1;
    const db_outcome *o[5] = {zs_o, fs_o, s16_o, s64_o, s256_o};
    size_t n[5] = {100, 100, 100, 100, 100};
    report_verdict_build(g, o, n);
}

Test(verdict, significant_gap_break_even_and_crossing)
{
    report_group g;
    report_row rows[5];
    build(&g, rows, 0.02);
    const report_verdict *v = &g.verdict;
    cr_assert_eq(v->engineered, 1);
    cr_assert_eq(v->tuned, 4);
    cr_assert_eq(v->shared, 100);
    cr_assert_eq(v->only_e, 5);
    cr_assert_eq(v->only_t, 25);
    cr_assert_float_eq(v->gap, 0.20, 1e-12);
    cr_assert_float_eq(v->p, stats_mcnemar_exact(5, 25), 1e-15);
    cr_assert(v->p < 0.001 && v->significant);
    cr_assert(v->gap_lo > 0.08 && v->gap_lo < v->gap && v->gap_hi > v->gap && v->gap_hi < 0.32,
              "[%g, %g]", v->gap_lo, v->gap_hi);
    /* volume: (100 - 0) / (0.10 - 0.02) = 1,250 inferences */
    cr_assert_null(v->v_reason);
    cr_assert_float_eq(v->v_flip, 1250, 1e-9);
    /* N*: best engineered within 16, 64, 256 examples is fs at 60%; soft gaps -10, +10 -> the
     * crossing between 16 and 64: 16 + 48 * 10 / 20 = 40 */
    cr_assert_float_eq(v->n_star, 40, 1e-9);
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(md_verdict(&g, &b), 0);
    cr_assert(strstr(b.data, "The best tuned method, **soft-256**, is more accurate than the best engineered prompt, "
                             "**fs**: tuned \xe2\x88\x92 engineered = **+20.0 points**") != NULL,
              "%s", b.data);
    cr_assert(strstr(b.data, "exact McNemar p = <0.001") != NULL, "%s", b.data);
    cr_assert(strstr(b.data, "only beyond V = 1,250 inferences") != NULL, "%s", b.data);
    cr_assert(strstr(b.data, "overtakes the best engineered prompt of the same budget at about N\\* = 40 labelled "
                             "examples; with fewer, the engineered prompt is at least as accurate") != NULL,
              "%s", b.data);
    cr_assert_null(strstr(b.data, "not significant"), "%s", b.data);
    /* one sentence on N*: a crossing is not also said to be "not reached" */
    cr_assert_null(strstr(b.data, "not reached"), "%s", b.data);
    cr_assert_null(strstr(b.data, ".Within"), "%s", b.data);
    /* the sentences' numbers are in the verdict's tables */
    cr_assert(strstr(b.data, "| soft-256 \xe2\x88\x92 fs | +20.0 | [") != NULL, "%s", b.data);
    cr_assert(strstr(b.data, "| 100 | 25 | 5 | 1,250 | 40 |") != NULL, "%s", b.data);
    cr_assert(strstr(b.data, "| tuned | soft-256 | soft | 80.0% [71.1, 86.7] | 256 | 100 | 20.0 |") != NULL, "%s",
              b.data);
    buf_free(&b);
}

Test(verdict, never_cheaper_says_why)
{
    report_group g;
    report_row rows[5];
    build(&g, rows, 0.15); /* the soft prompts cost more per example than fs */
    cr_assert(isnan(g.verdict.v_flip));
    cr_assert_not_null(g.verdict.v_reason);
    cr_assert(strstr(g.verdict.v_reason, "shared prefix") != NULL, "%s", g.verdict.v_reason);
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(md_verdict(&g, &b), 0);
    cr_assert(strstr(b.data, "**soft-256** never costs less in total than **fs** (never: not cheaper per example, "
                             "since the few-shot prompt's shots are a shared prefix") != NULL,
              "%s", b.data);
    cr_assert(strstr(b.data, "Its +20.0 points are bought with that cost.") != NULL, "%s", b.data);
    buf_free(&b);
}

Test(verdict, no_significant_difference_is_said)
{
    report_group g;
    report_row rows[5];
    build(&g, rows, 0.02);
    /* soft-256 now right on rows 0..61: 62/100 against fs's 60 (only soft 2, only fs 0); soft-64
     * drops to 58/100 so soft-256 stays the best tuned method */
    outcomes(s256_o, 0, 62, 0, 0);
    outcomes(s64_o, 0, 58, 0, 0);
    rows[4].accuracy = 0.62;
    rows[3].accuracy = 0.58;
    const db_outcome *o[5] = {zs_o, fs_o, s16_o, s64_o, s256_o};
    size_t n[5] = {100, 100, 100, 100, 100};
    report_verdict_build(&g, o, n);
    cr_assert_float_eq(g.verdict.p, 0.5, 1e-12);
    cr_assert(!g.verdict.significant);
    cr_assert(g.verdict.gap_lo < 0 && g.verdict.gap_hi > 0);
    /* soft-16 (50%) trails fs (60%), soft-64 (58%) too, soft-256 (62%) leads: the crossing between
     * 64 and 256, 64 + 192 * 2 / 4 = 160, on point estimates only */
    cr_assert_float_eq(g.verdict.n_star, 160, 1e-9);
    cr_assert(!g.verdict.n_star_upper);
    pwb_buf b;
    buf_init(&b);
    cr_assert_eq(md_verdict(&g, &b), 0);
    cr_assert(strstr(b.data, "**No significant difference** between the best tuned method, **soft-256**, and the best "
                             "engineered prompt, **fs**: tuned \xe2\x88\x92 engineered = +2.0 points") != NULL,
              "%s", b.data);
    cr_assert(strstr(b.data, "about N\\* = 160 labelled examples") != NULL, "%s", b.data);
    cr_assert(strstr(b.data, "The gap at the best tuned method is not significant, so neither is this crossing.") !=
                  NULL,
              "%s", b.data);
    buf_free(&b);
}

Test(verdict, volume_flip_cases)
{
    report_row x = {.kind = "soft", .fixed_cpu_s = 10, .cpu_per_example = 0.1};
    report_row y = {.kind = "zero-shot", .fixed_cpu_s = 0, .cpu_per_example = 0.2};
    double v;
    cr_assert_null(report_volume_flip(&x, &y, &v));
    cr_assert_float_eq(v, 100, 1e-12);
    x.cpu_per_example = 0.3; /* dearer per example and up front */
    cr_assert_str_eq(report_volume_flip(&x, &y, &v), "never: not cheaper per example");
    cr_assert(isnan(v));
    x.fixed_cpu_s = 0; /* dearer per example only: it never wins either */
    cr_assert(!strncmp(report_volume_flip(&x, &y, &v), "never", 5));
    y.fixed_cpu_s = 50; /* y has the one-time cost now: x is cheaper below 50 / 0.1 = 500 */
    cr_assert(strstr(report_volume_flip(&x, &y, &v), "only below") != NULL);
    cr_assert_float_eq(v, 500, 1e-9);
    x.cpu_per_example = 0.1;
    cr_assert(strstr(report_volume_flip(&x, &y, &v), "none needed") != NULL);
    y.cpu_per_example = NAN;
    cr_assert(strstr(report_volume_flip(&x, &y, &v), "not recorded") != NULL);
}

/* The verdict weighs its more accurate method against always answering the majority class. */
Test(verdict, majority_class_sentence)
{
    report_group g;
    report_row rows[6];
    build(&g, rows, 0.02);
    char *labels[2] = {"negative", "positive"};
    rows[5] = row("majority class", "baseline", REPORT_ARM_BASELINE, 0, 0.65, 0, 0);
    rows[5].is_baseline = 1;
    rows[5].majority_label = 1;
    g.labels = labels;
    g.n_labels = 2;
    g.baseline = 5;
    g.n_rows = 6;
    rows[4].is_best = 1;
    const char *want[] = {"**soft-256** beats always answering positive (the majority class, 65.0% [",
                          "**soft-256** is not significantly better than always answering positive (",
                          "**soft-256** does not beat always answering positive ("};
    double p[] = {0.001, 0.2, 0.001}, acc[] = {0.65, 0.65, 0.85};
    for (int i = 0; i < 3; i++) {
        rows[5].mcnemar_p = p[i];
        rows[5].accuracy = acc[i];
        pwb_buf b;
        buf_init(&b);
        cr_assert_eq(md_verdict(&g, &b), 0);
        cr_assert(strstr(b.data, want[i]) != NULL, "%d: %s", i, b.data);
        cr_assert_eq(strstr(b.data, "label frequencies") != NULL, i == 2, "%d: %s", i, b.data);
        buf_free(&b);
    }
}
