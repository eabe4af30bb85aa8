/* Batch normalization over (n, h, w) per channel. Sums are taken in double:
 * a channel of a 64-image batch at 28x28 holds 50176 values, enough for a
 * float sum to lose digits that the variance needs. */
#include "layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    nn_layer_t base;
    size_t gamma, beta; /* gamma + 1 == beta */
    size_t running_mean, running_var;
    float *mean, *inv_std; /* of the last training batch, per channel */
    bool trained;          /* the last forward was in training mode */
} bn_t;

static void batch_stats(bn_t *b, const float *x, int n, int c, size_t plane)
{
    size_t chw = (size_t)b->base.in.c * plane;
    double m = (double)n * (double)plane;
    double sum = 0.0, sq = 0.0;
    for (int i = 0; i < n; i++) {
        const float *xc = x + (size_t)i * chw + (size_t)c * plane;
        for (size_t j = 0; j < plane; j++)
            sum += xc[j];
    }
    double mean = sum / m;
    for (int i = 0; i < n; i++) {
        const float *xc = x + (size_t)i * chw + (size_t)c * plane;
        for (size_t j = 0; j < plane; j++) {
            double d = xc[j] - mean;
            sq += d * d;
        }
    }
    double var = sq / m;
    b->mean[c] = (float)mean;
    b->inv_std[c] = (float)(1.0 / sqrt(var + NN_BN_EPS));

    float *rm = b->base.state->list[b->running_mean].data;
    float *rv = b->base.state->list[b->running_var].data;
    double unbiased = m > 1.0 ? sq / (m - 1.0) : var;
    rm[c] = (float)((1.0 - NN_BN_MOMENTUM) * rm[c] + NN_BN_MOMENTUM * mean);
    rv[c] = (float)((1.0 - NN_BN_MOMENTUM) * rv[c] + NN_BN_MOMENTUM * unbiased);
}

static efps_status_t bn_forward(nn_layer_t *l, const nn_run_t *run, const float *x, float *y, int n)
{
    bn_t *b = (bn_t *)l;
    efps_status_t status = nn_run_param_ready(run, b->gamma);
    if (status == EFPS_OK)
        status = nn_run_param_ready(run, b->beta);
    if (status != EFPS_OK)
        return status;
    const float *gamma = l->params->list[b->gamma].data;
    const float *beta = l->params->list[b->beta].data;
    const float *rm = l->state->list[b->running_mean].data;
    const float *rv = l->state->list[b->running_var].data;
    size_t plane = (size_t)l->in.h * l->in.w, chw = nn_shape_size(l->in);

    for (int c = 0; c < l->in.c; c++) {
        float mean, inv_std;
        if (run->train) {
            batch_stats(b, x, n, c, plane);
            mean = b->mean[c];
            inv_std = b->inv_std[c];
        } else {
            mean = rm[c];
            inv_std = 1.0f / sqrtf(rv[c] + NN_BN_EPS);
        }
        /* y = x * scale + shift */
        float scale = gamma[c] * inv_std;
        float shift = beta[c] - mean * scale;
        for (int i = 0; i < n; i++) {
            const float *xc = x + (size_t)i * chw + (size_t)c * plane;
            float *yc = y + (size_t)i * chw + (size_t)c * plane;
            for (size_t j = 0; j < plane; j++)
                yc[j] = xc[j] * scale + shift;
        }
    }
    b->trained = run->train;
    return EFPS_OK;
}

/* dx = gamma * inv_std / m * (m * dy - sum(dy) - xhat * sum(dy * xhat)),
 * dgamma = sum(dy * xhat), dbeta = sum(dy). */
