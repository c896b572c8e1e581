/* Small helpers shared by the command-line tools' main() functions. */
#ifndef CAPTCHA_TOOL_UTIL_H
#define CAPTCHA_TOOL_UTIL_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Prints "program: " + the formatted message + newline on stderr, as
 * captcha_tool_print_line. */
void captcha_tool_message(const char *program, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* text on stream with tab, newline, carriage return and the other control bytes (and,
 * with escape_backslash, backslashes) written as C escapes (\\ \t \n \r \xHH); so are
 * both bytes of a C1 control character in UTF-8 (U+009B is ESC [ to a UTF-8 terminal). */
void captcha_tool_write_escaped(FILE *stream, const char *text, int escape_backslash);

/* Prints "program: " + the formatted text + newline on stream, as one line: a newline,
 * tab, carriage return or other control byte in it (from a file name, say) is written as
 * a C escape (\n \t \r \xHH), so that it can neither split the line in a log nor move
 * a terminal's cursor. */
void captcha_tool_print_line(FILE *stream, const char *program, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Parses a decimal integer in minimum..maximum. On failure prints
 * "program: name: expected an integer in minimum..maximum, got "text"" and
 * returns 0; else stores it in *out and returns 1. */
int captcha_tool_parse_long(const char *program, const char *name, const char *text, long minimum,
                            long maximum, long *out);

/* The option getopt_long (with opterr 0) has just refused by returning '?' or ':', as the
 * user wrote it: the argument of a long option ("--bogus", "--model" without its value,
 * "--bogus=1"), else "-x" for a short option, also one inside a group such as "-vx"
 * (whose argument getopt has not passed yet, so argv[optind - 1] is the one before it).
 * Returns an argv element or buffer (size bytes). */
const char *captcha_tool_refused_option(int argc, char **argv, char *buffer, size_t size);

/* libgomp reads OMP_WAIT_POLICY once, when it is loaded; its default lets idle
 * threads spin, which on a busy machine (more runnable threads than cores)
 * wastes most of the CPU time: training on 2 shared cores measured 7 img/s
 * spinning versus 32 img/s passive. When OMP_WAIT_POLICY is unset, this sets
 * it to PASSIVE and re-executes the program (/proc/self/exe) with the same
 * arguments; when it is set (by the user or by the re-execution) or the exec
 * fails, it returns and nothing changes. Call first thing in main(). */
void captcha_tool_prefer_passive_openmp(char **argv);

/* "a directory", "a FIFO", "a character device", ... for a stat() st_mode. */
const char *captcha_tool_file_kind(mode_t mode);

/* Opens path for reading ("rb") when it is a regular file (symbolic links
 * followed). A FIFO, device, directory or socket is refused without reading
 * from it or waiting for a writer (opened with O_NONBLOCK, checked with
 * fstat, then switched back to blocking reads). On failure returns NULL and
 * writes the reason into reason (reason_size bytes): "the path is empty",
 * strerror(errno), or "not a regular file (a FIFO)" and the like. */
FILE *captcha_tool_open_regular(const char *path, char *reason, size_t reason_size);

/* 1 when captcha_tool_open_regular(path) succeeds (the file is closed
 * again), else 0 with the reason as there. For checks before a loader that
 * opens the file itself. */
int captcha_tool_check_regular(const char *path, char *reason, size_t reason_size);

/* 1 when a and b name the same file: the same device and inode when both
 * exist (so "./a.st", "a.st" and a symbolic link to it match); when neither
 * exists, the same canonical folder (realpath) and base name; else 0. */
int captcha_tool_same_file(const char *a, const char *b);

/* The model file a tool uses without --model, as the captchaocr element does:
 * $CAPTCHA_MODEL when set and not empty, else the bundled model installed in
 * PREFIX/share/gst-captcha, else the one in the source tree
 * (model/captcha-default.safetensors). NULL when neither file exists;
 * *searched (may be NULL) then names the places looked at. */
const char *captcha_tool_default_model(const char **searched);

/* Warns on stderr (program: warning: ...) when threads exceeds the cores
 * online: OpenMP threads beyond them take turns on the cores, which makes
 * oneDNN's parallel kernels many times slower (measured on 2 cores: a training
 * epoch 14x slower at 64 threads, 70x at 256). */
void captcha_tool_warn_threads(const char *program, long threads);

/* path + ".tmp" in a new string (free() it), the name a file is first written
 * to before it is renamed over path (captcha_model_save, the trainer's
 * checkpoint); NULL when out of memory. */
char *captcha_tool_tmp_path(const char *path);

#ifdef __cplusplus
}
#endif

#endif
