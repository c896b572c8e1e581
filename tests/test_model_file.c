/* The safetensors model file (model/model_file.h): every bad-input case is
 * built here from a valid file we wrote (bytes cut or patched, or the JSON
 * header edited with jansson), a save -> load round trip must be bit-exact,
 * and the file is exchanged with PyTorch both ways (tests/reference/
 * model_file_check.py; those two cases are skipped when torch is absent). */
#define _GNU_SOURCE
#include <errno.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "backend.h"
#include "captcha-build-config.h"
#include "model_file.h"
#include "network.h"
#include "test_util.h"

static captcha_backend *g_backend;
static captcha_network *g_network; /* reference config, random values, batches_tracked 42 */
static char g_valid[4096];         /* g_network saved there */

/* Every name tmp_path() handed out, removed (with any .tmp beside it) after the tests. */
#define MAX_TMP_NAMES 64
static char g_tmp_names[MAX_TMP_NAMES][4200];
static int g_tmp_count;

static void tmp_path(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", captcha_test_tmpdir(), name);
    for (int i = 0; i < g_tmp_count; i++)
        if (!strcmp(g_tmp_names[i], out))
            return;
    if (g_tmp_count < MAX_TMP_NAMES)
        snprintf(g_tmp_names[g_tmp_count++], sizeof g_tmp_names[0], "%s", out);
}

static void remove_tmp_files(void)
{
    for (int i = g_tmp_count - 1; i >= 0; i--) {
        char tmp[4300];
        snprintf(tmp, sizeof tmp, "%s.tmp", g_tmp_names[i]);
        unlink(tmp);
        if (unlink(g_tmp_names[i]) != 0)
            rmdir(g_tmp_names[i]);
    }
    rmdir(captcha_test_tmpdir()); /* only when empty (it may be $CAPTCHA_TEST_TMPDIR) */
}

/* Fills every tensor of network with distinct random values. */
static void randomize(captcha_network *network, uint64_t seed)
{
    size_t count = captcha_network_tensor_count(network);
    for (size_t i = 0; i < count; i++) {
        const captcha_tensor_info *info = captcha_network_tensor(network, i);
        float *values = malloc(info->count * sizeof *values);
        assert_non_null(values);
        /* running_var stays positive; everything else spans both signs */
        int var = strstr(info->name, "running_var") != NULL;
        captcha_test_fill_uniform(values, info->count, var ? 0.1f : -1.0f, 1.0f, seed + i);
        captcha_error err = {0};
        assert_int_equal(captcha_network_write_tensor(network, i, values, &err), CAPTCHA_OK);
        free(values);
    }
}

static captcha_network *make_network(const captcha_config *config, uint64_t seed)
{
    captcha_network *network = NULL;
    captcha_error err = {0};
    captcha_status status = captcha_network_create(g_backend, config, seed, &network, &err);
    if (status != CAPTCHA_OK)
        fail_msg("captcha_network_create: %s", err.message);
    randomize(network, seed * 1000);
    return network;
}

static void save_or_fail(captcha_network *network, const char *path,
                         const char *const *extra_metadata)
{
    captcha_error err = {0};
    captcha_status status = captcha_model_save(network, path, extra_metadata, &err);
    if (status != CAPTCHA_OK)
        fail_msg("captcha_model_save(%s): %s", path, err.message);
}

static int group_setup(void **state)
{
    (void)state;
    captcha_error err = {0};
    if (!captcha_test_tmpdir()) {
        fprintf(stderr, "no temporary folder\n");
        return -1;
    }
    if (captcha_backend_cpu_create(2, &g_backend, &err) != CAPTCHA_OK) {
        fprintf(stderr, "CPU backend: %s\n", err.message);
        return -1;
    }
    captcha_config config;
    captcha_config_reference(&config);
    g_network = make_network(&config, 7);
    captcha_network_set_batches_tracked(g_network, 42);
    tmp_path(g_valid, sizeof g_valid, "valid.safetensors");
    save_or_fail(g_network, g_valid, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    captcha_network_destroy(g_network);
    captcha_backend_destroy(g_backend);
    remove_tmp_files();
    return 0;
}

/* ---- building bad files ---- */

typedef struct {
    unsigned char *bytes; /* the whole file */
    size_t size;
    uint64_t header_size;
    json_t *header;
    const unsigned char *data; /* into bytes */
    size_t data_size;
} model_bytes;

static uint64_t get_u64_le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void read_model(const char *path, model_bytes *m)
{
    memset(m, 0, sizeof *m);
    m->bytes = captcha_test_read_file(path, &m->size);
    assert_non_null(m->bytes);
    assert_true(m->size > 8);
    m->header_size = get_u64_le(m->bytes);
    assert_true(m->header_size <= m->size - 8);
    json_error_t json_error;
    m->header = json_loadb((const char *)m->bytes + 8, m->header_size, 0, &json_error);
    assert_non_null(m->header);
    m->data = m->bytes + 8 + m->header_size;
    m->data_size = m->size - 8 - m->header_size;
}

static void free_model(model_bytes *m)
{
    json_decref(m->header);
    free(m->bytes);
}

/* Writes header (padded with spaces to a multiple of 8) and data as a
 * safetensors file. */
static void write_model(const char *path, json_t *header, const void *data, size_t data_size)
{
    char *text = json_dumps(header, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(text);
    size_t n = strlen(text), padded = (n + 7) / 8 * 8;
    unsigned char *file = malloc(8 + padded + data_size);
    assert_non_null(file);
    for (int i = 0; i < 8; i++)
        file[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(file + 8, text, n);
    memset(file + 8 + n, ' ', padded - n);
    if (data_size)
        memcpy(file + 8 + padded, data, data_size);
    assert_int_equal(captcha_test_write_file(path, file, 8 + padded + data_size), 0);
    free(file);
    free(text);
}

static json_t *entry_of(json_t *header, const char *name)
{
    json_t *entry = json_object_get(header, name);
    if (!entry)
        fail_msg("tensor %s not in the header", name);
    return entry;
}

/* Loads path and expects status with a message naming path and each needle
 * (NULL ends the list); config_too: captcha_model_read_config fails the same
 * way (errors of the framing or metadata). */
static void expect_error(const char *path, captcha_status expected, int config_too, ...)
{
    captcha_error err = {0};
    captcha_network *network = (captcha_network *)&err; /* must be reset to NULL */
    char notice[256] = "sentinel";
    captcha_status status =
        captcha_model_load(path, g_backend, &network, notice, sizeof notice, &err);
    printf("  load: %s: %s\n", captcha_status_name(status), err.message);
    assert_int_equal(status, expected);
    assert_null(network);
    assert_string_equal(notice, "");
    assert_non_null(strstr(err.message, path));
    va_list args;
    va_start(args, config_too);
    for (const char *needle; (needle = va_arg(args, const char *));)
        if (!strstr(err.message, needle))
            fail_msg("message \"%s\" does not name \"%s\"", err.message, needle);
    va_end(args);

    /* the same status without an error record (err may be NULL) */
    network = (captcha_network *)&err;
    assert_int_equal(captcha_model_load(path, g_backend, &network, NULL, 0, NULL), expected);
    assert_null(network);
    if (config_too) {
        captcha_config config;
        captcha_error config_err = {0};
        assert_int_equal(captcha_model_read_config(path, &config, NULL, 0, &config_err), expected);
        assert_string_equal(config_err.message, err.message);
        assert_int_equal(captcha_model_read_config(path, &config, NULL, 0, NULL), expected);
    }
}

/* A copy of the valid file with its header edited by edit(). */
static void patched_file(const char *name, char *path, size_t path_size,
                         void (*edit)(json_t *header))
{
    model_bytes m;
    read_model(g_valid, &m);
    edit(m.header);
    tmp_path(path, path_size, name);
    write_model(path, m.header, m.data, m.data_size);
    free_model(&m);
}

/* ---- framing ---- */

static void test_truncated_before_header_size(void **state)
{
    (void)state;
    char path[4200];
    tmp_path(path, sizeof path, "short.safetensors");
    assert_int_equal(captcha_test_write_file(path, "\x10\0\0\0\0", 5), 0);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1, "5 bytes", "header size", NULL);
}

static void test_truncated_inside_header(void **state)
{
    (void)state;
    model_bytes m;
    read_model(g_valid, &m);
    char path[4200], expected[64];
    tmp_path(path, sizeof path, "cut-header.safetensors");
    assert_int_equal(captcha_test_write_file(path, m.bytes, 8 + m.header_size / 2), 0);
    snprintf(expected, sizeof expected, "header size is %llu bytes",
             (unsigned long long)m.header_size);
    free_model(&m);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1, expected, NULL);
}

/* A copy of the valid file named `name` in the test folder, without its last `cut` bytes. */
static void copy_of_valid(const char *name, size_t cut, char *path, size_t path_size)
{
    size_t size = 0;
    unsigned char *bytes = captcha_test_read_file(g_valid, &size);
    assert_non_null(bytes);
    assert_true(cut <= size);
    tmp_path(path, path_size, name);
    assert_int_equal(captcha_test_write_file(path, bytes, size - cut), 0);
    free(bytes);
}

static void test_truncated_inside_data(void **state)
{
    (void)state;
    char path[4200];
    /* fc_layers.0.bias (180 floats) is the last tensor: cut 100 bytes of it */
    copy_of_valid("cut-data.safetensors", 100, path, sizeof path);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0, "fc_layers.0.bias", "data_offsets", NULL);
}

