/* What the machine offers (efps-info): the neutral entry points. The verbs
 * transport answers them (transport/verbs/verbs_info.c); a library built
 * without verbs has no RDMA to describe. */
#include "transport_int.h"

efps_status_t efps_tp_ports(efps_tp_port_info_t *ports, size_t cap, size_t *n_p)
{
    if (n_p == NULL || (ports == NULL && cap > 0))
        return EFPS_ERR_INVALID;
#ifdef EFPS_HAVE_VERBS
    return efps__verbs_ports(ports, cap, n_p);
#else
    *n_p = 0;
    return EFPS_ERR_UNSUPPORTED;
#endif
}

efps_status_t efps_tp_port_gids(const char *device, uint8_t port, efps_tp_gid_info_t *gids,
                                size_t cap, size_t *n_p)
{
    if (device == NULL || n_p == NULL || (gids == NULL && cap > 0))
        return EFPS_ERR_INVALID;
#ifdef EFPS_HAVE_VERBS
    return efps__verbs_port_gids(device, port, gids, cap, n_p);
#else
    (void)port;
    *n_p = 0;
    return EFPS_ERR_UNSUPPORTED;
#endif
}

efps_status_t efps_tp_resolve(const char *address, int timeout_ms, char *device, size_t cap,
                              uint8_t *port_p)
{
    if (address == NULL || device == NULL || cap == 0 || port_p == NULL || timeout_ms <= 0)
        return EFPS_ERR_INVALID;
#ifdef EFPS_HAVE_VERBS
    return efps__verbs_resolve(address, timeout_ms, device, cap, port_p);
#else
    efps_error("rdma_cm: cannot resolve %s: this library is built without verbs", address);
    return EFPS_ERR_UNSUPPORTED;
#endif
}
