/* Setting up connections of the verbs transport, over rdma_cm.
 *
 * Connecting runs in the caller's thread on a private event channel
 * (resolve address, resolve route, create the QP, rdma_connect with our
 * 4-byte header and the application's private data, wait for ESTABLISHED
 * with the acceptor's reply), then sends HELLO and hands the cm id to the
 * context's channel (rdma_migrate_id), where the progress thread sees its
 * later events (verbs_close.c). Listening ids live on the context's channel
 * from the start: the progress thread queues each CONNECT_REQUEST, the
 * application accepts it (QP, rdma_accept with our reply header) or
 * rejects it. */
#include "verbs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(VERBS_REQ_HDR + EFPS_TP_PRIV_MAX <= VERBS_CM_REQ_PRIV,
               "the connect header and the private data must fit an RC connect request");
_Static_assert(VERBS_REP_HDR + EFPS_TP_PRIV_MAX <= VERBS_CM_REP_PRIV,
               "the accept header and the private data must fit an RC accept");

/* ---- allocation (lock held where it touches the context) -------------------- */
static verbs_ep_t *ep_alloc(verbs_ctx_t *ctx, const struct sockaddr *peer)
{
    verbs_ep_t *ep = calloc(1, sizeof(*ep));
    if (ep == NULL)
        return NULL;
    ep->base.ctx = &ctx->base;
    ep->req.ctx = &ctx->base;
    ep->req.ep = &ep->base;
    ep->ctx = ctx;
    efps__tp_format_addr(peer, ep->addr, sizeof(ep->addr));
    memcpy(ep->req.peer, ep->addr, sizeof(ep->req.peer));
    efps__tp_ep_set_name(&ep->base, NULL, ep->addr);
    return ep;
}

void efps__verbs_ep_free(verbs_ep_t *ep)
{
    efps__verbs_ep_free_queues(ep);
    free(ep);
}

static size_t cq_share(const verbs_ctx_t *ctx)
{
    return (size_t)ctx->base.attr.sq_depth + ctx->base.attr.rq_depth + 1;
}

/* Gives back what ep_create_qp reserved. */
void efps__verbs_ep_release(verbs_ep_t *ep)
{
    verbs_ctx_t *ctx = ep->ctx;
    if (!ep->reserved)
        return;
    efps__verbs_rx_reserve(ctx, -(int)ep->rx_window);
    efps__verbs_cq_reserve(ctx, -(int)(ep->sq_cap + ep->rx_window));
    efps__tp_cq_unreserve(&ctx->base.cq, cq_share(ctx));
    ep->reserved = false;
}

/* Lock held: the endpoint's queues, its share of the CQ and SRQ, and an RC
 * queue pair on them for its cm id. */
static efps_status_t ep_create_qp(verbs_ep_t *ep)
{
    verbs_ctx_t *ctx = ep->ctx;
    efps_status_t status = efps__verbs_ep_alloc_queues(ep);
    if (status != EFPS_OK)
        return status;
    status = efps__tp_cq_reserve(&ctx->base.cq, cq_share(ctx));
    if (status != EFPS_OK)
        return status;
    status = efps__verbs_cq_reserve(ctx, (int)(ep->sq_cap + ep->rx_window));
    if (status != EFPS_OK) {
        efps__tp_cq_unreserve(&ctx->base.cq, cq_share(ctx));
        return status;
    }
    status = efps__verbs_rx_reserve(ctx, (int)ep->rx_window);
    if (status != EFPS_OK) {
        efps__verbs_cq_reserve(ctx, -(int)(ep->sq_cap + ep->rx_window));
        efps__tp_cq_unreserve(&ctx->base.cq, cq_share(ctx));
        return status;
    }
    ep->reserved = true;
    struct ibv_qp_init_attr qa = {.qp_context = ep,
                                  .send_cq = ctx->hw_cq,
                                  .recv_cq = ctx->hw_cq,
                                  .srq = ctx->srq,
                                  .cap = {.max_send_wr = ep->sq_cap, .max_send_sge = 1},
                                  .qp_type = IBV_QPT_RC};
    if (rdma_create_qp(ep->id, ctx->pd, &qa) != 0) {
        int err = efps__verbs_errno(-1);
        efps_error("verbs: %s: create a queue pair (%u sends) on %s: %s%s", ep->base.name,
                   ep->sq_cap, ctx->dev_name, strerror(err),
                   ep->passive ? " (the connection request is stale: did the peer give up?)" : "");
        efps__verbs_ep_release(ep);
        return efps__verbs_errno_status(err) == EFPS_ERR_NOMEM ? EFPS_ERR_NOMEM
                                                               : EFPS_ERR_TRANSPORT;
    }
    ep->qp = ep->id->qp;
    ep->qp_num = ep->qp->qp_num;
    efps__verbs_hash_add(ctx, ep);
    return EFPS_OK;
}

