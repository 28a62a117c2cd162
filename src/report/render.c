/* Renderers for a loaded report: markdown tables, CSV rows and a JSON document. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"
#include "report/report_internal.h"
#include "report/svg.h"
#include "util/str.h"
#include "util/utf8.h"

#define DASH "\xe2\x80\x94" /* em dash: "no value" */

cJSON *report_json_string(const char *value)
{
    if (!value)
        return cJSON_CreateNull();
    size_t n = strlen(value), i = 0;
    while (i < n) {
        size_t len = report_utf8_seq((const unsigned char *)value + i, n - i);
        if (!len)
            break;
        i += len;
    }
    if (i == n)
        return cJSON_CreateString(value);
    char *c = malloc(n + 1);
    if (!c)
        return NULL;
    size_t k = 0;
    for (i = 0; i < n;) {
        size_t len = report_utf8_seq((const unsigned char *)value + i, n - i);
        if (!len) {
            c[k++] = '?';
            i++;
        } else {
            memcpy(c + k, value + i, len);
            k += len;
            i += len;
        }
    }
    c[k] = 0;
    cJSON *j = cJSON_CreateString(c);
    free(c);
    return j;
}

void report_json_str(cJSON *o, const char *key, const char *value)
{
    cJSON *j = report_json_string(value);
    if (j && !cJSON_AddItemToObject(o, key, j))
        cJSON_Delete(j);
}

int csv_num(pwb_buf *b, double v)
{
    return isnan(v) ? 0 : buf_printf(b, "%.10g", v);
}

int fmt_accuracy(pwb_buf *b, long n, double acc, double lo, double hi)
{
    if (n <= 0 || isnan(acc))
        return buf_puts(b, DASH);
    return buf_printf(b, "%.1f%% [%.1f, %.1f]", 100.0 * acc, 100.0 * lo, 100.0 * hi);
}

int fmt_p(pwb_buf *b, double p)
{
    if (isnan(p))
        return buf_puts(b, DASH);
    if (p < 0.001)
        return buf_puts(b, "<0.001");
    return buf_printf(b, "%.3f", p);
}

static int fmt_num1(pwb_buf *b, double v)
{
    return isnan(v) ? buf_puts(b, DASH) : buf_printf(b, "%.1f", v);
}

static int fmt_seconds(pwb_buf *b, double s)
{
    if (isnan(s))
        return buf_puts(b, DASH);
    if (s < 1.0)
        return buf_printf(b, "%.1f ms", s * 1000.0);
    if (s < 600.0)
        return buf_printf(b, "%.2f s", s);
    return buf_printf(b, "%.1f min", s / 60.0);
}

int fmt_cost(pwb_buf *b, int unit, double v)
{
    if (isnan(v) || unit == REPORT_COST_NONE)
        return buf_puts(b, DASH);
    if (unit == REPORT_COST_USD)
        return buf_printf(b, "$%.4f", v);
    return buf_printf(b, "%.1f", v);
}

static const char *cost_header(int unit)
{
    return unit == REPORT_COST_USD ? "USD / 1k" : unit == REPORT_COST_CPU_S ? "CPU-s / 1k" : "cost / 1k";
}

/* An integer with thousands separators: 18,560. */
int fmt_int(pwb_buf *b, int64_t v)
{
    char d[32];
    int n = snprintf(d, sizeof d, "%lld", (long long)(v < 0 ? -v : v)), r = v < 0 ? buf_putc(b, '-') : 0;
    for (int i = 0; i < n && !r; i++) {
        r |= buf_putc(b, d[i]);
        if ((n - 1 - i) % 3 == 0 && i < n - 1)
            r |= buf_putc(b, ',');
    }
    return r;
}

static int fmt_count(pwb_buf *b, int64_t v)
{
    return v < 0 ? buf_puts(b, DASH) : fmt_int(b, v);
}

static int fmt_g3(pwb_buf *b, double v)
{
    return isnan(v) ? buf_puts(b, DASH) : buf_printf(b, "%.3g", v);
}

static int fmt_break_even(pwb_buf *b, double v)
{
    if (isnan(v))
        return buf_puts(b, DASH);
    if (isinf(v))
        return buf_puts(b, "never (not cheaper per example; see cost over volume)");
    if (v > 9e15)
        return buf_printf(b, "%.3g", v);
    return fmt_int(b, (int64_t)v);
}

/* Alt text of an image: brackets would end it early; the rest as in a table cell. */
static int md_alt(pwb_buf *b, const char *s)
{
    pwb_buf t;
    buf_init(&t);
    int r = esc_md(&t, s);
    for (size_t i = 0; i < t.len && !r; i++)
        r = (t.data[i] == '[' || t.data[i] == ']') ? buf_putc(b, '\\') | buf_putc(b, t.data[i])
                                                   : buf_putc(b, t.data[i]);
    buf_free(&t);
    return r ? -1 : 0;
}

