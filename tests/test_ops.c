/* Every backend op against the plain double-precision reference
 * (reference_ops.c), on small shapes and on the real network's shapes, plus
 * finite-difference checks of the reference's own backward ops.
 *
 * Tolerances (scale = max(1, max |reference|)):
 *   conv2d / linear / batch-norm forward:  max |got - ref| <= 1e-5 * scale
 *   every gradient (conv, batch norm, linear, loss):  relative L2 <= 1e-5
 *   batch-norm saved and running statistics:  relative L2 <= 1e-5
 *   ReLU, add:  exact
 *   loss value:  relative 1e-6;  Adam parameters:  max abs 1e-6, moments relative L2 1e-6
 *   reference gradients vs central differences (double):  1e-6 relative to max |gradient|
 *
 * Every test runs on each backend test_backends() returns; the CPU one is
 * always there. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "reference_ops.h"
#include "test_util.h"

/* ---- the backends under test ---- */

#define MAX_BACKENDS 4
static captcha_backend *backends[MAX_BACKENDS];
static int backend_count;

/* HOOK for more backends: returns the backends to test. The CPU backend is
 * always tested; CUDA is added when this build has it and a GPU is present
 * (CAPTCHA_ERROR_UNAVAILABLE skips it with the reason printed). */
static int test_backends(captcha_backend **out, int max)
{
    int count = 0;
    captcha_error err = {0};
    if (captcha_backend_cpu_create(0, &out[count], &err) == CAPTCHA_OK)
        count++;
    else
        fprintf(stderr, "CPU backend: %s\n", err.message);
    if (count < max) {
        captcha_status status = captcha_backend_cuda_create(0, &out[count], &err);
        if (status == CAPTCHA_OK)
            count++;
        else if (status == CAPTCHA_ERROR_UNAVAILABLE)
            fprintf(stderr, "skipping the CUDA backend: %s\n", err.message);
        else
            fprintf(stderr, "CUDA backend failed to start: %s\n", err.message);
    }
    return count;
}

static int setup_backends(void **state)
{
    (void)state;
    backend_count = test_backends(backends, MAX_BACKENDS);
    return backend_count > 0 && !strcmp(backends[0]->ops->name, "cpu") ? 0 : -1;
}

static int teardown_backends(void **state)
{
    (void)state;
    for (int i = 0; i < backend_count; i++)
        captcha_backend_destroy(backends[i]);
    backend_count = 0;
    return 0;
}

/* ---- helpers ---- */

#define ASSERT_OK(call)                                                                            \
    do {                                                                                           \
        captcha_error err_ = {0};                                                                  \
        captcha_error *err = &err_;                                                                \
        captcha_status status_ = (call);                                                           \
        if (status_ != CAPTCHA_OK)                                                                 \
            fail_msg("%s failed: %s", #call, err_.message);                                        \
    } while (0)

static float *host_uniform(size_t n, float lo, float hi, uint64_t seed)
{
    float *x = malloc(sizeof(float) * n);
    assert_non_null(x);
    captcha_test_fill_uniform(x, n, lo, hi, seed);
    return x;
}

static float *host_zeros(size_t n)
{
    float *x = calloc(n, sizeof(float));
    assert_non_null(x);
    return x;
}

/* Device copy of host data (or, with host NULL, a buffer filled with NaN so
 * that an output the op forgets to write fails the comparison). */
static float *device_from(captcha_backend *b, const float *host, size_t n)
{
    void *device = NULL;
    ASSERT_OK(b->ops->alloc(b, sizeof(float) * n, &device, err));
    float *fill = NULL;
    if (!host) {
        fill = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++)
            fill[i] = NAN;
        host = fill;
    }
    ASSERT_OK(b->ops->upload(b, device, host, sizeof(float) * n, err));
    free(fill);
    return device;
}

static float *host_from(captcha_backend *b, const float *device, size_t n)
{
    float *host = malloc(sizeof(float) * n);
    assert_non_null(host);
    ASSERT_OK(b->ops->synchronize(b, err));
    ASSERT_OK(b->ops->download(b, host, device, sizeof(float) * n, err));
    return host;
}

static double max_abs(const float *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)x[i]));
    return m;
}

/* max |got - ref| <= tolerance * max(1, max |ref|) */
static void expect_max_abs(const char *what, const char *backend, const float *got,
                           const float *ref, size_t n, double tolerance)
{
    double scale = fmax(1.0, max_abs(ref, n));
    double error = captcha_test_max_abs_error(got, ref, n);
    if (!(error <= tolerance * scale))
        fail_msg("%s on %s: max abs error %.3g > %.3g (scale %.3g)", what, backend, error,
                 tolerance * scale, scale);
}

/* ||got - ref|| / ||ref|| <= tolerance */
static void expect_rel(const char *what, const char *backend, const float *got, const float *ref,
                       size_t n, double tolerance)
{
    double error = captcha_test_rel_error(got, ref, n);
    if (!(error <= tolerance))
        fail_msg("%s on %s: relative L2 error %.3g > %.3g", what, backend, error, tolerance);
}

static void expect_device(captcha_backend *b, const char *what, const float *device,
                          const float *ref, size_t n, int relative, double tolerance)
{
    float *got = host_from(b, device, n);
    if (relative)
        expect_rel(what, b->ops->name, got, ref, n, tolerance);
    else
        expect_max_abs(what, b->ops->name, got, ref, n, tolerance);
    free(got);
}

#define FORWARD_TOLERANCE 1e-5
#define GRADIENT_TOLERANCE 1e-5

/* ---- (1) finite-difference checks of the reference backward ops ---- */

#define FD_STEP 1e-5
#define FD_TOLERANCE 1e-6

static double *random_f64(size_t n, double lo, double hi, uint64_t seed)
{
    float *f = host_uniform(n, (float)lo, (float)hi, seed);
    double *d = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++)
        d[i] = f[i];
    free(f);
    return d;
}

/* Compares an analytic gradient with central differences of a scalar
 * function of one input array. */
typedef double (*scalar_fn)(void *context);

static void expect_fd(const char *what, scalar_fn f, void *context, double *input, size_t n,
                      const double *analytic)
{
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(analytic[i]));
    for (size_t i = 0; i < n; i++) {
        double saved = input[i];
        input[i] = saved + FD_STEP;
        double plus = f(context);
        input[i] = saved - FD_STEP;
        double minus = f(context);
        input[i] = saved;
        double numeric = (plus - minus) / (2 * FD_STEP);
        worst = fmax(worst, fabs(numeric - analytic[i]));
    }
    if (!(worst <= FD_TOLERANCE * fmax(scale, 1e-12)))
        fail_msg("%s: finite differences differ by %.3g (gradient scale %.3g)", what, worst, scale);
}

typedef struct {
    captcha_conv2d_shape shape;
    double *x, *weight, *r; /* loss = sum(r * conv(x, weight)) */
    double *y;
} conv_fd;

