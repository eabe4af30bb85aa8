/* The server's control messages after admission (statistics, checkpoints,
 * goodbye), and the dispatch of every control message. */
#include "server_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- control messages ---------------------------------------------------------------- */

/* The residual norms of this server's parts from a given one on (stats.c). */
static efps_status_t on_stats(server_t *sv, worker_t *w, const uint8_t *m, size_t len)
{
    uint8_t reply[12 + 12 * PS_STATS_PER_MSG];
    size_t p = len == 8 ? efps__get_le32(m + 4) : SIZE_MAX, count = 0;
    for (; p < sv->layout.nparts && count < PS_STATS_PER_MSG; p++) {
        if (!sv->parts[p].mine)
            continue;
        const double ss = efps_server_opt_residual_sumsq(sv->parts[p].opt);
        uint64_t bits;
        memcpy(&bits, &ss, sizeof(bits));
        efps__put_le32(reply + 12 + 12 * count, (uint32_t)p);
        efps__put_le64(reply + 16 + 12 * count, bits);
        count++;
    }
    efps__put_le32(reply, PS_MSG_STATS);
    efps__put_le32(reply + 4, (uint32_t)count);
    efps__put_le32(reply + 8, p < sv->layout.nparts ? (uint32_t)p : UINT32_MAX);
    return efps_tp_msg_send(w->ep, reply, 12 + 12 * count);
}

/* A checkpoint request (ckpt.c) over this server's parts. A failed save or
 * load is answered with its status, not fatal: the worker decides. */
static efps_status_t on_ckpt(server_t *sv, worker_t *w, uint32_t type, const uint8_t *m, size_t len)
{
    efps_server_opt_t **opts = calloc(sv->layout.nparts + 1, sizeof(*opts));
    if (opts == NULL)
        return EFPS_ERR_NOMEM;
    size_t n = 0;
    for (size_t p = 0; p < sv->layout.nparts; p++)
        if (sv->parts[p].mine)
            opts[n++] = sv->parts[p].opt;
    uint8_t reply[256];
    size_t rlen = 0;
    if (efps__ps_server_ckpt(sv->cfg.rank, sv->cfg.ckpt_dir, type, m, len, opts, n, reply,
                             sizeof(reply), &rlen) == EFPS_OK)
        for (size_t p = 0, k = 0; p < sv->layout.nparts; p++)
            if (sv->parts[p].mine)
                sv->parts[p].opt = opts[k++]; /* a load replaced them */
    free(opts);
    return efps_tp_msg_send(w->ep, reply, rlen);
}

static efps_status_t on_msg(server_t *sv, worker_t *w, const uint8_t *m, size_t len)
{
    const uint32_t type = len >= 4 ? efps__get_le32(m) : 0;
    uint8_t reply[4];
    if (w->state == W_AUTH && type == PS_MSG_AUTH)
        return efps__srv_on_auth(sv, w, m, len);
    if (w->state == W_AUTHED && type == PS_MSG_LAYOUT)
        return efps__srv_on_layout(sv, w, m, len);
    if (w->state == W_LAYOUT && type == PS_MSG_KEYS)
        return efps__srv_on_keys(sv, w, m, len);
    if (w->state == W_READY && type == PS_MSG_STATS)
        return on_stats(sv, w, m, len);
    if (w->state == W_READY && (type == PS_MSG_SAVE || type == PS_MSG_LOAD))
        return on_ckpt(sv, w, type, m, len);
    if (w->state == W_READY && type == PS_MSG_BYE) {
        w->state = W_DONE;
        sv->done++;
        efps__put_le32(reply, PS_MSG_BYE);
        efps_status_t st = efps_tp_msg_send(w->ep, reply, 4);
        for (size_t p = 0; st == EFPS_OK && p < sv->layout.nparts; p++)
            for (int r = 0; r < sv->M; r++)
                if (has_slots(sv->by_rank[r]) && sv->by_rank[r]->got[p] > w->got[p])
                    return efps__srv_left_early(sv, w, p);
        return st;
    }
    if (w->state == W_AUTH)
        return efps__srv_refuse(sv, w, "message type %u before authentication", type);
    if (!sv->started) /* a joiner that breaks the protocol: its rank stays open */
        return efps__srv_refuse(sv, w, "message type %u in state %d", type, w->state);
    efps_error("server %d: %s sent message type %u in state %d", sv->cfg.rank, wname(w), type,
               w->state);
    return EFPS_ERR_PROTO;
}

/* Takes every waiting control message of every connection. */
efps_status_t efps__srv_drain_msgs(server_t *sv, bool *any_p)
{
    uint8_t m[EFPS_TP_MSG_MAX];
    for (size_t i = 0; i < sv->nconns; i++) {
        worker_t *w = sv->conns[i];
        size_t len;
        efps_status_t st = EFPS_OK;
        while (w->state < W_GONE &&
               (st = efps_tp_msg_recv(w->ep, m, sizeof(m), &len, 0)) == EFPS_OK) {
            *any_p = true;
            if ((st = on_msg(sv, w, m, len)) == EFPS_OK || w->state == W_REFUSED)
                continue; /* a refused peer: keep serving the others */
            /* An authenticated worker that breaks the protocol or brings another
             * layout cannot train with the others: the run is over. */
            return st;
        }
        /* A message too big for any of ours: nothing a worker sends. */
        if (w->state < W_GONE && st == EFPS_ERR_INVALID) {
            if (w->state != W_AUTH)
                return EFPS_ERR_PROTO;
            efps__srv_refuse(sv, w, "message larger than %d bytes", EFPS_TP_MSG_MAX);
        }
    }
    return EFPS_OK;
}
