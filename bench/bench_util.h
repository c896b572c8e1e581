/* Timing helpers shared by the benchmarks. */
#ifndef CAPTCHA_BENCH_UTIL_H
#define CAPTCHA_BENCH_UTIL_H

#include <stdlib.h>
#include <time.h>

/* Monotonic seconds. */
static inline double bench_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* qsort comparator for doubles, ascending. */
static inline int bench_compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define BENCH_MAX_VALUES 256

/* The q-quantile (0..1) of n values (sorts a copy; n <= BENCH_MAX_VALUES), interpolating
 * linearly between order statistics (as numpy's default); 0 for n out of range. */
static inline double bench_quantile(const double *values, int n, double q)
{
    double sorted[BENCH_MAX_VALUES];
    if (n <= 0 || n > BENCH_MAX_VALUES)
        return 0;
    for (int i = 0; i < n; i++)
        sorted[i] = values[i];
    qsort(sorted, (size_t)n, sizeof *sorted, bench_compare_double);
    double at = q * (n - 1);
    int below = (int)at;
    return below + 1 < n ? sorted[below] + (at - below) * (sorted[below + 1] - sorted[below])
                         : sorted[n - 1];
}

/* Median of n values (n <= BENCH_MAX_VALUES); the mean of the middle two for even n. */
static inline double bench_median(const double *values, int n)
{
    return bench_quantile(values, n, 0.5);
}

#endif
