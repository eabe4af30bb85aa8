/* Connections of the tcp transport: listening, the CONNECT / ACCEPT exchange
 * that carries the private data, the connecting side (done in the caller's
 * thread, with its timeout), endpoint failure and teardown. */
#include "tcp.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

void efps__tcp_sock_setup(int fd, uint32_t timeout_ms)
{
    int one = 1;
    /* Keepalive notices a vanished host on an idle connection, the user
     * timeout one that stops acknowledging our data; the heartbeats (PING)
     * notice a peer process that hangs. */
    int idle = (int)(timeout_ms / 3000) > 0 ? (int)(timeout_ms / 3000) : 1;
    int cnt = 3;
    unsigned user_timeout = timeout_ms;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
}

/* ---- allocation ----------------------------------------------------------- */
static tcp_ep_t *ep_alloc(tcp_ctx_t *ctx, int fd, const struct sockaddr *peer)
{
    tcp_ep_t *ep = calloc(1, sizeof(*ep));
    if (ep == NULL)
        return NULL;
    ep->base.ctx = &ctx->base;
    ep->req.ctx = &ctx->base;
    ep->req.ep = &ep->base;
    ep->poll_kind = TCP_POLL_EP;
    ep->ctx = ctx;
    ep->fd = fd;
    efps__tp_format_addr(peer, ep->addr, sizeof(ep->addr));
    memcpy(ep->req.peer, ep->addr, sizeof(ep->req.peer));
    efps__tp_ep_set_name(&ep->base, NULL, ep->addr);
    return ep;
}

/* What a usable endpoint needs beyond a pending connection. */
static efps_status_t ep_alloc_queues(tcp_ep_t *ep)
{
    const efps_tp_attr_t *attr = &ep->ctx->base.attr;
    ep->tx_cap = attr->sq_depth + EFPS_TP_MSG_DEPTH + 2; /* + ACCEPT + PING */
    ep->txq = calloc(ep->tx_cap, sizeof(*ep->txq));
    if (ep->txq == NULL) {
        efps_error("tcp: %s: out of memory for the endpoint's queues", ep->base.name);
        return EFPS_ERR_NOMEM;
    }
    return EFPS_OK;
}

void efps__tcp_ep_free(tcp_ep_t *ep)
{
    free(ep->txq);
    for (int i = 0; i < EFPS_TP_MSG_DEPTH; i++)
        free(ep->msg_tx_slot[i]);
    efps__tp_msgq_free(&ep->base.msgs);
    free(ep);
}

static bool is_internal(const tcp_ep_t *ep)
{
    return ep->base.state == EFPS_TP_EP_OPENING || ep->base.state == EFPS_TP_EP_QUEUED;
}

/* Lock held (or the context is single-threaded): epoll off, socket closed. */
static void close_socket(tcp_ep_t *ep)
{
    if (ep->fd < 0)
        return;
    epoll_ctl(ep->ctx->epfd, EPOLL_CTL_DEL, ep->fd, NULL);
    close(ep->fd);
    ep->fd = -1;
    ep->events = 0;
}

static void release_rx_region(tcp_ep_t *ep)
{
    if (ep->rx_region == NULL)
        return;
    ep->rx_region->rx_busy--;
    ep->rx_region = NULL;
    pthread_cond_broadcast(&ep->ctx->base.ev_cond); /* a dereg may wait for it */
}

/* ---- failure and teardown ------------------------------------------------- */
/* A connection the application never took in: it came through a listener
 * and was never given a region key (keys go only to authenticated peers). */
static bool is_stranger(const tcp_ep_t *ep)
{
    return ep->inbound && !(ep->cq_uses & TCP_CQ_RECVS);
}

/* Lock held: whether a line about a stranger may be logged now (one a
 * second); *quiet_p: how many were held back since the last one. */
static bool stranger_turn(tcp_ctx_t *ctx, unsigned *quiet_p)
{
    uint64_t now = efps__now_ms();
    if (ctx->stranger_log_ms != 0 && now - ctx->stranger_log_ms < 1000) {
        ctx->stranger_quiet++;
        return false;
    }
    *quiet_p = ctx->stranger_quiet;
    ctx->stranger_log_ms = now;
    ctx->stranger_quiet = 0;
    return true;
}

