/* Status codes and error messages of the model library.
 *
 * Library code never exits or aborts: every fallible function returns a
 * captcha_status and, when it is not CAPTCHA_OK, fills a captcha_error whose
 * message is one sentence a user can act on (it names the file, tensor, field
 * or value and says what was expected versus found). */
#ifndef CAPTCHA_STATUS_H
#define CAPTCHA_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CAPTCHA_OK = 0,
    CAPTCHA_ERROR_IO,               /* a file could not be opened, read or written */
    CAPTCHA_ERROR_FORMAT,           /* a file's content is malformed or inconsistent */
    CAPTCHA_ERROR_INVALID_ARGUMENT, /* a caller passed a value outside the allowed range */
    CAPTCHA_ERROR_OUT_OF_MEMORY,    /* host or device allocation failed */
    CAPTCHA_ERROR_BACKEND,          /* oneDNN / CUDA / cuDNN / cuBLAS reported a failure */
    CAPTCHA_ERROR_UNAVAILABLE,      /* the requested backend or device is not present */
} captcha_status;

#define CAPTCHA_ERROR_MESSAGE_SIZE 512

typedef struct {
    captcha_status status;
    char message[CAPTCHA_ERROR_MESSAGE_SIZE];
} captcha_error;

/* Records status and a printf-style message in err (err may be NULL) and
 * returns status, so a failing function can `return captcha_fail(...)`. */
captcha_status captcha_fail(captcha_error *err, captcha_status status, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Prefixes the message already in err with a context string ("model.safetensors: ").
 * Returns err->status, or CAPTCHA_OK when err is NULL: a caller whose err may be NULL
 * returns the failing status it holds, not this. */
captcha_status captcha_error_prefix(captcha_error *err, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Returns from the calling function with the status of expr when it is not
 * CAPTCHA_OK (the error already in err). */
#define CAPTCHA_TRY(expr)                                                                          \
    do {                                                                                           \
        captcha_status captcha_try_status_ = (expr);                                               \
        if (captcha_try_status_ != CAPTCHA_OK)                                                     \
            return captcha_try_status_;                                                            \
    } while (0)

/* A short constant name for a status ("I/O error", "format error", ...). */
const char *captcha_status_name(captcha_status status);

#ifdef __cplusplus
}
#endif

#endif
