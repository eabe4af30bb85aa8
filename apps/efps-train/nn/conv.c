/* 2-D convolution as im2col + SGEMM, one image at a time: the column buffer
 * of one image (in.c * k * k rows, out.h * out.w columns) stays small enough
 * to live in cache, and the per-image GEMMs are still large enough for
 * OpenBLAS to run near its peak. */
#include "layer.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    nn_layer_t base;
    int k, stride, pad;
    size_t weight;
} conv_t;

/* The output columns ow whose input column ow*s - p + kj is inside the
 * image: [*lo_p, *hi_p). Everything outside is padding. */
static void valid_cols(const conv_t *c, int kj, int *lo_p, int *hi_p)
{
    const int s = c->stride, p = c->pad, in_w = c->base.in.w, out_w = c->base.out.w;
    int lo = p - kj > 0 ? (p - kj + s - 1) / s : 0;
    int hi = (in_w - 1 + p - kj) / s + 1;
    if (in_w - 1 + p - kj < 0)
        hi = 0;
    *lo_p = lo < out_w ? lo : out_w;
    *hi_p = hi < out_w ? (hi > *lo_p ? hi : *lo_p) : out_w;
}

/* col[(ci*k + ki)*k + kj][oh*wo + ow] = x[ci][oh*s - p + ki][ow*s - p + kj] (0 outside).
 * Rows are copied in runs (memcpy at stride 1): this runs as often as the
 * GEMM and would otherwise cost as much. */
static void im2col(const conv_t *c, const float *restrict x, float *restrict col)
{
    const nn_shape_t in = c->base.in, out = c->base.out;
    const int k = c->k, s = c->stride, p = c->pad;
    size_t plane = (size_t)out.h * (size_t)out.w;
    for (int kj = 0; kj < k; kj++) {
        int lo, hi;
        valid_cols(c, kj, &lo, &hi);
        for (int ci = 0; ci < in.c; ci++) {
            const float *xc = x + (size_t)ci * in.h * in.w;
            for (int ki = 0; ki < k; ki++) {
                float *row = col + ((size_t)(ci * k + ki) * k + kj) * plane;
                for (int oh = 0; oh < out.h; oh++) {
                    int ih = oh * s - p + ki;
                    float *dst = row + (size_t)oh * out.w;
                    if (ih < 0 || ih >= in.h) {
                        memset(dst, 0, (size_t)out.w * sizeof(float));
                        continue;
                    }
                    const float *src = xc + (size_t)ih * in.w;
                    for (int ow = 0; ow < lo; ow++)
                        dst[ow] = 0.0f;
                    if (s == 1) {
                        memcpy(dst + lo, src + lo - p + kj, (size_t)(hi - lo) * sizeof(float));
                    } else {
                        for (int ow = lo; ow < hi; ow++)
                            dst[ow] = src[ow * s - p + kj];
                    }
                    for (int ow = hi; ow < out.w; ow++)
                        dst[ow] = 0.0f;
                }
            }
        }
    }
}

/* The adjoint of im2col: dx (zeroed here) accumulates every column entry. */
static void col2im(const conv_t *c, const float *restrict col, float *restrict dx)
{
    const nn_shape_t in = c->base.in, out = c->base.out;
    const int k = c->k, s = c->stride, p = c->pad;
    size_t plane = (size_t)out.h * (size_t)out.w;
    memset(dx, 0, nn_shape_size(in) * sizeof(float));
    for (int kj = 0; kj < k; kj++) {
        int lo, hi;
        valid_cols(c, kj, &lo, &hi);
        for (int ci = 0; ci < in.c; ci++) {
            float *xc = dx + (size_t)ci * in.h * in.w;
            for (int ki = 0; ki < k; ki++) {
                const float *row = col + ((size_t)(ci * k + ki) * k + kj) * plane;
                for (int oh = 0; oh < out.h; oh++) {
                    int ih = oh * s - p + ki;
                    if (ih < 0 || ih >= in.h)
                        continue;
                    const float *src = row + (size_t)oh * out.w;
                    float *dst = xc + (size_t)ih * in.w;
                    if (s == 1) {
                        float *d1 = dst + lo - p + kj;
                        const float *s1 = src + lo;
                        for (int j = 0; j < hi - lo; j++)
                            d1[j] += s1[j];
                    } else {
                        for (int ow = lo; ow < hi; ow++)
                            dst[ow * s - p + kj] += src[ow];
                    }
                }
            }
        }
    }
}

