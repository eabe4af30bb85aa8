/* efps-train command line: every option checked, every mistake named, exit 2. */
#include "train.h"

#include "cli.h"

#include "nn/data.h"
#include "nn/model.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: efps-train [options]\n"
            "Data-parallel training on Fashion-MNIST over efps parameter servers.\n"
            "With --workers M it starts --servers S servers and M workers on this machine;\n"
            "without it, it is one worker of a cluster run: rank and size from EFPS_RANK/\n"
            "EFPS_NUM_WORKERS or mpirun/srun/torchrun, servers from EFPS_SERVERS.\n\n"
            "  --model NAME          mlp, resnet8, resnet20, resnet<6n+2>        (resnet20)\n"
            "  --data DIR            Fashion-MNIST IDX files   (" NN_FASHION_MNIST_DIR ")\n"
            "  --compressor NAME     none, sign or blocksign   (EFPS_COMPRESSOR, else blocksign)\n"
            "  --block N             elements per block, 0 = one per tensor part\n"
            "                                                  (EFPS_BLOCK, else 0)\n"
            "  --group-below N       tensors of fewer than N elements travel as one\n"
            "                        key (their own messages would cost more in\n"
            "                        headers and padding than in data); 0 = none (512)\n"
            "  --epochs N            (1)\n"
            "  --batch N             images per worker and step                  (64)\n"
            "  --lr X                base learning rate                          (0.1)\n"
            "  --momentum X          (0.9)\n"
            "  --nesterov            Nesterov momentum\n"
            "  --wd X                weight decay, applied by the optimizer      (0.0001)\n"
            "  --schedule NAME       constant, step (x0.1 at 50%% and 75%% of the epochs)\n"
            "                        or cosine                                   (cosine)\n"
            "  --warmup-epochs N     linear warm-up                              (0)\n"
            "  --seed N              model init and data order, same on all ranks (1)\n"
            "  --workers M           local launch with M workers\n"
            "  --servers S           local launch: number of servers             (1)\n"
            "  --train-subset N      use the first N training images only\n"
            "  --test-subset N       evaluate on the first N test images only\n"
            "  --csv PATH            per-epoch CSV, written by worker 0\n"
            "  --transport NAME      auto, tcp or verbs                          (EFPS_TRANSPORT)\n"
            "  --dump-params PATH    each worker writes its final parameters to PATH.<rank>\n"
            "  --step-csv PATH       each worker writes one row per step to PATH.<rank>:\n"
            "                        start, duration, time in push and pull, bytes\n"
            "  -h, --help            this text\n");
}

static const char *const compressors[] = {"none", "sign", "blocksign", NULL};
static const char *const transports[] = {"auto", "tcp", "verbs", NULL};

/* The settings a run shares with its servers come from the flag, else the
 * EFPS_* variable (checked as strictly as the flag, and named when bad),
 * else the default: every process of a local launch resolves them alike. */
static int resolve_env(train_opts_t *o)
{
    const char *e;
    long v;
    int k;
    if (o->compressor == NULL && (e = getenv("EFPS_COMPRESSOR")) != NULL && *e != '\0') {
        if (cli_word("EFPS_COMPRESSOR", e, compressors, &k) != 0)
            return CLI_USAGE;
        o->compressor = compressors[k];
    }
    if (o->compressor == NULL)
        o->compressor = "blocksign";
    if (o->block < 0 && (e = getenv("EFPS_BLOCK")) != NULL && *e != '\0') {
        if (cli_long("EFPS_BLOCK", e, 0, INT_MAX, &v) != 0)
            return CLI_USAGE;
        o->block = v;
    }
    if (o->block < 0)
        o->block = 0;
    if (o->transport == NULL && (e = getenv("EFPS_TRANSPORT")) != NULL && *e != '\0') {
        if (cli_word("EFPS_TRANSPORT", e, transports, &k) != 0)
            return CLI_USAGE;
        o->transport = transports[k];
    }
    return 0;
}

/* Integer-valued options: where the value goes and its range. */
static int set_int_opt(int c, const char *opt, const char *text, train_opts_t *o)
{
    long v = 0; /* parse_long leaves it alone on failure, and gcc -O3 cannot see that rc says so */
    int rc = 0;
    switch (c) {
    case 'B':
        rc = cli_long(opt, text, 0, INT_MAX, &v);
        o->block = v;
        break;
    case 'g':
        rc = cli_long(opt, text, 0, LONG_MAX, &v);
        o->group_below = (size_t)v;
        break;
    case 'e':
        rc = cli_long(opt, text, 1, 100000, &v);
        o->epochs = (int)v;
        break;
    case 'b':
        rc = cli_long(opt, text, 1, 65536, &v);
        o->batch = (int)v;
        break;
    case 'W':
        rc = cli_long(opt, text, 0, 100000, &v);
        o->warmup_epochs = (int)v;
        break;
    case 'w':
        rc = cli_long(opt, text, 1, 256, &v);
        o->workers = (int)v;
        break;
    case 'S':
        rc = cli_long(opt, text, 1, 64, &v);
        o->servers = (int)v;
        break;
    case 't':
        rc = cli_long(opt, text, 1, LONG_MAX, &v);
        o->train_subset = (size_t)v;
        break;
    case 'T':
        rc = cli_long(opt, text, 1, LONG_MAX, &v);
        o->test_subset = (size_t)v;
        break;
    case 's':
        rc = cli_long(opt, text, 0, LONG_MAX, &v);
        o->seed = (uint64_t)v;
        break;
    }
    return rc;
}

