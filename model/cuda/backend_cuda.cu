/* The CUDA backend: every op of captcha_backend_ops (backend.h) on one GPU,
 * with the CUDA runtime, cuDNN 9 (legacy convolution / batch-norm API) and
 * cuBLAS, plus a few kernels of our own (ReLU, add, loss, Adam, preprocessing).
 *
 * Execution model:
 *  - Every op is queued on one non-default stream owned by the backend
 *    (created with cudaStreamNonBlocking); download(), synchronize() and the
 *    loss (which returns its value in host memory) wait for that stream.
 *    Ops may be called from any host thread: each one makes the backend's
 *    device current first.
 *  - alloc() is cudaMalloc (never managed memory).
 *  - Convolutions: per distinct captcha_conv2d_shape a plan holds the cuDNN
 *    descriptors and the forward / backward-data / backward-filter algorithms,
 *    chosen once, on first use, by timing them (cudnnFind*Algorithm, as
 *    PyTorch's cudnn.benchmark): the fastest that succeeds within a 512 MiB
 *    workspace. As in PyTorch by default, that may be a non-deterministic
 *    backward algorithm (atomic accumulation: gradients vary in the last bits
 *    from run to run); CAPTCHA_CUDA_DETERMINISTIC=1 prefers deterministic ones
 *    for backward-data and backward-filter and makes every choice fixed (the
 *    heuristics, cuDNN for forward convolutions), since timed choices can
 *    differ between runs. CAPTCHA_CUDA_ALGO=heuristic takes
 *    the cuDNN heuristics' first choice instead (cudnnGet*Algorithm_v7, which
 *    runs nothing on the GPU); so does a plan made while a CUDA graph is being
 *    captured. One workspace, grown on demand, serves all of them. (All
 *    CAPTCHA_CUDA_* variables are read when the backend is created.)
 *  - Forward convolutions at small batch and spatial size are faster as
 *    im2col (a kernel of ours) + cuBLAS SGEMM, which splits the long
 *    Cin*k*k reduction across the GPU: conv2d_forward times both forms on a
 *    shape's first use and keeps the faster (choose_forward_path);
 *    CAPTCHA_CUDA_CONV=cudnn or gemm forces one.
 *  - The inference conv (bias / residual / ReLU) is one
 *    cudnnConvolutionBiasActivationForward: y = act(conv(x) + 1 * z + bias)
 *    with z = residual (alpha2 = 1), or z = y and alpha2 = 0 without residual;
 *    a zero bias is used when bias is NULL; the IDENTITY activation (relu = 0)
 *    requires CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM. When cuDNN
 *    reports the fused form unsupported for a shape, that shape falls back to
 *    cudnnConvolutionForward plus one epilogue kernel of ours.
 *  - Batch norm: cudnnBatchNormalization{ForwardTraining,ForwardInference,
 *    Backward} in CUDNN_BATCHNORM_SPATIAL mode on an [N, C, spatial, 1] view.
 *    cuDNN updates running_var with the unbiased batch variance, as PyTorch
 *    does, with exponentialAverageFactor = momentum; it saves the batch mean
 *    and 1/sqrt(var + eps), the saved_mean / saved_invstd of backend.h.
 *  - Linear: cublasSgemm on the row-major tensors viewed as column-major
 *    transposes; bias broadcast and bias gradient by our own kernels.
 *  - Graph capture: cudaStreamBeginCapture (relaxed mode, so a plan or a
 *    larger workspace can still be set up on first use inside a capture) /
 *    cudaStreamEndCapture / cudaGraphInstantiate / cudaGraphLaunch on the
 *    backend's stream. Buffers that a captured graph may reference (workspace,
 *    zero bias) are never freed while a graph is alive, only retired. Ops that
 *    must wait for the GPU (download, synchronize, the loss) fail with
 *    CAPTCHA_ERROR_INVALID_ARGUMENT while a capture is in progress.
 *
 * Precision: FP32 throughout, pinned. Convolutions run with
 * CUDNN_FMA_MATH (no TF32 tensor-core kernels) and cuBLAS with
 * CUBLAS_DEFAULT_MATH (which never uses TF32 for SGEMM), so results agree with
 * the CPU backend to FP32 rounding. Setting the environment variable
 * CAPTCHA_CUDA_TF32=1 when the backend is created opts in to TF32
 * (CUDNN_TENSOR_OP_MATH, CUBLAS_TF32_TENSOR_OP_MATH): faster on Ampere and
 * later, about 1e-3 relative error per convolution.
 *
 * Errors: every CUDA, cuDNN and cuBLAS call goes through CUDA_CHECK,
 * CUDNN_CHECK or CUBLAS_CHECK, which record the expression, file, line and the
 * library's error string in captcha_error and return CAPTCHA_ERROR_BACKEND
 * (CAPTCHA_ERROR_OUT_OF_MEMORY for allocation failures). Nothing here exits.
 */
#include <unistd.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "op_check.h"

