/* The HTML report: one self-contained file. Its body is the markdown report turned into HTML (so
 * it holds every table row of the markdown, sortable by clicking a header), each chart inlined as
 * SVG where the markdown links it, then, per group, a view of the examples where two chosen
 * methods disagree, from a JSON block read by a little JavaScript. No network: no external
 * scripts, styles, fonts or images. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"
#include "report/report_internal.h"
#include "report/svg.h"

#define HTML_TEXT_MAX 4000 /* characters kept of an input, a prompt's own part or an output */

static const char css[] =
    "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;max-width:1200px;margin:0 auto;"
    "padding:0 20px 60px}"
    "h1{font-size:1.6em;border-bottom:2px solid #2b6cb0;padding-bottom:.2em}"
    "h2{font-size:1.3em;margin-top:2.2em;border-bottom:1px solid #ccc;padding-bottom:.2em}"
    "h3{font-size:1.08em;margin-top:1.6em}"
    "table{border-collapse:collapse;margin:.6em 0;font-size:13px;display:block;overflow-x:auto;max-width:100%}"
    "th,td{border:1px solid #d8d8d8;padding:3px 7px;vertical-align:top}"
    "th{background:#f2f5f9;cursor:pointer;user-select:none;white-space:nowrap}"
    "th.asc::after{content:' \\25B2';font-size:.7em}th.desc::after{content:' \\25BC';font-size:.7em}"
    "tr:nth-child(even) td{background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
    "code{background:#f3f3f3;padding:0 3px;border-radius:3px}"
    "figure{margin:1em 0}figure svg{max-width:100%;height:auto;border:1px solid #eee}"
    "figcaption{font-size:12px;color:#666}"
    ".verdict{background:#f5f9ff;border-left:4px solid #2b6cb0;padding:.5em 1em}"
    ".dis{border:1px solid #ddd;padding:.6em 1em;background:#fcfcfc}"
    ".dis select{font-size:14px;margin:0 .4em}"
    ".ex{border-top:1px solid #ddd;padding:.5em 0}.ex .in{white-space:pre-wrap;background:#f7f7f7;padding:4px}"
    ".pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}"
    ".m{border:1px solid #e2e2e2;padding:4px 8px}.ok{color:#1a7f37;font-weight:bold}.no{color:#c62828;font-weight:bold}"
    "pre{white-space:pre-wrap;word-break:break-word;font-size:12px;margin:.3em 0;max-height:18em;overflow:auto}"
    "details summary{cursor:pointer;color:#555;font-size:12px}"
    "nav{font-size:13px;background:#f7f7f7;padding:.4em .8em;margin:.6em 0}nav a{margin-right:1em}";

