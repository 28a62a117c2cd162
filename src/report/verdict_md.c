/* Markdown for the verdict, cost over volume and per-class sections of a group. Every number a
 * verdict sentence states is written by the same formatter into the tables beside it, so each
 * sentence can be checked against a table cell. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"
#include "report/report_internal.h"

#define DASH "\xe2\x80\x94"
#define MINUS "\xe2\x88\x92"

/* Percentage points with a sign: "+9.5", "−3.0". */
static int fmt_pts(pwb_buf *b, double v)
{
    if (isnan(v))
        return buf_puts(b, DASH);
    double x = 100.0 * v;
    if (fabs(x) < 0.05)
        return buf_puts(b, "0.0");
    return x < 0 ? buf_puts(b, MINUS) | buf_printf(b, "%.1f", -x) : buf_printf(b, "+%.1f", x);
}

static int fmt_labelled(pwb_buf *b, long n)
{
    return n < 0 ? buf_puts(b, "unknown") : fmt_int(b, n);
}

/* CPU seconds: "0", "12.3", "1,234". */
static int fmt_cpu(pwb_buf *b, double v)
{
    if (isnan(v))
        return buf_puts(b, "unknown");
    if (v == 0)
        return buf_puts(b, "0");
    if (v < 100)
        return buf_printf(b, "%.1f", v);
    return fmt_int(b, (int64_t)llround(v));
}

static int fmt_per_1k(pwb_buf *b, const report_row *w)
{
    return isnan(w->cpu_per_example) ? buf_puts(b, "unknown") : buf_printf(b, "%.1f", 1000.0 * w->cpu_per_example);
}

static int fmt_volume(pwb_buf *b, double v)
{
    if (isnan(v))
        return buf_puts(b, DASH);
    if (v > 9e15)
        return buf_printf(b, "%.3g", v);
    return fmt_int(b, (int64_t)v);
}

static int bold(pwb_buf *b, const char *s)
{
    return buf_puts(b, "**") | esc_md(b, s) | buf_puts(b, "**");
}

static const char *arm_name(int arm)
{
    return arm == REPORT_ARM_TUNED ? "tuned" : arm == REPORT_ARM_ENGINEERED ? "engineered" : "baseline";
}

static int used_text(pwb_buf *b, const report_row *w)
{
    int r = bold(b, w->method) | buf_puts(b, " used ");
    if (w->labelled < 0)
        r |= buf_puts(b, "an unknown number of labelled examples");
    else
        r |= fmt_labelled(b, w->labelled) | buf_puts(b, " labelled example") | buf_puts(b, w->labelled == 1 ? "" : "s");
    if (w->fixed_cpu_s == 0)
        return r | buf_puts(b, " and no training or search");
    return r | buf_puts(b, " and ") | fmt_cpu(b, w->fixed_cpu_s) |
           buf_puts(b, w->arm == REPORT_ARM_TUNED ? " CPU-s of training" : " CPU-s of search");
}

/* Distinct labelled-example counts among the tuned rows (for N*'s wording). */
static int tuned_budgets(const report_group *g)
{
    long seen[64];
    int n = 0;
    for (size_t i = 0; i < g->n_rows && n < 64; i++) {
        const report_row *w = &g->rows[i];
        if (w->arm != REPORT_ARM_TUNED || w->n <= 0 || w->labelled < 0)
            continue;
        int k = 0;
        while (k < n && seen[k] != w->labelled)
            k++;
        if (k == n)
            seen[n++] = w->labelled;
    }
    return n;
}

