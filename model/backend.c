/* dladdr (dlfcn.h) */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "backend.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "captcha-build-config.h"

void captcha_conv2d_shape_init(captcha_conv2d_shape *shape, int batch, int in_channels,
                               int in_height, int in_width, int out_channels, int kernel_size,
                               int stride, int padding)
{
    shape->batch = batch;
    shape->in_channels = in_channels;
    shape->in_height = in_height;
    shape->in_width = in_width;
    shape->out_channels = out_channels;
    shape->kernel_size = kernel_size;
    shape->stride = stride;
    shape->padding = padding;
    shape->out_height = stride < 1 ? 0 : (in_height + 2 * padding - kernel_size) / stride + 1;
    shape->out_width = stride < 1 ? 0 : (in_width + 2 * padding - kernel_size) / stride + 1;
}

size_t captcha_conv2d_input_count(const captcha_conv2d_shape *s)
{
    return (size_t)s->batch * s->in_channels * s->in_height * s->in_width;
}

size_t captcha_conv2d_output_count(const captcha_conv2d_shape *s)
{
    return (size_t)s->batch * s->out_channels * s->out_height * s->out_width;
}

size_t captcha_conv2d_weight_count(const captcha_conv2d_shape *s)
{
    return (size_t)s->out_channels * s->in_channels * s->kernel_size * s->kernel_size;
}

captcha_status captcha_device_parse(const char *text, captcha_device *out, captcha_error *err)
{
    if (!out)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_device_parse: out is NULL");
    if (!text || !strcmp(text, "auto"))
        *out = CAPTCHA_DEVICE_AUTO;
    else if (!strcmp(text, "cpu"))
        *out = CAPTCHA_DEVICE_CPU;
    else if (!strcmp(text, "cuda") || !strcmp(text, "gpu"))
        *out = CAPTCHA_DEVICE_CUDA;
    else
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "device \"%s\" is not one of auto, cpu, cuda (or gpu)", text);
    return CAPTCHA_OK;
}

int captcha_backend_cuda_built(void)
{
    return CAPTCHA_HAVE_CUDA;
}

typedef captcha_status (*cuda_module_create_fn)(int gpu_id, captcha_backend **out,
                                                captcha_error *err);

/* Whether this code runs from a file (the tool or the plugin it is linked into) inside
 * the build tree it was built in. */
static int running_from_build_tree(void)
{
    Dl_info info;
    char self[PATH_MAX], build[PATH_MAX];
    const char *path = dladdr((void *)(uintptr_t)running_from_build_tree, &info) &&
                               info.dli_fname && strchr(info.dli_fname, '/')
                           ? info.dli_fname
                           : "/proc/self/exe"; /* the main program, named without a folder */
    if (!realpath(path, self) || !realpath(CAPTCHA_BUILD_DIR, build))
        return 0;
    size_t n = strlen(build);
    return !strncmp(self, build, n) && self[n] == '/';
}

typedef const captcha_module_interface *(*cuda_module_interface_fn)(void);

/* Whether the dlopen'ed module at path was built with this library's interface
 * (captcha_module_interface); else the reason, naming path, into reason. */
static int module_interface_matches(void *module, const char *path, char *reason, size_t size)
{
    cuda_module_interface_fn get =
        (cuda_module_interface_fn)(uintptr_t)dlsym(module, "captcha_cuda_module_interface");
    if (!get) {
        snprintf(reason, size,
                 "%s was built from an older gst-captcha (it has no "
                 "captcha_cuda_module_interface): rebuild or reinstall it with this version, or "
                 "set CAPTCHA_CUDA_MODULE to this build's module",
                 path);
        return 0;
    }
    const captcha_module_interface ours = captcha_module_interface_current();
    const captcha_module_interface *module_side = get();
    if (!module_side || module_side->size != ours.size) {
        snprintf(reason, size,
                 "%s was built from other gst-captcha sources (its interface record is %zu "
                 "bytes, this library's %zu): rebuild or reinstall it with this version, or set "
                 "CAPTCHA_CUDA_MODULE to this build's module",
                 path, module_side ? module_side->size : 0, ours.size);
        return 0;
    }
    const captcha_module_interface theirs = *module_side;
    if (theirs.version == ours.version && theirs.ops_size == ours.ops_size &&
        theirs.backend_size == ours.backend_size && theirs.shape_size == ours.shape_size &&
        theirs.image_size == ours.image_size && theirs.config_size == ours.config_size &&
        theirs.error_size == ours.error_size && theirs.roi_size == ours.roi_size &&
        theirs.adam_size == ours.adam_size)
        return 1;
    snprintf(reason, size,
             "%s was built from other gst-captcha sources (interface version %d, structure "
             "sizes %zu %zu %zu %zu %zu %zu %zu %zu; this library: version %d, %zu %zu %zu %zu "
             "%zu %zu %zu %zu): rebuild or reinstall it with this version, or set "
             "CAPTCHA_CUDA_MODULE to this build's module",
             path, theirs.version, theirs.ops_size, theirs.backend_size, theirs.shape_size,
             theirs.image_size, theirs.config_size, theirs.error_size, theirs.roi_size,
             theirs.adam_size, ours.version, ours.ops_size, ours.backend_size, ours.shape_size,
             ours.image_size, ours.config_size, ours.error_size, ours.roi_size, ours.adam_size);
    return 0;
}

