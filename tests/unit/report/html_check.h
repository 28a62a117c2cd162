/* Checks for the HTML report, shared by the report unit tests:
 *   html_missing_row - the first table row of the markdown whose cells (markup removed) are not
 *                      the cells of some <tr> of the HTML (tags removed, entities decoded), or
 *                      NULL when every row is there;
 *   html_offline     - NULL when the page loads nothing: no src= or href= other than "#...",
 *                      no url( ), no @import; else the offending text. */
#ifndef PWB_TESTS_HTML_CHECK_H
#define PWB_TESTS_HTML_CHECK_H

#include <stdlib.h>
#include <string.h>

/* Appends the text of one markdown cell with its markup removed. */
static void html_check_md_cell(const char *s, size_t n, char *out, size_t *len, size_t cap)
{
    while (n && *s == ' ')
        s++, n--;
    while (n && s[n - 1] == ' ')
        n--;
    for (size_t i = 0; i < n && *len + 2 < cap; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            out[(*len)++] = s[++i];
        } else if (s[i] == '*' || s[i] == '`') {
            continue;
        } else if (!strncmp(s + i, "&lt;", 4) || !strncmp(s + i, "&gt;", 4)) {
            out[(*len)++] = s[i + 1] == 'l' ? '<' : '>';
            i += 3;
        } else {
            out[(*len)++] = s[i];
        }
    }
    out[(*len)++] = '\x1f';
    out[*len] = 0;
}

/* The normalised rows of a markdown document, '\n'-separated, cells ended by 0x1f. */
static char *html_check_md_rows(const char *md)
{
    size_t cap = strlen(md) * 2 + 16, len = 0;
    char *out = malloc(cap);
    out[0] = 0;
    for (const char *p = md; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n && p[0] == '|' && strspn(p, "|-: ") < n) {
            size_t i = 1;
            while (i < n) {
                size_t j = i;
                while (j < n && !(p[j] == '|' && p[j - 1] != '\\'))
                    j++;
                if (j >= n)
                    break;
                html_check_md_cell(p + i, j - i, out, &len, cap);
                i = j + 1;
            }
            out[len++] = '\n';
            out[len] = 0;
        }
        p = nl ? nl + 1 : p + n;
    }
    return out;
}

/* The normalised rows of the HTML's tables, in the same form. */
static char *html_check_html_rows(const char *html)
{
    size_t cap = strlen(html) + 16, len = 0;
    char *out = malloc(cap);
    out[0] = 0;
    for (const char *p = strstr(html, "<tr>"); p; p = strstr(p, "<tr>")) {
        const char *end = strstr(p, "</tr>");
        if (!end)
            break;
        for (const char *c = p + 4; c < end;) {
            const char *open = strstr(c, "<t");
            if (!open || open >= end)
                break;
            const char *body = strchr(open, '>') + 1, *close = strstr(body, "</t");
            int depth = 0;
            for (const char *q = body; q < close; q++) {
                if (*q == '<')
                    depth = 1;
                else if (*q == '>' && depth)
                    depth = 0;
                else if (!depth) {
                    static const char *const ent[][2] = {{"&lt;", "<"}, {"&gt;", ">"}, {"&amp;", "&"}, {"&quot;", "\""}};
                    int hit = 0;
                    for (int k = 0; k < 4 && !hit; k++)
                        if (!strncmp(q, ent[k][0], strlen(ent[k][0]))) {
                            out[len++] = ent[k][1][0];
                            q += strlen(ent[k][0]) - 1;
                            hit = 1;
                        }
                    if (!hit)
                        out[len++] = *q;
                }
            }
            out[len++] = '\x1f';
            c = strchr(close, '>') + 1;
        }
        out[len++] = '\n';
        out[len] = 0;
        p = end;
    }
    return out;
}

static char html_check_row[2048];

static const char *html_missing_row(const char *md, const char *html)
{
    char *mr = html_check_md_rows(md), *hr = html_check_html_rows(html);
    const char *missing = NULL;
    size_t hl = strlen(hr);
    for (char *p = mr; *p && !missing;) {
        char *nl = strchr(p, '\n');
        size_t n = (size_t)(nl - p);
        int found = 0;
        for (char *q = hr; q && q < hr + hl && !found;) {
            char *qn = strchr(q, '\n');
            found = (size_t)(qn - q) == n && !memcmp(q, p, n);
            q = qn ? qn + 1 : NULL;
        }
        if (!found) {
            size_t k = n < sizeof html_check_row - 1 ? n : sizeof html_check_row - 1;
            memcpy(html_check_row, p, k);
            html_check_row[k] = 0;
            missing = html_check_row;
        }
        p = nl + 1;
    }
    free(mr);
    free(hr);
    return missing;
}

static const char *html_offline(const char *html)
{
    static const char *const bad[] = {"src=", "url(", "@import", "<link", NULL};
    for (int i = 0; bad[i]; i++) {
        const char *p = strstr(html, bad[i]);
        if (p)
            return p;
    }
    for (const char *p = strstr(html, "href="); p; p = strstr(p + 1, "href="))
        if (p[5] != '"' || p[6] != '#')
            return p;
    return NULL;
}

#endif
