/* The part of a context that every transport shares: the lock and its
 * conditions, the software completion queue, and the application's poll
 * (which gives back the credit each completion held). The transports only
 * say what giving a receive credit back means for them (ops->rx_credit). */
#include "transport_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

efps_status_t efps__tp_base_init(efps_tp_ctx_t *ctx)
{
    pthread_condattr_t ca;
    efps__tp_cq_init(&ctx->cq);
    if (pthread_mutex_init(&ctx->lock, NULL) != 0)
        return EFPS_ERR_SYSTEM;
    /* efps__tp_wait's deadlines are CLOCK_MONOTONIC: a clock step must not
     * stretch or cut a timeout. */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ctx->cq_cond, &ca);
    pthread_cond_init(&ctx->ev_cond, &ca);
    pthread_condattr_destroy(&ca);
    return EFPS_OK;
}

void efps__tp_base_destroy(efps_tp_ctx_t *ctx)
{
    efps__tp_cq_free(&ctx->cq);
    pthread_cond_destroy(&ctx->ev_cond);
    pthread_cond_destroy(&ctx->cq_cond);
    pthread_mutex_destroy(&ctx->lock);
}

void efps__tp_push_cqe(efps_tp_ctx_t *ctx, const efps_tp_cqe_t *cqe)
{
    efps__tp_cq_push(&ctx->cq, cqe);
    if (ctx->cq_waiters > 0)
        pthread_cond_signal(&ctx->cq_cond);
}

/* Lock held: gives back what a polled completion held. */
static void release_credit(efps_tp_ctx_t *ctx, const efps_tp_cqe_t *cqe)
{
    efps_tp_ep_t *ep = cqe->ep;
    if (cqe->type == EFPS_TP_CQE_WRITE) {
        ep->sq_used--;
    } else if (cqe->type == EFPS_TP_CQE_RECV) {
        ep->rq_used--;
        ctx->ops->rx_credit(ep, false);
    }
}

efps_status_t efps__tp_base_poll(efps_tp_ctx_t *ctx, efps_tp_cqe_t *cqes, int max, int timeout_ms,
                                 int *count_p)
{
    uint64_t deadline = efps__tp_deadline(timeout_ms);
    size_t n = 0;
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        n = efps__tp_cq_pop(&ctx->cq, cqes, (size_t)max);
        if (n > 0 || timeout_ms == 0)
            break;
        ctx->cq_waiters++;
        bool more = efps__tp_wait(&ctx->cq_cond, &ctx->lock, deadline);
        ctx->cq_waiters--;
        if (!more)
            break;
    }
    for (size_t i = 0; i < n; i++)
        release_credit(ctx, &cqes[i]);
    pthread_mutex_unlock(&ctx->lock);
    *count_p = (int)n;
    return EFPS_OK;
}

/* ---- an endpoint's life cycle ---------------------------------------------- */

efps_status_t efps__tp_ep_status(const efps_tp_ep_t *ep)
{
    pthread_mutex_lock(&ep->ctx->lock);
    efps_status_t status = ep->state == EFPS_TP_EP_CONNECTED ? EFPS_OK
                           : ep->state == EFPS_TP_EP_DOWN    ? ep->down_status
                                                             : EFPS_ERR_STATE;
    pthread_mutex_unlock(&ep->ctx->lock);
    return status;
}

bool efps__tp_ep_live(const efps_tp_ep_t *ep)
{
    return ep->state == EFPS_TP_EP_CONNECTED;
}

bool efps__tp_ep_go_down(efps_tp_ep_t *ep, efps_status_t status)
{
    bool connected = ep->state == EFPS_TP_EP_CONNECTED;
    ep->state = EFPS_TP_EP_DOWN;
    ep->down_status = status == EFPS_OK ? EFPS_ERR_PEER : status;
    return connected;
}

void efps__tp_ep_teardown_wait(efps_tp_ep_t *ep)
{
    efps_tp_ctx_t *ctx = ep->ctx;
    ctx->ops->ep_teardown(ep);
    while (!ep->destroy_done)
        efps__tp_wait(&ctx->ev_cond, &ctx->lock, 0);
}

void efps__tp_ep_destroyed(efps_tp_ep_t *ep)
{
    ep->destroy_done = true;
    pthread_cond_broadcast(&ep->ctx->ev_cond);
}

void efps__tp_ep_link(efps_tp_ctx_t *ctx, efps_tp_ep_t *ep)
{
    ep->prev = NULL;
    ep->next = ctx->eps;
    if (ctx->eps != NULL)
        ctx->eps->prev = ep;
    ctx->eps = ep;
}

void efps__tp_ep_unlink(efps_tp_ctx_t *ctx, efps_tp_ep_t *ep)
{
    if (ep->prev != NULL)
        ep->prev->next = ep->next;
    else if (ctx->eps == ep)
        ctx->eps = ep->next;
    if (ep->next != NULL)
        ep->next->prev = ep->prev;
    ep->next = ep->prev = NULL;
}

efps_status_t efps__tp_accept_begin(efps_tp_conn_req_t *req, const efps_tp_conn_param_t *param)
{
    efps_tp_ep_t *ep = req->ep;
    pthread_mutex_lock(&req->ctx->lock);
    efps__tp_ep_set_name(ep, param->label, req->peer);
    if (ep->state == EFPS_TP_EP_REQUEST)
        return EFPS_OK;
    efps_error("%s: accept %s: the peer went away before it was accepted", req->ctx->ops->name,
               ep->name);
    return EFPS_ERR_PEER;
}

void efps__tp_ep_fail(efps_tp_ep_t *ep, efps_log_level_t level, efps_status_t status,
                      const char *fmt, ...)
{
    if (ep->state == EFPS_TP_EP_DOWN)
        return;
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    ep->ctx->ops->ep_failed(ep, level, status, why);
}

void efps__tp_ep_destroy(efps_tp_ep_t *ep)
{
    efps_tp_ctx_t *ctx = ep->ctx;
    pthread_mutex_lock(&ctx->lock);
    efps__tp_ep_teardown_wait(ep);
    pthread_mutex_unlock(&ctx->lock);
    efps_debug("%s: endpoint %s destroyed", ctx->ops->name, ep->name);
    ctx->ops->ep_free(ep);
}

void efps__tp_reject(efps_tp_conn_req_t *req)
{
    efps_tp_ep_t *ep = req->ep;
    efps_tp_ctx_t *ctx = req->ctx;
    pthread_mutex_lock(&ctx->lock);
    ep->rejecting = true;
    efps__tp_ep_teardown_wait(ep);
    pthread_mutex_unlock(&ctx->lock);
    efps_info("%s: rejected connection from %s", ctx->ops->name, req->peer);
    ctx->ops->ep_free(ep);
}
