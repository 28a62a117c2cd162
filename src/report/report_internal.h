/* Private to src/report: helpers shared by the loader, the renderers and the comparison. */
#ifndef PWB_REPORT_INTERNAL_H
#define PWB_REPORT_INTERNAL_H

#include <cjson/cJSON.h>

#include "report/report.h"

int report_is_local(const char *provider);
void report_row_fill(report_row *w, const db_outcome *o, size_t n, int cost_unit);
void report_pair(const db_outcome *a, size_t na, const db_outcome *b, size_t nb, long *shared, long *only_a,
                 long *only_b);

/* Length of the valid UTF-8 sequence at p (at most n bytes); 0 when invalid (overlongs,
 * surrogates, past U+10FFFF, U+FFFE/U+FFFF). */
size_t report_utf8_seq(const unsigned char *p, size_t n);
/* Markdown table cell text: '|' escaped, '<' and '>' as entities (no raw HTML from names), line
 * breaks and control characters flattened to spaces, invalid UTF-8 as '?'. */
int md_text(pwb_buf *b, const char *s);
/* A cJSON string (or null) with invalid UTF-8 replaced by '?', so the document stays JSON. */
void report_json_str(cJSON *o, const char *key, const char *value);
cJSON *report_json_string(const char *value); /* the item alone (NULL on ENOMEM) */
/* CSV field per RFC 4180: quoted when it holds a comma, quote or line break. */
int csv_text(pwb_buf *b, const char *s);
/* A number for CSV (empty when NAN) with %.10g. */
int csv_num(pwb_buf *b, double v);
/* "80.0% [49.0, 94.3]", or "—" when n == 0. */
int fmt_accuracy(pwb_buf *b, long n, double acc, double lo, double hi);
/* "0.039", "<0.001", or "—" for NAN. */
int fmt_p(pwb_buf *b, double p);

#endif