/* The images of one group and kind (and sweep), when charts are on. */
static int md_charts(const pwb_report *rep, const report_chart *charts, size_t nch, size_t g, int kind, size_t sweep,
                     pwb_buf *b)
{
    int r = 0;
    for (size_t i = 0; i < nch && !r; i++) {
        const report_chart *c = &charts[i];
        if (c->group != g || c->kind != kind || (kind == REPORT_CHART_SWEEP && c->sweep != sweep))
            continue;
        r |= buf_puts(b, "\n![") | md_alt(b, c->alt) | buf_puts(b, "](");
        if (rep->chart_dir && *rep->chart_dir)
            r |= buf_puts(b, rep->chart_dir) | buf_putc(b, '/');
        r |= buf_puts(b, c->file) | buf_puts(b, ")\n");
    }
    return r;
}

static int any_soft(const report_group *g)
{
    for (size_t i = 0; i < g->n_rows; i++)
        if (g->rows[i].has_soft_prompt)
            return 1;
    return 0;
}

/* What each method cost to make, soft prompts beside the hard prompts' zero, and when a soft
 * prompt's training is repaid by its shorter input. */
static int md_training_cost(const report_group *g, pwb_buf *b)
{
    int r = buf_puts(b, "\n### Training cost and break-even\n\nSoft prompts are trained once on the frozen model; "
                        "hard prompts cost nothing to make (0). *Break-even*: the number of inferences after "
                        "which a tuned method's training CPU time is repaid by its cheaper input, compared with ");
    if (g->few_shot_ref >= 0)
        r |= buf_puts(b, "the most accurate few-shot method, **") | esc_md(b, g->rows[g->few_shot_ref].method) |
             buf_puts(b, "**: training CPU-s / (few-shot CPU-s per example \xe2\x88\x92 tuned CPU-s per "
                         "example); *never* when the tuned method is not cheaper per example.\n\n");
    else
        r |= buf_puts(b, "a few-shot method; this group has none with CPU timings, so it is not computed.\n\n");
    r |= buf_puts(b, "| method | kind | virtual tokens | init | trainable params | artifact bytes | steps | "
                     "examples seen | training time | best held-out acc | CPU-s / example | break-even (inferences) |\n"
                     "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (size_t i = 0; i < g->n_rows && !r; i++) {
        const report_row *w = &g->rows[i];
        if (w->is_baseline)
            continue;
        r |= buf_puts(b, "| ") | esc_md(b, w->method) | buf_puts(b, " | ") | esc_md(b, w->kind);
        if (!w->has_soft_prompt) {
            r |= buf_puts(b, " | " DASH " | " DASH " | 0 | 0 | 0 | 0 | 0 s | " DASH " | ") |
                 fmt_g3(b, w->cpu_per_example) | buf_puts(b, " | " DASH " |\n");
            continue;
        }
        const db_soft_prompt_info *sp = &w->soft_prompt;
        r |= buf_puts(b, " | ") | (sp->n_tokens > 0 ? buf_printf(b, "%d", sp->n_tokens) : buf_puts(b, DASH)) |
             buf_puts(b, " | ") | esc_md(b, sp->init ? sp->init : DASH);
        int64_t v[4] = {sp->trainable_params, sp->artifact_bytes, sp->steps, sp->examples_seen};
        for (int k = 0; k < 4; k++)
            r |= buf_puts(b, " | ") | fmt_count(b, v[k]);
        r |= buf_puts(b, " | ") | fmt_seconds(b, sp->train_seconds) | buf_puts(b, " | ");
        r |= isnan(sp->best_eval_acc) ? buf_puts(b, DASH) : buf_printf(b, "%.1f%%", 100.0 * sp->best_eval_acc);
        r |= buf_puts(b, " | ") | fmt_g3(b, w->cpu_per_example) | buf_puts(b, " | ") |
             fmt_break_even(b, w->break_even) | buf_puts(b, " |\n");
    }
    return r ? -1 : 0;
}

static int any_search(const report_group *g)
{
    for (size_t i = 0; i < g->n_rows; i++)
        if (g->rows[i].search.found)
            return 1;
    return 0;
}

static int any_budget(const report_group *g)
{
    for (size_t i = 0; i < g->n_rows; i++)
        if (g->rows[i].has_budget)
            return 1;
    return 0;
}

/* Calibration and budget: what each method may read of the labelled training data, and the label
 * probabilities its calibration divided out (content-free inputs or the domain premise). */
