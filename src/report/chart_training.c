/* Soft-prompt training curves: the training loss (raw steps faint, a moving average solid) above
 * the held-out accuracy of the evaluations, against the optimizer step, one colour per prompt. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/svg.h"
#include "report/svg_draw.h"

#define W 760.0
#define X0 70.0
#define X1 736.0
#define LOSS_Y0 64.0
#define LOSS_Y1 244.0
#define ACC_Y0 276.0
#define ACC_Y1 426.0
#define MAX_POINTS 600 /* per polyline: more would not show, only weigh */

static double map(double lo, double hi, double v, double p0, double p1)
{
    double f = hi > lo ? (v - lo) / (hi - lo) : 0.5;
    return p0 + fmin(fmax(f, 0), 1) * (p1 - p0);
}

static void y_axis(svg *s, double lo, double hi, const double *t, int nt, double y0, double y1, int percent,
                   const char *title)
{
    char lab[48];
    double step = nt > 1 ? t[1] - t[0] : 1;
    for (int i = 0; i < nt; i++) {
        double y = map(lo, hi, t[i], y1, y0);
        svg_line(s, X0, y, X1, y, i ? "#e8e8e8" : "#999999", 1, NULL);
        svg_tick_label(percent ? 100 * t[i] : t[i], percent ? 100 * step : step, lab, sizeof lab);
        if (percent) {
            size_t l = strlen(lab);
            snprintf(lab + l, sizeof lab - l, "%%");
        }
        svg_text(s, X0 - 6, y + 4, "end", "fill=\"#555555\"", lab);
    }
    char tr[64];
    double mid = (y0 + y1) / 2;
    snprintf(tr, sizeof tr, "transform=\"rotate(-90 14 %.1f)\"", mid);
    svg_text(s, 14, mid, "middle", tr, title);
}