static double conv_fd_loss(void *context)
{
    conv_fd *c = context;
    reference_conv2d_forward_f64(&c->shape, c->x, c->weight, NULL, NULL, 0, c->y);
    size_t n =
        (size_t)c->shape.batch * c->shape.out_channels * c->shape.out_height * c->shape.out_width;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += c->r[i] * c->y[i];
    return sum;
}

static void test_reference_conv_gradients(void **state)
{
    (void)state;
    const int configs[][4] = {/* kernel, stride, padding, seed */
                              {3, 1, 1, 1},
                              {3, 2, 1, 2},
                              {1, 1, 0, 3},
                              {1, 2, 0, 4},
                              {3, 2, 0, 5}};
    for (size_t k = 0; k < sizeof configs / sizeof configs[0]; k++) {
        conv_fd c;
        captcha_conv2d_shape_init(&c.shape, 2, 3, 5, 6, 4, configs[k][0], configs[k][1],
                                  configs[k][2]);
        size_t nx = 2 * 3 * 5 * 6, nw = (size_t)4 * 3 * configs[k][0] * configs[k][0];
        size_t ny = (size_t)2 * 4 * c.shape.out_height * c.shape.out_width;
        c.x = random_f64(nx, -1, 1, 10 + configs[k][3]);
        c.weight = random_f64(nw, -1, 1, 20 + configs[k][3]);
        c.r = random_f64(ny, -1, 1, 30 + configs[k][3]);
        c.y = malloc(sizeof(double) * ny);
        double *dx = malloc(sizeof(double) * nx), *dw = malloc(sizeof(double) * nw);
        reference_conv2d_backward_data_f64(&c.shape, c.r, c.weight, dx);
        reference_conv2d_backward_weight_f64(&c.shape, c.x, c.r, dw);
        char what[128];
        snprintf(what, sizeof what, "reference conv dx (k%d s%d p%d)", configs[k][0], configs[k][1],
                 configs[k][2]);
        expect_fd(what, conv_fd_loss, &c, c.x, nx, dx);
        snprintf(what, sizeof what, "reference conv dweight (k%d s%d p%d)", configs[k][0],
                 configs[k][1], configs[k][2]);
        expect_fd(what, conv_fd_loss, &c, c.weight, nw, dw);
        free(c.x);
        free(c.weight);
        free(c.r);
        free(c.y);
        free(dx);
        free(dw);
    }
}

typedef struct {
    int batch, channels, spatial;
    double *x, *gamma, *beta, *r, *y, *scratch;
} bn_fd;

static double bn_fd_loss(void *context)
{
    bn_fd *b = context;
    double *s = b->scratch; /* 4 x channels: running mean/var, saved mean/invstd */
    int c = b->channels;
    reference_batchnorm_forward_training_f64(b->batch, c, b->spatial, b->x, b->gamma, b->beta, 0.1,
                                             1e-5, s, s + c, s + 2 * c, s + 3 * c, b->y);
    double sum = 0;
    for (size_t i = 0; i < (size_t)b->batch * c * b->spatial; i++)
        sum += b->r[i] * b->y[i];
    return sum;
}

static void test_reference_batchnorm_gradients(void **state)
{
    (void)state;
    bn_fd b = {.batch = 2, .channels = 3, .spatial = 30};
    size_t n = 2 * 3 * 30;
    b.x = random_f64(n, -1, 3, 40);
    b.gamma = random_f64(3, 0.5, 1.5, 41);
    b.beta = random_f64(3, -0.5, 0.5, 42);
    b.r = random_f64(n, -1, 1, 43);
    b.y = malloc(sizeof(double) * n);
    b.scratch = calloc(12, sizeof(double));
    bn_fd_loss(&b);
    double saved_mean[3], saved_invstd[3], dx[2 * 3 * 30], dgamma[3], dbeta[3];
    memcpy(saved_mean, b.scratch + 6, sizeof saved_mean);
    memcpy(saved_invstd, b.scratch + 9, sizeof saved_invstd);
    reference_batchnorm_backward_f64(2, 3, 30, b.x, b.r, b.gamma, saved_mean, saved_invstd, dx,
                                     dgamma, dbeta);
    expect_fd("reference batchnorm dx", bn_fd_loss, &b, b.x, n, dx);
    expect_fd("reference batchnorm dgamma", bn_fd_loss, &b, b.gamma, 3, dgamma);
    expect_fd("reference batchnorm dbeta", bn_fd_loss, &b, b.beta, 3, dbeta);
    free(b.x);
    free(b.gamma);
    free(b.beta);
    free(b.r);
    free(b.y);
    free(b.scratch);
}

typedef struct {
    int batch, in, out;
    double *x, *weight, *bias, *r, *y;
} linear_fd;

static double linear_fd_loss(void *context)
{
    linear_fd *l = context;
    reference_linear_forward_f64(l->batch, l->in, l->out, l->x, l->weight, l->bias, l->y);
    double sum = 0;
    for (int i = 0; i < l->batch * l->out; i++)
        sum += l->r[i] * l->y[i];
    return sum;
}

static void test_reference_linear_gradients(void **state)
{
    (void)state;
    linear_fd l = {.batch = 2, .in = 7, .out = 5};
    l.x = random_f64(14, -1, 1, 50);
    l.weight = random_f64(35, -1, 1, 51);
    l.bias = random_f64(5, -1, 1, 52);
    l.r = random_f64(10, -1, 1, 53);
    l.y = malloc(sizeof(double) * 10);
    double dx[14], dw[35], db[5];
    reference_linear_backward_f64(2, 7, 5, l.x, l.weight, l.r, dx, dw, db);
    expect_fd("reference linear dx", linear_fd_loss, &l, l.x, 14, dx);
    expect_fd("reference linear dweight", linear_fd_loss, &l, l.weight, 35, dw);
    expect_fd("reference linear dbias", linear_fd_loss, &l, l.bias, 5, db);
    free(l.x);
    free(l.weight);
    free(l.bias);
    free(l.r);
    free(l.y);
}

typedef struct {
    double *logits, *targets;
} loss_fd;

static double loss_fd_loss(void *context)
{
    loss_fd *l = context;
    return reference_multilabel_soft_margin_loss_f64(3, 4, l->logits, l->targets, NULL);
}

static void test_reference_loss(void **state)
{
    (void)state;
    loss_fd l;
    l.logits = random_f64(12, -4, 4, 60);
    double targets[12] = {1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1};
    l.targets = targets;
    double dlogits[12];
    double loss = reference_multilabel_soft_margin_loss_f64(3, 4, l.logits, targets, dlogits);
    /* the loss by its textbook formula (fine for moderate logits) */
    double naive = 0;
    for (int i = 0; i < 12; i++) {
        double s = 1 / (1 + exp(-l.logits[i]));
        naive -= targets[i] * log(s) + (1 - targets[i]) * log(1 - s);
    }
    naive /= 12;
    assert_true(fabs(loss - naive) <= 1e-12 * fabs(naive));
    expect_fd("reference loss dlogits", loss_fd_loss, &l, l.logits, 12, dlogits);
    free(l.logits);
}

