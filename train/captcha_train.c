/* captcha-train: trains the reference network on a folder of labelled images.
 *
 *   captcha-train --train DIR [--val DIR] --out FILE [options]
 *
 * Data: every regular file of the folder, decoded by content (image_io.h),
 * labelled by its file name (the part before the extension and before the
 * first '_'). Training: MultiLabelSoftMarginLoss, Adam (torch semantics),
 * batch-norm in training mode, in one of two recipes:
 *   reference  the reference Python training: Adam lr 1e-2, batch 16, 25
 *              epochs, constant learning rate, no augmentation, reshuffled
 *              every epoch;
 *   default    Adam peak lr 2e-3 with linear warm-up (2 epochs, at most a quarter
 *              of the run) and cosine
 *              decay, L2 weight decay 1e-4, batch 16, 40 epochs, and a seeded random
 *              affine warp plus brightness/contrast/noise jitter of every
 *              training image before the resize.
 *
 * Determinism: the shuffle of epoch e and the augmentation of the j-th image
 * of epoch e are pure functions of (seed, e, j) (captcha_mix64), so the
 * training state at a step boundary is the network's buffers, the Adam and
 * batch-norm counters and (epoch, step). The checkpoint holds exactly that;
 * a run resumed from it produces the same weights as one that never stopped.
 *
 * Checkpoint file (own format, little-endian, written to FILE.tmp and renamed):
 *   "GSTCAPCK" uint32 version (2; version 1, without best_char_accuracy and the best
 *           epoch's buffers, is still read)
 *   config: char charset[129], int32 length, input_height, input_width,
 *           char channel_order[4], float mean, std
 *   recipe: int32 recipe, epochs, batch, warmup_epochs, augment;
 *           float learning_rate, weight_decay; uint64 seed
 *   data:   uint64 image count, uint64 hash of the sorted labels
 *   state:  int32 epoch, step (next step to run), best_epoch;
 *           int64 adam_steps, batches_tracked; double best_accuracy,
 *           [v2: double best_char_accuracy; int64 best_batches_tracked; uint64 --val
 *           image count, hash of its labels (0, 0: no --val); int32 threads;] double
 *           epoch_loss_sum;
 *           int64 epoch_loss_steps
 *   buffers: uint64 parameter_count, running_stat_count; parameters, running
 *           stats, Adam m, Adam v (float32); [v2: int32 has_best; when 1, the
 *           parameters and running stats of the best epoch on --val, the model its
 *           --out holds, so that a resumed run can write it to another --out]
 *   uint64 hash (captcha_mix64 chain) of everything before it
 */
#include <errno.h>
#include <ctype.h>
#include <fcntl.h>
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "captcha-build-config.h"
#include "captcha_config.h"
#include "dataset.h"
#include "decode.h"
#include "model_file.h"
#include "network.h"
#include "tool_util.h"

#define PROGRAM "captcha-train"
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define message(...) captcha_tool_message(PROGRAM, __VA_ARGS__)

typedef enum { RECIPE_DEFAULT = 0, RECIPE_REFERENCE } recipe_id;

static const char *const recipe_names[] = {"default", "reference"};

typedef struct {
    int epochs;
    int batch;
    float learning_rate;
    float weight_decay;
    int warmup_epochs; /* linear warm-up, then cosine decay to 1% (0: constant rate) */
    int augment;       /* 1: the default recipe's augmentation */
} recipe;

/* The reference recipe: the reference Python training loop's values. */
static const recipe reference_recipe = {25, 16, 1e-2f, 0.0f, 0, 0};
static const recipe default_recipe = {40, 16, 2e-3f, 1e-4f, 2, 1};

/* The default recipe's augmentation, in source-image terms. */
static const captcha_augment default_augment = {
    .rotate_degrees = 4.0f,
    .scale = 0.08f,
    .aspect = 0.08f,
    .shear = 0.15f,
    .shift_x = 0.05f,
    .shift_y = 0.08f,
    .brightness = 0.1f,
    .contrast = 0.2f,
    .noise = 0.03f,
};

typedef struct {
    const char *train_dir, *val_dir, *out_path, *checkpoint_path, *resume_path, *init_path;
    const char *charset; /* NULL: reference charset; "auto": from the labels */
    recipe_id recipe_kind;
    recipe training;
    int recipe_given, epochs_given, batch_given, lr_given, weight_decay_given, seed_given;
    uint64_t seed;
    captcha_device device;
    int threads;
    int input_width, input_height, input_given;
    float progress_seconds; /* --progress: seconds between progress lines off a terminal */
    long stop_after_steps; /* hidden test option: behave as if interrupted before this step */
} options;

static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int signal_number)
{
    stop_signal = signal_number;
}

static void usage(FILE *stream)
{
    fprintf(
        stream,
        "Usage: " PROGRAM " --train DIR [--val DIR] --out FILE [options]\n"
        "Trains the captcha network on the images of DIR (PNG, JPEG, ... decoded by content),\n"
        "each labelled by its file name without extension and without any suffix from the\n"
        "first '_' (abcde.png and abcde_1.png are both \"abcde\").\n"
        "\n"
        "  --train DIR        training images (required)\n"
        "  --val DIR          validation images; accuracy after each epoch, the best epoch\n"
        "                     is saved (whole-code accuracy; ties: per-character accuracy)\n"
        "                     (default: none; the last epoch is saved)\n"
        "  --out FILE         model file to write (safetensors, required)\n"
        "  --checkpoint FILE  checkpoint written after every epoch and on interruption\n"
        "                     (default: FILE of --out + \".ckpt\"); a new run does not\n"
        "                     replace one that holds an unfinished run\n"
        "  --init MODEL       start from the weights and running statistics of a model\n"
        "                     file (fine-tuning; its charset, length and input size are\n"
        "                     used; Adam starts afresh), e.g. the bundled model\n"
        "  --resume FILE      continue from a checkpoint, with the same --train and --val\n"
        "                     (the recipe, seed and batch come from it; --epochs may\n"
        "                     extend the run)\n"
        "  --recipe NAME      default | reference (default: default)\n"
        "                       default:   Adam lr 2e-3, warm-up 2 epochs (at most a quarter\n"
        "                                  of the epochs) + cosine decay to 1%%,\n"
        "                                  weight decay 1e-4, batch 16, 40 epochs,\n"
        "                                  random affine/brightness/contrast/noise augmentation\n"
        "                       reference: Adam lr 1e-2 constant, batch 16, 25 epochs,\n"
        "                                  no augmentation (the reference Python training)\n"
        "  --epochs N         epochs (default: the recipe's)\n"
        "  --batch N          images per step, >= 2 (default: the recipe's)\n"
        "  --lr X             (peak) learning rate (default: the recipe's)\n"
        "  --weight-decay X   Adam L2 weight decay (default: the recipe's)\n"
        "  --seed N           seed of initialization, shuffling and augmentation (default 1);\n"
        "                     same seed, data, threads and machine give identical weights\n"
        "                     (on a GPU only with CAPTCHA_CUDA_DETERMINISTIC=1)\n"
        "  --charset S|auto   characters, in logit order (default "
        "%s;\n"
        "                     auto: the sorted set of characters of the training labels)\n"
        "  --input WxH        network input size, multiples of 32 (default 128x32)\n"
        "  --device D         auto | cpu | cuda (gpu: the same as cuda; default auto: CUDA\n"
        "                     if usable, else CPU)\n"
        "  --threads N        CPU threads, at most 1024 (default 0: all cores; more than\n"
        "                     the cores is many times slower)\n"
        "  --progress S       when stderr is not a terminal (a log file, a pipe): a progress\n"
        "                     line every S seconds within an epoch (default 60; 0: none);\n"
        "                     on a terminal one line is redrawn after every step\n"
        "  -h, --help         this help\n"
        "\n"
        "Files that are not images or do not decode are skipped with a warning and counted.\n"
        "Errors in labels (characters outside the charset, different lengths) stop before\n"
        "training. SIGINT/SIGTERM: the checkpoint is written at the next step boundary and\n"
        "the program exits with 128 + the signal number; --resume continues the run.\n"
        "Exit status: 0 done, 1 runtime error, 2 usage error, 130/143 interrupted.\n"
        "Environment: OMP_WAIT_POLICY, when unset, is set to PASSIVE (the program restarts\n"
        "itself once): spinning OpenMP threads waste most of the time on a busy machine.\n",
        CAPTCHA_REFERENCE_CHARSET);
}

static int parse_int(const char *name, const char *text, long minimum, long maximum, long *out)
{
    return captcha_tool_parse_long(PROGRAM, name, text, minimum, maximum, out);
}

static int parse_float(const char *name, const char *text, double minimum, float *out)
{
    char *end;
    errno = 0;
    /* a decimal number (1e-3, .5, 2): strtod would also take leading white space, a '+',
     * hexadecimal (0x1p-7), "inf" and "nan" */
    int plain = (isdigit((unsigned char)text[0]) || text[0] == '.' || text[0] == '-') &&
                !strpbrk(text, "xXnN");
    double value = strtod(text, &end);
    /* FLT_MAX: a larger value would become infinite as the float it is stored in */
    if (!plain || errno || end == text || *end || !isfinite(value) || value < minimum ||
        value > FLT_MAX) {
        message("%s: expected a number in %g..%g, got \"%s\"", name, minimum, (double)FLT_MAX,
                text);
        return 0;
    }
    *out = (float)value;
    return 1;
}

enum {
    OPT_TRAIN = 256,
    OPT_VAL,
    OPT_OUT,
    OPT_CHECKPOINT,
    OPT_RESUME,
    OPT_INIT,
    OPT_RECIPE,
    OPT_EPOCHS,
    OPT_BATCH,
    OPT_LR,
    OPT_WEIGHT_DECAY,
    OPT_SEED,
    OPT_CHARSET,
    OPT_INPUT,
    OPT_DEVICE,
    OPT_THREADS,
    OPT_PROGRESS,
    OPT_STOP_AFTER_STEPS,
};

