/* 64-byte aligned allocation: packed blocks are written by AVX-512 stores and
 * registered for RDMA straight from these buffers. */
#include "efps/core.h"

#include <stdlib.h>
#include <string.h>

void *efps_aligned_alloc(size_t size)
{
    if (size == 0)
        size = EFPS_ALIGN;
    if (size > SIZE_MAX - EFPS_ALIGN)
        return NULL;
    return aligned_alloc(EFPS_ALIGN, efps_align_up(size, EFPS_ALIGN));
}

void *efps_aligned_calloc(size_t size)
{
    void *p = efps_aligned_alloc(size);
    if (p != NULL)
        memset(p, 0, efps_align_up(size ? size : EFPS_ALIGN, EFPS_ALIGN));
    return p;
}

void efps_aligned_free(void *ptr)
{
    free(ptr);
}
