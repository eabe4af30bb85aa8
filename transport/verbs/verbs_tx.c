/* The sending side of the verbs transport. Writes and messages enter the
 * endpoint's pending queue in the application's order and are posted from
 * its head as soon as the peer has credit and the send queue has room (in
 * the caller's thread when they are there already, else by whoever returns
 * them: the progress thread on a CREDIT or a send completion). Writes go
 * from the application's registered region to the peer's, with no copy;
 * messages are copied once into the endpoint's registered slots and sent in
 * VERBS_RX_BUF chunks. Every send is signalled: the posted ring is freed in
 * order as completions come, and each write's last work request reports the
 * application's EFPS_TP_CQE_WRITE. */
#include "verbs.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

/* ---- endpoint queues ------------------------------------------------------ */
efps_status_t efps__verbs_ep_alloc_queues(verbs_ep_t *ep)
{
    const efps_tp_attr_t *attr = &ep->ctx->base.attr;
    /* Room for the pieces of long writes besides one request per write. */
    ep->sq_cap = 2 * attr->sq_depth + EFPS_TP_MSG_DEPTH * VERBS_MSG_CHUNKS + VERBS_CTRL_DEPTH;
    size_t txbytes =
        (size_t)EFPS_TP_MSG_DEPTH * EFPS_TP_MSG_MAX + VERBS_HELLO_LEN + 4u * ep->sq_cap;
    ep->pend_cap = attr->sq_depth + EFPS_TP_MSG_DEPTH;
    ep->rx_window = attr->rq_depth + EFPS_TP_MSG_DEPTH * VERBS_MSG_CHUNKS + VERBS_CTRL_DEPTH;
    ep->msg_credits = EFPS_TP_MSG_DEPTH;
    ep->pend = calloc(ep->pend_cap, sizeof(*ep->pend));
    ep->posted = calloc(ep->sq_cap, sizeof(*ep->posted));
    ep->txbuf = efps_aligned_calloc(txbytes);
    if (ep->pend == NULL || ep->posted == NULL || ep->txbuf == NULL) {
        efps_error("verbs: %s: out of memory for the endpoint's queues", ep->base.name);
        return EFPS_ERR_NOMEM;
    }
    ep->txbuf_mr = ibv_reg_mr(ep->ctx->pd, ep->txbuf, txbytes, 0);
    if (ep->txbuf_mr == NULL) {
        int err = efps__verbs_ptr_errno();
        efps_error("verbs: %s: register the message buffers: %s", ep->base.name, strerror(err));
        return efps__verbs_errno_status(err);
    }
    return EFPS_OK;
}

void efps__verbs_ep_free_queues(verbs_ep_t *ep)
{
    if (ep->txbuf_mr != NULL)
        ibv_dereg_mr(ep->txbuf_mr);
    efps_aligned_free(ep->txbuf);
    efps__tp_msgq_free(&ep->base.msgs);
    free(ep->posted);
    free(ep->pend);
    ep->txbuf_mr = NULL;
    ep->txbuf = NULL;
    ep->posted = NULL;
    ep->pend = NULL;
}

/* ---- posting (lock held) -------------------------------------------------- */
static uint32_t sq_room(const verbs_ep_t *ep)
{
    return ep->sq_cap - (uint32_t)(ep->post_seq - ep->done_seq);
}

static bool can_send(const verbs_ep_t *ep)
{
    return ep->base.state == EFPS_TP_EP_CONNECTED && ep->established && ep->closing == VCLOSE_NONE;
}

/* Posts one signalled work request and remembers what it was. A failure here
 * can only be a bug or a dead queue pair (credits and room were checked):
 * the endpoint fails. */
static bool post(verbs_ep_t *ep, struct ibv_send_wr *wr, const verbs_posted_t *what)
{
    struct ibv_send_wr *bad = NULL;
    wr->wr_id = ep->post_seq;
    wr->send_flags |= IBV_SEND_SIGNALED;
    wr->next = NULL;
    int rc = ibv_post_send(ep->qp, wr, &bad);
    if (rc != 0) {
        int err = efps__verbs_errno(rc);
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR,
                         efps__verbs_errno_status(err) == EFPS_ERR_NOMEM ? EFPS_ERR_NO_RESOURCE
                                                                         : EFPS_ERR_TRANSPORT,
                         "ibv_post_send: %s", strerror(err));
        return false;
    }
    ep->posted[ep->post_seq % ep->sq_cap] = *what;
    ep->post_seq++;
    ep->last_tx_ms = efps__now_ms();
    return true;
}

