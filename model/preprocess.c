/* Preprocessing: a region of a pixel buffer -> BGR -> bilinear resize -> normalized NCHW.
 *
 * Resize follows OpenCV 4.x cv::resize(INTER_LINEAR) on 8-bit images
 * (modules/imgproc/src/resize.cpp, resizeGeneric_ with HResizeLinear /
 * VResizeLinear): source coordinate f = (float)((d + 0.5) * scale - 0.5) with
 * scale = 1 / (dst_size / src_size) in double; taps floor(f) and floor(f) + 1,
 * weights (1 - frac, frac) rounded to 11-bit fixed point (2048 = 1.0);
 * columns left of 0 or at/after width-1 read the edge pixel with weight 1;
 * rows outside the image are clamped to the edge row (their weights are kept,
 * as OpenCV does). The horizontal pass is exact in int32; the vertical pass
 * rounds as OpenCV's 128-bit SIMD kernel VResizeLinearVec_32s8u does
 * (((a >> 4) * b0 >> 16) + ((c >> 4) * b1 >> 16) + 2) >> 2 for the first
 * multiple of 8 values of a row and exactly ((a * b0 + c * b1 + 2^21) >> 22)
 * for the rest, which is what OpenCV's baseline (SSE2 / NEON) build computes.
 * A region that already has the target size is copied unchanged (as
 * cv::resize does).
 *
 * YUV -> BGR: the image's matrix and range (captcha_yuv_matrix), e.g. BT.601
 * limited range ("studio swing", Y 16..235, U/V 16..240), the matrix GStreamer's
 * videoconvert uses for SD content (GST_VIDEO_COLOR_MATRIX_BT601):
 *   R = 1.164383 (Y-16)                     + 1.596027 (V-128)
 *   G = 1.164383 (Y-16) - 0.391762 (U-128) - 0.812968 (V-128)
 *   B = 1.164383 (Y-16) + 2.017232 (U-128)
 * in 16-bit fixed point (captcha_yuv_coefficients), rounded and clamped to
 * 0..255. Chroma is taken from
 * the 2x2 block the pixel lies in (nearest, no chroma interpolation; videoconvert
 * may interpolate chroma, so its output can differ slightly at colour edges).
 * Chroma planes hold (width+1)/2 x (height+1)/2 samples.
 */
#include "preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RESIZE_COEF_BITS 11
#define RESIZE_COEF_SCALE (1 << RESIZE_COEF_BITS)
/* Largest image or output side accepted (keeps every row offset in int range). */
#define MAX_SIDE 65536

const char *captcha_pixel_format_name(captcha_pixel_format format)
{
    switch (format) {
    case CAPTCHA_PIXEL_BGR: return "BGR";
    case CAPTCHA_PIXEL_RGB: return "RGB";
    case CAPTCHA_PIXEL_BGRA: return "BGRA";
    case CAPTCHA_PIXEL_RGBA: return "RGBA";
    case CAPTCHA_PIXEL_ARGB: return "ARGB";
    case CAPTCHA_PIXEL_ABGR: return "ABGR";
    case CAPTCHA_PIXEL_GRAY8: return "GRAY8";
    case CAPTCHA_PIXEL_NV12: return "NV12";
    case CAPTCHA_PIXEL_I420: return "I420";
    }
    return "unknown";
}

int captcha_pixel_format_bytes_per_pixel(captcha_pixel_format format)
{
    switch (format) {
    case CAPTCHA_PIXEL_BGR:
    case CAPTCHA_PIXEL_RGB: return 3;
    case CAPTCHA_PIXEL_BGRA:
    case CAPTCHA_PIXEL_RGBA:
    case CAPTCHA_PIXEL_ARGB:
    case CAPTCHA_PIXEL_ABGR: return 4;
    case CAPTCHA_PIXEL_GRAY8:
    case CAPTCHA_PIXEL_NV12:
    case CAPTCHA_PIXEL_I420: return 1;
    }
    return 0;
}