namespace
{

/* ---------------------------------------------------------------------------
 * Error checking
 * ------------------------------------------------------------------------- */

const char *source_basename(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

captcha_status fail_cuda(captcha_error *err, cudaError_t code, const char *expr, const char *file,
                         int line)
{
    (void)cudaGetLastError(); /* clear a non-sticky error so later calls are not blamed */
    captcha_status status =
        code == cudaErrorMemoryAllocation ? CAPTCHA_ERROR_OUT_OF_MEMORY : CAPTCHA_ERROR_BACKEND;
    return captcha_fail(err, status, "CUDA error at %s:%d: %s failed: %s (%s)",
                        source_basename(file), line, expr, cudaGetErrorString(code),
                        cudaGetErrorName(code));
}

captcha_status fail_cudnn(captcha_error *err, cudnnStatus_t code, const char *expr,
                          const char *file, int line)
{
    /* cuDNN 9 codes carry a detail (e.g. 3002 NOT_SUPPORTED_SHAPE under 3000 NOT_SUPPORTED)
     * and keep a message of the last failure */
    char detail[256] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    captcha_status status = CUDNN_STATUS_CATEGORY(code) == CUDNN_STATUS_ALLOC_FAILED
                                ? CAPTCHA_ERROR_OUT_OF_MEMORY
                                : CAPTCHA_ERROR_BACKEND;
    return captcha_fail(err, status, "cuDNN error at %s:%d: %s failed: %s (%d)%s%s",
                        source_basename(file), line, expr, cudnnGetErrorString(code), (int)code,
                        detail[0] ? ": " : "", detail);
}

captcha_status fail_cublas(captcha_error *err, cublasStatus_t code, const char *expr,
                           const char *file, int line)
{
    captcha_status status =
        code == CUBLAS_STATUS_ALLOC_FAILED ? CAPTCHA_ERROR_OUT_OF_MEMORY : CAPTCHA_ERROR_BACKEND;
    return captcha_fail(err, status, "cuBLAS error at %s:%d: %s failed: %s (%s)",
                        source_basename(file), line, expr, cublasGetStatusString(code),
                        cublasGetStatusName(code));
}

/* Each macro needs a `captcha_error *err` in scope and returns from the
 * enclosing function (which returns captcha_status) on failure. */
#define CUDA_CHECK(expr)                                                                           \
    do {                                                                                           \
        cudaError_t check_code_ = (expr);                                                          \
        if (check_code_ != cudaSuccess)                                                            \
            return fail_cuda(err, check_code_, #expr, __FILE__, __LINE__);                         \
    } while (0)

#define CUDNN_CHECK(expr)                                                                          \
    do {                                                                                           \
        cudnnStatus_t check_code_ = (expr);                                                        \
        if (check_code_ != CUDNN_STATUS_SUCCESS)                                                   \
            return fail_cudnn(err, check_code_, #expr, __FILE__, __LINE__);                        \
    } while (0)

#define CUBLAS_CHECK(expr)                                                                         \
    do {                                                                                           \
        cublasStatus_t check_code_ = (expr);                                                       \
        if (check_code_ != CUBLAS_STATUS_SUCCESS)                                                  \
            return fail_cublas(err, check_code_, #expr, __FILE__, __LINE__);                       \
    } while (0)

/* Propagates a captcha_status from a helper. */
#define TRY CAPTCHA_TRY

/* ---------------------------------------------------------------------------
 * Backend state
 * ------------------------------------------------------------------------- */

/* Largest workspace one convolution algorithm may ask for. */
const size_t kMaxAlgoWorkspace = (size_t)512 << 20;
/* cuBLAS workspace (set explicitly so that cuBLAS allocates nothing while a
 * graph is captured; 32 MiB is NVIDIA's recommendation for Hopper). */
const size_t kCublasWorkspace = (size_t)32 << 20;

struct conv_plan {
    captcha_conv2d_shape shape;
    cudnnTensorDescriptor_t x_desc, y_desc, bias_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv_desc;
    bool have_forward, have_backward_data, have_backward_filter, have_fused_identity;
    cudnnConvolutionFwdAlgo_t forward_algo;
    size_t forward_workspace;
    size_t fused_identity_workspace; /* IMPLICIT_PRECOMP_GEMM */
    cudnnConvolutionBwdDataAlgo_t backward_data_algo;
    size_t backward_data_workspace;
    cudnnConvolutionBwdFilterAlgo_t backward_filter_algo;
    size_t backward_filter_workspace;
    bool fused_relu_precomp; /* the heuristic's algorithm was refused for the fused ReLU form:
                                IMPLICIT_PRECOMP_GEMM is used for it */
    bool fused_unsupported;  /* cuDNN refused the fused form: conv + epilogue kernel */
    int forward_path;        /* FORWARD_UNDECIDED, FORWARD_CUDNN or FORWARD_GEMM */
};

/* How conv2d_forward computes a shape: cuDNN, or im2col + cuBLAS SGEMM (see
 * choose_forward_path). */
enum { FORWARD_UNDECIDED = 0, FORWARD_CUDNN, FORWARD_GEMM };
/* CAPTCHA_CUDA_CONV: auto (time both per shape), cudnn, gemm */
enum { CONV_MODE_AUTO = 0, CONV_MODE_CUDNN, CONV_MODE_GEMM };

struct bn_plan {
    int batch, channels, spatial;
    cudnnTensorDescriptor_t x_desc, param_desc;
};

struct captured_graph {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
};

/* A growable array of pointers (plain C memory: the library is linked by C
 * programs, without the C++ runtime). */
struct pointer_list {
    void **items;
    size_t count, capacity;
};

bool pointer_list_push(pointer_list *list, void *item)
{
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? 2 * list->capacity : 16;
        void **items = (void **)realloc(list->items, capacity * sizeof(void *));
        if (!items)
            return false;
        list->items = items;
        list->capacity = capacity;
    }
    list->items[list->count++] = item;
    return true;
}

struct cuda_backend {
    captcha_backend base;
    int device;
    bool tf32;
    bool algo_find; /* time the algorithms (cudnnFind*) rather than take the heuristics' */
    bool verbose;   /* CAPTCHA_CUDA_VERBOSE=1: each plan's algorithm choice on stderr */
    bool deterministic; /* CAPTCHA_CUDA_DETERMINISTIC=1: deterministic backward algorithms */
    int conv_mode;      /* CONV_MODE_* */
    cudaStream_t stream; /* the current queue: lanes[lane].stream */
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;
    cudnnActivationDescriptor_t relu_desc, identity_desc;
    void *cublas_workspace;

    void *workspace; /* the current lane's */
    size_t workspace_size;
    /* side_stream / side_join: lane 0 is the main queue, lane 1 the second one; each has its
     * own stream, convolution workspace and cuBLAS workspace, so that both can run at once */
    struct {
        cudaStream_t stream;
        void *workspace;
        size_t workspace_size;
        void *cublas_workspace;
    } lanes[2];
    int lane;
    bool branches;                     /* CAPTCHA_CUDA_BRANCHES=0: one lane */
    cudaEvent_t fork_event, join_event;
    float *zero_bias;
    size_t zero_bias_count;
    pointer_list retired; /* buffers a live graph may still reference */
    int live_graphs;
    bool capturing;

    float *loss_device; /* one float */
    float *loss_host;   /* pinned, one float */

    uint8_t *image_device; /* preprocessing: the uploaded region */
    size_t image_device_size;

    pointer_list conv_plans; /* conv_plan * */
    pointer_list bn_plans;   /* bn_plan * */
};

cuda_backend *as_cuda(captcha_backend *backend)
{
    return reinterpret_cast<cuda_backend *>(backend);
}

captcha_status bind_device(cuda_backend *b, captcha_error *err)
{
    CUDA_CHECK(cudaSetDevice(b->device));
    return CAPTCHA_OK;
}

captcha_status refuse_while_capturing(cuda_backend *b, const char *what, captcha_error *err)
{
    if (b->capturing)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "CUDA backend: %s waits for the GPU and cannot be recorded into a "
                            "CUDA graph (called between capture_begin and capture_end)",
                            what);
    return CAPTCHA_OK;
}

/* Frees retired buffers once no graph can reference them. */
captcha_status release_retired(cuda_backend *b, captcha_error *err)
{
    if (b->retired.count == 0 || b->capturing || b->live_graphs > 0)
        return CAPTCHA_OK;
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    for (size_t i = 0; i < b->retired.count; i++)
        cudaFree(b->retired.items[i]);
    b->retired.count = 0;
    return CAPTCHA_OK;
}

/* Grows a device buffer to at least bytes. The old buffer is retired, not
 * freed: queued kernels or captured graphs may still use it. */
captcha_status grow_device_buffer(cuda_backend *b, void **buffer, size_t *size, size_t bytes,
                                  captcha_error *err)
{
    if (*size >= bytes)
        return CAPTCHA_OK;
    size_t new_size = bytes + bytes / 4;
    if (*buffer && !pointer_list_push(&b->retired, *buffer))
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "CUDA backend: out of host memory");
    void *p = nullptr;
    *buffer = nullptr;
    *size = 0;
    CUDA_CHECK(cudaMalloc(&p, new_size));
    *buffer = p;
    *size = new_size;
    return release_retired(b, err);
}

captcha_status ensure_workspace(cuda_backend *b, size_t bytes, captcha_error *err)
{
    return grow_device_buffer(b, &b->workspace, &b->workspace_size, bytes, err);
}

captcha_status ensure_zero_bias(cuda_backend *b, int count, captcha_error *err)
{
    size_t bytes = (size_t)count * sizeof(float);
    if (b->zero_bias_count >= (size_t)count)
        return CAPTCHA_OK;
    void *p = b->zero_bias;
    size_t size = b->zero_bias_count * sizeof(float);
    /* grow_device_buffer has retired the old buffer whether or not it succeeded: zero_bias
     * takes the new one (or NULL) at once, so that nothing uses or frees the retired one
     * again, and counts as zeroed only once the memset is queued */
    captcha_status status = grow_device_buffer(b, &p, &size, bytes, err);
    b->zero_bias = (float *)p;
    b->zero_bias_count = 0;
    if (status != CAPTCHA_OK)
        return status;
    CUDA_CHECK(cudaMemsetAsync(p, 0, size, b->stream));
    b->zero_bias_count = size / sizeof(float);
    return CAPTCHA_OK;
}

/* ---------------------------------------------------------------------------
 * Kernels
 * ------------------------------------------------------------------------- */

const int kThreads = 256;

unsigned grid_for(size_t count)
{
    size_t blocks = (count + kThreads - 1) / kThreads;
    if (blocks > 65535u * 8u)
        blocks = 65535u * 8u; /* grid-stride loops cover the rest */
    if (blocks == 0)
        blocks = 1;
    return (unsigned)blocks;
}

#define GRID_STRIDE_LOOP(i, n)                                                                     \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)blockDim.x * gridDim.x)

__global__ void relu_forward_kernel(size_t n, const float *x, float *y)
{
    GRID_STRIDE_LOOP(i, n)
    {
        float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

__global__ void relu_backward_kernel(size_t n, const float *y, const float *dy, float *dx)
{
    GRID_STRIDE_LOOP(i, n)
    {
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
}

__global__ void add_kernel(size_t n, const float *a, const float *b, float *y)
{
    GRID_STRIDE_LOOP(i, n)
    {
        y[i] = a[i] + b[i];
    }
}

/* y [N, C, spatial] = act(y + bias[c] + residual): the epilogue of the
 * unfused inference conv. bias and residual may be NULL. */
__global__ void conv_epilogue_kernel(size_t n, int channels, int spatial, const float *bias,
                                     const float *residual, int relu, float *y)
{
    GRID_STRIDE_LOOP(i, n)
    {
        float v = y[i];
        if (bias)
            v += bias[(i / (size_t)spatial) % (size_t)channels];
        if (residual)
            v += residual[i];
        if (relu && v < 0.0f)
            v = 0.0f;
        y[i] = v;
    }
}

/* col [N, Cin*k*k, Ho*Wo] from x [N, Cin, H, W] (zero padding), row index c*k*k + ky*k + kx
 * as the OIHW weight's column index: the unfolded input of a convolution. */
__global__ void im2col_kernel(size_t total, int channels, int height, int width, int kernel,
                              int stride, int padding, int out_height, int out_width,
                              const float *x, float *col)
{
    const size_t hw = (size_t)out_height * out_width;
    const size_t kk = (size_t)channels * kernel * kernel;
    GRID_STRIDE_LOOP(i, total)
    {
        size_t pixel = i % hw, row = i / hw;
        size_t r = row % kk, n = row / kk;
        int kx = (int)(r % kernel), ky = (int)(r / kernel % kernel), c = (int)(r / kernel / kernel);
        int oy = (int)(pixel / out_width), ox = (int)(pixel % out_width);
        int iy = oy * stride - padding + ky, ix = ox * stride - padding + kx;
        col[i] = iy >= 0 && iy < height && ix >= 0 && ix < width
                     ? x[((n * channels + c) * height + iy) * width + ix]
                     : 0.0f;
    }
}

/* y [N, out] = bias broadcast over rows (the GEMM then adds x W^T). */
__global__ void broadcast_rows_kernel(int batch, int features, const float *bias, float *y)
{
    size_t n = (size_t)batch * features;
    GRID_STRIDE_LOOP(i, n)
    {
        y[i] = bias[i % (size_t)features];
    }
}

/* dbias [out] = sum over the batch of dy [N, out], one thread per column,
 * summed in a fixed order (deterministic). */
__global__ void column_sum_kernel(int batch, int features, const float *dy, float *dbias)
{
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= features)
        return;
    float sum = 0.0f;
    for (int n = 0; n < batch; n++)
        sum += dy[(size_t)n * features + o];
    dbias[o] = sum;
}

/* softplus(x) = log(1 + exp(x)), stable for large |x|. */
__device__ double softplus(double x)
{
    return fmax(x, 0.0) + log1p(exp(-fabs(x)));
}

/* MultiLabelSoftMarginLoss (mean reduction), one block: per element
 * -[t log sigmoid(x) + (1 - t) log sigmoid(-x)] = t softplus(-x) + (1 - t) softplus(x),
 * summed in double and divided by N * classes; dlogits = (sigmoid(x) - t) / (N * classes). */
__global__ void multilabel_soft_margin_loss_kernel(size_t n, const float *logits,
                                                   const float *targets, float *loss,
                                                   float *dlogits)
{
    __shared__ double partial[kThreads];
    double sum = 0.0;
    float scale = (float)(1.0 / (double)n);
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) {
        float x = logits[i];
        float t = targets[i];
        sum += (double)t * softplus(-(double)x) + (1.0 - (double)t) * softplus((double)x);
        float sigmoid = x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
        dlogits[i] = (sigmoid - t) * scale;
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if ((int)threadIdx.x < stride)
            partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        *loss = (float)(partial[0] / (double)n);
}

/* torch.optim.Adam, single-tensor path (torch 1.13 _single_tensor_adam), in
 * the same operation order, with explicit round-to-nearest intrinsics so the
 * compiler does not contract into FMAs (the CPU computes each step rounded). */
__global__ void adam_kernel(size_t n, float *param, const float *grad, float *m, float *v,
                            float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
                            float eps, float weight_decay, float step_size,
                            float bias_correction2_sqrt)
{
    GRID_STRIDE_LOOP(i, n)
    {
        float p = param[i];
        float g = grad[i];
        if (weight_decay != 0.0f)
            g = __fadd_rn(g, __fmul_rn(weight_decay, p));
        float mi = __fadd_rn(__fmul_rn(m[i], beta1), __fmul_rn(g, one_minus_beta1));
        float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(one_minus_beta2, g), g));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bias_correction2_sqrt), eps);
        p = __fadd_rn(p, __fmul_rn(-step_size, __fdiv_rn(mi, denom)));
        m[i] = mi;
        v[i] = vi;
        param[i] = p;
    }
}

/* ---- preprocessing ----
 * The uploaded region: plane 0 with pitch0 bytes per row (roi rows only,
 * starting at the roi's first column); for NV12/I420 the chroma rows covering
 * the roi, starting at chroma column x0/2 (chroma_x0_odd/chroma_y0_odd say
 * whether the roi starts on an odd luma column/row). */
struct preprocess_params {
    int format;
    int src_width, src_height; /* roi size */
    const uint8_t *plane0;
    int pitch0;
    const uint8_t *plane1, *plane2;
    int pitch1, pitch2;
    int x0_odd, y0_odd;
    int dst_width, dst_height;
    double scale_x, scale_y; /* src / dst, as cv::resize: 1 / (dst / src) */
    int same_size;           /* region already has the output size: copied unchanged */
    int rgb_order;           /* output planes R, G, B instead of B, G, R */
    float mean, std;
    captcha_yuv_coefficients yuv; /* NV12/I420: the image's matrix and range */
};

