/* Suites: parse and validate the JSON; errors name the file and the field. */
#include "run/suite.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/provider.h"
#include "task/catalog.h"
#include "task/template.h"
#include "task/calib.h"
#include "tune/softprompt.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/json.h"
#include "util/sha256.h"
#include "util/str.h"

#define SUITE_MAX_BYTES (4u << 20)
#define SUITE_MAX_ITEMS 1000

/* A sweep's grid is bounded so a typo cannot ask for a million cells. */
#define SUITE_MAX_SWEEP_AXES 4
#define SUITE_MAX_SWEEP_VALUES 64
#define SUITE_MAX_SWEEP_POINTS 256

void suite_init(pwb_suite *s) { memset(s, 0, sizeof *s); }

static void method_free(suite_method *m)
{
    free(m->name);
    free(m->template_path);
    free(m->scoring);
    cJSON_Delete(m->soft_prompt);
    free(m->sweep);
    free(m->sweep_point);
    free(m->calibration);
    free(m->served_model);
    cJSON_Delete(m->optimize);
    free(m->shot_pick);
    for (int i = 0; i < m->n_label_words; i++)
        free(m->label_words[i]);
    free(m->label_words);
    memset(m, 0, sizeof *m);
}

void suite_free(pwb_suite *s)
{
    if (!s)
        return;
    free(s->path);
    free(s->name);
    free(s->sha256);
    for (int i = 0; i < s->n_datasets; i++) {
        free(s->datasets[i].name);
        free(s->datasets[i].split);
        free(s->datasets[i].shot_split);
    }
    free(s->datasets);
    for (int i = 0; i < s->n_models; i++) {
        suite_model *m = &s->models[i];
        free(m->name);
        free(m->provider);
        free(m->base_url);
        free(m->model);
        free(m->api_key_env);
        free(m->chat_template);
        free(m->target_delimiter);
        free(m->preset);
        free(m->tokenizer);
        cJSON_Delete(m->raw);
    }
    free(s->models);
    for (int i = 0; i < s->n_methods; i++)
        method_free(&s->methods[i]);
    free(s->methods);
    cJSON_Delete(s->json);
    suite_init(s);
}

typedef struct sctx {
    const char *path;
    pwb_err *e;
    const char *text; /* the suite's text, for the line of a key */
    size_t n;
} sctx;

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The 1-based line of the first `"key":` in text whose value starts with `"value"` (any value
 * when value is NULL), 0 when not found. */
static long value_line(const sctx *x, const char *key, const char *value)
{
    size_t kl = strlen(key), vl = value ? strlen(value) : 0;
    for (size_t i = 0; x->text && i + kl + 2 <= x->n; i++) {
        if (x->text[i] != '"' || memcmp(x->text + i + 1, key, kl) || x->text[i + 1 + kl] != '"')
            continue;
        size_t j = i + kl + 2;
        while (j < x->n && is_ws(x->text[j]))
            j++;
        if (j >= x->n || x->text[j] != ':')
            continue;
        for (j++; j < x->n && is_ws(x->text[j]); j++)
            ;
        if (value && (j + vl + 2 > x->n || x->text[j] != '"' || memcmp(x->text + j + 1, value, vl) ||
                      x->text[j + 1 + vl] != '"'))
            continue;
        long line = 1;
        for (size_t k = 0; k < i; k++)
            line += x->text[k] == '\n';
        return line;
    }
    return 0;
}

/* The 1-based line of the first `"key":` in text, 0 when not found. */
static long key_line(const sctx *x, const char *key) { return value_line(x, key, NULL); }

/* Where a split a later check may refuse (rows overlapping the evaluated ones) is written: the
 * line of that key with that value, else of the key (a swept value), else 0. */
static long split_line(const sctx *x, const char *key, const char *value)
{
    long line = value_line(x, key, value);
    return line ? line : key_line(x, key);
}

static int keys_ok(sctx *x, const cJSON *o, const char *const *allowed, const char *where)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, o)
    {
        const char *k = it->string ? it->string : "";
        if (json_key_is_comment(k))
            continue;
        int ok = 0;
        size_t na = 0;
        for (; allowed[na]; na++)
            ok |= !strcmp(k, allowed[na]);
        if (!ok) {
            long line = key_line(x, k);
            const char *near = str_closest(k, allowed, na);
            char at[32] = "";
            if (line > 0)
                snprintf(at, sizeof at, ":%ld", line);
            return err_set(x->e, PWB_EINVAL, "%s%s: %s%sunknown field '%s'%s%s%s", x->path, at, where,
                           where[0] ? "." : "", k, near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
        }
    }
    return PWB_OK;
}

/* Optional string: absent/null leaves *out; otherwise must be a non-empty string. */
static int get_str(sctx *x, const cJSON *o, const char *key, const char *where, int required, char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return err_set(x->e, PWB_EINVAL, "%s: %s.%s is required", x->path, where, key);
        return PWB_OK;
    }
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return err_set(x->e, PWB_EINVAL, "%s: %s.%s must be a non-empty string", x->path, where, key);
    free(*out);
    *out = str_dup(v->valuestring);
    return *out ? PWB_OK : err_set(x->e, PWB_ENOMEM, "out of memory");
}

static int get_num(sctx *x, const cJSON *o, const char *key, const char *where, double lo, double hi, int integer,
                   double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return PWB_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi ||
        (integer && v->valuedouble != floor(v->valuedouble)))
        return err_set(x->e, PWB_EINVAL, "%s: %s%s%s must be %s from %g to %g", x->path, where, where[0] ? "." : "",
                       key, integer ? "an integer" : "a number", lo, hi);
    *out = v->valuedouble;
    return PWB_OK;
}

