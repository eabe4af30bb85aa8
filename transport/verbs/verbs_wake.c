/* The bottom of the verbs transport: waking its progress thread, an
 * endpoint's heartbeat, the completion queue's size, the QP-number table,
 * and the two rdma_cm calls that end a connection (disconnect, reject).
 * Calls nothing else of verbs but verbs_err.c: every other file may use it
 * (the files form a chain, see verbs.h; tests/build/check_file_graph.py). */
#include "verbs.h"

#include <string.h>
#include <unistd.h>

/* Lock held for all. */
void efps__verbs_kick(verbs_ctx_t *ctx)
{
    if (ctx->kicked)
        return;
    ctx->kicked = true;
    uint64_t one = 1;
    ssize_t rc = write(ctx->evfd, &one, sizeof(one));
    (void)rc; /* EAGAIN only with a huge counter: readable anyway */
}

void efps__verbs_set_heartbeat(verbs_ep_t *ep)
{
    verbs_ctx_t *ctx = ep->ctx;
    uint32_t t = ctx->base.attr.timeout_ms, peer = ep->peer_timeout_ms;
    if (peer != 0 && peer < t)
        t = peer < 100 ? 100 : peer; /* a peer cannot make us ping like mad */
    ep->hb_ms = t / 4 > 0 ? t / 4 : 1;
    if (ep->hb_ms / 2 < ctx->tick_ms) {
        ctx->tick_ms = ep->hb_ms / 2 > 0 ? ep->hb_ms / 2 : 1;
        efps__verbs_kick(ctx); /* the thread may be asleep for the old tick */
    }
}

efps_status_t efps__verbs_cq_reserve(verbs_ctx_t *ctx, int more)
{
    int need = ctx->cq_need + more;
    if (need > ctx->cq_cap) {
        int cap = ctx->cq_cap;
        while (cap < need && cap < ctx->dev_attr.max_cqe)
            cap = cap * 2 < ctx->dev_attr.max_cqe ? cap * 2 : ctx->dev_attr.max_cqe;
        if (cap < need) {
            efps_error("verbs: %s: a completion queue of %d entries is needed, the device "
                       "allows %d (fewer endpoints, or smaller sq_depth / rq_depth)",
                       ctx->dev_name, need, ctx->dev_attr.max_cqe);
            return EFPS_ERR_NO_RESOURCE;
        }
        pthread_mutex_lock(&ctx->cq_lock);
        int rc = ibv_resize_cq(ctx->hw_cq, cap);
        pthread_mutex_unlock(&ctx->cq_lock);
        if (rc != 0) {
            int err = efps__verbs_errno(rc);
            efps_error("verbs: %s: resize the completion queue to %d entries: %s", ctx->dev_name,
                       cap, strerror(err));
            return efps__verbs_errno_status(err);
        }
        ctx->cq_cap = ctx->hw_cq->cqe;
    }
    ctx->cq_need = need;
    return EFPS_OK;
}

verbs_ep_t *efps__verbs_ep_by_qp(verbs_ctx_t *ctx, uint32_t qp_num)
{
    verbs_ep_t *ep = ctx->qp_hash[qp_num % VERBS_QP_HASH];
    while (ep != NULL && ep->qp_num != qp_num)
        ep = ep->hnext;
    return ep;
}

void efps__verbs_hash_add(verbs_ctx_t *ctx, verbs_ep_t *ep)
{
    verbs_ep_t **head = &ctx->qp_hash[ep->qp_num % VERBS_QP_HASH];
    ep->hnext = *head;
    *head = ep;
    ep->hashed = true;
}

void efps__verbs_hash_del(verbs_ctx_t *ctx, verbs_ep_t *ep)
{
    if (!ep->hashed)
        return;
    for (verbs_ep_t **pp = &ctx->qp_hash[ep->qp_num % VERBS_QP_HASH]; *pp != NULL;
         pp = &(*pp)->hnext) {
        if (*pp == ep) {
            *pp = ep->hnext;
            break;
        }
    }
    ep->hashed = false;
}

void efps__verbs_disconnect(verbs_ep_t *ep)
{
    if (ep->qp == NULL || ep->disconnected)
        return;
    ep->disconnected = true;
    /* Moves the QP to error (posted sends flush) and tells the peer. Fails
     * harmlessly when the peer disconnected first. */
    if (rdma_disconnect(ep->id) != 0)
        efps_debug("verbs: %s: rdma_disconnect: %s", ep->base.name,
                   strerror(efps__verbs_errno(-1)));
}

void efps__verbs_reject_id(struct rdma_cm_id *id)
{
    uint8_t blob[VERBS_REJ_LEN] = {0};
    efps__put_le(blob, VERBS_WIRE_MAGIC, 4);
    blob[4] = VERBS_WIRE_VERSION;
    rdma_reject(id, blob, sizeof(blob));
}
