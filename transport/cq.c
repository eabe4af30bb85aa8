/* The software completion queue. Endpoints reserve their worst case before
 * anything can complete (verbs: sq_depth + rq_depth + 1 entries when the QP
 * is made; tcp: one for the DISCONNECT at connection time, sq_depth at the
 * first write, rq_depth at the first key exposed), so a push on the data path
 * never allocates and never finds the ring full. */
#include "transport_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void efps__tp_cq_init(efps_tp_cq_t *cq)
{
    memset(cq, 0, sizeof(*cq));
}

void efps__tp_cq_free(efps_tp_cq_t *cq)
{
    free(cq->ring);
    memset(cq, 0, sizeof(*cq));
}

efps_status_t efps__tp_cq_reserve(efps_tp_cq_t *cq, size_t n)
{
    size_t want = cq->reserved + n;
    if (want > cq->cap) {
        size_t cap = cq->cap ? cq->cap : 256;
        while (cap < want)
            cap *= 2;
        efps_tp_cqe_t *ring = malloc(cap * sizeof(*ring));
        if (ring == NULL) {
            efps_error("completion queue of %zu entries: out of memory", cap);
            return EFPS_ERR_NOMEM;
        }
        /* Unwrap the old ring so its entries keep their order. */
        for (size_t i = 0; i < cq->count; i++)
            ring[i] = cq->ring[(cq->head + i) % cq->cap];
        free(cq->ring);
        cq->ring = ring;
        cq->cap = cap;
        cq->head = 0;
    }
    cq->reserved = want;
    return EFPS_OK;
}

void efps__tp_cq_unreserve(efps_tp_cq_t *cq, size_t n)
{
    assert(cq->reserved >= n);
    cq->reserved -= n;
}

void efps__tp_cq_push(efps_tp_cq_t *cq, const efps_tp_cqe_t *cqe)
{
    assert(cq->count < cq->cap);
    cq->ring[(cq->head + cq->count) % cq->cap] = *cqe;
    cq->count++;
}

size_t efps__tp_cq_pop(efps_tp_cq_t *cq, efps_tp_cqe_t *out, size_t max)
{
    size_t n = cq->count < max ? cq->count : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = cq->ring[cq->head];
        cq->head = (cq->head + 1) % cq->cap;
    }
    cq->count -= n;
    return n;
}

void efps__tp_cq_purge(efps_tp_cq_t *cq, const efps_tp_ep_t *ep)
{
    size_t kept = 0;
    for (size_t i = 0; i < cq->count; i++) {
        efps_tp_cqe_t e = cq->ring[(cq->head + i) % cq->cap];
        if (e.ep != ep)
            cq->ring[(cq->head + kept++) % cq->cap] = e;
    }
    cq->count = kept;
}
