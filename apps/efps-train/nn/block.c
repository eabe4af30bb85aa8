/* Residual block: two conv-bn pairs and a shortcut, relu after the sum.
 * The block keeps the activations its backward needs; its backward scratch
 * comes from the pass' work area, shared by all layers of a model. */
#include "layer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    nn_layer_t base;
    nn_shortcut_t shortcut;
    bool identity; /* same shape in and out: the shortcut is x itself */
    int stride;
    int max_batch;
    nn_layer_t *conv1, *bn1, *conv2, *bn2;
    nn_layer_t *sc_conv, *sc_bn; /* option B only */
    /* saved activations: conv1, relu(bn1), conv2, bn2, shortcut conv, shortcut bn */
    float *a, *b, *c, *d, *s1, *s2;
    size_t sub_work; /* floats of the work area lent to the sub-layers */
} block_t;

/* Work area layout: [sub-layer scratch | dz | t1 | t2 | dx2], each 64-byte aligned. */
typedef struct {
    float *dz, *t1, *t2, *dx2;
} scratch_t;

static size_t chunk(size_t floats)
{
    return efps_align_up(floats, EFPS_ALIGN / sizeof(float));
}

static scratch_t scratch(const block_t *k, float *work)
{
    size_t out = chunk((size_t)k->max_batch * nn_shape_size(k->base.out));
    scratch_t s;
    s.dz = work + chunk(k->sub_work);
    s.t1 = s.dz + out;
    s.t2 = s.t1 + out;
    s.dx2 = s.t2 + out;
    return s;
}

/* Option A: channel ci of x, subsampled by the stride, lands on channel ci + lo. */
static int pad_lo(const block_t *k)
{
    return (k->base.out.c - k->base.in.c) / 2;
}

