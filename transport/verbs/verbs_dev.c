/* Which device, port and GID the verbs transport uses, and where its progress
 * thread runs.
 *
 * Device: EFPS_IB_DEV (attr->device) or the first device with an active
 * port. rdma_cm picks the device from the IP address of each connection, so
 * every cm id is checked against ours (efps__verbs_check_id): an address on
 * another device is an error that says which device it is on.
 * GID: rdma_cm derives it from the address too (RoCE v2 by default, the
 * kernel's default_roce_mode). EFPS_IB_GID, when set, must be the index that
 * the address maps to; either way the chosen index and its type are logged.
 * Placement (EFPS_CPU_AFFINITY): auto pins the progress thread to the cores
 * near the device (hwloc_ibv_get_device_cpuset: its NUMA node), <core> to
 * that core, none leaves it alone. The cpuset and NUMA node are logged: the
 * application should run its compression threads there too (for instance
 * `numactl -N <node>` or `hwloc-bind`), so the kernels write the registered
 * buffers from the node the NIC reads them from. */
#include "verbs.h"

#include <errno.h>
#include <hwloc.h>
#include <limits.h>
#include <hwloc/openfabrics-verbs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The first active port of a device, or 0. */
static uint8_t active_port(struct ibv_context *verbs, struct ibv_device_attr *attr_p)
{
    struct ibv_device_attr attr;
    if (ibv_query_device(verbs, &attr) != 0)
        return 0;
    if (attr_p != NULL)
        *attr_p = attr;
    for (uint8_t p = 1; p <= attr.phys_port_cnt; p++) {
        struct ibv_port_attr pa;
        if (ibv_query_port(verbs, p, &pa) == 0 && pa.state == IBV_PORT_ACTIVE)
            return p;
    }
    return 0;
}

efps_status_t efps__verbs_probe(const efps_tp_attr_t *attr)
{
    int n = 0;
    efps_status_t status = EFPS_ERR_UNSUPPORTED;
    struct ibv_device **list = ibv_get_device_list(&n);
    for (int i = 0; list != NULL && i < n && status != EFPS_OK; i++) {
        if (attr->device != NULL && strcmp(ibv_get_device_name(list[i]), attr->device) != 0)
            continue;
        struct ibv_context *verbs = ibv_open_device(list[i]);
        if (verbs == NULL)
            continue;
        if (active_port(verbs, NULL) != 0)
            status = EFPS_OK;
        ibv_close_device(verbs);
    }
    if (list != NULL)
        ibv_free_device_list(list);
    return status;
}

/* "rxe0 (no active port), mlx5_0" for messages. */
static void describe(struct ibv_context **list, int n, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && len < cap; i++) {
        bool up = active_port(list[i], NULL) != 0;
        len +=
            (size_t)snprintf(buf + len, cap - len, "%s%s%s", i ? ", " : "",
                             ibv_get_device_name(list[i]->device), up ? "" : " (no active port)");
    }
}

/* text: attr->gid (EFPS_IB_GID unless the program set it). */
static efps_status_t pick_gid(verbs_ctx_t *ctx, const char *text)
{
    ctx->gid_index = -1;
    if (text == NULL || *text == '\0')
        return EFPS_OK;
    long idx;
    struct ibv_gid_entry entry;
    if (!efps__parse_long(text, 0, 0xffff, &idx) ||
        ibv_query_gid_ex(ctx->verbs, ctx->port, (uint32_t)idx, &entry, 0) != 0) {
        efps_error("verbs: EFPS_IB_GID='%s' is not a valid GID index of %s port %u", text,
                   ctx->dev_name, ctx->port);
        return EFPS_ERR_INVALID;
    }
    ctx->gid_index = (int)idx;
    return EFPS_OK;
}

