/* Which parameter-server key carries each tensor, and the hooks that push and
 * pull them.
 *
 * A tensor of fewer than group_below elements does not get a key of its own:
 * every message costs a 64-byte header, and a blocksign payload a 64-byte
 * scale section and a sign section padded to 64 bytes, so a 16-element
 * batch-norm scale would cost 192 bytes instead of 2 + 4. The small tensors
 * (batch-norm scales and shifts, biases, a tiny first convolution) travel
 * instead as one key whose buffer is their concatenation in index order, as
 * PyTorch DDP buckets gradients. No block mixes two tensors: the group has
 * its own block, the greatest common divisor of its tensors' sizes (all but
 * the last, which may end in a shorter block) and of the run's block, e.g. 16
 * for a ResNet's 16/32/64-channel batch norms; every tensor keeps at least
 * one scale of its own, as it had with a key of its own. Larger tensors keep
 * one key each.
 *
 * Keys are tensor indices: tensor i's own key is i, and the group's key is
 * the index of its first member. The group is pushed when its last gradient
 * is final (backward reports indices in decreasing order) and pulled when
 * forward first needs one of its members; the pull then writes every member.
 * Nothing but the pulls writes the parameters, so the group's copy of x stays
 * equal to the members' data. */
#include "train.h"

#include <stdlib.h>
#include <string.h>

struct sync {
    efps_ps_t *ps;
    const nn_param_t *params;
    size_t nparams;
    bool *pending; /* per key (tensor index): pushed this step, not pulled yet */
    size_t *off;   /* per tensor: its offset in the group, SIZE_MAX if not in it */
    uint32_t gkey; /* the group's key; UINT32_MAX: no group */
    size_t gn, gmembers, garrived;
    size_t gblock;     /* the group's blocksign block */
    float *gx, *ggrad; /* the group's parameters and gradients, contiguous */
    float lr;
    double push_s, pull_s; /* time inside efps_ps_push / efps_ps_pull */
};

static bool in_group(const sync_t *s, size_t i)
{
    return s->off[i] != SIZE_MAX;
}

static efps_status_t pull_group(sync_t *s)
{
    efps_status_t st = efps_ps_pull(s->ps, s->gkey, s->gx);
    for (size_t i = 0; st == EFPS_OK && i < s->nparams; i++)
        if (in_group(s, i))
            memcpy(s->params[i].data, s->gx + s->off[i], s->params[i].n * sizeof(float));
    return st;
}

static efps_status_t before_forward(size_t i, void *user)
{
    sync_t *s = user;
    const size_t key = in_group(s, i) ? s->gkey : i;
    if (!s->pending[key])
        return EFPS_OK; /* first step: nothing pushed yet; or the group is pulled */
    s->pending[key] = false;
    const double t0 = efps__now_s();
    efps_status_t st =
        key == s->gkey ? pull_group(s) : efps_ps_pull(s->ps, (uint32_t)i, s->params[i].data);
    s->pull_s += efps__now_s() - t0;
    return st;
}

static efps_status_t on_grad(size_t i, const float *grad, size_t n, void *user)
{
    sync_t *s = user;
    size_t key = i;
    if (in_group(s, i)) {
        memcpy(s->ggrad + s->off[i], grad, n * sizeof(float));
        if (++s->garrived < s->gmembers)
            return EFPS_OK;
        s->garrived = 0;
        key = s->gkey;
        grad = s->ggrad;
    }
    const double t0 = efps__now_s();
    efps_status_t st = efps_ps_push(s->ps, (uint32_t)key, grad, s->lr);
    s->push_s += efps__now_s() - t0;
    s->pending[key] = st == EFPS_OK;
    return st;
}

static size_t gcd(size_t a, size_t b)
{
    while (b != 0) {
        size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Places the small tensors in the group and copies their initial values;
 * block is the run's (0: one per part). */
static efps_status_t make_group(sync_t *s, size_t group_below, size_t block)
{
    s->gkey = UINT32_MAX;
    for (size_t i = 0; i < s->nparams; i++) {
        s->off[i] = SIZE_MAX;
        if (s->params[i].n >= group_below)
            continue;
        if (s->gkey == UINT32_MAX)
            s->gkey = (uint32_t)i;
        s->off[i] = s->gn;
        s->gblock = gcd(s->gblock, s->gn); /* every member's start is a block's start */
        s->gn += s->params[i].n;
        s->gmembers++;
    }
    s->gblock = gcd(s->gblock, block);
    if (s->gmembers < 2) { /* one small tensor alone: its own key is as good */
        s->gkey = UINT32_MAX;
        for (size_t i = 0; i < s->nparams; i++)
            s->off[i] = SIZE_MAX;
        return EFPS_OK;
    }
    s->gx = efps_aligned_alloc(s->gn * sizeof(float));
    s->ggrad = efps_aligned_alloc(s->gn * sizeof(float));
    if (s->gx == NULL || s->ggrad == NULL)
        return EFPS_ERR_NOMEM;
    for (size_t i = 0; i < s->nparams; i++)
        if (in_group(s, i))
            memcpy(s->gx + s->off[i], s->params[i].data, s->params[i].n * sizeof(float));
    return EFPS_OK;
}

/* Declares the keys in index order: the group where its first member is. */
static efps_status_t declare(sync_t *s)
{
    efps_status_t st = EFPS_OK;
    for (size_t i = 0; i < s->nparams && st == EFPS_OK; i++) {
        if (i == s->gkey)
            st = efps_ps_declare_block(s->ps, s->gkey, s->gn, s->gblock);
        else if (!in_group(s, i))
            st = efps_ps_declare(s->ps, (uint32_t)i, s->params[i].n);
    }
    return st;
}

efps_status_t sync_create(efps_ps_t *ps, const nn_param_t *params, size_t nparams,
                          size_t group_below, size_t block, sync_t **s_p)
{
    sync_t *s = calloc(1, sizeof(*s));
    *s_p = s;
    if (s == NULL)
        return EFPS_ERR_NOMEM;
    *s = (sync_t){.ps = ps, .params = params, .nparams = nparams};
    s->pending = calloc(nparams, sizeof(bool));
    s->off = calloc(nparams, sizeof(size_t));
    if (s->pending == NULL || s->off == NULL)
        return EFPS_ERR_NOMEM;
    efps_status_t st = make_group(s, group_below, block);
    return st == EFPS_OK ? declare(s) : st;
}

void sync_destroy(sync_t *s)
{
    if (s == NULL)
        return;
    free(s->pending);
    free(s->off);
    efps_aligned_free(s->gx);
    efps_aligned_free(s->ggrad);
    free(s);
}

nn_hooks_t sync_hooks(sync_t *s)
{
    return (nn_hooks_t){.before_forward = before_forward, .on_grad = on_grad, .user = s};
}

void sync_set_lr(sync_t *s, float lr)
{
    s->lr = lr;
}

efps_status_t sync_all(sync_t *s)
{
    efps_status_t st = EFPS_OK;
    for (size_t i = 0; i < s->nparams && st == EFPS_OK; i++)
        st = before_forward(i, s);
    return st;
}

void sync_times(const sync_t *s, double *push_s_p, double *pull_s_p)
{
    *push_s_p = s->push_s;
    *pull_s_p = s->pull_s;
}
