/* The whole network on the CPU backend, independent of PyTorch:
 *  - the tensor table matches the reference design (names, shapes, counts) and follows the
 *    config (flatten size for 64x192, classes for a 6-character model);
 *  - eval results do not depend on the batch an image is in;
 *  - the whole backward pass agrees with central finite differences of the train-mode loss
 *    along directions mixing the gradient and random noise (float32: a step moving the loss by
 *    about 1e-3, relative tolerance 2e-2; ReLU kinks and float32 rounding of the loss limit
 *    the precision; op-level gradients are checked tightly in test_ops and against PyTorch in
 *    test_parity_torch);
 *  - the CPU backend's Winograd inference convolutions agree with direct convolution on the
 *    bundled (trained) model, and the whole fast inference path (blocked layouts, Winograd)
 *    with plain NCHW direct convolutions at other input sizes, and the NHWC layout of the
 *    last blocks with the blocked one: logits within 1e-4;
 *  - the CPU backend's caches stay bounded across batch sizes, and evicted primitives give
 *    the same logits when made again;
 *  - bad arguments are refused with a message. */
#include <malloc.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend.h"
#include "captcha-build-config.h"
#include "model_file.h"
#include "network.h"
#include "test_util.h"

static captcha_backend *backend;

static int group_setup(void **state)
{
    (void)state;
    captcha_error err = {0};
    if (captcha_backend_cpu_create(2, &backend, &err) != CAPTCHA_OK) {
        fprintf(stderr, "cpu backend: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    captcha_backend_destroy(backend);
    return 0;
}

static captcha_network *make_network(const captcha_config *config, uint64_t seed)
{
    captcha_network *net = NULL;
    captcha_error err = {0};
    if (captcha_network_create(backend, config, seed, &net, &err) != CAPTCHA_OK)
        fail_msg("network create: %s", err.message);
    return net;
}

static void test_tensor_table(void **state)
{
    (void)state;
    captcha_config config;
    captcha_config_reference(&config);
    captcha_network *net = make_network(&config, 1);
    /* 6 blocks x (3 conv weights + 3 BN x 4 tensors) + fc weight + bias */
    assert_int_equal(captcha_network_tensor_count(net), 6 * 15 + 2);
    const captcha_tensor_info *t = captcha_network_tensor(net, 0);
    assert_string_equal(t->name, "cnn_layers.0.block.0.weight");
    assert_int_equal(t->ndim, 4);
    assert_int_equal(t->shape[0], 32);
    assert_int_equal(t->shape[1], 3);
    int i = captcha_network_find_tensor(net, "cnn_layers.3.skip.0.weight");
    assert_true(i >= 0);
    t = captcha_network_tensor(net, (size_t)i);
    assert_int_equal(t->shape[0], 128);
    assert_int_equal(t->shape[1], 64);
    assert_int_equal(t->shape[2], 1);
    i = captcha_network_find_tensor(net, "cnn_layers.5.block.4.running_var");
    assert_true(i >= 0);
    assert_int_equal(captcha_network_tensor(net, (size_t)i)->kind, CAPTCHA_TENSOR_RUNNING_STAT);
    i = captcha_network_find_tensor(net, "fc_layers.0.weight");
    t = captcha_network_tensor(net, (size_t)i);
    assert_int_equal(t->shape[0], 180);
    assert_int_equal(t->shape[1], 1024);
    /* PyTorch's parameter count for this model: sum over blocks of conv weights
     * (9*in*out + 9*out*out + in*out) + 3 BN * 2 * out, plus 1024*180 + 180 */
    size_t expected = 0;
    const int in[6] = {3, 32, 64, 64, 128, 256}, out[6] = {32, 64, 64, 128, 256, 256};
    for (int b = 0; b < 6; b++)
        expected += (size_t)9 * in[b] * out[b] + (size_t)9 * out[b] * out[b] +
                    (size_t)in[b] * out[b] + (size_t)6 * out[b];
    expected += 1024 * 180 + 180;
    assert_int_equal(captcha_network_parameter_count(net), expected);
    captcha_network_destroy(net);

    /* input 64x192, 6 characters of 10: flatten 256*2*6, 60 classes */
    captcha_error err = {0};
    config.input_height = 64;
    config.input_width = 192;
    config.length = 6;
    assert_int_equal(captcha_config_set_charset(&config, "0123456789", &err), CAPTCHA_OK);
    net = make_network(&config, 1);
    t = captcha_network_tensor(net, (size_t)captcha_network_find_tensor(net, "fc_layers.0.weight"));
    assert_int_equal(t->shape[0], 60);
    assert_int_equal(t->shape[1], 256 * 2 * 6);
    float input[3 * 64 * 192], logits[2 * 60];
    captcha_test_fill_uniform(input, sizeof input / sizeof *input, -1, 1, 5);
    assert_int_equal(captcha_network_forward(net, input, 1, CAPTCHA_MODE_EVAL, logits, &err),
                     CAPTCHA_OK);
    for (int k = 0; k < 60; k++)
        assert_true(isfinite(logits[k]));
    captcha_network_destroy(net);
}

static void test_batch_independence(void **state)
{
    (void)state;
    captcha_config config;
    captcha_config_reference(&config);
    captcha_network *net = make_network(&config, 7);
    const size_t per_image = 3 * 32 * 128;
    const int batch = 5, classes = 180;
    float *input = malloc(sizeof(float) * per_image * batch);
    float *logits = malloc(sizeof(float) * classes * batch);
    float single[180];
    captcha_test_fill_uniform(input, per_image * batch, -1, 1, 11);
    captcha_error err = {0};
    assert_int_equal(captcha_network_forward(net, input, batch, CAPTCHA_MODE_EVAL, logits, &err),
                     CAPTCHA_OK);
    for (int n = 0; n < batch; n++) {
        assert_int_equal(captcha_network_forward(net, input + n * per_image, 1, CAPTCHA_MODE_EVAL,
                                                 single, &err),
                         CAPTCHA_OK);
        assert_true(captcha_test_max_abs_error(single, logits + n * classes, classes) <= 1e-5);
    }
    /* different images give different logits (the input reaches the output) */
    assert_true(captcha_test_max_abs_error(logits, logits + classes, classes) > 1e-3);
    free(input);
    free(logits);
    captcha_network_destroy(net);
}

/* Eval logits of two networks on the same input (a, b: [batch * classes] scratch)
 * agree to 1e-4, the PyTorch parity tolerance. */
static void expect_same_eval_logits(captcha_network *x, captcha_network *y, const float *input,
                                    int batch, int classes, float *a, float *b, const char *what)
{
    captcha_error err = {0};
    assert_int_equal(captcha_network_forward(x, input, batch, CAPTCHA_MODE_EVAL, a, &err),
                     CAPTCHA_OK);
    assert_int_equal(captcha_network_forward(y, input, batch, CAPTCHA_MODE_EVAL, b, &err),
                     CAPTCHA_OK);
    double diff = captcha_test_max_abs_error(a, b, (size_t)classes * batch);
    fprintf(stderr, "%s: eval logits max abs difference %.3g (tolerance 1e-4)\n", what, diff);
    assert_true(diff <= 1e-4);
}

/* expect_same_eval_logits for two reference-geometry (32x128, 180 logits) networks at each
 * batch size of batches[0..count), on one uniform [-1, 1] input; label names the pair. */
static void expect_same_over_batches(captcha_network *x, captcha_network *y, const int *batches,
                                     size_t count, const char *label)
{
    int max_batch = 1;
    for (size_t i = 0; i < count; i++)
        max_batch = batches[i] > max_batch ? batches[i] : max_batch;
    const int classes = 180;
    const size_t per_image = 3 * 32 * 128;
    float *input = malloc(sizeof(float) * per_image * max_batch);
    float *a = malloc(sizeof(float) * classes * max_batch);
    float *b = malloc(sizeof(float) * classes * max_batch);
    captcha_test_fill_uniform(input, per_image * max_batch, -1, 1, 5);
    for (size_t i = 0; i < count; i++) {
        char what[96];
        snprintf(what, sizeof what, "batch %d, %s", batches[i], label);
        expect_same_eval_logits(x, y, input, batches[i], classes, a, b, what);
    }
    free(input);
    free(a);
    free(b);
}

/* A CPU backend created with environment variable name=value (unset again after). */
static captcha_backend *backend_with_env(const char *name, const char *value)
{
    captcha_backend *made = NULL;
    captcha_error err = {0};
    setenv(name, value, 1);
    captcha_status status = captcha_backend_cpu_create(2, &made, &err);
    unsetenv(name);
    if (status != CAPTCHA_OK)
        fail_msg("cpu backend with %s=%s: %s", name, value, err.message);
    return made;
}

/* The bundled (trained) model on backend `on`. */
static captcha_network *load_bundled(captcha_backend *on)
{
    captcha_network *net = NULL;
    captcha_error err = {0};
    if (captcha_model_load(CAPTCHA_SOURCE_DIR "/model/captcha-default.safetensors", on, &net,
                           NULL, 0, &err) != CAPTCHA_OK)
        fail_msg("%s", err.message);
    return net;
}

/* Winograd convolution rounds differently from direct convolution; on trained weights the
 * logits must still agree to 1e-4 (the PyTorch parity tolerance). */
static void test_winograd_matches_direct(void **state)
{
    (void)state;
    captcha_backend *direct = backend_with_env("CAPTCHA_CPU_CONV_ALG", "direct");
    captcha_network *fast = load_bundled(backend), *plain = load_bundled(direct);
    /* batch 1: F(2x2,3x3) on blocks 3-4 (oneDNN offers it at batches 1-2 only), F(4x4,3x3)
     * on blocks 1-2; batch 3: F(4x4,3x3) everywhere */
    static const int batches[] = {1, 3};
    expect_same_over_batches(fast, plain, batches, 2, "bundled model, Winograd vs direct");
    captcha_network_destroy(fast);
    captcha_network_destroy(plain);
    captcha_backend_destroy(direct);
}

/* The last two blocks' activations are channels-last (NHWC, oneDNN's brgemm convolutions)
 * by default; with CAPTCHA_CPU_NHWC_PIXELS=0 every activation stays blocked (nChw16c). Both
 * layouts, and buffers with or without huge pages (CAPTCHA_CPU_HUGE_PAGES=0, weight copies
 * carved from shared slabs either way), give the same logits on the bundled model within the parity tolerance, at batch 1 and at a batch where
 * other kernels are chosen. */
static void test_layouts_and_pages_match(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value;
    } variants[] = {{"CAPTCHA_CPU_NHWC_PIXELS", "0"}, {"CAPTCHA_CPU_HUGE_PAGES", "0"}};
    static const int batches[] = {1, 3};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        captcha_backend *other = backend_with_env(variants[i].name, variants[i].value);
        captcha_network *fast = load_bundled(backend), *alt = load_bundled(other);
        char label[96];
        snprintf(label, sizeof label, "bundled model, default vs %s=%s", variants[i].name,
                 variants[i].value);
        expect_same_over_batches(fast, alt, batches, 2, label);
        captcha_network_destroy(fast);
        captcha_network_destroy(alt);
        captcha_backend_destroy(other);
    }
    /* a CAPTCHA_CPU_NHWC_PIXELS that is not a whole number >= 0 keeps the default: the
     * same kernels, so bit-identical logits */
    static const char *const invalid[] = {"", "abc", "-1", "16px"};
    const size_t per_image = 3 * 32 * 128;
    float input[3 * 32 * 128], a[180], b[180];
    captcha_test_fill_uniform(input, per_image, -1, 1, 8);
    captcha_network *fast = load_bundled(backend);
    captcha_error err = {0};
    assert_int_equal(captcha_network_forward(fast, input, 1, CAPTCHA_MODE_EVAL, a, &err),
                     CAPTCHA_OK);
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        captcha_backend *other = backend_with_env("CAPTCHA_CPU_NHWC_PIXELS", invalid[i]);
        captcha_network *alt = load_bundled(other);
        assert_int_equal(captcha_network_forward(alt, input, 1, CAPTCHA_MODE_EVAL, b, &err),
                         CAPTCHA_OK);
        if (memcmp(a, b, sizeof a))
            fail_msg("CAPTCHA_CPU_NHWC_PIXELS=\"%s\" did not keep the default", invalid[i]);
        captcha_network_destroy(alt);
        captcha_backend_destroy(other);
    }
    captcha_network_destroy(fast);
}