static int md_budget(const report_group *g, pwb_buf *b)
{
    int r = buf_puts(b, "\n### Labelled data and calibration\n\n*Labelled examples*: training examples the method "
                        "may read for shots, prompt search or training (*all*: the whole split). *Prior*: the "
                        "label probabilities of the content-free inputs (contextual) or of the domain premise "
                        "(pmi), which calibration divides out of every prediction.");
    const int search = any_search(g);
    if (search)
        r |= buf_puts(b, " *Search*: a prompt search's candidates, label rankings spent of those allowed, distinct "
                         "labelled rows it read, its CPU time (the search's cost, as training is a soft prompt's) "
                         "and the winner's held-out accuracy.");
    r |= buf_puts(b, "\n\n| method | kind | labelled examples | calibration | prior |") |
         (search ? buf_puts(b, " search |") : 0) | buf_puts(b, "\n|---|---|--:|---|---|") |
         (search ? buf_puts(b, "---|") : 0) | buf_putc(b, '\n');
    for (size_t i = 0; i < g->n_rows && !r; i++) {
        const report_row *w = &g->rows[i];
        if (w->is_baseline)
            continue;
        r |= buf_puts(b, "| ") | esc_md(b, w->method) | buf_puts(b, " | ") | esc_md(b, w->kind) | buf_puts(b, " | ");
        r |= !w->has_budget ? buf_puts(b, DASH) : w->train_limit < 0 ? buf_puts(b, "all") : fmt_int(b, w->train_limit);
        r |= buf_puts(b, " | ") | esc_md(b, w->calibration ? w->calibration : DASH) | buf_puts(b, " | ");
        for (int k = 0; k < w->n_calib_p; k++) {
            const char *name = k < g->n_labels && g->labels[k] ? g->labels[k] : NULL;
            r |= (k ? buf_puts(b, ", ") : 0) | (name ? esc_md(b, name) : buf_printf(b, "%d", k)) |
                 buf_printf(b, " %.3f", w->calib_p[k]);
        }
        r |= buf_puts(b, w->n_calib_p ? " |" : DASH " |");
        if (search && w->search.found) {
            const db_prompt_search_info *s = &w->search;
            r |= buf_putc(b, ' ') | fmt_int(b, s->n_candidates) | buf_puts(b, " candidates, ") | fmt_int(b, s->evals);
            if (s->max_evals > 0)
                r |= buf_puts(b, " of ") | fmt_int(b, s->max_evals);
            r |= buf_puts(b, " rankings, ") | fmt_int(b, s->examples_read) | buf_puts(b, " rows read, ") |
                 fmt_seconds(b, s->cpu_s) | buf_puts(b, " CPU; held-out ");
            r |= isnan(s->best_heldout_acc) ? buf_puts(b, DASH)
                                            : buf_printf(b, "%.1f%% of %ld", 100.0 * s->best_heldout_acc, s->heldout);
            r |= buf_puts(b, " |");
        } else if (search) {
            r |= buf_puts(b, " " DASH " |");
        }
        r |= buf_putc(b, '\n');
    }
    return r ? -1 : 0;
}

static int md_sweep(const report_group *g, const report_sweep *sw, pwb_buf *b)
{
    int soft = 0;
    for (size_t k = 0; k < sw->n_rows; k++)
        soft |= g->rows[sw->rows[k]].has_soft_prompt;
    int r = buf_puts(b, "\n### Sweep: ") | esc_md(b, sw->name) | buf_puts(b, " (");
    for (int a = 0; a < sw->n_axes; a++)
        r |= (a ? buf_puts(b, " \xc3\x97 ") : 0) | esc_md(b, sw->axes[a]);
    r |= buf_puts(b, ")\n\n*p vs sweep best*: exact McNemar test against the sweep's most accurate point (bold).\n\n|");
    if (!sw->n_axes) /* points stored without their values: name them */
        r |= buf_puts(b, " method |");
    for (int a = 0; a < sw->n_axes; a++)
        r |= buf_putc(b, ' ') | esc_md(b, sw->axes[a]) | buf_puts(b, " |");
    r |= buf_printf(b, " n | accuracy [95%% CI] | p vs sweep best | tokens in | %s |%s\n|", cost_header(g->cost_unit),
                    soft ? " training time |" : "");
    r |= !sw->n_axes ? buf_puts(b, "---|") : 0;
    for (int a = 0; a < sw->n_axes; a++)
        r |= buf_puts(b, "--:|");
    r |= buf_puts(b, "--:|---|--:|--:|--:|") | (soft ? buf_puts(b, "--:|") : 0) | buf_putc(b, '\n');
    for (size_t k = 0; k < sw->n_rows && !r; k++) {
        const report_row *w = &g->rows[sw->rows[k]];
        r |= buf_putc(b, '|');
        if (!sw->n_axes)
            r |= buf_putc(b, ' ') | esc_md(b, w->method) | buf_puts(b, " |");
        for (int a = 0; a < sw->n_axes; a++) {
            const char *v = a < w->n_sweep_values && w->sweep_values[a] ? w->sweep_values[a] : DASH;
            r |= buf_putc(b, ' ') | (w->is_sweep_best ? buf_puts(b, "**") | esc_md(b, v) | buf_puts(b, "**")
                                                      : esc_md(b, v)) |
                 buf_puts(b, " |");
        }
        if (w->n_planned > w->n)
            r |= buf_printf(b, " %ld/%ld | ", w->n, w->n_planned);
        else
            r |= buf_printf(b, " %ld | ", w->n);
        r |= fmt_accuracy(b, w->n, w->accuracy, w->ci_lo, w->ci_hi) | buf_puts(b, " | ");
        r |= w->is_sweep_best ? buf_puts(b, "best") : fmt_p(b, w->sweep_p);
        r |= buf_puts(b, " | ") | fmt_num1(b, w->tokens_in_mean) | buf_puts(b, " | ") |
             fmt_cost(b, g->cost_unit, w->cost_per_1k) | buf_puts(b, " |");
        if (soft)
            r |= buf_putc(b, ' ') |
                 (w->has_soft_prompt ? fmt_seconds(b, w->soft_prompt.train_seconds) : buf_puts(b, DASH)) |
                 buf_puts(b, " |");
        r |= buf_putc(b, '\n');
    }
    if (g->baseline >= 0 && g->rows[g->baseline].n > 0)
        r |= buf_printf(b, "\nMajority-class baseline: %.1f%%.\n", 100.0 * g->rows[g->baseline].accuracy);
    return r ? -1 : 0;
}

