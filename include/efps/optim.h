/* efps optimizer layer: the EF-SGDM algorithm of docs/design.md ("The algorithm",
 * steps 1-8) for one tensor (key or key part) of n float32 elements, on the
 * workers and on the server; learning-rate schedules; checkpoints; and an
 * in-process simulation of M workers and one server.
 *
 * One iteration t with step size lr = eta_t:
 *   worker i:  efps_worker_opt_encode(w_i, grad_i, lr, push_i)        steps 1-5
 *   server:    efps_server_opt_reduce(s, {push_0..push_M-1}, lr, upd)  steps 6-7
 *   worker i:  efps_worker_opt_apply(w_i, upd, lr, x_i)                step 8
 * Errors are kept in gradient units and re-scaled by r_t = eta_{t-1} / eta_t
 * (r_0 = 0) on both sides, so any schedule is handled exactly: just pass each
 * step's lr. Every compressor shares one meaning of lr: the worker applies
 * x -= lr * (decoded update + weight-decay term).
 *
 * Determinism: everything here is computed in a fixed order without fused
 * multiply-add, on top of kernels that give the same bits in every SIMD
 * variant, so the same inputs give the same bits on every machine and in the
 * simulation as in the multi-process parameter server.
 *
 * Threading: an object is used by one thread at a time; distinct objects are
 * independent. No call on the per-iteration path (encode, reduce, apply)
 * allocates memory.
 */
#ifndef EFPS_OPTIM_H
#define EFPS_OPTIM_H

#include "efps/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- configuration ------------------------------------------------------- */

typedef enum {
    EFPS_COMP_NONE = 0,      /* full-precision distributed SGDM: push u, pull the fp32 mean */
    EFPS_COMP_SIGN = 1,      /* signSGD / signum with majority vote, no error feedback */
    EFPS_COMP_BLOCKSIGN = 2, /* the paper's C_B, error feedback on both sides */
} efps_compressor_t;

typedef struct {
    efps_compressor_t compressor;
    size_t block;       /* blocksign: elements per block; 0 = one block per tensor.
                           Ignored by the other compressors. */
    float momentum;     /* mu in [0, 1); 0 = dist-EF-SGD */
    int nesterov;       /* 1 = Nesterov (u = g + mu*m), 0 = heavy ball (u = m) */
    float weight_decay; /* wd >= 0, applied uncompressed in step 8 with its own momentum */
} efps_optim_config_t;

/* EFPS_OK when cfg is usable (known compressor, 0 <= mu < 1, nesterov 0 or 1,
 * finite wd >= 0); EFPS_ERR_INVALID otherwise, logged with the reason. */
EFPS_API efps_status_t efps_optim_config_check(const efps_optim_config_t *cfg);
/* "none", "sign", "blocksign"; "unknown" for anything else. */
EFPS_API const char *efps_compressor_name(efps_compressor_t c);
/* Parses the names above (as in EFPS_COMPRESSOR); EFPS_ERR_INVALID otherwise. */
EFPS_API efps_status_t efps_compressor_parse(const char *text, efps_compressor_t *c_p);

/* Bytes of one encoded message of a tensor of n elements: a worker's push and
 * the server's update have this same size. none: n float32 padded to 64 bytes;
 * sign: efps_sign_packed_size(n); blocksign: efps_packed_size(n, block).
 * 0 when cfg is NULL, n == 0 or the size would overflow. */
EFPS_API size_t efps_encoded_size(const efps_optim_config_t *cfg, size_t n);

/* ---- worker: steps 1-5 and 8 --------------------------------------------- */

typedef struct efps_worker_opt efps_worker_opt_t;

/* A worker's state for one tensor of n > 0 elements: momentum, error (blocksign),
 * weight-decay momentum (wd > 0), all zero; previous lr 0, into *w_p.
 * EFPS_ERR_INVALID (logged) on a bad config or size, EFPS_ERR_NOMEM; *w_p is
 * set only on success (as by every creator of efps). */
