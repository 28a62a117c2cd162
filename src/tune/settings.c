/* Tuning methods' settings: one table of fields per method (settings.h). */
#include "tune/settings.h"

#include <math.h>
#include <string.h>

#include "engine/lora.h"
#include "tune/optim.h"
#include "tune/softprompt.h"
#include "util/json.h"
#include "util/str.h"

/* ---- soft prompts ---------------------------------------------------------------------------- */

static const char *const g_inits[] = {"random", "vocab", "class", "text", NULL};
static const char *const g_optimizers[] = {"adafactor", "adamw", NULL};

#define SOFT_NUM(key, type, lo, hi, unset) {#key, type, offsetof(soft_settings, key), lo, hi, unset, NULL, NULL}

/* What every method's loop takes. */
#define LOOP_FIELDS                                                                                           \
    SOFT_NUM(steps, TF_LONG, 0, 1e8, 0), SOFT_NUM(epochs, TF_DOUBLE, 1e-6, 1e6, 0),                             \
        SOFT_NUM(batch, TF_INT, 1, 1024, 0),                                                                  \
        {"optimizer", TF_STR, offsetof(soft_settings, optimizer), 0, 0, 0, g_optimizers, "adafactor or adamw"}, \
        SOFT_NUM(lr, TF_DOUBLE, 1e-12, 1e3, 1), SOFT_NUM(weight_decay, TF_DOUBLE, 0, 1e3, 1),                   \
        SOFT_NUM(warmup, TF_LONG, 0, 1e8, 0), SOFT_NUM(clip, TF_DOUBLE, 0, 1e6, 1),                            \
        SOFT_NUM(seed, TF_U64, 0, 9007199254740991.0, 0), SOFT_NUM(train_limit, TF_LONG, 0, 1e8, 0),            \
        SOFT_NUM(eval_n, TF_INT, 0, 1e6, 0), SOFT_NUM(eval_every, TF_LONG, 0, 1e8, 0),                          \
        SOFT_NUM(patience, TF_INT, 0, 1e6, 0),                                                                \
        {"train_split", TF_STR, offsetof(soft_settings, train_split), 0, 0, 0, NULL, NULL},                     \
        {"exact", TF_BOOL, offsetof(soft_settings, exact), 0, 1, 0, NULL, NULL},                                \
        {"scale_parameter", TF_BOOL, offsetof(soft_settings, scale_parameter), 0, 1, 0, NULL, NULL}

/* Virtual positions and their start: soft prompts and prefixes. */
#define TOKEN_FIELDS                                                                                          \
    SOFT_NUM(tokens, TF_INT, 1, SOFTPROMPT_MAX_TOKENS, 0),                                                    \
        {"init", TF_STR, offsetof(soft_settings, init), 0, 0, 0, g_inits, "random, vocab, class or text"},      \
        {"init_text", TF_STR, offsetof(soft_settings, init_text), 0, 0, 0, NULL, NULL}

static const tune_field g_soft_fields[] = {TOKEN_FIELDS, LOOP_FIELDS};

static const tune_field g_prefix_fields[] = {
    TOKEN_FIELDS, LOOP_FIELDS,
    {"prefix_projection", TF_BOOL, offsetof(soft_settings, prefix_projection), 0, 1, 0, NULL, NULL},
    SOFT_NUM(encoder_hidden_size, TF_INT, 0, 65536, 0),
};

static const tune_field g_lora_fields[] = {
    LOOP_FIELDS,
    SOFT_NUM(r, TF_INT, 1, LORA_MAX_RANK, 0),
    SOFT_NUM(alpha, TF_DOUBLE, 1e-6, 1e6, 0),
    SOFT_NUM(dropout, TF_DOUBLE, 0, 0.99, 0),
    {"targets", TF_STR, offsetof(soft_settings, targets), 0, 0, 0, NULL, NULL},
};