static int set_opt(int c, const char *opt, const char *text, train_opts_t *o)
{
    static const char *const schedules[] = {"constant", "step", "cosine", NULL};
    int k;
    switch (c) {
    case 'm':
        o->model = text;
        return 0;
    case 'd':
        o->data = text;
        return 0;
    case 'o':
        o->csv = text;
        return 0;
    case 'P':
        o->dump_params = text;
        return 0;
    case 'C':
        o->step_csv = text;
        return 0;
    case 'N':
        o->nesterov = true;
        return 0;
    case 'X':
        o->as_worker = true;
        return 0;
    case 'l':
        return cli_double(opt, text, 1e-9, 1e3, &o->lr);
    case 'u':
        return cli_double(opt, text, 0.0, 0.999999, &o->momentum);
    case 'y':
        return cli_double(opt, text, 0.0, 1.0, &o->wd);
    case 'c':
        if (cli_word(opt, text, compressors, &k) != 0)
            return CLI_USAGE;
        o->compressor = compressors[k];
        return 0;
    case 'r':
        if (cli_word(opt, text, transports, &k) != 0)
            return CLI_USAGE;
        o->transport = transports[k];
        return 0;
    case 'H':
        if (cli_word(opt, text, schedules, &k) != 0)
            return CLI_USAGE;
        o->schedule = (sched_kind_t)k;
        return 0;
    default:
        return set_int_opt(c, opt, text, o);
    }
}

int train_parse(int argc, char **argv, train_opts_t *o)
{
    static const struct option lo[] = {
        {"model", 1, 0, 'm'},
        {"data", 1, 0, 'd'},
        {"compressor", 1, 0, 'c'},
        {"block", 1, 0, 'B'},
        {"group-below", 1, 0, 'g'},
        {"epochs", 1, 0, 'e'},
        {"batch", 1, 0, 'b'},
        {"lr", 1, 0, 'l'},
        {"momentum", 1, 0, 'u'},
        {"nesterov", 0, 0, 'N'},
        {"wd", 1, 0, 'y'},
        {"schedule", 1, 0, 'H'},
        {"warmup-epochs", 1, 0, 'W'},
        {"seed", 1, 0, 's'},
        {"workers", 1, 0, 'w'},
        {"servers", 1, 0, 'S'},
        {"train-subset", 1, 0, 't'},
        {"test-subset", 1, 0, 'T'},
        {"csv", 1, 0, 'o'},
        {"transport", 1, 0, 'r'},
        {"dump-params", 1, 0, 'P'},
        {"step-csv", 1, 0, 'C'},
        {"help", 0, 0, 'h'},
        {"as-worker", 0, 0, 'X'}, /* internal: a worker started by the local launch */
        {0, 0, 0, 0}};
    *o = (train_opts_t){.model = "resnet20",
                        .data = NN_FASHION_MNIST_DIR,
                        .compressor = NULL, /* flag, EFPS_COMPRESSOR, blocksign */
                        .block = -1,        /* flag, EFPS_BLOCK, 0 */
                        .group_below = 512,
                        .epochs = 1,
                        .batch = 64,
                        .lr = 0.1,
                        .momentum = 0.9,
                        .wd = 1e-4,
                        .schedule = SCHED_COSINE,
                        .seed = 1,
                        .servers = 1};
    cli_init("efps-train");
    opterr = 0;
    int c, li = -1;
    while ((c = getopt_long(argc, argv, ":h", lo, &li)) != -1) {
        const char *opt = cli_opt_name(lo, li, c);
        li = -1;
        if (c == 'h') {
            usage(stdout);
            return -1;
        }
        if (c == '?' || c == ':')
            return cli_getopt_error(c, argv);
        if (set_opt(c, opt, optarg, o) != 0)
            return CLI_USAGE;
    }
    if (optind < argc)
        return cli_unexpected(argv[optind]);
    if (resolve_env(o) != 0)
        return CLI_USAGE;
    nn_model_config_t mc;
    if (nn_model_config_named(o->model, &mc) != EFPS_OK)
        return cli_bad("--model", o->model, "mlp, resnet8, resnet20 or resnet<6n+2> (n >= 1)");
    if (o->schedule == SCHED_COSINE && o->warmup_epochs >= o->epochs) {
        char text[16];
        snprintf(text, sizeof(text), "%d", o->warmup_epochs);
        return cli_bad("--warmup-epochs", text, "fewer than --epochs %d with the cosine schedule",
                       o->epochs);
    }
    return 0;
}
