/* captcha_config: reference values, validation messages, charset rules; device parsing; a
 * wrong $CAPTCHA_CUDA_MODULE named in the error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "captcha_config.h"

static void test_reference(void **state)
{
    (void)state;
    captcha_config c;
    captcha_error err = {0};
    captcha_config_reference(&c);
    assert_int_equal(captcha_config_validate(&c, &err), CAPTCHA_OK);
    assert_int_equal(c.charset_size, 36);
    assert_int_equal(captcha_config_classes(&c), 180);
    assert_int_equal(captcha_config_flatten_size(&c), 1024);
    assert_int_equal(captcha_config_char_index(&c, '0'), 0);
    assert_int_equal(captcha_config_char_index(&c, 'z'), 35);
    assert_int_equal(captcha_config_char_index(&c, 'A'), -1);
    assert_int_equal(captcha_config_char_index(&c, '\0'), -1);
    c.input_height = 64;
    c.input_width = 192;
    assert_int_equal(captcha_config_flatten_size(&c), 256 * 2 * 6);
}

static void expect_invalid(captcha_config *c, const char *field)
{
    captcha_error err = {0};
    assert_int_equal(captcha_config_validate(c, &err), CAPTCHA_ERROR_FORMAT);
    assert_non_null(strstr(err.message, field));
    captcha_config_reference(c);
}

static void test_validation(void **state)
{
    (void)state;
    captcha_config c;
    captcha_config_reference(&c);
    c.length = 0;
    expect_invalid(&c, "length is 0");
    c.length = CAPTCHA_MAX_LENGTH + 1;
    expect_invalid(&c, "length");
    c.input_height = 48;
    expect_invalid(&c, "input_height is 48");
    c.input_width = 0;
    expect_invalid(&c, "input_width is 0");
    strcpy(c.channel_order, "BRG");
    expect_invalid(&c, "channel_order");
    c.std = 0;
    expect_invalid(&c, "std");
    c.charset[0] = '\0';
    c.charset_size = 0;
    expect_invalid(&c, "charset is empty");
}

/* Text fields without their NUL (a caller's memcpy of 4 bytes into channel_order, say) are
 * refused naming the field, without reading past the array: the struct on the heap, with
 * no zero byte after channel_order, used to be read past its end. */
static void test_unterminated_fields(void **state)
{
    (void)state;
    captcha_config *c = malloc(sizeof *c);
    assert_non_null(c);
    captcha_error err = {0};
    captcha_config_reference(c);
    memcpy(c->channel_order, "BGRX", 4);
    c->mean = c->std = 0.7f; /* 0x3f333333: no zero byte */
    assert_int_equal(captcha_config_validate(c, &err), CAPTCHA_ERROR_FORMAT);
    assert_string_equal(err.message, "channel_order is not NUL-terminated within its 4 bytes "
                                     "(\"BGRX\"), expected \"BGR\" or \"RGB\"");

    captcha_config_reference(c);
    memset(c->charset, 'a', sizeof c->charset);
    c->charset_size = (int)sizeof c->charset;
    assert_int_equal(captcha_config_validate(c, &err), CAPTCHA_ERROR_FORMAT);
    assert_string_equal(err.message, "charset is not NUL-terminated within its 129 bytes "
                                     "(expected at most 128 characters)");
    free(c);
}

static void test_charset_rules(void **state)
{
    (void)state;
    captcha_config c;
    captcha_error err = {0};
    captcha_config_reference(&c);
    assert_int_equal(captcha_config_set_charset(&c, "abca", &err), CAPTCHA_ERROR_FORMAT);
    assert_non_null(strstr(err.message, "repeats the character 'a'"));
    assert_int_equal(captcha_config_set_charset(&c, "ab c", &err), CAPTCHA_ERROR_FORMAT);
    assert_non_null(strstr(err.message, "0x20"));
    assert_int_equal(captcha_config_set_charset(&c, "", &err), CAPTCHA_ERROR_FORMAT);
    assert_int_equal(captcha_config_set_charset(&c, "2345678bcdefgmnpwxy", &err), CAPTCHA_OK);
    assert_int_equal(c.charset_size, 19);
    assert_int_equal(captcha_config_char_index(&c, 'y'), 18);
}

