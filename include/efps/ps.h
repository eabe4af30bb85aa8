/* efps parameter server: M worker processes and S server processes running
 * the EF-SGDM steps of efps/optim.h over a transport of efps/transport.h.
 *
 * A training program, on every worker:
 *
 *   efps_ps_t *ps;
 *   efps_ps_init(&cfg, &ps);                      // connects, authenticates
 *   for each tensor: efps_ps_declare(ps, key, n); // same keys, same order everywhere
 *   for each step t, lr = eta_t:
 *       backward, last layer first: efps_ps_push(ps, key, grad, lr);   // returns at once
 *       before each layer's forward: efps_ps_pull(ps, key, x);         // waits, applies
 *   efps_ps_finalize(ps);
 *
 * and on every server (what efps-server does):
 *
 *   efps_server_t *srv;
 *   efps_server_create(&cfg, &srv);   // listens
 *   efps_server_run(srv);             // until every worker is done, or stopped
 *   efps_server_destroy(srv);
 *
 * Keys larger than partition_bytes of fp32 are split into parts; parts are
 * spread over servers by size (each to the least loaded one, in declaration
 * order), so every worker computes the same placement. A server reduces a
 * part as soon as its M pushes are in, in rank order: a run is deterministic,
 * and bit-identical to efps_sim with the same partition.
 *
 * Failure: a peer that dies or stays silent makes every call fail within
 * timeout_ms with an error naming that peer (EFPS_ERR_PEER, EFPS_ERR_TIMEOUT);
 * nothing hangs. After an error the only valid call is efps_ps_finalize.
 *
 * Threads: one efps_ps_t is used by one thread at a time.
 */
#ifndef EFPS_PS_H
#define EFPS_PS_H

#include "efps/core.h"
#include "efps/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    EFPS_ROLE_UNSET = 0,
    EFPS_ROLE_WORKER = 1,
    EFPS_ROLE_SERVER = 2,
} efps_role_t;

/* Every field has an "unset" value (NULL, 0, or -1 where 0 is meaningful);
 * a set field wins over its EFPS_* variable; unset fields are taken from
 * EFPS_* variables, then from the launcher
 * (mpirun: OMPI_COMM_WORLD_RANK/SIZE, Slurm: SLURM_PROCID/SLURM_NTASKS,
 * torchrun: RANK/WORLD_SIZE), then from the defaults (docs/configuration.md;
 * `efps-info` prints each value in effect and where it came from).
 * With a launcher and no EFPS_ROLE, launcher ranks 0..S-1 are the servers
 * and the rest the workers (S = number of entries of the server list). */
typedef struct {
    efps_role_t role;       /* EFPS_ROLE */
    int rank;               /* -1: EFPS_RANK or the launcher's */
    int num_workers;        /* 0: EFPS_NUM_WORKERS or the launcher's */
    const char *servers;    /* EFPS_SERVERS "host:port,host:port,..." */
    const char *bind;       /* server: listen address; NULL: EFPS_BIND, else
                               ":port" of this server's entry in servers */
    const char *transport;  /* EFPS_TRANSPORT: auto, tcp, verbs */
    const char *secret;     /* EFPS_SECRET (shared by every process) */
    const char *compressor; /* EFPS_COMPRESSOR: none, sign, blocksign */
    long block;             /* -1: EFPS_BLOCK; 0 = one block per tensor part */
    size_t partition_bytes; /* 0: EFPS_PARTITION_BYTES */
    int timeout_ms;         /* 0: EFPS_TIMEOUT_MS */
    /* Worker optimizer hyperparameters (the server does not need them). */
    float momentum; /* mu */
    int nesterov;
    float weight_decay;
    /* The other settings of a job (docs/configuration.md). EFPS_LOG and
     * EFPS_SIMD are the process's: efps_log_set_level, efps_compress_set_simd. */
    const char *port_file;    /* server: EFPS_PORT_FILE, where to write the port listened on */
    const char *ib_dev;       /* verbs: EFPS_IB_DEV, the RDMA device */
    const char *ib_gid;       /* verbs: EFPS_IB_GID, a GID index as text ("1"; "": rdma_cm's) */
    const char *cpu_affinity; /* verbs: EFPS_CPU_AFFINITY: auto, none or a core number */
    int insecure;             /* 1: run without a secret (as EFPS_INSECURE=1); 0: the variable */
    int login_timeout_ms;     /* server: 0: EFPS_LOGIN_TIMEOUT_MS */
    int max_pending;          /* server: 0: EFPS_MAX_PENDING */
    int max_pending_per_host; /* server: 0: EFPS_MAX_PENDING_PER_HOST */
    const char *ckpt_dir;     /* server: EFPS_CKPT_DIR, the only folder its checkpoint
                                 files go to (NULL: the variable; "": its working dir) */
} efps_ps_config_t;

