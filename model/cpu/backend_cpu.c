/* The CPU backend: oneDNN 2.6 (C API) for convolution, batch normalization and
 * inner product; OpenMP loops for the element-wise ops, the loss and Adam.
 *
 * Every oneDNN primitive (with its primitive descriptor and memory objects) is
 * created once per op kind + shape + flags and kept in a small cache
 * (op_entry list); a call only binds the caller's pointers to the cached
 * memory objects (dnnl_memory_set_data_handle) and executes on the one stream.
 *
 * Convolutions let oneDNN pick its preferred (blocked) layouts
 * (dnnl_format_tag_any); activations stay plain NCHW at the op boundary and are
 * reordered into/out of temporary buffers around the primitive, except through
 * conv2d_forward_native (the inference path), whose activations stay in
 * oneDNN's blocked nChw16c/nChw8c from one convolution to the next. The blocked
 * copy of the weights of the fused inference convolution (bias given) is kept,
 * keyed by the weight pointer, until invalidate_cache(). Setting the
 * environment variable CAPTCHA_CPU_CONV_LAYOUT=plain keeps every convolution in
 * plain NCHW/OIHW (oneDNN then runs its slower im2col+GEMM kernels); it exists
 * to measure the difference.
 *
 * Host memory only; ops run synchronously. A backend instance is not
 * thread-safe: use one per thread. */
#include "../backend.h"
#include "../op_check.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdint.h>
#include <sys/mman.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

/* ---- error checking ---- */

static captcha_status dnnl_failure(captcha_error *err, dnnl_status_t s, const char *call,
                                   const char *file, int line)
{
    return captcha_fail(err, CAPTCHA_ERROR_BACKEND, "oneDNN call %s failed: %s (%s:%d)", call,
                        dnnl_status2str(s), file, line);
}

/* Checks one oneDNN call; on failure records it in err, sets `status` and jumps
 * to the function's `fail` label (every user declares both). */
