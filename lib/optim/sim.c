/* In-process simulation: M workers and one server, run one after another in
 * rank order, so a run is a pure function of its inputs. It calls only the
 * public optimizer API, exactly as the parameter server does. */
#include "optim_internal.h"

#include <stdlib.h>
#include <string.h>

struct efps_sim {
    efps_optim_config_t cfg;
    size_t n;
    int workers;
    uint64_t seed;
    uint64_t steps;
    efps_sim_grad_fn grad;
    void *user;
    efps_worker_opt_t **w;
    efps_server_opt_t *server;
    float **x;    /* each worker's own parameters */
    float *g;     /* gradient scratch: the workers run one after another */
    void **push;  /* each worker's encoded message */
    void *update; /* the server's message */
    size_t enc;   /* bytes of one message */
    efps_status_t broken;
};

static uint64_t splitmix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t efps_sim_sample_seed(uint64_t seed, int worker, uint64_t step)
{
    return splitmix64(splitmix64(splitmix64(seed) ^ (uint64_t)(uint32_t)worker) ^ step);
}

void efps_sim_destroy(efps_sim_t *sim)
{
    if (sim == NULL)
        return;
    for (int k = 0; k < sim->workers; k++) {
        if (sim->w != NULL)
            efps_worker_opt_destroy(sim->w[k]);
        if (sim->x != NULL)
            efps_aligned_free(sim->x[k]);
        if (sim->push != NULL)
            efps_aligned_free(sim->push[k]);
    }
    free(sim->w);
    free(sim->x);
    free(sim->push);
    efps_server_opt_destroy(sim->server);
    efps_aligned_free(sim->g);
    efps_aligned_free(sim->update);
    free(sim);
}

/* Everything but the optimizer objects, which create and load make apart. */
static efps_sim_t *alloc_shell(const efps_optim_config_t *cfg, size_t n, int workers)
{
    efps_sim_t *sim = calloc(1, sizeof(*sim));
    if (sim == NULL)
        return NULL;
    sim->cfg = *cfg;
    sim->n = n;
    sim->workers = workers;
    sim->enc = efps_encoded_size(cfg, n);
    sim->w = calloc((size_t)workers, sizeof(*sim->w));
    sim->x = calloc((size_t)workers, sizeof(*sim->x));
    sim->push = calloc((size_t)workers, sizeof(*sim->push));
    sim->g = efps_aligned_calloc(n * sizeof(float));
    sim->update = efps_aligned_calloc(sim->enc);
    int ok = sim->w && sim->x && sim->push && sim->g && sim->update;
    for (int k = 0; ok && k < workers; k++) {
        sim->x[k] = efps_aligned_calloc(n * sizeof(float));
        sim->push[k] = efps_aligned_calloc(sim->enc);
        ok = sim->x[k] && sim->push[k];
    }
    if (!ok) {
        efps_error("simulation: out of memory for %d workers x %zu elements", workers, n);
        efps_sim_destroy(sim);
        return NULL;
    }
    return sim;
}

static int args_ok(const efps_optim_config_t *cfg, size_t n, int workers, efps_sim_grad_fn grad)
{
    if (efps_optim_config_check(cfg) != EFPS_OK)
        return 0;
    if (n == 0 || n > SIZE_MAX / 8 || workers < 1 || workers > EFPS_OPTIM_MAX_WORKERS ||
        grad == NULL) {
        efps_error("simulation: bad arguments (n=%zu, workers=%d, grad %s)", n, workers,
                   grad ? "set" : "NULL");
        return 0;
    }
    return 1;
}

efps_status_t efps_sim_create(const efps_optim_config_t *cfg, size_t n, int num_workers,
                              const float *x0, efps_sim_grad_fn grad, void *user, uint64_t seed,
                              efps_sim_t **sim_p)
{
    if (!args_ok(cfg, n, num_workers, grad))
        return EFPS_ERR_INVALID;
    if (x0 == NULL || sim_p == NULL) {
        efps_error("simulation: no initial parameters (or no out-pointer)");
        return EFPS_ERR_INVALID;
    }
    efps_sim_t *sim = alloc_shell(cfg, n, num_workers);
    if (sim == NULL)
        return EFPS_ERR_NOMEM;
    sim->grad = grad;
    sim->user = user;
    sim->seed = seed;
    efps_status_t st = efps_server_opt_create(cfg, n, num_workers, &sim->server);
    for (int k = 0; st == EFPS_OK && k < num_workers; k++) {
        memcpy(sim->x[k], x0, n * sizeof(float));
        st = efps_worker_opt_create(cfg, n, &sim->w[k]);
    }
    if (st != EFPS_OK) {
        efps_sim_destroy(sim);
        return st;
    }
    *sim_p = sim;
    return EFPS_OK;
}