/* lm-evaluation-harness reports acc and acc_norm for multiple choice: the second picks the choice
 * with the most log-likelihood per byte of its text. One line for the rank cells that have it. */
static int md_acc_norm(const report_group *g, pwb_buf *b)
{
    int r = 0, any = 0;
    for (size_t i = 0; i < g->n_rows && !r; i++) {
        const report_row *w = &g->rows[i];
        if (w->is_baseline || w->n_norm <= 0)
            continue;
        r |= buf_puts(b, any ? "; " : "\nLength-normalised accuracy (acc_norm) of the ranked methods: ") |
             esc_md(b, w->method) |
             buf_printf(b, " %.1f%%", 100.0 * (double)w->correct_norm / (double)w->n_norm);
        any = 1;
    }
    if (any)
        r |= buf_puts(b, ".\n");
    return r ? -1 : 0;
}

static int md_group(const pwb_report *rep, const report_group *g, size_t gi, const report_chart *charts, size_t nch,
                    pwb_buf *b)
{
    int r = buf_puts(b, "\n## ") | esc_md(b, g->dataset);
    if (g->split && *g->split)
        r |= buf_puts(b, " (") | esc_md(b, g->split) | buf_putc(b, ')');
    r |= buf_puts(b, " \xc2\xb7 ") | esc_md(b, g->model);
    if (g->provider && *g->provider)
        r |= buf_puts(b, " (") | esc_md(b, g->provider) | buf_putc(b, ')');
    r |= buf_putc(b, '\n') | md_verdict(g, b) | buf_puts(b, "\n### Methods");
    r |= buf_printf(b, "\n\n| method | kind | n | accuracy [95%% CI] | p vs best | invalid | tokens in | "
                       "tokens out | latency p50 / p95 | %s |\n"
                       "|---|---|--:|---|--:|--:|--:|--:|--:|--:|\n",
                    cost_header(g->cost_unit));
    for (size_t i = 0; i < g->n_rows && !r; i++) {
        const report_row *w = &g->rows[i];
        r |= buf_puts(b, "| ");
        if (w->is_best)
            r |= buf_puts(b, "**") | esc_md(b, w->method) | buf_puts(b, "**");
        else if (w->is_baseline && w->majority_label < g->n_labels && g->labels[w->majority_label])
            r |= buf_printf(b, "majority class (label %d: ", w->majority_label) |
                 esc_md(b, g->labels[w->majority_label]) | buf_putc(b, ')');
        else if (w->is_baseline)
            r |= buf_printf(b, "majority class (label %d)", w->majority_label);
        else
            r |= esc_md(b, w->method);
        r |= buf_puts(b, " | ") | esc_md(b, w->kind);
        if (!w->is_baseline && w->n_planned > w->n)
            r |= buf_printf(b, " | %ld/%ld | ", w->n, w->n_planned);
        else
            r |= buf_printf(b, " | %ld | ", w->n);
        r |= fmt_accuracy(b, w->n, w->accuracy, w->ci_lo, w->ci_hi) | buf_puts(b, " | ");
        r |= w->is_best ? buf_puts(b, "best") : fmt_p(b, w->mcnemar_p);
        if (w->is_baseline) {
            r |= buf_puts(b, " | " DASH " | " DASH " | " DASH " | " DASH " | " DASH " |\n");
            continue;
        }
        r |= w->n ? buf_printf(b, " | %.1f%%", 100.0 * (double)w->invalid / (double)w->n) : buf_puts(b, " | " DASH);
        r |= buf_puts(b, " | ") | fmt_num1(b, w->tokens_in_mean) | buf_puts(b, " | ") | fmt_num1(b, w->tokens_out_mean);
        r |= buf_puts(b, " | ") | fmt_seconds(b, w->latency_p50) | buf_puts(b, " / ") | fmt_seconds(b, w->latency_p95);
        r |= buf_puts(b, " | ") | fmt_cost(b, g->cost_unit, w->cost_per_1k) | buf_puts(b, " |\n");
    }
    r |= md_acc_norm(g, b);
    r |= md_charts(rep, charts, nch, gi, REPORT_CHART_ACCURACY, 0, b);
    r |= md_charts(rep, charts, nch, gi, REPORT_CHART_COST, 0, b);
    r |= md_volume(g, b) | md_charts(rep, charts, nch, gi, REPORT_CHART_VOLUME, 0, b);
    r |= md_charts(rep, charts, nch, gi, REPORT_CHART_BUDGET, 0, b);
    r |= md_classes(g, b);
    if (any_soft(g))
        r |= md_training_cost(g, b);
    if (any_budget(g))
        r |= md_budget(g, b);
    r |= md_charts(rep, charts, nch, gi, REPORT_CHART_TRAINING, 0, b);
    for (size_t k = 0; k < g->n_sweeps && !r; k++)
        r |= md_sweep(g, &g->sweeps[k], b) | md_charts(rep, charts, nch, gi, REPORT_CHART_SWEEP, k, b);
    if (rep->chart_dir && report_models_first(rep, gi))
        r |= buf_puts(b, "\n### Across models\n") | md_charts(rep, charts, nch, gi, REPORT_CHART_MODELS, 0, b);
    return r ? -1 : 0;
}

