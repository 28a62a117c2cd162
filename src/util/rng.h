/* Seeded PRNG (xoshiro256** seeded by splitmix64): reproducible sampling everywhere. */
#ifndef PWB_UTIL_RNG_H
#define PWB_UTIL_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct pwb_rng {
    uint64_t s[4];
} pwb_rng;

void rng_init(pwb_rng *r, uint64_t seed);
uint64_t rng_next(pwb_rng *r);
double rng_uniform(pwb_rng *r);               /* [0, 1) */
uint64_t rng_below(pwb_rng *r, uint64_t n);   /* [0, n), unbiased; n > 0 */
double rng_normal(pwb_rng *r);                /* standard normal */
void rng_shuffle_idx(pwb_rng *r, size_t *idx, size_t n);

#endif
