/* Checkpoints: every piece of optimizer state round-trips; a run stopped and
 * resumed ends bit-identical to one that never stopped; a truncated,
 * extended, corrupted, foreign or newer file is a clear error and never a
 * half-loaded object. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "efps/optim.h"
#include "problems.h"

static char dir[64];

static int make_dir(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/efps_test_ckpt_XXXXXX");
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int remove_dir(void **state)
{
    (void)state;
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
    return 0;
}

static const char *path_of(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
    return buf[k];
}

static uint8_t *read_all(const char *path, size_t *len_p)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    const long len = ftell(f);
    rewind(f);
    uint8_t *buf = malloc((size_t)len + 1);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *len_p = (size_t)len;
    return buf;
}

static void write_all(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float uniform(uint64_t *s)
{
    return (float)((double)(next_u64(s) >> 40) / 16777216.0) - 0.5f;
}

/* ---- worker and server objects ------------------------------------------------ */

typedef struct {
    efps_optim_config_t cfg;
    size_t n;
    int M;
    efps_worker_opt_t *w[4];
    efps_server_opt_t *s;
    void *push[4], *update;
    float *x[4], *g;
} group_t;

static void group_init(group_t *gr, const efps_optim_config_t *cfg, size_t n, int M)
{
    memset(gr, 0, sizeof(*gr));
    gr->cfg = *cfg;
    gr->n = n;
    gr->M = M;
    const size_t enc = efps_encoded_size(cfg, n);
    for (int i = 0; i < M; i++) {
        assert_int_equal(efps_worker_opt_create(cfg, n, &gr->w[i]), EFPS_OK);
        assert_non_null(gr->w[i]);
        gr->push[i] = efps_aligned_alloc(enc);
        gr->x[i] = calloc(n, sizeof(float));
    }
    assert_int_equal(efps_server_opt_create(cfg, n, M, &gr->s), EFPS_OK);
    assert_non_null(gr->s);
    gr->update = efps_aligned_alloc(enc);
    gr->g = malloc(n * sizeof(float));
}

static void group_free(group_t *gr)
{
    for (int i = 0; i < gr->M; i++) {
        efps_worker_opt_destroy(gr->w[i]);
        efps_aligned_free(gr->push[i]);
        free(gr->x[i]);
    }
    efps_server_opt_destroy(gr->s);
    efps_aligned_free(gr->update);
    free(gr->g);
}

static void group_step(group_t *gr, uint64_t seed, int t)
{
    const float lr = t < 4 ? 0.02f * (float)(t + 1) : t < 9 ? 0.1f : 0.03f;
    for (int i = 0; i < gr->M; i++) {
        uint64_t s = seed * 1000 + (uint64_t)t * 10 + (uint64_t)i;
        for (size_t j = 0; j < gr->n; j++)
            gr->g[j] = uniform(&s) + 0.05f * gr->x[i][j];
        assert_int_equal(efps_worker_opt_encode(gr->w[i], gr->g, lr, gr->push[i]), EFPS_OK);
    }
    assert_int_equal(efps_server_opt_reduce(gr->s, (const void *const *)gr->push, lr, gr->update),
                     EFPS_OK);
    for (int i = 0; i < gr->M; i++)
        assert_int_equal(efps_worker_opt_apply(gr->w[i], gr->update, lr, gr->x[i]), EFPS_OK);
}

/* Save every object of b, load them back in place of b's: b must then go on
 * exactly as a, which never stopped. */
