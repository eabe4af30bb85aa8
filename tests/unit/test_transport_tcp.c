/* The tcp transport, both ends in this process on 127.0.0.1 (or a forked
 * child where a process has to die): write_imm of many sizes with the data
 * checked, immediates and ordering, back-pressure on both queues, many
 * endpoints, private data and messages, and every fault we promise to
 * survive: a killed or frozen peer, garbage, truncated and out-of-bounds
 * headers, wrong keys, regions without remote-write access. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "efps/transport.h"
#include "transport/tcp/tcp_wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024u * 1024u)

/* ---- helpers -------------------------------------------------------------- */
static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

static efps_tp_ctx_t *open_tcp(uint32_t sq, uint32_t rq, uint32_t timeout_ms)
{
    efps_tp_attr_t attr = {.sq_depth = sq, .rq_depth = rq, .timeout_ms = timeout_ms};
    efps_tp_ctx_t *ctx = NULL;
    assert_int_equal(efps_tp_open("tcp", &attr, &ctx), EFPS_OK);
    assert_non_null(ctx);
    return ctx;
}

static efps_tp_listener_t *listen_local(efps_tp_ctx_t *ctx, char *addr, size_t cap)
{
    efps_tp_listener_t *l = NULL;
    assert_int_equal(efps_tp_listen(ctx, "127.0.0.1:0", &l), EFPS_OK);
    assert_true(efps_tp_listener_port(l) > 0);
    snprintf(addr, cap, "127.0.0.1:%u", efps_tp_listener_port(l));
    return l;
}

/* efps_tp_connect waits for the accept, so it runs in a thread of its own. */
typedef struct {
    pthread_t thread;
    efps_tp_ctx_t *ctx;
    char addr[64];
    efps_tp_conn_param_t param;
    efps_tp_ep_t *ep;
    efps_status_t status;
} connector_t;

static void *connector_main(void *arg)
{
    connector_t *c = arg;
    c->status = efps_tp_connect(c->ctx, c->addr, &c->param, &c->ep);
    return NULL;
}

static void connector_start(connector_t *c, efps_tp_ctx_t *ctx, const char *addr,
                            const efps_tp_conn_param_t *param)
{
    memset(c, 0, sizeof(*c));
    c->ctx = ctx;
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    if (param != NULL)
        c->param = *param;
    assert_int_equal(pthread_create(&c->thread, NULL, connector_main, c), 0);
}

static efps_status_t connector_join(connector_t *c)
{
    pthread_join(c->thread, NULL);
    return c->status;
}

typedef struct {
    efps_tp_ctx_t *srv, *cli;
    efps_tp_listener_t *listener;
    efps_tp_ep_t *sep, *cep; /* the server's and the client's end */
    char addr[64];
} pair_t;

static efps_tp_ep_t *accept_one(efps_tp_listener_t *l, const char *label, void *context)
{
    efps_tp_conn_req_t *req = NULL;
    assert_int_equal(efps_tp_get_request(l, 5000, &req), EFPS_OK);
    efps_tp_conn_param_t param = {.label = label, .context = context};
    efps_tp_ep_t *ep = NULL;
    assert_int_equal(efps_tp_accept(req, &param, &ep), EFPS_OK);
    return ep;
}

static void pair_open(pair_t *p, uint32_t sq, uint32_t rq, uint32_t timeout_ms)
{
    connector_t c;
    p->srv = open_tcp(sq, rq, timeout_ms);
    p->cli = open_tcp(sq, rq, timeout_ms);
    p->listener = listen_local(p->srv, p->addr, sizeof(p->addr));
    efps_tp_conn_param_t param = {.label = "server"};
    connector_start(&c, p->cli, p->addr, &param);
    p->sep = accept_one(p->listener, "client", NULL);
    assert_int_equal(connector_join(&c), EFPS_OK);
    p->cep = c.ep;
}

static void pair_close(pair_t *p)
{
    efps_tp_ep_destroy(p->cep);
    efps_tp_ep_destroy(p->sep);
    efps_tp_listener_destroy(p->listener);
    efps_tp_close(p->cli);
    efps_tp_close(p->srv);
}

/* Polls until want completions are collected or timeout_ms passes. */
static int poll_n(efps_tp_ctx_t *ctx, efps_tp_cqe_t *out, int want, int timeout_ms)
{
    int got = 0;
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    while (got < want) {
        uint64_t now = now_ms();
        if (now >= end)
            break;
        int n = 0;
        assert_int_equal(efps_tp_poll(ctx, out + got, want - got, (int)(end - now), &n), EFPS_OK);
        got += n;
    }
    return got;
}

static efps_tp_cqe_t poll_one(efps_tp_ctx_t *ctx, int timeout_ms)
{
    efps_tp_cqe_t cqe;
    assert_int_equal(poll_n(ctx, &cqe, 1, timeout_ms), 1);
    return cqe;
}

/* Waits for ep's DISCONNECT, skipping flushed writes of that endpoint. */
static efps_tp_cqe_t wait_disconnect(efps_tp_ctx_t *ctx, efps_tp_ep_t *ep, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = now_ms();
        assert_true(now < end);
        efps_tp_cqe_t cqe = poll_one(ctx, (int)(end - now));
        assert_ptr_equal(cqe.ep, ep);
        if (cqe.type == EFPS_TP_CQE_DISCONNECT)
            return cqe;
        assert_int_equal(cqe.type, EFPS_TP_CQE_WRITE);
    }
}

/* Writes and waits for both completions, checking what they say. */
static void write_and_wait(pair_t *p, efps_tp_mr_t *src, size_t soff, size_t len,
                           const efps_tp_rkey_t *dst, uint64_t doff, uint32_t imm)
{
    assert_int_equal(efps_tp_write_imm(p->cep, src, soff, len, dst, doff, imm, 1000 + imm),
                     EFPS_OK);
    efps_tp_cqe_t w = poll_one(p->cli, 20000);
    assert_int_equal(w.type, EFPS_TP_CQE_WRITE);
    assert_int_equal(w.status, EFPS_OK);
    assert_ptr_equal(w.ep, p->cep);
    assert_int_equal(w.context, 1000 + imm);
    assert_int_equal(w.length, len);
    efps_tp_cqe_t r = poll_one(p->srv, 20000);
    assert_int_equal(r.type, EFPS_TP_CQE_RECV);
    assert_int_equal(r.status, EFPS_OK);
    assert_ptr_equal(r.ep, p->sep);
    assert_int_equal(r.imm, imm);
    assert_int_equal(r.length, len);
}

/* Captures what the library logs to stderr between start and stop. */
static int saved_stderr = -1;
static char capture_path[64];

