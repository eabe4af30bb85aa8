/* The verbs transport where the machine decides: on a host without an RDMA
 * device (the build machines), "verbs" refuses with a message that says so
 * and "auto" falls back to tcp; with a device, "auto" picks verbs. Either
 * way a device that does not exist is refused by name, and "auto" does not
 * pick verbs for it. The control-message header encoding is checked here too.
 * Real verbs traffic is tested in the VM (tests/vm/verbs_tp_test.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/unit/tp_conformance.h" /* capture_start / capture_stop */
#include "transport/verbs/verbs_wire.h"

#include <fcntl.h>
#include <infiniband/verbs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Whether this machine has an RDMA device with an active port, asked of
 * libibverbs directly (not through the code under test). */
static bool have_active_device(void)
{
    int n = 0;
    bool found = false;
    struct ibv_device **list = ibv_get_device_list(&n);
    for (int i = 0; list != NULL && i < n && !found; i++) {
        struct ibv_context *c = ibv_open_device(list[i]);
        struct ibv_device_attr da;
        if (c == NULL)
            continue;
        for (uint8_t p = 1; ibv_query_device(c, &da) == 0 && p <= da.phys_port_cnt; p++) {
            struct ibv_port_attr pa;
            found |= ibv_query_port(c, p, &pa) == 0 && pa.state == IBV_PORT_ACTIVE;
        }
        ibv_close_device(c);
    }
    if (list != NULL)
        ibv_free_device_list(list);
    return found;
}

static void test_selection(void **state)
{
    (void)state;
    efps_tp_ctx_t *ctx = NULL;
    if (!have_active_device()) {
        capture_start();
        efps_status_t s = efps_tp_open("verbs", NULL, &ctx);
        char *log = capture_stop();
        assert_int_equal(s, EFPS_ERR_UNSUPPORTED);
        assert_null(ctx);
        assert_non_null(strstr(log, "no RDMA device"));
        assert_non_null(strstr(log, "tcp")); /* and what to use instead */
        assert_int_equal(efps_tp_open("auto", NULL, &ctx), EFPS_OK);
        assert_string_equal(efps_tp_name(ctx), "tcp");
    } else {
        assert_int_equal(efps_tp_open("auto", NULL, &ctx), EFPS_OK);
        assert_string_equal(efps_tp_name(ctx), "verbs");
    }
    efps_tp_close(ctx);
}

static void test_unknown_device(void **state)
{
    (void)state;
    efps_tp_attr_t attr = {.device = "no_such_hca7"};
    efps_tp_ctx_t *ctx = NULL;
    capture_start();
    efps_status_t s = efps_tp_open("verbs", &attr, &ctx);
    char *log = capture_stop();
    assert_int_equal(s, EFPS_ERR_UNSUPPORTED);
    assert_null(ctx);
    assert_non_null(strstr(log, "no_such_hca7"));
    /* auto does not take a transport that cannot use the named device */
    assert_int_equal(efps_tp_open("auto", &attr, &ctx), EFPS_OK);
    assert_string_equal(efps_tp_name(ctx), "tcp");
    efps_tp_close(ctx);
}

/* A key of the verbs transport travels like any other. */
static void test_verbs_rkey(void **state)
{
    (void)state;
    efps_tp_rkey_t k = {.base = 0x7f0012345000ull,
                        .length = 1 << 20,
                        .key = 0xabcdef,
                        .transport = 2,
                        .access = EFPS_TP_ACCESS_REMOTE_WRITE};
    uint8_t packed[EFPS_TP_RKEY_PACKED];
    efps_tp_rkey_t back;
    efps_tp_rkey_pack(&k, packed);
    assert_int_equal(efps_tp_rkey_unpack(packed, &back), EFPS_OK);
    assert_memory_equal(&back, &k, sizeof(k));
}

/* The immediates of control messages: every field survives at its limits,
 * and the type never leaks into the fields (or the other way round). */
static void test_ctrl_headers(void **state)
{
    (void)state;
    uint32_t imm = verbs_imm_credit(VERBS_CR_MAX_WRITES, 15);
    assert_int_equal(VERBS_IMM_TYPE(imm), VERBS_T_CREDIT);
    assert_int_equal(VERBS_IMM_CR_WRITES(imm), VERBS_CR_MAX_WRITES);
    assert_int_equal(VERBS_IMM_CR_MSGS(imm), 15);
    imm = verbs_imm_credit(65536, EFPS_TP_MSG_DEPTH);
    assert_int_equal(VERBS_IMM_CR_WRITES(imm), 65536); /* the largest rq_depth */
    assert_int_equal(VERBS_IMM_CR_MSGS(imm), EFPS_TP_MSG_DEPTH);
    imm = verbs_imm_credit(0, 0);
    assert_int_equal(VERBS_IMM_TYPE(imm), VERBS_T_CREDIT);
    assert_int_equal(VERBS_IMM_CR_WRITES(imm) | VERBS_IMM_CR_MSGS(imm), 0);
    imm = verbs_imm_msg(EFPS_TP_MSG_MAX);
    assert_int_equal(VERBS_IMM_TYPE(imm), VERBS_T_MSG);
    assert_int_equal(VERBS_IMM_MSG_LEN(imm), EFPS_TP_MSG_MAX);
    assert_int_equal(VERBS_IMM_TYPE(verbs_imm_type(VERBS_T_BYE)), VERBS_T_BYE);
    assert_int_equal(VERBS_IMM_TYPE(verbs_imm_type(VERBS_T_HELLO)), VERBS_T_HELLO);
    assert_int_equal(VERBS_IMM_TYPE(verbs_imm_type(VERBS_T_LEN)), VERBS_T_LEN);
    /* A whole message fits the chunks the receive buffers allow. */
    assert_true(VERBS_MSG_CHUNKS * VERBS_RX_BUF >= EFPS_TP_MSG_MAX);
    /* The connect header and the application's data fit an RC request. */
    assert_true(VERBS_REQ_HDR + EFPS_TP_PRIV_MAX <= VERBS_CM_REQ_PRIV);
    uint8_t b[8];
    efps__put_le(b, VERBS_WIRE_MAGIC, 4);
    assert_memory_equal(b, "EFPV", 4);
    assert_int_equal(efps__get_le(b, 4), VERBS_WIRE_MAGIC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selection),
        cmocka_unit_test(test_unknown_device),
        cmocka_unit_test(test_verbs_rkey),
        cmocka_unit_test(test_ctrl_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