/* Optional boolean: absent/null leaves *out; true/false (or 0/1) otherwise. */
static int get_bool(sctx *x, const cJSON *o, const char *key, const char *where, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return PWB_OK;
    if (cJSON_IsBool(v))
        *out = cJSON_IsTrue(v);
    else if (cJSON_IsNumber(v) && (v->valuedouble == 0 || v->valuedouble == 1))
        *out = v->valuedouble == 1;
    else
        return err_set(x->e, PWB_EINVAL, "%s: %s.%s must be true or false", x->path, where, key);
    return PWB_OK;
}

/* "models[0].provider 'x' is not a provider (local, openai, ..., or a preset: vllm, ...)", from the
 * provider table. */
static int bad_name(sctx *x, const char *where, const char *field, const char *name)
{
    pwb_buf protocols, presets;
    buf_init(&protocols);
    buf_init(&presets);
    llm_provider_names(&protocols, 0);
    llm_provider_names(&presets, 1);
    if (!strcmp(field, "provider"))
        err_set(x->e, PWB_EINVAL, "%s: %s.provider '%.64s' is not a provider (%s, or a preset: %s)", x->path, where,
                name, protocols.data ? protocols.data : "", presets.data ? presets.data : "");
    else
        err_set(x->e, PWB_EINVAL, "%s: %s.preset '%.64s' is not a preset (%s)", x->path, where, name,
                presets.data ? presets.data : "");
    buf_free(&protocols);
    buf_free(&presets);
    return PWB_EINVAL;
}

static int ident_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-' || *s == '.'))
            return 0;
    return 1;
}

static const cJSON *get_array(sctx *x, const cJSON *j, const char *key, int *n, int *rc)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) == 0) {
        *rc = err_set(x->e, PWB_EINVAL, "%s: '%s' must be a non-empty array", x->path, key);
        return NULL;
    }
    *n = cJSON_GetArraySize(a);
    if (*n > SUITE_MAX_ITEMS) {
        *rc = err_set(x->e, PWB_ERANGE, "%s: '%s' has more than %d entries", x->path, key, SUITE_MAX_ITEMS);
        return NULL;
    }
    return a;
}

static int parse_datasets(pwb_suite *s, sctx *x, const cJSON *j)
{
    static const char *const keys[] = {"name", "split", "limit", "shot_split", "allow_overlap", NULL};
    int n, rc = PWB_OK;
    const cJSON *a = get_array(x, j, "datasets", &n, &rc);
    if (!a)
        return rc;
    s->datasets = calloc((size_t)n, sizeof *s->datasets);
    if (!s->datasets)
        return err_set(x->e, PWB_ENOMEM, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, a)
    {
        char where[48];
        snprintf(where, sizeof where, "datasets[%d]", s->n_datasets);
        suite_dataset *d = &s->datasets[s->n_datasets++];
        if (cJSON_IsString(it)) { /* shorthand: "sst2" */
            d->name = str_dup(it->valuestring);
        } else if (cJSON_IsObject(it)) {
            if ((rc = keys_ok(x, it, keys, where)) || (rc = get_str(x, it, "name", where, 1, &d->name)) ||
                (rc = get_str(x, it, "split", where, 0, &d->split)) ||
                (rc = get_str(x, it, "shot_split", where, 0, &d->shot_split)) ||
                (rc = get_bool(x, it, "allow_overlap", where, &d->allow_overlap)))
                return rc;
            double lim = 0;
            if ((rc = get_num(x, it, "limit", where, 0, 1e9, 1, &lim)))
                return rc;
            d->limit = (long)lim;
        } else {
            return err_set(x->e, PWB_EINVAL, "%s: %s must be a dataset name or {name, split, limit, shot_split, allow_overlap}", x->path, where);
        }
        if (!d->name || !d->name[0] || !ident_ok(d->name))
            return err_set(x->e, PWB_EINVAL, "%s: %s.name: bad dataset name", x->path, where);
        for (int i = 0; i < s->n_datasets - 1; i++) {
            const suite_dataset *o = &s->datasets[i];
            if (!strcmp(o->name, d->name) && !strcmp(o->split ? o->split : "", d->split ? d->split : ""))
                return err_set(x->e, PWB_EINVAL, "%s: %s: dataset '%s' listed twice", x->path, where, d->name);
        }
    }
    return PWB_OK;
}

