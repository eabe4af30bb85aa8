/* Discovery for efps-info (efps_tp_ports, efps_tp_port_gids, efps_tp_resolve):
 * what ibv_devinfo and rdma_cm see, without opening a transport. */
#include "verbs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *state_name(enum ibv_port_state s)
{
    switch (s) {
    case IBV_PORT_DOWN:
        return "down";
    case IBV_PORT_INIT:
        return "init";
    case IBV_PORT_ARMED:
        return "armed";
    case IBV_PORT_ACTIVE:
        return "active";
    case IBV_PORT_ACTIVE_DEFER:
        return "active defer";
    default:
        return "unknown";
    }
}

/* The device's whole GID table (every port), into *table_p (freed by the
 * caller); the number of valid entries, or -1. */
static ssize_t gid_table(struct ibv_context *verbs, uint8_t nports, struct ibv_gid_entry **table_p)
{
    size_t max = 0;
    for (uint8_t p = 1; p <= nports; p++) {
        struct ibv_port_attr pa;
        if (ibv_query_port(verbs, p, &pa) == 0)
            max += (size_t)pa.gid_tbl_len;
    }
    *table_p = calloc(max > 0 ? max : 1, sizeof(**table_p));
    if (*table_p == NULL)
        return -1;
    return max > 0 ? ibv_query_gid_table(verbs, *table_p, max, 0) : 0;
}

static void fill_ports(struct ibv_context *verbs, efps_tp_port_info_t *ports, size_t cap,
                       size_t *count)
{
    struct ibv_device_attr attr;
    if (ibv_query_device(verbs, &attr) != 0)
        return;
    struct ibv_gid_entry *table = NULL;
    ssize_t ngid = gid_table(verbs, attr.phys_port_cnt, &table);
    for (uint8_t p = 1; p <= attr.phys_port_cnt; p++, (*count)++) {
        struct ibv_port_attr pa;
        if (*count >= cap || ibv_query_port(verbs, p, &pa) != 0)
            continue;
        efps_tp_port_info_t *o = &ports[*count];
        memset(o, 0, sizeof(*o));
        snprintf(o->device, sizeof(o->device), "%s", ibv_get_device_name(verbs->device));
        o->port = p;
        o->state = state_name(pa.state);
        o->link_layer = pa.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand";
        o->max_msg = pa.max_msg_sz;
        for (ssize_t i = 0; i < ngid; i++)
            o->gids += table[i].port_num == p;
    }
    free(table);
}

efps_status_t efps__verbs_ports(efps_tp_port_info_t *ports, size_t cap, size_t *n_p)
{
    int n = 0;
    size_t count = 0;
    struct ibv_device **list = ibv_get_device_list(&n); /* NULL: no RDMA subsystem */
    for (int i = 0; list != NULL && i < n; i++) {
        struct ibv_context *verbs = ibv_open_device(list[i]);
        if (verbs == NULL) {
            efps_warn("verbs: cannot open RDMA device %s: %s", ibv_get_device_name(list[i]),
                      strerror(errno));
            continue;
        }
        fill_ports(verbs, ports, cap, &count);
        ibv_close_device(verbs);
    }
    if (list != NULL)
        ibv_free_device_list(list);
    *n_p = count;
    return EFPS_OK;
}

static void fill_gid(const struct ibv_gid_entry *e, efps_tp_gid_info_t *o)
{
    memset(o, 0, sizeof(*o));
    o->index = e->gid_index;
    o->type = efps__verbs_gid_type_name(e->gid_type);
    inet_ntop(AF_INET6, e->gid.raw, o->gid, sizeof(o->gid));
    char name[IF_NAMESIZE];
    if (e->ndev_ifindex != 0 && if_indextoname(e->ndev_ifindex, name) != NULL)
        snprintf(o->netdev, sizeof(o->netdev), "%s", name);
}

