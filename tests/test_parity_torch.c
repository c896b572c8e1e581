/* Parity with PyTorch, the oracle: fixtures written at test time by
 * tests/reference/make_fixtures.py (Debian python3-torch) and compared with our
 * CPU backend.
 *
 * Tolerances (from the project's issue):
 *   eval logits                 max |ours - torch| <= 1e-4
 *   train-mode loss             relative error <= 1e-3
 *   every parameter's gradient  relative L2 error <= 1e-3 (per tensor)
 *   running statistics after the train-mode forward: relative L2 <= 1e-4 (per tensor)
 *   parameters after one Adam step from torch's moments, with torch's gradients (isolating
 *   the optimizer) and with ours (end to end): max abs <= 1e-5
 * Skipped (exit 77) when python3 cannot import torch. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "captcha-build-config.h"
#include "backend.h"
#include "model_file.h"
#include "network.h"
#include "test_util.h"

static char fixture_root[3500];

static const char *python(void)
{
    const char *p = getenv("CAPTCHA_PYTHON");
    return p && *p ? p : "/usr/bin/python3";
}

/* Reads DIR/NAME as `count` floats; fails the test when the size differs. */
static float *load_f32(const char *dir, const char *name, size_t count)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t size = 0;
    float *data = captcha_test_read_file(path, &size);
    if (!data)
        fail_msg("cannot read fixture %s", path);
    if (size != count * sizeof(float))
        fail_msg("fixture %s has %zu bytes, expected %zu", path, size, count * sizeof(float));
    return data;
}

static long read_number(const char *dir, const char *name, double *value)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = captcha_test_read_file(path, NULL);
    if (!text)
        fail_msg("cannot read fixture %s", path);
    *value = strtod(text, NULL);
    free(text);
    return 0;
}

typedef struct {
    const char *name;
    captcha_backend *backend;
    captcha_network *network;
    char dir[4096];
    int classes, input_floats_per_image;
} parity_case;

static int case_setup(void **state, const char *name)
{
    parity_case *c = calloc(1, sizeof *c);
    c->name = name;
    snprintf(c->dir, sizeof c->dir, "%s/%s", fixture_root, name);
    captcha_error err = {0};
    if (captcha_backend_cpu_create(2, &c->backend, &err) != CAPTCHA_OK) {
        fprintf(stderr, "cpu backend: %s\n", err.message);
        free(c);
        return -1;
    }
    char weights[8400], notice[256];
    snprintf(weights, sizeof weights, "%s/weights.safetensors", c->dir);
    if (captcha_model_load(weights, c->backend, &c->network, notice, sizeof notice, &err) !=
        CAPTCHA_OK) {
        fprintf(stderr, "load %s: %s\n", weights, err.message);
        captcha_backend_destroy(c->backend);
        free(c);
        return -1;
    }
    const captcha_config *cfg = captcha_network_config(c->network);
    c->classes = captcha_config_classes(cfg);
    c->input_floats_per_image = 3 * cfg->input_height * cfg->input_width;
    *state = c;
    return 0;
}

static int setup_reference(void **state)
{
    return case_setup(state, "reference");
}

static int setup_wide6(void **state)
{
    return case_setup(state, "wide6");
}

static int case_teardown(void **state)
{
    parity_case *c = *state;
    captcha_network_destroy(c->network);
    captcha_backend_destroy(c->backend);
    free(c);
    return 0;
}

static void test_eval_logits(void **state)
{
    parity_case *c = *state;
    const int batch = 4;
    float *input = load_f32(c->dir, "input_eval.f32", (size_t)batch * c->input_floats_per_image);
    float *expected = load_f32(c->dir, "logits_eval.f32", (size_t)batch * c->classes);
    float *logits = malloc(sizeof(float) * batch * c->classes);
    captcha_error err = {0};
    assert_int_equal(captcha_network_forward(c->network, input, batch, CAPTCHA_MODE_EVAL, logits,
                                             &err),
                     CAPTCHA_OK);
    double max_err = captcha_test_max_abs_error(logits, expected, (size_t)batch * c->classes);
    /* batch 1 must give the same logits as the same image inside a batch */
    assert_int_equal(captcha_network_forward(c->network, input, 1, CAPTCHA_MODE_EVAL, logits,
                                             &err),
                     CAPTCHA_OK);
    double max_err_b1 = captcha_test_max_abs_error(logits, expected, (size_t)c->classes);
    printf("[%s] eval logits: max abs error %.3g (batch 4), %.3g (batch 1); tolerance 1e-4\n",
           c->name, max_err, max_err_b1);
    assert_true(max_err <= 1e-4);
    assert_true(max_err_b1 <= 1e-4);
    free(input);
    free(expected);
    free(logits);
}

