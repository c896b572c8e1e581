/* Helpers shared by the command-line tools (see tool_util.h). */
#include "tool_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void captcha_tool_message(const char *program, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "%s: ", program);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
}

int captcha_tool_parse_long(const char *program, const char *name, const char *text, long minimum,
                            long maximum, long *out)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end || value < minimum || value > maximum) {
        captcha_tool_message(program, "%s: expected an integer in %ld..%ld, got \"%s\"", name,
                             minimum, maximum, text);
        return 0;
    }
    *out = value;
    return 1;
}

void captcha_tool_prefer_passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY"))
        return;
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the policy libgomp already read */
}
