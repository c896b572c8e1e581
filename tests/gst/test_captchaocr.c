/* Element tests for captchaocr (gst-check, GstHarness), CPU backend.
 *
 * The model is made here: a freshly initialized network (fixed seed) saved
 * with captcha_model_save into a temporary folder. Its text is meaningless
 * but deterministic, which is what these tests compare: the same picture
 * must read the same in every pixel format, at any position and stride,
 * through upstream regions, after renegotiation. The expected values come
 * from a separate reading of the plain picture, never from constants.
 *
 * Run with GST_PLUGIN_PATH at the build's gst/ folder (meson does).
 */
#include "captcha-build-config.h"

#include <glib/gstdio.h>
#include <gst/check/gstcheck.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "backend.h"
#include "decode.h"
#include "model_file.h"
#include "network.h"
#include "preprocess.h"

#define PICTURE_WIDTH 202 /* even (for NV12/I420); RGB rows padded */
#define PICTURE_HEIGHT 50

static gchar *tmpdir;
static gchar *model_path; /* valid model, seed 1 */
static gchar *truncated_header_path;
static gchar *truncated_data_path;
static gchar *wrong_shape_path;
static gchar *missing_path;
static gchar *plain_path; /* model_path without its metadata (a plain state_dict) */
static gchar *short_path; /* a valid model of 4 characters, seed 2 */

/* ---- pictures ---------------------------------------------------------- */

static guint32 xorshift(guint32 *state)
{
    guint32 x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* A captcha-like BGRx picture [height][width][4]: a slowly varying light
 * background with dark strokes (fine luma detail, smooth chroma, so that
 * 4:2:0 subsampling changes little). gray: all channels equal. */
static guint8 *make_picture(gint width, gint height, guint32 seed, gboolean gray)
{
    guint8 *bgrx = g_malloc(width * height * 4);
    guint32 state = seed * 2654435761u + 1;
    gint strokes[12][4];
    gint x, y, k;

    for (k = 0; k < 12; k++) {
        strokes[k][0] = xorshift(&state) % width;  /* centre x */
        strokes[k][1] = xorshift(&state) % height; /* centre y */
        strokes[k][2] = 3 + xorshift(&state) % 12; /* half length */
        strokes[k][3] = xorshift(&state) % 4;      /* direction */
    }
    for (y = 0; y < height; y++) {
        for (x = 0; x < width; x++) {
            guint8 *p = bgrx + (y * width + x) * 4;
            gint b = 200 + (gint)(40 * sin(x / 37.0 + seed));
            gint g = 190 + (gint)(50 * cos(y / 23.0 + x / 90.0 + seed));
            gint r = 210 + (gint)(30 * sin((x + y) / 51.0 - seed));
            gboolean ink = FALSE;

            for (k = 0; k < 12 && !ink; k++) {
                gint dx = x - strokes[k][0], dy = y - strokes[k][1];
                gint len = strokes[k][2];
                switch (strokes[k][3]) {
                case 0: ink = ABS(dy) <= 1 && ABS(dx) <= len; break;
                case 1: ink = ABS(dx) <= 1 && ABS(dy) <= len; break;
                case 2: ink = ABS(dx - dy) <= 1 && ABS(dx) <= len; break;
                default: ink = ABS(dx * dx + dy * dy - len * len) <= len; break;
                }
            }
            if (ink) {
                b = 40 + seed * 13 % 40;
                g = 30;
                r = 60;
            }
            if (gray)
                b = g = r = (b + g + r) / 3;
            p[0] = CLAMP(b, 0, 255);
            p[1] = CLAMP(g, 0, 255);
            p[2] = CLAMP(r, 0, 255);
            p[3] = 255;
        }
    }
    return bgrx;
}

/* A BGRx frame [height][width][4] of noise with pictures pasted in. */
static guint8 *make_frame(gint width, gint height, guint32 seed)
{
    guint8 *bgrx = g_malloc(width * height * 4);
    guint32 state = seed + 12345;
    gint i;

    for (i = 0; i < width * height * 4; i++)
        bgrx[i] = xorshift(&state) & 0xff;
    return bgrx;
}

static void paste(guint8 *frame, gint frame_width, const guint8 *picture, gint width, gint height,
                  gint x, gint y)
{
    gint row;

    for (row = 0; row < height; row++)
        memcpy(frame + ((y + row) * frame_width + x) * 4, picture + row * width * 4, width * 4);
}

/* A buffer holding the BGRx image converted to format by GStreamer's own
 * converter (default strides of GstVideoInfo; for the YUV formats the
 * colorimetry named, e.g. "bt709", or with NULL the one the caps of that size
 * imply: BT.601 limited range). GRAY8 takes the first channel (the picture
 * must be gray). */
static GstBuffer *make_buffer_colorimetry(const guint8 *bgrx, gint width, gint height,
                                          GstVideoFormat format, const gchar *colorimetry)
{
    GstVideoInfo in_info, out_info;
    GstVideoFrame in_frame, out_frame;
    GstBuffer *in, *out;
    GstVideoConverter *converter;
    gint x, y;

    gst_video_info_set_format(&out_info, format, width, height);
    if (colorimetry)
        fail_unless(gst_video_colorimetry_from_string(&out_info.colorimetry, colorimetry));
    out = gst_buffer_new_allocate(NULL, GST_VIDEO_INFO_SIZE(&out_info), NULL);
    fail_unless(gst_video_frame_map(&out_frame, &out_info, out, GST_MAP_WRITE));

    if (format == GST_VIDEO_FORMAT_GRAY8) {
        for (y = 0; y < height; y++) {
            guint8 *row = GST_VIDEO_FRAME_PLANE_DATA(&out_frame, 0) +
                          y * GST_VIDEO_FRAME_PLANE_STRIDE(&out_frame, 0);
            for (x = 0; x < width; x++) {
                const guint8 *p = bgrx + (y * width + x) * 4;
                fail_unless(p[0] == p[1] && p[1] == p[2]);
                row[x] = p[0];
            }
        }
        gst_video_frame_unmap(&out_frame);
        return out;
    }

    gst_video_info_set_format(&in_info, GST_VIDEO_FORMAT_BGRx, width, height);
    in = gst_buffer_new_memdup(bgrx, width * height * 4);
    fail_unless(gst_video_frame_map(&in_frame, &in_info, in, GST_MAP_READ));
    converter = gst_video_converter_new(
        &in_info, &out_info,
        gst_structure_new("options", GST_VIDEO_CONVERTER_OPT_DITHER_METHOD,
                          GST_TYPE_VIDEO_DITHER_METHOD, GST_VIDEO_DITHER_NONE, NULL));
    fail_unless(converter != NULL);
    gst_video_converter_frame(converter, &in_frame, &out_frame);
    gst_video_converter_free(converter);
    gst_video_frame_unmap(&in_frame);
    gst_video_frame_unmap(&out_frame);
    gst_buffer_unref(in);
    return out;
}

static GstBuffer *make_buffer(const guint8 *bgrx, gint width, gint height, GstVideoFormat format)
{
    return make_buffer_colorimetry(bgrx, width, height, format, NULL);
}

static gchar *caps_string(GstVideoFormat format, gint width, gint height)
{
    return g_strdup_printf("video/x-raw,format=%s,width=%d,height=%d,"
                           "framerate=0/1",
                           gst_video_format_to_string(format), width, height);
}

/* ---- element and results ---------------------------------------------- */

/* A captchaocr with the test model on the CPU, properties set, in a
 * harness; bus (may be NULL) receives its messages. */
static GstHarness *harness_new(GstBus **bus, const gchar *first_property, ...)
{
    GstElement *element;
    GstHarness *h;
    va_list args;

    element = gst_object_ref_sink(gst_element_factory_make("captchaocr", NULL));
    fail_unless(element != NULL, "captchaocr not found (GST_PLUGIN_PATH?)");
    g_object_set(element, "model", model_path, "device", 1 /* cpu */, NULL);
    if (first_property) {
        va_start(args, first_property);
        g_object_set_valist(G_OBJECT(element), first_property, args);
        va_end(args);
    }
    if (bus) {
        *bus = gst_bus_new();
        gst_element_set_bus(element, *bus);
    }
    h = gst_harness_new_with_element(element, "sink", "src");
    gst_object_unref(element);
    return h;
}

/* Tears down a harness made with a bus: the bus stops queueing first, as
 * queued messages (state changes during teardown) hold the element, which
 * holds the bus. */
static void harness_teardown_with_bus(GstHarness *h, GstBus *bus)
{
    gst_bus_set_flushing(bus, TRUE);
    gst_harness_teardown(h);
    gst_object_unref(bus);
}

static void harness_set_caps(GstHarness *h, GstVideoFormat format, gint width, gint height)
{
    gchar *caps = caps_string(format, width, height);
    gst_harness_set_src_caps_str(h, caps);
    g_free(caps);
}

typedef struct {
    gint id, parent_id;
    guint x, y, width, height;
    gchar text[64];
    gchar label[64];
    gdouble confidence;
    gdouble char_product; /* product of char-confidences */
    guint chars;          /* entries in char-confidences */
    gboolean reused;
} Result;

/* The "captcha" region metas of buffer, in the order they were added. */
static guint results_of(GstBuffer *buffer, Result *out, guint max)
{
    gpointer state = NULL;
    GstMeta *meta;
    guint n = 0, i;

    while ((meta = gst_buffer_iterate_meta_filtered(buffer, &state,
                                                    GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
        GstVideoRegionOfInterestMeta *roi = (GstVideoRegionOfInterestMeta *)meta;
        GstStructure *s;
        const GValue *array;
        Result *r;

        if (roi->roi_type != g_quark_from_string("captcha"))
            continue;
        fail_unless(n < max);
        r = &out[n++];
        memset(r, 0, sizeof(*r));
        r->id = roi->id;
        r->parent_id = roi->parent_id;
        r->x = roi->x;
        r->y = roi->y;
        r->width = roi->w;
        r->height = roi->h;
        s = gst_video_region_of_interest_meta_get_param(roi, "captcha");
        fail_unless(s != NULL, "region meta without a \"captcha\" param");
        g_strlcpy(r->text, gst_structure_get_string(s, "text"), sizeof(r->text));
        g_strlcpy(r->label, gst_structure_get_string(s, "label"), sizeof(r->label));
        fail_unless(gst_structure_get_double(s, "confidence", &r->confidence));
        fail_unless(gst_structure_get_boolean(s, "reused", &r->reused));
        array = gst_structure_get_value(s, "char-confidences");
        fail_unless(array != NULL && GST_VALUE_HOLDS_ARRAY(array));
        r->chars = gst_value_array_get_size(array);
        r->char_product = 1.0;
        for (i = 0; i < r->chars; i++)
            r->char_product *= g_value_get_double(gst_value_array_get_value(array, i));
    }
    return n; /* gst_buffer_iterate_meta_filtered gives the oldest first */
}

static GstBuffer *push_pull(GstHarness *h, GstBuffer *buffer)
{
    fail_unless_equals_int(gst_harness_push(h, buffer), GST_FLOW_OK);
    return gst_harness_pull(h);
}

/* Reads one buffer in a fresh element; returns its single result. */
static Result read_once(const guint8 *bgrx, gint width, gint height, GstVideoFormat format)
{
    GstHarness *h = harness_new(NULL, NULL);
    GstBuffer *out;
    Result r[4];

    harness_set_caps(h, format, width, height);
    out = push_pull(h, make_buffer(bgrx, width, height, format));
    fail_unless_equals_int(results_of(out, r, 4), 1);
    gst_buffer_unref(out);
    gst_harness_teardown(h);
    return r[0];
}

static void assert_same_reading(const Result *a, const Result *b, const gchar *what)
{
    fail_unless(strcmp(a->text, b->text) == 0, "%s: text \"%s\" != \"%s\"", what, a->text, b->text);
    fail_unless(fabs(a->confidence - b->confidence) <= 1e-5 * b->confidence,
                "%s: confidence %g != %g", what, a->confidence, b->confidence);
}

/* Pops the "captcha" element messages from bus (up to max). */
static guint pop_captcha_messages(GstBus *bus, GstStructure **out, guint max)
{
    GstMessage *msg;
    guint n = 0;

    while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ELEMENT))) {
        const GstStructure *s = gst_message_get_structure(msg);
        if (gst_structure_has_name(s, "captcha")) {
            fail_unless(n < max);
            out[n++] = gst_structure_copy(s);
        }
        gst_message_unref(msg);
    }
    return n;
}

static void free_structures(GstStructure **s, guint n)
{
    guint i;
    for (i = 0; i < n; i++)
        gst_structure_free(s[i]);
}

static const GstStructure *message_result(const GstStructure *message, guint index)
{
    const GValue *list = gst_structure_get_value(message, "results");
    fail_unless(list != NULL && GST_VALUE_HOLDS_LIST(list));
    fail_unless(index < gst_value_list_get_size(list));
    return gst_value_get_structure(gst_value_list_get_value(list, index));
}

static guint count_messages(GstBus *bus, GstMessageType type)
{
    GstMessage *msg;
    guint n = 0;

    while ((msg = gst_bus_pop_filtered(bus, type))) {
        n++;
        gst_message_unref(msg);
    }
    return n;
}

/* Pops the warnings from bus; returns their number, and the text of the
 * first in *first (NULL when none; free with g_free). */
static guint pop_warnings(GstBus *bus, gchar **first)
{
    GstMessage *msg;
    guint n = 0;

    *first = NULL;
    while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_WARNING))) {
        if (n++ == 0) {
            GError *error = NULL;
            gst_message_parse_warning(msg, &error, NULL);
            *first = g_strdup(error->message);
            g_error_free(error);
        }
        gst_message_unref(msg);
    }
    return n;
}

/* ---- tests ------------------------------------------------------------- */

