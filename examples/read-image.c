/* read-image: the C library without GStreamer, in one small program. Reads the
 * captcha of one image file (PNG, JPEG, ... decoded with stb_image, kept
 * short: captcha-predict decodes JPEG with libjpeg-turbo instead, as OpenCV
 * does, and its pixels can differ from these by a few levels; nor is an EXIF
 * orientation applied: a phone photo is read as stored, possibly on its side,
 * where captcha-predict turns it upright) and prints
 *     TEXT<TAB>CONFIDENCE
 * (the confidence: the product of the per-position softmax probabilities).
 *
 * Usage: read-image MODEL.safetensors IMAGE   (-h, --help: this usage)
 *
 * The steps are those of captcha-predict and the captchaocr element:
 * captcha_backend_create (auto: CUDA when usable, else the CPU),
 * captcha_model_load, captcha_preprocess (the pixels and a region to the
 * normalized NCHW input the model file describes), captcha_network_forward
 * (eval mode), captcha_decode. Exit status: 0 read, 1 an error (printed), 2
 * usage.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_image.h>

#include "backend.h"
#include "captcha_config.h"
#include "decode.h"
#include "model_file.h"
#include "network.h"
#include "preprocess.h"

static const char usage[] =
    "Usage: %s MODEL.safetensors IMAGE\n"
    "Reads the captcha of IMAGE (PNG, JPEG, ... decoded with stb_image; the whole image,\n"
    "as stored: no EXIF orientation is applied, unlike captcha-predict)\n"
    "with the model and prints TEXT<TAB>CONFIDENCE (the product of the per-character\n"
    "probabilities). Exit status: 0 read, 1 an error (printed), 2 usage.\n";

int main(int argc, char **argv)
{
    /* asked for: on stdout; after a usage error: on stderr, where no result is read */
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf(usage, argv[0]);
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, usage, argv[0]);
        return 2;
    }
    captcha_error err = {0};
    captcha_backend *backend = NULL;
    captcha_network *network = NULL;
    unsigned char *pixels = NULL;
    float *input = NULL, *logits = NULL;
    int status = 1, width, height;

    /* RGB, 3 bytes a pixel, rows packed (an alpha channel is dropped) */
    pixels = stbi_load(argv[2], &width, &height, NULL, 3);
    if (!pixels) {
        fprintf(stderr, "%s: %s\n", argv[2], stbi_failure_reason());
        goto done;
    }
    char fallback[256];
    if (captcha_backend_create(CAPTCHA_DEVICE_AUTO, 0, 0, &backend, fallback, sizeof fallback,
                               &err) != CAPTCHA_OK ||
        captcha_model_load(argv[1], backend, &network, NULL, 0, &err) != CAPTCHA_OK) {
        fprintf(stderr, "%s\n", err.message);
        goto done;
    }

    /* one image [1, 3, input_height, input_width] and its logits [1, length * charset] */
    const captcha_config *config = captcha_network_config(network);
    input = malloc(3 * (size_t)config->input_height * (size_t)config->input_width *
                   sizeof *input);
    logits = malloc((size_t)captcha_config_classes(config) * sizeof *logits);
    if (!input || !logits) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    const captcha_image image = {.format = CAPTCHA_PIXEL_RGB,
                                 .width = width,
                                 .height = height,
                                 .planes = {pixels},
                                 .strides = {3 * width}};
    const captcha_roi whole = {0, 0, width, height};
    captcha_result result;
    if (captcha_preprocess(&image, &whole, config, input, &err) != CAPTCHA_OK ||
        captcha_network_forward(network, input, 1, CAPTCHA_MODE_EVAL, logits, &err) !=
            CAPTCHA_OK ||
        captcha_decode(config, logits, &result, &err) != CAPTCHA_OK) {
        fprintf(stderr, "%s: %s\n", argv[2], err.message);
        goto done;
    }
    printf("%s\t%.4f\n", result.text, result.confidence);
    status = 0;

done:
    free(input);
    free(logits);
    stbi_image_free(pixels);
    captcha_network_destroy(network);
    captcha_backend_destroy(backend);
    return status;
}
