/* What the verbs transport puts on the wire besides the application's bytes.
 * Little-endian wherever we lay out bytes ourselves; immediates travel in
 * network order (htonl), so a 32-bit value arrives as it was posted.
 *
 * Connect request (rdma_connect private data; an RC request carries exactly
 * 56 bytes, zero-padded, so the length has to travel inside):
 *   0  1  marker   VERBS_WIRE_MARKER
 *   1  1  version  VERBS_WIRE_VERSION
 *   2  1  length   of the application's private data (<= EFPS_TP_PRIV_MAX)
 *   3  1  reserved 0
 *   4  .. the application's private data
 *
 * Accept reply (rdma_accept private data, up to 196 bytes):
 *   0  4  magic    VERBS_WIRE_MAGIC
 *   4  1  version
 *   5  1  length   of the application's private data
 *   6  2  reserved 0
 *   8  4  window   writes the acceptor takes before it returns credit (rq_depth)
 *   12 4  timeout  the acceptor's timeout in ms (it pings at a quarter of ours)
 *   16 .. the application's private data
 *
 * Reject (rdma_reject private data): magic, version, then 0. A reject without
 * it comes from rdma_cm itself (nothing listens, no route...).
 *
 * After ESTABLISHED, everything the transport says is a SEND_WITH_IMM whose
 * immediate is a header: type in bits 28..31, the rest by type.
 *   HELLO   connector -> acceptor, first thing on the connection; payload:
 *           magic, version, 3 x 0, window u32, timeout u32 (16 bytes)
 *   MSG     one chunk (<= VERBS_RX_BUF bytes) of an application message; bits
 *           0..12 hold the whole message's length, in every chunk
 *   CREDIT  returns credit: bits 0..16 writes, bits 17..20 messages; sent
 *           with zero credit it is the heartbeat
 *   BYE     clean close follows (no payload)
 *   LEN     the length (u32 payload) of the next write, which is longer than
 *           the port's max_msg_sz: it goes as plain RDMA_WRITEs and a last
 *           WRITE_WITH_IMM, whose completion alone would say only its own
 *           length. LEN takes a write credit of its own, returned at once.
 * Application writes are RDMA_WRITE_WITH_IMM carrying the application's imm. */
#ifndef EFPS_VERBS_WIRE_H
#define EFPS_VERBS_WIRE_H

#include "efps_internal/util.h"

#include <stdint.h>

#define VERBS_WIRE_MARKER  0xefu
#define VERBS_WIRE_MAGIC   0x56504645u /* "EFPV" read as little-endian */
#define VERBS_WIRE_VERSION 1
#define VERBS_REQ_HDR      4
#define VERBS_REP_HDR      16
#define VERBS_HELLO_LEN    16
#define VERBS_REJ_LEN      8

/* rdma_cm limits of the RC exchange (IB CM REQ / REP minus rdma_cm's header). */
#define VERBS_CM_REQ_PRIV 56
#define VERBS_CM_REP_PRIV 196

/* Receive buffers: a message of EFPS_TP_MSG_MAX bytes travels in
 * EFPS_TP_MSG_MAX / VERBS_RX_BUF chunks. */
#define VERBS_RX_BUF     1024u
#define VERBS_MSG_CHUNKS (4096u / VERBS_RX_BUF)

typedef enum {
    VERBS_T_HELLO = 1,
    VERBS_T_MSG = 2,
    VERBS_T_CREDIT = 3,
    VERBS_T_BYE = 4,
    VERBS_T_LEN = 5,
} verbs_ctrl_t;

#define VERBS_IMM_TYPE(imm)      ((imm) >> 28)
#define VERBS_IMM_MSG_LEN(imm)   ((imm)&0x1fffu)
#define VERBS_IMM_CR_WRITES(imm) ((imm)&0x1ffffu)
#define VERBS_IMM_CR_MSGS(imm)   (((imm) >> 17) & 0xfu)
#define VERBS_CR_MAX_WRITES      0x1ffffu

static inline uint32_t verbs_imm_msg(uint32_t len)
{
    return ((uint32_t)VERBS_T_MSG << 28) | (len & 0x1fffu);
}

static inline uint32_t verbs_imm_credit(uint32_t writes, uint32_t msgs)
{
    return ((uint32_t)VERBS_T_CREDIT << 28) | ((msgs & 0xfu) << 17) | (writes & 0x1ffffu);
}

static inline uint32_t verbs_imm_type(verbs_ctrl_t type)
{
    return (uint32_t)type << 28;
}

#endif
