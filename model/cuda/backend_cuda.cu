// placeholder: being written (CUDA/cuDNN/cuBLAS backend)
#include "backend.h"
extern "C" captcha_status captcha_backend_cuda_create(int gpu_id, captcha_backend **out, captcha_error *err)
{
    (void)gpu_id;
    *out = nullptr;
    return captcha_fail(err, CAPTCHA_ERROR_UNAVAILABLE, "the CUDA backend is not written yet");
}