static int plane_count(captcha_pixel_format format)
{
    return format == CAPTCHA_PIXEL_NV12 ? 2 : format == CAPTCHA_PIXEL_I420 ? 3 : 1;
}

/* Bytes of one row of plane p (without padding). */
static long long plane_row_bytes(const captcha_image *image, int p)
{
    long long chroma_width = ((long long)image->width + 1) / 2;
    if (p == 0)
        return (long long)image->width * captcha_pixel_format_bytes_per_pixel(image->format);
    return image->format == CAPTCHA_PIXEL_NV12 ? 2 * chroma_width : chroma_width;
}

long long captcha_image_row_bytes(const captcha_image *image, int p)
{
    if (!image || captcha_pixel_format_bytes_per_pixel(image->format) == 0 || image->width < 1 ||
        image->width > MAX_SIDE || p < 0 || p >= plane_count(image->format))
        return -1;
    return plane_row_bytes(image, p);
}

/* Kr, Kb of each captcha_yuv_matrix (see preprocess.h) */
static const double yuv_kr_kb[][2] = {
    [CAPTCHA_YUV_BT601] = {0.299, 0.114},   [CAPTCHA_YUV_BT709] = {0.2126, 0.0722},
    [CAPTCHA_YUV_BT2020] = {0.2627, 0.0593}, [CAPTCHA_YUV_FCC] = {0.30, 0.11},
    [CAPTCHA_YUV_SMPTE240M] = {0.212, 0.087},
};
#define YUV_MATRICES ((int)(sizeof yuv_kr_kb / sizeof yuv_kr_kb[0]))

captcha_status captcha_yuv_coefficients_get(captcha_yuv_matrix matrix, int full_range,
                                            captcha_yuv_coefficients *out, captcha_error *err)
{
    if ((int)matrix < 0 || (int)matrix >= YUV_MATRICES)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "image yuv_matrix is %d, not a known captcha_yuv_matrix (0..%d)",
                            (int)matrix, YUV_MATRICES - 1);
    if (full_range != 0 && full_range != 1)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "image yuv_full_range is %d, expected 0 (limited) or 1 (full)",
                            full_range);
    if (!out)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "out is NULL");
    double kr = yuv_kr_kb[matrix][0], kb = yuv_kr_kb[matrix][1], kg = 1.0 - kr - kb;
    double ys = full_range ? 1.0 : 255.0 / 219.0, cs = full_range ? 1.0 : 255.0 / 224.0;
    out->y_offset = full_range ? 0 : 16;
    out->y = (int)lround(ys * 65536.0);
    out->rv = (int)lround(2.0 * (1.0 - kr) * cs * 65536.0);
    out->gu = (int)lround(2.0 * kb * (1.0 - kb) / kg * cs * 65536.0);
    out->gv = (int)lround(2.0 * kr * (1.0 - kr) / kg * cs * 65536.0);
    out->bu = (int)lround(2.0 * (1.0 - kb) * cs * 65536.0);
    return CAPTCHA_OK;
}

captcha_status captcha_image_validate(const captcha_image *image, captcha_error *err)
{
    if (!image)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "image is NULL");
    if (captcha_pixel_format_bytes_per_pixel(image->format) == 0)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "image format is %d, not a known captcha_pixel_format (0..%d)",
                            (int)image->format, (int)CAPTCHA_PIXEL_I420);
    if (image->width < 1 || image->height < 1 || image->width > MAX_SIDE ||
        image->height > MAX_SIDE)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "image size is %dx%d, expected width and height in 1..%d", image->width,
                            image->height, MAX_SIDE);
    const char *name = captcha_pixel_format_name(image->format);
    int planes = plane_count(image->format);
    for (int p = 0; p < planes; p++) {
        if (!image->planes[p])
            return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                                "image plane %d is NULL (format %s has %d plane%s)", p, name,
                                planes, planes > 1 ? "s" : "");
        long long row = plane_row_bytes(image, p);
        if (image->strides[p] < row)
            return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                                "image plane %d: its stride is %d bytes, less than the %lld "
                                "bytes of one row (%s, width %d)",
                                p, image->strides[p], row, name, image->width);
    }
    if (planes > 1) {
        captcha_yuv_coefficients unused;
        return captcha_yuv_coefficients_get(image->yuv_matrix, image->yuv_full_range, &unused,
                                            err);
    }
    return CAPTCHA_OK;
}