static int parse_models(pwb_suite *s, sctx *x, const cJSON *j)
{
    static const char *const keys[] = {"name", "provider", "base_url", "model", "api_key_env", "concurrency",
                                       "timeout_s", "max_retries", "price", "temperature", "max_tokens",
                                       "chat_template", "options", "preset", "stream", "rpm", "tpm",
                                       "adaptive_concurrency", "allow_insecure_key", "tokenizer", "batch",
                                       "target_delimiter", NULL};
    static const char *const price_keys[] = {"input", "output", "cached_input", "cpu_hour", NULL};
    int n, rc = PWB_OK;
    const cJSON *a = get_array(x, j, "models", &n, &rc);
    if (!a)
        return rc;
    s->models = calloc((size_t)n, sizeof *s->models);
    if (!s->models)
        return err_set(x->e, PWB_ENOMEM, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, a)
    {
        char where[48];
        snprintf(where, sizeof where, "models[%d]", s->n_models);
        suite_model *m = &s->models[s->n_models++];
        if (!cJSON_IsObject(it))
            return err_set(x->e, PWB_EINVAL, "%s: %s must be an object", x->path, where);
        if ((rc = keys_ok(x, it, keys, where)) || (rc = get_str(x, it, "name", where, 1, &m->name)) ||
            (rc = get_str(x, it, "provider", where, 1, &m->provider)) ||
            (rc = get_str(x, it, "base_url", where, 0, &m->base_url)) ||
            (rc = get_str(x, it, "model", where, 1, &m->model)) ||
            (rc = get_str(x, it, "api_key_env", where, 0, &m->api_key_env)) ||
            (rc = get_str(x, it, "chat_template", where, 0, &m->chat_template)) ||
            (rc = get_str(x, it, "target_delimiter", where, 0, &m->target_delimiter)) ||
            (rc = get_str(x, it, "preset", where, 0, &m->preset)) ||
            (rc = get_str(x, it, "tokenizer", where, 0, &m->tokenizer)))
            return rc;
        if (!ident_ok(m->name))
            return err_set(x->e, PWB_EINVAL, "%s: %s.name '%s': use letters, digits, '_', '-', '.'", x->path, where,
                           m->name);
        if (!ident_ok(m->provider) || !llm_provider_find(m->provider))
            return bad_name(x, where, "provider", m->provider);
        int local = !strcmp(m->provider, "local");
        int oai = (llm_provider_find(m->provider)->flags & LLM_PROVIDER_TAKES_PRESET) != 0;
        if (m->preset && !oai)
            return err_set(x->e, PWB_EINVAL, "%s: %s.preset is for provider openai or openai-completions, not '%s'",
                           x->path, where, m->provider);
        if (m->preset && !llm_preset_known(m->preset))
            return bad_name(x, where, "preset", m->preset);
        if (m->target_delimiter && strlen(m->target_delimiter) > 64)
            return err_set(x->e, PWB_EINVAL, "%s: %s.target_delimiter must be at most 64 bytes", x->path, where);
        if (local && m->tokenizer)
            return err_set(x->e, PWB_EINVAL, "%s: %s.tokenizer: a local model counts with its own tokenizer",
                           x->path, where);
        if (m->base_url && !str_starts(m->base_url, "http://") && !str_starts(m->base_url, "https://"))
            return err_set(x->e, PWB_EINVAL, "%s: %s.base_url must start with http:// or https://", x->path, where);
        if (!local && !m->base_url && !llm_provider_has_default_url(m->provider, m->preset))
            return err_set(x->e, PWB_EINVAL,
                           "%s: %s.base_url is required for provider '%s' (or name a preset that gives one)",
                           x->path, where, m->provider);
        double rpm = 0, tpm = 0;
        if ((rc = get_bool(x, it, "stream", where, &m->stream)) ||
            (rc = get_bool(x, it, "adaptive_concurrency", where, &m->adaptive_concurrency)) ||
            (rc = get_bool(x, it, "allow_insecure_key", where, &m->allow_insecure_key)) ||
            (rc = get_num(x, it, "rpm", where, 0, 1e9, 0, &rpm)) || (rc = get_num(x, it, "tpm", where, 0, 1e12, 0, &tpm)))
            return rc;
        m->rpm = rpm;
        m->tpm = tpm;
        double conc = local ? 1 : 4, timeout = 60, retries = 3, temp = 0, maxtok = 0;
        if ((rc = get_num(x, it, "concurrency", where, 1, 256, 1, &conc)) ||
            (rc = get_num(x, it, "timeout_s", where, 0.001, 86400, 0, &timeout)) ||
            (rc = get_num(x, it, "max_retries", where, 0, 20, 1, &retries)) ||
            (rc = get_num(x, it, "temperature", where, 0, 2, 0, &temp)) ||
            (rc = get_num(x, it, "max_tokens", where, 0, 100000, 1, &maxtok)))
            return rc;
        m->concurrency = (int)conc;
        double batch = 0;
        if ((rc = get_num(x, it, "batch", where, 0, 1024, 1, &batch)))
            return rc;
        if (batch > 0 && !local)
            return err_set(x->e, PWB_EINVAL, "%s: %s.batch is for local models (HTTP models use concurrency)", x->path,
                           where);
        m->batch = (int)batch;
        m->timeout_s = timeout;
        m->max_retries = (int)retries;
        m->temperature = temp;
        m->max_tokens = (int)maxtok;
        m->price_cached_in_per_m = -1;
        const cJSON *price = cJSON_GetObjectItemCaseSensitive(it, "price");
        if (price && !cJSON_IsNull(price)) {
            char pw[64];
            snprintf(pw, sizeof pw, "%s.price", where);
            if (!cJSON_IsObject(price))
                return err_set(x->e, PWB_EINVAL, "%s: %s must be an object {input, output, cached_input, cpu_hour}",
                               x->path, pw);
            if ((rc = keys_ok(x, price, price_keys, pw)) ||
                (rc = get_num(x, price, "input", pw, 0, 1e6, 0, &m->price_in_per_m)) ||
                (rc = get_num(x, price, "output", pw, 0, 1e6, 0, &m->price_out_per_m)) ||
                (rc = get_num(x, price, "cached_input", pw, 0, 1e6, 0, &m->price_cached_in_per_m)) ||
                (rc = get_num(x, price, "cpu_hour", pw, 0, 1e6, 0, &m->price_cpu_hour)))
                return rc;
            for (int k = 0; k < 3; k++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(price, price_keys[k]);
                if (v && !cJSON_IsNull(v))
                    m->price_given = 1;
            }
        }
        if (!(m->raw = cJSON_Duplicate(it, 1)))
            return err_set(x->e, PWB_ENOMEM, "out of memory");
        for (int i = 0; i < s->n_models - 1; i++)
            if (!strcmp(s->models[i].name, m->name))
                return err_set(x->e, PWB_EINVAL, "%s: %s: model name '%s' used twice", x->path, where, m->name);
    }
    return PWB_OK;
}

/* Room for one more method (sweeps add several per entry). */
static int methods_grow(pwb_suite *s, sctx *x, int *cap, int need)
{
    if (s->n_methods + need <= *cap)
        return PWB_OK;
    if (s->n_methods + need > SUITE_MAX_ITEMS)
        return err_set(x->e, PWB_ERANGE, "%s: 'methods' expands to more than %d methods", x->path, SUITE_MAX_ITEMS);
    int nc = *cap ? *cap : 8;
    while (nc < s->n_methods + need)
        nc *= 2;
    suite_method *nv = realloc(s->methods, (size_t)nc * sizeof *nv);
    if (!nv)
        return err_set(x->e, PWB_ENOMEM, "out of memory");
    memset(nv + *cap, 0, (size_t)(nc - *cap) * sizeof *nv);
    s->methods = nv;
    *cap = nc;
    return PWB_OK;
}

