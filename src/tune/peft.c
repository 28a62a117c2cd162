#include "tune/peft.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/quant.h"
#include "engine/safetensors.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/json.h"
#include "util/str.h"
#include "tune/method.h"

#define PEFT_TENSOR "prompt_embeddings"
#define PEFT_MAX_TOKENS 100000
#define PEFT_MAX_DIM 65536

void peft_prompt_init(peft_prompt *p) { memset(p, 0, sizeof *p); }

void peft_prompt_free(peft_prompt *p)
{
    free(p->embeddings);
    free(p->init);
    free(p->init_text);
    free(p->base_model);
    peft_prompt_init(p);
}

static int write_json(const char *dir, const char *name, cJSON *c, pwb_err *e)
{
    char *text = c ? cJSON_Print(c) : NULL;
    cJSON_Delete(c);
    if (!text)
        return err_set(e, PWB_ENOMEM, "out of memory");
    pwb_buf path;
    buf_init(&path);
    file_join(&path, dir, name);
    int rc = path.data ? file_write_atomic(path.data, text, strlen(text), e) : err_set(e, PWB_ENOMEM, "out of memory");
    buf_free(&path);
    free(text);
    return rc;
}

static int write_extra(const char *dir, const char *training_json, pwb_err *e)
{
    if (!training_json)
        return PWB_OK;
    pwb_buf path;
    buf_init(&path);
    file_join(&path, dir, "pwb_training.json");
    int rc = file_write_atomic(path.data, training_json, strlen(training_json), e);
    buf_free(&path);
    return rc;
}

static int write_tensors(const char *dir, const pwb_tensor *t, size_t n, pwb_err *e)
{
    const char *meta[] = {"format", "pt"};
    pwb_buf path;
    buf_init(&path);
    file_join(&path, dir, "adapter_model.safetensors");
    int rc = safetensors_write(path.data, t, n, meta, 1, e);
    buf_free(&path);
    return rc;
}

static int write_config(const char *dir, const peft_prompt *p, pwb_err *e)
{
    cJSON *c = cJSON_CreateObject();
    if (!c)
        return err_set(e, PWB_ENOMEM, "out of memory");
    cJSON_AddStringToObject(c, "peft_type", "PROMPT_TUNING");
    cJSON_AddStringToObject(c, "task_type", "CAUSAL_LM");
    cJSON_AddNumberToObject(c, "num_virtual_tokens", (double)p->n_tokens);
    cJSON_AddNumberToObject(c, "token_dim", (double)p->dim);
    cJSON_AddNumberToObject(c, "num_transformer_submodules", 1);
    if (p->num_heads > 0)
        cJSON_AddNumberToObject(c, "num_attention_heads", p->num_heads);
    if (p->num_layers > 0)
        cJSON_AddNumberToObject(c, "num_layers", p->num_layers);
    cJSON_AddStringToObject(c, "prompt_tuning_init", p->init ? p->init : "RANDOM");
    if (p->init_text)
        cJSON_AddStringToObject(c, "prompt_tuning_init_text", p->init_text);
    else
        cJSON_AddNullToObject(c, "prompt_tuning_init_text");
    if (p->base_model)
        cJSON_AddStringToObject(c, "base_model_name_or_path", p->base_model);
    else
        cJSON_AddNullToObject(c, "base_model_name_or_path");
    cJSON_AddNullToObject(c, "tokenizer_name_or_path");
    cJSON_AddBoolToObject(c, "inference_mode", 1);
    cJSON_AddNullToObject(c, "revision");
    return write_json(dir, "adapter_config.json", c, e);
}

static int write_tensor(const char *dir, const peft_prompt *p, pwb_err *e)
{
    pwb_tensor t = {.name = PEFT_TENSOR, .type = DT_F32, .n_dims = 2,
                    .ne = {(int64_t)p->dim, (int64_t)p->n_tokens, 1, 1}, .data = p->embeddings,
                    .nbytes = p->n_tokens * p->dim * sizeof(float)};
    return write_tensors(dir, &t, 1, e);
}

