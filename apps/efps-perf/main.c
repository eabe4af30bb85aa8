/* efps-perf: push/pull throughput of the parameter server, in the style of
 * perftest's ib_write_bw, against raw TCP sockets measured in the same run.
 *
 *   efps-perf -s 67108864 -c none          one size
 *   efps-perf -a -c blocksign -B 2048      4 KiB .. 256 MiB
 *
 * It starts its own servers and workers on this machine (loopback). One
 * iteration is a push of a `size`-byte fp32 gradient and the pull of its
 * update: fp32 goodput counts 2 x size per iteration and worker; wire bytes
 * are what efps actually sent (headers included) both ways. The raw
 * reference sends `size` bytes to an echo process and reads them back.
 *
 *   efps-perf --write-bw -t verbs --host 10.23.0.1 -s 1048576
 * measures instead the one-way write bandwidth of the transport itself,
 * what ib_write_bw measures for raw verbs (wbw.c). --host: where servers
 * (or the --write-bw receiver) listen; rdma_cm needs an RDMA device's
 * address, 127.0.0.1 has no RDMA route. */
#include "perf.h"

#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    size_t size;
    int iters, sweep, gbits, workers, servers, raw, rounds, write_bw, tx_depth;
    const char *host;
    efps_ps_config_t ps;
} opts_t;

typedef struct {
    double seconds;     /* all timed iterations */
    uint64_t wire_step; /* bytes pushed per iteration (the pull is the same size) */
    int ok;
} result_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: efps-perf [options]\n"
            "Push/pull throughput of efps workers and servers on this machine, with raw TCP\n"
            "sockets on loopback moving the same bytes as the reference.\n\n"
            "  -s, --size BYTES        fp32 gradient bytes per push (default 1048576)\n"
            "  -a, --all               sweep 4 KiB .. 256 MiB (x4)\n"
            "  -n, --iters N           timed iterations (default: scaled to the size)\n"
            "  -c, --compressor NAME   none, sign, blocksign (default none)\n"
            "  -B, --block N           blocksign block (default 2048)\n"
            "  -w, --workers P         worker processes (default 1)\n"
            "  -S, --servers S         server processes (default 1)\n"
            "  -t, --transport NAME    tcp, verbs, auto (default EFPS_TRANSPORT)\n"
            "      --report_gbits      Gb/s instead of MB/s\n"
            "      --no-raw            skip the raw socket reference\n"
            "  -r, --rounds R          alternate efps and raw R times, report medians (default 3)\n"
            "      --host ADDR         address to listen on and connect to (default 127.0.0.1;\n"
            "                          verbs needs an RDMA device's address)\n"
            "      --write-bw          one-way efps_tp_write_imm bandwidth of the transport,\n"
            "                          as ib_write_bw (MB = 2^20 bytes); no servers, no raw\n"
            "      --tx-depth N        writes outstanding with --write-bw (default 128)\n"
            "  -h, --help              this text\n");
}

static int default_iters(size_t size)
{
    double n = 2e9 / (double)size;
    return n < 5 ? 5 : n > 200 ? 200 : (int)n;
}

