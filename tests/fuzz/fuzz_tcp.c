/* The tcp transport's frame-header check (transport/tcp/tcp_hdr.c,
 * efps__tcp_hdr_check), fed a byte stream as a receiver reads it: a header,
 * its payload (skipped), the next header, with the phase the connection is
 * in (a CONNECT opens it, a BYE closes it). Besides no crash, what the check
 * promises is asserted: an accepted header re-encodes to the very bytes it
 * came from, and has the magic, version, type, zero fields and payload
 * length its phase allows; a refusal says why.
 * Input: one byte whose bit 0 starts the stream on an open connection
 * (else before the connection request), then the stream. */
#include "fuzz.h"

#include "transport/tcp/tcp_wire.h"

#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* The rules restated from tcp_wire.h, independently of tcp_hdr.c on purpose:
 * an oracle that calls the code under test checks nothing. */
static bool type_ok(uint8_t type, tcp_phase_t phase)
{
    if (phase == TCP_PHASE_HANDSHAKE)
        return type == TCP_F_CONNECT;
    return phase == TCP_PHASE_OPEN &&
           (type == TCP_F_WRITE || type == TCP_F_MSG || type == TCP_F_PING || type == TCP_F_BYE);
}

static bool length_ok(const tcp_hdr_t *h)
{
    switch (h->type) {
    case TCP_F_WRITE:
        return h->length <= EFPS_TP_WRITE_MAX;
    case TCP_F_MSG:
        return h->length >= 1 && h->length <= EFPS_TP_MSG_MAX;
    case TCP_F_CONNECT:
        return h->length <= EFPS_TP_PRIV_MAX;
    default:
        return h->length == 0;
    }
}

/* What an accepted header must be; aborts (a finding) otherwise. */
static void check_accepted(const uint8_t *buf, const tcp_hdr_t *h, tcp_phase_t phase)
{
    uint8_t again[TCP_HDR_LEN];
    tcp_hdr_encode(h, again);
    bool unused_zero =
        h->type == TCP_F_WRITE || ((h->imm == 0 || h->type == TCP_F_CONNECT) && h->region == 0 &&
                                   h->secret == 0 && h->offset == 0);
    if (memcmp(again, buf, TCP_HDR_LEN) != 0 || h->magic != TCP_WIRE_MAGIC ||
        h->version != TCP_WIRE_VERSION || !type_ok(h->type, phase) || h->flags != 0 ||
        h->reserved != 0 || !unused_zero || !length_ok(h))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    tcp_phase_t phase = (data[0] & 1) ? TCP_PHASE_OPEN : TCP_PHASE_HANDSHAKE;
    size_t pos = 1;
    while (pos < size) {
        tcp_hdr_t h;
        char why[256] = "";
        const size_t avail = size - pos;
        efps_status_t st = efps__tcp_hdr_check(data + pos, avail, phase, &h, why, sizeof(why));
        if (st != EFPS_OK) {
            /* a refusal is EFPS_ERR_PROTO with a reason; the stream ends */
            if (st != EFPS_ERR_PROTO || why[0] == '\0' || memchr(why, '\0', sizeof(why)) == NULL)
                abort();
            return 0;
        }
        if (avail < TCP_HDR_LEN)
            abort(); /* accepted a header that was not all there */
        check_accepted(data + pos, &h, phase);
        pos += TCP_HDR_LEN;
        /* the payload follows (a WRITE's may be huge: what is left of it) */
        pos += h.length < size - pos ? h.length : size - pos;
        if (h.type == TCP_F_CONNECT)
            phase = TCP_PHASE_OPEN;
        else if (h.type == TCP_F_BYE)
            phase = TCP_PHASE_CLOSED;
    }
    return 0;
}
