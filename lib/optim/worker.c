/* The worker side of EF-SGDM (docs/design.md steps 1-5 and 8) for one tensor.
 * Built with -ffp-contract=off: every product and sum is rounded on its own,
 * in the order written, so the bits are those of a plain transcription. */
#include "optim_internal.h"

#include "efps/compress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void efps_worker_opt_destroy(efps_worker_opt_t *w)
{
    if (w == NULL)
        return;
    efps_aligned_free(w->m);
    efps_aligned_free(w->m_next);
    efps_aligned_free(w->u);
    efps_aligned_free(w->err);
    efps_aligned_free(w->err_next);
    efps_aligned_free(w->wd_m);
    efps_aligned_free(w->dec);
    free(w);
}

/* A zeroed array of n floats when want, else NULL; *ok is cleared on failure. */
static float *zeros_if(int want, size_t n, int *ok)
{
    if (!want)
        return NULL;
    float *v = efps_aligned_calloc(n * sizeof(float));
    if (v == NULL)
        *ok = 0;
    return v;
}

efps_status_t efps_worker_opt_create(const efps_optim_config_t *cfg, size_t n,
                                     efps_worker_opt_t **w_p)
{
    efps_status_t st = efps_optim_config_check(cfg);
    if (st != EFPS_OK)
        return st;
    if (n == 0 || n > SIZE_MAX / 8 || w_p == NULL) {
        efps_error("worker optimizer: tensor size %zu (or the out-pointer) is not valid", n);
        return EFPS_ERR_INVALID;
    }
    efps_worker_opt_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        efps_error("worker optimizer: out of memory");
        return EFPS_ERR_NOMEM;
    }
    w->cfg = *cfg;
    w->n = n;
    int ok = 1;
    const int blocksign = cfg->compressor == EFPS_COMP_BLOCKSIGN;
    const int wd = cfg->weight_decay != 0.0f;
    w->m = zeros_if(1, n, &ok);
    w->m_next = zeros_if(1, n, &ok);
    w->u = zeros_if(cfg->nesterov, n, &ok);
    w->err = zeros_if(blocksign, n, &ok);
    w->err_next = zeros_if(blocksign, n, &ok);
    w->wd_m = zeros_if(wd, n, &ok);
    /* blocksign without weight decay decodes straight into x. */
    w->dec = zeros_if(cfg->compressor == EFPS_COMP_SIGN || (blocksign && wd), n, &ok);
    if (!ok) {
        efps_error("worker optimizer: out of memory for a tensor of %zu elements", n);
        efps_worker_opt_destroy(w);
        return EFPS_ERR_NOMEM;
    }
    *w_p = w;
    return EFPS_OK;
}

/* Steps 2-3 into m_next and u: returns u, or NULL when a value is not
 * finite. Nothing committed yet. out, if not NULL, receives u (the `none`
 * message is u itself: written once, not copied afterwards). */
static const float *momentum(efps_worker_opt_t *w, const float *g, float *out)
{
    const float mu = w->cfg.momentum;
    const float *m = w->m;
    float *mn = w->m_next;
    int ok = 1;
    if (w->cfg.nesterov) {
        float *u = out != NULL ? out : w->u;
        for (size_t i = 0; i < w->n; i++) {
            mn[i] = mu * m[i] + g[i];
            u[i] = g[i] + mu * mn[i];
            ok &= finite_bits(u[i]) & finite_bits(mn[i]);
        }
        return ok ? u : NULL;
    }
    for (size_t i = 0; i < w->n; i++) {
        mn[i] = mu * m[i] + g[i];
        ok &= finite_bits(mn[i]);
    }
    if (ok && out != NULL)
        memcpy(out, mn, w->n * sizeof(float));
    return ok ? (out != NULL ? out : mn) : NULL;
}

/* Steps 4-5 (blocksign) or the plain messages of the other compressors. */
static efps_status_t compress(efps_worker_opt_t *w, const float *u, float r, void *encoded)
{
    switch (w->cfg.compressor) {
    case EFPS_COMP_NONE: {
        const size_t bytes = w->n * sizeof(float);
        if (u != encoded)
            memcpy(encoded, u, bytes);
        memset((uint8_t *)encoded + bytes, 0, efps_encoded_size(&w->cfg, w->n) - bytes);
        return EFPS_OK;
    }
    case EFPS_COMP_SIGN:
        return efps_sign_pack(u, w->n, encoded);
    case EFPS_COMP_BLOCKSIGN:
        /* p = fl(1*u) + fl(r*e) = u + r*e; D = C_B(p); e' = p - D. Out of
         * place, like m: one read of u and e even for tensors far larger
         * than the caches, and e stays as it was until the step commits. */
        return efps_ef_compress_to(u, 1.0f, w->err, r, w->err_next, w->n, w->cfg.block, encoded);
    }
    return EFPS_ERR_INVALID;
}

static int aligned64(const void *p)
{
    return ((uintptr_t)p & (EFPS_ALIGN - 1)) == 0;
}

