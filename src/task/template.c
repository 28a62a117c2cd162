/* Prompt templates: header, body (Mustache with role markers), checks against a card, few-shot
 * selection and rendering into role messages. */
#include "task/template.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "task/mustache.h"
#include "task/rx.h"
#include "util/file.h"
#include "util/rng.h"
#include "util/str.h"

#define TPL_MAX_BYTES (1u << 20)

static const char *kind_names[] = {"zero-shot", "few-shot", "cot", "role"};
static const char *pick_names[] = {"first", "random", "balanced", "similar"};

const char *template_kind_name(int kind) { return kind >= 0 && kind < 4 ? kind_names[kind] : "unknown"; }
const char *template_shot_pick_name(int pick) { return pick >= 0 && pick < 4 ? pick_names[pick] : "unknown"; }

int template_shot_pick_parse(const char *name)
{
    for (int i = 0; name && i < 4; i++)
        if (!strcmp(name, pick_names[i]))
            return i;
    return -1;
}

void template_init(pwb_template *t) { memset(t, 0, sizeof *t); }

void template_free(pwb_template *t)
{
    if (!t)
        return;
    free(t->path);
    free(t->name);
    free(t->answer_pattern);
    free(t->task);
    free(t->description);
    free(t->target_delimiter);
    for (int i = 0; i < t->n_sections; i++)
        free(t->sections[i].role);
    free(t->sections);
    mus_free(t->root);
    free(t->text);
    template_init(t);
}

static char *stem(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    return str_ndup(b, dot && dot > b ? (size_t)(dot - b) : strlen(b));
}

static int header_line(pwb_template *t, const char *line, int ln, unsigned *seen, int *shots_set, pwb_err *e)
{
    const char *p = t->path;
    const char *colon = strchr(line, ':');
    if (!colon)
        return err_set(e, PWB_EPARSE, "%s:%d: header lines are 'key: value' (or '---' to end the header)", p, ln);
    char key[32];
    size_t kl = (size_t)(colon - line);
    while (kl && (line[kl - 1] == ' ' || line[kl - 1] == '\t'))
        kl--;
    if (kl == 0 || kl >= sizeof key)
        return err_set(e, PWB_EPARSE, "%s:%d: bad header key", p, ln);
    memcpy(key, line, kl);
    key[kl] = '\0';
    char *val = str_dup(colon + 1);
    if (!val)
        return err_set(e, PWB_ENOMEM, "out of memory");
    str_trim(val);
    static const char *keys[] = {"name", "kind", "shots", "shot_pick", "answer", "task", "max_tokens", "description",
                                 "target_delimiter", "choices", "shots_as_turns"};
    int k = -1;
    for (int i = 0; i < 11; i++)
        if (!strcmp(key, keys[i]))
            k = i;
    int rc = PWB_OK;
    if (k < 0) {
        rc = err_set(e, PWB_EPARSE, "%s:%d: unknown header key '%s' (name, kind, shots, shot_pick, answer, task, "
                     "max_tokens, description, target_delimiter, choices, shots_as_turns)", p, ln, key);
        goto out;
    }
    if (*seen & (1u << k)) {
        rc = err_set(e, PWB_EPARSE, "%s:%d: header key '%s' given twice", p, ln, key);
        goto out;
    }
    *seen |= 1u << k;
    long num;
    switch (k) {
    case 0:
        free(t->name);
        t->name = val;
        val = NULL;
        break;
    case 1:
        t->kind = -1;
        for (int i = 0; i < 4; i++)
            if (!strcmp(val, kind_names[i]))
                t->kind = i;
        if (t->kind < 0)
            rc = err_set(e, PWB_EPARSE, "%s:%d: kind '%s' is not one of zero-shot, few-shot, cot, role", p, ln, val);
        break;
    case 2:
        if (str_to_long(val, &num) || num < 0 || num > TPL_MAX_SHOTS)
            rc = err_set(e, PWB_EPARSE, "%s:%d: shots must be a number from 0 to %d", p, ln, TPL_MAX_SHOTS);
        else {
            t->shots = (int)num;
            *shots_set = 1;
        }
        break;
    case 3:
        t->shot_pick = template_shot_pick_parse(val);
        if (t->shot_pick < 0)
            rc = err_set(e, PWB_EPARSE, "%s:%d: shot_pick '%s' is not one of first, random, balanced, similar", p, ln,
                         val);
        break;
    case 4: {
        char what[600];
        snprintf(what, sizeof what, "%s:%d: answer", p, ln);
        pcre2_code *re = rx_compile(val, what, e);
        if (!re) {
            rc = e ? e->code : PWB_EINVAL;
            break;
        }
        pcre2_code_free(re);
        t->answer_pattern = val;
        t->answer_line = ln;
        val = NULL;
        break;
    }
    case 5:
        t->task = val;
        t->task_line = ln;
        val = NULL;
        break;
    case 6:
        if (str_to_long(val, &num) || num < 1 || num > 100000)
            rc = err_set(e, PWB_EPARSE, "%s:%d: max_tokens must be a number from 1 to 100000", p, ln);
        else
            t->max_tokens = (int)num;
        break;
    case 7:
        t->description = val;
        val = NULL;
        break;
    case 8: /* a JSON string, since a bare " " would be trimmed away */
        if (val[0] == '"') {
            cJSON *j = cJSON_Parse(val);
            if (!cJSON_IsString(j) || strlen(j->valuestring) > 64)
                rc = err_set(e, PWB_EPARSE, "%s:%d: target_delimiter must be a JSON string of at most 64 bytes "
                             "(e.g. \" \")", p, ln);
            else if (!(t->target_delimiter = str_dup(j->valuestring)))
                rc = err_set(e, PWB_ENOMEM, "out of memory");
            cJSON_Delete(j);
        } else {
            t->target_delimiter = val;
            val = NULL;
        }
        break;
    case 9:
        if (!strcmp(val, "text") || !strcmp(val, "label"))
            t->choices = val[0] == 't' ? TPL_CHOICES_TEXT : TPL_CHOICES_LABEL;
        else
            rc = err_set(e, PWB_EPARSE, "%s:%d: choices '%s' is not one of text (rank the options' texts), label "
                         "(rank the labels)", p, ln, val);
        break;
    case 10:
        if (!strcmp(val, "true") || !strcmp(val, "false"))
            t->shots_as_turns = val[0] == 't';
        else
            rc = err_set(e, PWB_EPARSE, "%s:%d: shots_as_turns must be true or false", p, ln);
        break;
    }
out:
    free(val);
    return rc;
}

