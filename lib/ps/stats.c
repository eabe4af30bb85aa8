/* Observability of a worker's keys (efps_ps_key_stats) and of the servers'
 * error feedback (efps_ps_server_residuals): wire bytes, residual norms and
 * the block scales a worker sent, so a user sees whether compression hurts
 * before the accuracy does. */
#include "ps_int.h"

#include "efps/compress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const ps_key_t *find_started(efps_ps_t *ps, uint32_t key)
{
    const ps_layout_t *l = efps__ps_layout(ps);
    const ps_key_t *k = l == NULL ? NULL : ps_layout_find(l, key);
    if (k == NULL)
        efps_error("stats of key %u: %s", key, l == NULL ? "nothing pushed yet" : "not declared");
    return k;
}

/* min / sum / max of the scales of a blocksign payload. */
static void scales(const ps_part_view_t *v, efps_ps_key_stats_t *st, double *sum)
{
    const size_t nb = efps_packed_blocks(v->part->n, v->key->block);
    const float *s = (const float *)v->last_push;
    for (size_t b = 0; b < nb; b++) {
        st->scale_min = st->blocks == 0 || s[b] < st->scale_min ? s[b] : st->scale_min;
        st->scale_max = st->blocks == 0 || s[b] > st->scale_max ? s[b] : st->scale_max;
        *sum += s[b];
        st->blocks++;
    }
}

efps_status_t efps_ps_key_stats(efps_ps_t *ps, uint32_t key, efps_ps_key_stats_t *st_p)
{
    if (ps == NULL || st_p == NULL)
        return EFPS_ERR_INVALID;
    const ps_key_t *k = find_started(ps, key);
    if (k == NULL)
        return EFPS_ERR_STATE;
    const bool blocksign = efps__ps_layout(ps)->optim.compressor == EFPS_COMP_BLOCKSIGN;
    efps_ps_key_stats_t st = {0};
    double ss = 0.0, sum = 0.0;
    for (size_t p = k->first_part; p < k->first_part + k->nparts; p++) {
        ps_part_view_t v;
        efps__ps_part_view(ps, p, &v);
        st.pushes = v.pushes;
        st.wire_bytes += v.pushes * v.part->bytes;
        st.fp32_bytes += v.pushes * 4 * v.part->n;
        ss += efps_worker_opt_residual_sumsq(v.opt);
        if (blocksign && v.pushes > 0)
            scales(&v, &st, &sum);
    }
    st.worker_residual = sqrt(ss);
    st.scale_mean = st.blocks ? (float)(sum / (double)st.blocks) : 0.0f;
    *st_p = st;
    return EFPS_OK;
}

/* Every part's server residual (sum of squares) from server s into ss[]. */
static efps_status_t fetch(efps_ps_t *ps, int s, double *ss, size_t nparts)
{
    uint8_t msg[8], reply[EFPS_TP_MSG_MAX];
    uint32_t next = 0;
    while (next != UINT32_MAX) {
        size_t len = 0;
        efps__put_le32(msg, PS_MSG_STATS);
        efps__put_le32(msg + 4, next);
        efps_status_t st =
            efps__ps_ask(ps, s, msg, sizeof(msg), PS_MSG_STATS, reply, sizeof(reply), &len);
        if (st != EFPS_OK)
            return st;
        const uint32_t count = len >= 12 ? efps__get_le32(reply + 4) : UINT32_MAX;
        const uint32_t after = len >= 12 ? efps__get_le32(reply + 8) : 0;
        if (count > PS_STATS_PER_MSG || len != 12 + 12 * (size_t)count ||
            (after != UINT32_MAX && after <= next)) {
            efps_error("worker %d: server %d sent malformed statistics", efps_ps_rank(ps), s);
            return EFPS_ERR_PROTO;
        }
        for (uint32_t i = 0; i < count; i++) {
            const uint32_t p = efps__get_le32(reply + 12 + 12 * i);
            const uint64_t bits = efps__get_le64(reply + 16 + 12 * i);
            if (p < nparts)
                memcpy(&ss[p], &bits, sizeof(double));
        }
        next = after;
    }
    return EFPS_OK;
}

efps_status_t efps_ps_server_residuals(efps_ps_t *ps, const uint32_t *keys, size_t nkeys,
                                       double *norms)
{
    if (ps == NULL || (nkeys > 0 && (keys == NULL || norms == NULL)))
        return EFPS_ERR_INVALID;
    efps_status_t st = efps__ps_between_steps(ps, false);
    if (st != EFPS_OK)
        return st;
    const size_t np = efps__ps_nparts(ps);
    double *ss = calloc(np ? np : 1, sizeof(double));
    if (ss == NULL)
        return EFPS_ERR_NOMEM;
    for (int s = 0; st == EFPS_OK && s < efps__ps_nservers(ps); s++)
        st = fetch(ps, s, ss, np);
    for (size_t i = 0; st == EFPS_OK && i < nkeys; i++) {
        const ps_key_t *k = find_started(ps, keys[i]);
        double sum = 0.0;
        for (size_t p = k ? k->first_part : 0; k && p < k->first_part + k->nparts; p++)
            sum += ss[p];
        norms[i] = sqrt(sum);
        st = k == NULL ? EFPS_ERR_INVALID : EFPS_OK;
    }
    free(ss);
    return st;
}