static void capture_start(void)
{
    snprintf(capture_path, sizeof(capture_path), "/tmp/efps-tp-log-%d", (int)getpid());
    int fd = open(capture_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    assert_true(fd >= 0);
    saved_stderr = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

static char *capture_stop(void)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    FILE *f = fopen(capture_path, "r");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(capture_path);
    fputs(buf, stderr); /* keep it visible in the test output */
    return buf;
}

/* ---- basic API ------------------------------------------------------------ */
static void test_open_names(void **state)
{
    (void)state;
    efps_tp_ctx_t *ctx = NULL;
    assert_int_equal(efps_tp_open("auto", NULL, &ctx), EFPS_OK);
    assert_true(strcmp(efps_tp_name(ctx), "tcp") == 0 || strcmp(efps_tp_name(ctx), "verbs") == 0);
    efps_tp_close(ctx);
    assert_int_equal(efps_tp_open("TCP", NULL, &ctx), EFPS_OK);
    assert_string_equal(efps_tp_name(ctx), "tcp");
    efps_tp_attr_t attr;
    efps_tp_query(ctx, &attr);
    assert_int_equal(attr.sq_depth, 64);
    assert_int_equal(attr.rq_depth, 256);
    assert_int_equal(attr.timeout_ms, 30000); /* EFPS_TIMEOUT_MS default */
    efps_tp_close(ctx);
    ctx = NULL;
    assert_int_equal(efps_tp_open("bogus", NULL, &ctx), EFPS_ERR_INVALID);
    assert_int_equal(efps_tp_open("verbs", NULL, &ctx), EFPS_ERR_UNSUPPORTED);
    assert_null(ctx);
    efps_tp_close(NULL);
}

static void test_rkey_pack(void **state)
{
    (void)state;
    efps_tp_ctx_t *ctx = open_tcp(0, 0, 0);
    static uint8_t buf[1000];
    efps_tp_mr_t *mr = NULL;
    assert_int_equal(efps_tp_mem_reg(ctx, buf, sizeof(buf), EFPS_TP_ACCESS_REMOTE_WRITE, &mr),
                     EFPS_OK);
    const efps_tp_rkey_t *k = efps_tp_mr_rkey(mr);
    assert_int_equal(k->length, sizeof(buf));
    assert_int_equal(k->access, EFPS_TP_ACCESS_REMOTE_WRITE);
    assert_true(k->base != 0); /* the random secret */
    uint8_t packed[EFPS_TP_RKEY_PACKED];
    efps_tp_rkey_pack(k, packed);
    assert_int_equal(packed[8], sizeof(buf) & 0xff); /* little-endian length */
    efps_tp_rkey_t back;
    assert_int_equal(efps_tp_rkey_unpack(packed, &back), EFPS_OK);
    assert_memory_equal(&back, k, sizeof(back));
    packed[20] = 77; /* no such transport */
    assert_int_equal(efps_tp_rkey_unpack(packed, &back), EFPS_ERR_CORRUPT);

    /* A second region gets another id and another secret. */
    efps_tp_mr_t *mr2 = NULL;
    assert_int_equal(efps_tp_mem_reg(ctx, buf, 10, 0, &mr2), EFPS_OK);
    assert_int_not_equal(efps_tp_mr_rkey(mr2)->key, k->key);
    assert_true(efps_tp_mr_rkey(mr2)->base != k->base);
    assert_int_equal(efps_tp_mem_reg(ctx, buf, 0, 0, &mr2), EFPS_ERR_INVALID);
    assert_int_equal(efps_tp_mem_reg(ctx, NULL, 10, 0, &mr2), EFPS_ERR_INVALID);
    assert_int_equal(efps_tp_mem_reg(ctx, buf, 10, 8, &mr2), EFPS_ERR_INVALID);
    assert_int_equal(efps_tp_mem_dereg(mr), EFPS_OK);
    efps_tp_close(ctx); /* frees mr2 */
}

static void test_bad_addresses(void **state)
{
    (void)state;
    efps_tp_ctx_t *ctx = open_tcp(0, 0, 2000);
    efps_tp_listener_t *l = NULL;
    efps_tp_ep_t *ep = NULL;
    assert_int_equal(efps_tp_listen(ctx, "127.0.0.1", &l), EFPS_ERR_INVALID);
    assert_int_equal(efps_tp_listen(ctx, "127.0.0.1:99999", &l), EFPS_ERR_INVALID);
    assert_int_equal(efps_tp_connect(ctx, ":7000", NULL, &ep), EFPS_ERR_INVALID);
    uint8_t big[EFPS_TP_PRIV_MAX + 1] = {0};
    efps_tp_conn_param_t param = {.priv = big, .priv_len = sizeof(big)};
    assert_int_equal(efps_tp_connect(ctx, "127.0.0.1:1", &param, &ep), EFPS_ERR_INVALID);
    assert_int_equal(efps_tp_listen(ctx, "[::1]:0", &l), EFPS_OK); /* IPv6 loopback */
    efps_tp_listener_destroy(l);
    efps_tp_close(ctx);
}

/* ---- data transfer -------------------------------------------------------- */
static void test_write_sizes(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, 0, 0, 0);
    size_t max = 64 * MIB, slack = 4096;
    uint8_t *src = malloc(max), *dst = malloc(max + 2 * slack);
    assert_non_null(src);
    assert_non_null(dst);
    fill(src, max, 1);
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(p.cli, src, max, 0, &smr), EFPS_OK);
    assert_int_equal(
        efps_tp_mem_reg(p.srv, dst, max + 2 * slack, EFPS_TP_ACCESS_REMOTE_WRITE, &dmr), EFPS_OK);
    const size_t sizes[] = {0, 1, 7, 4096, 65537, MIB, 64 * MIB};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t len = sizes[i], soff = len == max ? 0 : 3, doff = slack + 1;
        memset(dst, 0xA5, max + 2 * slack);
        double t0 = now_s();
        write_and_wait(&p, smr, soff, len, efps_tp_mr_rkey(dmr), doff, (uint32_t)(0xC0DE0000 + i));
        double dt = now_s() - t0;
        assert_memory_equal(dst + doff, src + soff, len);
        /* Not a byte more: the bytes around the target are untouched. */
        assert_int_equal(dst[doff - 1], 0xA5);
        assert_int_equal(dst[doff + len], 0xA5);
        if (len == 64 * MIB)
            printf("tcp transport: 64 MiB write_imm over loopback: %.3f s, %.0f MB/s\n", dt,
                   (double)len / dt / 1e6);
    }
    /* The very end of the region is writable, one byte further is not. */
    write_and_wait(&p, smr, 0, 100, efps_tp_mr_rkey(dmr), max + 2 * slack - 100, 5);
    assert_int_equal(
        efps_tp_write_imm(p.cep, smr, 0, 101, efps_tp_mr_rkey(dmr), max + 2 * slack - 100, 5, 0),
        EFPS_ERR_INVALID);
    assert_int_equal(efps_tp_mem_dereg(smr), EFPS_OK);
    assert_int_equal(efps_tp_mem_dereg(dmr), EFPS_OK);
    pair_close(&p);
    free(src);
    free(dst);
}

/* Many writes in flight: immediates arrive in posting order, and each
 * write's bytes are in place when its RECV is polled. */
static void test_ordering(void **state)
{
    (void)state;
    enum { N = 2000, CHUNK = 1000 };
    pair_t p;
    pair_open(&p, 16, 32, 0);
    uint8_t *src = malloc((size_t)N * CHUNK), *dst = calloc(N, CHUNK);
    fill(src, (size_t)N * CHUNK, 2);
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(p.cli, src, (size_t)N * CHUNK, 0, &smr), EFPS_OK);
    assert_int_equal(
        efps_tp_mem_reg(p.srv, dst, (size_t)N * CHUNK, EFPS_TP_ACCESS_REMOTE_WRITE, &dmr), EFPS_OK);
    int posted = 0, sent_done = 0, received = 0, retries = 0;
    efps_tp_cqe_t cqes[64];
    while (received < N) {
        while (posted < N) {
            /* Odd sizes, so frames straddle socket reads everywhere. */
            size_t len = CHUNK - (size_t)(posted % 7);
            efps_status_t s =
                efps_tp_write_imm(p.cep, smr, (size_t)posted * CHUNK, len, efps_tp_mr_rkey(dmr),
                                  (uint64_t)posted * CHUNK, (uint32_t)posted, (uint64_t)posted);
            if (s == EFPS_ERR_NO_RESOURCE) {
                retries++;
                break;
            }
            assert_int_equal(s, EFPS_OK);
            posted++;
        }
        int n = 0;
        assert_int_equal(efps_tp_poll(p.cli, cqes, 64, 0, &n), EFPS_OK);
        for (int i = 0; i < n; i++) {
            assert_int_equal(cqes[i].type, EFPS_TP_CQE_WRITE);
            assert_int_equal(cqes[i].status, EFPS_OK);
            assert_int_equal(cqes[i].context, (uint64_t)sent_done++);
        }
        assert_int_equal(efps_tp_poll(p.srv, cqes, 64, 1, &n), EFPS_OK);
        for (int i = 0; i < n; i++, received++) {
            assert_int_equal(cqes[i].type, EFPS_TP_CQE_RECV);
            assert_int_equal(cqes[i].imm, (uint32_t)received);
            size_t len = CHUNK - (size_t)(received % 7);
            assert_int_equal(cqes[i].length, len);
            assert_memory_equal(dst + (size_t)received * CHUNK, src + (size_t)received * CHUNK,
                                len);
        }
    }
    assert_true(retries > 0); /* the send queue (16) did fill up */
    efps_tp_mem_dereg(smr);
    efps_tp_mem_dereg(dmr);
    pair_close(&p);
    free(src);
    free(dst);
}

