/* The transport-neutral API: picks a transport by name, checks arguments once
 * for all of them, then calls through the transport's operations table. */
#include "efps_internal/config.h"
#include "transport_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* transport's settings (efps_internal/config.h). */
static const efps__setting_t settings[] = {
    {"EFPS_TRANSPORT", "auto",
     "transport: auto|tcp|verbs (auto = verbs if an active device exists)"},
    {"EFPS_TIMEOUT_MS", "30000", "a peer silent for this long is declared dead"},
    {"EFPS_IB_DEV", "", "RDMA device name (default: first active one)"},
    {"EFPS_IB_GID", "", "GID index (default: a RoCE v2 GID when there is one)"},
    {"EFPS_CPU_AFFINITY", "auto", "pin the progress thread: auto|none|<core>"},
    {NULL, NULL, NULL},
};
static efps__config_table_t table = {"transport", EFPS__LAYER_TRANSPORT, settings, NULL};

__attribute__((constructor(EFPS__CONFIG_PRIORITY))) static void register_settings(void)
{
    efps__config_register(&table);
}

/* Preferred first: "auto" takes the first whose probe succeeds (verbs needs
 * an RDMA device with an active port). A library built without verbs
 * (EFPS_WITH_VERBS=OFF) knows tcp alone, and refuses "verbs" by name. */
static const struct efps_transport_ops *const transports[] = {
#ifdef EFPS_HAVE_VERBS
    &efps__verbs_ops,
#endif
    &efps__tcp_ops,
};
#define N_TRANSPORTS (sizeof(transports) / sizeof(transports[0]))

static const struct efps_transport_ops *find_transport(const char *name)
{
    for (size_t i = 0; i < N_TRANSPORTS; i++)
        if (strcasecmp(transports[i]->name, name) == 0)
            return transports[i];
    return NULL;
}

static efps_status_t fill_attr(const efps_tp_attr_t *in, efps_tp_attr_t *out)
{
    *out = in != NULL ? *in : (efps_tp_attr_t){0};
    if (out->sq_depth == 0)
        out->sq_depth = 64;
    if (out->rq_depth == 0)
        out->rq_depth = 256;
    if (out->timeout_ms == 0) {
        const char *text = efps_config_get("EFPS_TIMEOUT_MS");
        uint64_t ms;
        if (!efps__parse_u64(text, 1, 86400000u, &ms)) {
            efps_error("EFPS_TIMEOUT_MS='%s' is not a number of milliseconds in 1..86400000", text);
            return EFPS_ERR_INVALID;
        }
        out->timeout_ms = (uint32_t)ms;
    }
    if (out->hello_timeout_ms == 0 || out->hello_timeout_ms > out->timeout_ms)
        out->hello_timeout_ms = out->timeout_ms;
    if (out->sq_depth > 65536 || out->rq_depth > 65536) {
        efps_error("transport queue depths sq %u rq %u: at most 65536 each", out->sq_depth,
                   out->rq_depth);
        return EFPS_ERR_INVALID;
    }
    if (out->device == NULL) {
        const char *dev = efps_config_get("EFPS_IB_DEV");
        out->device = (dev != NULL && *dev != '\0') ? dev : NULL;
    }
    if (out->device != NULL && *out->device == '\0')
        out->device = NULL; /* "" set by a program: the first active device */
    if (out->gid == NULL)
        out->gid = efps_config_get("EFPS_IB_GID");
    if (out->cpu_affinity == NULL)
        out->cpu_affinity = efps_config_get("EFPS_CPU_AFFINITY");
    return EFPS_OK;
}

