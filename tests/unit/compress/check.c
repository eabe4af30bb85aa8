/* The helpers of check.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "check.h"

const ab_t abs_[3] = {{1.0f, 0.0f}, {1.0f, 0.5f}, {0.37f, 1.3f}};
const float alphas[3] = {1.0f, -0.37f, 1.0f / 3.0f};

/* ---- the variant ---------------------------------------------------------- */

void use(efps_simd_t v)
{
    assert_int_equal(efps_compress_set_simd(v), EFPS_OK);
}

efps_simd_t variant_begin(void **state)
{
    const efps_simd_t v = *(const efps_simd_t *)*state;
    use(v);
    return v;
}

/* ---- comparison helpers that say where and what differs ------------------ */

char case_ctx[200];

void expect_same_floats(const float *got, const float *want, size_t n, const char *what)
{
    if (memcmp(got, want, n * sizeof(float)) == 0)
        return;
    size_t i = 0;
    while (ref_u32(got[i]) == ref_u32(want[i]))
        i++;
    fail_msg("%s: %s[%zu] is %a (0x%08x), want %a (0x%08x)", case_ctx, what, i, (double)got[i],
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

void expect_same_bytes(const uint8_t *got, const uint8_t *want, size_t len, const ref_layout_t *L,
                       const char *what)
{
    if (memcmp(got, want, len) == 0)
        return;
    size_t j = 0;
    while (got[j] == want[j])
        j++;
    fail_msg("%s: %s byte %zu of %zu (%s) is 0x%02x, want 0x%02x", case_ctx, what, j, len,
             L ? packed_region(*L, j) : "sign stream", got[j], want[j]);
}

/* ---- buffers and fills ------------------------------------------------------ */

float *floats(size_t n)
{
    float *f = malloc(n * sizeof(float));
    assert_non_null(f);
    return f;
}

uint8_t *packed_buf(size_t size)
{
    uint8_t *b = efps_aligned_alloc(size);
    assert_non_null(b);
    return b;
}

void fill_mixed(float *v, size_t n, ref_rng_t *r, int emin, int emax)
{
    for (size_t i = 0; i < n; i++)
        v[i] = ref_rng_mixed(r, emin, emax);
}

/* A valid packed tensor with random content: scales of mixed magnitude (some
 * exactly zero), random signs, zero padding and zero unused sign bits. */
void fill_random_packed(uint8_t *pk, ref_layout_t L, ref_rng_t *r)
{
    memset(pk, 0, L.size);
    for (size_t k = 0; k < L.nb; k++)
        ref_put_scale(pk, k, fabsf(ref_rng_mixed(r, -8, 8)));
    for (size_t i = 0; i < L.n; i++)
        ref_put_bit(pk + L.signs_off, i, (int)(ref_rng_next(r) & 1));
}

void fill_random_signs(uint8_t *s, size_t n, ref_rng_t *r)
{
    memset(s, 0, ref_align64((n + 7) / 8));
    for (size_t i = 0; i < n; i++)
        ref_put_bit(s, i, (int)(ref_rng_next(r) & 1));
}

/* out must be alpha * (+/-scale) (added to acc when acc != NULL), computed in
 * double and rounded once: that is exactly fl(alpha*d) and fl(acc + fl(alpha*d))
 * (double has more than 2*24+2 bits, so double rounding is harmless). */
void check_decode_double(ref_layout_t L, const uint8_t *packed, float alpha, const float *acc,
                         const float *out)
{
    for (size_t i = 0; i < L.n; i++) {
        const float term = (float)((double)alpha * (double)ref_decode(packed, L, i));
        const float want = acc ? (float)((double)acc[i] + (double)term) : term;
        if (ref_u32(out[i]) != ref_u32(want))
            fail_msg("%s: alpha %a: element %zu is %a, want %a", case_ctx, (double)alpha, i,
                     (double)out[i], (double)want);
    }
}

/* The out-of-place call of a step (the server's when in != NULL) from a copy
 * of err into a poisoned err_out: same status, packed bytes and new error as
 * the in-place call gave (pk, err_new); err_in as it was, whatever the status. */
void to_expect(const float *x, float a, uint8_t *const *in, int m, const float *err, float b,
               size_t n, size_t block, efps_status_t st, const uint8_t *pk, const float *err_new)
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
