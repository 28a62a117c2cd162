/* pwb report: renders a run from the database (read-only) as markdown, CSV or JSON. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "report/report.h"
#include "store/db.h"
#include "util/file.h"

int cmd_report(const cli_args *a)
{
    pwb_err e;
    err_clear(&e);
    int format;
    const char *fmt = cli_str(a, "format", "md");
    if (report_format_parse(fmt, &format, &e) != PWB_OK) {
        cli_usage_error(a->cmd, "--format must be md, csv or json (got '%s')", fmt);
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
    pwb_db *db = NULL;
    int rc = db_open(&db, path, DB_READONLY, &e);
    if (rc)
        return cli_fail(&e);
    pwb_buf out;
    buf_init(&out);
    if (other > 0)
        rc = report_compare(db, other, run_id, format, &out, &e);
    else
        rc = report_write(db, run_id, format, &out, &e);
    db_close(db);
    if (rc) {
        buf_free(&out);
        return cli_fail(&e);
    }
    const char *dest = cli_str(a, "output", NULL);
    if (dest && strcmp(dest, "-") != 0) {
        rc = file_write_atomic(dest, out.data ? out.data : "", out.len, &e);
        if (!rc && !a->quiet)
            fprintf(stderr, "pwb: wrote %s\n", dest);
    } else if (out.len && fwrite(out.data, 1, out.len, stdout) != out.len) {
        rc = err_set(&e, PWB_EIO, "error writing the report to standard output");
    }
    buf_free(&out);
    if (rc) {
        fprintf(stderr, "pwb: %s\n", e.msg);
        return EXIT_PWB_FAILED;
    }
    return EXIT_PWB_OK;
}