/* A full send queue says NO_RESOURCE; polling one WRITE frees one slot. */
static void test_send_queue_full(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, 4, 0, 0);
    static uint8_t src[64], dst[64];
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(p.cli, src, sizeof(src), 0, &smr), EFPS_OK);
    assert_int_equal(efps_tp_mem_reg(p.srv, dst, sizeof(dst), EFPS_TP_ACCESS_REMOTE_WRITE, &dmr),
                     EFPS_OK);
    const efps_tp_rkey_t *rk = efps_tp_mr_rkey(dmr);
    for (int i = 0; i < 4; i++)
        assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, 8, rk, 0, (uint32_t)i, (uint64_t)i),
                         EFPS_OK);
    assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, 8, rk, 0, 4, 4), EFPS_ERR_NO_RESOURCE);
    sleep_ms(100); /* sent long ago, but not polled: still no room */
    assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, 8, rk, 0, 4, 4), EFPS_ERR_NO_RESOURCE);
    efps_tp_cqe_t c = poll_one(p.cli, 5000);
    assert_int_equal(c.type, EFPS_TP_CQE_WRITE);
    assert_int_equal(c.context, 0);
    assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, 8, rk, 0, 4, 4), EFPS_OK);
    assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, 8, rk, 0, 5, 5), EFPS_ERR_NO_RESOURCE);
    efps_tp_cqe_t rest[8];
    assert_int_equal(poll_n(p.cli, rest, 4, 5000), 4);
    assert_int_equal(poll_n(p.srv, rest, 5, 5000), 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(rest[i].imm, (uint32_t)i);
    efps_tp_mem_dereg(smr);
    efps_tp_mem_dereg(dmr);
    pair_close(&p);
}

/* A receiver that does not poll holds back its writers: at most rq_depth
 * arrivals wait, the rest stay in the network until it polls. */
static void test_receive_backpressure(void **state)
{
    (void)state;
    enum { N = 20, RQ = 4 };
    pair_t p;
    pair_open(&p, 64, RQ, 0);
    static uint8_t src[N * 16], dst[N * 16];
    fill(src, sizeof(src), 3);
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(p.cli, src, sizeof(src), 0, &smr), EFPS_OK);
    assert_int_equal(efps_tp_mem_reg(p.srv, dst, sizeof(dst), EFPS_TP_ACCESS_REMOTE_WRITE, &dmr),
                     EFPS_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(efps_tp_write_imm(p.cep, smr, (size_t)i * 16, 16, efps_tp_mr_rkey(dmr),
                                           (uint64_t)i * 16, (uint32_t)i, 0),
                         EFPS_OK);
    efps_tp_cqe_t c[N];
    assert_int_equal(poll_n(p.cli, c, N, 5000), N); /* all handed to the kernel */
    sleep_ms(1000); /* ample time to take everything, were it allowed to */
    /* What was not announced was not written either (checked before the
     * poll below gives credit back and lets the rest in). */
    for (size_t i = RQ * 16; i < sizeof(dst); i++)
        assert_int_equal(dst[i], 0);
    int n = 0;
    assert_int_equal(efps_tp_poll(p.srv, c, N, 0, &n), EFPS_OK);
    assert_int_equal(n, RQ);
    assert_int_equal(poll_n(p.srv, c + RQ, N - RQ, 5000), N - RQ);
    for (int i = 0; i < N; i++)
        assert_int_equal(c[i].imm, (uint32_t)i);
    assert_memory_equal(dst, src, sizeof(src));
    efps_tp_mem_dereg(smr);
    efps_tp_mem_dereg(dmr);
    pair_close(&p);
}

/* Many clients into one server; each endpoint's context says who it is. */
static void test_many_endpoints(void **state)
{
    (void)state;
    enum { M = 24, SLOT = 4096 };
    efps_tp_ctx_t *srv = open_tcp(0, 0, 0), *cli = open_tcp(0, 0, 0);
    char addr[64];
    efps_tp_listener_t *l = listen_local(srv, addr, sizeof(addr));
    efps_tp_ep_t *sep[M], *cep[M];
    for (int i = 0; i < M; i++) {
        connector_t c;
        uint32_t rank = (uint32_t)i;
        efps_tp_conn_param_t param = {.priv = &rank, .priv_len = sizeof(rank)};
        connector_start(&c, cli, addr, &param);
        efps_tp_conn_req_t *req;
        assert_int_equal(efps_tp_get_request(l, 5000, &req), EFPS_OK);
        size_t len;
        const uint32_t *r = efps_tp_req_priv(req, &len);
        assert_int_equal(len, sizeof(uint32_t));
        assert_int_equal(*r, rank);
        char label[32];
        snprintf(label, sizeof(label), "worker %u", *r);
        efps_tp_conn_param_t ap = {.label = label, .context = (void *)(intptr_t)(*r + 1)};
        assert_int_equal(efps_tp_accept(req, &ap, &sep[i]), EFPS_OK);
        assert_int_equal(connector_join(&c), EFPS_OK);
        cep[i] = c.ep;
    }
    uint8_t *src = malloc((size_t)M * SLOT), *dst = calloc(M, SLOT);
    fill(src, (size_t)M * SLOT, 4);
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(cli, src, (size_t)M * SLOT, 0, &smr), EFPS_OK);
    assert_int_equal(efps_tp_mem_reg(srv, dst, (size_t)M * SLOT, EFPS_TP_ACCESS_REMOTE_WRITE, &dmr),
                     EFPS_OK);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < M; i++)
            assert_int_equal(efps_tp_write_imm(cep[i], smr, (size_t)i * SLOT, SLOT,
                                               efps_tp_mr_rkey(dmr), (uint64_t)i * SLOT,
                                               (uint32_t)(round * 1000 + i), 0),
                             EFPS_OK);
        efps_tp_cqe_t c[M];
        assert_int_equal(poll_n(cli, c, M, 10000), M);
        assert_int_equal(poll_n(srv, c, M, 10000), M);
        int seen[M] = {0};
        for (int i = 0; i < M; i++) {
            intptr_t who = (intptr_t)efps_tp_ep_context(c[i].ep) - 1;
            assert_true(who >= 0 && who < M);
            assert_ptr_equal(c[i].ep, sep[who]);
            assert_int_equal(c[i].imm, (uint32_t)(round * 1000 + who));
            seen[who]++;
        }
        for (int i = 0; i < M; i++)
            assert_int_equal(seen[i], 1);
    }
    assert_memory_equal(dst, src, (size_t)M * SLOT);
    char expect[32];
    snprintf(expect, sizeof(expect), "worker %d (127.0.0.1:", M - 1);
    assert_non_null(strstr(efps_tp_ep_name(sep[M - 1]), expect));
    for (int i = 0; i < M; i++) {
        efps_tp_ep_destroy(cep[i]);
        efps_tp_ep_destroy(sep[i]);
    }
    efps_tp_mem_dereg(smr);
    efps_tp_mem_dereg(dmr);
    efps_tp_listener_destroy(l);
    efps_tp_close(cli);
    efps_tp_close(srv);
    free(src);
    free(dst);
}