/* Tells the peer the whole length of a split write (LEN, before its last
 * request). The payload sits in the slot of the LEN's own send, free again
 * when that completes. */
static bool post_len(verbs_ep_t *ep, uint32_t len)
{
    uint8_t *p = ep->txbuf + (size_t)EFPS_TP_MSG_DEPTH * EFPS_TP_MSG_MAX + VERBS_HELLO_LEN +
                 4u * (ep->post_seq % ep->sq_cap);
    efps__put_le(p, len, 4);
    struct ibv_sge sge = {.addr = (uintptr_t)p, .length = 4, .lkey = ep->txbuf_mr->lkey};
    struct ibv_send_wr wr = {.sg_list = &sge,
                             .num_sge = 1,
                             .opcode = IBV_WR_SEND_WITH_IMM,
                             .imm_data = htonl(verbs_imm_type(VERBS_T_LEN))};
    verbs_posted_t what = {.kind = VTX_LEN};
    if (!post(ep, &wr, &what))
        return false;
    ep->wr_credits--;
    return true;
}

/* Posts what it can of a write; true once its last request is posted. */
static bool post_write(verbs_ep_t *ep, verbs_op_t *op)
{
    const uint32_t max = ep->ctx->max_msg;
    while (ep->peer_known) {
        uint32_t left = op->len - op->done;
        bool last = left <= max;
        /* A split write's last request follows its LEN; each takes a credit
         * (with a window of one, the LEN's comes back first). */
        if (last && op->done > 0 && !op->len_sent) {
            if (ep->wr_credits == 0 || sq_room(ep) <= VERBS_CTRL_DEPTH || !post_len(ep, op->len))
                return false;
            op->len_sent = true;
        }
        if ((last && ep->wr_credits == 0) || sq_room(ep) <= VERBS_CTRL_DEPTH)
            return false;
        uint32_t n = last ? left : max;
        struct ibv_sge sge = {.addr = (uintptr_t)op->mr->base.addr + op->local_offset + op->done,
                              .length = n,
                              .lkey = op->mr->mr->lkey};
        struct ibv_send_wr wr = {.sg_list = n > 0 ? &sge : NULL,
                                 .num_sge = n > 0 ? 1 : 0,
                                 .opcode = last ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE,
                                 .imm_data = last ? htonl(op->imm) : 0};
        wr.wr.rdma.remote_addr = op->remote_addr + op->done;
        wr.wr.rdma.rkey = op->rkey;
        verbs_posted_t what = {.kind = last ? VTX_WRITE : VTX_WRITE_PART,
                               .len = op->len,
                               .context = op->context,
                               .mr = op->mr};
        if (!post(ep, &wr, &what))
            return false;
        op->done += n;
        if (last) {
            ep->wr_credits--;
            return true;
        }
    }
    return false; /* the acceptor waits for the connector's HELLO */
}

static bool post_msg(verbs_ep_t *ep, const verbs_op_t *op)
{
    uint32_t chunks = (op->len + VERBS_RX_BUF - 1) / VERBS_RX_BUF;
    if (ep->msg_credits == 0 || sq_room(ep) < chunks + VERBS_CTRL_DEPTH)
        return false;
    uint8_t *slot = ep->txbuf + (size_t)op->slot * EFPS_TP_MSG_MAX;
    for (uint32_t i = 0; i < chunks; i++) {
        uint32_t off = i * VERBS_RX_BUF;
        uint32_t n = op->len - off < VERBS_RX_BUF ? op->len - off : VERBS_RX_BUF;
        struct ibv_sge sge = {
            .addr = (uintptr_t)(slot + off), .length = n, .lkey = ep->txbuf_mr->lkey};
        struct ibv_send_wr wr = {.sg_list = &sge,
                                 .num_sge = 1,
                                 .opcode = IBV_WR_SEND_WITH_IMM,
                                 .imm_data = htonl(verbs_imm_msg(op->len))};
        verbs_posted_t what = {.kind = VTX_MSG, .last = i + 1 == chunks};
        if (!post(ep, &wr, &what))
            return false;
    }
    ep->msg_credits--;
    return true;
}

