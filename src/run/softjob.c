/* Soft-prompt training jobs (see softjob.h): keys, examples, train-or-reuse, rows. */
#include "run/softjob.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "util/buf.h"
#include "util/file.h"
#include "util/json.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/rng.h"
#include "util/sha256.h"
#include "util/str.h"

#ifndef PWB_VERSION
#define PWB_VERSION "0.1.0"
#endif

#define SOFTJOB_RECORD_MAX (1u << 20)
#define SOFTJOB_MODEL_FILES 4096

void softjob_init(softjob *j) { memset(j, 0, sizeof *j); }

void softjob_free(softjob *j)
{
    if (!j)
        return;
    free(j->idx);
    free(j->dir);
    softprompt_free(&j->prompt);
    tune_adapter_free(&j->adapter);
    if (j->have_ct)
        chat_template_free(&j->ct);
    engine_close(j->en);
    memset(j, 0, sizeof *j);
}

void softjob_close_model(softjob *j)
{
    engine_close(j->en);
    j->en = NULL;
}

/* ---- model identity ------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int softjob_model_sha256(const char *path, char out[65], pwb_err *e)
{
    if (!file_is_dir(path))
        return file_sha256(path, out, e);
    DIR *d = opendir(path);
    if (!d)
        return err_set(e, PWB_EIO, "%s: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0;
    int rc = PWB_OK;
    struct dirent *de;
    while (rc == PWB_OK && (de = readdir(d))) {
        const char *s = de->d_name;
        if (s[0] == '.' || !(str_ends(s, ".json") || str_ends(s, ".safetensors")))
            continue;
        char **nv = n < SOFTJOB_MODEL_FILES ? realloc(names, (n + 1) * sizeof *names) : NULL;
        if (!nv || !(nv[n] = str_dup(s))) {
            if (nv)
                names = nv;
            rc = err_set(e, n < SOFTJOB_MODEL_FILES ? PWB_ENOMEM : PWB_ERANGE, "%s: too many files or out of memory",
                         path);
            break;
        }
        names = nv;
        n++;
    }
    closedir(d);
    if (rc == PWB_OK && n == 0)
        rc = err_set(e, PWB_EINVAL, "%s: no .json or .safetensors files", path);
    if (rc == PWB_OK)
        qsort(names, n, sizeof *names, cmp_str);
    pwb_buf p, all;
    buf_init(&p);
    buf_init(&all);
    for (size_t i = 0; rc == PWB_OK && i < n; i++) {
        char hex[65];
        if (file_join(&p, path, names[i]))
            rc = err_set(e, PWB_ENOMEM, "out of memory");
        else if (!file_is_dir(p.data) && (rc = file_sha256(p.data, hex, e)) == PWB_OK) {
            /* each file's name and digest */
            if (buf_append(&all, names[i], strlen(names[i]) + 1) || buf_append(&all, hex, 64))
                rc = err_set(e, PWB_ENOMEM, "out of memory");
        }
    }
    buf_free(&p);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc == PWB_OK && sha256_hex(all.data ? all.data : "", all.len, out))
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    buf_free(&all);
    return rc;
}

/* ---- examples ------------------------------------------------------------------------------ */

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

size_t softjob_sample(const ds_data *d, long limit, uint64_t seed, size_t **idx)
{
    *idx = NULL;
    size_t *all = malloc((d->n ? d->n : 1) * sizeof *all);
    if (!all)
        return 0;
    size_t n = dataset_sample(d, 0, seed, all), k = 0;
    for (size_t i = 0; i < n; i++)
        if (d->ex[all[i]].label >= 0)
            all[k++] = all[i];
    if (limit > 0 && (size_t)limit < k) {
        /* a seeded choice of `limit` of them, kept in file order */
        pwb_rng r;
        rng_init(&r, seed ^ 0x7e57u);
        rng_shuffle_idx(&r, all, k);
        k = (size_t)limit;
        qsort(all, k, sizeof *all, cmp_size);
    }
    *idx = all;
    return k;
}