EFPS_API efps_status_t efps_worker_opt_create(const efps_optim_config_t *cfg, size_t n,
                                              efps_worker_opt_t **w_p);
EFPS_API void efps_worker_opt_destroy(efps_worker_opt_t *w);

/* Steps 1-5: grad (n floats) -> encoded push message (efps_encoded_size bytes,
 * 64-byte aligned, e.g. from efps_aligned_alloc). lr is eta_t of this step,
 * finite and > 0. Must alternate with efps_worker_opt_apply: calling encode
 * twice without an apply in between is EFPS_ERR_STATE.
 * A NaN or Inf in grad, or anything non-finite that follows from it, is
 * EFPS_ERR_NONFINITE and leaves all worker state (momentum, error) exactly as
 * it was; encoded is then unspecified. */
EFPS_API efps_status_t efps_worker_opt_encode(efps_worker_opt_t *w, const float *grad, float lr,
                                              void *encoded);
/* Step 8: x -= lr * (decode(update) + weight-decay term), where update is the
 * server's message for this step and lr must be the lr given to the encode
 * that this apply completes (else EFPS_ERR_INVALID). The weight-decay momentum
 * is updated from x before this update. An update that decodes to a non-finite
 * value is EFPS_ERR_NONFINITE with x and the state untouched. Apply without a
 * preceding encode is EFPS_ERR_STATE. */
EFPS_API efps_status_t efps_worker_opt_apply(efps_worker_opt_t *w, const void *update, float lr,
                                             float *x);
/* Instead of an encode: this worker contributes nothing to this step (the
 * parameter server's efps_ps_skip): m and the error are untouched, but the
 * step is open, so the next efps_worker_opt_apply takes the servers' update
 * as usual. The error keeps the lr it was formed at (that apply does not move
 * the previous lr), so the next encode rescales it by the right ratio.
 * EFPS_ERR_INVALID for a NULL w or a bad lr, EFPS_ERR_STATE after an encode not applied. */
EFPS_API efps_status_t efps_worker_opt_skip(efps_worker_opt_t *w, float lr);
/* Number of completed steps (encode + apply pairs). */
EFPS_API uint64_t efps_worker_opt_steps(const efps_worker_opt_t *w);
EFPS_API size_t efps_worker_opt_size(const efps_worker_opt_t *w);

/* The squared L2 norm of the worker's error-feedback residual e_i (gradient
 * units), summed in double; 0 for the compressors without error feedback. */
EFPS_API double efps_worker_opt_residual_sumsq(const efps_worker_opt_t *w);

/* ---- server: steps 6-7 ----------------------------------------------------- */

typedef struct efps_server_opt efps_server_opt_t;

/* The server's state for one tensor of n > 0 elements and 1 <= num_workers <=
 * EFPS_OPTIM_MAX_WORKERS workers: server error (blocksign, zero), previous lr 0,
 * into *s_p. EFPS_ERR_INVALID (logged) on bad arguments, EFPS_ERR_NOMEM. */
#define EFPS_OPTIM_MAX_WORKERS 65536
EFPS_API efps_status_t efps_server_opt_create(const efps_optim_config_t *cfg, size_t n,
                                              int num_workers, efps_server_opt_t **s_p);
EFPS_API void efps_server_opt_destroy(efps_server_opt_t *s);

/* Steps 6-7: pushes[0..num_workers-1], the workers' encoded messages in rank
 * order -> update (efps_encoded_size bytes, 64-byte aligned). lr is eta_t, > 0.
 * none: the fp32 mean of u (summed in rank order from worker 0, then / M);
 * sign: the majority vote (ties take worker 0's sign); blocksign: C_B of the
 * mean plus the re-scaled server error. A non-finite result is
 * EFPS_ERR_NONFINITE with the server state untouched. */
EFPS_API efps_status_t efps_server_opt_reduce(efps_server_opt_t *s, const void *const *pushes,
                                              float lr, void *update);
