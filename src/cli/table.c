#include "cli/table.h"

#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/escape.h"
#include "util/str.h"
#include "util/utf8.h"

int table_format_parse(const char *s)
{
    if (!s || strcmp(s, "table") == 0 || strcmp(s, "plain") == 0)
        return TABLE_PLAIN;
    if (strcmp(s, "md") == 0 || strcmp(s, "markdown") == 0)
        return TABLE_MD;
    if (strcmp(s, "csv") == 0)
        return TABLE_CSV;
    if (strcmp(s, "json") == 0)
        return TABLE_JSON;
    return -1;
}

int table_init(cli_table *t, int ncols, const char *const *names)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    t->head = calloc((size_t)(ncols > 0 ? ncols : 1), sizeof *t->head);
    if (!t->head)
        return -1;
    for (int i = 0; i < ncols; i++)
        if (!(t->head[i] = str_dup(names[i] ? names[i] : "")))
            return -1;
    return 0;
}

int table_add(cli_table *t, const char *const *vals)
{
    size_t need = (t->nrows + 1) * (size_t)t->ncols;
    if (need > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : (size_t)t->ncols * 16;
        while (cap < need)
            cap *= 2;
        char **p = realloc(t->cells, cap * sizeof *p);
        if (!p)
            return -1;
        t->cells = p;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * (size_t)t->ncols;
    for (int i = 0; i < t->ncols; i++) {
        row[i] = NULL;
        if (vals[i] && !(row[i] = str_dup(vals[i]))) {
            for (int j = 0; j < i; j++)
                free(row[j]);
            return -1;
        }
    }
    t->nrows++;
    return 0;
}

void table_free(cli_table *t)
{
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    for (int i = 0; t->head && i < t->ncols; i++)
        free(t->head[i]);
    free(t->head);
    memset(t, 0, sizeof *t);
}

/* Display width in code points (good enough for aligned text; no wide-char tables). */
static size_t u8_width(const char *s, size_t n)
{
    return utf8_codepoints(s, n);
}

/* Bytes of s that fit in w code points. */
static size_t u8_prefix(const char *s, size_t w)
{
    size_t i = 0, cp = 0;
    for (; s[i]; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (cp == w)
                break;
            cp++;
        }
    }
    return i;
}

static int looks_numeric(const char *s)
{
    if (!s || !*s)
        return 0;
    char *end;
    strtod(s, &end);
    return *end == '\0' && s[0] != ' ';
}

/* A plain-text cell: control characters shown as spaces so that a row stays one line. */
static void put_plain(FILE *f, const char *s, size_t width, int right, int max)
{
    const char *v = s ? s : "";
    size_t n = strlen(v), w = u8_width(v, n);
    int cut = max > 3 && w > (size_t)max;
    if (cut) {
        n = u8_prefix(v, (size_t)max - 3);
        w = (size_t)max;
    }
    if (right)
        for (size_t i = w; i < width; i++)
            fputc(' ', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        fputc(c < 0x20 || c == 0x7f ? ' ' : c, f);
    }
    if (cut)
        fputs("...", f);
    if (!right)
        for (size_t i = w; i < width; i++)
            fputc(' ', f);
}

/* A markdown cell or a CSV record, escaped in a buffer (util/escape.h) and written. */
static void put_escaped(FILE *f, pwb_buf *b)
{
    if (b->data)
        fwrite(b->data, 1, b->len, f);
    buf_free(b);
}

static void put_md(FILE *f, const char *s)
{
    pwb_buf b;
    buf_init(&b);
    esc_md(&b, s);
    put_escaped(f, &b);
}

