/* The networks of efps-train: every layer's backward against central finite
 * differences (double-accumulated, tiny shapes), whole tiny networks, the
 * hook order the trainer relies on, batch-norm statistics, determinism, and
 * that the models learn Fashion-MNIST. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "nn/data.h"
#include "nn/eval.h"
#include "nn/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- finite differences ------------------------------------------------ */

typedef struct {
    double eps;  /* perturbation */
    double atol; /* |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|) */
    double rtol;
    size_t max_checks; /* elements checked per tensor, evenly spread */
} tol_t;

typedef struct {
    const char *what;
    int checked, bad, kinks;
    double worst; /* largest error / allowed error */
} report_t;

/* The derivative at v[i] by central differences, from the loss at v[i] -
 * eps, v[i] and v[i] + eps. Where a ReLU input crosses zero inside the step
 * the function has a kink there and no derivative to compare against: the
 * one-sided slopes then disagree by far more than curvature explains, and
 * *kink_p is set. */
typedef double (*loss_fn)(void *ctx);
static double central_diff(loss_fn loss, void *ctx, float *v, size_t i, const tol_t *t,
                           bool *kink_p)
{
    float saved = v[i];
    float up = (float)(saved + t->eps), down = (float)(saved - t->eps);
    double mid = loss(ctx);
    v[i] = up;
    double hi = loss(ctx);
    v[i] = down;
    double lo = loss(ctx);
    v[i] = saved;
    /* the steps actually taken, after rounding to float */
    double right = (hi - mid) / ((double)up - saved), left = (mid - lo) / ((double)saved - down);
    double allowed = t->atol + t->rtol * fmax(fabs(left), fabs(right));
    *kink_p = fabs(right - left) > 4 * allowed;
    return (hi - lo) / ((double)up - down);
}

static void compare(report_t *rep, size_t i, double analytic, double numeric, const tol_t *t)
{
    double allowed = t->atol + t->rtol * fmax(fabs(analytic), fabs(numeric));
    double err = fabs(analytic - numeric);
    rep->checked++;
    if (err / allowed > rep->worst)
        rep->worst = err / allowed;
    if (getenv("NN_GRADCHECK_VERBOSE") && err > 0.3 * allowed)
        print_message("  %s[%zu] %.2fx the tolerance: analytic %.6g numeric %.6g\n", rep->what, i,
                      err / allowed, analytic, numeric);
    if (err > allowed) {
        if (rep->bad < 5)
            print_message("%s[%zu]: analytic %.6g numeric %.6g\n", rep->what, i, analytic, numeric);
        rep->bad++;
    }
}

/* Compares unless the point is a kink (counted, and limited in number). */
static void compare_smooth(report_t *rep, size_t i, double analytic, double numeric, bool kink,
                           const tol_t *t)
{
    if (kink)
        rep->kinks++;
    else
        compare(rep, i, analytic, numeric, t);
}

static void assert_report(const report_t *rep)
{
    if (rep->bad != 0)
        print_message("%s: %d of %d elements off (worst at %.2fx the tolerance)\n", rep->what,
                      rep->bad, rep->checked, rep->worst);
    if (getenv("NN_GRADCHECK_VERBOSE"))
        print_message("%-28s %3d checked, %d kinks, worst %.2fx tol\n", rep->what, rep->checked,
                      rep->kinks, rep->worst);
    assert_true(rep->checked > 0);
    assert_int_equal(rep->bad, 0);
    /* a kink now and then; more would mean the check hardly checks */
    assert_true(rep->kinks <= rep->checked / 8 + 1);
}

static size_t check_step(size_t n, const tol_t *t)
{
    return n <= t->max_checks ? 1 : (n + t->max_checks - 1) / t->max_checks;
}

/* ---- one layer on its own ---------------------------------------------- */

typedef struct {
    nn_params_t ps, st;
    nn_layer_t *l;
    float *work;
    nn_rng_t rng;
} fx_t;

static void fx_begin(fx_t *f, uint64_t seed)
{
    memset(f, 0, sizeof(*f));
    nn_params_init(&f->ps, true);
    nn_params_init(&f->st, false);
    nn_rng_seed(&f->rng, seed, 0);
}

/* After the layer is made: allocate, initialize, then move parameters off
 * their initial values (gamma = 1, beta = 0 would hide mistakes). */
static void fx_ready(fx_t *f, efps_status_t created)
{
    assert_int_equal(created, EFPS_OK);
    assert_int_equal(nn_params_finalize(&f->ps), EFPS_OK);
    assert_int_equal(nn_params_finalize(&f->st), EFPS_OK);
    f->work = efps_aligned_calloc((f->l->work_floats + 1) * sizeof(float));
    assert_non_null(f->work);
    nn_layer_init(f->l, &f->rng);
    for (size_t i = 0; i < f->ps.count; i++)
        for (size_t j = 0; j < f->ps.list[i].n; j++)
            f->ps.list[i].data[j] += (float)(0.3 * nn_rng_normal(&f->rng));
}

