/* The reference residual network: tensor table, initialization, forward
 * (training and inference), backward and the Adam step, expressed only in
 * backend ops (backend.h). Shapes are in comments on every buffer. */
#include "network.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int block_in[CAPTCHA_NUM_BLOCKS] = {3, 32, 64, 64, 128, 256};
static const int block_out[CAPTCHA_NUM_BLOCKS] = {32, 64, 64, 128, 256, 256};
static const int block_stride[CAPTCHA_NUM_BLOCKS] = {1, 2, 2, 2, 2, 2};

/* Indices into the tensor table of one batch norm. */
typedef struct {
    int gamma, beta, running_mean, running_var;
} batchnorm_tensors;

typedef struct {
    int conv1, conv2, skip_conv; /* weights, OIHW */
    batchnorm_tensors bn1, bn2, skip_bn;
    /* geometry at the current batch size */
    captcha_conv2d_shape conv1_shape, conv2_shape, skip_shape;
    /* offsets (floats) into the folded buffer: weights and biases with batch norm folded in */
    size_t folded_conv1, folded_bias1, folded_conv2, folded_bias2, folded_skip, folded_skip_bias;
} block_layout;

/* Activations of one block at batch N, shape [N, out, Ho, Wo] each. */
typedef struct {
    float *conv1_out;   /* conv1(x), pre-BN (train); eval: relu(conv1'(x) + b1') */
    float *relu1_out;   /* relu(bn1(conv1_out)) (train only) */
    float *conv2_out;   /* conv2(relu1_out), pre-BN (train only) */
    float *skip_out;    /* skip_conv(x), pre-BN (train); eval: skip'(x) + bs' */
    float *out;         /* relu(bn2(conv2_out) + skip_bn(skip_out)) */
    float *saved_mean[3], *saved_invstd[3]; /* [out] per batch norm (bn1, bn2, skip_bn) */
} block_activations;

typedef struct {
    int batch;
    void *graph;
    const float *input;
    float *logits;
} captured_graph;

#define MAX_GRAPHS 8

struct captcha_network {
    captcha_backend *backend;
    captcha_config config;
    int classes, flatten;

    captcha_tensor_info tensors[CAPTCHA_NUM_BLOCKS * 15 + 2];
    size_t tensor_count;
    size_t parameter_count, running_stat_count;
    block_layout blocks[CAPTCHA_NUM_BLOCKS];
    int fc_weight, fc_bias;

    /* device buffers */
    float *parameters;    /* parameter_count floats, state_dict order */
    float *running_stats; /* running_stat_count floats */
    float *gradients;     /* parameter_count */
    float *adam_m, *adam_v;
    float *folded;        /* folded conv weights and biases for inference */
    size_t folded_count;
    int folded_valid;

    /* activations for `capacity` images */
    int capacity, capacity_train;
    void *activation_block;
    float *input;   /* [N, 3, H, W] */
    float *logits;  /* [N, classes] */
    float *targets; /* [N, classes] */
    float *scratch[4]; /* each [N, max activation per image] */
    block_activations act[CAPTCHA_NUM_BLOCKS];

    int64_t batches_tracked;
    int64_t adam_steps;

    captured_graph graphs[MAX_GRAPHS];
};

/* ---------- tensor table ---------- */

static int add_tensor(captcha_network *net, captcha_tensor_kind kind, const char *name, int ndim,
                      int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    captcha_tensor_info *t = &net->tensors[net->tensor_count];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->kind = kind;
    t->ndim = ndim;
    int64_t dims[4] = {d0, d1, d2, d3};
    t->count = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = dims[i];
        t->count *= (size_t)dims[i];
    }
    if (kind == CAPTCHA_TENSOR_PARAMETER) {
        t->offset = net->parameter_count;
        net->parameter_count += t->count;
    } else {
        t->offset = net->running_stat_count;
        net->running_stat_count += t->count;
    }
    return (int)net->tensor_count++;
}

static batchnorm_tensors add_batchnorm(captcha_network *net, const char *prefix, int channels)
{
    char name[64];
    batchnorm_tensors bn;
    snprintf(name, sizeof name, "%s.weight", prefix);
    bn.gamma = add_tensor(net, CAPTCHA_TENSOR_PARAMETER, name, 1, channels, 0, 0, 0);
    snprintf(name, sizeof name, "%s.bias", prefix);
    bn.beta = add_tensor(net, CAPTCHA_TENSOR_PARAMETER, name, 1, channels, 0, 0, 0);
    snprintf(name, sizeof name, "%s.running_mean", prefix);
    bn.running_mean = add_tensor(net, CAPTCHA_TENSOR_RUNNING_STAT, name, 1, channels, 0, 0, 0);
    snprintf(name, sizeof name, "%s.running_var", prefix);
    bn.running_var = add_tensor(net, CAPTCHA_TENSOR_RUNNING_STAT, name, 1, channels, 0, 0, 0);
    return bn;
}

