/* The EF-SGDM layer against a plain transcription of docs/design.md steps 1-8,
 * for every compressor, with and without Nesterov, weight decay, constant and
 * changing step sizes; bit-identity across the kernel variants; the
 * parameter-unit form of error feedback; non-finite inputs; misuse. */
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
#include <unistd.h>

#include "efps/compress.h"
#include "efps/optim.h"
#include "test_optim_ref.h"

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float normal(uint64_t *s)
{
    const double u = ((double)(next_u64(s) >> 11) + 1.0) / 9007199254740992.0;
    const double v = ((double)(next_u64(s) >> 11) + 1.0) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v));
}

/* A gradient that depends on x, as a real one does. */
static void make_grad(uint64_t *s, const float *x, size_t n, float *g)
{
    for (size_t j = 0; j < n; j++)
        g[j] = 0.5f * normal(s) + 0.1f * x[j];
}

/* Warm-up, plateau, decay by 10, then an increase (r_t > 1). */
static float lr_at(int changing, int t)
{
    if (!changing)
        return 0.05f;
    if (t < 5)
        return 0.1f * (float)(t + 1) / 5.0f;
    if (t < 15)
        return 0.1f;
    if (t < 20)
        return 0.01f;
    return 0.03f;
}

typedef struct {
    efps_optim_config_t cfg;
    int M;
    size_t n;
    int changing_lr;
} case_t;

static void case_name(const case_t *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s block=%zu mu=%g nesterov=%d wd=%g M=%d n=%zu lr=%s",
             efps_compressor_name(c->cfg.compressor), c->cfg.block, (double)c->cfg.momentum,
             c->cfg.nesterov, (double)c->cfg.weight_decay, c->M, c->n,
             c->changing_lr ? "changing" : "constant");
}

#define MAX_CASES 64

/* Every compressor x Nesterov x weight decay x lr kind, plus mu = 0
 * (dist-EF-SGD), a single worker, and several block sizes and tensor sizes. */
static int make_cases(case_t *cases)
{
    static const size_t blocks[] = {0, 7, 64, 256};
    int k = 0;
    for (int comp = 0; comp < 3; comp++)
        for (int nest = 0; nest < 2; nest++)
            for (int wd = 0; wd < 2; wd++)
                for (int ch = 0; ch < 2; ch++, k++)
                    cases[k] = (case_t){
                        .cfg = {.compressor = (efps_compressor_t)comp,
                                .block = blocks[k % 4],
                                .momentum = 0.9f,
                                .nesterov = nest,
                                .weight_decay = wd ? 5e-3f : 0.0f},
                        .M = 3 + k % 2, /* odd and even: the sign vote has ties */
                        .n = k % 3 ? 1000 : 1003,
                        .changing_lr = ch,
                    };
    for (int comp = 0; comp < 3; comp++, k++)
        cases[k] = (case_t){.cfg = {.compressor = (efps_compressor_t)comp, .momentum = 0.0f},
                            .M = 4,
                            .n = 515,
                            .changing_lr = 1};
    cases[k++] = (case_t){.cfg = {.compressor = EFPS_COMP_BLOCKSIGN,
                                  .block = 100,
                                  .momentum = 0.5f,
                                  .nesterov = 1,
                                  .weight_decay = 1e-2f},
                          .M = 1,
                          .n = 777,
                          .changing_lr = 1};
    cases[k++] =
        (case_t){.cfg = {.compressor = EFPS_COMP_BLOCKSIGN, .block = 5000, .momentum = 0.9f},
                 .M = 8,
                 .n = 4100,
                 .changing_lr = 0};
    return k;
}

/* Relative closeness with a small floor, and exact bits. */
static void expect_match(const float *got, const float *want, size_t n, const char *what,
                         const char *name, int t)
{
    size_t far = 0, diff_bits = 0;
    for (size_t j = 0; j < n; j++) {
        const float scale = fmaxf(fabsf(want[j]), 1e-3f);
        if (!(fabsf(got[j] - want[j]) <= 1e-5f * scale))
            far++;
        if (memcmp(&got[j], &want[j], 4) != 0)
            diff_bits++;
    }
    if (far || diff_bits)
        print_error("%s, step %d, %s: %zu elements beyond 1e-5 relative, %zu not bit-identical\n",
                    name, t, what, far, diff_bits);
    assert_int_equal(far, 0);
    assert_int_equal(diff_bits, 0);
}