#define DNNL_CHECK(call)                                                                           \
    do {                                                                                           \
        dnnl_status_t dnnl_status_ = (call);                                                       \
        if (dnnl_status_ != dnnl_success) {                                                        \
            status = dnnl_failure(err, dnnl_status_, #call, __FILE__, __LINE__);                   \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* ---- primitive cache ---- */

enum op_kind {
    OP_CONV_FORWARD = 1,
    OP_CONV_BACKWARD_DATA,
    OP_CONV_BACKWARD_WEIGHT,
    OP_BN_FORWARD_TRAINING,
    OP_BN_FORWARD_INFERENCE,
    OP_BN_BACKWARD,
    OP_LINEAR_FORWARD,
    OP_LINEAR_BACKWARD_DATA,
    OP_LINEAR_BACKWARD_WEIGHT,
    OP_LINEAR_FORWARD_NATIVE,
};

enum {
    CONV_FLAG_BIAS = 1,
    CONV_FLAG_RESIDUAL = 2,
    CONV_FLAG_RELU = 4,
    CONV_FLAG_SRC_NATIVE = 8,  /* x in the native activation layout (native_tag) */
    CONV_FLAG_DST_NATIVE = 16, /* y (and the residual) in the native activation layout */
};

typedef struct {
    int kind;
    int dims[10];
    int flags;
    float eps;
} op_key;

enum arg_direction { ARG_IN = 1, ARG_OUT = 2, ARG_INOUT = 3 };

#define MAX_OP_ARGS 10

typedef struct {
    int arg;                   /* DNNL_ARG_* */
    int direction;             /* enum arg_direction */
    int cache_by_pointer;      /* weights of the inference conv: keep the reordered copy */
    dnnl_memory_t user;        /* the caller's plain layout, handle bound per call */
    dnnl_memory_t inner;       /* the primitive's layout; NULL when equal to user's */
    dnnl_primitive_t to_inner; /* reorder user -> inner (inputs) */
    dnnl_primitive_t to_user;  /* reorder inner -> user (outputs) */
    size_t inner_bytes;
} op_arg;

typedef struct op_entry {
    op_key key;
    dnnl_primitive_t primitive;
    int arg_count;
    op_arg args[MAX_OP_ARGS];
    struct op_entry *next;
} op_entry;

/* Cached primitives kept at most (least recently used evicted): the reference
 * network's inference takes 20 per batch size, a training step about 60; 1024
 * is also oneDNN's own primitive cache capacity. CAPTCHA_CPU_MAX_PRIMITIVES
 * overrides it (tests). */
#define CPU_MAX_ENTRIES 1024
/* native_tag: NHWC for images of at most this many pixels: on a 32x128 input, the
 * outputs of the last two blocks (2x8 and 1x4), whose convolutions stream 6 MB of
 * weights per image and little else. At batch 1 (2 threads, weights cold as they are
 * inside the network) oneDNN's brgemm kernels (NHWC only) run those layers faster
 * than its blocked direct ones, e.g. 256->256 at 2x8: 159 against 213 us, 1x4: 39
 * against 66 us. Whole forward, paired bursts in one process against NHWC off: 16
 * pixels 0.946-0.958, 64 (block 4 too: no Winograd there) 0.944-0.956, 256 0.946-0.948,
 * 1024 1.008. CAPTCHA_CPU_NHWC_PIXELS=N overrides (0: never NHWC). */
#define CPU_NHWC_MAX_PIXELS 16

/* A reordered (blocked) copy of a weight tensor, valid until invalidate_cache. It
 * is shared by every entry that reads the same pointer in the same plain layout
 * into the same blocked layout (e.g. one convolution at several batch sizes):
 * one copy per entry grew the backend by ~13 MB for each batch size met. */
/* A block of memory the reordered weight copies are carved from, so that the
 * ~10 MB of them a forward pass streams share a few huge pages (see
 * aligned_buffer) instead of one 4 KiB-paged allocation per layer. Freed when
 * its last copy is. */
typedef struct weight_slab {
    char *base;
    size_t size, used;
    int live; /* copies carved from it and not yet freed */
    struct weight_slab *next;
} weight_slab;

typedef struct weight_copy {
    const float *weight;
    dnnl_memory_desc_t user_md, inner_md;
    void *buffer;
    weight_slab *slab; /* buffer lies in it */
    struct weight_copy *next;
} weight_copy;

typedef struct {
    captcha_backend base;
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    op_entry *entries; /* most recently used first */
    int entry_count;
    int max_entries; /* CPU_MAX_ENTRIES unless CAPTCHA_CPU_MAX_PRIMITIVES says (>= 1) */
    weight_copy *weight_copies;
    weight_slab *weight_slabs; /* newest (the one carved from) first */
    int huge_pages; /* large buffers on transparent huge pages (aligned_buffer; default 1) */
    int prefer_blocked; /* convolutions: let oneDNN choose layouts (default 1) */
    int native_block;   /* channel block of the native activation layout: 16 (AVX-512), 8 */
    int nhwc_max_pixels; /* native layout NHWC at most this many pixels per image (native_tag) */
    int winograd;       /* inference convolutions may use Winograd (use_winograd) */
    /* temporary buffers, one per argument slot, shared by all ops (they run
     * one after the other) */
    void *temp[MAX_OP_ARGS];
    size_t temp_bytes[MAX_OP_ARGS];
    float *stat_buffer; /* [2 * channels] batch-norm variance and zero shift */
    size_t stat_count;
    /* Every primitive is made with a user-managed scratchpad (attr below) and gets this
     * one buffer, sized to the largest need. oneDNN's own (library-mode) scratchpad is
     * per thread: a primitive made in one thread and run in another (the element makes
     * its network in one streaming thread, the primitive cache shares primitives between
     * backends) would run on the other thread's buffer, possibly too small. */
    dnnl_primitive_attr_t attr; /* scratchpad mode user, nothing else */
    void *scratch;
    size_t scratch_bytes;
    dnnl_memory_t scratch_memory; /* wraps scratch */
} cpu_backend;

#define HUGE_PAGE_BYTES ((size_t)2 << 20)

/* A 64-byte-aligned buffer of at least `bytes`; freed with free(). With `huge`,
 * one of at least HUGE_PAGE_BYTES / 2 is 2 MiB-aligned, rounded up to whole 2 MiB
 * pages and advised as transparent huge pages (madvise MADV_HUGEPAGE; Debian's
 * default THP mode is "madvise", and the advice is a no-op where THP is off).
 * At batch 1 the forward pass is bound by streaming its weights and activations
 * from memory, and with 4 KiB pages every 4 KiB costs a TLB miss and restarts
 * the hardware prefetcher: on the 2-core test machine huge pages took about 3%
 * off a batch-1 forward (paired bursts in one process, two runs in either order:
 * 0.968 and 0.971). The rounding costs at most 1 MiB per large buffer.
 * CAPTCHA_CPU_HUGE_PAGES=0 turns them off. */
static void *aligned_buffer_pages(size_t bytes, int huge)
{
    if (huge && bytes >= HUGE_PAGE_BYTES / 2 && bytes <= SIZE_MAX - HUGE_PAGE_BYTES) {
        size_t rounded = (bytes + HUGE_PAGE_BYTES - 1) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
        void *p = aligned_alloc(HUGE_PAGE_BYTES, rounded);
        if (p)
            (void)madvise(p, rounded, MADV_HUGEPAGE); /* advice only: failure is harmless */
        return p;
    }
    if (bytes > SIZE_MAX - 63)
        return NULL; /* would wrap when rounded up */
    size_t rounded = (bytes + 63) / 64 * 64;
    return aligned_alloc(64, rounded ? rounded : 64);
}

static void *aligned_buffer(const cpu_backend *cpu, size_t bytes)
{
    return aligned_buffer_pages(bytes, cpu->huge_pages);
}

/* Slabs of at least this size hold the weight copies (a larger copy gets its own) */
#define WEIGHT_SLAB_BYTES ((size_t)4 << 20)

/* Carves `bytes` (64-byte aligned) for a weight copy from the newest slab, or from
 * a new one when it has no room. Returns NULL when memory is short. */
static void *weight_slab_take(cpu_backend *cpu, size_t bytes, weight_slab **from)
{
    if (bytes > SIZE_MAX - 63)
        return NULL;
    bytes = (bytes + 63) / 64 * 64;
    weight_slab *slab = cpu->weight_slabs;
    if (!slab || slab->size - slab->used < bytes) {
        size_t size = bytes > WEIGHT_SLAB_BYTES ? bytes : WEIGHT_SLAB_BYTES;
        slab = calloc(1, sizeof *slab);
        if (!slab || !(slab->base = aligned_buffer(cpu, size))) {
            free(slab);
            return NULL;
        }
        slab->size = size;
        slab->next = cpu->weight_slabs;
        cpu->weight_slabs = slab;
    }
    void *p = slab->base + slab->used;
    slab->used += bytes;
    slab->live++;
    *from = slab;
    return p;
}

/* Frees the weight copy w (its buffer back to its slab, the slab when it was its last). */
static void weight_copy_free(cpu_backend *cpu, weight_copy *w)
{
    weight_slab *slab = w->slab;
    free(w);
    if (--slab->live)
        return;
    for (weight_slab **link = &cpu->weight_slabs; *link; link = &(*link)->next)
        if (*link == slab) {
            *link = slab->next;
            break;
        }
    free(slab->base);
    free(slab);
}

/* Grows the shared scratchpad to hold what pd needs (its dnnl_query_scratchpad_md). */
static captcha_status ensure_scratch(cpu_backend *cpu, const_dnnl_primitive_desc_t pd,
                                     captcha_error *err)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t bytes = md ? dnnl_memory_desc_get_size(md) : 0;
    if (bytes <= cpu->scratch_bytes && cpu->scratch_memory)
        return CAPTCHA_OK;
    if (bytes < cpu->scratch_bytes)
        bytes = cpu->scratch_bytes;
    void *buffer = aligned_buffer(cpu, bytes);
    dnnl_memory_desc_t flat;
    dnnl_dims_t dims = {(dnnl_dim_t)(bytes ? bytes : 1)};
    dnnl_memory_t memory = NULL;
    if (!buffer ||
        dnnl_memory_desc_init_by_tag(&flat, 1, dims, dnnl_u8, dnnl_a) != dnnl_success ||
        dnnl_memory_create(&memory, &flat, cpu->engine, buffer) != dnnl_success) {
        free(buffer);
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "CPU backend: cannot allocate a %zu-byte scratchpad", bytes);
    }
    if (cpu->scratch_memory)
        dnnl_memory_destroy(cpu->scratch_memory);
    free(cpu->scratch);
    cpu->scratch = buffer;
    cpu->scratch_bytes = bytes;
    cpu->scratch_memory = memory;
    return CAPTCHA_OK;
}

static void op_entry_destroy(op_entry *entry)
{
    if (!entry)
        return;
    for (int i = 0; i < entry->arg_count; i++) {
        op_arg *a = &entry->args[i];
        if (a->to_inner)
            dnnl_primitive_destroy(a->to_inner);
        if (a->to_user)
            dnnl_primitive_destroy(a->to_user);
        if (a->inner)
            dnnl_memory_destroy(a->inner);
        if (a->user)
            dnnl_memory_destroy(a->user);
    }
    if (entry->primitive)
        dnnl_primitive_destroy(entry->primitive);
    free(entry);
}

/* Every op looks its primitive up here first, before creating one: oneDNN fixes
 * a primitive's thread count when it is created, from the calling thread's
 * OpenMP setting, so that setting must already be ours (in a thread that never
 * called omp_set_num_threads, e.g. a GStreamer streaming thread, it is one per
 * core: a second thread spun although threads was 1). */
static op_entry *cache_find(cpu_backend *cpu, const op_key *key)
{
    omp_set_num_threads(cpu->base.threads);
    for (op_entry **link = &cpu->entries; *link; link = &(*link)->next) {
        op_entry *e = *link;
        if (!memcmp(&e->key, key, sizeof *key)) {
            /* most recently used first: the list's tail is what entry_finish evicts */
            *link = e->next;
            e->next = cpu->entries;
            cpu->entries = e;
            return e;
        }
    }
    return NULL;
}

static void init_md(dnnl_memory_desc_t *md, int ndims, const dnnl_dims_t dims,
                    dnnl_format_tag_t tag, dnnl_status_t *first_error)
{
    dnnl_status_t s = dnnl_memory_desc_init_by_tag(md, ndims, dims, dnnl_f32, tag);
    if (s != dnnl_success && *first_error == dnnl_success)
        *first_error = s;
}

/* Adds argument `arg` to entry: user_md is the caller's plain layout; the
 * primitive's own layout is queried from pd and a reorder is set up when they
 * differ. */
static captcha_status entry_add_arg(cpu_backend *cpu, op_entry *entry,
                                    const_dnnl_primitive_desc_t pd, int arg, int direction,
                                    const dnnl_memory_desc_t *user_md, captcha_error *err)
{
    captcha_status status = CAPTCHA_OK;
    dnnl_primitive_desc_t reorder_pd = NULL;
    op_arg *a = &entry->args[entry->arg_count++];
    a->arg = arg;
    a->direction = direction;
    DNNL_CHECK(dnnl_memory_create(&a->user, user_md, cpu->engine, DNNL_MEMORY_NONE));
    const dnnl_memory_desc_t *inner_md =
        dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg);
    if (!inner_md || dnnl_memory_desc_equal(inner_md, user_md))
        return CAPTCHA_OK;
    a->inner_bytes = dnnl_memory_desc_get_size(inner_md);
    DNNL_CHECK(dnnl_memory_create(&a->inner, inner_md, cpu->engine, DNNL_MEMORY_NONE));
    if (direction & ARG_IN) {
        DNNL_CHECK(dnnl_reorder_primitive_desc_create(&reorder_pd, user_md, cpu->engine, inner_md,
                                                      cpu->engine, cpu->attr));
        if ((status = ensure_scratch(cpu, reorder_pd, err)))
            goto fail;
        DNNL_CHECK(dnnl_primitive_create(&a->to_inner, reorder_pd));
        DNNL_CHECK(dnnl_primitive_desc_destroy(reorder_pd));
        reorder_pd = NULL;
    }
    if (direction & ARG_OUT) {
        DNNL_CHECK(dnnl_reorder_primitive_desc_create(&reorder_pd, inner_md, cpu->engine, user_md,
                                                      cpu->engine, cpu->attr));
        if ((status = ensure_scratch(cpu, reorder_pd, err)))
            goto fail;
        DNNL_CHECK(dnnl_primitive_create(&a->to_user, reorder_pd));
        DNNL_CHECK(dnnl_primitive_desc_destroy(reorder_pd));
        reorder_pd = NULL;
    }
    return CAPTCHA_OK;
fail:
    if (reorder_pd)
        dnnl_primitive_desc_destroy(reorder_pd);
    return status;
}

static captcha_status run_reorder(cpu_backend *cpu, dnnl_primitive_t reorder, dnnl_memory_t from,
                                  dnnl_memory_t to, captcha_error *err)
{
    captcha_status status = CAPTCHA_OK;
    dnnl_exec_arg_t args[3] = {
        {DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}, {DNNL_ARG_SCRATCHPAD, cpu->scratch_memory}};
    DNNL_CHECK(dnnl_primitive_execute(reorder, cpu->stream, 3, args));
    return CAPTCHA_OK;
fail:
    return status;
}

static captcha_status ensure_temp(cpu_backend *cpu, int slot, size_t bytes, captcha_error *err)
{
    if (cpu->temp_bytes[slot] >= bytes)
        return CAPTCHA_OK;
    free(cpu->temp[slot]);
    cpu->temp[slot] = aligned_buffer(cpu, bytes);
    cpu->temp_bytes[slot] = cpu->temp[slot] ? bytes : 0;
    if (!cpu->temp[slot])
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "CPU backend: cannot allocate a %zu-byte reorder buffer", bytes);
    return CAPTCHA_OK;
}