/* Lock held. Errors and warnings about strangers come at most once a second
 * (as warnings: the application never knew them), the rest at debug. */
static void log_failure(tcp_ep_t *ep, efps_log_level_t level, const char *why)
{
    const char *from = is_internal(ep) ? "connection from " : "";
    unsigned quiet = 0;
    if (!is_stranger(ep) || level > EFPS_LOG_WARN)
        EFPS_LOG(level, "tcp: %s%s: %s; connection closed", from, ep->base.name, why);
    else if (!stranger_turn(ep->ctx, &quiet))
        efps_debug("tcp: %s%s: %s; connection closed", from, ep->base.name, why);
    else if (quiet == 0)
        efps_warn("tcp: %s%s: %s; connection closed (unauthenticated)", from, ep->base.name, why);
    else
        efps_warn("tcp: %s%s: %s; connection closed (unauthenticated; %u more such since the "
                  "last line)",
                  from, ep->base.name, why, quiet);
}

void efps__tcp_ep_failed(efps_tp_ep_t *base, efps_log_level_t level, efps_status_t status,
                         const char *why)
{
    tcp_ep_t *ep = TCP_EP(base);
    tcp_ctx_t *ctx = ep->ctx;
    log_failure(ep, level, why);

    close_socket(ep);
    release_rx_region(ep);
    efps__tcp_tx_flush(ep);
    if (is_internal(ep)) {
        /* Nobody outside knows it: free it after this round of events. */
        efps__tcp_ep_teardown(ep);
        ep->zombie_next = ctx->zombies;
        ctx->zombies = ep;
        return;
    }
    if (efps__tp_ep_go_down(&ep->base, status)) {
        efps_tp_cqe_t cqe = {.type = EFPS_TP_CQE_DISCONNECT, .status = status, .ep = &ep->base};
        efps__tp_push_cqe(&ctx->base, &cqe);
    }
    pthread_cond_broadcast(&ctx->base.ev_cond); /* msg_recv, accept waiters */
}

/* Says goodbye if it can do so without waiting: a peer that reads BYE knows
 * the close was meant, not a crash. */