GST_START_TEST(test_formats)
{
    static const GstVideoFormat rgb_formats[] = {
        GST_VIDEO_FORMAT_BGRA, GST_VIDEO_FORMAT_RGBx, GST_VIDEO_FORMAT_RGBA,
        GST_VIDEO_FORMAT_xRGB, GST_VIDEO_FORMAT_ARGB, GST_VIDEO_FORMAT_xBGR,
        GST_VIDEO_FORMAT_ABGR, GST_VIDEO_FORMAT_RGB,  GST_VIDEO_FORMAT_BGR,
    };
    static const GstVideoFormat yuv_formats[] = {
        GST_VIDEO_FORMAT_NV12,
        GST_VIDEO_FORMAT_I420,
    };
    guint8 *color = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    guint8 *gray = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, TRUE);
    Result reference, gray_reference, r;
    guint i;

    reference = read_once(color, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    fail_unless_equals_int(strlen(reference.text), 5);
    fail_unless_equals_int(reference.chars, 5);
    fail_unless(reference.confidence > 0.0 && reference.confidence <= 1.0);
    fail_unless(fabs(reference.char_product - reference.confidence) <= 1e-5 * reference.confidence);
    fail_unless_equals_string(reference.label, reference.text);

    for (i = 0; i < G_N_ELEMENTS(rgb_formats); i++) {
        r = read_once(color, PICTURE_WIDTH, PICTURE_HEIGHT, rgb_formats[i]);
        assert_same_reading(&r, &reference, gst_video_format_to_string(rgb_formats[i]));
    }
    for (i = 0; i < G_N_ELEMENTS(yuv_formats); i++) {
        r = read_once(color, PICTURE_WIDTH, PICTURE_HEIGHT, yuv_formats[i]);
        fail_unless_equals_string(r.text, reference.text);
    }

    gray_reference = read_once(gray, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    r = read_once(gray, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_GRAY8);
    assert_same_reading(&r, &gray_reference, "GRAY8");

    g_free(color);
    g_free(gray);
}

GST_END_TEST;

/* NV12/I420 are read with the caps' colorimetry (matrix and range), as
 * videoconvert would convert them: the element's reading of a frame equals the
 * library's of the same bytes with that matrix and range (same backend, batch
 * and threads: within 1e-6 of the confidence), and differs from a reading as
 * BT.601 limited range by more than 1e-5 (the test model is untrained, its
 * confidences about 36^-5, but it tells the conversions apart: ~1e-4). */
GST_START_TEST(test_yuv_colorimetry)
{
    static const struct {
        const gchar *colorimetry;
        captcha_yuv_matrix matrix;
        int full_range;
    } cases[] = {
        {"bt601", CAPTCHA_YUV_BT601, 0},      {"bt709", CAPTCHA_YUV_BT709, 0},
        {"bt2020", CAPTCHA_YUV_BT2020, 0},    {"smpte240m", CAPTCHA_YUV_SMPTE240M, 0},
        {"1:4:0:0", CAPTCHA_YUV_BT601, 1} /* JPEG: full range */,
        {"1:3:5:1", CAPTCHA_YUV_BT709, 1},    {"2:2:5:4", CAPTCHA_YUV_FCC, 0},
        /* range unknown: videoconvert (gst_video_color_range_offsets) reads it as full */
        {"0:4:0:0", CAPTCHA_YUV_BT601, 1},
    };
    static const GstVideoFormat formats[] = {GST_VIDEO_FORMAT_I420, GST_VIDEO_FORMAT_NV12};
    /* noise: saturated colours, where the matrices differ most */
    guint8 *color = make_frame(PICTURE_WIDTH, PICTURE_HEIGHT, 3);
    captcha_backend *backend = NULL;
    captcha_network *network = NULL;
    captcha_error err = {0};
    const captcha_config *config;
    float *input, *logits;
    guint c, f;

    fail_unless(captcha_backend_create(CAPTCHA_DEVICE_CPU, 0, 0, &backend, NULL, 0, &err) ==
                    CAPTCHA_OK,
                "%s", err.message);
    fail_unless(captcha_model_load(model_path, backend, &network, NULL, 0, &err) == CAPTCHA_OK,
                "%s", err.message);
    config = captcha_network_config(network);
    input = g_new(float, 3 * config->input_height * config->input_width);
    logits = g_new(float, captcha_config_classes(config));
    for (c = 0; c < G_N_ELEMENTS(cases); c++)
        for (f = 0; f < G_N_ELEMENTS(formats); f++) {
            GstBuffer *buffer = make_buffer_colorimetry(color, PICTURE_WIDTH, PICTURE_HEIGHT,
                                                        formats[f], cases[c].colorimetry);
            gchar *caps = caps_string(formats[f], PICTURE_WIDTH, PICTURE_HEIGHT);
            gchar *full_caps = g_strdup_printf("%s,colorimetry=%s", caps, cases[c].colorimetry);
            GstHarness *h = harness_new(NULL, NULL);
            captcha_result library[2];
            GstVideoInfo info;
            GstVideoFrame frame;
            GstBuffer *out;
            Result r[2];
            gint k, p;

            gst_video_info_set_format(&info, formats[f], PICTURE_WIDTH, PICTURE_HEIGHT);
            fail_unless(gst_video_frame_map(&frame, &info, buffer, GST_MAP_READ));
            for (k = 0; k < 2; k++) {
                /* k 0: the case's matrix and range; 1: BT.601 limited range */
                captcha_image image = {.format = formats[f] == GST_VIDEO_FORMAT_I420
                                                     ? CAPTCHA_PIXEL_I420
                                                     : CAPTCHA_PIXEL_NV12,
                                       .width = PICTURE_WIDTH,
                                       .height = PICTURE_HEIGHT,
                                       .yuv_matrix = k ? CAPTCHA_YUV_BT601 : cases[c].matrix,
                                       .yuv_full_range = k ? 0 : cases[c].full_range};
                for (p = 0; p < (gint)GST_VIDEO_FRAME_N_PLANES(&frame); p++) {
                    image.planes[p] = GST_VIDEO_FRAME_PLANE_DATA(&frame, p);
                    image.strides[p] = GST_VIDEO_FRAME_PLANE_STRIDE(&frame, p);
                }
                fail_unless(captcha_preprocess(&image, NULL, config, input, &err) == CAPTCHA_OK,
                            "%s", err.message);
                fail_unless(captcha_network_forward(network, input, 1, CAPTCHA_MODE_EVAL,
                                                    logits, &err) == CAPTCHA_OK,
                            "%s", err.message);
                fail_unless(captcha_decode(config, logits, &library[k], &err) == CAPTCHA_OK, "%s",
                            err.message);
            }
            gst_video_frame_unmap(&frame);

            gst_harness_set_src_caps_str(h, full_caps);
            out = push_pull(h, buffer);
            fail_unless_equals_int(results_of(out, r, 2), 1);
            fail_unless(strcmp(r[0].text, library[0].text) == 0 &&
                            fabs(r[0].confidence - library[0].confidence) <=
                                1e-6 * library[0].confidence,
                        "%s %s: element \"%s\" %g, library with its colorimetry \"%s\" %g",
                        gst_video_format_to_string(formats[f]), cases[c].colorimetry, r[0].text,
                        r[0].confidence, library[0].text, (double)library[0].confidence);
            if (cases[c].matrix != CAPTCHA_YUV_BT601 || cases[c].full_range)
                fail_unless(fabs(library[1].confidence - library[0].confidence) >
                                1e-5 * library[0].confidence,
                            "%s: read as BT.601 limited range, the same confidence %g",
                            cases[c].colorimetry, (double)library[0].confidence);
            gst_buffer_unref(out);
            gst_harness_teardown(h);
            g_free(full_caps);
            g_free(caps);
        }
    g_free(input);
    g_free(logits);
    captcha_network_destroy(network);
    captcha_backend_destroy(backend);
    g_free(color);
}

GST_END_TEST;

/* A padded stride given by a GstVideoMeta reads as the packed picture. */
GST_START_TEST(test_stride)
{
    const gint stride = 1024;
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    Result reference = read_once(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    gsize offsets[GST_VIDEO_MAX_PLANES] = {0};
    gint strides[GST_VIDEO_MAX_PLANES] = {stride};
    GstHarness *h = harness_new(NULL, NULL);
    GstBuffer *in, *out;
    GstMapInfo map;
    Result r[2];
    gint y;

    in = gst_buffer_new_allocate(NULL, stride * PICTURE_HEIGHT, NULL);
    fail_unless(gst_buffer_map(in, &map, GST_MAP_WRITE));
    memset(map.data, 0x5a, map.size);
    for (y = 0; y < PICTURE_HEIGHT; y++)
        memcpy(map.data + y * stride, picture + y * PICTURE_WIDTH * 4, PICTURE_WIDTH * 4);
    gst_buffer_unmap(in, &map);
    gst_buffer_add_video_meta_full(in, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_FORMAT_BGRx,
                                   PICTURE_WIDTH, PICTURE_HEIGHT, 1, offsets, strides);

    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
    out = push_pull(h, in);
    fail_unless_equals_int(results_of(out, r, 2), 1);
    assert_same_reading(&r[0], &reference, "stride 1024");
    gst_buffer_unref(out);
    gst_harness_teardown(h);
    g_free(picture);
}

GST_END_TEST;

/* A buffer whose GstVideoMeta lays planes past the buffer's memory (or gives a
 * negative stride) passes unread: no result, one warning naming the plane and
 * the sizes, no error; the element reads the next good frame. A buffer exactly
 * as long as the last row needs is read. */
/* Pushes in through h: it comes back without a result, and bus holds one warning
 * saying needle. */
static void push_expect_unread(GstHarness *h, GstBus *bus, GstBuffer *in, const gchar *needle)
{
    Result r[2];
    gchar *warning = NULL;
    GstBuffer *out = push_pull(h, in);

    fail_unless_equals_int(results_of(out, r, 2), 0);
    gst_buffer_unref(out);
    fail_unless_equals_int(pop_warnings(bus, &warning), 1);
    fail_unless(strstr(warning, needle) != NULL, "warning \"%s\" does not say \"%s\"", warning,
                needle);
    g_free(warning);
}

/* On bus, for case c: one warning saying each of needles[n] (up to a NULL) when its
 * frames were not read, none when they were (reads), and no error. */
static void expect_frame_warning(GstBus *bus, guint c, gboolean reads, const gchar *const *needles,
                                 guint n)
{
    gchar *warning = NULL;
    guint i;

    fail_unless_equals_int(pop_warnings(bus, &warning), reads ? 0 : 1);
    for (i = 0; i < n && needles[i]; i++)
        fail_unless(strstr(warning, needles[i]) != NULL,
                    "case %u: warning \"%s\" does not say \"%s\"", c, warning, needles[i]);
    g_free(warning);
    fail_unless_equals_int(count_messages(bus, GST_MESSAGE_ERROR), 0);
}

GST_START_TEST(test_short_buffer)
{
    const gint stride = 1024;
    /* bytes plane 0 spans: (rows - 1) x stride + one row of BGRx */
    const gsize span = (gsize)(PICTURE_HEIGHT - 1) * stride + PICTURE_WIDTH * 4;
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    Result reference = read_once(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    struct {
        gsize size;     /* bytes in the buffer */
        gint stride;    /* the meta's stride of plane 0 */
        gsize offset;   /* the meta's offset of plane 0 */
        gboolean reads; /* expected: read; else passed unread with a warning */
        const gchar *needles[3];
    } cases[] = {
        {span, stride, 0, TRUE, {NULL}},
        {span - 1, stride, 0, FALSE, {"plane 0 of the 202x50 BGRx frame", "needs 50984 bytes", "holds 50983"}},
        {span, stride, 1, FALSE, {"plane 0", "needs 50984 bytes", "holds 50983"}},
        {span, stride, span + 64, FALSE, {"plane 0 of the 202x50 BGRx frame", "starts at byte 51048", "past the buffer's 50984 bytes"}},
        {PICTURE_HEIGHT * 1000, 10, 0, FALSE, {"plane 0 of the 202x50 BGRx frame: its stride is 10 bytes", "808 bytes of one row"}},
        {span, -stride, span - PICTURE_WIDTH * 4, FALSE, {"plane 0 of the 202x50 BGRx frame: its stride is -1024"}},
    };
    guint c, i;

    for (c = 0; c < G_N_ELEMENTS(cases); c++) {
        gsize offsets[GST_VIDEO_MAX_PLANES] = {cases[c].offset};
        gint strides[GST_VIDEO_MAX_PLANES] = {cases[c].stride};
        GstHarness *h;
        GstBus *bus;

        h = harness_new(&bus, NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        for (i = 0; i < 3; i++) {
            GstBuffer *in = gst_buffer_new_allocate(NULL, cases[c].size, NULL);
            GstBuffer *out;
            GstMapInfo map;
            Result r[2];
            gint y;

            fail_unless(gst_buffer_map(in, &map, GST_MAP_WRITE));
            memset(map.data, 0x5a, map.size);
            if (cases[c].reads)
                for (y = 0; y < PICTURE_HEIGHT; y++)
                    memcpy(map.data + y * stride, picture + y * PICTURE_WIDTH * 4,
                           PICTURE_WIDTH * 4);
            gst_buffer_unmap(in, &map);
            gst_buffer_add_video_meta_full(in, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_FORMAT_BGRx,
                                           PICTURE_WIDTH, PICTURE_HEIGHT, 1, offsets, strides);
            out = push_pull(h, in);
            fail_unless_equals_int(results_of(out, r, 2), cases[c].reads ? 1 : 0);
            if (cases[c].reads)
                assert_same_reading(&r[0], &reference, "buffer of exactly the span");
            gst_buffer_unref(out);
        }
        expect_frame_warning(bus, c, cases[c].reads, cases[c].needles,
                             G_N_ELEMENTS(cases[c].needles));
        if (!cases[c].reads) {
            /* the element goes on reading good frames */
            GstBuffer *out = push_pull(
                h, make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx));
            Result r[2];

            fail_unless_equals_int(results_of(out, r, 2), 1);
            assert_same_reading(&r[0], &reference, "good frame after a short one");
            gst_buffer_unref(out);
        }
        harness_teardown_with_bus(h, bus);
    }
    /* without a video meta: a buffer one byte smaller than the caps' frame */
    {
        GstHarness *h;
        GstBus *bus;
        gchar *warning;

        h = harness_new(&bus, NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        for (i = 0; i < 3; i++) {
            GstBuffer *out =
                push_pull(h, gst_buffer_new_allocate(NULL, PICTURE_WIDTH * 4 * PICTURE_HEIGHT - 1,
                                                     NULL));
            Result r[2];

            fail_unless_equals_int(results_of(out, r, 2), 0);
            gst_buffer_unref(out);
        }
        fail_unless_equals_int(pop_warnings(bus, &warning), 1);
        fail_unless(strstr(warning, "holds 40399 bytes, a 202x50 BGRx frame") != NULL,
                    "warning \"%s\"", warning);
        g_free(warning);
        fail_unless_equals_int(count_messages(bus, GST_MESSAGE_ERROR), 0);
        harness_teardown_with_bus(h, bus);
    }
    /* interval=2: a short buffer is not counted (as a GAP buffer): good (read),
     * short (unread), good (reused), good (read) */
    {
        const gboolean results[4] = {1, 0, 1, 1}, reused[4] = {FALSE, FALSE, TRUE, FALSE};
        GstHarness *h;
        GstBus *bus;
        gchar *warning;

        h = harness_new(&bus, "interval", 2u, NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        for (i = 0; i < 4; i++) {
            GstBuffer *in, *out;
            Result r[2];

            in = make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
            if (i == 1) {
                gsize offsets[GST_VIDEO_MAX_PLANES] = {0};
                gint strides[GST_VIDEO_MAX_PLANES] = {stride};

                gst_buffer_add_video_meta_full(in, GST_VIDEO_FRAME_FLAG_NONE,
                                               GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH,
                                               PICTURE_HEIGHT, 1, offsets, strides);
            }
            out = push_pull(h, in);
            fail_unless_equals_int(results_of(out, r, 2), results[i]);
            if (results[i])
                fail_unless(r[0].reused == reused[i], "frame %u: reused %d", i, r[0].reused);
            gst_buffer_unref(out);
        }
        fail_unless_equals_int(pop_warnings(bus, &warning), 1);
        g_free(warning);
        harness_teardown_with_bus(h, bus);
    }
    g_free(picture);
}

GST_END_TEST;

/* A video meta that disagrees with the caps: of another format or smaller, the frame
 * passes unread with one warning (gst_video_frame_map would refuse it with a
 * GStreamer-CRITICAL, which gst-check makes fatal); larger (padding), only the caps'
 * frame is read. */
GST_START_TEST(test_meta_mismatch)
{
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    Result reference = read_once(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    const gint big_width = 2 * PICTURE_WIDTH, big_height = 2 * PICTURE_HEIGHT;
    struct {
        GstVideoFormat format;
        gint width, height;
        gboolean reads;
        const gchar *needle;
        gint crop; /* 1: a crop meta outside the frame, 2: one larger than the caps' */
    } cases[] = {
        {GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH / 2, PICTURE_HEIGHT / 2, FALSE,
         "the video meta describes a 101x25 BGRx frame (1 plane), the caps a 202x50 BGRx one", 0},
        {GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT - 1, FALSE, "202x49 BGRx", 0},
        {GST_VIDEO_FORMAT_GRAY8, PICTURE_WIDTH, PICTURE_HEIGHT, FALSE, "a 202x50 GRAY8 frame", 0},
        {GST_VIDEO_FORMAT_BGRx, big_width, big_height, TRUE, NULL, 0},
        {GST_VIDEO_FORMAT_BGRx, big_width, big_height, TRUE, NULL, 1},
        {GST_VIDEO_FORMAT_BGRx, big_width, big_height, TRUE, NULL, 2},
    };
    guint c, i;

    for (c = 0; c < G_N_ELEMENTS(cases); c++) {
        GstHarness *h;
        GstBus *bus;

        h = harness_new(&bus, NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        for (i = 0; i < 2; i++) {
            /* the picture at the top left of a big_width x big_height BGRx frame whose
             * padding is a gradient the network would read as something else */
            GstBuffer *in = gst_buffer_new_allocate(NULL, (gsize)big_width * big_height * 4, NULL);
            gsize offsets[GST_VIDEO_MAX_PLANES] = {0};
            gint strides[GST_VIDEO_MAX_PLANES] = {big_width * 4};
            GstBuffer *out;
            GstMapInfo map;
            Result r[2];
            gint y;

            fail_unless(gst_buffer_map(in, &map, GST_MAP_WRITE));
            for (gsize k = 0; k < map.size; k++)
                map.data[k] = (guint8)(k * 7 / 13);
            for (y = 0; y < PICTURE_HEIGHT; y++)
                memcpy(map.data + (gsize)y * strides[0], picture + y * PICTURE_WIDTH * 4,
                       PICTURE_WIDTH * 4);
            gst_buffer_unmap(in, &map);
            if (cases[c].format == GST_VIDEO_FORMAT_GRAY8)
                strides[0] = big_width;
            gst_buffer_add_video_meta_full(in, GST_VIDEO_FRAME_FLAG_NONE, cases[c].format,
                                           cases[c].width, cases[c].height, 1, offsets, strides);
            if (cases[c].crop) {
                /* unusable (ignored), or larger than the caps' frame: the caps' frame is
                 * read all the same */
                GstVideoCropMeta *crop = gst_buffer_add_video_crop_meta(in);
                crop->x = crop->y = cases[c].crop == 1 ? 1000 : 0;
                crop->width = cases[c].crop == 1 ? 10 : big_width;
                crop->height = cases[c].crop == 1 ? 10 : big_height;
            }
            out = push_pull(h, in);
            fail_unless_equals_int(results_of(out, r, 2), cases[c].reads ? 1 : 0);
            if (cases[c].reads) {
                assert_same_reading(&r[0], &reference, "the caps' frame inside a larger meta's");
                fail_unless(r[0].x == 0 && r[0].y == 0 && r[0].width == PICTURE_WIDTH &&
                                r[0].height == PICTURE_HEIGHT,
                            "region %u,%u %ux%u, expected the caps' 0,0 202x50", r[0].x, r[0].y,
                            r[0].width, r[0].height);
            }
            gst_buffer_unref(out);
        }
        expect_frame_warning(bus, c, cases[c].reads, &cases[c].needle, 1);
        harness_teardown_with_bus(h, bus);
    }
    g_free(picture);
}

GST_END_TEST;

/* Frames late by downstream's QoS events pass on unread (not dropped, as the base
 * class would), carrying the last results marked reused; qos=false reads them. */
GST_START_TEST(test_qos)
{
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    Result reference = read_once(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    /* PTS in seconds; a QoS event after frame 0 says frames up to 3 s are late */
    const guint pts[4] = {0, 1, 3, 4};
    gboolean qos;

    for (qos = FALSE; qos <= TRUE; qos++) {
        GstHarness *h = harness_new(NULL, "qos", qos, NULL);
        guint64 processed;
        gboolean value;
        guint i;

        g_object_get(h->element, "qos", &value, NULL);
        fail_unless_equals_int(value, qos);
        /* the element's own description of the base class's switch, which it drives */
        fail_unless_equals_int(gst_base_transform_is_qos_enabled(GST_BASE_TRANSFORM(h->element)),
                               qos);
        fail_unless(strstr(g_param_spec_get_blurb(g_object_class_find_property(
                               G_OBJECT_GET_CLASS(h->element), "qos")),
                           "passes on unread") != NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        for (i = 0; i < G_N_ELEMENTS(pts); i++) {
            GstBuffer *in = make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT,
                                        GST_VIDEO_FORMAT_BGRx);
            gboolean late = qos && (i == 1 || i == 2);
            GstBuffer *out;
            Result r[2];

            GST_BUFFER_PTS(in) = pts[i] * GST_SECOND;
            GST_BUFFER_DURATION(in) = GST_SECOND;
            if (i == 2) /* a discontinuity of the stream's own stays marked */
                GST_BUFFER_FLAG_SET(in, GST_BUFFER_FLAG_DISCONT);
            fail_unless_equals_int(gst_harness_push(h, in), GST_FLOW_OK);
            out = gst_harness_try_pull(h);
            fail_unless(out != NULL, "qos=%d: frame %u was dropped", qos, i);
            /* no frame is missing: a late one is not marked as a discontinuity */
            fail_unless(GST_BUFFER_IS_DISCONT(out) == (i == 2), "qos=%d: frame %u DISCONT %d",
                        qos, i, GST_BUFFER_IS_DISCONT(out));
            fail_unless_equals_int(gst_base_transform_is_qos_enabled(GST_BASE_TRANSFORM(h->element)),
                                   qos);
            fail_unless_equals_int(results_of(out, r, 2), 1);
            assert_same_reading(&r[0], &reference, "frame with QoS");
            fail_unless(r[0].reused == late, "qos=%d: frame %u reused %d", qos, i, r[0].reused);
            gst_buffer_unref(out);
            if (i == 0)
                fail_unless(gst_harness_push_upstream_event(
                    h, gst_event_new_qos(GST_QOS_TYPE_THROTTLE, 2.0, 2 * GST_SECOND,
                                         GST_SECOND)));
        }
        g_object_get(h->element, "frames-processed", &processed, NULL);
        fail_unless_equals_uint64(processed, qos ? 2 : 4);
        gst_harness_teardown(h);
    }
    /* a late frame that cannot be read (a stride below one row) passes without the reused
     * results, with the warning, as on time */
    {
        GstBus *bus;
        GstHarness *h = harness_new(&bus, NULL);
        gsize offsets[GST_VIDEO_MAX_PLANES] = {0};
        gint strides[GST_VIDEO_MAX_PLANES] = {10};
        GstBuffer *in, *out;
        Result r[2];

        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        in = make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
        GST_BUFFER_PTS(in) = 0;
        out = push_pull(h, in);
        fail_unless_equals_int(results_of(out, r, 2), 1);
        gst_buffer_unref(out);
        fail_unless(gst_harness_push_upstream_event(
            h, gst_event_new_qos(GST_QOS_TYPE_THROTTLE, 2.0, 2 * GST_SECOND, GST_SECOND)));
        in = gst_buffer_new_allocate(NULL, PICTURE_WIDTH * 4 * PICTURE_HEIGHT, NULL);
        gst_buffer_add_video_meta_full(in, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_FORMAT_BGRx,
                                       PICTURE_WIDTH, PICTURE_HEIGHT, 1, offsets, strides);
        GST_BUFFER_PTS(in) = GST_SECOND;
        push_expect_unread(h, bus, in, "stride is 10 bytes");
        harness_teardown_with_bus(h, bus);
    }
    g_free(picture);
}

GST_END_TEST;

/* threads=1 computes the same reading as the default (one thread per core), and the
 * property reads back. */
GST_START_TEST(test_threads)
{
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 3, FALSE);
    Result reference = read_once(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    GstHarness *h = harness_new(NULL, "threads", 1u, NULL);
    GstBuffer *out;
    Result r[2];
    guint threads = 0;

    g_object_get(h->element, "threads", &threads, NULL);
    fail_unless_equals_int(threads, 1);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
    out = push_pull(h, make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx));
    fail_unless_equals_int(results_of(out, r, 2), 1);
    assert_same_reading(&r[0], &reference, "threads=1");
    gst_buffer_unref(out);
    gst_harness_teardown(h);
    g_free(picture);
}

GST_END_TEST;

/* The frame is never written nor copied: read-only memory comes out as
 * the same memory with the same bytes. */
GST_START_TEST(test_frame_untouched)
{
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    gsize size = PICTURE_WIDTH * PICTURE_HEIGHT * 4;
    guint8 *copy = g_memdup2(picture, size);
    GstHarness *h = harness_new(NULL, NULL);
    GstBuffer *in, *out;
    GstMapInfo map;
    Result r[2];

    in = gst_buffer_new_wrapped_full(GST_MEMORY_FLAG_READONLY, picture, size, 0, size, NULL, NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
    out = push_pull(h, in);
    fail_unless_equals_int(results_of(out, r, 2), 1);
    fail_unless(gst_buffer_map(out, &map, GST_MAP_READ));
    fail_unless(map.data == picture, "the frame's memory was copied");
    fail_unless(memcmp(map.data, copy, size) == 0);
    gst_buffer_unmap(out, &map);
    gst_buffer_unref(out);
    gst_harness_teardown(h);
    g_free(picture);
    g_free(copy);
}

GST_END_TEST;

/* roi-* properties: the picture pasted into a larger frame reads as the
 * picture alone; a region partly outside is clipped. */
GST_START_TEST(test_roi_property)
{
    const gint fw = 640, fh = 360, px = 100, py = 200;
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    guint8 *frame = make_frame(fw, fh, 7);
    Result reference = read_once(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    GstHarness *h;
    GstBuffer *out;
    Result r[2];

    paste(frame, fw, picture, PICTURE_WIDTH, PICTURE_HEIGHT, px, py);
    h = harness_new(NULL, "roi-x", px, "roi-y", py, "roi-width", PICTURE_WIDTH, "roi-height",
                    PICTURE_HEIGHT, NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, fw, fh);
    out = push_pull(h, make_buffer(frame, fw, fh, GST_VIDEO_FORMAT_BGRx));
    fail_unless_equals_int(results_of(out, r, 2), 1);
    assert_same_reading(&r[0], &reference, "region of a 640x360 frame");
    fail_unless_equals_int(r[0].x, px);
    fail_unless_equals_int(r[0].y, py);
    fail_unless_equals_int(r[0].width, PICTURE_WIDTH);
    fail_unless_equals_int(r[0].height, PICTURE_HEIGHT);
    fail_unless_equals_int(r[0].parent_id, -1);
    fail_unless_equals_int(r[0].reused, FALSE);
    gst_buffer_unref(out);

    /* 600 + 202 > 640: clipped to 40 columns */
    g_object_set(h->element, "roi-x", 600, NULL);
    out = push_pull(h, make_buffer(frame, fw, fh, GST_VIDEO_FORMAT_BGRx));
    fail_unless_equals_int(results_of(out, r, 2), 1);
    fail_unless_equals_int(r[0].x, 600);
    fail_unless_equals_int(r[0].width, fw - 600);
    fail_unless_equals_int(r[0].height, PICTURE_HEIGHT);
    gst_buffer_unref(out);

    gst_harness_teardown(h);
    g_free(picture);
    g_free(frame);
}

GST_END_TEST;

/* Two regions of the picture that share no coordinate. */
static const gint roi_a[4] = {0, 0, 100, 40}, roi_b[4] = {60, 5, 140, 45};

static gboolean is_region(const Result *r, const gint *roi)
{
    return r->x == (guint)roi[0] && r->y == (guint)roi[1] && r->width == (guint)roi[2] &&
           r->height == (guint)roi[3];
}

static gpointer alternate_regions(gpointer data)
{
    GstElement *element = data;
    guint i;

    for (i = 0; !g_atomic_int_get((gint *)g_object_get_data(G_OBJECT(element), "stop")); i++) {
        const gint *roi = i % 2 ? roi_a : roi_b;
        g_object_set(element, "roi-x", roi[0], "roi-y", roi[1], "roi-width", roi[2], "roi-height",
                     roi[3], NULL);
    }
    return NULL;
}

/* The roi-* properties set in one g_object_set (or between freeze_notify and
 * thaw_notify) take effect together: a frame read while another thread moves
 * the region is read with the old region or the new one, never with x from
 * one and width from the other. */
GST_START_TEST(test_roi_atomic)
{
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    GstHarness *h = harness_new(NULL, "roi-x", roi_a[0], "roi-y", roi_a[1], "roi-width", roi_a[2],
                                "roi-height", roi_a[3], "message", FALSE, NULL);
    gint stop = 0, x;
    GstBuffer *out;
    GThread *thread;
    Result r[2];
    guint i, torn = 0;

    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
    /* half set: the frame is read with the whole old region */
    g_object_freeze_notify(G_OBJECT(h->element));
    g_object_set(h->element, "roi-x", roi_b[0], "roi-y", roi_b[1], NULL);
    g_object_get(h->element, "roi-x", &x, NULL);
    fail_unless_equals_int(x, roi_b[0]); /* reads back as set */
    out = push_pull(h, make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx));
    fail_unless_equals_int(results_of(out, r, 2), 1);
    fail_unless(is_region(&r[0], roi_a), "half-set region read: %u,%u %ux%u", r[0].x, r[0].y,
                r[0].width, r[0].height);
    gst_buffer_unref(out);
    g_object_set(h->element, "roi-width", roi_b[2], "roi-height", roi_b[3], NULL);
    g_object_thaw_notify(G_OBJECT(h->element));
    out = push_pull(h, make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx));
    fail_unless_equals_int(results_of(out, r, 2), 1);
    fail_unless(is_region(&r[0], roi_b), "region after thaw: %u,%u %ux%u", r[0].x, r[0].y,
                r[0].width, r[0].height);
    gst_buffer_unref(out);

    /* another thread moving the region while frames stream */
    g_object_set_data(G_OBJECT(h->element), "stop", &stop);
    thread = g_thread_new("roi-setter", alternate_regions, h->element);
    for (i = 0; i < 300; i++) {
        out = push_pull(h, make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx));
        fail_unless_equals_int(results_of(out, r, 2), 1);
        if (!is_region(&r[0], roi_a) && !is_region(&r[0], roi_b) && torn++ == 0)
            GST_ERROR("torn region %u,%u %ux%u", r[0].x, r[0].y, r[0].width, r[0].height);
        gst_buffer_unref(out);
    }
    g_atomic_int_set(&stop, 1);
    g_thread_join(thread);
    fail_unless_equals_int(torn, 0);

    gst_harness_teardown(h);
    g_free(picture);
}

GST_END_TEST;

static void add_upstream_region(GstBuffer *buffer, const gchar *type, gint id, guint x, guint y,
                                guint w, guint hh)
{
    GstVideoRegionOfInterestMeta *meta =
        gst_buffer_add_video_region_of_interest_meta(buffer, type, x, y, w, hh);
    meta->id = id;
}

/* roi-type: two upstream regions in one frame give two results (one
 * batch), distinct ids, parent_id set; other types are ignored. */
/* Pictures 1 and 2 (g_free) and their readings on their own. */
static void make_two_pictures(guint8 **a, guint8 **b, Result *ref_a, Result *ref_b)
{
    *a = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    *b = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 2, FALSE);
    *ref_a = read_once(*a, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    *ref_b = read_once(*b, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
}

GST_START_TEST(test_roi_meta)
{
    const gint fw = 640, fh = 360;
    guint8 *a, *b;
    guint8 *frame = make_frame(fw, fh, 9);
    Result ref_a, ref_b;
    GstStructure *messages[4];
    GstHarness *h;
    GstBuffer *in, *out;
    GstBus *bus;
    Result r[4];
    guint i;

    make_two_pictures(&a, &b, &ref_a, &ref_b);
    fail_if(strcmp(ref_a.text, ref_b.text) == 0,
            "pictures 1 and 2 read alike (\"%s\"): the test cannot tell regions "
            "apart",
            ref_a.text);
    paste(frame, fw, a, PICTURE_WIDTH, PICTURE_HEIGHT, 20, 30);
    paste(frame, fw, b, PICTURE_WIDTH, PICTURE_HEIGHT, 300, 200);

    h = harness_new(&bus, "roi-type", "plate", NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, fw, fh);
    in = make_buffer(frame, fw, fh, GST_VIDEO_FORMAT_BGRx);
    add_upstream_region(in, "plate", 7, 20, 30, PICTURE_WIDTH, PICTURE_HEIGHT);
    add_upstream_region(in, "face", 3, 0, 0, 50, 50);
    add_upstream_region(in, "plate", 9, 300, 200, PICTURE_WIDTH, PICTURE_HEIGHT);
    out = push_pull(h, in);
    fail_unless_equals_int(results_of(out, r, 4), 2);
    fail_unless(r[0].id != r[1].id);
    for (i = 0; i < 2; i++) {
        fail_unless(r[i].id != 7 && r[i].id != 3 && r[i].id != 9,
                    "result id %d repeats an upstream id", r[i].id);
        if (r[i].parent_id == 7) {
            assert_same_reading(&r[i], &ref_a, "region 7");
            fail_unless_equals_int(r[i].x, 20);
            fail_unless_equals_int(r[i].y, 30);
        } else {
            fail_unless_equals_int(r[i].parent_id, 9);
            assert_same_reading(&r[i], &ref_b, "region 9");
            fail_unless_equals_int(r[i].x, 300);
            fail_unless_equals_int(r[i].y, 200);
        }
    }
    fail_unless(r[0].parent_id != r[1].parent_id);
    gst_buffer_unref(out);

    fail_unless_equals_int(pop_captcha_messages(bus, messages, 4), 1);
    fail_unless_equals_int(gst_value_list_get_size(gst_structure_get_value(messages[0], "results")),
                           2);
    for (i = 0; i < 2; i++) {
        const GstStructure *s = message_result(messages[0], i);
        gint parent, x;
        fail_unless(gst_structure_get_int(s, "parent-id", &parent));
        fail_unless(gst_structure_get_int(s, "x", &x));
        fail_unless_equals_string(gst_structure_get_string(s, "text"),
                                  parent == 7 ? ref_a.text : ref_b.text);
        fail_unless_equals_int(x, parent == 7 ? 20 : 300);
    }
    free_structures(messages, 1);

    /* Upstream ids left at 0 (the 1.22 default): ours are still distinct. */
    in = make_buffer(frame, fw, fh, GST_VIDEO_FORMAT_BGRx);
    add_upstream_region(in, "plate", 0, 20, 30, PICTURE_WIDTH, PICTURE_HEIGHT);
    add_upstream_region(in, "plate", 0, 300, 200, PICTURE_WIDTH, PICTURE_HEIGHT);
    out = push_pull(h, in);
    fail_unless_equals_int(results_of(out, r, 4), 2);
    fail_unless(r[0].id != r[1].id && r[0].id != 0 && r[1].id != 0);
    gst_buffer_unref(out);

    /* No region of that type: no result. */
    in = make_buffer(frame, fw, fh, GST_VIDEO_FORMAT_BGRx);
    add_upstream_region(in, "face", 0, 20, 30, PICTURE_WIDTH, PICTURE_HEIGHT);
    out = push_pull(h, in);
    fail_unless_equals_int(results_of(out, r, 4), 0);
    gst_buffer_unref(out);

    harness_teardown_with_bus(h, bus);
    g_free(a);
    g_free(b);
    g_free(frame);
}

GST_END_TEST;

/* roi-type: results come in the order the upstream regions were added,
 * in the metas (ids ascending) and in the message, whether the element
 * adds its metas to the input buffer or to a copy (shared input). */
GST_START_TEST(test_roi_order)
{
    const gint fw = 640, fh = 360;
    guint8 *a = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    guint8 *b = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 2, FALSE);
    guint8 *frame = make_frame(fw, fh, 9);
    Result ref_a = read_once(a, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    Result ref_b = read_once(b, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    /* added upstream in this order: b (id 9), then a (id 7), then b (id 4) */
    const gint parent[3] = {9, 7, 4};
    const gint x[3] = {300, 20, 300};
    const Result *expected[3] = {&ref_b, &ref_a, &ref_b};
    guint shared, i;

    fail_if(strcmp(ref_a.text, ref_b.text) == 0);
    paste(frame, fw, a, PICTURE_WIDTH, PICTURE_HEIGHT, 20, 30);
    paste(frame, fw, b, PICTURE_WIDTH, PICTURE_HEIGHT, 300, 200);
    for (shared = 0; shared < 2; shared++) {
        GstStructure *messages[2];
        GstHarness *h;
        GstBus *bus;
        GstBuffer *in, *extra, *out;
        Result r[4];

        h = harness_new(&bus, "roi-type", "plate", NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, fw, fh);
        in = make_buffer(frame, fw, fh, GST_VIDEO_FORMAT_BGRx);
        for (i = 0; i < 3; i++)
            add_upstream_region(in, "plate", parent[i], x[i], x[i] == 20 ? 30 : 200, PICTURE_WIDTH,
                                PICTURE_HEIGHT);
        extra = shared ? gst_buffer_ref(in) : NULL;
        out = push_pull(h, in);
        fail_unless_equals_int(results_of(out, r, 4), 3);
        for (i = 0; i < 3; i++) {
            const GstStructure *m;
            gint id, parent_id, mx;

            fail_unless(r[i].parent_id == parent[i],
                        "shared %u: meta %u has parent %d, expected %d", shared, i, r[i].parent_id,
                        parent[i]);
            fail_unless_equals_int(r[i].x, x[i]);
            assert_same_reading(&r[i], expected[i], "region in order");
            if (i > 0)
                fail_unless(r[i].id > r[i - 1].id, "ids %d then %d", r[i - 1].id, r[i].id);
            if (i == 0)
                fail_unless_equals_int(pop_captcha_messages(bus, messages, 2), 1);
            m = message_result(messages[0], i);
            fail_unless(gst_structure_get_int(m, "parent-id", &parent_id));
            fail_unless(gst_structure_get_int(m, "id", &id));
            fail_unless(gst_structure_get_int(m, "x", &mx));
            fail_unless(parent_id == parent[i], "shared %u: message result %u has parent %d",
                        shared, i, parent_id);
            fail_unless_equals_int(id, r[i].id);
            fail_unless_equals_int(mx, x[i]);
            fail_unless_equals_string(gst_structure_get_string(m, "text"), expected[i]->text);
        }
        free_structures(messages, 1);
        gst_buffer_unref(out);
        if (extra)
            gst_buffer_unref(extra);
        harness_teardown_with_bus(h, bus);
    }
    g_free(a);
    g_free(b);
    g_free(frame);
}

GST_END_TEST;

/* Peak resident memory of this process so far, in KiB. */
static glong peak_rss_kib(void)
{
    struct rusage usage;

    fail_unless(getrusage(RUSAGE_SELF, &usage) == 0);
    return usage.ru_maxrss;
}

/* Many upstream regions in one frame (a detector gone wrong) are all read, in
 * order, in memory that does not grow with their number: they are read in
 * batches of bounded size (one batch of all of them took about 1 MiB per
 * region, so some ten thousand exhausted the memory, and above the network's
 * batch limit of 65536 the frame failed with an error). */
GST_START_TEST(test_roi_many)
{
    const gint fw = 640, fh = 360;
    const guint count = 600;
    guint8 *a = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    guint8 *b = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 2, FALSE);
    guint8 *frame = make_frame(fw, fh, 9);
    Result ref_a = read_once(a, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    Result ref_b = read_once(b, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    Result *r = g_new(Result, count);
    GstHarness *h;
    GstBus *bus;
    GstBuffer *in;
    glong before, grown;
    guint i;

    fail_if(strcmp(ref_a.text, ref_b.text) == 0);
    paste(frame, fw, a, PICTURE_WIDTH, PICTURE_HEIGHT, 20, 30);
    paste(frame, fw, b, PICTURE_WIDTH, PICTURE_HEIGHT, 300, 200);
    h = harness_new(&bus, "roi-type", "plate", NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, fw, fh);
    /* the network's memory for one region first */
    in = make_buffer(frame, fw, fh, GST_VIDEO_FORMAT_BGRx);
    add_upstream_region(in, "plate", 0, 20, 30, PICTURE_WIDTH, PICTURE_HEIGHT);
    gst_buffer_unref(push_pull(h, in));
    before = peak_rss_kib();

    in = make_buffer(frame, fw, fh, GST_VIDEO_FORMAT_BGRx);
    for (i = 0; i < count; i++)
        add_upstream_region(in, "plate", (gint)i, i % 2 ? 300 : 20, i % 2 ? 200 : 30,
                            PICTURE_WIDTH, PICTURE_HEIGHT);
    in = push_pull(h, in);
    grown = peak_rss_kib() - before;
    fail_unless_equals_int(results_of(in, r, count), count);
    for (i = 0; i < count; i++) {
        fail_unless_equals_int(r[i].parent_id, (gint)i);
        assert_same_reading(&r[i], i % 2 ? &ref_b : &ref_a, "one of many regions");
    }
    gst_buffer_unref(in);
    fail_unless(grown < 256 * 1024, "reading %u regions took %ld MiB more memory", count,
                grown / 1024);
    fail_unless_equals_int(count_messages(bus, GST_MESSAGE_ERROR), 0);
    harness_teardown_with_bus(h, bus);
    g_free(r);
    g_free(a);
    g_free(b);
    g_free(frame);
}

GST_END_TEST;

/* Result ids: above the largest region id on the buffer when they fit in
 * a gint, else the smallest unused non-negative ids; never negative, never
 * an id already on the buffer (any type). */
GST_START_TEST(test_roi_ids)
{
    const gint fw = 640, fh = 360;
    guint8 *frame = make_frame(fw, fh, 9);
    struct {
        gint upstream[3]; /* ids of two "plate" regions and one "face" */
        gint expected[2];
    } cases[] = {
        {{7, G_MAXINT - 3, 0}, {G_MAXINT - 2, G_MAXINT - 1}},
        {{7, G_MAXINT - 2, 1}, {G_MAXINT - 1, G_MAXINT}},
        {{7, G_MAXINT, 1}, {0, 2}},
        {{0, G_MAXINT - 1, 1}, {2, 3}},
        {{-5, G_MAXINT, -1}, {0, 1}},
    };
    GstHarness *h;
    GstBus *bus;
    guint c, i;

    h = harness_new(&bus, "roi-type", "plate", NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, fw, fh);
    for (c = 0; c < G_N_ELEMENTS(cases); c++) {
        GstStructure *messages[2];
        GstBuffer *in = make_buffer(frame, fw, fh, GST_VIDEO_FORMAT_BGRx);
        GstBuffer *out;
        Result r[4];

        add_upstream_region(in, "plate", cases[c].upstream[0], 20, 30, PICTURE_WIDTH,
                            PICTURE_HEIGHT);
        add_upstream_region(in, "plate", cases[c].upstream[1], 300, 200, PICTURE_WIDTH,
                            PICTURE_HEIGHT);
        add_upstream_region(in, "face", cases[c].upstream[2], 0, 0, 10, 10);
        out = push_pull(h, in);
        fail_unless_equals_int(results_of(out, r, 4), 2);
        fail_unless_equals_int(pop_captcha_messages(bus, messages, 2), 1);
        for (i = 0; i < 2; i++) {
            gint id;

            fail_unless(r[i].id == cases[c].expected[i],
                        "case %u: result %u has id %d, expected %d", c, i, r[i].id,
                        cases[c].expected[i]);
            fail_unless_equals_int(r[i].parent_id, cases[c].upstream[i]);
            fail_unless(gst_structure_get_int(message_result(messages[0], i), "id", &id));
            fail_unless_equals_int(id, r[i].id);
        }
        free_structures(messages, 1);
        gst_buffer_unref(out);
    }
    harness_teardown_with_bus(h, bus);
    g_free(frame);
}

GST_END_TEST;

/* A GstVideoCropMeta (videocrop upstream, downstream accepting the meta):
 * the frame is the crop rectangle, the size the caps give; regions are
 * read inside it and reported relative to it. */
GST_START_TEST(test_crop_meta)
{
    const gint fw = 320, fh = 120, left = 30, top = 40;
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    guint8 *frame = make_frame(fw, fh, 11);
    Result reference = read_once(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    guint8 *part = g_malloc((PICTURE_WIDTH - 100) * PICTURE_HEIGHT * 4);
    Result right;
    struct {
        gint roi_x;
        const gchar *roi_type;
        gint x, width; /* expected region, relative to the crop */
        const Result *expected;
    } cases[] = {
        {0, NULL, 0, PICTURE_WIDTH, &reference},
        {100, NULL, 100, PICTURE_WIDTH - 100, NULL},
        {0, "plate", 0, PICTURE_WIDTH, &reference},
    };
    guint c;

    /* the picture's columns 100.. alone */
    for (c = 0; c < PICTURE_HEIGHT; c++)
        memcpy(part + c * (PICTURE_WIDTH - 100) * 4, picture + (c * PICTURE_WIDTH + 100) * 4,
               (PICTURE_WIDTH - 100) * 4);
    right = read_once(part, PICTURE_WIDTH - 100, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    paste(frame, fw, picture, PICTURE_WIDTH, PICTURE_HEIGHT, left, top);
    for (c = 0; c < G_N_ELEMENTS(cases); c++) {
        GstHarness *h;
        GstBuffer *in, *out;
        GstVideoCropMeta *crop;
        Result r[2];

        h = harness_new(NULL, "roi-x", cases[c].roi_x, "roi-type", cases[c].roi_type, NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        in = make_buffer(frame, fw, fh, GST_VIDEO_FORMAT_BGRx);
        gst_buffer_add_video_meta(in, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_FORMAT_BGRx, fw, fh);
        crop = gst_buffer_add_video_crop_meta(in);
        crop->x = left;
        crop->y = top;
        crop->width = PICTURE_WIDTH;
        crop->height = PICTURE_HEIGHT;
        if (cases[c].roi_type) /* upstream regions: in the cropped frame too */
            add_upstream_region(in, cases[c].roi_type, 5, 0, 0, PICTURE_WIDTH, PICTURE_HEIGHT);
        out = push_pull(h, in);
        fail_unless_equals_int(results_of(out, r, 2), 1);
        fail_unless(r[0].x == (guint)cases[c].x && r[0].y == 0 &&
                        r[0].width == (guint)cases[c].width && r[0].height == PICTURE_HEIGHT,
                    "case %u: region %u,%u %ux%u, expected %d,0 %dx%d", c, r[0].x, r[0].y,
                    r[0].width, r[0].height, cases[c].x, cases[c].width, PICTURE_HEIGHT);
        assert_same_reading(&r[0], cases[c].expected ? cases[c].expected : &right,
                            "inside the crop rectangle");
        fail_unless(gst_buffer_get_video_crop_meta(out) != NULL, "the crop meta was dropped");
        gst_buffer_unref(out);
        gst_harness_teardown(h);
    }
    g_free(picture);
    g_free(part);
    g_free(frame);
}

GST_END_TEST;

/* Reads one uniform GRAY8 frame of width x height; returns its results. */
static guint read_gray(gint width, gint height, Result *out, guint max)
{
    GstHarness *h = harness_new(NULL, NULL);
    GstVideoInfo info;
    GstBuffer *out_buffer;
    GstBuffer *in;
    guint n;

    harness_set_caps(h, GST_VIDEO_FORMAT_GRAY8, width, height);
    gst_video_info_set_format(&info, GST_VIDEO_FORMAT_GRAY8, width, height);
    in = gst_buffer_new_allocate(NULL, GST_VIDEO_INFO_SIZE(&info), NULL);
    gst_buffer_memset(in, 0, 200, GST_VIDEO_INFO_SIZE(&info));
    out_buffer = push_pull(h, in);
    n = results_of(out_buffer, out, max);
    gst_buffer_unref(out_buffer);
    gst_harness_teardown(h);
    return n;
}

/* Frames are limited to 65536 pixels a side (the preprocessing's limit):
 * larger caps do not negotiate; 65536 does and is read. */
GST_START_TEST(test_caps_size_limit)
{
    const gint sizes[2][2] = {{1, 65536}, {65536, 1}};
    GstHarness *h = harness_new(NULL, NULL);
    GstSegment segment;
    GstCaps *caps;
    Result r[2];
    guint i;

    /* (a refused sticky caps event is stored, so pushing it returns TRUE;
     * the buffer after it is refused) */
    caps = gst_caps_from_string("video/x-raw,format=GRAY8,width=65537,height=1,framerate=0/1");
    fail_if(gst_pad_query_accept_caps(GST_PAD_PEER(h->srcpad), caps), "65537x1 caps accepted");
    gst_harness_push_event(h, gst_event_new_caps(caps));
    gst_segment_init(&segment, GST_FORMAT_TIME);
    gst_harness_push_event(h, gst_event_new_segment(&segment));
    fail_unless_equals_int(gst_harness_push(h, gst_buffer_new_allocate(NULL, 65537, NULL)),
                           GST_FLOW_NOT_NEGOTIATED);
    gst_harness_teardown(h);

    for (i = 0; i < 2; i++) {
        fail_unless_equals_int(read_gray(sizes[i][0], sizes[i][1], r, 2), 1);
        fail_unless_equals_int(r[0].width, sizes[i][0]);
        fail_unless_equals_int(r[0].height, sizes[i][1]);
        fail_unless_equals_int(strlen(r[0].text), 5);
    }
}

GST_END_TEST;

/* GAP buffers (no meaningful content) pass untouched: not read, no meta,
 * no message; they are not frames for interval, and message-on-change
 * compares the next frame with the last frame read. An empty GAP buffer
 * passes without a warning. */
GST_START_TEST(test_gap)
{
    guint8 *a = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    guint8 *b = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 2, FALSE);
    Result ref_a = read_once(a, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    Result ref_b = read_once(b, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    /* per frame: picture (NULL: an empty buffer), GAP flag, and per
     * interval (1 and 2) the reading expected (NULL: none) and reused */
    const struct {
        const guint8 *picture;
        gboolean gap;
        const Result *expected[2];
        gboolean reused[2];
    } frames[] = {
        {a, FALSE, {&ref_a, &ref_a}, {FALSE, FALSE}}, {b, TRUE, {NULL, NULL}, {FALSE, FALSE}},
        {NULL, TRUE, {NULL, NULL}, {FALSE, FALSE}},   {a, FALSE, {&ref_a, &ref_a}, {FALSE, TRUE}},
        {b, TRUE, {NULL, NULL}, {FALSE, FALSE}},      {b, FALSE, {&ref_b, &ref_b}, {FALSE, FALSE}},
    };
    /* message-on-change: frames 0 and 5 change the text */
    const guint messages_expected[2] = {2, 2};
    guint interval, i;

    fail_if(strcmp(ref_a.text, ref_b.text) == 0);
    for (interval = 1; interval <= 2; interval++) {
        GstStructure *messages[8];
        GstHarness *h;
        GstBus *bus;
        guint64 processed;
        gchar *warning;

        h = harness_new(&bus, "interval", interval, "message-on-change", TRUE, NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        for (i = 0; i < G_N_ELEMENTS(frames); i++) {
            const Result *expected = frames[i].expected[interval - 1];
            GstBuffer *in, *out;
            Result r[2];

            in = frames[i].picture ? make_buffer(frames[i].picture, PICTURE_WIDTH, PICTURE_HEIGHT,
                                                 GST_VIDEO_FORMAT_BGRx)
                                   : gst_buffer_new();
            if (frames[i].gap)
                GST_BUFFER_FLAG_SET(in, GST_BUFFER_FLAG_GAP);
            GST_BUFFER_PTS(in) = i * GST_SECOND;
            out = push_pull(h, in);
            fail_unless(results_of(out, r, 2) == (expected ? 1u : 0u),
                        "interval %u, frame %u: results %u", interval, i, results_of(out, r, 2));
            if (expected) {
                fail_unless_equals_string(r[0].text, expected->text);
                fail_unless(r[0].reused == frames[i].reused[interval - 1],
                            "interval %u, frame %u: reused %d", interval, i, r[0].reused);
            }
            fail_unless(GST_BUFFER_FLAG_IS_SET(out, GST_BUFFER_FLAG_GAP) == frames[i].gap);
            gst_buffer_unref(out);
        }
        g_object_get(h->element, "frames-processed", &processed, NULL);
        fail_unless_equals_uint64(processed, interval == 1 ? 3 : 2);
        fail_unless_equals_int(pop_captcha_messages(bus, messages, 8),
                               messages_expected[interval - 1]);
        for (i = 0; i < messages_expected[interval - 1]; i++) {
            guint64 timestamp;
            fail_unless(gst_structure_get_uint64(messages[i], "timestamp", &timestamp));
            fail_unless_equals_uint64(timestamp, (i == 0 ? 0 : 5) * GST_SECOND);
        }
        free_structures(messages, messages_expected[interval - 1]);
        fail_unless(pop_warnings(bus, &warning) == 0, "warning: %s", warning);
        harness_teardown_with_bus(h, bus);
    }
    g_free(a);
    g_free(b);
}

GST_END_TEST;

/* interval=3 reads frames 0, 3, 6; the others carry the last reading
 * marked reused (even though their picture changed). */
GST_START_TEST(test_interval)
{
    guint8 *a = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    guint8 *b = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 2, FALSE);
    Result ref_a = read_once(a, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    Result ref_b = read_once(b, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    /* picture per frame, and the reading expected on it */
    const guint8 *shown[7] = {a, b, b, b, a, a, a};
    const Result *expected[7] = {&ref_a, &ref_a, &ref_a, &ref_b, &ref_b, &ref_b, &ref_a};
    const gboolean reused[7] = {FALSE, TRUE, TRUE, FALSE, TRUE, TRUE, FALSE};
    GstStructure *messages[8];
    GstHarness *h;
    GstBus *bus;
    guint64 processed;
    guint i;

    fail_if(strcmp(ref_a.text, ref_b.text) == 0);
    h = harness_new(&bus, "interval", 3, NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
    for (i = 0; i < 7; i++) {
        GstBuffer *out = push_pull(
            h, make_buffer(shown[i], PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx));
        Result r[2];

        fail_unless_equals_int(results_of(out, r, 2), 1);
        fail_unless_equals_string(r[0].text, expected[i]->text);
        fail_unless(r[0].reused == reused[i], "frame %u: reused %d", i, r[0].reused);
        gst_buffer_unref(out);
    }
    g_object_get(h->element, "frames-processed", &processed, NULL);
    fail_unless_equals_uint64(processed, 3);
    fail_unless_equals_int(pop_captcha_messages(bus, messages, 8), 3);
    free_structures(messages, 3);

    /* a flush (flushing seek) restarts the count: the frame after it is read,
     * no result from before it is carried over (frame 7 would have been reused) */
    {
        GstSegment segment;
        GstBuffer *out;
        Result r[2];

        fail_unless(gst_harness_push_event(h, gst_event_new_flush_start()));
        fail_unless(gst_harness_push_event(h, gst_event_new_flush_stop(TRUE)));
        gst_segment_init(&segment, GST_FORMAT_TIME);
        fail_unless(gst_harness_push_event(h, gst_event_new_segment(&segment)));
        out = push_pull(h, make_buffer(b, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx));
        fail_unless_equals_int(results_of(out, r, 2), 1);
        fail_unless_equals_string(r[0].text, ref_b.text);
        fail_unless(!r[0].reused, "the first frame after a flush carries a reused result");
        gst_buffer_unref(out);
        fail_unless_equals_int(pop_captcha_messages(bus, messages, 8), 1);
        free_structures(messages, 1);
    }

    harness_teardown_with_bus(h, bus);
    g_free(a);
    g_free(b);
}

GST_END_TEST;

/* skip-unchanged (default on): a frame whose network input equals the previous
 * frame read's is not run through the network; its results are decoded from
 * the kept logits, so they equal a fresh read bit for bit, are not marked
 * reused, carry this frame's region, and are posted. frames-unchanged counts
 * those frames; off, every frame runs the network. */
GST_START_TEST(test_skip_unchanged)
{
    const gint w = PICTURE_WIDTH, hgt = PICTURE_HEIGHT;
    guint8 *a = make_picture(w, hgt, 1, FALSE);
    guint8 *b = make_picture(w, hgt, 2, FALSE);
    guint8 *wide = g_malloc0((gsize)2 * w * hgt * 4); /* a in its right half */
    Result ref_a = read_once(a, w, hgt, GST_VIDEO_FORMAT_BGRx);
    Result ref_b = read_once(b, w, hgt, GST_VIDEO_FORMAT_BGRx);
    const guint8 *shown[6] = {a, a, a, b, b, a};
    const guint64 unchanged_after[6] = {0, 1, 2, 2, 3, 3};
    GstStructure *messages[8];
    GstHarness *h;
    GstBus *bus;
    guint64 processed, unchanged;
    gboolean skip;
    Result r[2];
    GstBuffer *out;
    gint y;
    guint i;

    fail_if(strcmp(ref_a.text, ref_b.text) == 0);
    h = harness_new(&bus, NULL);
    g_object_get(h->element, "skip-unchanged", &skip, NULL);
    fail_unless(skip, "skip-unchanged is not on by default");
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, w, hgt);
    for (i = 0; i < 6; i++) {
        const Result *expected = shown[i] == a ? &ref_a : &ref_b;

        out = push_pull(h, make_buffer(shown[i], w, hgt, GST_VIDEO_FORMAT_BGRx));
        fail_unless_equals_int(results_of(out, r, 2), 1);
        fail_unless_equals_string(r[0].text, expected->text);
        fail_unless(r[0].confidence == expected->confidence, "frame %u: confidence %.17g, read %.17g",
                    i, r[0].confidence, expected->confidence);
        fail_unless(!r[0].reused, "frame %u marked reused", i);
        gst_buffer_unref(out);
        g_object_get(h->element, "frames-unchanged", &unchanged, NULL);
        fail_unless_equals_uint64(unchanged, unchanged_after[i]);
    }
    g_object_get(h->element, "frames-processed", &processed, NULL);
    fail_unless_equals_uint64(processed, 6);
    fail_unless_equals_int(pop_captcha_messages(bus, messages, 8), 6);
    free_structures(messages, 6);

    /* the same pixels at another place in another frame: unchanged, with the
     * region of this frame */
    for (y = 0; y < hgt; y++)
        memcpy(wide + ((gsize)y * 2 * w + w) * 4, a + (gsize)y * w * 4, (gsize)w * 4);
    g_object_set(h->element, "roi-x", w, NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, 2 * w, hgt);
    out = push_pull(h, make_buffer(wide, 2 * w, hgt, GST_VIDEO_FORMAT_BGRx));
    fail_unless_equals_int(results_of(out, r, 2), 1);
    fail_unless_equals_string(r[0].text, ref_a.text);
    fail_unless(r[0].confidence == ref_a.confidence);
    fail_unless_equals_int(r[0].x, w);
    gst_buffer_unref(out);
    g_object_get(h->element, "frames-unchanged", &unchanged, NULL);
    fail_unless_equals_uint64(unchanged, 4);

    /* off: the network runs on every frame */
    g_object_set(h->element, "skip-unchanged", FALSE, NULL);
    for (i = 0; i < 2; i++) {
        out = push_pull(h, make_buffer(wide, 2 * w, hgt, GST_VIDEO_FORMAT_BGRx));
        fail_unless_equals_int(results_of(out, r, 2), 1);
        fail_unless(r[0].confidence == ref_a.confidence);
        gst_buffer_unref(out);
    }
    g_object_get(h->element, "frames-unchanged", &unchanged, "frames-processed", &processed, NULL);
    fail_unless_equals_uint64(unchanged, 4);
    fail_unless_equals_uint64(processed, 9);
    pop_captcha_messages(bus, messages, 8);
    free_structures(messages, 3);
    harness_teardown_with_bus(h, bus);
    g_free(a);
    g_free(b);
    g_free(wide);
}

GST_END_TEST;

/* The upstream regions "plate" at (x[i], y[i]) of a 640x360 frame, as they
 * are added to its buffer. */
static GstBuffer *frame_with_regions(const guint8 *frame, guint n, const guint *x, const guint *y)
{
    GstBuffer *in = make_buffer(frame, 640, 360, GST_VIDEO_FORMAT_BGRx);
    guint i;

    for (i = 0; i < n; i++)
        add_upstream_region(in, "plate", (gint)i, x[i], y[i], PICTURE_WIDTH, PICTURE_HEIGHT);
    return in;
}

/* skip-unchanged compares with the previous frame read, also when that frame
 * was read without the comparison (more than 64 regions, or skip-unchanged
 * off then): a frame equal to an earlier one, with another between them, is
 * not unchanged (the kept input was that of the earlier frame, so the count
 * took it as unchanged); nor is one after a frame read with skip-unchanged
 * off, whose input and logits were not kept. */
GST_START_TEST(test_skip_unchanged_previous)
{
    guint8 *a = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    guint8 *b = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 2, FALSE);
    guint8 *frame = make_frame(640, 360, 9);
    Result ref_a = read_once(a, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    guint x[65], y[65], i;
    const guint bx = 300, by = 200;
    GstHarness *h;
    guint64 unchanged;
    Result r[2];
    GstBuffer *out;
    /* per step: regions (1: a, or b with b; 65: a and b in turn), skip-unchanged, and
     * frames-unchanged after it */
    const struct {
        guint regions;
        gboolean skip, b;
        guint64 unchanged;
    } steps[] = {
        {1, TRUE, FALSE, 0}, {65, TRUE, FALSE, 0}, {1, TRUE, FALSE, 0},
        {1, TRUE, FALSE, 1}, {1, FALSE, TRUE, 1},  {1, TRUE, FALSE, 1},
        {1, TRUE, FALSE, 2}, {1, FALSE, FALSE, 2}, {1, TRUE, FALSE, 2},
    };

    paste(frame, 640, a, PICTURE_WIDTH, PICTURE_HEIGHT, 20, 30);
    paste(frame, 640, b, PICTURE_WIDTH, PICTURE_HEIGHT, bx, by);
    for (i = 0; i < 65; i++) {
        x[i] = i % 2 ? bx : 20;
        y[i] = i % 2 ? by : 30;
    }
    h = harness_new(NULL, "roi-type", "plate", NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, 640, 360);
    for (i = 0; i < G_N_ELEMENTS(steps); i++) {
        g_object_set(h->element, "skip-unchanged", steps[i].skip, NULL);
        out = push_pull(h, steps[i].b ? frame_with_regions(frame, 1, &bx, &by)
                                      : frame_with_regions(frame, steps[i].regions, x, y));
        if (steps[i].regions == 1 && !steps[i].b) {
            fail_unless_equals_int(results_of(out, r, 2), 1);
            fail_unless_equals_string(r[0].text, ref_a.text);
        }
        gst_buffer_unref(out);
        g_object_get(h->element, "frames-unchanged", &unchanged, NULL);
        fail_unless(unchanged == steps[i].unchanged,
                    "step %u: frames-unchanged %" G_GUINT64_FORMAT ", expected %" G_GUINT64_FORMAT,
                    i, unchanged, steps[i].unchanged);
    }
    gst_harness_teardown(h);
    g_free(a);
    g_free(b);
    g_free(frame);
}

GST_END_TEST;

/* A non-flushing seek (or a segment seek looping back) starts a new segment
 * without a flush: the frames after it are new content as after a flushing
 * seek, so the first is read (no result crosses the seek), counting restarts
 * and, with message-on-change, it posts. The same segment again, or one that
 * only learns its stop, changes nothing. */
GST_START_TEST(test_new_segment)
{
    guint8 *a = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    guint8 *b = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 2, FALSE);
    Result ref_a = read_once(a, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    Result ref_b = read_once(b, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    /* per step: a new segment starting there first (-1: none, -2: the same one again,
     * -3: the same one with a stop), the picture, and the reading expected */
    const struct {
        gint segment;
        const guint8 *picture;
        const Result *expected;
        gboolean reused;
    } steps[] = {
        {-1, a, &ref_a, FALSE}, {10, b, &ref_b, FALSE}, {-1, a, &ref_b, TRUE},
        {-2, a, &ref_b, TRUE},  {20, b, &ref_b, FALSE}, {-3, a, &ref_b, TRUE},
    };
    GstStructure *messages[8];
    GstSegment segment;
    GstHarness *h;
    GstBus *bus;
    guint i;

    fail_if(strcmp(ref_a.text, ref_b.text) == 0);
    h = harness_new(&bus, "interval", 3, "message-on-change", TRUE, NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
    gst_segment_init(&segment, GST_FORMAT_TIME);
    for (i = 0; i < G_N_ELEMENTS(steps); i++) {
        GstBuffer *in = make_buffer(steps[i].picture, PICTURE_WIDTH, PICTURE_HEIGHT,
                                    GST_VIDEO_FORMAT_BGRx);
        GstBuffer *out;
        Result r[2];

        if (steps[i].segment >= 0) {
            segment.start = segment.position = steps[i].segment * GST_SECOND;
            segment.time = segment.start;
        } else if (steps[i].segment == -3) {
            segment.stop = segment.start + 100 * GST_SECOND;
        }
        if (steps[i].segment != -1)
            fail_unless(gst_harness_push_event(h, gst_event_new_segment(&segment)));
        GST_BUFFER_PTS(in) = segment.start + i * GST_MSECOND;
        out = push_pull(h, in);
        fail_unless_equals_int(results_of(out, r, 2), 1);
        fail_unless(strcmp(r[0].text, steps[i].expected->text) == 0,
                    "step %u: text \"%s\", expected \"%s\"", i, r[0].text,
                    steps[i].expected->text);
        fail_unless(r[0].reused == steps[i].reused, "step %u: reused %d", i, r[0].reused);
        gst_buffer_unref(out);
    }
    /* message-on-change: steps 0 and 1 change the text; step 4 is the first after a seek */
    fail_unless_equals_int(pop_captcha_messages(bus, messages, 8), 3);
    free_structures(messages, 3);
    harness_teardown_with_bus(h, bus);
    g_free(a);
    g_free(b);
}

GST_END_TEST;

static guint run_message_sequence(gboolean message, gboolean on_change, GstStructure **messages,
                                  guint max, Result *ref_a, Result *ref_b)
{
    guint8 *a = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    guint8 *b = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 2, FALSE);
    const guint8 *shown[5] = {a, a, b, b, a};
    GstHarness *h;
    GstBus *bus;
    guint i, n;

    *ref_a = read_once(a, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    *ref_b = read_once(b, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    fail_if(strcmp(ref_a->text, ref_b->text) == 0);
    h = harness_new(&bus, "message", message, "message-on-change", on_change, NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
    for (i = 0; i < 5; i++) {
        GstBuffer *in = make_buffer(shown[i], PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
        GST_BUFFER_PTS(in) = i * GST_SECOND;
        GST_BUFFER_DURATION(in) = GST_SECOND;
        gst_buffer_unref(push_pull(h, in));
    }
    n = pop_captcha_messages(bus, messages, max);
    harness_teardown_with_bus(h, bus);
    g_free(a);
    g_free(b);
    return n;
}

GST_START_TEST(test_message)
{
    GstStructure *messages[8];
    Result ref_a, ref_b;
    const gchar *texts[5];
    guint i;

    fail_unless_equals_int(run_message_sequence(TRUE, FALSE, messages, 8, &ref_a, &ref_b), 5);
    texts[0] = texts[1] = texts[4] = ref_a.text;
    texts[2] = texts[3] = ref_b.text;
    for (i = 0; i < 5; i++) {
        const GstStructure *r = message_result(messages[i], 0);
        guint64 timestamp, running_time, stream_time;
        gint width, height;
        gdouble confidence;

        fail_unless(gst_structure_get_uint64(messages[i], "timestamp", &timestamp));
        fail_unless(gst_structure_get_uint64(messages[i], "running-time", &running_time));
        fail_unless(gst_structure_get_uint64(messages[i], "stream-time", &stream_time));
        fail_unless_equals_uint64(timestamp, i * GST_SECOND);
        fail_unless_equals_uint64(running_time, i * GST_SECOND);
        fail_unless_equals_uint64(stream_time, i * GST_SECOND);
        fail_unless_equals_string(gst_structure_get_string(r, "text"), texts[i]);
        fail_unless(gst_structure_get_double(r, "confidence", &confidence));
        fail_unless(
            fabs(confidence - (texts[i] == ref_a.text ? ref_a.confidence : ref_b.confidence)) <
            1e-5 * confidence);
        fail_unless(gst_structure_get_int(r, "width", &width));
        fail_unless(gst_structure_get_int(r, "height", &height));
        fail_unless_equals_int(width, PICTURE_WIDTH);
        fail_unless_equals_int(height, PICTURE_HEIGHT);
    }
    free_structures(messages, 5);
}

GST_END_TEST;

GST_START_TEST(test_message_on_change)
{
    GstStructure *messages[8];
    Result ref_a, ref_b;
    guint64 timestamp;
    guint i;
    /* frames a a b b a: the text changes at frames 0, 2 and 4 */
    const guint64 frames[3] = {0, 2, 4};

    fail_unless_equals_int(run_message_sequence(TRUE, TRUE, messages, 8, &ref_a, &ref_b), 3);
    for (i = 0; i < 3; i++) {
        gboolean changed;
        fail_unless(gst_structure_get_uint64(messages[i], "timestamp", &timestamp));
        fail_unless_equals_uint64(timestamp, frames[i] * GST_SECOND);
        fail_unless_equals_string(gst_structure_get_string(message_result(messages[i], 0), "text"),
                                  i == 1 ? ref_b.text : ref_a.text);
        fail_unless(gst_structure_get_boolean(message_result(messages[i], 0), "changed", &changed));
        fail_unless(changed);
    }
    free_structures(messages, 3);

    fail_unless_equals_int(run_message_sequence(FALSE, FALSE, messages, 8, &ref_a, &ref_b), 0);

    /* the same text after a caps change (framerate, then size) is no change; after a
     * flushing seek the first frame posts */
    {
        guint8 *a = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
        guint8 *wide = make_frame(2 * PICTURE_WIDTH, PICTURE_HEIGHT, 1);
        GstHarness *h;
        GstBus *bus;
        GstSegment segment;
        gchar *caps;

        paste(wide, 2 * PICTURE_WIDTH, a, PICTURE_WIDTH, PICTURE_HEIGHT, 0, 0);
        h = harness_new(&bus, "message-on-change", TRUE, "roi-width", PICTURE_WIDTH, NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        gst_buffer_unref(push_pull(
            h, make_buffer(a, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx)));
        fail_unless_equals_int(pop_captcha_messages(bus, messages, 8), 1);
        free_structures(messages, 1);
        caps = g_strdup_printf("video/x-raw,format=BGRx,width=%d,height=%d,framerate=5/1",
                               PICTURE_WIDTH, PICTURE_HEIGHT);
        gst_harness_set_src_caps_str(h, caps);
        g_free(caps);
        gst_buffer_unref(push_pull(
            h, make_buffer(a, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx)));
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, 2 * PICTURE_WIDTH, PICTURE_HEIGHT);
        gst_buffer_unref(push_pull(
            h, make_buffer(wide, 2 * PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx)));
        fail_unless_equals_int(pop_captcha_messages(bus, messages, 8), 0);
        fail_unless(gst_harness_push_event(h, gst_event_new_flush_start()));
        fail_unless(gst_harness_push_event(h, gst_event_new_flush_stop(TRUE)));
        gst_segment_init(&segment, GST_FORMAT_TIME);
        fail_unless(gst_harness_push_event(h, gst_event_new_segment(&segment)));
        gst_buffer_unref(push_pull(
            h, make_buffer(wide, 2 * PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx)));
        fail_unless_equals_int(pop_captcha_messages(bus, messages, 8), 1);
        fail_unless_equals_string(gst_structure_get_string(message_result(messages[0], 0), "text"),
                                  ref_a.text);
        free_structures(messages, 1);
        harness_teardown_with_bus(h, bus);
        g_free(a);
        g_free(wide);
    }
}

GST_END_TEST;

/* message-on-change: a region whose result goes away (no longer among the
 * upstream regions, or dropped by min-confidence, which counts as no text) is
 * a change: the message lists the results that remain, none of them marked
 * changed; the result back again is changed. (As documented: the element
 * comment's `changed`, the message-on-change property and the README.) */
static guint push_regions(GstHarness *h, GstBus *bus, const guint8 *frame, gint fw, gint fh,
                          guint regions, GstStructure **messages)
{
    GstBuffer *in = make_buffer(frame, fw, fh, GST_VIDEO_FORMAT_BGRx);

    add_upstream_region(in, "plate", 0, 0, 0, PICTURE_WIDTH, PICTURE_HEIGHT);
    if (regions > 1)
        add_upstream_region(in, "plate", 0, PICTURE_WIDTH, 0, PICTURE_WIDTH, PICTURE_HEIGHT);
    gst_buffer_unref(push_pull(h, in));
    return pop_captcha_messages(bus, messages, 2);
}

static gboolean result_changed(const GstStructure *message, guint index)
{
    gboolean changed = FALSE;

    fail_unless(gst_structure_get_boolean(message_result(message, index), "changed", &changed));
    return changed;
}

GST_START_TEST(test_message_on_change_gone)
{
    const gint fw = 2 * PICTURE_WIDTH, fh = PICTURE_HEIGHT;
    guint8 *a, *b;
    guint8 *frame = make_frame(fw, fh, 3);
    Result ref_a, ref_b;
    GstStructure *messages[2];
    GstHarness *h;
    GstBus *bus;

    make_two_pictures(&a, &b, &ref_a, &ref_b);
    fail_if(ref_a.confidence == ref_b.confidence);
    paste(frame, fw, a, PICTURE_WIDTH, PICTURE_HEIGHT, 0, 0);
    paste(frame, fw, b, PICTURE_WIDTH, PICTURE_HEIGHT, PICTURE_WIDTH, 0);
    h = harness_new(&bus, "roi-type", "plate", "message-on-change", TRUE, NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, fw, fh);

    fail_unless_equals_int(push_regions(h, bus, frame, fw, fh, 2, messages), 1);
    free_structures(messages, 1);
    fail_unless_equals_int(push_regions(h, bus, frame, fw, fh, 2, messages), 0);

    /* the second region went away: posted, the first unchanged */
    fail_unless_equals_int(push_regions(h, bus, frame, fw, fh, 1, messages), 1);
    fail_unless_equals_int(gst_value_list_get_size(gst_structure_get_value(messages[0], "results")),
                           1);
    fail_unless_equals_string(gst_structure_get_string(message_result(messages[0], 0), "text"),
                              ref_a.text);
    fail_if(result_changed(messages[0], 0));
    free_structures(messages, 1);
    /* back: changed */
    fail_unless_equals_int(push_regions(h, bus, frame, fw, fh, 2, messages), 1);
    fail_if(result_changed(messages[0], 0));
    fail_unless(result_changed(messages[0], 1));
    free_structures(messages, 1);

    /* the less confident result dropped by min-confidence: posted with the other
     * one only, unchanged; accepted again, the same text is changed */
    g_object_set(h->element, "min-confidence", sqrt(ref_a.confidence * ref_b.confidence), NULL);
    fail_unless_equals_int(push_regions(h, bus, frame, fw, fh, 2, messages), 1);
    fail_unless_equals_int(gst_value_list_get_size(gst_structure_get_value(messages[0], "results")),
                           1);
    fail_unless_equals_string(gst_structure_get_string(message_result(messages[0], 0), "text"),
                              ref_a.confidence > ref_b.confidence ? ref_a.text : ref_b.text);
    fail_if(result_changed(messages[0], 0));
    free_structures(messages, 1);
    g_object_set(h->element, "min-confidence", 0.0, NULL);
    fail_unless_equals_int(push_regions(h, bus, frame, fw, fh, 2, messages), 1);
    fail_unless(result_changed(messages[0], 0) != result_changed(messages[0], 1));
    fail_unless(result_changed(messages[0], ref_a.confidence > ref_b.confidence ? 1 : 0));
    free_structures(messages, 1);

    harness_teardown_with_bus(h, bus);
    g_free(a);
    g_free(b);
    g_free(frame);
}

GST_END_TEST;

/* Results below min-confidence are neither attached nor posted. */
GST_START_TEST(test_min_confidence)
{
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    Result reference = read_once(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    gdouble thresholds[2] = {reference.confidence * 0.5, reference.confidence * 2.0};
    guint i;

    fail_unless(thresholds[1] < 1.0);
    for (i = 0; i < 2; i++) {
        GstStructure *messages[2];
        GstHarness *h;
        GstBus *bus;
        GstBuffer *out;
        Result r[2];
        guint expected = i == 0 ? 1 : 0;

        h = harness_new(&bus, "min-confidence", thresholds[i], NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        out = push_pull(h,
                        make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx));
        fail_unless_equals_int(results_of(out, r, 2), expected);
        fail_unless_equals_int(pop_captcha_messages(bus, messages, 2), expected);
        free_structures(messages, expected);
        gst_buffer_unref(out);
        harness_teardown_with_bus(h, bus);
    }
    g_free(picture);
}

GST_END_TEST;

/* Starts a captchaocr with the given model (NULL: none set) and device;
 * returns the error message of the failed start, or NULL when it started.
 * *warnings receives the number of warnings posted. */
static GstMessage *try_start(const gchar *model, gint device, guint *warnings)
{
    GstElement *element = gst_element_factory_make("captchaocr", NULL);
    GstBus *bus = gst_bus_new();
    GstStateChangeReturn ret;
    GstMessage *error;

    g_object_set(element, "model", model, "device", device, NULL);
    gst_element_set_bus(element, bus);
    ret = gst_element_set_state(element, GST_STATE_PAUSED);
    error = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
    if (ret == GST_STATE_CHANGE_FAILURE)
        fail_unless(error != NULL, "start failed without an error message");
    else
        fail_unless(error == NULL, "error message but the start succeeded");
    gst_element_set_state(element, GST_STATE_NULL);
    if (warnings)
        *warnings = count_messages(bus, GST_MESSAGE_WARNING);
    gst_element_set_bus(element, NULL);
    gst_object_unref(bus);
    gst_object_unref(element);
    return error;
}

/* Checks msg (consumed) is a resource error of code whose text holds
 * every needle of the NULL-terminated list. */
G_GNUC_NULL_TERMINATED static void assert_error(GstMessage *msg, GstResourceError code,
                                                const gchar *needle, ...)
{
    GError *error = NULL;
    gchar *debug = NULL;
    va_list args;

    fail_unless(msg != NULL, "expected an error");
    gst_message_parse_error(msg, &error, &debug);
    GST_INFO("error: %s", error->message);
    fail_unless(error->domain == GST_RESOURCE_ERROR, "domain %s", g_quark_to_string(error->domain));
    fail_unless(error->code == (gint)code, "code %d, expected %d: %s", error->code, code,
                error->message);
    va_start(args, needle);
    for (; needle; needle = va_arg(args, const gchar *))
        fail_unless(strstr(error->message, needle) != NULL, "\"%s\" does not name \"%s\"",
                    error->message, needle);
    va_end(args);
    g_error_free(error);
    g_free(debug);
    gst_message_unref(msg);
}

GST_START_TEST(test_error_model)
{
    GstMessage *msg;

    assert_error(try_start(missing_path, 1, NULL), GST_RESOURCE_ERROR_OPEN_READ, missing_path,
                 NULL);

    msg = try_start(truncated_header_path, 1, NULL);
    fail_unless(msg != NULL);
    {
        GError *error = NULL;
        gst_message_parse_error(msg, &error, NULL);
        fail_unless(error->domain == GST_RESOURCE_ERROR);
        fail_unless(error->code == GST_RESOURCE_ERROR_OPEN_READ ||
                    error->code == GST_RESOURCE_ERROR_SETTINGS);
        fail_unless(strstr(error->message, truncated_header_path) != NULL, "%s", error->message);
        g_error_free(error);
        gst_message_unref(msg);
    }
    msg = try_start(truncated_data_path, 1, NULL);
    fail_unless(msg != NULL);
    {
        GError *error = NULL;
        gst_message_parse_error(msg, &error, NULL);
        fail_unless(error->domain == GST_RESOURCE_ERROR);
        fail_unless(strstr(error->message, truncated_data_path) != NULL, "%s", error->message);
        g_error_free(error);
        gst_message_unref(msg);
    }
    /* length 4 in the metadata: fc_layers.0.weight should be [144, 1024] */
    assert_error(try_start(wrong_shape_path, 1, NULL), GST_RESOURCE_ERROR_SETTINGS, "fc_layers.0",
                 NULL);

    /* a good model after a bad one, set while stopped */
    fail_unless(try_start(model_path, 1, NULL) == NULL);
}

GST_END_TEST;

/* Error text from a file (a tensor name with ESC and a newline) and a path in
 * another encoding reach the bus as valid UTF-8 with control bytes escaped, as
 * the command-line tools print them: raw, the ESC recoloured gst-launch's
 * terminal and the bytes failed to decode in a Python bus handler. */
GST_START_TEST(test_error_text_printable)
{
    static const gchar header[] = "{\"evil\\u001b[31m\\nname\":{\"dtype\":\"F16\","
                                  "\"shape\":[2],\"data_offsets\":[0,4]}}";
    static const gchar c1_header[] = "{\"evil\\u009b31m\":{\"dtype\":\"F16\","
                                     "\"shape\":[2],\"data_offsets\":[0,4]}}";
    gchar c1_bytes[8 + sizeof c1_header - 1 + 4] = {0};
    guint64 c1_size;
    gchar *bytes, *path, *foreign;
    guint64 size = sizeof header - 1; /* little-endian hosts */
    GError *error = NULL;
    GstMessage *msg;
    const gchar *c;

    bytes = g_malloc0(8 + size + 4);
    memcpy(bytes, &size, 8);
    memcpy(bytes + 8, header, size);
    c1_size = sizeof c1_header - 1;
    memcpy(c1_bytes, &c1_size, 8);
    memcpy(c1_bytes + 8, c1_header, c1_size);
    path = g_build_filename(tmpdir, "evil.safetensors", NULL);
    fail_unless(g_file_set_contents(path, bytes, 8 + size + 4, NULL));
    msg = try_start(path, 1, NULL);
    fail_unless(msg != NULL);
    gst_message_parse_error(msg, &error, NULL);
    fail_unless(strstr(error->message, "evil\\x1b[31m\\nname") != NULL, "%s", error->message);
    fail_unless(strstr(error->message, "F16") != NULL, "%s", error->message);
    for (c = error->message; *c; c++)
        fail_unless((guchar)*c >= 0x20 && *c != 0x7f, "byte 0x%02x in \"%s\"", (guchar)*c,
                    error->message);
    g_clear_error(&error);
    gst_message_unref(msg);
    g_unlink(path);

    /* a C1 control (U+009B, CSI: ESC [ to xterm and VTE in UTF-8) is valid UTF-8 but
     * escaped as its bytes, as ESC is */
    fail_unless(g_file_set_contents(path, c1_bytes, 8 + sizeof c1_header - 1 + 4, NULL));
    msg = try_start(path, 1, NULL);
    fail_unless(msg != NULL);
    gst_message_parse_error(msg, &error, NULL);
    fail_unless(strstr(error->message, "evil\\xc2\\x9b31m") != NULL, "%s", error->message);
    fail_unless(strstr(error->message, "\xc2\x9b") == NULL, "C1 control in \"%s\"", error->message);
    g_clear_error(&error);
    gst_message_unref(msg);
    g_unlink(path);

    /* a Latin-1 name with ESC, missing: OPEN_READ, the bytes replaced or escaped */
    foreign = g_build_filename(tmpdir, "caf\xe9\x1b.safetensors", NULL);
    msg = try_start(foreign, 1, NULL);
    fail_unless(msg != NULL);
    gst_message_parse_error(msg, &error, NULL);
    fail_unless(error->code == GST_RESOURCE_ERROR_OPEN_READ, "%s", error->message);
    fail_unless(g_utf8_validate(error->message, -1, NULL), "not UTF-8: %s", error->message);
    fail_unless(strstr(error->message, "caf\xef\xbf\xbd\\x1b.safetensors") != NULL, "%s",
                error->message);
    g_clear_error(&error);
    gst_message_unref(msg);
    g_free(foreign);
    g_free(path);
    g_free(bytes);
}

GST_END_TEST;

/* Fails unless text is valid UTF-8 without control bytes. */
static void assert_printable(const gchar *text)
{
    const gchar *c;

    fail_unless(g_utf8_validate(text, -1, NULL), "not UTF-8: %s", text);
    for (c = text; *c; c++)
        fail_unless((guchar)*c >= 0x20 && *c != 0x7f, "byte 0x%02x in \"%s\"", (guchar)*c, text);
}

/* The device's error (device=cuda) and fallback warning (auto) carry paths in a CUDA
 * build ($CAPTCHA_CUDA_MODULE, the libraries dlerror names): valid UTF-8 with control
 * bytes escaped, as the model's. (Without CUDA their text is fixed, and passes.) */
GST_START_TEST(test_device_text_printable)
{
    gchar *module = g_build_filename(tmpdir, "caf\xe9\x1b.so", NULL);
    gchar *saved = g_strdup(g_getenv("CAPTCHA_CUDA_MODULE"));
    GstElement *element;
    GstBus *bus;
    GstMessage *msg;
    GError *error = NULL;

    g_setenv("CAPTCHA_CUDA_MODULE", module, TRUE);
    msg = try_start(model_path, 2, NULL);
    if (msg) { /* (a CUDA module loaded by an earlier test stays loaded) */
        gst_message_parse_error(msg, &error, NULL);
        GST_INFO("device=cuda: %s", error->message);
        assert_printable(error->message);
        g_clear_error(&error);
        gst_message_unref(msg);
    }

    element = gst_element_factory_make("captchaocr", NULL);
    bus = gst_bus_new();
    g_object_set(element, "model", model_path, "device", 0, NULL);
    gst_element_set_bus(element, bus);
    fail_unless_equals_int(gst_element_set_state(element, GST_STATE_PAUSED),
                           GST_STATE_CHANGE_SUCCESS);
    while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_WARNING))) {
        gst_message_parse_warning(msg, &error, NULL);
        GST_INFO("device=auto: %s", error->message);
        assert_printable(error->message);
        g_clear_error(&error);
        gst_message_unref(msg);
    }
    gst_element_set_state(element, GST_STATE_NULL);
    gst_element_set_bus(element, NULL);
    gst_object_unref(bus);
    gst_object_unref(element);
    if (saved)
        g_setenv("CAPTCHA_CUDA_MODULE", saved, TRUE);
    else
        g_unsetenv("CAPTCHA_CUDA_MODULE");
    g_free(saved);
    g_free(module);
}

GST_END_TEST;

/* A plain state_dict (no metadata) loads with one INFO message that names
 * the file once and what was assumed. */
GST_START_TEST(test_model_notice)
{
    GstElement *element = gst_element_factory_make("captchaocr", NULL);
    GstBus *bus = gst_bus_new();
    GstMessage *msg;
    GError *error = NULL;
    const gchar *first;

    g_object_set(element, "model", plain_path, "device", 1, NULL);
    gst_element_set_bus(element, bus);
    fail_unless_equals_int(gst_element_set_state(element, GST_STATE_PAUSED),
                           GST_STATE_CHANGE_SUCCESS);
    msg = gst_bus_pop_filtered(bus, GST_MESSAGE_INFO);
    fail_unless(msg != NULL, "no notice for a model without metadata");
    gst_message_parse_info(msg, &error, NULL);
    first = strstr(error->message, plain_path);
    fail_unless(first != NULL, "\"%s\" does not name the file", error->message);
    fail_unless(strstr(first + 1, plain_path) == NULL, "\"%s\" names the file twice",
                error->message);
    fail_unless(strstr(error->message, "no gst-captcha metadata") != NULL, "%s", error->message);
    g_error_free(error);
    gst_message_unref(msg);
    fail_unless_equals_int(count_messages(bus, GST_MESSAGE_INFO), 0);
    gst_element_set_state(element, GST_STATE_NULL);
    gst_element_set_bus(element, NULL);
    gst_object_unref(bus);
    gst_object_unref(element);
}

GST_END_TEST;

/* No model property: $CAPTCHA_MODEL, else the bundled model, else an
 * error naming where it was looked for. */
GST_START_TEST(test_default_model)
{
    const gchar *installed = CAPTCHA_MODEL_INSTALL_DIR "/captcha-default.safetensors";
    const gchar *source = CAPTCHA_SOURCE_DIR "/model/captcha-default.safetensors";
    GstMessage *msg;

    g_setenv("CAPTCHA_MODEL", model_path, TRUE);
    fail_unless(try_start(NULL, 1, NULL) == NULL);
    /* a failure names the file and where its path came from */
    g_setenv("CAPTCHA_MODEL", missing_path, TRUE);
    assert_error(try_start(NULL, 1, NULL), GST_RESOURCE_ERROR_OPEN_READ, missing_path,
                 "$CAPTCHA_MODEL", NULL);
    g_setenv("CAPTCHA_MODEL", wrong_shape_path, TRUE);
    assert_error(try_start(NULL, 1, NULL), GST_RESOURCE_ERROR_SETTINGS, wrong_shape_path,
                 "$CAPTCHA_MODEL", NULL);
    /* the property wins over $CAPTCHA_MODEL, and is not said to come from it */
    msg = try_start(missing_path, 1, NULL);
    fail_unless(msg != NULL);
    {
        GError *error = NULL;
        gst_message_parse_error(msg, &error, NULL);
        fail_unless(strstr(error->message, "CAPTCHA_MODEL") == NULL, "%s", error->message);
        g_error_free(error);
        gst_message_unref(msg);
    }
    g_unsetenv("CAPTCHA_MODEL");
    msg = try_start(NULL, 1, NULL);
    if (g_file_test(installed, G_FILE_TEST_EXISTS) || g_file_test(source, G_FILE_TEST_EXISTS))
        fail_unless(msg == NULL, "the bundled model does not load");
    else
        assert_error(msg, GST_RESOURCE_ERROR_SETTINGS, "captcha-default.safetensors", NULL);
}

GST_END_TEST;

/* device=cuda without a usable GPU is an error at start; auto falls back
 * to the CPU with one warning, not one per start. */
GST_START_TEST(test_device)
{
    captcha_backend *backend = NULL;
    captcha_error err = {0};
    GstElement *element;
    GstBus *bus;
    guint warnings, i;
    gint device;

    /* "gpu", the tools' other name for cuda, sets cuda */
    element = gst_element_factory_make("captchaocr", NULL);
    gst_util_set_object_arg(G_OBJECT(element), "device", "gpu");
    g_object_get(element, "device", &device, NULL);
    fail_unless_equals_int(device, 2);
    gst_object_unref(element);

    if (captcha_backend_create(CAPTCHA_DEVICE_CUDA, 0, 0, &backend, NULL, 0, &err) == CAPTCHA_OK) {
        captcha_backend_destroy(backend);
        fail_unless(try_start(model_path, 2, &warnings) == NULL);
        fail_unless_equals_int(warnings, 0);
        return;
    }
    assert_error(try_start(model_path, 2, NULL), GST_RESOURCE_ERROR_SETTINGS, "cuda", NULL);

    element = gst_element_factory_make("captchaocr", NULL);
    bus = gst_bus_new();
    g_object_set(element, "model", model_path, "device", 0, NULL);
    gst_element_set_bus(element, bus);
    for (i = 0; i < 3; i++) {
        fail_unless_equals_int(gst_element_set_state(element, GST_STATE_PAUSED),
                               GST_STATE_CHANGE_SUCCESS);
        fail_unless_equals_int(gst_element_set_state(element, GST_STATE_NULL),
                               GST_STATE_CHANGE_SUCCESS);
    }
    fail_unless_equals_int(count_messages(bus, GST_MESSAGE_WARNING), 1);
    gst_element_set_bus(element, NULL);
    gst_object_unref(bus);
    gst_object_unref(element);
}

GST_END_TEST;

/* What elements placed after captchaocr leave of its results in GStreamer
 * 1.22 (the caveat of the README and the element's documentation): one that
 * converts the format (videoconvert, which is videoconvertscale there, as
 * videoscale) keeps the region box but drops the "captcha" structure, one
 * that leaves the frame as it is keeps both, videocrop (copying the frame)
 * drops the region. Later GStreamer versions are not checked. */
GST_START_TEST(test_downstream_elements)
{
    struct {
        const gchar *after; /* the elements after captchaocr */
        guint regions;      /* captcha regions left */
        gboolean text;      /* with their "captcha" structure */
    } cases[] = {
        {"videoconvert", 1, TRUE},
        {"videoconvert ! capsfilter caps=video/x-raw,format=I420", 1, FALSE},
        {"videoscale ! capsfilter caps=video/x-raw,width=101,height=25", 1, FALSE},
        {"videocrop left=10", 0, FALSE},
    };
    guint8 *picture;
    guint major, minor, micro, nano, c;

    gst_version(&major, &minor, &micro, &nano);
    if (major != 1 || minor != 22)
        return;
    picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    for (c = 0; c < G_N_ELEMENTS(cases); c++) {
        gchar *description =
            g_strdup_printf("captchaocr device=cpu model=\"%s\" ! %s", model_path, cases[c].after);
        GstHarness *h = gst_harness_new_parse(description);
        GstBuffer *out;
        gpointer state = NULL;
        GstMeta *meta;
        guint regions = 0;

        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        out = push_pull(h,
                        make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx));
        while ((meta = gst_buffer_iterate_meta_filtered(
                    out, &state, GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
            GstVideoRegionOfInterestMeta *roi = (GstVideoRegionOfInterestMeta *)meta;

            if (roi->roi_type != g_quark_from_string("captcha"))
                continue;
            regions++;
            fail_unless((gst_video_region_of_interest_meta_get_param(roi, "captcha") != NULL) ==
                            cases[c].text,
                        "%s: the \"captcha\" structure is%s there", cases[c].after,
                        cases[c].text ? " not" : "");
        }
        fail_unless_equals_int(regions, cases[c].regions);
        gst_buffer_unref(out);
        gst_harness_teardown(h);
        g_free(description);
    }
    g_free(picture);
}

GST_END_TEST;

/* A region entirely outside the frame (or empty): one warning for the
 * stream that says why, no result, buffers still flow. */
GST_START_TEST(test_region_outside)
{
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    struct {
        gint x, width;
        const gchar *roi_type;
        const gchar *needles[3]; /* in the warning */
    } cases[] = {
        /* right of the frame */
        {1000, 50, NULL, {"1000,0 50x50", "outside the 202x50"}},
        /* "to the right edge" from at or beyond the right edge: the
         * configured region is named, not an empty 0-wide one */
        {PICTURE_WIDTH, 0, NULL, {"roi-x=202", "roi-width=0", "outside the 202x50 frame"}},
        {500, 0, NULL, {"roi-x=500", "outside the 202x50 frame"}},
        /* upstream region outside */
        {0, 0, "plate", {"500,10 20x20", "outside the 202x50"}},
    };
    guint c, i;

    for (c = 0; c < G_N_ELEMENTS(cases); c++) {
        GstHarness *h;
        GstBus *bus;
        gchar *warning;

        h = harness_new(&bus, "roi-x", cases[c].x, "roi-width", cases[c].width, "roi-type",
                        cases[c].roi_type, NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        for (i = 0; i < 3; i++) {
            GstBuffer *in =
                make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
            GstBuffer *out;
            Result r[2];

            if (cases[c].roi_type)
                add_upstream_region(in, cases[c].roi_type, 4, 500, 10, 20, 20);
            out = push_pull(h, in);
            fail_unless_equals_int(results_of(out, r, 2), 0);
            gst_buffer_unref(out);
        }
        fail_unless_equals_int(pop_warnings(bus, &warning), 1);
        for (i = 0; i < G_N_ELEMENTS(cases[c].needles) && cases[c].needles[i]; i++)
            fail_unless(strstr(warning, cases[c].needles[i]) != NULL,
                        "warning \"%s\" does not say \"%s\"", warning, cases[c].needles[i]);
        g_free(warning);
        fail_unless_equals_int(count_messages(bus, GST_MESSAGE_ERROR), 0);
        harness_teardown_with_bus(h, bus);
    }
    /* an upstream region beyond G_MAXINT is named with its own coordinates */
    {
        GstHarness *h;
        GstBus *bus;
        GstBuffer *in = make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);

        h = harness_new(&bus, "roi-type", "plate", NULL);
        harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
        add_upstream_region(in, "plate", 4, G_MAXUINT, 10, 20, 20);
        push_expect_unread(h, bus, in, "4294967295,10 20x20");
        harness_teardown_with_bus(h, bus);
    }
    g_free(picture);
}

GST_END_TEST;

/* Caps change mid-stream (size and format): each stage reads as a fresh
 * element reads it. */
GST_START_TEST(test_renegotiation)
{
    struct {
        GstVideoFormat format;
        gint width, height;
        guint32 seed;
    } stages[] = {
        {GST_VIDEO_FORMAT_BGRx, 200, 50, 1}, {GST_VIDEO_FORMAT_RGB, 321, 97, 2},
        {GST_VIDEO_FORMAT_NV12, 160, 40, 3}, {GST_VIDEO_FORMAT_GRAY8, 150, 60, 4},
        {GST_VIDEO_FORMAT_BGRx, 200, 50, 1},
    };
    GstHarness *h = harness_new(NULL, NULL);
    guint s;

    for (s = 0; s < G_N_ELEMENTS(stages); s++) {
        gboolean gray = stages[s].format == GST_VIDEO_FORMAT_GRAY8;
        guint8 *picture = make_picture(stages[s].width, stages[s].height, stages[s].seed, gray);
        Result expected = read_once(picture, stages[s].width, stages[s].height, stages[s].format);
        GstBuffer *out;
        Result r[2];

        harness_set_caps(h, stages[s].format, stages[s].width, stages[s].height);
        out =
            push_pull(h, make_buffer(picture, stages[s].width, stages[s].height, stages[s].format));
        fail_unless_equals_int(results_of(out, r, 2), 1);
        assert_same_reading(&r[0], &expected, "after renegotiation");
        fail_unless_equals_int(r[0].width, stages[s].width);
        fail_unless_equals_int(r[0].height, stages[s].height);
        gst_buffer_unref(out);
        g_free(picture);
    }
    gst_harness_teardown(h);
}

GST_END_TEST;

/* latency and frames-processed follow the frames read. */
GST_START_TEST(test_statistics)
{
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    GstHarness *h = harness_new(NULL, NULL);
    guint64 processed;
    gdouble latency;
    guint i;

    g_object_get(h->element, "frames-processed", &processed, "latency", &latency, NULL);
    fail_unless_equals_uint64(processed, 0);
    fail_unless_equals_float(latency, 0.0);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
    for (i = 0; i < 4; i++)
        gst_buffer_unref(push_pull(
            h, make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx)));
    g_object_get(h->element, "frames-processed", &processed, "latency", &latency, NULL);
    fail_unless_equals_uint64(processed, 4);
    fail_unless(latency > 0.0);
    /* a restart (e.g. with another model) starts latency afresh; the count goes on */
    fail_unless_equals_int(gst_element_set_state(h->element, GST_STATE_READY),
                           GST_STATE_CHANGE_SUCCESS);
    fail_unless_equals_int(gst_element_set_state(h->element, GST_STATE_PLAYING),
                           GST_STATE_CHANGE_SUCCESS);
    g_object_get(h->element, "frames-processed", &processed, "latency", &latency, NULL);
    fail_unless_equals_uint64(processed, 4);
    fail_unless_equals_float(latency, 0.0);
    gst_harness_teardown(h);
    g_free(picture);
}

GST_END_TEST;

/* A buffer that an upstream still running pushes while the element starts
 * again (taken alone to READY and back, to load another model) waits until
 * the new model is set up, then is read with it (not with the old model's
 * length, nor without a model). The start is held at its model notice (an
 * INFO message, handled synchronously in the starting thread) while another
 * thread pushes the buffer. */
typedef struct {
    GstHarness *h;
    GstBuffer *buffer;
    GThread *thread;
    GMutex lock;
    GCond cond;
    gboolean pushed;
    GstFlowReturn flow;
} RestartPush;

static gpointer restart_push_thread(gpointer data)
{
    RestartPush *rp = data;
    GstFlowReturn flow = gst_harness_push(rp->h, rp->buffer);

    g_mutex_lock(&rp->lock);
    rp->flow = flow;
    rp->pushed = TRUE;
    g_cond_broadcast(&rp->cond);
    g_mutex_unlock(&rp->lock);
    return NULL;
}

static GstBusSyncReply push_during_start(G_GNUC_UNUSED GstBus *bus, GstMessage *msg, gpointer data)
{
    RestartPush *rp = data;
    gint64 deadline = g_get_monotonic_time() + G_TIME_SPAN_SECOND;

    if (GST_MESSAGE_TYPE(msg) != GST_MESSAGE_INFO || rp->thread)
        return GST_BUS_PASS;
    rp->thread = g_thread_new("push-during-start", restart_push_thread, rp);
    /* a push let through before the start ends returns at once; one held
     * until then, at the deadline */
    g_mutex_lock(&rp->lock);
    while (!rp->pushed && g_cond_wait_until(&rp->cond, &rp->lock, deadline))
        ;
    g_mutex_unlock(&rp->lock);
    return GST_BUS_PASS;
}

GST_START_TEST(test_restart_while_streaming)
{
    guint8 *picture = make_picture(PICTURE_WIDTH, PICTURE_HEIGHT, 1, FALSE);
    Result expected = read_once(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    RestartPush rp = {0};
    GstHarness *h;
    GstBus *bus;
    GstBuffer *out;
    Result r[2];

    h = harness_new(&bus, "model", short_path, NULL);
    harness_set_caps(h, GST_VIDEO_FORMAT_BGRx, PICTURE_WIDTH, PICTURE_HEIGHT);
    out = push_pull(h, make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx));
    fail_unless_equals_int(results_of(out, r, 2), 1);
    fail_unless_equals_int(strlen(r[0].text), 4);
    gst_buffer_unref(out);
    fail_unless_equals_int(gst_element_set_state(h->element, GST_STATE_READY),
                           GST_STATE_CHANGE_SUCCESS);
    g_object_set(h->element, "model", plain_path, NULL);
    g_mutex_init(&rp.lock);
    g_cond_init(&rp.cond);
    rp.h = h;
    rp.buffer = make_buffer(picture, PICTURE_WIDTH, PICTURE_HEIGHT, GST_VIDEO_FORMAT_BGRx);
    gst_bus_set_sync_handler(bus, push_during_start, &rp, NULL);
    fail_unless_equals_int(gst_element_set_state(h->element, GST_STATE_PLAYING),
                           GST_STATE_CHANGE_SUCCESS);
    fail_unless(rp.thread != NULL, "no notice while the plain model loaded");
    g_thread_join(rp.thread);
    gst_bus_set_sync_handler(bus, NULL, NULL, NULL);
    fail_unless_equals_int(rp.flow, GST_FLOW_OK);
    out = gst_harness_pull(h);
    fail_unless_equals_int(results_of(out, r, 2), 1);
    assert_same_reading(&r[0], &expected, "a buffer pushed during the start");
    fail_unless_equals_int(r[0].chars, 5);
    gst_buffer_unref(out);
    fail_unless_equals_int(count_messages(bus, GST_MESSAGE_ERROR), 0);
    g_mutex_clear(&rp.lock);
    g_cond_clear(&rp.cond);
    harness_teardown_with_bus(h, bus);
    g_free(picture);
}

GST_END_TEST;

/* 200 start/stop cycles (leaks: run under valgrind or ASan in CI). */
GST_START_TEST(test_state_cycles)
{
    GstElement *element = gst_element_factory_make("captchaocr", NULL);
    guint i, cycles = 200;

    if (g_getenv("CAPTCHA_TEST_CYCLES"))
        cycles = atoi(g_getenv("CAPTCHA_TEST_CYCLES"));
    g_object_set(element, "model", model_path, "device", 1, NULL);
    for (i = 0; i < cycles; i++) {
        fail_unless_equals_int(gst_element_set_state(element, GST_STATE_PLAYING),
                               GST_STATE_CHANGE_SUCCESS);
        fail_unless_equals_int(gst_element_set_state(element, GST_STATE_NULL),
                               GST_STATE_CHANGE_SUCCESS);
    }
    gst_object_unref(element);
}

GST_END_TEST;

/* ---- model files ------------------------------------------------------- */

static void write_part(const gchar *path, const gchar *data, gsize size)
{
    GError *error = NULL;

    if (!g_file_set_contents(path, data, size, &error))
        g_error("%s", error->message);
}

static void make_models(void)
{
    captcha_backend *backend = NULL;
    captcha_network *network = NULL;
    captcha_config config;
    captcha_error err = {0};
    gchar *data, *length;
    gsize size;
    guint64 header_size;

    tmpdir = g_dir_make_tmp("captchaocr-test-XXXXXX", NULL);
    g_assert(tmpdir != NULL);
    model_path = g_build_filename(tmpdir, "model.safetensors", NULL);
    truncated_header_path = g_build_filename(tmpdir, "header.safetensors", NULL);
    truncated_data_path = g_build_filename(tmpdir, "data.safetensors", NULL);
    wrong_shape_path = g_build_filename(tmpdir, "shape.safetensors", NULL);
    missing_path = g_build_filename(tmpdir, "missing.safetensors", NULL);
    plain_path = g_build_filename(tmpdir, "plain.safetensors", NULL);
    short_path = g_build_filename(tmpdir, "short.safetensors", NULL);

    captcha_config_reference(&config);
    if (captcha_backend_create(CAPTCHA_DEVICE_CPU, 0, 0, &backend, NULL, 0, &err) != CAPTCHA_OK ||
        captcha_network_create(backend, &config, 1, &network, &err) != CAPTCHA_OK ||
        captcha_model_save(network, model_path, NULL, &err) != CAPTCHA_OK)
        g_error("cannot make the test model: %s", err.message);
    captcha_network_destroy(network);
    config.length = 4;
    if (captcha_network_create(backend, &config, 2, &network, &err) != CAPTCHA_OK ||
        captcha_model_save(network, short_path, NULL, &err) != CAPTCHA_OK)
        g_error("cannot make the 4-character test model: %s", err.message);
    captcha_network_destroy(network);
    captcha_backend_destroy(backend);

    g_assert(g_file_get_contents(model_path, &data, &size, NULL));
    g_assert(size > 8);
    memcpy(&header_size, data, 8); /* little-endian hosts */
    g_assert(header_size + 8 < size);
    /* cut inside the JSON header, and inside the tensor data */
    write_part(truncated_header_path, data, 8 + header_size / 2);
    write_part(truncated_data_path, data, size - 1000);
    /* metadata length 5 -> 4: same bytes, tensors now of the wrong shape */
    length = g_strstr_len(data + 8, header_size, "\"length\":\"5\"");
    if (!length)
        g_error("the model header has no \"length\":\"5\" to edit");
    length[10] = '4';
    write_part(wrong_shape_path, data, size);
    length[10] = '5';
    /* the metadata entry (written first) blanked out: the same weights as a
     * plain PyTorch state_dict, which loads with the reference config and a notice */
    {
        gchar *start = g_strstr_len(data + 8, header_size, "\"__metadata__\":{");
        gchar *end = start ? strchr(start, '}') : NULL;

        if (!end || end[1] != ',')
            g_error("the model header has no \"__metadata__\" entry first");
        memset(start, ' ', end + 2 - start);
    }
    write_part(plain_path, data, size);
    g_free(data);
}

static void remove_models(void)
{
    const gchar *paths[] = {model_path,          truncated_header_path,
                            truncated_data_path, wrong_shape_path,
                            plain_path,          short_path};
    guint i;

    for (i = 0; i < G_N_ELEMENTS(paths); i++)
        g_unlink(paths[i]);
    g_rmdir(tmpdir);
}

static Suite *captchaocr_suite(void)
{
    Suite *s = suite_create("captchaocr");
    TCase *tc = tcase_create("general");

    /* valgrind multiplies the time: CK_TIMEOUT_MULTIPLIER scales this */
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    tcase_add_test(tc, test_formats);
    tcase_add_test(tc, test_yuv_colorimetry);
    tcase_add_test(tc, test_stride);
    tcase_add_test(tc, test_short_buffer);
    tcase_add_test(tc, test_meta_mismatch);
    tcase_add_test(tc, test_qos);
    tcase_add_test(tc, test_threads);
    tcase_add_test(tc, test_frame_untouched);
    tcase_add_test(tc, test_roi_property);
    tcase_add_test(tc, test_roi_atomic);
    tcase_add_test(tc, test_roi_meta);
    tcase_add_test(tc, test_roi_order);
    tcase_add_test(tc, test_roi_many);
    tcase_add_test(tc, test_roi_ids);
    tcase_add_test(tc, test_crop_meta);
    tcase_add_test(tc, test_caps_size_limit);
    tcase_add_test(tc, test_gap);
    tcase_add_test(tc, test_interval);
    tcase_add_test(tc, test_new_segment);
    tcase_add_test(tc, test_message);
    tcase_add_test(tc, test_message_on_change);
    tcase_add_test(tc, test_message_on_change_gone);
    tcase_add_test(tc, test_min_confidence);
    tcase_add_test(tc, test_error_model);
    tcase_add_test(tc, test_error_text_printable);
    tcase_add_test(tc, test_device_text_printable);
    tcase_add_test(tc, test_model_notice);
    tcase_add_test(tc, test_default_model);
    tcase_add_test(tc, test_device);
    tcase_add_test(tc, test_downstream_elements);
    tcase_add_test(tc, test_region_outside);
    tcase_add_test(tc, test_renegotiation);
    tcase_add_test(tc, test_statistics);
    tcase_add_test(tc, test_skip_unchanged);
    tcase_add_test(tc, test_skip_unchanged_previous);
    tcase_add_test(tc, test_restart_while_streaming);
    tcase_add_test(tc, test_state_cycles);
    return s;
}

int main(int argc, char **argv)
{
    int failed;

    gst_check_init(&argc, &argv);
    make_models();
    failed = gst_check_run_suite(captchaocr_suite(), "captchaocr", __FILE__);
    remove_models();
    return failed ? 1 : 0;
}
