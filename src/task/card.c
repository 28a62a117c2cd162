/* Dataset cards: parsing and validation of the JSON, lookups. The loaders are in dataset.c. */
#include "task/card.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "task/catalog.h"
#include "task/mustache.h"
#include "task/rx.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/json.h"
#include "util/str.h"

#define CARD_MAX_BYTES (1u << 20)

static int add_template_vars(ds_card *c, const char *tpl);

static const char *task_names[] = {"classification", "multiple_choice", "numeric", "free_text"};
static const char *answer_names[] = {"label", "yesno", "numeric", "choice", "text"};

const char *ds_task_name(int task)
{
    return task >= 0 && task < 4 ? task_names[task] : "unknown";
}

const char *ds_answer_name(int kind)
{
    return kind >= 0 && kind < 5 ? answer_names[kind] : "unknown";
}

void card_init(ds_card *c) { memset(c, 0, sizeof *c); }

static void strv_free(char **v, int n)
{
    if (!v)
        return;
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void card_free(ds_card *c)
{
    if (!c)
        return;
    free(c->path);
    free(c->name);
    free(c->description);
    free(c->instruction);
    free(c->license);
    free(c->source);
    free(c->url);
    free(c->input_field);
    free(c->input_template);
    free(c->answer_field);
    free(c->answer_pattern);
    for (int i = 0; i < c->n_labels; i++) {
        free(c->labels[i].value);
        free(c->labels[i].verbalizer);
        strv_free(c->labels[i].aliases, c->labels[i].n_aliases);
    }
    free(c->labels);
    for (int i = 0; i < c->n_splits; i++) {
        ds_split *s = &c->splits[i];
        free(s->name);
        free(s->file);
        free(s->format);
        free(s->sha256);
        free(s->resolved);
        free(s->input_field);
        free(s->input_template);
        free(s->answer_field);
        strv_free(s->label_values, c->n_labels);
        strv_free(s->columns, s->n_columns);
        free(s->line_pattern);
    }
    free(c->splits);
    free(c->few_shot_split);
    free(c->eval_split);
    free(c->answer_extract);
    free(c->rationale_field);
    free(c->rationale_strip);
    strv_free(c->fields, c->n_fields);
    strv_free(c->replace, 2 * c->n_replace);
    strv_free(c->answer_map, 2 * c->n_answer_map);
    strv_free(c->option_fields, c->n_option_fields);
    free(c->option_label_field);
    free(c->dir);
    card_init(c);
}

/* Copies an optional string member; a present member of the wrong type is an error. */
static int opt_str(const cJSON *o, const char *key, char **out, const char *path, const char *where, pwb_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return PWB_OK;
    if (!cJSON_IsString(v) || !v->valuestring)
        return err_set(e, PWB_EINVAL, "%s: %s%s'%s' must be a string", path, where, where[0] ? ": " : "", key);
    free(*out);
    *out = str_dup(v->valuestring);
    return *out ? PWB_OK : err_set(e, PWB_ENOMEM, "out of memory");
}

static int str_array(const cJSON *a, char ***out, int *n, int max, const char *path, const char *what, pwb_err *e)
{
    if (!cJSON_IsArray(a))
        return err_set(e, PWB_EINVAL, "%s: %s must be an array of strings", path, what);
    int k = cJSON_GetArraySize(a);
    if (k > max)
        return err_set(e, PWB_ERANGE, "%s: %s has more than %d entries", path, what, max);
    char **v = calloc((size_t)k + 1, sizeof *v);
    if (!v)
        return err_set(e, PWB_ENOMEM, "out of memory");
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, a)
    {
        if (!cJSON_IsString(it) || !(v[i] = str_dup(it->valuestring))) {
            strv_free(v, i);
            return err_set(e, PWB_EINVAL, "%s: %s[%d] must be a string", path, what, i);
        }
        i++;
    }
    *out = v;
    *n = k;
    return PWB_OK;
}

