/* Registered regions of the verbs transport: ibv_reg_mr once, when the
 * application declares its buffers, with the least access each needs:
 * a source of writes only gets nothing (the NIC may always read local
 * memory it sends from), a region peers write into gets LOCAL_WRITE +
 * MW_BIND and no remote access of its own: peers reach it only through a
 * type-2 memory window per endpoint (efps_tp_mem_expose), bound to that
 * endpoint's queue pair with REMOTE_WRITE, so its rkey is refused on every
 * other QP by the adapter itself. Nothing is ever remotely readable. The key
 * handed to a peer is {address, length, the window's rkey}. A device without
 * type-2 windows falls back to REMOTE_WRITE on the MR (any QP of our
 * protection domain may then use the key), with a warning. */
#include "verbs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

efps_status_t efps__verbs_mem_reg(efps_tp_ctx_t *base, void *addr, size_t length, unsigned access,
                                  efps_tp_mr_t **mr_p)
{
    verbs_ctx_t *ctx = VERBS_CTX(base);
    verbs_mr_t *mr = calloc(1, sizeof(*mr));
    if (mr == NULL) {
        efps_error("verbs: register %zu bytes: out of memory", length);
        return EFPS_ERR_NOMEM;
    }
    int remote = ctx->mw_type2 ? IBV_ACCESS_MW_BIND : IBV_ACCESS_REMOTE_WRITE;
    int flags = (access & EFPS_TP_ACCESS_REMOTE_WRITE) ? IBV_ACCESS_LOCAL_WRITE | remote : 0;
    mr->mr = ibv_reg_mr(ctx->pd, addr, length, flags);
    if (mr->mr == NULL) {
        int err = efps__verbs_ptr_errno();
        efps_error("verbs: ibv_reg_mr of %p, %zu bytes on %s: %s%s", addr, length, ctx->dev_name,
                   strerror(err),
                   err == ENOMEM || err == EFAULT ? " (locked-memory limit? ulimit -l)" : "");
        free(mr);
        return err == ENOMEM ? EFPS_ERR_NOMEM : efps__verbs_errno_status(err);
    }
    mr->base = (efps_tp_mr_t){.ctx = base, .addr = addr, .length = length, .access = access};
    pthread_mutex_lock(&ctx->base.lock);
    mr->next = ctx->mrs;
    if (ctx->mrs != NULL)
        ctx->mrs->prev = mr;
    ctx->mrs = mr;
    pthread_mutex_unlock(&ctx->base.lock);
    efps_debug("verbs: registered %p, %zu bytes, access 0x%x (lkey 0x%x rkey 0x%x)", addr, length,
               access, mr->mr->lkey, mr->mr->rkey);
    *mr_p = &mr->base;
    return EFPS_OK;
}

efps_status_t efps__verbs_mem_dereg(efps_tp_mr_t *base)
{
    verbs_mr_t *mr = (verbs_mr_t *)base;
    verbs_ctx_t *ctx = VERBS_CTX(base->ctx);
    pthread_mutex_lock(&ctx->base.lock);
    unsigned refs = mr->tx_refs;
    if (refs == 0) {
        efps__verbs_unexpose(ctx, NULL, mr); /* a window keeps its MR registered */
        if (mr->prev != NULL)
            mr->prev->next = mr->next;
        else
            ctx->mrs = mr->next;
        if (mr->next != NULL)
            mr->next->prev = mr->prev;
    }
    pthread_mutex_unlock(&ctx->base.lock);
    if (refs > 0) {
        efps_error("verbs: deregister %p: %u writes posted from it have not completed", base->addr,
                   refs);
        return EFPS_ERR_STATE;
    }
    /* A peer writing into it right now gets a remote access error: its
     * endpoint fails, and so does ours when its QP reports it. */
    int rc = ibv_dereg_mr(mr->mr);
    efps_status_t status = EFPS_OK;
    if (rc != 0) { /* the region is gone from our list either way */
        int err = efps__verbs_errno(rc);
        efps_error("verbs: ibv_dereg_mr of %p: %s", base->addr, strerror(err));
        status = efps__verbs_errno_status(err);
    } else {
        efps_debug("verbs: deregistered %p", base->addr);
    }
    free(mr);
    return status;
}

/* Lock held: the window of ep on mr, or NULL. */
static verbs_expo_t *find_expo(verbs_ctx_t *ctx, const verbs_ep_t *ep, const verbs_mr_t *mr)
{
    for (verbs_expo_t *x = ctx->expos; x != NULL; x = x->next)
        if (x->ep == ep && x->mr == mr)
            return x;
    return NULL;
}

