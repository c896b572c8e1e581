/* GPU benchmark: our network on the CUDA backend against the same model and weights in
 * PyTorch eager (bench/torch_gpu.py), measured in the same run on the same GPU, FP32 with
 * TF32 off on both sides (cudnn.benchmark on for PyTorch).
 *
 *   bench-gpu [--gpu N] [--iters N] [--quick] [--no-torch] [--python PATH] [MODEL.safetensors]
 *   bench-gpu --profile N | --profile-train [--gpu N] [MODEL.safetensors]
 *
 * 1. batch-1 latency, host pixels to text: a 200x50 BGRA host image -> the backend's
 *    preprocess op (upload of the region + resize/normalize on the device) -> forward on
 *    the device (CUDA graph) -> download of the logits -> captcha_decode on the host.
 *    Median and p99 over --iters (2000) iterations after warm-up.
 * 2. throughput at batch 256 (input already on the device, synchronized at the end).
 * 3. one training epoch of 936 synthetic images 3x32x128 with random one-hot targets at
 *    batch 16 (58 steps of 16 + one of 8): forward + backward + Adam, the host input
 *    uploaded at each step as the trainer does. Median of 3 epochs after one warm-up epoch.
 * --profile N runs one batch-N inference (N = 1: from host pixels to logits, as in 1.) and
 * --profile-train one training step at batch 16 between cudaProfilerStart and
 * cudaProfilerStop, after a warm-up, and exits: under
 *   ncu --profile-from-start off --clock-control none --metrics gpu__time_duration.sum
 * that lists the GPU time of each kernel of exactly that work.
 * PyTorch runs first (its process exits before ours measures). Without a GPU (or a build
 * without CUDA) it prints the reason and exits 77. Not a test: it asserts nothing. */
#include <dlfcn.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "captcha-build-config.h"
#include "bench_util.h"
#include "backend.h"
#include "decode.h"
#include "model_file.h"
#include "network.h"

#define IMAGE_WIDTH 200 /* the captcha-v2 images */
#define IMAGE_HEIGHT 50
#define THROUGHPUT_BATCH 256
#define TRAIN_IMAGES 936 /* captcha-v2's train split */
#define TRAIN_BATCH 16
#define TRAIN_EPOCHS 3

static unsigned next_random(unsigned *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed >> 8;
}

static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(next_random(&seed) * (2.0 / 16777216.0) - 1.0);
}

static void check(captcha_status status, const char *what, const captcha_error *err)
{
    if (status != CAPTCHA_OK) {
        fprintf(stderr, "bench-gpu: %s: %s\n", what, err->message);
        exit(1);
    }
}

static void *device_alloc(captcha_backend *backend, size_t bytes)
{
    void *p;
    captcha_error err;
    check(backend->ops->alloc(backend, bytes, &p, &err), "device allocation", &err);
    return p;
}

