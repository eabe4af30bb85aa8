/* Unit tests of lib/compress: every kernel variant against the scalar
 * reference (bit for bit), the scalar reference against a float model written
 * from docs/design.md (bit for bit) and against a double-precision transcription
 * of the formulas (within tolerance), the packed format byte by byte, edge
 * values (-0.0, subnormals, NaN, Inf), alignment, argument checks, sizes and
 * the EFPS_SIMD variable.
 *
 * Tests named "name[variant]" run once per kernel variant. A variant the CPU
 * lacks is skipped (and says so); a variant the CPU has but the library
 * refuses fails. Built with -ffp-contract=off (see tests/unit/CMakeLists.txt). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "efps/compress.h"
#include "ref_compress.h"
#include "unit_child.h"

/* ---- variants ----------------------------------------------------------- */

static efps_simd_t variant_ids[] = {EFPS_SIMD_SCALAR, EFPS_SIMD_AVX2, EFPS_SIMD_AVX512};

/* 1 when variant v is now active, 0 when the CPU lacks it. Fails when the CPU
 * runs v and the library still refuses it: a skip must never hide that. */
static int variant_usable(efps_simd_t v)
{
    const efps_status_t st = efps_compress_set_simd(v);
    if (st == EFPS_OK) {
        assert_int_equal(efps_compress_simd(), v);
        return 1;
    }
    assert_int_equal(st, EFPS_ERR_UNSUPPORTED);
    if (v > efps_cpu_best_simd()) {
        print_message("[  SKIP    ] %s: this CPU (or its OS) lacks it\n", efps_simd_name(v));
        return 0;
    }
    fail_msg("the CPU supports %s but efps_compress_set_simd refuses it: %s", efps_simd_name(v),
             efps_strerror(st));
    return 0;
}

static efps_simd_t variant_or_skip(void **state)
{
    const efps_simd_t v = *(const efps_simd_t *)*state;
    if (!variant_usable(v))
        skip();
    return v;
}

static void use(efps_simd_t v)
{
    assert_int_equal(efps_compress_set_simd(v), EFPS_OK);
}

/* ---- comparison helpers that say where and what differs ------------------ */

static char ctx[200]; /* the case being checked, for failure messages */
#define CTX(...) snprintf(ctx, sizeof(ctx), __VA_ARGS__)

static void expect_same_floats(const float *got, const float *want, size_t n, const char *what)
{
    if (memcmp(got, want, n * sizeof(float)) == 0)
        return;
    size_t i = 0;
    while (ref_u32(got[i]) == ref_u32(want[i]))
        i++;
    fail_msg("%s: %s[%zu] is %a (0x%08x), want %a (0x%08x)", ctx, what, i, (double)got[i],
             (unsigned)ref_u32(got[i]), (double)want[i], (unsigned)ref_u32(want[i]));
}

static const char *packed_region(ref_layout_t L, size_t j)
{
    if (j < 4 * L.nb)
        return "scales";
    if (j < L.signs_off)
        return "scale padding";
    if (j < L.signs_off + L.sign_bytes)
        return "sign bytes";
    return "sign padding";
}

static void expect_same_bytes(const uint8_t *got, const uint8_t *want, size_t len,
                              const ref_layout_t *L, const char *what)
{
    if (memcmp(got, want, len) == 0)
        return;
    size_t j = 0;
    while (got[j] == want[j])
        j++;
    fail_msg("%s: %s byte %zu of %zu (%s) is 0x%02x, want 0x%02x", ctx, what, j, len,
             L ? packed_region(*L, j) : "sign stream", got[j], want[j]);
}

/* ---- buffers ------------------------------------------------------------ */

#define MAX_M 8

/* Float arrays come from malloc with their exact size and packed buffers from
 * efps_aligned_alloc with their exact (64-multiple) size, so ASan sees any
 * access past an end. */
typedef struct {
    size_t n;
    float *x, *err0, *err_ref, *err_var, *err_mod, *p, *out_ref, *out_var;
    double *pd, *mag;
} bufs_t;

