/* efps transport: one-sided RDMA-style writes with a 32-bit immediate, over
 * verbs or TCP, behind one transport-neutral API.
 *
 * The model is a small subset of verbs + rdma_cm, so the verbs transport maps
 * onto it call for call:
 *
 *   efps_tp_open          ibv_open_device + ibv_alloc_pd + CQ + progress thread
 *   efps_tp_mem_reg       ibv_reg_mr
 *   efps_tp_mem_expose    ibv_alloc_mw(TYPE_2) + IBV_WR_BIND_MW on the endpoint's QP
 *                         (efps_tp_rkey_t ~ {addr, length, rkey of the window})
 *   efps_tp_listen        rdma_listen
 *   efps_tp_get_request   RDMA_CM_EVENT_CONNECT_REQUEST (with its private data)
 *   efps_tp_accept/reject rdma_accept / rdma_reject (accept carries private data)
 *   efps_tp_connect       rdma_resolve_* + rdma_connect, waits for ESTABLISHED
 *   efps_tp_write_imm     ibv_post_send(IBV_WR_RDMA_WRITE_WITH_IMM), signaled
 *   efps_tp_msg_send/recv ibv_post_send(IBV_WR_SEND) / a pre-posted receive ring
 *   efps_tp_poll          ibv_poll_cq (send completions, RECV_RDMA_WITH_IMM,
 *                         flushed work requests, disconnect events)
 *
 * Connection setup and the handshake. The connector's private blob (at most
 * EFPS_TP_PRIV_MAX bytes, what an rdma_cm RC connect request leaves) reaches
 * the acceptor before the connection exists; the acceptor can answer with a
 * blob of its own or refuse. Anything longer or multi-round (version, layout,
 * HMAC challenge-response, exchange of region keys) goes over small control
 * messages (efps_tp_msg_send / efps_tp_msg_recv) on the connected endpoint:
 * a peer can target a region only with its key (efps_tp_rkey_t), a key is
 * made for one endpoint (efps_tp_mem_expose) and works only on it, and it is
 * only worth anything once the application has sent it, i.e. after its own
 * handshake has authenticated the peer.
 *
 * Completions. Every write posted with efps_tp_write_imm produces exactly one
 * EFPS_TP_CQE_WRITE at the writer (status EFPS_OK once the local buffer may be
 * reused, or the error that flushed it); every write that lands produces one
 * EFPS_TP_CQE_RECV at the target, after all its bytes are in the region. A
 * failed or closed endpoint produces one EFPS_TP_CQE_DISCONNECT. Per endpoint,
 * writes and messages are delivered in the order they were posted (as on an RC
 * queue pair).
 *
 * Flow control, so that nothing can overflow:
 * - at most sq_depth writes per endpoint are outstanding: a write's slot is
 *   given back when the application polls its EFPS_TP_CQE_WRITE. A full send
 *   queue makes efps_tp_write_imm return EFPS_ERR_NO_RESOURCE: poll, retry.
 * - at most rq_depth EFPS_TP_CQE_RECV of one endpoint wait unpolled; beyond
 *   that the transport stops taking the peer's data until the application
 *   polls (TCP: the socket is not read; verbs: the writer holds one credit
 *   per receive the reader has posted, and waits for more), so a slow
 *   consumer throttles its writers instead of losing completions.
 * - at most EFPS_TP_MSG_DEPTH messages per direction are in flight.
 *
 * Failure. A peer that closes, resets, breaks the protocol or stays silent
 * for timeout_ms (the transport exchanges heartbeats) makes its endpoint fail:
 * the error is logged naming the peer, outstanding writes complete with
 * EFPS_ERR_PEER, one EFPS_TP_CQE_DISCONNECT reports why, and every later call
 * on the endpoint returns EFPS_ERR_PEER. Nothing waits longer than the
 * timeout that the caller passes, or timeout_ms.
 *
 * Strangers. Failures of incoming connections that the application never
 * took in (no connection request, refused, or accepted but never given a
 * region key) are logged at most once a second, naming the address and
 * how many more there were; the others at debug level.
 *
 * Threads. Every function may be called from any thread. Handles are owned
 * by the caller and freed by their _destroy/_dereg/close call; no callback
 * ever runs on the transport's progress thread.
 */
#ifndef EFPS_TRANSPORT_H
#define EFPS_TRANSPORT_H

