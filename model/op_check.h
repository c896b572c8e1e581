/* Argument checks shared by the backends' ops (backend.h), so that every backend refuses
 * the same bad arguments with the same messages. Each function returns CAPTCHA_OK, or
 * CAPTCHA_ERROR_INVALID_ARGUMENT with a message that names the op (e.g. "conv2d_forward")
 * and the argument and its value. */
#ifndef CAPTCHA_OP_CHECK_H
#define CAPTCHA_OP_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "captcha_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* p is not NULL ("pointer NAME is NULL (expected a buffer)"). */
captcha_status captcha_check_pointer(const char *op, const char *name, const void *p,
                                     captcha_error *err);

/* value > 0. */
captcha_status captcha_check_positive(const char *op, const char *name, long long value,
                                      captcha_error *err);

/* shape is not NULL, every size, the kernel and the stride are > 0, padding >= 0, and the
 * output size is the one torch.nn.Conv2d computes from them (captcha_conv2d_shape). */
captcha_status captcha_check_conv_shape(const char *op, const captcha_conv2d_shape *shape,
                                        captcha_error *err);

/* batch, channels and spatial > 0; for training (batch statistics) also batch * spatial
 * >= 2, as torch.nn.BatchNorm2d requires more than one value per channel. */
captcha_status captcha_check_batchnorm(const char *op, int batch, int channels, int spatial,
                                       int training, captcha_error *err);

/* batch, in_features and out_features > 0. */
captcha_status captcha_check_linear(const char *op, int batch, int in_features, int out_features,
                                    captcha_error *err);

/* count > 0 and the three tensor pointers not NULL (element-wise ops, Adam). */
captcha_status captcha_check_elementwise(const char *op, size_t count, const void *a,
                                         const void *b, const void *c, captcha_error *err);

/* The arguments of each op of backend.h, checked as above: sizes first, then every
 * pointer the op requires (bias of conv2d_forward, residual and linear_backward's dx are
 * optional; linear_backward needs weight only with dx). */
captcha_status captcha_check_conv2d_forward_args(const captcha_conv2d_shape *shape, const float *x,
                                                 const float *weight, const float *y,
                                                 captcha_error *err);
captcha_status captcha_check_conv2d_backward_data_args(const captcha_conv2d_shape *shape,
                                                       const float *dy, const float *weight,
                                                       const float *dx, captcha_error *err);
captcha_status captcha_check_conv2d_backward_weight_args(const captcha_conv2d_shape *shape,
                                                         const float *x, const float *dy,
                                                         const float *dweight, captcha_error *err);
captcha_status captcha_check_batchnorm_training_args(int batch, int channels, int spatial,
                                                     const float *x, const float *gamma,
                                                     const float *beta, float momentum, float eps,
                                                     const float *running_mean,
                                                     const float *running_var,
                                                     const float *saved_mean,
                                                     const float *saved_invstd, const float *y,
                                                     captcha_error *err);
captcha_status captcha_check_batchnorm_inference_args(int batch, int channels, int spatial,
                                                      const float *x, const float *gamma,
                                                      const float *beta, const float *running_mean,
                                                      const float *running_var, float eps,
                                                      const float *y, captcha_error *err);
captcha_status captcha_check_batchnorm_backward_args(int batch, int channels, int spatial,
                                                     const float *x, const float *dy,
                                                     const float *gamma, const float *saved_mean,
                                                     const float *saved_invstd, const float *dx,
                                                     const float *dgamma, const float *dbeta,
                                                     captcha_error *err);
/* op: "linear_forward" or "linear_forward_native" */
captcha_status captcha_check_linear_forward_args(const char *op, int batch, int in_features,
                                                 int out_features, const float *x,
                                                 const float *weight, const float *bias,
                                                 const float *y, captcha_error *err);
captcha_status captcha_check_linear_backward_args(int batch, int in_features, int out_features,
                                                  const float *x, const float *weight,
                                                  const float *dy, const float *dx,
                                                  const float *dweight, const float *dbias,
                                                  captcha_error *err);
captcha_status captcha_check_loss_args(int batch, int classes, const float *logits,
                                       const float *targets, const float *loss_host,
                                       const float *dlogits, captcha_error *err);
captcha_status captcha_check_adam_args(size_t count, const float *param, const float *grad,
                                       const float *m, const float *v, const void *config,
                                       int64_t step, captcha_error *err);

#ifdef __cplusplus
}
#endif

#endif