/* ---- connection setup and messages ---------------------------------------- */
static void test_private_data_and_messages(void **state)
{
    (void)state;
    efps_tp_ctx_t *srv = open_tcp(0, 0, 0), *cli = open_tcp(0, 0, 0);
    char addr[64];
    efps_tp_listener_t *l = listen_local(srv, addr, sizeof(addr));
    connector_t c;
    const char hello[] = "efps hello, rank 3";
    efps_tp_conn_param_t param = {.priv = hello, .priv_len = sizeof(hello), .label = "server 0"};
    connector_start(&c, cli, addr, &param);

    efps_tp_conn_req_t *req;
    assert_int_equal(efps_tp_get_request(l, 5000, &req), EFPS_OK);
    size_t len;
    assert_string_equal(efps_tp_req_priv(req, &len), hello);
    assert_int_equal(len, sizeof(hello));
    assert_non_null(strstr(efps_tp_req_peer(req), "127.0.0.1:"));
    const char welcome[] = "welcome, v1";
    efps_tp_conn_param_t ap = {.priv = welcome, .priv_len = sizeof(welcome), .label = "worker 3"};
    efps_tp_ep_t *sep;
    assert_int_equal(efps_tp_accept(req, &ap, &sep), EFPS_OK);
    assert_int_equal(connector_join(&c), EFPS_OK);
    efps_tp_ep_t *cep = c.ep;
    assert_string_equal(efps_tp_ep_peer_priv(cep, &len), welcome);
    assert_int_equal(len, sizeof(welcome));
    assert_string_equal(efps_tp_ep_peer_priv(sep, &len), hello);
    assert_int_equal(efps_tp_ep_status(cep), EFPS_OK);

    /* A two-round challenge-response over messages. */
    char buf[EFPS_TP_MSG_MAX];
    assert_int_equal(efps_tp_msg_recv(cep, buf, sizeof(buf), &len, 0), EFPS_ERR_TIMEOUT);
    assert_int_equal(efps_tp_msg_send(sep, "challenge 1234", 15), EFPS_OK);
    assert_int_equal(efps_tp_msg_recv(cep, buf, sizeof(buf), &len, 5000), EFPS_OK);
    assert_int_equal(len, 15);
    assert_string_equal(buf, "challenge 1234");
    assert_int_equal(efps_tp_msg_send(cep, "response 4321", 14), EFPS_OK);
    assert_int_equal(efps_tp_msg_recv(sep, buf, sizeof(buf), &len, 5000), EFPS_OK);
    assert_string_equal(buf, "response 4321");

    /* Messages are ordered with writes: once the message is here, so is
     * the write posted before it. */
    static uint8_t src[1 << 16], dst[1 << 16];
    fill(src, sizeof(src), 5);
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(cli, src, sizeof(src), 0, &smr), EFPS_OK);
    assert_int_equal(efps_tp_mem_reg(srv, dst, sizeof(dst), EFPS_TP_ACCESS_REMOTE_WRITE, &dmr),
                     EFPS_OK);
    assert_int_equal(efps_tp_write_imm(cep, smr, 0, sizeof(src), efps_tp_mr_rkey(dmr), 0, 99, 0),
                     EFPS_OK);
    assert_int_equal(efps_tp_msg_send(cep, "after the write", 16), EFPS_OK);
    assert_int_equal(efps_tp_msg_recv(sep, buf, sizeof(buf), &len, 5000), EFPS_OK);
    int n = 0;
    efps_tp_cqe_t cqe;
    assert_int_equal(efps_tp_poll(srv, &cqe, 1, 0, &n), EFPS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(cqe.imm, 99);
    assert_memory_equal(dst, src, sizeof(src));
    assert_int_equal(poll_n(cli, &cqe, 1, 5000), 1);

    /* More messages than the receiver holds: flow control, not loss. A
     * too-small buffer leaves the message queued and says its size. */
    for (int i = 0; i < 3 * EFPS_TP_MSG_DEPTH; i++) {
        char m[EFPS_TP_MSG_MAX];
        memset(m, 'a' + i % 26, sizeof(m));
        size_t mlen = 100 + (size_t)i * 100;
        efps_status_t s;
        uint64_t end = now_ms() + 5000;
        while ((s = efps_tp_msg_send(cep, m, mlen)) == EFPS_ERR_NO_RESOURCE && now_ms() < end)
            sleep_ms(1);
        assert_int_equal(s, EFPS_OK);
    }
    sleep_ms(100);
    assert_int_equal(efps_tp_msg_recv(sep, buf, 50, &len, 5000), EFPS_ERR_INVALID);
    assert_int_equal(len, 100);
    for (int i = 0; i < 3 * EFPS_TP_MSG_DEPTH; i++) {
        assert_int_equal(efps_tp_msg_recv(sep, buf, sizeof(buf), &len, 5000), EFPS_OK);
        assert_int_equal(len, 100 + (size_t)i * 100);
        assert_int_equal(buf[0], 'a' + i % 26);
        assert_int_equal(buf[len - 1], 'a' + i % 26);
    }
    assert_int_equal(efps_tp_msg_send(cep, buf, 0), EFPS_ERR_INVALID);
    assert_int_equal(efps_tp_msg_send(cep, buf, EFPS_TP_MSG_MAX + 1), EFPS_ERR_INVALID);

    /* A clean disconnect reads as one: status OK, then EFPS_ERR_PEER. */
    efps_tp_ep_destroy(cep);
    efps_tp_cqe_t d = wait_disconnect(srv, sep, 5000);
    assert_int_equal(d.status, EFPS_OK);
    assert_int_equal(efps_tp_ep_status(sep), EFPS_ERR_PEER);
    assert_int_equal(efps_tp_msg_send(sep, "x", 1), EFPS_ERR_PEER);
    assert_int_equal(efps_tp_msg_recv(sep, buf, sizeof(buf), &len, 1000), EFPS_ERR_PEER);
    efps_tp_ep_destroy(sep);
    efps_tp_mem_dereg(smr);
    efps_tp_mem_dereg(dmr);
    efps_tp_listener_destroy(l);
    efps_tp_close(cli);
    efps_tp_close(srv);
}