int peft_save(const char *dir, const peft_prompt *p, const char *training_json, pwb_err *e)
{
    if (!p->embeddings || !p->n_tokens || !p->dim)
        return err_set(e, PWB_EINVAL, "%s: empty soft prompt", dir);
    int rc = file_mkdirs(dir, e);
    if (!rc)
        rc = write_tensor(dir, p, e);
    if (!rc)
        rc = write_config(dir, p, e);
    if (!rc)
        rc = write_extra(dir, training_json, e);
    return rc;
}

/* Index of the first NaN or infinity among v[0..n), n when every value is finite: a vector that
 * is not would turn every logit it touches into NaN, so artifacts holding one are refused. */
static size_t first_non_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return i;
    return n;
}

int peft_load(const char *dir, peft_prompt *p, pwb_err *e)
{
    peft_prompt_init(p);
    pwb_buf path;
    buf_init(&path);
    file_join(&path, dir, "adapter_config.json");
    cJSON *c = json_parse_file(path.data, 1 << 20, e);
    if (!c) {
        buf_free(&path);
        return e ? e->code : PWB_EPARSE;
    }
    int rc = PWB_OK;
    const char *type = json_str(c, "peft_type", "");
    double nvt = json_num(c, "num_virtual_tokens", -1), dim = json_num(c, "token_dim", -1);
    if (strcmp(type, "PROMPT_TUNING") != 0)
        rc = err_set(e, PWB_EUNSUP, "%s: peft_type is '%s', not PROMPT_TUNING", path.data, type);
    else if (nvt < 1 || nvt > PEFT_MAX_TOKENS || dim < 1 || dim > PEFT_MAX_DIM)
        rc = err_set(e, PWB_EPARSE, "%s: bad num_virtual_tokens or token_dim", path.data);
    if (!rc) {
        p->n_tokens = (size_t)nvt;
        p->dim = (size_t)dim;
        p->init = str_dup(json_str(c, "prompt_tuning_init", "RANDOM"));
        const char *t = json_str(c, "prompt_tuning_init_text", NULL);
        p->init_text = t ? str_dup(t) : NULL;
        const char *b = json_str(c, "base_model_name_or_path", NULL);
        p->base_model = b ? str_dup(b) : NULL;
        p->num_layers = json_int(c, "num_layers", 0);
        p->num_heads = json_int(c, "num_attention_heads", 0);
    }
    cJSON_Delete(c);
    if (!rc) {
        file_join(&path, dir, "adapter_model.safetensors");
        safetensors_file *st = NULL;
        rc = safetensors_open(&st, path.data, e);
        if (!rc) {
            const pwb_tensor *t = safetensors_find_tensor(st, PEFT_TENSOR);
            if (!t)
                rc = err_set(e, PWB_EPARSE, "%s: no tensor '" PEFT_TENSOR "'", path.data);
            else if (t->n_dims != 2 || (size_t)t->ne[0] != p->dim || (size_t)t->ne[1] != p->n_tokens)
                rc = err_set(e, PWB_EPARSE, "%s: " PEFT_TENSOR " shape does not match [%zu, %zu]", path.data,
                             p->n_tokens, p->dim);
            else if (!(p->embeddings = malloc(p->n_tokens * p->dim * sizeof(float))))
                rc = err_set(e, PWB_ENOMEM, "out of memory");
            else if (dequant_row(t->type, t->data, p->embeddings, (int64_t)(p->n_tokens * p->dim)) != 0)
                rc = err_set(e, PWB_EUNSUP, "%s: " PEFT_TENSOR " has an unsupported dtype", path.data);
            else {
                size_t at = first_non_finite(p->embeddings, p->n_tokens * p->dim);
                if (at < p->n_tokens * p->dim)
                    rc = err_set(e, PWB_EPARSE, "%s: " PEFT_TENSOR " holds a value that is not finite (virtual "
                                 "token %zu, element %zu): the artifact is damaged", path.data, at / p->dim, at % p->dim);
            }
            safetensors_close(st);
        }
    }
    buf_free(&path);
    if (rc)
        peft_prompt_free(p);
    return rc;
}