/* YUV -> B, G, R in 16-bit fixed point with the image's coefficients
 * (captcha_yuv_coefficients_get), exactly as model/preprocess.c. */
__device__ inline uint8_t clamp_u8(int v)
{
    return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

__device__ inline void yuv_to_bgr(const captcha_yuv_coefficients &k, int y, int u, int v,
                                  uint8_t bgr[3])
{
    int c = (y - k.y_offset) * k.y + 32768, d = u - 128, e = v - 128;
    bgr[0] = clamp_u8((c + k.bu * d) >> 16);
    bgr[1] = clamp_u8((c - k.gu * d - k.gv * e) >> 16);
    bgr[2] = clamp_u8((c + k.rv * e) >> 16);
}

/* Reads region pixel (x, y) as B, G, R. */
__device__ void read_bgr(const preprocess_params &p, int x, int y, uint8_t bgr[3])
{
    const uint8_t *row = p.plane0 + (size_t)y * p.pitch0;
    switch (p.format) {
    case CAPTCHA_PIXEL_BGR:
        bgr[0] = row[3 * x], bgr[1] = row[3 * x + 1], bgr[2] = row[3 * x + 2];
        break;
    case CAPTCHA_PIXEL_RGB:
        bgr[0] = row[3 * x + 2], bgr[1] = row[3 * x + 1], bgr[2] = row[3 * x];
        break;
    case CAPTCHA_PIXEL_BGRA:
        bgr[0] = row[4 * x], bgr[1] = row[4 * x + 1], bgr[2] = row[4 * x + 2];
        break;
    case CAPTCHA_PIXEL_RGBA:
        bgr[0] = row[4 * x + 2], bgr[1] = row[4 * x + 1], bgr[2] = row[4 * x];
        break;
    case CAPTCHA_PIXEL_ARGB:
        bgr[0] = row[4 * x + 3], bgr[1] = row[4 * x + 2], bgr[2] = row[4 * x + 1];
        break;
    case CAPTCHA_PIXEL_ABGR:
        bgr[0] = row[4 * x + 1], bgr[1] = row[4 * x + 2], bgr[2] = row[4 * x + 3];
        break;
    case CAPTCHA_PIXEL_GRAY8: bgr[0] = bgr[1] = bgr[2] = row[x]; break;
    case CAPTCHA_PIXEL_NV12: {
        int cx = (x + p.x0_odd) >> 1, cy = (y + p.y0_odd) >> 1;
        const uint8_t *uv = p.plane1 + (size_t)cy * p.pitch1 + 2 * cx;
        yuv_to_bgr(p.yuv, row[x], uv[0], uv[1], bgr);
        break;
    }
    case CAPTCHA_PIXEL_I420: {
        int cx = (x + p.x0_odd) >> 1, cy = (y + p.y0_odd) >> 1;
        yuv_to_bgr(p.yuv, row[x], p.plane1[(size_t)cy * p.pitch1 + cx],
                   p.plane2[(size_t)cy * p.pitch2 + cx], bgr);
        break;
    }
    default: bgr[0] = bgr[1] = bgr[2] = 0;
    }
}

/* OpenCV cv::resize INTER_LINEAR taps, as model/preprocess.c computes them:
 * f = (float)((d + 0.5) * scale - 0.5), taps floor(f) and floor(f) + 1 with
 * 11-bit fixed-point weights (2048 = 1.0, round half to even). Columns: left
 * of 0 or at/after size-1 read the edge pixel with weight 1. Rows: both taps
 * clamped to the image, weights kept (as OpenCV does).
 * The source coordinate is rounded after the product and again after the subtraction,
 * as the C code computes it: nvcc would otherwise contract the two into one fused
 * multiply-add (fma.rn.f64), whose single rounding gives another float for some sizes
 * (e.g. a 17059-pixel-wide region to 3072 columns: tap weights 402/1646 instead of
 * 404/1644, one grey level apart). */
__device__ inline float source_coordinate(int d, double scale)
{
    return (float)__dsub_rn(__dmul_rn((double)d + 0.5, scale), 0.5);
}

__device__ inline void column_taps(int d, double scale, int size, int *s0, int *s1, int *w0,
                                   int *w1)
{
    float f = source_coordinate(d, scale);
    int s = (int)floorf(f);
    f -= (float)s;
    if (s < 0)
        f = 0.0f, s = 0;
    int next = s + 1;
    if (s >= size - 1)
        f = 0.0f, s = size - 1, next = size - 1;
    *s0 = s;
    *s1 = next;
    *w0 = __float2int_rn((1.0f - f) * 2048.0f);
    *w1 = __float2int_rn(f * 2048.0f);
}

__device__ inline void row_taps(int d, double scale, int size, int *s0, int *s1, int *w0, int *w1)
{
    float f = source_coordinate(d, scale);
    int s = (int)floorf(f);
    f -= (float)s;
    int next = s + 1;
    *s0 = s < 0 ? 0 : (s >= size ? size - 1 : s);
    *s1 = next < 0 ? 0 : (next >= size ? size - 1 : next);
    *w0 = __float2int_rn((1.0f - f) * 2048.0f);
    *w1 = __float2int_rn(f * 2048.0f);
}

/* One thread per output pixel: format conversion of the 4 taps, OpenCV's
 * fixed-point bilinear interpolation rounded to uint8 (the vertical pass
 * rounds as OpenCV's SIMD kernel for the first multiple of 8 bytes of each
 * interleaved BGR output row and exactly for the rest, as preprocess.c), then
 * x / 255 and (x - mean) / std, written to 3 planes [3, H, W]. */
__global__ void preprocess_kernel(preprocess_params p, float *out)
{
    int dx = blockIdx.x * blockDim.x + threadIdx.x;
    int dy = blockIdx.y * blockDim.y + threadIdx.y;
    if (dx >= p.dst_width || dy >= p.dst_height)
        return;
    int x0, x1, ax0, ax1, y0, y1, by0, by1;
    column_taps(dx, p.scale_x, p.src_width, &x0, &x1, &ax0, &ax1);
    row_taps(dy, p.scale_y, p.src_height, &y0, &y1, &by0, &by1);
    uint8_t p00[3], p01[3], p10[3], p11[3];
    read_bgr(p, x0, y0, p00);
    read_bgr(p, x1, y0, p01);
    read_bgr(p, x0, y1, p10);
    read_bgr(p, x1, y1, p11);
    size_t plane = (size_t)p.dst_width * p.dst_height;
    size_t at = (size_t)dy * p.dst_width + dx;
    int vector_end = (3 * p.dst_width) & ~7;
    for (int c = 0; c < 3; c++) {
        int value;
        if (p.same_size) {
            value = p00[c];
        } else {
            int row0 = p00[c] * ax0 + p01[c] * ax1;
            int row1 = p10[c] * ax0 + p11[c] * ax1;
            if (3 * dx + c < vector_end)
                value = ((((row0 >> 4) * by0) >> 16) + (((row1 >> 4) * by1) >> 16) + 2) >> 2;
            else
                value = (row0 * by0 + row1 * by1 + (1 << 21)) >> 22;
            value = clamp_u8(value);
        }
        int out_plane = p.rgb_order ? 2 - c : c;
        out[out_plane * plane + at] = ((float)value / 255.0f - p.mean) / p.std;
    }
}

/* ---------------------------------------------------------------------------
 * Memory ops
 * ------------------------------------------------------------------------- */

captcha_status cuda_alloc(captcha_backend *backend, size_t bytes, void **out, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    *out = nullptr;
    TRY(bind_device(b, err));
    void *p = nullptr;
    cudaError_t code = cudaMalloc(&p, bytes ? bytes : 1);
    if (code == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "CUDA device %d: out of memory allocating %zu bytes (%zu of %zu "
                            "bytes free)",
                            b->device, bytes, free_bytes, total_bytes);
    }
    CUDA_CHECK(code);
    *out = p;
    return CAPTCHA_OK;
}

void cuda_free(captcha_backend *backend, void *pointer)
{
    if (!pointer)
        return;
    cuda_backend *b = as_cuda(backend);
    cudaSetDevice(b->device);
    cudaFree(pointer); /* synchronizes with queued work using it */
}

captcha_status cuda_upload(captcha_backend *backend, void *device_dst, const void *host_src,
                           size_t bytes, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(bind_device(b, err));
    CUDA_CHECK(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, b->stream));
    return CAPTCHA_OK;
}

captcha_status cuda_download(captcha_backend *backend, void *host_dst, const void *device_src,
                             size_t bytes, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(refuse_while_capturing(b, "download", err));
    TRY(bind_device(b, err));
    CUDA_CHECK(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, b->stream));
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    return CAPTCHA_OK;
}

captcha_status cuda_copy(captcha_backend *backend, void *device_dst, const void *device_src,
                         size_t bytes, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(bind_device(b, err));
    CUDA_CHECK(cudaMemcpyAsync(device_dst, device_src, bytes, cudaMemcpyDeviceToDevice, b->stream));
    return CAPTCHA_OK;
}

captcha_status cuda_synchronize(captcha_backend *backend, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(refuse_while_capturing(b, "synchronize", err));
    TRY(bind_device(b, err));
    CUDA_CHECK(cudaStreamSynchronize(b->lanes[0].stream));
    if (b->lanes[1].stream)
        CUDA_CHECK(cudaStreamSynchronize(b->lanes[1].stream));
    return CAPTCHA_OK;
}

/* Makes lane the current one: its stream, workspaces and the library handles bound to it. */
captcha_status bind_handles(cuda_backend *b, int lane, captcha_error *err)
{
    CUDNN_CHECK(cudnnSetStream(b->cudnn, b->lanes[lane].stream));
    CUBLAS_CHECK(cublasSetStream(b->cublas, b->lanes[lane].stream)); /* resets the workspace: */
    CUBLAS_CHECK(cublasSetWorkspace(b->cublas, b->lanes[lane].cublas_workspace, kCublasWorkspace));
    return CAPTCHA_OK;
}

/* The library handles are bound first; the lane's fields change only when that succeeded
 * (on failure the handles go back to the current lane). */
captcha_status switch_lane(cuda_backend *b, int lane, captcha_error *err)
{
    captcha_status status = bind_handles(b, lane, err);
    if (status != CAPTCHA_OK) {
        (void)bind_handles(b, b->lane, nullptr);
        return status;
    }
    b->lanes[b->lane].workspace = b->workspace;
    b->lanes[b->lane].workspace_size = b->workspace_size;
    b->lane = lane;
    b->stream = b->lanes[lane].stream;
    b->workspace = b->lanes[lane].workspace;
    b->workspace_size = b->lanes[lane].workspace_size;
    return CAPTCHA_OK;
}

