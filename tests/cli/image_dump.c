/* Writes what the tools' image reader (captcha_rgb_image_read) makes of a file, for
 * test_jpeg_imread.py to compare with cv2.imread:
 *
 *   image_dump FILE OUT
 *
 * OUT gets "WIDTH HEIGHT\n" and then the RGB pixels, rows packed. On a refused file the
 * reader's message goes to stderr and the exit status is 1. */
#include <stdio.h>

#include "image_io.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: image_dump FILE OUT\n");
        return 2;
    }
    captcha_rgb_image image;
    captcha_error err;
    if (captcha_rgb_image_read(argv[1], &image, &err) != CAPTCHA_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    FILE *out = fopen(argv[2], "wb");
    size_t bytes = (size_t)image.width * image.height * 3;
    int ok = out && fprintf(out, "%d %d\n", image.width, image.height) > 0 &&
             fwrite(image.rgb, 1, bytes, out) == bytes;
    if (out && fclose(out))
        ok = 0;
    captcha_rgb_image_free(&image);
    if (!ok) {
        fprintf(stderr, "image_dump: cannot write %s\n", argv[2]);
        return 1;
    }
    return 0;
}
