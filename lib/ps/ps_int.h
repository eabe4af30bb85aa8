/* Internal to lib/ps: the model layout, the wire protocol and the handshake,
 * shared by the worker (worker.c) and the server (server*.c). */
#ifndef EFPS_PS_INT_H
#define EFPS_PS_INT_H

#include "efps/ps.h"
#include "efps/transport.h"
#include "efps_internal/util.h"

#include <stdbool.h>

#define PS_PROTO_VERSION 2
#define PS_MAGIC         0x53504645u /* "EFPS" */
#define PS_NONCE         16
#define PS_MAC           32

/* ---- the server list (EFPS_SERVERS) ---------------------------------------- */
int ps_count_servers(const char *list);
/* Entry i ("host:port") of the comma-separated list, into buf (cut to cap-1;
 * empty when the list has no entry i). */
void ps_server_entry(const char *list, int i, char *buf, size_t cap);

/* ---- configuration (config.c) ------------------------------------------------ */
/* The server's admission limits: cfg's fields, else EFPS_LOGIN_TIMEOUT_MS,
 * EFPS_MAX_PENDING, EFPS_MAX_PENDING_PER_HOST. */
typedef struct {
    int login_ms;     /* an unauthenticated connection must log in within this */
    int max_pending;  /* unauthenticated connections at once, in all */
    int max_per_host; /* ... and from one source address */
} efps__ps_limits_t;
efps_status_t efps__ps_limits(const efps_ps_config_t *cfg, efps__ps_limits_t *lim_p);
/* Secure by default: EFPS_ERR_AUTH (logged, saying how to make a secret)
 * when cfg has no secret, unless cfg->insecure or EFPS_INSECURE=1 (then a
 * loud warning). */
efps_status_t efps__ps_check_secret(const efps_ps_config_t *cfg, const char *who);

/* ---- layout ---------------------------------------------------------------- */
typedef struct {
    uint32_t key;
    size_t n;
    size_t block; /* blocksign block of this key (0: one per part) */
    uint32_t first_part, nparts;
} ps_key_t;

typedef struct {
    uint32_t key_index;
    size_t off, n; /* elements of the key */
    int server;
    size_t payload; /* efps_encoded_size of the part */
    size_t bytes;   /* on the wire: payload, then the PS_TRAILER header */
    size_t stride;  /* in the arenas and slots: bytes rounded up to 64 */
} ps_part_t;

typedef struct {
    efps_optim_config_t optim;
    size_t partition_bytes;
    int num_servers;
    ps_key_t *keys;
    size_t nkeys, cap_keys;
    ps_part_t *parts;
    size_t nparts;
} ps_layout_t;

void ps_layout_init(ps_layout_t *l, const efps_optim_config_t *optim, size_t partition_bytes,
                    int num_servers);
void ps_layout_free(ps_layout_t *l);
/* Limits on what a layout may hold, checked on both sides and on the wire:
 * every count and size from a peer is bounded before anything is sized by it. */
#define PS_MAX_KEYS      (1u << 20)
#define PS_MAX_KEY_ELEMS (UINT64_C(1) << 40)
#define PS_MAX_ELEMS     (UINT64_C(1) << 40) /* all keys together */
#define PS_MAX_BLOCK     (UINT64_C(1) << 31)
#define PS_MIN_PARTITION 64
#define PS_MAX_PARTITION (UINT64_C(1) << 30) /* a part's write stays below EFPS_TP_WRITE_MAX */
#define PS_MAX_PARTS     (1u << 24)
/* Beyond PS_PARTS_FREE parts, a layout needs PS_MODEL_PER_PART bytes of
 * fp32 model per part on average: the servers' bookkeeping per part (~200
 * bytes) stays a few percent of the model, whatever a LAYOUT asks. */
#define PS_PARTS_FREE     (1u << 16)
#define PS_MODEL_PER_PART 4096
efps_status_t ps_layout_add(ps_layout_t *l, uint32_t key, size_t n, size_t block);
/* ps_layout_add without the duplicate check (ps_layout_finish makes it):
 * linear time for a layout received from the wire. */