static void fx_end(fx_t *f)
{
    nn_layer_destroy(f->l);
    efps_aligned_free(f->work);
    nn_params_release(&f->ps);
    nn_params_release(&f->st);
}

static float *random_floats(nn_rng_t *rng, size_t n, double scale)
{
    float *v = malloc(n * sizeof(float));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(scale * nn_rng_normal(rng));
    return v;
}

/* L = sum(r * layer(x)), accumulated in double. */
static double layer_loss(fx_t *f, const float *x, const float *r, float *y, int n)
{
    nn_run_t run = {.train = true, .work = f->work};
    assert_int_equal(nn_layer_forward(f->l, &run, x, y, n), EFPS_OK);
    double L = 0.0;
    for (size_t i = 0; i < (size_t)n * nn_shape_size(f->l->out); i++)
        L += (double)r[i] * y[i];
    return L;
}

typedef struct {
    fx_t *f;
    const float *x, *r;
    float *y;
    int n;
} layer_ctx_t;

static double layer_ctx_loss(void *ctx)
{
    layer_ctx_t *c = ctx;
    return layer_loss(c->f, c->x, c->r, c->y, c->n);
}

/* Checks dL/dx and every parameter's gradient of f->l at x (n examples). */
static void gradcheck_layer(fx_t *f, float *x, int n, const tol_t *t)
{
    size_t nin = (size_t)n * nn_shape_size(f->l->in), nout = (size_t)n * nn_shape_size(f->l->out);
    float *r = random_floats(&f->rng, nout, 1.0);
    float *y = malloc(nout * sizeof(float));
    float *dx = malloc(nin * sizeof(float));
    assert_non_null(y);
    assert_non_null(dx);
    nn_run_t run = {.train = true, .work = f->work};
    assert_int_equal(nn_layer_forward(f->l, &run, x, y, n), EFPS_OK);
    assert_int_equal(nn_layer_backward(f->l, &run, x, y, r, dx, n), EFPS_OK);
    /* finite differences run more forwards: keep the analytic gradients */
    float **grads = calloc(f->ps.count + 1, sizeof(float *));
    for (size_t p = 0; p < f->ps.count; p++) {
        grads[p] = malloc(f->ps.list[p].n * sizeof(float));
        memcpy(grads[p], f->ps.list[p].grad, f->ps.list[p].n * sizeof(float));
    }

    layer_ctx_t ctx = {.f = f, .x = x, .r = r, .y = y, .n = n};
    report_t rep = {.what = "dx"};
    bool kink;
    for (size_t i = 0; i < nin; i += check_step(nin, t)) {
        double num = central_diff(layer_ctx_loss, &ctx, x, i, t, &kink);
        compare_smooth(&rep, i, dx[i], num, kink, t);
    }
    assert_report(&rep);
    for (size_t p = 0; p < f->ps.count; p++) {
        nn_param_t *pp = &f->ps.list[p];
        report_t prep = {.what = pp->name};
        for (size_t i = 0; i < pp->n; i += check_step(pp->n, t)) {
            double num = central_diff(layer_ctx_loss, &ctx, pp->data, i, t, &kink);
            compare_smooth(&prep, i, grads[p][i], num, kink, t);
        }
        assert_report(&prep);
        free(grads[p]);
    }
    free(grads);
    free(r);
    free(y);
    free(dx);
}

static const tol_t smooth = {.eps = 1e-2, .atol = 2e-3, .rtol = 2e-3, .max_checks = 400};

static void check_conv(int cin, int h, int w, int cout, int k, int stride, int pad, int n)
{
    fx_t f;
    fx_begin(&f, 100 + (uint64_t)(k * 10 + stride));
    nn_shape_t in = {cin, h, w};
    fx_ready(&f, nn_conv_create(&f.ps, "conv", in, cout, k, stride, pad, &f.l));
    assert_int_equal(f.l->out.h, (h + 2 * pad - k) / stride + 1);
    float *x = random_floats(&f.rng, (size_t)n * nn_shape_size(in), 1.0);
    gradcheck_layer(&f, x, n, &smooth);
    free(x);
    fx_end(&f);
}

static void test_grad_conv(void **state)
{
    (void)state;
    check_conv(2, 5, 5, 3, 3, 1, 1, 2); /* the 3x3 "same" convolution */
    check_conv(2, 6, 5, 3, 3, 2, 1, 2); /* strided, odd width */
    check_conv(3, 5, 5, 2, 3, 1, 0, 2); /* no padding */
    check_conv(2, 6, 6, 4, 1, 2, 0, 2); /* the 1x1 strided shortcut */
}

