/* Stand-ins for libcaptcha-cuda.so in test_cuda_module: built three ways (FAKE_KIND),
 * they let the loader's interface check run without CUDA or a GPU.
 *   1 "old":     no captcha_cuda_module_interface (a module from before it existed)
 *   2 "other":   an interface of other sizes (a module from other sources)
 *   3 "current": this build's interface; its create fails with a message naming it */
#include "backend.h"

#if FAKE_KIND != 1
__attribute__((visibility("default"))) const captcha_module_interface *
captcha_cuda_module_interface(void)
{
    static captcha_module_interface interface;
    interface = captcha_module_interface_current();
#if FAKE_KIND == 2
    interface.image_size -= 8; /* as before captcha_image had yuv_matrix and yuv_full_range */
#endif
    return &interface;
}
#endif

__attribute__((visibility("default"))) captcha_status
captcha_cuda_module_create(int gpu_id, captcha_backend **out, captcha_error *err)
{
    (void)gpu_id;
    *out = NULL;
    return captcha_fail(err, CAPTCHA_ERROR_UNAVAILABLE, "fake module %d created", FAKE_KIND);
}