static void swap_in_loaded(group_t *b)
{
    char name[64];
    for (int i = 0; i < b->M; i++) {
        snprintf(name, sizeof(name), "worker%d", i);
        assert_int_equal(efps_worker_opt_save(b->w[i], path_of(name)), EFPS_OK);
        efps_worker_opt_t *w = NULL;
        assert_int_equal(efps_worker_opt_load(path_of(name), &w), EFPS_OK);
        assert_int_equal(efps_worker_opt_steps(w), efps_worker_opt_steps(b->w[i]));
        /* A loaded object saves to the very same bytes. */
        assert_int_equal(efps_worker_opt_save(w, path_of("again")), EFPS_OK);
        size_t l1, l2;
        uint8_t *f1 = read_all(path_of(name), &l1), *f2 = read_all(path_of("again"), &l2);
        assert_int_equal(l1, l2);
        assert_memory_equal(f1, f2, l1);
        free(f1);
        free(f2);
        efps_worker_opt_destroy(b->w[i]);
        b->w[i] = w;
    }
    assert_int_equal(efps_server_opt_save(b->s, path_of("server")), EFPS_OK);
    efps_server_opt_t *s = NULL;
    assert_int_equal(efps_server_opt_load(path_of("server"), &s), EFPS_OK);
    assert_int_equal(efps_server_opt_steps(s), efps_server_opt_steps(b->s));
    efps_server_opt_destroy(b->s);
    b->s = s;
}

static void test_objects_round_trip(void **state)
{
    (void)state;
    for (int comp = 0; comp < 3; comp++) {
        for (int variant = 0; variant < 3; variant++) {
            const efps_optim_config_t cfg = {.compressor = (efps_compressor_t)comp,
                                             .block = variant == 2 ? 0 : 33,
                                             .momentum = variant == 1 ? 0.0f : 0.9f,
                                             .nesterov = variant == 0,
                                             .weight_decay = variant == 2 ? 1e-3f : 0.0f};
            group_t a, b;
            group_init(&a, &cfg, 257, 3);
            group_init(&b, &cfg, 257, 3);
            for (int t = 0; t < 12; t++) {
                if (t == 6)
                    swap_in_loaded(&b);
                group_step(&a, 5, t);
                group_step(&b, 5, t);
            }
            for (int i = 0; i < a.M; i++)
                assert_memory_equal(a.x[i], b.x[i], a.n * sizeof(float));
            assert_memory_equal(a.update, b.update, efps_encoded_size(&cfg, a.n));
            group_free(&a);
            group_free(&b);
        }
    }
}

/* Sets (efps_ps_save's files): every object of a group in one file, loaded
 * back in place; a set of another count, configuration or kind is refused
 * with the caller's objects untouched. */
static void test_sets(void **state)
{
    (void)state;
    const efps_optim_config_t cfg = {
        .compressor = EFPS_COMP_BLOCKSIGN, .block = 16, .momentum = 0.9f, .nesterov = 1};
    group_t a, b;
    group_init(&a, &cfg, 100, 3);
    group_init(&b, &cfg, 100, 3);
    for (int t = 0; t < 8; t++) {
        if (t == 4) {
            assert_int_equal(efps_worker_opts_save(b.w, 3, path_of("wset")), EFPS_OK);
            assert_int_equal(efps_server_opts_save(&b.s, 1, path_of("sset")), EFPS_OK);
            efps_worker_opt_t *before = b.w[0];
            assert_int_equal(efps_worker_opts_load(path_of("wset"), b.w, 3), EFPS_OK);
            assert_ptr_not_equal(b.w[0], before); /* replaced, the old one destroyed */
            assert_int_equal(efps_server_opts_load(path_of("sset"), &b.s, 1), EFPS_OK);
        }
        group_step(&a, 9, t);
        group_step(&b, 9, t);
    }
    for (int i = 0; i < 3; i++)
        assert_memory_equal(a.x[i], b.x[i], a.n * sizeof(float));

    efps_worker_opt_t *keep[3] = {b.w[0], b.w[1], b.w[2]};
    assert_int_equal(efps_worker_opts_load(path_of("wset"), b.w, 2), EFPS_ERR_MISMATCH);
    assert_int_equal(efps_server_opts_load(path_of("wset"), &b.s, 1), EFPS_ERR_MISMATCH);
    const efps_optim_config_t other = {
        .compressor = EFPS_COMP_BLOCKSIGN, .block = 32, .momentum = 0.9f, .nesterov = 1};
    group_t c;
    group_init(&c, &other, 100, 3);
    efps_worker_opt_t *ckeep = c.w[2];
    assert_int_equal(efps_worker_opts_load(path_of("wset"), c.w, 3), EFPS_ERR_MISMATCH);
    assert_ptr_equal(c.w[2], ckeep);
    assert_memory_equal(keep, b.w, sizeof(keep));
    efps_worker_opt_encode(b.w[1], a.g, 0.1f, b.push[1]); /* pending: cannot be saved */
    assert_int_equal(efps_worker_opts_save(b.w, 3, path_of("wset2")), EFPS_ERR_STATE);
    group_free(&a);
    group_free(&b);
    group_free(&c);
}