static void build_tensor_table(captcha_network *net)
{
    char name[64];
    for (int i = 0; i < CAPTCHA_NUM_BLOCKS; i++) {
        block_layout *b = &net->blocks[i];
        int in = block_in[i], out = block_out[i];
        snprintf(name, sizeof name, "cnn_layers.%d.block.0.weight", i);
        b->conv1 = add_tensor(net, CAPTCHA_TENSOR_PARAMETER, name, 4, out, in, 3, 3);
        snprintf(name, sizeof name, "cnn_layers.%d.block.1", i);
        b->bn1 = add_batchnorm(net, name, out);
        snprintf(name, sizeof name, "cnn_layers.%d.block.3.weight", i);
        b->conv2 = add_tensor(net, CAPTCHA_TENSOR_PARAMETER, name, 4, out, out, 3, 3);
        snprintf(name, sizeof name, "cnn_layers.%d.block.4", i);
        b->bn2 = add_batchnorm(net, name, out);
        snprintf(name, sizeof name, "cnn_layers.%d.skip.0.weight", i);
        b->skip_conv = add_tensor(net, CAPTCHA_TENSOR_PARAMETER, name, 4, out, in, 1, 1);
        snprintf(name, sizeof name, "cnn_layers.%d.skip.1", i);
        b->skip_bn = add_batchnorm(net, name, out);

        b->folded_conv1 = net->folded_count;
        net->folded_count += (size_t)out * in * 9;
        b->folded_bias1 = net->folded_count;
        net->folded_count += (size_t)out;
        b->folded_conv2 = net->folded_count;
        net->folded_count += (size_t)out * out * 9;
        b->folded_bias2 = net->folded_count;
        net->folded_count += (size_t)out;
        b->folded_skip = net->folded_count;
        net->folded_count += (size_t)out * in;
        b->folded_skip_bias = net->folded_count;
        net->folded_count += (size_t)out;
    }
    net->fc_weight = add_tensor(net, CAPTCHA_TENSOR_PARAMETER, "fc_layers.0.weight", 2,
                                net->classes, net->flatten, 0, 0);
    net->fc_bias =
        add_tensor(net, CAPTCHA_TENSOR_PARAMETER, "fc_layers.0.bias", 1, net->classes, 0, 0, 0);
}

/* ---------- small helpers ---------- */

static float *tensor_pointer(captcha_network *net, int index)
{
    const captcha_tensor_info *t = &net->tensors[index];
    return (t->kind == CAPTCHA_TENSOR_PARAMETER ? net->parameters : net->running_stats) +
           t->offset;
}

static float *gradient_pointer(captcha_network *net, int index)
{
    return net->gradients + net->tensors[index].offset;
}

static captcha_status device_alloc(captcha_network *net, size_t floats, float **out,
                                   captcha_error *err)
{
    void *p = NULL;
    captcha_status s = net->backend->ops->alloc(net->backend, floats * sizeof(float), &p, err);
    *out = p;
    return s;
}

static void device_free(captcha_network *net, void *p)
{
    if (p)
        net->backend->ops->free(net->backend, p);
}

static void invalidate(captcha_network *net)
{
    net->folded_valid = 0;
    if (net->backend->ops->invalidate_cache)
        net->backend->ops->invalidate_cache(net->backend);
    /* captured graphs read folded weights by pointer: still valid after a refold */
}

/* splitmix64: the initializer's generator */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float uniform(uint64_t *state, float bound)
{
    double u = (double)(next_random(state) >> 11) * (1.0 / 9007199254740992.0);
    return (float)((2.0 * u - 1.0) * bound);
}

static captcha_status initialize(captcha_network *net, uint64_t seed, captcha_error *err)
{
    float *params = calloc(net->parameter_count, sizeof(float));
    float *stats = calloc(net->running_stat_count, sizeof(float));
    if (!params || !stats) {
        free(params);
        free(stats);
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "cannot allocate %zu parameters",
                            net->parameter_count);
    }
    uint64_t state = seed;
    for (size_t i = 0; i < net->tensor_count; i++) {
        const captcha_tensor_info *t = &net->tensors[i];
        const char *suffix = strrchr(t->name, '.') + 1;
        float *dst = (t->kind == CAPTCHA_TENSOR_PARAMETER ? params : stats) + t->offset;
        if (t->kind == CAPTCHA_TENSOR_RUNNING_STAT) {
            float value = strcmp(suffix, "running_var") == 0 ? 1.0f : 0.0f;
            for (size_t k = 0; k < t->count; k++)
                dst[k] = value;
        } else if (t->ndim == 1 && strncmp(t->name, "cnn_layers", 10) == 0) {
            float value = strcmp(suffix, "weight") == 0 ? 1.0f : 0.0f; /* BN gamma 1, beta 0 */
            for (size_t k = 0; k < t->count; k++)
                dst[k] = value;
        } else {
            /* kaiming_uniform_(a=sqrt(5)) for weights: bound 1/sqrt(fan_in); linear bias too */
            size_t fan_in = t->ndim == 1 ? (size_t)net->flatten : t->count / (size_t)t->shape[0];
            float bound = 1.0f / sqrtf((float)fan_in);
            for (size_t k = 0; k < t->count; k++)
                dst[k] = uniform(&state, bound);
        }
    }
    captcha_status s = net->backend->ops->upload(net->backend, net->parameters, params,
                                                 net->parameter_count * sizeof(float), err);
    if (s == CAPTCHA_OK)
        s = net->backend->ops->upload(net->backend, net->running_stats, stats,
                                      net->running_stat_count * sizeof(float), err);
    free(params);
    free(stats);
    return s;
}

/* ---------- create / destroy ---------- */

#define TRY CAPTCHA_TRY

size_t captcha_network_tensor_floats(const captcha_config *config)
{
    if (!config || captcha_config_validate(config, NULL) != CAPTCHA_OK)
        return 0;
    captcha_network *net = calloc(1, sizeof *net);
    if (!net)
        return 0;
    net->config = *config;
    net->classes = captcha_config_classes(config);
    net->flatten = captcha_config_flatten_size(config);
    build_tensor_table(net);
    size_t floats = net->parameter_count + net->running_stat_count;
    free(net);
    return floats;
}

