/* A labelled image folder held in memory, batches of network input built from
 * it, and the seeded augmentation of the training recipe.
 *
 * Images are held once, as decoded 8-bit RGB at their original size (the
 * augmentation warps them before the resize); each batch is preprocessed
 * (preprocess.h) when it is built. */
#ifndef CAPTCHA_DATASET_H
#define CAPTCHA_DATASET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "captcha_config.h"
#include "captcha_status.h"
#include "image_io.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    size_t count;
    captcha_rgb_image *images;              /* [count] */
    char (*labels)[CAPTCHA_MAX_LENGTH + 1]; /* [count], see captcha_label_from_path */
    char **paths;                           /* [count] */
    size_t skipped; /* entries not read: not images, undecodable, hidden, not regular files */
} captcha_dataset;

/* Loads every regular file of folder dir (sorted by name). A file that cannot
 * be read or decoded is skipped, and so is every entry the folder listing
 * leaves out (hidden files, broken symbolic links, subfolders, FIFOs, devices:
 * captcha_path_list_read_folder): a warning naming it and the reason goes to
 * warnings (when not NULL) prefixed with program, and it is counted in
 * skipped. Errors: the folder cannot be read; a file name whose label is empty
 * or longer than CAPTCHA_MAX_LENGTH characters; no image at all. */
captcha_status captcha_dataset_load(const char *dir, const char *program, FILE *warnings,
                                    captcha_dataset *dataset, captcha_error *err);
void captcha_dataset_free(captcha_dataset *dataset);

/* The common label length. Error naming two files whose labels differ in
 * length. */
captcha_status captcha_dataset_label_length(const captcha_dataset *dataset, int *length,
                                            captcha_error *err);

/* The sorted set of characters used in the labels, NUL-terminated, into
 * charset (CAPTCHA_MAX_CHARSET + 1 bytes). A label character that no charset
 * may hold (captcha_config_set_charset: printable ASCII without space) is an
 * error naming the file, the label, the byte and its position. */
captcha_status captcha_dataset_charset(const captcha_dataset *dataset, char *charset,
                                       captcha_error *err);

/* How many images of b have the same decoded pixels (size and every byte) as
 * an image of a, e.g. a validation folder overlapping the training one (the
 * same files, links or copies). *example_a and *example_b (may be NULL) receive
 * the indices of the first such pair. Returns (size_t)-1 when out of memory. */
size_t captcha_dataset_overlap(const captcha_dataset *a, const captcha_dataset *b,
                               size_t *example_a, size_t *example_b);

/* Checks that every label has config->length characters, all in the charset.
 * The message names the file, and the character or the lengths; charset_hint
 * (when not NULL) is appended to a character's, in parentheses. */
captcha_status captcha_dataset_check_labels(const captcha_dataset *dataset,
                                            const captcha_config *config, const char *charset_hint,
                                            captcha_error *err);

/* 64-bit mixing function (splitmix64's finalizer of x + golden ratio): a
 * stateless generator, random(key) for any key. */
uint64_t captcha_mix64(uint64_t x);

/* Random affine warp and photometric jitter applied to the 8-bit image before
 * the resize. Ranges are symmetric around the identity. All zero = none. */
typedef struct {
    float rotate_degrees; /* rotation in [-r, r] degrees around the centre */
    float scale;          /* common scale in [1 - s, 1 + s] */
    float aspect;         /* horizontal scale times [1 - a, 1 + a] */
    float shear;          /* horizontal shear factor in [-h, h] */
    float shift_x;        /* translation in [-t, t] * width */
    float shift_y;        /* translation in [-t, t] * height */
    float brightness;     /* added in [-b, b] * 255 */
    float contrast;       /* (v - 128) times [1 - c, 1 + c] */
    float noise;          /* uniform noise in [-n, n] * 255 per sample */
} captcha_augment;

/* Writes the augmented src into dst (same size as src, packed RGB), drawing
 * every random value from key with captcha_mix64: the same key gives the same
 * image. Bilinear sampling, edges replicated. */
void captcha_augment_image(const captcha_rgb_image *src, const captcha_augment *augment,
                           uint64_t key, uint8_t *dst);

/* Builds a batch: for i < batch, image indices[i] (augmented with key
 * keys[i] when augment is not NULL) preprocessed into input [batch, 3,
 * config->input_height, config->input_width] and, when targets is not NULL,
 * its one-hot label into targets [batch, length * charset_size]. scratch:
 * NULL or a buffer of batch * captcha_dataset_scratch_size() bytes (one image's
 * room per image of the batch). The images are built in parallel (OpenMP, the
 * current number of threads); the result does not depend on that number. */
captcha_status captcha_dataset_batch(const captcha_dataset *dataset, const size_t *indices,
                                     int batch, const captcha_config *config,
                                     const captcha_augment *augment, const uint64_t *keys,
                                     uint8_t *scratch, float *input, float *targets,
                                     captcha_error *err);
/* Number of positions where text equals label (both length characters). */
int captcha_correct_chars(const char *label, const char *text, int length);

/* Bytes of the largest image (3 * width * height). */
size_t captcha_dataset_scratch_size(const captcha_dataset *dataset);

#ifdef __cplusplus
}
#endif

#endif