#include "efps/core.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct efps_tp_ctx efps_tp_ctx_t;           /* a transport instance */
typedef struct efps_tp_mr efps_tp_mr_t;             /* a registered memory region */
typedef struct efps_tp_ep efps_tp_ep_t;             /* a connected endpoint (a QP) */
typedef struct efps_tp_listener efps_tp_listener_t; /* a listening address */
typedef struct efps_tp_conn_req efps_tp_conn_req_t; /* a connection waiting for accept */

/* Connect-time private data: the 56 bytes of an rdma_cm RC connect request
 * minus the verbs transport's 4-byte header (IB CM pads the data to 56, so
 * its length has to travel inside). */
#define EFPS_TP_PRIV_MAX 52
/* Largest control message, and how many may be in flight per direction. */
#define EFPS_TP_MSG_MAX   4096
#define EFPS_TP_MSG_DEPTH 8
/* Largest single write (the usual verbs max_msg_sz). */
#define EFPS_TP_WRITE_MAX (1u << 31)
/* Room for an endpoint's name: "label (address:port)". */
#define EFPS_TP_NAME_MAX 128

/* ---- context -------------------------------------------------------------- */
typedef struct {
    uint32_t sq_depth;   /* outstanding writes per endpoint; 0: 64 */
    uint32_t rq_depth;   /* unpolled arrivals per endpoint before throttling; 0: 256 */
    uint32_t timeout_ms; /* a silent peer is dead after this; 0: EFPS_TIMEOUT_MS */
    const char *device;  /* verbs: device name (NULL: EFPS_IB_DEV, "": the first
                            with an active port); tcp: unused */
    /* tcp: how long an incoming connection may stay before it has sent its
     * connection request (the transport's own hello); then its socket is
     * closed and freed, so strangers that connect and say nothing cannot
     * hold descriptors longer than this. A server passes its login
     * deadline. 0 (or more than timeout_ms): timeout_ms. verbs: unused (rdma_cm owns the
     * handshake). */
    uint32_t hello_timeout_ms;
    /* verbs: the GID index as text ("1"), which must be the one each
     * connection's address maps to; "": whatever rdma_cm picks; NULL:
     * EFPS_IB_GID. tcp: unused. */
    const char *gid;
    /* verbs: where the progress thread runs: "auto" (near the device),
     * "none", or a core number; NULL: EFPS_CPU_AFFINITY. tcp: unused. */
    const char *cpu_affinity;
} efps_tp_attr_t;

/* Opens a transport: name "tcp", "verbs" or "auto" (verbs when an active RDMA
 * device exists, else tcp); NULL means EFPS_TRANSPORT. attr may be NULL for
 * defaults. Starts the transport's progress thread.
 * Errors: EFPS_ERR_INVALID (unknown name, bad attr), EFPS_ERR_UNSUPPORTED
 * (transport not built or no device), EFPS_ERR_NOMEM, EFPS_ERR_SYSTEM. */
EFPS_API efps_status_t efps_tp_open(const char *name, const efps_tp_attr_t *attr,
                                    efps_tp_ctx_t **ctx_p);
/* Stops the progress thread and frees the context together with every
 * endpoint, listener and region still open on it (those handles become
 * invalid). NULL is a no-op. */
EFPS_API void efps_tp_close(efps_tp_ctx_t *ctx);
/* "tcp" or "verbs". */
EFPS_API const char *efps_tp_name(const efps_tp_ctx_t *ctx);
/* The attributes in effect (defaults filled in). */
EFPS_API void efps_tp_query(const efps_tp_ctx_t *ctx, efps_tp_attr_t *attr_p);

/* ---- memory registration -------------------------------------------------- */
#define EFPS_TP_ACCESS_REMOTE_WRITE 1u /* peers may write into the region */

/* What a peer needs to target a region through one connection: compact,
 * plain data; send it with efps_tp_rkey_pack. Opaque apart from length: a
 * writer names a position by its offset from the start of the region. On
 * verbs, base is the region's address and key the rkey of a type-2 memory
 * window bound to the endpoint's queue pair; on tcp, key is a region id and
 * base a random 64-bit secret of this endpoint's exposure, which the receiver
 * checks together with the endpoint the write arrives on. */
typedef struct {
    uint64_t base;
    uint64_t length; /* bytes */
    uint32_t key;
    uint16_t transport; /* which transport made it (1 tcp, 2 verbs) */
    uint16_t access;    /* EFPS_TP_ACCESS_* granted */
} efps_tp_rkey_t;

#define EFPS_TP_RKEY_PACKED 24 /* bytes of a packed rkey (little-endian) */

