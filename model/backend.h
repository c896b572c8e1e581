/* The compute backend interface: one table of function pointers per backend
 * (like ggml's backend table). The network code (network.c) calls only these,
 * so the CPU (oneDNN) and CUDA (cuDNN/cuBLAS) backends are interchangeable.
 *
 * Conventions for every op:
 *  - Tensors are float32, dense, in the layout stated per argument; activations
 *    are NCHW (batch, channels, rows, columns), convolution weights OIHW
 *    (out channels, in channels, kernel rows, kernel columns), linear weights
 *    [out_features, in_features] row-major, as PyTorch stores them.
 *  - Every pointer is "device memory" of that backend (host memory for the CPU
 *    backend), obtained from alloc(), possibly offset into a larger block.
 *  - Ops are asynchronous on device backends; download() and synchronize()
 *    wait. On failure an op returns a status and fills err (which may be NULL).
 *  - An op a backend does not implement is NULL in its table.
 */
#ifndef CAPTCHA_BACKEND_H
#define CAPTCHA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "captcha_config.h"
#include "captcha_status.h"
#include "preprocess.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct captcha_backend captcha_backend;

/* Geometry of one 2-D convolution, as torch.nn.Conv2d (square kernel, same
 * stride and zero padding on both axes, dilation 1, groups 1):
 * out_height = (in_height + 2*padding - kernel_size) / stride + 1, likewise width. */
typedef struct {
    int batch;
    int in_channels, in_height, in_width;
    int out_channels, out_height, out_width;
    int kernel_size, stride, padding;
} captcha_conv2d_shape;

/* Fills the output size of a conv shape from its input size, kernel, stride
 * and padding (as torch.nn.Conv2d: (in + 2 x padding - kernel) / stride + 1).
 * A stride < 1 gives an output size of 0, which every op refuses. */
void captcha_conv2d_shape_init(captcha_conv2d_shape *shape, int batch, int in_channels,
                               int in_height, int in_width, int out_channels, int kernel_size,
                               int stride, int padding);

/* Element counts of a conv shape: input [N, Cin, H, W], output [N, Cout, Ho, Wo],
 * weight [Cout, Cin, k, k]. */
size_t captcha_conv2d_input_count(const captcha_conv2d_shape *shape);
size_t captcha_conv2d_output_count(const captcha_conv2d_shape *shape);
size_t captcha_conv2d_weight_count(const captcha_conv2d_shape *shape);

/* Hyper-parameters of torch.optim.Adam (L2 weight decay added to the
 * gradient, not decoupled as in AdamW). */
typedef struct {
    float learning_rate; /* torch default 1e-3 */
    float beta1;         /* 0.9 */
    float beta2;         /* 0.999 */
    float eps;           /* 1e-8 */
    float weight_decay;  /* 0 */
} captcha_adam_config;

