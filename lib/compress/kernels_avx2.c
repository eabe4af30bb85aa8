/* AVX2 variant. Same arithmetic as kernels_scalar.c, lane by lane: two 8-lane
 * accumulators hold the 16 L1 partial sums of docs/design.md (element j of a block
 * in partial j % 16: the first 8 of every 16 in acc0, the next 8 in acc1).
 * Every op is a separate IEEE multiply or add (no FMA), so the bits match.
 *
 * Compiled for AVX2 through a target pragma; runs only after
 * efps_cpu_best_simd() said the CPU and OS support it. */
#include "kernels.h"

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2")

#define W 8 /* lanes */

typedef struct {
    const float *x, *err;
    float a, b;
    const void *const *packed; /* server: the m workers' packed tensors */
    int m;
    size_t n, B;
    size_t k0, k1; /* the blocks to walk */
    size_t signs_off;
    const float *pbuf; /* p precomputed for elements pbase.. (or NULL) */
    size_t pbase;
} src_t;

/* All-ones in the first len lanes. */
EFPS_INLINE __m256i lanes(size_t len)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(len > W ? W : len)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Row b: lane j is the sign bit where bit j of b is set, else 0 (8 KiB, in
 * L1 while a kernel runs): one load turns a sign byte into a lane mask, where
 * broadcast, and and compare took three operations. */
#define LUT_LANE(b, j) (((b) >> (j)) & 1 ? 0x80000000u : 0u)
#define LUT_ROW(b)                                                                                 \
    {                                                                                              \
        LUT_LANE(b, 0), LUT_LANE(b, 1), LUT_LANE(b, 2), LUT_LANE(b, 3), LUT_LANE(b, 4),            \
            LUT_LANE(b, 5), LUT_LANE(b, 6), LUT_LANE(b, 7)                                         \
    }
#define LUT_4(b)  LUT_ROW(b), LUT_ROW(b + 1), LUT_ROW(b + 2), LUT_ROW(b + 3)
#define LUT_16(b) LUT_4(b), LUT_4(b + 4), LUT_4(b + 8), LUT_4(b + 12)
#define LUT_64(b) LUT_16(b), LUT_16(b + 16), LUT_16(b + 32), LUT_16(b + 48)
static const uint32_t sign_lut[256][W]
    __attribute__((aligned(32))) = {LUT_64(0), LUT_64(64), LUT_64(128), LUT_64(192)};

/* Lane j is the sign bit (-0.0f) where bit j of bits (< 256) is set, else
 * +0.0f: blendv selects by it, xor flips signs with it. */
EFPS_INLINE __m256 bits_to_lanes(unsigned bits)
{
    return _mm256_load_ps((const float *)sign_lut[bits & 255]);
}

/* Bits [i, i+len) of a sign stream, len <= 8, reading no byte past i+len. */
EFPS_INLINE unsigned load_bits(const uint8_t *s, size_t i, size_t len)
{
    const unsigned sh = i & 7;
    if (sh == 0 && len == W) /* the hot path: one whole byte */
        return s[i >> 3];
    const size_t nbytes = (sh + len + 7) / 8;
    uint16_t v = 0;
    memcpy(&v, s + (i >> 3), nbytes);
    return ((unsigned)v >> sh) & ((1u << len) - 1);
}

/* Loads len <= W floats; full vectors (the hot path) without a mask. */
EFPS_INLINE __m256 load_lanes(const float *p, size_t len)
{
    return len == W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes(len));
}

EFPS_INLINE __m256 p_ef(const src_t *c, size_t i, size_t len)
{
    const __m256 x = load_lanes(c->x + i, len), e = load_lanes(c->err + i, len);
    return _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(c->a), x),
                         _mm256_mul_ps(_mm256_set1_ps(c->b), e));
}

