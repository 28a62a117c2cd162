/* Dataset loaders: JSONL, CSV (RFC 4180), TSV (GLUE style, no quoting) and plain text, mapped
 * into examples through the card's field and label mapping. */
#include "task/dataset.h"

#include <math.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "task/mustache.h"
#include "task/rx.h"
#include "task/score.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/rng.h"
#include "util/sha256.h"
#include "util/str.h"
#include "util/utf8.h"

void ds_data_init(ds_data *d) { memset(d, 0, sizeof *d); }

static void example_free(ds_example *x, int n_fields)
{
    free(x->input);
    free(x->answer);
    free(x->rationale);
    dataset_choices_free(x->options, x->n_options);
    if (x->fields)
        for (int i = 0; i < n_fields; i++)
            free(x->fields[i]);
    free(x->fields);
}

void ds_data_free(ds_data *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        example_free(&d->ex[i], d->n_fields);
    free(d->ex);
    for (int i = 0; i < d->n_fields; i++)
        free(d->field_names[i]);
    free(d->field_names);
    free(d->split);
    free(d->path);
    free(d->answer_field);
    ds_data_init(d);
}

int dataset_field_index(const ds_data *d, const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < d->n_fields; i++)
        if (!strcmp(d->field_names[i], name))
            return i;
    /* A 1-based column number also names a field ("2" = the second column). */
    long k;
    if (name[0] >= '1' && name[0] <= '9' && str_to_long(name, &k) == 0 && k >= 1 && k <= d->n_fields)
        return (int)k - 1;
    return -1;
}

/* ---- the loader ---- */

typedef struct loader {
    const ds_card *c;
    const ds_split *sp;
    ds_data *d;
    pwb_err *e;
    const char *path;         /* resolved data file */
    const char *input_field;  /* effective mapping for this split */
    const char *answer_field;
    tpl_node *input_tpl;
    pcre2_code *extract, *rstrip, *line_re;
    size_t cap;
    char **vals; /* the record being built (lookup for the input template) */
    int nvals;
    const char *missing; /* a field the input template named but the record lacks */
    pwb_buf tmp;
    int raw;             /* dataset_read_file: fields only, no mapping */
    size_t max_rows;     /* raw: rows kept (0: all) */
    size_t seen;         /* data rows read so far */
} loader;

static int add_field_name(loader *L, const char *name, size_t len)
{
    ds_data *d = L->d;
    for (int i = 0; i < d->n_fields; i++)
        if (strlen(d->field_names[i]) == len && !memcmp(d->field_names[i], name, len))
            return i;
    if (d->n_fields >= DS_MAX_FIELDS)
        return -1;
    char **v = realloc(d->field_names, ((size_t)d->n_fields + 1) * sizeof *v);
    if (!v)
        return -1;
    d->field_names = v;
    if (!(v[d->n_fields] = str_ndup(name, len)))
        return -1;
    return d->n_fields++;
}

static int missing_field(loader *L, long line, const char *name)
{
    pwb_buf have;
    buf_init(&have);
    for (int i = 0; i < L->nvals && i < L->d->n_fields; i++)
        if (L->vals[i])
            buf_printf(&have, "%s%s", have.len ? ", " : "", L->d->field_names[i]);
    int rc = err_set(L->e, PWB_EINVAL, "%s:%ld: field '%s' named by %s is missing (fields: %s)", L->path, line, name,
                     L->c->path ? L->c->path : L->c->name, have.data ? have.data : "none");
    buf_free(&have);
    return rc;
}

static int rec_lookup(void *ud, const mus_frame *f, const char *name, mus_val *v)
{
    (void)f;
    loader *L = ud;
    if (str_starts(name, "fields."))
        name += 7;
    int i = dataset_field_index(L->d, name);
    if (i < 0 || i >= L->nvals || !L->vals[i]) {
        if (!L->missing)
            L->missing = name;
        return 0;
    }
    v->type = MV_STR;
    v->s = L->vals[i];
    return 1;
}

static char *apply_replace(const ds_card *c, const char *s)
{
    if (!c->n_replace)
        return str_dup(s);
    pwb_buf a, b;
    buf_init(&a);
    buf_init(&b);
    if (buf_puts(&a, s))
        return NULL;
    for (int r = 0; r < c->n_replace; r++) {
        const char *from = c->replace[2 * r], *to = c->replace[2 * r + 1];
        size_t fl = strlen(from);
        if (!strstr(a.data, from))
            continue;
        buf_reset(&b);
        const char *p = a.data;
        for (const char *m; (m = strstr(p, from)); p = m + fl)
            if (buf_append(&b, p, (size_t)(m - p)) || buf_puts(&b, to))
                goto oom;
        if (buf_puts(&b, p))
            goto oom;
        pwb_buf t = a;
        a = b;
        b = t;
    }
    buf_free(&b);
    return buf_take(&a);
oom:
    buf_free(&a);
    buf_free(&b);
    return NULL;
}

static char *trimmed_dup(const char *s)
{
    char *p = str_dup(s);
    return p ? str_trim(p) : NULL;
}

static int label_of(loader *L, const char *raw)
{
    const ds_card *c = L->c;
    for (int i = 0; i < c->n_labels; i++) {
        const char *v = L->sp->label_values ? L->sp->label_values[i] : c->labels[i].value;
        if (!strcmp(v, raw))
            return i;
    }
    return -1;
}

static int bad_label(loader *L, long line, const char *raw)
{
    pwb_buf have;
    buf_init(&have);
    for (int i = 0; i < L->c->n_labels; i++)
        buf_printf(&have, "%s%s", i ? ", " : "",
                   L->sp->label_values ? L->sp->label_values[i] : L->c->labels[i].value);
    int rc = err_set(L->e, PWB_EINVAL, "%s:%ld: %s '%.100s' is not %s (%s)%s", L->path, line,
                     L->c->n_option_fields ? "answer key" : "label", raw,
                     L->c->n_option_fields ? "among the options" : "one of the card's labels", have.data ? have.data : "",
                     L->c->n_answer_map ? "; the card's answer_map has no entry for it" : "");
    buf_free(&have);
    return rc;
}

static char *json_value_str(const cJSON *v);

