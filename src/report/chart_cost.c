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
#define LABEL_GAP 8.0 /* px kept free between two labels on one line */
#define HALO "stroke=\"#ffffff\" stroke-width=\"3\" paint-order=\"stroke\""

typedef struct box {
    double x0, y0, x1, y1;
} box;

typedef struct label {
    size_t row;
    double x, y;   /* the point */
    double lx, ly; /* the text's anchor and baseline */
    double tw;
    int right;     /* text to the right of the point */
} label;

/* By column (anchor x, side), then by the point's height. */
static int cmp_label(const void *pa, const void *pb)
{
    const label *a = pa, *b = pb;
    if (a->lx != b->lx)
        return (a->lx > b->lx) - (a->lx < b->lx);
    if (a->right != b->right)
        return a->right - b->right;
    return (a->y > b->y) - (a->y < b->y);
}

static int overlaps(const box *a, const box *b)
{
    return a->x0 < b->x1 + LABEL_GAP && b->x0 < a->x1 + LABEL_GAP && a->y0 < b->y1 && b->y0 < a->y1;
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
              "95% Wilson intervals \xc2\xb7 blue: hard prompts \xc2\xb7 orange: soft prompts (inference only)");
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
    size_t n = 0;
    for (size_t i = 0; i < g->n_rows; i++)
        n += usable(&g->rows[i], ax.log);
    box *placed = calloc(3 * n + 2, sizeof *placed);
    double *px = calloc(3 * (g->n_rows + 1), sizeof *px), *lx_right = px ? px + g->n_rows + 1 : NULL,
           *lx_left = px ? lx_right + g->n_rows + 1 : NULL;
    size_t np = 0;
    if (!placed || !px)
        s.err = 1;
    if (base && base->n > 0) {
        double y = map_y(alo, ahi, base->accuracy);
        svg_line(&s, X0, y, X1, y, "#888888", 1.2, "5 4");
        snprintf(lab, sizeof lab, "majority class %.1f%%", 100 * base->accuracy);
        if (placed)
            placed[np++] = (box){X1 - 4 - svg_text_width(lab, SVG_FONT), y - 16, X1, y - 2};
    }
    /* Methods of the same cost (soft prompts of one model often are) are spread a few pixels
     * apart so their intervals stay readable. */
    for (size_t i = 0; i < g->n_rows && px; i++) {
        const report_row *w = &g->rows[i];
        if (!usable(w, ax.log))
            continue;
        double x = map_x(&ax, w->cost_per_example);
        size_t same = 0, before = 0;
        for (size_t k = 0; k < g->n_rows; k++)
            if (usable(&g->rows[k], ax.log) && fabs(map_x(&ax, g->rows[k].cost_per_example) - x) < 0.5) {
                same++;
                before += k < i;
            }
        double dx = ((double)before - (double)(same - 1) / 2.0) * fmin(7.0, 60.0 / (double)same);
        px[i] = fmin(fmax(x + dx, X0 + 7), X1 - 7);
        /* Labels of a cluster start right of its last point (or left of its first). */
        double half = (double)(same - 1) / 2.0 * fmin(7.0, 60.0 / (double)same);
        lx_right[i] = fmin(x + half, X1 - 7) + 9;
        lx_left[i] = fmax(x - half, X0 + 7) - 9;
    }
    /* Points first, then labels, so a label is never hidden under a later point. */
    for (size_t i = 0; i < g->n_rows && placed && px; i++) {
        const report_row *w = &g->rows[i];
        if (!usable(w, ax.log))
            continue;
        const int soft = w->has_soft_prompt || !strcmp(w->kind, "soft");
        const char *col = soft ? "#d46a00" : "#2b6cb0";
        double x = px[i], y = map_y(alo, ahi, w->accuracy);
        svg_vbar(&s, x, map_y(alo, ahi, w->ci_lo), map_y(alo, ahi, w->ci_hi), 3, col);
        buf_reset(&t);
        buf_printf(&t, "%s: %.1f%% [%.1f, %.1f] at %.4g %s", w->method, 100 * w->accuracy, 100 * w->ci_lo,
                   100 * w->ci_hi, w->cost_per_example, unit);
        svg_circle(&s, x, y, w->is_best ? 6 : 4.5, col, t.data);
    }
    if (base && base->n > 0) { /* its text over the points, under the methods' labels */
        snprintf(lab, sizeof lab, "majority class %.1f%%", 100 * base->accuracy);
        svg_text(&s, X1 - 4, map_y(alo, ahi, base->accuracy) - 5, "end", "fill=\"#666666\" " HALO, lab);
    }
    /* Labels: each cluster's labels form a column beside it, in the order of their points' heights,
     * pushed apart to one line each (with a leader line when moved); a label that still meets
     * another column's label or the baseline's is moved up or down to a free line. */
    size_t nl = 0;
    label *labs = calloc(n + 1, sizeof *labs);
    if (!labs)
        s.err = 1;
    for (size_t i = 0; i < g->n_rows && labs && px; i++) {
        const report_row *w = &g->rows[i];
        if (!usable(w, ax.log))
            continue;
        label *l = &labs[nl++];
        l->row = i;
        l->x = px[i];
        l->y = map_y(alo, ahi, w->accuracy);
        svg_fit(w->method, 240, SVG_FONT, &t);
        l->tw = svg_text_width(t.data, SVG_FONT) * (w->is_best ? 1.1 : 1.0); /* bold is wider */
        l->right = lx_right[i] + l->tw <= X1;
        l->lx = l->right ? lx_right[i] : lx_left[i];
        l->ly = l->y + 4;
    }
    if (labs)
        qsort(labs, nl, sizeof *labs, cmp_label);
    for (size_t a = 0; a < nl;) {
        size_t z = a + 1;
        while (z < nl && labs[z].lx == labs[a].lx && labs[z].right == labs[a].right)
            z++;
        for (size_t k = a + 1; k < z; k++)
            labs[k].ly = fmax(labs[k].ly, labs[k - 1].ly + LABEL_H);
        if (labs[z - 1].ly > Y1 - 3)
            labs[z - 1].ly = Y1 - 3;
        for (size_t k = z - 1; k > a; k--)
            labs[k - 1].ly = fmin(labs[k - 1].ly, labs[k].ly - LABEL_H);
        if (labs[a].ly < Y0 + 11)
            for (size_t k = a; k < z; k++)
                labs[k].ly = fmax(labs[k].ly, (k > a ? labs[k - 1].ly + LABEL_H : Y0 + 11));
        a = z;
    }
    for (size_t k = 0; k < nl; k++) {
        label *l = &labs[k];
        const report_row *w = &g->rows[l->row];
        box bx = {l->right ? l->lx : l->lx - l->tw, l->ly - 11, l->right ? l->lx + l->tw : l->lx, l->ly + 3};
        int clash = 0;
        for (size_t j = 0; j < np && !clash; j++)
            clash = overlaps(&bx, &placed[j]);
        for (int m = 1; m < 21 && clash; m++) {
            double dy = (m % 2 ? 1 : -1) * LABEL_H * ((m + 1) / 2);
            box b2 = {bx.x0, bx.y0 + dy, bx.x1, bx.y1 + dy};
            if (b2.y0 < Y0 || b2.y1 > Y1)
                continue;
            clash = 0;
            for (size_t j = 0; j < np && !clash; j++)
                clash = overlaps(&b2, &placed[j]);
            if (!clash) {
                bx = b2;
                l->ly += dy;
            }
        }
        if (placed)
            placed[np++] = bx;
        if (fabs(l->ly - 4 - l->y) > 1 || fabs(l->lx - l->x) > 10)
            svg_line(&s, l->x, l->y, l->right ? l->lx - 2 : l->lx + 2, l->ly - 4, "#999999", 1, NULL);
        svg_fit(w->method, 240, SVG_FONT, &t);
        /* A white halo keeps a label readable where it crosses another method's interval. */
        svg_text(&s, l->lx, l->ly, l->right ? "start" : "end",
                 w->is_best ? "font-weight=\"bold\" " HALO : HALO, t.data);
    }
    free(labs);
    free(placed);
    free(px);
    if (ax.log && any_zero)
        svg_text(&s, X0, H - 12, "start", "fill=\"#777777\"", "methods with zero cost are not shown on the log axis");
    buf_free(&t);
    return svg_finish(&s, e);
}