static int verdict_tables(const report_group *g, pwb_buf *b)
{
    const report_verdict *v = &g->verdict;
    int r = buf_puts(b, "\n| arm | method | kind | accuracy [95% CI] | labelled examples | training / search (CPU-s) | "
                        "CPU-s / 1k inferences |\n|---|---|---|---|--:|--:|--:|\n");
    long idx[2] = {v->engineered, v->tuned};
    for (int k = 0; k < 2 && !r; k++) {
        if (idx[k] < 0)
            continue;
        const report_row *w = &g->rows[idx[k]];
        r |= buf_printf(b, "| %s | ", arm_name(w->arm)) | esc_md(b, w->method) | buf_puts(b, " | ") |
             esc_md(b, w->kind) | buf_puts(b, " | ") | fmt_accuracy(b, w->n, w->accuracy, w->ci_lo, w->ci_hi) |
             buf_puts(b, " | ") | fmt_labelled(b, w->labelled) | buf_puts(b, " | ") | fmt_cpu(b, w->fixed_cpu_s) |
             buf_puts(b, w->fixed_estimated ? " (from wall time)" : "") | buf_puts(b, " | ") | fmt_per_1k(b, w) |
             buf_puts(b, " |\n");
    }
    if (v->engineered < 0 || v->tuned < 0)
        return r;
    const report_row *e = &g->rows[v->engineered], *t = &g->rows[v->tuned];
    r |= buf_puts(b, "\n| tuned " MINUS " engineered | gap (points) | 95% CI | exact McNemar p | shared rows | only tuned "
                     "right | only engineered right | break-even volume V | N\\* (labelled examples) |\n"
                     "|---|--:|---|--:|--:|--:|--:|---|---|\n| ");
    r |= esc_md(b, t->method) | buf_puts(b, " " MINUS " ") | esc_md(b, e->method) | buf_puts(b, " | ") |
         fmt_pts(b, v->gap) | buf_puts(b, " | [") | fmt_pts(b, v->gap_lo) | buf_puts(b, ", ") | fmt_pts(b, v->gap_hi) |
         buf_puts(b, "] | ") | fmt_p(b, v->p) | buf_printf(b, " | %ld | %ld | %ld | ", v->shared, v->only_t, v->only_e);
    if (!v->v_reason)
        r |= fmt_volume(b, v->v_flip);
    else if (isnan(v->v_flip))
        r |= esc_md(b, v->v_reason);
    else
        r |= fmt_volume(b, v->v_flip) | buf_puts(b, " (") | esc_md(b, v->v_reason) | buf_putc(b, ')');
    r |= buf_puts(b, " | ") | (isnan(v->n_star)    ? buf_puts(b, "not measured")
                               : v->n_star_upper ? buf_puts(b, "\xe2\x89\xa4 ") | fmt_volume(b, v->n_star)
                                                 : fmt_volume(b, v->n_star)) |
         buf_puts(b, " |\n");
    return r;
}

static const char *word_of(const report_group *g, int label)
{
    return label >= 0 && label < g->n_labels && g->labels[label] ? g->labels[label] : NULL;
}

static int label_text(pwb_buf *b, const report_group *g, int label)
{
    const char *w = word_of(g, label);
    return w ? esc_md(b, w) : buf_printf(b, "label %d", label);
}

/* The most accurate method against always answering the majority class: a verdict between two
 * arms that are both no better than that says nothing about the task, and the reader must know. */
static int majority_text(const report_group *g, const report_row *w, pwb_buf *b)
{
    if (g->baseline < 0 || !w->is_best)
        return 0;
    const report_row *base = &g->rows[g->baseline];
    int r = buf_puts(b, " ") | bold(b, w->method);
    if (base->mcnemar_p < 0.05 && w->accuracy > base->accuracy)
        r |= buf_puts(b, " beats always answering ");
    else if (w->accuracy > base->accuracy)
        r |= buf_puts(b, " is not significantly better than always answering ");
    else
        r |= buf_puts(b, " does not beat always answering ");
    r |= label_text(b, g, base->majority_label) | buf_puts(b, " (the majority class, ") |
         fmt_accuracy(b, base->n, base->accuracy, base->ci_lo, base->ci_hi) | buf_puts(b, "; exact McNemar p = ") |
         fmt_p(b, base->mcnemar_p) | buf_puts(b, ")");
    /* the most accurate method no better than the label frequencies: neither is any other */
    return r | buf_puts(b, w->accuracy > base->accuracy
                               ? "."
                               : ": no method here has learned more of the task than its label frequencies.");
}

