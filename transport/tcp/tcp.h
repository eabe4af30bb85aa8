/* The tcp transport's insides, shared by its files. They form a chain: each
 * calls only the ones above it in this list (the endpoint's life cycle is in
 * transport/base.c; tests/build/check_file_graph.py checks the chain):
 *   tcp_hdr.c   the frame header decoded and checked on its own
 *   tcp_wake.c  kicks to the progress thread, epoll interest, heartbeat, CQ share
 *   tcp_mr.c    region table (ids, access), reg / dereg, per-endpoint keys
 *   tcp_tx.c    write_imm, msg_send, sending queued frames
 *   tcp_rx.c    the receive state machine, header validation, receive credit
 *   tcp_conn.c  listen / accept / connect / teardown, endpoint failure
 *   tcp_ctx.c   context, progress thread, timers, the operations table
 *
 * Threads. One progress thread per context does all socket I/O after a
 * connection exists and is the only one that closes sockets or changes epoll
 * interest (except adding a freshly connected socket). Application threads
 * queue work under ctx->lock and "kick" the thread through an eventfd. The
 * thread never holds the lock during a send or receive; what the two sides
 * share is read and written under the lock only. */
#ifndef EFPS_TCP_H
#define EFPS_TCP_H

#include "tcp_wire.h"
#include "transport_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/uio.h>

typedef struct tcp_ctx tcp_ctx_t;

/* What an epoll event's data.ptr points at (the first member of each). */
typedef enum { TCP_POLL_EVENTFD, TCP_POLL_LISTENER, TCP_POLL_EP } tcp_poll_kind_t;

/* One endpoint's key to a region (efps_tp_mem_expose): a write into the
 * region is taken only with a secret of one of these, and only from the
 * endpoint that secret was made for. */
typedef struct tcp_expo {
    struct tcp_ep *ep;
    uint64_t secret; /* random; rkey.base */
    struct tcp_expo *next;
} tcp_expo_t;

typedef struct {
    efps_tp_mr_t base;
    uint32_t id;       /* index + 1 in ctx->regions; rkey.key */
    tcp_expo_t *expos; /* the keys handed out for it, one per endpoint */
    unsigned rx_busy;  /* writes landing in it right now */
    unsigned tx_refs;  /* writes posted from it, not yet handed to the kernel */
    bool dead;         /* deregistered while a write was landing */
} tcp_mr_t;

typedef enum { TCP_TX_WRITE, TCP_TX_MSG, TCP_TX_CTRL } tcp_tx_kind_t;

/* One queued frame: a header, then payload straight from where it lives. */
typedef struct {
    uint8_t hdr[TCP_HDR_LEN];
    const uint8_t *payload;
    uint32_t len;
    uint8_t kind;     /* tcp_tx_kind_t */
    uint64_t context; /* WRITE: the user's */
    tcp_mr_t *mr;     /* WRITE: the source region */
} tcp_tx_t;

typedef enum {
    TCP_RX_HEADER,       /* reading a header */
    TCP_RX_HEADER_READY, /* a whole header, not yet started (maybe no credit) */
    TCP_RX_PAYLOAD,      /* reading a payload into rx_dst */
} tcp_rx_state_t;

/* What an endpoint reserved room in the completion queue for: reserved when
 * first needed, so a connection that never gets a key or writes (a stranger
 * being refused) holds one entry, not sq_depth + rq_depth. */
typedef enum {
    TCP_CQ_DISCONNECT = 1, /* its one DISCONNECT: at accept / connect */
    TCP_CQ_WRITES = 2,     /* sq_depth WRITE completions: its first write_imm */
    TCP_CQ_RECVS = 4,      /* rq_depth RECV completions: the first key exposed to it */
} tcp_cq_use_t;

#define TCP_KICK_TX      1u /* frames queued: send */
#define TCP_KICK_RX      2u /* credit given back while blocked: receive again */
#define TCP_KICK_DESTROY 4u /* the application destroys it */

struct tcp_listener;

