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

void stats_paired_diff(long a, long b, long c, long d, double z, double *lo, double *hi)
{
    long n = a + b + c + d;
    if (n <= 0 || a < 0 || b < 0 || c < 0 || d < 0) {
        *lo = -1.0;
        *hi = 1.0;
        return;
    }
    double nn = (double)n, p1 = (double)(a + b) / nn, p2 = (double)(a + c) / nn, l1, u1, l2, u2;
    stats_wilson(a + b, n, z, &l1, &u1);
    stats_wilson(a + c, n, z, &l2, &u2);
    /* phi with Newcombe's continuity correction of ad - bc when it is positive. */
    double ad_bc = (double)a * (double)d - (double)b * (double)c;
    if (ad_bc > 0)
        ad_bc = fmax(ad_bc - nn / 2.0, 0.0);
    double den = sqrt((double)(a + b) * (double)(c + d) * (double)(a + c) * (double)(b + d));
    double phi = den > 0 ? ad_bc / den : 0.0;
    double th = p1 - p2;
    double dl = (p1 - l1) * (p1 - l1) - 2.0 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) * (u2 - p2);
    double du = (u1 - p1) * (u1 - p1) - 2.0 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) * (p2 - l2);
    *lo = fmax(-1.0, th - sqrt(fmax(dl, 0.0)));
    *hi = fmin(1.0, th + sqrt(fmax(du, 0.0)));
}
