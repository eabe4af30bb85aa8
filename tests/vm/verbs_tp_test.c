/* The verbs transport on a real device (Soft-RoCE in the VM: run through
 * tests/vm/verbs_in_vm.sh). Both ends in this process on the device's own
 * address (rdma_cm loopback inside rxe), or a forked child where a process
 * has to die: writes of many sizes with the data checked (also longer than
 * the port's max_msg_sz), immediates and ordering, back-pressure on both
 * queues, many endpoints, private data and chunked messages, reject and
 * timeouts, and the failures we promise to report: a killed peer, a frozen
 * peer, a forged rkey (remote access error), a non-efps rdma_cm client,
 * an address that is not on the device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/unit/tp_conformance.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <pthread.h>
#include <rdma/rdma_cma.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *ip; /* the device's address: EFPSVM_IP */

/* ---- opening, regions ------------------------------------------------------ */
static void test_open_and_regions(void **state)
{
    (void)state;
    efps_tp_ctx_t *ctx = NULL;
    assert_int_equal(efps_tp_open("auto", NULL, &ctx), EFPS_OK);
    assert_string_equal(efps_tp_name(ctx), "verbs"); /* an active device exists */
    efps_tp_attr_t attr;
    efps_tp_query(ctx, &attr);
    assert_int_equal(attr.sq_depth, 64);
    assert_int_equal(attr.rq_depth, 256);
    efps_tp_close(ctx);

    efps_tp_attr_t wrong = {.device = "no_such_dev9"};
    ctx = NULL;
    capture_start();
    assert_int_equal(efps_tp_open("verbs", &wrong, &ctx), EFPS_ERR_UNSUPPORTED);
    char *log = capture_stop();
    assert_null(ctx);
    assert_non_null(strstr(log, "no_such_dev9"));

    pair_t p;
    pair_open(&p, 0, 0, 0);
    static uint8_t buf[10000];
    efps_tp_mr_t *mr = NULL, *src = NULL;
    assert_int_equal(efps_tp_mem_reg(p.srv, buf, sizeof(buf), EFPS_TP_ACCESS_REMOTE_WRITE, &mr),
                     EFPS_OK);
    efps_tp_rkey_t k = tpc_expose(p.sep, mr);
    assert_int_equal(k.transport, 2);
    assert_int_equal(k.base, (uint64_t)(uintptr_t)buf);
    uint8_t packed[EFPS_TP_RKEY_PACKED];
    efps_tp_rkey_t back;
    efps_tp_rkey_pack(&k, packed);
    assert_int_equal(efps_tp_rkey_unpack(packed, &back), EFPS_OK);
    assert_memory_equal(&back, &k, sizeof(back));
    /* A source-only region: registered with no access flags, nothing to expose. */
    assert_int_equal(efps_tp_mem_reg(p.srv, buf, 100, 0, &src), EFPS_OK);
    assert_int_equal(efps_tp_mem_expose(p.sep, src, &back), EFPS_ERR_INVALID);
    assert_int_equal(efps_tp_mem_dereg(src), EFPS_OK);
    pair_close(&p); /* frees mr */
}

/* Runs open("verbs") with one variable set (or unset), the old value restored. */
static efps_status_t open_with(const char *var, const char *value, efps_tp_ctx_t **ctx_p)
{
    const char *old = getenv(var);
    char *saved = old ? strdup(old) : NULL;
    if (value != NULL)
        setenv(var, value, 1);
    else
        unsetenv(var);
    efps_status_t s = efps_tp_open("verbs", NULL, ctx_p);
    if (saved != NULL)
        setenv(var, saved, 1);
    else
        unsetenv(var);
    free(saved);
    return s;
}

/* EFPS_IB_GID must be the GID the address maps to (rdma_cm picks it from
 * the address); EFPS_CPU_AFFINITY takes auto, none or a core. */
static void test_gid_and_affinity(void **state)
{
    (void)state;
    efps_tp_ctx_t *ctx = NULL;
    efps_tp_listener_t *l = NULL;
    char text[64];
    snprintf(text, sizeof(text), "%s:0", ip);
    /* Index 0 is rxe0's link-local GID, not the one of our IPv4 address. */
    assert_int_equal(open_with("EFPS_IB_GID", "0", &ctx), EFPS_OK);
    capture_start();
    assert_int_equal(efps_tp_listen(ctx, text, &l), EFPS_ERR_INVALID);
    char *log = capture_stop();
    assert_non_null(strstr(log, "EFPS_IB_GID=0"));
    efps_tp_close(ctx);
    ctx = NULL;
    assert_int_equal(open_with("EFPS_IB_GID", "4000", &ctx), EFPS_ERR_INVALID);
    assert_null(ctx);
    /* Without EFPS_IB_GID, rdma_cm's choice is taken (and logged). */
    assert_int_equal(open_with("EFPS_IB_GID", NULL, &ctx), EFPS_OK);
    assert_int_equal(efps_tp_listen(ctx, text, &l), EFPS_OK);
    efps_tp_listener_destroy(l);
    efps_tp_close(ctx);
    ctx = NULL;
    assert_int_equal(open_with("EFPS_CPU_AFFINITY", "bogus", &ctx), EFPS_ERR_INVALID);
    assert_int_equal(open_with("EFPS_CPU_AFFINITY", "99999", &ctx), EFPS_ERR_INVALID);
    assert_null(ctx);
    assert_int_equal(open_with("EFPS_CPU_AFFINITY", "1", &ctx), EFPS_OK); /* the VM has 2 */
    efps_tp_close(ctx);
    assert_int_equal(open_with("EFPS_CPU_AFFINITY", "none", &ctx), EFPS_OK);
    efps_tp_close(ctx);
}