typedef struct tcp_ep {
    efps_tp_ep_t base;
    efps_tp_conn_req_t req;    /* the request view, while one */
    tcp_poll_kind_t poll_kind; /* TCP_POLL_EP; epoll data.ptr points here */
    tcp_ctx_t *ctx;
    int fd; /* -1 once closed */
    char addr[EFPS_TP_ADDR_MAX];
    struct tcp_listener *listener; /* HANDSHAKE / QUEUED only */
    struct tcp_ep *zombie_next;    /* ctx->zombies */
    uint64_t deadline_ms;          /* HANDSHAKE: CONNECT must arrive by then */
    uint32_t hb_ms;                /* send a PING after this much idle time */
    uint32_t peer_timeout_ms;      /* what the peer announced (0: nothing) */
    uint32_t events;               /* epoll interest now set */
    unsigned kick;                 /* TCP_KICK_*; nonzero: on ctx->kicks */
    struct tcp_ep *kick_next;
    bool inbound;     /* came in through a listener (a stranger until given a key) */
    unsigned cq_uses; /* tcp_cq_use_t: what its completion-queue share covers */
    uint32_t cq_held; /* entries it reserved in ctx->base.cq */
    _Atomic uint64_t last_rx_ms, last_tx_ms;

    /* send side */
    tcp_tx_t *txq;
    uint32_t tx_cap, tx_head, tx_count;
    size_t tx_done; /* bytes of the head frame already sent */
    uint32_t msg_tx_inflight, msg_tx_seq;
    uint8_t *msg_tx_slot[EFPS_TP_MSG_DEPTH]; /* EFPS_TP_MSG_MAX each, made on first use */
    uint8_t local_priv[EFPS_TP_PRIV_MAX];

    /* receive side (touched by the progress thread only, except credits) */
    tcp_rx_state_t rx_state;
    uint8_t rx_hdr_buf[TCP_HDR_LEN];
    size_t rx_hdr_got;
    tcp_hdr_t rx_hdr;
    uint8_t *rx_dst;
    size_t rx_want, rx_got;
    uint64_t rx_total;   /* bytes ever received (telling probes from peers) */
    tcp_mr_t *rx_region; /* WRITE: holds rx_busy */
    bool rx_blocked;     /* no credit: not reading the socket */
} tcp_ep_t;

typedef struct tcp_listener {
    efps_tp_listener_t base;
    tcp_poll_kind_t poll_kind;
    int fd;
    bool paused; /* out of descriptors: not accepting until the next tick */
    struct tcp_listener *next;
} tcp_listener_t;

struct tcp_ctx {
    efps_tp_ctx_t base; /* the lock, its conditions, the completion queue */
    int epfd, evfd;
    tcp_poll_kind_t evfd_kind;
    pthread_t thread;
    bool stop, kicked, regions_dead;
    tcp_ep_t *kicks;    /* endpoints with work for the thread */
    tcp_ep_t *zombies;  /* internal endpoints to free after this round */
    unsigned n_pending; /* HANDSHAKE + QUEUED */
    tcp_listener_t *listeners;
    tcp_mr_t **regions;
    uint32_t n_regions;
    uint32_t tick_ms; /* timer period: half the shortest heartbeat */
    /* Failures of strangers are logged at most once a second (a thousand
     * idle connections closing must not give a thousand lines). */
    uint64_t stranger_log_ms;
    unsigned stranger_quiet; /* failures not logged since then */
};

#define TCP_CTX(c)    ((tcp_ctx_t *)(c))
#define TCP_EP(e)     ((tcp_ep_t *)(e))
#define TCP_REQ_EP(r) ((tcp_ep_t *)((char *)(r)-offsetof(tcp_ep_t, req)))

/* Handshakes pending at once before new sockets are refused. */
#define TCP_MAX_PENDING 1024

/* ---- tcp_ctx.c (lock held unless said) ----------------------------------- */
void efps__tcp_kick(tcp_ctx_t *ctx, tcp_ep_t *ep, unsigned what);
void efps__tcp_kick_ctx(tcp_ctx_t *ctx);
/* Sets the epoll interest of ep's socket to events (EPOLLIN, EPOLLOUT). */
void efps__tcp_set_events(tcp_ep_t *ep, uint32_t events);
/* Heartbeat period of ep: a quarter of the shorter of both sides' timeouts. */
void efps__tcp_set_heartbeat(tcp_ep_t *ep);

/* ---- tcp_mr.c ------------------------------------------------------------ */
efps_status_t efps__tcp_mem_reg(efps_tp_ctx_t *ctx, void *addr, size_t length, unsigned access,
                                efps_tp_mr_t **mr_p);
efps_status_t efps__tcp_mem_dereg(efps_tp_mr_t *mr);
efps_status_t efps__tcp_mem_expose(efps_tp_ep_t *ep, efps_tp_mr_t *mr, efps_tp_rkey_t *rkey_p);
/* Lock held: the region that id names, or NULL. */
tcp_mr_t *efps__tcp_region(tcp_ctx_t *ctx, uint32_t id);
/* Lock held: the key of mr with this secret, or NULL. */
const tcp_expo_t *efps__tcp_expo_find(const tcp_mr_t *mr, uint64_t secret);
/* Lock held: every key handed out for ep stops working (its teardown). */
void efps__tcp_unexpose_ep(tcp_ctx_t *ctx, const struct tcp_ep *ep);
/* Progress thread, lock held: fails endpoints writing into dead regions. */
void efps__tcp_reap_dead_regions(tcp_ctx_t *ctx);

