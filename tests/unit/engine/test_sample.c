/* Sampling: greedy, temperature, nucleus (top-p), reproducibility from a seed. */
#include <criterion/criterion.h>
#include <math.h>

#include "engine/sample.h"

Test(sample, argmax_and_logsumexp)
{
    float x[5] = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f};
    cr_expect_eq(sample_argmax(x, 5), 1, "first of the tied maxima");
    cr_expect_eq(sample_argmax(x, 0), -1);
    double want = log(exp(0.5) + exp(3.0) + exp(-1.0) + exp(3.0) + exp(2.0));
    cr_expect(fabs(sample_logsumexp(x, 5) - want) < 1e-9);
    float big[2] = {1000.0f, 1000.0f};
    cr_expect(fabs(sample_logsumexp(big, 2) - (1000.0 + log(2.0))) < 1e-6, "no overflow");
}

Test(sample, zero_temperature_is_greedy)
{
    float x[4] = {0.1f, 0.2f, 5.0f, 0.3f};
    sampler s;
    sampler_init(&s, 0.0f, 1.0f, 1);
    for (int i = 0; i < 10; i++)
        cr_expect_eq(sampler_pick(&s, x, 4), 2);
    sampler_free(&s);
}

/* Frequencies follow softmax(x / T) within a few standard errors. */
Test(sample, temperature_distribution)
{
    float x[3] = {0.0f, 1.0f, 2.0f};
    const float T = 2.0f;
    double p[3], z = 0;
    for (int i = 0; i < 3; i++)
        z += p[i] = exp(x[i] / T);
    sampler s;
    sampler_init(&s, T, 1.0f, 1234);
    int cnt[3] = {0};
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        int32_t t = sampler_pick(&s, x, 3);
        cr_assert(t >= 0 && t < 3);
        cnt[t]++;
    }
    for (int i = 0; i < 3; i++) {
        double q = p[i] / z, se = sqrt(q * (1 - q) / N);
        cr_expect(fabs((double)cnt[i] / N - q) < 5 * se, "token %d: %f vs %f", i, (double)cnt[i] / N, q);
    }
    sampler_free(&s);
}

/* Top-p keeps the smallest most-likely set whose mass reaches p. */
Test(sample, top_p_support)
{
    /* probabilities 0.5, 0.3, 0.15, 0.05 */
    float x[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    sampler s;
    sampler_init(&s, 1.0f, 0.75f, 99);
    int seen[4] = {0};
    for (int i = 0; i < 5000; i++)
        seen[sampler_pick(&s, x, 4)]++;
    cr_expect(seen[0] > 0 && seen[1] > 0, "the top two carry 0.8 >= 0.75");
    cr_expect_eq(seen[2], 0);
    cr_expect_eq(seen[3], 0);
    /* Within the nucleus, renormalised: 0.5/0.8 = 0.625. */
    cr_expect(fabs(seen[0] / 5000.0 - 0.625) < 0.03, "%f", seen[0] / 5000.0);
    sampler_free(&s);
    sampler_init(&s, 1.0f, 0.4f, 5);
    for (int i = 0; i < 100; i++)
        cr_expect_eq(sampler_pick(&s, x, 4), 0, "p below the top token's mass keeps only it");
    sampler_free(&s);
}

Test(sample, same_seed_same_sequence)
{
    float x[50];
    for (int i = 0; i < 50; i++)
        x[i] = sinf((float)i);
    sampler a, b, c;
    sampler_init(&a, 0.9f, 0.9f, 42);
    sampler_init(&b, 0.9f, 0.9f, 42);
    sampler_init(&c, 0.9f, 0.9f, 43);
    int same = 1, diff = 0;
    for (int i = 0; i < 200; i++) {
        int32_t ta = sampler_pick(&a, x, 50), tb = sampler_pick(&b, x, 50), tc = sampler_pick(&c, x, 50);
        same &= ta == tb;
        diff |= ta != tc;
    }
    cr_expect(same, "same seed must give the same tokens");
    cr_expect(diff, "another seed should give other tokens");
    sampler_free(&a);
    sampler_free(&b);
    sampler_free(&c);
}