/* ---- a whole simulation, stopped and resumed ---------------------------------------- */

static void test_sim_resume_bit_identical(void **state)
{
    (void)state;
    sim_problem_t *p = NULL;
    assert_int_equal(sim_problem_mlp_create(8, 12, 3, 256, 8, 11, &p), EFPS_OK);
    const size_t n = sim_problem_dim(p);
    float *x0 = malloc(n * sizeof(float));
    sim_problem_init(p, x0);
    const efps_lr_schedule_t sched = {
        .kind = EFPS_LR_COSINE, .base_lr = 0.2f, .warmup_steps = 5, .total_steps = 40};
    for (int comp = 0; comp < 3; comp++) {
        const efps_optim_config_t cfg = {.compressor = (efps_compressor_t)comp,
                                         .block = 16,
                                         .momentum = 0.9f,
                                         .nesterov = 1,
                                         .weight_decay = 1e-4f};
        efps_sim_t *whole = NULL;
        assert_int_equal(efps_sim_create(&cfg, n, 4, x0, sim_problem_grad, p, 77, &whole), EFPS_OK);
        efps_sim_t *part = NULL;
        assert_int_equal(efps_sim_create(&cfg, n, 4, x0, sim_problem_grad, p, 77, &part), EFPS_OK);
        assert_non_null(whole);
        assert_non_null(part);
        for (uint64_t t = 0; t < 40; t++)
            assert_int_equal(efps_sim_step(whole, efps_lr_at(&sched, t)), EFPS_OK);
        for (uint64_t t = 0; t < 17; t++)
            assert_int_equal(efps_sim_step(part, efps_lr_at(&sched, t)), EFPS_OK);
        assert_int_equal(efps_sim_save(part, path_of("sim")), EFPS_OK);
        efps_sim_destroy(part); /* the process "stops" */
        part = NULL;
        assert_int_equal(efps_sim_load(path_of("sim"), sim_problem_grad, p, &part), EFPS_OK);
        assert_int_equal(efps_sim_steps(part), 17);
        assert_int_equal(efps_sim_workers(part), 4);
        assert_int_equal(efps_sim_size(part), n);
        assert_int_equal(efps_sim_config(part)->compressor, comp);
        while (efps_sim_steps(part) < 40)
            assert_int_equal(efps_sim_step(part, efps_lr_at(&sched, efps_sim_steps(part))),
                             EFPS_OK);
        for (int k = 0; k < 4; k++)
            assert_memory_equal(efps_sim_x(part, k), efps_sim_x(whole, k), n * sizeof(float));
        assert_true(efps_sim_workers_agree(part));
        efps_sim_destroy(whole);
        efps_sim_destroy(part);
    }
    free(x0);
    sim_problem_destroy(p);
}

/* ---- damaged files ---------------------------------------------------------------------- */

/* A small blocksign worker checkpoint with every array present. */
static void small_worker_file(const char *path)
{
    const efps_optim_config_t cfg = {
        .compressor = EFPS_COMP_BLOCKSIGN, .block = 8, .momentum = 0.9f, .weight_decay = 1e-3f};
    group_t gr;
    group_init(&gr, &cfg, 40, 1);
    group_step(&gr, 1, 0);
    group_step(&gr, 1, 1);
    assert_int_equal(efps_worker_opt_save(gr.w[0], path), EFPS_OK);
    group_free(&gr);
}

static efps_worker_opt_t *const sentinel = (efps_worker_opt_t *)&sentinel;

static efps_status_t try_load(const uint8_t *buf, size_t len)
{
    write_all(path_of("damaged"), buf, len);
    efps_worker_opt_t *w = sentinel;
    efps_status_t st = efps_worker_opt_load(path_of("damaged"), &w);
    if (st != EFPS_OK)
        assert_ptr_equal(w, sentinel); /* nothing half-loaded handed out */
    else
        efps_worker_opt_destroy(w);
    return st;
}