/* Binds the reordered copy of a cached weight (making it on first use). */
static captcha_status bind_weight_copy(cpu_backend *cpu, op_arg *a, const void *pointer,
                                       captcha_error *err)
{
    captcha_status status = CAPTCHA_OK;
    const dnnl_memory_desc_t *user_md, *inner_md;
    DNNL_CHECK(dnnl_memory_get_memory_desc(a->user, &user_md));
    DNNL_CHECK(dnnl_memory_get_memory_desc(a->inner, &inner_md));
    for (weight_copy *w = cpu->weight_copies; w; w = w->next) {
        if (w->weight == pointer && dnnl_memory_desc_equal(&w->user_md, user_md) &&
            dnnl_memory_desc_equal(&w->inner_md, inner_md)) {
            DNNL_CHECK(dnnl_memory_set_data_handle(a->inner, w->buffer));
            return CAPTCHA_OK;
        }
    }
    weight_copy *w = calloc(1, sizeof *w);
    if (w)
        w->buffer = weight_slab_take(cpu, a->inner_bytes, &w->slab);
    if (!w || !w->buffer) {
        free(w);
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "CPU backend: cannot allocate %zu bytes for reordered weights",
                            a->inner_bytes);
    }
    w->weight = pointer;
    w->user_md = *user_md;
    w->inner_md = *inner_md;
    w->next = cpu->weight_copies;
    cpu->weight_copies = w;
    DNNL_CHECK(dnnl_memory_set_data_handle(a->inner, w->buffer));
    return run_reorder(cpu, a->to_inner, a->user, a->inner, err);
fail:
    return status;
}

/* Executes a cached entry with pointers[i] bound to entry->args[i]. An
 * ARG_INOUT argument whose primitive layout differs from the plain one is read
 * from inout_source (when not NULL) and written to its pointer. */
static captcha_status run_entry_inout(cpu_backend *cpu, op_entry *entry, void *const *pointers,
                                      const void *inout_source, captcha_error *err)
{
    captcha_status status = CAPTCHA_OK;
    dnnl_exec_arg_t exec_args[MAX_OP_ARGS + 1];
    /* oneDNN's OpenMP regions take the calling thread's setting */
    omp_set_num_threads(cpu->base.threads);
    for (int i = 0; i < entry->arg_count; i++) {
        op_arg *a = &entry->args[i];
        DNNL_CHECK(dnnl_memory_set_data_handle(a->user, pointers[i]));
        exec_args[i].arg = a->arg;
        exec_args[i].memory = a->inner ? a->inner : a->user;
        if (!a->inner)
            continue;
        if (a->cache_by_pointer) {
            status = bind_weight_copy(cpu, a, pointers[i], err);
            if (status != CAPTCHA_OK)
                return status;
            continue;
        }
        status = ensure_temp(cpu, i, a->inner_bytes, err);
        if (status != CAPTCHA_OK)
            return status;
        DNNL_CHECK(dnnl_memory_set_data_handle(a->inner, cpu->temp[i]));
        if (a->to_inner) {
            if (a->direction == ARG_INOUT && inout_source)
                DNNL_CHECK(dnnl_memory_set_data_handle(a->user, (void *)inout_source));
            status = run_reorder(cpu, a->to_inner, a->user, a->inner, err);
            if (status != CAPTCHA_OK)
                return status;
            if (a->direction == ARG_INOUT && inout_source)
                DNNL_CHECK(dnnl_memory_set_data_handle(a->user, pointers[i]));
        }
    }
    exec_args[entry->arg_count].arg = DNNL_ARG_SCRATCHPAD;
    exec_args[entry->arg_count].memory = cpu->scratch_memory;
    DNNL_CHECK(
        dnnl_primitive_execute(entry->primitive, cpu->stream, entry->arg_count + 1, exec_args));
    for (int i = 0; i < entry->arg_count; i++) {
        op_arg *a = &entry->args[i];
        if (a->to_user) {
            status = run_reorder(cpu, a->to_user, a->inner, a->user, err);
            if (status != CAPTCHA_OK)
                return status;
        }
    }
    DNNL_CHECK(dnnl_stream_wait(cpu->stream));
    return CAPTCHA_OK;
fail:
    return status;
}

static captcha_status run_entry(cpu_backend *cpu, op_entry *entry, void *const *pointers,
                                captcha_error *err)
{
    return run_entry_inout(cpu, entry, pointers, NULL, err);
}

/* Creates the primitive of a finished pd, stores the entry in the cache and
 * takes ownership of entry. */
static captcha_status entry_finish(cpu_backend *cpu, op_entry *entry, dnnl_primitive_desc_t pd,
                                   op_entry **out, captcha_error *err)
{
    captcha_status status = CAPTCHA_OK;
    if ((status = ensure_scratch(cpu, pd, err)))
        return status;
    DNNL_CHECK(dnnl_primitive_create(&entry->primitive, pd));
    entry->next = cpu->entries;
    cpu->entries = entry;
    *out = entry;
    /* Bounded: a stream whose batch size keeps changing (roi-type with a varying
     * number of regions) would otherwise keep ~20 primitives (~0.9 MB of JIT code
     * and descriptors) for every batch size it ever met. Each op uses one entry at
     * a time, so evicting the least recently used one cannot pull an entry from
     * under a running op. */
    if (++cpu->entry_count > cpu->max_entries) {
        op_entry **link = &cpu->entries;
        while ((*link)->next)
            link = &(*link)->next;
        op_entry_destroy(*link);
        *link = NULL;
        cpu->entry_count--;
    }
    return CAPTCHA_OK;
fail:
    return status;
}

/* ---- convolution ---- */

static void conv_key(op_key *key, int kind, const captcha_conv2d_shape *s, int flags)
{
    memset(key, 0, sizeof *key);
    key->kind = kind;
    key->dims[0] = s->batch;
    key->dims[1] = s->in_channels;
    key->dims[2] = s->in_height;
    key->dims[3] = s->in_width;
    key->dims[4] = s->out_channels;
    key->dims[5] = s->kernel_size;
    key->dims[6] = s->stride;
    key->dims[7] = s->padding;
    key->flags = flags;
}

/* The native activation layout of conv2d_forward_native for a tensor of
 * `channels` channels of height x width: oneDNN's blocked nChw16c (AVX-512) or
 * nChw8c, the layouts its direct and Winograd convolutions compute in, when
 * channels is a multiple of the block (same size as NCHW then); channels-last
 * NHWC instead for small images (height x width <= nhwc_max_pixels), where the
 * weights dominate and oneDNN's brgemm convolution (NHWC only) streams them
 * faster; plain NCHW otherwise and when CAPTCHA_CPU_CONV_LAYOUT=plain. */
static dnnl_format_tag_t native_tag(const cpu_backend *cpu, int channels, int height, int width)
{
    if (!cpu->prefer_blocked || channels % cpu->native_block)
        return dnnl_nchw;
    if ((long long)height * width <= cpu->nhwc_max_pixels)
        return dnnl_nhwc;
    return cpu->native_block == 16 ? dnnl_nChw16c : dnnl_nChw8c;
}

typedef struct {
    dnnl_memory_desc_t src, weights, bias, dst;       /* caller's layouts */
    dnnl_memory_desc_t src_any, weights_any, dst_any; /* what the primitive may choose */
    dnnl_dims_t strides, padding, padding_r;          /* padding: top/left; _r: bottom/right */
} conv_mds;

/* The kernel taps [*first, *first + *count) along one axis that touch the input
 * for at least one output position (input size `in`, output `out`, kernel k,
 * stride, padding pad); *pad_l / *pad_r: the padding that, with only those taps,
 * gives the same output size. A tap that reads padding for every output only
 * ever multiplies zeros: on the last block of a 32-row input (1 or 2 input
 * rows) 1 or 2 of the 3 kernel rows are such, 1/3 or 2/3 of that layer's
 * weights. Returns 0 when every tap is used or when the cropped form would need
 * a negative padding (then the full kernel is used). */
static int conv_crop_axis(int in, int out, int k, int stride, int pad, int *first, int *count,
                          int *pad_l, int *pad_r)
{
    int lo = -1, hi = -1;
    for (int t = 0; t < k; t++)
        for (int o = 0; o < out; o++) {
            int i = o * stride - pad + t;
            if (i >= 0 && i < in) {
                if (lo < 0)
                    lo = t;
                hi = t;
                break;
            }
        }
    if (lo < 0 || (lo == 0 && hi == k - 1))
        return 0;
    int n = hi - lo + 1, left = pad - lo, right = (out - 1) * stride + n - in - left;
    if (left < 0 || right < 0 || (in + left + right - n) / stride + 1 != out)
        return 0;
    *first = lo;
    *count = n;
    *pad_l = left;
    *pad_r = right;
    return 1;
}

/* flags: CONV_FLAG_SRC_NATIVE / CONV_FLAG_DST_NATIVE fix that side to the
 * native layout (the primitive must compute in it: no reorder); otherwise the
 * caller's side is NCHW and the primitive may choose (format any). */
