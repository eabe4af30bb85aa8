/* How the calls take their buffers: inputs at any alignment, packed outputs
 * only 64-byte aligned, bad arguments refused before anything is computed,
 * n = 0 writes nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>

#include "check.h"

/* ---- alignment -------------------------------------------------------------- */

/* An aligned buffer of n floats plus room for an offset of up to 3 floats. */
static float *shifted(const float *src, size_t n, size_t off, void **base_p)
{
    float *base = efps_aligned_alloc((n + 3) * sizeof(float));
    assert_non_null(base);
    memcpy(base + off, src, n * sizeof(float));
    *base_p = base;
    return base + off;
}

static void unaligned_ef(size_t n, size_t block, ref_rng_t *r)
{
    const ref_layout_t L = ref_layout(n, block);
    float *x = floats(n), *err = floats(n), *e_ref = floats(n), *out_ref = floats(n);
    uint8_t *pk_ref = packed_buf(L.size), *pk = packed_buf(L.size);
    fill_mixed(x, n, r, -8, 8);
    fill_mixed(err, n, r, -8, 8);
    memcpy(e_ref, err, n * sizeof(float));
    assert_int_equal(efps_ef_compress(x, 0.37f, e_ref, 1.3f, n, block, pk_ref), EFPS_OK);
    assert_int_equal(efps_decompress(pk_ref, n, block, 0.5f, out_ref), EFPS_OK);
    for (size_t off = 1; off <= 3; off++) {
        void *bx, *be, *bo, *bp;
        const float *xu = shifted(x, n, off, &bx);
        float *eu = shifted(err, n, off, &be), *ou = shifted(x, n, off, &bo);
        memset(pk, 0xAA, L.size);
        assert_int_equal(efps_ef_compress(xu, 0.37f, eu, 1.3f, n, block, pk), EFPS_OK);
        expect_same_bytes(pk, pk_ref, L.size, &L, "ef_compress, unaligned x and err");
        expect_same_floats(eu, e_ref, n, "ef_compress err, unaligned");
        /* packed input at a float (not 64-byte) offset, output at a float offset */
        uint8_t *pu = efps_aligned_alloc(L.size + 4 * off);
        assert_non_null(pu);
        memcpy(pu + 4 * off, pk_ref, L.size);
        bp = pu;
        assert_int_equal(efps_decompress(pu + 4 * off, n, block, 0.5f, ou), EFPS_OK);
        expect_same_floats(ou, out_ref, n, "decompress, unaligned packed and out");
        efps_aligned_free(bx);
        efps_aligned_free(be);
        efps_aligned_free(bo);
        efps_aligned_free(bp);
    }
    efps_aligned_free(pk_ref);
    efps_aligned_free(pk);
    free(x);
    free(err);
    free(e_ref);
    free(out_ref);
}

static void unaligned_reduce(size_t n, size_t block, ref_rng_t *r)
{
    const ref_layout_t L = ref_layout(n, block);
    uint8_t *in[3], *pk_ref = packed_buf(L.size), *pk = packed_buf(L.size);
    float *err = floats(n), *e_ref = floats(n);
    for (int w = 0; w < 3; w++) {
        in[w] = packed_buf(L.size);
        fill_random_packed(in[w], L, r);
    }
    fill_mixed(err, n, r, -8, 8);
    memcpy(e_ref, err, n * sizeof(float));
    assert_int_equal(efps_server_reduce((const void *const *)in, 3, n, block, e_ref, 0.5f, pk_ref),
                     EFPS_OK);
    for (size_t off = 1; off <= 3; off++) {
        uint8_t *base[3];
        const void *inu[3];
        for (int w = 0; w < 3; w++) {
            base[w] = efps_aligned_alloc(L.size + 4 * off);
            assert_non_null(base[w]);
            memcpy(base[w] + 4 * off, in[w], L.size);
            inu[w] = base[w] + 4 * off;
        }
        void *be;
        float *eu = shifted(err, n, off, &be);
        memset(pk, 0xAA, L.size);
        assert_int_equal(efps_server_reduce(inu, 3, n, block, eu, 0.5f, pk), EFPS_OK);
        expect_same_bytes(pk, pk_ref, L.size, &L, "server_reduce, unaligned inputs and err");
        expect_same_floats(eu, e_ref, n, "server_reduce err, unaligned");
        efps_aligned_free(be);
        for (int w = 0; w < 3; w++)
            efps_aligned_free(base[w]);
    }
    for (int w = 0; w < 3; w++)
        efps_aligned_free(in[w]);
    efps_aligned_free(pk_ref);
    efps_aligned_free(pk);
    free(err);
    free(e_ref);
}

