/* PCRE2 helpers shared by cards, templates and scoring (private to task/). */
#ifndef PWB_TASK_RX_H
#define PWB_TASK_RX_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>

#include "util/buf.h"
#include "util/err.h"

#define RX_MAX_PATTERN 4096

/* Compiles pat (UTF, invalid UTF tolerated at match time); errors read "what: bad regex '..': msg
 * at offset N". */
pcre2_code *rx_compile(const char *pat, const char *what, pwb_err *e);
/* First match in s: the span of the group named "answer", else group 1, else the whole match.
 * Returns 1 on a match (so/eo set), 0 on none, -1 on a match error (e.g. backtracking limit). */
int rx_find(const pcre2_code *re, const char *s, size_t n, size_t *so, size_t *eo);
/* Appends s with every match of re removed. */
int rx_remove_all(const pcre2_code *re, const char *s, size_t n, pwb_buf *out);
/* Named groups of re: names[i] (borrowed from re) is the group numbered nums[i]; returns count. */
int rx_names(const pcre2_code *re, const char **names, int *nums, int cap);

#endif
