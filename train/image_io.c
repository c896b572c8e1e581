/* Image files for the command-line tools (see image_io.h). Decoding: stb_image
 * (Debian libstb-dev), from the file's bytes so the content decides the
 * format, not the extension. */
#include "image_io.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jerror.h>
#include <libexif/exif-data.h>
#include <jpeglib.h>
#include <setjmp.h>
#include <stb/stb_image.h>

#include "tool_util.h"

static captcha_status read_whole_file(const char *path, uint8_t **data, size_t *size,
                                      captcha_error *err)
{
    *data = NULL;
    *size = 0;
    char reason[128];
    FILE *stream = captcha_tool_open_regular(path, reason, sizeof reason);
    if (!stream)
        return captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot open: %s", path, reason);
    size_t capacity = 1 << 16, used = 0;
    uint8_t *buffer = malloc(capacity);
    while (buffer) {
        used += fread(buffer + used, 1, capacity - used, stream);
        if (used < capacity)
            break;
        uint8_t *grown = realloc(buffer, capacity * 2);
        if (!grown) {
            free(buffer);
            buffer = NULL;
            break;
        }
        buffer = grown;
        capacity *= 2;
    }
    int failed = ferror(stream);
    int saved_errno = errno;
    fclose(stream);
    if (!buffer)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "%s: out of memory reading it", path);
    if (failed) {
        free(buffer);
        return captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot read: %s", path,
                            strerror(saved_errno));
    }
    *data = buffer;
    *size = used;
    return CAPTCHA_OK;
}

/* Width and height from an image's header: stb_image's own parser, or for a
 * PNG (whose header parser refuses sizes above stb's limit) the IHDR chunk.
 * 0 when neither gives them. */
static int header_size(const uint8_t *data, size_t size, int *width, int *height)
{
    int channels;
    if (stbi_info_from_memory(data, (int)size, width, height, &channels)) {
        /* a top-down BMP stores its height negated, and stb_image's info passes it on as
         * stored (its decoder takes the magnitude) */
        if (*height < 0 && *height > INT32_MIN)
            *height = -*height;
        return *width > 0 && *height > 0;
    }
    static const uint8_t png_start[16] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                                          0,    0,   0,   13,  'I',  'H',  'D',  'R'};
    if (size < 24 || memcmp(data, png_start, sizeof png_start))
        return 0;
    uint32_t w =
        (uint32_t)data[16] << 24 | (uint32_t)data[17] << 16 | (uint32_t)data[18] << 8 | data[19];
    uint32_t h =
        (uint32_t)data[20] << 24 | (uint32_t)data[21] << 16 | (uint32_t)data[22] << 8 | data[23];
    if (w > INT32_MAX || h > INT32_MAX)
        return 0;
    *width = (int)w;
    *height = (int)h;
    return 1;
}

/* Why a file stb_image would decode is refused, or NULL. */
static const char *refused_format(const uint8_t *data, size_t size)
{
    /* stb tone-maps HDR to 8 bits (gamma 2.2) where imread scales it linearly, and loops
     * forever on a truncated file */
    if (stbi_is_hdr_from_memory(data, (int)size))
        return "a Radiance HDR image, not read (convert it to PNG)";
    /* stb_image 2.27 reads a 16-bit sample's two bytes in the host's order (byte-swapped
     * here), not the file's big-endian one */
    if (size > 2 && data[0] == 'P' && (data[1] == '5' || data[1] == '6') &&
        stbi_is_16_bit_from_memory(data, (int)size))
        return "a 16-bit PGM/PPM (maxval above 255), not read (convert it to PNG)";
    /* formats stb_image does not read ("unknown image type"), named */
    if (size >= 4 && (!memcmp(data, "II*\0", 4) || !memcmp(data, "MM\0*", 4)))
        return "a TIFF image, not read (convert it to PNG)";
    if (size >= 12 && !memcmp(data, "RIFF", 4) && !memcmp(data + 8, "WEBP", 4))
        return "a WebP image, not read (convert it to PNG)";
    return NULL;
}

/* The file's bytes for stb_image, through callbacks, to learn whether its decoder wanted
 * bytes past the end: for a truncated BMP, PNM, TGA, PSD or GIF stb 2.27 returns an image
 * anyway, the missing part zeros or (PNM, TGA) uninitialized memory. */
