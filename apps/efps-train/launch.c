/* Local launch: S servers as forked children running efps_server_main on
 * 127.0.0.1 port 0 (their ports read back from EFPS_PORT_FILE), then M
 * workers, each this program exec'd again with --as-worker and its rank in
 * the environment (a fresh exec, so OpenBLAS starts clean in every worker).
 * Every child dies with the launcher (PR_SET_PDEATHSIG), and the launcher
 * stops every child as soon as one fails: nothing is left behind, nothing
 * hangs. */
#include "train.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CHILDREN 320

typedef struct {
    pid_t pid;
    int server; /* 1: a server, 0: a worker */
    int rank;
    int done;
} child_t;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    g_stop = sig;
}

/* A random shared secret for the handshake, unless the user gave one. */
static int make_secret(void)
{
    const char *s = getenv("EFPS_SECRET");
    if (s != NULL && *s != '\0')
        return 0;
    unsigned char raw[16];
    int fd = open("/dev/urandom", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, raw, sizeof(raw)) : -1;
    if (fd >= 0)
        close(fd);
    if (n != (ssize_t)sizeof(raw)) {
        fprintf(stderr, "efps-train: cannot read /dev/urandom for the shared secret\n");
        return -1;
    }
    char hex[2 * sizeof(raw) + 1];
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    return setenv("EFPS_SECRET", hex, 1);
}

/* Warns once about EFPS_* variables efps does not know (typos), here in the
 * launcher, then drops them from the environment the servers and workers
 * inherit, so that each does not warn again: they mean nothing to efps. */
static void check_env_once(void)
{
    extern char **environ;
    char unknown[16][64];
    int n = 0;
    if (efps_config_check_env() == 0)
        return;
    for (char **e = environ; *e != NULL && n < 16; e++) {
        size_t len = strcspn(*e, "=");
        if (strncmp(*e, "EFPS_", 5) != 0 || len >= sizeof(unknown[0]))
            continue;
        memcpy(unknown[n], *e, len);
        unknown[n][len] = '\0';
        if (efps_config_get(unknown[n]) == NULL)
            n++;
    }
    for (int i = 0; i < n; i++)
        unsetenv(unknown[i]);
}

static void child_setup(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
}

static int start_server(const train_opts_t *o, int s, const char *list, const char *port_file,
                        child_t *c)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        child_setup();
        efps_ps_config_t cfg;
        efps_ps_config_init(&cfg);
        cfg.role = EFPS_ROLE_SERVER;
        cfg.rank = s;
        cfg.num_workers = o->workers;
        cfg.servers = list;
        cfg.bind = "127.0.0.1:0";
        cfg.transport = o->transport;
        cfg.compressor = o->compressor;
        cfg.block = o->block;
        cfg.port_file = port_file;
        _exit(efps_server_main(&cfg));
    }
    *c = (child_t){.pid = pid, .server = 1, .rank = s};
    return 0;
}