efps_status_t efps__layout_append(ps_layout_t *l, uint32_t key, size_t n, size_t block);
/* The optimizer configuration of a key: the run's, with the key's block. */
efps_optim_config_t ps_key_optim(const ps_layout_t *l, const ps_key_t *k);
/* Splits keys into parts and places them on servers (deterministic).
 * EFPS_ERR_INVALID for a duplicate key, a partition size out of range, or
 * more parts or elements than the limits above. */
efps_status_t ps_layout_finish(ps_layout_t *l);
/* The same, with the reason for EFPS_ERR_INVALID, naming the field, in why. */
efps_status_t efps__layout_finish(ps_layout_t *l, char *why, size_t cap);
const ps_key_t *ps_layout_find(const ps_layout_t *l, uint32_t key);
/* Explains the first difference between two layouts into why; false if equal. */
bool ps_layout_differs(const ps_layout_t *a, const ps_layout_t *b, char *why, size_t cap);

/* ---- control messages -------------------------------------------------------
 * Every message starts with a u32 type. Integers little-endian. */
enum {
    PS_MSG_AUTH = 1,   /* worker: mac; server: mac */
    PS_MSG_LAYOUT = 2, /* worker: layout head + worker's pull rkey */
    PS_MSG_KEYS = 3,   /* worker: a chunk of (key u32, n u64, block u64) */
    PS_MSG_READY = 4,  /* server: the worker's slot rkey */
    PS_MSG_REFUSE = 5, /* either: a NUL-terminated reason, then the sender closes */
    PS_MSG_BYE = 6,    /* worker: finished */
    /* server, before the run starts: u32 rank (as claimed), NUL-terminated
     * text naming the peer refused or lost, and why (server_join.c) */
    PS_MSG_NOTICE = 7,
    /* ckpt.c; numbered apart so other new messages need not renumber */
    PS_MSG_SAVE = 16,      /* worker rank 0: NUL-terminated path; between steps */
    PS_MSG_LOAD = 17,      /* every worker: NUL-terminated path; before its first push */
    PS_MSG_CKPT_DONE = 18, /* server: i32 status, NUL-terminated message */
    /* stats.c. worker: u32 first part; server: u32 count, u32 next part
     * (UINT32_MAX: no more), count x (u32 part, f64 residual sum of squares) */
    PS_MSG_STATS = 19,
};
#define PS_STATS_PER_MSG 300
#define PS_NOTICE_MAX    512 /* bytes of a NOTICE's text, with its NUL */
#define PS_KEYS_PER_MSG  128
#define PS_KEY_WIRE      20                         /* bytes of one key in a KEYS message */
#define PS_LAYOUT_HEAD   (32 + EFPS_TP_RKEY_PACKED) /* bytes of a LAYOUT message */

/* Connect-time private data. */
typedef struct {
    uint32_t magic;
    uint16_t version;
    uint16_t role;
    uint32_t rank;
    uint32_t num_workers; /* worker: M it runs with; server: S */
    uint8_t nonce[PS_NONCE];
} ps_hello_t;

/* The header of every push (worker) and update (server). It follows the
 * payload, which starts its part's 64-byte aligned slot, as the packed
 * format's AVX-512 stores need: in front, it would have to be padded to 64
 * bytes, which for a small part costs more than the part itself. */
typedef struct {
    uint32_t magic;
    uint32_t part;
    uint64_t step;
    float lr;
    uint32_t payload;
} ps_msg_hdr_t;
#define PS_TRAILER sizeof(ps_msg_hdr_t) /* 24 bytes */
/* payload of a header written alone (efps_ps_skip): this worker contributes
 * zero, i.e. a payload of zero bytes, to this step of the part. */
#define PS_SKIP_PAYLOAD 0xffffffffu

/* ---- parsing what a peer sent (wire.c) ----------------------------------------
 * Pure functions, callable without a server (the fuzz targets call them).
 * They never trust a number: each is bounded by the PS_MAX_* limits, and a
 * failure (EFPS_ERR_PROTO, or NOMEM) writes the reason, naming the field,
 * into why. */