static const char js[] =
    "(function(){\n"
    "function num(t){t=t.replace(/\\u2212/g,'-').replace(/[,%$]/g,'').trim();var m=t.match(/^[-+]?[0-9.]+(e[-+]?\\d+)?/);"
    "return m?parseFloat(m[0]):null}\n"
    "document.querySelectorAll('table').forEach(function(tb){var ths=tb.querySelectorAll('thead th');"
    "ths.forEach(function(th,ci){th.addEventListener('click',function(){var body=tb.tBodies[0];"
    "var rows=Array.prototype.slice.call(body.rows);var asc=!th.classList.contains('asc');"
    "ths.forEach(function(h){h.classList.remove('asc','desc')});th.classList.add(asc?'asc':'desc');"
    "rows.sort(function(a,b){var x=a.cells[ci]?a.cells[ci].textContent:'',y=b.cells[ci]?b.cells[ci].textContent:'';"
    "var p=num(x),q=num(y),r;if(p!==null&&q!==null)r=p-q;else if(p!==null)r=-1;else if(q!==null)r=1;"
    "else r=x.localeCompare(y);return asc?r:-r});rows.forEach(function(r){body.appendChild(r)})})})});\n"
    "var data=JSON.parse(document.getElementById('pwb-data').textContent);\n"
    "function el(t,c,x){var e=document.createElement(t);if(c)e.className=c;if(x!==undefined)e.textContent=x;return e}\n"
    "function pre(x){return el('pre','',x)}\n"
    "data.groups.forEach(function(g,gi){var box=document.getElementById('dis-'+gi);if(!box)return;"
    "if(g.methods.length<2){box.appendChild(el('p','','Fewer than two methods: nothing to compare.'));return}"
    "var ctl=el('div');var sa=el('select'),sb=el('select'),sf=el('select');"
    "g.methods.forEach(function(m,i){var o=el('option','',m.name);o.value=i;sa.appendChild(o);"
    "var o2=el('option','',m.name);o2.value=i;sb.appendChild(o2)});"
    "sa.value=g.a;sb.value=g.b;"
    "[['all','every disagreement'],['a','only A right'],['b','only B right']].forEach(function(f){"
    "var o=el('option','',f[1]);o.value=f[0];sf.appendChild(o)});"
    "ctl.appendChild(document.createTextNode('A:'));ctl.appendChild(sa);ctl.appendChild(document.createTextNode(' B:'));"
    "ctl.appendChild(sb);ctl.appendChild(document.createTextNode(' show:'));ctl.appendChild(sf);"
    "var info=el('p');var list=el('div');box.appendChild(ctl);box.appendChild(info);box.appendChild(list);"
    "function side(m,r,label){var d=el('div','m');var h=el('div');h.appendChild(el('b','',label+' '+m.name+' '));"
    "var c=m.c[r];h.appendChild(el('span',c?'ok':'no',c?'\\u2713 right':'\\u2717 wrong'));d.appendChild(h);"
    "d.appendChild(el('div','','answer: '+(m.x[r]===null?'(invalid)':m.x[r])));"
    "if(m.s[r]){var sc=m.s[r];try{var v=JSON.parse(sc);if(v.length===g.labels.length)sc=v.map(function(x,i){"
    "return 'log P('+g.labels[i]+') '+x.toFixed(3)}).join(' \\u00b7 ')}catch(e){}"
    "d.appendChild(el('div','','scores: '+sc))}"
    "var dt=el('details');dt.appendChild(el('summary','','prompt'));if(m.head){var hd=el('details');"
    "hd.appendChild(el('summary','','shared beginning ('+m.head.length+' characters)'));hd.appendChild(pre(m.head));"
    "dt.appendChild(hd)}dt.appendChild(pre(m.p[r]));d.appendChild(dt);"
    "var od=el('details');od.appendChild(el('summary','','output'));od.appendChild(pre(m.o[r]===null?'':m.o[r]));"
    "d.appendChild(od);return d}\n"
    "function draw(){list.textContent='';var A=g.methods[sa.value],B=g.methods[sb.value],f=sf.value,n=0,shown=0;"
    "for(var r=0;r<g.rows.length;r++){var ca=A.c[r],cb=B.c[r];if(ca===null||cb===null||ca===cb)continue;"
    "if(f==='a'&&!ca)continue;if(f==='b'&&!cb)continue;n++;if(shown>=200)continue;shown++;"
    "var ex=el('div','ex');ex.appendChild(el('div','','row '+g.rows[r]+' \\u00b7 gold: '+(g.gold[r]===null?'?':g.gold[r])));"
    "ex.appendChild(el('div','in',g.input[r]===null?'':g.input[r]));var p=el('div','pair');"
    "p.appendChild(side(A,r,'A'));p.appendChild(side(B,r,'B'));ex.appendChild(p);list.appendChild(ex)}"
    "info.textContent=n+' example'+(n===1?'':'s')+' where A and B disagree on correctness'+(n>shown?' (first '+shown+' shown)':'')+'.'}\n"
    "sa.onchange=sb.onchange=sf.onchange=draw;draw()});\n"
    "})();\n";

/* Text from the markdown into HTML: entities the markdown already wrote stay, other '&' and '<'
 * are escaped; **bold**, *emphasis*, `code` and backslash escapes become markup. */