#define STEPS 30

/* Runs one case through the library and the transcription side by side,
 * checking every push, every update and every x at every step. Returns
 * worker 0's final x (caller frees). */
static float *run_case(const case_t *c)
{
    char name[256];
    case_name(c, name, sizeof(name));
    const size_t n = c->n, enc = efps_encoded_size(&c->cfg, n);
    const int M = c->M;
    assert_true(enc > 0);
    efps_worker_opt_t *w[8];
    void *push[8];
    float *x[8], *g[8];
    float *dec = malloc(n * sizeof(float)), *x0 = malloc(n * sizeof(float));
    uint64_t seed = 12345 + n;
    for (size_t j = 0; j < n; j++)
        x0[j] = normal(&seed);
    for (int i = 0; i < M; i++) {
        assert_int_equal(efps_worker_opt_create(&c->cfg, n, &w[i]), EFPS_OK);
        assert_non_null(w[i]);
        push[i] = efps_aligned_alloc(enc);
        x[i] = malloc(n * sizeof(float));
        g[i] = malloc(n * sizeof(float));
        memcpy(x[i], x0, n * sizeof(float));
    }
    efps_server_opt_t *s = NULL;
    assert_int_equal(efps_server_opt_create(&c->cfg, n, M, &s), EFPS_OK);
    assert_non_null(s);
    void *update = efps_aligned_alloc(enc);
    ref_t *ref = ref_create(&c->cfg, n, M, x0);

    for (int t = 0; t < STEPS; t++) {
        const float lr = lr_at(c->changing_lr, t);
        for (int i = 0; i < M; i++) {
            make_grad(&seed, x[i], n, g[i]);
            assert_int_equal(efps_worker_opt_encode(w[i], g[i], lr, push[i]), EFPS_OK);
        }
        ref_step(ref, g, lr);
        for (int i = 0; i < M; i++) {
            ref_decode_msg(&c->cfg, push[i], n, dec);
            expect_match(dec, ref->D[i], n, "push", name, t);
        }
        assert_int_equal(efps_server_opt_reduce(s, (const void *const *)push, lr, update), EFPS_OK);
        ref_decode_msg(&c->cfg, update, n, dec);
        expect_match(dec, ref->Dt, n, "update", name, t);
        for (int i = 0; i < M; i++) {
            assert_int_equal(efps_worker_opt_apply(w[i], update, lr, x[i]), EFPS_OK);
            expect_match(x[i], ref->x[i], n, "x", name, t);
            assert_memory_equal(x[i], x[0], n * sizeof(float));
        }
    }
    assert_int_equal(efps_server_opt_steps(s), STEPS);
    assert_int_equal(efps_worker_opt_steps(w[0]), STEPS);

    float *result = malloc(n * sizeof(float));
    memcpy(result, x[0], n * sizeof(float));
    ref_destroy(ref);
    efps_aligned_free(update);
    efps_server_opt_destroy(s);
    for (int i = 0; i < M; i++) {
        efps_worker_opt_destroy(w[i]);
        efps_aligned_free(push[i]);
        free(x[i]);
        free(g[i]);
    }
    free(dec);
    free(x0);
    return result;
}

static void test_matches_transcription(void **state)
{
    (void)state;
    case_t cases[MAX_CASES];
    const int count = make_cases(cases);
    for (int k = 0; k < count; k++)
        free(run_case(&cases[k]));
}

/* The kernels give the same bits in every variant, so the whole optimizer
 * must too. A variant the CPU has but the library refuses is a failure. */
