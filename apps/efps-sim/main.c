/* efps-sim: M virtual workers and one server in one process, running the
 * EF-SGDM optimizer of libefps on a built-in problem, deterministic for a
 * seed. Prints the full-data loss every few steps and what one worker pushes
 * per step against fp32. */
#include "cli.h"
#include "efps/efps.h"
#include "efps_internal/util.h"
#include "problems.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    efps_optim_config_t opt;
    efps_lr_schedule_t lr;
    int workers;
    uint64_t steps, stop_after, every, seed;
    const char *problem;
    size_t dim, samples, batch, hidden, classes;
    float noise;
    const char *save, *resume;
} args_t;

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: efps-sim [options]\n"
            "Simulates data-parallel EF-SGDM (M workers, one server) in one process.\n\n"
            "Optimizer:\n"
            "  -c, --compressor NAME    none | sign | blocksign (default blocksign)\n"
            "  -b, --block N            blocksign elements per block, 0 = one per tensor (0)\n"
            "  -m, --momentum MU        momentum in [0, 1) (0.9)\n"
            "  -n, --nesterov           Nesterov momentum (default heavy ball)\n"
            "      --wd WD              weight decay (0)\n"
            "Run:\n"
            "  -w, --workers M          number of workers (4)\n"
            "  -s, --steps N            total steps of the run (200); the schedule spans them\n"
            "      --stop-after N       stop after step N (then --save), to resume later\n"
            "  -l, --lr LR              base learning rate (0.05)\n"
            "      --schedule KIND      constant | step | cosine (constant)\n"
            "      --warmup N           linear warm-up steps (0)\n"
            "      --milestones E1,E2   step: epochs at which lr *= gamma\n"
            "      --gamma G            step: decay factor (0.1)\n"
            "      --steps-per-epoch N  step: steps in one epoch (steps / 10)\n"
            "      --min-lr LR          cosine: final lr (0)\n"
            "      --seed N             seed of data, initialisation and minibatches (1)\n"
            "  -e, --every N            print the loss every N steps (10)\n"
            "      --save PATH          write a checkpoint of the whole run at the end\n"
            "      --resume PATH        continue the run saved in PATH; the optimizer and\n"
            "                           workers come from it, give the same problem flags,\n"
            "                           --seed and schedule\n"
            "Problem:\n"
            "  -p, --problem NAME       lsq (least squares) | mlp (two-layer network) (lsq)\n"
            "      --dim N              lsq: number of parameters (64)\n"
            "      --noise S            lsq: target noise (0.1)\n"
            "      --hidden N           mlp: hidden units (32); inputs = --dim (16)\n"
            "      --classes N          mlp: classes (4)\n"
            "      --samples N          data set size (2048)\n"
            "      --batch N            minibatch per worker (16)\n"
            "  -h, --help               this text\n");
}

/* ---- flag values: every bad one is a clear error ------------------------------ */

static int bad_value(const char *flag, const char *text, const char *want)
{
    char name[64];
    snprintf(name, sizeof(name), "--%s", flag);
    cli_bad(name, text, "%s", want);
    return -1;
}

static int parse_u64(const char *flag, const char *text, uint64_t lo, uint64_t hi, uint64_t *v)
{
    char want[96];
    if (efps__parse_u64(text, lo, hi, v))
        return 0;
    if (hi == UINT64_MAX)
        snprintf(want, sizeof(want), "an integer of at least %llu", (unsigned long long)lo);
    else
        snprintf(want, sizeof(want), "an integer from %llu to %llu", (unsigned long long)lo,
                 (unsigned long long)hi);
    return bad_value(flag, text, want);
}

static int parse_size(const char *flag, const char *text, uint64_t lo, uint64_t hi, size_t *v)
{
    uint64_t x;
    if (parse_u64(flag, text, lo, hi, &x) != 0)
        return -1;
    *v = (size_t)x;
    return 0;
}

/* A finite float in [lo, hi] (hi_open: strictly below hi). */
static int parse_float(const char *flag, const char *text, float lo, float hi, int hi_open,
                       float *v)
{
    float x;
    if (!efps__parse_float(text, lo, hi, &x) || (hi_open && x == hi)) {
        char want[96];
        snprintf(want, sizeof(want), "a number in [%g, %g%c", (double)lo, (double)hi,
                 hi_open ? ')' : ']');
        return bad_value(flag, text, want);
    }
    *v = x;
    return 0;
}

