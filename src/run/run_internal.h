/* Private to src/run: the runner's state, shared by its phases (run.c drives them):
 *   prepare.c  - load and validate everything (suite, cards, splits, templates, scorers, backends)
 *                without touching the database, so bad input leaves it as it was;
 *   soft.c     - soft-prompt cells: their training split, job and result;
 *   plan.c     - open the database, find or create the run, its cells and their finished rows;
 *   execute.c  - per cell, per chunk of rows: render, cache, backend, score, one transaction;
 *   estimate.c - the dry run: what each cell's requests would send and cost. */
#ifndef PWB_RUN_RUN_INTERNAL_H
#define PWB_RUN_RUN_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "llm/backend.h"
#include "llm/budget.h"
#include "llm/prices.h"
#include "run/run.h"
#include "run/softjob.h"
#include "run/suite.h"
#include "store/db.h"
#include "task/calib.h"
#include "task/dataset.h"
#include "task/score.h"
#include "task/template.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/str.h"

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
    int soft;         /* a soft prompt: tpl is its input format (with its shots, if any) */
    int calib;        /* enum calib_kind: how rank scores are corrected */
    pwb_template *xtpl; /* prompt search: optimize.templates, loaded (candidate template k + 1) */
    int n_xtpl;
} rmethod;

typedef struct rmodel {
    const suite_model *sm;
    llm_config cfg;   /* resolved (llm_config_resolve): the preset applied */
    llm_backend *be;
    int completion;   /* its provider sends a prompt, not chat messages (openai-completions) */
    int messages;     /* requests carry chat messages (chat providers, and completions with a
                       * chat_template, which renders them) */
    int can_rank;     /* its provider ranks (local, or a /v1/completions server's prompt log-probabilities) */
    llm_price price;  /* what its tokens cost: the suite's, else the shipped table's */
    pwb_buf tokenizer;/* cfg.tokenizer resolved against the suite's folder */
    pwb_buf file;     /* a local model's file, found from the working directory or the suite's */
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
    ds_data pool;  /* the shots' pool when the method declares a train_limit: a view (ex is owned,
                    * its examples are borrowed) of that many seeded rows of the shot split */
    int has_pool;
    double *prior; /* calibrated rank cells: the per-label log-prior (calibrate.c), else NULL */
    /* What renders the cell's prompts when not its method's template, card and shot rule: a prompt
     * search's candidate or winner (optimize.c). */
    const pwb_template *tpl_over;
    const ds_card *card_over;
    const ds_example *const *demos; /* with fixed_demos: exactly these shots */
    int n_demos;
    int fixed_demos;
    int calib_nostore;  /* a candidate's calibration: not the cell's, so not stored */
    int generate;       /* a search's chain-of-thought bootstrap: greedy generation, even in a
                         * rank method (optimize.c) */
    double calib_cpu_s; /* what the last calibration cost */
    pwb_template own_tpl; /* the search's winner, loaded */
    long search_evals, search_read;
    /* A method's served_model on an HTTP model: the cell's own backend, its model's settings with
     * that model id (what the requests name and the response cache keys on). NULL otherwise. */
    llm_backend *be;
    llm_config cfg;
    ds_card words;        /* label_words: the dataset's card with those verbalizers (a shallow copy
                           * whose labels array is owned) */
    int has_words;
    size_t *near;         /* shot_pick similar: for each of the cell's rows (rows[i]) its shots'
                           * indices into the shot pool, near_k of them, nearest first */
    int near_k;
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
    double step_s;       /* seconds per training step, measured by this invocation (0: none yet) */
    char prog_label[128];
    pthread_mutex_t lock;
    run_result *r;
    price_table prices;  /* the shipped table, loaded when a model has no price of its own */
    int prices_loaded;
    llm_budget budget;   /* --max-cost, shared by every model */
    int limited;         /* the budget stopped a batch */
    pwb_err limit_err;   /* what it said */
    /* One writer per run (writer.c): the claim, and the heartbeat thread while it is held. */
    int claimed;
    int waited;          /* --wait: said once that another process holds the run */
    pthread_t hb;
    int hb_on, hb_stop;
    pthread_mutex_t hb_mu;
    pthread_cond_t hb_cv;
} runner;

/* Where a cell's requests go, and the settings its cache keys are made of: its own backend (a
 * served adapter) or its model's. */
