/* Pre-tokenizers: split text into the pieces that BPE works on, reproducing Hugging Face
 * tokenizers' Split / Digits / ByteLevel / Metaspace steps. Regexes run through PCRE2 with UTF and
 * UCP so that \s, \p{L} and \p{N} are the Unicode classes that the Oniguruma patterns mean. */
#include <string.h>

#include "engine/tok_internal.h"
#include "util/utf8.h"

/* The GPT-2 pattern used by HF ByteLevel(use_regex=true). */
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Llama 3 (tokenizer.ggml.pre "llama-bpe"): case-insensitive contractions, digits in threes. */
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* Qwen2: as Llama 3 but every digit alone. */
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Oniguruma's \s is Unicode White_Space; PCRE2's also takes U+180E (MONGOLIAN VOWEL SEPARATOR,
 * a space before Unicode 6.3). Spelled out, the pattern means what HF means. */
#define WS_SET "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
/* Numbers added in Unicode 15 and 16, which HF's tables know and PCRE2 10.42's (Unicode 14) do
 * not. Harmless once PCRE2's tables catch up. */
#define N_NEW "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11DE0}-\\x{11DE9}" \
              "\\x{11F50}-\\x{11F59}\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{16FF4}-\\x{16FF6}" \
              "\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}"

/* Rewrites \s, \S and \p{N} as the classes above, inside and outside [...]. */
static int fix_pattern(const char *p, size_t n, pwb_buf *o)
{
    int in_class = 0;
    for (size_t i = 0; i < n;) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            if (d == 's') {
                if (buf_puts(o, in_class ? WS_SET : "[" WS_SET "]")) return -1;
                i += 2;
            } else if (d == 'S' && !in_class) {
                if (buf_puts(o, "[^" WS_SET "]")) return -1;
                i += 2;
            } else if (d == 'p' && i + 5 <= n && !memcmp(p + i, "\\p{N}", 5)) {
                if (buf_puts(o, in_class ? "\\p{N}" N_NEW : "[\\p{N}" N_NEW "]")) return -1;
                i += 5;
            } else if (d == 'Q') {
                /* \Q...\E: literal text, copied as it is */
                size_t j = i + 2;
                while (j < n && !(p[j] == '\\' && j + 1 < n && p[j + 1] == 'E')) j++;
                j = j < n ? j + 2 : n;
                if (buf_append(o, p + i, j - i)) return -1;
                i = j;
            } else {
                if (buf_append(o, p + i, 2)) return -1;
                i += 2;
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            size_t j = i + 1;
            if (j < n && p[j] == '^') j++;
            if (j < n && p[j] == ']') j++; /* a ']' first in a class is literal */
            if (buf_append(o, p + i, j - i)) return -1;
            i = j;
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {
            /* POSIX [:name:] inside a class */
            const char *end = NULL;
            for (size_t j = i + 2; j + 1 < n; j++)
                if (p[j] == ':' && p[j + 1] == ']') {
                    end = p + j + 2;
                    break;
                }
            if (end) {
                if (buf_append(o, p + i, (size_t)(end - (p + i)))) return -1;
                i = (size_t)(end - p);
                continue;
            }
        }
        if (in_class && c == ']') in_class = 0;
        if (buf_putc(o, c)) return -1;
        i++;
    }
    return 0;
}

static int compile(pcre2_code **out, const char *pattern, size_t n, uint32_t extra, pwb_err *e)
{
    int ecode;
    PCRE2_SIZE eoff;
    pwb_buf fixed;
    buf_init(&fixed);
    if (n == PCRE2_ZERO_TERMINATED) n = strlen(pattern);
    if (fix_pattern(pattern, n, &fixed)) {
        buf_free(&fixed);
        return err_set(e, PWB_ENOMEM, "pre-tokenizer regex: out of memory");
    }
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(fixed.data ? fixed.data : ""), fixed.len,
                                   PCRE2_UTF | PCRE2_UCP | extra, &ecode, &eoff, NULL);
    buf_free(&fixed);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        return err_set(e, PWB_EPARSE, "pre-tokenizer regex: %s (pattern \"%.200s\")", (const char *)msg, pattern);
    }
    /* JIT makes matching several times faster; the interpreter is the fallback. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return PWB_OK;
}

int tok_pretok_regex(tok_pretok *p, const char *pattern, size_t n, pwb_err *e)
{
    memset(p, 0, sizeof *p);
    p->kind = PT_REGEX;
    return compile(&p->re, pattern, n, 0, e);
}

int tok_pretok_digits(tok_pretok *p, int individual, pwb_err *e)
{
    memset(p, 0, sizeof *p);
    p->kind = PT_DIGITS;
    /* Rust's char::is_numeric is the Unicode N category (Nd, Nl, No), i.e. \p{N}. */
    return individual ? compile(&p->re, "\\p{N}", PCRE2_ZERO_TERMINATED, 0, e)
                      : compile(&p->re, "\\p{N}+", PCRE2_ZERO_TERMINATED, 0, e);
}

