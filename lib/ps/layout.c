/* The model layout: keys, their parts, and which server holds each part.
 * Every worker and server computes it from the same declarations, so the
 * placement never travels on the wire. */
#include "ps_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ps_layout_init(ps_layout_t *l, const efps_optim_config_t *optim, size_t partition_bytes,
                    int num_servers)
{
    memset(l, 0, sizeof(*l));
    l->optim = *optim;
    l->partition_bytes = partition_bytes;
    l->num_servers = num_servers;
}

void ps_layout_free(ps_layout_t *l)
{
    free(l->keys);
    free(l->parts);
    memset(l, 0, sizeof(*l));
}

const ps_key_t *ps_layout_find(const ps_layout_t *l, uint32_t key)
{
    for (size_t i = 0; i < l->nkeys; i++)
        if (l->keys[i].key == key)
            return &l->keys[i];
    return NULL;
}

efps_status_t efps__layout_append(ps_layout_t *l, uint32_t key, size_t n, size_t block)
{
    if (n == 0 || n > PS_MAX_KEY_ELEMS || block > PS_MAX_BLOCK || l->nkeys >= PS_MAX_KEYS)
        return EFPS_ERR_INVALID;
    if (l->nkeys == l->cap_keys) {
        size_t cap = l->cap_keys ? 2 * l->cap_keys : 64;
        ps_key_t *k = realloc(l->keys, cap * sizeof(*k));
        if (k == NULL)
            return EFPS_ERR_NOMEM;
        l->keys = k;
        l->cap_keys = cap;
    }
    l->keys[l->nkeys++] = (ps_key_t){.key = key, .n = n, .block = block};
    return EFPS_OK;
}

efps_status_t ps_layout_add(ps_layout_t *l, uint32_t key, size_t n, size_t block)
{
    if (ps_layout_find(l, key) != NULL)
        return EFPS_ERR_INVALID;
    return efps__layout_append(l, key, n, block);
}

efps_optim_config_t ps_key_optim(const ps_layout_t *l, const ps_key_t *k)
{
    efps_optim_config_t o = l->optim;
    o.block = k->block;
    return o;
}

/* Elements per part of key k: the partition size, cut to whole blocks when
 * blocks are fixed, so a part's blocks are the tensor's blocks. */
static size_t part_elems(const ps_layout_t *l, const ps_key_t *k)
{
    size_t p = l->partition_bytes / 4;
    const size_t b = l->optim.compressor == EFPS_COMP_BLOCKSIGN ? k->block : 0;
    if (b > 0 && p >= b)
        p -= p % b;
    return p < 16 ? 16 : p;
}

