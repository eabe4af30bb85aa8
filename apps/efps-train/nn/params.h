/* A model's tensors as a list: what the trainer declares as parameter-server
 * keys, and what an optimizer updates.
 *
 * Tensors are added one by one while layers are built (each gets an index,
 * in the order the forward pass first uses them), then nn_params_finalize
 * allocates them: all data in one 64-byte aligned arena, all gradients in a
 * second one, each tensor starting on a 64-byte boundary. */
#ifndef NN_PARAMS_H
#define NN_PARAMS_H

#include "efps/core.h"

#include <stdbool.h>

typedef struct {
    const char *name; /* "layer1.0.conv1.weight"; owned by the list */
    size_t n;         /* elements */
    float *data;
    float *grad; /* NULL in a list made without gradients */
} nn_param_t;

typedef struct {
    nn_param_t *list;
    size_t count, cap;
    bool with_grad;
    float *data_arena, *grad_arena;
    size_t arena_floats; /* of each arena, padding included */
} nn_params_t;

/* An empty list; with_grad = false for state without gradients (running
 * statistics). */
void nn_params_init(nn_params_t *ps, bool with_grad);
/* Declares a tensor of n > 0 elements; its pointers are NULL until
 * finalize. The name is copied. */
efps_status_t nn_params_add(nn_params_t *ps, const char *name, size_t n, size_t *index_p);
/* Allocates every tensor, data and gradients zeroed. */
efps_status_t nn_params_finalize(nn_params_t *ps);
/* Total elements over all tensors (no padding). */
size_t nn_params_total(const nn_params_t *ps);
void nn_params_release(nn_params_t *ps);

#endif
