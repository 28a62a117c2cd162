#include "task/mustache.h"

#include <stdlib.h>
#include <string.h>

#include "util/str.h"

/* ---- parsing ---- */

typedef struct parser {
    const char *src;
    size_t n;
    const char *path;
    int first_line;
    int roles;
    size_t line_pos; /* newlines are counted incrementally up to here */
    int line;
    /* open sections: the tail pointer where the next node goes, per depth */
    tpl_node **tail[MUS_MAX_DEPTH + 1];
    tpl_node *open[MUS_MAX_DEPTH + 1];
    int depth;
    pwb_err *e;
} parser;

static int line_at(parser *p, size_t pos)
{
    if (pos < p->line_pos) { /* never happens in a forward scan, but stay correct */
        p->line_pos = 0;
        p->line = p->first_line;
    }
    for (size_t i = p->line_pos; i < pos && i < p->n; i++)
        if (p->src[i] == '\n')
            p->line++;
    p->line_pos = pos;
    return p->line;
}

static tpl_node *node_new(parser *p, int type, int line, const char *text, size_t len)
{
    tpl_node *nd = calloc(1, sizeof *nd);
    if (!nd)
        return NULL;
    nd->type = type;
    nd->line = line;
    nd->text = str_ndup(text ? text : "", text ? len : 0);
    nd->len = text ? len : 0;
    if (!nd->text) {
        free(nd);
        return NULL;
    }
    *p->tail[p->depth] = nd;
    p->tail[p->depth] = &nd->next;
    return nd;
}

static int is_blank(char c) { return c == ' ' || c == '\t'; }

static const char *role_of_line(const char *s, size_t len)
{
    while (len && (is_blank(s[len - 1]) || s[len - 1] == '\r'))
        len--;
    while (len && is_blank(*s)) {
        s++;
        len--;
    }
    static const char *roles[] = {"system", "user", "assistant"};
    for (int i = 0; i < 3; i++) {
        size_t k = strlen(roles[i]);
        if (len == k + 2 && s[0] == '[' && s[len - 1] == ']' && memcmp(s + 1, roles[i], k) == 0)
            return roles[i];
    }
    return NULL;
}

/* Emits src[a, b) as text, splitting out role marker lines (which must be whole source lines). */
static int emit_text(parser *p, size_t a, size_t b)
{
    if (!p->roles) {
        if (b > a && !node_new(p, MUS_TEXT, line_at(p, a), p->src + a, b - a))
            return err_set(p->e, PWB_ENOMEM, "out of memory");
        return PWB_OK;
    }
    size_t seg = a, ls = a;
    while (ls < b) {
        const char *nl = memchr(p->src + ls, '\n', b - ls);
        size_t le = nl ? (size_t)(nl - p->src) : b;
        int whole = (ls == 0 || p->src[ls - 1] == '\n') && (nl || le == p->n);
        const char *role = whole ? role_of_line(p->src + ls, le - ls) : NULL;
        if (role) {
            if (ls > seg && !node_new(p, MUS_TEXT, line_at(p, seg), p->src + seg, ls - seg))
                return err_set(p->e, PWB_ENOMEM, "out of memory");
            if (p->depth > 0)
                return err_set(p->e, PWB_EPARSE, "%s:%d: role marker [%s] inside section '%s'", p->path,
                               line_at(p, ls), role, p->open[p->depth]->text);
            if (!node_new(p, MUS_ROLE, line_at(p, ls), role, strlen(role)))
                return err_set(p->e, PWB_ENOMEM, "out of memory");
            seg = nl ? le + 1 : le;
        }
        ls = nl ? le + 1 : b;
    }
    if (b > seg && !node_new(p, MUS_TEXT, line_at(p, seg), p->src + seg, b - seg))
        return err_set(p->e, PWB_ENOMEM, "out of memory");
    return PWB_OK;
}

static int valid_name(const char *s, size_t n)
{
    if (n == 1 && s[0] == '.')
        return 1;
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-' || c == '/' || c == ' ' || c == '[' || c == ']' || c == '*'))
            return 0; /* brackets: field paths (a[0], a[*].b) */
    }
    return 1;
}