efps_status_t efps_tp_open(const char *name, const efps_tp_attr_t *attr, efps_tp_ctx_t **ctx_p)
{
    efps_tp_attr_t full;
    const struct efps_transport_ops *ops = NULL;
    efps_status_t status;

    if (ctx_p == NULL)
        return EFPS_ERR_INVALID;
    if (name == NULL)
        name = efps_config_get("EFPS_TRANSPORT");
    status = fill_attr(attr, &full);
    if (status != EFPS_OK)
        return status;
    if (strcasecmp(name, "auto") == 0) {
        /* The first that can run here; tcp, last, always can (sockets exist
         * everywhere), so it is the fallback and is not asked. */
        ops = transports[N_TRANSPORTS - 1];
        for (size_t i = 0; i + 1 < N_TRANSPORTS; i++)
            if (transports[i]->probe(&full) == EFPS_OK) {
                ops = transports[i];
                break;
            }
    } else {
        ops = find_transport(name);
        if (ops == NULL) {
            bool known = strcasecmp(name, "verbs") == 0;
            efps_error("transport '%s' %s", name,
                       known ? "is not built into this library (EFPS_WITH_VERBS=OFF or no "
                               "rdma-core at build time)"
                             : "is unknown (tcp|verbs|auto)");
            return known ? EFPS_ERR_UNSUPPORTED : EFPS_ERR_INVALID;
        }
    }
    efps_tp_ctx_t *ctx;
    status = ops->open(&full, &ctx);
    if (status != EFPS_OK)
        return status;
    efps_debug("transport %s open: sq %u rq %u timeout %u ms hello %u ms", ops->name, full.sq_depth,
               full.rq_depth, full.timeout_ms, full.hello_timeout_ms);
    *ctx_p = ctx;
    return EFPS_OK;
}

void efps_tp_close(efps_tp_ctx_t *ctx)
{
    if (ctx != NULL)
        ctx->ops->close(ctx);
}

const char *efps_tp_name(const efps_tp_ctx_t *ctx)
{
    return ctx->ops->name;
}

void efps_tp_query(const efps_tp_ctx_t *ctx, efps_tp_attr_t *attr_p)
{
    *attr_p = ctx->attr;
}

/* ---- memory --------------------------------------------------------------- */
efps_status_t efps_tp_mem_reg(efps_tp_ctx_t *ctx, void *addr, size_t length, unsigned access,
                              efps_tp_mr_t **mr_p)
{
    if (ctx == NULL || addr == NULL || length == 0 || mr_p == NULL ||
        (access & ~EFPS_TP_ACCESS_REMOTE_WRITE) != 0 || length > UINT64_MAX / 2) {
        efps_error("register memory %p length %zu access 0x%x: invalid argument", addr, length,
                   access);
        return EFPS_ERR_INVALID;
    }
    return ctx->ops->mem_reg(ctx, addr, length, access, mr_p);
}

efps_status_t efps_tp_mem_dereg(efps_tp_mr_t *mr)
{
    return mr != NULL ? mr->ctx->ops->mem_dereg(mr) : EFPS_OK;
}

efps_status_t efps_tp_mem_expose(efps_tp_ep_t *ep, efps_tp_mr_t *mr, efps_tp_rkey_t *rkey_p)
{
    const char *why = NULL;
    if (ep == NULL || mr == NULL || rkey_p == NULL)
        return EFPS_ERR_INVALID;
    if (mr->ctx != ep->ctx)
        why = "the region belongs to another transport context";
    else if (!(mr->access & EFPS_TP_ACCESS_REMOTE_WRITE))
        why = "the region was not registered for remote write";
    if (why != NULL) {
        efps_error("expose region %p (%zu bytes) to %s: %s", mr->addr, mr->length, ep->name, why);
        return EFPS_ERR_INVALID;
    }
    return ep->ctx->ops->mem_expose(ep, mr, rkey_p);
}

void *efps_tp_mr_addr(const efps_tp_mr_t *mr)
{
    return mr->addr;
}

size_t efps_tp_mr_length(const efps_tp_mr_t *mr)
{
    return mr->length;
}

void efps_tp_rkey_pack(const efps_tp_rkey_t *rkey, uint8_t out[EFPS_TP_RKEY_PACKED])
{
    efps__put_le(out, rkey->base, 8);
    efps__put_le(out + 8, rkey->length, 8);
    efps__put_le(out + 16, rkey->key, 4);
    efps__put_le(out + 20, rkey->transport, 2);
    efps__put_le(out + 22, rkey->access, 2);
}