static void test_reject_refuse_timeout(void **state)
{
    (void)state;
    efps_tp_ctx_t *srv = open_tcp(0, 0, 0), *cli = open_tcp(0, 0, 0);
    char addr[64];
    efps_tp_listener_t *l = listen_local(srv, addr, sizeof(addr));
    connector_t c;
    connector_start(&c, cli, addr, NULL);
    efps_tp_conn_req_t *req;
    assert_int_equal(efps_tp_get_request(l, 5000, &req), EFPS_OK);
    efps_tp_reject(req);
    assert_int_equal(connector_join(&c), EFPS_ERR_PEER);

    /* The application holds the request and does not answer: the connector
     * gives up after its own timeout, and a late accept says it left. */
    efps_tp_conn_param_t param = {.timeout_ms = 300};
    uint64_t t0 = now_ms();
    connector_start(&c, cli, addr, &param);
    assert_int_equal(efps_tp_get_request(l, 5000, &req), EFPS_OK);
    assert_int_equal(connector_join(&c), EFPS_ERR_TIMEOUT);
    uint64_t dt = now_ms() - t0;
    assert_true(dt >= 290 && dt < 3000);
    sleep_ms(100);
    efps_tp_ep_t *ep = NULL;
    assert_int_equal(efps_tp_accept(req, NULL, &ep), EFPS_ERR_PEER);
    assert_null(ep);

    /* Nobody even looks: the request that was queued goes with its peer. */
    assert_int_equal(efps_tp_connect(cli, addr, &param, &ep), EFPS_ERR_TIMEOUT);
    sleep_ms(200);
    assert_int_equal(efps_tp_get_request(l, 0, &req), EFPS_ERR_TIMEOUT);

    /* Nothing listens on the port any more: refused at once. */
    efps_tp_listener_destroy(l);
    t0 = now_ms();
    assert_int_equal(efps_tp_connect(cli, addr, NULL, &ep), EFPS_ERR_PEER);
    assert_true(now_ms() - t0 < 2000);
    efps_tp_close(cli);
    efps_tp_close(srv);
}

/* ---- a peer process that dies or freezes ---------------------------------- */

/* The child side of the fork tests: connects to the parent, registers a
 * region and sends its key, then waits to be killed. */
static void child_main(int port_rd, int ready_wr)
{
    uint16_t port;
    if (read(port_rd, &port, sizeof(port)) != sizeof(port))
        _exit(2);
    efps_tp_ctx_t *ctx = NULL;
    efps_tp_attr_t attr = {.timeout_ms = 60000};
    if (efps_tp_open("tcp", &attr, &ctx) != EFPS_OK)
        _exit(3);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    efps_tp_ep_t *ep;
    if (efps_tp_connect(ctx, addr, NULL, &ep) != EFPS_OK)
        _exit(4);
    size_t size = 64 * MIB;
    void *buf = malloc(size);
    efps_tp_mr_t *mr;
    if (buf == NULL || efps_tp_mem_reg(ctx, buf, size, EFPS_TP_ACCESS_REMOTE_WRITE, &mr) != EFPS_OK)
        _exit(5);
    uint8_t key[EFPS_TP_RKEY_PACKED];
    efps_tp_rkey_pack(efps_tp_mr_rkey(mr), key);
    if (efps_tp_msg_send(ep, key, sizeof(key)) != EFPS_OK)
        _exit(6);
    char ok = 1;
    if (write(ready_wr, &ok, 1) != 1)
        _exit(7);
    for (;;)
        pause();
}

typedef struct {
    pid_t pid;
    efps_tp_ctx_t *ctx;
    efps_tp_listener_t *listener;
    efps_tp_ep_t *ep;
    efps_tp_rkey_t child_key;
} child_t;

/* Forks first (no threads in this process yet), then listens. */
static void child_start(child_t *ch, uint32_t timeout_ms)
{
    int port_pipe[2], ready_pipe[2];
    assert_int_equal(pipe(port_pipe), 0);
    assert_int_equal(pipe(ready_pipe), 0);
    fflush(NULL);
    ch->pid = fork();
    assert_true(ch->pid >= 0);
    if (ch->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
        close(port_pipe[1]);
        close(ready_pipe[0]);
        child_main(port_pipe[0], ready_pipe[1]);
    }
    close(port_pipe[0]);
    close(ready_pipe[1]);
    ch->ctx = open_tcp(0, 0, timeout_ms);
    char addr[64];
    ch->listener = listen_local(ch->ctx, addr, sizeof(addr));
    uint16_t port = efps_tp_listener_port(ch->listener);
    assert_int_equal(write(port_pipe[1], &port, sizeof(port)), sizeof(port));
    ch->ep = accept_one(ch->listener, "child", NULL);
    uint8_t key[EFPS_TP_RKEY_PACKED];
    size_t len;
    assert_int_equal(efps_tp_msg_recv(ch->ep, key, sizeof(key), &len, 20000), EFPS_OK);
    assert_int_equal(efps_tp_rkey_unpack(key, &ch->child_key), EFPS_OK);
    char ok;
    assert_int_equal(read(ready_pipe[0], &ok, 1), 1);
    close(port_pipe[1]);
    close(ready_pipe[0]);
}

static void child_reap(child_t *ch)
{
    kill(ch->pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(ch->pid, &status, 0), ch->pid);
    assert_true(WIFSIGNALED(status));
    efps_tp_ep_destroy(ch->ep);
    efps_tp_listener_destroy(ch->listener);
    efps_tp_close(ch->ctx);
}

static void test_peer_killed(void **state)
{
    (void)state;
    child_t ch;
    child_start(&ch, 60000);
    capture_start();
    uint64_t t0 = now_ms();
    kill(ch.pid, SIGKILL);
    efps_tp_cqe_t d = wait_disconnect(ch.ctx, ch.ep, 5000);
    uint64_t dt = now_ms() - t0;
    char *log = capture_stop();
    assert_int_equal(d.status, EFPS_ERR_PEER);
    assert_true(dt < 5000);
    assert_non_null(strstr(efps_tp_ep_name(ch.ep), "child (127.0.0.1:"));
    assert_non_null(strstr(log, "child (127.0.0.1:"));
    assert_non_null(strstr(log, "connection closed"));
    static uint8_t src[16];
    efps_tp_mr_t *mr;
    assert_int_equal(efps_tp_mem_reg(ch.ctx, src, sizeof(src), 0, &mr), EFPS_OK);
    assert_int_equal(efps_tp_write_imm(ch.ep, mr, 0, 16, &ch.child_key, 0, 1, 1), EFPS_ERR_PEER);
    assert_int_equal(efps_tp_ep_status(ch.ep), EFPS_ERR_PEER);
    efps_tp_mem_dereg(mr);
    child_reap(&ch);
}

/* A frozen peer (SIGSTOP: its kernel still acknowledges, its process says
 * nothing) is declared dead after the timeout, and a write stuck behind it
 * completes with an error instead of hanging. */
static void test_peer_frozen(void **state)
{
    (void)state;
    const uint32_t timeout = 800;
    child_t ch;
    child_start(&ch, timeout);
    size_t size = 64 * MIB;
    uint8_t *src = malloc(size);
    efps_tp_mr_t *mr;
    assert_int_equal(efps_tp_mem_reg(ch.ctx, src, size, 0, &mr), EFPS_OK);
    sleep_ms(2 * timeout); /* heartbeats keep an idle, live peer alive */
    assert_int_equal(efps_tp_ep_status(ch.ep), EFPS_OK);

    kill(ch.pid, SIGSTOP);
    capture_start();
    uint64_t t0 = now_ms();
    assert_int_equal(efps_tp_write_imm(ch.ep, mr, 0, size, &ch.child_key, 0, 7, 42), EFPS_OK);
    efps_tp_cqe_t w = poll_one(ch.ctx, 10000);
    efps_tp_cqe_t d = poll_one(ch.ctx, 10000);
    uint64_t dt = now_ms() - t0;
    char *log = capture_stop();
    assert_int_equal(w.type, EFPS_TP_CQE_WRITE);
    assert_int_equal(w.status, EFPS_ERR_PEER);
    assert_int_equal(w.context, 42);
    assert_int_equal(d.type, EFPS_TP_CQE_DISCONNECT);
    assert_int_equal(d.status, EFPS_ERR_TIMEOUT);
    assert_true(dt >= timeout / 2 && dt < 4 * timeout);
    assert_non_null(strstr(log, "child (127.0.0.1:"));
    assert_non_null(strstr(log, "silent"));
    printf("frozen peer detected after %llu ms (timeout %u ms)\n", (unsigned long long)dt, timeout);
    assert_int_equal(efps_tp_mem_dereg(mr), EFPS_OK);
    free(src);
    kill(ch.pid, SIGCONT);
    child_reap(&ch);
}

