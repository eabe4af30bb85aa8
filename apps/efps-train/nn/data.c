/* Dataset loading, normalization, and per-rank sharding with seeded shuffles. */
#include "data.h"

#include "idx.h"
#include "rng.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stream 0 is the shared permutation; each (rank, epoch) gets its own. */
#define STREAM_PERMUTATION 0
static uint64_t epoch_stream(int rank, uint64_t epoch)
{
    return ((uint64_t)(rank + 1) << 40) ^ (epoch + 1);
}

static efps_status_t check_shapes(const char *images_path, const nn_idx_t *img,
                                  const char *labels_path, const nn_idx_t *lab)
{
    if (img->ndims != 3) {
        efps_error("%s: an image file has 3 dimensions (count, rows, cols), this one has %d",
                   images_path, img->ndims);
        return EFPS_ERR_CORRUPT;
    }
    if (lab->ndims != 1) {
        efps_error("%s: a label file has 1 dimension (count), this one has %d", labels_path,
                   lab->ndims);
        return EFPS_ERR_CORRUPT;
    }
    if (img->dims[1] > 65536 || img->dims[2] > 65536) {
        efps_error("%s: images of %u x %u pixels are too large", images_path, img->dims[1],
                   img->dims[2]);
        return EFPS_ERR_CORRUPT;
    }
    if (img->dims[0] != lab->dims[0]) {
        efps_error("%s holds %u images but %s holds %u labels", images_path, img->dims[0],
                   labels_path, lab->dims[0]);
        return EFPS_ERR_CORRUPT;
    }
    return EFPS_OK;
}

/* A model reads rows x cols pixels per image and indexes its outputs by
 * label: anything else reads past the data or past the logits. */
static efps_status_t check_spec(const char *images_path, const nn_idx_t *img,
                                const char *labels_path, const nn_idx_t *lab,
                                const nn_data_spec_t *spec)
{
    if (img->dims[1] != (uint32_t)spec->rows || img->dims[2] != (uint32_t)spec->cols) {
        efps_error("%s: images are %u x %u pixels, the model takes %d x %d", images_path,
                   img->dims[1], img->dims[2], spec->rows, spec->cols);
        return EFPS_ERR_CORRUPT;
    }
    for (size_t i = 0; i < lab->size; i++) {
        if (lab->data[i] >= spec->classes) {
            efps_error("%s: label %zu is %u, the model has %d classes (0 to %d)", labels_path, i,
                       lab->data[i], spec->classes, spec->classes - 1);
            return EFPS_ERR_CORRUPT;
        }
    }
    return EFPS_OK;
}

efps_status_t nn_dataset_load(const char *images_path, const char *labels_path,
                              const nn_data_spec_t *spec, nn_dataset_t *ds_p)
{
    nn_idx_t img, lab;
    efps_status_t status = nn_idx_read(images_path, &img);
    if (status != EFPS_OK)
        return status;
    status = nn_idx_read(labels_path, &lab);
    if (status != EFPS_OK)
        goto err_free_images;
    status = check_shapes(images_path, &img, labels_path, &lab);
    if (status == EFPS_OK && spec != NULL)
        status = check_spec(images_path, &img, labels_path, &lab, spec);
    if (status != EFPS_OK)
        goto err_free_labels;

    nn_dataset_t ds = {
        .count = img.dims[0],
        .rows = (int)img.dims[1],
        .cols = (int)img.dims[2],
        .pixels = img.data,
        .labels = lab.data,
    };
    for (size_t i = 0; i < ds.count; i++) {
        if (ds.labels[i] >= ds.classes)
            ds.classes = ds.labels[i] + 1;
    }
    *ds_p = ds;
    return EFPS_OK;

err_free_labels:
    nn_idx_free(&lab);
err_free_images:
    nn_idx_free(&img);
    return status;
}

