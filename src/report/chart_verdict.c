/* The verdict's charts:
 *   volume - total CPU cost (one-time + per example x V) against inferences served, log-log, one
 *            line per method, the verdict's break-even volume marked;
 *   budget - accuracy (with interval) against labelled examples used, one line per arm (the best
 *            engineered prompt within each budget; each tuned kind), the crossing N* marked;
 *   models - each arm's best accuracy per model on one dataset, bars with intervals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/report_internal.h"
#include "report/svg.h"
#include "report/svg_draw.h"

#define W 760.0
#define X0 78.0
#define X1 600.0
#define Y0 60.0
#define Y1 380.0
#define LEG_X 612.0

static void title(pwb_buf *t, const report_group *g, const char *what)
{
    buf_reset(t);
    buf_puts(t, g->dataset);
    if (g->split && *g->split)
        buf_printf(t, " (%s)", g->split);
    buf_printf(t, " \xc2\xb7 %s: %s", g->model, what);
}

int report_acc_axis(const report_group *g, double lo, double hi, double *ylo, double *yhi, double yt[16])
{
    const report_row *base = g->baseline >= 0 ? &g->rows[g->baseline] : NULL;
    if (base && base->n > 0) {
        lo = fmin(lo, base->accuracy);
        hi = fmax(hi, base->accuracy);
    }
    if (lo > hi) {
        lo = 0;
        hi = 1;
    }
    *ylo = fmax(0, lo - 0.02);
    *yhi = fmin(1, hi + 0.02);
    return svg_ticks(ylo, yhi, 7, yt);
}

static double lmap(double v, double lo, double hi, double p0, double p1)
{
    double f = (log10(v) - log10(lo)) / (log10(hi) - log10(lo));
    return p0 + fmin(fmax(f, 0), 1) * (p1 - p0);
}

static int drawable_cost(const report_row *w)
{
    return !w->is_baseline && w->n > 0 && isfinite(w->cpu_per_example) && w->cpu_per_example > 0 &&
           isfinite(w->fixed_cpu_s) && w->fixed_cpu_s >= 0;
}

int report_group_has_volume(const report_group *g)
{
    int fixed = 0, n = 0;
    for (size_t i = 0; i < g->n_rows; i++)
        if (drawable_cost(&g->rows[i])) {
            n++;
            fixed |= g->rows[i].fixed_cpu_s > 0;
        }
    return fixed && n >= 2;
}

/* Up to 10 lines: the verdict's two methods, then tuned methods, then engineered ones. */
static size_t pick_lines(const report_group *g, size_t *idx)
{
    size_t n = 0;
    long first[2] = {g->verdict.engineered, g->verdict.tuned};
    for (int k = 0; k < 2; k++)
        if (first[k] >= 0 && drawable_cost(&g->rows[first[k]]))
            idx[n++] = (size_t)first[k];
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < g->n_rows && n < 10; i++) {
            const report_row *w = &g->rows[i];
            int want = pass == 0 ? w->arm == REPORT_ARM_TUNED : w->arm == REPORT_ARM_ENGINEERED;
            int have = 0;
            for (size_t k = 0; k < n; k++)
                have |= idx[k] == i;
            if (want && !have && drawable_cost(w))
                idx[n++] = i;
        }
    return n;
}