static int check_keys(const cJSON *o, const char *const *allowed, const char *path, const char *where, pwb_err *e)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, o)
    {
        const char *k = it->string ? it->string : "";
        if (json_key_is_comment(k))
            continue;
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            if (strcmp(k, allowed[i]) == 0)
                ok = 1;
        if (!ok)
            return err_set(e, PWB_EINVAL, "%s: %s%sunknown key '%s'", path, where, where[0] ? ": " : "", k);
    }
    return PWB_OK;
}

static int is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return 0;
    }
    return 1;
}

static int check_regex(const char *pat, const char *path, const char *key, pwb_err *e)
{
    if (!pat)
        return PWB_OK;
    pwb_buf w;
    buf_init(&w);
    buf_printf(&w, "%s: %s", path, key);
    pcre2_code *re = rx_compile(pat, w.data ? w.data : key, e);
    buf_free(&w);
    if (!re)
        return e ? e->code : PWB_EINVAL;
    pcre2_code_free(re);
    return PWB_OK;
}

static int check_mustache(const char *tpl, const char *path, const char *key, pwb_err *e)
{
    if (!tpl)
        return PWB_OK;
    pwb_buf w;
    buf_init(&w);
    buf_printf(&w, "%s: %s", path, key);
    tpl_node *n = NULL;
    int rc = mus_parse(tpl, strlen(tpl), w.data ? w.data : key, 1, 0, &n, e);
    mus_free(n);
    buf_free(&w);
    return rc;
}

static const char *const card_keys[] = {"name", "task", "answer", "description", "instruction", "license", "source",
                                        "url", "input_field", "input_template", "answer_field", "answer_pattern",
                                        "answer_extract", "rationale_field", "rationale_strip", "labels", "splits",
                                        "few_shot_split", "eval_split", "fields", "replace", "citation", "answer_map",
                                        "trim_input", "options", "empty_inputs", NULL};
static const char *const split_keys[] = {"file", "format", "sha256", "header", "columns", "input_field",
                                         "input_template", "answer_field", "label_values", "line_pattern",
                                         "labeled", "rows", NULL};
static const char *const label_keys[] = {"value", "verbalizer", "aliases", NULL};

static int parse_labels(ds_card *c, const cJSON *a, pwb_err *e)
{
    if (!cJSON_IsArray(a))
        return err_set(e, PWB_EINVAL, "%s: 'labels' must be an array", c->path);
    int n = cJSON_GetArraySize(a);
    if (n > DS_MAX_LABELS)
        return err_set(e, PWB_ERANGE, "%s: more than %d labels", c->path, DS_MAX_LABELS);
    c->labels = calloc((size_t)n + 1, sizeof *c->labels);
    if (!c->labels)
        return err_set(e, PWB_ENOMEM, "out of memory");
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, a)
    {
        char where[48];
        snprintf(where, sizeof where, "labels[%d]", i);
        ds_label *l = &c->labels[i];
        c->n_labels = i + 1;
        if (cJSON_IsString(it)) { /* shorthand: the raw value is also the verbalizer */
            l->value = str_dup(it->valuestring);
            l->verbalizer = str_dup(it->valuestring);
        } else if (cJSON_IsObject(it)) {
            int rc = check_keys(it, label_keys, c->path, where, e);
            if (rc)
                return rc;
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "value");
            if (cJSON_IsString(v))
                l->value = str_dup(v->valuestring);
            else if (cJSON_IsNumber(v)) {
                char num[32];
                snprintf(num, sizeof num, "%.17g", v->valuedouble);
                l->value = str_dup(num);
            } else if (cJSON_IsBool(v))
                l->value = str_dup(cJSON_IsTrue(v) ? "true" : "false");
            else
                return err_set(e, PWB_EINVAL, "%s: %s: missing 'value'", c->path, where);
            if ((rc = opt_str(it, "verbalizer", &l->verbalizer, c->path, where, e)))
                return rc;
            if (!l->verbalizer)
                l->verbalizer = str_dup(l->value);
            const cJSON *al = cJSON_GetObjectItemCaseSensitive(it, "aliases");
            if (al && (rc = str_array(al, &l->aliases, &l->n_aliases, 64, c->path, "aliases", e)))
                return rc;
        } else {
            return err_set(e, PWB_EINVAL, "%s: %s must be an object {value, verbalizer}", c->path, where);
        }
        if (!l->value || !l->verbalizer)
            return err_set(e, PWB_ENOMEM, "out of memory");
        if (!l->verbalizer[0])
            return err_set(e, PWB_EINVAL, "%s: %s: empty verbalizer", c->path, where);
        for (int j = 0; j < i; j++) {
            if (strcmp(c->labels[j].value, l->value) == 0)
                return err_set(e, PWB_EINVAL, "%s: %s: value '%s' listed twice", c->path, where, l->value);
            if (strcasecmp(c->labels[j].verbalizer, l->verbalizer) == 0)
                return err_set(e, PWB_EINVAL, "%s: %s: verbalizer '%s' listed twice", c->path, where,
                               l->verbalizer);
        }
        i++;
    }
    return PWB_OK;
}