efps_status_t efps__verbs_port_gids(const char *device, uint8_t port, efps_tp_gid_info_t *gids,
                                    size_t cap, size_t *n_p)
{
    int n = 0;
    efps_status_t st = EFPS_ERR_INVALID;
    struct ibv_device **list = ibv_get_device_list(&n);
    for (int i = 0; list != NULL && i < n && st != EFPS_OK; i++) {
        if (strcmp(ibv_get_device_name(list[i]), device) != 0)
            continue;
        struct ibv_context *verbs = ibv_open_device(list[i]);
        struct ibv_device_attr attr;
        if (verbs == NULL || ibv_query_device(verbs, &attr) != 0 || port < 1 ||
            port > attr.phys_port_cnt) {
            if (verbs != NULL)
                ibv_close_device(verbs);
            break;
        }
        struct ibv_gid_entry *table = NULL;
        ssize_t ngid = gid_table(verbs, attr.phys_port_cnt, &table);
        size_t count = 0;
        for (ssize_t k = 0; k < ngid; k++) {
            if (table[k].port_num != port)
                continue;
            if (count < cap)
                fill_gid(&table[k], &gids[count]);
            count++;
        }
        free(table);
        ibv_close_device(verbs);
        *n_p = count;
        st = ngid < 0 ? EFPS_ERR_NOMEM : EFPS_OK;
    }
    if (list != NULL)
        ibv_free_device_list(list);
    if (st == EFPS_ERR_INVALID)
        efps_error("verbs: no RDMA device %s with a port %u (ibv_devinfo lists them)", device,
                   port);
    return st;
}

/* Waits for the address resolution's event on ch; its status (0 resolved). */
static int wait_resolved(struct rdma_event_channel *ch, int timeout_ms, int *event_p)
{
    struct pollfd pfd = {.fd = ch->fd, .events = POLLIN};
    /* rdma_cm reports its own timeout as an event: wait a little longer. */
    if (poll(&pfd, 1, timeout_ms + 1000) <= 0)
        return -ETIMEDOUT;
    struct rdma_cm_event *ev;
    if (rdma_get_cm_event(ch, &ev) != 0)
        return -errno;
    *event_p = ev->event;
    int status = ev->event == RDMA_CM_EVENT_ADDR_RESOLVED ? 0 : ev->status ? ev->status : -EIO;
    rdma_ack_cm_event(ev);
    return status;
}

efps_status_t efps__verbs_resolve(const char *address, int timeout_ms, char *device, size_t cap,
                                  uint8_t *port_p)
{
    struct sockaddr_storage ss;
    socklen_t len;
    efps_tp_attr_t any = {0};
    efps_status_t st = efps__tp_parse_addr(address, false, &ss, &len);
    if (st != EFPS_OK)
        return st;
    /* librdmacm prints to stderr when there is no device at all: ask first. */
    if (efps__verbs_probe(&any) != EFPS_OK) {
        efps_error("rdma_cm: cannot resolve %s: no RDMA device with an active port here", address);
        return EFPS_ERR_UNSUPPORTED;
    }
    struct rdma_event_channel *ch = rdma_create_event_channel();
    struct rdma_cm_id *id = NULL;
    if (ch == NULL || rdma_create_id(ch, &id, NULL, RDMA_PS_TCP) != 0) {
        efps_error("rdma_cm: cannot create an id to resolve %s: %s", address, strerror(errno));
        st = EFPS_ERR_SYSTEM;
    } else {
        int event = -1, rc = rdma_resolve_addr(id, NULL, (struct sockaddr *)&ss, timeout_ms);
        rc = rc != 0 ? -errno : wait_resolved(ch, timeout_ms, &event);
        if (rc == 0 && id->verbs != NULL) {
            snprintf(device, cap, "%s", ibv_get_device_name(id->verbs->device));
            *port_p = id->port_num;
        } else {
            efps_error("rdma_cm: cannot resolve %s to an RDMA device: %s%s%s", address,
                       rc != 0 ? strerror(-rc) : "no device", event >= 0 ? " on " : "",
                       event >= 0 ? rdma_event_str((enum rdma_cm_event_type)event) : "");
            st = rc == -ETIMEDOUT ? EFPS_ERR_TIMEOUT : EFPS_ERR_UNSUPPORTED;
        }
    }
    if (id != NULL)
        rdma_destroy_id(id);
    if (ch != NULL)
        rdma_destroy_event_channel(ch);
    return st;
}
