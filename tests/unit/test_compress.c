/* Unit tests of lib/compress that do not depend on the kernel variant: the
 * packed sizes, choosing a variant (efps_compress_set_simd) and the EFPS_SIMD
 * variable. The kernels themselves are tested once per variant by
 * tests/unit/compress (ctest test_compress_scalar, _avx2, _avx512). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "efps/compress.h"
#include "unit_child.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- sizes --------------------------------------------------------------------- */

static void test_packed_sizes(void **state)
{
    (void)state;
    static const struct {
        size_t n, block, size, blocks, signs_off;
    } cases[] = {
        /* n, B: scales 4*nb padded to 64, then ceil(n/8) sign bytes padded to 64 */
        {1, 0, 64 + 64, 1, 64},           {1, 1, 64 + 64, 1, 64},
        {5, 100, 64 + 64, 1, 64},       /* block larger than n: one block */
        {16, 1, 64 + 64, 16, 64},       /* 16 scales fill exactly 64 bytes */
        {17, 1, 128 + 64, 17, 128},     /* the 17th spills into a second line */
        {512, 0, 64 + 64, 1, 64},       /* 64 sign bytes exactly */
        {513, 0, 64 + 128, 1, 64},      /* 65 sign bytes */
        {1000, 7, 576 + 128, 143, 576}, /* 143 scales = 572 bytes; 125 sign bytes */
        {4097, 256, 128 + 576, 17, 128},  {1000003, 1, 4000064 + 125056, 1000003, 4000064},
        {1000003, 0, 64 + 125056, 1, 64},
    };
    for (size_t c = 0; c < COUNT(cases); c++) {
        assert_int_equal(efps_packed_size(cases[c].n, cases[c].block), cases[c].size);
        assert_int_equal(efps_packed_blocks(cases[c].n, cases[c].block), cases[c].blocks);
        assert_int_equal(efps_packed_signs_offset(cases[c].n, cases[c].block), cases[c].signs_off);
    }
    assert_int_equal(efps_sign_packed_size(1), 64);
    assert_int_equal(efps_sign_packed_size(512), 64);
    assert_int_equal(efps_sign_packed_size(513), 128);
    assert_int_equal(efps_sign_packed_size(1000003), 125056);
    /* n = 0 */
    assert_int_equal(efps_packed_size(0, 0), 0);
    assert_int_equal(efps_packed_size(0, 7), 0);
    assert_int_equal(efps_packed_blocks(0, 0), 0);
    assert_int_equal(efps_sign_packed_size(0), 0);
    /* Sizes that overflow size_t (4 bytes of scale or float input per element,
     * or n + 7 itself): 0, never a wrapped small number. */
    const size_t huge[] = {SIZE_MAX, SIZE_MAX - 6, SIZE_MAX / 2, SIZE_MAX / 4 + 1};
    for (size_t k = 0; k < COUNT(huge); k++) {
        assert_int_equal(efps_packed_size(huge[k], 1), 0);
        assert_int_equal(efps_packed_size(huge[k], 0), 0);
        assert_int_equal(efps_packed_size(huge[k], 4096), 0);
        assert_int_equal(efps_sign_packed_size(huge[k]), 0);
    }
}

/* ---- variant selection ------------------------------------------------------------ */

static void test_set_simd(void **state)
{
    (void)state;
    assert_int_equal(efps_compress_set_simd((efps_simd_t)3), EFPS_ERR_INVALID);
    assert_int_equal(efps_compress_set_simd((efps_simd_t)-1), EFPS_ERR_INVALID);
    static const efps_simd_t all[] = {EFPS_SIMD_SCALAR, EFPS_SIMD_AVX2, EFPS_SIMD_AVX512};
    for (size_t k = 0; k < COUNT(all); k++) {
        const efps_simd_t v = all[k];
        if (v > efps_cpu_best_simd()) {
            assert_int_equal(efps_compress_set_simd(v), EFPS_ERR_UNSUPPORTED);
        } else { /* the CPU runs it: the library must not refuse it */
            assert_int_equal(efps_compress_set_simd(v), EFPS_OK);
            assert_int_equal(efps_compress_simd(), v);
        }
    }
    /* A refused switch leaves the active variant alone. */
    assert_int_equal(efps_compress_set_simd(EFPS_SIMD_SCALAR), EFPS_OK);
    assert_int_equal(efps_compress_set_simd((efps_simd_t)7), EFPS_ERR_INVALID);
    assert_int_equal(efps_compress_simd(), EFPS_SIMD_SCALAR);
}