int mus_parse(const char *text, size_t n, const char *path, int first_line, int roles, tpl_node **out, pwb_err *e)
{
    *out = NULL;
    parser p;
    memset(&p, 0, sizeof p);
    p.src = text;
    p.n = n;
    p.path = path ? path : "template";
    p.first_line = p.line = first_line > 0 ? first_line : 1;
    p.roles = roles;
    p.e = e;
    tpl_node *root = NULL;
    p.tail[0] = &root;
    int rc = PWB_OK;
    size_t pos = 0, text_start = 0;
    while (pos < n) {
        const char *o = memmem(text + pos, n - pos, "{{", 2);
        if (!o)
            break;
        size_t s = (size_t)(o - text);
        int line = line_at(&p, s);
        size_t inner = s + 2;
        int triple = inner < n && text[inner] == '{';
        if (triple)
            inner++;
        const char *close = memmem(text + inner, n - inner, triple ? "}}}" : "}}", triple ? 3 : 2);
        if (!close) {
            rc = err_set(e, PWB_EPARSE, "%s:%d: unterminated tag '{{'", p.path, line);
            goto fail;
        }
        size_t ie = (size_t)(close - text), te = ie + (triple ? 3 : 2);
        char sigil = 0;
        size_t ns = inner;
        if (!triple && ns < ie && strchr("#^/!&>=", text[ns]))
            sigil = text[ns++];
        if (sigil == '!') {
            /* comments may contain anything, including a '}}' is not possible by construction */
        } else if (sigil == '>' || sigil == '=') {
            rc = err_set(e, PWB_EUNSUP, "%s:%d: %s are not supported", p.path, line,
                         sigil == '>' ? "partials ({{>name}})" : "delimiter changes ({{=..=}})");
            goto fail;
        }
        size_t ne = ie;
        while (ns < ne && is_blank(text[ns]))
            ns++;
        while (ne > ns && is_blank(text[ne - 1]))
            ne--;
        if (sigil != '!' && !valid_name(text + ns, ne - ns)) {
            rc = err_set(e, PWB_EPARSE, "%s:%d: bad tag name '%.*s'", p.path, line, (int)(ie - inner > 60 ? 60 : ie - inner),
                         text + inner);
            goto fail;
        }
        /* Standalone tags (alone on their line) take the line's indentation and newline. */
        size_t text_end = s, next = te;
        if (sigil == '#' || sigil == '^' || sigil == '/' || sigil == '!') {
            size_t ls = s;
            while (ls > 0 && is_blank(text[ls - 1]))
                ls--;
            int at_start = ls == 0 || text[ls - 1] == '\n';
            size_t le = te;
            while (le < n && is_blank(text[le]))
                le++;
            if (le < n && text[le] == '\r' && le + 1 < n && text[le + 1] == '\n')
                le++;
            int at_end = le == n || text[le] == '\n';
            if (at_start && at_end && ls >= text_start) {
                text_end = ls;
                next = le < n ? le + 1 : n;
            }
        }
        if ((rc = emit_text(&p, text_start, text_end)) != PWB_OK)
            goto fail;
        if (sigil == '#' || sigil == '^') {
            if (p.depth >= MUS_MAX_DEPTH) {
                rc = err_set(e, PWB_ERANGE, "%s:%d: sections nested deeper than %d", p.path, line, MUS_MAX_DEPTH);
                goto fail;
            }
            tpl_node *nd = node_new(&p, sigil == '#' ? MUS_SECTION : MUS_INVERTED, line, text + ns, ne - ns);
            if (!nd) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                goto fail;
            }
            p.depth++;
            p.open[p.depth] = nd;
            p.tail[p.depth] = &nd->child;
        } else if (sigil == '/') {
            if (p.depth == 0) {
                rc = err_set(e, PWB_EPARSE, "%s:%d: closing tag '{{/%.*s}}' without an open section", p.path, line,
                             (int)(ne - ns), text + ns);
                goto fail;
            }
            tpl_node *op = p.open[p.depth];
            if (strlen(op->text) != ne - ns || memcmp(op->text, text + ns, ne - ns) != 0) {
                rc = err_set(e, PWB_EPARSE, "%s:%d: closing tag '{{/%.*s}}' does not match '{{%c%s}}' opened on line %d",
                             p.path, line, (int)(ne - ns), text + ns, op->type == MUS_SECTION ? '#' : '^', op->text,
                             op->line);
                goto fail;
            }
            p.depth--;
        } else if (sigil != '!') {
            if (!node_new(&p, MUS_VAR, line, text + ns, ne - ns)) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                goto fail;
            }
        }
        text_start = pos = next;
    }
    if ((rc = emit_text(&p, text_start, n)) != PWB_OK)
        goto fail;
    if (p.depth > 0) {
        tpl_node *op = p.open[p.depth];
        rc = err_set(e, PWB_EPARSE, "%s:%d: section '{{%c%s}}' is never closed", p.path, op->line,
                     op->type == MUS_SECTION ? '#' : '^', op->text);
        goto fail;
    }
    *out = root;
    return PWB_OK;
