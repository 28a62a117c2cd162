/* pwb dataset import FILE: writes a dataset card for a CSV, TSV, JSONL or plain-text file,
 * guessing what the flags leave open, then proves the card by loading the file through it. */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <math.h>

#include "task/dataset.h"
#include "task/catalog.h"
#include "cli/cli.h"
#include "util/file.h"
#include "util/str.h"
#include "util/utf8.h"

#define IMPORT_MAX_BYTES (256u << 20) /* read for guessing; the loader has its own limits */
#define IMPORT_MAX_ROWS 200000        /* rows looked at to guess fields and labels */
#define IMPORT_MAX_LABELS 100         /* more distinct values than this is not a label field */

/* The file as a grid of strings: field names and up to IMPORT_MAX_ROWS rows. */
typedef struct grid {
    catalog_list names;
    char ***rows; /* rows[r][f], NULL for a missing value */
    size_t nrows, cap;
    int nf;
    int header;       /* csv/tsv: first row was taken as names */
    char *pattern;    /* text: the line_pattern used */
} grid;

static void grid_free(grid *g)
{
    for (size_t r = 0; r < g->nrows; r++) {
        for (int f = 0; f < g->nf; f++)
            free(g->rows[r][f]);
        free(g->rows[r]);
    }
    free(g->rows);
    list_free(&g->names);
    free(g->pattern);
    memset(g, 0, sizeof *g);
}

/* Takes ownership of vals (nv of them); widens the grid when a row has more fields. */
static int grid_add(grid *g, char **vals, int nv)
{
    if (g->nrows >= IMPORT_MAX_ROWS) {
        for (int i = 0; i < nv; i++)
            free(vals[i]);
        free(vals);
        return 0;
    }
    if (g->nrows == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 256;
        char ***p = realloc(g->rows, cap * sizeof *p);
        if (!p)
            return -1;
        g->rows = p;
        g->cap = cap;
    }
    if (nv < g->nf) {
        char **w = realloc(vals, (size_t)g->nf * sizeof *w);
        if (!w)
            return -1;
        for (int i = nv; i < g->nf; i++)
            w[i] = NULL;
        vals = w;
    } else if (nv > g->nf) {
        for (size_t r = 0; r < g->nrows; r++) {
            char **w = realloc(g->rows[r], (size_t)nv * sizeof *w);
            if (!w)
                return -1;
            for (int i = g->nf; i < nv; i++)
                w[i] = NULL;
            g->rows[r] = w;
        }
        g->nf = nv;
    }
    g->rows[g->nrows++] = vals;
    return 0;
}

static const char *next_line(const char **p, const char *end, size_t *len)
{
    if (*p >= end)
        return NULL;
    const char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    const char *e = nl ? nl : end;
    *p = nl ? nl + 1 : end;
    *len = (size_t)(e - s);
    if (*len && s[*len - 1] == '\r')
        (*len)--;
    return s;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i]))
            return 0;
    return 1;
}

static char *json_value(const cJSON *v)
{
    if (cJSON_IsString(v))
        return str_dup(v->valuestring);
    if (cJSON_IsBool(v))
        return str_dup(cJSON_IsTrue(v) ? "true" : "false");
    if (cJSON_IsNumber(v)) {
        char num[40];
        double x = v->valuedouble;
        if (x == floor(x) && fabs(x) < 9e15)
            snprintf(num, sizeof num, "%.0f", x);
        else
            snprintf(num, sizeof num, "%.17g", x);
        return str_dup(num);
    }
    return NULL; /* null, objects and arrays are not label or input candidates */
}

static int read_jsonl(grid *g, const char *s, size_t n, const char *path, pwb_err *e)
{
    const char *p = s, *end = s + n, *line;
    size_t len;
    long lineno = 0;
    while ((line = next_line(&p, end, &len)) && g->nrows < IMPORT_MAX_ROWS) {
        lineno++;
        if (blank(line, len))
            continue;
        cJSON *o = cJSON_ParseWithLength(line, len);
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            return err_set(e, PWB_EPARSE, "%s:%ld: not a JSON object", path, lineno);
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, o)
        {
            int known = 0;
            for (int i = 0; i < g->names.n && !known; i++)
                known = strcmp(g->names.v[i], it->string) == 0;
            if (!known && g->names.n < DS_MAX_FIELDS && list_add(&g->names, it->string)) {
                cJSON_Delete(o);
                return err_set(e, PWB_ENOMEM, "out of memory");
            }
        }
        char **vals = calloc((size_t)g->names.n + 1, sizeof *vals);
        if (!vals) {
            cJSON_Delete(o);
            return err_set(e, PWB_ENOMEM, "out of memory");
        }
        for (int i = 0; i < g->names.n; i++)
            vals[i] = json_value(cJSON_GetObjectItemCaseSensitive(o, g->names.v[i]));
        cJSON_Delete(o);
        if (grid_add(g, vals, g->names.n))
            return err_set(e, PWB_ENOMEM, "out of memory");
    }
    return PWB_OK;
}