static void test_header_size_beyond_file(void **state)
{
    (void)state;
    model_bytes m;
    read_model(g_valid, &m);
    char path[4200];
    tmp_path(path, sizeof path, "big-header-size.safetensors");
    uint64_t wrong = m.size - 8 + 1; /* one byte more than follows */
    for (int i = 0; i < 8; i++)
        m.bytes[i] = (unsigned char)(wrong >> (8 * i));
    assert_int_equal(captcha_test_write_file(path, m.bytes, m.size), 0);
    char expected[64];
    snprintf(expected, sizeof expected, "header size is %llu bytes", (unsigned long long)wrong);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1, expected, NULL);
    free_model(&m);
}

static void test_header_size_unreasonable(void **state)
{
    (void)state;
    /* a sparse 200 MB file claiming a 150 MB header: refused before reading */
    char path[4200];
    tmp_path(path, sizeof path, "huge-header.safetensors");
    unsigned char size_bytes[8];
    uint64_t claimed = 150000000;
    for (int i = 0; i < 8; i++)
        size_bytes[i] = (unsigned char)(claimed >> (8 * i));
    assert_int_equal(captcha_test_write_file(path, size_bytes, 8), 0);
    assert_int_equal(truncate(path, 200000000), 0);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1, "header size is 150000000 bytes", NULL);
    unlink(path);
}

static void test_invalid_json(void **state)
{
    (void)state;
    model_bytes m;
    read_model(g_valid, &m);
    char path[4200];
    tmp_path(path, sizeof path, "bad-json.safetensors");
    /* drop the header's closing brace: the padding then ends an unfinished object */
    unsigned char *p = m.bytes + 8 + m.header_size - 1;
    while (*p != '}')
        p--;
    *p = ' ';
    assert_int_equal(captcha_test_write_file(path, m.bytes, m.size), 0);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1, "not valid JSON", NULL);
    free_model(&m);
}

static void test_header_not_object(void **state)
{
    (void)state;
    char path[4200];
    tmp_path(path, sizeof path, "array.safetensors");
    const char file[] = "\x08\0\0\0\0\0\0\0[1, 2]  ";
    assert_int_equal(captcha_test_write_file(path, file, sizeof file - 1), 0);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1, "header is a JSON array", NULL);
}

static void test_nonexistent_path(void **state)
{
    (void)state;
    char path[4200];
    tmp_path(path, sizeof path, "no-such-folder/model.safetensors");
    expect_error(path, CAPTCHA_ERROR_IO, 1, strerror(ENOENT), NULL);
}

/* Not regular files: refused by name, and a FIFO without a writer is refused
 * at once (fopen alone would wait for a writer forever). */
static void test_not_regular_files(void **state)
{
    (void)state;
    char path[4200];
    tmp_path(path, sizeof path, "fifo.safetensors");
    unlink(path);
    assert_int_equal(mkfifo(path, 0600), 0);
    expect_error(path, CAPTCHA_ERROR_IO, 1, "is not a regular file", NULL);
    expect_error(captcha_test_tmpdir(), CAPTCHA_ERROR_IO, 1, "is not a regular file", NULL);
}

static void test_empty_path(void **state)
{
    (void)state;
    expect_error("", CAPTCHA_ERROR_INVALID_ARGUMENT, 1, "path is empty", NULL);
}

/* ---- tensors ---- */

static void edit_missing(json_t *header)
{
    assert_int_equal(json_object_del(header, "cnn_layers.3.skip.1.running_var"), 0);
}

static void test_missing_tensor(void **state)
{
    (void)state;
    char path[4200];
    patched_file("missing.safetensors", path, sizeof path, edit_missing);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0, "tensor cnn_layers.3.skip.1.running_var", "missing",
                 NULL);
}

static void edit_shape(json_t *header)
{
    json_object_set_new(entry_of(header, "cnn_layers.2.block.0.weight"), "shape",
                        json_pack("[iiii]", 64, 32, 3, 3));
}

static void test_wrong_shape(void **state)
{
    (void)state;
    char path[4200];
    patched_file("shape.safetensors", path, sizeof path, edit_shape);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0,
                 "tensor cnn_layers.2.block.0.weight has shape [64, 32, 3, 3], expected "
                 "[64, 64, 3, 3]",
                 NULL);
}

/* A NaN weight, an infinite bias, a negative running variance: refused, naming the
 * tensor and the element. */
/* A NaN, an Inf or a negative running variance: captcha_model_check_values and
 * captcha_model_save refuse the network (nothing written, no .tmp left), and
 * the loader refuses a file holding one (the valid file with one value
 * patched), each naming the tensor and element. */