void soft_settings_defaults(soft_settings *s)
{
    memset(s, 0, sizeof *s);
    s->tokens = 20;
    s->init = "class";
    s->epochs = 1.0;
    s->batch = 8;
    s->optimizer = "adafactor";
    s->lr = -1;
    s->weight_decay = -1;
    s->clip = -1;
    s->seed = 1;
    s->eval_n = 200;
    s->eval_every = 50;
    s->method = "prompt";
    s->r = 8;
    s->alpha = 16;
    s->dropout = 0.05;
    s->targets = "q,v";
}

static void soft_defaults(void *s) { soft_settings_defaults(s); }

static void lora_defaults(void *v)
{
    soft_settings *s = v;
    soft_settings_defaults(s);
    s->method = "lora";
    s->optimizer = "adamw";
}

static void prefix_defaults(void *v)
{
    soft_settings *s = v;
    soft_settings_defaults(s);
    s->method = "prefix";
    s->optimizer = "adamw";
}

/* What every method checks: scale_parameter is Adafactor's. */
static int loop_check(const soft_settings *s, const char *path, const char *where, pwb_err *e)
{
    if (s->scale_parameter && s->optimizer && strcmp(s->optimizer, "adafactor") != 0)
        return err_set(e, PWB_EINVAL, "%s%s%s%sscale_parameter is an Adafactor setting (optimizer is %s)",
                       path ? path : "", path ? ": " : "", where, where[0] ? "." : "", s->optimizer);
    return PWB_OK;
}

static int soft_check(const void *v, const char *path, const char *where, pwb_err *e)
{
    const soft_settings *s = v;
    int rc = loop_check(s, path, where, e);
    if (rc)
        return rc;
    if (!strcmp(s->init, "text") && (!s->init_text || !s->init_text[0]))
        return err_set(e, PWB_EINVAL, "%s%s%s%sinit_text is required with init \"text\"", path ? path : "",
                       path ? ": " : "", where, where[0] ? "." : "");
    return PWB_OK;
}

static int prefix_check(const void *v, const char *path, const char *where, pwb_err *e)
{
    const soft_settings *s = v;
    if (s->encoder_hidden_size > 0 && !s->prefix_projection)
        return err_set(e, PWB_EINVAL, "%s%s%s%sencoder_hidden_size is the size of the prefix projection: set "
                       "prefix_projection too", path ? path : "", path ? ": " : "", where, where[0] ? "." : "");
    return soft_check(v, path, where, e);
}

static int lora_check(const void *v, const char *path, const char *where, pwb_err *e)
{
    const soft_settings *s = v;
    int rc = loop_check(s, path, where, e);
    if (rc)
        return rc;
    if (!lora_targets_parse(s->targets))
        return err_set(e, PWB_EINVAL, "%s%s%s%stargets '%.64s' is not a list of q, k, v, o, gate, up, down",
                       path ? path : "", path ? ": " : "", where, where[0] ? "." : "", s->targets ? s->targets : "");
    return PWB_OK;
}

#define N_OF(a) ((int)(sizeof a / sizeof a[0]))
const tune_method tune_soft_method = {"soft_prompt", g_soft_fields, N_OF(g_soft_fields), soft_defaults, soft_check};
const tune_method tune_lora_method = {"lora", g_lora_fields, N_OF(g_lora_fields), lora_defaults, lora_check};
const tune_method tune_prefix_method = {"prefix", g_prefix_fields, N_OF(g_prefix_fields), prefix_defaults, prefix_check};

const tune_method *const tune_methods[] = {&tune_soft_method, &tune_lora_method, &tune_prefix_method, NULL};

const tune_method *soft_settings_method(const soft_settings *s)
{
    const char *m = s->method ? s->method : "prompt";
    return !strcmp(m, "lora") ? &tune_lora_method : !strcmp(m, "prefix") ? &tune_prefix_method : &tune_soft_method;
}

