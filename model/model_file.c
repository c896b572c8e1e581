/* The safetensors model file (format and metadata keys: model_file.h).
 *
 * Reading: the header is read with checked reads (size from fstat), its
 * framing checked, the JSON parsed with jansson (duplicate keys rejected), the
 * metadata turned into a captcha_config, then every tensor entry checked
 * against the network's tensor table before any tensor is read (pread, one by
 * one); a file whose size or mtime changed meanwhile is refused.
 * Writing: header and data go to path + ".tmp", which is renamed over path only
 * when complete. */
#define _POSIX_C_SOURCE 200809L
#include "model_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

/* Headers larger than this are refused before reading (a reference model's
 * header is about 12 KB). */
#define MODEL_HEADER_LIMIT (100u * 1000u * 1000u)
/* Dimensions of a tensor entry we can describe (safetensors has no limit;
 * our tensors have at most 4). */
#define MODEL_MAX_DIMS 8
#define MODEL_FORMAT "gst-captcha/1"
#define METADATA_KEY "__metadata__"
#define BATCHES_TRACKED_SUFFIX ".num_batches_tracked"

/* ---- small helpers ---- */

static int host_is_big_endian(void)
{
    const uint16_t probe = 1;
    unsigned char first;
    memcpy(&first, &probe, 1);
    return first == 0;
}

/* Reverses the byte order of count elements of size bytes, in place. */
static void swap_bytes(void *data, size_t count, size_t size)
{
    unsigned char *p = data;
    for (size_t i = 0; i < count; i++, p += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

static uint64_t read_u64_le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void write_u64_le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void set_notice(char *notice, size_t notice_size, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void set_notice(char *notice, size_t notice_size, const char *format, ...)
{
    if (!notice || !notice_size)
        return;
    va_list args;
    va_start(args, format);
    vsnprintf(notice, notice_size, format, args);
    va_end(args);
}

/* "[64, 32, 3, 3]"; "[]" for a scalar. */
static void format_shape(char *out, size_t out_size, const int64_t *shape, int ndim)
{
    size_t used = 0;
    used += (size_t)snprintf(out, out_size, "[");
    for (int i = 0; i < ndim && used < out_size; i++)
        used +=
            (size_t)snprintf(out + used, out_size - used, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (used < out_size)
        snprintf(out + used, out_size - used, "]");
}

static int ends_with(const char *text, const char *suffix)
{
    size_t n = strlen(text), m = strlen(suffix);
    return n >= m && !strcmp(text + n - m, suffix);
}

/* ---- reading the file ---- */

typedef struct {
    const char *path;
    uint64_t file_size;
    uint64_t header_size;
    uint64_t data_size; /* bytes after the header: the data section */
    json_t *root;       /* the header object */
    FILE *stream;       /* open until model_file_close; tensors are read with read_data */
    struct timespec modified; /* st_mtim when opened: see model_file_check_unchanged */
} model_file;

static void model_file_close(model_file *file)
{
    json_decref(file->root);
    if (file->stream)
        fclose(file->stream);
    file->root = NULL;
    file->stream = NULL;
}

/* Reads size bytes or fails: an I/O error with the system's reason, or a
 * format error when the file ends early (it changed while being read). */
static captcha_status read_exactly(FILE *stream, void *buffer, size_t size, const char *path,
                                   const char *what, captcha_error *err)
{
    if (size == 0 || fread(buffer, 1, size, stream) == size)
        return CAPTCHA_OK;
    if (ferror(stream))
        return captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot read the %s: %s", path, what,
                            strerror(errno));
    return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                        "%s: the file ended while reading the %s (was it changed meanwhile?)", path,
                        what);
}

/* Opens path, checks the framing (8-byte header size, header inside the file,
 * header a JSON object) and parses the header. The file stays open: the data
 * section is read tensor by tensor (read_data), once the header has been checked
 * against the network, so that a large file that is no model of ours (another
 * network's weights, trailing data) is refused without reading or holding it. */
static captcha_status model_file_open(const char *path, model_file *file, captcha_error *err)
{
    memset(file, 0, sizeof *file);
    file->path = path;
    if (!path)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "model file path is NULL");

    if (!path[0])
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "model file path is empty (expected a .safetensors file)");
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
     * before the regular-file check below could refuse it */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot open the model file: %s", path,
                            strerror(errno));
    struct stat info;
    const char *problem = fstat(fd, &info) != 0 ? strerror(errno)
                          : !S_ISREG(info.st_mode)
                              ? "is not a regular file (expected a .safetensors file)"
                              : NULL;
    if (problem) {
        captcha_status failed = captcha_fail(err, CAPTCHA_ERROR_IO, "%s: %s", path, problem);
        close(fd);
        return failed;
    }
    FILE *stream = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0 ? fdopen(fd, "rb")
                                                                            : NULL;
    if (!stream) {
        captcha_status failed = captcha_fail(
            err, CAPTCHA_ERROR_IO, "%s: cannot open the model file: %s", path, strerror(errno));
        close(fd);
        return failed;
    }
    captcha_status status = CAPTCHA_OK;
    char *header = NULL;
    file->file_size = (uint64_t)info.st_size;
    file->modified = info.st_mtim;
    if (file->file_size < 8) {
        status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                              "%s: the file is %" PRIu64 " bytes, too short for the 8-byte "
                              "header size of a safetensors file (truncated?)",
                              path, file->file_size);
        goto done;
    }
    unsigned char size_bytes[8];
    status = read_exactly(stream, size_bytes, 8, path, "header size", err);
    if (status != CAPTCHA_OK)
        goto done;
    file->header_size = read_u64_le(size_bytes);
    if (file->header_size > file->file_size - 8) {
        status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                              "%s: header size is %" PRIu64 " bytes, but only %" PRIu64
                              " bytes follow it (truncated or not a safetensors file?)",
                              path, file->header_size, file->file_size - 8);
        goto done;
    }
    if (file->header_size >= MODEL_HEADER_LIMIT) {
        status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                              "%s: header size is %" PRIu64 " bytes, expected less than %u "
                              "(not a model file?)",
                              path, file->header_size, MODEL_HEADER_LIMIT);
        goto done;
    }
    if (file->header_size < 2) {
        status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                              "%s: header size is %" PRIu64 " bytes, too small for a JSON object",
                              path, file->header_size);
        goto done;
    }
    header = malloc((size_t)file->header_size);
    if (!header) {
        status = captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                              "%s: cannot allocate %" PRIu64 " bytes for the header", path,
                              file->header_size);
        goto done;
    }
    status = read_exactly(stream, header, (size_t)file->header_size, path, "header", err);
    if (status != CAPTCHA_OK)
        goto done;

    json_error_t json_error;
    file->root = json_loadb(header, (size_t)file->header_size, JSON_REJECT_DUPLICATES, &json_error);
    if (!file->root) {
        status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                              "%s: the header is not valid JSON: %s (line %d, column %d)", path,
                              json_error.text, json_error.line, json_error.column);
        goto done;
    }
    if (!json_is_object(file->root)) {
        status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                              "%s: the header is a JSON %s, expected an object", path,
                              json_is_array(file->root) ? "array" : "scalar");
        goto done;
    }

    file->data_size = file->file_size - 8 - file->header_size;

