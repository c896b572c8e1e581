/* Preprocessing shared by every front end (element, trainer, predict tool):
 * a region of a pixel buffer -> the network's normalized NCHW float input.
 *
 * Steps, matching the reference Python pipeline
 * (cv2.imread -> cv2.resize(INTER_LINEAR) -> /255 -> (x - 0.5) / 0.5):
 *  1. read the region's pixels as B, G, R (GRAY8: B = G = R = Y; YUV formats
 *     converted with the image's matrix and range, see captcha_yuv_matrix, as
 *     GStreamer's videoconvert converts them); alpha is ignored (cv2.imread with
 *     IMREAD_COLOR drops it);
 *  2. bilinear resize to the model's height x width with OpenCV cv::resize
 *     INTER_LINEAR semantics: source coordinate (dst + 0.5) * scale - 0.5,
 *     clamped to the edge, and the result rounded to an 8-bit value as
 *     OpenCV's uint8 resize does (within one grey level of OpenCV, which uses
 *     11-bit fixed-point weights);
 *  3. x / 255, then (x - mean) / std (the model's, 0.5 / 0.5 by default);
 *  4. written as planes in the model's channel order (BGR by default).
 */
#ifndef CAPTCHA_PREPROCESS_H
#define CAPTCHA_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "captcha_config.h"
#include "captcha_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CAPTCHA_PIXEL_BGR = 0, /* 3 bytes per pixel: B G R */
    CAPTCHA_PIXEL_RGB,     /* R G B */
    CAPTCHA_PIXEL_BGRA,    /* 4 bytes: B G R A (also BGRx) */
    CAPTCHA_PIXEL_RGBA,    /* R G B A (also RGBx) */
    CAPTCHA_PIXEL_ARGB,    /* A R G B (also xRGB) */
    CAPTCHA_PIXEL_ABGR,    /* A B G R (also xBGR) */
    CAPTCHA_PIXEL_GRAY8,   /* 1 byte: luma */
    CAPTCHA_PIXEL_NV12,    /* plane 0: Y; plane 1: interleaved U V at half width and height */
    CAPTCHA_PIXEL_I420,    /* plane 0: Y; plane 1: U; plane 2: V, each at half width and height */
} captcha_pixel_format;

/* The YUV -> R'G'B' matrix of a YUV image: its luma coefficients Kr and Kb
 * (Kg = 1 - Kr - Kb), as GStreamer's GstVideoColorMatrix defines them
 * (gst_video_color_matrix_get_Kr_Kb):
 *   R = Y' + 2 (1 - Kr) V'
 *   G = Y' - 2 Kb (1 - Kb) / Kg U' - 2 Kr (1 - Kr) / Kg V'
 *   B = Y' + 2 (1 - Kb) U'
 * where Y' = (Y - 16) x 255/219, U' = (U - 128) x 255/224 (V' alike) for limited
 * range ("studio swing", Y 16..235, U and V 16..240), Y' = Y, U' = U - 128 for
 * full range (0..255, as JPEG). The zero value is BT.601, which videoconvert
 * assumes for SD content. */
typedef enum {
    CAPTCHA_YUV_BT601 = 0, /* Kr 0.299, Kb 0.114 (ITU-R BT.601, SMPTE 170M) */
    CAPTCHA_YUV_BT709,     /* Kr 0.2126, Kb 0.0722 (ITU-R BT.709: HD) */
    CAPTCHA_YUV_BT2020,    /* Kr 0.2627, Kb 0.0593 (ITU-R BT.2020: UHD) */
    CAPTCHA_YUV_FCC,       /* Kr 0.30, Kb 0.11 (FCC 73.682) */
    CAPTCHA_YUV_SMPTE240M, /* Kr 0.212, Kb 0.087 (SMPTE 240M) */
} captcha_yuv_matrix;

/* A view of an image in host memory. Packed formats use planes[0] and
 * strides[0]; YUV formats use 2 (NV12) or 3 (I420) planes. Strides are in
 * bytes per row and may exceed the row's pixel bytes (padding). yuv_matrix and
 * yuv_full_range (0: limited range, 1: full range) describe a YUV format's
 * samples and are ignored for the others; zero-initialized, they are BT.601
 * limited range. */
