/* Guessing a card for a data file: format, header, line pattern, input and answer fields, labels,
 * per-row options. The file is read by the dataset loaders (dataset_read_file), so what is guessed
 * here is what `pwb run` will read. */
#include "task/import.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "task/dataset.h"
#include "task/rx.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/str.h"

#define IMPORT_PEEK (64u << 10) /* bytes looked at to guess a format or a line pattern */

typedef struct strlist {
    char **v;
    int n;
} strlist;

static void sl_free(strlist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int sl_add(strlist *l, const char *s, size_t n)
{
    char **v = realloc(l->v, ((size_t)l->n + 1) * sizeof *v);
    if (!v)
        return -1;
    l->v = v;
    if (!(v[l->n] = str_ndup(s, n)))
        return -1;
    l->n++;
    return 0;
}

static int sl_has(const strlist *l, const char *s)
{
    for (int i = l->n - 1; i >= 0; i--)
        if (!strcmp(l->v[i], s))
            return 1;
    return 0;
}

/* "a,b,c" → list (items trimmed). */
static int split_list(const char *s, strlist *out)
{
    while (s && *s) {
        const char *c = strchr(s, ',');
        size_t n = c ? (size_t)(c - s) : strlen(s);
        while (n && isspace((unsigned char)*s)) {
            s++;
            n--;
        }
        size_t k = n;
        while (k && isspace((unsigned char)s[k - 1]))
            k--;
        if (sl_add(out, s, k))
            return -1;
        s += n;
        if (*s == ',')
            s++;
    }
    return 0;
}

static int looks_number(const char *s)
{
    if (!s || !*s)
        return 0;
    char *end;
    strtod(s, &end);
    return *end == '\0';
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

static const char *fval(const ds_data *d, size_t r, int f)
{
    return f >= 0 && f < d->ex[r].n_fields ? d->ex[r].fields[f] : NULL;
}

/* Distinct non-empty values of a field; -1 beyond IMPORT_MAX_LABELS. */
static int distinct(const ds_data *d, int f, strlist *out)
{
    for (size_t r = 0; r < d->n; r++) {
        const char *v = fval(d, r, f);
        if (!v || !v[0] || sl_has(out, v))
            continue;
        if (out->n >= IMPORT_MAX_LABELS || sl_add(out, v, strlen(v)))
            return -1;
    }
    return out->n;
}

static double mean_len(const ds_data *d, int f)
{
    double sum = 0;
    size_t n = 0;
    for (size_t r = 0; r < d->n; r++)
        if (fval(d, r, f)) {
            sum += (double)strlen(fval(d, r, f));
            n++;
        }
    return n ? sum / (double)n : 0;
}

static int label_name_score(const char *name)
{
    static const char *pref[] = {"label", "labels", "class", "category", "sentiment", "target", "answer", "answerKey",
                                 "y", "gold", NULL};
    for (int i = 0; pref[i]; i++)
        if (strcasecmp(name, pref[i]) == 0)
            return 20 - i;
    return 0;
}

/* The first row is a header when some column is numeric below it but not in it, or when every
 * first-row cell is a short identifier that does not reappear below. */
static int guess_header(const ds_data *d)
{
    if (d->n < 2)
        return 0;
    for (int f = 0; f < d->n_fields; f++) {
        const char *h = fval(d, 0, f);
        if (!h || !h[0] || strlen(h) > 64)
            return 0;
    }
    for (int f = 0; f < d->n_fields; f++) {
        size_t num = 0, tot = 0;
        for (size_t r = 1; r < d->n && r < 1000; r++, tot++)
            num += looks_number(fval(d, r, f));
        if (tot && num == tot && !looks_number(fval(d, 0, f)))
            return 1;
    }
    for (int f = 0; f < d->n_fields; f++)
        for (const char *q = fval(d, 0, f); *q; q++)
            if (!(isalnum((unsigned char)*q) || strchr("_-. ", *q)))
                return 0;
    for (int f = 0; f < d->n_fields; f++)
        for (size_t r = 1; r < d->n && r < 1000; r++)
            if (fval(d, r, f) && !strcmp(fval(d, r, f), fval(d, 0, f)))
                return 0;
    return 1;
}

static const char *guess_format(const char *path, const char *s, size_t n)
{
    if (str_ends(path, ".jsonl") || str_ends(path, ".json") || str_ends(path, ".ndjson"))
        return "jsonl";
    if (str_ends(path, ".csv"))
        return "csv";
    if (str_ends(path, ".tsv") || str_ends(path, ".tab"))
        return "tsv";
    size_t i = 0;
    while (i < n && isspace((unsigned char)s[i]))
        i++;
    if (i < n && s[i] == '{')
        return "jsonl";
    /* a .txt (or anything else) whose lines all hold the same number of tabs is a TSV */
    int tabs = -1, lines = 0, same = 1;
    for (size_t a = 0; a < n && lines < 200 && same;) {
        const char *nl = memchr(s + a, '\n', n - a);
        size_t len = nl ? (size_t)(nl - (s + a)) : n - a;
        int t = 0;
        for (size_t k = 0; k < len; k++)
            t += s[a + k] == '\t';
        if (len && !(len == 1 && s[a] == '\r')) {
            same = tabs < 0 || t == tabs;
            tabs = t;
            lines++;
        }
        a += len + 1;
    }
    if (same && tabs > 0)
        return "tsv";
    if (str_ends(path, ".txt"))
        return "text";
    const char *nl = memchr(s + i, '\n', n - i);
    size_t ll = nl ? (size_t)(nl - (s + i)) : n - i;
    if (memchr(s + i, ',', ll))
        return "csv";
    return "text";
}

/* Plain text, one example per line: fastText ("__label__pos text"), TREC ("DESC:manner How
 * did ..."), or "label text" when the first words are few. */
static int guess_pattern(const char *s, size_t n, const char **pattern, pwb_err *e, const char *path)
{
    size_t lines = 0, fasttext = 0, trec = 0;
    strlist firsts = {0};
    pcre2_code *re = rx_compile("^[^\\s:]+:\\S+\\s", "TREC pattern", e);
    if (!re)
        return e ? e->code : PWB_EINVAL;
    for (size_t a = 0; a < n && lines < 2000;) {
        const char *line = s + a, *nl = memchr(line, '\n', n - a);
        size_t len = nl ? (size_t)(nl - line) : n - a;
        a += len + 1;
        if (len && line[len - 1] == '\r')
            len--;
        size_t w = 0;
        while (w < len && !isspace((unsigned char)line[w]))
            w++;
        if (w == 0)
            continue;
        lines++;
        fasttext += len > 9 && !memcmp(line, "__label__", 9);
        size_t so, eo;
        trec += rx_find(re, line, len, &so, &eo) == 1;
        char word[128];
        size_t wl = w < sizeof word - 1 ? w : sizeof word - 1;
        memcpy(word, line, wl);
        word[wl] = '\0';
        if (!sl_has(&firsts, word) && firsts.n <= IMPORT_MAX_LABELS && sl_add(&firsts, word, wl)) {
            sl_free(&firsts);
            pcre2_code_free(re);
            return err_set(e, PWB_ENOMEM, "out of memory");
        }
    }
    pcre2_code_free(re);
    int few = firsts.n >= 2 && firsts.n <= 20 && lines >= 4 * (size_t)firsts.n;
    sl_free(&firsts);
    if (lines && fasttext == lines)
        *pattern = "^__label__(?<label>\\S+)\\s+(?<text>.*)$";
    else if (lines && trec == lines)
        *pattern = "^(?<label>[^\\s:]+):(?<fine>\\S+)\\s+(?<text>.*)$";
    else if (few)
        *pattern = "^(?<label>\\S+)\\s+(?<text>.*)$";
    else
        return err_set(e, PWB_EINVAL, "%s: cannot tell where the label is on each line; give --pattern with named "
                       "groups, e.g. '^(?<text>.*)\\t(?<label>\\S+)$'", path);
    return PWB_OK;
}

/* The fields an input template names ({{a}}, {{b.c}}), checked against the file's. */
static int template_fields(const ds_data *d, const char *tpl, const char *path, pwb_err *e)
{
    for (const char *p = strstr(tpl, "{{"); p; p = strstr(p, "{{")) {
        p += 2;
        while (*p == '{' || *p == '&' || *p == ' ')
            p++;
        size_t n = strcspn(p, "} ");
        if (*p == '!' || *p == '#' || *p == '^' || *p == '/' || n == 0)
            continue;
        char name[256];
        if (n >= sizeof name)
            return err_set(e, PWB_EINVAL, "%s: input template: a field name is too long", path);
        memcpy(name, p, n);
        name[n] = '\0';
        if (dataset_field_index(d, name) < 0 && !strchr(name, '.') && !strchr(name, '['))
            return err_set(e, PWB_EINVAL, "%s: input template names field '%s', which the file does not have", path,
                           name);
    }
    return PWB_OK;
}

/* Per-row multiple choice in JSONL: a field holding {"label": [...], "text": [...]} (the Hugging
 * Face layout) or a list of option strings of one length. Fills the options, letters and the
 * answer mapping on the card; 0 when the file has no such field. */
static int guess_options(const ds_data *d, cJSON *card, int *fopt, int *k_out)
{
    for (int f = 0; f < d->n_fields; f++) {
        int k = -1, hf = 1, ok = d->n > 0;
        cJSON *labels = NULL;
        for (size_t r = 0; r < d->n && ok && r < 2000; r++) {
            cJSON *j = fval(d, r, f) ? cJSON_Parse(fval(d, r, f)) : NULL;
            const cJSON *t = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "text") : j;
            int kk = cJSON_IsArray(t) ? cJSON_GetArraySize(t) : -1;
            if (r == 0) {
                hf = cJSON_IsObject(j);
                if (hf && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "label")))
                    labels = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(j, "label"), 1);
            }
            ok = kk >= 2 && kk <= 26 && (k < 0 || kk == k) && hf == cJSON_IsObject(j) && cJSON_IsString(cJSON_GetArrayItem(t, 0));
            k = kk;
            cJSON_Delete(j);
        }
        if (!ok) {
            cJSON_Delete(labels);
            continue;
        }
        pwb_buf path;
        buf_init(&path);
        if (hf) {
            cJSON *o = cJSON_AddObjectToObject(card, "options");
            buf_printf(&path, "%s.text", d->field_names[f]);
            cJSON_AddStringToObject(o, "text", path.data);
            if (labels) {
                buf_reset(&path);
                buf_printf(&path, "%s.label", d->field_names[f]);
                cJSON_AddStringToObject(o, "label", path.data);
            }
        } else {
            cJSON_AddStringToObject(card, "options", d->field_names[f]);
        }
        buf_free(&path);
        cJSON *jl = cJSON_AddArrayToObject(card, "labels");
        for (int i = 0; i < k; i++) {
            const cJSON *l = labels ? cJSON_GetArrayItem(labels, i) : NULL;
            char letter[2] = {(char)('A' + i), 0};
            cJSON_AddItemToArray(jl, cJSON_CreateString(cJSON_IsString(l) ? l->valuestring : letter));
        }
        cJSON_Delete(labels);
        *fopt = f;
        *k_out = k;
        return 1;
    }
    return 0;
}

