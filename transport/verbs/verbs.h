/* The verbs transport's insides, shared by its files. They form a chain:
 * each calls only the ones above it in this list (the endpoint's life cycle
 * is in transport/base.c; tests/build/check_file_graph.py checks the chain):
 *   verbs_err.c   verbs' error conventions converted in one place
 *   verbs_dev.c   probe, device / port / GID choice, hwloc placement
 *   verbs_wake.c  kicks, heartbeat, CQ size, the QP-number table, disconnect / reject
 *   verbs_tx.c    credits, the pending queue, posting, send completions
 *   verbs_mr.c    ibv_reg_mr / dereg, keys bound to one QP (type-2 memory windows)
 *   verbs_rx.c    the shared receive queue and its buffers, arrivals, draining the CQ
 *   verbs_conn.c  rdma_cm: listen / accept / connect
 *   verbs_close.c failure, events of live connections, teardown
 *   verbs_ctx.c   context, progress thread, timers, credit given back, the operations table
 *
 * Resources. Per context: one protection domain, one completion queue (with
 * its completion channel) for every send and receive, one shared receive
 * queue (SRQ) of VERBS_RX_BUF-byte buffers, one rdma_cm event channel. Per
 * endpoint: an RC queue pair on that CQ and SRQ.
 *
 * Credits, so that nothing overflows and nobody waits on receive-not-ready:
 * - writes: a peer may have at most `window` (the receiver's rq_depth) writes
 *   whose RECV the receiving application has not polled; the receiver
 *   returns credit in CREDIT messages as its application polls them, a
 *   quarter of the window at a time (and whatever is owed with heartbeats).
 * - messages: at most EFPS_TP_MSG_DEPTH messages not yet taken with
 *   msg_recv; returned the same way when they are taken.
 * - receive buffers: every endpoint adds its worst case (window, message
 *   chunks, control messages) to the SRQ, so the SRQ never runs dry while
 *   credits hold (RNR retry stays on as a safety net, never a mechanism).
 * - send queue: the application's sq_depth writes, EFPS_TP_MSG_DEPTH
 *   messages and at most one of each control message; every send is
 *   signalled, so the ring of posted sends is freed in order as they complete.
 * - the completion queue is sized for every endpoint's sends and receive
 *   buffers together (resized as endpoints come and go).
 * Operations that lack a credit wait, in order, in the endpoint's pending
 * queue; nothing behind them overtakes them.
 *
 * Threads. One progress thread per context polls the CQ (busy for a moment,
 * then sleeping on the completion channel), handles rdma_cm events of
 * established connections and listeners, runs timers (heartbeats, silent
 * peers) and is the only one that destroys queue pairs and cm ids after a
 * connection exists. Application threads post under ctx->lock; the thread
 * polls the CQ under cq_lock only, then takes ctx->lock to process. */
#ifndef EFPS_VERBS_H
#define EFPS_VERBS_H

#include "transport_int.h"
#include "verbs_wire.h"

#include <infiniband/verbs.h>
#include <pthread.h>
#include <rdma/rdma_cma.h>

typedef struct verbs_ctx verbs_ctx_t;

/* Receive buffers per endpoint beyond writes and message chunks: HELLO, BYE,
 * one CREDIT, and one spare. Send slots for control messages: the same; the
 * spare takes one memory-window bind at a time. */
#define VERBS_CTRL_DEPTH 4

typedef struct verbs_mr {
    efps_tp_mr_t base;
    struct ibv_mr *mr;
    unsigned tx_refs;             /* writes from it, queued or posted and not completed */
    struct verbs_mr *next, *prev; /* ctx->mrs: close() frees what is left */
} verbs_mr_t;

/* One endpoint's key to a region (efps_tp_mem_expose): a type-2 memory window
 * on the region, bound to the endpoint's queue pair by a BIND_MW work request,
 * so the adapter refuses its rkey on any other QP. */