int template_parse(pwb_template *t, const char *text, size_t n, const char *path, pwb_err *e)
{
    template_free(t);
    t->path = str_dup(path ? path : "template");
    t->text = str_ndup(text, n);
    if (!t->path || !t->text)
        return err_set(e, PWB_ENOMEM, "out of memory");
    if (n > TPL_MAX_BYTES)
        return err_set(e, PWB_ERANGE, "%s: larger than %u bytes", t->path, TPL_MAX_BYTES);
    if (memchr(text, '\0', n) || memchr(text, MUS_ROLE_MARK, n))
        return err_set(e, PWB_EPARSE, "%s: control bytes in a template", t->path);
    t->shot_pick = SHOTS_RANDOM;
    unsigned seen = 0;
    int shots_set = 0, ln = 0, rc = PWB_OK, body_line = 0;
    size_t pos = 0, body = n;
    int kind_set = 0;
    while (pos < n) {
        const char *a = text + pos;
        const char *nl = memchr(a, '\n', n - pos);
        size_t len = nl ? (size_t)(nl - a) : n - pos;
        pos += len + (nl ? 1 : 0);
        ln++;
        char *line = str_ndup(a, len);
        if (!line)
            return err_set(e, PWB_ENOMEM, "out of memory");
        str_trim(line);
        if (!strcmp(line, "---")) {
            free(line);
            body = pos;
            body_line = ln + 1;
            break;
        }
        if (line[0] && line[0] != '#')
            rc = header_line(t, line, ln, &seen, &shots_set, e);
        free(line);
        if (rc)
            return rc;
    }
    if (!body_line)
        return err_set(e, PWB_EPARSE, "%s:%d: no '---' line ending the header", t->path, ln ? ln : 1);
    kind_set = (seen >> 1) & 1;
    if (!kind_set)
        t->kind = t->shots > 0 ? TPL_FEW_SHOT : TPL_ZERO_SHOT;
    if (t->kind == TPL_FEW_SHOT && !shots_set)
        t->shots = 4;
    if (!t->max_tokens)
        t->max_tokens = t->kind == TPL_COT ? 256 : 16;
    if (!t->name && !(t->name = stem(t->path)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    if ((rc = mus_parse(text + body, n - body, t->path, body_line, 1, &t->root, e)))
        return rc;
    /* sections: one per role marker; text before the first marker must be blank */
    int n_roles = 0;
    for (tpl_node *x = t->root; x; x = x->next)
        n_roles += x->type == MUS_ROLE;
    if (n_roles == 0) {
        t->sections = calloc(1, sizeof *t->sections);
        if (!t->sections || !(t->sections[0].role = str_dup("user")))
            return err_set(e, PWB_ENOMEM, "out of memory");
        t->sections[0].body = t->root;
        t->sections[0].line = body_line;
        t->n_sections = 1;
        return PWB_OK;
    }
    for (tpl_node *x = t->root; x && x->type != MUS_ROLE; x = x->next) {
        int blank = x->type == MUS_TEXT;
        for (size_t i = 0; blank && i < x->len; i++)
            if (!strchr(" \t\r\n", x->text[i]))
                blank = 0;
        if (!blank)
            return err_set(e, PWB_EPARSE, "%s:%d: text before the first role section ([system], [user], [assistant])",
                           t->path, x->line);
    }
    t->sections = calloc((size_t)n_roles, sizeof *t->sections);
    if (!t->sections)
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (tpl_node *x = t->root; x; x = x->next) {
        if (x->type != MUS_ROLE)
            continue;
        tpl_section *s = &t->sections[t->n_sections++];
        s->role = str_dup(x->text);
        s->body = x->next;
        s->line = x->line;
        if (!s->role)
            return err_set(e, PWB_ENOMEM, "out of memory");
    }
    return PWB_OK;
}

static int ranks_text(const pwb_template *t, const ds_card *c)
{
    return t->choices == TPL_CHOICES_TEXT || (t->choices == TPL_CHOICES_AUTO && c->n_option_fields > 0);
}

const char *template_delimiter(const pwb_template *t, const char *delim)
{
    return t->target_delimiter ? t->target_delimiter : delim;
}

char **template_choices(const pwb_template *t, const ds_card *c, const ds_example *x, int *n)
{
    return template_choices_delim(t, c, x, NULL, n);
}

char **template_choices_delim(const pwb_template *t, const ds_card *c, const ds_example *x, const char *delim, int *n)
{
    return dataset_choices(c, x, ranks_text(t, c), template_delimiter(t, delim), n);
}

int template_ranks_row_text(const pwb_template *t, const ds_card *c) { return c->n_option_fields > 0 && ranks_text(t, c); }

int template_load(pwb_template *t, const char *path, pwb_err *e)
{
    pwb_buf b;
    buf_init(&b);
    int rc = file_read_all(path, TPL_MAX_BYTES, &b, e);
    if (!rc)
        rc = template_parse(t, b.data, b.len, path, e);
    buf_free(&b);
    return rc;
}

int template_applies(const pwb_template *t, const ds_card *c)
{
    if (!t->task || !t->task[0])
        return 1;
    return !strcmp(t->task, ds_task_name(c->task)) || (c->name && !strcmp(t->task, c->name));
}

/* ---- template_check ---- */

enum { SC_ROOT, SC_SHOT, SC_LABEL, SC_VALUE, SC_CHOICE };

typedef struct check_ctx {
    const pwb_template *t;
    const ds_card *c;
    const char **fields;
    int n_fields;
    int uses_shots;
    pwb_err *e;
} check_ctx;

static const char *root_names[] = {"input", "instruction", "labels", "labels_text", "labels_or", "shots", "n_shots",
                                   "dataset", "description", "task", "choices", NULL};
static const char *shot_names[] = {"input", "answer", "label", "rationale", "choices", "answer_text", NULL};
static const char *label_names[] = {"label", "value", NULL};
static const char *choice_names[] = {"label", "text", NULL};

static int in_list(const char *const *l, const char *s)
{
    for (int i = 0; l[i]; i++)
        if (!strcmp(l[i], s))
            return 1;
    return 0;
}

static int is_answer_field(const ds_card *c, const char *f)
{
    if (c->answer_field && !strcmp(c->answer_field, f))
        return 1;
    for (int i = 0; i < c->n_splits; i++)
        if (c->splits[i].answer_field && !strcmp(c->splits[i].answer_field, f))
            return 1;
    return 0;
}

static int known_in(const check_ctx *k, int scope, const char *name)
{
    const ds_card *c = k->c;
    const char *f = str_starts(name, "fields.") ? name + 7 : NULL;
    switch (scope) {
    case SC_ROOT:
        if (!f && in_list(root_names, name)) {
            if (!strcmp(name, "choices"))
                return c->n_option_fields > 0;
            if (!strcmp(name, "labels") || !strcmp(name, "labels_text") || !strcmp(name, "labels_or"))
                return c->n_labels > 0;
            return 1;
        }
        for (int i = 0; i < k->n_fields; i++)
            if (!strcmp(k->fields[i], f ? f : name))
                return !is_answer_field(c, k->fields[i]); /* the query's gold answer stays hidden */
        return 0;
    case SC_SHOT:
        /* a chain-of-thought template's shots may carry the model's own reasoning (a prompt
         * search bootstraps it, docs/optimize.md) on any card */
        if (!f && in_list(shot_names, name))
            return strcmp(name, "rationale") ? strcmp(name, "choices") || c->n_option_fields > 0
                                             : c->rationale_field || k->t->kind == TPL_COT;
        if (!f && !strcmp(name, "."))
            return 1;
        for (int i = 0; i < k->n_fields; i++)
            if (!strcmp(k->fields[i], f ? f : name))
                return 1;
        return 0;
    case SC_LABEL:
        return in_list(label_names, name) || !strcmp(name, ".");
    case SC_CHOICE:
        return in_list(choice_names, name) || !strcmp(name, ".");
    default:
        return !strcmp(name, ".");
    }
}

static int check_visit(void *ud, const tpl_node *n, const char *const *scopes, int depth)
{
    check_ctx *k = ud;
    if (!strcmp(n->text, "shots"))
        k->uses_shots = 1;
    /* scope kinds from the enclosing section names, innermost first */
    int kinds[MUS_MAX_DEPTH + 1];
    int nk = 0;
    for (int i = depth - 1; i >= 0; i--) {
        if (!scopes[i][0])
            continue; /* inverted sections add no scope */
        kinds[nk++] = !strcmp(scopes[i], "shots")     ? SC_SHOT
                      : !strcmp(scopes[i], "labels")  ? SC_LABEL
                      : !strcmp(scopes[i], "choices") ? SC_CHOICE
                                                      : SC_VALUE;
    }
    kinds[nk++] = SC_ROOT;
    int known = 0;
    if (!strcmp(n->text, "."))
        known = known_in(k, kinds[0], ".");
    else
        for (int i = 0; i < nk && !known; i++)
            known = known_in(k, kinds[i], n->text);
    if (known)
        return 0;
    pwb_buf avail;
    buf_init(&avail);
    const char *const *l = kinds[0] == SC_SHOT     ? shot_names
                           : kinds[0] == SC_LABEL  ? label_names
                           : kinds[0] == SC_CHOICE ? choice_names
                                                   : root_names;
    for (int i = 0; l[i]; i++)
        if (known_in(k, kinds[0], l[i]))
            buf_printf(&avail, "%s%s", avail.len ? ", " : "", l[i]);
    for (int i = 0; i < k->n_fields && kinds[0] != SC_LABEL && kinds[0] != SC_CHOICE; i++)
        if (known_in(k, kinds[0], k->fields[i]))
            buf_printf(&avail, "%s%s", avail.len ? ", " : "", k->fields[i]);
    const char *why = "";
    if (kinds[0] == SC_ROOT && is_answer_field(k->c, str_starts(n->text, "fields.") ? n->text + 7 : n->text))
        why = " (the gold answer field is only visible inside {{#shots}})";
    err_set(k->e, PWB_EINVAL, "%s:%d: unknown variable '%s' for dataset %s%s (known here: %s)", k->t->path, n->line,
            n->text, k->c->name, why, avail.data ? avail.data : "");
    buf_free(&avail);
    return PWB_EINVAL;
}

int template_check(const pwb_template *t, const ds_card *c, pwb_err *e)
{
    if (!template_applies(t, c))
        return err_set(e, PWB_EINVAL, "%s:%d: template is for '%s'; dataset %s is a %s task", t->path,
                       t->task_line ? t->task_line : 1, t->task, c->name, ds_task_name(c->task));
    if (t->answer_pattern) {
        char what[600];
        snprintf(what, sizeof what, "%s:%d: answer", t->path, t->answer_line);
        pcre2_code *re = rx_compile(t->answer_pattern, what, e);
        if (!re)
            return e ? e->code : PWB_EINVAL;
        pcre2_code_free(re);
    }
    check_ctx k = {t, c, NULL, 0, 0, e};
    k.fields = card_known_fields(c, &k.n_fields);
    if (!k.fields)
        return err_set(e, PWB_ENOMEM, "out of memory");
    int rc = mus_walk(t->root, check_visit, &k);
    free(k.fields);
    if (rc)
        return e && e->code ? e->code : rc;
    if (t->shots > 0 && !k.uses_shots && !t->shots_as_turns)
        return err_set(e, PWB_EINVAL, "%s: shots is %d but the body never uses {{#shots}}", t->path, t->shots);
    if (t->shots > 0 && !c->few_shot_split)
        return err_set(e, PWB_EINVAL, "%s: needs %d shots but dataset %s has no few_shot_split (or train split)",
                       t->path, t->shots, c->name);
    return PWB_OK;
}

/* ---- shots ---- */

static int usable(const ds_data *d, size_t row, size_t query_row, int same_split, const char *query_input)
{
    if (same_split && row == query_row)
        return 0;
    const ds_example *x = &d->ex[row];
    if (!x->answer)
        return 0;
    /* the same text under another row id (datasets have duplicates) would leak the answer */
    if (query_input && x->input && !strcmp(x->input, query_input))
        return 0;
    return 1;
}

static int chosen(const size_t *rows, int k, size_t r)
{
    for (int i = 0; i < k; i++)
        if (rows[i] == r)
            return 1;
    return 0;
}

/* Draws up to want rows of label lab (-1: any) into rows[*k...]: rejection sampling over the
 * whole split keeps the draw sequence the same for every query, then a scan as a fallback. */
static void draw(pwb_rng *r, const ds_data *d, int lab, int want, size_t query_row, int same_split, const char *qin,
                 size_t *rows, int *k)
{
    int got = 0;
    long tries = 0, max_tries = 200L * (want + 1) + 20L * (long)(d->n < 100000 ? d->n : 100000);
    while (got < want && tries++ < max_tries) {
        size_t row = (size_t)rng_below(r, d->n);
        if ((lab >= 0 && d->ex[row].label != lab) || chosen(rows, *k, row) ||
            !usable(d, row, query_row, same_split, qin))
            continue;
        rows[(*k)++] = row;
        got++;
    }
    for (size_t row = 0; got < want && row < d->n; row++) {
        if ((lab >= 0 && d->ex[row].label != lab) || chosen(rows, *k, row) ||
            !usable(d, row, query_row, same_split, qin))
            continue;
        rows[(*k)++] = row;
        got++;
    }
}

int template_pick_shots(const pwb_template *t, const ds_card *c, const ds_data *shots_from, size_t query_row,
                        int same_split, uint64_t seed, size_t *out_rows, pwb_err *e)
{
    int n = t->shots;
    if (n <= 0)
        return PWB_OK;
    if (n > TPL_MAX_SHOTS)
        return err_set(e, PWB_ERANGE, "%s: more than %d shots", t->path, TPL_MAX_SHOTS);
    const ds_data *d = shots_from;
    if (!d || d->n == 0)
        return err_set(e, PWB_EINVAL, "%s: no examples to draw shots from", t->path);
    const char *qin = same_split && query_row < d->n ? d->ex[query_row].input : NULL;
    size_t avail = 0;
    for (size_t i = 0; i < d->n && avail < (size_t)n; i++)
        avail += usable(d, i, query_row, same_split, qin);
    if (avail < (size_t)n)
        return err_set(e, PWB_ERANGE, "%s: split '%s' has fewer than %d labelled rows for shots", t->path,
                       d->split ? d->split : "?", n);
    int k = 0;
    pwb_rng r;
    rng_init(&r, seed ^ 0x5348f75e3a1b2c4dULL);
    if (t->shot_pick == SHOTS_FIRST) {
        for (size_t i = 0; i < d->n && k < n; i++)
            if (usable(d, i, query_row, same_split, qin))
                out_rows[k++] = i;
        return PWB_OK;
    }
    if ((t->shot_pick == SHOTS_BALANCED || t->shot_pick == SHOTS_SIMILAR) && c->n_labels > 0) {
        int L = c->n_labels;
        /* which labels get the extra shots when n is not a multiple of L: a seeded order */
        size_t *order = malloc((size_t)L * sizeof *order);
        if (!order)
            return err_set(e, PWB_ENOMEM, "out of memory");
        for (int i = 0; i < L; i++)
            order[i] = (size_t)i;
        rng_shuffle_idx(&r, order, (size_t)L);
        for (int j = 0; j < L && k < n; j++) {
            int lab = (int)order[j];
            int want = n / L + (j < n % L ? 1 : 0);
            draw(&r, d, lab, want, query_row, same_split, qin, out_rows, &k);
        }
        free(order);
        if (k < n) /* some label ran short: fill from any label */
            draw(&r, d, -1, n - k, query_row, same_split, qin, out_rows, &k);
        /* interleave: a seeded order so the last shot's label is not always the same */
        rng_shuffle_idx(&r, out_rows, (size_t)k);
    } else {
        draw(&r, d, -1, n, query_row, same_split, qin, out_rows, &k);
    }
    if (k < n)
        return err_set(e, PWB_ERANGE, "%s: could only pick %d of %d shots", t->path, k, n);
    return PWB_OK;
}

int template_nearest(const float *pool, size_t n, int dim, const float *q, const unsigned char *skip, int k,
                     size_t *out)
{
    if (k <= 0 || dim <= 0 || !pool || !q)
        return 0;
    double *best = malloc((size_t)k * sizeof *best);
    if (!best)
        return 0;
    double qn = 0;
    for (int j = 0; j < dim; j++)
        qn += (double)q[j] * q[j];
    qn = qn > 0 ? 1.0 / sqrt(qn) : 0;
    int got = 0;
    for (size_t i = 0; i < n; i++) {
        if (skip && skip[i])
            continue;
        const float *x = pool + i * (size_t)dim;
        double dot = 0, xn = 0;
        for (int j = 0; j < dim; j++) {
            dot += (double)x[j] * q[j];
            xn += (double)x[j] * x[j];
        }
        double sim = xn > 0 ? dot * qn / sqrt(xn) : -2.0;
        /* insertion into the sorted top k: strictly better moves up, so ties keep the lower row */
        int at = got < k ? got : k;
        while (at > 0 && sim > best[at - 1])
            at--;
        if (at >= k)
            continue;
        int last = got < k ? got : k - 1;
        for (int j = last; j > at; j--) {
            best[j] = best[j - 1];
            out[j] = out[j - 1];
        }
        best[at] = sim;
        out[at] = i;
        if (got < k)
            got++;
    }
    free(best);
    return got;
}

/* ---- rendering ---- */

enum { FR_ROOT = 0, FR_SHOT, FR_LABEL, FR_CHOICE };

typedef struct render_ctx {
    const ds_card *c;
    const ds_example *ex;
    const ds_example *const *shots;
    int n_shots;
    char *labels_text, *labels_or;
    char n_shots_s[16];
} render_ctx;

static int field_value(const ds_example *x, const char *name, int hide_answer, mus_val *v)
{
    if (!x || !x->field_names)
        return 0;
    for (int i = 0; i < x->n_fields; i++)
        if (!strcmp(x->field_names[i], name)) {
            if ((hide_answer && i == x->answer_idx) || !x->fields[i])
                return 0;
            v->type = MV_STR;
            v->s = x->fields[i];
            return 1;
        }
    return 0;
}

static int set_str(mus_val *v, const char *s)
{
    v->type = MV_STR;
    v->s = s ? s : "";
    return 1;
}

/* {{#choices}}: the example's options, each frame {FR_CHOICE, example, option index} */
static int choices_of(const ds_example *x, mus_val *v)
{
    if (!x || !x->n_options)
        return 0;
    v->type = MV_LIST;
    v->n = (size_t)x->n_options;
    v->item_kind = FR_CHOICE;
    v->p = x;
    return 1;
}

static int tpl_lookup(void *ud, const mus_frame *f, const char *name, mus_val *v)
{
    const render_ctx *r = ud;
    const ds_card *c = r->c;
    const char *fld = str_starts(name, "fields.") ? name + 7 : NULL;
    if (f->kind == FR_CHOICE) {
        const ds_example *x = f->p;
        if (!strcmp(name, "label"))
            return set_str(v, f->i < (size_t)c->n_labels ? c->labels[f->i].verbalizer : "");
        if (!strcmp(name, "text") || !strcmp(name, "."))
            return set_str(v, x->options[f->i]);
        return 0;
    }
    if (f->kind == FR_LABEL) {
        const ds_label *l = &c->labels[f->i];
        if (!strcmp(name, "label") || !strcmp(name, "."))
            return set_str(v, l->verbalizer);
        if (!strcmp(name, "value"))
            return set_str(v, l->value);
        return 0;
    }
    if (f->kind == FR_SHOT) {
        const ds_example *x = r->shots[f->i];
        if (fld)
            return field_value(x, fld, 0, v);
        if (!strcmp(name, "input") || !strcmp(name, "."))
            return set_str(v, x->input);
        if (!strcmp(name, "answer") || !strcmp(name, "label"))
            return set_str(v, c->relabeled && x->label >= 0 && x->label < c->n_labels ? c->labels[x->label].verbalizer
                                                                                      : x->answer);
        if (!strcmp(name, "rationale"))
            return x->rationale ? set_str(v, x->rationale) : 0;
        if (!strcmp(name, "choices"))
            return choices_of(x, v);
        if (!strcmp(name, "answer_text"))
            return set_str(v, x->n_options && x->label >= 0 && x->label < x->n_options ? x->options[x->label] : x->answer);
        return field_value(x, name, 0, v);
    }
    if (fld)
        return field_value(r->ex, fld, 1, v);
    if (!strcmp(name, "input"))
        return set_str(v, r->ex->input);
    if (!strcmp(name, "instruction"))
        return set_str(v, c->instruction);
    if (!strcmp(name, "labels")) {
        v->type = MV_LIST;
        v->n = (size_t)c->n_labels;
        v->item_kind = FR_LABEL;
        v->p = r;
        return 1;
    }
    if (!strcmp(name, "labels_text"))
        return set_str(v, r->labels_text);
    if (!strcmp(name, "labels_or"))
        return set_str(v, r->labels_or);
    if (!strcmp(name, "shots")) {
        v->type = MV_LIST;
        v->n = (size_t)r->n_shots;
        v->item_kind = FR_SHOT;
        v->p = r;
        return 1;
    }
    if (!strcmp(name, "n_shots"))
        return set_str(v, r->n_shots_s);
    if (!strcmp(name, "choices") && r->ex->n_options)
        return choices_of(r->ex, v);
    if (!strcmp(name, "dataset"))
        return set_str(v, c->name);
    if (!strcmp(name, "description"))
        return set_str(v, c->description);
    if (!strcmp(name, "task"))
        return set_str(v, ds_task_name(c->task));
    return field_value(r->ex, name, 1, v);
}

static char *join_labels(const ds_card *c, const char *last_sep)
{
    pwb_buf b;
    buf_init(&b);
    for (int i = 0; i < c->n_labels; i++) {
        const char *sep = i == 0 ? "" : i == c->n_labels - 1 ? last_sep : ", ";
        if (buf_puts(&b, sep) || buf_puts(&b, c->labels[i].verbalizer)) {
            buf_free(&b);
            return NULL;
        }
    }
    return buf_take(&b);
}

/* Keeps what the template says: only the blank lines at either end of a message go (the lines
 * around role markers and the file's last newline are layout), so "Answer: " keeps its space.
 * Runs of blank lines left by empty sections are squeezed to one. */
static char *tidy(const char *s, size_t n)
{
    for (;;) { /* drop a trailing line that holds only spaces, with its newline */
        size_t k = n;
        while (k && (s[k - 1] == ' ' || s[k - 1] == '\t' || s[k - 1] == '\r'))
            k--;
        if (k == 0) {
            n = 0;
            break;
        }
        if (s[k - 1] != '\n')
            break;
        n = k - 1;
    }
    for (;;) { /* and leading blank lines, keeping the first line's indentation */
        size_t k = 0;
        while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r'))
            k++;
        if (k == n || s[k] != '\n')
            break;
        s += k + 1;
        n -= k + 1;
    }
    pwb_buf b;
    buf_init(&b);
    int nl = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n') {
            if (++nl > 2)
                continue;
        } else if (s[i] != '\r' && s[i] != ' ' && s[i] != '\t') {
            nl = 0;
        }
        if (buf_putc(&b, s[i])) {
            buf_free(&b);
            return NULL;
        }
    }
    return buf_take(&b);
}

