/* Internal to the parameter server's server side: its state, shared by
 * server.c (the object and its loop), server_admit.c (admission: accept,
 * authenticate, take the layout, join), server_msg.c (control messages),
 * server_data.c (the reduce/broadcast data path) and server_log.c (lines
 * about strangers). */
#ifndef EFPS_PS_SERVER_INT_H
#define EFPS_PS_SERVER_INT_H

#include "ps_int.h"

#include <stdatomic.h>
#include <time.h>

/* W_DONE: said BYE and got ours; W_GONE: then closed its side; W_REFUSED: told
 * why it is refused, closed by us PS_REFUSE_LINGER_MS later (closing at once
 * could drop the REFUSE before it is sent; waiting for the peer to close would
 * let it hold the connection); W_CLOSED: an unauthenticated or refused peer
 * whose endpoint is gone, freed on the next sweep (a stream of bad clients
 * must not pile up anything). */
enum { W_AUTH, W_AUTHED, W_LAYOUT, W_READY, W_DONE, W_GONE, W_REFUSED, W_CLOSED };

#define PS_REFUSE_LINGER_MS 250
#define PS_SWEEP_MS         20

typedef struct {
    efps_tp_ep_t *ep;
    int state, rank;
    char name[EFPS_TP_NAME_MAX + 32]; /* "peer ADDR", once authenticated "worker R (ADDR)" */
    char host[EFPS_TP_NAME_MAX];      /* the source address without its port */
    int64_t deadline;                 /* W_AUTH: to log in; W_REFUSED: when we close it */
    uint64_t announced;               /* keys its LAYOUT announced */
    ps_hello_t hello, mine;
    ps_layout_t pending; /* the layout being received */
    efps_tp_rkey_t pull_rkey;
    uint8_t *slots;
    efps_tp_mr_t *slot_mr;
    uint64_t *got; /* per part: pushes received */
} worker_t;

typedef struct {
    efps_server_opt_t *opt;
    uint64_t step;      /* pushes of this step are being collected */
    int count;          /* of M, this step */
    int next_send;      /* broadcast of the last reduced step: next worker to write to */
    int outstanding[2]; /* writes from each broadcast buffer not yet completed */
    bool mine;
} spart_t;

typedef struct {
    efps_ps_config_t cfg;
    efps_optim_config_t optim;
    /* Who gave this server each layout setting (an option or the
     * environment); NULL where it runs what the workers declare. */
    const char *set_comp, *set_block, *set_part;
    int M, nservers;
    efps_tp_ctx_t *tp;
    efps_tp_listener_t *listener;
    worker_t **conns; /* every accepted connection */
    size_t nconns, capconns;
    worker_t **by_rank;
    bool have_layout;
    ps_layout_t layout;
    size_t *part_off, *slot_off, slot_bytes, bcast_bytes;
    spart_t *parts;
    uint8_t *bcast;
    efps_tp_mr_t *bcast_mr;
    const void **inputs; /* M pointers, reused by every reduce */
    size_t *sending;     /* parts with a broadcast in progress */
    size_t nsending;
    int done, gone;
    /* Set by efps_server_stop (any thread, a signal handler): lock-free, so
     * the store is async-signal-safe; the loop looks at it on every turn,
     * and an idle turn waits at most 1 ms in the poll. */
    atomic_bool stop;
    efps__ps_limits_t lim;
    int64_t next_sweep;
    int64_t log_last; /* rate limit of the lines about strangers */
    unsigned long log_suppressed;
    /* The join phase (server_join.c): until every rank has joined at once,
     * a refused or lost joiner is named to the workers that have joined. */
    bool started;
    char (*missing_why)[PS_NOTICE_MAX]; /* per rank: the last refusal or loss of it */
    int64_t *noticed;                   /* per rank: when a notice about it last went out */
} server_t;

static inline const char *wname(const worker_t *w)
{
    return w->name;
}

/* ---- server_log.c ------------------------------------------------------------------ */
/* A line about a peer that has not proven anything yet: at most one a second,
 * with the count of those held back, so a crowd of strangers cannot flood
 * the log. It names the peer by address, never by the rank it claims. */
void efps__srv_stranger_log(server_t *sv, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The count of lines held back, once their second is over. */
void efps__srv_stranger_log_flush(server_t *sv);

/* ---- server_admit.c: admission ----------------------------------------------------- */
/* Tells w why it is refused and schedules its close; a rank it held is free
 * again for the real worker. Returns EFPS_ERR_AUTH. */
efps_status_t efps__srv_refuse(server_t *sv, worker_t *w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void efps__srv_conn_free(worker_t *w);
/* Login deadlines, refused peers due to be closed, and freeing what closed. */
void efps__srv_sweep(server_t *sv);
/* The host part of "host:port" or "[v6]:port". */
void efps__srv_host_of(const char *addr, char *buf, size_t cap);
/* A connection request: admitted (capped in total and per source address) or rejected. */
efps_status_t efps__srv_accept(server_t *sv, efps_tp_conn_req_t *req);
/* The messages of admission: AUTH, LAYOUT, KEYS (the last one makes w join). */
efps_status_t efps__srv_on_auth(server_t *sv, worker_t *w, const uint8_t *m, size_t len);
efps_status_t efps__srv_on_layout(server_t *sv, worker_t *w, const uint8_t *m, size_t len);
efps_status_t efps__srv_on_keys(server_t *sv, worker_t *w, const uint8_t *m, size_t len);

/* ---- server_join.c: the join phase ------------------------------------------------- */
/* w leaves its rank (refused or lost): open again, its pushes uncounted. */
void efps__srv_release_rank(server_t *sv, worker_t *w);
/* Before the run starts, names refused or lost peer w (what: "refused",
 * "lost") to every worker that has joined, if the rank it claims is open. */
void efps__srv_notice(server_t *sv, const worker_t *w, const char *what, const char *why);
/* w authenticated: it hears what is known about the ranks still open. */
void efps__srv_notices_to(server_t *sv, worker_t *w);
/* w has its slots (W_READY): the run starts when every rank has. */
void efps__srv_joined(server_t *sv, worker_t *w);
/* A joined worker disconnected: before the run starts its rank is open again
 * (true); after, the run cannot go on (false). */
bool efps__srv_lost_joiner(server_t *sv, worker_t *w);
/* The join deadline passed with `ready` of M joined: logged, and every joined
 * worker told which ranks are missing and the last reason. EFPS_ERR_TIMEOUT. */
efps_status_t efps__srv_join_failed(server_t *sv, int ready);

/* ---- server_msg.c: control messages ------------------------------------------------ */
/* Takes every waiting control message of every connection. */
efps_status_t efps__srv_drain_msgs(server_t *sv, bool *any_p);

/* ---- server_data.c: the data path -------------------------------------------------- */
/* Joined the run: its pushes are counted in got. */
static inline bool has_slots(const worker_t *w)
{
    return w != NULL && w->got != NULL;
}
/* This server stops because of `culprit`: every other worker is told why. */
void efps__srv_tell_others(server_t *sv, const worker_t *culprit, const char *what);
/* Worker d finalized while the others go on (part p shows it). */
efps_status_t efps__srv_left_early(server_t *sv, worker_t *d, size_t p);
efps_status_t efps__srv_on_cqe(server_t *sv, const efps_tp_cqe_t *c);
/* Reduces and broadcasts that had to wait; retried on every turn of the loop. */
efps_status_t efps__srv_retry_pending(server_t *sv);

#endif
