#include "report/svg_draw.h"

#include "report/report_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/utf8.h"

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 when invalid. Overlongs,
 * surrogates and code points past U+10FFFF are invalid, as are U+FFFE and U+FFFF (not XML). */
size_t report_utf8_seq(const unsigned char *p, size_t n)
{
    size_t len = utf8_len(p, n);
    uint32_t cp = len == 3 ? utf8_cp(p, len) : 0;
    return cp == 0xfffe || cp == 0xffff ? 0 : len;
}

int svg_esc(pwb_buf *b, const char *text)
{
    if (!text)
        return 0;
    const unsigned char *p = (const unsigned char *)text;
    size_t n = strlen(text);
    while (n > 0) {
        int r;
        size_t len = report_utf8_seq(p, n);
        if (len == 0) {
            r = buf_putc(b, '?');
            len = 1;
        } else if (len > 1) {
            r = buf_append(b, p, len);
        } else {
            switch (*p) {
            case '&': r = buf_puts(b, "&amp;"); break;
            case '<': r = buf_puts(b, "&lt;"); break;
            case '>': r = buf_puts(b, "&gt;"); break;
            case '"': r = buf_puts(b, "&quot;"); break;
            case '\'': r = buf_puts(b, "&apos;"); break;
            default: r = buf_putc(b, *p < 0x20 || *p == 0x7f ? '?' : (char)*p);
            }
        }
        if (r)
            return -1;
        p += len;
        n -= len;
    }
    return 0;
}

double svg_text_width(const char *text, double font_px)
{
    size_t cps = text ? utf8_codepoints(text, strlen(text)) : 0;
    return (double)cps * SVG_CHAR_EM * font_px;
}

void svg_fit(const char *text, double max_px, double font_px, pwb_buf *out)
{
    buf_reset(out);
    if (!text)
        text = "";
    if (svg_text_width(text, font_px) <= max_px) {
        buf_puts(out, text);
        return;
    }
    /* Keep whole code points while the text plus the ellipsis fits. */
    size_t keep = (size_t)fmax(0.0, floor(max_px / (SVG_CHAR_EM * font_px)) - 1.0), cps = 0;
    const unsigned char *p = (const unsigned char *)text;
    size_t n = strlen(text), i = 0;
    while (i < n && cps < keep) {
        size_t len = report_utf8_seq(p + i, n - i);
        i += len ? len : 1;
        cps++;
    }
    buf_append(out, text, i);
    buf_puts(out, "\xe2\x80\xa6");
}

void svg_begin(svg *s, pwb_buf *b, double w, double h, const char *title, const char *subtitle)
{
    s->b = b;
    s->w = w;
    s->h = h;
    s->err = buf_printf(b,
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                        "viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" "
                        "font-size=\"%d\">\n"
                        "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#ffffff\"/>\n",
                        w, h, w, h, SVG_FONT, w, h);
    pwb_buf t;
    buf_init(&t);
    if (title) {
        svg_fit(title, w - 20, 15, &t);
        svg_text(s, 10, 22, "start", "font-size=\"15\" font-weight=\"bold\"", t.data);
    }
    if (subtitle) {
        svg_fit(subtitle, w - 20, SVG_FONT, &t);
        svg_text(s, 10, 40, "start", "fill=\"#555555\"", t.data);
    }
    buf_free(&t);
}

int svg_finish(svg *s, pwb_err *e)
{
    s->err |= buf_puts(s->b, "</svg>\n");
    if (s->err)
        return err_set(e, PWB_ENOMEM, "svg: out of memory");
    return PWB_OK;
}

