#include "report/svg.h"

#include <math.h>

#define W 720
#define LEFT 200   /* method labels */
#define PLOT 400   /* 0..100% */
#define ROW 26
#define TOP 48

static int xml_text(pwb_buf *b, const char *s)
{
    for (; s && *s; s++) {
        int r;
        switch (*s) {
        case '&': r = buf_puts(b, "&amp;"); break;
        case '<': r = buf_puts(b, "&lt;"); break;
        case '>': r = buf_puts(b, "&gt;"); break;
        case '"': r = buf_puts(b, "&quot;"); break;
        case '\'': r = buf_puts(b, "&apos;"); break;
        default:
            /* XML 1.0 forbids most control characters even as references. */
            r = (unsigned char)*s < 0x20 ? buf_putc(b, ' ') : buf_putc(b, *s);
        }
        if (r)
            return -1;
    }
    return 0;
}

static double px(double acc)
{
    if (isnan(acc))
        acc = 0;
    if (acc < 0)
        acc = 0;
    if (acc > 1)
        acc = 1;
    return LEFT + acc * PLOT;
}

int report_svg_group(const report_group *g, pwb_buf *b, pwb_err *e)
{
    int h = TOP + (int)g->n_rows * ROW + 40;
    int r = buf_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                          "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
                          "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n"
                          "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">",
                       W, h, W, h);
    r |= xml_text(b, g->dataset);
    if (g->split && *g->split)
        r |= buf_puts(b, " (") | xml_text(b, g->split) | buf_putc(b, ')');
    r |= buf_puts(b, " \xc2\xb7 ") | xml_text(b, g->model) |
         buf_puts(b, "</text>\n<text x=\"10\" y=\"36\" fill=\"#555555\">accuracy with 95% Wilson interval</text>\n");
    int bottom = TOP + (int)g->n_rows * ROW;
    for (int t = 0; t <= 4; t++) {
        double x = px(t / 4.0);
        r |= buf_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#dddddd\"/>\n"
                           "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" fill=\"#555555\">%d%%</text>\n",
                        x, TOP - 4, x, bottom, x, bottom + 16, t * 25);
    }
    for (size_t i = 0; i < g->n_rows && !r; i++) {
        const report_row *w = &g->rows[i];
        int y = TOP + (int)i * ROW;
        const char *fill = w->is_baseline ? "#b0b0b0" : w->is_best ? "#2b6cb0" : "#90b4e0";
        r |= buf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\"%s>", LEFT - 8, y + 17,
                        w->is_best ? " font-weight=\"bold\"" : "");
        r |= w->is_baseline ? buf_puts(b, "majority class") : xml_text(b, w->method);
        r |= buf_puts(b, "</text>\n");
        if (w->n <= 0)
            continue;
        r |= buf_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"><title>", LEFT, y + 4,
                        px(w->accuracy) - LEFT, ROW - 8, fill);
        r |= xml_text(b, w->method) |
             buf_printf(b, ": %.1f%% [%.1f, %.1f], n=%ld</title></rect>\n", 100 * w->accuracy, 100 * w->ci_lo,
                        100 * w->ci_hi, w->n);
        double x0 = px(w->ci_lo), x1 = px(w->ci_hi), yc = y + ROW / 2.0;
        r |= buf_printf(b, "<path d=\"M%.1f %.1fH%.1fM%.1f %.1fV%.1fM%.1f %.1fV%.1f\" stroke=\"#222222\" "
                           "stroke-width=\"1.5\" fill=\"none\"/>\n",
                        x0, yc, x1, x0, yc - 5, yc + 5, x1, yc - 5, yc + 5);
        r |= buf_printf(b, "<text x=\"%.1f\" y=\"%d\">%.1f%%</text>\n", px(1.0) + 8, y + 17, 100 * w->accuracy);
    }
    r |= buf_puts(b, "</svg>\n");
    if (r)
        return err_set(e, PWB_ENOMEM, "svg: out of memory");
    return PWB_OK;
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

int report_svg_filename(const report_group *g, pwb_buf *out)
{
    size_t start = out->len;
    int r = safe(out, g->dataset);
    if (g->split && *g->split)
        r |= buf_putc(out, '-') | safe(out, g->split);
    r |= buf_putc(out, '-') | safe(out, g->model) | buf_puts(out, ".svg");
    /* A leading '.' would make a hidden file or "..": keep names plain. */
    if (!r && out->len > start && out->data[start] == '.')
        out->data[start] = '_';
    return r ? -1 : 0;
}