/* Registers [addr, addr + length) (length > 0). The region is always usable
 * as the source of writes; access says what peers may do with it once it is
 * exposed to them (efps_tp_mem_expose): registering alone gives no peer any
 * way in. The caller keeps ownership of the memory and must keep it valid
 * until dereg. Errors: EFPS_ERR_INVALID, EFPS_ERR_NOMEM, EFPS_ERR_TRANSPORT. */
EFPS_API efps_status_t efps_tp_mem_reg(efps_tp_ctx_t *ctx, void *addr, size_t length,
                                       unsigned access, efps_tp_mr_t **mr_p);
/* Deregisters; every key exposed for it stops working. A write that is
 * landing in the region right now fails its endpoint (the region vanished
 * under it). EFPS_ERR_STATE if writes posted from the region have not
 * completed yet (the region stays registered). NULL is a no-op returning
 * EFPS_OK. */
EFPS_API efps_status_t efps_tp_mem_dereg(efps_tp_mr_t *mr);
/* Makes the key with which the peer of ep may write into mr (registered with
 * EFPS_TP_ACCESS_REMOTE_WRITE, on ep's context), and writes it to *rkey_p.
 * The key is bound to ep: a write that arrives on any other connection with
 * it is refused by the transport (tcp: the receiver checks the key against
 * the endpoint the write arrives on; verbs: a type-2 memory window bound to
 * ep's queue pair, so the adapter refuses any other QP). Such a write fails
 * only the connection it came on: its writer sees EFPS_ERR_PEER, this side
 * logs the intruder's address and reports a DISCONNECT (EFPS_ERR_PROTO on
 * tcp) for that endpoint; ep and every other endpoint go on. Call it after
 * the peer is authenticated, then send the key (efps_tp_rkey_pack). Exposing
 * the same region to the same endpoint again returns the same key. The key
 * is good until ep is destroyed or mr deregistered. ep must be connected;
 * on verbs this waits (up to the context's timeout_ms) for the bind.
 * Errors: EFPS_ERR_INVALID (no remote write access, another context),
 * EFPS_ERR_PEER (ep is down), EFPS_ERR_TIMEOUT, EFPS_ERR_NOMEM,
 * EFPS_ERR_UNSUPPORTED (verbs: the device has no type-2 memory windows),
 * EFPS_ERR_TRANSPORT. */
EFPS_API efps_status_t efps_tp_mem_expose(efps_tp_ep_t *ep, efps_tp_mr_t *mr,
                                          efps_tp_rkey_t *rkey_p);
EFPS_API void *efps_tp_mr_addr(const efps_tp_mr_t *mr);
EFPS_API size_t efps_tp_mr_length(const efps_tp_mr_t *mr);

/* Serialises to / from EFPS_TP_RKEY_PACKED bytes, little-endian, so a key can
 * travel in a message between machines of any byte order. unpack: EFPS_ERR_CORRUPT
 * if the bytes do not describe a key of a known transport. */
EFPS_API void efps_tp_rkey_pack(const efps_tp_rkey_t *rkey, uint8_t out[EFPS_TP_RKEY_PACKED]);
EFPS_API efps_status_t efps_tp_rkey_unpack(const uint8_t in[EFPS_TP_RKEY_PACKED],
                                           efps_tp_rkey_t *rkey_p);

/* ---- connections ---------------------------------------------------------- */
typedef struct {
    const void *priv;  /* connect: sent with the request; accept: the reply */
    size_t priv_len;   /* <= EFPS_TP_PRIV_MAX */
    const char *label; /* who the peer is ("server 1"), used in every message
                          about this endpoint; NULL: just its address */
    void *context;     /* the application's; efps_tp_ep_context returns it */
    int timeout_ms;    /* connect only: <= 0 means the context's timeout_ms */
} efps_tp_conn_param_t;

/* Listens on "host:port" (IPv4 "1.2.3.4:7000", IPv6 "[::1]:7000", "*:7000"
 * or ":7000" for every address; port 0 picks a free one).
 * Errors: EFPS_ERR_INVALID (address), EFPS_ERR_SYSTEM (bind/listen), NOMEM. */
EFPS_API efps_status_t efps_tp_listen(efps_tp_ctx_t *ctx, const char *address,
                                      efps_tp_listener_t **listener_p);
/* Stops listening; requests not yet handed out are refused. NULL is a no-op. */
EFPS_API void efps_tp_listener_destroy(efps_tp_listener_t *listener);
/* The port actually bound (useful after port 0). */
EFPS_API uint16_t efps_tp_listener_port(const efps_tp_listener_t *listener);