void svg_text(svg *s, double x, double y, const char *anchor, const char *attrs, const char *text)
{
    /* Keep the text inside the picture: shift it by its estimated width when it would run over
     * an edge (tick labels at the ends of an axis, labels near the border). Rotated text is left
     * to its caller. */
    if (!attrs || !strstr(attrs, "transform")) {
        double fs = SVG_FONT;
        const char *f = attrs ? strstr(attrs, "font-size=\"") : NULL;
        if (f)
            fs = strtod(f + 11, NULL);
        double w = svg_text_width(text, fs);
        double left = anchor && !strcmp(anchor, "end") ? x - w : anchor && !strcmp(anchor, "middle") ? x - w / 2 : x;
        if (left + w > s->w - 2)
            x -= left + w - (s->w - 2);
        else if (left < 2 && w < s->w - 4)
            x += 2 - left;
    }
    s->err |= buf_printf(s->b, "<text x=\"%.1f\" y=\"%.1f\"", x, y);
    if (anchor && strcmp(anchor, "start") != 0)
        s->err |= buf_printf(s->b, " text-anchor=\"%s\"", anchor);
    if (attrs && *attrs)
        s->err |= buf_putc(s->b, ' ') | buf_puts(s->b, attrs);
    s->err |= buf_putc(s->b, '>') | svg_esc(s->b, text) | buf_puts(s->b, "</text>\n");
}

void svg_line(svg *s, double x1, double y1, double x2, double y2, const char *stroke, double width, const char *dash)
{
    s->err |= buf_printf(s->b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"%g\"",
                         x1, y1, x2, y2, stroke, width);
    if (dash)
        s->err |= buf_printf(s->b, " stroke-dasharray=\"%s\"", dash);
    s->err |= buf_puts(s->b, "/>\n");
}

static void close_with_title(svg *s, const char *tag, const char *title)
{
    if (!title) {
        s->err |= buf_puts(s->b, "/>\n");
        return;
    }
    s->err |= buf_puts(s->b, "><title>") | svg_esc(s->b, title) | buf_printf(s->b, "</title></%s>\n", tag);
}

void svg_rect(svg *s, double x, double y, double w, double h, const char *fill, const char *title)
{
    s->err |= buf_printf(s->b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"", x, y,
                         w < 0 ? 0 : w, h < 0 ? 0 : h, fill);
    close_with_title(s, "rect", title);
}

void svg_circle(svg *s, double cx, double cy, double r, const char *fill, const char *title)
{
    s->err |= buf_printf(s->b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" stroke=\"#ffffff\" "
                               "stroke-width=\"1\"",
                         cx, cy, r, fill);
    close_with_title(s, "circle", title);
}

void svg_polyline(svg *s, const double *x, const double *y, size_t n, const char *stroke, double width,
                  double opacity, const char *dash)
{
    if (n == 0)
        return;
    s->err |= buf_puts(s->b, "<polyline points=\"");
    for (size_t i = 0; i < n; i++)
        s->err |= buf_printf(s->b, "%s%.1f,%.1f", i ? " " : "", x[i], y[i]);
    s->err |= buf_printf(s->b, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"%g\" stroke-linejoin=\"round\"", stroke,
                         width);
    if (opacity < 1)
        s->err |= buf_printf(s->b, " stroke-opacity=\"%.2f\"", opacity);
    if (dash)
        s->err |= buf_printf(s->b, " stroke-dasharray=\"%s\"", dash);
    s->err |= buf_puts(s->b, "/>\n");
}

void svg_vbar(svg *s, double x, double y0, double y1, double cap, const char *stroke)
{
    s->err |= buf_printf(s->b,
                         "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f\" stroke=\"%s\" stroke-width=\"1.5\" "
                         "fill=\"none\"/>\n",
                         x, y0, y1, x - cap, y0, x + cap, x - cap, y1, x + cap, stroke);
}

void svg_hbar(svg *s, double x0, double x1, double y, double cap, const char *stroke)
{
    s->err |= buf_printf(s->b,
                         "<path d=\"M%.1f %.1fH%.1fM%.1f %.1fV%.1fM%.1f %.1fV%.1f\" stroke=\"%s\" stroke-width=\"1.5\" "
                         "fill=\"none\"/>\n",
                         x0, y, x1, x0, y - cap, y + cap, x1, y - cap, y + cap, stroke);
}