/* Batch-1 latency in microseconds, host BGRA pixels to decoded text: sorted[iters]. */
static void bench_latency(captcha_network *net, int iters, double *sorted, char *text,
                          size_t text_size)
{
    captcha_backend *backend = captcha_network_backend(net);
    const captcha_config *c = captcha_network_config(net);
    const int classes = captcha_config_classes(c);
    uint8_t *pixels = malloc((size_t)IMAGE_WIDTH * IMAGE_HEIGHT * 4);
    unsigned seed = 3;
    for (size_t i = 0; i < (size_t)IMAGE_WIDTH * IMAGE_HEIGHT * 4; i++)
        pixels[i] = (uint8_t)next_random(&seed);
    captcha_image image = {.format = CAPTCHA_PIXEL_BGRA,
                           .width = IMAGE_WIDTH,
                           .height = IMAGE_HEIGHT,
                           .planes = {pixels},
                           .strides = {IMAGE_WIDTH * 4}};
    captcha_roi roi = {0, 0, IMAGE_WIDTH, IMAGE_HEIGHT};
    float *input =
        device_alloc(backend, (size_t)3 * c->input_height * c->input_width * sizeof(float));
    float *logits = device_alloc(backend, (size_t)classes * sizeof(float));
    float *host_input = malloc((size_t)3 * c->input_height * c->input_width * sizeof(float));
    float *host_logits = malloc((size_t)classes * sizeof(float));
    const captcha_backend_ops *ops = backend->ops;
    captcha_error err;
    captcha_result result;
    const int warmup = iters / 10 > 50 ? iters / 10 : 50;
    for (int i = -warmup; i < iters; i++) {
        double t0 = bench_now();
        if (ops->preprocess) {
            check(ops->preprocess(backend, &image, &roi, c, input, &err), "preprocess", &err);
        } else { /* a backend without device preprocessing: on the host, then upload */
            check(captcha_preprocess(&image, &roi, c, host_input, &err), "preprocess", &err);
            check(ops->upload(backend, input, host_input,
                              (size_t)3 * c->input_height * c->input_width * sizeof(float), &err),
                  "upload", &err);
        }
        check(captcha_network_forward_device(net, input, 1, logits, &err), "forward", &err);
        check(ops->download(backend, host_logits, logits, (size_t)classes * sizeof(float), &err),
              "download", &err);
        check(captcha_decode(c, host_logits, &result, &err), "decode", &err);
        if (i >= 0)
            sorted[i] = (bench_now() - t0) * 1e6;
    }
    qsort(sorted, iters, sizeof *sorted, bench_compare_double);
    snprintf(text, text_size, "%s", result.text);

    /* Where the time goes: the same steps with a synchronize after each, medians in us
     * (their sum exceeds the pipelined latency above by the synchronizations). */
    enum { STAGES = 4 };
    static const char *stage_names[STAGES] = {"preprocess (upload + kernel)",
                                              "forward (graph launch)", "download of logits",
                                              "decode on the host"};
    double *stage = malloc((size_t)STAGES * iters * sizeof(double));
    for (int i = -warmup; i < iters; i++) {
        double t[STAGES + 1];
        t[0] = bench_now();
        if (ops->preprocess)
            check(ops->preprocess(backend, &image, &roi, c, input, &err), "preprocess", &err);
        check(ops->synchronize(backend, &err), "synchronize", &err);
        t[1] = bench_now();
        check(captcha_network_forward_device(net, input, 1, logits, &err), "forward", &err);
        check(ops->synchronize(backend, &err), "synchronize", &err);
        t[2] = bench_now();
        check(ops->download(backend, host_logits, logits, (size_t)classes * sizeof(float), &err),
              "download", &err);
        t[3] = bench_now();
        check(captcha_decode(c, host_logits, &result, &err), "decode", &err);
        t[4] = bench_now();
        for (int k = 0; i >= 0 && k < STAGES; k++)
            stage[(size_t)k * iters + i] = (t[k + 1] - t[k]) * 1e6;
    }
    printf("batch 1 by stage, each followed by a synchronize (median us):");
    for (int k = 0; k < STAGES; k++) {
        qsort(stage + (size_t)k * iters, iters, sizeof *stage, bench_compare_double);
        printf("%s %s %.1f", k ? "," : "", stage_names[k], stage[(size_t)k * iters + iters / 2]);
    }
    printf("\n");
    free(stage);
    ops->free(backend, input);
    ops->free(backend, logits);
    free(pixels);
    free(host_input);
    free(host_logits);
}

/* Images/s at `batch`, input on the device: median of 5 repeats of `iters` forwards. */
static double bench_throughput(captcha_network *net, int batch, int iters)
{
    captcha_backend *backend = captcha_network_backend(net);
    const captcha_config *c = captcha_network_config(net);
    size_t in = (size_t)batch * 3 * c->input_height * c->input_width;
    float *host = malloc(in * sizeof(float));
    fill(host, in, 1);
    float *input = device_alloc(backend, in * sizeof(float));
    float *logits =
        device_alloc(backend, (size_t)batch * captcha_config_classes(c) * sizeof(float));
    captcha_error err;
    check(backend->ops->upload(backend, input, host, in * sizeof(float), &err), "upload", &err);
    double rates[5];
    for (int r = -1; r < 5; r++) {
        check(backend->ops->synchronize(backend, &err), "synchronize", &err);
        double t0 = bench_now();
        for (int i = 0; i < (r < 0 ? 3 : iters); i++)
            check(captcha_network_forward_device(net, input, batch, logits, &err), "forward", &err);
        check(backend->ops->synchronize(backend, &err), "synchronize", &err);
        if (r >= 0)
            rates[r] = batch * iters / (bench_now() - t0);
    }
    qsort(rates, 5, sizeof *rates, bench_compare_double);
    backend->ops->free(backend, input);
    backend->ops->free(backend, logits);
    free(host);
    return rates[2];
}