/* The last method's name is new: no other method and no sweep has it (a report would not tell
 * the sweep "f" from a method "f"). */
static int method_name_unique(const pwb_suite *s, sctx *x, const char *where)
{
    const suite_method *m = &s->methods[s->n_methods - 1];
    for (int i = 0; i < s->n_methods - 1; i++) {
        const suite_method *o = &s->methods[i];
        if (!strcmp(o->name, m->name) || (o->sweep && !strcmp(o->sweep, m->name)) ||
            (m->sweep && !strcmp(o->name, m->sweep)))
            return err_set(x->e, PWB_EINVAL, "%s: %s: method name '%s' used twice", x->path, where,
                           strcmp(o->name, m->name) && m->sweep && !strcmp(o->name, m->sweep) ? m->sweep : m->name);
    }
    return PWB_OK;
}

typedef struct sweep_axis {
    const char *name;
    const cJSON *values; /* array */
    int n;
} sweep_axis;

/* Checks a sweep object against its method: a template method sweeps only "shots"; a soft prompt
 * sweeps keys of its soft_prompt object ("tokens", "init", "lr", ...). */
static int sweep_check(sctx *x, const cJSON *sw, const suite_method *m, const char *where, sweep_axis *ax, int *nax,
                       long *points)
{
    if (!cJSON_IsObject(sw) || !sw->child)
        return err_set(x->e, PWB_EINVAL, "%s: %s.sweep must be an object of axes, e.g. {\"shots\": [0, 2, 4]}",
                       x->path, where);
    *nax = 0;
    *points = 1;
    const cJSON *it;
    cJSON_ArrayForEach(it, sw)
    {
        const char *k = it->string ? it->string : "";
        if (*nax == SUITE_MAX_SWEEP_AXES)
            return err_set(x->e, PWB_ERANGE, "%s: %s.sweep has more than %d axes", x->path, where,
                           SUITE_MAX_SWEEP_AXES);
        if (!k[0] || !ident_ok(k))
            return err_set(x->e, PWB_EINVAL, "%s: %s.sweep: bad axis name '%s'", x->path, where, k);
        for (int i = 0; i < *nax; i++)
            if (!strcmp(ax[i].name, k))
                return err_set(x->e, PWB_EINVAL, "%s: %s.sweep: axis '%s' given twice", x->path, where, k);
        int shots = !strcmp(k, "shots");
        int calib = !strcmp(k, "calibration"), budget = !strcmp(k, "train_limit"), pick = !strcmp(k, "shot_pick");
        if (!m->soft_prompt && !shots && !calib && !budget && !pick)
            return err_set(x->e, PWB_EINVAL,
                           "%s: %s.sweep.%s: a template method sweeps only 'shots', 'shot_pick', 'train_limit' and "
                           "'calibration'", x->path, where, k);
        if (m->soft_prompt && pick)
            return err_set(x->e, PWB_EINVAL, "%s: %s.sweep.shot_pick: a trained prompt's shots are not swept (give methods[].shots)", x->path, where);
        if (pick && m->shot_pick)
            return err_set(x->e, PWB_EINVAL, "%s: %s: give shot_pick or sweep.shot_pick, not both", x->path, where);
        if (m->soft_prompt && calib)
            return err_set(x->e, PWB_EINVAL, "%s: %s.sweep.calibration: soft prompts are scored uncalibrated", x->path,
                           where);
        if ((calib && m->calibration) || (budget && !m->soft_prompt && m->train_limit >= 0))
            return err_set(x->e, PWB_EINVAL, "%s: %s: give %s or sweep.%s, not both", x->path, where, k, k);
        if (m->soft_prompt && shots)
            return err_set(x->e, PWB_EINVAL, "%s: %s.sweep.shots: a trained prompt's shots are not swept (give methods[].shots)", x->path, where);
        if (m->soft_prompt && !tune_field_find(m->tm, k))
            return err_set(x->e, PWB_EINVAL, "%s: %s.sweep.%s is not a %s setting", x->path, where, k, m->tm->key);
        if (shots && m->shots >= 0)
            return err_set(x->e, PWB_EINVAL, "%s: %s: give shots or sweep.shots, not both", x->path, where);
        int n = cJSON_IsArray(it) ? cJSON_GetArraySize(it) : 0;
        if (n < 1 || n > SUITE_MAX_SWEEP_VALUES)
            return err_set(x->e, PWB_EINVAL, "%s: %s.sweep.%s must be an array of 1 to %d values", x->path, where, k,
                           SUITE_MAX_SWEEP_VALUES);
        int i = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, it)
        {
            int ok;
            if (shots)
                ok = cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 64 &&
                     v->valuedouble == floor(v->valuedouble);
            else if (budget)
                ok = cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 1e8 &&
                     v->valuedouble == floor(v->valuedouble);
            else if (calib)
                ok = cJSON_IsString(v) && calib_kind_parse(v->valuestring) >= 0;
            else if (pick)
                ok = cJSON_IsString(v) && template_shot_pick_parse(v->valuestring) >= 0;
            else if (!strcmp(k, "tokens"))
                ok = cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= SOFTPROMPT_MAX_TOKENS &&
                     v->valuedouble == floor(v->valuedouble);
            else if (!strcmp(k, "init"))
                ok = cJSON_IsString(v) && (!strcmp(v->valuestring, "random") || !strcmp(v->valuestring, "vocab") ||
                                           !strcmp(v->valuestring, "class") || !strcmp(v->valuestring, "text"));
            else
                ok = (cJSON_IsNumber(v) && isfinite(v->valuedouble)) ||
                     (cJSON_IsString(v) && v->valuestring[0] && ident_ok(v->valuestring));
            if (!ok) {
                const char *what = shots                   ? "an integer from 0 to 64"
                                   : budget                ? "an integer from 0 to 100000000"
                                   : calib                 ? "one of none, contextual, pmi"
                                   : pick                  ? "one of first, random, balanced, similar"
                                   : !strcmp(k, "tokens") ? "an integer from 1 to 4096"
                                   : !strcmp(k, "init")   ? "one of random, vocab, class, text"
                                                          : "a number or a name (letters, digits, '_', '-', '.')";
                return err_set(x->e, PWB_EINVAL, "%s: %s.sweep.%s[%d] must be %s", x->path, where, k, i, what);
            }
            const cJSON *w = it->child;
            for (int j = 0; j < i; j++, w = w->next)
                if (cJSON_Compare(v, w, 1))
                    return err_set(x->e, PWB_EINVAL, "%s: %s.sweep.%s[%d] repeats an earlier value", x->path, where,
                                   k, i);
            i++;
        }
        ax[*nax].name = k;
        ax[*nax].values = it;
        ax[*nax].n = n;
        (*nax)++;
        *points *= n;
        if (*points > SUITE_MAX_SWEEP_POINTS)
            return err_set(x->e, PWB_ERANGE, "%s: %s.sweep has more than %d points", x->path, where,
                           SUITE_MAX_SWEEP_POINTS);
    }
    return PWB_OK;
}

