/* The part of a context that every transport shares: the lock and its
 * conditions, the software completion queue, and the application's poll
 * (which gives back the credit each completion held). The transports only
 * say what giving a receive credit back means for them (ops->rx_credit). */
#include "transport_int.h"

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