int report_render_md(const pwb_report *rep, pwb_buf *b, pwb_err *e)
{
    const db_run_info *run = &rep->run;
    int r = buf_printf(b, "# pwb report: run %lld (", (long long)run->id) | esc_md(b, run->suite_name) |
            buf_puts(b, ")\n\n- Suite: `") | esc_md(b, run->suite_name) | buf_puts(b, "`");
    if (run->suite_path)
        r |= buf_puts(b, " from `") | esc_md(b, run->suite_path) | buf_puts(b, "`");
    if (run->suite_sha256)
        r |= buf_printf(b, ", sha256 `%.12s`", run->suite_sha256);
    r |= buf_printf(b, "\n- Seed %llu, status `", (unsigned long long)run->seed) |
         esc_md(b, run->status ? run->status : "?") | buf_puts(b, "`, started ") |
         esc_md(b, run->started ? run->started : "?");
    if (run->finished)
        r |= buf_puts(b, ", finished ") | esc_md(b, run->finished);
    if (run->pwb_version)
        r |= buf_puts(b, ", pwb ") | esc_md(b, run->pwb_version);
    r |= buf_puts(b, "\n\nAccuracy with its 95% Wilson interval. *p vs best*: exact McNemar test against the "
                     "best method (bold) on the rows both evaluated. The majority-class baseline always "
                     "answers the most frequent gold label of the evaluated rows. n shows done/planned "
                     "when a cell is incomplete. Latency is per example; cost is per 1,000 examples "
                     "(USD for priced remote models, CPU seconds for local ones).\n");
    if (rep->n_groups == 0)
        r |= buf_puts(b, "\nThis run has no cells yet.\n");
    report_chart *charts = NULL;
    size_t nch = 0;
    if (!r && rep->chart_dir) {
        int rc = report_charts_list(rep, &charts, &nch, e);
        if (rc)
            return rc;
    }
    for (size_t g = 0; g < rep->n_groups && !r; g++)
        r |= md_group(rep, &rep->groups[g], g, charts, nch, b);
    report_charts_free(charts, nch);
    if (r)
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    return PWB_OK;
}

static int csv_count(pwb_buf *b, int64_t v)
{
    return v < 0 ? 0 : buf_printf(b, "%lld", (long long)v);
}

/* trainable_params ... break_even_vs, each followed by a comma: hard prompts' zeros, the soft
 * prompt's numbers, nothing for the baseline. */
static int csv_training(pwb_buf *b, const report_group *g, const report_row *w)
{
    if (w->is_baseline)
        return buf_puts(b, ",,,,,,,,,,,");
    if (!w->has_soft_prompt)
        return buf_puts(b, "0,0,0,0,0,,,,,,,");
    const db_soft_prompt_info *sp = &w->soft_prompt;
    int r = csv_count(b, sp->trainable_params) | buf_putc(b, ',') | csv_count(b, sp->artifact_bytes) |
            buf_putc(b, ',') | csv_num(b, sp->train_seconds) | buf_putc(b, ',') | csv_count(b, sp->examples_seen) |
            buf_putc(b, ',') | csv_count(b, sp->steps) | buf_putc(b, ',');
    r |= (sp->n_tokens > 0 ? buf_printf(b, "%d", sp->n_tokens) : 0) | buf_putc(b, ',') | esc_csv(b, sp->init) |
         buf_putc(b, ',') | csv_num(b, sp->best_eval_acc) | buf_putc(b, ',');
    r |= csv_num(b, isinf(w->break_even) ? NAN : w->break_even) | buf_putc(b, ',') |
         buf_puts(b, isinf(w->break_even) ? "1," : isnan(w->break_even) ? "," : "0,");
    r |= esc_csv(b, w->break_even_ref >= 0 ? g->rows[w->break_even_ref].method : NULL) | buf_putc(b, ',');
    return r;
}

