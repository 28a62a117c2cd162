/* Renderers for a loaded report: markdown tables, CSV rows and a JSON document. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"
#include "report/report_internal.h"
#include "report/svg.h"

#define DASH "\xe2\x80\x94" /* em dash: "no value" */

int md_text(pwb_buf *b, const char *s)
{
    for (; s && *s; s++) {
        int r;
        if (*s == '|')
            r = buf_puts(b, "\\|");
        else if (*s == '\n' || *s == '\r' || *s == '\t')
            r = buf_putc(b, ' ');
        else
            r = buf_putc(b, *s);
        if (r)
            return -1;
    }
    return 0;
}

int csv_text(pwb_buf *b, const char *s)
{
    if (!s)
        return 0;
    if (!strpbrk(s, ",\"\r\n"))
        return buf_puts(b, s);
    if (buf_putc(b, '"'))
        return -1;
    for (; *s; s++)
        if ((*s == '"' && buf_putc(b, '"')) || buf_putc(b, *s))
            return -1;
    return buf_putc(b, '"');
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

static int fmt_cost(pwb_buf *b, int unit, double v)
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

static int md_soft_prompts(const report_group *g, pwb_buf *b)
{
    int any = 0;
    for (size_t i = 0; i < g->n_rows; i++)
        any |= g->rows[i].has_soft_prompt;
    if (!any)
        return 0;
    int r = buf_puts(b, "\nSoft prompt training (the one-off cost behind the soft rows):\n\n"
                        "| method | virtual tokens | init | trainable params | steps | examples seen | "
                        "train time | artifact bytes | best eval acc |\n"
                        "|---|--:|---|--:|--:|--:|--:|--:|--:|\n");
    for (size_t i = 0; i < g->n_rows && !r; i++) {
        const report_row *w = &g->rows[i];
        if (!w->has_soft_prompt)
            continue;
        const db_soft_prompt_info *sp = &w->soft_prompt;
        r |= buf_puts(b, "| ") | md_text(b, w->method) | buf_printf(b, " | %d | ", sp->n_tokens) |
             md_text(b, sp->init ? sp->init : DASH);
        int64_t v[3] = {sp->trainable_params, sp->steps, sp->examples_seen};
        for (int k = 0; k < 3; k++)
            r |= v[k] >= 0 ? buf_printf(b, " | %lld", (long long)v[k]) : buf_puts(b, " | " DASH);
        r |= buf_puts(b, " | ") | fmt_seconds(b, sp->train_seconds);
        r |= sp->artifact_bytes >= 0 ? buf_printf(b, " | %lld", (long long)sp->artifact_bytes) : buf_puts(b, " | " DASH);
        r |= isnan(sp->best_eval_acc) ? buf_puts(b, " | " DASH " |\n")
                                      : buf_printf(b, " | %.1f%% |\n", 100.0 * sp->best_eval_acc);
    }
    return r ? -1 : 0;
}

static int md_group(const pwb_report *rep, const report_group *g, pwb_buf *b)
{
    int r = buf_puts(b, "\n## ") | md_text(b, g->dataset);
    if (g->split && *g->split)
        r |= buf_puts(b, " (") | md_text(b, g->split) | buf_putc(b, ')');
    r |= buf_puts(b, " \xc2\xb7 ") | md_text(b, g->model);
    if (g->provider && *g->provider)
        r |= buf_puts(b, " (") | md_text(b, g->provider) | buf_putc(b, ')');
    r |= buf_printf(b, "\n\n| method | kind | n | accuracy [95%% CI] | p vs best | invalid | tokens in | "
                       "tokens out | latency p50 / p95 | %s |\n"
                       "|---|---|--:|---|--:|--:|--:|--:|--:|--:|\n",
                    cost_header(g->cost_unit));
    for (size_t i = 0; i < g->n_rows && !r; i++) {
        const report_row *w = &g->rows[i];
        r |= buf_puts(b, "| ");
        if (w->is_best)
            r |= buf_puts(b, "**") | md_text(b, w->method) | buf_puts(b, "**");
        else if (w->is_baseline)
            r |= buf_printf(b, "majority class (label %d)", w->majority_label);
        else
            r |= md_text(b, w->method);
        r |= buf_puts(b, " | ") | md_text(b, w->kind);
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
    if (rep->chart_dir && !r) {
        r |= buf_puts(b, "\n![accuracy by method: ") | md_text(b, g->dataset) | buf_puts(b, " \xc2\xb7 ") |
             md_text(b, g->model) | buf_puts(b, "](");
        if (*rep->chart_dir)
            r |= buf_puts(b, rep->chart_dir) | buf_putc(b, '/');
        r |= report_svg_filename(g, b) | buf_puts(b, ")\n");
    }
    r |= md_soft_prompts(g, b);
    return r ? -1 : 0;
}

int report_render_md(const pwb_report *rep, pwb_buf *b, pwb_err *e)
{
    const db_run_info *run = &rep->run;
    int r = buf_printf(b, "# pwb report: run %lld (", (long long)run->id) | md_text(b, run->suite_name) |
            buf_puts(b, ")\n\n- Suite: `") | md_text(b, run->suite_name) | buf_puts(b, "`");
    if (run->suite_path)
        r |= buf_puts(b, " from `") | md_text(b, run->suite_path) | buf_puts(b, "`");
    if (run->suite_sha256)
        r |= buf_printf(b, ", sha256 `%.12s`", run->suite_sha256);
    r |= buf_printf(b, "\n- Seed %llu, status `", (unsigned long long)run->seed) |
         md_text(b, run->status ? run->status : "?") | buf_puts(b, "`, started ") |
         md_text(b, run->started ? run->started : "?");
    if (run->finished)
        r |= buf_puts(b, ", finished ") | md_text(b, run->finished);
    if (run->pwb_version)
        r |= buf_puts(b, ", pwb ") | md_text(b, run->pwb_version);
    r |= buf_puts(b, "\n\nAccuracy with its 95% Wilson interval. *p vs best*: exact McNemar test against the "
                     "best method (bold) on the rows both evaluated. The majority-class baseline always "
                     "answers the most frequent gold label of the evaluated rows. n shows done/planned "
                     "when a cell is incomplete. Latency is per example; cost is per 1,000 examples "
                     "(USD for priced remote models, CPU seconds for local ones).\n");
    if (rep->n_groups == 0)
        r |= buf_puts(b, "\nThis run has no cells yet.\n");
    for (size_t g = 0; g < rep->n_groups && !r; g++)
        r |= md_group(rep, &rep->groups[g], b);
    if (r)
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    return PWB_OK;
}

int report_render_csv(const pwb_report *rep, pwb_buf *b, pwb_err *e)
{
    int r = buf_puts(b, "run_id,dataset,split,model,provider,method,kind,is_best,is_baseline,n,n_planned,"
                        "correct,accuracy,ci_low,ci_high,mcnemar_p,mcnemar_shared,mcnemar_b,mcnemar_c,"
                        "invalid,invalid_rate,errors,mean_tokens_in,mean_tokens_out,latency_p50_s,"
                        "latency_p95_s,cost_usd,cost_usd_per_1k,cpu_s,cpu_s_per_1k\r\n");
    for (size_t g = 0; g < rep->n_groups && !r; g++) {
        const report_group *grp = &rep->groups[g];
        for (size_t i = 0; i < grp->n_rows && !r; i++) {
            const report_row *w = &grp->rows[i];
            r |= buf_printf(b, "%lld,", (long long)rep->run.id);
            const char *txt[] = {grp->dataset, grp->split, grp->model, grp->provider, w->method, w->kind};
            for (int k = 0; k < 6; k++)
                r |= csv_text(b, txt[k]) | buf_putc(b, ',');
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
                r |= csv_num(b, cols[k]) | (k < 7 ? buf_putc(b, ',') : buf_puts(b, "\r\n"));
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
    if (v)
        cJSON_AddStringToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

static cJSON *json_row(const report_group *g, const report_row *w)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    add_str(o, "method", w->method);
    add_str(o, "kind", w->kind);
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
        cJSON *rows = cJSON_AddArrayToObject(go, "rows");
        for (size_t i = 0; rows && i < grp->n_rows; i++) {
            cJSON *ro = json_row(grp, &grp->rows[i]);
            if (ro)
                cJSON_AddItemToArray(rows, ro);
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