static void unaligned_signs(size_t n, ref_rng_t *r)
{
    const size_t size = efps_sign_packed_size(n);
    float *u = floats(n), *out_ref = floats(n);
    uint8_t *ref = packed_buf(size), *s = packed_buf(size), *in[3];
    fill_mixed(u, n, r, -8, 8);
    assert_int_equal(efps_sign_pack(u, n, ref), EFPS_OK);
    for (int w = 0; w < 3; w++) {
        in[w] = packed_buf(size);
        fill_random_signs(in[w], n, r);
    }
    for (size_t off = 1; off <= 3; off++) {
        void *bu, *bo;
        const float *uu = shifted(u, n, off, &bu);
        float *ou = shifted(u, n, off, &bo);
        memset(s, 0xAA, size);
        assert_int_equal(efps_sign_pack(uu, n, s), EFPS_OK);
        expect_same_bytes(s, ref, size, NULL, "sign_pack, unaligned input");
        /* byte offsets for the sign streams: they are byte arrays */
        uint8_t *base[3];
        const void *inu[3];
        for (int w = 0; w < 3; w++) {
            base[w] = efps_aligned_alloc(size + off);
            assert_non_null(base[w]);
            memcpy(base[w] + off, in[w], size);
            inu[w] = base[w] + off;
        }
        assert_int_equal(efps_sign_majority((const void *const *)in, 3, n, ref), EFPS_OK);
        assert_int_equal(efps_sign_majority(inu, 3, n, s), EFPS_OK);
        expect_same_bytes(s, ref, size, NULL, "sign_majority, unaligned inputs");
        assert_int_equal(efps_sign_decompress(ref, n, 0.25f, out_ref), EFPS_OK);
        memcpy(base[0] + off, ref, size);
        assert_int_equal(efps_sign_decompress(base[0] + off, n, 0.25f, ou), EFPS_OK);
        expect_same_floats(ou, out_ref, n, "sign_decompress, unaligned input and out");
        for (int w = 0; w < 3; w++)
            efps_aligned_free(base[w]);
        efps_aligned_free(bu);
        efps_aligned_free(bo);
        assert_int_equal(efps_sign_pack(u, n, ref), EFPS_OK);
    }
    for (int w = 0; w < 3; w++)
        efps_aligned_free(in[w]);
    efps_aligned_free(ref);
    efps_aligned_free(s);
    free(u);
    free(out_ref);
}

void test_unaligned_inputs(void **state)
{
    const efps_simd_t v = variant_begin(state);
    const size_t ns[] = {1000, 4097}, bs[] = {0, 7, 256};
    ref_rng_t r = {0xa11};
    for (size_t ni = 0; ni < COUNT(ns); ni++) {
        for (size_t bi = 0; bi < COUNT(bs); bi++) {
            CTX("unaligned: n=%zu block=%zu variant=%s", ns[ni], bs[bi], efps_simd_name(v));
            unaligned_ef(ns[ni], bs[bi], &r);
            unaligned_reduce(ns[ni], bs[bi], &r);
        }
        CTX("unaligned signs: n=%zu variant=%s", ns[ni], efps_simd_name(v));
        unaligned_signs(ns[ni], &r);
    }
}

/* Packed outputs must be 64-byte aligned: anything else is EFPS_ERR_INVALID,
 * before anything is computed (err unchanged). */
