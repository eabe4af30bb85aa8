/* The checkpoint loaders (lib/optim ckpt_file.c + ckpt_state.c): worker,
 * server and simulation states, from any bytes.
 * Input: one mode byte, then the rest. Mode bit 3 clear: (mode & 3) % 3
 * picks the loader of one object (worker, server, simulation); set: (mode &
 * 1) picks the loader of a set (efps_{worker,server}_opts_load, what
 * efps_ps_load and a server's PS_MSG_LOAD use) into SET_COUNT objects made
 * here as the seeds' were. Mode bit 2 clear: the rest is the whole file.
 * Set: the rest is a payload, wrapped here in a valid container (magic,
 * version, kind, length, CRC), so the fuzzer reaches the state parsers
 * instead of stopping at the CRC. */
#include "fuzz.h"

#include "efps/optim.h"
#include "efps_internal/util.h"

#include <stdbool.h>
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

/* "EFPSCKPT" | u32 version | u32 kind | u64 payload bytes | payload | u32 CRC. */
static size_t wrap(uint8_t *out, uint32_t kind, const uint8_t *payload, size_t len)
{
    memcpy(out, "EFPSCKPT", 8);
    efps__put_le(out + 8, EFPS_CKPT_VERSION, 4);
    efps__put_le(out + 12, kind, 4);
    efps__put_le(out + 16, len, 8);
    memcpy(out + HEADER, payload, len);
    uLong crc = crc32_z(crc32_z(0L, Z_NULL, 0), out, HEADER + len);
    efps__put_le(out + HEADER + len, crc, 4);
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

/* The objects a set is loaded into: those fuzz_seeds saved in corpus/ckpt
 * (blocksign, block 4, momentum 0.9 nesterov, wd 1e-4; 10 and 7 elements;
 * servers of 3 workers). */
#define SET_COUNT 2
static const efps_optim_config_t set_cfg = {.compressor = EFPS_COMP_BLOCKSIGN,
                                            .block = 4,
                                            .momentum = 0.9f,
                                            .nesterov = 1,
                                            .weight_decay = 1e-4f};
static const size_t set_n[SET_COUNT] = {10, 7};

static void load_set(int servers, const char *path)
{
    efps_worker_opt_t *w[SET_COUNT] = {0};
    efps_server_opt_t *s[SET_COUNT] = {0};
    for (int i = 0; i < SET_COUNT; i++)
        if ((servers ? efps_server_opt_create(&set_cfg, set_n[i], 3, &s[i])
                     : efps_worker_opt_create(&set_cfg, set_n[i], &w[i])) != EFPS_OK)
            abort();
    if (servers)
        efps_server_opts_load(path, s, SET_COUNT);
    else
        efps_worker_opts_load(path, w, SET_COUNT);
    for (int i = 0; i < SET_COUNT; i++) {
        /* loaded or untouched, every object is whole */
        if (servers ? s[i] == NULL : w[i] == NULL)
            abort();
        efps_server_opt_destroy(s[i]);
        efps_worker_opt_destroy(w[i]);
    }
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
    const bool set = data[0] & 8;
    const int which = set ? data[0] & 1 : (data[0] & 3) % 3;
    /* worker 1, server 2, sim 3; sets of workers 4, of servers 5 */
    const uint32_t kind = (uint32_t)which + (set ? 4 : 1);
    const char *path = (data[0] & 4) ? fuzz_file(0, file, wrap(file, kind, data + 1, size - 1))
                                     : fuzz_file(0, data + 1, size - 1);
    if (set)
        load_set(which, path);
    else
        load(which, path);
    return 0;
}
