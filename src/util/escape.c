#include "util/escape.h"

#include <string.h>

#include "util/utf8.h"

int esc_csv(pwb_buf *b, const char *s)
{
    if (!s)
        return 0;
    if (!strpbrk(s, ",\"\r\n"))
        return buf_puts(b, s);
    if (buf_putc(b, '"'))
        return -1;
    for (; *s; s++)
        if ((*s == '"' && buf_putc(b, '"')) || buf_putc(b, *s))
            return -1;
    return buf_putc(b, '"');
}

int esc_md(pwb_buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    const unsigned char *p = (const unsigned char *)s;
    while (n > 0) {
        int r;
        size_t len = utf8_len(p, n);
        if (len == 0) {
            r = buf_putc(b, '?');
            len = 1;
        } else if (len > 1) {
            r = buf_append(b, p, len);
        } else if (*p == '|') {
            r = buf_puts(b, "\\|");
        } else if (*p == '<') {
            r = buf_puts(b, "&lt;");
        } else if (*p == '>') {
            r = buf_puts(b, "&gt;");
        } else if (*p == '\n') {
            r = buf_puts(b, "<br>");
        } else {
            r = buf_putc(b, *p < 0x20 || *p == 0x7f ? ' ' : (char)*p);
        }
        if (r)
            return -1;
        p += len;
        n -= len;
    }
    return 0;
}
