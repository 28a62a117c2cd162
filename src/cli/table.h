/* A table of strings printed as aligned text, markdown, CSV or JSON (pwb query, summaries). */
#ifndef PWB_CLI_TABLE_H
#define PWB_CLI_TABLE_H

#include <stddef.h>
#include <stdio.h>

enum table_format { TABLE_PLAIN = 0, TABLE_MD, TABLE_CSV, TABLE_JSON };

typedef struct cli_table {
    int ncols;
    char **head;
    char **cells;   /* row-major; NULL is SQL NULL */
    size_t nrows, cap;
    int max_width;  /* plain text: longer cells are cut with "..." (0: no limit) */
} cli_table;

/* -1 when s names no format. */
int table_format_parse(const char *s);
int table_init(cli_table *t, int ncols, const char *const *names);
int table_add(cli_table *t, const char *const *vals);
void table_print(const cli_table *t, FILE *f, int format);
void table_free(cli_table *t);

/* Streaming forms (no buffering): one CSV record, one JSON object (without separators). */
void table_csv_record(FILE *f, int n, const char *const *vals);
void table_json_object(FILE *f, int n, const char *const *names, const char *const *vals);

#endif