/* ---- (2) backend ops against the reference ---- */

typedef struct {
    int batch, in_channels, height, width, out_channels, kernel, stride, padding;
} conv_case;

static const conv_case conv_cases[] = {
    /* small, incl. stride 2 at odd sizes */
    {2, 3, 5, 6, 4, 3, 1, 1},
    {2, 3, 5, 6, 4, 3, 2, 1},
    {2, 3, 7, 9, 5, 3, 2, 1},
    {2, 3, 7, 9, 5, 1, 2, 0},
    {1, 4, 5, 6, 3, 3, 1, 0},
    /* inputs so small that some kernel rows/columns only ever read padding (the
     * CPU backend's fused form drops them) */
    {2, 3, 1, 5, 4, 3, 1, 1},
    {2, 3, 5, 1, 4, 3, 1, 1},
    {1, 4, 1, 1, 8, 3, 2, 1},
    {2, 3, 2, 7, 4, 3, 2, 1},
    {2, 3, 3, 2, 4, 3, 2, 1},
    /* the network's shapes (block: conv3x3 stride s, conv3x3 stride 1, conv1x1 stride s) */
    {1, 3, 32, 128, 32, 3, 1, 1},
    {2, 3, 32, 128, 32, 3, 1, 1},
    {2, 32, 32, 128, 32, 3, 1, 1},
    {2, 3, 32, 128, 32, 1, 1, 0},
    {2, 32, 32, 128, 64, 3, 2, 1},
    {2, 32, 32, 128, 64, 1, 2, 0},
    {2, 64, 16, 64, 64, 3, 1, 1},
    {1, 64, 16, 64, 64, 3, 2, 1},
    {2, 64, 8, 32, 128, 3, 2, 1},
    {64, 128, 4, 16, 256, 3, 2, 1},
    {64, 128, 4, 16, 256, 1, 2, 0},
    {64, 256, 2, 8, 256, 3, 2, 1},
    {64, 256, 1, 4, 256, 3, 1, 1},
};

static void run_conv_case(captcha_backend *b, const conv_case *c)
{
    captcha_conv2d_shape s;
    captcha_conv2d_shape_init(&s, c->batch, c->in_channels, c->height, c->width, c->out_channels,
                              c->kernel, c->stride, c->padding);
    size_t nx = (size_t)s.batch * s.in_channels * s.in_height * s.in_width;
    size_t nw = (size_t)s.out_channels * s.in_channels * s.kernel_size * s.kernel_size;
    size_t ny = (size_t)s.batch * s.out_channels * s.out_height * s.out_width;
    float fan_in = (float)(s.in_channels * s.kernel_size * s.kernel_size);
    float bound = 1.0f / sqrtf(fan_in);
    float *x = host_uniform(nx, -1, 1, 100 + nx), *w = host_uniform(nw, -bound, bound, 200 + nw);
    float *bias = host_uniform((size_t)s.out_channels, -0.5f, 0.5f, 300);
    float *residual = host_uniform(ny, -1, 1, 400 + ny), *dy = host_uniform(ny, -1, 1, 500 + ny);
    float *ref = host_zeros(ny > nx ? (ny > nw ? ny : nw) : (nx > nw ? nx : nw));
    float *dx_ = device_from(b, x, nx), *dw_ = device_from(b, w, nw);
    float *dbias = device_from(b, bias, (size_t)s.out_channels);
    float *dres = device_from(b, residual, ny), *ddy = device_from(b, dy, ny);
    float *dout = device_from(b, NULL, ny);
    char what[160];
    const char *shape_text = "N%d %d->%d %dx%d k%d s%d p%d %s";
#define WHAT(kind)                                                                                 \
    snprintf(what, sizeof what, shape_text, s.batch, s.in_channels, s.out_channels, s.in_height,   \
             s.in_width, s.kernel_size, s.stride, s.padding, kind)

    /* training form: no bias, no residual, no relu */
    ASSERT_OK(b->ops->conv2d_forward(b, &s, dx_, dw_, NULL, NULL, 0, dout, err));
    reference_conv2d_forward(&s, x, w, NULL, NULL, 0, ref);
    WHAT("conv2d_forward");
    expect_device(b, what, dout, ref, ny, 0, FORWARD_TOLERANCE);

    /* fused inference form: bias + residual + relu */
    ASSERT_OK(b->ops->conv2d_forward(b, &s, dx_, dw_, dbias, dres, 1, dout, err));
    reference_conv2d_forward(&s, x, w, bias, residual, 1, ref);
    WHAT("conv2d_forward bias+residual+relu");
    expect_device(b, what, dout, ref, ny, 0, FORWARD_TOLERANCE);

    /* bias + relu, no residual */
    ASSERT_OK(b->ops->conv2d_forward(b, &s, dx_, dw_, dbias, NULL, 1, dout, err));
    reference_conv2d_forward(&s, x, w, bias, NULL, 1, ref);
    WHAT("conv2d_forward bias+relu");
    expect_device(b, what, dout, ref, ny, 0, FORWARD_TOLERANCE);

    /* residual added in place (residual == y) */
    ASSERT_OK(b->ops->copy(b, dout, dres, sizeof(float) * ny, err));
    ASSERT_OK(b->ops->conv2d_forward(b, &s, dx_, dw_, dbias, dout, 0, dout, err));
    reference_conv2d_forward(&s, x, w, bias, residual, 0, ref);
    WHAT("conv2d_forward bias+residual in place");
    expect_device(b, what, dout, ref, ny, 0, FORWARD_TOLERANCE);

    float *ddx = device_from(b, NULL, nx), *ddw = device_from(b, NULL, nw);
    ASSERT_OK(b->ops->conv2d_backward_data(b, &s, ddy, dw_, ddx, err));
    reference_conv2d_backward_data(&s, dy, w, ref);
    WHAT("conv2d_backward_data");
    expect_device(b, what, ddx, ref, nx, 1, GRADIENT_TOLERANCE);

    ASSERT_OK(b->ops->conv2d_backward_weight(b, &s, dx_, ddy, ddw, err));
    reference_conv2d_backward_weight(&s, x, dy, ref);
    WHAT("conv2d_backward_weight");
    expect_device(b, what, ddw, ref, nw, 1, GRADIENT_TOLERANCE);
#undef WHAT
    float *device[] = {dx_, dw_, dbias, dres, ddy, dout, ddx, ddw};
    for (size_t i = 0; i < sizeof device / sizeof device[0]; i++)
        b->ops->free(b, device[i]);
    free(x);
    free(w);
    free(bias);
    free(residual);
    free(dy);
    free(ref);
}

