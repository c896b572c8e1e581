/* The reference residual network, described below (the design notes it follows are the
 * team's ../shared/notes/architecture.md, outside this repository).
 *
 * input [N, 3, H, W] (NCHW, normalized)
 *   -> 6 residual blocks, (in -> out, stride): 3->32 s1, 32->64 s2, 64->64 s2,
 *      64->128 s2, 128->256 s2, 256->256 s2. Each block:
 *        relu( BN(conv3x3(relu(BN(conv3x3_stride(x))))) + BN(conv1x1_stride(x)) )
 *      convolutions without bias, padding 1 (3x3) / 0 (1x1); BatchNorm2d eps 1e-5,
 *      momentum 0.1.
 *   -> flatten [N, 256 * H/32 * W/32] -> linear -> logits [N, length * charset_size]
 *
 * Logit layout: logits[n][p * charset_size + c] is the score of character
 * charset[c] at position p.
 *
 * All parameters (trainable weights) live in one contiguous device buffer
 * carved by a tensor table in PyTorch state_dict() order; their gradients and
 * the Adam moments in buffers of the same layout, so the optimizer is one flat
 * update and a checkpoint is three copies. Batch-norm running statistics live
 * in a second buffer ("buffers" in PyTorch's sense).
 */
#ifndef CAPTCHA_NETWORK_H
#define CAPTCHA_NETWORK_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "captcha_config.h"
#include "captcha_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CAPTCHA_NUM_BLOCKS 6
#define CAPTCHA_BATCHNORM_EPS 1e-5f
#define CAPTCHA_BATCHNORM_MOMENTUM 0.1f
#define CAPTCHA_MAX_BATCH 65536 /* images per forward call */

typedef struct captcha_network captcha_network;

typedef enum {
    CAPTCHA_TENSOR_PARAMETER = 0, /* trainable: weight, bias */
    CAPTCHA_TENSOR_RUNNING_STAT,  /* batch-norm running_mean / running_var */
} captcha_tensor_kind;

/* One entry of the tensor table. */
typedef struct {
    char name[64];            /* PyTorch state_dict() name, e.g. "cnn_layers.0.block.1.running_var" */
    captcha_tensor_kind kind;
    int ndim;                 /* 1, 2 or 4 */
    int64_t shape[4];         /* PyTorch shape, e.g. [32, 3, 3, 3] for a conv weight (OIHW) */
    size_t count;             /* product of shape */
    size_t offset;            /* in floats, into the parameter or running-stat buffer */
} captcha_tensor_info;

typedef enum {
    CAPTCHA_MODE_EVAL = 0, /* running statistics, as model.eval() */
    CAPTCHA_MODE_TRAIN,    /* batch statistics, running statistics updated, as model.train() */
} captcha_mode;

/* Floats in the tensors of a network for config: parameters plus running
 * statistics, i.e. the F32 data a model file of that config holds (4 bytes
 * each; num_batches_tracked aside). Allocates nothing lasting; 0 when config is
 * invalid (captcha_config_validate). */
size_t captcha_network_tensor_floats(const captcha_config *config);

/* Creates the network for config on backend (not owned; it must outlive the
 * network). Parameters are initialized as PyTorch initializes a fresh model
 * (kaiming-uniform conv/linear weights with a = sqrt(5), linear bias uniform in
 * +-1/sqrt(in), BN gamma 1, beta 0, running mean 0, var 1), drawn from a
 * generator seeded with seed (not PyTorch's generator: values differ from a
 * torch run with the same seed). Errors: invalid config, allocation failure. */
captcha_status captcha_network_create(captcha_backend *backend, const captcha_config *config,
                                      uint64_t seed, captcha_network **out, captcha_error *err);
void captcha_network_destroy(captcha_network *network);

const captcha_config *captcha_network_config(const captcha_network *network);
captcha_backend *captcha_network_backend(const captcha_network *network);

/* The tensor table, in state_dict() order (num_batches_tracked is not in it;
 * see captcha_network_batches_tracked). */
size_t captcha_network_tensor_count(const captcha_network *network);
const captcha_tensor_info *captcha_network_tensor(const captcha_network *network, size_t index);
/* Index of the tensor with this name, or -1. */
int captcha_network_find_tensor(const captcha_network *network, const char *name);

/* Floats in the parameter buffer (= gradient and each Adam moment buffer). */
size_t captcha_network_parameter_count(const captcha_network *network);
/* Floats in the running-statistics buffer. */
size_t captcha_network_running_stat_count(const captcha_network *network);

/* Copies one tensor (count floats) between host memory and the network. */
captcha_status captcha_network_read_tensor(captcha_network *network, size_t index, float *host,
                                           captcha_error *err);
captcha_status captcha_network_write_tensor(captcha_network *network, size_t index,
                                            const float *host, captcha_error *err);