captcha_status captcha_network_create(captcha_backend *backend, const captcha_config *config,
                                      uint64_t seed, captcha_network **out, captcha_error *err)
{
    if (!out)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_network_create: out is NULL");
    *out = NULL;
    if (!backend)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "no backend given");
    if (!config)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_network_create: config is NULL");
    captcha_status s = captcha_config_validate(config, err);
    if (s != CAPTCHA_OK)
        return s;
    captcha_network *net = calloc(1, sizeof *net);
    if (!net)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "cannot allocate the network");
    net->backend = backend;
    net->config = *config;
    net->classes = captcha_config_classes(config);
    net->flatten = captcha_config_flatten_size(config);
    build_tensor_table(net);

    if ((s = device_alloc(net, net->parameter_count, &net->parameters, err)) ||
        (s = device_alloc(net, net->running_stat_count, &net->running_stats, err)) ||
        (s = device_alloc(net, net->parameter_count, &net->gradients, err)) ||
        (s = device_alloc(net, net->parameter_count, &net->adam_m, err)) ||
        (s = device_alloc(net, net->parameter_count, &net->adam_v, err)) ||
        (s = device_alloc(net, net->folded_count, &net->folded, err)) ||
        (s = initialize(net, seed, err)) ||
        (s = captcha_network_write_buffer(net, CAPTCHA_BUFFER_ADAM_M, NULL, err)) ||
        (s = captcha_network_write_buffer(net, CAPTCHA_BUFFER_ADAM_V, NULL, err)) ||
        (s = captcha_network_write_buffer(net, CAPTCHA_BUFFER_GRADIENTS, NULL, err))) {
        captcha_network_destroy(net);
        return s;
    }
    *out = net;
    return CAPTCHA_OK;
}

static void free_graphs(captcha_network *net)
{
    for (int i = 0; i < MAX_GRAPHS; i++) {
        if (net->graphs[i].graph && net->backend->ops->graph_destroy)
            net->backend->ops->graph_destroy(net->backend, net->graphs[i].graph);
        memset(&net->graphs[i], 0, sizeof net->graphs[i]);
    }
}

static void free_activations(captcha_network *net)
{
    free_graphs(net);
    device_free(net, net->activation_block);
    net->activation_block = NULL;
    net->capacity = 0;
    net->capacity_train = 0;
}

void captcha_network_destroy(captcha_network *net)
{
    if (!net)
        return;
    free_activations(net);
    device_free(net, net->parameters);
    device_free(net, net->running_stats);
    device_free(net, net->gradients);
    device_free(net, net->adam_m);
    device_free(net, net->adam_v);
    device_free(net, net->folded);
    free(net);
}

/* Allocates activations for `batch` images (train: also the buffers backward needs) in one
 * device block, carved by the same walk that sizes it. */
static captcha_status ensure_activations(captcha_network *net, int batch, int train,
                                         captcha_error *err)
{
    if (batch <= net->capacity && (!train || net->capacity_train))
        return CAPTCHA_OK;
    int capacity = batch > net->capacity ? batch : net->capacity;
    train = train || net->capacity_train;
    free_activations(net);

    const int height = net->config.input_height, width = net->config.input_width;
    size_t per_image_max = 0;
    for (int pass = 0; pass < 2; pass++) {
        float *base = net->activation_block;
        size_t used = 0;
#define CARVE(ptr, floats)                                                                         \
    do {                                                                                           \
        size_t n_ = ((size_t)(floats) + 15) & ~(size_t)15; /* 64-byte alignment */               \
        if (pass)                                                                                  \
            (ptr) = base + used;                                                                   \
        used += n_;                                                                                \
    } while (0)
        CARVE(net->input, (size_t)capacity * 3 * height * width);
        CARVE(net->logits, (size_t)capacity * net->classes);
        CARVE(net->targets, (size_t)capacity * net->classes);
        int h = height, w = width;
        for (int i = 0; i < CAPTCHA_NUM_BLOCKS; i++) {
            block_activations *a = &net->act[i];
            h = (h + 2 - 3) / block_stride[i] + 1;
            w = (w + 2 - 3) / block_stride[i] + 1;
            size_t per_image = (size_t)block_out[i] * h * w;
            if (per_image > per_image_max)
                per_image_max = per_image;
            size_t n = per_image * capacity;
            memset(a, 0, sizeof *a);
            CARVE(a->conv1_out, n);
            CARVE(a->skip_out, n);
            CARVE(a->out, n);
            if (train) {
                CARVE(a->relu1_out, n);
                CARVE(a->conv2_out, n);
                for (int k = 0; k < 3; k++) {
                    CARVE(a->saved_mean[k], block_out[i]);
                    CARVE(a->saved_invstd[k], block_out[i]);
                }
            }
        }
        if (train)
            for (int k = 0; k < 4; k++)
                CARVE(net->scratch[k], per_image_max * capacity);
#undef CARVE
        if (!pass) {
            captcha_status s = net->backend->ops->alloc(net->backend, used * sizeof(float),
                                                        &net->activation_block, err);
            if (s != CAPTCHA_OK) {
                net->activation_block = NULL;
                /* s, not the prefix's return: that is CAPTCHA_OK when err is NULL */
                captcha_error_prefix(err, "activations for a batch of %d: ", capacity);
                return s;
            }
        }
    }
    net->capacity = capacity;
    net->capacity_train = train;
    return CAPTCHA_OK;
}

static void set_shapes(captcha_network *net, int batch)
{
    int h = net->config.input_height, w = net->config.input_width;
    for (int i = 0; i < CAPTCHA_NUM_BLOCKS; i++) {
        block_layout *b = &net->blocks[i];
        captcha_conv2d_shape_init(&b->conv1_shape, batch, block_in[i], h, w, block_out[i], 3,
                                  block_stride[i], 1);
        captcha_conv2d_shape_init(&b->skip_shape, batch, block_in[i], h, w, block_out[i], 1,
                                  block_stride[i], 0);
        h = b->conv1_shape.out_height;
        w = b->conv1_shape.out_width;
        captcha_conv2d_shape_init(&b->conv2_shape, batch, block_out[i], h, w, block_out[i], 3, 1,
                                  1);
    }
}

