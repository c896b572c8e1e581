/* The self-description of a model: what the network reads and writes.
 *
 * Stored in the model file's safetensors `__metadata__` (all values are
 * strings there, see model_file.h). A file without our metadata (a plain
 * PyTorch state_dict) gets the reference defaults from
 * captcha_config_reference(). */
#ifndef CAPTCHA_CONFIG_H
#define CAPTCHA_CONFIG_H

#include "captcha_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CAPTCHA_MAX_CHARSET 128     /* characters in a charset (single-byte ASCII) */
#define CAPTCHA_MAX_LENGTH 32       /* characters in a code */
#define CAPTCHA_MAX_INPUT_SIDE 4096 /* network input height/width in pixels (multiples of 32) */
#define CAPTCHA_MAX_NORMALIZATION 1e6f /* |mean| at most, std in 1/this..this */

/* The reference design's values. */
#define CAPTCHA_REFERENCE_CHARSET "0123456789abcdefghijklmnopqrstuvwxyz"
#define CAPTCHA_REFERENCE_LENGTH 5
#define CAPTCHA_REFERENCE_INPUT_HEIGHT 32
#define CAPTCHA_REFERENCE_INPUT_WIDTH 128

typedef struct {
    /* Printable ASCII characters (0x21..0x7e), each at most once, in logit
     * order: class c of a position is charset[c]. NUL-terminated. */
    char charset[CAPTCHA_MAX_CHARSET + 1];
    int charset_size;            /* strlen(charset), 1..CAPTCHA_MAX_CHARSET */
    int length;                  /* characters per code, 1..CAPTCHA_MAX_LENGTH */
    int input_height;            /* network input rows, a multiple of 32 (five stride-2 blocks) */
    int input_width;             /* network input columns, a multiple of 32 */
    char channel_order[4];       /* "BGR" (as cv2.imread) or "RGB": plane order of the NCHW input */
    float mean;                  /* input = (pixel/255 - mean) / std, same for every channel */
    float std;
} captcha_config;

/* Fills config with the reference design: charset 0-9a-z, length 5,
 * input 32x128, BGR, mean 0.5, std 0.5. */
void captcha_config_reference(captcha_config *config);

/* Checks every field's range; the message names the field and its value:
 * charset (captcha_config_set_charset's rules), length 1..CAPTCHA_MAX_LENGTH,
 * input height and width multiples of 32 in 32..CAPTCHA_MAX_INPUT_SIDE,
 * channel_order "BGR" or "RGB", |mean| <= CAPTCHA_MAX_NORMALIZATION and std in
 * 1/CAPTCHA_MAX_NORMALIZATION..CAPTCHA_MAX_NORMALIZATION (so the normalized input
 * stays finite). Returns CAPTCHA_ERROR_FORMAT on failure; err may be NULL. */
captcha_status captcha_config_validate(const captcha_config *config, captcha_error *err);

/* Sets config->charset (and charset_size) from a NUL-terminated string,
 * checking it (printable ASCII, no repeats, 1..CAPTCHA_MAX_CHARSET). */
captcha_status captcha_config_set_charset(captcha_config *config, const char *charset,
                                          captcha_error *err);

/* Number of logits per image: length * charset_size. */
int captcha_config_classes(const captcha_config *config);

/* Flattened size of the last block's output: 256 * (input_height/32) * (input_width/32). */
int captcha_config_flatten_size(const captcha_config *config);

/* Index of character ch in the charset, or -1. */
int captcha_config_char_index(const captcha_config *config, char ch);

#ifdef __cplusplus
}
#endif

#endif
