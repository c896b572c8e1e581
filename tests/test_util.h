/* Helpers shared by the C tests (cmocka is the harness). */
#ifndef CAPTCHA_TEST_UTIL_H
#define CAPTCHA_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Exit code meson treats as "skipped". */
#define CAPTCHA_TEST_SKIP 77

/* The shared real data folder (../shared/data next to the source tree, or
 * $CAPTCHA_SHARED_DATA), or NULL when absent. */
const char *captcha_test_shared_data(void);

/* The folder for files a test writes ($CAPTCHA_TEST_TMPDIR, else a fresh
 * mkdtemp folder under /tmp). Created on first call. */
const char *captcha_test_tmpdir(void);

/* Largest |a - b| over n values. */
double captcha_test_max_abs_error(const float *a, const float *b, size_t n);
/* ||a - b|| / max(||b||, tiny): relative error of a against reference b (L2). */
double captcha_test_rel_error(const float *a, const float *b, size_t n);

/* Deterministic uniform floats in [lo, hi) (xorshift, seeded). */
void captcha_test_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed);

/* Reads a whole file; returns NULL on failure. *size receives its length. */
void *captcha_test_read_file(const char *path, size_t *size);
/* Writes a whole file; 0 on success. */
int captcha_test_write_file(const char *path, const void *data, size_t size);

#endif
