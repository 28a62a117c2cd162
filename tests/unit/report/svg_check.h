/* Checks for the SVG charts, shared by the report unit tests and the integration test:
 *   svg_wellformed - a small XML well-formedness check (balanced tags, quoted attributes, only
 *                    the five named entities and character references, no stray '<' or '&');
 *   svg_in_bounds  - every shape and every text's estimated extent lies inside the viewBox.
 * Both return NULL when fine, or a static message naming the problem. */
#ifndef PWB_TESTS_SVG_CHECK_H
#define PWB_TESTS_SVG_CHECK_H

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char svg_check_msg[512];

static const char *svg_fail(const char *what, const char *at)
{
    snprintf(svg_check_msg, sizeof svg_check_msg, "%s at: %.80s", what, at ? at : "");
    return svg_check_msg;
}

static int svg_entity_ok(const char *p)
{
    static const char *const named[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    for (int i = 0; i < 5; i++)
        if (!strncmp(p, named[i], strlen(named[i])))
            return (int)strlen(named[i]);
    if (p[1] == '#') {
        const char *q = p + 2;
        int hex = *q == 'x';
        q += hex;
        const char *d = q;
        while (hex ? isxdigit((unsigned char)*q) : isdigit((unsigned char)*q))
            q++;
        if (q > d && *q == ';')
            return (int)(q - p + 1);
    }
    return 0;
}

static const char *svg_wellformed(const char *doc)
{
    const char *stack[64];
    size_t sl[64];
    int depth = 0, roots = 0;
    const char *p = doc;
    if (strncmp(p, "<?xml", 5) == 0) {
        p = strstr(p, "?>");
        if (!p)
            return svg_fail("unterminated declaration", doc);
        p += 2;
    }
    while (*p) {
        if (*p == '&') {
            int n = svg_entity_ok(p);
            if (!n)
                return svg_fail("bad entity", p);
            p += n;
            continue;
        }
        if (*p != '<') {
            if (depth == 0 && !isspace((unsigned char)*p))
                return svg_fail("text outside the root", p);
            p++;
            continue;
        }
        if (p[1] == '/') {
            const char *n = p + 2, *q = n;
            while (*q && *q != '>' && !isspace((unsigned char)*q))
                q++;
            if (depth == 0 || (size_t)(q - n) != sl[depth - 1] || strncmp(n, stack[depth - 1], sl[depth - 1]))
                return svg_fail("mismatched end tag", p);
            depth--;
            p = strchr(q, '>');
            if (!p)
                return svg_fail("unterminated end tag", q);
            p++;
            continue;
        }
        const char *n = p + 1, *q = n;
        if (!isalpha((unsigned char)*q))
            return svg_fail("bad tag name", p);
        while (isalnum((unsigned char)*q) || *q == '-' || *q == ':' || *q == '_')
            q++;
        size_t nl = (size_t)(q - n);
        for (;;) {
            while (isspace((unsigned char)*q))
                q++;
            if (*q == '/' && q[1] == '>') {
                q += 2;
                if (depth == 0)
                    roots++;
                break;
            }
            if (*q == '>') {
                q++;
                if (depth == 0)
                    roots++;
                if (depth == 64)
                    return svg_fail("too deep", p);
                stack[depth] = n;
                sl[depth++] = nl;
                break;
            }
            const char *an = q;
            while (isalnum((unsigned char)*q) || *q == '-' || *q == ':' || *q == '_')
                q++;
            if (q == an || *q != '=' || q[1] != '"')
                return svg_fail("bad attribute", an);
            q += 2;
            while (*q && *q != '"') {
                if (*q == '<')
                    return svg_fail("'<' in an attribute", q);
                if (*q == '&') {
                    int k = svg_entity_ok(q);
                    if (!k)
                        return svg_fail("bad entity in an attribute", q);
                    q += k;
                    continue;
                }
                q++;
            }
            if (*q != '"')
                return svg_fail("unterminated attribute", an);
            q++;
        }
        p = q;
    }
    if (depth)
        return svg_fail("unclosed element", stack[depth - 1]);
    if (roots != 1)
        return svg_fail("not exactly one root element", doc);
    return NULL;
}

/* The value of attribute name in the tag starting at tag (NAN when absent). */
static double svg_attr(const char *tag, const char *end, const char *name)
{
    char key[32];
    snprintf(key, sizeof key, " %s=\"", name);
    const char *p = strstr(tag, key);
    if (!p || p > end)
        return NAN;
    return strtod(p + strlen(key), NULL);
}

static int svg_attr_has(const char *tag, const char *end, const char *text)
{
    const char *p = strstr(tag, text);
    return p && p < end;
}

static int svg_inside(double v, double lim)
{
    return !isnan(v) && v >= -0.05 && v <= lim + 0.05;
}

/* Code points of the element's text content (entities count as one). */
static size_t svg_text_cps(const char *gt)
{
    size_t n = 0;
    for (const char *p = gt + 1; *p && *p != '<'; p++) {
        if (*p == '&') {
            const char *semi = strchr(p, ';');
            if (semi)
                p = semi;
        }
        n += ((unsigned char)*p & 0xc0) != 0x80;
    }
    return n;
}

static const char *svg_in_bounds(const char *doc)
{
    const char *vb = strstr(doc, "viewBox=\"");
    double x0, y0, W, H;
    if (!vb || sscanf(vb + 9, "%lf %lf %lf %lf", &x0, &y0, &W, &H) != 4 || x0 != 0 || y0 != 0)
        return svg_fail("no viewBox 0 0 W H", doc);
    for (const char *p = strchr(doc, '<'); p; p = strchr(p + 1, '<')) {
        const char *end = strchr(p, '>');
        if (!end)
            break;
        if (!strncmp(p, "<rect ", 6)) {
            double x = svg_attr(p, end, "x"), y = svg_attr(p, end, "y"), w = svg_attr(p, end, "width"),
                   h = svg_attr(p, end, "height");
            if (!svg_inside(x, W) || !svg_inside(y, H) || !svg_inside(x + w, W) || !svg_inside(y + h, H) || w < 0 ||
                h < 0)
                return svg_fail("rect outside the viewBox", p);
        } else if (!strncmp(p, "<line ", 6)) {
            if (!svg_inside(svg_attr(p, end, "x1"), W) || !svg_inside(svg_attr(p, end, "x2"), W) ||
                !svg_inside(svg_attr(p, end, "y1"), H) || !svg_inside(svg_attr(p, end, "y2"), H))
                return svg_fail("line outside the viewBox", p);
        } else if (!strncmp(p, "<circle ", 8)) {
            double cx = svg_attr(p, end, "cx"), cy = svg_attr(p, end, "cy"), r = svg_attr(p, end, "r");
            if (!svg_inside(cx - r, W) || !svg_inside(cx + r, W) || !svg_inside(cy - r, H) || !svg_inside(cy + r, H))
                return svg_fail("circle outside the viewBox", p);
        } else if (!strncmp(p, "<polyline ", 10)) {
            const char *q = strstr(p, "points=\"");
            if (!q || q > end)
                return svg_fail("polyline without points", p);
            q += 8;
            while (*q && *q != '"') {
                char *e1, *e2;
                double x = strtod(q, &e1);
                if (*e1 != ',')
                    return svg_fail("bad polyline point", q);
                double y = strtod(e1 + 1, &e2);
                if (!svg_inside(x, W) || !svg_inside(y, H))
                    return svg_fail("polyline point outside the viewBox", q);
                q = e2;
                while (*q == ' ')
                    q++;
            }
        } else if (!strncmp(p, "<path ", 6)) {
            const char *q = strstr(p, " d=\"");
            if (!q || q > end)
                return svg_fail("path without d", p);
            q += 4;
            while (*q && *q != '"') {
                char c = *q++;
                char *e1;
                if (c == 'M' || c == 'L') {
                    double x = strtod(q, &e1), y = strtod(e1, &e1);
                    if (!svg_inside(x, W) || !svg_inside(y, H))
                        return svg_fail("path point outside the viewBox", q);
                    q = e1;
                } else if (c == 'H' || c == 'V') {
                    double v = strtod(q, &e1);
                    if (!svg_inside(v, c == 'H' ? W : H))
                        return svg_fail("path line outside the viewBox", q);
                    q = e1;
                } else if (c != ' ') {
                    return svg_fail("unexpected path command", q - 1);
                }
            }
        } else if (!strncmp(p, "<text ", 6)) {
            double x = svg_attr(p, end, "x"), y = svg_attr(p, end, "y"), fs = svg_attr(p, end, "font-size");
            if (isnan(fs))
                fs = 12;
            if (!svg_inside(x, W) || !svg_inside(y, H) || y - fs * 0.8 < -0.05)
                return svg_fail("text anchor outside the viewBox", p);
            if (svg_attr_has(p, end, "transform="))
                continue;
            /* The renderer's own width estimate (0.62 em per code point): clipped text is a bug. */
            double w = (double)svg_text_cps(end) * 0.62 * fs;
            double l = svg_attr_has(p, end, "text-anchor=\"end\"")      ? x - w
                       : svg_attr_has(p, end, "text-anchor=\"middle\"") ? x - w / 2
                                                                        : x;
            if (l < -0.05 || l + w > W + 0.05)
                return svg_fail("text runs outside the viewBox", p);
        }
    }
    return NULL;
}

#endif