/* An address that is not on the device: listening works (rdma_cm binds
 * loopback to no device), connecting says why it cannot. */
static void test_address_not_on_device(void **state)
{
    (void)state;
    efps_tp_ctx_t *ctx = tpc_open(0, 0, 2000);
    efps_tp_listener_t *l = NULL;
    assert_int_equal(efps_tp_listen(ctx, "127.0.0.1:0", &l), EFPS_OK);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", efps_tp_listener_port(l));
    efps_tp_ep_t *ep = NULL;
    capture_start();
    int64_t t0 = efps__now_ms();
    efps_status_t s = efps_tp_connect(ctx, addr, NULL, &ep);
    char *log = capture_stop();
    assert_true(s == EFPS_ERR_PEER || s == EFPS_ERR_TIMEOUT);
    assert_true((uint64_t)(efps__now_ms() - t0) < 5000);
    assert_null(ep);
    assert_non_null(strstr(log, "127.0.0.1"));
    efps_tp_listener_destroy(l);
    efps_tp_close(ctx);
}

/* Writes longer than rxe's max_msg_sz go as several requests plus a LEN
 * that takes a credit of its own: with a window of one they still go. */
static void test_split_writes_window_one(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, 4, 1, 0);
    size_t len = 9 * MIB;
    uint8_t *src = malloc(len), *dst = calloc(1, len);
    fill(src, len, 6);
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(p.cli, src, len, 0, &smr), EFPS_OK);
    assert_int_equal(efps_tp_mem_reg(p.srv, dst, len, EFPS_TP_ACCESS_REMOTE_WRITE, &dmr), EFPS_OK);
    efps_tp_rkey_t rk = tpc_expose(p.sep, dmr);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, len, &rk, 0, 40 + i, i), EFPS_OK);
    efps_tp_cqe_t c[3];
    for (uint32_t i = 0; i < 3; i++) {
        c[i] = poll_one(p.srv, 60000);
        assert_int_equal(c[i].imm, 40 + i);
        assert_int_equal(c[i].length, len);
    }
    assert_int_equal(poll_n(p.cli, c, 3, 60000), 3);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(c[i].status, EFPS_OK);
        assert_int_equal(c[i].context, i);
    }
    assert_memory_equal(dst, src, len);
    efps_tp_mem_dereg(smr);
    efps_tp_mem_dereg(dmr);
    pair_close(&p);
    free(src);
    free(dst);
}

/* Listening on every address ("*:port"): the device is known only per
 * request, and checked then. */
static void test_wildcard_listen(void **state)
{
    (void)state;
    pair_t p = {.srv = tpc_open(0, 0, 0), .cli = tpc_open(0, 0, 0)};
    assert_int_equal(efps_tp_listen(p.srv, "*:0", &p.listener), EFPS_OK);
    snprintf(p.addr, sizeof(p.addr), "%s:%u", ip, efps_tp_listener_port(p.listener));
    connector_t c;
    connector_start(&c, p.cli, p.addr, NULL);
    p.sep = accept_one(p.listener, "client", NULL);
    assert_int_equal(connector_join(&c), EFPS_OK);
    p.cep = c.ep;
    static uint8_t src[100], dst[100];
    fill(src, sizeof(src), 8);
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(p.cli, src, sizeof(src), 0, &smr), EFPS_OK);
    assert_int_equal(efps_tp_mem_reg(p.srv, dst, sizeof(dst), EFPS_TP_ACCESS_REMOTE_WRITE, &dmr),
                     EFPS_OK);
    efps_tp_rkey_t rk = tpc_expose(p.sep, dmr);
    write_and_wait(&p, smr, 0, sizeof(src), &rk, 0, 3);
    assert_memory_equal(dst, src, sizeof(src));
    efps_tp_mem_dereg(smr);
    efps_tp_mem_dereg(dmr);
    pair_close(&p);
}

