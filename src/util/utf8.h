/* UTF-8, in one place: validation, lossy repair, code points, and (through utf8proc) Unicode NFC
 * normalisation and case folding, for tokenizers with an NFC normalizer and for matching answers
 * in any language. */
#ifndef PWB_UTIL_UTF8_H
#define PWB_UTIL_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when the bytes there are invalid (overlong,
 * surrogate, past U+10FFFF, truncated). */
size_t utf8_len(const unsigned char *s, size_t n);
/* Bytes in the maximal invalid subpart at s (Unicode "substitution of maximal subparts", as
 * Python's errors="replace" and Rust's from_utf8_lossy): always >= 1 when n > 0. */
size_t utf8_bad_len(const unsigned char *s, size_t n);
/* 1 when s[0..n) is valid UTF-8. */
int utf8_valid(const char *s, size_t n);
/* Appends s with each maximal invalid subpart replaced by U+FFFD. */
int utf8_lossy(pwb_buf *out, const char *s, size_t n);
/* Encodes cp as UTF-8 into out[4]; returns the length (0 for a value that is not a code point). */
size_t utf8_put(uint32_t cp, char *out);
/* The code point of the valid sequence s[0..len) (len from utf8_len). */
uint32_t utf8_cp(const unsigned char *s, size_t len);
/* Code points in s[0..n) (stray continuation bytes are not counted). */
size_t utf8_codepoints(const char *s, size_t n);
/* Append s in NFC, or NFC with full Unicode case folding. Invalid UTF-8 is appended unchanged
 * (return 1); -1 when out of memory; 0 otherwise. */
int utf8_nfc(pwb_buf *out, const char *s, size_t n);
int utf8_fold(pwb_buf *out, const char *s, size_t n);

#endif