long long captcha_image_plane_span(const captcha_image *image, int p)
{
    if (captcha_image_validate(image, NULL) != CAPTCHA_OK || p < 0 ||
        p >= plane_count(image->format))
        return -1;
    long long rows = p == 0 ? image->height : ((long long)image->height + 1) / 2;
    return (rows - 1) * image->strides[p] + plane_row_bytes(image, p);
}

captcha_status captcha_roi_clip(const captcha_roi *roi, int image_width, int image_height,
                                captcha_roi *clipped, captcha_error *err)
{
    if (!roi || !clipped)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_roi_clip: region or result pointer is NULL");
    if (image_width < 1 || image_height < 1)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "cannot clip region %d,%d %dx%d to an empty %dx%d image", roi->x,
                            roi->y, roi->width, roi->height, image_width, image_height);
    if (roi->width <= 0 || roi->height <= 0)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "region %d,%d %dx%d is empty",
                            roi->x, roi->y, roi->width, roi->height);
    long long x0 = roi->x > 0 ? roi->x : 0;
    long long y0 = roi->y > 0 ? roi->y : 0;
    long long x1 = (long long)roi->x + roi->width;
    long long y1 = (long long)roi->y + roi->height;
    if (x1 > image_width)
        x1 = image_width;
    if (y1 > image_height)
        y1 = image_height;
    if (x1 <= x0 || y1 <= y0)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "region %d,%d %dx%d lies outside the %dx%d image", roi->x, roi->y,
                            roi->width, roi->height, image_width, image_height);
    clipped->x = (int)x0;
    clipped->y = (int)y0;
    clipped->width = (int)(x1 - x0);
    clipped->height = (int)(y1 - y0);
    return CAPTCHA_OK;
}

/* Validates image and region; *region receives the region to read. */
static captcha_status check_region(const captcha_image *image, const captcha_roi *roi,
                                   captcha_roi *region, captcha_error *err)
{
    if (captcha_image_validate(image, err) != CAPTCHA_OK)
        return CAPTCHA_ERROR_INVALID_ARGUMENT;
    if (!roi) {
        *region = (captcha_roi){0, 0, image->width, image->height};
        return CAPTCHA_OK;
    }
    if (roi->width <= 0 || roi->height <= 0)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "region %d,%d %dx%d is empty",
                            roi->x, roi->y, roi->width, roi->height);
    if (roi->x < 0 || roi->y < 0 || (long long)roi->x + roi->width > image->width ||
        (long long)roi->y + roi->height > image->height)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "region %d,%d %dx%d does not lie inside the %dx%d image (columns "
                            "0..%d, rows 0..%d); clip it with captcha_roi_clip first",
                            roi->x, roi->y, roi->width, roi->height, image->width, image->height,
                            image->width - 1, image->height - 1);
    *region = *roi;
    return CAPTCHA_OK;
}