typedef struct {
    uint32_t compressor;
    uint64_t block, partition_bytes, nkeys;
    efps_tp_rkey_t pull_rkey;
} efps__layout_head_t;
/* The connect-time private data of a peer. */
efps_status_t efps__wire_hello(const void *priv, size_t len, ps_hello_t *hello_p);
/* An AUTH message: *mac_p points at its PS_MAC bytes. */
efps_status_t efps__wire_auth(const uint8_t *m, size_t len, const uint8_t **mac_p);
/* A LAYOUT message (its head: compressor, block, partition bytes, number of keys). */
efps_status_t efps__wire_layout_head(const uint8_t *m, size_t len, efps__layout_head_t *head_p,
                                     char *why, size_t cap);
/* A KEYS message: appends its keys to l, which may hold at most `announced`. */
efps_status_t efps__wire_keys(ps_layout_t *l, uint64_t announced, const uint8_t *m, size_t len,
                              char *why, size_t cap);

/* ---- handshake ---------------------------------------------------------------
 * HMAC-SHA256 over a role label and both nonces (and the hello fields), keyed
 * with the shared secret, so each side proves it knows the secret without
 * sending it, and a recorded answer is useless with fresh nonces. */
void ps_nonce(uint8_t nonce[PS_NONCE]);
void ps_mac(const char *secret, const char *label, const ps_hello_t *first,
            const ps_hello_t *second, uint8_t mac[PS_MAC]);
bool ps_mac_equal(const uint8_t a[PS_MAC], const uint8_t b[PS_MAC]);

/* "" or "s": "%d worker%s", n, ps_s(n). */
static inline const char *ps_s(long n)
{
    return n == 1 ? "" : "s";
}

/* Sends a REFUSE with the formatted reason (best effort). */
void ps_send_refuse(efps_tp_ep_t *ep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* imm of a push or update: the part and the step's parity. */
static inline uint32_t ps_imm(uint32_t part, uint64_t step)
{
    return (part << 1) | (uint32_t)(step & 1);
}

/* ---- checkpoints (ckpt.c), over worker.c's state ------------------------------ */
/* EFPS_OK when the worker may checkpoint: no error, every pull done; with
 * start, the layout is sent first if it was not (efps_ps_load). */
efps_status_t efps__ps_between_steps(efps_ps_t *ps, bool start);
bool efps__ps_pushed_any(const efps_ps_t *ps);
size_t efps__ps_nparts(const efps_ps_t *ps);
efps_worker_opt_t **efps__ps_part_opt(efps_ps_t *ps, size_t part);
int efps__ps_nservers(const efps_ps_t *ps);
/* stats.c's view of a worker's part. */
typedef struct {
    const ps_part_t *part;
    const ps_key_t *key;
    const efps_worker_opt_t *opt;
    uint64_t pushes;
    const uint8_t *last_push; /* the encoded payload of the last push */
} ps_part_view_t;
const ps_layout_t *efps__ps_layout(const efps_ps_t *ps);
void efps__ps_part_view(const efps_ps_t *ps, size_t part, ps_part_view_t *v);
/* Sends msg to server s and waits (timeout_ms) for its control message of
 * type reply_type. */
efps_status_t efps__ps_ask(efps_ps_t *ps, int s, const uint8_t *msg, size_t len,
                           uint32_t reply_type, uint8_t *reply, size_t cap, size_t *len_p);
/* A server's answer to PS_MSG_SAVE / PS_MSG_LOAD m (len bytes) over its parts
 * opts[count] (replaced on a load); the reply (PS_MSG_CKPT_DONE) into reply. */
efps_status_t efps__ps_server_ckpt(int server, const char *dir, uint32_t type, const uint8_t *m,
                                   size_t len, efps_server_opt_t **opts, size_t count,
                                   uint8_t *reply, size_t cap, size_t *reply_len_p);

#endif
