/* Small string helpers that never overflow. */
#ifndef PWB_UTIL_STR_H
#define PWB_UTIL_STR_H

#include <stddef.h>

char *str_dup(const char *s);               /* NULL-safe strdup; NULL on ENOMEM */
char *str_ndup(const char *s, size_t n);
size_t str_copy(char *dst, size_t cap, const char *src); /* truncating, always terminated */
int str_starts(const char *s, const char *prefix);
int str_ends(const char *s, const char *suffix);
/* Trims ASCII whitespace in place; returns s. */
char *str_trim(char *s);
/* Parses a whole string as a long / double; 0 on success. */
int str_to_long(const char *s, long *out);
int str_to_double(const char *s, double *out); /* whole string, finite */

/* The candidate closest to word within a typo's distance (for "did you mean"), or NULL. */
const char *str_closest(const char *word, const char *const *cands, size_t n);

#endif
