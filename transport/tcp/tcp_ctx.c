/* The tcp transport's context: its progress thread (epoll over every socket
 * plus an eventfd that application threads use to hand it work), timers
 * (handshake deadlines, heartbeats, silent peers) and the completion queue. */
#include "tcp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

static efps_status_t tcp_probe(const efps_tp_attr_t *attr)
{
    (void)attr;
    return EFPS_OK; /* sockets exist everywhere */
}

/* ---- progress thread ------------------------------------------------------ */

/* Runs the work application threads queued. Pops one endpoint at a time, so
 * an endpoint kicked again meanwhile simply goes back on the list. */
static void run_kicks(tcp_ctx_t *ctx)
{
    pthread_mutex_lock(&ctx->base.lock);
    ctx->kicked = false;
    if (ctx->base.listeners_dirty)
        efps__tcp_close_listeners(ctx);
    if (ctx->regions_dead)
        efps__tcp_reap_dead_regions(ctx);
    for (int budget = 4096; ctx->kicks != NULL && budget > 0; budget--) {
        tcp_ep_t *ep = ctx->kicks;
        ctx->kicks = ep->kick_next;
        unsigned what = ep->kick;
        ep->kick = 0;
        if (what & TCP_KICK_DESTROY) {
            efps__tcp_ep_teardown(ep); /* the owner frees ep once we unlock */
            continue;
        }
        if ((what & TCP_KICK_RX) && efps__tcp_rx_can_resume(ep)) {
            ep->rx_blocked = false;
            atomic_store_explicit(&ep->last_rx_ms, efps__now_ms(), memory_order_relaxed);
            efps__tcp_set_events(ep, ep->events | EPOLLIN);
            pthread_mutex_unlock(&ctx->base.lock);
            efps__tcp_rx_progress(ep);
            pthread_mutex_lock(&ctx->base.lock);
        }
        if (what & TCP_KICK_TX) {
            pthread_mutex_unlock(&ctx->base.lock);
            efps__tcp_tx_progress(ep);
            pthread_mutex_lock(&ctx->base.lock);
        }
    }
    pthread_mutex_unlock(&ctx->base.lock);
}

static void check_ep_timers(tcp_ep_t *ep, uint64_t now)
{
    uint32_t timeout = ep->ctx->base.attr.timeout_ms;
    if (ep->base.state == EFPS_TP_EP_OPENING && now >= ep->deadline_ms) {
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_TIMEOUT,
                         "no complete connection request within %u ms",
                         ep->ctx->base.attr.hello_timeout_ms);
        return;
    }
    if (ep->base.state != EFPS_TP_EP_CONNECTED)
        return;
    uint64_t last_rx = atomic_load_explicit(&ep->last_rx_ms, memory_order_relaxed);
    uint64_t last_tx = atomic_load_explicit(&ep->last_tx_ms, memory_order_relaxed);
    /* A receiver that is not reading (no credit) hears nothing by its own
     * choice; its clock restarts when it reads again. */
    if (!ep->rx_blocked && now > last_rx && now - last_rx >= timeout) {
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_TIMEOUT,
                         "peer silent for %llu ms (timeout %u ms)",
                         (unsigned long long)(now - last_rx), timeout);
        return;
    }
    if (ep->tx_count == 0 && now > last_tx && now - last_tx >= ep->hb_ms) {
        efps__tcp_queue_ctrl(ep, TCP_F_PING, NULL, 0, 0);
        atomic_store_explicit(&ep->last_tx_ms, now, memory_order_relaxed);
        efps__tcp_kick(ep->ctx, ep, TCP_KICK_TX);
    }
}

static void run_timers(tcp_ctx_t *ctx, uint64_t *next_check_p)
{
    uint64_t now = efps__now_ms();
    if (now < *next_check_p)
        return;
    pthread_mutex_lock(&ctx->base.lock);
    *next_check_p = now + ctx->tick_ms;
    efps__tcp_resume_listeners(ctx);
    for (tcp_ep_t *ep = TCP_EP(ctx->base.eps), *next; ep != NULL; ep = next) {
        next = TCP_EP(ep->base.next); /* a failing internal endpoint leaves the list */
        check_ep_timers(ep, now);
    }
    pthread_mutex_unlock(&ctx->base.lock);
}

static void free_zombies(tcp_ctx_t *ctx)
{
    pthread_mutex_lock(&ctx->base.lock);
    tcp_ep_t *z = ctx->zombies;
    ctx->zombies = NULL;
    pthread_mutex_unlock(&ctx->base.lock);
    while (z != NULL) {
        tcp_ep_t *next = z->zombie_next;
        efps__tcp_ep_free(z);
        z = next;
    }
}