captcha_status cuda_side_stream(captcha_backend *backend, int on, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    if (!b->branches)
        return CAPTCHA_OK;
    if ((on != 0) == (b->lane == 1))
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "CUDA backend: side_stream(%d) while %s the second queue", on,
                            b->lane ? "already on" : "not on");
    TRY(bind_device(b, err));
    if (on) {
        CUDA_CHECK(cudaEventRecord(b->fork_event, b->lanes[0].stream));
        CUDA_CHECK(cudaStreamWaitEvent(b->lanes[1].stream, b->fork_event, 0));
    }
    return switch_lane(b, on ? 1 : 0, err);
}

captcha_status cuda_side_join(captcha_backend *backend, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    if (!b->branches)
        return CAPTCHA_OK;
    if (b->lane != 0)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "CUDA backend: side_join while on the second queue");
    TRY(bind_device(b, err));
    CUDA_CHECK(cudaEventRecord(b->join_event, b->lanes[1].stream));
    CUDA_CHECK(cudaStreamWaitEvent(b->lanes[0].stream, b->join_event, 0));
    return CAPTCHA_OK;
}

/* ---------------------------------------------------------------------------
 * Convolution
 * ------------------------------------------------------------------------- */

void conv_plan_destroy(conv_plan *plan)
{
    if (!plan)
        return;
    if (plan->x_desc)
        cudnnDestroyTensorDescriptor(plan->x_desc);
    if (plan->y_desc)
        cudnnDestroyTensorDescriptor(plan->y_desc);
    if (plan->bias_desc)
        cudnnDestroyTensorDescriptor(plan->bias_desc);
    if (plan->w_desc)
        cudnnDestroyFilterDescriptor(plan->w_desc);
    if (plan->conv_desc)
        cudnnDestroyConvolutionDescriptor(plan->conv_desc);
    free(plan);
}

captcha_status conv_plan_create(cuda_backend *b, const captcha_conv2d_shape *s, conv_plan **out,
                                captcha_error *err)
{
    conv_plan *plan = (conv_plan *)calloc(1, sizeof(conv_plan));
    if (!plan)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "CUDA conv2d: out of host memory");
    plan->shape = *s;
    *out = plan;
    /* the caller destroys the plan on failure */
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->x_desc));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->y_desc));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->bias_desc));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&plan->w_desc));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&plan->conv_desc));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->x_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                           s->batch, s->in_channels, s->in_height, s->in_width));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->y_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                           s->batch, s->out_channels, s->out_height, s->out_width));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->bias_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1,
                                           s->out_channels, 1, 1));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(plan->w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                           s->out_channels, s->in_channels, s->kernel_size,
                                           s->kernel_size));
    /* torch.nn.Conv2d is a cross-correlation */
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(plan->conv_desc, s->padding, s->padding, s->stride,
                                                s->stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                                CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(plan->conv_desc,
                                            b->tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));
    int n = 0, c = 0, h = 0, w = 0;
    CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(plan->conv_desc, plan->x_desc, plan->w_desc,
                                                      &n, &c, &h, &w));
    if (n != s->batch || c != s->out_channels || h != s->out_height || w != s->out_width)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "CUDA conv2d: cuDNN computes output %dx%dx%dx%d, the shape says "
                            "%dx%dx%dx%d",
                            n, c, h, w, s->batch, s->out_channels, s->out_height, s->out_width);
    return CAPTCHA_OK;
}

captcha_status find_conv_plan(cuda_backend *b, const captcha_conv2d_shape *s, conv_plan **out,
                              captcha_error *err)
{
    TRY(captcha_check_conv_shape("conv2d", s, err));
    for (size_t i = 0; i < b->conv_plans.count; i++) {
        conv_plan *plan = (conv_plan *)b->conv_plans.items[i];
        if (!memcmp(&plan->shape, s, sizeof(*s))) {
            *out = plan;
            return CAPTCHA_OK;
        }
    }
    conv_plan *plan = nullptr;
    captcha_status status = conv_plan_create(b, s, &plan, err);
    if (status != CAPTCHA_OK) {
        conv_plan_destroy(plan);
        return status;
    }
    if (!pointer_list_push(&b->conv_plans, plan)) {
        conv_plan_destroy(plan);
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "CUDA conv2d: out of host memory");
    }
    *out = plan;
    return CAPTCHA_OK;
}

/* Picks the first heuristic result that ran successfully in the query,
 * fits kMaxAlgoWorkspace and, when prefer_deterministic, is deterministic
 * (falling back to any successful one). */
template <typename Perf>
const Perf *pick_algo(const Perf *perf, int count, bool prefer_deterministic)
{
    for (int pass = prefer_deterministic ? 0 : 1; pass < 2; pass++) {
        for (int i = 0; i < count; i++) {
            if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > kMaxAlgoWorkspace)
                continue;
            if (pass == 0 && perf[i].determinism != CUDNN_DETERMINISTIC)
                continue;
            return &perf[i];
        }
    }
    return nullptr;
}

/* CAPTCHA_CUDA_VERBOSE=1: one line per algorithm choice, with cuDNN's timing (Find) of the
 * chosen algorithm and of the fastest refused or slower ones. */
template <typename Perf>
void report_choice(const cuda_backend *b, const conv_plan *plan, const char *what,
                   const Perf *perf, int count, const Perf *best)
{
    if (!b->verbose)
        return;
    const captcha_conv2d_shape *s = &plan->shape;
    fprintf(stderr, "captcha-cuda: %s N=%d %d->%d %dx%d k%d s%d: algo %d %.1f us ws %zu (%s); "
            "others:", what, s->batch, s->in_channels, s->out_channels, s->in_height,
            s->in_width, s->kernel_size, s->stride, (int)best->algo, best->time * 1e3,
            best->memory, b->algo_find && !b->capturing ? "timed" : "heuristic");
    for (int i = 0; i < count && i < 4; i++)
        if (&perf[i] != best)
            fprintf(stderr, " %d:%s%.1f", (int)perf[i].algo,
                    perf[i].status == CUDNN_STATUS_SUCCESS ? "" : "failed/", perf[i].time * 1e3);
    fprintf(stderr, "\n");
}

captcha_status plan_forward(cuda_backend *b, conv_plan *plan, captcha_error *err)
{
    if (plan->have_forward)
        return CAPTCHA_OK;
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int count = 0;
    if (b->algo_find && !b->capturing)
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(
            b->cudnn, plan->x_desc, plan->w_desc, plan->conv_desc, plan->y_desc,
            CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf));
    else
        CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
            b->cudnn, plan->x_desc, plan->w_desc, plan->conv_desc, plan->y_desc,
            CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf));
    const cudnnConvolutionFwdAlgoPerf_t *best = pick_algo(perf, count, false);
    if (!best)
        return captcha_fail(err, CAPTCHA_ERROR_BACKEND,
                            "cuDNN has no forward convolution algorithm for Cin=%d Cout=%d "
                            "%dx%d kernel %d stride %d",
                            plan->shape.in_channels, plan->shape.out_channels,
                            plan->shape.in_height, plan->shape.in_width, plan->shape.kernel_size,
                            plan->shape.stride);
    report_choice(b, plan, "forward", perf, count, best);
    plan->forward_algo = best->algo;
    plan->forward_workspace = best->memory;
    plan->have_forward = true;
    return CAPTCHA_OK;
}

/* cuDNN declined a call for this shape or algorithm (rather than failing): cuDNN 9 returns
 * detailed codes such as CUDNN_STATUS_NOT_SUPPORTED_SHAPE (3002) under these categories. */
bool cudnn_refused(cudnnStatus_t status)
{
    return CUDNN_STATUS_CATEGORY(status) == CUDNN_STATUS_NOT_SUPPORTED ||
           CUDNN_STATUS_CATEGORY(status) == CUDNN_STATUS_BAD_PARAM;
}

/* The workspace of IMPLICIT_PRECOMP_GEMM, the one algorithm cuDNN fuses the IDENTITY
 * activation with. When cuDNN refuses that algorithm for the shape, the plan is marked
 * fused_unsupported (conv + epilogue kernel) and CAPTCHA_OK is returned. */
captcha_status plan_fused_identity(cuda_backend *b, conv_plan *plan, captcha_error *err)
{
    if (plan->have_fused_identity || plan->fused_unsupported)
        return CAPTCHA_OK;
    cudnnStatus_t status = cudnnGetConvolutionForwardWorkspaceSize(
        b->cudnn, plan->x_desc, plan->w_desc, plan->conv_desc, plan->y_desc,
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, &plan->fused_identity_workspace);
    if (cudnn_refused(status)) {
        plan->fused_unsupported = true;
        return CAPTCHA_OK;
    }
    if (status != CUDNN_STATUS_SUCCESS)
        return fail_cudnn(err, status, "cudnnGetConvolutionForwardWorkspaceSize", __FILE__,
                          __LINE__);
    plan->have_fused_identity = true;
    return CAPTCHA_OK;
}

captcha_status plan_backward_data(cuda_backend *b, conv_plan *plan, captcha_error *err)
{
    if (plan->have_backward_data)
        return CAPTCHA_OK;
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int count = 0;
    if (b->algo_find && !b->capturing)
        CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(
            b->cudnn, plan->w_desc, plan->y_desc, plan->conv_desc, plan->x_desc,
            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, perf));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
            b->cudnn, plan->w_desc, plan->y_desc, plan->conv_desc, plan->x_desc,
            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, perf));
    const cudnnConvolutionBwdDataAlgoPerf_t *best = pick_algo(perf, count, b->deterministic);
    if (!best)
        return captcha_fail(err, CAPTCHA_ERROR_BACKEND,
                            "cuDNN has no backward-data convolution algorithm for Cin=%d Cout=%d",
                            plan->shape.in_channels, plan->shape.out_channels);
    report_choice(b, plan, "backward-data", perf, count, best);
    plan->backward_data_algo = best->algo;
    plan->backward_data_workspace = best->memory;
    plan->have_backward_data = true;
    return CAPTCHA_OK;
}

captcha_status plan_backward_filter(cuda_backend *b, conv_plan *plan, captcha_error *err)
{
    if (plan->have_backward_filter)
        return CAPTCHA_OK;
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int count = 0;
    if (b->algo_find && !b->capturing)
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(
            b->cudnn, plan->x_desc, plan->y_desc, plan->conv_desc, plan->w_desc,
            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf));
    else
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
            b->cudnn, plan->x_desc, plan->y_desc, plan->conv_desc, plan->w_desc,
            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf));
    const cudnnConvolutionBwdFilterAlgoPerf_t *best = pick_algo(perf, count, b->deterministic);
    if (!best)
        return captcha_fail(err, CAPTCHA_ERROR_BACKEND,
                            "cuDNN has no backward-filter convolution algorithm for Cin=%d "
                            "Cout=%d",
                            plan->shape.in_channels, plan->shape.out_channels);
    report_choice(b, plan, "backward-filter", perf, count, best);
    plan->backward_filter_algo = best->algo;
    plan->backward_filter_workspace = best->memory;
    plan->have_backward_filter = true;
    return CAPTCHA_OK;
}

