/* Edge values, for every variant against the float model: -0.0, subnormal
 * inputs and products, NaN and Inf (anywhere, and after many committed
 * chunks) and overflow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "check.h"

/* ---- edge values, checked against the float model for every variant ------- */

/* A step (the server's when in != NULL) on a copy of err; its status, packed
 * bytes and new err must be the model's; on EFPS_ERR_NONFINITE err must be
 * untouched. The out-of-place call must agree. Returns the status; the packed
 * image is left in *pk_p (caller frees). */
static efps_status_t step_expect(const float *x, float a, uint8_t *const *in, int m,
                                 const float *err, float b, size_t n, size_t block, uint8_t **pk_p,
                                 float *err_out)
{
    const ref_layout_t L = ref_layout(n, block);
    uint8_t *pk = packed_buf(L.size), *model = packed_buf(L.size);
    float *p = floats(n), *err_model = floats(n);
    memcpy(err_out, err, n * sizeof(float));
    memset(pk, 0xAA, L.size);
    const efps_status_t st =
        in ? efps_server_reduce((const void *const *)in, m, n, block, err_out, b, pk)
           : efps_ef_compress(x, a, err_out, b, n, block, pk);
    const int bad =
        in ? ref_reduce_model((const uint8_t *const *)in, m, err, b, L, p, model, err_model)
           : ref_ef_model(x, a, err, b, L, p, model, err_model);
    if (bad) {
        assert_int_equal(st, EFPS_ERR_NONFINITE);
        expect_same_floats(err_out, err, n, "err after EFPS_ERR_NONFINITE");
    } else {
        assert_int_equal(st, EFPS_OK);
        expect_same_bytes(pk, model, L.size, &L,
                          in ? "server_reduce vs model" : "ef_compress vs model");
        expect_same_floats(err_out, err_model, n,
                           in ? "server_reduce err vs model" : "ef_compress err vs model");
    }
    to_expect(x, a, in, m, err, b, n, block, st, pk, err_out);
    free(p);
    free(err_model);
    efps_aligned_free(model);
    *pk_p = pk;
    return st;
}

static efps_status_t ef_expect(const float *x, float a, const float *err, float b, size_t n,
                               size_t block, uint8_t **pk_p, float *err_out)
{
    return step_expect(x, a, NULL, 0, err, b, n, block, pk_p, err_out);
}

static efps_status_t reduce_expect(uint8_t *const *in, int m, const float *err, float b, size_t n,
                                   size_t block, uint8_t **pk_p, float *err_out)
{
    return step_expect(NULL, 0.0f, in, m, err, b, n, block, pk_p, err_out);
}

static void fill_const(float *v, size_t n, float c)
{
    for (size_t i = 0; i < n; i++)
        v[i] = c;
}

/* p = -0.0 exactly: x = -0, err = -0, a = 1, b = 1 gives -0 + -0 = -0. */
static void neg_zero_all(size_t n, size_t block)
{
    float *x = floats(n), *err = floats(n), *e2 = floats(n), *out = floats(n);
    uint8_t *pk;
    fill_const(x, n, -0.0f);
    fill_const(err, n, -0.0f);
    assert_int_equal(ef_expect(x, 1.0f, err, 1.0f, n, block, &pk, e2), EFPS_OK);
    const ref_layout_t L = ref_layout(n, block);
    for (size_t k = 0; k < L.nb; k++)
        assert_int_equal(ref_u32(ref_get_scale(pk, k)), 0); /* +0.0 */
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ref_get_bit(pk + L.signs_off, i), 1); /* -0.0 is negative */
        assert_int_equal(ref_u32(e2[i]), 0);                   /* -0 - (-0) = +0 */
    }
    assert_int_equal(efps_decompress(pk, n, block, 1.0f, out), EFPS_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ref_u32(out[i]), 0x80000000u); /* decodes to -scale = -0.0 */
    efps_aligned_free(pk);
    free(x);
    free(err);
    free(e2);
    free(out);
}