int soft_settings_config(const soft_settings *s, tune_config *c, pwb_err *e)
{
    tune_config_default(c);
    const tune_method *m = soft_settings_method(s);
    int rc = tune_settings_check(m, s, m == &tune_soft_method ? "soft prompt" : m->key, "", e);
    if (rc)
        return rc;
    c->method.kind = tune_method_parse(s->method ? s->method : "prompt");
    if (c->method.kind == TUNE_LORA) {
        c->method.lora_r = s->r;
        c->method.lora_alpha = s->alpha;
        c->method.lora_dropout = s->dropout;
        c->method.lora_targets = lora_targets_parse(s->targets);
    }
    if (c->method.kind == TUNE_PREFIX && s->prefix_projection)
        c->method.prefix_hidden = s->encoder_hidden_size > 0 ? s->encoder_hidden_size : -1;
    const int init = softprompt_init_parse(s->init);
    const int kind = optim_parse_kind(s->optimizer);
    c->n_tokens = s->tokens;
    c->init = init;
    c->init_text = init == SP_INIT_TEXT ? s->init_text : NULL;
    c->steps = s->steps;
    c->epochs = s->epochs;
    c->batch = s->batch;
    c->seed = s->seed;
    c->train_limit = s->train_limit;
    c->eval_n = s->eval_n;
    c->eval_every = s->eval_every;
    c->patience = s->patience;
    c->exact = s->exact;
    optim_config_default(&c->opt, kind);
    if (s->lr >= 0)
        c->opt.lr = s->lr;
    if (s->weight_decay >= 0)
        c->opt.weight_decay = s->weight_decay;
    if (s->clip >= 0)
        c->opt.grad_clip_norm = s->clip;
    c->opt.scale_parameter = s->scale_parameter;
    if (s->warmup > 0) {
        c->opt.schedule = SCHED_WARMUP_LINEAR;
        c->opt.warmup_steps = s->warmup;
    }
    return PWB_OK;
}

/* ---- any method ------------------------------------------------------------------------------ */

const tune_field *tune_field_find(const tune_method *m, const char *key)
{
    for (int i = 0; i < m->n_fields; i++)
        if (!strcmp(m->fields[i].key, key))
            return &m->fields[i];
    return NULL;
}

static double num_get(const tune_field *f, const void *s)
{
    const char *p = (const char *)s + f->offset;
    switch (f->type) {
    case TF_INT:
    case TF_BOOL:
        return *(const int *)p;
    case TF_LONG:
        return (double)*(const long *)p;
    case TF_U64:
        return (double)*(const uint64_t *)p;
    default:
        return *(const double *)p;
    }
}

static void num_put(const tune_field *f, void *s, double v)
{
    char *p = (char *)s + f->offset;
    switch (f->type) {
    case TF_INT:
    case TF_BOOL:
        *(int *)p = (int)v;
        break;
    case TF_LONG:
        *(long *)p = (long)v;
        break;
    case TF_U64:
        *(uint64_t *)p = (uint64_t)v;
        break;
    default:
        *(double *)p = v;
    }
}

static const char **str_at(const tune_field *f, void *s) { return (const char **)(void *)((char *)s + f->offset); }

static int is_integer(const tune_field *f) { return f->type == TF_INT || f->type == TF_LONG || f->type == TF_U64; }

static int num_ok(const tune_field *f, double v)
{
    return isfinite(v) && v >= f->lo && v <= f->hi && (!is_integer(f) || v == floor(v));
}

static int in_choices(const tune_field *f, const char *v)
{
    if (!f->choices)
        return 1;
    for (int i = 0; f->choices[i]; i++)
        if (!strcmp(f->choices[i], v))
            return 1;
    return 0;
}

/* "<path>: <where>." before a field's message (either may be absent). */
static int prefixed(pwb_err *e, const char *path, const char *where)
{
    return err_prefix(e, "%s%s%s%s", path ? path : "", path ? ": " : "", where, where[0] ? "." : "");
}

static int bad_num(const tune_field *f, pwb_err *e)
{
    return err_set(e, PWB_EINVAL, "%s must be %s from %g to %g", f->key, is_integer(f) ? "an integer" : "a number",
                   f->lo, f->hi);
}