static dnnl_status_t conv_mds_init(const cpu_backend *cpu, const captcha_conv2d_shape *s,
                                   int flags, conv_mds *m)
{
    dnnl_status_t first = dnnl_success;
    dnnl_dims_t src = {s->batch, s->in_channels, s->in_height, s->in_width};
    dnnl_dims_t weights = {s->out_channels, s->in_channels, s->kernel_size, s->kernel_size};
    dnnl_dims_t bias = {s->out_channels};
    dnnl_dims_t dst = {s->batch, s->out_channels, s->out_height, s->out_width};
    dnnl_format_tag_t any = cpu->prefer_blocked ? dnnl_format_tag_any : dnnl_nchw;
    dnnl_format_tag_t src_tag =
        (flags & CONV_FLAG_SRC_NATIVE)
            ? native_tag(cpu, s->in_channels, s->in_height, s->in_width)
            : dnnl_nchw;
    dnnl_format_tag_t dst_tag =
        (flags & CONV_FLAG_DST_NATIVE)
            ? native_tag(cpu, s->out_channels, s->out_height, s->out_width)
            : dnnl_nchw;
    /* the layout the primitive computes in: a native source is taken as it is,
     * except a blocked one feeding an NHWC output, which is reordered to NHWC
     * (the one switch of layout, on a small tensor) */
    dnnl_format_tag_t compute_src_tag =
        (flags & CONV_FLAG_DST_NATIVE) && dst_tag == dnnl_nhwc ? dnnl_nhwc : src_tag;
    init_md(&m->src, 4, src, src_tag, &first);
    init_md(&m->weights, 4, weights, dnnl_oihw, &first);
    m->strides[0] = m->strides[1] = s->stride;
    m->padding[0] = m->padding[1] = m->padding_r[0] = m->padding_r[1] = s->padding;
    /* fused inference form: drop the kernel rows/columns that only ever read
     * padding (same result: they multiply zeros), so their weights are neither
     * streamed nor multiplied; the primitive's weights are then a window of
     * the caller's OIHW tensor (a strided sub-memory reordered once, cached) */
    if (flags & CONV_FLAG_BIAS) {
        int in[2] = {s->in_height, s->in_width}, out[2] = {s->out_height, s->out_width};
        dnnl_dims_t offsets = {0, 0, 0, 0}, window = {s->out_channels, s->in_channels,
                                                     s->kernel_size, s->kernel_size};
        int cropped = 0;
        for (int axis = 0; axis < 2; axis++) {
            int tap0, taps, pad_l, pad_r;
            if (conv_crop_axis(in[axis], out[axis], s->kernel_size, s->stride, s->padding, &tap0,
                               &taps, &pad_l, &pad_r)) {
                offsets[2 + axis] = tap0;
                window[2 + axis] = taps;
                m->padding[axis] = pad_l;
                m->padding_r[axis] = pad_r;
                cropped = 1;
            }
        }
        if (cropped) {
            dnnl_memory_desc_t full = m->weights;
            if (first == dnnl_success)
                first = dnnl_memory_desc_init_submemory(&m->weights, &full, window, offsets);
            memcpy(weights, window, sizeof window);
        }
    }
    init_md(&m->bias, 1, bias, dnnl_a, &first);
    init_md(&m->dst, 4, dst, dst_tag, &first);
    /* an NCHW input with fewer channels than the layout block (the network's 3-channel
     * image) stays NCHW: oneDNN's direct kernels read it as it is, where a blocked
     * copy would be padded to 16 channels and reordered on every call */
    init_md(&m->src_any, 4, src,
            (flags & CONV_FLAG_SRC_NATIVE) ? compute_src_tag
            : (cpu->prefer_blocked && s->in_channels < cpu->native_block) ? dnnl_nchw
                                                                          : any,
            &first);
    init_md(&m->weights_any, 4, weights, cpu->prefer_blocked ? dnnl_format_tag_any : dnnl_oihw,
            &first);
    init_md(&m->dst_any, 4, dst, (flags & CONV_FLAG_DST_NATIVE) ? dst_tag : any, &first);
    return first;
}

/* Winograd convolution (oneDNN's AVX-512 f32 Winograd kernels) for the fused
 * inference convolutions where it measured faster than direct on this network:
 * 3x3, stride 1, at least 16 input channels and 4 rows, i.e. the stride-1
 * convolutions of the first four blocks of a 32x128 input. Batch-1 times of one
 * convolution in isolation (2 threads, AVX-512, oneDNN 2.6, median of 15 x 20 runs):
 *
 *   shape              direct   wino_2x3   wino_4x3
 *   32x128 32->32         342        238        232
 *   16x64  64->64         333        200        170
 *   8x32   64->64          85         62         60
 *   4x16   128->128        71         65         48
 *   2x8    256->256        58        113        105   (not used: 2 rows)
 *
 * Not for 3 input channels (3x slower) nor training (bit-for-bit PyTorch's direct
 * algorithm there). Its rounding differs from direct convolution by a few float32
 * ulps per layer (tests: logits vs direct, and the PyTorch parity test).
 * CAPTCHA_CPU_CONV_ALG=direct turns it off. */
static int use_winograd(const cpu_backend *cpu, const captcha_conv2d_shape *s, int flags)
{
    return cpu->winograd && (flags & CONV_FLAG_BIAS) && s->kernel_size == 3 && s->stride == 1 &&
           s->in_channels >= 16 && s->in_height >= 4;
}

/* Which Winograd kernel a convolution prefers, when oneDNN offers both: F(4x4, 3x3)
 * (jit_wino_4x3) for at least WINO_4X3_MIN_PIXELS output pixels per call (batch x
 * height x width), F(2x2, 3x3) (jit_fp32_wino_2x3) below. oneDNN 2.6 offers the 2x3
 * kernel at batches 1 and 2 only; elsewhere 4x3 is taken (or direct when oneDNN has
 * no Winograd kernel for the shape). The isolated times above
 * favour 4x3 everywhere, but inside the network the smaller layers tell otherwise: a
 * 4x3 kernel's transformed weights are 36/9 of the direct ones (2x3: 16/9), streamed
 * once per call, and with few output tiles they dominate its traffic and evict what
 * the next layers read. Whole network, batch 1, per-layer medians with the two
 * choices alternating in one process (10-forward bursts, 100 pairs):
 *
 *   layer (pixels)          wino_4x3   wino_2x3   direct
 *   block 1 conv2 (4096)     216-226    237-244        -
 *   block 2 conv2 (1024)     155-212    165-231        -
 *   block 3 conv2  (256)       72-75      66-73    87
 *   block 4 conv2   (64)     120-134      65-74   100
 *
 * and with 2x3 on blocks 3 and 4 the whole forward takes 0.93-0.955 of the time of
 * 4x3 everywhere (one process, order swapped: 1.032 the other way). Blocks 1-2 are
 * even between the two. */
#define WINO_4X3_MIN_PIXELS 1024

/* The primitive for `desc`: oneDNN's first implementation, except among Winograd
 * ones, where the kernel named by `prefer` (a substring of the implementation name)
 * is taken when offered. Returns dnnl_unimplemented when oneDNN has none. */
static dnnl_status_t conv_pd_create(cpu_backend *cpu, const dnnl_convolution_desc_t *desc,
                                    const_dnnl_primitive_attr_t attr, const char *prefer,
                                    dnnl_primitive_desc_t *pd)
{
    if (!prefer)
        return dnnl_primitive_desc_create(pd, desc, attr, cpu->engine, NULL);
    dnnl_primitive_desc_iterator_t it;
    dnnl_status_t s = dnnl_primitive_desc_iterator_create(&it, desc, attr, cpu->engine, NULL);
    if (s != dnnl_success)
        return s;
    dnnl_primitive_desc_t chosen = NULL;
    do {
        /* fetch returns a new descriptor, the caller's to destroy */
        dnnl_primitive_desc_t candidate = dnnl_primitive_desc_iterator_fetch(it);
        const char *name = "";
        if (!candidate)
            break;
        if (dnnl_primitive_desc_query(candidate, dnnl_query_impl_info_str, 0, &name) !=
            dnnl_success)
            name = "";
        int preferred = strstr(name, prefer) != NULL;
        if (!chosen || preferred) {
            if (chosen)
                dnnl_primitive_desc_destroy(chosen);
            chosen = candidate;
            if (preferred)
                break;
        } else {
            dnnl_primitive_desc_destroy(candidate);
        }
    } while (dnnl_primitive_desc_iterator_next(it) == dnnl_success);
    dnnl_primitive_desc_iterator_destroy(it);
    if (!chosen)
        return s != dnnl_success ? s : dnnl_unimplemented;
    *pd = chosen;
    return dnnl_success;
}

static captcha_status conv_forward_entry(cpu_backend *cpu, const captcha_conv2d_shape *s, int flags,
                                         op_entry **out, captcha_error *err)
{
    captcha_status status = CAPTCHA_OK;
    op_key key;
    conv_key(&key, OP_CONV_FORWARD, s, flags);
    if ((*out = cache_find(cpu, &key)))
        return CAPTCHA_OK;
    conv_mds m;
    dnnl_convolution_desc_t desc;
    dnnl_post_ops_t post_ops = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    op_entry *entry = calloc(1, sizeof *entry);
    if (!entry)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "CPU backend: out of memory");
    entry->key = key;
    DNNL_CHECK(conv_mds_init(cpu, s, flags, &m));
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    DNNL_CHECK(dnnl_post_ops_create(&post_ops));
    if (flags & CONV_FLAG_RESIDUAL)
        DNNL_CHECK(dnnl_post_ops_append_sum(post_ops, 1.0f));
    if (flags & CONV_FLAG_RELU)
        DNNL_CHECK(dnnl_post_ops_append_eltwise(post_ops, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
    DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, post_ops));
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    /* Winograd where it pays (see use_winograd), direct where it does not or
     * where oneDNN has no Winograd kernel for the shape/ISA */
    for (int winograd = use_winograd(cpu, s, flags); winograd >= 0; winograd--) {
        DNNL_CHECK(dnnl_convolution_forward_desc_init(
            &desc, (flags & CONV_FLAG_BIAS) ? dnnl_forward_inference : dnnl_forward_training,
            winograd ? dnnl_convolution_winograd : dnnl_convolution_direct, &m.src_any,
            &m.weights_any, (flags & CONV_FLAG_BIAS) ? &m.bias : NULL, &m.dst_any, m.strides,
            m.padding, m.padding_r));
        const char *prefer = NULL;
        if (winograd)
            prefer = (long long)s->batch * s->out_height * s->out_width >= WINO_4X3_MIN_PIXELS
                         ? "wino_4x3"
                         : "wino_2x3";
        dnnl_status_t created = conv_pd_create(cpu, &desc, attr, prefer, &pd);
        if (created == dnnl_unimplemented && winograd)
            continue;
        DNNL_CHECK(created);
        break;
    }
    /* argument order = pointer order in backend_conv2d_forward */
    if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SRC, ARG_IN, &m.src, err)))
        goto fail;
    if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_WEIGHTS, ARG_IN, &m.weights, err)))
        goto fail;
    /* the weights of the fused inference form are constant between
     * invalidate_cache() calls: keep their reordered copy */
    entry->args[1].cache_by_pointer = (flags & CONV_FLAG_BIAS) != 0;
    if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DST,
                                (flags & CONV_FLAG_RESIDUAL) ? ARG_INOUT : ARG_OUT, &m.dst, err)))
        goto fail;
    if (flags & CONV_FLAG_BIAS)
        if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_BIAS, ARG_IN, &m.bias, err)))
            goto fail;
    if ((status = entry_finish(cpu, entry, pd, out, err)))
        goto fail;
    entry = NULL;