static void test_variants_bit_identical(void **state)
{
    (void)state;
    case_t cases[MAX_CASES];
    const int count = make_cases(cases);
    const efps_simd_t saved = efps_compress_simd();
    float *base[MAX_CASES];
    assert_int_equal(efps_compress_set_simd(EFPS_SIMD_SCALAR), EFPS_OK);
    for (int k = 0; k < count; k++)
        base[k] = run_case(&cases[k]);
    int compared = 0;
    for (int v = EFPS_SIMD_AVX2; v <= EFPS_SIMD_AVX512; v++) {
        if (v > (int)efps_cpu_best_simd()) {
            print_message("variant %s: not on this CPU, skipped\n", efps_simd_name(v));
            continue;
        }
        if (efps_compress_set_simd((efps_simd_t)v) != EFPS_OK)
            fail_msg("variant %s: the CPU has it but the library refuses it", efps_simd_name(v));
        for (int k = 0; k < count; k++) {
            float *x = run_case(&cases[k]);
            assert_memory_equal(x, base[k], cases[k].n * sizeof(float));
            free(x);
        }
        compared++;
    }
    print_message("optimizer bit-identical to scalar in %d other variant(s)\n", compared);
    for (int k = 0; k < count; k++)
        free(base[k]);
    assert_int_equal(efps_compress_set_simd(saved), EFPS_OK);
}

/* ---- error feedback in parameter units ----------------------------------------
 * The paper keeps errors in parameter units: p = eta_t u + e, D = C(p), e = p - D,
 * x -= D~. Because C_B is positively homogeneous this is the gradient-unit form
 * of docs/design.md with e = eta_{t-1} e_g. Computing it independently, in double,
 * checks that r_t = eta_{t-1}/eta_t is the right re-scaling for a schedule that
 * warms up, decays and rises again. */
static void cb_double(const double *p, size_t n, size_t block, double *D)
{
    const size_t B = block ? block : n;
    for (size_t lo = 0; lo < n; lo += B) {
        const size_t hi = lo + B < n ? lo + B : n;
        double s = 0.0;
        for (size_t i = lo; i < hi; i++)
            s += fabs(p[i]);
        s /= (double)(hi - lo);
        for (size_t i = lo; i < hi; i++)
            D[i] = p[i] < 0.0 ? -s : s;
    }
}

static void test_parameter_unit_equivalence(void **state)
{
    (void)state;
    enum { M = 4, N = 600, T = 40 };
    const efps_optim_config_t cfg = {
        .compressor = EFPS_COMP_BLOCKSIGN, .block = 50, .momentum = 0.9f, .nesterov = 1};
    const size_t enc = efps_encoded_size(&cfg, N);
    static double m[M][N], e[M][N], D[M][N], p[N], se[N], Dt[N], xr[N];
    static float g[N], x[M][N];
    efps_worker_opt_t *w[M];
    void *push[M];
    for (int i = 0; i < M; i++) {
        assert_int_equal(efps_worker_opt_create(&cfg, N, &w[i]), EFPS_OK);
        push[i] = efps_aligned_alloc(enc);
    }
    efps_server_opt_t *s = NULL;
    assert_int_equal(efps_server_opt_create(&cfg, N, M, &s), EFPS_OK);
    void *update = efps_aligned_alloc(enc);
    uint64_t seed = 99;
    for (int t = 0; t < T; t++) {
        const float lr = t < 10   ? 0.2f * (float)(t + 1) / 10.0f
                         : t < 25 ? 0.2f
                         : t < 32 ? 0.02f
                                  : 0.08f;
        for (int i = 0; i < M; i++) {
            for (size_t j = 0; j < N; j++)
                g[j] = normal(&seed);
            assert_int_equal(efps_worker_opt_encode(w[i], g, lr, push[i]), EFPS_OK);
            for (size_t j = 0; j < N; j++) {
                m[i][j] = 0.9 * m[i][j] + g[j];
                p[j] = lr * (g[j] + 0.9 * m[i][j]) + e[i][j];
            }
            cb_double(p, N, cfg.block, D[i]);
            for (size_t j = 0; j < N; j++)
                e[i][j] = p[j] - D[i][j];
        }
        for (size_t j = 0; j < N; j++) {
            double sum = 0.0;
            for (int i = 0; i < M; i++)
                sum += D[i][j];
            p[j] = sum / M + se[j];
        }
        cb_double(p, N, cfg.block, Dt);
        for (size_t j = 0; j < N; j++) {
            se[j] = p[j] - Dt[j];
            xr[j] -= Dt[j];
        }
        assert_int_equal(efps_server_opt_reduce(s, (const void *const *)push, lr, update), EFPS_OK);
        for (int i = 0; i < M; i++)
            assert_int_equal(efps_worker_opt_apply(w[i], update, lr, x[i]), EFPS_OK);
    }
    double num = 0.0, den = 0.0;
    for (size_t j = 0; j < N; j++) {
        num += (x[0][j] - xr[j]) * (x[0][j] - xr[j]);
        den += xr[j] * xr[j];
    }
    print_message("parameter-unit EF vs library: relative L2 difference %.3g\n", sqrt(num / den));
    assert_true(sqrt(num / den) < 1e-4);
    for (int i = 0; i < M; i++) {
        efps_worker_opt_destroy(w[i]);
        efps_aligned_free(push[i]);
    }
    efps_server_opt_destroy(s);
    efps_aligned_free(update);
}

