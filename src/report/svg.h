/* SVG charts for reports, written by pwb itself as standalone XML files:
 *   accuracy - per dataset x model, a horizontal bar per method with its 95% Wilson interval;
 *   cost     - accuracy (with interval) against cost per example, log x when costs span > 20x;
 *   training - the soft prompts' training curves: loss and held-out accuracy against step;
 *   sweep    - per sweep, accuracy against the sweep's first numeric axis, a line per value of
 *              the other axes.
 * Every text is escaped (and invalid UTF-8 replaced), every shape lies inside the viewBox. */
#ifndef PWB_REPORT_SVG_H
#define PWB_REPORT_SVG_H

#include "report/report.h"

/* The accuracy bar chart of a group. */
int report_svg_group(const report_group *g, pwb_buf *out, pwb_err *e);
/* Appends a file name for the group: "<dataset>-<split>-<model>.svg" with every character other
 * than [A-Za-z0-9._-] replaced by '_'. */
int report_svg_filename(const report_group *g, pwb_buf *out);

int report_svg_cost(const report_group *g, pwb_buf *out, pwb_err *e);
int report_svg_training(const report_group *g, pwb_buf *out, pwb_err *e);
int report_svg_sweep(const report_group *g, const report_sweep *sw, pwb_buf *out, pwb_err *e);
int report_svg_volume(const report_group *g, pwb_buf *out, pwb_err *e);
int report_svg_budget(const report_group *g, pwb_buf *out, pwb_err *e);
/* Each arm's best accuracy on one dataset and split, by model: the groups sharing g's. */
int report_svg_models(const pwb_report *r, size_t g, pwb_buf *out, pwb_err *e);

/* Whether a group has what the chart needs: a cost for some method; a training curve. */
int report_group_has_cost(const report_group *g);
int report_group_has_training(const report_group *g);
/* A one-time cost and at least two methods to weigh; labelled counts for both arms; g is the
 * first of two or more groups (models) on its dataset. */
int report_group_has_volume(const report_group *g);
int report_group_has_budget(const report_group *g);
int report_models_first(const pwb_report *r, size_t g);

enum report_chart_kind {
    REPORT_CHART_ACCURACY = 0,
    REPORT_CHART_COST,
    REPORT_CHART_TRAINING,
    REPORT_CHART_SWEEP,
    REPORT_CHART_VOLUME, /* total cost against inferences served */
    REPORT_CHART_BUDGET, /* accuracy against labelled examples used */
    REPORT_CHART_MODELS  /* the run's best accuracy per arm and model (group: the first of the dataset) */
};

typedef struct report_chart {
    int kind;
    size_t group;   /* index into the report's groups */
    size_t sweep;   /* index into the group's sweeps (REPORT_CHART_SWEEP) */
    char *file;     /* "[<chart_prefix>-]<dataset>-<split>-<model>-<kind>[-<sweep>].svg" */
    char *alt;      /* alternative text for the markdown image */
} report_chart;

/* Every chart the report has data for, in document order (group by group: accuracy, cost,
 * training, then each sweep). File names use r->chart_prefix. */
int report_charts_list(const pwb_report *r, report_chart **charts, size_t *n, pwb_err *e);
void report_charts_free(report_chart *charts, size_t n);
int report_chart_render(const pwb_report *r, const report_chart *c, pwb_buf *out, pwb_err *e);

#endif
