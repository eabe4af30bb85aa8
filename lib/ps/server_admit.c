/* Admission on the server: accept a connection (capped), authenticate it,
 * take its layout (adopt the first, compare the others) and let it join. */
#include "server_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

efps_status_t efps__srv_refuse(server_t *sv, worker_t *w, const char *fmt, ...)
{
    char why[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    ps_send_refuse(w->ep, "%s", why);
    if (w->rank >= 0 && sv->by_rank[w->rank] == w) {
        efps__srv_release_rank(sv, w);
        efps_error("server %d: refused %s: %s", sv->cfg.rank, wname(w), why);
    } else
        efps__srv_stranger_log(sv, "refused %s: %s", wname(w), why);
    efps__srv_notice(sv, w, "refused", why); /* before the run starts, to the joined workers */
    w->state = W_REFUSED;
    w->deadline = efps__now_ms() + PS_REFUSE_LINGER_MS;
    return EFPS_ERR_AUTH;
}

void efps__srv_conn_free(worker_t *w)
{
    efps_tp_ep_destroy(w->ep);
    efps_tp_mem_dereg(w->slot_mr);
    efps_aligned_free(w->slots);
    free(w->got);
    ps_layout_free(&w->pending);
    free(w);
}

/* Login deadlines, refused peers due to be closed, and freeing what closed. */
void efps__srv_sweep(server_t *sv)
{
    const int64_t now = efps__now_ms();
    if (now < sv->next_sweep)
        return;
    sv->next_sweep = now + PS_SWEEP_MS;
    efps__srv_stranger_log_flush(sv);
    size_t keep = 0;
    for (size_t i = 0; i < sv->nconns; i++) {
        worker_t *w = sv->conns[i];
        if (w->state == W_AUTH && now >= w->deadline)
            efps__srv_refuse(sv, w, "no login within %d ms (EFPS_LOGIN_TIMEOUT_MS)",
                             sv->lim.login_ms);
        else if (w->state == W_REFUSED && now >= w->deadline) {
            efps_tp_ep_destroy(w->ep);
            w->ep = NULL;
            w->state = W_CLOSED;
        }
        if (w->state == W_CLOSED)
            efps__srv_conn_free(w);
        else
            sv->conns[keep++] = w;
    }
    sv->nconns = keep;
}

/* The host part of "host:port" or "[v6]:port". */
void efps__srv_host_of(const char *addr, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", addr != NULL ? addr : "?");
    char *colon = strrchr(buf, ':');
    if (colon != NULL && strchr(colon, ']') == NULL)
        *colon = '\0';
}

/* Admission: unauthenticated connections are capped in total and per
 * source address, so strangers cannot take every slot a worker needs. */
static const char *over_cap(const server_t *sv, const char *host)
{
    int total = 0, same = 0;
    for (size_t i = 0; i < sv->nconns; i++) {
        const worker_t *w = sv->conns[i];
        if (w->state != W_AUTH)
            continue;
        total++;
        same += strcmp(w->host, host) == 0;
    }
    if (total >= sv->lim.max_pending)
        return "too many unauthenticated connections (EFPS_MAX_PENDING)";
    if (same >= sv->lim.max_per_host)
        return "too many unauthenticated connections from there (EFPS_MAX_PENDING_PER_HOST)";
    return NULL;
}

/* ---- accepting and authenticating ---------------------------------------------- */

efps_status_t efps__srv_accept(server_t *sv, efps_tp_conn_req_t *req)
{
    char host[EFPS_TP_NAME_MAX];
    const char *peer = efps_tp_req_peer(req);
    efps__srv_host_of(peer, host, sizeof(host));
    const char *full = over_cap(sv, host);
    if (full != NULL) {
        efps__srv_stranger_log(sv, "rejected a connection from %s: %s", peer != NULL ? peer : "?",
                               full);
        efps_tp_reject(req);
        return EFPS_OK;
    }
    if (sv->nconns == sv->capconns) {
        size_t cap = sv->capconns ? 2 * sv->capconns : 16;
        worker_t **c = realloc(sv->conns, cap * sizeof(*c));
        if (c == NULL) {
            efps_tp_reject(req);
            return EFPS_ERR_NOMEM;
        }
        sv->conns = c;
        sv->capconns = cap;
    }
    worker_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        efps_tp_reject(req);
        return EFPS_ERR_NOMEM;
    }
    size_t len = 0;
    const void *priv = efps_tp_req_priv(req, &len);
    efps__wire_hello(priv, len, &w->hello); /* a bad one stays zero: refused at AUTH */
    w->rank = -1;
    w->deadline = efps__now_ms() + sv->lim.login_ms;
    snprintf(w->host, sizeof(w->host), "%s", host);
    snprintf(w->name, sizeof(w->name), "peer %s", peer != NULL ? peer : "?");
    w->mine = (ps_hello_t){.magic = PS_MAGIC,
                           .version = PS_PROTO_VERSION,
                           .role = EFPS_ROLE_SERVER,
                           .rank = (uint32_t)sv->cfg.rank,
                           .num_workers = (uint32_t)sv->nservers};
    ps_nonce(w->mine.nonce);
    /* No label: the transport names it by address, not by the rank it claims. */
    efps_tp_conn_param_t param = {.priv = &w->mine, .priv_len = sizeof(w->mine), .context = w};
    if (efps_tp_accept(req, &param, &w->ep) != EFPS_OK) {
        free(w);
        return EFPS_OK; /* the requester went away: not our failure */
    }
    sv->conns[sv->nconns++] = w;
    return EFPS_OK;
}

