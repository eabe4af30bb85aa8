/* The server side of the parameter server: efps_server_create/run/stop/destroy.
 *
 * One loop, one thread: accept and authenticate workers, take their layouts,
 * and for every part reduce as soon as all M pushes are in (in rank order, so
 * runs are reproducible), then write the update into every worker's pull
 * arena. Updates are built in two broadcast buffers by step parity, so a
 * buffer is never rewritten while a write from it may still be in flight. */
#include "ps_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* W_DONE: said BYE and got ours; W_GONE: then closed its side; W_REFUSED: told
 * why it is refused, closed by us PS_REFUSE_LINGER_MS later (closing at once
 * could drop the REFUSE before it is sent; waiting for the peer to close would
 * let it hold the connection); W_CLOSED: an unauthenticated or refused peer
 * whose endpoint is gone, freed on the next sweep (a stream of bad clients
 * must not pile up anything). */
enum { W_AUTH, W_AUTHED, W_LAYOUT, W_READY, W_DONE, W_GONE, W_REFUSED, W_CLOSED };

#define PS_REFUSE_LINGER_MS 250
#define PS_SWEEP_MS         20

typedef struct {
    efps_tp_ep_t *ep;
    int state, rank;
    char name[EFPS_TP_NAME_MAX + 32]; /* "peer ADDR", once authenticated "worker R (ADDR)" */
    char host[EFPS_TP_NAME_MAX];      /* the source address without its port */
    int64_t deadline;                 /* W_AUTH: to log in; W_REFUSED: when we close it */
    uint64_t announced;               /* keys its LAYOUT announced */
    ps_hello_t hello, mine;
    ps_layout_t pending; /* the layout being received */
    efps_tp_rkey_t pull_rkey;
    uint8_t *slots;
    efps_tp_mr_t *slot_mr;
    uint64_t *got; /* per part: pushes received */
} worker_t;

typedef struct {
    efps_server_opt_t *opt;
    uint64_t step;      /* pushes of this step are being collected */
    int count;          /* of M, this step */
    int next_send;      /* broadcast of the last reduced step: next worker to write to */
    int outstanding[2]; /* writes from each broadcast buffer not yet completed */
    bool mine;
} spart_t;

typedef struct {
    efps_ps_config_t cfg;
    efps_optim_config_t optim;
    /* Who gave this server each layout setting (an option or the
     * environment); NULL where it runs what the workers declare. */
    const char *set_comp, *set_block, *set_part;
    int M, nservers;
    efps_tp_ctx_t *tp;
    efps_tp_listener_t *listener;
    worker_t **conns; /* every accepted connection */
    size_t nconns, capconns;
    worker_t **by_rank;
    bool have_layout;
    ps_layout_t layout;
    size_t *part_off, *slot_off, slot_bytes, bcast_bytes;
    spart_t *parts;
    uint8_t *bcast;
    efps_tp_mr_t *bcast_mr;
    const void **inputs; /* M pointers, reused by every reduce */
    size_t *sending;     /* parts with a broadcast in progress */
    size_t nsending;
    int done, gone;
    /* Set by efps_server_stop (any thread, a signal handler): lock-free, so
     * the store is async-signal-safe; the loop looks at it on every turn,
     * and an idle turn waits at most 1 ms in the poll. */
    atomic_bool stop;
    efps__ps_limits_t lim;
    int64_t next_sweep;
    int64_t log_last; /* rate limit of the lines about strangers */
    unsigned long log_suppressed;
} server_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *wname(const worker_t *w)
{
    return w->name;
}

/* A line about a peer that has not proven anything yet: at most one a second,
 * with the count of those held back, so a crowd of strangers cannot flood
 * the log. It names the peer by address, never by the rank it claims. */