/* Child: one call of every kernel, statuses reported on stderr. */
static int child_kernels(void)
{
    enum { N = 100 };
    float x[N], err[N] = {0}, out[N];
    for (int i = 0; i < N; i++)
        x[i] = (float)(i - 50);
    const size_t size = efps_packed_size(N, 0);
    uint8_t *pk = efps_aligned_calloc(size), *pk2 = efps_aligned_calloc(size);
    if (pk == NULL || pk2 == NULL)
        return 3;
    const void *ins[1] = {pk};
    const efps_simd_t simd = efps_compress_simd();
    const efps_status_t st[7] = {
        efps_ef_compress(x, 1, err, 1, N, 0, pk),
        efps_decompress(pk, N, 0, 1, out),
        efps_decompress_add(pk, N, 0, 1, out),
        efps_server_reduce(ins, 1, N, 0, err, 1, pk2),
        efps_sign_pack(x, N, pk2),
        efps_sign_majority(ins, 1, N, pk2),
        efps_sign_decompress(pk, N, 1, out),
    };
    fprintf(stderr, "RESULT simd=%s", efps_simd_name(simd));
    for (int k = 0; k < 7; k++)
        fprintf(stderr, " %s", efps_status_name(st[k]));
    fprintf(stderr, "\n");
    efps_aligned_free(pk);
    efps_aligned_free(pk2);
    return 0;
}

static void expect_child(const char *value, const char *simd, efps_status_t want)
{
    char out[8192], tag[64];
    const int rc = unit_run_child("kernels", "EFPS_SIMD", value, out, sizeof(out));
    if (rc != 0)
        fail_msg("child with EFPS_SIMD=%s exited with %d; stderr:\n%s", value, rc, out);
    snprintf(tag, sizeof(tag), " %s", efps_status_name(want));
    if (unit_count(out, tag) != 7)
        fail_msg("EFPS_SIMD=%s: want every kernel to return %s; child said:\n%s", value,
                 efps_status_name(want), out);
    if (simd == NULL)
        return;
    snprintf(tag, sizeof(tag), "simd=%s ", simd);
    if (strstr(out, tag) == NULL)
        fail_msg("EFPS_SIMD=%s: want variant %s; child said:\n%s", value, simd, out);
}

static void test_env_simd(void **state)
{
    (void)state;
    const efps_simd_t best = efps_cpu_best_simd();
    char out[8192];
    /* A bogus name: every kernel refuses to run, and says why once. */
    expect_child("bogus", NULL, EFPS_ERR_INVALID);
    assert_int_equal(unit_run_child("kernels", "EFPS_SIMD", "bogus", out, sizeof(out)), 0);
    assert_int_equal(unit_count(out, "EFPS_SIMD='bogus'"), 1);
    expect_child("scalar", "scalar", EFPS_OK);
    /* The best variant, by name and by default (unset or empty). */
    const char *want = efps_simd_name(best);
    expect_child(want, want, EFPS_OK);
    expect_child(NULL, want, EFPS_OK);
    expect_child("", want, EFPS_OK);
}

/* A variant above what the CPU runs: every kernel returns EFPS_ERR_UNSUPPORTED.
 * Only constructible on a CPU without AVX-512. */
static void test_env_simd_unsupported(void **state)
{
    (void)state;
    if (efps_cpu_best_simd() == EFPS_SIMD_AVX512) {
        print_message("[  SKIP    ] this CPU runs every variant; nothing to refuse\n");
        skip();
    }
    expect_child("avx512", NULL, EFPS_ERR_UNSUPPORTED);
}

/* ---- main ------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child") == 0)
        return strcmp(argv[2], "kernels") == 0 ? child_kernels() : 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packed_sizes),
        cmocka_unit_test(test_set_simd),
        cmocka_unit_test(test_env_simd),
        cmocka_unit_test(test_env_simd_unsupported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
