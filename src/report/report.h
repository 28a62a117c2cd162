/* Reports over the results database: a read model per run (run -> dataset x model groups ->
 * one row per method, plus a majority-class baseline) and renderers to markdown, CSV and JSON.
 * The API writes into a pwb_buf; the CLI decides where the bytes go. */
#ifndef PWB_REPORT_REPORT_H
#define PWB_REPORT_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "store/db.h"
#include "util/buf.h"
#include "util/err.h"

enum report_format { REPORT_MD = 0, REPORT_CSV = 1, REPORT_JSON = 2, REPORT_HTML = 3 };
/* "md" / "markdown", "csv", "json", "html"; PWB_EINVAL otherwise. */
int report_format_parse(const char *s, int *format, pwb_err *e);

/* How a group's cost column is expressed. */
enum report_cost_unit { REPORT_COST_NONE = 0, REPORT_COST_USD = 1, REPORT_COST_CPU_S = 2 };

typedef struct report_row {
    char *method, *kind;       /* baseline: "majority class", "baseline" */
    int64_t cell_id;           /* 0 for the baseline */
    int is_baseline, is_best;
    int majority_label;        /* baseline only */
    long n, n_planned, correct, invalid, errors, cached;
    double accuracy, ci_lo, ci_hi;   /* accuracy NAN when n == 0; interval is Wilson 95% */
    long n_norm, correct_norm;       /* rank cells: predictions with a length-normalised choice, and
                                      * how many of those were gold (acc_norm) */
    /* Exact McNemar vs the group's best method on the rows both have: b = only the best right,
     * c = only this row right. p is NAN for the best itself or without shared rows. */
    double mcnemar_p;
    long mcnemar_shared, mcnemar_b, mcnemar_c;
    double tokens_in_mean, tokens_out_mean;  /* NAN unknown */
    double latency_p50, latency_p95;         /* seconds, NAN unknown */
    double cost_usd, cpu_s;                  /* totals */
    double cost_per_1k;                      /* in the group's cost unit, NAN when none */
    /* Soft prompts: the training that produced the prompt (has_soft_prompt 0 otherwise). */
    int has_soft_prompt;
    db_soft_prompt_info soft_prompt;
    /* Per-example cost, for the training-cost and break-even columns. */
    double cpu_per_example;    /* CPU seconds per prediction that recorded it; NAN unknown */
    double cost_per_example;   /* cost_per_1k / 1000 (group unit); NAN unknown */
    /* Break-even (soft prompts): inferences after which the training time is repaid by the
     * cheaper input: train_seconds / (few-shot CPU-s per example - this row's). NAN: cannot be
     * computed (no few-shot row, no timings); INFINITY: never (the soft row is not cheaper). */
    double break_even;
    long break_even_ref;       /* the few-shot row compared against (index in the group), -1 none */
    /* The training curve of the soft prompt (empty otherwise). */
    db_train_step_info *train_steps;
    size_t n_train_steps;
    db_train_eval_info *train_evals;
    size_t n_train_evals;
    /* Sweeps: the sweep this row is a point of (NULL outside one), its point as stored, and the
     * point's value per axis of the sweep as text (NULL where the point lacks the axis). */
    char *sweep, *sweep_point;
    char **sweep_values;
    int n_sweep_values;
    int is_sweep_best;
    double sweep_p;            /* exact McNemar vs the sweep's best point; NAN for that one */
    /* Calibration and budget (schema 3): NULL / -1 when the run did not record them. */
    char *calibration;         /* "none", "contextual", "pmi" */
    double *calib_p;           /* the prior as label probabilities (softmax of calib_prior) */
    int n_calib_p;
    long train_limit;          /* labelled training examples the method may read; -1: all / unknown */
    int has_budget;            /* train_limit recorded (a run of schema 3 or later) */
    int has_shots;             /* the cell recorded a shot split: its prompts carried shots */
    db_prompt_search_info search; /* a searched method's search (found 0 otherwise) */
    /* ---- the verdict's inputs (verdict.c) ---- */
    int arm;                   /* enum report_arm */
    /* Labelled examples the method used: a prompt's shots, a tuned method's training set (its
     * train_limit, or the examples it saw when smaller) plus its input's shots. -1 unknown. */
    long labelled;
    /* One-time cost in CPU seconds before the first inference: training or prompt search; 0 for
     * a hand-written prompt; NAN unknown. fixed_estimated: derived from wall time (see verdict.c). */
    double fixed_cpu_s;
    int fixed_estimated;
    /* Confusion counts, n_labels rows (gold) x (n_labels + 2) columns: predicted label, then
     * invalid, then another answer. NULL without labels. */
    long *confusion;
    db_detail *details;        /* report_load_details: the predictions with their examples */
    size_t n_details;
} report_row;