fail:
    op_entry_destroy(entry);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (post_ops)
        dnnl_post_ops_destroy(post_ops);
    return status;
}

static captcha_status cpu_conv2d_forward_native(captcha_backend *backend,
                                                const captcha_conv2d_shape *shape, const float *x,
                                                int x_native, const float *weight,
                                                const float *bias, const float *residual,
                                                int relu, float *y, int y_native,
                                                captcha_error *err)
{
    cpu_backend *cpu = (cpu_backend *)backend;
    captcha_status status = captcha_check_conv2d_forward_args(shape, x, weight, y, err);
    if (status != CAPTCHA_OK)
        return status;
    int flags = (bias ? CONV_FLAG_BIAS : 0) | (residual ? CONV_FLAG_RESIDUAL : 0) |
                (relu ? CONV_FLAG_RELU : 0) | (x_native ? CONV_FLAG_SRC_NATIVE : 0) |
                (y_native ? CONV_FLAG_DST_NATIVE : 0);
    op_entry *entry;
    if ((status = conv_forward_entry(cpu, shape, flags, &entry, err)))
        return status;
    /* the sum post-op adds what dst holds: the residual, reordered straight
     * into the primitive's layout, or copied into y when that is plain */
    if (residual && residual != y && !entry->args[2].inner)
        memcpy(y, residual,
               sizeof(float) * (size_t)shape->batch * shape->out_channels * shape->out_height *
                   shape->out_width);
    void *pointers[4] = {(void *)x, (void *)weight, y, (void *)bias};
    return run_entry_inout(cpu, entry, pointers, residual, err);
}

static captcha_status cpu_conv2d_forward(captcha_backend *backend,
                                         const captcha_conv2d_shape *shape, const float *x,
                                         const float *weight, const float *bias,
                                         const float *residual, int relu, float *y,
                                         captcha_error *err)
{
    return cpu_conv2d_forward_native(backend, shape, x, 0, weight, bias, residual, relu, y, 0,
                                     err);
}

/* A forward primitive descriptor, the hint the backward ones need. */
static dnnl_status_t conv_forward_hint(cpu_backend *cpu, const conv_mds *m,
                                       dnnl_primitive_desc_t *hint)
{
    dnnl_convolution_desc_t desc;
    dnnl_status_t s = dnnl_convolution_forward_desc_init(
        &desc, dnnl_forward_training, dnnl_convolution_direct, &m->src_any, &m->weights_any, NULL,
        &m->dst_any, m->strides, m->padding, m->padding);
    if (s != dnnl_success)
        return s;
    return dnnl_primitive_desc_create(hint, &desc, NULL, cpu->engine, NULL);
}

static captcha_status conv_backward_entry(cpu_backend *cpu, const captcha_conv2d_shape *s, int kind,
                                          op_entry **out, captcha_error *err)
{
    captcha_status status = CAPTCHA_OK;
    op_key key;
    conv_key(&key, kind, s, 0);
    if ((*out = cache_find(cpu, &key)))
        return CAPTCHA_OK;
    conv_mds m;
    dnnl_convolution_desc_t desc;
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    op_entry *entry = calloc(1, sizeof *entry);
    if (!entry)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "CPU backend: out of memory");
    entry->key = key;
    DNNL_CHECK(conv_mds_init(cpu, s, 0, &m));
    DNNL_CHECK(conv_forward_hint(cpu, &m, &hint));
    if (kind == OP_CONV_BACKWARD_DATA) {
        DNNL_CHECK(dnnl_convolution_backward_data_desc_init(&desc, dnnl_convolution_direct,
                                                            &m.src_any, &m.weights_any, &m.dst_any,
                                                            m.strides, m.padding, m.padding));
        DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, cpu->attr, cpu->engine, hint));
        /* pointer order: dy, weight, dx */
        if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_DST, ARG_IN, &m.dst, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_WEIGHTS, ARG_IN, &m.weights, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_SRC, ARG_OUT, &m.src, err)))
            goto fail;
    } else {
        DNNL_CHECK(dnnl_convolution_backward_weights_desc_init(
            &desc, dnnl_convolution_direct, &m.src_any, &m.weights_any, NULL, &m.dst_any, m.strides,
            m.padding, m.padding));
        DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, cpu->attr, cpu->engine, hint));
        /* pointer order: x, dy, dweight */
        if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SRC, ARG_IN, &m.src, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_DST, ARG_IN, &m.dst, err)) ||
            (status =
                 entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_WEIGHTS, ARG_OUT, &m.weights, err)))
            goto fail;
    }
    if ((status = entry_finish(cpu, entry, pd, out, err)))
        goto fail;
    entry = NULL;
fail:
    op_entry_destroy(entry);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    return status;
}

static captcha_status cpu_conv2d_backward_data(captcha_backend *backend,
                                               const captcha_conv2d_shape *shape, const float *dy,
                                               const float *weight, float *dx, captcha_error *err)
{
    cpu_backend *cpu = (cpu_backend *)backend;
    captcha_status status = captcha_check_conv2d_backward_data_args(shape, dy, weight, dx, err);
    if (status != CAPTCHA_OK)
        return status;
    op_entry *entry;
    if ((status = conv_backward_entry(cpu, shape, OP_CONV_BACKWARD_DATA, &entry, err)))
        return status;
    void *pointers[3] = {(void *)dy, (void *)weight, dx};
    return run_entry(cpu, entry, pointers, err);
}

static captcha_status cpu_conv2d_backward_weight(captcha_backend *backend,
                                                 const captcha_conv2d_shape *shape, const float *x,
                                                 const float *dy, float *dweight,
                                                 captcha_error *err)
{
    cpu_backend *cpu = (cpu_backend *)backend;
    captcha_status status =
        captcha_check_conv2d_backward_weight_args(shape, x, dy, dweight, err);
    if (status != CAPTCHA_OK)
        return status;
    op_entry *entry;
    if ((status = conv_backward_entry(cpu, shape, OP_CONV_BACKWARD_WEIGHT, &entry, err)))
        return status;
    void *pointers[3] = {(void *)x, (void *)dy, dweight};
    return run_entry(cpu, entry, pointers, err);
}

/* ---- batch normalization ---- */

static captcha_status bn_entry(cpu_backend *cpu, int kind, int batch, int channels, int spatial,
                               float eps, op_entry **out, captcha_error *err)
{
    captcha_status status = CAPTCHA_OK;
    op_key key;
    memset(&key, 0, sizeof key);
    key.kind = kind;
    key.dims[0] = batch;
    key.dims[1] = channels;
    key.dims[2] = spatial;
    key.eps = eps;
    if ((*out = cache_find(cpu, &key)))
        return CAPTCHA_OK;
    dnnl_status_t first = dnnl_success;
    dnnl_memory_desc_t data, stat;
    dnnl_dims_t data_dims = {batch, channels, spatial, 1};
    dnnl_dims_t stat_dims = {channels};
    init_md(&data, 4, data_dims, dnnl_nchw, &first);
    init_md(&stat, 1, stat_dims, dnnl_a, &first);
    dnnl_batch_normalization_desc_t desc;
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    op_entry *entry = calloc(1, sizeof *entry);
    if (!entry)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "CPU backend: out of memory");
    entry->key = key;
    DNNL_CHECK(first);
    unsigned flags = dnnl_use_scale | dnnl_use_shift;
    if (kind == OP_BN_FORWARD_TRAINING) {
        DNNL_CHECK(dnnl_batch_normalization_forward_desc_init(&desc, dnnl_forward_training, &data,
                                                              eps, flags));
        DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, cpu->attr, cpu->engine, NULL));
        /* pointer order: x, gamma, beta, y, mean, variance */
        if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SRC, ARG_IN, &data, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SCALE, ARG_IN, &stat, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SHIFT, ARG_IN, &stat, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DST, ARG_OUT, &data, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_MEAN, ARG_OUT, &stat, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_VARIANCE, ARG_OUT, &stat, err)))
            goto fail;
    } else if (kind == OP_BN_FORWARD_INFERENCE) {
        DNNL_CHECK(dnnl_batch_normalization_forward_desc_init(&desc, dnnl_forward_inference, &data,
                                                              eps, flags | dnnl_use_global_stats));
        DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, cpu->attr, cpu->engine, NULL));
        /* pointer order: x, gamma, beta, y, mean, variance */
        if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SRC, ARG_IN, &data, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SCALE, ARG_IN, &stat, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SHIFT, ARG_IN, &stat, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DST, ARG_OUT, &data, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_MEAN, ARG_IN, &stat, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_VARIANCE, ARG_IN, &stat, err)))
            goto fail;
    } else {
        DNNL_CHECK(dnnl_batch_normalization_forward_desc_init(&desc, dnnl_forward_training, &data,
                                                              eps, flags));
        DNNL_CHECK(dnnl_primitive_desc_create(&hint, &desc, NULL, cpu->engine, NULL));
        DNNL_CHECK(dnnl_batch_normalization_backward_desc_init(&desc, dnnl_backward, &data, &data,
                                                               eps, flags));
        DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, cpu->attr, cpu->engine, hint));
        /* pointer order: x, dy, gamma, mean, variance, dx, dgamma, dbeta, shift (the
         * primitive asks for beta although gradients do not depend on it) */
        if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SRC, ARG_IN, &data, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_DST, ARG_IN, &data, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SCALE, ARG_IN, &stat, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_MEAN, ARG_IN, &stat, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_VARIANCE, ARG_IN, &stat, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_SRC, ARG_OUT, &data, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_SCALE, ARG_OUT, &stat, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_SHIFT, ARG_OUT, &stat, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SHIFT, ARG_IN, &stat, err)))
            goto fail;
    }
    if ((status = entry_finish(cpu, entry, pd, out, err)))
        goto fail;
    entry = NULL;
