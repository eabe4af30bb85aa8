/* Learning-rate schedules: constant, step decay at epochs, cosine, and the
 * linear warm-up in front of each; malformed schedules are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>

#include "efps/optim.h"

static void expect_lr(const efps_lr_schedule_t *s, uint64_t t, double want)
{
    const float got = efps_lr_at(s, t);
    if (got != (float)want)
        print_error("step %llu: lr %.9g, expected %.9g\n", (unsigned long long)t, (double)got,
                    want);
    assert_true(got == (float)want);
}

static void test_constant_and_warmup(void **state)
{
    (void)state;
    efps_lr_schedule_t s = {.kind = EFPS_LR_CONSTANT, .base_lr = 0.4f};
    assert_int_equal(efps_lr_schedule_check(&s), EFPS_OK);
    for (uint64_t t = 0; t < 1000; t += 99)
        expect_lr(&s, t, 0.4f);
    s.warmup_steps = 8;
    for (uint64_t t = 0; t < 8; t++)
        expect_lr(&s, t, (double)0.4f * ((double)(t + 1) / 8.0));
    expect_lr(&s, 7, 0.4f); /* the last warm-up step reaches base_lr */
    expect_lr(&s, 8, 0.4f);
    expect_lr(&s, 1u << 30, 0.4f);
}

static void test_step_decay(void **state)
{
    (void)state;
    efps_lr_schedule_t s = {.kind = EFPS_LR_STEP,
                            .base_lr = 0.1f,
                            .steps_per_epoch = 10,
                            .milestones = {3, 6},
                            .num_milestones = 2,
                            .gamma = 0.1f};
    assert_int_equal(efps_lr_schedule_check(&s), EFPS_OK);
    const double g = 0.1f, b = 0.1f;
    expect_lr(&s, 0, b);
    expect_lr(&s, 29, b);
    expect_lr(&s, 30, b * g);
    expect_lr(&s, 59, b * g);
    expect_lr(&s, 60, b * g * g);
    expect_lr(&s, 100000, b * g * g);
    /* Warm-up in front: the milestones stay in absolute epochs. */
    s.warmup_steps = 5;
    expect_lr(&s, 0, b * (1.0 / 5.0));
    expect_lr(&s, 4, b);
    expect_lr(&s, 30, b * g);
    /* No milestones: constant. */
    s.num_milestones = 0;
    expect_lr(&s, 1000, b);
}

static void test_cosine(void **state)
{
    (void)state;
    efps_lr_schedule_t s = {.kind = EFPS_LR_COSINE,
                            .base_lr = 1.0f,
                            .total_steps = 110,
                            .warmup_steps = 10,
                            .min_lr = 0.0f};
    assert_int_equal(efps_lr_schedule_check(&s), EFPS_OK);
    expect_lr(&s, 0, 0.1);
    expect_lr(&s, 9, 1.0);
    expect_lr(&s, 10, 1.0);
    expect_lr(&s, 60, 0.5 * (1.0 + cos(M_PI * 0.5)));
    float prev = efps_lr_at(&s, 10);
    for (uint64_t t = 11; t < 110; t++) {
        const float lr = efps_lr_at(&s, t);
        assert_true(lr <= prev);
        assert_true(lr > 0.0f); /* every step of the run has a usable lr */
        prev = lr;
    }
    expect_lr(&s, 110, 0.0);
    s.min_lr = 0.01f;
    expect_lr(&s, 10, 1.0);
    expect_lr(&s, 60, (double)0.01f + (1.0 - (double)0.01f) * 0.5);
    expect_lr(&s, 500, 0.01f);
}

static void test_malformed(void **state)
{
    (void)state;
    const efps_lr_schedule_t good_step = {.kind = EFPS_LR_STEP,
                                          .base_lr = 0.1f,
                                          .steps_per_epoch = 10,
                                          .milestones = {3, 6},
                                          .num_milestones = 2,
                                          .gamma = 0.1f};
    const efps_lr_schedule_t good_cos = {
        .kind = EFPS_LR_COSINE, .base_lr = 0.1f, .total_steps = 100};
    efps_lr_schedule_t bad[12];
    int k = 0;
    bad[k] = good_step, bad[k++].base_lr = 0.0f;
    bad[k] = good_step, bad[k++].base_lr = NAN;
    bad[k] = good_step, bad[k++].base_lr = INFINITY;
    bad[k] = good_step, bad[k++].steps_per_epoch = 0;
    bad[k] = good_step, bad[k++].milestones[1] = 3;
    bad[k] = good_step, bad[k++].gamma = 0.0f;
    bad[k] = good_step, bad[k++].gamma = 1.5f;
    bad[k] = good_step, bad[k++].num_milestones = EFPS_LR_MAX_MILESTONES + 1;
    bad[k] = good_cos, bad[k++].total_steps = 0;
    bad[k] = good_cos, bad[k].warmup_steps = 100, k++;
    bad[k] = good_cos, bad[k++].min_lr = 0.2f;
    bad[k] = good_cos, bad[k++].kind = (efps_lr_kind_t)7;
    for (int i = 0; i < k; i++) {
        assert_int_equal(efps_lr_schedule_check(&bad[i]), EFPS_ERR_INVALID);
        assert_true(efps_lr_at(&bad[i], 5) == 0.0f);
    }
    assert_int_equal(efps_lr_schedule_check(&good_step), EFPS_OK);
    assert_int_equal(efps_lr_schedule_check(&good_cos), EFPS_OK);
    assert_int_equal(efps_lr_schedule_check(NULL), EFPS_ERR_INVALID);
    assert_true(efps_lr_at(NULL, 0) == 0.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constant_and_warmup),
        cmocka_unit_test(test_step_decay),
        cmocka_unit_test(test_cosine),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