static efps_status_t bn_backward(nn_layer_t *l, const nn_run_t *run, const float *x, const float *y,
                                 const float *dy, float *dx, int n)
{
    (void)y;
    bn_t *b = (bn_t *)l;
    if (!b->trained) {
        efps_error("batch norm backward after an evaluation-mode forward");
        return EFPS_ERR_STATE;
    }
    const nn_param_t *gp = &l->params->list[b->gamma], *bp = &l->params->list[b->beta];
    size_t plane = (size_t)l->in.h * l->in.w, chw = nn_shape_size(l->in);
    double m = (double)n * (double)plane;

    for (int c = 0; c < l->in.c; c++) {
        const float mean = b->mean[c], inv_std = b->inv_std[c];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int i = 0; i < n; i++) {
            const float *xc = x + (size_t)i * chw + (size_t)c * plane;
            const float *dyc = dy + (size_t)i * chw + (size_t)c * plane;
            for (size_t j = 0; j < plane; j++) {
                sum_dy += dyc[j];
                sum_dy_xhat += (double)dyc[j] * ((xc[j] - mean) * inv_std);
            }
        }
        gp->grad[c] = (float)sum_dy_xhat;
        bp->grad[c] = (float)sum_dy;
        if (dx == NULL)
            continue;
        const float k = gp->data[c] * inv_std;
        const float mean_dy = (float)(sum_dy / m), mean_dy_xhat = (float)(sum_dy_xhat / m);
        for (int i = 0; i < n; i++) {
            const float *xc = x + (size_t)i * chw + (size_t)c * plane;
            const float *dyc = dy + (size_t)i * chw + (size_t)c * plane;
            float *dxc = dx + (size_t)i * chw + (size_t)c * plane;
            for (size_t j = 0; j < plane; j++) {
                float xhat = (xc[j] - mean) * inv_std;
                dxc[j] = k * (dyc[j] - mean_dy - xhat * mean_dy_xhat);
            }
        }
    }
    /* Last tensor first, so the indices reported strictly decrease. */
    efps_status_t status = nn_run_grad_ready(run, l->params, b->beta);
    if (status != EFPS_OK)
        return status;
    return nn_run_grad_ready(run, l->params, b->gamma);
}

static void bn_init(nn_layer_t *l, nn_rng_t *rng)
{
    (void)rng;
    bn_t *b = (bn_t *)l;
    for (int c = 0; c < l->in.c; c++) {
        l->params->list[b->gamma].data[c] = 1.0f;
        l->params->list[b->beta].data[c] = 0.0f;
        l->state->list[b->running_mean].data[c] = 0.0f;
        l->state->list[b->running_var].data[c] = 1.0f;
    }
}

static void bn_destroy(nn_layer_t *l)
{
    bn_t *b = (bn_t *)l;
    free(b->mean);
    free(b->inv_std);
    free(b);
}

static const nn_layer_ops_t bn_ops = {
    .kind = "batchnorm",
    .forward = bn_forward,
    .backward = bn_backward,
    .init = bn_init,
    .destroy = bn_destroy,
};

static efps_status_t add_tensor(nn_params_t *ps, const char *name, const char *what, size_t n,
                                size_t *index_p)
{
    char pname[256];
    snprintf(pname, sizeof(pname), "%s.%s", name, what);
    return nn_params_add(ps, pname, n, index_p);
}

efps_status_t nn_bn_create(nn_params_t *ps, nn_params_t *state, const char *name, nn_shape_t in,
                           nn_layer_t **l_p)
{
    if (in.c < 1 || in.h < 1 || in.w < 1) {
        efps_error("%s: invalid batch norm input %dx%dx%d", name, in.c, in.h, in.w);
        return EFPS_ERR_INVALID;
    }
    bn_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return EFPS_ERR_NOMEM;
    b->base = (nn_layer_t){.ops = &bn_ops, .in = in, .out = in, .params = ps, .state = state};
    b->mean = calloc((size_t)in.c, sizeof(float));
    b->inv_std = calloc((size_t)in.c, sizeof(float));
    efps_status_t status = EFPS_ERR_NOMEM;
    if (b->mean == NULL || b->inv_std == NULL)
        goto err_free;
    status = add_tensor(ps, name, "weight", (size_t)in.c, &b->gamma);
    if (status == EFPS_OK)
        status = add_tensor(ps, name, "bias", (size_t)in.c, &b->beta);
    if (status == EFPS_OK)
        status = add_tensor(state, name, "running_mean", (size_t)in.c, &b->running_mean);
    if (status == EFPS_OK)
        status = add_tensor(state, name, "running_var", (size_t)in.c, &b->running_var);
    if (status != EFPS_OK)
        goto err_free;
    *l_p = &b->base;
    return EFPS_OK;

err_free:
    bn_destroy(&b->base);
    return status;
}
