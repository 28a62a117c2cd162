/* Growable byte buffer; always NUL-terminated so it can be used as a C string. */
#ifndef PWB_UTIL_BUF_H
#define PWB_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct pwb_buf {
    char *data;
    size_t len;
    size_t cap;
} pwb_buf;

void buf_init(pwb_buf *b);
void buf_free(pwb_buf *b);
void buf_reset(pwb_buf *b); /* len = 0, keeps memory */
int buf_reserve(pwb_buf *b, size_t extra);  /* 0 on success, -1 on overflow/ENOMEM */
int buf_append(pwb_buf *b, const void *p, size_t n);
int buf_puts(pwb_buf *b, const char *s);
int buf_putc(pwb_buf *b, char c);
int buf_printf(pwb_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(pwb_buf *b, const char *fmt, va_list ap);
/* Hands the memory to the caller (never NULL on success); b is reset to empty. */
char *buf_take(pwb_buf *b);

#endif
