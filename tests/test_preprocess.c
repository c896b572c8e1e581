/* Preprocessing: pixel formats, strides, ROI, normalization, and the resize
 * against an independent double-precision bilinear reference and against
 * OpenCV's cv2.resize on real captcha images.
 *
 * The OpenCV group needs the shared data ($CAPTCHA_SHARED_DATA or
 * ../shared/data) and /usr/bin/python3 with cv2; without them the other
 * groups still run and the test then exits 77 (skipped) with the reason,
 * unless something failed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

#include "captcha-build-config.h"
#include "preprocess.h"
#include "test_util.h"

/* ---- pictures and format conversion done here, independently of the library ---- */

static uint8_t *make_bgr_picture(int w, int h, uint64_t seed)
{
    uint8_t *bgr = malloc((size_t)w * h * 3);
    float *noise = malloc(sizeof(float) * (size_t)w * h * 3);
    captcha_test_fill_uniform(noise, (size_t)w * h * 3, 0.f, 1.f, seed);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                /* smooth ramps plus noise, covering 0..255 */
                double v = 127.5 + 100 * sin(0.3 * x + 0.7 * c) * cos(0.4 * y - c) +
                           60 * (noise[((size_t)y * w + x) * 3 + c] - 0.5);
                bgr[((size_t)y * w + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    free(noise);
    return bgr;
}

/* An image in one format built from a BGR picture, with `pad` bytes of garbage after
 * each row of each plane. */
typedef struct {
    captcha_image image;
    uint8_t *storage[3];
} test_image;

/* BT.601 limited range RGB -> YUV in double (the inverse of the published matrix):
 * Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, U = 128 + (-37.797 R - 74.203 G
 * + 112 B) / 255, V = 128 + (112 R - 93.786 G - 18.214 B) / 255. */
static void rgb_to_yuv(double r, double g, double b, uint8_t *y, uint8_t *u, uint8_t *v)
{
    *y = (uint8_t)lround(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255);
    *u = (uint8_t)lround(128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255);
    *v = (uint8_t)lround(128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255);
}

static test_image make_image(const uint8_t *bgr, int w, int h, captcha_pixel_format format, int pad)
{
    test_image t;
    memset(&t, 0, sizeof t);
    t.image.format = format;
    t.image.width = w;
    t.image.height = h;
    int cw = (w + 1) / 2, ch = (h + 1) / 2;
    if (format == CAPTCHA_PIXEL_NV12 || format == CAPTCHA_PIXEL_I420) {
        int nv12 = format == CAPTCHA_PIXEL_NV12;
        t.image.strides[0] = w + pad;
        t.image.strides[1] = (nv12 ? 2 * cw : cw) + pad;
        t.image.strides[2] = nv12 ? 0 : cw + pad;
        for (int p = 0; p < (nv12 ? 2 : 3); p++) {
            size_t size = (size_t)t.image.strides[p] * (p ? ch : h);
            t.storage[p] = malloc(size);
            memset(t.storage[p], 0xA5, size);
            t.image.planes[p] = t.storage[p];
        }
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                const uint8_t *px = bgr + ((size_t)y * w + x) * 3;
                uint8_t Y, U, V;
                rgb_to_yuv(px[2], px[1], px[0], &Y, &U, &V);
                t.storage[0][(size_t)y * t.image.strides[0] + x] = Y;
                /* chroma of the top-left pixel of each 2x2 block (the pictures used
                 * with YUV have one colour per block) */
                if (x % 2 == 0 && y % 2 == 0) {
                    uint8_t *row1 = t.storage[1] + (size_t)(y / 2) * t.image.strides[1];
                    if (nv12) {
                        row1[x] = U;
                        row1[x + 1] = V;
                    } else {
                        row1[x / 2] = U;
                        t.storage[2][(size_t)(y / 2) * t.image.strides[2] + x / 2] = V;
                    }
                }
            }
        return t;
    }
    int bpp = captcha_pixel_format_bytes_per_pixel(format);
    /* byte offsets of B, G, R and A (-1: none) */
    int ob, og, orr, oa = -1;
    switch (format) {
    case CAPTCHA_PIXEL_BGR: ob = 0, og = 1, orr = 2; break;
    case CAPTCHA_PIXEL_RGB: ob = 2, og = 1, orr = 0; break;
    case CAPTCHA_PIXEL_BGRA: ob = 0, og = 1, orr = 2, oa = 3; break;
    case CAPTCHA_PIXEL_RGBA: ob = 2, og = 1, orr = 0, oa = 3; break;
    case CAPTCHA_PIXEL_ARGB: oa = 0, orr = 1, og = 2, ob = 3; break;
    case CAPTCHA_PIXEL_ABGR: oa = 0, ob = 1, og = 2, orr = 3; break;
    default: ob = og = orr = 0; break; /* GRAY8: B channel taken as the grey value */
    }
    t.image.strides[0] = w * bpp + pad;
    size_t size = (size_t)t.image.strides[0] * h;
    t.storage[0] = malloc(size);
    memset(t.storage[0], 0x5A, size);
    t.image.planes[0] = t.storage[0];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const uint8_t *px = bgr + ((size_t)y * w + x) * 3;
            uint8_t *d = t.storage[0] + (size_t)y * t.image.strides[0] + (size_t)x * bpp;
            d[ob] = px[0];
            d[og] = px[1];
            d[orr] = px[2];
            if (oa >= 0)
                d[oa] = (uint8_t)(x * 31 + y * 17); /* alpha must be ignored */
        }
    return t;
}