/* Checks a worker's AUTH against its hello. Returns false (refused) on a mismatch. */
static bool check_auth(server_t *sv, worker_t *w, const uint8_t *msg, size_t len)
{
    const ps_hello_t *h = &w->hello;
    const uint8_t *mac = NULL;
    uint8_t expect[PS_MAC];
    ps_mac(sv->cfg.secret, "efps worker", h, &w->mine, expect);
    if (h->magic != PS_MAGIC || h->role != EFPS_ROLE_WORKER)
        efps__srv_refuse(sv, w, "not an efps worker");
    else if (h->version != PS_PROTO_VERSION)
        efps__srv_refuse(sv, w, "protocol version %u, server speaks %u", h->version,
                         PS_PROTO_VERSION);
    else if (efps__wire_auth(msg, len, &mac) != EFPS_OK || !ps_mac_equal(mac, expect))
        efps__srv_refuse(sv, w, "wrong secret (EFPS_SECRET differs)");
    else if ((int)h->num_workers != sv->M)
        efps__srv_refuse(sv, w, "number of workers %u, server %d runs with %d", h->num_workers,
                         sv->cfg.rank, sv->M);
    else if ((int)h->rank >= sv->M || sv->by_rank[h->rank] != NULL)
        efps__srv_refuse(sv, w, "worker rank %u is %s", h->rank,
                         (int)h->rank >= sv->M ? "out of range" : "taken already");
    else
        return true;
    return false;
}

/* AUTH: the worker proves it knows the secret and takes its rank. */
efps_status_t efps__srv_on_auth(server_t *sv, worker_t *w, const uint8_t *m, size_t len)
{
    uint8_t reply[4 + PS_MAC];
    if (!check_auth(sv, w, m, len))
        return EFPS_ERR_AUTH;
    w->rank = (int)w->hello.rank;
    sv->by_rank[w->rank] = w;
    w->state = W_AUTHED;
    char addr[EFPS_TP_NAME_MAX];
    snprintf(addr, sizeof(addr), "%s", w->name + 5); /* past "peer " */
    snprintf(w->name, sizeof(w->name), "worker %d (%s)", w->rank, addr);
    efps__put_le32(reply, PS_MSG_AUTH);
    ps_mac(sv->cfg.secret, "efps server", &w->mine, &w->hello, reply + 4);
    efps_debug("server %d: %s authenticated", sv->cfg.rank, wname(w));
    efps_status_t st = efps_tp_msg_send(w->ep, reply, sizeof(reply));
    if (st == EFPS_OK)
        efps__srv_notices_to(sv, w); /* who was refused for the ranks still open */
    return st;
}

/* ---- layouts ---------------------------------------------------------------------- */

static efps_status_t adopt_layout(server_t *sv, ps_layout_t *l)
{
    sv->layout = *l;
    memset(l, 0, sizeof(*l));
    const size_t np = sv->layout.nparts;
    sv->part_off = calloc(np, sizeof(size_t));
    sv->slot_off = calloc(np, sizeof(size_t));
    sv->parts = calloc(np, sizeof(spart_t));
    sv->sending = calloc(np, sizeof(size_t));
    if (!sv->part_off || !sv->slot_off || !sv->parts || !sv->sending)
        return EFPS_ERR_NOMEM;
    size_t off = 0;
    for (size_t p = 0; p < np; p++) {
        const ps_part_t *part = &sv->layout.parts[p];
        sv->part_off[p] = off;
        off += part->stride;
        if (part->server != sv->cfg.rank)
            continue;
        sv->parts[p].mine = true;
        sv->slot_off[p] = sv->slot_bytes;
        sv->slot_bytes += part->stride;
        const efps_optim_config_t ko = ps_key_optim(&sv->layout, &sv->layout.keys[part->key_index]);
        efps_status_t st = efps_server_opt_create(&ko, part->n, sv->M, &sv->parts[p].opt);
        if (st != EFPS_OK)
            return st;
    }
    sv->bcast_bytes = sv->slot_bytes;
    sv->bcast = efps_aligned_calloc(2 * sv->bcast_bytes);
    if (sv->bcast == NULL)
        return EFPS_ERR_NOMEM;
    sv->have_layout = true;
    efps_info("server %d: layout of %zu key%s, %zu part%s, %zu bytes here", sv->cfg.rank,
              sv->layout.nkeys, ps_s((long)sv->layout.nkeys), np, ps_s((long)np), sv->slot_bytes);
    return efps_tp_mem_reg(sv->tp, sv->bcast, 2 * sv->bcast_bytes, 0, &sv->bcast_mr);
}

