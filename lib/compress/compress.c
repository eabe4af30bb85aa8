/* Public compression calls: argument checks, packed layout, variant dispatch.
 * The arithmetic is in kernels_<variant>.c. */
#include "kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

static const efps_kernels_t *const variants[] = {
    [EFPS_SIMD_SCALAR] = &efps_kernels_scalar,
    [EFPS_SIMD_AVX2] = &efps_kernels_avx2,
    [EFPS_SIMD_AVX512] = &efps_kernels_avx512,
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const efps_kernels_t *active;
static efps_simd_t active_simd;
static efps_status_t init_status;

static void pick_variant(void)
{
    const char *want = efps_config_get("EFPS_SIMD");
    efps_simd_t simd = efps_cpu_best_simd();
    if (want != NULL && *want != '\0') {
        if (efps_simd_parse(want, &simd) != EFPS_OK) {
            efps_error("EFPS_SIMD='%s' is not one of scalar|avx2|avx512", want);
            init_status = EFPS_ERR_INVALID;
            return;
        }
        if (simd > efps_cpu_best_simd()) {
            efps_error("EFPS_SIMD=%s: this CPU (or its OS) supports at most %s", want,
                       efps_simd_name(efps_cpu_best_simd()));
            init_status = EFPS_ERR_UNSUPPORTED;
            return;
        }
    }
    active = variants[simd];
    active_simd = simd;
    efps_debug("compression kernels: %s", active->name);
}

static efps_status_t kernels(const efps_kernels_t **k_p)
{
    pthread_once(&once, pick_variant);
    if (active == NULL)
        return init_status;
    *k_p = active;
    return EFPS_OK;
}

efps_simd_t efps_compress_simd(void)
{
    pthread_once(&once, pick_variant);
    return active_simd;
}

efps_status_t efps_compress_set_simd(efps_simd_t simd)
{
    if ((int)simd < EFPS_SIMD_SCALAR || simd > EFPS_SIMD_AVX512)
        return EFPS_ERR_INVALID;
    if (simd > efps_cpu_best_simd())
        return EFPS_ERR_UNSUPPORTED;
    pthread_once(&once, pick_variant);
    active = variants[simd];
    active_simd = simd;
    return EFPS_OK;
}

/* ---- layout ------------------------------------------------------------- */

/* Largest n whose packed size and float arrays cannot overflow size_t. */
#define MAX_ELEMS (SIZE_MAX / 8)

size_t efps_packed_blocks(size_t n, size_t block)
{
    return efps_nblocks(n, block ? block : n);
}

size_t efps_packed_signs_offset(size_t n, size_t block)
{
    if (n > MAX_ELEMS)
        return 0;
    return efps_align_up(4 * efps_packed_blocks(n, block), EFPS_ALIGN);
}

size_t efps_packed_size(size_t n, size_t block)
{
    if (n == 0 || n > MAX_ELEMS)
        return 0;
    return efps_packed_signs_offset(n, block) + efps_align_up((n + 7) / 8, EFPS_ALIGN);
}

size_t efps_sign_packed_size(size_t n)
{
    if (n == 0 || n > MAX_ELEMS)
        return 0;
    return efps_align_up((n + 7) / 8, EFPS_ALIGN);
}

/* Zero what the kernels do not write: scale padding and sign padding. */
static void zero_padding(uint8_t *packed, size_t n, size_t B)
{
    const size_t nb = efps_nblocks(n, B), so = efps_align_up(4 * nb, EFPS_ALIGN);
    memset(packed + 4 * nb, 0, so - 4 * nb);
    const size_t sb = (n + 7) / 8;
    memset(packed + so + sb, 0, efps_align_up(sb, EFPS_ALIGN) - sb);
}

static int all_finite(const float *v, size_t count)
{
    for (size_t k = 0; k < count; k++)
        if (!isfinite(v[k]))
            return 0;
    return 1;
}

static int aligned64(const void *p)
{
    return ((uintptr_t)p & (EFPS_ALIGN - 1)) == 0;
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            efps_debug(__VA_ARGS__);                                                               \
            return EFPS_ERR_INVALID;                                                               \
        }                                                                                          \
    } while (0)