static void test_non_finite_values(void **state)
{
    (void)state;
    static const struct {
        const char *tensor;
        size_t element;
        float value;
        const char *file;
    } cases[] = {
        {"cnn_layers.0.block.0.weight", 5, NAN, "nan.safetensors"},
        {"fc_layers.0.bias", 179, INFINITY, "inf.safetensors"},
        {"cnn_layers.5.skip.1.running_var", 0, -0.5f, "negvar.safetensors"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char path[4200], tmp[4300], element[64];
        snprintf(element, sizeof element, "element %zu is", cases[k].element);
        tmp_path(path, sizeof path, cases[k].file);
        snprintf(tmp, sizeof tmp, "%s.tmp", path);

        /* the writer */
        captcha_config config;
        captcha_config_reference(&config);
        captcha_network *network = make_network(&config, 3);
        int index = captcha_network_find_tensor(network, cases[k].tensor);
        assert_true(index >= 0);
        const captcha_tensor_info *info = captcha_network_tensor(network, (size_t)index);
        float *values = malloc(info->count * sizeof *values);
        assert_non_null(values);
        captcha_error err = {0};
        assert_int_equal(captcha_model_check_values(network, &err), CAPTCHA_OK);
        assert_int_equal(captcha_network_read_tensor(network, (size_t)index, values, &err),
                         CAPTCHA_OK);
        values[cases[k].element] = cases[k].value;
        assert_int_equal(captcha_network_write_tensor(network, (size_t)index, values, &err),
                         CAPTCHA_OK);
        assert_int_equal(captcha_model_check_values(network, &err), CAPTCHA_ERROR_FORMAT);
        assert_non_null(strstr(err.message, cases[k].tensor));
        assert_non_null(strstr(err.message, element));
        assert_int_equal(captcha_model_save(network, path, NULL, &err), CAPTCHA_ERROR_FORMAT);
        printf("  save: %s\n", err.message);
        assert_non_null(strstr(err.message, path));
        assert_non_null(strstr(err.message, "not written"));
        assert_non_null(strstr(err.message, cases[k].tensor));
        assert_non_null(strstr(err.message, element));
        /* the same without an error record (err may be NULL): still refused */
        assert_int_equal(captcha_model_save(network, path, NULL, NULL), CAPTCHA_ERROR_FORMAT);
        assert_int_equal(access(path, F_OK), -1);
        assert_int_equal(access(tmp, F_OK), -1);
        free(values);
        captcha_network_destroy(network);

        /* the loader, on the valid file with the value patched in */
        model_bytes m;
        read_model(g_valid, &m);
        json_t *offsets = json_object_get(entry_of(m.header, cases[k].tensor), "data_offsets");
        size_t begin = (size_t)json_integer_value(json_array_get(offsets, 0));
        unsigned char *data = m.bytes + 8 + m.header_size;
        memcpy(data + begin + cases[k].element * sizeof(float), &cases[k].value, sizeof(float));
        write_model(path, m.header, data, m.data_size);
        free_model(&m);
        expect_error(path, CAPTCHA_ERROR_FORMAT, 0, cases[k].tensor, element, "expected a finite",
                     NULL);
    }
}

static const char *g_dtype;
static void edit_dtype(json_t *header)
{
    json_object_set_new(entry_of(header, "cnn_layers.1.block.1.weight"), "dtype",
                        json_string(g_dtype));
}

/* Another float type than F32 is named as such; a dtype safetensors does not have, even
 * one starting with 'F', is named as unknown, not taken for a float model to convert
 * with .float(). */
static void test_wrong_dtype(void **state)
{
    (void)state;
    static const struct {
        const char *dtype, *needle;
    } cases[] = {
        {"F16", "tensor cnn_layers.1.block.1.weight has dtype F16, expected F32"},
        {"F33", "tensor cnn_layers.1.block.1.weight: dtype \"F33\" is not a safetensors dtype"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[4200];
        g_dtype = cases[i].dtype;
        patched_file("dtype.safetensors", path, sizeof path, edit_dtype);
        expect_error(path, CAPTCHA_ERROR_FORMAT, 0, cases[i].needle, NULL);
    }
}

/* A whole model in half precision (as PyTorch saves it after .half()): every float
 * tensor F16 (or BF16) at half its bytes, the data section half as large. Named as a
 * dtype, not taken for a truncated file. */
static void test_half_precision_model(void **state)
{
    (void)state;
    const char *dtypes[] = {"F16", "BF16"};
    for (size_t k = 0; k < 2; k++) {
        model_bytes m;
        read_model(g_valid, &m);
        const char *name;
        json_t *value;
        json_object_foreach(m.header, name, value)
        {
            json_t *offsets = json_object_get(value, "data_offsets");
            if (!strcmp(name, "__metadata__"))
                continue;
            json_int_t begin = json_integer_value(json_array_get(offsets, 0));
            json_int_t end = json_integer_value(json_array_get(offsets, 1));
            json_array_set_new(offsets, 0, json_integer(begin / 2));
            json_array_set_new(offsets, 1, json_integer(end / 2));
            if (!strcmp(json_string_value(json_object_get(value, "dtype")), "F32"))
                json_object_set_new(value, "dtype", json_string(dtypes[k]));
        }
        char path[4200], expected[64];
        tmp_path(path, sizeof path, "half.safetensors");
        write_model(path, m.header, m.data, m.data_size / 2);
        free_model(&m);
        snprintf(expected, sizeof expected, "has dtype %s, expected F32", dtypes[k]);
        expect_error(path, CAPTCHA_ERROR_FORMAT, 0, expected, NULL);
    }
}

static void edit_batches_tracked_dtype(json_t *header)
{
    json_t *entry = entry_of(header, "cnn_layers.4.skip.1.num_batches_tracked");
    json_object_set_new(entry, "dtype", json_string("F32"));
}

static void test_batches_tracked_wrong_dtype(void **state)
{
    (void)state;
    char path[4200];
    patched_file("nbt-dtype.safetensors", path, sizeof path, edit_batches_tracked_dtype);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0,
                 "tensor cnn_layers.4.skip.1.num_batches_tracked has dtype F32, expected I64",
                 NULL);
}

static size_t g_data_size; /* of the valid file, for the edits below */

static void edit_offsets_outside(json_t *header)
{
    json_t *entry = entry_of(header, "cnn_layers.5.block.3.weight");
    json_int_t bytes = 256 * 256 * 9 * 4;
    json_object_set_new(
        entry, "data_offsets",
        json_pack("[II]", (json_int_t)g_data_size - bytes + 4, (json_int_t)g_data_size + 4));
}

static void test_offsets_outside_data(void **state)
{
    (void)state;
    model_bytes m;
    read_model(g_valid, &m);
    g_data_size = m.data_size;
    free_model(&m);
    char path[4200];
    patched_file("outside.safetensors", path, sizeof path, edit_offsets_outside);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0, "tensor cnn_layers.5.block.3.weight",
                 "data_offsets", "beyond the data section", NULL);
}

static void edit_offsets_size(json_t *header)
{
    json_t *offsets = json_object_get(entry_of(header, "fc_layers.0.bias"), "data_offsets");
    json_int_t begin = json_integer_value(json_array_get(offsets, 0));
    json_array_set_new(offsets, 1, json_integer(begin + 4 * 179));
}

static void test_offsets_wrong_size(void **state)
{
    (void)state;
    char path[4200];
    patched_file("span.safetensors", path, sizeof path, edit_offsets_size);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0, "tensor fc_layers.0.bias", "span 716 bytes",
                 "expected 720", NULL);
}

static void edit_overlap(json_t *header)
{
    json_t *weight = entry_of(header, "cnn_layers.0.block.1.weight");
    json_object_set(entry_of(header, "cnn_layers.0.block.1.bias"), "data_offsets",
                    json_object_get(weight, "data_offsets"));
}

static void test_overlapping_tensors(void **state)
{
    (void)state;
    char path[4200];
    patched_file("overlap.safetensors", path, sizeof path, edit_overlap);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0, "cnn_layers.0.block.1.weight",
                 "cnn_layers.0.block.1.bias", "overlap", NULL);
}

static void test_unknown_tensor(void **state)
{
    (void)state;
    model_bytes m;
    read_model(g_valid, &m);
    unsigned char *data = malloc(m.data_size + 4);
    assert_non_null(data);
    memcpy(data, m.data, m.data_size);
    memset(data + m.data_size, 0, 4);
    json_object_set_new(m.header, "cnn_layers.6.block.0.weight",
                        json_pack("{s:s, s:[i], s:[I,I]}", "dtype", "F32", "shape", 1,
                                  "data_offsets", (json_int_t)m.data_size,
                                  (json_int_t)m.data_size + 4));
    char path[4200];
    tmp_path(path, sizeof path, "unknown.safetensors");
    write_model(path, m.header, data, m.data_size + 4);
    free(data);
    free_model(&m);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0, "unknown tensor cnn_layers.6.block.0.weight", NULL);
}

/* ---- metadata ---- */

