/* A labelled image folder in memory, batches, augmentation (see dataset.h). */
#include "dataset.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "preprocess.h"
#include "tool_util.h"

captcha_status captcha_dataset_load(const char *dir, const char *program, FILE *warnings,
                                    captcha_dataset *dataset, captcha_error *err)
{
    memset(dataset, 0, sizeof *dataset);
    captcha_path_list list = {0};
    captcha_status status =
        captcha_path_list_read_folder(&list, dir, program, warnings, &dataset->skipped, err);
    if (status != CAPTCHA_OK)
        goto done;
    dataset->images = calloc(list.count ? list.count : 1, sizeof *dataset->images);
    dataset->labels = calloc(list.count ? list.count : 1, sizeof *dataset->labels);
    dataset->paths = calloc(list.count ? list.count : 1, sizeof *dataset->paths);
    if (!dataset->images || !dataset->labels || !dataset->paths) {
        status = captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "out of memory reading %s", dir);
        goto done;
    }
    for (size_t i = 0; i < list.count; i++) {
        const char *path = list.paths[i];
        char *label = dataset->labels[dataset->count];
        int length = captcha_label_from_path(path, label, sizeof dataset->labels[0]);
        captcha_error image_err = {0};
        captcha_rgb_image image;
        if (captcha_rgb_image_read(path, &image, &image_err) != CAPTCHA_OK) {
            if (warnings)
                captcha_tool_print_line(warnings, program, "warning: skipping %s",
                                        image_err.message);
            dataset->skipped++;
            continue;
        }
        if (length <= 0) {
            captcha_rgb_image_free(&image);
            status =
                captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                             "%s: the file name gives %s label (at most %d characters "
                             "before the first '_' and the extension)",
                             path, length == 0 ? "an empty" : "too long a", CAPTCHA_MAX_LENGTH);
            goto done;
        }
        dataset->images[dataset->count] = image;
        dataset->paths[dataset->count] = list.paths[i];
        list.paths[i] = NULL;
        dataset->count++;
    }
    if (dataset->count == 0)
        status = captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                              "%s: no readable image in the folder (%zu file(s) skipped)", dir,
                              dataset->skipped);
done:
    captcha_path_list_free(&list);
    if (status != CAPTCHA_OK)
        captcha_dataset_free(dataset);
    return status;
}

void captcha_dataset_free(captcha_dataset *dataset)
{
    if (!dataset)
        return;
    for (size_t i = 0; i < dataset->count; i++) {
        captcha_rgb_image_free(&dataset->images[i]);
        free(dataset->paths[i]);
    }
    free(dataset->images);
    free(dataset->labels);
    free(dataset->paths);
    size_t skipped = dataset->skipped;
    memset(dataset, 0, sizeof *dataset);
    dataset->skipped = skipped;
}

/* 'c' for a printable character, else "byte 0xHH", into shown (16 bytes). */
static void show_char(unsigned char c, char *shown, size_t size)
{
    if (c > 0x20 && c < 0x7f)
        snprintf(shown, size, "'%c'", c);
    else
        snprintf(shown, size, "byte 0x%02x", c);
}

/* Fails naming the first byte of label i that is not ASCII: a UTF-8 "é" is two
 * bytes, which the length checks would otherwise report as a label too long. */
static captcha_status check_ascii(const captcha_dataset *dataset, size_t i, captcha_error *err)
{
    for (const char *c = dataset->labels[i]; *c; c++) {
        if ((unsigned char)*c >= 0x80) {
            char shown[16];
            show_char((unsigned char)*c, shown, sizeof shown);
            return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                                "%s: label \"%s\": %s (position %d) is not ASCII: a label holds "
                                "one ASCII character of the charset per position (rename the file)",
                                dataset->paths[i], dataset->labels[i], shown,
                                (int)(c - dataset->labels[i]) + 1);
        }
    }
    return CAPTCHA_OK;
}