typedef struct {
    const char *name; /* "cpu", "cuda" */

    void (*destroy)(captcha_backend *backend);

    /* ---- memory ---- */
    captcha_status (*alloc)(captcha_backend *backend, size_t bytes, void **out, captcha_error *err);
    void (*free)(captcha_backend *backend, void *pointer);
    captcha_status (*upload)(captcha_backend *backend, void *device_dst, const void *host_src,
                             size_t bytes, captcha_error *err);
    captcha_status (*download)(captcha_backend *backend, void *host_dst, const void *device_src,
                               size_t bytes, captcha_error *err);
    /* device-to-device copy */
    captcha_status (*copy)(captcha_backend *backend, void *device_dst, const void *device_src,
                           size_t bytes, captcha_error *err);
    /* Waits until every queued op has finished. */
    captcha_status (*synchronize)(captcha_backend *backend, captcha_error *err);

    /* ---- convolution (torch.nn.Conv2d, bias optional) ----
     * x [N, Cin, H, W], weight [Cout, Cin, k, k], bias [Cout] or NULL,
     * residual [N, Cout, Ho, Wo] or NULL, y [N, Cout, Ho, Wo]:
     * y = conv(x, weight) + bias + residual, then max(y, 0) when relu is set.
     * The fused bias/residual/relu form is the inference fast path (batch norm
     * folded into weight and bias); training calls it with NULL, NULL, 0. */
    captcha_status (*conv2d_forward)(captcha_backend *backend, const captcha_conv2d_shape *shape,
                                     const float *x, const float *weight, const float *bias,
                                     const float *residual, int relu, float *y,
                                     captcha_error *err);
    /* dx [N, Cin, H, W] = gradient of the input from dy [N, Cout, Ho, Wo]; overwrites dx. */
    captcha_status (*conv2d_backward_data)(captcha_backend *backend,
                                           const captcha_conv2d_shape *shape, const float *dy,
                                           const float *weight, float *dx, captcha_error *err);
    /* dweight [Cout, Cin, k, k] = gradient of the weight; overwrites dweight. */
    captcha_status (*conv2d_backward_weight)(captcha_backend *backend,
                                             const captcha_conv2d_shape *shape, const float *x,
                                             const float *dy, float *dweight, captcha_error *err);

    /* ---- batch normalization (torch.nn.BatchNorm2d, affine) ----
     * x, y [N, C, spatial] (spatial = H*W), gamma/beta [C].
     * Training: normalizes with the batch's mean and biased variance over N and
     * spatial, writes them to saved_mean [C] and saved_invstd [C]
     * (1/sqrt(var + eps)), and updates running_mean/running_var [C] in place:
     * r = (1 - momentum) * r + momentum * batch_stat, using the unbiased
     * variance (var * n / (n - 1), n = N * spatial) for running_var.
     * eps must be finite and > 0 (the network passes 1e-5), momentum within [0, 1]
     * (0.1): anything else fails with CAPTCHA_ERROR_INVALID_ARGUMENT. */
    captcha_status (*batchnorm_forward_training)(captcha_backend *backend, int batch, int channels,
                                                 int spatial, const float *x, const float *gamma,
                                                 const float *beta, float momentum, float eps,
                                                 float *running_mean, float *running_var,
                                                 float *saved_mean, float *saved_invstd,
                                                 float *y, captcha_error *err);
    /* Inference: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta (eps as
     * above). */
    captcha_status (*batchnorm_forward_inference)(captcha_backend *backend, int batch,
                                                  int channels, int spatial, const float *x,
                                                  const float *gamma, const float *beta,
                                                  const float *running_mean,
                                                  const float *running_var, float eps, float *y,
                                                  captcha_error *err);
    /* Backward of the training form: from x, dy and the saved statistics,
     * writes dx [N, C, spatial], dgamma [C] and dbeta [C] (all overwritten). */
    captcha_status (*batchnorm_backward)(captcha_backend *backend, int batch, int channels,
                                         int spatial, const float *x, const float *dy,
                                         const float *gamma, const float *saved_mean,
                                         const float *saved_invstd, float *dx, float *dgamma,
                                         float *dbeta, captcha_error *err);

    /* ---- linear (torch.nn.Linear) ----
     * x [N, in], weight [out, in], bias [out], y [N, out] = x weight^T + bias. */
    captcha_status (*linear_forward)(captcha_backend *backend, int batch, int in_features,
                                     int out_features, const float *x, const float *weight,
                                     const float *bias, float *y, captcha_error *err);
    /* dx [N, in] (NULL: not computed), dweight [out, in], dbias [out]; overwritten. */
    captcha_status (*linear_backward)(captcha_backend *backend, int batch, int in_features,
                                      int out_features, const float *x, const float *weight,
                                      const float *dy, float *dx, float *dweight, float *dbias,
                                      captcha_error *err);

    /* ---- element-wise (count = number of floats) ---- */
    /* y = max(x, 0); y may equal x. */
    captcha_status (*relu_forward)(captcha_backend *backend, size_t count, const float *x,
                                   float *y, captcha_error *err);
    /* dx = y > 0 ? dy : 0, with y the ReLU's output; dx may equal dy. */
    captcha_status (*relu_backward)(captcha_backend *backend, size_t count, const float *y,
                                    const float *dy, float *dx, captcha_error *err);
    /* y = a + b; y may equal a or b. */
    captcha_status (*add)(captcha_backend *backend, size_t count, const float *a, const float *b,
                          float *y, captcha_error *err);

    /* ---- loss, as torch.nn.MultiLabelSoftMarginLoss (reduction 'mean') ----
     * logits, targets (0 or 1) [N, classes]:
     * loss = mean over N of ( -1/classes * sum_c [ t log sigmoid(x) + (1 - t) log sigmoid(-x) ] ),
     * computed stably as log sigmoid(x) = -softplus(-x). Writes the loss to
     * *loss_host (host memory, after synchronizing) and
     * dlogits [N, classes] = (sigmoid(x) - t) / (N * classes). */
    captcha_status (*multilabel_soft_margin_loss)(captcha_backend *backend, int batch, int classes,
                                                  const float *logits, const float *targets,
                                                  float *loss_host, float *dlogits,
                                                  captcha_error *err);

    /* ---- optimizer, as torch.optim.Adam (foreach=False), step counted from 1 ----
     * For each i: g = grad + weight_decay * param; m = b1 m + (1 - b1) g;
     * v = b2 v + (1 - b2) g^2; param -= (lr / (1 - b1^step)) * m /
     * (sqrt(v) / sqrt(1 - b2^step) + eps). */
    captcha_status (*adam_update)(captcha_backend *backend, size_t count, float *param,
                                  const float *grad, float *m, float *v,
                                  const captcha_adam_config *config, int64_t step,
                                  captcha_error *err);
    /* ---- optional ops (NULL when a backend lacks them) ---- */
    /* Called by the network whenever it rewrites weights (load, optimizer step,
     * batch-norm folding), so a backend that caches reordered/blocked copies of
     * weights keyed by pointer drops them. */
    void (*invalidate_cache)(captcha_backend *backend);
    /* Preprocessing on the device (same semantics as captcha_preprocess in
     * preprocess.h): image and roi describe host memory; the backend uploads
     * only the rows and columns of roi and writes device_out [3, H, W] (H, W =
     * config's input size). roi must lie inside the image. The CPU backend's is
     * captcha_preprocess itself (its device memory is host memory). */
    captcha_status (*preprocess)(captcha_backend *backend, const captcha_image *image,
                                 const captcha_roi *roi, const captcha_config *config,
                                 float *device_out, captcha_error *err);
    /* Graph capture (CUDA graphs): ops queued between capture_begin and
     * capture_end are recorded, not run, into *graph; graph_launch replays them
     * with the same pointers. */
    captcha_status (*capture_begin)(captcha_backend *backend, captcha_error *err);
    captcha_status (*capture_end)(captcha_backend *backend, void **graph, captcha_error *err);
    captcha_status (*graph_launch)(captcha_backend *backend, void *graph, captcha_error *err);
    void (*graph_destroy)(captcha_backend *backend, void *graph);
    /* conv2d_forward with a choice of activation layout per side: x_native /
     * y_native set means that tensor (and, for y, the residual) is in the
     * backend's native activation layout for its channel count instead of
     * NCHW. The native layout holds exactly the elements of NCHW (same byte
     * size) but their order is the backend's own (CPU: oneDNN's nChw16c on
     * AVX-512 / nChw8c, or NCHW when the channels are not a multiple of the
     * block); only another native op can read it. Chaining convolutions in it
     * skips the layout conversions at every op boundary (the inference path). */
    captcha_status (*conv2d_forward_native)(captcha_backend *backend,
                                            const captcha_conv2d_shape *shape, const float *x,
                                            int x_native, const float *weight, const float *bias,
                                            const float *residual, int relu, float *y,
                                            int y_native, captcha_error *err);
    /* Optional, with conv2d_forward_native: linear_forward on an x [N, C, H, W] in the
     * native layout, flattened in PyTorch's order (c, h, w) against weight
     * [out, C*H*W]; bias [out]; y [N, out] plain. For the inference form: the
     * backend may keep weight's converted copy until invalidate_cache. */
    captcha_status (*linear_forward_native)(captcha_backend *backend, int batch, int channels,
                                            int height, int width, int out_features,
                                            const float *x, const float *weight,
                                            const float *bias, float *y, captcha_error *err);
    /* Two queues of ops (device backends), so that independent ops overlap, e.g. a residual
     * block's shortcut convolution beside its first convolution. side_stream(backend, 1): the
     * ops queued next go to a second queue, which first waits for everything queued so far
     * on the main one; side_stream(backend, 0): back to the main queue, without waiting;
     * side_join: the main queue waits for everything queued so far on the second one. Join
     * before reading results (download, synchronize) and before capture_end; graph capture
     * records both queues. A backend may run both queues as one (CUDA with
     * CAPTCHA_CUDA_BRANCHES=0). */
    captcha_status (*side_stream)(captcha_backend *backend, int on, captcha_error *err);
    captcha_status (*side_join)(captcha_backend *backend, captcha_error *err);
} captcha_backend_ops;