/* ---------- accessors ---------- */

const captcha_config *captcha_network_config(const captcha_network *net)
{
    return &net->config;
}

captcha_backend *captcha_network_backend(const captcha_network *net)
{
    return net->backend;
}

size_t captcha_network_tensor_count(const captcha_network *net)
{
    return net->tensor_count;
}

const captcha_tensor_info *captcha_network_tensor(const captcha_network *net, size_t index)
{
    return index < net->tensor_count ? &net->tensors[index] : NULL;
}

int captcha_network_find_tensor(const captcha_network *net, const char *name)
{
    if (!net || !name)
        return -1;
    for (size_t i = 0; i < net->tensor_count; i++)
        if (!strcmp(net->tensors[i].name, name))
            return (int)i;
    return -1;
}

size_t captcha_network_parameter_count(const captcha_network *net)
{
    return net->parameter_count;
}

size_t captcha_network_running_stat_count(const captcha_network *net)
{
    return net->running_stat_count;
}

/* The network and host buffer of a copy to or from the host, named as the
 * header names them (host may be NULL only where host_optional). */
static captcha_status check_copy(const char *function, const captcha_network *net,
                                 const void *host, int host_optional, captcha_error *err)
{
    if (!net)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "%s: network is NULL", function);
    if (!host && !host_optional)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "%s: host is NULL (expected a buffer of the tensor's floats)",
                            function);
    return CAPTCHA_OK;
}

static captcha_status check_index(const captcha_network *net, size_t index, captcha_error *err)
{
    if (index >= net->tensor_count)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "tensor index %zu out of range (%zu tensors)", index,
                            net->tensor_count);
    return CAPTCHA_OK;
}

captcha_status captcha_network_read_tensor(captcha_network *net, size_t index, float *host,
                                           captcha_error *err)
{
    TRY(check_copy("captcha_network_read_tensor", net, host, 0, err));
    captcha_status s = check_index(net, index, err);
    if (s != CAPTCHA_OK)
        return s;
    return net->backend->ops->download(net->backend, host, tensor_pointer(net, (int)index),
                                       net->tensors[index].count * sizeof(float), err);
}

captcha_status captcha_network_write_tensor(captcha_network *net, size_t index, const float *host,
                                            captcha_error *err)
{
    TRY(check_copy("captcha_network_write_tensor", net, host, 0, err));
    captcha_status s = check_index(net, index, err);
    if (s != CAPTCHA_OK)
        return s;
    invalidate(net);
    return net->backend->ops->upload(net->backend, tensor_pointer(net, (int)index), host,
                                     net->tensors[index].count * sizeof(float), err);
}

captcha_status captcha_network_read_gradient(captcha_network *net, size_t index, float *host,
                                             captcha_error *err)
{
    TRY(check_copy("captcha_network_read_gradient", net, host, 0, err));
    captcha_status s = check_index(net, index, err);
    if (s != CAPTCHA_OK)
        return s;
    if (net->tensors[index].kind != CAPTCHA_TENSOR_PARAMETER)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "tensor %s is a running statistic and has no gradient",
                            net->tensors[index].name);
    return net->backend->ops->download(net->backend, host, gradient_pointer(net, (int)index),
                                       net->tensors[index].count * sizeof(float), err);
}

static float *buffer_pointer(captcha_network *net, captcha_buffer_id id, size_t *count)
{
    *count = id == CAPTCHA_BUFFER_RUNNING_STATS ? net->running_stat_count : net->parameter_count;
    switch (id) {
    case CAPTCHA_BUFFER_PARAMETERS: return net->parameters;
    case CAPTCHA_BUFFER_RUNNING_STATS: return net->running_stats;
    case CAPTCHA_BUFFER_GRADIENTS: return net->gradients;
    case CAPTCHA_BUFFER_ADAM_M: return net->adam_m;
    case CAPTCHA_BUFFER_ADAM_V: return net->adam_v;
    }
    return NULL;
}

captcha_status captcha_network_read_buffer(captcha_network *net, captcha_buffer_id id,
                                           float *host, captcha_error *err)
{
    TRY(check_copy("captcha_network_read_buffer", net, host, 0, err));
    size_t count;
    float *p = buffer_pointer(net, id, &count);
    if (!p)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "unknown buffer id %d", (int)id);
    return net->backend->ops->download(net->backend, host, p, count * sizeof(float), err);
}

/* host NULL writes zeros. */
captcha_status captcha_network_write_buffer(captcha_network *net, captcha_buffer_id id,
                                            const float *host, captcha_error *err)
{
    TRY(check_copy("captcha_network_write_buffer", net, host, 1, err));
    size_t count;
    float *p = buffer_pointer(net, id, &count);
    if (!p)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "unknown buffer id %d", (int)id);
    float *zeros = NULL;
    if (!host) {
        zeros = calloc(count ? count : 1, sizeof(float));
        if (!zeros)
            return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "cannot allocate %zu floats",
                                count);
        host = zeros;
    }
    if (id == CAPTCHA_BUFFER_PARAMETERS || id == CAPTCHA_BUFFER_RUNNING_STATS)
        invalidate(net);
    captcha_status s = net->backend->ops->upload(net->backend, p, host, count * sizeof(float), err);
    free(zeros);
    return s;
}

int64_t captcha_network_batches_tracked(const captcha_network *net)
{
    return net->batches_tracked;
}

void captcha_network_set_batches_tracked(captcha_network *net, int64_t value)
{
    net->batches_tracked = value;
}

int64_t captcha_network_adam_step_count(const captcha_network *net)
{
    return net->adam_steps;
}

void captcha_network_set_adam_step_count(captcha_network *net, int64_t value)
{
    net->adam_steps = value;
}

