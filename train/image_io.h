/* Image files for the command-line tools: listing a folder, decoding a file by
 * its content, regardless of the file's extension (JPEG with libjpeg-turbo, as
 * cv2.imread; PNG, BMP, GIF, TGA, PNM, PSD: what stb_image reads, except
 * Radiance HDR and 16-bit PGM/PPM, which it misreads) and the label a file name
 * carries.
 *
 * Label rule (shared by captcha-gen, captcha-train and captcha-predict): the
 * file's base name without its extension (text from the last '.') and without
 * anything from the first '_' on, so "abcde.png" and "abcde_1.png" both carry
 * the label "abcde". */
#ifndef CAPTCHA_IMAGE_IO_H
#define CAPTCHA_IMAGE_IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "captcha_status.h"
#include "preprocess.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A decoded image: 8-bit RGB, interleaved, rows packed (stride = 3 * width).
 * Alpha is dropped (as cv2.imread with IMREAD_COLOR does), grey is replicated
 * into the three channels. Against cv2.imread (README, "Training on your own
 * images"): JPEG, PNG and 8-bit BMP/PNM match exactly; 16-bit BMP within 7;
 * a JPEG's or PNG's EXIF orientation is applied, as imread applies it (width
 * and height are those of the upright image); a GIF gives its first frame. */
typedef struct {
    int width, height;
    uint8_t *rgb; /* [height][width][3], malloc'ed */
} captcha_rgb_image;

/* At most this many pixels (width x height, from the file's header, before
 * decoding): 8192x8192, twice an 8K UHD screen capture. */
#define CAPTCHA_TOOL_MAX_PIXELS (1 << 26)

/* Reads and decodes path by content. On failure returns CAPTCHA_ERROR_IO (the
 * file cannot be read, or is not a regular file: a FIFO or device is refused
 * without reading from it) or CAPTCHA_ERROR_FORMAT (not an image, or truncated or
 * corrupt: libjpeg's or stb_image's reason, or "truncated" for a file that
 * ends before its pixels do, where the decoder would fill them in; a Radiance
 * HDR or 16-bit PGM/PPM; a TIFF or WebP file, named; a JPEG of more than 100
 * scans; more than CAPTCHA_TOOL_MAX_PIXELS pixels, refused before decoding;
 * or larger than captcha_image_validate takes, 65536 pixels a side) with a
 * message naming the file. */
captcha_status captcha_rgb_image_read(const char *path, captcha_rgb_image *image,
                                      captcha_error *err);
void captcha_rgb_image_free(captcha_rgb_image *image);

/* A view of image for preprocess.h (format CAPTCHA_PIXEL_RGB). */
captcha_image captcha_rgb_image_view(const captcha_rgb_image *image);

/* Writes the label of path's file name into label (see the rule above).
 * Returns its length, or -1 when it does not fit in label_size bytes. */
int captcha_label_from_path(const char *path, char *label, size_t label_size);

/* A sorted list of paths. */
typedef struct {
    char **paths;
    size_t count;
} captcha_path_list;

/* Appends the regular files of folder dir (not recursive; hidden files whose
 * name starts with '.' are left out), sorted by name (strcmp), as "dir/name".
 * CAPTCHA_ERROR_IO naming the folder when it cannot be read. */
captcha_status captcha_path_list_add_folder(captcha_path_list *list, const char *dir,
                                            captcha_error *err);
/* The same, reporting each entry it leaves out ("." and ".." aside). Hidden
 * files and subfolders are left out by design (a .gitkeep, a folder of other
 * images): each is named on warnings (when not NULL) as "program: note:
 * ignoring DIR/NAME: REASON" and not counted. Broken symbolic links, FIFOs,
 * devices, sockets and entries that cannot be examined look like images that
 * failed: each is named as "program: warning: skipping DIR/NAME: REASON" and
 * counted in *unlisted (when not NULL; added to). */
captcha_status captcha_path_list_read_folder(captcha_path_list *list, const char *dir,
                                             const char *program, FILE *warnings, size_t *unlisted,
                                             captcha_error *err);
/* Appends one path as given. */
captcha_status captcha_path_list_add(captcha_path_list *list, const char *path, captcha_error *err);
void captcha_path_list_free(captcha_path_list *list);

/* 1 when path is a directory, 0 when it is something else, -1 when it cannot
 * be examined (errno set). */
int captcha_is_directory(const char *path);

#ifdef __cplusplus
}
#endif

#endif