static int parse_milestones(const char *text, efps_lr_schedule_t *lr)
{
    const char *p = text;
    lr->num_milestones = 0;
    while (*p != '\0') {
        char *end = NULL;
        errno = 0;
        const unsigned long e = strtoul(p, &end, 10);
        if (end == p || *p == '-' || errno != 0 || e > UINT32_MAX ||
            lr->num_milestones == EFPS_LR_MAX_MILESTONES || (*end != ',' && *end != '\0'))
            return bad_value("milestones", text, "a list of up to 16 epochs like 30,60,80");
        lr->milestones[lr->num_milestones++] = (uint32_t)e;
        p = *end == ',' ? end + 1 : end;
    }
    if (lr->num_milestones == 0)
        return bad_value("milestones", text, "a list of up to 16 epochs like 30,60,80");
    return 0;
}

enum {
    OPT_WD = 256,
    OPT_SCHEDULE,
    OPT_WARMUP,
    OPT_MILESTONES,
    OPT_GAMMA,
    OPT_SPE,
    OPT_MIN_LR,
    OPT_SEED,
    OPT_STOP,
    OPT_SAVE,
    OPT_RESUME,
    OPT_DIM,
    OPT_NOISE,
    OPT_HIDDEN,
    OPT_CLASSES,
    OPT_SAMPLES,
    OPT_BATCH,
};

static const struct option long_opts[] = {
    {"compressor", required_argument, NULL, 'c'},
    {"block", required_argument, NULL, 'b'},
    {"momentum", required_argument, NULL, 'm'},
    {"nesterov", no_argument, NULL, 'n'},
    {"wd", required_argument, NULL, OPT_WD},
    {"workers", required_argument, NULL, 'w'},
    {"steps", required_argument, NULL, 's'},
    {"lr", required_argument, NULL, 'l'},
    {"stop-after", required_argument, NULL, OPT_STOP},
    {"schedule", required_argument, NULL, OPT_SCHEDULE},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"milestones", required_argument, NULL, OPT_MILESTONES},
    {"gamma", required_argument, NULL, OPT_GAMMA},
    {"steps-per-epoch", required_argument, NULL, OPT_SPE},
    {"min-lr", required_argument, NULL, OPT_MIN_LR},
    {"seed", required_argument, NULL, OPT_SEED},
    {"every", required_argument, NULL, 'e'},
    {"save", required_argument, NULL, OPT_SAVE},
    {"resume", required_argument, NULL, OPT_RESUME},
    {"problem", required_argument, NULL, 'p'},
    {"dim", required_argument, NULL, OPT_DIM},
    {"noise", required_argument, NULL, OPT_NOISE},
    {"hidden", required_argument, NULL, OPT_HIDDEN},
    {"classes", required_argument, NULL, OPT_CLASSES},
    {"samples", required_argument, NULL, OPT_SAMPLES},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int parse_schedule(const char *text, efps_lr_schedule_t *lr)
{
    static const char *const kinds[] = {"constant", "step", "cosine"};
    for (int k = 0; k < 3; k++) {
        if (strcmp(text, kinds[k]) == 0) {
            lr->kind = (efps_lr_kind_t)k;
            return 0;
        }
    }
    return bad_value("schedule", text, "one of constant, step, cosine");
}

#define NOT_MINE 1 /* a parse_* group does not know the option */
#define BIG      ((uint64_t)1 << 40)

/* Optimizer flags. 0 ok, -1 bad value, NOT_MINE. */
static int parse_optim(int c, const char *v, efps_optim_config_t *opt)
{
    switch (c) {
    case 'c':
        if (efps_compressor_parse(v, &opt->compressor) != EFPS_OK)
            return bad_value("compressor", v, "one of none, sign, blocksign");
        return 0;
    case 'b':
        return parse_size("block", v, 0, (size_t)1 << 30, &opt->block);
    case 'm':
        return parse_float("momentum", v, 0.0f, 1.0f, 1, &opt->momentum);
    case 'n':
        opt->nesterov = 1;
        return 0;
    case OPT_WD:
        return parse_float("wd", v, 0.0f, 1.0f, 0, &opt->weight_decay);
    }
    return NOT_MINE;
}

/* Learning-rate schedule flags. */
static int parse_lr(int c, const char *v, efps_lr_schedule_t *lr, int *spe_set)
{
    switch (c) {
    case 'l':
        return parse_float("lr", v, 1e-30f, 1e6f, 0, &lr->base_lr);
    case OPT_SCHEDULE:
        return parse_schedule(v, lr);
    case OPT_WARMUP:
        return parse_u64("warmup", v, 0, BIG, &lr->warmup_steps);
    case OPT_MILESTONES:
        return parse_milestones(v, lr);
    case OPT_GAMMA:
        return parse_float("gamma", v, 1e-30f, 1.0f, 0, &lr->gamma);
    case OPT_SPE:
        *spe_set = 1;
        return parse_u64("steps-per-epoch", v, 1, BIG, &lr->steps_per_epoch);
    case OPT_MIN_LR:
        return parse_float("min-lr", v, 0.0f, 1e6f, 0, &lr->min_lr);
    }
    return NOT_MINE;
}