void efps__verbs_tx_progress(verbs_ep_t *ep)
{
    while (ep->pend_count > 0 && can_send(ep)) {
        verbs_op_t *op = &ep->pend[ep->pend_head];
        bool done = op->kind == VTX_WRITE ? post_write(ep, op) : post_msg(ep, op);
        if (!done || ep->base.state != EFPS_TP_EP_CONNECTED)
            return; /* no credit or room yet; or the endpoint failed (queue flushed) */
        ep->pend_head = (ep->pend_head + 1) % ep->pend_cap;
        ep->pend_count--;
    }
}

/* A control message (no payload unless len): uses the reserved send slots. */
static bool post_ctrl(verbs_ep_t *ep, verbs_tx_kind_t kind, uint32_t imm, uint32_t len)
{
    struct ibv_sge sge = {.addr =
                              (uintptr_t)(ep->txbuf + (size_t)EFPS_TP_MSG_DEPTH * EFPS_TP_MSG_MAX),
                          .length = len,
                          .lkey = ep->txbuf_mr->lkey};
    struct ibv_send_wr wr = {.sg_list = len > 0 ? &sge : NULL,
                             .num_sge = len > 0 ? 1 : 0,
                             .opcode = IBV_WR_SEND_WITH_IMM,
                             .imm_data = htonl(imm)};
    verbs_posted_t what = {.kind = (uint8_t)kind};
    return post(ep, &wr, &what);
}

void efps__verbs_send_credit(verbs_ep_t *ep, bool ping)
{
    /* Write credit goes back in batches of a quarter of the window: a
     * writer can only be starved while three quarters of its window wait
     * unpolled here, so it waits for our application, never for us. Message
     * credit goes back at once (handshakes wait on single messages). A ping
     * takes whatever is owed. */
    uint32_t batch = ep->ctx->base.attr.rq_depth / 4 > 0 ? ep->ctx->base.attr.rq_depth / 4 : 1;
    if (!can_send(ep) || ep->credit_inflight)
        return;
    if (!ping && ep->owed_writes < batch && ep->owed_msgs == 0)
        return;
    uint32_t w = ep->owed_writes < VERBS_CR_MAX_WRITES ? ep->owed_writes : VERBS_CR_MAX_WRITES;
    uint32_t m = ep->owed_msgs < 15 ? ep->owed_msgs : 15;
    if (!post_ctrl(ep, VTX_CREDIT, verbs_imm_credit(w, m), 0))
        return;
    ep->owed_writes -= w;
    ep->owed_msgs -= m;
    ep->credit_inflight = true;
}

efps_status_t efps__verbs_send_hello(verbs_ep_t *ep)
{
    uint8_t *p = ep->txbuf + (size_t)EFPS_TP_MSG_DEPTH * EFPS_TP_MSG_MAX;
    memset(p, 0, VERBS_HELLO_LEN);
    efps__put_le(p, VERBS_WIRE_MAGIC, 4);
    p[4] = VERBS_WIRE_VERSION;
    efps__put_le(p + 8, ep->ctx->base.attr.rq_depth, 4);
    efps__put_le(p + 12, ep->ctx->base.attr.timeout_ms, 4);
    return post_ctrl(ep, VTX_HELLO, verbs_imm_type(VERBS_T_HELLO), VERBS_HELLO_LEN) ? EFPS_OK
                                                                                    : EFPS_ERR_PEER;
}

efps_status_t efps__verbs_send_bye(verbs_ep_t *ep)
{
    return post_ctrl(ep, VTX_BYE, verbs_imm_type(VERBS_T_BYE), 0) ? EFPS_OK : EFPS_ERR_PEER;
}

efps_status_t efps__verbs_post_bind(verbs_ep_t *ep, verbs_expo_t *x)
{
    struct ibv_send_wr wr = {.opcode = IBV_WR_BIND_MW};
    wr.bind_mw.mw = x->mw;
    wr.bind_mw.rkey = ibv_inc_rkey(x->mw->rkey);
    wr.bind_mw.bind_info = (struct ibv_mw_bind_info){.mr = x->mr->mr,
                                                     .addr = (uintptr_t)x->mr->base.addr,
                                                     .length = x->mr->base.length,
                                                     .mw_access_flags = IBV_ACCESS_REMOTE_WRITE};
    verbs_posted_t what = {.kind = VTX_BIND, .expo = x};
    x->rkey.key = wr.bind_mw.rkey;
    if (!post(ep, &wr, &what))
        return EFPS_ERR_PEER;
    ep->bind_inflight = true;
    return EFPS_OK;
}

