/* The RDMA section of efps-info: every port of every device, its state,
 * link layer and GIDs (what ibv_devinfo -v and show_gids tell). */
#include "info.h"

#include "efps/transport.h"

#include <string.h>

#define MAX_PORTS 64
#define MAX_GIDS  64

static void port_gids(out_t *o, const efps_tp_port_info_t *p)
{
    efps_tp_gid_info_t gids[MAX_GIDS];
    size_t n = 0;
    out_arr(o, "gid_table");
    if (efps_tp_port_gids(p->device, p->port, gids, MAX_GIDS, &n) == EFPS_OK) {
        for (size_t k = 0; k < n && k < MAX_GIDS; k++) {
            if (!o->json) {
                out_strf(o, NULL, "%u %s %s%s%s", gids[k].index, gids[k].gid, gids[k].type,
                         *gids[k].netdev ? " " : "", gids[k].netdev);
                continue;
            }
            out_obj(o, NULL);
            out_int(o, "index", gids[k].index);
            out_str(o, "gid", gids[k].gid);
            out_str(o, "type", gids[k].type);
            out_str(o, "netdev", gids[k].netdev);
            out_close(o);
        }
    }
    out_close(o);
}

int info_rdma(out_t *o)
{
    efps_tp_port_info_t ports[MAX_PORTS];
    size_t n = 0;
    efps_status_t st = efps_tp_ports(ports, MAX_PORTS, &n);
    int active = 0;
    out_obj(o, "rdma");
    if (st == EFPS_ERR_UNSUPPORTED)
        out_str(o, "note", "no RDMA device: this library is built without verbs (tcp only)");
    else if (n == 0)
        out_str(o, "note",
                "no RDMA device on this machine (ibv_devices lists none): efps uses tcp");
    out_arr(o, "ports");
    for (size_t i = 0; i < n && i < MAX_PORTS; i++) {
        const efps_tp_port_info_t *p = &ports[i];
        active += strcmp(p->state, "active") == 0;
        out_obj(o, NULL);
        out_str(o, "device", p->device);
        out_int(o, "port", p->port);
        out_str(o, "state", p->state);
        out_str(o, "link_layer", p->link_layer);
        out_int(o, "max_msg", p->max_msg);
        out_int(o, "gids", p->gids);
        port_gids(o, p);
        out_close(o);
    }
    out_close(o);
    out_close(o);
    return st == EFPS_ERR_UNSUPPORTED ? -1 : active;
}