/* A value as it appears in a derived method name: integers without a decimal point. */
static int sweep_value_text(pwb_buf *b, const cJSON *v)
{
    if (cJSON_IsString(v))
        return buf_puts(b, v->valuestring);
    return buf_printf(b, "%.6g", v->valuedouble);
}

static int parse_optimize(sctx *x, suite_method *m, const char *where);

/* Appends one method per grid point of the sweep to s->methods, the last axis varying fastest. */
static int sweep_expand(pwb_suite *s, sctx *x, const suite_method *base, const sweep_axis *ax, int nax, long points,
                        int *cap, const char *where)
{
    int rc = methods_grow(s, x, cap, (int)points);
    if (rc)
        return rc;
    pwb_buf name;
    buf_init(&name);
    for (long p = 0; p < points && !rc; p++) {
        int idx[SUITE_MAX_SWEEP_AXES];
        long rest = p;
        for (int a = nax - 1; a >= 0; a--) {
            idx[a] = (int)(rest % ax[a].n);
            rest /= ax[a].n;
        }
        suite_method *m = &s->methods[s->n_methods++];
        memset(m, 0, sizeof *m);
        m->shots = base->shots;
        m->shots_as_turns = base->shots_as_turns;
        m->shot_pick = base->shot_pick ? str_dup(base->shot_pick) : NULL;
        int words_oom = 0;
        if (base->n_label_words > 0 && (m->label_words = calloc((size_t)base->n_label_words, sizeof(char *))))
            for (int w = 0; w < base->n_label_words; w++)
                words_oom |= !(m->label_words[m->n_label_words++] = str_dup(base->label_words[w]));
        words_oom |= base->n_label_words > 0 && !m->label_words;
        m->limit = base->limit;
        m->train_limit = base->train_limit;
        m->calibration = base->calibration ? str_dup(base->calibration) : NULL;
        m->name = NULL;
        m->template_path = base->template_path ? str_dup(base->template_path) : NULL;
        m->scoring = str_dup(base->scoring);
        m->sweep = str_dup(base->name);
        m->tm = base->tm;
        m->soft_prompt = base->soft_prompt ? cJSON_Duplicate(base->soft_prompt, 1) : NULL;
        m->optimize = base->optimize ? cJSON_Duplicate(base->optimize, 1) : NULL;
        cJSON *point = cJSON_CreateObject();
        int oom = !m->scoring || !m->sweep || (base->template_path && !m->template_path) ||
                  (base->calibration && !m->calibration) || (base->optimize && !m->optimize) ||
                  (base->soft_prompt && !m->soft_prompt) || !point || words_oom ||
                  (base->shot_pick && !m->shot_pick);
        buf_reset(&name);
        oom |= buf_puts(&name, base->name) | buf_putc(&name, '[');
        for (int a = 0; a < nax && !oom; a++) {
            const cJSON *v = cJSON_GetArrayItem(ax[a].values, idx[a]);
            oom |= (a ? buf_putc(&name, ',') : 0) | buf_puts(&name, ax[a].name) | buf_putc(&name, '=') |
                   sweep_value_text(&name, v);
            cJSON *pv = cJSON_Duplicate(v, 1);
            if (!pv || !cJSON_AddItemToObject(point, ax[a].name, pv)) {
                cJSON_Delete(pv);
                oom = 1;
                break;
            }
            if (!strcmp(ax[a].name, "shots")) {
                m->shots = (int)v->valuedouble;
            } else if (!m->soft_prompt && !strcmp(ax[a].name, "train_limit")) {
                m->train_limit = (long)v->valuedouble;
            } else if (!strcmp(ax[a].name, "calibration")) {
                free(m->calibration);
                oom |= !(m->calibration = str_dup(v->valuestring));
            } else if (!m->soft_prompt && !strcmp(ax[a].name, "shot_pick")) {
                free(m->shot_pick);
                oom |= !(m->shot_pick = str_dup(v->valuestring));
            } else {
                cJSON *sv = cJSON_Duplicate(v, 1);
                cJSON_DeleteItemFromObjectCaseSensitive(m->soft_prompt, ax[a].name);
                if (!sv || !cJSON_AddItemToObject(m->soft_prompt, ax[a].name, sv)) {
                    cJSON_Delete(sv);
                    oom = 1;
                }
            }
        }
        oom |= buf_putc(&name, ']');
        if (!oom) {
            m->name = str_dup(name.data);
            m->sweep_point = cJSON_PrintUnformatted(point);
            /* cJSON allocates with malloc unless hooks say otherwise; free() is right here. */
            oom = !m->name || !m->sweep_point;
        }
        cJSON_Delete(point);
        if (oom)
            rc = err_set(x->e, PWB_ENOMEM, "out of memory");
        else
            rc = method_name_unique(s, x, where);
        if (!rc && m->optimize)
            rc = parse_optimize(x, m, where);
        if (!rc && m->soft_prompt) {
            char pw[160];
            snprintf(pw, sizeof pw, "%s (point %.80s).%s", where, m->name, m->tm->key);
            rc = tune_settings_parse(m->tm, m->soft_prompt, x->path, pw, &m->soft, x->e);
            if (!rc)
                m->train_limit = m->soft.train_limit > 0 ? m->soft.train_limit : -1;
        }
    }
    buf_free(&name);
    return rc;
}