static int parse_split(ds_card *c, ds_split *s, const cJSON *o, pwb_err *e)
{
    char where[96];
    snprintf(where, sizeof where, "splits.%.60s", s->name);
    if (!cJSON_IsObject(o))
        return err_set(e, PWB_EINVAL, "%s: %s must be an object", c->path, where);
    int rc = check_keys(o, split_keys, c->path, where, e);
    if (rc)
        return rc;
    if ((rc = opt_str(o, "file", &s->file, c->path, where, e)) || (rc = opt_str(o, "format", &s->format, c->path, where, e)) ||
        (rc = opt_str(o, "sha256", &s->sha256, c->path, where, e)) ||
        (rc = opt_str(o, "input_field", &s->input_field, c->path, where, e)) ||
        (rc = opt_str(o, "input_template", &s->input_template, c->path, where, e)) ||
        (rc = opt_str(o, "answer_field", &s->answer_field, c->path, where, e)) ||
        (rc = opt_str(o, "line_pattern", &s->line_pattern, c->path, where, e)))
        return rc;
    if (!s->file || !s->file[0])
        return err_set(e, PWB_EINVAL, "%s: %s: missing string field 'file'", c->path, where);
    if (!s->format) {
        const char *f = s->file;
        s->format = str_dup(str_ends(f, ".jsonl") || str_ends(f, ".json") ? "jsonl"
                            : str_ends(f, ".csv")                         ? "csv"
                            : str_ends(f, ".tsv")                         ? "tsv"
                                                                          : "text");
    }
    if (strcmp(s->format, "jsonl") && strcmp(s->format, "csv") && strcmp(s->format, "tsv") && strcmp(s->format, "text"))
        return err_set(e, PWB_EINVAL, "%s: %s: format '%s' is not one of jsonl, csv, tsv, text", c->path, where,
                       s->format);
    if (s->sha256 && !is_hex64(s->sha256))
        return err_set(e, PWB_EINVAL, "%s: %s: sha256 must be 64 hex digits", c->path, where);
    s->header = json_bool(o, "header", 1);
    s->labeled = json_bool(o, "labeled", 1);
    double rows = json_num(o, "rows", 0);
    if (rows < 0 || rows > (double)DS_MAX_ROWS || rows != (double)(long)rows)
        return err_set(e, PWB_EINVAL, "%s: %s: rows must be a count", c->path, where);
    s->rows = (long)rows;
    const cJSON *cols = cJSON_GetObjectItemCaseSensitive(o, "columns");
    if (cols && (rc = str_array(cols, &s->columns, &s->n_columns, DS_MAX_FIELDS, c->path, "columns", e)))
        return rc;
    if (!strcmp(s->format, "text") && s->line_pattern) {
        char w[128];
        snprintf(w, sizeof w, "%s.line_pattern", where);
        if ((rc = check_regex(s->line_pattern, c->path, w, e)))
            return rc;
    }
    if (s->input_template) {
        char w[128];
        snprintf(w, sizeof w, "%s.input_template", where);
        if ((rc = check_mustache(s->input_template, c->path, w, e)))
            return rc;
    }
    const cJSON *lv = cJSON_GetObjectItemCaseSensitive(o, "label_values");
    if (lv) {
        if (!cJSON_IsObject(lv))
            return err_set(e, PWB_EINVAL, "%s: %s: label_values must map each verbalizer to its raw value", c->path,
                           where);
        s->label_values = calloc((size_t)c->n_labels + 1, sizeof *s->label_values);
        if (!s->label_values)
            return err_set(e, PWB_ENOMEM, "out of memory");
        const cJSON *it;
        cJSON_ArrayForEach(it, lv)
        {
            int li = card_label_by_verbalizer(c, it->string);
            if (li < 0)
                return err_set(e, PWB_EINVAL, "%s: %s: label_values: '%s' is not a verbalizer of the card", c->path,
                               where, it->string);
            if (!cJSON_IsString(it))
                return err_set(e, PWB_EINVAL, "%s: %s: label_values.%s must be a string", c->path, where, it->string);
            free(s->label_values[li]);
            s->label_values[li] = str_dup(it->valuestring);
        }
        for (int i = 0; i < c->n_labels; i++)
            if (!s->label_values[i])
                return err_set(e, PWB_EINVAL, "%s: %s: label_values has no entry for '%s'", c->path, where,
                               c->labels[i].verbalizer);
    }
    /* Every split must know where its input and answer are. */
    if (!s->input_field && !s->input_template && !c->input_field && !c->input_template)
        return err_set(e, PWB_EINVAL, "%s: %s: no input_field or input_template (card or split)", c->path, where);
    if (s->labeled && !s->answer_field && !c->answer_field)
        return err_set(e, PWB_EINVAL, "%s: %s: no answer_field (card or split); set \"labeled\": false for "
                       "splits without answers", c->path, where);
    return PWB_OK;
}