EFPS_INLINE __m256 p_red(const src_t *c, size_t i, size_t len, size_t blk)
{
    __m256 sum = _mm256_setzero_ps();
    for (int w = 0; w < c->m; w++) {
        const float s = ((const float *)c->packed[w])[blk];
        const uint8_t *sg = (const uint8_t *)c->packed[w] + c->signs_off;
        const __m256 d = _mm256_blendv_ps(_mm256_set1_ps(s), _mm256_set1_ps(-s),
                                          bits_to_lanes(load_bits(sg, i, len)));
        sum = w == 0 ? d : _mm256_add_ps(sum, d);
    }
    const __m256 mean = _mm256_div_ps(sum, _mm256_set1_ps((float)c->m));
    const __m256 e = load_lanes(c->err + i, len);
    return _mm256_add_ps(mean, _mm256_mul_ps(_mm256_set1_ps(c->b), e));
}

/* p of the first len lanes (len may exceed W in a block's tail: capped). */
EFPS_INLINE __m256 p_at(const src_t *c, size_t i, size_t len, size_t blk)
{
    len = len > W ? W : len;
    if (c->pbuf) /* computed once by p_fill, read back from L1 */
        return load_lanes(c->pbuf + (i - c->pbase), len);
    return c->packed ? p_red(c, i, len, blk) : p_ef(c, i, len);
}

/* |p| in the first len lanes, +0 elsewhere (even where p is NaN). */
EFPS_INLINE __m256 abs_lanes(__m256 p, size_t len)
{
    const __m256i absmask = len == W ? _mm256_set1_epi32(0x7fffffff)
                                     : _mm256_and_si256(_mm256_set1_epi32(0x7fffffff), lanes(len));
    return _mm256_and_ps(p, _mm256_castsi256_ps(absmask));
}

EFPS_INLINE void scales_walk(const src_t *c, float *scales)
{
    for (size_t blk = c->k0; blk < c->k1; blk++) {
        const size_t lo = blk * c->B, hi = lo + c->B < c->n ? lo + c->B : c->n;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        size_t i = lo;
        for (; i + 2 * W <= hi; i += 2 * W) {
            acc0 = _mm256_add_ps(acc0, abs_lanes(p_at(c, i, W, blk), W));
            acc1 = _mm256_add_ps(acc1, abs_lanes(p_at(c, i + W, W, blk), W));
        }
        if (i < hi) {
            const size_t r = hi - i;
            acc0 = _mm256_add_ps(acc0, abs_lanes(p_at(c, i, r, blk), r));
            if (r > W)
                acc1 = _mm256_add_ps(acc1, abs_lanes(p_at(c, i + W, r - W, blk), r - W));
        }
        float part[2 * W];
        _mm256_storeu_ps(part, acc0);
        _mm256_storeu_ps(part + W, acc1);
        scales[blk] = efps__fold16(part) / (float)(hi - lo);
    }
}

EFPS_INLINE unsigned commit_unit(const src_t *c, float *err, size_t i, size_t len, size_t blk,
                                 __m256 vs, __m256 vns)
{
    const __m256 p = p_at(c, i, len, blk);
    const unsigned neg = (unsigned)_mm256_movemask_ps(p) & ((1u << len) - 1);
    const __m256 d = _mm256_blendv_ps(vs, vns, p); /* blendv picks by the sign bit of p */
    if (len == W)
        _mm256_storeu_ps(err + i, _mm256_sub_ps(p, d));
    else
        _mm256_maskstore_ps(err + i, lanes(len), _mm256_sub_ps(p, d));
    return neg;
}

EFPS_INLINE void put_bits(uint8_t *signs, size_t i, unsigned bits)
{
    if (i & 7)
        signs[i >> 3] |= (uint8_t)(bits << (i & 7));
    else
        signs[i >> 3] = (uint8_t)bits;
}