/* A plain rdma_cm client that is not efps: refused, and the listener still
 * serves an efps client afterwards. */
static void test_foreign_client(void **state)
{
    (void)state;
    efps_tp_ctx_t *srv = tpc_open(0, 0, 0), *cli = tpc_open(0, 0, 0);
    char addr[64];
    efps_tp_listener_t *l = tpc_listen(srv, addr, sizeof(addr));

    struct rdma_event_channel *ch = rdma_create_event_channel();
    struct rdma_cm_id *id = NULL;
    struct rdma_cm_event *ev;
    assert_non_null(ch);
    assert_int_equal(rdma_create_id(ch, &id, NULL, RDMA_PS_TCP), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(efps_tp_listener_port(l))};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    assert_int_equal(rdma_resolve_addr(id, NULL, (struct sockaddr *)&sa, 5000), 0);
    assert_int_equal(rdma_get_cm_event(ch, &ev), 0);
    assert_int_equal(ev->event, RDMA_CM_EVENT_ADDR_RESOLVED);
    rdma_ack_cm_event(ev);
    assert_int_equal(rdma_resolve_route(id, 5000), 0);
    assert_int_equal(rdma_get_cm_event(ch, &ev), 0);
    assert_int_equal(ev->event, RDMA_CM_EVENT_ROUTE_RESOLVED);
    rdma_ack_cm_event(ev);
    struct ibv_qp_init_attr qa = {
        .cap = {.max_send_wr = 1, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1},
        .qp_type = IBV_QPT_RC};
    assert_int_equal(rdma_create_qp(id, NULL, &qa), 0);
    char junk[] = "GET / HTTP/1.0";
    struct rdma_conn_param cp = {.private_data = junk,
                                 .private_data_len = sizeof(junk),
                                 .retry_count = 7,
                                 .rnr_retry_count = 7};
    capture_start();
    assert_int_equal(rdma_connect(id, &cp), 0);
    assert_int_equal(rdma_get_cm_event(ch, &ev), 0);
    char *log = capture_stop();
    assert_int_equal(ev->event, RDMA_CM_EVENT_REJECTED);
    rdma_ack_cm_event(ev);
    assert_non_null(strstr(log, "not an efps verbs connection request"));
    efps_tp_conn_req_t *req;
    assert_int_equal(efps_tp_get_request(l, 0, &req), EFPS_ERR_TIMEOUT);
    rdma_destroy_qp(id);
    rdma_destroy_id(id);
    rdma_destroy_event_channel(ch);

    connector_t c;
    connector_start(&c, cli, addr, NULL);
    efps_tp_ep_t *sep = accept_one(l, "good", NULL);
    assert_int_equal(connector_join(&c), EFPS_OK);
    efps_tp_ep_destroy(c.ep);
    assert_int_equal(wait_disconnect(srv, sep, 10000, NULL).status, EFPS_OK);
    efps_tp_ep_destroy(sep);
    efps_tp_listener_destroy(l);
    efps_tp_close(cli);
    efps_tp_close(srv);
}

/* A key that the peer never registered: the NIC refuses the write (remote
 * access error); the writer's write completes with an error and both
 * endpoints go down with a message naming the peer. */
static void test_forged_rkey(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, 0, 0, 0);
    static uint8_t src[256], dst[256];
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(p.cli, src, sizeof(src), 0, &smr), EFPS_OK);
    assert_int_equal(efps_tp_mem_reg(p.srv, dst, sizeof(dst), EFPS_TP_ACCESS_REMOTE_WRITE, &dmr),
                     EFPS_OK);
    efps_tp_rkey_t forged = tpc_expose(p.sep, dmr);
    forged.key ^= 0x5a5a00;
    capture_start();
    assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, 64, &forged, 0, 1, 77), EFPS_OK);
    efps_tp_cqe_t w = poll_one(p.cli, 20000);
    efps_tp_cqe_t d = wait_disconnect(p.cli, p.cep, 20000, NULL);
    efps_tp_cqe_t sd = wait_disconnect(p.srv, p.sep, 20000, NULL);
    char *log = capture_stop();
    assert_int_equal(w.type, EFPS_TP_CQE_WRITE);
    assert_int_equal(w.context, 77);
    assert_int_equal(w.status, EFPS_ERR_PEER);
    assert_int_not_equal(d.status, EFPS_OK);
    assert_int_not_equal(sd.status, EFPS_OK);
    assert_non_null(strstr(log, "server ("));
    assert_non_null(strstr(log, "connection closed"));
    for (size_t i = 0; i < sizeof(dst); i++)
        assert_int_equal(dst[i], 0);
    efps_tp_mem_dereg(smr);
    efps_tp_mem_dereg(dmr);
    pair_close(&p);
}

