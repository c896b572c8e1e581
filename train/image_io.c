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

#include <stb/stb_image.h>

static captcha_status read_whole_file(const char *path, uint8_t **data, size_t *size,
                                      captcha_error *err)
{
    *data = NULL;
    *size = 0;
    FILE *stream = fopen(path, "rb");
    if (!stream)
        return captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot open: %s", path, strerror(errno));
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
    int width, height, channels;
    /* req_comp 3: stb converts grey to RGB and drops alpha (no compositing). */
    uint8_t *rgb = stbi_load_from_memory(data, (int)size, &width, &height, &channels, 3);
    free(data);
    if (!rgb) {
        const char *reason = stbi_failure_reason();
        return captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: cannot decode: %s", path,
                            reason ? reason : "unknown reason");
    }
    image->width = width;
    image->height = height;
    image->rgb = rgb;
    return CAPTCHA_OK;
}

void captcha_rgb_image_free(captcha_rgb_image *image)
{
    if (!image)
        return;
    stbi_image_free(image->rgb);
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

captcha_status captcha_path_list_add_folder(captcha_path_list *list, const char *dir,
                                            captcha_error *err)
{
    DIR *handle = opendir(dir);
    if (!handle)
        return captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot read the folder: %s", dir,
                            strerror(errno));
    size_t first = list->count;
    size_t dir_length = strlen(dir);
    while (dir_length > 1 && dir[dir_length - 1] == '/')
        dir_length--;
    captcha_status status = CAPTCHA_OK;
    struct dirent *entry;
    while (status == CAPTCHA_OK && (entry = readdir(handle))) {
        if (entry->d_name[0] == '.')
            continue;
        size_t size = dir_length + strlen(entry->d_name) + 2;
        char *path = malloc(size);
        if (!path) {
            status =
                captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "out of memory listing %s", dir);
            break;
        }
        snprintf(path, size, "%.*s/%s", (int)dir_length, dir, entry->d_name);
        struct stat info;
        if (stat(path, &info) == 0 && S_ISREG(info.st_mode))
            status = captcha_path_list_add(list, path, err);
        free(path);
    }
    closedir(handle);
    if (status == CAPTCHA_OK)
        qsort(list->paths + first, list->count - first, sizeof *list->paths, compare_names);
    return status;
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