/* "answer_map": {"raw": "label value", ...}: several raw answers may name one label. */
static int parse_answer_map(ds_card *c, const cJSON *m, pwb_err *e)
{
    if (!m)
        return PWB_OK;
    if (!cJSON_IsObject(m) || cJSON_GetArraySize(m) > 4096)
        return err_set(e, PWB_EINVAL, "%s: 'answer_map' must map raw answers to label values (at most 4096)", c->path);
    int n = cJSON_GetArraySize(m);
    c->answer_map = calloc(2 * (size_t)n + 1, sizeof *c->answer_map);
    if (!c->answer_map)
        return err_set(e, PWB_ENOMEM, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, m)
    {
        if (!cJSON_IsString(it))
            return err_set(e, PWB_EINVAL, "%s: answer_map.%s must be a string (a label's value)", c->path, it->string);
        if (c->n_labels && card_label_index(c, it->valuestring) < 0)
            return err_set(e, PWB_EINVAL, "%s: answer_map.%s: '%s' is not the value of a label", c->path, it->string,
                           it->valuestring);
        c->answer_map[2 * c->n_answer_map] = str_dup(it->string);
        c->answer_map[2 * c->n_answer_map + 1] = str_dup(it->valuestring);
        if (!c->answer_map[2 * c->n_answer_map] || !c->answer_map[2 * c->n_answer_map + 1])
            return err_set(e, PWB_ENOMEM, "out of memory");
        c->n_answer_map++;
    }
    return PWB_OK;
}

