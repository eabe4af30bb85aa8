/* Registered regions of the verbs transport: ibv_reg_mr once, when the
 * application declares its buffers, with the least access each needs:
 * a source of writes only gets nothing (the NIC may always read local
 * memory it sends from), a region peers write into gets LOCAL_WRITE +
 * REMOTE_WRITE (verbs demands the first with the second). Nothing is ever
 * remotely readable. The rkey handed to peers is {address, length, rkey}. */
#include "transport/verbs/verbs.h"

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
    int flags = (access & EFPS_TP_ACCESS_REMOTE_WRITE)
                    ? IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE
                    : 0;
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

efps_status_t efps__verbs_mem_expose(efps_tp_ep_t *ep, efps_tp_mr_t *base, efps_tp_rkey_t *rkey_p)
{
    verbs_mr_t *mr = (verbs_mr_t *)base;
    (void)ep;
    *rkey_p = (efps_tp_rkey_t){.base = (uint64_t)(uintptr_t)base->addr,
                               .length = base->length,
                               .key = mr->mr->rkey,
                               .transport = EFPS_TP_ID_VERBS,
                               .access = (uint16_t)base->access};
    return EFPS_OK;
}
