/* The end of verbs connections: failure (reported once, with the writes
 * flushed before the DISCONNECT), the events rdma_cm sends about live
 * connections, and teardown.
 *
 * The progress thread is the only one that destroys a QP or cm id of an
 * established connection (an id must not go while one of its events is being
 * handled). A clean close sends BYE and waits for it to complete, then
 * rdma_disconnect (the QP goes to error, posted sends flush), waits for the
 * flushes, drains the CQ of the QP's completions and only then destroys it,
 * so no stale completion can be taken for another QP with the same number. */
#include "verbs.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- failure ------------------------------------------------------------------ */
void efps__verbs_ep_failed(efps_tp_ep_t *base, efps_log_level_t level, efps_status_t status,
                           const char *why)
{
    verbs_ep_t *ep = VERBS_EP(base);
    verbs_ctx_t *ctx = ep->ctx;
    bool request = ep->base.state == EFPS_TP_EP_QUEUED || ep->base.state == EFPS_TP_EP_REQUEST;
    EFPS_LOG(level, "verbs: %s%s: %s; connection closed", request ? "connection from " : "",
             ep->base.name, why);
    if (ep->base.state == EFPS_TP_EP_QUEUED) { /* nobody outside knows it */
        ep->base.rejecting = ep->want_destroy = ep->internal = true;
        ctx->teardown_dirty = true;
    }
    if (efps__tp_ep_go_down(&ep->base, status)) {
        efps__verbs_disconnect(ep);
        efps__verbs_tx_flush_pending(ep, true);
        ep->disc_status = status;
        ep->disc_pending = true;
        ep->deadline_ms = efps__now_ms() + 1000; /* flushes come at once; else we stop waiting */
        if (ep->done_seq == ep->post_seq)
            efps__verbs_ep_flushed(ep);
    }
    pthread_cond_broadcast(&ctx->base.ev_cond); /* msg_recv, accept and connect waiters */
}

/* ---- teardown (progress thread, lock held) ------------------------------------------ */
static void finish_teardown(verbs_ep_t *ep)
{
    verbs_ctx_t *ctx = ep->ctx;
    if (ep->qp != NULL)
        efps__verbs_drain_cq(ctx);
    efps__verbs_tx_abandon_posted(ep, false);
    efps__verbs_unexpose(ctx, ep, NULL); /* its windows go before its QP */
    efps__verbs_hash_del(ctx, ep);
    if (ep->qp != NULL)
        rdma_destroy_qp(ep->id);
    ep->qp = NULL;
    if (ep->id != NULL)
        rdma_destroy_id(ep->id);
    ep->id = NULL;
    efps__verbs_ep_release(ep);
    efps__tp_cq_purge(&ctx->base.cq, &ep->base);
    if (ep->listener != NULL)
        efps__tp_listen_unqueue(&ep->listener->base, &ep->req);
    ep->listener = NULL;
    efps__tp_ep_unlink(&ctx->base, &ep->base);
    efps__tp_ep_destroyed(&ep->base);
    if (ep->internal)
        efps__verbs_ep_free(ep);
}

/* One step of closing ep; true once it is gone. */
static bool teardown_step(verbs_ep_t *ep)
{
    verbs_ctx_t *ctx = ep->ctx;
    uint64_t now = efps__now_ms();
    if (ep->closing == VCLOSE_NONE) {
        uint32_t wait = ctx->base.attr.timeout_ms < 1000 ? ctx->base.attr.timeout_ms : 1000;
        ep->deadline_ms = now;
        /* A peer that reads BYE knows the close was meant, not a crash. */
        if (ep->base.state == EFPS_TP_EP_CONNECTED && ep->established && ep->pend_count == 0 &&
            efps__verbs_send_bye(ep) == EFPS_OK)
            ep->deadline_ms = now + wait;
        ep->closing = VCLOSE_BYE;
    }
    if (ep->closing == VCLOSE_BYE) {
        if (!ep->bye_done && ep->base.state == EFPS_TP_EP_CONNECTED && now < ep->deadline_ms)
            return false;
        if (ep->base.rejecting && ep->qp == NULL && ep->id != NULL)
            efps__verbs_reject_id(ep->id);
        else
            efps__verbs_disconnect(ep);
        efps__verbs_tx_flush_pending(ep, false);
        ep->closing = VCLOSE_FLUSH;
        ep->deadline_ms = now + 1000;
    }
    if (ep->done_seq != ep->post_seq && now < ep->deadline_ms)
        return false;
    finish_teardown(ep);
    return true;
}

static void close_listeners(verbs_ctx_t *ctx)
{
    ctx->base.listeners_dirty = false;
    for (verbs_listener_t **pp = &ctx->listeners; *pp != NULL;) {
        verbs_listener_t *l = *pp;
        if (!l->base.destroying) {
            pp = &l->next;
            continue;
        }
        rdma_destroy_id(l->id);
        /* Requests never handed out are refused; handed-out ones live on. */
        for (efps_tp_conn_req_t *req; (req = efps__tp_listen_pop(&l->base)) != NULL;) {
            verbs_ep_t *ep = VERBS_REQ_EP(req);
            ep->listener = NULL;
            ep->base.rejecting = ep->want_destroy = ep->internal = true;
            ctx->teardown_dirty = true;
        }
        *pp = l->next;
        l->base.closed = true;
    }
    pthread_cond_broadcast(&ctx->base.ev_cond);
}