/* conv2d_forward through cuDNN: the fused call where cuDNN accepts it, else
 * cudnnConvolutionForward + conv_epilogue_kernel. */
captcha_status cudnn_conv_forward(cuda_backend *b, conv_plan *plan, const float *x,
                                  const float *weight, const float *bias, const float *residual,
                                  int relu, float *y, captcha_error *err)
{
    const captcha_conv2d_shape *shape = &plan->shape;
    const float one = 1.0f, zero = 0.0f;
    bool fused = bias || residual || relu;

    if (fused && !plan->fused_unsupported) {
        const float *fused_bias = bias;
        if (!fused_bias) {
            TRY(ensure_zero_bias(b, shape->out_channels, err));
            fused_bias = b->zero_bias;
        }
        const float alpha2 = residual ? 1.0f : 0.0f;
        const float *z = residual ? residual : y; /* not read with alpha2 = 0 */
        auto fused_call = [&](cudnnConvolutionFwdAlgo_t algo, size_t workspace,
                              cudnnStatus_t *status) -> captcha_status {
            TRY(ensure_workspace(b, workspace, err));
            *status = cudnnConvolutionBiasActivationForward(
                b->cudnn, &one, plan->x_desc, x, plan->w_desc, weight, plan->conv_desc, algo,
                b->workspace, workspace, &alpha2, plan->y_desc, z, plan->bias_desc, fused_bias,
                relu ? b->relu_desc : b->identity_desc, plan->y_desc, y);
            if (*status != CUDNN_STATUS_SUCCESS && !cudnn_refused(*status))
                return fail_cudnn(err, *status, "cudnnConvolutionBiasActivationForward",
                                  __FILE__, __LINE__);
            return CAPTCHA_OK;
        };
        cudnnStatus_t status;
        if (relu && !plan->fused_relu_precomp) {
            /* ReLU: any algorithm; the heuristic's first choice */
            TRY(plan_forward(b, plan, err));
            TRY(fused_call(plan->forward_algo, plan->forward_workspace, &status));
            if (status == CUDNN_STATUS_SUCCESS)
                return CAPTCHA_OK;
            plan->fused_relu_precomp = true;
            if (b->verbose)
                fprintf(stderr, "captcha-cuda: fused conv + ReLU refused algo %d (%d): "
                        "IMPLICIT_PRECOMP_GEMM\n", (int)plan->forward_algo, (int)status);
        }
        /* IDENTITY (and ReLU when the heuristic's algorithm was refused): cuDNN fuses it
         * only with IMPLICIT_PRECOMP_GEMM */
        TRY(plan_fused_identity(b, plan, err));
        if (!plan->fused_unsupported) {
            TRY(fused_call(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                           plan->fused_identity_workspace, &status));
            if (status == CUDNN_STATUS_SUCCESS)
                return CAPTCHA_OK;
        }
        /* this shape cannot be fused: conv + epilogue kernel from now on */
        plan->fused_unsupported = true;
        if (b->verbose)
            fprintf(stderr, "captcha-cuda: fused conv refused for N=%d %d->%d %dx%d: "
                    "conv + epilogue\n", shape->batch, shape->in_channels, shape->out_channels,
                    shape->in_height, shape->in_width);
    }

    TRY(plan_forward(b, plan, err));
    TRY(ensure_workspace(b, plan->forward_workspace, err));
    /* residual in y's place (in place): the convolution accumulates onto it (beta = 1), as
     * the GEMM path does; overwriting y first would make the epilogue add the convolution
     * to itself */
    const float *beta = residual == y ? &one : &zero;
    if (residual == y)
        residual = nullptr;
    CUDNN_CHECK(cudnnConvolutionForward(b->cudnn, &one, plan->x_desc, x, plan->w_desc, weight,
                                        plan->conv_desc, plan->forward_algo, b->workspace,
                                        plan->forward_workspace, beta, plan->y_desc, y));
    if (fused && (bias || residual || relu)) {
        size_t n =
            (size_t)shape->batch * shape->out_channels * shape->out_height * shape->out_width;
        conv_epilogue_kernel<<<grid_for(n), kThreads, 0, b->stream>>>(
            n, shape->out_channels, shape->out_height * shape->out_width, bias, residual, relu, y);
        CUDA_CHECK(cudaGetLastError());
    }
    return CAPTCHA_OK;
}

/* Bytes of the im2col matrices of a shape (0 for a 1x1, stride-1, unpadded convolution,
 * whose input already is that matrix). */
size_t im2col_bytes(const captcha_conv2d_shape *s)
{
    if (s->kernel_size == 1 && s->stride == 1 && s->padding == 0)
        return 0;
    return (size_t)s->batch * s->in_channels * s->kernel_size * s->kernel_size * s->out_height *
           s->out_width * sizeof(float);
}

/* conv2d_forward as a matrix product: per image n, col_n [Cin*k*k, Ho*Wo] (im2col_kernel,
 * in the workspace) and y_n [Cout, Ho*Wo] = weight [Cout, Cin*k*k] x col_n by cuBLAS SGEMM
 * (strided-batched over N), then bias / residual / ReLU in conv_epilogue_kernel. In cuBLAS's
 * column-major terms: y_n^T [HW, Cout] = col_n^T [HW, K] x weight^T [K, Cout]. */
captcha_status gemm_conv_forward(cuda_backend *b, conv_plan *plan, const float *x,
                                 const float *weight, const float *bias, const float *residual,
                                 int relu, float *y, captcha_error *err)
{
    const captcha_conv2d_shape *s = &plan->shape;
    const int hw = s->out_height * s->out_width;
    const int k = s->in_channels * s->kernel_size * s->kernel_size;
    const size_t col_bytes = im2col_bytes(s);
    if (!col_bytes && y == x) /* the product cannot overwrite its own operand */
        return cudnn_conv_forward(b, plan, x, weight, bias, residual, relu, y, err);
    const float *col = x;
    if (col_bytes) {
        TRY(ensure_workspace(b, col_bytes, err));
        size_t total = col_bytes / sizeof(float);
        im2col_kernel<<<grid_for(total), kThreads, 0, b->stream>>>(
            total, s->in_channels, s->in_height, s->in_width, s->kernel_size, s->stride,
            s->padding, s->out_height, s->out_width, x, (float *)b->workspace);
        CUDA_CHECK(cudaGetLastError());
        col = (const float *)b->workspace;
    }
    /* residual in y's place (in place): the product accumulates onto it (beta = 1) */
    const float one = 1.0f, beta = residual == y ? 1.0f : 0.0f;
    if (residual == y)
        residual = nullptr;
    if (s->batch == 1)
        CUBLAS_CHECK(cublasSgemm(b->cublas, CUBLAS_OP_N, CUBLAS_OP_N, hw, s->out_channels, k, &one,
                                 col, hw, weight, k, &beta, y, hw));
    else
        CUBLAS_CHECK(cublasSgemmStridedBatched(
            b->cublas, CUBLAS_OP_N, CUBLAS_OP_N, hw, s->out_channels, k, &one, col, hw,
            (long long)k * hw, weight, k, 0, &beta, y, hw, (long long)s->out_channels * hw,
            s->batch));
    if (bias || residual || relu) {
        size_t n = (size_t)s->batch * s->out_channels * hw;
        conv_epilogue_kernel<<<grid_for(n), kThreads, 0, b->stream>>>(n, s->out_channels, hw, bias,
                                                                      residual, relu, y);
        CUDA_CHECK(cudaGetLastError());
    }
    return CAPTCHA_OK;
}

/* Mean GPU time in microseconds of `reps` runs of fn() on the backend's stream, after one. */
template <typename Fn>
captcha_status time_on_stream(cuda_backend *b, int reps, Fn fn, float *us, captcha_error *err)
{
    TRY(fn());
    cudaEvent_t start = nullptr, stop = nullptr;
    captcha_status status = CAPTCHA_OK;
    cudaError_t code = cudaEventCreate(&start);
    if (code == cudaSuccess)
        code = cudaEventCreate(&stop);
    if (code == cudaSuccess)
        code = cudaEventRecord(start, b->stream);
    for (int i = 0; code == cudaSuccess && status == CAPTCHA_OK && i < reps; i++)
        status = fn();
    if (code == cudaSuccess && status == CAPTCHA_OK)
        code = cudaEventRecord(stop, b->stream);
    if (code == cudaSuccess && status == CAPTCHA_OK)
        code = cudaEventSynchronize(stop);
    float ms = 0;
    if (code == cudaSuccess && status == CAPTCHA_OK)
        code = cudaEventElapsedTime(&ms, start, stop);
    if (start)
        cudaEventDestroy(start);
    if (stop)
        cudaEventDestroy(stop);
    if (status != CAPTCHA_OK)
        return status;
    if (code != cudaSuccess)
        return fail_cuda(err, code, "timing a convolution with CUDA events", __FILE__, __LINE__);
    *us = ms * 1e3f / (float)reps;
    return CAPTCHA_OK;
}

/* Chooses, once per shape, how conv2d_forward computes it: at small batch and spatial size
 * cuDNN's FP32 kernels run a handful of thread blocks through the whole Cin*k*k reduction
 * (measured: 256->256 channels on 2x8 at batch 1 on an H200, 8 blocks, most of the batch-1
 * forward time), where cuBLAS splits the reduction across the GPU. Both are timed with these
 * arguments (the cuDNN time includes its algorithm search's choice and the fused form) and
 * the faster is kept; CAPTCHA_CUDA_CONV=cudnn or gemm forces one. Not timed (cuDNN) while
 * capturing a graph, when y aliases x or residual, or when the im2col matrices would exceed
 * the workspace limit. */
captcha_status choose_forward_path(cuda_backend *b, conv_plan *plan, const float *x,
                                   const float *weight, const float *bias, const float *residual,
                                   int relu, float *y, captcha_error *err)
{
    plan->forward_path = FORWARD_CUDNN;
    if (b->conv_mode == CONV_MODE_CUDNN || im2col_bytes(&plan->shape) > kMaxAlgoWorkspace)
        return CAPTCHA_OK;
    if (b->conv_mode == CONV_MODE_GEMM) {
        plan->forward_path = FORWARD_GEMM;
        return CAPTCHA_OK;
    }
    if (b->capturing || y == x || y == residual)
        return CAPTCHA_OK;
    float cudnn_us = 0, gemm_us = 0;
    TRY(time_on_stream(
        b, 5, [&] { return cudnn_conv_forward(b, plan, x, weight, bias, residual, relu, y, err); },
        &cudnn_us, err));
    TRY(time_on_stream(
        b, 5, [&] { return gemm_conv_forward(b, plan, x, weight, bias, residual, relu, y, err); },
        &gemm_us, err));
    if (gemm_us < cudnn_us)
        plan->forward_path = FORWARD_GEMM;
    if (b->verbose) {
        const captcha_conv2d_shape *s = &plan->shape;
        fprintf(stderr, "captcha-cuda: conv N=%d %d->%d %dx%d k%d s%d%s%s%s: cuDNN %.1f us, "
                "im2col+GEMM %.1f us: %s\n", s->batch, s->in_channels, s->out_channels,
                s->in_height, s->in_width, s->kernel_size, s->stride, bias ? " +bias" : "",
                residual ? " +res" : "", relu ? " relu" : "", cudnn_us, gemm_us,
                plan->forward_path == FORWARD_GEMM ? "GEMM" : "cuDNN");
    }
    return CAPTCHA_OK;
}