static void stranger_log(server_t *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void stranger_log(server_t *sv, const char *fmt, ...)
{
    const int64_t now = now_ms();
    if (sv->log_last != 0 && now - sv->log_last < 1000) {
        sv->log_suppressed++;
        return;
    }
    char line[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (sv->log_suppressed > 0)
        efps_warn("server %d: %s (and %lu more such lines held back)", sv->cfg.rank, line,
                  sv->log_suppressed);
    else
        efps_warn("server %d: %s", sv->cfg.rank, line);
    sv->log_last = now;
    sv->log_suppressed = 0;
}

/* The count of lines held back, once their second is over. */
static void stranger_log_flush(server_t *sv)
{
    if (sv->log_suppressed > 0 && now_ms() - sv->log_last >= 1000) {
        efps_warn("server %d: %lu more lines about unauthenticated peers held back", sv->cfg.rank,
                  sv->log_suppressed);
        sv->log_last = now_ms();
        sv->log_suppressed = 0;
    }
}

/* Tells w why it is refused and schedules its close; a rank it held is free
 * again for the real worker. Returns EFPS_ERR_AUTH. */
static efps_status_t refuse(server_t *sv, worker_t *w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static efps_status_t refuse(server_t *sv, worker_t *w, const char *fmt, ...)
{
    char why[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    ps_send_refuse(w->ep, "%s", why);
    if (w->rank >= 0 && sv->by_rank[w->rank] == w) {
        sv->by_rank[w->rank] = NULL;
        efps_error("server %d: refused %s: %s", sv->cfg.rank, wname(w), why);
    } else
        stranger_log(sv, "refused %s: %s", wname(w), why);
    w->state = W_REFUSED;
    w->deadline = now_ms() + PS_REFUSE_LINGER_MS;
    return EFPS_ERR_AUTH;
}

static void conn_free(worker_t *w)
{
    efps_tp_ep_destroy(w->ep);
    efps_tp_mem_dereg(w->slot_mr);
    efps_aligned_free(w->slots);
    free(w->got);
    ps_layout_free(&w->pending);
    free(w);
}

/* Login deadlines, refused peers due to be closed, and freeing what closed. */
static void sweep(server_t *sv)
{
    const int64_t now = now_ms();
    if (now < sv->next_sweep)
        return;
    sv->next_sweep = now + PS_SWEEP_MS;
    stranger_log_flush(sv);
    size_t keep = 0;
    for (size_t i = 0; i < sv->nconns; i++) {
        worker_t *w = sv->conns[i];
        if (w->state == W_AUTH && now >= w->deadline)
            refuse(sv, w, "no login within %d ms (EFPS_LOGIN_TIMEOUT_MS)", sv->lim.login_ms);
        else if (w->state == W_REFUSED && now >= w->deadline) {
            efps_tp_ep_destroy(w->ep);
            w->ep = NULL;
            w->state = W_CLOSED;
        }
        if (w->state == W_CLOSED)
            conn_free(w);
        else
            sv->conns[keep++] = w;
    }
    sv->nconns = keep;
}

/* The host part of "host:port" or "[v6]:port". */
static void host_of(const char *addr, char *buf, size_t cap)
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

static efps_status_t accept_one(server_t *sv, efps_tp_conn_req_t *req)
{
    char host[EFPS_TP_NAME_MAX];
    const char *peer = efps_tp_req_peer(req);
    host_of(peer, host, sizeof(host));
    const char *full = over_cap(sv, host);
    if (full != NULL) {
        stranger_log(sv, "rejected a connection from %s: %s", peer != NULL ? peer : "?", full);
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
    w->deadline = now_ms() + sv->lim.login_ms;
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
        refuse(sv, w, "not an efps worker");
    else if (h->version != PS_PROTO_VERSION)
        refuse(sv, w, "protocol version %u, server speaks %u", h->version, PS_PROTO_VERSION);
    else if (efps__wire_auth(msg, len, &mac) != EFPS_OK || !ps_mac_equal(mac, expect))
        refuse(sv, w, "wrong secret (EFPS_SECRET differs)");
    else if ((int)h->num_workers != sv->M)
        refuse(sv, w, "number of workers %u, server %d runs with %d", h->num_workers, sv->cfg.rank,
               sv->M);
    else if ((int)h->rank >= sv->M || sv->by_rank[h->rank] != NULL)
        refuse(sv, w, "worker rank %u is %s", h->rank,
               (int)h->rank >= sv->M ? "out of range" : "taken already");
    else
        return true;
    return false;
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
    efps_info("server %d: layout of %zu keys, %zu parts, %zu bytes here", sv->cfg.rank,
              sv->layout.nkeys, np, sv->slot_bytes);
    return efps_tp_mem_reg(sv->tp, sv->bcast, 2 * sv->bcast_bytes, 0, &sv->bcast_mr);
}

/* A layout setting this server was given must be what the workers declare;
 * the others come from the workers (all must agree). Checked once the
 * layout is known to be valid, so a malformed one gets its own refusal. */
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
    ps_send_refuse(w->ep,
                   "server %d was given %s=%s (by %s) but this worker declares %s %s: unset "
                   "%s on the servers (they run the workers' layout) or make them agree",
                   sv->cfg.rank, var, mine, by, field, theirs, var);
    efps_error("server %d: %s declares %s %s but this server was given %s=%s (by %s): unset it "
               "on the servers (they run the workers' layout) or make them agree",
               sv->cfg.rank, wname(w), field, theirs, var, mine, by);
    return EFPS_ERR_MISMATCH;
}

/* The worker's layout is complete: adopt or compare it, give it its slots. */
static efps_status_t layout_done(server_t *sv, worker_t *w)
{
    char why[256];
    efps_status_t st = ps_layout_finish(&w->pending);
    if (st == EFPS_ERR_INVALID)
        return refuse(sv, w,
                      "bad layout: a key declared twice, or more than %u parts or %llu "
                      "elements in all",
                      PS_MAX_PARTS, (unsigned long long)PS_MAX_ELEMS);
    if (st != EFPS_OK || (st = check_given(sv, w, &w->pending)) != EFPS_OK)
        return st;
    if (!sv->have_layout) {
        if ((st = adopt_layout(sv, &w->pending)) != EFPS_OK)
            return st;
    } else if (ps_layout_differs(&w->pending, &sv->layout, why, sizeof(why))) {
        ps_send_refuse(w->ep, "model layout differs from the first worker's: %s", why);
        efps_error("server %d: %s: model layout differs: %s", sv->cfg.rank, wname(w), why);
        return EFPS_ERR_MISMATCH;
    }
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
    ps_put32(msg, PS_MSG_READY);
    efps_tp_rkey_pack(&rkey, msg + 4);
    w->state = W_READY;
    return efps_tp_msg_send(w->ep, msg, sizeof(msg));
}

static efps_status_t on_layout(server_t *sv, worker_t *w, const uint8_t *m, size_t len)
{
    efps__layout_head_t h;
    char why[256];
    if (efps__wire_layout_head(m, len, &h, why, sizeof(why)) != EFPS_OK)
        return refuse(sv, w, "bad LAYOUT: %s", why);
    w->pull_rkey = h.pull_rkey;
    efps_optim_config_t o = sv->optim;
    o.compressor = (efps_compressor_t)h.compressor;
    o.block = (size_t)h.block;
    ps_layout_init(&w->pending, &o, (size_t)h.partition_bytes, sv->nservers);
    w->announced = h.nkeys;
    w->state = W_LAYOUT;
    return EFPS_OK;
}

static efps_status_t on_keys(server_t *sv, worker_t *w, const uint8_t *m, size_t len)
{
    char why[256];
    efps_status_t st = efps__wire_keys(&w->pending, w->announced, m, len, why, sizeof(why));
    if (st == EFPS_ERR_PROTO)
        return refuse(sv, w, "bad KEYS: %s", why);
    if (st != EFPS_OK)
        return st;
    return w->pending.nkeys == w->announced ? layout_done(sv, w) : EFPS_OK;
}

/* ---- control messages ---------------------------------------------------------------- */

/* The residual norms of this server's parts from a given one on (stats.c). */
static efps_status_t on_stats(server_t *sv, worker_t *w, const uint8_t *m, size_t len)
{
    uint8_t reply[12 + 12 * PS_STATS_PER_MSG];
    size_t p = len == 8 ? ps_get32(m + 4) : SIZE_MAX, count = 0;
    for (; p < sv->layout.nparts && count < PS_STATS_PER_MSG; p++) {
        if (!sv->parts[p].mine)
            continue;
        const double ss = efps_server_opt_residual_sumsq(sv->parts[p].opt);
        uint64_t bits;
        memcpy(&bits, &ss, sizeof(bits));
        ps_put32(reply + 12 + 12 * count, (uint32_t)p);
        ps_put64(reply + 16 + 12 * count, bits);
        count++;
    }
    ps_put32(reply, PS_MSG_STATS);
    ps_put32(reply + 4, (uint32_t)count);
    ps_put32(reply + 8, p < sv->layout.nparts ? (uint32_t)p : UINT32_MAX);
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
    if (efps__ps_server_ckpt(sv->cfg.rank, type, m, len, opts, n, reply, sizeof(reply), &rlen) ==
        EFPS_OK)
        for (size_t p = 0, k = 0; p < sv->layout.nparts; p++)
            if (sv->parts[p].mine)
                sv->parts[p].opt = opts[k++]; /* a load replaced them */
    free(opts);
    return efps_tp_msg_send(w->ep, reply, rlen);
}

/* This server stops because of `culprit`: every other worker is told why
 * (best effort; the linger after the error gives it time to go out), so each
 * names the culprit, not only "server disconnected". */
static void tell_others(server_t *sv, const worker_t *culprit, const char *what)
{
    for (int r = 0; r < sv->M; r++) {
        worker_t *o = sv->by_rank[r];
        if (o != NULL && o != culprit && o->state >= W_AUTHED && o->state <= W_DONE)
            ps_send_refuse(o->ep, "server %d stopped: %s %s", sv->cfg.rank, wname(culprit), what);
    }
}

/* Joined the run: its pushes are counted in got. */
static bool has_slots(const worker_t *w)
{
    return w != NULL && w->got != NULL;
}

/* Worker d finalized while the others go on: every other worker is told who
 * left, so they fail naming it instead of waiting for its pushes. The run is
 * over (the server stops, lingering so these messages get out). */
static efps_status_t left_early(server_t *sv, worker_t *d, size_t p)
{
    uint64_t most = 0;
    for (int r = 0; r < sv->M; r++)
        if (has_slots(sv->by_rank[r]) && sv->by_rank[r]->got[p] > most)
            most = sv->by_rank[r]->got[p];
    char why[160];
    snprintf(why, sizeof(why),
             "left early: it finalized after %llu steps of part %zu, others went on to step %llu",
             (unsigned long long)d->got[p], p, (unsigned long long)most);
    efps_error("server %d: %s %s", sv->cfg.rank, wname(d), why);
    tell_others(sv, d, why);
    return EFPS_ERR_PEER;
}

static efps_status_t on_msg(server_t *sv, worker_t *w, const uint8_t *m, size_t len)
{
    const uint32_t type = len >= 4 ? ps_get32(m) : 0;
    uint8_t reply[4 + PS_MAC];
    if (w->state == W_AUTH && type == PS_MSG_AUTH) {
        if (!check_auth(sv, w, m, len))
            return EFPS_ERR_AUTH;
        w->rank = (int)w->hello.rank;
        sv->by_rank[w->rank] = w;
        w->state = W_AUTHED;
        char addr[EFPS_TP_NAME_MAX];
        snprintf(addr, sizeof(addr), "%s", w->name + 5); /* past "peer " */
        snprintf(w->name, sizeof(w->name), "worker %d (%s)", w->rank, addr);
        ps_put32(reply, PS_MSG_AUTH);
        ps_mac(sv->cfg.secret, "efps server", &w->mine, &w->hello, reply + 4);
        efps_info("server %d: %s authenticated", sv->cfg.rank, wname(w));
        return efps_tp_msg_send(w->ep, reply, sizeof(reply));
    }
    if (w->state == W_AUTHED && type == PS_MSG_LAYOUT)
        return on_layout(sv, w, m, len);
    if (w->state == W_LAYOUT && type == PS_MSG_KEYS)
        return on_keys(sv, w, m, len);
    if (w->state == W_READY && type == PS_MSG_STATS)
        return on_stats(sv, w, m, len);
    if (w->state == W_READY && (type == PS_MSG_SAVE || type == PS_MSG_LOAD))
        return on_ckpt(sv, w, type, m, len);
    if (w->state == W_READY && type == PS_MSG_BYE) {
        w->state = W_DONE;
        sv->done++;
        ps_put32(reply, PS_MSG_BYE);
        efps_status_t st = efps_tp_msg_send(w->ep, reply, 4);
        for (size_t p = 0; st == EFPS_OK && p < sv->layout.nparts; p++)
            for (int r = 0; r < sv->M; r++)
                if (has_slots(sv->by_rank[r]) && sv->by_rank[r]->got[p] > w->got[p])
                    return left_early(sv, w, p);
        return st;
    }
    if (w->state == W_AUTH)
        return refuse(sv, w, "message type %u before authentication", type);
    efps_error("server %d: %s sent message type %u in state %d", sv->cfg.rank, wname(w), type,
               w->state);
    return EFPS_ERR_PROTO;
}

/* Takes every waiting control message of every connection. */
static efps_status_t drain_msgs(server_t *sv, bool *any_p)
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
            refuse(sv, w, "message larger than %d bytes", EFPS_TP_MSG_MAX);
        }
    }
    return EFPS_OK;
}

/* ---- data path ------------------------------------------------------------------------ */

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
    if (w->state == W_AUTH || w->state == W_AUTHED || w->state == W_LAYOUT) {
        /* It was given no region: the key it used is another's. Drop this
         * connection only; the run goes on. */
        refuse(sv, w, "wrote into a region it was never given");
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
            return left_early(sv, d, p);
    }
    if (++sp->count < sv->M)
        return EFPS_OK;
    /* The buffer of this parity was last used two steps ago: its writes must be done. */
    return sp->outstanding[sp->step & 1] == 0 ? reduce(sv, p) : EFPS_ERR_NO_RESOURCE;
}