int report_svg_volume(const report_group *g, pwb_buf *b, pwb_err *e)
{
    size_t idx[10];
    size_t n = pick_lines(g, idx);
    double vmax = 1e6;
    if (isfinite(g->verdict.v_flip) && g->verdict.v_flip * 10 > vmax)
        vmax = fmin(g->verdict.v_flip * 10, 1e12);
    double ylo = INFINITY, yhi = 0;
    for (size_t k = 0; k < n; k++) {
        const report_row *w = &g->rows[idx[k]];
        ylo = fmin(ylo, w->fixed_cpu_s + w->cpu_per_example);
        yhi = fmax(yhi, w->fixed_cpu_s + w->cpu_per_example * vmax);
    }
    if (!(ylo > 0) || !(yhi > ylo)) {
        ylo = 0.01;
        yhi = 1e6;
    }
    double xlo = 1, xhi = vmax, xt[16], yt[16];
    int nxt = svg_log_ticks(&xlo, &xhi, xt), nyt = svg_log_ticks(&ylo, &yhi, yt);
    pwb_buf t;
    buf_init(&t);
    title(&t, g, "total cost against inferences served");
    const char *names[10];
    for (size_t k = 0; k < n; k++)
        names[k] = g->rows[idx[k]].method;
    const double xr = W - 24; /* the plot spans the width; the legend goes below it */
    int lrows = svg_legend_rows(names, n, xr - X0);
    svg s;
    svg_begin(&s, b, W, Y1 + 70 + lrows * SVG_LEGEND_ROW, t.data,
              "total = one-time CPU-s + CPU-s per example \xc3\x97 inferences \xc2\xb7 "
              "log scales \xc2\xb7 thick: tuned, thin: engineered");
    char lab[64];
    for (int i = 0; i < nyt; i++) {
        double y = lmap(yt[i], ylo, yhi, Y1, Y0);
        svg_line(&s, X0, y, xr, y, i ? "#e8e8e8" : "#999999", 1, NULL);
        svg_tick_label(yt[i], yt[i], lab, sizeof lab);
        svg_text(&s, X0 - 6, y + 4, "end", "fill=\"#555555\"", lab);
    }
    for (int i = 0; i < nxt; i++) {
        double x = lmap(xt[i], xlo, xhi, X0, xr);
        svg_line(&s, x, Y0, x, Y1, i ? "#e8e8e8" : "#999999", 1, NULL);
        svg_tick_label(xt[i], xt[i], lab, sizeof lab);
        svg_text(&s, x, Y1 + 16, "middle", "fill=\"#555555\"", lab);
    }
    svg_text(&s, (X0 + xr) / 2, Y1 + 36, "middle", NULL, "inferences served");
    svg_text(&s, 14, (Y0 + Y1) / 2, "middle", "transform=\"rotate(-90 14 220)\"", "total CPU seconds");
    for (size_t k = 0; k < n; k++) {
        const report_row *w = &g->rows[idx[k]];
        double px[61], py[61];
        for (int i = 0; i <= 60; i++) {
            double v = pow(10, log10(xlo) + (log10(xhi) - log10(xlo)) * i / 60.0);
            px[i] = lmap(v, xlo, xhi, X0, xr);
            py[i] = lmap(w->fixed_cpu_s + w->cpu_per_example * v, ylo, yhi, Y1, Y0);
        }
        svg_polyline(&s, px, py, 61, svg_color(k), w->arm == REPORT_ARM_TUNED ? 3 : 1.5, 1, svg_dash(k));
    }
    if (isfinite(g->verdict.v_flip) && g->verdict.v_flip >= xlo && g->verdict.v_flip <= xhi) {
        double x = lmap(g->verdict.v_flip, xlo, xhi, X0, xr);
        svg_line(&s, x, Y0, x, Y1, "#333333", 1.2, "3 3");
        snprintf(lab, sizeof lab, "V = %.0f", g->verdict.v_flip);
        svg_text(&s, x + 4, Y0 + 12, "start", "fill=\"#333333\"", lab);
    }
    svg_legend(&s, names, n, X0, Y1 + 48, xr - X0);
    buf_free(&t);
    return svg_finish(&s, e);
}

/* x position of a labelled-example count on a log(1 + n) axis. */
static double bx(double n, double hi)
{
    return X0 + log10(1 + fmax(n, 0)) / log10(1 + hi) * (X1 - X0);
}

static double ymap(double v, double lo, double hi)
{
    return Y1 - fmin(fmax((v - lo) / (hi - lo), 0), 1) * (Y1 - Y0);
}