/* x = -0 with b*err = +0 sums to +0 (bit 0); a*x = -0 from a = -1, x = +0, with
 * fl(0 * -1) = -0, sums to -0 (bit 1). */
static void neg_zero_products(size_t n, size_t block)
{
    float *x = floats(n), *err = floats(n), *e2 = floats(n);
    uint8_t *pk;
    const ref_layout_t L = ref_layout(n, block);
    fill_const(x, n, -0.0f);
    fill_const(err, n, 1.0f);
    assert_int_equal(ef_expect(x, 1.0f, err, 0.0f, n, block, &pk, e2), EFPS_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ref_get_bit(pk + L.signs_off, i), 0);
    efps_aligned_free(pk);
    fill_const(x, n, 0.0f);
    fill_const(err, n, -1.0f);
    assert_int_equal(ef_expect(x, -1.0f, err, 0.0f, n, block, &pk, e2), EFPS_OK);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ref_get_bit(pk + L.signs_off, i), 1);
    efps_aligned_free(pk);
    free(x);
    free(err);
    free(e2);
}

/* Random data where every 5th element is -0.0 (x and err): those elements
 * send bit 1, decode to -scale and keep err = +scale. */
static void neg_zero_mixed(size_t n, size_t block)
{
    float *x = floats(n), *err = floats(n), *e2 = floats(n), *out = floats(n);
    uint8_t *pk;
    ref_rng_t r = {n * 31 + block};
    fill_mixed(x, n, &r, -4, 4);
    fill_mixed(err, n, &r, -4, 4);
    for (size_t i = 0; i < n; i += 5)
        x[i] = err[i] = -0.0f;
    assert_int_equal(ef_expect(x, 1.0f, err, 0.5f, n, block, &pk, e2), EFPS_OK);
    const ref_layout_t L = ref_layout(n, block);
    assert_int_equal(efps_decompress(pk, n, block, 1.0f, out), EFPS_OK);
    for (size_t i = 0; i < n; i += 5) {
        const float s = ref_get_scale(pk, i / L.B);
        assert_int_equal(ref_get_bit(pk + L.signs_off, i), 1);
        assert_int_equal(ref_u32(out[i]), ref_u32(-s));
        assert_int_equal(ref_u32(e2[i]), ref_u32(s));
    }
    efps_aligned_free(pk);
    free(x);
    free(err);
    free(e2);
    free(out);
}

/* Server: workers whose decoded value is -0.0 (scale 0, bit 1) and err = -0
 * give p = -0/m + -0 = -0: bit 1. */
static void neg_zero_reduce(size_t n, size_t block)
{
    const ref_layout_t L = ref_layout(n, block);
    uint8_t *in[2], *pk;
    float *err = floats(n), *e2 = floats(n);
    fill_const(err, n, -0.0f);
    for (int w = 0; w < 2; w++) {
        in[w] = packed_buf(L.size);
        memset(in[w], 0, L.size);
        memset(in[w] + L.signs_off, 0xff, L.sign_bytes);
        if (n % 8)
            in[w][L.signs_off + L.sign_bytes - 1] = (uint8_t)((1u << (n % 8)) - 1);
    }
    for (int m = 1; m <= 2; m++) {
        assert_int_equal(reduce_expect(in, m, err, 1.0f, n, block, &pk, e2), EFPS_OK);
        expect_same_bytes(pk + L.signs_off, in[0] + L.signs_off, L.size - L.signs_off, &L,
                          "server_reduce of -0.0: signs");
        efps_aligned_free(pk);
    }
    efps_aligned_free(in[0]);
    efps_aligned_free(in[1]);
    free(err);
    free(e2);
}

