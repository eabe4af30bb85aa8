/* The parameter server's parsers of what a peer sends before it is trusted
 * (lib/ps/wire.c): the connect-time hello, AUTH, and a LAYOUT followed by
 * KEYS messages, taken as the server takes them (on_layout, on_keys,
 * layout_done in server_admit.c, without the transport), then the finished
 * layout checked against what ps_layout_finish promises.
 * Input: one byte (bits 0-1: 0 hello, 1 AUTH, 2-3 layout; bits 2-4: number
 * of servers - 1), then the message(s). A layout is a sequence of messages,
 * each a 2-byte little-endian length and its bytes: the LAYOUT, then KEYS
 * until the announced number of keys arrived. */
#include "fuzz.h"

#include "lib/ps/ps_int.h"

#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* A refusal names its reason. */
static void check_refusal(efps_status_t st, const char *why)
{
    if (st == EFPS_ERR_PROTO && why[0] == '\0')
        abort();
}

/* Every part of every key, in order, covering it exactly, on a server that
 * exists, with room for its bytes; each key findable; equal to itself. */
static void check_layout(const ps_layout_t *l)
{
    size_t parts = 0;
    for (size_t i = 0; i < l->nkeys; i++) {
        const ps_key_t *k = &l->keys[i];
        if (k->first_part != parts || k->nparts == 0 || ps_layout_find(l, k->key) != k)
            abort();
        size_t off = 0;
        for (uint32_t j = 0; j < k->nparts; j++) {
            const ps_part_t *p = &l->parts[k->first_part + j];
            if (p->key_index != i || p->off != off || p->n == 0 || p->server < 0 ||
                p->server >= l->num_servers || p->bytes != p->payload + PS_TRAILER ||
                p->stride < p->bytes || p->stride % EFPS_ALIGN != 0 || p->payload == 0)
                abort();
            off += p->n;
        }
        if (off != k->n)
            abort();
        parts += k->nparts;
    }
    char why[256];
    if (parts != l->nparts || ps_layout_differs(l, l, why, sizeof(why)))
        abort();
}

/* Parts of a key as ps_layout_finish cuts them, restated here as an oracle:
 * the partition size in elements, cut to whole blocks for blocksign, at
 * least 16. */
static uint64_t key_parts(const ps_layout_t *l, const ps_key_t *k)
{
    uint64_t p = l->partition_bytes / 4;
    const uint64_t b = l->optim.compressor == EFPS_COMP_BLOCKSIGN ? k->block : 0;
    if (b > 0 && p >= b)
        p -= p % b;
    if (p < 16)
        p = 16;
    return (k->n + p - 1) / p;
}

/* Finishes a layout that arrived whole. One that would be refused (over the
 * PS_MAX_* limits, a bad partition size) must be, before allocating; one of
 * up to 2^16 parts is finished and checked; larger legal ones (up to
 * PS_MAX_PARTS, 2^24 parts, about 1 GB and seconds each under ASan) are left
 * out to keep every input fast. */
static void finish(ps_layout_t *l)
{
    uint64_t parts = 0, elems = 0;
    for (size_t i = 0; i < l->nkeys; i++) {
        parts += key_parts(l, &l->keys[i]);
        elems += l->keys[i].n;
    }
    const bool refused = parts > PS_MAX_PARTS || elems > PS_MAX_ELEMS ||
                         l->partition_bytes < PS_MIN_PARTITION ||
                         l->partition_bytes > PS_MAX_PARTITION;
    if (!refused && parts > (1u << 16))
        return;
    efps_status_t st = ps_layout_finish(l);
    if (refused) {
        if (st != EFPS_ERR_INVALID)
            abort();
        return;
    }
    if (st == EFPS_OK) {
        if (l->nparts != parts)
            abort();
        check_layout(l);
    } else if (st != EFPS_ERR_INVALID) { /* a key declared twice */
        abort();
    }
}

/* The next length-prefixed message of the input, or false at its end. */
static bool next_msg(const uint8_t **data, size_t *size, const uint8_t **m_p, size_t *len_p)
{
    if (*size < 2)
        return false;
    size_t len = (size_t)(*data)[0] | (size_t)(*data)[1] << 8;
    if (len > *size - 2)
        len = *size - 2;
    *m_p = *data + 2;
    *len_p = len;
    *data += 2 + len;
    *size -= 2 + len;
    return true;
}

static void layout(const uint8_t *data, size_t size, int nservers)
{
    const uint8_t *m;
    size_t len;
    char why[256] = "";
    efps__layout_head_t h;
    if (!next_msg(&data, &size, &m, &len))
        return;
    efps_status_t st = efps__wire_layout_head(m, len, &h, why, sizeof(why));
    check_refusal(st, why);
    if (st != EFPS_OK)
        return;
    efps_optim_config_t o = {
        .compressor = (efps_compressor_t)h.compressor, .block = (size_t)h.block, .momentum = 0.9f};
    ps_layout_t l;
    ps_layout_init(&l, &o, (size_t)h.partition_bytes, nservers);
    while (l.nkeys < h.nkeys && next_msg(&data, &size, &m, &len)) {
        why[0] = '\0';
        st = efps__wire_keys(&l, h.nkeys, m, len, why, sizeof(why));
        check_refusal(st, why);
        if (st != EFPS_OK)
            break;
        if (l.nkeys > h.nkeys)
            abort(); /* more keys than announced were taken */
    }
    if (st == EFPS_OK && l.nkeys == h.nkeys)
        finish(&l);
    ps_layout_free(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const int mode = data[0] & 3, nservers = 1 + (data[0] >> 2) % 8;
    data++;
    size--;
    if (mode == 0) {
        ps_hello_t hello;
        if (efps__wire_hello(data, size, &hello) == EFPS_OK && size != sizeof(hello))
            abort();
    } else if (mode == 1) {
        const uint8_t *mac;
        if (efps__wire_auth(data, size, &mac) == EFPS_OK &&
            (mac < data || mac + PS_MAC > data + size))
            abort();
    } else {
        layout(data, size, nservers);
    }
    return 0;
}
