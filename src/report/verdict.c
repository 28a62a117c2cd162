/* The verdict of a group and its inputs: which arm a method belongs to, the labelled examples and
 * one-time cost it used, its confusion counts, and the best engineered prompt against the best
 * tuned method with the conditions under which the answer flips.
 *
 * New method kinds plug in at three places: report_arm_of (which arm), row_labelled (labelled
 * examples used) and row_fixed_cost (training or search cost). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"
#include "report/report_internal.h"
#include "report/stats.h"
#include "task/template.h"

/* Kinds whose method trains parameters on labelled data; everything else is a prompt someone
 * wrote or searched for (zero-shot, few-shot, cot, role, optimized). */
static const char *const tuned_kinds[] = {"soft", "lora", "prefix", "prefix-tuning", "peft", "ia3", "finetune", NULL};

int report_arm_of(const report_row *w)
{
    if (w->is_baseline)
        return REPORT_ARM_BASELINE;
    if (w->has_soft_prompt)
        return REPORT_ARM_TUNED;
    for (int i = 0; tuned_kinds[i]; i++)
        if (w->kind && !strcmp(w->kind, tuned_kinds[i]))
            return REPORT_ARM_TUNED;
    return REPORT_ARM_ENGINEERED;
}

/* The suite's method object for a row (a sweep point's method is the sweep's). */
static const cJSON *suite_method(const cJSON *suite, const report_row *w)
{
    const char *name = w->sweep ? w->sweep : w->method;
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(suite, "methods"))
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(m, "name");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, name))
            return m;
    }
    return NULL;
}

static double json_count(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e12 ? v->valuedouble : -1;
}

/* The object of a tuned method's training settings: soft_prompt, lora or prefix. */
static const cJSON *training_object(const cJSON *m)
{
    static const char *const keys[] = {"soft_prompt", "lora", "prefix"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(m, keys[i]);
        if (cJSON_IsObject(o))
            return o;
    }
    return NULL;
}

/* The labelled examples a method may read: the run's record, else the sweep point's train_limit,
 * else that of o (the method, or its tuning object); -1 when none is declared. */
static double declared_budget(const report_row *w, const cJSON *pt, const cJSON *o)
{
    double lim = w->has_budget && w->train_limit > 0 ? (double)w->train_limit : json_count(pt, "train_limit");
    return lim < 0 ? json_count(o, "train_limit") : lim;
}