int md_verdict(const report_group *g, pwb_buf *b)
{
    const report_verdict *v = &g->verdict;
    if (v->engineered < 0 && v->tuned < 0)
        return 0;
    int r = buf_puts(b, "\n### Verdict\n\n");
    if (v->engineered < 0 || v->tuned < 0) {
        const report_row *w = &g->rows[v->engineered >= 0 ? v->engineered : v->tuned];
        r |= buf_printf(b, "Only %s methods ran here, so there is no %s method to weigh them against. The most "
                           "accurate is ",
                        arm_name(w->arm), w->arm == REPORT_ARM_TUNED ? "engineered" : "tuned") |
             bold(b, w->method) | buf_puts(b, " at ") | fmt_accuracy(b, w->n, w->accuracy, w->ci_lo, w->ci_hi) |
             buf_puts(b, "; ") | used_text(b, w) | buf_puts(b, ".");
        return r | majority_text(g, w, b) | buf_putc(b, '\n') | verdict_tables(g, b);
    }
    const report_row *e = &g->rows[v->engineered], *t = &g->rows[v->tuned];
    if (v->shared <= 0) {
        r |= buf_puts(b, "The best tuned method, ") | bold(b, t->method) | buf_puts(b, ", and the best engineered "
                                                                                   "prompt, ") |
             bold(b, e->method) | buf_puts(b, ", share no evaluated examples, so they are not compared.\n");
        return r | verdict_tables(g, b);
    }
    if (v->significant && v->gap > 0)
        r |= buf_puts(b, "The best tuned method, ") | bold(b, t->method) |
             buf_puts(b, ", is more accurate than the best engineered prompt, ") | bold(b, e->method) |
             buf_puts(b, ": tuned " MINUS " engineered = **") | fmt_pts(b, v->gap) | buf_puts(b, " points**");
    else if (v->significant)
        r |= buf_puts(b, "The best engineered prompt, ") | bold(b, e->method) |
             buf_puts(b, ", is more accurate than the best tuned method, ") | bold(b, t->method) |
             buf_puts(b, ": tuned " MINUS " engineered = **") | fmt_pts(b, v->gap) | buf_puts(b, " points**");
    else
        r |= buf_puts(b, "**No significant difference** between the best tuned method, ") | bold(b, t->method) |
             buf_puts(b, ", and the best engineered prompt, ") | bold(b, e->method) |
             buf_puts(b, ": tuned " MINUS " engineered = ") | fmt_pts(b, v->gap) | buf_puts(b, " points");
    r |= buf_puts(b, " [95% CI ") | fmt_pts(b, v->gap_lo) | buf_puts(b, ", ") | fmt_pts(b, v->gap_hi) |
         buf_printf(b, "] on the %ld examples both evaluated (exact McNemar p = ", v->shared) | fmt_p(b, v->p) |
         buf_puts(b, "). ");
    r |= used_text(b, t) | buf_puts(b, "; ") | used_text(b, e) | buf_puts(b, ". ");
    /* When does the answer flip on volume? */
    if (!v->v_reason) {
        r |= buf_puts(b, "Counting that one-time cost, ") | bold(b, t->method) |
             buf_puts(b, " is the cheaper of the two in total only beyond V = ") | fmt_volume(b, v->v_flip) |
             buf_puts(b, " inferences (CPU-s per 1,000: ") | fmt_per_1k(b, t) | buf_puts(b, " against ") |
             fmt_per_1k(b, e) | buf_puts(b, "); for fewer, ") | bold(b, e->method) | buf_puts(b, " costs less. ");
    } else if (!strncmp(v->v_reason, "never", 5)) {
        r |= bold(b, t->method) | buf_puts(b, " never costs less in total than ") | bold(b, e->method) |
             buf_puts(b, " (") | esc_md(b, v->v_reason) | buf_puts(b, "): CPU-s per 1,000 inferences ") |
             fmt_per_1k(b, t) | buf_puts(b, " against ") | fmt_per_1k(b, e) | buf_puts(b, ". ");
        if (v->significant && v->gap > 0)
            r |= buf_puts(b, "Its ") | fmt_pts(b, v->gap) | buf_puts(b, " points are bought with that cost. ");
        else
            r |= buf_puts(b, "Without a significant accuracy gain, ") | bold(b, e->method) |
                 buf_puts(b, " is the better buy at any volume. ");
    } else if (!isnan(v->v_flip)) {
        r |= bold(b, t->method) | buf_puts(b, " costs less in total only below V = ") | fmt_volume(b, v->v_flip) |
             buf_puts(b, " inferences (") | esc_md(b, v->v_reason) | buf_puts(b, "). ");
    } else {
        r |= buf_puts(b, "Break-even volume: ") | esc_md(b, v->v_reason) | buf_puts(b, ". ");
    }
    /* ... and on labelled examples? */
    if (!isnan(v->n_star) && v->n_star_upper)
        r |= buf_puts(b, "On point estimates the tuned arm already leads the best engineered prompt of the same "
                         "budget at its smallest budget measured, ") |
             fmt_volume(b, v->n_star) |
             buf_puts(b, " labelled examples, so N\\* \xe2\x89\xa4 ") | fmt_volume(b, v->n_star) |
             buf_puts(b, "; smaller budgets are not measured (data-efficiency chart).");
    else if (!isnan(v->n_star))
        r |= buf_puts(b, "On point estimates the tuned arm overtakes the best engineered prompt of the same budget at "
                         "about N\\* = ") |
             fmt_volume(b, v->n_star) |
             buf_puts(b, " labelled examples; with fewer, the engineered prompt is at least as accurate "
                         "(data-efficiency chart).");
    /* One sentence on N*: a crossing (qualified when the gap is not significant), none within the sweep,
     * or no sweep at all. */
    if (!isnan(v->n_star)) {
        if (!v->significant)
            r |= buf_puts(b, " The gap at the best tuned method is not significant, so neither is this crossing.");
    } else if (tuned_budgets(g) >= 2) {
        r |= buf_puts(b, "Within the labelled-example budgets measured, the tuned method does not overtake the "
                         "best engineered prompt of the same budget, so N\\* is not reached.");
    } else {
        r |= buf_puts(b, "The labelled-example count below which the answer flips (N\\*) is not measured: this run "
                         "has no budget sweep of the tuned method.");
    }
    r |= majority_text(g, e->accuracy > t->accuracy ? e : t, b);
    return r | buf_putc(b, '\n') | verdict_tables(g, b);
}

