/* A sweep: accuracy (with its Wilson interval) against the sweep's x axis, one line per value of
 * the other axes. The x values are spaced evenly in their numeric order (1, 5, 20, 50 tokens read
 * better as steps than on a linear axis); the best point gets a ring, the baseline a dashed line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/report_internal.h"
#include "report/svg.h"
#include "report/svg_draw.h"
#include "util/str.h"

#define W 760.0
#define X0 70.0
#define X1 736.0
#define Y0 60.0
#define Y1 356.0

static double map_y(double lo, double hi, double v)
{
    double f = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    return Y1 - fmin(fmax(f, 0), 1) * (Y1 - Y0);
}

static const char *val(const report_row *w, int a)
{
    return a < w->n_sweep_values && w->sweep_values[a] ? w->sweep_values[a] : "\xe2\x80\x94";
}

/* The series label of a row: "a=1, b=x" over every axis but the x axis. */
static void series_label(const report_sweep *sw, const report_row *w, pwb_buf *out)
{
    buf_reset(out);
    for (int a = 0; a < sw->n_axes; a++) {
        if (a == sw->x_axis)
            continue;
        buf_printf(out, "%s%s=%s", out->len ? ", " : "", sw->axes[a], val(w, a));
    }
    if (!out->len)
        buf_puts(out, sw->name);
}

typedef struct xcat {
    const char *text;
    double num;
} xcat;

static int cmp_xcat(const void *a, const void *b)
{
    const xcat *x = a, *y = b;
    return (x->num > y->num) - (x->num < y->num);
}