/* aff: attr->cpu_affinity (EFPS_CPU_AFFINITY unless the program set it). */
static efps_status_t pick_placement(verbs_ctx_t *ctx, const char *aff)
{
    if (strcasecmp(aff, "none") == 0) {
        efps_info("verbs: progress thread not pinned (EFPS_CPU_AFFINITY=none)");
        return EFPS_OK;
    }
    long core = -1;
    if (strcasecmp(aff, "auto") != 0) {
        if (!efps__parse_long(aff, 0, LONG_MAX, &core)) {
            efps_error("verbs: EFPS_CPU_AFFINITY='%s': expected auto, none or a core number", aff);
            return EFPS_ERR_INVALID;
        }
        if (core > 65535) {
            efps_error("verbs: EFPS_CPU_AFFINITY=%ld: no such core here", core);
            return EFPS_ERR_INVALID;
        }
    }
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0) {
        efps_warn("verbs: hwloc cannot read the machine's topology: progress thread not pinned");
        return EFPS_OK;
    }
    hwloc_cpuset_t set = hwloc_bitmap_alloc();
    hwloc_nodeset_t nodes = hwloc_bitmap_alloc();
    if (core < 0) {
        if (hwloc_ibv_get_device_cpuset(topo, ctx->verbs->device, set) != 0 ||
            hwloc_bitmap_iszero(set))
            hwloc_bitmap_copy(set, hwloc_topology_get_topology_cpuset(topo));
    } else if (hwloc_bitmap_isset(hwloc_topology_get_allowed_cpuset(topo), (unsigned)core)) {
        hwloc_bitmap_only(set, (unsigned)core);
    } else {
        efps_error("verbs: EFPS_CPU_AFFINITY=%ld: no such core here", core);
        hwloc_bitmap_free(nodes);
        hwloc_bitmap_free(set);
        hwloc_topology_destroy(topo);
        return EFPS_ERR_INVALID;
    }
    hwloc_cpuset_to_nodeset(topo, set, nodes);
    char *cpus = NULL, *nodestr = NULL;
    hwloc_bitmap_list_asprintf(&cpus, set);
    hwloc_bitmap_list_asprintf(&nodestr, nodes);
    efps_info("verbs: %s is near cores %s (NUMA node %s): the progress thread runs on %s; run the "
              "compression threads on that node too (e.g. numactl -N %s)",
              ctx->dev_name, cpus ? cpus : "?", nodestr ? nodestr : "?", core < 0 ? "them" : aff,
              nodestr ? nodestr : "?");
    free(cpus);
    free(nodestr);
    hwloc_bitmap_free(nodes);
    ctx->cpuset = set;
    ctx->topology = topo;
    return EFPS_OK;
}

void efps__verbs_pin_thread(verbs_ctx_t *ctx)
{
    if (ctx->cpuset == NULL)
        return;
    if (hwloc_set_cpubind((hwloc_topology_t)ctx->topology, (hwloc_const_cpuset_t)ctx->cpuset,
                          HWLOC_CPUBIND_THREAD) != 0)
        efps_warn("verbs: cannot pin the progress thread: %s", strerror(errno));
}

void efps__verbs_free_placement(verbs_ctx_t *ctx)
{
    if (ctx->cpuset != NULL)
        hwloc_bitmap_free((hwloc_cpuset_t)ctx->cpuset);
    if (ctx->topology != NULL)
        hwloc_topology_destroy((hwloc_topology_t)ctx->topology);
    ctx->cpuset = ctx->topology = NULL;
}