/* ---- listening -------------------------------------------------------------- */
efps_status_t efps__verbs_listen(efps_tp_ctx_t *base, const struct sockaddr *addr,
                                 socklen_t addrlen, efps_tp_listener_t **listener_p)
{
    verbs_ctx_t *ctx = VERBS_CTX(base);
    char text[EFPS_TP_ADDR_MAX], what[EFPS_TP_ADDR_MAX + 16];
    (void)addrlen;
    efps__tp_format_addr(addr, text, sizeof(text));
    snprintf(what, sizeof(what), "listen on %s", text);
    verbs_listener_t *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        efps_error("verbs: %s: out of memory", what);
        return EFPS_ERR_NOMEM;
    }
    l->base.ctx = base;
    efps_status_t status = EFPS_ERR_SYSTEM;
    const char *call = "rdma_create_id";
    if (rdma_create_id(ctx->cm, &l->id, l, RDMA_PS_TCP) != 0)
        goto err_errno;
    call = "rdma_bind_addr";
    if (rdma_bind_addr(l->id, (struct sockaddr *)addr) != 0)
        goto err_errno;
    if ((status = efps__verbs_check_id(ctx, l->id, what)) != EFPS_OK)
        goto err_destroy;
    call = "rdma_listen";
    if (rdma_listen(l->id, 128) != 0)
        goto err_errno;
    l->base.port = ntohs(rdma_get_src_port(l->id));
    pthread_mutex_lock(&ctx->base.lock);
    l->next = ctx->listeners;
    ctx->listeners = l;
    pthread_mutex_unlock(&ctx->base.lock);
    efps_info("verbs: listening on %s (port %u, %s)", text, l->base.port,
              l->id->verbs ? ctx->dev_name : "every device");
    *listener_p = &l->base;
    return EFPS_OK;

err_errno : {
    int err = efps__verbs_errno(-1);
    efps_error("verbs: %s: %s: %s%s", what, call, strerror(err),
               err == EADDRNOTAVAIL || err == ENODEV
                   ? " (is it the IP address of an RDMA device's interface?)"
                   : "");
    status = err == EADDRINUSE ? EFPS_ERR_SYSTEM : efps__verbs_errno_status(err);
    if (status == EFPS_ERR_TRANSPORT)
        status = EFPS_ERR_SYSTEM;
}
err_destroy:
    if (l->id != NULL)
        rdma_destroy_id(l->id);
    free(l);
    return status;
}

void efps__verbs_request_taken(efps_tp_conn_req_t *req)
{
    verbs_ep_t *ep = VERBS_REQ_EP(req);
    ep->listener = NULL;
}

