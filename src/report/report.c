/* The report read model: groups a run's cells by dataset and model and reduces each cell's
 * predictions to the numbers the tables show. */
#include "report/report.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "report/report_internal.h"
#include "report/stats.h"
#include "util/str.h"

int report_format_parse(const char *s, int *format, pwb_err *e)
{
    if (s && (!strcasecmp(s, "md") || !strcasecmp(s, "markdown")))
        *format = REPORT_MD;
    else if (s && !strcasecmp(s, "csv"))
        *format = REPORT_CSV;
    else if (s && !strcasecmp(s, "json"))
        *format = REPORT_JSON;
    else if (s && !strcasecmp(s, "html"))
        *format = REPORT_HTML;
    else
        return err_set(e, PWB_EINVAL, "unknown report format '%s' (md, csv, json, html)", s ? s : "");
    return PWB_OK;
}

static void row_free(report_row *w)
{
    free(w->method);
    free(w->kind);
    if (w->has_soft_prompt)
        db_soft_prompt_info_free(&w->soft_prompt);
    free(w->train_steps);
    free(w->train_evals);
    free(w->sweep);
    free(w->sweep_point);
    for (int i = 0; i < w->n_sweep_values; i++)
        free(w->sweep_values[i]);
    free(w->sweep_values);
    free(w->calibration);
    free(w->calib_p);
    free(w->confusion);
    db_details_free(w->details, w->n_details);
}

static void sweep_free(report_sweep *s)
{
    free(s->name);
    for (int i = 0; i < s->n_axes; i++)
        free(s->axes[i]);
    free(s->axes);
    free(s->rows);
}

static void group_free(report_group *g)
{
    for (size_t i = 0; i < g->n_rows; i++)
        row_free(&g->rows[i]);
    free(g->rows);
    for (size_t i = 0; i < g->n_sweeps; i++)
        sweep_free(&g->sweeps[i]);
    free(g->sweeps);
    free(g->dataset);
    free(g->split);
    free(g->model);
    free(g->provider);
    db_labels_free(g->labels, g->n_labels);
}

void report_free(pwb_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_groups; i++)
        group_free(&r->groups[i]);
    free(r->groups);
    db_run_info_free(&r->run);
    memset(r, 0, sizeof *r);
}