/* Run and problem flags. */
static int parse_run(int c, const char *v, args_t *a)
{
    switch (c) {
    case 'w': {
        size_t w;
        if (parse_size("workers", v, 1, 4096, &w) != 0)
            return -1;
        a->workers = (int)w;
        return 0;
    }
    case 's':
        return parse_u64("steps", v, 1, BIG, &a->steps);
    case OPT_STOP:
        return parse_u64("stop-after", v, 1, BIG, &a->stop_after);
    case OPT_SEED:
        return parse_u64("seed", v, 0, UINT64_MAX, &a->seed);
    case 'e':
        return parse_u64("every", v, 1, BIG, &a->every);
    case OPT_SAVE:
        a->save = v;
        return 0;
    case OPT_RESUME:
        a->resume = v;
        return 0;
    }
    return NOT_MINE;
}

static int parse_problem(int c, const char *v, args_t *a)
{
    switch (c) {
    case 'p':
        if (strcmp(v, "lsq") != 0 && strcmp(v, "mlp") != 0)
            return bad_value("problem", v, "one of lsq, mlp");
        a->problem = v;
        return 0;
    case OPT_DIM:
        return parse_size("dim", v, 1, 1 << 20, &a->dim);
    case OPT_NOISE:
        return parse_float("noise", v, 0.0f, 1e6f, 0, &a->noise);
    case OPT_HIDDEN:
        return parse_size("hidden", v, 1, 1 << 16, &a->hidden);
    case OPT_CLASSES:
        return parse_size("classes", v, 2, 1 << 16, &a->classes);
    case OPT_SAMPLES:
        return parse_size("samples", v, 1, 1 << 20, &a->samples);
    case OPT_BATCH:
        return parse_size("batch", v, 1, 1 << 20, &a->batch);
    }
    return NOT_MINE;
}

/* One option; -1 on a bad value. */
static int parse_one(int c, const char *v, args_t *a, int *spe_set)
{
    int r = parse_optim(c, v, &a->opt);
    if (r == NOT_MINE)
        r = parse_lr(c, v, &a->lr, spe_set);
    if (r == NOT_MINE)
        r = parse_run(c, v, a);
    if (r == NOT_MINE)
        r = parse_problem(c, v, a);
    return r == 0 ? 0 : -1;
}

/* 0: run; 1: done (help); -1: bad command line. */
static int parse_args(int argc, char **argv, args_t *a)
{
    *a = (args_t){
        .opt = {.compressor = EFPS_COMP_BLOCKSIGN, .momentum = 0.9f},
        .lr = {.kind = EFPS_LR_CONSTANT, .base_lr = 0.05f, .gamma = 0.1f},
        .workers = 4,
        .steps = 200,
        .every = 10,
        .seed = 1,
        .problem = "lsq",
        .dim = 0,
        .samples = 2048,
        .batch = 16,
        .hidden = 32,
        .classes = 4,
        .noise = 0.1f,
    };
    int c, spe_set = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:b:m:nw:s:l:e:p:h", long_opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 1;
        }
        if (c == '?' || c == ':') {
            cli_getopt_error(c, argv);
            return -1;
        }
        if (parse_one(c, optarg, a, &spe_set) != 0)
            return -1;
    }
    if (optind < argc) {
        cli_unexpected(argv[optind]);
        return -1;
    }
    if (a->stop_after == 0 || a->stop_after > a->steps)
        a->stop_after = a->steps;
    if (a->dim == 0)
        a->dim = strcmp(a->problem, "lsq") == 0 ? 64 : 16;
    if (a->lr.kind == EFPS_LR_STEP && !spe_set)
        a->lr.steps_per_epoch = a->steps / 10 ? a->steps / 10 : 1;
    if (a->lr.kind == EFPS_LR_COSINE)
        a->lr.total_steps = a->steps;
    if (efps_lr_schedule_check(&a->lr) != EFPS_OK) {
        fprintf(stderr, "efps-sim: the learning-rate flags do not make a valid schedule; see "
                        "--help\n");
        return -1;
    }
    return 0;
}

/* ---- the run ---------------------------------------------------------------------- */