void softjob_examples_free(tune_example *ex, size_t n)
{
    for (size_t i = 0; ex && i < n; i++)
        tune_example_free(&ex[i]);
    free(ex);
}

int softjob_encode(const model *m, const chat_template *ct, const pwb_template *tp, const softjob_shots *sh,
                   const char *delim, const ds_card *card, const ds_data *d, const size_t *idx, size_t n,
                   tune_example **out, pwb_err *e)
{
    const int ns = sh && sh->from && tp->shots > 0 ? tp->shots : 0;
    if (ns > TPL_MAX_SHOTS)
        return err_set(e, PWB_ERANGE, "%s: more than %d shots", tp->path, TPL_MAX_SHOTS);
    *out = NULL;
    tune_example *ex = calloc(n ? n : 1, sizeof *ex);
    if (!ex)
        return err_set(e, PWB_ENOMEM, "out of memory");
    int rc = PWB_OK;
    for (size_t i = 0; rc == PWB_OK && i < n; i++) {
        if (idx[i] >= d->n) {
            rc = err_set(e, PWB_ERANGE, "row index %zu outside the split", idx[i]);
            break;
        }
        const ds_example *x = &d->ex[idx[i]];
        const ds_example *shots[TPL_MAX_SHOTS];
        size_t rows[TPL_MAX_SHOTS];
        if (ns > 0)
            rc = template_pick_shots(tp, card, sh->from, sh->same ? idx[i] : SIZE_MAX, sh->same, sh->seed, rows, e);
        for (int k = 0; rc == PWB_OK && k < ns; k++) {
            if (rows[k] >= sh->from->n)
                rc = err_set(e, PWB_ERANGE, "%s: shot row %zu outside the split", tp->path, rows[k]);
            else
                shots[k] = &sh->from->ex[rows[k]];
        }
        tpl_prompt pr = {0};
        if (rc == PWB_OK)
            rc = template_render(tp, card, x, ns > 0 ? shots : NULL, ns, &pr, e);
        chat_msg *msgs = rc == PWB_OK ? calloc((size_t)(pr.n > 0 ? pr.n : 1), sizeof *msgs) : NULL;
        if (rc == PWB_OK && !msgs)
            rc = err_set(e, PWB_ENOMEM, "out of memory");
        for (int k = 0; rc == PWB_OK && k < pr.n; k++)
            msgs[k] = (chat_msg){.role = pr.msgs[k].role, .content = pr.msgs[k].content};
        /* the continuations the runner ranks for this row (its own options on multiple choice) */
        int nc = 0;
        char **choices = rc == PWB_OK ? template_choices_delim(tp, card, x, delim, &nc) : NULL;
        if (rc == PWB_OK && !choices)
            rc = err_set(e, PWB_ENOMEM, "out of memory");
        if (rc == PWB_OK)
            rc = tune_encode(m, ct, msgs, pr.n, (const char **)choices, nc, x->label, &ex[i], e);
        if (rc != PWB_OK)
            err_prefix(e, "%s row %zu: ", d->split ? d->split : "", x->row);
        dataset_choices_free(choices, nc);
        free(msgs);
        tpl_prompt_free(&pr);
    }
    if (rc != PWB_OK) {
        softjob_examples_free(ex, n);
        return rc;
    }
    *out = ex;
    return PWB_OK;
}

/* ---- prepare ------------------------------------------------------------------------------- */

/* What identifies the training (softjob.h). Effective values, so leaving a default out and
 * writing it give the same key. */