/* A direct convolution, to pin the layout (not just the gradients). */
static void test_conv_matches_direct(void **state)
{
    (void)state;
    fx_t f;
    fx_begin(&f, 7);
    nn_shape_t in = {2, 5, 4};
    const int k = 3, s = 2, p = 1, n = 2;
    fx_ready(&f, nn_conv_create(&f.ps, "conv", in, 3, k, s, p, &f.l));
    nn_shape_t out = f.l->out;
    float *x = random_floats(&f.rng, (size_t)n * nn_shape_size(in), 1.0);
    float *y = malloc((size_t)n * nn_shape_size(out) * sizeof(float));
    nn_run_t run = {.train = true, .work = f.work};
    assert_int_equal(nn_layer_forward(f.l, &run, x, y, n), EFPS_OK);
    const float *wt = f.ps.list[0].data;
    for (int b = 0; b < n; b++)
        for (int co = 0; co < out.c; co++)
            for (int oh = 0; oh < out.h; oh++)
                for (int ow = 0; ow < out.w; ow++) {
                    double acc = 0.0;
                    for (int ci = 0; ci < in.c; ci++)
                        for (int ki = 0; ki < k; ki++)
                            for (int kj = 0; kj < k; kj++) {
                                int ih = oh * s - p + ki, iw = ow * s - p + kj;
                                if (ih < 0 || ih >= in.h || iw < 0 || iw >= in.w)
                                    continue;
                                acc += (double)wt[((co * in.c + ci) * k + ki) * k + kj] *
                                       x[((b * in.c + ci) * in.h + ih) * in.w + iw];
                            }
                    float got = y[((b * out.c + co) * out.h + oh) * out.w + ow];
                    assert_float_equal(got, acc, 1e-4);
                }
    free(x);
    free(y);
    fx_end(&f);
}

static void test_grad_bn(void **state)
{
    (void)state;
    fx_t f;
    fx_begin(&f, 11);
    nn_shape_t in = {3, 3, 2};
    fx_ready(&f, nn_bn_create(&f.ps, &f.st, "bn", in, &f.l));
    const int n = 4;
    float *x = random_floats(&f.rng, (size_t)n * nn_shape_size(in), 2.0);
    for (size_t i = 0; i < (size_t)n * nn_shape_size(in); i++)
        x[i] += 1.0f;
    /* the output is invariant to a shift of x: smaller steps, the function is curved */
    tol_t t = {.eps = 3e-3, .atol = 2e-3, .rtol = 5e-3, .max_checks = 400};
    gradcheck_layer(&f, x, n, &t);
    free(x);
    fx_end(&f);
}

static void test_grad_relu(void **state)
{
    (void)state;
    fx_t f;
    fx_begin(&f, 12);
    nn_shape_t in = {2, 3, 3};
    fx_ready(&f, nn_relu_create(in, &f.l));
    const int n = 3;
    float *x = random_floats(&f.rng, (size_t)n * nn_shape_size(in), 1.0);
    /* keep every input farther from the kink than the step */
    for (size_t i = 0; i < (size_t)n * nn_shape_size(in); i++)
        x[i] = x[i] >= 0.0f ? x[i] + 0.1f : x[i] - 0.1f;
    gradcheck_layer(&f, x, n, &smooth);
    free(x);
    fx_end(&f);
}

static void test_grad_linear(void **state)
{
    (void)state;
    fx_t f;
    fx_begin(&f, 13);
    nn_shape_t in = {2, 3, 3};
    fx_ready(&f, nn_linear_create(&f.ps, "fc", in, 4, &f.l));
    const int n = 3;
    float *x = random_floats(&f.rng, (size_t)n * nn_shape_size(in), 1.0);
    gradcheck_layer(&f, x, n, &smooth);
    free(x);
    fx_end(&f);
}

static void test_grad_pool(void **state)
{
    (void)state;
    fx_t f;
    fx_begin(&f, 14);
    nn_shape_t in = {3, 4, 3};
    fx_ready(&f, nn_gap_create(in, &f.l));
    assert_int_equal(f.l->out.c, 3);
    assert_int_equal(f.l->out.h * f.l->out.w, 1);
    const int n = 2;
    float *x = random_floats(&f.rng, (size_t)n * nn_shape_size(in), 1.0);
    gradcheck_layer(&f, x, n, &smooth);
    free(x);
    fx_end(&f);
}

/* ReLUs inside: a step can cross a kink, so the steps are small and the
 * absolute tolerance a little wider. */
static const tol_t kinked = {.eps = 1e-3, .atol = 5e-3, .rtol = 1e-2, .max_checks = 150};

static void check_block(nn_shape_t in, int cout, int stride, nn_shortcut_t sc, int nparams)
{
    fx_t f;
    fx_begin(&f, 200 + (uint64_t)(cout * 4 + stride * 2 + (int)sc));
    const int n = 3;
    fx_ready(&f, nn_block_create(&f.ps, &f.st, "blk", in, cout, stride, sc, n, &f.l));
    assert_int_equal((int)f.ps.count, nparams);
    float *x = random_floats(&f.rng, (size_t)n * nn_shape_size(in), 1.0);
    gradcheck_layer(&f, x, n, &kinked);
    free(x);
    fx_end(&f);
}

static void test_grad_block(void **state)
{
    (void)state;
    check_block((nn_shape_t){3, 4, 4}, 3, 1, NN_SHORTCUT_PAD, 6);  /* identity shortcut */
    check_block((nn_shape_t){2, 6, 5}, 4, 2, NN_SHORTCUT_PAD, 6);  /* option A */
    check_block((nn_shape_t){2, 6, 5}, 4, 2, NN_SHORTCUT_CONV, 9); /* option B */
}

