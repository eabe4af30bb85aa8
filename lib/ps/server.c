/* The server side of the parameter server: efps_server_create/run/stop/destroy.
 *
 * One loop, one thread: admission (server_admit.c) accepts and authenticates
 * workers and takes their layouts; control messages (server_msg.c); the data
 * path (server_data.c) reduces and broadcasts. */
#include "server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the loop ---------------------------------------------------------------------- */

static efps_status_t turn(server_t *sv, bool *any_p)
{
    efps_tp_conn_req_t *req;
    efps_status_t st;
    efps__srv_sweep(sv);
    while (efps_tp_get_request(sv->listener, 0, &req) == EFPS_OK) {
        *any_p = true;
        if ((st = efps__srv_accept(sv, req)) != EFPS_OK)
            return st;
    }
    if ((st = efps__srv_drain_msgs(sv, any_p)) != EFPS_OK)
        return st;
    efps_tp_cqe_t cqes[64];
    int n = 0;
    if ((st = efps_tp_poll(sv->tp, cqes, 64, *any_p ? 0 : 1, &n)) != EFPS_OK)
        return st;
    for (int i = 0; i < n; i++) {
        st = efps__srv_on_cqe(sv, &cqes[i]);
        if (st != EFPS_OK && st != EFPS_ERR_NO_RESOURCE)
            return st;
    }
    *any_p |= n > 0;
    return efps__srv_retry_pending(sv);
}

/* port_file (EFPS_PORT_FILE): tells a launcher which port "port 0" became. Written to a
 * temporary name and renamed, so a reader never sees half a number. */
static efps_status_t write_port_file(const server_t *sv)
{
    const char *path = sv->cfg.port_file;
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
    int64_t last = efps__now_ms();
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
            last = efps__now_ms();
            continue;
        }
        int ready = 0;
        for (int r = 0; r < sv->M; r++)
            ready += sv->by_rank[r] != NULL && sv->by_rank[r]->state >= W_READY;
        if (sv->done == sv->M && efps__now_ms() - last > sv->cfg.timeout_ms) {
            efps_warn("server %d: every worker said goodbye but %d did not close within %d ms",
                      sv->cfg.rank, sv->M - sv->gone, sv->cfg.timeout_ms);
            return EFPS_OK;
        }
        if (ready < sv->M && efps__now_ms() - last > sv->cfg.timeout_ms)
            return efps__srv_join_failed(sv, ready);
    }
    return EFPS_OK;
}

/* After a fatal error: keep the transport going briefly so that a REFUSE or
 * other last message already queued reaches its worker before we close. */
static void linger(server_t *sv, int ms)
{
    const int64_t end = efps__now_ms() + ms;
    while (efps__now_ms() < end) {
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
        efps__srv_conn_free(sv->conns[i]);
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
    free(sv->missing_why);
    free(sv->noticed);
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
        (st = efps__ps_limits(&sv->cfg, &sv->lim)) != EFPS_OK)
        return st;
    /* The transport drops a connection that never says hello by the same
     * login deadline this server gives an unauthenticated peer. */
    efps_tp_attr_t attr = {.timeout_ms = (uint32_t)sv->cfg.timeout_ms,
                           .hello_timeout_ms = (uint32_t)sv->lim.login_ms,
                           .device = sv->cfg.ib_dev,
                           .gid = sv->cfg.ib_gid,
                           .cpu_affinity = sv->cfg.cpu_affinity};
    sv->by_rank = calloc((size_t)sv->M, sizeof(*sv->by_rank));
    sv->inputs = calloc((size_t)sv->M, sizeof(*sv->inputs));
    sv->missing_why = calloc((size_t)sv->M, sizeof(*sv->missing_why));
    sv->noticed = calloc((size_t)sv->M, sizeof(*sv->noticed));
    if (!sv->by_rank || !sv->inputs || !sv->missing_why || !sv->noticed)
        st = EFPS_ERR_NOMEM;
    else if ((st = efps_tp_open(sv->cfg.transport, &attr, &sv->tp)) == EFPS_OK)
        st = efps_tp_listen(sv->tp, sv->cfg.bind, &sv->listener);
    if (st != EFPS_OK) {
        efps_error("server %d: cannot listen on %s: %s", sv->cfg.rank, sv->cfg.bind,
                   efps_strerror(st));
        return st;
    }
    return write_port_file(sv);
}

/* "compressor blocksign (given by --compressor)" or "" where the workers decide. */
static int given_one(char *buf, size_t cap, const char *what, const char *value, const char *by)
{
    return by == NULL ? 0 : snprintf(buf, cap, ", %s %s (given by %s)", what, value, by);
}

static void describe(const server_t *sv, char *buf, size_t cap)
{
    char host[EFPS_TP_NAME_MAX], dev[96] = "", given[192] = "", num[2][32];
    efps__srv_host_of(sv->cfg.bind, host, sizeof(host));
    if (strcmp(efps_tp_name(sv->tp), "verbs") == 0) {
        efps_tp_attr_t attr;
        efps_tp_query(sv->tp, &attr);
        const char *d = attr.device ? attr.device : efps_config_get("EFPS_IB_DEV");
        snprintf(dev, sizeof(dev), " (device %s)",
                 d && *d ? d : "the one the address is on: EFPS_IB_DEV unset");
    }
    snprintf(num[0], sizeof(num[0]), "%zu", sv->optim.block);
    snprintf(num[1], sizeof(num[1]), "%zu", sv->cfg.partition_bytes);
    int n = given_one(given, sizeof(given), "compressor",
                      efps_compressor_name(sv->optim.compressor), sv->set_comp);
    n += given_one(given + n, sizeof(given) - (size_t)n, "block", num[0], sv->set_block);
    given_one(given + n, sizeof(given) - (size_t)n, "partition bytes", num[1], sv->set_part);
    snprintf(buf, cap,
             "server %d listening on %s:%u, transport %s%s, %d worker%s expected, "
             "layout from the workers%s%s",
             sv->cfg.rank, host, efps_tp_listener_port(sv->listener), efps_tp_name(sv->tp), dev,
             sv->M, ps_s(sv->M), given[0] ? " except" : "", given[0] ? given + 1 : "");
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
    if (st == EFPS_OK) {
        char line[512];
        describe(sv, line, sizeof(line));
        efps_info("%s", line);
    }
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

void efps_server_describe(const efps_server_t *srv, char *buf, size_t cap)
{
    if (buf != NULL && cap > 0 && srv == NULL)
        buf[0] = '\0';
    else if (buf != NULL && cap > 0)
        describe(&srv->sv, buf, cap);
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
        efps_info("server %d: all %d worker%s finished", sv->cfg.rank, sv->M, ps_s(sv->M));
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