/* "options": "list.field" | ["field_a", "field_b", ...] | {"text": "choices.text", "label": "choices.label"} */
static int parse_options(ds_card *c, const cJSON *o, pwb_err *e)
{
    if (!o)
        return PWB_OK;
    const char *p = c->path;
    int rc;
    const cJSON *text = o;
    if (cJSON_IsObject(o)) {
        static const char *const keys[] = {"text", "label", NULL};
        if ((rc = check_keys(o, keys, p, "options", e)) || (rc = opt_str(o, "label", &c->option_label_field, p, "options", e)))
            return rc;
        text = cJSON_GetObjectItemCaseSensitive(o, "text");
    }
    if (cJSON_IsString(text) && text->valuestring[0]) {
        c->option_fields = calloc(2, sizeof *c->option_fields);
        if (!c->option_fields || !(c->option_fields[0] = str_dup(text->valuestring)))
            return err_set(e, PWB_ENOMEM, "out of memory");
        c->n_option_fields = 1;
    } else if (cJSON_IsArray(text) && cJSON_GetArraySize(text) >= 2) {
        if ((rc = str_array(text, &c->option_fields, &c->n_option_fields, DS_MAX_LABELS, p, "options", e)))
            return rc;
    } else {
        return err_set(e, PWB_EINVAL, "%s: 'options' must name a list field (\"choices.text\"), one field per option "
                       "([\"a\", \"b\"]) or {\"text\": ..., \"label\": ...}", p);
    }
    if (c->task != DS_MULTIPLE_CHOICE || c->answer_kind != DS_ANSWER_CHOICE)
        return err_set(e, PWB_EINVAL, "%s: 'options' needs \"task\": \"multiple_choice\" (answer kind choice)", p);
    if (c->n_option_fields > 1 && c->n_option_fields != c->n_labels)
        return err_set(e, PWB_EINVAL, "%s: 'options' names %d fields but the card has %d labels (one per option)", p,
                       c->n_option_fields, c->n_labels);
    return PWB_OK;
}