typedef struct {
    const uint8_t *data;
    size_t size, position;
    const char *buffer; /* stb's read-ahead buffer: the target of its first read */
    int past_end;
} byte_reader;

static int reader_read(void *user, char *out, int n)
{
    byte_reader *reader = user;
    if (!reader->buffer)
        reader->buffer = out;
    size_t left = reader->size - reader->position, wanted = n > 0 ? (size_t)n : 0;
    size_t count = wanted < left ? wanted : left;
    /* stb refills its buffer when a decoder wants the next byte, so a short refill at the
     * end loses nothing; an empty one, or any other short read, is data the file lacks */
    if (wanted && (left == 0 || (count < wanted && out != reader->buffer)))
        reader->past_end = 1;
    memcpy(out, reader->data + reader->position, count);
    reader->position += count;
    return (int)count;
}

static void reader_skip(void *user, int n)
{
    byte_reader *reader = user;
    if (n <= 0) /* stb never asks to go back ("unget" in its interface) */
        return;
    if ((size_t)n > reader->size - reader->position) {
        reader->past_end = 1;
        reader->position = reader->size;
    } else
        reader->position += (size_t)n;
}

static int reader_eof(void *user)
{
    byte_reader *reader = user;
    return reader->position >= reader->size;
}

/* stb decodes up to 2^24 pixels a side, the preprocessing takes at most 65536: refused
 * here, a training run would otherwise stop at the first batch holding the image. Frees
 * the image on failure. */
static captcha_status check_image_size(const char *path, captcha_rgb_image *image,
                                       captcha_error *err)
{
    captcha_image view = captcha_rgb_image_view(image);
    if (captcha_image_validate(&view, err) != CAPTCHA_OK) {
        captcha_rgb_image_free(image);
        memset(image, 0, sizeof *image);
        captcha_error_prefix(err, "%s: ", path);
        return CAPTCHA_ERROR_FORMAT;
    }
    return CAPTCHA_OK;
}

static int is_jpeg(const uint8_t *data, size_t size)
{
    return size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff;
}

/* libjpeg's error manager: an error, or a file that ends before its pixels do (libjpeg
 * warns, then fills the rest grey, as cv2.imread accepts), leaves through the jump. Other
 * warnings (corrupt data it can step over) are accepted, as imread accepts them. */
typedef struct {
    struct jpeg_error_mgr manager;
    jmp_buf jump;
    int truncated, too_many_scans;
} jpeg_errors;

/* Each scan of a progressive JPEG goes over the whole image, and libjpeg accepts a scan
 * repeated (it warns): a 360 KB 8192x8192 file of 1000 scans took 43 s, imread as long.
 * Refused past this many (about 4 s there), as libjpeg-turbo's djpeg -maxscans refuses;
 * an encoder writes about 10. */
#define MAX_JPEG_SCANS 100

static void jpeg_progress(j_common_ptr info)
{
    jpeg_errors *errors = (jpeg_errors *)info->err;
    if (((j_decompress_ptr)info)->input_scan_number > MAX_JPEG_SCANS) {
        errors->too_many_scans = 1;
        longjmp(errors->jump, 1);
    }
}

static void jpeg_error_exit(j_common_ptr info)
{
    longjmp(((jpeg_errors *)info->err)->jump, 1);
}

static void jpeg_emit_message(j_common_ptr info, int level)
{
    jpeg_errors *errors = (jpeg_errors *)info->err;
    if (level < 0 && info->err->msg_code == JWRN_JPEG_EOF) {
        errors->truncated = 1;
        longjmp(errors->jump, 1);
    }
}

/* Decodes a JPEG with libjpeg(-turbo) as OpenCV's imread does (its JPEG codec in 4.6):
 * default decompression (integer slow IDCT, fancy upsampling), output RGB, except a
 * 4-component (CMYK or YCCK) file, decoded to CMYK and converted as imread converts
 * Adobe's inverted CMYK: channel = K - (255 - C) * K / 256 (integer, shifted). The same
 * library and settings give the same pixels, where stb_image differs by a few levels and
 * by over 100 in the last column of a 4:2:2 file. */