static efps_status_t on_cqe(server_t *sv, const efps_tp_cqe_t *c)
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
        if (w->state >= W_GONE)
            return EFPS_OK;
        efps_error("server %d: %s disconnected: %s", sv->cfg.rank, wname(w),
                   efps_strerror(c->status == EFPS_OK ? EFPS_ERR_PEER : c->status));
        tell_others(sv, w, "disconnected");
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
static efps_status_t retry_pending(server_t *sv)
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

/* ---- the loop -----------------------------------------------------------------------------
 */

static efps_status_t turn(server_t *sv, bool *any_p)
{
    efps_tp_conn_req_t *req;
    efps_status_t st;
    sweep(sv);
    while (efps_tp_get_request(sv->listener, 0, &req) == EFPS_OK) {
        *any_p = true;
        if ((st = accept_one(sv, req)) != EFPS_OK)
            return st;
    }
    if ((st = drain_msgs(sv, any_p)) != EFPS_OK)
        return st;
    efps_tp_cqe_t cqes[64];
    int n = 0;
    if ((st = efps_tp_poll(sv->tp, cqes, 64, *any_p ? 0 : 1, &n)) != EFPS_OK)
        return st;
    for (int i = 0; i < n; i++) {
        st = on_cqe(sv, &cqes[i]);
        if (st != EFPS_OK && st != EFPS_ERR_NO_RESOURCE)
            return st;
    }
    *any_p |= n > 0;
    return retry_pending(sv);
}

