/* The checkpoint loaders (lib/optim ckpt_file.c + ckpt_state.c): worker,
 * server and simulation states, from any bytes.
 * Input: one mode byte, then the rest. (Mode & 3) % 3 picks the loader (worker,
 * server, simulation). Mode bit 2 clear: the rest is the whole file. Set:
 * the rest is a payload, wrapped here in a valid container (magic, version,
 * kind, length, CRC), so the fuzzer reaches the state parsers instead of
 * stopping at the CRC. */
#include "fuzz.h"

#include "efps/optim.h"

#include <string.h>
#include <zlib.h>

#define HEADER   24
#define MAX_FILE (1u << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static void le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* "EFPSCKPT" | u32 version | u32 kind | u64 payload bytes | payload | u32 CRC. */
static size_t wrap(uint8_t *out, uint32_t kind, const uint8_t *payload, size_t len)
{
    memcpy(out, "EFPSCKPT", 8);
    le(out + 8, EFPS_CKPT_VERSION, 4);
    le(out + 12, kind, 4);
    le(out + 16, len, 8);
    memcpy(out + HEADER, payload, len);
    uLong crc = crc32_z(crc32_z(0L, Z_NULL, 0), out, HEADER + len);
    le(out + HEADER + len, crc, 4);
    return HEADER + len + 4;
}

static volatile float sink; /* reads that the compiler cannot drop */

/* Never called: a loaded simulation is only looked at, not stepped. */
static efps_status_t no_grad(int worker, uint64_t step, uint64_t seed, const float *x, float *grad,
                             void *user)
{
    (void)worker, (void)step, (void)seed, (void)x, (void)grad, (void)user;
    return EFPS_ERR_INVALID;
}

static void load(int which, const char *path)
{
    if (which == 0) {
        efps_worker_opt_t *w;
        if (efps_worker_opt_load(path, &w) == EFPS_OK)
            efps_worker_opt_destroy(w);
    } else if (which == 1) {
        efps_server_opt_t *s;
        if (efps_server_opt_load(path, &s) == EFPS_OK)
            efps_server_opt_destroy(s);
    } else {
        efps_sim_t *sim;
        if (efps_sim_load(path, no_grad, NULL, &sim) == EFPS_OK) {
            /* a loaded simulation must be usable: its sizes are what it says */
            for (int k = 0; k < efps_sim_workers(sim); k++)
                for (size_t i = 0; i < efps_sim_size(sim); i++)
                    sink += efps_sim_x(sim, k)[i];
            efps_sim_destroy(sim);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t file[HEADER + MAX_FILE + 4];
    if (size < 1 || size - 1 > MAX_FILE)
        return 0;
    const int which = (data[0] & 3) % 3;
    const uint32_t kind = (uint32_t)which + 1; /* worker 1, server 2, sim 3 */
    if (data[0] & 4) {
        size_t len = wrap(file, kind, data + 1, size - 1);
        load(which, fuzz_file(0, file, len));
    } else {
        load(which, fuzz_file(0, data + 1, size - 1));
    }
    return 0;
}
