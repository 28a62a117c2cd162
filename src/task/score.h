/* Scoring: extract an answer from a generation (PCRE2), normalise, compare with the gold answer. */
#ifndef PWB_TASK_SCORE_H
#define PWB_TASK_SCORE_H

#include "task/dataset.h"
#include "util/err.h"

typedef struct scorer scorer;

typedef struct score_result {
    char *extracted;  /* malloc'd normalised answer, NULL when invalid */
    int valid;        /* an answer of the right kind was found */
    int correct;
} score_result;

/* pattern: the template's answer pattern, or NULL for the card's default (or a built-in one
 * for the answer kind). Compile errors name the pattern. */
int scorer_init(scorer **s, const ds_card *c, const char *pattern, pwb_err *e);
void scorer_free(scorer *s);
/* Thread-safe. gold may be NULL (extraction only). r is overwritten: clear it between calls. */
int scorer_score(const scorer *s, const char *output, const ds_example *gold, score_result *r);
void score_result_clear(score_result *r);
/* Normalises a numeric string ("1,234.50" -> "1234.5"); 0 on success. */
int score_normalize_number(const char *in, char *out, size_t cap);

#endif