/* EFPS_PORT_FILE: tells a launcher which port "port 0" became. Written to a
 * temporary name and renamed, so a reader never sees half a number. */
static efps_status_t write_port_file(const server_t *sv)
{
    const char *path = efps_config_get("EFPS_PORT_FILE");
    if (path == NULL || *path == '\0')
        return EFPS_OK;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    bool bad = f == NULL;
    if (!bad) {
        bad = fprintf(f, "%u\n", efps_tp_listener_port(sv->listener)) < 0;
        bad |= fclose(f) != 0;
    }
    if (bad || rename(tmp, path) != 0) {
        efps_error("server %d: cannot write port file %s", sv->cfg.rank, path);
        return EFPS_ERR_IO;
    }
    return EFPS_OK;
}

/* Every worker said BYE, got our answer and closed: nothing it needs can be
 * lost by closing now. */
static bool finished(const server_t *sv)
{
    if (sv->gone < sv->M)
        return false;
    for (size_t p = 0; p < sv->layout.nparts; p++)
        if (sv->parts[p].outstanding[0] || sv->parts[p].outstanding[1])
            return false;
    return true;
}

static efps_status_t serve(server_t *sv)
{
    int64_t last = now_ms();
    while (!finished(sv)) {
        if (atomic_load_explicit(&sv->stop, memory_order_relaxed)) {
            efps_info("server %d: stopped on request", sv->cfg.rank);
            return EFPS_ERR_STOPPED;
        }
        bool any = false;
        efps_status_t st = turn(sv, &any);
        if (st != EFPS_OK)
            return st;
        if (any) {
            last = now_ms();
            continue;
        }
        int ready = 0;
        for (int r = 0; r < sv->M; r++)
            ready += sv->by_rank[r] != NULL && sv->by_rank[r]->state >= W_READY;
        if (sv->done == sv->M && now_ms() - last > sv->cfg.timeout_ms) {
            efps_warn("server %d: every worker said goodbye but %d did not close within %d ms",
                      sv->cfg.rank, sv->M - sv->gone, sv->cfg.timeout_ms);
            return EFPS_OK;
        }
        if (ready < sv->M && now_ms() - last > sv->cfg.timeout_ms) {
            efps_error("server %d: only %d of %d workers joined within %d ms", sv->cfg.rank, ready,
                       sv->M, sv->cfg.timeout_ms);
            return EFPS_ERR_TIMEOUT;
        }
    }
    return EFPS_OK;
}

