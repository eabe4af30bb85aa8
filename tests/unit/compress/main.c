/* The per-variant tests of lib/compress: `test_compress_kernels VARIANT
 * [sweep]` runs the tests of this folder with that kernel variant (scalar,
 * avx2, avx512) against the scalar reference and the models of
 * ref_compress.h: the edge cases and call checks, or with "sweep" the long
 * sweep alone. ctest runs each once per variant (test_compress_<variant> and
 * test_compress_<variant>_sweep), so they run in parallel and a failure names
 * its variant. Exit 77, which ctest reports as skipped (not passed), when the
 * CPU or its OS lacks the variant; a variant the CPU runs but the library
 * refuses fails. Built with -ffp-contract=off (tests/unit/CMakeLists.txt). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "check.h"

#define EXIT_SKIP 77

static efps_simd_t variant;

/* clang-format off */
#define PER_VARIANT(fn) {#fn, fn, NULL, NULL, &variant}
/* clang-format on */

int main(int argc, char **argv)
{
    static const efps_simd_t all[] = {EFPS_SIMD_SCALAR, EFPS_SIMD_AVX2, EFPS_SIMD_AVX512};
    size_t k = 0;
    const int sweep = argc == 3 && strcmp(argv[2], "sweep") == 0;
    while (argc >= 2 && k < COUNT(all) && strcmp(argv[1], efps_simd_name(all[k])) != 0)
        k++;
    if (argc != 2 + sweep || k == COUNT(all)) {
        fprintf(stderr, "usage: %s scalar|avx2|avx512 [sweep]\n", argv[0]);
        return 2;
    }
    variant = all[k];
    const efps_status_t st = efps_compress_set_simd(variant);
    if (st == EFPS_ERR_UNSUPPORTED && variant > efps_cpu_best_simd()) {
        printf("SKIP: %s: this CPU (or its OS) lacks it\n", argv[1]);
        return EXIT_SKIP;
    }
    if (st != EFPS_OK || efps_compress_simd() != variant) {
        fprintf(stderr, "FAIL: the CPU runs %s but efps_compress_set_simd refuses it: %s\n",
                argv[1], efps_strerror(st));
        return 1;
    }
    const struct CMUnitTest cases[] = {
        PER_VARIANT(test_invalid_args),     PER_VARIANT(test_zero_length),
        PER_VARIANT(test_unaligned_output), PER_VARIANT(test_format_by_hand),
        PER_VARIANT(test_majority_ties),    PER_VARIANT(test_neg_zero),
        PER_VARIANT(test_denormals),        PER_VARIANT(test_nonfinite),
        PER_VARIANT(test_unaligned_inputs),
    };
    const struct CMUnitTest sweeps[] = {PER_VARIANT(test_sweep)};
    char group[64];
    snprintf(group, sizeof(group), "compress[%s]%s", argv[1], sweep ? " sweep" : "");
    return sweep ? cmocka_run_group_tests_name(group, sweeps, NULL, NULL)
                 : cmocka_run_group_tests_name(group, cases, NULL, NULL);
}