fail:
    mus_free(root);
    return rc;
}

void mus_free(tpl_node *n)
{
    while (n) {
        tpl_node *next = n->next;
        mus_free(n->child);
        free(n->text);
        free(n);
        n = next;
    }
}

/* ---- rendering ---- */

typedef struct renderer {
    mus_lookup_fn fn;
    void *ud;
    mus_frame stack[MUS_MAX_DEPTH + 2];
    int depth; /* frames in use */
    int roles;
    pwb_buf *out;
    pwb_err *e;
} renderer;

static int lookup(renderer *r, const char *name, mus_val *v)
{
    memset(v, 0, sizeof *v);
    if (strcmp(name, ".") == 0) {
        const mus_frame *f = &r->stack[r->depth - 1];
        if (f->kind == MUS_FRAME_STR) {
            v->type = MV_STR;
            v->s = f->p;
            return 1;
        }
        return r->fn(r->ud, f, name, v);
    }
    for (int i = r->depth - 1; i >= 0; i--) {
        if (r->stack[i].kind == MUS_FRAME_STR)
            continue;
        if (r->fn(r->ud, &r->stack[i], name, v))
            return 1;
    }
    return 0;
}

static int put_value(renderer *r, const char *s)
{
    if (!s)
        return PWB_OK;
    if (!r->roles)
        return buf_puts(r->out, s) ? err_set(r->e, PWB_ENOMEM, "out of memory") : PWB_OK;
    /* Values never carry role markers: data cannot forge a [system] turn. */
    for (const char *q = s; *q;) {
        const char *m = strchr(q, MUS_ROLE_MARK);
        size_t k = m ? (size_t)(m - q) : strlen(q);
        if (buf_append(r->out, q, k))
            return err_set(r->e, PWB_ENOMEM, "out of memory");
        q += k;
        if (m)
            q++;
    }
    return PWB_OK;
}

static int render_nodes(renderer *r, const tpl_node *n);

static int push(renderer *r, mus_frame f)
{
    if (r->depth >= (int)(sizeof r->stack / sizeof r->stack[0]))
        return err_set(r->e, PWB_ERANGE, "template sections nested too deep");
    r->stack[r->depth++] = f;
    return PWB_OK;
}

static int render_var(renderer *r, const tpl_node *n)
{
    mus_val v;
    if (!lookup(r, n->text, &v))
        return PWB_OK; /* Mustache: unknown names render empty; template_check reports them */
    if (v.type == MV_STR)
        return put_value(r, v.s);
    if (v.type == MV_LIST) {
        /* A list used as a value joins its items' "." with ", " ({{labels}}). */
        for (size_t i = 0; i < v.n; i++) {
            mus_frame f = {v.item_kind, v.p, i};
            mus_val iv;
            memset(&iv, 0, sizeof iv);
            if (!r->fn(r->ud, &f, ".", &iv) || iv.type != MV_STR)
                continue;
            if (i && buf_puts(r->out, ", "))
                return err_set(r->e, PWB_ENOMEM, "out of memory");
            int rc = put_value(r, iv.s);
            if (rc)
                return rc;
        }
        return PWB_OK;
    }
    if (v.type == MV_TRUE)
        return put_value(r, "true");
    return PWB_OK;
}