static void add_shortcut_relu(const block_t *k, const float *x, float *y, int n)
{
    const nn_shape_t in = k->base.in, out = k->base.out;
    size_t osz = nn_shape_size(out);
    if (k->sc_conv != NULL) {
        for (size_t i = 0; i < (size_t)n * osz; i++)
            y[i] = k->d[i] + k->s2[i];
    } else if (k->identity) {
        for (size_t i = 0; i < (size_t)n * osz; i++)
            y[i] = k->d[i] + x[i];
    } else {
        int lo = pad_lo(k), s = k->stride;
        memcpy(y, k->d, (size_t)n * osz * sizeof(float));
        for (int i = 0; i < n; i++)
            for (int ci = 0; ci < in.c; ci++) {
                const float *xc = x + (size_t)i * nn_shape_size(in) + (size_t)ci * in.h * in.w;
                float *yc = y + (size_t)i * osz + (size_t)(ci + lo) * out.h * out.w;
                for (int oh = 0; oh < out.h; oh++)
                    for (int ow = 0; ow < out.w; ow++)
                        yc[oh * out.w + ow] += xc[(size_t)oh * s * in.w + (size_t)ow * s];
            }
    }
    for (size_t i = 0; i < (size_t)n * osz; i++)
        y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

/* dx = the shortcut's adjoint applied to dz (identity or option A). */
static void shortcut_backward(const block_t *k, const float *dz, float *dx, int n)
{
    const nn_shape_t in = k->base.in, out = k->base.out;
    if (k->identity) {
        memcpy(dx, dz, (size_t)n * nn_shape_size(in) * sizeof(float));
        return;
    }
    int lo = pad_lo(k), s = k->stride;
    memset(dx, 0, (size_t)n * nn_shape_size(in) * sizeof(float));
    for (int i = 0; i < n; i++)
        for (int ci = 0; ci < in.c; ci++) {
            float *xc = dx + (size_t)i * nn_shape_size(in) + (size_t)ci * in.h * in.w;
            const float *zc =
                dz + (size_t)i * nn_shape_size(out) + (size_t)(ci + lo) * out.h * out.w;
            for (int oh = 0; oh < out.h; oh++)
                for (int ow = 0; ow < out.w; ow++)
                    xc[(size_t)oh * s * in.w + (size_t)ow * s] = zc[oh * out.w + ow];
        }
}

static efps_status_t block_forward(nn_layer_t *l, const nn_run_t *run, const float *x, float *y,
                                   int n)
{
    block_t *k = (block_t *)l;
    if (n > k->max_batch) {
        efps_error("residual block: batch %d is larger than the %d it was built for", n,
                   k->max_batch);
        return EFPS_ERR_INVALID;
    }
    efps_status_t status;
    if ((status = nn_layer_forward(k->conv1, run, x, k->a, n)) != EFPS_OK ||
        (status = nn_layer_forward(k->bn1, run, k->a, k->b, n)) != EFPS_OK)
        return status;
    size_t mid = (size_t)n * nn_shape_size(k->conv1->out);
    for (size_t i = 0; i < mid; i++)
        k->b[i] = k->b[i] > 0.0f ? k->b[i] : 0.0f;
    if ((status = nn_layer_forward(k->conv2, run, k->b, k->c, n)) != EFPS_OK ||
        (status = nn_layer_forward(k->bn2, run, k->c, k->d, n)) != EFPS_OK)
        return status;
    if (k->sc_conv != NULL) {
        if ((status = nn_layer_forward(k->sc_conv, run, x, k->s1, n)) != EFPS_OK ||
            (status = nn_layer_forward(k->sc_bn, run, k->s1, k->s2, n)) != EFPS_OK)
            return status;
    }
    add_shortcut_relu(k, x, y, n);
    return EFPS_OK;
}

/* Backward in the reverse of the parameters' order: shortcut (the last
 * tensors), then bn2, conv2, bn1, conv1. */
static efps_status_t block_backward(nn_layer_t *l, const nn_run_t *run, const float *x,
                                    const float *y, const float *dy, float *dx, int n)
{
    block_t *k = (block_t *)l;
    scratch_t s = scratch(k, run->work);
    size_t osz = (size_t)n * nn_shape_size(l->out);
    for (size_t i = 0; i < osz; i++)
        s.dz[i] = y[i] > 0.0f ? dy[i] : 0.0f;

    efps_status_t status;
    if (k->sc_conv != NULL) {
        if ((status = nn_layer_backward(k->sc_bn, run, k->s1, k->s2, s.dz, s.t1, n)) != EFPS_OK ||
            (status = nn_layer_backward(k->sc_conv, run, x, k->s1, s.t1, dx, n)) != EFPS_OK)
            return status;
    } else if (dx != NULL) {
        shortcut_backward(k, s.dz, dx, n);
    }
    if ((status = nn_layer_backward(k->bn2, run, k->c, k->d, s.dz, s.t1, n)) != EFPS_OK ||
        (status = nn_layer_backward(k->conv2, run, k->b, k->c, s.t1, s.t2, n)) != EFPS_OK)
        return status;
    for (size_t i = 0; i < osz; i++)
        s.t2[i] = k->b[i] > 0.0f ? s.t2[i] : 0.0f;
    if ((status = nn_layer_backward(k->bn1, run, k->a, k->b, s.t2, s.t1, n)) != EFPS_OK)
        return status;
    status = nn_layer_backward(k->conv1, run, x, k->a, s.t1, dx ? s.dx2 : NULL, n);
    if (status != EFPS_OK || dx == NULL)
        return status;
    size_t isz = (size_t)n * nn_shape_size(l->in);
    for (size_t i = 0; i < isz; i++)
        dx[i] += s.dx2[i];
    return EFPS_OK;
}

static void block_init(nn_layer_t *l, nn_rng_t *rng)
{
    block_t *k = (block_t *)l;
    nn_layer_init(k->conv1, rng);
    nn_layer_init(k->bn1, rng);
    nn_layer_init(k->conv2, rng);
    nn_layer_init(k->bn2, rng);
    if (k->sc_conv != NULL) {
        nn_layer_init(k->sc_conv, rng);
        nn_layer_init(k->sc_bn, rng);
    }
}

static void block_destroy(nn_layer_t *l)
{
    block_t *k = (block_t *)l;
    nn_layer_destroy(k->conv1);
    nn_layer_destroy(k->bn1);
    nn_layer_destroy(k->conv2);
    nn_layer_destroy(k->bn2);
    nn_layer_destroy(k->sc_conv);
    nn_layer_destroy(k->sc_bn);
    efps_aligned_free(k->a);
    efps_aligned_free(k->b);
    efps_aligned_free(k->c);
    efps_aligned_free(k->d);
    efps_aligned_free(k->s1);
    efps_aligned_free(k->s2);
    free(k);
}

static const nn_layer_ops_t block_ops = {
    .kind = "resblock",
    .forward = block_forward,
    .backward = block_backward,
    .init = block_init,
    .destroy = block_destroy,
};

static efps_status_t make_sublayers(block_t *k, nn_params_t *ps, nn_params_t *state,
                                    const char *name, int cout, int stride)
{
    char sub[256];
    efps_status_t status;
    snprintf(sub, sizeof(sub), "%s.conv1", name);
    if ((status = nn_conv_create(ps, sub, k->base.in, cout, 3, stride, 1, &k->conv1)) != EFPS_OK)
        return status;
    snprintf(sub, sizeof(sub), "%s.bn1", name);
    if ((status = nn_bn_create(ps, state, sub, k->conv1->out, &k->bn1)) != EFPS_OK)
        return status;
    snprintf(sub, sizeof(sub), "%s.conv2", name);
    if ((status = nn_conv_create(ps, sub, k->conv1->out, cout, 3, 1, 1, &k->conv2)) != EFPS_OK)
        return status;
    snprintf(sub, sizeof(sub), "%s.bn2", name);
    if ((status = nn_bn_create(ps, state, sub, k->conv2->out, &k->bn2)) != EFPS_OK)
        return status;
    if (k->identity || k->shortcut != NN_SHORTCUT_CONV)
        return EFPS_OK;
    snprintf(sub, sizeof(sub), "%s.shortcut.conv", name);
    if ((status = nn_conv_create(ps, sub, k->base.in, cout, 1, stride, 0, &k->sc_conv)) != EFPS_OK)
        return status;
    snprintf(sub, sizeof(sub), "%s.shortcut.bn", name);
    return nn_bn_create(ps, state, sub, k->sc_conv->out, &k->sc_bn);
}

static efps_status_t alloc_activations(block_t *k)
{
    size_t out = (size_t)k->max_batch * nn_shape_size(k->base.out) * sizeof(float);
    k->a = efps_aligned_alloc(out);
    k->b = efps_aligned_alloc(out);
    k->c = efps_aligned_alloc(out);
    k->d = efps_aligned_alloc(out);
    if (k->sc_conv != NULL) {
        k->s1 = efps_aligned_alloc(out);
        k->s2 = efps_aligned_alloc(out);
        if (k->s1 == NULL || k->s2 == NULL)
            return EFPS_ERR_NOMEM;
    }
    return (k->a && k->b && k->c && k->d) ? EFPS_OK : EFPS_ERR_NOMEM;
}

efps_status_t nn_block_create(nn_params_t *ps, nn_params_t *state, const char *name, nn_shape_t in,
                              int cout, int stride, nn_shortcut_t shortcut, int max_batch,
                              nn_layer_t **l_p)
{
    nn_shape_t out = {cout, (in.h - 1) / (stride > 0 ? stride : 1) + 1,
                      (in.w - 1) / (stride > 0 ? stride : 1) + 1};
    bool identity = stride == 1 && cout == in.c;
    if (max_batch < 1 || stride < 1 || cout < in.c || in.c < 1 || in.h < 1 || in.w < 1 ||
        (shortcut != NN_SHORTCUT_PAD && shortcut != NN_SHORTCUT_CONV)) {
        efps_error("%s: invalid residual block %dx%dx%d -> %d channels, stride %d, batch %d", name,
                   in.c, in.h, in.w, cout, stride, max_batch);
        return EFPS_ERR_INVALID;
    }
    block_t *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return EFPS_ERR_NOMEM;
    k->base = (nn_layer_t){.ops = &block_ops, .in = in, .out = out, .params = ps, .state = state};
    k->shortcut = shortcut;
    k->identity = identity;
    k->stride = stride;
    k->max_batch = max_batch;
    efps_status_t status = make_sublayers(k, ps, state, name, cout, stride);
    if (status == EFPS_OK)
        status = alloc_activations(k);
    if (status != EFPS_OK) {
        block_destroy(&k->base);
        return status;
    }
    k->sub_work = k->conv1->work_floats > k->conv2->work_floats ? k->conv1->work_floats
                                                                : k->conv2->work_floats;
    if (k->sc_conv != NULL && k->sc_conv->work_floats > k->sub_work)
        k->sub_work = k->sc_conv->work_floats;
    size_t outf = chunk((size_t)max_batch * nn_shape_size(out));
    k->base.work_floats = chunk(k->sub_work) + 3 * outf + (size_t)max_batch * nn_shape_size(in);
    *l_p = &k->base;
    return EFPS_OK;
}