/* Option A by hand: y = relu(main + shortcut), so with conv2's weights at
 * zero and bn2's bias at zero the block is relu of the padded, subsampled x. */
static void test_block_option_a_layout(void **state)
{
    (void)state;
    fx_t f;
    fx_begin(&f, 15);
    nn_shape_t in = {2, 4, 4};
    fx_ready(&f, nn_block_create(&f.ps, &f.st, "blk", in, 6, 2, NN_SHORTCUT_PAD, 1, &f.l));
    memset(f.ps.list[3].data, 0, f.ps.list[3].n * sizeof(float)); /* conv2.weight */
    memset(f.ps.list[5].data, 0, f.ps.list[5].n * sizeof(float)); /* bn2.bias */
    float *x = random_floats(&f.rng, nn_shape_size(in), 1.0);
    float y[6 * 2 * 2];
    nn_run_t run = {.train = true, .work = f.work};
    assert_int_equal(nn_layer_forward(f.l, &run, x, y, 1), EFPS_OK);
    for (int c = 0; c < 6; c++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                /* channels 0..1 and 4..5 are padding; 2..3 carry x's channels 0..1 */
                float want = 0.0f;
                if (c >= 2 && c < 4)
                    want = fmaxf(x[((c - 2) * 4 + 2 * i) * 4 + 2 * j], 0.0f);
                assert_float_equal(y[(c * 2 + i) * 2 + j], want, 1e-6);
            }
    free(x);
    fx_end(&f);
}

static void test_grad_softmax_ce(void **state)
{
    (void)state;
    nn_rng_t rng;
    nn_rng_seed(&rng, 16, 0);
    const int n = 4, classes = 5;
    float *z = random_floats(&rng, (size_t)n * classes, 3.0);
    int32_t labels[4] = {0, 4, 2, 2};
    float dz[20];
    int correct;
    double loss = nn_softmax_ce(z, labels, n, classes, dz, &correct);
    report_t rep = {.what = "dlogits"};
    for (int i = 0; i < n * classes; i++) {
        float saved = z[i];
        z[i] = saved + 1e-2f;
        double hi = nn_softmax_ce(z, labels, n, classes, NULL, NULL);
        z[i] = saved - 1e-2f;
        double lo = nn_softmax_ce(z, labels, n, classes, NULL, NULL);
        z[i] = saved;
        compare(&rep, (size_t)i, dz[i],
                (hi - lo) / ((double)(saved + 1e-2f) - (double)(saved - 1e-2f)), &smooth);
    }
    assert_report(&rep);
    /* the loss and the count against a direct computation */
    double want = 0.0;
    int want_correct = 0;
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        int best = 0;
        for (int k = 0; k < classes; k++) {
            s += exp(z[i * classes + k]);
            if (z[i * classes + k] > z[i * classes + best])
                best = k;
        }
        want += log(s) - z[i * classes + labels[i]];
        want_correct += best == labels[i];
    }
    assert_float_equal(loss, want / n, 1e-9);
    assert_int_equal(correct, want_correct);
    /* huge logits neither overflow nor give NaN */
    float big[2] = {1000.0f, -1000.0f};
    int32_t l1 = 1;
    double lb = nn_softmax_ce(big, &l1, 1, 2, dz, NULL);
    assert_float_equal(lb, 2000.0, 1e-6);
    assert_float_equal(dz[0], 1.0, 1e-6);
    assert_float_equal(dz[1], -1.0, 1e-6);
    free(z);
}

/* ---- batch normalization statistics ------------------------------------ */