const char *svg_color(size_t i)
{
    static const char *const pal[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    return pal[i % 10];
}

const char *svg_dash(size_t i)
{
    static const char *const dashes[4] = {NULL, "6 3", "2 2", "8 3 2 3"};
    return dashes[(i / 10) % 4];
}

int svg_ticks(double *lo, double *hi, int max_ticks, double t[16])
{
    if (max_ticks < 2)
        max_ticks = 2;
    if (max_ticks > 16)
        max_ticks = 16;
    if (!isfinite(*lo) || !isfinite(*hi)) {
        *lo = 0;
        *hi = 1;
    }
    if (*hi < *lo) {
        double x = *lo;
        *lo = *hi;
        *hi = x;
    }
    if (*hi - *lo < 1e-12) {
        double pad = fabs(*lo) > 1e-12 ? fabs(*lo) * 0.1 : 1.0;
        *lo -= pad;
        *hi += pad;
    }
    double raw = (*hi - *lo) / (double)(max_ticks - 1), mag = pow(10, floor(log10(raw))), step = mag * 10;
    static const double mult[3] = {1, 2, 5};
    for (int i = 0; i < 3; i++)
        if (mag * mult[i] >= raw) {
            step = mag * mult[i];
            break;
        }
    double a = floor(*lo / step + 1e-9) * step, z = ceil(*hi / step - 1e-9) * step;
    int n = 0;
    for (double v = a; v <= z + step * 1e-6 && n < 16; v += step)
        t[n++] = fabs(v) < step * 1e-9 ? 0 : v;
    *lo = a;
    *hi = n ? t[n - 1] : z;
    return n;
}

int svg_log_ticks(double *lo, double *hi, double t[16])
{
    double a = floor(log10(*lo) + 1e-9), z = ceil(log10(*hi) - 1e-9);
    if (z <= a)
        z = a + 1;
    /* At most 16 decades: beyond that, widen the step so the labels stay readable. */
    int every = (int)ceil((z - a + 1) / 16.0);
    int n = 0;
    for (double k = a; k <= z && n < 16; k += every)
        t[n++] = pow(10, k);
    *lo = pow(10, a);
    *hi = pow(10, z);
    return n;
}

void svg_tick_label(double v, double step, char *out, size_t cap)
{
    /* Round away the float noise of lo + k * step first (0.30000000000000004), then print as
     * short as possible: "0.25", "20", "0.0001", "2e-05", "1e+06". */
    if (step > 0 && isfinite(step))
        v = round(v / step) * step;
    if (fabs(v) < 1e-300 || (step > 0 && fabs(v) < step * 1e-6)) {
        snprintf(out, cap, "0");
        return;
    }
    snprintf(out, cap, "%.6g", v);
}

static double legend_item_width(const char *name)
{
    return 22 + svg_text_width(name, SVG_FONT) + 14;
}

int svg_legend_rows(const char *const *names, size_t n, double width)
{
    int rows = n ? 1 : 0;
    double x = 0;
    for (size_t i = 0; i < n; i++) {
        double w = legend_item_width(names[i]);
        if (x > 0 && x + w > width) {
            rows++;
            x = 0;
        }
        x += w;
    }
    return rows;
}

void svg_legend(svg *s, const char *const *names, size_t n, double x0, double y0, double width)
{
    double x = 0, y = y0;
    pwb_buf t;
    buf_init(&t);
    for (size_t i = 0; i < n; i++) {
        double w = legend_item_width(names[i]);
        if (x > 0 && x + w > width) {
            y += SVG_LEGEND_ROW;
            x = 0;
        }
        svg_line(s, x0 + x, y + 9, x0 + x + 16, y + 9, svg_color(i), 2.5, svg_dash(i));
        svg_fit(names[i], width - 22, SVG_FONT, &t);
        svg_text(s, x0 + x + 22, y + 13, "start", NULL, t.data);
        x += w;
    }
    buf_free(&t);
}
