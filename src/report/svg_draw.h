/* Private to src/report: a small SVG writer for the charts. Every text goes through svg_esc, so
 * names from the database can never break the XML; coordinates are written with one decimal.
 * Errors (out of memory) are sticky in svg.err and reported once by svg_finish. */
#ifndef PWB_REPORT_SVG_DRAW_H
#define PWB_REPORT_SVG_DRAW_H

#include <stddef.h>

#include "util/buf.h"
#include "util/err.h"

#define SVG_FONT 12          /* px, the default text size */
#define SVG_CHAR_EM 0.62     /* a generous average glyph width of sans-serif, in em */

typedef struct svg {
    pwb_buf *b;
    double w, h;
    int err;
} svg;

/* The XML declaration, <svg> with its viewBox, a white background and the title and subtitle
 * (either may be NULL) at the top left. */
void svg_begin(svg *s, pwb_buf *b, double w, double h, const char *title, const char *subtitle);
/* Closes the document; PWB_ENOMEM when anything failed to append. */
int svg_finish(svg *s, pwb_err *e);

/* Appends text escaped for XML: & < > " ' become entities, control characters and invalid UTF-8
 * become '?' (XML 1.0 allows neither). */
int svg_esc(pwb_buf *b, const char *text);
/* Estimated width in px of text at a font size (code points x SVG_CHAR_EM em). */
double svg_text_width(const char *text, double font_px);
/* text cut to fit max_px (whole UTF-8 sequences, "…" appended when cut), into out. */
void svg_fit(const char *text, double max_px, double font_px, pwb_buf *out);

/* anchor: "start", "middle" or "end"; attrs: extra attributes written as they are (trusted, may
 * be NULL), e.g. "font-weight=\"bold\" fill=\"#555555\"". */
void svg_text(svg *s, double x, double y, const char *anchor, const char *attrs, const char *text);
void svg_line(svg *s, double x1, double y1, double x2, double y2, const char *stroke, double width,
              const char *dash);
/* title (may be NULL) becomes a hover tooltip. */
void svg_rect(svg *s, double x, double y, double w, double h, const char *fill, const char *title);
void svg_circle(svg *s, double cx, double cy, double r, const char *fill, const char *title);
/* An open polyline through n points (x[i], y[i]); opacity 1 is opaque. */
void svg_polyline(svg *s, const double *x, const double *y, size_t n, const char *stroke, double width,
                  double opacity, const char *dash);
/* A vertical error bar from y0 to y1 at x with caps of half-width cap. */
void svg_vbar(svg *s, double x, double y0, double y1, double cap, const char *stroke);
/* A horizontal error bar from x0 to x1 at y with caps of half-height cap. */
void svg_hbar(svg *s, double x0, double x1, double y, double cap, const char *stroke);

/* Colour i of a 10-colour palette (Tableau 10) that reads on white and in print. */
const char *svg_color(size_t i);
/* A dash pattern for series i beyond the palette (NULL for the first ten). */
const char *svg_dash(size_t i);

/* "Nice" axis ticks covering [lo, hi]: steps of 1, 2 or 5 x 10^k, at most max_ticks of them.
 * Widens lo/hi to whole steps. Returns the number of ticks written to t (at most 16). */
int svg_ticks(double *lo, double *hi, int max_ticks, double t[16]);
/* Decades 10^k covering [lo, hi] (both > 0) for a log axis; widens lo/hi to decades. */
int svg_log_ticks(double *lo, double *hi, double t[16]);
/* A tick label: as few decimals as the step needs ("0.05", "20", "1e-05"). */
void svg_tick_label(double v, double step, char *out, size_t cap);

/* A legend of coloured swatches with names, wrapped to width: how many rows it takes, and
 * drawing it with its top-left at (x, y). Items are series 0..n-1 (colour and dash per index). */
int svg_legend_rows(const char *const *names, size_t n, double width);
void svg_legend(svg *s, const char *const *names, size_t n, double x, double y, double width);
#define SVG_LEGEND_ROW 18

#endif