static void test_bn_running_stats_and_eval(void **state)
{
    (void)state;
    fx_t f;
    fx_begin(&f, 17);
    nn_shape_t in = {2, 2, 3};
    fx_ready(&f, nn_bn_create(&f.ps, &f.st, "bn", in, &f.l));
    assert_int_equal((int)f.st.count, 2);
    assert_string_equal(f.st.list[0].name, "bn.running_mean");
    const int n = 5, plane = 6, m = n * plane;
    float *x = random_floats(&f.rng, (size_t)n * nn_shape_size(in), 2.0);
    float y[5 * 12];
    nn_run_t train = {.train = true, .work = f.work}, eval = {.train = false, .work = f.work};
    assert_int_equal(nn_layer_forward(f.l, &train, x, y, n), EFPS_OK);
    const float *gamma = f.ps.list[0].data, *beta = f.ps.list[1].data;
    const float *rm = f.st.list[0].data, *rv = f.st.list[1].data;
    for (int c = 0; c < 2; c++) {
        double s = 0.0, sq = 0.0;
        for (int b = 0; b < n; b++)
            for (int j = 0; j < plane; j++)
                s += x[(b * 2 + c) * plane + j];
        double mean = s / m;
        for (int b = 0; b < n; b++)
            for (int j = 0; j < plane; j++)
                sq += pow(x[(b * 2 + c) * plane + j] - mean, 2);
        /* training output: batch statistics, biased variance */
        for (int b = 0; b < n; b++)
            for (int j = 0; j < plane; j++) {
                int i = (b * 2 + c) * plane + j;
                double want = gamma[c] * (x[i] - mean) / sqrt(sq / m + NN_BN_EPS) + beta[c];
                assert_float_equal(y[i], want, 1e-4);
            }
        /* running statistics: momentum 0.1 from (0, 1), unbiased variance */
        assert_float_equal(rm[c], 0.1 * mean, 1e-5);
        assert_float_equal(rv[c], 0.9 + 0.1 * sq / (m - 1), 1e-5);
    }
    /* evaluation: the running statistics, whatever the batch holds */
    assert_int_equal(nn_layer_forward(f.l, &eval, x, y, 1), EFPS_OK);
    for (int c = 0; c < 2; c++)
        for (int j = 0; j < plane; j++) {
            int i = c * plane + j;
            double want = gamma[c] * (x[i] - rm[c]) / sqrt(rv[c] + NN_BN_EPS) + beta[c];
            assert_float_equal(y[i], want, 1e-4);
        }
    /* there is no backward of an evaluation-mode forward */
    float dx[12];
    assert_int_equal(nn_layer_backward(f.l, &train, x, y, y, dx, 1), EFPS_ERR_STATE);
    free(x);
    fx_end(&f);
}

/* ---- whole networks ---------------------------------------------------- */

static nn_model_config_t tiny_resnet(nn_shortcut_t sc)
{
    nn_model_config_t cfg;
    assert_int_equal(nn_model_config_named("resnet8", &cfg), EFPS_OK);
    cfg.input = (nn_shape_t){1, 12, 11};
    cfg.classes = 3;
    cfg.max_batch = 4;
    cfg.resnet_width = 2;
    cfg.resnet_shortcut = sc;
    cfg.seed = 5;
    return cfg;
}

static nn_model_config_t tiny_mlp(void)
{
    nn_model_config_t cfg;
    assert_int_equal(nn_model_config_named("mlp", &cfg), EFPS_OK);
    cfg.input = (nn_shape_t){1, 4, 4};
    cfg.classes = 3;
    cfg.max_batch = 4;
    cfg.mlp_hidden[0] = 6;
    cfg.mlp_hidden[1] = 5;
    cfg.seed = 6;
    return cfg;
}

static double model_loss(nn_model_t *m, const float *x, const int32_t *labels, int n)
{
    const float *logits;
    assert_int_equal(nn_model_forward(m, x, n, true, NULL, &logits), EFPS_OK);
    return nn_softmax_ce(logits, labels, n, nn_model_config(m)->classes, NULL, NULL);
}

typedef struct {
    nn_model_t *m;
    const float *x;
    const int32_t *labels;
    int n;
} model_ctx_t;

static double model_ctx_loss(void *ctx)
{
    model_ctx_t *c = ctx;
    return model_loss(c->m, c->x, c->labels, c->n);
}

static void gradcheck_model(const nn_model_config_t *cfg, const tol_t *t)
{
    nn_model_t *m;
    assert_int_equal(nn_model_create(cfg, &m), EFPS_OK);
    nn_rng_t rng;
    nn_rng_seed(&rng, cfg->seed, 1);
    const int n = 4;
    float *x = random_floats(&rng, (size_t)n * nn_shape_size(cfg->input), 1.0);
    int32_t labels[4] = {0, 1, 2, 1};
    /* off their initial values, as in training */
    const nn_param_t *p = nn_model_params(m);
    for (size_t i = 0; i < nn_model_param_count(m); i++)
        for (size_t j = 0; j < p[i].n; j++)
            p[i].data[j] += (float)(0.2 * nn_rng_normal(&rng));
    nn_step_result_t r;
    assert_int_equal(nn_model_train_step(m, x, labels, n, NULL, &r), EFPS_OK);
    assert_float_equal(r.loss, model_loss(m, x, labels, n), 1e-6);
    for (size_t i = 0; i < nn_model_param_count(m); i++) {
        float *g = malloc(p[i].n * sizeof(float));
        memcpy(g, p[i].grad, p[i].n * sizeof(float));
        report_t rep = {.what = p[i].name};
        model_ctx_t ctx = {.m = m, .x = x, .labels = labels, .n = n};
        for (size_t j = 0; j < p[i].n; j += check_step(p[i].n, t)) {
            bool kink;
            double num = central_diff(model_ctx_loss, &ctx, p[i].data, j, t, &kink);
            compare_smooth(&rep, j, g[j], num, kink, t);
        }
        assert_report(&rep);
        free(g);
    }
    free(x);
    nn_model_destroy(m);
}