typedef struct verbs_expo {
    struct verbs_ep *ep;
    verbs_mr_t *mr;
    struct ibv_mw *mw; /* NULL: the device has no type-2 windows (the MR's rkey) */
    efps_tp_rkey_t rkey;
    int state;               /* 0: the bind is posted, 1: bound, -1: the bind failed */
    struct verbs_expo *next; /* ctx->expos */
} verbs_expo_t;

/* What one posted send was, so its completion can be reported. */
typedef enum {
    VTX_WRITE_PART, /* a piece of a long write: no completion of its own */
    VTX_WRITE,      /* a write's last (or only) work request */
    VTX_MSG,        /* a message chunk */
    VTX_CREDIT,
    VTX_HELLO,
    VTX_BYE,
    VTX_LEN,  /* the length of a write split into several requests */
    VTX_BIND, /* a memory window bound to this QP (efps_tp_mem_expose) */
} verbs_tx_kind_t;

typedef struct {
    uint8_t kind;       /* verbs_tx_kind_t */
    bool last;          /* VTX_MSG: the message's last chunk */
    uint32_t len;       /* VTX_WRITE: the whole write's length */
    uint64_t context;   /* VTX_WRITE: the application's */
    verbs_mr_t *mr;     /* VTX_WRITE*: the source region */
    verbs_expo_t *expo; /* VTX_BIND */
} verbs_posted_t;

/* A write or message waiting for credit or send-queue room, in order. */
typedef struct {
    uint8_t kind; /* VTX_WRITE or VTX_MSG */
    uint32_t len;
    uint32_t done; /* bytes already posted (a long write goes in pieces) */
    bool len_sent; /* a split write's LEN is posted */
    verbs_mr_t *mr;
    size_t local_offset;
    uint64_t remote_addr;
    uint32_t rkey;
    uint32_t imm;
    uint64_t context;
    uint32_t slot; /* VTX_MSG: index of its copy in the endpoint's tx buffer */
} verbs_op_t;

typedef enum {
    VCLOSE_NONE,
    VCLOSE_BYE,   /* waiting for our BYE to complete */
    VCLOSE_FLUSH, /* disconnected, waiting for posted sends to flush */
} verbs_close_t;

struct verbs_listener;

typedef struct verbs_ep {
    efps_tp_ep_t base;
    efps_tp_conn_req_t req; /* the request view, while one */
    verbs_ctx_t *ctx;
    struct rdma_cm_id *id;
    struct ibv_qp *qp;
    uint32_t qp_num;
    efps_status_t disc_status; /* what the DISCONNECT completion says */
    char addr[EFPS_TP_ADDR_MAX];
    struct verbs_ep *hnext;          /* ctx->qp_hash chain */
    struct verbs_listener *listener; /* EFPS_TP_EP_QUEUED only */
    bool passive, established, hashed, reserved;
    bool peer_known; /* we know the peer's window (accept reply / HELLO) */
    bool want_destroy, disconnected, disc_pending;
    bool internal; /* freed by the progress thread: the application never saw it */
    verbs_close_t closing;
    uint64_t deadline_ms; /* queued request / establishment / closing step */
    uint32_t hb_ms, peer_timeout_ms;
    uint64_t last_rx_ms, last_tx_ms;

    /* send side */
    uint32_t wr_credits;             /* writes the peer takes now */
    uint32_t msg_credits;            /* messages the peer takes now */
    uint32_t peer_window;            /* the peer's rq_depth */
    uint32_t owed_writes, owed_msgs; /* credit to return */
    bool credit_inflight, bye_done;
    bool bind_inflight; /* a BIND_MW uses the spare control send slot */
    verbs_op_t *pend;
    uint32_t pend_cap, pend_head, pend_count;
    verbs_posted_t *posted; /* ring, indexed by work request id % sq_cap */
    uint32_t sq_cap;        /* max_send_wr */
    uint64_t post_seq, done_seq;
    uint32_t msg_tx_inflight, msg_tx_seq;
    uint8_t *txbuf; /* EFPS_TP_MSG_DEPTH message slots, the HELLO, LEN payloads */
    struct ibv_mr *txbuf_mr;
    uint8_t local_priv[VERBS_CM_REP_PRIV];

    /* receive side */
    uint32_t rx_window;                /* receive buffers this endpoint added to the SRQ */
    uint32_t msg_rx_got, msg_rx_total; /* the message being put together from chunks */
    uint32_t next_write_len;           /* from LEN: the length of the next write, 0: none */
} verbs_ep_t;

