/* The runner: suite -> cells (dataset x model x method) -> per cell: load and sample the split,
 * pick shots, render prompts, answer from the response cache or the backend (in chunks), score,
 * and write predictions to SQLite in one transaction per chunk.
 *
 * Everything is validated before the database is opened (suite, cards, data files, templates
 * against cards, scorers, backends), so bad input leaves no database behind. A run is identified
 * by the suite's content sha256 (plus --limit when given): running the same suite again continues
 * its last run, skipping rows that already have a prediction.
 *
 * A soft-prompt method (src/run/softjob.h) runs on local models only: before its cell is scored
 * the prompt is loaded from <soft_dir>/<configuration key>/ when it was trained before, else
 * trained there (with a checkpoint, so Ctrl-C and a rerun resume it), its soft_prompts,
 * train_steps and train_evals rows recorded and the cell linked to it. */
#ifndef PWB_RUN_RUN_H
#define PWB_RUN_RUN_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "llm/estimate.h"
#include "util/err.h"

typedef struct run_opts {
    const char *suite_path;
    const char *db_path;
    int fresh;                 /* start a new run even if this suite ran before */
    int require_existing;      /* --resume: fail when there is no run to continue */
    long limit;                /* > 0: at most this many sampled examples per dataset */
    int concurrency;           /* > 0: overrides every model's concurrency */
    int chunk;                 /* requests per backend call / transaction (0: 256) */
    int dry_run;               /* validate and estimate (run_cell_result.est); nothing is sent and the
                                * database is not opened */
    double max_cost_usd;       /* > 0: stop before the run's spending (earlier invocations included)
                                * would pass this many USD (--max-cost) */
    int no_cache;              /* neither read nor write the response cache */
    const char *card_dirs;     /* ':'-separated folders searched for "<name>.json" cards */
    const char *data_path;     /* ':'-separated folders searched for data files after the card's */
    const char *template_dirs; /* ':'-separated folders searched for templates after the suite's */
    const char *soft_dir;      /* folder of trained soft prompts, one subfolder per configuration
                                * (NULL: "soft" beside the database) */
    volatile sig_atomic_t *stop; /* set asynchronously to stop (SIGINT); may be NULL */
    FILE *progress;            /* progress bar / lines; NULL for silence */
    int search_only;           /* `pwb optimize`: run the prompt searches, score no rows */
    int wait;                  /* another process writing the run: wait for it (else PWB_EBUSY) */
} run_opts;

void run_opts_init(run_opts *o);

typedef struct run_cell_result {
    int64_t cell_id;
    char *dataset, *model, *method;
    long n_planned;  /* examples sampled for the cell */
    long n;          /* predictions in the database (all invocations) */
    long correct, invalid, errors;
    double cost_usd;
    long n_new;      /* predictions written by this invocation */
    long n_cached;   /* of which answered from the response cache */
    char *search_template; /* a searched method's winner, written as a template file (else NULL) */
    /* --dry-run: what the whole cell would send (the cache and earlier invocations not counted). */
    llm_estimate est;
    int est_exact;         /* prompt tokens counted with the model's own tokenizer */
    int est_priced;        /* the model has a token price (est.cost_usd means something) */
    char est_method[96];   /* "tokenizer <file>" or "bytes/4" */
    /* Soft-prompt cells (with --dry-run: what the run would do). */
    int soft;              /* enum run_soft */
    char *soft_dir;        /* the prompt's PEFT folder */
    long soft_steps;       /* optimizer steps in total (dry run: planned) */
    int64_t soft_examples; /* training examples seen (dry run: planned) */
    int soft_n_train, soft_n_eval; /* training examples sampled, held-out slice */
    double soft_seconds;   /* training seconds in total, -1 unknown (dry run: 0) */
    double soft_best_acc;  /* held-out accuracy of the kept prompt; NAN unknown */
    int soft_resumes;      /* the training continues a checkpoint in soft_dir */
} run_cell_result;

enum run_soft {
    RUN_SOFT_NONE = 0,     /* a hard prompt, or a soft prompt this invocation did not need */
    RUN_SOFT_REUSED = 1,   /* the finished prompt of its configuration was loaded */
    RUN_SOFT_TRAINED = 2   /* trained by this invocation */
};

typedef struct run_result {
    int64_t run_id;
    int resumed;         /* continued an earlier run */
    int interrupted;
    run_cell_result *cells;
    int n_cells;
    long n_new, n_cached, n_errors; /* this invocation */
    long n_skipped;      /* rows already done before this invocation */
    double wall_s;       /* time spent answering (after validation; soft prompt training not included) */
    double soft_wall_s;  /* time spent training or loading soft prompts */
    int limited;         /* stopped by --max-cost (finished predictions committed) */
    double spent_usd;    /* with --max-cost: what the run has spent, earlier invocations included */
    llm_estimate est;    /* --dry-run: the sum over the cells */
} run_result;

void run_result_free(run_result *r);

/* Returns PWB_OK when every cell is complete (some predictions may carry errors: see
 * r->n_errors), PWB_EINTR when stopped through o->stop, PWB_ELIMIT when o->max_cost_usd would
 * have been passed (in both cases the finished predictions are committed and a rerun continues),
 * or an error with e naming the file and line. */
int run_suite(const run_opts *o, run_result *r, pwb_err *e);

#endif
