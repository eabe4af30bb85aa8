/* The sweep of every kernel over sizes x blocks x (a, b) x worker counts:
 * the variant under test against the scalar reference, bit for bit; the
 * scalar reference against the float model of docs/design.md (bit for bit)
 * and against a double-precision transcription of the formulas (within a
 * tolerance worked out below). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "check.h"

#define MAX_M 8

/* Float arrays come from malloc with their exact size and packed buffers from
 * efps_aligned_alloc with their exact (64-multiple) size, so ASan sees any
 * access past an end. */
typedef struct {
    size_t n;
    float *x, *err0, *err_ref, *err_var, *err_mod, *p, *out_ref, *out_var;
    double *pd, *mag;
} bufs_t;

static void bufs_init(bufs_t *bf, size_t n)
{
    bf->n = n;
    float **f[] = {&bf->x,       &bf->err0, &bf->err_ref, &bf->err_var,
                   &bf->err_mod, &bf->p,    &bf->out_ref, &bf->out_var};
    for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++)
        *f[k] = floats(n);
    bf->pd = malloc(n * sizeof(double));
    bf->mag = malloc(n * sizeof(double));
    assert_non_null(bf->pd);
    assert_non_null(bf->mag);
}

static void bufs_free(bufs_t *bf)
{
    float *f[] = {bf->x,       bf->err0, bf->err_ref, bf->err_var,
                  bf->err_mod, bf->p,    bf->out_ref, bf->out_var};
    for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++)
        free(f[k]);
    free(bf->pd);
    free(bf->mag);
}

/* ---- the double-precision transcription ---------------------------------
 *
 * p_d = a*x + b*err (or sum_w decoded / m + b*err) is computed in double
 * (products of floats are exact in double), s_d = sum |p_d| / d in double.
 * docs/design.md prescribes float arithmetic in a fixed order, and two of its
 * roundings can exceed 1e-5 relative on their own, so the tolerance is 1e-5
 * relative *beyond* a bound on them, computed for the data at hand:
 * - p is rounded before |p| is summed: |p - p_d| <= r_i = k * u * mag_i, with
 *   u = 2^-24, mag = |a x| + |b err| (server: sum_w |decoded_w| / m + |b err|),
 *   k the number of roundings (3 for the worker; m + 3 for the server's m-term
 *   sum, division and addition). When p cancels, r_i / |p_i| is unbounded.
 * - the 16 float partial sums: each addition and the division errs by at most
 *   u * |its result|; the test re-runs the prescribed order and adds those up
 *   (bound S, rigorous, first order). For a block of 10^6 elements whose
 *   magnitudes span 2^-12..2^12, terms below half an ulp of a partial of 2^25
 *   are lost, a systematic -5e-5: the prescribed arithmetic cannot give 1e-5
 *   there, while blocks of a few thousand stay near 1e-6.
 * With slack = (sum_i r_i + S) / d + 2^-149 (one subnormal step):
 * - scale: |s - s_d| <= 1e-5 * s_d + slack;
 * - sign: the bit is the sign of p_d wherever |p_d| > r_i (closer to 0 the float
 *   p may round to the other side; -0.0 is tested exactly elsewhere);
 * - err: |err - err_d| <= 1e-5 * (mag_i + s_d) + slack, err_d = p_d -/+ s_d for
 *   the bit that was sent: err is p minus the scale, so its absolute error is
 *   bounded by theirs, relative to the magnitudes rounded, not to |err|, which
 *   cancellation can make as small as it likes. */

/* What the worker step's scalar results look like next to the double
 * transcription, printed after the sweep: [0] blocks of up to 4097 elements,
 * [1] longer ones; only blocks whose p does not cancel (the rounding of p
 * is then below 1e-6 of the scale). */
typedef struct {
    double scale_rel[2]; /* largest |s - s_d| / s_d */
    double err_rel[2];   /* largest |err - err_d| / (mag + s_d) */
    double beyond;       /* largest (|s - s_d| - slack) / s_d, any step */
    size_t near_zero, elements;
} dstats_t;

static dstats_t dstats;