static int add_msg(tpl_prompt *p, const char *role, const char *s, size_t n)
{
    char *content = tidy(s, n);
    if (!content)
        return -1;
    if (!content[0]) {
        free(content);
        return 0;
    }
    tpl_message *m = realloc(p->msgs, ((size_t)p->n + 1) * sizeof *m);
    if (!m) {
        free(content);
        return -1;
    }
    p->msgs = m;
    m[p->n].role = str_dup(role);
    m[p->n].content = content;
    if (!m[p->n].role) {
        free(content);
        return -1;
    }
    p->n++;
    return 0;
}

static int render_one(const pwb_template *t, const ds_card *c, const ds_example *ex, const ds_example *const *shots,
                      int n_shots, tpl_prompt *out, pwb_err *e);

/* Moves p's messages onto out (system ones only when keep_system), emptying p. */
static int take_msgs(tpl_prompt *out, tpl_prompt *p, int keep_system)
{
    tpl_message *m = realloc(out->msgs, ((size_t)out->n + (size_t)p->n + 1) * sizeof *m);
    if (!m)
        return -1;
    out->msgs = m;
    for (int i = 0; i < p->n; i++) {
        if (!keep_system && !strcmp(p->msgs[i].role, "system")) {
            free(p->msgs[i].role);
            free(p->msgs[i].content);
            continue;
        }
        out->msgs[out->n++] = p->msgs[i];
    }
    free(p->msgs);
    p->msgs = NULL;
    p->n = 0;
    return 0;
}

