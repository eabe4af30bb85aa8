/* AVX-512 variant (F, BW, DQ, VL). Same arithmetic as kernels_scalar.c, lane
 * by lane: 16 lanes are exactly the 16 L1 partial sums of docs/design.md, element j
 * of a block in lane j % 16. Every op is a separate IEEE multiply or add
 * (no FMA), so the bits match the reference.
 *
 * The whole file is compiled for AVX-512 through a target pragma (no -mavx512f
 * on the command line), so it may only run after efps_cpu_best_simd() said so. */
#include "kernels.h"

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512bw,avx512dq,avx512vl")

#define W 16 /* lanes */

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

EFPS_INLINE __mmask16 lanes(size_t len)
{
    return len >= W ? (__mmask16)0xffff : (__mmask16)((1u << len) - 1);
}

/* Bits [i, i+len) of a sign stream, len <= 16, reading no byte past i+len. */
EFPS_INLINE unsigned load_bits(const uint8_t *s, size_t i, size_t len)
{
    const unsigned sh = i & 7;
    if (sh == 0 && len == W) { /* the hot path: two whole bytes */
        uint16_t v16;
        memcpy(&v16, s + (i >> 3), 2);
        return v16;
    }
    const size_t nbytes = (sh + len + 7) / 8;
    uint32_t v = 0;
    memcpy(&v, s + (i >> 3), nbytes);
    return (v >> sh) & ((1u << len) - 1);
}

/* Loads the lanes in k; a full vector (the hot path) without a mask. */
EFPS_INLINE __m512 load_lanes(const float *p, __mmask16 k)
{
    return k == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(k, p);
}

EFPS_INLINE __m512 p_ef(const src_t *c, size_t i, __mmask16 k)
{
    const __m512 x = load_lanes(c->x + i, k);
    const __m512 e = load_lanes(c->err + i, k);
    return _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(c->a), x),
                         _mm512_mul_ps(_mm512_set1_ps(c->b), e));
}

/* Server p = fl(fl(sum of decoded, rank order) / m) + fl(b*err). */
EFPS_INLINE __m512 p_red(const src_t *c, size_t i, __mmask16 k, size_t len, size_t blk)
{
    __m512 sum = _mm512_setzero_ps();
    for (int w = 0; w < c->m; w++) {
        const float s = ((const float *)c->packed[w])[blk];
        const uint8_t *sg = (const uint8_t *)c->packed[w] + c->signs_off;
        const __mmask16 neg = (__mmask16)load_bits(sg, i, len);
        const __m512 d = _mm512_mask_blend_ps(neg, _mm512_set1_ps(s), _mm512_set1_ps(-s));
        sum = w == 0 ? d : _mm512_add_ps(sum, d);
    }
    const __m512 mean = _mm512_div_ps(sum, _mm512_set1_ps((float)c->m));
    const __m512 e = load_lanes(c->err + i, k);
    return _mm512_add_ps(mean, _mm512_mul_ps(_mm512_set1_ps(c->b), e));
}

EFPS_INLINE __m512 p_at(const src_t *c, size_t i, size_t len, size_t blk)
{
    if (c->pbuf) /* computed once by p_fill, read back from L1 */
        return load_lanes(c->pbuf + (i - c->pbase), lanes(len));
    return c->packed ? p_red(c, i, lanes(len), len, blk) : p_ef(c, i, lanes(len));
}

EFPS_INLINE __m512 vabs(__m512 v)
{
    return _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)));
}

EFPS_INLINE void scales_walk(const src_t *c, float *scales)
{
    for (size_t blk = c->k0; blk < c->k1; blk++) {
        const size_t lo = blk * c->B, hi = lo + c->B < c->n ? lo + c->B : c->n;
        __m512 acc = _mm512_setzero_ps();
        size_t i = lo;
        for (; i + W <= hi; i += W)
            acc = _mm512_add_ps(acc, vabs(p_at(c, i, W, blk)));
        if (i < hi) /* masked: lanes past the block add nothing (not even a NaN) */
            acc = _mm512_mask_add_ps(acc, lanes(hi - i), acc, vabs(p_at(c, i, hi - i, blk)));
        float part[W];
        _mm512_storeu_ps(part, acc);
        scales[blk] = efps__fold16(part) / (float)(hi - lo);
    }
}

/* One unit of <= 16 elements: new error stored, sign bits returned. */
EFPS_INLINE unsigned commit_unit(const src_t *c, float *err, size_t i, size_t len, size_t blk,
                                 __m512 vs, __m512 vns)
{
    const __m512 p = p_at(c, i, len, blk);
    const __mmask16 k = lanes(len);
    const __mmask16 neg = _mm512_movepi32_mask(_mm512_castps_si512(p)) & k;
    const __m512 e = _mm512_sub_ps(p, _mm512_mask_blend_ps(neg, vs, vns));
    if (len == W)
        _mm512_storeu_ps(err + i, e);
    else
        _mm512_mask_storeu_ps(err + i, k, e);
    return neg;
}