/* The first-order rounding bound S of the prescribed float L1 sum of p[0..d). */
static double l1_rounding_bound(const float *p, size_t d)
{
    const double u = 0x1p-24;
    float s[16] = {0};
    double bound = 0.0;
    for (size_t j = 0; j < d; j++) {
        s[j % 16] = s[j % 16] + fabsf(p[j]);
        bound += u * s[j % 16];
    }
    for (int w = 8; w >= 2; w /= 2) {
        for (int k = 0; k < w; k++) {
            s[k] = s[k] + s[k + w];
            bound += u * s[k];
        }
    }
    s[0] = s[0] + s[1];
    return bound + 2 * u * s[0]; /* the last addition and the division */
}

static void check_block_double(ref_layout_t L, size_t k, const double *pd, const double *mag,
                               double rounds, const float *p, const uint8_t *packed,
                               const float *err)
{
    const size_t lo = k * L.B, hi = L.n - lo < L.B ? L.n : lo + L.B;
    const double d = (double)(hi - lo), r = rounds * 0x1p-24;
    double sum = 0.0, rsum = 0.0;
    for (size_t i = lo; i < hi; i++) {
        sum += fabs(pd[i]);
        rsum += r * mag[i];
    }
    const double sd = sum / d, s = ref_get_scale(packed, k), dev = fabs(s - sd);
    const double slack = (rsum + l1_rounding_bound(p + lo, hi - lo)) / d + 0x1p-149;
    if (dev > 1e-5 * sd + slack)
        fail_msg("%s: block %zu scale %a, double transcription %a (relative %.3g, rounding "
                 "allows %.3g more)",
                 case_ctx, k, s, sd, dev / sd, slack / sd);
    /* stats: worker blocks where p does not cancel (p rounding below 1e-6) */
    const int worker = rounds == 3.0 && rsum / d <= 1e-6 * sd, big = hi - lo > 4097;
    if (worker && sd > 0 && dev / sd > dstats.scale_rel[big])
        dstats.scale_rel[big] = dev / sd;
    if (sd > 0 && (dev - slack) / sd > dstats.beyond)
        dstats.beyond = (dev - slack) / sd;
    for (size_t i = lo; i < hi; i++) {
        const int bit = ref_get_bit(packed + L.signs_off, i);
        if (fabs(pd[i]) > r * mag[i]) {
            if (bit != (signbit(pd[i]) != 0))
                fail_msg("%s: element %zu: sign bit %d but p = %a", case_ctx, i, bit, pd[i]);
        } else {
            dstats.near_zero++;
        }
        const double ed = pd[i] - (bit ? -sd : sd), tol = 1e-5 * (mag[i] + sd) + slack;
        if (fabs((double)err[i] - ed) > tol)
            fail_msg("%s: element %zu: err %a, double transcription %a (tolerance %a)", case_ctx, i,
                     (double)err[i], ed, tol);
        if (worker && mag[i] + sd > 0 &&
            fabs((double)err[i] - ed) / (mag[i] + sd) > dstats.err_rel[big])
            dstats.err_rel[big] = fabs((double)err[i] - ed) / (mag[i] + sd);
    }
    dstats.elements += hi - lo;
}

/* p: the float p of the model (for the summation bound only). */
static void check_double(ref_layout_t L, const double *pd, const double *mag, double rounds,
                         const float *p, const uint8_t *packed, const float *err)
{
    for (size_t k = 0; k < L.nb; k++)
        check_block_double(L, k, pd, mag, rounds, p, packed, err);
}

/* ---- the sweep: sizes x blocks x (a, b) x functions ----------------------- */

static const size_t sizes[] = {1, 7, 8, 63, 64, 65, 1000, 4097, 1000003};
#define BLOCK_N ((size_t)-1) /* stands for "block = n" */
static const size_t blocks[] = {0, 1, 7, 256, 2048, BLOCK_N};
static const int red_ms[] = {1, 3, 4, 8};
static const int sign_ms[] = {1, 2, 3, 4, 5, 8};

static void ef_to_expect(const float *x, float a, const float *err, float b, size_t n, size_t block,
                         efps_status_t st, const uint8_t *pk, const float *err_new)
{
    to_expect(x, a, NULL, 0, err, b, n, block, st, pk, err_new);
}

static void reduce_to_expect(uint8_t *const *in, int m, const float *err, float b, size_t n,
                             size_t block, efps_status_t st, const uint8_t *pk,
                             const float *err_new)
{
    to_expect(NULL, 0.0f, in, m, err, b, n, block, st, pk, err_new);
}

