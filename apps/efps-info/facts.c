/* The facts efps-info reports: versions, the configuration in effect and
 * where each value came from, the CPU and its kernel variant, the topology. */
#include "info.h"

#include "efps/compress.h"
#include "efps/transport.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef EFPS_HAVE_HWLOC
#include <hwloc.h>
#endif

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_last[512];

static void on_log(efps_log_level_t level, const char *line, void *arg)
{
    (void)arg;
    if (level > EFPS_LOG_WARN)
        return;
    /* "file.c:123: text": the report shows the text. */
    const char *text = strstr(line, ": ");
    pthread_mutex_lock(&log_lock);
    snprintf(log_last, sizeof(log_last), "%s", text != NULL ? text + 2 : line);
    pthread_mutex_unlock(&log_lock);
}

void info_log_install(void)
{
    efps_log_set_handler(on_log, NULL);
}

void info_log_reset(void)
{
    pthread_mutex_lock(&log_lock);
    log_last[0] = '\0';
    pthread_mutex_unlock(&log_lock);
}

const char *info_log_last(void)
{
    return log_last;
}

/* What "auto" picks: verbs when a device (EFPS_IB_DEV's, if set) has an
 * active port, as efps_tp_open's probe decides. */
static const char *effective_transport(const char *name)
{
    if (name == NULL || strcmp(name, "auto") != 0)
        return name;
    efps_tp_port_info_t ports[32];
    size_t n = 0;
    const char *dev = efps_config_get("EFPS_IB_DEV");
    if (efps_tp_ports(ports, 32, &n) != EFPS_OK)
        return "tcp";
    for (size_t i = 0; i < n && i < 32; i++)
        if (strcmp(ports[i].state, "active") == 0 &&
            (*dev == '\0' || !strcmp(dev, ports[i].device)))
            return "verbs";
    return "tcp";
}

void info_resolve(info_config_t *ic)
{
    memset(ic, 0, sizeof(*ic));
    info_log_reset();
    ic->resolved = efps_ps_config_resolve(NULL, &ic->cfg) == EFPS_OK;
    if (!ic->resolved) {
        snprintf(ic->why, sizeof(ic->why), "%s", info_log_last());
        /* Outside a job: the settings that do not depend on the job. */
        efps_ps_config_init(&ic->cfg);
        ic->cfg.transport = efps_config_get("EFPS_TRANSPORT");
        ic->cfg.servers = efps_config_get("EFPS_SERVERS");
        ic->cfg.compressor = efps_config_get("EFPS_COMPRESSOR");
    }
    ic->transport = effective_transport(ic->cfg.transport);
}

void info_version(out_t *o)
{
    out_str(o, "version", efps_version());
    out_int(o, "version_number", efps_version_number());
    out_str(o, "headers_version", EFPS_VERSION_STRING);
    out_int(o, "protocol_version", efps_ps_protocol_version());
}

/* The value in effect of variable name and where it came from. */
static void value_of(const info_config_t *ic, const char *name, const char *deflt, char *val,
                     size_t cap, char *src, size_t scap)
{
    const char *env = getenv(name), *rv = NULL, *sv = NULL;
    const char *who = efps_ps_launcher(&rv, &sv);
    bool from_launcher = who != NULL && ic->resolved && (env == NULL || *env == '\0');
    if (from_launcher && strcmp(name, "EFPS_RANK") == 0) {
        snprintf(val, cap, "%d", ic->cfg.rank);
        snprintf(src, scap, "launcher %s (%s)", who, rv);
    } else if (from_launcher && strcmp(name, "EFPS_NUM_WORKERS") == 0) {
        snprintf(val, cap, "%d", ic->cfg.num_workers);
        snprintf(src, scap, "launcher %s (%s)", who, sv);
    } else if (from_launcher && strcmp(name, "EFPS_ROLE") == 0) {
        snprintf(val, cap, "%s", ic->cfg.role == EFPS_ROLE_SERVER ? "server" : "worker");
        snprintf(src, scap, "launcher %s (%s below the number of servers: server)", who, rv);
    } else if (env != NULL && *env != '\0') {
        snprintf(val, cap, "%s", env);
        snprintf(src, scap, "environment");
    } else {
        snprintf(val, cap, "%s", deflt);
        snprintf(src, scap, "default");
    }
    if (strcmp(name, "EFPS_SECRET") == 0 && *val != '\0') /* never print a secret */
        snprintf(val, cap, "(set, %zu characters)", strlen(env));
}

