/* The server reduce for every worker count m = 1..64 (and a few above, where
 * the kernels sum in more than two groups of workers): every variant's
 * efps_server_reduce_to and efps_server_reduce bit for bit against the scalar
 * reference, and the scalar reference bit for bit against the float model of
 * tests/unit/ref_compress.h (the rank-order sum of docs/design.md). The
 * pushes are real worker steps of data with mixed magnitudes, so the workers'
 * scales differ in every bit and a sum in any other order, or a counting
 * shortcut, gives other bits. Some blocks are zero in every push (scale 0,
 * so the sum starts from a decoded -0.0), and the sizes and blocks put tiles,
 * unaligned heads and short tails in every block.
 *
 * Built with -ffp-contract=off (see tests/unit/CMakeLists.txt). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "efps/compress.h"
#include "ref_compress.h"

#define MAX_M 100

static efps_simd_t variant_ids[] = {EFPS_SIMD_SCALAR, EFPS_SIMD_AVX2, EFPS_SIMD_AVX512};

static char ctx[200];
#define CTX(...) snprintf(ctx, sizeof(ctx), __VA_ARGS__)

static void same_floats(const float *got, const float *want, size_t n, const char *what)
{
    if (memcmp(got, want, n * sizeof(float)) == 0)
        return;
    size_t i = 0;
    while (ref_u32(got[i]) == ref_u32(want[i]))
        i++;
    fail_msg("%s: %s[%zu] is %a (0x%08x), want %a (0x%08x)", ctx, what, i, (double)got[i],
             (unsigned)ref_u32(got[i]), (double)want[i], (unsigned)ref_u32(want[i]));
}

static void same_bytes(const uint8_t *got, const uint8_t *want, size_t len, const char *what)
{
    if (memcmp(got, want, len) == 0)
        return;
    size_t j = 0;
    while (got[j] == want[j])
        j++;
    fail_msg("%s: %s byte %zu of %zu is 0x%02x, want 0x%02x", ctx, what, j, len, got[j], want[j]);
}

static float *floats(size_t n)
{
    float *f = malloc(n * sizeof(float));
    assert_non_null(f);
    return f;
}

typedef struct {
    size_t n, block;
    ref_layout_t L;
    uint8_t *push[MAX_M];
    float *err_in, *err_ref, *err_var, *err_mod, *p;
    uint8_t *out_ref, *out_var, *out_mod;
} reduce_case_t;

/* Blocks where every worker pushes zeros (not the only block: its scale
 * would be 0). Even workers push -0.0 there, and err_in is -0.0, so p keeps
 * the sign of a sum that starts from worker 0's -0.0 (from +0.0 + -0.0 it
 * would be +0.0). */
static int zero_block(const reduce_case_t *rc, size_t blk)
{
    return rc->L.nb > 1 && blk % 4 == 1;
}

/* MAX_M worker pushes of n elements in blocks of block, made by the scalar
 * worker step; worker w % 7 == 3 also pushes zeros in its even blocks. */
static void case_init(reduce_case_t *rc, size_t n, size_t block, uint64_t seed)
{
    rc->n = n;
    rc->block = block;
    rc->L = ref_layout(n, block);
    ref_rng_t r = {seed};
    float *x = floats(n), *err = floats(n);
    assert_int_equal(efps_compress_set_simd(EFPS_SIMD_SCALAR), EFPS_OK);
    for (int w = 0; w < MAX_M; w++) {
        for (size_t i = 0; i < n; i++) {
            const size_t blk = i / rc->L.B;
            const int zero = (w % 7 == 3 && blk % 2 == 0) || zero_block(rc, blk);
            const float z = w % 2 == 0 ? -0.0f : 0.0f; /* -0.0 + -0.0: a -0.0 push */
            x[i] = zero ? z : ref_rng_mixed(&r, -12, 6);
            err[i] = zero ? z : ref_rng_mixed(&r, -14, 2);
        }
        rc->push[w] = efps_aligned_alloc(rc->L.size);
        assert_non_null(rc->push[w]);
        assert_int_equal(efps_ef_compress(x, 1.0f, err, 0.5f, n, block, rc->push[w]), EFPS_OK);
    }
    rc->err_in = floats(n);
    for (size_t i = 0; i < n; i++)
        rc->err_in[i] = zero_block(rc, i / rc->L.B) ? -0.0f : ref_rng_mixed(&r, -16, 0);
    rc->err_ref = floats(n), rc->err_var = floats(n), rc->err_mod = floats(n), rc->p = floats(n);
    rc->out_ref = efps_aligned_alloc(rc->L.size), rc->out_var = efps_aligned_alloc(rc->L.size);
    rc->out_mod = malloc(rc->L.size);
    assert_non_null(rc->out_ref);
    assert_non_null(rc->out_var);
    assert_non_null(rc->out_mod);
    free(x);
    free(err);
}