static void set_metadata(json_t *header, const char *key, const char *value)
{
    json_t *metadata = json_object_get(header, "__metadata__");
    assert_non_null(metadata);
    if (value)
        json_object_set_new(metadata, key, json_string(value));
    else
        assert_int_equal(json_object_del(metadata, key), 0);
}

static void edit_empty_charset(json_t *header)
{
    set_metadata(header, "charset", "");
}
static void edit_zero_length(json_t *header)
{
    set_metadata(header, "length", "0");
}
static void edit_non_numeric_length(json_t *header)
{
    set_metadata(header, "length", "5x");
}
static void edit_input_height(json_t *header)
{
    set_metadata(header, "input_height", "40");
}
static void edit_format_without_length(json_t *header)
{
    set_metadata(header, "length", NULL);
}

static void test_metadata_empty_charset(void **state)
{
    (void)state;
    char path[4200];
    patched_file("empty-charset.safetensors", path, sizeof path, edit_empty_charset);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1, "charset is empty", NULL);
}

static void test_metadata_zero_length(void **state)
{
    (void)state;
    char path[4200];
    patched_file("zero-length.safetensors", path, sizeof path, edit_zero_length);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1, "length is 0", NULL);
}

static void test_metadata_non_numeric_length(void **state)
{
    (void)state;
    char path[4200];
    patched_file("length-5x.safetensors", path, sizeof path, edit_non_numeric_length);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1, "length is \"5x\"", "decimal integer", NULL);
}

static void test_metadata_input_not_multiple_of_32(void **state)
{
    (void)state;
    char path[4200];
    patched_file("height-40.safetensors", path, sizeof path, edit_input_height);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1, "input_height is 40", "multiple of 32", NULL);
}

static void test_metadata_format_requires_every_key(void **state)
{
    (void)state;
    char path[4200];
    patched_file("no-length.safetensors", path, sizeof path, edit_format_without_length);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1, "metadata: length is missing", NULL);
}

/* mean/std: decimal syntax only (no hex, inf, nan), magnitudes 1e-30..1e30 (else a
 * typo or corruption), and then the config's ranges (|mean| <= 1e6, std 1e-6..1e6) so
 * that the network input (x/255 - mean)/std stays finite. */
static const char *g_number_key, *g_number_value;
static void edit_number(json_t *header)
{
    set_metadata(header, g_number_key, g_number_value);
}

static void test_metadata_numbers(void **state)
{
    (void)state;
    static const struct {
        const char *key, *value, *needle; /* needle NULL: accepted */
        float expected;
    } cases[] = {
        {"mean", "0x1p-1", "expected a decimal number", 0},
        {"mean", "inf", "expected a decimal number", 0},
        {"mean", "3e38", "expected a decimal number", 0},
        {"std", "1e-38", "expected a decimal number", 0},
        /* below the double range: strtod underflows to 0, which is no reason to take it */
        {"mean", "1e-400", "mean is \"1e-400\", expected a decimal number", 0},
        {"mean", "-0.0000000000000000000000000000000000000000000000000000000000000000000000000"
                 "000000000000000000000000000000000000000000000000000000000000000000000000000"
                 "000000000000000000000000000000000000000000000000000000000000000000000000000"
                 "000000000000000000000000000000000000000000000000000000000000000000000000000"
                 "0000000000000000000000000000001",
         "expected a decimal number", 0},
        {"mean", "-0.000e-999", NULL, 0.0f},
        {"mean", "00.0E+7", NULL, 0.0f},
        {"std", "1e-7", "std is 1e-07, expected 1e-06..1e+06", 0},
        {"mean", "2e6", "mean is 2e+06", 0},
        {"mean", "-.25", NULL, -0.25f},
        {"std", "1.5E+1", NULL, 15.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[4200], name[64];
        g_number_key = cases[i].key;
        g_number_value = cases[i].value;
        snprintf(name, sizeof name, "number-%zu.safetensors", i);
        patched_file(name, path, sizeof path, edit_number);
        if (cases[i].needle) {
            expect_error(path, CAPTCHA_ERROR_FORMAT, 1, cases[i].needle, NULL);
            continue;
        }
        captcha_config config;
        captcha_error err = {0};
        assert_int_equal(captcha_model_read_config(path, &config, NULL, 0, &err), CAPTCHA_OK);
        assert_true((!strcmp(cases[i].key, "mean") ? config.mean : config.std) ==
                    cases[i].expected);
    }
}

/* A header whose metadata names a large geometry over a data section far too small for
 * it is refused before the network is allocated (a 73-byte file used to take 1.5 GB,
 * and 4096x4096 with 32 characters failed as out of memory asking for 50 GB). */
static void test_geometry_larger_than_data(void **state)
{
    (void)state;
    char path[4200];
    tmp_path(path, sizeof path, "geometry-only.safetensors");
    json_t *header = json_pack("{s:{s:s, s:s, s:s, s:s, s:s}}", "__metadata__", "input_height",
                               "4096", "input_width", "4096", "length", "32", "charset",
                               "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                               "format", "gst-captcha/1");
    assert_non_null(header);
    /* format gst-captcha/1 needs every key: add the rest from the reference */
    json_t *metadata = json_object_get(header, "__metadata__");
    json_object_set_new(metadata, "channel_order", json_string("BGR"));
    json_object_set_new(metadata, "mean", json_string("0.5"));
    json_object_set_new(metadata, "std", json_string("0.5"));
    write_model(path, header, "", 0);
    json_decref(header);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0, "the data section is 0 bytes",
                 "input 4096x4096, 32 characters of 62 classes needs", NULL);
}

/* Bytes of the data section that belong to no tensor: trailing, or a gap between two
 * tensors (the safetensors reference reader refuses both). */
static void test_data_not_covered(void **state)
{
    (void)state;
    model_bytes m;
    read_model(g_valid, &m);
    unsigned char *data = calloc(m.data_size + 12, 1);
    assert_non_null(data);
    memcpy(data, m.data, m.data_size);
    char path[4200];
    tmp_path(path, sizeof path, "trailing.safetensors");
    write_model(path, m.header, data, m.data_size + 12);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0, "after the last tensor belong to no tensor",
                 NULL);

    /* the last tensor (fc_layers.0.bias) moved 4 bytes on, its data with it */
    json_t *offsets = json_object_get(entry_of(m.header, "fc_layers.0.bias"), "data_offsets");
    json_int_t begin = json_integer_value(json_array_get(offsets, 0));
    json_int_t end = json_integer_value(json_array_get(offsets, 1));
    assert_int_equal(end, (json_int_t)m.data_size);
    json_array_set_new(offsets, 0, json_integer(begin + 4));
    json_array_set_new(offsets, 1, json_integer(end + 4));
    memset(data + begin, 0, 4);
    memcpy(data + begin + 4, m.data + begin, (size_t)(end - begin));
    tmp_path(path, sizeof path, "gap.safetensors");
    write_model(path, m.header, data, m.data_size + 4);
    char needle[96];
    snprintf(needle, sizeof needle, "data bytes [%lld, %lld) belong to no tensor",
             (long long)begin, (long long)begin + 4);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0, needle, "fc_layers.0.bias", NULL);
    free(data);
    free_model(&m);
}

/* A file far larger than any model of ours whose header does not describe it (another
 * network's weights, data appended to a model) is refused from its header alone: the
 * data section is read tensor by tensor once the header has been checked, never whole.
 * Here the valid model extended (sparse, no disk used) to 1 TiB: the loader used to
 * allocate and read the whole data section first ("cannot allocate", or an allocator
 * abort under AddressSanitizer). */
