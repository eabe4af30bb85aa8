/* The sending side of the tcp transport. Application threads queue frames
 * (a header, and a payload pointer into a registered region or a message
 * slot); the progress thread hands header and payload to the kernel with one
 * sendmsg over many frames, straight from where the bytes live. */
#include "tcp.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define TX_IOV 64 /* iovecs per sendmsg: 32 frames of header + payload */

static tcp_tx_t *tx_tail(tcp_ep_t *ep)
{
    assert(ep->tx_count < ep->tx_cap);
    return &ep->txq[(ep->tx_head + ep->tx_count) % ep->tx_cap];
}

/* Lock held: why the endpoint cannot take new work, or EFPS_OK. */
static efps_status_t usable(const tcp_ep_t *ep)
{
    return ep->base.state == EFPS_TP_EP_CONNECTED ? EFPS_OK : EFPS_ERR_PEER;
}

static void queue_frame(tcp_ep_t *ep, tcp_frame_t type, const void *payload, uint32_t len,
                        tcp_tx_kind_t kind)
{
    tcp_tx_t *t = tx_tail(ep);
    tcp_hdr_t h = tcp_hdr_make(type, len);
    tcp_hdr_encode(&h, t->hdr);
    t->payload = payload;
    t->len = len;
    t->kind = (uint8_t)kind;
    t->mr = NULL;
    ep->tx_count++;
}

void efps__tcp_queue_ctrl(tcp_ep_t *ep, tcp_frame_t type, const void *payload, uint32_t len,
                          uint32_t imm)
{
    queue_frame(ep, type, payload, len, TCP_TX_CTRL);
    tcp_tx_t *t = &ep->txq[(ep->tx_head + ep->tx_count - 1) % ep->tx_cap];
    efps__put_le(t->hdr + 12, imm, 4); /* the header's imm field */
}

efps_status_t efps__tcp_write_imm(efps_tp_ep_t *base, efps_tp_mr_t *local, size_t local_offset,
                                  size_t length, const efps_tp_rkey_t *remote,
                                  uint64_t remote_offset, uint32_t imm, uint64_t user_context)
{
    tcp_ep_t *ep = TCP_EP(base);
    tcp_ctx_t *ctx = ep->ctx;
    pthread_mutex_lock(&ctx->base.lock);
    efps_status_t status = usable(ep);
    if (status == EFPS_OK && ep->base.sq_used >= ctx->base.attr.sq_depth)
        status = EFPS_ERR_NO_RESOURCE;
    if (status == EFPS_OK) /* allocates once, at the endpoint's first write */
        status = efps__tcp_cq_hold(ep, TCP_CQ_WRITES);
    if (status != EFPS_OK) {
        pthread_mutex_unlock(&ctx->base.lock);
        return status;
    }
    tcp_tx_t *t = tx_tail(ep);
    tcp_hdr_t h = tcp_hdr_make(TCP_F_WRITE, (uint32_t)length);
    h.imm = imm;
    h.region = remote->key;
    h.secret = remote->base;
    h.offset = remote_offset;
    tcp_hdr_encode(&h, t->hdr);
    t->payload = (const uint8_t *)local->addr + local_offset;
    t->len = (uint32_t)length;
    t->kind = TCP_TX_WRITE;
    t->context = user_context;
    t->mr = (tcp_mr_t *)local;
    t->mr->tx_refs++;
    ep->tx_count++;
    ep->base.sq_used++;
    efps__tcp_kick(ctx, ep, TCP_KICK_TX);
    pthread_mutex_unlock(&ctx->base.lock);
    return EFPS_OK;
}

efps_status_t efps__tcp_msg_send(efps_tp_ep_t *base, const void *buf, size_t len)
{
    tcp_ep_t *ep = TCP_EP(base);
    tcp_ctx_t *ctx = ep->ctx;
    pthread_mutex_lock(&ctx->base.lock);
    efps_status_t status = usable(ep);
    if (status == EFPS_OK && ep->msg_tx_inflight >= EFPS_TP_MSG_DEPTH)
        status = EFPS_ERR_NO_RESOURCE;
    if (status != EFPS_OK) {
        pthread_mutex_unlock(&ctx->base.lock);
        return status;
    }
    /* Messages leave in order, so their slots are reused in order too; a
     * slot is made the first time it is needed (a peer refused after one
     * message never costs the other seven). */
    uint8_t **slot_p = &ep->msg_tx_slot[ep->msg_tx_seq % EFPS_TP_MSG_DEPTH];
    if (*slot_p == NULL && (*slot_p = malloc(EFPS_TP_MSG_MAX)) == NULL) {
        pthread_mutex_unlock(&ctx->base.lock);
        efps_error("tcp: message to %s: out of memory", base->name);
        return EFPS_ERR_NOMEM;
    }
    uint8_t *slot = *slot_p;
    memcpy(slot, buf, len);
    ep->msg_tx_seq++;
    ep->msg_tx_inflight++;
    queue_frame(ep, TCP_F_MSG, slot, (uint32_t)len, TCP_TX_MSG);
    efps__tcp_kick(ctx, ep, TCP_KICK_TX);
    pthread_mutex_unlock(&ctx->base.lock);
    return EFPS_OK;
}