static int inline_html(pwb_buf *b, const char *s, size_t n)
{
    int r = 0, strong = 0, em = 0, code = 0;
    for (size_t i = 0; i < n && !r; i++) {
        char c = s[i];
        if (c == '\\' && i + 1 < n && strchr("|[]*`\\", s[i + 1])) {
            r |= buf_putc(b, s[++i]);
        } else if (c == '`') {
            r |= buf_puts(b, code ? "</code>" : "<code>");
            code = !code;
        } else if (!code && c == '*' && i + 1 < n && s[i + 1] == '*') {
            r |= buf_puts(b, strong ? "</strong>" : "<strong>");
            strong = !strong;
            i++;
        } else if (!code && c == '*' && (em || (i + 1 < n && s[i + 1] != ' '))) {
            r |= buf_puts(b, em ? "</em>" : "<em>");
            em = !em;
        } else if (c == '&') {
            int ent = !strncmp(s + i, "&lt;", 4) || !strncmp(s + i, "&gt;", 4) || !strncmp(s + i, "&amp;", 5);
            r |= buf_puts(b, ent ? "&" : "&amp;");
        } else if (c == '<') {
            r |= buf_puts(b, "&lt;");
        } else if (c == '>') {
            r |= buf_puts(b, "&gt;");
        } else if (c == '"') {
            r |= buf_puts(b, "&quot;");
        } else {
            r |= buf_putc(b, c);
        }
    }
    r |= (code ? buf_puts(b, "</code>") : 0) | (em ? buf_puts(b, "</em>") : 0) | (strong ? buf_puts(b, "</strong>") : 0);
    return r;
}

/* The cells of a table line "| a | b |" (escaped pipes stay in their cell). */
static int table_row(pwb_buf *b, const char *s, size_t n, int head, const char *align)
{
    int r = buf_puts(b, "<tr>");
    size_t i = 0, col = 0;
    while (i < n && s[i] == ' ')
        i++;
    if (i < n && s[i] == '|')
        i++;
    while (i < n && !r) {
        size_t j = i;
        while (j < n && !(s[j] == '|' && (j == 0 || s[j - 1] != '\\')))
            j++;
        if (j >= n && i >= n)
            break;
        size_t a = i, z = j;
        while (a < z && s[a] == ' ')
            a++;
        while (z > a && s[z - 1] == ' ')
            z--;
        if (j >= n && a == z)
            break;
        int right = !head && align && align[col] == 'r';
        r |= buf_puts(b, head ? "<th>" : right ? "<td class=\"num\">" : "<td>") | inline_html(b, s + a, z - a) |
             buf_puts(b, head ? "</th>" : "</td>");
        col += col < 63;
        i = j + 1;
    }
    return r | buf_puts(b, "</tr>\n");
}

/* Column alignment from the separator line: 'r' for "--:". */
static void table_align(const char *s, size_t n, char *align)
{
    memset(align, 'l', 64);
    size_t col = 0;
    for (size_t i = 1; i < n && col < 64; i++) {
        if (s[i] == '|') {
            col++;
        } else if (s[i] == ':' && (i + 1 >= n || s[i + 1] == '|')) {
            align[col] = 'r';
        }
    }
}

static void slug(pwb_buf *b, const char *s, size_t n, int count)
{
    buf_printf(b, "s%d-", count);
    for (size_t i = 0; i < n && i < 60; i++) {
        char c = s[i];
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
            buf_putc(b, c);
        else if (c >= 'A' && c <= 'Z')
            buf_putc(b, (char)(c - 'A' + 'a'));
        else if (b->len && b->data[b->len - 1] != '-')
            buf_putc(b, '-');
    }
}

static int image(const pwb_report *rep, const report_chart *ch, size_t nch, const char *s, size_t n, pwb_buf *b,
                 pwb_err *e)
{
    const char *alt0 = s + 2, *close = memchr(s, ']', n);
    while (close && close > s && close[-1] == '\\')
        close = memchr(close + 1, ']', n - (size_t)(close + 1 - s));
    if (!close || close + 1 >= s + n || close[1] != '(')
        return inline_html(b, s, n) ? err_set(e, PWB_ENOMEM, "report: out of memory") : PWB_OK;
    const char *file = close + 2, *end = memchr(file, ')', n - (size_t)(file - s));
    size_t fl = end ? (size_t)(end - file) : 0;
    for (size_t i = 0; i < nch; i++) {
        if (strlen(ch[i].file) != fl || memcmp(ch[i].file, file, fl) != 0)
            continue;
        pwb_buf svg;
        buf_init(&svg);
        int rc = report_chart_render(rep, &ch[i], &svg, e);
        if (rc) {
            buf_free(&svg);
            return rc;
        }
        /* Drop the XML declaration: inline SVG is part of the HTML document. */
        const char *start = svg.data ? strstr(svg.data, "<svg") : NULL;
        int r = buf_puts(b, "<figure>") | buf_puts(b, start ? start : "") | buf_puts(b, "<figcaption>") |
                inline_html(b, alt0, (size_t)(close - alt0)) | buf_puts(b, "</figcaption></figure>\n");
        buf_free(&svg);
        return r ? err_set(e, PWB_ENOMEM, "report: out of memory") : PWB_OK;
    }
    return PWB_OK;
}

