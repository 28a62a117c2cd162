/* pwb report end to end: a small sweep suite (zero-shot, and few-shot over 0, 1, 2 and 4 shots)
 * against the loopback server, then `pwb report -o DIR/rep.md`: the sweep table, the charts beside
 * the markdown (each one exists, is well-formed XML that python3's xml.etree also parses when
 * python3 is there, and keeps every shape and label inside its viewBox), CSV and JSON, and
 * `--compare` between two runs. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "integration/harness.h"
#include "unit/report/svg_check.h"

#define LIMIT 40

static const char *const fake_labels[] = {"--answer-from", "positive,negative", "--prefix", "Answer: ", NULL};

static char *write_suite(const char *dir, const fake_llm *f)
{
    char *path = it_path(dir, "sweep-suite.json");
    FILE *o = fopen(path, "w");
    cr_assert_not_null(o);
    fprintf(o,
            "{\n  \"name\": \"sweep-it\",\n  \"seed\": 3,\n"
            "  \"datasets\": [{\"name\": \"sst2\", \"split\": \"dev\", \"limit\": %d}],\n"
            "  \"models\": [{\"name\": \"fake\", \"provider\": \"openai\", \"base_url\": \"%s\", \"model\": \"fake-1\","
            " \"concurrency\": 8, \"timeout_s\": 5, \"price\": {\"input\": 0.5, \"output\": 1.5}}],\n"
            "  \"methods\": [\n"
            "    {\"name\": \"zero-shot\", \"template\": \"zero-shot\"},\n"
            "    {\"name\": \"few-shot\", \"template\": \"few-shot\", \"sweep\": {\"shots\": [0, 1, 2, 4]}}\n"
            "  ]\n}\n",
            LIMIT, f->base_url);
    fclose(o);
    return path;
}

static int have_python(void)
{
    proc_out p = it_run((const char *const[]){"python3", "-c", "import xml.etree.ElementTree", NULL});
    int ok = p.status == 0;
    proc_out_free(&p);
    return ok;
}

/* Every "](x.svg)" of the markdown: the file exists beside it and passes the checks. Returns how
 * many there were. */
static int check_charts(const char *dir, const char *md)
{
    int n = 0, py = have_python();
    for (const char *p = md; (p = strstr(p, ".svg)")); p += 5) {
        const char *start = p;
        while (start > md && start[-1] != '(')
            start--;
        char name[256];
        int len = (int)(p + 4 - start);
        cr_assert(len > 0 && len < (int)sizeof name);
        snprintf(name, sizeof name, "%.*s", len, start);
        cr_assert_null(strchr(name, '/'), "a chart link must be relative to the markdown: %s", name);
        char *path = it_path(dir, name);
        char *svg = it_read(path);
        cr_assert_not_null(svg, "the markdown links %s but it was not written", name);
        const char *bad = svg_wellformed(svg);
        cr_assert_null(bad, "%s: %s", name, bad);
        bad = svg_in_bounds(svg);
        cr_assert_null(bad, "%s: %s", name, bad);
        if (py) {
            proc_out q = it_run((const char *const[]){"python3", "-c",
                                                      "import sys, xml.etree.ElementTree as E; "
                                                      "r = E.parse(sys.argv[1]).getroot(); "
                                                      "assert r.tag.endswith('svg'), r.tag",
                                                      path, NULL});
            cr_assert_eq(q.status, 0, "python3 xml.etree rejects %s: %s", name, q.err);
            proc_out_free(&q);
        }
        free(svg);
        free(path);
        n++;
    }
    return n;
}