EFPS_INLINE void commit_walk(const src_t *c, float *err, const float *scales, uint8_t *signs)
{
    for (size_t blk = c->k0; blk < c->k1; blk++) {
        const size_t lo = blk * c->B, hi = lo + c->B < c->n ? lo + c->B : c->n;
        const __m256 vs = _mm256_set1_ps(scales[blk]), vns = _mm256_set1_ps(-scales[blk]);
        size_t i = lo;
        while (i < hi) {
            if ((i & 255) == 0 && i + 256 <= hi) {
                /* 256 elements = 32 sign bytes: one aligned vector store. */
                uint8_t group[32] __attribute__((aligned(32)));
                for (int u = 0; u < 32; u++, i += W)
                    group[u] = (uint8_t)commit_unit(c, err, i, W, blk, vs, vns);
                _mm256_store_si256((__m256i *)(signs + ((i - 256) >> 3)),
                                   _mm256_load_si256((const __m256i *)group));
                continue;
            }
            size_t len = W - (i & 7);
            if (len > hi - i)
                len = hi - i;
            put_bits(signs, i, commit_unit(c, err, i, len, blk, vs, vns));
            i += len;
        }
    }
}

/* out = v, or out += v, in the first len lanes. */
EFPS_INLINE void emit(float *out, size_t len, __m256 v, int add)
{
    if (add)
        v = _mm256_add_ps(load_lanes(out, len), v);
    if (len == W)
        _mm256_storeu_ps(out, v);
    else
        _mm256_maskstore_ps(out, lanes(len), v);
}

static int sign_pack(const float *u, size_t n, uint8_t *signs)
{
    const __m256i expo = _mm256_set1_epi32(0x7f800000);
    unsigned bad = 0;
    size_t i = 0;
    /* 256 elements = 32 sign bytes: whole vectors in, one aligned store out. */
    for (; i + 256 <= n; i += 256) {
        uint8_t group[32] __attribute__((aligned(32)));
        for (int g = 0; g < 32; g++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(u + i + (size_t)g * W));
            const __m256i inf = _mm256_cmpeq_epi32(_mm256_and_si256(v, expo), expo);
            bad |= (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(inf));
            group[g] = (uint8_t)_mm256_movemask_ps(_mm256_castsi256_ps(v));
        }
        _mm256_store_si256((__m256i *)(signs + i / 8), _mm256_load_si256((const __m256i *)group));
    }
    for (; i < n; i += W) {
        const size_t len = n - i < W ? n - i : W;
        const unsigned k = (1u << len) - 1;
        const __m256i v = _mm256_castps_si256(load_lanes(u + i, len));
        const __m256i inf = _mm256_cmpeq_epi32(_mm256_and_si256(v, expo), expo);
        bad |= (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(inf)) & k;
        signs[i >> 3] = (uint8_t)((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(v)) & k);
    }
    return bad != 0;
}

/* What is the same in both SIMD variants: the public-table wrappers, the
 * decoders and the bit-sliced majority vote, stamped from one template at
 * this ISA from these primitives (and load_bits, emit). */
typedef __m256 vec_t;
EFPS_INLINE vec_t vset1(float v)
{
    return _mm256_set1_ps(v);
}
/* Lane j: -v[j] where bit j of bits is set, else v[j] (a sign flip: the
 * bits of -s). */
EFPS_INLINE vec_t vsigned(unsigned bits, vec_t v)
{
    return _mm256_xor_ps(v, bits_to_lanes(bits));
}
EFPS_INLINE vec_t vload(const float *p, size_t len)
{
    return load_lanes(p, len);
}
EFPS_INLINE vec_t vadd(vec_t a, vec_t b)
{
    return _mm256_add_ps(a, b);
}
EFPS_INLINE vec_t vmul(vec_t a, vec_t b)
{
    return _mm256_mul_ps(a, b);
}
EFPS_INLINE vec_t vdiv(vec_t a, vec_t b)
{
    return _mm256_div_ps(a, b);
}
typedef uint64_t vbits_t __attribute__((vector_size(32)));
#define VBYTES 32
#include "kernels_simd.h"

#pragma GCC pop_options

EFPS_KERNELS_TABLE(efps__kernels_avx2, "avx2");
