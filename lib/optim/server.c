/* The server side of EF-SGDM (docs/design.md steps 6-7) for one tensor.
 * Built with -ffp-contract=off, like the kernels: the fp32 mean of `none` is
 * summed in rank order from worker 0's values, then divided by M, exactly as
 * the blocksign kernel does, so every run gives the same bits. */
#include "optim_internal.h"

#include "efps/compress.h"

#include <stdlib.h>
#include <string.h>

void efps_server_opt_destroy(efps_server_opt_t *s)
{
    if (s == NULL)
        return;
    efps_aligned_free(s->err);
    efps_aligned_free(s->err_next);
    free(s);
}

efps_status_t efps_server_opt_create(const efps_optim_config_t *cfg, size_t n, int num_workers,
                                     efps_server_opt_t **s_p)
{
    efps_status_t st = efps_optim_config_check(cfg);
    if (st != EFPS_OK)
        return st;
    if (n == 0 || n > SIZE_MAX / 8 || s_p == NULL) {
        efps_error("server optimizer: tensor size %zu (or the out-pointer) is not valid", n);
        return EFPS_ERR_INVALID;
    }
    if (num_workers < 1 || num_workers > EFPS_OPTIM_MAX_WORKERS) {
        efps_error("server optimizer: %d workers is not in [1, %d]", num_workers,
                   EFPS_OPTIM_MAX_WORKERS);
        return EFPS_ERR_INVALID;
    }
    efps_server_opt_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        efps_error("server optimizer: out of memory");
        return EFPS_ERR_NOMEM;
    }
    s->cfg = *cfg;
    s->n = n;
    s->workers = num_workers;
    if (cfg->compressor == EFPS_COMP_BLOCKSIGN) {
        s->err = efps_aligned_calloc(n * sizeof(float));
        s->err_next = efps_aligned_calloc(n * sizeof(float));
        if (s->err == NULL || s->err_next == NULL) {
            efps_error("server optimizer: out of memory for a tensor of %zu elements", n);
            efps_server_opt_destroy(s);
            return EFPS_ERR_NOMEM;
        }
    }
    *s_p = s;
    return EFPS_OK;
}

/* none: out = fl(fl(sum in rank order) / M). Worker by worker over the whole
 * tensor (the same per-element order as element by element, but streaming);
 * the last worker's pass also divides and checks, so M workers cost M passes. */
static efps_status_t mean_fp32(const efps_server_opt_t *s, const void *const *pushes, float *out)
{
    const size_t n = s->n;
    const float m = (float)s->workers;
    const float *acc = pushes[0];
    for (int k = 1; k < s->workers - 1; k++) {
        const float *p = pushes[k];
        for (size_t i = 0; i < n; i++)
            out[i] = acc[i] + p[i];
        acc = out;
    }
    int ok = 1;
    if (s->workers == 1) {
        for (size_t i = 0; i < n; i++) {
            out[i] = acc[i] / m;
            ok &= finite_bits(out[i]);
        }
    } else {
        const float *p = pushes[s->workers - 1];
        for (size_t i = 0; i < n; i++) {
            out[i] = (acc[i] + p[i]) / m;
            ok &= finite_bits(out[i]);
        }
    }
    const size_t bytes = n * sizeof(float);
    memset((uint8_t *)out + bytes, 0, efps_encoded_size(&s->cfg, n) - bytes);
    return ok ? EFPS_OK : EFPS_ERR_NONFINITE;
}

static int pushes_ok(const efps_server_opt_t *s, const void *const *pushes)
{
    if (pushes == NULL)
        return 0;
    for (int k = 0; k < s->workers; k++)
        if (pushes[k] == NULL)
            return 0;
    return 1;
}

efps_status_t efps_server_opt_reduce(efps_server_opt_t *s, const void *const *pushes, float lr,
                                     void *update)
{
    if (s == NULL || !pushes_ok(s, pushes) || update == NULL ||
        ((uintptr_t)update & (EFPS_ALIGN - 1)) != 0) {
        efps_error("server reduce: NULL argument or update buffer not 64-byte aligned");
        return EFPS_ERR_INVALID;
    }
    if (!efps__optim_lr_ok(lr)) {
        efps_error("server reduce: learning rate %g is not a finite value > 0", (double)lr);
        return EFPS_ERR_INVALID;
    }
    efps_status_t st = EFPS_ERR_INVALID;
    switch (s->cfg.compressor) {
    case EFPS_COMP_NONE:
        st = mean_fp32(s, pushes, update);
        break;
    case EFPS_COMP_SIGN:
        st = efps_sign_majority(pushes, s->workers, s->n, update);
        break;
    case EFPS_COMP_BLOCKSIGN:
        /* p~ = mean of decoded pushes + r_t * e~; D~ = C_B(p~); e~' = p~ - D~.
         * Out of place (e~' swapped in below), so p~ is computed once per
         * element and e~ stays as it was if the step fails. */
        st = efps_server_reduce_to(pushes, s->workers, s->n, s->cfg.block, s->err, s->prev_lr / lr,
                                   s->err_next, update);
        break;
    }
    if (st != EFPS_OK) {
        efps_debug("server reduce: step %llu: %s", (unsigned long long)s->steps, efps_strerror(st));
        return st; /* e~ is as it was */
    }
    efps__optim_commit(&s->err, &s->err_next); /* NULL and NULL unless blocksign */
    s->prev_lr = lr;
    s->steps++;
    return EFPS_OK;
}

uint64_t efps_server_opt_steps(const efps_server_opt_t *s)
{
    return s ? s->steps : 0;
}
