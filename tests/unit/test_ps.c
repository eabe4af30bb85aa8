/* lib/ps pieces that need no network: configuration from EFPS_* and the
 * launchers' variables, the server list, and the layout (partitioning and
 * placement), which every worker and server must compute identically. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "efps/compress.h"
#include "lib/ps/ps_int.h"

#include <stdlib.h>
#include <string.h>

static const char *const managed[] = {"EFPS_ROLE",
                                      "EFPS_RANK",
                                      "EFPS_NUM_WORKERS",
                                      "EFPS_SERVERS",
                                      "EFPS_BIND",
                                      "EFPS_BLOCK",
                                      "EFPS_COMPRESSOR",
                                      "EFPS_PARTITION_BYTES",
                                      "EFPS_TIMEOUT_MS",
                                      "OMPI_COMM_WORLD_RANK",
                                      "OMPI_COMM_WORLD_SIZE",
                                      "SLURM_PROCID",
                                      "SLURM_NTASKS",
                                      "RANK",
                                      "WORLD_SIZE",
                                      NULL};

static int clean_env(void **state)
{
    (void)state;
    for (int i = 0; managed[i]; i++)
        unsetenv(managed[i]);
    efps_log_set_level(EFPS_LOG_ERROR); /* the bad configs below log on purpose */
    return 0;
}

static efps_status_t resolve(efps_ps_config_t *out)
{
    efps_ps_config_t cfg;
    efps_ps_config_init(&cfg);
    return efps_ps_config_resolve(&cfg, out);
}

static void test_env_worker(void **state)
{
    (void)state;
    efps_ps_config_t o;
    setenv("EFPS_SERVERS", "a:1,b:2", 1);
    setenv("EFPS_RANK", "3", 1);
    setenv("EFPS_NUM_WORKERS", "4", 1);
    assert_int_equal(resolve(&o), EFPS_OK);
    assert_int_equal(o.role, EFPS_ROLE_WORKER);
    assert_int_equal(o.rank, 3);
    assert_int_equal(o.num_workers, 4);
    assert_string_equal(o.compressor, "blocksign");
    assert_int_equal(o.block, 0);
    assert_int_equal(o.partition_bytes, 4194304);
    assert_int_equal(o.timeout_ms, 30000);
}

static void test_struct_wins(void **state)
{
    (void)state;
    efps_ps_config_t cfg, o;
    setenv("EFPS_SERVERS", "a:1", 1);
    setenv("EFPS_RANK", "1", 1);
    setenv("EFPS_NUM_WORKERS", "4", 1);
    setenv("EFPS_BLOCK", "256", 1);
    efps_ps_config_init(&cfg);
    cfg.rank = 2;
    cfg.block = 64;
    cfg.compressor = "none";
    assert_int_equal(efps_ps_config_resolve(&cfg, &o), EFPS_OK);
    assert_int_equal(o.rank, 2);
    assert_int_equal(o.block, 64);
    assert_string_equal(o.compressor, "none");
}