static void test_truncated(void **state)
{
    (void)state;
    small_worker_file(path_of("good"));
    size_t len;
    uint8_t *buf = read_all(path_of("good"), &len);
    assert_int_equal(try_load(buf, len), EFPS_OK);
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(try_load(buf, cut), EFPS_ERR_CORRUPT);
    buf[len] = 0; /* one byte too many */
    assert_int_equal(try_load(buf, len + 1), EFPS_ERR_CORRUPT);
    free(buf);
}

static void test_corrupted(void **state)
{
    (void)state;
    small_worker_file(path_of("good"));
    size_t len;
    uint8_t *buf = read_all(path_of("good"), &len);
    uint64_t seed = 4;
    for (size_t at = 0; at < len; at++) {
        const uint8_t flip = (uint8_t)(1u << (next_u64(&seed) % 8));
        buf[at] ^= flip;
        assert_int_equal(try_load(buf, len), EFPS_ERR_CORRUPT);
        buf[at] ^= flip;
    }
    assert_int_equal(try_load(buf, len), EFPS_OK);
    free(buf);
}

/* Rewrites the CRC so a change gets past the checksum to the later checks. */
static void fix_crc(uint8_t *buf, size_t len)
{
    const uint32_t crc = (uint32_t)crc32(0L, buf, (uInt)(len - 4));
    for (int k = 0; k < 4; k++)
        buf[len - 4 + k] = (uint8_t)(crc >> (8 * k));
}

static void test_format(void **state)
{
    (void)state;
    small_worker_file(path_of("good"));
    size_t len;
    uint8_t *buf = read_all(path_of("good"), &len);
    /* The stable layout: magic, version 1, kind 1 (worker), payload size, little-endian. */
    assert_memory_equal(buf, "EFPSCKPT", 8);
    assert_int_equal(buf[8] | buf[9] << 8 | buf[10] << 16 | buf[11] << 24, EFPS_CKPT_VERSION);
    assert_int_equal(buf[12], 1);
    uint64_t payload = 0;
    for (int k = 7; k >= 0; k--)
        payload = payload << 8 | buf[16 + k];
    assert_int_equal(payload, len - 28);
    /* config (24 bytes) + n + steps + prev_lr + m, e, wd_m of 40 floats */
    assert_int_equal(payload, 24 + 8 + 8 + 4 + 3 * 40 * 4);
    uint8_t *copy = malloc(len);

    memcpy(copy, buf, len);
    copy[8] = 2; /* a newer version, checksum right */
    fix_crc(copy, len);
    assert_int_equal(try_load(copy, len), EFPS_ERR_UNSUPPORTED);

    memcpy(copy, buf, len);
    copy[24] = 7; /* compressor 7 */
    fix_crc(copy, len);
    assert_int_equal(try_load(copy, len), EFPS_ERR_CORRUPT);

    memcpy(copy, buf, len);
    copy[24 + 24 + 7] = 0x10; /* n enormous: refused before any allocation */
    fix_crc(copy, len);
    assert_int_equal(try_load(copy, len), EFPS_ERR_CORRUPT);

    memcpy(copy, buf, len);
    copy[24 + 24] = 39; /* n one less: a float left over */
    fix_crc(copy, len);
    assert_int_equal(try_load(copy, len), EFPS_ERR_CORRUPT);

    memcpy(copy, buf, len);
    const float nan = NAN;
    memcpy(copy + 24 + 40, &nan, 4); /* prev_lr NaN */
    fix_crc(copy, len);
    assert_int_equal(try_load(copy, len), EFPS_ERR_CORRUPT);

    memcpy(copy, buf, len);
    copy[12] = 2; /* says server: the wrong kind */
    fix_crc(copy, len);
    assert_int_equal(try_load(copy, len), EFPS_ERR_MISMATCH);
    free(copy);
    free(buf);
}