/* The gradient of a parameter tensor after captcha_network_train_step(). */
captcha_status captcha_network_read_gradient(captcha_network *network, size_t index, float *host,
                                             captcha_error *err);

/* Whole-buffer copies for checkpoints: parameters, running statistics, Adam
 * first/second moments (each parameter_count floats; running stats
 * running_stat_count floats). write_buffer with host NULL writes zeros; read
 * needs a host buffer. An id outside captcha_buffer_id, or a NULL network:
 * CAPTCHA_ERROR_INVALID_ARGUMENT. */
typedef enum {
    CAPTCHA_BUFFER_PARAMETERS = 0,
    CAPTCHA_BUFFER_RUNNING_STATS,
    CAPTCHA_BUFFER_GRADIENTS,
    CAPTCHA_BUFFER_ADAM_M,
    CAPTCHA_BUFFER_ADAM_V,
} captcha_buffer_id;
captcha_status captcha_network_read_buffer(captcha_network *network, captcha_buffer_id id,
                                           float *host, captcha_error *err);
captcha_status captcha_network_write_buffer(captcha_network *network, captcha_buffer_id id,
                                            const float *host, captcha_error *err);

/* Batch-norm num_batches_tracked (the same for every BN layer) and the Adam
 * step count (0 before the first step). */
int64_t captcha_network_batches_tracked(const captcha_network *network);
void captcha_network_set_batches_tracked(captcha_network *network, int64_t value);
int64_t captcha_network_adam_step_count(const captcha_network *network);
void captcha_network_set_adam_step_count(captcha_network *network, int64_t value);

/* Forward pass. input: host memory [batch, 3, H, W] normalized NCHW float
 * (see preprocess.h); logits: host memory [batch, length * charset_size].
 * EVAL uses running statistics (batch norm folded into the convolutions, one
 * fused conv+bias(+residual)+ReLU call per convolution); TRAIN uses batch
 * statistics, updates the running statistics and num_batches_tracked, and keeps
 * the activations for the backward pass (captcha_network_forward_backward).
 * batch in 1..CAPTCHA_MAX_BATCH (TRAIN: >= 2, as PyTorch refuses batch
 * statistics of one value per channel at the last block).
 *
 * An image's EVAL logits do not depend on the other images of the batch, but
 * the backend may pick a different kernel for another batch size (CPU:
 * Winograd F(2x2,3x3) on outputs under 1024 pixels a call at batches 1-2,
 * F(4x4,3x3) otherwise), so they can differ in
 * float32 rounding, up to ~1e-5 here (a confidence in its 4th decimal).
 *
 * Errors: CAPTCHA_ERROR_INVALID_ARGUMENT for a NULL input or logits or a batch
 * out of range (the message names which); CAPTCHA_ERROR_OUT_OF_MEMORY when the
 * activations for batch cannot be allocated; CAPTCHA_ERROR_BACKEND when the
 * backend fails (the message carries its reason). A network is used by one
 * thread at a time (see backend.h). */
captcha_status captcha_network_forward(captcha_network *network, const float *input, int batch,
                                       captcha_mode mode, float *logits, captcha_error *err);

/* Same as captcha_network_forward in EVAL mode, but input [batch, 3, H, W] and
 * logits [batch, classes] are device memory of the network's backend (for
 * backends that preprocess on the device). On a backend with graph capture
 * (CUDA) the first call for a (batch, input, logits) triple runs the ops and
 * records them as a graph; later calls replay it (one launch); at most 8 such
 * graphs are kept, the oldest dropped first. It returns once the work is
 * queued: read logits with the backend's download (which waits) or after its
 * synchronize. */
captcha_status captcha_network_forward_device(captcha_network *network, const float *input,
                                              int batch, float *logits, captcha_error *err);

/* One training step's forward and backward: TRAIN-mode forward on input
 * [batch, 3, H, W], MultiLabelSoftMarginLoss against targets [batch,
 * length * charset_size] (0/1, host memory), gradients of every parameter
 * written (overwritten, not accumulated). *loss receives the mean loss;
 * logits (host, may be NULL) the forward's logits. */
captcha_status captcha_network_forward_backward(captcha_network *network, const float *input,
                                                const float *targets, int batch, float *loss,
                                                float *logits, captcha_error *err);

/* One Adam update of every parameter from the current gradients
 * (torch.optim.Adam semantics, see backend.h); increments the step count. */
captcha_status captcha_network_adam_step(captcha_network *network,
                                         const captcha_adam_config *config, captcha_error *err);

/* torch.optim.Adam's defaults (lr 1e-3, betas 0.9/0.999, eps 1e-8, no decay). */
captcha_adam_config captcha_adam_default(void);

#ifdef __cplusplus
}
#endif

#endif
