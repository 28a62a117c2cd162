/* Calibrated rank scoring: the content-free prior and the corrected argmax (see calib.h). */
#include "task/calib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/str.h"

const char *const calib_content_free[CALIB_N_CONTENT_FREE] = {"N/A", "", "[MASK]"};

static const char *const names[] = {"none", "contextual", "pmi"};

int calib_kind_parse(const char *name)
{
    if (!name)
        return CALIB_NONE;
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(name, names[i]))
            return i;
    return -1;
}

const char *calib_kind_name(int kind)
{
    return kind >= 0 && kind < (int)(sizeof names / sizeof names[0]) ? names[kind] : "unknown";
}

int calib_prior_contextual(const double *lp, int n_inputs, int n_labels, double *log_prior)
{
    if (!lp || !log_prior || n_inputs < 1 || n_labels < 1)
        return PWB_EINVAL;
    for (int l = 0; l < n_labels; l++)
        log_prior[l] = 0;
    for (int i = 0; i < n_inputs; i++) {
        const double *row = lp + (size_t)i * (size_t)n_labels;
        double mx = -INFINITY;
        for (int l = 0; l < n_labels; l++) {
            if (!isfinite(row[l]))
                return PWB_EINVAL;
            if (row[l] > mx)
                mx = row[l];
        }
        /* softmax with the maximum taken out, so long labels' tiny probabilities do not underflow */
        double z = 0;
        for (int l = 0; l < n_labels; l++)
            z += exp(row[l] - mx);
        for (int l = 0; l < n_labels; l++)
            log_prior[l] += exp(row[l] - mx) / z / n_inputs;
    }
    for (int l = 0; l < n_labels; l++) {
        /* a label no content-free input gave any weight would divide by 0: floor it */
        log_prior[l] = log(log_prior[l] > 1e-300 ? log_prior[l] : 1e-300);
    }
    return PWB_OK;
}

int calib_choose(const double *lp, const double *log_prior, int n)
{
    if (!lp || n < 1)
        return -1;
    int best = -1;
    double bv = -INFINITY;
    for (int l = 0; l < n; l++) {
        double v = lp[l] - (log_prior ? log_prior[l] : 0);
        if (!isfinite(v))
            return -1;
        if (best < 0 || v > bv) {
            best = l;
            bv = v;
        }
    }
    return best;
}

int calib_premise(tpl_prompt *p, pwb_err *e)
{
    int at = -1;
    char *cut = NULL;
    for (int i = 0; i < p->n && at < 0; i++)
        if (p->msgs[i].content && (cut = strstr(p->msgs[i].content, CALIB_MARKER)))
            at = i;
    if (at < 0)
        return err_set(e, PWB_EINVAL, "the prompt does not show its input, so it has no domain premise");
    cut += strlen(CALIB_MARKER);
    while (*cut == ' ' || *cut == '\t' || *cut == '\n' || *cut == '\r')
        cut++;
    char *tail = str_dup(cut);
    if (!tail)
        return err_set(e, PWB_ENOMEM, "out of memory");
    free(p->msgs[at].content);
    p->msgs[at].content = tail;
    int k = 0;
    for (int i = 0; i < p->n; i++) {
        if (i < at && strcmp(p->msgs[i].role, "system") != 0) {
            free(p->msgs[i].role);
            free(p->msgs[i].content);
            continue;
        }
        p->msgs[k++] = p->msgs[i];
    }
    p->n = k;
    return PWB_OK;
}