static void test_huge_file_refused_unread(void **state)
{
    (void)state;
    char path[4200];
    copy_of_valid("huge.safetensors", 0, path, sizeof path);
    const off_t huge = (off_t)1 << 40;
    if (truncate(path, huge) != 0) {
        printf("  skipped: this file system cannot hold a 1 TiB sparse file: %s\n",
               strerror(errno));
        return;
    }
    expect_error(path, CAPTCHA_ERROR_FORMAT, 0, "after the last tensor belong to no tensor",
                 NULL);
    assert_int_equal(unlink(path), 0);
}

/* Loads path, expecting success; returns the network (caller destroys). */
static captcha_network *load_ok(const char *path, char *notice, size_t notice_size)
{
    captcha_error err = {0};
    captcha_network *network = NULL;
    captcha_status status =
        captcha_model_load(path, g_backend, &network, notice, notice_size, &err);
    if (status != CAPTCHA_OK)
        fail_msg("load %s: %s", path, err.message);
    return network;
}

/* Every tensor of a and b bit-identical. */
static void assert_same_tensors(captcha_network *a, captcha_network *b)
{
    size_t count = captcha_network_tensor_count(a);
    assert_int_equal(captcha_network_tensor_count(b), count);
    for (size_t i = 0; i < count; i++) {
        const captcha_tensor_info *info = captcha_network_tensor(a, i);
        assert_string_equal(captcha_network_tensor(b, i)->name, info->name);
        float *x = malloc(info->count * sizeof *x), *y = malloc(info->count * sizeof *y);
        assert_non_null(x);
        assert_non_null(y);
        captcha_error err = {0};
        assert_int_equal(captcha_network_read_tensor(a, i, x, &err), CAPTCHA_OK);
        assert_int_equal(captcha_network_read_tensor(b, i, y, &err), CAPTCHA_OK);
        if (memcmp(x, y, info->count * sizeof *x))
            fail_msg("tensor %s differs after the round trip", info->name);
        free(x);
        free(y);
    }
}

/* The file rewritten while captcha_model_load runs: the backend's first upload after the
 * file was opened writes another model there, whose header is 16 bytes longer, in place
 * (as cp onto it does) or, with g_rewrite_by_rename, by a rename over it (as
 * captcha_model_save does). */
static const char *g_rewrite_path;
static int g_rewrite_by_rename;
static const unsigned char *g_rewrite_bytes;
static size_t g_rewrite_size;
static captcha_backend_ops g_rewrite_ops;
static const captcha_backend_ops *g_cpu_ops;

static captcha_status rewrite_on_upload(captcha_backend *backend, void *device_dst,
                                        const void *host_src, size_t bytes, captcha_error *err)
{
    if (g_rewrite_path) {
        char tmp[4300];
        snprintf(tmp, sizeof tmp, "%s.tmp", g_rewrite_path);
        const char *written = g_rewrite_by_rename ? tmp : g_rewrite_path;
        assert_int_equal(captcha_test_write_file(written, g_rewrite_bytes, g_rewrite_size), 0);
        if (g_rewrite_by_rename)
            assert_int_equal(rename(tmp, g_rewrite_path), 0);
        g_rewrite_path = NULL;
    }
    return g_cpu_ops->upload(backend, device_dst, host_src, bytes, err);
}

/* A load gives the model as the file was when opened, or fails saying the file changed:
 * never the old header's tensors read from the new file (the data read after the network
 * was created, at the old offsets, is the other model's bytes shifted by 16). A rename
 * over the file leaves the opened one as it was: that loads. */
static void test_file_changed_while_loading(void **state)
{
    (void)state;
    char path[4200], other_path[4200];
    tmp_path(other_path, sizeof other_path, "other.safetensors");
    captcha_config config;
    captcha_config_reference(&config);
    captcha_network *other = make_network(&config, 8);
    const char *const note[] = {"note", "0123456789abcdef", NULL};
    save_or_fail(other, other_path, note);
    captcha_network_destroy(other);
    size_t size = 0;
    unsigned char *bytes = captcha_test_read_file(other_path, &size);
    assert_non_null(bytes);

    g_cpu_ops = g_backend->ops;
    g_rewrite_ops = *g_cpu_ops;
    g_rewrite_ops.upload = rewrite_on_upload;
    g_rewrite_bytes = bytes;
    g_rewrite_size = size;
    for (g_rewrite_by_rename = 0; g_rewrite_by_rename < 2; g_rewrite_by_rename++) {
        copy_of_valid("changing.safetensors", 0, path, sizeof path);
        g_rewrite_path = path;
        g_backend->ops = &g_rewrite_ops;
        captcha_error err = {0};
        captcha_network *network = NULL;
        captcha_status status = captcha_model_load(path, g_backend, &network, NULL, 0, &err);
        g_backend->ops = g_cpu_ops;
        assert_null(g_rewrite_path); /* rewritten */
        if (status == CAPTCHA_OK) {
            assert_same_tensors(g_network, network);
            captcha_network_destroy(network);
        } else if (g_rewrite_by_rename || !strstr(err.message, path) ||
                   !strstr(err.message, "changed")) {
            fail_msg("%s: %s", g_rewrite_by_rename ? "renamed over" : "written over", err.message);
        } else {
            assert_null(network);
        }
    }
    free(bytes);
}

static void strip_to_charset(json_t *header)
{
    json_t *metadata = json_object_get(header, "__metadata__");
    json_t *charset = json_incref(json_object_get(metadata, "charset"));
    json_object_clear(metadata);
    json_object_set_new(metadata, "charset", charset);
}

static void strip_metadata(json_t *header)
{
    assert_int_equal(json_object_del(header, "__metadata__"), 0);
}

/* ---- seeded mutations ---- */

static uint64_t g_mutation_state = 0x2545F4914F6CDD1Dull;

static uint64_t next_mutation(void)
{
    g_mutation_state ^= g_mutation_state << 13;
    g_mutation_state ^= g_mutation_state >> 7;
    g_mutation_state ^= g_mutation_state << 17;
    return g_mutation_state;
}

/* Writes bytes to path and loads it: either a network (and captcha_model_read_config
 * agrees), or a failure with *out NULL and a message naming path. Returns whether it
 * loaded. */
static int load_mutated(const char *path, const unsigned char *bytes, size_t size, const char *what)
{
    assert_int_equal(captcha_test_write_file(path, bytes, size), 0);
    captcha_error err = {0};
    captcha_network *network = (captcha_network *)&err; /* must be set */
    captcha_status status = captcha_model_load(path, g_backend, &network, NULL, 0, &err);
    if (status != CAPTCHA_OK) {
        assert_null(network);
        if (!strstr(err.message, path))
            fail_msg("%s: the message \"%s\" does not name the file", what, err.message);
        return 0;
    }
    assert_non_null(network);
    captcha_network_destroy(network);
    captcha_config config;
    if (captcha_model_read_config(path, &config, NULL, 0, &err) != CAPTCHA_OK)
        fail_msg("%s: loads, but captcha_model_read_config fails: %s", what, err.message);
    return 1;
}

/* A fixed set of seeded corruptions of a valid file: a changed header size, a truncation or
 * a NaN in an F32 tensor never loads; a byte of the JSON header replaced, inserted or
 * deleted loads (an ignored or still valid field) or fails naming the file. A crash, a read
 * out of bounds or a leak fails the ASan build. */