done:
    free(header);
    file->stream = stream;
    if (status != CAPTCHA_OK)
        model_file_close(file);
    return status;
}

/* Reads size bytes at offset `begin` of the data section into buffer, for tensor
 * `name` (bounds were checked against data_size by check_entry_bytes). */
static captcha_status read_data(const model_file *file, uint64_t begin, void *buffer, size_t size,
                                const char *name, captcha_error *err)
{
    int fd = fileno(file->stream);
    uint64_t offset = 8 + file->header_size + begin;
    for (size_t done = 0; done < size;) {
        ssize_t got = pread(fd, (char *)buffer + done, size - done, (off_t)(offset + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot read tensor %s: %s",
                                file->path, name, strerror(errno));
        if (got == 0)
            return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                "%s: the file ended while reading tensor %s (was it changed "
                                "meanwhile?)",
                                file->path, name);
        done += (size_t)got;
    }
    return CAPTCHA_OK;
}

/* The tensors are read long after the header (the network is created in between): a
 * file written over in place meanwhile (cp onto it) would give the new bytes at the old
 * header's offsets. Any write since the file was opened changes its size or mtime (not
 * the ctime: that changes too when a rename replaces the file, which leaves the one open
 * here as it was). err is only written when the file changed (or fstat failed). */
static captcha_status model_file_check_unchanged(const model_file *file, captcha_error *err)
{
    struct stat info;
    if (fstat(fileno(file->stream), &info) != 0)
        return captcha_fail(err, CAPTCHA_ERROR_IO, "%s: %s", file->path, strerror(errno));
    if ((uint64_t)info.st_size != file->file_size || info.st_mtim.tv_sec != file->modified.tv_sec ||
        info.st_mtim.tv_nsec != file->modified.tv_nsec)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: the file changed while it was being loaded (written over in "
                            "place?): load it again",
                            file->path);
    return CAPTCHA_OK;
}

/* ---- tensor entries ---- */

typedef struct {
    const char *name;
    const char *dtype;
    size_t dtype_size;
    int ndim;
    int64_t shape[MODEL_MAX_DIMS];
    uint64_t begin, end; /* data_offsets, relative to the data section */
    int table_index;     /* index in the network's tensor table, -1 for num_batches_tracked */
} tensor_entry;

static size_t dtype_size(const char *dtype)
{
    static const struct {
        const char *name;
        size_t size;
    } sizes[] = {{"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
                 {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
                 {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!strcmp(dtype, sizes[i].name))
            return sizes[i].size;
    return 0;
}

/* A non-negative JSON integer, or -1. */
static int64_t json_non_negative(const json_t *value)
{
    if (!json_is_integer(value) || json_integer_value(value) < 0)
        return -1;
    return (int64_t)json_integer_value(value);
}

/* Checks the structure of one entry ("dtype", "shape", "data_offsets"),
 * not yet its place in the data section. */
static captcha_status parse_entry(const model_file *file, const char *name, json_t *value,
                                  tensor_entry *entry, captcha_error *err)
{
    const char *path = file->path;
    memset(entry, 0, sizeof *entry);
    entry->name = name;
    if (!json_is_object(value))
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: tensor %s: the entry is not a JSON object", path, name);

    json_t *dtype = json_object_get(value, "dtype");
    if (!json_is_string(dtype))
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: tensor %s: \"dtype\" is %s", path, name,
                            dtype ? "not a string" : "missing");
    entry->dtype = json_string_value(dtype);
    entry->dtype_size = dtype_size(entry->dtype);
    if (!entry->dtype_size)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: tensor %s: dtype \"%s\" is not a safetensors dtype", path, name,
                            entry->dtype);

    json_t *shape = json_object_get(value, "shape");
    if (!json_is_array(shape))
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: tensor %s: \"shape\" is %s", path, name,
                            shape ? "not an array" : "missing");
    if (json_array_size(shape) > MODEL_MAX_DIMS)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: tensor %s: shape has %zu dimensions, at most %d are supported",
                            path, name, json_array_size(shape), MODEL_MAX_DIMS);
    entry->ndim = (int)json_array_size(shape);
    for (int d = 0; d < entry->ndim; d++) {
        entry->shape[d] = json_non_negative(json_array_get(shape, (size_t)d));
        if (entry->shape[d] < 0)
            return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                "%s: tensor %s: shape element %d is not a non-negative integer",
                                path, name, d);
    }

    json_t *offsets = json_object_get(value, "data_offsets");
    if (!json_is_array(offsets) || json_array_size(offsets) != 2)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: tensor %s: \"data_offsets\" is %s, expected [begin, end]", path,
                            name, offsets ? "malformed" : "missing");
    int64_t begin = json_non_negative(json_array_get(offsets, 0));
    int64_t end = json_non_negative(json_array_get(offsets, 1));
    if (begin < 0 || end < 0)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: tensor %s: data_offsets must be two non-negative integers", path,
                            name);
    entry->begin = (uint64_t)begin;
    entry->end = (uint64_t)end;
    return CAPTCHA_OK;
}