void info_config(out_t *o, const info_config_t *ic)
{
    out_obj(o, "config");
    out_text(o, "  %-26s %-20s %s\n", "variable", "value", "from");
    const char *layer = "";
    for (const efps_config_var_t *v = efps_config_vars(); v->name != NULL; v++) {
        char val[256], src[128];
        value_of(ic, v->name, v->deflt, val, sizeof(val), src, sizeof(src));
        if (o->json) {
            out_obj(o, v->name);
            out_str(o, "value", val);
            out_str(o, "source", src);
            out_str(o, "layer", v->layer);
            out_close(o);
        } else {
            if (strcmp(layer, v->layer) != 0)
                out_text(o, "  [%s]\n", v->layer);
            layer = v->layer;
            out_text(o, "  %-26s %-20s %s\n", v->name, *val ? val : "(unset)", src);
        }
    }
    out_close(o);
    out_obj(o, "job");
    out_bool(o, "resolved", ic->resolved);
    if (ic->resolved) {
        out_str(o, "role", ic->cfg.role == EFPS_ROLE_SERVER ? "server" : "worker");
        out_int(o, "rank", ic->cfg.rank);
        out_int(o, "num_workers", ic->cfg.num_workers);
    } else {
        out_str(o, "why", ic->why);
    }
    out_str(o, "transport", ic->transport);
    out_close(o);
}

void info_cpu(out_t *o)
{
    static const struct {
        unsigned bit;
        const char *name;
    } feats[] = {{EFPS_CPU_AVX2, "avx2"},
                 {EFPS_CPU_AVX512F, "avx512f"},
                 {EFPS_CPU_AVX512BW, "avx512bw"},
                 {EFPS_CPU_AVX512VL, "avx512vl"},
                 {EFPS_CPU_AVX512DQ, "avx512dq"}};
    unsigned f = efps_cpu_features();
    out_obj(o, "cpu");
    out_arr(o, "features");
    for (size_t i = 0; i < sizeof(feats) / sizeof(feats[0]); i++)
        if (f & feats[i].bit)
            out_str(o, NULL, feats[i].name);
    out_close(o);
    out_str(o, "best_kernel", efps_simd_name(efps_cpu_best_simd()));
    info_log_reset();
    efps_simd_t used = efps_compress_simd();
    out_str(o, "kernel", efps_simd_name(used));
    const char *want = getenv("EFPS_SIMD");
    out_str(o, "kernel_from", want != NULL && *want != '\0' ? "EFPS_SIMD" : "best the CPU has");
    if (*info_log_last() != '\0')
        out_str(o, "kernel_problem", info_log_last());
    out_close(o);
}

#ifdef EFPS_HAVE_HWLOC
static int count(hwloc_topology_t topo, hwloc_obj_type_t type)
{
    int n = hwloc_get_nbobjs_by_type(topo, type);
    return n < 0 ? 0 : n;
}
#endif

void info_topology(out_t *o)
{
    out_obj(o, "topology");
#ifdef EFPS_HAVE_HWLOC
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) == 0 && hwloc_topology_load(topo) == 0) {
        out_int(o, "packages", count(topo, HWLOC_OBJ_PACKAGE));
        out_int(o, "numa_nodes", count(topo, HWLOC_OBJ_NUMANODE));
        out_int(o, "cores", count(topo, HWLOC_OBJ_CORE));
        out_int(o, "pus", count(topo, HWLOC_OBJ_PU));
        char *allowed = NULL;
        hwloc_bitmap_list_asprintf(&allowed, hwloc_topology_get_allowed_cpuset(topo));
        out_str(o, "allowed_cpus", allowed);
        free(allowed);
        hwloc_topology_destroy(topo);
    } else {
        out_str(o, "problem", "hwloc cannot read this machine's topology");
    }
#else
    out_str(o, "problem", "efps-info built without hwloc (EFPS_WITH_HWLOC=OFF or not found)");
#endif
    out_close(o);
}