int report_render_csv(const pwb_report *rep, pwb_buf *b, pwb_err *e)
{
    int r = buf_puts(b, "run_id,dataset,split,model,provider,method,kind,is_best,is_baseline,n,n_planned,"
                        "correct,accuracy,ci_low,ci_high,mcnemar_p,mcnemar_shared,mcnemar_b,mcnemar_c,"
                        "invalid,invalid_rate,errors,mean_tokens_in,mean_tokens_out,latency_p50_s,"
                        "latency_p95_s,cost_usd,cost_usd_per_1k,cpu_s,cpu_s_per_1k,cpu_s_per_example,"
                        "trainable_params,artifact_bytes,train_seconds,examples_seen,train_steps,"
                        "virtual_tokens,init,best_eval_acc,break_even_inferences,break_even_never,"
                        "break_even_vs,sweep,sweep_point,sweep_mcnemar_p\r\n");
    for (size_t g = 0; g < rep->n_groups && !r; g++) {
        const report_group *grp = &rep->groups[g];
        for (size_t i = 0; i < grp->n_rows && !r; i++) {
            const report_row *w = &grp->rows[i];
            r |= buf_printf(b, "%lld,", (long long)rep->run.id);
            const char *txt[] = {grp->dataset, grp->split, grp->model, grp->provider, w->method, w->kind};
            for (int k = 0; k < 6; k++)
                r |= esc_csv(b, txt[k]) | buf_putc(b, ',');
            r |= buf_printf(b, "%d,%d,%ld,%ld,%ld,", w->is_best, w->is_baseline, w->n, w->n_planned, w->correct);
            r |= csv_num(b, w->accuracy) | buf_putc(b, ',') | csv_num(b, w->n ? w->ci_lo : NAN) | buf_putc(b, ',') |
                 csv_num(b, w->n ? w->ci_hi : NAN) | buf_putc(b, ',') | csv_num(b, w->mcnemar_p) | buf_putc(b, ',');
            r |= buf_printf(b, "%ld,%ld,%ld,%ld,", w->mcnemar_shared, w->mcnemar_b, w->mcnemar_c, w->invalid);
            r |= csv_num(b, w->n ? (double)w->invalid / (double)w->n : NAN) | buf_printf(b, ",%ld,", w->errors);
            int usd = grp->cost_unit == REPORT_COST_USD, cpu = grp->cost_unit == REPORT_COST_CPU_S;
            double cols[] = {w->tokens_in_mean, w->tokens_out_mean, w->latency_p50, w->latency_p95,
                             w->is_baseline ? NAN : w->cost_usd,
                             usd ? w->cost_per_1k : NAN,
                             w->is_baseline ? NAN : w->cpu_s,
                             cpu ? w->cost_per_1k : NAN};
            for (int k = 0; k < 8; k++)
                r |= csv_num(b, cols[k]) | buf_putc(b, ',');
            r |= csv_num(b, w->is_baseline ? NAN : w->cpu_per_example) | buf_putc(b, ',');
            r |= csv_training(b, grp, w);
            r |= esc_csv(b, w->sweep) | buf_putc(b, ',') | esc_csv(b, w->sweep_point) | buf_putc(b, ',') |
                 csv_num(b, w->sweep_p) | buf_puts(b, "\r\n");
        }
    }
    if (r)
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    return PWB_OK;
}

static void add_num(cJSON *o, const char *k, double v)
{
    if (isnan(v) || isinf(v))
        cJSON_AddNullToObject(o, k);
    else
        cJSON_AddNumberToObject(o, k, v);
}

static void add_str(cJSON *o, const char *k, const char *v)
{
    report_json_str(o, k, v);
}

