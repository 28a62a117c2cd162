#include "util/utf8.h"

#include <stdlib.h>
#include <utf8proc.h>

size_t utf8_len(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (s[0] < 0x80)
        return 1;
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate(s, n < 4 ? (utf8proc_ssize_t)n : 4, &cp);
    return k > 0 ? (size_t)k : 0;
}

size_t utf8_bad_len(const unsigned char *s, size_t n)
{
    /* The longest prefix that could still start a valid sequence; utf8proc has no such call. */
    if (n == 0)
        return 0;
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        lo = c == 0xE0 ? 0xA0 : lo; /* overlong */
        hi = c == 0xED ? 0x9F : hi; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        lo = c == 0xF0 ? 0x90 : lo; /* overlong */
        hi = c == 0xF4 ? 0x8F : hi; /* past U+10FFFF */
    } else
        return 1;
    size_t i = 1;
    if (i < n && i < need && s[i] >= lo && s[i] <= hi) {
        i++;
        while (i < n && i < need && (s[i] & 0xC0) == 0x80)
            i++;
    }
    return i;
}

int utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = utf8_len(u + i, n - i)))
            return 0;
    return 1;
}

int utf8_lossy(pwb_buf *out, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t k = utf8_len(u + i, n - i);
        if (k) {
            i += k;
            continue;
        }
        if ((i > run && buf_append(out, s + run, i - run)) || buf_append(out, "\xEF\xBF\xBD", 3))
            return -1;
        i += utf8_bad_len(u + i, n - i);
        run = i;
    }
    return n > run ? buf_append(out, s + run, n - run) : 0;
}

size_t utf8_put(uint32_t cp, char *out)
{
    if (cp > 0x10FFFF)
        return 0;
    return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out);
}

uint32_t utf8_cp(const unsigned char *s, size_t len)
{
    utf8proc_int32_t cp = 0;
    return utf8proc_iterate(s, (utf8proc_ssize_t)len, &cp) > 0 ? (uint32_t)cp : 0xFFFD;
}

size_t utf8_codepoints(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static int map(pwb_buf *out, const char *s, size_t n, utf8proc_option_t opt)
{
    if (n == 0)
        return 0;
    utf8proc_uint8_t *r = NULL;
    utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &r, opt);
    if (k == UTF8PROC_ERROR_NOMEM)
        return -1;
    if (k < 0)
        return buf_append(out, s, n) ? -1 : 1;
    int rc = buf_append(out, (const char *)r, (size_t)k) ? -1 : 0;
    free(r);
    return rc;
}

int utf8_nfc(pwb_buf *out, const char *s, size_t n)
{
    return map(out, s, n, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
}

int utf8_fold(pwb_buf *out, const char *s, size_t n)
{
    return map(out, s, n, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD);
}