/* ---- hostile bytes on the wire -------------------------------------------- */
static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static void raw_send(int fd, const void *buf, size_t len)
{
    assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void raw_send_hdr(int fd, const tcp_hdr_t *h)
{
    uint8_t b[TCP_HDR_LEN];
    tcp_hdr_encode(h, b);
    raw_send(fd, b, sizeof(b));
}

/* True once the other side has closed the connection (EOF or reset). */
static bool raw_closed(int fd, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = now_ms();
        if (now >= end)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(end - now)) <= 0)
            continue;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
    }
}

/* A hand-made client: CONNECT, accepted by the server, ACCEPT read back. */
static int raw_client(efps_tp_listener_t *l, efps_tp_ep_t **sep_p)
{
    int fd = raw_connect(efps_tp_listener_port(l));
    tcp_hdr_t h = tcp_hdr_make(TCP_F_CONNECT, 0);
    raw_send_hdr(fd, &h);
    *sep_p = accept_one(l, "raw", NULL);
    uint8_t b[TCP_HDR_LEN];
    assert_int_equal(recv(fd, b, sizeof(b), MSG_WAITALL), TCP_HDR_LEN);
    tcp_hdr_decode(b, &h);
    assert_int_equal(h.magic, TCP_WIRE_MAGIC);
    assert_int_equal(h.type, TCP_F_ACCEPT);
    return fd;
}

/* After any abuse, the listener still serves a well-behaved client. */
static void assert_serves_good_client(efps_tp_ctx_t *srv, efps_tp_listener_t *l, efps_tp_mr_t *dmr)
{
    efps_tp_ctx_t *cli = open_tcp(0, 0, 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", efps_tp_listener_port(l));
    connector_t c;
    connector_start(&c, cli, addr, NULL);
    pair_t p = {.srv = srv, .cli = cli, .sep = accept_one(l, "good", NULL)};
    assert_int_equal(connector_join(&c), EFPS_OK);
    p.cep = c.ep;
    static uint8_t src[256];
    fill(src, sizeof(src), 9);
    efps_tp_mr_t *smr;
    assert_int_equal(efps_tp_mem_reg(cli, src, sizeof(src), 0, &smr), EFPS_OK);
    write_and_wait(&p, smr, 0, sizeof(src), efps_tp_mr_rkey(dmr), 0, 77);
    assert_memory_equal(efps_tp_mr_addr(dmr), src, sizeof(src));
    memset(efps_tp_mr_addr(dmr), 0, efps_tp_mr_length(dmr));
    efps_tp_ep_destroy(p.cep);
    efps_tp_cqe_t d = wait_disconnect(srv, p.sep, 5000);
    assert_int_equal(d.status, EFPS_OK);
    efps_tp_ep_destroy(p.sep);
    efps_tp_mem_dereg(smr);
    efps_tp_close(cli);
}

static void test_garbage_and_truncation(void **state)
{
    (void)state;
    efps_tp_ctx_t *srv = open_tcp(0, 0, 1000);
    char addr[64];
    efps_tp_listener_t *l = listen_local(srv, addr, sizeof(addr));
    static uint8_t dst[4096];
    efps_tp_mr_t *dmr;
    assert_int_equal(efps_tp_mem_reg(srv, dst, sizeof(dst), EFPS_TP_ACCESS_REMOTE_WRITE, &dmr),
                     EFPS_OK);
    uint16_t port = efps_tp_listener_port(l);

    /* Random bytes. */
    capture_start();
    int fd = raw_connect(port);
    uint8_t junk[1000];
    fill(junk, sizeof(junk), 11);
    raw_send(fd, junk, sizeof(junk));
    bool closed = raw_closed(fd, 5000);
    char *log = capture_stop();
    assert_true(closed);
    assert_non_null(strstr(log, "bad magic"));
    assert_non_null(strstr(log, "connection from 127.0.0.1:"));
    close(fd);
    assert_serves_good_client(srv, l, dmr);

    /* A truncated header, then the connection closed. */
    capture_start();
    fd = raw_connect(port);
    uint8_t b[TCP_HDR_LEN];
    tcp_hdr_t h = tcp_hdr_make(TCP_F_CONNECT, 0);
    tcp_hdr_encode(&h, b);
    raw_send(fd, b, 10);
    shutdown(fd, SHUT_WR);
    closed = raw_closed(fd, 5000);
    log = capture_stop();
    assert_true(closed);
    assert_non_null(strstr(log, "truncated frame header (10 of 40 bytes)"));
    close(fd);

    /* A truncated header on a connection left open: closed at the deadline. */
    capture_start();
    fd = raw_connect(port);
    raw_send(fd, b, 10);
    uint64_t t0 = now_ms();
    closed = raw_closed(fd, 5000);
    uint64_t dt = now_ms() - t0;
    log = capture_stop();
    assert_true(closed);
    assert_true(dt >= 500 && dt < 4000);
    assert_non_null(strstr(log, "no complete connection request within 1000 ms"));
    close(fd);

    /* A connection request with too much private data; a payload-less
     * connection that only sends a WRITE. */
    capture_start();
    fd = raw_connect(port);
    h = tcp_hdr_make(TCP_F_CONNECT, 1000);
    raw_send_hdr(fd, &h);
    closed = raw_closed(fd, 5000);
    close(fd);
    fd = raw_connect(port);
    h = tcp_hdr_make(TCP_F_WRITE, 4);
    h.region = efps_tp_mr_rkey(dmr)->key;
    h.secret = efps_tp_mr_rkey(dmr)->base;
    raw_send_hdr(fd, &h);
    raw_send(fd, "abcd", 4);
    bool closed2 = raw_closed(fd, 5000);
    close(fd);
    log = capture_stop();
    assert_true(closed && closed2);
    assert_non_null(strstr(log, "1000 bytes of private data"));
    assert_non_null(strstr(log, "unexpected WRITE frame"));
    for (size_t i = 0; i < sizeof(dst); i++)
        assert_int_equal(dst[i], 0);

    assert_serves_good_client(srv, l, dmr);
    efps_tp_mem_dereg(dmr);
    efps_tp_listener_destroy(l);
    efps_tp_close(srv);
}

/* Each bad header on an established connection: a logged error naming the
 * peer, that connection closed, not a byte stored, the listener fine. */
static void test_bad_write_headers(void **state)
{
    (void)state;
    efps_tp_ctx_t *srv = open_tcp(0, 0, 0);
    char addr[64];
    efps_tp_listener_t *l = listen_local(srv, addr, sizeof(addr));
    static uint8_t dst[4096], ro[4096];
    efps_tp_mr_t *dmr, *romr;
    assert_int_equal(efps_tp_mem_reg(srv, dst, sizeof(dst), EFPS_TP_ACCESS_REMOTE_WRITE, &dmr),
                     EFPS_OK);
    assert_int_equal(efps_tp_mem_reg(srv, ro, sizeof(ro), 0, &romr), EFPS_OK);
    const efps_tp_rkey_t *k = efps_tp_mr_rkey(dmr), *rok = efps_tp_mr_rkey(romr);

    enum { TO_RW, TO_RO, AS_IS }; /* whose id and secret a WRITE carries */
    struct {
        const char *what, *expect;
        int target;
        tcp_hdr_t h;
    } cases[] = {
        {"offset past the end",
         "outside region",
         TO_RW,
         {.type = TCP_F_WRITE, .length = 16, .offset = 4096}},
        {"length past the end",
         "outside region",
         TO_RW,
         {.type = TCP_F_WRITE, .length = 17, .offset = 4080}},
        {"offset + length wraps",
         "outside region",
         TO_RW,
         {.type = TCP_F_WRITE, .length = 16, .offset = UINT64_MAX - 7}},
        {"huge length", "outside region", TO_RW, {.type = TCP_F_WRITE, .length = UINT32_MAX}},
        {"unknown region",
         "does not exist",
         AS_IS,
         {.type = TCP_F_WRITE, .length = 16, .region = 999, .secret = 1}},
        {"wrong secret", "wrong key", AS_IS, {.type = TCP_F_WRITE, .length = 16}},
        {"no remote write",
         "does not allow remote writes",
         TO_RO,
         {.type = TCP_F_WRITE, .length = 16}},
        {"bad magic", "bad magic", TO_RW, {.magic = 0xdeadbeef, .type = TCP_F_WRITE, .length = 16}},
        {"bad version", "wire version 9", TO_RW, {.version = 9, .type = TCP_F_WRITE, .length = 16}},
        {"second CONNECT", "unexpected CONNECT", AS_IS, {.type = TCP_F_CONNECT}},
        {"unknown type", "unexpected unknown frame", AS_IS, {.type = 200}},
        {"oversized message", "message of 5000 bytes", AS_IS, {.type = TCP_F_MSG, .length = 5000}},
        {"PING with payload",
         "PING frame with a 16-byte payload",
         AS_IS,
         {.type = TCP_F_PING, .length = 16}},
        {"reserved bits",
         "reserved or unused",
         TO_RW,
         {.type = TCP_F_WRITE, .length = 16, .flags = 1}},
        {"MSG with a region",
         "reserved or unused",
         AS_IS,
         {.type = TCP_F_MSG, .length = 16, .region = 3}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tcp_hdr_t h = cases[i].h;
        if (h.magic == 0)
            h.magic = TCP_WIRE_MAGIC;
        if (h.version == 0)
            h.version = TCP_WIRE_VERSION;
        if (cases[i].target != AS_IS) {
            const efps_tp_rkey_t *t = cases[i].target == TO_RW ? k : rok;
            h.region = t->key;
            h.secret = t->base;
        } else if (h.type == TCP_F_WRITE && h.region == 0) {
            h.region = k->key;
            h.secret = k->base + 1;
        }
        efps_tp_ep_t *sep;
        int fd = raw_client(l, &sep);
        capture_start();
        raw_send_hdr(fd, &h);
        uint8_t payload[64];
        memset(payload, 0xEE, sizeof(payload));
        send(fd, payload, sizeof(payload), MSG_NOSIGNAL); /* may already be closed */
        efps_tp_cqe_t d = wait_disconnect(srv, sep, 5000);
        bool closed = raw_closed(fd, 5000);
        char *log = capture_stop();
        print_message("case %zu: %s\n", i, cases[i].what);
        assert_int_equal(d.status, EFPS_ERR_PROTO);
        assert_true(closed);
        assert_non_null(strstr(log, cases[i].expect));
        assert_non_null(strstr(log, "raw (127.0.0.1:"));
        for (size_t j = 0; j < sizeof(dst); j++)
            assert_true(dst[j] == 0 && ro[j] == 0);
        efps_tp_ep_destroy(sep);
        close(fd);
    }
    assert_serves_good_client(srv, l, dmr);
    efps_tp_mem_dereg(romr);
    efps_tp_mem_dereg(dmr);
    efps_tp_listener_destroy(l);
    efps_tp_close(srv);
}

/* The same refusals reached through the API with a forged key. */
static void test_forged_keys(void **state)
{
    (void)state;
    static uint8_t src[64], dst[64], ro[64];
    for (int forge = 0; forge < 3; forge++) {
        pair_t p;
        pair_open(&p, 0, 0, 0);
        efps_tp_mr_t *smr, *dmr, *romr;
        assert_int_equal(efps_tp_mem_reg(p.cli, src, sizeof(src), 0, &smr), EFPS_OK);
        assert_int_equal(
            efps_tp_mem_reg(p.srv, dst, sizeof(dst), EFPS_TP_ACCESS_REMOTE_WRITE, &dmr), EFPS_OK);
        assert_int_equal(efps_tp_mem_reg(p.srv, ro, sizeof(ro), 0, &romr), EFPS_OK);
        /* Honest use of a read-only key is refused before anything is sent. */
        assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, 8, efps_tp_mr_rkey(romr), 0, 0, 0),
                         EFPS_ERR_INVALID);
        assert_int_equal(efps_tp_write_imm(p.cep, smr, 60, 8, efps_tp_mr_rkey(dmr), 0, 0, 0),
                         EFPS_ERR_INVALID); /* local range outside its region */
        efps_tp_rkey_t k = *efps_tp_mr_rkey(forge == 2 ? romr : dmr);
        if (forge == 0)
            k.base ^= 1; /* a guessed secret */
        else if (forge == 1)
            k.length = 1 << 20; /* a key claiming a larger region */
        else
            k.access = EFPS_TP_ACCESS_REMOTE_WRITE; /* a key claiming write access */
        capture_start();
        assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, 8, &k, forge == 1 ? 4096 : 0, 0, 0),
                         EFPS_OK);
        efps_tp_cqe_t d = wait_disconnect(p.srv, p.sep, 5000);
        efps_tp_cqe_t dc = wait_disconnect(p.cli, p.cep, 5000);
        capture_stop();
        assert_int_equal(d.status, EFPS_ERR_PROTO);
        assert_int_equal(dc.status, EFPS_ERR_PEER);
        for (size_t j = 0; j < sizeof(dst); j++)
            assert_true(dst[j] == 0 && ro[j] == 0);
        efps_tp_mem_dereg(smr);
        efps_tp_mem_dereg(dmr);
        efps_tp_mem_dereg(romr);
        pair_close(&p);
    }
}

