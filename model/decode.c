/* Decoding logits into text (argmax per position) and labels into one-hot targets. */
#include "decode.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* "'x'" for a printable character, "byte 0x07" otherwise. */
static const char *describe_char(char ch, char *buffer, size_t size)
{
    unsigned char c = (unsigned char)ch;
    if (c >= 0x20 && c < 0x7f)
        snprintf(buffer, size, "'%c'", c);
    else
        snprintf(buffer, size, "byte 0x%02x", c);
    return buffer;
}

captcha_status captcha_decode(const captcha_config *config, const float *logits,
                              captcha_result *result, captcha_error *err)
{
    if (!config || !logits || !result)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "captcha_decode: %s is NULL",
                            !config   ? "config"
                            : !logits ? "logits"
                                      : "result");
    if (captcha_config_validate(config, err) != CAPTCHA_OK) {
        captcha_error_prefix(err, "model configuration: ");
        return CAPTCHA_ERROR_INVALID_ARGUMENT;
    }
    const int classes = config->charset_size;
    memset(result, 0, sizeof *result);
    double confidence = 1.0;
    for (int position = 0; position < config->length; position++) {
        const float *row = logits + (size_t)position * (size_t)classes;
        int best = 0;
        for (int c = 0; c < classes; c++) {
            if (!isfinite(row[c])) {
                memset(result, 0, sizeof *result);
                return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                                    "logit %d (position %d, class %d '%c') is %g, expected a "
                                    "finite number",
                                    position * classes + c, position, c, config->charset[c],
                                    (double)row[c]);
            }
            if (row[c] > row[best]) /* strict: the first maximum wins a tie */
                best = c;
        }
        /* softmax(row)[best] = 1 / sum_c exp(row[c] - row[best]); row[best] is the
         * maximum, so every exponent is <= 0 and nothing overflows. */
        double sum = 0;
        for (int c = 0; c < classes; c++)
            sum += exp((double)row[c] - (double)row[best]);
        double p = 1.0 / sum;
        result->text[position] = config->charset[best];
        result->char_confidence[position] = (float)p;
        confidence *= p;
    }
    result->text[config->length] = '\0';
    result->length = config->length;
    result->confidence = (float)confidence;
    return CAPTCHA_OK;
}

captcha_status captcha_encode_label(const captcha_config *config, const char *label, float *targets,
                                    captcha_error *err)
{
    if (!config || !label || !targets)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "captcha_encode_label: %s is NULL",
                            !config  ? "config"
                            : !label ? "label"
                                     : "targets");
    if (captcha_config_validate(config, err) != CAPTCHA_OK) {
        captcha_error_prefix(err, "model configuration: ");
        return CAPTCHA_ERROR_INVALID_ARGUMENT;
    }
    size_t n = strlen(label);
    if (n != (size_t)config->length)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "label \"%.64s\" has %zu characters, the model reads %d", label, n,
                            config->length);
    const int classes = config->charset_size;
    for (int position = 0; position < config->length; position++) {
        if (captcha_config_char_index(config, label[position]) < 0) {
            char what[16];
            return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                                "label \"%.64s\": character %s at position %d is not in the "
                                "charset \"%s\"",
                                label, describe_char(label[position], what, sizeof what), position,
                                config->charset);
        }
    }
    memset(targets, 0, sizeof(float) * (size_t)config->length * (size_t)classes);
    for (int position = 0; position < config->length; position++)
        targets[position * classes + captcha_config_char_index(config, label[position])] = 1.0f;
    return CAPTCHA_OK;
}
