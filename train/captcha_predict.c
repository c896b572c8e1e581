/* captcha-predict: reads captchas with a trained model.
 *
 *   captcha-predict [--model FILE] [--device auto|cpu|cuda] [--batch N] PATH...
 *
 * PATH: image files, or folders (their regular files, not recursive, sorted
 * by name). Output on stdout, one line per image in that order:
 *   path<TAB>text<TAB>confidence      (confidence: product of the per-position
 *                                      softmax probabilities, 4 decimals; path
 *                                      with C escapes: \\ \t \n \r \xHH)
 * and, when the label of every read image's file name (image_io.h rule) has
 * the model's length and only characters of its charset, a last line
 *   accuracy: full=0.XXXX char=0.XXXX n=N
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "dataset.h"
#include "decode.h"
#include "image_io.h"
#include "model_file.h"
#include "network.h"
#include "preprocess.h"
#include "tool_util.h"

#define PROGRAM "captcha-predict"
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define message(...) captcha_tool_message(PROGRAM, __VA_ARGS__)

static void usage(FILE *stream)
{
    fputs("Usage: " PROGRAM " [--model FILE] [options] PATH...\n"
          "Reads the captcha in each image (PNG, JPEG, ... decoded by content). PATH is an\n"
          "image file or a folder (its files, not recursive, sorted by name).\n"
          "\n"
          "  --model FILE   model file (safetensors; default: $CAPTCHA_MODEL, else the\n"
          "                 bundled model, installed or in the source tree, as the\n"
          "                 captchaocr element uses)\n"
          "  --device D     auto | cpu | cuda (gpu: the same as cuda; default auto: CUDA\n"
          "                 if usable, else CPU)\n"
          "  --batch N      images per forward pass (default 32; the CPU kernels differ by\n"
          "                 batch size, so a confidence can differ in its 4th decimal)\n"
          "  --threads N    CPU threads, at most 1024 (default 0: all cores)\n"
          "  -h, --help     this help\n"
          "\n"
          "Output (stdout), one line per image: PATH<TAB>TEXT<TAB>CONFIDENCE, the confidence\n"
          "being the product of the per-position softmax probabilities (4 decimals). PATH is\n"
          "escaped: a backslash, tab, newline, carriage return or other control byte is\n"
          "written as a C escape (\\\\ \\t \\n \\r \\xHH). When the label of every image's\n"
          "file name (without extension and without any suffix from the first '_') has the\n"
          "model's length and only characters of its charset, a last line\n"
          "  accuracy: full=0.XXXX char=0.XXXX n=N\n"
          "compares the texts with those labels.\n"
          "\n"
          "A file that cannot be read or decoded is reported on stderr and skipped; the others\n"
          "are still read. In a folder, hidden files (whose name starts with '.') and\n"
          "subfolders are ignored with a note; broken symbolic links, FIFOs and devices are\n"
          "reported and counted as skipped.\n"
          "Exit status: 0 every image read; 1 some image skipped, or the model does not load\n"
          "(the reason is printed); 2 usage error.\n"
          "Environment: OMP_WAIT_POLICY, when unset, is set to PASSIVE (the program restarts\n"
          "itself once): spinning OpenMP threads waste most of the time on a busy machine.\n",
          stream);
}

int main(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"model", required_argument, NULL, 'm'}, {"device", required_argument, NULL, 'd'},
        {"batch", required_argument, NULL, 'b'}, {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    captcha_tool_prefer_passive_openmp(argv);
    const char *model_path = NULL;
    captcha_device device = CAPTCHA_DEVICE_AUTO;
    long batch = 32, threads = 0;
    captcha_error err = {0};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'd':
            if (captcha_device_parse(optarg, &device, &err) != CAPTCHA_OK) {
                message("--device: %s", err.message);
                return EXIT_USAGE;
            }
            break;
        case 'b':
            if (!captcha_tool_parse_long(PROGRAM, "--batch", optarg, 1, 4096, &batch))
                return EXIT_USAGE;
            break;
        case 't':
            if (!captcha_tool_parse_long(PROGRAM, "--threads", optarg, 0, CAPTCHA_MAX_THREADS,
                                         &threads))
                return EXIT_USAGE;
            break;
        case 'h': usage(stdout); return 0;
        default: {
            char option[8];
            message("unknown option or missing value: %s (see --help)",
                    captcha_tool_refused_option(argc, argv, option, sizeof option));
            return EXIT_USAGE;
        }
        }
    }
    const char *model_origin = "";
    if (!model_path) {
        const char *searched;
        const char *env = getenv("CAPTCHA_MODEL");
        if (env && env[0])
            model_origin = " (from $CAPTCHA_MODEL)";
        model_path = captcha_tool_default_model(&searched);
        if (!model_path) {
            message("no --model given, CAPTCHA_MODEL is unset, and the bundled model is neither "
                    "%s (see --help)",
                    searched);
            return EXIT_USAGE;
        }
    }
    if (!model_path[0]) {
        message("--model: the path is empty");
        return EXIT_USAGE;
    }
    if (optind >= argc) {
        message("no image or folder given (see --help)");
        return EXIT_USAGE;
    }
    captcha_tool_warn_threads(PROGRAM, threads);

    int code = EXIT_RUNTIME;
    size_t skipped = 0;
    captcha_backend *backend = NULL;
    captcha_network *network = NULL;
    captcha_path_list paths = {0};
    float *input = NULL, *logits = NULL;
    captcha_result *results = NULL;
    char(*labels)[CAPTCHA_MAX_LENGTH + 1] = NULL;

    for (int i = optind; i < argc; i++) {
        captcha_status status;
        if (captcha_is_directory(argv[i]) == 1)
            status =
                captcha_path_list_read_folder(&paths, argv[i], PROGRAM, stderr, &skipped, &err);
        else
            status = captcha_path_list_add(&paths, argv[i], &err);
        if (status == CAPTCHA_ERROR_IO) {
            message("warning: skipping %s", err.message);
            skipped++;
        } else if (status != CAPTCHA_OK) {
            message("%s", err.message);
            goto done;
        }
    }

    char fallback[512], notice[512];
    /* the model loader would wait forever on a FIFO and read /dev/zero until memory runs out */
    if (!captcha_tool_check_regular(model_path, notice, sizeof notice)) {
        message("cannot load the model: %s%s: %s", model_path, model_origin, notice);
        goto done;
    }
    if (captcha_backend_create(device, 0, (int)threads, &backend, fallback, sizeof fallback,
                               &err) != CAPTCHA_OK) {
        message("cannot create the %s backend: %s", device == CAPTCHA_DEVICE_CUDA ? "CUDA" : "CPU",
                err.message);
        goto done;
    }
    if (fallback[0])
        message("warning: CUDA not used: %s", fallback);
    if (captcha_model_load(model_path, backend, &network, notice, sizeof notice, &err) !=
        CAPTCHA_OK) {
        message("cannot load the model%s: %s", model_origin, err.message);
        goto done;
    }
    if (notice[0])
        message("%s", notice);
    const captcha_config *config = captcha_network_config(network);
    const int classes = captcha_config_classes(config);
    const size_t image_floats = 3 * (size_t)config->input_height * (size_t)config->input_width;

    /* no more than the images: a large --batch over few images (or a large input
     * geometry) would reserve memory that no batch uses */
    if ((size_t)batch > paths.count && paths.count > 0)
        batch = (long)paths.count;
    input = malloc((size_t)batch * image_floats * sizeof *input);
    logits = malloc((size_t)batch * (size_t)classes * sizeof *logits);
    results = calloc(paths.count ? paths.count : 1, sizeof *results);
    labels = calloc(paths.count ? paths.count : 1, sizeof *labels);
    char *read_ok = calloc(paths.count ? paths.count : 1, 1);
    if (!input || !logits || !results || !labels || !read_ok) {
        free(read_ok);
        message("out of memory for a batch of %ld images of %dx%d (try a smaller --batch)", batch,
                config->input_width, config->input_height);
        goto done;
    }

    /* Decode and run in batches; print in input order as each batch finishes. */
    size_t next = 0, read_count = 0;
    int labelled = 1;
    size_t full = 0, chars = 0;
    while (next < paths.count) {
        int n = 0;
        size_t batch_paths[4096];
        while (n < batch && next < paths.count) {
            const char *path = paths.paths[next];
            captcha_error image_err = {0};
            captcha_rgb_image image;
            if (captcha_rgb_image_read(path, &image, &image_err) != CAPTCHA_OK) {
                message("warning: skipping %s", image_err.message);
                skipped++;
                next++;
                continue;
            }
            captcha_image view = captcha_rgb_image_view(&image);
            captcha_status status =
                captcha_preprocess(&view, NULL, config, input + (size_t)n * image_floats, &err);
            captcha_rgb_image_free(&image);
            if (status != CAPTCHA_OK) {
                message("warning: skipping %s: %s", path, err.message);
                skipped++;
                next++;
                continue;
            }
            batch_paths[n++] = next++;
        }
        if (n == 0)
            continue;
        if (captcha_network_forward(network, input, n, CAPTCHA_MODE_EVAL, logits, &err) !=
            CAPTCHA_OK) {
            message("%s", err.message);
            free(read_ok);
            goto done;
        }
        for (int i = 0; i < n; i++) {
            size_t index = batch_paths[i];
            captcha_result *r = &results[index];
            if (captcha_decode(config, logits + (size_t)i * (size_t)classes, r, &err) !=
                CAPTCHA_OK) {
                message("%s: %s", paths.paths[index], err.message);
                free(read_ok);
                goto done;
            }
            read_ok[index] = 1;
            read_count++;
            /* backslashes too: a file name cannot break the PATH<TAB>TEXT<TAB>CONFIDENCE
             * line, and the escapes read back unambiguously */
            captcha_tool_write_escaped(stdout, paths.paths[index], 1);
            printf("\t%s\t%.4f\n", r->text, r->confidence);
            int length =
                captcha_label_from_path(paths.paths[index], labels[index], sizeof labels[0]);
            /* a name that cannot be a label of this model (another length, a character
             * outside its charset: a space, an upper-case letter) turns the accuracy off */
            if (length != config->length ||
                strspn(labels[index], config->charset) != (size_t)length) {
                labelled = 0;
            } else {
                int correct = captcha_correct_chars(labels[index], r->text, config->length);
                chars += (size_t)correct;
                full += correct == config->length;
            }
        }
        fflush(stdout);
    }
    free(read_ok);
    if (labelled && read_count > 0)
        printf("accuracy: full=%.4f char=%.4f n=%zu\n", (double)full / (double)read_count,
               (double)chars / ((double)read_count * config->length), read_count);
    if (read_count == 0 && paths.count == 0)
        message("no image could be read: the folder(s) given hold no files (folders are read "
                "without their subfolders)");
    else if (read_count == 0)
        message("no image could be read");
    if (skipped)
        message("%zu file(s) skipped", skipped);
    code = skipped || read_count == 0 ? EXIT_RUNTIME : 0;

done:
    if (fflush(stdout) != 0 && code == 0) {
        message("cannot write the output: %s", strerror(errno));
        code = EXIT_RUNTIME;
    }
    free(input);
    free(logits);
    free(results);
    free(labels);
    captcha_network_destroy(network);
    captcha_backend_destroy(backend);
    captcha_path_list_free(&paths);
    return code;
}