static cJSON *json_row(const report_group *g, const report_row *w)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    add_str(o, "method", w->method);
    add_str(o, "kind", w->kind);
    if (w->has_budget) {
        add_num(o, "train_limit", (double)w->train_limit); /* -1: all of the split */
        add_str(o, "calibration", w->calibration);
        cJSON *pr = w->n_calib_p ? cJSON_CreateDoubleArray(w->calib_p, w->n_calib_p) : NULL;
        if (pr)
            cJSON_AddItemToObject(o, "calibration_prior", pr);
        if (w->search.found) {
            cJSON *s = cJSON_CreateObject();
            if (s) {
                add_num(s, "candidates", (double)w->search.n_candidates);
                add_num(s, "rounds", (double)w->search.rounds);
                add_num(s, "evals", (double)w->search.evals);
                add_num(s, "max_evals", (double)w->search.max_evals);
                add_num(s, "examples_read", (double)w->search.examples_read);
                add_num(s, "heldout", (double)w->search.heldout);
                add_num(s, "cpu_s", w->search.cpu_s);
                add_num(s, "wall_s", w->search.wall_s);
                add_num(s, "best_heldout_accuracy", w->search.best_heldout_acc);
                cJSON_AddItemToObject(o, "search", s);
            }
        }
    }
    cJSON_AddBoolToObject(o, "is_best", w->is_best);
    cJSON_AddBoolToObject(o, "is_baseline", w->is_baseline);
    if (w->is_baseline)
        add_num(o, "majority_label", w->majority_label);
    add_num(o, "n", (double)w->n);
    add_num(o, "n_planned", (double)w->n_planned);
    add_num(o, "correct", (double)w->correct);
    add_num(o, "accuracy", w->accuracy);
    add_num(o, "ci_low", w->n ? w->ci_lo : NAN);
    add_num(o, "ci_high", w->n ? w->ci_hi : NAN);
    add_num(o, "mcnemar_p", w->mcnemar_p);
    add_num(o, "mcnemar_shared", (double)w->mcnemar_shared);
    add_num(o, "mcnemar_b", (double)w->mcnemar_b);
    add_num(o, "mcnemar_c", (double)w->mcnemar_c);
    add_num(o, "invalid", (double)w->invalid);
    add_num(o, "invalid_rate", w->n ? (double)w->invalid / (double)w->n : NAN);
    add_num(o, "errors", (double)w->errors);
    add_num(o, "mean_tokens_in", w->tokens_in_mean);
    add_num(o, "mean_tokens_out", w->tokens_out_mean);
    add_num(o, "latency_p50_s", w->latency_p50);
    add_num(o, "latency_p95_s", w->latency_p95);
    add_num(o, "cost_usd", w->is_baseline ? NAN : w->cost_usd);
    add_num(o, "cost_usd_per_1k", g->cost_unit == REPORT_COST_USD ? w->cost_per_1k : NAN);
    add_num(o, "cpu_s", w->is_baseline ? NAN : w->cpu_s);
    add_num(o, "cpu_s_per_1k", g->cost_unit == REPORT_COST_CPU_S ? w->cost_per_1k : NAN);
    add_num(o, "cpu_s_per_example", w->is_baseline ? NAN : w->cpu_per_example);
    if (!w->is_baseline) {
        /* What the method cost to make: a hard prompt's zeros beside a soft prompt's training. */
        const db_soft_prompt_info *sp = w->has_soft_prompt ? &w->soft_prompt : NULL;
        cJSON *t = cJSON_AddObjectToObject(o, "training");
        if (t) {
            add_num(t, "trainable_params", !sp ? 0 : sp->trainable_params >= 0 ? (double)sp->trainable_params : NAN);
            add_num(t, "artifact_bytes", !sp ? 0 : sp->artifact_bytes >= 0 ? (double)sp->artifact_bytes : NAN);
            add_num(t, "train_seconds", !sp ? 0 : sp->train_seconds);
            add_num(t, "examples_seen", !sp ? 0 : sp->examples_seen >= 0 ? (double)sp->examples_seen : NAN);
            add_num(t, "steps", !sp ? 0 : sp->steps >= 0 ? (double)sp->steps : NAN);
        }
    }
    add_str(o, "arm", w->arm == REPORT_ARM_TUNED ? "tuned" : w->arm == REPORT_ARM_ENGINEERED ? "engineered" : "baseline");
    add_num(o, "labelled_examples", w->labelled >= 0 ? (double)w->labelled : NAN);
    add_num(o, "one_time_cpu_s", w->fixed_cpu_s);
    if (w->confusion && g->n_labels > 0) {
        /* rows: gold labels; columns: answered labels, then invalid, then other */
        cJSON *cm = cJSON_AddArrayToObject(o, "confusion");
        for (int k = 0; cm && k < g->n_labels; k++) {
            cJSON *line = cJSON_CreateArray();
            if (!line)
                break;
            cJSON_AddItemToArray(cm, line);
            for (int c = 0; c < g->n_labels + 2; c++)
                cJSON_AddItemToArray(line, cJSON_CreateNumber((double)w->confusion[k * (g->n_labels + 2) + c]));
        }
    }
    if (w->has_soft_prompt) {
        cJSON *be = cJSON_AddObjectToObject(o, "break_even");
        if (be) {
            add_num(be, "inferences", w->break_even);
            cJSON_AddBoolToObject(be, "never", isinf(w->break_even));
            add_str(be, "vs", w->break_even_ref >= 0 ? g->rows[w->break_even_ref].method : NULL);
        }
    }
    if (w->sweep) {
        add_str(o, "sweep", w->sweep);
        size_t pl = strlen(w->sweep_point);
        cJSON *pt = pl <= 65536 && utf8_valid(w->sweep_point, pl) ? cJSON_Parse(w->sweep_point) : NULL;
        if (pt && cJSON_IsObject(pt))
            cJSON_AddItemToObject(o, "sweep_point", pt);
        else
            cJSON_Delete(pt);
        add_num(o, "sweep_mcnemar_p", w->sweep_p);
        cJSON_AddBoolToObject(o, "is_sweep_best", w->is_sweep_best);
    }
    if (w->has_soft_prompt) {
        const db_soft_prompt_info *sp = &w->soft_prompt;
        cJSON *s = cJSON_AddObjectToObject(o, "soft_prompt");
        if (s) {
            add_str(s, "config_sha256", sp->config_sha256);
            add_str(s, "init", sp->init);
            add_str(s, "artifact_path", sp->artifact_path);
            add_num(s, "n_tokens", sp->n_tokens);
            add_num(s, "trainable_params", sp->trainable_params >= 0 ? (double)sp->trainable_params : NAN);
            add_num(s, "steps", sp->steps >= 0 ? (double)sp->steps : NAN);
            add_num(s, "examples_seen", sp->examples_seen >= 0 ? (double)sp->examples_seen : NAN);
            add_num(s, "artifact_bytes", sp->artifact_bytes >= 0 ? (double)sp->artifact_bytes : NAN);
            add_num(s, "train_seconds", sp->train_seconds);
            add_num(s, "best_eval_acc", sp->best_eval_acc);
            cJSON *steps = cJSON_AddArrayToObject(s, "train_steps");
            for (size_t k = 0; steps && k < w->n_train_steps; k++) {
                const db_train_step_info *p = &w->train_steps[k];
                cJSON *x = cJSON_CreateObject();
                if (!x)
                    break;
                cJSON_AddItemToArray(steps, x);
                add_num(x, "step", (double)p->step);
                add_num(x, "loss", p->loss);
                add_num(x, "lr", p->lr);
                add_num(x, "seconds", p->seconds);
                add_num(x, "examples_seen", p->examples_seen >= 0 ? (double)p->examples_seen : NAN);
            }
            cJSON *evals = cJSON_AddArrayToObject(s, "train_evals");
            for (size_t k = 0; evals && k < w->n_train_evals; k++) {
                const db_train_eval_info *p = &w->train_evals[k];
                cJSON *x = cJSON_CreateObject();
                if (!x)
                    break;
                cJSON_AddItemToArray(evals, x);
                add_num(x, "step", (double)p->step);
                add_num(x, "accuracy", p->accuracy);
                add_num(x, "loss", p->loss);
            }
        }
    }
    return o;
}