void test_neg_zero(void **state)
{
    const efps_simd_t v = variant_begin(state);
    const size_t ns[] = {1, 37, 1000}, bs[] = {0, 1, 8, 13};
    for (size_t ni = 0; ni < COUNT(ns); ni++) {
        for (size_t bi = 0; bi < COUNT(bs); bi++) {
            CTX("-0.0: n=%zu block=%zu variant=%s", ns[ni], bs[bi], efps_simd_name(v));
            neg_zero_all(ns[ni], bs[bi]);
            neg_zero_products(ns[ni], bs[bi]);
            neg_zero_mixed(ns[ni], bs[bi]);
            neg_zero_reduce(ns[ni], bs[bi]);
        }
    }
    /* sign_pack: -0.0 is negative, +0.0 is not. */
    const float u[10] = {-0.0f, 0.0f, -1.0f, 1.0f, -0.0f, -0.0f, 0.0f, 0x1p-149f, -0x1p-149f, 0.0f};
    uint8_t *s = packed_buf(64);
    assert_int_equal(efps_sign_pack(u, 10, s), EFPS_OK);
    assert_int_equal(s[0], 0x35); /* bits 0, 2, 4, 5 */
    assert_int_equal(s[1], 0x01); /* bit 8 */
    efps_aligned_free(s);
}

/* A random subnormal of either sign, below 2^-128 so that sums of a few of
 * them stay subnormal. */
static float subnormal(ref_rng_t *r)
{
    const uint64_t v = ref_rng_next(r);
    const float f = ref_f32((uint32_t)(1 + v % 0x1fffff));
    return (v >> 40) & 1 ? -f : f;
}

static size_t count_subnormal_scales(const uint8_t *pk, ref_layout_t L)
{
    size_t c = 0;
    for (size_t k = 0; k < L.nb; k++)
        c += fpclassify(ref_get_scale(pk, k)) == FP_SUBNORMAL;
    return c;
}

/* Subnormal inputs and subnormal products (a*x below 2^-126): every variant must
 * neither flush them to zero nor treat them as zero. */
static void denormal_ef(size_t n, size_t block, ref_rng_t *r)
{
    float *x = floats(n), *err = floats(n), *e2 = floats(n), *out = floats(n);
    uint8_t *pk;
    const ref_layout_t L = ref_layout(n, block);
    for (size_t i = 0; i < n; i++)
        x[i] = subnormal(r), err[i] = subnormal(r);
    for (size_t k = 0; k < COUNT(abs_); k++) {
        assert_int_equal(ef_expect(x, abs_[k].a, err, abs_[k].b, n, block, &pk, e2), EFPS_OK);
        if (count_subnormal_scales(pk, L) == 0)
            fail_msg("%s: a=%g b=%g: no subnormal scale, first %a", case_ctx, (double)abs_[k].a,
                     (double)abs_[k].b, (double)ref_get_scale(pk, 0));
        for (size_t ai = 0; ai < COUNT(alphas); ai++) {
            assert_int_equal(efps_decompress(pk, n, block, alphas[ai], out), EFPS_OK);
            check_decode_double(L, pk, alphas[ai], NULL, out);
            memcpy(out, x, n * sizeof(float));
            assert_int_equal(efps_decompress_add(pk, n, block, alphas[ai], out), EFPS_OK);
            check_decode_double(L, pk, alphas[ai], x, out);
        }
        efps_aligned_free(pk);
    }
    /* Normal x and a whose product is subnormal, mixed with normal ones. */
    fill_mixed(x, n, r, -80, -60);
    fill_mixed(err, n, r, -70, -50);
    assert_int_equal(ef_expect(x, 0x1p-60f, err, 0x1p-70f, n, block, &pk, e2), EFPS_OK);
    efps_aligned_free(pk);
    free(x);
    free(err);
    free(e2);
    free(out);
}

