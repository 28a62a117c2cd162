/* Run-against-run comparison: per (dataset, split, model, method), accuracy in each run and an
 * exact McNemar test on the rows both runs evaluated. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"
#include "report/report_internal.h"
#include "report/stats.h"

#define DASH "\xe2\x80\x94"

typedef struct cmp_row {
    const db_cell_info *ca, *cb; /* either may be NULL: the method is in one run only */
    long na, nb, ka, kb, shared, only_a, only_b;
    double acc_a, acc_b, p;
    report_row fa, fb;           /* tokens, cost: per side (no owned fields are set) */
    int unit;                    /* the cost unit of the row's model */
} cmp_row;

static int same_cell(const db_cell_info *x, const db_cell_info *y)
{
    return !strcmp(x->dataset, y->dataset) && !strcmp(x->split ? x->split : "", y->split ? y->split : "") &&
           !strcmp(x->model, y->model) && !strcmp(x->method, y->method);
}

static void count(const db_outcome *o, size_t n, long *nn, long *k, double *acc)
{
    *nn = (long)n;
    *k = 0;
    for (size_t i = 0; i < n; i++)
        *k += o[i].correct;
    *acc = n ? (double)*k / (double)n : NAN;
}

static const db_cell_info *any_cell(const cmp_row *r)
{
    return r->ca ? r->ca : r->cb;
}

static int same_group(const db_cell_info *x, const db_cell_info *y)
{
    return !strcmp(x->dataset, y->dataset) && !strcmp(x->split ? x->split : "", y->split ? y->split : "") &&
           !strcmp(x->model, y->model);
}

static int fmt_arrow_num(pwb_buf *b, double a, double v)
{
    int r = isnan(a) ? buf_puts(b, DASH) : buf_printf(b, "%.1f", a);
    r |= buf_puts(b, " \xe2\x86\x92 ");
    return r | (isnan(v) ? buf_puts(b, DASH) : buf_printf(b, "%.1f", v));
}

static int fmt_cost1(pwb_buf *b, int unit, double v)
{
    if (isnan(v) || unit == REPORT_COST_NONE)
        return buf_puts(b, DASH);
    return unit == REPORT_COST_USD ? buf_printf(b, "$%.4f", v) : buf_printf(b, "%.1f", v);
}

static int render_md(const db_run_info *ra, const db_run_info *rb, const cmp_row *rows, size_t n, pwb_buf *b)
{
    int r = buf_printf(b, "# pwb compare: run %lld vs run %lld\n\n", (long long)ra->id, (long long)rb->id);
    const db_run_info *runs[2] = {ra, rb};
    for (int k = 0; k < 2; k++)
        r |= buf_printf(b, "- %c: run %lld, suite `", k ? 'B' : 'A', (long long)runs[k]->id) |
             esc_md(b, runs[k]->suite_name) | buf_puts(b, "`, started ") |
             esc_md(b, runs[k]->started ? runs[k]->started : "?") | buf_putc(b, '\n');
    r |= buf_puts(b, "\nPer method, what changed from A to B. Delta is B minus A in percentage points. *p*: exact "
                     "McNemar test on the rows both runs evaluated (A only / B only: rows that only that run got "
                     "right). Tokens are means per example; cost is per 1,000 examples (USD for priced remote "
                     "models, CPU seconds for local ones).\n");
    char *done = calloc(n + 1, 1);
    if (!done)
        return -1;
    for (size_t g = 0; g < n && !r; g++) {
        if (done[g])
            continue;
        const db_cell_info *c0 = any_cell(&rows[g]);
        int unit = rows[g].unit;
        r |= buf_puts(b, "\n## ") | esc_md(b, c0->dataset);
        if (c0->split && *c0->split)
            r |= buf_puts(b, " (") | esc_md(b, c0->split) | buf_putc(b, ')');
        r |= buf_puts(b, " \xc2\xb7 ") | esc_md(b, c0->model) |
             buf_printf(b, "\n\n| method | n A | accuracy A [95%% CI] | n B | accuracy B [95%% CI] | delta | shared | "
                           "A only | B only | p | tokens in A \xe2\x86\x92 B | tokens out A \xe2\x86\x92 B | %s A "
                           "\xe2\x86\x92 B |\n"
                           "|---|--:|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
                        unit == REPORT_COST_USD ? "USD / 1k" : unit == REPORT_COST_CPU_S ? "CPU-s / 1k" : "cost / 1k");
        for (size_t i = g; i < n && !r; i++) {
            const cmp_row *w = &rows[i];
            const db_cell_info *c = any_cell(w);
            if (done[i] || !same_group(c, c0))
                continue;
            done[i] = 1;
            double lo, hi;
            r |= buf_puts(b, "| ") | esc_md(b, c->method) | buf_printf(b, " | %ld | ", w->na);
            stats_wilson(w->ka, w->na, STATS_Z95, &lo, &hi);
            r |= fmt_accuracy(b, w->na, w->acc_a, lo, hi) | buf_printf(b, " | %ld | ", w->nb);
            stats_wilson(w->kb, w->nb, STATS_Z95, &lo, &hi);
            r |= fmt_accuracy(b, w->nb, w->acc_b, lo, hi);
            if (w->na && w->nb)
                r |= buf_printf(b, " | %+.1f", 100.0 * (w->acc_b - w->acc_a));
            else
                r |= buf_puts(b, " | " DASH);
            r |= buf_printf(b, " | %ld | %ld | %ld | ", w->shared, w->only_a, w->only_b) | fmt_p(b, w->p);
            r |= buf_puts(b, " | ") | fmt_arrow_num(b, w->fa.tokens_in_mean, w->fb.tokens_in_mean);
            r |= buf_puts(b, " | ") | fmt_arrow_num(b, w->fa.tokens_out_mean, w->fb.tokens_out_mean);
            r |= buf_puts(b, " | ") | fmt_cost1(b, unit, w->fa.cost_per_1k) | buf_puts(b, " \xe2\x86\x92 ") |
                 fmt_cost1(b, unit, w->fb.cost_per_1k) | buf_puts(b, " |\n");
        }
    }
    free(done);
    return r;
}