/* The worker step with the scalar reference into pk_ref/err_ref. For the
 * scalar variant, checks that against the float model (bit for bit) and the
 * double transcription; for another variant, checks it gives the same bits. */
static void ef_case(efps_simd_t v, bufs_t *bf, ref_layout_t L, size_t block, float a, float b,
                    uint8_t *pk_ref, uint8_t *pk_var)
{
    const size_t n = L.n;
    use(EFPS_SIMD_SCALAR);
    memcpy(bf->err_ref, bf->err0, n * sizeof(float));
    memset(pk_ref, 0xAA, L.size);
    assert_int_equal(efps_ef_compress(bf->x, a, bf->err_ref, b, n, block, pk_ref), EFPS_OK);
    if (v == EFPS_SIMD_SCALAR) {
        assert_int_equal(ref_ef_model(bf->x, a, bf->err0, b, L, bf->p, pk_var, bf->err_mod), 0);
        expect_same_bytes(pk_ref, pk_var, L.size, &L, "ef_compress vs float model: packed");
        expect_same_floats(bf->err_ref, bf->err_mod, n, "ef_compress vs float model: err");
        for (size_t i = 0; i < n; i++) {
            const double ax = (double)a * bf->x[i], be = (double)b * bf->err0[i];
            bf->pd[i] = ax + be;
            bf->mag[i] = fabs(ax) + fabs(be);
        }
        check_double(L, bf->pd, bf->mag, 3.0, bf->p, pk_ref, bf->err_ref);
        ef_to_expect(bf->x, a, bf->err0, b, n, block, EFPS_OK, pk_ref, bf->err_ref);
        return;
    }
    use(v);
    memcpy(bf->err_var, bf->err0, n * sizeof(float));
    memset(pk_var, 0x5A, L.size);
    assert_int_equal(efps_ef_compress(bf->x, a, bf->err_var, b, n, block, pk_var), EFPS_OK);
    expect_same_bytes(pk_var, pk_ref, L.size, &L, "ef_compress vs scalar: packed");
    expect_same_floats(bf->err_var, bf->err_ref, n, "ef_compress vs scalar: err");
    ef_to_expect(bf->x, a, bf->err0, b, n, block, EFPS_OK, pk_ref, bf->err_ref);
}

/* efps_decompress and efps_decompress_add (onto x) of one packed tensor. */
static void decode_case(efps_simd_t v, bufs_t *bf, ref_layout_t L, size_t block, const uint8_t *pk)
{
    const size_t n = L.n;
    for (size_t ai = 0; ai < COUNT(alphas); ai++) {
        for (int add = 0; add <= 1; add++) {
            const float alpha = alphas[ai];
            efps_status_t (*fn)(const void *, size_t, size_t, float, float *) =
                add ? efps_decompress_add : efps_decompress;
            use(EFPS_SIMD_SCALAR);
            memcpy(bf->out_ref, bf->x, n * sizeof(float));
            assert_int_equal(fn(pk, n, block, alpha, bf->out_ref), EFPS_OK);
            if (v == EFPS_SIMD_SCALAR) {
                check_decode_double(L, pk, alpha, add ? bf->x : NULL, bf->out_ref);
                continue;
            }
            use(v);
            memcpy(bf->out_var, bf->x, n * sizeof(float));
            assert_int_equal(fn(pk, n, block, alpha, bf->out_var), EFPS_OK);
            expect_same_floats(bf->out_var, bf->out_ref, n,
                               add ? "decompress_add vs scalar" : "decompress vs scalar");
        }
    }
}