/* Progress thread, lock held: a CONNECT_REQUEST on listener l for a new id. */
void efps__verbs_on_request(verbs_ctx_t *ctx, verbs_listener_t *l, struct rdma_cm_id *id,
                            const uint8_t *priv, size_t plen)
{
    verbs_ep_t *ep = l->base.destroying ? NULL : ep_alloc(ctx, rdma_get_peer_addr(id));
    char what[EFPS_TP_ADDR_MAX + 32];
    if (ep == NULL) {
        efps__verbs_reject_id(id);
        rdma_destroy_id(id);
        return;
    }
    snprintf(what, sizeof(what), "connection from %s", ep->addr);
    id->context = ep;
    ep->id = id;
    ep->passive = true;
    if (efps__verbs_check_id(ctx, id, what) != EFPS_OK) {
        efps__verbs_reject_id(id);
        rdma_destroy_id(id);
        efps__verbs_ep_free(ep);
        return;
    }
    if (plen < VERBS_REQ_HDR || priv[0] != VERBS_WIRE_MARKER || priv[1] != VERBS_WIRE_VERSION ||
        priv[2] > EFPS_TP_PRIV_MAX) {
        efps_warn("verbs: %s refused: not an efps verbs connection request (header %02x %02x %02x)",
                  what, plen > 0 ? priv[0] : 0, plen > 1 ? priv[1] : 0, plen > 2 ? priv[2] : 0);
        efps__verbs_reject_id(id);
        rdma_destroy_id(id);
        efps__verbs_ep_free(ep);
        return;
    }
    memcpy(ep->req.priv, priv + VERBS_REQ_HDR, priv[2]);
    ep->req.priv_len = priv[2];
    ep->base.state = EFPS_TP_EP_QUEUED;
    ep->listener = l;
    ep->deadline_ms = efps__now_ms() + ctx->base.attr.timeout_ms;
    efps__tp_ep_link(&ctx->base, &ep->base);
    efps__tp_listen_queue(&l->base, &ep->req);
    efps_debug("verbs: port %u: %s (%u bytes of private data)", l->base.port, what, priv[2]);
}

/* ---- accepting side --------------------------------------------------------------- */
efps_status_t efps__verbs_accept(efps_tp_conn_req_t *req, const efps_tp_conn_param_t *param,
                                 efps_tp_ep_t **ep_p)
{
    verbs_ep_t *ep = VERBS_REQ_EP(req);
    verbs_ctx_t *ctx = ep->ctx;
    efps_status_t status = efps__tp_accept_begin(req, param);
    if (status == EFPS_OK) {
        status = ep_create_qp(ep);
        /* rdma_cm refuses a QP for a request whose connector gave up. */
        if (status == EFPS_ERR_TRANSPORT)
            status = EFPS_ERR_PEER;
    }
    if (status == EFPS_OK) {
        uint8_t *rep = ep->local_priv;
        memset(rep, 0, VERBS_REP_HDR);
        efps__put_le(rep, VERBS_WIRE_MAGIC, 4);
        rep[4] = VERBS_WIRE_VERSION;
        rep[5] = (uint8_t)param->priv_len;
        efps__put_le(rep + 8, ctx->base.attr.rq_depth, 4);
        efps__put_le(rep + 12, ctx->base.attr.timeout_ms, 4);
        if (param->priv_len > 0)
            memcpy(rep + VERBS_REP_HDR, param->priv, param->priv_len);
        memcpy(ep->base.peer_priv, ep->req.priv, ep->req.priv_len);
        ep->base.peer_priv_len = ep->req.priv_len;
        ep->base.context = param->context;
        /* Connected before rdma_accept, under the lock: the connector's HELLO
         * can only be handled once we are done here. Sends wait for
         * ESTABLISHED (or the HELLO): until then its QP may not receive. */
        ep->base.state = EFPS_TP_EP_CONNECTED;
        uint64_t now = efps__now_ms();
        ep->last_rx_ms = ep->last_tx_ms = now;
        ep->deadline_ms = now + ctx->base.attr.timeout_ms;
        efps__verbs_set_heartbeat(ep);
        struct rdma_conn_param cp = {.private_data = rep,
                                     .private_data_len = (uint8_t)(VERBS_REP_HDR + param->priv_len),
                                     .retry_count = 7,
                                     .rnr_retry_count = 7};
        if (rdma_accept(ep->id, &cp) != 0) {
            int err = efps__verbs_errno(-1);
            efps_error("verbs: accept %s: rdma_accept: %s", ep->base.name, strerror(err));
            efps__tp_ep_go_down(&ep->base, status = EFPS_ERR_PEER);
        }
    }
    if (status != EFPS_OK) {
        ep->base.rejecting = ep->qp == NULL;
        efps__tp_ep_teardown_wait(&ep->base);
        pthread_mutex_unlock(&ctx->base.lock);
        efps__verbs_ep_free(ep);
        return status;
    }
    pthread_mutex_unlock(&ctx->base.lock);
    efps_info("verbs: accepted %s", ep->base.name);
    *ep_p = &ep->base;
    return EFPS_OK;
}

