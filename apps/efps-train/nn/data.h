/* Image classification data: an IDX image file and its label file, each
 * worker's shard of it, and batches as normalized floats.
 *
 * Sharding: one permutation of the whole set (from the seed, the same on
 * every rank) is cut into `world` contiguous slices, so the shards are
 * disjoint, cover the set, and are not class-ordered. Each epoch a rank
 * shuffles its own slice with a stream derived from (seed, rank, epoch), so
 * an epoch's order does not depend on what ran before it. */
#ifndef NN_DATA_H
#define NN_DATA_H

#include "efps/core.h"

#include <stdbool.h>

/* Debian's dataset-fashion-mnist puts the files here. */
#define NN_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
/* Pixel mean and standard deviation of the Fashion-MNIST training images
 * (on the 0..1 scale); batches are normalized with them. */
#define NN_FASHION_MNIST_MEAN 0.2860f
#define NN_FASHION_MNIST_STD  0.3530f

typedef struct {
    size_t count;    /* number of examples */
    int rows, cols;  /* image size; one channel */
    int classes;     /* largest label + 1 */
    uint8_t *pixels; /* count * rows * cols */
    uint8_t *labels; /* count */
} nn_dataset_t;

/* What a model expects of its data: rows x cols images (one channel), and
 * labels below classes. */
typedef struct {
    int rows, cols;
    int classes;
} nn_data_spec_t;

/* Loads an image file (3 dimensions: count, rows, cols) and a label file
 * (1 dimension: count), gzipped or not. Besides nn_idx_read's errors:
 * EFPS_ERR_CORRUPT when the dimensions are not those, or the counts differ
 * (the message names both files), or, given a spec, when the images are not
 * spec->rows x spec->cols (naming the file and both sizes) or a label is not
 * below spec->classes (naming the file, the index and the value). spec may
 * be NULL: any image size and label then. */
efps_status_t nn_dataset_load(const char *images_path, const char *labels_path,
                              const nn_data_spec_t *spec, nn_dataset_t *ds_p);
/* Loads <dir>/train-{images-idx3,labels-idx1}-ubyte.gz (train) or the t10k
 * files (test), the names Fashion-MNIST and MNIST use; spec as above. */
efps_status_t nn_dataset_load_dir(const char *dir, bool train, const nn_data_spec_t *spec,
                                  nn_dataset_t *ds_p);
void nn_dataset_free(nn_dataset_t *ds);

/* Examples idx[0..n) as floats x[n][rows*cols] = (pixel/255 - mean) / std
 * and labels[n]. Indices must be < ds->count. */
void nn_dataset_batch(const nn_dataset_t *ds, const uint32_t *idx, int n, float mean, float std,
                      float *x, int32_t *labels);

typedef struct {
    uint32_t *shard;          /* this rank's examples, ascending */
    uint32_t *order;          /* the current epoch's order of shard */
    size_t count;             /* shard size */
    size_t batch;             /* examples per batch */
    size_t batches_per_epoch; /* the same on every rank (see nn_sampler_init) */
    uint64_t seed;
    int rank;
} nn_sampler_t;

/* The shard of `rank` among `world` over `total` examples. Shard sizes differ
 * by at most one, so batches_per_epoch = floor(floor(total / world) / batch)
 * on every rank: ranks must run the same number of steps per epoch, or the
 * parameter server would wait for a push that never comes. The remainder of
 * each shard is left out of that epoch (a different remainder every epoch).
 * EFPS_ERR_INVALID when not even one batch fits. Starts at epoch 0. */
efps_status_t nn_sampler_init(nn_sampler_t *s, size_t total, int rank, int world, size_t batch,
                              uint64_t seed);
/* Reorders the shard for `epoch`; the same (seed, rank, epoch) always gives
 * the same order. */
void nn_sampler_set_epoch(nn_sampler_t *s, uint64_t epoch);
/* The `batch` indices of batch b (< batches_per_epoch) of the current epoch. */
const uint32_t *nn_sampler_batch(const nn_sampler_t *s, size_t b);
void nn_sampler_free(nn_sampler_t *s);

#endif