static void test_conv2d(void **state)
{
    (void)state;
    for (int k = 0; k < backend_count; k++)
        for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
            run_conv_case(backends[k], &conv_cases[i]);
}

/* The fused convolution may keep a reordered copy of its weights keyed by
 * pointer: after the weights change in place, invalidate_cache() must make the
 * next call see them. */
static void test_conv2d_weight_cache(void **state)
{
    (void)state;
    for (int k = 0; k < backend_count; k++) {
        captcha_backend *b = backends[k];
        captcha_conv2d_shape s;
        captcha_conv2d_shape_init(&s, 1, 16, 8, 12, 16, 3, 1, 1);
        size_t nx = 16 * 8 * 12, nw = 16 * 16 * 9, ny = nx;
        float *x = host_uniform(nx, -1, 1, 1), *w1 = host_uniform(nw, -0.1f, 0.1f, 2);
        float *w2 = host_uniform(nw, -0.1f, 0.1f, 3), *bias = host_uniform(16, -1, 1, 4);
        float *ref = host_zeros(ny);
        float *dx_ = device_from(b, x, nx), *dw = device_from(b, w1, nw);
        float *dbias = device_from(b, bias, 16), *dy = device_from(b, NULL, ny);
        ASSERT_OK(b->ops->conv2d_forward(b, &s, dx_, dw, dbias, NULL, 1, dy, err));
        reference_conv2d_forward(&s, x, w1, bias, NULL, 1, ref);
        expect_device(b, "fused conv, first weights", dy, ref, ny, 0, FORWARD_TOLERANCE);
        ASSERT_OK(b->ops->upload(b, dw, w2, sizeof(float) * nw, err));
        if (b->ops->invalidate_cache)
            b->ops->invalidate_cache(b);
        ASSERT_OK(b->ops->conv2d_forward(b, &s, dx_, dw, dbias, NULL, 1, dy, err));
        reference_conv2d_forward(&s, x, w2, bias, NULL, 1, ref);
        expect_device(b, "fused conv after invalidate_cache", dy, ref, ny, 0, FORWARD_TOLERANCE);
        /* new weights written through the backend (upload) without invalidate_cache, and a
         * weight buffer freed and allocated again (often at the same address) with other
         * weights: no stale reordered copy may be used */
        ASSERT_OK(b->ops->upload(b, dw, w1, sizeof(float) * nw, err));
        ASSERT_OK(b->ops->conv2d_forward(b, &s, dx_, dw, dbias, NULL, 1, dy, err));
        reference_conv2d_forward(&s, x, w1, bias, NULL, 1, ref);
        expect_device(b, "fused conv after an upload of weights", dy, ref, ny, 0,
                      FORWARD_TOLERANCE);
        b->ops->free(b, dw);
        dw = device_from(b, w2, nw);
        ASSERT_OK(b->ops->conv2d_forward(b, &s, dx_, dw, dbias, NULL, 1, dy, err));
        reference_conv2d_forward(&s, x, w2, bias, NULL, 1, ref);
        expect_device(b, "fused conv on a reallocated weight buffer", dy, ref, ny, 0,
                      FORWARD_TOLERANCE);
        b->ops->free(b, dx_);
        b->ops->free(b, dw);
        b->ops->free(b, dbias);
        b->ops->free(b, dy);
        free(x);
        free(w1);
        free(w2);
        free(bias);
        free(ref);
    }
}

/* conv2d_forward_native: a residual block's chain as the inference path runs it, the
 * intermediate tensors in the backend's native layout (only native ops can read them),
 * NCHW at both ends, and then linear_forward_native on the chain's output kept native;
 * against the reference on NCHW. Channel counts that are and are not
 * multiples of the CPU's layout block (16/8). */
typedef struct {
    int batch, in_channels, height, width, channels, stride;
} native_case;

static void run_native_case(captcha_backend *b, const native_case *c)
{
    captcha_conv2d_shape s1, s2, sk, s3;
    captcha_conv2d_shape_init(&s1, c->batch, c->in_channels, c->height, c->width, c->channels, 3,
                              c->stride, 1);
    captcha_conv2d_shape_init(&sk, c->batch, c->in_channels, c->height, c->width, c->channels, 1,
                              c->stride, 0);
    captcha_conv2d_shape_init(&s2, c->batch, c->channels, s1.out_height, s1.out_width,
                              c->channels, 3, 1, 1);
    captcha_conv2d_shape_init(&s3, c->batch, c->channels, s1.out_height, s1.out_width,
                              c->channels, 3, 2, 1);
    size_t nx = captcha_conv2d_input_count(&s1), ny = captcha_conv2d_output_count(&s1);
    size_t n3 = captcha_conv2d_output_count(&s3);
    float *x = host_uniform(nx, -1, 1, 11);
    float *w1 = host_uniform(captcha_conv2d_weight_count(&s1), -0.2f, 0.2f, 12);
    float *wk = host_uniform(captcha_conv2d_weight_count(&sk), -0.5f, 0.5f, 13);
    float *w2 = host_uniform(captcha_conv2d_weight_count(&s2), -0.1f, 0.1f, 14);
    float *w3 = host_uniform(captcha_conv2d_weight_count(&s3), -0.1f, 0.1f, 15);
    float *bias = host_uniform((size_t)c->channels, -0.5f, 0.5f, 16);
    float *h1 = host_zeros(ny), *hout = host_zeros(ny), *ref = host_zeros(n3);
    /* reference: h1 = relu(conv1 x + b); out = relu(conv2 h1 + b + (skip x + b));
     * y = conv3 out + b (stride 2, no relu) */
    reference_conv2d_forward(&s1, x, w1, bias, NULL, 1, h1);
    reference_conv2d_forward(&sk, x, wk, bias, NULL, 0, hout);
    reference_conv2d_forward(&s2, h1, w2, bias, hout, 1, hout);
    reference_conv2d_forward(&s3, hout, w3, bias, NULL, 0, ref);

    float *dx_ = device_from(b, x, nx), *dw1 = device_from(b, w1, captcha_conv2d_weight_count(&s1));
    float *dwk = device_from(b, wk, captcha_conv2d_weight_count(&sk));
    float *dw2 = device_from(b, w2, captcha_conv2d_weight_count(&s2));
    float *dw3 = device_from(b, w3, captcha_conv2d_weight_count(&s3));
    float *dbias = device_from(b, bias, (size_t)c->channels);
    float *dh1 = device_from(b, NULL, ny), *dout = device_from(b, NULL, ny);
    float *dy = device_from(b, NULL, n3);
    ASSERT_OK(b->ops->conv2d_forward_native(b, &s1, dx_, 0, dw1, dbias, NULL, 1, dh1, 1, err));
    ASSERT_OK(b->ops->conv2d_forward_native(b, &sk, dx_, 0, dwk, dbias, NULL, 0, dout, 1, err));
    ASSERT_OK(b->ops->conv2d_forward_native(b, &s2, dh1, 1, dw2, dbias, dout, 1, dout, 1, err));
    ASSERT_OK(b->ops->conv2d_forward_native(b, &s3, dout, 1, dw3, dbias, NULL, 0, dy, 0, err));
    char what[128];
    snprintf(what, sizeof what, "native chain N%d %d->%d %dx%d s%d", c->batch, c->in_channels,
             c->channels, c->height, c->width, c->stride);
    expect_device(b, what, dy, ref, n3, 0, FORWARD_TOLERANCE);
    /* linear_forward_native: the same output kept native, flattened (c, h, w) into a
     * 7-way linear layer, as the last block feeds the classifier */
    if (b->ops->linear_forward_native) {
        const int classes = 7, features = (int)(n3 / (size_t)c->batch);
        float *wl = host_uniform((size_t)classes * features, -0.2f, 0.2f, 17);
        float *bl = host_uniform(classes, -0.5f, 0.5f, 18);
        float *ref_logits = host_zeros((size_t)c->batch * classes);
        reference_linear_forward(c->batch, features, classes, ref, wl, bl, ref_logits);
        float *dnative = device_from(b, NULL, n3), *dwl = device_from(b, wl, (size_t)classes * features);
        float *dbl = device_from(b, bl, classes), *dlogits = device_from(b, NULL, (size_t)c->batch * classes);
        ASSERT_OK(b->ops->conv2d_forward_native(b, &s3, dout, 1, dw3, dbias, NULL, 0, dnative, 1, err));
        ASSERT_OK(b->ops->linear_forward_native(b, c->batch, c->channels, s3.out_height,
                                                s3.out_width, classes, dnative, dwl, dbl, dlogits,
                                                err));
        snprintf(what, sizeof what, "native chain N%d %d->%d %dx%d s%d, linear", c->batch,
                 c->in_channels, c->channels, c->height, c->width, c->stride);
        expect_device(b, what, dlogits, ref_logits, (size_t)c->batch * classes, 0,
                      FORWARD_TOLERANCE);
        float *tmp[] = {dnative, dwl, dbl, dlogits};
        for (size_t i = 0; i < sizeof tmp / sizeof tmp[0]; i++)
            b->ops->free(b, tmp[i]);
        free(wl);
        free(bl);
        free(ref_logits);
    }
    float *device[] = {dx_, dw1, dwk, dw2, dw3, dbias, dh1, dout, dy};
    for (size_t i = 0; i < sizeof device / sizeof device[0]; i++)
        b->ops->free(b, device[i]);
    float *host[] = {x, w1, wk, w2, w3, bias, h1, hout, ref};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        free(host[i]);
}