static void test_seeded_mutations(void **state)
{
    (void)state;
    model_bytes m;
    read_model(g_valid, &m);
    unsigned char *bytes = malloc(m.size + 1);
    assert_non_null(bytes);
    char path[4200], what[128];
    tmp_path(path, sizeof path, "mutated.safetensors");
    for (int i = 0; i < 8; i++) {
        memcpy(bytes, m.bytes, m.size);
        bytes[i] ^= i == 0 ? 0x08 : 0x80; /* byte 0: the header less 8 bytes of padding */
        snprintf(what, sizeof what, "header size byte %d", i);
        if (load_mutated(path, bytes, m.size, what))
            fail_msg("%s changed: loaded", what);
    }
    for (int i = 0; i < 16; i++) {
        size_t cut = i < 4 ? (size_t)i * 3 : i == 15 ? m.size - 1 : next_mutation() % m.size;
        snprintf(what, sizeof what, "truncated to %zu of %zu bytes", cut, m.size);
        if (load_mutated(path, m.bytes, cut, what))
            fail_msg("%s: loaded", what);
    }
    static const char replacements[] = "\"{}[],:09-e.\\ x";
    int loaded = 0;
    for (int i = 0; i < 48; i++) {
        /* 0: a byte replaced by a JSON-significant one, 1: one inserted, 2: one deleted (the
         * header size follows both), 3: a digit replaced by another (a shape, offset or
         * metadata number changed, the JSON still valid) */
        int kind = i % 4;
        size_t pos = 8 + next_mutation() % m.header_size;
        while (kind == 3 && (m.bytes[pos] < '0' || m.bytes[pos] > '9'))
            pos = 8 + (pos - 8 + 1) % m.header_size;
        unsigned char byte =
            kind == 3 ? (unsigned char)('0' + (m.bytes[pos] - '0' + 1 + next_mutation() % 9) % 10)
                      : (unsigned char)replacements[next_mutation() % (sizeof replacements - 1)];
        size_t kept = kind == 2 ? pos + 1 : pos; /* m.bytes[kept..] follow the changed byte */
        size_t size = pos + (kind != 2) + (m.size - kept - (kind == 0 || kind == 3));
        memcpy(bytes, m.bytes, pos);
        bytes[pos] = byte; /* overwritten by the rest when deleting */
        memcpy(bytes + pos + (kind != 2), m.bytes + kept + (kind == 0 || kind == 3),
               m.size - kept - (kind == 0 || kind == 3));
        uint64_t header_size = m.header_size + (kind == 1) - (kind == 2);
        for (int b = 0; b < 8; b++)
            bytes[b] = (unsigned char)(header_size >> (8 * b));
        snprintf(what, sizeof what, "header byte %zu '%c' %s%c", pos - 8, m.bytes[pos],
                 kind == 1   ? "preceded by "
                 : kind == 2 ? "deleted"
                             : "replaced by ",
                 kind == 2 ? ' ' : byte);
        loaded += load_mutated(path, bytes, size, what);
    }
    printf("  %d of 48 header mutations load\n", loaded);
    /* the F32 tensors' byte ranges, from the valid header */
    uint64_t ranges[128][2];
    size_t tensors = 0;
    const char *name;
    json_t *entry;
    json_object_foreach(m.header, name, entry)
    {
        json_t *offsets = json_object_get(entry, "data_offsets");
        const char *dtype = json_string_value(json_object_get(entry, "dtype"));
        if (tensors < 128 && dtype && !strcmp(dtype, "F32")) {
            ranges[tensors][0] = (uint64_t)json_integer_value(json_array_get(offsets, 0));
            ranges[tensors][1] = (uint64_t)json_integer_value(json_array_get(offsets, 1));
            tensors++;
        }
    }
    assert_true(tensors > 40);
    for (int i = 0; i < 8; i++) {
        memcpy(bytes, m.bytes, m.size);
        const uint64_t *range = ranges[next_mutation() % tensors];
        uint64_t at = range[0] + 4 * (next_mutation() % ((range[1] - range[0]) / 4));
        const uint32_t nan_bits = 0x7fc00000u;
        for (int b = 0; b < 4; b++)
            bytes[8 + m.header_size + at + b] = (unsigned char)(nan_bits >> (8 * b));
        snprintf(what, sizeof what, "a NaN at data byte %llu", (unsigned long long)at);
        if (load_mutated(path, bytes, m.size, what))
            fail_msg("%s: loaded", what);
    }
    free(bytes);
    free_model(&m);
}

static void hugging_face_metadata(json_t *header)
{
    json_object_set_new(header, "__metadata__", json_pack("{s:s}", "format", "pt"));
}

/* Only charset present (no "format"): the other keys take the reference values
 * and the notice names them. */
static void test_metadata_partial(void **state)
{
    (void)state;
    captcha_config config;
    captcha_config_reference(&config);
    captcha_error err = {0};
    assert_int_equal(captcha_config_set_charset(&config, "0123456789", &err), CAPTCHA_OK);
    captcha_network *saved = make_network(&config, 11);
    char path[4200], notice[512];
    tmp_path(path, sizeof path, "digits.safetensors");
    save_or_fail(saved, path, NULL);
    model_bytes m;
    read_model(path, &m);
    strip_to_charset(m.header);
    write_model(path, m.header, m.data, m.data_size);
    free_model(&m);

    captcha_network *loaded = load_ok(path, notice, sizeof notice);
    printf("  notice: %s\n", notice);
    const captcha_config *got = captcha_network_config(loaded);
    assert_string_equal(got->charset, "0123456789");
    assert_int_equal(got->charset_size, 10);
    assert_int_equal(got->length, 5);
    assert_int_equal(got->input_height, 32);
    assert_int_equal(got->input_width, 128);
    assert_string_equal(got->channel_order, "BGR");
    assert_non_null(strstr(notice, "without length, input_height, input_width, channel_order, "
                                   "mean, std"));
    assert_non_null(strstr(notice, path));
    assert_same_tensors(saved, loaded);
    captcha_network_destroy(loaded);

    /* the same file without any metadata: the reference charset (36) does
     * not fit a 10-character linear layer */
    read_model(path, &m);
    strip_metadata(m.header);
    write_model(path, m.header, m.data, m.data_size);
    free_model(&m);
    expect_error(path, CAPTCHA_ERROR_FORMAT, 1,
                 "tensor fc_layers.0.weight has shape [50, 1024], expected [180, 1024]",
                 "no gst-captcha metadata", NULL);
    captcha_network_destroy(saved);
}

static void test_no_metadata_uses_reference(void **state)
{
    (void)state;
    void (*edits[2])(json_t *) = {strip_metadata, hugging_face_metadata};
    for (int e = 0; e < 2; e++) {
        char path[4200], notice[512] = "";
        patched_file(e ? "format-pt.safetensors" : "plain.safetensors", path, sizeof path,
                     edits[e]);
        captcha_network *loaded = load_ok(path, notice, sizeof notice);
        printf("  notice: %s\n", notice);
        char expected[4400];
        snprintf(expected, sizeof expected,
                 "%s: no gst-captcha metadata: assumed the reference charset %s, length 5, "
                 "input 128x32 (WxH), BGR, mean 0.5, std 0.5",
                 path, CAPTCHA_REFERENCE_CHARSET);
        assert_string_equal(notice, expected);
        assert_same_tensors(g_network, loaded);
        assert_int_equal(captcha_network_batches_tracked(loaded), 42);
        captcha_network_destroy(loaded);

        captcha_config config;
        char config_notice[512];
        captcha_error err = {0};
        assert_int_equal(
            captcha_model_read_config(path, &config, config_notice, sizeof config_notice, &err),
            CAPTCHA_OK);
        assert_string_equal(config_notice, expected);
    }
}

/* ---- round trip ---- */

