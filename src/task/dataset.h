/* A dataset's data: loaders read the files its card (card.h) names (JSONL, CSV with quoted
 * fields, TSV, plain text) into examples. */
#ifndef PWB_TASK_DATASET_H
#define PWB_TASK_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "task/card.h"
#include "util/err.h"

typedef struct ds_example {
    size_t row;        /* 0-based data row in the split file (stable id) */
    long line;         /* 1-based line in the file, for errors */
    char *input;       /* rendered input text */
    char *answer;      /* canonical answer: the label's verbalizer, "yes"/"no", or the number */
    int label;         /* index into card->labels, -1 for non-label tasks */
    char **fields;     /* raw field values, parallel to field_names of the dataset */
    char *rationale;   /* worked solution for shots, NULL when the card has none */
    char *const *field_names; /* borrowed from the ds_data (valid while it lives); n_fields long */
    int n_fields;
    int answer_idx;    /* index of the gold answer field in fields (hidden from the query), -1 */
    char **options;    /* per-row multiple choice: the option texts (n_options = the card's labels) */
    int n_options;
} ds_example;

typedef struct ds_data {
    ds_example *ex;
    size_t n;
    char **field_names;
    int n_fields;
    char *split;       /* the split's name */
    char *path;        /* the resolved data file */
    char *answer_field; /* the field holding the gold answer (hidden from the query's template) */
} ds_data;

void ds_data_init(ds_data *d);
void ds_data_free(ds_data *d);
/* Loads one split (NULL: the card's eval_split) into out (ds_data_init'ed). data_path:
 * ':'-separated dirs to search after the card's own folder. The file's sha256 is always checked.
 * A malformed row, a missing field or a label outside the card fails with "file:line: ...". */
int dataset_load(const ds_card *c, const char *split, const char *data_path, ds_data *out, pwb_err *e);
/* A split name may carry a slice: NAME[A:B] keeps rows A..B-1 in file order, NAME@SEED[A:B]
 * the same positions of a seeded shuffle (so NAME@7[:20%] and NAME@7[20%:] are disjoint); A and
 * B are row counts or percentages ("20%") and either may be left out. card_split() and the
 * loader accept such names; examples keep their file row as their id. */
typedef struct ds_slice {
    char base[128];   /* the split's name */
    int sliced;       /* a [A:B] was given */
    int seeded;
    uint64_t seed;
    double a, b;      /* b < 0: to the end */
    int a_pct, b_pct;
} ds_slice;
int dataset_slice_parse(const char *spec, ds_slice *out, pwb_err *e);
/* Rows (file row ids) that both hold when they come from the same file; 0 otherwise. Only
 * rows of a listed in rows_a (indices into a->ex; NULL = all) count. */
size_t dataset_overlap(const ds_data *a, const size_t *rows_a, size_t n_rows_a, const ds_data *b);
/* Picks n row indices (all when n == 0 or n >= d->n) with a seeded shuffle, sorted ascending. */
size_t dataset_sample(const ds_data *d, size_t n, uint64_t seed, size_t *idx_out);
/* Majority label of a split (the baseline): index into labels, -1 if none. */
int dataset_majority_label(const ds_data *d, const ds_card *c);
/* Index of a field name in d->field_names, -1 when absent. */
int dataset_field_index(const ds_data *d, const char *name);
/* Counts per label (counts has c->n_labels entries); returns the number of labelled rows. */
size_t dataset_label_counts(const ds_data *d, const ds_card *c, size_t *counts);
/* The continuations rank scoring compares for x, each after delim (NULL = none): the row's
 * option texts when by_text and the row has options, else the card's verbalizers. Returns a
 * malloc'd array of *n malloc'd strings, NULL when out of memory. */
char **dataset_choices(const ds_card *c, const ds_example *x, int by_text, const char *delim, int *n);
void dataset_choices_free(char **v, int n);
/* Resolves a field path (a.b, a[0], a.b[*].c) in a parsed JSON object: a borrowed item, or a new
 * array (*owned set) when the path has [*]; NULL when absent. */
struct cJSON;
struct cJSON *dataset_path_get(const struct cJSON *root, const char *path, int *owned);
/* Reads a data file as raw fields (no card: nothing mapped or checked), at most max_rows rows
 * (0: all), with the loaders dataset_load uses; for guessing a card (ds_import). header: csv/tsv
 * first row names the columns; pattern: the text format's line pattern (NULL: field "text"). */
int dataset_read_file(const char *path, const char *format, int header, const char *pattern, size_t max_rows,
                      ds_data *out, pwb_err *e);
/* 1 when the example's input is empty or only whitespace; how many of d's are. */
int dataset_empty_input(const ds_example *x);
size_t dataset_count_empty(const ds_data *d);
/* Verifies every split's file (exists, sha256) without parsing it. */
int dataset_verify(const ds_card *c, const char *data_path, pwb_err *e);

#endif