static efps_status_t conv_forward(nn_layer_t *l, const nn_run_t *run, const float *x, float *y,
                                  int n)
{
    conv_t *c = (conv_t *)l;
    efps_status_t status = nn_run_param_ready(run, c->weight);
    if (status != EFPS_OK)
        return status;
    const float *w = l->params->list[c->weight].data;
    const int kk = l->in.c * c->k * c->k;
    const int plane = l->out.h * l->out.w;
    for (int i = 0; i < n; i++) {
        im2col(c, x + (size_t)i * nn_shape_size(l->in), run->work);
        /* y_i[cout][plane] = W[cout][kk] * col[kk][plane] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l->out.c, plane, kk, 1.0f, w, kk,
                    run->work, plane, 0.0f, y + (size_t)i * nn_shape_size(l->out), plane);
    }
    return EFPS_OK;
}

static efps_status_t conv_backward(nn_layer_t *l, const nn_run_t *run, const float *x,
                                   const float *y, const float *dy, float *dx, int n)
{
    (void)y;
    conv_t *c = (conv_t *)l;
    const nn_param_t *wp = &l->params->list[c->weight];
    const int kk = l->in.c * c->k * c->k;
    const int plane = l->out.h * l->out.w;
    for (int i = 0; i < n; i++) {
        const float *dyi = dy + (size_t)i * nn_shape_size(l->out);
        im2col(c, x + (size_t)i * nn_shape_size(l->in), run->work);
        /* dW[cout][kk] (+)= dy_i[cout][plane] * col^T[plane][kk] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l->out.c, kk, plane, 1.0f, dyi, plane,
                    run->work, plane, i == 0 ? 0.0f : 1.0f, wp->grad, kk);
        if (dx == NULL)
            continue;
        /* dcol[kk][plane] = W^T[kk][cout] * dy_i[cout][plane], into the same buffer */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, plane, l->out.c, 1.0f, wp->data,
                    kk, dyi, plane, 0.0f, run->work, plane);
        col2im(c, run->work, dx + (size_t)i * nn_shape_size(l->in));
    }
    return nn_run_grad_ready(run, l->params, c->weight);
}

static void conv_init(nn_layer_t *l, nn_rng_t *rng)
{
    conv_t *c = (conv_t *)l;
    const nn_param_t *wp = &l->params->list[c->weight];
    nn_init_he_normal(rng, wp->data, wp->n, (size_t)l->in.c * c->k * c->k);
}

static void conv_destroy(nn_layer_t *l)
{
    free(l);
}

static const nn_layer_ops_t conv_ops = {
    .kind = "conv",
    .forward = conv_forward,
    .backward = conv_backward,
    .init = conv_init,
    .destroy = conv_destroy,
};

efps_status_t nn_conv_create(nn_params_t *ps, const char *name, nn_shape_t in, int cout, int k,
                             int stride, int pad, nn_layer_t **l_p)
{
    if (cout < 1 || k < 1 || stride < 1 || pad < 0 || in.c < 1 || in.h + 2 * pad < k ||
        in.w + 2 * pad < k) {
        efps_error("%s: invalid convolution %dx%dx%d -> %d channels, k %d, stride %d, pad %d", name,
                   in.c, in.h, in.w, cout, k, stride, pad);
        return EFPS_ERR_INVALID;
    }
    conv_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return EFPS_ERR_NOMEM;
    c->base.ops = &conv_ops;
    c->base.in = in;
    c->base.out =
        (nn_shape_t){cout, (in.h + 2 * pad - k) / stride + 1, (in.w + 2 * pad - k) / stride + 1};
    c->base.work_floats = (size_t)in.c * k * k * c->base.out.h * c->base.out.w;
    c->base.params = ps;
    c->k = k;
    c->stride = stride;
    c->pad = pad;
    char pname[256];
    snprintf(pname, sizeof(pname), "%s.weight", name);
    efps_status_t status = nn_params_add(ps, pname, (size_t)cout * in.c * k * k, &c->weight);
    if (status != EFPS_OK) {
        free(c);
        return status;
    }
    *l_p = &c->base;
    return EFPS_OK;
}
