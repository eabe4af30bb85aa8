/* The tcp transport's wire format. Every frame is a 40-byte header, then
 * `length` payload bytes. Little-endian on the wire whatever the host.
 *
 *   offset  size  field
 *   0       4     magic    "EFPT" (0x54504645 read as little-endian)
 *   4       1     version  TCP_WIRE_VERSION
 *   5       1     type     tcp_frame_t
 *   6       2     flags    0
 *   8       4     length   payload bytes
 *   12      4     imm      WRITE: the immediate
 *   16      4     region   WRITE: target region id (rkey.key)
 *   20      4     reserved 0
 *   24      8     secret   WRITE: target region secret (rkey.base)
 *   32      8     offset   WRITE: byte offset inside the target region
 *
 * A connection: the connector sends CONNECT (payload: private data), the
 * acceptor answers ACCEPT (payload: its private data) or REJECT; then both
 * sides send WRITE, MSG (payload: a control message), PING (no payload,
 * keeps an idle connection alive) and BYE (no payload, clean close) in any
 * order. Fields a type does not use must be 0, except that CONNECT and
 * ACCEPT carry in imm the sender's timeout in milliseconds (0: none given):
 * the receiver then sends something (a PING if idle) at least every quarter
 * of it, so neither side mistakes the other for dead, whatever their
 * settings. */
#ifndef EFPS_TCP_WIRE_H
#define EFPS_TCP_WIRE_H

#include "efps/transport.h"
#include "efps_internal/util.h"

#include <stddef.h>
#include <stdint.h>

#define TCP_WIRE_MAGIC   0x54504645u
#define TCP_WIRE_VERSION 1
#define TCP_HDR_LEN      40

typedef enum {
    TCP_F_CONNECT = 1,
    TCP_F_ACCEPT = 2,
    TCP_F_REJECT = 3,
    TCP_F_WRITE = 4,
    TCP_F_MSG = 5,
    TCP_F_PING = 6,
    TCP_F_BYE = 7,
} tcp_frame_t;

typedef struct {
    uint32_t magic;
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint32_t length;
    uint32_t imm;
    uint32_t region;
    uint32_t reserved;
    uint64_t secret;
    uint64_t offset;
} tcp_hdr_t;

static inline void tcp_hdr_encode(const tcp_hdr_t *h, uint8_t out[TCP_HDR_LEN])
{
    efps__put_le(out + 0, h->magic, 4);
    out[4] = h->version;
    out[5] = h->type;
    efps__put_le(out + 6, h->flags, 2);
    efps__put_le(out + 8, h->length, 4);
    efps__put_le(out + 12, h->imm, 4);
    efps__put_le(out + 16, h->region, 4);
    efps__put_le(out + 20, h->reserved, 4);
    efps__put_le(out + 24, h->secret, 8);
    efps__put_le(out + 32, h->offset, 8);
}

static inline void tcp_hdr_decode(const uint8_t in[TCP_HDR_LEN], tcp_hdr_t *h)
{
    h->magic = (uint32_t)efps__get_le(in + 0, 4);
    h->version = in[4];
    h->type = in[5];
    h->flags = (uint16_t)efps__get_le(in + 6, 2);
    h->length = (uint32_t)efps__get_le(in + 8, 4);
    h->imm = (uint32_t)efps__get_le(in + 12, 4);
    h->region = (uint32_t)efps__get_le(in + 16, 4);
    h->reserved = (uint32_t)efps__get_le(in + 20, 4);
    h->secret = efps__get_le(in + 24, 8);
    h->offset = efps__get_le(in + 32, 8);
}

/* A header of the given type with everything else 0. */
static inline tcp_hdr_t tcp_hdr_make(tcp_frame_t type, uint32_t length)
{
    tcp_hdr_t h = {.magic = TCP_WIRE_MAGIC,
                   .version = TCP_WIRE_VERSION,
                   .type = (uint8_t)type,
                   .length = length};
    return h;
}

/* Which frames a connection may receive now. */
typedef enum {
    TCP_PHASE_HANDSHAKE, /* accepted, before the connection request: CONNECT only */
    TCP_PHASE_OPEN,      /* an open connection: WRITE, MSG, PING, BYE */
    TCP_PHASE_CLOSED,    /* nothing */
} tcp_phase_t;

/* Decodes one frame header and checks everything it can say on its own
 * (tcp_hdr.c): length of the buffer, magic, version, a frame type allowed in
 * phase, flags and reserved fields zero, fields the type does not use zero,
 * and the payload length the type allows (CONNECT at most EFPS_TP_PRIV_MAX,
 * MSG 1..EFPS_TP_MSG_MAX, WRITE at most EFPS_TP_WRITE_MAX, PING and BYE 0).
 * A WRITE's region, secret and offset are checked by the receiver against its
 * region table and the connection (tcp_rx.c). Pure: no I/O, no allocation,
 * no logging, so a fuzzer can call it on any bytes. EFPS_OK fills *hdr_p;
 * EFPS_ERR_PROTO writes why (if why is not NULL) into why[why_cap]. */
efps_status_t efps__tcp_hdr_check(const uint8_t *buf, size_t len, tcp_phase_t phase,
                                  tcp_hdr_t *hdr_p, char *why, size_t why_cap);
/* "CONNECT", "WRITE"..., "unknown". */
const char *efps__tcp_frame_name(uint8_t type);

#endif
