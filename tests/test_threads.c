/* The CPU backend's thread count holds in a thread that never set OpenMP's: a backend
 * created with threads = 1 in one thread and used in another, fresh one (as captchaocr
 * creates it in start() and runs it in the streaming thread) runs its oneDNN primitives
 * on that thread alone, so the process gains no OpenMP worker. oneDNN fixes a primitive's thread count when the primitive is created, from
 * the calling thread's OpenMP setting (OMP_NUM_THREADS=2 in the test environment);
 * the backend must set it before creating anything. The check counts the threads of
 * the process in /proc/self/task (skipped where that does not exist). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "test_util.h"

static int task_count(void)
{
    DIR *dir = opendir("/proc/self/task");
    if (!dir)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)))
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    return n;
}

typedef struct {
    captcha_backend *backend; /* created with threads = 1 by the main thread */
    int tasks_after; /* threads of the process after the ops, seen from the worker */
    char error[512];
} worker_result;

/* Runs the ops the inference and training paths use, at shapes large enough for
 * oneDNN to split work across threads if it were allowed to. */
static void *worker(void *arg)
{
    worker_result *r = arg;
    captcha_backend *b = r->backend;
    captcha_error err = {0};
    captcha_conv2d_shape s;
    captcha_conv2d_shape_init(&s, 4, 32, 32, 128, 32, 3, 1, 1);
    size_t nx = captcha_conv2d_input_count(&s), nw = captcha_conv2d_weight_count(&s);
    const size_t linear_weights = 180 * 1024; /* the linear layer below: [180, 1024] */
    float *x = malloc(nx * sizeof *x), *y = malloc(nx * sizeof *y);
    float *w = malloc((nw > linear_weights ? nw : linear_weights) * sizeof *w);
    float *bias = calloc(180, sizeof *bias), *dw = malloc(nw * sizeof *dw);
    r->tasks_after = -1;
    if (!x || !w || !y || !bias || !dw) {
        snprintf(r->error, sizeof r->error, "out of memory");
        goto done;
    }
    captcha_test_fill_uniform(x, nx, -1, 1, 1);
    captcha_test_fill_uniform(w, nw > linear_weights ? nw : linear_weights, -0.1f, 0.1f, 2);
    if (b->ops->conv2d_forward(b, &s, x, w, bias, NULL, 1, y, &err) ||
        b->ops->conv2d_forward_native(b, &s, x, 0, w, bias, NULL, 1, y, 1, &err) ||
        b->ops->conv2d_forward(b, &s, x, w, NULL, NULL, 0, y, &err) ||
        b->ops->conv2d_backward_data(b, &s, y, w, x, &err) ||
        b->ops->conv2d_backward_weight(b, &s, x, y, dw, &err) ||
        b->ops->linear_forward(b, 4, 1024, 180, x, w, bias, y, &err)) {
        snprintf(r->error, sizeof r->error, "%s", err.message);
        goto done;
    }
    r->tasks_after = task_count();
done:
    free(x);
    free(w);
    free(y);
    free(bias);
    free(dw);
    return NULL;
}

static void test_one_thread_in_a_fresh_thread(void **state)
{
    (void)state;
    int before = task_count();
    if (before < 0)
        skip();
    worker_result r = {0};
    captcha_error err = {0};
    if (captcha_backend_cpu_create(1, &r.backend, &err))
        fail_msg("CPU backend: %s", err.message);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, worker, &r), 0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    captcha_backend_destroy(r.backend);
    if (r.error[0])
        fail_msg("ops: %s", r.error);
    fprintf(stderr, "threads: %d before, %d while the threads=1 backend ran (expected %d)\n",
            before, r.tasks_after, before + 1);
    assert_int_equal(r.tasks_after, before + 1);
}

/* Primitives made in one thread and destroyed in another. oneDNN's own (library-mode)
 * scratchpad is one buffer per thread, counted by the primitives made in that thread; a
 * primitive destroyed in another thread counts down that thread's buffer instead, which
 * can free it under the primitives still using it. captchaocr's data test hit this: the
 * element's network (made in a streaming thread) was destroyed in the main thread, and the
 * next Winograd convolution of a network made in the main thread crashed. The backend now
 * owns its scratchpad. Steps: backend A runs in this thread, backend B runs the same
 * convolution in a worker thread, B is destroyed here, A runs again and must give the same
 * result. */
typedef struct {
    captcha_backend *backend;
    const float *x, *w, *bias;
    float *y;
    char error[512];
} conv_job;

static const captcha_conv2d_shape *winograd_shape(void)
{
    static captcha_conv2d_shape s; /* block 1's conv2: fused, 3x3, stride 1, 32 channels */
    captcha_conv2d_shape_init(&s, 1, 32, 32, 128, 32, 3, 1, 1);
    return &s;
}

static void *conv_worker(void *arg)
{
    conv_job *j = arg;
    captcha_error err = {0};
    captcha_backend *b = j->backend;
    if (b->ops->conv2d_forward_native(b, winograd_shape(), j->x, 0, j->w, j->bias, NULL, 1, j->y,
                                      0, &err))
        snprintf(j->error, sizeof j->error, "%s", err.message);
    return NULL;
}

static void test_primitive_destroyed_in_another_thread(void **state)
{
    (void)state;
    const captcha_conv2d_shape *s = winograd_shape();
    size_t nx = captcha_conv2d_input_count(s), nw = captcha_conv2d_weight_count(s);
    size_t ny = captcha_conv2d_output_count(s);
    float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w);
    float *bias = calloc(32, sizeof *bias), *y1 = calloc(ny, sizeof *y1);
    float *y2 = calloc(ny, sizeof *y2), *y3 = calloc(ny, sizeof *y3);
    assert_true(x && w && bias && y1 && y2 && y3);
    captcha_test_fill_uniform(x, nx, -1, 1, 3);
    captcha_test_fill_uniform(w, nw, -0.1f, 0.1f, 4);
    captcha_error err = {0};
    conv_job a = {.x = x, .w = w, .bias = bias, .y = y1};
    conv_job b = {.x = x, .w = w, .bias = bias, .y = y2};
    if (captcha_backend_cpu_create(2, &a.backend, &err) ||
        captcha_backend_cpu_create(2, &b.backend, &err))
        fail_msg("CPU backend: %s", err.message);
    conv_worker(&a); /* A: made and run in this thread */
    if (a.error[0])
        fail_msg("backend A: %s", a.error);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, conv_worker, &b), 0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    if (b.error[0])
        fail_msg("backend B (worker thread): %s", b.error);
    captcha_backend_destroy(b.backend); /* made in the worker, destroyed here */
    a.y = y3;
    conv_worker(&a);
    if (a.error[0])
        fail_msg("backend A, second run: %s", a.error);
    double worst = 0, worst_b = 0;
    for (size_t i = 0; i < ny; i++) {
        double d = y1[i] > y3[i] ? y1[i] - y3[i] : y3[i] - y1[i];
        double e = y1[i] > y2[i] ? y1[i] - y2[i] : y2[i] - y1[i];
        worst = d > worst ? d : worst;
        worst_b = e > worst_b ? e : worst_b;
    }
    fprintf(stderr, "backend A run twice: max abs difference %g; A vs B: %g\n", worst, worst_b);
    assert_true(worst == 0);
    assert_true(worst_b == 0);
    captcha_backend_destroy(a.backend);
    free(x);
    free(w);
    free(bias);
    free(y1);
    free(y2);
    free(y3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_primitive_destroyed_in_another_thread),
        cmocka_unit_test(test_one_thread_in_a_fresh_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