/* One CSV record (RFC 4180: quoted fields may hold commas, quotes and newlines). */
static int csv_record(const char **pp, const char *end, char sep, int quotes, char ***out, int *nv)
{
    const char *p = *pp;
    pwb_buf field;
    buf_init(&field);
    char **vals = NULL;
    int n = 0, cap = 0, done = 0;
    while (!done) {
        buf_reset(&field);
        if (quotes && p < end && *p == '"') {
            p++;
            while (p < end) {
                if (*p == '"') {
                    if (p + 1 < end && p[1] == '"') {
                        buf_putc(&field, '"');
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                buf_putc(&field, *p++);
            }
        }
        while (p < end && *p != sep && *p != '\n')
            buf_putc(&field, *p++);
        if (field.len && field.data[field.len - 1] == '\r')
            field.data[--field.len] = '\0';
        if (p >= end || *p == '\n')
            done = 1;
        if (p < end)
            p++;
        if (n + 1 >= cap) {
            cap = cap ? 2 * cap : 8;
            if (cap > DS_MAX_FIELDS + 1)
                break;
            char **v = realloc(vals, (size_t)cap * sizeof *v);
            if (!v)
                break;
            vals = v;
        }
        vals[n++] = str_dup(field.data ? field.data : "");
    }
    buf_free(&field);
    *pp = p;
    *out = vals;
    *nv = n;
    return vals ? 0 : -1;
}

static int looks_number(const char *s)
{
    if (!s || !*s)
        return 0;
    char *end;
    strtod(s, &end);
    return *end == '\0';
}

/* The first row is a header when some column is numeric below it but not in it, or when every
 * first-row cell is a short identifier and the cells below it are not all identifiers. */
static int guess_header(const grid *g)
{
    if (g->nrows < 2)
        return 0;
    char **first = g->rows[0];
    for (int f = 0; f < g->nf; f++) {
        if (!first[f] || !first[f][0] || strlen(first[f]) > 64)
            return 0;
    }
    for (int f = 0; f < g->nf; f++) {
        size_t num = 0, tot = 0;
        for (size_t r = 1; r < g->nrows && r < 1000; r++, tot++)
            num += looks_number(g->rows[r][f]);
        if (tot && num == tot && !looks_number(first[f]))
            return 1;
    }
    int all_ident = 1;
    for (int f = 0; f < g->nf && all_ident; f++)
        for (const char *q = first[f]; *q && all_ident; q++)
            all_ident = isalnum((unsigned char)*q) || *q == '_' || *q == '-' || *q == '.' || *q == ' ';
    if (!all_ident)
        return 0;
    /* A column whose first cell reappears below is data, not a name. */
    for (int f = 0; f < g->nf; f++)
        for (size_t r = 1; r < g->nrows && r < 1000; r++)
            if (g->rows[r][f] && strcmp(g->rows[r][f], first[f]) == 0)
                return 0;
    return 1;
}

static int read_table(grid *g, const char *s, size_t n, char sep, int header_flag, pwb_err *e)
{
    const char *p = s, *end = s + n;
    while (p < end && g->nrows < IMPORT_MAX_ROWS) {
        char **vals;
        int nv;
        if (csv_record(&p, end, sep, sep == ',', &vals, &nv))
            return err_set(e, PWB_ENOMEM, "out of memory");
        if (nv == 1 && blank(vals[0], strlen(vals[0]))) {
            free(vals[0]);
            free(vals);
            continue;
        }
        if (grid_add(g, vals, nv))
            return err_set(e, PWB_ENOMEM, "out of memory");
    }
    g->header = header_flag >= 0 ? header_flag : guess_header(g);
    if (g->header && g->nrows > 0) {
        char **first = g->rows[0];
        for (int f = 0; f < g->nf; f++) {
            char name[32];
            snprintf(name, sizeof name, "c%d", f + 1);
            if (list_add(&g->names, first[f] && first[f][0] ? first[f] : name))
                return err_set(e, PWB_ENOMEM, "out of memory");
            free(first[f]);
        }
        free(first);
        memmove(g->rows, g->rows + 1, (g->nrows - 1) * sizeof *g->rows);
        g->nrows--;
    }
    return PWB_OK;
}

/* Plain text, one example per line: fastText ("__label__pos text"), "label<space>text" when the
 * first words are few, or a pattern from --pattern with named groups. */
static int read_text(grid *g, const char *s, size_t n, const char *pattern, pwb_err *e)
{
    const char *p = s, *end = s + n, *line;
    size_t len, lines = 0, fasttext = 0;
    catalog_list firsts = {0};
    while ((line = next_line(&p, end, &len)) && lines < 2000) {
        if (blank(line, len))
            continue;
        lines++;
        fasttext += len > 9 && memcmp(line, "__label__", 9) == 0;
        size_t w = 0;
        while (w < len && !isspace((unsigned char)line[w]))
            w++;
        char word[128];
        size_t wl = w < sizeof word - 1 ? w : sizeof word - 1;
        memcpy(word, line, wl);
        word[wl] = '\0';
        int seen = 0;
        for (int i = 0; i < firsts.n && !seen; i++)
            seen = strcmp(firsts.v[i], word) == 0;
        if (!seen && firsts.n <= IMPORT_MAX_LABELS)
            list_add(&firsts, word);
    }
    int few = firsts.n >= 2 && firsts.n <= 20 && lines >= 4 * (size_t)firsts.n;
    list_free(&firsts);
    if (pattern) {
        g->pattern = str_dup(pattern);
    } else if (fasttext == lines && lines > 0) {
        g->pattern = str_dup("^__label__(?<label>\\S+)\\s+(?<text>.*)$");
    } else if (few) {
        g->pattern = str_dup("^(?<label>\\S+)\\s+(?<text>.*)$");
    } else {
        return err_set(e, PWB_EINVAL, "cannot tell where the label is on each line; give --pattern with named "
                       "groups, e.g. '^(?<text>.*)\\t(?<label>\\S+)$'");
    }
    if (!g->pattern)
        return err_set(e, PWB_ENOMEM, "out of memory");
    if (pattern)
        return PWB_OK; /* the loader applies it; guessing needs the fields, so let the user name them */
    list_add(&g->names, "label");
    list_add(&g->names, "text");
    p = s;
    while ((line = next_line(&p, end, &len)) && g->nrows < IMPORT_MAX_ROWS) {
        if (blank(line, len))
            continue;
        size_t off = fasttext == lines ? 9 : 0, w = off;
        while (w < len && !isspace((unsigned char)line[w]))
            w++;
        size_t t = w;
        while (t < len && isspace((unsigned char)line[t]))
            t++;
        char **vals = calloc(2, sizeof *vals);
        if (!vals || !(vals[0] = str_ndup(line + off, w - off)) || !(vals[1] = str_ndup(line + t, len - t))) {
            if (vals) {
                free(vals[0]);
                free(vals);
            }
            return err_set(e, PWB_ENOMEM, "out of memory");
        }
        if (grid_add(g, vals, 2))
            return err_set(e, PWB_ENOMEM, "out of memory");
    }
    return PWB_OK;
}

static int field_index(const grid *g, const char *name)
{
    for (int f = 0; f < g->names.n; f++)
        if (strcmp(g->names.v[f], name) == 0)
            return f;
    long k;
    if (str_to_long(name, &k) == 0 && k >= 1 && k <= g->names.n)
        return (int)k - 1;
    return -1;
}

/* Distinct values of a field (capped); -1 when beyond the cap. */
static int distinct(const grid *g, int f, catalog_list *out)
{
    for (size_t r = 0; r < g->nrows; r++) {
        const char *v = g->rows[r][f];
        if (!v || !v[0])
            continue;
        int seen = 0;
        for (int i = out->n - 1; i >= 0 && !seen; i--)
            seen = strcmp(out->v[i], v) == 0;
        if (seen)
            continue;
        if (out->n >= IMPORT_MAX_LABELS)
            return -1;
        if (list_add(out, v))
            return -1;
    }
    return out->n;
}

static double mean_len(const grid *g, int f)
{
    double sum = 0;
    size_t n = 0;
    for (size_t r = 0; r < g->nrows; r++)
        if (g->rows[r][f]) {
            sum += (double)strlen(g->rows[r][f]);
            n++;
        }
    return n ? sum / (double)n : 0;
}

static int label_name_score(const char *name)
{
    static const char *pref[] = {"label", "labels", "class", "category", "sentiment", "target", "answer", "y", "gold",
                                 NULL};
    for (int i = 0; pref[i]; i++)
        if (strcasecmp(name, pref[i]) == 0)
            return 10 - i;
    return 0;
}

static int cmp_values(const void *a, const void *b)
{
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    if (looks_number(x) && looks_number(y)) {
        double dx = strtod(x, NULL), dy = strtod(y, NULL);
        return (dx > dy) - (dx < dy);
    }
    return strcmp(x, y);
}

/* Splits "a,b,c" into a list. */
static int split_csv(const char *s, catalog_list *out)
{
    while (s && *s) {
        const char *c = strchr(s, ',');
        size_t n = c ? (size_t)(c - s) : strlen(s);
        char *v = str_ndup(s, n);
        if (!v || list_add(out, str_trim(v))) {
            free(v);
            return -1;
        }
        free(v);
        s = c ? c + 1 : s + n;
    }
    return 0;
}

/* How the card names the file: relative to the card's folder or to a $PWB_DATA_PATH folder
 * when it lies inside one (the card stays portable), else absolute. */
static int card_file_ref(const char *file, const char *card_dir, pwb_buf *out)
{
    char fabs[PATH_MAX], dabs[PATH_MAX];
    buf_reset(out);
    if (!realpath(file, fabs))
        return buf_puts(out, file);
    const char *dp = cli_data_path();
    pwb_buf dirs;
    buf_init(&dirs);
    buf_printf(&dirs, "%s%s%s", card_dir, dp[0] ? ":" : "", dp);
    int rc = -1;
    for (const char *p = dirs.data; p && *p && rc;) {
        const char *c = strchr(p, ':');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        char d[PATH_MAX];
        if (n && n < sizeof d) {
            memcpy(d, p, n);
            d[n] = '\0';
            if (realpath(d, dabs)) {
                size_t dl = strlen(dabs);
                if (strncmp(fabs, dabs, dl) == 0 && fabs[dl] == '/')
                    rc = buf_puts(out, fabs + dl + 1);
            }
        }
        p = c ? c + 1 : p + n;
    }
    buf_free(&dirs);
    return rc ? buf_puts(out, fabs) : 0;
}

static const char *guess_format(const char *path, const char *s, size_t n)
{
    if (str_ends(path, ".jsonl") || str_ends(path, ".json") || str_ends(path, ".ndjson"))
        return "jsonl";
    if (str_ends(path, ".csv"))
        return "csv";
    if (str_ends(path, ".tsv") || str_ends(path, ".tab"))
        return "tsv";
    if (str_ends(path, ".txt"))
        return "text";
    size_t i = 0;
    while (i < n && isspace((unsigned char)s[i]))
        i++;
    if (i < n && s[i] == '{')
        return "jsonl";
    const char *nl = memchr(s + i, '\n', n - i);
    size_t ll = nl ? (size_t)(nl - (s + i)) : n - i;
    if (memchr(s + i, '\t', ll))
        return "tsv";
    if (memchr(s + i, ',', ll))
        return "csv";
    return "text";
}

static void sanitize_name(const char *in, char *out, size_t cap)
{
    size_t j = 0;
    for (const char *p = in; *p && j + 1 < cap; p++)
        out[j++] = isalnum((unsigned char)*p) || *p == '_' || *p == '-' ? *p : '_';
    out[j] = '\0';
    if (!j)
        str_copy(out, cap, "dataset");
}

int cmd_dataset_import(const cli_args *a)
{
    const char *file = a->pos[0];
    pwb_err e;
    err_clear(&e);
    pwb_buf text, out, tmp, ref, dir;
    buf_init(&text);
    buf_init(&out);
    buf_init(&tmp);
    buf_init(&ref);
    buf_init(&dir);
    grid g;
    memset(&g, 0, sizeof g);
    catalog_list labels = {0}, verbs = {0};
    cJSON *card = NULL;
    ds_card c;
    card_init(&c);
    int code = EXIT_PWB_OK;
    int header_flag = cli_flag(a, "header") ? 1 : cli_flag(a, "no-header") ? 0 : -1;
    if (cli_flag(a, "header") && cli_flag(a, "no-header")) {
        cli_usage_error(a->cmd, "--header and --no-header exclude each other");
        return EXIT_PWB_USAGE;
    }
    int rc = file_read_all(file, IMPORT_MAX_BYTES, &text, &e);
    const char *fmt = cli_str(a, "format", NULL);
    if (!rc && !fmt)
        fmt = guess_format(file, text.data, text.len);
    if (!rc && strcmp(fmt, "jsonl") && strcmp(fmt, "csv") && strcmp(fmt, "tsv") && strcmp(fmt, "text")) {
        cli_usage_error(a->cmd, "--format must be jsonl, csv, tsv or text (got '%s')", fmt);
        code = EXIT_PWB_USAGE;
        goto done;
    }
    if (!rc && !utf8_valid(text.data, text.len))
        rc = err_set(&e, PWB_EPARSE, "%s: not UTF-8 text", file);
    if (!rc) {
        if (!strcmp(fmt, "jsonl"))
            rc = read_jsonl(&g, text.data, text.len, file, &e);
        else if (!strcmp(fmt, "csv") || !strcmp(fmt, "tsv"))
            rc = read_table(&g, text.data, text.len, fmt[0] == 'c' ? ',' : '\t', header_flag, &e);
        else
            rc = read_text(&g, text.data, text.len, cli_str(a, "pattern", NULL), &e);
    }
    if (rc)
        goto fail;
    /* Name the columns of a headerless table after the roles found below. */
    int named = g.names.n > 0;
    for (int f = g.names.n; f < g.nf; f++) {
        char name[32];
        snprintf(name, sizeof name, "c%d", f + 1);
        if (list_add(&g.names, name)) {
            rc = err_set(&e, PWB_ENOMEM, "out of memory");
            goto fail;
        }
    }
    if (g.nrows == 0 && !g.pattern) {
        rc = err_set(&e, PWB_EINVAL, "%s: no records found", file);
        goto fail;
    }
    const char *in_opt = cli_str(a, "input", NULL), *ans_opt = cli_str(a, "answer", NULL);
    int fin = -1, fans = -1;
    if (g.pattern && cli_str(a, "pattern", NULL)) {
        /* With a user's pattern the fields are its groups: the user names input and answer. */
        if (!in_opt || !ans_opt) {
            cli_usage_error(a->cmd, "with --pattern, give --input and --answer (group names)");
            code = EXIT_PWB_USAGE;
            goto done;
        }
    } else {
        if (in_opt && (fin = field_index(&g, in_opt)) < 0) {
            rc = err_set(&e, PWB_EINVAL, "%s: no field '%s'", file, in_opt);
            goto fail;
        }
        if (ans_opt && (fans = field_index(&g, ans_opt)) < 0) {
            rc = err_set(&e, PWB_EINVAL, "%s: no field '%s'", file, ans_opt);
            goto fail;
        }
        if (fans < 0) {
            int best = -1, best_n = 0, best_score = -1;
            for (int f = 0; f < g.nf; f++) {
                if (f == fin)
                    continue;
                catalog_list d = {0};
                int nd = distinct(&g, f, &d);
                list_free(&d);
                if (nd < 2 || (size_t)nd > g.nrows / 2 + 1)
                    continue;
                int score = label_name_score(g.names.v[f]);
                if (score > best_score || (score == best_score && nd < best_n)) {
                    best = f;
                    best_n = nd;
                    best_score = score;
                }
            }
            if (best < 0) {
                rc = err_set(&e, PWB_EINVAL, "%s: no field looks like a label (2..%d distinct values); give --answer",
                             file, IMPORT_MAX_LABELS);
                goto fail;
            }
            fans = best;
        }
        if (fin < 0) {
            double best = -1;
            for (int f = 0; f < g.nf; f++) {
                double m = f == fans ? -1 : mean_len(&g, f);
                if (m > best) {
                    best = m;
                    fin = f;
                }
            }
            if (fin < 0) {
                rc = err_set(&e, PWB_EINVAL, "%s: no field for the input text; give --input", file);
                goto fail;
            }
        }
        /* Headerless tables: call the roles by name. */
        if (!named && !g.pattern) {
            free(g.names.v[fin]);
            g.names.v[fin] = str_dup("text");
            free(g.names.v[fans]);
            g.names.v[fans] = str_dup("label");
            if (!g.names.v[fin] || !g.names.v[fans]) {
                rc = err_set(&e, PWB_ENOMEM, "out of memory");
                goto fail;
            }
        }
    }
    /* Labels and their verbalizers. */
    if (cli_str(a, "labels", NULL)) {
        if (split_csv(cli_str(a, "labels", NULL), &labels))
            rc = err_set(&e, PWB_ENOMEM, "out of memory");
    } else if (fans >= 0) {
        if (distinct(&g, fans, &labels) < 0)
            rc = err_set(&e, PWB_EINVAL, "%s: field '%s' has more than %d distinct values; give --labels", file,
                         g.names.v[fans], IMPORT_MAX_LABELS);
        else if (labels.n)
            qsort(labels.v, (size_t)labels.n, sizeof *labels.v, cmp_values);
    } else {
        cli_usage_error(a->cmd, "with --pattern, give --labels");
        code = EXIT_PWB_USAGE;
        goto done;
    }
    if (rc)
        goto fail;
    if (labels.n > IMPORT_MAX_LABELS) {
        rc = err_set(&e, PWB_ERANGE, "more than %d labels", IMPORT_MAX_LABELS);
        goto fail;
    }
    if (labels.n < 2) {
        rc = err_set(&e, PWB_EINVAL, "%s: a classification card needs at least two labels (found %d)", file, labels.n);
        goto fail;
    }
    int numeric_labels = 1;
    if (cli_str(a, "verbalizers", NULL)) {
        if (split_csv(cli_str(a, "verbalizers", NULL), &verbs)) {
            rc = err_set(&e, PWB_ENOMEM, "out of memory");
            goto fail;
        }
        if (verbs.n != labels.n) {
            cli_usage_error(a->cmd, "--verbalizers has %d words for %d labels", verbs.n, labels.n);
            code = EXIT_PWB_USAGE;
            goto done;
        }
        numeric_labels = 0;
    } else {
        for (int i = 0; i < labels.n; i++) {
            const char *v = labels.v[i];
            numeric_labels &= looks_number(v);
            /* true/false answers read best as yes/no */
            list_add(&verbs, !strcasecmp(v, "true") ? "yes" : !strcasecmp(v, "false") ? "no" : v);
        }
    }

    /* Where the card goes, and how it names the file. */
    char stem[128], name[128];
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    str_copy(stem, sizeof stem, base);
    char *dot = strchr(stem, '.');
    if (dot && dot != stem)
        *dot = '\0';
    sanitize_name(cli_str(a, "name", stem), name, sizeof name);
    const char *dest = cli_str(a, "output", NULL);
    pwb_buf defpath;
    buf_init(&defpath);
    buf_printf(&defpath, "datasets/%s.json", name);
    int to_stdout = dest && strcmp(dest, "-") == 0;
    if (!dest || to_stdout)
        dest = to_stdout ? NULL : defpath.data;
    if (dest && file_exists(dest) && !cli_flag(a, "force")) {
        fprintf(stderr, "pwb: %s exists (use --force to overwrite)\n", dest);
        buf_free(&defpath);
        code = EXIT_PWB_INPUT;
        goto done;
    }
    file_dirname(dest ? dest : "datasets/x.json", &dir);
    if (card_file_ref(file, dir.data, &ref)) {
        buf_free(&defpath);
        rc = err_set(&e, PWB_ENOMEM, "out of memory");
        goto fail;
    }
    char sha[65];
    if ((rc = file_sha256(file, sha, &e))) {
        buf_free(&defpath);
        goto fail;
    }
    const char *split = cli_str(a, "split", "dev");

    card = cJSON_CreateObject();
    cJSON_AddStringToObject(card, "name", name);
    cJSON_AddStringToObject(card, "task", "classification");
    pwb_buf desc;
    buf_init(&desc);
    buf_printf(&desc, "Imported from %s by pwb dataset import.", base);
    cJSON_AddStringToObject(card, "description", desc.data);
    buf_reset(&desc);
    const char *instr = cli_str(a, "instruction", NULL);
    if (!instr) {
        buf_puts(&desc, "Classify the text as one of: ");
        for (int i = 0; i < verbs.n; i++)
            buf_printf(&desc, "%s%s", i ? ", " : "", verbs.v[i]);
        buf_puts(&desc, ".");
        instr = desc.data;
    }
    cJSON_AddStringToObject(card, "instruction", instr);
    cJSON_AddStringToObject(card, "input_field", in_opt && g.pattern ? in_opt : g.names.v[fin]);
    cJSON_AddStringToObject(card, "answer_field", ans_opt && g.pattern ? ans_opt : g.names.v[fans]);
    cJSON *jl = cJSON_AddArrayToObject(card, "labels");
    for (int i = 0; i < labels.n; i++) {
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "value", labels.v[i]);
        cJSON_AddStringToObject(l, "verbalizer", verbs.v[i]);
        cJSON_AddItemToArray(jl, l);
    }
    cJSON *splits = cJSON_AddObjectToObject(card, "splits");
    cJSON *sp = cJSON_AddObjectToObject(splits, split);
    cJSON_AddStringToObject(sp, "file", ref.data);
    cJSON_AddStringToObject(sp, "format", fmt);
    if (!strcmp(fmt, "csv") || !strcmp(fmt, "tsv")) {
        cJSON_AddBoolToObject(sp, "header", g.header);
        if (!g.header) {
            cJSON *cols = cJSON_CreateStringArray((const char *const *)g.names.v, g.names.n);
            cJSON_AddItemToObject(sp, "columns", cols);
        }
    }
    if (g.pattern)
        cJSON_AddStringToObject(sp, "line_pattern", g.pattern);
    cJSON_AddStringToObject(sp, "sha256", sha);
    buf_free(&desc);
    char *json = cJSON_Print(card);
    if (!json) {
        buf_free(&defpath);
        rc = err_set(&e, PWB_ENOMEM, "out of memory");
        goto fail;
    }
    /* cJSON indents with tabs; a card is for people to edit: two spaces, "key": value. Raw tabs
     * occur only as layout (tabs inside strings are escaped). */
    for (const char *q = json; *q; q++) {
        if (*q != '\t')
            buf_putc(&out, *q);
        else if (q > json && q[-1] == ':')
            buf_putc(&out, ' ');
        else
            buf_puts(&out, "  ");
    }
    buf_putc(&out, '\n');
    cJSON_free(json);

    /* Prove the card: write it beside its destination (relative file names resolve the same),
     * load the file through it, then move it into place. */
    if (file_mkdirs(dir.data, &e)) {
        buf_free(&defpath);
        rc = e.code;
        goto fail;
    }
    buf_printf(&tmp, "%s/.%s.import-%ld.json", dir.data, name, (long)getpid());
    rc = file_write_atomic(tmp.data, out.data, out.len, &e);
    if (!rc)
        rc = card_load(&c, tmp.data, &e);
    ds_data d;
    ds_data_init(&d);
    if (!rc)
        rc = dataset_load(&c, split, cli_data_path(), &d, &e);
    if (!rc && dest) {
        if (rename(tmp.data, dest) != 0)
            rc = err_set(&e, PWB_EIO, "%s: cannot write the card", dest);
    }
    unlink(tmp.data);
    if (!rc) {
        if (to_stdout)
            fputs(out.data, stdout);
        size_t counts[IMPORT_MAX_LABELS] = {0};
        dataset_label_counts(&d, &c, counts);
        fprintf(stderr, "pwb: %s%s: %zu rows, %s, input '%s', answer '%s', labels:", dest ? "wrote " : "",
                dest ? dest : name, d.n, fmt, in_opt && g.pattern ? in_opt : g.names.v[fin],
                ans_opt && g.pattern ? ans_opt : g.names.v[fans]);
        for (int i = 0; i < c.n_labels && i < IMPORT_MAX_LABELS; i++)
            fprintf(stderr, " %s=%zu", c.labels[i].verbalizer, counts[i]);
        fprintf(stderr, "\n");
        if (numeric_labels)
            fprintf(stderr, "pwb: warning: the labels are numbers; a model answers better with words: "
                            "set --verbalizers (e.g. --verbalizers negative,positive)\n");
    }
    ds_data_free(&d);
    buf_free(&defpath);
    if (rc)
        goto fail;
    goto done;
fail:
    code = cli_fail(&e);
done:
    cJSON_Delete(card);
    card_free(&c);
    grid_free(&g);
    list_free(&labels);
    list_free(&verbs);
    buf_free(&text);
    buf_free(&out);
    buf_free(&tmp);
    buf_free(&ref);
    buf_free(&dir);
    return code;
}