/* ---- LoRA and prefix tuning ---------------------------------------------------------------- */

#define PEFT_MAX_CONFIG (1 << 20)

/* PEFT's name for a LoRA matrix (which: 'A' or 'B'). */
static void lora_tensor_name(char *out, size_t n, int layer, int mod, char which)
{
    snprintf(out, n, "base_model.model.model.layers.%d.%s.lora_%c.weight", layer, lora_module_peft(mod), which);
}

static void add_common(cJSON *c, const char *type, const char *base_model)
{
    cJSON_AddStringToObject(c, "peft_type", type);
    cJSON_AddStringToObject(c, "task_type", "CAUSAL_LM");
    if (base_model)
        cJSON_AddStringToObject(c, "base_model_name_or_path", base_model);
    else
        cJSON_AddNullToObject(c, "base_model_name_or_path");
    cJSON_AddBoolToObject(c, "inference_mode", 1);
    cJSON_AddNullToObject(c, "revision");
}

int peft_lora_save(const char *dir, const model *m, const lora *l, const char *base_model, const char *training_json,
                   pwb_err *e)
{
    const int nm = (int)(lora_n_params(l) > 0) * l->n_layer * LORA_N_MODULES * 2;
    pwb_tensor *t = calloc((size_t)(nm ? nm : 1), sizeof *t);
    char (*names)[96] = calloc((size_t)(nm ? nm : 1), sizeof *names);
    float **bufs = calloc((size_t)(nm ? nm : 1), sizeof *bufs);
    int rc = t && names && bufs ? PWB_OK : err_set(e, PWB_ENOMEM, "out of memory");
    size_t k = 0;
    for (int layer = 0; rc == PWB_OK && layer < l->n_layer; layer++)
        for (int mod = 0; rc == PWB_OK && mod < LORA_N_MODULES; mod++) {
            const lora_mat *x = lora_at(l, layer, mod);
            if (!x)
                continue;
            lora_tensor_name(names[k], sizeof names[k], layer, mod, 'A');
            t[k] = (pwb_tensor){.name = names[k], .type = DT_F32, .n_dims = 2, .ne = {x->in, l->r, 1, 1},
                                .data = x->a, .nbytes = (size_t)l->r * x->in * sizeof(float)};
            k++;
            /* B's rows in Hugging Face's order */
            const size_t nb = (size_t)x->out * l->r;
            if (!(bufs[k] = malloc(nb * sizeof(float)))) {
                rc = err_set(e, PWB_ENOMEM, "out of memory");
                break;
            }
            memcpy(bufs[k], x->b, nb * sizeof(float));
            if (mod == LORA_Q || mod == LORA_K)
                rc = lora_permute_rows(m, mod == LORA_K, bufs[k], l->r, 1, e);
            lora_tensor_name(names[k], sizeof names[k], layer, mod, 'B');
            t[k] = (pwb_tensor){.name = names[k], .type = DT_F32, .n_dims = 2, .ne = {l->r, x->out, 1, 1},
                                .data = bufs[k], .nbytes = nb * sizeof(float)};
            k++;
        }
    if (rc == PWB_OK)
        rc = file_mkdirs(dir, e);
    if (rc == PWB_OK)
        rc = write_tensors(dir, t, k, e);
    if (rc == PWB_OK) {
        cJSON *c = cJSON_CreateObject(), *tm = cJSON_CreateArray();
        if (c && tm) {
            add_common(c, "LORA", base_model);
            cJSON_AddNumberToObject(c, "r", l->r);
            cJSON_AddNumberToObject(c, "lora_alpha", l->alpha);
            cJSON_AddNumberToObject(c, "lora_dropout", l->dropout);
            for (int mod = 0; mod < LORA_N_MODULES; mod++)
                if (l->targets & (1u << mod))
                    cJSON_AddItemToArray(tm, cJSON_CreateString(strchr(lora_module_peft(mod), '.') + 1));
            cJSON_AddItemToObject(c, "target_modules", tm);
            tm = NULL;
            cJSON_AddStringToObject(c, "bias", "none");
            cJSON_AddBoolToObject(c, "fan_in_fan_out", 0);
            cJSON_AddBoolToObject(c, "init_lora_weights", 1);
            cJSON_AddBoolToObject(c, "use_rslora", 0);
            cJSON_AddBoolToObject(c, "use_dora", 0);
            cJSON_AddNullToObject(c, "modules_to_save");
            cJSON_AddNullToObject(c, "layers_to_transform");
            cJSON_AddItemToObject(c, "rank_pattern", cJSON_CreateObject());
            cJSON_AddItemToObject(c, "alpha_pattern", cJSON_CreateObject());
        }
        cJSON_Delete(tm);
        rc = write_json(dir, "adapter_config.json", c, e);
    }
    if (rc == PWB_OK)
        rc = write_extra(dir, training_json, e);
    for (int i = 0; bufs && i < nm; i++)
        free(bufs[i]);
    free(bufs);
    free(names);
    free(t);
    return rc;
}