static int parse_card(ds_card *c, const cJSON *j, pwb_err *e)
{
    const char *p = c->path;
    if (!cJSON_IsObject(j))
        return err_set(e, PWB_EINVAL, "%s: a card is a JSON object", p);
    int rc = check_keys(j, card_keys, p, "", e);
    if (rc)
        return rc;
    const char *s;
    if ((rc = json_req_str(j, "name", p, &s, e)))
        return rc;
    for (const char *q = s; *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '_' ||
              *q == '-' || *q == '.'))
            return err_set(e, PWB_EINVAL, "%s: name '%s': use letters, digits, '_', '-', '.'", p, s);
    if (!s[0] || s[0] == '.')
        return err_set(e, PWB_EINVAL, "%s: bad name '%s'", p, s);
    c->name = str_dup(s);
    if ((rc = json_req_str(j, "task", p, &s, e)))
        return rc;
    c->task = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, task_names[i]))
            c->task = i;
    if (c->task < 0)
        return err_set(e, PWB_EINVAL, "%s: task '%s' is not one of classification, multiple_choice, numeric, free_text",
                       p, s);
    static const int default_kind[] = {DS_ANSWER_LABEL, DS_ANSWER_CHOICE, DS_ANSWER_NUMERIC, DS_ANSWER_TEXT};
    c->answer_kind = default_kind[c->task];
    const char *ak = json_str(j, "answer", NULL);
    if (ak) {
        c->answer_kind = -1;
        for (int i = 0; i < 5; i++)
            if (!strcmp(ak, answer_names[i]))
                c->answer_kind = i;
        if (c->answer_kind < 0)
            return err_set(e, PWB_EINVAL, "%s: answer '%s' is not one of label, yesno, numeric, choice, text", p, ak);
    }
    if ((rc = opt_str(j, "description", &c->description, p, "", e)) ||
        (rc = opt_str(j, "instruction", &c->instruction, p, "", e)) ||
        (rc = opt_str(j, "license", &c->license, p, "", e)) || (rc = opt_str(j, "source", &c->source, p, "", e)) ||
        (rc = opt_str(j, "url", &c->url, p, "", e)) || (rc = opt_str(j, "input_field", &c->input_field, p, "", e)) ||
        (rc = opt_str(j, "input_template", &c->input_template, p, "", e)) ||
        (rc = opt_str(j, "answer_field", &c->answer_field, p, "", e)) ||
        (rc = opt_str(j, "answer_pattern", &c->answer_pattern, p, "", e)) ||
        (rc = opt_str(j, "answer_extract", &c->answer_extract, p, "", e)) ||
        (rc = opt_str(j, "rationale_field", &c->rationale_field, p, "", e)) ||
        (rc = opt_str(j, "rationale_strip", &c->rationale_strip, p, "", e)) ||
        (rc = opt_str(j, "few_shot_split", &c->few_shot_split, p, "", e)) ||
        (rc = opt_str(j, "eval_split", &c->eval_split, p, "", e)))
        return rc;
    if ((rc = check_regex(c->answer_pattern, p, "answer_pattern", e)) ||
        (rc = check_regex(c->answer_extract, p, "answer_extract", e)) ||
        (rc = check_regex(c->rationale_strip, p, "rationale_strip", e)) ||
        (rc = check_mustache(c->input_template, p, "input_template", e)))
        return rc;
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(j, "labels");
    if (labels && (rc = parse_labels(c, labels, e)))
        return rc;
    int needs_labels = c->answer_kind == DS_ANSWER_LABEL || c->answer_kind == DS_ANSWER_YESNO ||
                       c->answer_kind == DS_ANSWER_CHOICE;
    if (c->answer_kind == DS_ANSWER_YESNO && c->n_labels == 0) {
        /* yes/no without labels: the raw values true/false */
        c->labels = calloc(3, sizeof *c->labels);
        if (!c->labels)
            return err_set(e, PWB_ENOMEM, "out of memory");
        c->labels[0] = (ds_label){str_dup("true"), str_dup("yes"), NULL, 0};
        c->labels[1] = (ds_label){str_dup("false"), str_dup("no"), NULL, 0};
        c->n_labels = 2;
    }
    if (needs_labels && c->n_labels < 2)
        return err_set(e, PWB_EINVAL, "%s: answer kind '%s' needs at least two labels%s", p, answer_names[c->answer_kind],
                       cJSON_GetObjectItemCaseSensitive(j, "options")
                           ? " (the option letters, e.g. [\"A\", \"B\", \"C\", \"D\"])"
                           : "");
    if (!needs_labels && c->n_labels)
        return err_set(e, PWB_EINVAL, "%s: answer kind '%s' takes no labels", p, answer_names[c->answer_kind]);
    if (c->answer_kind == DS_ANSWER_YESNO) {
        for (int i = 0; i < c->n_labels; i++)
            if (strcasecmp(c->labels[i].verbalizer, "yes") && strcasecmp(c->labels[i].verbalizer, "no"))
                return err_set(e, PWB_EINVAL, "%s: answer kind 'yesno' needs the verbalizers yes and no, not '%s'", p,
                               c->labels[i].verbalizer);
    }
    const cJSON *fields = cJSON_GetObjectItemCaseSensitive(j, "fields");
    if (fields && (rc = str_array(fields, &c->fields, &c->n_fields, DS_MAX_FIELDS, p, "fields", e)))
        return rc;
    const cJSON *rep = cJSON_GetObjectItemCaseSensitive(j, "replace");
    if (rep) {
        if (!cJSON_IsArray(rep) || cJSON_GetArraySize(rep) > 256)
            return err_set(e, PWB_EINVAL, "%s: 'replace' must be an array of [from, to] pairs (at most 256)", p);
        int n = cJSON_GetArraySize(rep);
        c->replace = calloc(2 * (size_t)n + 1, sizeof *c->replace);
        if (!c->replace)
            return err_set(e, PWB_ENOMEM, "out of memory");
        const cJSON *it;
        int i = 0;
        cJSON_ArrayForEach(it, rep)
        {
            const cJSON *a = cJSON_GetArrayItem(it, 0), *b = cJSON_GetArrayItem(it, 1);
            if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 || !cJSON_IsString(a) || !cJSON_IsString(b) ||
                !a->valuestring[0])
                return err_set(e, PWB_EINVAL, "%s: replace[%d] must be [\"from\", \"to\"] with a non-empty from", p, i);
            c->replace[2 * i] = str_dup(a->valuestring);
            c->replace[2 * i + 1] = str_dup(b->valuestring);
            c->n_replace = ++i;
        }
    }
    if ((rc = parse_answer_map(c, cJSON_GetObjectItemCaseSensitive(j, "answer_map"), e)) ||
        (rc = parse_options(c, cJSON_GetObjectItemCaseSensitive(j, "options"), e)))
        return rc;
    c->trim_input = json_bool(j, "trim_input", 0);
    const char *ei = json_str(j, "empty_inputs", "keep");
    if (strcmp(ei, "keep") && strcmp(ei, "skip"))
        return err_set(e, PWB_EINVAL, "%s: empty_inputs must be \"keep\" or \"skip\", not '%s'", p, ei);
    c->skip_empty = ei[0] == 's';
    const cJSON *splits = cJSON_GetObjectItemCaseSensitive(j, "splits");
    if (!cJSON_IsObject(splits) || cJSON_GetArraySize(splits) == 0)
        return err_set(e, PWB_EINVAL, "%s: 'splits' must be an object of name -> {file, format, ...}", p);
    int ns = cJSON_GetArraySize(splits);
    if (ns > 64)
        return err_set(e, PWB_ERANGE, "%s: more than 64 splits", p);
    c->splits = calloc((size_t)ns, sizeof *c->splits);
    if (!c->splits)
        return err_set(e, PWB_ENOMEM, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, splits)
    {
        ds_split *sp = &c->splits[c->n_splits++];
        sp->name = str_dup(it->string);
        if (!sp->name)
            return err_set(e, PWB_ENOMEM, "out of memory");
        if ((rc = parse_split(c, sp, it, e)))
            return rc;
    }
    if (add_template_vars(c, c->input_template))
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (int i = 0; i < c->n_splits; i++)
        if (add_template_vars(c, c->splits[i].input_template))
            return err_set(e, PWB_ENOMEM, "out of memory");
    ds_slice sl;
    if ((c->eval_split && dataset_slice_parse(c->eval_split, &sl, e)) ||
        (c->few_shot_split && dataset_slice_parse(c->few_shot_split, &sl, e)))
        return err_prefix(e, "%s: ", p);
    if (c->eval_split) {
        if (!card_split(c, c->eval_split))
            return err_set(e, PWB_EINVAL, "%s: eval_split '%s' is not a split of the card", p, c->eval_split);
    } else {
        static const char *pref[] = {"test", "validation", "val", "dev"};
        for (int i = 0; i < 4 && !c->eval_split; i++) {
            const ds_split *sp = card_split(c, pref[i]);
            if (sp && sp->labeled)
                c->eval_split = str_dup(pref[i]);
        }
        if (!c->eval_split)
            c->eval_split = str_dup(c->splits[0].name);
    }
    if (c->few_shot_split) {
        if (!card_split(c, c->few_shot_split))
            return err_set(e, PWB_EINVAL, "%s: few_shot_split '%s' is not a split of the card", p, c->few_shot_split);
    } else if (card_split(c, "train")) {
        c->few_shot_split = str_dup("train");
    }
    if (!c->name || !c->eval_split)
        return err_set(e, PWB_ENOMEM, "out of memory");
    return PWB_OK;
}

