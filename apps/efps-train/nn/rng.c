/* xoshiro256** (Blackman and Vigna), seeded by splitmix64. Integer-only
 * except nn_rng_normal, so sequences are identical on every platform. */
#include "rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void nn_rng_seed(nn_rng_t *rng, uint64_t seed, uint64_t stream)
{
    /* Mix the stream in through its own splitmix step so that (seed, stream)
     * and (seed + 1, stream - 1) do not collide. */
    uint64_t x = seed;
    uint64_t st = stream;
    x ^= splitmix64(&st);
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&x);
}

uint64_t nn_rng_next(nn_rng_t *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t nn_rng_below(nn_rng_t *rng, uint64_t bound)
{
    /* Reject the top partial copy of [0, bound) so every value is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do {
        r = nn_rng_next(rng);
    } while (r >= limit);
    return r % bound;
}

double nn_rng_uniform(nn_rng_t *rng)
{
    return (double)(nn_rng_next(rng) >> 11) * 0x1.0p-53;
}

double nn_rng_normal(nn_rng_t *rng)
{
    /* 1 - u is in (0, 1], so the log is finite. */
    double u1 = 1.0 - nn_rng_uniform(rng);
    double u2 = nn_rng_uniform(rng);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void nn_rng_shuffle_u32(nn_rng_t *rng, uint32_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)nn_rng_below(rng, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}
