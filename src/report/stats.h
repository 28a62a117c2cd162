/* Statistics for reports: binomial confidence intervals, paired significance, percentiles. */
#ifndef PWB_REPORT_STATS_H
#define PWB_REPORT_STATS_H

#include <stddef.h>

#define STATS_Z95 1.959963984540054

/* Wilson score interval for k successes out of n at normal quantile z (STATS_Z95 for 95%).
 * n == 0 gives [0, 1]. */
void stats_wilson(long k, long n, double z, double *lo, double *hi);

/* Exact two-sided McNemar test: binomial(b + c, 1/2) on the discordant pairs (b: only A right,
 * c: only B right). p = min(1, 2 * P[X <= min(b, c)]); 1 when b + c == 0. */
double stats_mcnemar_exact(long b, long c);

/* Interval for the difference of two paired proportions, p1 - p2 with p1 = (a + b) / n and
 * p2 = (a + c) / n (a: both right, b: only the first, c: only the second, d: neither), by
 * Newcombe's hybrid score method (1998, method 10): the two Wilson intervals combined with the
 * pairs' phi correlation. Stays inside [-1, 1]; n == 0 gives [-1, 1]. */
void stats_paired_diff(long a, long b, long c, long d, double z, double *lo, double *hi);

/* Percentile q in [0, 1] with linear interpolation between closest ranks (numpy's default):
 * position q * (n - 1) of the sorted values. Sorts v in place. NAN when n == 0. */
double stats_percentile(double *v, size_t n, double q);

/* Arithmetic mean; NAN when n == 0. */
double stats_mean(const double *v, size_t n);

#endif