static int opt_strings(sctx *x, const cJSON *o, const char *key, const char *where, const char **out, int *n)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    *n = 0;
    if (!a || cJSON_IsNull(a))
        return PWB_OK;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) > SUITE_OPT_MAX_LIST)
        return err_set(x->e, PWB_EINVAL, "%s: %s.%s must be an array of at most %d strings", x->path, where, key,
                       SUITE_OPT_MAX_LIST);
    const cJSON *v;
    cJSON_ArrayForEach(v, a)
    {
        if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) > 4096)
            return err_set(x->e, PWB_EINVAL, "%s: %s.%s[%d] must be a non-empty string (at most 4096 bytes)",
                           x->path, where, key, *n);
        out[(*n)++] = v->valuestring;
    }
    return PWB_OK;
}

/* Validates a method's "optimize" object into m->opt (strings point into m->optimize). */
static int parse_optimize(sctx *x, suite_method *m, const char *where)
{
    static const char *const keys[] = {"templates", "instructions", "demo_sets", "heldout", "max_evals", "propose",
                                       "bootstrap_tries", NULL};
    char w[80];
    snprintf(w, sizeof w, "%s.optimize", where);
    const cJSON *o = m->optimize;
    if (!cJSON_IsObject(o))
        return err_set(x->e, PWB_EINVAL, "%s: %s must be an object", x->path, w);
    int rc = keys_ok(x, o, keys, w);
    if (!rc)
        rc = opt_strings(x, o, "templates", w, m->opt.templates, &m->opt.n_templates);
    if (!rc)
        rc = opt_strings(x, o, "instructions", w, m->opt.instructions, &m->opt.n_instructions);
    double sets = 3, held = 100, evals = 0, propose = 0, tries = 0;
    if (!rc)
        rc = get_num(x, o, "demo_sets", w, 1, 64, 1, &sets);
    if (!rc)
        rc = get_num(x, o, "propose", w, 0, SUITE_OPT_MAX_LIST - m->opt.n_instructions, 1, &propose);
    if (!rc)
        rc = get_num(x, o, "heldout", w, 2, 100000, 1, &held);
    if (!rc)
        rc = get_num(x, o, "max_evals", w, 0, 1e9, 1, &evals);
    if (!rc)
        rc = get_num(x, o, "bootstrap_tries", w, 0, 100000, 1, &tries);
    if (rc)
        return rc;
    m->opt.bootstrap_tries = (long)tries;
    m->opt.demo_sets = (int)sets;
    m->opt.propose = (int)propose;
    m->opt.heldout = (long)held;
    m->opt.max_evals = (long)evals;
    if (m->soft_prompt)
        return err_set(x->e, PWB_EINVAL, "%s: %s: a soft prompt is trained, not searched", x->path, where);
    if (strcmp(m->scoring, "rank"))
        return err_set(x->e, PWB_EINVAL, "%s: %s: prompt search scores candidates by rank: give \"scoring\": \"rank\"",
                       x->path, where);
    if (m->train_limit < 0)
        return err_set(x->e, PWB_EINVAL, "%s: %s: prompt search needs a train_limit (the labelled rows it may read)",
                       x->path, where);
    if (m->train_limit < 2 * m->opt.heldout && m->train_limit < m->opt.heldout + 8)
        return err_set(x->e, PWB_EINVAL, "%s: %s: train_limit %ld leaves too few rows beside %ld held out", x->path,
                       where, m->train_limit, m->opt.heldout);
    return PWB_OK;
}

/* A model id sent to a server: no control characters. */
static int id_printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* "label_words": a list of non-empty strings, one per label of the card (checked per dataset). */
static int get_words(sctx *x, const cJSON *it, const char *where, suite_method *m)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "label_words");
    if (!v || cJSON_IsNull(v))
        return PWB_OK;
    int n = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || n < 1 || n > 1000)
        return err_set(x->e, PWB_EINVAL, "%s: %s.label_words must be a list of words, one per label", x->path, where);
    if (!(m->label_words = calloc((size_t)n, sizeof *m->label_words)))
        return err_set(x->e, PWB_ENOMEM, "out of memory");
    const cJSON *w;
    cJSON_ArrayForEach(w, v)
    {
        if (!cJSON_IsString(w) || !w->valuestring[0] || strlen(w->valuestring) > 256)
            return err_set(x->e, PWB_EINVAL, "%s: %s.label_words[%d] must be a non-empty string", x->path, where,
                           m->n_label_words);
        if (!(m->label_words[m->n_label_words++] = str_dup(w->valuestring)))
            return err_set(x->e, PWB_ENOMEM, "out of memory");
    }
    return PWB_OK;
}