captcha_status cuda_conv2d_forward(captcha_backend *backend, const captcha_conv2d_shape *shape,
                                   const float *x, const float *weight, const float *bias,
                                   const float *residual, int relu, float *y, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_conv2d_forward_args(shape, x, weight, y, err));
    TRY(bind_device(b, err));
    conv_plan *plan = nullptr;
    TRY(find_conv_plan(b, shape, &plan, err));
    if (plan->forward_path == FORWARD_UNDECIDED)
        TRY(choose_forward_path(b, plan, x, weight, bias, residual, relu, y, err));
    if (plan->forward_path == FORWARD_GEMM)
        return gemm_conv_forward(b, plan, x, weight, bias, residual, relu, y, err);
    return cudnn_conv_forward(b, plan, x, weight, bias, residual, relu, y, err);
}

captcha_status cuda_conv2d_backward_data(captcha_backend *backend,
                                         const captcha_conv2d_shape *shape, const float *dy,
                                         const float *weight, float *dx, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_conv2d_backward_data_args(shape, dy, weight, dx, err));
    TRY(bind_device(b, err));
    conv_plan *plan = nullptr;
    TRY(find_conv_plan(b, shape, &plan, err));
    TRY(plan_backward_data(b, plan, err));
    TRY(ensure_workspace(b, plan->backward_data_workspace, err));
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionBackwardData(b->cudnn, &one, plan->w_desc, weight, plan->y_desc, dy,
                                             plan->conv_desc, plan->backward_data_algo,
                                             b->workspace, plan->backward_data_workspace, &zero,
                                             plan->x_desc, dx));
    return CAPTCHA_OK;
}

captcha_status cuda_conv2d_backward_weight(captcha_backend *backend,
                                           const captcha_conv2d_shape *shape, const float *x,
                                           const float *dy, float *dweight, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_conv2d_backward_weight_args(shape, x, dy, dweight, err));
    TRY(bind_device(b, err));
    conv_plan *plan = nullptr;
    TRY(find_conv_plan(b, shape, &plan, err));
    TRY(plan_backward_filter(b, plan, err));
    TRY(ensure_workspace(b, plan->backward_filter_workspace, err));
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(b->cudnn, &one, plan->x_desc, x, plan->y_desc, dy,
                                               plan->conv_desc, plan->backward_filter_algo,
                                               b->workspace, plan->backward_filter_workspace, &zero,
                                               plan->w_desc, dweight));
    return CAPTCHA_OK;
}

/* ---------------------------------------------------------------------------
 * Batch normalization
 * ------------------------------------------------------------------------- */

void bn_plan_destroy(bn_plan *plan)
{
    if (!plan)
        return;
    if (plan->x_desc)
        cudnnDestroyTensorDescriptor(plan->x_desc);
    if (plan->param_desc)
        cudnnDestroyTensorDescriptor(plan->param_desc);
    free(plan);
}

captcha_status find_bn_plan(cuda_backend *b, int batch, int channels, int spatial, bool training,
                            bn_plan **out, captcha_error *err)
{
    TRY(captcha_check_batchnorm("batchnorm", batch, channels, spatial, training, err));
    for (size_t i = 0; i < b->bn_plans.count; i++) {
        bn_plan *plan = (bn_plan *)b->bn_plans.items[i];
        if (plan->batch == batch && plan->channels == channels && plan->spatial == spatial) {
            *out = plan;
            return CAPTCHA_OK;
        }
    }
    bn_plan *plan = (bn_plan *)calloc(1, sizeof(bn_plan));
    if (!plan)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "CUDA batch norm: out of host memory");
    plan->batch = batch;
    plan->channels = channels;
    plan->spatial = spatial;
    cudnnStatus_t status = cudnnCreateTensorDescriptor(&plan->x_desc);
    if (status == CUDNN_STATUS_SUCCESS)
        status = cudnnCreateTensorDescriptor(&plan->param_desc);
    if (status == CUDNN_STATUS_SUCCESS)
        status = cudnnSetTensor4dDescriptor(plan->x_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                            batch, channels, spatial, 1);
    if (status == CUDNN_STATUS_SUCCESS)
        status =
            cudnnDeriveBNTensorDescriptor(plan->param_desc, plan->x_desc, CUDNN_BATCHNORM_SPATIAL);
    if (status != CUDNN_STATUS_SUCCESS) {
        bn_plan_destroy(plan);
        return fail_cudnn(err, status, "batch-norm descriptor setup", __FILE__, __LINE__);
    }
    if (!pointer_list_push(&b->bn_plans, plan)) {
        bn_plan_destroy(plan);
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "CUDA batch norm: out of host memory");
    }
    *out = plan;
    return CAPTCHA_OK;
}

captcha_status cuda_batchnorm_forward_training(captcha_backend *backend, int batch, int channels,
                                               int spatial, const float *x, const float *gamma,
                                               const float *beta, float momentum, float eps,
                                               float *running_mean, float *running_var,
                                               float *saved_mean, float *saved_invstd, float *y,
                                               captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_batchnorm_training_args(batch, channels, spatial, x, gamma, beta, momentum,
                                              eps, running_mean, running_var, saved_mean,
                                              saved_invstd, y, err));
    TRY(bind_device(b, err));
    bn_plan *plan = nullptr;
    TRY(find_bn_plan(b, batch, channels, spatial, true, &plan, err));
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
        b->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, plan->x_desc, x, plan->x_desc, y,
        plan->param_desc, gamma, beta, (double)momentum, running_mean, running_var, (double)eps,
        saved_mean, saved_invstd));
    return CAPTCHA_OK;
}

captcha_status cuda_batchnorm_forward_inference(captcha_backend *backend, int batch, int channels,
                                                int spatial, const float *x, const float *gamma,
                                                const float *beta, const float *running_mean,
                                                const float *running_var, float eps, float *y,
                                                captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_batchnorm_inference_args(batch, channels, spatial, x, gamma, beta,
                                               running_mean, running_var, eps, y, err));
    TRY(bind_device(b, err));
    bn_plan *plan = nullptr;
    TRY(find_bn_plan(b, batch, channels, spatial, false, &plan, err));
    const float one = 1.0f, zero = 0.0f;
    CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
        b->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, plan->x_desc, x, plan->x_desc, y,
        plan->param_desc, gamma, beta, running_mean, running_var, (double)eps));
    return CAPTCHA_OK;
}

captcha_status cuda_batchnorm_backward(captcha_backend *backend, int batch, int channels,
                                       int spatial, const float *x, const float *dy,
                                       const float *gamma, const float *saved_mean,
                                       const float *saved_invstd, float *dx, float *dgamma,
                                       float *dbeta, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_batchnorm_backward_args(batch, channels, spatial, x, dy, gamma, saved_mean,
                                              saved_invstd, dx, dgamma, dbeta, err));
    TRY(bind_device(b, err));
    bn_plan *plan = nullptr;
    TRY(find_bn_plan(b, batch, channels, spatial, true, &plan, err));
    const float one = 1.0f, zero = 0.0f;
    /* epsilon is not used when the saved statistics are given; 1e-5 is the
     * value of the network's BatchNorm2d */
    CUDNN_CHECK(cudnnBatchNormalizationBackward(b->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero,
                                                &one, &zero, plan->x_desc, x, plan->x_desc, dy,
                                                plan->x_desc, dx, plan->param_desc, gamma, dgamma,
                                                dbeta, 1e-5, saved_mean, saved_invstd));
    return CAPTCHA_OK;
}

/* ---------------------------------------------------------------------------
 * Linear
 *
 * cuBLAS is column-major: a row-major [rows, cols] matrix is, to cuBLAS, the
 * column-major [cols, rows] matrix (its transpose) with leading dimension cols.
 * ------------------------------------------------------------------------- */

captcha_status cuda_linear_forward(captcha_backend *backend, int batch, int in_features,
                                   int out_features, const float *x, const float *weight,
                                   const float *bias, float *y, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_linear_forward_args("linear_forward", batch, in_features, out_features, x,
                                          weight, bias, y, err));
    TRY(bind_device(b, err));
    float beta = 0.0f;
    if (bias) {
        size_t n = (size_t)batch * out_features;
        broadcast_rows_kernel<<<grid_for(n), kThreads, 0, b->stream>>>(batch, out_features, bias,
                                                                       y);
        CUDA_CHECK(cudaGetLastError());
        beta = 1.0f;
    }
    const float one = 1.0f;
    /* y^T [out, N] = W [out, in] (cuBLAS sees W^T, so OP_T) * x^T [in, N] */
    CUBLAS_CHECK(cublasSgemm(b->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out_features, batch, in_features,
                             &one, weight, in_features, x, in_features, &beta, y, out_features));
    return CAPTCHA_OK;
}

captcha_status cuda_linear_backward(captcha_backend *backend, int batch, int in_features,
                                    int out_features, const float *x, const float *weight,
                                    const float *dy, float *dx, float *dweight, float *dbias,
                                    captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_linear_backward_args(batch, in_features, out_features, x, weight, dy, dx,
                                           dweight, dbias, err));
    TRY(bind_device(b, err));
    const float one = 1.0f, zero = 0.0f;
    if (dx) {
        /* dx^T [in, N] = W^T [in, out] * dy^T [out, N] */
        CUBLAS_CHECK(cublasSgemm(b->cublas, CUBLAS_OP_N, CUBLAS_OP_N, in_features, batch,
                                 out_features, &one, weight, in_features, dy, out_features, &zero,
                                 dx, in_features));
    }
    if (dweight) {
        /* dW^T [in, out] = x^T [in, N] * dy [N, out] */
        CUBLAS_CHECK(cublasSgemm(b->cublas, CUBLAS_OP_N, CUBLAS_OP_T, in_features, out_features,
                                 batch, &one, x, in_features, dy, out_features, &zero, dweight,
                                 in_features));
    }
    if (dbias) {
        unsigned blocks = (unsigned)((out_features + kThreads - 1) / kThreads);
        column_sum_kernel<<<blocks, kThreads, 0, b->stream>>>(batch, out_features, dy, dbias);
        CUDA_CHECK(cudaGetLastError());
    }
    return CAPTCHA_OK;
}