void dataset_choices_free(char **v, int n)
{
    if (!v)
        return;
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

char **dataset_choices(const ds_card *c, const ds_example *x, int by_text, const char *delim, int *n)
{
    int k = by_text && x->n_options ? x->n_options : c->n_labels;
    char **v = calloc((size_t)k + 1, sizeof *v);
    if (!v)
        return NULL;
    for (int i = 0; i < k; i++) {
        const char *s = by_text && x->n_options ? x->options[i] : c->labels[i].verbalizer;
        pwb_buf b;
        buf_init(&b);
        if (buf_puts(&b, delim ? delim : "") || buf_puts(&b, s) || !(v[i] = buf_take(&b))) {
            buf_free(&b);
            dataset_choices_free(v, i);
            return NULL;
        }
    }
    *n = k;
    return v;
}

/* A field holding a list: a JSON array of scalars (how the loaders keep a JSON list). */
static int list_field(loader *L, long line, const char *name, cJSON **out)
{
    int i = dataset_field_index(L->d, name);
    if (i < 0 || i >= L->nvals || !L->vals[i])
        return missing_field(L, line, name);
    cJSON *a = cJSON_Parse(L->vals[i]);
    if (!cJSON_IsArray(a)) {
        cJSON_Delete(a);
        return err_set(L->e, PWB_EINVAL, "%s:%ld: field '%s' named by %s's options is not a list", L->path, line, name,
                       L->c->path ? L->c->path : L->c->name);
    }
    *out = a;
    return PWB_OK;
}

/* The row's options (card "options"), checked against the card's option letters. */
static int row_options(loader *L, long line, ds_example *x)
{
    const ds_card *c = L->c;
    const char *cp = c->path ? c->path : c->name;
    int n = c->n_labels, rc = PWB_OK;
    cJSON *texts = NULL, *labels = NULL;
    if (c->n_option_fields == 1 && (rc = list_field(L, line, c->option_fields[0], &texts)))
        return rc;
    int got = texts ? cJSON_GetArraySize(texts) : c->n_option_fields;
    if (got != n) {
        rc = err_set(L->e, PWB_EINVAL, "%s:%ld: %d options in '%s', but %s has %d labels (one per option)", L->path, line,
                     got, c->option_fields[0], cp, n);
        goto out;
    }
    if (c->option_label_field) {
        if ((rc = list_field(L, line, c->option_label_field, &labels)))
            goto out;
        int nl = cJSON_GetArraySize(labels);
        for (int k = 0; k < n || k < nl; k++) {
            const cJSON *l = cJSON_GetArrayItem(labels, k);
            char *v = l ? json_value_str(l) : NULL;
            int same = v && k < n && !strcmp(v, c->labels[k].value);
            free(v);
            if (!same) {
                rc = err_set(L->e, PWB_EINVAL, "%s:%ld: option labels in '%s' differ from %s's labels at position %d",
                             L->path, line, c->option_label_field, cp, k + 1);
                goto out;
            }
        }
    }
    if (!(x->options = calloc((size_t)n + 1, sizeof *x->options))) {
        rc = err_set(L->e, PWB_ENOMEM, "out of memory");
        goto out;
    }
    x->n_options = n;
    for (int k = 0; k < n; k++) {
        const char *name = texts ? c->option_fields[0] : c->option_fields[k];
        if (texts) {
            x->options[k] = json_value_str(cJSON_GetArrayItem(texts, k));
        } else {
            int i = dataset_field_index(L->d, name);
            if (i < 0 || i >= L->nvals || !L->vals[i]) {
                rc = missing_field(L, line, name);
                goto out;
            }
            x->options[k] = str_dup(L->vals[i]);
        }
        if (!x->options[k] || !x->options[k][0]) {
            rc = err_set(L->e, PWB_EINVAL, "%s:%ld: option %d in '%s' is empty", L->path, line, k + 1, name);
            goto out;
        }
    }
out:
    cJSON_Delete(texts);
    cJSON_Delete(labels);
    return rc;
}

/* Takes ownership of vals (nvals entries, NULL = absent). */
static int add_record(loader *L, long line, char **vals, int nvals)
{
    ds_data *d = L->d;
    const ds_card *c = L->c;
    int rc = PWB_OK;
    ds_example x;
    memset(&x, 0, sizeof x);
    x.fields = vals;
    x.label = -1;
    x.answer_idx = -1;
    x.line = line;
    x.row = L->seen++; /* the data row, also when earlier rows were skipped */
    for (int i = 0; i < nvals; i++)
        if (vals[i] && !utf8_valid(vals[i], strlen(vals[i]))) {
            rc = err_set(L->e, PWB_EPARSE, "%s:%ld: invalid UTF-8 in field '%s'", L->path, line, d->field_names[i]);
            goto fail;
        }
    if (d->n >= DS_MAX_ROWS) {
        rc = err_set(L->e, PWB_ERANGE, "%s:%ld: more than %lu rows", L->path, line, DS_MAX_ROWS);
        goto fail;
    }
    L->vals = vals;
    L->nvals = nvals;
    if (L->raw) {
        if (L->max_rows && d->n >= L->max_rows)
            goto fail; /* rows beyond the cap are read and dropped */
        goto store;
    }
    /* input */
    const char *raw_in = NULL;
    if (L->input_tpl) {
        buf_reset(&L->tmp);
        L->missing = NULL;
        mus_frame root = {0, NULL, 0};
        if ((rc = mus_render(L->input_tpl, rec_lookup, L, &root, 0, &L->tmp, L->e)))
            goto fail;
        if (L->missing) {
            rc = missing_field(L, line, L->missing);
            goto fail;
        }
        raw_in = L->tmp.data;
    } else {
        int i = dataset_field_index(d, L->input_field);
        if (i < 0 || i >= nvals || !vals[i]) {
            rc = missing_field(L, line, L->input_field);
            goto fail;
        }
        raw_in = vals[i];
    }
    /* the input is kept as the file has it (a prompt must match other tools' byte for byte) unless
     * the card asks for trimming */
    x.input = apply_replace(c, raw_in);
    if (!x.input || (c->trim_input && !str_trim(x.input))) {
        rc = err_set(L->e, PWB_ENOMEM, "out of memory");
        goto fail;
    }
    if (c->skip_empty && dataset_empty_input(&x))
        goto fail; /* rc is PWB_OK: the row is dropped */
    if (c->n_option_fields && (rc = row_options(L, line, &x)))
        goto fail;
    /* answer */
    if (L->sp->labeled) {
        int ai = dataset_field_index(d, L->answer_field);
        if (ai < 0 || ai >= nvals || !vals[ai]) {
            rc = missing_field(L, line, L->answer_field);
            goto fail;
        }
        x.answer_idx = ai;
        char *raw = trimmed_dup(vals[ai]);
        if (!raw) {
            rc = err_set(L->e, PWB_ENOMEM, "out of memory");
            goto fail;
        }
        const char *ans = raw;
        size_t alen = strlen(raw);
        if (L->extract) {
            size_t so, eo;
            if (rx_find(L->extract, raw, alen, &so, &eo) != 1) {
                rc = err_set(L->e, PWB_EPARSE, "%s:%ld: answer '%.60s' does not match answer_extract", L->path, line,
                             raw);
                free(raw);
                goto fail;
            }
            memmove(raw, raw + so, eo - so);
            raw[eo - so] = '\0';
            str_trim(raw);
        }
        for (int k = 0; k < c->n_answer_map; k++)
            if (!strcmp(c->answer_map[2 * k], raw)) {
                ans = c->answer_map[2 * k + 1];
                break;
            }
        switch (c->answer_kind) {
        case DS_ANSWER_LABEL:
        case DS_ANSWER_YESNO:
        case DS_ANSWER_CHOICE:
            x.label = label_of(L, ans);
            if (x.label < 0 && x.n_options) /* the key may also be the option's text */
                for (int k = 0; k < x.n_options && x.label < 0; k++)
                    if (!strcmp(x.options[k], ans))
                        x.label = k;
            if (x.label < 0) {
                rc = bad_label(L, line, ans);
                free(raw);
                goto fail;
            }
            x.answer = str_dup(c->labels[x.label].verbalizer);
            break;
        case DS_ANSWER_NUMERIC: {
            char num[64];
            if (score_normalize_number(ans, num, sizeof num)) {
                rc = err_set(L->e, PWB_EPARSE, "%s:%ld: answer '%.60s' is not a number", L->path, line, ans);
                free(raw);
                goto fail;
            }
            x.answer = str_dup(num);
            break;
        }
        default:
            x.answer = str_dup(ans);
        }
        free(raw);
        if (!x.answer) {
            rc = err_set(L->e, PWB_ENOMEM, "out of memory");
            goto fail;
        }
    }
    /* rationale (worked solution for shots) */
    if (c->rationale_field) {
        int ri = dataset_field_index(d, c->rationale_field);
        if (ri >= 0 && ri < nvals && vals[ri]) {
            pwb_buf r;
            buf_init(&r);
            if (L->rstrip ? rx_remove_all(L->rstrip, vals[ri], strlen(vals[ri]), &r) : buf_puts(&r, vals[ri])) {
                buf_free(&r);
                rc = err_set(L->e, PWB_ENOMEM, "out of memory");
                goto fail;
            }
            x.rationale = str_trim(buf_take(&r));
        }
    }
store:
    if (d->n == L->cap) {
        size_t cap = L->cap ? 2 * L->cap : 256;
        ds_example *ex = realloc(d->ex, cap * sizeof *ex);
        if (!ex) {
            rc = err_set(L->e, PWB_ENOMEM, "out of memory");
            goto fail;
        }
        d->ex = ex;
        L->cap = cap;
    }
    x.n_fields = nvals; /* padded after loading */
    d->ex[d->n++] = x;
    L->vals = NULL;
    return PWB_OK;
fail:
    L->vals = NULL;
    example_free(&x, nvals);
    return rc;
}

/* ---- line-oriented formats ---- */

typedef struct line_iter {
    const char *s;
    size_t n, pos;
    long line; /* of the line last returned */
} line_iter;

/* Next line without its "\n" / "\r\n"; 0 at the end. */
static int next_line(line_iter *it, const char **p, size_t *len)
{
    if (it->pos >= it->n)
        return 0;
    const char *a = it->s + it->pos;
    const char *nl = memchr(a, '\n', it->n - it->pos);
    size_t k = nl ? (size_t)(nl - a) : it->n - it->pos;
    it->pos += k + (nl ? 1 : 0);
    it->line++;
    if (k && a[k - 1] == '\r')
        k--;
    *p = a;
    *len = k;
    return 1;
}

static int blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return 0;
    return 1;
}