/* Each shot as the template rendered for it alone, then its answer as the assistant's reply; the
 * template's system section once, at the top. */
static int render_turns(const pwb_template *t, const ds_card *c, const ds_example *ex, const ds_example *const *shots,
                        int n_shots, tpl_prompt *out, pwb_err *e)
{
    tpl_prompt one;
    int rc = PWB_OK;
    for (int i = 0; i <= n_shots && !rc; i++) {
        const ds_example *x = i < n_shots ? shots[i] : ex;
        if ((rc = render_one(t, c, x, NULL, 0, &one, e)))
            break;
        if (take_msgs(out, &one, i == 0)) {
            tpl_prompt_free(&one);
            rc = err_set(e, PWB_ENOMEM, "out of memory");
            break;
        }
        if (i == n_shots)
            break;
        const char *ans = c->relabeled && x->label >= 0 && x->label < c->n_labels ? c->labels[x->label].verbalizer
                                                                                   : x->answer;
        if (add_msg(out, "assistant", ans ? ans : "", ans ? strlen(ans) : 0))
            rc = err_set(e, PWB_ENOMEM, "out of memory");
    }
    if (rc)
        tpl_prompt_free(out);
    return rc;
}

int template_render(const pwb_template *t, const ds_card *c, const ds_example *ex, const ds_example *const *shots,
                    int n_shots, tpl_prompt *out, pwb_err *e)
{
    if (t->shots_as_turns && shots && n_shots > 0) {
        memset(out, 0, sizeof *out);
        return render_turns(t, c, ex, shots, n_shots, out, e);
    }
    return render_one(t, c, ex, shots, n_shots, out, e);
}