static cJSON *read_config(const char *dir, const char *want_type, pwb_err *e)
{
    pwb_buf path;
    buf_init(&path);
    file_join(&path, dir, "adapter_config.json");
    cJSON *c = path.data ? json_parse_file(path.data, PEFT_MAX_CONFIG, e) : NULL;
    if (c && strcmp(json_str(c, "peft_type", ""), want_type) != 0) {
        err_set(e, PWB_EUNSUP, "%s: peft_type is '%s', not %s", path.data, json_str(c, "peft_type", ""), want_type);
        cJSON_Delete(c);
        c = NULL;
    }
    buf_free(&path);
    return c;
}

static int open_tensors(const char *dir, safetensors_file **st, pwb_err *e)
{
    pwb_buf path;
    buf_init(&path);
    file_join(&path, dir, "adapter_model.safetensors");
    int rc = path.data ? safetensors_open(st, path.data, e) : err_set(e, PWB_ENOMEM, "out of memory");
    buf_free(&path);
    return rc;
}

/* F32 copy of a tensor of exactly [rows][cols] (any dtype the reader knows). */
static int tensor_f32(const safetensors_file *st, const char *name, int64_t rows, int64_t cols, float *out, pwb_err *e)
{
    const pwb_tensor *t = safetensors_find_tensor(st, name);
    if (!t)
        return err_set(e, PWB_EPARSE, "%s: no tensor '%s'", st->path, name);
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return err_set(e, PWB_EPARSE, "%s: '%s' is [%lld, %lld], the model needs [%lld, %lld] (made for another model?)",
                       st->path, name, (long long)(t->n_dims == 2 ? t->ne[1] : -1), (long long)t->ne[0],
                       (long long)rows, (long long)cols);
    if (dequant_row(t->type, t->data, out, rows * cols) != 0)
        return err_set(e, PWB_EUNSUP, "%s: '%s' has an unsupported dtype", st->path, name);
    size_t at = first_non_finite(out, (size_t)(rows * cols));
    if (at < (size_t)(rows * cols))
        return err_set(e, PWB_EPARSE, "%s: '%s' holds a value that is not finite (row %zu, column %zu): the artifact "
                       "is damaged", st->path, name, at / (size_t)cols, at % (size_t)cols);
    return PWB_OK;
}

int peft_kind(const char *dir, pwb_err *e)
{
    pwb_buf path;
    buf_init(&path);
    file_join(&path, dir, "adapter_config.json");
    cJSON *c = path.data ? json_parse_file(path.data, PEFT_MAX_CONFIG, e) : NULL;
    buf_free(&path);
    if (!c)
        return -1;
    const char *t = json_str(c, "peft_type", "");
    int k = !strcmp(t, "PROMPT_TUNING") ? TUNE_PROMPT : !strcmp(t, "LORA") ? TUNE_LORA : !strcmp(t, "PREFIX_TUNING") ? TUNE_PREFIX : -1;
    if (k < 0)
        err_set(e, PWB_EUNSUP, "%s: peft_type '%s' is not PROMPT_TUNING, LORA or PREFIX_TUNING", dir, t);
    cJSON_Delete(c);
    return k;
}

