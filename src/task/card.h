/* Dataset cards: one JSON card describes a dataset (task, labels and their verbalizers, splits and
 * their files, field mapping); src/task/card.c parses and validates it. */
#ifndef PWB_TASK_CARD_H
#define PWB_TASK_CARD_H

#include <stddef.h>

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
    char **answer_map;     /* [raw, label value] pairs applied to the gold answer (2*n_answer_map):
                            * several raw answers to one label ("1" -> "A") */
    int n_answer_map;
    int trim_input;        /* "trim_input": strip the input's surrounding whitespace (default: keep) */
    int skip_empty;        /* "empty_inputs": "skip" drops rows whose input is blank ("keep": default) */
    /* Per-row multiple choice ("options"): each row brings its own option texts, from one list
     * field ("choices.text") or one field per option (["opa", "opb", ...]); option_label_field
     * optionally names the row's list of letters ("choices.label"), which must equal the card's
     * labels. The card's labels are the option letters; an example's label is its option index. */
    char **option_fields;
    int n_option_fields;
    char *option_label_field;
    char *dir;             /* folder of the card file */
    int relabeled;         /* a view whose verbalizers a method's label_words replaced: shots show
                            * their label's word, not the answer as read */
} ds_card;

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

#endif
