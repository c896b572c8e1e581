#include "captcha_status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

captcha_status captcha_fail(captcha_error *err, captcha_status status, const char *format, ...)
{
    if (err) {
        va_list args;
        va_start(args, format);
        err->status = status;
        vsnprintf(err->message, sizeof err->message, format, args);
        va_end(args);
    }
    return status;
}

captcha_status captcha_error_prefix(captcha_error *err, const char *format, ...)
{
    if (!err)
        return CAPTCHA_OK;
    char prefix[CAPTCHA_ERROR_MESSAGE_SIZE];
    char old[CAPTCHA_ERROR_MESSAGE_SIZE];
    va_list args;
    va_start(args, format);
    vsnprintf(prefix, sizeof prefix, format, args);
    va_end(args);
    memcpy(old, err->message, sizeof old);
    old[sizeof old - 1] = '\0';
    /* prefix + old message, truncated to the message size */
    size_t used = strlen(prefix);
    memcpy(err->message, prefix, used + 1);
    size_t room = sizeof err->message - 1 - used;
    size_t tail = strnlen(old, room);
    memcpy(err->message + used, old, tail);
    err->message[used + tail] = '\0';
    return err->status;
}

const char *captcha_status_name(captcha_status status)
{
    switch (status) {
    case CAPTCHA_OK: return "ok";
    case CAPTCHA_ERROR_IO: return "I/O error";
    case CAPTCHA_ERROR_FORMAT: return "format error";
    case CAPTCHA_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case CAPTCHA_ERROR_OUT_OF_MEMORY: return "out of memory";
    case CAPTCHA_ERROR_BACKEND: return "backend error";
    case CAPTCHA_ERROR_UNAVAILABLE: return "unavailable";
    }
    return "unknown error";
}