/* ---- non-finite values ------------------------------------------------------------ */

/* Byte image of a worker's whole state, through its checkpoint. */
static uint8_t *worker_image(const efps_worker_opt_t *w, size_t *len_p)
{
    char path[] = "/tmp/efps_test_optim_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(efps_worker_opt_save(w, path), EFPS_OK);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    const long len = ftell(f);
    rewind(f);
    uint8_t *buf = malloc((size_t)len);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    unlink(path);
    *len_p = (size_t)len;
    return buf;
}

static void expect_same_state(const efps_worker_opt_t *a, const efps_worker_opt_t *b)
{
    size_t la, lb;
    uint8_t *ia = worker_image(a, &la), *ib = worker_image(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ia, ib, la);
    free(ia);
    free(ib);
}

/* One full step of a single worker against its own one-worker server. */
static void one_step(efps_worker_opt_t *w, efps_server_opt_t *s, const float *g, float lr,
                     void *push, void *update, float *x)
{
    assert_int_equal(efps_worker_opt_encode(w, g, lr, push), EFPS_OK);
    assert_int_equal(efps_server_opt_reduce(s, (const void *const *)&push, lr, update), EFPS_OK);
    assert_int_equal(efps_worker_opt_apply(w, update, lr, x), EFPS_OK);
}

static void test_nonfinite_gradient_keeps_state(void **state)
{
    (void)state;
    enum { N = 300 };
    const float bad_values[] = {NAN, INFINITY, -INFINITY};
    const size_t bad_at[] = {0, N / 2, N - 1};
    for (int comp = 0; comp < 3; comp++) {
        for (int nest = 0; nest < 2; nest++) {
            const efps_optim_config_t cfg = {.compressor = (efps_compressor_t)comp,
                                             .block = 64,
                                             .momentum = 0.9f,
                                             .nesterov = nest,
                                             .weight_decay = 1e-3f};
            const size_t enc = efps_encoded_size(&cfg, N);
            efps_worker_opt_t *a = NULL;
            assert_int_equal(efps_worker_opt_create(&cfg, N, &a), EFPS_OK);
            efps_worker_opt_t *b = NULL;
            assert_int_equal(efps_worker_opt_create(&cfg, N, &b), EFPS_OK);
            efps_server_opt_t *sa = NULL;
            assert_int_equal(efps_server_opt_create(&cfg, N, 1, &sa), EFPS_OK);
            efps_server_opt_t *sb = NULL;
            assert_int_equal(efps_server_opt_create(&cfg, N, 1, &sb), EFPS_OK);
            void *pa = efps_aligned_alloc(enc), *pb = efps_aligned_alloc(enc);
            void *ua = efps_aligned_alloc(enc), *ub = efps_aligned_alloc(enc);
            float g[N], xa[N] = {0}, xb[N] = {0};
            uint64_t seed = 7;
            for (int t = 0; t < 3; t++) { /* non-zero momentum and errors first */
                for (size_t j = 0; j < N; j++)
                    g[j] = normal(&seed);
                one_step(a, sa, g, 0.1f, pa, ua, xa);
                one_step(b, sb, g, 0.1f, pb, ub, xb);
            }
            for (int v = 0; v < 3; v++) {
                for (int at = 0; at < 3; at++) {
                    for (size_t j = 0; j < N; j++)
                        g[j] = normal(&seed);
                    g[bad_at[at]] = bad_values[v];
                    assert_int_equal(efps_worker_opt_encode(a, g, 0.05f, pa), EFPS_ERR_NONFINITE);
                    expect_same_state(a, b);
                }
            }
            /* The failed encodes left no trace: the next step is the same. */
            for (size_t j = 0; j < N; j++)
                g[j] = normal(&seed);
            one_step(a, sa, g, 0.05f, pa, ua, xa);
            one_step(b, sb, g, 0.05f, pb, ub, xb);
            assert_memory_equal(pa, pb, enc);
            assert_memory_equal(xa, xb, sizeof(xa));
            expect_same_state(a, b);
            efps_worker_opt_destroy(a);
            efps_worker_opt_destroy(b);
            efps_server_opt_destroy(sa);
            efps_server_opt_destroy(sb);
            efps_aligned_free(pa);
            efps_aligned_free(pb);
            efps_aligned_free(ua);
            efps_aligned_free(ub);
        }
    }
}