static int parse_methods(pwb_suite *s, sctx *x, const cJSON *j)
{
    static const char *const keys[] = {"name",        "template",    "scoring", "shots",    "limit", "soft_prompt", "lora",
                                       "prefix",      "calibration", "train_limit", "sweep", "optimize",
                                       "served_model", "shot_pick", "shots_as_turns", "label_words", NULL};
    int n, rc = PWB_OK;
    const cJSON *a = get_array(x, j, "methods", &n, &rc);
    if (!a)
        return rc;
    int cap = 0;
    if ((rc = methods_grow(s, x, &cap, n)))
        return rc;
    const cJSON *it;
    int index = 0;
    cJSON_ArrayForEach(it, a)
    {
        char where[48];
        snprintf(where, sizeof where, "methods[%d]", index++);
        if ((rc = methods_grow(s, x, &cap, 1)))
            return rc;
        suite_method *m = &s->methods[s->n_methods++];
        m->shots = -1;
        if (!cJSON_IsObject(it))
            return err_set(x->e, PWB_EINVAL, "%s: %s must be an object", x->path, where);
        if ((rc = keys_ok(x, it, keys, where)) || (rc = get_str(x, it, "name", where, 1, &m->name)) ||
            (rc = get_str(x, it, "template", where, 0, &m->template_path)) ||
            (rc = get_str(x, it, "scoring", where, 0, &m->scoring)))
            return rc;
        if (!ident_ok(m->name))
            return err_set(x->e, PWB_EINVAL, "%s: %s.name '%s': use letters, digits, '_', '-', '.'", x->path, where,
                           m->name);
        /* at most one tuning method: "soft_prompt", "lora" or "prefix" (tune_methods[]) */
        const cJSON *sp = NULL;
        for (int k = 0; tune_methods[k]; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, tune_methods[k]->key);
            if (!v || cJSON_IsNull(v))
                continue;
            if (sp)
                return err_set(x->e, PWB_EINVAL, "%s: %s has both %s and %s", x->path, where, m->tm->key,
                               tune_methods[k]->key);
            sp = v;
            m->tm = tune_methods[k];
        }
        const int soft = sp != NULL;
        /* a soft prompt is trained for the label's tokens: rank them unless told otherwise */
        if (!m->scoring && !(m->scoring = str_dup(soft ? "rank" : "generate")))
            return err_set(x->e, PWB_ENOMEM, "out of memory");
        if (strcmp(m->scoring, "generate") && strcmp(m->scoring, "rank"))
            return err_set(x->e, PWB_EINVAL, "%s: %s.scoring must be \"generate\" or \"rank\", not \"%s\"", x->path,
                           where, m->scoring);
        double shots = -1;
        if ((rc = get_num(x, it, "shots", where, -1, 64, 1, &shots)))
            return rc;
        m->shots = (int)shots;
        if ((rc = get_str(x, it, "shot_pick", where, 0, &m->shot_pick)))
            return rc;
        if (m->shot_pick && template_shot_pick_parse(m->shot_pick) < 0)
            return err_set(x->e, PWB_EINVAL, "%s: %s.shot_pick must be \"first\", \"random\", \"balanced\" or "
                           "\"similar\", not \"%s\"", x->path, where, m->shot_pick);
        m->shots_as_turns = -1;
        if ((rc = get_bool(x, it, "shots_as_turns", where, &m->shots_as_turns)))
            return rc;
        if ((rc = get_words(x, it, where, m)))
            return rc;
        double limit = 0;
        if ((rc = get_num(x, it, "limit", where, 0, 1e9, 1, &limit)))
            return rc;
        m->limit = (long)limit;
        if ((rc = get_str(x, it, "calibration", where, 0, &m->calibration)))
            return rc;
        if (m->calibration && calib_kind_parse(m->calibration) < 0)
            return err_set(x->e, PWB_EINVAL, "%s: %s.calibration must be \"none\", \"contextual\" or \"pmi\", not \"%s\"",
                           x->path, where, m->calibration);
        if (m->calibration && strcmp(m->scoring, "rank") && strcmp(m->calibration, "none"))
            return err_set(x->e, PWB_EINVAL, "%s: %s.calibration corrects rank scores: give \"scoring\": \"rank\"",
                           x->path, where);
        if (soft && m->calibration && strcmp(m->calibration, "none"))
            return err_set(x->e, PWB_EINVAL, "%s: %s.calibration: soft prompts are scored uncalibrated", x->path,
                           where);
        double budget = -1;
        if ((rc = get_num(x, it, "train_limit", where, 0, 1e8, 1, &budget)))
            return rc;
        m->train_limit = (long)budget;
        if (soft) {
            char sw[80];
            snprintf(sw, sizeof sw, "%s.%s", where, m->tm->key);
            if (!cJSON_IsObject(sp))
                return err_set(x->e, PWB_EINVAL, "%s: %s must be an object", x->path, sw);
            if (!(m->soft_prompt = cJSON_Duplicate(sp, 1)))
                return err_set(x->e, PWB_ENOMEM, "out of memory");
            /* the method's budget is the soft prompt's training limit (one number for every arm) */
            if (m->train_limit >= 0) {
                if (cJSON_GetObjectItemCaseSensitive(m->soft_prompt, "train_limit"))
                    return err_set(x->e, PWB_EINVAL, "%s: %s: give train_limit or %s.train_limit, not both",
                                   x->path, where, m->tm->key);
                cJSON *tl = cJSON_CreateNumber((double)m->train_limit);
                if (!tl || !cJSON_AddItemToObject(m->soft_prompt, "train_limit", tl)) {
                    cJSON_Delete(tl);
                    return err_set(x->e, PWB_ENOMEM, "out of memory");
                }
            }
            if ((rc = tune_settings_parse(m->tm, m->soft_prompt, x->path, sw, &m->soft, x->e)))
                return rc;
            m->train_limit = m->soft.train_limit > 0 ? m->soft.train_limit : -1;
        }
        if (!m->template_path && !m->soft_prompt)
            return err_set(x->e, PWB_EINVAL, "%s: %s needs a template or a soft_prompt", x->path, where);
        /* a trained prompt reads the card's own label words (its shots may be set like a hard prompt's) */
        if (soft && m->label_words)
            return err_set(x->e, PWB_EINVAL, "%s: %s: label_words are for hard prompts", x->path, where);
        const cJSON *op = cJSON_GetObjectItemCaseSensitive(it, "optimize");
        const cJSON *swp = cJSON_GetObjectItemCaseSensitive(it, "sweep");
        if ((rc = get_str(x, it, "served_model", where, 0, &m->served_model)))
            return rc;
        if (m->served_model && (strlen(m->served_model) > 256 || !id_printable(m->served_model)))
            return err_set(x->e, PWB_EINVAL, "%s: %s.served_model: a model id of at most 256 printable characters",
                           x->path, where);
        if (m->served_model && ((swp && !cJSON_IsNull(swp)) || (op && !cJSON_IsNull(op))))
            return err_set(x->e, PWB_EINVAL,
                           "%s: %s.served_model names one served adapter; a %s makes many methods of this one",
                           x->path, where, swp && !cJSON_IsNull(swp) ? "sweep" : "prompt search");
        const int budget_swept = swp && cJSON_GetObjectItemCaseSensitive(swp, "train_limit");
        if (op && !cJSON_IsNull(op)) {
            if (!(m->optimize = cJSON_Duplicate(op, 1)))
                return err_set(x->e, PWB_ENOMEM, "out of memory");
            if (budget_swept && m->train_limit < 0)
                m->train_limit = 0x7fffffff; /* checked again per point */
            if ((rc = parse_optimize(x, m, where)))
                return rc;
            if (budget_swept)
                m->train_limit = -1;
        }
        if ((rc = method_name_unique(s, x, where)))
            return rc;
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(it, "sweep");
        if (!sw || cJSON_IsNull(sw))
            continue;
        sweep_axis ax[SUITE_MAX_SWEEP_AXES];
        int nax = 0;
        long points = 0;
        if ((rc = sweep_check(x, sw, m, where, ax, &nax, &points)))
            return rc;
        /* The written method becomes its grid: take it out of the list, expand, free it. */
        suite_method base = *m;
        memset(m, 0, sizeof *m);
        s->n_methods--;
        rc = sweep_expand(s, x, &base, ax, nax, points, &cap, where);
        method_free(&base);
        if (rc)
            return rc;
    }
    return PWB_OK;
}

