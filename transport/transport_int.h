/* Inside the transport layer: the operations table that every transport
 * (tcp/, verbs/) fills, and the part of each handle that is the same for all
 * of them. A transport's own handle structs start with these base structs, so
 * the neutral code (transport.c) can read names, keys and lengths and check
 * arguments once for every transport. Never seen outside transport/. */
#ifndef EFPS_TRANSPORT_INT_H
#define EFPS_TRANSPORT_INT_H

#include "efps/core.h"
#include "efps/transport.h"
#include "efps_internal/util.h"

#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>

#define EFPS_TP_ID_TCP   1
#define EFPS_TP_ID_VERBS 2

#define EFPS_TP_ADDR_MAX 64 /* "[ipv6]:port" as text */

/* A software completion queue: a ring that grows when endpoints reserve room
 * (never on the data path) and that can drop the entries of one endpoint.
 * Not locked: the transport holds its own lock around every call. */
typedef struct {
    efps_tp_cqe_t *ring;
    size_t cap, head, count;
    size_t reserved; /* sum of what endpoints reserved: count never exceeds it */
} efps_tp_cq_t;

/* A transport's context starts with this. The lock guards everything the
 * application's threads and the progress thread share (base.c, listen.c and
 * msgq.c take it; the transports take it around their own work). */
struct efps_tp_ctx {
    const struct efps_transport_ops *ops;
    efps_tp_attr_t attr; /* defaults filled in */
    pthread_mutex_t lock;
    pthread_cond_t cq_cond; /* a completion arrived */
    pthread_cond_t ev_cond; /* anything else: messages, requests, teardown */
    unsigned cq_waiters;
    efps_tp_cq_t cq;
    bool listeners_dirty; /* a listener is destroying: the progress thread closes it */
    efps_tp_ep_t *eps;    /* every endpoint, internal ones too (lock held) */
};

/* The messages an endpoint received and the application has not taken:
 * EFPS_TP_MSG_DEPTH slots of EFPS_TP_MSG_MAX bytes, filled in order. A slot
 * is allocated the first time a message goes into it (and kept), so a peer
 * that never gets past its first message holds one slot, not all of them. */
typedef struct {
    uint8_t *slot[EFPS_TP_MSG_DEPTH];
    uint32_t len[EFPS_TP_MSG_DEPTH];
    uint32_t head, count;
} efps_tp_msgq_t;

struct efps_tp_mr {
    efps_tp_ctx_t *ctx;
    void *addr;
    size_t length;
    unsigned access;
};

/* An endpoint's life, the same for every transport (base.c). */
typedef enum {
    EFPS_TP_EP_OPENING,   /* internal: tcp's accepted socket before its CONNECT,
                           * verbs' connect() running in the caller's thread */
    EFPS_TP_EP_QUEUED,    /* a request on its listener's queue (internal) */
    EFPS_TP_EP_REQUEST,   /* handed to the application as a request */
    EFPS_TP_EP_CONNECTED, /* an endpoint */
    EFPS_TP_EP_DOWN,      /* failed or closed; the application still owns it */
} efps_tp_ep_state_t;

struct efps_tp_ep {
    efps_tp_ctx_t *ctx;
    /* Lock held for all four. */
    efps_tp_ep_state_t state;
    efps_status_t down_status; /* DOWN: what later calls return */
    bool rejecting;            /* torn down as a refused request */
    bool destroy_done;         /* the progress thread has finished its teardown */
    efps_tp_ep_t *next, *prev; /* ctx->eps */
    void *context;
    char name[EFPS_TP_NAME_MAX];
    uint8_t peer_priv[EFPS_TP_PRIV_MAX];
    uint8_t peer_priv_len;
    /* Credits (lock held): a polled WRITE frees a send slot, a polled RECV
     * lets the peer write once more. */
    uint32_t sq_used; /* writes whose WRITE completion is not polled */
    uint32_t rq_used; /* RECV completions not polled */
    efps_tp_msgq_t msgs;
};

