/* The runner. Three phases:
 *   prepare  - load and validate everything (suite, cards, splits, templates, scorers, backends)
 *              without touching the database, so bad input leaves it as it was;
 *   plan     - open the database, find or create the run, its cells and their finished rows;
 *   execute  - per cell, per chunk of rows: render, cache, backend, score, one transaction. */
#include "run/run.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "task/dataset.h"
#include "task/score.h"
#include "run/suite.h"
#include "task/template.h"
#include "llm/backend.h"
#include "llm/budget.h"
#include "llm/estimate.h"
#include "llm/prices.h"
#include "llm/remote.h"
#include "run/request.h"
#include "run/softjob.h"
#include "store/db.h"
#include "util/buf.h"
#include "util/file.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/sha256.h"
#include "util/str.h"
#include "util/timer.h"

#include <math.h>

#define RUN_DEFAULT_CHUNK 256
#define RUN_MAX_CHUNK 65536
#define RUN_MAX_SHOTS 64

typedef struct rds {
    const suite_dataset *sd;
    ds_card card;
    char *split;       /* eval split */
    ds_data eval;
    char *shot_split;  /* where shots come from */
    ds_data shots;     /* loaded when some method needs shots and the split differs from eval */
    int shots_same;    /* shots come from the eval split itself */
    int needs_shots;
    size_t *sample;    /* indices into eval.ex, ascending */
    size_t n_sample;
    int majority;      /* baseline label index, -1 when none */
    const char **rank_choices; /* the labels' verbalizers, for rank scoring */
    int examples_written;
    char *soft_split;  /* where soft prompts train by default (the card's few-shot split, else "train") */
    char **tr_names;   /* other splits loaded for soft prompts to train on */
    ds_data *tr_data;
    int n_tr;
} rds;

typedef struct rmethod {
    const suite_method *sm;
    pwb_template tpl;
    char *tpl_path;
    char tpl_sha[65];
    int rank;
    int soft;         /* a soft prompt: tpl is its input format (no shots) */
} rmethod;

typedef struct rmodel {
    const suite_model *sm;
    llm_config cfg;   /* resolved (llm_config_resolve): the preset applied */
    llm_backend *be;
    int completion;   /* provider openai-completions: sends a prompt, not chat messages */
    int messages;     /* requests carry chat messages (chat providers, and completions with a
                       * chat_template, which renders them) */
    int can_rank;     /* local, or a /v1/completions server's prompt log-probabilities */
    llm_price price;  /* what its tokens cost: the suite's, else the shipped table's */
    pwb_buf tokenizer;/* cfg.tokenizer resolved against the suite's folder */
    char sha[65];     /* local model file's sha256 (soft prompts' keys), "" until needed */
} rmodel;

typedef struct rcell {
    int d, m, k; /* dataset, model, method */
    scorer *sc;
    int64_t id;
    const size_t *rows; /* the indices into eval.ex this cell scores: its dataset's sample, or */
    size_t n_rows;      /* methods[].limit of them (own_rows), the rows a dataset limit would pick */
    size_t *own_rows;
    size_t *todo; /* indices into eval.ex still without a prediction */
    size_t n_todo;
    run_cell_result *res;
    softjob *job;  /* soft-prompt cells: the prompt's training */
    char *soft_dir;/* its folder */
} rcell;

typedef struct runner {
    const run_opts *o;
    pwb_suite suite;
    char run_key[65];
    pwb_buf suite_dir;
    rds *ds;
    int nds;
    rmethod *me;
    int nme;
    rmodel *mo;
    int nmo;
    rcell *cells;
    int ncells;
    pwb_db *db;
    pwb_progress prog;
    long prog_done;
    char prog_label[128];
    pthread_mutex_t lock;
    run_result *r;
    price_table prices;  /* the shipped table, loaded when a model has no price of its own */
    int prices_loaded;
    llm_budget budget;   /* --max-cost, shared by every model */
    int limited;         /* the budget stopped a batch */
    pwb_err limit_err;   /* what it said */
} runner;

void run_opts_init(run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->chunk = RUN_DEFAULT_CHUNK;
    o->card_dirs = "datasets";
    o->data_path = "";
    o->template_dirs = "templates";
}

void run_result_free(run_result *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_cells; i++) {
        free(r->cells[i].dataset);
        free(r->cells[i].model);
        free(r->cells[i].method);
        free(r->cells[i].soft_dir);
    }
    free(r->cells);
    memset(r, 0, sizeof *r);
}

static int stopped(const runner *R) { return R->o->stop && *R->o->stop; }

/* ---- prepare ------------------------------------------------------------------------------ */

/* A suite names a card by dataset name (searched in the card folders) or by path ("x.json"). */
static int load_card(runner *R, rds *d, pwb_err *e)
{
    const char *name = d->sd->name;
    pwb_buf dirs, path;
    buf_init(&dirs);
    buf_init(&path);
    int rc;
    if (str_ends(name, ".json") || strchr(name, '/')) {
        rc = file_resolve(name, R->suite_dir.data, ".", &path, e);
        if (rc == PWB_OK)
            rc = card_load(&d->card, path.data, e);
    } else {
        /* The suite's datasets/ folder, the repository's (suites/../datasets), the caller's folders,
         * the data path, and last the suite's own folder (cards written beside a suite). */
        buf_printf(&dirs, "%s/datasets:%s/../datasets:%s", R->suite_dir.data, R->suite_dir.data,
                   R->o->card_dirs ? R->o->card_dirs : "datasets");
        if (R->o->data_path && R->o->data_path[0])
            buf_printf(&dirs, ":%s", R->o->data_path);
        buf_printf(&dirs, ":%s", R->suite_dir.data);
        rc = card_find(&d->card, name, dirs.data, e);
    }
    buf_free(&dirs);
    buf_free(&path);
    if (rc != PWB_OK)
        err_prefix(e, "%s: dataset '%s': ", R->suite.path, name);
    return rc;
}

static int resolve_template(runner *R, const suite_method *m, pwb_buf *out, pwb_err *e)
{
    pwb_buf search;
    buf_init(&search);
    buf_printf(&search, "%s/../templates:%s", R->suite_dir.data, R->o->template_dirs ? R->o->template_dirs : "templates");
    int rc = suite_resolve_template(&R->suite, m, search.data, out, e);
    buf_free(&search);
    return rc;
}

static long effective_limit(const runner *R, const rds *d)
{
    long l = d->sd->limit > 0 ? d->sd->limit : 0;
    if (R->o->limit > 0 && (l == 0 || R->o->limit < l))
        l = R->o->limit;
    return l;
}

static int prepare_datasets(runner *R, pwb_err *e)
{
    R->nds = R->suite.n_datasets;
    R->ds = calloc((size_t)R->nds, sizeof *R->ds);
    if (!R->ds)
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (int i = 0; i < R->nds; i++) {
        rds *d = &R->ds[i];
        d->sd = &R->suite.datasets[i];
        card_init(&d->card);
        ds_data_init(&d->eval);
        ds_data_init(&d->shots);
        d->majority = -1;
    }
    for (int i = 0; i < R->nds; i++) {
        rds *d = &R->ds[i];
        int rc = load_card(R, d, e);
        if (rc)
            return rc;
        const char *split = d->sd->split && d->sd->split[0] ? d->sd->split
                            : d->card.eval_split           ? d->card.eval_split
                                                           : NULL;
        if (!split && d->card.n_splits > 0)
            split = d->card.splits[0].name;
        if (!split || !card_split(&d->card, split))
            return err_set(e, PWB_EINVAL, "%s: dataset '%s': card %s has no split '%s'", R->suite.path, d->sd->name,
                           d->card.path ? d->card.path : "?", split ? split : "(none)");
        if (!(d->split = str_dup(split)))
            return err_set(e, PWB_ENOMEM, "out of memory");
        /* before load_shots may point few_shot_split at the eval split */
        if (!(d->soft_split = str_dup(d->card.few_shot_split ? d->card.few_shot_split : "train")))
            return err_set(e, PWB_ENOMEM, "out of memory");
        log_info("loading %s split %s", d->card.name, split);
        rc = dataset_load(&d->card, split, R->o->data_path, &d->eval, e);
        if (rc)
            return rc;
        if (d->eval.n == 0)
            return err_set(e, PWB_EINVAL, "%s: split '%s' has no examples", d->card.path, split);
        long limit = effective_limit(R, d);
        d->sample = malloc((d->eval.n ? d->eval.n : 1) * sizeof *d->sample);
        if (!d->sample)
            return err_set(e, PWB_ENOMEM, "out of memory");
        d->n_sample = dataset_sample(&d->eval, limit > 0 ? (size_t)limit : 0, R->suite.seed, d->sample);
    }
    return PWB_OK;
}