static inline uint8_t clamp_u8(int v)
{
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static inline void yuv_to_bgr(const captcha_yuv_coefficients *k, int y, int u, int v,
                              uint8_t *bgr)
{
    int c = (y - k->y_offset) * k->y + 32768, d = u - 128, e = v - 128;
    bgr[0] = clamp_u8((c + k->bu * d) >> 16);
    bgr[1] = clamp_u8((c - k->gu * d - k->gv * e) >> 16);
    bgr[2] = clamp_u8((c + k->rv * e) >> 16);
}

/* Row `row` of the image, columns x0 .. x0+width-1, as interleaved BGR [width][3]. */
static void read_row_bgr(const captcha_image *image, int x0, int width, int row, uint8_t *bgr)
{
    const uint8_t *src = image->planes[0] + (size_t)row * (size_t)image->strides[0];
    int b = 0, g = 1, r = 2, step = 3;
    captcha_yuv_coefficients k = {0};
    if (image->format == CAPTCHA_PIXEL_NV12 || image->format == CAPTCHA_PIXEL_I420)
        (void)captcha_yuv_coefficients_get(image->yuv_matrix, image->yuv_full_range, &k,
                                           NULL); /* validated by the caller */
    switch (image->format) {
    case CAPTCHA_PIXEL_BGR: memcpy(bgr, src + (size_t)x0 * 3, (size_t)width * 3); return;
    case CAPTCHA_PIXEL_RGB: b = 2, g = 1, r = 0, step = 3; break;
    case CAPTCHA_PIXEL_BGRA: b = 0, g = 1, r = 2, step = 4; break;
    case CAPTCHA_PIXEL_RGBA: b = 2, g = 1, r = 0, step = 4; break;
    case CAPTCHA_PIXEL_ARGB: b = 3, g = 2, r = 1, step = 4; break;
    case CAPTCHA_PIXEL_ABGR: b = 1, g = 2, r = 3, step = 4; break;
    case CAPTCHA_PIXEL_GRAY8:
        for (int x = 0; x < width; x++)
            bgr[3 * x] = bgr[3 * x + 1] = bgr[3 * x + 2] = src[x0 + x];
        return;
    case CAPTCHA_PIXEL_NV12: {
        const uint8_t *uv = image->planes[1] + (size_t)(row / 2) * (size_t)image->strides[1];
        for (int x = 0; x < width; x++) {
            int cx = (x0 + x) / 2;
            yuv_to_bgr(&k, src[x0 + x], uv[2 * cx], uv[2 * cx + 1], bgr + 3 * x);
        }
        return;
    }
    case CAPTCHA_PIXEL_I420: {
        const uint8_t *u = image->planes[1] + (size_t)(row / 2) * (size_t)image->strides[1];
        const uint8_t *v = image->planes[2] + (size_t)(row / 2) * (size_t)image->strides[2];
        for (int x = 0; x < width; x++) {
            int cx = (x0 + x) / 2;
            yuv_to_bgr(&k, src[x0 + x], u[cx], v[cx], bgr + 3 * x);
        }
        return;
    }
    }
    src += (size_t)x0 * step;
    for (int x = 0; x < width; x++, src += step) {
        bgr[3 * x] = src[b];
        bgr[3 * x + 1] = src[g];
        bgr[3 * x + 2] = src[r];
    }
}

/* Receives each output row [out_width][3] BGR, top to bottom. */
typedef void (*row_sink)(void *context, int row, const uint8_t *bgr);

/* OpenCV's fixed-point weight: saturate_cast<short>(w * 2048), round half to even. */
static inline short coef(float w)
{
    return (short)lrintf(w * RESIZE_COEF_SCALE);
}

/* Steps 1 and 2 of preprocess.h for region of image (already checked), one row at a time.
 * One allocation per call holds the index/weight tables and the row buffers. */
static captcha_status resize_rows(const captcha_image *image, const captcha_roi *region,
                                  int out_width, int out_height, row_sink sink, void *context,
                                  captcha_error *err)
{
    const int sw = region->width, sh = region->height;
    const int row3 = out_width * 3;
    size_t bytes = (size_t)out_width * 2 * sizeof(int)      /* x taps */
                   + (size_t)out_width * 2 * sizeof(short)  /* x weights */
                   + (size_t)out_height * 2 * sizeof(int)   /* y taps */
                   + (size_t)out_height * 2 * sizeof(short) /* y weights */
                   + (size_t)row3 * 2 * sizeof(int)         /* two horizontally resized rows */
                   + (size_t)sw * 3 + (size_t)row3 + 64;    /* source BGR row, output row */
    void *work = malloc(bytes);
    if (!work)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "cannot allocate %zu bytes to resize a %dx%d region to %dx%d", bytes,
                            sw, sh, out_width, out_height);
    int *hrows[2];
    hrows[0] = work;
    hrows[1] = hrows[0] + row3;
    int *xofs = hrows[1] + row3; /* [out_width][2]: source columns of the two taps */
    int *yofs = xofs + 2 * out_width;
    short *alpha = (short *)(yofs + 2 * out_height);
    short *beta = alpha + 2 * out_width;
    uint8_t *src_bgr = (uint8_t *)(beta + 2 * out_height);
    uint8_t *dst_bgr = src_bgr + (size_t)sw * 3;

    if (sw == out_width && sh == out_height) {
        for (int y = 0; y < sh; y++) {
            read_row_bgr(image, region->x, sw, region->y + y, dst_bgr);
            sink(context, y, dst_bgr);
        }
        free(work);
        return CAPTCHA_OK;
    }

    /* As cv::resize: inv_scale = dst/src, scale = 1/inv_scale (both double). */
    const double scale_x = 1.0 / ((double)out_width / sw);
    const double scale_y = 1.0 / ((double)out_height / sh);
    for (int dx = 0; dx < out_width; dx++) {
        float fx = (float)((dx + 0.5) * scale_x - 0.5);
        int sx = (int)floorf(fx);
        fx -= (float)sx;
        if (sx < 0)
            fx = 0, sx = 0;
        int sx1 = sx + 1;
        if (sx >= sw - 1)
            fx = 0, sx = sw - 1, sx1 = sw - 1;
        xofs[2 * dx] = sx * 3;
        xofs[2 * dx + 1] = sx1 * 3;
        alpha[2 * dx] = coef(1.f - fx);
        alpha[2 * dx + 1] = coef(fx);
    }
    for (int dy = 0; dy < out_height; dy++) {
        float fy = (float)((dy + 0.5) * scale_y - 0.5);
        int sy = (int)floorf(fy);
        fy -= (float)sy;
        int sy1 = sy + 1;
        yofs[2 * dy] = sy < 0 ? 0 : sy >= sh ? sh - 1 : sy;
        yofs[2 * dy + 1] = sy1 < 0 ? 0 : sy1 >= sh ? sh - 1 : sy1;
        beta[2 * dy] = coef(1.f - fy);
        beta[2 * dy + 1] = coef(fy);
    }
    /* OpenCV's 128-bit vertical kernel covers the first multiple of 8 values. */
    const int vector_end = row3 & ~7;

    int cached[2] = {-1, -1};
    for (int dy = 0; dy < out_height; dy++) {
        const int *taps[2];
        for (int t = 0; t < 2; t++) {
            int sy = yofs[2 * dy + t];
            int slot = cached[0] == sy ? 0 : cached[1] == sy ? 1 : -1;
            if (slot < 0) {
                /* keep the slot holding the other tap of this row */
                slot = cached[0] == yofs[2 * dy + 1 - t] ? 1 : 0;
                read_row_bgr(image, region->x, sw, region->y + sy, src_bgr);
                int *d = hrows[slot];
                for (int dx = 0; dx < out_width; dx++) {
                    const uint8_t *s0 = src_bgr + xofs[2 * dx], *s1 = src_bgr + xofs[2 * dx + 1];
                    int a0 = alpha[2 * dx], a1 = alpha[2 * dx + 1];
                    d[3 * dx] = s0[0] * a0 + s1[0] * a1;
                    d[3 * dx + 1] = s0[1] * a0 + s1[1] * a1;
                    d[3 * dx + 2] = s0[2] * a0 + s1[2] * a1;
                }
                cached[slot] = sy;
            }
            taps[t] = hrows[slot];
        }
        const int *s0 = taps[0], *s1 = taps[1];
        const int b0 = beta[2 * dy], b1 = beta[2 * dy + 1];
        int i = 0;
        for (; i < vector_end; i++) {
            int v = (((s0[i] >> 4) * b0) >> 16) + (((s1[i] >> 4) * b1) >> 16);
            dst_bgr[i] = clamp_u8((v + 2) >> 2);
        }
        for (; i < row3; i++)
            dst_bgr[i] = clamp_u8((s0[i] * b0 + s1[i] * b1 + (1 << 21)) >> 22);
        sink(context, dy, dst_bgr);
    }
    free(work);
    return CAPTCHA_OK;
}

