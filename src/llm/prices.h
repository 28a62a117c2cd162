/* Model prices (USD per million tokens) and what requests cost.
 *
 * pwb ships prices/prices.json, a small dated table of well-known hosted models; prices change, so
 * a suite's own price for a model wins over it (see docs/http-backends.md). Lookup: the exact id,
 * else the longest table id that is a prefix of it ending at a '-', ':', '@' or '/' boundary
 * ("claude-3-5-haiku-20241022" finds "claude-3-5-haiku", "gpt-4o-mini-2024-07-18" finds
 * "gpt-4o-mini", but "gpt-4o" never finds "gpt-4"), and then the same for the id after its last
 * '/' (OpenRouter's "openai/gpt-4o"). */
#ifndef PWB_LLM_PRICES_H
#define PWB_LLM_PRICES_H

#include <stddef.h>

#include "util/buf.h"
#include "util/err.h"

#define PRICES_MAX_FILE (4u << 20)
#define PRICES_MAX_MODELS 10000

typedef struct llm_price {
    int known;              /* 0: no price for this model (costs read 0) */
    double in_per_m;        /* USD per million prompt tokens */
    double out_per_m;       /* USD per million generated tokens */
    double cached_in_per_m; /* USD per million prompt tokens read from the provider's cache;
                             * < 0: not given, billed as in_per_m */
} llm_price;

typedef struct price_entry {
    char *id;
    llm_price p;
} price_entry;

typedef struct price_table {
    price_entry *v;
    size_t n;
    char *as_of; /* the table's date, e.g. "2025-06-01"; may be NULL */
} price_table;

void prices_init(price_table *t);
void prices_free(price_table *t);
/* Parses {"as_of": "...", "models": {"<id>": {"input": x, "output": y, "cached_input": z}}}.
 * input and output are required, non-negative and finite; keys starting with '_' are comments.
 * Errors name `what` (a file name) and the model id. */
int prices_parse(price_table *t, const char *json, size_t n, const char *what, pwb_err *e);
int prices_load(price_table *t, const char *path, pwb_err *e);
/* The shipped table's path: $PWB_PRICES, else prices/prices.json under the working directory,
 * else under $PWB_ROOT. PWB_EIO naming what was tried when none exists. */
int prices_find(pwb_buf *out, pwb_err *e);

/* 1 and *out set when the table prices model; 0 (and out->known = 0) otherwise. */
int prices_lookup(const price_table *t, const char *model, llm_price *out);

/* The price a model is billed at: the suite's (suite->known) when it gives one, else the table's
 * for model (t may be NULL). Returns out->known. */
int prices_resolve(const price_table *t, const char *model, const llm_price *suite, llm_price *out);

/* USD for tokens_in prompt tokens (of which cached_in were read from the provider's cache) and
 * tokens_out generated tokens. Negative counts count as 0; an unknown price costs 0. */
double llm_estimate_cost(const llm_price *p, double tokens_in, double tokens_out, double cached_in);

#endif