int md_volume(const report_group *g, pwb_buf *b)
{
    int any = 0;
    for (size_t i = 0; i < g->n_rows; i++)
        any |= !g->rows[i].is_baseline && !isnan(g->rows[i].cpu_per_example);
    if (!any)
        return 0;
    int r = buf_puts(b, "\n### Cost over volume\n\nTotal CPU cost of serving V inferences = one-time cost (training "
                        "or search) + CPU-s per example \xc3\x97 V. *Compared with*: the cheapest engineered prompt "
                        "(per example) that is at least as accurate; *break-even*: the volume beyond which the "
                        "method's total cost falls below that prompt's. *Shared prefix*: the local engine keeps "
                        "the key/value cache of the prompt prefix a batch of requests has in common (the "
                        "instruction and a few-shot prompt's shots; a soft prompt's virtual tokens) and computes "
                        "it once per batch of up to 256 requests; its CPU time is divided over that batch, so "
                        "the per-example figures below include a share of it.\n\n"
                        "| method | arm | accuracy | one-time CPU-s | CPU-s / 1k | total at 1k | total at 100k | "
                        "compared with | accuracy bought (points) | break-even volume |\n"
                        "|---|---|--:|--:|--:|--:|--:|---|--:|---|\n");
    for (size_t i = 0; i < g->n_rows && !r; i++) {
        const report_row *w = &g->rows[i];
        if (w->is_baseline || w->n <= 0)
            continue;
        r |= buf_puts(b, "| ") | esc_md(b, w->method) | buf_printf(b, " | %s | %.1f%% | ", arm_name(w->arm),
                                                                     100.0 * w->accuracy);
        r |= fmt_cpu(b, w->fixed_cpu_s) | buf_puts(b, " | ") | fmt_per_1k(b, w) | buf_puts(b, " | ");
        double t1 = w->fixed_cpu_s + 1e3 * w->cpu_per_example, t2 = w->fixed_cpu_s + 1e5 * w->cpu_per_example;
        r |= fmt_cpu(b, t1) | buf_puts(b, " | ") | fmt_cpu(b, t2) | buf_puts(b, " | ");
        if (w->arm == REPORT_ARM_ENGINEERED && w->fixed_cpu_s == 0) {
            r |= buf_puts(b, DASH " | " DASH " | " DASH " (nothing to repay) |\n");
            continue;
        }
        long ref = report_volume_ref(g, i);
        if (ref < 0) {
            long be = g->verdict.engineered;
            r |= buf_puts(b, "no engineered prompt is as accurate | ");
            r |= be >= 0 ? fmt_pts(b, w->accuracy - g->rows[be].accuracy) | buf_puts(b, " vs ") |
                               esc_md(b, g->rows[be].method)
                         : buf_puts(b, DASH);
            r |= buf_puts(b, " | not applicable: nothing engineered to break even with |\n");
            continue;
        }
        const report_row *x = &g->rows[ref];
        double v;
        const char *why = report_volume_flip(w, x, &v);
        r |= esc_md(b, x->method) | buf_puts(b, " | ") | fmt_pts(b, w->accuracy - x->accuracy) | buf_puts(b, " | ");
        if (!why)
            r |= fmt_volume(b, v);
        else if (!isnan(v))
            r |= fmt_volume(b, v) | buf_puts(b, " (") | esc_md(b, why) | buf_putc(b, ')');
        else
            r |= esc_md(b, why);
        r |= buf_puts(b, " |\n");
    }
    return r;
}

