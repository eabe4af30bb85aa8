/* The receiving side of the tcp transport: a per-connection state machine
 * (header, then payload) run by the progress thread. Every header is checked
 * in full (magic, version, frame type for the connection's state, unused
 * fields zero, and for a write: region id, secret, remote-write access and
 * offset + length inside the region) before a single payload byte is read;
 * the payload then goes from the socket straight into its region. Anything
 * wrong closes that connection with a logged error naming the peer. */
#include "tcp.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

/* Fails the connection for a protocol violation; evaluates to false. */
#define violation(ep, ...)                                                                         \
    (efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_PROTO, __VA_ARGS__), false)

/* Lock held: stops reading until the application gives credit back. */
static bool block(tcp_ep_t *ep)
{
    ep->rx_blocked = true;
    efps__tcp_set_events(ep, ep->events & ~EPOLLIN);
    return false;
}

bool efps__tcp_rx_can_resume(const tcp_ep_t *ep)
{
    if (!ep->rx_blocked || ep->fd < 0)
        return false;
    if (ep->rx_hdr.type == TCP_F_WRITE)
        return ep->base.rq_used < ep->ctx->base.attr.rq_depth;
    return !efps__tp_msgq_full(&ep->base.msgs);
}

/* Lock held. Checks a WRITE header against the region table and the keys
 * this endpoint was given, and aims the payload at the region. false: the
 * endpoint failed or must wait. */
static bool start_write(tcp_ep_t *ep)
{
    const tcp_hdr_t *h = &ep->rx_hdr;
    tcp_mr_t *mr = efps__tcp_region(ep->ctx, h->region);
    if (mr == NULL)
        return violation(ep, "write to region %u, which does not exist", h->region);
    if (!(mr->base.access & EFPS_TP_ACCESS_REMOTE_WRITE))
        return violation(ep, "write to region %u, which does not allow remote writes", h->region);
    const tcp_expo_t *x = efps__tcp_expo_find(mr, h->secret);
    if (x == NULL)
        return violation(ep, "write to region %u with a wrong key", h->region);
    if (x->ep != ep)
        return violation(ep, "write to region %u with the key of another connection (%s)",
                         h->region, x->ep->base.name);
    uint64_t size = mr->base.length;
    if (h->offset > size || h->length > size - h->offset)
        return violation(ep, "write of %u bytes at offset %llu is outside region %u (%llu bytes)",
                         h->length, (unsigned long long)h->offset, h->region,
                         (unsigned long long)size);
    if (ep->base.rq_used >= ep->ctx->base.attr.rq_depth)
        return block(ep);
    ep->base.rq_used++;
    mr->rx_busy++;
    ep->rx_region = mr;
    ep->rx_dst = (uint8_t *)mr->base.addr + h->offset;
    ep->rx_want = h->length;
    return true;
}

/* Lock held: the frame's payload is all here (or it had none). */
static bool finish_frame(tcp_ep_t *ep)
{
    tcp_ctx_t *ctx = ep->ctx;
    const tcp_hdr_t *h = &ep->rx_hdr;
    ep->rx_state = TCP_RX_HEADER;
    switch ((tcp_frame_t)h->type) {
    case TCP_F_WRITE: {
        efps_tp_cqe_t cqe = {.type = EFPS_TP_CQE_RECV,
                             .status = EFPS_OK,
                             .ep = &ep->base,
                             .imm = h->imm,
                             .length = h->length};
        efps__tp_push_cqe(&ctx->base, &cqe);
        ep->rx_region->rx_busy--;
        if (ep->rx_region->dead)
            pthread_cond_broadcast(&ctx->base.ev_cond);
        ep->rx_region = NULL;
        break;
    }
    case TCP_F_MSG:
        efps__tp_msgq_arrived(&ep->base, h->length);
        break;
    case TCP_F_CONNECT: {
        tcp_listener_t *l = ep->listener;
        ep->req.priv_len = (uint8_t)h->length;
        ep->peer_timeout_ms = h->imm;
        ep->base.state = EFPS_TP_EP_QUEUED;
        efps__tp_listen_queue(&l->base, &ep->req);
        efps_debug("tcp: connection request from %s (%u bytes of private data)", ep->addr,
                   h->length);
        break;
    }
    case TCP_F_BYE:
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_INFO, EFPS_OK, "the peer disconnected");
        return false;
    default: /* PING: it arrived, that was all it had to say */
        break;
    }
    return true;
}

static tcp_phase_t phase_of(efps_tp_ep_state_t state)
{
    return state == EFPS_TP_EP_OPENING     ? TCP_PHASE_HANDSHAKE
           : state == EFPS_TP_EP_CONNECTED ? TCP_PHASE_OPEN
                                           : TCP_PHASE_CLOSED;
}

/* Lock held: a whole header has arrived. Validates it and decides where its
 * payload goes. false: the endpoint failed, or waits for credit. */
