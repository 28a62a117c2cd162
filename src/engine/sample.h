/* Picking the next token from logits: greedy, or seeded temperature + top-p (nucleus) sampling.
 * Sampling draws from a pwb_rng the caller seeds, so a request with the same seed gives the same
 * tokens whether it runs alone or in a batch. */
#ifndef PWB_ENGINE_SAMPLE_H
#define PWB_ENGINE_SAMPLE_H

#include <stdint.h>

#include "util/rng.h"

typedef struct sampler {
    float temperature; /* <= 0: greedy */
    float top_p;       /* (0, 1]; >= 1 keeps the whole distribution */
    pwb_rng rng;
    /* scratch, grown on demand */
    float *prob;
    int32_t *idx;
    int cap;
} sampler;

void sampler_init(sampler *s, float temperature, float top_p, uint64_t seed);
void sampler_free(sampler *s);
/* Next token id from n logits (n > 0); -1 only when out of memory. */
int32_t sampler_pick(sampler *s, const float *logits, int n);

/* Index of the largest logit (the first one on ties); -1 when n <= 0. */
int32_t sample_argmax(const float *logits, int n);
/* log(sum(exp(x))) computed stably in double. */
double sample_logsumexp(const float *x, int n);

#endif