int peft_lora_load(const char *dir, const model *m, lora *l, pwb_err *e)
{
    memset(l, 0, sizeof *l);
    cJSON *c = read_config(dir, "LORA", e);
    if (!c)
        return e ? e->code : PWB_EPARSE;
    int rc = PWB_OK;
    const double r = json_num(c, "r", -1), alpha = json_num(c, "lora_alpha", -1);
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(c, "target_modules");
    unsigned targets = 0;
    if (!(r >= 1 && r <= LORA_MAX_RANK && r == (int)r) || !(alpha > 0 && alpha < 1e6))
        rc = err_set(e, PWB_EPARSE, "%s: bad r or lora_alpha", dir);
    else if (json_bool(c, "use_dora", 0) || json_bool(c, "use_rslora", 0) || json_bool(c, "fan_in_fan_out", 0) ||
             strcmp(json_str(c, "bias", "none"), "none") != 0)
        rc = err_set(e, PWB_EUNSUP, "%s: DoRA, rsLoRA, fan_in_fan_out and LoRA biases are not supported", dir);
    else if (cJSON_IsArray(tm) && cJSON_GetArraySize(tm) <= 64) {
        const cJSON *it;
        cJSON_ArrayForEach(it, tm)
        {
            const int mod = cJSON_IsString(it) ? lora_module_parse(it->valuestring) : -1;
            if (mod < 0) {
                rc = err_set(e, PWB_EUNSUP, "%s: target module '%s' is not one of q/k/v/o/gate/up/down_proj", dir,
                             cJSON_IsString(it) ? it->valuestring : "?");
                break;
            }
            targets |= 1u << mod;
        }
    } else {
        rc = err_set(e, PWB_EUNSUP, "%s: target_modules must be a list of module names", dir);
    }
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(c, "rank_pattern"), *ap = cJSON_GetObjectItemCaseSensitive(c, "alpha_pattern");
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(c, "layers_to_transform");
    if (!rc && ((rp && cJSON_GetArraySize(rp) > 0) || (ap && cJSON_GetArraySize(ap) > 0) || (lt && !cJSON_IsNull(lt))))
        rc = err_set(e, PWB_EUNSUP, "%s: rank_pattern, alpha_pattern and layers_to_transform are not supported", dir);
    if (!rc)
        rc = lora_new(l, m, (int)r, (float)alpha, targets, e);
    if (!rc)
        l->dropout = (float)json_num(c, "lora_dropout", 0);
    cJSON_Delete(c);
    safetensors_file *st = NULL;
    if (!rc)
        rc = open_tensors(dir, &st, e);
    char name[128];
    for (int layer = 0; !rc && layer < l->n_layer; layer++)
        for (int mod = 0; !rc && mod < LORA_N_MODULES; mod++) {
            lora_mat *x = lora_at_mut(l, layer, mod);
            if (!x)
                continue;
            lora_tensor_name(name, sizeof name, layer, mod, 'A');
            rc = tensor_f32(st, name, l->r, x->in, x->a, e);
            lora_tensor_name(name, sizeof name, layer, mod, 'B');
            if (!rc)
                rc = tensor_f32(st, name, x->out, l->r, x->b, e);
            if (!rc && (mod == LORA_Q || mod == LORA_K))
                rc = lora_permute_rows(m, mod == LORA_K, x->b, l->r, 0, e);
        }
    /* Every tensor must be one of ours: a file for another model shape or with more modules fails. */
    if (!rc && st->n_tensors != 2 * (size_t)l->n_layer * (size_t)__builtin_popcount(l->targets))
        rc = err_set(e, PWB_EPARSE, "%s: %zu tensors, expected %d layers x %d modules x 2", st->path, st->n_tensors,
                     l->n_layer, __builtin_popcount(l->targets));
    safetensors_close(st);
    if (rc)
        lora_free(l);
    return rc;
}