static char *json_value_str(const cJSON *v)
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
    if (cJSON_IsNull(v))
        return NULL;
    return cJSON_PrintUnformatted(v); /* objects and arrays as compact JSON */
}

#define DS_PATH_MAX_ITEMS 4096

/* Walks p from n; with acc (a [*] path) every match is appended to it. -1: malformed or too big. */
static int path_eval(const cJSON *n, const char *p, cJSON *acc, const cJSON **single, int depth)
{
    if (depth > 16)
        return -1;
    while (n && *p) {
        if (*p == '.') {
            p++;
            continue;
        }
        if (*p == '[') {
            p++;
            if (p[0] == '*' && p[1] == ']') {
                if (!acc)
                    return -1;
                const cJSON *ch;
                cJSON_ArrayForEach(ch, n)
                {
                    if (path_eval(ch, p + 2, acc, single, depth + 1) < 0)
                        return -1;
                }
                return 0;
            }
            char *end;
            long k = strtol(p, &end, 10);
            if (end == p || *end != ']' || k < 0 || k > 1000000)
                return -1;
            n = cJSON_IsArray(n) ? cJSON_GetArrayItem(n, (int)k) : NULL;
            p = end + 1;
            continue;
        }
        char key[256];
        size_t len = strcspn(p, ".[");
        if (len >= sizeof key)
            return -1;
        memcpy(key, p, len);
        key[len] = '\0';
        n = cJSON_IsObject(n) ? cJSON_GetObjectItemCaseSensitive(n, key) : NULL;
        p += len;
    }
    if (!n)
        return 0;
    if (!acc) {
        *single = n;
        return 0;
    }
    cJSON *dup = cJSON_GetArraySize(acc) < DS_PATH_MAX_ITEMS ? cJSON_Duplicate(n, 1) : NULL;
    if (!dup)
        return -1;
    cJSON_AddItemToArray(acc, dup);
    return 0;
}

cJSON *dataset_path_get(const cJSON *root, const char *path, int *owned)
{
    *owned = 0;
    const cJSON *single = NULL;
    if (!strstr(path, "[*]"))
        return path_eval(root, path, NULL, &single, 0) < 0 ? NULL : (cJSON *)single;
    cJSON *acc = cJSON_CreateArray();
    if (!acc || path_eval(root, path, acc, &single, 0) < 0) {
        cJSON_Delete(acc);
        return NULL;
    }
    *owned = 1;
    return acc;
}

static int is_path(const char *s) { return strchr(s, '.') || strchr(s, '['); }