static captcha_status check_output_size(int out_width, int out_height, captcha_error *err)
{
    if (out_width < 1 || out_height < 1 || out_width > MAX_SIDE || out_height > MAX_SIDE)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "output size is %dx%d, expected width and height in 1..%d", out_width,
                            out_height, MAX_SIDE);
    return CAPTCHA_OK;
}

typedef struct {
    uint8_t *out;
    size_t row_bytes;
} bgr_sink_context;

static void bgr_sink(void *context, int row, const uint8_t *bgr)
{
    bgr_sink_context *c = context;
    memcpy(c->out + (size_t)row * c->row_bytes, bgr, c->row_bytes);
}

captcha_status captcha_preprocess_resize_bgr(const captcha_image *image, const captcha_roi *roi,
                                             int out_width, int out_height, uint8_t *out_bgr,
                                             captcha_error *err)
{
    captcha_roi region;
    if (check_output_size(out_width, out_height, err) != CAPTCHA_OK ||
        check_region(image, roi, &region, err) != CAPTCHA_OK)
        return CAPTCHA_ERROR_INVALID_ARGUMENT;
    if (!out_bgr)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "output buffer is NULL");
    bgr_sink_context c = {out_bgr, (size_t)out_width * 3};
    return resize_rows(image, &region, out_width, out_height, bgr_sink, &c, err);
}