static void test_conv2d_native(void **state)
{
    (void)state;
    static const native_case cases[] = {
        {1, 3, 32, 128, 32, 1}, /* the first block, batch 1 */
        {3, 32, 16, 20, 64, 2}, /* blocked on both sides */
        {2, 5, 9, 11, 24, 2},   /* 24 channels: not a multiple of 16 (NCHW on AVX-512) */
        {2, 8, 6, 10, 8, 1},
        {1, 32, 2, 8, 32, 2},  /* the last block's rows: 2 -> 1 (kernel rows cropped) */
        {2, 16, 1, 6, 16, 1},  /* one row throughout */
    };
    int tested = 0;
    for (int k = 0; k < backend_count; k++) {
        if (!backends[k]->ops->conv2d_forward_native)
            continue;
        tested++;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            run_native_case(backends[k], &cases[i]);
    }
    assert_true(tested >= 1); /* the CPU backend has it */
}

static void run_batchnorm_case(captcha_backend *b, int batch, int channels, int spatial)
{
    size_t n = (size_t)batch * channels * spatial, c = (size_t)channels;
    const float momentum = 0.1f, eps = 1e-5f;
    float *x = host_uniform(n, -1, 3, 600 + n), *dy = host_uniform(n, -1, 1, 700 + n);
    float *gamma = host_uniform(c, 0.5f, 1.5f, 800), *beta = host_uniform(c, -0.5f, 0.5f, 801);
    float *running_mean = host_uniform(c, -0.5f, 0.5f, 802);
    float *running_var = host_uniform(c, 0.5f, 1.5f, 803);
    float *ref_y = host_zeros(n), *ref_rm = malloc(sizeof(float) * c);
    float *ref_rv = malloc(sizeof(float) * c), *ref_mean = host_zeros(c);
    float *ref_invstd = host_zeros(c);
    memcpy(ref_rm, running_mean, sizeof(float) * c);
    memcpy(ref_rv, running_var, sizeof(float) * c);
    reference_batchnorm_forward_training(batch, channels, spatial, x, gamma, beta, momentum, eps,
                                         ref_rm, ref_rv, ref_mean, ref_invstd, ref_y);

    float *d_x = device_from(b, x, n), *d_dy = device_from(b, dy, n);
    float *d_gamma = device_from(b, gamma, c), *d_beta = device_from(b, beta, c);
    float *d_rm = device_from(b, running_mean, c), *d_rv = device_from(b, running_var, c);
    float *d_mean = device_from(b, NULL, c), *d_invstd = device_from(b, NULL, c);
    float *d_y = device_from(b, NULL, n);
    char what[128];
#define WHAT(kind)                                                                                 \
    snprintf(what, sizeof what, "batchnorm N%d C%d S%d %s", batch, channels, spatial, kind)
    ASSERT_OK(b->ops->batchnorm_forward_training(b, batch, channels, spatial, d_x, d_gamma, d_beta,
                                                 momentum, eps, d_rm, d_rv, d_mean, d_invstd, d_y,
                                                 err));
    WHAT("training y");
    expect_device(b, what, d_y, ref_y, n, 0, FORWARD_TOLERANCE);
    WHAT("saved_mean");
    expect_device(b, what, d_mean, ref_mean, c, 1, GRADIENT_TOLERANCE);
    WHAT("saved_invstd");
    expect_device(b, what, d_invstd, ref_invstd, c, 1, GRADIENT_TOLERANCE);
    WHAT("running_mean (momentum 0.1)");
    expect_device(b, what, d_rm, ref_rm, c, 1, GRADIENT_TOLERANCE);
    WHAT("running_var (momentum 0.1, unbiased)");
    expect_device(b, what, d_rv, ref_rv, c, 1, GRADIENT_TOLERANCE);

    /* backward from the reference's saved statistics */
    float *ref_dx = host_zeros(n), *ref_dgamma = host_zeros(c), *ref_dbeta = host_zeros(c);
    reference_batchnorm_backward(batch, channels, spatial, x, dy, gamma, ref_mean, ref_invstd,
                                 ref_dx, ref_dgamma, ref_dbeta);
    float *d_dx = device_from(b, NULL, n), *d_dgamma = device_from(b, NULL, c);
    float *d_dbeta = device_from(b, NULL, c);
    ASSERT_OK(b->ops->upload(b, d_mean, ref_mean, sizeof(float) * c, err));
    ASSERT_OK(b->ops->upload(b, d_invstd, ref_invstd, sizeof(float) * c, err));
    ASSERT_OK(b->ops->batchnorm_backward(b, batch, channels, spatial, d_x, d_dy, d_gamma, d_mean,
                                         d_invstd, d_dx, d_dgamma, d_dbeta, err));
    WHAT("backward dx");
    expect_device(b, what, d_dx, ref_dx, n, 1, GRADIENT_TOLERANCE);
    WHAT("backward dgamma");
    expect_device(b, what, d_dgamma, ref_dgamma, c, 1, GRADIENT_TOLERANCE);
    WHAT("backward dbeta");
    expect_device(b, what, d_dbeta, ref_dbeta, c, 1, GRADIENT_TOLERANCE);

    /* inference with the (updated) running statistics */
    reference_batchnorm_forward_inference(batch, channels, spatial, x, gamma, beta, ref_rm, ref_rv,
                                          eps, ref_y);
    ASSERT_OK(b->ops->upload(b, d_rm, ref_rm, sizeof(float) * c, err));
    ASSERT_OK(b->ops->upload(b, d_rv, ref_rv, sizeof(float) * c, err));
    ASSERT_OK(b->ops->batchnorm_forward_inference(b, batch, channels, spatial, d_x, d_gamma, d_beta,
                                                  d_rm, d_rv, eps, d_y, err));
    WHAT("inference y");
    expect_device(b, what, d_y, ref_y, n, 0, FORWARD_TOLERANCE);
#undef WHAT
    float *device[] = {d_x,    d_dy,     d_gamma, d_beta, d_rm,     d_rv,
                       d_mean, d_invstd, d_y,     d_dx,   d_dgamma, d_dbeta};
    for (size_t i = 0; i < sizeof device / sizeof device[0]; i++)
        b->ops->free(b, device[i]);
    float *host[] = {x,      dy,     gamma,    beta,       running_mean, running_var, ref_y,
                     ref_rm, ref_rv, ref_mean, ref_invstd, ref_dx,       ref_dgamma,  ref_dbeta};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        free(host[i]);
}

