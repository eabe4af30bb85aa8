/* efps-info's preflight: the errors people hit with RDMA stacks, found
 * before a job starts, each with its fix. Locked memory against what the
 * model needs, a test registration of that size, rdma_cm resolution and
 * tcp reachability of every server. */
#include "info.h"

#include "efps/transport.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define CAP_IPC_LOCK 14

void info_check(out_t *o, info_tally_t *t, const char *name, const char *status, const char *detail,
                const char *fix)
{
    bool ok = strcmp(status, "ok") == 0;
    t->ok += ok;
    t->warned += strcmp(status, "warn") == 0;
    t->failed += strcmp(status, "fail") == 0;
    t->skipped += strcmp(status, "skip") == 0;
    if (!o->json) {
        out_text(o, "  %-5s %s: %s\n", status, name, detail);
        if (!ok && fix != NULL && *fix != '\0')
            out_text(o, "        fix: %s\n", fix);
        return;
    }
    out_obj(o, NULL);
    out_str(o, "check", name);
    out_str(o, "status", status);
    out_str(o, "detail", detail);
    out_str(o, "fix", ok ? NULL : fix);
    out_close(o);
}

/* Whether this process may lock memory beyond RLIMIT_MEMLOCK (root). */
static bool has_ipc_lock(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long eff = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "CapEff: %llx", &eff) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return (eff >> CAP_IPC_LOCK) & 1;
}

static long env_long(const char *name)
{
    return strtol(efps_config_get(name), NULL, 10);
}

/* Bytes a process of this job registers for a model of params fp32
 * parameters: a worker its push and pull arenas of the packed model, a
 * server its share (1/S) once per worker plus two broadcast buffers. */
static uint64_t registered_bytes(const info_config_t *ic, uint64_t params)
{
    efps_optim_config_t oc = {.compressor = EFPS_COMP_BLOCKSIGN};
    efps_compressor_parse(ic->cfg.compressor, &oc.compressor);
    uint64_t part = (uint64_t)env_long("EFPS_PARTITION_BYTES") / 4, packed = 0;
    oc.block = (size_t)env_long("EFPS_BLOCK");
    if (part == 0)
        part = 1u << 20;
    for (uint64_t done = 0; done < params; done += part) /* one message per part */
        packed += efps_encoded_size(&oc, (size_t)(params - done < part ? params - done : part));
    if (ic->resolved && ic->cfg.role == EFPS_ROLE_SERVER) {
        int S = 1;
        for (const char *p = ic->cfg.servers; *p; p++)
            S += *p == ',';
        return (packed / (uint64_t)S + 1) * (uint64_t)(ic->cfg.num_workers + 2);
    }
    return 2 * packed;
}

/* The bytes the checks compare with, and the sentence saying what they are. */
static uint64_t model_bytes(const info_opts_t *opts, const info_config_t *ic, char *what,
                            size_t cap)
{
    if (opts->model_bytes > 0) {
        snprintf(what, cap, "%" PRIu64 " bytes (--model-bytes)", opts->model_bytes);
        return opts->model_bytes;
    }
    uint64_t params = opts->params, b;
    if (params == 0)
        params = (uint64_t)env_long("EFPS_PARTITION_BYTES") / 4;
    b = registered_bytes(ic, params);
    snprintf(what, cap, "%" PRIu64 " bytes, what a %s registers for %" PRIu64 " parameters%s", b,
             ic->resolved && ic->cfg.role == EFPS_ROLE_SERVER ? "server" : "worker", params,
             opts->params ? " (--params)"
                          : " (one tensor part, EFPS_PARTITION_BYTES: the least a job needs; "
                            "give --params or --model-bytes for your model)");
    return b;
}

static void check_memlock(out_t *o, info_tally_t *t, const info_config_t *ic, uint64_t need)
{
    char what[64];
    snprintf(what, sizeof(what), "%" PRIu64 " bytes needed", need);
    struct rlimit rl;
    char detail[512], fix[512];
    getrlimit(RLIMIT_MEMLOCK, &rl);
    char lim[64];
    if (rl.rlim_cur == RLIM_INFINITY)
        snprintf(lim, sizeof(lim), "unlimited");
    else
        snprintf(lim, sizeof(lim), "%llu KiB", (unsigned long long)rl.rlim_cur / 1024);
    snprintf(fix, sizeof(fix),
             "raise the locked-memory limit for the job: `ulimit -l unlimited` (hard limit: "
             "/etc/security/limits.conf `* - memlock unlimited`; systemd LimitMEMLOCK=infinity; "
             "docker --ulimit memlock=-1)");
    if (strcmp(ic->transport, "verbs") != 0) {
        snprintf(detail, sizeof(detail), "ulimit -l %s; not needed: transport %s pins no memory",
                 lim, ic->transport);
        info_check(o, t, "memlock", "ok", detail, NULL);
    } else if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) {
        snprintf(detail, sizeof(detail), "ulimit -l %s >= %s", lim, what);
        info_check(o, t, "memlock", "ok", detail, NULL);
    } else if (has_ipc_lock()) {
        snprintf(detail, sizeof(detail),
                 "ulimit -l %s < %s, but this process has CAP_IPC_LOCK (root): the limit does "
                 "not apply to it (it will to a job run as another user)",
                 lim, what);
        info_check(o, t, "memlock", "ok", detail, NULL);
    } else {
        snprintf(detail, sizeof(detail),
                 "ulimit -l %s < %s: ibv_reg_mr will fail (ENOMEM / 'Cannot allocate memory')", lim,
                 what);
        info_check(o, t, "memlock", "fail", detail, fix);
    }
}

