/* A small deterministic PRNG (xoshiro256**, seeded through splitmix64).
 * Same seed and stream give the same sequence on every machine, so workers
 * that share a seed build the same initial weights and the same data shards. */
#ifndef NN_RNG_H
#define NN_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} nn_rng_t;

/* Seeds from (seed, stream): distinct streams give independent sequences. */
void nn_rng_seed(nn_rng_t *rng, uint64_t seed, uint64_t stream);
uint64_t nn_rng_next(nn_rng_t *rng);
/* Uniform in [0, bound), unbiased (rejection); bound must be > 0. */
uint64_t nn_rng_below(nn_rng_t *rng, uint64_t bound);
/* Uniform in [0, 1) with 53 random bits. */
double nn_rng_uniform(nn_rng_t *rng);
/* Standard normal (Box-Muller, one value per call). */
double nn_rng_normal(nn_rng_t *rng);
/* Fisher-Yates shuffle of a[0..n). */
void nn_rng_shuffle_u32(nn_rng_t *rng, uint32_t *a, size_t n);

#endif