static void free_image(test_image *t)
{
    for (int p = 0; p < 3; p++)
        free(t->storage[p]);
}

/* Plain bilinear resize in double with OpenCV's coordinate mapping
 * (src = (dst + 0.5) * src_size / dst_size - 0.5, clamped to the edge pixels). */
static void reference_resize(const uint8_t *src, int sw, int sh, int dw, int dh, double *out)
{
    for (int dy = 0; dy < dh; dy++) {
        double fy = (dy + 0.5) * sh / dh - 0.5;
        int y0 = (int)floor(fy);
        double wy = fy - y0;
        if (y0 < 0)
            y0 = 0, wy = 0;
        if (y0 >= sh - 1)
            y0 = sh - 1, wy = 0;
        int y1 = y0 + 1 < sh ? y0 + 1 : y0;
        for (int dx = 0; dx < dw; dx++) {
            double fx = (dx + 0.5) * sw / dw - 0.5;
            int x0 = (int)floor(fx);
            double wx = fx - x0;
            if (x0 < 0)
                x0 = 0, wx = 0;
            if (x0 >= sw - 1)
                x0 = sw - 1, wx = 0;
            int x1 = x0 + 1 < sw ? x0 + 1 : x0;
            for (int c = 0; c < 3; c++) {
#define PX(yy, xx) ((double)src[((size_t)(yy)*sw + (xx)) * 3 + c])
                double top = PX(y0, x0) * (1 - wx) + PX(y0, x1) * wx;
                double bottom = PX(y1, x0) * (1 - wx) + PX(y1, x1) * wx;
#undef PX
                out[((size_t)dy * dw + dx) * 3 + c] = top * (1 - wy) + bottom * wy;
            }
        }
    }
}

static void config_with_size(captcha_config *config, int height, int width)
{
    captcha_config_reference(config);
    config->input_height = height;
    config->input_width = width;
}

/* ---- resize ---- */

static void test_resize_matches_double_reference(void **state)
{
    (void)state;
    static const int cases[][4] = {
        /* source w, h -> output w, h */
        {200, 50, 128, 32}, {50, 20, 192, 64},  {37, 23, 20, 80},   {1, 1, 5, 3},
        {7, 1, 3, 4},       {256, 64, 128, 32}, {129, 33, 128, 32}, {3, 200, 41, 9},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int sw = cases[i][0], sh = cases[i][1], dw = cases[i][2], dh = cases[i][3];
        uint8_t *bgr = make_bgr_picture(sw, sh, 100 + i);
        test_image t = make_image(bgr, sw, sh, CAPTCHA_PIXEL_BGR, 0);
        uint8_t *out = malloc((size_t)dw * dh * 3);
        double *ref = malloc(sizeof(double) * dw * dh * 3);
        captcha_error err = {0};
        assert_int_equal(captcha_preprocess_resize_bgr(&t.image, NULL, dw, dh, out, &err),
                         CAPTCHA_OK);
        reference_resize(bgr, sw, sh, dw, dh, ref);
        double worst = 0;
        for (size_t k = 0; k < (size_t)dw * dh * 3; k++)
            worst = fmax(worst, fabs(out[k] - ref[k]));
        print_message("resize %dx%d -> %dx%d: max |ours - double bilinear| = %.3f\n", sw, sh, dw,
                      dh, worst);
        /* 8-bit rounding (0.5) plus OpenCV's 11-bit weights and truncations (< 0.5) */
        assert_true(worst < 1.0);
        free(out);
        free(ref);
        free_image(&t);
        free(bgr);
    }
}

static void test_resize_same_size_is_exact(void **state)
{
    (void)state;
    int w = 61, h = 29;
    uint8_t *bgr = make_bgr_picture(w, h, 7);
    test_image t = make_image(bgr, w, h, CAPTCHA_PIXEL_BGR, 0);
    uint8_t *out = malloc((size_t)w * h * 3);
    assert_int_equal(captcha_preprocess_resize_bgr(&t.image, NULL, w, h, out, NULL), CAPTCHA_OK);
    assert_memory_equal(out, bgr, (size_t)w * h * 3);
    /* a region of the target size: exactly its pixels */
    captcha_roi roi = {5, 3, 20, 11};
    assert_int_equal(captcha_preprocess_resize_bgr(&t.image, &roi, 20, 11, out, NULL), CAPTCHA_OK);
    for (int y = 0; y < 11; y++)
        assert_memory_equal(out + (size_t)y * 20 * 3, bgr + ((size_t)(y + 3) * w + 5) * 3, 60);
    free(out);
    free_image(&t);
    free(bgr);
}

static void test_roi_equals_cropped_copy(void **state)
{
    (void)state;
    int w = 200, h = 50;
    uint8_t *bgr = make_bgr_picture(w, h, 8);
    captcha_roi roi = {33, 7, 101, 31};
    uint8_t *crop = malloc((size_t)roi.width * roi.height * 3);
    for (int y = 0; y < roi.height; y++)
        memcpy(crop + (size_t)y * roi.width * 3, bgr + ((size_t)(y + roi.y) * w + roi.x) * 3,
               (size_t)roi.width * 3);
    test_image whole = make_image(bgr, w, h, CAPTCHA_PIXEL_BGRA, 0);
    test_image cropped = make_image(crop, roi.width, roi.height, CAPTCHA_PIXEL_BGRA, 0);
    captcha_config config;
    captcha_config_reference(&config);
    size_t n = 3 * 32 * 128;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    assert_int_equal(captcha_preprocess(&whole.image, &roi, &config, a, NULL), CAPTCHA_OK);
    assert_int_equal(captcha_preprocess(&cropped.image, NULL, &config, b, NULL), CAPTCHA_OK);
    assert_memory_equal(a, b, n * sizeof(float));
    free(a);
    free(b);
    free_image(&whole);
    free_image(&cropped);
    free(crop);
    free(bgr);
}