/* A finite gradient whose momentum overflows is non-finite too. */
static void test_momentum_overflow_is_nonfinite(void **state)
{
    (void)state;
    enum { N = 40 };
    const efps_optim_config_t cfg = {.compressor = EFPS_COMP_NONE, .momentum = 0.9f};
    const size_t enc = efps_encoded_size(&cfg, N);
    efps_worker_opt_t *w = NULL;
    assert_int_equal(efps_worker_opt_create(&cfg, N, &w), EFPS_OK);
    efps_worker_opt_t *twin = NULL;
    assert_int_equal(efps_worker_opt_create(&cfg, N, &twin), EFPS_OK);
    efps_server_opt_t *s = NULL;
    assert_int_equal(efps_server_opt_create(&cfg, N, 1, &s), EFPS_OK);
    efps_server_opt_t *s2 = NULL;
    assert_int_equal(efps_server_opt_create(&cfg, N, 1, &s2), EFPS_OK);
    void *push = efps_aligned_alloc(enc), *update = efps_aligned_alloc(enc);
    float g[N] = {0}, x[N] = {0}, x2[N] = {0};
    g[5] = FLT_MAX; /* m[5] = FLT_MAX: finite */
    one_step(w, s, g, 1e-3f, push, update, x);
    one_step(twin, s2, g, 1e-3f, push, update, x2);
    /* 0.9 * FLT_MAX + FLT_MAX overflows. */
    assert_int_equal(efps_worker_opt_encode(w, g, 1e-3f, push), EFPS_ERR_NONFINITE);
    expect_same_state(w, twin);
    efps_worker_opt_destroy(w);
    efps_worker_opt_destroy(twin);
    efps_server_opt_destroy(s);
    efps_server_opt_destroy(s2);
    efps_aligned_free(push);
    efps_aligned_free(update);
}

/* Byte image of a server's state. */
static uint8_t *server_image(const efps_server_opt_t *s, size_t *len_p)
{
    char path[] = "/tmp/efps_test_optim_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(efps_server_opt_save(s, path), EFPS_OK);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    const long len = ftell(f);
    rewind(f);
    uint8_t *buf = malloc((size_t)len);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    unlink(path);
    *len_p = (size_t)len;
    return buf;
}