static const char *unit_name(int unit)
{
    return unit == REPORT_COST_USD ? "usd" : unit == REPORT_COST_CPU_S ? "cpu_s" : "";
}

static int render_csv(const db_run_info *ra, const db_run_info *rb, const cmp_row *rows, size_t n, pwb_buf *b)
{
    int r = buf_puts(b, "run_a,run_b,dataset,split,model,method,n_a,correct_a,accuracy_a,n_b,correct_b,"
                        "accuracy_b,delta,shared,only_a,only_b,mcnemar_p,mean_tokens_in_a,mean_tokens_in_b,"
                        "mean_tokens_out_a,mean_tokens_out_b,cost_unit,cost_per_1k_a,cost_per_1k_b\r\n");
    for (size_t i = 0; i < n && !r; i++) {
        const cmp_row *w = &rows[i];
        const db_cell_info *c = any_cell(w);
        r |= buf_printf(b, "%lld,%lld,", (long long)ra->id, (long long)rb->id);
        const char *txt[] = {c->dataset, c->split, c->model, c->method};
        for (int k = 0; k < 4; k++)
            r |= esc_csv(b, txt[k]) | buf_putc(b, ',');
        r |= buf_printf(b, "%ld,%ld,", w->na, w->ka) | csv_num(b, w->acc_a) |
             buf_printf(b, ",%ld,%ld,", w->nb, w->kb) | csv_num(b, w->acc_b) | buf_putc(b, ',') |
             csv_num(b, w->acc_b - w->acc_a) |
             buf_printf(b, ",%ld,%ld,%ld,", w->shared, w->only_a, w->only_b) | csv_num(b, w->p);
        double v[4] = {w->fa.tokens_in_mean, w->fb.tokens_in_mean, w->fa.tokens_out_mean, w->fb.tokens_out_mean};
        for (int k = 0; k < 4; k++)
            r |= buf_putc(b, ',') | csv_num(b, v[k]);
        r |= buf_printf(b, ",%s,", unit_name(w->unit)) | csv_num(b, w->fa.cost_per_1k) | buf_putc(b, ',') |
             csv_num(b, w->fb.cost_per_1k) | buf_puts(b, "\r\n");
    }
    return r;
}

static void jnum(cJSON *o, const char *k, double v)
{
    if (isnan(v))
        cJSON_AddNullToObject(o, k);
    else
        cJSON_AddNumberToObject(o, k, v);
}

static int render_json(const db_run_info *ra, const db_run_info *rb, const cmp_row *rows, size_t n, pwb_buf *b)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = root ? cJSON_AddArrayToObject(root, "rows") : NULL;
    if (!arr) {
        cJSON_Delete(root);
        return -1;
    }
    jnum(root, "run_a", (double)ra->id);
    jnum(root, "run_b", (double)rb->id);
    for (size_t i = 0; i < n; i++) {
        const cmp_row *w = &rows[i];
        const db_cell_info *c = any_cell(w);
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddItemToArray(arr, o);
        report_json_str(o, "dataset", c->dataset);
        report_json_str(o, "split", c->split ? c->split : "");
        report_json_str(o, "model", c->model);
        report_json_str(o, "method", c->method);
        jnum(o, "n_a", (double)w->na);
        jnum(o, "correct_a", (double)w->ka);
        jnum(o, "accuracy_a", w->acc_a);
        jnum(o, "n_b", (double)w->nb);
        jnum(o, "correct_b", (double)w->kb);
        jnum(o, "accuracy_b", w->acc_b);
        jnum(o, "delta", w->acc_b - w->acc_a);
        jnum(o, "shared", (double)w->shared);
        jnum(o, "only_a", (double)w->only_a);
        jnum(o, "only_b", (double)w->only_b);
        jnum(o, "mcnemar_p", w->p);
        jnum(o, "mean_tokens_in_a", w->fa.tokens_in_mean);
        jnum(o, "mean_tokens_in_b", w->fb.tokens_in_mean);
        jnum(o, "mean_tokens_out_a", w->fa.tokens_out_mean);
        jnum(o, "mean_tokens_out_b", w->fb.tokens_out_mean);
        if (w->unit == REPORT_COST_NONE)
            cJSON_AddNullToObject(o, "cost_unit");
        else
            cJSON_AddStringToObject(o, "cost_unit", unit_name(w->unit));
        jnum(o, "cost_per_1k_a", w->fa.cost_per_1k);
        jnum(o, "cost_per_1k_b", w->fb.cost_per_1k);
    }
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (!txt)
        return -1;
    int r = buf_puts(b, txt) | buf_putc(b, '\n');
    free(txt);
    return r;
}