static int cmp_u32(const void *a, const void *b)
{
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* A key declared twice: found by sorting a copy, so a layout from the wire
 * costs n log n, not n^2. */
static efps_status_t check_unique(const ps_layout_t *l)
{
    uint32_t *ids = malloc((l->nkeys ? l->nkeys : 1) * sizeof(*ids));
    if (ids == NULL)
        return EFPS_ERR_NOMEM;
    for (size_t i = 0; i < l->nkeys; i++)
        ids[i] = l->keys[i].key;
    qsort(ids, l->nkeys, sizeof(*ids), cmp_u32);
    efps_status_t st = EFPS_OK;
    for (size_t i = 1; i < l->nkeys && st == EFPS_OK; i++)
        if (ids[i] == ids[i - 1])
            st = EFPS_ERR_INVALID;
    free(ids);
    return st;
}

static efps_status_t invalid(char *why, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static efps_status_t invalid(char *why, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return EFPS_ERR_INVALID;
}

/* The number of parts, each term and the sum checked against the limits
 * before anything is allocated by it. The bookkeeping per part (~200 bytes
 * on a server) is bounded by the model itself: beyond PS_PARTS_FREE parts,
 * each must stand for PS_MODEL_PER_PART bytes of fp32 model on average, so a
 * short LAYOUT cannot make a server reserve far more than the model. */
static efps_status_t count_parts(const ps_layout_t *l, size_t *nparts_p, char *why, size_t cap)
{
    uint64_t nparts = 0, elems = 0;
    if (l->partition_bytes < PS_MIN_PARTITION || l->partition_bytes > PS_MAX_PARTITION)
        return invalid(why, cap, "partition bytes %zu outside [%d, %llu]", l->partition_bytes,
                       PS_MIN_PARTITION, (unsigned long long)PS_MAX_PARTITION);
    if (l->num_servers < 1)
        return invalid(why, cap, "no servers");
    for (size_t i = 0; i < l->nkeys; i++) {
        const uint64_t n = l->keys[i].n, pe = part_elems(l, &l->keys[i]);
        if (n == 0 || n > PS_MAX_KEY_ELEMS || l->keys[i].block > PS_MAX_BLOCK)
            return invalid(why, cap, "key %u: %llu elements (1..2^40), block %zu (at most 2^31)",
                           l->keys[i].key, (unsigned long long)n, l->keys[i].block);
        elems += n; /* each term < 2^41 and at most 2^20 of them: no wrap */
        nparts += (n + pe - 1) / pe;
        if (elems > PS_MAX_ELEMS || nparts > PS_MAX_PARTS)
            return invalid(why, cap, "more than %u parts or %llu elements in all", PS_MAX_PARTS,
                           (unsigned long long)PS_MAX_ELEMS);
    }
    if (nparts > PS_PARTS_FREE && nparts > elems * 4 / PS_MODEL_PER_PART)
        return invalid(why, cap,
                       "partition bytes %zu cut %llu bytes of model into %llu parts: beyond %u "
                       "parts each must average %d bytes (a larger EFPS_PARTITION_BYTES)",
                       l->partition_bytes, (unsigned long long)(elems * 4),
                       (unsigned long long)nparts, PS_PARTS_FREE, PS_MODEL_PER_PART);
    *nparts_p = (size_t)nparts;
    const efps_status_t st = check_unique(l);
    return st == EFPS_ERR_INVALID ? invalid(why, cap, "a key declared twice") : st;
}

efps_status_t ps_layout_finish(ps_layout_t *l)
{
    char why[256];
    return efps__layout_finish(l, why, sizeof(why));
}

efps_status_t efps__layout_finish(ps_layout_t *l, char *why, size_t cap)
{
    size_t nparts = 0;
    efps_status_t st = count_parts(l, &nparts, why, cap);
    if (st != EFPS_OK)
        return st;
    l->parts = calloc(nparts ? nparts : 1, sizeof(*l->parts));
    uint64_t *load = calloc((size_t)l->num_servers, sizeof(*load));
    if (l->parts == NULL || load == NULL) {
        free(load);
        return EFPS_ERR_NOMEM;
    }
    l->nparts = 0;
    for (size_t i = 0; i < l->nkeys; i++) {
        ps_key_t *k = &l->keys[i];
        const size_t pe = part_elems(l, k);
        const efps_optim_config_t ko = ps_key_optim(l, k);
        k->first_part = (uint32_t)l->nparts;
        for (size_t off = 0; off < k->n; off += pe) {
            ps_part_t *p = &l->parts[l->nparts++];
            p->key_index = (uint32_t)i;
            p->off = off;
            p->n = k->n - off < pe ? k->n - off : pe;
            p->payload = efps_encoded_size(&ko, p->n);
            p->bytes = p->payload + PS_TRAILER;
            p->stride = efps_align_up(p->bytes, EFPS_ALIGN);
            int best = 0; /* the least loaded server, lowest rank on ties */
            for (int s = 1; s < l->num_servers; s++)
                if (load[s] < load[best])
                    best = s;
            p->server = best;
            load[best] += p->stride;
        }
        k->nparts = (uint32_t)(l->nparts - k->first_part);
    }
    free(load);
    return EFPS_OK;
}

bool ps_layout_differs(const ps_layout_t *a, const ps_layout_t *b, char *why, size_t cap)
{
    if (a->optim.compressor != b->optim.compressor) {
        snprintf(why, cap, "compressor %s vs %s", efps_compressor_name(a->optim.compressor),
                 efps_compressor_name(b->optim.compressor));
        return true;
    }
    if (a->optim.block != b->optim.block) {
        snprintf(why, cap, "block %zu vs %zu", a->optim.block, b->optim.block);
        return true;
    }
    if (a->partition_bytes != b->partition_bytes) {
        snprintf(why, cap, "partition bytes %zu vs %zu", a->partition_bytes, b->partition_bytes);
        return true;
    }
    if (a->nkeys != b->nkeys) {
        snprintf(why, cap, "number of keys %zu vs %zu", a->nkeys, b->nkeys);
        return true;
    }
    for (size_t i = 0; i < a->nkeys; i++) {
        const ps_key_t *x = &a->keys[i], *y = &b->keys[i];
        if (x->key != y->key || x->n != y->n || x->block != y->block) {
            snprintf(why, cap,
                     "declaration %zu: key %u of %zu element%s (block %zu) vs key %u of %zu "
                     "(block %zu)",
                     i, x->key, x->n, ps_s((long)x->n), x->block, y->key, y->n, y->block);
            return true;
        }
    }
    return false;
}
