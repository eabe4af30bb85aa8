/* Resolving a parameter-server configuration: the struct first, then EFPS_*
 * variables, then the launcher's variables (mpirun, Slurm, torchrun). */
#include "efps_internal/config.h"
#include "ps_int.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ps's settings (efps_internal/config.h). */
static const efps__setting_t settings[] = {
    {"EFPS_ROLE", "",
     "worker|server (unset: worker; under a launcher, ranks below the number of servers serve)"},
    {"EFPS_RANK", "", "rank of this process within its role"},
    {"EFPS_NUM_WORKERS", "", "number of worker processes"},
    {"EFPS_SERVERS", "", "server list host:port,host:port,..."},
    {"EFPS_COMPRESSOR", "blocksign", "compressor: none|sign|blocksign"},
    {"EFPS_BLOCK", "0", "elements per block; 0 = one block per tensor part"},
    {"EFPS_PARTITION_BYTES", "4194304", "largest tensor part, in fp32 bytes"},
    {"EFPS_SECRET", "",
     "shared secret for the handshake (HMAC-SHA256); required: make one with "
     "`openssl rand -hex 32`"},
    {"EFPS_INSECURE", "", "1: run without EFPS_SECRET (anyone who reaches a server can join)"},
    {"EFPS_BIND", "", "server: address:port to listen on (default: its EFPS_SERVERS entry)"},
    {"EFPS_LOGIN_TIMEOUT_MS", "5000",
     "server: a connection that has not authenticated (or, tcp, not sent the transport's "
     "hello) within this is closed"},
    {"EFPS_MAX_PENDING", "256", "server: unauthenticated connections at once, in all"},
    {"EFPS_MAX_PENDING_PER_HOST", "16",
     "server: unauthenticated connections at once from one address"},
    {"EFPS_PORT_FILE", "",
     "server: write the port it listens on to this file (useful with port 0)"},
    {"EFPS_CKPT_DIR", "",
     "server: the only directory its checkpoints go to and come from (default: its working "
     "directory); a worker names the file, never the path"},
    {NULL, NULL, NULL},
};
static efps__config_table_t table = {"ps", EFPS__LAYER_PS, settings, NULL};

/* Read by the Python binding before it loads libefps; declared here so that
 * a library it loads does not call it unknown. */
static const efps__setting_t binding_settings[] = {
    {"EFPS_LIBRARY", "",
     "python binding: path of the libefps.so to load (else build tree, prefix)"},
    {NULL, NULL, NULL},
};
static efps__config_table_t binding_table = {"bindings", EFPS__LAYER_BINDINGS, binding_settings,
                                             NULL};

__attribute__((constructor(EFPS__CONFIG_PRIORITY))) static void register_settings(void)
{
    efps__config_register(&table);
    efps__config_register(&binding_table);
}

void efps_ps_config_init(efps_ps_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->rank = -1;
    cfg->block = -1;
}

static efps_status_t parse_long(const char *var, const char *text, long lo, long hi, long *v_p)
{
    long v;
    if (!efps__parse_long(text, lo, hi, &v)) {
        efps_error("%s='%s' is not an integer in [%ld, %ld]", var, text, lo, hi);
        return EFPS_ERR_INVALID;
    }
    *v_p = v;
    return EFPS_OK;
}

/* An EFPS_* integer: the environment's value or the table's default. */
static efps_status_t env_long(const char *var, long lo, long hi, long *v_p)
{
    const char *text = efps_config_get(var);
    if (text == NULL || *text == '\0')
        return EFPS_ERR_INVALID;
    return parse_long(var, text, lo, hi, v_p);
}