/* Returns -1 to continue, else an exit status. */
static int parse_options(int argc, char **argv, options *opt)
{
    static const struct option long_options[] = {
        {"train", required_argument, NULL, OPT_TRAIN},
        {"val", required_argument, NULL, OPT_VAL},
        {"out", required_argument, NULL, OPT_OUT},
        {"checkpoint", required_argument, NULL, OPT_CHECKPOINT},
        {"resume", required_argument, NULL, OPT_RESUME},
        {"init", required_argument, NULL, OPT_INIT},
        {"recipe", required_argument, NULL, OPT_RECIPE},
        {"epochs", required_argument, NULL, OPT_EPOCHS},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"lr", required_argument, NULL, OPT_LR},
        {"weight-decay", required_argument, NULL, OPT_WEIGHT_DECAY},
        {"seed", required_argument, NULL, OPT_SEED},
        {"charset", required_argument, NULL, OPT_CHARSET},
        {"input", required_argument, NULL, OPT_INPUT},
        {"device", required_argument, NULL, OPT_DEVICE},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"progress", required_argument, NULL, OPT_PROGRESS},
        {"stop-after-steps", required_argument, NULL, OPT_STOP_AFTER_STEPS}, /* tests */
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(opt, 0, sizeof *opt);
    opt->seed = 1;
    opt->input_width = CAPTCHA_REFERENCE_INPUT_WIDTH;
    opt->input_height = CAPTCHA_REFERENCE_INPUT_HEIGHT;
    opt->stop_after_steps = -1;
    opt->progress_seconds = 60.0f;
    long epochs = 0, batch = 0, value;
    float lr = 0.0f, weight_decay = 0.0f;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_TRAIN: opt->train_dir = optarg; break;
        case OPT_VAL: opt->val_dir = optarg; break;
        case OPT_OUT: opt->out_path = optarg; break;
        case OPT_CHECKPOINT: opt->checkpoint_path = optarg; break;
        case OPT_RESUME: opt->resume_path = optarg; break;
        case OPT_INIT: opt->init_path = optarg; break;
        case OPT_RECIPE:
            opt->recipe_given = 1;
            if (!strcmp(optarg, "default"))
                opt->recipe_kind = RECIPE_DEFAULT;
            else if (!strcmp(optarg, "reference"))
                opt->recipe_kind = RECIPE_REFERENCE;
            else {
                message("--recipe: expected default or reference, got \"%s\"", optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_EPOCHS:
            if (!parse_int("--epochs", optarg, 1, 1000000, &epochs))
                return EXIT_USAGE;
            opt->epochs_given = 1;
            break;
        case OPT_BATCH:
            if (!parse_int("--batch", optarg, 2, 65536, &batch))
                return EXIT_USAGE;
            opt->batch_given = 1;
            break;
        case OPT_LR:
            if (!parse_float("--lr", optarg, 0.0, &lr))
                return EXIT_USAGE;
            opt->lr_given = 1;
            break;
        case OPT_WEIGHT_DECAY:
            if (!parse_float("--weight-decay", optarg, 0.0, &weight_decay))
                return EXIT_USAGE;
            opt->weight_decay_given = 1;
            break;
        case OPT_SEED: {
            char *end;
            errno = 0;
            unsigned long long seed = strtoull(optarg, &end, 10);
            /* strtoull skips leading space and negates a '-': accept digits only */
            if (errno || !isdigit((unsigned char)optarg[0]) || *end) {
                message("--seed: expected a non-negative integer, got \"%s\"", optarg);
                return EXIT_USAGE;
            }
            opt->seed = seed;
            opt->seed_given = 1;
            break;
        }
        case OPT_CHARSET: opt->charset = optarg; break;
        case OPT_INPUT: {
            int w, h, n = 0;
            /* digits, 'x', digits: sscanf alone would take " 64x+32" */
            const char *x = strchr(optarg, 'x');
            int plain = x && x > optarg && isdigit((unsigned char)x[1]) &&
                        strspn(optarg, "0123456789") == (size_t)(x - optarg) &&
                        strspn(x + 1, "0123456789") == strlen(x + 1);
            if (!plain || sscanf(optarg, "%dx%d%n", &w, &h, &n) != 2 || optarg[n] || w < 32 ||
                h < 32 ||
                w % 32 || h % 32 || w > CAPTCHA_MAX_INPUT_SIDE || h > CAPTCHA_MAX_INPUT_SIDE) {
                message("--input: expected WIDTHxHEIGHT, multiples of 32 in 32..%d (e.g. 128x32), "
                        "got \"%s\"",
                        CAPTCHA_MAX_INPUT_SIDE, optarg);
                return EXIT_USAGE;
            }
            opt->input_width = w;
            opt->input_height = h;
            opt->input_given = 1;
            break;
        }
        case OPT_DEVICE: {
            captcha_error err = {0};
            if (captcha_device_parse(optarg, &opt->device, &err) != CAPTCHA_OK) {
                message("--device: %s", err.message);
                return EXIT_USAGE;
            }
            break;
        }
        case OPT_THREADS:
            if (!parse_int("--threads", optarg, 0, CAPTCHA_MAX_THREADS, &value))
                return EXIT_USAGE;
            opt->threads = (int)value;
            break;
        case OPT_PROGRESS:
            if (!parse_float("--progress", optarg, 0.0, &opt->progress_seconds))
                return EXIT_USAGE;
            break;
        case OPT_STOP_AFTER_STEPS:
            if (!parse_int("--stop-after-steps", optarg, 0, 1L << 40, &opt->stop_after_steps))
                return EXIT_USAGE;
            break;
        case 'h': usage(stdout); return 0;
        case ':':
        case '?':
        default: {
            char option[8];
            const char *refused = captcha_tool_refused_option(argc, argv, option, sizeof option);
            if (optopt)
                message("option %s needs a value or is unknown (see --help)", refused);
            else
                message("unknown option %s (see --help)", refused);
            return EXIT_USAGE;
        }
        }
    }
    if (optind < argc) {
        message("unexpected argument \"%s\" (see --help)", argv[optind]);
        return EXIT_USAGE;
    }
    if (!opt->train_dir || !opt->out_path) {
        message("%s is required (see --help)", !opt->train_dir ? "--train DIR" : "--out FILE");
        return EXIT_USAGE;
    }
    if (opt->init_path && opt->resume_path) {
        message("--init and --resume exclude each other (a checkpoint already holds weights)");
        return EXIT_USAGE;
    }
    const char *const named[][2] = {
        {"--train", opt->train_dir},    {"--val", opt->val_dir},
        {"--out", opt->out_path},       {"--checkpoint", opt->checkpoint_path},
        {"--resume", opt->resume_path}, {"--init", opt->init_path}};
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (named[i][1] && !named[i][1][0]) {
            message("%s: the path is empty", named[i][0]);
            return EXIT_USAGE;
        }
    if (opt->init_path && (opt->charset || opt->input_given)) {
        message("--charset/--input cannot be combined with --init: they come from %s",
                opt->init_path);
        return EXIT_USAGE;
    }
    opt->training = opt->recipe_kind == RECIPE_REFERENCE ? reference_recipe : default_recipe;
    if (opt->epochs_given)
        opt->training.epochs = (int)epochs;
    if (opt->batch_given)
        opt->training.batch = (int)batch;
    if (opt->lr_given)
        opt->training.learning_rate = lr;
    if (opt->weight_decay_given)
        opt->training.weight_decay = weight_decay;
    return -1;
}

/* ---- checkpoint ---- */

typedef struct {
    recipe_id recipe_kind;
    recipe training;
    uint64_t seed;
    uint64_t image_count, label_hash;
    int epoch, step, best_epoch;
    int64_t adam_steps, batches_tracked;
    double best_accuracy, epoch_loss_sum;
    double best_char_accuracy; /* ties of best_accuracy go to the better one of these */
    int64_t best_batches_tracked; /* the best epoch's num_batches_tracked (its model file) */
    /* --val: image count and label hash (0 and 0 without --val); known (1) from version 2 */
    uint64_t val_count, val_hash;
    int val_known;
    int threads; /* CPU threads of the run (identical weights need the same); 0: unknown (v1) */
    int64_t epoch_loss_steps;
} train_state;

#define CHECKPOINT_VERSION 2

static const char checkpoint_magic[8] = {'G', 'S', 'T', 'C', 'A', 'P', 'C', 'K'};

typedef struct {
    FILE *stream;
    uint64_t hash;
    int failed;
} hashed_stream;

static void hash_bytes(uint64_t *hash, const void *data, size_t size)
{
    const uint8_t *bytes = data;
    for (size_t i = 0; i < size; i++)
        *hash = captcha_mix64(*hash ^ bytes[i]);
}

static void put(hashed_stream *s, const void *data, size_t size)
{
    if (s->failed)
        return;
    if (fwrite(data, 1, size, s->stream) != size)
        s->failed = 1;
    hash_bytes(&s->hash, data, size);
}

static void get(hashed_stream *s, void *data, size_t size)
{
    if (s->failed)
        return;
    if (fread(data, 1, size, s->stream) != size) {
        s->failed = 1;
        memset(data, 0, size);
        return;
    }
    hash_bytes(&s->hash, data, size);
}

static void put_i32(hashed_stream *s, int32_t v)
{
    put(s, &v, sizeof v);
}
static void put_i64(hashed_stream *s, int64_t v)
{
    put(s, &v, sizeof v);
}
static int32_t get_i32(hashed_stream *s)
{
    int32_t v;
    get(s, &v, sizeof v);
    return v;
}
static int64_t get_i64(hashed_stream *s)
{
    int64_t v;
    get(s, &v, sizeof v);
    return v;
}

/* Hash of the training labels (in file order). */
static uint64_t label_hash(const captcha_dataset *data)
{
    uint64_t hash = data->count;
    for (size_t i = 0; i < data->count; i++)
        hash_bytes(&hash, data->labels[i], strlen(data->labels[i]) + 1);
    return hash;
}

