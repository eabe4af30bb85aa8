/* The bottom of the tcp transport: waking its progress thread (kicks through
 * an eventfd), an endpoint's epoll interest and heartbeat, and its share of
 * the completion queue. Calls nothing else of tcp: every other file of the
 * backend may use it (the files form a chain: tcp_hdr, tcp_wake, tcp_mr,
 * tcp_tx, tcp_rx, tcp_conn, tcp_ctx; tests/build/check_file_graph.py). */
#include "tcp.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Lock held for all. */
void efps__tcp_kick_ctx(tcp_ctx_t *ctx)
{
    if (ctx->kicked)
        return;
    ctx->kicked = true;
    uint64_t one = 1;
    ssize_t rc = write(ctx->evfd, &one, sizeof(one));
    (void)rc; /* EAGAIN only if the counter is huge: it is readable anyway */
}

void efps__tcp_kick(tcp_ctx_t *ctx, tcp_ep_t *ep, unsigned what)
{
    if (ep->kick == 0) {
        ep->kick_next = ctx->kicks;
        ctx->kicks = ep;
    }
    ep->kick |= what;
    efps__tcp_kick_ctx(ctx);
}

void efps__tcp_set_events(tcp_ep_t *ep, uint32_t events)
{
    if (ep->fd < 0 || ep->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = &ep->poll_kind};
    if (epoll_ctl(ep->ctx->epfd, EPOLL_CTL_MOD, ep->fd, &ev) == 0)
        ep->events = events;
    else
        efps_error("tcp: %s: epoll_ctl: %s", ep->base.name, strerror(errno));
}

void efps__tcp_set_heartbeat(tcp_ep_t *ep)
{
    tcp_ctx_t *ctx = ep->ctx;
    uint32_t t = ctx->base.attr.timeout_ms, peer = ep->peer_timeout_ms;
    if (peer != 0 && peer < t)
        t = peer < 100 ? 100 : peer; /* a peer cannot make us ping like mad */
    ep->hb_ms = t / 4;
    if (ep->hb_ms / 2 < ctx->tick_ms)
        ctx->tick_ms = ep->hb_ms / 2 > 0 ? ep->hb_ms / 2 : 1;
}

efps_status_t efps__tcp_cq_hold(tcp_ep_t *ep, tcp_cq_use_t use)
{
    const efps_tp_attr_t *attr = &ep->ctx->base.attr;
    uint32_t n = use == TCP_CQ_WRITES ? attr->sq_depth : use == TCP_CQ_RECVS ? attr->rq_depth : 1;
    if (ep->cq_uses & use)
        return EFPS_OK;
    efps_status_t status = efps__tp_cq_reserve(&ep->ctx->base.cq, n);
    if (status != EFPS_OK)
        return status;
    ep->cq_uses |= use;
    ep->cq_held += n;
    return EFPS_OK;
}