/* ---- connecting side (the caller's thread) --------------------------------------- */

/* Waits for the next event on the private channel until deadline. */
static efps_status_t next_event(struct rdma_event_channel *ch, uint64_t deadline,
                                struct rdma_cm_event *copy, uint8_t *priv, size_t *plen)
{
    for (;;) {
        uint64_t now = efps__now_ms();
        if (now >= deadline)
            return EFPS_ERR_TIMEOUT;
        struct pollfd p = {.fd = ch->fd, .events = POLLIN};
        int rc = poll(&p, 1, (int)(deadline - now));
        if (rc < 0 && errno != EINTR)
            return EFPS_ERR_SYSTEM;
        if (rc > 0)
            break;
    }
    struct rdma_cm_event *ev;
    if (rdma_get_cm_event(ch, &ev) != 0)
        return EFPS_ERR_SYSTEM;
    *copy = *ev;
    *plen = 0;
    if (ev->param.conn.private_data != NULL && ev->param.conn.private_data_len > 0) {
        *plen = ev->param.conn.private_data_len < VERBS_CM_REP_PRIV
                    ? ev->param.conn.private_data_len
                    : VERBS_CM_REP_PRIV;
        memcpy(priv, ev->param.conn.private_data, *plen);
    }
    rdma_ack_cm_event(ev);
    return EFPS_OK;
}

/* Why an event other than the one we waited for ended the attempt. */
static efps_status_t setup_failed(verbs_ep_t *ep, const struct rdma_cm_event *ev,
                                  const uint8_t *priv, size_t plen, const char *stage)
{
    int err = ev->status < 0 ? -ev->status : ev->status;
    switch (ev->event) {
    case RDMA_CM_EVENT_REJECTED:
        if (plen >= 5 && efps__get_le(priv, 4) == VERBS_WIRE_MAGIC) {
            efps_error("verbs: connect to %s: rejected by the peer", ep->base.name);
        } else {
            /* Nothing listening (invalid service ID) is what a caller that
             * starts before its peer retries: info, as tcp's ECONNREFUSED. */
            EFPS_LOG(ev->status == 8 ? EFPS_LOG_INFO : EFPS_LOG_ERROR,
                     "verbs: connect to %s: %s (reject reason %d)", ep->base.name,
                     efps__verbs_reject_reason(ev->status), ev->status);
        }
        return EFPS_ERR_PEER;
    case RDMA_CM_EVENT_UNREACHABLE:
        efps_error("verbs: connect to %s: unreachable: %s", ep->base.name, strerror(err));
        return err == ETIMEDOUT ? EFPS_ERR_TIMEOUT : EFPS_ERR_PEER;
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
        efps_error("verbs: connect to %s: %s: %s (use the IP address of an RDMA device's "
                   "interface; 127.0.0.1 has no RDMA route)",
                   ep->base.name, rdma_event_str(ev->event), strerror(err));
        return EFPS_ERR_PEER;
    default:
        efps_error("verbs: connect to %s: %s while %s (status %d)", ep->base.name,
                   rdma_event_str(ev->event), stage, ev->status);
        return EFPS_ERR_PEER;
    }
}

