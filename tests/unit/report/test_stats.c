#include <criterion/criterion.h>
#include <math.h>

#include "report/stats.h"

/* Reference values from exact binomial sums (Python fractions) and numpy.percentile. */

Test(stats, wilson_known_values)
{
    double lo, hi;
    stats_wilson(8, 10, STATS_Z95, &lo, &hi);
    cr_assert_float_eq(lo, 0.49016247153664183, 1e-12);
    cr_assert_float_eq(hi, 0.9433178485456247, 1e-12);
    stats_wilson(0, 10, STATS_Z95, &lo, &hi);
    cr_assert_eq(lo, 0.0);
    cr_assert_float_eq(hi, 0.2775327998628892, 1e-12);
    stats_wilson(10, 10, STATS_Z95, &lo, &hi);
    cr_assert_float_eq(lo, 0.7224672001371107, 1e-12);
    cr_assert_eq(hi, 1.0);
    stats_wilson(50, 100, STATS_Z95, &lo, &hi);
    cr_assert_float_eq(lo, 0.4038315303659956, 1e-12);
    cr_assert_float_eq(hi, 0.5961684696340044, 1e-12);
    stats_wilson(1, 3, STATS_Z95, &lo, &hi);
    cr_assert_float_eq(lo, 0.06149194472039621, 1e-12);
    cr_assert_float_eq(hi, 0.7923403991979522, 1e-12);
    stats_wilson(163, 200, STATS_Z95, &lo, &hi);
    cr_assert_float_eq(lo, 0.7554293723884824, 1e-12);
    cr_assert_float_eq(hi, 0.8626980719938395, 1e-12);
    stats_wilson(0, 0, STATS_Z95, &lo, &hi);
    cr_assert_eq(lo, 0.0);
    cr_assert_eq(hi, 1.0);
}

Test(stats, mcnemar_exact_known_values)
{
    cr_assert_float_eq(stats_mcnemar_exact(1, 8), 0.0390625, 1e-12);
    cr_assert_float_eq(stats_mcnemar_exact(8, 1), 0.0390625, 1e-12);
    cr_assert_float_eq(stats_mcnemar_exact(0, 5), 0.0625, 1e-12);
    cr_assert_float_eq(stats_mcnemar_exact(2, 0), 0.5, 1e-12);
    cr_assert_eq(stats_mcnemar_exact(3, 3), 1.0);
    cr_assert_eq(stats_mcnemar_exact(0, 0), 1.0);
    cr_assert_float_eq(stats_mcnemar_exact(10, 25), 0.01667384780012071, 1e-10);
    cr_assert_float_eq(stats_mcnemar_exact(40, 60), 0.05688793364098079, 1e-10);
    cr_assert_float_eq(stats_mcnemar_exact(200, 260), 0.005883922473103979, 1e-10);
    double big = stats_mcnemar_exact(100000, 100000);
    cr_assert(big > 0.99 && big <= 1.0);
    cr_assert(isnan(stats_mcnemar_exact(-1, 2)));
}

Test(stats, percentiles_and_mean)
{
    double v[] = {3, 1, 4, 1, 5, 9, 2, 6};
    cr_assert_float_eq(stats_mean(v, 8), 31.0 / 8.0, 1e-12);
    cr_assert_float_eq(stats_percentile(v, 8, 0.50), 3.5, 1e-12);
    cr_assert_float_eq(stats_percentile(v, 8, 0.95), 7.95, 1e-12);
    cr_assert_float_eq(stats_percentile(v, 8, 0.0), 1.0, 1e-12);
    cr_assert_float_eq(stats_percentile(v, 8, 1.0), 9.0, 1e-12);
    double one[] = {7};
    cr_assert_float_eq(stats_percentile(one, 1, 0.95), 7.0, 1e-12);
    cr_assert(isnan(stats_percentile(v, 0, 0.5)));
    cr_assert(isnan(stats_mean(v, 0)));
}

/* Newcombe's paired interval (method 10), values recomputed by hand from the formula: Wilson
 * intervals of both margins combined with the continuity-corrected phi. */
Test(stats, paired_difference_interval)
{
    double lo, hi;
    /* a=6 both right, b=0 only the first, c=2 only the second, d=2: 0.6 - 0.8 = -0.2 */
    stats_paired_diff(6, 0, 2, 2, STATS_Z95, &lo, &hi);
    cr_assert_float_eq(lo, -0.47143449673187854, 1e-9);
    cr_assert_float_eq(hi, 0.11372658596322138, 1e-9);
    /* a=12 b=9 c=2 d=21 (n=44): (21 - 14) / 44 = 0.159 */
    stats_paired_diff(12, 9, 2, 21, STATS_Z95, &lo, &hi);
    cr_assert_float_eq(lo, 0.011242503551198435, 1e-9);
    cr_assert_float_eq(hi, 0.29537178064660924, 1e-9);
    /* swapping the two methods mirrors the interval */
    double lo2, hi2;
    stats_paired_diff(12, 2, 9, 21, STATS_Z95, &lo2, &hi2);
    cr_assert_float_eq(lo2, -hi, 1e-12);
    cr_assert_float_eq(hi2, -lo, 1e-12);
    /* identical methods: an interval around 0 that narrows with n */
    stats_paired_diff(50, 0, 0, 50, STATS_Z95, &lo, &hi);
    stats_paired_diff(500, 0, 0, 500, STATS_Z95, &lo2, &hi2);
    cr_assert(lo < 0 && hi > 0 && lo2 > lo && hi2 < hi);
    /* the extremes stay inside [-1, 1]; no pairs: the whole range */
    stats_paired_diff(0, 0, 30, 0, STATS_Z95, &lo, &hi);
    cr_assert(lo >= -1.0 && hi <= 0.0 && hi > -1.0, "%g %g", lo, hi);
    stats_paired_diff(0, 0, 0, 0, STATS_Z95, &lo, &hi);
    cr_assert(lo == -1.0 && hi == 1.0);
}