/* ---- formats and strides ---- */

/* A picture with one colour per 2x2 block, so 4:2:0 chroma loses nothing. */
static uint8_t *make_block_picture(int w, int h, uint64_t seed)
{
    uint8_t *bgr = make_bgr_picture(w, h, seed);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(bgr + ((size_t)y * w + x) * 3, bgr + ((size_t)(y & ~1) * w + (x & ~1)) * 3, 3);
    return bgr;
}

static void test_formats_give_same_tensor(void **state)
{
    (void)state;
    int w = 75, h = 27; /* odd: chroma planes hold (w+1)/2 x (h+1)/2 samples */
    uint8_t *bgr = make_block_picture(w, h, 11);
    uint8_t *grey = malloc((size_t)w * h * 3);
    for (size_t k = 0; k < (size_t)w * h; k++)
        grey[3 * k] = grey[3 * k + 1] = grey[3 * k + 2] = bgr[3 * k + 1];
    captcha_config config;
    config_with_size(&config, 32, 64);
    size_t n = (size_t)3 * 32 * 64;
    float *reference = malloc(n * sizeof(float)), *grey_reference = malloc(n * sizeof(float));
    float *out = malloc(n * sizeof(float));
    test_image t = make_image(bgr, w, h, CAPTCHA_PIXEL_BGR, 0);
    assert_int_equal(captcha_preprocess(&t.image, NULL, &config, reference, NULL), CAPTCHA_OK);
    free_image(&t);
    t = make_image(grey, w, h, CAPTCHA_PIXEL_BGR, 0);
    assert_int_equal(captcha_preprocess(&t.image, NULL, &config, grey_reference, NULL), CAPTCHA_OK);
    free_image(&t);

    for (int f = CAPTCHA_PIXEL_BGR; f <= CAPTCHA_PIXEL_I420; f++) {
        int yuv = f == CAPTCHA_PIXEL_NV12 || f == CAPTCHA_PIXEL_I420;
        int gray = f == CAPTCHA_PIXEL_GRAY8;
        t = make_image(gray ? grey : bgr, w, h, (captcha_pixel_format)f, 0);
        captcha_error err = {0};
        assert_int_equal(captcha_preprocess(&t.image, NULL, &config, out, &err), CAPTCHA_OK);
        double d = captcha_test_max_abs_error(out, gray ? grey_reference : reference, n);
        print_message("%-5s: max |tensor - BGR tensor| = %.5f\n",
                      captcha_pixel_format_name((captcha_pixel_format)f), d);
        if (yuv) {
            /* BGR -> YUV (rounded to 8 bits here) -> BGR in the library: the round trip
             * is within 2 grey levels per pixel; resizing adds at most one more level.
             * In tensor units (std 0.5): 3 / 127.5. */
            assert_true(d <= 3.0 / 127.5 + 1e-6);
            /* and at the picture's own size, per pixel, within 2 grey levels */
            uint8_t *back = malloc((size_t)w * h * 3);
            assert_int_equal(captcha_preprocess_resize_bgr(&t.image, NULL, w, h, back, NULL),
                             CAPTCHA_OK);
            int worst = 0;
            for (size_t k = 0; k < (size_t)w * h * 3; k++)
                worst = abs(back[k] - bgr[k]) > worst ? abs(back[k] - bgr[k]) : worst;
            print_message("%-5s: round trip BGR -> YUV -> BGR max error %d grey levels\n",
                          captcha_pixel_format_name((captcha_pixel_format)f), worst);
            assert_true(worst <= 2);
            free(back);
        } else {
            assert_true(d == 0.0);
        }
        free_image(&t);
    }
    free(out);
    free(reference);
    free(grey_reference);
    free(grey);
    free(bgr);
}

static void test_yuv_known_colours(void **state)
{
    (void)state;
    /* BT.601 limited-range codes of 100% colours (ITU-R BT.601 / EBU bars):
     * Y, U (Cb), V (Cr) -> B, G, R */
    static const int cases[][6] = {
        {16, 128, 128, 0, 0, 0},     {235, 128, 128, 255, 255, 255}, {81, 90, 240, 0, 0, 255},
        {145, 54, 34, 0, 255, 0},    {41, 240, 110, 255, 0, 0},      {210, 16, 146, 0, 255, 255},
        {170, 166, 16, 255, 255, 0}, {106, 202, 222, 255, 0, 255},   {126, 128, 128, 128, 128, 128},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t y[4], uv[2] = {(uint8_t)cases[i][1], (uint8_t)cases[i][2]};
        uint8_t u[1] = {uv[0]}, v[1] = {uv[1]};
        memset(y, cases[i][0], sizeof y);
        captcha_image nv12 = {.format = CAPTCHA_PIXEL_NV12,
                              .width = 2,
                              .height = 2,
                              .planes = {y, uv, NULL},
                              .strides = {2, 2, 0}};
        captcha_image i420 = {.format = CAPTCHA_PIXEL_I420,
                              .width = 2,
                              .height = 2,
                              .planes = {y, u, v},
                              .strides = {2, 1, 1}};
        uint8_t out[12];
        for (int k = 0; k < 2; k++) {
            assert_int_equal(
                captcha_preprocess_resize_bgr(k ? &i420 : &nv12, NULL, 2, 2, out, NULL),
                CAPTCHA_OK);
            for (int c = 0; c < 12; c++) {
                if (abs(out[c] - cases[i][3 + c % 3]) > 2)
                    fail_msg("YUV %d,%d,%d -> BGR %d,%d,%d, expected %d,%d,%d (+-2)", cases[i][0],
                             cases[i][1], cases[i][2], out[0], out[1], out[2], cases[i][3],
                             cases[i][4], cases[i][5]);
            }
        }
    }
}