void table_csv_record(FILE *f, int n, const char *const *vals)
{
    pwb_buf b;
    buf_init(&b);
    for (int i = 0; i < n; i++) {
        if (i)
            buf_putc(&b, ',');
        esc_csv(&b, vals[i] ? vals[i] : "");
    }
    buf_puts(&b, "\r\n");
    put_escaped(f, &b);
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* A JSON number exactly as SQLite printed it: optional '-', no leading zeros, digits. */
static int json_number_ok(const char *s)
{
    const char *p = s;
    if (*p == '-')
        p++;
    if (!(*p >= '0' && *p <= '9'))
        return 0;
    if (*p == '0' && p[1] >= '0' && p[1] <= '9')
        return 0;
    char *end;
    strtod(s, &end);
    if (*end)
        return 0;
    for (const char *q = s; *q; q++)
        if (!strchr("-+.0123456789eE", *q))
            return 0; /* no "inf", "nan", hex */
    return 1;
}

void table_json_object(FILE *f, int n, const char *const *names, const char *const *vals)
{
    fputc('{', f);
    for (int i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        json_string(f, names[i] ? names[i] : "");
        fputc(':', f);
        if (!vals[i])
            fputs("null", f);
        else if (json_number_ok(vals[i]))
            fputs(vals[i], f);
        else
            json_string(f, vals[i]);
    }
    fputc('}', f);
}

void table_print(const cli_table *t, FILE *f, int format)
{
    int nc = t->ncols;
    if (format == TABLE_CSV) {
        table_csv_record(f, nc, (const char *const *)t->head);
        for (size_t r = 0; r < t->nrows; r++)
            table_csv_record(f, nc, (const char *const *)t->cells + r * (size_t)nc);
        return;
    }
    if (format == TABLE_JSON) {
        fputs("[", f);
        for (size_t r = 0; r < t->nrows; r++) {
            fputs(r ? ",\n " : "\n ", f);
            table_json_object(f, nc, (const char *const *)t->head, (const char *const *)t->cells + r * (size_t)nc);
        }
        fputs(t->nrows ? "\n]\n" : "]\n", f);
        return;
    }
    if (format == TABLE_MD) {
        for (int i = 0; i < nc; i++) {
            fputs(i ? " | " : "| ", f);
            put_md(f, t->head[i]);
        }
        fputs(" |\n", f);
        for (int i = 0; i < nc; i++) {
            int num = t->nrows > 0;
            for (size_t r = 0; r < t->nrows && num; r++) {
                const char *v = t->cells[r * (size_t)nc + (size_t)i];
                num = !v || looks_numeric(v);
            }
            fputs(num ? "|---:" : "|---", f);
        }
        fputs("|\n", f);
        for (size_t r = 0; r < t->nrows; r++) {
            for (int i = 0; i < nc; i++) {
                fputs(i ? " | " : "| ", f);
                put_md(f, t->cells[r * (size_t)nc + (size_t)i]);
            }
            fputs(" |\n", f);
        }
        return;
    }
    /* Plain: columns padded to their widest cell, numbers right-aligned. */
    size_t *w = calloc((size_t)(nc ? nc : 1), sizeof *w);
    int *num = calloc((size_t)(nc ? nc : 1), sizeof *num);
    if (!w || !num) {
        free(w);
        free(num);
        return;
    }
    for (int i = 0; i < nc; i++) {
        size_t hw = u8_width(t->head[i], strlen(t->head[i]));
        w[i] = hw;
        num[i] = t->nrows > 0;
        for (size_t r = 0; r < t->nrows; r++) {
            const char *v = t->cells[r * (size_t)nc + (size_t)i];
            size_t cw = v ? u8_width(v, strlen(v)) : 0;
            if (t->max_width > 3 && cw > (size_t)t->max_width)
                cw = (size_t)t->max_width;
            if (cw > w[i])
                w[i] = cw;
            if (v && !looks_numeric(v))
                num[i] = 0;
        }
    }
    for (int i = 0; i < nc; i++) {
        if (i)
            fputs("  ", f);
        put_plain(f, t->head[i], i == nc - 1 && !num[i] ? 0 : w[i], num[i], 0);
    }
    fputc('\n', f);
    for (size_t r = 0; r < t->nrows; r++) {
        for (int i = 0; i < nc; i++) {
            if (i)
                fputs("  ", f);
            put_plain(f, t->cells[r * (size_t)nc + (size_t)i], i == nc - 1 && !num[i] ? 0 : w[i], num[i],
                      t->max_width);
        }
        fputc('\n', f);
    }
    free(w);
    free(num);
}