static void send_goodbye(tcp_ep_t *ep)
{
    tcp_frame_t type;
    if (ep->fd < 0)
        return;
    if (ep->base.state == EFPS_TP_EP_CONNECTED)
        efps__tcp_tx_flush_now(ep); /* then BYE, if all of it went */
    if (ep->base.state == EFPS_TP_EP_CONNECTED && ep->tx_count == 0 && ep->tx_done == 0)
        type = TCP_F_BYE;
    else if (ep->base.rejecting)
        type = TCP_F_REJECT;
    else
        return;
    uint8_t buf[TCP_HDR_LEN];
    tcp_hdr_t h = tcp_hdr_make(type, 0);
    tcp_hdr_encode(&h, buf);
    if (send(ep->fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)sizeof(buf))
        return;
    /* Closing a socket with unread bytes sends a reset, which can overtake
     * the goodbye: drop what the peer sent (a heartbeat, say) first. */
    shutdown(ep->fd, SHUT_WR);
    char sink[4096];
    for (int i = 0; i < 64 && recv(ep->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
}

void efps__tcp_ep_teardown(tcp_ep_t *ep)
{
    tcp_ctx_t *ctx = ep->ctx;
    send_goodbye(ep);
    close_socket(ep);
    release_rx_region(ep);
    for (uint32_t i = 0; i < ep->tx_count; i++) {
        tcp_tx_t *t = &ep->txq[(ep->tx_head + i) % ep->tx_cap];
        if (t->kind == TCP_TX_WRITE)
            t->mr->tx_refs--;
    }
    ep->tx_count = 0;
    efps__tcp_unexpose_ep(ctx, ep);
    efps__tp_cq_purge(&ctx->base.cq, &ep->base);
    efps__tp_cq_unreserve(&ctx->base.cq, ep->cq_held);
    ep->cq_held = 0;
    ep->cq_uses = 0;
    if (ep->listener != NULL) {
        efps__tp_listen_unqueue(&ep->listener->base, &ep->req);
        ep->listener = NULL;
        ctx->n_pending--;
    }
    efps__tp_ep_unlink(&ctx->base, &ep->base);
    efps__tp_ep_destroyed(&ep->base);
}

/* Lock held: the progress thread tears ep down (efps__tp_ep_teardown_wait). */
void efps__tcp_ep_teardown_start(efps_tp_ep_t *base)
{
    efps__tcp_kick(TCP_EP(base)->ctx, TCP_EP(base), TCP_KICK_DESTROY);
}

/* ---- listening ------------------------------------------------------------ */
efps_status_t efps__tcp_listen(efps_tp_ctx_t *base, const struct sockaddr *addr, socklen_t addrlen,
                               efps_tp_listener_t **listener_p)
{
    tcp_ctx_t *ctx = TCP_CTX(base);
    char text[EFPS_TP_ADDR_MAX];
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    int one = 1;
    efps__tp_format_addr(addr, text, sizeof(text));

    tcp_listener_t *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        efps_error("tcp: listen on %s: out of memory", text);
        return EFPS_ERR_NOMEM;
    }
    l->base.ctx = base;
    l->poll_kind = TCP_POLL_LISTENER;
    l->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        efps_error("tcp: listen on %s: socket: %s", text, strerror(errno));
        goto err_free;
    }
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(l->fd, addr, addrlen) != 0 || listen(l->fd, 128) != 0 ||
        getsockname(l->fd, (struct sockaddr *)&bound, &blen) != 0) {
        efps_error("tcp: listen on %s: %s", text, strerror(errno));
        goto err_close;
    }
    l->base.port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                     : ((struct sockaddr_in *)&bound)->sin_port);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->poll_kind};
    pthread_mutex_lock(&ctx->base.lock);
    int rc = epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, l->fd, &ev);
    if (rc == 0) {
        l->next = ctx->listeners;
        ctx->listeners = l;
    }
    pthread_mutex_unlock(&ctx->base.lock);
    if (rc != 0) {
        efps_error("tcp: listen on %s: epoll_ctl: %s", text, strerror(errno));
        goto err_close;
    }
    efps_info("tcp: listening on %s (port %u)", text, l->base.port);
    *listener_p = &l->base;
    return EFPS_OK;

err_close:
    close(l->fd);
err_free:
    free(l);
    return EFPS_ERR_SYSTEM;
}

/* Progress thread: a socket turned away before it became an endpoint. */
static void refuse_socket(tcp_listener_t *l, int fd, const struct sockaddr_storage *peer,
                          const char *why)
{
    tcp_ctx_t *ctx = TCP_CTX(l->base.ctx);
    char text[EFPS_TP_ADDR_MAX];
    unsigned quiet = 0;
    efps__tp_format_addr((const struct sockaddr *)peer, text, sizeof(text));
    close(fd);
    pthread_mutex_lock(&ctx->base.lock);
    bool turn = stranger_turn(ctx, &quiet);
    pthread_mutex_unlock(&ctx->base.lock);
    if (turn)
        efps_warn("tcp: port %u: refused connection from %s (%s; %u more refused or closed "
                  "since the last such line)",
                  l->base.port, text, why, quiet);
    else
        efps_debug("tcp: port %u: refused connection from %s (%s)", l->base.port, text, why);
}