/* Every matrix and range: colours converted to YUV in double with the published
 * Kr, Kb (ITU-R BT.601, BT.709, BT.2020, FCC, SMPTE 240M) and rounded come back
 * within 2 levels (the 8-bit rounding of Y, U and V), and read with another
 * matrix or range they do not (the choice matters). BT.601 limited range keeps
 * the coefficients of before (the published 1.164383, 1.596027, 0.391762,
 * 0.812968, 2.017232 times 65536). */
static void test_yuv_matrices(void **state)
{
    (void)state;
    static const double kr_kb[][2] = {
        {0.299, 0.114}, {0.2126, 0.0722}, {0.2627, 0.0593}, {0.30, 0.11}, {0.212, 0.087}};
    static const int colours[][3] = {/* B, G, R */
                                     {20, 40, 230}, {30, 220, 60},  {230, 50, 40}, {200, 200, 30},
                                     {128, 128, 128}, {250, 250, 250}, {60, 120, 180}};
    captcha_yuv_coefficients k;
    assert_int_equal(captcha_yuv_coefficients_get(CAPTCHA_YUV_BT601, 0, &k, NULL), CAPTCHA_OK);
    assert_int_equal(k.y_offset, 16);
    assert_int_equal(k.y, 76309);
    assert_int_equal(k.rv, 104597);
    assert_int_equal(k.gu, 25675);
    assert_int_equal(k.gv, 53279);
    assert_int_equal(k.bu, 132201);
    for (int m = CAPTCHA_YUV_BT601; m <= CAPTCHA_YUV_SMPTE240M; m++)
        for (int full = 0; full <= 1; full++) {
            double kr = kr_kb[m][0], kb = kr_kb[m][1], kg = 1 - kr - kb;
            double ys = full ? 255.0 : 219.0, cs = full ? 255.0 : 224.0, yo = full ? 0 : 16;
            int worst_other = 0;
            for (size_t c = 0; c < sizeof colours / sizeof colours[0]; c++) {
                double b = colours[c][0] / 255.0, g = colours[c][1] / 255.0,
                       r = colours[c][2] / 255.0;
                double luma = kr * r + kg * g + kb * b;
                uint8_t y[4], u[1], v[1];
                memset(y, (int)lround(yo + ys * luma), sizeof y);
                u[0] = (uint8_t)lround(128 + cs * (b - luma) / (2 * (1 - kb)));
                v[0] = (uint8_t)lround(128 + cs * (r - luma) / (2 * (1 - kr)));
                captcha_image i420 = {.format = CAPTCHA_PIXEL_I420,
                                      .width = 2,
                                      .height = 2,
                                      .planes = {y, u, v},
                                      .strides = {2, 1, 1},
                                      .yuv_matrix = (captcha_yuv_matrix)m,
                                      .yuv_full_range = full};
                uint8_t out[12];
                assert_int_equal(captcha_preprocess_resize_bgr(&i420, NULL, 2, 2, out, NULL),
                                 CAPTCHA_OK);
                for (int i = 0; i < 3; i++)
                    if (abs(out[i] - colours[c][i]) > 2)
                        fail_msg("matrix %d range %s: BGR %d,%d,%d came back as %d,%d,%d", m,
                                 full ? "full" : "limited", colours[c][0], colours[c][1],
                                 colours[c][2], out[0], out[1], out[2]);
                /* the next matrix, same range; then the same matrix, other range */
                for (int other = 0; other < 2; other++) {
                    i420.yuv_matrix = other ? (captcha_yuv_matrix)m
                                            : (captcha_yuv_matrix)((m + 1) % 5);
                    i420.yuv_full_range = other ? !full : full;
                    assert_int_equal(
                        captcha_preprocess_resize_bgr(&i420, NULL, 2, 2, out, NULL), CAPTCHA_OK);
                    for (int i = 0; i < 3; i++)
                        if (abs(out[i] - colours[c][i]) > worst_other)
                            worst_other = abs(out[i] - colours[c][i]);
                }
            }
            if (worst_other <= 4)
                fail_msg("matrix %d range %d: another matrix or range is as good (%d levels)", m,
                         full, worst_other);
        }
}

/* yuv_matrix and yuv_full_range are checked for YUV images only (ignored, and
 * so not checked, for the others); the message names the field and value. */
