/* pwb report: renders a run from the database (read-only) as markdown, CSV, JSON or one
 * self-contained HTML file (charts inline). Markdown
 * written to a file gets its charts: SVG files beside it named "<stem>-<chart>.svg", embedded
 * with relative links, so the folder can be moved or committed as it is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "report/report.h"
#include "report/svg.h"
#include "store/db.h"
#include "util/file.h"

/* "reports/x.md" -> dir "reports", stem "x". */
static void split_output(const char *path, pwb_buf *dir, pwb_buf *stem)
{
    file_dirname(path, dir);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    buf_append(stem, base, n);
}

/* Writes every chart of r into dir; counts them in *written. */
static int write_charts(const pwb_report *r, const char *dir, int *written, pwb_err *e)
{
    report_chart *charts = NULL;
    size_t n = 0;
    int rc = report_charts_list(r, &charts, &n, e);
    pwb_buf svg, path;
    buf_init(&svg);
    buf_init(&path);
    for (size_t i = 0; i < n && !rc; i++) {
        buf_reset(&svg);
        buf_reset(&path);
        rc = report_chart_render(r, &charts[i], &svg, e);
        if (!rc && file_join(&path, dir, charts[i].file))
            rc = err_set(e, PWB_ENOMEM, "out of memory");
        if (!rc)
            rc = file_write_atomic(path.data, svg.data, svg.len, e);
        if (!rc)
            (*written)++;
    }
    buf_free(&svg);
    buf_free(&path);
    report_charts_free(charts, n);
    return rc;
}

int cmd_report(const cli_args *a)
{
    pwb_err e;
    err_clear(&e);
    int format;
    const char *fmt = cli_str(a, "format", "md");
    if (report_format_parse(fmt, &format, &e) != PWB_OK) {
        cli_usage_error(a->cmd, "--format must be md, csv, json or html (got '%s')", fmt);
        return EXIT_PWB_USAGE;
    }
    long run_id, other;
    if (cli_long(a, "run", 0, 1, 0x7fffffffffffffffL, &run_id) ||
        cli_long(a, "compare", 0, 1, 0x7fffffffffffffffL, &other))
        return EXIT_PWB_USAGE;
    const char *path = cli_db_path(a);
    if (!file_exists(path)) {
        fprintf(stderr, "pwb: %s: no such database (run a suite first, or give --db)\n", path);
        return EXIT_PWB_DB;
    }
    const char *dest = cli_str(a, "output", NULL);
    int to_file = dest && strcmp(dest, "-") != 0;
    pwb_db *db = NULL;
    int rc = db_open(&db, path, DB_READONLY, &e);
    if (rc)
        return cli_fail(&e);
    pwb_buf out, dir, stem;
    buf_init(&out);
    buf_init(&dir);
    buf_init(&stem);
    pwb_report r;
    memset(&r, 0, sizeof r);
    int loaded = 0, charts = 0;
    if (to_file)
        split_output(dest, &dir, &stem);
    if (other > 0) {
        rc = report_compare(db, other, run_id, format, &out, &e);
    } else {
        rc = report_load(&r, db, run_id, &e);
        loaded = rc == PWB_OK;
        if (!rc && format == REPORT_HTML) /* the per-example view */
            rc = report_load_details(&r, db, &e);
        if (!rc && to_file && format == REPORT_MD) {
            r.chart_dir = "";
            r.chart_prefix = stem.data ? stem.data : "";
        }
        if (!rc)
            rc = report_render(&r, format, &out, &e);
    }
    db_close(db);
    if (rc) {
        if (loaded)
            report_free(&r);
        buf_free(&out);
        buf_free(&dir);
        buf_free(&stem);
        return cli_fail(&e);
    }
    if (to_file) {
        /* -o reports/new/x.md: make the folder, as a user asking for that path expects */
        if (!dir.data)
            rc = err_set(&e, PWB_ENOMEM, "out of memory");
        else if (!file_is_dir(dir.data))
            rc = file_mkdirs(dir.data, &e);
        if (!rc)
            rc = file_write_atomic(dest, out.data ? out.data : "", out.len, &e);
        if (!rc && r.chart_dir)
            rc = write_charts(&r, dir.data, &charts, &e);
        if (!rc && !a->quiet) {
            if (charts)
                fprintf(stderr, "pwb: wrote %s and %d chart%s beside it\n", dest, charts, charts == 1 ? "" : "s");
            else
                fprintf(stderr, "pwb: wrote %s\n", dest);
        }
    } else if (out.len && fwrite(out.data, 1, out.len, stdout) != out.len) {
        rc = err_set(&e, PWB_EIO, "error writing the report to standard output");
    }
    if (loaded)
        report_free(&r);
    buf_free(&out);
    buf_free(&dir);
    buf_free(&stem);
    if (rc) {
        fprintf(stderr, "pwb: %s\n", e.msg);
        return EXIT_PWB_FAILED;
    }
    return EXIT_PWB_OK;
}