void efps__tcp_accept_sockets(tcp_listener_t *l)
{
    tcp_ctx_t *ctx = TCP_CTX(l->base.ctx);
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED))
            return;
        if (fd < 0) {
            /* Out of descriptors or memory: the socket stays readable, so
             * stop listening for a tick instead of spinning on it. */
            efps_warn("tcp: accept on port %u: %s; pausing", l->base.port, strerror(errno));
            struct epoll_event ev = {.events = 0, .data.ptr = &l->poll_kind};
            pthread_mutex_lock(&ctx->base.lock);
            epoll_ctl(ctx->epfd, EPOLL_CTL_MOD, l->fd, &ev);
            l->paused = true;
            pthread_mutex_unlock(&ctx->base.lock);
            return;
        }
        pthread_mutex_lock(&ctx->base.lock);
        bool full = ctx->n_pending >= TCP_MAX_PENDING || l->base.destroying;
        pthread_mutex_unlock(&ctx->base.lock);
        tcp_ep_t *ep = full ? NULL : ep_alloc(ctx, fd, (struct sockaddr *)&peer);
        if (ep == NULL) {
            refuse_socket(l, fd, &peer, full ? "too many pending handshakes" : "out of memory");
            continue;
        }
        efps__tcp_sock_setup(fd, ctx->base.attr.timeout_ms);
        ep->base.state = EFPS_TP_EP_OPENING;
        ep->listener = l;
        ep->inbound = true;
        ep->deadline_ms = efps__now_ms() + ctx->base.attr.hello_timeout_ms;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ep->poll_kind};
        pthread_mutex_lock(&ctx->base.lock);
        ctx->n_pending++;
        efps__tp_ep_link(&ctx->base, &ep->base);
        if (epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
            ep->events = EPOLLIN;
        else
            efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_SYSTEM, "epoll_ctl: %s",
                             strerror(errno));
        pthread_mutex_unlock(&ctx->base.lock);
        efps_debug("tcp: port %u: connection from %s", l->base.port, ep->addr);
    }
}

void efps__tcp_resume_listeners(tcp_ctx_t *ctx)
{
    for (tcp_listener_t *l = ctx->listeners; l != NULL; l = l->next) {
        if (!l->paused || l->base.destroying)
            continue;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->poll_kind};
        if (epoll_ctl(ctx->epfd, EPOLL_CTL_MOD, l->fd, &ev) == 0)
            l->paused = false;
    }
}

void efps__tcp_close_listeners(tcp_ctx_t *ctx)
{
    ctx->base.listeners_dirty = false;
    for (tcp_listener_t **pp = &ctx->listeners; *pp != NULL;) {
        tcp_listener_t *l = *pp;
        if (!l->base.destroying) {
            pp = &l->next;
            continue;
        }
        epoll_ctl(ctx->epfd, EPOLL_CTL_DEL, l->fd, NULL);
        close(l->fd);
        for (tcp_ep_t *ep = TCP_EP(ctx->base.eps), *next; ep != NULL; ep = next) {
            next = TCP_EP(ep->base.next);
            if (ep->listener == l)
                efps__tp_ep_fail(&(ep)->base, EFPS_LOG_DEBUG, EFPS_ERR_STATE, "listener closed");
        }
        *pp = l->next;
        l->base.closed = true;
    }
    pthread_cond_broadcast(&ctx->base.ev_cond);
}

void efps__tcp_request_taken(efps_tp_conn_req_t *req)
{
    tcp_ep_t *ep = TCP_REQ_EP(req);
    ep->listener = NULL;
    ep->ctx->n_pending--;
}

/* ---- accepting side --------------------------------------------------------- */
efps_status_t efps__tcp_accept(efps_tp_conn_req_t *req, const efps_tp_conn_param_t *param,
                               efps_tp_ep_t **ep_p)
{
    tcp_ep_t *ep = TCP_REQ_EP(req);
    tcp_ctx_t *ctx = ep->ctx;
    efps_status_t status = efps__tp_accept_begin(req, param);
    if (status == EFPS_OK)
        status = ep_alloc_queues(ep);
    if (status == EFPS_OK)
        status = efps__tcp_cq_hold(ep, TCP_CQ_DISCONNECT);
    if (status != EFPS_OK) {
        efps__tp_ep_teardown_wait(&ep->base);
        pthread_mutex_unlock(&ctx->base.lock);
        efps__tcp_ep_free(ep);
        return status;
    }
    ep->base.context = param->context;
    memcpy(ep->base.peer_priv, ep->req.priv, ep->req.priv_len);
    ep->base.peer_priv_len = ep->req.priv_len;
    if (param->priv_len > 0)
        memcpy(ep->local_priv, param->priv, param->priv_len);
    ep->base.state = EFPS_TP_EP_CONNECTED;
    uint64_t now = efps__now_ms();
    atomic_store_explicit(&ep->last_rx_ms, now, memory_order_relaxed);
    atomic_store_explicit(&ep->last_tx_ms, now, memory_order_relaxed);
    efps__tcp_set_heartbeat(ep);
    efps__tcp_queue_ctrl(ep, TCP_F_ACCEPT, ep->local_priv, (uint32_t)param->priv_len,
                         ctx->base.attr.timeout_ms);
    efps__tcp_kick(ctx, ep, TCP_KICK_TX);
    pthread_mutex_unlock(&ctx->base.lock);
    efps_info("tcp: accepted %s", ep->base.name);
    *ep_p = &ep->base;
    return EFPS_OK;
}