static int load_jsonl(loader *L, const char *s, size_t n)
{
    line_iter it = {s, n, 0, 0};
    const char *p;
    size_t len;
    /* fields the card names by path ("choices.text", "a[0]") are fields of every row */
    int n_known = 0;
    const char **known = card_known_fields(L->c, &n_known);
    if (!known)
        return err_set(L->e, PWB_ENOMEM, "out of memory");
    const char *paths[64];
    int n_paths = 0;
    for (int i = 0; i < n_known && n_paths < 64; i++)
        if (is_path(known[i]) && strncmp(known[i], "fields.", 7))
            paths[n_paths++] = known[i];
    for (int i = 0; i < n_paths; i++)
        if (add_field_name(L, paths[i], strlen(paths[i])) < 0) {
            free(known);
            return err_set(L->e, PWB_ENOMEM, "out of memory");
        }
    int rc = PWB_OK;
    while (!rc && next_line(&it, &p, &len)) {
        if (blank(p, len))
            continue;
        if (len > DS_MAX_RECORD) {
            rc = err_set(L->e, PWB_ERANGE, "%s:%ld: line longer than %lu bytes", L->path, it.line, DS_MAX_RECORD);
            break;
        }
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(p, len, &end, 0);
        int bad = !j || !cJSON_IsObject(j);
        if (!bad && end)
            for (const char *q = end; q < p + len; q++)
                if (*q != ' ' && *q != '\t' && *q != '\r')
                    bad = 1;
        if (bad) {
            cJSON_Delete(j);
            rc = err_set(L->e, PWB_EPARSE, "%s:%ld: malformed JSON%s", L->path, it.line,
                         j ? " (each line must be one object)" : "");
            break;
        }
        if (cJSON_GetArraySize(j) > DS_MAX_FIELDS) {
            cJSON_Delete(j);
            rc = err_set(L->e, PWB_ERANGE, "%s:%ld: more than %d fields", L->path, it.line, DS_MAX_FIELDS);
            break;
        }
        const cJSON *v;
        cJSON_ArrayForEach(v, j)
        {
            if (add_field_name(L, v->string ? v->string : "", v->string ? strlen(v->string) : 0) < 0) {
                rc = err_set(L->e, PWB_ERANGE, "%s:%ld: more than %d distinct fields", L->path, it.line, DS_MAX_FIELDS);
                break;
            }
        }
        int nv = L->d->n_fields;
        char **vals = rc ? NULL : calloc((size_t)nv + 1, sizeof *vals);
        if (!rc && !vals)
            rc = err_set(L->e, PWB_ENOMEM, "out of memory");
        if (rc) {
            cJSON_Delete(j);
            break;
        }
        cJSON_ArrayForEach(v, j)
        {
            int i = add_field_name(L, v->string ? v->string : "", v->string ? strlen(v->string) : 0);
            if (i >= 0 && !vals[i])
                vals[i] = json_value_str(v);
        }
        for (int k = 0; k < n_paths; k++) {
            int i = add_field_name(L, paths[k], strlen(paths[k]));
            if (i < 0 || i >= nv || vals[i])
                continue; /* a key literally named so wins */
            int owned = 0;
            cJSON *pv = dataset_path_get(j, paths[k], &owned);
            if (pv)
                vals[i] = json_value_str(pv);
            if (owned)
                cJSON_Delete(pv);
        }
        cJSON_Delete(j);
        rc = add_record(L, it.line, vals, nv);
    }
    free(known);
    return rc;
}