/* Checks an entry's byte range: ordered, inside the data section, and as long
 * as its dtype and shape imply. */
static captcha_status check_entry_bytes(const model_file *file, const tensor_entry *entry,
                                        captcha_error *err)
{
    const char *path = file->path;
    if (entry->begin > entry->end)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64
                            "] has begin after end",
                            path, entry->name, entry->begin, entry->end);
    if (entry->end > file->data_size)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64
                            "] end beyond the data section of %" PRIu64 " bytes (truncated?)",
                            path, entry->name, entry->begin, entry->end, file->data_size);
    uint64_t bytes = entry->dtype_size;
    for (int d = 0; d < entry->ndim; d++)
        if (__builtin_mul_overflow(bytes, (uint64_t)entry->shape[d], &bytes))
            return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: tensor %s: shape is too large",
                                path, entry->name);
    if (entry->end - entry->begin != bytes) {
        char shape[160];
        format_shape(shape, sizeof shape, entry->shape, entry->ndim);
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64
                            " bytes, expected %" PRIu64 " for %s %s",
                            path, entry->name, entry->begin, entry->end, entry->end - entry->begin,
                            bytes, entry->dtype, shape);
    }
    return CAPTCHA_OK;
}

static int compare_begin(const void *a, const void *b)
{
    const tensor_entry *x = *(const tensor_entry *const *)a;
    const tensor_entry *y = *(const tensor_entry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* No two non-empty byte ranges may share a byte, and together they cover the data
 * section without a gap (as the safetensors format requires: its reference reader
 * refuses a file with bytes that belong to no tensor). */
static captcha_status check_overlaps(const model_file *file, tensor_entry *entries, size_t count,
                                     captcha_error *err)
{
    tensor_entry **sorted = malloc((count ? count : 1) * sizeof *sorted);
    if (!sorted)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "%s: out of memory", file->path);
    size_t n = 0;
    for (size_t i = 0; i < count; i++)
        if (entries[i].end > entries[i].begin)
            sorted[n++] = &entries[i];
    qsort(sorted, n, sizeof *sorted, compare_begin);
    captcha_status status = CAPTCHA_OK;
    uint64_t covered = 0; /* bytes [0, covered) belong to the tensors seen so far */
    for (size_t i = 0; i < n && status == CAPTCHA_OK; i++) {
        const tensor_entry *b = sorted[i];
        if (i > 0 && b->begin < sorted[i - 1]->end) {
            const tensor_entry *a = sorted[i - 1];
            status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                  "%s: tensors %s (data_offsets [%" PRIu64 ", %" PRIu64
                                  "]) and %s ([%" PRIu64 ", %" PRIu64 "]) overlap",
                                  file->path, a->name, a->begin, a->end, b->name, b->begin, b->end);
        } else if (b->begin > covered) {
            status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                  "%s: data bytes [%" PRIu64 ", %" PRIu64
                                  ") belong to no tensor (the next, %s, starts at %" PRIu64
                                  "): a safetensors data section has no gaps",
                                  file->path, covered, b->begin, b->name, b->begin);
        }
        covered = b->end;
    }
    if (status == CAPTCHA_OK && covered < file->data_size)
        status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                              "%s: data bytes [%" PRIu64 ", %" PRIu64
                              ") after the last tensor belong to no tensor (trailing data?)",
                              file->path, covered, file->data_size);
    free(sorted);
    return status;
}

/* ---- metadata -> config ---- */

enum {
    KEY_FORMAT,
    KEY_CHARSET,
    KEY_LENGTH,
    KEY_INPUT_HEIGHT,
    KEY_INPUT_WIDTH,
    KEY_CHANNEL_ORDER,
    KEY_MEAN,
    KEY_STD,
    KEY_COUNT
};
static const char *const metadata_keys[KEY_COUNT] = {
    "format", "charset", "length", "input_height", "input_width", "channel_order", "mean", "std",
};

/* A decimal integer 1..9 digits, nothing else (no sign, spaces or suffix). */
static captcha_status parse_int_value(const char *path, const char *key, const char *text, int *out,
                                      captcha_error *err)
{
    size_t n = strlen(text);
    int ok = n >= 1 && n <= 9 && strspn(text, "0123456789") == n;
    if (!ok)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: metadata: %s is \"%s\", expected a decimal integer "
                            "(digits only, at most 9)",
                            path, key, text);
    *out = atoi(text);
    return CAPTCHA_OK;
}

