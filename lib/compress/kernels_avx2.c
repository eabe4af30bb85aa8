/* WORK IN PROGRESS: the avx2 variant is being written; until it lands its table is empty. */
#include "kernels.h"
const efps_kernels_t efps_kernels_avx2 = {.name = "avx2"};