static int render_one(const pwb_template *t, const ds_card *c, const ds_example *ex, const ds_example *const *shots,
                      int n_shots, tpl_prompt *out, pwb_err *e)
{
    memset(out, 0, sizeof *out);
    if (!t->root && !t->n_sections)
        return err_set(e, PWB_EINVAL, "%s: template not loaded", t->path ? t->path : "template");
    render_ctx r;
    memset(&r, 0, sizeof r);
    r.c = c;
    r.ex = ex;
    r.shots = shots;
    r.n_shots = shots ? n_shots : 0;
    r.labels_text = join_labels(c, ", ");
    r.labels_or = join_labels(c, " or ");
    snprintf(r.n_shots_s, sizeof r.n_shots_s, "%d", r.n_shots);
    pwb_buf b;
    buf_init(&b);
    int rc = PWB_OK;
    if (!r.labels_text || !r.labels_or) {
        rc = err_set(e, PWB_ENOMEM, "out of memory");
        goto done;
    }
    mus_frame root = {FR_ROOT, &r, 0};
    if ((rc = mus_render(t->root, tpl_lookup, &r, &root, 1, &b, e))) {
        err_prefix(e, "%s: ", t->path);
        goto done;
    }
    /* split at role markers: \x01role\x01 */
    const char *s = b.data, *end = b.data + b.len;
    const char *role = "user";
    const char *seg = s;
    while (s < end) {
        const char *m = memchr(s, MUS_ROLE_MARK, (size_t)(end - s));
        if (!m)
            break;
        const char *m2 = memchr(m + 1, MUS_ROLE_MARK, (size_t)(end - m - 1));
        if (!m2)
            break;
        if (add_msg(out, role, seg, (size_t)(m - seg))) {
            rc = err_set(e, PWB_ENOMEM, "out of memory");
            goto done;
        }
        role = !strncmp(m + 1, "system", 6) ? "system" : !strncmp(m + 1, "assistant", 9) ? "assistant" : "user";
        seg = s = m2 + 1;
    }
    if (add_msg(out, role, seg, (size_t)(end - seg)))
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    else if (out->n == 0)
        rc = err_set(e, PWB_EINVAL, "%s: the prompt rendered empty", t->path);
done:
    if (rc)
        tpl_prompt_free(out);
    free(r.labels_text);
    free(r.labels_or);
    buf_free(&b);
    return rc;
}

void tpl_prompt_free(tpl_prompt *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n; i++) {
        free(p->msgs[i].role);
        free(p->msgs[i].content);
    }
    free(p->msgs);
    p->msgs = NULL;
    p->n = 0;
}

int tpl_prompt_flatten(const tpl_prompt *p, pwb_buf *out)
{
    buf_reset(out);
    if (p->n == 1 && !strcmp(p->msgs[0].role, "user"))
        return buf_puts(out, p->msgs[0].content);
    for (int i = 0; i < p->n; i++)
        if (buf_printf(out, "%s[%s]\n%s", i ? "\n\n" : "", p->msgs[i].role, p->msgs[i].content))
            return -1;
    return buf_append(out, "", 0);
}