/* ---- the calls ------------------------------------------------------------ */

static efps_status_t ef_check(const efps_kernels_t **k, const float *x, const float *err_in,
                              const float *err_out, size_t n, const void *packed)
{
    efps_status_t st = kernels(k);
    if (st != EFPS_OK)
        return st;
    CHECK(x != NULL && err_in != NULL && err_out != NULL && packed != NULL,
          "ef_compress: NULL buffer");
    CHECK(n <= MAX_ELEMS, "ef_compress: n=%zu too large", n);
    CHECK(aligned64(packed), "ef_compress: packed output %p not 64-byte aligned", packed);
    return EFPS_OK;
}

efps_status_t efps_ef_compress(const float *x, float a, float *err, float b, size_t n, size_t block,
                               void *packed)
{
    const efps_kernels_t *k = NULL;
    efps_status_t st = ef_check(&k, x, err, err, n, packed);
    if (st != EFPS_OK || n == 0)
        return st;
    const efps_ef_job_t j = {
        .x = x, .err_in = err, .err_out = err, .a = a, .b = b, .n = n, .B = block ? block : n};
    const size_t nb = efps_nblocks(n, j.B);
    float *scales = packed;
    /* Every scale before any write: one bad block anywhere leaves err as it was. */
    k->ef_scales(&j, 0, nb, scales);
    if (!all_finite(scales, nb))
        return EFPS_ERR_NONFINITE;
    k->ef_commit(&j, 0, nb, scales, (uint8_t *)packed + efps_packed_signs_offset(n, j.B));
    zero_padding(packed, n, j.B);
    return EFPS_OK;
}

/* Elements per chunk of the out-of-place call (whole blocks, at least one):
 * x and err_in of a chunk (16 KiB) stay in L1 between its two phases, so each
 * is read from memory once. Short chunks also keep reads and writes to memory
 * interleaved; at 64 Mi elements, block 2048, on the AMD EPYC VM we measure on
 * (perf/bench_compress): 2048 -> 0.96 of the memory pass, 4096 -> 0.79,
 * 16384 -> 0.79, 65536 -> 0.74. */
#define EF_CHUNK_ELEMS 2048

static int overlap(const float *p, const float *q, size_t n)
{
    return (uintptr_t)p < (uintptr_t)(q + n) && (uintptr_t)q < (uintptr_t)(p + n);
}

efps_status_t efps_ef_compress_to(const float *x, float a, const float *err_in, float b,
                                  float *err_out, size_t n, size_t block, void *packed)
{
    if (err_out == err_in)
        return efps_ef_compress(x, a, err_out, b, n, block, packed);
    const efps_kernels_t *k = NULL;
    efps_status_t st = ef_check(&k, x, err_in, err_out, n, packed);
    if (st != EFPS_OK || n == 0)
        return st;
    CHECK(!overlap(err_out, err_in, n) && !overlap(err_out, x, n),
          "ef_compress_to: err_out overlaps x or err_in");
    const efps_ef_job_t j = {.x = x,
                             .err_in = err_in,
                             .err_out = err_out,
                             .a = a,
                             .b = b,
                             .n = n,
                             .B = block ? block : n};
    const size_t nb = efps_nblocks(n, j.B), step = j.B < EF_CHUNK_ELEMS ? EF_CHUNK_ELEMS / j.B : 1;
    float *scales = packed;
    uint8_t *signs = (uint8_t *)packed + efps_packed_signs_offset(n, j.B);
    /* err_in is never written, so a bad block after some committed chunks
     * loses nothing: the caller still holds the old error. */
    for (size_t k0 = 0; k0 < nb; k0 += step) {
        const size_t k1 = k0 + step < nb ? k0 + step : nb;
        k->ef_scales(&j, k0, k1, scales);
        if (!all_finite(scales + k0, k1 - k0))
            return EFPS_ERR_NONFINITE;
        k->ef_commit(&j, k0, k1, scales, signs);
    }
    zero_padding(packed, n, j.B);
    return EFPS_OK;
}