EFPS_API uint64_t efps_server_opt_steps(const efps_server_opt_t *s);
/* The squared L2 norm of the server's residual e~, as for the worker's. */
EFPS_API double efps_server_opt_residual_sumsq(const efps_server_opt_t *s);

/* ---- checkpoints ----------------------------------------------------------
 * A checkpoint file holds every piece of optimizer state (config, n, M, step
 * count, previous lr, momentum, errors, weight-decay momentum), little-endian:
 *   "EFPSCKPT" | u32 version | u32 kind | u64 payload bytes | payload | u32 CRC-32
 * (zlib's crc32 of everything before it). It is written to a temporary file in
 * the same directory, flushed to disk, then renamed over path, so a crash never
 * leaves a half-written checkpoint under path.
 * Loading reads and validates the whole file before building anything and
 * returns a new object: a missing or unreadable file is EFPS_ERR_IO; a
 * truncated, extended or corrupted one EFPS_ERR_CORRUPT; a newer format version
 * EFPS_ERR_UNSUPPORTED; a checkpoint of another kind (server vs worker vs sim)
 * EFPS_ERR_MISMATCH. *_p is set only on success.
 * Saving between an encode and its apply is EFPS_ERR_STATE: checkpoints are
 * taken between iterations. */
#define EFPS_CKPT_VERSION 1
EFPS_API efps_status_t efps_worker_opt_save(const efps_worker_opt_t *w, const char *path);
EFPS_API efps_status_t efps_worker_opt_load(const char *path, efps_worker_opt_t **w_p);
EFPS_API efps_status_t efps_server_opt_save(const efps_server_opt_t *s, const char *path);
EFPS_API efps_status_t efps_server_opt_load(const char *path, efps_server_opt_t **s_p);
/* Many objects in one file: every part of a parameter-server worker, or every
 * part a server holds (efps_ps_save). Loading replaces the `count` objects of
 * the array in place (the old ones destroyed) only when the file holds exactly
 * `count` records, each of the same size and configuration as the object it
 * replaces: EFPS_ERR_MISMATCH otherwise, and the array is untouched on any
 * error. Saving a worker part between an encode and its apply is EFPS_ERR_STATE. */
EFPS_API efps_status_t efps_worker_opts_save(efps_worker_opt_t *const *w, size_t count,
                                             const char *path);
EFPS_API efps_status_t efps_worker_opts_load(const char *path, efps_worker_opt_t **w, size_t count);
EFPS_API efps_status_t efps_server_opts_save(efps_server_opt_t *const *s, size_t count,
                                             const char *path);
EFPS_API efps_status_t efps_server_opts_load(const char *path, efps_server_opt_t **s, size_t count);

/* ---- learning-rate schedules ---------------------------------------------- */

typedef enum {
    EFPS_LR_CONSTANT = 0, /* base_lr */
    EFPS_LR_STEP = 1,     /* base_lr * gamma^(number of milestones <= epoch) */
    EFPS_LR_COSINE = 2,   /* min_lr + (base_lr - min_lr) * (1 + cos(pi * progress)) / 2 */
} efps_lr_kind_t;

#define EFPS_LR_MAX_MILESTONES 16

typedef struct {
    efps_lr_kind_t kind;
    float base_lr; /* > 0 */
    /* Linear warm-up in front of any kind: for step t < warmup_steps the lr is
     * the schedule's value times (t + 1) / warmup_steps. 0 = none. */
    uint64_t warmup_steps;
    /* step: epoch = t / steps_per_epoch (> 0); the lr is multiplied by gamma
     * (in (0, 1]) at each milestone epoch, given in increasing order. */
    uint64_t steps_per_epoch;
    uint32_t milestones[EFPS_LR_MAX_MILESTONES];
    size_t num_milestones;
    float gamma;
    /* cosine: progress = (t - warmup_steps) / (total_steps - warmup_steps),
     * from 0 at the end of the warm-up; min_lr (0 <= min_lr <= base_lr) from
     * total_steps on (total_steps > warmup_steps): with min_lr = 0 that is 0, which
     * no step accepts, so stop at total_steps. */
    uint64_t total_steps;
    float min_lr;
} efps_lr_schedule_t;