captcha_adam_config captcha_adam_default(void)
{
    captcha_adam_config c = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f};
    return c;
}

/* ---------- batch-norm folding (inference) ---------- */

/* Folds batch norm bn into conv weight [out, in*k*k] (host arrays):
 * w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps). */
static void fold_one(const float *host_params, const float *host_stats, captcha_network *net,
                     int conv, batchnorm_tensors bn, float *folded_weight, float *folded_bias)
{
    const captcha_tensor_info *w = &net->tensors[conv];
    int out = (int)w->shape[0];
    size_t per_out = w->count / (size_t)out;
    const float *weight = host_params + w->offset;
    const float *gamma = host_params + net->tensors[bn.gamma].offset;
    const float *beta = host_params + net->tensors[bn.beta].offset;
    const float *mean = host_stats + net->tensors[bn.running_mean].offset;
    const float *var = host_stats + net->tensors[bn.running_var].offset;
    for (int o = 0; o < out; o++) {
        double scale = (double)gamma[o] / sqrt((double)var[o] + CAPTCHA_BATCHNORM_EPS);
        for (size_t k = 0; k < per_out; k++)
            folded_weight[(size_t)o * per_out + k] = (float)(weight[(size_t)o * per_out + k] * scale);
        folded_bias[o] = (float)(beta[o] - mean[o] * scale);
    }
}

static captcha_status fold_batchnorm(captcha_network *net, captcha_error *err)
{
    if (net->folded_valid)
        return CAPTCHA_OK;
    float *params = malloc(net->parameter_count * sizeof(float));
    float *stats = malloc(net->running_stat_count * sizeof(float));
    float *folded = malloc(net->folded_count * sizeof(float));
    captcha_status s = CAPTCHA_OK;
    if (!params || !stats || !folded)
        s = captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "cannot allocate the folded weights");
    if (!s)
        s = captcha_network_read_buffer(net, CAPTCHA_BUFFER_PARAMETERS, params, err);
    if (!s)
        s = captcha_network_read_buffer(net, CAPTCHA_BUFFER_RUNNING_STATS, stats, err);
    if (!s) {
        for (int i = 0; i < CAPTCHA_NUM_BLOCKS; i++) {
            block_layout *b = &net->blocks[i];
            fold_one(params, stats, net, b->conv1, b->bn1, folded + b->folded_conv1,
                     folded + b->folded_bias1);
            fold_one(params, stats, net, b->conv2, b->bn2, folded + b->folded_conv2,
                     folded + b->folded_bias2);
            fold_one(params, stats, net, b->skip_conv, b->skip_bn, folded + b->folded_skip,
                     folded + b->folded_skip_bias);
        }
        if (net->backend->ops->invalidate_cache)
            net->backend->ops->invalidate_cache(net->backend);
        s = net->backend->ops->upload(net->backend, net->folded, folded,
                                      net->folded_count * sizeof(float), err);
    }
    free(params);
    free(stats);
    free(folded);
    if (!s)
        net->folded_valid = 1;
    return s;
}

/* ---------- forward ---------- */

/* Inference: three fused calls per block on the folded weights.
 * input [N, 3, H, W] -> logits [N, classes], both device memory. */
static captcha_status forward_eval_ops(captcha_network *net, const float *input, int batch,
                                       float *logits, captcha_error *err)
{
    const captcha_backend_ops *ops = net->backend->ops;
    captcha_backend *be = net->backend;
    const float *x = input;
    /* native path: the memory of the previous block's conv1 output, dead once its conv2
     * has read it (floats) */
    float *recycled = NULL;
    size_t recycled_floats = 0;
    for (int i = 0; i < CAPTCHA_NUM_BLOCKS; i++) {
        block_layout *b = &net->blocks[i];
        block_activations *a = &net->act[i];
        const float *f = net->folded;
        if (ops->conv2d_forward_native) {
            /* activations between convolutions stay in the backend's native
             * layout: NCHW only at the input (and at the last block's output when
             * the backend has no native linear layer) */
            int in_native = i > 0,
                out_native = i < CAPTCHA_NUM_BLOCKS - 1 || ops->linear_forward_native;
            /* A block's two outputs go into the memory its predecessor's conv1 output
             * has just been read from, when they fit (with the channels at most doubling
             * at each stride-2 block they take half of it, or less): the writes then land
             * in cache lines that are still cached instead of pulling cold ones in, and
             * the forward pass touches 1 MB of activations at a 32x128 input, not 2 MB
             * (batch 1 on the CPU: 0.979-0.988 of the time, paired bursts; batch 64 even).
             * Inference only: training keeps every block's activations for backward. */
            const captcha_conv2d_shape *o = &b->conv2_shape;
            size_t n = ((size_t)o->batch * o->out_channels * o->out_height * o->out_width + 15) &
                       ~(size_t)15; /* 64-byte aligned, as ensure_activations carves */
            float *conv1_out = a->conv1_out, *out = a->out;
            if (i > 0 && 2 * n <= recycled_floats) {
                conv1_out = recycled;
                out = recycled + n;
            }
            TRY(ops->conv2d_forward_native(be, &b->conv1_shape, x, in_native, f + b->folded_conv1,
                                           f + b->folded_bias1, NULL, 1, conv1_out, 1, err));
            /* the shortcut is written straight into the block's output, which
             * conv2 then accumulates into in place (no copy of the residual) */
            TRY(ops->conv2d_forward_native(be, &b->skip_shape, x, in_native, f + b->folded_skip,
                                           f + b->folded_skip_bias, NULL, 0, out, out_native,
                                           err));
            TRY(ops->conv2d_forward_native(be, &b->conv2_shape, conv1_out, 1,
                                           f + b->folded_conv2, f + b->folded_bias2, out, 1,
                                           out, out_native, err));
            x = out;
            recycled = conv1_out;
            recycled_floats = n;
            continue;
        }
        /* skip_out [N, out, Ho, Wo] = skip'(x) + bs', on the backend's second queue when it
         * has one (beside conv1: at small batches neither fills a GPU) */
        int side = ops->side_stream && ops->side_join;
        if (side)
            TRY(ops->side_stream(be, 1, err));
        captcha_status skip = ops->conv2d_forward(be, &b->skip_shape, x, f + b->folded_skip,
                                                  f + b->folded_skip_bias, NULL, 0, a->skip_out,
                                                  err);
        if (side) {
            captcha_status back = ops->side_stream(be, 0, skip == CAPTCHA_OK ? err : NULL);
            if (skip == CAPTCHA_OK)
                skip = back;
        }
        /* conv1_out [N, out, Ho, Wo] = relu(conv1'(x) + b1') */
        captcha_status conv1 =
            skip != CAPTCHA_OK ? skip
                               : ops->conv2d_forward(be, &b->conv1_shape, x, f + b->folded_conv1,
                                                     f + b->folded_bias1, NULL, 1, a->conv1_out,
                                                     err);
        if (side) { /* joined on failure too: a capture must not end with the queue apart */
            captcha_status join = ops->side_join(be, conv1 == CAPTCHA_OK ? err : NULL);
            if (conv1 == CAPTCHA_OK)
                conv1 = join;
        }
        TRY(conv1);
        /* out = relu(conv2'(conv1_out) + b2' + skip_out) */
        TRY(ops->conv2d_forward(be, &b->conv2_shape, a->conv1_out, f + b->folded_conv2,
                                f + b->folded_bias2, a->skip_out, 1, a->out, err));
        x = a->out;
    }
    /* x: [N, 256, H/32, W/32] = [N, flatten] */
    if (ops->conv2d_forward_native && ops->linear_forward_native) {
        const captcha_conv2d_shape *last = &net->blocks[CAPTCHA_NUM_BLOCKS - 1].conv2_shape;
        return ops->linear_forward_native(be, batch, last->out_channels, last->out_height,
                                          last->out_width, net->classes, x,
                                          tensor_pointer(net, net->fc_weight),
                                          tensor_pointer(net, net->fc_bias), logits, err);
    }
    return ops->linear_forward(be, batch, net->flatten, net->classes, x,
                               tensor_pointer(net, net->fc_weight),
                               tensor_pointer(net, net->fc_bias), logits, err);
}

