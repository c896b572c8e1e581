/* GStreamer captchaocr element: reads captcha text in video frames.
 *
 * SPDX-License-Identifier: MIT
 */

/**
 * SECTION:element-captchaocr
 * @title: captchaocr
 *
 * Reads the text of captchas (short distorted text images) in video frames
 * with the residual CNN of a self-describing model file (safetensors with the
 * charset, code length, input size and normalization in its metadata, see
 * model/model_file.h).
 *
 * The element is an in-place pass-through filter: frames are never modified
 * (they are mapped read-only, no pixel is copied). Frames may be up to 65536
 * pixels wide and high (larger caps do not negotiate). Each result is
 * attached to the buffer as a #GstVideoRegionOfInterestMeta of type
 * "captcha" whose box is the region that was read (after clipping to the
 * frame), with one
 * #GstStructure parameter named "captcha":
 *
 * - `text` (string): the code read;
 * - `label` (string): the same as `text`, for elements that draw labels;
 * - `confidence` (double, 0..1): the product of the per-character
 *   confidences;
 * - `char-confidences` (#GstValueArray of double): per position, the softmax
 *   probability of the chosen character;
 * - `reused` (boolean): %TRUE on frames skipped by #GstCaptchaOcr:interval,
 *   which carry the results of the last frame that was read.
 *
 * The meta's `id` is set uniquely within the buffer (GStreamer 1.22 leaves
 * every id at 0 otherwise): results get ids above the largest id of the
 * region metas already on the buffer, or, when those would pass G_MAXINT,
 * the smallest non-negative ids no region meta on the buffer has (ids are
 * never negative and ascend in the order of the results). `parent_id` is
 * the id of the upstream region that was read (#GstCaptchaOcr:roi-type),
 * else -1. On a frame whose results are `reused` that is the upstream id on
 * the frame that was read: it names a region of this buffer only when the
 * upstream element keeps its ids from frame to frame (a tracker does).
 *
 * NV12 and I420 frames are converted to BGR with the caps' colorimetry
 * (its matrix, BT.601, BT.709, BT.2020, FCC or SMPTE 240M, and its range,
 * limited or full), as videoconvert converts them.
 *
 * Which region is read: with #GstCaptchaOcr:roi-type unset, the rectangle of
 * the roi-x, roi-y, roi-width and roi-height properties (by default the
 * whole frame); with #GstCaptchaOcr:roi-type set, every upstream
 * #GstVideoRegionOfInterestMeta of that type, each giving its own result
 * (the regions of one frame are read in batches of up to 64, so that any
 * number of them takes bounded memory; the results, their metas
 * and the message's list follow the order in which the upstream metas were
 * added to the buffer). The region properties set in one g_object_set() (or
 * between g_object_freeze_notify() and g_object_thaw_notify()) take effect
 * together, even while frames stream: no frame is read with some of them
 * old and some new. A region partly outside
 * the frame is clipped; one entirely outside (or empty) gives one warning
 * on the bus and no result, and the stream goes on.
 *
 * Unless #GstCaptchaOcr:message is %FALSE, each frame that was read and gave
 * at least one result posts an element message named "captcha" with the
 * fields `timestamp`, `stream-time`, `running-time`, `duration` (all
 * #guint64, nanoseconds, GST_CLOCK_TIME_NONE when unknown) and `results`, a
 * #GstValueList of structures named "captcha-result" with `text` (string),
 * `confidence` (double), `x`, `y`, `width`, `height` (int, frame pixels, the
 * region read), `id` and `parent-id` (int, as in the meta) and `changed`
 * (boolean, the text differs from the previous frame read in the same
 * region position; a result that #GstCaptchaOcr:min-confidence dropped, or
 * a position that frame did not have, counts as no text there).
 *
 * Frames that downstream's QoS events mark late pass on unread (see
 * #GstBaseTransform:qos, which here never drops a frame, nor marks the
 * late one DISCONT as the base class does after a drop).
 *
 * Buffers flagged GST_BUFFER_FLAG_GAP (no meaningful content) pass through
 * unread: no meta, no message, not counted by #GstCaptchaOcr:interval or
 * #GstCaptchaOcr:frames-processed, and #GstCaptchaOcr:message-on-change
 * compares the next frame read with the last frame read before the gap.
 *
 * A #GstVideoCropMeta on the buffer (videocrop does this, instead of
 * copying, when downstream accepts the meta) is honoured: the frame read is
 * the crop rectangle, the frame the caps describe. The roi-* properties,
 * the upstream regions of #GstCaptchaOcr:roi-type and the regions reported
 * in the metas and messages are all in the coordinates of that frame.
 *
 * Known limitation of GStreamer 1.22: a `videoscale` (or other element that
 * scales the frame), or a `videoconvert` that changes the format (both are
 * videoconvertscale there, which transforms the metas as a scale), placed
 * after captchaocr transforms the region box of the meta but drops its
 * parameters (the "captcha" structure), and a `videocrop` that copies the
 * frame drops the region metas, so read the meta before them, or use the
 * bus message.
 *
 * ## Example launch lines
 * |[
 * gst-launch-1.0 -m filesrc location=captcha.png ! decodebin ! videoconvert ! \
 *     imagefreeze num-buffers=1 ! captchaocr model=captcha.safetensors ! fakesink
 * ]| Reads one image file and prints the "captcha" message.
 * |[
 * gst-launch-1.0 -m ximagesrc use-damage=false ! video/x-raw,framerate=5/1 ! \
 *     captchaocr roi-x=400 roi-y=300 roi-width=200 roi-height=50 \
 *     message-on-change=true ! fakesink
 * ]| Reads a fixed screen region five times a second and posts a message
 * whenever its text changes.
 */

#include "captcha-build-config.h"

#include "gstcaptchaocr.h"

#include <string.h>

#include "backend.h"
#include "decode.h"
#include "model_file.h"
#include "network.h"
#include "preprocess.h"

GST_DEBUG_CATEGORY_STATIC (gst_captcha_ocr_debug);
#define GST_CAT_DEFAULT gst_captcha_ocr_debug

/* The device to run the network on (the values match captcha_device). */
typedef enum
{
  GST_CAPTCHA_OCR_DEVICE_AUTO = CAPTCHA_DEVICE_AUTO,
  GST_CAPTCHA_OCR_DEVICE_CPU = CAPTCHA_DEVICE_CPU,
  GST_CAPTCHA_OCR_DEVICE_CUDA = CAPTCHA_DEVICE_CUDA,
} GstCaptchaOcrDevice;

#define GST_TYPE_CAPTCHA_OCR_DEVICE (gst_captcha_ocr_device_get_type ())
static GType
gst_captcha_ocr_device_get_type (void)
{
  static GType device_type = 0;
  static const GEnumValue devices[] = {
    {GST_CAPTCHA_OCR_DEVICE_AUTO,
        "CUDA when a GPU is usable, else the CPU (with a warning)", "auto"},
    {GST_CAPTCHA_OCR_DEVICE_CPU, "The CPU (oneDNN)", "cpu"},
    {GST_CAPTCHA_OCR_DEVICE_CUDA, "A CUDA GPU (see gpu-id); an error when "
          "none is usable", "cuda"},
    /* the tools' other name for cuda; reads back as cuda (the first nick) */
    {GST_CAPTCHA_OCR_DEVICE_CUDA, "Same as cuda", "gpu"},
    {0, NULL, NULL},
  };

  if (g_once_init_enter (&device_type)) {
    GType type = g_enum_register_static ("GstCaptchaOcrDevice", devices);
    g_once_init_leave (&device_type, type);
  }
  return device_type;
}

/* The type of the region metas this element attaches. */
#define CAPTCHA_ROI_TYPE "captcha"
/* Most regions read as one batch: the network's memory grows with the batch
 * (about 1-3 MiB a region), so the regions of a frame are read in batches of
 * at most this many, whatever their number. */
#define MAX_BATCH_REGIONS 64
/* Number of recent frames the latency property averages. */
#define LATENCY_WINDOW 32

#define DEFAULT_MODEL NULL
#define DEFAULT_DEVICE GST_CAPTCHA_OCR_DEVICE_AUTO
#define DEFAULT_GPU_ID 0
#define DEFAULT_THREADS 0
#define DEFAULT_ROI_X 0
#define DEFAULT_ROI_Y 0
#define DEFAULT_ROI_WIDTH 0
#define DEFAULT_ROI_HEIGHT 0
#define DEFAULT_ROI_TYPE NULL
#define DEFAULT_INTERVAL 1
#define DEFAULT_MESSAGE TRUE
#define DEFAULT_MESSAGE_ON_CHANGE FALSE
#define DEFAULT_MIN_CONFIDENCE 0.0
#define DEFAULT_LATENCY 0.0
#define DEFAULT_FRAMES_PROCESSED 0
#define DEFAULT_SKIP_UNCHANGED TRUE

enum
{
  PROP_0,
  PROP_MODEL,
  PROP_DEVICE,
  PROP_GPU_ID,
  PROP_THREADS,
  PROP_ROI_X,
  PROP_ROI_Y,
  PROP_ROI_WIDTH,
  PROP_ROI_HEIGHT,
  PROP_ROI_TYPE,
  PROP_INTERVAL,
  PROP_MESSAGE,
  PROP_MESSAGE_ON_CHANGE,
  PROP_MIN_CONFIDENCE,
  PROP_LATENCY,
  PROP_FRAMES_PROCESSED,
  PROP_QOS,
  PROP_SKIP_UNCHANGED,
  PROP_FRAMES_UNCHANGED,
};

/* One region to read in the current frame. */
typedef struct
{
  captcha_roi region;           /* frame pixels, clipped to the frame */
  gint parent_id;               /* id of the upstream region meta, or -1 */
} GstCaptchaOcrRegion;

/* One result of the last frame that was read. */
typedef struct
{
  captcha_roi region;           /* the region read, frame pixels */
  gint parent_id;
  gint id;                      /* of the meta attached on the frame read */
  captcha_result result;
  gboolean changed;             /* text differs from the previous read */
} GstCaptchaOcrResult;

/* Text of one region position, for message-on-change. */
typedef struct
{
  gchar text[CAPTCHA_MAX_LENGTH + 1];   /* "" when nothing was accepted */
} GstCaptchaOcrText;

struct _GstCaptchaOcr
{
  GstVideoFilter parent;

  /* properties, under the object lock */
  gchar *model;
  GstCaptchaOcrDevice device;
  gint gpu_id;
  guint threads;
  gint roi_x, roi_y, roi_width, roi_height;
  gchar *roi_type;
  /* the region settings frames are read with: the five above as they were
   * when the last g_object_set (or freeze_notify ... thaw_notify) of them
   * ended (dispatch_properties_changed), so that a region set in one call is
   * never read half old, half new; under the object lock */
  captcha_roi active_roi;
  gchar *active_roi_type;
  gboolean region_pending;      /* a region setting not yet active */
  guint interval;
  gboolean message;
  gboolean message_on_change;
  gdouble min_confidence;
  gboolean skip_unchanged;
  /* streaming thread: the base class's QoS found the queued buffer late
   * (submit_input_buffer), for the transform of that buffer (frame_late) */
  gboolean late;
  gboolean frame_late;
  /* streaming thread: the base class marks the buffer after one it found late
   * DISCONT, as it would have dropped that one; the late buffer itself, passed
   * on, is that buffer, and its mark is removed on the way out unless it came
   * with it (src_probe) */
  gboolean undo_discont;