fail:
    op_entry_destroy(entry);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    return status;
}

static captcha_status stat_buffer(cpu_backend *cpu, int channels, captcha_error *err)
{
    /* 2 x channels: variance and (batch-norm backward) a zero shift */
    size_t count = 2 * (size_t)channels;
    if (cpu->stat_count >= count)
        return CAPTCHA_OK;
    free(cpu->stat_buffer);
    cpu->stat_buffer = aligned_buffer(cpu, sizeof(float) * count);
    cpu->stat_count = cpu->stat_buffer ? count : 0;
    if (!cpu->stat_buffer)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "CPU backend: out of memory");
    return CAPTCHA_OK;
}

static captcha_status
cpu_batchnorm_forward_training(captcha_backend *backend, int batch, int channels, int spatial,
                               const float *x, const float *gamma, const float *beta,
                               float momentum, float eps, float *running_mean, float *running_var,
                               float *saved_mean, float *saved_invstd, float *y, captcha_error *err)
{
    cpu_backend *cpu = (cpu_backend *)backend;
    captcha_status status = captcha_check_batchnorm_training_args(
        batch, channels, spatial, x, gamma, beta, momentum, eps, running_mean, running_var,
        saved_mean, saved_invstd, y, err);
    if (status != CAPTCHA_OK)
        return status;
    double n = (double)batch * spatial;
    /* Batch statistics in our own loop, accumulated in double in two passes (mean, then
     * the squared deviations) as PyTorch's CPU batch norm does; oneDNN 2.6's float
     * reductions drift from PyTorch's by enough to flip ReLU signs downstream. oneDNN
     * then normalizes with these statistics (use_global_stats). */
    op_entry *entry;
    if ((status =
             bn_entry(cpu, OP_BN_FORWARD_INFERENCE, batch, channels, spatial, eps, &entry, err)) ||
        (status = stat_buffer(cpu, channels, err)))
        return status;
    float *variance = cpu->stat_buffer;
    const size_t plane = (size_t)spatial, channel_stride = (size_t)channels * plane;
#pragma omp parallel for schedule(static) num_threads(cpu->base.threads)
    for (int c = 0; c < channels; c++) {
        double sum = 0;
        for (int b = 0; b < batch; b++) {
            const float *p = x + b * channel_stride + c * plane;
            for (size_t i = 0; i < plane; i++)
                sum += p[i];
        }
        double mean = sum / n, squares = 0;
        for (int b = 0; b < batch; b++) {
            const float *p = x + b * channel_stride + c * plane;
            for (size_t i = 0; i < plane; i++) {
                double d = p[i] - mean;
                squares += d * d;
            }
        }
        double var = squares / n;
        saved_mean[c] = (float)mean;
        variance[c] = (float)var;
        saved_invstd[c] = (float)(1.0 / sqrt(var + eps));
        /* running statistics take the unbiased variance, as torch does */
        running_mean[c] = (float)((1 - momentum) * running_mean[c] + momentum * mean);
        running_var[c] = (float)((1 - momentum) * running_var[c] + momentum * var * n / (n - 1));
    }
    void *pointers[6] = {(void *)x, (void *)gamma, (void *)beta, y, saved_mean, variance};
    return run_entry(cpu, entry, pointers, err);
}

static captcha_status cpu_batchnorm_forward_inference(captcha_backend *backend, int batch,
                                                      int channels, int spatial, const float *x,
                                                      const float *gamma, const float *beta,
                                                      const float *running_mean,
                                                      const float *running_var, float eps, float *y,
                                                      captcha_error *err)
{
    cpu_backend *cpu = (cpu_backend *)backend;
    captcha_status status = captcha_check_batchnorm_inference_args(
        batch, channels, spatial, x, gamma, beta, running_mean, running_var, eps, y, err);
    if (status != CAPTCHA_OK)
        return status;
    op_entry *entry;
    if ((status =
             bn_entry(cpu, OP_BN_FORWARD_INFERENCE, batch, channels, spatial, eps, &entry, err)))
        return status;
    void *pointers[6] = {(void *)x, (void *)gamma,        (void *)beta,
                         y,         (void *)running_mean, (void *)running_var};
    return run_entry(cpu, entry, pointers, err);
}

/* Batch-norm backward in our own loop, PyTorch's formula (batch_norm_backward_cpu) with
 * double accumulation of the two per-channel reductions:
 *   dbeta = sum(dy), dgamma = sum(dy * (x - mean)) * invstd,
 *   dx = gamma * invstd * (dy - sum(dy)/n - (x - mean) * invstd^2 * sum(dy * (x - mean))/n).
 * oneDNN 2.6's backward loses precision when |mean| >> std (dgamma relative error 1.4e-3 at
 * mean/std = 200, measured against a double reference), PyTorch's does not. */
static captcha_status cpu_batchnorm_backward(captcha_backend *backend, int batch, int channels,
                                             int spatial, const float *x, const float *dy,
                                             const float *gamma, const float *saved_mean,
                                             const float *saved_invstd, float *dx, float *dgamma,
                                             float *dbeta, captcha_error *err)
{
    cpu_backend *cpu = (cpu_backend *)backend;
    captcha_status status = captcha_check_batchnorm_backward_args(
        batch, channels, spatial, x, dy, gamma, saved_mean, saved_invstd, dx, dgamma, dbeta, err);
    if (status != CAPTCHA_OK)
        return status;
    const size_t plane = (size_t)spatial, channel_stride = (size_t)channels * plane;
    const double n = (double)batch * spatial;
#pragma omp parallel for schedule(static) num_threads(cpu->base.threads)
    for (int c = 0; c < channels; c++) {
        const double mean = saved_mean[c], invstd = saved_invstd[c];
        double sum_dy = 0, sum_dy_xmu = 0;
        for (int b = 0; b < batch; b++) {
            const float *xp = x + b * channel_stride + c * plane;
            const float *dyp = dy + b * channel_stride + c * plane;
            for (size_t i = 0; i < plane; i++) {
                sum_dy += dyp[i];
                sum_dy_xmu += dyp[i] * (xp[i] - mean);
            }
        }
        dbeta[c] = (float)sum_dy;
        dgamma[c] = (float)(sum_dy_xmu * invstd);
        const float scale = (float)(gamma[c] * invstd);
        const float mean_dy = (float)(sum_dy / n);
        const float projection = (float)(invstd * invstd * sum_dy_xmu / n);
        const float mean_f = (float)mean;
        for (int b = 0; b < batch; b++) {
            const float *xp = x + b * channel_stride + c * plane;
            const float *dyp = dy + b * channel_stride + c * plane;
            float *dxp = dx + b * channel_stride + c * plane;
            for (size_t i = 0; i < plane; i++)
                dxp[i] = scale * (dyp[i] - mean_dy - (xp[i] - mean_f) * projection);
        }
    }
    return CAPTCHA_OK;
}

/* ---- linear (inner product) ---- */

/* kind OP_LINEAR_FORWARD_NATIVE (chw = {C, H, W}, in_features = C*H*W): the
 * inference linear layer on the last block's output in the native layout. The inner
 * product reads x as the 4-D tensor [N, C, H, W] it is (nChw16c), with the weights
 * [out, C*H*W] seen as [out, C, H, W] (PyTorch's flatten order) and reordered once
 * to match (cached until invalidate_cache), so x needs no conversion to NCHW. The
 * other kinds: x [N, in] plain; chw NULL. */