static void check_reg_mr(out_t *o, info_tally_t *t, const info_config_t *ic, uint64_t need)
{
    char detail[512];
    if (strcmp(ic->transport, "verbs") != 0) {
        info_check(o, t, "reg_mr", "skip", "no RDMA device in use (transport tcp)", NULL);
        return;
    }
    efps_tp_ctx_t *ctx = NULL;
    efps_tp_mr_t *mr = NULL;
    void *buf = NULL;
    info_log_reset();
    efps_status_t st = efps_tp_open("verbs", NULL, &ctx);
    if (st == EFPS_OK && (buf = efps_aligned_alloc((size_t)need)) == NULL)
        st = EFPS_ERR_NOMEM;
    if (st == EFPS_OK)
        st = efps_tp_mem_reg(ctx, buf, (size_t)need, EFPS_TP_ACCESS_REMOTE_WRITE, &mr);
    if (st == EFPS_OK) {
        snprintf(detail, sizeof(detail), "registered %" PRIu64 " bytes with ibv_reg_mr", need);
        info_check(o, t, "reg_mr", "ok", detail, NULL);
    } else {
        snprintf(detail, sizeof(detail), "ibv_reg_mr of %" PRIu64 " bytes: %s%s%s", need,
                 efps_strerror(st), *info_log_last() ? ": " : "", info_log_last());
        info_check(o, t, "reg_mr", "fail", detail,
                   "raise ulimit -l (see memlock); check the device's max_mr_size "
                   "(ibv_devinfo -v) and free memory; EFPS_IB_DEV names the device");
    }
    efps_tp_mem_dereg(mr);
    efps_aligned_free(buf);
    efps_tp_close(ctx);
}

/* A job without a secret refuses to start (unless EFPS_INSECURE=1). */
static void check_secret(out_t *o, info_tally_t *t)
{
    const char *secret = efps_config_get("EFPS_SECRET");
    if (*secret != '\0')
        info_check(o, t, "secret", "ok", "EFPS_SECRET is set", NULL);
    else if (strcmp(efps_config_get("EFPS_INSECURE"), "1") == 0)
        info_check(o, t, "secret", "warn",
                   "no EFPS_SECRET, EFPS_INSECURE=1: anyone who reaches a server can join",
                   "set EFPS_SECRET to the same random string everywhere (openssl rand -hex 32)");
    else
        info_check(o, t, "secret", "fail",
                   "no EFPS_SECRET: servers and workers refuse to start without one",
                   "set EFPS_SECRET to the same random string on every server and worker "
                   "(openssl rand -hex 32), or EFPS_INSECURE=1 on a network you trust");
}

static void check_server(out_t *o, info_tally_t *t, const info_config_t *ic, const char *entry,
                         int timeout_ms)
{
    char name[300], detail[600], fix[512], dev[64];
    uint8_t port = 0;
    snprintf(name, sizeof(name), "rdma_cm %s", entry);
    if (strcmp(ic->transport, "verbs") == 0) {
        info_log_reset();
        efps_status_t st = efps_tp_resolve(entry, timeout_ms, dev, sizeof(dev), &port);
        if (st == EFPS_OK) {
            snprintf(detail, sizeof(detail), "resolves to %s port %u", dev, port);
            info_check(o, t, name, "ok", detail, NULL);
        } else {
            snprintf(detail, sizeof(detail), "%s", info_log_last());
            info_check(o, t, name, "fail", detail,
                       "use the IP address of an RDMA interface (rdma link show; ip addr show "
                       "dev <netdev>) on a network this machine's RDMA device reaches (ip route "
                       "get ADDR)");
        }
        snprintf(name, sizeof(name), "tcp %s", entry);
        info_check(o, t, name, "skip", "transport verbs: servers listen with rdma_cm, not tcp",
                   NULL);
        return;
    }
    info_check(o, t, name, "skip", "transport tcp: rdma_cm not used", NULL);
    snprintf(name, sizeof(name), "tcp %s", entry);
    bool ok = info_tcp_connect(entry, timeout_ms, detail, sizeof(detail), fix, sizeof(fix));
    info_check(o, t, name, ok ? "ok" : "fail", detail, fix);
}

void info_preflight(out_t *o, const info_opts_t *opts, const info_config_t *ic, info_tally_t *t)
{
    char what[400];
    uint64_t need = model_bytes(opts, ic, what, sizeof(what));
    out_obj(o, "preflight");
    out_int(o, "model_bytes", (long long)need);
    out_str(o, "model_bytes_are", what);
    out_arr(o, "checks");
    int unknown;
    info_log_reset();
    if ((unknown = efps_config_check_env()) > 0)
        info_check(o, t, "environment", "warn", info_log_last(),
                   "unset it, or spell it as docs/configuration.md does");
    if (!ic->resolved && strstr(ic->why, "rank unknown") == NULL &&
        strstr(ic->why, "no servers") == NULL && strstr(ic->why, "number of workers") == NULL)
        info_check(o, t, "config", "fail", ic->why, "fix the variable it names");
    if (ic->cfg.servers != NULL && *ic->cfg.servers != '\0')
        check_secret(o, t);
    check_memlock(o, t, ic, need);
    check_reg_mr(o, t, ic, need);
    const char *servers = ic->cfg.servers;
    if (servers == NULL || *servers == '\0') {
        info_check(o, t, "servers", "skip", "EFPS_SERVERS is not set: no server to check", NULL);
    } else {
        for (const char *p = servers; *p != '\0';) {
            char entry[280];
            size_t len = strcspn(p, ",");
            snprintf(entry, sizeof(entry), "%.*s", (int)len, p);
            check_server(o, t, ic, entry, opts->timeout_ms);
            p += len + (p[len] == ',');
        }
    }
    out_close(o);
    out_close(o);
}
