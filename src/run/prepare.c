/* The runner's first phase: everything is loaded and checked before the database is opened. */
#include "tune/method.h"
#include "run/run_internal.h"

#include <stdlib.h>
#include <string.h>

#include "llm/provider.h"
#include "run/request.h"
#include "task/catalog.h"
#include "util/file.h"
#include "util/log.h"
#include "util/sha256.h"
#include "util/str.h"

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
    buf_printf(&search, "%s/templates:%s/../templates:%s", R->suite_dir.data, R->suite_dir.data,
               R->o->template_dirs ? R->o->template_dirs : "templates");
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
        if (m->sm->shot_pick)
            m->tpl.shot_pick = template_shot_pick_parse(m->sm->shot_pick);
        if (m->sm->shots_as_turns >= 0)
            m->tpl.shots_as_turns = m->sm->shots_as_turns;
        if (m->tpl.shots > RUN_MAX_SHOTS) {
            buf_free(&path);
            return err_set(e, PWB_ERANGE, "%s: %d shots is more than the limit of %d", m->tpl_path, m->tpl.shots,
                           RUN_MAX_SHOTS);
        }
        m->calib = calib_kind_parse(m->sm->calibration);
        if (m->sm->optimize && m->sm->opt.n_templates > 0) {
            m->xtpl = calloc((size_t)m->sm->opt.n_templates, sizeof *m->xtpl);
            if (!m->xtpl) {
                buf_free(&path);
                return err_set(e, PWB_ENOMEM, "out of memory");
            }
            for (int t = 0; t < m->sm->opt.n_templates && !rc; t++) {
                template_init(&m->xtpl[t]);
                m->n_xtpl++;
                suite_method alt = *m->sm;
                alt.template_path = (char *)m->sm->opt.templates[t];
                rc = resolve_template(R, &alt, &path, e);
                if (!rc)
                    rc = template_load(&m->xtpl[t], path.data, e);
                if (!rc && m->xtpl[t].shots > RUN_MAX_SHOTS)
                    rc = err_set(e, PWB_ERANGE, "%s: %d shots is more than the limit of %d", path.data,
                                 m->xtpl[t].shots, RUN_MAX_SHOTS);
            }
            if (rc) {
                buf_free(&path);
                return rc;
            }
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

int run_check_overlap(runner *R, rds *d, const ds_data *other, const char *what, long line, pwb_err *e)
{
    size_t k = dataset_overlap(&d->eval, d->sample, d->n_sample, other);
    if (k == 0)
        return PWB_OK;
    if (k == (size_t)-1)
        return err_set(e, PWB_ENOMEM, "out of memory");
    char at[32] = ""; /* the line that names the overlapping split */
    if (line > 0)
        snprintf(at, sizeof at, ":%ld", line);
    if (d->sd->allow_overlap) {
        log_warn("%s%s: dataset '%s': %zu of the evaluated rows (split '%s') are also %s rows (split '%s'); allowed "
                 "by allow_overlap", R->suite.path, at, d->sd->name, k, d->split, what, other->split);
        return PWB_OK;
    }
    return err_set(e, PWB_EINVAL,
                   "%s%s: dataset '%s': %zu of the evaluated rows (split '%s') are also %s rows (split '%s'); use "
                   "disjoint slices (e.g. \"validation@1[200:]\" and \"validation@1[:200]\") or set \"allow_overlap\": "
                   "true",
                   R->suite.path, at, d->sd->name, k, d->split, what, other->split);
}

static int load_shots(runner *R, rds *d, pwb_err *e)
{
    const char *fs = d->sd->shot_split        ? d->sd->shot_split
                     : d->card.few_shot_split ? d->card.few_shot_split
                                              : "train";
    if (d->sd->shot_split && !card_split(&d->card, fs))
        return err_set(e, PWB_EINVAL, "%s: dataset '%s': card %s has no split '%s' (shot_split)", R->suite.path,
                       d->sd->name, d->card.path, fs);
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
    /* the picker reads the card's few_shot_split (the card is our copy) */
    if (d->sd->shot_split) {
        free(d->card.few_shot_split);
        if (!(d->card.few_shot_split = str_dup(fs)))
            return err_set(e, PWB_ENOMEM, "out of memory");
    }
    return run_check_overlap(R, d, &d->shots, "few-shot", d->sd->shot_split ? d->sd->shot_line : 0, e);
}

static const ds_data *shot_data(const rds *d) { return d->shots_same ? &d->eval : &d->shots; }

void run_item_free(item *it)
{
    dataset_choices_free(it->choices, it->n_choices);
    tpl_prompt_free(&it->prompt);
    free(it->msgs);
    buf_free(&it->flat);
    llm_response_clear(&it->resp);
}

/* Renders x with the shots a query at shot_query gets (an index into the shot data: the query's
 * own index when shots come from the eval split; SIZE_MAX for an input outside it). */
static int item_render(runner *R, const rcell *c, item *it, const ds_example *x, size_t shot_query, pwb_err *e)
{
    rds *d = &R->ds[c->d];
    const pwb_template *t = run_cell_template(R, c);
    const ds_card *card = run_cell_card(R, c);
    buf_init(&it->flat);
    if (c->fixed_demos)
        return template_render(t, card, x, c->demos, c->n_demos, &it->prompt, e);
    rmethod *m = &R->me[c->k];
    const ds_example *shots[RUN_MAX_SHOTS];
    size_t rows[RUN_MAX_SHOTS];
    int ns = m->tpl.shots;
    if (ns > 0) {
        const ds_data *sd = run_cell_shot_pool(R, c);
        const size_t *near = NULL;
        if (c->near && shot_query != SIZE_MAX && c->near_k == ns)
            for (size_t i = 0; i < c->n_rows && !near; i++)
                if (c->rows[i] == shot_query)
                    near = c->near + i * (size_t)ns;
        int rc = near ? (memcpy(rows, near, (size_t)ns * sizeof *rows), PWB_OK)
                      : template_pick_shots(&m->tpl, &d->card, sd, shot_query, d->shots_same && !c->has_pool,
                                            R->suite.seed, rows, e);
        if (rc)
            return rc;
        for (int i = 0; i < ns; i++) {
            if (rows[i] >= sd->n)
                return err_set(e, PWB_ERANGE, "%s: shot row %zu outside the split", m->tpl_path, rows[i]);
            shots[i] = &sd->ex[rows[i]];
        }
    }
    return template_render(&m->tpl, card, x, shots, ns, &it->prompt, e);
}

static int item_request(runner *R, const rcell *c, item *it, const ds_example *x, pwb_buf *scratch, pwb_err *e);

const pwb_template *run_cell_template(const runner *R, const rcell *c)
{
    return c->tpl_over ? c->tpl_over : &R->me[c->k].tpl;
}

const ds_card *run_cell_card(const runner *R, const rcell *c)
{
    return c->card_over ? c->card_over : c->has_words ? &c->words : &R->ds[c->d].card;
}

const ds_data *run_cell_shot_pool(const runner *R, const rcell *c)
{
    return c->has_pool ? &c->pool : shot_data(&R->ds[c->d]);
}

int run_item_build_example(runner *R, const rcell *c, item *it, const ds_example *x, pwb_buf *scratch, pwb_err *e)
{
    it->ex = SIZE_MAX;
    int rc = item_render(R, c, it, x, SIZE_MAX, e);
    return rc ? rc : item_request(R, c, it, x, scratch, e);
}

/* Renders the example's prompt and fills its request. */
int run_item_build(runner *R, const rcell *c, item *it, size_t ex, pwb_buf *scratch, pwb_err *e)
{
    it->ex = ex;
    int rc = item_render(R, c, it, &R->ds[c->d].eval.ex[ex], ex, e);
    return rc ? rc : item_request(R, c, it, &R->ds[c->d].eval.ex[ex], scratch, e);
}

int run_item_build_input(runner *R, const rcell *c, item *it, const char *input, int premise, pwb_buf *scratch,
                         pwb_err *e)
{
    /* no fields, no answer, no label: only the text the template shows as {{input}} */
    ds_example x;
    memset(&x, 0, sizeof x);
    x.input = (char *)(premise ? CALIB_MARKER : input);
    x.label = -1;
    x.answer_idx = -1;
    /* a per-row multiple-choice prompt keeps its lettered options, each the content-free text:
     * the prior is then the letters' bias in the very format the rows are asked in */
    const ds_card *card = &R->ds[c->d].card;
    char *opts[DS_MAX_LABELS];
    if (card->n_option_fields > 0 && !premise && card->n_labels <= DS_MAX_LABELS) {
        for (int i = 0; i < card->n_labels; i++)
            opts[i] = (char *)(input ? input : "");
        x.options = opts;
        x.n_options = card->n_labels;
    }
    it->ex = SIZE_MAX;
    int rc = item_render(R, c, it, &x, SIZE_MAX, e);
    if (!rc && premise)
        rc = calib_premise(&it->prompt, e);
    return rc ? rc : item_request(R, c, it, &x, scratch, e);
}

/* Flattens the rendered prompt and fills the request (x: the example, for its options). */
static int item_request(runner *R, const rcell *c, item *it, const ds_example *x, pwb_buf *scratch, pwb_err *e)
{
    rmethod *m = &R->me[c->k];
    rmodel *mo = &R->mo[c->m];
    if (tpl_prompt_flatten(&it->prompt, &it->flat))
        return err_set(e, PWB_ENOMEM, "out of memory");
    sha256_hex(it->flat.data, it->flat.len, it->psha);
    llm_request *q = &it->req;
    memset(q, 0, sizeof *q);
    const int rank = m->rank && !c->generate;
    q->mode = rank ? LLM_RANK : LLM_GENERATE;
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
    const pwb_template *t = run_cell_template(R, c);
    q->max_tokens = mo->sm->max_tokens > 0 ? mo->sm->max_tokens : t->max_tokens > 0 ? t->max_tokens : 16;
    q->temperature = c->generate ? 0 : mo->sm->temperature;
    q->top_p = 1.0;
    q->seed = R->suite.seed;
    if (rank) {
        if (!(it->choices = template_choices_delim(t, run_cell_card(R, c), x, mo->sm->target_delimiter, &it->n_choices)))
            return err_set(e, PWB_ENOMEM, "out of memory");
        q->choices = (const char *const *)it->choices;
        q->n_choices = it->n_choices;
    }
    if (c->job && c->job->prompt.w) {
        /* the trained prompt before the rendered input; its values name it in the cache key */
        q->prefix_embeds = c->job->prompt.w;
        q->n_prefix_embeds = c->job->prompt.n_tokens;
        q->prefix_dim = c->job->prompt.dim;
        q->prefix_id = c->job->prompt_sha256;
    } else if (c->job && c->job->adapter.kind != TUNE_PROMPT) {
        /* a LoRA or prefix adapter the model runs with, named by its values like a prompt */
        q->adapter = &c->job->adapter;
        q->prefix_id = c->job->prompt_sha256;
    }
    it->cacheable = !R->o->no_cache && req_cacheable(q);
    if (it->cacheable && req_cache_key(run_cell_config(R, c), q, it->key, scratch))
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
    buf_init(&m->file);
    if (sm->provider && !strcmp(sm->provider, "local") && sm->model && sm->model[0] != '/' && !file_exists(sm->model)) {
        /* a suite's "models/x.gguf" from any folder: beside the suite, then the checkout's (suites/..)
         * and the one pwb came from */
        const char *h = catalog_home();
        buf_printf(&m->file, "%s/%s", R->suite_dir.data, sm->model);
        if (!file_exists(m->file.data)) {
            buf_reset(&m->file);
            buf_printf(&m->file, "%s/../%s", R->suite_dir.data, sm->model);
        }
        if (!file_exists(m->file.data) && h) {
            buf_reset(&m->file);
            buf_printf(&m->file, "%s/%s", h, sm->model);
        }
        if (file_exists(m->file.data))
            raw.model = m->file.data;
    }
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
    const llm_provider *p = llm_provider_find(m->cfg.provider);
    const unsigned flags = p ? p->flags : 0;
    m->completion = (flags & LLM_PROVIDER_PROMPT) != 0;
    m->messages = !m->completion || (m->cfg.chat_template && m->cfg.chat_template[0]);
    m->can_rank = (flags & LLM_PROVIDER_RANKS) != 0;
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

/* A method with a train_limit draws its shots from that many rows of the shot split: the first
 * of its seeded permutation, so a smaller budget's pool is part of a larger one's. */
static int cell_pool(runner *R, rcell *c, pwb_err *e)
{
    const rds *d = &R->ds[c->d];
    const rmethod *m = &R->me[c->k];
    long lim = m->sm->train_limit;
    if (m->soft || m->tpl.shots <= 0 || lim < 0 || m->sm->optimize)
        return PWB_OK;
    if (lim < m->tpl.shots)
        return err_set(e, PWB_EINVAL, "%s: method '%s': train_limit %ld is fewer than its %d shots", R->suite.path,
                       m->sm->name, lim, m->tpl.shots);
    if (d->shots_same) {
        /* shots from the eval split itself: a pool would have to exclude each query; keep them all */
        log_warn("%s: method '%s': shots come from the evaluated split, so train_limit does not narrow them",
                 R->suite.path, m->sm->name);
        return PWB_OK;
    }
    const ds_data *sd = &d->shots;
    size_t *idx = malloc((sd->n ? sd->n : 1) * sizeof *idx);
    if (!idx)
        return err_set(e, PWB_ENOMEM, "out of memory");
    size_t n = dataset_sample(sd, (size_t)lim, R->suite.seed, idx);
    c->pool = *sd;
    c->pool.ex = malloc((n ? n : 1) * sizeof *c->pool.ex);
    if (!c->pool.ex) {
        free(idx);
        memset(&c->pool, 0, sizeof c->pool);
        return err_set(e, PWB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        c->pool.ex[i] = sd->ex[idx[i]];
    c->pool.n = n;
    c->has_pool = 1;
    free(idx);
    return PWB_OK;
}

/* label_words: a view of the card whose labels carry the method's words (aliases and values as
 * the card has them, so answers are still read and stored by label). */
static int cell_words(runner *R, rcell *c, pwb_err *e)
{
    const suite_method *sm = R->me[c->k].sm;
    const ds_card *card = &R->ds[c->d].card;
    if (sm->n_label_words <= 0)
        return PWB_OK;
    if (sm->n_label_words != card->n_labels)
        return err_set(e, PWB_EINVAL, "%s: method '%s': label_words has %d words; card %s has %d labels", R->suite.path,
                       sm->name, sm->n_label_words, card->path, card->n_labels);
    c->words = *card;
    if (!(c->words.labels = malloc((size_t)card->n_labels * sizeof *c->words.labels)))
        return err_set(e, PWB_ENOMEM, "out of memory");
    for (int i = 0; i < card->n_labels; i++) {
        c->words.labels[i] = card->labels[i];
        c->words.labels[i].verbalizer = sm->label_words[i];
    }
    c->words.relabeled = 1;
    c->has_words = 1;
    return PWB_OK;
}

long run_cell_budget(const runner *R, const rcell *c)
{
    const rmethod *m = &R->me[c->k];
    if (m->soft) /* what the soft prompt reads: its training rows and its held-out slice */
        return m->sm->soft.train_limit > 0 ? m->sm->soft.train_limit + m->sm->soft.eval_n : -1;
    if (m->sm->optimize) /* the search reads at most its budget */
        return m->sm->train_limit;
    if (m->tpl.shots <= 0)
        return 0;
    return c->has_pool ? (long)c->pool.n : -1;
}

/* Builds the cells and checks each: the template against the card, the scorer, one rendering. */
/* A method's served_model: on an HTTP model the cell asks the server for that model id (the
 * method's adapter as the server serves it) through a backend of its own; a tuned method's cell on
 * a local model trains and runs the adapter itself instead. */
static int cell_served(runner *R, rcell *c, pwb_err *e)
{
    rmodel *mo = &R->mo[c->m];
    rmethod *m = &R->me[c->k];
    if (!strcmp(mo->cfg.provider, "local")) {
        if (m->soft)
            return PWB_OK;
        return err_set(e, PWB_EINVAL,
                       "%s: cell %s/%s/%s: method '%s' names served_model '%s', which HTTP models ask a server for; "
                       "local model '%s' has no adapter of that name (give the method a tuning object to train "
                       "one, or run it on an HTTP model)",
                       R->suite.path, R->ds[c->d].card.name, mo->sm->name, m->sm->name, m->sm->name,
                       m->sm->served_model, mo->sm->name);
    }
    if (m->rank && !mo->can_rank)
        return err_set(e, PWB_EUNSUP,
                       "%s: cell %s/%s/%s: method '%s' ranks labels by log-likelihood, which model '%s' (provider %s) "
                       "cannot give; use provider openai-completions against the server of '%s'",
                       R->suite.path, R->ds[c->d].card.name, mo->sm->name, m->sm->name, m->sm->name, mo->sm->name,
                       mo->sm->provider, m->sm->served_model);
    c->cfg = mo->cfg;
    c->cfg.model = m->sm->served_model;
    int rc = llm_backend_create(&c->be, &c->cfg, e);
    if (rc)
        return err_prefix(e, "%s: model '%s', method '%s': ", R->suite.path, mo->sm->name, m->sm->name);
    c->be->stop = R->o->stop;
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
            if ((m->tpl.shots > 0 || m->sm->optimize) && !d->needs_shots) {
                /* first: it may point the card's few_shot_split at the eval split */
                d->needs_shots = 1;
                rc = load_shots(R, d, e);
            }
            if (!rc)
                rc = template_check(&m->tpl, &d->card, e);
            for (int t = 0; !rc && t < m->n_xtpl; t++)
                rc = template_check(&m->xtpl[t], &d->card, e);
            if (!rc && m->sm->optimize && d->shots_same)
                rc = err_set(e, PWB_EINVAL, "%s: method '%s': prompt search needs a training split besides the "
                             "evaluated one (card %s has none)", R->suite.path, m->sm->name, d->card.path);
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
                    rc = cell_pool(R, c, e);
                if (!rc)
                    rc = cell_words(R, c, e);
                if (!rc)
                    rc = scorer_init(&c->sc, run_cell_card(R, c), R->me[k].tpl.answer_pattern, e);
                if (!rc && R->me[k].sm->served_model)
                    rc = cell_served(R, c, e);
                if (!rc && R->me[k].soft && !c->be)
                    rc = run_soft_prepare(R, c, e);
                if (rc)
                    break;
                /* Render the first sampled example now: a template that cannot render fails here,
                 * before the database, not halfway through the run. */
                item it;
                memset(&it, 0, sizeof it);
                rc = run_item_build(R, c, &it, c->rows[0], &scratch, e);
                run_item_free(&it);
                if (!rc && R->me[k].rank && R->me[k].calib != CALIB_NONE &&
                    template_ranks_row_text(run_cell_template(R, c), &R->ds[di].card))
                    rc = err_set(e, PWB_EINVAL,
                                 "%s: method '%s': calibration needs the same continuations on every row, but %s ranks "
                                 "each row's own option texts (dataset '%s'); rank the letters (\"choices: label\") "
                                 "to calibrate",
                                 R->suite.path, R->me[k].sm->name, R->me[k].tpl_path, R->ds[di].sd->name);
                if (!rc && R->me[k].rank && R->me[k].calib == CALIB_PMI) { /* its premise too */
                    memset(&it, 0, sizeof it);
                    rc = run_item_build_input(R, c, &it, NULL, 1, &scratch, e);
                    run_item_free(&it);
                    if (rc)
                        err_prefix(e, "%s: method '%s': calibration pmi: %s: ", R->suite.path, R->me[k].sm->name,
                                   R->me[k].tpl_path);
                }
            }
        }
    }
    free(ok);
    buf_free(&scratch);
    return rc;
}

int run_prepare(runner *R, pwb_err *e)
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
