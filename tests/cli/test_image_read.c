/* captcha_rgb_image_read on hand-made files whose pixels are known: each
 * decodes to them (as cv2.imread with IMREAD_COLOR gives them), or is refused
 * with the reason named. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image_io.h"

static int failures;
static char folder[] = "/tmp/test_image_read.XXXXXX";

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static const char *write_file(const char *name, const void *data, size_t size)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", folder, name);
    FILE *stream = fopen(path, "wb");
    if (!stream || fwrite(data, 1, size, stream) != size || fclose(stream)) {
        printf("cannot write %s\n", path);
        exit(1);
    }
    return path;
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v & 0xffff);
    put16(p + 2, v >> 16);
}

/* 3x2 pixels, RGB, row 0 first */
static const uint8_t pixels[2][3][3] = {{{255, 0, 0}, {0, 255, 0}, {0, 0, 255}},
                                        {{10, 20, 30}, {200, 150, 100}, {1, 2, 3}}};

/* A 24-bit BMP of pixels: rows stored bottom-up (positive height) or top-down (negative). */
static size_t make_bmp(uint8_t *file, int top_down)
{
    const size_t row = 12, offset = 54, size = offset + 2 * row; /* 9 bytes padded to 12 */
    memset(file, 0, size);
    file[0] = 'B';
    file[1] = 'M';
    put32(file + 2, (uint32_t)size);
    put32(file + 10, (uint32_t)offset);
    put32(file + 14, 40);
    put32(file + 18, 3);
    put32(file + 22, top_down ? (uint32_t)-2 : 2);
    put16(file + 26, 1);
    put16(file + 28, 24);
    put32(file + 34, (uint32_t)(2 * row));
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++)
            for (int c = 0; c < 3; c++) /* BGR */
                file[offset + (top_down ? y : 1 - y) * row + 3 * x + c] = pixels[y][x][2 - c];
    return size;
}

static void expect_pixels(const char *name, const uint8_t *file, size_t size)
{
    const char *path = write_file(name, file, size);
    captcha_rgb_image image;
    captcha_error err = {0};
    captcha_status status = captcha_rgb_image_read(path, &image, &err);
    CHECK(status == CAPTCHA_OK, "%s: not decoded: %s", name, err.message);
    if (status != CAPTCHA_OK)
        return;
    CHECK(image.width == 3 && image.height == 2, "%s: %dx%d, expected 3x2", name, image.width,
          image.height);
    if (image.width == 3 && image.height == 2)
        CHECK(!memcmp(image.rgb, pixels, sizeof pixels), "%s: other pixels", name);
    captcha_rgb_image_free(&image);
}

static void expect_refused(const char *name, const void *file, size_t size, const char *reason)
{
    const char *path = write_file(name, file, size);
    captcha_rgb_image image;
    captcha_error err = {0};
    captcha_status status = captcha_rgb_image_read(path, &image, &err);
    CHECK(status == CAPTCHA_ERROR_FORMAT && strstr(err.message, reason),
          "%s: expected refused as \"%s\", got status %d: %s", name, reason, (int)status,
          err.message);
    if (status == CAPTCHA_OK)
        captcha_rgb_image_free(&image);
}

/* A PPM of pixels with that maxval (two bytes a sample, big-endian, above 255). */
static size_t make_ppm(uint8_t *file, unsigned maxval)
{
    size_t size = (size_t)sprintf((char *)file, "P6\n3 2\n%u\n", maxval);
    for (int i = 0; i < 18; i++) {
        unsigned v = ((const uint8_t *)pixels)[i] * 257u;
        if (maxval > 255)
            file[size++] = (uint8_t)(v >> 8);
        file[size++] = (uint8_t)v;
    }
    return size;
}

int main(void)
{
    if (!mkdtemp(folder)) {
        perror("mkdtemp");
        return 1;
    }
    uint8_t file[4096];
    size_t size = make_bmp(file, 0);
    expect_pixels("bottom_up.bmp", file, size);
    /* refused as "too large: 3x-2 pixels" when the header's size was read as stored */
    size = make_bmp(file, 1);
    expect_pixels("top_down.bmp", file, size);

    /* stb_image tone-maps HDR to 8 bits with gamma 2.2 (imread: linear), and loops forever on
     * a truncated RLE one: refused. 3x2 flat RGBE pixels. */
    size = (size_t)sprintf((char *)file, "#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 3\n");
    for (int i = 0; i < 6; i++, size += 4)
        memcpy(file + size, "\x80\x40\x20\x81", 4);
    expect_refused("image.hdr", file, size, "a Radiance HDR image, not read");

    size = make_ppm(file, 255);
    expect_pixels("8bit.ppm", file, size);
    /* stb_image 2.27 reads a 16-bit sample's bytes swapped (on a little-endian host): refused */
    size = make_ppm(file, 65535);
    expect_refused("16bit.ppm", file, size, "a 16-bit PGM/PPM (maxval above 255), not read");

    /* A file that ends inside its pixels: stb_image 2.27 returns a BMP's missing rows as
     * zeros and a PPM's as uninitialized memory; refused. */
    size = make_bmp(file, 0);
    expect_refused("truncated.bmp", file, size - 13, "truncated");
    size = make_ppm(file, 255);
    expect_refused("truncated.ppm", file, size - 1, "truncated");

    /* a PNG cut inside its data: stb_image fails ("outofdata"); named truncated too */
    static const uint8_t png_1x1[] = {
        0x89, 'P',  'N',  'G',  '\r', '\n', 0x1a, '\n', 0,    0,    0,    13,   'I',  'H',
        'D',  'R',  0,    0,    0,    1,    0,    0,    0,    1,    8,    0,    0,    0,
        0,    0x3a, 0x7e, 0x9b, 0x55, 0,    0,    0,    10,   'I',  'D',  'A',  'T',  0x78,
        0x9c, 0x63, 0x60, 0,    0,    0,    2,    0,    1,    0x48, 0xaf, 0xa4, 0x71};
    expect_refused("cut.png", png_1x1, sizeof png_1x1 - 6, "truncated");
    /* formats stb_image does not read: named, not "unknown image type" */
    expect_refused("image.tif", "II*\0\x08\0\0\0", 8, "a TIFF image, not read");
    expect_refused("image.webp", "RIFF\x1a\0\0\0WEBPVP8L", 16, "a WebP image, not read");
    /* not an image, shorter than the format probes read: not called truncated */
    expect_refused("short.txt", "hi\n", 3, "unknown image type");

    char command[300];
    snprintf(command, sizeof command, "rm -rf '%s'", folder);
    if (system(command) != 0)
        printf("cannot remove %s\n", folder);
    if (failures)
        printf("%d failure(s)\n", failures);
    else
        printf("all passed\n");
    return failures ? 1 : 0;
}