static void test_batchnorm(void **state)
{
    (void)state;
    for (int k = 0; k < backend_count; k++) {
        run_batchnorm_case(backends[k], 2, 3, 30);
        run_batchnorm_case(backends[k], 5, 4, 1);
        run_batchnorm_case(backends[k], 4, 32, 32 * 128);
        run_batchnorm_case(backends[k], 16, 64, 16 * 64);
        run_batchnorm_case(backends[k], 64, 256, 4);
    }
}

static void run_linear_case(captcha_backend *b, int batch, int in, int out)
{
    size_t nx = (size_t)batch * in, nw = (size_t)out * in, ny = (size_t)batch * out;
    float bound = 1.0f / sqrtf((float)in);
    float *x = host_uniform(nx, -1, 1, 900), *w = host_uniform(nw, -bound, bound, 901);
    float *bias = host_uniform((size_t)out, -bound, bound, 902), *dy = host_uniform(ny, -1, 1, 903);
    float *ref_y = host_zeros(ny), *ref_dx = host_zeros(nx), *ref_dw = host_zeros(nw);
    float *ref_db = host_zeros((size_t)out);
    reference_linear_forward(batch, in, out, x, w, bias, ref_y);
    reference_linear_backward(batch, in, out, x, w, dy, ref_dx, ref_dw, ref_db);
    float *d_x = device_from(b, x, nx), *d_w = device_from(b, w, nw);
    float *d_b = device_from(b, bias, (size_t)out), *d_dy = device_from(b, dy, ny);
    float *d_y = device_from(b, NULL, ny), *d_dx = device_from(b, NULL, nx);
    float *d_dw = device_from(b, NULL, nw), *d_db = device_from(b, NULL, (size_t)out);
    char what[128];
    ASSERT_OK(b->ops->linear_forward(b, batch, in, out, d_x, d_w, d_b, d_y, err));
    snprintf(what, sizeof what, "linear N%d %d->%d forward", batch, in, out);
    expect_device(b, what, d_y, ref_y, ny, 0, FORWARD_TOLERANCE);
    ASSERT_OK(b->ops->linear_backward(b, batch, in, out, d_x, d_w, d_dy, d_dx, d_dw, d_db, err));
    snprintf(what, sizeof what, "linear N%d %d->%d dx", batch, in, out);
    expect_device(b, what, d_dx, ref_dx, nx, 1, GRADIENT_TOLERANCE);
    snprintf(what, sizeof what, "linear N%d %d->%d dweight", batch, in, out);
    expect_device(b, what, d_dw, ref_dw, nw, 1, GRADIENT_TOLERANCE);
    snprintf(what, sizeof what, "linear N%d %d->%d dbias", batch, in, out);
    expect_device(b, what, d_db, ref_db, (size_t)out, 1, GRADIENT_TOLERANCE);
    /* dx NULL: weight gradients only */
    float *nan_fill = device_from(b, NULL, nw);
    ASSERT_OK(b->ops->copy(b, d_dw, nan_fill, sizeof(float) * nw, err));
    ASSERT_OK(b->ops->linear_backward(b, batch, in, out, d_x, d_w, d_dy, NULL, d_dw, d_db, err));
    snprintf(what, sizeof what, "linear N%d %d->%d dweight (dx NULL)", batch, in, out);
    expect_device(b, what, d_dw, ref_dw, nw, 1, GRADIENT_TOLERANCE);
    float *device[] = {d_x, d_w, d_b, d_dy, d_y, d_dx, d_dw, d_db, nan_fill};
    for (size_t i = 0; i < sizeof device / sizeof device[0]; i++)
        b->ops->free(b, device[i]);
    float *host[] = {x, w, bias, dy, ref_y, ref_dx, ref_dw, ref_db};
    for (size_t i = 0; i < sizeof host / sizeof host[0]; i++)
        free(host[i]);
}

static void test_linear(void **state)
{
    (void)state;
    for (int k = 0; k < backend_count; k++) {
        run_linear_case(backends[k], 2, 10, 7);
        run_linear_case(backends[k], 1, 1024, 180);
        run_linear_case(backends[k], 64, 1024, 180);
    }
}