int report_svg_sweep(const report_group *g, const report_sweep *sw, pwb_buf *b, pwb_err *e)
{
    size_t n = sw->n_rows;
    xcat *xs = calloc(n + 1, sizeof *xs);
    char **series = calloc(n + 1, sizeof *series);
    size_t *row_x = calloc(n + 1, sizeof *row_x), *row_s = calloc(n + 1, sizeof *row_s);
    double *px = calloc(n + 1, sizeof *px), *py = calloc(n + 1, sizeof *py);
    pwb_buf t;
    buf_init(&t);
    size_t nx = 0, ns = 0;
    int rc = PWB_OK, numeric = 1;
    if (!xs || !series || !row_x || !row_s || !px || !py) {
        rc = err_set(e, PWB_ENOMEM, "svg: out of memory");
        goto out;
    }
    /* The x categories (distinct values) and the series (distinct labels), in first-seen order. */
    for (size_t k = 0; k < n; k++) {
        const report_row *w = &g->rows[sw->rows[k]];
        const char *v = val(w, sw->x_axis);
        size_t i = 0;
        while (i < nx && strcmp(xs[i].text, v) != 0)
            i++;
        if (i == nx) {
            xs[nx].text = v;
            if (str_to_double(v, &xs[nx].num))
                numeric = 0;
            nx++;
        }
        series_label(sw, w, &t);
        size_t j = 0;
        while (j < ns && strcmp(series[j], t.data) != 0)
            j++;
        if (j == ns && !(series[ns++] = str_dup(t.data))) {
            rc = err_set(e, PWB_ENOMEM, "svg: out of memory");
            goto out;
        }
    }
    if (numeric)
        qsort(xs, nx, sizeof *xs, cmp_xcat);
    for (size_t k = 0; k < n; k++) {
        const report_row *w = &g->rows[sw->rows[k]];
        const char *v = val(w, sw->x_axis);
        for (size_t i = 0; i < nx; i++)
            if (!strcmp(xs[i].text, v))
                row_x[k] = i;
        series_label(sw, w, &t);
        for (size_t j = 0; j < ns; j++)
            if (!strcmp(series[j], t.data))
                row_s[k] = j;
    }
    double lo = 1, hi = 0;
    for (size_t k = 0; k < n; k++) {
        const report_row *w = &g->rows[sw->rows[k]];
        if (w->n > 0) {
            lo = fmin(lo, w->ci_lo);
            hi = fmax(hi, w->ci_hi);
        }
    }
    const report_row *base = g->baseline >= 0 ? &g->rows[g->baseline] : NULL;
    double yt[16];
    int nyt = report_acc_axis(g, lo, hi, &lo, &hi, yt);
    double ystep = nyt > 1 ? yt[1] - yt[0] : 0.1;
    int legend_rows = svg_legend_rows((const char *const *)series, ns, X1 - X0);
    double H = Y1 + 56 + legend_rows * SVG_LEGEND_ROW + 8;

    pwb_buf title;
    buf_init(&title);
    buf_printf(&title, "%s \xc2\xb7 %s: sweep %s, accuracy by %s", g->dataset, g->model, sw->name,
               sw->n_axes ? sw->axes[sw->x_axis] : "point");
    svg s;
    svg_begin(&s, b, W, H, title.data, "accuracy with 95% Wilson interval; ringed: the sweep's best point");
    buf_free(&title);
    char lab[48];
    for (int i = 0; i < nyt; i++) {
        if (yt[i] < -1e-9 || yt[i] > 1 + 1e-9)
            continue;
        double y = map_y(lo, hi, yt[i]);
        svg_line(&s, X0, y, X1, y, i ? "#e8e8e8" : "#999999", 1, NULL);
        svg_tick_label(100 * yt[i], 100 * ystep, lab, sizeof lab);
        size_t l = strlen(lab);
        snprintf(lab + l, sizeof lab - l, "%%");
        svg_text(&s, X0 - 6, y + 4, "end", "fill=\"#555555\"", lab);
    }
    svg_text(&s, 14, (Y0 + Y1) / 2, "middle", "transform=\"rotate(-90 14 208)\"", "accuracy");
    /* Categories sit in the middle of equal slots; series are nudged apart within a slot so their
     * intervals do not hide each other. */
    double slot = (X1 - X0) / (double)(nx ? nx : 1);
    double nudge = ns > 1 ? fmin(8, slot * 0.5 / (double)ns) : 0;
    for (size_t i = 0; i < nx; i++) {
        double x = X0 + slot * ((double)i + 0.5);
        svg_line(&s, x, Y0, x, Y1, "#f0f0f0", 1, NULL);
        svg_fit(xs[i].text, slot - 4, SVG_FONT, &t);
        svg_text(&s, x, Y1 + 16, "middle", "fill=\"#555555\"", t.data);
    }
    svg_text(&s, (X0 + X1) / 2, Y1 + 36, "middle", NULL, sw->n_axes ? sw->axes[sw->x_axis] : sw->name);
    if (base && base->n > 0) {
        double y = map_y(lo, hi, base->accuracy);
        svg_line(&s, X0, y, X1, y, "#888888", 1.2, "5 4");
        snprintf(lab, sizeof lab, "majority class %.1f%%", 100 * base->accuracy);
        svg_text(&s, X1 - 4, y - 5, "end", "fill=\"#666666\" stroke=\"#ffffff\" stroke-width=\"3\" paint-order=\"stroke\"", lab);
    }
    for (size_t j = 0; j < ns; j++) {
        const char *col = svg_color(j);
        double dx = ((double)j - (double)(ns - 1) / 2.0) * nudge;
        size_t m = 0;
        /* In x order: a line through the points of this series. */
        for (size_t i = 0; i < nx; i++)
            for (size_t k = 0; k < n; k++) {
                const report_row *w = &g->rows[sw->rows[k]];
                if (row_s[k] != j || row_x[k] != i || w->n <= 0 || isnan(w->accuracy))
                    continue;
                px[m] = X0 + slot * ((double)i + 0.5) + dx;
                py[m++] = map_y(lo, hi, w->accuracy);
                svg_vbar(&s, px[m - 1], map_y(lo, hi, w->ci_lo), map_y(lo, hi, w->ci_hi), 3, col);
            }
        svg_polyline(&s, px, py, m, col, 2, 1, svg_dash(j));
    }
    for (size_t k = 0; k < n; k++) {
        const report_row *w = &g->rows[sw->rows[k]];
        if (w->n <= 0 || isnan(w->accuracy))
            continue;
        double x = X0 + slot * ((double)row_x[k] + 0.5) + ((double)row_s[k] - (double)(ns - 1) / 2.0) * nudge;
        double y = map_y(lo, hi, w->accuracy);
        buf_reset(&t);
        buf_printf(&t, "%s: %.1f%% [%.1f, %.1f], n=%ld", w->method, 100 * w->accuracy, 100 * w->ci_lo,
                   100 * w->ci_hi, w->n);
        if (w->is_sweep_best)
            svg_circle(&s, x, y, 7.5, "#222222", NULL);
        svg_circle(&s, x, y, 4.5, svg_color(row_s[k]), t.data);
    }
    svg_legend(&s, (const char *const *)series, ns, X0, Y1 + 50, X1 - X0);
    rc = svg_finish(&s, e);
out:
    for (size_t j = 0; series && j < ns; j++)
        free(series[j]);
    free(series);
    free(xs);
    free(row_x);
    free(row_s);
    free(px);
    free(py);
    buf_free(&t);
    return rc;
}
