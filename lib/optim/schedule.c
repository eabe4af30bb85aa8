/* Learning-rate schedules. The optimizer is told each step's lr, so any
 * schedule works with it; these are the ones training runs use. Computed in
 * double and rounded once, so eta_t is the same wherever it is computed. */
#include "optim_internal.h"

#include <math.h>

/* Why s is malformed, or NULL when it is fine. */
static const char *problem(const efps_lr_schedule_t *s)
{
    if (s == NULL)
        return "no schedule";
    if (!(s->base_lr > 0.0f && isfinite(s->base_lr)))
        return "base_lr must be a finite value > 0";
    switch (s->kind) {
    case EFPS_LR_CONSTANT:
        return NULL;
    case EFPS_LR_STEP:
        if (s->steps_per_epoch == 0)
            return "step decay needs steps_per_epoch > 0";
        if (s->num_milestones > EFPS_LR_MAX_MILESTONES)
            return "too many milestones";
        for (size_t k = 1; k < s->num_milestones; k++)
            if (s->milestones[k] <= s->milestones[k - 1])
                return "milestones must be strictly increasing";
        if (!(s->gamma > 0.0f && s->gamma <= 1.0f))
            return "gamma must be in (0, 1]";
        return NULL;
    case EFPS_LR_COSINE:
        if (s->total_steps <= s->warmup_steps)
            return "cosine needs total_steps > warmup_steps";
        if (!(s->min_lr >= 0.0f && s->min_lr <= s->base_lr))
            return "cosine needs 0 <= min_lr <= base_lr";
        return NULL;
    }
    return "unknown schedule kind";
}

efps_status_t efps_lr_schedule_check(const efps_lr_schedule_t *s)
{
    const char *why = problem(s);
    if (why != NULL) {
        efps_error("learning-rate schedule: %s", why);
        return EFPS_ERR_INVALID;
    }
    return EFPS_OK;
}

static double step_decay(const efps_lr_schedule_t *s, uint64_t t)
{
    const uint64_t epoch = t / s->steps_per_epoch;
    double lr = s->base_lr;
    for (size_t k = 0; k < s->num_milestones && s->milestones[k] <= epoch; k++)
        lr *= s->gamma;
    return lr;
}

static double cosine(const efps_lr_schedule_t *s, uint64_t t)
{
    if (t < s->warmup_steps)
        return s->base_lr;
    if (t >= s->total_steps)
        return s->min_lr;
    const double progress =
        (double)(t - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
    return s->min_lr + ((double)s->base_lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * progress));
}

float efps_lr_at(const efps_lr_schedule_t *s, uint64_t t)
{
    if (problem(s) != NULL)
        return 0.0f;
    double lr = s->base_lr;
    if (s->kind == EFPS_LR_STEP)
        lr = step_decay(s, t);
    else if (s->kind == EFPS_LR_COSINE)
        lr = cosine(s, t);
    if (t < s->warmup_steps)
        lr *= (double)(t + 1) / (double)s->warmup_steps;
    return (float)lr;
}