static void test_elementwise(void **state)
{
    (void)state;
    const size_t n = 100003; /* odd, not a multiple of any vector width */
    for (int k = 0; k < backend_count; k++) {
        captcha_backend *b = backends[k];
        float *x = host_uniform(n, -1, 1, 1000), *a = host_uniform(n, -2, 2, 1001);
        float *dy = host_uniform(n, -1, 1, 1002), *ref = host_zeros(n);
        float *d_x = device_from(b, x, n), *d_a = device_from(b, a, n);
        float *d_dy = device_from(b, dy, n), *d_y = device_from(b, NULL, n);
        ASSERT_OK(b->ops->relu_forward(b, n, d_x, d_y, err));
        reference_relu_forward(n, x, ref);
        expect_device(b, "relu_forward", d_y, ref, n, 0, 0.0);
        float *y_host = host_from(b, d_y, n);
        ASSERT_OK(b->ops->relu_backward(b, n, d_y, d_dy, d_a, err));
        reference_relu_backward(n, y_host, dy, ref);
        expect_device(b, "relu_backward", d_a, ref, n, 0, 0.0);
        ASSERT_OK(b->ops->relu_backward(b, n, d_y, d_dy, d_dy, err)); /* dx == dy */
        expect_device(b, "relu_backward in place", d_dy, ref, n, 0, 0.0);
        ASSERT_OK(b->ops->relu_forward(b, n, d_x, d_x, err)); /* y == x */
        reference_relu_forward(n, x, ref);
        expect_device(b, "relu_forward in place", d_x, ref, n, 0, 0.0);
        ASSERT_OK(b->ops->upload(b, d_x, x, sizeof(float) * n, err));
        ASSERT_OK(b->ops->upload(b, d_a, a, sizeof(float) * n, err));
        ASSERT_OK(b->ops->add(b, n, d_x, d_a, d_y, err));
        reference_add(n, x, a, ref);
        expect_device(b, "add", d_y, ref, n, 0, 0.0);
        ASSERT_OK(b->ops->add(b, n, d_x, d_a, d_a, err)); /* y == b */
        expect_device(b, "add in place", d_a, ref, n, 0, 0.0);
        b->ops->free(b, d_x);
        b->ops->free(b, d_a);
        b->ops->free(b, d_dy);
        b->ops->free(b, d_y);
        free(x);
        free(a);
        free(dy);
        free(ref);
        free(y_host);
    }
}

static void run_loss_case(captcha_backend *b, int batch, int classes, float lo, float hi,
                          uint64_t seed)
{
    size_t n = (size_t)batch * classes;
    float *logits = host_uniform(n, lo, hi, seed), *targets = host_uniform(n, 0, 1, seed + 1);
    for (size_t i = 0; i < n; i++)
        targets[i] = targets[i] < 0.3f ? 1.0f : 0.0f;
    float *ref_grad = host_zeros(n);
    double ref_loss =
        reference_multilabel_soft_margin_loss(batch, classes, logits, targets, ref_grad);
    float *d_logits = device_from(b, logits, n), *d_targets = device_from(b, targets, n);
    float *d_grad = device_from(b, NULL, n);
    float loss = NAN;
    ASSERT_OK(b->ops->multilabel_soft_margin_loss(b, batch, classes, d_logits, d_targets, &loss,
                                                  d_grad, err));
    if (!(isfinite(loss) && fabs(loss - ref_loss) <= 1e-6 * fabs(ref_loss)))
        fail_msg("loss N%d C%d logits [%g, %g) on %s: %.9g, reference %.9g", batch, classes, lo, hi,
                 b->ops->name, loss, ref_loss);
    char what[128];
    snprintf(what, sizeof what, "loss gradient N%d C%d logits [%g, %g)", batch, classes, lo, hi);
    expect_device(b, what, d_grad, ref_grad, n, 1, GRADIENT_TOLERANCE);
    b->ops->free(b, d_logits);
    b->ops->free(b, d_targets);
    b->ops->free(b, d_grad);
    free(logits);
    free(targets);
    free(ref_grad);
}

static void test_loss(void **state)
{
    (void)state;
    for (int k = 0; k < backend_count; k++) {
        run_loss_case(backends[k], 4, 180, -6, 6, 1100);
        run_loss_case(backends[k], 64, 180, -6, 6, 1200);
        /* huge logits: naive log(sigmoid) gives -inf/NaN here */
        run_loss_case(backends[k], 8, 180, -1e4f, 1e4f, 1300);
    }
}

static void test_adam(void **state)
{
    (void)state;
    const size_t n = 10007;
    const captcha_adam_config configs[] = {
        {.learning_rate = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0},
        {.learning_rate = 1e-3f,
         .beta1 = 0.9f,
         .beta2 = 0.999f,
         .eps = 1e-8f,
         .weight_decay = 1e-2f},
    };
    for (int k = 0; k < backend_count; k++) {
        captcha_backend *b = backends[k];
        for (size_t c = 0; c < 2; c++) {
            float *param = host_uniform(n, -1, 1, 1400), *m = host_zeros(n), *v = host_zeros(n);
            float *d_param = device_from(b, param, n), *d_m = device_from(b, m, n);
            float *d_v = device_from(b, v, n), *d_grad = device_from(b, NULL, n);
            for (int64_t step = 1; step <= 3; step++) {
                float *grad = host_uniform(n, -0.1f, 0.1f, 1500 + (uint64_t)step);
                ASSERT_OK(b->ops->upload(b, d_grad, grad, sizeof(float) * n, err));
                ASSERT_OK(
                    b->ops->adam_update(b, n, d_param, d_grad, d_m, d_v, &configs[c], step, err));
                reference_adam_update(n, param, grad, m, v, &configs[c], step);
                free(grad);
            }
            char what[96];
            snprintf(what, sizeof what, "adam param after 3 steps (weight decay %g)",
                     configs[c].weight_decay);
            expect_device(b, what, d_param, param, n, 0, 1e-6);
            snprintf(what, sizeof what, "adam m (weight decay %g)", configs[c].weight_decay);
            expect_device(b, what, d_m, m, n, 1, 1e-6);
            snprintf(what, sizeof what, "adam v (weight decay %g)", configs[c].weight_decay);
            expect_device(b, what, d_v, v, n, 1, 1e-6);
            b->ops->free(b, d_param);
            b->ops->free(b, d_m);
            b->ops->free(b, d_v);
            b->ops->free(b, d_grad);
            free(param);
            free(m);
            free(v);
        }
    }
}

/* Ops reject bad arguments with CAPTCHA_ERROR_INVALID_ARGUMENT and a message
 * instead of crashing. */
#define EXPECT_INVALID(call)                                                                       \
    do {                                                                                           \
        captcha_error err_ = {0};                                                                  \
        captcha_error *err = &err_;                                                                \
        captcha_status status_ = (call);                                                           \
        if (status_ != CAPTCHA_ERROR_INVALID_ARGUMENT || !err_.message[0])                         \
            fail_msg("%s on %s: status %d (expected invalid argument with a message)", #call,      \
                     b->ops->name, (int)status_);                                                  \
    } while (0)