/* The CPU inference path (blocked and NHWC layouts between layers, Winograd, each
 * block's activations written over its predecessor's dead ones) against plain NCHW direct
 * convolutions called op by op (CAPTCHA_CPU_CONV_LAYOUT=plain, and the backend's native-
 * layout ops hidden so that the network takes the path of the CUDA backend, one buffer
 * per activation) at the reference input and at other geometries, where spatial sizes
 * reach 1x1 or stay wide: the same weights (a saved and reloaded random network, running
 * statistics included) give the same logits within 1e-4. */
static void test_fast_path_geometries(void **state)
{
    (void)state;
    static const int sizes[][2] = {{128, 32}, {32, 32}, {96, 64}, {256, 32}}; /* width, height */
    captcha_backend *plain_backend = backend_with_env("CAPTCHA_CPU_CONV_LAYOUT", "plain");
    const captcha_backend_ops *cpu_ops = plain_backend->ops;
    captcha_backend_ops op_by_op = *cpu_ops;
    op_by_op.conv2d_forward_native = NULL;
    op_by_op.linear_forward_native = NULL;
    plain_backend->ops = &op_by_op;
    captcha_error err = {0};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        captcha_config config;
        captcha_config_reference(&config);
        config.input_width = sizes[k][0];
        config.input_height = sizes[k][1];
        captcha_network *fast = make_network(&config, 21 + k), *plain = NULL;
        /* non-trivial running statistics: a few train-mode forwards */
        const int batch = 3, classes = captcha_config_classes(&config);
        const size_t per_image = 3 * (size_t)config.input_height * config.input_width;
        float *input = malloc(sizeof(float) * per_image * batch);
        float *a = malloc(sizeof(float) * classes * batch), *b = malloc(sizeof(float) * classes * batch);
        captcha_test_fill_uniform(input, per_image * batch, -1, 1, 31 + k);
        for (int i = 0; i < 3; i++)
            assert_int_equal(
                captcha_network_forward(fast, input, batch, CAPTCHA_MODE_TRAIN, a, &err),
                CAPTCHA_OK);
        char path[256];
        snprintf(path, sizeof path, "%s/fast-path-%d.safetensors", captcha_test_tmpdir(), (int)k);
        if (captcha_model_save(fast, path, NULL, &err) ||
            captcha_model_load(path, plain_backend, &plain, NULL, 0, &err))
            fail_msg("%s", err.message);
        unlink(path);
        for (int n = 1; n <= batch; n += batch - 1) {
            char what[64];
            snprintf(what, sizeof what, "input %dx%d batch %d: fast vs plain", config.input_width,
                     config.input_height, n);
            expect_same_eval_logits(fast, plain, input, n, classes, a, b, what);
        }
        free(input);
        free(a);
        free(b);
        captcha_network_destroy(fast);
        captcha_network_destroy(plain);
    }
    plain_backend->ops = cpu_ops;
    captcha_backend_destroy(plain_backend);
}

