#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "captcha-build-config.h"

const char *captcha_test_shared_data(void)
{
    static char path[4096];
    const char *env = getenv("CAPTCHA_SHARED_DATA");
    if (env && *env) {
        snprintf(path, sizeof path, "%s", env);
    } else {
        snprintf(path, sizeof path, "%s/../shared/data", CAPTCHA_SOURCE_DIR);
    }
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/captcha-v2/test", path);
    return access(probe, R_OK) == 0 ? path : NULL;
}

const char *captcha_test_tmpdir(void)
{
    static char path[4096];
    if (path[0])
        return path;
    const char *env = getenv("CAPTCHA_TEST_TMPDIR");
    if (env && *env) {
        snprintf(path, sizeof path, "%s", env);
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
        if (system(cmd) != 0)
            return NULL;
        return path;
    }
    snprintf(path, sizeof path, "/tmp/captcha-test-XXXXXX");
    if (!mkdtemp(path)) {
        path[0] = '\0';
        return NULL;
    }
    return path;
}

double captcha_test_max_abs_error(const float *a, const float *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= worst))
            worst = d; /* also catches NaN */
    }
    return worst;
}

double captcha_test_rel_error(const float *a, const float *b, size_t n)
{
    double diff = 0, ref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        diff += d * d;
        ref += (double)b[i] * (double)b[i];
    }
    if (isnan(diff))
        return INFINITY;
    return sqrt(diff) / fmax(sqrt(ref), 1e-30);
}

void captcha_test_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
}

void *captcha_test_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *data = malloc(n > 0 ? (size_t)n : 1);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    if (data && size)
        *size = (size_t)n;
    return data;
}

int captcha_test_write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t written = fwrite(data, 1, size, f);
    return (fclose(f) == 0 && written == size) ? 0 : -1;
}
