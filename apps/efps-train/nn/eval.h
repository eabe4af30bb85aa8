/* Evaluation of a model over a range of a dataset, in evaluation mode
 * (batch norm with running statistics), batches of the model's max_batch. */
#ifndef NN_EVAL_H
#define NN_EVAL_H

#include "data.h"
#include "model.h"

typedef struct {
    size_t count; /* examples evaluated */
    size_t correct;
    double loss; /* mean cross-entropy */
} nn_eval_result_t;

/* Examples [begin, end) of ds, normalized with NN_FASHION_MNIST_MEAN/STD.
 * EFPS_ERR_INVALID when the range is empty or outside ds, or the images do
 * not match the model's input. */
efps_status_t nn_evaluate(nn_model_t *model, const nn_dataset_t *ds, size_t begin, size_t end,
                          nn_eval_result_t *result_p);

#endif