/* The prefix's keys between pwb's and Hugging Face's order, position by position and layer by layer. */
static int prefix_permute(const model *m, float *kv, int n, int to_hf, pwb_err *e)
{
    const size_t kvd = (size_t)m->hp.n_head_kv * m->hp.head_dim;
    for (int i = 0; i < n; i++)
        for (int l = 0; l < m->hp.n_layer; l++) {
            int rc = lora_permute_rows(m, 1, kv + ((size_t)i * m->hp.n_layer * 2 + 2 * (size_t)l) * kvd, 1, to_hf, e);
            if (rc)
                return rc;
        }
    return PWB_OK;
}

int peft_prefix_save(const char *dir, const model *m, const float *kv, int n, int projection, const char *base_model,
                     const char *training_json, pwb_err *e)
{
    const int kvd = m->hp.n_head_kv * m->hp.head_dim;
    const size_t width = (size_t)m->hp.n_layer * 2 * kvd, nv = (size_t)n * width;
    float *hf = malloc(nv * sizeof *hf);
    if (!hf)
        return err_set(e, PWB_ENOMEM, "out of memory");
    memcpy(hf, kv, nv * sizeof *hf);
    int rc = prefix_permute(m, hf, n, 1, e);
    if (!rc)
        rc = file_mkdirs(dir, e);
    pwb_tensor t = {.name = PEFT_TENSOR, .type = DT_F32, .n_dims = 2, .ne = {(int64_t)width, n, 1, 1}, .data = hf,
                    .nbytes = nv * sizeof(float)};
    if (!rc)
        rc = write_tensors(dir, &t, 1, e);
    if (!rc) {
        /* As PEFT records it after adapting the config to grouped-query attention. */
        cJSON *c = cJSON_CreateObject();
        if (c) {
            add_common(c, "PREFIX_TUNING", base_model);
            cJSON_AddNumberToObject(c, "num_virtual_tokens", n);
            cJSON_AddNumberToObject(c, "token_dim", kvd);
            cJSON_AddNumberToObject(c, "num_transformer_submodules", 1);
            cJSON_AddNumberToObject(c, "num_attention_heads", m->hp.n_head_kv);
            cJSON_AddNumberToObject(c, "num_layers", m->hp.n_layer);
            cJSON_AddNumberToObject(c, "encoder_hidden_size", projection > 0 ? projection : kvd);
            cJSON_AddBoolToObject(c, "prefix_projection", projection > 0);
        }
        rc = write_json(dir, "adapter_config.json", c, e);
    }
    if (!rc)
        rc = write_extra(dir, training_json, e);
    free(hf);
    return rc;
}

int peft_prefix_load(const char *dir, const model *m, float **kv, int *n, pwb_err *e)
{
    *kv = NULL;
    *n = 0;
    cJSON *c = read_config(dir, "PREFIX_TUNING", e);
    if (!c)
        return e ? e->code : PWB_EPARSE;
    const int kvd = m->hp.n_head_kv * m->hp.head_dim;
    const double nvt = json_num(c, "num_virtual_tokens", -1);
    int rc = PWB_OK;
    if (!(nvt >= 1 && nvt <= PEFT_MAX_TOKENS && nvt < m->hp.n_ctx))
        rc = err_set(e, PWB_EPARSE, "%s: bad num_virtual_tokens", dir);
    else if (json_int(c, "num_layers", m->hp.n_layer) != m->hp.n_layer ||
             json_int(c, "num_transformer_submodules", 1) != 1)
        rc = err_set(e, PWB_EINVAL, "%s: made for a model of another shape (num_layers %d)", dir,
                     json_int(c, "num_layers", 0));
    cJSON_Delete(c);
    const size_t width = (size_t)m->hp.n_layer * 2 * kvd;
    safetensors_file *st = NULL;
    if (!rc)
        rc = open_tensors(dir, &st, e);
    if (!rc && !(*kv = malloc((size_t)nvt * width * sizeof(float))))
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    if (!rc)
        rc = tensor_f32(st, PEFT_TENSOR, (int64_t)nvt, (int64_t)width, *kv, e);
    if (!rc)
        rc = prefix_permute(m, *kv, (int)nvt, 0, e);
    safetensors_close(st);
    if (rc) {
        free(*kv);
        *kv = NULL;
        return rc;
    }
    *n = (int)nvt;
    return PWB_OK;
}
