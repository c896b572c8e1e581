/* captchaocr on the shared real data (../shared/data/captcha-v2/test): the
 * element behind GStreamer's own decoder and converter
 * (filesrc ! pngdec ! videoconvert ! captchaocr) must read every image as
 * the command-line path reads it (stb_image decoding, captcha_preprocess,
 * captcha_network_forward, captcha_decode): a result must not depend on the
 * front end. Skips (77) when the data or the GStreamer plugins are absent.
 *
 * The model: the bundled captcha-default.safetensors when present, else a
 * freshly initialized network (seed 1); either way both sides load the same
 * file. With the bundled model the element's accuracy against the file
 * names is printed too (not asserted: that is the trainer's business).
 *
 * With a usable GPU the element runs again with device=cuda (preprocessing on the
 * device, the forward pass as a CUDA graph) and must give the same texts, the
 * confidences within 1e-4 relative (FP32 on both, different summation orders);
 * without one that case prints why it did not run.
 */
#include "captcha-build-config.h"

#include <glib/gstdio.h>
#include <gst/check/gstcheck.h>
#include <math.h>
#include <string.h>

#include "backend.h"
#include "decode.h"
#include "image_io.h"
#include "model_file.h"
#include "network.h"
#include "preprocess.h"
#include "test_util.h"

#define MAX_IMAGES 24 /* keep the run short: one pipeline each */

static gchar *model_path;
static gboolean model_is_bundled;
static captcha_path_list images;

/* The library's reading of one file, as captcha-predict does it. */
static captcha_result read_with_library(const gchar *path)
{
    static captcha_backend *backend;
    static captcha_network *network;
    captcha_error err = {0};
    captcha_rgb_image image = {0};
    captcha_image view;
    captcha_result result;
    const captcha_config *config;
    float *input, *logits;

    if (!network) {
        fail_unless(captcha_backend_create(CAPTCHA_DEVICE_CPU, 0, 0, &backend, NULL, 0, &err) ==
                        CAPTCHA_OK,
                    "%s", err.message);
        fail_unless(captcha_model_load(model_path, backend, &network, NULL, 0, &err) == CAPTCHA_OK,
                    "%s", err.message);
    }
    config = captcha_network_config(network);
    fail_unless(captcha_rgb_image_read(path, &image, &err) == CAPTCHA_OK, "%s", err.message);
    view = captcha_rgb_image_view(&image);
    input = g_new(float, 3 * config->input_height * config->input_width);
    logits = g_new(float, captcha_config_classes(config));
    fail_unless(captcha_preprocess(&view, NULL, config, input, &err) == CAPTCHA_OK, "%s",
                err.message);
    fail_unless(captcha_network_forward(network, input, 1, CAPTCHA_MODE_EVAL, logits, &err) ==
                    CAPTCHA_OK,
                "%s", err.message);
    fail_unless(captcha_decode(config, logits, &result, &err) == CAPTCHA_OK, "%s", err.message);
    g_free(input);
    g_free(logits);
    captcha_rgb_image_free(&image);
    return result;
}

/* The element's reading on device ("cpu", "cuda"): the first result of the "captcha"
 * message. */
static gboolean read_with_element(const gchar *path, const gchar *device, gchar **text,
                                  gdouble *confidence)
{
    gchar *description =
        g_strdup_printf("filesrc location=\"%s\" ! pngdec ! "
                        "videoconvert ! captchaocr model=\"%s\" device=%s ! fakesink",
                        path, model_path, device);
    GError *error = NULL;
    GstElement *pipeline = gst_parse_launch(description, &error);
    GstBus *bus;
    GstMessage *msg;
    gboolean found = FALSE;

    fail_unless(pipeline != NULL && error == NULL, "%s: %s", description,
                error ? error->message : "");
    g_free(description);
    bus = gst_element_get_bus(pipeline);
    fail_unless(gst_element_set_state(pipeline, GST_STATE_PLAYING) != GST_STATE_CHANGE_FAILURE);
    while ((msg = gst_bus_timed_pop_filtered(
                bus, 60 * GST_SECOND, GST_MESSAGE_ELEMENT | GST_MESSAGE_EOS | GST_MESSAGE_ERROR))) {
        GstMessageType type = GST_MESSAGE_TYPE(msg);

        if (type == GST_MESSAGE_ERROR) {
            gst_message_parse_error(msg, &error, NULL);
            fail("%s: %s", path, error->message);
        }
        if (type == GST_MESSAGE_ELEMENT && !found &&
            gst_structure_has_name(gst_message_get_structure(msg), "captcha")) {
            const GValue *list = gst_structure_get_value(gst_message_get_structure(msg), "results");
            const GstStructure *r = gst_value_get_structure(gst_value_list_get_value(list, 0));

            *text = g_strdup(gst_structure_get_string(r, "text"));
            fail_unless(gst_structure_get_double(r, "confidence", confidence));
            found = TRUE;
        }
        gst_message_unref(msg);
        if (type == GST_MESSAGE_EOS)
            break;
    }
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(bus);
    gst_object_unref(pipeline);
    return found;
}