/* The common head of every backend instance; each backend embeds it first. */
struct captcha_backend {
    const captcha_backend_ops *ops;
    int threads; /* CPU backend: the OpenMP threads its ops use (0 given to create is
                    stored as the number of cores); 0 in the CUDA backend */
};

/* Backend choice as given by users ("auto" prefers CUDA, falls back to CPU). */
typedef enum {
    CAPTCHA_DEVICE_AUTO = 0,
    CAPTCHA_DEVICE_CPU,
    CAPTCHA_DEVICE_CUDA,
} captcha_device;

/* Parses "auto", "cpu", "cuda" or "gpu" (the same as "cuda"); NULL text means
 * "auto". CAPTCHA_ERROR_INVALID_ARGUMENT otherwise, or when out is NULL. */
captcha_status captcha_device_parse(const char *text, captcha_device *out, captcha_error *err);

/* Creates a backend. CPU: threads = number of OpenMP threads for oneDNN and
 * the element-wise loops (0 = all cores, at most CAPTCHA_MAX_THREADS). CUDA:
 * gpu_id selects the device. A device that is not one of captcha_device, or
 * out NULL, is CAPTCHA_ERROR_INVALID_ARGUMENT.
 * AUTO tries CUDA and, when it is unavailable, creates the CPU backend and
 * writes the reason to fallback_reason (if not NULL; empty when CUDA was
 * used). CUDA requested but unavailable (not built, no driver, no device,
 * gpu_id out of range) returns CAPTCHA_ERROR_UNAVAILABLE with the reason. */