static float *floats(size_t n)
{
    float *f = malloc(n * sizeof(float));
    assert_non_null(f);
    return f;
}

static uint8_t *packed_buf(size_t size)
{
    uint8_t *b = efps_aligned_alloc(size);
    assert_non_null(b);
    return b;
}

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

static void fill_mixed(float *v, size_t n, ref_rng_t *r, int emin, int emax)
{
    for (size_t i = 0; i < n; i++)
        v[i] = ref_rng_mixed(r, emin, emax);
}

/* A valid packed tensor with random content: scales of mixed magnitude (some
 * exactly zero), random signs, zero padding and zero unused sign bits. */
static void fill_random_packed(uint8_t *pk, ref_layout_t L, ref_rng_t *r)
{
    memset(pk, 0, L.size);
    for (size_t k = 0; k < L.nb; k++)
        ref_put_scale(pk, k, fabsf(ref_rng_mixed(r, -8, 8)));
    for (size_t i = 0; i < L.n; i++)
        ref_put_bit(pk + L.signs_off, i, (int)(ref_rng_next(r) & 1));
}

static void fill_random_signs(uint8_t *s, size_t n, ref_rng_t *r)
{
    memset(s, 0, ref_align64((n + 7) / 8));
    for (size_t i = 0; i < n; i++)
        ref_put_bit(s, i, (int)(ref_rng_next(r) & 1));
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
                 ctx, k, s, sd, dev / sd, slack / sd);
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
                fail_msg("%s: element %zu: sign bit %d but p = %a", ctx, i, bit, pd[i]);
        } else {
            dstats.near_zero++;
        }
        const double ed = pd[i] - (bit ? -sd : sd), tol = 1e-5 * (mag[i] + sd) + slack;
        if (fabs((double)err[i] - ed) > tol)
            fail_msg("%s: element %zu: err %a, double transcription %a (tolerance %a)", ctx, i,
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

/* out must be alpha * (+/-scale) (added to acc when acc != NULL), computed in
 * double and rounded once: that is exactly fl(alpha*d) and fl(acc + fl(alpha*d))
 * (double has more than 2*24+2 bits, so double rounding is harmless). */
static void check_decode_double(ref_layout_t L, const uint8_t *packed, float alpha,
                                const float *acc, const float *out)
{
    for (size_t i = 0; i < L.n; i++) {
        const float term = (float)((double)alpha * (double)ref_decode(packed, L, i));
        const float want = acc ? (float)((double)acc[i] + (double)term) : term;
        if (ref_u32(out[i]) != ref_u32(want))
            fail_msg("%s: alpha %a: element %zu is %a, want %a", ctx, (double)alpha, i,
                     (double)out[i], (double)want);
    }
}

/* ---- the sweep: sizes x blocks x (a, b) x functions ----------------------- */

static const size_t sizes[] = {1, 7, 8, 63, 64, 65, 1000, 4097, 1000003};
#define BLOCK_N ((size_t)-1) /* stands for "block = n" */
static const size_t blocks[] = {0, 1, 7, 256, 2048, BLOCK_N};
static const struct {
    float a, b;
} abs_[] = {{1.0f, 0.0f}, {1.0f, 0.5f}, {0.37f, 1.3f}};
static const int red_ms[] = {1, 3, 4, 8};
static const int sign_ms[] = {1, 2, 3, 4, 5, 8};
static const float alphas[] = {1.0f, -0.37f, 1.0f / 3.0f};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The out-of-place call of a step (the server's when in != NULL) from a copy
 * of err into a poisoned err_out: same status, packed bytes and new error as
 * the in-place call gave (pk, err_new); err_in as it was, whatever the status. */
static void to_expect(const float *x, float a, uint8_t *const *in, int m, const float *err, float b,
                      size_t n, size_t block, efps_status_t st, const uint8_t *pk,
                      const float *err_new)
{
    const ref_layout_t L = ref_layout(n, block);
    const char *fn = in ? "server_reduce_to" : "ef_compress_to";
    uint8_t *pk_to = packed_buf(L.size);
    float *err_in = floats(n), *err_to = floats(n);
    memcpy(err_in, err, n * sizeof(float));
    memset(err_to, 0x7f, n * sizeof(float));
    memset(pk_to, 0x5A, L.size);
    const efps_status_t got =
        in ? efps_server_reduce_to((const void *const *)in, m, n, block, err_in, b, err_to, pk_to)
           : efps_ef_compress_to(x, a, err_in, b, err_to, n, block, pk_to);
    if (got != st)
        fail_msg("%s: status %d, in place gave %d", fn, got, st);
    expect_same_floats(err_in, err, n, in ? "server_reduce_to: err_in" : "ef_compress_to: err_in");
    if (st == EFPS_OK) {
        expect_same_bytes(pk_to, pk, L.size, &L, "out of place vs in place: packed");
        expect_same_floats(err_to, err_new, n, "out of place vs in place: err_out");
    }
    free(err_in);
    free(err_to);
    efps_aligned_free(pk_to);
}

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

static void test_sweep(void **state)
{
    const efps_simd_t v = variant_or_skip(state);
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

static void test_neg_zero(void **state)
{
    const efps_simd_t v = variant_or_skip(state);
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
            fail_msg("%s: a=%g b=%g: no subnormal scale, first %a", ctx, (double)abs_[k].a,
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

static void test_denormals(void **state)
{
    const efps_simd_t v = variant_or_skip(state);
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

static void test_nonfinite(void **state)
{
    const efps_simd_t v = variant_or_skip(state);
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

/* ---- the format, worked out by hand ------------------------------------------- */

static void test_format_by_hand(void **state)
{
    const efps_simd_t v = variant_or_skip(state);
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

static void test_majority_ties(void **state)
{
    const efps_simd_t v = variant_or_skip(state);
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

static void test_unaligned_inputs(void **state)
{
    const efps_simd_t v = variant_or_skip(state);
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
static void test_unaligned_output(void **state)
{
    const efps_simd_t v = variant_or_skip(state);
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

static void test_invalid_args(void **state)
{
    const efps_simd_t v = variant_or_skip(state);
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
static void test_zero_length(void **state)
{
    const efps_simd_t v = variant_or_skip(state);
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
    for (size_t k = 0; k < COUNT(variant_ids); k++) {
        const efps_simd_t v = variant_ids[k];
        if (v > efps_cpu_best_simd())
            assert_int_equal(efps_compress_set_simd(v), EFPS_ERR_UNSUPPORTED);
        else
            assert_true(variant_usable(v)); /* fails if refused */
    }
    /* A refused switch leaves the active variant alone. */
    use(EFPS_SIMD_SCALAR);
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

#define PER_VARIANT(fn)                                                                            \
    {#fn "[scalar]", fn, NULL, NULL, &variant_ids[0]},                                             \
        {#fn "[avx2]", fn, NULL, NULL, &variant_ids[1]},                                           \
    {                                                                                              \
#fn "[avx512]", fn, NULL, NULL, &variant_ids[2]                                            \
    }

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child") == 0)
        return strcmp(argv[2], "kernels") == 0 ? child_kernels() : 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packed_sizes), cmocka_unit_test(test_set_simd),
        cmocka_unit_test(test_env_simd),     cmocka_unit_test(test_env_simd_unsupported),
        PER_VARIANT(test_invalid_args),      PER_VARIANT(test_zero_length),
        PER_VARIANT(test_unaligned_output),  PER_VARIANT(test_format_by_hand),
        PER_VARIANT(test_majority_ties),     PER_VARIANT(test_neg_zero),
        PER_VARIANT(test_denormals),         PER_VARIANT(test_nonfinite),
        PER_VARIANT(test_unaligned_inputs),  PER_VARIANT(test_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
