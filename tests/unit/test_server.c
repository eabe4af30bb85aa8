/* The server as an object (efps_server_create/run/stop/destroy), embedded in
 * a program's thread: it serves workers running in other threads, and
 * efps_server_stop from another thread makes run return within milliseconds
 * whatever the server is doing, after which destroy frees everything (ASan
 * builds check that nothing leaks). */
#include "efps/ps.h"
#include "efps_internal/util.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

enum { N = 1000, STEPS = 5 };

static efps_ps_config_t config(efps_role_t role, int rank, const char *servers)
{
    efps_ps_config_t cfg;
    efps_ps_config_init(&cfg);
    cfg.role = role;
    cfg.rank = rank;
    cfg.num_workers = 2;
    cfg.servers = servers;
    cfg.transport = "tcp";
    cfg.secret = "test_server secret";
    cfg.compressor = "blocksign";
    cfg.timeout_ms = 20000; /* long: only a stop may end the idle tests */
    return cfg;
}

typedef struct {
    efps_server_t *srv;
    efps_status_t st;
    double returned;
} run_arg_t;

static void *run_thread(void *p)
{
    run_arg_t *a = p;
    a->st = efps_server_run(a->srv);
    a->returned = efps__now_s();
    return NULL;
}

static efps_server_t *make_server(void)
{
    efps_ps_config_t cfg = config(EFPS_ROLE_SERVER, 0, "127.0.0.1:0");
    efps_server_t *srv = NULL;
    assert_int_equal(efps_server_create(&cfg, &srv), EFPS_OK);
    assert_non_null(srv);
    assert_int_not_equal(efps_server_port(srv), 0);
    return srv;
}

/* Stopped while waiting for workers that never come: run returns at once. */
static void test_stop_idle(void **state)
{
    (void)state;
    run_arg_t a = {.srv = make_server(), .st = EFPS_OK};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_thread, &a), 0);
    usleep(200 * 1000);
    const double stopped = efps__now_s();
    efps_server_stop(a.srv);
    pthread_join(t, NULL);
    assert_int_equal(a.st, EFPS_ERR_STOPPED);
    assert_true(a.returned - stopped < 0.5);
    efps_server_destroy(a.srv);
}

/* A stop before run is not lost; an object runs once. */
static void test_stop_before_run(void **state)
{
    (void)state;
    efps_server_t *srv = make_server();
    efps_server_stop(srv);
    const double t0 = efps__now_s();
    assert_int_equal(efps_server_run(srv), EFPS_ERR_STOPPED);
    assert_true(efps__now_s() - t0 < 0.5);
    assert_int_equal(efps_server_run(srv), EFPS_ERR_STATE);
    efps_server_destroy(srv);
    efps_server_stop(NULL);
    efps_server_destroy(NULL);
    assert_int_equal(efps_server_run(NULL), EFPS_ERR_INVALID);
}

static void test_create_errors(void **state)
{
    (void)state;
    efps_ps_config_t cfg = config(EFPS_ROLE_WORKER, 0, "127.0.0.1:0");
    efps_server_t *srv = NULL;
    assert_int_equal(efps_server_create(&cfg, &srv), EFPS_ERR_INVALID); /* a worker's config */
    assert_null(srv);
    cfg.role = EFPS_ROLE_SERVER;
    assert_int_equal(efps_server_create(&cfg, NULL), EFPS_ERR_INVALID);
    efps_ps_t *ps = NULL;
    assert_int_equal(efps_ps_init(&cfg, &ps), EFPS_ERR_INVALID); /* a server's config */
    assert_null(ps);
}

typedef struct {
    char servers[64];
    int rank, steps;
    efps_status_t st, fin;
    float x[N];
} worker_arg_t;

/* Declares one key and runs `steps` push/pull steps of a fixed gradient. */
static void *worker_thread(void *p)
{
    worker_arg_t *a = p;
    efps_ps_config_t cfg = config(EFPS_ROLE_WORKER, a->rank, a->servers);
    cfg.momentum = 0.9f;
    efps_ps_t *ps = NULL;
    a->st = efps_ps_init(&cfg, &ps);
    if (a->st != EFPS_OK)
        return NULL;
    float g[N];
    for (int i = 0; i < N; i++)
        g[i] = (float)((i * 37 + a->rank * 11) % 19) - 9.0f;
    a->st = efps_ps_declare(ps, 7, N);
    for (int t = 0; t < a->steps && a->st == EFPS_OK; t++) {
        a->st = efps_ps_push(ps, 7, g, 0.01f);
        if (a->st == EFPS_OK)
            a->st = efps_ps_pull(ps, 7, a->x);
    }
    a->fin = efps_ps_finalize(ps);
    return NULL;
}

/* A server in one thread, two workers in two more. */
typedef struct {
    run_arg_t a;
    pthread_t st, wt[2];
    worker_arg_t w[2];
} job_t;

static void start_job(job_t *j, int steps)
{
    memset(j, 0, sizeof(*j));
    j->a.srv = make_server();
    j->a.st = EFPS_ERR_STATE;
    assert_int_equal(pthread_create(&j->st, NULL, run_thread, &j->a), 0);
    for (int r = 0; r < 2; r++) {
        worker_arg_t *w = &j->w[r];
        snprintf(w->servers, sizeof(w->servers), "127.0.0.1:%u", efps_server_port(j->a.srv));
        w->rank = r;
        w->steps = steps;
        assert_int_equal(pthread_create(&j->wt[r], NULL, worker_thread, w), 0);
    }
}

/* Two workers in threads train against the server in a third: every call
 * succeeds, both end with the same parameters, and run returns EFPS_OK. */
static void test_serve_threads(void **state)
{
    (void)state;
    static job_t j;
    start_job(&j, STEPS);
    for (int r = 0; r < 2; r++)
        pthread_join(j.wt[r], NULL);
    pthread_join(j.st, NULL);
    assert_int_equal(j.a.st, EFPS_OK);
    for (int r = 0; r < 2; r++) {
        assert_int_equal(j.w[r].st, EFPS_OK);
        assert_int_equal(j.w[r].fin, EFPS_OK);
    }
    assert_memory_equal(j.w[0].x, j.w[1].x, sizeof(j.w[0].x));
    int moved = 0;
    for (int i = 0; i < N; i++)
        moved += j.w[0].x[i] != 0.0f;
    assert_true(moved > N / 2);
    efps_server_destroy(j.a.srv);
}

/* Stopped mid-run with workers connected: run returns promptly, the workers
 * fail (they are not left hanging), and destroy frees every connection. */
static void test_stop_with_workers(void **state)
{
    (void)state;
    static job_t j;
    start_job(&j, 1000000);
    usleep(300 * 1000);
    const double stopped = efps__now_s();
    efps_server_stop(j.a.srv);
    pthread_join(j.st, NULL);
    assert_int_equal(j.a.st, EFPS_ERR_STOPPED);
    assert_true(j.a.returned - stopped < 0.5);
    efps_server_destroy(j.a.srv); /* closes the connections: the workers see it */
    for (int r = 0; r < 2; r++) {
        pthread_join(j.wt[r], NULL);
        assert_int_not_equal(j.w[r].st, EFPS_OK);
    }
}

int main(void)
{
    efps_log_set_level(EFPS_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_idle),         cmocka_unit_test(test_stop_before_run),
        cmocka_unit_test(test_create_errors),     cmocka_unit_test(test_serve_threads),
        cmocka_unit_test(test_stop_with_workers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