static void test_launchers(void **state)
{
    (void)state;
    static const char *const vars[][2] = {{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                          {"SLURM_PROCID", "SLURM_NTASKS"},
                                          {"RANK", "WORLD_SIZE"}};
    for (int l = 0; l < 3; l++) {
        efps_ps_config_t o;
        clean_env(NULL);
        setenv("EFPS_SERVERS", "h:7000,h:7001", 1);
        /* No EFPS_ROLE: launcher ranks 0..S-1 serve, the rest train. */
        setenv(vars[l][0], "1", 1);
        setenv(vars[l][1], "6", 1);
        assert_int_equal(resolve(&o), EFPS_OK);
        assert_int_equal(o.role, EFPS_ROLE_SERVER);
        assert_int_equal(o.rank, 1);
        assert_int_equal(o.num_workers, 4);
        /* the address the workers are told, never every interface */
        assert_string_equal(o.bind, "h:7001");
        setenv(vars[l][0], "5", 1);
        assert_int_equal(resolve(&o), EFPS_OK);
        assert_int_equal(o.role, EFPS_ROLE_WORKER);
        assert_int_equal(o.rank, 3);
        /* With EFPS_ROLE=worker every launcher rank is a worker. */
        setenv("EFPS_ROLE", "worker", 1);
        assert_int_equal(resolve(&o), EFPS_OK);
        assert_int_equal(o.rank, 5);
        assert_int_equal(o.num_workers, 6);
        unsetenv("EFPS_ROLE");
    }
}

static void test_bad_config(void **state)
{
    (void)state;
    efps_ps_config_t o;
    assert_int_equal(resolve(&o), EFPS_ERR_INVALID); /* no servers */
    setenv("EFPS_SERVERS", "a:1", 1);
    assert_int_equal(resolve(&o), EFPS_ERR_INVALID); /* no rank */
    setenv("EFPS_RANK", "0", 1);
    assert_int_equal(resolve(&o), EFPS_ERR_INVALID); /* no worker count */
    setenv("EFPS_NUM_WORKERS", "2", 1);
    assert_int_equal(resolve(&o), EFPS_OK);
    setenv("EFPS_RANK", "2", 1);
    assert_int_equal(resolve(&o), EFPS_ERR_INVALID); /* rank out of range */
    setenv("EFPS_RANK", "x1", 1);
    assert_int_equal(resolve(&o), EFPS_ERR_INVALID);
    setenv("EFPS_RANK", "0", 1);
    setenv("EFPS_ROLE", "boss", 1);
    assert_int_equal(resolve(&o), EFPS_ERR_INVALID);
    setenv("EFPS_ROLE", "server", 1);
    setenv("EFPS_SERVERS", "nocolon", 1);
    assert_int_equal(resolve(&o), EFPS_ERR_INVALID); /* no port to bind */
    setenv("EFPS_SERVERS", "a:1", 1);
    setenv("EFPS_COMPRESSOR", "gzip", 1);
    assert_int_equal(resolve(&o), EFPS_ERR_INVALID);
    setenv("EFPS_COMPRESSOR", "sign", 1);
    setenv("EFPS_TIMEOUT_MS", "-5", 1);
    assert_int_equal(resolve(&o), EFPS_ERR_INVALID);
}

static void test_server_list(void **state)
{
    (void)state;
    char buf[32];
    assert_int_equal(ps_count_servers("a:1"), 1);
    assert_int_equal(ps_count_servers("a:1,b:2,[::1]:3"), 3);
    ps_server_entry("a:1,b:2,[::1]:3", 2, buf, sizeof(buf));
    assert_string_equal(buf, "[::1]:3");
    ps_server_entry("a:1,bbbbbbbbbb:2", 1, buf, 5);
    assert_string_equal(buf, "bbbb"); /* cut, still terminated */
    ps_server_entry("a:1,b:2", 5, buf, sizeof(buf));
    assert_string_equal(buf, ""); /* past the last entry: empty, not a NULL dereference */
}

/* Keys 7 (25000 elements), 9 (n9) with the run's block 100, then 5 (40
 * elements) with block5; partitions of 40100 bytes over 3 servers. */
static void layout_of_three(ps_layout_t *l, const efps_optim_config_t *oc, size_t n9, size_t block5)
{
    ps_layout_init(l, oc, 40100, 3);
    assert_int_equal(ps_layout_add(l, 7, 25000, 100), EFPS_OK);
    assert_int_equal(ps_layout_add(l, 9, n9, 100), EFPS_OK);
    assert_int_equal(ps_layout_add(l, 5, 40, block5), EFPS_OK);
    assert_int_equal(ps_layout_finish(l), EFPS_OK);
}

static void test_layout(void **state)
{
    (void)state;
    const efps_optim_config_t oc = {.compressor = EFPS_COMP_BLOCKSIGN, .block = 100};
    ps_layout_t l, same, other;
    /* 40100 bytes per part = 10025 elements, cut to whole blocks: 10000. */
    ps_layout_init(&l, &oc, 40100, 3);
    assert_int_equal(ps_layout_add(&l, 7, 25000, 100), EFPS_OK);
    assert_int_equal(ps_layout_add(&l, 9, 50, 100), EFPS_OK);
    assert_int_equal(ps_layout_add(&l, 7, 10, 100), EFPS_ERR_INVALID); /* duplicate */
    assert_int_equal(ps_layout_add(&l, 8, 0, 100), EFPS_ERR_INVALID);  /* empty */
    /* a key with its own block: its payload has one scale per 16 elements */
    assert_int_equal(ps_layout_add(&l, 5, 40, 16), EFPS_OK);
    assert_int_equal(ps_layout_finish(&l), EFPS_OK);
    assert_int_equal(l.nparts, 5);
    const ps_key_t *k5 = ps_layout_find(&l, 5);
    assert_non_null(k5);
    assert_int_equal(l.parts[k5->first_part].payload, efps_packed_size(40, 16));
    assert_int_equal(l.parts[3].payload, efps_packed_size(50, 100));
    const ps_key_t *k7 = ps_layout_find(&l, 7);
    assert_non_null(k7);
    assert_int_equal(k7->nparts, 3);
    size_t covered = 0;
    for (uint32_t p = k7->first_part; p < k7->first_part + k7->nparts; p++) {
        assert_int_equal(l.parts[p].off, covered);
        assert_true(l.parts[p].n % 100 == 0 || p == k7->first_part + k7->nparts - 1);
        /* on the wire: the payload and the header after it, no padding */
        assert_int_equal(l.parts[p].bytes, l.parts[p].payload + PS_TRAILER);
        assert_int_equal(l.parts[p].stride, efps_align_up(l.parts[p].bytes, 64));
        covered += l.parts[p].n;
    }
    assert_int_equal(covered, 25000);
    /* Least loaded first, lowest rank on ties: 0, 1, 2, then the smallest. */
    assert_int_equal(l.parts[0].server, 0);
    assert_int_equal(l.parts[1].server, 1);
    assert_int_equal(l.parts[2].server, 2);
    assert_int_equal(l.parts[3].server, 2); /* part 2 holds 5000 elements only */
    assert_null(ps_layout_find(&l, 8));

    char why[128];
    layout_of_three(&same, &oc, 50, 16);
    assert_false(ps_layout_differs(&l, &same, why, sizeof(why)));
    layout_of_three(&other, &oc, 51, 16);
    assert_true(ps_layout_differs(&l, &other, why, sizeof(why)));
    assert_non_null(strstr(why, "key 9 of 50"));
    ps_layout_free(&other);
    layout_of_three(&other, &oc, 50, 8); /* the same sizes, another block */
    assert_true(ps_layout_differs(&l, &other, why, sizeof(why)));
    assert_non_null(strstr(why, "(block 16)"));
    ps_layout_free(&l);
    ps_layout_free(&same);
    ps_layout_free(&other);
}

static void test_mac(void **state)
{
    (void)state;
    ps_hello_t a = {.magic = PS_MAGIC, .version = 1, .role = 1, .rank = 2, .num_workers = 4};
    ps_hello_t b = a;
    uint8_t m1[PS_MAC], m2[PS_MAC], m3[PS_MAC];
    ps_nonce(a.nonce);
    ps_nonce(b.nonce);
    assert_memory_not_equal(a.nonce, b.nonce, PS_NONCE);
    ps_mac("secret", "efps worker", &a, &b, m1);
    ps_mac("secret", "efps worker", &a, &b, m2);
    assert_true(ps_mac_equal(m1, m2));
    ps_mac("Secret", "efps worker", &a, &b, m3); /* another secret */
    assert_false(ps_mac_equal(m1, m3));
    ps_mac("secret", "efps server", &a, &b, m3); /* another role */
    assert_false(ps_mac_equal(m1, m3));
    b.rank = 3; /* a changed hello */
    ps_mac("secret", "efps worker", &a, &b, m3);
    assert_false(ps_mac_equal(m1, m3));
}

/* A LAYOUT message with these head fields. */
static size_t layout_msg(uint8_t *m, uint32_t comp, uint64_t block, uint64_t pbytes, uint64_t nkeys)
{
    efps_tp_rkey_t rk = {.transport = 1 /* tcp */, .length = 64};
    memset(m, 0, PS_LAYOUT_HEAD);
    efps__put_le32(m, PS_MSG_LAYOUT);
    efps__put_le32(m + 4, comp);
    efps__put_le64(m + 8, block);
    efps__put_le64(m + 16, pbytes);
    efps__put_le64(m + 24, nkeys);
    efps_tp_rkey_pack(&rk, m + 32);
    return PS_LAYOUT_HEAD;
}

/* A KEYS message of cnt keys, all of n elements and this block, ids from id0. */
static size_t keys_msg(uint8_t *m, uint32_t cnt, uint32_t id0, uint64_t n, uint64_t block)
{
    efps__put_le32(m, PS_MSG_KEYS);
    efps__put_le32(m + 4, cnt);
    for (uint32_t k = 0; k < cnt; k++) {
        efps__put_le32(m + 8 + PS_KEY_WIRE * k, id0 + k);
        efps__put_le64(m + 12 + PS_KEY_WIRE * k, n);
        efps__put_le64(m + 20 + PS_KEY_WIRE * k, block);
    }
    return 8 + PS_KEY_WIRE * (size_t)cnt;
}

/* Every number of a LAYOUT or KEYS message is bounded before use, and a
 * refusal names the field (issue 10, item 1). */
static void test_wire(void **state)
{
    (void)state;
    uint8_t m[EFPS_TP_MSG_MAX];
    char why[256];
    efps__layout_head_t h;
    size_t len = layout_msg(m, EFPS_COMP_BLOCKSIGN, 256, 4096, 3);
    assert_int_equal(efps__wire_layout_head(m, len, &h, why, sizeof(why)), EFPS_OK);
    assert_int_equal(h.nkeys, 3);
    assert_int_equal(h.partition_bytes, 4096);
    assert_int_equal(h.block, 256);
    static const struct {
        uint32_t comp;
        uint64_t block, pbytes, nkeys;
        const char *field;
    } bad[] = {
        {9, 0, 4096, 1, "compressor"},
        {0, 0, 0, 1, "partition_bytes"}, /* 0: the wrap of issue 10 */
        {0, 0, 63, 1, "partition_bytes"},
        {0, 0, UINT64_MAX, 1, "partition_bytes"},
        {0, 0, 4096, 0, "nkeys"},
        {0, 0, 4096, (1u << 24), "nkeys"}, /* no room reserved for it */
        {0, UINT64_MAX, 4096, 1, "block"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        len = layout_msg(m, bad[i].comp, bad[i].block, bad[i].pbytes, bad[i].nkeys);
        assert_int_equal(efps__wire_layout_head(m, len, &h, why, sizeof(why)), EFPS_ERR_PROTO);
        assert_non_null(strstr(why, bad[i].field));
    }
    assert_int_equal(efps__wire_layout_head(m, len - 1, &h, why, sizeof(why)), EFPS_ERR_PROTO);

    const efps_optim_config_t oc = {.compressor = EFPS_COMP_BLOCKSIGN, .block = 0};
    ps_layout_t l;
    ps_layout_init(&l, &oc, 4096, 2);
    /* 256 keys of 2^60-1 elements: refused by field, nothing sized by it */
    len = keys_msg(m, 128, 0, (UINT64_C(1) << 60) - 1, 0);
    assert_int_equal(efps__wire_keys(&l, 256, m, len, why, sizeof(why)), EFPS_ERR_PROTO);
    assert_non_null(strstr(why, "key n"));
    len = keys_msg(m, 4, 0, 100, UINT64_MAX);
    assert_int_equal(efps__wire_keys(&l, 256, m, len, why, sizeof(why)), EFPS_ERR_PROTO);
    assert_non_null(strstr(why, "key block"));
    ps_layout_free(&l);
    ps_layout_init(&l, &oc, 4096, 2);
    len = keys_msg(m, 0, 0, 100, 0);
    assert_int_equal(efps__wire_keys(&l, 256, m, len, why, sizeof(why)), EFPS_ERR_PROTO);
    assert_non_null(strstr(why, "count"));
    len = keys_msg(m, 129, 0, 100, 0);
    assert_int_equal(efps__wire_keys(&l, 256, m, len, why, sizeof(why)), EFPS_ERR_PROTO);
    len = keys_msg(m, 3, 0, 100, 0);
    assert_int_equal(efps__wire_keys(&l, 2, m, len, why, sizeof(why)), EFPS_ERR_PROTO);
    assert_non_null(strstr(why, "keys received")); /* more than announced */
    assert_int_equal(efps__wire_keys(&l, 1u << 20, m, len - 1, why, sizeof(why)), EFPS_ERR_PROTO);
    /* a huge announcement reserves nothing: room grows with what arrives */
    assert_int_equal(efps__wire_keys(&l, 1u << 20, m, len, why, sizeof(why)), EFPS_OK);
    assert_int_equal(l.nkeys, 3);
    assert_true(l.cap_keys <= 64);
    /* a key twice: found by finish */
    len = keys_msg(m, 1, 2, 100, 0);
    assert_int_equal(efps__wire_keys(&l, 1u << 20, m, len, why, sizeof(why)), EFPS_OK);
    assert_int_equal(ps_layout_finish(&l), EFPS_ERR_INVALID);
    ps_layout_free(&l);

    /* parts beyond the limit, and the old wrap: refused, not allocated */
    ps_layout_init(&l, &oc, 64, 1);
    for (uint32_t k = 0; k < 256; k++)
        assert_int_equal(efps__layout_append(&l, k, (size_t)PS_MAX_KEY_ELEMS, 0), EFPS_OK);
    assert_int_equal(ps_layout_finish(&l), EFPS_ERR_INVALID);
    ps_layout_free(&l);
    ps_layout_init(&l, &oc, 0, 1);
    assert_int_equal(ps_layout_add(&l, 1, 100, 0), EFPS_OK);
    assert_int_equal(ps_layout_finish(&l), EFPS_ERR_INVALID); /* partition 0 */
    ps_layout_free(&l);

    /* issue 10: one key of 2^28 elements in parts of 64 bytes asked for 2^24
     * parts (~940 MB of bookkeeping on a server) in a 130-byte LAYOUT+KEYS:
     * beyond 2^16 parts each must stand for 4 KiB of model on average */
    ps_layout_init(&l, &oc, 64, 1);
    assert_int_equal(efps__layout_append(&l, 1, (size_t)1 << 28, 0), EFPS_OK);
    assert_int_equal(efps__layout_finish(&l, why, sizeof(why)), EFPS_ERR_INVALID);
    assert_non_null(strstr(why, "partition bytes 64"));
    assert_null(l.parts);
    ps_layout_free(&l);
    ps_layout_init(&l, &oc, 64, 1); /* 2^16 parts of 64 bytes: within the free count */
    assert_int_equal(efps__layout_append(&l, 1, (size_t)16 << 16, 0), EFPS_OK);
    assert_int_equal(ps_layout_finish(&l), EFPS_OK);
    assert_int_equal(l.nparts, 1u << 16);
    ps_layout_free(&l);
    ps_layout_init(&l, &oc, 64, 1); /* one part more: refused */
    assert_int_equal(efps__layout_append(&l, 1, ((size_t)16 << 16) + 1, 0), EFPS_OK);
    assert_int_equal(ps_layout_finish(&l), EFPS_ERR_INVALID);
    ps_layout_free(&l);
    ps_layout_init(&l, &oc, 4096, 1); /* 4 KiB parts: 2^18 of them for a 1 GiB model are fine */
    assert_int_equal(efps__layout_append(&l, 1, (size_t)1 << 28, 0), EFPS_OK);
    assert_int_equal(ps_layout_finish(&l), EFPS_OK);
    assert_int_equal(l.nparts, 1u << 18);
    ps_layout_free(&l);

    const uint8_t *mac = NULL;
    uint8_t auth[4 + PS_MAC] = {0};
    efps__put_le32(auth, PS_MSG_AUTH);
    assert_int_equal(efps__wire_auth(auth, sizeof(auth), &mac), EFPS_OK);
    assert_ptr_equal(mac, auth + 4);
    assert_int_equal(efps__wire_auth(auth, sizeof(auth) - 1, &mac), EFPS_ERR_PROTO);
    ps_hello_t hello;
    assert_int_equal(efps__wire_hello(auth, sizeof(hello) + 1, &hello), EFPS_ERR_PROTO);
}

/* Secure by default (issue 10, item 2): no secret, no start, unless asked. */
static void test_secret_required(void **state)
{
    (void)state;
    efps_ps_config_t cfg;
    efps_ps_config_init(&cfg);
    cfg.secret = "";
    unsetenv("EFPS_INSECURE");
    assert_int_equal(efps__ps_check_secret(&cfg, "test"), EFPS_ERR_AUTH);
    setenv("EFPS_INSECURE", "1", 1);
    assert_int_equal(efps__ps_check_secret(&cfg, "test"), EFPS_OK);
    unsetenv("EFPS_INSECURE");
    cfg.secret = "s3cret";
    assert_int_equal(efps__ps_check_secret(&cfg, "test"), EFPS_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_env_worker, clean_env),
        cmocka_unit_test_setup(test_struct_wins, clean_env),
        cmocka_unit_test_setup(test_launchers, clean_env),
        cmocka_unit_test_setup(test_bad_config, clean_env),
        cmocka_unit_test(test_server_list),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_mac),
        cmocka_unit_test(test_wire),
        cmocka_unit_test(test_secret_required),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