efps_status_t efps_worker_opt_encode(efps_worker_opt_t *w, const float *grad, float lr,
                                     void *encoded)
{
    if (w == NULL || grad == NULL || encoded == NULL || !aligned64(encoded)) {
        efps_error("worker encode: NULL argument or encoded buffer not 64-byte aligned");
        return EFPS_ERR_INVALID;
    }
    if (!efps__optim_lr_ok(lr)) {
        efps_error("worker encode: learning rate %g is not a finite value > 0", (double)lr);
        return EFPS_ERR_INVALID;
    }
    if (w->pending) {
        efps_error("worker encode: step %llu was encoded but not applied yet",
                   (unsigned long long)w->steps);
        return EFPS_ERR_STATE;
    }
    const float *u =
        momentum(w, grad, w->cfg.compressor == EFPS_COMP_NONE ? (float *)encoded : NULL);
    if (u == NULL) {
        efps_debug("worker encode: non-finite gradient or momentum at step %llu",
                   (unsigned long long)w->steps);
        return EFPS_ERR_NONFINITE;
    }
    const float r = w->prev_lr / lr; /* r_0 = 0 / eta_0 = 0 */
    efps_status_t st = compress(w, u, r, encoded);
    if (st != EFPS_OK)
        return st; /* err and m are as they were: neither is committed */
    efps__optim_commit(&w->m, &w->m_next);
    efps__optim_commit(&w->err, &w->err_next); /* NULL and NULL unless blocksign */
    w->pending = 1;
    w->pending_lr = lr;
    return EFPS_OK;
}

efps_status_t efps_worker_opt_skip(efps_worker_opt_t *w, float lr)
{
    if (w == NULL || !efps__optim_lr_ok(lr))
        return EFPS_ERR_INVALID;
    if (w->pending) {
        efps_error("worker skip: step %llu was encoded but not applied yet",
                   (unsigned long long)w->steps);
        return EFPS_ERR_STATE;
    }
    w->pending = 1;
    w->pending_lr = lr;
    w->pending_skip = 1;
    return EFPS_OK;
}

/* The decoded update, in w->dec or (none) the message itself. A value that
 * is not finite is EFPS_ERR_NONFINITE. */
static efps_status_t decode(efps_worker_opt_t *w, const void *update, const float **d_p)
{
    const size_t n = w->n;
    efps_status_t st = EFPS_ERR_INVALID;
    switch (w->cfg.compressor) {
    case EFPS_COMP_NONE: {
        const float *d = update;
        int ok = 1; /* no early exit: the check vectorises */
        for (size_t i = 0; i < n; i++)
            ok &= finite_bits(d[i]);
        if (!ok)
            return EFPS_ERR_NONFINITE;
        *d_p = d;
        return EFPS_OK;
    }
    case EFPS_COMP_SIGN:
        st = efps_sign_decompress(update, n, 1.0f, w->dec);
        break;
    case EFPS_COMP_BLOCKSIGN: /* scales checked finite by the caller */
        st = efps_decompress(update, n, w->cfg.block, 1.0f, w->dec);
        break;
    }
    if (st == EFPS_OK)
        *d_p = w->dec;
    return st;
}

static int scales_finite(const efps_worker_opt_t *w, const void *update)
{
    const float *s = update;
    const size_t nb = efps_packed_blocks(w->n, w->cfg.block);
    for (size_t k = 0; k < nb; k++)
        if (!finite_bits(s[k]))
            return 0;
    return 1;
}

/* Step 8 with the decoded update d: x = x - lr * (d + w), the weight-decay
 * term w from x before this update (docs/design.md, "what the authors' code does"). */
static void step8(efps_worker_opt_t *w, const float *d, float lr, float *x)
{
    const float mu = w->cfg.momentum, wd = w->cfg.weight_decay;
    if (wd == 0.0f) {
        for (size_t i = 0; i < w->n; i++)
            x[i] = x[i] - lr * d[i];
        return;
    }
    float *wm = w->wd_m;
    for (size_t i = 0; i < w->n; i++) {
        wm[i] = mu * wm[i] + wd * x[i];
        const float term = w->cfg.nesterov ? mu * wm[i] + wd * x[i] : wm[i];
        x[i] = x[i] - lr * (d[i] + term);
    }
}

efps_status_t efps_worker_opt_apply(efps_worker_opt_t *w, const void *update, float lr, float *x)
{
    if (w == NULL || update == NULL || x == NULL) {
        efps_error("worker apply: NULL argument");
        return EFPS_ERR_INVALID;
    }
    if (!w->pending) {
        efps_error("worker apply: no encoded step to complete (step %llu)",
                   (unsigned long long)w->steps);
        return EFPS_ERR_STATE;
    }
    if (memcmp(&lr, &w->pending_lr, sizeof(lr)) != 0) {
        efps_error("worker apply: lr %g differs from the lr %g of this step's encode", (double)lr,
                   (double)w->pending_lr);
        return EFPS_ERR_INVALID;
    }
    if (w->cfg.compressor == EFPS_COMP_BLOCKSIGN && !scales_finite(w, update)) {
        efps_error("worker apply: update of step %llu has a non-finite scale",
                   (unsigned long long)w->steps);
        return EFPS_ERR_NONFINITE;
    }
    if (w->cfg.compressor == EFPS_COMP_BLOCKSIGN && w->cfg.weight_decay == 0.0f) {
        /* x + fl(-lr * D) is exactly x - fl(lr * D): one pass in the kernel. */
        efps_status_t st = efps_decompress_add(update, w->n, w->cfg.block, -lr, x);
        if (st != EFPS_OK)
            return st;
    } else {
        const float *d = NULL;
        efps_status_t st = decode(w, update, &d);
        if (st != EFPS_OK) {
            efps_error("worker apply: cannot decode the update of step %llu: %s",
                       (unsigned long long)w->steps, efps_strerror(st));
            return st;
        }
        step8(w, d, lr, x);
    }
    w->pending = 0;
    if (!w->pending_skip)
        w->prev_lr = lr;
    w->pending_skip = 0;
    w->steps++;
    return EFPS_OK;
}

uint64_t efps_worker_opt_steps(const efps_worker_opt_t *w)
{
    return w ? w->steps : 0;
}

size_t efps_worker_opt_size(const efps_worker_opt_t *w)
{
    return w ? w->n : 0;
}