captcha_status captcha_backend_create(captcha_device device, int gpu_id, int threads,
                                      captcha_backend **out, char *fallback_reason,
                                      size_t fallback_reason_size, captcha_error *err);

void captcha_backend_destroy(captcha_backend *backend);

/* Per-backend constructors. The CUDA backend lives in a module, libcaptcha-cuda.so
 * (model/cuda/backend_cuda.cu), loaded on first use from $CAPTCHA_CUDA_MODULE when that is
 * set (a path that does not load is an error naming it), else from the build tree this
 * library was built in (its absolute path is compiled in) or the install directory, so
 * programs linking this library start on machines without the CUDA libraries; a missing
 * module or library is CAPTCHA_ERROR_UNAVAILABLE.
 *
 * Threads: a backend, and the networks made on it, are used by one thread at a time (no
 * internal locking); a backend made in one thread may be used in another. Use one backend
 * per thread for parallel work. Networks sharing one backend are correct, but each one's
 * batch-norm fold drops the backend's cached weight copies, so alternating between them
 * after weight changes costs re-copies.
 *
 * OpenMP (CPU backend): oneDNN runs on OpenMP here and takes a primitive's thread count
 * from the calling thread's setting, so captcha_backend_cpu_create and every CPU op call
 * omp_set_num_threads(threads) on the calling thread: the caller's own OpenMP regions in
 * that thread then run with the backend's thread count as well. */
captcha_status captcha_backend_cpu_create(int threads, captcha_backend **out, captcha_error *err);

/* The most CPU threads a backend takes (threads above it: CAPTCHA_ERROR_INVALID_ARGUMENT);
 * OpenMP would try to start them all, and the element's threads property has the same
 * limit. */
#define CAPTCHA_MAX_THREADS 1024
captcha_status captcha_backend_cuda_create(int gpu_id, captcha_backend **out, captcha_error *err);

/* True when this build includes the CUDA backend (it may still find no GPU). */
int captcha_backend_cuda_built(void);

/* What this library and the CUDA module must agree on to call each other: the module
 * (loaded at run time, possibly from another build or an older install) exports
 * `const captcha_module_interface *captcha_cuda_module_interface(void)`, the values it was
 * compiled with (its own storage: nothing is written into the caller's), and a module whose
 * values differ from captcha_module_interface_current() (size first, so that a record of
 * another layout is not read further), or that lacks the function (built before it
 * existed), is refused with CAPTCHA_ERROR_UNAVAILABLE naming the file, instead of being
 * called with structures of another layout. CAPTCHA_MODULE_INTERFACE_VERSION changes when
 * a meaning changes without a size (e.g. an op's arguments). */
#define CAPTCHA_MODULE_INTERFACE_VERSION 1
typedef struct {
    size_t size;          /* sizeof(captcha_module_interface) */
    int version;          /* CAPTCHA_MODULE_INTERFACE_VERSION */
    size_t ops_size;      /* sizeof(captcha_backend_ops) */
    size_t backend_size;  /* sizeof(struct captcha_backend) */
    size_t shape_size;    /* sizeof(captcha_conv2d_shape) */
    size_t image_size;    /* sizeof(captcha_image) */
    size_t config_size;   /* sizeof(captcha_config) */
    size_t error_size;    /* sizeof(captcha_error) */
    size_t roi_size;      /* sizeof(captcha_roi) */
    size_t adam_size;     /* sizeof(captcha_adam_config) */
} captcha_module_interface;

static inline captcha_module_interface captcha_module_interface_current(void)
{
    captcha_module_interface i = {sizeof(captcha_module_interface),
                                  CAPTCHA_MODULE_INTERFACE_VERSION,
                                  sizeof(captcha_backend_ops),
                                  sizeof(struct captcha_backend),
                                  sizeof(captcha_conv2d_shape),
                                  sizeof(captcha_image),
                                  sizeof(captcha_config),
                                  sizeof(captcha_error),
                                  sizeof(captcha_roi),
                                  sizeof(captcha_adam_config)};
    return i;
}

#ifdef __cplusplus
}
#endif

#endif