static void test_wrong_kind_and_io(void **state)
{
    (void)state;
    small_worker_file(path_of("worker"));
    efps_server_opt_t *s = NULL;
    assert_int_equal(efps_server_opt_load(path_of("worker"), &s), EFPS_ERR_MISMATCH);
    assert_null(s);
    efps_sim_t *sim = NULL;
    assert_int_equal(efps_sim_load(path_of("worker"), sim_problem_grad, NULL, &sim),
                     EFPS_ERR_MISMATCH);
    assert_null(sim);
    efps_worker_opt_t *w = NULL;
    assert_int_equal(efps_worker_opt_load(path_of("does-not-exist"), &w), EFPS_ERR_IO);
    assert_int_equal(efps_worker_opt_load(dir, &w), EFPS_ERR_IO); /* a directory */
    assert_null(w);
    assert_int_equal(efps_worker_opt_load(path_of("worker"), NULL), EFPS_ERR_INVALID);

    const efps_optim_config_t cfg = {.compressor = EFPS_COMP_NONE};
    efps_worker_opt_t *fresh = NULL;
    assert_int_equal(efps_worker_opt_create(&cfg, 10, &fresh), EFPS_OK);
    assert_int_equal(efps_worker_opt_save(fresh, "/nonexistent-dir/efps/ckpt"), EFPS_ERR_IO);
    assert_int_equal(efps_worker_opt_save(fresh, ""), EFPS_ERR_INVALID);
    efps_worker_opt_destroy(fresh);
}

/* Saving over a checkpoint replaces it whole and leaves no temporary behind. */
static void test_atomic_replace(void **state)
{
    (void)state;
    small_worker_file(path_of("replace"));
    const efps_optim_config_t cfg = {.compressor = EFPS_COMP_SIGN, .momentum = 0.5f};
    efps_worker_opt_t *w = NULL;
    assert_int_equal(efps_worker_opt_create(&cfg, 1000, &w), EFPS_OK);
    assert_int_equal(efps_worker_opt_save(w, path_of("replace")), EFPS_OK);
    efps_worker_opt_destroy(w);
    w = NULL;
    assert_int_equal(efps_worker_opt_load(path_of("replace"), &w), EFPS_OK);
    assert_int_equal(efps_worker_opt_size(w), 1000);
    efps_worker_opt_destroy(w);
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        assert_null(strstr(e->d_name, ".tmp."));
    closedir(d);
}

static efps_status_t failing_grad(int worker, uint64_t step, uint64_t seed, const float *x,
                                  float *grad, void *user)
{
    (void)seed, (void)x, (void)user;
    grad[0] = 1.0f;
    return worker == 1 && step == 2 ? EFPS_ERR_IO : EFPS_OK;
}

/* A simulation broken by a failed step cannot be saved. */
static void test_broken_sim_not_saved(void **state)
{
    (void)state;
    const efps_optim_config_t cfg = {.compressor = EFPS_COMP_BLOCKSIGN, .momentum = 0.9f};
    const float x0[4] = {0};
    efps_sim_t *sim = NULL;
    assert_int_equal(efps_sim_create(&cfg, 4, 2, x0, failing_grad, NULL, 1, &sim), EFPS_OK);
    assert_int_equal(efps_sim_step(sim, 0.1f), EFPS_OK);
    assert_int_equal(efps_sim_step(sim, 0.1f), EFPS_OK);
    assert_int_equal(efps_sim_save(sim, path_of("before")), EFPS_OK);
    assert_int_equal(efps_sim_step(sim, 0.1f), EFPS_ERR_IO);
    assert_int_equal(efps_sim_save(sim, path_of("broken")), EFPS_ERR_STATE);
    assert_int_equal(access(path_of("broken"), F_OK), -1);
    efps_sim_destroy(sim);
    /* The checkpoint from before the failure is still good. */
    sim = NULL;
    assert_int_equal(efps_sim_load(path_of("before"), failing_grad, NULL, &sim), EFPS_OK);
    assert_int_equal(efps_sim_steps(sim), 2);
    efps_sim_destroy(sim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objects_round_trip),
        cmocka_unit_test(test_sets),
        cmocka_unit_test(test_sim_resume_bit_identical),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupted),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_wrong_kind_and_io),
        cmocka_unit_test(test_atomic_replace),
        cmocka_unit_test(test_broken_sim_not_saved),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
