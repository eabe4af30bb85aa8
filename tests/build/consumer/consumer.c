/* A program of someone else's, built against an installed efps: one server
 * in a thread and two workers in two more train one tensor on loopback
 * (the shared secret comes from EFPS_SECRET). Exit 0 when both workers end
 * with the same parameters and every call succeeded. */
#include <efps/efps.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

enum { N = 4096, STEPS = 3, WORKERS = 2 };

typedef struct {
    char servers[64];
    int rank;
    efps_status_t st;
    float x[N];
} worker_t;

static efps_ps_config_t config(efps_role_t role, int rank, const char *servers)
{
    efps_ps_config_t cfg;
    efps_ps_config_init(&cfg);
    cfg.role = role;
    cfg.rank = rank;
    cfg.num_workers = WORKERS;
    cfg.servers = servers;
    cfg.transport = "tcp";
    cfg.compressor = "blocksign";
    return cfg;
}

static void *serve(void *srv)
{
    static efps_status_t st;
    st = efps_server_run(srv);
    return &st;
}

static void *work(void *p)
{
    worker_t *w = p;
    efps_ps_config_t cfg = config(EFPS_ROLE_WORKER, w->rank, w->servers);
    cfg.momentum = 0.9f;
    efps_ps_t *ps;
    if ((w->st = efps_ps_init(&cfg, &ps)) != EFPS_OK)
        return NULL;
    static float g[WORKERS][N];
    for (int i = 0; i < N; i++)
        g[w->rank][i] = (float)(i % 7) - 3.0f + 0.5f * (float)w->rank;
    w->st = efps_ps_declare(ps, 1, N);
    for (int t = 0; t < STEPS && w->st == EFPS_OK; t++)
        if ((w->st = efps_ps_push(ps, 1, g[w->rank], 0.1f)) == EFPS_OK)
            w->st = efps_ps_pull(ps, 1, w->x);
    efps_status_t fin = efps_ps_finalize(ps);
    if (w->st == EFPS_OK)
        w->st = fin;
    return NULL;
}

int main(void)
{
    printf("efps %s (headers %s), protocol %u\n", efps_version(), EFPS_VERSION_STRING,
           efps_ps_protocol_version());
    efps_ps_config_t cfg = config(EFPS_ROLE_SERVER, 0, "127.0.0.1:0");
    efps_server_t *srv;
    efps_status_t st = efps_server_create(&cfg, &srv);
    if (st != EFPS_OK) {
        fprintf(stderr, "server: %s\n", efps_strerror(st));
        return 1;
    }
    pthread_t ts, tw[WORKERS];
    static worker_t w[WORKERS];
    pthread_create(&ts, NULL, serve, srv);
    for (int r = 0; r < WORKERS; r++) {
        snprintf(w[r].servers, sizeof(w[r].servers), "127.0.0.1:%u", efps_server_port(srv));
        w[r].rank = r;
        pthread_create(&tw[r], NULL, work, &w[r]);
    }
    for (int r = 0; r < WORKERS; r++)
        pthread_join(tw[r], NULL);
    void *ret;
    pthread_join(ts, &ret);
    st = *(efps_status_t *)ret;
    efps_server_destroy(srv);
    for (int r = 0; r < WORKERS; r++)
        if (w[r].st != EFPS_OK) {
            fprintf(stderr, "worker %d: %s\n", r, efps_strerror(w[r].st));
            return 1;
        }
    if (st != EFPS_OK || memcmp(w[0].x, w[1].x, sizeof(w[0].x)) != 0 || w[0].x[1] == 0.0f) {
        fprintf(stderr, "server: %s; workers agree: %d\n", efps_strerror(st),
                memcmp(w[0].x, w[1].x, sizeof(w[0].x)) == 0);
        return 1;
    }
    printf("2 workers x %d steps of %d floats: ok, x[1] = %g\n", STEPS, N, (double)w[0].x[1]);
    return 0;
}