/* ---- connecting side -------------------------------------------------------- */

/* Waits for fd to become ready for events until deadline; EFPS_ERR_TIMEOUT after. */
static efps_status_t wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = efps__now_ms();
        if (now >= deadline)
            return EFPS_ERR_TIMEOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, (int)(deadline - now));
        if (rc > 0)
            return EFPS_OK;
        if (rc < 0 && errno != EINTR)
            return EFPS_ERR_SYSTEM;
    }
}

static efps_status_t send_all(int fd, const void *buf, size_t len, uint64_t deadline)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            efps_status_t s = wait_fd(fd, POLLOUT, deadline);
            if (s != EFPS_OK)
                return s;
        } else {
            return EFPS_ERR_PEER;
        }
    }
    return EFPS_OK;
}

/* EFPS_ERR_PEER on EOF, so a refusal (closed without a reply) reads as one. */
static efps_status_t recv_all(int fd, void *buf, size_t len, uint64_t deadline)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            efps_status_t s = wait_fd(fd, POLLIN, deadline);
            if (s != EFPS_OK)
                return s;
        } else {
            return EFPS_ERR_PEER;
        }
    }
    return EFPS_OK;
}

/* Nothing listening is what a caller that starts before its peer expects
 * and retries (lib/ps does, until its timeout): said at info, once per
 * attempt; the caller reports giving up. Anything else is an error. */
static void log_connect_error(const char *name, int err)
{
    if (err == ECONNREFUSED)
        efps_info("tcp: connect to %s: connection refused (nothing listens there)", name);
    else
        efps_error("tcp: connect to %s: %s", name, strerror(err));
}

static efps_status_t open_socket(const struct sockaddr *addr, socklen_t addrlen, uint64_t deadline,
                                 uint32_t timeout_ms, const char *name, int *fd_p)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        efps_error("tcp: connect to %s: socket: %s", name, strerror(errno));
        return EFPS_ERR_SYSTEM;
    }
    efps__tcp_sock_setup(fd, timeout_ms);
    efps_status_t status = EFPS_OK;
    if (connect(fd, addr, addrlen) != 0) {
        if (errno != EINPROGRESS) {
            log_connect_error(name, errno);
            status = EFPS_ERR_PEER;
        } else if ((status = wait_fd(fd, POLLOUT, deadline)) != EFPS_OK) {
            efps_error("tcp: connect to %s: %s", name,
                       status == EFPS_ERR_TIMEOUT ? "timed out" : strerror(errno));
        } else {
            int err = 0;
            socklen_t elen = sizeof(err);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
            if (err != 0) {
                log_connect_error(name, err);
                status = EFPS_ERR_PEER;
            }
        }
    }
    if (status != EFPS_OK) {
        close(fd);
        return status;
    }
    *fd_p = fd;
    return EFPS_OK;
}

