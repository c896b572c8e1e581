/* Writes a folder of small synthetic labelled images for the CLI tests.
 *
 *   make_images DIR COUNT SEED CHARSET LENGTH [CELL]
 *
 * Each image is LENGTH square cells of CELL pixels (default 32) side by side;
 * character k of the charset is drawn in its cell as one of three easily
 * separated textures: k % 3 == 0 horizontal stripes, 1 vertical stripes, 2 a
 * checkerboard, with period 4 + 2 * (k / 3) pixels, a random phase, random
 * dark/light colours and +-12 grey levels of noise. Image i's label is random
 * (from SEED); it is written as LABEL_i.png. The encoding cycles so the tools'
 * decoding by content is exercised: RGB PNG, RGBA PNG, grey PNG, and JPEG
 * (quality 95) under the .png extension.
 *
 *   make_images --gray WIDTH HEIGHT FILE
 *
 * writes one black grey PNG of that size. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb/stb_image_write.h>

static uint64_t state;

static uint32_t next_random(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (uint32_t)(state >> 16);
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "--gray")) { /* make_images --gray WIDTH HEIGHT FILE */
        int width = atoi(argv[2]), height = atoi(argv[3]);
        uint8_t *grey = width > 0 && height > 0 ? calloc((size_t)width * height, 1) : NULL;
        int ok = grey && stbi_write_png(argv[4], width, height, 1, grey, width);
        free(grey);
        return ok ? 0 : 1;
    }
    if (argc < 6) {
        fprintf(stderr, "usage: %s DIR COUNT SEED CHARSET LENGTH [CELL]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int count = atoi(argv[2]);
    state = strtoull(argv[3], NULL, 10) * 2654435761ULL + 88172645463325252ULL;
    const char *charset = argv[4];
    int length = atoi(argv[5]);
    int cell = argc > 6 ? atoi(argv[6]) : 32;
    int charset_size = (int)strlen(charset);
    if (count < 1 || length < 1 || length > 32 || charset_size < 1 || cell < 4) {
        fprintf(stderr, "%s: bad arguments\n", argv[0]);
        return 2;
    }
    const int width = cell * length, height = cell;
    uint8_t *rgba = malloc((size_t)width * height * 4);
    uint8_t *packed = malloc((size_t)width * height * 4);
    if (!rgba || !packed)
        return 1;
    for (int i = 0; i < count; i++) {
        char label[33];
        for (int p = 0; p < length; p++)
            label[p] = charset[next_random() % (uint32_t)charset_size];
        label[length] = '\0';
        int dark = (int)(next_random() % 60), light = 190 + (int)(next_random() % 60);
        for (int p = 0; p < length; p++) {
            int k = (int)(strchr(charset, label[p]) - charset);
            int kind = k % 3, period = 4 + 2 * (k / 3);
            int phase_x = (int)(next_random() % (uint32_t)period);
            int phase_y = (int)(next_random() % (uint32_t)period);
            for (int y = 0; y < height; y++) {
                for (int x = 0; x < cell; x++) {
                    int u = (x + phase_x) % period < period / 2;
                    int v = (y + phase_y) % period < period / 2;
                    int on = kind == 0 ? v : kind == 1 ? u : u ^ v;
                    int value = (on ? dark : light) + (int)(next_random() % 25) - 12;
                    value = value < 0 ? 0 : value > 255 ? 255 : value;
                    uint8_t *px = rgba + 4 * ((size_t)y * width + (size_t)(p * cell + x));
                    px[0] = (uint8_t)value;
                    px[1] = (uint8_t)(value * 7 / 8);
                    px[2] = (uint8_t)(255 - (255 - value) * 7 / 8);
                    px[3] = (uint8_t)(128 + next_random() % 128); /* ignored by the tools */
                }
            }
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s_%d.png", dir, label, i);
        int kind = i % 4, channels = kind == 0 ? 3 : kind == 1 ? 4 : kind == 2 ? 1 : 3;
        for (size_t j = 0; j < (size_t)width * height; j++)
            for (int c = 0; c < channels; c++)
                packed[j * channels + c] = rgba[j * 4 + c];
        int ok = kind == 3
                     ? stbi_write_jpg(path, width, height, 3, packed, 95)
                     : stbi_write_png(path, width, height, channels, packed, width * channels);
        if (!ok) {
            fprintf(stderr, "%s: cannot write %s\n", argv[0], path);
            return 1;
        }
    }
    free(rgba);
    free(packed);
    return 0;
}