int card_load(ds_card *c, const char *path, pwb_err *e)
{
    card_free(c);
    c->path = str_dup(path);
    pwb_buf d;
    buf_init(&d);
    file_dirname(path, &d);
    c->dir = buf_take(&d);
    if (!c->path || !c->dir)
        return err_set(e, PWB_ENOMEM, "out of memory");
    cJSON *j = json_parse_file(path, CARD_MAX_BYTES, e);
    if (!j) {
        card_free(c);
        return e ? e->code : PWB_EPARSE;
    }
    int rc = parse_card(c, j, e);
    cJSON_Delete(j);
    if (rc)
        card_free(c);
    return rc;
}

int card_find(ds_card *c, const char *name, const char *card_dirs, pwb_err *e)
{
    if (!name || !name[0] || strchr(name, '/') || name[0] == '.')
        return err_set(e, PWB_EINVAL, "bad dataset name '%s'", name ? name : "");
    pwb_buf file, path;
    buf_init(&file);
    buf_init(&path);
    buf_printf(&file, "%s.json", name);
    int rc = file_resolve(file.data, NULL, card_dirs, &path, NULL);
    if (rc) {
        /* the shared layout also allows <dir>/<name>/card.json */
        buf_reset(&file);
        buf_printf(&file, "%s/card.json", name);
        rc = file_resolve(file.data, NULL, card_dirs, &path, NULL);
    }
    char near[128] = "";
    if (rc && catalog_closest_card(name, card_dirs, near, sizeof near))
        rc = err_set(e, PWB_EIO, "no card for dataset '%s' (did you mean '%s'?)", name, near);
    else if (rc)
        rc = err_set(e, PWB_EIO, "no card for dataset '%s' (looked for %s.json in %s)", name, name,
                     card_dirs && card_dirs[0] ? card_dirs : "no directories");
    else
        rc = card_load(c, path.data, e);
    buf_free(&file);
    buf_free(&path);
    return rc;
}