static void worker(const opts_t *o, int rank, int fd)
{
    result_t r = {0};
    efps_ps_config_t cfg = o->ps;
    cfg.role = EFPS_ROLE_WORKER;
    cfg.rank = rank;
    cfg.num_workers = o->workers;
    const size_t n = o->size / 4;
    float *g = efps_aligned_alloc(o->size), *x = efps_aligned_calloc(o->size);
    efps_ps_t *ps = NULL;
    if (efps_ps_init(&cfg, &ps) != EFPS_OK || g == NULL || x == NULL ||
        efps_ps_declare(ps, 1, n) != EFPS_OK)
        goto out;
    for (size_t i = 0; i < n; i++)
        g[i] = (float)((i * 2654435761u) % 2001) * 1e-3f - 1.0f;
    double t0 = 0;
    for (int it = 0; it <= o->iters; it++) { /* iteration 0 warms up (and connects) */
        if (it == 1)
            t0 = efps__now_s();
        if (efps_ps_push(ps, 1, g, 1e-3f) != EFPS_OK || efps_ps_pull(ps, 1, x) != EFPS_OK)
            goto out;
    }
    r.seconds = efps__now_s() - t0;
    uint64_t wire, fp32;
    efps_ps_traffic(ps, &wire, &fp32);
    r.wire_step = wire / (uint64_t)(o->iters + 1);
    r.ok = 1;
out:
    if (efps_ps_finalize(ps) != EFPS_OK)
        r.ok = 0;
    ssize_t w = write(fd, &r, sizeof(r));
    _exit(w == sizeof(r) && r.ok ? 0 : 1);
}

/* One size: servers and workers as child processes; the workers' results. */
static int run_size(const opts_t *o, result_t *res)
{
    char servers[1024];
    pid_t spid[64], wpid[256];
    int fds[2];
    opts_t run = *o;
    if (launch_servers(o->servers, o->workers, &o->ps, o->host, servers, sizeof(servers), spid) !=
            0 ||
        pipe(fds) != 0) {
        fprintf(stderr, "efps-perf: could not start the servers\n");
        return -1;
    }
    run.ps.servers = servers;
    for (int w = 0; w < o->workers; w++)
        if ((wpid[w] = fork()) == 0)
            worker(&run, w, fds[1]);
    close(fds[1]);
    int bad = 0;
    for (int w = 0; w < o->workers; w++)
        bad |= read(fds[0], &res[w], sizeof(res[w])) != sizeof(res[w]) || !res[w].ok;
    close(fds[0]);
    for (int w = 0; w < o->workers; w++)
        bad |= wait_child(wpid[w], 120) != 0;
    for (int s = 0; s < o->servers; s++)
        bad |= wait_child(spid[s], 60) != 0;
    if (bad)
        fprintf(stderr, "efps-perf: a worker or server failed at %zu bytes\n", o->size);
    return bad ? -1 : 0;
}

static void header(const opts_t *o)
{
    const char *u = o->gbits ? "Gb/s" : "MB/s";
    printf("# efps-perf: %d %s x %d %s, transport %s, compressor %s (block %ld)\n", o->workers,
           cli_plural(o->workers, "worker", "workers"), o->servers,
           cli_plural(o->servers, "server", "servers"),
           o->ps.transport ? o->ps.transport : efps_config_get("EFPS_TRANSPORT"), o->ps.compressor,
           o->ps.block);
    printf("# fp32 = gradient bytes pushed + update bytes pulled per second (all workers);\n"
           "# wire = bytes efps sent; raw = TCP sockets moving the fp32 bytes there and back\n");
    printf("%12s %8s %12s %12s %14s %12s %8s\n", "#bytes", "#iters", "fp32 ", "wire ", "wire/step",
           "raw ", "vs raw");
    printf("%12s %8s %12s %12s %14s %12s %8s\n", "", "", u, u, "bytes", u, "");
}

static double rate(const opts_t *o, double bytes, double seconds)
{
    return o->gbits ? bytes * 8 / seconds / 1e9 : bytes / seconds / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return v[n / 2];
}

/* Rounds alternate efps and the raw reference, so a noisy neighbour hits
 * both; the medians of the rounds are printed, and the median ratio. */
