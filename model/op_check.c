#include <math.h>

#include "op_check.h"

captcha_status captcha_check_pointer(const char *op, const char *name, const void *p,
                                     captcha_error *err)
{
    if (p)
        return CAPTCHA_OK;
    return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                        "%s: pointer %s is NULL (expected a buffer)", op, name);
}

captcha_status captcha_check_positive(const char *op, const char *name, long long value,
                                      captcha_error *err)
{
    if (value > 0)
        return CAPTCHA_OK;
    return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "%s: %s is %lld (expected > 0)", op,
                        name, value);
}

captcha_status captcha_check_conv_shape(const char *op, const captcha_conv2d_shape *s,
                                        captcha_error *err)
{
    if (!s)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "%s: shape is NULL", op);
    const int values[] = {s->batch,        s->in_channels, s->in_height, s->in_width,
                          s->out_channels, s->kernel_size, s->stride};
    const char *names[] = {"batch",        "in_channels", "in_height", "in_width",
                           "out_channels", "kernel_size", "stride"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        captcha_status status = captcha_check_positive(op, names[i], values[i], err);
        if (status != CAPTCHA_OK)
            return status;
    }
    if (s->padding < 0)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "%s: padding is %d (expected >= 0)", op, s->padding);
    if ((long long)s->in_height + 2LL * s->padding < s->kernel_size ||
        (long long)s->in_width + 2LL * s->padding < s->kernel_size)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "%s: kernel %d is larger than the input %dx%d with padding %d", op,
                            s->kernel_size, s->in_height, s->in_width, s->padding);
    long long out_h = ((long long)s->in_height + 2LL * s->padding - s->kernel_size) / s->stride + 1;
    long long out_w = ((long long)s->in_width + 2LL * s->padding - s->kernel_size) / s->stride + 1;
    if (out_h != s->out_height || out_w != s->out_width)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "%s: output size %dx%d does not match input %dx%d, kernel %d, "
                            "stride %d, padding %d (expected %lldx%lld)",
                            op, s->out_height, s->out_width, s->in_height, s->in_width,
                            s->kernel_size, s->stride, s->padding, out_h, out_w);
    return CAPTCHA_OK;
}

captcha_status captcha_check_batchnorm(const char *op, int batch, int channels, int spatial,
                                       int training, captcha_error *err)
{
    captcha_status status;
    if ((status = captcha_check_positive(op, "batch", batch, err)) ||
        (status = captcha_check_positive(op, "channels", channels, err)) ||
        (status = captcha_check_positive(op, "spatial", spatial, err)))
        return status;
    if (training && (long long)batch * spatial < 2)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "%s: batch * spatial is 1 (training needs more than one value per "
                            "channel, as torch.nn.BatchNorm2d)",
                            op);
    return CAPTCHA_OK;
}

captcha_status captcha_check_linear(const char *op, int batch, int in_features, int out_features,
                                    captcha_error *err)
{
    captcha_status status;
    if ((status = captcha_check_positive(op, "batch", batch, err)) ||
        (status = captcha_check_positive(op, "in_features", in_features, err)) ||
        (status = captcha_check_positive(op, "out_features", out_features, err)))
        return status;
    return CAPTCHA_OK;
}

captcha_status captcha_check_elementwise(const char *op, size_t count, const void *a,
                                         const void *b, const void *c, captcha_error *err)
{
    if (count == 0)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "%s: count is 0 (expected > 0)",
                            op);
    if (!a || !b || !c)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "%s: a tensor pointer is NULL (expected a buffer)", op);
    return CAPTCHA_OK;
}

/* The first NULL of pointers[count] as an error naming it. */
static captcha_status check_pointers(const char *op, int count, const char *const *names,
                                     const void *const *pointers, captcha_error *err)
{
    for (int i = 0; i < count; i++) {
        captcha_status status = captcha_check_pointer(op, names[i], pointers[i], err);
        if (status != CAPTCHA_OK)
            return status;
    }
    return CAPTCHA_OK;
}

#define CHECK_POINTERS(op, ...)                                                                    \
    do {                                                                                           \
        const void *const pointers_[] = {__VA_ARGS__};                                             \
        return check_pointers(op, (int)(sizeof pointers_ / sizeof pointers_[0]), names, pointers_, \
                              err);                                                                \
    } while (0)

#define TRY_CHECK CAPTCHA_TRY

/* eps is added to the variance under a square root: zero, negative, NaN or infinite eps
 * gives NaN or infinite outputs for a channel of constant input (variance 0). */
static captcha_status check_batchnorm_eps(const char *op, float eps, captcha_error *err)
{
    if (eps > 0.0f && isfinite(eps))
        return CAPTCHA_OK;
    return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                        "%s: eps is %g (expected a finite value > 0; torch.nn.BatchNorm2d's "
                        "is 1e-5)",
                        op, (double)eps);
}

captcha_status captcha_check_conv2d_forward_args(const captcha_conv2d_shape *shape, const float *x,
                                                 const float *weight, const float *y,
                                                 captcha_error *err)
{
    static const char *const names[] = {"x", "weight", "y"};
    TRY_CHECK(captcha_check_conv_shape("conv2d_forward", shape, err));
    CHECK_POINTERS("conv2d_forward", x, weight, y);
}