/* Seconds per training epoch (median of TRAIN_EPOCHS after one warm-up epoch). */
static double bench_train(captcha_network *net, int epochs)
{
    const captcha_config *c = captcha_network_config(net);
    const int classes = captcha_config_classes(c);
    const size_t image = (size_t)3 * c->input_height * c->input_width;
    float *x = malloc(TRAIN_IMAGES * image * sizeof(float));
    float *t = calloc((size_t)TRAIN_IMAGES * classes, sizeof(float));
    fill(x, TRAIN_IMAGES * image, 2);
    unsigned seed = 4;
    for (int n = 0; n < TRAIN_IMAGES; n++)
        for (int p = 0; p < c->length; p++)
            t[(size_t)n * classes + p * c->charset_size + next_random(&seed) % c->charset_size] = 1;
    captcha_adam_config adam = captcha_adam_default();
    captcha_error err;
    double seconds[TRAIN_EPOCHS];
    for (int e = -1; e < epochs; e++) {
        double t0 = bench_now();
        for (int start = 0; start < TRAIN_IMAGES; start += TRAIN_BATCH) {
            int batch = TRAIN_IMAGES - start < TRAIN_BATCH ? TRAIN_IMAGES - start : TRAIN_BATCH;
            float loss;
            check(captcha_network_forward_backward(net, x + start * image,
                                                   t + (size_t)start * classes, batch, &loss, NULL,
                                                   &err),
                  "forward/backward", &err);
            check(captcha_network_adam_step(net, &adam, &err), "Adam step", &err);
        }
        captcha_backend *backend = captcha_network_backend(net);
        check(backend->ops->synchronize(backend, &err), "synchronize", &err);
        if (e >= 0)
            seconds[e] = bench_now() - t0;
    }
    qsort(seconds, epochs, sizeof *seconds, bench_compare_double);
    free(x);
    free(t);
    return seconds[epochs / 2];
}

/* cudaProfilerStart / cudaProfilerStop of the CUDA runtime the backend module loaded (it is
 * loaded privately; RTLD_NOLOAD finds that same library). */
static void profiler(int start)
{
    void *cudart = dlopen("libcudart.so.13", RTLD_NOW | RTLD_NOLOAD);
    if (!cudart)
        cudart = dlopen("libcudart.so.12", RTLD_NOW | RTLD_NOLOAD);
    int (*fn)(void) =
        cudart ? (int (*)(void))dlsym(cudart, start ? "cudaProfilerStart" : "cudaProfilerStop")
               : NULL;
    if (!fn || fn() != 0)
        fprintf(stderr, "bench-gpu: %s not available\n",
                start ? "cudaProfilerStart" : "cudaProfilerStop");
}

/* The work of --profile N / --profile-train, once after two warm-ups, between profiler marks. */
static void profile_once(captcha_network *net, int batch, int train)
{
    captcha_backend *backend = captcha_network_backend(net);
    const captcha_config *c = captcha_network_config(net);
    const int classes = captcha_config_classes(c);
    const size_t image = (size_t)3 * c->input_height * c->input_width;
    if (train)
        batch = TRAIN_BATCH;
    float *host = malloc((size_t)batch * image * sizeof(float));
    float *targets = calloc((size_t)batch * classes, sizeof(float));
    float *host_logits = malloc((size_t)batch * classes * sizeof(float));
    uint8_t *pixels = malloc((size_t)IMAGE_WIDTH * IMAGE_HEIGHT * 4);
    fill(host, (size_t)batch * image, 5);
    memset(pixels, 128, (size_t)IMAGE_WIDTH * IMAGE_HEIGHT * 4);
    for (int n = 0; n < batch; n++)
        targets[(size_t)n * classes] = 1;
    captcha_image picture = {.format = CAPTCHA_PIXEL_BGRA,
                             .width = IMAGE_WIDTH,
                             .height = IMAGE_HEIGHT,
                             .planes = {pixels},
                             .strides = {IMAGE_WIDTH * 4}};
    captcha_roi roi = {0, 0, IMAGE_WIDTH, IMAGE_HEIGHT};
    float *input = device_alloc(backend, (size_t)batch * image * sizeof(float));
    float *logits = device_alloc(backend, (size_t)batch * classes * sizeof(float));
    captcha_error err;
    captcha_adam_config adam = captcha_adam_default();
    check(backend->ops->upload(backend, input, host, (size_t)batch * image * sizeof(float), &err),
          "upload", &err);
    for (int round = 0; round < 3; round++) {
        if (round == 2) {
            check(backend->ops->synchronize(backend, &err), "synchronize", &err);
            profiler(1);
        }
        if (train) {
            float loss;
            check(captcha_network_forward_backward(net, host, targets, batch, &loss, NULL, &err),
                  "forward/backward", &err);
            check(captcha_network_adam_step(net, &adam, &err), "Adam step", &err);
        } else {
            if (batch == 1 && backend->ops->preprocess)
                check(backend->ops->preprocess(backend, &picture, &roi, c, input, &err),
                      "preprocess", &err);
            check(captcha_network_forward_device(net, input, batch, logits, &err), "forward",
                  &err);
            check(backend->ops->download(backend, host_logits, logits,
                                         (size_t)batch * classes * sizeof(float), &err),
                  "download", &err);
        }
    }
    check(backend->ops->synchronize(backend, &err), "synchronize", &err);
    profiler(0);
    printf("bench-gpu: profiled one %s at batch %d\n", train ? "training step" : "inference",
           batch);
    backend->ops->free(backend, input);
    backend->ops->free(backend, logits);
    free(host);
    free(targets);
    free(host_logits);
    free(pixels);
}

