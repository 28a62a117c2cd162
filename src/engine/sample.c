#include "engine/sample.h"

#include <math.h>
#include <stdlib.h>

void sampler_init(sampler *s, float temperature, float top_p, uint64_t seed)
{
    s->temperature = temperature;
    s->top_p = top_p;
    rng_init(&s->rng, seed);
    s->prob = NULL;
    s->idx = NULL;
    s->cap = 0;
}

void sampler_free(sampler *s)
{
    free(s->prob);
    free(s->idx);
    s->prob = NULL;
    s->idx = NULL;
    s->cap = 0;
}

int32_t sample_argmax(const float *logits, int n)
{
    if (n <= 0)
        return -1;
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

double sample_logsumexp(const float *x, int n)
{
    if (n <= 0)
        return -INFINITY;
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    if (!isfinite(mx))
        return mx;
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += exp((double)x[i] - mx);
    return mx + log(sum);
}

/* Descending by probability, then ascending by id, so the order is total and reproducible. */
static int cmp_desc(const void *a, const void *b, void *ctx)
{
    const float *prob = ctx;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float pi = prob[i], pj = prob[j];
    if (pi != pj)
        return pi > pj ? -1 : 1;
    return (i > j) - (i < j);
}

int32_t sampler_pick(sampler *s, const float *logits, int n)
{
    if (n <= 0)
        return -1;
    if (!(s->temperature > 0.0f))
        return sample_argmax(logits, n);
    if (n > s->cap) {
        float *p = realloc(s->prob, (size_t)n * sizeof *p);
        if (p)
            s->prob = p;
        int32_t *ix = realloc(s->idx, (size_t)n * sizeof *ix);
        if (ix)
            s->idx = ix;
        if (!p || !ix)
            return -1;
        s->cap = n;
    }
    /* Softmax of logits / T, in double for the normaliser. */
    float mx = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double inv_t = 1.0 / s->temperature, sum = 0.0;
    for (int i = 0; i < n; i++) {
        double p = exp(((double)logits[i] - mx) * inv_t);
        s->prob[i] = (float)p;
        sum += p;
    }
    double u = rng_uniform(&s->rng);
    if (!(s->top_p < 1.0f) || !(s->top_p > 0.0f)) {
        double target = u * sum, acc = 0.0;
        for (int i = 0; i < n; i++) {
            acc += s->prob[i];
            if (acc > target)
                return i;
        }
        return sample_argmax(logits, n);
    }
    /* Nucleus: a token with probability q < (1 - top_p) / n can never be inside it (all tokens at
     * or below q sum to under 1 - top_p), so only the rest is sorted. */
    double cut = (1.0 - s->top_p) / n * sum;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (s->prob[i] >= cut)
            s->idx[m++] = i;
    qsort_r(s->idx, (size_t)m, sizeof *s->idx, cmp_desc, s->prob);
    double keep = 0.0, need = s->top_p * sum;
    int k = 0;
    while (k < m) {
        keep += s->prob[s->idx[k]];
        k++;
        if (keep >= need)
            break;
    }
    double target = u * keep, acc = 0.0;
    for (int i = 0; i < k; i++) {
        acc += s->prob[s->idx[i]];
        if (acc > target)
            return s->idx[i];
    }
    return s->idx[k - 1];
}