/* ---------------------------------------------------------------------------
 * Element-wise, loss, optimizer
 * ------------------------------------------------------------------------- */

captcha_status cuda_relu_forward(captcha_backend *backend, size_t count, const float *x, float *y,
                                 captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_elementwise("relu_forward", count, x, y, y, err));
    TRY(bind_device(b, err));
    relu_forward_kernel<<<grid_for(count), kThreads, 0, b->stream>>>(count, x, y);
    CUDA_CHECK(cudaGetLastError());
    return CAPTCHA_OK;
}

captcha_status cuda_relu_backward(captcha_backend *backend, size_t count, const float *y,
                                  const float *dy, float *dx, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_elementwise("relu_backward", count, y, dy, dx, err));
    TRY(bind_device(b, err));
    relu_backward_kernel<<<grid_for(count), kThreads, 0, b->stream>>>(count, y, dy, dx);
    CUDA_CHECK(cudaGetLastError());
    return CAPTCHA_OK;
}

captcha_status cuda_add(captcha_backend *backend, size_t count, const float *a, const float *b_,
                        float *y, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_elementwise("add", count, a, b_, y, err));
    TRY(bind_device(b, err));
    add_kernel<<<grid_for(count), kThreads, 0, b->stream>>>(count, a, b_, y);
    CUDA_CHECK(cudaGetLastError());
    return CAPTCHA_OK;
}

captcha_status cuda_multilabel_soft_margin_loss(captcha_backend *backend, int batch, int classes,
                                                const float *logits, const float *targets,
                                                float *loss_host, float *dlogits,
                                                captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_loss_args(batch, classes, logits, targets, loss_host, dlogits, err));
    TRY(refuse_while_capturing(b, "the loss (returned in host memory)", err));
    TRY(bind_device(b, err));
    size_t n = (size_t)batch * classes;
    multilabel_soft_margin_loss_kernel<<<1, kThreads, 0, b->stream>>>(n, logits, targets,
                                                                      b->loss_device, dlogits);
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaMemcpyAsync(b->loss_host, b->loss_device, sizeof(float), cudaMemcpyDeviceToHost,
                               b->stream));
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    *loss_host = *b->loss_host;
    return CAPTCHA_OK;
}

captcha_status cuda_adam_update(captcha_backend *backend, size_t count, float *param,
                                const float *grad, float *m, float *v,
                                const captcha_adam_config *config, int64_t step, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    TRY(captcha_check_adam_args(count, param, grad, m, v, config, step, err));
    TRY(bind_device(b, err));
    /* as torch: scalars computed in double on the host, used as float */
    double bias_correction1 = 1.0 - pow((double)config->beta1, (double)step);
    double bias_correction2 = 1.0 - pow((double)config->beta2, (double)step);
    double step_size = (double)config->learning_rate / bias_correction1;
    double bias_correction2_sqrt = sqrt(bias_correction2);
    adam_kernel<<<grid_for(count), kThreads, 0, b->stream>>>(
        count, param, grad, m, v, config->beta1, (float)(1.0 - (double)config->beta1),
        config->beta2, (float)(1.0 - (double)config->beta2), config->eps, config->weight_decay,
        (float)step_size, (float)bias_correction2_sqrt);
    CUDA_CHECK(cudaGetLastError());
    return CAPTCHA_OK;
}

/* ---------------------------------------------------------------------------
 * Preprocessing
 * ------------------------------------------------------------------------- */

captcha_status cuda_preprocess(captcha_backend *backend, const captcha_image *image,
                               const captcha_roi *roi, const captcha_config *config,
                               float *device_out, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    /* the configuration as captcha_preprocess checks it (the same refusals on both
     * backends: an input size that is not a multiple of 32 or above the limit, a mean or
     * std outside CAPTCHA_MAX_NORMALIZATION, an unterminated channel order) */
    if (!config || !device_out)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "CUDA preprocess: %s is NULL",
                            config ? "output tensor" : "config");
    if (captcha_config_validate(config, err) != CAPTCHA_OK) {
        captcha_error_prefix(err, "model configuration: ");
        return CAPTCHA_ERROR_INVALID_ARGUMENT;
    }
    TRY(captcha_image_validate(image, err));
    captcha_roi region = {0, 0, image->width, image->height};
    if (roi) {
        /* in 64 bits: x + width must not wrap past the check (as preprocess.c) */
        if (roi->width < 1 || roi->height < 1 || roi->x < 0 || roi->y < 0 ||
            (long long)roi->x + roi->width > image->width ||
            (long long)roi->y + roi->height > image->height)
            return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                                "CUDA preprocess: region %d,%d %dx%d does not lie inside the "
                                "%dx%d image",
                                roi->x, roi->y, roi->width, roi->height, image->width,
                                image->height);
        region = *roi;
    }
    int rgb_order = !strcmp(config->channel_order, "RGB"); /* else "BGR" (validated) */
    TRY(refuse_while_capturing(b, "preprocess (reads host memory)", err));
    TRY(bind_device(b, err));

    bool yuv = image->format == CAPTCHA_PIXEL_NV12 || image->format == CAPTCHA_PIXEL_I420;
    int bpp = captcha_pixel_format_bytes_per_pixel(image->format);
    size_t row0 = (size_t)region.width * bpp;
    size_t size0 = row0 * region.height;
    int cx0 = region.x / 2, cy0 = region.y / 2;
    int cx1 = (region.x + region.width - 1) / 2, cy1 = (region.y + region.height - 1) / 2;
    int chroma_cols = cx1 - cx0 + 1, chroma_rows = cy1 - cy0 + 1;
    size_t row1 = 0, row2 = 0;
    if (image->format == CAPTCHA_PIXEL_NV12)
        row1 = (size_t)chroma_cols * 2;
    else if (image->format == CAPTCHA_PIXEL_I420)
        row1 = row2 = (size_t)chroma_cols;
    size_t size1 = row1 * chroma_rows, size2 = row2 * chroma_rows;
    size_t total = size0 + size1 + size2;
    if (b->image_device_size < total) {
        /* not referenced by graphs (preprocess refuses capture): free now */
        CUDA_CHECK(cudaStreamSynchronize(b->stream));
        if (b->image_device)
            CUDA_CHECK(cudaFree(b->image_device));
        b->image_device = nullptr;
        b->image_device_size = 0;
        CUDA_CHECK(cudaMalloc((void **)&b->image_device, total));
        b->image_device_size = total;
    }
    uint8_t *d0 = b->image_device, *d1 = d0 + size0, *d2 = d1 + size1;
    /* only the region's rows and bytes travel (pageable source: the call
     * returns once the driver has taken the bytes, so the caller may reuse
     * its buffer) */
    CUDA_CHECK(cudaMemcpy2DAsync(
        d0, row0, image->planes[0] + (size_t)region.y * image->strides[0] + (size_t)region.x * bpp,
        image->strides[0], row0, region.height, cudaMemcpyHostToDevice, b->stream));
    if (yuv) {
        size_t chroma_bpp = image->format == CAPTCHA_PIXEL_NV12 ? 2 : 1;
        CUDA_CHECK(cudaMemcpy2DAsync(
            d1, row1, image->planes[1] + (size_t)cy0 * image->strides[1] + (size_t)cx0 * chroma_bpp,
            image->strides[1], row1, chroma_rows, cudaMemcpyHostToDevice, b->stream));
        if (image->format == CAPTCHA_PIXEL_I420)
            CUDA_CHECK(cudaMemcpy2DAsync(
                d2, row2, image->planes[2] + (size_t)cy0 * image->strides[2] + cx0,
                image->strides[2], row2, chroma_rows, cudaMemcpyHostToDevice, b->stream));
    }
    preprocess_params p;
    memset(&p, 0, sizeof(p));
    p.format = image->format;
    p.src_width = region.width;
    p.src_height = region.height;
    p.plane0 = d0;
    p.pitch0 = (int)row0;
    p.plane1 = d1;
    p.pitch1 = (int)row1;
    p.plane2 = d2;
    p.pitch2 = (int)row2;
    p.x0_odd = region.x & 1;
    p.y0_odd = region.y & 1;
    p.dst_width = config->input_width;
    p.dst_height = config->input_height;
    p.scale_x = 1.0 / ((double)config->input_width / region.width);
    p.scale_y = 1.0 / ((double)config->input_height / region.height);
    p.same_size = region.width == p.dst_width && region.height == p.dst_height;
    p.rgb_order = rgb_order;
    p.mean = config->mean;
    p.std = config->std;
    if (yuv)
        TRY(captcha_yuv_coefficients_get(image->yuv_matrix, image->yuv_full_range, &p.yuv, err));
    dim3 block(32, 8);
    dim3 grid((unsigned)((p.dst_width + 31) / 32), (unsigned)((p.dst_height + 7) / 8));
    preprocess_kernel<<<grid, block, 0, b->stream>>>(p, device_out);
    CUDA_CHECK(cudaGetLastError());
    return CAPTCHA_OK;
}

/* ---------------------------------------------------------------------------
 * Graph capture
 * ------------------------------------------------------------------------- */

captcha_status cuda_capture_begin(captcha_backend *backend, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    if (b->capturing)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "CUDA backend: capture_begin called twice without capture_end");
    if (b->lane != 0)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "CUDA backend: capture_begin on the second queue (side_stream(0) "
                            "first)");
    TRY(bind_device(b, err));
    /* relaxed: a first-use plan may still cudaMalloc a larger workspace */
    CUDA_CHECK(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeRelaxed));
    b->capturing = true;
    return CAPTCHA_OK;
}

captcha_status cuda_capture_end(captcha_backend *backend, void **graph_out, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    *graph_out = nullptr;
    if (!b->capturing)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "CUDA backend: capture_end called without capture_begin");
    /* the capture began on the main queue and ends there: on the second one,
     * cudaStreamEndCapture fails (not the origin stream) and the main queue would stay in
     * capture with capturing cleared; refused, the capture stays open for side_stream(0),
     * side_join and capture_end */
    if (b->lane != 0)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "CUDA backend: capture_end on the second queue (side_stream(0) and "
                            "side_join first)");
    TRY(bind_device(b, err));
    b->capturing = false;
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamEndCapture(b->stream, &graph));
    cudaGraphExec_t exec = nullptr;
    cudaError_t code = cudaGraphInstantiate(&exec, graph, 0);
    if (code != cudaSuccess) {
        cudaGraphDestroy(graph);
        return fail_cuda(err, code, "cudaGraphInstantiate(&exec, graph, 0)", __FILE__, __LINE__);
    }
    captured_graph *g = (captured_graph *)calloc(1, sizeof(captured_graph));
    if (!g) {
        cudaGraphExecDestroy(exec);
        cudaGraphDestroy(graph);
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "CUDA backend: out of host memory for a graph");
    }
    g->graph = graph;
    g->exec = exec;
    b->live_graphs++;
    *graph_out = g;
    return CAPTCHA_OK;
}

