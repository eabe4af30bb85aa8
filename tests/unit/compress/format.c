/* The packed format worked out by hand, and the majority vote's ties. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "check.h"

/* ---- the format, worked out by hand ------------------------------------------- */

void test_format_by_hand(void **state)
{
    const efps_simd_t v = variant_begin(state);
    const float x[10] = {1, -2, 3, -4, 5, 6, -7, 8, -9, 10};
    float err[10] = {0}, out[10];
    /* block 4: scales (1+2+3+4)/4 = 2.5 = 0x40200000, (5+6+7+8)/4 = 6.5 =
     * 0x40d00000, (9+10)/2 = 9.5 = 0x41180000, little-endian; signs of
     * elements 1, 3, 6 in byte 0 (0x4a) and of element 8 in byte 1 (0x01),
     * at offset align64(3 * 4) = 64; 128 bytes in all. */
    uint8_t want[128] = {0x00, 0x00, 0x20, 0x40, 0x00, 0x00, 0xd0, 0x40, 0x00, 0x00, 0x18, 0x41};
    want[64] = 0x4a;
    want[65] = 0x01;
    const float want_err[10] = {-1.5f, 0.5f, 0.5f, -1.5f, -1.5f, -0.5f, -0.5f, 1.5f, 0.5f, 0.5f};
    const float want_out[10] = {5, -5, 5, -5, 13, 13, -13, 13, -19, 19};
    assert_int_equal(efps_packed_size(10, 4), sizeof(want));
    uint8_t *pk = packed_buf(sizeof(want));
    memset(pk, 0xAA, sizeof(want));
    CTX("format by hand, variant=%s", efps_simd_name(v));
    assert_int_equal(efps_ef_compress(x, 1.0f, err, 0.0f, 10, 4, pk), EFPS_OK);
    expect_same_bytes(pk, want, sizeof(want), NULL, "packed");
    expect_same_floats(err, want_err, 10, "err");
    assert_int_equal(efps_decompress(pk, 10, 4, 2.0f, out), EFPS_OK);
    expect_same_floats(out, want_out, 10, "decompress");
    efps_aligned_free(pk);
}

/* ---- explicit majority ties ------------------------------------------------ */

void test_majority_ties(void **state)
{
    const efps_simd_t v = variant_begin(state);
    static const struct {
        int m;
        uint8_t in[4], want;
    } cases[] = {
        {2, {0xAA, 0x55}, 0xAA},             /* every bit a 1-1 tie: worker 0 */
        {2, {0x0F, 0xF0}, 0x0F},             /* same, the other way round */
        {2, {0x3C, 0x3C}, 0x3C},             /* agreement */
        {3, {0x00, 0x0F, 0x3C}, 0x0C},       /* odd m: plain majority */
        {3, {0xFF, 0x0F, 0x00}, 0x0F},       /* worker 0 outvoted */
        {4, {0x00, 0xFF, 0xFF, 0x0F}, 0x0F}, /* 3-1 wins, 2-2 goes to worker 0 (0) */
        {4, {0xFF, 0x00, 0x00, 0xF0}, 0xF0}, /* 2-2 goes to worker 0 (1), 1-3 loses */
    };
    const size_t n = 8;
    uint8_t *in[4], *out = packed_buf(64);
    for (int w = 0; w < 4; w++)
        in[w] = packed_buf(64);
    CTX("majority ties variant=%s", efps_simd_name(v));
    for (size_t c = 0; c < COUNT(cases); c++) {
        for (int w = 0; w < cases[c].m; w++) {
            memset(in[w], 0, 64);
            in[w][0] = cases[c].in[w];
        }
        memset(out, 0xAA, 64);
        assert_int_equal(efps_sign_majority((const void *const *)in, cases[c].m, n, out), EFPS_OK);
        if (out[0] != cases[c].want)
            fail_msg("case %zu (m=%d): vote 0x%02x, want 0x%02x", c, cases[c].m, out[0],
                     cases[c].want);
        for (int j = 1; j < 64; j++)
            assert_int_equal(out[j], 0);
    }
    for (int w = 0; w < 4; w++)
        efps_aligned_free(in[w]);
    efps_aligned_free(out);
}