void efps__verbs_unexpose(verbs_ctx_t *ctx, const verbs_ep_t *ep, const verbs_mr_t *mr)
{
    for (verbs_expo_t **pp = &ctx->expos; *pp != NULL;) {
        verbs_expo_t *x = *pp;
        if (x->ep != ep && x->mr != mr) {
            pp = &x->next;
            continue;
        }
        *pp = x->next;
        int rc = x->mw != NULL ? ibv_dealloc_mw(x->mw) : 0;
        if (rc != 0)
            efps_error("verbs: %s: ibv_dealloc_mw: %s", x->ep->base.name,
                       strerror(efps__verbs_errno(rc)));
        free(x);
    }
}

/* Lock held: waits until ep can post (established) and the spare control
 * slot is free, or why not. */
static efps_status_t wait_bindable(verbs_ep_t *ep, uint64_t deadline)
{
    verbs_ctx_t *ctx = ep->ctx;
    for (;;) {
        if (ep->base.state != EFPS_TP_EP_CONNECTED || ep->closing != VCLOSE_NONE)
            return EFPS_ERR_PEER;
        if (ep->established && !ep->bind_inflight)
            return EFPS_OK;
        if (!efps__tp_wait(&ctx->base.ev_cond, &ctx->base.lock, deadline))
            return EFPS_ERR_TIMEOUT;
    }
}

/* Lock held: allocates x's window and binds it to ep's QP, waiting for the
 * bind to complete. */
static efps_status_t bind_window(verbs_ep_t *ep, verbs_expo_t *x, uint64_t deadline)
{
    verbs_ctx_t *ctx = ep->ctx;
    efps_status_t status = wait_bindable(ep, deadline);
    if (status != EFPS_OK)
        return status;
    x->mw = ibv_alloc_mw(ctx->pd, IBV_MW_TYPE_2);
    if (x->mw == NULL) {
        int err = efps__verbs_ptr_errno();
        efps_error("verbs: expose %p to %s: ibv_alloc_mw: %s", x->mr->base.addr, ep->base.name,
                   strerror(err));
        return efps__verbs_errno_status(err);
    }
    status = efps__verbs_post_bind(ep, x);
    while (status == EFPS_OK && x->state == 0) {
        if (ep->base.state != EFPS_TP_EP_CONNECTED)
            status = EFPS_ERR_PEER; /* the flush completes the bind later */
        else if (!efps__tp_wait(&ctx->base.ev_cond, &ctx->base.lock, deadline))
            status = EFPS_ERR_TIMEOUT;
    }
    if (status == EFPS_OK && x->state < 0)
        status = EFPS_ERR_PEER; /* the endpoint failed, with the reason logged */
    return status;
}

efps_status_t efps__verbs_mem_expose(efps_tp_ep_t *base, efps_tp_mr_t *region,
                                     efps_tp_rkey_t *rkey_p)
{
    verbs_ep_t *ep = VERBS_EP(base);
    verbs_mr_t *mr = (verbs_mr_t *)region;
    verbs_ctx_t *ctx = ep->ctx;
    uint64_t deadline = efps__now_ms() + ctx->base.attr.timeout_ms;
    efps_status_t status = EFPS_OK;
    pthread_mutex_lock(&ctx->base.lock);
    verbs_expo_t *x = find_expo(ctx, ep, mr);
    if (x == NULL) {
        x = calloc(1, sizeof(*x));
        if (x == NULL) {
            pthread_mutex_unlock(&ctx->base.lock);
            efps_error("verbs: expose %p to %s: out of memory", region->addr, base->name);
            return EFPS_ERR_NOMEM;
        }
        *x = (verbs_expo_t){.ep = ep,
                            .mr = mr,
                            .rkey = {.base = (uint64_t)(uintptr_t)region->addr,
                                     .length = region->length,
                                     .key = mr->mr->rkey,
                                     .transport = EFPS_TP_ID_VERBS,
                                     .access = (uint16_t)region->access},
                            .state = ctx->mw_type2 ? 0 : 1,
                            .next = ctx->expos};
        ctx->expos = x;
        if (ctx->mw_type2)
            status = bind_window(ep, x, deadline);
    } else if (x->state <= 0) {
        status = EFPS_ERR_PEER; /* an earlier bind failed or never finished */
    }
    if (status == EFPS_OK)
        *rkey_p = x->rkey;
    pthread_mutex_unlock(&ctx->base.lock);
    if (status != EFPS_OK)
        efps_error("verbs: expose %p (%zu bytes) to %s: %s", region->addr, region->length,
                   base->name, efps_strerror(status));
    else
        efps_debug("verbs: %p exposed to %s (rkey 0x%x)", region->addr, base->name, rkey_p->key);
    return status;
}
