/* Parsing of the control messages a server takes from a peer it does not
 * trust yet (AUTH) or trusts only so far (LAYOUT, KEYS): pure functions, no
 * server needed, so they can be fuzzed on their own. Every number from the
 * wire is range-checked here before anything is sized by it, and a refusal
 * names the field. */
#include "ps_int.h"

#include <stdio.h>
#include <string.h>

static efps_status_t bad(char *why, size_t cap, const char *field, uint64_t v, uint64_t lo,
                         uint64_t hi)
{
    snprintf(why, cap, "%s %llu is outside [%llu, %llu]", field, (unsigned long long)v,
             (unsigned long long)lo, (unsigned long long)hi);
    return EFPS_ERR_PROTO;
}

efps_status_t efps__wire_hello(const void *priv, size_t len, ps_hello_t *hello_p)
{
    if (priv == NULL || len != sizeof(*hello_p))
        return EFPS_ERR_PROTO;
    memcpy(hello_p, priv, sizeof(*hello_p));
    return EFPS_OK;
}

efps_status_t efps__wire_auth(const uint8_t *m, size_t len, const uint8_t **mac_p)
{
    if (len != 4 + PS_MAC || efps__get_le32(m) != PS_MSG_AUTH)
        return EFPS_ERR_PROTO;
    *mac_p = m + 4;
    return EFPS_OK;
}

efps_status_t efps__wire_layout_head(const uint8_t *m, size_t len, efps__layout_head_t *head_p,
                                     char *why, size_t cap)
{
    if (len != PS_LAYOUT_HEAD || efps__get_le32(m) != PS_MSG_LAYOUT) {
        snprintf(why, cap, "LAYOUT message of %zu byte%s, expected %d", len, ps_s((long)len),
                 PS_LAYOUT_HEAD);
        return EFPS_ERR_PROTO;
    }
    efps__layout_head_t h = {.compressor = efps__get_le32(m + 4),
                             .block = efps__get_le64(m + 8),
                             .partition_bytes = efps__get_le64(m + 16),
                             .nkeys = efps__get_le64(m + 24)};
    if (h.compressor > EFPS_COMP_BLOCKSIGN)
        return bad(why, cap, "compressor", h.compressor, 0, EFPS_COMP_BLOCKSIGN);
    if (h.block > PS_MAX_BLOCK)
        return bad(why, cap, "block", h.block, 0, PS_MAX_BLOCK);
    if (h.partition_bytes < PS_MIN_PARTITION || h.partition_bytes > PS_MAX_PARTITION)
        return bad(why, cap, "partition_bytes", h.partition_bytes, PS_MIN_PARTITION,
                   PS_MAX_PARTITION);
    if (h.nkeys == 0 || h.nkeys > PS_MAX_KEYS)
        return bad(why, cap, "nkeys", h.nkeys, 1, PS_MAX_KEYS);
    if (efps_tp_rkey_unpack(m + 32, &h.pull_rkey) != EFPS_OK) {
        snprintf(why, cap, "LAYOUT carries no valid region key");
        return EFPS_ERR_PROTO;
    }
    *head_p = h;
    return EFPS_OK;
}

efps_status_t efps__wire_keys(ps_layout_t *l, uint64_t announced, const uint8_t *m, size_t len,
                              char *why, size_t cap)
{
    const uint64_t cnt = len >= 8 ? efps__get_le32(m + 4) : 0;
    if (len < 8 || efps__get_le32(m) != PS_MSG_KEYS) {
        snprintf(why, cap, "KEYS message of %zu byte%s", len, ps_s((long)len));
        return EFPS_ERR_PROTO;
    }
    if (cnt == 0 || cnt > PS_KEYS_PER_MSG)
        return bad(why, cap, "KEYS count", cnt, 1, PS_KEYS_PER_MSG);
    if (len != 8 + PS_KEY_WIRE * cnt) {
        snprintf(why, cap, "KEYS message of %zu byte%s for %llu key%s", len, ps_s((long)len),
                 (unsigned long long)cnt, ps_s((long)cnt));
        return EFPS_ERR_PROTO;
    }
    if (cnt > announced - l->nkeys)
        return bad(why, cap, "keys received", l->nkeys + cnt, 1, announced);
    for (uint64_t k = 0; k < cnt; k++) {
        const uint8_t *e = m + 8 + PS_KEY_WIRE * k;
        const uint64_t n = efps__get_le64(e + 4), block = efps__get_le64(e + 12);
        if (n == 0 || n > PS_MAX_KEY_ELEMS)
            return bad(why, cap, "key n", n, 1, PS_MAX_KEY_ELEMS);
        if (block > PS_MAX_BLOCK)
            return bad(why, cap, "key block", block, 0, PS_MAX_BLOCK);
        /* The room for keys grows with what arrives, not with what was announced. */
        efps_status_t st = efps__layout_append(l, efps__get_le32(e), (size_t)n, (size_t)block);
        if (st != EFPS_OK) {
            snprintf(why, cap, "no memory for key %llu", (unsigned long long)l->nkeys);
            return st;
        }
    }
    return EFPS_OK;
}