/* Deregistering a region with a write still waiting on it is refused. */
static void test_dereg_in_use(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p, 8, 1, 0);
    static uint8_t src[64], dst[64];
    efps_tp_mr_t *smr, *dmr;
    assert_int_equal(efps_tp_mem_reg(p.cli, src, sizeof(src), 0, &smr), EFPS_OK);
    assert_int_equal(efps_tp_mem_reg(p.srv, dst, sizeof(dst), EFPS_TP_ACCESS_REMOTE_WRITE, &dmr),
                     EFPS_OK);
    efps_tp_rkey_t key = tpc_expose(p.sep, dmr);
    const efps_tp_rkey_t *rk = &key;
    /* Window 1: the second write waits for the receiver to poll the first. */
    assert_int_equal(efps_tp_write_imm(p.cep, smr, 0, 8, rk, 0, 1, 1), EFPS_OK);
    assert_int_equal(efps_tp_write_imm(p.cep, smr, 8, 8, rk, 8, 2, 2), EFPS_OK);
    efps_tp_cqe_t c = poll_one(p.cli, 5000);
    assert_int_equal(c.context, 1);
    assert_int_equal(efps_tp_mem_dereg(smr), EFPS_ERR_STATE);
    assert_int_equal(poll_one(p.srv, 5000).imm, 1);
    assert_int_equal(poll_one(p.cli, 5000).context, 2);
    assert_int_equal(poll_one(p.srv, 5000).imm, 2);
    assert_int_equal(efps_tp_mem_dereg(smr), EFPS_OK);
    efps_tp_mem_dereg(dmr);
    pair_close(&p);
}

/* What the conformance tests (tests/unit/tp_conformance.c) may expect of
 * verbs on Soft-RoCE. */
static const size_t write_sizes[] = {0, 1, 7, 4096, 65537, MIB, 9 * MIB, 17 * MIB};
static tpc_profile_t verbs_profile = {
    .transport = "verbs",
    .child_exec = true,
    .child_region = 4 * MIB,
    .wait_ms = 20000,
    .io_ms = 60000,
    /* 9 and 17 MiB are longer than rxe's max_msg_sz: several work requests. */
    .write_sizes = write_sizes,
    .n_write_sizes = sizeof(write_sizes) / sizeof(write_sizes[0]),
    .ordering_writes = 1000,
    .ordering_rq = 8,
    .n_endpoints = 12,
    /* Credits: a writer holds what the receiver has no room for, a sender
     * of messages says NO_RESOURCE (no RNR loop either way). */
    .writes_wait_for_credit = true,
    .msgs_wait_for_credit = true,
    .give_up_ms = 500,
    .refused_ms = 5000,
    .killed_ms = 10000,
    .late_accept_may_succeed = true, /* rdma_cm may tell of the connector's end later */
    .queued_request_dies_with_peer = false,
    .frozen_timeout_ms = 1500,
    .frozen_write = 4096, /* one-sided: it may even land */
    .frozen_write_flushed = false,
};

int main(int argc, char **argv)
{
    ip = getenv("EFPSVM_IP");
    verbs_profile.host = ip;
    tpc = &verbs_profile;
    if (argc == 4 && strcmp(argv[1], "--child") == 0 && ip != NULL)
        tpc_child_main(atoi(argv[2]), atoi(argv[3]));
    if (ip == NULL || *ip == '\0') {
        fprintf(stderr, "verbs_tp_test: EFPSVM_IP is not set: run me in the VM "
                        "(tests/vm/verbs_in_vm.sh)\n");
        return 2;
    }
    /* TPC_FILTER="*key_bound*" runs only the tests whose names match. */
    if (getenv("TPC_FILTER") != NULL)
        cmocka_set_test_filter(getenv("TPC_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tpc_test_peer_killed),
        cmocka_unit_test(tpc_test_peer_frozen),
        cmocka_unit_test(test_open_and_regions),
        cmocka_unit_test(test_address_not_on_device),
        cmocka_unit_test(test_gid_and_affinity),
        cmocka_unit_test(tpc_test_write_sizes),
        cmocka_unit_test(test_split_writes_window_one),
        cmocka_unit_test(tpc_test_ordering),
        cmocka_unit_test(tpc_test_send_queue_full),
        cmocka_unit_test(tpc_test_receive_backpressure),
        cmocka_unit_test(tpc_test_many_endpoints),
        cmocka_unit_test(tpc_test_private_data_and_messages),
        cmocka_unit_test(tpc_test_reject_and_timeouts),
        cmocka_unit_test(test_wildcard_listen),
        cmocka_unit_test(test_foreign_client),
        cmocka_unit_test(test_forged_rkey),
        cmocka_unit_test(test_dereg_in_use),
        cmocka_unit_test(tpc_test_close_with_everything_open),
        cmocka_unit_test(tpc_test_key_bound_to_connection),
        cmocka_unit_test(tpc_test_connect_before_listen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
