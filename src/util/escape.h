/* Escapers for the text formats pwb writes: a CSV field and a markdown table cell. The CLI's
 * tables (`pwb query`, `dataset list`) and the reports share them. */
#ifndef PWB_UTIL_ESCAPE_H
#define PWB_UTIL_ESCAPE_H

#include "util/buf.h"

/* s as one CSV field (RFC 4180): quoted when it holds ',', '"', CR or LF, quotes doubled. NULL
 * writes nothing. Nonzero when out of memory. */
int esc_csv(pwb_buf *b, const char *s);

/* s as one markdown table cell: '|' escaped, '<' and '>' as entities (no HTML gets through), a
 * newline as <br>, other control characters as spaces, bytes that are not UTF-8 as '?'. NULL
 * writes nothing. Nonzero when out of memory. */
int esc_md(pwb_buf *b, const char *s);

#endif
