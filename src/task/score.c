/* Scoring: the answer pattern (template's, else card's) narrows the generation to a span; the
 * span is then read by answer kind: a label mentioned as a whole word, yes/no, the last number,
 * or normalised text. */
#include "task/score.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "task/rx.h"
#include "util/buf.h"
#include "util/str.h"
#include "util/utf8.h"

#define SCORE_MAX_OUTPUT (1u << 20) /* generations beyond this are scored on their first MiB */

struct scorer {
    const ds_card *c;
    pcre2_code *re;
    int kind;
};

int scorer_init(scorer **out, const ds_card *c, const char *pattern, pwb_err *e)
{
    *out = NULL;
    scorer *s = calloc(1, sizeof *s);
    if (!s)
        return err_set(e, PWB_ENOMEM, "out of memory");
    s->c = c;
    s->kind = c->answer_kind;
    const char *pat = pattern ? pattern : c->answer_pattern;
    if (pat && pat[0]) {
        char what[256];
        snprintf(what, sizeof what, "answer pattern%s%s", pattern ? "" : " of ", pattern ? "" : c->name);
        if (!(s->re = rx_compile(pat, what, e))) {
            free(s);
            return e ? e->code : PWB_EINVAL;
        }
    }
    *out = s;
    return PWB_OK;
}

void scorer_free(scorer *s)
{
    if (!s)
        return;
    if (s->re)
        pcre2_code_free(s->re);
    free(s);
}

void score_result_clear(score_result *r)
{
    if (!r)
        return;
    free(r->extracted);
    r->extracted = NULL;
    r->valid = 0;
    r->correct = 0;
}

static int is_word(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

/* Earliest whole-word occurrence of w in s[0,n); SIZE_MAX when none. */
static size_t find_word(const char *s, size_t n, const char *w, int icase)
{
    size_t k = strlen(w);
    if (!k || k > n)
        return (size_t)-1;
    for (size_t i = 0; i + k <= n; i++) {
        if (icase ? strncasecmp(s + i, w, k) : strncmp(s + i, w, k))
            continue;
        /* a boundary is needed only where the word itself starts/ends with a word character */
        if (i > 0 && is_word((unsigned char)w[0]) && is_word((unsigned char)s[i - 1]))
            continue;
        if (i + k < n && is_word((unsigned char)w[k - 1]) && is_word((unsigned char)s[i + k]))
            continue;
        return i;
    }
    return (size_t)-1;
}

/* The label mentioned first (verbalizers and aliases; at one position the longer word wins). */
static int find_label(const scorer *s, const char *t, size_t n)
{
    const ds_card *c = s->c;
    size_t best = (size_t)-1, best_len = 0;
    int lab = -1;
    for (int i = 0; i < c->n_labels; i++) {
        const ds_label *l = &c->labels[i];
        for (int a = -1; a < l->n_aliases; a++) {
            const char *w = a < 0 ? l->verbalizer : l->aliases[a];
            /* choice letters ("A") are matched case-sensitively: "a" is an article */
            int icase = !(s->kind == DS_ANSWER_CHOICE && strlen(w) == 1);
            size_t p = find_word(t, n, w, icase);
            if (p == (size_t)-1)
                continue;
            if (p < best || (p == best && strlen(w) > best_len)) {
                best = p;
                best_len = strlen(w);
                lab = i;
            }
        }
        if (s->kind == DS_ANSWER_YESNO) { /* true/false read as yes/no */
            const char *w = !strcasecmp(l->verbalizer, "yes") ? "true" : "false";
            size_t p = find_word(t, n, w, 1);
            if (p != (size_t)-1 && p < best) {
                best = p;
                best_len = strlen(w);
                lab = i;
            }
        }
    }
    return lab;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Span of the last number in s[0,n): -?digits(,ddd)*(.digits)? */
static int last_number(const char *s, size_t n, size_t *so, size_t *eo)
{
    int found = 0;
    size_t i = 0;
    while (i < n) {
        if (!is_digit(s[i]) || (i > 0 && (is_digit(s[i - 1]) || (s[i - 1] == '.' && i > 1 && is_digit(s[i - 2]))))) {
            i++;
            continue;
        }
        size_t a = i;
        if (a > 0 && s[a - 1] == '-' && (a < 2 || !is_word((unsigned char)s[a - 2])))
            a--;
        while (i < n && is_digit(s[i]))
            i++;
        while (i + 3 < n && s[i] == ',' && is_digit(s[i + 1]) && is_digit(s[i + 2]) && is_digit(s[i + 3]) &&
               (i + 4 >= n || !is_digit(s[i + 4])))
            i += 4;
        if (i + 1 < n && s[i] == '.' && is_digit(s[i + 1])) {
            i++;
            while (i < n && is_digit(s[i]))
                i++;
        }
        *so = a;
        *eo = i;
        found = 1;
    }
    return found;
}

int score_normalize_number(const char *in, char *out, size_t cap)
{
    if (!in || !out || cap < 2)
        return -1;
    size_t n = strlen(in);
    if (n > 256)
        return -1;
    char tmp[300];
    size_t k = 0;
    size_t i = 0;
    /* leading space, currency, plus sign, markdown emphasis */
    for (;;) {
        if (i < n && (in[i] == ' ' || in[i] == '\t' || in[i] == '\n' || in[i] == '$' || in[i] == '+' || in[i] == '*'))
            i++;
        else if (i + 1 < n && (unsigned char)in[i] == 0xC2 && (unsigned char)in[i + 1] == 0xA3) /* £ */
            i += 2;
        else if (i + 2 < n && (unsigned char)in[i] == 0xE2 && (unsigned char)in[i + 1] == 0x82 &&
                 (unsigned char)in[i + 2] == 0xAC) /* € */
            i += 3;
        else
            break;
    }
    if (i < n && in[i] == '-') {
        tmp[k++] = '-';
        i++;
        while (i < n && in[i] == '$')
            i++;
    }
    int digits = 0, dot = 0;
    while (i < n && k < sizeof tmp - 1) {
        char c = in[i];
        if (is_digit(c)) {
            tmp[k++] = c;
            digits++;
        } else if (c == ',' && digits && !dot && i + 1 < n && is_digit(in[i + 1])) {
            /* thousands separator: dropped */
        } else if (c == '.' && !dot && i + 1 < n && is_digit(in[i + 1])) {
            tmp[k++] = '.';
            dot = 1;
        } else {
            break;
        }
        i++;
    }
    tmp[k] = '\0';
    if (!digits)
        return -1;
    /* trailing: percent, punctuation, markdown, space */
    for (; i < n; i++)
        if (!strchr(" \t\r\n%.,;:!?)*", in[i]))
            return -1;
    char *end;
    double v = strtod(tmp, &end);
    if (*end || !isfinite(v))
        return -1;
    int w;
    if (v == floor(v) && fabs(v) < 1e15)
        w = snprintf(out, cap, "%.0f", v == 0 ? 0.0 : v);
    else {
        w = snprintf(out, cap, "%.10f", v);
        if (w > 0 && (size_t)w < cap) { /* trim trailing zeros */
            char *p = out + w - 1;
            while (p > out && *p == '0')
                *p-- = '\0';
            if (*p == '.')
                *p = '\0';
        }
    }
    return w > 0 && (size_t)w < cap ? 0 : -1;
}

/* NFC with Unicode case folding (any language, "É" and "e" + U+0301 alike), whitespace collapsed,
 * surrounding punctuation and markdown dropped. */
static char *normalize_text(const char *s, size_t n)
{
    pwb_buf b, f;
    buf_init(&b);
    buf_init(&f);
    if (utf8_fold(&f, s, n) < 0)
        goto oom;
    s = f.data ? f.data : "";
    n = f.len;
    int space = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            space = b.len > 0;
            continue;
        }
        if (space && buf_putc(&b, ' '))
            goto oom;
        space = 0;
        if (buf_putc(&b, (char)(c >= 'A' && c <= 'Z' ? c + 32 : c)))
            goto oom;
    }
    if (buf_append(&b, "", 0))
        goto oom;
    static const char *junk = ".,;:!?\"'`*_()[]{} ";
    size_t a = 0, z = b.len;
    while (a < z && strchr(junk, b.data[a]))
        a++;
    while (z > a && strchr(junk, b.data[z - 1]))
        z--;
    char *r = str_ndup(b.data + a, z - a);
    buf_free(&b);
    buf_free(&f);
    return r;
oom:
    buf_free(&b);
    buf_free(&f);
    return NULL;
}