typedef struct verbs_listener {
    efps_tp_listener_t base;
    struct rdma_cm_id *id;
    struct verbs_listener *next;
} verbs_listener_t;

/* Receive buffers live in registered slabs; buffer i is slab i / VERBS_SLAB. */
#define VERBS_SLAB 256u
typedef struct {
    uint8_t *mem;
    struct ibv_mr *mr;
} verbs_slab_t;

#define VERBS_QP_HASH 256u
/* Receive work requests carry this bit in wr_id (a failed completion does
 * not say its opcode); sends carry the endpoint's sequence number. */
#define VERBS_WR_RECV (1ull << 63)

struct verbs_ctx {
    efps_tp_ctx_t base; /* the lock, its conditions, the completion queue */

    /* the device */
    struct ibv_context *verbs; /* rdma_cm's context of the device */
    char dev_name[IBV_SYSFS_NAME_MAX];
    uint8_t port;
    int gid_index;    /* EFPS_IB_GID, -1: whatever rdma_cm picks for the address */
    uint32_t max_msg; /* the port's max_msg_sz */
    struct ibv_device_attr dev_attr;
    struct ibv_pd *pd;
    struct ibv_comp_channel *channel;
    struct ibv_cq *hw_cq;
    pthread_mutex_t cq_lock; /* ibv_poll_cq / ibv_resize_cq / notify */
    int cq_cap, cq_need;
    unsigned cq_events; /* completion events not yet acked */
    struct ibv_srq *srq;
    uint32_t srq_cap, rx_target, rx_posted;
    verbs_slab_t *slabs;
    uint32_t n_slabs;
    uint32_t *rx_free; /* stack of free buffer indices */
    uint32_t n_free;
    struct rdma_event_channel *cm;

    /* the thread */
    int epfd, evfd;
    pthread_t thread;
    bool stop, kicked, teardown_dirty;
    void *cpuset; /* hwloc_cpuset_t to pin the thread to, NULL: none */
    void *topology;
    uint32_t tick_ms;

    verbs_ep_t *qp_hash[VERBS_QP_HASH];
    verbs_listener_t *listeners;
    verbs_mr_t *mrs;
    verbs_expo_t *expos;
    bool mw_type2; /* the device binds type-2 memory windows to a QP */
};

#define VERBS_CTX(c)    ((verbs_ctx_t *)(c))
#define VERBS_EP(e)     ((verbs_ep_t *)(e))
#define VERBS_REQ_EP(r) ((verbs_ep_t *)((char *)(r)-offsetof(verbs_ep_t, req)))

/* ---- verbs_err.c: one place for verbs' error conventions ------------------ */
/* errno of a call that returned ret: positive errno (ibv_post_*, ibv_modify_*,
 * ibv_dereg_mr...), -1 with errno (rdma_*), or a negative errno. */
int efps__verbs_errno(int ret);
/* errno of a call that returned NULL (0 read as ENOMEM: nothing said why). */
int efps__verbs_ptr_errno(void);
efps_status_t efps__verbs_errno_status(int err);
/* The status a failed work completion stands for. */
efps_status_t efps__verbs_wc_status(enum ibv_wc_status status);
/* "connection refused (nothing listens there)" etc. for a REJECTED event. */
const char *efps__verbs_reject_reason(int status);

/* ---- verbs_dev.c ------------------------------------------------------------ */
efps_status_t efps__verbs_probe(const efps_tp_attr_t *attr);
/* "IB", "RoCE v1", "RoCE v2" (verbs_dev.c). */
const char *efps__verbs_gid_type_name(enum ibv_gid_type type);
/* Picks the device (attr->device or the first with an active port), its port
 * and GID setting, and the progress thread's cpuset. */
