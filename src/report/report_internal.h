/* Private to src/report: helpers shared by the loader, the renderers and the comparison. */
#ifndef PWB_REPORT_INTERNAL_H
#define PWB_REPORT_INTERNAL_H

#include <cjson/cJSON.h>

#include "report/report.h"
#include "util/escape.h"

int report_is_local(const char *provider);
void report_row_fill(report_row *w, const db_outcome *o, size_t n, int cost_unit);
/* Pairs two outcome lists sorted by row: rows both have, rows only a / only b got right, and (both
 * may be NULL) rows both got right. */
void report_pair(const db_outcome *a, size_t na, const db_outcome *b, size_t nb, long *shared, long *only_a,
                 long *only_b, long *both);

/* Length of the valid UTF-8 sequence at p (at most n bytes); 0 when invalid (overlongs,
 * surrogates, past U+10FFFF, U+FFFE/U+FFFF). */
size_t report_utf8_seq(const unsigned char *p, size_t n);
/* A cJSON string (or null) with invalid UTF-8 replaced by '?', so the document stays JSON. */
void report_json_str(cJSON *o, const char *key, const char *value);
cJSON *report_json_string(const char *value); /* the item alone (NULL on ENOMEM) */
/* A number for CSV (empty when NAN) with %.10g. */
int csv_num(pwb_buf *b, double v);
/* "80.0% [49.0, 94.3]", or "—" when n == 0. */
int fmt_accuracy(pwb_buf *b, long n, double acc, double lo, double hi);
/* "0.039", "<0.001", or "—" for NAN. */
int fmt_p(pwb_buf *b, double p);

/* verdict.c: arms, labelled examples, one-time costs and confusion counts of a group's rows
 * (o[i], n[i]: row i's outcomes; templates[i]: its template file or NULL), then the verdict. */
int report_arm_of(const report_row *w);
int report_rows_prepare(report_group *g, const db_outcome *const *o, const size_t *n, const char *const *templates,
                        const char *suite_json, pwb_err *e);
void report_verdict_build(report_group *g, const db_outcome *const *o, const size_t *n);
/* The volume at which x's total cost (fixed + per example x V) meets y's, in *v; NULL when x is
 * cheaper beyond *v, else why there is no such volume (static text; *v set when x is cheaper
 * only below it). */
const char *report_volume_flip(const report_row *x, const report_row *y, double *v);
/* The engineered prompt a method is weighed against on cost: the cheapest per example among
 * those at least as accurate; -1 when none is. */
long report_volume_ref(const report_group *g, size_t row);
/* verdict_md.c: the verdict, cost over volume and per-class sections of a group. */
int md_verdict(const report_group *g, pwb_buf *b);
int md_volume(const report_group *g, pwb_buf *b);
int md_classes(const report_group *g, pwb_buf *b);
/* chart_verdict.c: an accuracy axis covering [lo, hi] (the rows' intervals; lo > hi: none) and the
 * group's baseline, padded by 2 points inside [0, 1], with nice ticks into yt; returns their
 * number. */
int report_acc_axis(const report_group *g, double lo, double hi, double *ylo, double *yhi, double yt[16]);
/* Shared formatters (render.c). */
int fmt_int(pwb_buf *b, int64_t v);
int fmt_cost(pwb_buf *b, int unit, double v);

#endif