/* Numeric answer keys (0-based or 1-based) onto the card's letters. */
static void map_numeric_answers(const ds_data *d, int fans, cJSON *card, int k)
{
    int lo = 1000, hi = -1;
    for (size_t r = 0; r < d->n; r++) {
        const char *v = fval(d, r, fans);
        long x;
        if (!v || str_to_long(v, &x) || x < 0 || x > 26)
            return;
        lo = (int)x < lo ? (int)x : lo;
        hi = (int)x > hi ? (int)x : hi;
    }
    int base = lo == 0 ? 0 : 1;
    if (hi - base >= k)
        return;
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(card, "labels");
    cJSON *m = cJSON_AddObjectToObject(card, "answer_map");
    for (int i = 0; i < k; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", i + base);
        cJSON_AddStringToObject(m, key, cJSON_GetArrayItem(labels, i)->valuestring);
    }
}

void ds_import_free(ds_import *im)
{
    if (!im)
        return;
    cJSON_Delete(im->card);
    free(im->input);
    free(im->answer);
    memset(im, 0, sizeof *im);
}

int ds_import_guess(const ds_import_opts *o, ds_import *out, pwb_err *e)
{
    memset(out, 0, sizeof *out);
    const char *file = o->file;
    ds_data d;
    ds_data_init(&d);
    strlist labels = {0}, verbs = {0};
    int rc = PWB_OK;
    /* the format and, for text, the line pattern, from the file's first bytes */
    file_map m = {0};
    if ((rc = file_map_open(&m, file, e)))
        goto done;
    size_t pn = m.size < IMPORT_PEEK ? m.size : IMPORT_PEEK;
    const char *fmt = o->format ? o->format : guess_format(file, (const char *)m.data, pn);
    if (strcmp(fmt, "jsonl") && strcmp(fmt, "csv") && strcmp(fmt, "tsv") && strcmp(fmt, "text")) {
        rc = err_set(e, PWB_EINVAL, "%s: format must be jsonl, csv, tsv or text (got '%s')", file, fmt);
        goto done;
    }
    str_copy(out->format, sizeof out->format, fmt);
    const char *pattern = o->pattern;
    if (!strcmp(fmt, "text") && !pattern && (rc = guess_pattern((const char *)m.data, pn, &pattern, e, file)))
        goto done;
    file_map_close(&m);
    int table = !strcmp(fmt, "csv") || !strcmp(fmt, "tsv");
    if ((rc = dataset_read_file(file, fmt, table ? o->header > 0 : 1, pattern, IMPORT_MAX_ROWS, &d, e)))
        goto done;
    int header = table && o->header > 0;
    if (table && o->header < 0 && guess_header(&d)) { /* the first row named the columns */
        header = 1;
        ds_data_free(&d);
        if ((rc = dataset_read_file(file, fmt, 1, NULL, IMPORT_MAX_ROWS, &d, e)))
            goto done;
    }
    if (d.n == 0) {
        rc = err_set(e, PWB_EINVAL, "%s: no records found", file);
        goto done;
    }
    out->card = cJSON_CreateObject();
    cJSON *card = out->card;
    cJSON_AddStringToObject(card, "name", o->name);
    int fopt = -1, k = 0;
    out->multiple_choice = !strcmp(fmt, "jsonl") && !o->labels && guess_options(&d, card, &fopt, &k);
    /* the answer: given, else a field with few distinct values (a preferred name first) */
    int fin = -1, fans = -1;
    const char *in_tpl = o->input && strstr(o->input, "{{") ? o->input : NULL;
    if (o->input && !in_tpl && (fin = dataset_field_index(&d, o->input)) < 0) {
        rc = err_set(e, PWB_EINVAL, "%s: no field '%s'", file, o->input);
        goto done;
    }
    if (in_tpl && (rc = template_fields(&d, in_tpl, file, e)))
        goto done;
    if (o->answer && (fans = dataset_field_index(&d, o->answer)) < 0) {
        rc = err_set(e, PWB_EINVAL, "%s: no field '%s'", file, o->answer);
        goto done;
    }
    if (fans < 0) {
        int best_n = 0, best_score = -1;
        for (int f = 0; f < d.n_fields; f++) {
            if (f == fin || f == fopt)
                continue;
            strlist dv = {0};
            int nd = distinct(&d, f, &dv);
            sl_free(&dv);
            if (nd < 2 || (size_t)nd > d.n / 2 + 1)
                continue;
            int score = label_name_score(d.field_names[f]);
            if (score > best_score || (score == best_score && nd < best_n)) {
                fans = f;
                best_n = nd;
                best_score = score;
            }
        }
        if (fans < 0) {
            rc = err_set(e, PWB_EINVAL, "%s: no field looks like a label (2..%d distinct values); give --answer", file,
                         IMPORT_MAX_LABELS);
            goto done;
        }
    }
    if (fin < 0 && !in_tpl) { /* the input: the longest text */
        double best = -1;
        for (int f = 0; f < d.n_fields; f++) {
            double ml = f == fans || f == fopt ? -1 : mean_len(&d, f);
            if (ml > best) {
                best = ml;
                fin = f;
            }
        }
        if (fin < 0) {
            rc = err_set(e, PWB_EINVAL, "%s: no field for the input text; give --input", file);
            goto done;
        }
    }
    /* headerless tables: call the roles by name */
    if (table && !header) {
        for (int f = 0; f < d.n_fields; f++) {
            char nm[32];
            snprintf(nm, sizeof nm, "c%d", f + 1);
            char *v = str_dup(f == fin ? "text" : f == fans ? "label" : nm);
            if (!v) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                goto done;
            }
            free(d.field_names[f]);
            d.field_names[f] = v;
        }
    }
    out->input = str_dup(in_tpl ? in_tpl : d.field_names[fin]);
    out->answer = str_dup(d.field_names[fans]);
    if (!out->input || !out->answer) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    /* labels and their words */
    if (out->multiple_choice) {
        map_numeric_answers(&d, fans, card, k);
    } else {
        if (o->labels) {
            if (split_list(o->labels, &labels))
                rc = err_set(e, PWB_ENOMEM, "out of memory");
        } else if (distinct(&d, fans, &labels) < 0) {
            rc = err_set(e, PWB_EINVAL, "%s: field '%s' has more than %d distinct values; give --labels", file,
                         d.field_names[fans], IMPORT_MAX_LABELS);
        } else {
            qsort(labels.v, (size_t)labels.n, sizeof *labels.v, cmp_values);
        }
        if (rc)
            goto done;
        if (labels.n < 2) {
            rc = err_set(e, PWB_EINVAL, "%s: a classification card needs at least two labels (found %d)", file,
                         labels.n);
            goto done;
        }
        if (o->verbalizers) {
            if (split_list(o->verbalizers, &verbs)) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                goto done;
            }
            if (verbs.n != labels.n) {
                rc = err_set(e, PWB_EINVAL, "%s: --verbalizers has %d words for %d labels", file, verbs.n, labels.n);
                goto done;
            }
        } else {
            out->numeric_labels = 1;
            for (int i = 0; i < labels.n; i++) {
                const char *v = labels.v[i];
                out->numeric_labels &= looks_number(v);
                /* true/false answers read best as yes/no */
                const char *w = !strcasecmp(v, "true") ? "yes" : !strcasecmp(v, "false") ? "no" : v;
                if (sl_add(&verbs, w, strlen(w))) {
                    rc = err_set(e, PWB_ENOMEM, "out of memory");
                    goto done;
                }
            }
        }
    }
    /* the card, in the order people read it */
    cJSON *ordered = cJSON_CreateObject();
    cJSON_AddStringToObject(ordered, "name", o->name);
    cJSON_AddStringToObject(ordered, "task", out->multiple_choice ? "multiple_choice" : "classification");
    pwb_buf desc;
    buf_init(&desc);
    const char *base = strrchr(file, '/');
    buf_printf(&desc, "Imported from %s by pwb dataset import.", base ? base + 1 : file);
    cJSON_AddStringToObject(ordered, "description", desc.data);
    buf_reset(&desc);
    const char *instr = o->instruction;
    if (!instr && out->multiple_choice) {
        instr = "Answer the question by choosing the best of the options.";
    } else if (!instr) {
        buf_puts(&desc, "Classify the text as one of: ");
        for (int i = 0; i < verbs.n; i++)
            buf_printf(&desc, "%s%s", i ? ", " : "", verbs.v[i]);
        buf_puts(&desc, ".");
        instr = desc.data;
    }
    cJSON_AddStringToObject(ordered, "instruction", instr);
    cJSON_AddStringToObject(ordered, in_tpl ? "input_template" : "input_field", out->input);
    if (out->multiple_choice)
        cJSON_AddItemToObject(ordered, "options", cJSON_DetachItemFromObject(card, "options"));
    cJSON_AddStringToObject(ordered, "answer_field", out->answer);
    if (out->multiple_choice) {
        cJSON_AddItemToObject(ordered, "labels", cJSON_DetachItemFromObject(card, "labels"));
        if (cJSON_GetObjectItemCaseSensitive(card, "answer_map"))
            cJSON_AddItemToObject(ordered, "answer_map", cJSON_DetachItemFromObject(card, "answer_map"));
    } else {
        cJSON *jl = cJSON_AddArrayToObject(ordered, "labels");
        for (int i = 0; i < labels.n; i++) {
            cJSON *l = cJSON_CreateObject();
            cJSON_AddStringToObject(l, "value", labels.v[i]);
            cJSON_AddStringToObject(l, "verbalizer", verbs.v[i]);
            cJSON_AddItemToArray(jl, l);
        }
    }
    buf_free(&desc);
    cJSON *sp = cJSON_AddObjectToObject(cJSON_AddObjectToObject(ordered, "splits"), o->split);
    cJSON_AddStringToObject(sp, "file", o->file_ref ? o->file_ref : file);
    cJSON_AddStringToObject(sp, "format", fmt);
    if (table) {
        cJSON_AddBoolToObject(sp, "header", header);
        if (!header)
            cJSON_AddItemToObject(sp, "columns",
                                  cJSON_CreateStringArray((const char *const *)d.field_names, d.n_fields));
    }
    if (pattern && !strcmp(fmt, "text"))
        cJSON_AddStringToObject(sp, "line_pattern", pattern);
    if (o->sha256)
        cJSON_AddStringToObject(sp, "sha256", o->sha256);
    cJSON_Delete(out->card);
    out->card = ordered;
done:
    file_map_close(&m);
    sl_free(&labels);
    sl_free(&verbs);
    ds_data_free(&d);
    if (rc) {
        cJSON_Delete(out->card);
        out->card = NULL;
    }
    return rc;
}

char *ds_import_card_text(const ds_import *im)
{
    char *json = im->card ? cJSON_Print(im->card) : NULL;
    if (!json)
        return NULL;
    /* cJSON indents with tabs; raw tabs occur only as layout (tabs inside strings are escaped) */
    pwb_buf out;
    buf_init(&out);
    int bad = 0;
    for (const char *q = json; *q; q++) {
        if (*q != '\t')
            bad |= buf_putc(&out, *q);
        else if (q > json && q[-1] == ':')
            bad |= buf_putc(&out, ' ');
        else
            bad |= buf_puts(&out, "  ");
    }
    bad |= buf_putc(&out, '\n');
    cJSON_free(json);
    if (bad) {
        buf_free(&out);
        return NULL;
    }
    return buf_take(&out);
}