static void test_round_trip_bit_exact(void **state)
{
    (void)state;
    captcha_config config;
    captcha_config_reference(&config);
    captcha_error err = {0};
    assert_int_equal(captcha_config_set_charset(&config, "ABCDEFGH23456789\"\\/", &err),
                     CAPTCHA_OK);
    config.length = 4;
    config.input_height = 64;
    config.input_width = 96;
    strcpy(config.channel_order, "RGB");
    config.mean = 0.3f;
    config.std = 0.1234567f;
    captcha_network *saved = make_network(&config, 3);
    captcha_network_set_batches_tracked(saved, 123456789012LL);
    /* values a text or float round trip would change */
    float bias[32];
    int index = captcha_network_find_tensor(saved, "cnn_layers.0.block.1.bias");
    assert_true(index >= 0);
    assert_int_equal(captcha_network_tensor(saved, (size_t)index)->count, 32);
    assert_int_equal(captcha_network_read_tensor(saved, (size_t)index, bias, &err), CAPTCHA_OK);
    const float special[5] = {-0.0f, 1e-40f /* subnormal */, FLT_MAX, -FLT_MIN, 0.1f};
    memcpy(bias, special, sizeof special);
    /* (NaN and Inf are refused on load: test_non_finite_values) */
    assert_int_equal(captcha_network_write_tensor(saved, (size_t)index, bias, &err), CAPTCHA_OK);

    char path[4200], notice[256] = "sentinel";
    tmp_path(path, sizeof path, "round-trip.safetensors");
    const char *extra[] = {"trained_by", "test_model_file", NULL};
    save_or_fail(saved, path, extra);

    captcha_network *loaded = load_ok(path, notice, sizeof notice);
    assert_string_equal(notice, "");
    const captcha_config *got = captcha_network_config(loaded);
    assert_string_equal(got->charset, config.charset);
    assert_int_equal(got->charset_size, config.charset_size);
    assert_int_equal(got->length, 4);
    assert_int_equal(got->input_height, 64);
    assert_int_equal(got->input_width, 96);
    assert_string_equal(got->channel_order, "RGB");
    assert_memory_equal(&got->mean, &config.mean, sizeof(float));
    assert_memory_equal(&got->std, &config.std, sizeof(float));
    assert_int_equal(captcha_network_batches_tracked(loaded), 123456789012LL);
    assert_same_tensors(saved, loaded);

    /* the file itself: header padded with spaces to a multiple of 8, our
     * metadata and the extra key, num_batches_tracked per batch norm, data
     * without gaps, no temporary file left */
    model_bytes m;
    read_model(path, &m);
    assert_int_equal(m.header_size % 8, 0);
    json_t *metadata = json_object_get(m.header, "__metadata__");
    assert_string_equal(json_string_value(json_object_get(metadata, "format")), "gst-captcha/1");
    assert_string_equal(json_string_value(json_object_get(metadata, "trained_by")),
                        "test_model_file");
    assert_string_equal(json_string_value(json_object_get(metadata, "length")), "4");
    size_t batch_norms = 0, bytes = 0;
    const char *key;
    json_t *value;
    json_object_foreach(m.header, key, value)
    {
        if (!strcmp(key, "__metadata__"))
            continue;
        json_t *offsets = json_object_get(value, "data_offsets");
        assert_int_equal(json_integer_value(json_array_get(offsets, 0)), bytes);
        bytes = (size_t)json_integer_value(json_array_get(offsets, 1));
        if (strstr(key, "num_batches_tracked")) {
            batch_norms++;
            assert_string_equal(json_string_value(json_object_get(value, "dtype")), "I64");
            assert_int_equal(json_array_size(json_object_get(value, "shape")), 0);
        }
    }
    assert_int_equal(batch_norms, CAPTCHA_NUM_BLOCKS * 3);
    assert_int_equal(bytes, m.data_size);
    free_model(&m);
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);

    captcha_network_destroy(loaded);
    captcha_network_destroy(saved);
}

/* mean/std are written and read with '.' even when the application's
 * LC_NUMERIC uses a decimal comma. */
static void test_decimal_comma_locale(void **state)
{
    (void)state;
    const char *locales[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
    const char *used = NULL;
    for (size_t i = 0; i < sizeof locales / sizeof locales[0] && !used; i++)
        if (setlocale(LC_NUMERIC, locales[i]))
            used = locales[i];
    if (!used) {
        printf("  skipped: no locale with a decimal comma installed (de_DE, fr_FR)\n");
        skip();
    }
    char path[4200], notice[256];
    tmp_path(path, sizeof path, "locale.safetensors");
    captcha_config config = *captcha_network_config(g_network);
    save_or_fail(g_network, path, NULL);
    captcha_network *loaded = load_ok(path, notice, sizeof notice);
    setlocale(LC_NUMERIC, "C");
    assert_true(captcha_network_config(loaded)->mean == config.mean);
    assert_true(captcha_network_config(loaded)->std == config.std);
    captcha_network_destroy(loaded);
    model_bytes m;
    read_model(path, &m);
    json_t *metadata = json_object_get(m.header, "__metadata__");
    assert_string_equal(json_string_value(json_object_get(metadata, "mean")), "0.5");
    free_model(&m);
}

/* ---- save failures ---- */

static void test_save_into_missing_folder(void **state)
{
    (void)state;
    char path[4200];
    tmp_path(path, sizeof path, "no-such-folder/out.safetensors");
    captcha_error err = {0};
    assert_int_equal(captcha_model_save(g_network, path, NULL, &err), CAPTCHA_ERROR_IO);
    printf("  save: %s\n", err.message);
    assert_non_null(strstr(err.message, path));
    assert_non_null(strstr(err.message, strerror(ENOENT)));

    /* an empty path is refused up front (no ".tmp" in the working folder) */
    assert_int_equal(captcha_model_save(g_network, "", NULL, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "path is empty"));
    assert_int_equal(access(".tmp", F_OK), -1);
    /* reading the config into NULL is refused, not a crash */
    assert_int_equal(captcha_model_read_config(g_valid, NULL, NULL, 0, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "config is NULL"));
}

/* path holds exactly the bytes of text */
static void assert_file_holds(const char *path, const char *text)
{
    size_t size = 0;
    char *content = captcha_test_read_file(path, &size);
    assert_non_null(content);
    assert_int_equal(size, strlen(text));
    assert_memory_equal(content, text, size);
    free(content);
}

static void test_save_failure_keeps_old_file(void **state)
{
    (void)state;
    /* path.tmp cannot be created (a folder of that name is in the way) */
    char path[4200], tmp[4300];
    tmp_path(path, sizeof path, "keep.safetensors");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(captcha_test_write_file(path, "old", 3), 0);
    rmdir(tmp);
    assert_int_equal(mkdir(tmp, 0700), 0);
    captcha_error err = {0};
    assert_int_equal(captcha_model_save(g_network, path, NULL, &err), CAPTCHA_ERROR_IO);
    printf("  save: %s\n", err.message);
    assert_non_null(strstr(err.message, path));
    assert_non_null(strstr(err.message, strerror(EISDIR)));
    assert_file_holds(path, "old");
    assert_int_equal(rmdir(tmp), 0);

    /* the rename fails (path is a folder): the complete temporary file is removed */
    tmp_path(path, sizeof path, "folder.safetensors");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    char inside[4200];
    tmp_path(inside, sizeof inside, "folder.safetensors/keep");
    mkdir(path, 0700);
    assert_int_equal(captcha_test_write_file(inside, "x", 1), 0);
    assert_int_equal(captcha_model_save(g_network, path, NULL, &err), CAPTCHA_ERROR_IO);
    printf("  save: %s\n", err.message);
    assert_non_null(strstr(err.message, path));
    assert_non_null(strstr(err.message, "rename"));
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(access(inside, F_OK), 0);
}

/* A symbolic link at path.tmp (left, or planted in a shared folder) is replaced, not
 * followed: the file it points to keeps its bytes; a leftover path.tmp file is replaced. */
static void test_save_does_not_follow_tmp_link(void **state)
{
    (void)state;
    char path[4200], tmp[4300], victim[4200];
    tmp_path(path, sizeof path, "linked.safetensors");
    tmp_path(victim, sizeof victim, "victim.txt");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(captcha_test_write_file(victim, "precious", 8), 0);
    unlink(tmp);
    assert_int_equal(symlink(victim, tmp), 0);
    captcha_error err = {0};
    assert_int_equal(captcha_model_save(g_network, path, NULL, &err), CAPTCHA_OK);
    assert_file_holds(victim, "precious");
    struct stat st;
    assert_int_equal(lstat(tmp, &st), -1); /* renamed over path */
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    captcha_config config;
    assert_int_equal(captcha_model_read_config(path, &config, NULL, 0, &err), CAPTCHA_OK);
    /* a dangling link, and a leftover regular file, are replaced the same way */
    assert_int_equal(symlink("no-such-target", tmp), 0);
    assert_int_equal(captcha_model_save(g_network, path, NULL, &err), CAPTCHA_OK);
    assert_int_equal(captcha_test_write_file(tmp, "half a model", 12), 0);
    assert_int_equal(captcha_model_save(g_network, path, NULL, &err), CAPTCHA_OK);
    assert_int_equal(lstat(tmp, &st), -1);
    assert_int_equal(captcha_model_read_config(path, &config, NULL, 0, &err), CAPTCHA_OK);
}

static void test_save_rejects_our_key_in_extra_metadata(void **state)
{
    (void)state;
    char path[4200];
    tmp_path(path, sizeof path, "extra.safetensors");
    const char *extra[] = {"charset", "abc", NULL};
    captcha_error err = {0};
    assert_int_equal(captcha_model_save(g_network, path, extra, &err),
                     CAPTCHA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "charset"));
    assert_int_equal(access(path, F_OK), -1);
}