/* efps_server_reduce of the first m of the workers' tensors. */
static void reduce_case(efps_simd_t v, bufs_t *bf, ref_layout_t L, size_t block, float b, int m,
                        uint8_t *const *workers, uint8_t *pk_ref, uint8_t *pk_var)
{
    const size_t n = L.n;
    const void *const *in = (const void *const *)workers;
    use(EFPS_SIMD_SCALAR);
    memcpy(bf->err_ref, bf->err0, n * sizeof(float));
    memset(pk_ref, 0xAA, L.size);
    assert_int_equal(efps_server_reduce(in, m, n, block, bf->err_ref, b, pk_ref), EFPS_OK);
    if (v == EFPS_SIMD_SCALAR) {
        assert_int_equal(ref_reduce_model((const uint8_t *const *)workers, m, bf->err0, b, L, bf->p,
                                          pk_var, bf->err_mod),
                         0);
        expect_same_bytes(pk_ref, pk_var, L.size, &L, "server_reduce vs float model: packed");
        expect_same_floats(bf->err_ref, bf->err_mod, n, "server_reduce vs float model: err");
        for (size_t i = 0; i < n; i++) {
            double sum = 0.0, abs_sum = 0.0;
            for (int w = 0; w < m; w++) {
                const double d = ref_decode(workers[w], L, i);
                sum += d;
                abs_sum += fabs(d);
            }
            const double be = (double)b * bf->err0[i];
            bf->pd[i] = sum / m + be;
            bf->mag[i] = abs_sum / m + fabs(be);
        }
        check_double(L, bf->pd, bf->mag, m + 3.0, bf->p, pk_ref, bf->err_ref);
        reduce_to_expect(workers, m, bf->err0, b, n, block, EFPS_OK, pk_ref, bf->err_ref);
        return;
    }
    use(v);
    memcpy(bf->err_var, bf->err0, n * sizeof(float));
    memset(pk_var, 0x5A, L.size);
    assert_int_equal(efps_server_reduce(in, m, n, block, bf->err_var, b, pk_var), EFPS_OK);
    expect_same_bytes(pk_var, pk_ref, L.size, &L, "server_reduce vs scalar: packed");
    expect_same_floats(bf->err_var, bf->err_ref, n, "server_reduce vs scalar: err");
    reduce_to_expect(workers, m, bf->err0, b, n, block, EFPS_OK, pk_ref, bf->err_ref);
}

/* sign_pack of x, sign_majority of random streams, sign_decompress of the vote. */
static void sign_case(efps_simd_t v, bufs_t *bf, uint64_t seed)
{
    const size_t n = bf->n, size = efps_sign_packed_size(n);
    assert_int_equal(size, ref_align64((n + 7) / 8));
    uint8_t *ref = packed_buf(size), *var = packed_buf(size), *streams[MAX_M];
    ref_rng_t r = {seed};
    CTX("sign_pack n=%zu variant=%s", n, efps_simd_name(v));
    use(EFPS_SIMD_SCALAR);
    memset(ref, 0xAA, size);
    assert_int_equal(efps_sign_pack(bf->x, n, ref), EFPS_OK);
    use(v);
    memset(var, 0x5A, size);
    assert_int_equal(efps_sign_pack(bf->x, n, var), EFPS_OK);
    expect_same_bytes(var, ref, size, NULL, "sign_pack vs scalar");
    ref_sign_model(bf->x, n, var);
    expect_same_bytes(ref, var, size, NULL, "sign_pack vs model");
    for (int w = 0; w < MAX_M; w++) {
        streams[w] = packed_buf(size);
        fill_random_signs(streams[w], n, &r);
    }
    for (size_t mi = 0; mi < COUNT(sign_ms); mi++) {
        const int m = sign_ms[mi];
        const void *const *in = (const void *const *)streams;
        CTX("sign_majority n=%zu m=%d variant=%s", n, m, efps_simd_name(v));
        use(EFPS_SIMD_SCALAR);
        memset(ref, 0xAA, size);
        assert_int_equal(efps_sign_majority(in, m, n, ref), EFPS_OK);
        use(v);
        memset(var, 0x5A, size);
        assert_int_equal(efps_sign_majority(in, m, n, var), EFPS_OK);
        expect_same_bytes(var, ref, size, NULL, "sign_majority vs scalar");
        ref_majority_model((const uint8_t *const *)streams, m, n, var);
        expect_same_bytes(ref, var, size, NULL, "sign_majority vs model");
        for (size_t ai = 0; ai < COUNT(alphas); ai++) {
            use(EFPS_SIMD_SCALAR);
            memset(bf->out_ref, 0xAA, n * sizeof(float));
            assert_int_equal(efps_sign_decompress(ref, n, alphas[ai], bf->out_ref), EFPS_OK);
            use(v);
            memset(bf->out_var, 0x5A, n * sizeof(float));
            assert_int_equal(efps_sign_decompress(ref, n, alphas[ai], bf->out_var), EFPS_OK);
            expect_same_floats(bf->out_var, bf->out_ref, n, "sign_decompress vs scalar");
            for (size_t i = 0; i < n; i++)
                bf->err_mod[i] = ref_get_bit(ref, i) ? -alphas[ai] : alphas[ai];
            expect_same_floats(bf->out_ref, bf->err_mod, n, "sign_decompress vs alpha*(+/-1)");
        }
    }
    for (int w = 0; w < MAX_M; w++)
        efps_aligned_free(streams[w]);
    efps_aligned_free(ref);
    efps_aligned_free(var);
}