/* Bytes the C allocator has handed out and not taken back, in MiB (glibc mallinfo2: heap in
 * use plus mmap-ed blocks); -1 where it reports nothing (a sanitizer's allocator). Freed
 * memory that is reused does not count, unlike resident memory. */
static double allocated_mib(void)
{
    struct mallinfo2 info = mallinfo2();
    size_t bytes = info.uordblks + info.hblkhd;
    return bytes ? (double)bytes / (1024.0 * 1024.0) : -1.0;
}

/* The CPU backend's caches stay bounded when the batch size keeps changing (the element
 * reads as many regions as a frame has): the reordered weights are shared by every batch
 * size (they took ~13 MiB more per batch size when each cached primitive had its own
 * copy; now only the primitives, ~1 MiB, are per size), and with the primitive cache
 * capped (CAPTCHA_CPU_MAX_PRIMITIVES=8, far below one forward's 20) primitives evicted
 * and made again give the same logits. */
static void test_caches_bounded_across_batch_sizes(void **state)
{
    (void)state;
    captcha_backend *small = backend_with_env("CAPTCHA_CPU_MAX_PRIMITIVES", "8");
    captcha_network *net = load_bundled(backend), *evicting = load_bundled(small);
    captcha_error err = {0};
    const int max_batch = 8, classes = 180;
    const size_t per_image = 3 * 32 * 128;
    float *input = malloc(sizeof(float) * per_image * max_batch);
    float *logits = malloc(sizeof(float) * classes * max_batch);
    captcha_test_fill_uniform(input, per_image * max_batch, -1, 1, 13);
    /* the largest batch first: activation buffers and scratch reach their size */
    assert_int_equal(
        captcha_network_forward(net, input, max_batch, CAPTCHA_MODE_EVAL, logits, &err),
        CAPTCHA_OK);
    double before = allocated_mib();
    for (int n = 1; n < max_batch; n++)
        assert_int_equal(captcha_network_forward(net, input, n, CAPTCHA_MODE_EVAL, logits, &err),
                         CAPTCHA_OK);
    double growth = allocated_mib() - before;
    if (before < 0) {
        fprintf(stderr, "mallinfo2 reports nothing (sanitizer allocator): memory not checked\n");
    } else {
        fprintf(stderr, "batch sizes 1-7 after 8: allocations grew by %.1f MiB (limit 20)\n",
                growth);
        assert_true(growth < 20.0);
    }
    free(input);
    free(logits);
    static const int order[] = {1, 3, 2, 3, 1, 8};
    expect_same_over_batches(evicting, net, order, sizeof order / sizeof order[0],
                             "8 cached primitives vs unbounded");
    captcha_network_destroy(net);
    captcha_network_destroy(evicting);
    captcha_backend_destroy(small);
}