static sim_problem_t *make_problem(const args_t *a)
{
    sim_problem_t *p = NULL;
    efps_status_t st =
        strcmp(a->problem, "lsq") == 0
            ? sim_problem_lsq_create(a->dim, a->samples, a->batch, a->noise, a->seed, &p)
            : sim_problem_mlp_create(a->dim, a->hidden, a->classes, a->samples, a->batch, a->seed,
                                     &p);
    if (st != EFPS_OK) {
        fprintf(stderr, "efps-sim: cannot build the %s problem: %s\n", a->problem,
                efps_strerror(st));
        return NULL;
    }
    return p;
}

static efps_sim_t *make_sim(const args_t *a, sim_problem_t *p)
{
    const size_t n = sim_problem_dim(p);
    efps_sim_t *sim = NULL;
    if (a->resume != NULL) {
        efps_status_t st = efps_sim_load(a->resume, sim_problem_grad, p, &sim);
        if (st != EFPS_OK) {
            fprintf(stderr, "efps-sim: cannot resume from %s: %s\n", a->resume, efps_strerror(st));
            return NULL;
        }
        if (efps_sim_size(sim) != n) {
            fprintf(stderr, "efps-sim: %s holds %zu parameters, this problem has %zu\n", a->resume,
                    efps_sim_size(sim), n);
            efps_sim_destroy(sim);
            return NULL;
        }
        return sim;
    }
    float *x0 = malloc(n * sizeof(float));
    if (x0 == NULL)
        return NULL;
    sim_problem_init(p, x0);
    efps_status_t st =
        efps_sim_create(&a->opt, n, a->workers, x0, sim_problem_grad, p, a->seed, &sim);
    free(x0);
    if (st != EFPS_OK)
        fprintf(stderr, "efps-sim: cannot create the simulation (see the log above)\n");
    return sim;
}

/* From the simulation, not the flags: a resumed run keeps its saved config. */
static void print_header(const args_t *a, efps_sim_t *sim)
{
    const efps_optim_config_t *cfg = efps_sim_config(sim);
    const size_t n = efps_sim_size(sim), push = efps_sim_push_bytes(sim);
    const double fp32 = 4.0 * (double)n;
    printf("# efps-sim: problem %s, %zu parameters, %d %s, compressor %s", a->problem, n,
           efps_sim_workers(sim), cli_plural(efps_sim_workers(sim), "worker", "workers"),
           efps_compressor_name(cfg->compressor));
    if (cfg->compressor == EFPS_COMP_BLOCKSIGN)
        printf(" (block %zu)", cfg->block);
    printf(", momentum %g%s, wd %g, seed %llu\n", (double)cfg->momentum,
           cfg->nesterov ? " nesterov" : "", (double)cfg->weight_decay,
           (unsigned long long)a->seed);
    printf("# bytes pushed per worker per step: %zu (fp32: %.0f, %.1fx less); "
           "each worker pulls the same\n",
           push, fp32, fp32 / (double)push);
    printf("%10s %12s %14s\n", "step", "lr", "loss");
}

static int run(const args_t *a, efps_sim_t *sim, sim_problem_t *p)
{
    print_header(a, sim);
    if (efps_sim_steps(sim) == 0)
        printf("%10d %12s %14.6g\n", 0, "-", sim_problem_loss(p, efps_sim_x(sim, 0)));
    while (efps_sim_steps(sim) < a->stop_after) {
        const float lr = efps_lr_at(&a->lr, efps_sim_steps(sim));
        efps_status_t st = efps_sim_step(sim, lr);
        if (st != EFPS_OK) {
            fprintf(stderr, "efps-sim: step %llu failed: %s\n",
                    (unsigned long long)efps_sim_steps(sim), efps_strerror(st));
            return -1;
        }
        const uint64_t t = efps_sim_steps(sim);
        if (t % a->every == 0 || t == a->stop_after)
            printf("%10llu %12.6g %14.6g\n", (unsigned long long)t, (double)lr,
                   sim_problem_loss(p, efps_sim_x(sim, 0)));
    }
    if (a->save != NULL) {
        efps_status_t st = efps_sim_save(sim, a->save);
        if (st != EFPS_OK) {
            fprintf(stderr, "efps-sim: cannot save to %s: %s\n", a->save, efps_strerror(st));
            return -1;
        }
        printf("# saved to %s at step %llu\n", a->save, (unsigned long long)efps_sim_steps(sim));
    }
    return 0;
}

int main(int argc, char **argv)
{
    args_t a;
    cli_init("efps-sim");
    const int parsed = parse_args(argc, argv, &a);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    sim_problem_t *p = make_problem(&a);
    if (p == NULL)
        return 1;
    efps_sim_t *sim = make_sim(&a, p);
    int rc = 1;
    if (sim != NULL)
        rc = run(&a, sim, p) == 0 ? 0 : 1;
    efps_sim_destroy(sim);
    sim_problem_destroy(p);
    return rc;
}
