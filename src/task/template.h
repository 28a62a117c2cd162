/* Prompt templates: a `key: value` header, `---`, then a body with role sections ([system],
 * [user], [assistant]) and Mustache tags: {{var}}, {{#list}}..{{/list}}, {{^x}}..{{/x}}, {{! c }}. */
#ifndef PWB_TASK_TEMPLATE_H
#define PWB_TASK_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "task/dataset.h"
#include "util/buf.h"
#include "util/err.h"

enum tpl_kind { TPL_ZERO_SHOT = 0, TPL_FEW_SHOT, TPL_COT, TPL_ROLE };
/* similar: the k training rows nearest the query by embedding (the runner computes them; where
 * it cannot, e.g. a calibration input, the pick is balanced). */
#define TPL_MAX_SHOTS 64 /* shots a template may ask for */

enum tpl_shot_pick { SHOTS_FIRST = 0, SHOTS_RANDOM, SHOTS_BALANCED, SHOTS_SIMILAR };
/* What rank scoring compares: auto = the options' texts where rows have options, else labels. */
enum tpl_choices { TPL_CHOICES_AUTO = 0, TPL_CHOICES_TEXT, TPL_CHOICES_LABEL };

typedef struct tpl_node tpl_node; /* parsed Mustache tree (private) */

typedef struct tpl_section {
    char *role;       /* "system", "user", "assistant" */
    tpl_node *body;
    int line;         /* first line of the section in the file */
} tpl_section;

typedef struct pwb_template {
    char *path;
    char *name;       /* header "name", default: file stem */
    int kind;         /* enum tpl_kind */
    int shots;        /* number of few-shot examples */
    int shot_pick;    /* enum tpl_shot_pick */
    int shots_as_turns; /* header "shots_as_turns": each shot is its own user turn (the template
                         * rendered for it without shots) and assistant turn (its answer), before
                         * the query (lm-evaluation-harness's fewshot_as_multiturn) */
    char *answer_pattern; /* header "answer" (PCRE2), NULL = the card's default */
    char *task;       /* header "task": "classification" (generic) or a dataset name */
    int max_tokens;   /* header "max_tokens", default 16 (cot: 256) */
    char *description;
    char *target_delimiter; /* header "target_delimiter": put before each choice when ranking
                             * (lm-evaluation-harness's " "); NULL = nothing */
    int choices;            /* header "choices": enum tpl_choices */
    tpl_section *sections;
    int n_sections;
    tpl_node *root;   /* the whole body (role markers are nodes in it) */
    int answer_line;  /* header line of "answer", for errors */
    int task_line;
    char *text;       /* the file's text as read (for `template show`) */
} pwb_template;

/* One rendered prompt: role/content pairs (content malloc'd). */
typedef struct tpl_message {
    char *role;
    char *content;
} tpl_message;

typedef struct tpl_prompt {
    tpl_message *msgs;
    int n;
} tpl_prompt;

void template_init(pwb_template *t);
void template_free(pwb_template *t);
/* Parses a file (t template_init'ed); errors read "path:line: ...": header keys, unbalanced or
 * mismatched section tags, bad answer regex. */
int template_load(pwb_template *t, const char *path, pwb_err *e);
int template_parse(pwb_template *t, const char *text, size_t n, const char *path, pwb_err *e);
/* Checks every tag against the variables a card provides; "path:line: unknown variable 'x'". */
int template_check(const pwb_template *t, const ds_card *c, pwb_err *e);
/* 1 when the template's "task" fits the card (empty, the card's task type, or its name). */
int template_applies(const pwb_template *t, const ds_card *c);
const char *template_kind_name(int kind);      /* "zero-shot", "few-shot", "cot", "role" */
const char *template_shot_pick_name(int pick); /* "first", "random", "balanced", "similar" */
int template_shot_pick_parse(const char *name); /* -1 when unknown */
/* Picks t->shots rows (never query_row when same_split) from the shot split: first, seeded random,
 * or label-balanced (similar: balanced, the runner replaces it); the same seed gives every query the same shots (shared KV prefix) except
 * where a query is itself one of them. To override the count, copy the struct and set shots. */
int template_pick_shots(const pwb_template *t, const ds_card *c, const ds_data *shots_from, size_t query_row,
                        int same_split, uint64_t seed, size_t *out_rows, pwb_err *e);
/* The k rows of pool (n rows of dim floats) nearest q by cosine similarity, best first, ties to
 * the lower row; rows whose skip flag is set (may be NULL) are passed over. Returns how many were
 * found (fewer than k when the pool is short). */
int template_nearest(const float *pool, size_t n, int dim, const float *q, const unsigned char *skip, int k,
                     size_t *out);
/* Renders the prompt for one example with the given shots. Thread-safe for a shared t and c. */
int template_render(const pwb_template *t, const ds_card *c, const ds_example *ex, const ds_example *const *shots,
                    int n_shots, tpl_prompt *out, pwb_err *e);
void tpl_prompt_free(tpl_prompt *p);
/* The continuations a rank request compares for x (dataset_choices with the template's choices
 * and target_delimiter); index i is label i. Free with dataset_choices_free. */
char **template_choices(const pwb_template *t, const ds_card *c, const ds_example *x, int *n);
/* The same with delim (a suite model's) before each choice when the template names no delimiter. */
char **template_choices_delim(const pwb_template *t, const ds_card *c, const ds_example *x, const char *delim, int *n);
/* The delimiter those choices start with: the template's target_delimiter, else delim. */
const char *template_delimiter(const pwb_template *t, const char *delim);
/* 1 when t ranks each row's own option texts (a per-row multiple-choice card, choices: text or
 * auto): the continuations differ from row to row, so no single prior fits them. */
int template_ranks_row_text(const pwb_template *t, const ds_card *c);
/* Flattens a prompt into one text (for hashing and completion-style backends): a lone user
 * message is its content; otherwise "[role]\ncontent" blocks joined by blank lines. */
int tpl_prompt_flatten(const tpl_prompt *p, pwb_buf *out);

#endif
