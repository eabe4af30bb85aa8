/* Internal: the table of kernel primitives that every variant (scalar, AVX2,
 * AVX-512) fills. compress.c validates arguments, lays out the packed
 * format and calls through the table; the variants only do arithmetic.
 *
 * Each public kernel that writes error state runs in two phases over a range
 * of blocks: scales computes every block's scale without writing anything,
 * then, only when all are finite, commit writes the signs and the new error.
 * In place, the range is the whole tensor: that is what lets a non-finite
 * block leave the caller's error untouched. Out of place, the phases alternate
 * chunk by chunk while a chunk is still in L1, and p_fill lets a server
 * chunk's p be computed once and read back by both phases. */
#ifndef EFPS_COMPRESS_KERNELS_H
#define EFPS_COMPRESS_KERNELS_H

#include "efps/compress.h"

#include <stdint.h>
#include <string.h>

/* Helpers of the SIMD variants must inline into their loops: a call per vector
 * (GCC's own choice for the larger ones) costs a factor of three. */
#define EFPS_INLINE static inline __attribute__((always_inline))

/* Elements per chunk of the out-of-place calls (compress.c says why 2048):
 * a server chunk's p goes through a stack buffer of this many floats. */
#define EFPS_CHUNK_ELEMS 2048

/* The 16 partial sums of a block's L1 norm (docs/design.md "Determinism"). */
#define EFPS_L1_PARTIALS 16

/* One worker or server step over n elements in blocks of B. p is
 *   worker (packed == NULL): fl(a*x[i]) + fl(b*err_in[i]);
 *   server: fl(fl(sum_w decode(packed[w])[i], in rank order) / m) + fl(b*err_in[i]);
 *   either, when pbuf != NULL: pbuf[i - pbase], as p_fill stored it.
 * The new error goes to err_out (err_out == err_in: in place). */
typedef struct efps_job {
    const float *x;
    float a;
    const void *const *packed;
    int m;
    const float *err_in;
    float *err_out;
    float b;
    size_t n, B;
    const float *pbuf;
    size_t pbase;
} efps_job_t;

typedef struct efps_kernels {
    const char *name;
    /* For blocks k in [k0, k1): scales[k] = L1(p over block k) / d_k. */
    void (*scales)(const efps_job_t *j, size_t k0, size_t k1, float *scales);
    /* For the elements of blocks [k0, k1): their sign bits of p (a range that
     * ends mid-byte leaves that byte's higher bits zero; one that starts
     * mid-byte keeps the lower bits already there); err_out = p - (bit ? -scale
     * : +scale). Ranges are committed in ascending order. */
    void (*commit)(const efps_job_t *j, size_t k0, size_t k1, const float *scales, uint8_t *signs);
    /* Server jobs: pbuf[i - k0*B] = p[i] for the elements of blocks [k0, k1)
     * (the worker's p is cheaper to recompute than to store and reload). */
    void (*p_fill)(const efps_job_t *j, size_t k0, size_t k1, float *pbuf);
    /* out = alpha * decode, or out += alpha * decode when add != 0. */
    void (*decode)(const void *packed, size_t n, size_t B, float alpha, float *out, int add);
    /* Sign bits of u (all ceil(n/8) bytes). Returns nonzero if u holds NaN or Inf. */
    int (*sign_pack)(const float *u, size_t n, uint8_t *signs);
    void (*sign_majority)(const void *const *packed, int m, size_t n, uint8_t *out);
    void (*sign_decode)(const void *packed, size_t n, float alpha, float *out, int add);
} efps_kernels_t;

/* Each variant file defines the static functions and stamps its table. */
#define EFPS_KERNELS_TABLE(var, str)                                                               \
    const efps_kernels_t var = {                                                                   \
        .name = str,                                                                               \
        .scales = scales,                                                                          \
        .commit = commit,                                                                          \
        .p_fill = p_fill,                                                                          \
        .decode = decode,                                                                          \
        .sign_pack = sign_pack,                                                                    \
        .sign_majority = sign_majority,                                                            \
        .sign_decode = sign_decode,                                                                \
    }

extern const efps_kernels_t efps__kernels_scalar;
extern const efps_kernels_t efps__kernels_avx2;
extern const efps_kernels_t efps__kernels_avx512;

/* ---- helpers shared by the variants (inline, never vectorised by accident:
 * -fno-tree-vectorize is not needed, they are scalar by construction) ---- */

static inline size_t efps__nblocks(size_t n, size_t B)
{
    return n == 0 ? 0 : (n + B - 1) / B;
}

static inline const float *efps__packed_scales(const void *packed)
{
    return (const float *)packed;
}

static inline const uint8_t *efps__packed_signs(const void *packed, size_t n, size_t B)
{
    return (const uint8_t *)packed + efps_align_up(4 * efps__nblocks(n, B), EFPS_ALIGN);
}

/* The fold of docs/design.md: s[k] += s[k+8], s[k] += s[k+4], s[k] += s[k+2], s[0] += s[1]. */
static inline float efps__fold16(float s[EFPS_L1_PARTIALS])
{
    for (int k = 0; k < 8; k++)
        s[k] += s[k + 8];
    for (int k = 0; k < 4; k++)
        s[k] += s[k + 4];
    for (int k = 0; k < 2; k++)
        s[k] += s[k + 2];
    return s[0] + s[1];
}

static inline float efps__abs(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    u &= 0x7fffffffu;
    memcpy(&v, &u, 4);
    return v;
}

static inline int efps__signbit(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return (int)(u >> 31);
}

static inline int efps__bit(const uint8_t *signs, size_t i)
{
    return (signs[i >> 3] >> (i & 7)) & 1;
}

/* Decoded value of element i given its block's scale. */
static inline float efps__dec(const uint8_t *signs, size_t i, float s)
{
    return efps__bit(signs, i) ? -s : s;
}

/* Mean of the m decoded worker values of element i of block k:
 * fl(sum in rank order from worker 0) / m. */
static inline float efps__mean_decoded(const void *const *packed, int m, size_t n, size_t B,
                                       size_t i, size_t k)
{
    const size_t so = efps_align_up(4 * efps__nblocks(n, B), EFPS_ALIGN);
    float sum = 0.0f;
    for (int w = 0; w < m; w++) {
        const float s = ((const float *)packed[w])[k];
        const float d = efps__dec((const uint8_t *)packed[w] + so, i, s);
        sum = (w == 0) ? d : sum + d;
    }
    return sum / (float)m;
}

#endif