static captcha_status batchnorm_train(captcha_network *net, int batch, int channels, int spatial,
                                      const float *x, batchnorm_tensors bn, float *saved_mean,
                                      float *saved_invstd, float *y, captcha_error *err)
{
    return net->backend->ops->batchnorm_forward_training(
        net->backend, batch, channels, spatial, x, tensor_pointer(net, bn.gamma),
        tensor_pointer(net, bn.beta), CAPTCHA_BATCHNORM_MOMENTUM, CAPTCHA_BATCHNORM_EPS,
        tensor_pointer(net, bn.running_mean), tensor_pointer(net, bn.running_var), saved_mean,
        saved_invstd, y, err);
}

/* Training-mode forward: batch statistics; keeps what backward needs.
 * input [N, 3, H, W] (net->input) -> net->logits [N, classes]. */
static captcha_status forward_train_ops(captcha_network *net, int batch, captcha_error *err)
{
    const captcha_backend_ops *ops = net->backend->ops;
    captcha_backend *be = net->backend;
    const float *x = net->input;
    float *bn_tmp = net->scratch[0];
    for (int i = 0; i < CAPTCHA_NUM_BLOCKS; i++) {
        block_layout *b = &net->blocks[i];
        block_activations *a = &net->act[i];
        int c = block_out[i];
        int spatial = b->conv1_shape.out_height * b->conv1_shape.out_width;
        size_t n = captcha_conv2d_output_count(&b->conv1_shape);
        TRY(ops->conv2d_forward(be, &b->conv1_shape, x, tensor_pointer(net, b->conv1), NULL, NULL,
                                0, a->conv1_out, err));
        TRY(batchnorm_train(net, batch, c, spatial, a->conv1_out, b->bn1, a->saved_mean[0],
                            a->saved_invstd[0], a->relu1_out, err));
        TRY(ops->relu_forward(be, n, a->relu1_out, a->relu1_out, err));
        TRY(ops->conv2d_forward(be, &b->conv2_shape, a->relu1_out, tensor_pointer(net, b->conv2),
                                NULL, NULL, 0, a->conv2_out, err));
        TRY(batchnorm_train(net, batch, c, spatial, a->conv2_out, b->bn2, a->saved_mean[1],
                            a->saved_invstd[1], a->out, err));
        TRY(ops->conv2d_forward(be, &b->skip_shape, x, tensor_pointer(net, b->skip_conv), NULL,
                                NULL, 0, a->skip_out, err));
        TRY(batchnorm_train(net, batch, c, spatial, a->skip_out, b->skip_bn, a->saved_mean[2],
                            a->saved_invstd[2], bn_tmp, err));
        TRY(ops->add(be, n, a->out, bn_tmp, a->out, err));
        TRY(ops->relu_forward(be, n, a->out, a->out, err));
        x = a->out;
    }
    net->batches_tracked++;
    invalidate(net); /* running statistics changed */
    return ops->linear_forward(be, batch, net->flatten, net->classes, x,
                               tensor_pointer(net, net->fc_weight),
                               tensor_pointer(net, net->fc_bias), net->logits, err);
}

static captcha_status check_batch(const captcha_network *net, int batch, int minimum,
                                  captcha_error *err)
{
    (void)net;
    if (batch < minimum || batch > CAPTCHA_MAX_BATCH)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "batch size %d out of range (%d..%d)", batch, minimum,
                            CAPTCHA_MAX_BATCH);
    return CAPTCHA_OK;
}

