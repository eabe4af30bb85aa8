/* The receiving side of the verbs transport. One shared receive queue per
 * context holds VERBS_RX_BUF-byte buffers from registered slabs; every
 * endpoint adds its worst case to the SRQ's target (what its credits let the
 * peer send at once), so a buffer is always there when a peer has credit.
 * The progress thread reposts a buffer as soon as it has handled what landed
 * in it (a message chunk is copied out to the endpoint's message ring; a
 * write's data went straight into the application's region and its buffer
 * was never touched). */
#include "verbs.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *rx_buf(const verbs_ctx_t *ctx, uint32_t index)
{
    return ctx->slabs[index / VERBS_SLAB].mem + (size_t)(index % VERBS_SLAB) * VERBS_RX_BUF;
}

/* Lock held: one more registered slab of buffers. */
static efps_status_t add_slab(verbs_ctx_t *ctx)
{
    uint32_t total = (ctx->n_slabs + 1) * VERBS_SLAB;
    verbs_slab_t *slabs = realloc(ctx->slabs, (ctx->n_slabs + 1) * sizeof(*slabs));
    if (slabs != NULL)
        ctx->slabs = slabs;
    uint32_t *stack = slabs ? realloc(ctx->rx_free, total * sizeof(*stack)) : NULL;
    if (stack != NULL)
        ctx->rx_free = stack;
    uint8_t *mem = stack ? efps_aligned_alloc((size_t)VERBS_SLAB * VERBS_RX_BUF) : NULL;
    if (mem == NULL) {
        efps_error("verbs: %s: out of memory for receive buffers", ctx->dev_name);
        return EFPS_ERR_NOMEM;
    }
    struct ibv_mr *mr =
        ibv_reg_mr(ctx->pd, mem, (size_t)VERBS_SLAB * VERBS_RX_BUF, IBV_ACCESS_LOCAL_WRITE);
    if (mr == NULL) {
        int err = efps__verbs_ptr_errno();
        efps_error("verbs: %s: register receive buffers: %s", ctx->dev_name, strerror(err));
        efps_aligned_free(mem);
        return efps__verbs_errno_status(err);
    }
    ctx->slabs[ctx->n_slabs] = (verbs_slab_t){.mem = mem, .mr = mr};
    for (uint32_t i = 0; i < VERBS_SLAB; i++)
        ctx->rx_free[ctx->n_free++] = total - 1 - i;
    ctx->n_slabs++;
    return EFPS_OK;
}

/* Lock held: the SRQ can hold want work requests. */
static efps_status_t grow_srq(verbs_ctx_t *ctx, uint32_t want)
{
    uint32_t max = (uint32_t)ctx->dev_attr.max_srq_wr, cap = ctx->srq_cap;
    while (cap < want)
        cap = cap * 2 < max ? cap * 2 : max;
    if (cap < want || !(ctx->dev_attr.device_cap_flags & IBV_DEVICE_SRQ_RESIZE)) {
        efps_error("verbs: %s: %u receive buffers needed, the shared receive queue holds %u "
                   "(fewer endpoints or a smaller rq_depth)",
                   ctx->dev_name, want, ctx->srq_cap);
        return EFPS_ERR_NO_RESOURCE;
    }
    struct ibv_srq_attr attr = {.max_wr = cap};
    int rc = ibv_modify_srq(ctx->srq, &attr, IBV_SRQ_MAX_WR);
    if (rc != 0) {
        int err = efps__verbs_errno(rc);
        efps_error("verbs: %s: grow the shared receive queue to %u: %s", ctx->dev_name, cap,
                   strerror(err));
        return efps__verbs_errno_status(err);
    }
    ctx->srq_cap = cap;
    return EFPS_OK;
}