/* ---- completions (lock held) ------------------------------------------------ */

/* Reports a finished posted send (a write's WRITE completion). */
static void finish_posted(verbs_ep_t *ep, const verbs_posted_t *p, efps_status_t status)
{
    switch ((verbs_tx_kind_t)p->kind) {
    case VTX_WRITE: {
        efps_tp_cqe_t cqe = {.type = EFPS_TP_CQE_WRITE,
                             .status = status == EFPS_OK ? EFPS_OK : EFPS_ERR_PEER,
                             .ep = &ep->base,
                             .context = p->context,
                             .length = p->len};
        p->mr->tx_refs--;
        efps__tp_push_cqe(&ep->ctx->base, &cqe);
        break;
    }
    case VTX_MSG:
        if (p->last)
            ep->msg_tx_inflight--;
        break;
    case VTX_CREDIT:
        ep->credit_inflight = false;
        break;
    case VTX_BYE:
        ep->bye_done = true;
        break;
    case VTX_BIND:
        p->expo->state = status == EFPS_OK ? 1 : -1;
        ep->bind_inflight = false;
        pthread_cond_broadcast(&ep->ctx->base.ev_cond); /* the exposing thread waits */
        break;
    case VTX_WRITE_PART:
    case VTX_HELLO:
    case VTX_LEN:
        break;
    }
}

static const char *kind_name(verbs_tx_kind_t kind)
{
    switch (kind) {
    case VTX_WRITE_PART:
    case VTX_WRITE:
    case VTX_LEN:
        return "write";
    case VTX_MSG:
        return "message";
    case VTX_CREDIT:
        return "credit update";
    case VTX_HELLO:
        return "HELLO";
    case VTX_BYE:
        return "goodbye";
    case VTX_BIND:
        return "memory window bind";
    }
    return "send";
}

void efps__verbs_tx_complete(verbs_ep_t *ep, const struct ibv_wc *wc)
{
    if (ep->done_seq == ep->post_seq || wc->wr_id != ep->done_seq) {
        efps_debug("verbs: %s: completion of send %llu, expected %llu: ignored", ep->base.name,
                   (unsigned long long)wc->wr_id, (unsigned long long)ep->done_seq);
        return; /* abandoned earlier */
    }
    verbs_posted_t p = ep->posted[ep->done_seq % ep->sq_cap];
    ep->done_seq++;
    efps_status_t status = efps__verbs_wc_status(wc->status);
    finish_posted(ep, &p, status);
    if (status != EFPS_OK && ep->base.state == EFPS_TP_EP_CONNECTED && ep->closing == VCLOSE_NONE)
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, status, "%s failed: %s (vendor error 0x%x)",
                         kind_name((verbs_tx_kind_t)p.kind), ibv_wc_status_str(wc->status),
                         wc->vendor_err);
    if (ep->base.state == EFPS_TP_EP_DOWN || ep->closing != VCLOSE_NONE) {
        if (ep->done_seq == ep->post_seq)
            efps__verbs_ep_flushed(ep);
        return; /* failing or closing: nothing new goes out */
    }
    if (p.kind == VTX_CREDIT)
        efps__verbs_send_credit(ep, false); /* what was returned meanwhile */
    efps__verbs_tx_progress(ep);            /* room in the send queue */
}

void efps__verbs_tx_flush_pending(verbs_ep_t *ep, bool report)
{
    while (ep->pend_count > 0) {
        const verbs_op_t *op = &ep->pend[ep->pend_head];
        if (op->kind == VTX_WRITE) {
            op->mr->tx_refs--;
            efps_tp_cqe_t cqe = {.type = EFPS_TP_CQE_WRITE,
                                 .status = EFPS_ERR_PEER,
                                 .ep = &ep->base,
                                 .context = op->context,
                                 .length = op->len};
            if (report)
                efps__tp_push_cqe(&ep->ctx->base, &cqe);
        } else {
            ep->msg_tx_inflight--;
        }
        ep->pend_head = (ep->pend_head + 1) % ep->pend_cap;
        ep->pend_count--;
    }
}