static void case_free(reduce_case_t *rc)
{
    for (int w = 0; w < MAX_M; w++)
        efps_aligned_free(rc->push[w]);
    free(rc->err_in), free(rc->err_ref), free(rc->err_var), free(rc->err_mod), free(rc->p);
    efps_aligned_free(rc->out_ref), efps_aligned_free(rc->out_var), free(rc->out_mod);
}

/* The scalar reference for m workers into out_ref/err_ref, checked against
 * the float model. */
static void reference(reduce_case_t *rc, int m, float b)
{
    const void *const *in = (const void *const *)rc->push;
    assert_int_equal(efps_compress_set_simd(EFPS_SIMD_SCALAR), EFPS_OK);
    assert_int_equal(
        efps_server_reduce_to(in, m, rc->n, rc->block, rc->err_in, b, rc->err_ref, rc->out_ref),
        EFPS_OK);
    assert_int_equal(ref_reduce_model((const uint8_t *const *)rc->push, m, rc->err_in, b, rc->L,
                                      rc->p, rc->out_mod, rc->err_mod),
                     0);
    same_bytes(rc->out_ref, rc->out_mod, rc->L.size, "scalar vs float model: packed");
    same_floats(rc->err_ref, rc->err_mod, rc->n, "scalar vs float model: err");
}

/* Variant v, out of place and in place, against the reference. */
static void variant(reduce_case_t *rc, efps_simd_t v, int m, float b)
{
    const void *const *in = (const void *const *)rc->push;
    assert_int_equal(efps_compress_set_simd(v), EFPS_OK);
    memset(rc->out_var, 0xa5, rc->L.size);
    assert_int_equal(
        efps_server_reduce_to(in, m, rc->n, rc->block, rc->err_in, b, rc->err_var, rc->out_var),
        EFPS_OK);
    same_bytes(rc->out_var, rc->out_ref, rc->L.size, "server_reduce_to vs scalar: packed");
    same_floats(rc->err_var, rc->err_ref, rc->n, "server_reduce_to vs scalar: err");
    memcpy(rc->err_var, rc->err_in, rc->n * sizeof(float));
    memset(rc->out_var, 0x5a, rc->L.size);
    assert_int_equal(efps_server_reduce(in, m, rc->n, rc->block, rc->err_var, b, rc->out_var),
                     EFPS_OK);
    same_bytes(rc->out_var, rc->out_ref, rc->L.size, "server_reduce vs scalar: packed");
    same_floats(rc->err_var, rc->err_ref, rc->n, "server_reduce vs scalar: err");
}

static int usable(efps_simd_t v)
{
    if (v <= efps_cpu_best_simd()) {
        assert_int_equal(efps_compress_set_simd(v), EFPS_OK);
        return 1;
    }
    assert_int_equal(efps_compress_set_simd(v), EFPS_ERR_UNSUPPORTED);
    print_message("[  SKIP    ] %s: this CPU (or its OS) lacks it\n", efps_simd_name(v));
    return 0;
}

static void test_reduce_m_sweep(void **state)
{
    const efps_simd_t v = *(const efps_simd_t *)*state;
    if (!usable(v))
        skip();
    /* n: one element, a block's head and tail only, whole tiles plus
     * remainders, several chunks; blocks: one per tensor, odd, small, the
     * chunk size, larger than a chunk (computed without the chunk buffer). */
    static const size_t ns[] = {1, 37, 2085, 5003};
    static const size_t blocks[] = {0, 5, 67, 2048, 2100};
    static const int extra_m[] = {65, 96, 97, MAX_M};
    for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++)
        for (size_t bi = 0; bi < sizeof(blocks) / sizeof(blocks[0]); bi++) {
            reduce_case_t rc;
            case_init(&rc, ns[ni], blocks[bi], 1000 + 10 * ni + bi);
            for (int k = 0; k < 64 + (int)(sizeof(extra_m) / sizeof(extra_m[0])); k++) {
                const int m = k < 64 ? k + 1 : extra_m[k - 64];
                const float b = (m % 3 == 0) ? 0.0f : 0.75f;
                CTX("server_reduce n=%zu block=%zu m=%d b=%g variant=%s", ns[ni], blocks[bi], m,
                    (double)b, efps_simd_name(v));
                reference(&rc, m, b);
                if (v != EFPS_SIMD_SCALAR)
                    variant(&rc, v, m, b);
            }
            case_free(&rc);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        {"test_reduce_m_sweep[scalar]", test_reduce_m_sweep, NULL, NULL, &variant_ids[0]},
        {"test_reduce_m_sweep[avx2]", test_reduce_m_sweep, NULL, NULL, &variant_ids[1]},
        {"test_reduce_m_sweep[avx512]", test_reduce_m_sweep, NULL, NULL, &variant_ids[2]},
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
