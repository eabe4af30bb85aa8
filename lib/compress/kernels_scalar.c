/* The portable reference. Every SIMD variant must produce exactly these bits;
 * the tests compare against this file. Written for clarity, not speed. */
#include "kernels.h"

/* p of element i (of block k): worker, server, or read back from pbuf. */
static inline float p_of(const efps_job_t *j, size_t i, size_t k)
{
    if (j->pbuf)
        return j->pbuf[i - j->pbase];
    if (j->packed) /* no contraction: built with -ffp-contract=off */
        return efps__mean_decoded(j->packed, j->m, j->n, j->B, i, k) + j->b * j->err_in[i];
    return j->a * j->x[i] + j->b * j->err_in[i];
}

/* Sign bits are produced in element order; a byte is stored when full. */
typedef struct {
    uint8_t *signs;
    unsigned acc;
} bitwriter_t;

static inline void put_bit(bitwriter_t *w, size_t i, int bit)
{
    w->acc |= (unsigned)bit << (i & 7);
    if ((i & 7) == 7) {
        w->signs[i >> 3] = (uint8_t)w->acc;
        w->acc = 0;
    }
}

static inline void flush_bits(bitwriter_t *w, size_t n)
{
    if (n & 7)
        w->signs[n >> 3] = (uint8_t)w->acc;
}

static void scales(const efps_job_t *j, size_t k0, size_t k1, float *out)
{
    for (size_t k = k0; k < k1; k++) {
        const size_t lo = k * j->B, hi = lo + j->B < j->n ? lo + j->B : j->n;
        float s[EFPS_L1_PARTIALS] = {0};
        for (size_t i = lo; i < hi; i++)
            s[(i - lo) % EFPS_L1_PARTIALS] += efps__abs(p_of(j, i, k));
        out[k] = efps__fold16(s) / (float)(hi - lo);
    }
}

static void commit(const efps_job_t *j, size_t k0, size_t k1, const float *sc, uint8_t *signs)
{
    const size_t lo = k0 * j->B, hi = k1 * j->B < j->n ? k1 * j->B : j->n;
    /* A range starting mid-byte continues the byte its predecessor flushed. */
    bitwriter_t w = {signs, (lo & 7) ? signs[lo >> 3] : 0u};
    for (size_t i = lo; i < hi; i++) {
        const float p = p_of(j, i, i / j->B), s = sc[i / j->B];
        const int bit = efps__signbit(p);
        put_bit(&w, i, bit);
        j->err_out[i] = p - (bit ? -s : s);
    }
    flush_bits(&w, hi);
}

/* Server jobs only (see kernels.h); p_of would serve a worker job too. */
static void p_fill(const efps_job_t *j, size_t k0, size_t k1, float *pbuf)
{
    const size_t lo = k0 * j->B, hi = k1 * j->B < j->n ? k1 * j->B : j->n;
    for (size_t i = lo; i < hi; i++)
        pbuf[i - lo] = p_of(j, i, i / j->B);
}

static void decode(const void *packed, size_t n, size_t B, float alpha, float *out, int add)
{
    const float *scales = efps__packed_scales(packed);
    const uint8_t *signs = efps__packed_signs(packed, n, B);
    for (size_t i = 0; i < n; i++) {
        const float v = alpha * efps__dec(signs, i, scales[i / B]);
        out[i] = add ? out[i] + v : v;
    }
}

static int sign_pack(const float *u, size_t n, uint8_t *signs)
{
    bitwriter_t w = {signs, 0};
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &u[i], 4);
        bad |= (bits & 0x7f800000u) == 0x7f800000u;
        put_bit(&w, i, efps__signbit(u[i]));
    }
    flush_bits(&w, n);
    return bad;
}

static void sign_majority(const void *const *packed, int m, size_t n, uint8_t *out)
{
    bitwriter_t w = {out, 0};
    for (size_t i = 0; i < n; i++) {
        int neg = 0;
        for (int k = 0; k < m; k++)
            neg += efps__bit(packed[k], i);
        int bit = 2 * neg > m ? 1 : 2 * neg < m ? 0 : efps__bit(packed[0], i);
        put_bit(&w, i, bit);
    }
    flush_bits(&w, n);
}

static void sign_decode(const void *packed, size_t n, float alpha, float *out, int add)
{
    for (size_t i = 0; i < n; i++) {
        const float v = efps__bit(packed, i) ? -alpha : alpha;
        out[i] = add ? out[i] + v : v;
    }
}

EFPS_KERNELS_TABLE(efps__kernels_scalar, "scalar");
