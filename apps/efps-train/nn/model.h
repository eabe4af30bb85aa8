/* The networks efps-train trains: an MLP and CIFAR-style ResNets (6n+2
 * layers: resnet20 with n = 3, resnet8 with n = 1), on NCHW float batches.
 *
 * Parameters are a list of tensors (nn_model_params), indexed in the order
 * the forward pass uses them: the trainer declares them as parameter-server
 * keys in that order. Hooks (layer.h) report each tensor before it is read
 * and the moment its gradient is final. Weight decay is not applied here:
 * the optimizer owns it.
 *
 * A model is not thread-safe; OpenBLAS is set to one thread at creation
 * (several worker processes share the cores). */
#ifndef NN_MODEL_H
#define NN_MODEL_H

#include "layer.h"

#include <stdio.h>

#define NN_MLP_MAX_HIDDEN 8

typedef enum {
    NN_MODEL_MLP = 0,
    NN_MODEL_RESNET = 1,
} nn_model_kind_t;

typedef struct {
    nn_model_kind_t kind;
    nn_shape_t input; /* per example; {1, 28, 28} for Fashion-MNIST */
    int classes;
    int max_batch; /* largest batch forward will be given */
    uint64_t seed; /* initial weights: the same seed gives the same bits */
    /* mlp: hidden layer widths */
    int mlp_depth;
    int mlp_hidden[NN_MLP_MAX_HIDDEN];
    /* resnet: n blocks per stage, channels of stage 1 (then 2x, 4x),
     * strides 1, 2, 2, shortcut when the shape changes */
    int resnet_blocks;
    int resnet_width;
    nn_shortcut_t resnet_shortcut;
} nn_model_config_t;

/* Fills cfg_p for a named model on 28x28 grayscale images, 10 classes,
 * max_batch 64, seed 1: "mlp" (784-256-128-10), "resnet20", "resnet8",
 * or any "resnet<6n+2>". EFPS_ERR_INVALID for another name, logged by no
 * one: the caller says which flag or file named it. */
efps_status_t nn_model_config_named(const char *name, nn_model_config_t *cfg_p);

typedef struct nn_model nn_model_t;

efps_status_t nn_model_create(const nn_model_config_t *cfg, nn_model_t **model_p);
void nn_model_destroy(nn_model_t *model);

/* The trainable tensors: count, and the list itself (stable for the model's
 * life; data and grad are 64-byte aligned). */
size_t nn_model_param_count(const nn_model_t *model);
const nn_param_t *nn_model_params(const nn_model_t *model);
/* Total trainable elements. */
size_t nn_model_param_floats(const nn_model_t *model);
/* Non-trainable state (batch-norm running statistics): each worker keeps its
 * own; checkpoint or average them as needed. */
size_t nn_model_state_count(const nn_model_t *model);
const nn_param_t *nn_model_state(const nn_model_t *model);
const nn_model_config_t *nn_model_config(const nn_model_t *model);

/* Forward pass over x[n][input] (n <= max_batch); *logits_p points to
 * logits[n][classes], valid until the next forward. train selects batch
 * statistics (and enables backward). hooks may be NULL. */
efps_status_t nn_model_forward(nn_model_t *model, const float *x, int n, bool train,
                               const nn_hooks_t *hooks, const float **logits_p);
/* Backward pass from dlogits[n][classes] of the last (training) forward:
 * fills every parameter's grad, calling hooks->on_grad for each as it
 * becomes final, last tensor first. EFPS_ERR_STATE without a training
 * forward before it. */
efps_status_t nn_model_backward(nn_model_t *model, const float *dlogits, const nn_hooks_t *hooks);

typedef struct {
    double loss; /* mean softmax cross-entropy of the batch */
    int correct; /* examples classified right */
} nn_step_result_t;

/* Training forward, softmax cross-entropy against labels, backward. */
efps_status_t nn_model_train_step(nn_model_t *model, const float *x, const int32_t *labels, int n,
                                  const nn_hooks_t *hooks, nn_step_result_t *result_p);
/* Evaluation-mode forward and loss (no gradients). */
efps_status_t nn_model_eval_batch(nn_model_t *model, const float *x, const int32_t *labels, int n,
                                  const nn_hooks_t *hooks, nn_step_result_t *result_p);

/* One line per layer: kind, output shape; then the parameter count. */
void nn_model_describe(const nn_model_t *model, FILE *out);

#endif
