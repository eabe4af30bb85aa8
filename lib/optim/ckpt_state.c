/* Checkpoint records of the optimizer objects, and their public save/load.
 *   config : u32 compressor | u64 block | f32 momentum | u32 nesterov | f32 wd
 *   worker : config | u64 n | u64 steps | f32 prev_lr | m[n] | e[n] (blocksign)
 *            | wd_m[n] (wd > 0)
 *   server : config | u64 n | u32 workers | u64 steps | f32 prev_lr | e~[n] (blocksign)
 * A record is parsed whole and checked before the object it describes exists. */
#include "optim_internal.h"

#include <stdlib.h>
#include <string.h>

static void put_config(efps_ckpt_out_t *o, const efps_optim_config_t *cfg)
{
    efps__ckpt_put_u32(o, (uint32_t)cfg->compressor);
    efps__ckpt_put_u64(o, cfg->block);
    efps__ckpt_put_f32(o, cfg->momentum);
    efps__ckpt_put_u32(o, (uint32_t)cfg->nesterov);
    efps__ckpt_put_f32(o, cfg->weight_decay);
}

static efps_status_t get_config(efps_ckpt_in_t *in, efps_optim_config_t *cfg)
{
    const uint32_t comp = efps__ckpt_get_u32(in);
    const uint64_t block = efps__ckpt_get_u64(in);
    cfg->momentum = efps__ckpt_get_f32(in);
    const uint32_t nesterov = efps__ckpt_get_u32(in);
    cfg->weight_decay = efps__ckpt_get_f32(in);
    if (!efps__ckpt_in_ok(in) || comp > EFPS_COMP_BLOCKSIGN || block > SIZE_MAX || nesterov > 1)
        return EFPS_ERR_CORRUPT;
    cfg->compressor = (efps_compressor_t)comp;
    cfg->block = (size_t)block;
    cfg->nesterov = (int)nesterov;
    return efps_optim_config_check(cfg) == EFPS_OK ? EFPS_OK : EFPS_ERR_CORRUPT;
}

/* prev_lr is 0 before the first step and a valid lr after it. */
static int prev_lr_ok(float lr, uint64_t steps)
{
    return steps == 0 ? lr == 0.0f : efps__optim_lr_ok(lr);
}

void efps__worker_opt_put(efps_ckpt_out_t *o, const void *obj)
{
    const efps_worker_opt_t *w = obj;
    put_config(o, &w->cfg);
    efps__ckpt_put_u64(o, w->n);
    efps__ckpt_put_u64(o, w->steps);
    efps__ckpt_put_f32(o, w->prev_lr);
    efps__ckpt_put_f32s(o, w->m, w->n);
    if (w->err != NULL)
        efps__ckpt_put_f32s(o, w->err, w->n);
    if (w->wd_m != NULL)
        efps__ckpt_put_f32s(o, w->wd_m, w->n);
}

efps_status_t efps__worker_opt_get(efps_ckpt_in_t *in, efps_worker_opt_t **w_p)
{
    efps_optim_config_t cfg;
    if (get_config(in, &cfg) != EFPS_OK)
        return EFPS_ERR_CORRUPT;
    const uint64_t n = efps__ckpt_get_u64(in), steps = efps__ckpt_get_u64(in);
    const float prev_lr = efps__ckpt_get_f32(in);
    const uint64_t arrays =
        1 + (cfg.compressor == EFPS_COMP_BLOCKSIGN) + (cfg.weight_decay != 0.0f);
    /* The arrays must be there before n is trusted with an allocation. */
    if (!efps__ckpt_in_ok(in) || n == 0 || n > SIZE_MAX / 8 / arrays ||
        !efps__ckpt_in_has(in, n * arrays, 4) || !prev_lr_ok(prev_lr, steps))
        return EFPS_ERR_CORRUPT;
    efps_worker_opt_t *w;
    efps_status_t st = efps_worker_opt_create(&cfg, (size_t)n, &w);
    if (st != EFPS_OK)
        return st == EFPS_ERR_NOMEM ? st : EFPS_ERR_CORRUPT;
    w->steps = steps;
    w->prev_lr = prev_lr;
    efps__ckpt_get_f32s(in, w->m, w->n);
    if (w->err != NULL)
        efps__ckpt_get_f32s(in, w->err, w->n);
    if (w->wd_m != NULL)
        efps__ckpt_get_f32s(in, w->wd_m, w->n);
    if (!efps__ckpt_in_ok(in)) { /* cannot happen after the size check; kept as a guard */
        efps_worker_opt_destroy(w);
        return EFPS_ERR_CORRUPT;
    }
    *w_p = w;
    return EFPS_OK;
}

void efps__server_opt_put(efps_ckpt_out_t *o, const void *obj)
{
    const efps_server_opt_t *s = obj;
    put_config(o, &s->cfg);
    efps__ckpt_put_u64(o, s->n);
    efps__ckpt_put_u32(o, (uint32_t)s->workers);
    efps__ckpt_put_u64(o, s->steps);
    efps__ckpt_put_f32(o, s->prev_lr);
    if (s->err != NULL)
        efps__ckpt_put_f32s(o, s->err, s->n);
}