/* After a fatal error: keep the transport going briefly so that a REFUSE or
 * other last message already queued reaches its worker before we close. */
static void linger(server_t *sv, int ms)
{
    const int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        efps_tp_cqe_t cqes[64];
        int n = 0, open = 0;
        efps_tp_poll(sv->tp, cqes, 64, 10, &n);
        for (size_t i = 0; i < sv->nconns; i++)
            open += sv->conns[i]->ep != NULL && efps_tp_ep_status(sv->conns[i]->ep) == EFPS_OK;
        if (open == 0)
            return;
    }
}

static void server_free(server_t *sv)
{
    for (size_t i = 0; i < sv->nconns; i++)
        conn_free(sv->conns[i]);
    efps_tp_listener_destroy(sv->listener);
    efps_tp_mem_dereg(sv->bcast_mr);
    efps_tp_close(sv->tp);
    for (size_t p = 0; sv->parts != NULL && p < sv->layout.nparts; p++)
        efps_server_opt_destroy(sv->parts[p].opt);
    efps_aligned_free(sv->bcast);
    free(sv->parts);
    free(sv->part_off);
    free(sv->slot_off);
    free(sv->sending);
    free(sv->conns);
    free(sv->by_rank);
    free(sv->inputs);
    ps_layout_free(&sv->layout);
}

