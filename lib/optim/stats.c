/* Observability of the optimizer state: how large the error-feedback
 * residuals are, so a user sees whether compression is hurting before the
 * accuracy does. Read-only; summed in double, in index order. */
#include "optim_internal.h"

static double sumsq(const float *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; v != NULL && i < n; i++)
        s += (double)v[i] * (double)v[i];
    return s;
}

double efps_worker_opt_residual_sumsq(const efps_worker_opt_t *w)
{
    return w == NULL ? 0.0 : sumsq(w->err, w->n);
}

double efps_server_opt_residual_sumsq(const efps_server_opt_t *s)
{
    return s == NULL ? 0.0 : sumsq(s->err, s->n);
}
