/* Helpers shared by the command-line tools (see tool_util.h). */
#include "tool_util.h"

#include "captcha-build-config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void captcha_tool_write_escaped(FILE *stream, const char *text, int escape_backslash)
{
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        if (*c == '\\' && escape_backslash)
            fputs("\\\\", stream);
        else if (*c == '\t')
            fputs("\\t", stream);
        else if (*c == '\n')
            fputs("\\n", stream);
        else if (*c == '\r')
            fputs("\\r", stream);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(stream, "\\x%02x", *c);
        else if (*c == 0xc2 && c[1] >= 0x80 && c[1] <= 0x9f) { /* a C1 control, U+0080..U+009F */
            fprintf(stream, "\\x%02x\\x%02x", c[0], c[1]);
            c++;
        } else
            fputc(*c, stream);
    }
}

static void print_line(FILE *stream, const char *program, const char *format, va_list args)
{
    va_list copy;
    va_copy(copy, args);
    int length = vsnprintf(NULL, 0, format, copy);
    va_end(copy);
    char *text = length >= 0 ? malloc((size_t)length + 1) : NULL;
    fprintf(stream, "%s: ", program);
    if (!text) { /* out of memory: the message as it is */
        vfprintf(stream, format, args);
    } else {
        vsnprintf(text, (size_t)length + 1, format, args);
        captcha_tool_write_escaped(stream, text, 0);
        free(text);
    }
    fputc('\n', stream);
}

void captcha_tool_print_line(FILE *stream, const char *program, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    print_line(stream, program, format, args);
    va_end(args);
}

void captcha_tool_message(const char *program, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    print_line(stderr, program, format, args);
    va_end(args);
}

int captcha_tool_parse_long(const char *program, const char *name, const char *text, long minimum,
                            long maximum, long *out)
{
    char *end;
    errno = 0;
    /* plain decimal digits, optionally after '-': strtol would also take leading
     * white space and a '+', which captcha-gen and the model metadata refuse */
    int plain = isdigit((unsigned char)text[0]) ||
                (text[0] == '-' && isdigit((unsigned char)text[1]));
    long value = strtol(text, &end, 10);
    if (!plain || errno || end == text || *end || value < minimum || value > maximum) {
        captcha_tool_message(program, "%s: expected an integer in %ld..%ld, got \"%s\"", name,
                             minimum, maximum, text);
        return 0;
    }
    *out = value;
    return 1;
}

const char *captcha_tool_refused_option(int argc, char **argv, char *buffer, size_t size)
{
    const char *last = optind > 0 && optind <= argc ? argv[optind - 1] : "";
    int short_option = optopt > 0 && optopt < 0x7f && isgraph(optopt);
    /* a short option with more of its group to come: getopt is still on argv[optind] */
    const char *next = optind < argc ? argv[optind] : "";
    int in_group = short_option && next[0] == '-' && next[1] && next[1] != '-' &&
                   strchr(next + 1, optopt);
    if (!in_group && (!strncmp(last, "--", 2) || !short_option))
        return last;
    snprintf(buffer, size, "-%c", optopt);
    return buffer;
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

const char *captcha_tool_file_kind(mode_t mode)
{
    if (S_ISREG(mode))
        return "a regular file";
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "of an unknown kind";
}

FILE *captcha_tool_open_regular(const char *path, char *reason, size_t reason_size)
{
    if (!path[0]) {
        snprintf(reason, reason_size, "the path is empty");
        errno = ENOENT;
        return NULL;
    }
    /* O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(reason, reason_size, "%s", strerror(errno));
        return NULL;
    }
    struct stat info;
    if (fstat(fd, &info) != 0) {
        int saved = errno;
        snprintf(reason, reason_size, "%s", strerror(saved));
        close(fd);
        errno = saved;
        return NULL;
    }
    if (!S_ISREG(info.st_mode)) {
        snprintf(reason, reason_size, "not a regular file (%s)",
                 captcha_tool_file_kind(info.st_mode));
        close(fd);
        errno = EINVAL;
        return NULL;
    }
    int flags = fcntl(fd, F_GETFL);
    FILE *stream = NULL;
    if (flags != -1 && fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0)
        stream = fdopen(fd, "rb");
    if (!stream) {
        int saved = errno;
        snprintf(reason, reason_size, "%s", strerror(saved));
        close(fd);
        errno = saved;
    }
    return stream;
}

int captcha_tool_check_regular(const char *path, char *reason, size_t reason_size)
{
    FILE *stream = captcha_tool_open_regular(path, reason, reason_size);
    if (stream)
        fclose(stream);
    return stream != NULL;
}

/* path resolved: realpath() when it exists, else realpath() of its folder +
 * its base name, else path itself; malloc'ed (NULL when out of memory). */
static char *canonical_path(const char *path)
{
    char *resolved = realpath(path, NULL);
    if (resolved)
        return resolved;
    char *copy_dir = strdup(path), *copy_base = strdup(path);
    char *result = NULL;
    if (copy_dir && copy_base) {
        char *dir = realpath(dirname(copy_dir), NULL);
        const char *base = basename(copy_base);
        if (dir) {
            size_t size = strlen(dir) + strlen(base) + 2;
            result = malloc(size);
            if (result)
                snprintf(result, size, "%s/%s", strcmp(dir, "/") ? dir : "", base);
            free(dir);
        } else {
            result = strdup(path);
        }
    }
    free(copy_dir);
    free(copy_base);
    return result;
}

int captcha_tool_same_file(const char *a, const char *b)
{
    struct stat info_a, info_b;
    int exists_a = stat(a, &info_a) == 0, exists_b = stat(b, &info_b) == 0;
    if (exists_a && exists_b)
        return info_a.st_dev == info_b.st_dev && info_a.st_ino == info_b.st_ino;
    if (exists_a != exists_b)
        return 0;
    char *canonical_a = canonical_path(a), *canonical_b = canonical_path(b);
    int same = canonical_a && canonical_b ? !strcmp(canonical_a, canonical_b) : !strcmp(a, b);
    free(canonical_a);
    free(canonical_b);
    return same;
}

char *captcha_tool_tmp_path(const char *path)
{
    size_t size = strlen(path) + sizeof ".tmp";
    char *tmp = malloc(size);
    if (tmp)
        snprintf(tmp, size, "%s.tmp", path);
    return tmp;
}

const char *captcha_tool_default_model(const char **searched)
{
    static const char *const candidates[] = {
        CAPTCHA_MODEL_INSTALL_DIR "/captcha-default.safetensors",
        CAPTCHA_SOURCE_DIR "/model/captcha-default.safetensors",
    };
    if (searched)
        *searched = CAPTCHA_MODEL_INSTALL_DIR "/captcha-default.safetensors nor " CAPTCHA_SOURCE_DIR
                                              "/model/captcha-default.safetensors";
    const char *env = getenv("CAPTCHA_MODEL");
    if (env && env[0])
        return env;
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        struct stat info;
        if (stat(candidates[i], &info) == 0 && S_ISREG(info.st_mode))
            return candidates[i];
    }
    return NULL;
}

void captcha_tool_warn_threads(const char *program, long threads)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores > 0 && threads > cores)
        captcha_tool_message(program,
                             "warning: --threads %ld is more than the %ld core%s online: the "
                             "threads take turns on the cores, which makes each step many times "
                             "slower (0 uses every core)",
                             threads, cores, cores == 1 ? "" : "s");
}