static int md_to_html(const pwb_report *rep, const report_chart *ch, size_t nch, const char *md, pwb_buf *b,
                      pwb_err *e)
{
    int r = 0, in_table = 0, in_list = 0, in_para = 0, in_verdict = 0, nsec = 0, rc = PWB_OK;
    char align[64];
    const char *p = md;
    while (*p && !r && !rc) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        int is_row = n && p[0] == '|', is_item = n > 1 && p[0] == '-' && p[1] == ' ';
        if (in_table && !is_row)
            r |= buf_puts(b, "</tbody></table>\n"), in_table = 0;
        if (in_list && !is_item)
            r |= buf_puts(b, "</ul>\n"), in_list = 0;
        if (in_para && (n == 0 || is_row || is_item || p[0] == '#' || (n > 1 && p[0] == '!' && p[1] == '[')))
            r |= buf_puts(b, "</p>\n"), in_para = 0;
        if (n > 0 && p[0] == '#') {
            int level = 0;
            while (level < (int)n && p[level] == '#')
                level++;
            if (in_verdict && level <= 3)
                r |= buf_puts(b, "</div>\n"), in_verdict = 0;
            const char *t = p + level + (level < (int)n && p[level] == ' ');
            size_t tn = n - (size_t)(t - p);
            r |= buf_printf(b, "<h%d id=\"", level);
            slug(b, t, tn, nsec++);
            r |= buf_puts(b, "\">") | inline_html(b, t, tn) | buf_printf(b, "</h%d>\n", level);
            if (level == 3 && tn == 7 && !memcmp(t, "Verdict", 7))
                r |= buf_puts(b, "<div class=\"verdict\">\n"), in_verdict = 1;
        } else if (is_row) {
            const char *nx = nl ? nl + 1 : NULL;
            int sep_next = nx && nx[0] == '|' && strspn(nx, "|-: ") >= (size_t)(strchr(nx, '\n') ? strchr(nx, '\n') - nx : 0);
            if (!in_table && sep_next) {
                const char *nn = strchr(nx, '\n');
                table_align(nx, nn ? (size_t)(nn - nx) : strlen(nx), align);
                r |= buf_puts(b, "<table><thead>") | table_row(b, p, n, 1, NULL) | buf_puts(b, "</thead><tbody>\n");
                in_table = 1;
                p = nn ? nn + 1 : nx + strlen(nx);
                continue;
            }
            if (!in_table) {
                memset(align, 'l', sizeof align);
                r |= buf_puts(b, "<table><tbody>\n");
                in_table = 1;
            }
            r |= table_row(b, p, n, 0, align);
        } else if (is_item) {
            if (!in_list)
                r |= buf_puts(b, "<ul>\n"), in_list = 1;
            r |= buf_puts(b, "<li>") | inline_html(b, p + 2, n - 2) | buf_puts(b, "</li>\n");
        } else if (n > 1 && p[0] == '!' && p[1] == '[') {
            rc = image(rep, ch, nch, p, n, b, e);
        } else if (n > 0) {
            r |= buf_puts(b, in_para ? "\n" : "<p>") | inline_html(b, p, n);
            in_para = 1;
        }
        p = nl ? nl + 1 : p + n;
    }
    if (rc)
        return rc;
    r |= (in_table ? buf_puts(b, "</tbody></table>\n") : 0) | (in_list ? buf_puts(b, "</ul>\n") : 0) |
         (in_para ? buf_puts(b, "</p>\n") : 0) | (in_verdict ? buf_puts(b, "</div>\n") : 0);
    return r ? err_set(e, PWB_ENOMEM, "report: out of memory") : PWB_OK;
}

/* A JSON string of at most HTML_TEXT_MAX bytes of s (cut at a UTF-8 boundary), or null. */
static cJSON *jtext(const char *s, size_t skip)
{
    if (!s)
        return cJSON_CreateNull();
    size_t n = strlen(s);
    s += skip < n ? skip : n;
    n = strlen(s);
    if (n <= HTML_TEXT_MAX)
        return report_json_string(s);
    size_t k = HTML_TEXT_MAX;
    while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80)
        k--;
    char *c = malloc(k + 4);
    if (!c)
        return NULL;
    memcpy(c, s, k);
    memcpy(c + k, "\xe2\x80\xa6", 4);
    cJSON *j = report_json_string(c);
    free(c);
    return j;
}