static void test_grad_tiny_nets(void **state)
{
    (void)state;
    /* Batch norm over 4 tiny images puts many ReLU inputs near zero: the
     * steps must be small to stay off the kinks (central differences there
     * converge to the analytic value only below eps ~ 1e-3). The loss is a
     * mean over 4 examples, so gradients, and atol, are small. */
    tol_t t = {.eps = 1e-4, .atol = 2.5e-3, .rtol = 2e-2, .max_checks = 40};
    nn_model_config_t a = tiny_resnet(NN_SHORTCUT_PAD), b = tiny_resnet(NN_SHORTCUT_CONV);
    nn_model_config_t mlp = tiny_mlp();
    gradcheck_model(&a, &t);
    gradcheck_model(&b, &t);
    gradcheck_model(&mlp, &t);
}

/* ---- hooks ------------------------------------------------------------- */

typedef struct {
    const nn_param_t *params;
    size_t count;
    size_t forward_calls, grad_calls;
    long last_forward, last_grad;
    bool in_order;
    float **seen; /* each gradient as on_grad saw it */
    size_t fail_forward_at, fail_grad_at;
    efps_status_t fail_with;
} hook_log_t;

static efps_status_t on_before(size_t i, void *user)
{
    hook_log_t *h = user;
    h->in_order &= (long)i == h->last_forward + 1;
    h->last_forward = (long)i;
    h->forward_calls++;
    return i == h->fail_forward_at ? h->fail_with : EFPS_OK;
}

static efps_status_t on_grad(size_t i, const float *grad, size_t n, void *user)
{
    hook_log_t *h = user;
    h->in_order &= (long)i == h->last_grad - 1 && grad == h->params[i].grad && n == h->params[i].n;
    h->last_grad = (long)i;
    h->grad_calls++;
    if (i < h->count && h->seen[i] == NULL) {
        h->seen[i] = malloc(n * sizeof(float));
        memcpy(h->seen[i], grad, n * sizeof(float));
    }
    return i == h->fail_grad_at ? h->fail_with : EFPS_OK;
}

static void hook_log_reset(hook_log_t *h, const nn_model_t *m)
{
    for (size_t i = 0; h->seen && i < h->count; i++)
        free(h->seen[i]);
    free(h->seen);
    *h = (hook_log_t){.params = nn_model_params(m),
                      .count = nn_model_param_count(m),
                      .last_forward = -1,
                      .last_grad = (long)nn_model_param_count(m),
                      .in_order = true,
                      .fail_forward_at = SIZE_MAX,
                      .fail_grad_at = SIZE_MAX};
    h->seen = calloc(h->count, sizeof(float *));
}

static void check_hooks(const nn_model_config_t *cfg)
{
    nn_model_t *m;
    assert_int_equal(nn_model_create(cfg, &m), EFPS_OK);
    nn_rng_t rng;
    nn_rng_seed(&rng, 3, 3);
    float *x = random_floats(&rng, 4 * nn_shape_size(cfg->input), 1.0);
    int32_t labels[4] = {2, 0, 1, 0};
    hook_log_t h = {0};
    nn_hooks_t hooks = {.before_forward = on_before, .on_grad = on_grad, .user = &h};
    size_t np = nn_model_param_count(m);

    /* every tensor announced once before forward reads it, in increasing
     * order; every gradient reported once, final, in decreasing order */
    hook_log_reset(&h, m);
    nn_step_result_t r;
    assert_int_equal(nn_model_train_step(m, x, labels, 4, &hooks, &r), EFPS_OK);
    assert_true(h.in_order);
    assert_int_equal(h.forward_calls, np);
    assert_int_equal(h.grad_calls, np);
    assert_int_equal(h.last_grad, 0);
    const nn_param_t *p = nn_model_params(m);
    for (size_t i = 0; i < np; i++)
        assert_memory_equal(h.seen[i], p[i].grad, p[i].n * sizeof(float));

    /* a failing hook stops the pass and its status comes back */
    hook_log_reset(&h, m);
    h.fail_forward_at = np / 2;
    h.fail_with = EFPS_ERR_TIMEOUT;
    const float *logits;
    assert_int_equal(nn_model_forward(m, x, 4, true, &hooks, &logits), EFPS_ERR_TIMEOUT);
    assert_int_equal(h.forward_calls, np / 2 + 1);
    /* ... and a failed forward leaves nothing to run backward on */
    assert_int_equal(nn_model_backward(m, x, NULL), EFPS_ERR_STATE);

    hook_log_reset(&h, m);
    h.fail_grad_at = np - 2;
    h.fail_with = EFPS_ERR_PEER;
    assert_int_equal(nn_model_train_step(m, x, labels, 4, &hooks, &r), EFPS_ERR_PEER);
    assert_int_equal(h.grad_calls, 2);

    hook_log_reset(&h, m);
    free(h.seen);
    free(x);
    nn_model_destroy(m);
}

static void test_hooks_order(void **state)
{
    (void)state;
    nn_model_config_t a = tiny_resnet(NN_SHORTCUT_CONV), b = tiny_resnet(NN_SHORTCUT_PAD);
    nn_model_config_t mlp = tiny_mlp();
    check_hooks(&a);
    check_hooks(&b);
    check_hooks(&mlp);
}

/* ---- model shapes, names, determinism ---------------------------------- */

