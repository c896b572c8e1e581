/* Decoding logits into text: argmax per position.
 *
 * logits [length * charset_size] of one image, position-major (see network.h).
 * Per-position confidence: the softmax probability of the chosen character
 * over that position's charset_size logits. Whole-string confidence: the
 * product of the per-position confidences (the probability that every
 * position is right, under the model's own per-position independence).
 */
#ifndef CAPTCHA_DECODE_H
#define CAPTCHA_DECODE_H

#include "captcha_config.h"
#include "captcha_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char text[CAPTCHA_MAX_LENGTH + 1];            /* NUL-terminated */
    float confidence;                             /* product of char_confidence, 0..1 */
    float char_confidence[CAPTCHA_MAX_LENGTH];    /* softmax probability per position, 0..1 */
    int length;                                   /* = config->length */
} captcha_result;

/* Decodes one image's logits. Non-finite logits give CAPTCHA_ERROR_INVALID_ARGUMENT. */
captcha_status captcha_decode(const captcha_config *config, const float *logits,
                              captcha_result *result, captcha_error *err);

/* One-hot targets [length * charset_size] for a label of config->length
 * characters from the charset. Errors name the label and the offending
 * character or the length mismatch. */
captcha_status captcha_encode_label(const captcha_config *config, const char *label,
                                    float *targets, captcha_error *err);

#ifdef __cplusplus
}
#endif

#endif
