/* The worker side of the parameter server: efps_ps_init/declare/push/pull/finalize.
 *
 * Memory: two arenas hold every part of every key, one payload + header each:
 * the push arena (source of writes, not remotely accessible) and the pull
 * arena (remote write, so the servers can write updates into it). The
 * optimizer encodes straight into the push arena and applies straight from
 * the pull arena: nothing is copied on the data path. */
#include "ps_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PS_CONNECT_BACKOFF_MIN_MS 50
#define PS_CONNECT_BACKOFF_MAX_MS 1000
#define PS_NOTICE_GRACE_MS        3000

/* Pipelining (see the comment above drain()): parts of about 1/64 of a
 * server's share of the model when the partition does not change the math,
 * and a window of 1/8 of that share (at least 4 parts) of pushes in flight. */
#define PS_AUTO_PARTS      64
#define PS_AUTO_PART_MIN   ((size_t)4 << 10)
#define PS_AUTO_PART_MAX   ((size_t)4 << 20)
#define PS_WINDOW_SHARE    8
#define PS_WINDOW_PARTS    4
#define PS_WINDOW_STALL_MS 200 /* blocked this long with nothing arriving: post one more */

typedef struct {
    efps_tp_ep_t *ep;
    ps_hello_t hello, peer;
    efps_tp_rkey_t slot_rkey; /* this worker's slot arena on that server */
    size_t slot_bytes;
    size_t window, flight;      /* bytes of pushes allowed / posted whose update is not here yet */
    size_t *queue, qhead, qlen; /* parts pushed but not posted yet, in push order */
} server_link_t;

typedef struct {
    efps_worker_opt_t *opt;
    uint64_t pushed, arrived, applied;
    float lr;
    bool inflight; /* a push queued or posted, not yet completed locally */
    size_t from;   /* where its write starts: 0, or the header alone for a skip */
    size_t flight; /* bytes posted that count against the window until the update */
} part_state_t;

struct efps_ps {
    efps_ps_config_t cfg;
    efps_optim_config_t optim;
    int nservers;
    efps_tp_ctx_t *tp;
    server_link_t *srv;
    ps_layout_t layout;
    bool started, auto_partition;
    efps_status_t failed;
    size_t *part_off, *slot_off; /* per part: in the worker arenas, in the server's slots */
    size_t arena_bytes;
    uint8_t *push_arena, *pull_arena;
    efps_tp_mr_t *push_mr, *pull_mr;
    part_state_t *st;
    uint64_t wire_bytes, fp32_bytes;
    /* While waiting for the others to join, the last NOTICE (a peer refused
     * or lost) about the first rank one named: that one is the root cause,
     * later ones about other ranks are often its consequences (workers that
     * gave up). Cleared by the first update (the run started). */
    char notice[PS_NOTICE_MAX];
    int64_t notice_rank;
};

static efps_status_t fail(efps_ps_t *ps, efps_status_t st)
{
    if (ps->failed == EFPS_OK)
        ps->failed = st;
    return st;
}

/* ---- connection and authentication ----------------------------------------- */

/* A server names a peer it refused or lost before the run started (m:
 * NUL-terminated): logged at once, so the user watching any worker sees
 * the culprit, and kept for the error if the run then never starts. */
static void on_notice(efps_ps_t *ps, const uint8_t *m, size_t len)
{
    if (len <= 8)
        return;
    const uint32_t rank = efps__get_le32(m + 4);
    efps_error("worker %d: %s; still waiting for worker %u until the join deadline "
               "(EFPS_TIMEOUT_MS, %d ms)",
               ps->cfg.rank, (const char *)m + 8, rank, ps->cfg.timeout_ms);
    if (ps->notice[0] != '\0' && ps->notice_rank != rank)
        return;
    const size_t k = strnlen((const char *)m + 8, sizeof(ps->notice) - 1);
    memcpy(ps->notice, m + 8, k);
    ps->notice[k] = '\0';
    ps->notice_rank = rank;
}

/* The last notice, for an error while the run never started ("" if none or
 * if why says it already). */
static const char *notice_for(const efps_ps_t *ps, const char *why)
{
    return ps->notice[0] == '\0' || strstr(why, ps->notice) != NULL ? "" : ps->notice;
}

/* Takes the next control message of a server, expecting `type`; a REFUSE
 * is reported with the server's reason. */
static efps_status_t expect_msg(efps_ps_t *ps, server_link_t *s, uint32_t type, uint8_t *buf,
                                size_t cap, size_t *len_p)
{
    size_t len = 0;
    uint32_t got = PS_MSG_NOTICE;
    while (got == PS_MSG_NOTICE) {
        efps_status_t st = efps_tp_msg_recv(s->ep, buf, cap - 1, &len, ps->cfg.timeout_ms);
        if (st != EFPS_OK) {
            efps_error("worker %d: no answer from %s: %s", ps->cfg.rank, efps_tp_ep_name(s->ep),
                       efps_strerror(st));
            return st;
        }
        buf[len] = '\0';
        if ((got = len >= 4 ? efps__get_le32(buf) : 0) == PS_MSG_NOTICE)
            on_notice(ps, buf, len);
    }
    if (got == PS_MSG_REFUSE) {
        efps_error("worker %d: %s refused us: %s", ps->cfg.rank, efps_tp_ep_name(s->ep),
                   (const char *)buf + 4);
        return EFPS_ERR_MISMATCH;
    }
    if (got != type) {
        efps_error("worker %d: %s sent message type %u, expected %u", ps->cfg.rank,
                   efps_tp_ep_name(s->ep), got, type);
        return EFPS_ERR_PROTO;
    }
    *len_p = len;
    return EFPS_OK;
}