static void test_device_parse(void **state)
{
    (void)state;
    captcha_device d;
    captcha_error err = {0};
    assert_int_equal(captcha_device_parse("cpu", &d, &err), CAPTCHA_OK);
    assert_int_equal(d, CAPTCHA_DEVICE_CPU);
    assert_int_equal(captcha_device_parse("cuda", &d, &err), CAPTCHA_OK);
    assert_int_equal(d, CAPTCHA_DEVICE_CUDA);
    assert_int_equal(captcha_device_parse("gpu", &d, &err), CAPTCHA_OK);
    assert_int_equal(d, CAPTCHA_DEVICE_CUDA);
    assert_int_equal(captcha_device_parse("auto", &d, &err), CAPTCHA_OK);
    assert_int_equal(d, CAPTCHA_DEVICE_AUTO);
    assert_int_equal(captcha_device_parse("tpu", &d, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "\"tpu\""));
    assert_int_equal(captcha_device_parse(NULL, &d, &err), CAPTCHA_OK);
    assert_int_equal(d, CAPTCHA_DEVICE_AUTO);
    assert_int_equal(captcha_device_parse("cpu", NULL, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);

    /* backend creation: a device outside the enum, a NULL out, too many threads */
    captcha_backend *backend = (captcha_backend *)&err;
    assert_int_equal(captcha_backend_create((captcha_device)42, 0, 1, &backend, NULL, 0, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_null(backend);
    assert_non_null(strstr(err.message, "device is 42"));
    assert_int_equal(captcha_backend_create(CAPTCHA_DEVICE_CPU, 0, 1, NULL, NULL, 0, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "out is NULL"));
    const int too_many[] = {CAPTCHA_MAX_THREADS + 1, 2147483647};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(captcha_backend_cpu_create(too_many[i], &backend, &err),
                         CAPTCHA_ERROR_INVALID_ARGUMENT);
        assert_null(backend);
        assert_non_null(strstr(err.message, "1..1024"));
    }

    /* config functions take no NULL config or charset */
    assert_int_equal(captcha_config_validate(NULL, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "config is NULL"));
    captcha_config config;
    captcha_config_reference(&config);
    assert_int_equal(captcha_config_set_charset(&config, NULL, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "charset is NULL"));
}

/* An explicit $CAPTCHA_CUDA_MODULE that does not exist is an error naming it, for CUDA and
 * for AUTO's fallback reason (it used to be skipped silently for the build tree's module).
 * First in this process: the module, once loaded, stays loaded. */
static void test_cuda_module_path(void **state)
{
    (void)state;
    captcha_backend *backend = NULL;
    captcha_error err = {0};
    char reason[CAPTCHA_ERROR_MESSAGE_SIZE];
    const char *path = "/nonexistent/libcaptcha-cuda.so";
    setenv("CAPTCHA_CUDA_MODULE", path, 1);
    captcha_status status = captcha_backend_cuda_create(0, &backend, &err);
    assert_int_equal(status, CAPTCHA_ERROR_UNAVAILABLE);
    assert_null(backend);
    if (captcha_backend_cuda_built())
        assert_non_null(strstr(err.message, "CAPTCHA_CUDA_MODULE=/nonexistent/libcaptcha-cuda.so"));
    assert_int_equal(captcha_backend_create(CAPTCHA_DEVICE_AUTO, 0, 1, &backend, reason,
                                            sizeof reason, &err),
                     CAPTCHA_OK);
    if (captcha_backend_cuda_built())
        assert_non_null(strstr(reason, path));
    captcha_backend_destroy(backend);
    unsetenv("CAPTCHA_CUDA_MODULE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cuda_module_path),
        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_charset_rules),
        cmocka_unit_test(test_unterminated_fields),
        cmocka_unit_test(test_device_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
