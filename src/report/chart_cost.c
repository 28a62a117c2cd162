/* Accuracy against cost per example: one point per method with its Wilson interval, labelled
 * beside the point (moved up or down when labels would overlap), the baseline as a dashed line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/svg.h"
#include "report/svg_draw.h"

#define W 760.0
#define H 460.0
#define X0 70.0
#define X1 736.0
#define Y0 60.0
#define Y1 384.0
#define LABEL_H 14.0

typedef struct box {
    double x0, y0, x1, y1;
} box;

static int overlaps(const box *a, const box *b)
{
    return a->x0 < b->x1 && b->x0 < a->x1 && a->y0 < b->y1 && b->y0 < a->y1;
}

typedef struct axis {
    double lo, hi;
    int log;
} axis;

static double map_x(const axis *a, double v)
{
    double f = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    return X0 + fmin(fmax(f, 0), 1) * (X1 - X0);
}

static double map_y(double lo, double hi, double v)
{
    double f = (v - lo) / (hi - lo);
    return Y1 - fmin(fmax(f, 0), 1) * (Y1 - Y0);
}

static int usable(const report_row *w, int log)
{
    return !w->is_baseline && w->n > 0 && isfinite(w->cost_per_example) && w->cost_per_example >= 0 &&
           !isnan(w->accuracy) && (!log || w->cost_per_example > 0);
}

int report_svg_cost(const report_group *g, pwb_buf *b, pwb_err *e)
{
    double cmin = INFINITY, cmax = 0, alo = 1, ahi = 0;
    int any_zero = 0;
    for (size_t i = 0; i < g->n_rows; i++) {
        const report_row *w = &g->rows[i];
        if (!usable(w, 0))
            continue;
        if (w->cost_per_example > 0)
            cmin = fmin(cmin, w->cost_per_example);
        else
            any_zero = 1;
        cmax = fmax(cmax, w->cost_per_example);
        alo = fmin(alo, w->ci_lo);
        ahi = fmax(ahi, w->ci_hi);
    }
    const report_row *base = g->baseline >= 0 ? &g->rows[g->baseline] : NULL;
    if (base && base->n > 0) {
        alo = fmin(alo, base->accuracy);
        ahi = fmax(ahi, base->accuracy);
    }
    /* Costs spanning more than 20x read better on a log axis; free methods cannot sit on one. */
    axis ax = {0, cmax > 0 ? cmax : 1, 0};
    if (isfinite(cmin) && cmax / cmin > 20) {
        ax.log = 1;
        ax.lo = cmin;
        ax.hi = cmax;
    }
    double xt[16], yt[16];
    int nxt = ax.log ? svg_log_ticks(&ax.lo, &ax.hi, xt) : svg_ticks(&ax.lo, &ax.hi, 8, xt);
    if (alo > ahi) {
        alo = 0;
        ahi = 1;
    }
    alo = fmax(0, alo - 0.02);
    ahi = fmin(1, ahi + 0.02);
    int nyt = svg_ticks(&alo, &ahi, 7, yt);
    double ystep = nyt > 1 ? yt[1] - yt[0] : 0.1;
    if (alo < 0)
        alo = 0;
    if (ahi > 1)
        ahi = 1;

    const char *unit = g->cost_unit == REPORT_COST_USD ? "USD per example" : "CPU seconds per example";
    pwb_buf t;
    buf_init(&t);
    buf_printf(&t, "%s", g->dataset);
    if (g->split && *g->split)
        buf_printf(&t, " (%s)", g->split);
    buf_printf(&t, " \xc2\xb7 %s: accuracy against cost", g->model);
    svg s;
    svg_begin(&s, b, W, H, t.data,
              "95% Wilson intervals; blue: hard prompts, orange: soft prompts (inference cost only); "
              "dashed: majority class");
    char lab[48];
    for (int i = 0; i < nyt; i++) {
        if (yt[i] < -1e-9 || yt[i] > 1 + 1e-9)
            continue;
        double y = map_y(alo, ahi, yt[i]);
        svg_line(&s, X0, y, X1, y, i ? "#e8e8e8" : "#999999", 1, NULL);
        svg_tick_label(100 * yt[i], 100 * ystep, lab, sizeof lab);
        size_t l = strlen(lab);
        snprintf(lab + l, sizeof lab - l, "%%");
        svg_text(&s, X0 - 6, y + 4, "end", "fill=\"#555555\"", lab);
    }
    for (int i = 0; i < nxt; i++) {
        double x = map_x(&ax, xt[i]);
        svg_line(&s, x, Y0, x, Y1, i ? "#e8e8e8" : "#999999", 1, NULL);
        svg_tick_label(xt[i], ax.log ? xt[i] : (nxt > 1 ? xt[1] - xt[0] : xt[i]), lab, sizeof lab);
        svg_text(&s, x, Y1 + 16, "middle", "fill=\"#555555\"", lab);
    }
    buf_reset(&t);
    buf_printf(&t, "%s%s", unit, ax.log ? " (log scale)" : "");
    svg_text(&s, (X0 + X1) / 2, Y1 + 36, "middle", NULL, t.data);
    svg_text(&s, 14, (Y0 + Y1) / 2, "middle", "transform=\"rotate(-90 14 222)\"", "accuracy");
    if (base && base->n > 0) {
        double y = map_y(alo, ahi, base->accuracy);
        svg_line(&s, X0, y, X1, y, "#888888", 1.2, "5 4");
        snprintf(lab, sizeof lab, "majority class %.1f%%", 100 * base->accuracy);
        svg_text(&s, X1 - 4, y - 5, "end", "fill=\"#666666\"", lab);
    }
    size_t n = 0;
    for (size_t i = 0; i < g->n_rows; i++)
        n += usable(&g->rows[i], ax.log);
    box *placed = calloc(2 * n + 1, sizeof *placed);
    size_t np = 0;
    if (!placed)
        s.err = 1;
    /* Points first, then labels, so a label is never hidden under a later point. */
    for (size_t i = 0; i < g->n_rows && placed; i++) {
        const report_row *w = &g->rows[i];
        if (!usable(w, ax.log))
            continue;
        const int soft = w->has_soft_prompt || !strcmp(w->kind, "soft");
        const char *col = soft ? "#d46a00" : "#2b6cb0";
        double x = map_x(&ax, w->cost_per_example), y = map_y(alo, ahi, w->accuracy);
        svg_vbar(&s, x, map_y(alo, ahi, w->ci_lo), map_y(alo, ahi, w->ci_hi), 3, col);
        buf_reset(&t);
        buf_printf(&t, "%s: %.1f%% [%.1f, %.1f] at %.4g %s", w->method, 100 * w->accuracy, 100 * w->ci_lo,
                   100 * w->ci_hi, w->cost_per_example, unit);
        svg_circle(&s, x, y, w->is_best ? 6 : 4.5, col, t.data);
        placed[np++] = (box){x - 6, y - 6, x + 6, y + 6};
    }
    for (size_t i = 0; i < g->n_rows && placed; i++) {
        const report_row *w = &g->rows[i];
        if (!usable(w, ax.log))
            continue;
        double x = map_x(&ax, w->cost_per_example), y = map_y(alo, ahi, w->accuracy);
        svg_fit(w->method, 180, SVG_FONT, &t);
        double tw = svg_text_width(t.data, SVG_FONT);
        int right = x + 9 + tw <= X1;
        double lx = right ? x + 9 : x - 9;
        box best = {0, 0, 0, 0};
        double best_dy = 0;
        int found = 0;
        for (int k = 0; k < 13 && !found; k++) {
            double dy = (k % 2 ? 1 : -1) * LABEL_H * ((k + 1) / 2);
            double by = y + 4 + dy;
            box bx = {right ? lx : lx - tw, by - 11, right ? lx + tw : lx, by + 3};
            if (bx.y0 < Y0 || bx.y1 > Y1)
                continue;
            int clash = 0;
            for (size_t j = 0; j < np && !clash; j++)
                clash = overlaps(&bx, &placed[j]);
            if (!clash) {
                best = bx;
                best_dy = dy;
                found = 1;
            }
        }
        if (!found) {
            best_dy = 0;
            best = (box){right ? lx : lx - tw, y - 7, right ? lx + tw : lx, y + 7};
        }
        if (best_dy != 0)
            svg_line(&s, x, y, right ? lx - 2 : lx + 2, y + best_dy, "#bbbbbb", 0.8, NULL);
        svg_text(&s, lx, y + 4 + best_dy, right ? "start" : "end", w->is_best ? "font-weight=\"bold\"" : NULL, t.data);
        placed[np++] = best;
    }
    free(placed);
    if (ax.log && any_zero)
        svg_text(&s, X0, H - 12, "start", "fill=\"#777777\"", "methods with zero cost are not shown on the log axis");
    buf_free(&t);
    return svg_finish(&s, e);
}