/* Connects, retrying a refused or unanswered connect with capped exponential
 * backoff until timeout_ms: under mpirun, srun or torchrun every process
 * starts at once, so a worker is often up before its server listens. */
static efps_status_t connect_retrying(efps_ps_t *ps, int i, const char *addr,
                                      efps_tp_conn_param_t *param, efps_tp_ep_t **ep_p)
{
    const int64_t t0 = efps__now_ms(), end = t0 + ps->cfg.timeout_ms;
    int backoff = PS_CONNECT_BACKOFF_MIN_MS;
    for (int attempt = 0;; attempt++) {
        param->timeout_ms = (int)(end - efps__now_ms() > 1 ? end - efps__now_ms() : 1);
        efps_status_t st = efps_tp_connect(ps->tp, addr, param, ep_p);
        if (st == EFPS_OK)
            return st;
        const bool again = st == EFPS_ERR_PEER || st == EFPS_ERR_TIMEOUT || st == EFPS_ERR_SYSTEM;
        if (!again || efps__now_ms() + backoff >= end) {
            efps_error("worker %d: cannot connect to server %d (%s): tried for %lld ms "
                       "(%d attempt%s), last error: %s",
                       ps->cfg.rank, i, addr, (long long)(efps__now_ms() - t0), attempt + 1,
                       ps_s(attempt + 1), efps_strerror(st));
            return st;
        }
        if (attempt == 0)
            efps_info("worker %d: server %d (%s) not reachable yet (%s): retrying for up to %d ms",
                      ps->cfg.rank, i, addr, efps_strerror(st), ps->cfg.timeout_ms);
        struct timespec ts = {.tv_sec = backoff / 1000, .tv_nsec = (backoff % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        backoff = backoff * 2 > PS_CONNECT_BACKOFF_MAX_MS ? PS_CONNECT_BACKOFF_MAX_MS : backoff * 2;
    }
}

static efps_status_t connect_server(efps_ps_t *ps, int i)
{
    server_link_t *s = &ps->srv[i];
    char addr[256], label[32];
    ps_server_entry(ps->cfg.servers, i, addr, sizeof(addr));
    snprintf(label, sizeof(label), "server %d", i);
    s->hello = (ps_hello_t){.magic = PS_MAGIC,
                            .version = PS_PROTO_VERSION,
                            .role = EFPS_ROLE_WORKER,
                            .rank = (uint32_t)ps->cfg.rank,
                            .num_workers = (uint32_t)ps->cfg.num_workers};
    ps_nonce(s->hello.nonce);
    efps_tp_conn_param_t param = {.priv = &s->hello,
                                  .priv_len = sizeof(s->hello),
                                  .label = label,
                                  .context = s,
                                  .timeout_ms = ps->cfg.timeout_ms};
    efps_status_t st = connect_retrying(ps, i, addr, &param, &s->ep);
    if (st != EFPS_OK)
        return st;
    size_t len = 0;
    const void *priv = efps_tp_ep_peer_priv(s->ep, &len);
    if (len != sizeof(s->peer)) {
        efps_error("worker %d: %s is not an efps server", ps->cfg.rank, efps_tp_ep_name(s->ep));
        return EFPS_ERR_PROTO;
    }
    memcpy(&s->peer, priv, sizeof(s->peer));
    if (s->peer.magic != PS_MAGIC || s->peer.version != PS_PROTO_VERSION) {
        efps_error("worker %d: %s speaks protocol version %u, we speak %u", ps->cfg.rank,
                   efps_tp_ep_name(s->ep), s->peer.version, PS_PROTO_VERSION);
        return EFPS_ERR_MISMATCH;
    }
    uint8_t msg[4 + PS_MAC], reply[EFPS_TP_MSG_MAX], expect[PS_MAC];
    efps__put_le32(msg, PS_MSG_AUTH);
    ps_mac(ps->cfg.secret, "efps worker", &s->hello, &s->peer, msg + 4);
    if ((st = efps_tp_msg_send(s->ep, msg, sizeof(msg))) != EFPS_OK)
        return st;
    if ((st = expect_msg(ps, s, PS_MSG_AUTH, reply, sizeof(reply), &len)) != EFPS_OK)
        return st;
    ps_mac(ps->cfg.secret, "efps server", &s->peer, &s->hello, expect);
    if (len != 4 + PS_MAC || !ps_mac_equal(reply + 4, expect)) {
        efps_error("worker %d: %s failed authentication (a different EFPS_SECRET?)", ps->cfg.rank,
                   efps_tp_ep_name(s->ep));
        return EFPS_ERR_AUTH;
    }
    efps_info("worker %d: connected to %s", ps->cfg.rank, efps_tp_ep_name(s->ep));
    return EFPS_OK;
}

efps_status_t efps_ps_init(const efps_ps_config_t *cfg, efps_ps_t **ps_p)
{
    if (ps_p == NULL)
        return EFPS_ERR_INVALID;
    efps_ps_t *ps = calloc(1, sizeof(*ps));
    if (ps == NULL)
        return EFPS_ERR_NOMEM;
    efps_status_t st = efps_ps_config_resolve(cfg, &ps->cfg);
    if (st != EFPS_OK)
        goto err_free;
    if (ps->cfg.role != EFPS_ROLE_WORKER) {
        efps_error("efps_ps_init is for workers; servers run efps_server_create/run");
        st = EFPS_ERR_INVALID;
        goto err_free;
    }
    char who[32];
    snprintf(who, sizeof(who), "worker %d", ps->cfg.rank);
    if ((st = efps__ps_check_secret(&ps->cfg, who)) != EFPS_OK)
        goto err_free;
    efps_compressor_parse(ps->cfg.compressor, &ps->optim.compressor);
    ps->optim.block = (size_t)ps->cfg.block;
    ps->optim.momentum = ps->cfg.momentum;
    ps->optim.nesterov = ps->cfg.nesterov;
    ps->optim.weight_decay = ps->cfg.weight_decay;
    if ((st = efps_optim_config_check(&ps->optim)) != EFPS_OK)
        goto err_free;
    ps->nservers = ps_count_servers(ps->cfg.servers);
    /* Parts change the math only for blocksign with one block per part: a
     * partition nobody set is otherwise ours to choose (auto_partition). */
    const char *env_part = getenv("EFPS_PARTITION_BYTES");
    ps->auto_partition = (cfg == NULL || cfg->partition_bytes == 0) &&
                         (env_part == NULL || *env_part == '\0') &&
                         !(ps->optim.compressor == EFPS_COMP_BLOCKSIGN && ps->optim.block == 0);
    ps_layout_init(&ps->layout, &ps->optim, ps->cfg.partition_bytes, ps->nservers);
    ps->srv = calloc((size_t)ps->nservers, sizeof(*ps->srv));
    efps_tp_attr_t attr = {.timeout_ms = (uint32_t)ps->cfg.timeout_ms,
                           .device = ps->cfg.ib_dev,
                           .gid = ps->cfg.ib_gid,
                           .cpu_affinity = ps->cfg.cpu_affinity};
    if (ps->srv == NULL)
        st = EFPS_ERR_NOMEM;
    else
        st = efps_tp_open(ps->cfg.transport, &attr, &ps->tp);
    for (int i = 0; st == EFPS_OK && i < ps->nservers; i++)
        st = connect_server(ps, i);
    if (st != EFPS_OK)
        goto err_close;
    *ps_p = ps;
    return EFPS_OK;

err_close:
    efps_tp_close(ps->tp);
    free(ps->srv);
    ps_layout_free(&ps->layout);
err_free:
    free(ps);
    return st;
}

efps_status_t efps_ps_declare(efps_ps_t *ps, uint32_t key, size_t n)
{
    return ps == NULL ? EFPS_ERR_INVALID : efps_ps_declare_block(ps, key, n, ps->optim.block);
}

efps_status_t efps_ps_declare_block(efps_ps_t *ps, uint32_t key, size_t n, size_t block)
{
    if (ps == NULL)
        return EFPS_ERR_INVALID;
    if (ps->started) {
        efps_error("declare of key %u after the first push", key);
        return EFPS_ERR_STATE;
    }
    efps_status_t st = ps_layout_add(&ps->layout, key, n, block);
    if (st != EFPS_OK)
        efps_error("declare key %u of %zu element%s: %s", key, n, ps_s((long)n),
                   st == EFPS_ERR_INVALID ? "duplicate key or bad size" : efps_strerror(st));
    return st;
}

/* ---- progress ------------------------------------------------------------------ */

/* The reason a server gave before it went away (a REFUSE it sent on
 * stopping, e.g. naming the worker that died), if one is still queued.
 * A NOTICE on the way is logged. */
static bool server_reason(efps_ps_t *ps, efps_tp_ep_t *ep, char *why, size_t cap)
{
    uint8_t m[EFPS_TP_MSG_MAX];
    size_t len = 0;
    while (efps_tp_msg_recv(ep, m, sizeof(m) - 1, &len, 0) == EFPS_OK) {
        m[len] = '\0';
        if (len > 4 && efps__get_le32(m) == PS_MSG_NOTICE)
            on_notice(ps, m, len);
        if (len > 4 && efps__get_le32(m) == PS_MSG_REFUSE) {
            const size_t k = strnlen((const char *)m + 4, cap - 1);
            memcpy(why, m + 4, k);
            why[k] = '\0';
            return true;
        }
    }
    return false;
}

static efps_status_t on_cqe(efps_ps_t *ps, const efps_tp_cqe_t *c)
{
    char why[PS_NOTICE_MAX + 512];
    if (c->type == EFPS_TP_CQE_DISCONNECT && server_reason(ps, c->ep, why, sizeof(why))) {
        const char *more = notice_for(ps, why);
        efps_error("worker %d: %s: %s%s%s", ps->cfg.rank, efps_tp_ep_name(c->ep), why,
                   *more ? "; last notice: " : "", more);
        return fail(ps, EFPS_ERR_PEER);
    }
    if (c->type == EFPS_TP_CQE_DISCONNECT || c->status != EFPS_OK) {
        efps_error("worker %d: %s: %s%s", ps->cfg.rank, efps_tp_ep_name(c->ep),
                   c->type == EFPS_TP_CQE_DISCONNECT ? "disconnected: " : "write failed: ",
                   efps_strerror(c->status == EFPS_OK ? EFPS_ERR_PEER : c->status));
        return fail(ps, EFPS_ERR_PEER);
    }
    if (c->type == EFPS_TP_CQE_WRITE) {
        if (c->context < ps->layout.nparts)
            ps->st[c->context].inflight = false;
        return EFPS_OK;
    }
    const uint32_t part = c->imm >> 1;
    part_state_t *p = part < ps->layout.nparts ? &ps->st[part] : NULL;
    if (p == NULL || p->arrived >= p->pushed || (c->imm & 1) != ((p->pushed - 1) & 1)) {
        efps_error("worker %d: %s wrote an update we did not ask for (imm %#x)", ps->cfg.rank,
                   efps_tp_ep_name(c->ep), c->imm);
        return fail(ps, EFPS_ERR_PROTO);
    }
    p->arrived++;
    ps->notice[0] = '\0'; /* an update: every worker has joined */
    ps->srv[ps->layout.parts[part].server].flight -= p->flight;
    p->flight = 0;
    return EFPS_OK;
}

/* Handles completions for up to timeout_ms; EFPS_OK also when none came. */
static efps_status_t progress(efps_ps_t *ps, int timeout_ms, bool *any_p)
{
    efps_tp_cqe_t cqes[64];
    int n = 0;
    efps_status_t st = efps_tp_poll(ps->tp, cqes, 64, timeout_ms, &n);
    if (st != EFPS_OK)
        return fail(ps, st);
    for (int i = 0; i < n && st == EFPS_OK; i++)
        st = on_cqe(ps, &cqes[i]);
    if (any_p)
        *any_p = n > 0;
    return st;
}

static efps_status_t drain(efps_ps_t *ps, bool force);

/* Waits until done(ps, arg) holds; fails after timeout_ms without any
 * completion. Posts held-back pushes as the window opens. */
static efps_status_t wait_for(efps_ps_t *ps, bool (*done)(efps_ps_t *, size_t), size_t arg,
                              const char *what)
{
    int64_t last = efps__now_ms(), stall = last;
    efps_status_t st = drain(ps, false);
    while (st == EFPS_OK && !done(ps, arg)) {
        bool any = false;
        if ((st = progress(ps, 10, &any)) != EFPS_OK)
            return st;
        if (any)
            last = stall = efps__now_ms();
        /* Blocked, pushes held back, nothing arriving: a worker that pushes
         * its keys in another order than its peers could otherwise wait for
         * pushes they hold back for the same reason. One more goes out. */
        const bool force = efps__now_ms() - stall > PS_WINDOW_STALL_MS;
        if (force)
            stall = efps__now_ms();
        if ((st = drain(ps, force)) != EFPS_OK)
            return st;
        char why[PS_NOTICE_MAX + 512]; /* a server that stops the run says why (e.g. who left) */
        for (int i = 0; !any && i < ps->nservers; i++)
            if (server_reason(ps, ps->srv[i].ep, why, sizeof(why))) {
                const char *more = notice_for(ps, why);
                efps_error("worker %d: %s: %s%s%s", ps->cfg.rank, efps_tp_ep_name(ps->srv[i].ep),
                           why, *more ? "; last notice: " : "", more);
                return fail(ps, EFPS_ERR_PEER);
            }
        /* While a joiner is missing, the server's verdict at its join deadline
         * (which names the missing rank) is worth a little more patience. */
        const int limit = ps->cfg.timeout_ms + (ps->notice[0] ? PS_NOTICE_GRACE_MS : 0);
        if (!any && efps__now_ms() - last > limit) {
            efps_error("worker %d: %s: nothing from %s for %d ms%s%s", ps->cfg.rank, what,
                       efps_tp_ep_name(ps->srv[ps->layout.parts[arg].server].ep), limit,
                       ps->notice[0] ? "; the run never started, last notice: " : "", ps->notice);
            return fail(ps, EFPS_ERR_TIMEOUT);
        }
    }
    return st;
}

static bool push_done(efps_ps_t *ps, size_t part)
{
    return !ps->st[part].inflight;
}

static bool update_here(efps_ps_t *ps, size_t part)
{
    return ps->st[part].arrived == ps->st[part].pushed;
}

/* ---- start: layout to the servers, regions registered and exchanged ------------- */

static efps_status_t send_layout(efps_ps_t *ps, server_link_t *s)
{
    uint8_t msg[EFPS_TP_MSG_MAX];
    const ps_layout_t *l = &ps->layout;
    efps__put_le32(msg, PS_MSG_LAYOUT);
    efps__put_le32(msg + 4, (uint32_t)l->optim.compressor);
    efps__put_le64(msg + 8, l->optim.block);
    efps__put_le64(msg + 16, l->partition_bytes);
    efps__put_le64(msg + 24, l->nkeys);
    efps_tp_rkey_t rkey; /* good on this server's connection only */
    efps_status_t st = efps_tp_mem_expose(s->ep, ps->pull_mr, &rkey);
    if (st != EFPS_OK)
        return st;
    efps_tp_rkey_pack(&rkey, msg + 32);
    st = efps_tp_msg_send(s->ep, msg, 32 + EFPS_TP_RKEY_PACKED);
    for (size_t i = 0; st == EFPS_OK && i < l->nkeys; i += PS_KEYS_PER_MSG) {
        size_t cnt = l->nkeys - i < PS_KEYS_PER_MSG ? l->nkeys - i : PS_KEYS_PER_MSG;
        efps__put_le32(msg, PS_MSG_KEYS);
        efps__put_le32(msg + 4, (uint32_t)cnt);
        for (size_t k = 0; k < cnt; k++) {
            uint8_t *e = msg + 8 + PS_KEY_WIRE * k;
            efps__put_le32(e, l->keys[i + k].key);
            efps__put_le64(e + 4, l->keys[i + k].n);
            efps__put_le64(e + 12, l->keys[i + k].block);
        }
        while ((st = efps_tp_msg_send(s->ep, msg, 8 + PS_KEY_WIRE * cnt)) == EFPS_ERR_NO_RESOURCE)
            progress(ps, 1, NULL);
    }
    return st;
}

static efps_status_t alloc_parts(efps_ps_t *ps)
{
    const ps_layout_t *l = &ps->layout;
    ps->part_off = calloc(l->nparts, sizeof(size_t));
    ps->slot_off = calloc(l->nparts, sizeof(size_t));
    ps->st = calloc(l->nparts, sizeof(part_state_t));
    if (!ps->part_off || !ps->slot_off || !ps->st)
        return EFPS_ERR_NOMEM;
    for (size_t p = 0; p < l->nparts; p++) {
        server_link_t *s = &ps->srv[l->parts[p].server];
        ps->part_off[p] = ps->arena_bytes;
        ps->slot_off[p] = s->slot_bytes;
        ps->arena_bytes += l->parts[p].stride;
        s->slot_bytes += l->parts[p].stride;
        const efps_optim_config_t ko = ps_key_optim(l, &l->keys[l->parts[p].key_index]);
        efps_status_t st = efps_worker_opt_create(&ko, l->parts[p].n, &ps->st[p].opt);
        if (st != EFPS_OK)
            return st;
    }
    for (int i = 0; i < ps->nservers; i++) {
        server_link_t *s = &ps->srv[i];
        size_t largest = 0;
        for (size_t p = 0; p < l->nparts; p++)
            if (l->parts[p].server == i && l->parts[p].bytes > largest)
                largest = l->parts[p].bytes;
        s->window = s->slot_bytes / PS_WINDOW_SHARE;
        if (s->window < PS_WINDOW_PARTS * largest)
            s->window = PS_WINDOW_PARTS * largest;
        if ((s->queue = calloc(l->nparts, sizeof(size_t))) == NULL)
            return EFPS_ERR_NOMEM;
    }
    ps->push_arena = efps_aligned_calloc(ps->arena_bytes);
    ps->pull_arena = efps_aligned_calloc(ps->arena_bytes);
    if (!ps->push_arena || !ps->pull_arena)
        return EFPS_ERR_NOMEM;
    efps_status_t st = efps_tp_mem_reg(ps->tp, ps->push_arena, ps->arena_bytes, 0, &ps->push_mr);
    if (st == EFPS_OK)
        st = efps_tp_mem_reg(ps->tp, ps->pull_arena, ps->arena_bytes, EFPS_TP_ACCESS_REMOTE_WRITE,
                             &ps->pull_mr);
    return st;
}

/* The partition when nobody chose one: about PS_AUTO_PARTS parts in a
 * server's share of the bytes on the wire (pipelining needs parts small
 * against what a server carries per step), at least PS_AUTO_PART_MIN of them
 * on the wire (small messages cost TCP/IP headers), a power of two of fp32
 * bytes, whole blocks. */
static size_t auto_partition(const ps_layout_t *l)
{
    const size_t probe = (size_t)1 << 20; /* wire bytes per fp32 byte, compressed */
    const double ratio = (double)efps_encoded_size(&l->optim, probe) / (4.0 * (double)probe);
    double wire = 0;
    for (size_t i = 0; i < l->nkeys; i++)
        wire += 4.0 * (double)l->keys[i].n * ratio;
    double want = wire / l->num_servers / PS_AUTO_PARTS;
    if (want < PS_AUTO_PART_MIN)
        want = PS_AUTO_PART_MIN;
    want /= ratio; /* in fp32 bytes */
    size_t p = PS_AUTO_PART_MIN;
    while (p < PS_AUTO_PART_MAX && 2.0 * (double)p <= want)
        p *= 2;
    while (l->optim.compressor == EFPS_COMP_BLOCKSIGN && p < 4 * l->optim.block)
        p *= 2; /* a part of whole blocks: the blocks stay the tensor's */
    return p;
}

static efps_status_t start(efps_ps_t *ps)
{
    if (ps->auto_partition) {
        ps->layout.partition_bytes = auto_partition(&ps->layout);
        efps_info("worker %d: parts of up to %zu fp32 bytes (EFPS_PARTITION_BYTES unset)",
                  ps->cfg.rank, ps->layout.partition_bytes);
    }
    char why[256];
    efps_status_t st = efps__layout_finish(&ps->layout, why, sizeof(why));
    if (st == EFPS_ERR_INVALID) {
        efps_error("worker %d: the declared layout: %s", ps->cfg.rank, why);
        return fail(ps, st);
    }
    if (st == EFPS_OK && ps->layout.nkeys == 0)
        st = EFPS_ERR_STATE;
    if (st == EFPS_OK)
        st = alloc_parts(ps);
    for (int i = 0; st == EFPS_OK && i < ps->nservers; i++)
        st = send_layout(ps, &ps->srv[i]);
    for (int i = 0; st == EFPS_OK && i < ps->nservers; i++) {
        uint8_t msg[EFPS_TP_MSG_MAX];
        size_t len;
        server_link_t *s = &ps->srv[i];
        st = expect_msg(ps, s, PS_MSG_READY, msg, sizeof(msg), &len);
        if (st == EFPS_OK && (len != 4 + EFPS_TP_RKEY_PACKED ||
                              efps_tp_rkey_unpack(msg + 4, &s->slot_rkey) != EFPS_OK ||
                              s->slot_rkey.length < s->slot_bytes))
            st = EFPS_ERR_PROTO;
    }
    if (st != EFPS_OK) {
        efps_error("worker %d: could not start: %s", ps->cfg.rank, efps_strerror(st));
        return fail(ps, st);
    }
    ps->started = true;
    return EFPS_OK;
}

/* ---- push and pull ------------------------------------------------------------- */

/* Writes part p's push, queued by send_part, from byte st[p].from on (0:
 * all of it; its payload size: the header alone, as efps_ps_skip sends). */
static efps_status_t post_push(efps_ps_t *ps, size_t p)
{
    const ps_part_t *part = &ps->layout.parts[p];
    server_link_t *s = &ps->srv[part->server];
    part_state_t *ps_p = &ps->st[p];
    const size_t from = ps_p->from;
    const uint32_t imm = ps_imm((uint32_t)p, ps_p->pushed - 1);
    int64_t start_ms = efps__now_ms();
    for (;;) {
        efps_status_t st =
            efps_tp_write_imm(s->ep, ps->push_mr, ps->part_off[p] + from, part->bytes - from,
                              &s->slot_rkey, ps->slot_off[p] + from, imm, p);
        if (st == EFPS_OK) {
            ps_p->flight = part->bytes - from;
            s->flight += ps_p->flight;
            return st;
        }
        if (st != EFPS_ERR_NO_RESOURCE) {
            efps_error("worker %d: push of part %zu to %s: %s", ps->cfg.rank, p,
                       efps_tp_ep_name(s->ep), efps_strerror(st));
            return fail(ps, st);
        }
        if ((st = progress(ps, 1, NULL)) != EFPS_OK)
            return st;
        if (efps__now_ms() - start_ms > ps->cfg.timeout_ms) {
            efps_error("worker %d: send queue to %s full for %d ms", ps->cfg.rank,
                       efps_tp_ep_name(s->ep), ps->cfg.timeout_ms);
            return fail(ps, EFPS_ERR_TIMEOUT);
        }
    }
}

/* Pushes leave in push order, each once the bytes a server has in flight
 * from us (posted, update not back) leave room for it in its window, or at
 * once when nothing is in flight. A server reduces a part only when all M
 * copies are in, so a worker whose connection wins more than its share of
 * the server's link (TCP is not fair over seconds) gains nothing by running
 * ahead: its updates wait for the slowest copy while the server's egress
 * idles. The window keeps the M pushes of a part close together, so the
 * server sends updates while it still receives pushes; the window's share
 * bounds how late the last update comes after the last push. force: post
 * one regardless (see wait_for). */
static efps_status_t drain(efps_ps_t *ps, bool force)
{
    for (int i = 0; i < ps->nservers; i++) {
        server_link_t *s = &ps->srv[i];
        while (s->qlen > 0) {
            const size_t p = s->queue[s->qhead];
            const size_t bytes = ps->layout.parts[p].bytes - ps->st[p].from;
            if (!force && s->flight > 0 && s->flight + bytes > s->window)
                break;
            force = false;
            efps_status_t st = post_push(ps, p);
            if (st != EFPS_OK)
                return st;
            s->qhead = (s->qhead + 1) % ps->layout.nparts;
            s->qlen--;
        }
    }
    return EFPS_OK;
}

/* Sends part p's push, or with skip its header alone, flagged: the server
 * counts it as a payload of zero bytes. It goes out now or, when the
 * server's window is full, from a later call (drain). */
static efps_status_t send_part(efps_ps_t *ps, size_t p, float lr, bool skip)
{
    part_state_t *s = &ps->st[p];
    const ps_part_t *part = &ps->layout.parts[p];
    server_link_t *srv = &ps->srv[part->server];
    uint8_t *buf = ps->push_arena + ps->part_off[p];
    ps_msg_hdr_t h = {.magic = PS_MAGIC,
                      .part = (uint32_t)p,
                      .step = s->pushed,
                      .lr = lr,
                      .payload = skip ? PS_SKIP_PAYLOAD : (uint32_t)part->payload};
    memcpy(buf + part->payload, &h, sizeof(h));
    s->from = skip ? part->payload : 0;
    s->inflight = true;
    s->lr = lr;
    s->pushed++;
    srv->queue[(srv->qhead + srv->qlen++) % ps->layout.nparts] = p;
    ps->wire_bytes += skip ? PS_TRAILER : part->bytes;
    ps->fp32_bytes += skip ? 0 : 4 * part->n;
    return drain(ps, false);
}

/* What push and skip check first; the first of either starts the run. */
static efps_status_t step_key(efps_ps_t *ps, uint32_t key, float lr, const char *what,
                              const ps_key_t **k_p)
{
    if (ps == NULL || !(lr > 0.0f) || !isfinite(lr))
        return EFPS_ERR_INVALID;
    if (ps->failed != EFPS_OK)
        return ps->failed;
    efps_status_t st = ps->started ? EFPS_OK : start(ps);
    if (st != EFPS_OK)
        return st;
    if ((*k_p = ps_layout_find(&ps->layout, key)) == NULL) {
        efps_error("%s of undeclared key %u", what, key);
        return EFPS_ERR_INVALID;
    }
    return EFPS_OK;
}

efps_status_t efps_ps_push(efps_ps_t *ps, uint32_t key, const float *grad, float lr)
{
    const ps_key_t *k = NULL;
    efps_status_t st = grad == NULL ? EFPS_ERR_INVALID : step_key(ps, key, lr, "push", &k);
    if (st != EFPS_OK)
        return st;
    for (size_t p = k->first_part; p < k->first_part + k->nparts; p++) {
        part_state_t *s = &ps->st[p];
        if (s->applied != s->pushed) {
            efps_error("push of key %u twice without a pull in between", key);
            return EFPS_ERR_STATE;
        }
        if ((st = wait_for(ps, push_done, p, "previous push")) != EFPS_OK)
            return st;
        const ps_part_t *part = &ps->layout.parts[p];
        uint8_t *buf = ps->push_arena + ps->part_off[p];
        st = efps_worker_opt_encode(s->opt, grad + part->off, lr, buf);
        if (st != EFPS_OK) {
            /* This part's optimizer state is untouched. The others must not
             * wait for it: the caller now calls efps_ps_skip for this key. */
            efps_error("push of key %u: %s (call efps_ps_skip for it)", key, efps_strerror(st));
            return st;
        }
        if ((st = send_part(ps, p, lr, false)) != EFPS_OK)
            return st;
    }
    return EFPS_OK;
}

efps_status_t efps_ps_skip(efps_ps_t *ps, uint32_t key, float lr)
{
    const ps_key_t *k = NULL;
    efps_status_t st = step_key(ps, key, lr, "skip", &k);
    if (st != EFPS_OK)
        return st;
    size_t skipped = 0;
    for (size_t p = k->first_part; p < k->first_part + k->nparts; p++) {
        part_state_t *s = &ps->st[p];
        if (s->applied != s->pushed)
            continue; /* pushed at this step before a later part failed */
        if ((st = wait_for(ps, push_done, p, "previous push")) != EFPS_OK)
            return st;
        if ((st = efps_worker_opt_skip(s->opt, lr)) != EFPS_OK)
            return st;
        if ((st = send_part(ps, p, lr, true)) != EFPS_OK)
            return st;
        skipped++;
    }
    if (skipped == 0) {
        efps_error("skip of key %u: it was pushed at this step already", key);
        return EFPS_ERR_STATE;
    }
    return EFPS_OK;
}

efps_status_t efps_ps_pull(efps_ps_t *ps, uint32_t key, float *x)
{
    if (ps == NULL || x == NULL)
        return EFPS_ERR_INVALID;
    if (ps->failed != EFPS_OK)
        return ps->failed;
    const ps_key_t *k = ps->started ? ps_layout_find(&ps->layout, key) : NULL;
    if (k == NULL) {
        efps_error("pull of key %u: %s", key, ps->started ? "not declared" : "nothing pushed yet");
        return EFPS_ERR_STATE;
    }
    for (size_t p = k->first_part; p < k->first_part + k->nparts; p++) {
        part_state_t *s = &ps->st[p];
        if (s->applied == s->pushed) {
            efps_error("pull of key %u without a push", key);
            return EFPS_ERR_STATE;
        }
        efps_status_t st = wait_for(ps, update_here, p, "waiting for an update");
        if (st != EFPS_OK)
            return st;
        const ps_part_t *part = &ps->layout.parts[p];
        const uint8_t *buf = ps->pull_arena + ps->part_off[p];
        ps_msg_hdr_t h;
        memcpy(&h, buf + part->payload, sizeof(h));
        if (h.magic != PS_MAGIC || h.part != p || h.step != s->applied || h.lr != s->lr ||
            h.payload != part->payload) {
            efps_error("worker %d: bad update header for key %u from %s", ps->cfg.rank, key,
                       efps_tp_ep_name(ps->srv[part->server].ep));
            return fail(ps, EFPS_ERR_PROTO);
        }
        st = efps_worker_opt_apply(s->opt, buf, s->lr, x + part->off);
        if (st != EFPS_OK) {
            efps_error("pull of key %u: %s", key, efps_strerror(st));
            return fail(ps, st);
        }
        s->applied++;
    }
    return EFPS_OK;
}

/* ---- the end ------------------------------------------------------------------- */

static bool all_writes_done(efps_ps_t *ps, size_t unused)
{
    (void)unused;
    for (size_t p = 0; p < ps->layout.nparts; p++)
        if (ps->st[p].inflight)
            return false;
    return true;
}

static void say_bye(efps_ps_t *ps)
{
    uint8_t msg[EFPS_TP_MSG_MAX];
    size_t len;
    if (wait_for(ps, all_writes_done, 0, "finishing pushes") != EFPS_OK)
        return;
    for (int i = 0; i < ps->nservers; i++) {
        efps__put_le32(msg, PS_MSG_BYE);
        if (efps_tp_msg_send(ps->srv[i].ep, msg, 4) != EFPS_OK)
            fail(ps, EFPS_ERR_PEER);
    }
    /* The server answers BYE once it has our BYE: after that, closing loses nothing. */
    for (int i = 0; i < ps->nservers && ps->failed == EFPS_OK; i++)
        if (expect_msg(ps, &ps->srv[i], PS_MSG_BYE, msg, sizeof(msg), &len) != EFPS_OK)
            fail(ps, EFPS_ERR_PEER);
}

efps_status_t efps_ps_finalize(efps_ps_t *ps)
{
    if (ps == NULL)
        return EFPS_OK;
    if (ps->started && ps->failed == EFPS_OK)
        say_bye(ps);
    efps_status_t st = ps->failed;
    for (int i = 0; i < ps->nservers; i++) {
        efps_tp_ep_destroy(ps->srv[i].ep);
        free(ps->srv[i].queue);
    }
    efps_tp_mem_dereg(ps->push_mr);
    efps_tp_mem_dereg(ps->pull_mr);
    efps_tp_close(ps->tp);
    for (size_t p = 0; ps->st != NULL && p < ps->layout.nparts; p++)
        efps_worker_opt_destroy(ps->st[p].opt);
    efps_aligned_free(ps->push_arena);
    efps_aligned_free(ps->pull_arena);
    free(ps->st);
    free(ps->part_off);
    free(ps->slot_off);
    free(ps->srv);
    ps_layout_free(&ps->layout);
    free(ps);
    return st;
}

void efps_ps_traffic(const efps_ps_t *ps, uint64_t *wire_bytes_p, uint64_t *fp32_bytes_p)
{
    *wire_bytes_p = ps->wire_bytes;
    *fp32_bytes_p = ps->fp32_bytes;
}

int efps_ps_rank(const efps_ps_t *ps)
{
    return ps->cfg.rank;
}

int efps_ps_num_workers(const efps_ps_t *ps)
{
    return ps->cfg.num_workers;
}

/* ---- for ckpt.c ------------------------------------------------------------------ */

efps_status_t efps__ps_between_steps(efps_ps_t *ps, bool start_now)
{
    if (ps->failed != EFPS_OK)
        return ps->failed;
    efps_status_t st = ps->started || !start_now ? EFPS_OK : start(ps);
    if (st == EFPS_OK && !ps->started) {
        efps_error("worker %d: checkpoint before the first step", ps->cfg.rank);
        st = EFPS_ERR_STATE;
    }
    for (size_t p = 0; st == EFPS_OK && p < ps->layout.nparts; p++)
        if (ps->st[p].applied != ps->st[p].pushed) {
            efps_error("worker %d: checkpoint between a push and its pull (part %zu)", ps->cfg.rank,
                       p);
            st = EFPS_ERR_STATE;
        }
    return st;
}

bool efps__ps_pushed_any(const efps_ps_t *ps)
{
    for (size_t p = 0; p < ps->layout.nparts; p++)
        if (ps->st[p].pushed > 0)
            return true;
    return false;
}

size_t efps__ps_nparts(const efps_ps_t *ps)
{
    return ps->layout.nparts;
}

efps_worker_opt_t **efps__ps_part_opt(efps_ps_t *ps, size_t part)
{
    return &ps->st[part].opt;
}

int efps__ps_nservers(const efps_ps_t *ps)
{
    return ps->nservers;
}

efps_status_t efps__ps_ask(efps_ps_t *ps, int s, const uint8_t *msg, size_t len,
                           uint32_t reply_type, uint8_t *reply, size_t cap, size_t *len_p)
{
    efps_status_t st = efps_tp_msg_send(ps->srv[s].ep, msg, len);
    if (st == EFPS_OK)
        st = expect_msg(ps, &ps->srv[s], reply_type, reply, cap, len_p);
    return st == EFPS_OK ? st : fail(ps, st);
}

/* ---- for stats.c ----------------------------------------------------------------- */

const ps_layout_t *efps__ps_layout(const efps_ps_t *ps)
{
    return ps->started ? &ps->layout : NULL;
}

void efps__ps_part_view(const efps_ps_t *ps, size_t p, ps_part_view_t *v)
{
    v->part = &ps->layout.parts[p];
    v->key = &ps->layout.keys[v->part->key_index];
    v->opt = ps->st[p].opt;
    v->pushes = ps->st[p].pushed;
    v->last_push = ps->push_arena + ps->part_off[p];
}
