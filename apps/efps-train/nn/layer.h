/* Layers of the networks: NCHW float batches, forward and backward.
 *
 * A layer maps a batch x[n][in] to y[n][out] (in, out: per-example shapes).
 * Its backward takes the x and y of the last forward, dL/dy, and writes
 * dL/dx (skipped when dx is NULL: nobody needs the input's gradient of the
 * first layer) and its parameters' gradients. Gradients are overwritten, not
 * accumulated. Parameters live in an nn_params_t list shared by the model;
 * a layer holds only their indices.
 *
 * Hooks let a trainer overlap communication with computation:
 * - before_forward(i) runs right before parameter i is first read by a
 *   forward pass (indices increase along the forward pass), so the trainer
 *   can wait for the pull of that key;
 * - on_grad(i, grad, n) runs the moment parameter i's gradient is final
 *   (indices strictly decrease along the backward pass), so the trainer can
 *   push it while the rest of backward runs.
 * A hook that returns an error stops the pass, which returns that status. */
#ifndef NN_LAYER_H
#define NN_LAYER_H

#include "params.h"
#include "rng.h"

#include <stdbool.h>

typedef struct {
    int c, h, w;
} nn_shape_t;

static inline size_t nn_shape_size(nn_shape_t s)
{
    return (size_t)s.c * (size_t)s.h * (size_t)s.w;
}

typedef struct {
    efps_status_t (*before_forward)(size_t param_index, void *user);
    efps_status_t (*on_grad)(size_t param_index, const float *grad, size_t n, void *user);
    void *user;
} nn_hooks_t;

/* One pass: mode, hooks, scratch memory. */
typedef struct {
    bool train;              /* batch normalization: batch statistics, update running ones */
    const nn_hooks_t *hooks; /* NULL: no hooks */
    float *work;             /* at least the layer's work_floats, 64-byte aligned */
} nn_run_t;

typedef struct nn_layer nn_layer_t;

typedef struct {
    const char *kind;
    efps_status_t (*forward)(nn_layer_t *l, const nn_run_t *run, const float *x, float *y, int n);
    efps_status_t (*backward)(nn_layer_t *l, const nn_run_t *run, const float *x, const float *y,
                              const float *dy, float *dx, int n);
    /* Initial values of parameters and state (after nn_params_finalize). */
    void (*init)(nn_layer_t *l, nn_rng_t *rng);
    void (*destroy)(nn_layer_t *l);
} nn_layer_ops_t;

struct nn_layer {
    const nn_layer_ops_t *ops;
    nn_shape_t in, out;
    size_t work_floats; /* scratch needed by forward and backward at the largest batch */
    nn_params_t *params;
    nn_params_t *state; /* non-trainable tensors (running statistics), or NULL */
};

static inline efps_status_t nn_layer_forward(nn_layer_t *l, const nn_run_t *run, const float *x,
                                             float *y, int n)
{
    return l->ops->forward(l, run, x, y, n);
}

/* Valid only after a forward pass with run->train set, with the same x, y, n. */
static inline efps_status_t nn_layer_backward(nn_layer_t *l, const nn_run_t *run, const float *x,
                                              const float *y, const float *dy, float *dx, int n)
{
    return l->ops->backward(l, run, x, y, dy, dx, n);
}

static inline void nn_layer_init(nn_layer_t *l, nn_rng_t *rng)
{
    l->ops->init(l, rng);
}

void nn_layer_destroy(nn_layer_t *l);

/* ---- layer types ----------------------------------------------------------
 * Each declares its tensors in ps (and state) under "<name>.<tensor>". */

/* k x k convolution, no bias (a batch norm always follows); weight
 * [cout][in.c][k][k]; out = (in.h + 2 pad - k) / stride + 1. im2col + SGEMM. */
efps_status_t nn_conv_create(nn_params_t *ps, const char *name, nn_shape_t in, int cout, int k,
                             int stride, int pad, nn_layer_t **l_p);

/* Batch normalization per channel: weight (gamma), bias (beta); state
 * running_mean and running_var (momentum 0.1, unbiased variance, eps 1e-5,
 * as PyTorch). Training uses the batch statistics, evaluation the running
 * ones. */
#define NN_BN_MOMENTUM 0.1f
#define NN_BN_EPS      1e-5f
efps_status_t nn_bn_create(nn_params_t *ps, nn_params_t *state, const char *name, nn_shape_t in,
                           nn_layer_t **l_p);

efps_status_t nn_relu_create(nn_shape_t in, nn_layer_t **l_p);

/* Fully connected on the flattened input: weight [out][in], bias [out];
 * output shape {out, 1, 1}. */
efps_status_t nn_linear_create(nn_params_t *ps, const char *name, nn_shape_t in, int out,
                               nn_layer_t **l_p);

/* Global average pooling: {c, h, w} -> {c, 1, 1}. */
efps_status_t nn_gap_create(nn_shape_t in, nn_layer_t **l_p);

/* Residual block (He et al. 2016, CIFAR variant): relu(bn2(conv2(relu(bn1(
 * conv1(x))))) + shortcut(x)), 3x3 convolutions, conv1 with the stride.
 * The shortcut is the identity when the shape is kept; otherwise option A
 * (subsample by the stride, zero-pad the new channels on both sides) or
 * option B (1x1 strided convolution + batch norm); cout >= in.c. max_batch
 * sizes its saved activations. */
typedef enum {
    NN_SHORTCUT_PAD = 0,  /* option A: no parameters */
    NN_SHORTCUT_CONV = 1, /* option B */
} nn_shortcut_t;
efps_status_t nn_block_create(nn_params_t *ps, nn_params_t *state, const char *name, nn_shape_t in,
                              int cout, int stride, nn_shortcut_t shortcut, int max_batch,
                              nn_layer_t **l_p);

/* ---- loss ---------------------------------------------------------------
 * Softmax cross-entropy over logits[n][classes]: returns the mean loss, the
 * number of examples whose largest logit (first on ties) is the label, and,
 * when dlogits is not NULL, dL/dlogits = (softmax - onehot) / n. Labels must
 * be in [0, classes). */
double nn_softmax_ce(const float *logits, const int32_t *labels, int n, int classes, float *dlogits,
                     int *correct_p);

/* ---- for layer implementations -------------------------------------------- */
efps_status_t nn_run_param_ready(const nn_run_t *run, size_t index);
efps_status_t nn_run_grad_ready(const nn_run_t *run, const nn_params_t *ps, size_t index);
/* He (Kaiming) normal initialization: N(0, 2 / fan_in). */
void nn_init_he_normal(nn_rng_t *rng, float *w, size_t n, size_t fan_in);

#endif