/* Runs one connection step: call, then wait for `want`. */
static efps_status_t step(verbs_ep_t *ep, struct rdma_event_channel *ch, int rc, const char *call,
                          enum rdma_cm_event_type want, uint64_t deadline, uint32_t timeout,
                          uint8_t *priv, size_t *plen)
{
    if (rc != 0) {
        int err = efps__verbs_errno(-1);
        efps_error("verbs: connect to %s: %s: %s%s", ep->base.name, call, strerror(err),
                   err == ENODEV || err == EADDRNOTAVAIL
                       ? " (use the IP address of an RDMA device's interface; 127.0.0.1 has "
                         "no RDMA route)"
                       : "");
        return err == ENODEV || err == EADDRNOTAVAIL || err == ENETUNREACH ? EFPS_ERR_PEER
                                                                           : EFPS_ERR_SYSTEM;
    }
    struct rdma_cm_event ev;
    efps_status_t status = next_event(ch, deadline, &ev, priv, plen);
    if (status == EFPS_ERR_TIMEOUT)
        efps_error("verbs: connect to %s: no answer within %u ms (%s)", ep->base.name, timeout,
                   call);
    else if (status != EFPS_OK)
        efps_error("verbs: connect to %s: rdma_get_cm_event: %s", ep->base.name,
                   strerror(efps__verbs_errno(-1)));
    else if (ev.event != want)
        status = setup_failed(ep, &ev, priv, *plen, call);
    return status;
}

/* The acceptor's reply: its window, its timeout, the application's data. */
static efps_status_t take_reply(verbs_ep_t *ep, const uint8_t *rep, size_t len)
{
    uint32_t window = len >= VERBS_REP_HDR ? (uint32_t)efps__get_le(rep + 8, 4) : 0;
    if (len < VERBS_REP_HDR || efps__get_le(rep, 4) != VERBS_WIRE_MAGIC ||
        rep[4] != VERBS_WIRE_VERSION || rep[5] > EFPS_TP_PRIV_MAX ||
        VERBS_REP_HDR + (size_t)rep[5] > len || window == 0 || window > 65536) {
        efps_error("verbs: connect to %s: the answer is not an efps verbs accept (%zu bytes, "
                   "version %u)",
                   ep->base.name, len, len > 4 ? rep[4] : 0);
        return EFPS_ERR_PROTO;
    }
    ep->peer_window = ep->wr_credits = window;
    ep->peer_timeout_ms = (uint32_t)efps__get_le(rep + 12, 4);
    ep->peer_known = true;
    memcpy(ep->base.peer_priv, rep + VERBS_REP_HDR, rep[5]);
    ep->base.peer_priv_len = rep[5];
    return EFPS_OK;
}

/* Lock held: the endpoint goes live; its later events go to the context. */
static efps_status_t go_live(verbs_ep_t *ep, struct rdma_event_channel *ch)
{
    verbs_ctx_t *ctx = ep->ctx;
    if (ep->base.state != EFPS_TP_EP_OPENING) /* the acceptor already broke the protocol */
        return ep->base.down_status;
    uint64_t now = efps__now_ms();
    ep->base.state = EFPS_TP_EP_CONNECTED;
    ep->established = true;
    ep->last_rx_ms = ep->last_tx_ms = now;
    efps__verbs_set_heartbeat(ep);
    efps_status_t status = efps__verbs_send_hello(ep);
    if (status == EFPS_OK && rdma_migrate_id(ep->id, ctx->cm) != 0) {
        efps_error("verbs: connect to %s: rdma_migrate_id: %s", ep->base.name,
                   strerror(efps__verbs_errno(-1)));
        status = EFPS_ERR_SYSTEM;
    }
    if (status != EFPS_OK) {
        ep->base.state = EFPS_TP_EP_OPENING; /* undone by the caller like any failure */
        return status;
    }
    (void)ch;
    efps__verbs_tx_progress(ep);
    return EFPS_OK;
}