void test_unaligned_output(void **state)
{
    const efps_simd_t v = variant_begin(state);
    (void)v;
    const size_t n = 100, size = efps_packed_size(n, 0);
    float x[100], err[100], err0[100];
    ref_rng_t r = {7};
    fill_mixed(x, n, &r, -3, 3);
    fill_mixed(err0, n, &r, -3, 3);
    uint8_t *buf = efps_aligned_calloc(size + 64), *in = efps_aligned_calloc(size);
    assert_non_null(buf);
    assert_non_null(in);
    const void *ins[1] = {in};
    const size_t offs[] = {1, 4, 8, 16, 32, 63};
    for (size_t k = 0; k < COUNT(offs); k++) {
        uint8_t *out = buf + offs[k];
        memcpy(err, err0, sizeof(err));
        assert_int_equal(efps_ef_compress(x, 1.0f, err, 0.5f, n, 0, out), EFPS_ERR_INVALID);
        assert_memory_equal(err, err0, sizeof(err));
        assert_int_equal(efps_server_reduce(ins, 1, n, 0, err, 0.5f, out), EFPS_ERR_INVALID);
        assert_memory_equal(err, err0, sizeof(err));
        assert_int_equal(efps_sign_pack(x, n, out), EFPS_ERR_INVALID);
        assert_int_equal(efps_sign_majority(ins, 1, n, out), EFPS_ERR_INVALID);
    }
    efps_aligned_free(buf);
    efps_aligned_free(in);
}

/* ---- argument checks ---------------------------------------------------------- */