static void test_yuv_fields_checked(void **state)
{
    (void)state;
    uint8_t pixels[64] = {0};
    captcha_error err;
    captcha_image nv12 = {.format = CAPTCHA_PIXEL_NV12,
                          .width = 4,
                          .height = 4,
                          .planes = {pixels, pixels},
                          .strides = {4, 4},
                          .yuv_matrix = (captcha_yuv_matrix)9};
    assert_int_equal(captcha_image_validate(&nv12, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "yuv_matrix is 9"));
    nv12.yuv_matrix = (captcha_yuv_matrix)-1;
    assert_int_equal(captcha_image_validate(&nv12, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "yuv_matrix is -1"));
    nv12.yuv_matrix = CAPTCHA_YUV_BT2020;
    nv12.yuv_full_range = 2;
    assert_int_equal(captcha_image_validate(&nv12, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "yuv_full_range is 2"));
    float out[3 * 32 * 128];
    captcha_config config;
    captcha_config_reference(&config);
    assert_int_equal(captcha_preprocess(&nv12, NULL, &config, out, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "yuv_full_range is 2"));
    nv12.yuv_full_range = 1;
    assert_int_equal(captcha_image_validate(&nv12, &err), CAPTCHA_OK);
    captcha_image gray = {.format = CAPTCHA_PIXEL_GRAY8,
                          .width = 8,
                          .height = 8,
                          .planes = {pixels},
                          .strides = {8},
                          .yuv_matrix = (captcha_yuv_matrix)9,
                          .yuv_full_range = 7};
    assert_int_equal(captcha_image_validate(&gray, &err), CAPTCHA_OK);
}

static void test_strides_with_padding(void **state)
{
    (void)state;
    int w = 45, h = 19;
    uint8_t *bgr = make_block_picture(w, h, 12);
    captcha_config config;
    captcha_config_reference(&config);
    size_t n = 3 * 32 * 128;
    float *tight = malloc(n * sizeof(float)), *padded = malloc(n * sizeof(float));
    captcha_roi roi = {3, 2, 40, 15};
    for (int f = CAPTCHA_PIXEL_BGR; f <= CAPTCHA_PIXEL_I420; f++) {
        for (int r = 0; r < 2; r++) {
            test_image a = make_image(bgr, w, h, (captcha_pixel_format)f, 0);
            test_image b = make_image(bgr, w, h, (captcha_pixel_format)f, 13);
            assert_int_equal(captcha_preprocess(&a.image, r ? &roi : NULL, &config, tight, NULL),
                             CAPTCHA_OK);
            assert_int_equal(captcha_preprocess(&b.image, r ? &roi : NULL, &config, padded, NULL),
                             CAPTCHA_OK);
            assert_memory_equal(tight, padded, n * sizeof(float));
            free_image(&a);
            free_image(&b);
        }
    }
    free(tight);
    free(padded);
    free(bgr);
}

/* ---- regions and errors ---- */