/* The train-mode step: loss, every gradient, running statistics, then Adam. */
static void test_train_step(void **state)
{
    parity_case *c = *state;
    const int batch = 8;
    captcha_network *net = c->network;
    captcha_error err = {0};
    size_t nparams = captcha_network_parameter_count(net);

    float *input = load_f32(c->dir, "input_train.f32", (size_t)batch * c->input_floats_per_image);
    float *targets = load_f32(c->dir, "targets_train.f32", (size_t)batch * c->classes);
    float *expected_loss = load_f32(c->dir, "loss.f32", 1);
    float *adam_m = load_f32(c->dir, "adam_m.f32", nparams);
    float *adam_v = load_f32(c->dir, "adam_v.f32", nparams);
    double step, lr;
    read_number(c->dir, "adam_step.txt", &step);
    read_number(c->dir, "lr.txt", &lr);

    float loss = 0;
    assert_int_equal(
        captcha_network_forward_backward(net, input, targets, batch, &loss, NULL, &err),
        CAPTCHA_OK);
    double loss_rel = fabs(loss - expected_loss[0]) / fabs(expected_loss[0]);
    printf("[%s] train loss: ours %.7f torch %.7f, relative error %.3g; tolerance 1e-3\n",
           c->name, loss, expected_loss[0], loss_rel);
    assert_true(loss_rel <= 1e-3);

    /* gradients and running statistics, tensor by tensor */
    double worst_grad = 0, worst_running = 0;
    const char *worst_grad_name = "", *worst_running_name = "";
    float *torch_grads = malloc(nparams * sizeof(float));
    for (size_t i = 0; i < captcha_network_tensor_count(net); i++) {
        const captcha_tensor_info *t = captcha_network_tensor(net, i);
        char name[128];
        float *ours = malloc(t->count * sizeof(float));
        if (t->kind == CAPTCHA_TENSOR_PARAMETER) {
            snprintf(name, sizeof name, "grad.%s.f32", t->name);
            float *expected = load_f32(c->dir, name, t->count);
            assert_int_equal(captcha_network_read_gradient(net, i, ours, &err), CAPTCHA_OK);
            double rel = captcha_test_rel_error(ours, expected, t->count);
            if (rel > 1e-3)
                printf("  gradient %s: relative error %.3g\n", t->name, rel);
            if (!(rel <= worst_grad)) {
                worst_grad = rel;
                worst_grad_name = t->name;
            }
            memcpy(torch_grads + t->offset, expected, t->count * sizeof(float));
            free(expected);
        } else {
            snprintf(name, sizeof name, "running_after.%s.f32", t->name);
            float *expected = load_f32(c->dir, name, t->count);
            assert_int_equal(captcha_network_read_tensor(net, i, ours, &err), CAPTCHA_OK);
            double rel = captcha_test_rel_error(ours, expected, t->count);
            if (!(rel <= worst_running)) {
                worst_running = rel;
                worst_running_name = t->name;
            }
            free(expected);
        }
        free(ours);
    }
    printf("[%s] gradients: worst relative L2 error %.3g (%s) over %zu tensors; tolerance 1e-3\n",
           c->name, worst_grad, worst_grad_name, captcha_network_tensor_count(net));
    printf("[%s] running statistics: worst relative L2 error %.3g (%s); tolerance 1e-4\n",
           c->name, worst_running, worst_running_name);
    assert_true(worst_grad <= 1e-3);
    assert_true(worst_running <= 1e-4);

    /* Adam: from torch's gradients and moments, our update must land on torch's parameters. */
    float *before = malloc(nparams * sizeof(float));
    float *after = malloc(nparams * sizeof(float));
    float *expected_after = malloc(nparams * sizeof(float));
    assert_int_equal(captcha_network_read_buffer(net, CAPTCHA_BUFFER_PARAMETERS, before, &err),
                     CAPTCHA_OK);
    for (size_t i = 0; i < captcha_network_tensor_count(net); i++) {
        const captcha_tensor_info *t = captcha_network_tensor(net, i);
        if (t->kind != CAPTCHA_TENSOR_PARAMETER)
            continue;
        char name[128];
        snprintf(name, sizeof name, "after.%s.f32", t->name);
        float *e = load_f32(c->dir, name, t->count);
        memcpy(expected_after + t->offset, e, t->count * sizeof(float));
        free(e);
    }
    captcha_adam_config adam = captcha_adam_default();
    adam.learning_rate = (float)lr;
    assert_int_equal(captcha_network_write_buffer(net, CAPTCHA_BUFFER_ADAM_M, adam_m, &err),
                     CAPTCHA_OK);
    assert_int_equal(captcha_network_write_buffer(net, CAPTCHA_BUFFER_ADAM_V, adam_v, &err),
                     CAPTCHA_OK);
    captcha_network_set_adam_step_count(net, (int64_t)step);

    /* (a) our own gradients end to end */
    assert_int_equal(captcha_network_adam_step(net, &adam, &err), CAPTCHA_OK);
    assert_int_equal(captcha_network_read_buffer(net, CAPTCHA_BUFFER_PARAMETERS, after, &err),
                     CAPTCHA_OK);
    double end_to_end = captcha_test_max_abs_error(after, expected_after, nparams);

    /* (b) torch's gradients: isolates the optimizer */
    assert_int_equal(captcha_network_write_buffer(net, CAPTCHA_BUFFER_PARAMETERS, before, &err),
                     CAPTCHA_OK);
    assert_int_equal(captcha_network_write_buffer(net, CAPTCHA_BUFFER_ADAM_M, adam_m, &err),
                     CAPTCHA_OK);
    assert_int_equal(captcha_network_write_buffer(net, CAPTCHA_BUFFER_ADAM_V, adam_v, &err),
                     CAPTCHA_OK);
    assert_int_equal(captcha_network_write_buffer(net, CAPTCHA_BUFFER_GRADIENTS, torch_grads, &err),
                     CAPTCHA_OK);
    captcha_network_set_adam_step_count(net, (int64_t)step);
    assert_int_equal(captcha_network_adam_step(net, &adam, &err), CAPTCHA_OK);
    assert_int_equal(captcha_network_adam_step_count(net), (int64_t)step + 1);
    assert_int_equal(captcha_network_read_buffer(net, CAPTCHA_BUFFER_PARAMETERS, after, &err),
                     CAPTCHA_OK);
    double isolated = captcha_test_max_abs_error(after, expected_after, nparams);
    printf("[%s] parameters after Adam step %d (lr %g): max abs error %.3g from torch's "
           "gradients, %.3g from our own gradients (tolerance 1e-5 each)\n",
           c->name, (int)step + 1, lr, isolated, end_to_end);
    assert_true(isolated <= 1e-5);
    assert_true(end_to_end <= 1e-5);

    free(before);
    free(after);
    free(expected_after);
    free(torch_grads);
    free(input);
    free(targets);
    free(expected_loss);
    free(adam_m);
    free(adam_v);
}

