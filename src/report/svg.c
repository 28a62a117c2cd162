/* The chart list (what a report can draw and the files it goes to) and the accuracy bar chart. */
#include "report/svg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/svg_draw.h"
#include "util/str.h"

/* Hard prompts blue, soft prompts orange, the baseline grey; the best method a darker shade. */
#define HARD "#90b4e0"
#define HARD_BEST "#2b6cb0"
#define SOFT "#f6b26b"
#define SOFT_BEST "#d46a00"
#define BASE "#c0c0c0"

static int is_soft(const report_row *w)
{
    return w->has_soft_prompt || (w->kind && !strcmp(w->kind, "soft"));
}

static const char *row_label(const report_row *w)
{
    return w->is_baseline ? "majority class" : w->method;
}

int report_svg_group(const report_group *g, pwb_buf *b, pwb_err *e)
{
    const double W = 760, top = 60, row_h = 26;
    double lw = 0;
    for (size_t i = 0; i < g->n_rows; i++)
        lw = fmax(lw, svg_text_width(row_label(&g->rows[i]), SVG_FONT));
    lw = fmin(fmax(lw + 18, 110), 300);
    double x0 = lw, pw = W - lw - 70; /* room for "100.0%" on the right */
    double bottom = top + (double)g->n_rows * row_h, H = bottom + 58;
    pwb_buf t;
    buf_init(&t);
    buf_puts(&t, g->dataset);
    if (g->split && *g->split)
        buf_printf(&t, " (%s)", g->split);
    buf_printf(&t, " \xc2\xb7 %s: accuracy by method", g->model);
    svg s;
    svg_begin(&s, b, W, H, t.data, "with 95% Wilson interval; bold: the best method");
    char lab[32];
    for (int k = 0; k <= 5; k++) {
        double x = x0 + pw * k / 5.0;
        svg_line(&s, x, top - 4, x, bottom, k ? "#e0e0e0" : "#999999", 1, NULL);
        snprintf(lab, sizeof lab, "%d%%", k * 20);
        svg_text(&s, x, bottom + 16, "middle", "fill=\"#555555\"", lab);
    }
    for (size_t i = 0; i < g->n_rows; i++) {
        const report_row *w = &g->rows[i];
        double y = top + (double)i * row_h;
        /* Bold glyphs run about a tenth wider. */
        svg_fit(row_label(w), (lw - 14) / (w->is_best ? 1.1 : 1.0), SVG_FONT, &t);
        svg_text(&s, x0 - 8, y + 17, "end", w->is_best ? "font-weight=\"bold\"" : NULL, t.data);
        if (w->n <= 0 || isnan(w->accuracy))
            continue;
        const char *fill = w->is_baseline ? BASE : is_soft(w) ? (w->is_best ? SOFT_BEST : SOFT)
                                                              : (w->is_best ? HARD_BEST : HARD);
        buf_reset(&t);
        buf_printf(&t, "%s: %.1f%% [%.1f, %.1f], n=%ld", row_label(w), 100 * w->accuracy, 100 * w->ci_lo,
                   100 * w->ci_hi, w->n);
        double acc = fmin(fmax(w->accuracy, 0), 1);
        svg_rect(&s, x0, y + 4, acc * pw, row_h - 8, fill, t.data);
        svg_hbar(&s, x0 + fmax(w->ci_lo, 0) * pw, x0 + fmin(w->ci_hi, 1) * pw, y + row_h / 2, 5, "#222222");
        snprintf(lab, sizeof lab, "%.1f%%", 100 * w->accuracy);
        svg_text(&s, x0 + pw + 8, y + 17, "start", NULL, lab);
    }
    /* Key */
    double ky = bottom + 36;
    svg_rect(&s, x0, ky - 9, 10, 10, HARD, NULL);
    svg_text(&s, x0 + 14, ky, "start", NULL, "hard prompt");
    svg_rect(&s, x0 + 110, ky - 9, 10, 10, SOFT, NULL);
    svg_text(&s, x0 + 124, ky, "start", NULL, "soft prompt");
    svg_rect(&s, x0 + 220, ky - 9, 10, 10, BASE, NULL);
    svg_text(&s, x0 + 234, ky, "start", NULL, "majority class");
    buf_free(&t);
    return svg_finish(&s, e);
}

static int safe(pwb_buf *b, const char *s)
{
    for (; s && *s; s++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-';
        if (buf_putc(b, ok ? c : '_'))
            return -1;
    }
    return 0;
}

static int group_slug(const report_group *g, pwb_buf *out)
{
    int r = safe(out, g->dataset);
    if (g->split && *g->split)
        r |= buf_putc(out, '-') | safe(out, g->split);
    return r | buf_putc(out, '-') | safe(out, g->model);
}

int report_svg_filename(const report_group *g, pwb_buf *out)
{
    size_t start = out->len;
    int r = group_slug(g, out) | buf_puts(out, ".svg");
    /* A leading '.' would make a hidden file or "..": keep names plain. */
    if (!r && out->len > start && out->data[start] == '.')
        out->data[start] = '_';
    return r ? -1 : 0;
}

int report_group_has_cost(const report_group *g)
{
    if (g->cost_unit == REPORT_COST_NONE)
        return 0;
    for (size_t i = 0; i < g->n_rows; i++) {
        const report_row *w = &g->rows[i];
        if (!w->is_baseline && w->n > 0 && isfinite(w->cost_per_example) && w->cost_per_example > 0)
            return 1;
    }
    return 0;
}

