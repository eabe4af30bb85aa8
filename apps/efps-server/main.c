/* efps-server: one parameter server process. Run S of them (EFPS_SERVERS
 * lists them all); each serves the parts of the model placed on it until
 * every worker has finished, then exits 0. A failed peer makes it exit 1, as
 * does SIGINT or SIGTERM (after closing everything cleanly). */
#include "cli.h"
#include "efps/ps.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: efps-server [options]\n"
        "Serves the parameter-server parts placed on this server until every worker is done.\n"
        "Every option has an environment variable; the option wins.\n\n"
        "  -s, --servers LIST      host:port of every server, in rank order   EFPS_SERVERS\n"
        "  -r, --rank N            this server's index in LIST                EFPS_RANK\n"
        "  -w, --workers M         number of workers                          EFPS_NUM_WORKERS\n"
        "  -b, --bind ADDR         address to listen on (default: entry N of LIST; port 0 = any)\n"
        "                                                                     EFPS_BIND\n"
        "  -t, --transport NAME    auto, tcp or verbs                         EFPS_TRANSPORT\n"
        "  -c, --compressor NAME   none, sign or blocksign                    EFPS_COMPRESSOR\n"
        "  -B, --block N           elements per block (0: one per part)       EFPS_BLOCK\n"
        "  -p, --partition-bytes N largest tensor part                        "
        "EFPS_PARTITION_BYTES\n"
        "                          these three are optional: without them a server runs\n"
        "                          the layout the workers declare (all must agree); given,\n"
        "                          a worker declaring another value is refused\n"
        "  -T, --timeout-ms N      a silent peer is dead after this           EFPS_TIMEOUT_MS\n"
        "  -S, --secret-file PATH  read the shared secret from PATH           EFPS_SECRET\n"
        "                          (required; make one: openssl rand -hex 32)\n"
        "      --insecure          run without a secret: anyone can join      EFPS_INSECURE=1\n"
        "  -P, --port-file PATH    write the port listened on to PATH (with --bind :0)\n"
        "                                                                     EFPS_PORT_FILE\n"
        "  -v, --verbose           log at info level                          EFPS_LOG\n"
        "  -h, --help              this text\n");
}

/* The server the signal handlers stop (efps_server_stop is async-signal-safe),
 * and whether a signal came before it existed. */
static efps_server_t *volatile running;
static volatile sig_atomic_t signalled;

static void on_signal(int sig)
{
    (void)sig;
    signalled = 1;
    efps_server_stop(running);
}

/* SIGINT/SIGTERM end the run cleanly: connections closed, memory freed,
 * the port released, exit status 1 (the workers did not finish). The
 * handlers are in place before the server is created, so a signal during
 * the start-up is not lost. */
static int serve(const efps_ps_config_t *cfg)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    efps_server_t *srv;
    if (efps_server_create(cfg, &srv) != EFPS_OK)
        return 1;
    if (efps_log_level() < EFPS_LOG_INFO) { /* at info the library logged it already */
        char line[512];
        efps_server_describe(srv, line, sizeof(line));
        fprintf(stderr, "efps-server: %s\n", line);
    }
    running = srv;
    if (signalled)
        efps_server_stop(srv);
    efps_status_t st = efps_server_run(srv);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    running = NULL;
    efps_server_destroy(srv);
    if (st == EFPS_ERR_STOPPED)
        fprintf(stderr, "efps-server: stopped by a signal before the workers finished\n");
    return st == EFPS_OK ? 0 : 1;
}

static int read_secret(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        cli_bad("--secret-file", path, "a readable file (%s)", strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    return 0;
}

/* The integer options: where each goes and its range. */
static int set_int(efps_ps_config_t *cfg, int c, const char *opt, const char *text)
{
    long v;
    int rc;
    switch (c) {
    case 'r':
        rc = cli_long(opt, text, 0, 65535, &v);
        cfg->rank = (int)v;
        return rc;
    case 'w':
        rc = cli_long(opt, text, 1, 65536, &v);
        cfg->num_workers = (int)v;
        return rc;
    case 'B':
        rc = cli_long(opt, text, 0, INT32_MAX, &v);
        cfg->block = v;
        return rc;
    case 'p':
        rc = cli_long(opt, text, 64, LONG_MAX, &v);
        cfg->partition_bytes = (size_t)v;
        return rc;
    default: /* 'T' */
        rc = cli_long(opt, text, 1, INT32_MAX, &v);
        cfg->timeout_ms = (int)v;
        return rc;
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"servers", required_argument, 0, 's'},
        {"rank", required_argument, 0, 'r'},
        {"workers", required_argument, 0, 'w'},
        {"bind", required_argument, 0, 'b'},
        {"transport", required_argument, 0, 't'},
        {"compressor", required_argument, 0, 'c'},
        {"block", required_argument, 0, 'B'},
        {"partition-bytes", required_argument, 0, 'p'},
        {"timeout-ms", required_argument, 0, 'T'},
        {"secret-file", required_argument, 0, 'S'},
        {"insecure", no_argument, 0, 'I'},
        {"port-file", required_argument, 0, 'P'},
        {"verbose", no_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static const char *const transports[] = {"auto", "tcp", "verbs", NULL};
    static const char *const compressors[] = {"none", "sign", "blocksign", NULL};
    efps_ps_config_t cfg;
    efps_ps_config_init(&cfg);
    cfg.role = EFPS_ROLE_SERVER;
    static char secret[1024];
    int c, li = -1, k;
    cli_init("efps-server");
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":s:r:w:b:t:c:B:p:T:S:P:vh", opts, &li)) != -1) {
        const char *opt = cli_opt_name(opts, li, c);
        li = -1;
        switch (c) {
        case 's':
            cfg.servers = optarg;
            break;
        case 'b':
            cfg.bind = optarg;
            break;
        case 't':
            if (cli_word(opt, optarg, transports, &k) != 0)
                return CLI_USAGE;
            cfg.transport = transports[k];
            break;
        case 'c':
            if (cli_word(opt, optarg, compressors, &k) != 0)
                return CLI_USAGE;
            cfg.compressor = compressors[k];
            break;
        case 'P':
            cfg.port_file = optarg;
            break;
        case 'I':
            cfg.insecure = 1;
            break;
        case 'v':
            efps_log_set_level(EFPS_LOG_INFO);
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'S':
            if (read_secret(optarg, secret, sizeof(secret)) != 0)
                return CLI_USAGE;
            cfg.secret = secret;
            break;
        case 'r':
        case 'w':
        case 'B':
        case 'p':
        case 'T':
            if (set_int(&cfg, c, opt, optarg) != 0)
                return CLI_USAGE;
            break;
        default:
            return cli_getopt_error(c, argv);
        }
    }
    if (optind < argc)
        return cli_unexpected(argv[optind]);
    return serve(&cfg);
}