/* A listener's queue of requests the application has not taken (listen.c).
 * The transport's progress thread queues them and closes the listener once
 * it is destroying (then sets closed). */
struct efps_tp_listener {
    efps_tp_ctx_t *ctx;
    uint16_t port;
    efps_tp_conn_req_t *queue_head, *queue_tail;
    bool destroying, closed;
};

struct efps_tp_conn_req {
    efps_tp_ctx_t *ctx; /* not the listener: a request outlives its listener */
    efps_tp_ep_t *ep;   /* the endpoint it becomes, or is rejected as */
    efps_tp_conn_req_t *queue_next;
    char peer[EFPS_TP_ADDR_MAX];
    uint8_t priv[EFPS_TP_PRIV_MAX];
    uint8_t priv_len;
};

/* Arguments reach these already checked by transport.c: pointers non-NULL,
 * ranges inside their regions, handles of this transport's context. */
struct efps_transport_ops {
    const char *name;
    uint16_t id; /* EFPS_TP_ID_* */
    /* EFPS_OK if this transport can run here (auto picks the first that can). */
    efps_status_t (*probe)(const efps_tp_attr_t *attr);
    efps_status_t (*open)(const efps_tp_attr_t *attr, efps_tp_ctx_t **ctx_p);
    void (*close)(efps_tp_ctx_t *ctx);
    efps_status_t (*mem_reg)(efps_tp_ctx_t *ctx, void *addr, size_t length, unsigned access,
                             efps_tp_mr_t **mr_p);
    efps_status_t (*mem_dereg)(efps_tp_mr_t *mr);
    /* mr grants remote write and belongs to ep's context. */
    efps_status_t (*mem_expose)(efps_tp_ep_t *ep, efps_tp_mr_t *mr, efps_tp_rkey_t *rkey_p);
    efps_status_t (*listen)(efps_tp_ctx_t *ctx, const struct sockaddr *addr, socklen_t addrlen,
                            efps_tp_listener_t **listener_p);
    /* param is never NULL; starts with efps__tp_accept_begin. */
    efps_status_t (*accept)(efps_tp_conn_req_t *req, const efps_tp_conn_param_t *param,
                            efps_tp_ep_t **ep_p);
    efps_status_t (*connect)(efps_tp_ctx_t *ctx, const struct sockaddr *addr, socklen_t addrlen,
                             const efps_tp_conn_param_t *param, efps_tp_ep_t **ep_p);
    /* Lock held: has the progress thread tear ep down (closing what the
     * transport holds), which ends with efps__tp_ep_destroyed(ep). */
    void (*ep_teardown)(efps_tp_ep_t *ep);
    /* Frees a torn-down endpoint (lock not held). */
    void (*ep_free)(efps_tp_ep_t *ep);
    efps_status_t (*write_imm)(efps_tp_ep_t *ep, efps_tp_mr_t *local, size_t local_offset,
                               size_t length, const efps_tp_rkey_t *remote, uint64_t remote_offset,
                               uint32_t imm, uint64_t user_context);
    efps_status_t (*msg_send)(efps_tp_ep_t *ep, const void *buf, size_t len);

    /* Called by the neutral base (base.c, listen.c, msgq.c), lock held. */
    /* The application took a RECV completion (message false) or a message:
     * the peer may send one more. */
    void (*rx_credit)(efps_tp_ep_t *ep, bool message);
    /* req left its listener's queue for the application (now a REQUEST). */
    void (*request_taken)(efps_tp_conn_req_t *req);
    /* Lock held, through efps__tp_ep_fail (once per endpoint): ep failed
     * for why; the transport logs it at level, closes what it holds and
     * takes ep down with status (efps__tp_ep_go_down). */
    void (*ep_failed)(efps_tp_ep_t *ep, efps_log_level_t level, efps_status_t status,
                      const char *why);
    /* Lock held: wakes the progress thread (listeners_dirty is set). */
    void (*kick)(efps_tp_ctx_t *ctx);
};