static int truthy(const mus_val *v)
{
    return v->type == MV_TRUE || (v->type == MV_STR && v->s && v->s[0]) || (v->type == MV_LIST && v->n > 0);
}

static int render_nodes(renderer *r, const tpl_node *n)
{
    int rc;
    for (; n; n = n->next) {
        if (r->out->len > MUS_MAX_OUTPUT)
            return err_set(r->e, PWB_ERANGE, "rendered text larger than %u bytes", MUS_MAX_OUTPUT);
        switch (n->type) {
        case MUS_TEXT:
            if (buf_append(r->out, n->text, n->len))
                return err_set(r->e, PWB_ENOMEM, "out of memory");
            break;
        case MUS_ROLE:
            if (r->roles && (buf_putc(r->out, MUS_ROLE_MARK) || buf_puts(r->out, n->text) ||
                             buf_putc(r->out, MUS_ROLE_MARK)))
                return err_set(r->e, PWB_ENOMEM, "out of memory");
            break;
        case MUS_VAR:
            if ((rc = render_var(r, n)) != PWB_OK)
                return rc;
            break;
        case MUS_SECTION:
        case MUS_INVERTED: {
            mus_val v;
            int found = lookup(r, n->text, &v);
            int t = found && truthy(&v);
            if (n->type == MUS_INVERTED) {
                if (!t && (rc = render_nodes(r, n->child)) != PWB_OK)
                    return rc;
                break;
            }
            if (!t)
                break;
            if (v.type == MV_LIST) {
                for (size_t i = 0; i < v.n; i++) {
                    if ((rc = push(r, (mus_frame){v.item_kind, v.p, i})) != PWB_OK)
                        return rc;
                    rc = render_nodes(r, n->child);
                    r->depth--;
                    if (rc)
                        return rc;
                }
            } else {
                if ((rc = push(r, (mus_frame){MUS_FRAME_STR, v.type == MV_STR ? v.s : "true", 0})) != PWB_OK)
                    return rc;
                rc = render_nodes(r, n->child);
                r->depth--;
                if (rc)
                    return rc;
            }
            break;
        }
        }
    }
    return PWB_OK;
}

int mus_render(const tpl_node *n, mus_lookup_fn fn, void *ud, const mus_frame *root, int roles, pwb_buf *out,
               pwb_err *e)
{
    renderer r;
    memset(&r, 0, sizeof r);
    r.fn = fn;
    r.ud = ud;
    r.roles = roles;
    r.out = out;
    r.e = e;
    r.stack[0] = *root;
    r.depth = 1;
    if (buf_append(out, "", 0))
        return err_set(e, PWB_ENOMEM, "out of memory");
    return render_nodes(&r, n);
}

/* ---- walking (template_check) ---- */

static int walk(const tpl_node *n, mus_visit_fn visit, void *ud, const char **scopes, int depth)
{
    for (; n; n = n->next) {
        if (n->type == MUS_VAR || n->type == MUS_SECTION || n->type == MUS_INVERTED) {
            int rc = visit(ud, n, scopes, depth);
            if (rc)
                return rc;
        }
        if ((n->type == MUS_SECTION || n->type == MUS_INVERTED) && n->child) {
            if (depth >= MUS_MAX_DEPTH)
                return PWB_ERANGE;
            /* An inverted section renders only when the name is falsy, so it adds no scope. */
            scopes[depth] = n->type == MUS_SECTION ? n->text : "";
            int rc = walk(n->child, visit, ud, scopes, depth + 1);
            if (rc)
                return rc;
        }
    }
    return PWB_OK;
}

int mus_walk(const tpl_node *n, mus_visit_fn visit, void *ud)
{
    const char *scopes[MUS_MAX_DEPTH + 1];
    return walk(n, visit, ud, scopes, 0);
}