static int prepare_methods(runner *R, pwb_err *e)
{
    R->nme = R->suite.n_methods;
    R->me = calloc((size_t)R->nme, sizeof *R->me);
    if (!R->me)
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (int i = 0; i < R->nme; i++)
        template_init(&R->me[i].tpl);
    pwb_buf path;
    buf_init(&path);
    for (int i = 0; i < R->nme; i++) {
        rmethod *m = &R->me[i];
        m->sm = &R->suite.methods[i];
        m->soft = m->sm->soft_prompt != NULL;
        if (!m->sm->template_path && !m->soft) {
            buf_free(&path);
            return err_set(e, PWB_EINVAL, "%s: method '%s' names no template", R->suite.path, m->sm->name);
        }
        /* a soft prompt's input format: zero-shot unless the method names a template */
        suite_method sm = *m->sm;
        if (!sm.template_path)
            sm.template_path = (char *)"zero-shot";
        int rc = resolve_template(R, &sm, &path, e);
        if (!rc)
            rc = template_load(&m->tpl, path.data, e);
        if (!rc)
            rc = file_sha256(path.data, m->tpl_sha, e);
        if (!rc && !(m->tpl_path = str_dup(path.data)))
            rc = err_set(e, PWB_ENOMEM, "out of memory");
        if (rc) {
            buf_free(&path);
            return rc;
        }
        if (m->sm->shots >= 0)
            m->tpl.shots = m->sm->shots;
        if (m->soft && m->tpl.shots > 0) {
            log_warn("%s: method '%s': soft prompts are trained and scored without shots; %s's %d are left out",
                     R->suite.path, m->sm->name, m->tpl_path, m->tpl.shots);
            m->tpl.shots = 0;
        }
        if (m->tpl.shots > RUN_MAX_SHOTS) {
            buf_free(&path);
            return err_set(e, PWB_ERANGE, "%s: %d shots is more than the limit of %d", m->tpl_path, m->tpl.shots,
                           RUN_MAX_SHOTS);
        }
        const char *sc = m->sm->scoring ? m->sm->scoring : "generate";
        if (strcmp(sc, "rank") == 0) {
            m->rank = 1;
        } else if (strcmp(sc, "generate") != 0) {
            buf_free(&path);
            return err_set(e, PWB_EINVAL, "%s: method '%s': scoring must be \"generate\" or \"rank\", not \"%s\"",
                           R->suite.path, m->sm->name, sc);
        }
    }
    buf_free(&path);
    return PWB_OK;
}