static captcha_status decode_jpeg(const char *path, const uint8_t *data, size_t size,
                                  captcha_rgb_image *image, captcha_error *err)
{
    struct jpeg_decompress_struct info;
    jpeg_errors errors;
    struct jpeg_progress_mgr progress = {.progress_monitor = jpeg_progress};
    uint8_t *volatile rgb = NULL;
    uint8_t *volatile cmyk_row = NULL;
    info.err = jpeg_std_error(&errors.manager);
    errors.manager.error_exit = jpeg_error_exit;
    errors.manager.emit_message = jpeg_emit_message;
    errors.truncated = 0;
    errors.too_many_scans = 0;
    jpeg_create_decompress(&info);
    info.progress = &progress;
    if (setjmp(errors.jump)) {
        char reason[JMSG_LENGTH_MAX];
        if (errors.truncated)
            /* also a file whose last scan is whole and only its end marker missing: libjpeg
             * cannot tell it from a cut inside a scan (both end in a fake EOI) */
            snprintf(reason, sizeof reason,
                     "truncated (the file ends before its end-of-image marker)");
        else if (errors.too_many_scans)
            snprintf(reason, sizeof reason,
                     "more than %d scans (each goes over the whole image; an encoder writes "
                     "about 10)",
                     MAX_JPEG_SCANS);
        else
            info.err->format_message((j_common_ptr)&info, reason);
        jpeg_destroy_decompress(&info);
        free(rgb);
        free(cmyk_row);
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: cannot decode: %s", path, reason);
    }
    jpeg_mem_src(&info, data, (unsigned long)size);
    jpeg_read_header(&info, TRUE);
    uint64_t pixels = (uint64_t)info.image_width * info.image_height;
    if (pixels > CAPTCHA_TOOL_MAX_PIXELS) {
        jpeg_destroy_decompress(&info);
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: too large: %ux%u pixels (the tools decode at most %d pixels, "
                            "2^26)",
                            path, info.image_width, info.image_height, CAPTCHA_TOOL_MAX_PIXELS);
    }
    int cmyk = info.num_components == 4;
    info.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&info);
    size_t width = info.output_width, row_bytes = 3 * width;
    rgb = malloc(row_bytes * info.output_height);
    if (cmyk)
        cmyk_row = malloc(4 * width);
    if (!rgb || (cmyk && !cmyk_row)) {
        jpeg_destroy_decompress(&info);
        free(rgb);
        free(cmyk_row);
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "%s: out of memory decoding it",
                            path);
    }
    while (info.output_scanline < info.output_height) {
        uint8_t *out = rgb + (size_t)info.output_scanline * row_bytes;
        JSAMPROW row = cmyk ? cmyk_row : out;
        jpeg_read_scanlines(&info, &row, 1);
        for (size_t x = 0; cmyk && x < width; x++) {
            const uint8_t *p = cmyk_row + 4 * x;
            int k = p[3];
            for (int c = 0; c < 3; c++)
                out[3 * x + c] = (uint8_t)(k - (((255 - p[c]) * k) >> 8));
        }
    }
    jpeg_finish_decompress(&info);
    image->width = (int)info.output_width;
    image->height = (int)info.output_height;
    jpeg_destroy_decompress(&info);
    free(cmyk_row);
    image->rgb = rgb;
    return CAPTCHA_OK;
}

/* Where imread finds a JPEG's EXIF data: the first APP1 segment before the first scan (as
 * libjpeg's marker reader saves it), whatever it holds, its TIFF data 6 bytes in (after
 * "Exif\0\0"). Not libexif's own search, which gives up at the first marker other than
 * APPn (a COM or DQT before the APP1) and passes over an APP1 of XMP to a later one.
 * *tiff NULL when there is none. */
static void jpeg_exif_segment(const uint8_t *data, size_t size, const uint8_t **tiff,
                              size_t *tiff_size)
{
    *tiff = NULL;
    for (size_t at = 2; at + 4 <= size;) {
        /* data libjpeg skips (FF 00 included), fill bytes */
        if (data[at] != 0xff || data[at + 1] == 0xff || data[at + 1] == 0) {
            at++;
            continue;
        }
        uint8_t marker = data[at + 1];
        if (marker == 0xda || marker == 0xd9) /* SOS, EOI */
            return;
        if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) { /* TEM, RSTn: no length */
            at += 2;
            continue;
        }
        size_t length = (size_t)data[at + 2] << 8 | data[at + 3];
        if (length < 2 || length > size - at - 2)
            return;
        if (marker == 0xe1) {
            if (length - 2 > 6) {
                *tiff = data + at + 4 + 6;
                *tiff_size = length - 2 - 6;
            }
            return;
        }
        at += 2 + length;
    }
}