static void denormal_reduce(size_t n, size_t block, ref_rng_t *r)
{
    const ref_layout_t L = ref_layout(n, block);
    uint8_t *in[3], *pk;
    float *err = floats(n), *e2 = floats(n);
    for (int w = 0; w < 3; w++) {
        in[w] = packed_buf(L.size);
        fill_random_packed(in[w], L, r);
        for (size_t k = 0; k < L.nb; k++)
            ref_put_scale(in[w], k, fabsf(subnormal(r)));
    }
    for (size_t i = 0; i < n; i++)
        err[i] = subnormal(r);
    assert_int_equal(reduce_expect(in, 3, err, 0.5f, n, block, &pk, e2), EFPS_OK);
    assert_true(count_subnormal_scales(pk, L) > 0);
    efps_aligned_free(pk);
    for (int w = 0; w < 3; w++)
        efps_aligned_free(in[w]);
    free(err);
    free(e2);
}

void test_denormals(void **state)
{
    const efps_simd_t v = variant_begin(state);
    const size_t ns[] = {1, 100, 1000}, bs[] = {0, 7, 16, 64};
    ref_rng_t r = {0xde};
    for (size_t ni = 0; ni < COUNT(ns); ni++) {
        for (size_t bi = 0; bi < COUNT(bs); bi++) {
            CTX("subnormals: n=%zu block=%zu variant=%s", ns[ni], bs[bi], efps_simd_name(v));
            denormal_ef(ns[ni], bs[bi], &r);
            denormal_reduce(ns[ni], bs[bi], &r);
        }
    }
}

/* ---- NaN and Inf ---------------------------------------------------------- */

static const size_t bad_pos[] = {0, 500, 999}; /* first, middle and last block */
#define BAD_N 1000

static float bad_value(int k)
{
    const float v[] = {NAN, INFINITY, -INFINITY, -NAN};
    return v[k];
}

static void nonfinite_ef(size_t block, ref_rng_t *r)
{
    float *x = floats(BAD_N), *err = floats(BAD_N), *e2 = floats(BAD_N);
    uint8_t *pk;
    efps_status_t st;
    for (size_t pi = 0; pi < COUNT(bad_pos); pi++) {
        for (int bv = 0; bv < 4; bv++) {
            for (int in_err = 0; in_err <= 1; in_err++) {
                for (size_t k = 0; k < COUNT(abs_); k++) {
                    fill_mixed(x, BAD_N, r, -6, 6);
                    fill_mixed(err, BAD_N, r, -6, 6);
                    (in_err ? err : x)[bad_pos[pi]] = bad_value(bv);
                    st = ef_expect(x, abs_[k].a, err, abs_[k].b, BAD_N, block, &pk, e2);
                    /* ef_expect checked the model's verdict; whatever b is,
                     * a*NaN, a*Inf, b*NaN and 0*Inf are all non-finite here. */
                    assert_int_equal(st, EFPS_ERR_NONFINITE);
                    efps_aligned_free(pk);
                }
            }
        }
    }
    /* Finite inputs whose p overflows (FLT_MAX * 2), and finite p whose L1 sum
     * overflows: the scale is Inf either way. */
    fill_mixed(x, BAD_N, r, -6, 6);
    fill_const(err, BAD_N, 0.0f);
    x[BAD_N - 1] = FLT_MAX;
    assert_int_equal(ef_expect(x, 2.0f, err, 0.5f, BAD_N, block, &pk, e2), EFPS_ERR_NONFINITE);
    efps_aligned_free(pk);
    fill_const(x, BAD_N, 3e38f);
    st = ef_expect(x, 1.0f, err, 0.5f, BAD_N, block, &pk, e2);
    assert_int_equal(st, block == 1 ? EFPS_OK : EFPS_ERR_NONFINITE); /* block 1: scale = |p| */
    efps_aligned_free(pk);
    free(x);
    free(err);
    free(e2);
}

