/* A least-squares training run through the parameter server (a worker), or
 * through efps_sim (--sim), writing the final parameters to a file, so the
 * tests can compare processes and the simulation bit for bit.
 * The model is cut into --keys keys; backward pushes them last key first and
 * forward pulls them first key first, as a training program does. */
#include "efps/efps.h"
#include "problems.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int steps, keys, workers, sleep_ms, sim;
    size_t dim;
    uint64_t seed;
    float lr;
    int skip[2], zero[2], leave[2]; /* rank:step, -1: none */
    const char *out;
    efps_ps_config_t ps;
} opts_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: ps_lsq --out FILE [--sim --workers M] [--steps N] [--dim D] [--keys K]\n"
               "              [--seed S] [--lr LR] [--momentum MU] [--nesterov] [--wd WD]\n"
               "              [--compressor C] [--block B] [--sleep-ms MS]\n"
               "              [--skip R:T] [--zero R:T] [--leave R:N]\n"
               "A worker of a least-squares run over efps servers (EFPS_* variables or a\n"
               "launcher give rank, workers and servers), or with --sim the same run in\n"
               "efps_sim. Writes the final parameters (raw float32) to FILE.\n"
               "--skip R:T: worker R skips every key at step T (efps_ps_skip); --zero R:T:\n"
               "worker R pushes a zero gradient then; --leave R:N: worker R finalizes\n"
               "after N steps, while the others go on.\n");
}

/* lr of step t: halves half way, so the error re-scaling is exercised. */
static float lr_at(const opts_t *o, int t)
{
    return t < o->steps / 2 ? o->lr : o->lr * 0.5f;
}

static int write_x(const char *path, const float *x, size_t n)
{
    FILE *f = fopen(path, "wb");
    int ok = f != NULL && fwrite(x, sizeof(float), n, f) == n;
    if (f != NULL)
        ok &= fclose(f) == 0;
    if (!ok)
        fprintf(stderr, "ps_lsq: cannot write %s\n", path);
    return ok ? 0 : 1;
}

static int run_sim(const opts_t *o, sim_problem_t *prob)
{
    efps_optim_config_t cfg = {.momentum = o->ps.momentum,
                               .nesterov = o->ps.nesterov,
                               .weight_decay = o->ps.weight_decay,
                               .block = (size_t)(o->ps.block < 0 ? 0 : o->ps.block)};
    if (efps_compressor_parse(o->ps.compressor, &cfg.compressor) != EFPS_OK)
        return 2;
    float *x0 = malloc(o->dim * sizeof(float));
    sim_problem_init(prob, x0);
    efps_sim_t *sim;
    efps_status_t st =
        efps_sim_create(&cfg, o->dim, o->workers, x0, sim_problem_grad, prob, o->seed, &sim);
    free(x0);
    if (st != EFPS_OK)
        return 1;
    for (int t = 0; t < o->steps; t++)
        if (efps_sim_step(sim, lr_at(o, t)) != EFPS_OK)
            return 1;
    int rc = efps_sim_workers_agree(sim) ? write_x(o->out, efps_sim_x(sim, 0), o->dim) : 1;
    printf("sim: loss %.6g after %d steps\n", sim_problem_loss(prob, efps_sim_x(sim, 0)), o->steps);
    efps_sim_destroy(sim);
    return rc;
}