/* The EXIF orientation (1..8, TIFF tag 0x0112 of IFD0) of a JPEG (its first APP1 segment)
 * or a PNG (its eXIf chunk), read with libexif; 1 (as stored) when there is none or it
 * cannot be read. These are the formats whose orientation OpenCV 4.6's imread applies. */
static int exif_orientation(const uint8_t *data, size_t size)
{
    static const uint8_t png_start[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    static const uint8_t exif_header[6] = {'E', 'x', 'i', 'f', 0, 0};
    const uint8_t *tiff = NULL; /* TIFF data, to load after libexif's header */
    size_t tiff_size = 0;
    if (is_jpeg(data, size))
        jpeg_exif_segment(data, size, &tiff, &tiff_size);
    else if (size >= 8 && !memcmp(data, png_start, 8)) {
        for (size_t at = 8; at + 12 <= size;) {
            uint32_t length = (uint32_t)data[at] << 24 | (uint32_t)data[at + 1] << 16 |
                              (uint32_t)data[at + 2] << 8 | data[at + 3];
            if (length > size - at - 12)
                break;
            if (!memcmp(data + at + 4, "eXIf", 4)) {
                tiff = data + at + 8;
                tiff_size = length;
                break;
            }
            if (!memcmp(data + at + 4, "IEND", 4))
                break;
            at += 12 + (size_t)length;
        }
    }
    uint8_t *copy = tiff ? malloc(sizeof exif_header + tiff_size) : NULL;
    size_t exif_size = sizeof exif_header + tiff_size;
    if (copy) {
        memcpy(copy, exif_header, sizeof exif_header);
        memcpy(copy + sizeof exif_header, tiff, tiff_size);
    }
    int orientation = 1;
    ExifData *exif = copy && exif_size <= UINT32_MAX ? exif_data_new() : NULL;
    if (exif) {
        /* as found: no entries added or fixed to follow the specification */
        exif_data_unset_option(exif, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
        exif_data_load_data(exif, copy, (unsigned int)exif_size);
        ExifEntry *entry = exif_content_get_entry(exif->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
        if (entry && entry->format == EXIF_FORMAT_SHORT && entry->components >= 1 && entry->data &&
            entry->size >= 2) {
            int value = exif_get_short(entry->data, exif_data_get_byte_order(exif));
            if (value >= 1 && value <= 8)
                orientation = value;
        }
        exif_data_unref(exif);
    }
    free(copy);
    return orientation;
}

/* Turns image upright by its EXIF orientation, as imread does (2: mirrored left-right;
 * 3: turned 180 degrees; 4: mirrored top-bottom; 5: transposed; 6: turned 90 degrees
 * clockwise; 7: transposed and turned 180 degrees; 8: turned 90 degrees anticlockwise).
 * Out of memory leaves it as stored and returns nonzero. */
static int apply_orientation(captcha_rgb_image *image, int orientation)
{
    if (orientation <= 1)
        return 0;
    size_t w = (size_t)image->width, h = (size_t)image->height;
    uint8_t *out = malloc(3 * w * h);
    if (!out)
        return -1;
    int transposed = orientation >= 5;
    size_t out_w = transposed ? h : w, out_h = transposed ? w : h;
    for (size_t y = 0; y < out_h; y++)
        for (size_t x = 0; x < out_w; x++) {
            size_t sx, sy; /* the stored pixel shown at x, y */
            switch (orientation) {
            case 2: sx = w - 1 - x, sy = y; break;
            case 3: sx = w - 1 - x, sy = h - 1 - y; break;
            case 4: sx = x, sy = h - 1 - y; break;
            case 5: sx = y, sy = x; break;
            case 6: sx = y, sy = h - 1 - x; break;
            case 7: sx = w - 1 - y, sy = h - 1 - x; break;
            default: sx = w - 1 - y, sy = x; break; /* 8 */
            }
            memcpy(out + 3 * (y * out_w + x), image->rgb + 3 * (sy * w + sx), 3);
        }
    free(image->rgb);
    image->rgb = out;
    image->width = (int)out_w;
    image->height = (int)out_h;
    return 0;
}

/* Turns image upright, then checks its size (check_image_size). Frees it on failure. */
static captcha_status finish_image(const char *path, captcha_rgb_image *image, int orientation,
                                   captcha_error *err)
{
    if (apply_orientation(image, orientation)) {
        captcha_rgb_image_free(image);
        memset(image, 0, sizeof *image);
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY,
                            "%s: out of memory turning it upright (EXIF orientation %d)", path,
                            orientation);
    }
    return check_image_size(path, image, err);
}

captcha_status captcha_rgb_image_read(const char *path, captcha_rgb_image *image,
                                      captcha_error *err)
{
    memset(image, 0, sizeof *image);
    uint8_t *data;
    size_t size;
    captcha_status status = read_whole_file(path, &data, &size, err);
    if (status != CAPTCHA_OK)
        return status;
    if (size == 0) {
        free(data);
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: empty file, not an image", path);
    }
    if (size > (size_t)INT32_MAX) {
        free(data);
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: %zu bytes, too large for an image",
                            path, size);
    }
    const char *refused = refused_format(data, size);
    if (refused) {
        free(data);
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: cannot decode: %s", path, refused);
    }
    int width, height, channels;
    /* The header's size is checked before decoding: a 1 KB JPEG can claim 18000x18000 and
     * stb_image would allocate and fill about 1 GB for it. */
    int header_read = header_size(data, size, &width, &height);
    if (header_read && (uint64_t)width * (uint64_t)height > CAPTCHA_TOOL_MAX_PIXELS) {
        free(data);
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: too large: %dx%d pixels (the tools decode at most %d pixels, "
                            "2^26)",
                            path, width, height, CAPTCHA_TOOL_MAX_PIXELS);
    }
    int orientation = exif_orientation(data, size);
    if (is_jpeg(data, size)) {
        status = decode_jpeg(path, data, size, image, err);
        free(data);
        if (status != CAPTCHA_OK)
            return status;
        return finish_image(path, image, orientation, err);
    }
    /* req_comp 3: stb converts grey to RGB and drops alpha (no compositing). */
    static const stbi_io_callbacks callbacks = {reader_read, reader_skip, reader_eof};
    byte_reader reader = {data, size, 0, NULL, 0};
    uint8_t *rgb = stbi_load_from_callbacks(&callbacks, &reader, &width, &height, &channels, 3);
    /* an image stb_image returned from bytes the file lacks, or one whose header was read and
     * whose decoder then ran out of bytes (stb_image's reason for a cut PNG: "outofdata") */
    if (reader.past_end && (rgb || header_read)) {
        stbi_image_free(rgb);
        free(data);
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                            "%s: cannot decode: truncated (the file ends before its pixels do)",
                            path);
    }
    if (!rgb) {
        const char *reason = stbi_failure_reason();
        captcha_status status;
        if (reason && !strcmp(reason, "too large") && header_size(data, size, &width, &height))
            status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                  "%s: cannot decode: too large: %dx%d pixels (stb_image decodes "
                                  "at most 16777216 pixels a side and about 2^30 bytes of pixels)",
                                  path, width, height);
        else
            /* stb names an unknown PNG chunk's type in its reason ("XXXX PNG chunk not
             * known"), cut short at a 0 byte in the type: "" to "XXX", no reason */
            status = captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: cannot decode: %s", path,
                                  reason && strlen(reason) >= 4 ? reason : "unknown reason");
        free(data);
        return status;
    }
    free(data);
    image->width = width;
    image->height = height;
    image->rgb = rgb;
    return finish_image(path, image, orientation, err);
}