const ds_split *card_split(const ds_card *c, const char *name)
{
    if (!name)
        return NULL;
    size_t n = strcspn(name, "@["); /* a slice of a split is that split */
    for (int i = 0; i < c->n_splits; i++)
        if (strlen(c->splits[i].name) == n && !strncmp(c->splits[i].name, name, n))
            return &c->splits[i];
    return NULL;
}

int card_label_index(const ds_card *c, const char *raw_value)
{
    for (int i = 0; raw_value && i < c->n_labels; i++)
        if (!strcmp(c->labels[i].value, raw_value))
            return i;
    return -1;
}

int card_label_by_verbalizer(const ds_card *c, const char *verbalizer)
{
    for (int i = 0; verbalizer && i < c->n_labels; i++)
        if (!strcasecmp(c->labels[i].verbalizer, verbalizer))
            return i;
    return -1;
}

/* ---- known fields (for template_check) ---- */

typedef struct namelist {
    const char **v;
    int n, cap;
} namelist;

static void nl_add(namelist *l, const char *s)
{
    if (!s || !s[0])
        return;
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s))
            return;
    if (l->n + 2 > l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        const char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    l->v[l->n] = NULL;
}

static int collect_vars(void *ud, const tpl_node *n, const char *const *scopes, int depth)
{
    (void)scopes;
    (void)depth;
    ds_card *c = ud;
    const char *s = n->text;
    if (str_starts(s, "fields."))
        s += 7;
    if (!strcmp(s, "."))
        return 0;
    for (int i = 0; i < c->n_fields; i++)
        if (!strcmp(c->fields[i], s))
            return 0;
    if (c->n_fields >= DS_MAX_FIELDS)
        return 0;
    char **v = realloc(c->fields, ((size_t)c->n_fields + 2) * sizeof *v);
    if (!v)
        return PWB_ENOMEM;
    c->fields = v;
    if (!(v[c->n_fields] = str_dup(s)))
        return PWB_ENOMEM;
    v[++c->n_fields] = NULL;
    return 0;
}

/* The fields an input template names become declared fields of the card. */
static int add_template_vars(ds_card *c, const char *tpl)
{
    if (!tpl)
        return PWB_OK;
    tpl_node *root = NULL;
    if (mus_parse(tpl, strlen(tpl), "input_template", 1, 0, &root, NULL))
        return PWB_OK; /* reported by check_mustache */
    int rc = mus_walk(root, collect_vars, c);
    mus_free(root);
    return rc;
}

const char **card_known_fields(const ds_card *c, int *n)
{
    namelist l = {0};
    nl_add(&l, c->input_field);
    nl_add(&l, c->answer_field);
    nl_add(&l, c->rationale_field);
    for (int i = 0; i < c->n_fields; i++)
        nl_add(&l, c->fields[i]);
    for (int i = 0; i < c->n_option_fields; i++)
        nl_add(&l, c->option_fields[i]);
    nl_add(&l, c->option_label_field);
    for (int i = 0; i < c->n_splits; i++) {
        const ds_split *s = &c->splits[i];
        nl_add(&l, s->input_field);
        nl_add(&l, s->answer_field);
        for (int k = 0; k < s->n_columns; k++)
            nl_add(&l, s->columns[k]);
    }
    if (!l.v) {
        l.v = calloc(1, sizeof *l.v);
    }
    if (n)
        *n = l.n;
    return l.v;
}