int suite_parse(pwb_suite *s, const char *text, size_t n, const char *path, pwb_err *e)
{
    suite_free(s);
    s->path = str_dup(path ? path : "suite");
    if (!s->path)
        return err_set(e, PWB_ENOMEM, "out of memory");
    sctx x = {s->path, e, text, n};
    s->json = json_parse(text, n, s->path, e);
    if (!s->json)
        return e ? e->code : PWB_EPARSE;
    const cJSON *j = s->json;
    int rc;
    static const char *const keys[] = {"name", "seed", "description", "datasets", "models", "methods", NULL};
    if (!cJSON_IsObject(j))
        return err_set(e, PWB_EINVAL, "%s: a suite is a JSON object", s->path);
    if ((rc = keys_ok(&x, j, keys, "")) || (rc = get_str(&x, j, "name", "suite", 1, &s->name)))
        return rc;
    double seed = 0;
    if ((rc = get_num(&x, j, "seed", "", 0, 9007199254740991.0, 1, &seed)))
        return rc;
    s->seed = (uint64_t)seed;
    if ((rc = parse_datasets(s, &x, j)) || (rc = parse_models(s, &x, j)) || (rc = parse_methods(s, &x, j)))
        return rc;
    for (int i = 0; i < s->n_datasets; i++)
        if (s->datasets[i].shot_split)
            s->datasets[i].shot_line = split_line(&x, "shot_split", s->datasets[i].shot_split);
    for (int i = 0; i < s->n_methods; i++)
        if (s->methods[i].soft.train_split)
            s->methods[i].train_line = split_line(&x, "train_split", s->methods[i].soft.train_split);
    char *min = cJSON_PrintUnformatted(j);
    if (!min)
        return err_set(e, PWB_ENOMEM, "out of memory");
    char hex[65];
    sha256_hex(min, strlen(min), hex);
    free(min);
    if (!(s->sha256 = str_dup(hex)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    return PWB_OK;
}

int suite_load(pwb_suite *s, const char *path, pwb_err *e)
{
    pwb_buf b;
    buf_init(&b);
    int rc = file_read_all(path, SUITE_MAX_BYTES, &b, e);
    if (!rc)
        rc = suite_parse(s, b.data, b.len, path, e);
    else
        suite_free(s);
    buf_free(&b);
    if (rc) {
        pwb_err keep;
        if (e)
            keep = *e;
        suite_free(s);
        if (e)
            *e = keep;
    }
    return rc;
}

int suite_resolve_template(const pwb_suite *s, const suite_method *m, const char *template_dirs, pwb_buf *out,
                           pwb_err *e)
{
    if (!m->template_path)
        return err_set(e, PWB_EINVAL, "%s: method '%s' has no template", s->path, m->name);
    pwb_buf dir, name;
    buf_init(&dir);
    buf_init(&name);
    file_dirname(s->path ? s->path : ".", &dir);
    int rc = file_resolve(m->template_path, dir.data, template_dirs, out, NULL);
    if (rc && !strchr(m->template_path, '.')) { /* "few-shot" means templates/few-shot.tmpl */
        buf_printf(&name, "%s.tmpl", m->template_path);
        rc = file_resolve(name.data, dir.data, template_dirs, out, NULL);
    }
    char near[128] = "";
    if (rc && catalog_closest_template(m->template_path, template_dirs, near, sizeof near))
        rc = err_set(e, PWB_EIO, "%s: method '%s': template '%s' not found (did you mean '%s'?)", s->path, m->name,
                     m->template_path, near);
    else if (rc)
        rc = err_set(e, PWB_EIO, "%s: method '%s': template '%s' not found (looked beside the suite and in %s)",
                     s->path, m->name, m->template_path, template_dirs && template_dirs[0] ? template_dirs : "nothing");
    buf_free(&dir);
    buf_free(&name);
    return rc;
}
