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

efps_status_t efps_ef_compress(const float *x, float a, float *err, float b, size_t n, size_t block,
                               void *packed)
{
    const efps_kernels_t *k = NULL;
    efps_status_t st = kernels(&k);
    if (st != EFPS_OK || n == 0)
        return st;
    CHECK(x != NULL && err != NULL && packed != NULL, "ef_compress: NULL buffer");
    CHECK(n <= MAX_ELEMS, "ef_compress: n=%zu too large", n);
    CHECK(aligned64(packed), "ef_compress: packed output %p not 64-byte aligned", packed);
    const size_t B = block ? block : n;
    float *scales = packed;
    k->ef_scales(x, a, err, b, n, B, scales);
    if (!all_finite(scales, efps_nblocks(n, B)))
        return EFPS_ERR_NONFINITE;
    uint8_t *signs = (uint8_t *)packed + efps_packed_signs_offset(n, B);
    k->ef_commit(x, a, err, b, n, B, scales, signs);
    zero_padding(packed, n, B);
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