void test_invalid_args(void **state)
{
    const efps_simd_t v = variant_begin(state);
    (void)v;
    const size_t n = 100, size = efps_packed_size(n, 0);
    float x[100] = {1.0f}, err[100] = {0.0f}, out[100];
    uint8_t *pk = efps_aligned_calloc(size), *pk2 = efps_aligned_calloc(size);
    assert_non_null(pk);
    assert_non_null(pk2);
    const void *ins[3] = {pk, pk2, NULL}, *one[1] = {pk};

    assert_int_equal(efps_ef_compress(NULL, 1, err, 1, n, 0, pk), EFPS_ERR_INVALID);
    assert_int_equal(efps_ef_compress(x, 1, NULL, 1, n, 0, pk), EFPS_ERR_INVALID);
    assert_int_equal(efps_ef_compress(x, 1, err, 1, n, 0, NULL), EFPS_ERR_INVALID);
    float err2[200];
    assert_int_equal(efps_ef_compress_to(NULL, 1, err, 1, out, n, 0, pk), EFPS_ERR_INVALID);
    assert_int_equal(efps_ef_compress_to(x, 1, NULL, 1, out, n, 0, pk), EFPS_ERR_INVALID);
    assert_int_equal(efps_ef_compress_to(x, 1, err, 1, NULL, n, 0, pk), EFPS_ERR_INVALID);
    assert_int_equal(efps_ef_compress_to(x, 1, err, 1, out, n, 0, NULL), EFPS_ERR_INVALID);
    assert_int_equal(efps_ef_compress_to(x, 1, err, 1, out, n, 0, pk + 4), EFPS_ERR_INVALID);
    /* err_out overlapping err_in (but not equal to it) or x would read what it wrote */
    memset(err2, 0, sizeof(err2));
    assert_int_equal(efps_ef_compress_to(x, 1, err2, 1, err2 + 1, n, 0, pk), EFPS_ERR_INVALID);
    assert_int_equal(efps_ef_compress_to(x, 1, err2 + 99, 1, err2, n, 0, pk), EFPS_ERR_INVALID);
    assert_int_equal(efps_ef_compress_to(err2, 1, err, 1, err2 + 50, n, 0, pk), EFPS_ERR_INVALID);
    assert_int_equal(efps_ef_compress_to(x, 1, err2, 1, err2 + 100, n, 0, pk), EFPS_OK);
    assert_int_equal(efps_ef_compress_to(x, 1, err2, 1, err2, n, 0, pk), EFPS_OK); /* in place */
    assert_int_equal(efps_decompress(NULL, n, 0, 1, out), EFPS_ERR_INVALID);
    assert_int_equal(efps_decompress(pk, n, 0, 1, NULL), EFPS_ERR_INVALID);
    assert_int_equal(efps_decompress_add(NULL, n, 0, 1, out), EFPS_ERR_INVALID);
    assert_int_equal(efps_decompress_add(pk, n, 0, 1, NULL), EFPS_ERR_INVALID);

    assert_int_equal(efps_server_reduce(NULL, 1, n, 0, err, 1, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_reduce(ins, 3, n, 0, err, 1, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_reduce(one, 1, n, 0, NULL, 1, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_reduce(one, 1, n, 0, err, 1, NULL), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_reduce(one, 0, n, 0, err, 1, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_reduce(one, -1, n, 0, err, 1, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_reduce_to(NULL, 1, n, 0, err, 1, out, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_reduce_to(one, 1, n, 0, NULL, 1, out, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_reduce_to(one, 1, n, 0, err, 1, NULL, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_reduce_to(one, 1, n, 0, err, 1, out, NULL), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_reduce_to(one, 0, n, 0, err, 1, out, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_reduce_to(one, 1, n, 0, err2, 1, err2 + 1, pk2), EFPS_ERR_INVALID);

    assert_int_equal(efps_sign_pack(NULL, n, pk), EFPS_ERR_INVALID);
    assert_int_equal(efps_sign_pack(x, n, NULL), EFPS_ERR_INVALID);
    assert_int_equal(efps_sign_majority(NULL, 1, n, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_sign_majority(ins, 3, n, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_sign_majority(one, 1, n, NULL), EFPS_ERR_INVALID);
    assert_int_equal(efps_sign_majority(one, 0, n, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_sign_majority(one, -3, n, pk2), EFPS_ERR_INVALID);
    assert_int_equal(efps_sign_decompress(NULL, n, 1, out), EFPS_ERR_INVALID);
    assert_int_equal(efps_sign_decompress(pk, n, 1, NULL), EFPS_ERR_INVALID);
    efps_aligned_free(pk);
    efps_aligned_free(pk2);
}

/* n = 0: every call succeeds and writes nothing. */
void test_zero_length(void **state)
{
    const efps_simd_t v = variant_begin(state);
    (void)v;
    float x[16], err[16], out[16], keep[16], keep_out[16];
    uint8_t *pk = efps_aligned_alloc(64), *keep_pk = efps_aligned_alloc(64);
    assert_non_null(pk);
    assert_non_null(keep_pk);
    memset(x, 0x3c, sizeof(x));
    memset(err, 0x3d, sizeof(err));
    memset(out, 0x3e, sizeof(out));
    memset(pk, 0xAA, 64);
    memcpy(keep_pk, pk, 64);
    const void *ins[2] = {pk, pk};
    for (size_t block = 0; block <= 8; block += 8) {
        memcpy(keep, err, sizeof(err));
        assert_int_equal(efps_ef_compress(x, 1, err, 1, 0, block, pk), EFPS_OK);
        assert_memory_equal(err, keep, sizeof(err));
        assert_memory_equal(pk, keep_pk, 64);
        assert_int_equal(efps_server_reduce(ins, 2, 0, block, err, 1, pk), EFPS_OK);
        assert_memory_equal(err, keep, sizeof(err));
        assert_memory_equal(pk, keep_pk, 64);
        memcpy(keep_out, out, sizeof(out));
        assert_int_equal(efps_ef_compress_to(x, 1, err, 1, out, 0, block, pk), EFPS_OK);
        assert_int_equal(efps_server_reduce_to(ins, 2, 0, block, err, 1, out, pk), EFPS_OK);
        assert_memory_equal(err, keep, sizeof(err));
        assert_memory_equal(out, keep_out, sizeof(out));
        assert_memory_equal(pk, keep_pk, 64);
        memcpy(keep, out, sizeof(out));
        assert_int_equal(efps_decompress(pk, 0, block, 1, out), EFPS_OK);
        assert_int_equal(efps_decompress_add(pk, 0, block, 1, out), EFPS_OK);
        assert_int_equal(efps_sign_decompress(pk, 0, 1, out), EFPS_OK);
        assert_memory_equal(out, keep, sizeof(out));
    }
    assert_int_equal(efps_sign_pack(x, 0, pk), EFPS_OK);
    assert_int_equal(efps_sign_majority(ins, 2, 0, pk), EFPS_OK);
    assert_memory_equal(pk, keep_pk, 64);
    efps_aligned_free(pk);
    efps_aligned_free(keep_pk);
}