/* The port server s wrote, or 0 when it died or took longer than 10 s. */
static unsigned read_port(const char *path, pid_t pid)
{
    for (int i = 0; i < 1000; i++) {
        unsigned port = 0;
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            if (fscanf(f, "%u", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (port != 0)
            return port;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return 0;
        usleep(10000);
    }
    return 0;
}

static int start_servers(const train_opts_t *o, child_t *kids, char *servers, size_t cap)
{
    char dir[] = "/tmp/efps-train.XXXXXX", path[64], list[1024] = "";
    if (mkdtemp(dir) == NULL)
        return -1;
    for (int s = 0; s < o->servers; s++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s127.0.0.1:0", s ? "," : "");
    int rc = 0;
    for (int s = 0; s < o->servers && rc == 0; s++) {
        snprintf(path, sizeof(path), "%s/port.%d", dir, s);
        rc = start_server(o, s, list, path, &kids[s]);
    }
    servers[0] = '\0';
    for (int s = 0; s < o->servers && rc == 0; s++) {
        snprintf(path, sizeof(path), "%s/port.%d", dir, s);
        unsigned port = read_port(path, kids[s].pid);
        if (port == 0) {
            fprintf(stderr, "efps-train: server %d did not start\n", s);
            rc = -1;
        }
        snprintf(servers + strlen(servers), cap - strlen(servers), "%s127.0.0.1:%u", s ? "," : "",
                 port);
    }
    for (int s = 0; s < o->servers; s++) {
        snprintf(path, sizeof(path), "%s/port.%d", dir, s);
        unlink(path);
    }
    rmdir(dir);
    return rc;
}

static int start_worker(int r, const train_opts_t *o, char **argv, child_t *c)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        child_setup();
        char rank[16], workers[16];
        snprintf(rank, sizeof(rank), "%d", r);
        snprintf(workers, sizeof(workers), "%d", o->workers);
        setenv("EFPS_ROLE", "worker", 1);
        setenv("EFPS_RANK", rank, 1);
        setenv("EFPS_NUM_WORKERS", workers, 1);
        execv("/proc/self/exe", argv);
        fprintf(stderr, "efps-train: cannot exec /proc/self/exe for worker %d: %s\n", r,
                strerror(errno));
        _exit(127);
    }
    *c = (child_t){.pid = pid, .server = 0, .rank = r};
    return 0;
}

static void stop_all(child_t *kids, int n)
{
    for (int i = 0; i < n; i++)
        if (!kids[i].done)
            kill(kids[i].pid, SIGKILL);
    for (int i = 0; i < n; i++)
        if (!kids[i].done) {
            waitpid(kids[i].pid, NULL, 0);
            kids[i].done = 1;
        }
}

/* Reaps children until all are done; the first failure stops the others. */
static int supervise(child_t *kids, int n)
{
    int left = n;
    while (left > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0 && errno == EINTR && g_stop) {
            fprintf(stderr, "efps-train: %s, stopping servers and workers\n", strsignal(g_stop));
            stop_all(kids, n);
            return 1;
        }
        if (pid < 0)
            continue;
        for (int i = 0; i < n; i++) {
            if (kids[i].pid != pid || kids[i].done)
                continue;
            kids[i].done = 1;
            left--;
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                break;
            if (WIFEXITED(status))
                fprintf(stderr, "efps-train: %s %d exited with status %d; stopping the rest\n",
                        kids[i].server ? "server" : "worker", kids[i].rank, WEXITSTATUS(status));
            else
                fprintf(stderr, "efps-train: %s %d killed by %s; stopping the rest\n",
                        kids[i].server ? "server" : "worker", kids[i].rank,
                        strsignal(WTERMSIG(status)));
            stop_all(kids, n);
            return 1;
        }
    }
    return 0;
}

/* argv for the workers: ours plus --as-worker. */
static char **worker_argv(int argc, char **argv)
{
    char **wargv = calloc((size_t)argc + 2, sizeof(char *));
    if (wargv == NULL)
        return NULL;
    for (int i = 0; i < argc; i++)
        wargv[i] = argv[i];
    wargv[argc] = "--as-worker";
    return wargv;
}

int train_launch(const train_opts_t *o, int argc, char **argv)
{
    child_t kids[MAX_CHILDREN];
    char servers[1024];
    for (int i = 0; i < MAX_CHILDREN; i++)
        kids[i] = (child_t){.done = 1}; /* nothing to stop until started */
    char **wargv = worker_argv(argc, argv);
    if (wargv == NULL || o->workers + o->servers > MAX_CHILDREN || make_secret() != 0)
        return 1;
    check_env_once();
    /* Training holds every worker between steps while rank 0 evaluates:
     * give peers longer than the library's default before declaring them dead. */
    setenv("EFPS_TIMEOUT_MS", "120000", 0);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int n = o->servers, rc = 0;
    if (start_servers(o, kids, servers, sizeof(servers)) != 0)
        rc = 1;
    else
        setenv("EFPS_SERVERS", servers, 1);
    for (int r = 0; r < o->workers && rc == 0; r++, n++)
        if (start_worker(r, o, wargv, &kids[n]) != 0) {
            fprintf(stderr, "efps-train: cannot fork worker %d: %s\n", r, strerror(errno));
            rc = 1;
        }
    if (rc != 0)
        stop_all(kids, n);
    else
        rc = supervise(kids, n);
    free(wargv);
    return rc;
}