void captcha_rgb_image_free(captcha_rgb_image *image)
{
    if (!image)
        return;
    /* malloc'ed by decode_jpeg, or by stb_image (STBI_MALLOC, malloc in Debian's libstb) */
    free(image->rgb);
    image->rgb = NULL;
}

captcha_image captcha_rgb_image_view(const captcha_rgb_image *image)
{
    captcha_image view = {0};
    view.format = CAPTCHA_PIXEL_RGB;
    view.width = image->width;
    view.height = image->height;
    view.planes[0] = image->rgb;
    view.strides[0] = 3 * image->width;
    return view;
}

int captcha_label_from_path(const char *path, char *label, size_t label_size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base)
        n = (size_t)(dot - base);
    const char *underscore = memchr(base, '_', n);
    if (underscore)
        n = (size_t)(underscore - base);
    if (n + 1 > label_size)
        return -1;
    memcpy(label, base, n);
    label[n] = '\0';
    return (int)n;
}

captcha_status captcha_path_list_add(captcha_path_list *list, const char *path, captcha_error *err)
{
    char *copy = strdup(path);
    char **grown = realloc(list->paths, (list->count + 1) * sizeof *grown);
    if (!copy || !grown) {
        free(copy);
        if (grown)
            list->paths = grown;
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "out of memory listing files");
    }
    list->paths = grown;
    list->paths[list->count++] = copy;
    return CAPTCHA_OK;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Why entry name of a folder is not listed, or NULL when it is a regular file
 * (symbolic links followed) to list; *ignored tells a by-design omission
 * (hidden file, subfolder) from a failure. */