/* Loads the CUDA backend module once per process (it stays loaded): $CAPTCHA_CUDA_MODULE
 * when set (and only it: a wrong path there is an error naming it, not a silent fall back
 * to another module), else the one built with this code: the build tree's for a program
 * or plugin run from the build tree, the installed one for an installed copy (each
 * falling back to the other). NULL with the reason in err. */
static cuda_module_create_fn load_cuda_module(captcha_error *err)
{
    static cuda_module_create_fn create;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    if (!create) {
        const char *env = getenv("CAPTCHA_CUDA_MODULE");
        const int explicit_path = env && *env;
        const char *built = CAPTCHA_BUILD_DIR "/model/libcaptcha-cuda.so";
        const char *installed = CAPTCHA_CUDA_MODULE_INSTALL_DIR "/libcaptcha-cuda.so";
        const int build_first = !explicit_path && running_from_build_tree();
        const char *candidates[3] = {explicit_path ? env : NULL,
                                     explicit_path ? NULL : build_first ? built : installed,
                                     explicit_path ? NULL : build_first ? installed : built};
        char reasons[CAPTCHA_ERROR_MESSAGE_SIZE] = "";
        if (explicit_path && access(env, F_OK) != 0)
            snprintf(reasons, sizeof reasons, "CAPTCHA_CUDA_MODULE=%s: %s", env, strerror(errno));
        for (int i = 0; i < 3 && !create; i++) {
            if (!candidates[i] || access(candidates[i], F_OK) != 0)
                continue;
            void *module = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
            if (!module) {
                /* typically a CUDA library (libcudnn.so.9, ...) is missing */
                snprintf(reasons, sizeof reasons, "%s", dlerror());
                continue;
            }
            if (!module_interface_matches(module, candidates[i], reasons, sizeof reasons)) {
                dlclose(module);
                continue;
            }
            create = (cuda_module_create_fn)(uintptr_t)dlsym(module, "captcha_cuda_module_create");
            if (!create) {
                snprintf(reasons, sizeof reasons, "%s has no captcha_cuda_module_create",
                         candidates[i]);
                dlclose(module);
            }
        }
        if (!create)
            captcha_fail(err, CAPTCHA_ERROR_UNAVAILABLE,
                         "the CUDA backend module could not be loaded: %s",
                         reasons[0] ? reasons
                                    : "libcaptcha-cuda.so not found (set CAPTCHA_CUDA_MODULE)");
    }
    pthread_mutex_unlock(&lock);
    return create;
}

captcha_status captcha_backend_cuda_create(int gpu_id, captcha_backend **out, captcha_error *err)
{
    *out = NULL;
    if (!CAPTCHA_HAVE_CUDA)
        return captcha_fail(err, CAPTCHA_ERROR_UNAVAILABLE,
                            "this build of gst-captcha has no CUDA backend (configured without "
                            "CUDA)");
    cuda_module_create_fn create = load_cuda_module(err);
    if (!create)
        return CAPTCHA_ERROR_UNAVAILABLE;
    return create(gpu_id, out, err);
}

captcha_status captcha_backend_create(captcha_device device, int gpu_id, int threads,
                                      captcha_backend **out, char *fallback_reason,
                                      size_t fallback_reason_size, captcha_error *err)
{
    if (!out)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_backend_create: out is NULL");
    *out = NULL;
    if (fallback_reason && fallback_reason_size)
        fallback_reason[0] = '\0';
    if (device != CAPTCHA_DEVICE_AUTO && device != CAPTCHA_DEVICE_CPU &&
        device != CAPTCHA_DEVICE_CUDA)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_backend_create: device is %d, not a captcha_device (%d "
                            "auto, %d cpu, %d cuda)",
                            (int)device, CAPTCHA_DEVICE_AUTO, CAPTCHA_DEVICE_CPU,
                            CAPTCHA_DEVICE_CUDA);
    if (device == CAPTCHA_DEVICE_CPU)
        return captcha_backend_cpu_create(threads, out, err);
    captcha_error cuda_err = {0};
    captcha_status status = captcha_backend_cuda_create(gpu_id, out, &cuda_err);
    if (status == CAPTCHA_OK)
        return CAPTCHA_OK;
    if (device == CAPTCHA_DEVICE_CUDA) {
        if (err)
            *err = cuda_err;
        return status;
    }
    if (fallback_reason && fallback_reason_size)
        snprintf(fallback_reason, fallback_reason_size, "%s; using the CPU", cuda_err.message);
    return captcha_backend_cpu_create(threads, out, err);
}

void captcha_backend_destroy(captcha_backend *backend)
{
    if (backend)
        backend->ops->destroy(backend);
}