static void test_invalid_arguments(void **state)
{
    (void)state;
    for (int k = 0; k < backend_count; k++) {
        captcha_backend *b = backends[k];
        float *buffer = device_from(b, NULL, 4096);
        float *p = buffer;
        captcha_conv2d_shape s, zero_batch, wrong_output;
        captcha_conv2d_shape_init(&s, 1, 2, 4, 4, 2, 3, 1, 1);
        captcha_conv2d_shape_init(&zero_batch, 0, 2, 4, 4, 2, 3, 1, 1);
        wrong_output = s;
        wrong_output.out_height = 3;
        captcha_adam_config adam = {1e-3f, 0.9f, 0.999f, 1e-8f, 0};
        float loss;
        EXPECT_INVALID(b->ops->conv2d_forward(b, &s, NULL, p, NULL, NULL, 0, p, err));
        EXPECT_INVALID(b->ops->conv2d_forward(b, &zero_batch, p, p, NULL, NULL, 0, p, err));
        EXPECT_INVALID(b->ops->conv2d_forward(b, &wrong_output, p, p, NULL, NULL, 0, p, err));
        EXPECT_INVALID(b->ops->conv2d_forward(b, NULL, p, p, NULL, NULL, 0, p, err));
        EXPECT_INVALID(b->ops->conv2d_backward_data(b, &s, p, NULL, p, err));
        EXPECT_INVALID(b->ops->conv2d_backward_weight(b, &zero_batch, p, p, p, err));
        EXPECT_INVALID(b->ops->batchnorm_forward_training(b, 0, 2, 4, p, p, p, 0.1f, 1e-5f, p, p, p,
                                                          p, p, err));
        EXPECT_INVALID(b->ops->batchnorm_forward_training(b, 1, 2, 1, p, p, p, 0.1f, 1e-5f, p, p, p,
                                                          p, p, err));
        EXPECT_INVALID(
            b->ops->batchnorm_forward_inference(b, 2, 2, 4, p, NULL, p, p, p, 1e-5f, p, err));
        const float bad_eps[] = {-1e-5f, 0.0f, NAN, INFINITY};
        for (size_t i = 0; i < sizeof bad_eps / sizeof bad_eps[0]; i++) {
            EXPECT_INVALID(b->ops->batchnorm_forward_inference(b, 2, 2, 4, p, p, p, p, p,
                                                               bad_eps[i], p, err));
            EXPECT_INVALID(b->ops->batchnorm_forward_training(b, 2, 2, 4, p, p, p, 0.1f,
                                                              bad_eps[i], p, p, p, p, p, err));
        }
        const float bad_momentum[] = {-0.1f, 1.5f, NAN};
        for (size_t i = 0; i < sizeof bad_momentum / sizeof bad_momentum[0]; i++)
            EXPECT_INVALID(b->ops->batchnorm_forward_training(b, 2, 2, 4, p, p, p, bad_momentum[i],
                                                              1e-5f, p, p, p, p, p, err));
        EXPECT_INVALID(b->ops->batchnorm_backward(b, 2, 2, 4, p, p, p, p, p, p, NULL, p, err));
        EXPECT_INVALID(b->ops->linear_forward(b, 2, 3, 4, p, NULL, p, p, err));
        EXPECT_INVALID(b->ops->linear_backward(b, 0, 3, 4, p, p, p, p, p, p, err));
        if (b->ops->linear_forward_native) {
            EXPECT_INVALID(b->ops->linear_forward_native(b, 1, 16, 0, 4, 5, p, p, p, p, err));
            EXPECT_INVALID(b->ops->linear_forward_native(b, 1, 16, 1, 4, 5, p, p, NULL, p, err));
            EXPECT_INVALID(
                b->ops->linear_forward_native(b, 1, 65536, 65536, 4, 5, p, p, p, p, err));
        }
        EXPECT_INVALID(b->ops->relu_forward(b, 0, p, p, err));
        EXPECT_INVALID(b->ops->relu_backward(b, 4, p, NULL, p, err));
        EXPECT_INVALID(b->ops->add(b, 4, p, p, NULL, err));
        EXPECT_INVALID(b->ops->multilabel_soft_margin_loss(b, 2, 3, p, NULL, &loss, p, err));
        EXPECT_INVALID(b->ops->multilabel_soft_margin_loss(b, 0, 3, p, p, &loss, p, err));
        EXPECT_INVALID(b->ops->adam_update(b, 4, p, p, p, p, &adam, 0, err));
        EXPECT_INVALID(b->ops->adam_update(b, 4, p, p, p, p, NULL, 1, err));
        /* a kernel larger than the padded input is named as such */
        captcha_conv2d_shape large_kernel;
        captcha_conv2d_shape_init(&large_kernel, 1, 2, 2, 2, 2, 5, 1, 0);
        captcha_error large_err = {0};
        assert_int_equal(
            b->ops->conv2d_forward(b, &large_kernel, p, p, NULL, NULL, 0, p, &large_err),
            CAPTCHA_ERROR_INVALID_ARGUMENT);
        assert_non_null(strstr(large_err.message, "kernel 5 is larger than the input 2x2"));
        /* stride 0: an output of 0x0 (no division by zero), which the ops refuse */
        captcha_conv2d_shape no_stride;
        captcha_conv2d_shape_init(&no_stride, 1, 2, 4, 4, 2, 3, 0, 1);
        assert_int_equal(no_stride.out_height, 0);
        assert_int_equal(no_stride.out_width, 0);
        EXPECT_INVALID(b->ops->conv2d_forward(b, &no_stride, p, p, NULL, NULL, 0, p, err));
        /* a size that would wrap when rounded up to the alignment (CPU backend) */
        if (!strcmp(b->ops->name, "cpu")) {
            void *huge = NULL;
            captcha_error huge_err = {0};
            assert_int_equal(b->ops->alloc(b, SIZE_MAX, &huge, &huge_err),
                             CAPTCHA_ERROR_OUT_OF_MEMORY);
            assert_null(huge);
        }
        b->ops->free(b, buffer);
    }
}

int main(void)
{
    const struct CMUnitTest reference_tests[] = {
        cmocka_unit_test(test_reference_conv_gradients),
        cmocka_unit_test(test_reference_batchnorm_gradients),
        cmocka_unit_test(test_reference_linear_gradients),
        cmocka_unit_test(test_reference_loss),
    };
    const struct CMUnitTest backend_tests[] = {
        cmocka_unit_test(test_conv2d),      cmocka_unit_test(test_conv2d_weight_cache),
        cmocka_unit_test(test_conv2d_native),
        cmocka_unit_test(test_batchnorm),   cmocka_unit_test(test_linear),
        cmocka_unit_test(test_elementwise), cmocka_unit_test(test_loss),
        cmocka_unit_test(test_adam),        cmocka_unit_test(test_invalid_arguments),
    };
    int failed = cmocka_run_group_tests_name("reference ops", reference_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("backend ops vs reference", backend_tests, setup_backends,
                                          teardown_backends);
    return failed ? 1 : 0;
}