GST_START_TEST(test_real_images_match_library)
{
    guint n = MIN(images.count, MAX_IMAGES), i, correct = 0;

    for (i = 0; i < n; i++) {
        const gchar *path = images.paths[i];
        captcha_result expected = read_with_library(path);
        gchar *text = NULL, label[64];
        gdouble confidence = 0.0;

        fail_unless(read_with_element(path, "cpu", &text, &confidence), "%s: no captcha message",
                    path);
        fail_unless_equals_string(text, expected.text);
        fail_unless(fabs(confidence - expected.confidence) <= 1e-4 * expected.confidence + 1e-7,
                    "%s: confidence %g, library %g", path, confidence, expected.confidence);
        if (captcha_label_from_path(path, label, sizeof(label)) > 0 && strcmp(label, text) == 0)
            correct++;
        g_free(text);
    }
    g_print("%u images read alike by the element and the library "
            "(model %s)\n",
            n, model_path);
    if (model_is_bundled)
        g_print("bundled model: %u/%u codes read right\n", correct, n);
}

GST_END_TEST;

GST_START_TEST(test_real_images_cuda_match_cpu)
{
    guint n = MIN(images.count, MAX_IMAGES), i;
    captcha_backend *gpu = NULL;
    captcha_error err = {0};

    if (captcha_backend_cuda_create(0, &gpu, &err) != CAPTCHA_OK) {
        g_print("device=cuda not compared: %s\n", err.message);
        return;
    }
    captcha_backend_destroy(gpu);
    for (i = 0; i < n; i++) {
        const gchar *path = images.paths[i];
        gchar *cpu_text = NULL, *cuda_text = NULL;
        gdouble cpu_confidence = 0.0, cuda_confidence = 0.0;

        fail_unless(read_with_element(path, "cpu", &cpu_text, &cpu_confidence), "%s: no message",
                    path);
        fail_unless(read_with_element(path, "cuda", &cuda_text, &cuda_confidence),
                    "%s: no message with device=cuda", path);
        fail_unless_equals_string(cuda_text, cpu_text);
        fail_unless(fabs(cuda_confidence - cpu_confidence) <= 1e-4 * cpu_confidence + 1e-7,
                    "%s: confidence %g with device=cuda, %g with device=cpu", path,
                    cuda_confidence, cpu_confidence);
        g_free(cpu_text);
        g_free(cuda_text);
    }
    g_print("%u images read alike with device=cuda and device=cpu\n", n);
}

GST_END_TEST;

static gboolean make_random_model(const gchar *path)
{
    captcha_backend *backend = NULL;
    captcha_network *network = NULL;
    captcha_config config;
    captcha_error err = {0};
    gboolean ok;

    captcha_config_reference(&config);
    ok = captcha_backend_create(CAPTCHA_DEVICE_CPU, 0, 0, &backend, NULL, 0, &err) == CAPTCHA_OK &&
         captcha_network_create(backend, &config, 1, &network, &err) == CAPTCHA_OK &&
         captcha_model_save(network, path, NULL, &err) == CAPTCHA_OK;
    if (!ok)
        g_printerr("cannot make the test model: %s\n", err.message);
    captcha_network_destroy(network);
    captcha_backend_destroy(backend);
    return ok;
}

int main(int argc, char **argv)
{
    const gchar *bundled = CAPTCHA_SOURCE_DIR "/model/captcha-default.safetensors";
    const gchar *data = captcha_test_shared_data();
    const gchar *plugins[] = {"captchaocr", "pngdec", "videoconvert", "filesrc", "fakesink"};
    gchar *dir, *tmp_model = NULL;
    captcha_error err = {0};
    Suite *s;
    TCase *tc;
    guint i;
    int failed;

    gst_check_init(&argc, &argv);
    if (!data) {
        g_print("SKIP: the shared data folder (../shared/data, or $CAPTCHA_SHARED_DATA) is absent\n");
        return CAPTCHA_TEST_SKIP;
    }
    dir = g_build_filename(data, "captcha-v2", "test", NULL);
    if (!g_file_test(dir, G_FILE_TEST_IS_DIR) ||
        captcha_path_list_add_folder(&images, dir, &err) != CAPTCHA_OK || images.count == 0) {
        g_print("SKIP: no images in %s %s\n", dir, err.message);
        return CAPTCHA_TEST_SKIP;
    }
    g_free(dir);
    for (i = 0; i < G_N_ELEMENTS(plugins); i++) {
        GstElementFactory *factory = gst_element_factory_find(plugins[i]);
        if (!factory) {
            g_print("SKIP: GStreamer element %s is not installed\n", plugins[i]);
            return CAPTCHA_TEST_SKIP;
        }
        gst_object_unref(factory);
    }

    if (g_file_test(bundled, G_FILE_TEST_IS_REGULAR)) {
        model_path = g_strdup(bundled);
        model_is_bundled = TRUE;
    } else {
        tmp_model = g_build_filename(captcha_test_tmpdir(), "captchaocr-data.safetensors", NULL);
        if (!make_random_model(tmp_model))
            return 1;
        model_path = g_strdup(tmp_model);
    }

    s = suite_create("captchaocr-data");
    tc = tcase_create("real images");
    tcase_set_timeout(tc, 300);
    suite_add_tcase(s, tc);
    tcase_add_test(tc, test_real_images_match_library);
    tcase_add_test(tc, test_real_images_cuda_match_cpu);
    failed = gst_check_run_suite(s, "captchaocr-data", __FILE__);

    if (tmp_model) {
        g_unlink(tmp_model);
        if (!g_getenv("CAPTCHA_TEST_TMPDIR"))
            g_rmdir(captcha_test_tmpdir());
    }
    g_free(tmp_model);
    g_free(model_path);
    captcha_path_list_free(&images);
    return failed ? 1 : 0;
}
