/* Public compression calls: argument checks, packed layout, variant dispatch.
 * The arithmetic is in kernels_<variant>.c. */
#include "efps_internal/config.h"
#include "kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

static const efps_kernels_t *const variants[] = {
    [EFPS_SIMD_SCALAR] = &efps__kernels_scalar,
    [EFPS_SIMD_AVX2] = &efps__kernels_avx2,
    [EFPS_SIMD_AVX512] = &efps__kernels_avx512,
};

/* compress's settings (efps_internal/config.h). */
static const efps__setting_t settings[] = {
    {"EFPS_SIMD", "", "force a kernel variant: scalar|avx2|avx512 (default: best the CPU has)"},
    {NULL, NULL, NULL},
};
static efps__config_table_t table = {"compress", EFPS__LAYER_COMPRESS, settings, NULL};

__attribute__((constructor(EFPS__CONFIG_PRIORITY))) static void register_settings(void)
{
    efps__config_register(&table);
}

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
    return efps__nblocks(n, block ? block : n);
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
    const size_t nb = efps__nblocks(n, B), so = efps_align_up(4 * nb, EFPS_ALIGN);
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

/* Elements per chunk of the out-of-place calls (whole blocks, at least one),
 * and the capacity of the stack buffer a server chunk's p is computed into:
 * the chunk's inputs stay in L1 between its two phases, so each is read from
 * memory once. Short chunks also keep reads and
 * writes to memory interleaved; at 64 Mi elements, block 2048, on the AMD
 * EPYC VM we measure on (perf/bench_compress, before p was buffered): 2048 ->
 * 0.96 of the memory pass, 4096 -> 0.79, 16384 -> 0.79, 65536 -> 0.74. */
#define CHUNK_ELEMS EFPS_CHUNK_ELEMS

/* The two phases over all blocks in chunks of step blocks: a chunk's scales,
 * then, if all are finite, its signs and new error. In place step covers the
 * whole tensor, so nothing is written before every block was seen. With
 * buffer_p, a chunk that fits the buffer has p computed once and read back by
 * both phases: worth it for the server's p (m decoded streams), not for the
 * worker's (two products and a sum cost less than the store and the load). */
static efps_status_t run_job(const efps_kernels_t *k, const efps_job_t *j, size_t step,
                             int buffer_p, void *packed)
{
    const size_t nb = efps__nblocks(j->n, j->B);
    float *scales = packed;
    uint8_t *signs = (uint8_t *)packed + efps_packed_signs_offset(j->n, j->B);
    float pbuf[CHUNK_ELEMS] __attribute__((aligned(EFPS_ALIGN)));
    for (size_t k0 = 0; k0 < nb; k0 += step) {
        const size_t k1 = k0 + step < nb ? k0 + step : nb, lo = k0 * j->B;
        const size_t hi = k1 * j->B < j->n ? k1 * j->B : j->n;
        efps_job_t c = *j;
        if (buffer_p && hi - lo <= CHUNK_ELEMS) {
            k->p_fill(j, k0, k1, pbuf);
            c.pbuf = pbuf;
            c.pbase = lo;
        }
        k->scales(&c, k0, k1, scales);
        if (!all_finite(scales + k0, k1 - k0))
            return EFPS_ERR_NONFINITE;
        k->commit(&c, k0, k1, scales, signs);
    }
    zero_padding(packed, j->n, j->B);
    return EFPS_OK;
}

/* Blocks per chunk: out of place as many as fit CHUNK_ELEMS (at least one);
 * in place all of them. */
static size_t chunk_blocks(const efps_job_t *j)
{
    if (j->err_out == j->err_in)
        return efps__nblocks(j->n, j->B);
    return j->B < CHUNK_ELEMS ? CHUNK_ELEMS / j->B : 1;
}

static int overlap(const float *p, const float *q, size_t n)
{
    return (uintptr_t)p < (uintptr_t)(q + n) && (uintptr_t)q < (uintptr_t)(p + n);
}

/* Checks shared by the worker and server steps; err_out must be err_in or
 * not overlap it. n == 0 is a no-op whatever the buffers, as for every call. */
static efps_status_t step_check(const efps_kernels_t **k, const char *fn, const float *err_in,
                                const float *err_out, size_t n, const void *packed)
{
    efps_status_t st = kernels(k);
    if (st != EFPS_OK || n == 0)
        return st;
    CHECK(err_in != NULL && err_out != NULL && packed != NULL, "%s: NULL buffer", fn);
    CHECK(n <= MAX_ELEMS, "%s: n=%zu too large", fn, n);
    CHECK(aligned64(packed), "%s: packed output %p not 64-byte aligned", fn, packed);
    CHECK(err_out == err_in || !overlap(err_out, err_in, n), "%s: err_out overlaps err_in", fn);
    return EFPS_OK;
}

efps_status_t efps_ef_compress_to(const float *x, float a, const float *err_in, float b,
                                  float *err_out, size_t n, size_t block, void *packed)
{
    const efps_kernels_t *k = NULL;
    efps_status_t st = step_check(&k, "ef_compress", err_in, err_out, n, packed);
    if (st != EFPS_OK || n == 0)
        return st;
    CHECK(x != NULL, "ef_compress: NULL x");
    CHECK(err_out == err_in || !overlap(err_out, x, n), "ef_compress: err_out overlaps x");
    const efps_job_t j = {.x = x,
                          .a = a,
                          .err_in = err_in,
                          .err_out = err_out,
                          .b = b,
                          .n = n,
                          .B = block ? block : n};
    return run_job(k, &j, chunk_blocks(&j), 0, packed);
}

efps_status_t efps_ef_compress(const float *x, float a, float *err, float b, size_t n, size_t block,
                               void *packed)
{
    return efps_ef_compress_to(x, a, err, b, err, n, block, packed);
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

efps_status_t efps_server_reduce_to(const void *const *packed, int m, size_t n, size_t block,
                                    const float *err_in, float b, float *err_out, void *out)
{
    const efps_kernels_t *k = NULL;
    efps_status_t st = step_check(&k, "server_reduce", err_in, err_out, n, out);
    if (st != EFPS_OK || n == 0)
        return st;
    CHECK(inputs_ok(packed, m), "server_reduce: bad inputs, m=%d", m);
    const efps_job_t j = {.packed = packed,
                          .m = m,
                          .err_in = err_in,
                          .err_out = err_out,
                          .b = b,
                          .n = n,
                          .B = block ? block : n};
    return run_job(k, &j, chunk_blocks(&j), 1, out);
}

efps_status_t efps_server_reduce(const void *const *packed, int m, size_t n, size_t block,
                                 float *err, float b, void *out)
{
    return efps_server_reduce_to(packed, m, n, block, err, b, err, out);
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