static captcha_status linear_entry(cpu_backend *cpu, int kind, int batch, int in_features,
                                   int out_features, const int *chw, op_entry **out,
                                   captcha_error *err)
{
    captcha_status status = CAPTCHA_OK;
    int native = kind == OP_LINEAR_FORWARD_NATIVE;
    op_key key;
    memset(&key, 0, sizeof key);
    key.kind = kind;
    key.dims[0] = batch;
    key.dims[1] = in_features;
    key.dims[2] = out_features;
    for (int i = 0; native && i < 3; i++)
        key.dims[3 + i] = chw[i];
    if ((*out = cache_find(cpu, &key)))
        return CAPTCHA_OK;
    dnnl_status_t first = dnnl_success;
    dnnl_memory_desc_t src, weights, weights_any, bias, dst;
    dnnl_dims_t bias_dims = {out_features}, dst_dims = {batch, out_features};
    if (native) {
        dnnl_dims_t src_dims = {batch, chw[0], chw[1], chw[2]};
        dnnl_dims_t weight_dims = {out_features, chw[0], chw[1], chw[2]};
        init_md(&src, 4, src_dims, native_tag(cpu, chw[0], chw[1], chw[2]), &first);
        init_md(&weights, 4, weight_dims, dnnl_oihw, &first);
        init_md(&weights_any, 4, weight_dims, dnnl_format_tag_any, &first);
    } else {
        dnnl_dims_t src_dims = {batch, in_features}, weight_dims = {out_features, in_features};
        init_md(&src, 2, src_dims, dnnl_ab, &first);
        init_md(&weights, 2, weight_dims, dnnl_ab, &first);
        weights_any = weights;
    }
    init_md(&bias, 1, bias_dims, dnnl_a, &first);
    init_md(&dst, 2, dst_dims, dnnl_ab, &first);
    dnnl_inner_product_desc_t desc;
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    op_entry *entry = calloc(1, sizeof *entry);
    if (!entry)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "CPU backend: out of memory");
    entry->key = key;
    DNNL_CHECK(first);
    DNNL_CHECK(dnnl_inner_product_forward_desc_init(
        &desc, native ? dnnl_forward_inference : dnnl_forward_training, &src, &weights_any, &bias,
        &dst));
    if (kind == OP_LINEAR_FORWARD || native) {
        DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, cpu->attr, cpu->engine, NULL));
        /* pointer order: x, weight, bias, y */
        if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SRC, ARG_IN, &src, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_WEIGHTS, ARG_IN, &weights, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_BIAS, ARG_IN, &bias, err)) ||
            (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DST, ARG_OUT, &dst, err)))
            goto fail;
        entry->args[1].cache_by_pointer = native;
    } else {
        DNNL_CHECK(dnnl_primitive_desc_create(&hint, &desc, NULL, cpu->engine, NULL));
        if (kind == OP_LINEAR_BACKWARD_DATA) {
            DNNL_CHECK(dnnl_inner_product_backward_data_desc_init(&desc, &src, &weights, &dst));
            DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, cpu->attr, cpu->engine, hint));
            /* pointer order: dy, weight, dx */
            if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_DST, ARG_IN, &dst, err)) ||
                (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_WEIGHTS, ARG_IN, &weights, err)) ||
                (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_SRC, ARG_OUT, &src, err)))
                goto fail;
        } else {
            DNNL_CHECK(
                dnnl_inner_product_backward_weights_desc_init(&desc, &src, &weights, &bias, &dst));
            DNNL_CHECK(dnnl_primitive_desc_create(&pd, &desc, cpu->attr, cpu->engine, hint));
            /* pointer order: x, dy, dweight, dbias */
            if ((status = entry_add_arg(cpu, entry, pd, DNNL_ARG_SRC, ARG_IN, &src, err)) ||
                (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_DST, ARG_IN, &dst, err)) ||
                (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_WEIGHTS, ARG_OUT, &weights,
                                        err)) ||
                (status = entry_add_arg(cpu, entry, pd, DNNL_ARG_DIFF_BIAS, ARG_OUT, &bias, err)))
                goto fail;
        }
    }
    if ((status = entry_finish(cpu, entry, pd, out, err)))
        goto fail;
    entry = NULL;
fail:
    op_entry_destroy(entry);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    return status;
}

/* linear_forward and linear_forward_native (chw not NULL: x native [N, C, H, W]). */
static captcha_status linear_forward_run(cpu_backend *cpu, const char *op, int batch,
                                         int in_features, int out_features, const int *chw,
                                         const float *x, const float *weight, const float *bias,
                                         float *y, captcha_error *err)
{
    captcha_status status = CAPTCHA_OK;
    for (int i = 0; chw && i < 3 && status == CAPTCHA_OK; i++)
        status = captcha_check_positive(op, i == 0 ? "channels" : i == 1 ? "height" : "width", chw[i],
                                err);
    if (status == CAPTCHA_OK)
        status = captcha_check_linear_forward_args(op, batch, in_features, out_features, x, weight,
                                                   bias, y, err);
    if (status != CAPTCHA_OK)
        return status;
    op_entry *entry;
    if ((status = linear_entry(cpu, chw ? OP_LINEAR_FORWARD_NATIVE : OP_LINEAR_FORWARD, batch,
                               in_features, out_features, chw, &entry, err)))
        return status;
    void *pointers[4] = {(void *)x, (void *)weight, (void *)bias, y};
    return run_entry(cpu, entry, pointers, err);
}

static captcha_status cpu_linear_forward(captcha_backend *backend, int batch, int in_features,
                                         int out_features, const float *x, const float *weight,
                                         const float *bias, float *y, captcha_error *err)
{
    return linear_forward_run((cpu_backend *)backend, "linear_forward", batch, in_features,
                              out_features, NULL, x, weight, bias, y, err);
}

static captcha_status cpu_linear_forward_native(captcha_backend *backend, int batch, int channels,
                                                int height, int width, int out_features,
                                                const float *x, const float *weight,
                                                const float *bias, float *y, captcha_error *err)
{
    const int chw[3] = {channels, height, width};
    /* in_features: C*H*W, in 64 bits first so that an overflow is refused (as -1), not
     * wrapped */
    long long features = (long long)channels * height * width;
    return linear_forward_run((cpu_backend *)backend, "linear_forward_native", batch,
                              features > INT_MAX ? -1 : (int)features, out_features, chw, x,
                              weight, bias, y, err);
}

static captcha_status cpu_linear_backward(captcha_backend *backend, int batch, int in_features,
                                          int out_features, const float *x, const float *weight,
                                          const float *dy, float *dx, float *dweight, float *dbias,
                                          captcha_error *err)
{
    cpu_backend *cpu = (cpu_backend *)backend;
    captcha_status status = captcha_check_linear_backward_args(batch, in_features, out_features, x,
                                                               weight, dy, dx, dweight, dbias, err);
    if (status != CAPTCHA_OK)
        return status;
    op_entry *entry;
    if (dx) {
        if ((status = linear_entry(cpu, OP_LINEAR_BACKWARD_DATA, batch, in_features, out_features,
                                   NULL, &entry, err)))
            return status;
        void *pointers[3] = {(void *)dy, (void *)weight, dx};
        if ((status = run_entry(cpu, entry, pointers, err)))
            return status;
    }
    if ((status = linear_entry(cpu, OP_LINEAR_BACKWARD_WEIGHT, batch, in_features, out_features,
                               NULL, &entry, err)))
        return status;
    void *pointers[4] = {(void *)x, (void *)dy, dweight, dbias};
    return run_entry(cpu, entry, pointers, err);
}

/* ---- element-wise ---- */

