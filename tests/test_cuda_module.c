/* The loader of the CUDA backend module (backend.c) refuses a module built from other
 * sources (captcha_module_interface differs) or from before the interface check (no
 * captcha_cuda_module_interface), naming the file, and calls one built with this
 * library's interface. Runs without CUDA or a GPU, on the stand-ins of
 * tests/fake_cuda_module.c (built as $CAPTCHA_BUILD_DIR/tests/libfake-cuda-*.so); skipped in a
 * build without the CUDA backend, where the loader is never reached. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"

static char fake[3][4096];

/* captcha_backend_cuda_create with CAPTCHA_CUDA_MODULE=path: its status, message in err */
static captcha_status create_with(const char *path, captcha_error *err)
{
    captcha_backend *backend = NULL;
    setenv("CAPTCHA_CUDA_MODULE", path, 1);
    captcha_status status = captcha_backend_cuda_create(0, &backend, err);
    assert_null(backend);
    printf("  %s: %s\n", path, err->message);
    return status;
}

/* (one test, in this order: the loader keeps the first module it accepts) */
static void test_interface_checked(void **state)
{
    (void)state;
    captcha_error err;
    assert_int_equal(create_with(fake[0], &err), CAPTCHA_ERROR_UNAVAILABLE);
    assert_non_null(strstr(err.message, fake[0]));
    assert_non_null(strstr(err.message, "older gst-captcha"));
    assert_int_equal(create_with(fake[1], &err), CAPTCHA_ERROR_UNAVAILABLE);
    assert_non_null(strstr(err.message, fake[1]));
    assert_non_null(strstr(err.message, "other gst-captcha sources"));
    assert_null(strstr(err.message, "fake module"));
    /* the matching one is called: its own message */
    assert_int_equal(create_with(fake[2], &err), CAPTCHA_ERROR_UNAVAILABLE);
    assert_non_null(strstr(err.message, "fake module 3 created"));
}

int main(void)
{
    if (!captcha_backend_cuda_built()) {
        printf("skipped: this build has no CUDA backend, so no module is ever loaded\n");
        return 77;
    }
    const char *build = getenv("CAPTCHA_BUILD_DIR");
    if (!build) {
        printf("CAPTCHA_BUILD_DIR is not set (run through meson test)\n");
        return 1;
    }
    static const char *const names[3] = {"old", "other", "current"};
    for (int i = 0; i < 3; i++)
        snprintf(fake[i], sizeof fake[i], "%s/tests/libfake-cuda-%s.so", build, names[i]);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_interface_checked)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
