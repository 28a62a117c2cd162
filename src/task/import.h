/* Guessing a dataset card for a data file nobody described (`pwb dataset import`): the file is
 * read with the dataset loaders (dataset_read_file), then the input, the answer, the labels and,
 * for multiple choice, the options are picked from what the fields hold. The CLI writes the card
 * and proves it by loading the file through it. */
#ifndef PWB_TASK_IMPORT_H
#define PWB_TASK_IMPORT_H

#include <cjson/cJSON.h>

#include "util/err.h"

#define IMPORT_MAX_ROWS 200000 /* rows looked at to guess fields and labels */
#define IMPORT_MAX_LABELS 100  /* more distinct values than this is not a label field */

typedef struct ds_import_opts {
    const char *file;        /* the data file */
    const char *format;      /* jsonl, csv, tsv, text; NULL: from the extension and contents */
    int header;              /* csv/tsv: 1 the first row names the columns, 0 not, -1 guess */
    const char *pattern;     /* text: PCRE2 line pattern with named groups (NULL: guessed) */
    const char *input;       /* the input field, or an input template ("{{premise}} {{hypothesis}}") */
    const char *answer;      /* the answer field */
    const char *labels;      /* "v1,v2,..": label values (default: the distinct values seen) */
    const char *verbalizers; /* "w1,w2,..": parallel to labels */
    const char *name, *split, *instruction;
    const char *file_ref;    /* how the card names the file */
    const char *sha256;      /* the file's digest */
} ds_import_opts;

typedef struct ds_import {
    cJSON *card;             /* the card as JSON */
    char format[8];
    char *input, *answer;    /* what was picked (field names or the input template) */
    int multiple_choice;     /* the rows carry their own options */
    int numeric_labels;      /* label words are numbers: a model answers better with words */
} ds_import;

/* Reads o->file and builds out->card. Errors name the file ("x.csv: no field 'y'"). */
int ds_import_guess(const ds_import_opts *o, ds_import *out, pwb_err *e);
void ds_import_free(ds_import *im);
/* The card as people edit it: two-space indentation, "key": value, a final newline (malloc'd). */
char *ds_import_card_text(const ds_import *im);

#endif