/* best: the best epoch's parameters and running stats (best[0], best[1]), or NULLs. */
static captcha_status save_checkpoint(const char *path, captcha_network *network,
                                      const train_state *state, float *const *best,
                                      captcha_error *err)
{
    const captcha_config *config = captcha_network_config(network);
    size_t parameters = captcha_network_parameter_count(network);
    size_t running = captcha_network_running_stat_count(network);
    size_t largest = parameters > running ? parameters : running;
    float *host = malloc(largest * sizeof *host);
    char *tmp_path = captcha_tool_tmp_path(path);
    if (!host || !tmp_path) {
        free(host);
        free(tmp_path);
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    captcha_status status = CAPTCHA_OK;
    hashed_stream s = {captcha_file_create_temporary(tmp_path, path, err), 0, 0};
    if (!s.stream) {
        status = CAPTCHA_ERROR_IO;
        goto done;
    }
    put(&s, checkpoint_magic, sizeof checkpoint_magic);
    put_i32(&s, CHECKPOINT_VERSION);
    char charset[CAPTCHA_MAX_CHARSET + 1] = {0};
    memcpy(charset, config->charset, strlen(config->charset));
    put(&s, charset, sizeof charset);
    put_i32(&s, config->length);
    put_i32(&s, config->input_height);
    put_i32(&s, config->input_width);
    put(&s, config->channel_order, sizeof config->channel_order);
    put(&s, &config->mean, sizeof(float));
    put(&s, &config->std, sizeof(float));
    put_i32(&s, state->recipe_kind);
    put_i32(&s, state->training.epochs);
    put_i32(&s, state->training.batch);
    put_i32(&s, state->training.warmup_epochs);
    put_i32(&s, state->training.augment);
    put(&s, &state->training.learning_rate, sizeof(float));
    put(&s, &state->training.weight_decay, sizeof(float));
    put_i64(&s, (int64_t)state->seed);
    put_i64(&s, (int64_t)state->image_count);
    put_i64(&s, (int64_t)state->label_hash);
    put_i32(&s, state->epoch);
    put_i32(&s, state->step);
    put_i32(&s, state->best_epoch);
    put_i64(&s, captcha_network_adam_step_count(network));
    put_i64(&s, captcha_network_batches_tracked(network));
    put(&s, &state->best_accuracy, sizeof(double));
    put(&s, &state->best_char_accuracy, sizeof(double));
    put_i64(&s, state->best_batches_tracked);
    put_i64(&s, (int64_t)state->val_count);
    put_i64(&s, (int64_t)state->val_hash);
    put_i32(&s, state->threads);
    put(&s, &state->epoch_loss_sum, sizeof(double));
    put_i64(&s, state->epoch_loss_steps);
    put_i64(&s, (int64_t)parameters);
    put_i64(&s, (int64_t)running);
    static const captcha_buffer_id ids[] = {CAPTCHA_BUFFER_PARAMETERS, CAPTCHA_BUFFER_RUNNING_STATS,
                                            CAPTCHA_BUFFER_ADAM_M, CAPTCHA_BUFFER_ADAM_V};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0] && status == CAPTCHA_OK; i++) {
        status = captcha_network_read_buffer(network, ids[i], host, err);
        if (status == CAPTCHA_OK)
            put(&s, host,
                (ids[i] == CAPTCHA_BUFFER_RUNNING_STATS ? running : parameters) * sizeof(float));
    }
    int has_best = best && best[0] && best[1];
    put_i32(&s, has_best);
    if (has_best) {
        put(&s, best[0], parameters * sizeof(float));
        put(&s, best[1], running * sizeof(float));
    }
    uint64_t hash = s.hash;
    put(&s, &hash, sizeof hash);
    if (fclose(s.stream) != 0)
        s.failed = 1;
    if (status == CAPTCHA_OK && s.failed)
        status = captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot write %s: %s", path, tmp_path,
                              strerror(errno));
    if (status == CAPTCHA_OK && rename(tmp_path, path) != 0)
        status = captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot rename %s over it: %s", path,
                              tmp_path, strerror(errno));
    if (status != CAPTCHA_OK)
        remove(tmp_path);
done:
    free(host);
    free(tmp_path);
    return status;
}

/* Reads a checkpoint: the config into *config and the state into *state; the
 * buffers are left in *buffers (6 arrays: parameters, running stats, m, v, and the
 * best epoch's parameters and running stats, those two NULL when the checkpoint has
 * none; counts in counts[0..1]) for the caller to load into a network. */
static captcha_status load_checkpoint(const char *path, captcha_config *config, train_state *state,
                                      float **buffers, size_t *counts, captcha_error *err)
{
    memset(state, 0, sizeof *state);
    for (int i = 0; i < 6; i++)
        buffers[i] = NULL;
    char reason[128];
    hashed_stream s = {captcha_tool_open_regular(path, reason, sizeof reason), 0, 0};
    if (!s.stream)
        return captcha_fail(err, CAPTCHA_ERROR_IO, "%s: cannot open the checkpoint: %s", path,
                            reason);
    captcha_status status = CAPTCHA_OK;
    char magic[8];
    get(&s, magic, sizeof magic);
    int32_t version = get_i32(&s);
    if (s.failed || memcmp(magic, checkpoint_magic, sizeof magic) || version < 1 ||
        version > CHECKPOINT_VERSION) {
        int magic_ok = !s.failed && !memcmp(magic, checkpoint_magic, sizeof magic);
        /* a safetensors file starts with a little-endian header size: high bytes 0 */
        int looks_like_model = !s.failed && !magic_ok && magic[6] == 0 && magic[7] == 0;
        if (s.failed && !memcmp(magic, checkpoint_magic, sizeof magic))
            status = captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: truncated checkpoint", path);
        else
            status = captcha_fail(
                err, CAPTCHA_ERROR_FORMAT, "%s: not a captcha-train checkpoint%s", path,
                magic_ok           ? " of this version (written by another captcha-train)"
                : looks_like_model ? " (a model file? start from one with --init)"
                : s.failed         ? " (shorter than a checkpoint's first 12 bytes)"
                                   : "");
        goto done;
    }
    captcha_config_reference(config);
    char charset[CAPTCHA_MAX_CHARSET + 1];
    get(&s, charset, sizeof charset);
    charset[CAPTCHA_MAX_CHARSET] = '\0';
    config->length = get_i32(&s);
    config->input_height = get_i32(&s);
    config->input_width = get_i32(&s);
    get(&s, config->channel_order, sizeof config->channel_order);
    config->channel_order[3] = '\0';
    get(&s, &config->mean, sizeof(float));
    get(&s, &config->std, sizeof(float));
    state->recipe_kind = get_i32(&s) == RECIPE_REFERENCE ? RECIPE_REFERENCE : RECIPE_DEFAULT;
    state->training.epochs = get_i32(&s);
    state->training.batch = get_i32(&s);
    state->training.warmup_epochs = get_i32(&s);
    state->training.augment = get_i32(&s);
    get(&s, &state->training.learning_rate, sizeof(float));
    get(&s, &state->training.weight_decay, sizeof(float));
    state->seed = (uint64_t)get_i64(&s);
    state->image_count = (uint64_t)get_i64(&s);
    state->label_hash = (uint64_t)get_i64(&s);
    state->epoch = get_i32(&s);
    state->step = get_i32(&s);
    state->best_epoch = get_i32(&s);
    state->adam_steps = get_i64(&s);
    state->batches_tracked = get_i64(&s);
    get(&s, &state->best_accuracy, sizeof(double));
    /* version 1 kept the first epoch of equal full accuracy: no tie ever wins */
    state->best_char_accuracy = DBL_MAX;
    if (version >= 2) {
        get(&s, &state->best_char_accuracy, sizeof(double));
        state->best_batches_tracked = get_i64(&s);
        state->val_count = (uint64_t)get_i64(&s);
        state->val_hash = (uint64_t)get_i64(&s);
        state->val_known = 1;
        state->threads = get_i32(&s);
    }
    get(&s, &state->epoch_loss_sum, sizeof(double));
    state->epoch_loss_steps = get_i64(&s);
    int64_t parameters = get_i64(&s), running = get_i64(&s);
    if (s.failed || captcha_config_set_charset(config, charset, err) != CAPTCHA_OK ||
        captcha_config_validate(config, err) != CAPTCHA_OK || parameters <= 0 || running <= 0 ||
        parameters > (1 << 28) || running > (1 << 28) || state->training.batch < 2 ||
        state->epoch < 0 || state->step < 0) {
        status =
            captcha_fail(err, CAPTCHA_ERROR_FORMAT, "%s: truncated or corrupt checkpoint", path);
        goto done;
    }
    counts[0] = (size_t)parameters;
    counts[1] = (size_t)running;
    /* the buffers must fit in what is left of the file: a corrupt count is refused here,
     * not after reading a gigabyte */
    struct stat info;
    long position = ftell(s.stream);
    if (fstat(fileno(s.stream), &info) == 0 && position >= 0 &&
        (uint64_t)(info.st_size - position) <
            (3 * (uint64_t)parameters + (uint64_t)running) * sizeof(float) + sizeof(uint64_t)) {
        status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                              "%s: truncated or corrupt checkpoint (%lld parameters and %lld "
                              "running statistics do not fit in its %lld bytes)",
                              path, (long long)parameters, (long long)running,
                              (long long)info.st_size);
        goto done;
    }
    /* parameters, running stats, m, v; then (version 2) has_best and, when 1, the best
     * epoch's parameters and running stats */
    int32_t has_best = 0;
    for (int i = 0; i < 4 + 2 * has_best && status == CAPTCHA_OK; i++) {
        size_t n = i % 4 == 1 ? counts[1] : counts[0];
        buffers[i] = malloc(n * sizeof(float));
        if (!buffers[i])
            status = captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
        else
            get(&s, buffers[i], n * sizeof(float));
        if (i == 3 && version >= 2) {
            has_best = get_i32(&s);
            if (has_best < 0 || has_best > 1)
                status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                                      "%s: truncated or corrupt checkpoint", path);
        }
    }
    uint64_t expected = s.hash, found = 0;
    get(&s, &found, sizeof found);
    if (status == CAPTCHA_OK && (s.failed || found != expected || fgetc(s.stream) != EOF))
        status = captcha_fail(err, CAPTCHA_ERROR_FORMAT,
                              "%s: truncated or corrupt checkpoint "
                              "(checksum or size mismatch)",
                              path);
done:
    fclose(s.stream);
    if (status != CAPTCHA_OK)
        for (int i = 0; i < 6; i++) {
            free(buffers[i]);
            buffers[i] = NULL;
        }
    return status;
}

