/* The tcp frame header on its own: decoded and checked without touching a
 * connection, so the receiver (tcp_rx.c) and the fuzz targets run the very
 * same checks. What needs the connection (regions, credit) is tcp_rx.c's. */
#include "tcp_wire.h"

#include <stdarg.h>
#include <stdio.h>

const char *efps__tcp_frame_name(uint8_t type)
{
    static const char *const names[] = {"?",     "CONNECT", "ACCEPT", "REJECT",
                                        "WRITE", "MSG",     "PING",   "BYE"};
    return type > 0 && type < sizeof(names) / sizeof(names[0]) ? names[type] : "unknown";
}

static const char *phase_name(tcp_phase_t phase)
{
    switch (phase) {
    case TCP_PHASE_HANDSHAKE:
        return "before the connection request";
    case TCP_PHASE_OPEN:
        return "on an open connection";
    case TCP_PHASE_CLOSED:
        break;
    }
    return "on a closed connection";
}

/* Writes the reason; evaluates to EFPS_ERR_PROTO. */
static efps_status_t refuse(char *why, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static efps_status_t refuse(char *why, size_t cap, const char *fmt, ...)
{
    if (why != NULL && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return EFPS_ERR_PROTO;
}

static bool type_allowed(uint8_t type, tcp_phase_t phase)
{
    if (phase == TCP_PHASE_HANDSHAKE)
        return type == TCP_F_CONNECT;
    return phase == TCP_PHASE_OPEN &&
           (type == TCP_F_WRITE || type == TCP_F_MSG || type == TCP_F_PING || type == TCP_F_BYE);
}

/* Fields the type does not use are 0 (CONNECT announces its timeout in imm). */
static bool fields_unused(const tcp_hdr_t *h)
{
    return (h->imm == 0 || h->type == TCP_F_CONNECT) && h->region == 0 && h->secret == 0 &&
           h->offset == 0;
}

static efps_status_t check_length(const tcp_hdr_t *h, char *why, size_t cap)
{
    const char *name = efps__tcp_frame_name(h->type);
    switch ((tcp_frame_t)h->type) {
    case TCP_F_WRITE:
        if (h->length > EFPS_TP_WRITE_MAX)
            return refuse(why, cap, "write of %u bytes (at most %u)", h->length, EFPS_TP_WRITE_MAX);
        break;
    case TCP_F_MSG:
        if (h->length == 0 || h->length > EFPS_TP_MSG_MAX)
            return refuse(why, cap, "message of %u bytes (1..%d allowed)", h->length,
                          EFPS_TP_MSG_MAX);
        break;
    case TCP_F_CONNECT:
        if (h->length > EFPS_TP_PRIV_MAX)
            return refuse(why, cap, "connection request with %u bytes of private data (at most %d)",
                          h->length, EFPS_TP_PRIV_MAX);
        break;
    default: /* PING, BYE */
        if (h->length != 0)
            return refuse(why, cap, "%s frame with a %u-byte payload", name, h->length);
        break;
    }
    return EFPS_OK;
}

efps_status_t efps__tcp_hdr_check(const uint8_t *buf, size_t len, tcp_phase_t phase,
                                  tcp_hdr_t *hdr_p, char *why, size_t why_cap)
{
    tcp_hdr_t h;
    if (buf == NULL || len < TCP_HDR_LEN)
        return refuse(why, why_cap, "truncated frame header (%zu of %d bytes)",
                      buf == NULL ? 0 : len, TCP_HDR_LEN);
    tcp_hdr_decode(buf, &h);
    if (h.magic != TCP_WIRE_MAGIC)
        return refuse(why, why_cap, "bad magic 0x%08x in a frame header (not an efps tcp peer?)",
                      h.magic);
    if (h.version != TCP_WIRE_VERSION)
        return refuse(why, why_cap, "wire version %u, this side speaks %u", h.version,
                      TCP_WIRE_VERSION);
    if (!type_allowed(h.type, phase))
        return refuse(why, why_cap, "unexpected %s frame (type %u) %s",
                      efps__tcp_frame_name(h.type), h.type, phase_name(phase));
    if (h.flags != 0 || h.reserved != 0 || (h.type != TCP_F_WRITE && !fields_unused(&h)))
        return refuse(why, why_cap, "%s frame with reserved or unused header fields set",
                      efps__tcp_frame_name(h.type));
    efps_status_t status = check_length(&h, why, why_cap);
    if (status != EFPS_OK)
        return status;
    *hdr_p = h;
    return EFPS_OK;
}
