/* Fully connected layer: y = x W^T + b over the batch, three SGEMMs. */
#include "layer.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    nn_layer_t base;
    size_t weight, bias; /* weight + 1 == bias */
} linear_t;

static efps_status_t linear_forward(nn_layer_t *l, const nn_run_t *run, const float *x, float *y,
                                    int n)
{
    linear_t *f = (linear_t *)l;
    efps_status_t status = nn_run_param_ready(run, f->weight);
    if (status == EFPS_OK)
        status = nn_run_param_ready(run, f->bias);
    if (status != EFPS_OK)
        return status;
    const int in = (int)nn_shape_size(l->in), out = l->out.c;
    const float *w = l->params->list[f->weight].data;
    const float *b = l->params->list[f->bias].data;
    /* y[n][out] = x[n][in] * W^T[in][out] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 0.0f, y,
                out);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++)
            y[(size_t)i * out + o] += b[o];
    return EFPS_OK;
}

static efps_status_t linear_backward(nn_layer_t *l, const nn_run_t *run, const float *x,
                                     const float *y, const float *dy, float *dx, int n)
{
    (void)y;
    linear_t *f = (linear_t *)l;
    const int in = (int)nn_shape_size(l->in), out = l->out.c;
    const nn_param_t *wp = &l->params->list[f->weight], *bp = &l->params->list[f->bias];

    /* Bias first: it is the later tensor, and the cheapest to finish. */
    for (int o = 0; o < out; o++) {
        double s = 0.0;
        for (int i = 0; i < n; i++)
            s += dy[(size_t)i * out + o];
        bp->grad[o] = (float)s;
    }
    efps_status_t status = nn_run_grad_ready(run, l->params, f->bias);
    if (status != EFPS_OK)
        return status;
    /* dW[out][in] = dy^T[out][n] * x[n][in] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 0.0f,
                wp->grad, in);
    status = nn_run_grad_ready(run, l->params, f->weight);
    if (status != EFPS_OK || dx == NULL)
        return status;
    /* dx[n][in] = dy[n][out] * W[out][in] */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, wp->data, in,
                0.0f, dx, in);
    return EFPS_OK;
}

static void linear_init(nn_layer_t *l, nn_rng_t *rng)
{
    linear_t *f = (linear_t *)l;
    const nn_param_t *wp = &l->params->list[f->weight], *bp = &l->params->list[f->bias];
    nn_init_he_normal(rng, wp->data, wp->n, nn_shape_size(l->in));
    for (size_t o = 0; o < bp->n; o++)
        bp->data[o] = 0.0f;
}

static void linear_destroy(nn_layer_t *l)
{
    free(l);
}

static const nn_layer_ops_t linear_ops = {
    .kind = "linear",
    .forward = linear_forward,
    .backward = linear_backward,
    .init = linear_init,
    .destroy = linear_destroy,
};

efps_status_t nn_linear_create(nn_params_t *ps, const char *name, nn_shape_t in, int out,
                               nn_layer_t **l_p)
{
    if (out < 1 || in.c < 1 || in.h < 1 || in.w < 1 || nn_shape_size(in) > INT32_MAX) {
        efps_error("%s: invalid linear layer %dx%dx%d -> %d", name, in.c, in.h, in.w, out);
        return EFPS_ERR_INVALID;
    }
    linear_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return EFPS_ERR_NOMEM;
    f->base = (nn_layer_t){.ops = &linear_ops, .in = in, .out = {out, 1, 1}, .params = ps};
    char pname[256];
    snprintf(pname, sizeof(pname), "%s.weight", name);
    efps_status_t status = nn_params_add(ps, pname, (size_t)out * nn_shape_size(in), &f->weight);
    if (status == EFPS_OK) {
        snprintf(pname, sizeof(pname), "%s.bias", name);
        status = nn_params_add(ps, pname, (size_t)out, &f->bias);
    }
    if (status != EFPS_OK) {
        free(f);
        return status;
    }
    *l_p = &f->base;
    return EFPS_OK;
}