static const char *verdict(int met)
{
    return met ? "met" : "NOT met";
}

int main(int argc, char **argv)
{
    int gpu = 0, iters = 0, quick = 0, torch = 1, profile_batch = 0, profile_train = 0;
    const char *python = getenv("CAPTCHA_PYTHON") ? getenv("CAPTCHA_PYTHON") : "python3";
    static const struct option options[] = {{"gpu", required_argument, 0, 'g'},
                                            {"iters", required_argument, 0, 'i'},
                                            {"quick", no_argument, 0, 'q'},
                                            {"no-torch", no_argument, 0, 'n'},
                                            {"python", required_argument, 0, 'p'},
                                            {"profile", required_argument, 0, 'P'},
                                            {"profile-train", no_argument, 0, 'T'},
                                            {"help", no_argument, 0, 'h'},
                                            {0, 0, 0, 0}};
    int opt;
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines reach a log file even if a timeout kills us */
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'g': gpu = atoi(optarg); break;
        case 'i': iters = atoi(optarg); break;
        case 'q': quick = 1; break;
        case 'n': torch = 0; break;
        case 'p': python = optarg; break;
        case 'P': profile_batch = atoi(optarg); break;
        case 'T': profile_train = 1; break;
        default:
            printf("usage: %s [--gpu N (0)] [--iters N (2000)] [--quick] [--no-torch] "
                   "[--python PATH (python3, or $CAPTCHA_PYTHON)] [MODEL.safetensors]\n"
                   "       %s --profile N | --profile-train [--gpu N] [MODEL.safetensors]\n",
                   argv[0], argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (iters <= 0)
        iters = quick ? 200 : 2000;
    if (iters < 10)
        iters = 10;
    const int throughput_iters = quick ? 3 : 20, epochs = quick ? 1 : TRAIN_EPOCHS;

    captcha_error err;
    captcha_backend *backend;
    if (!captcha_backend_cuda_built()) {
        printf("bench-gpu: SKIP: this build has no CUDA backend (configure with -Dcuda=enabled)\n");
        return 77;
    }
    unsetenv("CAPTCHA_CUDA_TF32"); /* FP32 convolutions and GEMMs, as PyTorch below */
    if (captcha_backend_cuda_create(gpu, &backend, &err)) {
        printf("bench-gpu: SKIP: no usable GPU: %s\n", err.message);
        return 77;
    }
    captcha_network *net;
    char model_path[4096];
    if (optind < argc) {
        snprintf(model_path, sizeof model_path, "%s", argv[optind]);
        check(captcha_model_load(model_path, backend, &net, NULL, 0, &err), "model", &err);
    } else {
        captcha_config config;
        captcha_config_reference(&config);
        check(captcha_network_create(backend, &config, 42, &net, &err), "network", &err);
        snprintf(model_path, sizeof model_path, "/tmp/bench-gpu-%d.safetensors", (int)getpid());
        check(captcha_model_save(net, model_path, NULL, &err), "save", &err);
    }

    if (profile_batch > 0 || profile_train) {
        profile_once(net, profile_batch, profile_train);
        if (optind >= argc)
            unlink(model_path);
        captcha_network_destroy(net);
        captcha_backend_destroy(backend);
        return 0;
    }

    /* PyTorch first, in its own process, so it holds the GPU alone while it measures */
    double t_median = 0, t_p99 = 0, t_rate = 0, t_epoch = 0;
    if (torch) {
        char cmd[8192];
        /* -B: no __pycache__ in the source tree; timeout: leave time for our side */
        snprintf(cmd, sizeof cmd,
                 "timeout 75 '%s' -B '%s/bench/torch_gpu.py' --gpu %d '%s' %d %d %d", python,
                 CAPTCHA_SOURCE_DIR, gpu, model_path, iters, throughput_iters, epochs);
        fflush(stdout);
        FILE *p = popen(cmd, "r");
        char line[512];
        while (p && fgets(line, sizeof line, p)) {
            double a, b;
            if (sscanf(line, "torch latency_us %lf %lf", &a, &b) == 2)
                t_median = a, t_p99 = b;
            else if (sscanf(line, "torch throughput %lf", &a) == 1)
                t_rate = a;
            else if (sscanf(line, "torch train_epoch_s %lf", &a) == 1)
                t_epoch = a;
            else if (!strncmp(line, "torch info ", 11))
                printf("PyTorch: %s", line + 11);
            else
                fputs(line, stdout); /* errors, skip reasons */
        }
        int status = p ? pclose(p) : -1;
        if (status != 0)
            printf("note: the PyTorch side failed or was skipped (%s %d): its figures are 0\n",
                   status != -1 && WIFEXITED(status) ? "exit" : "status",
                   status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : status);
    }

    double *latency = malloc((size_t)iters * sizeof(double));
    char text[CAPTCHA_MAX_LENGTH + 1];
    bench_latency(net, iters, latency, text, sizeof text);
    double o_median = latency[iters / 2], o_p99 = latency[(int)(iters * 0.99)];
    double o_rate = bench_throughput(net, THROUGHPUT_BATCH, throughput_iters);
    double o_epoch = bench_train(net, epochs); /* last: it changes the weights */

    printf("\nGPU %d, FP32 (TF32 off on both sides), input %dx%d, PyTorch eager with "
           "cudnn.benchmark\n",
           gpu, captcha_network_config(net)->input_width,
           captcha_network_config(net)->input_height);
    printf("%-44s %14s %14s %10s\n", "", "gst-captcha", "PyTorch", "ratio");
    printf("%-44s %14.1f %14.1f %9.2fx\n", "batch 1, host pixels -> text, median (us)", o_median,
           t_median, t_median > 0 ? o_median / t_median : 0);
    printf("%-44s %14.1f %14.1f %9.2fx\n", "batch 1, host pixels -> text, p99 (us)", o_p99, t_p99,
           t_p99 > 0 ? o_p99 / t_p99 : 0);
    printf("%-44s %14.0f %14.0f %9.2fx\n", "batch 256 forward (images/s)", o_rate, t_rate,
           t_rate > 0 ? o_rate / t_rate : 0);
    printf("%-44s %14.3f %14.3f %9.2fx\n", "training epoch, 936 images, batch 16 (s)", o_epoch,
           t_epoch, o_epoch > 0 ? t_epoch / o_epoch : 0);
    printf("(latency: %d iterations, last text \"%s\"; batch 256: median of 5 x %d forwards; "
           "epoch: median of %d; training ratio = PyTorch time / ours)\n",
           iters, text, throughput_iters, epochs);
    printf("goals:\n");
    if (t_median > 0)
        printf("  batch-1 latency <= 0.3x PyTorch's: %.2fx, %s\n", o_median / t_median,
               verdict(o_median <= 0.3 * t_median));
    if (t_rate > 0)
        printf("  batch-256 throughput >= 1.5x:      %.2fx, %s\n", o_rate / t_rate,
               verdict(o_rate >= 1.5 * t_rate));
    if (t_epoch > 0)
        printf("  training >= 2x faster:             %.2fx, %s\n", t_epoch / o_epoch,
               verdict(t_epoch >= 2 * o_epoch));
    if (t_median <= 0 || t_rate <= 0 || t_epoch <= 0)
        printf("  (the ratios missing above need the PyTorch figures)\n");
    printf("  batch-1 latency < 200 us:          %.1f us, %s\n", o_median, verdict(o_median < 200));

    free(latency);
    if (optind >= argc)
        unlink(model_path);
    captcha_network_destroy(net);
    captcha_backend_destroy(backend);
    return 0;
}