/* A string setting of a sweep point, else of its method. */
static const char *point_or_method_str(const cJSON *pt, const cJSON *m, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(pt, key);
    if (!cJSON_IsString(v))
        v = cJSON_GetObjectItemCaseSensitive(m, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A prompt's shots (the sweep point's, the suite's, else the template's; -1 when unknown) and
 * whether each query gets its own nearest ones (shot_pick similar). */
static long row_shots(const cJSON *pt, const cJSON *m, const char *template_path, int *similar_out)
{
    double shots = json_count(pt, "shots");
    if (shots < 0)
        shots = json_count(m, "shots");
    const char *pick = point_or_method_str(pt, m, "shot_pick");
    int similar = pick ? !strcmp(pick, "similar") : -1; /* -1: as the template says */
    long n = shots >= 0 ? (long)shots : -1;
    if ((n < 0 || similar < 0) && template_path && *template_path) {
        pwb_template t;
        pwb_err e;
        template_init(&t);
        if (template_load(&t, template_path, &e) == PWB_OK) {
            if (n < 0)
                n = t.kind == TPL_FEW_SHOT ? t.shots : 0;
            if (similar < 0)
                similar = t.shot_pick == SHOTS_SIMILAR;
        }
        template_free(&t);
    }
    *similar_out = similar > 0;
    return n;
}

/* Labelled examples: a prompt's shots, or, when each query gets its own nearest shots (shot_pick
 * similar), the whole pool they are chosen from, since every row of it is read and may be shown;
 * a soft prompt's training set (train_limit, or the examples it saw when fewer) and the shots its
 * input carries. */
static long row_labelled(const report_row *w, const cJSON *suite, const char *template_path)
{
    const cJSON *m = suite_method(suite, w);
    cJSON *pt = w->sweep_point && strlen(w->sweep_point) <= 65536 ? cJSON_Parse(w->sweep_point) : NULL;
    long n = -1;
    int similar = 0;
    if (w->search.found && w->search.examples_read >= 0) {
        n = w->search.examples_read; /* a prompt search: the distinct labelled rows it read */
    } else if (w->has_soft_prompt) {
        const cJSON *o = training_object(m);
        double lim = declared_budget(w, pt, o);
        double seen = w->soft_prompt.examples_seen >= 0 ? (double)w->soft_prompt.examples_seen : -1;
        /* A recorded budget counts the held-out rows too (train_limit + eval_n); the examples seen
         * are training rows only, so they are compared with the training part and the held-out
         * rows, read at every evaluation, are added back. */
        double held = json_count(pt, "eval_n");
        if (held < 0)
            held = json_count(o, "eval_n");
        if (held < 0 || !(w->has_budget && w->train_limit > 0))
            held = 0;
        if (lim > 0 && (seen < 0 || lim - held <= seen))
            n = (long)lim;
        else
            n = seen >= 0 ? (long)(seen + held) : -1;
        /* Its input's shots, drawn from the whole split, so perhaps outside the training sample
         * (an upper bound). Tuned cells recorded before they carried shots have no shot split. */
        long shots = w->has_shots ? row_shots(pt, m, template_path, &similar) : 0;
        if (n >= 0 && shots > 0)
            n += shots;
    } else if (report_arm_of(w) == REPORT_ARM_ENGINEERED) {
        n = row_shots(pt, m, template_path, &similar);
        if (n > 0 && similar) {
            double pool = declared_budget(w, pt, m);
            n = pool > 0 ? (long)pool : -1; /* -1: the whole split, its size not recorded */
        }
        if (n < 0 && !similar && w->kind && strcmp(w->kind, "few-shot") != 0 && strcmp(w->kind, "optimized") != 0)
            n = 0; /* zero-shot, cot and role prompts show no examples */
    }
    cJSON_Delete(pt);
    return n;
}

/* One-time CPU cost. The training job records its CPU time (train_cpu_s); for tuned prompts
 * trained before it did, the wall time is turned into CPU seconds with the CPU/wall ratio of the
 * prompt's own inference, which runs on the same engine with the same threads, and marked as an
 * estimate. */
static void row_fixed_cost(report_row *w, const db_outcome *o, size_t n)
{
    w->fixed_cpu_s = NAN;
    w->fixed_estimated = 0;
    if (w->search.found) { /* a searched prompt: the search's own CPU time */
        w->fixed_cpu_s = w->search.cpu_s;
        return;
    }
    if (report_arm_of(w) == REPORT_ARM_ENGINEERED && (!w->kind || strcmp(w->kind, "optimized") != 0)) {
        w->fixed_cpu_s = 0;
        return;
    }
    if (w->has_soft_prompt && isfinite(w->soft_prompt.train_cpu_s) && w->soft_prompt.train_cpu_s > 0) {
        w->fixed_cpu_s = w->soft_prompt.train_cpu_s;
        return;
    }
    if (!w->has_soft_prompt || isnan(w->soft_prompt.train_seconds) || w->soft_prompt.train_seconds < 0)
        return;
    double cpu = 0, wall = 0;
    for (size_t i = 0; i < n; i++)
        if (!isnan(o[i].cpu_s) && !isnan(o[i].latency_s)) {
            cpu += o[i].cpu_s;
            wall += o[i].latency_s;
        }
    if (wall > 0 && cpu > 0) {
        w->fixed_cpu_s = w->soft_prompt.train_seconds * cpu / wall;
        w->fixed_estimated = 1;
    }
}

static long *confusion(const db_outcome *o, size_t n, int n_labels)
{
    if (n_labels <= 0)
        return NULL;
    long *m = calloc((size_t)n_labels * (size_t)(n_labels + 2), sizeof *m);
    if (!m)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int g = o[i].label, p = o[i].predicted;
        if (g < 0 || g >= n_labels)
            continue;
        int col = p >= 0 && p < n_labels ? p : p == DB_PRED_INVALID ? n_labels : n_labels + 1;
        m[(size_t)g * (size_t)(n_labels + 2) + (size_t)col]++;
    }
    return m;
}

int report_rows_prepare(report_group *g, const db_outcome *const *o, const size_t *n, const char *const *templates,
                        const char *suite_json, pwb_err *e)
{
    cJSON *suite = suite_json && strlen(suite_json) <= (1u << 24) ? cJSON_Parse(suite_json) : NULL;
    int oom = 0;
    for (size_t i = 0; i < g->n_rows; i++) {
        report_row *w = &g->rows[i];
        w->arm = report_arm_of(w);
        w->labelled = -1;
        w->fixed_cpu_s = NAN;
        if (w->is_baseline) {
            w->labelled = 0;
            w->fixed_cpu_s = 0;
        } else {
            w->labelled = row_labelled(w, suite, templates[i]);
            row_fixed_cost(w, o[i], n[i]);
        }
        if (g->n_labels > 0 && !(w->confusion = confusion(o[i], n[i], g->n_labels)))
            oom = 1;
    }
    cJSON_Delete(suite);
    return oom ? err_set(e, PWB_ENOMEM, "report: out of memory") : PWB_OK;
}

/* The most accurate row of an arm; ties go to more rows, then to the earlier method. */
static long best_of(const report_group *g, int arm)
{
    long best = -1;
    for (size_t i = 0; i < g->n_rows; i++) {
        const report_row *w = &g->rows[i];
        if (w->arm != arm || w->n <= 0)
            continue;
        const report_row *b = best >= 0 ? &g->rows[best] : NULL;
        if (!b || w->accuracy > b->accuracy || (w->accuracy == b->accuracy && w->n > b->n))
            best = (long)i;
    }
    return best;
}