efps_status_t nn_dataset_load_dir(const char *dir, bool train, const nn_data_spec_t *spec,
                                  nn_dataset_t *ds_p)
{
    const char *prefix = train ? "train" : "t10k";
    char images[4096], labels[4096];
    int a = snprintf(images, sizeof(images), "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    int b = snprintf(labels, sizeof(labels), "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    if (a < 0 || (size_t)a >= sizeof(images) || b < 0 || (size_t)b >= sizeof(labels)) {
        efps_error("data directory name too long: %s", dir);
        return EFPS_ERR_INVALID;
    }
    return nn_dataset_load(images, labels, spec, ds_p);
}

void nn_dataset_free(nn_dataset_t *ds)
{
    free(ds->pixels);
    free(ds->labels);
    memset(ds, 0, sizeof(*ds));
}

void nn_dataset_batch(const nn_dataset_t *ds, const uint32_t *idx, int n, float mean, float std,
                      float *x, int32_t *labels)
{
    size_t pixels = (size_t)ds->rows * (size_t)ds->cols;
    /* x = p * a + b with a = 1 / (255 std), b = -mean / std */
    float a = 1.0f / (255.0f * std);
    float b = -mean / std;
    for (int i = 0; i < n; i++) {
        const uint8_t *src = ds->pixels + (size_t)idx[i] * pixels;
        float *dst = x + (size_t)i * pixels;
        for (size_t j = 0; j < pixels; j++)
            dst[j] = (float)src[j] * a + b;
        labels[i] = ds->labels[idx[i]];
    }
}

static int cmp_u32(const void *pa, const void *pb)
{
    uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
    return (a > b) - (a < b);
}

efps_status_t nn_sampler_init(nn_sampler_t *s, size_t total, int rank, int world, size_t batch,
                              uint64_t seed)
{
    if (world < 1 || rank < 0 || rank >= world || batch == 0 || total > UINT32_MAX) {
        efps_error("sampler: invalid rank %d of world %d, batch %zu, %zu examples", rank, world,
                   batch, total);
        return EFPS_ERR_INVALID;
    }
    size_t per_rank = total / (size_t)world;
    if (per_rank < batch) {
        efps_error("sampler: %zu examples over %d ranks leave %zu per rank, fewer than one batch "
                   "of %zu",
                   total, world, per_rank, batch);
        return EFPS_ERR_INVALID;
    }
    uint32_t *perm = malloc(total * sizeof(*perm));
    if (perm == NULL)
        return EFPS_ERR_NOMEM;
    for (size_t i = 0; i < total; i++)
        perm[i] = (uint32_t)i;
    nn_rng_t rng;
    nn_rng_seed(&rng, seed, STREAM_PERMUTATION);
    nn_rng_shuffle_u32(&rng, perm, total);

    size_t begin = total * (size_t)rank / (size_t)world;
    size_t end = total * (size_t)(rank + 1) / (size_t)world;
    nn_sampler_t tmp = {
        .count = end - begin,
        .batch = batch,
        .batches_per_epoch = per_rank / batch,
        .seed = seed,
        .rank = rank,
    };
    tmp.shard = malloc(tmp.count * sizeof(uint32_t));
    tmp.order = malloc(tmp.count * sizeof(uint32_t));
    if (tmp.shard == NULL || tmp.order == NULL) {
        free(tmp.shard);
        free(tmp.order);
        free(perm);
        efps_error("sampler: cannot allocate a shard of %zu indices", tmp.count);
        return EFPS_ERR_NOMEM;
    }
    memcpy(tmp.shard, perm + begin, tmp.count * sizeof(uint32_t));
    free(perm);
    /* Sorted, so the epoch order depends only on the shard's members. */
    qsort(tmp.shard, tmp.count, sizeof(uint32_t), cmp_u32);
    *s = tmp;
    nn_sampler_set_epoch(s, 0);
    return EFPS_OK;
}

void nn_sampler_set_epoch(nn_sampler_t *s, uint64_t epoch)
{
    nn_rng_t rng;
    nn_rng_seed(&rng, s->seed, epoch_stream(s->rank, epoch));
    memcpy(s->order, s->shard, s->count * sizeof(uint32_t));
    nn_rng_shuffle_u32(&rng, s->order, s->count);
}

const uint32_t *nn_sampler_batch(const nn_sampler_t *s, size_t b)
{
    return s->order + b * s->batch;
}

void nn_sampler_free(nn_sampler_t *s)
{
    free(s->shard);
    free(s->order);
    s->shard = s->order = NULL;
}