/* A decimal number, the whole string: optional sign, digits with an optional '.'
 * fraction, optional exponent (no hex, inf, nan, spaces or suffix), whose magnitude is
 * 0 (digits all zero) or in [1e-30, 1e30] (anything else, also a value so small that
 * strtod underflows to 0: a typo or corruption; captcha_config_validate then checks
 * the mean and std ranges). */
static captcha_status parse_float_value(const char *path, const char *key, const char *text,
                                        float *out, captcha_error *err)
{
    const char *p = text;
    if (*p == '+' || *p == '-')
        p++;
    size_t digits = strspn(p, "0123456789");
    p += digits;
    if (*p == '.') {
        size_t fraction = strspn(p + 1, "0123456789");
        digits += fraction;
        p += 1 + fraction;
    }
    int ok = digits > 0;
    /* a mantissa with a non-zero digit is no zero, even where strtod underflows to 0 */
    int nonzero = strcspn(text, "123456789") < (size_t)(p - text);
    if (ok && (*p == 'e' || *p == 'E')) {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        size_t exponent = strspn(p, "0123456789");
        ok = exponent > 0;
        p += exponent;
    }
    ok = ok && *p == '\0';
    double value = 0.0;
    if (ok) {
        /* '.' as the decimal point whatever the application's LC_NUMERIC */
        locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
        locale_t previous = c_locale ? uselocale(c_locale) : (locale_t)0;
        value = strtod(text, NULL);
        if (c_locale) {
            uselocale(previous);
            freelocale(c_locale);
        }
        ok = value == 0.0 ? !nonzero : fabs(value) >= 1e-30 && fabs(value) <= 1e30;
    }
    if (!ok)
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: metadata: %s is \"%s\", expected a decimal number (e.g. "
                            "\"0.5\", \"-1.25e-2\"; magnitude 0 or 1e-30..1e30)",
                            path, key, text);
    *out = (float)value;
    return CAPTCHA_OK;
}

/* Fills config from the header's __metadata__ (see model_file.h for the rules
 * when keys are absent) and checks fc_layers.0.weight's shape against it when
 * the entry is well formed. */
static captcha_status config_from_header(const model_file *file, captcha_config *config,
                                         char *notice, size_t notice_size, captcha_error *err)
{
    const char *path = file->path;
    captcha_config_reference(config);
    set_notice(notice, notice_size, "%s", "");

    const char *values[KEY_COUNT] = {0};
    int present = 0;
    json_t *metadata = json_object_get(file->root, METADATA_KEY);
    if (metadata) {
        if (!json_is_object(metadata))
            return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: \"%s\" is not a JSON object", path,
                                METADATA_KEY);
        const char *key;
        json_t *value;
        json_object_foreach(metadata, key, value)
        {
            if (!json_is_string(value))
                return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                    "%s: metadata: %s is not a string (safetensors metadata "
                                    "values are strings)",
                                    path, key);
            for (int k = 0; k < KEY_COUNT; k++)
                if (!strcmp(key, metadata_keys[k]))
                    values[k] = json_string_value(value);
        }
    }
    /* "format" is ours only when it names gst-captcha: other writers use the
     * key too (Hugging Face writes "pt"). */
    if (values[KEY_FORMAT] && strncmp(values[KEY_FORMAT], "gst-captcha/", 12))
        values[KEY_FORMAT] = NULL;
    if (values[KEY_FORMAT] && strcmp(values[KEY_FORMAT], MODEL_FORMAT))
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: metadata: format is \"%s\", expected \"%s\" (a newer "
                            "gst-captcha?)",
                            path, values[KEY_FORMAT], MODEL_FORMAT);
    for (int k = 0; k < KEY_COUNT; k++)
        present += values[k] != NULL;
    if (values[KEY_FORMAT])
        for (int k = 0; k < KEY_COUNT; k++)
            if (!values[k])
                return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                    "%s: metadata: %s is missing (required with format \"%s\")",
                                    path, metadata_keys[k], MODEL_FORMAT);

    captcha_status status;
    if (values[KEY_CHARSET]) {
        status = captcha_config_set_charset(config, values[KEY_CHARSET], err);
        if (status != CAPTCHA_OK) {
            /* status, not the prefix's return: that is CAPTCHA_OK when err is NULL */
            captcha_error_prefix(err, "%s: metadata: ", path);
            return status;
        }
    }
    int *int_fields[KEY_COUNT] = {[KEY_LENGTH] = &config->length,
                                  [KEY_INPUT_HEIGHT] = &config->input_height,
                                  [KEY_INPUT_WIDTH] = &config->input_width};
    float *float_fields[KEY_COUNT] = {[KEY_MEAN] = &config->mean, [KEY_STD] = &config->std};
    for (int k = 0; k < KEY_COUNT; k++) {
        if (!values[k])
            continue;
        if (int_fields[k])
            status = parse_int_value(path, metadata_keys[k], values[k], int_fields[k], err);
        else if (float_fields[k])
            status = parse_float_value(path, metadata_keys[k], values[k], float_fields[k], err);
        else
            status = CAPTCHA_OK;
        if (status != CAPTCHA_OK)
            return status;
    }
    if (values[KEY_CHANNEL_ORDER]) {
        if (strlen(values[KEY_CHANNEL_ORDER]) >= sizeof config->channel_order)
            return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                "%s: metadata: channel_order is \"%s\", expected \"BGR\" or "
                                "\"RGB\"",
                                path, values[KEY_CHANNEL_ORDER]);
        strcpy(config->channel_order, values[KEY_CHANNEL_ORDER]);
    }
    status = captcha_config_validate(config, err);
    if (status != CAPTCHA_OK) {
        captcha_error_prefix(err, "%s: metadata: ", path);
        return status;
    }

    /* What was assumed, for the notice and for the fc_layers.0.weight message. */
    char assumed[CAPTCHA_ERROR_MESSAGE_SIZE];
    if (!present) {
        snprintf(assumed, sizeof assumed,
                 "no gst-captcha metadata: assumed the reference charset %s, length %d, input "
                 "%dx%d (WxH), %s, mean %g, std %g",
                 config->charset, config->length, config->input_width, config->input_height,
                 config->channel_order, config->mean, config->std);
    } else {
        size_t used = (size_t)snprintf(assumed, sizeof assumed, "gst-captcha metadata without");
        const char *sep = " ";
        for (int k = KEY_CHARSET; k < KEY_COUNT && used < sizeof assumed; k++)
            if (!values[k]) {
                used += (size_t)snprintf(assumed + used, sizeof assumed - used, "%s%s", sep,
                                         metadata_keys[k]);
                sep = ", ";
            }
        if (used < sizeof assumed)
            snprintf(assumed + used, sizeof assumed - used,
                     ": assumed the reference values (charset %s, length %d, input %dx%d "
                     "(WxH), %s, mean %g, std %g)",
                     config->charset, config->length, config->input_width, config->input_height,
                     config->channel_order, config->mean, config->std);
    }
    int complete = 1;
    for (int k = KEY_CHARSET; k < KEY_COUNT; k++)
        complete &= values[k] != NULL;

    /* The linear layer's shape follows from the config: a mismatch here means
     * the metadata (or the defaults) do not describe this network. */
    json_t *fc = json_object_get(file->root, "fc_layers.0.weight");
    tensor_entry entry;
    if (fc && parse_entry(file, "fc_layers.0.weight", fc, &entry, NULL) == CAPTCHA_OK &&
        entry.ndim == 2) {
        int64_t expected[2] = {captcha_config_classes(config), captcha_config_flatten_size(config)};
        if (entry.shape[0] != expected[0] || entry.shape[1] != expected[1]) {
            char found_text[64], expected_text[64];
            format_shape(found_text, sizeof found_text, entry.shape, 2);
            format_shape(expected_text, sizeof expected_text, expected, 2);
            return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                "%s: tensor fc_layers.0.weight has shape %s, expected %s "
                                "([length * charset size, 256 * input_height/32 * "
                                "input_width/32]) for %s%s%s",
                                path, found_text, expected_text,
                                complete ? "the file's metadata" : "the assumed config (",
                                complete ? "" : assumed, complete ? "" : ")");
        }
    }
    if (!complete)
        set_notice(notice, notice_size, "%s: %s", path, assumed);
    return CAPTCHA_OK;
}

