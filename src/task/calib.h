/* Calibrated rank scoring. A small model reading a prompt often prefers one label whatever the
 * input (label bias). Two standard corrections, both a per-label log-prior subtracted from the
 * labels' log-likelihoods before the argmax:
 *   contextual - Zhao et al. 2021 ("Calibrate Before Use"): the label distribution the prompt gives
 *                content-free inputs ("N/A", "", "[MASK]"), each normalised over the labels and
 *                averaged, p_cf; W = diag(p_cf)^-1 rescales every query's label distribution;
 *   pmi        - Holtzman et al. 2021 (domain-conditional PMI): log p(label | prompt) minus
 *                log p(label | domain premise), the prompt's text after its input.
 * Raw log-likelihoods stay stored, so a prediction can be re-scored from them and the prior. */
#ifndef PWB_TASK_CALIB_H
#define PWB_TASK_CALIB_H

#include "task/template.h"
#include "util/err.h"

enum calib_kind { CALIB_NONE = 0, CALIB_CONTEXTUAL, CALIB_PMI };

#define CALIB_N_CONTENT_FREE 3
/* The content-free inputs of contextual calibration, in the paper's order. */
extern const char *const calib_content_free[CALIB_N_CONTENT_FREE];

/* "none", "contextual", "pmi" -> enum; -1 for anything else (NULL is "none"). */
int calib_kind_parse(const char *name);
const char *calib_kind_name(int kind);

/* The contextual log-prior: lp holds n_inputs rows of n_labels summed label log-probabilities
 * (row-major); each row is normalised over the labels (softmax), the rows are averaged and the
 * log is written to log_prior[n_labels]. PWB_EINVAL when a value is not finite or a count < 1. */
int calib_prior_contextual(const double *lp, int n_inputs, int n_labels, double *log_prior);

/* The calibrated choice: argmax over l of lp[l] - log_prior[l] (log_prior NULL: plain argmax;
 * the first label wins ties). -1 when n < 1 or a needed value is not finite. */
int calib_choose(const double *lp, const double *log_prior, int n);

/* The marker a PMI premise is cut at: the prompt is rendered with this as the input (control
 * bytes no dataset text holds; \x01 is taken: the renderer marks roles with it). */
#define CALIB_MARKER "\x02pwb-input\x02"

/* Turns a prompt rendered with CALIB_MARKER as its input into the domain premise: the message
 * holding the marker keeps only the text after it (leading whitespace dropped), the messages after
 * it stay, and of the messages before it only system ones stay (shots and the input are content).
 * PWB_EINVAL when no message holds the marker (the template does not show its input). */
int calib_premise(tpl_prompt *p, pwb_err *e);

#endif
