/* The tensor list and its two arenas. */
#include "params.h"

#include <stdlib.h>
#include <string.h>

/* 16 floats = 64 bytes: each tensor starts where an AVX-512 load or an RDMA
 * region can start. */
#define TENSOR_ALIGN_FLOATS (EFPS_ALIGN / sizeof(float))

void nn_params_init(nn_params_t *ps, bool with_grad)
{
    memset(ps, 0, sizeof(*ps));
    ps->with_grad = with_grad;
}

efps_status_t nn_params_add(nn_params_t *ps, const char *name, size_t n, size_t *index_p)
{
    if (ps->data_arena != NULL || n == 0 || n > SIZE_MAX / 8) {
        efps_error("parameter %s: cannot add %zu elements%s", name, n,
                   ps->data_arena ? " after finalize" : "");
        return EFPS_ERR_INVALID;
    }
    if (ps->count == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 16;
        nn_param_t *list = realloc(ps->list, cap * sizeof(*list));
        if (list == NULL)
            return EFPS_ERR_NOMEM;
        ps->list = list;
        ps->cap = cap;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return EFPS_ERR_NOMEM;
    ps->list[ps->count] = (nn_param_t){.name = copy, .n = n};
    *index_p = ps->count++;
    return EFPS_OK;
}

efps_status_t nn_params_finalize(nn_params_t *ps)
{
    size_t total = 0;
    for (size_t i = 0; i < ps->count; i++)
        total += efps_align_up(ps->list[i].n, TENSOR_ALIGN_FLOATS);
    ps->data_arena = efps_aligned_calloc(total * sizeof(float));
    if (ps->with_grad)
        ps->grad_arena = efps_aligned_calloc(total * sizeof(float));
    if (ps->data_arena == NULL || (ps->with_grad && ps->grad_arena == NULL)) {
        efps_error("cannot allocate %zu floats for %zu tensors", total, ps->count);
        efps_aligned_free(ps->data_arena);
        efps_aligned_free(ps->grad_arena);
        ps->data_arena = ps->grad_arena = NULL;
        return EFPS_ERR_NOMEM;
    }
    ps->arena_floats = total;
    size_t off = 0;
    for (size_t i = 0; i < ps->count; i++) {
        ps->list[i].data = ps->data_arena + off;
        ps->list[i].grad = ps->with_grad ? ps->grad_arena + off : NULL;
        off += efps_align_up(ps->list[i].n, TENSOR_ALIGN_FLOATS);
    }
    return EFPS_OK;
}

size_t nn_params_total(const nn_params_t *ps)
{
    size_t total = 0;
    for (size_t i = 0; i < ps->count; i++)
        total += ps->list[i].n;
    return total;
}

void nn_params_release(nn_params_t *ps)
{
    for (size_t i = 0; i < ps->count; i++)
        free((char *)ps->list[i].name);
    free(ps->list);
    efps_aligned_free(ps->data_arena);
    efps_aligned_free(ps->grad_arena);
    memset(ps, 0, sizeof(*ps));
}