efps_status_t efps__verbs_connect(efps_tp_ctx_t *base, const struct sockaddr *addr,
                                  socklen_t addrlen, const efps_tp_conn_param_t *param,
                                  efps_tp_ep_t **ep_p)
{
    verbs_ctx_t *ctx = VERBS_CTX(base);
    efps_tp_conn_param_t none = {0};
    (void)addrlen;
    if (param == NULL)
        param = &none;
    uint32_t timeout = param->timeout_ms > 0 ? (uint32_t)param->timeout_ms : base->attr.timeout_ms;
    uint64_t deadline = efps__now_ms() + timeout;
    uint8_t priv[VERBS_CM_REP_PRIV], req[VERBS_CM_REQ_PRIV] = {0};
    size_t plen = 0;
    efps_status_t status = EFPS_ERR_NOMEM;
    struct rdma_event_channel *ch = NULL;

    verbs_ep_t *ep = ep_alloc(ctx, addr);
    if (ep == NULL) {
        efps_error("verbs: connect: out of memory");
        return EFPS_ERR_NOMEM;
    }
    efps__tp_ep_set_name(&ep->base, param->label, ep->addr);
    ep->base.context = param->context;
    ep->base.state = EFPS_TP_EP_OPENING;
    ch = rdma_create_event_channel();
    if (ch == NULL || rdma_create_id(ch, &ep->id, ep, RDMA_PS_TCP) != 0) {
        efps_error("verbs: connect to %s: cannot create an rdma_cm id: %s", ep->base.name,
                   strerror(efps__verbs_errno(-1)));
        status = EFPS_ERR_SYSTEM;
        goto err;
    }
    int ms = (int)timeout;
    status = step(ep, ch, rdma_resolve_addr(ep->id, NULL, (struct sockaddr *)addr, ms),
                  "rdma_resolve_addr", RDMA_CM_EVENT_ADDR_RESOLVED, deadline, timeout, priv, &plen);
    if (status == EFPS_OK)
        status = efps__verbs_check_id(ctx, ep->id, ep->base.name);
    if (status == EFPS_OK)
        status = step(ep, ch, rdma_resolve_route(ep->id, ms), "rdma_resolve_route",
                      RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, timeout, priv, &plen);
    if (status == EFPS_OK)
        status = efps__verbs_check_id(ctx, ep->id, ep->base.name);
    if (status != EFPS_OK)
        goto err;
    pthread_mutex_lock(&ctx->base.lock);
    status = ep_create_qp(ep);
    if (status == EFPS_OK)
        efps__tp_ep_link(&ctx->base, &ep->base);
    pthread_mutex_unlock(&ctx->base.lock);
    if (status != EFPS_OK)
        goto err;

    req[0] = VERBS_WIRE_MARKER;
    req[1] = VERBS_WIRE_VERSION;
    req[2] = (uint8_t)param->priv_len;
    if (param->priv_len > 0)
        memcpy(req + VERBS_REQ_HDR, param->priv, param->priv_len);
    struct rdma_conn_param cp = {.private_data = req,
                                 .private_data_len = (uint8_t)(VERBS_REQ_HDR + param->priv_len),
                                 .retry_count = 7,
                                 .rnr_retry_count = 7};
    status = step(ep, ch, rdma_connect(ep->id, &cp), "rdma_connect", RDMA_CM_EVENT_ESTABLISHED,
                  deadline, timeout, priv, &plen);
    pthread_mutex_lock(&ctx->base.lock);
    if (status == EFPS_OK)
        status = take_reply(ep, priv, plen);
    if (status == EFPS_OK)
        status = go_live(ep, ch);
    pthread_mutex_unlock(&ctx->base.lock);
    if (status != EFPS_OK)
        goto err;
    rdma_destroy_event_channel(ch);
    efps_info("verbs: connected to %s", ep->base.name);
    *ep_p = &ep->base;
    return EFPS_OK;

err:
    /* Not live yet: nothing but this thread and the CQ know the endpoint. */
    pthread_mutex_lock(&ctx->base.lock);
    if (ep->qp != NULL) {
        efps__verbs_disconnect(ep);
        efps__verbs_drain_cq(ctx);
    }
    efps__verbs_tx_abandon_posted(ep, false);
    efps__tp_cq_purge(&ctx->base.cq, &ep->base); /* a failed HELLO may have reported */
    efps__verbs_hash_del(ctx, ep);
    efps__tp_ep_unlink(&ctx->base, &ep->base); /* harmless when not linked */
    if (ep->qp != NULL)
        rdma_destroy_qp(ep->id);
    efps__verbs_ep_release(ep);
    pthread_mutex_unlock(&ctx->base.lock);
    if (ep->id != NULL)
        rdma_destroy_id(ep->id);
    if (ch != NULL)
        rdma_destroy_event_channel(ch);
    efps__verbs_ep_free(ep);
    return status;
}
