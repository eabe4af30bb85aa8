/* efps compression kernels: the packed-block format of docs/packed-format.md and the
 * fused error-feedback kernels that produce and consume it.
 *
 * Packed tensor (n float32 elements, block B; B = 0 means B = n):
 *   offset 0               nb = ceil(n/B) float32 scales, zero-padded to 64 bytes
 *   offset align64(4*nb)   ceil(n/8) sign bytes (element i: bit i%8 of byte i/8,
 *                          the IEEE sign bit of p[i]), zero-padded to 64 bytes
 * Element i decodes to bit ? -s[i/B] : +s[i/B].
 *
 * Arithmetic is identical in every variant (scalar, AVX2, AVX-512), bit for
 * bit; see "Determinism" in docs/design.md. All functions are thread-safe on
 * disjoint buffers. Packed *outputs* must be 64-byte aligned (allocate with
 * efps_aligned_alloc); inputs may have any alignment.
 */
#ifndef EFPS_COMPRESS_H
#define EFPS_COMPRESS_H

#include "efps/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of one packed tensor; 0 when n == 0 or the size would overflow. */
EFPS_API size_t efps_packed_size(size_t n, size_t block);
/* Number of blocks (scales) of a packed tensor. */
EFPS_API size_t efps_packed_blocks(size_t n, size_t block);
/* Byte offset of the sign section inside a packed tensor. */
EFPS_API size_t efps_packed_signs_offset(size_t n, size_t block);

/* Worker step: p = fl(a*x) + fl(b*err); packed = C_B(p); err = p - decode(packed).
 * On EFPS_ERR_NONFINITE (a block whose scale is NaN or Inf) err is left exactly
 * as it was and packed is unspecified. */
EFPS_API efps_status_t efps_ef_compress(const float *x, float a, float *err, float b, size_t n,
                                        size_t block, void *packed);

/* The worker step out of place: p = fl(a*x) + fl(b*err_in); packed = C_B(p);
 * err_out = p - decode(packed), the same bits as efps_ef_compress. err_in is
 * only read, so the step reads every input once even when the tensor is far
 * larger than the caches (in place, the nothing-lost rule makes
 * efps_ef_compress read x and err twice: it must see every block before it
 * may overwrite any error). Callers that keep two error buffers and swap them
 * on success get both. err_out must not overlap x or err_in, unless it is
 * err_in (then this is efps_ef_compress). On EFPS_ERR_NONFINITE err_out and
 * packed are unspecified and err_in is as it was. */
EFPS_API efps_status_t efps_ef_compress_to(const float *x, float a, const float *err_in, float b,
                                           float *err_out, size_t n, size_t block, void *packed);

/* out = alpha * decode(packed). */
EFPS_API efps_status_t efps_decompress(const void *packed, size_t n, size_t block, float alpha,
                                       float *out);
/* acc += alpha * decode(packed) (each term rounded: fl(acc + fl(alpha*d))). */
EFPS_API efps_status_t efps_decompress_add(const void *packed, size_t n, size_t block, float alpha,
                                           float *acc);

/* Server step: p = fl(fl(sum_{w=0..m-1} decode(packed[w])) / m) + fl(b*err), the sum in
 * rank order starting from worker 0's values; out = C_B(p); err = p - decode(out).
 * On EFPS_ERR_NONFINITE err is left exactly as it was. */
EFPS_API efps_status_t efps_server_reduce(const void *const *packed, int m, size_t n, size_t block,
                                          float *err, float b, void *out);
/* The server step out of place, as efps_ef_compress_to is the worker's: the
 * same bits as efps_server_reduce, err_in only read, p computed once per
 * element (in place, a tensor of more than one 2048-element chunk computes it
 * twice). err_out must be err_in or not overlap it. On EFPS_ERR_NONFINITE
 * err_out and out are unspecified and err_in is as it was. */
EFPS_API efps_status_t efps_server_reduce_to(const void *const *packed, int m, size_t n,
                                             size_t block, const float *err_in, float b,
                                             float *err_out, void *out);

/* ---- sign-only compressor (signSGD / signum with majority vote) ----------
 * A sign stream is ceil(n/8) bytes of IEEE sign bits, zero-padded to 64. */
EFPS_API size_t efps_sign_packed_size(size_t n);
/* packed = sign bits of u. A NaN or Inf in u is EFPS_ERR_NONFINITE. */
EFPS_API efps_status_t efps_sign_pack(const float *u, size_t n, void *packed);
/* out bit = majority of the m input bits (1 = negative); a tie (even m) takes
 * worker 0's bit, so the vote is deterministic and not biased to one sign. */
EFPS_API efps_status_t efps_sign_majority(const void *const *packed, int m, size_t n, void *out);
/* out = alpha * (bit ? -1 : +1). */
EFPS_API efps_status_t efps_sign_decompress(const void *packed, size_t n, float alpha, float *out);

/* ---- variant selection ----------------------------------------------------
 * The variant is picked once, on first use: EFPS_SIMD if set, else the best
 * the CPU runs. EFPS_SIMD naming a variant the CPU lacks makes every kernel
 * return EFPS_ERR_UNSUPPORTED (and logs why once). */
EFPS_API efps_simd_t efps_compress_simd(void);
/* Switch variant (tests, benchmarks). EFPS_ERR_UNSUPPORTED if the CPU lacks it. */
EFPS_API efps_status_t efps_compress_set_simd(efps_simd_t simd);

#ifdef __cplusplus
}
#endif
#endif
