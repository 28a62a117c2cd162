#include "report/stats.h"

#include <math.h>
#include <stdlib.h>

void stats_wilson(long k, long n, double z, double *lo, double *hi)
{
    if (n <= 0 || k < 0 || k > n) {
        *lo = 0.0;
        *hi = 1.0;
        return;
    }
    double nn = (double)n, p = (double)k / nn, z2 = z * z;
    double denom = 1.0 + z2 / nn;
    double center = (p + z2 / (2.0 * nn)) / denom;
    double half = z * sqrt(p * (1.0 - p) / nn + z2 / (4.0 * nn * nn)) / denom;
    *lo = center - half;
    *hi = center + half;
    /* Clamp rounding noise at the ends (k == 0 gives lo = 0 exactly in theory). */
    if (*lo < 0.0 || k == 0)
        *lo = 0.0;
    if (*hi > 1.0 || k == n)
        *hi = 1.0;
}

double stats_mcnemar_exact(long b, long c)
{
    if (b < 0 || c < 0)
        return NAN;
    long n = b + c;
    if (n == 0)
        return 1.0;
    long k = b < c ? b : c;
    /* Sum of C(n, i) / 2^n for i <= k, in logs so large n neither overflows nor underflows early. */
    double lg_n1 = lgamma((double)n + 1.0), ln2n = (double)n * log(2.0), sum = 0.0;
    for (long i = 0; i <= k; i++)
        sum += exp(lg_n1 - lgamma((double)i + 1.0) - lgamma((double)(n - i) + 1.0) - ln2n);
    double p = 2.0 * sum;
    return p > 1.0 ? 1.0 : p;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double stats_percentile(double *v, size_t n, double q)
{
    if (n == 0)
        return NAN;
    if (q < 0.0)
        q = 0.0;
    if (q > 1.0)
        q = 1.0;
    qsort(v, n, sizeof *v, cmp_dbl);
    double pos = q * (double)(n - 1);
    size_t i = (size_t)floor(pos);
    if (i + 1 >= n)
        return v[n - 1];
    double f = pos - (double)i;
    return v[i] + f * (v[i + 1] - v[i]);
}

double stats_mean(const double *v, size_t n)
{
    if (n == 0)
        return NAN;
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return s / (double)n;
}