/* A layout setting this server was given must be what the workers declare;
 * the others come from the workers (all must agree). Checked once the
 * layout is known to be valid, so a malformed one gets its own refusal. A
 * worker that differs is refused: its rank stays open for a correct one. */
static efps_status_t check_given(server_t *sv, worker_t *w, const ps_layout_t *l)
{
    char mine[32], theirs[32];
    const char *var, *field, *by;
    if (sv->set_comp != NULL && l->optim.compressor != sv->optim.compressor) {
        var = "EFPS_COMPRESSOR", field = "compressor", by = sv->set_comp;
        snprintf(mine, sizeof(mine), "%s", efps_compressor_name(sv->optim.compressor));
        snprintf(theirs, sizeof(theirs), "%s", efps_compressor_name(l->optim.compressor));
    } else if (sv->set_block != NULL && l->optim.block != sv->optim.block) {
        var = "EFPS_BLOCK", field = "block", by = sv->set_block;
        snprintf(mine, sizeof(mine), "%zu", sv->optim.block);
        snprintf(theirs, sizeof(theirs), "%zu", l->optim.block);
    } else if (sv->set_part != NULL && l->partition_bytes != sv->cfg.partition_bytes) {
        var = "EFPS_PARTITION_BYTES", field = "partition bytes", by = sv->set_part;
        snprintf(mine, sizeof(mine), "%zu", sv->cfg.partition_bytes);
        snprintf(theirs, sizeof(theirs), "%zu", l->partition_bytes);
    } else
        return EFPS_OK;
    return efps__srv_refuse(sv, w,
                            "server %d was given %s=%s (by %s) but this worker declares %s %s: "
                            "unset %s on the servers (they run the workers' layout) or make "
                            "them agree",
                            sv->cfg.rank, var, mine, by, field, theirs, var);
}

/* The worker's layout is complete: adopt or compare it, give it its slots. */
static efps_status_t layout_done(server_t *sv, worker_t *w)
{
    char why[256];
    efps_status_t st = efps__layout_finish(&w->pending, why, sizeof(why));
    if (st == EFPS_ERR_INVALID)
        return efps__srv_refuse(sv, w, "bad layout: %s", why);
    if (st != EFPS_OK || (st = check_given(sv, w, &w->pending)) != EFPS_OK)
        return st;
    if (!sv->have_layout) {
        if ((st = adopt_layout(sv, &w->pending)) != EFPS_OK)
            return st;
    } else if (ps_layout_differs(&w->pending, &sv->layout, why, sizeof(why)))
        return efps__srv_refuse(sv, w, "model layout differs from the first worker's: %s", why);
    ps_layout_free(&w->pending);
    w->got = calloc(sv->layout.nparts, sizeof(uint64_t));
    w->slots = efps_aligned_calloc(sv->slot_bytes);
    if (w->got == NULL || w->slots == NULL)
        return EFPS_ERR_NOMEM;
    st =
        efps_tp_mem_reg(sv->tp, w->slots, sv->slot_bytes, EFPS_TP_ACCESS_REMOTE_WRITE, &w->slot_mr);
    if (st != EFPS_OK)
        return st;
    efps_tp_rkey_t rkey; /* good on this worker's connection only */
    if ((st = efps_tp_mem_expose(w->ep, w->slot_mr, &rkey)) != EFPS_OK)
        return st;
    uint8_t msg[4 + EFPS_TP_RKEY_PACKED];
    efps__put_le32(msg, PS_MSG_READY);
    efps_tp_rkey_pack(&rkey, msg + 4);
    w->state = W_READY;
    if ((st = efps_tp_msg_send(w->ep, msg, sizeof(msg))) == EFPS_OK)
        efps__srv_joined(sv, w);
    return st;
}

efps_status_t efps__srv_on_layout(server_t *sv, worker_t *w, const uint8_t *m, size_t len)
{
    efps__layout_head_t h;
    char why[256];
    if (efps__wire_layout_head(m, len, &h, why, sizeof(why)) != EFPS_OK)
        return efps__srv_refuse(sv, w, "bad LAYOUT: %s", why);
    w->pull_rkey = h.pull_rkey;
    efps_optim_config_t o = sv->optim;
    o.compressor = (efps_compressor_t)h.compressor;
    o.block = (size_t)h.block;
    ps_layout_init(&w->pending, &o, (size_t)h.partition_bytes, sv->nservers);
    w->announced = h.nkeys;
    w->state = W_LAYOUT;
    return EFPS_OK;
}

efps_status_t efps__srv_on_keys(server_t *sv, worker_t *w, const uint8_t *m, size_t len)
{
    char why[256];
    efps_status_t st = efps__wire_keys(&w->pending, w->announced, m, len, why, sizeof(why));
    if (st == EFPS_ERR_PROTO)
        return efps__srv_refuse(sv, w, "bad KEYS: %s", why);
    if (st != EFPS_OK)
        return st;
    return w->pending.nkeys == w->announced ? layout_done(sv, w) : EFPS_OK;
}
