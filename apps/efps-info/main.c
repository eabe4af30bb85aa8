/* efps-info: what this machine and configuration offer efps, and whether a
 * job would start here: versions, the EFPS_* settings in effect and where
 * each came from, CPU kernels, topology, RDMA devices, then a preflight of
 * the usual RDMA-stack errors, each with its fix. Exit 0 when every check
 * passed, 1 when one failed, 2 for a bad command line. */
#include "cli.h"
#include "info.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: efps-info [options]\n"
            "Prints efps's version and wire protocol, the EFPS_* configuration in effect (and\n"
            "where each value came from: default, environment, launcher), the CPU's kernels,\n"
            "the topology and the RDMA devices, then checks what a job needs before it starts:\n"
            "locked memory, a test ibv_reg_mr, rdma_cm resolution (verbs) or a tcp connect\n"
            "(tcp) of every EFPS_SERVERS entry. Each check prints ok or the problem and its fix.\n"
            "Run it with the job's environment (as the job's user, under the launcher).\n\n"
            "  -m, --model-bytes N     bytes a process registers, for memlock and reg_mr\n"
            "  -n, --params N          the model's fp32 parameters: the bytes are computed\n"
            "                          from the compressor and role (default: one tensor part)\n"
            "  -T, --timeout-ms N      each network check waits this long (default 3000)\n"
            "  -j, --json              one JSON document on stdout, for scripts\n"
            "  -h, --help              this text\n\n"
            "Exit status: 0 every check ok (or skipped), 1 a check failed, 2 bad arguments.\n"
            "A tcp check connects to the server and closes: a running server logs a stranger.\n");
}

static int parse(int argc, char **argv, info_opts_t *o)
{
    static const struct option opts[] = {
        {"model-bytes", required_argument, 0, 'm'},
        {"params", required_argument, 0, 'n'},
        {"timeout-ms", required_argument, 0, 'T'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c, li = -1;
    long ms;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:n:T:jh", opts, &li)) != -1) {
        const char *opt = cli_opt_name(opts, li, c);
        li = -1;
        switch (c) {
        case 'm':
            if (cli_u64(opt, optarg, 1, UINT64_MAX / 2, &o->model_bytes) != 0)
                return CLI_USAGE;
            break;
        case 'n':
            if (cli_u64(opt, optarg, 1, UINT64_MAX / 64, &o->params) != 0)
                return CLI_USAGE;
            break;
        case 'T':
            if (cli_long(opt, optarg, 1, 600000, &ms) != 0)
                return CLI_USAGE;
            o->timeout_ms = (int)ms;
            break;
        case 'j':
            o->json = true;
            break;
        case 'h':
            usage(stdout);
            return -1;
        default:
            return cli_getopt_error(c, argv);
        }
    }
    if (optind < argc)
        return cli_unexpected(argv[optind]);
    return 0;
}

int main(int argc, char **argv)
{
    info_opts_t opts = {.timeout_ms = 3000};
    cli_init("efps-info");
    int rc = parse(argc, argv, &opts);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    info_log_install();
    info_config_t ic;
    info_resolve(&ic);
    out_t o;
    info_tally_t t = {0};
    out_begin(&o, stdout, opts.json);
    info_version(&o);
    info_config(&o, &ic);
    info_cpu(&o);
    info_topology(&o);
    info_rdma(&o);
    info_preflight(&o, &opts, &ic, &t);
    out_obj(&o, "summary");
    out_int(&o, "ok", t.ok);
    out_int(&o, "warn", t.warned);
    out_int(&o, "fail", t.failed);
    out_int(&o, "skip", t.skipped);
    out_close(&o);
    out_end(&o);
    return t.failed > 0 ? 1 : 0;
}