int tok_pretok_bytelevel(tok_pretok *p, int add_prefix_space, int use_regex, pwb_err *e)
{
    memset(p, 0, sizeof *p);
    p->kind = PT_BYTELEVEL;
    p->add_prefix_space = add_prefix_space;
    return use_regex ? compile(&p->re, RE_GPT2, PCRE2_ZERO_TERMINATED, 0, e) : PWB_OK;
}

void tok_pretok_free(tok_pretok *p)
{
    if (p->re) pcre2_code_free(p->re);
    p->re = NULL;
}

int tok_pretok_preset(tok_pretok *s, const char *name, pwb_err *e)
{
    int rc;
    if (!name || !strcmp(name, "default") || !strcmp(name, "gpt2") || !strcmp(name, "gpt-2")) {
        rc = tok_pretok_bytelevel(&s[0], 0, 1, e);
        return rc ? -2 : 1;
    }
    if (!strcmp(name, "smollm")) {
        if (tok_pretok_digits(&s[0], 1, e)) return -2;
        rc = tok_pretok_bytelevel(&s[1], 0, 1, e);
        return rc ? -2 : 2;
    }
    const char *re = NULL;
    if (!strcmp(name, "llama-bpe") || !strcmp(name, "llama3") || !strcmp(name, "llama-v3")) re = RE_LLAMA3;
    else if (!strcmp(name, "qwen2") || !strcmp(name, "deepseek-r1-qwen")) re = RE_QWEN2;
    if (!re) return -1;
    if (tok_pretok_regex(&s[0], re, strlen(re), e)) return -2;
    if (tok_pretok_bytelevel(&s[1], 0, 0, e)) return -2;
    return 2;
}

/* Calls the next step on each piece of s that the regex splits off: matches and the gaps between
 * them, in order (HF SplitDelimiterBehavior::Isolated), or only the gaps (Removed). */
static int split_regex(const tokenizer *t, tok_work *w, int k, const pcre2_code *re, int removed,
                       const char *s, size_t n, int first)
{
    size_t pos = 0, gap = 0;
    while (pos < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, w->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) {
            /* Empty match: step over one character so the loop always advances. */
            size_t k1 = utf8_len((const unsigned char *)s + ms, n - ms);
            pos = ms + (k1 ? k1 : 1);
            continue;
        }
        if (ms > gap && tok_pretokenize(t, w, k + 1, s + gap, ms - gap, first && gap == 0)) return -1;
        if (!removed && tok_pretokenize(t, w, k + 1, s + ms, me - ms, first && ms == 0)) return -1;
        pos = gap = me;
    }
    if (n > gap && tok_pretokenize(t, w, k + 1, s + gap, n - gap, first && gap == 0)) return -1;
    return 0;
}

static const char METASPACE[] = "\xE2\x96\x81"; /* U+2581 */

static int metaspace(const tokenizer *t, tok_work *w, int k, const tok_pretok *p, const char *s, size_t n,
                     int first)
{
    pwb_buf *b = &w->tmp[k];
    buf_reset(b);
    int starts = n >= 3 && memcmp(s, METASPACE, 3) == 0;
    if ((p->prepend == 2 || (p->prepend == 1 && first)) && !(n > 0 && (s[0] == ' ' || starts)))
        if (buf_append(b, METASPACE, 3)) return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ' ? buf_append(b, METASPACE, 3) : buf_putc(b, s[i])) return -1;
    }
    const char *m = b->data;
    size_t len = b->len;
    if (!p->split) return tok_pretokenize(t, w, k + 1, m, len, first);
    /* MergedWithNext: every U+2581 starts a new piece. */
    size_t start = 0;
    for (size_t i = 3; i + 3 <= len; i++) {
        if (memcmp(m + i, METASPACE, 3) == 0) {
            if (tok_pretokenize(t, w, k + 1, m + start, i - start, first && start == 0)) return -1;
            start = i;
            i += 2;
        }
    }
    if (len > start) return tok_pretokenize(t, w, k + 1, m + start, len - start, first && start == 0);
    return 0;
}

int tok_pretokenize(const tokenizer *t, tok_work *w, int k, const char *s, size_t n, int first)
{
    if (n == 0) return 0;
    if (k >= t->n_pre) {
        return t->mode == TOK_SPM ? tok_spm_piece(t, w, s, n) : tok_bpe_piece(t, w, s, n);
    }
    const tok_pretok *p = &t->pre[k];
    switch (p->kind) {
    case PT_REGEX:
    case PT_DIGITS:
        return split_regex(t, w, k, p->re, p->removed, s, n, first);
    case PT_BYTELEVEL:
        if (p->add_prefix_space && s[0] != ' ') {
            pwb_buf *b = &w->tmp[k];
            buf_reset(b);
            if (buf_putc(b, ' ') || buf_append(b, s, n)) return -1;
            s = b->data;
            n = b->len;
        }
        if (!p->re) return tok_pretokenize(t, w, k + 1, s, n, first);
        return split_regex(t, w, k, p->re, 0, s, n, first);
    case PT_METASPACE:
        return metaspace(t, w, k, p, s, n, first);
    }
    return -1;
}