extern const struct efps_transport_ops efps__tcp_ops;
extern const struct efps_transport_ops efps__verbs_ops;
/* Discovery for efps_tp_ports / _port_gids / _resolve (verbs/verbs_info.c). */
efps_status_t efps__verbs_ports(efps_tp_port_info_t *ports, size_t cap, size_t *n_p);
efps_status_t efps__verbs_port_gids(const char *device, uint8_t port, efps_tp_gid_info_t *gids,
                                    size_t cap, size_t *n_p);
efps_status_t efps__verbs_resolve(const char *address, int timeout_ms, char *device, size_t cap,
                                  uint8_t *port_p);

/* ---- helpers shared by the transports (transport/addr.c, transport/cq.c) -- */

/* Parses "host:port", "[v6]:port", "*:port", ":port". passive: an empty or
 * "*" host means every address (for listen). Logs what it could not parse. */
efps_status_t efps__tp_parse_addr(const char *text, bool passive, struct sockaddr_storage *ss_p,
                                  socklen_t *len_p);
/* "1.2.3.4:7000" / "[::1]:7000" into buf (at least EFPS_TP_ADDR_MAX). */
void efps__tp_format_addr(const struct sockaddr *sa, char *buf, size_t cap);
/* "label (addr)" or "addr" into ep->name. */
void efps__tp_ep_set_name(efps_tp_ep_t *ep, const char *label, const char *addr);

/* The deadline of a call's timeout_ms: 0 (wait forever) when timeout_ms < 0. */
uint64_t efps__tp_deadline(int timeout_ms);
/* Waits on cond (created on CLOCK_MONOTONIC) with lock held, until woken or
 * deadline_ms (0: no deadline). false once the deadline has passed. */
bool efps__tp_wait(pthread_cond_t *cond, pthread_mutex_t *lock, uint64_t deadline_ms);

void efps__tp_cq_init(efps_tp_cq_t *cq);
void efps__tp_cq_free(efps_tp_cq_t *cq);
/* Makes room for n more entries (an endpoint's worst case). */
efps_status_t efps__tp_cq_reserve(efps_tp_cq_t *cq, size_t n);
void efps__tp_cq_unreserve(efps_tp_cq_t *cq, size_t n);
/* The caller's reservation guarantees room; a full ring is a bug (asserted). */
void efps__tp_cq_push(efps_tp_cq_t *cq, const efps_tp_cqe_t *cqe);
size_t efps__tp_cq_pop(efps_tp_cq_t *cq, efps_tp_cqe_t *out, size_t max);
/* Removes every entry of ep, keeping the order of the others. */
void efps__tp_cq_purge(efps_tp_cq_t *cq, const efps_tp_ep_t *ep);

/* ---- the part of a context every transport shares (transport/base.c) ----- */

/* The lock (CLOCK_MONOTONIC conditions) and the completion queue. */
efps_status_t efps__tp_base_init(efps_tp_ctx_t *ctx);
void efps__tp_base_destroy(efps_tp_ctx_t *ctx);
/* Lock held: queues a completion and wakes a poller. */
void efps__tp_push_cqe(efps_tp_ctx_t *ctx, const efps_tp_cqe_t *cqe);
/* efps_tp_poll: takes what is queued (waiting up to timeout_ms for some),
 * and gives back what each completion held: a send slot, or (through
 * ops->rx_credit) a receive credit. */
efps_status_t efps__tp_base_poll(efps_tp_ctx_t *ctx, efps_tp_cqe_t *cqes, int max, int timeout_ms,
                                 int *count_p);

/* ---- an endpoint's life cycle (transport/base.c) -------------------------
 * The states above and what the application's calls on them mean; each
 * transport says only how it tears an endpoint down (ops->ep_teardown) and
 * frees it (ops->ep_free). */

/* efps_tp_ep_status: EFPS_OK connected, the down status once down,
 * EFPS_ERR_STATE before. */