static void test_roi_clip(void **state)
{
    (void)state;
    captcha_roi out = {0};
    captcha_error err = {0};
    captcha_roi part = {190, -5, 20, 20};
    assert_int_equal(captcha_roi_clip(&part, 200, 50, &out, &err), CAPTCHA_OK);
    assert_int_equal(out.x, 190);
    assert_int_equal(out.y, 0);
    assert_int_equal(out.width, 10);
    assert_int_equal(out.height, 15);

    captcha_roi inside = {10, 10, 30, 20};
    assert_int_equal(captcha_roi_clip(&inside, 200, 50, &out, &err), CAPTCHA_OK);
    assert_memory_equal(&out, &inside, sizeof out);

    captcha_roi larger = {-10, -10, 500, 500};
    assert_int_equal(captcha_roi_clip(&larger, 200, 50, &out, &err), CAPTCHA_OK);
    assert_int_equal(out.x, 0);
    assert_int_equal(out.y, 0);
    assert_int_equal(out.width, 200);
    assert_int_equal(out.height, 50);

    captcha_roi outside = {300, 10, 20, 20};
    assert_int_equal(captcha_roi_clip(&outside, 200, 50, &out, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    print_message("%s\n", err.message);
    assert_non_null(strstr(err.message, "region 300,10 20x20"));
    assert_non_null(strstr(err.message, "outside the 200x50 image"));

    captcha_roi touching = {200, 0, 5, 5}; /* starts just right of the last column */
    assert_int_equal(captcha_roi_clip(&touching, 200, 50, &out, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    captcha_roi left = {-20, 0, 20, 5}; /* ends just left of column 0 */
    assert_int_equal(captcha_roi_clip(&left, 200, 50, &out, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);

    captcha_roi empty = {10, 10, 5, 0};
    assert_int_equal(captcha_roi_clip(&empty, 200, 50, &out, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    print_message("%s\n", err.message);
    assert_non_null(strstr(err.message, "region 10,10 5x0 is empty"));
}

static void test_preprocess_rejects_region_outside(void **state)
{
    (void)state;
    uint8_t *bgr = make_bgr_picture(200, 50, 3);
    test_image t = make_image(bgr, 200, 50, CAPTCHA_PIXEL_BGR, 0);
    captcha_config config;
    captcha_config_reference(&config);
    float *out = malloc(sizeof(float) * 3 * 32 * 128);
    captcha_error err = {0};
    captcha_roi part = {190, 10, 20, 20};
    assert_int_equal(captcha_preprocess(&t.image, &part, &config, out, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    print_message("%s\n", err.message);
    assert_non_null(strstr(err.message, "region 190,10 20x20"));
    assert_non_null(strstr(err.message, "200x50"));
    captcha_roi negative = {-1, 0, 20, 20};
    assert_int_equal(captcha_preprocess(&t.image, &negative, &config, out, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    captcha_roi empty = {0, 0, 0, 20};
    assert_int_equal(captcha_preprocess(&t.image, &empty, &config, out, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "empty"));
    uint8_t small[3];
    assert_int_equal(captcha_preprocess_resize_bgr(&t.image, &part, 1, 1, small, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    free(out);
    free_image(&t);
    free(bgr);
}

static void test_invalid_images(void **state)
{
    (void)state;
    uint8_t pixels[64 * 3] = {0};
    captcha_config config;
    captcha_config_reference(&config);
    float *out = malloc(sizeof(float) * 3 * 32 * 128);
    captcha_error err = {0};

    captcha_image zero = {
        .format = CAPTCHA_PIXEL_BGR, .width = 0, .height = 50, .planes = {pixels}, .strides = {0}};
    assert_int_equal(captcha_image_validate(&zero, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    print_message("%s\n", err.message);
    assert_non_null(strstr(err.message, "0x50"));
    assert_int_equal(captcha_preprocess(&zero, NULL, &config, out, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    captcha_image zero_h = {
        .format = CAPTCHA_PIXEL_GRAY8, .width = 8, .height = 0, .planes = {pixels}, .strides = {8}};
    assert_int_equal(captcha_preprocess(&zero_h, NULL, &config, out, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "8x0"));

    captcha_image short_stride = {
        .format = CAPTCHA_PIXEL_BGRA, .width = 8, .height = 2, .planes = {pixels}, .strides = {31}};
    assert_int_equal(captcha_image_validate(&short_stride, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    print_message("%s\n", err.message);
    assert_non_null(strstr(err.message, "31"));
    assert_non_null(strstr(err.message, "32"));

    captcha_image missing_plane = {.format = CAPTCHA_PIXEL_NV12,
                                   .width = 4,
                                   .height = 4,
                                   .planes = {pixels, NULL},
                                   .strides = {4, 4}};
    assert_int_equal(captcha_image_validate(&missing_plane, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    print_message("%s\n", err.message);
    assert_non_null(strstr(err.message, "plane 1"));

    captcha_image short_chroma = {.format = CAPTCHA_PIXEL_I420,
                                  .width = 5,
                                  .height = 4,
                                  .planes = {pixels, pixels, pixels},
                                  .strides = {5, 2, 3}};
    assert_int_equal(captcha_image_validate(&short_chroma, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    print_message("%s\n", err.message);

    captcha_image unknown = {.format = (captcha_pixel_format)42,
                             .width = 4,
                             .height = 4,
                             .planes = {pixels},
                             .strides = {16}};
    assert_int_equal(captcha_image_validate(&unknown, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "42"));

    captcha_image good = {.format = CAPTCHA_PIXEL_I420,
                          .width = 5,
                          .height = 4,
                          .planes = {pixels, pixels, pixels},
                          .strides = {5, 3, 3}};
    assert_int_equal(captcha_image_validate(&good, &err), CAPTCHA_OK);
    free(out);
}

static void test_normalization_and_channel_order(void **state)
{
    (void)state;
    int w = 10, h = 6;
    uint8_t *bgr = malloc((size_t)w * h * 3);
    for (int k = 0; k < w * h; k++) { /* pure blue: B 255, G 0, R 0 */
        bgr[3 * k] = 255;
        bgr[3 * k + 1] = 0;
        bgr[3 * k + 2] = 0;
    }
    test_image t = make_image(bgr, w, h, CAPTCHA_PIXEL_BGR, 0);
    captcha_config config;
    config_with_size(&config, 32, 32);
    size_t plane = 32 * 32;
    float *out = malloc(3 * plane * sizeof(float));
    assert_int_equal(captcha_preprocess(&t.image, NULL, &config, out, NULL), CAPTCHA_OK);
    for (size_t k = 0; k < plane; k++) {
        assert_true(out[k] == 1.0f);              /* B: 255 / 255 -> (1 - 0.5) / 0.5 */
        assert_true(out[plane + k] == -1.0f);     /* G: 0 -> -1 */
        assert_true(out[2 * plane + k] == -1.0f); /* R */
    }
    strcpy(config.channel_order, "RGB");
    assert_int_equal(captcha_preprocess(&t.image, NULL, &config, out, NULL), CAPTCHA_OK);
    for (size_t k = 0; k < plane; k++) {
        assert_true(out[k] == -1.0f); /* R first */
        assert_true(out[2 * plane + k] == 1.0f);
    }
    /* other mean/std, on a mid grey of 51 (0.2): (0.2 - 0.25) / 2 = -0.025 */
    memset(bgr, 51, (size_t)w * h * 3);
    free_image(&t);
    t = make_image(bgr, w, h, CAPTCHA_PIXEL_BGR, 0);
    config.mean = 0.25f;
    config.std = 2.0f;
    assert_int_equal(captcha_preprocess(&t.image, NULL, &config, out, NULL), CAPTCHA_OK);
    for (size_t k = 0; k < 3 * plane; k++)
        assert_true(fabs(out[k] - (-0.025)) < 1e-6);
    config.std = 0.0f;
    captcha_error err = {0};
    assert_int_not_equal(captcha_preprocess(&t.image, NULL, &config, out, &err), CAPTCHA_OK);
    assert_non_null(strstr(err.message, "std"));
    free(out);
    free_image(&t);
    free(bgr);
}

/* ---- OpenCV on real images ---- */

#define OPENCV_IMAGES 10
static char opencv_skip_reason[4400];
static char image_paths[OPENCV_IMAGES][4400];
static int image_count;

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Finds the images and checks python3 + cv2; sets opencv_skip_reason when not possible. */
static void prepare_opencv(void)
{
    const char *shared = captcha_test_shared_data();
    if (!shared) {
        snprintf(opencv_skip_reason, sizeof opencv_skip_reason,
                 "shared data captcha-v2/test not found (set CAPTCHA_SHARED_DATA)");
        return;
    }
    if (access("/usr/bin/python3", X_OK) != 0) {
        snprintf(opencv_skip_reason, sizeof opencv_skip_reason, "/usr/bin/python3 is absent");
        return;
    }
    if (system("/usr/bin/python3 -c 'import cv2' 2>/dev/null") != 0) {
        snprintf(opencv_skip_reason, sizeof opencv_skip_reason,
                 "cv2 cannot be imported by /usr/bin/python3 (install python3-opencv)");
        return;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/captcha-v2/test", shared);
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(opencv_skip_reason, sizeof opencv_skip_reason, "cannot open %s", dir);
        return;
    }
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".png") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], compare_names);
    for (int i = 0; i < n; i++) {
        if (image_count < OPENCV_IMAGES)
            snprintf(image_paths[image_count++], sizeof image_paths[0], "%s/%s", dir, names[i]);
        free(names[i]);
    }
    if (image_count == 0)
        snprintf(opencv_skip_reason, sizeof opencv_skip_reason, "no PNG images in %s", dir);
}

typedef struct {
    const char *name;
    int crop; /* 1: the region below */
    captcha_roi roi;
    int out_width, out_height; /* 0: the image's own size (checks the decoders agree) */
} opencv_case;

static const opencv_case opencv_cases[] = {
    {"decode (no resize)", 0, {0, 0, 0, 0}, 0, 0},
    {"network input 128x32", 0, {0, 0, 0, 0}, 128, 32},
    {"up-scale 192x64", 0, {0, 0, 0, 0}, 192, 64},
    {"down-scale 80x20", 0, {0, 0, 0, 0}, 80, 20},
    {"odd size 83x27", 0, {0, 0, 0, 0}, 83, 27}, /* 249 values a row: not a multiple of 8 */
    {"region 31,6 121x37 -> 128x32", 1, {31, 6, 121, 37}, 128, 32},
};
#define OPENCV_CASES (sizeof opencv_cases / sizeof opencv_cases[0])

static void test_resize_matches_opencv(void **state)
{
    (void)state;
    const char *tmp = captcha_test_tmpdir();
    assert_non_null(tmp);
    char jobs_path[4200];
    snprintf(jobs_path, sizeof jobs_path, "%s/cv2_jobs.tsv", tmp);
    FILE *jobs = fopen(jobs_path, "w");
    assert_non_null(jobs);
    int widths[OPENCV_IMAGES], heights[OPENCV_IMAGES];
    uint8_t *pixels[OPENCV_IMAGES];
    for (int i = 0; i < image_count; i++) {
        int channels;
        pixels[i] = stbi_load(image_paths[i], &widths[i], &heights[i], &channels, 4);
        if (!pixels[i])
            fail_msg("%s: stb_image cannot decode it: %s", image_paths[i], stbi_failure_reason());
        for (size_t c = 0; c < OPENCV_CASES; c++) {
            const opencv_case *k = &opencv_cases[c];
            fprintf(jobs, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s/cv2_%d_%zu.raw\n", image_paths[i],
                    k->crop ? k->roi.x : -1, k->roi.y, k->roi.width, k->roi.height,
                    k->out_width ? k->out_width : widths[i],
                    k->out_height ? k->out_height : heights[i], tmp, i, c);
        }
    }
    fclose(jobs);
    char command[9000];
    snprintf(command, sizeof command, "/usr/bin/python3 '%s/tests/reference/cv2_resize.py' '%s'",
             getenv("CAPTCHA_SOURCE_DIR") ? getenv("CAPTCHA_SOURCE_DIR") : CAPTCHA_SOURCE_DIR,
             jobs_path);
    int rc = system(command);
    if (rc != 0)
        fail_msg("the OpenCV reference script failed (status %d): %s", rc, command);

    long long differing[OPENCV_CASES] = {0}, total[OPENCV_CASES] = {0};
    int worst[OPENCV_CASES] = {0};
    for (int i = 0; i < image_count; i++) {
        captcha_image image = {.format = CAPTCHA_PIXEL_RGBA,
                               .width = widths[i],
                               .height = heights[i],
                               .planes = {pixels[i]},
                               .strides = {widths[i] * 4}};
        for (size_t c = 0; c < OPENCV_CASES; c++) {
            const opencv_case *k = &opencv_cases[c];
            int ow = k->out_width ? k->out_width : widths[i];
            int oh = k->out_height ? k->out_height : heights[i];
            size_t n = (size_t)ow * oh * 3, size = 0;
            char path[4500];
            snprintf(path, sizeof path, "%s/cv2_%d_%zu.raw", tmp, i, c);
            uint8_t *expected = captcha_test_read_file(path, &size);
            assert_non_null(expected);
            assert_int_equal(size, n);
            uint8_t *ours = malloc(n);
            captcha_error err = {0};
            if (captcha_preprocess_resize_bgr(&image, k->crop ? &k->roi : NULL, ow, oh, ours,
                                              &err) != CAPTCHA_OK)
                fail_msg("%s: %s", image_paths[i], err.message);
            for (size_t v = 0; v < n; v++) {
                int d = abs((int)ours[v] - (int)expected[v]);
                differing[c] += d != 0;
                worst[c] = d > worst[c] ? d : worst[c];
            }
            total[c] += (long long)n;
            free(ours);
            free(expected);
        }
        stbi_image_free(pixels[i]);
    }
    for (size_t c = 0; c < OPENCV_CASES; c++)
        print_message("vs cv2.resize INTER_LINEAR, %-30s %d images: max |diff| %d grey level(s), "
                      "%lld of %lld values differ\n",
                      opencv_cases[c].name, image_count, worst[c], differing[c], total[c]);
    /* the decoders must agree exactly, or the resize comparison means nothing */
    assert_int_equal(worst[0], 0);
    for (size_t c = 1; c < OPENCV_CASES; c++)
        assert_true(worst[c] <= 1);
}

/* captcha_image_plane_span: (rows - 1) x stride + one row, chroma at half
 * height and width rounded up; -1 for invalid images and planes. The whole
 * image preprocesses from planes of exactly that many bytes (the AddressSanitizer
 * build fails on any read past them). */
static void test_plane_span(void **state)
{
    (void)state;
    uint8_t pixels[256] = {0};
    captcha_image i420 = {.format = CAPTCHA_PIXEL_I420,
                          .width = 5,
                          .height = 4,
                          .planes = {pixels, pixels, pixels},
                          .strides = {5, 3, 3}};
    assert_int_equal(captcha_image_plane_span(&i420, 0), 3 * 5 + 5);
    assert_int_equal(captcha_image_plane_span(&i420, 1), 1 * 3 + 3);
    assert_int_equal(captcha_image_plane_span(&i420, 2), 1 * 3 + 3);
    assert_int_equal(captcha_image_plane_span(&i420, 3), -1);
    assert_int_equal(captcha_image_plane_span(&i420, -1), -1);
    captcha_image nv12 = {.format = CAPTCHA_PIXEL_NV12,
                          .width = 5,
                          .height = 5,
                          .planes = {pixels, pixels},
                          .strides = {8, 6}};
    assert_int_equal(captcha_image_plane_span(&nv12, 0), 4 * 8 + 5);
    assert_int_equal(captcha_image_plane_span(&nv12, 1), 2 * 6 + 2 * 3);
    assert_int_equal(captcha_image_plane_span(&nv12, 2), -1);
    captcha_image bgra = {
        .format = CAPTCHA_PIXEL_BGRA, .width = 8, .height = 2, .planes = {pixels}, .strides = {40}};
    assert_int_equal(captcha_image_plane_span(&bgra, 0), 40 + 32);
    captcha_image short_stride = {
        .format = CAPTCHA_PIXEL_BGRA, .width = 8, .height = 2, .planes = {pixels}, .strides = {31}};
    assert_int_equal(captcha_image_plane_span(&short_stride, 0), -1);
    assert_int_equal(captcha_image_plane_span(NULL, 0), -1);

    captcha_config config;
    captcha_config_reference(&config);
    float *out = malloc(sizeof(float) * 3 * 32 * 128);
    const captcha_pixel_format formats[] = {CAPTCHA_PIXEL_BGR, CAPTCHA_PIXEL_BGRA,
                                            CAPTCHA_PIXEL_GRAY8, CAPTCHA_PIXEL_NV12,
                                            CAPTCHA_PIXEL_I420};
    for (size_t f = 0; f < sizeof formats / sizeof formats[0]; f++) {
        /* a span needs a valid image: placeholders first, then each plane
         * gets an allocation of exactly its span */
        captcha_image image = {.format = formats[f],
                               .width = 7,
                               .height = 5,
                               .planes = {pixels, pixels, pixels},
                               .strides = {7 * 4 + 3, 4 * 2 + 1, 4 + 2}};
        uint8_t *planes[3] = {NULL};
        for (int p = 0; p < 3; p++) {
            long long span = captcha_image_plane_span(&image, p);
            if (span < 0)
                break;
            planes[p] = malloc((size_t)span);
            memset(planes[p], 40 + 60 * p, (size_t)span);
        }
        for (int p = 0; p < 3; p++)
            image.planes[p] = planes[p];
        captcha_error err = {0};
        assert_int_equal(captcha_preprocess(&image, NULL, &config, out, &err), CAPTCHA_OK);
        for (int p = 0; p < 3; p++)
            free(planes[p]);
    }
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_matches_double_reference),
        cmocka_unit_test(test_resize_same_size_is_exact),
        cmocka_unit_test(test_roi_equals_cropped_copy),
        cmocka_unit_test(test_formats_give_same_tensor),
        cmocka_unit_test(test_yuv_known_colours),
        cmocka_unit_test(test_yuv_matrices),
        cmocka_unit_test(test_yuv_fields_checked),
        cmocka_unit_test(test_strides_with_padding),
        cmocka_unit_test(test_roi_clip),
        cmocka_unit_test(test_preprocess_rejects_region_outside),
        cmocka_unit_test(test_invalid_images),
        cmocka_unit_test(test_plane_span),
        cmocka_unit_test(test_normalization_and_channel_order),
    };
    int failed = cmocka_run_group_tests_name("preprocess", tests, NULL, NULL);

    prepare_opencv();
    if (opencv_skip_reason[0]) {
        printf("SKIP the OpenCV comparison: %s\n", opencv_skip_reason);
        return failed ? failed : CAPTCHA_TEST_SKIP;
    }
    const struct CMUnitTest opencv_tests[] = {
        cmocka_unit_test(test_resize_matches_opencv),
    };
    failed += cmocka_run_group_tests_name("preprocess vs OpenCV", opencv_tests, NULL, NULL);
    return failed;
}