static efps_status_t decode_common(const void *packed, size_t n, size_t block, float alpha,
                                   float *out, int add)
{
    const efps_kernels_t *k = NULL;
    efps_status_t st = kernels(&k);
    if (st != EFPS_OK || n == 0)
        return st;
    CHECK(packed != NULL && out != NULL, "decompress: NULL buffer");
    CHECK(n <= MAX_ELEMS, "decompress: n=%zu too large", n);
    k->decode(packed, n, block ? block : n, alpha, out, add);
    return EFPS_OK;
}

efps_status_t efps_decompress(const void *packed, size_t n, size_t block, float alpha, float *out)
{
    return decode_common(packed, n, block, alpha, out, 0);
}

efps_status_t efps_decompress_add(const void *packed, size_t n, size_t block, float alpha,
                                  float *acc)
{
    return decode_common(packed, n, block, alpha, acc, 1);
}

static int inputs_ok(const void *const *packed, int m)
{
    if (packed == NULL || m < 1)
        return 0;
    for (int w = 0; w < m; w++)
        if (packed[w] == NULL)
            return 0;
    return 1;
}

efps_status_t efps_server_reduce(const void *const *packed, int m, size_t n, size_t block,
                                 float *err, float b, void *out)
{
    const efps_kernels_t *k = NULL;
    efps_status_t st = kernels(&k);
    if (st != EFPS_OK || n == 0)
        return st;
    CHECK(inputs_ok(packed, m) && err != NULL && out != NULL, "server_reduce: bad buffers, m=%d",
          m);
    CHECK(n <= MAX_ELEMS, "server_reduce: n=%zu too large", n);
    CHECK(aligned64(out), "server_reduce: packed output %p not 64-byte aligned", out);
    const size_t B = block ? block : n;
    float *scales = out;
    k->red_scales(packed, m, n, B, err, b, scales);
    if (!all_finite(scales, efps_nblocks(n, B)))
        return EFPS_ERR_NONFINITE;
    k->red_commit(packed, m, n, B, err, b, scales, (uint8_t *)out + efps_packed_signs_offset(n, B));
    zero_padding(out, n, B);
    return EFPS_OK;
}

static void zero_sign_padding(uint8_t *signs, size_t n)
{
    const size_t sb = (n + 7) / 8;
    memset(signs + sb, 0, efps_align_up(sb, EFPS_ALIGN) - sb);
}

efps_status_t efps_sign_pack(const float *u, size_t n, void *packed)
{
    const efps_kernels_t *k = NULL;
    efps_status_t st = kernels(&k);
    if (st != EFPS_OK || n == 0)
        return st;
    CHECK(u != NULL && packed != NULL, "sign_pack: NULL buffer");
    CHECK(n <= MAX_ELEMS, "sign_pack: n=%zu too large", n);
    CHECK(aligned64(packed), "sign_pack: output %p not 64-byte aligned", packed);
    if (k->sign_pack(u, n, packed))
        return EFPS_ERR_NONFINITE;
    zero_sign_padding(packed, n);
    return EFPS_OK;
}

efps_status_t efps_sign_majority(const void *const *packed, int m, size_t n, void *out)
{
    const efps_kernels_t *k = NULL;
    efps_status_t st = kernels(&k);
    if (st != EFPS_OK || n == 0)
        return st;
    CHECK(inputs_ok(packed, m) && out != NULL, "sign_majority: bad buffers, m=%d", m);
    CHECK(n <= MAX_ELEMS, "sign_majority: n=%zu too large", n);
    CHECK(aligned64(out), "sign_majority: output %p not 64-byte aligned", out);
    k->sign_majority(packed, m, n, out);
    zero_sign_padding(out, n);
    return EFPS_OK;
}

efps_status_t efps_sign_decompress(const void *packed, size_t n, float alpha, float *out)
{
    const efps_kernels_t *k = NULL;
    efps_status_t st = kernels(&k);
    if (st != EFPS_OK || n == 0)
        return st;
    CHECK(packed != NULL && out != NULL, "sign_decompress: NULL buffer");
    CHECK(n <= MAX_ELEMS, "sign_decompress: n=%zu too large", n);
    k->sign_decode(packed, n, alpha, out, 0);
    return EFPS_OK;
}
