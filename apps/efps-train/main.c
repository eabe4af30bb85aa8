/* efps-train: data-parallel training of an MLP or a ResNet on Fashion-MNIST
 * with efps' compressed parameter server.
 *
 *   efps-train --model resnet20 --compressor blocksign --block 2048 --epochs 2 \
 *              --lr 0.1 --momentum 0.9 --nesterov --workers 4 --servers 1
 *
 * starts the servers and four workers on this machine. Without --workers it
 * is one worker of a cluster run (mpirun, srun or torchrun start it on every
 * node; EFPS_SERVERS names servers started with efps-server). */
#include "train.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool train_blas_env(void)
{
    bool set = false;
    if (getenv("OPENBLAS_NUM_THREADS") == NULL) {
        /* several workers share the cores: one BLAS thread each */
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        set = true;
    }
    /* OpenBLAS picks a slower kernel on AVX-512 AMD CPUs it does not know;
     * SkylakeX's runs on any CPU with AVX-512 F, BW, VL and DQ. */
    if (getenv("OPENBLAS_CORETYPE") == NULL && efps_cpu_best_simd() == EFPS_SIMD_AVX512) {
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        set = true;
    }
    return set;
}

int main(int argc, char **argv)
{
    train_opts_t o;
    int rc = train_parse(argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    bool changed = train_blas_env();
    if (o.workers > 0 && !o.as_worker)
        return train_launch(&o, argc, argv);
    /* OpenBLAS read its variables when it was loaded: start again with them */
    if (changed) {
        execv("/proc/self/exe", argv);
        fprintf(stderr,
                "efps-train: cannot exec /proc/self/exe (%s); going on with OpenBLAS' "
                "own settings\n",
                strerror(errno));
    }
    return train_worker(&o);
}