Test(report_sweep, sweep_table_and_charts_end_to_end, .timeout = 180)
{
    char *dir = it_tmpdir();
    fake_llm f;
    cr_assert_eq(fake_start(&f, dir, fake_labels), 0, "fakellm did not start");
    char *suite = write_suite(dir, &f);
    char *db = it_path(dir, "results.db");

    proc_out p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", NULL});
    cr_assert_eq(p.status, 0, "pwb run: exit %d\n%s%s", p.status, p.out, p.err);
    proc_out_free(&p);
    /* one cell per grid point, each knowing its sweep and point */
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cells"), 5);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM cells WHERE sweep = 'few-shot'"), 4);
    char *pt = it_sql_text(db, "SELECT sweep_point FROM cells WHERE method = 'few-shot[shots=2]'");
    cr_assert_str_eq(pt, "{\"shots\":2}");
    free(pt);
    cr_assert_eq(it_sql_long(db, "SELECT count(*) FROM predictions"), 5 * LIMIT);
    /* more shots, longer prompts */
    cr_assert_eq(it_sql_long(db, "SELECT (SELECT avg(tokens_in) FROM v_predictions WHERE method = 'few-shot[shots=4]')"
                                 " > (SELECT avg(tokens_in) FROM v_predictions WHERE method = 'few-shot[shots=1]')"),
                 1);

    /* -o into a folder that does not exist yet: pwb makes it */
    char *md2 = it_path(dir, "new/deeper/rep.md");
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, "-o", md2, NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    proc_out_free(&p);
    char *text2 = it_read(md2);
    cr_assert(text2 && strstr(text2, "### Sweep: few-shot (shots)"), "no report in a new folder");
    free(text2);
    free(md2);

    char *md = it_path(dir, "rep.md");
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, "-o", md, NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.err, "and 3 charts beside it"), "%s", p.err); /* accuracy, cost, sweep */
    proc_out_free(&p);
    char *text = it_read(md);
    cr_assert_not_null(text);
    const char *sw = strstr(text, "\n### Sweep: few-shot (shots)\n");
    cr_assert_not_null(sw, "%s", text);
    cr_assert(strstr(sw, "| shots | n | accuracy [95% CI] | p vs sweep best | tokens in | USD / 1k |\n"), "%s", sw);
    const char *shots[] = {"0", "1", "2", "4"};
    for (int i = 0; i < 4; i++) {
        char a[32], b[32];
        snprintf(a, sizeof a, "\n| %s | %d | ", shots[i], LIMIT);
        snprintf(b, sizeof b, "\n| **%s** | %d | ", shots[i], LIMIT);
        cr_assert(strstr(sw, a) || strstr(sw, b), "no sweep row for %s shots:\n%s", shots[i], sw);
    }
    cr_assert(strstr(sw, "](rep-sst2-dev-fake-sweep-few-shot.svg)\n"), "%s", sw);
    cr_assert(strstr(text, "](rep-sst2-dev-fake-accuracy.svg)\n"), "%s", text);
    cr_assert_eq(check_charts(dir, text), 3);
    free(text);

    /* one self-contained HTML page: charts inline, no files beside it */
    char *html = it_path(dir, "page.html");
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, "-f", "html", "-o", html, NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.err, "wrote") && !strstr(p.err, "chart"), "%s", p.err);
    proc_out_free(&p);
    char *page = it_read(html);
    cr_assert(page && !strncmp(page, "<!DOCTYPE html>", 15));
    cr_assert(strstr(page, "<h3 id=\"s2-verdict\">Verdict</h3>"), "%.400s", page);
    cr_assert(strstr(page, "<svg") && strstr(page, "id=\"pwb-data\""));
    free(page);
    free(html);
    /* the confusion matrix as a view: one count per (gold, answered) pair, summing to the cell's rows */
    p = it_run((const char *const[]){it_pwb(), "query", "--db", db, "-f", "csv",
                                     "SELECT sum(n) FROM v_confusion WHERE method = 'zero-shot'", NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    char want[32];
    snprintf(want, sizeof want, "\n%d", LIMIT);
    cr_assert(strstr(p.out, want), "%s", p.out);
    proc_out_free(&p);

    /* CSV and JSON carry the sweep too */
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, "-f", "csv", NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, ",few-shot,\"{\"\"shots\"\":4}\","), "%s", p.out);
    proc_out_free(&p);
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, "-f", "json", NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cJSON *j = cJSON_Parse(p.out);
    cr_assert_not_null(j);
    cJSON *sweeps = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "groups"), 0), "sweeps");
    cr_assert_eq(cJSON_GetArraySize(sweeps), 1);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(sweeps, 0), "methods")), 4);
    cJSON_Delete(j);
    proc_out_free(&p);

    /* a second run (answers from the cache) and the comparison per method */
    p = it_run((const char *const[]){it_pwb(), "run", suite, "--db", db, "-q", "--fresh", NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    proc_out_free(&p);
    p = it_run((const char *const[]){it_pwb(), "report", "--db", db, "--compare", "1", NULL});
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert(strstr(p.out, "# pwb compare: run 1 vs run 2"), "%s", p.out);
    cr_assert(strstr(p.out, "\n## sst2 (dev) \xc2\xb7 fake\n"), "%s", p.out);
    cr_assert(strstr(p.out, "tokens in A \xe2\x86\x92 B | tokens out A \xe2\x86\x92 B | USD / 1k A \xe2\x86\x92 B |"), "%s",
              p.out);
    /* the same answers: no change, p = 1 */
    cr_assert(strstr(p.out, "| few-shot[shots=2] | 40 | "), "%s", p.out);
    cr_assert(strstr(p.out, " | +0.0 | 40 | 0 | 0 | 1.000 | "), "%s", p.out);
    proc_out_free(&p);

    fake_stop(&f);
    it_rmtree(dir);
    free(md);
    free(suite);
    free(db);
    free(dir);
}