int md_classes(const report_group *g, pwb_buf *b)
{
    int L = g->n_labels;
    if (L <= 0 || L > 64)
        return 0;
    int any = 0;
    for (size_t i = 0; i < g->n_rows; i++)
        any |= g->rows[i].confusion != NULL && !g->rows[i].is_baseline;
    if (!any)
        return 0;
    int r = buf_puts(b, "\n### Per-class recall and confusion\n\nOne row per method and gold label: how its answers "
                        "to that label's examples spread over the labels (then invalid answers and answers naming "
                        "no label). *Recall*: the share answered with the gold label. A method that gives one "
                        "label to at least 95% of the examples is marked *collapsed*.\n\n| method | gold |");
    for (int k = 0; k < L; k++)
        r |= buf_puts(b, " \xe2\x86\x92 ") | label_text(b, g, k) | buf_puts(b, " |");
    r |= buf_puts(b, " \xe2\x86\x92 invalid | \xe2\x86\x92 other | recall |\n|---|---|");
    for (int k = 0; k < L + 3; k++)
        r |= buf_puts(b, "--:|");
    r |= buf_putc(b, '\n');
    for (size_t i = 0; i < g->n_rows && !r; i++) {
        const report_row *w = &g->rows[i];
        if (!w->confusion || w->is_baseline)
            continue;
        long total = 0, top = 0;
        int top_label = -1;
        for (int p = 0; p < L; p++) {
            long col = 0;
            for (int gl = 0; gl < L; gl++)
                col += w->confusion[(size_t)gl * (size_t)(L + 2) + (size_t)p];
            if (col > top) {
                top = col;
                top_label = p;
            }
        }
        for (size_t k = 0; k < (size_t)L * (size_t)(L + 2); k++)
            total += w->confusion[k];
        int collapsed = total > 0 && top * 100 >= total * 95;
        for (int gl = 0; gl < L && !r; gl++) {
            const long *row = &w->confusion[(size_t)gl * (size_t)(L + 2)];
            long n = 0;
            for (int k = 0; k < L + 2; k++)
                n += row[k];
            if (!n)
                continue;
            r |= buf_puts(b, "| ") | esc_md(b, w->method);
            if (collapsed && gl == 0)
                r |= buf_puts(b, " (*collapsed* to ") | label_text(b, g, top_label) | buf_putc(b, ')');
            r |= buf_puts(b, " | ") | label_text(b, g, gl) | buf_puts(b, " |");
            for (int k = 0; k < L + 2; k++)
                r |= buf_printf(b, " %ld |", row[k]);
            r |= buf_printf(b, " %.1f%% |\n", 100.0 * (double)row[gl] / (double)n);
        }
    }
    return r;
}
