/* IDX files (the MNIST / Fashion-MNIST format), gzipped or plain.
 *
 * Layout: magic (two zero bytes, a type byte, the number of dimensions),
 * then one big-endian uint32 per dimension, then the data in row-major
 * order. Only unsigned bytes (type 0x08) are supported: that is what the
 * image and label files hold. */
#ifndef NN_IDX_H
#define NN_IDX_H

#include "efps/core.h"

#define NN_IDX_MAX_DIMS 4

typedef struct {
    int ndims;
    uint32_t dims[NN_IDX_MAX_DIMS];
    size_t size;   /* product of dims: number of bytes in data */
    uint8_t *data; /* malloc'ed; free with nn_idx_free */
} nn_idx_t;

/* Reads a whole IDX file; a gzip file is inflated on the fly, a plain file is
 * read as it is. Errors (each logged once, naming the file):
 * EFPS_ERR_IO (cannot open or read), EFPS_ERR_CORRUPT (bad magic, zero or
 * too many dimensions, a dimension of 0, a size that overflows, truncated
 * data, bytes after the data, a damaged gzip stream), EFPS_ERR_UNSUPPORTED
 * (an element type other than unsigned byte), EFPS_ERR_NOMEM.
 * *idx_p is set only on success. */
efps_status_t nn_idx_read(const char *path, nn_idx_t *idx_p);
void nn_idx_free(nn_idx_t *idx);

#endif
