/* Suites: a JSON file naming datasets, models (backend, endpoint, price) and methods. Its cells
 * are the product dataset x model x method. */
#ifndef PWB_RUN_SUITE_H
#define PWB_RUN_SUITE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "tune/settings.h"
#include "util/buf.h"
#include "util/err.h"

typedef struct suite_dataset {
    char *name;    /* card name */
    char *split;   /* evaluation split, default the card's eval_split */
    long limit;    /* examples to sample (0 = all) */
    char *shot_split;  /* where few-shot examples come from (default the card's few_shot_split);
                        * splits may be slices ("validation@1[:200]") */
    int allow_overlap; /* shot or training rows among the evaluated rows: warn instead of refusing */
    long shot_line;    /* the suite's line of shot_split, for errors (0: unknown) */
} suite_dataset;

typedef struct suite_model {
    char *name;
    char *provider;     /* "openai", "openai-completions", "ollama", "anthropic", "local", or a preset
                         * name ("vllm", "groq", ...): a row of llm/provider.h */
    char *base_url;
    char *model;        /* server model id, or local model path */
    char *api_key_env;
    char *chat_template;
    char *target_delimiter; /* put before each rank choice when the template names none: a base
                             * model's raw prompts want " " (Gemma 3), a chat turn wants nothing */
    int concurrency;
    int batch;            /* local: requests scored or generated together (0: the backend's 16) */
    double timeout_s;
    int max_retries;
    double price_in_per_m;   /* USD per million input tokens */
    double price_out_per_m;
    double price_cpu_hour;   /* USD per CPU hour (local) */
    double temperature;
    int max_tokens;          /* 0 = the template's */
    cJSON *raw;              /* the model object as written (owned) */
    /* Remote providers (docs/http-backends.md). */
    char *preset;            /* OpenAI-compatible preset for provider openai / openai-completions */
    int stream;              /* stream replies, record time to first token */
    double rpm, tpm;         /* requests / tokens per minute, 0 = no limit */
    int adaptive_concurrency;/* halve concurrency on 429/503, grow again on success */
    int allow_insecure_key;  /* allow the key over plain http:// to a non-loopback host */
    char *tokenizer;         /* tokenizer.json / GGUF / HF folder counting this model's tokens (--dry-run) */
    double price_cached_in_per_m; /* USD per million prompt tokens read from the provider's cache; < 0: not given */
    int price_given;         /* the suite gives price.input, price.output or price.cached_input: it wins over
                              * the shipped table */
} suite_model;

/* Prompt search (a method's "optimize" object, docs/optimize.md): candidates are the method's
 * template and `templates`, crossed with the card's instruction and `instructions` (for templates
 * that show {{instruction}}), crossed with `demo_sets` seeded demonstration sets (for templates
 * with shots); they race by successive halving on `heldout` rows of the method's train_limit rows
 * of the training split, within `max_evals` label rankings. Strings point into the suite's JSON. */
#define SUITE_OPT_MAX_LIST 32
typedef struct suite_optimize {
    const char *templates[SUITE_OPT_MAX_LIST];
    int n_templates;
    const char *instructions[SUITE_OPT_MAX_LIST];
    int n_instructions;
    int demo_sets;      /* demonstration sets per template with shots (3) */
    int propose;        /* instructions the method's model proposes from labelled examples of the
                         * demo pool (APE's instruction induction), added to `instructions` (0) */
    long heldout;       /* held-out rows of the budget the race is scored on (100) */
    long max_evals;     /* label rankings the search may spend, calibration inputs included (0: no cap) */
    long bootstrap_tries; /* chain-of-thought templates with shots: demo-pool rows each demonstration
                           * set may try, generating the model's own reasoning and keeping the rows
                           * whose answer is the gold label (0: four per shot) */
} suite_optimize;

typedef struct suite_method {
    char *name;
    char *template_path;  /* hard prompt: template file (resolved against the suite and templates/) */
    char *scoring;        /* "generate" (default) or "rank" */
    int shots;            /* overrides the template's shot count when >= 0 */
    char *shot_pick;      /* overrides the template's shot_pick ("first", ..., "similar"); NULL: keep */
    int shots_as_turns;   /* overrides the template's shots_as_turns when >= 0 */
    char **label_words;   /* the words labels are shown and ranked as, in the card's label order
                           * (a verbalizer search); NULL: the card's verbalizers */
    int n_label_words;
    long limit;           /* scores only the first `limit` rows of each dataset's seeded sample (0:
                           * all): the same rows as a dataset limit of that size, for costly sweeps */
    cJSON *soft_prompt;   /* tuning settings ("soft_prompt", "lora" or "prefix"), NULL for hard prompts (owned) */
    soft_settings soft;   /* soft_prompt validated (strings point into it); template_path is then
                           * the input format (NULL: zero-shot) and scoring defaults to "rank" */
    const tune_method *tm;/* which of tune_methods[] soft_prompt is (NULL for hard prompts) */
    /* Sweeps: a method written with "sweep": {"axis": [values...], ...} becomes one method per
     * grid point (the last axis varies fastest), named "<name>[axis=value,...]", with the point
     * applied (shots, train_limit, calibration -> the method's; any axis of a soft prompt -> that
     * key of soft_prompt). */
    char *sweep;          /* the method's name as written; NULL outside a sweep */
    char *sweep_point;    /* the point as minified JSON in axis order: {"tokens":20,"init":"class"} */
    char *calibration;    /* rank scoring: "none" (default), "contextual" or "pmi" (task/calib.h) */
    cJSON *optimize;      /* prompt search settings, NULL for none (owned) */
    suite_optimize opt;   /* optimize validated (strings point into it) */
    long train_limit;     /* labelled training examples the method may read for shots, search or
                           * training; -1: not declared (all). A soft prompt's is its
                           * soft_prompt.train_limit (the method key sets it). */
    char *served_model;   /* the model id the method's requests name on HTTP models, instead of the
                           * model's own: the method's adapter as a server serves it (`pwb serve
                           * --adapter NAME=DIR`). Its cells on HTTP models are scored as the tuned
                           * method's input format, nothing trained; on local models a tuned method
                           * trains and runs its adapter as usual. NULL: none. */
    long train_line;      /* the suite's line of soft_prompt.train_split, for errors (0: unknown) */
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
