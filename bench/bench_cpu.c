/* CPU benchmark: our network on the CPU backend against the same model and weights in
 * PyTorch (Debian python3-torch), measured in the same run on the same machine.
 *
 *   bench-cpu [--threads N] [--rounds N] [--pairs N] [--quick] [--no-torch] [--no-train] [MODEL.safetensors]
 *
 * Inference at batch 1 and 64 (images/s, median of 5 repeats), and training steps at batch 16
 * (forward + backward + Adam). Prints PyTorch's figures in every mode it has (eager,
 * channels_last, jit optimize_for_inference) and our ratio against its best, and how close we
 * are to the machine's ceiling: by default measured in the same run as the best rate of oneDNN's
 * sgemm on 1024x1024 matrices with the same threads (--gflops gives a fixed figure instead). The
 * network's 0.31 GFLOP per image counts direct-convolution multiply-adds, so Winograd layers can
 * take the share above 100%. Shared machines drift, so the whole
 * comparison runs --rounds times (default 3), PyTorch and ours back to back in each round; the
 * summary gives the median of each side and the median of the per-round ratios. Not a test:
 * it asserts nothing. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <oneapi/dnnl/dnnl.h>

#include "captcha-build-config.h"
#include "bench_util.h"
#include "backend.h"
#include "model_file.h"
#include "network.h"

#define FORWARD_GFLOP 0.31 /* per 32x128 image, forward */

static void fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) * (2.0 / 16777216.0) - 1.0);
    }
}

/* The machine's single-precision ceiling in GFLOP/s: the best of 8 runs of oneDNN's sgemm
 * (C = A B, 1024x1024 row-major, uniform values in [-1, 1)) on the threads the backend set.
 * Returns 0 when sgemm fails or memory is short. */