enum report_arm { REPORT_ARM_ENGINEERED = 0, REPORT_ARM_TUNED = 1, REPORT_ARM_BASELINE = 2 };

/* The verdict of a group: the best engineered prompt against the best tuned method. */
typedef struct report_verdict {
    long engineered, tuned;    /* row indices, -1 when the group lacks that arm */
    long shared, only_e, only_t; /* rows both evaluated; rows only one of them got right */
    double gap, gap_lo, gap_hi; /* tuned - engineered accuracy on shared rows, paired 95% CI */
    double p;                  /* exact McNemar on the shared rows */
    int significant;           /* p < 0.05 */
    /* Volume: total CPU cost = fixed + per-example x V. v_flip is the V where the two totals are
     * equal (NAN: never; the reason in v_reason). */
    double v_flip;
    const char *v_reason;      /* static text; NULL when v_flip is finite */
    /* Labelled examples: the budget below which the engineered arm wins, from a budget sweep of
     * the tuned arm (NAN: no sweep with labelled counts). */
    double n_star;
    int n_star_upper;          /* the tuned arm already leads at its smallest budget: N* <= n_star */
} report_verdict;

/* A sweep within a group: the points of one suite method's grid, in suite order. */
typedef struct report_sweep {
    char *name;                /* the method's name as written in the suite */
    char **axes;               /* axis names in the suite's order */
    int n_axes;
    int x_axis;                /* charted along x: the first all-numeric axis, else 0 */
    size_t *rows;              /* indices into the group's rows */
    size_t n_rows;
    long best;                 /* index into rows[] of the most accurate point, -1 when none ran */
} report_sweep;

typedef struct report_group {
    char *dataset, *split, *model, *provider;
    int cost_unit;
    report_row *rows;          /* methods in suite order, then the baseline (if labels exist) */
    size_t n_rows;
    long best;                 /* index of the best method row, -1 when no row has predictions */
    report_sweep *sweeps;
    size_t n_sweeps;
    long few_shot_ref;         /* the row soft prompts break even against (best few-shot), -1 none */
    long baseline;             /* index of the majority-class row, -1 when none */
    char **labels;             /* label names by index (from the stored gold answers), NULL gaps */
    int n_labels;
    report_verdict verdict;
} report_group;

typedef struct pwb_report {
    db_run_info run;
    report_group *groups;
    size_t n_groups;
    /* Set by the caller (not owned): when non-NULL the markdown links each group's chart as
     * "<chart_dir>/<report_svg_filename>" (the caller writes the SVG files, see svg.h). */
    const char *chart_dir;
    /* Set by the caller (not owned): prefix of every chart file name, "x" -> "x-<slug>.svg" (the
     * CLI passes the markdown file's stem, so reports/x.md gets reports/x-*.svg). */
    const char *chart_prefix;
} pwb_report;

/* run_id 0: the latest run. */
int report_load(pwb_report *r, pwb_db *db, int64_t run_id, pwb_err *e);
void report_free(pwb_report *r);

int report_render_md(const pwb_report *r, pwb_buf *out, pwb_err *e);
int report_render_csv(const pwb_report *r, pwb_buf *out, pwb_err *e);
int report_render_json(const pwb_report *r, pwb_buf *out, pwb_err *e);
/* Loads every row's predictions with their examples (inputs, prompts, outputs) for the HTML
 * report's per-example view. */
int report_load_details(pwb_report *r, pwb_db *db, pwb_err *e);
/* One self-contained HTML file: the markdown report's sections and tables (sortable), its charts
 * inline, and, when report_load_details ran, a per-example view of where two chosen methods
 * disagree. */
int report_render_html(const pwb_report *r, pwb_buf *out, pwb_err *e);
int report_render(const pwb_report *r, int format, pwb_buf *out, pwb_err *e);

/* Load + render in one call (what `pwb report` needs). */
int report_write(pwb_db *db, int64_t run_id, int format, pwb_buf *out, pwb_err *e);

/* Run A against run B: for each (dataset, split, model, method) in either run, accuracy in A and
 * B, the delta B - A, an exact McNemar test on the rows both runs evaluated, tokens in/out per
 * example and cost per 1,000 examples in each. */
int report_compare(pwb_db *db, int64_t run_a, int64_t run_b, int format, pwb_buf *out, pwb_err *e);

/* Break-even of a tuned method against a few-shot prompt, in inferences (rounded up): training
 * CPU-s / (few-shot CPU-s per example - tuned CPU-s per example). NAN when an input is unknown
 * or negative, INFINITY when the difference is not positive (never repaid), 0 for free training. */
double report_break_even(double train_cpu_s, double few_shot_cpu_per_example, double tuned_cpu_per_example);

#endif