captcha_status captcha_model_read_config(const char *path, captcha_config *config, char *notice,
                                         size_t notice_size, captcha_error *err)
{
    set_notice(notice, notice_size, "%s", "");
    if (!config)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_model_read_config: config is NULL");
    model_file file;
    captcha_status status = model_file_open(path, &file, err);
    if (status != CAPTCHA_OK)
        return status;
    captcha_config parsed;
    status = config_from_header(&file, &parsed, notice, notice_size, err);
    if (status == CAPTCHA_OK)
        *config = parsed;
    model_file_close(&file);
    return status;
}

/* ---- loading ---- */

/* Whether name is "<batch norm>.num_batches_tracked" for a batch norm of the
 * network (one whose running_mean is in the table). */
static int is_batches_tracked(const captcha_network *network, const char *name)
{
    if (!ends_with(name, BATCHES_TRACKED_SUFFIX))
        return 0;
    size_t prefix = strlen(name) - strlen(BATCHES_TRACKED_SUFFIX);
    char probe[128];
    if (prefix + sizeof ".running_mean" > sizeof probe)
        return 0;
    memcpy(probe, name, prefix);
    strcpy(probe + prefix, ".running_mean");
    return captcha_network_find_tensor(network, probe) >= 0;
}

/* Checks one entry against the tensor table: known name, dtype, shape, bytes. */
static captcha_status check_entry(const model_file *file, const captcha_network *network,
                                  tensor_entry *entry, captcha_error *err)
{
    const char *path = file->path;
    const char *expected_dtype;
    int64_t expected_shape[4] = {0};
    int expected_ndim;
    entry->table_index = captcha_network_find_tensor(network, entry->name);
    if (entry->table_index >= 0) {
        const captcha_tensor_info *info =
            captcha_network_tensor(network, (size_t)entry->table_index);
        expected_dtype = "F32";
        expected_ndim = info->ndim;
        memcpy(expected_shape, info->shape, sizeof expected_shape);
    } else if (is_batches_tracked(network, entry->name)) {
        expected_dtype = "I64";
        expected_ndim = 0;
    } else {
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: unknown tensor %s (not a state_dict() name of the reference "
                            "network)",
                            path, entry->name);
    }
    if (strcmp(entry->dtype, expected_dtype))
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: tensor %s has dtype %s, expected %s",
                            path, entry->name, entry->dtype, expected_dtype);
    int same = entry->ndim == expected_ndim;
    for (int d = 0; same && d < expected_ndim; d++)
        same = entry->shape[d] == expected_shape[d];
    if (!same) {
        char found_text[160], expected_text[80];
        format_shape(found_text, sizeof found_text, entry->shape, entry->ndim);
        format_shape(expected_text, sizeof expected_text, expected_shape, expected_ndim);
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: tensor %s has shape %s, expected %s",
                            path, entry->name, found_text, expected_text);
    }
    return check_entry_bytes(file, entry, err);
}