captcha_status captcha_dataset_label_length(const captcha_dataset *dataset, int *length,
                                            captcha_error *err)
{
    *length = (int)strlen(dataset->labels[0]);
    for (size_t i = 1; i < dataset->count; i++) {
        int n = (int)strlen(dataset->labels[i]);
        if (n != *length && (check_ascii(dataset, 0, err) != CAPTCHA_OK ||
                             check_ascii(dataset, i, err) != CAPTCHA_OK))
            return CAPTCHA_ERROR_INVALID_ARGUMENT;
        if (n != *length)
            return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                                "labels of different lengths: %s has %d characters (\"%s\"), "
                                "%s has %d (\"%s\")",
                                dataset->paths[0], *length, dataset->labels[0], dataset->paths[i],
                                n, dataset->labels[i]);
    }
    return CAPTCHA_OK;
}

captcha_status captcha_dataset_charset(const captcha_dataset *dataset, char *charset,
                                       captcha_error *err)
{
    unsigned char used[256] = {0};
    for (size_t i = 0; i < dataset->count; i++)
        for (const char *c = dataset->labels[i]; *c; c++) {
            unsigned char byte = (unsigned char)*c;
            if (byte < 0x21 || byte > 0x7e) {
                char shown[16];
                show_char(byte, shown, sizeof shown);
                return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                                    "%s: label \"%s\": character %s (position %d) cannot be in "
                                    "a charset (printable ASCII without space; rename the file)",
                                    dataset->paths[i], dataset->labels[i], shown,
                                    (int)(c - dataset->labels[i]) + 1);
            }
            used[byte] = 1;
        }
    int n = 0;
    for (int c = 1; c < 256 && n < CAPTCHA_MAX_CHARSET; c++)
        if (used[c])
            charset[n++] = (char)c;
    charset[n] = '\0';
    return CAPTCHA_OK;
}

captcha_status captcha_dataset_check_labels(const captcha_dataset *dataset,
                                            const captcha_config *config, const char *charset_hint,
                                            captcha_error *err)
{
    for (size_t i = 0; i < dataset->count; i++) {
        const char *label = dataset->labels[i];
        int n = (int)strlen(label);
        if (check_ascii(dataset, i, err) != CAPTCHA_OK)
            return CAPTCHA_ERROR_INVALID_ARGUMENT;
        if (n != config->length)
            return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                                "%s: label \"%s\" has %d characters, the model reads %d",
                                dataset->paths[i], label, n, config->length);
        for (int p = 0; p < n; p++) {
            if (captcha_config_char_index(config, label[p]) < 0) {
                char shown[16];
                show_char((unsigned char)label[p], shown, sizeof shown);
                return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                                    "%s: label \"%s\": character %s (position %d) is not in the "
                                    "charset \"%s\"%s%s%s",
                                    dataset->paths[i], label, shown, p + 1, config->charset,
                                    charset_hint ? " (" : "", charset_hint ? charset_hint : "",
                                    charset_hint ? ")" : "");
            }
        }
    }
    return CAPTCHA_OK;
}

/* FNV-1a over an image's size and pixels. */
static uint64_t image_hash(const captcha_rgb_image *image)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    int size[2] = {image->width, image->height};
    const uint8_t *bytes = (const uint8_t *)size;
    for (size_t i = 0; i < sizeof size; i++)
        h = (h ^ bytes[i]) * 0x100000001b3ULL;
    size_t n = (size_t)image->width * (size_t)image->height * 3;
    for (size_t i = 0; i < n; i++)
        h = (h ^ image->rgb[i]) * 0x100000001b3ULL;
    return h;
}

typedef struct {
    uint64_t hash;
    size_t index;
} hashed_image;

static int compare_hashed(const void *x, const void *y)
{
    uint64_t a = ((const hashed_image *)x)->hash, b = ((const hashed_image *)y)->hash;
    return a < b ? -1 : a > b;
}

static int same_pixels(const captcha_rgb_image *x, const captcha_rgb_image *y)
{
    return x->width == y->width && x->height == y->height &&
           !memcmp(x->rgb, y->rgb, (size_t)x->width * (size_t)x->height * 3);
}