/* Train-mode loss at the current parameters (the forward also updates running statistics,
 * which the train-mode loss does not read). */
static double train_loss(captcha_network *net, const float *input, const float *targets, int batch)
{
    float loss = 0;
    captcha_error err = {0};
    if (captcha_network_forward_backward(net, input, targets, batch, &loss, NULL, &err))
        fail_msg("forward_backward: %s", err.message);
    return loss;
}

static void test_gradient_finite_differences(void **state)
{
    (void)state;
    captcha_config config;
    captcha_config_reference(&config);
    captcha_error err = {0};
    assert_int_equal(captcha_config_set_charset(&config, "abc", &err), CAPTCHA_OK);
    config.length = 2;
    captcha_network *net = make_network(&config, 3);
    const int batch = 4, classes = 6;
    const size_t per_image = 3 * 32 * 128;
    size_t nparams = captcha_network_parameter_count(net);
    float *input = malloc(sizeof(float) * per_image * batch);
    float targets[4 * 6] = {0};
    captcha_test_fill_uniform(input, per_image * batch, -1, 1, 21);
    for (int n = 0; n < batch; n++) {
        targets[n * classes + (n % 3)] = 1;
        targets[n * classes + 3 + ((n + 1) % 3)] = 1;
    }
    float *params = malloc(nparams * sizeof(float));
    float *grads = malloc(nparams * sizeof(float));
    float *direction = malloc(nparams * sizeof(float));
    float *shifted = malloc(nparams * sizeof(float));
    train_loss(net, input, targets, batch);
    assert_int_equal(captcha_network_read_buffer(net, CAPTCHA_BUFFER_PARAMETERS, params, &err), 0);
    assert_int_equal(captcha_network_read_buffer(net, CAPTCHA_BUFFER_GRADIENTS, grads, &err), 0);

    /* directions: all parameters at once, then one tensor at a time for a few layers */
    const char *tensors[] = {NULL, "cnn_layers.0.block.0.weight", "cnn_layers.2.block.4.weight",
                             "cnn_layers.4.skip.0.weight", "cnn_layers.5.block.1.bias",
                             "fc_layers.0.weight"};
    for (size_t d = 0; d < sizeof tensors / sizeof *tensors; d++) {
        size_t begin = 0, count = nparams;
        if (tensors[d]) {
            const captcha_tensor_info *t = captcha_network_tensor(
                net, (size_t)captcha_network_find_tensor(net, tensors[d]));
            begin = t->offset;
            count = t->count;
        }
        /* direction: the gradient itself (restricted to the tensor) plus an equal-norm random
         * part, so the directional derivative is large against float32 noise in the loss, and
         * a wrong gradient (sign, scale, misplaced values) shows */
        memset(direction, 0, nparams * sizeof(float));
        captcha_test_fill_uniform(direction + begin, count, -1, 1, 100 + d);
        double gnorm = 0, rnorm = 0;
        for (size_t k = begin; k < begin + count; k++) {
            gnorm += (double)grads[k] * grads[k];
            rnorm += (double)direction[k] * direction[k];
        }
        for (size_t k = begin; k < begin + count; k++)
            direction[k] = (float)(grads[k] / sqrt(gnorm) + direction[k] / sqrt(rnorm));
        double norm = 0, analytic = 0;
        for (size_t k = begin; k < begin + count; k++)
            norm += (double)direction[k] * direction[k];
        norm = sqrt(norm);
        for (size_t k = begin; k < begin + count; k++) {
            direction[k] = (float)(direction[k] / norm);
            analytic += (double)direction[k] * grads[k];
        }
        /* step: the loss moves by about 1e-3 (float32 noise ~1e-7, curvature small) */
        const double h = fmin(1e-2, fmax(1e-4, 1e-3 / fabs(analytic)));
        double loss_at[2];
        for (int sign = 0; sign < 2; sign++) {
            for (size_t k = 0; k < nparams; k++)
                shifted[k] = params[k] + (float)((sign ? -h : h) * direction[k]);
            assert_int_equal(
                captcha_network_write_buffer(net, CAPTCHA_BUFFER_PARAMETERS, shifted, &err), 0);
            loss_at[sign] = train_loss(net, input, targets, batch);
        }
        double numeric = (loss_at[0] - loss_at[1]) / (2 * h);
        double rel = fabs(numeric - analytic) / fmax(fabs(analytic), 1e-4);
        printf("direction %-28s analytic %+.6e numeric %+.6e relative error %.2e\n",
               tensors[d] ? tensors[d] : "(all parameters)", analytic, numeric, rel);
        assert_true(rel <= 2e-2);
        assert_int_equal(captcha_network_write_buffer(net, CAPTCHA_BUFFER_PARAMETERS, params, &err),
                         0);
    }
    free(input);
    free(params);
    free(grads);
    free(direction);
    free(shifted);
    captcha_network_destroy(net);
}