static double measure_sgemm_gflops(void)
{
    const int n = 1024;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
          *c = malloc(sizeof(float) * n * n);
    double best = 0;
    if (a && b && c) {
        fill(a, (size_t)n * n, 1);
        fill(b, (size_t)n * n, 2);
        for (int r = 0; r < 9; r++) {
            double t0 = bench_now();
            if (dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) != dnnl_success) {
                best = 0;
                break;
            }
            double rate = 2.0 * n * n * n / (bench_now() - t0) / 1e9;
            if (r > 0 && rate > best) /* the first run warms up */
                best = rate;
        }
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* PyTorch kept running in one mode (torch_cpu.py --serve) so that its timed bursts
 * can alternate with ours, pair by pair: on a shared machine whose speed drifts
 * over seconds, the ratio of two bursts taken a fraction of a second apart is far
 * steadier than the ratio of two whole rounds taken tens of seconds apart. */
typedef struct {
    pid_t pid;
    FILE *to, *from;
} torch_server;

static int torch_server_start(torch_server *s, const char *model_path, int threads,
                              const char *mode)
{
    int in[2], out[2];
    if (pipe(in) || pipe(out))
        return -1;
    char script[4096], thread_text[16];
    snprintf(script, sizeof script, "%s/bench/torch_cpu.py", CAPTCHA_SOURCE_DIR);
    snprintf(thread_text, sizeof thread_text, "%d", threads);
    s->pid = fork();
    if (s->pid < 0)
        return -1;
    if (s->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execl("/usr/bin/python3", "python3", script, "--serve", model_path, thread_text, mode,
              (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    s->to = fdopen(in[1], "w");
    s->from = fdopen(out[0], "r");
    char line[64];
    if (!s->to || !s->from || !fgets(line, sizeof line, s->from) || strncmp(line, "ready", 5))
        return -1;
    return 0;
}

/* Seconds PyTorch took for `iters` forwards at `batch`; < 0 on failure. */
static double torch_server_run(torch_server *s, int batch, int iters)
{
    char line[64];
    fprintf(s->to, "%d %d\n", batch, iters);
    fflush(s->to);
    return fgets(line, sizeof line, s->from) ? atof(line) : -1;
}

static void torch_server_stop(torch_server *s)
{
    if (s->to)
        fclose(s->to); /* end of input: the server exits */
    if (s->from)
        fclose(s->from);
    if (s->pid > 0)
        waitpid(s->pid, NULL, 0);
}

/* `pairs` alternating bursts of `iters` forwards at `batch`, ours and PyTorch's (the
 * order swapped every pair, 10 ms apart so neither side's idle OpenMP threads still
 * spin in the other's burst). ratios[k] = PyTorch's time / ours; rates: images/s
 * medians. Returns 0, or -1 when the PyTorch side failed. */
static int bench_paired(captcha_network *net, torch_server *s, int batch, int iters, int pairs,
                        double *ratios, double *ours_rate, double *torch_rate)
{
    const captcha_config *c = captcha_network_config(net);
    size_t in = (size_t)batch * 3 * c->input_height * c->input_width;
    float *x = malloc(in * sizeof(float));
    float *y = malloc((size_t)batch * captcha_config_classes(c) * sizeof(float));
    double ours_rates[BENCH_MAX_VALUES], torch_rates[BENCH_MAX_VALUES];
    captcha_error err;
    int status = 0;
    fill(x, in, 1);
    for (int k = -1; k < pairs && status == 0; k++) {
        double t_ours = 0, t_torch = 0;
        for (int side = 0; side < 2; side++) {
            usleep(10000);
            if ((side == 0) == (k % 2 == 0)) {
                double t0 = bench_now();
                for (int i = 0; i < iters; i++)
                    if (captcha_network_forward(net, x, batch, CAPTCHA_MODE_EVAL, y, &err)) {
                        fprintf(stderr, "forward: %s\n", err.message);
                        exit(1);
                    }
                t_ours = bench_now() - t0;
            } else if ((t_torch = torch_server_run(s, batch, iters)) <= 0) {
                status = -1;
            }
        }
        if (k >= 0 && status == 0) { /* k = -1: warm-up pair */
            ratios[k] = t_torch / t_ours;
            ours_rates[k] = batch * iters / t_ours;
            torch_rates[k] = batch * iters / t_torch;
        }
    }
    if (status == 0) {
        *ours_rate = bench_median(ours_rates, pairs);
        *torch_rate = bench_median(torch_rates, pairs);
    }
    free(x);
    free(y);
    return status;
}

/* Median images/s over 5 repeats of `iters` eval forwards at `batch`. */
static double bench_eval(captcha_network *net, int batch, int iters)
{
    const captcha_config *c = captcha_network_config(net);
    size_t in = (size_t)batch * 3 * c->input_height * c->input_width;
    float *x = malloc(in * sizeof(float));
    float *y = malloc((size_t)batch * captcha_config_classes(c) * sizeof(float));
    fill(x, in, 1);
    captcha_error err;
    double rates[5];
    for (int r = -2; r < 5; r++) {
        double t0 = bench_now();
        for (int i = 0; i < (r < 0 ? 1 : iters); i++)
            if (captcha_network_forward(net, x, batch, CAPTCHA_MODE_EVAL, y, &err)) {
                fprintf(stderr, "forward: %s\n", err.message);
                exit(1);
            }
        if (r >= 0)
            rates[r] = batch * iters / (bench_now() - t0);
    }
    qsort(rates, 5, sizeof *rates, bench_compare_double);
    free(x);
    free(y);
    return rates[2];
}

static double bench_train(captcha_network *net, int steps)
{
    const captcha_config *c = captcha_network_config(net);
    const int batch = 16, classes = captcha_config_classes(c);
    size_t in = (size_t)batch * 3 * c->input_height * c->input_width;
    float *x = malloc(in * sizeof(float));
    float *t = calloc((size_t)batch * classes, sizeof(float));
    fill(x, in, 2);
    for (int n = 0; n < batch; n++)
        for (int p = 0; p < c->length; p++)
            t[n * classes + p * c->charset_size] = 1;
    captcha_adam_config adam = captcha_adam_default();
    captcha_error err;
    double rates[3];
    for (int r = -1; r < 3; r++) {
        double t0 = bench_now();
        for (int i = 0; i < (r < 0 ? 2 : steps); i++) {
            float loss;
            if (captcha_network_forward_backward(net, x, t, batch, &loss, NULL, &err) ||
                captcha_network_adam_step(net, &adam, &err)) {
                fprintf(stderr, "train step: %s\n", err.message);
                exit(1);
            }
        }
        if (r >= 0)
            rates[r] = batch * steps / (bench_now() - t0);
    }
    qsort(rates, 3, sizeof *rates, bench_compare_double);
    free(x);
    free(t);
    return rates[1];
}

int main(int argc, char **argv)
{
    int threads = 2, quick = 0, torch = 1, train = 1, rounds = 3, pairs = 0; /* 0: default */
    double gflops = 0; /* 0: measure */
    static const struct option options[] = {{"threads", required_argument, 0, 't'},
                                             {"quick", no_argument, 0, 'q'},
                                             {"rounds", required_argument, 0, 'o'},
                                             {"pairs", required_argument, 0, 'p'},
                                             {"no-torch", no_argument, 0, 'n'},
                                             {"no-train", no_argument, 0, 'r'},
                                             {"gflops", required_argument, 0, 'g'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 't': threads = atoi(optarg); break;
        case 'q': quick = 1; break;
        case 'o': rounds = atoi(optarg); break;
        case 'p': pairs = atoi(optarg); break;
        case 'n': torch = 0; break;
        case 'r': train = 0; break;
        case 'g': gflops = atof(optarg); break;
        default:
            printf("usage: %s [--threads N (2)] [--rounds N (3)] [--pairs N (21)] [--quick] "
                   "[--no-torch] [--no-train] [--gflops PEAK (measured)] [MODEL.safetensors]\n",
                   argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (rounds < 1 || rounds > 50) {
        fprintf(stderr, "--rounds: expected 1..50\n");
        return 2;
    }
    if (pairs && (pairs < 3 || pairs > BENCH_MAX_VALUES)) {
        fprintf(stderr, "--pairs: expected 3..%d\n", BENCH_MAX_VALUES);
        return 2;
    }
    captcha_error err;
    captcha_backend *backend;
    if (captcha_backend_cpu_create(threads, &backend, &err)) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    captcha_network *net;
    char model_path[4096];
    if (optind < argc) {
        snprintf(model_path, sizeof model_path, "%s", argv[optind]);
        if (captcha_model_load(model_path, backend, &net, NULL, 0, &err)) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
    } else {
        captcha_config config;
        captcha_config_reference(&config);
        if (captcha_network_create(backend, &config, 42, &net, &err)) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
        snprintf(model_path, sizeof model_path, "/tmp/bench-cpu-%d.safetensors", (int)getpid());
        if (captcha_model_save(net, model_path, NULL, &err)) {
            fprintf(stderr, "%s\n", err.message);
            return 1;
        }
    }
    const int iter_b1 = quick ? 20 : 100, iter_b64 = quick ? 1 : 3, train_steps = quick ? 2 : 8;

    const char *modes[3] = {"eager", "eager_channels_last", "jit_optimized"};
    /* [round][mode][batch index]; PyTorch's best mode per round; ours */
    double torch_rate[50][3][2] = {{{0}}}, torch_train[50] = {0}, best[50][2] = {{0}};
    double ours[50][2], ours_train[50] = {0}, ceiling = gflops;
    for (int r = 0; r < rounds; r++) {
        /* PyTorch first, then ours, on the same warm machine in one process tree */
        if (torch) {
            char cmd[8192];
            snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/bench/torch_cpu.py %s %d %d %d %d",
                     CAPTCHA_SOURCE_DIR, model_path, threads, iter_b1, iter_b64,
                     train ? train_steps : 0);
            FILE *p = popen(cmd, "r");
            char line[256];
            while (p && fgets(line, sizeof line, p)) {
                char mode[64];
                int batch;
                double rate;
                if (sscanf(line, "torch %63s batch %d %lf", mode, &batch, &rate) != 3)
                    continue;
                for (int m = 0; m < 3; m++)
                    if (!strcmp(mode, modes[m])) {
                        torch_rate[r][m][batch == 1 ? 0 : 1] = rate;
                        best[r][batch == 1 ? 0 : 1] = fmax(best[r][batch == 1 ? 0 : 1], rate);
                    }
                if (!strcmp(mode, "train"))
                    torch_train[r] = rate;
            }
            if (!p || pclose(p) != 0)
                fprintf(stderr, "note: the PyTorch side failed (is python3-torch installed?)\n");
        }
        ours[r][0] = bench_eval(net, 1, iter_b1);
        ours[r][1] = bench_eval(net, 64, iter_b64);
        ours_train[r] = train ? bench_train(net, train_steps) : 0;
        if (gflops <= 0) /* a ceiling is the best the machine gave: max over rounds */
            ceiling = fmax(ceiling, measure_sgemm_gflops());
        fprintf(stderr, "round %d/%d: batch 1 ours %.1f torch %.1f, batch 64 ours %.1f torch %.1f"
                        ", train ours %.1f torch %.1f\n",
                r + 1, rounds, ours[r][0], best[r][0], ours[r][1], best[r][1], ours_train[r],
                torch_train[r]);
    }

    /* medians over rounds */
    double med_ours[2], med_torch[3][2], med_best[2], med_ratio[2], med_train, med_torch_train,
        med_train_ratio, column[50];
    for (int b = 0; b < 2; b++) {
        for (int r = 0; r < rounds; r++)
            column[r] = ours[r][b];
        med_ours[b] = bench_median(column, rounds);
        for (int m = 0; m < 3; m++) {
            for (int r = 0; r < rounds; r++)
                column[r] = torch_rate[r][m][b];
            med_torch[m][b] = bench_median(column, rounds);
        }
        for (int r = 0; r < rounds; r++)
            column[r] = best[r][b];
        med_best[b] = bench_median(column, rounds);
        for (int r = 0; r < rounds; r++)
            column[r] = best[r][b] > 0 ? ours[r][b] / best[r][b] : 0;
        med_ratio[b] = bench_median(column, rounds);
    }
    for (int r = 0; r < rounds; r++)
        column[r] = ours_train[r];
    med_train = bench_median(column, rounds);
    for (int r = 0; r < rounds; r++)
        column[r] = torch_train[r];
    med_torch_train = bench_median(column, rounds);
    for (int r = 0; r < rounds; r++)
        column[r] = torch_train[r] > 0 ? ours_train[r] / torch_train[r] : 0;
    med_train_ratio = bench_median(column, rounds);

    printf("CPU inference, %d threads, input %dx%d (images/s, median of %d rounds, each the median "
           "of 5 repeats)\n",
           threads, captcha_network_config(net)->input_width,
           captcha_network_config(net)->input_height, rounds);
    printf("%-28s %12s %12s\n", "", "batch 1", "batch 64");
    printf("%-28s %12.1f %12.1f\n", "gst-captcha (oneDNN)", med_ours[0], med_ours[1]);
    for (int m = 0; m < 3; m++)
        if (med_torch[m][0] > 0)
            printf("%-28s %12.1f %12.1f\n", modes[m], med_torch[m][0], med_torch[m][1]);
    if (med_best[0] > 0) {
        printf("%-28s %12.1f %12.1f\n", "PyTorch's best mode", med_best[0], med_best[1]);
        printf("%-28s %11.2fx %11.2fx   (median of the per-round ratios; goal: >= 2x at batch "
               "1, >= 1x at batch 64)\n",
               "ratio vs PyTorch's best", med_ratio[0], med_ratio[1]);
        printf("%-28s", "  per round");
        for (int b = 0; b < 2; b++) {
            char text[256] = "";
            for (int r = 0; r < rounds && strlen(text) < 200; r++)
                snprintf(text + strlen(text), sizeof text - strlen(text), "%s%.2f", r ? " " : "",
                         ours[r][b] / best[r][b]);
            printf(" %12s", text);
        }
        printf("\n");
    }
    if (ceiling > 0) {
        printf("%-28s %11.0f%% %11.0f%%   (%.2f GFLOP/image, direct-convolution count; ceiling "
               "%.0f GFLOP/s, %s)\n",
               "share of machine peak", 100 * med_ours[0] * FORWARD_GFLOP / ceiling,
               100 * med_ours[1] * FORWARD_GFLOP / ceiling, FORWARD_GFLOP, ceiling,
               gflops > 0 ? "--gflops" : "oneDNN sgemm 1024^3, best of the rounds");
        if (med_best[0] > 0)
            printf("%-28s %11.0f%% %11.0f%%\n", "  PyTorch's best mode",
                   100 * med_best[0] * FORWARD_GFLOP / ceiling,
                   100 * med_best[1] * FORWARD_GFLOP / ceiling);
    }
    if (med_best[0] > 0) {
        /* the paired measurement against PyTorch's best mode of the rounds above */
        if (!pairs)
            pairs = quick ? 5 : 21;
        printf("\nPaired bursts (%d pairs, ours and PyTorch alternating, each burst %s):\n", pairs,
               quick ? "10 forwards at batch 1, 1 at batch 64" : "80 forwards at batch 1, 2 at batch 64");
        printf("%-28s %12s %12s %12s %s\n", "", "ours img/s", "torch img/s", "ratio",
               "(min, middle half, max)");
        for (int b = 0; b < 2; b++) {
            int m_best = 0;
            for (int m = 1; m < 3; m++)
                if (med_torch[m][b] > med_torch[m_best][b])
                    m_best = m;
            torch_server server = {0};
            double ratios[BENCH_MAX_VALUES], ours_rate = 0, torch_rate = 0;
            int batch = b == 0 ? 1 : 64, iters = b == 0 ? (quick ? 10 : 80) : (quick ? 1 : 2);
            signal(SIGPIPE, SIG_IGN);
            if (torch_server_start(&server, model_path, threads, modes[m_best]) ||
                bench_paired(net, &server, batch, iters, pairs, ratios, &ours_rate, &torch_rate)) {
                fprintf(stderr, "note: the paired PyTorch side failed\n");
                torch_server_stop(&server);
                continue;
            }
            torch_server_stop(&server);
            char label[64];
            snprintf(label, sizeof label, "batch %d vs %s", batch, modes[m_best]);
            printf("%-28s %12.1f %12.1f %11.2fx (%.2f, %.2f-%.2f, %.2f)   median of the pair "
                   "ratios; goal >= %s\n",
                   label, ours_rate, torch_rate, bench_median(ratios, pairs),
                   bench_quantile(ratios, pairs, 0), bench_quantile(ratios, pairs, 0.25),
                   bench_quantile(ratios, pairs, 0.75), bench_quantile(ratios, pairs, 1),
                   b == 0 ? "2x" : "1x");
        }
    }
    if (train) {
        printf("\nCPU training, batch 16, forward + backward + Adam (images/s, median of %d "
               "rounds)\n",
               rounds);
        printf("%-28s %12.1f\n", "gst-captcha (oneDNN)", med_train);
        if (med_torch_train > 0)
            printf("%-28s %12.1f\n%-28s %11.2fx\n", "PyTorch eager", med_torch_train,
                   "ratio (median per round)", med_train_ratio);
        if (ceiling > 0)
            printf("%-28s %11.0f%%   (%.2f GFLOP/image)\n", "share of machine peak",
                   100 * med_train * 3 * FORWARD_GFLOP / ceiling, 3 * FORWARD_GFLOP);
    }
    if (optind >= argc)
        unlink(model_path);
    captcha_network_destroy(net);
    captcha_backend_destroy(backend);
    return 0;
}