/* Waits up to timeout_ms (0: just look, < 0: forever) for a connection
 * request whose private data has arrived. The caller must then accept or
 * reject it. Errors: EFPS_ERR_TIMEOUT (none came), EFPS_ERR_STATE (the
 * listener is being destroyed). */
EFPS_API efps_status_t efps_tp_get_request(efps_tp_listener_t *listener, int timeout_ms,
                                           efps_tp_conn_req_t **req_p);
/* The requester's private data (valid until accept/reject) and address. */
EFPS_API const void *efps_tp_req_priv(const efps_tp_conn_req_t *req, size_t *len_p);
EFPS_API const char *efps_tp_req_peer(const efps_tp_conn_req_t *req);
/* Accepts: param->priv is sent back to the connector. Consumes req (also on
 * error). The endpoint is usable as soon as this returns.
 * Errors: EFPS_ERR_INVALID, EFPS_ERR_PEER (the requester went away), NOMEM. */
EFPS_API efps_status_t efps_tp_accept(efps_tp_conn_req_t *req, const efps_tp_conn_param_t *param,
                                      efps_tp_ep_t **ep_p);
/* Refuses and consumes req; the connector's efps_tp_connect fails. */
EFPS_API void efps_tp_reject(efps_tp_conn_req_t *req);

/* Connects to "host:port", sends param->priv and waits (up to
 * param->timeout_ms) until the peer accepted. The acceptor's reply is then
 * available from efps_tp_ep_peer_priv.
 * Errors: EFPS_ERR_INVALID, EFPS_ERR_TIMEOUT, EFPS_ERR_PEER (refused,
 * rejected, reset), EFPS_ERR_PROTO (not an efps peer), NOMEM. */
EFPS_API efps_status_t efps_tp_connect(efps_tp_ctx_t *ctx, const char *address,
                                       const efps_tp_conn_param_t *param, efps_tp_ep_t **ep_p);
/* Disconnects (the peer sees a clean EFPS_TP_CQE_DISCONNECT if nothing is
 * pending) and frees the endpoint; its completions still queued are dropped,
 * its writes not yet sent are discarded. NULL is a no-op. */
EFPS_API void efps_tp_ep_destroy(efps_tp_ep_t *ep);
/* "label (address:port)", or "address:port" without a label. */
EFPS_API const char *efps_tp_ep_name(const efps_tp_ep_t *ep);
EFPS_API void *efps_tp_ep_context(const efps_tp_ep_t *ep);
/* The private data the peer sent at connection time (the accept reply on
 * the connecting side, the request on the accepting side). */
EFPS_API const void *efps_tp_ep_peer_priv(const efps_tp_ep_t *ep, size_t *len_p);
/* EFPS_OK while connected, else why it went down. */
EFPS_API efps_status_t efps_tp_ep_status(const efps_tp_ep_t *ep);

/* ---- data transfer -------------------------------------------------------- */
/* Writes length bytes (0 allowed) of local at local_offset into the peer's
 * region remote at remote_offset, then raises EFPS_TP_CQE_RECV with imm at
 * the peer. Asynchronous: the local bytes must stay unchanged until this
 * write's EFPS_TP_CQE_WRITE (with user_context) is polled. On tcp the bytes
 * go from the region to the socket and from the socket into the peer's
 * region, with no copy in between.
 * Errors: EFPS_ERR_NO_RESOURCE (sq_depth writes outstanding: poll and retry),
 * EFPS_ERR_PEER (endpoint down), EFPS_ERR_INVALID (a range outside its
 * region, a key of another transport or one without remote write access,
 * length > EFPS_TP_WRITE_MAX, a region of another context), EFPS_ERR_NOMEM
 * (tcp: an endpoint's first write reserves room for its completions). */
EFPS_API efps_status_t efps_tp_write_imm(efps_tp_ep_t *ep, efps_tp_mr_t *local, size_t local_offset,
                                         size_t length, const efps_tp_rkey_t *remote,
                                         uint64_t remote_offset, uint32_t imm,
                                         uint64_t user_context);

/* Sends a control message (1..EFPS_TP_MSG_MAX bytes, copied: buf is free
 * again on return). Ordered with the writes of the same endpoint.
 * Errors: EFPS_ERR_NO_RESOURCE (EFPS_TP_MSG_DEPTH still being sent),
 * EFPS_ERR_PEER, EFPS_ERR_INVALID. */
