/* Test-side transcriptions of the packed-block format and its arithmetic,
 * written from docs/packed-format.md and not
 * from lib/compress, so that the library is checked against the text:
 *
 * - a byte-level view of the format (little-endian scales, LSB-first sign bits,
 *   64-byte aligned sections) that does not use the library's layout helpers;
 * - a float model that must match the library bit for bit (p = fl(a*x) +
 *   fl(b*err), the 16-partial L1 fold, scale = sum / (float)d);
 * - a seeded PRNG for data with mixed magnitudes.
 *
 * The including file must be compiled with -ffp-contract=off (the unit-test
 * CMakeLists does that), or the float model could fuse a*x + b*err. */
#ifndef EFPS_TEST_REF_COMPRESS_H
#define EFPS_TEST_REF_COMPRESS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- PRNG: splitmix64, so every run sees the same data ------------------- */

typedef struct {
    uint64_t s;
} ref_rng_t;

static inline uint64_t ref_rng_next(ref_rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* sign * (1 + f) * 2^e with e uniform in [emin, emax], f a 23-bit fraction;
 * 1 in 64 values is an exact zero of either sign. Mixed magnitudes make the
 * L1 sums lose low bits in a data-dependent way, which is what tells a
 * differently ordered sum from the prescribed one. */
static inline float ref_rng_mixed(ref_rng_t *r, int emin, int emax)
{
    const uint64_t v = ref_rng_next(r);
    if ((v & 63) == 0)
        return (v & 64) ? -0.0f : 0.0f;
    const int e = emin + (int)((v >> 8) % (uint64_t)(emax - emin + 1));
    const float f = ldexpf(1.0f + (float)((v >> 32) & 0x7fffff) * 0x1p-23f, e);
    return (v & 128) ? -f : f;
}

/* ---- layout, computed from docs/packed-format.md -------------------------------- */

typedef struct {
    size_t n, B, nb;   /* elements, block (0 resolved to n), blocks */
    size_t signs_off;  /* align64(4 * nb) */
    size_t sign_bytes; /* ceil(n / 8) */
    size_t size;       /* signs_off + align64(sign_bytes) */
} ref_layout_t;

static inline size_t ref_align64(size_t v)
{
    return (v + 63) / 64 * 64;
}

static inline ref_layout_t ref_layout(size_t n, size_t block)
{
    ref_layout_t L;
    L.n = n;
    L.B = block ? block : n;
    L.nb = n ? (n + L.B - 1) / L.B : 0;
    L.signs_off = ref_align64(4 * L.nb);
    L.sign_bytes = (n + 7) / 8;
    L.size = n ? L.signs_off + ref_align64(L.sign_bytes) : 0;
    return L;
}

static inline float ref_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t ref_u32(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Scale k, read as little-endian bytes whatever the host order. */
static inline float ref_get_scale(const uint8_t *packed, size_t k)
{
    const uint8_t *b = packed + 4 * k;
    return ref_f32((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                   (uint32_t)b[3] << 24);
}

static inline void ref_put_scale(uint8_t *packed, size_t k, float s)
{
    const uint32_t u = ref_u32(s);
    for (int j = 0; j < 4; j++)
        packed[4 * k + (size_t)j] = (uint8_t)(u >> (8 * j));
}

static inline int ref_get_bit(const uint8_t *signs, size_t i)
{
    return (signs[i / 8] >> (i % 8)) & 1;
}

static inline void ref_put_bit(uint8_t *signs, size_t i, int bit)
{
    signs[i / 8] = (uint8_t)(signs[i / 8] | (bit << (i % 8)));
}

/* The IEEE sign bit, so -0.0 and -NaN count as negative. */
static inline int ref_signbit(float v)
{
    return (int)(ref_u32(v) >> 31);
}

/* Element i of a packed tensor: bit ? -s[i / B] : +s[i / B]. */
static inline float ref_decode(const uint8_t *packed, ref_layout_t L, size_t i)
{
    const float s = ref_get_scale(packed, i / L.B);
    return ref_get_bit(packed + L.signs_off, i) ? -s : s;
}

/* ---- float model, bit-exact by docs/packed-format.md ----------------------------------- */

/* ||p||_1 / d with 16 partial sums: element j of the block goes to partial
 * j % 16 in index order, then s[k] += s[k+8], s[k] += s[k+4], s[k] += s[k+2],
 * s[0] += s[1], then one division by d. */
static inline float ref_scale_f(const float *p, size_t d)
{
    float s[16];
    for (int k = 0; k < 16; k++)
        s[k] = 0.0f;
    for (size_t j = 0; j < d; j++)
        s[j % 16] = s[j % 16] + fabsf(p[j]);
    for (int k = 0; k < 8; k++)
        s[k] = s[k] + s[k + 8];
    for (int k = 0; k < 4; k++)
        s[k] = s[k] + s[k + 4];
    for (int k = 0; k < 2; k++)
        s[k] = s[k] + s[k + 2];
    s[0] = s[0] + s[1];
    return s[0] / (float)d;
}

/* C_B(p) into a whole packed image (padding zero) and err = p - decode.
 * Returns 1 (and leaves err alone) when some scale is not finite. */
static inline int ref_pack_model(const float *p, ref_layout_t L, uint8_t *packed, float *err)
{
    int bad = 0;
    memset(packed, 0, L.size);
    for (size_t k = 0; k < L.nb; k++) {
        const size_t lo = k * L.B, d = L.n - lo < L.B ? L.n - lo : L.B;
        const float s = ref_scale_f(p + lo, d);
        bad |= !isfinite(s);
        ref_put_scale(packed, k, s);
    }
    if (bad)
        return 1;
    for (size_t i = 0; i < L.n; i++) {
        const int bit = ref_signbit(p[i]);
        const float s = ref_get_scale(packed, i / L.B);
        ref_put_bit(packed + L.signs_off, i, bit);
        err[i] = p[i] - (bit ? -s : s);
    }
    return 0;
}

/* Worker step: p = fl(a*x) + fl(b*err), each product rounded on its own. */
static inline int ref_ef_model(const float *x, float a, const float *err_in, float b,
                               ref_layout_t L, float *p, uint8_t *packed, float *err_out)
{
    for (size_t i = 0; i < L.n; i++) {
        const float ax = a * x[i], be = b * err_in[i];
        p[i] = ax + be;
    }
    return ref_pack_model(p, L, packed, err_out);
}

/* Server step: p = fl(fl(sum of decoded values, worker 0 first) / m) + fl(b*err). */
static inline int ref_reduce_model(const uint8_t *const *in, int m, const float *err_in, float b,
                                   ref_layout_t L, float *p, uint8_t *packed, float *err_out)
{
    for (size_t i = 0; i < L.n; i++) {
        float sum = ref_decode(in[0], L, i);
        for (int w = 1; w < m; w++)
            sum = sum + ref_decode(in[w], L, i);
        const float mean = sum / (float)m, be = b * err_in[i];
        p[i] = mean + be;
    }
    return ref_pack_model(p, L, packed, err_out);
}

/* Sign stream of u (ceil(n/8) bytes, zero-padded to 64). */
static inline void ref_sign_model(const float *u, size_t n, uint8_t *signs)
{
    memset(signs, 0, ref_align64((n + 7) / 8));
    for (size_t i = 0; i < n; i++)
        ref_put_bit(signs, i, ref_signbit(u[i]));
}

/* Majority of m sign streams; a tie takes worker 0's bit. */
static inline void ref_majority_model(const uint8_t *const *in, int m, size_t n, uint8_t *out)
{
    memset(out, 0, ref_align64((n + 7) / 8));
    for (size_t i = 0; i < n; i++) {
        int neg = 0;
        for (int w = 0; w < m; w++)
            neg += ref_get_bit(in[w], i);
        const int bit = 2 * neg > m ? 1 : 2 * neg < m ? 0 : ref_get_bit(in[0], i);
        ref_put_bit(out, i, bit);
    }
}

#endif