/* EFPS_OK when the schedule is well formed, EFPS_ERR_INVALID (logged) otherwise. */
EFPS_API efps_status_t efps_lr_schedule_check(const efps_lr_schedule_t *s);
/* eta_t of a well-formed schedule (computed in double, rounded once to float);
 * 0 for a NULL or malformed one. */
EFPS_API float efps_lr_at(const efps_lr_schedule_t *s, uint64_t step);

/* ---- in-process simulation --------------------------------------------------
 * M virtual workers and one server in one process, one tensor of n elements.
 * Each step: for each worker in rank order, grad(...) then encode; reduce;
 * apply to each worker's own copy of x (the copies stay bit-identical). The
 * run is a pure function of the config, x0, the seed and the lr sequence, so
 * it is the yardstick the multi-process parameter server must match. */

/* Fills grad (n floats) for `worker` at `step` from that worker's x. seed is
 * derived from the simulation seed, the worker and the step
 * (efps_sim_sample_seed): drawing minibatches from it alone, with no hidden
 * state, is what makes runs resumed from a checkpoint bit-identical. A status
 * other than EFPS_OK stops the step with that status. */
typedef efps_status_t (*efps_sim_grad_fn)(int worker, uint64_t step, uint64_t seed, const float *x,
                                          float *grad, void *user);

typedef struct efps_sim efps_sim_t;

/* x0 (n floats) is copied into every worker; the simulation into *sim_p.
 * EFPS_ERR_INVALID (logged) on bad arguments, EFPS_ERR_NOMEM. */
EFPS_API efps_status_t efps_sim_create(const efps_optim_config_t *cfg, size_t n, int num_workers,
                                       const float *x0, efps_sim_grad_fn grad, void *user,
                                       uint64_t seed, efps_sim_t **sim_p);
EFPS_API void efps_sim_destroy(efps_sim_t *sim);
/* One iteration with step size lr (> 0) for all workers. Any error (from the
 * callback, a non-finite value, ...) is returned, and since some workers may
 * have moved on, the simulation is then broken: every later step returns
 * EFPS_ERR_STATE (reload a checkpoint to go on). */
EFPS_API efps_status_t efps_sim_step(efps_sim_t *sim, float lr);
/* Worker `worker`'s parameters (n floats), valid until the next step; NULL
 * for a bad worker index. */
EFPS_API const float *efps_sim_x(const efps_sim_t *sim, int worker);
/* 1 when every worker's x is bit-identical to worker 0's, else 0. */
EFPS_API int efps_sim_workers_agree(const efps_sim_t *sim);
EFPS_API uint64_t efps_sim_steps(const efps_sim_t *sim);
EFPS_API size_t efps_sim_size(const efps_sim_t *sim);
EFPS_API int efps_sim_workers(const efps_sim_t *sim);
EFPS_API const efps_optim_config_t *efps_sim_config(const efps_sim_t *sim);
/* Bytes one worker pushes per step (= bytes it pulls): efps_encoded_size. */
EFPS_API size_t efps_sim_push_bytes(const efps_sim_t *sim);
/* The seed given to the callback: a mix (splitmix64) of the three values. */
EFPS_API uint64_t efps_sim_sample_seed(uint64_t seed, int worker, uint64_t step);

/* A checkpoint of the whole simulation (every worker's x and optimizer state,
 * the server's, the seed and the step count), in the format described above.
 * The callback is not saved: load takes it again. A broken simulation cannot
 * be saved (EFPS_ERR_STATE). */
EFPS_API efps_status_t efps_sim_save(const efps_sim_t *sim, const char *path);
EFPS_API efps_status_t efps_sim_load(const char *path, efps_sim_grad_fn grad, void *user,
                                     efps_sim_t **sim_p);

#ifdef __cplusplus
}
#endif
#endif