  /* statistics, under the object lock */
  gint64 latency_us[LATENCY_WINDOW];    /* ring of recent inference times */
  guint latency_count;
  guint latency_next;
  guint64 frames_processed;
  guint64 frames_unchanged;

  /* warnings given once, under the object lock */
  gboolean region_warned;
  gboolean fallback_warned;
  gboolean frame_warned;        /* a buffer smaller than its layout */

  /* model state: set up in start(), used by the streaming thread */
  captcha_backend *backend;
  captcha_network *network;
  captcha_config config;
  gsize image_floats;           /* 3 * input_height * input_width */
  gsize classes;                /* length * charset_size */
  float *input;                 /* [capacity, 3, input_height, input_width] NCHW */
  float *logits;                /* [capacity, classes] */
  guint capacity;               /* images the two buffers hold */
  /* backends with device preprocessing (CUDA): the regions' input and the logits in
   * device memory, [device_capacity, ...] as above */
  float *device_input;
  float *device_logits;
  guint device_capacity;
  /* skip-unchanged: the network input and logits of the last frame read in one
   * batch, host copies; last_count images (0: none) */
  float *last_input;
  float *last_logits;
  guint last_count;

  /* streaming state */
  captcha_pixel_format pixel_format;
  /* NV12/I420: the caps' colorimetry (set_info) */
  captcha_yuv_matrix yuv_matrix;
  gboolean yuv_full_range;
  guint64 frame_index;          /* frames since start, caps change, flush or new segment */
  GArray *regions;              /* GstCaptchaOcrRegion, this frame */
  GArray *results;              /* GstCaptchaOcrResult, last frame read */
  GArray *texts;                /* GstCaptchaOcrText, per region position */
};

#define VIDEO_FORMATS \
  "{ BGRx, BGRA, RGBx, RGBA, xRGB, ARGB, xBGR, ABGR, RGB, BGR, GRAY8, NV12, I420 }"

/* The preprocessing takes frames up to 65536 pixels a side (MAX_SIDE in
 * model/preprocess.c): larger frames fail to negotiate instead of failing
 * on the first buffer. */
#define VIDEO_CAPS \
  "video/x-raw, format = (string) " VIDEO_FORMATS ", " \
  "width = (int) [ 1, 65536 ], height = (int) [ 1, 65536 ], " \
  "framerate = " GST_VIDEO_FPS_RANGE

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE ("sink",
    GST_PAD_SINK,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (VIDEO_CAPS));

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE ("src",
    GST_PAD_SRC,
    GST_PAD_ALWAYS,
    GST_STATIC_CAPS (VIDEO_CAPS));

#define gst_captcha_ocr_parent_class parent_class
G_DEFINE_TYPE (GstCaptchaOcr, gst_captcha_ocr, GST_TYPE_VIDEO_FILTER);
GST_ELEMENT_REGISTER_DEFINE (captchaocr, "captchaocr", GST_RANK_NONE,
    GST_TYPE_CAPTCHA_OCR);

static void gst_captcha_ocr_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec);
static void gst_captcha_ocr_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec);
static void gst_captcha_ocr_finalize (GObject * object);
static void gst_captcha_ocr_dispatch_properties_changed (GObject * object,
    guint n_pspecs, GParamSpec ** pspecs);
static void gst_captcha_ocr_release_model (GstCaptchaOcr * self);
static GstStateChangeReturn gst_captcha_ocr_change_state (GstElement *
    element, GstStateChange transition);
static gboolean gst_captcha_ocr_start (GstBaseTransform * trans);
static gboolean gst_captcha_ocr_stop (GstBaseTransform * trans);
static GstFlowReturn gst_captcha_ocr_prepare_output_buffer (GstBaseTransform *
    trans, GstBuffer * input, GstBuffer ** output);
static gboolean gst_captcha_ocr_sink_event (GstBaseTransform * trans,
    GstEvent * event);
static GstFlowReturn gst_captcha_ocr_transform_ip (GstBaseTransform * trans,
    GstBuffer * buffer);
static GstFlowReturn gst_captcha_ocr_submit_input_buffer (GstBaseTransform *
    trans, gboolean is_discont, GstBuffer * input);
static GstPadProbeReturn gst_captcha_ocr_src_probe (GstPad * pad,
    GstPadProbeInfo * info, gpointer user_data);
static void gst_captcha_ocr_attach (GstCaptchaOcr * self, GstBuffer * buffer,
    gboolean reused);
static gboolean gst_captcha_ocr_set_info (GstVideoFilter * filter,
    GstCaps * incaps, GstVideoInfo * in_info, GstCaps * outcaps,
    GstVideoInfo * out_info);
static GstFlowReturn gst_captcha_ocr_transform_frame_ip (GstVideoFilter *
    filter, GstVideoFrame * frame);