efps_status_t efps__server_opt_get(efps_ckpt_in_t *in, efps_server_opt_t **s_p)
{
    efps_optim_config_t cfg;
    if (get_config(in, &cfg) != EFPS_OK)
        return EFPS_ERR_CORRUPT;
    const uint64_t n = efps__ckpt_get_u64(in);
    const uint32_t workers = efps__ckpt_get_u32(in);
    const uint64_t steps = efps__ckpt_get_u64(in);
    const float prev_lr = efps__ckpt_get_f32(in);
    const uint64_t arrays = cfg.compressor == EFPS_COMP_BLOCKSIGN;
    if (!efps__ckpt_in_ok(in) || n == 0 || n > SIZE_MAX / 8 || workers < 1 ||
        workers > EFPS_OPTIM_MAX_WORKERS || !efps__ckpt_in_has(in, n * arrays, 4) ||
        !prev_lr_ok(prev_lr, steps))
        return EFPS_ERR_CORRUPT;
    efps_server_opt_t *s;
    efps_status_t st = efps_server_opt_create(&cfg, (size_t)n, (int)workers, &s);
    if (st != EFPS_OK)
        return st == EFPS_ERR_NOMEM ? st : EFPS_ERR_CORRUPT;
    s->steps = steps;
    s->prev_lr = prev_lr;
    if (s->err != NULL)
        efps__ckpt_get_f32s(in, s->err, s->n);
    if (!efps__ckpt_in_ok(in)) {
        efps_server_opt_destroy(s);
        return EFPS_ERR_CORRUPT;
    }
    *s_p = s;
    return EFPS_OK;
}

/* ---- public save / load ------------------------------------------------------ */

efps_status_t efps_worker_opt_save(const efps_worker_opt_t *w, const char *path)
{
    if (w == NULL)
        return EFPS_ERR_INVALID;
    if (w->pending) {
        efps_error("checkpoint %s: worker is between an encode and its apply", path);
        return EFPS_ERR_STATE;
    }
    return efps__ckpt_write(path, EFPS_CKPT_WORKER, efps__worker_opt_put, w);
}

efps_status_t efps_server_opt_save(const efps_server_opt_t *s, const char *path)
{
    if (s == NULL)
        return EFPS_ERR_INVALID;
    return efps__ckpt_write(path, EFPS_CKPT_SERVER, efps__server_opt_put, s);
}

/* Parses a whole payload with get; trailing bytes are corruption too. */
static efps_status_t load(const char *path, uint32_t kind,
                          efps_status_t (*get)(efps_ckpt_in_t *, void **), void **obj_p,
                          void (*destroy)(void *))
{
    uint8_t *payload = NULL;
    size_t len = 0;
    efps_status_t st = efps__ckpt_read(path, kind, &payload, &len);
    if (st != EFPS_OK)
        return st;
    efps_ckpt_in_t in = {.p = payload, .len = len};
    void *obj = NULL;
    st = get(&in, &obj);
    if (st == EFPS_OK && in.pos != in.len) {
        destroy(obj);
        st = EFPS_ERR_CORRUPT;
    }
    free(payload);
    if (st == EFPS_ERR_CORRUPT)
        efps_error("checkpoint %s: the state inside is malformed", path);
    if (st == EFPS_OK)
        *obj_p = obj;
    return st;
}

static efps_status_t get_worker(efps_ckpt_in_t *in, void **obj_p)
{
    efps_worker_opt_t *w = NULL;
    efps_status_t st = efps__worker_opt_get(in, &w);
    if (st == EFPS_OK)
        *obj_p = w;
    return st;
}

static efps_status_t get_server(efps_ckpt_in_t *in, void **obj_p)
{
    efps_server_opt_t *s = NULL;
    efps_status_t st = efps__server_opt_get(in, &s);
    if (st == EFPS_OK)
        *obj_p = s;
    return st;
}

static void destroy_worker(void *w)
{
    efps_worker_opt_destroy(w);
}

static void destroy_server(void *s)
{
    efps_server_opt_destroy(s);
}

efps_status_t efps_worker_opt_load(const char *path, efps_worker_opt_t **w_p)
{
    if (w_p == NULL)
        return EFPS_ERR_INVALID;
    void *obj = NULL;
    efps_status_t st = load(path, EFPS_CKPT_WORKER, get_worker, &obj, destroy_worker);
    if (st == EFPS_OK)
        *w_p = obj;
    return st;
}

efps_status_t efps_server_opt_load(const char *path, efps_server_opt_t **s_p)
{
    if (s_p == NULL)
        return EFPS_ERR_INVALID;
    void *obj = NULL;
    efps_status_t st = load(path, EFPS_CKPT_SERVER, get_server, &obj, destroy_server);
    if (st == EFPS_OK)
        *s_p = obj;
    return st;
}