captcha_status cuda_graph_launch(captcha_backend *backend, void *graph, captcha_error *err)
{
    cuda_backend *b = as_cuda(backend);
    if (!graph)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "CUDA backend: graph_launch of a NULL graph");
    TRY(bind_device(b, err));
    CUDA_CHECK(cudaGraphLaunch(((captured_graph *)graph)->exec, b->stream));
    return CAPTCHA_OK;
}

void cuda_graph_destroy(captcha_backend *backend, void *graph)
{
    cuda_backend *b = as_cuda(backend);
    if (!graph)
        return;
    cudaSetDevice(b->device);
    captured_graph *g = (captured_graph *)graph;
    /* a launched graph may still run: wait before its exec goes */
    cudaStreamSynchronize(b->stream);
    cudaGraphExecDestroy(g->exec);
    cudaGraphDestroy(g->graph);
    free(g);
    if (b->live_graphs > 0)
        b->live_graphs--;
    captcha_error ignored;
    release_retired(b, &ignored);
}

/* ---------------------------------------------------------------------------
 * Lifetime
 * ------------------------------------------------------------------------- */

void cuda_destroy(captcha_backend *backend)
{
    cuda_backend *b = as_cuda(backend);
    if (!b)
        return;
    cudaSetDevice(b->device);
    if (b->lane == 1) { /* destroyed between side_stream(1) and (0): the main lane's buffers */
        cudaStreamSynchronize(b->stream);
        b->lanes[1].workspace = b->workspace;
        b->lanes[1].workspace_size = b->workspace_size;
        b->lane = 0;
        b->stream = b->lanes[0].stream;
        b->workspace = b->lanes[0].workspace;
    }
    if (b->lanes[1].stream)
        cudaStreamSynchronize(b->lanes[1].stream);
    if (b->stream) {
        if (b->capturing) {
            cudaGraph_t graph = nullptr;
            if (cudaStreamEndCapture(b->stream, &graph) == cudaSuccess && graph)
                cudaGraphDestroy(graph);
            (void)cudaGetLastError();
        }
        cudaStreamSynchronize(b->stream);
    }
    for (size_t i = 0; i < b->conv_plans.count; i++)
        conv_plan_destroy((conv_plan *)b->conv_plans.items[i]);
    for (size_t i = 0; i < b->bn_plans.count; i++)
        bn_plan_destroy((bn_plan *)b->bn_plans.items[i]);
    for (size_t i = 0; i < b->retired.count; i++)
        cudaFree(b->retired.items[i]);
    free(b->conv_plans.items);
    free(b->bn_plans.items);
    free(b->retired.items);
    cudaFree(b->workspace);
    cudaFree(b->lanes[1].workspace);
    cudaFree(b->lanes[1].cublas_workspace);
    if (b->fork_event)
        cudaEventDestroy(b->fork_event);
    if (b->join_event)
        cudaEventDestroy(b->join_event);
    if (b->lanes[1].stream)
        cudaStreamDestroy(b->lanes[1].stream);
    cudaFree(b->zero_bias);
    cudaFree(b->cublas_workspace);
    cudaFree(b->loss_device);
    cudaFree(b->image_device);
    if (b->loss_host)
        cudaFreeHost(b->loss_host);
    if (b->relu_desc)
        cudnnDestroyActivationDescriptor(b->relu_desc);
    if (b->identity_desc)
        cudnnDestroyActivationDescriptor(b->identity_desc);
    if (b->cublas)
        cublasDestroy(b->cublas);
    if (b->cudnn)
        cudnnDestroy(b->cudnn);
    if (b->stream)
        cudaStreamDestroy(b->stream);
    free(b);
}

const captcha_backend_ops cuda_ops = {
    "cuda",
    cuda_destroy,
    cuda_alloc,
    cuda_free,
    cuda_upload,
    cuda_download,
    cuda_copy,
    cuda_synchronize,
    cuda_conv2d_forward,
    cuda_conv2d_backward_data,
    cuda_conv2d_backward_weight,
    cuda_batchnorm_forward_training,
    cuda_batchnorm_forward_inference,
    cuda_batchnorm_backward,
    cuda_linear_forward,
    cuda_linear_backward,
    cuda_relu_forward,
    cuda_relu_backward,
    cuda_add,
    cuda_multilabel_soft_margin_loss,
    cuda_adam_update,
    nullptr, /* invalidate_cache: no weight copies are cached */
    cuda_preprocess,
    cuda_capture_begin,
    cuda_capture_end,
    cuda_graph_launch,
    cuda_graph_destroy,
    nullptr, /* conv2d_forward_native: NCHW is cuDNN's layout here */
    nullptr, /* linear_forward_native */
    cuda_side_stream,
    cuda_side_join,
};

captcha_status cuda_setup(cuda_backend *b, captcha_error *err)
{
    CUDA_CHECK(cudaSetDevice(b->device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&b->lanes[0].stream, cudaStreamNonBlocking));
    b->stream = b->lanes[0].stream;
    if (b->branches) {
        CUDA_CHECK(cudaStreamCreateWithFlags(&b->lanes[1].stream, cudaStreamNonBlocking));
        CUDA_CHECK(cudaMalloc(&b->lanes[1].cublas_workspace, kCublasWorkspace));
        CUDA_CHECK(cudaEventCreateWithFlags(&b->fork_event, cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&b->join_event, cudaEventDisableTiming));
    }
    CUDNN_CHECK(cudnnCreate(&b->cudnn));
    CUDNN_CHECK(cudnnSetStream(b->cudnn, b->stream));
    CUBLAS_CHECK(cublasCreate(&b->cublas));
    CUBLAS_CHECK(cublasSetStream(b->cublas, b->stream));
    CUBLAS_CHECK(
        cublasSetMathMode(b->cublas, b->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    CUDA_CHECK(cudaMalloc(&b->cublas_workspace, kCublasWorkspace));
    b->lanes[0].cublas_workspace = b->cublas_workspace;
    CUBLAS_CHECK(cublasSetWorkspace(b->cublas, b->cublas_workspace, kCublasWorkspace));
    CUDNN_CHECK(cudnnCreateActivationDescriptor(&b->relu_desc));
    CUDNN_CHECK(cudnnSetActivationDescriptor(b->relu_desc, CUDNN_ACTIVATION_RELU,
                                             CUDNN_NOT_PROPAGATE_NAN, 0.0));
    CUDNN_CHECK(cudnnCreateActivationDescriptor(&b->identity_desc));
    CUDNN_CHECK(cudnnSetActivationDescriptor(b->identity_desc, CUDNN_ACTIVATION_IDENTITY,
                                             CUDNN_NOT_PROPAGATE_NAN, 0.0));
    /* zero bias for the fused conv without bias, set up front so that a
     * capture never has to create it */
    TRY(ensure_zero_bias(b, 1024, err));
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    CUDA_CHECK(cudaMalloc((void **)&b->loss_device, sizeof(float)));
    CUDA_CHECK(cudaMallocHost((void **)&b->loss_host, sizeof(float)));
    return CAPTCHA_OK;
}

} // namespace

/* The values this module was compiled with, which the loader (backend.c) checks before
 * calling captcha_cuda_module_create (see captcha_module_interface). */
extern "C" __attribute__((visibility("default"))) const captcha_module_interface *
captcha_cuda_module_interface(void)
{
    static const captcha_module_interface interface = captcha_module_interface_current();
    return &interface;
}

/* The module's entry, looked up by captcha_backend_cuda_create (backend.c) after dlopen
 * and the interface check, so that nothing that links the model library needs the CUDA
 * libraries to load. */
extern "C" __attribute__((visibility("default"))) captcha_status
captcha_cuda_module_create(int gpu_id, captcha_backend **out, captcha_error *err)
{
    *out = nullptr;
    int count = 0;
    cudaError_t code = cudaGetDeviceCount(&count);
    if (code != cudaSuccess) {
        (void)cudaGetLastError();
        /* Without any NVIDIA driver the runtime says "driver version is
         * insufficient", which reads as if an old driver were installed. */
        if ((code == cudaErrorInsufficientDriver || code == cudaErrorNoDevice) &&
            access("/dev/nvidiactl", F_OK) != 0)
            return captcha_fail(err, CAPTCHA_ERROR_UNAVAILABLE,
                                "no CUDA device: no NVIDIA driver is loaded (no /dev/nvidiactl; "
                                "CUDA runtime: %s)",
                                cudaGetErrorName(code));
        return captcha_fail(err, CAPTCHA_ERROR_UNAVAILABLE, "no CUDA device: %s (%s)",
                            cudaGetErrorString(code), cudaGetErrorName(code));
    }
    if (count < 1)
        return captcha_fail(err, CAPTCHA_ERROR_UNAVAILABLE,
                            "no CUDA device: the driver reports 0 devices");
    if (gpu_id < 0 || gpu_id >= count)
        return captcha_fail(err, CAPTCHA_ERROR_UNAVAILABLE, "gpu-id %d out of range: %d device(s)",
                            gpu_id, count);

    cuda_backend *b = (cuda_backend *)calloc(1, sizeof(cuda_backend));
    if (!b)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "CUDA backend: out of host memory");
    b->base.ops = &cuda_ops;
    b->base.threads = 0;
    b->device = gpu_id;
    const char *tf32 = getenv("CAPTCHA_CUDA_TF32");
    b->tf32 = tf32 && !strcmp(tf32, "1");
    const char *algo = getenv("CAPTCHA_CUDA_ALGO");
    b->algo_find = !(algo && !strcmp(algo, "heuristic"));
    const char *verbose = getenv("CAPTCHA_CUDA_VERBOSE");
    b->verbose = verbose && !strcmp(verbose, "1");
    const char *deterministic = getenv("CAPTCHA_CUDA_DETERMINISTIC");
    b->deterministic = deterministic && !strcmp(deterministic, "1");
    const char *branches = getenv("CAPTCHA_CUDA_BRANCHES");
    b->branches = !(branches && !strcmp(branches, "0"));
    const char *conv = getenv("CAPTCHA_CUDA_CONV");
    b->conv_mode = conv && !strcmp(conv, "cudnn")  ? CONV_MODE_CUDNN
                   : conv && !strcmp(conv, "gemm") ? CONV_MODE_GEMM
                                                   : CONV_MODE_AUTO;
    if (b->deterministic) {
        /* timed choices can differ between runs (and so round differently): fixed ones */
        b->algo_find = false;
        if (b->conv_mode == CONV_MODE_AUTO)
            b->conv_mode = CONV_MODE_CUDNN;
    }
    captcha_status status = cuda_setup(b, err);
    if (status != CAPTCHA_OK) {
        cuda_destroy(&b->base);
        if (err)
            captcha_error_prefix(err, "CUDA device %d: ", gpu_id);
        return status;
    }
    *out = &b->base;
    return CAPTCHA_OK;
}