static int measure(opts_t *o)
{
    result_t res[256];
    double fp32[16], wire[16], raw[16], ratio[16];
    uint64_t wire_step = 0;
    if (o->iters <= 0)
        o->iters = default_iters(o->size);
    for (int r = 0; r < o->rounds; r++) {
        if (run_size(o, res) != 0)
            return 1;
        fp32[r] = wire[r] = 0;
        for (int w = 0; w < o->workers; w++) {
            fp32[r] += rate(o, 2.0 * (double)o->size * o->iters, res[w].seconds);
            wire[r] += rate(o, 2.0 * (double)res[w].wire_step * o->iters, res[w].seconds);
        }
        wire_step = res[0].wire_step;
        raw[r] = NAN;
        if (o->raw) {
            double t = raw_socket_seconds(o->size, o->iters);
            raw[r] = t > 0 ? rate(o, 2.0 * (double)o->size * o->iters, t) : NAN;
        }
        ratio[r] = fp32[r] / raw[r];
    }
    const int n = o->rounds;
    printf("%12zu %8d %12.2f %12.2f %14llu %12.2f %8.2f\n", o->size, o->iters, median(fp32, n),
           median(wire, n), (unsigned long long)(2 * wire_step), o->raw ? median(raw, n) : NAN,
           o->raw ? median(ratio, n) : NAN);
    fflush(stdout);
    return 0;
}

/* --write-bw: the rounds' medians, in ib_write_bw's units and layout. */
static int measure_write_bw(opts_t *o)
{
    double snd[16], rcv[16];
    if (o->iters <= 0)
        o->iters = default_iters(o->size);
    wbw_opts_t w = {.size = o->size,
                    .iters = o->iters,
                    .tx_depth = o->tx_depth,
                    .transport =
                        o->ps.transport ? o->ps.transport : efps_config_get("EFPS_TRANSPORT"),
                    .host = o->host};
    for (int r = 0; r < o->rounds; r++)
        if (write_bw_run(&w, &snd[r], &rcv[r]) != 0)
            return 1;
    double bw = median(snd, o->rounds);
    printf("%12zu %12d %20.2f %18.2f %16.6f\n", o->size, o->iters, bw, median(rcv, o->rounds),
           bw * (1 << 20) / (double)o->size / 1e6);
    fflush(stdout);
    return 0;
}

static void header_write_bw(const opts_t *o)
{
    printf("# efps-perf --write-bw: transport %s, host %s, tx depth %d, median of %d round(s)\n"
           "# one-way efps_tp_write_imm of the whole buffer into the peer's registered region;\n"
           "# BW = bytes / (first post .. last WRITE completion), recv = first .. last RECV;\n"
           "# MB = 2^20 bytes, as ib_write_bw\n",
           o->ps.transport ? o->ps.transport : efps_config_get("EFPS_TRANSPORT"), o->host,
           o->tx_depth, o->rounds);
    printf("%12s %12s %20s %18s %16s\n", "#bytes", "#iterations", "BW average[MB/sec]",
           "recv BW[MB/sec]", "MsgRate[Mpps]");
}

/* The options without a number or a word. */
static int set_flag(opts_t *o, int c, const char *text)
{
    switch (c) {
    case 'a':
        o->sweep = 1;
        break;
    case 'G':
        o->gbits = 1;
        break;
    case 'R':
        o->raw = 0;
        break;
    case 'H':
        o->host = text;
        break;
    case 'W':
        o->write_bw = 1;
        break;
    }
    return 0;
}