static void test_resnet20_layout(void **state)
{
    (void)state;
    nn_model_config_t cfg;
    assert_int_equal(nn_model_config_named("resnet20", &cfg), EFPS_OK);
    assert_int_equal(cfg.resnet_blocks, 3);
    cfg.max_batch = 2;
    nn_model_t *m;
    assert_int_equal(nn_model_create(&cfg, &m), EFPS_OK);
    /* conv1 + bn1 (2) + 9 blocks x 6 + fc (2) */
    assert_int_equal(nn_model_param_count(m), 59);
    /* The CIFAR ResNet-20 (option A) has 269,722 parameters; one input
     * channel instead of three removes 2 * 16 * 9 of them. */
    assert_int_equal(nn_model_param_floats(m), 269722 - 2 * 16 * 9);
    const nn_param_t *p = nn_model_params(m);
    assert_string_equal(p[0].name, "conv1.weight");
    assert_string_equal(p[3].name, "layer1.0.conv1.weight");
    assert_string_equal(p[57].name, "fc.weight");
    assert_int_equal(p[57].n, 64 * 10);
    for (size_t i = 0; i < 59; i++)
        assert_int_equal((uintptr_t)p[i].data % 64, 0);
    assert_int_equal(nn_model_state_count(m), 2 * 19);

    /* stages of 16, 32, 64 channels at 28, 14, 7 pixels */
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    nn_model_describe(m, out);
    fclose(out);
    assert_non_null(strstr(text, "resblock   16x28x28"));
    assert_non_null(strstr(text, "resblock   32x14x14"));
    assert_non_null(strstr(text, "resblock   64x7x7"));
    assert_non_null(strstr(text, "avgpool    64x1x1"));
    free(text);

    /* a partial last batch, and the batch limit */
    float *x = calloc(3 * 784, sizeof(float));
    const float *logits;
    assert_int_equal(nn_model_forward(m, x, 1, false, NULL, &logits), EFPS_OK);
    assert_int_equal(nn_model_forward(m, x, 3, false, NULL, &logits), EFPS_ERR_INVALID);
    free(x);
    nn_model_destroy(m);

    assert_int_equal(nn_model_config_named("resnet8", &cfg), EFPS_OK);
    assert_int_equal(cfg.resnet_blocks, 1);
    assert_int_equal(nn_model_config_named("resnet21", &cfg), EFPS_ERR_INVALID);
    assert_int_equal(nn_model_config_named("vgg", &cfg), EFPS_ERR_INVALID);
}

static void test_deterministic(void **state)
{
    (void)state;
    nn_model_config_t cfg = tiny_resnet(NN_SHORTCUT_CONV);
    nn_model_t *a, *b, *c;
    assert_int_equal(nn_model_create(&cfg, &a), EFPS_OK);
    assert_int_equal(nn_model_create(&cfg, &b), EFPS_OK);
    cfg.seed++;
    assert_int_equal(nn_model_create(&cfg, &c), EFPS_OK);
    const nn_param_t *pa = nn_model_params(a), *pb = nn_model_params(b), *pc = nn_model_params(c);
    bool differs = false;
    for (size_t i = 0; i < nn_model_param_count(a); i++) {
        assert_memory_equal(pa[i].data, pb[i].data, pa[i].n * sizeof(float));
        differs |= memcmp(pa[i].data, pc[i].data, pa[i].n * sizeof(float)) != 0;
    }
    assert_true(differs);
    /* the same batch gives the same gradients, bit for bit */
    nn_rng_t rng;
    nn_rng_seed(&rng, 9, 9);
    float *x = random_floats(&rng, 4 * nn_shape_size(cfg.input), 1.0);
    int32_t labels[4] = {1, 1, 0, 2};
    nn_step_result_t ra, rb;
    assert_int_equal(nn_model_train_step(a, x, labels, 4, NULL, &ra), EFPS_OK);
    assert_int_equal(nn_model_train_step(b, x, labels, 4, NULL, &rb), EFPS_OK);
    assert_memory_equal(&ra.loss, &rb.loss, sizeof(double));
    for (size_t i = 0; i < nn_model_param_count(a); i++)
        assert_memory_equal(pa[i].grad, pb[i].grad, pa[i].n * sizeof(float));
    free(x);
    nn_model_destroy(a);
    nn_model_destroy(b);
    nn_model_destroy(c);
}

/* ---- learning ---------------------------------------------------------- */

static void sgd(nn_model_t *m, float **v, float lr, float mu)
{
    const nn_param_t *p = nn_model_params(m);
    for (size_t i = 0; i < nn_model_param_count(m); i++)
        for (size_t j = 0; j < p[i].n; j++) {
            v[i][j] = mu * v[i][j] + p[i].grad[j];
            p[i].data[j] -= lr * v[i][j];
        }
}

static float **velocity(const nn_model_t *m)
{
    float **v = calloc(nn_model_param_count(m), sizeof(float *));
    for (size_t i = 0; i < nn_model_param_count(m); i++)
        v[i] = calloc(nn_model_params(m)[i].n, sizeof(float));
    return v;
}