static void vals_free(char **v, int n)
{
    if (!v)
        return;
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Header or declared column names; without either, columns are named "1", "2", ... */
static int set_columns(loader *L, char **names, int n, long line)
{
    for (int i = 0; i < n; i++) {
        char *nm = names ? names[i] : NULL;
        char num[16];
        if (!nm) {
            snprintf(num, sizeof num, "%d", i + 1);
            nm = num;
        }
        if (i == 0 && (unsigned char)nm[0] == 0xEF && (unsigned char)nm[1] == 0xBB && (unsigned char)nm[2] == 0xBF)
            nm += 3; /* UTF-8 byte order mark */
        char *t = trimmed_dup(nm);
        if (!t)
            return err_set(L->e, PWB_ENOMEM, "out of memory");
        int before = L->d->n_fields;
        int k = add_field_name(L, t, strlen(t));
        free(t);
        if (k < 0)
            return err_set(L->e, PWB_ERANGE, "%s:%ld: more than %d columns", L->path, line, DS_MAX_FIELDS);
        if (k < before || k != i)
            return err_set(L->e, PWB_EPARSE, "%s:%ld: column name '%s' appears twice", L->path, line, L->d->field_names[k]);
    }
    return PWB_OK;
}

/* Handles one parsed row of a CSV/TSV: the header, or a record. Takes ownership of vals. */
static int table_row(loader *L, long line, char **vals, int nv, int *have_header)
{
    if (!*have_header) {
        *have_header = 1;
        int rc;
        if (L->sp->header) {
            rc = set_columns(L, vals, nv, line);
            vals_free(vals, nv);
            return rc;
        }
        if (L->sp->n_columns) {
            if (L->sp->n_columns != nv) {
                vals_free(vals, nv);
                return err_set(L->e, PWB_EPARSE, "%s:%ld: expected %d fields (the card's columns), found %d", L->path,
                               line, L->sp->n_columns, nv);
            }
            rc = set_columns(L, L->sp->columns, L->sp->n_columns, line);
        } else {
            rc = set_columns(L, NULL, nv, line);
        }
        if (rc) {
            vals_free(vals, nv);
            return rc;
        }
    }
    if (nv != L->d->n_fields) {
        vals_free(vals, nv);
        return err_set(L->e, PWB_EPARSE, "%s:%ld: expected %d fields, found %d", L->path, line, L->d->n_fields, nv);
    }
    return add_record(L, line, vals, nv);
}

static int load_tsv(loader *L, const char *s, size_t n)
{
    line_iter it = {s, n, 0, 0};
    const char *p;
    size_t len;
    int have_header = 0;
    while (next_line(&it, &p, &len)) {
        if (blank(p, len))
            continue;
        if (len > DS_MAX_RECORD)
            return err_set(L->e, PWB_ERANGE, "%s:%ld: line longer than %lu bytes", L->path, it.line, DS_MAX_RECORD);
        int nv = 1;
        for (size_t i = 0; i < len; i++)
            if (p[i] == '\t' && ++nv > DS_MAX_FIELDS)
                return err_set(L->e, PWB_ERANGE, "%s:%ld: more than %d fields", L->path, it.line, DS_MAX_FIELDS);
        char **vals = calloc((size_t)nv + 1, sizeof *vals);
        if (!vals)
            return err_set(L->e, PWB_ENOMEM, "out of memory");
        size_t a = 0;
        for (int k = 0; k < nv; k++) {
            const char *tab = memchr(p + a, '\t', len - a);
            size_t b = tab ? (size_t)(tab - p) : len;
            if (!(vals[k] = str_ndup(p + a, b - a))) {
                vals_free(vals, nv);
                return err_set(L->e, PWB_ENOMEM, "out of memory");
            }
            a = b + 1;
        }
        int rc = table_row(L, it.line, vals, nv, &have_header);
        if (rc)
            return rc;
    }
    return PWB_OK;
}

/* One RFC 4180 record starting at *pos. *nv = 0 for a blank line. */
static int csv_record(loader *L, const char *s, size_t n, size_t *pos, long *line, char ***out, int *nv)
{
    size_t i = *pos;
    long start_line = *line;
    int cap = 8, k = 0, quoted_any = 0;
    size_t total = 0;
    char **v = calloc((size_t)cap + 1, sizeof *v);
    pwb_buf f;
    buf_init(&f);
    int rc = PWB_OK;
    if (!v)
        return err_set(L->e, PWB_ENOMEM, "out of memory");
    for (;;) {
        buf_reset(&f);
        if (buf_append(&f, "", 0)) {
            rc = err_set(L->e, PWB_ENOMEM, "out of memory");
            goto fail;
        }
        if (i < n && s[i] == '"') {
            quoted_any = 1;
            long qline = *line;
            i++;
            for (;;) {
                if (i >= n) {
                    rc = err_set(L->e, PWB_EPARSE, "%s:%ld: unterminated quoted field", L->path, qline);
                    goto fail;
                }
                char c = s[i];
                if (c == '"') {
                    if (i + 1 < n && s[i + 1] == '"') {
                        c = '"';
                        i += 2;
                    } else {
                        i++;
                        break;
                    }
                } else {
                    if (c == '\n')
                        (*line)++;
                    i++;
                }
                if (buf_putc(&f, c)) {
                    rc = err_set(L->e, PWB_ENOMEM, "out of memory");
                    goto fail;
                }
                if (f.len > DS_MAX_RECORD) {
                    rc = err_set(L->e, PWB_ERANGE, "%s:%ld: field longer than %lu bytes", L->path, qline, DS_MAX_RECORD);
                    goto fail;
                }
            }
            if (i < n && s[i] != ',' && s[i] != '\n' && !(s[i] == '\r' && (i + 1 == n || s[i + 1] == '\n'))) {
                rc = err_set(L->e, PWB_EPARSE, "%s:%ld: unexpected character after a closing quote", L->path, *line);
                goto fail;
            }
        } else {
            size_t a = i;
            while (i < n && s[i] != ',' && s[i] != '\n' && !(s[i] == '\r' && (i + 1 == n || s[i + 1] == '\n')))
                i++;
            if (i - a > DS_MAX_RECORD) {
                rc = err_set(L->e, PWB_ERANGE, "%s:%ld: field longer than %lu bytes", L->path, *line, DS_MAX_RECORD);
                goto fail;
            }
            if (buf_append(&f, s + a, i - a)) {
                rc = err_set(L->e, PWB_ENOMEM, "out of memory");
                goto fail;
            }
        }
        total += f.len;
        if (total > DS_MAX_RECORD) {
            rc = err_set(L->e, PWB_ERANGE, "%s:%ld: record longer than %lu bytes", L->path, start_line, DS_MAX_RECORD);
            goto fail;
        }
        if (k == cap) {
            if (cap >= DS_MAX_FIELDS) {
                rc = err_set(L->e, PWB_ERANGE, "%s:%ld: more than %d fields", L->path, start_line, DS_MAX_FIELDS);
                goto fail;
            }
            cap *= 2;
            char **nvv = realloc(v, ((size_t)cap + 1) * sizeof *v);
            if (!nvv) {
                rc = err_set(L->e, PWB_ENOMEM, "out of memory");
                goto fail;
            }
            v = nvv;
        }
        v[k++] = buf_take(&f);
        if (!v[k - 1]) {
            rc = err_set(L->e, PWB_ENOMEM, "out of memory");
            goto fail;
        }
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        if (i < n && s[i] == '\r')
            i++;
        if (i < n && s[i] == '\n') {
            i++;
            (*line)++;
        }
        break;
    }
    buf_free(&f);
    *pos = i;
    if (k == 1 && !quoted_any && !v[0][0]) { /* blank line */
        vals_free(v, k);
        *out = NULL;
        *nv = 0;
        return PWB_OK;
    }
    *out = v;
    *nv = k;
    return PWB_OK;
fail:
    buf_free(&f);
    vals_free(v, k);
    return rc;
}

static int load_csv(loader *L, const char *s, size_t n)
{
    size_t pos = 0;
    long line = 1;
    int have_header = 0;
    while (pos < n) {
        long start = line;
        char **vals = NULL;
        int nv = 0;
        int rc = csv_record(L, s, n, &pos, &line, &vals, &nv);
        if (rc)
            return rc;
        if (!nv)
            continue;
        if ((rc = table_row(L, start, vals, nv, &have_header)))
            return rc;
    }
    return PWB_OK;
}

static int load_text(loader *L, const char *s, size_t n)
{
    const char *names[DS_MAX_FIELDS];
    int nums[DS_MAX_FIELDS];
    int ng = 0;
    if (L->line_re) {
        ng = rx_names(L->line_re, names, nums, DS_MAX_FIELDS);
        if (ng == 0)
            return err_set(L->e, PWB_EINVAL, "%s: splits.%s.line_pattern has no named groups ((?<text>...))",
                           L->c->path, L->sp->name);
        for (int i = 0; i < ng; i++)
            if (add_field_name(L, names[i], strlen(names[i])) != i)
                return err_set(L->e, PWB_EINVAL, "%s: line_pattern: bad group names", L->c->path);
    } else if (add_field_name(L, "text", 4) != 0) {
        return err_set(L->e, PWB_ENOMEM, "out of memory");
    }
    pcre2_match_data *md = L->line_re ? pcre2_match_data_create_from_pattern(L->line_re, NULL) : NULL;
    if (L->line_re && !md)
        return err_set(L->e, PWB_ENOMEM, "out of memory");
    line_iter it = {s, n, 0, 0};
    const char *p;
    size_t len;
    int rc = PWB_OK;
    while (next_line(&it, &p, &len)) {
        if (blank(p, len))
            continue;
        if (len > DS_MAX_RECORD) {
            rc = err_set(L->e, PWB_ERANGE, "%s:%ld: line longer than %lu bytes", L->path, it.line, DS_MAX_RECORD);
            break;
        }
        int nv = L->line_re ? ng : 1;
        char **vals = calloc((size_t)nv + 1, sizeof *vals);
        if (!vals) {
            rc = err_set(L->e, PWB_ENOMEM, "out of memory");
            break;
        }
        if (!L->line_re) {
            vals[0] = str_ndup(p, len);
        } else {
            int m = pcre2_match(L->line_re, (PCRE2_SPTR)p, len, 0, 0, md, NULL);
            if (m < 0) {
                free(vals);
                rc = err_set(L->e, PWB_EPARSE, "%s:%ld: line does not match the card's line_pattern", L->path, it.line);
                break;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            uint32_t cnt = pcre2_get_ovector_count(md);
            for (int g = 0; g < ng; g++)
                if ((uint32_t)nums[g] < cnt && ov[2 * nums[g]] != PCRE2_UNSET && ov[2 * nums[g] + 1] >= ov[2 * nums[g]])
                    vals[g] = str_ndup(p + ov[2 * nums[g]], ov[2 * nums[g] + 1] - ov[2 * nums[g]]);
        }
        if ((rc = add_record(L, it.line, vals, nv)))
            break;
    }
    if (md)
        pcre2_match_data_free(md);
    return rc;
}

/* 1 when path has a ".." component. */
static int has_dotdot(const char *path)
{
    for (const char *p = path; (p = strstr(p, "..")); p += 2)
        if ((p == path || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
            return 1;
    return 0;
}

static int resolve_split(const ds_card *c, const ds_split *sp, const char *data_path, pwb_buf *out, pwb_err *e)
{
    /* A card (perhaps downloaded) must not make pwb read, and send to a model, a file outside the
     * card's folder and the data path: no ".." and no absolute path unless the user trusts it, or
     * the card pins the file's sha256 (checked before a byte is used: its author already knew the
     * exact content, so nothing can leak; this is how `dataset import` names a file elsewhere). */
    const char *who = c->path ? c->path : c->name;
    const char *trust = getenv("PWB_TRUST_CARDS");
    int trusted = (trust && !strcmp(trust, "1")) || sp->sha256;
    if (has_dotdot(sp->file))
        return err_set(e, PWB_EINVAL, "%s: split '%s': file '%s' leaves the data folders (\"..\"); name it "
                       "relative to the card's folder or a data path folder", who, sp->name, sp->file);
    if (sp->file[0] == '/' && !trusted)
        return err_set(e, PWB_EINVAL, "%s: split '%s': file '%s' is an absolute path; name it relative to the "
                       "card's folder or a data path folder, pin its \"sha256\" (dataset import does), or set "
                       "PWB_TRUST_CARDS=1 if you trust this card", who, sp->name, sp->file);
    int rc = file_resolve(sp->file, c->dir ? c->dir : ".", data_path, out, e);
    struct stat st;
    /* hashing a device or a pipe named by a pinned absolute path would never end */
    if (!rc && sp->file[0] == '/' && (stat(out->data, &st) != 0 || !S_ISREG(st.st_mode)))
        rc = err_set(e, PWB_EINVAL, "file '%s' is not a regular file", sp->file);
    if (rc)
        err_prefix(e, "%s: split '%s': ", c->path ? c->path : c->name, sp->name);
    return rc;
}

static int check_sha(const ds_card *c, const ds_split *sp, const char *path, const char *got, pwb_err *e)
{
    if (!sp->sha256 || !strcasecmp(sp->sha256, got))
        return PWB_OK;
    return err_set(e, PWB_EINVAL, "%s: sha256 mismatch for %s (split '%s' of %s): expected %s, got %s", path, sp->file,
                   sp->name, c->path ? c->path : c->name, sp->sha256, got);
}

int dataset_verify(const ds_card *c, const char *data_path, pwb_err *e)
{
    for (int i = 0; i < c->n_splits; i++) {
        pwb_buf p;
        buf_init(&p);
        int rc = resolve_split(c, &c->splits[i], data_path, &p, e);
        char hex[65];
        if (!rc)
            rc = file_sha256(p.data, hex, e);
        if (!rc)
            rc = check_sha(c, &c->splits[i], p.data, hex, e);
        buf_free(&p);
        if (rc)
            return rc;
    }
    return PWB_OK;
}

static pcre2_code *compile_opt(const char *pat, const ds_card *c, const char *key, int *rc, pwb_err *e)
{
    if (!pat || *rc)
        return NULL;
    char what[512];
    snprintf(what, sizeof what, "%s: %s", c->path ? c->path : c->name, key);
    pcre2_code *re = rx_compile(pat, what, e);
    if (!re)
        *rc = e ? e->code : PWB_EINVAL;
    return re;
}

/* A NUL byte cannot be stored faithfully (the text would end there, silently): a raw one anywhere
 * in the file, or a JSON "\u0000" escape, is an error naming the line. */
static int refuse_nul(const char *path, int json, const char *s, size_t n, pwb_err *e)
{
    long line = 1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            line++;
        else if (s[i] == '\0')
            return err_set(e, PWB_EPARSE, "%s:%ld: NUL byte in the data (a field cannot hold one)", path, line);
        else if (json && s[i] == '\\' && i + 1 < n && s[i + 1] != '\n') {
            /* an escape: \u0000 is a NUL; anything else (\\ included) is skipped whole */
            if (i + 5 < n && s[i + 1] == 'u' && !memcmp(s + i + 2, "0000", 4))
                return err_set(e, PWB_EPARSE, "%s:%ld: \\u0000 (NUL) in a field; a field cannot hold one", path,
                               line);
            i++;
        }
    }
    return PWB_OK;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* One end of a slice: digits, optionally "%"; empty = absent. */
static int slice_end(const char *s, size_t n, double *v, int *pct)
{
    *pct = n > 0 && s[n - 1] == '%';
    if (*pct)
        n--;
    if (n == 0 || n > 15)
        return n == 0 && !*pct ? 1 : -1;
    char tmp[16];
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    double x = strtod(tmp, &end);
    if (*end || x < 0 || (*pct && x > 100) || (!*pct && x != floor(x)))
        return -1;
    *v = x;
    return 0;
}

int dataset_slice_parse(const char *spec, ds_slice *out, pwb_err *e)
{
    memset(out, 0, sizeof *out);
    out->b = -1;
    size_t n = strcspn(spec, "@[");
    if (n == 0 || n >= sizeof out->base)
        return err_set(e, PWB_EINVAL, "split '%.100s': bad name", spec);
    memcpy(out->base, spec, n);
    const char *p = spec + n;
    if (*p == '@') {
        char *end;
        unsigned long long sd = strtoull(p + 1, &end, 10);
        if (end == p + 1 || *end != '[')
            return err_set(e, PWB_EINVAL, "split '%.100s': write NAME@SEED[A:B] (a seeded slice)", spec);
        out->seeded = 1;
        out->seed = sd;
        p = end;
    }
    if (!*p)
        return PWB_OK;
    const char *colon = strchr(p, ':'), *close = strchr(p, ']');
    if (*p != '[' || !colon || !close || colon > close || close[1])
        return err_set(e, PWB_EINVAL, "split '%.100s': a slice is NAME[A:B] (rows or percentages, e.g. dev[0:500], "
                       "dev@1[:20%%])", spec);
    out->sliced = 1;
    int ra = slice_end(p + 1, (size_t)(colon - p - 1), &out->a, &out->a_pct);
    int rb = slice_end(colon + 1, (size_t)(close - colon - 1), &out->b, &out->b_pct);
    if (ra < 0 || rb < 0)
        return err_set(e, PWB_EINVAL, "split '%.100s': slice ends are row counts or percentages", spec);
    if (rb == 1)
        out->b = -1;
    return PWB_OK;
}

/* Keeps the examples the slice selects (file order, or positions of a seeded shuffle). */
static int apply_slice(ds_data *d, const ds_slice *sl, const char *spec, pwb_err *e)
{
    size_t n = d->n;
    size_t a = sl->a_pct ? (size_t)floor(sl->a * (double)n / 100.0 + 1e-9) : (size_t)sl->a;
    size_t b = sl->b < 0 ? n : sl->b_pct ? (size_t)floor(sl->b * (double)n / 100.0 + 1e-9) : (size_t)sl->b;
    if (b > n)
        b = n;
    if (a >= b)
        return err_set(e, PWB_EINVAL, "%s: split '%s' selects no rows (%zu rows in the file)", d->path, spec, n);
    size_t *pos = malloc(n * sizeof *pos);
    char *keep = calloc(n ? n : 1, 1);
    if (!pos || !keep) {
        free(pos);
        free(keep);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        pos[i] = i;
    if (sl->seeded) {
        pwb_rng r;
        rng_init(&r, sl->seed);
        rng_shuffle_idx(&r, pos, n);
    }
    for (size_t i = a; i < b; i++)
        keep[pos[i]] = 1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (keep[i])
            d->ex[k++] = d->ex[i];
        else
            example_free(&d->ex[i], d->ex[i].n_fields);
    }
    d->n = k;
    free(pos);
    free(keep);
    return PWB_OK;
}

int dataset_empty_input(const ds_example *x)
{
    for (const char *p = x->input; p && *p; p++)
        if (!strchr(" \t\r\n", *p))
            return 0;
    return 1;
}

size_t dataset_count_empty(const ds_data *d)
{
    size_t k = 0;
    for (size_t i = 0; i < d->n; i++)
        k += dataset_empty_input(&d->ex[i]);
    return k;
}

size_t dataset_overlap(const ds_data *a, const size_t *rows_a, size_t n_rows_a, const ds_data *b)
{
    if (!a->path || !b->path || strcmp(a->path, b->path) || !b->n)
        return 0;
    size_t max = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->ex[i].row > max)
            max = b->ex[i].row;
    char *in_b = calloc(max + 1, 1);
    if (!in_b)
        return (size_t)-1;
    for (size_t i = 0; i < b->n; i++)
        in_b[b->ex[i].row] = 1;
    size_t n = rows_a ? n_rows_a : a->n, k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t r = a->ex[rows_a ? rows_a[i] : i].row;
        k += r <= max && in_b[r];
    }
    free(in_b);
    return k;
}

int dataset_load(const ds_card *c, const char *split, const char *data_path, ds_data *out, pwb_err *e)
{
    ds_data_free(out);
    const char *spec = split ? split : c->eval_split;
    ds_slice sl;
    if (!spec)
        return err_set(e, PWB_EINVAL, "%s: no split named", c->path ? c->path : c->name);
    if (dataset_slice_parse(spec, &sl, e))
        return err_prefix(e, "%s: ", c->path ? c->path : c->name);
    const ds_split *sp = card_split(c, sl.base);
    if (!sp)
        return err_set(e, PWB_EINVAL, "%s: no split '%s'", c->path ? c->path : c->name, sl.base);
    loader L;
    memset(&L, 0, sizeof L);
    L.c = c;
    L.sp = sp;
    L.d = out;
    L.e = e;
    buf_init(&L.tmp);
    pwb_buf path;
    buf_init(&path);
    file_map m = {0};
    int rc = resolve_split(c, sp, data_path, &path, e);
    if (rc)
        goto done;
    L.path = path.data;
    if ((rc = file_map_open(&m, path.data, e)))
        goto done;
    if (m.size > DS_MAX_FILE) {
        rc = err_set(e, PWB_ERANGE, "%s: larger than %lu bytes", path.data, DS_MAX_FILE);
        goto done;
    }
    char hex[65];
    sha256_hex(m.data, m.size, hex);
    int json = sp->format && !strcmp(sp->format, "jsonl");
    if ((rc = check_sha(c, sp, path.data, hex, e)) || (rc = refuse_nul(path.data, json, (const char *)m.data, m.size, e)))
        goto done;
    /* the split's mapping overrides the card's */
    const char *tpl = sp->input_template ? sp->input_template : sp->input_field ? NULL : c->input_template;
    L.input_field = sp->input_field ? sp->input_field : c->input_field;
    L.answer_field = sp->answer_field ? sp->answer_field : c->answer_field;
    if (tpl) {
        char what[512];
        snprintf(what, sizeof what, "%s: input_template", c->path ? c->path : c->name);
        if ((rc = mus_parse(tpl, strlen(tpl), what, 1, 0, &L.input_tpl, e)))
            goto done;
    }
    L.extract = compile_opt(c->answer_extract, c, "answer_extract", &rc, e);
    L.rstrip = compile_opt(c->rationale_strip, c, "rationale_strip", &rc, e);
    if (!strcmp(sp->format, "text"))
        L.line_re = compile_opt(sp->line_pattern, c, "line_pattern", &rc, e);
    if (rc)
        goto done;
    out->split = str_dup(spec);
    out->path = str_dup(path.data);
    out->answer_field = sp->labeled && L.answer_field ? str_dup(L.answer_field) : NULL;
    const char *s = (const char *)m.data;
    if (!strcmp(sp->format, "jsonl"))
        rc = load_jsonl(&L, s, m.size);
    else if (!strcmp(sp->format, "csv"))
        rc = load_csv(&L, s, m.size);
    else if (!strcmp(sp->format, "tsv"))
        rc = load_tsv(&L, s, m.size);
    else
        rc = load_text(&L, s, m.size);
    if (rc)
        goto done;
    if (out->n == 0) {
        rc = err_set(e, PWB_EPARSE, "%s: no examples", path.data);
        goto done;
    }
    if (sp->rows > 0 && out->n != (size_t)sp->rows) {
        rc = err_set(e, PWB_EPARSE, "%s: %zu examples, but %s says split '%s' has %ld rows", path.data, out->n,
                     c->path ? c->path : c->name, sp->name, sp->rows);
        goto done;
    }
    /* every row gets the final field count, so fields[] is parallel to field_names */
    for (size_t i = 0; i < out->n; i++) {
        ds_example *x = &out->ex[i];
        if (x->n_fields < out->n_fields) {
            char **f = realloc(x->fields, ((size_t)out->n_fields + 1) * sizeof *f);
            if (!f) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                goto done;
            }
            for (int k = x->n_fields; k < out->n_fields; k++)
                f[k] = NULL;
            x->fields = f;
        }
        x->n_fields = out->n_fields;
        x->field_names = out->field_names;
    }
    if (sl.sliced)
        rc = apply_slice(out, &sl, spec, e);
done:
    if (rc) {
        /* rows loaded so far may have short field arrays: free them with their own counts */
        for (size_t i = 0; i < out->n; i++) {
            example_free(&out->ex[i], out->ex[i].n_fields);
            memset(&out->ex[i], 0, sizeof out->ex[i]);
        }
        out->n = 0;
        ds_data_free(out);
    }
    mus_free(L.input_tpl);
    if (L.extract)
        pcre2_code_free(L.extract);
    if (L.rstrip)
        pcre2_code_free(L.rstrip);
    if (L.line_re)
        pcre2_code_free(L.line_re);
    buf_free(&L.tmp);
    file_map_close(&m);
    buf_free(&path);
    return rc;
}


size_t dataset_sample(const ds_data *d, size_t n, uint64_t seed, size_t *idx_out)
{
    if (n == 0 || n >= d->n) {
        for (size_t i = 0; i < d->n; i++)
            idx_out[i] = i;
        return d->n;
    }
    size_t *perm = malloc(d->n * sizeof *perm);
    if (!perm)
        return 0;
    for (size_t i = 0; i < d->n; i++)
        perm[i] = i;
    pwb_rng r;
    rng_init(&r, seed);
    /* A full shuffle: the first n of one permutation, so a larger limit extends a smaller one. */
    rng_shuffle_idx(&r, perm, d->n);
    memcpy(idx_out, perm, n * sizeof *perm);
    free(perm);
    qsort(idx_out, n, sizeof *idx_out, cmp_size);
    return n;
}

size_t dataset_label_counts(const ds_data *d, const ds_card *c, size_t *counts)
{
    size_t total = 0;
    for (int i = 0; i < c->n_labels; i++)
        counts[i] = 0;
    for (size_t i = 0; i < d->n; i++) {
        int l = d->ex[i].label;
        if (l >= 0 && l < c->n_labels) {
            counts[l]++;
            total++;
        }
    }
    return total;
}

int dataset_majority_label(const ds_data *d, const ds_card *c)
{
    if (c->n_labels <= 0)
        return -1;
    size_t *counts = calloc((size_t)c->n_labels, sizeof *counts);
    if (!counts)
        return -1;
    int best = -1;
    if (dataset_label_counts(d, c, counts) > 0) {
        best = 0;
        for (int i = 1; i < c->n_labels; i++)
            if (counts[i] > counts[best])
                best = i;
    }
    free(counts);
    return best;
}

int dataset_read_file(const char *path, const char *format, int header, const char *pattern, size_t max_rows,
                      ds_data *out, pwb_err *e)
{
    ds_data_free(out);
    ds_card c;
    card_init(&c);
    c.name = (char *)"import";
    c.path = (char *)path;
    ds_split sp;
    memset(&sp, 0, sizeof sp);
    sp.name = (char *)"file";
    sp.header = header;
    sp.line_pattern = (char *)pattern;
    loader L;
    memset(&L, 0, sizeof L);
    L.c = &c;
    L.sp = &sp;
    L.d = out;
    L.e = e;
    L.path = path;
    L.raw = 1;
    L.max_rows = max_rows;
    buf_init(&L.tmp);
    file_map m = {0};
    int rc = file_map_open(&m, path, e);
    if (!rc && m.size > DS_MAX_FILE)
        rc = err_set(e, PWB_ERANGE, "%s: larger than %lu bytes", path, DS_MAX_FILE);
    if (!rc && !strcmp(format, "text") && pattern)
        L.line_re = compile_opt(pattern, &c, "line pattern", &rc, e);
    if (!rc && !(out->path = str_dup(path)))
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    if (!rc) {
        const char *s = (const char *)m.data;
        if (!strcmp(format, "jsonl"))
            rc = load_jsonl(&L, s, m.size);
        else if (!strcmp(format, "csv"))
            rc = load_csv(&L, s, m.size);
        else if (!strcmp(format, "tsv"))
            rc = load_tsv(&L, s, m.size);
        else
            rc = load_text(&L, s, m.size);
    }
    for (size_t i = 0; !rc && i < out->n; i++) { /* pad rows to the final field count */
        ds_example *x = &out->ex[i];
        if (x->n_fields < out->n_fields) {
            char **f = realloc(x->fields, ((size_t)out->n_fields + 1) * sizeof *f);
            if (!f) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                break;
            }
            for (int k = x->n_fields; k < out->n_fields; k++)
                f[k] = NULL;
            x->fields = f;
            x->n_fields = out->n_fields;
        }
        x->field_names = out->field_names;
    }
    if (rc) {
        for (size_t i = 0; i < out->n; i++)
            example_free(&out->ex[i], out->ex[i].n_fields);
        out->n = 0;
        ds_data_free(out);
    }
    if (L.line_re)
        pcre2_code_free(L.line_re);
    buf_free(&L.tmp);
    file_map_close(&m);
    return rc;
}