/* The network and the caller's buffers of a forward pass, named as the header
 * names them. */
static captcha_status check_buffers(const char *function, const captcha_network *net,
                                    const void *input, const void *logits, int logits_optional,
                                    captcha_error *err)
{
    if (!net)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "%s: network is NULL", function);
    if (!input)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "%s: input is NULL (expected [batch, 3, H, W] floats)", function);
    if (!logits && !logits_optional)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "%s: logits is NULL (expected [batch, length * charset_size] floats)",
                            function);
    return CAPTCHA_OK;
}

captcha_status captcha_network_forward(captcha_network *net, const float *input, int batch,
                                       captcha_mode mode, float *logits, captcha_error *err)
{
    const int train = mode == CAPTCHA_MODE_TRAIN;
    TRY(check_buffers("captcha_network_forward", net, input, logits, 0, err));
    if (mode != CAPTCHA_MODE_EVAL && mode != CAPTCHA_MODE_TRAIN)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_network_forward: mode is %d, not a captcha_mode (%d eval, "
                            "%d train)",
                            (int)mode, CAPTCHA_MODE_EVAL, CAPTCHA_MODE_TRAIN);
    TRY(check_batch(net, batch, train ? 2 : 1, err));
    TRY(ensure_activations(net, batch, train, err));
    set_shapes(net, batch);
    const captcha_backend_ops *ops = net->backend->ops;
    size_t input_bytes =
        (size_t)batch * 3 * net->config.input_height * net->config.input_width * sizeof(float);
    TRY(ops->upload(net->backend, net->input, input, input_bytes, err));
    if (train) {
        TRY(forward_train_ops(net, batch, err));
    } else {
        TRY(fold_batchnorm(net, err));
        TRY(forward_eval_ops(net, net->input, batch, net->logits, err));
    }
    return ops->download(net->backend, logits, net->logits,
                         (size_t)batch * net->classes * sizeof(float), err);
}

captcha_status captcha_network_forward_device(captcha_network *net, const float *input, int batch,
                                              float *logits, captcha_error *err)
{
    TRY(check_buffers("captcha_network_forward_device", net, input, logits, 0, err));
    TRY(check_batch(net, batch, 1, err));
    TRY(ensure_activations(net, batch, 0, err));
    set_shapes(net, batch);
    TRY(fold_batchnorm(net, err));
    const captcha_backend_ops *ops = net->backend->ops;
    if (!ops->capture_begin || !ops->capture_end || !ops->graph_launch)
        return forward_eval_ops(net, input, batch, logits, err);

    /* One captured graph per (batch, input, logits): a frame costs one launch. */
    int free_slot = -1;
    for (int i = 0; i < MAX_GRAPHS; i++) {
        captured_graph *g = &net->graphs[i];
        if (g->graph && g->batch == batch && g->input == input && g->logits == logits)
            return ops->graph_launch(net->backend, g->graph, err);
        if (!g->graph && free_slot < 0)
            free_slot = i;
    }
    if (free_slot < 0) { /* all slots taken: forget the oldest */
        if (ops->graph_destroy)
            ops->graph_destroy(net->backend, net->graphs[0].graph);
        memmove(&net->graphs[0], &net->graphs[1], sizeof net->graphs[0] * (MAX_GRAPHS - 1));
        memset(&net->graphs[MAX_GRAPHS - 1], 0, sizeof net->graphs[0]);
        free_slot = MAX_GRAPHS - 1;
    }
    /* Run once uncaptured so per-shape set-up (algorithm search, workspace growth) happens
     * outside the capture. */
    TRY(forward_eval_ops(net, input, batch, logits, err));
    TRY(ops->capture_begin(net->backend, err));
    captcha_status s = forward_eval_ops(net, input, batch, logits, err);
    void *graph = NULL;
    captcha_error end_err;
    captcha_status end = ops->capture_end(net->backend, &graph, &end_err);
    if (s != CAPTCHA_OK) {
        if (graph && ops->graph_destroy)
            ops->graph_destroy(net->backend, graph);
        return s;
    }
    if (end != CAPTCHA_OK) {
        if (err)
            *err = end_err;
        return end;
    }
    net->graphs[free_slot] = (captured_graph){batch, graph, input, logits};
    return ops->graph_launch(net->backend, graph, err);
}

/* ---------- backward ---------- */

static captcha_status batchnorm_back(captcha_network *net, int batch, int channels, int spatial,
                                     const float *x, const float *dy, batchnorm_tensors bn,
                                     const float *saved_mean, const float *saved_invstd, float *dx,
                                     captcha_error *err)
{
    return net->backend->ops->batchnorm_backward(
        net->backend, batch, channels, spatial, x, dy, tensor_pointer(net, bn.gamma), saved_mean,
        saved_invstd, dx, gradient_pointer(net, bn.gamma), gradient_pointer(net, bn.beta), err);
}

/* Gradients of every parameter from dlogits [N, classes] (in net->logits' place: the
 * loss wrote them to scratch). */