int report_render_json(const pwb_report *rep, pwb_buf *b, pwb_err *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *run = root ? cJSON_AddObjectToObject(root, "run") : NULL;
    cJSON *groups = root ? cJSON_AddArrayToObject(root, "groups") : NULL;
    if (!run || !groups) {
        cJSON_Delete(root);
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    }
    const db_run_info *ri = &rep->run;
    add_num(run, "id", (double)ri->id);
    add_str(run, "suite_name", ri->suite_name);
    add_str(run, "suite_path", ri->suite_path);
    add_str(run, "suite_sha256", ri->suite_sha256);
    /* A seed beyond 2^53 would lose digits as a JSON number. */
    if (ri->seed <= (1ull << 53)) {
        add_num(run, "seed", (double)ri->seed);
    } else {
        char s[32];
        snprintf(s, sizeof s, "%llu", (unsigned long long)ri->seed);
        add_str(run, "seed", s);
    }
    add_str(run, "status", ri->status);
    add_str(run, "started", ri->started);
    add_str(run, "finished", ri->finished);
    add_str(run, "pwb_version", ri->pwb_version);
    for (size_t g = 0; g < rep->n_groups; g++) {
        const report_group *grp = &rep->groups[g];
        cJSON *go = cJSON_CreateObject();
        if (!go)
            break;
        cJSON_AddItemToArray(groups, go);
        add_str(go, "dataset", grp->dataset);
        add_str(go, "split", grp->split);
        add_str(go, "model", grp->model);
        add_str(go, "provider", grp->provider);
        add_str(go, "cost_unit", grp->cost_unit == REPORT_COST_USD     ? "usd"
                                 : grp->cost_unit == REPORT_COST_CPU_S ? "cpu_s"
                                                                       : NULL);
        add_str(go, "best_method", grp->best >= 0 ? grp->rows[grp->best].method : NULL);
        add_str(go, "break_even_vs", grp->few_shot_ref >= 0 ? grp->rows[grp->few_shot_ref].method : NULL);
        cJSON *lw = cJSON_AddArrayToObject(go, "label_words");
        for (int k = 0; lw && k < grp->n_labels; k++)
            cJSON_AddItemToArray(lw, report_json_string(grp->labels[k]));
        const report_verdict *v = &grp->verdict;
        cJSON *vo = cJSON_AddObjectToObject(go, "verdict");
        if (vo) {
            add_str(vo, "engineered", v->engineered >= 0 ? grp->rows[v->engineered].method : NULL);
            add_str(vo, "tuned", v->tuned >= 0 ? grp->rows[v->tuned].method : NULL);
            add_num(vo, "gap", v->gap);
            add_num(vo, "gap_ci_low", v->gap_lo);
            add_num(vo, "gap_ci_high", v->gap_hi);
            add_num(vo, "mcnemar_p", v->p);
            add_num(vo, "shared", (double)v->shared);
            cJSON_AddBoolToObject(vo, "significant", v->significant);
            add_num(vo, "break_even_volume", v->v_flip);
            add_str(vo, "break_even_reason", v->v_reason);
            add_num(vo, "n_star", v->n_star);
        }
        cJSON *rows = cJSON_AddArrayToObject(go, "rows");
        for (size_t i = 0; rows && i < grp->n_rows; i++) {
            cJSON *ro = json_row(grp, &grp->rows[i]);
            if (ro)
                cJSON_AddItemToArray(rows, ro);
        }
        cJSON *sweeps = cJSON_AddArrayToObject(go, "sweeps");
        for (size_t k = 0; sweeps && k < grp->n_sweeps; k++) {
            const report_sweep *sw = &grp->sweeps[k];
            cJSON *so = cJSON_CreateObject();
            if (!so)
                break;
            cJSON_AddItemToArray(sweeps, so);
            add_str(so, "name", sw->name);
            cJSON *axes = cJSON_AddArrayToObject(so, "axes");
            for (int a = 0; axes && a < sw->n_axes; a++)
                cJSON_AddItemToArray(axes, report_json_string(sw->axes[a]));
            add_str(so, "x_axis", sw->n_axes ? sw->axes[sw->x_axis] : NULL);
            add_str(so, "best_method", sw->best >= 0 ? grp->rows[sw->rows[sw->best]].method : NULL);
            cJSON *ms = cJSON_AddArrayToObject(so, "methods");
            for (size_t i = 0; ms && i < sw->n_rows; i++)
                cJSON_AddItemToArray(ms, report_json_string(grp->rows[sw->rows[i]].method));
        }
    }
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (!txt)
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    int r = buf_puts(b, txt) | buf_putc(b, '\n');
    free(txt);
    if (r)
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    return PWB_OK;
}