static const char *unlisted_reason(const char *path, const char *name, char *buffer, size_t size,
                                   int *ignored)
{
    *ignored = 1;
    if (name[0] == '.')
        return "hidden file (the name starts with '.'), not read";
    struct stat info;
    if (stat(path, &info) == 0 && S_ISDIR(info.st_mode))
        return "a folder (folders are read without their subfolders)";
    *ignored = 0;
    if (stat(path, &info) != 0) {
        int saved = errno;
        struct stat link;
        if (lstat(path, &link) == 0 && S_ISLNK(link.st_mode))
            snprintf(buffer, size, "broken symbolic link (%s)", strerror(saved));
        else
            snprintf(buffer, size, "cannot examine it: %s", strerror(saved));
        return buffer;
    }
    if (S_ISREG(info.st_mode))
        return NULL;
    snprintf(buffer, size, "not a regular file (%s)", captcha_tool_file_kind(info.st_mode));
    return buffer;
}

captcha_status captcha_path_list_read_folder(captcha_path_list *list, const char *dir,
                                             const char *program, FILE *warnings, size_t *unlisted,
                                             captcha_error *err)
{
    DIR *handle = opendir(dir);
    if (!handle)
        return captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot read the folder: %s", dir,
                            strerror(errno));
    size_t first = list->count;
    size_t dir_length = strlen(dir);
    /* "dir/", "dir//" -> "dir"; "/" and "//" -> "" so that entries read "/name" */
    while (dir_length > 0 && dir[dir_length - 1] == '/')
        dir_length--;
    captcha_status status = CAPTCHA_OK;
    struct dirent *entry;
    while (status == CAPTCHA_OK && (entry = readdir(handle))) {
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, ".."))
            continue;
        size_t size = dir_length + strlen(entry->d_name) + 2;
        char *path = malloc(size);
        if (!path) {
            status =
                captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "out of memory listing %s", dir);
            break;
        }
        snprintf(path, size, "%.*s/%s", (int)dir_length, dir, entry->d_name);
        char buffer[128];
        int ignored;
        const char *reason = unlisted_reason(path, entry->d_name, buffer, sizeof buffer, &ignored);
        if (!reason) {
            status = captcha_path_list_add(list, path, err);
        } else {
            if (warnings)
                captcha_tool_print_line(warnings, program, "%s %s: %s",
                                        ignored ? "note: ignoring" : "warning: skipping", path,
                                        reason);
            if (unlisted && !ignored)
                (*unlisted)++;
        }
        free(path);
    }
    closedir(handle);
    if (status == CAPTCHA_OK)
        qsort(list->paths + first, list->count - first, sizeof *list->paths, compare_names);
    return status;
}

captcha_status captcha_path_list_add_folder(captcha_path_list *list, const char *dir,
                                            captcha_error *err)
{
    return captcha_path_list_read_folder(list, dir, NULL, NULL, NULL, err);
}

void captcha_path_list_free(captcha_path_list *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->paths[i]);
    free(list->paths);
    list->paths = NULL;
    list->count = 0;
}

int captcha_is_directory(const char *path)
{
    struct stat info;
    if (stat(path, &info) != 0)
        return -1;
    return S_ISDIR(info.st_mode) ? 1 : 0;
}
