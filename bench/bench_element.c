/* Per-frame cost of the captchaocr element on the CPU: 1280x720 BGRx frames (as ximagesrc
 * delivers) with a 200x50 region read through roi-*, pushed through a GstHarness one by one.
 * Prints the mean, median, p99 and max of the wall time each push takes (the element's
 * whole in-place transform: region preprocessing, network, decode, meta, bus message).
 *
 *   bench-element [--frames N (500)] [--device cpu|auto|cuda] [MODEL.safetensors]
 *
 * Without MODEL, the bundled model (model/captcha-default.safetensors). A benchmark: it
 * asserts nothing. Run with GST_PLUGIN_PATH set to the build's gst/ folder (meson devenv or
 * the bench's own default below). */
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "captcha-build-config.h"
#include "bench_util.h"

int main(int argc, char **argv)
{
    int frames = 500;
    const char *device = "cpu", *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--frames") && i + 1 < argc)
            frames = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (argv[i][0] == '-') {
            printf("usage: %s [--frames N] [--device cpu|auto|cuda] [MODEL]\n", argv[0]);
            return 2;
        } else
            model = argv[i];
    }
    if (frames < 10)
        frames = 10;
    if (!g_getenv("GST_PLUGIN_PATH"))
        g_setenv("GST_PLUGIN_PATH", CAPTCHA_BUILD_DIR "/gst", TRUE);
    gst_init(&argc, &argv);

    GstElement *element = gst_element_factory_make("captchaocr", NULL);
    if (!element) {
        fprintf(stderr, "bench-element: cannot create captchaocr (GST_PLUGIN_PATH=%s)\n",
                g_getenv("GST_PLUGIN_PATH"));
        return 1;
    }
    gst_util_set_object_arg(G_OBJECT(element), "device", device);
    /* every frame is the same picture: without skip-unchanged off, only the first would run
     * the network */
    g_object_set(element, "roi-x", 540, "roi-y", 335, "roi-width", 200, "roi-height", 50,
                 "skip-unchanged", FALSE, NULL);
    if (model)
        g_object_set(element, "model", model, NULL);
    GstHarness *h = gst_harness_new_with_element(element, "sink", "src");
    gst_object_unref(element);
    gst_harness_set_src_caps_str(h, "video/x-raw,format=BGRx,width=1280,height=720,"
                                    "framerate=30/1");

    /* a frame with a dark text-like pattern in the region */
    const gsize size = 1280 * 720 * 4;
    guint8 *pixels = g_malloc(size);
    for (gsize i = 0; i < size; i++)
        pixels[i] = (guint8)(200 + (i * 2654435761u >> 27));
    GstBuffer *frame = gst_buffer_new_wrapped(pixels, size);

    double *times = g_new(double, frames);
    for (int i = -20; i < frames; i++) {
        GstBuffer *b = gst_buffer_copy(frame); /* shares memory: no pixel copy */
        GST_BUFFER_PTS(b) = (GstClockTime)(i + 20) * GST_SECOND / 30;
        gint64 t0 = g_get_monotonic_time();
        GstFlowReturn ret = gst_harness_push(h, b);
        gint64 t1 = g_get_monotonic_time();
        if (ret != GST_FLOW_OK) {
            fprintf(stderr, "bench-element: push returned %s\n", gst_flow_get_name(ret));
            return 1;
        }
        gst_buffer_unref(gst_harness_pull(h));
        if (i >= 0)
            times[i] = (double)(t1 - t0);
        /* drop the bus messages the element posted */
        GstBus *bus = gst_element_get_bus(h->element);
        if (bus) {
            gst_bus_set_flushing(bus, TRUE);
            gst_bus_set_flushing(bus, FALSE);
            gst_object_unref(bus);
        }
    }
    double latency = 0;
    g_object_get(h->element, "latency", &latency, NULL);
    double mean = 0;
    for (int i = 0; i < frames; i++)
        mean += times[i];
    mean /= frames;
    qsort(times, (size_t)frames, sizeof *times, bench_compare_double);
    printf("captchaocr device=%s, 1280x720 BGRx frames, 200x50 region, %d frames\n", device,
           frames);
    printf("per frame (us): mean %.0f  median %.0f  p99 %.0f  max %.0f  (element's latency "
           "property: %.0f)\n",
           mean, times[frames / 2], times[(int)(frames * 0.99)], times[frames - 1], latency);
    g_free(times);
    gst_buffer_unref(frame);
    gst_harness_teardown(h);
    return 0;
}
