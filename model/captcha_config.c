#include "captcha_config.h"

#include <math.h>
#include <string.h>

void captcha_config_reference(captcha_config *config)
{
    memset(config, 0, sizeof *config);
    strcpy(config->charset, CAPTCHA_REFERENCE_CHARSET);
    config->charset_size = (int)strlen(CAPTCHA_REFERENCE_CHARSET);
    config->length = CAPTCHA_REFERENCE_LENGTH;
    config->input_height = CAPTCHA_REFERENCE_INPUT_HEIGHT;
    config->input_width = CAPTCHA_REFERENCE_INPUT_WIDTH;
    strcpy(config->channel_order, "BGR");
    config->mean = 0.5f;
    config->std = 0.5f;
}

captcha_status captcha_config_set_charset(captcha_config *config, const char *charset,
                                          captcha_error *err)
{
    if (!config || !charset)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_config_set_charset: %s is NULL", config ? "charset" : "config");
    size_t n = strlen(charset);
    if (n == 0)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "charset is empty");
    if (n > CAPTCHA_MAX_CHARSET)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "charset has %zu characters, at most %d are supported", n,
                            CAPTCHA_MAX_CHARSET);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)charset[i];
        if (c < 0x21 || c > 0x7e)
            return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                "charset character %zu (byte 0x%02x) is not printable ASCII", i, c);
        if (memchr(charset, c, i))
            return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "charset repeats the character '%c'",
                                c);
    }
    memcpy(config->charset, charset, n + 1);
    config->charset_size = (int)n;
    return CAPTCHA_OK;
}

captcha_status captcha_config_validate(const captcha_config *config, captcha_error *err)
{
    if (!config)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_config_validate: config is NULL");
    captcha_config copy = *config;
    /* the text fields are read as strings below: refuse them unterminated first */
    if (!memchr(config->charset, '\0', sizeof config->charset))
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "charset is not NUL-terminated within its %zu bytes (expected at "
                            "most %d characters)",
                            sizeof config->charset, CAPTCHA_MAX_CHARSET);
    if (!memchr(config->channel_order, '\0', sizeof config->channel_order))
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "channel_order is not NUL-terminated within its %zu bytes "
                            "(\"%.*s\"), expected \"BGR\" or \"RGB\"",
                            sizeof config->channel_order, (int)sizeof config->channel_order,
                            config->channel_order);
    if ((int)strnlen(config->charset, sizeof config->charset) != config->charset_size)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "charset_size %d does not match the charset's %zu characters",
                            config->charset_size, strnlen(config->charset, sizeof config->charset));
    if (captcha_config_set_charset(&copy, config->charset, err) != CAPTCHA_OK)
        return CAPTCHA_ERROR_FORMAT;
    if (config->length < 1 || config->length > CAPTCHA_MAX_LENGTH)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "length is %d, expected 1..%d",
                            config->length, CAPTCHA_MAX_LENGTH);
    if (config->input_height < 32 || config->input_height % 32 ||
        config->input_height > CAPTCHA_MAX_INPUT_SIDE)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "input_height is %d, expected a multiple of 32 in 32..%d",
                            config->input_height, CAPTCHA_MAX_INPUT_SIDE);
    if (config->input_width < 32 || config->input_width % 32 ||
        config->input_width > CAPTCHA_MAX_INPUT_SIDE)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "input_width is %d, expected a multiple of 32 in 32..%d",
                            config->input_width, CAPTCHA_MAX_INPUT_SIDE);
    if (strcmp(config->channel_order, "BGR") && strcmp(config->channel_order, "RGB"))
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "channel_order is \"%s\", expected \"BGR\" or \"RGB\"",
                            config->channel_order);
    /* (x/255 - mean) / std with x/255 in [0, 1] stays finite and below ~1e12 */
    if (!(fabsf(config->mean) <= CAPTCHA_MAX_NORMALIZATION))
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "mean is %g, expected -%g..%g",
                            (double)config->mean, (double)CAPTCHA_MAX_NORMALIZATION,
                            (double)CAPTCHA_MAX_NORMALIZATION);
    if (!(config->std >= 1.0f / CAPTCHA_MAX_NORMALIZATION &&
          config->std <= CAPTCHA_MAX_NORMALIZATION))
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "std is %g, expected %g..%g",
                            (double)config->std, 1.0 / CAPTCHA_MAX_NORMALIZATION,
                            (double)CAPTCHA_MAX_NORMALIZATION);
    return CAPTCHA_OK;
}

int captcha_config_classes(const captcha_config *config)
{
    return config->length * config->charset_size;
}

int captcha_config_flatten_size(const captcha_config *config)
{
    return 256 * (config->input_height / 32) * (config->input_width / 32);
}

int captcha_config_char_index(const captcha_config *config, char ch)
{
    if (ch == '\0')
        return -1;
    const char *p = memchr(config->charset, ch, (size_t)config->charset_size);
    return p ? (int)(p - config->charset) : -1;
}