static void handle_event(tcp_ctx_t *ctx, const struct epoll_event *ev)
{
    tcp_poll_kind_t kind = *(tcp_poll_kind_t *)ev->data.ptr;
    if (kind == TCP_POLL_EVENTFD) {
        uint64_t count;
        ssize_t rc = read(ctx->evfd, &count, sizeof(count));
        (void)rc;
    } else if (kind == TCP_POLL_LISTENER) {
        efps__tcp_accept_sockets(
            (tcp_listener_t *)((char *)ev->data.ptr - offsetof(tcp_listener_t, poll_kind)));
    } else {
        tcp_ep_t *ep = (tcp_ep_t *)((char *)ev->data.ptr - offsetof(tcp_ep_t, poll_kind));
        if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            efps__tcp_rx_progress(ep);
        if (ev->events & (EPOLLERR | EPOLLHUP))
            efps__tcp_rx_hangup(ep);
        if (ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            efps__tcp_tx_progress(ep);
    }
}

static void *progress_main(void *arg)
{
    tcp_ctx_t *ctx = arg;
    struct epoll_event evs[64];
    uint64_t next_check = 0;
    for (;;) {
        pthread_mutex_lock(&ctx->base.lock);
        bool stop = ctx->stop, busy = ctx->kicks != NULL;
        int tick = (int)ctx->tick_ms;
        pthread_mutex_unlock(&ctx->base.lock);
        if (stop)
            break;
        int n = epoll_wait(ctx->epfd, evs, 64, busy ? 0 : tick);
        if (n < 0 && errno != EINTR) {
            efps_error("tcp: progress thread: epoll_wait: %s", strerror(errno));
            break; /* cannot happen with a valid epfd */
        }
        for (int i = 0; i < n; i++)
            handle_event(ctx, &evs[i]);
        run_kicks(ctx);
        run_timers(ctx, &next_check);
        free_zombies(ctx);
    }
    return NULL;
}

/* ---- open / close --------------------------------------------------------- */
static efps_status_t tcp_open(const efps_tp_attr_t *attr, efps_tp_ctx_t **ctx_p)
{
    efps_status_t status = EFPS_ERR_SYSTEM;
    tcp_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        efps_error("tcp: open: out of memory");
        return EFPS_ERR_NOMEM;
    }
    ctx->base.ops = &efps__tcp_ops;
    ctx->base.attr = *attr;
    /* The timers see a handshake deadline at most an eighth of it late. */
    uint32_t shortest =
        attr->hello_timeout_ms < attr->timeout_ms ? attr->hello_timeout_ms : attr->timeout_ms;
    ctx->tick_ms = shortest / 8 > 0 ? shortest / 8 : 1;
    ctx->evfd_kind = TCP_POLL_EVENTFD;
    if (efps__tp_base_init(&ctx->base) != EFPS_OK) {
        efps_error("tcp: open: cannot create a mutex");
        goto err_free;
    }
    ctx->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ctx->epfd < 0) {
        efps_error("tcp: open: epoll_create1: %s", strerror(errno));
        goto err_sync;
    }
    ctx->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ctx->evfd < 0) {
        efps_error("tcp: open: eventfd: %s", strerror(errno));
        goto err_epoll;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ctx->evfd_kind};
    if (epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, ctx->evfd, &ev) != 0) {
        efps_error("tcp: open: epoll_ctl: %s", strerror(errno));
        goto err_evfd;
    }
    int rc = pthread_create(&ctx->thread, NULL, progress_main, ctx);
    if (rc != 0) {
        efps_error("tcp: open: cannot start the progress thread: %s", strerror(rc));
        goto err_evfd;
    }
    *ctx_p = &ctx->base;
    return EFPS_OK;

err_evfd:
    close(ctx->evfd);
err_epoll:
    close(ctx->epfd);
err_sync:
    efps__tp_base_destroy(&ctx->base);
err_free:
    free(ctx);
    return status;
}

static void tcp_close(efps_tp_ctx_t *base)
{
    tcp_ctx_t *ctx = TCP_CTX(base);
    pthread_mutex_lock(&ctx->base.lock);
    ctx->stop = true;
    efps__tcp_kick_ctx(ctx);
    pthread_mutex_unlock(&ctx->base.lock);
    pthread_join(ctx->thread, NULL);

    /* Alone now: free whatever the application left open. */
    free_zombies(ctx);
    while (TCP_EP(ctx->base.eps) != NULL) {
        tcp_ep_t *ep = TCP_EP(ctx->base.eps);
        if (ep->base.state == EFPS_TP_EP_CONNECTED || ep->base.state == EFPS_TP_EP_DOWN)
            efps_debug("tcp: close: endpoint %s was still open", ep->base.name);
        efps__tcp_ep_teardown(ep); /* unlinks it */
        efps__tcp_ep_free(ep);
    }
    free_zombies(ctx);
    while (ctx->listeners != NULL) {
        tcp_listener_t *l = ctx->listeners;
        ctx->listeners = l->next;
        close(l->fd);
        free(l);
    }
    for (uint32_t i = 0; i < ctx->n_regions; i++)
        free(ctx->regions[i]); /* no keys left: every endpoint's teardown took its own */
    free(ctx->regions);
    close(ctx->evfd);
    close(ctx->epfd);
    efps__tp_base_destroy(&ctx->base);
    free(ctx);
}

static void tcp_kick(efps_tp_ctx_t *ctx)
{
    efps__tcp_kick_ctx(TCP_CTX(ctx));
}

static void tcp_ep_free(efps_tp_ep_t *ep)
{
    efps__tcp_ep_free(TCP_EP(ep));
}

const struct efps_transport_ops efps__tcp_ops = {
    .name = "tcp",
    .id = EFPS_TP_ID_TCP,
    .probe = tcp_probe,
    .open = tcp_open,
    .close = tcp_close,
    .mem_reg = efps__tcp_mem_reg,
    .mem_dereg = efps__tcp_mem_dereg,
    .mem_expose = efps__tcp_mem_expose,
    .listen = efps__tcp_listen,
    .accept = efps__tcp_accept,
    .connect = efps__tcp_connect,
    .ep_teardown = efps__tcp_ep_teardown_start,
    .ep_free = tcp_ep_free,
    .write_imm = efps__tcp_write_imm,
    .msg_send = efps__tcp_msg_send,
    .rx_credit = efps__tcp_rx_credit,
    .request_taken = efps__tcp_request_taken,
    .ep_failed = efps__tcp_ep_failed,
    .kick = tcp_kick,
};