static void nonfinite_reduce(size_t block, ref_rng_t *r)
{
    const ref_layout_t L = ref_layout(BAD_N, block);
    uint8_t *in[3], *pk;
    float *err = floats(BAD_N), *e2 = floats(BAD_N);
    for (int w = 0; w < 3; w++)
        in[w] = packed_buf(L.size);
    for (size_t pi = 0; pi < COUNT(bad_pos); pi++) {
        for (int bv = 0; bv < 4; bv++) {
            for (int where = 0; where < 2; where++) { /* err, or a worker's scale */
                for (int w = 0; w < 3; w++)
                    fill_random_packed(in[w], L, r);
                fill_mixed(err, BAD_N, r, -6, 6);
                if (where == 0)
                    err[bad_pos[pi]] = bad_value(bv);
                else
                    ref_put_scale(in[bv % 3], bad_pos[pi] / L.B, bad_value(bv));
                assert_int_equal(reduce_expect(in, 3, err, 0.5f, BAD_N, block, &pk, e2),
                                 EFPS_ERR_NONFINITE);
                efps_aligned_free(pk);
            }
        }
    }
    /* Finite scales whose sum overflows. */
    for (int w = 0; w < 3; w++) {
        fill_random_packed(in[w], L, r);
        memset(in[w] + L.signs_off, 0, L.sign_bytes);
        ref_put_scale(in[w], L.nb - 1, FLT_MAX);
    }
    assert_int_equal(reduce_expect(in, 3, err, 0.5f, BAD_N, block, &pk, e2), EFPS_ERR_NONFINITE);
    efps_aligned_free(pk);
    for (int w = 0; w < 3; w++)
        efps_aligned_free(in[w]);
    free(err);
    free(e2);
}

/* A bad value in the last element, after the out-of-place calls have already
 * committed many chunks: every call reports it, err (err_in) stays as it was. */
static void nonfinite_late(size_t block, ref_rng_t *r)
{
    const size_t n = 5 * 2048 + 3;
    float *x = floats(n), *err = floats(n), *e2 = floats(n);
    uint8_t *pk;
    fill_mixed(x, n, r, -6, 6);
    fill_mixed(err, n, r, -6, 6);
    x[n - 1] = NAN;
    assert_int_equal(ef_expect(x, 1.0f, err, 0.5f, n, block, &pk, e2), EFPS_ERR_NONFINITE);
    efps_aligned_free(pk);
    const ref_layout_t L = ref_layout(n, block);
    uint8_t *in[2] = {packed_buf(L.size), packed_buf(L.size)};
    fill_random_packed(in[0], L, r);
    fill_random_packed(in[1], L, r);
    err[n - 1] = INFINITY;
    assert_int_equal(reduce_expect(in, 2, err, 0.5f, n, block, &pk, e2), EFPS_ERR_NONFINITE);
    efps_aligned_free(pk);
    efps_aligned_free(in[0]);
    efps_aligned_free(in[1]);
    free(x);
    free(err);
    free(e2);
}

void test_nonfinite(void **state)
{
    const efps_simd_t v = variant_begin(state);
    const size_t bs[] = {0, 1, 7, 64, 256};
    ref_rng_t r = {0xbad};
    for (size_t bi = 0; bi < COUNT(bs); bi++) {
        CTX("non-finite: n=%d block=%zu variant=%s", BAD_N, bs[bi], efps_simd_name(v));
        nonfinite_ef(bs[bi], &r);
        nonfinite_reduce(bs[bi], &r);
        nonfinite_late(bs[bi], &r);
    }
    /* sign_pack: NaN or Inf anywhere is an error; huge and tiny finite values are not. */
    float *u = floats(BAD_N);
    uint8_t *s = packed_buf(efps_sign_packed_size(BAD_N));
    for (size_t pi = 0; pi < COUNT(bad_pos); pi++) {
        for (int bv = 0; bv < 4; bv++) {
            fill_mixed(u, BAD_N, &r, -6, 6);
            u[bad_pos[pi]] = bad_value(bv);
            assert_int_equal(efps_sign_pack(u, BAD_N, s), EFPS_ERR_NONFINITE);
        }
        u[bad_pos[pi]] = pi ? -FLT_MAX : 0x1p-149f;
        assert_int_equal(efps_sign_pack(u, BAD_N, s), EFPS_OK);
    }
    free(u);
    efps_aligned_free(s);
}
