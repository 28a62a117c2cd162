#include "tune/peft.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "engine/quant.h"
#include "engine/safetensors.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/json.h"
#include "util/str.h"

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
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    if (!text)
        return err_set(e, PWB_ENOMEM, "out of memory");
    pwb_buf path;
    buf_init(&path);
    file_join(&path, dir, "adapter_config.json");
    int rc = file_write_atomic(path.data, text, strlen(text), e);
    buf_free(&path);
    free(text);
    return rc;
}

static int write_tensor(const char *dir, const peft_prompt *p, pwb_err *e)
{
    pwb_tensor t = {.name = PEFT_TENSOR, .type = DT_F32, .n_dims = 2,
                    .ne = {(int64_t)p->dim, (int64_t)p->n_tokens, 1, 1}, .data = p->embeddings,
                    .nbytes = p->n_tokens * p->dim * sizeof(float)};
    const char *meta[] = {"format", "pt"};
    pwb_buf path;
    buf_init(&path);
    file_join(&path, dir, "adapter_model.safetensors");
    int rc = safetensors_write(path.data, &t, 1, meta, 1, e);
    buf_free(&path);
    return rc;
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
    if (!rc && training_json) {
        pwb_buf path;
        buf_init(&path);
        file_join(&path, dir, "pwb_training.json");
        rc = file_write_atomic(path.data, training_json, strlen(training_json), e);
        buf_free(&path);
    }
    return rc;
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
            safetensors_close(st);
        }
    }
    buf_free(&path);
    if (rc)
        peft_prompt_free(p);
    return rc;
}
