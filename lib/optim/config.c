/* The optimizer configuration: checks, compressor names, message sizes. */
#include "optim_internal.h"

#include "efps/compress.h"

#include <math.h>
#include <string.h>

static const char *const names[] = {
    [EFPS_COMP_NONE] = "none",
    [EFPS_COMP_SIGN] = "sign",
    [EFPS_COMP_BLOCKSIGN] = "blocksign",
};

static int compressor_known(efps_compressor_t c)
{
    return (int)c >= EFPS_COMP_NONE && c <= EFPS_COMP_BLOCKSIGN;
}

const char *efps_compressor_name(efps_compressor_t c)
{
    return compressor_known(c) ? names[c] : "unknown";
}

efps_status_t efps_compressor_parse(const char *text, efps_compressor_t *c_p)
{
    if (text == NULL || c_p == NULL)
        return EFPS_ERR_INVALID;
    for (int c = EFPS_COMP_NONE; c <= EFPS_COMP_BLOCKSIGN; c++) {
        if (strcmp(text, names[c]) == 0) {
            *c_p = (efps_compressor_t)c;
            return EFPS_OK;
        }
    }
    return EFPS_ERR_INVALID;
}

efps_status_t efps_optim_config_check(const efps_optim_config_t *cfg)
{
    if (cfg == NULL) {
        efps_error("optimizer config: NULL");
        return EFPS_ERR_INVALID;
    }
    if (!compressor_known(cfg->compressor)) {
        efps_error("optimizer config: unknown compressor %d", (int)cfg->compressor);
        return EFPS_ERR_INVALID;
    }
    /* Written so that NaN fails every test. */
    if (!(cfg->momentum >= 0.0f && cfg->momentum < 1.0f)) {
        efps_error("optimizer config: momentum %g is not in [0, 1)", (double)cfg->momentum);
        return EFPS_ERR_INVALID;
    }
    if (cfg->nesterov != 0 && cfg->nesterov != 1) {
        efps_error("optimizer config: nesterov must be 0 or 1, not %d", cfg->nesterov);
        return EFPS_ERR_INVALID;
    }
    if (!(cfg->weight_decay >= 0.0f && isfinite(cfg->weight_decay))) {
        efps_error("optimizer config: weight decay %g is not a finite value >= 0",
                   (double)cfg->weight_decay);
        return EFPS_ERR_INVALID;
    }
    return EFPS_OK;
}

size_t efps_encoded_size(const efps_optim_config_t *cfg, size_t n)
{
    if (cfg == NULL || n == 0 || n > SIZE_MAX / 8)
        return 0;
    switch (cfg->compressor) {
    case EFPS_COMP_NONE:
        return efps_align_up(n * sizeof(float), EFPS_ALIGN);
    case EFPS_COMP_SIGN:
        return efps_sign_packed_size(n);
    case EFPS_COMP_BLOCKSIGN:
        return efps_packed_size(n, cfg->block);
    }
    return 0;
}

int efps__optim_lr_ok(float lr)
{
    return lr > 0.0f && isfinite(lr);
}