/* ---- PyTorch ---- */

static const char *source_dir(void)
{
    const char *env = getenv("CAPTCHA_SOURCE_DIR");
    return env && *env ? env : CAPTCHA_SOURCE_DIR;
}

/* Skips the current test unless /usr/bin/python3 can import torch. */
static void require_torch(void)
{
    static int available = -1;
    if (available < 0)
        available = system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
    if (!available) {
        printf("  skipped: /usr/bin/python3 cannot import torch\n");
        skip();
    }
}

/* Runs model_file_check.py MODE MODEL RAW; its stdout goes to output. */
static void run_check_script(const char *mode, const char *model, const char *raw, char *output,
                             size_t output_size)
{
    char command[13000];
    snprintf(command, sizeof command,
             "PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 "
             "'%s/tests/reference/model_file_check.py' %s '%s' '%s'",
             source_dir(), mode, model, raw);
    FILE *pipe = popen(command, "r");
    assert_non_null(pipe);
    size_t n = fread(output, 1, output_size - 1, pipe);
    output[n] = '\0';
    int rc = pclose(pipe);
    if (rc != 0)
        fail_msg("%s failed (%d): %s", command, rc, output);
}

/* Every tensor of network, in table order, equals the float32 stream in raw. */
static void assert_tensors_equal_raw(captcha_network *network, const char *raw_path)
{
    size_t size = 0;
    unsigned char *raw = captcha_test_read_file(raw_path, &size);
    assert_non_null(raw);
    size_t total =
        captcha_network_parameter_count(network) + captcha_network_running_stat_count(network);
    assert_int_equal(size, total * sizeof(float));
    size_t offset = 0;
    for (size_t i = 0; i < captcha_network_tensor_count(network); i++) {
        const captcha_tensor_info *info = captcha_network_tensor(network, i);
        float *x = malloc(info->count * sizeof *x);
        assert_non_null(x);
        captcha_error err = {0};
        assert_int_equal(captcha_network_read_tensor(network, i, x, &err), CAPTCHA_OK);
        if (memcmp(x, raw + offset, info->count * sizeof *x))
            fail_msg("tensor %s differs from PyTorch's", info->name);
        offset += info->count * sizeof *x;
        free(x);
    }
    free(raw);
}

static void test_pytorch_file_loads(void **state)
{
    (void)state;
    require_torch();
    char model[4200], raw[4200], output[4096], notice[512] = "";
    tmp_path(model, sizeof model, "pytorch.safetensors");
    tmp_path(raw, sizeof raw, "pytorch.raw");
    run_check_script("export", model, raw, output, sizeof output);
    long long batches_tracked = -1;
    assert_non_null(strstr(output, "num_batches_tracked "));
    batches_tracked = atoll(strstr(output, "num_batches_tracked ") + 20);
    assert_int_equal(batches_tracked, 2);

    captcha_network *loaded = load_ok(model, notice, sizeof notice);
    printf("  notice: %s\n", notice);
    assert_non_null(strstr(notice, "no gst-captcha metadata: assumed the reference charset"));
    assert_tensors_equal_raw(loaded, raw);
    assert_int_equal(captcha_network_batches_tracked(loaded), batches_tracked);
    captcha_network_destroy(loaded);
}

static void test_pytorch_reads_our_file(void **state)
{
    (void)state;
    require_torch();
    char raw[4200], output[4096];
    tmp_path(raw, sizeof raw, "ours.raw");
    run_check_script("import", g_valid, raw, output, sizeof output);
    printf("  python: %s", output);
    assert_non_null(strstr(output, "order ok"));
    assert_non_null(strstr(output, "num_batches_tracked 42\n"));
    assert_null(strstr(output, "num_batches_tracked 42\nnum_batches_tracked")); /* one value */
    assert_tensors_equal_raw(g_network, raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated_before_header_size),
        cmocka_unit_test(test_truncated_inside_header),
        cmocka_unit_test(test_truncated_inside_data),
        cmocka_unit_test(test_header_size_beyond_file),
        cmocka_unit_test(test_header_size_unreasonable),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_header_not_object),
        cmocka_unit_test(test_nonexistent_path),
        cmocka_unit_test(test_not_regular_files),
        cmocka_unit_test(test_empty_path),
        cmocka_unit_test(test_missing_tensor),
        cmocka_unit_test(test_wrong_shape),
        cmocka_unit_test(test_wrong_dtype),
        cmocka_unit_test(test_half_precision_model),
        cmocka_unit_test(test_non_finite_values),
        cmocka_unit_test(test_batches_tracked_wrong_dtype),
        cmocka_unit_test(test_offsets_outside_data),
        cmocka_unit_test(test_offsets_wrong_size),
        cmocka_unit_test(test_overlapping_tensors),
        cmocka_unit_test(test_unknown_tensor),
        cmocka_unit_test(test_metadata_empty_charset),
        cmocka_unit_test(test_metadata_zero_length),
        cmocka_unit_test(test_metadata_non_numeric_length),
        cmocka_unit_test(test_metadata_input_not_multiple_of_32),
        cmocka_unit_test(test_metadata_format_requires_every_key),
        cmocka_unit_test(test_metadata_numbers),
        cmocka_unit_test(test_geometry_larger_than_data),
        cmocka_unit_test(test_data_not_covered),
        cmocka_unit_test(test_huge_file_refused_unread),
        cmocka_unit_test(test_file_changed_while_loading),
        cmocka_unit_test(test_seeded_mutations),
        cmocka_unit_test(test_metadata_partial),
        cmocka_unit_test(test_no_metadata_uses_reference),
        cmocka_unit_test(test_round_trip_bit_exact),
        cmocka_unit_test(test_decimal_comma_locale),
        cmocka_unit_test(test_save_into_missing_folder),
        cmocka_unit_test(test_save_failure_keeps_old_file),
        cmocka_unit_test(test_save_does_not_follow_tmp_link),
        cmocka_unit_test(test_save_rejects_our_key_in_extra_metadata),
        cmocka_unit_test(test_pytorch_file_loads),
        cmocka_unit_test(test_pytorch_reads_our_file),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