/* Pushes whose mean overflows: the server refuses them and keeps its state. */
static void test_server_nonfinite_keeps_state(void **state)
{
    (void)state;
    enum { N = 100, M = 2 };
    for (int comp = 0; comp < 3; comp += 2) { /* none and blocksign can overflow */
        const efps_optim_config_t cfg = {
            .compressor = (efps_compressor_t)comp, .block = 10, .momentum = 0.9f};
        const size_t enc = efps_encoded_size(&cfg, N);
        efps_server_opt_t *s = NULL;
        assert_int_equal(efps_server_opt_create(&cfg, N, M, &s), EFPS_OK);
        efps_worker_opt_t *w[M];
        void *push[M], *update = efps_aligned_alloc(enc);
        float g[N], x[N] = {0};
        uint64_t seed = 3;
        for (int i = 0; i < M; i++) {
            assert_int_equal(efps_worker_opt_create(&cfg, N, &w[i]), EFPS_OK);
            push[i] = efps_aligned_alloc(enc);
        }
        for (int t = 0; t < 2; t++) {
            for (int i = 0; i < M; i++) {
                for (size_t j = 0; j < N; j++)
                    g[j] = normal(&seed);
                assert_int_equal(efps_worker_opt_encode(w[i], g, 0.1f, push[i]), EFPS_OK);
            }
            assert_int_equal(efps_server_opt_reduce(s, (const void *const *)push, 0.1f, update),
                             EFPS_OK);
            for (int i = 0; i < M; i++)
                assert_int_equal(efps_worker_opt_apply(w[i], update, 0.1f, x), EFPS_OK);
        }
        size_t l0, l1;
        uint8_t *before = server_image(s, &l0);
        /* Every worker pushes FLT_MAX in element 3 (none) or block 0's scale. */
        for (int i = 0; i < M; i++) {
            float big = FLT_MAX;
            memcpy((float *)push[i] + (comp == EFPS_COMP_NONE ? 3 : 0), &big, 4);
        }
        assert_int_equal(efps_server_opt_reduce(s, (const void *const *)push, 0.1f, update),
                         EFPS_ERR_NONFINITE);
        uint8_t *after = server_image(s, &l1);
        assert_int_equal(l0, l1);
        assert_memory_equal(before, after, l0);
        assert_int_equal(efps_server_opt_steps(s), 2);
        free(before);
        free(after);
        for (int i = 0; i < M; i++) {
            efps_worker_opt_destroy(w[i]);
            efps_aligned_free(push[i]);
        }
        efps_aligned_free(update);
        efps_server_opt_destroy(s);
    }
}

/* An update that decodes to NaN or Inf never reaches x. */
static void test_apply_rejects_nonfinite_update(void **state)
{
    (void)state;
    enum { N = 64 };
    for (int comp = 0; comp < 3; comp += 2) {
        for (int wd = 0; wd < 2; wd++) {
            const efps_optim_config_t cfg = {.compressor = (efps_compressor_t)comp,
                                             .momentum = 0.9f,
                                             .weight_decay = wd ? 0.1f : 0.0f};
            const size_t enc = efps_encoded_size(&cfg, N);
            efps_worker_opt_t *w = NULL;
            assert_int_equal(efps_worker_opt_create(&cfg, N, &w), EFPS_OK);
            efps_server_opt_t *s = NULL;
            assert_int_equal(efps_server_opt_create(&cfg, N, 1, &s), EFPS_OK);
            void *push = efps_aligned_alloc(enc), *update = efps_aligned_alloc(enc);
            float g[N], x[N], x_before[N];
            for (size_t j = 0; j < N; j++) {
                g[j] = (float)j - 20.0f;
                x[j] = 1.0f;
            }
            assert_int_equal(efps_worker_opt_encode(w, g, 0.1f, push), EFPS_OK);
            assert_int_equal(efps_server_opt_reduce(s, (const void *const *)&push, 0.1f, update),
                             EFPS_OK);
            uint8_t *good = malloc(enc);
            memcpy(good, update, enc);
            const float bad = NAN;
            memcpy((float *)update + 7 * (comp == EFPS_COMP_NONE), &bad, 4);
            memcpy(x_before, x, sizeof(x));
            assert_int_equal(efps_worker_opt_apply(w, update, 0.1f, x), EFPS_ERR_NONFINITE);
            assert_memory_equal(x, x_before, sizeof(x));
            /* Still waiting for its apply: the good update goes through. */
            assert_int_equal(efps_worker_opt_apply(w, good, 0.1f, x), EFPS_OK);
            assert_int_equal(efps_worker_opt_steps(w), 1);
            free(good);
            efps_aligned_free(push);
            efps_aligned_free(update);
            efps_worker_opt_destroy(w);
            efps_server_opt_destroy(s);
        }
    }
}