/* ---- regions in use --------------------------------------------------------- */
static void test_dereg_in_use(void **state)
{
    (void)state;
    /* The receiver holds one unpolled arrival (rq_depth 1), so the second,
     * large write waits in the network and its source stays in use. */
    pair_t p;
    pair_open(&p, 0, 1, 0);
    size_t big = 32 * MIB;
    uint8_t *src = malloc(big), *dst = malloc(big);
    fill(src, big, 6);
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(p.cli, src, big, 0, &smr), EFPS_OK);
    assert_int_equal(efps_tp_mem_reg(p.srv, dst, big, EFPS_TP_ACCESS_REMOTE_WRITE, &dmr), EFPS_OK);
    const efps_tp_rkey_t *k = efps_tp_mr_rkey(dmr);
    assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, 8, k, 0, 1, 1), EFPS_OK);
    assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, big, k, 0, 2, 2), EFPS_OK);
    sleep_ms(300);
    assert_int_equal(efps_tp_mem_dereg(smr), EFPS_ERR_STATE);
    efps_tp_cqe_t c[2];
    assert_int_equal(poll_n(p.srv, c, 2, 20000), 2);
    assert_int_equal(c[1].imm, 2);
    assert_memory_equal(dst, src, big);
    assert_int_equal(poll_n(p.cli, c, 2, 20000), 2);
    assert_int_equal(efps_tp_mem_dereg(smr), EFPS_OK);
    efps_tp_mem_dereg(dmr);
    pair_close(&p);

    /* A region deregistered while a write is landing in it: the writer's
     * connection is failed, dereg returns instead of waiting for the rest. */
    efps_tp_ctx_t *srv = open_tcp(0, 0, 0);
    char addr[64];
    efps_tp_listener_t *l = listen_local(srv, addr, sizeof(addr));
    assert_int_equal(efps_tp_mem_reg(srv, dst, big, EFPS_TP_ACCESS_REMOTE_WRITE, &dmr), EFPS_OK);
    efps_tp_ep_t *sep;
    int fd = raw_client(l, &sep);
    tcp_hdr_t h = tcp_hdr_make(TCP_F_WRITE, 1 << 20);
    h.region = efps_tp_mr_rkey(dmr)->key;
    h.secret = efps_tp_mr_rkey(dmr)->base;
    raw_send_hdr(fd, &h);
    raw_send(fd, src, 1000); /* and then nothing more */
    sleep_ms(200);
    capture_start();
    uint64_t t0 = now_ms();
    assert_int_equal(efps_tp_mem_dereg(dmr), EFPS_OK);
    assert_true(now_ms() - t0 < 2000);
    efps_tp_cqe_t d = wait_disconnect(srv, sep, 5000);
    char *log = capture_stop();
    assert_int_equal(d.status, EFPS_ERR_STATE);
    assert_non_null(strstr(log, "deregistered while a write into it was arriving"));
    assert_true(raw_closed(fd, 5000));
    close(fd);
    efps_tp_ep_destroy(sep);
    efps_tp_listener_destroy(l);
    efps_tp_close(srv);
    free(src);
    free(dst);
}