int main(void)
{
    char command[16384];
    snprintf(command, sizeof command, "%s -c 'import torch' 2>/dev/null", python());
    if (system(command) != 0) {
        printf("SKIP: %s cannot import torch (install python3-torch); parity with PyTorch not "
               "checked\n",
               python());
        return CAPTCHA_TEST_SKIP;
    }
    const char *tmp = captcha_test_tmpdir();
    if (!tmp) {
        printf("cannot create a temporary folder\n");
        return 1;
    }
    snprintf(fixture_root, sizeof fixture_root, "%s/parity-fixtures", tmp);
    snprintf(command, sizeof command, "%s '%s/tests/reference/make_fixtures.py' '%s'", python(),
             CAPTCHA_SOURCE_DIR, fixture_root);
    if (system(command) != 0) {
        printf("fixture generation failed: %s\n", command);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_eval_logits, setup_reference, case_teardown),
        cmocka_unit_test_setup_teardown(test_train_step, setup_reference, case_teardown),
        cmocka_unit_test_setup_teardown(test_eval_logits, setup_wide6, case_teardown),
        cmocka_unit_test_setup_teardown(test_train_step, setup_wide6, case_teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(command, sizeof command, "rm -rf '%s'", fixture_root);
    if (system(command) != 0)
        printf("note: could not remove %s\n", fixture_root);
    return failed;
}