int report_group_has_budget(const report_group *g)
{
    int eng = 0, tun = 0;
    for (size_t i = 0; i < g->n_rows; i++) {
        const report_row *w = &g->rows[i];
        if (w->n <= 0 || w->labelled < 0)
            continue;
        eng |= w->arm == REPORT_ARM_ENGINEERED;
        tun |= w->arm == REPORT_ARM_TUNED;
    }
    return eng && tun;
}

/* The series of the budget chart: 0 the engineered envelope, then one per tuned kind. */
static int series_of(const report_group *g, const report_row *w, const char **kinds, int *nk)
{
    if (w->arm == REPORT_ARM_ENGINEERED)
        return 0;
    const char *k = w->has_soft_prompt ? "soft" : w->kind;
    for (int i = 1; i < *nk; i++)
        if (!strcmp(kinds[i], k))
            return i;
    if (*nk >= 8)
        return *nk - 1;
    kinds[*nk] = k;
    return (*nk)++;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int report_svg_budget(const report_group *g, pwb_buf *b, pwb_err *e)
{
    double hi = 10, top = 0, alo = 1, ahi = 0;
    for (size_t i = 0; i < g->n_rows; i++) {
        const report_row *w = &g->rows[i];
        if (w->n <= 0 || w->labelled < 0 || w->is_baseline)
            continue;
        hi = fmax(hi, (double)w->labelled);
        top = fmax(top, (double)w->labelled);
        alo = fmin(alo, w->ci_lo);
        ahi = fmax(ahi, w->ci_hi);
    }
    const report_row *base = g->baseline >= 0 ? &g->rows[g->baseline] : NULL;
    double yt[16];
    int nyt = report_acc_axis(g, alo, ahi, &alo, &ahi, yt);
    alo = fmax(alo, 0);
    ahi = fmin(ahi, 1);
    hi = pow(10, ceil(log10(hi + 1)));
    pwb_buf t;
    buf_init(&t);
    title(&t, g, "accuracy against labelled examples used");
    svg s;
    svg_begin(&s, b, W, Y1 + 62, t.data, "95% Wilson intervals \xc2\xb7 engineered: the best prompt using at most that "
                                         "many examples \xc2\xb7 x: log(1 + n)");
    char lab[64];
    for (int i = 0; i < nyt; i++) {
        if (yt[i] < -1e-9 || yt[i] > 1 + 1e-9)
            continue;
        double y = ymap(yt[i], alo, ahi);
        svg_line(&s, X0, y, X1, y, i ? "#e8e8e8" : "#999999", 1, NULL);
        snprintf(lab, sizeof lab, "%.0f%%", 100 * yt[i]);
        svg_text(&s, X0 - 6, y + 4, "end", "fill=\"#555555\"", lab);
    }
    for (double v = 1; v <= hi; v *= 10) {
        double x = bx(v == 1 ? 0 : v, hi);
        svg_line(&s, x, Y0, x, Y1, v == 1 ? "#999999" : "#e8e8e8", 1, NULL);
        snprintf(lab, sizeof lab, "%.0f", v == 1 ? 0 : v);
        svg_text(&s, x, Y1 + 16, "middle", "fill=\"#555555\"", lab);
        if (v == 1) { /* 1 gets its own tick beside 0 */
            x = bx(1, hi);
            svg_line(&s, x, Y0, x, Y1, "#e8e8e8", 1, NULL);
            svg_text(&s, x, Y1 + 16, "middle", "fill=\"#555555\"", "1");
        }
    }
    svg_text(&s, (X0 + X1) / 2, Y1 + 36, "middle", NULL, "labelled examples used");
    svg_text(&s, 14, (Y0 + Y1) / 2, "middle", "transform=\"rotate(-90 14 220)\"", "accuracy");
    if (base && base->n > 0) {
        double y = ymap(base->accuracy, alo, ahi);
        svg_line(&s, X0, y, X1, y, "#888888", 1.2, "5 4");
        snprintf(lab, sizeof lab, "majority class %.1f%%", 100 * base->accuracy);
        svg_text(&s, X1 - 4, y - 5, "end", "fill=\"#666666\"", lab);
    }
    const char *kinds[8] = {"engineered (best within budget)"};
    int nk = 1;
    size_t nr = g->n_rows;
    double *xs = calloc(nr + 1, sizeof *xs), *px = calloc(nr + 1, sizeof *px), *py = calloc(nr + 1, sizeof *py);
    if (!xs || !px || !py)
        s.err = 1;
    for (size_t i = 0; i < nr && xs; i++)
        if (!g->rows[i].is_baseline && g->rows[i].n > 0 && g->rows[i].labelled >= 0)
            series_of(g, &g->rows[i], kinds, &nk);
    for (int sr = 0; sr < nk && xs; sr++) {
        /* The series' budgets, then at each the best accuracy within it (engineered: at most it). */
        size_t nx = 0;
        for (size_t i = 0; i < nr; i++) {
            const report_row *w = &g->rows[i];
            if (!w->is_baseline && w->n > 0 && w->labelled >= 0 && series_of(g, w, kinds, &nk) == sr)
                xs[nx++] = (double)w->labelled;
        }
        qsort(xs, nx, sizeof *xs, cmp_dbl);
        size_t np = 0;
        for (size_t k = 0; k < nx; k++) {
            if (k && xs[k] == xs[k - 1])
                continue;
            long best = -1;
            for (size_t i = 0; i < nr; i++) {
                const report_row *w = &g->rows[i];
                if (w->is_baseline || w->n <= 0 || w->labelled < 0 || series_of(g, w, kinds, &nk) != sr)
                    continue;
                if (sr == 0 ? (double)w->labelled > xs[k] : (double)w->labelled != xs[k])
                    continue;
                if (best < 0 || w->accuracy > g->rows[best].accuracy)
                    best = (long)i;
            }
            if (best < 0)
                continue;
            const report_row *w = &g->rows[best];
            px[np] = bx(xs[k], hi);
            py[np] = ymap(w->accuracy, alo, ahi);
            const char *col = sr == 0 ? "#2b6cb0" : svg_color((size_t)sr);
            svg_vbar(&s, px[np], ymap(w->ci_lo, alo, ahi), ymap(w->ci_hi, alo, ahi), 3, col);
            pwb_buf tip;
            buf_init(&tip);
            buf_printf(&tip, "%s: %.1f%% [%.1f, %.1f] with %.0f labelled examples", w->method, 100 * w->accuracy,
                       100 * w->ci_lo, 100 * w->ci_hi, xs[k]);
            svg_circle(&s, px[np], py[np], 4.5, col, tip.data);
            buf_free(&tip);
            np++;
        }
        if (sr == 0 && np > 0 && px[np - 1] < bx(top, hi)) { /* the best within any larger budget stays */
            px[np] = bx(top, hi);
            py[np] = py[np - 1];
            np++;
        }
        svg_polyline(&s, px, py, np, sr == 0 ? "#2b6cb0" : svg_color((size_t)sr), 2, 1, sr == 0 ? "6 3" : NULL);
    }
    if (isfinite(g->verdict.n_star)) {
        double x = bx(g->verdict.n_star, hi);
        svg_line(&s, x, Y0, x, Y1, "#333333", 1.2, "3 3");
        snprintf(lab, sizeof lab, "N* = %.0f", g->verdict.n_star);
        svg_text(&s, x + 4, Y0 + 12, "start", "fill=\"#333333\"", lab);
    }
    /* Legend: the engineered envelope in blue, the tuned kinds in their palette colours. */
    for (int k = 0; k < nk; k++) {
        double y = Y0 + 8 + k * SVG_LEGEND_ROW;
        svg_line(&s, LEG_X, y - 4, LEG_X + 18, y - 4, k == 0 ? "#2b6cb0" : svg_color((size_t)k), 2.5,
                 k == 0 ? "6 3" : NULL);
        pwb_buf fit;
        buf_init(&fit);
        svg_fit(k == 0 ? "engineered" : kinds[k], W - LEG_X - 34, SVG_FONT, &fit);
        svg_text(&s, LEG_X + 24, y, "start", NULL, fit.data);
        buf_free(&fit);
    }
    free(xs);
    free(px);
    free(py);
    buf_free(&t);
    return svg_finish(&s, e);
}

static int same_dataset(const report_group *a, const report_group *b)
{
    return !strcmp(a->dataset, b->dataset) && !strcmp(a->split ? a->split : "", b->split ? b->split : "");
}

int report_models_first(const pwb_report *r, size_t g)
{
    size_t n = 0;
    for (size_t k = 0; k < r->n_groups; k++) {
        if (!same_dataset(&r->groups[k], &r->groups[g]))
            continue;
        if (k < g)
            return 0;
        n++;
    }
    return n >= 2;
}

int report_svg_models(const pwb_report *r, size_t gi, pwb_buf *b, pwb_err *e)
{
    const report_group *g0 = &r->groups[gi];
    size_t nm = 0;
    for (size_t k = 0; k < r->n_groups; k++)
        nm += same_dataset(&r->groups[k], g0);
    const double group_w = (X1 + 120 - X0) / (double)(nm ? nm : 1), bar_w = fmin(40, group_w / 4);
    pwb_buf t;
    buf_init(&t);
    buf_puts(&t, g0->dataset);
    if (g0->split && *g0->split)
        buf_printf(&t, " (%s)", g0->split);
    buf_puts(&t, ": each arm's best accuracy by model");
    svg s;
    svg_begin(&s, b, W, Y1 + 62, t.data, "95% Wilson intervals \xc2\xb7 blue: best engineered \xc2\xb7 orange: best tuned "
                                         "\xc2\xb7 grey: majority class");
    char lab[64];
    for (int k = 0; k <= 5; k++) {
        double y = ymap(k / 5.0, 0, 1);
        svg_line(&s, X0, y, X1 + 120, y, k ? "#e8e8e8" : "#999999", 1, NULL);
        snprintf(lab, sizeof lab, "%d%%", k * 20);
        svg_text(&s, X0 - 6, y + 4, "end", "fill=\"#555555\"", lab);
    }
    size_t m = 0;
    for (size_t k = 0; k < r->n_groups; k++) {
        const report_group *g = &r->groups[k];
        if (!same_dataset(g, g0))
            continue;
        double cx = X0 + group_w * ((double)m + 0.5);
        long idx[3] = {g->verdict.engineered, g->verdict.tuned, g->baseline};
        const char *col[3] = {"#2b6cb0", "#d46a00", "#c0c0c0"};
        for (int a = 0; a < 3; a++) {
            if (idx[a] < 0 || g->rows[idx[a]].n <= 0)
                continue;
            const report_row *w = &g->rows[idx[a]];
            double x = cx + (a - 1.5) * bar_w + 1, y = ymap(w->accuracy, 0, 1);
            buf_reset(&t);
            buf_printf(&t, "%s on %s: %.1f%% [%.1f, %.1f]", w->is_baseline ? "majority class" : w->method, g->model,
                       100 * w->accuracy, 100 * w->ci_lo, 100 * w->ci_hi);
            svg_rect(&s, x, y, bar_w - 2, Y1 - y, col[a], t.data);
            svg_vbar(&s, x + bar_w / 2 - 1, ymap(w->ci_lo, 0, 1), ymap(w->ci_hi, 0, 1), 4, "#222222");
        }
        buf_reset(&t);
        svg_fit(g->model, group_w - 6, SVG_FONT, &t);
        svg_text(&s, cx, Y1 + 16, "middle", NULL, t.data);
        m++;
    }
    svg_text(&s, (X0 + X1) / 2, Y1 + 40, "middle", NULL, "model");
    buf_free(&t);
    return svg_finish(&s, e);
}