efps_status_t efps__tp_ep_status(const efps_tp_ep_t *ep);
/* Lock held: ep is connected (a message may still come). */
bool efps__tp_ep_live(const efps_tp_ep_t *ep);
/* Lock held: ep goes down; later calls return status (EFPS_ERR_PEER for
 * EFPS_OK: a clean close is still the peer gone). true when it was
 * connected: the caller reports the DISCONNECT. */
bool efps__tp_ep_go_down(efps_tp_ep_t *ep, efps_status_t status);
/* Lock held: hands ep to the progress thread for teardown and waits. */
void efps__tp_ep_teardown_wait(efps_tp_ep_t *ep);
/* Progress thread, lock held: ep's teardown is finished; its waiter wakes. */
void efps__tp_ep_destroyed(efps_tp_ep_t *ep);
/* efps_tp_accept's first step: takes the lock (held on return, also on
 * error: the progress thread may be failing this request and reads its name
 * when it does), names the endpoint, and is EFPS_ERR_PEER when the peer went
 * away while the request waited. */
efps_status_t efps__tp_accept_begin(efps_tp_conn_req_t *req, const efps_tp_conn_param_t *param);
/* Lock held: ep failed (or closes) for the formatted reason: once per
 * endpoint (nothing when it is down already), through ops->ep_failed. */
void efps__tp_ep_fail(efps_tp_ep_t *ep, efps_log_level_t level, efps_status_t status,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Lock held: ep joins / leaves ctx->eps (leaving twice is harmless). */
void efps__tp_ep_link(efps_tp_ctx_t *ctx, efps_tp_ep_t *ep);
void efps__tp_ep_unlink(efps_tp_ctx_t *ctx, efps_tp_ep_t *ep);
/* efps_tp_ep_destroy and efps_tp_reject: teardown, then free. */
void efps__tp_ep_destroy(efps_tp_ep_t *ep);
void efps__tp_reject(efps_tp_conn_req_t *req);

/* ---- a listener's request queue (transport/listen.c) --------------------- */

/* Lock held: req joins the end of l's queue; get_request waiters wake. */
void efps__tp_listen_queue(efps_tp_listener_t *l, efps_tp_conn_req_t *req);
/* Lock held: takes req off l's queue, if it is there. */
void efps__tp_listen_unqueue(efps_tp_listener_t *l, efps_tp_conn_req_t *req);
/* Lock held: the first queued request, taken off the queue, or NULL. */
efps_tp_conn_req_t *efps__tp_listen_pop(efps_tp_listener_t *l);
/* efps_tp_get_request: the first request, waiting up to timeout_ms. */
efps_status_t efps__tp_listen_get(efps_tp_listener_t *l, int timeout_ms,
                                  efps_tp_conn_req_t **req_p);
/* efps_tp_listener_destroy: has the progress thread close it, waits, frees. */
void efps__tp_listen_destroy(efps_tp_listener_t *l);

/* ---- an endpoint's received messages (transport/msgq.c) ------------------ */

void efps__tp_msgq_free(efps_tp_msgq_t *q);
/* Lock held: every slot holds a message the application has not taken. */
bool efps__tp_msgq_full(const efps_tp_msgq_t *q);
/* Lock held: where the next message goes (not full); NULL if its slot could
 * not be allocated. */
uint8_t *efps__tp_msgq_tail(efps_tp_msgq_t *q);
/* Lock held: the message at the tail is whole (len bytes); msg_recv wakes. */
void efps__tp_msgq_arrived(efps_tp_ep_t *ep, uint32_t len);
/* efps_tp_msg_recv: the oldest message, waiting up to timeout_ms while
 * ep is live; taking it gives the peer a message credit (ops->rx_credit). */
efps_status_t efps__tp_msgq_recv(efps_tp_ep_t *ep, void *buf, size_t cap, size_t *len_p,
                                 int timeout_ms);

#endif