/* Stores len bits starting at element i. A unit starting mid-byte ORs into the
 * byte its predecessor (an earlier block) wrote; one starting on a byte
 * boundary owns its bytes. */
EFPS_INLINE void put_bits(uint8_t *signs, size_t i, size_t len, unsigned bits)
{
    if (i & 7) {
        signs[i >> 3] |= (uint8_t)(bits << (i & 7));
        return;
    }
    memcpy(signs + (i >> 3), &bits, (len + 7) / 8);
}

EFPS_INLINE void commit_walk(const src_t *c, float *err, const float *scales, uint8_t *signs)
{
    for (size_t blk = c->k0; blk < c->k1; blk++) {
        const size_t lo = blk * c->B, hi = lo + c->B < c->n ? lo + c->B : c->n;
        const __m512 vs = _mm512_set1_ps(scales[blk]), vns = _mm512_set1_ps(-scales[blk]);
        size_t i = lo;
        while (i < hi) {
            if ((i & 511) == 0 && i + 512 <= hi) {
                /* 512 elements = 64 sign bytes: one aligned vector store. */
                uint16_t group[32] __attribute__((aligned(64)));
                for (int u = 0; u < 32; u++, i += W)
                    group[u] = (uint16_t)commit_unit(c, err, i, W, blk, vs, vns);
                _mm512_store_si512((void *)(signs + ((i - 512) >> 3)), _mm512_load_si512(group));
                continue;
            }
            size_t len = (i & 7) ? 8 - (i & 7) : W;
            if (len > hi - i)
                len = hi - i;
            put_bits(signs, i, len, commit_unit(c, err, i, len, blk, vs, vns));
            i += len;
        }
    }
}

/* out = v, or out += v, in the first len lanes; whole vectors unmasked. */
EFPS_INLINE void emit(float *out, size_t len, __m512 v, int add)
{
    if (len == W) {
        if (add)
            v = _mm512_add_ps(_mm512_loadu_ps(out), v);
        _mm512_storeu_ps(out, v);
        return;
    }
    const __mmask16 k = lanes(len);
    if (add)
        v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, out), v);
    _mm512_mask_storeu_ps(out, k, v);
}

static int sign_pack(const float *u, size_t n, uint8_t *signs)
{
    const __m512i expo = _mm512_set1_epi32(0x7f800000);
    __mmask16 bad = 0;
    size_t i = 0;
    /* 512 elements = 64 sign bytes: whole vectors in, one aligned store out. */
    for (; i + 512 <= n; i += 512) {
        uint16_t group[32] __attribute__((aligned(64)));
        for (int g = 0; g < 32; g++) {
            const __m512i v = _mm512_loadu_si512(u + i + (size_t)g * W);
            bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(v, expo), expo);
            group[g] = _mm512_movepi32_mask(v);
        }
        _mm512_store_si512((void *)(signs + i / 8), _mm512_load_si512(group));
    }
    for (; i < n; i += W) {
        const size_t len = n - i < W ? n - i : W;
        const __mmask16 k = lanes(len);
        const __m512i v = _mm512_maskz_loadu_epi32(k, u + i);
        bad |= _mm512_mask_cmpeq_epi32_mask(k, _mm512_and_si512(v, expo), expo);
        put_bits(signs, i, len, _mm512_movepi32_mask(v) & k);
    }
    return bad != 0;
}

/* What is the same in both SIMD variants: the public-table wrappers, the
 * decoders and the bit-sliced majority vote, stamped from one template at
 * this ISA from these primitives (and load_bits, emit). */
typedef __m512 vec_t;
EFPS_INLINE vec_t vset1(float v)
{
    return _mm512_set1_ps(v);
}
/* Lane j: -v[j] where bit j of bits is set, else v[j] (a sign flip: the
 * bits of -s). */
EFPS_INLINE vec_t vsigned(unsigned bits, vec_t v)
{
    const __m512i vi = _mm512_castps_si512(v);
    return _mm512_castsi512_ps(
        _mm512_mask_xor_epi32(vi, (__mmask16)bits, vi, _mm512_set1_epi32(INT32_MIN)));
}
EFPS_INLINE vec_t vload(const float *p, size_t len)
{
    return load_lanes(p, lanes(len));
}
EFPS_INLINE vec_t vadd(vec_t a, vec_t b)
{
    return _mm512_add_ps(a, b);
}
EFPS_INLINE vec_t vmul(vec_t a, vec_t b)
{
    return _mm512_mul_ps(a, b);
}
EFPS_INLINE vec_t vdiv(vec_t a, vec_t b)
{
    return _mm512_div_ps(a, b);
}
typedef uint64_t vbits_t __attribute__((vector_size(64)));
#define VBYTES 64
#include "kernels_simd.h"

#pragma GCC pop_options

EFPS_KERNELS_TABLE(efps__kernels_avx512, "avx512");
