/* Registered regions of the tcp transport. A region is named on the wire by
 * its id and a random 64-bit secret, one secret per endpoint the region was
 * exposed to: the receiver accepts a write only when both match a live
 * region that grants remote write and the secret was made for the endpoint
 * the write arrives on, so a peer can reach exactly the regions whose keys
 * it was given, and only over its own connection. */
#include "tcp.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static efps_status_t random_secret(uint64_t *secret_p)
{
    uint64_t s = 0;
    while (s == 0) { /* 0 is what an unused header field holds */
        if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s)) {
            efps_error("tcp: expose memory: getrandom failed");
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
    mr->base = (efps_tp_mr_t){.ctx = base, .addr = addr, .length = length, .access = access};
    pthread_mutex_lock(&ctx->base.lock);
    efps_status_t status = take_slot(ctx, &index);
    if (status == EFPS_OK) {
        mr->id = index + 1;
        ctx->regions[index] = mr;
    }
    pthread_mutex_unlock(&ctx->base.lock);
    if (status != EFPS_OK) {
        free(mr);
        return status;
    }
    efps_debug("tcp: registered region %u: %p, %zu bytes, access 0x%x", mr->id, addr, length,
               access);
    *mr_p = &mr->base;
    return EFPS_OK;
}

static void free_expos(tcp_mr_t *mr)
{
    while (mr->expos != NULL) {
        tcp_expo_t *x = mr->expos;
        mr->expos = x->next;
        free(x);
    }
}

efps_status_t efps__tcp_mem_expose(efps_tp_ep_t *base, efps_tp_mr_t *region, efps_tp_rkey_t *rkey_p)
{
    tcp_ep_t *ep = TCP_EP(base);
    tcp_mr_t *mr = (tcp_mr_t *)region;
    tcp_ctx_t *ctx = ep->ctx;
    uint64_t secret;
    efps_status_t status = random_secret(&secret);
    tcp_expo_t *x = calloc(1, sizeof(*x));
    if (status == EFPS_OK && x == NULL) {
        efps_error("tcp: expose region %u to %s: out of memory", mr->id, base->name);
        status = EFPS_ERR_NOMEM;
    }
    pthread_mutex_lock(&ctx->base.lock);
    if (status == EFPS_OK && ep->base.state != EFPS_TP_EP_CONNECTED) {
        efps_error("tcp: expose region %u to %s: the connection is down", mr->id, base->name);
        status = EFPS_ERR_PEER;
    }
    if (status == EFPS_OK) /* the peer may write from now on: room for its arrivals */
        status = efps__tcp_cq_hold(ep, TCP_CQ_RECVS);
    const tcp_expo_t *have = NULL;
    for (const tcp_expo_t *e = mr->expos; e != NULL && status == EFPS_OK; e = e->next)
        if (e->ep == ep)
            have = e;
    if (status == EFPS_OK && have == NULL) {
        /* Another endpoint's key with the same secret would take its writes. */
        while (efps__tcp_expo_find(mr, secret) != NULL && status == EFPS_OK)
            status = random_secret(&secret);
        *x = (tcp_expo_t){.ep = ep, .secret = secret, .next = mr->expos};
        mr->expos = x;
        have = x;
        x = NULL;
    }
    if (status == EFPS_OK)
        *rkey_p = (efps_tp_rkey_t){.base = have->secret,
                                   .length = mr->base.length,
                                   .key = mr->id,
                                   .transport = EFPS_TP_ID_TCP,
                                   .access = (uint16_t)mr->base.access};
    pthread_mutex_unlock(&ctx->base.lock);
    free(x);
    if (status == EFPS_OK)
        efps_debug("tcp: region %u exposed to %s", mr->id, base->name);
    return status;
}

const tcp_expo_t *efps__tcp_expo_find(const tcp_mr_t *mr, uint64_t secret)
{
    for (const tcp_expo_t *x = mr->expos; x != NULL; x = x->next)
        if (x->secret == secret)
            return x;
    return NULL;
}

void efps__tcp_unexpose_ep(tcp_ctx_t *ctx, const tcp_ep_t *ep)
{
    for (uint32_t i = 0; i < ctx->n_regions; i++) {
        tcp_mr_t *mr = ctx->regions[i];
        for (tcp_expo_t **pp = mr != NULL ? &mr->expos : NULL; pp != NULL && *pp != NULL;) {
            tcp_expo_t *x = *pp;
            if (x->ep == ep) {
                *pp = x->next;
                free(x);
            } else {
                pp = &x->next;
            }
        }
    }
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
    free_expos(mr);
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
    for (tcp_ep_t *ep = TCP_EP(ctx->base.eps), *next; ep != NULL; ep = next) {
        next = TCP_EP(ep->base.next);
        if (ep->rx_region != NULL && ep->rx_region->dead)
            efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_STATE,
                             "region %u was deregistered while a write into it was arriving",
                             ep->rx_region->id);
    }
}