int report_svg_training(const report_group *g, pwb_buf *b, pwb_err *e)
{
    size_t ns = 0;
    const char **names = calloc(g->n_rows + 1, sizeof *names);
    const report_row **rows = calloc(g->n_rows + 1, sizeof *rows);
    double *px = malloc(2 * MAX_POINTS * sizeof *px), *py = px ? px + MAX_POINTS : NULL;
    if (!names || !rows || !px) {
        free(names);
        free(rows);
        free(px);
        return err_set(e, PWB_ENOMEM, "svg: out of memory");
    }
    double smax = 1, llo = INFINITY, lhi = -INFINITY, alo = INFINITY, ahi = -INFINITY;
    for (size_t i = 0; i < g->n_rows; i++) {
        const report_row *w = &g->rows[i];
        if (!w->n_train_steps && !w->n_train_evals)
            continue;
        rows[ns] = w;
        names[ns++] = w->method;
        for (size_t k = 0; k < w->n_train_steps; k++) {
            const db_train_step_info *p = &w->train_steps[k];
            smax = fmax(smax, (double)p->step);
            if (isfinite(p->loss)) {
                llo = fmin(llo, p->loss);
                lhi = fmax(lhi, p->loss);
            }
        }
        for (size_t k = 0; k < w->n_train_evals; k++) {
            const db_train_eval_info *p = &w->train_evals[k];
            smax = fmax(smax, (double)p->step);
            if (isfinite(p->accuracy)) {
                alo = fmin(alo, p->accuracy);
                ahi = fmax(ahi, p->accuracy);
            }
        }
    }
    int have_loss = isfinite(llo), have_acc = isfinite(alo);
    if (!have_loss) {
        llo = 0;
        lhi = 1;
    }
    if (!have_acc) {
        alo = 0;
        ahi = 1;
    }
    llo = fmax(0, llo);
    alo = fmax(0, alo - 0.02);
    ahi = fmin(1, ahi + 0.02);
    double xt[16], lt[16], at[16], xlo = 0, xhi = smax;
    int nxt = svg_ticks(&xlo, &xhi, 9, xt), nlt = svg_ticks(&llo, &lhi, 6, lt), nat = svg_ticks(&alo, &ahi, 5, at);
    int legend_rows = svg_legend_rows(names, ns, X1 - X0);
    double H = ACC_Y1 + 50 + legend_rows * SVG_LEGEND_ROW + 8;

    pwb_buf t;
    buf_init(&t);
    buf_printf(&t, "%s \xc2\xb7 %s: soft prompt training", g->dataset, g->model);
    svg s;
    svg_begin(&s, b, W, H, t.data, "training loss (faint: every step, solid: moving average) and held-out accuracy");
    y_axis(&s, llo, lhi, lt, nlt, LOSS_Y0, LOSS_Y1, 0, "loss");
    y_axis(&s, alo, ahi, at, nat, ACC_Y0, ACC_Y1, 1, "held-out acc.");
    char lab[48];
    for (int i = 0; i < nxt; i++) {
        double x = map(xlo, xhi, xt[i], X0, X1);
        svg_line(&s, x, LOSS_Y0, x, LOSS_Y1, "#f0f0f0", 1, NULL);
        svg_line(&s, x, ACC_Y0, x, ACC_Y1, "#f0f0f0", 1, NULL);
        svg_tick_label(xt[i], nxt > 1 ? xt[1] - xt[0] : 1, lab, sizeof lab);
        svg_text(&s, x, ACC_Y1 + 16, "middle", "fill=\"#555555\"", lab);
    }
    svg_text(&s, (X0 + X1) / 2, ACC_Y1 + 34, "middle", NULL, "optimizer step");
    if (!have_loss)
        svg_text(&s, (X0 + X1) / 2, (LOSS_Y0 + LOSS_Y1) / 2, "middle", "fill=\"#777777\"", "no training steps recorded");
    if (!have_acc)
        svg_text(&s, (X0 + X1) / 2, (ACC_Y0 + ACC_Y1) / 2, "middle", "fill=\"#777777\"", "no evaluations recorded");
    for (size_t si = 0; si < ns; si++) {
        const report_row *w = rows[si];
        const char *col = svg_color(si), *dash = svg_dash(si);
        size_t n = w->n_train_steps;
        size_t stride = n > MAX_POINTS ? (n + MAX_POINTS - 1) / MAX_POINTS : 1;
        /* Raw loss, thinned to MAX_POINTS. */
        size_t m = 0;
        for (size_t k = 0; k < n && m < MAX_POINTS; k += stride) {
            if (!isfinite(w->train_steps[k].loss))
                continue;
            px[m] = map(xlo, xhi, (double)w->train_steps[k].step, X0, X1);
            py[m++] = map(llo, lhi, w->train_steps[k].loss, LOSS_Y1, LOSS_Y0);
        }
        if (n > 3)
            svg_polyline(&s, px, py, m, col, 1, 0.3, NULL);
        /* Trailing moving average over about a twentieth of the run. */
        size_t win = n / 20 > 1 ? n / 20 : 1;
        double sum = 0;
        size_t cnt = 0, lo = 0;
        m = 0;
        for (size_t k = 0; k < n; k++) {
            if (isfinite(w->train_steps[k].loss)) {
                sum += w->train_steps[k].loss;
                cnt++;
            }
            while (k - lo + 1 > win) {
                if (isfinite(w->train_steps[lo].loss)) {
                    sum -= w->train_steps[lo].loss;
                    cnt--;
                }
                lo++;
            }
            if (cnt && (k % stride == 0 || k + 1 == n) && m < MAX_POINTS) {
                px[m] = map(xlo, xhi, (double)w->train_steps[k].step, X0, X1);
                py[m++] = map(llo, lhi, sum / (double)cnt, LOSS_Y1, LOSS_Y0);
            }
        }
        svg_polyline(&s, px, py, m, col, 2, 1, dash);
        /* Held-out accuracy: a line through the evaluations, a dot on each. */
        n = w->n_train_evals;
        stride = n > MAX_POINTS ? (n + MAX_POINTS - 1) / MAX_POINTS : 1;
        m = 0;
        for (size_t k = 0; k < n && m < MAX_POINTS; k += stride) {
            if (!isfinite(w->train_evals[k].accuracy))
                continue;
            px[m] = map(xlo, xhi, (double)w->train_evals[k].step, X0, X1);
            py[m++] = map(alo, ahi, w->train_evals[k].accuracy, ACC_Y1, ACC_Y0);
        }
        svg_polyline(&s, px, py, m, col, 2, 1, dash);
        for (size_t k = 0; k < m && m <= 60; k++) {
            buf_reset(&t);
            buf_printf(&t, "%s", w->method);
            svg_circle(&s, px[k], py[k], 3, col, t.data);
        }
    }
    svg_legend(&s, names, ns, X0, ACC_Y1 + 46, X1 - X0);
    free(names);
    free(rows);
    free(px);
    buf_free(&t);
    return svg_finish(&s, e);
}