static captcha_status cpu_relu_forward(captcha_backend *backend, size_t count, const float *x,
                                       float *y, captcha_error *err)
{
    captcha_status status = captcha_check_elementwise("relu_forward", count, x, y, y, err);
    if (status != CAPTCHA_OK)
        return status;
#pragma omp parallel for schedule(static) num_threads(backend->threads)
    for (size_t i = 0; i < count; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return CAPTCHA_OK;
}

static captcha_status cpu_relu_backward(captcha_backend *backend, size_t count, const float *y,
                                        const float *dy, float *dx, captcha_error *err)
{
    captcha_status status = captcha_check_elementwise("relu_backward", count, y, dy, dx, err);
    if (status != CAPTCHA_OK)
        return status;
#pragma omp parallel for schedule(static) num_threads(backend->threads)
    for (size_t i = 0; i < count; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    return CAPTCHA_OK;
}

static captcha_status cpu_add(captcha_backend *backend, size_t count, const float *a,
                              const float *b, float *y, captcha_error *err)
{
    captcha_status status = captcha_check_elementwise("add", count, a, b, y, err);
    if (status != CAPTCHA_OK)
        return status;
#pragma omp parallel for schedule(static) num_threads(backend->threads)
    for (size_t i = 0; i < count; i++)
        y[i] = a[i] + b[i];
    return CAPTCHA_OK;
}

/* ---- loss ---- */

/* softplus(x) = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), finite for any x. */
static inline double softplus(double x)
{
    return fmax(x, 0.0) + log1p(exp(-fabs(x)));
}

static inline double sigmoid(double x)
{
    if (x >= 0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

static captcha_status cpu_multilabel_soft_margin_loss(captcha_backend *backend, int batch,
                                                      int classes, const float *logits,
                                                      const float *targets, float *loss_host,
                                                      float *dlogits, captcha_error *err)
{
    captcha_status status =
        captcha_check_loss_args(batch, classes, logits, targets, loss_host, dlogits, err);
    if (status != CAPTCHA_OK)
        return status;
    size_t count = (size_t)batch * classes;
    double scale = 1.0 / (double)count;
    double total = 0;
    /* -log sigmoid(x) = softplus(-x), -log sigmoid(-x) = softplus(x) */
#pragma omp parallel for reduction(+ : total) schedule(static) num_threads(backend->threads)
    for (size_t i = 0; i < count; i++) {
        double x = logits[i], t = targets[i];
        total += t * softplus(-x) + (1 - t) * softplus(x);
        dlogits[i] = (float)((sigmoid(x) - t) * scale);
    }
    *loss_host = (float)(total * scale);
    return CAPTCHA_OK;
}

/* ---- Adam ---- */

static captcha_status cpu_adam_update(captcha_backend *backend, size_t count, float *param,
                                      const float *grad, float *m, float *v,
                                      const captcha_adam_config *config, int64_t step,
                                      captcha_error *err)
{
    captcha_status status =
        captcha_check_adam_args(count, param, grad, m, v, config, step, err);
    if (status != CAPTCHA_OK)
        return status;
    /* torch.optim.Adam (_single_tensor_adam): the bias corrections and the
     * step size are Python floats (double), the tensor math is float. */
    const float beta1 = config->beta1, beta2 = config->beta2;
    const float one_minus_beta1 = (float)(1.0 - (double)config->beta1);
    const float one_minus_beta2 = (float)(1.0 - (double)config->beta2);
    const double bias_correction1 = 1.0 - pow((double)config->beta1, (double)step);
    const double bias_correction2 = 1.0 - pow((double)config->beta2, (double)step);
    const float step_size = (float)((double)config->learning_rate / bias_correction1);
    const float bias_correction2_sqrt = (float)sqrt(bias_correction2);
    const float eps = config->eps, weight_decay = config->weight_decay;
#pragma omp parallel for schedule(static) num_threads(backend->threads)
    for (size_t i = 0; i < count; i++) {
        float g = grad[i];
        if (weight_decay != 0.0f)
            g = g + weight_decay * param[i];
        float mi = m[i] * beta1 + one_minus_beta1 * g;
        float vi = v[i] * beta2 + one_minus_beta2 * g * g;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
        param[i] = param[i] - step_size * (mi / denom);
    }
    return CAPTCHA_OK;
}

/* ---- memory ---- */

static captcha_status cpu_alloc(captcha_backend *backend, size_t bytes, void **out,
                                captcha_error *err)
{
    if (!out)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "alloc: out is NULL");
    *out = aligned_buffer((cpu_backend *)backend, bytes);
    if (!*out)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "CPU backend: cannot allocate %zu bytes", bytes);
    return CAPTCHA_OK;
}

/* Drops the reordered weight copies made from memory in [begin, end): that memory is being
 * rewritten or freed (a later buffer at the same address must not find stale weights). */
static void drop_weight_copies(cpu_backend *cpu, const void *begin, size_t bytes)
{
    const char *low = begin, *high = low + bytes;
    for (weight_copy **link = &cpu->weight_copies; *link;) {
        weight_copy *w = *link;
        if ((const char *)w->weight >= low && (const char *)w->weight < high) {
            *link = w->next;
            weight_copy_free(cpu, w);
        } else {
            link = &w->next;
        }
    }
}

static void cpu_free(captcha_backend *backend, void *pointer)
{
    if (!pointer)
        return;
    drop_weight_copies((cpu_backend *)backend, pointer, malloc_usable_size(pointer));
    free(pointer);
}

static captcha_status cpu_copy(captcha_backend *backend, void *dst, const void *src, size_t bytes,
                               captcha_error *err)
{
    if (bytes == 0)
        return CAPTCHA_OK;
    if (!dst || !src)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "copy: %s pointer is NULL (expected a buffer)",
                            dst ? "source" : "destination");
    drop_weight_copies((cpu_backend *)backend, dst, bytes);
    memmove(dst, src, bytes);
    return CAPTCHA_OK;
}

static captcha_status cpu_synchronize(captcha_backend *backend, captcha_error *err)
{
    (void)backend;
    (void)err;
    return CAPTCHA_OK;
}

/* The device is the host: captcha_preprocess straight into the backend's buffer (so that
 * callers such as the element have one path for every backend with this op). */
static captcha_status cpu_preprocess(captcha_backend *backend, const captcha_image *image,
                                     const captcha_roi *roi, const captcha_config *config,
                                     float *device_out, captcha_error *err)
{
    (void)backend;
    return captcha_preprocess(image, roi, config, device_out, err);
}

static void cpu_invalidate_cache(captcha_backend *backend)
{
    cpu_backend *cpu = (cpu_backend *)backend;
    weight_copy *w = cpu->weight_copies;
    while (w) {
        weight_copy *next = w->next;
        weight_copy_free(cpu, w);
        w = next;
    }
    cpu->weight_copies = NULL;
}

static void cpu_destroy(captcha_backend *backend)
{
    cpu_backend *cpu = (cpu_backend *)backend;
    if (!cpu)
        return;
    cpu_invalidate_cache(backend);
    op_entry *e = cpu->entries;
    while (e) {
        op_entry *next = e->next;
        op_entry_destroy(e);
        e = next;
    }
    for (int i = 0; i < MAX_OP_ARGS; i++)
        free(cpu->temp[i]);
    free(cpu->stat_buffer);
    if (cpu->scratch_memory)
        dnnl_memory_destroy(cpu->scratch_memory);
    free(cpu->scratch);
    if (cpu->attr)
        dnnl_primitive_attr_destroy(cpu->attr);
    if (cpu->stream)
        dnnl_stream_destroy(cpu->stream);
    if (cpu->engine)
        dnnl_engine_destroy(cpu->engine);
    free(cpu);
}

static const captcha_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,
    .conv2d_forward = cpu_conv2d_forward,
    .conv2d_forward_native = cpu_conv2d_forward_native,
    .linear_forward_native = cpu_linear_forward_native,
    .conv2d_backward_data = cpu_conv2d_backward_data,
    .conv2d_backward_weight = cpu_conv2d_backward_weight,
    .batchnorm_forward_training = cpu_batchnorm_forward_training,
    .batchnorm_forward_inference = cpu_batchnorm_forward_inference,
    .batchnorm_backward = cpu_batchnorm_backward,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .relu_forward = cpu_relu_forward,
    .relu_backward = cpu_relu_backward,
    .add = cpu_add,
    .multilabel_soft_margin_loss = cpu_multilabel_soft_margin_loss,
    .adam_update = cpu_adam_update,
    .invalidate_cache = cpu_invalidate_cache,
    .preprocess = cpu_preprocess,
};

/* The environment variable `name` read as a whole number in [minimum, INT_MAX]; anything
 * else (unset, "", "abc", "-1", "16px", out of range) gives `fallback`. These are tuning
 * and test knobs, so a typo keeps the default rather than half-applying (atoi("8x") = 8). */
static int env_whole_number(const char *name, long minimum, int fallback)
{
    const char *text = getenv(name);
    if (!text || !*text)
        return fallback;
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    return !*end && errno == 0 && value >= minimum && value <= INT_MAX ? (int)value : fallback;
}

captcha_status captcha_backend_cpu_create(int threads, captcha_backend **out, captcha_error *err)
{
    captcha_status status = CAPTCHA_OK;
    if (!out)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "CPU backend: out is NULL");
    *out = NULL;
    if (threads < 0 || threads > CAPTCHA_MAX_THREADS)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "CPU backend: threads is %d (expected 0 for all cores, or 1..%d)",
                            threads, CAPTCHA_MAX_THREADS);
    cpu_backend *cpu = calloc(1, sizeof *cpu);
    if (!cpu)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "CPU backend: out of memory");
    cpu->base.ops = &cpu_ops;
    cpu->base.threads = threads > 0 ? threads : omp_get_num_procs();
    /* oneDNN here runs on OpenMP: this sets the threads of its primitives and
     * of our loops alike */
    omp_set_num_threads(cpu->base.threads);
    cpu->max_entries = env_whole_number("CAPTCHA_CPU_MAX_PRIMITIVES", 1, CPU_MAX_ENTRIES);
    const char *layout = getenv("CAPTCHA_CPU_CONV_LAYOUT");
    cpu->prefer_blocked = !(layout && !strcmp(layout, "plain"));
    const char *huge = getenv("CAPTCHA_CPU_HUGE_PAGES");
    cpu->huge_pages = !(huge && !strcmp(huge, "0"));
    cpu->nhwc_max_pixels = env_whole_number("CAPTCHA_CPU_NHWC_PIXELS", 0, CPU_NHWC_MAX_PIXELS);
    const char *algorithm = getenv("CAPTCHA_CPU_CONV_ALG");
    cpu->winograd = cpu->prefer_blocked && !(algorithm && !strcmp(algorithm, "direct"));
    /* the ISA values are bit sets: AVX-512 (core) includes all of avx512_core's bits */
    cpu->native_block = ((unsigned)dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) ==
                                dnnl_cpu_isa_avx512_core
                            ? 16
                            : 8;
    DNNL_CHECK(dnnl_engine_create(&cpu->engine, dnnl_cpu, 0));
    DNNL_CHECK(dnnl_stream_create(&cpu->stream, cpu->engine, dnnl_stream_default_flags));
    DNNL_CHECK(dnnl_primitive_attr_create(&cpu->attr));
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(cpu->attr, dnnl_scratchpad_mode_user));
    *out = &cpu->base;
    return CAPTCHA_OK;
fail:
    cpu_destroy(&cpu->base);
    return status;
}