efps_status_t efps_tp_rkey_unpack(const uint8_t in[EFPS_TP_RKEY_PACKED], efps_tp_rkey_t *rkey_p)
{
    efps_tp_rkey_t k = {
        .base = efps__get_le(in, 8),
        .length = efps__get_le(in + 8, 8),
        .key = (uint32_t)efps__get_le(in + 16, 4),
        .transport = (uint16_t)efps__get_le(in + 20, 2),
        .access = (uint16_t)efps__get_le(in + 22, 2),
    };
    if ((k.transport != EFPS_TP_ID_TCP && k.transport != EFPS_TP_ID_VERBS) ||
        (k.access & ~EFPS_TP_ACCESS_REMOTE_WRITE) != 0 || k.length == 0) {
        efps_error("unpack region key: transport %u access 0x%x length %llu is not a valid key",
                   k.transport, k.access, (unsigned long long)k.length);
        return EFPS_ERR_CORRUPT;
    }
    *rkey_p = k;
    return EFPS_OK;
}

/* ---- connections ---------------------------------------------------------- */
static efps_status_t check_param(const efps_tp_conn_param_t *param, const char *what)
{
    if (param != NULL &&
        (param->priv_len > EFPS_TP_PRIV_MAX || (param->priv_len > 0 && param->priv == NULL))) {
        efps_error("%s: private data of %zu bytes (at most %d)", what, param->priv_len,
                   EFPS_TP_PRIV_MAX);
        return EFPS_ERR_INVALID;
    }
    return EFPS_OK;
}

efps_status_t efps_tp_listen(efps_tp_ctx_t *ctx, const char *address,
                             efps_tp_listener_t **listener_p)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (ctx == NULL || address == NULL || listener_p == NULL)
        return EFPS_ERR_INVALID;
    efps_status_t status = efps__tp_parse_addr(address, true, &ss, &len);
    if (status != EFPS_OK)
        return status;
    return ctx->ops->listen(ctx, (struct sockaddr *)&ss, len, listener_p);
}

void efps_tp_listener_destroy(efps_tp_listener_t *listener)
{
    if (listener != NULL)
        efps__tp_listen_destroy(listener);
}

uint16_t efps_tp_listener_port(const efps_tp_listener_t *listener)
{
    return listener->port;
}

efps_status_t efps_tp_get_request(efps_tp_listener_t *listener, int timeout_ms,
                                  efps_tp_conn_req_t **req_p)
{
    if (listener == NULL || req_p == NULL)
        return EFPS_ERR_INVALID;
    return efps__tp_listen_get(listener, timeout_ms, req_p);
}

const void *efps_tp_req_priv(const efps_tp_conn_req_t *req, size_t *len_p)
{
    if (len_p != NULL)
        *len_p = req->priv_len;
    return req->priv;
}

const char *efps_tp_req_peer(const efps_tp_conn_req_t *req)
{
    return req->peer;
}

efps_status_t efps_tp_accept(efps_tp_conn_req_t *req, const efps_tp_conn_param_t *param,
                             efps_tp_ep_t **ep_p)
{
    if (req == NULL)
        return EFPS_ERR_INVALID;
    const struct efps_transport_ops *ops = req->ctx->ops;
    efps_status_t status = check_param(param, "accept");
    if (status == EFPS_OK && ep_p == NULL)
        status = EFPS_ERR_INVALID;
    if (status != EFPS_OK) {
        efps__tp_reject(req); /* accept consumes req, also on error */
        return status;
    }
    efps_tp_conn_param_t none = {0};
    return ops->accept(req, param != NULL ? param : &none, ep_p);
}

void efps_tp_reject(efps_tp_conn_req_t *req)
{
    if (req != NULL)
        efps__tp_reject(req);
}

efps_status_t efps_tp_connect(efps_tp_ctx_t *ctx, const char *address,
                              const efps_tp_conn_param_t *param, efps_tp_ep_t **ep_p)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (ctx == NULL || address == NULL || ep_p == NULL)
        return EFPS_ERR_INVALID;
    efps_status_t status = check_param(param, address);
    if (status == EFPS_OK)
        status = efps__tp_parse_addr(address, false, &ss, &len);
    if (status != EFPS_OK)
        return status;
    return ctx->ops->connect(ctx, (struct sockaddr *)&ss, len, param, ep_p);
}

