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

/* Median of n values (sorts a copy; n <= 64); the mean of the middle two for even n. */
static inline double bench_median(const double *values, int n)
{
    double sorted[64];
    if (n <= 0 || n > 64)
        return 0;
    for (int i = 0; i < n; i++)
        sorted[i] = values[i];
    qsort(sorted, (size_t)n, sizeof *sorted, bench_compare_double);
    return n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

#endif