/* Validates every entry and copies the data into network. */

/* A NaN/Inf weight (a corrupt or diverged file) would make every result
 * garbage; a negative running variance, NaN after the square root. Fails with
 * "tensor NAME: element I is V (expected a finite number[ >= 0])". */
static captcha_status check_values(const char *name, const float *values, size_t n,
                                   captcha_error *err)
{
    int is_variance = strstr(name, "running_var") != NULL;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(values[i]) || (is_variance && values[i] < 0.0f))
            return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                "tensor %s: element %zu is %g (expected a finite number%s)", name,
                                i, (double)values[i], is_variance ? " >= 0" : "");
    return CAPTCHA_OK;
}

static captcha_status load_tensors(const model_file *file, captcha_network *network,
                                   captcha_error *err)
{
    const char *path = file->path;
    size_t table_count = captcha_network_tensor_count(network);
    size_t entry_capacity = json_object_size(file->root);
    tensor_entry *entries = calloc(entry_capacity ? entry_capacity : 1, sizeof *entries);
    unsigned char *seen = calloc(table_count ? table_count : 1, 1);
    float *host = NULL;
    captcha_status status = CAPTCHA_OK;
    if (!entries || !seen) {
        status = captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
        goto done;
    }

    size_t count = 0;
    const char *name;
    json_t *value;
    json_object_foreach(file->root, name, value)
    {
        if (!strcmp(name, METADATA_KEY))
            continue;
        tensor_entry *entry = &entries[count];
        status = parse_entry(file, name, value, entry, err);
        if (status == CAPTCHA_OK)
            status = check_entry(file, network, entry, err);
        if (status != CAPTCHA_OK)
            goto done;
        if (entry->table_index >= 0)
            seen[entry->table_index] = 1;
        count++;
    }
    for (size_t i = 0; i < table_count; i++)
        if (!seen[i]) {
            const captcha_tensor_info *info = captcha_network_tensor(network, i);
            char shape[80];
            format_shape(shape, sizeof shape, info->shape, info->ndim);
            status = captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: tensor %s (F32 %s) is missing",
                                  path, info->name, shape);
            goto done;
        }
    status = check_overlaps(file, entries, count, err);
    if (status != CAPTCHA_OK)
        goto done;

    size_t largest = 1;
    for (size_t i = 0; i < table_count; i++)
        if (captcha_network_tensor(network, i)->count > largest)
            largest = captcha_network_tensor(network, i)->count;
    host = malloc(largest * sizeof *host);
    if (!host) {
        status = captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
        goto done;
    }
    int have_batches_tracked = 0;
    int64_t batches_tracked = 0;
    for (size_t i = 0; i < count; i++) {
        const tensor_entry *entry = &entries[i];
        if (entry->table_index < 0) {
            int64_t v;
            if ((status = read_data(file, entry->begin, &v, sizeof v, entry->name, err)))
                goto done;
            if (host_is_big_endian())
                swap_bytes(&v, 1, sizeof v);
            if (v < 0) {
                status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                      "%s: tensor %s is %" PRId64 ", expected a count >= 0", path,
                                      entry->name, v);
                goto done;
            }
            /* PyTorch counts per layer; ours is one count for the network:
             * take the largest. */
            if (!have_batches_tracked || v > batches_tracked)
                batches_tracked = v;
            have_batches_tracked = 1;
            continue;
        }
        size_t n = (size_t)(entry->end - entry->begin) / sizeof(float);
        if ((status = read_data(file, entry->begin, host, n * sizeof(float), entry->name, err)))
            goto done;
        if (host_is_big_endian())
            swap_bytes(host, n, sizeof(float));
        if ((status = check_values(entry->name, host, n, err)) != CAPTCHA_OK) {
            captcha_error_prefix(err, "%s: ", path);
            goto done;
        }
        status = captcha_network_write_tensor(network, (size_t)entry->table_index, host, err);
        if (status != CAPTCHA_OK) {
            captcha_error_prefix(err, "%s: tensor %s: ", path, entry->name);
            goto done;
        }
    }
    if (have_batches_tracked)
        captcha_network_set_batches_tracked(network, batches_tracked);

done:
    free(host);
    free(seen);
    free(entries);
    return status;
}

/* A tensor stored in another float type than F32 (a PyTorch model saved after .half(),
 * say) is named before the data section's size is checked: half-size tensors would
 * otherwise read as a truncated file. Only the "dtype" fields are looked at here;
 * load_tensors checks every entry in full. */
static captcha_status check_float_dtypes(const model_file *file, captcha_error *err)
{
    const char *name;
    json_t *value;
    json_object_foreach(file->root, name, value)
    {
        const char *dtype = json_string_value(json_object_get(value, "dtype"));
        /* a dtype safetensors lacks ("F33") is parse_entry's to name, not a float model */
        if (!strcmp(name, METADATA_KEY) || !dtype || !strcmp(dtype, "F32") ||
            !dtype_size(dtype) || strstr(name, "num_batches_tracked"))
            continue;
        if (dtype[0] == 'F' || !strcmp(dtype, "BF16"))
            return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                "%s: tensor %s has dtype %s, expected F32 (models are read in "
                                "float32: save the state_dict() after .float())",
                                file->path, name, dtype);
    }
    return CAPTCHA_OK;
}