/* The launchers whose rank and size variables are taken, in this order. */
static const char *const launchers[][3] = {
    {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
    {"slurm", "SLURM_PROCID", "SLURM_NTASKS"},
    {"torchrun", "RANK", "WORLD_SIZE"},
};

/* Index into launchers of the one this process runs under, or -1. */
static int launcher_index(void)
{
    for (size_t i = 0; i < sizeof(launchers) / sizeof(launchers[0]); i++)
        if (getenv(launchers[i][1]) != NULL && getenv(launchers[i][2]) != NULL)
            return (int)i;
    return -1;
}

const char *efps_ps_launcher(const char **rank_var_p, const char **size_var_p)
{
    int i = launcher_index();
    if (i < 0)
        return NULL;
    if (rank_var_p != NULL)
        *rank_var_p = launchers[i][1];
    if (size_var_p != NULL)
        *size_var_p = launchers[i][2];
    return launchers[i][0];
}

/* The launcher this process runs under, if any: rank and size. */
static const char *launcher(long *rank_p, long *size_p)
{
    const char *rv, *sv, *who = efps_ps_launcher(&rv, &sv);
    if (who == NULL)
        return NULL;
    if (parse_long(rv, getenv(rv), 0, INT_MAX, rank_p) != EFPS_OK ||
        parse_long(sv, getenv(sv), 1, INT_MAX, size_p) != EFPS_OK || *rank_p >= *size_p)
        return NULL;
    return who;
}

int ps_count_servers(const char *list)
{
    int n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    return n;
}

void ps_server_entry(const char *list, int i, char *buf, size_t cap)
{
    const char *p = list;
    for (int k = 0; k < i && p != NULL; k++) {
        p = strchr(p, ',');
        p = p != NULL ? p + 1 : NULL;
    }
    if (p == NULL)
        p = ""; /* past the last entry: empty, which every caller refuses */
    size_t len = strcspn(p, ",");
    if (len >= cap)
        len = cap - 1;
    memcpy(buf, p, len);
    buf[len] = '\0';
}

/* Entry `rank` of the server list ("host:port"), into buf: a server listens
 * on the address the workers are told, not on every interface. */
static efps_status_t server_addr(const char *list, int rank, char *buf, size_t cap)
{
    ps_server_entry(list, rank, buf, cap);
    const char *colon = strrchr(buf, ':');
    if (colon == NULL || colon == buf || strlen(buf) + 1 >= cap) {
        efps_error("EFPS_SERVERS entry %d ('%s') is not host:port", rank, buf);
        return EFPS_ERR_INVALID;
    }
    return EFPS_OK;
}

static efps_status_t resolve_role(const efps_ps_config_t *cfg, efps_ps_config_t *o, int nservers)
{
    long lrank = -1, lsize = 0, v;
    const char *who = launcher(&lrank, &lsize);
    const char *role = getenv("EFPS_ROLE");
    o->role = cfg->role;
    if (o->role == EFPS_ROLE_UNSET && role != NULL && *role != '\0') {
        if (strcmp(role, "worker") == 0)
            o->role = EFPS_ROLE_WORKER;
        else if (strcmp(role, "server") == 0)
            o->role = EFPS_ROLE_SERVER;
        else {
            efps_error("EFPS_ROLE='%s' is not worker or server", role);
            return EFPS_ERR_INVALID;
        }
    }
    int split = 0; /* launcher ranks 0..S-1 are servers, the rest workers */
    if (o->role == EFPS_ROLE_UNSET) {
        split = who != NULL;
        o->role = (split && lrank < nservers) ? EFPS_ROLE_SERVER : EFPS_ROLE_WORKER;
    }
    o->rank = cfg->rank;
    if (o->rank < 0 && env_long("EFPS_RANK", 0, INT_MAX, &v) == EFPS_OK)
        o->rank = (int)v;
    if (o->rank < 0 && who != NULL)
        o->rank = (int)(split && o->role == EFPS_ROLE_WORKER ? lrank - nservers : lrank);
    o->num_workers = cfg->num_workers;
    if (o->num_workers <= 0 && env_long("EFPS_NUM_WORKERS", 1, INT_MAX, &v) == EFPS_OK)
        o->num_workers = (int)v;
    if (o->num_workers <= 0 && who != NULL)
        o->num_workers = (int)(split ? lsize - nservers : lsize);
    if (o->rank < 0) {
        efps_error("rank unknown: set EFPS_RANK or start under mpirun, srun or torchrun");
        return EFPS_ERR_INVALID;
    }
    if (o->num_workers <= 0) {
        efps_error("number of workers unknown: set EFPS_NUM_WORKERS (or the launcher's size)");
        return EFPS_ERR_INVALID;
    }
    int limit = o->role == EFPS_ROLE_SERVER ? nservers : o->num_workers;
    if (o->rank >= limit) {
        efps_error("%s rank %d out of range: there are %d",
                   o->role == EFPS_ROLE_SERVER ? "server" : "worker", o->rank, limit);
        return EFPS_ERR_INVALID;
    }
    return EFPS_OK;
}

/* An integer setting: the struct's value when set (> 0), else the variable's. */
static efps_status_t int_setting(int set, const char *var, long lo, long hi, int *v_p)
{
    long v = set;
    efps_status_t st = EFPS_OK;
    if (set <= 0)
        st = env_long(var, lo, hi, &v);
    else if (v < lo || v > hi) {
        efps_error("configuration: %d for %s is not in [%ld, %ld]", set, var, lo, hi);
        st = EFPS_ERR_INVALID;
    }
    if (st == EFPS_OK)
        *v_p = (int)v;
    return st;
}

static bool insecure(const efps_ps_config_t *cfg)
{
    return cfg->insecure == 1 || strcmp(efps_config_get("EFPS_INSECURE"), "1") == 0;
}

/* The settings besides the job's shape: files, the RDMA device, admission. */
static efps_status_t resolve_rest(const efps_ps_config_t *cfg, efps_ps_config_t *o)
{
    o->port_file = cfg->port_file ? cfg->port_file : efps_config_get("EFPS_PORT_FILE");
    o->ib_dev = cfg->ib_dev ? cfg->ib_dev : efps_config_get("EFPS_IB_DEV");
    o->ib_gid = cfg->ib_gid ? cfg->ib_gid : efps_config_get("EFPS_IB_GID");
    o->cpu_affinity = cfg->cpu_affinity ? cfg->cpu_affinity : efps_config_get("EFPS_CPU_AFFINITY");
    o->insecure = insecure(cfg);
    o->ckpt_dir = cfg->ckpt_dir ? cfg->ckpt_dir : efps_config_get("EFPS_CKPT_DIR");
    if (o->role != EFPS_ROLE_SERVER)
        return EFPS_OK;
    efps_status_t st = int_setting(cfg->login_timeout_ms, "EFPS_LOGIN_TIMEOUT_MS", 1, INT_MAX,
                                   &o->login_timeout_ms);
    if (st == EFPS_OK)
        st = int_setting(cfg->max_pending, "EFPS_MAX_PENDING", 1, 1 << 20, &o->max_pending);
    if (st == EFPS_OK)
        st = int_setting(cfg->max_pending_per_host, "EFPS_MAX_PENDING_PER_HOST", 1, 1 << 20,
                         &o->max_pending_per_host);
    return st;
}

efps_status_t efps_ps_config_resolve(const efps_ps_config_t *cfg, efps_ps_config_t *out_p)
{
    efps_ps_config_t def, o;
    if (cfg == NULL) {
        efps_ps_config_init(&def);
        cfg = &def;
    }
    efps_config_check_env();
    o = *cfg;
    o.servers = cfg->servers ? cfg->servers : efps_config_get("EFPS_SERVERS");
    if (o.servers == NULL || *o.servers == '\0') {
        efps_error("no servers: set EFPS_SERVERS=host:port[,host:port...]");
        return EFPS_ERR_INVALID;
    }
    const int nservers = ps_count_servers(o.servers);
    efps_status_t st = resolve_role(cfg, &o, nservers);
    if (st != EFPS_OK)
        return st;
    o.transport = cfg->transport ? cfg->transport : efps_config_get("EFPS_TRANSPORT");
    o.secret = cfg->secret ? cfg->secret : efps_config_get("EFPS_SECRET");
    o.compressor = cfg->compressor ? cfg->compressor : efps_config_get("EFPS_COMPRESSOR");
    efps_compressor_t comp;
    if (efps_compressor_parse(o.compressor, &comp) != EFPS_OK) {
        efps_error("compressor '%s' is not none, sign or blocksign", o.compressor);
        return EFPS_ERR_INVALID;
    }
    long v;
    if (o.block < 0) {
        if ((st = env_long("EFPS_BLOCK", 0, LONG_MAX, &v)) != EFPS_OK)
            return st;
        o.block = v;
    }
    if (o.partition_bytes == 0) {
        if ((st = env_long("EFPS_PARTITION_BYTES", 64, LONG_MAX, &v)) != EFPS_OK)
            return st;
        o.partition_bytes = (size_t)v;
    }
    if (o.timeout_ms <= 0) {
        if ((st = env_long("EFPS_TIMEOUT_MS", 1, INT_MAX, &v)) != EFPS_OK)
            return st;
        o.timeout_ms = (int)v;
    }
    if (o.role == EFPS_ROLE_SERVER && o.bind == NULL) {
        const char *b = efps_config_get("EFPS_BIND");
        static __thread char addr[256];
        if (b != NULL && *b != '\0')
            o.bind = b;
        else if ((st = server_addr(o.servers, o.rank, addr, sizeof(addr))) != EFPS_OK)
            return st;
        else
            o.bind = addr;
    }
    if ((st = resolve_rest(cfg, &o)) != EFPS_OK)
        return st;
    *out_p = o;
    return EFPS_OK;
}

efps_status_t efps__ps_limits(const efps_ps_config_t *cfg, efps__ps_limits_t *lim_p)
{
    efps__ps_limits_t lim;
    efps_status_t st =
        int_setting(cfg->login_timeout_ms, "EFPS_LOGIN_TIMEOUT_MS", 1, INT_MAX, &lim.login_ms);
    if (st == EFPS_OK)
        st = int_setting(cfg->max_pending, "EFPS_MAX_PENDING", 1, 1 << 20, &lim.max_pending);
    if (st == EFPS_OK)
        st = int_setting(cfg->max_pending_per_host, "EFPS_MAX_PENDING_PER_HOST", 1, 1 << 20,
                         &lim.max_per_host);
    if (st == EFPS_OK)
        *lim_p = lim;
    return st;
}

efps_status_t efps__ps_check_secret(const efps_ps_config_t *cfg, const char *who)
{
    if (cfg->secret != NULL && *cfg->secret != '\0')
        return EFPS_OK;
    if (insecure(cfg)) {
        efps_warn("%s: INSECURE: no EFPS_SECRET and EFPS_INSECURE=1: anyone who can reach the "
                  "servers can join this job, read the model and write into it",
                  who);
        return EFPS_OK;
    }
    efps_error("%s: no shared secret: set EFPS_SECRET to the same random string on every "
               "server and worker (make one with `openssl rand -hex 32`), or EFPS_INSECURE=1 "
               "to run without authentication on a network you trust",
               who);
    return EFPS_ERR_AUTH;
}