static int job_keys(softjob *j, const char *card_sha, const char *data_sha, pwb_err *e)
{
    const softjob_opts *o = &j->o;
    const tune_config *c = &j->cfg;
    pwb_buf k;
    buf_init(&k);
    int bad = buf_printf(&k,
                         "pwb-tune/2 model=%s dataset=%s card=%s split=%s data=%s template=%s chat=%s tokens=%d "
                         "init=%s init_text=%s batch=%d optimizer=%s lr=%.17g weight_decay=%.17g clip=%.17g "
                         "warmup=%ld seed=%llu train_limit=%ld eval_n=%d eval_every=%ld patience=%d exact=%d",
                         j->model_sha256, o->card->name, card_sha, o->split, data_sha, j->tpl_sha256,
                         o->chat_template ? o->chat_template : "", c->n_tokens, softprompt_init_name(c->init),
                         c->init_text ? c->init_text : "", c->batch, c->opt.kind == OPTIM_ADAMW ? "adamw" : "adafactor",
                         c->opt.lr, c->opt.weight_decay, c->opt.grad_clip_norm, o->sp.warmup,
                         (unsigned long long)c->seed, c->train_limit, c->eval_n, c->eval_every, c->patience, c->exact);
    /* Prompt tuning's keys are what they were before other methods existed. */
    if (c->method.kind == TUNE_LORA) {
        pwb_buf t;
        buf_init(&t);
        for (int m = 0; m < LORA_N_MODULES; m++)
            if (c->method.lora_targets & (1u << m))
                bad |= buf_printf(&t, "%s%s", t.len ? "," : "", lora_module_name(m));
        bad |= buf_printf(&k, " method=lora r=%d alpha=%.17g dropout=%.17g targets=%s", c->method.lora_r,
                          c->method.lora_alpha, c->method.lora_dropout, t.data ? t.data : "");
        buf_free(&t);
    } else if (c->method.kind == TUNE_PREFIX) {
        bad |= buf_printf(&k, " method=prefix");
        if (c->method.prefix_hidden) /* -1: token_dim */
            bad |= buf_printf(&k, " prefix_projection=1 encoder_hidden_size=%d", c->method.prefix_hidden);
    }
    /* Settings added later join the key only when set, so older keys stay as they were. */
    if (c->opt.scale_parameter)
        bad |= buf_printf(&k, " scale_parameter=1");
    /* Shots change every input; without them the key is what it was. */
    if (o->shots.from && o->tpl->shots > 0) {
        bad |= buf_printf(&k, " shots=%d shot_pick=%s shots_as_turns=%d shot_seed=%llu shot_split=%s/%zu",
                          o->tpl->shots, template_shot_pick_name(o->tpl->shot_pick), o->tpl->shots_as_turns,
                          (unsigned long long)o->shots.seed, o->shots.from->split ? o->shots.from->split : "",
                          o->shots.from->n);
        /* shots from another file than the training split's: its bytes too */
        if (!o->shots.same && o->shots.from->path) {
            char shot_sha[65];
            int rc = file_sha256(o->shots.from->path, shot_sha, e);
            if (rc) {
                buf_free(&k);
                return rc;
            }
            bad |= buf_printf(&k, " shot_data=%s", shot_sha);
        }
    }
    /* Only a model's delimiter, and only when it changes the choices: older keys stay as they were. */
    const char *dl = template_delimiter(o->tpl, NULL) ? NULL : o->target_delimiter;
    if (dl && *dl)
        bad |= buf_printf(&k, " delimiter=%zu:%s", strlen(dl), dl);
    const size_t base = k.len;
    bad |= buf_printf(&k, " steps=%ld epochs=%.17g", c->steps, c->steps > 0 ? 0.0 : c->epochs);
    if (bad || !k.data) {
        buf_free(&k);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    sha256_hex(k.data, k.len, j->full_key);
    /* under a constant rate the length is no part of the training's identity */
    sha256_hex(k.data, c->opt.schedule == SCHED_CONSTANT ? base : k.len, j->key);
    buf_free(&k);
    return PWB_OK;
}

/* The pwb_training.json in dir, when it records full_key (NULL otherwise). */
static cJSON *finished_record(const char *dir, const char *full_key)
{
    pwb_buf p;
    buf_init(&p);
    cJSON *j = NULL;
    file_join(&p, dir, "adapter_model.safetensors");
    int ok = p.data && file_exists(p.data);
    file_join(&p, dir, "adapter_config.json");
    ok = ok && p.data && file_exists(p.data);
    file_join(&p, dir, "pwb_training.json");
    if (ok && p.data && file_exists(p.data)) {
        j = json_parse_file(p.data, SOFTJOB_RECORD_MAX, NULL);
        if (j && strcmp(json_str(j, "config_full_sha256", ""), full_key) != 0) {
            cJSON_Delete(j);
            j = NULL;
        }
    }
    buf_free(&p);
    return j;
}

int softjob_prepare(softjob *j, const softjob_opts *o, pwb_err *e)
{
    softjob_free(j);
    j->o = *o;
    const ds_card *card = o->card;
    if (!o->model_path || !card || !o->data || !o->tpl || !o->split || (!o->dir && !o->root))
        return err_set(e, PWB_EINVAL, "soft prompt: model, card, split, template and folder are required");
    if (card->task != DS_CLASSIFICATION && card->task != DS_MULTIPLE_CHOICE)
        return err_set(e, PWB_EUNSUP, "%s: soft prompts train on label tasks (classification); this card is %s",
                       card->path, ds_task_name(card->task));
    if (card->n_labels < 2)
        return err_set(e, PWB_EINVAL, "%s: a soft prompt needs at least two labels", card->path);
    int rc = soft_settings_config(&o->sp, &j->cfg, e);
    if (!rc)
        rc = template_check(o->tpl, card, e);
    if (rc)
        return rc;
    if (o->tpl->shots > 0 && !o->shots.from)
        log_warn("%s asks for %d shots; this training renders it without shots", o->tpl->path, o->tpl->shots);
    if (o->tpl->shots > 0 && o->shots.from && o->tpl->shot_pick == SHOTS_SIMILAR)
        return err_set(e, PWB_EUNSUP, "%s: shot_pick similar gives each query its own shots, which a trained prompt "
                       "cannot share; use balanced, random or first", o->tpl->path);

    /* identity */
    char card_sha[65], data_sha[65];
    if (o->model_sha256 && strlen(o->model_sha256) == 64)
        str_copy(j->model_sha256, sizeof j->model_sha256, o->model_sha256);
    else if ((rc = softjob_model_sha256(o->model_path, j->model_sha256, e)))
        return rc;
    if (o->tpl_sha256 && strlen(o->tpl_sha256) == 64)
        str_copy(j->tpl_sha256, sizeof j->tpl_sha256, o->tpl_sha256);
    else if ((rc = file_sha256(o->tpl->path, j->tpl_sha256, e)))
        return rc;
    if ((rc = file_sha256(card->path, card_sha, e)) || (rc = file_sha256(o->data->path, data_sha, e)) ||
        (rc = job_keys(j, card_sha, data_sha, e)))
        return rc;

    /* the plan: the held-out slice comes out of the sample too */
    const tune_config *c = &j->cfg;
    long want = c->train_limit > 0 ? c->train_limit + c->eval_n : 0;
    j->n_sampled = softjob_sample(o->data, want, c->seed, &j->idx);
    if (!j->idx)
        return err_set(e, PWB_ENOMEM, "out of memory");
    if (j->n_sampled == 0)
        return err_set(e, PWB_EINVAL, "%s: split '%s' has no labelled rows to train on", card->path, o->split);
    size_t n_eval = (size_t)c->eval_n > j->n_sampled / 2 ? j->n_sampled / 2 : (size_t)c->eval_n;
    size_t n_train = j->n_sampled - n_eval;
    if (c->train_limit > 0 && (size_t)c->train_limit < n_train)
        n_train = (size_t)c->train_limit;
    j->n_train = (int)n_train;
    j->n_eval = (int)n_eval;
    const long B = c->batch < (long)n_train ? c->batch : (long)n_train;
    long total = c->steps > 0 ? c->steps : (long)ceil(c->epochs * (double)n_train / (double)(B > 0 ? B : 1));
    j->planned_steps = total < 1 ? 1 : total;
    j->planned_examples = (int64_t)j->planned_steps * B;

    pwb_buf p;
    buf_init(&p);
    if (o->dir) {
        buf_puts(&p, o->dir);
    } else {
        char sub[17];
        str_copy(sub, sizeof sub, j->full_key);
        file_join(&p, o->root, sub);
    }
    if (!p.data || !(j->dir = str_dup(p.data))) {
        buf_free(&p);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    file_join(&p, j->dir, "checkpoint.bin");
    j->resumable = p.data && file_exists(p.data) && !o->fresh;
    buf_free(&p);
    if (o->reuse) {
        cJSON *rec = finished_record(j->dir, j->full_key);
        j->reusable = rec != NULL;
        cJSON_Delete(rec);
    }
    return PWB_OK;
}

/* ---- run ----------------------------------------------------------------------------------- */

static int on_step(void *ctx, const tune_step_info *s)
{
    softjob *j = ctx;
    if (j->o.db) {
        pwb_err e;
        if (db_train_step_insert(j->o.db, j->sp_id, s->step, s->loss, s->lr, s->seconds, s->examples_seen, &e))
            log_warn("soft prompt: could not record step %ld: %s", s->step, e.msg);
    }
    return 0;
}

static int on_eval(void *ctx, const tune_eval_info *v)
{
    softjob *j = ctx;
    if (j->o.db) {
        pwb_err e;
        if (db_train_eval_insert(j->o.db, j->sp_id, v->step, v->accuracy, v->loss, &e))
            log_warn("soft prompt: could not record evaluation at step %ld: %s", v->step, e.msg);
    }
    if (j->o.on_eval)
        j->o.on_eval(j->o.ctx, v);
    return 0;
}

/* The soft_prompts row: pwb tune's under the training key (a continued run updates it), the
 * runner's under the full key (one row per trained prompt). */
static int record_row(softjob *j, int done, pwb_err *e)
{
    if (!j->o.db)
        return PWB_OK;
    const tune_config *c = &j->cfg;
    const int dim = j->prompt.dim > 0 ? j->prompt.dim : j->en ? engine_n_embd(j->en) : 0;
    const int64_t n_params = c->method.kind != TUNE_PROMPT ? (done ? (int64_t)tune_adapter_n_params(&j->adapter) : -1)
                             : dim > 0 ? (int64_t)c->n_tokens * dim : -1;
    /* The init column names the method for LoRA and prefix rows (reports show it as is). */
    char init[96];
    const char *init_name = softprompt_init_name(c->init);
    if (c->method.kind == TUNE_LORA) {
        int k = snprintf(init, sizeof init, "lora r%d", c->method.lora_r);
        for (int m = 0, first = 1; m < LORA_N_MODULES && k > 0 && (size_t)k < sizeof init; m++)
            if (c->method.lora_targets & (1u << m)) {
                k += snprintf(init + k, sizeof init - (size_t)k, "%s%s", first ? " " : ",", lora_module_name(m));
                first = 0;
            }
        init_name = init;
    } else if (c->method.kind == TUNE_PREFIX) {
        snprintf(init, sizeof init, "prefix, %s", softprompt_init_name(c->init));
        init_name = init;
    }
    db_soft_prompt row = {.config_sha256 = j->o.reuse ? j->full_key : j->key,
                          .model = j->o.model_path,
                          .dataset = j->o.card->name,
                          .init = init_name,
                          .artifact_path = j->dir,
                          .n_tokens = c->method.kind == TUNE_LORA ? 0 : c->n_tokens,
                          .trainable_params = n_params,
                          .artifact_bytes = done ? j->artifact_bytes : -1,
                          .examples_seen = done ? j->res.examples_seen : -1,
                          .steps = done ? j->res.steps : -1,
                          .train_seconds = done ? j->res.seconds : -1,
                          .train_cpu_s = done ? j->res.cpu_seconds : -1,
                          .best_eval_acc = done && !isnan(j->res.best_accuracy) ? j->res.best_accuracy : -1};
    return db_soft_prompt_upsert(j->o.db, &row, &j->sp_id, e);
}

static int64_t artifact_size(const char *dir)
{
    pwb_buf p;
    buf_init(&p);
    file_join(&p, dir, "adapter_model.safetensors");
    struct stat st;
    int64_t n = p.data && stat(p.data, &st) == 0 ? (int64_t)st.st_size : -1;
    buf_free(&p);
    return n;
}

static void prompt_identity(softjob *j)
{
    if (j->cfg.method.kind != TUNE_PROMPT) {
        tune_adapter_sha256(&j->adapter, j->prompt_sha256);
        return;
    }
    sha256_hex(j->prompt.w, (size_t)j->prompt.n_tokens * (size_t)j->prompt.dim * sizeof(float), j->prompt_sha256);
}

/* pwb's own record beside the PEFT files. */
static char *training_json(const softjob *j)
{
    const softjob_opts *o = &j->o;
    const tune_config *c = &j->cfg;
    const tune_result *r = &j->res;
    cJSON *x = cJSON_CreateObject();
    if (!x)
        return NULL;
    cJSON_AddStringToObject(x, "pwb_version", PWB_VERSION);
    cJSON_AddStringToObject(x, "config_sha256", j->key);
    cJSON_AddStringToObject(x, "config_full_sha256", j->full_key);
    cJSON_AddStringToObject(x, "model", o->model_path);
    cJSON_AddStringToObject(x, "model_sha256", j->model_sha256);
    cJSON_AddStringToObject(x, "dataset", o->card->name);
    cJSON_AddStringToObject(x, "split", o->split);
    cJSON_AddStringToObject(x, "template", o->tpl->name ? o->tpl->name : "");
    cJSON_AddStringToObject(x, "chat_template", j->have_ct ? chat_kind_name(j->ct.kind) : "");
    const char *dl = template_delimiter(o->tpl, o->target_delimiter);
    if (dl)
        cJSON_AddStringToObject(x, "target_delimiter", dl);
    cJSON_AddStringToObject(x, "method", tune_method_name(c->method.kind));
    if (c->method.kind == TUNE_LORA) {
        cJSON_AddNumberToObject(x, "r", c->method.lora_r);
        cJSON_AddNumberToObject(x, "alpha", c->method.lora_alpha);
        cJSON_AddNumberToObject(x, "dropout", c->method.lora_dropout);
    }
    cJSON_AddStringToObject(x, "init", softprompt_init_name(c->init));
    if (c->init_text)
        cJSON_AddStringToObject(x, "init_text", c->init_text);
    cJSON_AddStringToObject(x, "optimizer", c->opt.kind == OPTIM_ADAMW ? "adamw" : "adafactor");
    cJSON_AddNumberToObject(x, "lr", c->opt.lr);
    if (c->opt.scale_parameter)
        cJSON_AddBoolToObject(x, "scale_parameter", 1);
    if (o->shots.from && o->tpl->shots > 0) { /* the input it expects: the template with these shots */
        cJSON *sh = cJSON_AddObjectToObject(x, "shots");
        if (sh) {
            cJSON_AddNumberToObject(sh, "n", o->tpl->shots);
            cJSON_AddStringToObject(sh, "pick", template_shot_pick_name(o->tpl->shot_pick));
            cJSON_AddBoolToObject(sh, "as_turns", o->tpl->shots_as_turns);
            cJSON_AddStringToObject(sh, "split", o->shots.from->split ? o->shots.from->split : "");
            cJSON_AddNumberToObject(sh, "seed", (double)o->shots.seed);
        }
    }
    cJSON_AddNumberToObject(x, "weight_decay", c->opt.weight_decay);
    cJSON_AddNumberToObject(x, "clip", c->opt.grad_clip_norm);
    cJSON_AddNumberToObject(x, "warmup_steps", (double)o->sp.warmup);
    cJSON_AddNumberToObject(x, "batch", c->batch);
    cJSON_AddNumberToObject(x, "seed", (double)c->seed);
    cJSON_AddNumberToObject(x, "steps", (double)r->steps);
    cJSON_AddNumberToObject(x, "examples_seen", (double)r->examples_seen);
    cJSON_AddNumberToObject(x, "n_train", r->n_train);
    cJSON_AddNumberToObject(x, "n_eval", r->n_eval);
    cJSON_AddNumberToObject(x, "train_seconds", r->seconds);
    if (isfinite(r->cpu_seconds))
        cJSON_AddNumberToObject(x, "train_cpu_seconds", r->cpu_seconds);
    cJSON_AddNumberToObject(x, "last_loss", r->last_loss);
    if (isnan(r->best_accuracy))
        cJSON_AddNullToObject(x, "best_eval_accuracy");
    else
        cJSON_AddNumberToObject(x, "best_eval_accuracy", r->best_accuracy);
    cJSON_AddNumberToObject(x, "best_step", (double)r->best_step);
    cJSON_AddNumberToObject(x, "trainable_params", c->method.kind != TUNE_PROMPT
                                                       ? (double)tune_adapter_n_params(&j->adapter)
                                                       : (double)j->prompt.n_tokens * j->prompt.dim);
    char *text = cJSON_Print(x);
    cJSON_Delete(x);
    return text;
}

/* A finished prompt of this configuration: load it and its record. */
static int open_engine(softjob *j, pwb_err *e);

static int reuse(softjob *j, cJSON *rec, pwb_err *e)
{
    int rc = PWB_OK;
    if (j->cfg.method.kind != TUNE_PROMPT) {
        /* LoRA and prefix folders are read against the model's shapes */
        rc = open_engine(j, e);
        if (!rc)
            rc = tune_adapter_load(j->dir, engine_model(j->en), &j->adapter, e);
        if (!rc && j->adapter.kind != j->cfg.method.kind)
            rc = err_set(e, PWB_EINVAL, "%s: holds a %s adapter, the configuration says %s", j->dir,
                         tune_method_name(j->adapter.kind), tune_method_name(j->cfg.method.kind));
        if (rc)
            return rc;
    } else {
        /* the vectors' width is checked against the model now, not row by row when scored */
        rc = open_engine(j, e);
        if (!rc)
            rc = tune_load(j->dir, engine_n_embd(j->en), &j->prompt, e);
        if (rc)
            return rc;
    }
    if (j->cfg.method.kind == TUNE_PROMPT && j->prompt.n_tokens != j->cfg.n_tokens) {
        int n = j->prompt.n_tokens;
        softprompt_free(&j->prompt);
        return err_set(e, PWB_EINVAL, "%s: %d virtual tokens, the configuration says %d", j->dir, n,
                       j->cfg.n_tokens);
    }
    tune_result *r = &j->res;
    memset(r, 0, sizeof *r);
    r->steps = (long)json_num(rec, "steps", -1);
    r->examples_seen = (int64_t)json_num(rec, "examples_seen", -1);
    r->seconds = json_num(rec, "train_seconds", -1);
    r->cpu_seconds = json_num(rec, "train_cpu_seconds", NAN);
    r->last_loss = json_num(rec, "last_loss", NAN);
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(rec, "best_eval_accuracy");
    r->best_accuracy = cJSON_IsNumber(acc) ? acc->valuedouble : NAN;
    r->best_step = (long)json_num(rec, "best_step", 0);
    r->n_train = json_int(rec, "n_train", 0);
    r->n_eval = json_int(rec, "n_eval", 0);
    j->reused = 1;
    j->artifact_bytes = artifact_size(j->dir);
    prompt_identity(j);
    if (j->o.db) {
        /* this database may not know it yet (trained for another one, or beside it) */
        rc = db_soft_prompt_find(j->o.db, j->full_key, &j->sp_id, e);
        if (!rc && j->sp_id == 0)
            rc = record_row(j, 1, e);
    }
    return rc;
}

static int open_engine(softjob *j, pwb_err *e)
{
    if (j->en)
        return PWB_OK;
    engine_opts eo = {.n_threads = j->o.threads};
    return engine_open(&j->en, j->o.model_path, &eo, e);
}

static int train(softjob *j, pwb_err *e)
{
    const softjob_opts *o = &j->o;
    tune_example *ex = NULL;
    pwb_buf ckpt;
    buf_init(&ckpt);
    int rc = open_engine(j, e);
    if (!rc && !j->have_ct) {
        rc = chat_template_init(&j->ct, engine_model(j->en)->chat_template, o->chat_template, e);
        j->have_ct = rc == PWB_OK;
    }
    if (!rc)
        rc = softjob_encode(engine_model(j->en), &j->ct, o->tpl, &o->shots, o->target_delimiter, o->card, o->data,
                            j->idx, j->n_sampled, &ex, e);
    if (!rc)
        rc = file_mkdirs(j->dir, e);
    if (!rc && file_join(&ckpt, j->dir, "checkpoint.bin"))
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    if (!rc && o->fresh)
        remove(ckpt.data);
    if (!rc)
        rc = record_row(j, 0, e);
    tune_config cfg = j->cfg;
    cfg.checkpoint = ckpt.data;
    cfg.config_key = j->key;
    if (!rc) {
        pwb_progress prog;
        progress_init(&prog, o->progress, o->progress_label ? o->progress_label : "tune", j->planned_steps);
        progress_set_after(&prog, o->progress_after_s, o->progress_after_what);
        tune_hooks hooks = {.on_step = on_step, .on_eval = on_eval, .ctx = j, .progress = &prog, .stop = o->stop};
        if (cfg.method.kind == TUNE_PROMPT)
            rc = tune_train(j->en, &cfg, ex, j->n_sampled, &j->prompt, &hooks, &j->res, e);
        else
            rc = tune_train_adapter(j->en, &cfg, ex, j->n_sampled, &j->adapter, &hooks, &j->res, e);
        progress_finish(&prog);
    }
    char *json = NULL;
    if (!rc && !(json = training_json(j)))
        rc = err_set(e, PWB_ENOMEM, "out of memory");
    if (!rc)
        rc = cfg.method.kind == TUNE_PROMPT
                 ? tune_save(j->dir, &j->prompt, cfg.init, cfg.init_text, o->model_path, json, e)
                 : tune_adapter_save(j->dir, engine_model(j->en), &j->adapter, cfg.init, cfg.init_text, o->model_path,
                                     json, e);
    free(json);
    if (!rc) {
        j->trained = 1;
        j->artifact_bytes = artifact_size(j->dir);
        prompt_identity(j);
        rc = record_row(j, 1, e);
    }
    softjob_examples_free(ex, j->n_sampled);
    buf_free(&ckpt);
    return rc;
}

int softjob_run(softjob *j, pwb_err *e)
{
    softprompt_free(&j->prompt);
    tune_adapter_free(&j->adapter);
    j->trained = j->reused = 0;
    if (j->o.reuse) {
        /* looked at again: an earlier cell of the same run may have trained it since */
        cJSON *rec = finished_record(j->dir, j->full_key);
        if (rec) {
            pwb_err le;
            err_clear(&le);
            int rc = reuse(j, rec, &le);
            cJSON_Delete(rec);
            if (rc == PWB_OK || j->reused) { /* reused, or loaded and the database failed */
                if (rc)
                    *e = le;
                return rc;
            }
            log_warn("%s: %s; training it again", j->dir, le.msg);
        }
    }
    return train(j, e);
}