efps_status_t efps__verbs_rx_reserve(verbs_ctx_t *ctx, int n)
{
    if (n < 0) {
        /* Buffers above the target are simply not posted again. */
        ctx->rx_target -= (uint32_t)-n;
        return EFPS_OK;
    }
    uint32_t want = ctx->rx_target + (uint32_t)n;
    efps_status_t status = want > ctx->srq_cap ? grow_srq(ctx, want) : EFPS_OK;
    while (status == EFPS_OK && ctx->n_slabs * VERBS_SLAB < want)
        status = add_slab(ctx);
    if (status != EFPS_OK)
        return status;
    ctx->rx_target = want;
    efps__verbs_rx_refill(ctx);
    return EFPS_OK;
}

void efps__verbs_rx_refill(verbs_ctx_t *ctx)
{
    struct ibv_recv_wr wrs[32];
    struct ibv_sge sges[32];
    while (ctx->rx_posted < ctx->rx_target && ctx->n_free > 0) {
        int k = 0;
        while (k < 32 && ctx->rx_posted + (uint32_t)k < ctx->rx_target && ctx->n_free > 0) {
            uint32_t idx = ctx->rx_free[--ctx->n_free];
            sges[k] = (struct ibv_sge){.addr = (uintptr_t)rx_buf(ctx, idx),
                                       .length = VERBS_RX_BUF,
                                       .lkey = ctx->slabs[idx / VERBS_SLAB].mr->lkey};
            wrs[k] = (struct ibv_recv_wr){
                .wr_id = VERBS_WR_RECV | idx, .sg_list = &sges[k], .num_sge = 1, .next = NULL};
            if (k > 0)
                wrs[k - 1].next = &wrs[k];
            k++;
        }
        struct ibv_recv_wr *bad = NULL;
        int rc = ibv_post_srq_recv(ctx->srq, wrs, &bad);
        int posted = k;
        if (rc != 0) {
            posted = bad != NULL ? (int)(bad - wrs) : 0;
            for (int i = posted; i < k; i++)
                ctx->rx_free[ctx->n_free++] = (uint32_t)(wrs[i].wr_id & ~VERBS_WR_RECV);
            efps_error("verbs: %s: ibv_post_srq_recv: %s", ctx->dev_name,
                       strerror(efps__verbs_errno(rc)));
        }
        ctx->rx_posted += (uint32_t)posted;
        if (rc != 0)
            return;
    }
}

void efps__verbs_rx_free(verbs_ctx_t *ctx)
{
    for (uint32_t i = 0; i < ctx->n_slabs; i++) {
        ibv_dereg_mr(ctx->slabs[i].mr);
        efps_aligned_free(ctx->slabs[i].mem);
    }
    free(ctx->slabs);
    free(ctx->rx_free);
    ctx->slabs = NULL;
    ctx->rx_free = NULL;
    ctx->n_slabs = ctx->n_free = 0;
}

/* ---- what arrived ------------------------------------------------------------ */

/* Fails the endpoint for a protocol violation. */
#define violation(ep, ...)                                                                         \
    efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_PROTO, __VA_ARGS__)

static void on_write(verbs_ep_t *ep, uint32_t imm, uint32_t len)
{
    if (ep->base.rq_used >= ep->ctx->base.attr.rq_depth) {
        violation(ep, "wrote beyond its credit (%u arrivals unpolled, window %u)", ep->base.rq_used,
                  ep->ctx->base.attr.rq_depth);
        return;
    }
    if (ep->next_write_len != 0) { /* the last piece of a split write */
        if (len > ep->next_write_len) {
            violation(ep, "a %u-byte piece of a write announced as %u bytes", len,
                      ep->next_write_len);
            return;
        }
        len = ep->next_write_len;
        ep->next_write_len = 0;
    }
    ep->base.rq_used++;
    efps_tp_cqe_t cqe = {
        .type = EFPS_TP_CQE_RECV, .status = EFPS_OK, .ep = &ep->base, .imm = imm, .length = len};
    efps__tp_push_cqe(&ep->ctx->base, &cqe);
}