void efps__verbs_tx_abandon_posted(verbs_ep_t *ep, bool report)
{
    while (ep->done_seq != ep->post_seq) {
        verbs_posted_t p = ep->posted[ep->done_seq % ep->sq_cap];
        ep->done_seq++;
        if (p.kind == VTX_WRITE && !report) {
            p.mr->tx_refs--;
            continue;
        }
        finish_posted(ep, &p, EFPS_ERR_PEER);
    }
}

/* ---- the application's calls -------------------------------------------------- */
efps_status_t efps__verbs_write_imm(efps_tp_ep_t *base, efps_tp_mr_t *local, size_t local_offset,
                                    size_t length, const efps_tp_rkey_t *remote,
                                    uint64_t remote_offset, uint32_t imm, uint64_t user_context)
{
    verbs_ep_t *ep = VERBS_EP(base);
    verbs_ctx_t *ctx = ep->ctx;
    pthread_mutex_lock(&ctx->base.lock);
    efps_status_t status = ep->base.state == EFPS_TP_EP_CONNECTED && ep->closing == VCLOSE_NONE
                               ? EFPS_OK
                               : EFPS_ERR_PEER;
    if (status == EFPS_OK && ep->base.sq_used >= ctx->base.attr.sq_depth)
        status = EFPS_ERR_NO_RESOURCE;
    if (status != EFPS_OK) {
        pthread_mutex_unlock(&ctx->base.lock);
        return status;
    }
    verbs_op_t *op = &ep->pend[(ep->pend_head + ep->pend_count) % ep->pend_cap];
    *op = (verbs_op_t){.kind = VTX_WRITE,
                       .len = (uint32_t)length,
                       .mr = (verbs_mr_t *)local,
                       .local_offset = local_offset,
                       .remote_addr = remote->base + remote_offset,
                       .rkey = remote->key,
                       .imm = imm,
                       .context = user_context};
    op->mr->tx_refs++;
    ep->pend_count++;
    ep->base.sq_used++;
    efps__verbs_tx_progress(ep);
    pthread_mutex_unlock(&ctx->base.lock);
    return EFPS_OK;
}

efps_status_t efps__verbs_msg_send(efps_tp_ep_t *base, const void *buf, size_t len)
{
    verbs_ep_t *ep = VERBS_EP(base);
    verbs_ctx_t *ctx = ep->ctx;
    pthread_mutex_lock(&ctx->base.lock);
    efps_status_t status = ep->base.state == EFPS_TP_EP_CONNECTED && ep->closing == VCLOSE_NONE
                               ? EFPS_OK
                               : EFPS_ERR_PEER;
    if (status == EFPS_OK && ep->msg_tx_inflight >= EFPS_TP_MSG_DEPTH)
        status = EFPS_ERR_NO_RESOURCE;
    if (status != EFPS_OK) {
        pthread_mutex_unlock(&ctx->base.lock);
        return status;
    }
    /* Messages leave in order, so their slots are reused in order too. */
    uint32_t slot = ep->msg_tx_seq % EFPS_TP_MSG_DEPTH;
    memcpy(ep->txbuf + (size_t)slot * EFPS_TP_MSG_MAX, buf, len);
    ep->msg_tx_seq++;
    ep->msg_tx_inflight++;
    ep->pend[(ep->pend_head + ep->pend_count) % ep->pend_cap] =
        (verbs_op_t){.kind = VTX_MSG, .len = (uint32_t)len, .slot = slot};
    ep->pend_count++;
    efps__verbs_tx_progress(ep);
    pthread_mutex_unlock(&ctx->base.lock);
    return EFPS_OK;
}

/* Lock held: every posted send of a failed endpoint is accounted for. */
void efps__verbs_ep_flushed(verbs_ep_t *ep)
{
    if (!ep->disc_pending)
        return;
    ep->disc_pending = false;
    efps_tp_cqe_t cqe = {
        .type = EFPS_TP_CQE_DISCONNECT, .status = ep->disc_status, .ep = &ep->base};
    efps__tp_push_cqe(&ep->ctx->base, &cqe);
}
