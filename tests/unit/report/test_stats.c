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
