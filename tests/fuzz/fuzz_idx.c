/* The IDX reader (apps/efps-train/nn/idx.c) and the dataset checks on top of
 * it (data.c), on any bytes, plain or gzipped.
 * Input: one mode byte, then the file. Mode bit 0 clear: nn_idx_read on the
 * file. Set: the rest is an image file and a label file, split where the
 * next two bytes (little-endian) say, loaded with nn_dataset_load against
 * Fashion-MNIST's 28x28, 10-class spec. */
#include "fuzz.h"
#include "nn/data.h"
#include "nn/idx.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static volatile uint8_t sink; /* reads that the compiler cannot drop */

static void read_one(const uint8_t *data, size_t size)
{
    nn_idx_t idx;
    if (nn_idx_read(fuzz_file(0, data, size), &idx) != EFPS_OK)
        return;
    /* a success promises size bytes of data: touch them all */
    for (size_t i = 0; i < idx.size; i++)
        sink ^= idx.data[i];
    nn_idx_free(&idx);
}

static void load_pair(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    size_t split = (size_t)data[0] | (size_t)data[1] << 8;
    data += 2;
    size -= 2;
    if (split > size)
        split = size;
    const nn_data_spec_t spec = {.rows = 28, .cols = 28, .classes = 10};
    const char *images = fuzz_file(0, data, split);
    const char *labels = fuzz_file(1, data + split, size - split);
    nn_dataset_t ds;
    if (nn_dataset_load(images, labels, &spec, &ds) != EFPS_OK)
        return;
    /* every example must be readable as a batch of one */
    float x[28 * 28];
    int32_t label;
    for (uint32_t i = 0; i < ds.count; i++) {
        nn_dataset_batch(&ds, &i, 1, 0.5f, 0.25f, x, &label);
        if (label < 0 || label >= spec.classes)
            abort();
    }
    nn_dataset_free(&ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        load_pair(data + 1, size - 1);
    else
        read_one(data + 1, size - 1);
    return 0;
}