/* The longest beginning every prompt of a method shares (a few-shot prompt's shots), kept once. */
static size_t common_head(const report_row *w)
{
    size_t head = SIZE_MAX;
    const char *first = NULL;
    for (size_t i = 0; i < w->n_details; i++) {
        const char *p = w->details[i].prompt;
        if (!p)
            continue;
        if (!first) {
            first = p;
            head = strlen(p);
            continue;
        }
        size_t k = 0;
        while (k < head && p[k] && p[k] == first[k])
            k++;
        head = k;
    }
    if (!first)
        return 0;
    while (head > 0 && ((unsigned char)first[head] & 0xc0) == 0x80)
        head--;
    return head < 200 ? 0 : head; /* a short head reads better inline */
}

static const db_detail *find_row(const report_row *w, long row)
{
    size_t lo = 0, hi = w->n_details;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (w->details[mid].row < row)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < w->n_details && w->details[lo].row == row ? &w->details[lo] : NULL;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static cJSON *group_json(const report_group *g)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *ms = cJSON_AddArrayToObject(o, "methods");
    if (!ms)
        return o;
    /* The union of the methods' rows, sorted. */
    size_t total = 0;
    for (size_t i = 0; i < g->n_rows; i++)
        total += g->rows[i].n_details;
    long *rows = malloc((total + 1) * sizeof *rows);
    size_t nr = 0;
    for (size_t i = 0; rows && i < g->n_rows; i++)
        for (size_t k = 0; k < g->rows[i].n_details; k++)
            rows[nr++] = g->rows[i].details[k].row;
    if (rows)
        qsort(rows, nr, sizeof *rows, cmp_long);
    size_t u = 0;
    for (size_t i = 0; i < nr; i++)
        if (!u || rows[u - 1] != rows[i])
            rows[u++] = rows[i];
    nr = u;
    cJSON *jr = cJSON_AddArrayToObject(o, "rows"), *ji = cJSON_AddArrayToObject(o, "input"),
          *jg = cJSON_AddArrayToObject(o, "gold");
    for (size_t k = 0; k < nr && jr && ji && jg; k++) {
        const db_detail *d = NULL;
        for (size_t i = 0; i < g->n_rows && !d; i++)
            d = g->rows[i].n_details ? find_row(&g->rows[i], rows[k]) : NULL;
        cJSON_AddItemToArray(jr, cJSON_CreateNumber((double)rows[k]));
        cJSON_AddItemToArray(ji, jtext(d ? d->input : NULL, 0));
        cJSON_AddItemToArray(jg, jtext(d ? d->answer : NULL, 0));
    }
    int a = -1, b = -1, nm = 0;
    for (size_t i = 0; i < g->n_rows; i++) {
        const report_row *w = &g->rows[i];
        if (w->is_baseline || !w->n_details)
            continue;
        cJSON *m = cJSON_CreateObject();
        if (!m)
            break;
        cJSON_AddItemToArray(ms, m);
        report_json_str(m, "name", w->method);
        size_t head = common_head(w);
        if (head) {
            char *h = malloc(head + 1);
            if (h) {
                memcpy(h, w->details[0].prompt, head);
                h[head] = 0;
                cJSON_AddItemToObject(m, "head", jtext(h, 0));
                free(h);
            }
        }
        cJSON *c = cJSON_AddArrayToObject(m, "c"), *x = cJSON_AddArrayToObject(m, "x"),
              *p = cJSON_AddArrayToObject(m, "p"), *out = cJSON_AddArrayToObject(m, "o"),
              *s = cJSON_AddArrayToObject(m, "s");
        for (size_t k = 0; k < nr && c && x && p && out && s; k++) {
            const db_detail *d = find_row(w, rows[k]);
            cJSON_AddItemToArray(c, d ? cJSON_CreateBool(d->correct) : cJSON_CreateNull());
            cJSON_AddItemToArray(x, jtext(d && d->valid ? d->extracted : NULL, 0));
            cJSON_AddItemToArray(p, jtext(d ? d->prompt : NULL, head));
            cJSON_AddItemToArray(out, jtext(d ? d->output : NULL, 0));
            cJSON_AddItemToArray(s, jtext(d ? d->choice_logprobs : NULL, 0));
        }
        if ((long)i == g->verdict.engineered)
            a = nm;
        if ((long)i == g->verdict.tuned)
            b = nm;
        nm++;
    }
    /* The verdict's pair by default; else the best method against the next. */
    if (a < 0)
        a = 0;
    if (b < 0 || b == a)
        b = a == 0 ? (nm > 1 ? 1 : 0) : 0;
    cJSON *lw = cJSON_AddArrayToObject(o, "labels");
    for (int k = 0; lw && k < g->n_labels; k++)
        cJSON_AddItemToArray(lw, report_json_string(g->labels[k]));
    cJSON_AddNumberToObject(o, "a", a);
    cJSON_AddNumberToObject(o, "b", b);
    free(rows);
    return o;
}