static int load_shots(runner *R, rds *d, pwb_err *e)
{
    const char *fs = d->card.few_shot_split ? d->card.few_shot_split : "train";
    if (!card_split(&d->card, fs) || strcmp(fs, d->split) == 0) {
        /* No separate split for shots (a single imported file): take them from the eval split,
         * never the query itself. The card is our copy; the picker reads its few_shot_split. */
        if (strcmp(fs, d->split) != 0) {
            log_warn("%s has no '%s' split: few-shot examples come from '%s' itself (never the query)",
                     d->card.path, fs, d->split);
            free(d->card.few_shot_split);
            if (!(d->card.few_shot_split = str_dup(d->split)))
                return err_set(e, PWB_ENOMEM, "out of memory");
        }
        d->shots_same = 1;
        if (!d->shot_split && !(d->shot_split = str_dup(d->split)))
            return err_set(e, PWB_ENOMEM, "out of memory");
        return PWB_OK;
    }
    if (!(d->shot_split = str_dup(fs)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    log_info("loading %s split %s (shots)", d->card.name, fs);
    int rc = dataset_load(&d->card, fs, R->o->data_path, &d->shots, e);
    if (rc)
        return rc;
    if (d->shots.n == 0)
        return err_set(e, PWB_EINVAL, "%s: split '%s' (for few-shot examples) is empty", d->card.path, fs);
    return PWB_OK;
}

static const ds_data *shot_data(const rds *d) { return d->shots_same ? &d->eval : &d->shots; }

/* Everything one example's request needs, owned per chunk. */
typedef struct item {
    size_t ex;          /* index into eval.ex */
    tpl_prompt prompt;
    llm_message *msgs;
    pwb_buf flat;
    char psha[65];
    char key[65];
    int cacheable;
    llm_request req;
    llm_response resp;
    int cached;
    int finished;
} item;

static void item_free(item *it)
{
    tpl_prompt_free(&it->prompt);
    free(it->msgs);
    buf_free(&it->flat);
    llm_response_clear(&it->resp);
}

/* Renders the example's prompt and fills its request. */
static int build_item(runner *R, const rcell *c, item *it, size_t ex, pwb_buf *scratch, pwb_err *e)
{
    rds *d = &R->ds[c->d];
    rmethod *m = &R->me[c->k];
    rmodel *mo = &R->mo[c->m];
    const ds_example *x = &d->eval.ex[ex];
    it->ex = ex;
    buf_init(&it->flat);
    const ds_example *shots[RUN_MAX_SHOTS];
    size_t rows[RUN_MAX_SHOTS];
    int ns = m->tpl.shots;
    if (ns > 0) {
        const ds_data *sd = shot_data(d);
        /* query_row is an index into the shot data: the query's own index when it is the eval split */
        int rc = template_pick_shots(&m->tpl, &d->card, sd, ex, d->shots_same, R->suite.seed, rows, e);
        if (rc)
            return rc;
        for (int i = 0; i < ns; i++) {
            if (rows[i] >= sd->n)
                return err_set(e, PWB_ERANGE, "%s: shot row %zu outside the split", m->tpl_path, rows[i]);
            shots[i] = &sd->ex[rows[i]];
        }
    }
    int rc = template_render(&m->tpl, &d->card, x, shots, ns, &it->prompt, e);
    if (rc)
        return rc;
    if (tpl_prompt_flatten(&it->prompt, &it->flat))
        return err_set(e, PWB_ENOMEM, "out of memory");
    sha256_hex(it->flat.data, it->flat.len, it->psha);
    llm_request *q = &it->req;
    memset(q, 0, sizeof *q);
    q->mode = m->rank ? LLM_RANK : LLM_GENERATE;
    if (!mo->messages) {
        q->prompt = it->flat.data;
    } else {
        it->msgs = calloc((size_t)(it->prompt.n ? it->prompt.n : 1), sizeof *it->msgs);
        if (!it->msgs)
            return err_set(e, PWB_ENOMEM, "out of memory");
        for (int i = 0; i < it->prompt.n; i++) {
            it->msgs[i].role = it->prompt.msgs[i].role;
            it->msgs[i].content = it->prompt.msgs[i].content;
        }
        q->messages = it->msgs;
        q->n_messages = it->prompt.n;
        q->prompt = it->flat.data;
    }
    q->max_tokens = mo->sm->max_tokens > 0 ? mo->sm->max_tokens : m->tpl.max_tokens > 0 ? m->tpl.max_tokens : 16;
    q->temperature = mo->sm->temperature;
    q->top_p = 1.0;
    q->seed = R->suite.seed;
    if (m->rank) {
        q->choices = R->ds[c->d].rank_choices;
        q->n_choices = R->ds[c->d].card.n_labels;
    }
    if (c->job && c->job->prompt.w) {
        /* the trained prompt before the rendered input; its values name it in the cache key */
        q->prefix_embeds = c->job->prompt.w;
        q->n_prefix_embeds = c->job->prompt.n_tokens;
        q->prefix_dim = c->job->prompt.dim;
        q->prefix_id = c->job->prompt_sha256;
    }
    it->cacheable = !R->o->no_cache && req_cacheable(q);
    if (it->cacheable && req_cache_key(&mo->cfg, q, it->key, scratch))
        return err_set(e, PWB_ENOMEM, "out of memory");
    return PWB_OK;
}

/* The model's settings as the backend sees them, its preset applied (llm_config_resolve): the
 * response cache is keyed on this, so the base URL a preset implies is part of every key. */
static int model_config(runner *R, rmodel *m, int index, pwb_err *e)
{
    const suite_model *sm = m->sm;
    llm_config raw;
    llm_config_defaults(&raw);
    raw.name = sm->name;
    raw.provider = sm->provider;
    raw.base_url = sm->base_url;
    raw.model = sm->model;
    raw.api_key_env = sm->api_key_env;
    raw.chat_template = sm->chat_template;
    if (sm->concurrency > 0)
        raw.concurrency = sm->concurrency;
    if (sm->batch > 0)
        raw.batch = sm->batch;
    if (R->o->concurrency > 0)
        raw.concurrency = R->o->concurrency;
    if (sm->timeout_s > 0)
        raw.timeout_s = sm->timeout_s;
    if (sm->max_retries >= 0)
        raw.max_retries = sm->max_retries;
    raw.preset = sm->preset;
    raw.stream = sm->stream;
    raw.rpm = sm->rpm;
    raw.tpm = sm->tpm;
    raw.adaptive_concurrency = sm->adaptive_concurrency;
    raw.allow_insecure_key = sm->allow_insecure_key;
    buf_init(&m->tokenizer);
    if (sm->tokenizer) {
        /* as written (from the working directory), else beside the suite */
        if (file_resolve(sm->tokenizer, ".", R->suite_dir.data, &m->tokenizer, NULL) != PWB_OK)
            return err_set(e, PWB_EIO, "%s: models[%d].tokenizer: '%s' not found (looked in . and %s)", R->suite.path,
                           index, sm->tokenizer, R->suite_dir.data);
        raw.tokenizer = m->tokenizer.data;
    }
    int rc = llm_config_resolve(&raw, &m->cfg, e);
    if (rc)
        return err_prefix(e, "%s: models[%d] '%s': ", R->suite.path, index, sm->name);
    const char *p = m->cfg.provider;
    m->completion = strcmp(p, "openai-completions") == 0;
    m->messages = !m->completion || (m->cfg.chat_template && m->cfg.chat_template[0]);
    m->can_rank = m->completion || strcmp(p, "local") == 0;
    return PWB_OK;
}

/* The model's price: the suite's wins; else the shipped table's for its model id (HTTP only: a
 * local model's id is a file path and its cost is CPU time). */
static int model_price(runner *R, rmodel *m, pwb_err *e)
{
    const suite_model *sm = m->sm;
    llm_price suite_price = {0};
    if (sm->price_given) {
        suite_price.known = 1;
        suite_price.in_per_m = sm->price_in_per_m;
        suite_price.out_per_m = sm->price_out_per_m;
        suite_price.cached_in_per_m = sm->price_cached_in_per_m;
    }
    const price_table *t = NULL;
    if (!sm->price_given && strcmp(m->cfg.provider, "local") != 0) {
        if (!R->prices_loaded) {
            pwb_buf path;
            buf_init(&path);
            pwb_err fe;
            err_clear(&fe);
            int found = prices_find(&path, &fe) == PWB_OK;
            /* a table that is there but broken is an error (it names the file); none at all is not */
            int rc = found ? prices_load(&R->prices, path.data, e) : PWB_OK;
            if (!found)
                log_warn("no price table (%s): models without a suite price cost 0", fe.msg);
            buf_free(&path);
            if (rc)
                return rc;
            R->prices_loaded = 1;
        }
        t = &R->prices;
    }
    prices_resolve(t, m->cfg.model, &suite_price, &m->price);
    if (!m->price.known && strcmp(m->cfg.provider, "local") != 0)
        log_info("model %s: no price for '%s'; its tokens cost 0 (give the suite a price)", sm->name,
                 m->cfg.model ? m->cfg.model : "?");
    return PWB_OK;
}

static int prepare_models(runner *R, pwb_err *e)
{
    R->nmo = R->suite.n_models;
    R->mo = calloc((size_t)R->nmo, sizeof *R->mo);
    if (!R->mo)
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (int i = 0; i < R->nmo; i++) {
        rmodel *m = &R->mo[i];
        m->sm = &R->suite.models[i];
        int rc = model_config(R, m, i, e);
        if (!rc)
            rc = model_price(R, m, e);
        if (rc)
            return rc;
        /* the backend's cost guard (HTTP) bills at the same price the runner stores */
        m->cfg.price = &m->price;
        m->cfg.budget = R->o->max_cost_usd > 0 ? &R->budget : NULL;
        rc = llm_backend_create(&m->be, &m->cfg, e);
        if (rc) {
            err_prefix(e, "%s: model '%s': ", R->suite.path, m->sm->name ? m->sm->name : "?");
            return rc;
        }
        m->be->stop = R->o->stop;
    }
    return PWB_OK;
}

/* ---- soft prompts ------------------------------------------------------------------------- */

/* The split of d named name, for a soft prompt to train on: one the dataset has loaded already,
 * else loaded now (each kept at its own address: jobs point at it). */
static int train_data(runner *R, rds *d, const char *name, const ds_data **out, pwb_err *e)
{
    if (!strcmp(name, d->split)) {
        *out = &d->eval;
        return PWB_OK;
    }
    for (int i = 0; i < d->n_tr; i++)
        if (!strcmp(d->tr_names[i], name)) {
            *out = &d->tr_data[i];
            return PWB_OK;
        }
    if (!card_split(&d->card, name))
        return err_set(e, PWB_EINVAL, "%s: dataset '%s': card %s has no split '%s' for a soft prompt to train on "
                       "(name one with soft_prompt.train_split)", R->suite.path, d->sd->name, d->card.path, name);
    if (d->n_tr >= d->card.n_splits)
        return err_set(e, PWB_ERANGE, "%s: too many training splits", d->card.path);
    if (!d->tr_names) {
        d->tr_names = calloc((size_t)d->card.n_splits, sizeof *d->tr_names);
        d->tr_data = calloc((size_t)d->card.n_splits, sizeof *d->tr_data);
        if (!d->tr_names || !d->tr_data)
            return err_set(e, PWB_ENOMEM, "out of memory");
    }
    ds_data *x = &d->tr_data[d->n_tr];
    ds_data_init(x);
    if (!(d->tr_names[d->n_tr] = str_dup(name)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    d->n_tr++;
    log_info("loading %s split %s (soft prompt training)", d->card.name, name);
    int rc = dataset_load(&d->card, name, R->o->data_path, x, e);
    if (rc)
        return rc;
    *out = x;
    return PWB_OK;
}

/* Where trained prompts live: run_opts.soft_dir, else "soft" beside the database. */
static void soft_root(const runner *R, pwb_buf *out)
{
    buf_reset(out);
    if (R->o->soft_dir && R->o->soft_dir[0]) {
        buf_puts(out, R->o->soft_dir);
        return;
    }
    pwb_buf dir;
    buf_init(&dir);
    file_dirname(R->o->db_path ? R->o->db_path : "results.db", &dir);
    file_join(out, dir.data ? dir.data : ".", "soft");
    buf_free(&dir);
}

/* A soft-prompt cell: a local model, the training split, the job's keys and plan (nothing is
 * trained or written here). */
static int prepare_soft_cell(runner *R, rcell *c, pwb_err *e)
{
    rds *d = &R->ds[c->d];
    rmethod *m = &R->me[c->k];
    rmodel *mo = &R->mo[c->m];
    if (strcmp(mo->cfg.provider, "local") != 0)
        return err_set(e, PWB_EUNSUP,
                       "%s: cell %s/%s/%s: method '%s' is a soft prompt, which is trained and scored on a local model "
                       "(provider local); model '%s' is provider %s",
                       R->suite.path, d->card.name, mo->sm->name, m->sm->name, m->sm->name, mo->sm->name,
                       mo->sm->provider);
    const suite_soft_prompt *sp = &m->sm->soft;
    const char *split = sp->train_split ? sp->train_split : d->soft_split;
    if (!strcmp(split, d->split)) {
        if (!sp->train_split)
            return err_set(e, PWB_EINVAL,
                           "%s: cell %s/%s/%s: the soft prompt would train on '%s', the split it is scored on; "
                           "name another with soft_prompt.train_split",
                           R->suite.path, d->card.name, mo->sm->name, m->sm->name, split);
        log_warn("%s: method '%s' trains its soft prompt on '%s', the split it is scored on", R->suite.path,
                 m->sm->name, split);
    }
    const ds_data *data = NULL;
    int rc = train_data(R, d, split, &data, e);
    if (!rc && !mo->sha[0])
        rc = softjob_model_sha256(mo->cfg.model, mo->sha, e);
    if (rc)
        return rc;
    if (!(c->job = calloc(1, sizeof *c->job)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    softjob_init(c->job);
    pwb_buf root;
    buf_init(&root);
    soft_root(R, &root);
    if (!root.data || !(c->soft_dir = str_dup(root.data))) {
        buf_free(&root);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    buf_free(&root);
    softjob_opts o = {.model_path = mo->cfg.model, .model_sha256 = mo->sha, .chat_template = mo->cfg.chat_template,
                      .threads = mo->cfg.threads, .card = &d->card, .split = split, .data = data, .tpl = &m->tpl,
                      .tpl_sha256 = m->tpl_sha, .sp = *sp, .root = c->soft_dir, .reuse = 1};
    rc = softjob_prepare(c->job, &o, e);
    if (rc)
        err_prefix(e, "%s: cell %s/%s/%s: ", R->suite.path, d->card.name, mo->sm->name, m->sm->name);
    return rc;
}

/* What a soft cell's job did (or, in a dry run, would do), for the summary. */
static int soft_result(const rcell *c, run_cell_result *cr, int dry)
{
    const softjob *j = c->job;
    free(cr->soft_dir);
    if (!(cr->soft_dir = str_dup(j->dir)))
        return -1;
    cr->soft_n_train = j->n_train;
    cr->soft_n_eval = j->n_eval;
    cr->soft_resumes = j->resumable && !j->reusable;
    if (dry) {
        cr->soft = j->reusable ? RUN_SOFT_REUSED : RUN_SOFT_TRAINED;
        cr->soft_steps = j->planned_steps;
        cr->soft_examples = j->planned_examples;
        cr->soft_seconds = 0;
        cr->soft_best_acc = NAN;
        return 0;
    }
    cr->soft = j->reused ? RUN_SOFT_REUSED : j->trained ? RUN_SOFT_TRAINED : RUN_SOFT_NONE;
    cr->soft_steps = j->res.steps;
    cr->soft_examples = j->res.examples_seen;
    cr->soft_seconds = j->res.seconds;
    cr->soft_best_acc = j->res.best_accuracy;
    cr->soft_resumes = j->res.resumed;
    if (j->res.n_train > 0) {
        cr->soft_n_train = j->res.n_train;
        cr->soft_n_eval = j->res.n_eval;
    }
    return 0;
}

/* Builds the cells and checks each: the template against the card, the scorer, one rendering. */
/* The rows cell c scores. A method limit takes the first N of the same seeded permutation the
 * dataset's own sample comes from, so they are the rows a dataset limit of N picks, and a subset of
 * the dataset's sample. */
static int cell_sample(runner *R, rcell *c, pwb_err *e)
{
    const rds *d = &R->ds[c->d];
    const long lim = R->me[c->k].sm->limit;
    c->rows = d->sample;
    c->n_rows = d->n_sample;
    if (lim <= 0 || (size_t)lim >= d->n_sample)
        return PWB_OK;
    if (!(c->own_rows = malloc((size_t)lim * sizeof *c->own_rows)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    c->n_rows = dataset_sample(&d->eval, (size_t)lim, R->suite.seed, c->own_rows);
    c->rows = c->own_rows;
    return PWB_OK;
}

static int prepare_cells(runner *R, pwb_err *e)
{
    size_t max = (size_t)R->nds * (size_t)R->nmo * (size_t)R->nme;
    R->cells = calloc(max ? max : 1, sizeof *R->cells);
    char *ok = calloc((size_t)R->nds * (size_t)R->nme + 1, 1); /* method k applies to dataset d */
    if (!R->cells || !ok) {
        free(ok);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    pwb_buf scratch;
    buf_init(&scratch);
    int rc = PWB_OK;
    /* Each (dataset, method): does it apply, and is the template right for the card? */
    for (int di = 0; di < R->nds && !rc; di++) {
        rds *d = &R->ds[di];
        int any = 0;
        for (int k = 0; k < R->nme && !rc; k++) {
            rmethod *m = &R->me[k];
            if (!template_applies(&m->tpl, &d->card)) {
                log_info("%s does not apply to %s (task %s)", m->tpl_path, d->card.name, m->tpl.task);
                continue;
            }
            any = ok[di * R->nme + k] = 1;
            if (m->tpl.shots > 0 && !d->needs_shots) {
                /* first: it may point the card's few_shot_split at the eval split */
                d->needs_shots = 1;
                rc = load_shots(R, d, e);
            }
            if (!rc)
                rc = template_check(&m->tpl, &d->card, e);
            if (!rc && m->rank && d->card.n_labels == 0)
                rc = err_set(e, PWB_EINVAL, "%s: method '%s' ranks labels but card %s has none", R->suite.path,
                             m->sm->name, d->card.path);
            /* (a soft prompt needs a local model: prepare_soft_cell says so) */
            for (int mi = 0; !rc && m->rank && !m->soft && mi < R->nmo; mi++)
                if (!R->mo[mi].can_rank)
                    rc = err_set(e, PWB_EUNSUP,
                                 "%s: cell %s/%s/%s: method '%s' ranks labels by log-likelihood, which model '%s' "
                                 "(provider %s) cannot give; use the local engine or provider openai-completions "
                                 "(a /v1/completions server with prompt logprobs: vLLM, llama.cpp)",
                                 R->suite.path, d->card.name, R->mo[mi].sm->name, m->sm->name, m->sm->name,
                                 R->mo[mi].sm->name, R->mo[mi].sm->provider);
        }
        if (!rc && !any)
            rc = err_set(e, PWB_EINVAL, "%s: no method of the suite applies to dataset '%s'", R->suite.path,
                         d->card.name);
    }
    /* The cells, in report order: dataset, model, method. */
    for (int di = 0; di < R->nds && !rc; di++) {
        for (int mi = 0; mi < R->nmo && !rc; mi++) {
            for (int k = 0; k < R->nme && !rc; k++) {
                if (!ok[di * R->nme + k])
                    continue;
                rcell *c = &R->cells[R->ncells++];
                c->d = di;
                c->m = mi;
                c->k = k;
                rc = cell_sample(R, c, e);
                if (!rc)
                    rc = scorer_init(&c->sc, &R->ds[di].card, R->me[k].tpl.answer_pattern, e);
                if (!rc && R->me[k].soft)
                    rc = prepare_soft_cell(R, c, e);
                if (rc)
                    break;
                /* Render the first sampled example now: a template that cannot render fails here,
                 * before the database, not halfway through the run. */
                item it;
                memset(&it, 0, sizeof it);
                rc = build_item(R, c, &it, c->rows[0], &scratch, e);
                item_free(&it);
            }
        }
    }
    free(ok);
    buf_free(&scratch);
    return rc;
}

static int prepare(runner *R, pwb_err *e)
{
    int rc = suite_load(&R->suite, R->o->suite_path, e);
    if (rc)
        return rc;
    if (R->suite.n_datasets <= 0 || R->suite.n_models <= 0 || R->suite.n_methods <= 0)
        return err_set(e, PWB_EINVAL, "%s: a suite needs at least one dataset, one model and one method",
                       R->o->suite_path);
    file_dirname(R->suite.path ? R->suite.path : R->o->suite_path, &R->suite_dir);
    /* --limit changes which rows a cell holds, so it is part of the run's identity. */
    if (R->o->limit > 0) {
        char tmp[128];
        int n = snprintf(tmp, sizeof tmp, "%s:limit=%ld", R->suite.sha256 ? R->suite.sha256 : "", R->o->limit);
        sha256_hex(tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1, R->run_key);
    } else {
        str_copy(R->run_key, sizeof R->run_key, R->suite.sha256 ? R->suite.sha256 : "");
    }
    if ((rc = prepare_datasets(R, e)) || (rc = prepare_methods(R, e)))
        return rc;
    for (int i = 0; i < R->nds; i++) {
        rds *d = &R->ds[i];
        if (d->card.n_labels > 0) {
            d->rank_choices = calloc((size_t)d->card.n_labels, sizeof *d->rank_choices);
            if (!d->rank_choices)
                return err_set(e, PWB_ENOMEM, "out of memory");
            for (int l = 0; l < d->card.n_labels; l++)
                d->rank_choices[l] = d->card.labels[l].verbalizer;
        }
    }
    if ((rc = prepare_models(R, e)) || (rc = prepare_cells(R, e)))
        return rc;
    for (int i = 0; i < R->nds; i++) {
        rds *d = &R->ds[i];
        /* The baseline predicts the most frequent label of the shot split when one is loaded (what
         * a model could learn), else of the eval split. */
        d->majority = dataset_majority_label(d->needs_shots && !d->shots_same ? &d->shots : &d->eval, &d->card);
    }
    return PWB_OK;
}

/* ---- plan --------------------------------------------------------------------------------- */

/* The cell's rows whose gold label is the dataset's majority label. */
static int cell_majority_n(const rds *d, const rcell *c)
{
    if (d->majority < 0)
        return -1;
    int k = 0;
    for (size_t j = 0; j < c->n_rows; j++)
        k += d->eval.ex[c->rows[j]].label == d->majority;
    return k;
}

static int write_examples(runner *R, rds *d, pwb_err *e)
{
    if (d->examples_written)
        return PWB_OK;
    for (size_t j = 0; j < d->n_sample; j++) {
        const ds_example *x = &d->eval.ex[d->sample[j]];
        int rc = db_example_upsert(R->db, d->card.name, d->split, (long)x->row, x->input, x->answer, x->label, e);
        if (rc)
            return rc;
    }
    d->examples_written = 1;
    return PWB_OK;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static int plan(runner *R, pwb_err *e)
{
    const run_opts *o = R->o;
    run_result *r = R->r;
    if (o->require_existing && !file_exists(o->db_path))
        return err_set(e, PWB_EINVAL, "%s: no such database, so no run of %s to resume (drop --resume to start one)",
                       o->db_path, o->suite_path);
    pwb_buf dir;
    buf_init(&dir);
    file_dirname(o->db_path, &dir);
    int rc = file_mkdirs(dir.data, e);
    buf_free(&dir);
    if (rc)
        return rc;
    if ((rc = db_open(&R->db, o->db_path, DB_READWRITE, e)))
        return rc;
    int64_t run_id = 0;
    if (!o->fresh && (rc = db_run_find(R->db, R->run_key, &run_id, e)))
        return rc;
    if (run_id == 0 && o->require_existing)
        return err_set(e, PWB_EINVAL, "%s: no earlier run of %s to resume (drop --resume to start one)", o->db_path,
                       o->suite_path);
    r->resumed = run_id != 0;
    if ((rc = db_begin(R->db, e)))
        return rc;
    if (run_id == 0) {
        char *json = cJSON_PrintUnformatted(R->suite.json);
        rc = db_run_create(R->db, R->suite.name ? R->suite.name : "suite", R->suite.path, R->run_key, json,
                           R->suite.seed, &run_id, e);
        cJSON_free(json);
    }
    r->run_id = run_id;
    for (int i = 0; i < R->ncells && !rc; i++) {
        rcell *c = &R->cells[i];
        rds *d = &R->ds[c->d];
        rmethod *m = &R->me[c->k];
        rmodel *mo = &R->mo[c->m];
        if ((rc = write_examples(R, d, e)))
            break;
        db_cell cell = {
            .run_id = run_id,
            .dataset = d->card.name,
            .split = d->split,
            .model = mo->sm->name,
            .provider = mo->sm->provider,
            .method = m->sm->name,
            .kind = m->soft ? "soft" : template_kind_name(m->tpl.kind),
            .template_path = m->tpl_path,
            .template_sha256 = m->tpl_sha,
            .scoring = m->rank ? "rank" : "generate",
            .n_planned = (long)c->n_rows,
            .majority_label_correct_n = cell_majority_n(d, c),
            .sweep = m->sm->sweep,
            .sweep_point = m->sm->sweep_point,
        };
        rc = db_cell_upsert(R->db, &cell, &c->id, e);
    }
    if (rc) {
        db_rollback(R->db);
        return rc;
    }
    if ((rc = db_commit(R->db, e)))
        return rc;
    /* What is left per cell: the sample minus the rows already predicted. */
    r->cells = calloc((size_t)(R->ncells ? R->ncells : 1), sizeof *r->cells);
    if (!r->cells)
        return err_set(e, PWB_ENOMEM, "out of memory");
    r->n_cells = R->ncells;
    long total = 0;
    for (int i = 0; i < R->ncells; i++) {
        rcell *c = &R->cells[i];
        rds *d = &R->ds[c->d];
        run_cell_result *cr = c->res = &r->cells[i];
        cr->cell_id = c->id;
        cr->dataset = str_dup(d->card.name);
        cr->model = str_dup(R->mo[c->m].sm->name);
        cr->method = str_dup(R->me[c->k].sm->name);
        cr->n_planned = (long)c->n_rows;
        if (!cr->dataset || !cr->model || !cr->method)
            return err_set(e, PWB_ENOMEM, "out of memory");
        long *done = NULL;
        size_t n_done = 0;
        if ((rc = db_cell_done_rows(R->db, c->id, &done, &n_done, e)))
            return rc;
        c->todo = malloc((d->n_sample ? d->n_sample : 1) * sizeof *c->todo);
        if (!c->todo) {
            free(done);
            return err_set(e, PWB_ENOMEM, "out of memory");
        }
        for (size_t s = 0; s < c->n_rows; s++) {
            long row = (long)d->eval.ex[c->rows[s]].row;
            if (n_done && bsearch(&row, done, n_done, sizeof *done, cmp_long))
                r->n_skipped++;
            else
                c->todo[c->n_todo++] = c->rows[s];
        }
        free(done);
        total += (long)c->n_todo;
    }
    progress_init(&R->prog, o->progress, "run", total);
    return PWB_OK;
}

/* ---- execute ------------------------------------------------------------------------------ */

typedef struct chunk_ctx {
    runner *R;
    item *items;
    const size_t *map; /* request index -> item index */
    size_t n_cb;       /* completions reported through the callback */
} chunk_ctx;

/* Runs on the backend's thread(s) while the runner waits in run(). */
static void on_done(void *ctx, size_t index, const llm_response *resp)
{
    (void)resp;
    chunk_ctx *cc = ctx;
    pthread_mutex_lock(&cc->R->lock);
    cc->items[cc->map[index]].finished = 1;
    cc->n_cb++;
    cc->R->prog_done++;
    progress_update(&cc->R->prog, cc->R->prog_done, cc->R->prog_label);
    pthread_mutex_unlock(&cc->R->lock);
}

/* What a response cost, at the price the HTTP backend's cost guard also bills (so the stored
 * costs add up to what --max-cost counted), plus CPU time at the suite's cpu_hour. */
static double cost_of(const rmodel *m, const llm_response *r)
{
    double c = llm_estimate_cost(&m->price, r->tokens_in, r->tokens_out, r->tokens_cached_in);
    if (r->cpu_s > 0)
        c += r->cpu_s * m->sm->price_cpu_hour / 3600.0;
    return c;
}

static int store_item(runner *R, rcell *c, item *it, pwb_buf *scratch, pwb_err *e)
{
    rds *d = &R->ds[c->d];
    rmethod *m = &R->me[c->k];
    const ds_example *x = &d->eval.ex[it->ex];
    llm_response *rp = &it->resp;
    db_prediction p;
    memset(&p, 0, sizeof p);
    p.cell_id = c->id;
    p.row = (long)x->row;
    p.prompt = it->flat.data;
    p.prompt_sha256 = it->psha;
    p.output = rp->text;
    score_result sr;
    memset(&sr, 0, sizeof sr);
    if (rp->error) {
        p.error = rp->error;
    } else if (m->rank) {
        int n = d->card.n_labels, ch = rp->choice;
        if ((ch < 0 || ch >= n) && rp->choice_logprob) {
            ch = 0;
            for (int i = 1; i < n; i++)
                if (rp->choice_logprob[i] > rp->choice_logprob[ch])
                    ch = i;
        }
        if (ch >= 0 && ch < n) {
            p.extracted = d->card.labels[ch].verbalizer;
            if (!p.output)
                p.output = p.extracted;
            p.valid = 1;
            p.correct = ch == x->label;
        }
        p.choice_logprob = rp->choice_logprob;
        p.n_choices = rp->choice_logprob ? n : 0;
    } else if (scorer_score(c->sc, rp->text ? rp->text : "", x, &sr) == PWB_OK) {
        p.extracted = sr.extracted;
        p.valid = sr.valid;
        p.correct = sr.correct;
    } else {
        p.error = "scoring failed";
    }
    p.latency_s = rp->latency_s;
    p.cpu_s = rp->cpu_s;
    p.tokens_in = rp->tokens_in;
    p.tokens_out = rp->tokens_out;
    /* A cached answer keeps what the original request cost, so a report describes the method and
     * not the cache; `cached` says that nothing was spent this time. */
    p.cost_usd = cost_of(&R->mo[c->m], rp);
    p.retries = rp->retries;
    p.http_status = rp->http_status;
    p.cached = it->cached;
    int rc = db_prediction_insert(R->db, &p, e);
    /* HTTP backends bill the cost guard themselves; a local model's CPU time is added here */
    if (!rc && !it->cached && R->o->max_cost_usd > 0 && !strcmp(R->mo[c->m].cfg.provider, "local"))
        llm_budget_add(&R->budget, p.cost_usd);
    if (!rc && it->cacheable && !it->cached && !rp->error && (rp->text || rp->choice_logprob)) {
        if (resp_encode(rp, m->rank ? d->card.n_labels : 0, scratch))
            rc = err_set(e, PWB_ENOMEM, "out of memory");
        else
            rc = db_cache_put(R->db, it->key, scratch->data, e);
    }
    if (!rc) {
        run_cell_result *cr = c->res;
        cr->n_new++;
        cr->n_cached += it->cached;
        R->r->n_new++;
        R->r->n_cached += it->cached;
        R->r->n_errors += p.error != NULL;
    }
    score_result_clear(&sr);
    return rc;
}

/* Answers what the cache holds, in one read transaction. */
static int lookup_cache(runner *R, rcell *c, item *items, size_t n, pwb_err *e)
{
    size_t n_cacheable = 0;
    for (size_t i = 0; i < n; i++)
        n_cacheable += items[i].cacheable;
    if (!n_cacheable)
        return PWB_OK;
    int n_choices = R->me[c->k].rank ? R->ds[c->d].card.n_labels : 0;
    int rc = db_begin(R->db, e);
    for (size_t i = 0; i < n && !rc; i++) {
        if (!items[i].cacheable)
            continue;
        char *json = NULL;
        rc = db_cache_get(R->db, items[i].key, &json, e);
        if (!rc && json && resp_decode(json, n_choices, &items[i].resp) == 0) {
            items[i].cached = items[i].finished = 1;
            R->prog_done++;
        }
        free(json);
    }
    if (rc) {
        db_rollback(R->db);
        return rc;
    }
    return db_commit(R->db, e);
}

/* ---- the cost limit (--max-cost) ---------------------------------------------------------- */

/* 1 when a local model with a price must not start another chunk: the limit is spent. (HTTP
 * backends check every request themselves, before it is sent.) */
static int budget_spent_for(runner *R, const rmodel *mo)
{
    if (R->o->max_cost_usd <= 0 || strcmp(mo->cfg.provider, "local") != 0)
        return 0;
    if (!(mo->sm->price_cpu_hour > 0) && !mo->price.known)
        return 0;
    return llm_budget_spent(&R->budget) >= R->o->max_cost_usd;
}

static int spent_row(void *ctx, int ncols, const char *const *names, const char *const *values)
{
    (void)names;
    if (ncols > 0 && values[0])
        *(double *)ctx = strtod(values[0], NULL);
    return 0;
}

/* What earlier invocations of this run spent (answers from the cache cost nothing this time):
 * it counts towards the limit, so resuming cannot spend the limit twice. */
static int budget_resume(runner *R, pwb_err *e)
{
    if (R->o->max_cost_usd <= 0 || !R->r->run_id)
        return PWB_OK;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(sum(p.cost_usd), 0) FROM predictions p JOIN cells c ON c.id = p.cell_id "
             "WHERE c.run_id = %lld AND p.cached = 0",
             (long long)R->r->run_id);
    double spent = 0;
    int rc = db_query(R->db, sql, spent_row, &spent, e);
    if (!rc && spent > 0)
        llm_budget_add(&R->budget, spent);
    return rc;
}

static int run_cell(runner *R, rcell *c, pwb_err *e)
{
    size_t chunk = R->o->chunk > 0 ? (size_t)R->o->chunk : RUN_DEFAULT_CHUNK;
    if (chunk > RUN_MAX_CHUNK)
        chunk = RUN_MAX_CHUNK;
    rmodel *mo = &R->mo[c->m];
    item *items = calloc(chunk, sizeof *items);
    llm_request *reqs = calloc(chunk, sizeof *reqs);
    llm_response *out = calloc(chunk, sizeof *out);
    size_t *map = calloc(chunk, sizeof *map);
    pwb_buf scratch;
    buf_init(&scratch);
    int rc = (!items || !reqs || !out || !map) ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    snprintf(R->prog_label, sizeof R->prog_label, "%s/%s/%s", R->ds[c->d].card.name, mo->sm->name,
             R->me[c->k].sm->name);
    for (size_t start = 0; !rc && start < c->n_todo && !stopped(R); start += chunk) {
        size_t n = c->n_todo - start < chunk ? c->n_todo - start : chunk;
        memset(items, 0, n * sizeof *items);
        size_t built = 0;
        for (; built < n && !rc; built++)
            rc = build_item(R, c, &items[built], c->todo[start + built], &scratch, e);
        if (!rc)
            rc = lookup_cache(R, c, items, n, e);
        size_t nm = 0;
        for (size_t i = 0; !rc && i < n; i++) {
            if (items[i].cached)
                continue;
            reqs[nm] = items[i].req;
            map[nm++] = i;
        }
        int interrupted = 0, limited = 0;
        if (!rc && nm > 0 && budget_spent_for(R, mo)) {
            limited = 1; /* a local model's CPU time: counted after each chunk, checked before the next */
            err_set(&R->limit_err, PWB_ELIMIT, "cost limit of $%.4f reached: $%.4f spent", R->o->max_cost_usd,
                    llm_budget_spent(&R->budget));
        } else if (!rc && nm > 0) {
            memset(out, 0, nm * sizeof *out);
            chunk_ctx cc = {R, items, map, 0};
            rc = mo->be->run(mo->be, reqs, nm, out, on_done, &cc, e);
            interrupted = rc == PWB_EINTR || stopped(R);
            /* Over the cost limit: like a stop, only the requests that completed (done was called
             * for them) are kept; the unsent ones carry "not sent: cost limit reached". */
            limited = rc == PWB_ELIMIT;
            if (limited)
                R->limit_err = *e;
            if (rc == PWB_EINTR || limited)
                rc = PWB_OK;
            for (size_t j = 0; j < nm; j++) {
                items[map[j]].resp = out[j];
                memset(&out[j], 0, sizeof out[j]);
                if (!interrupted && !limited)
                    items[map[j]].finished = 1;
            }
            if (!interrupted && !limited)
                R->prog_done += (long)(nm - cc.n_cb); /* a backend that does not report each one */
        }
        progress_update(&R->prog, R->prog_done, R->prog_label);
        if (!rc) {
            /* One transaction per chunk: a crash loses at most this chunk, never half a row. */
            rc = db_begin(R->db, e);
            for (size_t i = 0; !rc && i < n; i++) {
                item *it = &items[i];
                /* Stopped midway: keep the answers that completed; a request cut short may carry an
                 * error that says so, and must be asked again next time. */
                if (!it->finished || (interrupted && it->resp.error))
                    continue;
                rc = store_item(R, c, it, &scratch, e);
            }
            if (rc)
                db_rollback(R->db);
            else
                rc = db_commit(R->db, e);
        }
        for (size_t i = 0; i < built; i++)
            item_free(&items[i]);
        if (!rc && limited) {
            R->limited = 1;
            rc = PWB_ELIMIT;
        }
        if (interrupted || limited)
            break;
    }
    free(items);
    free(reqs);
    free(out);
    free(map);
    buf_free(&scratch);
    return rc;
}

static int summary_row(void *ctx, int ncols, const char *const *names, const char *const *values)
{
    run_result *r = ctx;
    int64_t id = -1;
    long n = 0, correct = 0, invalid = 0, errors = 0;
    double cost = 0;
    for (int i = 0; i < ncols; i++) {
        const char *v = values[i];
        if (!v)
            continue;
        if (strcmp(names[i], "cell_id") == 0)
            id = strtoll(v, NULL, 10);
        else if (strcmp(names[i], "n") == 0)
            n = strtol(v, NULL, 10);
        else if (strcmp(names[i], "correct") == 0)
            correct = strtol(v, NULL, 10);
        else if (strcmp(names[i], "invalid") == 0)
            invalid = strtol(v, NULL, 10);
        else if (strcmp(names[i], "errors") == 0)
            errors = strtol(v, NULL, 10);
        else if (strcmp(names[i], "total_cost_usd") == 0)
            cost = strtod(v, NULL);
    }
    for (int i = 0; i < r->n_cells; i++) {
        run_cell_result *c = &r->cells[i];
        if (c->cell_id == id) {
            c->n = n;
            c->correct = correct;
            c->invalid = invalid;
            c->errors = errors;
            c->cost_usd = cost;
        }
    }
    return 0;
}

/* A soft cell's prompt, before its rows are scored: loaded when its configuration was trained
 * before, else trained (resuming a checkpoint); the cell is linked to its soft_prompts row. */
static int soft_prompt_for(runner *R, rcell *c, pwb_err *e)
{
    softjob *j = c->job;
    char label[64];
    snprintf(label, sizeof label, "train %s", R->me[c->k].sm->name);
    j->o.db = R->db;
    j->o.stop = R->o->stop;
    j->o.progress = R->o->progress;
    j->o.progress_label = label;
    if (R->o->progress && !j->reusable)
        fprintf(R->o->progress, "pwb: %s/%s/%s: training a soft prompt of %d tokens, %ld steps of %d examples, "
                "into %s\n", R->ds[c->d].card.name, R->mo[c->m].sm->name, R->me[c->k].sm->name,
                j->cfg.n_tokens, j->planned_steps, j->cfg.batch, j->dir);
    double t0 = timer_wall();
    int rc = softjob_run(j, e);
    j->o.progress_label = NULL;
    /* training is no part of the answering rate the run's progress bar and summary show */
    const double dt = timer_wall() - t0;
    R->r->soft_wall_s += dt;
    R->prog.start += dt;
    if (soft_result(c, c->res, 0))
        return err_set(e, PWB_ENOMEM, "out of memory");
    if (rc == PWB_EINTR)
        return err_set(e, PWB_EINTR, "interrupted while training the soft prompt of %s/%s/%s at step %ld of %ld "
                       "(checkpoint in %s): run the suite again to resume", R->ds[c->d].card.name,
                       R->mo[c->m].sm->name, R->me[c->k].sm->name, j->res.steps, j->planned_steps, j->dir);
    if (rc)
        return err_prefix(e, "%s/%s/%s: soft prompt: ", R->ds[c->d].card.name, R->mo[c->m].sm->name,
                          R->me[c->k].sm->name);
    softjob_close_model(j); /* the training engine's memory is no longer needed */
    return j->sp_id > 0 ? db_cell_set_soft_prompt(R->db, c->id, j->sp_id, e) : PWB_OK;
}

static int execute(runner *R, pwb_err *e)
{
    double t0 = timer_wall();
    int rc = budget_resume(R, e);
    int soft_stop = 0;
    for (int i = 0; i < R->ncells && !rc && !stopped(R); i++) {
        rcell *c = &R->cells[i];
        if (c->job && c->n_todo > 0) {
            rc = soft_prompt_for(R, c, e);
            if (rc == PWB_EINTR) {
                soft_stop = 1;
                break;
            }
        }
        if (!rc)
            rc = run_cell(R, c, e);
        if (c->job) /* the vectors were for this cell only */
            softprompt_free(&c->job->prompt);
    }
    R->r->wall_s = timer_wall() - t0 - R->r->soft_wall_s;
    progress_finish(&R->prog);
    if (R->o->max_cost_usd > 0)
        R->r->spent_usd = llm_budget_spent(&R->budget);
    if (soft_stop) {
        R->r->interrupted = 1;
    } else if (rc == PWB_ELIMIT && R->limited) {
        R->r->limited = 1;
        rc = err_set(e, PWB_ELIMIT, "%.700s; %ld predictions kept, the rest not sent: run again with a higher "
                     "--max-cost to continue", R->limit_err.msg, R->r->n_new);
    } else if (!rc && stopped(R)) {
        R->r->interrupted = 1;
        rc = err_set(e, PWB_EINTR, "interrupted: %ld predictions kept; run the suite again to resume", R->r->n_new);
    }
    return rc;
}

/* ---- the whole run ------------------------------------------------------------------------ */

static void runner_free(runner *R)
{
    for (int i = 0; i < R->nds; i++) {
        rds *d = &R->ds[i];
        card_free(&d->card);
        ds_data_free(&d->eval);
        ds_data_free(&d->shots);
        free(d->sample);
        free(d->split);
        free(d->shot_split);
        free(d->rank_choices);
        free(d->soft_split);
        for (int k = 0; k < d->n_tr; k++) {
            free(d->tr_names[k]);
            ds_data_free(&d->tr_data[k]);
        }
        free(d->tr_names);
        free(d->tr_data);
    }
    free(R->ds);
    for (int i = 0; i < R->nme; i++) {
        template_free(&R->me[i].tpl);
        free(R->me[i].tpl_path);
    }
    free(R->me);
    for (int i = 0; i < R->nmo; i++) {
        if (R->mo[i].be)
            llm_backend_free(R->mo[i].be);
        buf_free(&R->mo[i].tokenizer);
    }
    free(R->mo);
    for (int i = 0; i < R->ncells; i++) {
        if (R->cells[i].sc)
            scorer_free(R->cells[i].sc);
        free(R->cells[i].todo);
        free(R->cells[i].own_rows);
        softjob_free(R->cells[i].job);
        free(R->cells[i].job);
        free(R->cells[i].soft_dir);
    }
    free(R->cells);
    prices_free(&R->prices);
    llm_budget_free(&R->budget);
    if (R->db)
        db_close(R->db);
    suite_free(&R->suite);
    buf_free(&R->suite_dir);
    pthread_mutex_destroy(&R->lock);
}

/* ---- the dry run's estimate --------------------------------------------------------------- */

/* Renders every sampled example of cell c, as the run would, and counts what its requests send. */
static int estimate_cell(runner *R, rcell *c, llm_counter *counter, run_cell_result *cr, pwb_err *e)
{
    const rmodel *mo = &R->mo[c->m];
    size_t chunk = R->o->chunk > 0 && R->o->chunk <= RUN_MAX_CHUNK ? (size_t)R->o->chunk : RUN_DEFAULT_CHUNK;
    item *items = calloc(chunk, sizeof *items);
    llm_request *reqs = calloc(chunk, sizeof *reqs);
    pwb_buf scratch;
    buf_init(&scratch);
    int rc = (!items || !reqs) ? err_set(e, PWB_ENOMEM, "out of memory") : PWB_OK;
    for (size_t start = 0; !rc && start < c->n_rows && !stopped(R); start += chunk) {
        size_t n = c->n_rows - start < chunk ? c->n_rows - start : chunk;
        memset(items, 0, n * sizeof *items);
        size_t built = 0;
        for (; built < n && !rc; built++)
            rc = build_item(R, c, &items[built], c->rows[start + built], &scratch, e);
        for (size_t i = 0; !rc && i < n; i++)
            reqs[i] = items[i].req;
        if (!rc)
            rc = llm_counter_add(counter, reqs, n, mo->price.known ? &mo->price : NULL, &cr->est, e);
        if (rc)
            err_prefix(e, "%s: cell %s/%s/%s: ", R->suite.path, cr->dataset, cr->model, cr->method);
        for (size_t i = 0; i < built; i++)
            item_free(&items[i]);
    }
    free(items);
    free(reqs);
    buf_free(&scratch);
    cr->est_exact = llm_counter_exact(counter);
    cr->est_priced = mo->price.known;
    str_copy(cr->est_method, sizeof cr->est_method, llm_counter_method(counter));
    return rc;
}

/* Per cell: requests, HTTP calls, prompt tokens (with the model's own tokenizer where pwb has it),
 * the most that may be generated, and the cost at the model's price. Sends nothing. */
static int dry_run_estimate(runner *R, pwb_err *e)
{
    run_result *r = R->r;
    llm_counter **counters = calloc((size_t)(R->nmo ? R->nmo : 1), sizeof *counters);
    if (!counters)
        return err_set(e, PWB_ENOMEM, "out of memory");
    int rc = PWB_OK;
    for (int i = 0; i < R->ncells && !rc && !stopped(R); i++) {
        rcell *c = &R->cells[i];
        rmodel *mo = &R->mo[c->m];
        if (!counters[c->m] && (rc = llm_counter_open(&counters[c->m], &mo->cfg, e))) {
            err_prefix(e, "%s: model '%s': ", R->suite.path, mo->sm->name);
            break;
        }
        run_cell_result *cr = &r->cells[i];
        if ((rc = estimate_cell(R, c, counters[c->m], cr, e)))
            break;
        r->est.requests += cr->est.requests;
        r->est.calls += cr->est.calls;
        r->est.tokens_in += cr->est.tokens_in;
        r->est.tokens_out_max += cr->est.tokens_out_max;
        r->est.cost_usd += cr->est.cost_usd;
    }
    for (int i = 0; i < R->nmo; i++)
        llm_counter_free(counters[i]);
    free(counters);
    if (!rc && stopped(R))
        rc = err_set(e, PWB_EINTR, "interrupted");
    return rc;
}

static int dry_run_result(runner *R, pwb_err *e)
{
    run_result *r = R->r;
    r->cells = calloc((size_t)(R->ncells ? R->ncells : 1), sizeof *r->cells);
    if (!r->cells)
        return err_set(e, PWB_ENOMEM, "out of memory");
    r->n_cells = R->ncells;
    for (int i = 0; i < R->ncells; i++) {
        rcell *c = &R->cells[i];
        run_cell_result *cr = &r->cells[i];
        cr->dataset = str_dup(R->ds[c->d].card.name);
        cr->model = str_dup(R->mo[c->m].sm->name);
        cr->method = str_dup(R->me[c->k].sm->name);
        cr->n_planned = (long)c->n_rows;
        if (!cr->dataset || !cr->model || !cr->method || (c->job && soft_result(c, cr, 1)))
            return err_set(e, PWB_ENOMEM, "out of memory");
    }
    return dry_run_estimate(R, e);
}

int run_suite(const run_opts *o, run_result *r, pwb_err *e)
{
    memset(r, 0, sizeof *r);
    runner R;
    memset(&R, 0, sizeof R);
    R.o = o;
    R.r = r;
    suite_init(&R.suite);
    buf_init(&R.suite_dir);
    pthread_mutex_init(&R.lock, NULL);
    prices_init(&R.prices);
    llm_budget_init(&R.budget, o->max_cost_usd, 0);
    int rc = prepare(&R, e);
    if (!rc && stopped(&R)) /* Ctrl-C while loading: leave the database alone */
        rc = err_set(e, PWB_EINTR, "interrupted before the run started");
    if (!rc && o->dry_run) {
        rc = dry_run_result(&R, e);
    } else if (!rc) {
        rc = plan(&R, e);
        if (!rc)
            rc = execute(&R, e);
        if (R.db && r->run_id) {
            pwb_err e2;
            err_clear(&e2);
            char sql[160];
            snprintf(sql, sizeof sql, "SELECT * FROM v_summary WHERE run_id = %lld", (long long)r->run_id);
            int rc2 = db_query(R.db, sql, summary_row, r, &e2);
            if (!rc2)
                rc2 = db_run_finish(R.db, r->run_id,
                                    rc == PWB_OK       ? "complete"
                                    : rc == PWB_EINTR  ? "interrupted"
                                    : rc == PWB_ELIMIT ? "limited"
                                                       : "failed",
                                    &e2);
            if (rc2 && !rc) {
                *e = e2;
                rc = rc2;
            }
        }
    }
    runner_free(&R);
    return rc;
}