/* At n = 1000003 the (n, block) grid is cut to the blocks that differ in kind
 * (one scale per element, a short odd block, a 512-multiple, one block) to
 * keep the ASan run to minutes; every other size runs every block. */
static int big_case_wanted(size_t n, size_t bi)
{
    return n < 100000 || blocks[bi] == 1 || blocks[bi] == 7 || blocks[bi] == 2048 ||
           blocks[bi] == 0;
}

static void sweep_block(efps_simd_t v, bufs_t *bf, size_t si, size_t bi)
{
    const size_t n = bf->n, block = blocks[bi] == BLOCK_N ? n : blocks[bi];
    const ref_layout_t L = ref_layout(n, block);
    assert_int_equal(efps_packed_size(n, block), L.size);
    assert_int_equal(efps_packed_blocks(n, block), L.nb);
    assert_int_equal(efps_packed_signs_offset(n, block), L.signs_off);
    uint8_t *pk_ref = packed_buf(L.size), *pk_var = packed_buf(L.size), *workers[MAX_M];
    for (int w = 0; w < MAX_M; w++)
        workers[w] = packed_buf(L.size);
    for (size_t k = 0; k < COUNT(abs_); k++) {
        const float a = abs_[k].a, b = abs_[k].b;
        ref_rng_t r = {(uint64_t)si << 32 | bi << 8 | k};
        fill_mixed(bf->x, n, &r, -12, 12);
        fill_mixed(bf->err0, n, &r, -14, 10);
        CTX("ef_compress n=%zu block=%zu a=%g b=%g variant=%s", n, block, (double)a, (double)b,
            efps_simd_name(v));
        ef_case(v, bf, L, block, a, b, pk_ref, pk_var);
        CTX("decompress n=%zu block=%zu variant=%s", n, block, efps_simd_name(v));
        decode_case(v, bf, L, block, pk_ref);
        for (int w = 0; w < MAX_M; w++)
            fill_random_packed(workers[w], L, &r);
        for (size_t mi = 0; mi < COUNT(red_ms); mi++) {
            CTX("server_reduce n=%zu block=%zu m=%d b=%g variant=%s", n, block, red_ms[mi],
                (double)b, efps_simd_name(v));
            reduce_case(v, bf, L, block, b, red_ms[mi], workers, pk_ref, pk_var);
        }
    }
    for (int w = 0; w < MAX_M; w++)
        efps_aligned_free(workers[w]);
    efps_aligned_free(pk_ref);
    efps_aligned_free(pk_var);
}

void test_sweep(void **state)
{
    const efps_simd_t v = variant_begin(state);
    memset(&dstats, 0, sizeof(dstats));
    for (size_t si = 0; si < COUNT(sizes); si++) {
        bufs_t bf;
        bufs_init(&bf, sizes[si]);
        for (size_t bi = 0; bi < COUNT(blocks); bi++)
            if (big_case_wanted(sizes[si], bi))
                sweep_block(v, &bf, si, bi);
        ref_rng_t r = {0x5eed0000u + si};
        fill_mixed(bf.x, bf.n, &r, -12, 12);
        sign_case(v, &bf, 0x5167u + si);
        bufs_free(&bf);
    }
    if (v == EFPS_SIMD_SCALAR)
        print_message("double transcription, %zu elements checked, %zu signs within rounding "
                      "of 0; worker step, blocks <= 4097 / longer: scale relative error <= "
                      "%.3g / %.3g, err error / (mag + scale) <= %.3g / %.3g; any step: "
                      "scale error beyond the rounding bound <= %.3g of the scale\n",
                      dstats.elements, dstats.near_zero, dstats.scale_rel[0], dstats.scale_rel[1],
                      dstats.err_rel[0], dstats.err_rel[1], dstats.beyond);
}