/* ---- the public object ----------------------------------------------------------------- */

/* efps_server_stop's store must be async-signal-safe: it is if lock-free. */
_Static_assert(ATOMIC_BOOL_LOCK_FREE == 2, "efps_server_stop needs a lock-free atomic_bool");

struct efps_server {
    server_t sv;
    bool ran;
};

static efps_status_t server_open(server_t *sv)
{
    efps_status_t st;
    sv->M = sv->cfg.num_workers;
    sv->nservers = ps_count_servers(sv->cfg.servers);
    efps_compressor_parse(sv->cfg.compressor, &sv->optim.compressor);
    sv->optim.block = (size_t)sv->cfg.block;
    char who[32];
    snprintf(who, sizeof(who), "server %d", sv->cfg.rank);
    if ((st = efps__ps_check_secret(&sv->cfg, who)) != EFPS_OK ||
        (st = efps__ps_limits(&sv->lim)) != EFPS_OK)
        return st;
    /* The transport drops a connection that never says hello by the same
     * login deadline this server gives an unauthenticated peer. */
    efps_tp_attr_t attr = {.timeout_ms = (uint32_t)sv->cfg.timeout_ms,
                           .hello_timeout_ms = (uint32_t)sv->lim.login_ms};
    sv->by_rank = calloc((size_t)sv->M, sizeof(*sv->by_rank));
    sv->inputs = calloc((size_t)sv->M, sizeof(*sv->inputs));
    if (sv->by_rank == NULL || sv->inputs == NULL)
        st = EFPS_ERR_NOMEM;
    else if ((st = efps_tp_open(sv->cfg.transport, &attr, &sv->tp)) == EFPS_OK)
        st = efps_tp_listen(sv->tp, sv->cfg.bind, &sv->listener);
    if (st != EFPS_OK) {
        efps_error("server %d: cannot listen on %s: %s", sv->cfg.rank, sv->cfg.bind,
                   efps_strerror(st));
        return st;
    }
    efps_info("server %d: listening on %s (%s) for %d workers", sv->cfg.rank, sv->cfg.bind,
              efps_tp_name(sv->tp), sv->M);
    return write_port_file(sv);
}