static void free_velocity(const nn_model_t *m, float **v)
{
    for (size_t i = 0; i < nn_model_param_count(m); i++)
        free(v[i]);
    free(v);
}

/* One pass of the MLP over 12,000 training images (a fifth of an epoch),
 * then 2,000 test images: far above the 10% of chance. */
static void test_mlp_learns_fashion_mnist(void **state)
{
    (void)state;
    nn_dataset_t tr, te;
    assert_int_equal(nn_dataset_load_dir(NN_FASHION_MNIST_DIR, true, NULL, &tr), EFPS_OK);
    assert_int_equal(nn_dataset_load_dir(NN_FASHION_MNIST_DIR, false, NULL, &te), EFPS_OK);
    nn_model_config_t cfg;
    assert_int_equal(nn_model_config_named("mlp", &cfg), EFPS_OK);
    nn_model_t *m;
    assert_int_equal(nn_model_create(&cfg, &m), EFPS_OK);
    nn_eval_result_t before, after;
    assert_int_equal(nn_evaluate(m, &te, 0, 2000, &before), EFPS_OK);

    nn_sampler_t s;
    assert_int_equal(nn_sampler_init(&s, tr.count, 0, 5, 64, 42), EFPS_OK);
    float **v = velocity(m);
    float *x = malloc(64 * 784 * sizeof(float));
    int32_t labels[64];
    for (size_t b = 0; b < s.batches_per_epoch; b++) {
        nn_dataset_batch(&tr, nn_sampler_batch(&s, b), 64, NN_FASHION_MNIST_MEAN,
                         NN_FASHION_MNIST_STD, x, labels);
        nn_step_result_t r;
        assert_int_equal(nn_model_train_step(m, x, labels, 64, NULL, &r), EFPS_OK);
        sgd(m, v, 0.05f, 0.9f);
    }
    assert_int_equal(nn_evaluate(m, &te, 0, 2000, &after), EFPS_OK);
    print_message("mlp: test accuracy %.1f%% before, %.1f%% after %zu steps\n",
                  100.0 * (double)before.correct / 2000, 100.0 * (double)after.correct / 2000,
                  s.batches_per_epoch);
    assert_int_equal(after.count, 2000);
    assert_true(after.correct > 1560); /* > 78% */
    assert_true(after.loss < before.loss / 2);

    free(x);
    free_velocity(m, v);
    nn_sampler_free(&s);
    nn_model_destroy(m);
    nn_dataset_free(&tr);
    nn_dataset_free(&te);
}

/* A narrow resnet8 fits 32 real images: the loss falls far and training
 * accuracy reaches (nearly) all of them. */
static void test_resnet_fits_small_batch(void **state)
{
    (void)state;
    nn_dataset_t te;
    assert_int_equal(nn_dataset_load_dir(NN_FASHION_MNIST_DIR, false, NULL, &te), EFPS_OK);
    nn_model_config_t cfg;
    assert_int_equal(nn_model_config_named("resnet8", &cfg), EFPS_OK);
    cfg.max_batch = 32;
    cfg.resnet_width = 4;
    nn_model_t *m;
    assert_int_equal(nn_model_create(&cfg, &m), EFPS_OK);
    uint32_t idx[32];
    for (uint32_t i = 0; i < 32; i++)
        idx[i] = i;
    float *x = malloc(32 * 784 * sizeof(float));
    int32_t labels[32];
    nn_dataset_batch(&te, idx, 32, NN_FASHION_MNIST_MEAN, NN_FASHION_MNIST_STD, x, labels);
    float **v = velocity(m);
    nn_step_result_t first, r;
    assert_int_equal(nn_model_train_step(m, x, labels, 32, NULL, &first), EFPS_OK);
    sgd(m, v, 0.05f, 0.9f);
    for (int step = 0; step < 40; step++) {
        assert_int_equal(nn_model_train_step(m, x, labels, 32, NULL, &r), EFPS_OK);
        sgd(m, v, 0.05f, 0.9f);
    }
    print_message("resnet8/4: loss %.3f -> %.3f, %d/32 right\n", first.loss, r.loss, r.correct);
    assert_true(r.loss < first.loss / 4);
    assert_true(r.correct >= 30);
    free(x);
    free_velocity(m, v);
    nn_model_destroy(m);
    nn_dataset_free(&te);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_conv),
        cmocka_unit_test(test_conv_matches_direct),
        cmocka_unit_test(test_grad_bn),
        cmocka_unit_test(test_grad_relu),
        cmocka_unit_test(test_grad_linear),
        cmocka_unit_test(test_grad_pool),
        cmocka_unit_test(test_grad_block),
        cmocka_unit_test(test_block_option_a_layout),
        cmocka_unit_test(test_grad_softmax_ce),
        cmocka_unit_test(test_bn_running_stats_and_eval),
        cmocka_unit_test(test_grad_tiny_nets),
        cmocka_unit_test(test_hooks_order),
        cmocka_unit_test(test_resnet20_layout),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_mlp_learns_fashion_mnist),
        cmocka_unit_test(test_resnet_fits_small_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
