/* What the per-variant tests of lib/compress share (tests/unit/compress):
 * the variant under test, comparisons that say where and what differs,
 * buffers of exact size (so ASan sees an access past an end), random fills,
 * and the checks more than one file makes. The test files include it after
 * cmocka.h. */
#ifndef EFPS_TEST_COMPRESS_CHECK_H
#define EFPS_TEST_COMPRESS_CHECK_H

#include <stdio.h>
#include <string.h>

#include "efps/compress.h"
#include "ref_compress.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The case being checked, for failure messages. */
extern char case_ctx[200];
#define CTX(...) snprintf(case_ctx, sizeof(case_ctx), __VA_ARGS__)

/* The variant a test runs (its cmocka state, set by main.c): made active and
 * returned. Tests switch between it and the scalar reference with use(). */
efps_simd_t variant_begin(void **state);
void use(efps_simd_t v);

void expect_same_floats(const float *got, const float *want, size_t n, const char *what);
/* L: the layout of a blocksign tensor, to name the region; NULL for a sign stream. */
void expect_same_bytes(const uint8_t *got, const uint8_t *want, size_t len, const ref_layout_t *L,
                       const char *what);

/* n floats from malloc, a packed buffer from efps_aligned_alloc (exact sizes). */
float *floats(size_t n);
uint8_t *packed_buf(size_t size);
void fill_mixed(float *v, size_t n, ref_rng_t *r, int emin, int emax);
void fill_random_packed(uint8_t *pk, ref_layout_t L, ref_rng_t *r);
void fill_random_signs(uint8_t *s, size_t n, ref_rng_t *r);

void check_decode_double(ref_layout_t L, const uint8_t *packed, float alpha, const float *acc,
                         const float *out);
void to_expect(const float *x, float a, uint8_t *const *in, int m, const float *err, float b,
               size_t n, size_t block, efps_status_t st, const uint8_t *pk, const float *err_new);

/* The (a, b) factors of a step and the decode factors that the sweep and the
 * edge cases both use. */
typedef struct {
    float a, b;
} ab_t;
extern const ab_t abs_[3];
extern const float alphas[3];

/* The tests, each run once per variant. */
void test_sweep(void **state);    /* sweep.c */
void test_neg_zero(void **state); /* edges.c */
void test_denormals(void **state);
void test_nonfinite(void **state);
void test_format_by_hand(void **state); /* format.c */
void test_majority_ties(void **state);
void test_unaligned_inputs(void **state); /* calls.c */
void test_unaligned_output(void **state);
void test_invalid_args(void **state);
void test_zero_length(void **state);

#endif