static efps_status_t run_step(efps_sim_t *sim, float lr)
{
    efps_status_t st;
    for (int k = 0; k < sim->workers; k++) {
        const uint64_t seed = efps_sim_sample_seed(sim->seed, k, sim->steps);
        st = sim->grad(k, sim->steps, seed, sim->x[k], sim->g, sim->user);
        if (st != EFPS_OK) {
            efps_error("simulation step %llu: gradient of worker %d failed: %s",
                       (unsigned long long)sim->steps, k, efps_strerror(st));
            return st;
        }
        st = efps_worker_opt_encode(sim->w[k], sim->g, lr, sim->push[k]);
        if (st != EFPS_OK) {
            efps_error("simulation step %llu: encode of worker %d failed: %s",
                       (unsigned long long)sim->steps, k, efps_strerror(st));
            return st;
        }
    }
    st = efps_server_opt_reduce(sim->server, (const void *const *)sim->push, lr, sim->update);
    if (st != EFPS_OK) {
        efps_error("simulation step %llu: server reduce failed: %s", (unsigned long long)sim->steps,
                   efps_strerror(st));
        return st;
    }
    for (int k = 0; k < sim->workers; k++) {
        st = efps_worker_opt_apply(sim->w[k], sim->update, lr, sim->x[k]);
        if (st != EFPS_OK)
            return st;
    }
    sim->steps++;
    return EFPS_OK;
}

efps_status_t efps_sim_step(efps_sim_t *sim, float lr)
{
    if (sim == NULL)
        return EFPS_ERR_INVALID;
    if (sim->broken != EFPS_OK) {
        efps_error("simulation: a step failed before (%s); reload a checkpoint",
                   efps_strerror(sim->broken));
        return EFPS_ERR_STATE;
    }
    if (!efps__optim_lr_ok(lr)) {
        efps_error("simulation: learning rate %g is not a finite value > 0", (double)lr);
        return EFPS_ERR_INVALID;
    }
    efps_status_t st = run_step(sim, lr);
    if (st != EFPS_OK)
        sim->broken = st;
    return st;
}

const float *efps_sim_x(const efps_sim_t *sim, int worker)
{
    if (sim == NULL || worker < 0 || worker >= sim->workers)
        return NULL;
    return sim->x[worker];
}

int efps_sim_workers_agree(const efps_sim_t *sim)
{
    if (sim == NULL)
        return 0;
    for (int k = 1; k < sim->workers; k++)
        if (memcmp(sim->x[k], sim->x[0], sim->n * sizeof(float)) != 0)
            return 0;
    return 1;
}

uint64_t efps_sim_steps(const efps_sim_t *sim)
{
    return sim ? sim->steps : 0;
}

size_t efps_sim_size(const efps_sim_t *sim)
{
    return sim ? sim->n : 0;
}

int efps_sim_workers(const efps_sim_t *sim)
{
    return sim ? sim->workers : 0;
}

const efps_optim_config_t *efps_sim_config(const efps_sim_t *sim)
{
    return sim ? &sim->cfg : NULL;
}

size_t efps_sim_push_bytes(const efps_sim_t *sim)
{
    return sim ? sim->enc : 0;
}

/* ---- checkpoint ----------------------------------------------------------------
 * payload: u64 seed | u32 workers | u64 n | u64 steps | x[workers][n] |
 *          worker record x workers | server record */

static void put_sim(efps_ckpt_out_t *o, const void *obj)
{
    const efps_sim_t *sim = obj;
    efps__ckpt_put_u64(o, sim->seed);
    efps__ckpt_put_u32(o, (uint32_t)sim->workers);
    efps__ckpt_put_u64(o, sim->n);
    efps__ckpt_put_u64(o, sim->steps);
    for (int k = 0; k < sim->workers; k++)
        efps__ckpt_put_f32s(o, sim->x[k], sim->n);
    for (int k = 0; k < sim->workers; k++)
        efps__worker_opt_put(o, sim->w[k]);
    efps__server_opt_put(o, sim->server);
}

