/* A listener's queue of connection requests: the progress thread of the
 * transport queues each request that has said who it is, the application
 * takes them with get_request. Destroying a listener is left to the
 * progress thread (it owns the socket or cm id); the caller waits for it. */
#include "transport_int.h"

#include <stdlib.h>

void efps__tp_listen_queue(efps_tp_listener_t *l, efps_tp_conn_req_t *req)
{
    req->queue_next = NULL;
    if (l->queue_tail != NULL)
        l->queue_tail->queue_next = req;
    else
        l->queue_head = req;
    l->queue_tail = req;
    pthread_cond_broadcast(&l->ctx->ev_cond);
}

void efps__tp_listen_unqueue(efps_tp_listener_t *l, efps_tp_conn_req_t *req)
{
    efps_tp_conn_req_t **pp = &l->queue_head, *last = NULL;
    while (*pp != NULL && *pp != req) {
        last = *pp;
        pp = &(*pp)->queue_next;
    }
    if (*pp == NULL)
        return;
    *pp = req->queue_next;
    if (l->queue_tail == req)
        l->queue_tail = last;
    req->queue_next = NULL;
}

efps_tp_conn_req_t *efps__tp_listen_pop(efps_tp_listener_t *l)
{
    efps_tp_conn_req_t *req = l->queue_head;
    if (req != NULL)
        efps__tp_listen_unqueue(l, req);
    return req;
}

efps_status_t efps__tp_listen_get(efps_tp_listener_t *l, int timeout_ms, efps_tp_conn_req_t **req_p)
{
    efps_tp_ctx_t *ctx = l->ctx;
    uint64_t deadline = efps__tp_deadline(timeout_ms);
    efps_status_t status = EFPS_ERR_TIMEOUT;
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        if (l->destroying) {
            status = EFPS_ERR_STATE;
            break;
        }
        efps_tp_conn_req_t *req = efps__tp_listen_pop(l);
        if (req != NULL) {
            req->ep->state = EFPS_TP_EP_REQUEST;
            ctx->ops->request_taken(req);
            *req_p = req;
            status = EFPS_OK;
            break;
        }
        if (timeout_ms == 0 || !efps__tp_wait(&ctx->ev_cond, &ctx->lock, deadline))
            break;
    }
    pthread_mutex_unlock(&ctx->lock);
    return status;
}

void efps__tp_listen_destroy(efps_tp_listener_t *l)
{
    efps_tp_ctx_t *ctx = l->ctx;
    pthread_mutex_lock(&ctx->lock);
    l->destroying = true;
    ctx->listeners_dirty = true;
    ctx->ops->kick(ctx);
    pthread_cond_broadcast(&ctx->ev_cond); /* get_request waiters give up */
    while (!l->closed)
        efps__tp_wait(&ctx->ev_cond, &ctx->lock, 0);
    pthread_mutex_unlock(&ctx->lock);
    free(l); /* the transport's listener starts with its base */
}