/* Where a layout setting came from: the configuration (efps-server's
 * option), the environment, or nowhere (NULL: the workers' value). */
static const char *given_by(bool in_cfg, const char *opt, const char *var)
{
    const char *e = getenv(var);
    if (in_cfg)
        return opt;
    return e != NULL && *e != '\0' ? "the environment" : NULL;
}

static void given_settings(server_t *sv, const efps_ps_config_t *cfg)
{
    sv->set_comp = given_by(cfg && cfg->compressor, "--compressor", "EFPS_COMPRESSOR");
    sv->set_block = given_by(cfg && cfg->block >= 0, "--block", "EFPS_BLOCK");
    sv->set_part =
        given_by(cfg && cfg->partition_bytes, "--partition-bytes", "EFPS_PARTITION_BYTES");
}

efps_status_t efps_server_create(const efps_ps_config_t *cfg, efps_server_t **srv_p)
{
    if (srv_p == NULL)
        return EFPS_ERR_INVALID;
    efps_server_t *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return EFPS_ERR_NOMEM;
    server_t *sv = &srv->sv;
    atomic_init(&sv->stop, false);
    given_settings(sv, cfg);
    efps_status_t st = efps_ps_config_resolve(cfg, &sv->cfg);
    if (st == EFPS_OK && sv->cfg.role != EFPS_ROLE_SERVER) {
        efps_error("efps_server_create: this process is configured as a worker (EFPS_ROLE)");
        st = EFPS_ERR_INVALID;
    }
    if (st == EFPS_OK)
        st = server_open(sv);
    if (st != EFPS_OK) {
        efps_server_destroy(srv);
        return st;
    }
    *srv_p = srv;
    return EFPS_OK;
}

uint16_t efps_server_port(const efps_server_t *srv)
{
    return srv == NULL ? 0 : efps_tp_listener_port(srv->sv.listener);
}

efps_status_t efps_server_run(efps_server_t *srv)
{
    if (srv == NULL)
        return EFPS_ERR_INVALID;
    if (srv->ran)
        return EFPS_ERR_STATE;
    srv->ran = true;
    server_t *sv = &srv->sv;
    efps_status_t st = serve(sv);
    if (st == EFPS_OK)
        efps_info("server %d: all %d workers finished", sv->cfg.rank, sv->M);
    else if (st != EFPS_ERR_STOPPED) {
        efps_error("server %d: stopping: %s", sv->cfg.rank, efps_strerror(st));
        linger(sv, 1000);
    }
    return st;
}

void efps_server_stop(efps_server_t *srv)
{
    if (srv != NULL)
        atomic_store_explicit(&srv->sv.stop, true, memory_order_relaxed);
}

void efps_server_destroy(efps_server_t *srv)
{
    if (srv == NULL)
        return;
    server_free(&srv->sv);
    free(srv);
}

int efps_server_main(const efps_ps_config_t *cfg)
{
    efps_server_t *srv;
    efps_status_t st = efps_server_create(cfg, &srv);
    if (st != EFPS_OK)
        return 1;
    st = efps_server_run(srv);
    efps_server_destroy(srv);
    return st == EFPS_OK ? 0 : 1;
}