/* ---- misuse, sizes, names ------------------------------------------------------------ */

static void test_call_order_and_arguments(void **state)
{
    (void)state;
    enum { N = 50 };
    const efps_optim_config_t cfg = {.compressor = EFPS_COMP_BLOCKSIGN, .momentum = 0.9f};
    const size_t enc = efps_encoded_size(&cfg, N);
    efps_worker_opt_t *w = NULL;
    assert_int_equal(efps_worker_opt_create(&cfg, N, &w), EFPS_OK);
    efps_server_opt_t *s = NULL;
    assert_int_equal(efps_server_opt_create(&cfg, N, 1, &s), EFPS_OK);
    void *push = efps_aligned_alloc(enc + 64), *update = efps_aligned_alloc(enc);
    float g[N], x[N] = {0};
    for (size_t j = 0; j < N; j++)
        g[j] = (float)j;
    const float bad_lr[] = {0.0f, -0.1f, NAN, INFINITY};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(efps_worker_opt_encode(w, g, bad_lr[k], push), EFPS_ERR_INVALID);
        assert_int_equal(efps_server_opt_reduce(s, (const void *const *)&push, bad_lr[k], update),
                         EFPS_ERR_INVALID);
    }
    assert_int_equal(efps_worker_opt_encode(w, g, 0.1f, (uint8_t *)push + 4), EFPS_ERR_INVALID);
    assert_int_equal(efps_worker_opt_encode(w, NULL, 0.1f, push), EFPS_ERR_INVALID);
    assert_int_equal(efps_worker_opt_encode(NULL, g, 0.1f, push), EFPS_ERR_INVALID);
    assert_int_equal(efps_worker_opt_apply(w, update, 0.1f, x), EFPS_ERR_STATE);
    assert_int_equal(efps_worker_opt_encode(w, g, 0.1f, push), EFPS_OK);
    assert_int_equal(efps_worker_opt_encode(w, g, 0.1f, push), EFPS_ERR_STATE);
    char path[] = "/tmp/efps_test_optim_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    assert_int_equal(efps_worker_opt_save(w, path), EFPS_ERR_STATE);
    unlink(path);
    assert_int_equal(
        efps_server_opt_reduce(s, (const void *const *)&push, 0.1f, (uint8_t *)update + 4),
        EFPS_ERR_INVALID);
    const void *none[1] = {NULL};
    assert_int_equal(efps_server_opt_reduce(s, none, 0.1f, update), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_opt_reduce(s, (const void *const *)&push, 0.1f, update), EFPS_OK);
    assert_int_equal(efps_worker_opt_apply(w, update, 0.2f, x), EFPS_ERR_INVALID);
    assert_int_equal(efps_worker_opt_apply(w, NULL, 0.1f, x), EFPS_ERR_INVALID);
    assert_int_equal(efps_worker_opt_apply(w, update, 0.1f, x), EFPS_OK);
    assert_int_equal(efps_worker_opt_apply(w, update, 0.1f, x), EFPS_ERR_STATE);
    assert_int_equal(efps_worker_opt_steps(w), 1);
    assert_int_equal(efps_worker_opt_size(w), N);
    efps_worker_opt_destroy(w);
    efps_server_opt_destroy(s);
    efps_aligned_free(push);
    efps_aligned_free(update);
    efps_worker_opt_destroy(NULL);
    efps_server_opt_destroy(NULL);
}

