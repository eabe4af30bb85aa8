/* The server's data path: for every part, reduce as soon as all M pushes are
 * in (in rank order, so runs are reproducible), then write the update into
 * every worker's pull arena. Updates are built in two broadcast buffers by
 * step parity, so a buffer is never rewritten while a write from it may
 * still be in flight. */
#include "server_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* This server stops because of `culprit`: every other worker is told why
 * (best effort; the linger after the error gives it time to go out), so each
 * names the culprit, not only "server disconnected". */
void efps__srv_tell_others(server_t *sv, const worker_t *culprit, const char *what)
{
    for (int r = 0; r < sv->M; r++) {
        worker_t *o = sv->by_rank[r];
        if (o != NULL && o != culprit && o->state >= W_AUTHED && o->state <= W_DONE)
            ps_send_refuse(o->ep, "server %d stopped: %s %s", sv->cfg.rank, wname(culprit), what);
    }
}

/* Worker d finalized while the others go on: every other worker is told who
 * left, so they fail naming it instead of waiting for its pushes. The run is
 * over (the server stops, lingering so these messages get out). */
efps_status_t efps__srv_left_early(server_t *sv, worker_t *d, size_t p)
{
    uint64_t most = 0;
    for (int r = 0; r < sv->M; r++)
        if (has_slots(sv->by_rank[r]) && sv->by_rank[r]->got[p] > most)
            most = sv->by_rank[r]->got[p];
    char why[160];
    snprintf(why, sizeof(why),
             "left early: it finalized after %llu step%s of part %zu, others went on to step %llu",
             (unsigned long long)d->got[p], ps_s((long)d->got[p]), p, (unsigned long long)most);
    efps_error("server %d: %s %s", sv->cfg.rank, wname(d), why);
    efps__srv_tell_others(sv, d, why);
    return EFPS_ERR_PEER;
}

static efps_status_t broadcast(server_t *sv, size_t p)
{
    spart_t *sp = &sv->parts[p];
    const ps_part_t *part = &sv->layout.parts[p];
    const uint64_t step = sp->step - 1; /* the step just reduced */
    const size_t src = (step & 1) * sv->bcast_bytes + sv->slot_off[p];
    while (sp->next_send < sv->M) {
        worker_t *w = sv->by_rank[sp->next_send];
        efps_status_t st =
            efps_tp_write_imm(w->ep, sv->bcast_mr, src, part->bytes, &w->pull_rkey, sv->part_off[p],
                              ps_imm((uint32_t)p, step), (p << 1) | (step & 1));
        if (st == EFPS_ERR_NO_RESOURCE)
            return st;
        if (st != EFPS_OK) {
            efps_error("server %d: update of part %zu to %s: %s", sv->cfg.rank, p, wname(w),
                       efps_strerror(st));
            return st;
        }
        sp->outstanding[step & 1]++;
        sp->next_send++;
    }
    return EFPS_OK;
}

static efps_status_t reduce(server_t *sv, size_t p)
{
    spart_t *sp = &sv->parts[p];
    const ps_part_t *part = &sv->layout.parts[p];
    const void **in = sv->inputs;
    ps_msg_hdr_t h0;
    memcpy(&h0, sv->by_rank[0]->slots + sv->slot_off[p] + part->payload, sizeof(h0));
    efps_status_t st = EFPS_OK;
    for (int r = 0; r < sv->M; r++) {
        const uint8_t *slot = sv->by_rank[r]->slots + sv->slot_off[p];
        ps_msg_hdr_t h;
        memcpy(&h, slot + part->payload, sizeof(h));
        if (h.lr != h0.lr) {
            efps_error("server %d: part %zu step %llu: %s pushed lr %g, worker 0 lr %g",
                       sv->cfg.rank, p, (unsigned long long)sp->step, wname(sv->by_rank[r]),
                       (double)h.lr, (double)h0.lr);
            st = EFPS_ERR_MISMATCH;
        }
        in[r] = slot;
    }
    uint8_t *out = sv->bcast + (sp->step & 1) * sv->bcast_bytes + sv->slot_off[p];
    if (st == EFPS_OK)
        st = efps_server_opt_reduce(sp->opt, in, h0.lr, out);
    if (st != EFPS_OK) {
        efps_error("server %d: reduce of part %zu step %llu: %s", sv->cfg.rank, p,
                   (unsigned long long)sp->step, efps_strerror(st));
        return st;
    }
    ps_msg_hdr_t h = {.magic = PS_MAGIC,
                      .part = (uint32_t)p,
                      .step = sp->step,
                      .lr = h0.lr,
                      .payload = (uint32_t)part->payload};
    memcpy(out + part->payload, &h, sizeof(h));
    sp->step++;
    sp->count = 0;
    sp->next_send = 0;
    sv->sending[sv->nsending++] = p;
    return EFPS_OK;
}

