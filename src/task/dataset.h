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
/* Picks n row indices (all when n == 0 or n >= d->n) with a seeded shuffle, sorted ascending. */
size_t dataset_sample(const ds_data *d, size_t n, uint64_t seed, size_t *idx_out);
/* Majority label of a split (the baseline): index into labels, -1 if none. */
int dataset_majority_label(const ds_data *d, const ds_card *c);
/* Index of a field name in d->field_names, -1 when absent. */
int dataset_field_index(const ds_data *d, const char *name);
/* Counts per label (counts has c->n_labels entries); returns the number of labelled rows. */
size_t dataset_label_counts(const ds_data *d, const ds_card *c, size_t *counts);
/* Verifies every split's file (exists, sha256) without parsing it. */
int dataset_verify(const ds_card *c, const char *data_path, pwb_err *e);

#endif