void efps_tp_ep_destroy(efps_tp_ep_t *ep)
{
    if (ep != NULL)
        efps__tp_ep_destroy(ep);
}

const char *efps_tp_ep_name(const efps_tp_ep_t *ep)
{
    return ep->name;
}

void *efps_tp_ep_context(const efps_tp_ep_t *ep)
{
    return ep->context;
}

const void *efps_tp_ep_peer_priv(const efps_tp_ep_t *ep, size_t *len_p)
{
    if (len_p != NULL)
        *len_p = ep->peer_priv_len;
    return ep->peer_priv;
}

efps_status_t efps_tp_ep_status(const efps_tp_ep_t *ep)
{
    return efps__tp_ep_status(ep);
}

/* ---- data transfer -------------------------------------------------------- */

/* [offset, offset + length) inside [0, size), without overflow. */
static bool in_range(uint64_t offset, uint64_t length, uint64_t size)
{
    return offset <= size && length <= size - offset;
}

efps_status_t efps_tp_write_imm(efps_tp_ep_t *ep, efps_tp_mr_t *local, size_t local_offset,
                                size_t length, const efps_tp_rkey_t *remote, uint64_t remote_offset,
                                uint32_t imm, uint64_t user_context)
{
    const char *why = NULL;
    if (ep == NULL || local == NULL || remote == NULL)
        return EFPS_ERR_INVALID;
    if (local->ctx != ep->ctx)
        why = "the local region belongs to another transport context";
    else if (length > EFPS_TP_WRITE_MAX)
        why = "longer than EFPS_TP_WRITE_MAX";
    else if (!in_range(local_offset, length, local->length))
        why = "the local range is outside its region";
    else if (remote->transport != ep->ctx->ops->id)
        why = "the remote key is of another transport";
    else if (!(remote->access & EFPS_TP_ACCESS_REMOTE_WRITE))
        why = "the remote region does not allow remote writes";
    else if (!in_range(remote_offset, length, remote->length))
        why = "the remote range is outside its region";
    if (why != NULL) {
        efps_error("write to %s: local offset %zu, %zu bytes, remote offset %llu of %llu: %s",
                   ep->name, local_offset, length, (unsigned long long)remote_offset,
                   (unsigned long long)remote->length, why);
        return EFPS_ERR_INVALID;
    }
    return ep->ctx->ops->write_imm(ep, local, local_offset, length, remote, remote_offset, imm,
                                   user_context);
}

efps_status_t efps_tp_msg_send(efps_tp_ep_t *ep, const void *buf, size_t len)
{
    if (ep == NULL || buf == NULL || len == 0 || len > EFPS_TP_MSG_MAX) {
        efps_error("message of %zu bytes to %s: must be 1..%d bytes", len,
                   ep != NULL ? ep->name : "(null)", EFPS_TP_MSG_MAX);
        return EFPS_ERR_INVALID;
    }
    return ep->ctx->ops->msg_send(ep, buf, len);
}

efps_status_t efps_tp_msg_recv(efps_tp_ep_t *ep, void *buf, size_t cap, size_t *len_p,
                               int timeout_ms)
{
    if (ep == NULL || (buf == NULL && cap > 0))
        return EFPS_ERR_INVALID;
    return efps__tp_msgq_recv(ep, buf, cap, len_p, timeout_ms);
}

efps_status_t efps_tp_poll(efps_tp_ctx_t *ctx, efps_tp_cqe_t *cqes, int max, int timeout_ms,
                           int *count_p)
{
    if (ctx == NULL || cqes == NULL || max <= 0 || count_p == NULL)
        return EFPS_ERR_INVALID;
    return efps__tp_base_poll(ctx, cqes, max, timeout_ms, count_p);
}

const char *efps_tp_cqe_type_name(efps_tp_cqe_type_t type)
{
    switch (type) {
    case EFPS_TP_CQE_WRITE:
        return "WRITE";
    case EFPS_TP_CQE_RECV:
        return "RECV";
    case EFPS_TP_CQE_DISCONNECT:
        return "DISCONNECT";
    }
    return "UNKNOWN";
}