typedef struct {
    captcha_pixel_format format;
    int width, height; /* pixels, 1..65536 */
    const uint8_t *planes[3];
    int strides[3];
    captcha_yuv_matrix yuv_matrix;
    int yuv_full_range;
} captcha_image;

/* The YUV -> B, G, R conversion of one matrix and range in 16-bit fixed point:
 * with c = (Y - y_offset) x y + 32768, d = U - 128, e = V - 128,
 *   B = (c + bu d) >> 16,  G = (c - gu d - gv e) >> 16,  R = (c + rv e) >> 16,
 * each clamped to 0..255; the coefficients are those of captcha_yuv_matrix
 * times 65536, rounded (BT.601 limited range: y 76309, rv 104597, gu 25675,
 * gv 53279, bu 132201). */
typedef struct {
    int y_offset; /* 16 (limited range) or 0 (full range) */
    int y, rv, gu, gv, bu;
} captcha_yuv_coefficients;

/* The coefficients of a YUV image's yuv_matrix and yuv_full_range into *out.
 * Errors (INVALID_ARGUMENT, naming the field and value): a matrix outside
 * captcha_yuv_matrix, a range other than 0 or 1. */
captcha_status captcha_yuv_coefficients_get(captcha_yuv_matrix matrix, int full_range,
                                            captcha_yuv_coefficients *out, captcha_error *err);

/* A rectangle in image pixels: columns x..x+width-1, rows y..y+height-1. */
typedef struct {
    int x, y, width, height;
} captcha_roi;

/* Name of a pixel format ("BGRA", ...). */
const char *captcha_pixel_format_name(captcha_pixel_format format);

/* Bytes per pixel of plane 0 for packed formats (3 or 4 or 1); 1 for YUV. */
int captcha_pixel_format_bytes_per_pixel(captcha_pixel_format format);

/* Checks an image view: known format, width/height >= 1, non-NULL planes,
 * strides at least the row size, and for YUV formats a known yuv_matrix and a
 * yuv_full_range of 0 or 1. The message names the field and value. */
captcha_status captcha_image_validate(const captcha_image *image, captcha_error *err);

/* Bytes of one row of plane p, without padding (the least stride it may have):
 * width x bytes per pixel (plane 0), 2 x ((width + 1) / 2) (NV12 UV) or
 * (width + 1) / 2 (I420 U, V). Only format and width are read. Returns -1 for
 * an unknown format, a width outside 1..65536, or p not one of the format's
 * planes. */
long long captcha_image_row_bytes(const captcha_image *image, int p);

/* Bytes plane p of a valid image spans from planes[p]: (rows - 1) x strides[p]
 * plus the bytes of one row, rows being the height (plane 0) or (height + 1) / 2
 * (the chroma planes of NV12 and I420), one row being width x bytes per pixel
 * (plane 0), 2 x ((width + 1) / 2) (NV12 UV) or (width + 1) / 2 (I420 U, V).
 * A caller holding the buffer's size checks it covers this before reading:
 * the preprocessing reads every byte of that span that a region touches.
 * Returns -1 when image fails captcha_image_validate or p is not one of its
 * planes. */
long long captcha_image_plane_span(const captcha_image *image, int p);

/* Clips roi to the image. Returns CAPTCHA_OK with *clipped set when some part
 * is inside; CAPTCHA_ERROR_INVALID_ARGUMENT ("region 10,10 5x0 is empty",
 * "region ... lies outside the 200x50 image") otherwise. */
captcha_status captcha_roi_clip(const captcha_roi *roi, int image_width, int image_height,
                                captcha_roi *clipped, captcha_error *err);

/* Preprocesses roi of image (roi NULL = whole image; it must lie inside the
 * image, see captcha_roi_clip) into out [3, config->input_height,
 * config->input_width] (one image of the NCHW batch). Errors: invalid image
 * or region. */
captcha_status captcha_preprocess(const captcha_image *image, const captcha_roi *roi,
                                  const captcha_config *config, float *out, captcha_error *err);

/* Step 1 and 2 only, for tests and tools: the resized 8-bit BGR image
 * [height][width][3] (interleaved, as OpenCV holds it). */
captcha_status captcha_preprocess_resize_bgr(const captcha_image *image, const captcha_roi *roi,
                                             int out_width, int out_height, uint8_t *out_bgr,
                                             captcha_error *err);

#ifdef __cplusplus
}
#endif

#endif
