/* The layers without parameters: ReLU and global average pooling. */
#include "layer.h"

#include <stdlib.h>

static efps_status_t relu_forward(nn_layer_t *l, const nn_run_t *run, const float *x, float *y,
                                  int n)
{
    (void)run;
    size_t total = (size_t)n * nn_shape_size(l->in);
    for (size_t i = 0; i < total; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return EFPS_OK;
}

static efps_status_t relu_backward(nn_layer_t *l, const nn_run_t *run, const float *x,
                                   const float *y, const float *dy, float *dx, int n)
{
    (void)run;
    (void)y;
    if (dx == NULL)
        return EFPS_OK;
    size_t total = (size_t)n * nn_shape_size(l->in);
    for (size_t i = 0; i < total; i++)
        dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
    return EFPS_OK;
}

static efps_status_t gap_forward(nn_layer_t *l, const nn_run_t *run, const float *x, float *y,
                                 int n)
{
    (void)run;
    size_t plane = (size_t)l->in.h * l->in.w;
    size_t maps = (size_t)n * l->in.c;
    for (size_t m = 0; m < maps; m++) {
        const float *xm = x + m * plane;
        float sum = 0.0f;
        for (size_t j = 0; j < plane; j++)
            sum += xm[j];
        y[m] = sum / (float)plane;
    }
    return EFPS_OK;
}

static efps_status_t gap_backward(nn_layer_t *l, const nn_run_t *run, const float *x,
                                  const float *y, const float *dy, float *dx, int n)
{
    (void)run;
    (void)x;
    (void)y;
    if (dx == NULL)
        return EFPS_OK;
    size_t plane = (size_t)l->in.h * l->in.w;
    size_t maps = (size_t)n * l->in.c;
    for (size_t m = 0; m < maps; m++) {
        float g = dy[m] / (float)plane;
        for (size_t j = 0; j < plane; j++)
            dx[m * plane + j] = g;
    }
    return EFPS_OK;
}

static void no_init(nn_layer_t *l, nn_rng_t *rng)
{
    (void)l;
    (void)rng;
}

static void plain_destroy(nn_layer_t *l)
{
    free(l);
}

static const nn_layer_ops_t relu_ops = {
    .kind = "relu",
    .forward = relu_forward,
    .backward = relu_backward,
    .init = no_init,
    .destroy = plain_destroy,
};

static const nn_layer_ops_t gap_ops = {
    .kind = "avgpool",
    .forward = gap_forward,
    .backward = gap_backward,
    .init = no_init,
    .destroy = plain_destroy,
};

static efps_status_t create(const nn_layer_ops_t *ops, nn_shape_t in, nn_shape_t out,
                            nn_layer_t **l_p)
{
    if (in.c < 1 || in.h < 1 || in.w < 1) {
        efps_error("%s: invalid input shape %dx%dx%d", ops->kind, in.c, in.h, in.w);
        return EFPS_ERR_INVALID;
    }
    nn_layer_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return EFPS_ERR_NOMEM;
    *l = (nn_layer_t){.ops = ops, .in = in, .out = out};
    *l_p = l;
    return EFPS_OK;
}

efps_status_t nn_relu_create(nn_shape_t in, nn_layer_t **l_p)
{
    return create(&relu_ops, in, in, l_p);
}

efps_status_t nn_gap_create(nn_shape_t in, nn_layer_t **l_p)
{
    return create(&gap_ops, in, (nn_shape_t){in.c, 1, 1}, l_p);
}
