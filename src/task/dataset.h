/* Dataset cards and their data: one JSON card describes a dataset; loaders read its original
 * files (JSONL, CSV with quoted fields, TSV, plain text) into examples. */
#ifndef PWB_TASK_DATASET_H
#define PWB_TASK_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

enum ds_task { DS_CLASSIFICATION = 0, DS_MULTIPLE_CHOICE, DS_NUMERIC, DS_FREE_TEXT };
enum ds_answer { DS_ANSWER_LABEL = 0, DS_ANSWER_YESNO, DS_ANSWER_NUMERIC, DS_ANSWER_CHOICE, DS_ANSWER_TEXT };

typedef struct ds_label {
    char *value;      /* the raw value as it appears in the file ("0", "World", "true") */
    char *verbalizer; /* the word a model says ("negative", "World", "yes") */
    char **aliases;   /* other words scoring accepts for this label ("science", "technology") */
    int n_aliases;
} ds_label;

typedef struct ds_split {
    char *name;       /* "train", "dev", "test" */
    char *file;       /* as written in the card; resolved through the search path */
    char *format;     /* "jsonl", "csv", "tsv", "text" */
    char *sha256;     /* optional; checked when present */
    int header;       /* csv/tsv: first row names the columns */
    char *resolved;   /* filled by dataset_load */
    /* Per-split overrides of the card's mapping (NULL = the card's): files of one dataset
     * often differ in layout (AG News test.csv vs a headerless train TSV). */
    char *input_field, *input_template, *answer_field;
    char **label_values;  /* raw value of each card label in this split, parallel to card->labels */
    char **columns;       /* column names for a file without header */
    int n_columns;
    char *line_pattern;   /* "text" format: PCRE2 with named groups, one per field */
    int labeled;          /* 0: no answers in this split (unlabeled test sets) */
    long rows;            /* expected example count, checked when > 0 */
} ds_split;

typedef struct ds_card {
    char *path;        /* the card file */
    char *name;
    int task;          /* enum ds_task */
    int answer_kind;   /* enum ds_answer */
    char *description, *instruction, *license, *source, *url;
    char *input_field;     /* raw field (or column name / 1-based index) holding the input */
    char *input_template;  /* optional: Mustache over raw fields, e.g. "{{passage}}\nQuestion: {{question}}" */
    char *answer_field;
    char *answer_pattern;  /* default PCRE2 pattern extracting the answer from a generation */
    ds_label *labels;
    int n_labels;
    ds_split *splits;
    int n_splits;
    char *few_shot_split;  /* where shots come from (default "train") */
    char *eval_split;      /* default evaluation split */
    char *answer_extract;  /* PCRE2 applied to the gold answer field (GSM8K: "#### (.+)$") */
    char *rationale_field; /* worked solution shown in few-shot examples ({{rationale}}) */
    char *rationale_strip; /* PCRE2: matches removed from the rationale (calculator notes) */
    char **fields;         /* extra raw field names templates may use (declared) */
    int n_fields;
    char **replace;        /* literal [from, to] pairs applied to the input text (2*n_replace) */
    int n_replace;
    char *dir;             /* folder of the card file */
} ds_card;

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

/* Loader limits: inputs are untrusted. */
#define DS_MAX_FILE   (1024ul << 20)
#define DS_MAX_RECORD (4ul << 20)
#define DS_MAX_FIELDS 512
#define DS_MAX_ROWS   20000000ul
#define DS_MAX_LABELS 1000

void card_init(ds_card *c);
void card_free(ds_card *c);
/* Parses and validates a card (unknown task, label list, split formats). Errors name the file.
 * c must have been card_init'ed (a loaded card is freed first). */
int card_load(ds_card *c, const char *path, pwb_err *e);
/* Finds the card for a dataset name in the card search path (datasets/ then $PWB_DATA_PATH). */
int card_find(ds_card *c, const char *name, const char *card_dirs, pwb_err *e);
const ds_split *card_split(const ds_card *c, const char *name);
int card_label_index(const ds_card *c, const char *raw_value); /* -1 when not a label */
/* Label index by verbalizer (case-insensitive), -1 when none. */
int card_label_by_verbalizer(const ds_card *c, const char *verbalizer);
const char *ds_task_name(int task);           /* "classification", ... */
const char *ds_answer_name(int kind);         /* "label", "yesno", "numeric", "choice", "text" */
/* The raw field names a card's templates may use (declared columns, mapped fields, the fields
 * its input templates name, and "fields"); NULL-terminated, malloc'd array of borrowed strings. */
const char **card_known_fields(const ds_card *c, int *n);

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
