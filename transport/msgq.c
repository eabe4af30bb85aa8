/* The messages an endpoint has received and the application has not taken
 * yet: a ring of EFPS_TP_MSG_DEPTH slots that the transport fills (straight
 * from the socket, or chunk by chunk from receive buffers) and msg_recv
 * empties. Each message taken gives the peer a credit for one more. */
#include "transport_int.h"

#include <stdlib.h>
#include <string.h>

void efps__tp_msgq_free(efps_tp_msgq_t *q)
{
    for (int i = 0; i < EFPS_TP_MSG_DEPTH; i++) {
        free(q->slot[i]);
        q->slot[i] = NULL;
    }
}

bool efps__tp_msgq_full(const efps_tp_msgq_t *q)
{
    return q->count >= EFPS_TP_MSG_DEPTH;
}

uint8_t *efps__tp_msgq_tail(efps_tp_msgq_t *q)
{
    uint32_t i = (q->head + q->count) % EFPS_TP_MSG_DEPTH;
    if (q->slot[i] == NULL)
        q->slot[i] = malloc(EFPS_TP_MSG_MAX);
    return q->slot[i];
}

void efps__tp_msgq_arrived(efps_tp_ep_t *ep, uint32_t len)
{
    efps_tp_msgq_t *q = &ep->msgs;
    q->len[(q->head + q->count) % EFPS_TP_MSG_DEPTH] = len;
    q->count++;
    pthread_cond_broadcast(&ep->ctx->ev_cond);
}

/* Lock held: copies the oldest message out; false if it does not fit (it
 * stays queued, *len_p says its size). */
static bool take(efps_tp_ep_t *ep, void *buf, size_t cap, size_t *len_p)
{
    efps_tp_msgq_t *q = &ep->msgs;
    uint32_t len = q->len[q->head];
    if (len_p != NULL)
        *len_p = len;
    if (len > cap) {
        efps_error("%s: message of %u bytes from %s does not fit a %zu-byte buffer",
                   ep->ctx->ops->name, len, ep->name, cap);
        return false;
    }
    memcpy(buf, q->slot[q->head], len);
    q->head = (q->head + 1) % EFPS_TP_MSG_DEPTH;
    q->count--;
    ep->ctx->ops->rx_credit(ep, true);
    return true;
}

efps_status_t efps__tp_msgq_recv(efps_tp_ep_t *ep, void *buf, size_t cap, size_t *len_p,
                                 int timeout_ms)
{
    efps_tp_ctx_t *ctx = ep->ctx;
    uint64_t deadline = efps__tp_deadline(timeout_ms);
    efps_status_t status;
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        if (ep->msgs.count > 0) {
            status = take(ep, buf, cap, len_p) ? EFPS_OK : EFPS_ERR_INVALID;
            break;
        }
        if (!efps__tp_ep_live(ep)) {
            status = EFPS_ERR_PEER;
            break;
        }
        if (timeout_ms == 0 || !efps__tp_wait(&ctx->ev_cond, &ctx->lock, deadline)) {
            status = EFPS_ERR_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    return status;
}
