/* Small helpers shared by the command-line tools' main() functions. */
#ifndef CAPTCHA_TOOL_UTIL_H
#define CAPTCHA_TOOL_UTIL_H

#ifdef __cplusplus
extern "C" {
#endif

/* Prints "program: " + the formatted message + newline on stderr. */
void captcha_tool_message(const char *program, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Parses a decimal integer in minimum..maximum. On failure prints
 * "program: name: expected an integer in minimum..maximum, got "text"" and
 * returns 0; else stores it in *out and returns 1. */
int captcha_tool_parse_long(const char *program, const char *name, const char *text, long minimum,
                            long maximum, long *out);

#ifdef __cplusplus
}
#endif

#endif