static inline llm_backend *run_cell_backend(const runner *R, const rcell *c)
{
    return c->be ? c->be : R->mo[c->m].be;
}
static inline const llm_config *run_cell_config(const runner *R, const rcell *c)
{
    return c->be ? &c->cfg : &R->mo[c->m].cfg;
}

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
    char **choices;     /* rank: the continuations compared (template_choices) */
    int n_choices;
    int cached;
    int finished;
} item;

static inline int run_stopped(const runner *R) { return R->o->stop && *R->o->stop; }

/* prepare.c */
int run_prepare(runner *R, pwb_err *e);
/* Renders example ex of eval for cell c and fills it->req (it zeroed by the caller). */
int run_item_build(runner *R, const rcell *c, item *it, size_t ex, pwb_buf *scratch, pwb_err *e);
void run_item_free(item *it);

/* The rendering for a calibration input (calibrate.c): input replaces the example's text, the
 * shots are those a query outside the shot split gets; premise: cut to PMI's domain premise. */
int run_item_build_input(runner *R, const rcell *c, item *it, const char *input, int premise, pwb_buf *scratch,
                         pwb_err *e);
/* Renders a labelled example outside the eval split (a prompt search's held-out row). */
int run_item_build_example(runner *R, const rcell *c, item *it, const ds_example *x, pwb_buf *scratch, pwb_err *e);
/* The template cell c renders with. */
const pwb_template *run_cell_template(const runner *R, const rcell *c);
/* The card a cell renders and ranks with: a search candidate's, its label_words view, or the
 * dataset's. */
const ds_card *run_cell_card(const runner *R, const rcell *c);
/* The pool a cell's shots come from (its train_limit's rows, or the whole shot split). */
const ds_data *run_cell_shot_pool(const runner *R, const rcell *c);
/* shot_pick similar: embeds the cell's shot pool and rows (through the response cache) and keeps
 * each row's nearest shots (embed.c). Needs the database open. */
int run_cell_neighbours(runner *R, rcell *c, pwb_err *e);
/* Candidate template t of a method: 0 its own, k the (k-1)th of optimize.templates. */
const pwb_template *run_method_template(const rmethod *m, int t);
/* The labelled training examples the cell's method may read (-1: all of the split). */
long run_cell_budget(const runner *R, const rcell *c);

/* execute.c: answers what the response cache holds, in one read transaction. */
int run_cache_lookup(runner *R, rcell *c, item *items, size_t n, pwb_err *e);

/* calibrate.c: a calibrated rank cell's prior, from its content-free inputs (or its domain
 * premise), computed (or read from the cache), stored with the cell, kept in c->prior. */
int run_calibrate(runner *R, rcell *c, pwb_err *e);
/* Answers items (built, not yet answered) from the cache or the cell's model; new answers go into
 * the cache. Not counted in the run's progress. */
int run_items_answer(runner *R, rcell *c, item *items, size_t n, pwb_err *e);

/* optimize.c: a searched method's cell: races its candidates on held-out training rows, writes
 * and loads the winner (or loads the one an earlier invocation wrote) as c->own_tpl. */
int run_optimize(runner *R, rcell *c, pwb_err *e);
/* Refuses (or, with the suite's allow_overlap, warns) when rows of other (shots, training) are
 * among d's evaluated rows; line: the suite's line naming other's split (0: none). */
int run_check_overlap(runner *R, rds *d, const ds_data *other, const char *what, long line, pwb_err *e);

/* soft.c */
int run_soft_prepare(runner *R, rcell *c, pwb_err *e);
int run_soft_result(const rcell *c, run_cell_result *cr, int dry);

/* plan.c: opens the database; fills R->r's cells and each cell's rows still to do. */
int run_plan(runner *R, pwb_err *e);

/* writer.c: makes this process the run's writer inside plan's transaction; PWB_EBUSY when another
 * live process is (with --wait, after saying once who it is). run_writer_start records the claim
 * and starts the heartbeat; run_writer_stop ends it and releases the run. */
int run_claim(runner *R, int64_t run_id, pwb_err *e);
void run_writer_start(runner *R);
void run_writer_stop(runner *R);

/* execute.c: scores every cell's rows still to do (training soft prompts first). */
int run_execute(runner *R, pwb_err *e);

/* estimate.c: the dry run's result, every cell's requests counted and priced. */
int run_estimate(runner *R, pwb_err *e);

#endif