efps_status_t efps__verbs_pick_device(verbs_ctx_t *ctx, const efps_tp_attr_t *attr);
/* Checks that id (bound or resolved) is on our device and GID; logs what
 * rdma_cm chose. what names the connection for messages. */
efps_status_t efps__verbs_check_id(verbs_ctx_t *ctx, struct rdma_cm_id *id, const char *what);
/* Progress thread: pins itself where ctx->cpuset says. */
void efps__verbs_pin_thread(verbs_ctx_t *ctx);
void efps__verbs_free_placement(verbs_ctx_t *ctx);

/* ---- verbs_ctx.c (lock held unless said) ----------------------------------- */
void efps__verbs_kick(verbs_ctx_t *ctx);
/* Heartbeat period: a quarter of the shorter of both sides' timeouts. */
void efps__verbs_set_heartbeat(verbs_ep_t *ep);
/* The CQ can take `more` more entries (negative: fewer are needed). */
efps_status_t efps__verbs_cq_reserve(verbs_ctx_t *ctx, int more);
/* The ep whose queue pair has this number, or NULL. */
verbs_ep_t *efps__verbs_ep_by_qp(verbs_ctx_t *ctx, uint32_t qp_num);
void efps__verbs_hash_add(verbs_ctx_t *ctx, verbs_ep_t *ep);
void efps__verbs_hash_del(verbs_ctx_t *ctx, verbs_ep_t *ep);
/* Progress thread: polls the CQ once and handles what it found (takes the
 * locks itself). Returns how many completions. */
int efps__verbs_progress_cq(verbs_ctx_t *ctx);

/* ---- verbs_mr.c ------------------------------------------------------------- */
efps_status_t efps__verbs_mem_reg(efps_tp_ctx_t *ctx, void *addr, size_t length, unsigned access,
                                  efps_tp_mr_t **mr_p);
efps_status_t efps__verbs_mem_dereg(efps_tp_mr_t *mr);
efps_status_t efps__verbs_mem_expose(efps_tp_ep_t *ep, efps_tp_mr_t *mr, efps_tp_rkey_t *rkey_p);
/* Lock held: deallocates the windows of ep (before its QP goes) or of mr
 * (before it is deregistered); NULL matches nothing. */
void efps__verbs_unexpose(verbs_ctx_t *ctx, const struct verbs_ep *ep, const verbs_mr_t *mr);

/* ---- verbs_rx.c ------------------------------------------------------------- */
/* Adds (or with a negative n removes) an endpoint's share of SRQ buffers. */
efps_status_t efps__verbs_rx_reserve(verbs_ctx_t *ctx, int n);
/* Posts receive buffers up to the target. */
void efps__verbs_rx_refill(verbs_ctx_t *ctx);
/* A receive completion (lock held); its buffer goes back to the pool. */
void efps__verbs_rx_complete(verbs_ctx_t *ctx, const struct ibv_wc *wc);
void efps__verbs_rx_free(verbs_ctx_t *ctx);

/* ---- verbs_tx.c (lock held) ------------------------------------------------- */
efps_status_t efps__verbs_write_imm(efps_tp_ep_t *ep, efps_tp_mr_t *local, size_t local_offset,
                                    size_t length, const efps_tp_rkey_t *remote,
                                    uint64_t remote_offset, uint32_t imm, uint64_t user_context);