efps_status_t efps_sim_save(const efps_sim_t *sim, const char *path)
{
    if (sim == NULL)
        return EFPS_ERR_INVALID;
    if (sim->broken != EFPS_OK) {
        efps_error("checkpoint %s: the simulation is broken by a failed step", path);
        return EFPS_ERR_STATE;
    }
    return efps__ckpt_write(path, EFPS_CKPT_SIM, put_sim, sim);
}

static int same_config(const efps_optim_config_t *a, const efps_optim_config_t *b)
{
    return a->compressor == b->compressor && a->block == b->block && a->momentum == b->momentum &&
           a->nesterov == b->nesterov && a->weight_decay == b->weight_decay;
}

/* Every record must describe the same run, at the same step. */
static int consistent(const efps_sim_t *sim)
{
    const efps_server_opt_t *s = sim->server;
    if (s->n != sim->n || s->workers != sim->workers || s->steps != sim->steps)
        return 0;
    for (int k = 0; k < sim->workers; k++) {
        const efps_worker_opt_t *w = sim->w[k];
        if (w->n != sim->n || w->steps != sim->steps || !same_config(&w->cfg, &s->cfg))
            return 0;
    }
    return 1;
}

/* The optimizer objects of a shell whose x is already read. */
static efps_status_t get_objects(efps_ckpt_in_t *in, efps_sim_t *sim)
{
    for (int k = 0; k < sim->workers; k++) {
        efps_status_t st = efps__worker_opt_get(in, &sim->w[k]);
        if (st != EFPS_OK)
            return st;
    }
    efps_status_t st = efps__server_opt_get(in, &sim->server);
    if (st != EFPS_OK)
        return st;
    if (in->pos != in->len || !consistent(sim))
        return EFPS_ERR_CORRUPT;
    sim->cfg = sim->server->cfg;
    return EFPS_OK;
}

static efps_status_t get_sim(efps_ckpt_in_t *in, efps_sim_t **sim_p)
{
    const uint64_t seed = efps__ckpt_get_u64(in);
    const uint32_t workers = efps__ckpt_get_u32(in);
    const uint64_t n = efps__ckpt_get_u64(in), steps = efps__ckpt_get_u64(in);
    if (!efps__ckpt_in_ok(in) || workers < 1 || workers > EFPS_OPTIM_MAX_WORKERS || n == 0 ||
        n > SIZE_MAX / 8 / workers || !efps__ckpt_in_has(in, n * workers, 4))
        return EFPS_ERR_CORRUPT;
    /* The shell needs a config for its message sizes: that of the first worker
     * record, which sits right after the arrays; checked again by consistent(). */
    efps_ckpt_in_t peek = *in;
    efps__ckpt_get_f32s(&peek, NULL, n * workers);
    efps_worker_opt_t *first = NULL;
    efps_status_t st = efps__worker_opt_get(&peek, &first);
    if (st != EFPS_OK)
        return st;
    efps_sim_t *sim = alloc_shell(&first->cfg, (size_t)n, (int)workers);
    efps_worker_opt_destroy(first);
    if (sim == NULL)
        return EFPS_ERR_NOMEM;
    sim->seed = seed;
    sim->steps = steps;
    for (uint32_t k = 0; k < workers; k++)
        efps__ckpt_get_f32s(in, sim->x[k], sim->n);
    st = get_objects(in, sim);
    if (st != EFPS_OK) {
        efps_sim_destroy(sim);
        return st;
    }
    *sim_p = sim;
    return EFPS_OK;
}

efps_status_t efps_sim_load(const char *path, efps_sim_grad_fn grad, void *user, efps_sim_t **sim_p)
{
    if (grad == NULL || sim_p == NULL) {
        efps_error("simulation load: no gradient callback or result pointer");
        return EFPS_ERR_INVALID;
    }
    uint8_t *payload = NULL;
    size_t len = 0;
    efps_status_t st = efps__ckpt_read(path, EFPS_CKPT_SIM, &payload, &len);
    if (st != EFPS_OK)
        return st;
    efps_ckpt_in_t in = {.p = payload, .len = len};
    efps_sim_t *sim = NULL;
    st = get_sim(&in, &sim);
    free(payload);
    if (st != EFPS_OK) {
        if (st == EFPS_ERR_CORRUPT)
            efps_error("checkpoint %s: the simulation state inside is malformed", path);
        return st;
    }
    sim->grad = grad;
    sim->user = user;
    *sim_p = sim;
    return EFPS_OK;
}