EFPS_API efps_status_t efps_tp_msg_send(efps_tp_ep_t *ep, const void *buf, size_t len);
/* Takes the next message of the endpoint, waiting up to timeout_ms (0: just
 * look, < 0: forever). The peer may have at most EFPS_TP_MSG_DEPTH messages
 * waiting here; more are held back by flow control until these are taken.
 * Errors: EFPS_ERR_TIMEOUT, EFPS_ERR_PEER (down, and nothing left to take),
 * EFPS_ERR_INVALID (cap smaller than the message; it stays queued and
 * *len_p, if len_p is not NULL, says how big it is). */
EFPS_API efps_status_t efps_tp_msg_recv(efps_tp_ep_t *ep, void *buf, size_t cap, size_t *len_p,
                                        int timeout_ms);

/* ---- completions ---------------------------------------------------------- */
typedef enum {
    EFPS_TP_CQE_WRITE = 1,      /* a local write_imm finished: context, length, status */
    EFPS_TP_CQE_RECV = 2,       /* a peer's write landed here: imm, length */
    EFPS_TP_CQE_DISCONNECT = 3, /* the endpoint is down: status EFPS_OK if the peer
                                   closed it cleanly, else why (EFPS_ERR_PEER,
                                   EFPS_ERR_PROTO, EFPS_ERR_TIMEOUT...) */
} efps_tp_cqe_type_t;

/* A completion. It does not say which region or offset a RECV hit (verbs
 * does not report it either): encode what the receiver needs in imm. */
typedef struct {
    efps_tp_cqe_type_t type;
    efps_status_t status;
    efps_tp_ep_t *ep; /* valid until the application destroys it */
    uint64_t context; /* WRITE: the write's user_context */
    uint32_t imm;     /* RECV */
    uint32_t length;  /* WRITE, RECV: bytes written */
} efps_tp_cqe_t;

/* Takes up to max completions of every endpoint of ctx, waiting up to
 * timeout_ms (0: just look, < 0: forever) for the first one; *count_p is
 * how many (0 on timeout, which is not an error). Polling a WRITE gives its
 * send-queue slot back; polling a RECV lets the peer send one more. */
EFPS_API efps_status_t efps_tp_poll(efps_tp_ctx_t *ctx, efps_tp_cqe_t *cqes, int max,
                                    int timeout_ms, int *count_p);
/* "WRITE", "RECV", "DISCONNECT". */
EFPS_API const char *efps_tp_cqe_type_name(efps_tp_cqe_type_t type);

/* ---- what the machine offers (efps-info) ----------------------------------
 * Discovery without opening a transport, as ibv_devinfo and rdma_cm see it.
 * A library built without verbs returns EFPS_ERR_UNSUPPORTED from each. */
typedef struct {
    char device[64];        /* "rxe0", "mlx5_0" */
    uint8_t port;           /* 1.. */
    const char *state;      /* "active", "down", "init", "armed", "active defer" */
    const char *link_layer; /* "Ethernet" (RoCE), "InfiniBand" */
    uint32_t max_msg;       /* largest message of the port, bytes */
    uint32_t gids;          /* valid entries of its GID table */
} efps_tp_port_info_t;

/* Every port of every RDMA device, up to cap of them, into ports; *n_p is
 * how many there are (may exceed cap). EFPS_OK with *n_p 0: no device. */
EFPS_API efps_status_t efps_tp_ports(efps_tp_port_info_t *ports, size_t cap, size_t *n_p);

typedef struct {
    uint32_t index;   /* what EFPS_IB_GID takes */
    char gid[48];     /* IPv6 notation: "::ffff:10.23.0.1", "fe80::..." */
    const char *type; /* "IB", "RoCE v1", "RoCE v2" */
    char netdev[32];  /* the network interface it belongs to, "" if none */
} efps_tp_gid_info_t;

/* The valid GID entries of device's port, up to cap, into gids; *n_p is how
 * many there are. EFPS_ERR_INVALID: no such device or port. */
EFPS_API efps_status_t efps_tp_port_gids(const char *device, uint8_t port, efps_tp_gid_info_t *gids,
                                         size_t cap, size_t *n_p);

/* Resolves "host:port" with rdma_cm as a verbs connect would (within
 * timeout_ms), and names the RDMA device (into device, cap bytes) and port
 * that would carry the connection. EFPS_ERR_INVALID (address malformed or
 * unknown), EFPS_ERR_UNSUPPORTED (no RDMA device reaches it: the reason
 * logged), EFPS_ERR_TIMEOUT, EFPS_ERR_SYSTEM. */
EFPS_API efps_status_t efps_tp_resolve(const char *address, int timeout_ms, char *device,
                                       size_t cap, uint8_t *port_p);

#ifdef __cplusplus
}
#endif
#endif