/* All fields unset, hyperparameters zero. */
EFPS_API void efps_ps_config_init(efps_ps_config_t *cfg);

/* The configuration with every unset field resolved, as efps_ps_init and
 * efps_server_create see it. Strings point into the environment or static
 * storage. EFPS_ERR_INVALID (logged, naming the variable) when a value is
 * malformed or a required one is missing. */
EFPS_API efps_status_t efps_ps_config_resolve(const efps_ps_config_t *cfg, efps_ps_config_t *out_p);

/* The launcher this process runs under, as efps_ps_config_resolve sees it:
 * "mpirun", "slurm" or "torchrun" with the names of its rank and size
 * variables (either pointer may be NULL); NULL when there is none. */
EFPS_API const char *efps_ps_launcher(const char **rank_var_p, const char **size_var_p);

typedef struct efps_ps efps_ps_t;

/* A worker: connects to every server and authenticates, into *ps_p (set only
 * on success). Any failure is returned (and logged, naming the server).
 * cfg may be NULL: everything from the environment. */
EFPS_API efps_status_t efps_ps_init(const efps_ps_config_t *cfg, efps_ps_t **ps_p);
/* Declares tensor `key` of n > 0 fp32 elements. All declares come before the
 * first push; every worker declares the same keys with the same sizes in the
 * same order (the servers check it). EFPS_ERR_INVALID for a duplicate key,
 * EFPS_ERR_STATE after the first push. */
EFPS_API efps_status_t efps_ps_declare(efps_ps_t *ps, uint32_t key, size_t n);
/* efps_ps_declare with this key's own blocksign block (0: one block per
 * part) instead of the configured one, e.g. for a key that concatenates
 * several small tensors: a block that divides every tensor but the last
 * never gives two tensors one scale. Other compressors ignore it. */
EFPS_API efps_status_t efps_ps_declare_block(efps_ps_t *ps, uint32_t key, size_t n, size_t block);
/* Steps 1-5 for key and sends the result; returns once it is posted (grad may
 * be reused at once). lr is eta_t of this step, the same on every worker.
 * The first push sends the model layout to the servers. */
EFPS_API efps_status_t efps_ps_push(efps_ps_t *ps, uint32_t key, const float *grad, float lr);
/* This worker contributes zero for key at this step instead of pushing:
 * the servers count a payload of zero bytes (bit-identical to a push whose
 * encoded payload is all zero bytes; for none and blocksign that decodes to
 * zeros). Its own optimizer state (momentum, error) is untouched; the next
 * efps_ps_pull applies the servers' update as usual. Call it after a push of
 * key failed with EFPS_ERR_NONFINITE (or whenever a worker has no gradient
 * for key), so the others do not wait: parts of key that were pushed before
 * the failure stay pushed. EFPS_ERR_STATE if key was pushed at this step. */
EFPS_API efps_status_t efps_ps_skip(efps_ps_t *ps, uint32_t key, float lr);
/* Waits for the servers' update of key for the step pushed last and applies
 * step 8 to x (n floats). */
EFPS_API efps_status_t efps_ps_pull(efps_ps_t *ps, uint32_t key, float *x);
/* Tells the servers this worker is done, disconnects and frees everything.
 * Returns the first error the worker saw, or EFPS_OK. NULL is a no-op.
 * Every worker must finalize after the same number of steps: a worker that
 * finalizes while the others go on is reported as leaving early, and every
 * other worker's next call fails (EFPS_ERR_PEER) with an error naming it. */
EFPS_API efps_status_t efps_ps_finalize(efps_ps_t *ps);

