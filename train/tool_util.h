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

/* libgomp reads OMP_WAIT_POLICY once, when it is loaded; its default lets idle
 * threads spin, which on a busy machine (more runnable threads than cores)
 * wastes most of the CPU time: training on 2 shared cores measured 7 img/s
 * spinning versus 32 img/s passive. When OMP_WAIT_POLICY is unset, this sets
 * it to PASSIVE and re-executes the program (/proc/self/exe) with the same
 * arguments; when it is set (by the user or by the re-execution) or the exec
 * fails, it returns and nothing changes. Call first thing in main(). */
void captcha_tool_prefer_passive_openmp(char **argv);

#ifdef __cplusplus
}
#endif

#endif
