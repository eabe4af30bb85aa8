/* Verbs has three error conventions (a positive errno returned, -1 with
 * errno set, NULL with errno set) plus work-completion statuses and rdma_cm
 * reject codes. They are turned into errno and efps_status_t here, and
 * nowhere else (as libfabric's vrb_convert_ret does). */
#include "verbs.h"

#include <errno.h>

int efps__verbs_errno(int ret)
{
    if (ret > 0)
        return ret; /* ibv_post_send, ibv_modify_qp, ibv_dereg_mr... */
    if (ret == -1)
        return errno != 0 ? errno : EIO; /* rdma_*, ibv_get_cq_event... */
    return ret < 0 ? -ret : 0;           /* a negative errno */
}

int efps__verbs_ptr_errno(void)
{
    return errno != 0 ? errno : ENOMEM;
}

efps_status_t efps__verbs_errno_status(int err)
{
    switch (err) {
    case 0:
        return EFPS_OK;
    case ENOMEM:
        return EFPS_ERR_NOMEM;
    case EINVAL:
    case EADDRNOTAVAIL:
    case EAFNOSUPPORT:
        return EFPS_ERR_INVALID;
    case ETIMEDOUT:
        return EFPS_ERR_TIMEOUT;
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ENOTCONN:
        return EFPS_ERR_PEER;
    case ENODEV:
    case ENOSYS:
    case EOPNOTSUPP:
        return EFPS_ERR_UNSUPPORTED;
    case EAGAIN:
    case ENOBUFS:
        return EFPS_ERR_NO_RESOURCE;
    default:
        return EFPS_ERR_TRANSPORT;
    }
}

efps_status_t efps__verbs_wc_status(enum ibv_wc_status status)
{
    switch (status) {
    case IBV_WC_SUCCESS:
        return EFPS_OK;
    /* The peer is gone, unreachable, or refused what we sent. */
    case IBV_WC_WR_FLUSH_ERR:
    case IBV_WC_RETRY_EXC_ERR:
    case IBV_WC_RNR_RETRY_EXC_ERR:
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_REM_OP_ERR:
    case IBV_WC_REM_ABORT_ERR:
    case IBV_WC_RESP_TIMEOUT_ERR:
        return EFPS_ERR_PEER;
    /* The peer sent what the protocol does not allow. */
    case IBV_WC_REM_INV_REQ_ERR:
    case IBV_WC_REM_INV_RD_REQ_ERR:
    case IBV_WC_BAD_RESP_ERR:
        return EFPS_ERR_PROTO;
    default: /* local length, protection, QP errors: ours or the device's */
        return EFPS_ERR_TRANSPORT;
    }
}

/* IB CM reject reasons that rdma_cm reports in a REJECTED event's status. */
const char *efps__verbs_reject_reason(int status)
{
    switch (status) {
    case 8: /* IB_CM_REJ_INVALID_SERVICE_ID */
        return "connection refused (nothing listens there)";
    case 1: /* IB_CM_REJ_NO_QP */
    case 2: /* IB_CM_REJ_NO_EEC */
    case 3: /* IB_CM_REJ_NO_RESOURCES */
        return "the peer has no resources for another connection";
    case 28: /* IB_CM_REJ_CONSUMER_DEFINED */
        return "rejected by the peer";
    case 4: /* IB_CM_REJ_TIMEOUT */
        return "no answer from the peer's connection manager";
    case 10: /* IB_CM_REJ_STALE_CONN */
        return "stale connection (the peer still holds an old one)";
    case 12: /* IB_CM_REJ_INVALID_GID */
    case 26: /* IB_CM_REJ_INVALID_MTU */
        return "the peer cannot use our path (GID or MTU)";
    default:
        return "connection rejected";
    }
}