/* A connection reset while the receiver is not reading it (no credit):
 * noticed all the same, without the application polling. */
static void test_reset_while_throttled(void **state)
{
    (void)state;
    efps_tp_attr_t attr = {.rq_depth = 1};
    efps_tp_ctx_t *srv = NULL;
    assert_int_equal(efps_tp_open("tcp", &attr, &srv), EFPS_OK);
    char addr[64];
    efps_tp_listener_t *l = listen_local(srv, addr, sizeof(addr));
    static uint8_t dst[64];
    efps_tp_mr_t *dmr;
    assert_int_equal(efps_tp_mem_reg(srv, dst, sizeof(dst), EFPS_TP_ACCESS_REMOTE_WRITE, &dmr),
                     EFPS_OK);
    efps_tp_ep_t *sep;
    int fd = raw_client(l, &sep);
    for (uint32_t i = 1; i <= 2; i++) {
        tcp_hdr_t h = tcp_hdr_make(TCP_F_WRITE, 8);
        h.region = efps_tp_mr_rkey(dmr)->key;
        h.secret = efps_tp_mr_rkey(dmr)->base;
        h.imm = i;
        raw_send_hdr(fd, &h);
        raw_send(fd, "12345678", 8);
    }
    sleep_ms(200); /* the second write waits for credit */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    capture_start();
    close(fd); /* a reset, not a clean close */
    uint64_t end = now_ms() + 5000;
    while (efps_tp_ep_status(sep) == EFPS_OK && now_ms() < end)
        sleep_ms(10);
    char *log = capture_stop();
    assert_int_equal(efps_tp_ep_status(sep), EFPS_ERR_PEER);
    assert_non_null(strstr(log, "raw (127.0.0.1:"));
    efps_tp_cqe_t c[2];
    assert_int_equal(poll_n(srv, c, 2, 1000), 2);
    assert_int_equal(c[0].type, EFPS_TP_CQE_RECV);
    assert_int_equal(c[0].imm, 1);
    assert_int_equal(c[1].type, EFPS_TP_CQE_DISCONNECT);
    assert_int_equal(c[1].status, EFPS_ERR_PEER);
    efps_tp_ep_destroy(sep);
    efps_tp_mem_dereg(dmr);
    efps_tp_listener_destroy(l);
    efps_tp_close(srv);
}

/* close frees whatever is still open (ASan checks that nothing leaks). */
static void test_close_with_everything_open(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, 0, 0, 0);
    static uint8_t buf[4096], dst[4096];
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(p.cli, buf, sizeof(buf), 0, &smr), EFPS_OK);
    assert_int_equal(efps_tp_mem_reg(p.srv, dst, sizeof(dst), EFPS_TP_ACCESS_REMOTE_WRITE, &dmr),
                     EFPS_OK);
    for (int i = 0; i < 10; i++)
        assert_int_equal(
            efps_tp_write_imm(p.cep, smr, 0, 100, efps_tp_mr_rkey(dmr), 0, (uint32_t)i, 0),
            EFPS_OK);
    assert_int_equal(efps_tp_msg_send(p.cep, "left behind", 12), EFPS_OK);
    /* A pending request and a half-open handshake too. */
    int fd = raw_connect(efps_tp_listener_port(p.listener));
    tcp_hdr_t h = tcp_hdr_make(TCP_F_CONNECT, 0);
    raw_send_hdr(fd, &h);
    int fd2 = raw_connect(efps_tp_listener_port(p.listener));
    sleep_ms(100);
    efps_tp_close(p.cli);
    efps_tp_close(p.srv);
    close(fd);
    close(fd2);
}

/* ---- a rough speed reference ---------------------------------------------- */
typedef struct {
    int fd;
    uint8_t *buf;
    size_t len;
} sink_t;

static void *sink_main(void *arg)
{
    sink_t *s = arg;
    size_t got = 0;
    while (got < s->len) {
        ssize_t n = recv(s->fd, s->buf + got, s->len - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    s->len = got;
    return NULL;
}

/* 64 MiB by a plain blocking send/recv loop over loopback TCP, next to the
 * 64 MiB write_imm measured in test_write_sizes. Printed, not asserted. */
static void test_plain_socket_reference(void **state)
{
    (void)state;
    size_t size = 64 * MIB;
    uint8_t *src = malloc(size), *dst = malloc(size);
    fill(src, size, 8);
    memset(dst, 0, size); /* fault the pages in, as test_write_sizes did */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 1), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    int cfd = raw_connect(ntohs(a.sin_port));
    int sfd = accept(lfd, NULL, NULL);
    sink_t s = {.fd = sfd, .buf = dst, .len = size};
    pthread_t t;
    double t0 = now_s();
    pthread_create(&t, NULL, sink_main, &s);
    size_t sent = 0;
    while (sent < size) {
        ssize_t n = send(cfd, src + sent, size - sent, MSG_NOSIGNAL);
        assert_true(n > 0);
        sent += (size_t)n;
    }
    pthread_join(t, NULL);
    double dt = now_s() - t0;
    assert_int_equal(s.len, size);
    assert_memory_equal(dst, src, size);
    printf("plain send/recv:              64 MiB over loopback: %.3f s, %.0f MB/s\n", dt,
           (double)size / dt / 1e6);
    close(cfd);
    close(sfd);
    close(lfd);
    free(src);
    free(dst);
}

/* An optional argument runs only the tests whose names match it ("*frozen*"). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_names),
        cmocka_unit_test(test_rkey_pack),
        cmocka_unit_test(test_bad_addresses),
        cmocka_unit_test(test_peer_killed),
        cmocka_unit_test(test_peer_frozen),
        cmocka_unit_test(test_write_sizes),
        cmocka_unit_test(test_plain_socket_reference),
        cmocka_unit_test(test_ordering),
        cmocka_unit_test(test_send_queue_full),
        cmocka_unit_test(test_receive_backpressure),
        cmocka_unit_test(test_many_endpoints),
        cmocka_unit_test(test_private_data_and_messages),
        cmocka_unit_test(test_reject_refuse_timeout),
        cmocka_unit_test(test_garbage_and_truncation),
        cmocka_unit_test(test_bad_write_headers),
        cmocka_unit_test(test_forged_keys),
        cmocka_unit_test(test_dereg_in_use),
        cmocka_unit_test(test_reset_while_throttled),
        cmocka_unit_test(test_close_with_everything_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