/* Checkpoints (lib/ps/ckpt.c). Save, on every worker between two steps
 * (every pull done): the worker writes its optimizer state to
 * <path>.worker<rank>, and rank 0 asks every server to write its own to
 * <path>.server<s>. Load, on every worker before its first push, after the
 * same declares as the saved run: the worker's state from its file, and every
 * server loads its file before this worker may push; a run resumed so goes on
 * bit-identically. EFPS_ERR_STATE at another time, EFPS_ERR_MISMATCH for a
 * checkpoint of another layout or configuration, the file errors of
 * efps_worker_opt_load (also for a server's file, reported with its name). */
EFPS_API efps_status_t efps_ps_save(efps_ps_t *ps, const char *path);
EFPS_API efps_status_t efps_ps_load(efps_ps_t *ps, const char *path);

/* Observability of one key on this worker (lib/ps/stats.c), after its first
 * push. Local, no communication. */
typedef struct {
    uint64_t pushes;        /* of this key so far */
    uint64_t wire_bytes;    /* those pushes on the wire, headers included */
    uint64_t fp32_bytes;    /* the fp32 bytes they stand for */
    double worker_residual; /* ||e_i||_2 of this worker's error feedback (0 without) */
    uint64_t blocks;        /* blocksign: scales in the last push (0: other compressors) */
    float scale_min, scale_mean, scale_max; /* of those scales */
} efps_ps_key_stats_t;
EFPS_API efps_status_t efps_ps_key_stats(efps_ps_t *ps, uint32_t key, efps_ps_key_stats_t *st_p);
/* ||e~||_2 of the servers' error feedback for keys[0..nkeys-1] into norms:
 * one request per server (between steps, as efps_ps_save). */
EFPS_API efps_status_t efps_ps_server_residuals(efps_ps_t *ps, const uint32_t *keys, size_t nkeys,
                                                double *norms);

/* Bytes this worker has put on the wire (pushes, headers included) and the
 * fp32 bytes those pushes stand for. */
EFPS_API void efps_ps_traffic(const efps_ps_t *ps, uint64_t *wire_bytes_p, uint64_t *fp32_bytes_p);
EFPS_API int efps_ps_rank(const efps_ps_t *ps);
EFPS_API int efps_ps_num_workers(const efps_ps_t *ps);

/* The wire protocol version this library speaks: workers and servers of
 * different versions refuse each other (naming both versions). */
EFPS_API unsigned efps_ps_protocol_version(void);

/* ---- a server ------------------------------------------------------------ */
typedef struct efps_server efps_server_t;

/* Resolves cfg (may be NULL, as for efps_ps_init; the role must be server),
 * opens the transport and listens, into *srv_p (set only on success). The
 * port is known from here on (efps_server_port), and written to the port
 * file if one is configured. */
EFPS_API efps_status_t efps_server_create(const efps_ps_config_t *cfg, efps_server_t **srv_p);
/* Serves in the calling thread. Returns EFPS_OK once every worker has
 * finalized; the error when a peer fails (logged, naming it) or the workers
 * do not join in time; EFPS_ERR_STOPPED (within a few ms) after
 * efps_server_stop. Runs once per object: again is EFPS_ERR_STATE. */
EFPS_API efps_status_t efps_server_run(efps_server_t *srv);
/* Makes efps_server_run return. From any thread or a signal handler
 * (async-signal-safe), before or during run. */
EFPS_API void efps_server_stop(efps_server_t *srv);
/* After run has returned (or without run). NULL is a no-op. */
EFPS_API void efps_server_destroy(efps_server_t *srv);
/* The port listened on (the one picked for port 0); 0 for NULL. */
EFPS_API uint16_t efps_server_port(const efps_server_t *srv);
/* One line for a start-up message, into buf (cut to cap-1): the address
 * listened on, the transport (and device), the workers expected and where
 * the layout (compressor, block, partition size) comes from. */
EFPS_API void efps_server_describe(const efps_server_t *srv, char *buf, size_t cap);
/* create + run + destroy, as a process exit status: 0 when every worker
 * finished, 1 otherwise (the reason logged). */
EFPS_API int efps_server_main(const efps_ps_config_t *cfg);

#ifdef __cplusplus
}
#endif
#endif