/* Sends CONNECT with the private data, reads ACCEPT (or REJECT) and its reply. */
static efps_status_t handshake(tcp_ep_t *ep, const efps_tp_conn_param_t *param, uint64_t deadline)
{
    uint8_t frame[TCP_HDR_LEN + EFPS_TP_PRIV_MAX];
    tcp_hdr_t h = tcp_hdr_make(TCP_F_CONNECT, (uint32_t)param->priv_len);
    h.imm = ep->ctx->base.attr.timeout_ms;
    tcp_hdr_encode(&h, frame);
    if (param->priv_len > 0)
        memcpy(frame + TCP_HDR_LEN, param->priv, param->priv_len);
    efps_status_t status = send_all(ep->fd, frame, TCP_HDR_LEN + param->priv_len, deadline);
    if (status == EFPS_OK)
        status = recv_all(ep->fd, frame, TCP_HDR_LEN, deadline);
    if (status != EFPS_OK) {
        efps_error("tcp: connect to %s: %s", ep->base.name,
                   status == EFPS_ERR_TIMEOUT ? "no answer to the connection request"
                                              : "closed by the peer during the handshake");
        return status;
    }
    tcp_hdr_decode(frame, &h);
    if (h.magic != TCP_WIRE_MAGIC || h.version != TCP_WIRE_VERSION ||
        (h.type != TCP_F_ACCEPT && h.type != TCP_F_REJECT) || h.length > EFPS_TP_PRIV_MAX) {
        efps_error("tcp: connect to %s: the answer is not an efps tcp accept (magic 0x%08x "
                   "version %u type %u length %u)",
                   ep->base.name, h.magic, h.version, h.type, h.length);
        return EFPS_ERR_PROTO;
    }
    if (h.type == TCP_F_REJECT) {
        efps_error("tcp: connect to %s: rejected by the peer", ep->base.name);
        return EFPS_ERR_PEER;
    }
    status = recv_all(ep->fd, ep->base.peer_priv, h.length, deadline);
    if (status != EFPS_OK) {
        efps_error("tcp: connect to %s: truncated accept", ep->base.name);
        return status;
    }
    ep->base.peer_priv_len = (uint8_t)h.length;
    ep->peer_timeout_ms = h.imm;
    return EFPS_OK;
}

efps_status_t efps__tcp_connect(efps_tp_ctx_t *base, const struct sockaddr *addr, socklen_t addrlen,
                                const efps_tp_conn_param_t *param, efps_tp_ep_t **ep_p)
{
    tcp_ctx_t *ctx = TCP_CTX(base);
    efps_tp_conn_param_t none = {0};
    if (param == NULL)
        param = &none;
    uint32_t timeout = param->timeout_ms > 0 ? (uint32_t)param->timeout_ms : base->attr.timeout_ms;
    uint64_t deadline = efps__now_ms() + timeout;
    efps_status_t status = EFPS_ERR_NOMEM;

    tcp_ep_t *ep = ep_alloc(ctx, -1, addr);
    if (ep == NULL) {
        efps_error("tcp: connect: out of memory");
        return EFPS_ERR_NOMEM;
    }
    efps__tp_ep_set_name(&ep->base, param->label, ep->addr);
    ep->base.context = param->context;
    status = ep_alloc_queues(ep);
    if (status != EFPS_OK)
        goto err_free;
    status = open_socket(addr, addrlen, deadline, base->attr.timeout_ms, ep->base.name, &ep->fd);
    if (status != EFPS_OK)
        goto err_free;
    status = handshake(ep, param, deadline);
    if (status != EFPS_OK)
        goto err_close;

    ep->base.state = EFPS_TP_EP_CONNECTED;
    uint64_t now = efps__now_ms();
    atomic_store_explicit(&ep->last_rx_ms, now, memory_order_relaxed);
    atomic_store_explicit(&ep->last_tx_ms, now, memory_order_relaxed);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ep->poll_kind};
    pthread_mutex_lock(&ctx->base.lock);
    status = efps__tcp_cq_hold(ep, TCP_CQ_DISCONNECT);
    if (status == EFPS_OK && epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, ep->fd, &ev) != 0) {
        efps_error("tcp: connect to %s: epoll_ctl: %s", ep->base.name, strerror(errno));
        efps__tp_cq_unreserve(&ctx->base.cq, ep->cq_held);
        ep->cq_held = 0;
        status = EFPS_ERR_SYSTEM;
    }
    if (status == EFPS_OK) {
        ep->events = EPOLLIN;
        efps__tcp_set_heartbeat(ep);
        efps__tp_ep_link(&ctx->base, &ep->base);
    }
    pthread_mutex_unlock(&ctx->base.lock);
    if (status != EFPS_OK)
        goto err_close;
    efps_info("tcp: connected to %s", ep->base.name);
    *ep_p = &ep->base;
    return EFPS_OK;

err_close:
    close(ep->fd);
err_free:
    efps__tcp_ep_free(ep);
    return status;
}