efps_status_t efps__verbs_msg_send(efps_tp_ep_t *ep, const void *buf, size_t len);
/* Posts what the pending queue's head has credit and room for, in order. */
void efps__verbs_tx_progress(verbs_ep_t *ep);
/* Returns owed credit (or, with ping, sends a heartbeat) if no CREDIT is in flight. */
void efps__verbs_send_credit(verbs_ep_t *ep, bool ping);
efps_status_t efps__verbs_send_hello(verbs_ep_t *ep);
efps_status_t efps__verbs_send_bye(verbs_ep_t *ep);
/* Binds x's window to ep's QP (the spare control send slot). */
efps_status_t efps__verbs_post_bind(verbs_ep_t *ep, verbs_expo_t *x);
/* A send completion of ep. */
void efps__verbs_tx_complete(verbs_ep_t *ep, const struct ibv_wc *wc);
/* Completes every queued (not posted) operation with EFPS_ERR_PEER. */
void efps__verbs_tx_flush_pending(verbs_ep_t *ep, bool report);
/* Forgets posted sends whose flush never came (reports their writes). */
void efps__verbs_tx_abandon_posted(verbs_ep_t *ep, bool report);
/* The endpoint's queues for sending and receiving messages. */
efps_status_t efps__verbs_ep_alloc_queues(verbs_ep_t *ep);
void efps__verbs_ep_free_queues(verbs_ep_t *ep);

/* ---- verbs_conn.c ----------------------------------------------------------- */
void efps__verbs_ep_free(verbs_ep_t *ep);
/* Lock held: off ctx->eps. */
/* Lock held: gives back the CQ, SRQ and completion-ring shares of its QP. */
void efps__verbs_ep_release(verbs_ep_t *ep);
/* Progress thread, lock held: a CONNECT_REQUEST for a new id on listener l. */
void efps__verbs_on_request(verbs_ctx_t *ctx, verbs_listener_t *l, struct rdma_cm_id *id,
                            const uint8_t *priv, size_t plen);
efps_status_t efps__verbs_listen(efps_tp_ctx_t *ctx, const struct sockaddr *addr, socklen_t addrlen,
                                 efps_tp_listener_t **listener_p);
/* ops->request_taken (lock held). */
void efps__verbs_request_taken(efps_tp_conn_req_t *req);
efps_status_t efps__verbs_accept(efps_tp_conn_req_t *req, const efps_tp_conn_param_t *param,
                                 efps_tp_ep_t **ep_p);
efps_status_t efps__verbs_connect(efps_tp_ctx_t *ctx, const struct sockaddr *addr,
                                  socklen_t addrlen, const efps_tp_conn_param_t *param,
                                  efps_tp_ep_t **ep_p);
/* ops->ep_teardown: the progress thread tears ep down. */
void efps__verbs_ep_teardown_start(efps_tp_ep_t *ep);
/* ---- verbs_close.c ---------------------------------------------------------- */
/* Refuses a request with our marker (the connector reads "rejected by the peer"). */
void efps__verbs_reject_id(struct rdma_cm_id *id);
/* Lock held: polls the CQ dry and handles what it held. */
void efps__verbs_drain_cq(verbs_ctx_t *ctx);
/* Lock held: rdma_disconnect once (the QP goes to error, the peer is told). */
void efps__verbs_disconnect(verbs_ep_t *ep);
/* Progress thread, no lock held: reads and handles every waiting cm event. */
void efps__verbs_cm_events(verbs_ctx_t *ctx);
/* Progress thread, lock held: destroys, rejects and closes what the
 * application asked for, and moves closing endpoints along. */
void efps__verbs_run_teardowns(verbs_ctx_t *ctx);
/* Progress thread, lock held: deadlines of requests, establishment. */
void efps__verbs_check_timers(verbs_ctx_t *ctx, uint64_t now);
/* ops->ep_failed (through efps__tp_ep_fail, lock held): the endpoint is
 * down. Logs "<name>: <why>; connection closed" at level, disconnects,
 * flushes its writes with EFPS_ERR_PEER and reports one DISCONNECT (after
 * the flushed writes). */
void efps__verbs_ep_failed(efps_tp_ep_t *ep, efps_log_level_t level, efps_status_t status,
                           const char *why);
/* Lock held: every posted send of a failed endpoint is accounted for: the
 * DISCONNECT it owes can go out. */
void efps__verbs_ep_flushed(verbs_ep_t *ep);
/* close(): frees whatever the application left (thread stopped). */
void efps__verbs_conn_free_all(verbs_ctx_t *ctx);

extern const struct efps_transport_ops efps__verbs_ops;

#endif
