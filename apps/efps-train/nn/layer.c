/* What every layer shares: destruction, the hook calls, initialization. */
#include "layer.h"

#include <math.h>

void nn_layer_destroy(nn_layer_t *l)
{
    if (l != NULL)
        l->ops->destroy(l);
}

efps_status_t nn_run_param_ready(const nn_run_t *run, size_t index)
{
    if (run->hooks == NULL || run->hooks->before_forward == NULL)
        return EFPS_OK;
    return run->hooks->before_forward(index, run->hooks->user);
}

efps_status_t nn_run_grad_ready(const nn_run_t *run, const nn_params_t *ps, size_t index)
{
    if (run->hooks == NULL || run->hooks->on_grad == NULL)
        return EFPS_OK;
    const nn_param_t *p = &ps->list[index];
    return run->hooks->on_grad(index, p->grad, p->n, run->hooks->user);
}

void nn_init_he_normal(nn_rng_t *rng, float *w, size_t n, size_t fan_in)
{
    double std = sqrt(2.0 / (double)fan_in);
    for (size_t i = 0; i < n; i++)
        w[i] = (float)(std * nn_rng_normal(rng));
}