typedef struct {
    float *planes[3]; /* output plane of B, G, R */
    int width;
    float table[256]; /* (v / 255 - mean) / std */
} tensor_sink_context;

static void tensor_sink(void *context, int row, const uint8_t *bgr)
{
    tensor_sink_context *c = context;
    size_t offset = (size_t)row * (size_t)c->width;
    float *b = c->planes[0] + offset, *g = c->planes[1] + offset, *r = c->planes[2] + offset;
    for (int x = 0; x < c->width; x++) {
        b[x] = c->table[bgr[3 * x]];
        g[x] = c->table[bgr[3 * x + 1]];
        r[x] = c->table[bgr[3 * x + 2]];
    }
}

captcha_status captcha_preprocess(const captcha_image *image, const captcha_roi *roi,
                                  const captcha_config *config, float *out, captcha_error *err)
{
    if (!config || !out)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "captcha_preprocess: %s is NULL",
                            config ? "output tensor" : "config");
    if (captcha_config_validate(config, err) != CAPTCHA_OK) {
        captcha_error_prefix(err, "model configuration: ");
        return CAPTCHA_ERROR_INVALID_ARGUMENT;
    }
    captcha_roi region;
    if (check_region(image, roi, &region, err) != CAPTCHA_OK)
        return CAPTCHA_ERROR_INVALID_ARGUMENT;
    tensor_sink_context c;
    size_t plane = (size_t)config->input_height * (size_t)config->input_width;
    int rgb = strcmp(config->channel_order, "RGB") == 0;
    c.planes[0] = out + (rgb ? 2 : 0) * plane; /* B */
    c.planes[1] = out + plane;                 /* G */
    c.planes[2] = out + (rgb ? 0 : 2) * plane; /* R */
    c.width = config->input_width;
    /* The same float32 operations as the reference: x / 255, then (x - mean) / std. */
    for (int v = 0; v < 256; v++)
        c.table[v] = ((float)v / 255.0f - config->mean) / config->std;
    return resize_rows(image, &region, config->input_width, config->input_height, tensor_sink, &c,
                       err);
}