void efps__verbs_run_teardowns(verbs_ctx_t *ctx)
{
    if (ctx->base.listeners_dirty)
        close_listeners(ctx);
    bool busy = false;
    for (verbs_ep_t *ep = VERBS_EP(ctx->base.eps), *next; ep != NULL; ep = next) {
        next = VERBS_EP(ep->base.next);
        if (ep->want_destroy && !teardown_step(ep))
            busy = true;
    }
    ctx->teardown_dirty = busy;
}

/* Lock held: the progress thread tears ep down (efps__tp_ep_teardown_wait). */
void efps__verbs_ep_teardown_start(efps_tp_ep_t *base)
{
    verbs_ep_t *ep = VERBS_EP(base);
    ep->want_destroy = true;
    ep->ctx->teardown_dirty = true;
    efps__verbs_kick(ep->ctx);
}

void efps__verbs_conn_free_all(verbs_ctx_t *ctx)
{
    while (VERBS_EP(ctx->base.eps) != NULL) {
        verbs_ep_t *ep = VERBS_EP(ctx->base.eps);
        if (ep->base.state == EFPS_TP_EP_CONNECTED || ep->base.state == EFPS_TP_EP_DOWN)
            efps_debug("verbs: close: endpoint %s was still open", ep->base.name);
        efps__verbs_tx_abandon_posted(ep, false);
        efps__verbs_tx_flush_pending(ep, false);
        efps__verbs_unexpose(ctx, ep, NULL); /* its windows go before its QP */
        efps__verbs_hash_del(ctx, ep);
        if (ep->qp != NULL)
            rdma_destroy_qp(ep->id);
        if (ep->id != NULL)
            rdma_destroy_id(ep->id); /* tells a connected peer */
        ep->qp = NULL;
        ep->id = NULL;
        efps__verbs_ep_release(ep);
        efps__tp_ep_unlink(&ctx->base, &ep->base);
        efps__verbs_ep_free(ep);
    }
    while (ctx->listeners != NULL) {
        verbs_listener_t *l = ctx->listeners;
        ctx->listeners = l->next;
        rdma_destroy_id(l->id);
        free(l);
    }
}

/* ---- events of the context's channel (progress thread) ------------------------------- */
static void on_event(verbs_ctx_t *ctx, const struct rdma_cm_event *ev, const uint8_t *priv,
                     size_t plen)
{
    if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
        efps__verbs_on_request(ctx, ev->listen_id->context, ev->id, priv, plen);
        return;
    }
    if (ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL) {
        for (verbs_ep_t *ep = VERBS_EP(ctx->base.eps), *next; ep != NULL; ep = next) {
            next = VERBS_EP(ep->base.next);
            if (ep->base.state != EFPS_TP_EP_OPENING)
                efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_TRANSPORT,
                                 "RDMA device %s was removed", ctx->dev_name);
        }
        return;
    }
    for (verbs_listener_t *l = ctx->listeners; l != NULL; l = l->next)
        if (l->id == ev->id)
            return; /* nothing to do for a listener's own events */
    verbs_ep_t *ep = ev->id->context;
    if (ep == NULL || ep->id != ev->id || ep->closing != VCLOSE_NONE)
        return; /* an endpoint on its way out */
    switch (ev->event) {
    case RDMA_CM_EVENT_ESTABLISHED:
        if (ep->base.state == EFPS_TP_EP_CONNECTED && !ep->established) {
            ep->established = true;
            pthread_cond_broadcast(&ctx->base.ev_cond); /* a memory-window bind waits for it */
            efps__verbs_tx_progress(ep);
            efps__verbs_send_credit(ep, false);
        }
        break;
    case RDMA_CM_EVENT_DISCONNECTED:
        /* The peer's BYE (if it sent one) completed before its disconnect
         * request left: take it first, so a clean close reads as one. */
        efps__verbs_drain_cq(ctx);
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_PEER,
                         "the peer disconnected without saying goodbye");
        ep->disconnected = true;
        break;
    case RDMA_CM_EVENT_CONNECT_ERROR:
    case RDMA_CM_EVENT_UNREACHABLE:
    case RDMA_CM_EVENT_REJECTED:
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_PEER,
                         "connection setup failed: %s (%d)", rdma_event_str(ev->event), ev->status);
        break;
    default: /* TIMEWAIT_EXIT, ADDR_CHANGE...: nothing to do */
        efps_debug("verbs: %s: %s", ep->base.name, rdma_event_str(ev->event));
        break;
    }
}

void efps__verbs_cm_events(verbs_ctx_t *ctx)
{
    struct rdma_cm_event *ev;
    for (int i = 0; i < 64 && rdma_get_cm_event(ctx->cm, &ev) == 0; i++) {
        /* Copy and ack first: an id cannot be destroyed while one of its
         * events is held. */
        struct rdma_cm_event copy = *ev;
        uint8_t priv[VERBS_CM_REP_PRIV];
        size_t plen = ev->param.conn.private_data_len < sizeof(priv)
                          ? ev->param.conn.private_data_len
                          : sizeof(priv);
        if (ev->param.conn.private_data == NULL)
            plen = 0;
        if (plen > 0)
            memcpy(priv, ev->param.conn.private_data, plen);
        rdma_ack_cm_event(ev);
        pthread_mutex_lock(&ctx->base.lock);
        on_event(ctx, &copy, priv, plen);
        pthread_mutex_unlock(&ctx->base.lock);
    }
}
