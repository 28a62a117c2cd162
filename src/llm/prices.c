/* The price table: parsing (the file is user-editable, so it is checked like any input), lookup by
 * exact id or longest boundary prefix, and request cost. */
#include "llm/prices.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/file.h"
#include "util/json.h"
#include "util/str.h"

void prices_init(price_table *t) { memset(t, 0, sizeof *t); }

void prices_free(price_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].id);
    free(t->v);
    free(t->as_of);
    memset(t, 0, sizeof *t);
}

static int price_field(const cJSON *o, const char *key, int required, double *out, const char *what,
                       const char *id, pwb_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        if (required)
            return err_set(e, PWB_EINVAL, "%s: models.%.128s: missing number '%s' (USD per million tokens)", what,
                           id, key);
        *out = -1;
        return PWB_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > 1e6)
        return err_set(e, PWB_EINVAL, "%s: models.%.128s.%s must be a number >= 0 (USD per million tokens)", what,
                       id, key);
    *out = v->valuedouble;
    return PWB_OK;
}

int prices_parse(price_table *t, const char *json, size_t n, const char *what, pwb_err *e)
{
    prices_free(t);
    what = what ? what : "prices";
    cJSON *j = json_parse(json, n, what, e);
    if (!j)
        return e ? e->code : PWB_EPARSE;
    int rc = PWB_OK;
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(j, "models");
    if (!cJSON_IsObject(j) || !cJSON_IsObject(models)) {
        rc = err_set(e, PWB_EINVAL, "%s: expected an object with a \"models\" object", what);
        goto out;
    }
    int count = cJSON_GetArraySize(models);
    if (count > PRICES_MAX_MODELS) {
        rc = err_set(e, PWB_ERANGE, "%s: more than %d models", what, PRICES_MAX_MODELS);
        goto out;
    }
    t->v = calloc(count ? (size_t)count : 1, sizeof *t->v);
    const char *asof = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "as_of"));
    t->as_of = asof ? str_ndup(asof, strnlen(asof, 64)) : NULL;
    if (!t->v || (asof && !t->as_of)) {
        rc = err_set(e, PWB_ENOMEM, "%s: out of memory", what);
        goto out;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, models) {
        const char *id = m->string;
        if (!id || id[0] == '_')
            continue;
        if (!*id || strlen(id) > 256) {
            rc = err_set(e, PWB_EINVAL, "%s: models: empty or overlong model id", what);
            goto out;
        }
        if (!cJSON_IsObject(m)) {
            rc = err_set(e, PWB_EINVAL, "%s: models.%.128s must be an object {\"input\", \"output\"}", what, id);
            goto out;
        }
        llm_price p = {.known = 1};
        if ((rc = price_field(m, "input", 1, &p.in_per_m, what, id, e)) ||
            (rc = price_field(m, "output", 1, &p.out_per_m, what, id, e)) ||
            (rc = price_field(m, "cached_input", 0, &p.cached_in_per_m, what, id, e)))
            goto out;
        for (size_t k = 0; k < t->n; k++)
            if (strcmp(t->v[k].id, id) == 0) {
                rc = err_set(e, PWB_EINVAL, "%s: model %.128s is listed twice", what, id);
                goto out;
            }
        if (!(t->v[t->n].id = str_dup(id))) {
            rc = err_set(e, PWB_ENOMEM, "%s: out of memory", what);
            goto out;
        }
        t->v[t->n++].p = p;
    }
out:
    cJSON_Delete(j);
    if (rc)
        prices_free(t);
    return rc;
}

int prices_load(price_table *t, const char *path, pwb_err *e)
{
    pwb_buf b;
    buf_init(&b);
    int rc = file_read_all(path, PRICES_MAX_FILE, &b, e);
    if (!rc)
        rc = prices_parse(t, b.data ? b.data : "", b.len, path, e);
    buf_free(&b);
    return rc;
}

int prices_find(pwb_buf *out, pwb_err *e)
{
    buf_reset(out);
    const char *env = getenv("PWB_PRICES");
    if (env && *env) {
        if (!file_exists(env))
            return err_set(e, PWB_EIO, "PWB_PRICES names %.512s, which does not exist", env);
        return buf_puts(out, env) ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    }
    if (file_exists("prices/prices.json"))
        return buf_puts(out, "prices/prices.json") ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    const char *root = getenv("PWB_ROOT");
    if (root && *root) {
        if (file_join(out, root, "prices/prices.json"))
            return err_set(e, PWB_ENOMEM, "out of memory");
        if (file_exists(out->data))
            return PWB_OK;
        buf_reset(out);
    }
    return err_set(e, PWB_EIO, "no price table: tried $PWB_PRICES, prices/prices.json%s", root && *root ? " and $PWB_ROOT/prices/prices.json" : "");
}

static int boundary(char c) { return c == '-' || c == ':' || c == '@' || c == '/'; }

static const price_entry *lookup_one(const price_table *t, const char *model)
{
    const price_entry *best = NULL;
    size_t best_len = 0, mlen = strlen(model);
    for (size_t i = 0; i < t->n; i++) {
        const char *id = t->v[i].id;
        size_t k = strlen(id);
        if (k == mlen && memcmp(id, model, k) == 0)
            return &t->v[i];
        if (k < mlen && k > best_len && memcmp(id, model, k) == 0 && boundary(model[k])) {
            best = &t->v[i];
            best_len = k;
        }
    }
    return best;
}

int prices_lookup(const price_table *t, const char *model, llm_price *out)
{
    memset(out, 0, sizeof *out);
    if (!t || !model || !*model)
        return 0;
    const price_entry *p = lookup_one(t, model);
    const char *slash = strrchr(model, '/');
    if (!p && slash && slash[1])
        p = lookup_one(t, slash + 1);
    if (!p)
        return 0;
    *out = p->p;
    return 1;
}

int prices_resolve(const price_table *t, const char *model, const llm_price *suite, llm_price *out)
{
    if (suite && suite->known) {
        *out = *suite;
        return 1;
    }
    return prices_lookup(t, model, out);
}

double llm_estimate_cost(const llm_price *p, double tokens_in, double tokens_out, double cached_in)
{
    if (!p || !p->known)
        return 0;
    if (!(tokens_in > 0))
        tokens_in = 0;
    if (!(tokens_out > 0))
        tokens_out = 0;
    if (!(cached_in > 0))
        cached_in = 0;
    if (cached_in > tokens_in)
        cached_in = tokens_in;
    double cached_price = p->cached_in_per_m >= 0 ? p->cached_in_per_m : p->in_per_m;
    return ((tokens_in - cached_in) * p->in_per_m + cached_in * cached_price + tokens_out * p->out_per_m) / 1e6;
}