/* One value of object o (absent or null: the default stays). */
static int parse_field(const tune_field *f, const cJSON *o, void *s, pwb_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f->key);
    if (!v || cJSON_IsNull(v))
        return PWB_OK;
    if (f->type == TF_STR) {
        if (!cJSON_IsString(v) || !v->valuestring[0])
            return err_set(e, PWB_EINVAL, "%s must be a non-empty string", f->key);
        if (!in_choices(f, v->valuestring))
            return err_set(e, PWB_EINVAL, "%s '%.64s' is not %s", f->key, v->valuestring, f->choices_text);
        *str_at(f, s) = v->valuestring;
        return PWB_OK;
    }
    if (f->type == TF_BOOL) {
        if (cJSON_IsBool(v))
            num_put(f, s, cJSON_IsTrue(v));
        else if (cJSON_IsNumber(v) && (v->valuedouble == 0 || v->valuedouble == 1))
            num_put(f, s, v->valuedouble);
        else
            return err_set(e, PWB_EINVAL, "%s must be true or false", f->key);
        return PWB_OK;
    }
    if (!cJSON_IsNumber(v) || !num_ok(f, v->valuedouble))
        return bad_num(f, e);
    num_put(f, s, v->valuedouble);
    return PWB_OK;
}

int tune_settings_parse(const tune_method *m, const cJSON *o, const char *path, const char *where, void *s,
                        pwb_err *e)
{
    m->defaults(s);
    if (!cJSON_IsObject(o))
        return err_set(e, PWB_EINVAL, "%s%s%s must be an object", path ? path : "", path ? ": " : "", where);
    const cJSON *it;
    cJSON_ArrayForEach(it, o)
    {
        const char *k = it->string ? it->string : "";
        if (!json_key_is_comment(k) && !tune_field_find(m, k)) {
            err_set(e, PWB_EINVAL, "unknown field '%s'", k);
            return prefixed(e, path, where);
        }
    }
    for (int i = 0; i < m->n_fields; i++)
        if (parse_field(&m->fields[i], o, s, e))
            return prefixed(e, path, where);
    return m->check ? m->check(s, path, where, e) : PWB_OK;
}

int tune_settings_set(const tune_method *m, void *s, const char *key, const char *text, pwb_err *e)
{
    const tune_field *f = tune_field_find(m, key);
    if (!f)
        return err_set(e, PWB_EINVAL, "'%s' is not a %s setting", key, m->key);
    if (f->type == TF_STR) {
        if (!text[0])
            return err_set(e, PWB_EINVAL, "expected a non-empty value");
        if (!in_choices(f, text))
            return err_set(e, PWB_EINVAL, "'%.64s' is not %s", text, f->choices_text);
        *str_at(f, s) = text;
        return PWB_OK;
    }
    if (f->type == TF_BOOL) {
        int b = !strcmp(text, "1") || !strcmp(text, "true");
        if (!b && strcmp(text, "0") != 0 && strcmp(text, "false") != 0)
            return err_set(e, PWB_EINVAL, "expected true or false, got '%.64s'", text);
        num_put(f, s, b);
        return PWB_OK;
    }
    double v;
    if (str_to_double(text, &v) || !num_ok(f, v))
        return err_set(e, PWB_EINVAL, "expected %s from %g to %g, got '%.64s'",
                       is_integer(f) ? "an integer" : "a number", f->lo, f->hi, text);
    num_put(f, s, v);
    return PWB_OK;
}

int tune_settings_check(const tune_method *m, const void *s, const char *path, const char *where, pwb_err *e)
{
    for (int i = 0; i < m->n_fields; i++) {
        const tune_field *f = &m->fields[i];
        if (f->type == TF_STR) {
            const char *v = *str_at(f, (void *)s);
            if (f->choices && (!v || !in_choices(f, v))) {
                err_set(e, PWB_EINVAL, "%s '%.64s' is not %s", f->key, v ? v : "(none)", f->choices_text);
                return prefixed(e, path, where);
            }
        } else if (f->type != TF_BOOL) {
            const double v = num_get(f, s);
            if (!num_ok(f, v) && !(f->unset_below_zero && v < 0)) {
                bad_num(f, e);
                return prefixed(e, path, where);
            }
        }
    }
    return m->check ? m->check(s, path, where, e) : PWB_OK;
}