static int run_worker(const opts_t *o, sim_problem_t *prob)
{
    efps_ps_t *ps;
    if (efps_ps_init(&o->ps, &ps) != EFPS_OK)
        return 1;
    const int rank = efps_ps_rank(ps);
    float *x = malloc(o->dim * sizeof(float)), *g = malloc(o->dim * sizeof(float));
    sim_problem_init(prob, x);
    const size_t per = (o->dim + (size_t)o->keys - 1) / (size_t)o->keys;
    efps_status_t st = EFPS_OK;
    for (int k = 0; k < o->keys && st == EFPS_OK; k++)
        st = efps_ps_declare(ps, (uint32_t)(100 + k),
                             per * (size_t)(k + 1) <= o->dim ? per : o->dim - per * (size_t)k);
    for (int t = 0; t < o->steps && st == EFPS_OK; t++) {
        if (rank == o->leave[0] && t == o->leave[1])
            break;
        const uint64_t seed = efps_sim_sample_seed(o->seed, rank, (uint64_t)t);
        st = sim_problem_grad(rank, (uint64_t)t, seed, x, g, prob);
        if (rank == o->zero[0] && t == o->zero[1])
            memset(g, 0, o->dim * sizeof(float));
        const int skip = rank == o->skip[0] && t == o->skip[1];
        for (int k = o->keys - 1; k >= 0 && st == EFPS_OK; k--)
            st = skip ? efps_ps_skip(ps, (uint32_t)(100 + k), lr_at(o, t))
                      : efps_ps_push(ps, (uint32_t)(100 + k), g + per * (size_t)k, lr_at(o, t));
        for (int k = 0; k < o->keys && st == EFPS_OK; k++)
            st = efps_ps_pull(ps, (uint32_t)(100 + k), x + per * (size_t)k);
        if (o->sleep_ms > 0)
            usleep((useconds_t)o->sleep_ms * 1000);
    }
    efps_status_t fin = efps_ps_finalize(ps);
    if (st == EFPS_OK)
        st = fin;
    int rc = st == EFPS_OK ? write_x(o->out, x, o->dim) : 1;
    if (st == EFPS_OK && rank == 0)
        printf("worker 0: loss %.6g after %d steps\n", sim_problem_loss(prob, x), o->steps);
    if (st != EFPS_OK)
        fprintf(stderr, "ps_lsq: worker %d failed: %s\n", rank, efps_strerror(st));
    free(x);
    free(g);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"out", 1, 0, 'o'},
                                       {"sim", 0, 0, 'S'},
                                       {"workers", 1, 0, 'w'},
                                       {"steps", 1, 0, 'n'},
                                       {"dim", 1, 0, 'd'},
                                       {"keys", 1, 0, 'k'},
                                       {"seed", 1, 0, 's'},
                                       {"lr", 1, 0, 'l'},
                                       {"momentum", 1, 0, 'm'},
                                       {"nesterov", 0, 0, 'N'},
                                       {"wd", 1, 0, 'W'},
                                       {"compressor", 1, 0, 'c'},
                                       {"block", 1, 0, 'b'},
                                       {"sleep-ms", 1, 0, 'z'},
                                       {"skip", 1, 0, 'K'},
                                       {"zero", 1, 0, 'Z'},
                                       {"leave", 1, 0, 'L'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    opts_t o = {.steps = 50,
                .keys = 4,
                .dim = 4096,
                .seed = 7,
                .lr = 0.05f,
                .skip = {-1, -1},
                .zero = {-1, -1},
                .leave = {-1, -1}};
    efps_ps_config_init(&o.ps);
    o.ps.momentum = 0.9f;
    o.ps.compressor = "blocksign";
    o.ps.block = 256;
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'o':
            o.out = optarg;
            break;
        case 'S':
            o.sim = 1;
            break;
        case 'w':
            o.workers = atoi(optarg);
            break;
        case 'n':
            o.steps = atoi(optarg);
            break;
        case 'd':
            o.dim = (size_t)atol(optarg);
            break;
        case 'k':
            o.keys = atoi(optarg);
            break;
        case 's':
            o.seed = (uint64_t)atoll(optarg);
            break;
        case 'l':
            o.lr = strtof(optarg, NULL);
            break;
        case 'm':
            o.ps.momentum = strtof(optarg, NULL);
            break;
        case 'N':
            o.ps.nesterov = 1;
            break;
        case 'W':
            o.ps.weight_decay = strtof(optarg, NULL);
            break;
        case 'c':
            o.ps.compressor = optarg;
            break;
        case 'b':
            o.ps.block = atol(optarg);
            break;
        case 'z':
            o.sleep_ms = atoi(optarg);
            break;
        case 'K':
        case 'Z':
        case 'L': {
            int *rt = c == 'K' ? o.skip : c == 'Z' ? o.zero : o.leave;
            if (sscanf(optarg, "%d:%d", &rt[0], &rt[1]) != 2) {
                usage(stderr);
                return 2;
            }
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (o.out == NULL || o.keys < 1 || o.dim < (size_t)o.keys || o.steps < 1 ||
        (o.sim && o.workers < 1)) {
        usage(stderr);
        return 2;
    }
    sim_problem_t *prob;
    if (sim_problem_lsq_create(o.dim, 2048, 32, 0.1f, o.seed, &prob) != EFPS_OK)
        return 1;
    int rc = o.sim ? run_sim(&o, prob) : run_worker(&o, prob);
    sim_problem_destroy(prob);
    return rc;
}