static int numbers_equal(const char *a, const char *b)
{
    double x, y;
    if (str_to_double(a, &x) || str_to_double(b, &y))
        return 0;
    return fabs(x - y) <= 1e-6 * fmax(1.0, fabs(y));
}

int scorer_score(const scorer *s, const char *output, const ds_example *gold, score_result *r)
{
    memset(r, 0, sizeof *r);
    if (!s || !output)
        return PWB_OK;
    size_t n = strnlen(output, SCORE_MAX_OUTPUT);
    const char *t = output;
    if (s->re) {
        size_t so, eo;
        if (rx_find(s->re, output, n, &so, &eo) != 1)
            return PWB_OK; /* no answer where the pattern looks: invalid */
        t = output + so;
        n = eo - so;
    }
    const ds_card *c = s->c;
    switch (s->kind) {
    case DS_ANSWER_LABEL:
    case DS_ANSWER_YESNO:
    case DS_ANSWER_CHOICE: {
        int l = find_label(s, t, n);
        if (l < 0)
            return PWB_OK;
        r->extracted = str_dup(c->labels[l].verbalizer);
        r->valid = r->extracted != NULL;
        if (gold)
            r->correct = gold->label >= 0 ? l == gold->label
                                          : gold->answer && !strcasecmp(gold->answer, c->labels[l].verbalizer);
        break;
    }
    case DS_ANSWER_NUMERIC: {
        size_t so, eo;
        if (!last_number(t, n, &so, &eo))
            return PWB_OK;
        char tok[128], num[64];
        size_t k = eo - so < sizeof tok - 1 ? eo - so : sizeof tok - 1;
        memcpy(tok, t + so, k);
        tok[k] = '\0';
        if (score_normalize_number(tok, num, sizeof num))
            return PWB_OK;
        r->extracted = str_dup(num);
        r->valid = r->extracted != NULL;
        if (gold && gold->answer)
            r->correct = numbers_equal(num, gold->answer);
        break;
    }
    default: {
        char *x = normalize_text(t, n);
        if (!x)
            return err_set(NULL, PWB_ENOMEM, "out of memory");
        if (!x[0]) {
            free(x);
            return PWB_OK;
        }
        r->extracted = x;
        r->valid = 1;
        if (gold && gold->answer) {
            char *g = normalize_text(gold->answer, strlen(gold->answer));
            r->correct = g && !strcmp(g, x);
            free(g);
        }
    }
    }
    if (!r->valid)
        r->correct = 0;
    return PWB_OK;
}