captcha_status captcha_check_conv2d_backward_data_args(const captcha_conv2d_shape *shape,
                                                       const float *dy, const float *weight,
                                                       const float *dx, captcha_error *err)
{
    static const char *const names[] = {"dy", "weight", "dx"};
    TRY_CHECK(captcha_check_conv_shape("conv2d_backward_data", shape, err));
    CHECK_POINTERS("conv2d_backward_data", dy, weight, dx);
}

captcha_status captcha_check_conv2d_backward_weight_args(const captcha_conv2d_shape *shape,
                                                         const float *x, const float *dy,
                                                         const float *dweight, captcha_error *err)
{
    static const char *const names[] = {"x", "dy", "dweight"};
    TRY_CHECK(captcha_check_conv_shape("conv2d_backward_weight", shape, err));
    CHECK_POINTERS("conv2d_backward_weight", x, dy, dweight);
}

captcha_status captcha_check_batchnorm_training_args(int batch, int channels, int spatial,
                                                     const float *x, const float *gamma,
                                                     const float *beta, float momentum, float eps,
                                                     const float *running_mean,
                                                     const float *running_var,
                                                     const float *saved_mean,
                                                     const float *saved_invstd, const float *y,
                                                     captcha_error *err)
{
    static const char *const names[] = {"x",           "gamma",      "beta",
                                        "running_mean", "running_var", "saved_mean",
                                        "saved_invstd", "y"};
    const char *op = "batchnorm_forward_training";
    TRY_CHECK(captcha_check_batchnorm(op, batch, channels, spatial, 1, err));
    TRY_CHECK(check_batchnorm_eps(op, eps, err));
    if (!(momentum >= 0.0f && momentum <= 1.0f)) /* also NaN */
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "%s: momentum is %g (expected 0 to 1; torch.nn.BatchNorm2d's is 0.1)",
                            op, (double)momentum);
    CHECK_POINTERS(op, x, gamma, beta, running_mean, running_var, saved_mean, saved_invstd, y);
}

captcha_status captcha_check_batchnorm_inference_args(int batch, int channels, int spatial,
                                                      const float *x, const float *gamma,
                                                      const float *beta, const float *running_mean,
                                                      const float *running_var, float eps,
                                                      const float *y, captcha_error *err)
{
    static const char *const names[] = {"x", "gamma", "beta", "running_mean", "running_var", "y"};
    const char *op = "batchnorm_forward_inference";
    TRY_CHECK(captcha_check_batchnorm(op, batch, channels, spatial, 0, err));
    TRY_CHECK(check_batchnorm_eps(op, eps, err));
    CHECK_POINTERS(op, x, gamma, beta, running_mean, running_var, y);
}

captcha_status captcha_check_batchnorm_backward_args(int batch, int channels, int spatial,
                                                     const float *x, const float *dy,
                                                     const float *gamma, const float *saved_mean,
                                                     const float *saved_invstd, const float *dx,
                                                     const float *dgamma, const float *dbeta,
                                                     captcha_error *err)
{
    static const char *const names[] = {"x",  "dy",     "gamma", "saved_mean", "saved_invstd",
                                        "dx", "dgamma", "dbeta"};
    const char *op = "batchnorm_backward";
    TRY_CHECK(captcha_check_batchnorm(op, batch, channels, spatial, 1, err));
    CHECK_POINTERS(op, x, dy, gamma, saved_mean, saved_invstd, dx, dgamma, dbeta);
}

captcha_status captcha_check_linear_forward_args(const char *op, int batch, int in_features,
                                                 int out_features, const float *x,
                                                 const float *weight, const float *bias,
                                                 const float *y, captcha_error *err)
{
    static const char *const names[] = {"x", "weight", "bias", "y"};
    TRY_CHECK(captcha_check_linear(op, batch, in_features, out_features, err));
    CHECK_POINTERS(op, x, weight, bias, y);
}

captcha_status captcha_check_linear_backward_args(int batch, int in_features, int out_features,
                                                  const float *x, const float *weight,
                                                  const float *dy, const float *dx,
                                                  const float *dweight, const float *dbias,
                                                  captcha_error *err)
{
    static const char *const names[] = {"x", "dy", "dweight", "dbias", "weight"};
    const char *op = "linear_backward";
    TRY_CHECK(captcha_check_linear(op, batch, in_features, out_features, err));
    /* weight only when dx is computed: a non-NULL stand-in otherwise */
    CHECK_POINTERS(op, x, dy, dweight, dbias, dx ? (const void *)weight : (const void *)dy);
}

captcha_status captcha_check_loss_args(int batch, int classes, const float *logits,
                                       const float *targets, const float *loss_host,
                                       const float *dlogits, captcha_error *err)
{
    static const char *const names[] = {"logits", "targets", "loss_host", "dlogits"};
    const char *op = "multilabel_soft_margin_loss";
    TRY_CHECK(captcha_check_positive(op, "batch", batch, err));
    TRY_CHECK(captcha_check_positive(op, "classes", classes, err));
    CHECK_POINTERS(op, logits, targets, loss_host, dlogits);
}

captcha_status captcha_check_adam_args(size_t count, const float *param, const float *grad,
                                       const float *m, const float *v, const void *config,
                                       int64_t step, captcha_error *err)
{
    static const char *const names[] = {"v", "config"};
    const char *op = "adam_update";
    TRY_CHECK(captcha_check_elementwise(op, count, param, grad, m, err));
    if (step < 1)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "%s: step is %lld (expected >= 1, counted from 1)", op,
                            (long long)step);
    CHECK_POINTERS(op, v, config);
}