static int str_eq(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

int report_is_local(const char *provider)
{
    return provider && (!strcmp(provider, "local") || !strncmp(provider, "local-", 6));
}

/* Reduces one cell's outcomes (sorted by row) to a table row. */
void report_row_fill(report_row *w, const db_outcome *o, size_t n, int cost_unit)
{
    w->n = (long)n;
    double *lat = n ? malloc(n * sizeof *lat) : NULL;
    size_t nlat = 0, ntin = 0, ntout = 0, ncpu = 0;
    double tin = 0, tout = 0;
    for (size_t i = 0; i < n; i++) {
        w->correct += o[i].correct;
        w->invalid += !o[i].valid;
        w->errors += o[i].error;
        w->cached += o[i].cached;
        if (o[i].correct_norm >= 0) {
            w->n_norm++;
            w->correct_norm += o[i].correct_norm;
        }
        if (o[i].tokens_in >= 0) {
            tin += o[i].tokens_in;
            ntin++;
        }
        if (o[i].tokens_out >= 0) {
            tout += o[i].tokens_out;
            ntout++;
        }
        if (!isnan(o[i].cost_usd))
            w->cost_usd += o[i].cost_usd;
        if (!isnan(o[i].cpu_s)) {
            w->cpu_s += o[i].cpu_s;
            ncpu++;
        }
        if (lat && !isnan(o[i].latency_s))
            lat[nlat++] = o[i].latency_s;
    }
    w->accuracy = n ? (double)w->correct / (double)n : NAN;
    stats_wilson(w->correct, w->n, STATS_Z95, &w->ci_lo, &w->ci_hi);
    w->tokens_in_mean = ntin ? tin / (double)ntin : NAN;
    w->tokens_out_mean = ntout ? tout / (double)ntout : NAN;
    w->latency_p50 = stats_percentile(lat, nlat, 0.50);
    w->latency_p95 = stats_percentile(lat, nlat, 0.95);
    free(lat);
    w->cost_per_1k = NAN;
    if (n && cost_unit == REPORT_COST_USD)
        w->cost_per_1k = w->cost_usd / (double)n * 1000.0;
    else if (n && cost_unit == REPORT_COST_CPU_S)
        w->cost_per_1k = w->cpu_s / (double)n * 1000.0;
    w->cost_per_example = w->cost_per_1k / 1000.0;
    w->cpu_per_example = ncpu ? w->cpu_s / (double)ncpu : NAN;
    w->mcnemar_p = NAN;
    w->sweep_p = NAN;
    w->break_even = NAN;
    w->break_even_ref = -1;
}

double report_break_even(double train_cpu_s, double few_shot_cpu_per_example, double tuned_cpu_per_example)
{
    if (isnan(train_cpu_s) || isnan(few_shot_cpu_per_example) || isnan(tuned_cpu_per_example) ||
        train_cpu_s < 0 || few_shot_cpu_per_example < 0 || tuned_cpu_per_example < 0)
        return NAN;
    if (train_cpu_s == 0)
        return 0;
    double saved = few_shot_cpu_per_example - tuned_cpu_per_example;
    if (!(saved > 0))
        return INFINITY;
    double n = ceil(train_cpu_s / saved);
    return isfinite(n) ? n : INFINITY;
}

/* Discordant pairs between two outcome lists sorted by row. */
void report_pair(const db_outcome *a, size_t na, const db_outcome *b, size_t nb, long *shared, long *only_a,
                 long *only_b, long *both)
{
    size_t i = 0, j = 0;
    long nb_both = 0;
    *shared = *only_a = *only_b = 0;
    while (i < na && j < nb) {
        if (a[i].row < b[j].row) {
            i++;
        } else if (a[i].row > b[j].row) {
            j++;
        } else {
            (*shared)++;
            *only_a += a[i].correct && !b[j].correct;
            *only_b += !a[i].correct && b[j].correct;
            nb_both += a[i].correct && b[j].correct;
            i++;
            j++;
        }
    }
    if (both)
        *both = nb_both;
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

typedef struct cell_data {
    const db_cell_info *cell;
    db_outcome *o;
    size_t n;
} cell_data;

/* The majority-class baseline over the union of the evaluated rows that carry a label:
 * its outcome per row is "label == majority". Returns 0 when no row has a label. */
static int baseline_outcomes(const cell_data *cd, size_t ncd, db_outcome **out, size_t *nout, int *majority,
                             int *oom)
{
    size_t total = 0;
    for (size_t i = 0; i < ncd; i++)
        total += cd[i].n;
    *out = NULL;
    *nout = 0;
    if (!total)
        return 0;
    /* Pack (row, label) into pairs sorted by row, then dedupe. */
    long *pairs = malloc(total * 2 * sizeof *pairs);
    if (!pairs) {
        *oom = 1;
        return 0;
    }
    size_t np = 0;
    for (size_t i = 0; i < ncd; i++)
        for (size_t k = 0; k < cd[i].n; k++)
            if (cd[i].o[k].label >= 0) {
                pairs[2 * np] = cd[i].o[k].row;
                pairs[2 * np + 1] = cd[i].o[k].label;
                np++;
            }
    if (!np) {
        free(pairs);
        return 0;
    }
    qsort(pairs, np, 2 * sizeof *pairs, cmp_long);
    db_outcome *o = calloc(np, sizeof *o);
    if (!o) {
        free(pairs);
        *oom = 1;
        return 0;
    }
    size_t n = 0;
    for (size_t i = 0; i < np; i++) {
        if (n && o[n - 1].row == pairs[2 * i])
            continue;
        o[n].row = pairs[2 * i];
        o[n].label = (int)pairs[2 * i + 1];
        n++;
    }
    free(pairs);
    /* Most frequent label; ties go to the smaller label so the choice is deterministic. */
    long best_count = -1;
    int best_label = 0;
    for (size_t i = 0; i < n; i++) {
        int lab = o[i].label;
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++)
            seen = o[k].label == lab;
        if (seen)
            continue;
        long cnt = 0;
        for (size_t k = i; k < n; k++)
            cnt += o[k].label == lab;
        if (cnt > best_count || (cnt == best_count && lab < best_label)) {
            best_count = cnt;
            best_label = lab;
        }
    }
    for (size_t i = 0; i < n; i++) {
        o[i].valid = 1;
        o[i].correct = o[i].label == best_label;
        o[i].predicted = best_label;
        o[i].tokens_in = o[i].tokens_out = -1;
        o[i].latency_s = o[i].cpu_s = o[i].cost_usd = NAN;
    }
    *out = o;
    *nout = n;
    *majority = best_label;
    return 1;
}

/* The few-shot row soft prompts are weighed against is the most accurate few-shot method with
 * CPU timings (the one a practitioner would otherwise deploy); ties go to the earlier method. */
static void set_break_even(report_group *g)
{
    g->few_shot_ref = -1;
    for (size_t i = 0; i < g->n_rows; i++) {
        const report_row *w = &g->rows[i];
        if (w->is_baseline || w->n <= 0 || strcmp(w->kind, "few-shot") != 0 || isnan(w->cpu_per_example))
            continue;
        if (g->few_shot_ref < 0 || w->accuracy > g->rows[g->few_shot_ref].accuracy)
            g->few_shot_ref = (long)i;
    }
    for (size_t i = 0; i < g->n_rows; i++) {
        report_row *w = &g->rows[i];
        if (!w->has_soft_prompt || g->few_shot_ref < 0)
            continue;
        /* CPU seconds against CPU seconds: the training's measured CPU time (or its estimate from wall
         * time, as the verdict uses), so this agrees with the verdict's V against the same prompt */
        double cost = isfinite(w->fixed_cpu_s) ? w->fixed_cpu_s : w->soft_prompt.train_seconds;
        w->break_even_ref = g->few_shot_ref;
        w->break_even = report_break_even(cost, g->rows[g->few_shot_ref].cpu_per_example, w->cpu_per_example);
    }
}

/* A sweep point's value as text: strings as they are, numbers as %.6g. NULL when absent. */
static char *point_value(const cJSON *v, int *oom)
{
    char tmp[64];
    const char *t;
    if (cJSON_IsString(v)) {
        t = v->valuestring;
    } else if (cJSON_IsNumber(v)) {
        snprintf(tmp, sizeof tmp, "%.6g", v->valuedouble);
        t = tmp;
    } else if (cJSON_IsBool(v)) {
        t = cJSON_IsTrue(v) ? "true" : "false";
    } else {
        return NULL;
    }
    char *d = str_dup(t);
    if (!d)
        *oom = 1;
    return d;
}

static int all_numeric(const report_group *g, const report_sweep *sw, int axis)
{
    for (size_t k = 0; k < sw->n_rows; k++) {
        const report_row *w = &g->rows[sw->rows[k]];
        double v;
        if (axis >= w->n_sweep_values || !w->sweep_values[axis] || str_to_double(w->sweep_values[axis], &v))
            return 0;
    }
    return 1;
}

/* Groups the rows that carry a sweep by its name; the first point fixes the axes. A point stored
 * by hand may be anything: it is parsed as hostile JSON, and what is not an object counts as {}. */
static int build_sweeps(report_group *g, const cell_data *cd, pwb_err *e)
{
    int oom = 0;
    for (size_t i = 0; i < g->n_rows && !oom; i++) {
        report_row *w = &g->rows[i];
        if (!w->sweep)
            continue;
        size_t s = 0;
        while (s < g->n_sweeps && strcmp(g->sweeps[s].name, w->sweep) != 0)
            s++;
        cJSON *pt = strlen(w->sweep_point) <= 65536 ? cJSON_Parse(w->sweep_point) : NULL;
        if (s == g->n_sweeps) {
            report_sweep *ns = realloc(g->sweeps, (g->n_sweeps + 1) * sizeof *ns);
            if (!ns) {
                cJSON_Delete(pt);
                oom = 1;
                break;
            }
            g->sweeps = ns;
            report_sweep *sw = &g->sweeps[g->n_sweeps++];
            memset(sw, 0, sizeof *sw);
            sw->best = -1;
            sw->name = str_dup(w->sweep);
            int na = cJSON_IsObject(pt) ? cJSON_GetArraySize(pt) : 0;
            if (na > 16)
                na = 16;
            sw->axes = calloc((size_t)(na ? na : 1), sizeof *sw->axes);
            sw->rows = calloc(g->n_rows, sizeof *sw->rows);
            oom |= !sw->name || !sw->axes || !sw->rows;
            const cJSON *it = cJSON_IsObject(pt) ? pt->child : NULL;
            for (; it && sw->n_axes < na && !oom; it = it->next) {
                if (!(sw->axes[sw->n_axes] = str_dup(it->string ? it->string : "?")))
                    oom = 1;
                else
                    sw->n_axes++;
            }
        }
        report_sweep *sw = &g->sweeps[s];
        if (!oom) {
            sw->rows[sw->n_rows++] = i;
            w->sweep_values = calloc((size_t)(sw->n_axes ? sw->n_axes : 1), sizeof *w->sweep_values);
            oom |= !w->sweep_values;
        }
        for (int a = 0; !oom && a < sw->n_axes; a++) {
            const cJSON *v = cJSON_IsObject(pt) ? cJSON_GetObjectItemCaseSensitive(pt, sw->axes[a]) : NULL;
            w->sweep_values[a] = point_value(v, &oom);
            w->n_sweep_values = a + 1;
        }
        cJSON_Delete(pt);
    }
    if (oom)
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    for (size_t s = 0; s < g->n_sweeps; s++) {
        report_sweep *sw = &g->sweeps[s];
        sw->x_axis = 0;
        for (int a = 0; a < sw->n_axes; a++)
            if (all_numeric(g, sw, a)) {
                sw->x_axis = a;
                break;
            }
        for (size_t k = 0; k < sw->n_rows; k++) {
            const report_row *w = &g->rows[sw->rows[k]];
            if (w->n <= 0)
                continue;
            const report_row *b = sw->best >= 0 ? &g->rows[sw->rows[sw->best]] : NULL;
            if (!b || w->accuracy > b->accuracy || (w->accuracy == b->accuracy && w->n > b->n))
                sw->best = (long)k;
        }
        if (sw->best < 0)
            continue;
        size_t bi = sw->rows[sw->best];
        g->rows[bi].is_sweep_best = 1;
        for (size_t k = 0; k < sw->n_rows; k++) {
            size_t ri = sw->rows[k];
            if (ri == bi)
                continue;
            long shared, only_best, only_this;
            report_pair(cd[bi].o, cd[bi].n, cd[ri].o, cd[ri].n, &shared, &only_best, &only_this, NULL);
            if (shared > 0)
                g->rows[ri].sweep_p = stats_mcnemar_exact(only_best, only_this);
        }
    }
    return PWB_OK;
}

/* The cell's calibration and budget: the stored prior (log, label order) becomes probabilities. */
static int row_calibration(report_row *w, const db_cell_info *c, pwb_err *e)
{
    w->train_limit = c->train_limit;
    w->has_budget = c->calibration != NULL; /* written together since schema 3 */
    w->has_shots = c->shot_split != NULL;
    if (c->calibration && !(w->calibration = str_dup(c->calibration)))
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    if (!c->calib_prior)
        return PWB_OK;
    cJSON *j = cJSON_Parse(c->calib_prior);
    int n = cJSON_IsArray(j) ? cJSON_GetArraySize(j) : 0;
    if (n > 0 && n <= 4096 && (w->calib_p = calloc((size_t)n, sizeof *w->calib_p))) {
        double mx = -INFINITY, z = 0;
        const cJSON *v;
        int k = 0;
        cJSON_ArrayForEach(v, j)
        {
            w->calib_p[k] = cJSON_IsNumber(v) ? v->valuedouble : -INFINITY;
            if (w->calib_p[k] > mx)
                mx = w->calib_p[k];
            k++;
        }
        for (k = 0; k < n; k++)
            z += (w->calib_p[k] = isfinite(mx) ? exp(w->calib_p[k] - mx) : 0);
        for (k = 0; k < n && z > 0; k++)
            w->calib_p[k] /= z;
        w->n_calib_p = n;
    }
    cJSON_Delete(j);
    return PWB_OK;
}

/* Arms, labelled examples, costs and confusion counts of every row, then the verdict. */
static int prepare_rows(report_group *g, const cell_data *cd, size_t ncd, const db_outcome *bo, size_t nbo,
                        const char *suite_json, pwb_err *e)
{
    const db_outcome **o = calloc(g->n_rows + 1, sizeof *o);
    size_t *n = calloc(g->n_rows + 1, sizeof *n);
    const char **tp = calloc(g->n_rows + 1, sizeof *tp);
    int rc = PWB_OK;
    if (!o || !n || !tp) {
        rc = err_set(e, PWB_ENOMEM, "report: out of memory");
    } else {
        for (size_t i = 0; i < g->n_rows; i++) {
            o[i] = i < ncd ? cd[i].o : bo;
            n[i] = i < ncd ? cd[i].n : nbo;
            tp[i] = i < ncd ? cd[i].cell->template_path : NULL;
        }
        rc = report_rows_prepare(g, o, n, tp, suite_json, e);
        if (!rc)
            report_verdict_build(g, o, n);
    }
    free(o);
    free(n);
    free(tp);
    return rc;
}

static int build_group(report_group *g, pwb_db *db, cell_data *cd, size_t ncd, const char *suite_json, pwb_err *e)
{
    g->rows = calloc(ncd + 1, sizeof *g->rows);
    if (!g->rows)
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    g->best = -1;
    for (size_t i = 0; i < ncd; i++) {
        report_row *w = &g->rows[g->n_rows++];
        w->method = str_dup(cd[i].cell->method);
        w->kind = str_dup(cd[i].cell->kind ? cd[i].cell->kind : "");
        if (!w->method || !w->kind)
            return err_set(e, PWB_ENOMEM, "report: out of memory");
        w->cell_id = cd[i].cell->id;
        w->n_planned = cd[i].cell->n_planned;
        report_row_fill(w, cd[i].o, cd[i].n, g->cost_unit);
        if (cd[i].cell->sweep && cd[i].cell->sweep[0]) {
            w->sweep = str_dup(cd[i].cell->sweep);
            w->sweep_point = str_dup(cd[i].cell->sweep_point ? cd[i].cell->sweep_point : "{}");
            if (!w->sweep || !w->sweep_point)
                return err_set(e, PWB_ENOMEM, "report: out of memory");
        }
        int crc = row_calibration(w, cd[i].cell, e);
        if (!crc && w->has_budget)
            crc = db_prompt_search_get(db, cd[i].cell->id, &w->search, e);
        if (crc)
            return crc;
        if (cd[i].cell->soft_prompt_id > 0) {
            int rc = db_soft_prompt_get(db, cd[i].cell->soft_prompt_id, &w->soft_prompt, e);
            if (rc)
                return rc;
            w->has_soft_prompt = 1;
            if ((rc = db_train_steps_list(db, w->soft_prompt.id, &w->train_steps, &w->n_train_steps, e)) ||
                (rc = db_train_evals_list(db, w->soft_prompt.id, &w->train_evals, &w->n_train_evals, e)))
                return rc;
        }
        /* Best: highest accuracy; ties go to more rows, then to the earlier method. */
        if (w->n > 0) {
            report_row *b = g->best >= 0 ? &g->rows[g->best] : NULL;
            if (!b || w->accuracy > b->accuracy || (w->accuracy == b->accuracy && w->n > b->n))
                g->best = (long)i;
        }
    }
    if (g->best >= 0) {
        g->rows[g->best].is_best = 1;
        const cell_data *bd = &cd[g->best];
        for (size_t i = 0; i < ncd; i++) {
            if ((long)i == g->best)
                continue;
            report_row *w = &g->rows[i];
            report_pair(bd->o, bd->n, cd[i].o, cd[i].n, &w->mcnemar_shared, &w->mcnemar_b, &w->mcnemar_c, NULL);
            if (w->mcnemar_shared > 0)
                w->mcnemar_p = stats_mcnemar_exact(w->mcnemar_b, w->mcnemar_c);
        }
    }
    int rc = build_sweeps(g, cd, e);
    if (rc)
        return rc;
    db_outcome *bo = NULL;
    size_t nbo = 0;
    int majority = 0, oom = 0;
    g->baseline = -1;
    if (baseline_outcomes(cd, ncd, &bo, &nbo, &majority, &oom)) {
        g->baseline = (long)g->n_rows;
        report_row *w = &g->rows[g->n_rows++];
        w->method = str_dup("majority class");
        w->kind = str_dup("baseline");
        w->is_baseline = 1;
        w->majority_label = majority;
        if (!w->method || !w->kind) {
            free(bo);
            return err_set(e, PWB_ENOMEM, "report: out of memory");
        }
        report_row_fill(w, bo, nbo, REPORT_COST_NONE);
        w->n_planned = w->n;
        w->tokens_in_mean = w->tokens_out_mean = NAN;
        if (g->best >= 0) {
            const cell_data *bd = &cd[g->best];
            report_pair(bd->o, bd->n, bo, nbo, &w->mcnemar_shared, &w->mcnemar_b, &w->mcnemar_c, NULL);
            if (w->mcnemar_shared > 0)
                w->mcnemar_p = stats_mcnemar_exact(w->mcnemar_b, w->mcnemar_c);
        }
    }
    if (oom) {
        free(bo);
        return err_set(e, PWB_ENOMEM, "report: out of memory");
    }
    rc = prepare_rows(g, cd, ncd, bo, nbo, suite_json, e);
    free(bo);
    if (!rc)
        set_break_even(g); /* after prepare_rows: it needs each row's one-time CPU cost */
    return rc;
}

int report_load(pwb_report *r, pwb_db *db, int64_t run_id, pwb_err *e)
{
    memset(r, 0, sizeof *r);
    int rc = db_run_get(db, run_id, &r->run, e);
    if (rc)
        return rc;
    db_cell_info *cells = NULL;
    size_t ncells = 0;
    if ((rc = db_cells_list(db, r->run.id, &cells, &ncells, e)))
        goto out;
    cell_data *cd = calloc(ncells ? ncells : 1, sizeof *cd);
    int *group_of = calloc(ncells ? ncells : 1, sizeof *group_of);
    r->groups = calloc(ncells ? ncells : 1, sizeof *r->groups);
    if (!cd || !group_of || !r->groups) {
        rc = err_set(e, PWB_ENOMEM, "report: out of memory");
        goto out_cd;
    }
    /* Groups in order of first appearance: the suite's dataset/model order. */
    for (size_t i = 0; i < ncells; i++) {
        const db_cell_info *c = &cells[i];
        size_t g = 0;
        while (g < r->n_groups && !(str_eq(r->groups[g].dataset, c->dataset) &&
                                    str_eq(r->groups[g].split, c->split) && str_eq(r->groups[g].model, c->model)))
            g++;
        if (g == r->n_groups) {
            report_group *ng = &r->groups[r->n_groups++];
            ng->dataset = str_dup(c->dataset);
            ng->split = str_dup(c->split ? c->split : "");
            ng->model = str_dup(c->model);
            ng->provider = str_dup(c->provider ? c->provider : "");
            if (!ng->dataset || !ng->split || !ng->model || !ng->provider) {
                rc = err_set(e, PWB_ENOMEM, "report: out of memory");
                goto out_cd;
            }
        }
        group_of[i] = (int)g;
        cd[i].cell = c;
        if ((rc = db_cell_outcomes(db, c->id, &cd[i].o, &cd[i].n, e)))
            goto out_cd;
    }
    cell_data *tmp = calloc(ncells ? ncells : 1, sizeof *tmp);
    if (!tmp) {
        rc = err_set(e, PWB_ENOMEM, "report: out of memory");
        goto out_cd;
    }
    for (size_t g = 0; g < r->n_groups && !rc; g++) {
        report_group *grp = &r->groups[g];
        size_t nt = 0;
        double cost = 0;
        for (size_t i = 0; i < ncells; i++)
            if (group_of[i] == (int)g) {
                tmp[nt++] = cd[i];
                for (size_t k = 0; k < cd[i].n; k++)
                    if (!isnan(cd[i].o[k].cost_usd))
                        cost += cd[i].o[k].cost_usd;
            }
        /* Local models are costed in CPU time; remote ones in dollars when they are priced. */
        grp->cost_unit = report_is_local(grp->provider) ? REPORT_COST_CPU_S
                         : cost > 0                     ? REPORT_COST_USD
                                                        : REPORT_COST_NONE;
        rc = db_split_labels(db, grp->dataset, grp->split, &grp->labels, &grp->n_labels, e);
        if (!rc)
            rc = build_group(grp, db, tmp, nt, r->run.suite_json, e);
    }
    free(tmp);
out_cd:
    for (size_t i = 0; cd && i < ncells; i++)
        free(cd[i].o);
    free(cd);
    free(group_of);
out:
    db_cells_free(cells, ncells);
    if (rc)
        report_free(r);
    return rc;
}

int report_render(const pwb_report *r, int format, pwb_buf *out, pwb_err *e)
{
    switch (format) {
    case REPORT_MD:
        return report_render_md(r, out, e);
    case REPORT_CSV:
        return report_render_csv(r, out, e);
    case REPORT_JSON:
        return report_render_json(r, out, e);
    case REPORT_HTML:
        return report_render_html(r, out, e);
    default:
        return err_set(e, PWB_EINVAL, "report: unknown format %d", format);
    }
}

int report_write(pwb_db *db, int64_t run_id, int format, pwb_buf *out, pwb_err *e)
{
    pwb_report r;
    int rc = report_load(&r, db, run_id, e);
    if (rc)
        return rc;
    rc = report_render(&r, format, out, e);
    report_free(&r);
    return rc;
}

int report_load_details(pwb_report *r, pwb_db *db, pwb_err *e)
{
    for (size_t g = 0; g < r->n_groups; g++)
        for (size_t i = 0; i < r->groups[g].n_rows; i++) {
            report_row *w = &r->groups[g].rows[i];
            if (w->is_baseline || w->details)
                continue;
            int rc = db_cell_details(db, w->cell_id, &w->details, &w->n_details, e);
            if (rc)
                return rc;
        }
    return PWB_OK;
}