static void on_hello(verbs_ep_t *ep, const uint8_t *p, uint32_t len)
{
    if (!ep->passive || ep->peer_known) {
        violation(ep, "unexpected HELLO");
        return;
    }
    uint32_t window = len == VERBS_HELLO_LEN ? (uint32_t)efps__get_le(p + 8, 4) : 0;
    if (len != VERBS_HELLO_LEN || efps__get_le(p, 4) != VERBS_WIRE_MAGIC ||
        p[4] != VERBS_WIRE_VERSION || window == 0 || window > 65536) {
        violation(ep, "the first message is not an efps verbs HELLO (%u bytes, version %u)", len,
                  len > 4 ? p[4] : 0);
        return;
    }
    ep->peer_window = ep->wr_credits = window;
    ep->peer_timeout_ms = (uint32_t)efps__get_le(p + 12, 4);
    ep->peer_known = true;
    /* The connector sends HELLO once its queue pair is ready to send, hence
     * to receive: ours may send now even if ESTABLISHED is still on its way. */
    ep->established = true;
    pthread_cond_broadcast(&ep->ctx->base.ev_cond); /* a memory-window bind waits for it */
    efps__verbs_set_heartbeat(ep);
    efps__verbs_tx_progress(ep);
}

static void on_msg_chunk(verbs_ep_t *ep, uint32_t imm, const uint8_t *p, uint32_t len)
{
    uint32_t total = VERBS_IMM_MSG_LEN(imm);
    if (total == 0 || total > EFPS_TP_MSG_MAX || len == 0 || len > VERBS_RX_BUF) {
        violation(ep, "message chunk of %u bytes for a %u-byte message", len, total);
        return;
    }
    if (ep->msg_rx_got == 0) {
        if (efps__tp_msgq_full(&ep->base.msgs)) {
            violation(ep, "sent more than %d messages beyond its credit", EFPS_TP_MSG_DEPTH);
            return;
        }
        ep->msg_rx_total = total;
    }
    if (total != ep->msg_rx_total || ep->msg_rx_got + len > total) {
        violation(ep, "message chunk of %u bytes does not fit its %u-byte message (%u there)", len,
                  ep->msg_rx_total, ep->msg_rx_got);
        return;
    }
    uint8_t *slot = efps__tp_msgq_tail(&ep->base.msgs);
    if (slot == NULL) {
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_NOMEM,
                         "out of memory for a message");
        return;
    }
    memcpy(slot + ep->msg_rx_got, p, len);
    ep->msg_rx_got += len;
    if (ep->msg_rx_got < total)
        return;
    ep->msg_rx_got = 0;
    efps__tp_msgq_arrived(&ep->base, total);
}

static void on_credit(verbs_ep_t *ep, uint32_t imm)
{
    uint32_t w = VERBS_IMM_CR_WRITES(imm), m = VERBS_IMM_CR_MSGS(imm);
    if (ep->wr_credits + w > ep->peer_window || ep->msg_credits + m > EFPS_TP_MSG_DEPTH) {
        violation(ep, "returned more credit than it was given (%u writes, %u messages)", w, m);
        return;
    }
    ep->wr_credits += w;
    ep->msg_credits += m;
    if (w > 0 || m > 0)
        efps__verbs_tx_progress(ep);
}

/* The length of the next write, longer than one work request carries. Its
 * credit goes straight back: nothing waits for the application here. */
static void on_len(verbs_ep_t *ep, const uint8_t *p, uint32_t len)
{
    uint32_t total = len == 4 ? (uint32_t)efps__get_le(p, 4) : 0;
    if (total == 0 || ep->next_write_len != 0) {
        violation(ep, "LEN of %u bytes announcing %u%s", len, total,
                  ep->next_write_len ? ", before the last one was used" : "");
        return;
    }
    ep->next_write_len = total;
    ep->owed_writes++;
    efps__verbs_send_credit(ep, false);
}