const char *report_volume_flip(const report_row *x, const report_row *y, double *v)
{
    /* Totals x: Fx + mx V, y: Fy + my V. Where does x become cheaper than y? */
    double fx = x->fixed_cpu_s, fy = y->fixed_cpu_s, mx = x->cpu_per_example, my = y->cpu_per_example;
    *v = NAN;
    if (isnan(fx) || isnan(fy) || isnan(mx) || isnan(my))
        return "not computed: a cost is not recorded";
    if (mx < my && fx > fy) {
        *v = ceil((fx - fy) / (my - mx));
        return NULL;
    }
    if (mx <= my && fx <= fy)
        return "none needed: no dearer up front nor per example";
    if (mx > my && fx < fy) {
        *v = floor((fy - fx) / (mx - my));
        return "cheaper only below this volume: dearer per example";
    }
    if (y->kind && !strcmp(y->kind, "few-shot"))
        return "never: not cheaper per example, since the few-shot prompt's shots are a shared prefix "
               "computed once, not per example";
    return "never: not cheaper per example";
}

long report_volume_ref(const report_group *g, size_t row)
{
    const report_row *w = &g->rows[row];
    long ref = -1;
    for (size_t i = 0; i < g->n_rows; i++) {
        const report_row *x = &g->rows[i];
        if (i == row || x->arm != REPORT_ARM_ENGINEERED || x->n <= 0 || x->accuracy < w->accuracy ||
            isnan(x->cpu_per_example))
            continue;
        if (ref < 0 || x->cpu_per_example < g->rows[ref].cpu_per_example)
            ref = (long)i;
    }
    return ref;
}

/* N*: where the tuned arm's accuracy, interpolated over its labelled-example counts, first
 * exceeds the best engineered prompt that used no more labelled examples. */
static double crossing(const report_group *g, int *upper)
{
    *upper = 0;
    double xs[64], ys[64];
    int np = 0;
    for (size_t i = 0; i < g->n_rows && np < 64; i++) {
        const report_row *w = &g->rows[i];
        if (w->arm != REPORT_ARM_TUNED || w->n <= 0 || w->labelled < 0)
            continue;
        int k = 0;
        while (k < np && xs[k] != (double)w->labelled)
            k++;
        if (k == np) {
            xs[np] = (double)w->labelled;
            ys[np++] = w->accuracy;
        } else if (w->accuracy > ys[k]) {
            ys[k] = w->accuracy;
        }
    }
    if (np < 2)
        return NAN;
    for (int i = 1; i < np; i++) /* insertion sort by labelled */
        for (int k = i; k > 0 && xs[k] < xs[k - 1]; k--) {
            double t = xs[k];
            xs[k] = xs[k - 1];
            xs[k - 1] = t;
            t = ys[k];
            ys[k] = ys[k - 1];
            ys[k - 1] = t;
        }
    double prev_d = NAN;
    for (int i = 0; i < np; i++) {
        double eng = -1;
        for (size_t r = 0; r < g->n_rows; r++) {
            const report_row *w = &g->rows[r];
            if (w->arm == REPORT_ARM_ENGINEERED && w->n > 0 && w->labelled >= 0 && (double)w->labelled <= xs[i])
                eng = fmax(eng, w->accuracy);
        }
        if (eng < 0)
            continue;
        double d = ys[i] - eng;
        if (d > 0) {
            if (i == 0 || isnan(prev_d)) {
                *upper = 1;
                return xs[i];
            }
            return ceil(xs[i - 1] + (xs[i] - xs[i - 1]) * (-prev_d) / (d - prev_d));
        }
        prev_d = d;
    }
    return NAN;
}

void report_verdict_build(report_group *g, const db_outcome *const *o, const size_t *n)
{
    report_verdict *v = &g->verdict;
    memset(v, 0, sizeof *v);
    v->gap = v->gap_lo = v->gap_hi = v->p = v->v_flip = v->n_star = NAN;
    v->engineered = best_of(g, REPORT_ARM_ENGINEERED);
    v->tuned = best_of(g, REPORT_ARM_TUNED);
    v->n_star = crossing(g, &v->n_star_upper);
    if (v->engineered < 0 || v->tuned < 0)
        return;
    long both;
    report_pair(o[v->engineered], n[v->engineered], o[v->tuned], n[v->tuned], &v->shared, &v->only_e, &v->only_t,
                &both);
    long neither = v->shared - both - v->only_e - v->only_t;
    if (v->shared > 0) {
        v->gap = (double)(v->only_t - v->only_e) / (double)v->shared;
        stats_paired_diff(both, v->only_t, v->only_e, neither, STATS_Z95, &v->gap_lo, &v->gap_hi);
        v->p = stats_mcnemar_exact(v->only_e, v->only_t);
        v->significant = v->p < 0.05;
    }
    v->v_reason = report_volume_flip(&g->rows[v->tuned], &g->rows[v->engineered], &v->v_flip);
}