/* ---- training ---- */

/* Permutation of 0..n-1 for one epoch: Fisher-Yates from (seed, epoch). */
/* One training batch to build: step `step` of epoch `epoch` in the epoch's order, augmented
 * with keys derived from (epoch, image position), so it is the same whichever thread builds
 * it and when. */
typedef struct {
    const captcha_dataset *train;
    const size_t *order;
    const captcha_config *config;
    const captcha_augment *augment; /* NULL: none */
    uint64_t augment_seed;
    int epoch, step, batch;
    uint64_t *keys;   /* [batch] */
    uint8_t *scratch; /* batch * captcha_dataset_scratch_size */
    float *input;     /* [batch, 3, H, W] */
    float *targets;   /* [batch, classes] */
    int threads;      /* OpenMP threads for building (0: the default) */
    int n;            /* images in this batch (the last one may be short) */
    captcha_status status;
    captcha_error err;
} batch_job;

static void build_batch(batch_job *job)
{
    size_t first = (size_t)job->step * (size_t)job->batch;
    job->n = (int)(job->train->count - first < (size_t)job->batch ? job->train->count - first
                                                                   : (size_t)job->batch);
    for (int i = 0; i < job->n; i++)
        job->keys[i] = captcha_mix64(job->augment_seed ^ ((uint64_t)job->epoch << 32 ^
                                                          (uint64_t)(first + (size_t)i)));
    job->status = captcha_dataset_batch(job->train, job->order + first, job->n, job->config,
                                        job->augment, job->keys, job->scratch, job->input,
                                        job->targets, &job->err);
}

static void *build_batch_thread(void *arg)
{
    batch_job *job = arg;
    if (job->threads > 0) /* a new thread starts from the default, not from --threads */
        omp_set_num_threads(job->threads);
    build_batch(job);
    return NULL;
}

static void epoch_order(uint64_t seed, int epoch, size_t *order, size_t n)
{
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    uint64_t key = captcha_mix64(seed ^ 0x73687566666c65ULL) ^ ((uint64_t)epoch << 32);
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(captcha_mix64(key ^ captcha_mix64(i)) % i);
        size_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
}

/* Steps per epoch: full batches plus the remainder when it holds >= 2 images
 * (training-mode batch norm needs two); a remainder of one image waits for
 * another epoch's shuffle. */
static int steps_per_epoch(size_t images, int batch)
{
    size_t steps = images / (size_t)batch;
    if (images % (size_t)batch >= 2)
        steps++;
    return (int)steps;
}

/* Learning rate at a global step: constant without warm-up; else linear
 * warm-up from lr/25 to lr over warmup steps, then cosine decay to lr/100. */
static float learning_rate_at(const recipe *r, int64_t step, int64_t step_count, int64_t warmup)
{
    if (r->warmup_epochs <= 0)
        return r->learning_rate;
    const double peak = r->learning_rate, start = peak / 25.0, floor_rate = peak / 100.0;
    if (step < warmup)
        return (float)(start + (peak - start) * (double)step / (double)warmup);
    double t = step_count > warmup ? (double)(step - warmup) / (double)(step_count - warmup) : 1.0;
    if (t > 1.0)
        t = 1.0;
    return (float)(floor_rate + 0.5 * (peak - floor_rate) * (1.0 + cos(M_PI * t)));
}

typedef struct {
    double full, chars;
} accuracy;

static captcha_status evaluate(captcha_network *network, const captcha_dataset *data, float *input,
                               float *logits, int batch, accuracy *result, captcha_error *err)
{
    const captcha_config *config = captcha_network_config(network);
    size_t full = 0, chars = 0;
    size_t *indices = malloc((size_t)batch * sizeof *indices);
    if (!indices)
        return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "out of memory evaluating");
    captcha_status status = CAPTCHA_OK;
    const int classes = captcha_config_classes(config);
    for (size_t first = 0; first < data->count && status == CAPTCHA_OK; first += (size_t)batch) {
        int n = (int)(data->count - first < (size_t)batch ? data->count - first : (size_t)batch);
        for (int i = 0; i < n; i++)
            indices[i] = first + (size_t)i;
        status =
            captcha_dataset_batch(data, indices, n, config, NULL, NULL, NULL, input, NULL, err);
        if (status == CAPTCHA_OK)
            status = captcha_network_forward(network, input, n, CAPTCHA_MODE_EVAL, logits, err);
        for (int i = 0; i < n && status == CAPTCHA_OK; i++) {
            captcha_result decoded;
            status = captcha_decode(config, logits + (size_t)i * (size_t)classes, &decoded, err);
            if (status != CAPTCHA_OK)
                break;
            int correct =
                captcha_correct_chars(data->labels[first + i], decoded.text, config->length);
            chars += (size_t)correct;
            full += correct == config->length;
        }
    }
    free(indices);
    result->full = (double)full / (double)data->count;
    result->chars = (double)chars / ((double)data->count * config->length);
    return status;
}

