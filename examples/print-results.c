/* print-results: runs a pipeline with a captchaocr element and prints the
 * text of every region it attached, read from the buffers'
 * GstVideoRegionOfInterestMeta (type "captcha", param structure "captcha").
 *
 * Usage: print-results [PIPELINE DESCRIPTION]
 *   e.g. print-results filesrc location=a.png ! decodebin ! videoconvert ! \
 *            imagefreeze num-buffers=1 ! captchaocr model=m.safetensors ! fakesink
 *   Without arguments: videotestsrc num-buffers=3 ! captchaocr ! fakesink.
 *
 * The metas are read on the src pad of the last captchaocr in the stream
 * (the most downstream one, when there are several), by a buffer probe; an
 * application would do the same in an appsink or a later probe, but before
 * any videoscale or format-changing videoconvert (which drop the params in
 * GStreamer 1.22). Every region on the buffer is printed, including those of
 * earlier captchaocr elements.
 *
 * Output: a header line "pts id parent region text confidence reused"
 * (tab-separated), then one line per region:
 *   PTS<TAB>id<TAB>parent-id<TAB>x,y WIDTHxHEIGHT<TAB>text<TAB>confidence<TAB>new|reused
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include <gst/gst.h>
#include <gst/video/video.h>

static GstPadProbeReturn
print_regions (G_GNUC_UNUSED GstPad * pad, GstPadProbeInfo * info,
    G_GNUC_UNUSED gpointer user_data)
{
  GstBuffer *buffer = GST_PAD_PROBE_INFO_BUFFER (info);
  GQuark captcha = g_quark_from_static_string ("captcha");
  gpointer state = NULL;
  GstMeta *meta;

  while ((meta = gst_buffer_iterate_meta_filtered (buffer, &state,
              GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE))) {
    GstVideoRegionOfInterestMeta *roi = (GstVideoRegionOfInterestMeta *) meta;
    GstStructure *param;
    gdouble confidence = 0.0;
    gboolean reused = FALSE;

    if (roi->roi_type != captcha)
      continue;
    param = gst_video_region_of_interest_meta_get_param (roi, "captcha");
    if (!param)
      continue;
    gst_structure_get_double (param, "confidence", &confidence);
    gst_structure_get_boolean (param, "reused", &reused);
    g_print ("%" GST_TIME_FORMAT "\t%d\t%d\t%u,%u %ux%u\t%s\t%g\t%s\n",
        GST_TIME_ARGS (GST_BUFFER_PTS (buffer)), roi->id, roi->parent_id,
        roi->x, roi->y, roi->w, roi->h,
        gst_structure_get_string (param, "text"), confidence,
        reused ? "reused" : "new");
  }
  return GST_PAD_PROBE_OK;
}

/* The last element made by the captchaocr factory in bin, or NULL. */
static GstElement *
find_captchaocr (GstBin * bin)
{
  /* sorted: downstream elements before upstream ones (sinks first), so the
   * first captchaocr met is the last in the stream; bins are searched the
   * same way where they stand */
  GstIterator *it = gst_bin_iterate_sorted (bin);
  GValue item = G_VALUE_INIT;
  GstElement *found = NULL;

  while (!found && gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    GstElement *element = g_value_get_object (&item);
    GstElementFactory *factory = gst_element_get_factory (element);

    if (factory && g_strcmp0 (GST_OBJECT_NAME (factory), "captchaocr") == 0)
      found = gst_object_ref (element);
    else if (GST_IS_BIN (element))
      found = find_captchaocr (GST_BIN (element));
    g_value_reset (&item);
  }
  g_value_unset (&item);
  gst_iterator_free (it);
  return found;
}

int
main (int argc, char **argv)
{
  GError *error = NULL;
  GstElement *pipeline, *ocr;
  GstPad *pad;
  GstBus *bus;
  GstMessage *msg;
  int status = 0;

  gst_init (&argc, &argv);
  /* a pipeline description never starts with '-': any such option (other
   * than GStreamer's own --gst-*, which gst_init took) is answered by usage */
  if (argc > 1 && argv[1][0] == '-') {
    gboolean help = !strcmp (argv[1], "-h") || !strcmp (argv[1], "--help");

    const char *usage = "Usage: %s [PIPELINE DESCRIPTION]\n"
        "Runs the pipeline (default: videotestsrc num-buffers=3 ! captchaocr ! "
        "fakesink) and prints\na header line, then one line per \"captcha\" "
        "region on each buffer leaving the\nlast captchaocr (earlier "
        "captchaocr elements' regions included):\n  PTS<TAB>id<TAB>parent-id"
        "<TAB>x,y WIDTHxHEIGHT<TAB>text<TAB>confidence<TAB>new|reused\n";

    /* asked for: on stdout; after an error: on stderr, which a script
     * reading the results from stdout does not take for a result */
    if (help) {
      g_print (usage, argv[0]);
      return 0;
    }
    g_printerr ("%s: unknown option %s\n", argv[0], argv[1]);
    g_printerr (usage, argv[0]);
    return 2;
  }
  /* each argument one token, as gst-launch-1.0 takes them (a property
   * value with a space needs no quoting inside the argument) */
  if (argc > 1)
    pipeline = gst_parse_launchv ((const gchar **) argv + 1, &error);
  else
    pipeline = gst_parse_launch
        ("videotestsrc num-buffers=3 ! captchaocr ! fakesink", &error);
  if (!pipeline) {
    g_printerr ("pipeline: %s\n", error->message);
    g_error_free (error);
    return 2;
  }
  if (error) {                  /* recoverable: e.g. a missing element */
    g_printerr ("pipeline: %s\n", error->message);
    g_clear_error (&error);
  }
  /* one element is no pipeline (nothing would link it); a bin ("( ... )") has
   * no bus of its own: it runs inside a pipeline, as in gst-launch-1.0 */
  if (!GST_IS_BIN (pipeline)) {
    g_printerr ("pipeline: the description is one element, %s, not a pipeline "
        "(link a source, captchaocr and a sink with !)\n",
        GST_OBJECT_NAME (pipeline));
    gst_object_unref (pipeline);
    return 2;
  }
  if (!GST_IS_PIPELINE (pipeline)) {
    GstElement *bin = pipeline;

    pipeline = gst_pipeline_new (NULL);
    gst_bin_add (GST_BIN (pipeline), bin);
  }
  if (!(ocr = find_captchaocr (GST_BIN (pipeline)))) {
    g_printerr ("the pipeline has no captchaocr element\n");
    gst_object_unref (pipeline);
    return 2;
  }
  pad = gst_element_get_static_pad (ocr, "src");
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER, print_regions, NULL, NULL);
  gst_object_unref (pad);
  gst_object_unref (ocr);

  g_print ("pts\tid\tparent\tregion\ttext\tconfidence\treused\n");
  gst_element_set_state (pipeline, GST_STATE_PLAYING);
  bus = gst_element_get_bus (pipeline);
  msg = gst_bus_timed_pop_filtered (bus, GST_CLOCK_TIME_NONE,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
    gchar *debug = NULL;

    gst_message_parse_error (msg, &error, &debug);
    g_printerr ("error from %s: %s\n%s\n", GST_OBJECT_NAME (msg->src),
        error->message, debug ? debug : "");
    g_clear_error (&error);
    g_free (debug);
    status = 1;
  }
  gst_message_unref (msg);
  gst_object_unref (bus);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (pipeline);
  return status;
}