size_t captcha_dataset_overlap(const captcha_dataset *a, const captcha_dataset *b,
                               size_t *example_a, size_t *example_b)
{
    hashed_image *sorted = malloc((a->count ? a->count : 1) * sizeof *sorted);
    if (!sorted)
        return (size_t)-1;
    for (size_t i = 0; i < a->count; i++)
        sorted[i] = (hashed_image){image_hash(&a->images[i]), i};
    qsort(sorted, a->count, sizeof *sorted, compare_hashed);
    size_t found = 0;
    for (size_t j = 0; j < b->count; j++) {
        hashed_image key = {image_hash(&b->images[j]), 0};
        hashed_image *hit = bsearch(&key, sorted, a->count, sizeof *sorted, compare_hashed);
        if (!hit)
            continue;
        while (hit > sorted && hit[-1].hash == key.hash) /* the first of equal hashes */
            hit--;
        for (; hit < sorted + a->count && hit->hash == key.hash; hit++) {
            if (same_pixels(&a->images[hit->index], &b->images[j])) {
                if (found++ == 0) {
                    if (example_a)
                        *example_a = hit->index;
                    if (example_b)
                        *example_b = j;
                }
                break;
            }
        }
    }
    free(sorted);
    return found;
}

uint64_t captcha_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Uniform in [-1, 1) from the n-th draw of key. */
static float symmetric(uint64_t key, uint64_t n)
{
    uint64_t bits = captcha_mix64(key ^ captcha_mix64(n));
    return (float)((double)(bits >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static uint8_t clamp_byte(float v)
{
    if (v <= 0.0f)
        return 0;
    if (v >= 255.0f)
        return 255;
    return (uint8_t)lrintf(v);
}

void captcha_augment_image(const captcha_rgb_image *src, const captcha_augment *augment,
                           uint64_t key, uint8_t *dst)
{
    const int width = src->width, height = src->height;
    const float theta = augment->rotate_degrees * symmetric(key, 0) * (float)M_PI / 180.0f;
    const float scale = 1.0f + augment->scale * symmetric(key, 1);
    const float scale_x = scale * (1.0f + augment->aspect * symmetric(key, 2));
    const float scale_y = scale;
    const float shear = augment->shear * symmetric(key, 3);
    const float shift_x = augment->shift_x * symmetric(key, 4) * (float)width;
    const float shift_y = augment->shift_y * symmetric(key, 5) * (float)height;
    const float contrast = 1.0f + augment->contrast * symmetric(key, 6);
    const float brightness = augment->brightness * symmetric(key, 7) * 255.0f;
    const uint64_t noise_key = captcha_mix64(key ^ 0x6e6f697365ULL);

    /* Forward map around the centre: dst = R(theta) * Shear * diag(sx, sy) * (src - c) + c + t.
     * Inverted here once; each destination pixel samples src at M^-1 (dst - c - t) + c. */
    const float cos_t = cosf(theta), sin_t = sinf(theta);
    /* A = R * S * D with S = [[1, shear], [0, 1]], D = diag(sx, sy). */
    const float a00 = cos_t * scale_x, a01 = (cos_t * shear - sin_t) * scale_y;
    const float a10 = sin_t * scale_x, a11 = (sin_t * shear + cos_t) * scale_y;
    const float det = a00 * a11 - a01 * a10;
    const float i00 = a11 / det, i01 = -a01 / det, i10 = -a10 / det, i11 = a00 / det;
    const float cx = 0.5f * (float)(width - 1), cy = 0.5f * (float)(height - 1);

    for (int y = 0; y < height; y++) {
        for (int x = 0; x < width; x++) {
            float dx = (float)x - cx - shift_x, dy = (float)y - cy - shift_y;
            float sx = i00 * dx + i01 * dy + cx;
            float sy = i10 * dx + i11 * dy + cy;
            if (sx < 0.0f)
                sx = 0.0f;
            if (sx > (float)(width - 1))
                sx = (float)(width - 1);
            if (sy < 0.0f)
                sy = 0.0f;
            if (sy > (float)(height - 1))
                sy = (float)(height - 1);
            int x0 = (int)sx, y0 = (int)sy;
            int x1 = x0 + 1 < width ? x0 + 1 : x0, y1 = y0 + 1 < height ? y0 + 1 : y0;
            float fx = sx - (float)x0, fy = sy - (float)y0;
            const uint8_t *p00 = src->rgb + 3 * ((size_t)y0 * width + x0);
            const uint8_t *p01 = src->rgb + 3 * ((size_t)y0 * width + x1);
            const uint8_t *p10 = src->rgb + 3 * ((size_t)y1 * width + x0);
            const uint8_t *p11 = src->rgb + 3 * ((size_t)y1 * width + x1);
            uint8_t *out = dst + 3 * ((size_t)y * width + x);
            float noise = 0.0f;
            if (augment->noise > 0.0f)
                noise = augment->noise * 255.0f *
                        symmetric(noise_key, (uint64_t)y * (uint64_t)width + (uint64_t)x);
            for (int c = 0; c < 3; c++) {
                float top = (float)p00[c] + fx * (float)(p01[c] - p00[c]);
                float bottom = (float)p10[c] + fx * (float)(p11[c] - p10[c]);
                float v = top + fy * (bottom - top);
                v = (v - 128.0f) * contrast + 128.0f + brightness + noise;
                out[c] = clamp_byte(v);
            }
        }
    }
}

int captcha_correct_chars(const char *label, const char *text, int length)
{
    int correct = 0;
    for (int p = 0; p < length; p++)
        correct += label[p] == text[p];
    return correct;
}

size_t captcha_dataset_scratch_size(const captcha_dataset *dataset)
{
    size_t largest = 0;
    for (size_t i = 0; i < dataset->count; i++) {
        size_t bytes = 3 * (size_t)dataset->images[i].width * (size_t)dataset->images[i].height;
        if (bytes > largest)
            largest = bytes;
    }
    return largest;
}

captcha_status captcha_dataset_batch(const captcha_dataset *dataset, const size_t *indices,
                                     int batch, const captcha_config *config,
                                     const captcha_augment *augment, const uint64_t *keys,
                                     uint8_t *scratch, float *input, float *targets,
                                     captcha_error *err)
{
    const size_t image_floats = 3 * (size_t)config->input_height * (size_t)config->input_width;
    const size_t classes = (size_t)captcha_config_classes(config);
    const size_t scratch_size = captcha_dataset_scratch_size(dataset);
    uint8_t *owned = NULL;
    if (augment && !scratch && batch > 0) {
        owned = malloc(scratch_size * (size_t)batch);
        if (!owned)
            return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "out of memory building a batch");
        scratch = owned;
    }
    /* The images are independent (each augmentation depends only on its key), so they are
     * built in parallel; the result does not depend on the number of threads. The error
     * reported is that of the first failing image in batch order. */
    int first_failed = batch;
    captcha_status status = CAPTCHA_OK;
    captcha_error first_err = {0};
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < batch; i++) {
        size_t index = indices[i];
        captcha_rgb_image image = dataset->images[index];
        if (augment) {
            uint8_t *own_scratch = scratch + scratch_size * (size_t)i;
            captcha_augment_image(&dataset->images[index], augment, keys[i], own_scratch);
            image.rgb = own_scratch;
        }
        captcha_error image_err = {0};
        captcha_image view = captcha_rgb_image_view(&image);
        captcha_status image_status =
            captcha_preprocess(&view, NULL, config, input + (size_t)i * image_floats, &image_err);
        if (image_status == CAPTCHA_OK && targets)
            image_status = captcha_encode_label(config, dataset->labels[index],
                                                targets + (size_t)i * classes, &image_err);
        if (image_status != CAPTCHA_OK) {
#pragma omp critical(captcha_dataset_batch_error)
            if (i < first_failed) {
                first_failed = i;
                status = image_status;
                first_err = image_err;
            }
        }
    }
    if (status != CAPTCHA_OK && err) {
        *err = first_err;
        captcha_error_prefix(err, "%s: ", dataset->paths[indices[first_failed]]);
    }
    free(owned);
    return status;
}