/* A SEND of the peer: the transport's control messages and message chunks. */
static void on_send(verbs_ep_t *ep, const struct ibv_wc *wc, const uint8_t *p)
{
    if (!(wc->wc_flags & IBV_WC_WITH_IMM)) {
        violation(ep, "a SEND without a header (not an efps verbs peer?)");
        return;
    }
    uint32_t imm = ntohl(wc->imm_data);
    switch (VERBS_IMM_TYPE(imm)) {
    case VERBS_T_HELLO:
        on_hello(ep, p, wc->byte_len);
        break;
    case VERBS_T_MSG:
        on_msg_chunk(ep, imm, p, wc->byte_len);
        break;
    case VERBS_T_CREDIT:
        if (wc->byte_len != 0)
            violation(ep, "CREDIT with a %u-byte payload", wc->byte_len);
        else
            on_credit(ep, imm);
        break;
    case VERBS_T_BYE:
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_INFO, EFPS_OK, "the peer disconnected");
        break;
    case VERBS_T_LEN:
        on_len(ep, p, wc->byte_len);
        break;
    default:
        violation(ep, "unknown control message type %u", VERBS_IMM_TYPE(imm));
        break;
    }
}

void efps__verbs_rx_complete(verbs_ctx_t *ctx, const struct ibv_wc *wc)
{
    uint32_t idx = (uint32_t)(wc->wr_id & ~VERBS_WR_RECV);
    verbs_ep_t *ep = efps__verbs_ep_by_qp(ctx, wc->qp_num);
    ctx->rx_posted--;
    /* CONNECTING too: the acceptor may send the moment it is established,
     * before connect() in the application's thread has finished. */
    if (ep != NULL &&
        (ep->base.state == EFPS_TP_EP_CONNECTED || ep->base.state == EFPS_TP_EP_OPENING) &&
        ep->closing == VCLOSE_NONE) {
        if (wc->status != IBV_WC_SUCCESS) {
            /* An access error here is the peer's write refused by our
             * adapter: a key not given to this connection, or a range
             * outside the region. */
            bool access = wc->status == IBV_WC_REM_ACCESS_ERR;
            efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR,
                             access ? EFPS_ERR_PROTO : efps__verbs_wc_status(wc->status),
                             "receive failed: %s (vendor error 0x%x)%s",
                             ibv_wc_status_str(wc->status), wc->vendor_err,
                             access ? ": a write with a key not given to this connection, or "
                                      "outside its region"
                                    : "");
        } else {
            ep->last_rx_ms = efps__now_ms();
            if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM)
                on_write(ep, ntohl(wc->imm_data), wc->byte_len);
            else if (wc->opcode == IBV_WC_RECV)
                on_send(ep, wc, rx_buf(ctx, idx));
            else
                violation(ep, "unexpected receive completion (opcode %d)", (int)wc->opcode);
        }
    } else if (wc->status != IBV_WC_SUCCESS && wc->status != IBV_WC_WR_FLUSH_ERR && ep == NULL) {
        efps_debug("verbs: %s: receive completion %s on queue pair %u, which is gone",
                   ctx->dev_name, ibv_wc_status_str(wc->status), wc->qp_num);
    }
    ctx->rx_free[ctx->n_free++] = idx; /* the caller reposts */
}

/* Polls the CQ dry (lock held): every completion of a QP in error is in. */
void efps__verbs_drain_cq(verbs_ctx_t *ctx)
{
    struct ibv_wc wc[32];
    int n;
    do {
        pthread_mutex_lock(&ctx->cq_lock);
        n = ibv_poll_cq(ctx->hw_cq, 32, wc);
        pthread_mutex_unlock(&ctx->cq_lock);
        for (int i = 0; i < n; i++) {
            if (wc[i].wr_id & VERBS_WR_RECV) {
                efps__verbs_rx_complete(ctx, &wc[i]);
            } else {
                verbs_ep_t *ep = efps__verbs_ep_by_qp(ctx, wc[i].qp_num);
                if (ep != NULL)
                    efps__verbs_tx_complete(ep, &wc[i]);
            }
        }
    } while (n > 0);
    efps__verbs_rx_refill(ctx);
}