captcha_status captcha_model_load(const char *path, captcha_backend *backend, captcha_network **out,
                                  char *notice, size_t notice_size, captcha_error *err)
{
    set_notice(notice, notice_size, "%s", "");
    if (!out)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT, "captcha_model_load: out is NULL");
    *out = NULL;
    if (!backend)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_model_load: backend is NULL");
    model_file file;
    captcha_status status = model_file_open(path, &file, err);
    if (status != CAPTCHA_OK)
        return status;
    captcha_config config;
    captcha_network *network = NULL;
    status = config_from_header(&file, &config, notice, notice_size, err);
    if (status == CAPTCHA_OK)
        status = check_float_dtypes(&file, err);
    if (status == CAPTCHA_OK) {
        /* Before anything is allocated for the network (its parameters, gradients and
         * Adam moments, ~5x its tensors): a header naming a large geometry over a data
         * section too small for it is refused here, not after gigabytes were taken. */
        uint64_t needed = (uint64_t)captcha_network_tensor_floats(&config) * sizeof(float);
        if (file.data_size < needed)
            status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                  "%s: the data section is %" PRIu64 " bytes, but a model of "
                                  "input %dx%d, %d characters of %zu classes needs %" PRIu64
                                  " bytes of F32 tensors (truncated, or metadata that does not "
                                  "match the tensors?)",
                                  path, file.data_size, config.input_width, config.input_height,
                                  config.length, strlen(config.charset), needed);
    }
    if (status == CAPTCHA_OK) {
        status = captcha_network_create(backend, &config, 0, &network, err);
        if (status != CAPTCHA_OK)
            captcha_error_prefix(err, "%s: ", path);
    }
    if (status == CAPTCHA_OK) {
        status = load_tensors(&file, network, err);
        /* also after a tensor was refused: its values may have been the new file's */
        captcha_status changed = model_file_check_unchanged(&file, err);
        if (changed != CAPTCHA_OK)
            status = changed;
    }
    model_file_close(&file);
    if (status != CAPTCHA_OK) {
        captcha_network_destroy(network);
        set_notice(notice, notice_size, "%s", "");
        return status;
    }
    *out = network;
    return CAPTCHA_OK;
}

/* ---- saving ---- */

/* Adds root[name] = {"dtype", "shape" (reference stolen), "data_offsets":
 * [*offset, *offset + bytes]} and advances *offset. 0 on success. */
static int add_entry(json_t *root, const char *name, const char *dtype, json_t *shape,
                     uint64_t *offset, uint64_t bytes)
{
    json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", dtype, "shape", shape,
                              "data_offsets", (json_int_t)*offset, (json_int_t)(*offset + bytes));
    *offset += bytes;
    return entry ? json_object_set_new(root, name, entry) : -1;
}

/* The header object: __metadata__, then every tensor in state_dict() order
 * (num_batches_tracked after each batch norm's running_var), data_offsets
 * in that order without gaps. */
static captcha_status build_header(captcha_network *network, const char *const *extra_metadata,
                                   const char *path, json_t **out, captcha_error *err)
{
    const captcha_config *config = captcha_network_config(network);
    char length[16], height[16], width[16], mean[32], std[32];
    snprintf(length, sizeof length, "%d", config->length);
    snprintf(height, sizeof height, "%d", config->input_height);
    snprintf(width, sizeof width, "%d", config->input_width);
    /* 9 digits: the float exactly; '.' whatever the application's LC_NUMERIC */
    locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    locale_t previous = c_locale ? uselocale(c_locale) : (locale_t)0;
    snprintf(mean, sizeof mean, "%.9g", config->mean);
    snprintf(std, sizeof std, "%.9g", config->std);
    if (c_locale) {
        uselocale(previous);
        freelocale(c_locale);
    }
    json_t *root = json_object();
    json_t *metadata =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "format", MODEL_FORMAT, "charset",
                  config->charset, "length", length, "input_height", height, "input_width", width,
                  "channel_order", config->channel_order, "mean", mean, "std", std);
    int failed = !root || !metadata;
    for (size_t i = 0; !failed && extra_metadata && extra_metadata[i]; i += 2) {
        const char *key = extra_metadata[i], *value = extra_metadata[i + 1];
        const char *problem = !value                           ? "has no value"
                              : json_object_get(metadata, key) ? "is one of ours or repeated"
                                                               : NULL;
        if (!problem && json_object_set_new(metadata, key, json_string(value)) != 0)
            problem = "or its value is not UTF-8 text";
        if (problem) {
            json_decref(root);
            json_decref(metadata);
            return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                                "%s: extra metadata key \"%s\" %s", path, key, problem);
        }
    }
    if (!failed)
        failed |= json_object_set_new(root, METADATA_KEY, metadata);
    else
        json_decref(metadata);

    uint64_t offset = 0;
    size_t count = captcha_network_tensor_count(network);
    for (size_t i = 0; !failed && i < count; i++) {
        const captcha_tensor_info *info = captcha_network_tensor(network, i);
        json_t *shape = json_array();
        for (int d = 0; d < info->ndim; d++)
            json_array_append_new(shape, json_integer(info->shape[d]));
        failed |= add_entry(root, info->name, "F32", shape, &offset, info->count * sizeof(float));
        if (ends_with(info->name, ".running_var")) {
            char name[sizeof info->name + 32];
            snprintf(name, sizeof name, "%.*s%s",
                     (int)(strlen(info->name) - strlen(".running_var")), info->name,
                     BATCHES_TRACKED_SUFFIX);
            failed |= add_entry(root, name, "I64", json_array(), &offset, sizeof(int64_t));
        }
    }
    if (failed) {
        json_decref(root);
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "%s: out of memory building the header", path);
    }
    *out = root;
    return CAPTCHA_OK;
}