/* A push landed: validate it against what this worker may send now. */
static efps_status_t on_push(server_t *sv, worker_t *w, uint32_t imm)
{
    const size_t p = imm >> 1;
    spart_t *sp = p < sv->layout.nparts ? &sv->parts[p] : NULL;
    ps_msg_hdr_t h;
    if (w->state == W_REFUSED || w->state == W_CLOSED)
        return EFPS_OK; /* a joiner refused before the run started: its last writes */
    if (w->state == W_AUTH || w->state == W_AUTHED || w->state == W_LAYOUT) {
        /* It was given no region: the key it used is another's. Drop this
         * connection only; the run goes on. */
        efps__srv_refuse(sv, w, "wrote into a region it was never given");
        return EFPS_OK;
    }
    if (w->state != W_READY || sp == NULL || !sp->mine || w->got[p] != sp->step ||
        (imm & 1) != (sp->step & 1)) {
        efps_error("server %d: %s wrote part %zu out of turn", sv->cfg.rank, wname(w), p);
        return EFPS_ERR_PROTO;
    }
    uint8_t *slot = w->slots + sv->slot_off[p];
    const size_t payload = sv->layout.parts[p].payload;
    memcpy(&h, slot + payload, sizeof(h));
    if (h.magic != PS_MAGIC || h.part != p || h.step != sp->step ||
        (h.payload != payload && h.payload != PS_SKIP_PAYLOAD) || !(h.lr > 0.0f) ||
        !isfinite(h.lr)) {
        efps_error("server %d: %s: malformed push header for part %zu", sv->cfg.rank, wname(w), p);
        return EFPS_ERR_PROTO;
    }
    if (h.payload == PS_SKIP_PAYLOAD)
        memset(slot, 0, payload); /* a skip is a payload of zero bytes, by construction */
    w->got[p]++;
    for (int r = 0; r < sv->M; r++) { /* a step that a worker gone already will never push */
        worker_t *d = sv->by_rank[r];
        if (has_slots(d) && (d->state == W_DONE || d->state == W_GONE) && d->got[p] < w->got[p])
            return efps__srv_left_early(sv, d, p);
    }
    if (++sp->count < sv->M)
        return EFPS_OK;
    /* The buffer of this parity was last used two steps ago: its writes must be done. */
    return sp->outstanding[sp->step & 1] == 0 ? reduce(sv, p) : EFPS_ERR_NO_RESOURCE;
}

efps_status_t efps__srv_on_cqe(server_t *sv, const efps_tp_cqe_t *c)
{
    worker_t *w = efps_tp_ep_context(c->ep);
    if (c->type == EFPS_TP_CQE_DISCONNECT) {
        if (w->state == W_DONE) {
            w->state = W_GONE;
            sv->gone++;
        }
        if (w->state == W_AUTH || w->state == W_REFUSED) {
            efps_tp_ep_destroy(w->ep); /* its last completion: nothing refers to it */
            w->ep = NULL;
            w->state = W_CLOSED; /* freed by the next sweep */
        }
        if (w->state >= W_GONE || efps__srv_lost_joiner(sv, w))
            return EFPS_OK;
        efps_error("server %d: %s disconnected: %s", sv->cfg.rank, wname(w),
                   efps_strerror(c->status == EFPS_OK ? EFPS_ERR_PEER : c->status));
        efps__srv_tell_others(sv, w, "disconnected");
        return EFPS_ERR_PEER;
    }
    if (c->status != EFPS_OK) {
        efps_error("server %d: write to %s failed: %s", sv->cfg.rank, wname(w),
                   efps_strerror(c->status));
        return EFPS_ERR_PEER;
    }
    if (c->type == EFPS_TP_CQE_WRITE) {
        sv->parts[c->context >> 1].outstanding[c->context & 1]--;
        return EFPS_OK;
    }
    return on_push(sv, w, c->imm);
}

/* Parts whose M pushes are in but whose buffer was still busy, and broadcasts
 * that hit a full send queue: retried on every turn of the loop. */
efps_status_t efps__srv_retry_pending(server_t *sv)
{
    for (size_t p = 0; p < sv->layout.nparts && sv->have_layout; p++) {
        spart_t *sp = &sv->parts[p];
        if (sp->mine && sp->count == sv->M && sp->outstanding[sp->step & 1] == 0) {
            efps_status_t st = reduce(sv, p);
            if (st != EFPS_OK)
                return st;
        }
    }
    size_t keep = 0;
    for (size_t i = 0; i < sv->nsending; i++) {
        efps_status_t st = broadcast(sv, sv->sending[i]);
        if (st == EFPS_ERR_NO_RESOURCE)
            sv->sending[keep++] = sv->sending[i];
        else if (st != EFPS_OK)
            return st;
    }
    sv->nsending = keep;
    return EFPS_OK;
}