static int fill_row(pwb_db *db, cmp_row *w, pwb_err *e)
{
    db_outcome *oa = NULL, *ob = NULL;
    size_t na = 0, nb = 0;
    int rc = PWB_OK;
    if (w->ca && (rc = db_cell_outcomes(db, w->ca->id, &oa, &na, e)))
        return rc;
    if (w->cb && (rc = db_cell_outcomes(db, w->cb->id, &ob, &nb, e))) {
        free(oa);
        return rc;
    }
    count(oa, na, &w->na, &w->ka, &w->acc_a);
    count(ob, nb, &w->nb, &w->kb, &w->acc_b);
    /* Local models are costed in CPU time; remote ones in dollars when either run paid something. */
    double paid = 0;
    for (size_t i = 0; i < na; i++)
        paid += isnan(oa[i].cost_usd) ? 0 : oa[i].cost_usd;
    for (size_t i = 0; i < nb; i++)
        paid += isnan(ob[i].cost_usd) ? 0 : ob[i].cost_usd;
    w->unit = report_is_local(any_cell(w)->provider) ? REPORT_COST_CPU_S : paid > 0 ? REPORT_COST_USD : REPORT_COST_NONE;
    report_row_fill(&w->fa, oa, na, w->unit);
    report_row_fill(&w->fb, ob, nb, w->unit);
    report_pair(oa, na, ob, nb, &w->shared, &w->only_a, &w->only_b, NULL);
    w->p = w->shared ? stats_mcnemar_exact(w->only_a, w->only_b) : NAN;
    free(oa);
    free(ob);
    return PWB_OK;
}

int report_compare(pwb_db *db, int64_t run_a, int64_t run_b, int format, pwb_buf *out, pwb_err *e)
{
    db_run_info ra, rb;
    int rc = db_run_get(db, run_a, &ra, e);
    if (rc)
        return rc;
    if ((rc = db_run_get(db, run_b, &rb, e))) {
        db_run_info_free(&ra);
        return rc;
    }
    db_cell_info *ca = NULL, *cb = NULL;
    size_t nca = 0, ncb = 0, n = 0;
    cmp_row *rows = NULL;
    if ((rc = db_cells_list(db, ra.id, &ca, &nca, e)) || (rc = db_cells_list(db, rb.id, &cb, &ncb, e)))
        goto out;
    rows = calloc(nca + ncb + 1, sizeof *rows);
    if (!rows) {
        rc = err_set(e, PWB_ENOMEM, "compare: out of memory");
        goto out;
    }
    /* A's cells in order, each with its B twin; then B's cells that A lacks. */
    for (size_t i = 0; i < nca; i++) {
        rows[n].ca = &ca[i];
        for (size_t k = 0; k < ncb; k++)
            if (same_cell(&ca[i], &cb[k])) {
                rows[n].cb = &cb[k];
                break;
            }
        n++;
    }
    for (size_t k = 0; k < ncb; k++) {
        int found = 0;
        for (size_t i = 0; i < nca && !found; i++)
            found = same_cell(&ca[i], &cb[k]);
        if (!found)
            rows[n++].cb = &cb[k];
    }
    for (size_t i = 0; i < n && !rc; i++)
        rc = fill_row(db, &rows[i], e);
    if (rc)
        goto out;
    int r;
    switch (format) {
    case REPORT_MD:
        r = render_md(&ra, &rb, rows, n, out);
        break;
    case REPORT_CSV:
        r = render_csv(&ra, &rb, rows, n, out);
        break;
    case REPORT_JSON:
        r = render_json(&ra, &rb, rows, n, out);
        break;
    default:
        rc = err_set(e, PWB_EINVAL, "compare: unknown format %d", format);
        goto out;
    }
    if (r)
        rc = err_set(e, PWB_ENOMEM, "compare: out of memory");
out:
    free(rows);
    db_cells_free(ca, nca);
    db_cells_free(cb, ncb);
    db_run_info_free(&ra);
    db_run_info_free(&rb);
    return rc;
}
