/* pwb query SQL: read-only SQL over the results database. CSV and JSON stream row by row; the
 * aligned table and markdown need every row first to size the columns. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/table.h"
#include "store/db.h"
#include "util/file.h"

typedef struct query_out {
    int format;
    cli_table t;
    int have_table;
    int stmt;  /* the statement whose rows are being written (-1 before the first row) */
    long rows;
    int failed;
} query_out;

/* Prints the table being built (aligned and markdown formats) and forgets it. */
static void flush_table(query_out *q)
{
    if (!q->have_table)
        return;
    table_print(&q->t, stdout, q->format);
    table_free(&q->t);
    q->have_table = 0;
}

/* Each statement's rows are their own result set, with their own columns: a table (or a CSV
 * header) per statement, a blank line between; JSON objects carry their own keys. */
static int on_row(void *ctx, int stmt, int ncols, const char *const *names, const char *const *values)
{
    query_out *q = ctx;
    int first = stmt != q->stmt;
    if (first && q->stmt >= 0 && q->format != TABLE_JSON) {
        flush_table(q);
        fputc('\n', stdout);
    }
    q->stmt = stmt;
    if (q->format == TABLE_CSV) {
        if (first)
            table_csv_record(stdout, ncols, names);
        table_csv_record(stdout, ncols, values);
    } else if (q->format == TABLE_JSON) {
        fputs(q->rows ? ",\n " : "[\n ", stdout);
        table_json_object(stdout, ncols, names, values);
    } else {
        if (!q->have_table) {
            if (table_init(&q->t, ncols, names))
                return q->failed = 1;
            q->t.max_width = 80;
            q->have_table = 1;
        }
        if (ncols != q->t.ncols || table_add(&q->t, values))
            return q->failed = 1;
    }
    q->rows++;
    return 0;
}

int cmd_query(const cli_args *a)
{
    const char *fmt = cli_str(a, "format", "table");
    int format = table_format_parse(fmt);
    if (format < 0) {
        cli_usage_error(a->cmd, "--format must be table, md, csv or json (got '%s')", fmt);
        return EXIT_PWB_USAGE;
    }
    double timeout;
    if (cli_double(a, "timeout", 0, 0, 1e6, &timeout))
        return EXIT_PWB_USAGE;
    const char *path = cli_db_path(a);
    pwb_err e;
    err_clear(&e);
    if (!file_exists(path)) {
        fprintf(stderr, "pwb: %s: no such database (run a suite first, or give --db)\n", path);
        return EXIT_PWB_DB;
    }
    pwb_db *db = NULL;
    int rc = db_open(&db, path, DB_READONLY, &e);
    if (rc)
        return cli_fail(&e);
    query_out q;
    memset(&q, 0, sizeof q);
    q.format = format;
    q.stmt = -1;
    rc = db_query(db, a->pos[0], timeout, on_row, &q, &e);
    db_close(db);
    if (format == TABLE_JSON)
        fputs(q.rows ? "\n]\n" : "[]\n", stdout);
    flush_table(&q);
    if (q.failed && !rc) {
        fprintf(stderr, "pwb: query: out of memory\n");
        return EXIT_PWB_FAILED;
    }
    if (rc) {
        /* A refused or malformed statement is the user's input (cli_fail maps it to 3), a broken
         * database a database error, the time limit a limit. */
        return cli_fail(&e);
    }
    return EXIT_PWB_OK;
}