static void
gst_captcha_ocr_class_init (GstCaptchaOcrClass * klass)
{
  GObjectClass *gobject_class = G_OBJECT_CLASS (klass);
  GstElementClass *element_class = GST_ELEMENT_CLASS (klass);
  GstBaseTransformClass *trans_class = GST_BASE_TRANSFORM_CLASS (klass);
  GstVideoFilterClass *filter_class = GST_VIDEO_FILTER_CLASS (klass);

  gobject_class->set_property = gst_captcha_ocr_set_property;
  gobject_class->get_property = gst_captcha_ocr_get_property;
  gobject_class->finalize = gst_captcha_ocr_finalize;
  gobject_class->dispatch_properties_changed =
      GST_DEBUG_FUNCPTR (gst_captcha_ocr_dispatch_properties_changed);

  /**
   * GstCaptchaOcr:model:
   *
   * Path of the model file (safetensors with the model's charset, code
   * length, input size and normalization in its metadata). When unset, the
   * CAPTCHA_MODEL environment variable, else the bundled model
   * (captcha-default.safetensors in the installed data folder, then in the
   * source tree's model/ folder). Read when the element starts (READY to
   * PAUSED); a change while running takes effect at the next start.
   */
  g_object_class_install_property (gobject_class, PROP_MODEL,
      g_param_spec_string ("model", "Model",
          "Path of the model file (.safetensors); unset: $CAPTCHA_MODEL, "
          "else the bundled captcha-default.safetensors. Read at start",
          DEFAULT_MODEL, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));

  /**
   * GstCaptchaOcr:device:
   *
   * Where the network runs. "auto" uses CUDA when a GPU is usable and
   * otherwise the CPU, posting one warning that names the reason; "cuda"
   * fails to start when no GPU is usable. Takes effect at the next start.
   */
  g_object_class_install_property (gobject_class, PROP_DEVICE,
      g_param_spec_enum ("device", "Device",
          "Where the network runs: auto (CUDA if usable, else CPU with a "
          "warning), cpu or cuda (an error if no GPU is usable)",
          GST_TYPE_CAPTCHA_OCR_DEVICE, DEFAULT_DEVICE,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));

  /**
   * GstCaptchaOcr:gpu-id:
   *
   * The CUDA device index used by device=cuda or auto. Takes effect at the
   * next start, as #GstCaptchaOcr:device.
   */
  g_object_class_install_property (gobject_class, PROP_GPU_ID,
      g_param_spec_int ("gpu-id", "GPU id",
          "CUDA device index used by device=cuda or auto", 0, G_MAXINT,
          DEFAULT_GPU_ID, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));

  /**
   * GstCaptchaOcr:threads:
   *
   * CPU threads (OpenMP) the CPU backend computes with, 0 = one per core.
   * On a machine busy with other work, 1 (or setting OMP_WAIT_POLICY=passive)
   * keeps the element from competing with the rest of the pipeline.
   * Unused by the CUDA backend. Takes effect at the next start, as
   * #GstCaptchaOcr:device.
   */
  g_object_class_install_property (gobject_class, PROP_THREADS,
      g_param_spec_uint ("threads", "Threads",
          "CPU threads of the CPU backend (0 = one per core)", 0, CAPTCHA_MAX_THREADS,
          DEFAULT_THREADS, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_READY));

  /**
   * GstCaptchaOcr:roi-x:
   *
   * Left column of the region read, in frame pixels (when roi-type is
   * unset).
   */
  g_object_class_install_property (gobject_class, PROP_ROI_X,
      g_param_spec_int ("roi-x", "ROI x",
          "Left column of the region read, frame pixels (roi-type unset); a "
          "region partly outside the frame is clipped (the result reports "
          "what was read), one wholly outside warns and gives no result",
          0, G_MAXINT, DEFAULT_ROI_X, G_PARAM_READWRITE |
          G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstCaptchaOcr:roi-y:
   *
   * Top row of the region read, in frame pixels (when roi-type is unset).
   */
  g_object_class_install_property (gobject_class, PROP_ROI_Y,
      g_param_spec_int ("roi-y", "ROI y",
          "Top row of the region read, frame pixels (roi-type unset)",
          0, G_MAXINT, DEFAULT_ROI_Y, G_PARAM_READWRITE |
          G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstCaptchaOcr:roi-width:
   *
   * Width of the region read, in frame pixels; 0 reads to the right edge of
   * the frame (the whole width when roi-x is 0).
   */
  g_object_class_install_property (gobject_class, PROP_ROI_WIDTH,
      g_param_spec_int ("roi-width", "ROI width",
          "Width of the region read, frame pixels; 0 = to the right edge "
          "of the frame", 0, G_MAXINT, DEFAULT_ROI_WIDTH,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstCaptchaOcr:roi-height:
   *
   * Height of the region read, in frame pixels; 0 reads to the bottom edge
   * of the frame (the whole height when roi-y is 0).
   */
  g_object_class_install_property (gobject_class, PROP_ROI_HEIGHT,
      g_param_spec_int ("roi-height", "ROI height",
          "Height of the region read, frame pixels; 0 = to the bottom edge "
          "of the frame", 0, G_MAXINT, DEFAULT_ROI_HEIGHT,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstCaptchaOcr:roi-type:
   *
   * When set, the roi-x/y/width/height properties are ignored and every
   * upstream #GstVideoRegionOfInterestMeta of this type (e.g. "captcha-box")
   * is read instead, each giving its own result whose parent_id is the
   * upstream meta's id, in the order the upstream metas were added. A frame
   * without such a region gives no result.
   */
  g_object_class_install_property (gobject_class, PROP_ROI_TYPE,
      g_param_spec_string ("roi-type", "ROI type",
          "Read every upstream region meta of this type instead of the "
          "roi-x/y/width/height region (one result each)",
          DEFAULT_ROI_TYPE, G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstCaptchaOcr:interval:
   *
   * Read every Nth frame (counted in frames, from the first frame after
   * start, a caps change or a seek: a flush such as a flushing seek, or a
   * new segment such as a non-flushing seek's). The frames in between carry the last results
   * again, marked reused=TRUE, and post no message. GAP buffers are not
   * frames here: they are not counted and carry no result.
   */
  g_object_class_install_property (gobject_class, PROP_INTERVAL,
      g_param_spec_uint ("interval", "Interval",
          "Read every Nth frame; frames in between carry the last results "
          "marked reused=TRUE; GAP buffers are not counted", 1, G_MAXUINT,
          DEFAULT_INTERVAL,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstCaptchaOcr:message:
   *
   * Post a "captcha" element message on the bus for each frame read that
   * gave at least one result.
   */
  g_object_class_install_property (gobject_class, PROP_MESSAGE,
      g_param_spec_boolean ("message", "Message",
          "Post a \"captcha\" element message for each frame read with "
          "results", DEFAULT_MESSAGE, G_PARAM_READWRITE |
          G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstCaptchaOcr:message-on-change:
   *
   * Post the message only when the text of a region (by position in the
   * frame's region list) differs from the previous frame read. The message
   * still lists every result; the changed ones have changed=TRUE. A result
   * dropped by min-confidence counts as no text, so a region whose result
   * goes away (dropped, or fewer regions than in the previous frame read)
   * changes too, and posts a message that lists the results that remain,
   * possibly none with changed=TRUE (a frame left with no result posts
   * none). GAP
   * buffers are not read, so the frame after a gap is compared with the
   * last frame read before it; so is the first frame after a caps change.
   * After a start or a seek (flushing or not) the first frame read posts.
   */
  g_object_class_install_property (gobject_class, PROP_MESSAGE_ON_CHANGE,
      g_param_spec_boolean ("message-on-change", "Message on change",
          "Post the message only when a region's text changes",
          DEFAULT_MESSAGE_ON_CHANGE, G_PARAM_READWRITE |
          G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstCaptchaOcr:min-confidence:
   *
   * Results whose confidence (product of the per-character probabilities)
   * is below this value are neither attached nor posted.
   */
  g_object_class_install_property (gobject_class, PROP_MIN_CONFIDENCE,
      g_param_spec_double ("min-confidence", "Minimum confidence",
          "Drop results whose confidence is below this value (0..1)",
          0.0, 1.0, DEFAULT_MIN_CONFIDENCE, G_PARAM_READWRITE |
          G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstCaptchaOcr:latency:
   *
   * Mean time of the last 32 inferences (preprocessing, network and
   * decoding of all regions of a frame) since the element last started
   * (READY to PAUSED: a new model or device starts afresh), in
   * microseconds; 0 before the first. frames-processed, by contrast, counts
   * over the element's life. The frames of #GstCaptchaOcr:frames-unchanged,
   * which do not run the network, are in the mean too: to time the network
   * on a static input, set #GstCaptchaOcr:skip-unchanged to %FALSE.
   */
  g_object_class_install_property (gobject_class, PROP_LATENCY,
      g_param_spec_double ("latency", "Latency",
          "Mean inference time of the last 32 frames read, microseconds "
          "(frames-unchanged included)",
          0.0, G_MAXDOUBLE, DEFAULT_LATENCY,
          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  /**
   * GstCaptchaOcr:frames-processed:
   *
   * Number of frames read since the element was created (frames skipped by
   * interval are not counted; frames-unchanged, read without running the
   * network again, are).
   */
  g_object_class_install_property (gobject_class, PROP_FRAMES_PROCESSED,
      g_param_spec_uint64 ("frames-processed", "Frames processed",
          "Frames read (frames skipped by interval not counted; those in "
          "frames-unchanged are)", 0, G_MAXUINT64, DEFAULT_FRAMES_PROCESSED,
          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  /**
   * GstCaptchaOcr:skip-unchanged:
   *
   * When a frame's network input (every region preprocessed: the float NCHW
   * batch, compared bit for bit) equals that of the previous frame read, the
   * network is not run again and that frame's logits are decoded instead.
   * The results are the ones the network would give (the backends compute
   * the same batch the same way each time), with this frame's regions and
   * reused=FALSE; they count in frames-processed and latency, and in
   * frames-unchanged. A static screen region then costs its preprocessing
   * only. Applies to frames of up to 64 regions (one batch). FALSE runs the
   * network on every frame read (e.g. to measure it).
   */
  g_object_class_install_property (gobject_class, PROP_SKIP_UNCHANGED,
      g_param_spec_boolean ("skip-unchanged", "Skip unchanged",
          "Do not run the network again on a frame whose regions' network "
          "input equals the previous frame read's; its results are decoded "
          "again (the same as running it)", DEFAULT_SKIP_UNCHANGED,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
          GST_PARAM_MUTABLE_PLAYING));

  /**
   * GstCaptchaOcr:frames-unchanged:
   *
   * Number of frames read since the element was created whose network
   * input equalled the previous frame read's, so the network was not run
   * (see skip-unchanged); they are counted in frames-processed too.
   */
  g_object_class_install_property (gobject_class, PROP_FRAMES_UNCHANGED,
      g_param_spec_uint64 ("frames-unchanged", "Frames unchanged",
          "Frames read without running the network, their input equal to the "
          "previous frame read's (skip-unchanged)", 0, G_MAXUINT64,
          DEFAULT_FRAMES_PROCESSED, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

  /**
   * GstCaptchaOcr:qos:
   *
   * GstBaseTransform's own switch (gst_base_transform_set_qos_enabled), given
   * this element's meaning in its description: with it on (the default, as in
   * every video filter), a frame that downstream's QoS events mark late passes
   * on unread, carrying the last results marked reused, instead of being
   * dropped; off, every frame is read.
   */
  g_object_class_install_property (gobject_class, PROP_QOS,
      g_param_spec_boolean ("qos", "QoS",
          "Handle downstream's Quality-of-Service events: a frame they mark "
          "late passes on unread, carrying the last results marked reused "
          "(false: every frame is read)", TRUE,
          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS));

  gst_element_class_set_static_metadata (element_class,
      "Captcha OCR", "Filter/Analyzer/Video",
      "Reads captcha text in video frames with a residual CNN and attaches "
      "it as region-of-interest meta and bus messages",
      "gst-captcha developers");
  gst_element_class_add_static_pad_template (element_class, &sink_template);
  gst_element_class_add_static_pad_template (element_class, &src_template);

  element_class->change_state =
      GST_DEBUG_FUNCPTR (gst_captcha_ocr_change_state);
  trans_class->start = GST_DEBUG_FUNCPTR (gst_captcha_ocr_start);
  trans_class->stop = GST_DEBUG_FUNCPTR (gst_captcha_ocr_stop);
  trans_class->prepare_output_buffer =
      GST_DEBUG_FUNCPTR (gst_captcha_ocr_prepare_output_buffer);
  trans_class->transform_ip_on_passthrough = TRUE;
  trans_class->sink_event = GST_DEBUG_FUNCPTR (gst_captcha_ocr_sink_event);
  trans_class->submit_input_buffer =
      GST_DEBUG_FUNCPTR (gst_captcha_ocr_submit_input_buffer);
  /* after GstVideoFilter's class_init: chains up to its transform_ip */
  trans_class->transform_ip = GST_DEBUG_FUNCPTR (gst_captcha_ocr_transform_ip);
  filter_class->set_info = GST_DEBUG_FUNCPTR (gst_captcha_ocr_set_info);
  filter_class->transform_frame_ip =
      GST_DEBUG_FUNCPTR (gst_captcha_ocr_transform_frame_ip);

  GST_DEBUG_CATEGORY_INIT (gst_captcha_ocr_debug, "captchaocr", 0,
      "captcha OCR element");
  gst_type_mark_as_plugin_api (GST_TYPE_CAPTCHA_OCR_DEVICE, 0);
}

static void
gst_captcha_ocr_init (GstCaptchaOcr * self)
{
  self->model = g_strdup (DEFAULT_MODEL);
  self->device = DEFAULT_DEVICE;
  self->gpu_id = DEFAULT_GPU_ID;
  self->threads = DEFAULT_THREADS;
  self->roi_x = DEFAULT_ROI_X;
  self->roi_y = DEFAULT_ROI_Y;
  self->roi_width = DEFAULT_ROI_WIDTH;
  self->roi_height = DEFAULT_ROI_HEIGHT;
  self->roi_type = g_strdup (DEFAULT_ROI_TYPE);
  self->active_roi.x = DEFAULT_ROI_X;
  self->active_roi.y = DEFAULT_ROI_Y;
  self->active_roi.width = DEFAULT_ROI_WIDTH;
  self->active_roi.height = DEFAULT_ROI_HEIGHT;
  self->active_roi_type = g_strdup (DEFAULT_ROI_TYPE);
  self->interval = DEFAULT_INTERVAL;
  self->message = DEFAULT_MESSAGE;
  self->message_on_change = DEFAULT_MESSAGE_ON_CHANGE;
  self->min_confidence = DEFAULT_MIN_CONFIDENCE;
  self->skip_unchanged = DEFAULT_SKIP_UNCHANGED;

  self->regions = g_array_new (FALSE, TRUE, sizeof (GstCaptchaOcrRegion));
  self->results = g_array_new (FALSE, TRUE, sizeof (GstCaptchaOcrResult));
  self->texts = g_array_new (FALSE, TRUE, sizeof (GstCaptchaOcrText));

  /* The frame is only read; metas are added to a writable buffer that
   * shares the input's memory (see prepare_output_buffer), so the frame is
   * mapped read-only and never copied. */
  gst_base_transform_set_passthrough (GST_BASE_TRANSFORM (self), TRUE);
  gst_base_transform_set_in_place (GST_BASE_TRANSFORM (self), TRUE);

  gst_pad_add_probe (GST_BASE_TRANSFORM_SRC_PAD (self),
      GST_PAD_PROBE_TYPE_BUFFER, gst_captcha_ocr_src_probe, self, NULL);
}

static void
gst_captcha_ocr_finalize (GObject * object)
{
  GstCaptchaOcr *self = GST_CAPTCHA_OCR (object);

  g_free (self->model);
  g_free (self->roi_type);
  g_free (self->active_roi_type);
  g_array_unref (self->regions);
  g_array_unref (self->results);
  g_array_unref (self->texts);
  gst_captcha_ocr_release_model (self);

  G_OBJECT_CLASS (parent_class)->finalize (object);
}

static void
gst_captcha_ocr_set_property (GObject * object, guint prop_id,
    const GValue * value, GParamSpec * pspec)
{
  GstCaptchaOcr *self = GST_CAPTCHA_OCR (object);

  /* the base class's switch takes the object lock itself */
  if (prop_id == PROP_QOS) {
    gst_base_transform_set_qos_enabled (GST_BASE_TRANSFORM (self),
        g_value_get_boolean (value));
    return;
  }
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_free (self->model);
      self->model = g_value_dup_string (value);
      if (GST_STATE (self) > GST_STATE_READY)
        GST_WARNING_OBJECT (self, "model changed while running; the new "
            "model is loaded at the next start");
      break;
    case PROP_DEVICE:
      self->device = g_value_get_enum (value);
      self->fallback_warned = FALSE;
      break;
    case PROP_GPU_ID:
      self->gpu_id = g_value_get_int (value);
      self->fallback_warned = FALSE;
      break;
    case PROP_THREADS:
      self->threads = g_value_get_uint (value);
      break;
    case PROP_ROI_X:
      self->roi_x = g_value_get_int (value);
      self->region_pending = TRUE;
      break;
    case PROP_ROI_Y:
      self->roi_y = g_value_get_int (value);
      self->region_pending = TRUE;
      break;
    case PROP_ROI_WIDTH:
      self->roi_width = g_value_get_int (value);
      self->region_pending = TRUE;
      break;
    case PROP_ROI_HEIGHT:
      self->roi_height = g_value_get_int (value);
      self->region_pending = TRUE;
      break;
    case PROP_ROI_TYPE:
      g_free (self->roi_type);
      self->roi_type = g_value_dup_string (value);
      if (self->roi_type && self->roi_type[0] == '\0')
        g_clear_pointer (&self->roi_type, g_free);
      self->region_pending = TRUE;
      break;
    case PROP_INTERVAL:
      self->interval = g_value_get_uint (value);
      break;
    case PROP_MESSAGE:
      self->message = g_value_get_boolean (value);
      break;
    case PROP_MESSAGE_ON_CHANGE:
      self->message_on_change = g_value_get_boolean (value);
      break;
    case PROP_MIN_CONFIDENCE:
      self->min_confidence = g_value_get_double (value);
      break;
    case PROP_SKIP_UNCHANGED:
      self->skip_unchanged = g_value_get_boolean (value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

static void
gst_captcha_ocr_get_property (GObject * object, guint prop_id,
    GValue * value, GParamSpec * pspec)
{
  GstCaptchaOcr *self = GST_CAPTCHA_OCR (object);

  if (prop_id == PROP_QOS) {
    g_value_set_boolean (value,
        gst_base_transform_is_qos_enabled (GST_BASE_TRANSFORM (self)));
    return;
  }
  GST_OBJECT_LOCK (self);
  switch (prop_id) {
    case PROP_MODEL:
      g_value_set_string (value, self->model);
      break;
    case PROP_DEVICE:
      g_value_set_enum (value, self->device);
      break;
    case PROP_GPU_ID:
      g_value_set_int (value, self->gpu_id);
      break;
    case PROP_THREADS:
      g_value_set_uint (value, self->threads);
      break;
    case PROP_ROI_X:
      g_value_set_int (value, self->roi_x);
      break;
    case PROP_ROI_Y:
      g_value_set_int (value, self->roi_y);
      break;
    case PROP_ROI_WIDTH:
      g_value_set_int (value, self->roi_width);
      break;
    case PROP_ROI_HEIGHT:
      g_value_set_int (value, self->roi_height);
      break;
    case PROP_ROI_TYPE:
      g_value_set_string (value, self->roi_type);
      break;
    case PROP_INTERVAL:
      g_value_set_uint (value, self->interval);
      break;
    case PROP_MESSAGE:
      g_value_set_boolean (value, self->message);
      break;
    case PROP_MESSAGE_ON_CHANGE:
      g_value_set_boolean (value, self->message_on_change);
      break;
    case PROP_MIN_CONFIDENCE:
      g_value_set_double (value, self->min_confidence);
      break;
    case PROP_LATENCY:{
      gint64 sum = 0;
      guint i;

      for (i = 0; i < self->latency_count; i++)
        sum += self->latency_us[i];
      g_value_set_double (value, self->latency_count ?
          (gdouble) sum / self->latency_count : 0.0);
      break;
    }
    case PROP_FRAMES_PROCESSED:
      g_value_set_uint64 (value, self->frames_processed);
      break;
    case PROP_SKIP_UNCHANGED:
      g_value_set_boolean (value, self->skip_unchanged);
      break;
    case PROP_FRAMES_UNCHANGED:
      g_value_set_uint64 (value, self->frames_unchanged);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK (self);
}

/* Makes the region settings set so far the ones frames are read with (and
 * warns again about a region outside the frame). Under the object lock. */
static void
gst_captcha_ocr_commit_region (GstCaptchaOcr * self)
{
  if (!self->region_pending)
    return;
  self->region_pending = FALSE;
  self->active_roi.x = self->roi_x;
  self->active_roi.y = self->roi_y;
  self->active_roi.width = self->roi_width;
  self->active_roi.height = self->roi_height;
  g_free (self->active_roi_type);
  self->active_roi_type = g_strdup (self->roi_type);
  self->region_warned = FALSE;
}

/* GObject calls this when a g_object_set (g_object_set_property, or the
 * outermost thaw_notify) ends, after the set_property of each property it
 * set: the region they set takes effect as a whole. (GstObject overrides it
 * too, so GObject calls it for every GstObject, with or without notify
 * handlers.) */
static void
gst_captcha_ocr_dispatch_properties_changed (GObject * object, guint n_pspecs,
    GParamSpec ** pspecs)
{
  GstCaptchaOcr *self = GST_CAPTCHA_OCR (object);

  GST_OBJECT_LOCK (self);
  gst_captcha_ocr_commit_region (self);
  GST_OBJECT_UNLOCK (self);
  G_OBJECT_CLASS (parent_class)->dispatch_properties_changed (object, n_pspecs,
      pspecs);
}

/* The model file to load: the property, else $CAPTCHA_MODEL, else the
 * bundled model (installed, then in the source tree). Returns a new string
 * (*from_env TRUE when it is $CAPTCHA_MODEL), or NULL with *searched listing
 * the places looked at. */
static gchar *
gst_captcha_ocr_resolve_model (const gchar * property, gchar ** searched,
    gboolean * from_env)
{
  const gchar *env;
  const gchar *candidates[] = {
    CAPTCHA_MODEL_INSTALL_DIR "/captcha-default.safetensors",
    CAPTCHA_SOURCE_DIR "/model/captcha-default.safetensors",
  };
  guint i;

  *searched = NULL;
  *from_env = FALSE;
  if (property && property[0])
    return g_strdup (property);
  env = g_getenv ("CAPTCHA_MODEL");
  *from_env = env && env[0];
  if (*from_env)
    return g_strdup (env);
  for (i = 0; i < G_N_ELEMENTS (candidates); i++) {
    if (g_file_test (candidates[i], G_FILE_TEST_IS_REGULAR))
      return g_strdup (candidates[i]);
  }
  *searched = g_strjoin (" nor ", candidates[0], candidates[1], NULL);
  return NULL;
}

/* Makes the input and logits buffers hold batch images. Grows only, so
 * after the first frames no frame allocates. */
static void
gst_captcha_ocr_reserve (GstCaptchaOcr * self, guint batch)
{
  if (batch <= self->capacity)
    return;
  self->input = g_renew (float, self->input, batch * self->image_floats);
  self->logits = g_renew (float, self->logits, batch * self->classes);
  self->capacity = batch;
}

/* Makes the device input and logits buffers hold batch images (grows only);
 * the input starts zeroed (the padding images of a rounded-up batch). */
static gboolean
gst_captcha_ocr_reserve_device (GstCaptchaOcr * self, guint batch,
    captcha_error * err)
{
  const captcha_backend_ops *ops = self->backend->ops;

  if (batch <= self->device_capacity)
    return TRUE;
  ops->free (self->backend, self->device_input);
  ops->free (self->backend, self->device_logits);
  self->device_input = self->device_logits = NULL;
  self->device_capacity = 0;
  if (ops->alloc (self->backend, batch * self->image_floats * sizeof (float),
          (void **) &self->device_input, err) != CAPTCHA_OK
      || ops->alloc (self->backend, batch * self->classes * sizeof (float),
          (void **) &self->device_logits, err) != CAPTCHA_OK)
    return FALSE;
  {
    float *zeros = g_new0 (float, batch * self->image_floats);
    captcha_status status = ops->upload (self->backend, self->device_input,
        zeros, batch * self->image_floats * sizeof (float), err);

    g_free (zeros);
    if (status != CAPTCHA_OK)
      return FALSE;
  }
  self->device_capacity = batch;
  return TRUE;
}

static void
gst_captcha_ocr_release_model (GstCaptchaOcr * self)
{
  /* the network's CUDA graphs reference the device buffers: network first */
  g_clear_pointer (&self->network, captcha_network_destroy);
  if (self->backend) {
    self->backend->ops->free (self->backend, self->device_input);
    self->backend->ops->free (self->backend, self->device_logits);
  }
  self->device_input = self->device_logits = NULL;
  self->device_capacity = 0;
  g_clear_pointer (&self->backend, captcha_backend_destroy);
  g_clear_pointer (&self->input, g_free);
  g_clear_pointer (&self->logits, g_free);
  self->capacity = 0;
  g_clear_pointer (&self->last_input, g_free);
  g_clear_pointer (&self->last_logits, g_free);
  self->last_count = 0;
}

/* Forgets the stream: interval counts from the next frame, and no result of
 * an earlier frame is carried on (reused); unless keep_texts, none is
 * compared either (message-on-change). A caps change keeps them: the same
 * text read after a new frame size or rate (a screen resized, a framerate
 * renegotiated) is no change. Streaming thread (or while stopped). */
static void
gst_captcha_ocr_reset_stream (GstCaptchaOcr * self, gboolean keep_texts)
{
  self->frame_index = 0;
  g_array_set_size (self->results, 0);
  if (!keep_texts)
    g_array_set_size (self->texts, 0);
}

/* TRUE the first time for *flag (a warning given once, until the flag is
 * reset), under the object lock. */
static gboolean
gst_captcha_ocr_first_time (GstCaptchaOcr * self, gboolean * flag)
{
  gboolean first;

  GST_OBJECT_LOCK (self);
  first = !*flag;
  *flag = TRUE;
  GST_OBJECT_UNLOCK (self);
  return first;
}

/* text made fit for a bus message (g_free): valid UTF-8 (a path in another
 * encoding would make a Python bus handler fail to decode the message; bad
 * bytes become U+FFFD) and control bytes written as C escapes (a model file's
 * tensor name or metadata value with ESC would otherwise recolour the terminal
 * of gst-launch, a newline split its log line), as the command-line tools
 * write them; and both bytes of a C1 control character (U+0080..U+009F:
 * U+009B is ESC [ to a UTF-8 terminal too) are escaped as well. */
static gchar *
gst_captcha_ocr_printable (const gchar * text)
{
  gchar *valid = g_utf8_make_valid (text, -1);
  GString *out = g_string_sized_new (strlen (valid));
  const guchar *c;

  for (c = (const guchar *) valid; *c; c++) {
    if (*c == '\n')
      g_string_append (out, "\\n");
    else if (*c == '\t')
      g_string_append (out, "\\t");
    else if (*c == '\r')
      g_string_append (out, "\\r");
    else if (*c < 0x20 || *c == 0x7f)
      g_string_append_printf (out, "\\x%02x", *c);
    else if (*c == 0xc2 && c[1] >= 0x80 && c[1] <= 0x9f) {
      /* U+0080..U+009F */
      g_string_append_printf (out, "\\x%02x\\x%02x", c[0], c[1]);
      c++;
    } else
      g_string_append_c (out, (gchar) * c);
  }
  g_free (valid);
  return g_string_free (out, FALSE);
}

static gboolean
gst_captcha_ocr_start (GstBaseTransform * trans)
{
  GstCaptchaOcr *self = GST_CAPTCHA_OCR (trans);
  gchar *property, *path, *searched = NULL;
  GstCaptchaOcrDevice device;
  gint gpu_id;
  guint threads;
  gboolean from_env;
  captcha_error err = { 0 };
  captcha_status status;
  gchar fallback_reason[CAPTCHA_ERROR_MESSAGE_SIZE] = "";
  gchar notice[CAPTCHA_ERROR_MESSAGE_SIZE] = "";

  GST_OBJECT_LOCK (self);
  property = g_strdup (self->model);
  device = self->device;
  gpu_id = self->gpu_id;
  threads = self->threads;
  GST_OBJECT_UNLOCK (self);

  path = gst_captcha_ocr_resolve_model (property, &searched, &from_env);
  g_free (property);
  if (!path) {
    /* (the folders are the build's install and source paths) */
    gchar *where = gst_captcha_ocr_printable (searched);

    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("No model file: the model property is not set, CAPTCHA_MODEL is "
            "not set and the bundled model was found neither at %s",
            where), (NULL));
    g_free (where);
    g_free (searched);
    return FALSE;
  }

  gst_captcha_ocr_release_model (self);
  status = captcha_backend_create ((captcha_device) device, gpu_id, (int) threads,
      &self->backend, fallback_reason, sizeof (fallback_reason), &err);
  if (status != CAPTCHA_OK) {
    /* (a CUDA build's reasons name paths: $CAPTCHA_CUDA_MODULE, libraries) */
    gchar *text = gst_captcha_ocr_printable (err.message);

    GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS,
        ("Cannot run on device \"%s\" (gpu-id %d): %s",
            device == GST_CAPTCHA_OCR_DEVICE_CUDA ? "cuda" :
            device == GST_CAPTCHA_OCR_DEVICE_CPU ? "cpu" : "auto", gpu_id,
            text), (NULL));
    g_free (text);
    g_free (path);
    return FALSE;
  }
  if (fallback_reason[0]) {
    gchar *text = gst_captcha_ocr_printable (fallback_reason);

    if (gst_captcha_ocr_first_time (self, &self->fallback_warned))
      GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
          ("No usable GPU (device=auto): %s", text), (NULL));
    else
      GST_INFO_OBJECT (self, "running on the CPU: %s", text);
    g_free (text);
  }
  GST_INFO_OBJECT (self, "backend: %s", self->backend->ops->name);

  status = captcha_model_load (path, self->backend, &self->network, notice,
      sizeof (notice), &err);
  if (status != CAPTCHA_OK) {
    /* The library's message names the file; add it when it does not, and
     * say where the path came from when it was not the property. */
    const gchar *origin = from_env ? " (path from $CAPTCHA_MODEL, as the "
        "model property is unset)" : "";
    gchar *raw = strstr (err.message, path) ?
        g_strdup_printf ("Cannot load the model%s: %s", origin, err.message) :
        g_strdup_printf ("Cannot load the model \"%s\"%s: %s", path, origin,
        err.message);
    gchar *text = gst_captcha_ocr_printable (raw);

    g_free (raw);

    if (status == CAPTCHA_ERROR_IO)
      GST_ELEMENT_ERROR (self, RESOURCE, OPEN_READ, ("%s", text), (NULL));
    else
      GST_ELEMENT_ERROR (self, RESOURCE, SETTINGS, ("%s", text), (NULL));
    g_free (text);
    gst_captcha_ocr_release_model (self);
    g_free (path);
    return FALSE;
  }
  /* (the notice names the file) */
  if (notice[0]) {
    gchar *text = gst_captcha_ocr_printable (notice);

    GST_ELEMENT_INFO (self, RESOURCE, SETTINGS, ("%s", text), (NULL));
    g_free (text);
  }

  self->config = *captcha_network_config (self->network);
  self->image_floats = (gsize) self->config.input_height * 3 *
      self->config.input_width;
  self->classes = (gsize) captcha_config_classes (&self->config);
  gst_captcha_ocr_reserve (self, 1);
  GST_INFO_OBJECT (self, "model %s: %d characters of \"%s\", input %dx%d",
      path, self->config.length, self->config.charset,
      self->config.input_width, self->config.input_height);
  g_free (path);

  gst_captcha_ocr_reset_stream (self, FALSE);
  GST_OBJECT_LOCK (self);
  self->region_warned = FALSE;
  self->frame_warned = FALSE;
  /* latency describes this model and device */
  self->latency_count = 0;
  self->latency_next = 0;
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

/* GstBaseTransform calls start() from the sink pad's activation, after the
 * pad has begun to accept data: a buffer (or caps) from an upstream that kept
 * running, e.g. while this element alone is taken to READY and back to change
 * its model, would reach the element before its model is set up. Holding the
 * sink pad's stream lock (which every buffer and serialized event takes)
 * through the activation makes them wait until start() has ended. */
static GstStateChangeReturn
gst_captcha_ocr_change_state (GstElement * element, GstStateChange transition)
{
  GstPad *sinkpad = GST_BASE_TRANSFORM_SINK_PAD (element);
  GstStateChangeReturn ret;

  if (transition != GST_STATE_CHANGE_READY_TO_PAUSED)
    return GST_ELEMENT_CLASS (parent_class)->change_state (element,
        transition);
  GST_PAD_STREAM_LOCK (sinkpad);
  ret = GST_ELEMENT_CLASS (parent_class)->change_state (element, transition);
  GST_PAD_STREAM_UNLOCK (sinkpad);
  return ret;
}

static gboolean
gst_captcha_ocr_stop (GstBaseTransform * trans)
{
  GstCaptchaOcr *self = GST_CAPTCHA_OCR (trans);

  gst_captcha_ocr_release_model (self);
  g_array_set_size (self->regions, 0);
  g_array_set_size (self->results, 0);
  g_array_set_size (self->texts, 0);
  return TRUE;
}

/* The frame is only read, but metas are added: hand on a writable buffer
 * sharing the input's memory (a shallow copy when the input is shared).
 * GAP buffers get no meta: they pass as they are. */
static GstFlowReturn
gst_captcha_ocr_prepare_output_buffer (G_GNUC_UNUSED GstBaseTransform *
    trans, GstBuffer * input, GstBuffer ** output)
{
  if (gst_buffer_is_writable (input)
      || GST_BUFFER_FLAG_IS_SET (input, GST_BUFFER_FLAG_GAP))
    *output = input;
  else
    *output = gst_buffer_copy (input);
  return *output ? GST_FLOW_OK : GST_FLOW_ERROR;
}

/* Warns once (until the caps change) that a frame is not read. */
static void
gst_captcha_ocr_warn_frame (GstCaptchaOcr * self, const gchar * reason)
{
  if (gst_captcha_ocr_first_time (self, &self->frame_warned))
    GST_ELEMENT_WARNING (self, STREAM, FORMAT,
        ("A frame is not read: %s", reason), (NULL));
  else
    GST_LOG_OBJECT (self, "frame not read: %s", reason);
}

/* What makes gst_video_frame_map fail on buffer, in words (g_free), or NULL:
 * a GstVideoMeta plane starting past the buffer's memory, or (without a meta)
 * a buffer smaller than its caps' frame. GstVideoFilter would answer such a
 * buffer with a generic warning ("invalid video buffer received") on every
 * frame. */
static gchar *
gst_captcha_ocr_unmappable (GstVideoFilter * filter, GstBuffer * buffer)
{
  const GstVideoInfo *info = &filter->in_info;
  GstVideoMeta *meta = gst_buffer_get_video_meta (buffer);
  gsize size = gst_buffer_get_size (buffer);
  guint p, idx, length;
  gsize skip;

  if (!meta)
    return size < GST_VIDEO_INFO_SIZE (info) ?
        g_strdup_printf ("the buffer holds %" G_GSIZE_FORMAT " bytes, a %dx%d "
        "%s frame (caps, no video meta) needs %" G_GSIZE_FORMAT, size,
        GST_VIDEO_INFO_WIDTH (info), GST_VIDEO_INFO_HEIGHT (info),
        GST_VIDEO_INFO_NAME (info), GST_VIDEO_INFO_SIZE (info)) : NULL;
  /* gst_video_frame_map refuses (with a GStreamer-CRITICAL) a meta of another
   * format or smaller than the caps' frame; a larger one is padding, and only
   * the caps' frame is read (or the crop meta's rectangle within it) */
  if (meta->format != GST_VIDEO_INFO_FORMAT (info)
      || meta->n_planes != GST_VIDEO_INFO_N_PLANES (info)
      || meta->width < (guint) GST_VIDEO_INFO_WIDTH (info)
      || meta->height < (guint) GST_VIDEO_INFO_HEIGHT (info))
    return g_strdup_printf ("the video meta describes a %ux%u %s frame "
        "(%u plane%s), the caps a %dx%d %s one (%u plane%s)", meta->width,
        meta->height, gst_video_format_to_string (meta->format), meta->n_planes,
        meta->n_planes == 1 ? "" : "s", GST_VIDEO_INFO_WIDTH (info),
        GST_VIDEO_INFO_HEIGHT (info), GST_VIDEO_INFO_NAME (info),
        GST_VIDEO_INFO_N_PLANES (info),
        GST_VIDEO_INFO_N_PLANES (info) == 1 ? "" : "s");
  for (p = 0; p < meta->n_planes; p++)
    if (!gst_buffer_find_memory (buffer, meta->offset[p], 1, &idx, &length,
            &skip))
      return g_strdup_printf ("plane %u of the %ux%u %s frame starts at byte %"
          G_GSIZE_FORMAT " (video meta), past the buffer's %" G_GSIZE_FORMAT
          " bytes", p, meta->width, meta->height,
          gst_video_format_to_string (meta->format), meta->offset[p], size);
  return NULL;
}

/* GstVideoFilter enables GstBaseTransform's QoS (the "qos" property, default
 * TRUE), whose submit_input_buffer drops a buffer that downstream's QoS events
 * mark late. A frame must not vanish from the stream because reading it is
 * late: such a buffer is queued all the same and marked late, and
 * transform_frame_ip passes it on unread. The base class still counts it in
 * its QoS message as dropped (not processed). */
static GstFlowReturn
gst_captcha_ocr_submit_input_buffer (GstBaseTransform * trans,
    gboolean is_discont, GstBuffer * input)
{
  GstCaptchaOcr *self = GST_CAPTCHA_OCR (trans);
  GstFlowReturn ret;

  gst_buffer_ref (input);
  ret = GST_BASE_TRANSFORM_CLASS (parent_class)->submit_input_buffer (trans,
      is_discont, input);
  self->late = ret == GST_BASE_TRANSFORM_FLOW_DROPPED;
  self->undo_discont = self->late && !GST_BUFFER_IS_DISCONT (input);
  if (!self->late) {
    gst_buffer_unref (input);
    return ret;
  }
  gst_buffer_replace (&trans->queued_buf, NULL);
  trans->queued_buf = input;
  return GST_FLOW_OK;
}

/* The buffer pushed after submit_input_buffer queued a late one is that
 * buffer (the same streaming thread, the same chain call): no frame is
 * missing, so the DISCONT the base class set on it for the drop it did not
 * make is removed. */
static GstPadProbeReturn
gst_captcha_ocr_src_probe (G_GNUC_UNUSED GstPad * pad, GstPadProbeInfo * info,
    gpointer user_data)
{
  GstCaptchaOcr *self = GST_CAPTCHA_OCR (user_data);
  GstBuffer *buffer = GST_PAD_PROBE_INFO_BUFFER (info);

  if (!self->undo_discont)
    return GST_PAD_PROBE_OK;
  self->undo_discont = FALSE;
  if (GST_BUFFER_IS_DISCONT (buffer)) {
    buffer = gst_buffer_make_writable (buffer);
    GST_BUFFER_FLAG_UNSET (buffer, GST_BUFFER_FLAG_DISCONT);
    GST_PAD_PROBE_INFO_DATA (info) = buffer;
  }
  return GST_PAD_PROBE_OK;
}

/* A seek starts the stream anew: the frames after it are counted from the
 * first, and results from before it are not carried over. A flushing seek
 * flushes; a non-flushing one (or a segment seek looping back) only sends a
 * new segment, which is a seek too when it moves the stream (its start, time,
 * base, offset or rates differ from the current one's): the same segment sent
 * again is not, nor one that only updates stop or duration (a live source or
 * demuxer learning them). */
static gboolean
gst_captcha_ocr_sink_event (GstBaseTransform * trans, GstEvent * event)
{
  if (GST_EVENT_TYPE (event) == GST_EVENT_FLUSH_STOP)
    gst_captcha_ocr_reset_stream (GST_CAPTCHA_OCR (trans), FALSE);
  else if (GST_EVENT_TYPE (event) == GST_EVENT_SEGMENT) {
    const GstSegment *segment;
    GstSegment current = trans->segment;

    /* (the base class moves the current one's position with the buffers) */
    gst_event_parse_segment (event, &segment);
    current.position = segment->position;
    current.stop = segment->stop;
    current.duration = segment->duration;
    current.flags = segment->flags;
    if (!gst_segment_is_equal (segment, &current))
      gst_captcha_ocr_reset_stream (GST_CAPTCHA_OCR (trans), FALSE);
  }
  return GST_BASE_TRANSFORM_CLASS (parent_class)->sink_event (trans, event);
}

/* A GAP buffer's content is meaningless (and may be empty): it is passed
 * on before the frame is mapped, without being read or counted. So is a
 * buffer that cannot be mapped as a frame, with a warning. */
static GstFlowReturn
gst_captcha_ocr_transform_ip (GstBaseTransform * trans, GstBuffer * buffer)
{
  GstCaptchaOcr *self = GST_CAPTCHA_OCR (trans);
  gboolean late = self->late;
  gchar *reason;

  self->late = FALSE;
  if (GST_BUFFER_FLAG_IS_SET (buffer, GST_BUFFER_FLAG_GAP)) {
    GST_LOG_OBJECT (trans, "GAP buffer passed on unread");
    return GST_FLOW_OK;
  }
  reason = gst_captcha_ocr_unmappable (GST_VIDEO_FILTER (trans), buffer);
  if (reason) {
    gst_captcha_ocr_warn_frame (self, reason);
    g_free (reason);
    return GST_FLOW_OK;
  }
  self->frame_late = late;
  return GST_BASE_TRANSFORM_CLASS (parent_class)->transform_ip (trans, buffer);
}

/* The YUV matrix and range of in_info's colorimetry (as videoconvert reads
 * them; the caps' defaults when they name none: BT.601 for SD, BT.709 for
 * HD sizes, limited range), for NV12 and I420. (gst_video_info_from_caps
 * already replaced a matrix that does not fit a YUV format, rgb, by the
 * default; an unknown one is read as BT.601. An unknown range, as in
 * "0:4:0:0", is full range, as videoconvert reads it.) */
static void
gst_captcha_ocr_set_yuv_colorimetry (GstCaptchaOcr * self,
    const GstVideoInfo * in_info)
{
  const GstVideoColorimetry *c = &GST_VIDEO_INFO_COLORIMETRY (in_info);

  self->yuv_matrix = CAPTCHA_YUV_BT601;
  self->yuv_full_range = FALSE;
  if (!GST_VIDEO_INFO_IS_YUV (in_info))
    return;
  switch (c->matrix) {
    case GST_VIDEO_COLOR_MATRIX_BT709:
      self->yuv_matrix = CAPTCHA_YUV_BT709;
      break;
    case GST_VIDEO_COLOR_MATRIX_BT2020:
      self->yuv_matrix = CAPTCHA_YUV_BT2020;
      break;
    case GST_VIDEO_COLOR_MATRIX_FCC:
      self->yuv_matrix = CAPTCHA_YUV_FCC;
      break;
    case GST_VIDEO_COLOR_MATRIX_SMPTE240M:
      self->yuv_matrix = CAPTCHA_YUV_SMPTE240M;
      break;
    default:                   /* BT.601, or unknown */
      break;
  }
  /* as gst_video_color_range_offsets (videoconvert): an unknown range is full */
  self->yuv_full_range = c->range != GST_VIDEO_COLOR_RANGE_16_235;
}

static gboolean
gst_captcha_ocr_set_info (GstVideoFilter * filter, GstCaps * incaps,
    GstVideoInfo * in_info, G_GNUC_UNUSED GstCaps * outcaps,
    G_GNUC_UNUSED GstVideoInfo * out_info)
{
  GstCaptchaOcr *self = GST_CAPTCHA_OCR (filter);

  switch (GST_VIDEO_INFO_FORMAT (in_info)) {
    case GST_VIDEO_FORMAT_BGRx:
    case GST_VIDEO_FORMAT_BGRA:
      self->pixel_format = CAPTCHA_PIXEL_BGRA;
      break;
    case GST_VIDEO_FORMAT_RGBx:
    case GST_VIDEO_FORMAT_RGBA:
      self->pixel_format = CAPTCHA_PIXEL_RGBA;
      break;
    case GST_VIDEO_FORMAT_xRGB:
    case GST_VIDEO_FORMAT_ARGB:
      self->pixel_format = CAPTCHA_PIXEL_ARGB;
      break;
    case GST_VIDEO_FORMAT_xBGR:
    case GST_VIDEO_FORMAT_ABGR:
      self->pixel_format = CAPTCHA_PIXEL_ABGR;
      break;
    case GST_VIDEO_FORMAT_RGB:
      self->pixel_format = CAPTCHA_PIXEL_RGB;
      break;
    case GST_VIDEO_FORMAT_BGR:
      self->pixel_format = CAPTCHA_PIXEL_BGR;
      break;
    case GST_VIDEO_FORMAT_GRAY8:
      self->pixel_format = CAPTCHA_PIXEL_GRAY8;
      break;
    case GST_VIDEO_FORMAT_NV12:
      self->pixel_format = CAPTCHA_PIXEL_NV12;
      break;
    case GST_VIDEO_FORMAT_I420:
      self->pixel_format = CAPTCHA_PIXEL_I420;
      break;
    default:
      GST_ERROR_OBJECT (self, "unsupported format %s",
          GST_VIDEO_INFO_NAME (in_info));
      return FALSE;
  }
  gst_captcha_ocr_set_yuv_colorimetry (self, in_info);
  GST_DEBUG_OBJECT (self, "caps %" GST_PTR_FORMAT, incaps);

  /* A new size or format: the last results may not fit the new frames, and
   * a region that was outside may now be inside (or the reverse). */
  gst_captcha_ocr_reset_stream (self, TRUE);
  GST_OBJECT_LOCK (self);
  self->region_warned = FALSE;
  self->frame_warned = FALSE;
  GST_OBJECT_UNLOCK (self);
  return TRUE;
}

/* Warns once (until the region settings or the caps change). */
static void
gst_captcha_ocr_warn_region (GstCaptchaOcr * self, gboolean from_meta,
    const captcha_error * err)
{
  if (!gst_captcha_ocr_first_time (self, &self->region_warned)) {
    GST_LOG_OBJECT (self, "region not read: %s", err->message);
    return;
  }
  if (from_meta)
    GST_ELEMENT_WARNING (self, STREAM, FORMAT,
        ("An upstream region is not read: %s", err->message), (NULL));
  else
    GST_ELEMENT_WARNING (self, RESOURCE, SETTINGS,
        ("The region set by roi-x, roi-y, roi-width and roi-height is not "
            "read: %s", err->message), (NULL));
}

/* Checks that every plane of image lies inside the memory frame maps: a
 * GstVideoMeta's offsets and strides come from upstream and gst_video_frame_map
 * does not check that its planes' rows fit the buffer. A plane is read from
 * its first byte to (rows - 1) x stride + one row's bytes
 * (captcha_image_plane_span). */
static gboolean
gst_captcha_ocr_check_frame (const GstVideoFrame * frame,
    const captcha_image * image, captcha_error * err)
{
  const gchar *format =
      gst_video_format_to_string (GST_VIDEO_FRAME_FORMAT (frame));
  guint p;

  /* (the library's own check names its pixel format, e.g. BGRA for BGRx) */
  for (p = 0; p < GST_VIDEO_FRAME_N_PLANES (frame); p++) {
    long long row = captcha_image_row_bytes (image, (int) p);

    if (row >= 0 && image->strides[p] < row) {
      captcha_fail (err, CAPTCHA_ERROR_INVALID_ARGUMENT,
          "plane %u of the %dx%d %s frame: its stride is %d bytes, less than "
          "the %lld bytes of one row", p, image->width, image->height, format,
          image->strides[p], row);
      return FALSE;
    }
  }
  if (captcha_image_validate (image, err) != CAPTCHA_OK)
    return FALSE;
  for (p = 0; p < GST_VIDEO_FRAME_N_PLANES (frame); p++) {
    /* with a meta each plane has its own mapping, else all lie in map[0] */
    const GstMapInfo *map = &frame->map[frame->meta ? p : 0];
    const guint8 *data = GST_VIDEO_FRAME_PLANE_DATA (frame, p);
    long long span = captcha_image_plane_span (image, (int) p);
    long long available = data >= map->data && data <= map->data + map->size
        ? (long long) (map->data + map->size - data) : -1;

    if (span < 0 || available < span) {
      captcha_fail (err, CAPTCHA_ERROR_INVALID_ARGUMENT,
          "plane %u of the %dx%d %s frame needs %lld bytes (stride %d), but "
          "its memory holds %lld from the plane's offset", p, image->width,
          image->height, format, span,
          image->strides[p], available < 0 ? 0 : available);
      return FALSE;
    }
  }
  return TRUE;
}

/* Fills self->regions with the frame's regions to read, clipped: the
 * upstream regions of roi_type, else roi (the roi-* properties as set). */
static void
gst_captcha_ocr_collect_regions (GstCaptchaOcr * self, GstBuffer * buffer,
    gint width, gint height, const gchar * roi_type, const captcha_roi * roi)
{
  GstCaptchaOcrRegion entry;
  captcha_roi region;
  captcha_error err = { 0 };

  g_array_set_size (self->regions, 0);
  if (roi_type) {
    GQuark type = g_quark_from_string (roi_type);
    gpointer state = NULL;
    GstMeta *meta;

    while ((meta = gst_buffer_iterate_meta_filtered (buffer, &state,
                GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
      GstVideoRegionOfInterestMeta *upstream =
          (GstVideoRegionOfInterestMeta *) meta;

      if (upstream->roi_type != type)
        continue;
      region.x = MIN (upstream->x, G_MAXINT);
      region.y = MIN (upstream->y, G_MAXINT);
      region.width = MIN (upstream->w, G_MAXINT);
      region.height = MIN (upstream->h, G_MAXINT);
      if (captcha_roi_clip (&region, width, height, &entry.region,
              &err) != CAPTCHA_OK) {
        /* beyond G_MAXINT the clamped values would be named: name the meta's */
        if (upstream->x > G_MAXINT || upstream->y > G_MAXINT)
          captcha_fail (&err, CAPTCHA_ERROR_INVALID_ARGUMENT,
              "region %u,%u %ux%u lies outside the %dx%d frame", upstream->x,
              upstream->y, upstream->w, upstream->h, width, height);
        gst_captcha_ocr_warn_region (self, TRUE, &err);
        continue;
      }
      entry.parent_id = upstream->id;
      g_array_append_val (self->regions, entry);
    }
    /* The metas iterate oldest first: the regions are read (and the results
     * listed) in the order they were added upstream. */
    return;
  }

  /* A 0 width or height reads to the frame's edge: from at or beyond that
   * edge the configured region is outside the frame (not an empty one). */
  if ((roi->width == 0 && roi->x >= width) || (roi->height == 0
          && roi->y >= height)) {
    captcha_fail (&err, CAPTCHA_ERROR_INVALID_ARGUMENT,
        "the configured region (roi-x=%d, roi-y=%d, roi-width=%d, "
        "roi-height=%d; 0 = to the frame's edge) lies outside the %dx%d "
        "frame", roi->x, roi->y, roi->width, roi->height, width, height);
    gst_captcha_ocr_warn_region (self, FALSE, &err);
    return;
  }
  region = *roi;
  if (region.width == 0)
    region.width = width - region.x;
  if (region.height == 0)
    region.height = height - region.y;
  if (captcha_roi_clip (&region, width, height, &entry.region,
          &err) != CAPTCHA_OK) {
    gst_captcha_ocr_warn_region (self, FALSE, &err);
    return;
  }
  entry.parent_id = -1;
  g_array_append_val (self->regions, entry);
}

static gint
compare_ints (gconstpointer a, gconstpointer b)
{
  gint x = *(const gint *) a, y = *(const gint *) b;

  return x < y ? -1 : x > y;
}

/* Fills ids[0..n) with ids for n new region metas on buffer: distinct,
 * non-negative and unlike every region meta id already on the buffer.
 * They follow the largest id there when they fit in a gint; else they are
 * the smallest unused non-negative ids (ascending in both cases). */
static void
gst_captcha_ocr_new_ids (GstBuffer * buffer, guint n, gint * ids)
{
  GArray *used = g_array_new (FALSE, FALSE, sizeof (gint));
  gpointer state = NULL;
  GstMeta *meta;
  gint64 largest = -1;
  gint candidate;
  guint i, k;

  while ((meta = gst_buffer_iterate_meta_filtered (buffer, &state,
              GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    gint id = ((GstVideoRegionOfInterestMeta *) meta)->id;

    largest = MAX (largest, id);
    if (id >= 0)
      g_array_append_val (used, id);
  }

  if (largest + n <= G_MAXINT) {
    for (i = 0; i < n; i++)
      ids[i] = (gint) (largest + 1 + i);
  } else {
    /* A buffer holds far fewer than G_MAXINT metas: gaps are found. */
    g_array_sort (used, compare_ints);
    candidate = 0;
    k = 0;
    for (i = 0; i < n; i++) {
      for (; k < used->len && g_array_index (used, gint, k) <= candidate; k++) {
        if (g_array_index (used, gint, k) == candidate)
          candidate++;
      }
      ids[i] = candidate++;
    }
  }
  g_array_unref (used);
}

/* Attaches self->results to buffer as region-of-interest metas. */
static void
gst_captcha_ocr_attach (GstCaptchaOcr * self, GstBuffer * buffer,
    gboolean reused)
{
  gint *ids;
  guint i;
  gint p;

  if (self->results->len == 0)
    return;

  /* Ids default to 0 in 1.22: give ours ids unused on the buffer. */
  ids = g_new (gint, self->results->len);
  gst_captcha_ocr_new_ids (buffer, self->results->len, ids);

  for (i = 0; i < self->results->len; i++) {
    GstCaptchaOcrResult *r =
        &g_array_index (self->results, GstCaptchaOcrResult, i);
    GstVideoRegionOfInterestMeta *roi_meta;
    GstStructure *param;
    GValue array = G_VALUE_INIT;

    roi_meta = gst_buffer_add_video_region_of_interest_meta (buffer,
        CAPTCHA_ROI_TYPE, r->region.x, r->region.y, r->region.width,
        r->region.height);
    roi_meta->id = ids[i];
    roi_meta->parent_id = r->parent_id;
    if (!reused)
      r->id = roi_meta->id;

    g_value_init (&array, GST_TYPE_ARRAY);
    for (p = 0; p < r->result.length; p++) {
      GValue confidence = G_VALUE_INIT;

      g_value_init (&confidence, G_TYPE_DOUBLE);
      g_value_set_double (&confidence, r->result.char_confidence[p]);
      gst_value_array_append_and_take_value (&array, &confidence);
    }
    param = gst_structure_new ("captcha",
        "text", G_TYPE_STRING, r->result.text,
        "label", G_TYPE_STRING, r->result.text,
        "confidence", G_TYPE_DOUBLE, (gdouble) r->result.confidence,
        "reused", G_TYPE_BOOLEAN, reused, NULL);
    gst_structure_take_value (param, "char-confidences", &array);
    gst_video_region_of_interest_meta_add_param (roi_meta, param);
  }
  g_free (ids);
}

/* Posts the "captcha" element message for the results of this frame. */
static void
gst_captcha_ocr_post (GstCaptchaOcr * self, GstBuffer * buffer)
{
  GstSegment *segment = &GST_BASE_TRANSFORM (self)->segment;
  GstClockTime timestamp = GST_BUFFER_PTS (buffer);
  GstClockTime stream_time = GST_CLOCK_TIME_NONE;
  GstClockTime running_time = GST_CLOCK_TIME_NONE;
  GstStructure *s;
  GValue list = G_VALUE_INIT;
  guint i;

  if (segment->format == GST_FORMAT_TIME && GST_CLOCK_TIME_IS_VALID (timestamp)) {
    running_time = gst_segment_to_running_time (segment, GST_FORMAT_TIME,
        timestamp);
    stream_time = gst_segment_to_stream_time (segment, GST_FORMAT_TIME,
        timestamp);
  }

  g_value_init (&list, GST_TYPE_LIST);
  for (i = 0; i < self->results->len; i++) {
    const GstCaptchaOcrResult *r =
        &g_array_index (self->results, GstCaptchaOcrResult, i);
    GValue value = G_VALUE_INIT;

    g_value_init (&value, GST_TYPE_STRUCTURE);
    g_value_take_boxed (&value, gst_structure_new ("captcha-result",
            "text", G_TYPE_STRING, r->result.text,
            "confidence", G_TYPE_DOUBLE, (gdouble) r->result.confidence,
            "x", G_TYPE_INT, r->region.x,
            "y", G_TYPE_INT, r->region.y,
            "width", G_TYPE_INT, r->region.width,
            "height", G_TYPE_INT, r->region.height,
            "id", G_TYPE_INT, r->id,
            "parent-id", G_TYPE_INT, r->parent_id,
            "changed", G_TYPE_BOOLEAN, r->changed, NULL));
    gst_value_list_append_and_take_value (&list, &value);
  }

  s = gst_structure_new ("captcha",
      "timestamp", G_TYPE_UINT64, timestamp,
      "stream-time", G_TYPE_UINT64, stream_time,
      "running-time", G_TYPE_UINT64, running_time,
      "duration", G_TYPE_UINT64, GST_BUFFER_DURATION (buffer), NULL);
  gst_structure_take_value (s, "results", &list);
  gst_element_post_message (GST_ELEMENT (self),
      gst_message_new_element (GST_OBJECT (self), s));
}

static void
gst_captcha_ocr_add_latency (GstCaptchaOcr * self, gint64 microseconds,
    gboolean unchanged)
{
  GST_OBJECT_LOCK (self);
  if (unchanged)
    self->frames_unchanged++;
  self->latency_us[self->latency_next] = microseconds;
  self->latency_next = (self->latency_next + 1) % LATENCY_WINDOW;
  if (self->latency_count < LATENCY_WINDOW)
    self->latency_count++;
  self->frames_processed++;
  GST_OBJECT_UNLOCK (self);
}

/* Reads the regions [first, first + count) of self->regions (count at most
 * MAX_BATCH_REGIONS) in image as one batch into the same entries of
 * self->results. With skip (skip-unchanged, the frame's only batch), an input
 * equal to the last one kept decodes the kept logits and sets *unchanged;
 * else the input and logits are kept for the next frame. Without skip, the
 * kept ones are forgotten. The backend's preprocessing (CUDA: only each
 * region's bytes are uploaded, the conversion and resize run on the device;
 * CPU: the same on the host), the batch through forward_device (CUDA: one
 * captured graph) and one download; else preprocessing on the host. */
static gboolean
gst_captcha_ocr_read_batch (GstCaptchaOcr * self, const captcha_image * image,
    gint crop_x, gint crop_y, guint first, guint count, gboolean skip,
    gboolean * unchanged, captcha_error * err)
{
  const captcha_backend_ops *ops = self->backend->ops;
  gboolean on_device = ops->preprocess != NULL;
  /* With CUDA graphs the batch is rounded up to a power of two (the extra
   * images are ignored): each batch size costs algorithm timing and a graph
   * capture on first use, and a region count that changes from frame to
   * frame would otherwise pay them again and again. */
  guint padded = 1, i;

  while (ops->capture_begin && padded < count)
    padded <<= 1;
  if (!ops->capture_begin)
    padded = count;
  gst_captcha_ocr_reserve (self, count);
  if (on_device && !gst_captcha_ocr_reserve_device (self, padded, err))
    return FALSE;
  for (i = 0; i < count; i++) {
    captcha_roi region =
        g_array_index (self->regions, GstCaptchaOcrRegion, first + i).region;

    region.x += crop_x;
    region.y += crop_y;
    if (on_device ? ops->preprocess (self->backend, image, &region,
            &self->config, self->device_input + i * self->image_floats,
            err) != CAPTCHA_OK : captcha_preprocess (image, &region,
            &self->config, self->input + i * self->image_floats,
            err) != CAPTCHA_OK)
      return FALSE;
  }
  *unchanged = FALSE;
  /* a frame read without the comparison (skip-unchanged off, several
   * batches) is the previous frame read for the next one: forget the kept
   * input, which is no longer the previous frame's */
  if (!skip)
    self->last_count = 0;
  if (skip) {
    gsize input_bytes = count * self->image_floats * sizeof (float);
    gsize logits_bytes = count * self->classes * sizeof (float);

    /* the device's input on the host (CPU backend: a copy; CUDA: one
     * download, far cheaper than the network) */
    if (on_device && ops->download (self->backend, self->input,
            self->device_input, input_bytes, err) != CAPTCHA_OK)
      return FALSE;
    if (count == self->last_count
        && memcmp (self->input, self->last_input, input_bytes) == 0) {
      memcpy (self->logits, self->last_logits, logits_bytes);
      *unchanged = TRUE;
    }
  }
  if (*unchanged)
    goto decode;
  if (on_device) {
    if (captcha_network_forward_device (self->network, self->device_input,
            (int) padded, self->device_logits, err) != CAPTCHA_OK
        || ops->download (self->backend, self->logits, self->device_logits,
            count * self->classes * sizeof (float), err) != CAPTCHA_OK)
      return FALSE;
  } else if (captcha_network_forward (self->network, self->input, (int) count,
          CAPTCHA_MODE_EVAL, self->logits, err) != CAPTCHA_OK)
    return FALSE;
  if (skip) {
    self->last_input = g_renew (float, self->last_input,
        count * self->image_floats);
    self->last_logits = g_renew (float, self->last_logits,
        count * self->classes);
    memcpy (self->last_input, self->input,
        count * self->image_floats * sizeof (float));
    memcpy (self->last_logits, self->logits,
        count * self->classes * sizeof (float));
    self->last_count = count;
  }
decode:
  for (i = 0; i < count; i++) {
    const GstCaptchaOcrRegion *region =
        &g_array_index (self->regions, GstCaptchaOcrRegion, first + i);
    GstCaptchaOcrResult *r =
        &g_array_index (self->results, GstCaptchaOcrResult, first + i);

    r->region = region->region;
    r->parent_id = region->parent_id;
    if (captcha_decode (&self->config, self->logits + i * self->classes,
            &r->result, err) != CAPTCHA_OK)
      return FALSE;
  }
  return TRUE;
}

static GstFlowReturn
gst_captcha_ocr_transform_frame_ip (GstVideoFilter * filter,
    GstVideoFrame * frame)
{
  GstCaptchaOcr *self = GST_CAPTCHA_OCR (filter);
  GstBuffer *buffer = frame->buffer;
  GstVideoCropMeta *crop = gst_buffer_get_video_crop_meta (buffer);
  /* The mapped frame: a video meta may be larger than the caps' frame
   * (padding), and gst_video_frame_map then gives its size. With a usable
   * crop meta that frame is the one the crop rectangle lies in (videocrop);
   * else only the caps' frame is read, at the top left. */
  const gint caps_width = GST_VIDEO_INFO_WIDTH (&filter->in_info);
  const gint caps_height = GST_VIDEO_INFO_HEIGHT (&filter->in_info);
  gint frame_width = GST_VIDEO_FRAME_WIDTH (frame);
  gint frame_height = GST_VIDEO_FRAME_HEIGHT (frame);
  gint width = MIN (frame_width, caps_width);
  gint height = MIN (frame_height, caps_height);
  gint crop_x = 0, crop_y = 0;
  gboolean cropped = FALSE;
  captcha_image image;
  captcha_roi roi;
  gchar *roi_type;
  guint interval, n, i, accepted;
  gboolean run, message, message_on_change, any_changed = FALSE;
  gdouble min_confidence;
  gboolean skip_unchanged;
  captcha_error err = { 0 };
  gint64 start_time;

  if (G_UNLIKELY (!self->network)) {
    GST_ELEMENT_ERROR (self, CORE, NEGOTIATION, ("No model loaded"), (NULL));
    return GST_FLOW_NOT_NEGOTIATED;
  }

  /* With a crop meta the frame is its rectangle (clipped to the mapped
   * frame, and at most the caps' size, which describes it): regions are in
   * its coordinates and shifted only to be read. An unusable one is ignored:
   * the caps' frame is read. */
  if (crop) {
    guint x = MIN (crop->x, (guint) frame_width);
    guint y = MIN (crop->y, (guint) frame_height);
    guint w = MIN (crop->width, frame_width - x);
    guint h = MIN (crop->height, frame_height - y);

    if (w > 0 && h > 0) {
      cropped = TRUE;
      crop_x = x;
      crop_y = y;
      width = MIN ((gint) w, caps_width);
      height = MIN ((gint) h, caps_height);
    } else {
      GST_WARNING_OBJECT (self, "crop meta %u,%u %ux%u outside the %dx%d "
          "frame: ignored", crop->x, crop->y, crop->width, crop->height,
          frame_width, frame_height);
    }
  }
  if (!cropped) {
    /* the image read is the caps' frame at the top left of the mapped one */
    frame_width = width;
    frame_height = height;
  }

  GST_OBJECT_LOCK (self);
  roi = self->active_roi;
  roi_type = g_strdup (self->active_roi_type);
  interval = self->interval;
  message = self->message;
  message_on_change = self->message_on_change;
  min_confidence = self->min_confidence;
  skip_unchanged = self->skip_unchanged;
  GST_OBJECT_UNLOCK (self);

  memset (&image, 0, sizeof image);
  image.format = self->pixel_format;
  image.yuv_matrix = self->yuv_matrix;
  image.yuv_full_range = self->yuv_full_range;
  image.width = frame_width;
  image.height = frame_height;
  for (i = 0; i < 3; i++) {
    gboolean has_plane = i < GST_VIDEO_FRAME_N_PLANES (frame);
    image.planes[i] = has_plane ? GST_VIDEO_FRAME_PLANE_DATA (frame, i) : NULL;
    image.strides[i] = has_plane ? GST_VIDEO_FRAME_PLANE_STRIDE (frame, i) : 0;
  }
  /* A malformed buffer (planes past its memory, a negative stride) passes
   * unread: no meta, no message, not counted by interval (as a GAP buffer),
   * one warning until the caps change. */
  if (!gst_captcha_ocr_check_frame (frame, &image, &err)) {
    self->frame_late = FALSE;
    g_free (roi_type);
    gst_captcha_ocr_warn_frame (self, err.message);
    return GST_FLOW_OK;
  }

  /* Late by downstream's QoS (submit_input_buffer): passed on unread, with the
   * last results marked reused, and not counted by interval. */
  if (self->frame_late) {
    self->frame_late = FALSE;
    GST_LOG_OBJECT (self, "late frame %" GST_TIME_FORMAT " passed on unread",
        GST_TIME_ARGS (GST_BUFFER_PTS (buffer)));
    g_free (roi_type);
    gst_captcha_ocr_attach (self, buffer, TRUE);
    return GST_FLOW_OK;
  }

  /* Frames between two reads carry the last results, marked reused. */
  run = interval <= 1 || self->frame_index % interval == 0;
  self->frame_index++;
  if (!run) {
    g_free (roi_type);
    gst_captcha_ocr_attach (self, buffer, TRUE);
    return GST_FLOW_OK;
  }

  gst_captcha_ocr_collect_regions (self, buffer, width, height, roi_type, &roi);
  g_free (roi_type);
  n = self->regions->len;

  g_array_set_size (self->results, n);
  if (n > 0) {
    guint first, count;
    gboolean unchanged = FALSE;

    start_time = g_get_monotonic_time ();
    for (first = 0; first < n; first += count) {
      count = MIN (n - first, MAX_BATCH_REGIONS);
      if (!gst_captcha_ocr_read_batch (self, &image, crop_x, crop_y, first,
              count, skip_unchanged && n <= MAX_BATCH_REGIONS, &unchanged,
              &err))
        goto failed;
    }
    gst_captcha_ocr_add_latency (self, g_get_monotonic_time () - start_time,
        unchanged);
  }

  /* Keep the accepted results; note which region positions changed. */
  if (self->texts->len < n)
    g_array_set_size (self->texts, n);
  for (i = n; i < self->texts->len; i++) {
    GstCaptchaOcrText *text = &g_array_index (self->texts, GstCaptchaOcrText,
        i);
    if (text->text[0])
      any_changed = TRUE;       /* a region went away */
  }
  g_array_set_size (self->texts, n);
  accepted = 0;
  for (i = 0; i < n; i++) {
    GstCaptchaOcrResult *r =
        &g_array_index (self->results, GstCaptchaOcrResult, i);
    GstCaptchaOcrText *text = &g_array_index (self->texts, GstCaptchaOcrText,
        i);
    gboolean accept = r->result.confidence >= min_confidence;
    const gchar *now = accept ? r->result.text : "";

    r->changed = strcmp (text->text, now) != 0;
    if (r->changed) {
      any_changed = TRUE;
      g_strlcpy (text->text, now, sizeof (text->text));
    }
    if (!accept) {
      GST_LOG_OBJECT (self, "dropped \"%s\", confidence %f < %f",
          r->result.text, r->result.confidence, min_confidence);
      continue;
    }
    if (accepted != i)
      g_array_index (self->results, GstCaptchaOcrResult, accepted) = *r;
    accepted++;
  }
  g_array_set_size (self->results, accepted);

  gst_captcha_ocr_attach (self, buffer, FALSE);
  if (message && accepted > 0 && (!message_on_change || any_changed))
    gst_captcha_ocr_post (self, buffer);
  return GST_FLOW_OK;

failed:
  GST_ELEMENT_ERROR (self, STREAM, FAILED,
      ("Reading the frame failed: %s", err.message), (NULL));
  g_array_set_size (self->results, 0);
  return GST_FLOW_ERROR;
}