static bool start_frame(tcp_ep_t *ep)
{
    char why[160];
    tcp_hdr_t *h = &ep->rx_hdr;
    if (efps__tcp_hdr_check(ep->rx_hdr_buf, TCP_HDR_LEN, phase_of(ep->base.state), h, why,
                            sizeof(why)) != EFPS_OK)
        return violation(ep, "%s", why);
    ep->rx_want = h->length;
    switch ((tcp_frame_t)h->type) {
    case TCP_F_WRITE:
        if (!start_write(ep))
            return false;
        break;
    case TCP_F_MSG:
        if (efps__tp_msgq_full(&ep->base.msgs))
            return block(ep);
        ep->rx_dst = efps__tp_msgq_tail(&ep->base.msgs);
        if (ep->rx_dst == NULL) {
            efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_NOMEM,
                             "out of memory for a message");
            return false;
        }
        break;
    case TCP_F_CONNECT:
        ep->rx_dst = ep->req.priv;
        break;
    default: /* PING, BYE */
        break;
    }
    ep->rx_hdr_got = 0; /* the header is used: the next one starts afresh */
    ep->rx_got = 0;
    if (ep->rx_want == 0)
        return finish_frame(ep);
    ep->rx_state = TCP_RX_PAYLOAD;
    return true;
}

/* Lock held: the peer closed its side. Says what it interrupted. */
static void on_eof(tcp_ep_t *ep)
{
    bool internal = ep->base.state == EFPS_TP_EP_OPENING || ep->base.state == EFPS_TP_EP_QUEUED;
    if (ep->rx_state == TCP_RX_PAYLOAD)
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_PEER,
                         "closed in the middle of a %s frame (%zu of %zu payload bytes)",
                         efps__tcp_frame_name(ep->rx_hdr.type), ep->rx_got, ep->rx_want);
    else if (ep->rx_hdr_got > 0)
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, internal ? EFPS_ERR_PROTO : EFPS_ERR_PEER,
                         "truncated frame header (%zu of %d bytes), then closed", ep->rx_hdr_got,
                         TCP_HDR_LEN);
    else if (internal && ep->rx_total == 0)
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_DEBUG, EFPS_ERR_PEER,
                         "closed without sending anything");
    else if (internal || ep->base.state == EFPS_TP_EP_REQUEST)
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_WARN, EFPS_ERR_PEER,
                         "closed before it was accepted");
    else
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_PEER,
                         "the peer closed the connection without saying goodbye");
}

void efps__tcp_rx_progress(tcp_ep_t *ep)
{
    tcp_ctx_t *ctx = ep->ctx;
    /* A bounded number of reads per event, so one busy peer cannot starve
     * the others: level-triggered epoll brings us back. */
    for (int round = 0; round < 32; round++) {
        if (ep->fd < 0 || ep->rx_blocked)
            return;
        if (ep->rx_state == TCP_RX_HEADER_READY) {
            pthread_mutex_lock(&ctx->base.lock);
            bool go = start_frame(ep);
            pthread_mutex_unlock(&ctx->base.lock);
            if (!go)
                return;
            continue;
        }
        /* The payload goes straight to its place; the next header may come
         * in the same call, into the header buffer. */
        struct iovec iov[2];
        int n = 0;
        if (ep->rx_state == TCP_RX_PAYLOAD)
            iov[n++] = (struct iovec){ep->rx_dst + ep->rx_got, ep->rx_want - ep->rx_got};
        iov[n++] = (struct iovec){ep->rx_hdr_buf + ep->rx_hdr_got, TCP_HDR_LEN - ep->rx_hdr_got};
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t got = recvmsg(ep->fd, &msg, MSG_DONTWAIT);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            int err = errno;
            pthread_mutex_lock(&ctx->base.lock);
            if (got == 0)
                on_eof(ep);
            else
                efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_PEER, "receive failed: %s",
                                 strerror(err));
            pthread_mutex_unlock(&ctx->base.lock);
            return;
        }
        atomic_store_explicit(&ep->last_rx_ms, efps__now_ms(), memory_order_relaxed);
        ep->rx_total += (uint64_t)got;
        size_t left = (size_t)got;
        if (ep->rx_state == TCP_RX_PAYLOAD) {
            size_t take = ep->rx_want - ep->rx_got < left ? ep->rx_want - ep->rx_got : left;
            ep->rx_got += take;
            left -= take;
            if (ep->rx_got == ep->rx_want) {
                pthread_mutex_lock(&ctx->base.lock);
                bool go = finish_frame(ep);
                pthread_mutex_unlock(&ctx->base.lock);
                if (!go)
                    return;
            }
        }
        ep->rx_hdr_got += left;
        if (ep->rx_hdr_got == TCP_HDR_LEN)
            ep->rx_state = TCP_RX_HEADER_READY;
    }
}

void efps__tcp_rx_hangup(tcp_ep_t *ep)
{
    tcp_ctx_t *ctx = ep->ctx;
    pthread_mutex_lock(&ctx->base.lock);
    if (ep->fd >= 0 && ep->rx_blocked) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(ep->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_PEER, "connection lost: %s",
                         err ? strerror(err) : "hang-up");
    }
    pthread_mutex_unlock(&ctx->base.lock);
}

void efps__tcp_rx_credit(efps_tp_ep_t *base, bool message)
{
    (void)message; /* either may be what the blocked receive waits for */
    tcp_ep_t *ep = TCP_EP(base);
    if (ep->rx_blocked)
        efps__tcp_kick(ep->ctx, ep, TCP_KICK_RX);
}