static void format_duration(double seconds, char *out, size_t size)
{
    long s = lround(seconds);
    if (s >= 3600)
        snprintf(out, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else if (s >= 60)
        snprintf(out, size, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(out, size, "%lds", s);
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CHECKPOINT.lock, the file main() holds a lock on while the run uses the checkpoint
 * (new string; NULL when out of memory). */
static char *lock_file_path(const char *checkpoint_path)
{
    char *lock = malloc(strlen(checkpoint_path) + sizeof ".lock");
    if (lock)
        sprintf(lock, "%s.lock", checkpoint_path);
    return lock;
}

/* Refuses (printing why) the files where one that this run writes would
 * replace one it reads or another it writes: --out and the checkpoint, the
 * checkpoint or --out and --init (the first checkpoint or model would replace
 * the model being fine-tuned), --out and --resume. */
static int check_distinct_files(const options *opt, const char *checkpoint_path)
{
    if (captcha_tool_same_file(opt->out_path, checkpoint_path)) {
        message("--out and the checkpoint are the same file (%s and %s): the checkpoint would "
                "replace the model; give another --checkpoint (default: --out + \".ckpt\")",
                opt->out_path, checkpoint_path);
        return 0;
    }
    if (opt->init_path && captcha_tool_same_file(checkpoint_path, opt->init_path)) {
        message("the checkpoint and --init are the same file (%s and %s): the first checkpoint "
                "would replace the model being fine-tuned; give another --checkpoint",
                checkpoint_path, opt->init_path);
        return 0;
    }
    if (opt->init_path && captcha_tool_same_file(opt->out_path, opt->init_path)) {
        message("--out and --init are the same file (%s and %s): the model would replace the "
                "one being fine-tuned, which an unlucky run would lose; give another --out",
                opt->out_path, opt->init_path);
        return 0;
    }
    if (opt->resume_path && captcha_tool_same_file(opt->out_path, opt->resume_path)) {
        message("--out and --resume are the same file (%s and %s): the model would replace the "
                "checkpoint it continues; give another --out",
                opt->out_path, opt->resume_path);
        return 0;
    }
    /* Each output is first written to PATH.tmp, then renamed over PATH: that file, too, must
     * be none of the others (writing it would replace it, the rename would remove it). */
    char *tmp[2] = {captcha_tool_tmp_path(opt->out_path), captcha_tool_tmp_path(checkpoint_path)};
    const char *tmp_of[2] = {"--out", "the checkpoint"};
    const char *others[4][2] = {{"--out", opt->out_path},
                                {"the checkpoint", checkpoint_path},
                                {"--init", opt->init_path},
                                {"--resume", opt->resume_path}};
    /* the lock file beside the checkpoint (main), created if absent and removed at exit */
    char *lock = lock_file_path(checkpoint_path);
    int ok = tmp[0] && tmp[1] && lock;
    if (!ok)
        message("out of memory");
    const char *lock_clashes[5][2] = {{"--out", opt->out_path},
                                      {"--out's temporary file", tmp[0]},
                                      {"the checkpoint's temporary file", tmp[1]},
                                      {"--init", opt->init_path},
                                      {"--resume", opt->resume_path}};
    for (int o = 0; ok && o < 5; o++)
        if (lock_clashes[o][1] && captcha_tool_same_file(lock, lock_clashes[o][1])) {
            message("the checkpoint %s has the lock file %s, which is %s: the lock is removed "
                    "when the run ends; give another --checkpoint",
                    checkpoint_path, lock, lock_clashes[o][0]);
            ok = 0;
        }
    for (int t = 0; ok && t < 2; t++)
        for (int o = 0; ok && o < 4; o++)
            if (o != t && others[o][1] && captcha_tool_same_file(tmp[t], others[o][1])) {
                message("%s %s is written through %s, which is %s: writing it would replace "
                        "that file, and the rename to %s would remove it; give another %s",
                        tmp_of[t], t ? checkpoint_path : opt->out_path, tmp[t], others[o][0],
                        t ? checkpoint_path : opt->out_path, t ? "--checkpoint" : "--out");
                ok = 0;
            }
    free(tmp[0]);
    free(tmp[1]);
    free(lock);
    return ok;
}

/* Refuses (printing why) to write a run's checkpoint over an existing file that holds
 * another unfinished run, which the first epoch's checkpoint would replace (e.g. the
 * command of an interrupted run given again without --resume, or --resume of one run
 * with the --out of another), or over a file that is no checkpoint at all. A finished run's checkpoint is replaced: its model is in
 * the --out it wrote. */
static int check_checkpoint_free(const char *checkpoint_path)
{
    struct stat info;
    if (stat(checkpoint_path, &info) != 0 || !S_ISREG(info.st_mode))
        return 1; /* nothing there (check_writable reports what cannot be written) */
    FILE *f = fopen(checkpoint_path, "rb");
    char magic[sizeof checkpoint_magic] = {0};
    size_t got = f ? fread(magic, 1, sizeof magic, f) : 0;
    if (f)
        fclose(f);
    if (info.st_size > 0 &&
        (got != sizeof magic || memcmp(magic, checkpoint_magic, sizeof magic) != 0)) {
        message("the checkpoint %s exists and is not a captcha-train checkpoint: a new run would "
                "replace it; give another --checkpoint (default: --out + \".ckpt\")",
                checkpoint_path);
        return 0;
    }
    captcha_config config;
    train_state state;
    float *buffers[6];
    size_t counts[2];
    captcha_error err = {0};
    captcha_status status =
        load_checkpoint(checkpoint_path, &config, &state, buffers, counts, &err);
    for (int i = 0; i < 6; i++)
        free(buffers[i]);
    if (status == CAPTCHA_OK && state.epoch >= state.training.epochs)
        return 1;
    if (status == CAPTCHA_OK)
        message("the checkpoint %s holds an unfinished run (%d of %d epochs done%s): a new run "
                "would replace it; continue it with --resume %s, or give another --checkpoint "
                "(or remove the file)",
                checkpoint_path, state.epoch, state.training.epochs,
                state.step > 0 ? ", and part of the next" : "", checkpoint_path);
    else
        message("the checkpoint %s exists but cannot be read (%s): a new run would replace it; "
                "give another --checkpoint (or remove the file)",
                checkpoint_path, err.message);
    return 0;
}

/* Refuses (printing why) an existing --out or checkpoint, or the PATH.tmp
 * each is first written to (then renamed over PATH), that is one of the images
 * of set (read from the folder given by option): writing it would replace or
 * remove a training or validation image. */
static int check_not_an_image(const captcha_dataset *set, const char *option, const char *out_path,
                              const char *checkpoint_path)
{
    const char *outputs[2] = {out_path, checkpoint_path};
    const char *names[2] = {"--out", "the checkpoint"};
    for (int w = 0; w < 4; w++) {
        const char *output = outputs[w / 2];
        char *path = w % 2 ? captcha_tool_tmp_path(output) : strdup(output);
        if (!path) {
            message("out of memory");
            return 0;
        }
        struct stat target, image;
        size_t i = set->count;
        if (stat(path, &target) == 0) /* a new file is no image */
            for (i = 0; i < set->count; i++)
                if (stat(set->paths[i], &image) == 0 && image.st_dev == target.st_dev &&
                    image.st_ino == target.st_ino)
                    break;
        if (i < set->count) {
            const char *other = w / 2 == 0 ? "--out" : "--checkpoint";
            /* named twice only when the image's path is another name for it */
            int same = !strcmp(path, set->paths[i]);
            if (w % 2)
                message("%s %s is written through %s, %s%s%san image of %s: the image would be "
                        "removed; give another %s",
                        names[w / 2], output, path, same ? "" : "which is ",
                        same ? "" : set->paths[i], same ? "" : ", ", option, other);
            else
                message("%s %s%s%s%s is an image of %s: writing it would replace the image; "
                        "give another %s",
                        names[w / 2], path, same ? "" : " (", same ? "" : set->paths[i],
                        same ? "" : ")", option, other);
            free(path);
            return 0;
        }
        free(path);
    }
    return 1;
}

/* Checks before any training that path can be written: it is not a folder or
 * another non-regular file (the final rename would fail), and path.tmp (the
 * file captcha_model_save writes first) can be created (it is removed again). */
static int check_writable(const char *path, const char *what)
{
    struct stat info;
    if (stat(path, &info) == 0 && !S_ISREG(info.st_mode)) {
        message("%s %s cannot be written: it is not a regular file (%s)", what, path,
                captcha_tool_file_kind(info.st_mode));
        return 0;
    }
    char *tmp = captcha_tool_tmp_path(path);
    if (!tmp)
        return 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    int ok = fd >= 0;
    if (ok) {
        close(fd);
        unlink(tmp);
    } else if (errno == EEXIST) {
        fd = open(tmp, O_WRONLY);
        ok = fd >= 0;
        if (ok)
            close(fd);
    }
    if (!ok)
        message("%s %s cannot be written: cannot create %s: %s", what, path, tmp, strerror(errno));
    free(tmp);
    return ok;
}

static captcha_status save_model(captcha_network *network, const options *opt,
                                 const train_state *state, size_t train_count, int epochs_done,
                                 const accuracy *val, captcha_error *err)
{
    char epochs[32], epoch[32], batch[32], lr[32], wd[32], seed[32], images[32], full[32],
        chars[32];
    snprintf(epochs, sizeof epochs, "%d", state->training.epochs);
    snprintf(epoch, sizeof epoch, "%d", epochs_done);
    snprintf(batch, sizeof batch, "%d", state->training.batch);
    snprintf(lr, sizeof lr, "%g", state->training.learning_rate);
    snprintf(wd, sizeof wd, "%g", state->training.weight_decay);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)state->seed);
    snprintf(images, sizeof images, "%zu", train_count);
    const char *metadata[32];
    int n = 0;
    metadata[n++] = "trainer";
    metadata[n++] = PROGRAM " " CAPTCHA_VERSION;
    metadata[n++] = "recipe";
    metadata[n++] = recipe_names[state->recipe_kind];
    metadata[n++] = "epochs";
    metadata[n++] = epochs;
    metadata[n++] = "epoch";
    metadata[n++] = epoch;
    metadata[n++] = "batch";
    metadata[n++] = batch;
    metadata[n++] = "learning_rate";
    metadata[n++] = lr;
    metadata[n++] = "weight_decay";
    metadata[n++] = wd;
    metadata[n++] = "augmentation";
    metadata[n++] = state->training.augment ? "affine+photometric" : "none";
    metadata[n++] = "seed";
    metadata[n++] = seed;
    metadata[n++] = "train_images";
    metadata[n++] = images;
    if (val) {
        snprintf(full, sizeof full, "%.4f", val->full);
        snprintf(chars, sizeof chars, "%.4f", val->chars);
        metadata[n++] = "val_accuracy";
        metadata[n++] = full;
        metadata[n++] = "val_char_accuracy";
        metadata[n++] = chars;
    }
    metadata[n] = NULL;
    return captcha_model_save(network, opt->out_path, metadata, err);
}

/* Copies the network's parameters and running stats into best[0], best[1] (allocated
 * on first use): the model just saved to --out as the best on --val. */
static captcha_status keep_best(captcha_network *network, float **best, captcha_error *err)
{
    const size_t counts[2] = {captcha_network_parameter_count(network),
                              captcha_network_running_stat_count(network)};
    static const captcha_buffer_id ids[2] = {CAPTCHA_BUFFER_PARAMETERS,
                                             CAPTCHA_BUFFER_RUNNING_STATS};
    for (int i = 0; i < 2; i++) {
        if (!best[i] && !(best[i] = malloc(counts[i] * sizeof(float))))
            return captcha_fail(err, CAPTCHA_ERROR_OUT_OF_MEMORY, "out of memory");
        CAPTCHA_TRY(captcha_network_read_buffer(network, ids[i], best[i], err));
    }
    return CAPTCHA_OK;
}

/* Appends " OPTION VALUE" to *line (realloc'ed), the value single-quoted for a shell
 * when it holds anything but [A-Za-z0-9_./:=+-]. */
static void append_option(char **line, const char *option, const char *value)
{
    if (!*line || !value)
        return;
    size_t quoted = 2;
    for (const char *c = value; *c; c++)
        quoted += *c == '\'' ? 4 : 1;
    size_t used = strlen(*line);
    char *grown = realloc(*line, used + strlen(option) + quoted + 3);
    if (!grown) {
        free(*line);
        *line = NULL;
        return;
    }
    *line = grown;
    char *out = grown + used;
    out += sprintf(out, " %s ", option);
    int plain = *value != '\0';
    for (const char *c = value; *c; c++)
        plain = plain && (isalnum((unsigned char)*c) || strchr("_./:=+-", *c));
    if (plain) {
        strcpy(out, value);
        return;
    }
    *out++ = '\'';
    for (const char *c = value; *c; c++) {
        if (*c == '\'') { /* ' -> '\'' */
            memcpy(out, "'\\''", 4);
            out += 4;
        } else {
            *out++ = *c;
        }
    }
    *out++ = '\'';
    *out = '\0';
}

/* The command that continues an interrupted run: program as it was started (argv[0]),
 * the same data, outputs, device and threads (identical weights need the same threads),
 * and --resume from its checkpoint (the recipe and seed come from the checkpoint).
 * NULL when out of memory. */
static char *resume_command_line(const char *program, const options *opt,
                                 const char *checkpoint_path)
{
    char *line = strdup("");
    append_option(&line, "", program);
    if (line)
        memmove(line, line + 2, strlen(line + 2) + 1); /* drop the leading "  " */
    append_option(&line, "--train", opt->train_dir);
    append_option(&line, "--val", opt->val_dir);
    append_option(&line, "--out", opt->out_path);
    append_option(&line, "--checkpoint", opt->checkpoint_path);
    append_option(&line, "--resume", checkpoint_path);
    char number[24];
    if (opt->epochs_given) {
        snprintf(number, sizeof number, "%d", opt->training.epochs);
        append_option(&line, "--epochs", number);
    }
    if (opt->device != CAPTCHA_DEVICE_AUTO)
        append_option(&line, "--device", opt->device == CAPTCHA_DEVICE_CUDA ? "cuda" : "cpu");
    if (opt->threads > 0) {
        snprintf(number, sizeof number, "%d", opt->threads);
        append_option(&line, "--threads", number);
    }
    return line;
}

int main(int argc, char **argv)
{
    captcha_tool_prefer_passive_openmp(argv);
    options opt;
    int code = parse_options(argc, argv, &opt);
    if (code >= 0)
        return code;

    captcha_error err = {0};
    captcha_dataset train = {0}, val = {0};
    captcha_backend *backend = NULL;
    captcha_network *network = NULL;
    /* parameters, running stats, Adam m, v from --resume; [4], [5]: the best epoch's
     * parameters and running stats on --val (from --resume, then kept by this run) */
    float *resume_buffers[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    float *input = NULL, *targets = NULL, *logits = NULL;
    size_t *order = NULL;
    uint64_t *keys = NULL;
    uint8_t *scratch = NULL;
    /* the batch built beside the GPU's step (CUDA backend only) */
    float *next_input = NULL, *next_targets = NULL;
    uint64_t *next_keys = NULL;
    uint8_t *next_scratch = NULL;
    char *checkpoint_path = NULL, *lock_path = NULL;
    int lock_fd = -1;
    code = EXIT_RUNTIME;

    train_state state = {0};
    state.recipe_kind = opt.recipe_kind;
    state.training = opt.training;
    state.seed = opt.seed;
    state.best_accuracy = -1.0;
    state.best_char_accuracy = -1.0;
    state.best_epoch = -1;
    captcha_config config;
    captcha_config_reference(&config);
    size_t resume_counts[2] = {0, 0};

    if (opt.checkpoint_path) {
        checkpoint_path = strdup(opt.checkpoint_path);
    } else {
        checkpoint_path = malloc(strlen(opt.out_path) + sizeof ".ckpt");
        if (checkpoint_path)
            sprintf(checkpoint_path, "%s.ckpt", opt.out_path);
    }
    if (!checkpoint_path) {
        message("out of memory");
        goto done;
    }
    if (!check_distinct_files(&opt, checkpoint_path)) {
        code = EXIT_USAGE;
        goto done;
    }

    if (opt.resume_path) {
        if (load_checkpoint(opt.resume_path, &config, &state, resume_buffers, resume_counts,
                            &err) != CAPTCHA_OK) {
            message("%s", err.message);
            goto done;
        }
        if (opt.recipe_given && opt.recipe_kind != state.recipe_kind)
            message("warning: --recipe ignored: resuming the checkpoint's recipe %s",
                    recipe_names[state.recipe_kind]);
        /* name only the options given with another value than the checkpoint's */
        char ignored[96] = "";
        /* a --batch above the run's image count was lowered to that count */
        int batch_clamped = (uint64_t)state.training.batch == state.image_count &&
                            opt.training.batch > state.training.batch;
        if (opt.batch_given && opt.training.batch != state.training.batch && !batch_clamped)
            strcat(ignored, " --batch");
        if (opt.lr_given && opt.training.learning_rate != state.training.learning_rate)
            strcat(ignored, " --lr");
        if (opt.weight_decay_given && opt.training.weight_decay != state.training.weight_decay)
            strcat(ignored, " --weight-decay");
        if (opt.seed_given && opt.seed != state.seed)
            strcat(ignored, " --seed");
        if (opt.charset)
            strcat(ignored, " --charset");
        if (ignored[0])
            message("warning:%s ignored: resuming with the checkpoint's values (batch %d, lr %g, "
                    "weight decay %g, seed %llu, charset \"%s\")",
                    ignored, state.training.batch, state.training.learning_rate,
                    state.training.weight_decay, (unsigned long long)state.seed, config.charset);
        if (opt.input_given &&
            (opt.input_width != config.input_width || opt.input_height != config.input_height))
            message("warning: --input %dx%d ignored: resuming with the checkpoint's input %dx%d",
                    opt.input_width, opt.input_height, config.input_width, config.input_height);
        /* The run chose its best epoch on --val: without it the next epochs would be
         * saved unconditionally, replacing that best model in --out. */
        if (state.best_epoch >= 1 && !opt.val_dir) {
            message("%s: the run kept its best epoch on --val (epoch %d, validation full "
                    "accuracy %.4f): give the same --val to continue it (without it, --out would "
                    "get each later epoch instead of the best)",
                    opt.resume_path, state.best_epoch, state.best_accuracy);
            code = EXIT_USAGE;
            goto done;
        }
        /* done: the epochs completed, plus the one begun when the checkpoint is mid-epoch */
        const int begun = state.epoch + (state.step > 0);
        if (opt.epochs_given && opt.training.epochs < begun) {
            message("--epochs %d: the checkpoint %s has done %d epoch(s)%s already: training "
                    "cannot go back; give --epochs %d or more",
                    opt.training.epochs, opt.resume_path, state.epoch,
                    state.step > 0 ? " and part of the next" : "", begun);
            code = EXIT_USAGE;
            goto done;
        }
        if (opt.epochs_given && opt.training.epochs != state.training.epochs) {
            message("warning: --epochs %d replaces the checkpoint's %d (the learning-rate "
                    "schedule changes)",
                    opt.training.epochs, state.training.epochs);
            state.training.epochs = opt.training.epochs;
        }
    }

    /* ---- data and labels, all checked before anything is trained or written ---- */
    if (captcha_dataset_load(opt.train_dir, PROGRAM, stderr, &train, &err) != CAPTCHA_OK) {
        message("--train: %s", err.message);
        goto done;
    }
    if (train.skipped)
        message("warning: %zu file(s) of %s skipped (not images or unreadable)", train.skipped,
                opt.train_dir);
    if (opt.init_path) {
        /* Fine-tuning: the model's geometry, charset and length; the labels must fit them. */
        char reason[128];
        FILE *probe = captcha_tool_open_regular(opt.init_path, reason, sizeof reason);
        char magic[sizeof checkpoint_magic] = {0};
        if (!probe) {
            /* the model loader would wait forever on a FIFO: refused here */
            message("--init: %s: %s", opt.init_path, reason);
            goto done;
        } else {
            size_t got = fread(magic, 1, sizeof magic, probe);
            fclose(probe);
            if (got == sizeof magic && !memcmp(magic, checkpoint_magic, sizeof magic)) {
                message("--init: %s is a captcha-train checkpoint, not a model file: continue "
                        "it with --resume",
                        opt.init_path);
                goto done;
            }
        }
        if (captcha_model_read_config(opt.init_path, &config, NULL, 0, &err) != CAPTCHA_OK) {
            message("--init: %s", err.message);
            goto done;
        }
    } else if (!opt.resume_path) {
        int length;
        if (captcha_dataset_label_length(&train, &length, &err) != CAPTCHA_OK) {
            message("%s: %s", opt.train_dir, err.message);
            goto done;
        }
        config.length = length;
        config.input_width = opt.input_width;
        config.input_height = opt.input_height;
        char charset[CAPTCHA_MAX_CHARSET + 1];
        const char *chosen = opt.charset ? opt.charset : CAPTCHA_REFERENCE_CHARSET;
        if (opt.charset && !strcmp(opt.charset, "auto")) {
            if (captcha_dataset_charset(&train, charset, &err) != CAPTCHA_OK) {
                message("--charset auto: %s", err.message);
                goto done;
            }
            chosen = charset;
        }
        if (captcha_config_set_charset(&config, chosen, &err) != CAPTCHA_OK) {
            message("--charset: %s", err.message);
            code = EXIT_USAGE;
            goto done;
        }
        if (captcha_config_validate(&config, &err) != CAPTCHA_OK) {
            message("%s", err.message);
            goto done;
        }
    }
    /* a new model's charset can follow the labels; a model's (--init, --resume) cannot */
    const char *charset_hint =
        opt.init_path || opt.resume_path ? NULL : "--charset auto takes the labels' own characters";
    if (captcha_dataset_check_labels(&train, &config, charset_hint, &err) != CAPTCHA_OK) {
        message("%s", err.message);
        goto done;
    }
    if (opt.resume_path && label_hash(&train) != state.label_hash) {
        message("%s: the training images' labels differ from those of the checkpoint %s (%llu "
                "images then, %zu now): resuming would not reproduce the run",
                opt.train_dir, opt.resume_path, (unsigned long long)state.image_count, train.count);
        goto done;
    }
    state.image_count = train.count;
    state.label_hash = label_hash(&train);
    if (!check_not_an_image(&train, "--train", opt.out_path, checkpoint_path)) {
        code = EXIT_USAGE;
        goto done;
    }
    if (opt.val_dir) {
        if (captcha_dataset_load(opt.val_dir, PROGRAM, stderr, &val, &err) != CAPTCHA_OK) {
            message("--val: %s", err.message);
            goto done;
        }
        if (val.skipped)
            message("warning: %zu file(s) of %s skipped (not images or unreadable)", val.skipped,
                    opt.val_dir);
        if (!check_not_an_image(&val, "--val", opt.out_path, checkpoint_path)) {
            code = EXIT_USAGE;
            goto done;
        }
        size_t in_train = 0, in_val = 0;
        size_t overlap = captcha_dataset_overlap(&train, &val, &in_train, &in_val);
        if (overlap == (size_t)-1) {
            message("out of memory");
            goto done;
        }
        if (overlap > 0)
            message("warning: %zu of the %zu --val images are also in --train (the same pixels, "
                    "e.g. %s and %s): the validation accuracy partly measures training images",
                    overlap, val.count, val.paths[in_val], train.paths[in_train]);
        if (captcha_dataset_check_labels(&val, &config, NULL, &err) != CAPTCHA_OK) {
            message("--val: %s", err.message);
            goto done;
        }
    }
    /* The best epoch is chosen on --val: a resumed run must validate on the same images,
     * or on none when the run had none (else --out would not be the run's). */
    const uint64_t val_count = opt.val_dir ? val.count : 0,
                   val_hash = opt.val_dir ? label_hash(&val) : 0;
    if (opt.resume_path && state.val_known &&
        (val_count != state.val_count || val_hash != state.val_hash)) {
        if (!state.val_count)
            message("%s: the run had no --val; resume it without --val (validating now would "
                    "choose another model for --out than the run)",
                    opt.resume_path);
        else if (!opt.val_dir)
            message("%s: the run validates on %llu image(s) (--val): give the same --val to "
                    "continue it",
                    opt.resume_path, (unsigned long long)state.val_count);
        else
            message("%s: the run validates on %llu image(s), --val %s holds %llu with other "
                    "labels: give the run's --val to continue it",
                    opt.resume_path, (unsigned long long)state.val_count, opt.val_dir,
                    (unsigned long long)val_count);
        code = EXIT_USAGE;
        goto done;
    }
    state.val_count = val_count;
    state.val_hash = val_hash;
    if ((size_t)state.training.batch > train.count && train.count >= 2)
        state.training.batch = (int)train.count;
    if (steps_per_epoch(train.count, state.training.batch) == 0) {
        message("%s: %zu image(s): training needs at least 2", opt.train_dir, train.count);
        goto done;
    }
    /* (a resumed run writes its own checkpoint in place; to another path, which must
     * not hold some other unfinished run) */
    if ((!opt.resume_path || !captcha_tool_same_file(opt.resume_path, checkpoint_path)) &&
        !check_checkpoint_free(checkpoint_path)) {
        code = EXIT_USAGE;
        goto done;
    }
    if (!check_writable(opt.out_path, "--out") || !check_writable(checkpoint_path, "checkpoint"))
        goto done;
    /* One run per checkpoint: a second run (e.g. a --resume started while the
     * interrupted run is still writing) would overwrite it. */
    lock_path = lock_file_path(checkpoint_path);
    struct stat lock_info;
    if (lock_path && lstat(lock_path, &lock_info) == 0 &&
        (!S_ISREG(lock_info.st_mode) || lock_info.st_size > 0)) {
        /* ours are empty regular files: anything else is somebody's file, which the
         * unlink at the end would remove */
        message("%s exists and is not a captcha-train lock file (an empty file): it would be "
                "removed when the run ends; give another --checkpoint",
                lock_path);
        code = EXIT_USAGE;
        goto done;
    }
    lock_fd = lock_path ? open(lock_path, O_WRONLY | O_CREAT, 0644) : -1;
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
        message("%s: %s", lock_path ? lock_path : checkpoint_path,
                errno == EWOULDBLOCK ? "another captcha-train run is using this checkpoint"
                                     : strerror(errno));
        if (lock_fd >= 0)
            close(lock_fd);
        lock_fd = -1;
        goto done;
    }

    /* ---- backend and network ---- */
    captcha_tool_warn_threads(PROGRAM, opt.threads);
    if (opt.threads > 0)
        omp_set_num_threads(opt.threads); /* also the batch building (captcha_dataset_batch) */
    char fallback[512];
    if (captcha_backend_create(opt.device, 0, opt.threads, &backend, fallback, sizeof fallback,
                               &err) != CAPTCHA_OK) {
        message("cannot create the %s backend: %s",
                opt.device == CAPTCHA_DEVICE_CUDA ? "CUDA" : "CPU", err.message);
        goto done;
    }
    if (fallback[0])
        message("warning: CUDA not used: %s", fallback);
    {
        /* the same seed and data give identical weights with the same CPU threads only */
        const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
        if (opt.resume_path && state.threads > 0 && state.threads != threads &&
            !strcmp(backend->ops->name, "cpu"))
            message("warning: %s ran with %d CPU thread%s, this run with %d: the weights will "
                    "differ from an uninterrupted run's in their last bits (give --threads %d "
                    "for identical ones)",
                    opt.resume_path, state.threads, state.threads == 1 ? "" : "s", threads,
                    state.threads);
        state.threads = threads;
    }
    if (opt.init_path) {
        char notice[CAPTCHA_ERROR_MESSAGE_SIZE] = "";
        if (captcha_model_load(opt.init_path, backend, &network, notice, sizeof notice, &err) !=
            CAPTCHA_OK) {
            message("--init: %s", err.message);
            goto done;
        }
        if (notice[0])
            message("--init: %s", notice);
    } else if (captcha_network_create(backend, &config, state.seed, &network, &err) != CAPTCHA_OK) {
        message("%s", err.message);
        goto done;
    }
    if (opt.resume_path) {
        if (resume_counts[0] != captcha_network_parameter_count(network) ||
            resume_counts[1] != captcha_network_running_stat_count(network)) {
            message("%s: buffer sizes %zu/%zu do not match the network's %zu/%zu", opt.resume_path,
                    resume_counts[0], resume_counts[1], captcha_network_parameter_count(network),
                    captcha_network_running_stat_count(network));
            goto done;
        }
        static const captcha_buffer_id ids[] = {CAPTCHA_BUFFER_PARAMETERS,
                                                CAPTCHA_BUFFER_RUNNING_STATS, CAPTCHA_BUFFER_ADAM_M,
                                                CAPTCHA_BUFFER_ADAM_V};
        for (int i = 0; i < 4; i++)
            if (captcha_network_write_buffer(network, ids[i], resume_buffers[i], &err) !=
                CAPTCHA_OK) {
                message("%s: %s", opt.resume_path, err.message);
                goto done;
            }
        captcha_network_set_adam_step_count(network, state.adam_steps);
        captcha_network_set_batches_tracked(network, state.batches_tracked);
    }

    const int batch = state.training.batch;
    const int classes = captcha_config_classes(&config);
    const size_t image_floats = 3 * (size_t)config.input_height * (size_t)config.input_width;
    const int eval_batch = 64 > batch ? 64 : batch;
    input = malloc((size_t)eval_batch * image_floats * sizeof *input);
    targets = malloc((size_t)batch * (size_t)classes * sizeof *targets);
    logits = malloc((size_t)eval_batch * (size_t)classes * sizeof *logits);
    order = malloc(train.count * sizeof *order);
    keys = malloc((size_t)batch * sizeof *keys);
    scratch = malloc(captcha_dataset_scratch_size(&train) * (size_t)batch);
    /* On a GPU the step leaves the CPU idle: the next batch is built (augmented, resized)
     * in a second thread meanwhile. On the CPU backend the step uses every core already. */
    const char *overlap_env = getenv("CAPTCHA_TRAIN_OVERLAP"); /* 0 or 1: tests */
    const int overlap =
        overlap_env ? !strcmp(overlap_env, "1") : !strcmp(backend->ops->name, "cuda");
    if (overlap) {
        next_input = malloc((size_t)batch * image_floats * sizeof *next_input);
        next_targets = malloc((size_t)batch * (size_t)classes * sizeof *next_targets);
        next_keys = malloc((size_t)batch * sizeof *next_keys);
        next_scratch = malloc(captcha_dataset_scratch_size(&train) * (size_t)batch);
    }
    if (!input || !targets || !logits || !order || !keys || !scratch ||
        (overlap && (!next_input || !next_targets || !next_keys || !next_scratch))) {
        message("out of memory");
        goto done;
    }

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    action.sa_flags = SA_RESETHAND; /* a second signal terminates at once */
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);

    const int steps = steps_per_epoch(train.count, batch);
    const int64_t total_steps = (int64_t)steps * state.training.epochs;
    /* the recipe's warm-up, but at most a quarter of the run: a short run (e.g.
     * fine-tuning for a few epochs) still reaches its peak rate and decays */
    const int warmup_epochs = state.training.warmup_epochs < state.training.epochs / 4
                                  ? state.training.warmup_epochs
                                  : state.training.epochs / 4;
    const int64_t warmup_steps = (int64_t)steps * warmup_epochs;
    const int interactive = isatty(STDERR_FILENO);
    const uint64_t augment_seed = captcha_mix64(state.seed ^ 0x61756720ULL);
    message("%zu training image%s%s%s, %d step%s of %d per epoch, recipe %s, %d epoch%s, charset "
            "\"%s\", length %d, input %dx%d, device %s%s%s",
            train.count, train.count == 1 ? "" : "s", opt.val_dir ? ", validation on " : "",
            opt.val_dir ? opt.val_dir : "", steps, steps == 1 ? "" : "s", batch,
            recipe_names[state.recipe_kind], state.training.epochs,
            state.training.epochs == 1 ? "" : "s", config.charset, config.length,
            config.input_width, config.input_height, backend->ops->name,
            opt.init_path ? ", starting from the weights of " : "",
            opt.init_path ? opt.init_path : "");
    if (opt.resume_path && state.epoch >= state.training.epochs)
        message("resuming a finished run (%d of %d epochs done): nothing left to train",
                state.epoch, state.training.epochs);
    else if (opt.resume_path)
        message("resuming at epoch %d, step %d", state.epoch + 1, state.step);

    const double run_start = now_seconds();
    int64_t run_steps = 0;
    int stopped = 0;
    int wrote_model = 0; /* this run saved --out */
    int wrote_checkpoint = 0; /* this run saved the checkpoint (else the last epoch is in
                               * --resume's) */
    accuracy last = {0}; /* validation accuracy of the last epoch run */
    int have_last = 0;
    batch_job jobs[2] = {
        {.train = &train, .order = order, .config = &config,
         .augment = state.training.augment ? &default_augment : NULL,
         .augment_seed = augment_seed, .batch = batch, .keys = keys, .scratch = scratch,
         .input = input, .targets = targets},
        {.train = &train, .order = order, .config = &config,
         .augment = state.training.augment ? &default_augment : NULL,
         .augment_seed = augment_seed, .batch = batch, .keys = next_keys,
         .scratch = next_scratch, .input = next_input, .targets = next_targets,
         .threads = opt.threads},
    };
    int current = 0;
    for (; state.epoch < state.training.epochs && !stopped; state.epoch++) {
        epoch_order(state.seed, state.epoch, order, train.count);
        double epoch_start = now_seconds(), last_progress = epoch_start;
        size_t epoch_images = 0;
        int prefetched = 0; /* jobs[current] already holds this step's batch */
        for (; state.step < steps; state.step++, current = overlap ? 1 - current : 0) {
            int64_t global_step = (int64_t)state.epoch * steps + state.step;
            if (opt.stop_after_steps >= 0 && global_step >= opt.stop_after_steps && !stop_signal)
                stop_signal = SIGINT;
            if (stop_signal) {
                stopped = 1;
                break;
            }
            batch_job *job = &jobs[current];
            if (!prefetched) {
                job->epoch = state.epoch;
                job->step = state.step;
                build_batch(job);
            }
            prefetched = 0;
            if (job->status != CAPTCHA_OK) {
                message("%s", job->err.message);
                goto done;
            }
            const int n = job->n;
            pthread_t worker;
            int started = 0;
            if (overlap && state.step + 1 < steps) {
                batch_job *next = &jobs[1 - current];
                next->epoch = state.epoch;
                next->step = state.step + 1;
                started = pthread_create(&worker, NULL, build_batch_thread, next) == 0;
            }
            float loss;
            captcha_adam_config adam = captcha_adam_default();
            adam.learning_rate =
                learning_rate_at(&state.training, global_step, total_steps, warmup_steps);
            adam.weight_decay = state.training.weight_decay;
            captcha_status step_status = captcha_network_forward_backward(
                network, job->input, job->targets, n, &loss, NULL, &err);
            if (step_status == CAPTCHA_OK)
                step_status = captcha_network_adam_step(network, &adam, &err);
            if (started) {
                pthread_join(worker, NULL);
                prefetched = 1;
            }
            if (step_status != CAPTCHA_OK) {
                message("training step %lld: %s", (long long)global_step, err.message);
                goto done;
            }
            if (!isfinite(loss)) {
                message("training diverged: loss %g at epoch %d step %d (try a lower --lr)", loss,
                        state.epoch + 1, state.step + 1);
                goto done;
            }
            state.epoch_loss_sum += loss;
            state.epoch_loss_steps++;
            epoch_images += (size_t)n;
            run_steps++;
            /* on a terminal, one line redrawn after every step; in a log, a line every
             * --progress seconds (never after an epoch's last step: its summary follows) */
            double step_end = now_seconds();
            if (interactive || (opt.progress_seconds > 0 && state.step + 1 < steps &&
                                step_end - last_progress >= opt.progress_seconds)) {
                int64_t left = total_steps - global_step - 1;
                char eta[32];
                format_duration((step_end - run_start) / (double)run_steps * (double)left, eta,
                                sizeof eta);
                fprintf(stderr,
                        "%s" PROGRAM ": epoch %d/%d step %d/%d loss %.4f %.1f img/s ETA %s%s",
                        interactive ? "\r" : "", state.epoch + 1, state.training.epochs,
                        state.step + 1, steps,
                        state.epoch_loss_sum / (double)state.epoch_loss_steps,
                        (double)epoch_images / (step_end - epoch_start), eta,
                        interactive ? "\033[K" : "\n");
                fflush(stderr);
                last_progress = step_end;
            }
        }
        if (stopped)
            break;
        double epoch_seconds = now_seconds() - epoch_start;
        double mean_loss =
            state.epoch_loss_sum / (double)(state.epoch_loss_steps ? state.epoch_loss_steps : 1);
        fprintf(stderr, "%s" PROGRAM ": epoch %d/%d loss %.4f lr %.3g %.1f img/s %.1f s%s\n",
                interactive ? "\r" : "", state.epoch + 1, state.training.epochs, mean_loss,
                learning_rate_at(&state.training, (int64_t)(state.epoch + 1) * steps - 1,
                                 total_steps, warmup_steps),
                epoch_seconds > 0 ? (double)epoch_images / epoch_seconds : 0.0, epoch_seconds,
                interactive ? "\033[K" : "");
        if (!interactive)
            fflush(stderr);
        state.step = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_loss_steps = 0;

        /* The loss can stay finite while some weights overflowed (batch norm
         * rescales them), e.g. at a learning rate of 1e20: such a model could
         * not be loaded back, so nothing is saved. */
        if (captcha_model_check_values(network, &err) != CAPTCHA_OK) {
            message("training diverged in epoch %d: %s (try a lower --lr); nothing saved for "
                    "this epoch",
                    state.epoch + 1, err.message);
            goto done;
        }

        accuracy acc;
        int save = 1;
        if (opt.val_dir) {
            if (evaluate(network, &val, input, logits, eval_batch, &acc, &err) != CAPTCHA_OK) {
                message("validation: %s", err.message);
                goto done;
            }
            last = acc;
            have_last = 1;
            /* the best full accuracy; of equal ones, the better per-character accuracy
             * (a short run often reads no captcha whole) */
            save = acc.full > state.best_accuracy ||
                   (acc.full == state.best_accuracy && acc.chars > state.best_char_accuracy);
            if (save) {
                state.best_accuracy = acc.full;
                state.best_char_accuracy = acc.chars;
                state.best_epoch = state.epoch + 1;
            }
            message("epoch %d/%d validation: full %.4f char %.4f (%zu image%s; best full %.4f "
                    "at epoch %d)",
                    state.epoch + 1, state.training.epochs, acc.full, acc.chars, val.count,
                    val.count == 1 ? "" : "s", state.best_accuracy, state.best_epoch);
        }
        if (save) {
            if (save_model(network, &opt, &state, train.count, state.epoch + 1,
                           opt.val_dir ? &acc : NULL, &err) != CAPTCHA_OK) {
                message("%s", err.message);
                goto done;
            }
            wrote_model = 1;
            if (opt.val_dir) {
                if (keep_best(network, resume_buffers + 4, &err) != CAPTCHA_OK) {
                    message("%s", err.message);
                    goto done;
                }
                state.best_batches_tracked = captcha_network_batches_tracked(network);
            }
        }
        /* state.epoch + 1: the epoch just finished is done */
        state.epoch++;
        captcha_status saved =
            save_checkpoint(checkpoint_path, network, &state, resume_buffers + 4, &err);
        state.epoch--;
        if (saved != CAPTCHA_OK) {
            message("%s", err.message);
            goto done;
        }
        wrote_checkpoint = 1;
    }
    if (stopped) {
        if (interactive)
            fputc('\n', stderr);
        if (captcha_model_check_values(network, &err) != CAPTCHA_OK) {
            message("interrupted, and training had diverged: %s (try a lower --lr); no "
                    "checkpoint written",
                    err.message);
            goto done;
        }
        if (save_checkpoint(checkpoint_path, network, &state, resume_buffers + 4, &err) !=
            CAPTCHA_OK) {
            message("interrupted, and the checkpoint could not be written: %s", err.message);
            goto done;
        }
        char *resume_command = resume_command_line(argv[0], &opt, checkpoint_path);
        message("interrupted (signal %d) at epoch %d step %d: checkpoint written to %s; "
                "continue with:",
                (int)stop_signal, state.epoch + 1, state.step, checkpoint_path);
        /* the command as the shell reads it (its own quoting, not the message's escapes) */
        fprintf(stderr, "  %s\n",
                resume_command ? resume_command : "--resume with the same --train, --val, --out");
        free(resume_command);
        code = 128 + (int)stop_signal;
        goto done;
    }
    char took[32];
    format_duration(now_seconds() - run_start, took, sizeof took);
    if (wrote_model && opt.val_dir) {
        message("done in %s: %s holds epoch %d (validation full accuracy %.4f)", took, opt.out_path,
                state.best_epoch, state.best_accuracy);
    } else if (wrote_model) {
        message("done in %s: %s holds the last epoch, %d", took, opt.out_path, state.epoch);
    } else {
        /* A resumed run that saved nothing: the checkpoint had no epoch left, or no epoch of
         * this run beat the best validation accuracy, which the run that wrote the checkpoint
         * saved to its --out. A version 2 checkpoint holds that best model: it is written to
         * this --out, as an uninterrupted run would have left it. */
        if (opt.val_dir && state.best_epoch >= 1 && resume_buffers[4] && resume_buffers[5]) {
            const accuracy best = {state.best_accuracy, state.best_char_accuracy};
            captcha_network_set_batches_tracked(network, state.best_batches_tracked);
            if (captcha_network_write_buffer(network, CAPTCHA_BUFFER_PARAMETERS, resume_buffers[4],
                                             &err) != CAPTCHA_OK ||
                captcha_network_write_buffer(network, CAPTCHA_BUFFER_RUNNING_STATS,
                                             resume_buffers[5], &err) != CAPTCHA_OK ||
                save_model(network, &opt, &state, train.count, state.best_epoch, &best, &err) !=
                    CAPTCHA_OK) {
                message("%s", err.message);
                goto done;
            }
            if (state.best_epoch == state.epoch)
                message("done in %s: %s holds epoch %d, the last and the best on --val "
                        "(validation full accuracy %.4f)",
                        took, opt.out_path, state.best_epoch, state.best_accuracy);
            else
                message("done in %s: %s holds epoch %d, the best on --val (validation full "
                        "accuracy %.4f); the last epoch, %d, is in the checkpoint %s",
                        took, opt.out_path, state.best_epoch, state.best_accuracy, state.epoch,
                        wrote_checkpoint ? checkpoint_path : opt.resume_path);
            code = 0;
            goto done;
        }
        const int best_elsewhere =
            opt.val_dir && state.best_epoch >= 1 && state.best_epoch != state.epoch;
        struct stat info;
        if (best_elsewhere && stat(opt.out_path, &info) == 0) {
            /* it may hold that best epoch: kept */
            message("done in %s: no epoch of this run beat the best validation full accuracy "
                    "%.4f (epoch %d, saved by the run that wrote the checkpoint); %s existed and "
                    "is left as it was; the last epoch, %d, is in the checkpoint %s",
                    took, state.best_accuracy, state.best_epoch, opt.out_path, state.epoch,
                    wrote_checkpoint ? checkpoint_path : opt.resume_path);
            code = 0;
            goto done;
        }
        if (opt.val_dir && !have_last) {
            if (evaluate(network, &val, input, logits, eval_batch, &last, &err) != CAPTCHA_OK) {
                message("validation: %s", err.message);
                goto done;
            }
            have_last = 1;
        }
        if (save_model(network, &opt, &state, train.count, state.epoch, opt.val_dir ? &last : NULL,
                       &err) != CAPTCHA_OK) {
            message("%s", err.message);
            goto done;
        }
        if (best_elsewhere)
            message("done in %s: %s holds the last epoch, %d (validation full accuracy %.4f), "
                    "not the best: no epoch of this run beat epoch %d (full accuracy %.4f), "
                    "which the run that wrote the checkpoint saved to its --out",
                    took, opt.out_path, state.epoch, last.full, state.best_epoch,
                    state.best_accuracy);
        else if (opt.val_dir && state.best_epoch == state.epoch)
            message("done in %s: no epoch left to train: %s holds epoch %d, the best (validation "
                    "full accuracy %.4f)",
                    took, opt.out_path, state.epoch, last.full);
        else if (opt.val_dir)
            message("done in %s: %s holds the last epoch, %d (validation full accuracy %.4f)", took,
                    opt.out_path, state.epoch, last.full);
        else
            message("done in %s: no epoch left to train: %s holds the last epoch, %d", took,
                    opt.out_path, state.epoch);
    }
    code = 0;

done:
    free(input);
    free(targets);
    free(logits);
    free(order);
    free(keys);
    free(scratch);
    free(next_input);
    free(next_targets);
    free(next_keys);
    free(next_scratch);
    if (lock_fd >= 0) {
        unlink(lock_path);
        close(lock_fd);
    }
    free(lock_path);
    free(checkpoint_path);
    for (int i = 0; i < 6; i++)
        free(resume_buffers[i]);
    captcha_network_destroy(network);
    captcha_backend_destroy(backend);
    captcha_dataset_free(&train);
    captcha_dataset_free(&val);
    return code;
}
