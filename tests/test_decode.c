/* Decode (argmax, softmax confidences) and label encoding (one-hot targets).
 * Expected confidences come from a softmax computed here in double. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "decode.h"
#include "test_util.h"

/* softmax(row)[index] in double, the textbook way (log-sum-exp with the row's maximum). */
static double softmax_at(const float *row, int n, int index)
{
    double max = row[0];
    for (int i = 1; i < n; i++)
        max = fmax(max, row[i]);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)row[i] - max);
    return exp((double)row[index] - max) / sum;
}

static void test_decode_argmax_and_confidence(void **state)
{
    (void)state;
    captcha_config config;
    captcha_config_reference(&config);
    const int classes = config.charset_size, length = config.length;
    float logits[5 * 36];
    captcha_test_fill_uniform(logits, (size_t)length * classes, -4.f, 4.f, 2024);
    /* plant a clear winner per position: "7qz0a" */
    const char *expected = "7qz0a";
    for (int p = 0; p < length; p++) {
        const char *where = strchr(CAPTCHA_REFERENCE_CHARSET, expected[p]);
        logits[p * classes + (int)(where - CAPTCHA_REFERENCE_CHARSET)] = 4.5f + p;
    }
    captcha_result result;
    captcha_error err = {0};
    assert_int_equal(captcha_decode(&config, logits, &result, &err), CAPTCHA_OK);
    assert_string_equal(result.text, expected);
    assert_int_equal(result.length, length);
    double product = 1;
    for (int p = 0; p < length; p++) {
        int index =
            (int)(strchr(CAPTCHA_REFERENCE_CHARSET, expected[p]) - CAPTCHA_REFERENCE_CHARSET);
        double want = softmax_at(logits + p * classes, classes, index);
        print_message("position %d '%c': confidence %.7f, double softmax %.7f\n", p, expected[p],
                      result.char_confidence[p], want);
        assert_true(fabs(result.char_confidence[p] - want) <= 1e-6 * want);
        product *= want;
    }
    assert_true(fabs(result.confidence - product) <= 1e-6 * product);
    assert_true(result.confidence > 0 && result.confidence < 1);
}

static void test_decode_large_logits_are_stable(void **state)
{
    (void)state;
    captcha_config config;
    captcha_config_reference(&config);
    config.length = 2;
    float logits[2 * 36];
    for (int i = 0; i < 2 * 36; i++)
        logits[i] = 1000.0f; /* exp(1000) overflows unless the maximum is subtracted */
    logits[3] = 1002.0f;
    logits[36 + 35] = -1000.0f;
    logits[36 + 10] = 1001.0f;
    captcha_result result;
    assert_int_equal(captcha_decode(&config, logits, &result, NULL), CAPTCHA_OK);
    assert_string_equal(result.text, "3a");
    /* e^2 / (e^2 + 35) and e / (e + 34 + e^-2000) */
    double p0 = exp(2.0) / (exp(2.0) + 35), p1 = exp(1.0) / (exp(1.0) + 34);
    assert_true(fabs(result.char_confidence[0] - p0) < 1e-6);
    assert_true(fabs(result.char_confidence[1] - p1) < 1e-6);
    assert_true(fabs(result.confidence - p0 * p1) < 1e-6);
}

static void test_decode_ties_first_wins(void **state)
{
    (void)state;
    captcha_config config;
    captcha_config_reference(&config);
    float logits[5 * 36];
    memset(logits, 0, sizeof logits);        /* all equal: class 0 ('0') everywhere, p = 1/36 */
    logits[36 + 5] = logits[36 + 20] = 3.0f; /* position 1: tie of '5' and 'k' -> '5' */
    logits[4 * 36 + 35] = logits[4 * 36 + 34] = 2.0f; /* position 4: 'y' before 'z' */
    captcha_result result;
    assert_int_equal(captcha_decode(&config, logits, &result, NULL), CAPTCHA_OK);
    assert_string_equal(result.text, "0500y");
    assert_true(fabs(result.char_confidence[0] - 1.0 / 36) < 1e-7);
    double tie = exp(3.0) / (2 * exp(3.0) + 34);
    assert_true(fabs(result.char_confidence[1] - tie) < 1e-7);
}

static void test_decode_rejects_non_finite(void **state)
{
    (void)state;
    captcha_config config;
    captcha_config_reference(&config);
    float logits[5 * 36] = {0};
    captcha_result result;
    captcha_error err = {0};
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        logits[2 * 36 + 7] = bad[i];
        assert_int_equal(captcha_decode(&config, logits, &result, &err),
                         CAPTCHA_ERROR_INVALID_ARGUMENT);
        print_message("%s\n", err.message);
        assert_non_null(strstr(err.message, "position 2"));
        assert_non_null(strstr(err.message, "logit 79"));
    }
}

static void test_encode_label(void **state)
{
    (void)state;
    captcha_config config;
    captcha_config_reference(&config);
    float targets[5 * 36];
    captcha_error err = {0};
    assert_int_equal(captcha_encode_label(&config, "226md", targets, &err), CAPTCHA_OK);
    const int hot[5] = {2, 2, 6, 22, 13}; /* '2' '2' '6' 'm' 'd' in 0-9a-z */
    for (int p = 0; p < 5; p++)
        for (int c = 0; c < 36; c++)
            assert_true(targets[p * 36 + c] == (c == hot[p] ? 1.0f : 0.0f));

    /* decode(one-hot) gives the label back */
    captcha_result result;
    assert_int_equal(captcha_decode(&config, targets, &result, NULL), CAPTCHA_OK);
    assert_string_equal(result.text, "226md");

    assert_int_equal(captcha_encode_label(&config, "22#md", targets, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    print_message("%s\n", err.message);
    assert_non_null(strstr(err.message, "\"22#md\""));
    assert_non_null(strstr(err.message, "'#'"));
    assert_non_null(strstr(err.message, "position 2"));

    assert_int_equal(captcha_encode_label(&config, "226MD", targets, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "'M'"));

    assert_int_equal(captcha_encode_label(&config, "226m", targets, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    print_message("%s\n", err.message);
    assert_non_null(strstr(err.message, "\"226m\""));
    assert_non_null(strstr(err.message, "4 characters"));
    assert_non_null(strstr(err.message, "5"));

    assert_int_equal(captcha_encode_label(&config, "226mdx", targets, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "6 characters"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_argmax_and_confidence),
        cmocka_unit_test(test_decode_large_logits_are_stable),
        cmocka_unit_test(test_decode_ties_first_wins),
        cmocka_unit_test(test_decode_rejects_non_finite),
        cmocka_unit_test(test_encode_label),
    };
    return cmocka_run_group_tests_name("decode", tests, NULL, NULL);
}