/* ---- tcp_conn.c ---------------------------------------------------------- */
efps_status_t efps__tcp_listen(efps_tp_ctx_t *ctx, const struct sockaddr *addr, socklen_t addrlen,
                               efps_tp_listener_t **listener_p);
/* ops->request_taken (lock held). */
void efps__tcp_request_taken(efps_tp_conn_req_t *req);
efps_status_t efps__tcp_accept(efps_tp_conn_req_t *req, const efps_tp_conn_param_t *param,
                               efps_tp_ep_t **ep_p);
efps_status_t efps__tcp_connect(efps_tp_ctx_t *ctx, const struct sockaddr *addr, socklen_t addrlen,
                                const efps_tp_conn_param_t *param, efps_tp_ep_t **ep_p);
/* ops->ep_teardown: the progress thread tears ep down. */
void efps__tcp_ep_teardown_start(efps_tp_ep_t *ep);
/* Progress thread: accepts every waiting socket of a listener. */
void efps__tcp_accept_sockets(tcp_listener_t *l);
/* Progress thread, lock held: listens again where it paused (out of fds). */
void efps__tcp_resume_listeners(tcp_ctx_t *ctx);
/* Progress thread, lock held: closes listeners being destroyed. */
void efps__tcp_close_listeners(tcp_ctx_t *ctx);
/* Progress thread, lock held: the application's destroy / reject. */
void efps__tcp_ep_teardown(tcp_ep_t *ep);
/* ops->ep_failed (through efps__tp_ep_fail, lock held): closes ep's socket,
 * flushes its writes with EFPS_ERR_PEER and reports why (DISCONNECT
 * completion, or just the log for internal ones). Logs "<name>: <why>;
 * connection closed" at level. */
void efps__tcp_ep_failed(efps_tp_ep_t *ep, efps_log_level_t level, efps_status_t status,
                         const char *why);
/* Lock held: ep's share of the completion queue covers use (reserved the
 * first time). EFPS_ERR_NOMEM if the ring cannot grow. */
efps_status_t efps__tcp_cq_hold(tcp_ep_t *ep, tcp_cq_use_t use);
/* Unlinks and frees an endpoint whose socket is closed (no lock needed once
 * nobody else can reach it). */
void efps__tcp_ep_free(tcp_ep_t *ep);
/* Socket options of every connection: non-blocking, NODELAY, keepalive and
 * TCP_USER_TIMEOUT from the context's timeout. */
void efps__tcp_sock_setup(int fd, uint32_t timeout_ms);

/* ---- tcp_tx.c ------------------------------------------------------------ */
efps_status_t efps__tcp_write_imm(efps_tp_ep_t *ep, efps_tp_mr_t *local, size_t local_offset,
                                  size_t length, const efps_tp_rkey_t *remote,
                                  uint64_t remote_offset, uint32_t imm, uint64_t user_context);
efps_status_t efps__tcp_msg_send(efps_tp_ep_t *ep, const void *buf, size_t len);
/* Lock held: queues a header-only or small control frame (payload is not
 * copied: it must live in the endpoint). */
void efps__tcp_queue_ctrl(tcp_ep_t *ep, tcp_frame_t type, const void *payload, uint32_t len,
                          uint32_t imm);
/* Lock held: completes every queued frame with EFPS_ERR_PEER. */
void efps__tcp_tx_flush(tcp_ep_t *ep);
/* Progress thread, lock held: sends what is queued as far as the socket
 * takes it without waiting (a refusal the application sent just before it
 * destroys the endpoint still reaches the peer). */
void efps__tcp_tx_flush_now(tcp_ep_t *ep);
/* Progress thread, no lock held: sends what is queued. */
void efps__tcp_tx_progress(tcp_ep_t *ep);

/* ---- tcp_rx.c ------------------------------------------------------------ */
/* ops->rx_credit (lock held): a receive that waited for credit goes on. */
void efps__tcp_rx_credit(efps_tp_ep_t *ep, bool message);
/* Progress thread, no lock held: receives what the socket has. */
void efps__tcp_rx_progress(tcp_ep_t *ep);
/* Progress thread, no lock held: EPOLLERR / EPOLLHUP on a socket we are not
 * reading (no credit): the connection is gone. */
void efps__tcp_rx_hangup(tcp_ep_t *ep);
/* Lock held: the receive stopped for lack of credit and has credit again. */
bool efps__tcp_rx_can_resume(const tcp_ep_t *ep);

#endif