/* A backend whose allocations fail on request: the CPU backend's operations but alloc. */
static captcha_backend_ops g_failing_ops;
static const captcha_backend_ops *g_cpu_ops;
static int g_fail_allocations;

static captcha_status failing_alloc(captcha_backend *b, size_t bytes, void **out,
                                    captcha_error *err)
{
    if (g_fail_allocations) {
        *out = NULL;
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "test: cannot allocate %zu bytes",
                            bytes);
    }
    return g_cpu_ops->alloc(b, bytes, out, err);
}

/* The activations' allocation failing fails the forward pass with its status, also when
 * the caller passes no error record (err may be NULL): it used to return CAPTCHA_OK from
 * the allocation and run on buffers that were never allocated. */
static void test_activation_allocation_failure(void **state)
{
    (void)state;
    captcha_error err = {0};
    captcha_backend *failing = NULL;
    assert_int_equal(captcha_backend_cpu_create(2, &failing, &err), CAPTCHA_OK);
    g_cpu_ops = failing->ops;
    g_failing_ops = *failing->ops;
    g_failing_ops.alloc = failing_alloc;
    failing->ops = &g_failing_ops;

    captcha_config config;
    captcha_config_reference(&config);
    captcha_network *net = NULL;
    assert_int_equal(captcha_network_create(failing, &config, 1, &net, &err), CAPTCHA_OK);
    static float input[3 * 32 * 128], logits[180];
    g_fail_allocations = 1;
    assert_int_equal(captcha_network_forward(net, input, 1, CAPTCHA_MODE_EVAL, logits, NULL),
                     CAPTCHA_ERROR_OUT_OF_MEMORY);
    assert_int_equal(captcha_network_forward(net, input, 1, CAPTCHA_MODE_EVAL, logits, &err),
                     CAPTCHA_ERROR_OUT_OF_MEMORY);
    assert_non_null(strstr(err.message, "activations for a batch of 1: test: cannot allocate"));
    g_fail_allocations = 0;
    assert_int_equal(captcha_network_forward(net, input, 1, CAPTCHA_MODE_EVAL, logits, &err),
                     CAPTCHA_OK);
    captcha_network_destroy(net);
    failing->ops = g_cpu_ops;
    captcha_backend_destroy(failing);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    captcha_config config;
    captcha_config_reference(&config);
    captcha_error err = {0};
    captcha_network *net = NULL, *net2_unused = NULL;

    config.input_height = 50;
    assert_int_equal(captcha_network_create(backend, &config, 1, &net, &err),
                     CAPTCHA_ERROR_FORMAT);
    assert_null(net);
    assert_non_null(strstr(err.message, "input_height"));

    captcha_config_reference(&config);
    config.length = 0;
    assert_int_equal(captcha_network_create(backend, &config, 1, &net, &err),
                     CAPTCHA_ERROR_FORMAT);
    assert_non_null(strstr(err.message, "length"));

    captcha_config_reference(&config);
    net = make_network(&config, 1);
    float input[3 * 32 * 128] = {0}, logits[180], targets[180] = {0};
    assert_int_equal(captcha_network_forward(net, input, 0, CAPTCHA_MODE_EVAL, logits, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "batch"));
    /* NULL buffers are named as the header names them */
    assert_int_equal(captcha_network_forward(net, NULL, 1, CAPTCHA_MODE_EVAL, logits, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "input is NULL"));
    assert_int_equal(captcha_network_forward(net, input, 1, CAPTCHA_MODE_EVAL, NULL, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "logits is NULL"));
    assert_int_equal(captcha_network_forward(net, input, CAPTCHA_MAX_BATCH + 1, CAPTCHA_MODE_EVAL,
                                             logits, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "65536"));
    float loss_value;
    assert_int_equal(
        captcha_network_forward_backward(net, input, NULL, 2, &loss_value, NULL, &err),
        CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "targets is NULL"));
    /* batch statistics need more than one value per channel */
    float loss;
    assert_int_equal(captcha_network_forward_backward(net, input, targets, 1, &loss, NULL, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    captcha_adam_config adam = captcha_adam_default();
    adam.beta1 = 1.5f;
    assert_int_equal(captcha_network_adam_step(net, &adam, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "Adam"));
    assert_int_equal(captcha_network_read_gradient(
                         net, (size_t)captcha_network_find_tensor(net, "cnn_layers.0.block.1.running_mean"),
                         logits, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    /* an infinite rate, eps or decay would turn every parameter into NaN */
    const float infinite = INFINITY;
    for (int field = 0; field < 3; field++) {
        adam = captcha_adam_default();
        *(field == 0 ? &adam.learning_rate : field == 1 ? &adam.eps : &adam.weight_decay) =
            infinite;
        assert_int_equal(captcha_network_adam_step(net, &adam, &err),
                         CAPTCHA_ERROR_INVALID_ARGUMENT);
        assert_non_null(strstr(err.message, "inf"));
    }
    assert_int_equal(captcha_network_adam_step(net, NULL, &err), CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "config is NULL"));
    /* NULL networks, hosts and names, and an unknown mode, are named (no crash) */
    assert_int_equal(captcha_network_forward(NULL, input, 1, CAPTCHA_MODE_EVAL, logits, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "captcha_network_forward: network is NULL"));
    assert_int_equal(
        captcha_network_forward(net, input, 1, (captcha_mode)7, logits, &err),
        CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "mode is 7"));
    assert_int_equal(captcha_network_read_tensor(net, 0, NULL, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "captcha_network_read_tensor: host is NULL"));
    assert_int_equal(captcha_network_read_buffer(net, CAPTCHA_BUFFER_PARAMETERS, NULL, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "captcha_network_read_buffer: host is NULL"));
    assert_int_equal(captcha_network_find_tensor(net, NULL), -1);
    assert_int_equal(captcha_network_create(backend, NULL, 1, &net2_unused, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "config is NULL"));
    assert_int_equal(captcha_network_create(backend, &config, 1, NULL, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "out is NULL"));
    captcha_network_destroy(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensor_table),
        cmocka_unit_test(test_batch_independence),
        cmocka_unit_test(test_winograd_matches_direct),
        cmocka_unit_test(test_fast_path_geometries),
        cmocka_unit_test(test_layouts_and_pages_match),
        cmocka_unit_test(test_caches_bounded_across_batch_sizes),
        cmocka_unit_test(test_gradient_finite_differences),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_activation_allocation_failure),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
