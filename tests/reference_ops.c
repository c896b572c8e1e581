/* Plain double-precision reference ops; see reference_ops.h. */
#include "reference_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- float <-> double helpers for the float wrappers ---- */

static double *to_f64(const float *x, size_t n)
{
    if (!x)
        return NULL;
    double *d = calloc(n ? n : 1, sizeof(double));
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

static void to_f32(float *out, const double *x, size_t n)
{
    if (!out)
        return;
    for (size_t i = 0; i < n; i++)
        out[i] = (float)x[i];
}

static double *zeros_f64(size_t n)
{
    return calloc(n ? n : 1, sizeof(double));
}

/* ---- convolution ---- */

/* Index of x[n,c,h,w] or -1 when (h, w) falls in the zero padding. */
static long input_index(const captcha_conv2d_shape *s, int n, int c, int h, int w)
{
    if (h < 0 || h >= s->in_height || w < 0 || w >= s->in_width)
        return -1;
    return (((long)n * s->in_channels + c) * s->in_height + h) * s->in_width + w;
}

static size_t output_index(const captcha_conv2d_shape *s, int n, int o, int i, int j)
{
    return (((size_t)n * s->out_channels + o) * s->out_height + i) * s->out_width + j;
}

static size_t weight_index(const captcha_conv2d_shape *s, int o, int c, int a, int b)
{
    return (((size_t)o * s->in_channels + c) * s->kernel_size + a) * s->kernel_size + b;
}

void reference_conv2d_forward_f64(const captcha_conv2d_shape *s, const double *x,
                                  const double *weight, const double *bias, const double *residual,
                                  int relu, double *y)
{
    int k = s->kernel_size;
    for (int n = 0; n < s->batch; n++)
        for (int o = 0; o < s->out_channels; o++)
            for (int i = 0; i < s->out_height; i++)
                for (int j = 0; j < s->out_width; j++) {
                    double sum = bias ? bias[o] : 0.0;
                    for (int c = 0; c < s->in_channels; c++)
                        for (int a = 0; a < k; a++)
                            for (int b = 0; b < k; b++) {
                                long xi = input_index(s, n, c, i * s->stride - s->padding + a,
                                                      j * s->stride - s->padding + b);
                                if (xi >= 0)
                                    sum += x[xi] * weight[weight_index(s, o, c, a, b)];
                            }
                    size_t yi = output_index(s, n, o, i, j);
                    if (residual)
                        sum += residual[yi];
                    if (relu && sum < 0)
                        sum = 0;
                    y[yi] = sum;
                }
}

/* Both convolution gradients in one pass over every (output, input, weight)
 * triple the forward sum visited; dx and/or dweight may be NULL. */
static void conv2d_backward_f64(const captcha_conv2d_shape *s, const double *x, const double *dy,
                                const double *weight, double *dx, double *dweight)
{
    int k = s->kernel_size;
    if (dx)
        memset(dx, 0, sizeof(double) * captcha_conv2d_input_count(s));
    if (dweight)
        memset(dweight, 0, sizeof(double) * captcha_conv2d_weight_count(s));
    for (int n = 0; n < s->batch; n++)
        for (int o = 0; o < s->out_channels; o++)
            for (int i = 0; i < s->out_height; i++)
                for (int j = 0; j < s->out_width; j++) {
                    double g = dy[output_index(s, n, o, i, j)];
                    for (int c = 0; c < s->in_channels; c++)
                        for (int a = 0; a < k; a++)
                            for (int b = 0; b < k; b++) {
                                long xi = input_index(s, n, c, i * s->stride - s->padding + a,
                                                      j * s->stride - s->padding + b);
                                if (xi < 0)
                                    continue; /* zero padding: no gradient */
                                size_t wi = weight_index(s, o, c, a, b);
                                if (dx)
                                    dx[xi] += g * weight[wi];
                                if (dweight)
                                    dweight[wi] += g * x[xi];
                            }
                }
}

void reference_conv2d_backward_data_f64(const captcha_conv2d_shape *s, const double *dy,
                                        const double *weight, double *dx)
{
    conv2d_backward_f64(s, NULL, dy, weight, dx, NULL);
}

void reference_conv2d_backward_weight_f64(const captcha_conv2d_shape *s, const double *x,
                                          const double *dy, double *dweight)
{
    conv2d_backward_f64(s, x, dy, NULL, NULL, dweight);
}

void reference_conv2d_forward(const captcha_conv2d_shape *s, const float *x, const float *weight,
                              const float *bias, const float *residual, int relu, float *y)
{
    double *xd = to_f64(x, captcha_conv2d_input_count(s)), *wd = to_f64(weight, captcha_conv2d_weight_count(s));
    double *bd = to_f64(bias, (size_t)s->out_channels), *rd = to_f64(residual, captcha_conv2d_output_count(s));
    double *yd = zeros_f64(captcha_conv2d_output_count(s));
    reference_conv2d_forward_f64(s, xd, wd, bd, rd, relu, yd);
    to_f32(y, yd, captcha_conv2d_output_count(s));
    free(xd);
    free(wd);
    free(bd);
    free(rd);
    free(yd);
}

void reference_conv2d_backward_data(const captcha_conv2d_shape *s, const float *dy,
                                    const float *weight, float *dx)
{
    double *dyd = to_f64(dy, captcha_conv2d_output_count(s)), *wd = to_f64(weight, captcha_conv2d_weight_count(s));
    double *dxd = zeros_f64(captcha_conv2d_input_count(s));
    reference_conv2d_backward_data_f64(s, dyd, wd, dxd);
    to_f32(dx, dxd, captcha_conv2d_input_count(s));
    free(dyd);
    free(wd);
    free(dxd);
}

void reference_conv2d_backward_weight(const captcha_conv2d_shape *s, const float *x,
                                      const float *dy, float *dweight)
{
    double *xd = to_f64(x, captcha_conv2d_input_count(s)), *dyd = to_f64(dy, captcha_conv2d_output_count(s));
    double *dwd = zeros_f64(captcha_conv2d_weight_count(s));
    reference_conv2d_backward_weight_f64(s, xd, dyd, dwd);
    to_f32(dweight, dwd, captcha_conv2d_weight_count(s));
    free(xd);
    free(dyd);
    free(dwd);
}

/* ---- batch normalization ---- */

#define BN_INDEX(n, c, p) (((size_t)(n)*channels + (c)) * spatial + (p))

void reference_batchnorm_forward_training_f64(int batch, int channels, int spatial, const double *x,
                                              const double *gamma, const double *beta,
                                              double momentum, double eps, double *running_mean,
                                              double *running_var, double *saved_mean,
                                              double *saved_invstd, double *y)
{
    double count = (double)batch * spatial;
    for (int c = 0; c < channels; c++) {
        double sum = 0, squares = 0;
        for (int n = 0; n < batch; n++)
            for (int p = 0; p < spatial; p++)
                sum += x[BN_INDEX(n, c, p)];
        double mean = sum / count;
        for (int n = 0; n < batch; n++)
            for (int p = 0; p < spatial; p++) {
                double d = x[BN_INDEX(n, c, p)] - mean;
                squares += d * d;
            }
        double var = squares / count; /* biased, used to normalize */
        double invstd = 1.0 / sqrt(var + eps);
        for (int n = 0; n < batch; n++)
            for (int p = 0; p < spatial; p++) {
                size_t i = BN_INDEX(n, c, p);
                y[i] = (x[i] - mean) * invstd * gamma[c] + beta[c];
            }
        saved_mean[c] = mean;
        saved_invstd[c] = invstd;
        running_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean;
        running_var[c] = (1 - momentum) * running_var[c] + momentum * var * count / (count - 1);
    }
}

void reference_batchnorm_forward_training(int batch, int channels, int spatial, const float *x,
                                          const float *gamma, const float *beta, float momentum,
                                          float eps, float *running_mean, float *running_var,
                                          float *saved_mean, float *saved_invstd, float *y)
{
    size_t n = (size_t)batch * channels * spatial, c = (size_t)channels;
    double *xd = to_f64(x, n), *gd = to_f64(gamma, c), *bd = to_f64(beta, c);
    double *rm = to_f64(running_mean, c), *rv = to_f64(running_var, c);
    double *sm = zeros_f64(c), *si = zeros_f64(c), *yd = zeros_f64(n);
    reference_batchnorm_forward_training_f64(batch, channels, spatial, xd, gd, bd, momentum, eps,
                                             rm, rv, sm, si, yd);
    to_f32(running_mean, rm, c);
    to_f32(running_var, rv, c);
    to_f32(saved_mean, sm, c);
    to_f32(saved_invstd, si, c);
    to_f32(y, yd, n);
    free(xd);
    free(gd);
    free(bd);
    free(rm);
    free(rv);
    free(sm);
    free(si);
    free(yd);
}

void reference_batchnorm_forward_inference(int batch, int channels, int spatial, const float *x,
                                           const float *gamma, const float *beta,
                                           const float *running_mean, const float *running_var,
                                           float eps, float *y)
{
    for (int c = 0; c < channels; c++) {
        double invstd = 1.0 / sqrt((double)running_var[c] + (double)eps);
        for (int n = 0; n < batch; n++)
            for (int p = 0; p < spatial; p++) {
                size_t i = BN_INDEX(n, c, p);
                y[i] = (float)(((double)x[i] - running_mean[c]) * invstd * gamma[c] + beta[c]);
            }
    }
}

void reference_batchnorm_backward_f64(int batch, int channels, int spatial, const double *x,
                                      const double *dy, const double *gamma,
                                      const double *saved_mean, const double *saved_invstd,
                                      double *dx, double *dgamma, double *dbeta)
{
    double count = (double)batch * spatial;
    for (int c = 0; c < channels; c++) {
        double sum_dy = 0, sum_dy_xhat = 0;
        for (int n = 0; n < batch; n++)
            for (int p = 0; p < spatial; p++) {
                size_t i = BN_INDEX(n, c, p);
                double xhat = (x[i] - saved_mean[c]) * saved_invstd[c];
                sum_dy += dy[i];
                sum_dy_xhat += dy[i] * xhat;
            }
        dbeta[c] = sum_dy;
        dgamma[c] = sum_dy_xhat;
        double scale = gamma[c] * saved_invstd[c] / count;
        for (int n = 0; n < batch; n++)
            for (int p = 0; p < spatial; p++) {
                size_t i = BN_INDEX(n, c, p);
                double xhat = (x[i] - saved_mean[c]) * saved_invstd[c];
                dx[i] = scale * (count * dy[i] - sum_dy - xhat * sum_dy_xhat);
            }
    }
}

void reference_batchnorm_backward(int batch, int channels, int spatial, const float *x,
                                  const float *dy, const float *gamma, const float *saved_mean,
                                  const float *saved_invstd, float *dx, float *dgamma, float *dbeta)
{
    size_t n = (size_t)batch * channels * spatial, c = (size_t)channels;
    double *xd = to_f64(x, n), *dyd = to_f64(dy, n), *gd = to_f64(gamma, c);
    double *sm = to_f64(saved_mean, c), *si = to_f64(saved_invstd, c);
    double *dxd = zeros_f64(n), *dg = zeros_f64(c), *db = zeros_f64(c);
    reference_batchnorm_backward_f64(batch, channels, spatial, xd, dyd, gd, sm, si, dxd, dg, db);
    to_f32(dx, dxd, n);
    to_f32(dgamma, dg, c);
    to_f32(dbeta, db, c);
    free(xd);
    free(dyd);
    free(gd);
    free(sm);
    free(si);
    free(dxd);
    free(dg);
    free(db);
}

#undef BN_INDEX

/* ---- linear ---- */

void reference_linear_forward_f64(int batch, int in_features, int out_features, const double *x,
                                  const double *weight, const double *bias, double *y)
{
    for (int n = 0; n < batch; n++)
        for (int o = 0; o < out_features; o++) {
            double sum = bias[o];
            for (int i = 0; i < in_features; i++)
                sum += x[(size_t)n * in_features + i] * weight[(size_t)o * in_features + i];
            y[(size_t)n * out_features + o] = sum;
        }
}

void reference_linear_backward_f64(int batch, int in_features, int out_features, const double *x,
                                   const double *weight, const double *dy, double *dx,
                                   double *dweight, double *dbias)
{
    for (int n = 0; dx && n < batch; n++)
        for (int i = 0; i < in_features; i++) {
            double sum = 0;
            for (int o = 0; o < out_features; o++)
                sum += dy[(size_t)n * out_features + o] * weight[(size_t)o * in_features + i];
            dx[(size_t)n * in_features + i] = sum;
        }
    for (int o = 0; o < out_features; o++) {
        double bias_sum = 0;
        for (int n = 0; n < batch; n++)
            bias_sum += dy[(size_t)n * out_features + o];
        dbias[o] = bias_sum;
        for (int i = 0; i < in_features; i++) {
            double sum = 0;
            for (int n = 0; n < batch; n++)
                sum += dy[(size_t)n * out_features + o] * x[(size_t)n * in_features + i];
            dweight[(size_t)o * in_features + i] = sum;
        }
    }
}

void reference_linear_forward(int batch, int in_features, int out_features, const float *x,
                              const float *weight, const float *bias, float *y)
{
    size_t nx = (size_t)batch * in_features, nw = (size_t)out_features * in_features;
    size_t ny = (size_t)batch * out_features;
    double *xd = to_f64(x, nx), *wd = to_f64(weight, nw), *bd = to_f64(bias, out_features);
    double *yd = zeros_f64(ny);
    reference_linear_forward_f64(batch, in_features, out_features, xd, wd, bd, yd);
    to_f32(y, yd, ny);
    free(xd);
    free(wd);
    free(bd);
    free(yd);
}

void reference_linear_backward(int batch, int in_features, int out_features, const float *x,
                               const float *weight, const float *dy, float *dx, float *dweight,
                               float *dbias)
{
    size_t nx = (size_t)batch * in_features, nw = (size_t)out_features * in_features;
    size_t ny = (size_t)batch * out_features;
    double *xd = to_f64(x, nx), *wd = to_f64(weight, nw), *dyd = to_f64(dy, ny);
    double *dxd = dx ? zeros_f64(nx) : NULL, *dwd = zeros_f64(nw), *dbd = zeros_f64(out_features);
    reference_linear_backward_f64(batch, in_features, out_features, xd, wd, dyd, dxd, dwd, dbd);
    to_f32(dx, dxd, nx);
    to_f32(dweight, dwd, nw);
    to_f32(dbias, dbd, out_features);
    free(xd);
    free(wd);
    free(dyd);
    free(dxd);
    free(dwd);
    free(dbd);
}

/* ---- element-wise ---- */

void reference_relu_forward(size_t count, const float *x, float *y)
{
    for (size_t i = 0; i < count; i++)
        y[i] = x[i] > 0 ? x[i] : 0.0f;
}

void reference_relu_backward(size_t count, const float *y, const float *dy, float *dx)
{
    for (size_t i = 0; i < count; i++)
        dx[i] = y[i] > 0 ? dy[i] : 0.0f;
}

void reference_add(size_t count, const float *a, const float *b, float *y)
{
    for (size_t i = 0; i < count; i++)
        y[i] = a[i] + b[i];
}

/* ---- loss ---- */

static double softplus(double x)
{
    return fmax(x, 0.0) + log1p(exp(-fabs(x)));
}

double reference_multilabel_soft_margin_loss_f64(int batch, int classes, const double *logits,
                                                 const double *targets, double *dlogits)
{
    double total = 0;
    for (int n = 0; n < batch; n++) {
        double sample = 0;
        for (int c = 0; c < classes; c++) {
            size_t i = (size_t)n * classes + c;
            double x = logits[i], t = targets[i];
            double log_sigmoid = -softplus(-x), log_sigmoid_negative = -softplus(x);
            sample += t * log_sigmoid + (1 - t) * log_sigmoid_negative;
            if (dlogits) {
                double sigmoid = exp(log_sigmoid);
                dlogits[i] = (sigmoid - t) / ((double)batch * classes);
            }
        }
        total += -sample / classes;
    }
    return total / batch;
}

double reference_multilabel_soft_margin_loss(int batch, int classes, const float *logits,
                                             const float *targets, float *dlogits)
{
    size_t n = (size_t)batch * classes;
    double *ld = to_f64(logits, n), *td = to_f64(targets, n);
    double *dd = dlogits ? zeros_f64(n) : NULL;
    double loss = reference_multilabel_soft_margin_loss_f64(batch, classes, ld, td, dd);
    to_f32(dlogits, dd, n);
    free(ld);
    free(td);
    free(dd);
    return loss;
}

/* ---- Adam ---- */

void reference_adam_update(size_t count, float *param, const float *grad, float *m, float *v,
                           const captcha_adam_config *config, int64_t step)
{
    double b1 = config->beta1, b2 = config->beta2;
    double bias_correction1 = 1 - pow(b1, (double)step);
    double bias_correction2 = 1 - pow(b2, (double)step);
    for (size_t i = 0; i < count; i++) {
        double g = (double)grad[i] + (double)config->weight_decay * param[i];
        double mi = b1 * m[i] + (1 - b1) * g;
        double vi = b2 * v[i] + (1 - b2) * g * g;
        double update = config->learning_rate / bias_correction1 * mi /
                        (sqrt(vi) / sqrt(bias_correction2) + config->eps);
        m[i] = (float)mi;
        v[i] = (float)vi;
        param[i] = (float)(param[i] - update);
    }
}