FILE *captcha_file_create_temporary(const char *tmp_path, const char *path, captcha_error *err)
{
    struct stat st;
    int fd = -1;
    /* a leftover (or planted) file or link: unlinked, not followed; a directory stays */
    if (lstat(tmp_path, &st) == 0 && S_ISDIR(st.st_mode))
        errno = EISDIR;
    else {
        (void)unlink(tmp_path);
        fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    }
    FILE *stream = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!stream) {
        captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot create %s: %s", path, tmp_path,
                     strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    return stream;
}

/* Writes the file's bytes to stream (the open path + ".tmp") and flushes them
 * to the disk. */
static captcha_status write_stream(FILE *stream, captcha_network *network, const char *header,
                                   size_t header_size, float *host, const char *path,
                                   const char *tmp_path, captcha_error *err)
{
    unsigned char size_bytes[8];
    write_u64_le(size_bytes, header_size);
    if (fwrite(size_bytes, 1, 8, stream) != 8 ||
        fwrite(header, 1, header_size, stream) != header_size)
        goto io_error;
    int64_t batches_tracked = captcha_network_batches_tracked(network);
    if (host_is_big_endian())
        swap_bytes(&batches_tracked, 1, sizeof batches_tracked);
    size_t count = captcha_network_tensor_count(network);
    for (size_t i = 0; i < count; i++) {
        const captcha_tensor_info *info = captcha_network_tensor(network, i);
        /* the status, not the prefix's return: that is CAPTCHA_OK when err is NULL, which
         * would rename a partial file over path */
        captcha_status status = captcha_network_read_tensor(network, i, host, err);
        if (status != CAPTCHA_OK) {
            captcha_error_prefix(err, "%s: cannot read tensor %s from the network: ", path,
                                 info->name);
            return status;
        }
        /* never write a file captcha_model_load would refuse */
        status = check_values(info->name, host, info->count, err);
        if (status != CAPTCHA_OK) {
            captcha_error_prefix(err, "%s: not written: ", path);
            return status;
        }
        if (host_is_big_endian())
            swap_bytes(host, info->count, sizeof(float));
        if (fwrite(host, sizeof(float), info->count, stream) != info->count)
            goto io_error;
        if (ends_with(info->name, ".running_var") &&
            fwrite(&batches_tracked, sizeof batches_tracked, 1, stream) != 1)
            goto io_error;
    }
    if (fflush(stream) != 0 || fsync(fileno(stream)) != 0)
        goto io_error;
    return CAPTCHA_OK;
io_error:
    return captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot write %s: %s", path, tmp_path,
                        strerror(errno));
}

captcha_status captcha_model_check_values(captcha_network *network, captcha_error *err)
{
    if (!network)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_model_check_values: network is NULL");
    size_t count = captcha_network_tensor_count(network), largest = 1;
    for (size_t i = 0; i < count; i++)
        if (captcha_network_tensor(network, i)->count > largest)
            largest = captcha_network_tensor(network, i)->count;
    float *host = malloc(largest * sizeof *host);
    if (!host)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "captcha_model_check_values: out of memory");
    captcha_status status = CAPTCHA_OK;
    for (size_t i = 0; i < count && status == CAPTCHA_OK; i++) {
        const captcha_tensor_info *info = captcha_network_tensor(network, i);
        status = captcha_network_read_tensor(network, i, host, err);
        if (status == CAPTCHA_OK)
            status = check_values(info->name, host, info->count, err);
    }
    free(host);
    return status;
}

captcha_status captcha_model_save(captcha_network *network, const char *path,
                                  const char *const *extra_metadata, captcha_error *err)
{
    if (!network || !path || !*path)
        return captcha_fail(err, CAPTCHA_ERROR_INVALID_ARGUMENT,
                            "captcha_model_save: %s", !network ? "network is NULL"
                                                      : !path  ? "path is NULL"
                                                               : "path is empty");
    json_t *root = NULL;
    captcha_status status = build_header(network, extra_metadata, path, &root, err);
    if (status != CAPTCHA_OK)
        return status;

    char *dumped = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    size_t largest = 1;
    for (size_t i = 0; i < captcha_network_tensor_count(network); i++)
        if (captcha_network_tensor(network, i)->count > largest)
            largest = captcha_network_tensor(network, i)->count;
    size_t dumped_size = dumped ? strlen(dumped) : 0;
    size_t header_size = (dumped_size + 7) / 8 * 8; /* so the data starts 8-byte aligned */
    char *tmp_path = malloc(strlen(path) + sizeof ".tmp");
    char *header = malloc(header_size ? header_size : 1);
    float *host = malloc(largest * sizeof *host);
    if (!dumped || !tmp_path || !header || !host) {
        status = captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "%s: out of memory saving", path);
        goto done;
    }
    memcpy(header, dumped, dumped_size);
    memset(header + dumped_size, ' ', header_size - dumped_size);
    sprintf(tmp_path, "%s.tmp", path);

    FILE *stream = captcha_file_create_temporary(tmp_path, path, err);
    if (!stream) {
        status = CAPTCHA_ERROR_IO;
        goto done;
    }
    status = write_stream(stream, network, header, header_size, host, path, tmp_path, err);
    if (fclose(stream) != 0 && status == CAPTCHA_OK)
        status = captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot write %s: %s", path, tmp_path,
                              strerror(errno));
    if (status == CAPTCHA_OK && rename(tmp_path, path) != 0)
        status = captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot rename %s over it: %s", path,
                              tmp_path, strerror(errno));
    if (status != CAPTCHA_OK)
        remove(tmp_path); /* ours: created above; path itself is untouched */

done:
    free(dumped);
    free(header);
    free(host);
    free(tmp_path);
    return status;
}