int report_render_html(const pwb_report *rep, pwb_buf *b, pwb_err *e)
{
    pwb_report tmp = *rep; /* charts named without a prefix: they live inside the file */
    tmp.chart_dir = "";
    tmp.chart_prefix = "";
    pwb_buf md;
    buf_init(&md);
    int rc = report_render_md(&tmp, &md, e);
    report_chart *ch = NULL;
    size_t nch = 0;
    if (!rc)
        rc = report_charts_list(&tmp, &ch, &nch, e);
    if (rc) {
        buf_free(&md);
        return rc;
    }
    int r = buf_puts(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    r |= inline_html(b, "pwb report: ", 12) | inline_html(b, rep->run.suite_name ? rep->run.suite_name : "",
                                                          rep->run.suite_name ? strlen(rep->run.suite_name) : 0);
    r |= buf_puts(b, "</title>\n<style>") | buf_puts(b, css) | buf_puts(b, "</style>\n</head>\n<body>\n");
    /* Navigation: one link per group. */
    r |= buf_puts(b, "<nav>");
    for (size_t g = 0; g < rep->n_groups; g++) {
        r |= buf_printf(b, "<a href=\"#dis-%zu\">examples: ", g) |
             inline_html(b, rep->groups[g].dataset, strlen(rep->groups[g].dataset)) | buf_puts(b, " \xc2\xb7 ") |
             inline_html(b, rep->groups[g].model, strlen(rep->groups[g].model)) | buf_puts(b, "</a>");
    }
    r |= buf_puts(b, "<span>Click a column header to sort.</span></nav>\n");
    if (r)
        rc = err_set(e, PWB_ENOMEM, "report: out of memory");
    if (!rc)
        rc = md_to_html(&tmp, ch, nch, md.data ? md.data : "", b, e);
    report_charts_free(ch, nch);
    buf_free(&md);
    if (rc)
        return rc;
    r = buf_puts(b, "\n<h2 id=\"examples\">Where two methods disagree</h2>\n<p>Per dataset and model: the examples "
                    "one method got right and the other wrong, with each method's prompt, answer, rank-scoring "
                    "log-probabilities and output. Defaults to the verdict's pair.</p>\n");
    cJSON *root = cJSON_CreateObject(), *groups = root ? cJSON_AddArrayToObject(root, "groups") : NULL;
    for (size_t g = 0; g < rep->n_groups && !r; g++) {
        const report_group *grp = &rep->groups[g];
        r |= buf_puts(b, "<h3>") | inline_html(b, grp->dataset, strlen(grp->dataset)) | buf_puts(b, " \xc2\xb7 ") |
             inline_html(b, grp->model, strlen(grp->model)) | buf_printf(b, "</h3>\n<div class=\"dis\" id=\"dis-%zu\">"
                                                                            "</div>\n", g);
        cJSON *go = group_json(grp);
        if (!go || !groups || !cJSON_AddItemToArray(groups, go)) {
            cJSON_Delete(go);
            r = -1;
        }
    }
    char *txt = root && !r ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!txt)
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    /* "</" must not end the script element early. */
    r |= buf_puts(b, "<script type=\"application/json\" id=\"pwb-data\">");
    for (const char *q = txt; *q && !r; q++)
        r |= q[0] == '<' && q[1] == '/' ? buf_puts(b, "<\\") : buf_putc(b, *q);
    free(txt);
    r |= buf_puts(b, "</script>\n<script>\n") | buf_puts(b, js) | buf_puts(b, "</script>\n</body>\n</html>\n");
    return r ? err_set(e, PWB_ENOMEM, "report: out of memory") : PWB_OK;
}