/* Lock held: the head frame is gone (sent or flushed); report it. */
static void finish_head(tcp_ep_t *ep, efps_status_t status)
{
    tcp_tx_t *t = &ep->txq[ep->tx_head];
    if (t->kind == TCP_TX_WRITE) {
        efps_tp_cqe_t cqe = {.type = EFPS_TP_CQE_WRITE,
                             .status = status,
                             .ep = &ep->base,
                             .context = t->context,
                             .length = t->len};
        t->mr->tx_refs--;
        efps__tp_push_cqe(&ep->ctx->base, &cqe);
    } else if (t->kind == TCP_TX_MSG) {
        ep->msg_tx_inflight--;
    }
    ep->tx_head = (ep->tx_head + 1) % ep->tx_cap;
    ep->tx_count--;
}

void efps__tcp_tx_flush(tcp_ep_t *ep)
{
    while (ep->tx_count > 0)
        finish_head(ep, EFPS_ERR_PEER);
    ep->tx_done = 0;
}

/* Lock held: sent more bytes, counted from the head frame's unsent part. */
static void account_sent(tcp_ep_t *ep, size_t sent)
{
    size_t done = ep->tx_done + sent;
    while (ep->tx_count > 0) {
        size_t size = TCP_HDR_LEN + (size_t)ep->txq[ep->tx_head].len;
        if (done < size)
            break;
        done -= size;
        finish_head(ep, EFPS_OK);
    }
    ep->tx_done = done;
}

/* Lock held: the unsent bytes of the queued frames, as iovecs. */
static int gather(const tcp_ep_t *ep, struct iovec *iov, size_t *total_p)
{
    int n = 0;
    size_t skip = ep->tx_done, total = 0;
    for (uint32_t i = 0; i < ep->tx_count && n + 2 <= TX_IOV; i++) {
        const tcp_tx_t *t = &ep->txq[(ep->tx_head + i) % ep->tx_cap];
        if (skip < TCP_HDR_LEN) {
            iov[n++] = (struct iovec){(void *)(t->hdr + skip), TCP_HDR_LEN - skip};
            total += TCP_HDR_LEN - skip;
            skip = 0;
        } else {
            skip -= TCP_HDR_LEN;
        }
        if (t->len > skip) {
            iov[n++] = (struct iovec){(void *)(t->payload + skip), t->len - skip};
            total += t->len - skip;
        }
        skip = 0;
    }
    *total_p = total;
    return n;
}

void efps__tcp_tx_progress(tcp_ep_t *ep)
{
    tcp_ctx_t *ctx = ep->ctx;
    struct iovec iov[TX_IOV];
    bool more = false;
    pthread_mutex_lock(&ctx->base.lock);
    for (int round = 0; round < 16; round++) {
        more = false;
        if (ep->fd < 0 || ep->base.state != EFPS_TP_EP_CONNECTED || ep->tx_count == 0)
            break;
        size_t total;
        struct msghdr msg = {.msg_iov = iov};
        msg.msg_iovlen = (size_t)gather(ep, iov, &total);
        int fd = ep->fd;
        pthread_mutex_unlock(&ctx->base.lock);
        ssize_t sent = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        int err = errno;
        pthread_mutex_lock(&ctx->base.lock);
        if (sent < 0 && err == EINTR)
            continue;
        if (sent < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
            more = true;
            break;
        }
        if (sent < 0) {
            efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_PEER, "send failed: %s",
                             strerror(err));
            break;
        }
        atomic_store_explicit(&ep->last_tx_ms, efps__now_ms(), memory_order_relaxed);
        account_sent(ep, (size_t)sent);
        more = ep->tx_count > 0;
        if ((size_t)sent < total)
            break; /* the socket is full: wait for EPOLLOUT */
    }
    /* Ask for EPOLLOUT only while something waits to be sent. */
    if (ep->fd >= 0)
        efps__tcp_set_events(ep, more ? (ep->events | EPOLLOUT) : (ep->events & ~EPOLLOUT));
    pthread_mutex_unlock(&ctx->base.lock);
}

void efps__tcp_tx_flush_now(tcp_ep_t *ep)
{
    struct iovec iov[TX_IOV];
    for (int round = 0; round < 16 && ep->fd >= 0 && ep->tx_count > 0; round++) {
        size_t total;
        struct msghdr msg = {.msg_iov = iov};
        msg.msg_iovlen = (size_t)gather(ep, iov, &total);
        ssize_t sent = sendmsg(ep->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent <= 0)
            return;
        account_sent(ep, (size_t)sent);
        if ((size_t)sent < total)
            return;
    }
}