efps_status_t efps__verbs_pick_device(verbs_ctx_t *ctx, const efps_tp_attr_t *attr)
{
    /* librdmacm prints to stderr when there is no device at all: ask
     * libibverbs first, quietly. */
    if (efps__verbs_probe(attr) != EFPS_OK) {
        if (attr->device != NULL)
            efps_error("transport verbs: no RDMA device '%s' with an active port (EFPS_IB_DEV; "
                       "ibv_devinfo lists the devices)",
                       attr->device);
        else
            efps_error("transport verbs: no RDMA device with an active port on this machine "
                       "(ibv_devinfo lists them; use EFPS_TRANSPORT=tcp or auto)");
        return EFPS_ERR_UNSUPPORTED;
    }
    int n = 0;
    struct ibv_context **list = rdma_get_devices(&n);
    char names[256];
    for (int i = 0; list != NULL && i < n && ctx->verbs == NULL; i++) {
        const char *name = ibv_get_device_name(list[i]->device);
        if (attr->device != NULL && strcmp(name, attr->device) != 0)
            continue;
        uint8_t port = active_port(list[i], &ctx->dev_attr);
        if (port == 0)
            continue;
        ctx->verbs = list[i];
        ctx->port = port;
        snprintf(ctx->dev_name, sizeof(ctx->dev_name), "%s", name);
    }
    if (ctx->verbs == NULL) {
        describe(list, n, names, sizeof(names));
        efps_error("transport verbs: rdma_cm offers no usable device%s%s (found: %s)",
                   attr->device ? " named " : "", attr->device ? attr->device : "",
                   n > 0 ? names : "none");
    }
    if (list != NULL)
        rdma_free_devices(list); /* the contexts stay open inside librdmacm */
    if (ctx->verbs == NULL)
        return EFPS_ERR_UNSUPPORTED;
    struct ibv_port_attr pa;
    ctx->max_msg = ibv_query_port(ctx->verbs, ctx->port, &pa) == 0 && pa.max_msg_sz > 0
                       ? pa.max_msg_sz
                       : (1u << 30);
    efps_status_t status = pick_gid(ctx, attr->gid);
    if (status == EFPS_OK)
        status = pick_placement(ctx, attr->cpu_affinity);
    return status;
}

const char *efps__verbs_gid_type_name(enum ibv_gid_type type)
{
    switch (type) {
    case IBV_GID_TYPE_IB:
        return "IB";
    case IBV_GID_TYPE_ROCE_V1:
        return "RoCE v1";
    case IBV_GID_TYPE_ROCE_V2:
        return "RoCE v2";
    }
    return "?";
}

/* The GID table entry of gid on our port, or false. */
static bool find_gid(verbs_ctx_t *ctx, uint8_t port, const union ibv_gid *gid,
                     struct ibv_gid_entry *entry_p)
{
    size_t max = 256;
    struct ibv_gid_entry *table = calloc(max, sizeof(*table));
    bool found = false;
    ssize_t n = table ? ibv_query_gid_table(ctx->verbs, table, max, 0) : -1;
    for (ssize_t i = 0; i < n && !found; i++) {
        if (table[i].port_num == port && memcmp(&table[i].gid, gid, sizeof(*gid)) == 0) {
            *entry_p = table[i];
            found = true;
        }
    }
    free(table);
    return found;
}

efps_status_t efps__verbs_check_id(verbs_ctx_t *ctx, struct rdma_cm_id *id, const char *what)
{
    if (id->verbs == NULL)
        return EFPS_OK; /* a wildcard listener: each request is checked */
    if (id->verbs != ctx->verbs) {
        efps_error("verbs: %s: the address is on RDMA device %s, but this transport uses %s "
                   "(EFPS_IB_DEV)",
                   what, ibv_get_device_name(id->verbs->device), ctx->dev_name);
        return EFPS_ERR_INVALID;
    }
    struct ibv_gid_entry entry = {0}; /* gcc -Os cannot see that find_gid fills it */
    if (!find_gid(ctx, id->port_num, &id->route.addr.addr.ibaddr.sgid, &entry)) {
        efps_debug("verbs: %s: %s port %u, source GID not in the table", what, ctx->dev_name,
                   id->port_num);
        return EFPS_OK;
    }
    if (ctx->gid_index >= 0 && (int)entry.gid_index != ctx->gid_index) {
        efps_error("verbs: %s: the address maps to GID index %u (%s) of %s port %u, not "
                   "EFPS_IB_GID=%d: use the IP address of GID %d, or unset EFPS_IB_GID",
                   what, entry.gid_index, efps__verbs_gid_type_name(entry.gid_type), ctx->dev_name,
                   id->port_num, ctx->gid_index, ctx->gid_index);
        return EFPS_ERR_INVALID;
    }
    efps_debug("verbs: %s: %s port %u GID index %u (%s)", what, ctx->dev_name, id->port_num,
               entry.gid_index, efps__verbs_gid_type_name(entry.gid_type));
    if (entry.gid_type == IBV_GID_TYPE_ROCE_V1)
        efps_warn("verbs: %s uses a RoCE v1 GID (index %u): RoCE v2 is routable and preferred "
                  "(set the port's default_roce_mode)",
                  what, entry.gid_index);
    return EFPS_OK;
}
