/* Evaluation over a dataset range. */
#include "eval.h"

#include <stdlib.h>

efps_status_t nn_evaluate(nn_model_t *model, const nn_dataset_t *ds, size_t begin, size_t end,
                          nn_eval_result_t *result_p)
{
    const nn_model_config_t *cfg = nn_model_config(model);
    if (begin >= end || end > ds->count || cfg->input.c != 1 || cfg->input.h != ds->rows ||
        cfg->input.w != ds->cols || ds->classes > cfg->classes) {
        efps_error("evaluate: examples [%zu, %zu) of %zu, %dx%d images with %d classes, for a "
                   "model of %dx%dx%d inputs and %d classes",
                   begin, end, ds->count, ds->rows, ds->cols, ds->classes, cfg->input.c,
                   cfg->input.h, cfg->input.w, cfg->classes);
        return EFPS_ERR_INVALID;
    }
    size_t mb = (size_t)cfg->max_batch;
    float *x = efps_aligned_alloc(mb * nn_shape_size(cfg->input) * sizeof(float));
    int32_t *labels = malloc(mb * sizeof(*labels));
    uint32_t *idx = malloc(mb * sizeof(*idx));
    efps_status_t status = EFPS_ERR_NOMEM;
    if (x == NULL || labels == NULL || idx == NULL)
        goto out_free;

    nn_eval_result_t r = {0};
    double loss_sum = 0.0;
    for (size_t i = begin; i < end; i += mb) {
        int n = (int)(end - i < mb ? end - i : mb);
        for (int j = 0; j < n; j++)
            idx[j] = (uint32_t)(i + (size_t)j);
        nn_dataset_batch(ds, idx, n, NN_FASHION_MNIST_MEAN, NN_FASHION_MNIST_STD, x, labels);
        nn_step_result_t step;
        status = nn_model_eval_batch(model, x, labels, n, NULL, &step);
        if (status != EFPS_OK)
            goto out_free;
        loss_sum += step.loss * n;
        r.correct += (size_t)step.correct;
        r.count += (size_t)n;
    }
    r.loss = loss_sum / (double)r.count;
    *result_p = r;
    status = EFPS_OK;

out_free:
    efps_aligned_free(x);
    free(labels);
    free(idx);
    return status;
}