static captcha_status backward_ops(captcha_network *net, int batch, const float *dlogits,
                                   captcha_error *err)
{
    const captcha_backend_ops *ops = net->backend->ops;
    captcha_backend *be = net->backend;
    /* scratch: [0] gradient of the current block's output, [1] gradient for the block below,
     * [2], [3] temporaries */
    float *grad_out = net->scratch[0], *grad_below = net->scratch[1];
    float *tmp_a = net->scratch[2], *tmp_b = net->scratch[3];

    /* linear: x = last block's output [N, flatten] */
    TRY(ops->linear_backward(be, batch, net->flatten, net->classes,
                             net->act[CAPTCHA_NUM_BLOCKS - 1].out,
                             tensor_pointer(net, net->fc_weight), dlogits, grad_out,
                             gradient_pointer(net, net->fc_weight),
                             gradient_pointer(net, net->fc_bias), err));
    for (int i = CAPTCHA_NUM_BLOCKS - 1; i >= 0; i--) {
        block_layout *b = &net->blocks[i];
        block_activations *a = &net->act[i];
        const float *x = i ? net->act[i - 1].out : net->input;
        int c = block_out[i];
        int spatial = b->conv1_shape.out_height * b->conv1_shape.out_width;
        size_t n = captcha_conv2d_output_count(&b->conv1_shape);
        /* d(sum) = d(out) * (out > 0), in place [N, c, Ho, Wo] */
        TRY(ops->relu_backward(be, n, a->out, grad_out, grad_out, err));
        /* main path: bn2 -> conv2 -> relu -> bn1 -> conv1 */
        TRY(batchnorm_back(net, batch, c, spatial, a->conv2_out, grad_out, b->bn2,
                           a->saved_mean[1], a->saved_invstd[1], tmp_a, err));
        TRY(ops->conv2d_backward_weight(be, &b->conv2_shape, a->relu1_out, tmp_a,
                                        gradient_pointer(net, b->conv2), err));
        TRY(ops->conv2d_backward_data(be, &b->conv2_shape, tmp_a, tensor_pointer(net, b->conv2),
                                      tmp_b, err));
        TRY(ops->relu_backward(be, n, a->relu1_out, tmp_b, tmp_b, err));
        TRY(batchnorm_back(net, batch, c, spatial, a->conv1_out, tmp_b, b->bn1, a->saved_mean[0],
                           a->saved_invstd[0], tmp_a, err));
        TRY(ops->conv2d_backward_weight(be, &b->conv1_shape, x, tmp_a,
                                        gradient_pointer(net, b->conv1), err));
        if (i > 0)
            TRY(ops->conv2d_backward_data(be, &b->conv1_shape, tmp_a,
                                          tensor_pointer(net, b->conv1), grad_below, err));
        /* shortcut: skip_bn -> skip_conv (grad_out is still d(sum)) */
        TRY(batchnorm_back(net, batch, c, spatial, a->skip_out, grad_out, b->skip_bn,
                           a->saved_mean[2], a->saved_invstd[2], tmp_a, err));
        TRY(ops->conv2d_backward_weight(be, &b->skip_shape, x, tmp_a,
                                        gradient_pointer(net, b->skip_conv), err));
        if (i > 0) {
            size_t n_in = captcha_conv2d_input_count(&b->skip_shape);
            TRY(ops->conv2d_backward_data(be, &b->skip_shape, tmp_a,
                                          tensor_pointer(net, b->skip_conv), tmp_b, err));
            TRY(ops->add(be, n_in, grad_below, tmp_b, grad_below, err));
        }
        float *swap = grad_out;
        grad_out = grad_below;
        grad_below = swap;
    }
    return CAPTCHA_OK;
}

captcha_status captcha_network_forward_backward(captcha_network *net, const float *input,
                                                const float *targets, int batch, float *loss,
                                                float *logits, captcha_error *err)
{
    TRY(check_buffers("captcha_network_forward_backward", net, input, logits, 1, err));
    if (!targets || !loss)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_network_forward_backward: %s is NULL", !targets ? "targets"
                                                                                     : "loss");
    TRY(check_batch(net, batch, 2, err));
    TRY(ensure_activations(net, batch, 1, err));
    set_shapes(net, batch);
    const captcha_backend_ops *ops = net->backend->ops;
    captcha_backend *be = net->backend;
    size_t input_bytes =
        (size_t)batch * 3 * net->config.input_height * net->config.input_width * sizeof(float);
    size_t logit_bytes = (size_t)batch * net->classes * sizeof(float);
    TRY(ops->upload(be, net->input, input, input_bytes, err));
    TRY(ops->upload(be, net->targets, targets, logit_bytes, err));
    TRY(forward_train_ops(net, batch, err));
    if (logits)
        TRY(ops->download(be, logits, net->logits, logit_bytes, err));
    /* dlogits go to the targets' buffer's neighbour: reuse scratch[3] (free until backward
     * starts using it, and backward reads dlogits only in its first call) */
    float *dlogits = net->scratch[3];
    float loss_value = 0;
    TRY(ops->multilabel_soft_margin_loss(be, batch, net->classes, net->logits, net->targets,
                                         &loss_value, dlogits, err));
    if (loss)
        *loss = loss_value;
    return backward_ops(net, batch, dlogits, err);
}

captcha_status captcha_network_adam_step(captcha_network *net, const captcha_adam_config *config,
                                         captcha_error *err)
{
    if (!net || !config)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_network_adam_step: %s is NULL", net ? "config" : "network");
    /* isfinite: an infinite rate or decay turns every parameter into NaN */
    if (!(config->learning_rate >= 0 && isfinite(config->learning_rate)) ||
        !(config->beta1 >= 0 && config->beta1 < 1) ||
        !(config->beta2 >= 0 && config->beta2 < 1) ||
        !(config->eps >= 0 && isfinite(config->eps)) ||
        !(config->weight_decay >= 0 && isfinite(config->weight_decay)))
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "Adam settings out of range (lr %g, betas %g/%g, eps %g, decay %g)",
                            config->learning_rate, config->beta1, config->beta2, config->eps,
                            config->weight_decay);
    invalidate(net);
    captcha_status s =
        net->backend->ops->adam_update(net->backend, net->parameter_count, net->parameters,
                                       net->gradients, net->adam_m, net->adam_v, config,
                                       net->adam_steps + 1, err);
    if (s == CAPTCHA_OK)
        net->adam_steps++;
    return s;
}
