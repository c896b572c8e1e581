/* Plain, obviously-correct reference implementations of every backend op
 * (model/backend.h), used by the tests to check each backend (CPU, CUDA).
 *
 * Each op comes twice:
 *  - reference_X(...) takes and returns float host arrays, as the backends do,
 *    and accumulates in double inside;
 *  - reference_X_f64(...) is the same op on double arrays, used by the
 *    finite-difference gradient checks (which need double precision end to end).
 *
 * Semantics are PyTorch's, restated per op below; layouts as in backend.h:
 * activations NCHW, convolution weights OIHW, linear weights [out, in]
 * row-major. Loops are written for clarity, not speed (direct convolution,
 * no im2col): keep shapes small. Nothing here depends on a backend. */
#ifndef CAPTCHA_REFERENCE_OPS_H
#define CAPTCHA_REFERENCE_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* torch.nn.functional.conv2d (zero padding, dilation 1, groups 1):
 * y[n,o,i,j] = bias[o] + sum_{c,a,b} x[n,c,i*stride-pad+a, j*stride-pad+b] * w[o,c,a,b]
 *              (+ residual[n,o,i,j]), then max(., 0) when relu.
 * x [N,Cin,H,W], weight [Cout,Cin,k,k], bias [Cout] or NULL, residual
 * [N,Cout,Ho,Wo] or NULL, y [N,Cout,Ho,Wo]. */
void reference_conv2d_forward(const captcha_conv2d_shape *shape, const float *x,
                              const float *weight, const float *bias, const float *residual,
                              int relu, float *y);
void reference_conv2d_forward_f64(const captcha_conv2d_shape *shape, const double *x,
                                  const double *weight, const double *bias, const double *residual,
                                  int relu, double *y);

/* Gradient of the convolution (without bias/residual/relu) with respect to x:
 * dx [N,Cin,H,W] from dy [N,Cout,Ho,Wo]; overwrites dx. */
void reference_conv2d_backward_data(const captcha_conv2d_shape *shape, const float *dy,
                                    const float *weight, float *dx);
void reference_conv2d_backward_data_f64(const captcha_conv2d_shape *shape, const double *dy,
                                        const double *weight, double *dx);

/* Gradient with respect to the weight: dweight [Cout,Cin,k,k]; overwrites. */
void reference_conv2d_backward_weight(const captcha_conv2d_shape *shape, const float *x,
                                      const float *dy, float *dweight);
void reference_conv2d_backward_weight_f64(const captcha_conv2d_shape *shape, const double *x,
                                          const double *dy, double *dweight);

/* torch.nn.BatchNorm2d in training mode. x, y [N, C, S] (S = H*W); per channel
 * mean and biased variance over N and S; y = (x - mean) * invstd * gamma + beta
 * with invstd = 1/sqrt(var + eps); writes saved_mean, saved_invstd [C]; updates
 * running_mean/var [C]: r = (1 - momentum) r + momentum stat, with the unbiased
 * variance var * n / (n - 1), n = N*S, for running_var. */
void reference_batchnorm_forward_training(int batch, int channels, int spatial, const float *x,
                                          const float *gamma, const float *beta, float momentum,
                                          float eps, float *running_mean, float *running_var,
                                          float *saved_mean, float *saved_invstd, float *y);
void reference_batchnorm_forward_training_f64(int batch, int channels, int spatial, const double *x,
                                              const double *gamma, const double *beta,
                                              double momentum, double eps, double *running_mean,
                                              double *running_var, double *saved_mean,
                                              double *saved_invstd, double *y);

/* torch.nn.BatchNorm2d in eval mode:
 * y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta. */
void reference_batchnorm_forward_inference(int batch, int channels, int spatial, const float *x,
                                           const float *gamma, const float *beta,
                                           const float *running_mean, const float *running_var,
                                           float eps, float *y);

/* Backward of the training form (batch statistics depend on x):
 * xhat = (x - mean) invstd, dbeta = sum dy, dgamma = sum dy xhat,
 * dx = gamma invstd / n (n dy - dbeta - xhat dgamma), sums over N and S. */
void reference_batchnorm_backward(int batch, int channels, int spatial, const float *x,
                                  const float *dy, const float *gamma, const float *saved_mean,
                                  const float *saved_invstd, float *dx, float *dgamma,
                                  float *dbeta);
void reference_batchnorm_backward_f64(int batch, int channels, int spatial, const double *x,
                                      const double *dy, const double *gamma,
                                      const double *saved_mean, const double *saved_invstd,
                                      double *dx, double *dgamma, double *dbeta);

/* torch.nn.Linear: y [N,out] = x [N,in] weight[out,in]^T + bias [out]. */
void reference_linear_forward(int batch, int in_features, int out_features, const float *x,
                              const float *weight, const float *bias, float *y);
void reference_linear_forward_f64(int batch, int in_features, int out_features, const double *x,
                                  const double *weight, const double *bias, double *y);

/* dx [N,in] = dy weight (skipped when dx is NULL), dweight [out,in] = dy^T x,
 * dbias [out] = sum over N of dy. */
void reference_linear_backward(int batch, int in_features, int out_features, const float *x,
                               const float *weight, const float *dy, float *dx, float *dweight,
                               float *dbias);
void reference_linear_backward_f64(int batch, int in_features, int out_features, const double *x,
                                   const double *weight, const double *dy, double *dx,
                                   double *dweight, double *dbias);

/* y = max(x, 0); dx = y > 0 ? dy : 0; y = a + b. */
void reference_relu_forward(size_t count, const float *x, float *y);
void reference_relu_backward(size_t count, const float *y, const float *dy, float *dx);
void reference_add(size_t count, const float *a, const float *b, float *y);

/* torch.nn.MultiLabelSoftMarginLoss (reduction 'mean'): returns
 * mean over N of -1/classes sum_c [t log sigmoid(x) + (1-t) log sigmoid(-x)],
 * with log sigmoid(x) = -softplus(-x) (finite for any x), and writes
 * dlogits = (sigmoid(x) - t) / (N classes) when dlogits is not NULL. */
double reference_multilabel_soft_margin_loss(int batch, int classes, const float *logits,
                                             const float *targets, float *dlogits);
double reference_multilabel_soft_margin_loss_f64(int batch, int classes, const double *logits,
                                                 const double *targets, double *dlogits);

/* One torch.optim.Adam step (L2 weight decay added to the gradient), step
 * counted from 1, computed in double:
 * g = grad + wd param; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * param -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps). */
void reference_adam_update(size_t count, float *param, const float *grad, float *m, float *v,
                           const captcha_adam_config *config, int64_t step);

#endif
