/* Registered regions of the tcp transport. A region is named on the wire by
 * its id and a random 64-bit secret: the receiver accepts a write only when
 * both match a live region that grants remote write, so a peer can reach
 * exactly the regions whose keys it was given. */
#include "transport/tcp/tcp.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static efps_status_t random_secret(uint64_t *secret_p)
{
    uint64_t s = 0;
    while (s == 0) { /* 0 is what an unused header field holds */
        if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s)) {
            efps_error("tcp: register memory: getrandom failed");
            return EFPS_ERR_SYSTEM;
        }
    }
    *secret_p = s;
    return EFPS_OK;
}

/* Lock held: a free slot of ctx->regions, growing the table if needed. */
static efps_status_t take_slot(tcp_ctx_t *ctx, uint32_t *index_p)
{
    for (uint32_t i = 0; i < ctx->n_regions; i++) {
        if (ctx->regions[i] == NULL) {
            *index_p = i;
            return EFPS_OK;
        }
    }
    uint32_t n = ctx->n_regions ? ctx->n_regions * 2 : 16;
    if (n > (1u << 24)) {
        efps_error("tcp: register memory: more than %u regions", 1u << 24);
        return EFPS_ERR_NO_RESOURCE;
    }
    tcp_mr_t **table = realloc(ctx->regions, n * sizeof(*table));
    if (table == NULL) {
        efps_error("tcp: register memory: out of memory for the region table");
        return EFPS_ERR_NOMEM;
    }
    memset(table + ctx->n_regions, 0, (n - ctx->n_regions) * sizeof(*table));
    *index_p = ctx->n_regions;
    ctx->regions = table;
    ctx->n_regions = n;
    return EFPS_OK;
}

efps_status_t efps__tcp_mem_reg(efps_tp_ctx_t *base, void *addr, size_t length, unsigned access,
                                efps_tp_mr_t **mr_p)
{
    tcp_ctx_t *ctx = TCP_CTX(base);
    uint32_t index;
    tcp_mr_t *mr = calloc(1, sizeof(*mr));
    if (mr == NULL) {
        efps_error("tcp: register memory: out of memory");
        return EFPS_ERR_NOMEM;
    }
    efps_status_t status = random_secret(&mr->secret);
    if (status != EFPS_OK)
        goto err_free;
    pthread_mutex_lock(&ctx->base.lock);
    status = take_slot(ctx, &index);
    if (status == EFPS_OK)
        ctx->regions[index] = mr;
    pthread_mutex_unlock(&ctx->base.lock);
    if (status != EFPS_OK)
        goto err_free;
    mr->id = index + 1;
    mr->base = (efps_tp_mr_t){
        .ctx = base,
        .addr = addr,
        .length = length,
        .access = access,
        .rkey = {.base = mr->secret,
                 .length = length,
                 .key = mr->id,
                 .transport = EFPS_TP_ID_TCP,
                 .access = (uint16_t)access},
    };
    efps_debug("tcp: registered region %u: %p, %zu bytes, access 0x%x", mr->id, addr, length,
               access);
    *mr_p = &mr->base;
    return EFPS_OK;

err_free:
    free(mr);
    return status;
}

efps_status_t efps__tcp_mem_dereg(efps_tp_mr_t *base)
{
    tcp_mr_t *mr = (tcp_mr_t *)base;
    tcp_ctx_t *ctx = TCP_CTX(base->ctx);
    pthread_mutex_lock(&ctx->base.lock);
    if (mr->tx_refs > 0) {
        efps_error("tcp: deregister region %u: %u writes posted from it are not sent yet", mr->id,
                   mr->tx_refs);
        pthread_mutex_unlock(&ctx->base.lock);
        return EFPS_ERR_STATE;
    }
    ctx->regions[mr->id - 1] = NULL; /* no new write can find it */
    if (mr->rx_busy > 0) {
        /* A write is landing in it: the progress thread fails that endpoint
         * and lets go of the region; wait for it. */
        mr->dead = true;
        ctx->regions_dead = true;
        efps__tcp_kick_ctx(ctx);
        while (mr->rx_busy > 0)
            efps__tp_wait(&ctx->base.ev_cond, &ctx->base.lock, 0);
    }
    pthread_mutex_unlock(&ctx->base.lock);
    efps_debug("tcp: deregistered region %u", mr->id);
    free(mr);
    return EFPS_OK;
}

tcp_mr_t *efps__tcp_region(tcp_ctx_t *ctx, uint32_t id)
{
    return (id >= 1 && id <= ctx->n_regions) ? ctx->regions[id - 1] : NULL;
}

void efps__tcp_reap_dead_regions(tcp_ctx_t *ctx)
{
    ctx->regions_dead = false;
    for (tcp_ep_t *ep = ctx->eps, *next; ep != NULL; ep = next) {
        next = ep->next;
        if (ep->rx_region != NULL && ep->rx_region->dead)
            efps__tcp_ep_fail(ep, EFPS_LOG_ERROR, EFPS_ERR_STATE,
                              "region %u was deregistered while a write into it was arriving",
                              ep->rx_region->id);
    }
}
