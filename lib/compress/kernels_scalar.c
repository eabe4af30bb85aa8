/* The portable reference. Every SIMD variant must produce exactly these bits;
 * the tests compare against this file. Written for clarity, not speed. */
#include "kernels.h"

/* p of element i for the worker (ef) and the server (red) step. */
static inline float p_ef(const float *x, float a, const float *err, float b, size_t i)
{
    return a * x[i] + b * err[i]; /* no contraction: built with -ffp-contract=off */
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

static void ef_scales(const efps_ef_job_t *j, size_t k0, size_t k1, float *scales)
{
    for (size_t k = k0; k < k1; k++) {
        const size_t lo = k * j->B, hi = lo + j->B < j->n ? lo + j->B : j->n;
        float s[EFPS_L1_PARTIALS] = {0};
        for (size_t i = lo; i < hi; i++)
            s[(i - lo) % EFPS_L1_PARTIALS] += efps_abs(p_ef(j->x, j->a, j->err_in, j->b, i));
        scales[k] = efps_fold16(s) / (float)(hi - lo);
    }
}

static void ef_commit(const efps_ef_job_t *j, size_t k0, size_t k1, const float *scales,
                      uint8_t *signs)
{
    const size_t lo = k0 * j->B, hi = k1 * j->B < j->n ? k1 * j->B : j->n;
    /* A range starting mid-byte continues the byte its predecessor flushed. */
    bitwriter_t w = {signs, (lo & 7) ? signs[lo >> 3] : 0u};
    for (size_t i = lo; i < hi; i++) {
        const float p = p_ef(j->x, j->a, j->err_in, j->b, i), s = scales[i / j->B];
        const int bit = efps_signbit(p);
        put_bit(&w, i, bit);
        j->err_out[i] = p - (bit ? -s : s);
    }
    flush_bits(&w, hi);
}

static void red_scales(const void *const *packed, int m, size_t n, size_t B, const float *err,
                       float b, float *scales)
{
    for (size_t lo = 0, k = 0; lo < n; lo += B, k++) {
        const size_t hi = lo + B < n ? lo + B : n;
        float s[EFPS_L1_PARTIALS] = {0};
        for (size_t i = lo; i < hi; i++) {
            const float p = efps_mean_decoded(packed, m, n, B, i, k) + b * err[i];
            s[(i - lo) % EFPS_L1_PARTIALS] += efps_abs(p);
        }
        scales[k] = efps_fold16(s) / (float)(hi - lo);
    }
}

static void red_commit(const void *const *packed, int m, size_t n, size_t B, float *err, float b,
                       const float *scales, uint8_t *signs)
{
    bitwriter_t w = {signs, 0};
    for (size_t i = 0; i < n; i++) {
        const size_t k = i / B;
        const float p = efps_mean_decoded(packed, m, n, B, i, k) + b * err[i], s = scales[k];
        const int bit = efps_signbit(p);
        put_bit(&w, i, bit);
        err[i] = p - (bit ? -s : s);
    }
    flush_bits(&w, n);
}

static void decode(const void *packed, size_t n, size_t B, float alpha, float *out, int add)
{
    const float *scales = efps_packed_scales(packed);
    const uint8_t *signs = efps_packed_signs(packed, n, B);
    for (size_t i = 0; i < n; i++) {
        const float v = alpha * efps_dec(signs, i, scales[i / B]);
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
        put_bit(&w, i, efps_signbit(u[i]));
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
            neg += efps_bit(packed[k], i);
        int bit = 2 * neg > m ? 1 : 2 * neg < m ? 0 : efps_bit(packed[0], i);
        put_bit(&w, i, bit);
    }
    flush_bits(&w, n);
}

static void sign_decode(const void *packed, size_t n, float alpha, float *out, int add)
{
    for (size_t i = 0; i < n; i++) {
        const float v = efps_bit(packed, i) ? -alpha : alpha;
        out[i] = add ? out[i] + v : v;
    }
}

EFPS_KERNELS_TABLE(efps_kernels_scalar, "scalar");