static void test_config_checks(void **state)
{
    (void)state;
    const efps_optim_config_t good = {.compressor = EFPS_COMP_SIGN, .momentum = 0.9f};
    assert_int_equal(efps_optim_config_check(&good), EFPS_OK);
    assert_int_equal(efps_optim_config_check(NULL), EFPS_ERR_INVALID);
    efps_optim_config_t bad[7];
    for (int k = 0; k < 7; k++)
        bad[k] = good;
    bad[0].compressor = (efps_compressor_t)3;
    bad[1].compressor = (efps_compressor_t)-1;
    bad[2].momentum = 1.0f;
    bad[3].momentum = NAN;
    bad[4].nesterov = 2;
    bad[5].weight_decay = -1e-4f;
    bad[6].weight_decay = INFINITY;
    /* A failed create reports why and leaves the out-pointer alone. */
    efps_worker_opt_t *w = NULL;
    efps_server_opt_t *s = NULL;
    for (int k = 0; k < 7; k++) {
        assert_int_equal(efps_optim_config_check(&bad[k]), EFPS_ERR_INVALID);
        assert_int_equal(efps_worker_opt_create(&bad[k], 10, &w), EFPS_ERR_INVALID);
        assert_int_equal(efps_server_opt_create(&bad[k], 10, 2, &s), EFPS_ERR_INVALID);
    }
    assert_int_equal(efps_worker_opt_create(&good, 0, &w), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_opt_create(&good, 0, 2, &s), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_opt_create(&good, 10, 0, &s), EFPS_ERR_INVALID);
    assert_int_equal(efps_server_opt_create(&good, 10, EFPS_OPTIM_MAX_WORKERS + 1, &s),
                     EFPS_ERR_INVALID);
    assert_int_equal(efps_worker_opt_create(&good, 10, NULL), EFPS_ERR_INVALID);
    assert_null(w);
    assert_null(s);
}

static void test_encoded_sizes(void **state)
{
    (void)state;
    efps_optim_config_t cfg = {.compressor = EFPS_COMP_NONE};
    assert_int_equal(efps_encoded_size(&cfg, 1), 64);
    assert_int_equal(efps_encoded_size(&cfg, 16), 64);
    assert_int_equal(efps_encoded_size(&cfg, 17), 128);
    assert_int_equal(efps_encoded_size(&cfg, 0), 0);
    assert_int_equal(efps_encoded_size(NULL, 10), 0);
    cfg.compressor = EFPS_COMP_SIGN;
    assert_int_equal(efps_encoded_size(&cfg, 512), 64);
    assert_int_equal(efps_encoded_size(&cfg, 513), 128);
    assert_int_equal(efps_encoded_size(&cfg, 513), efps_sign_packed_size(513));
    cfg.compressor = EFPS_COMP_BLOCKSIGN;
    for (size_t block = 0; block < 300; block += 37) {
        cfg.block = block;
        assert_int_equal(efps_encoded_size(&cfg, 1000), efps_packed_size(1000, block));
    }
    cfg.block = 0;
    assert_int_equal(efps_encoded_size(&cfg, 1000), 64 + 128);
}

static void test_compressor_names(void **state)
{
    (void)state;
    for (int c = 0; c < 3; c++) {
        efps_compressor_t got;
        assert_int_equal(efps_compressor_parse(efps_compressor_name((efps_compressor_t)c), &got),
                         EFPS_OK);
        assert_int_equal(got, c);
    }
    efps_compressor_t got = EFPS_COMP_NONE;
    assert_int_equal(efps_compressor_parse("BlockSign", &got), EFPS_ERR_INVALID);
    assert_int_equal(efps_compressor_parse("", &got), EFPS_ERR_INVALID);
    assert_int_equal(efps_compressor_parse(NULL, &got), EFPS_ERR_INVALID);
    assert_string_equal(efps_compressor_name((efps_compressor_t)9), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_transcription),
        cmocka_unit_test(test_variants_bit_identical),
        cmocka_unit_test(test_parameter_unit_equivalence),
        cmocka_unit_test(test_nonfinite_gradient_keeps_state),
        cmocka_unit_test(test_momentum_overflow_is_nonfinite),
        cmocka_unit_test(test_server_nonfinite_keeps_state),
        cmocka_unit_test(test_apply_rejects_nonfinite_update),
        cmocka_unit_test(test_call_order_and_arguments),
        cmocka_unit_test(test_config_checks),
        cmocka_unit_test(test_encoded_sizes),
        cmocka_unit_test(test_compressor_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
