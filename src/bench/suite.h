/* Suites: a JSON file naming datasets, models (backend, endpoint, price) and methods. Its cells
 * are the product dataset x model x method. */
#ifndef PWB_BENCH_SUITE_H
#define PWB_BENCH_SUITE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "util/buf.h"
#include "util/err.h"

typedef struct suite_dataset {
    char *name;    /* card name */
    char *split;   /* evaluation split, default the card's eval_split */
    long limit;    /* examples to sample (0 = all) */
} suite_dataset;

typedef struct suite_model {
    char *name;
    char *provider;     /* "openai", "openai-completions", "local" */
    char *base_url;
    char *model;        /* server model id, or local model path */
    char *api_key_env;
    char *chat_template;
    int concurrency;
    double timeout_s;
    int max_retries;
    double price_in_per_m;   /* USD per million input tokens */
    double price_out_per_m;
    double price_cpu_hour;   /* USD per CPU hour (local) */
    double temperature;
    int max_tokens;          /* 0 = the template's */
    cJSON *raw;              /* the model object as written (owned) */
} suite_model;

typedef struct suite_method {
    char *name;
    char *template_path;  /* hard prompt: template file (resolved against the suite and templates/) */
    char *scoring;        /* "generate" (default) or "rank" */
    int shots;            /* overrides the template's shot count when >= 0 */
    cJSON *soft_prompt;   /* soft prompt settings, NULL for hard prompts (owned) */
    /* Sweeps: a method written with "sweep": {"axis": [values...], ...} becomes one method per
     * grid point (the last axis varies fastest), named "<name>[axis=value,...]", with the point
     * applied (shots -> shots; any axis of a soft prompt -> that key of soft_prompt). */
    char *sweep;          /* the method's name as written; NULL outside a sweep */
    char *sweep_point;    /* the point as minified JSON in axis order: {"tokens":20,"init":"class"} */
} suite_method;

typedef struct pwb_suite {
    char *path;
    char *name;
    uint64_t seed;
    char *sha256;         /* of the canonical (minified) JSON: identifies the suite's content */
    suite_dataset *datasets;
    int n_datasets;
    suite_model *models;
    int n_models;
    suite_method *methods;
    int n_methods;
    cJSON *json;          /* the whole document (owned) */
} pwb_suite;

void suite_init(pwb_suite *s);
void suite_free(pwb_suite *s);
/* Loads and validates; errors read "suites/x.json: models[1].price.input must be ...". Defaults:
 * seed 0, limit 0 (all), concurrency 4 (local 1), timeout_s 60, max_retries 3, temperature 0,
 * max_tokens 0, scoring "generate", shots -1. On error s is left empty. */
int suite_load(pwb_suite *s, const char *path, pwb_err *e);
int suite_parse(pwb_suite *s, const char *text, size_t n, const char *path, pwb_err *e);
/* The method's template file: as written, beside the suite, then each of the ':'-separated
 * template_dirs; a bare name also tries "<name>.tmpl". */
int suite_resolve_template(const pwb_suite *s, const suite_method *m, const char *template_dirs, pwb_buf *out,
                           pwb_err *e);

#endif