int report_group_has_training(const report_group *g)
{
    for (size_t i = 0; i < g->n_rows; i++)
        if (g->rows[i].n_train_steps || g->rows[i].n_train_evals)
            return 1;
    return 0;
}

void report_charts_free(report_chart *c, size_t n)
{
    for (size_t i = 0; c && i < n; i++) {
        free(c[i].file);
        free(c[i].alt);
    }
    free(c);
}

static const char *const kind_name[] = {"accuracy", "cost", "training", "sweep", "volume", "budget", "models"};

static int add_chart(const pwb_report *r, report_chart **v, size_t *n, int kind, size_t g, size_t sw)
{
    report_chart *nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv)
        return -1;
    *v = nv;
    report_chart *c = &nv[*n];
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->group = g;
    c->sweep = sw;
    (*n)++;
    const report_group *grp = &r->groups[g];
    pwb_buf f, a;
    buf_init(&f);
    buf_init(&a);
    int rc = 0;
    if (r->chart_prefix && *r->chart_prefix)
        rc |= safe(&f, r->chart_prefix) | buf_putc(&f, '-');
    if (kind == REPORT_CHART_MODELS) /* one chart for the dataset, across its models */
        rc |= safe(&f, grp->dataset) | (grp->split && *grp->split ? buf_putc(&f, '-') | safe(&f, grp->split) : 0) |
              buf_puts(&f, "-models");
    else
        rc |= group_slug(grp, &f) | buf_putc(&f, '-') | buf_puts(&f, kind_name[kind]);
    if (kind == REPORT_CHART_SWEEP)
        rc |= buf_putc(&f, '-') | safe(&f, grp->sweeps[sw].name);
    rc |= buf_puts(&f, ".svg");
    if (!rc && f.data[0] == '.')
        f.data[0] = '_';
    static const char *const what[] = {"accuracy by method", "accuracy against cost per example",
                                       "soft prompt training curves", "sweep", "total cost against inferences served",
                                       "accuracy against labelled examples used", "best accuracy per arm by model"};
    if (kind == REPORT_CHART_MODELS)
        rc |= buf_printf(&a, "%s: %s", what[kind], grp->dataset);
    else
        rc |= buf_printf(&a, "%s: %s \xc2\xb7 %s", what[kind], grp->dataset, grp->model);
    if (kind == REPORT_CHART_SWEEP)
        rc |= buf_printf(&a, " \xc2\xb7 %s", grp->sweeps[sw].name);
    if (rc) {
        buf_free(&f);
        buf_free(&a);
        return -1;
    }
    c->file = buf_take(&f);
    c->alt = buf_take(&a);
    return c->file && c->alt ? 0 : -1;
}

int report_charts_list(const pwb_report *r, report_chart **charts, size_t *n, pwb_err *e)
{
    *charts = NULL;
    *n = 0;
    int rc = 0;
    for (size_t g = 0; g < r->n_groups && !rc; g++) {
        const report_group *grp = &r->groups[g];
        rc |= add_chart(r, charts, n, REPORT_CHART_ACCURACY, g, 0);
        if (!rc && report_group_has_cost(grp))
            rc |= add_chart(r, charts, n, REPORT_CHART_COST, g, 0);
        if (!rc && report_group_has_training(grp))
            rc |= add_chart(r, charts, n, REPORT_CHART_TRAINING, g, 0);
        for (size_t s = 0; s < grp->n_sweeps && !rc; s++)
            rc |= add_chart(r, charts, n, REPORT_CHART_SWEEP, g, s);
        if (!rc && report_group_has_volume(grp))
            rc |= add_chart(r, charts, n, REPORT_CHART_VOLUME, g, 0);
        if (!rc && report_group_has_budget(grp))
            rc |= add_chart(r, charts, n, REPORT_CHART_BUDGET, g, 0);
        if (!rc && report_models_first(r, g))
            rc |= add_chart(r, charts, n, REPORT_CHART_MODELS, g, 0);
    }
    if (rc) {
        report_charts_free(*charts, *n);
        *charts = NULL;
        *n = 0;
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    }
    return PWB_OK;
}

int report_chart_render(const pwb_report *r, const report_chart *c, pwb_buf *out, pwb_err *e)
{
    if (c->group >= r->n_groups)
        return err_set(e, PWB_EINVAL, "report: no group %zu", c->group);
    const report_group *g = &r->groups[c->group];
    switch (c->kind) {
    case REPORT_CHART_ACCURACY:
        return report_svg_group(g, out, e);
    case REPORT_CHART_COST:
        return report_svg_cost(g, out, e);
    case REPORT_CHART_TRAINING:
        return report_svg_training(g, out, e);
    case REPORT_CHART_SWEEP:
        if (c->sweep >= g->n_sweeps)
            return err_set(e, PWB_EINVAL, "report: no sweep %zu", c->sweep);
        return report_svg_sweep(g, &g->sweeps[c->sweep], out, e);
    case REPORT_CHART_VOLUME:
        return report_svg_volume(g, out, e);
    case REPORT_CHART_BUDGET:
        return report_svg_budget(g, out, e);
    case REPORT_CHART_MODELS:
        return report_svg_models(r, c->group, out, e);
    default:
        return err_set(e, PWB_EINVAL, "report: unknown chart kind %d", c->kind);
    }
}