/* One option into o; 0 or CLI_USAGE (the message printed). */
static int set_opt(opts_t *o, int c, const char *opt, const char *text)
{
    static const char *const compressors[] = {"none", "sign", "blocksign", NULL};
    static const char *const transports[] = {"auto", "tcp", "verbs", NULL};
    long v = 0;
    int k, rc = 0;
    switch (c) {
    case 's':
        rc = cli_long(opt, text, 4, LONG_MAX, &v);
        if (rc == 0 && v % 4 != 0)
            return cli_bad(opt, text, "a multiple of 4 (fp32 elements)");
        o->size = (size_t)v;
        return rc;
    case 'n':
        rc = cli_long(opt, text, 1, INT_MAX, &v);
        o->iters = (int)v;
        return rc;
    case 'B':
        rc = cli_long(opt, text, 1, INT32_MAX, &v);
        o->ps.block = v;
        return rc;
    case 'w':
        rc = cli_long(opt, text, 1, 256, &v);
        o->workers = (int)v;
        return rc;
    case 'S':
        rc = cli_long(opt, text, 1, 64, &v);
        o->servers = (int)v;
        return rc;
    case 'r':
        rc = cli_long(opt, text, 1, 16, &v);
        o->rounds = (int)v;
        return rc;
    case 'D':
        rc = cli_long(opt, text, 1, 65536, &v);
        o->tx_depth = (int)v;
        return rc;
    case 'c':
        if ((rc = cli_word(opt, text, compressors, &k)) == 0)
            o->ps.compressor = compressors[k];
        return rc;
    case 't':
        if ((rc = cli_word(opt, text, transports, &k)) == 0)
            o->ps.transport = transports[k];
        return rc;
    }
    return set_flag(o, c, text);
}

/* EFPS_SECRET when given (its servers may be someone else's), else a random
 * one that only this process and its forked servers know. */
static const char *perf_secret(void)
{
    static char hex[65];
    const char *env = getenv("EFPS_SECRET");
    if (env != NULL && *env != '\0')
        return env;
    unsigned char raw[32];
    FILE *f = fopen("/dev/urandom", "rb");
    size_t n = f != NULL ? fread(raw, 1, sizeof(raw), f) : 0;
    if (f != NULL)
        fclose(f);
    if (n != sizeof(raw)) {
        fprintf(stderr, "efps-perf: cannot read /dev/urandom for a shared secret\n");
        return NULL;
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    return hex;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"size", 1, 0, 's'},         {"all", 0, 0, 'a'},
                                       {"iters", 1, 0, 'n'},        {"compressor", 1, 0, 'c'},
                                       {"block", 1, 0, 'B'},        {"workers", 1, 0, 'w'},
                                       {"servers", 1, 0, 'S'},      {"transport", 1, 0, 't'},
                                       {"report_gbits", 0, 0, 'G'}, {"no-raw", 0, 0, 'R'},
                                       {"rounds", 1, 0, 'r'},       {"help", 0, 0, 'h'},
                                       {"host", 1, 0, 'H'},         {"write-bw", 0, 0, 'W'},
                                       {"tx-depth", 1, 0, 'D'},     {0, 0, 0, 0}};
    opts_t o = {.size = 1 << 20,
                .workers = 1,
                .servers = 1,
                .raw = 1,
                .rounds = 3,
                .host = "127.0.0.1",
                .tx_depth = 128};
    efps_ps_config_init(&o.ps);
    o.ps.compressor = "none";
    o.ps.block = 2048;
    o.ps.secret = perf_secret();
    if (o.ps.secret == NULL)
        return 1;
    int c, li = -1;
    cli_init("efps-perf");
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":s:an:c:B:w:S:t:r:h", lo, &li)) != -1) {
        const char *opt = cli_opt_name(lo, li, c);
        li = -1;
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        if (c == '?' || c == ':')
            return cli_getopt_error(c, argv);
        if (set_opt(&o, c, opt, optarg) != 0)
            return CLI_USAGE;
    }
    if (optind < argc)
        return cli_unexpected(argv[optind]);
    efps_compressor_t comp;
    efps_compressor_parse(o.ps.compressor, &comp); /* checked by set_opt */
    if (comp != EFPS_COMP_BLOCKSIGN)
        o.ps.block = 0;
    int (*run)(opts_t *) = o.write_bw ? measure_write_bw : measure;
    if (o.write_bw)
        header_write_bw(&o);
    else
        header(&o);
    if (!o.sweep)
        return run(&o);
    const int iters = o.iters;
    for (size_t s = 4096; s <= ((size_t)256 << 20); s *= 4) {
        o.size = s;
        o.iters = iters;
        if (run(&o) != 0)
            return 1;
    }
    return 0;
}
