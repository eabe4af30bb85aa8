/* Settings: every EFPS_* variable that a program may also set in a config
 * struct (efps_ps_config_t, efps_tp_attr_t) takes the struct's value when
 * it is set and the variable's otherwise; the launcher is named as the
 * resolution sees it; each layer declares its own settings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "efps/compress.h"
#include "efps/ps.h"
#include "efps/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const managed[] = {"EFPS_ROLE",
                                      "EFPS_RANK",
                                      "EFPS_NUM_WORKERS",
                                      "EFPS_SERVERS",
                                      "EFPS_PORT_FILE",
                                      "EFPS_IB_DEV",
                                      "EFPS_IB_GID",
                                      "EFPS_CPU_AFFINITY",
                                      "EFPS_INSECURE",
                                      "EFPS_MAX_PENDING",
                                      "EFPS_MAX_PENDING_PER_HOST",
                                      "EFPS_LOGIN_TIMEOUT_MS",
                                      "EFPS_CKPT_DIR",
                                      "SLURM_PROCID",
                                      "SLURM_NTASKS",
                                      "OMPI_COMM_WORLD_RANK",
                                      "OMPI_COMM_WORLD_SIZE",
                                      "RANK",
                                      "WORLD_SIZE",
                                      NULL};

static int clean_env(void **state)
{
    (void)state;
    for (int i = 0; managed[i]; i++)
        unsetenv(managed[i]);
    efps_log_set_level(EFPS_LOG_ERROR); /* the bad values below log on purpose */
    return 0;
}

static void server_cfg(efps_ps_config_t *cfg)
{
    efps_ps_config_init(cfg);
    cfg->role = EFPS_ROLE_SERVER;
    cfg->rank = 0;
    cfg->num_workers = 2;
    cfg->servers = "127.0.0.1:0";
}

static void test_ps_variables_when_unset(void **state)
{
    (void)state;
    efps_ps_config_t cfg, o;
    setenv("EFPS_PORT_FILE", "/tmp/env-port", 1);
    setenv("EFPS_IB_DEV", "mlx5_1", 1);
    setenv("EFPS_IB_GID", "3", 1);
    setenv("EFPS_CPU_AFFINITY", "none", 1);
    setenv("EFPS_INSECURE", "1", 1);
    setenv("EFPS_MAX_PENDING", "9", 1);
    setenv("EFPS_CKPT_DIR", "/tmp/env-ckpt", 1);
    server_cfg(&cfg);
    assert_int_equal(efps_ps_config_resolve(&cfg, &o), EFPS_OK);
    assert_string_equal(o.port_file, "/tmp/env-port");
    assert_string_equal(o.ckpt_dir, "/tmp/env-ckpt");
    assert_string_equal(o.ib_dev, "mlx5_1");
    assert_string_equal(o.ib_gid, "3");
    assert_string_equal(o.cpu_affinity, "none");
    assert_int_equal(o.insecure, 1);
    assert_int_equal(o.max_pending, 9);
    assert_int_equal(o.max_pending_per_host, 16); /* the defaults */
    assert_int_equal(o.login_timeout_ms, 5000);
}

static void test_ps_struct_wins(void **state)
{
    (void)state;
    efps_ps_config_t cfg, o;
    setenv("EFPS_PORT_FILE", "/tmp/env-port", 1);
    setenv("EFPS_IB_GID", "3", 1);
    setenv("EFPS_CPU_AFFINITY", "none", 1);
    setenv("EFPS_MAX_PENDING", "9", 1);
    setenv("EFPS_LOGIN_TIMEOUT_MS", "not a number", 1); /* never read: the struct has it */
    setenv("EFPS_CKPT_DIR", "/tmp/env-ckpt", 1);
    server_cfg(&cfg);
    cfg.port_file = "/tmp/struct-port";
    cfg.ckpt_dir = "/tmp/struct-ckpt";
    cfg.ib_dev = "rxe0";
    cfg.ib_gid = "1";
    cfg.cpu_affinity = "auto";
    cfg.insecure = 1;
    cfg.max_pending = 7;
    cfg.max_pending_per_host = 2;
    cfg.login_timeout_ms = 1500;
    assert_int_equal(efps_ps_config_resolve(&cfg, &o), EFPS_OK);
    assert_string_equal(o.port_file, "/tmp/struct-port");
    assert_string_equal(o.ckpt_dir, "/tmp/struct-ckpt");
    assert_string_equal(o.ib_dev, "rxe0");
    assert_string_equal(o.ib_gid, "1");
    assert_string_equal(o.cpu_affinity, "auto");
    assert_int_equal(o.insecure, 1);
    assert_int_equal(o.max_pending, 7);
    assert_int_equal(o.max_pending_per_host, 2);
    assert_int_equal(o.login_timeout_ms, 1500);
    /* Out of range in the struct: refused, as the variable would be. */
    cfg.max_pending = (1 << 20) + 1;
    assert_int_equal(efps_ps_config_resolve(&cfg, &o), EFPS_ERR_INVALID);
    /* Without the struct's value, the malformed variable is an error. */
    cfg.max_pending = 0;
    cfg.login_timeout_ms = 0;
    assert_int_equal(efps_ps_config_resolve(&cfg, &o), EFPS_ERR_INVALID);
}

/* The server writes the port to the struct's file, not the variable's. */
static void test_server_port_file_from_struct(void **state)
{
    (void)state;
    char env_path[] = "/tmp/efps-cfg-env-XXXXXX", path[] = "/tmp/efps-cfg-XXXXXX";
    close(mkstemp(env_path));
    close(mkstemp(path));
    unlink(env_path);
    setenv("EFPS_PORT_FILE", env_path, 1);
    efps_ps_config_t cfg;
    server_cfg(&cfg);
    cfg.port_file = path;
    cfg.secret = "s";
    cfg.transport = "tcp";
    efps_server_t *srv;
    assert_int_equal(efps_server_create(&cfg, &srv), EFPS_OK);
    FILE *f = fopen(path, "r");
    unsigned port = 0;
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%u", &port), 1);
    fclose(f);
    assert_int_equal(port, efps_server_port(srv));
    assert_int_equal(access(env_path, F_OK), -1);
    efps_server_destroy(srv);
    unlink(path);
}

/* --insecure as a struct field: a server without a secret starts. */
static void test_insecure_field(void **state)
{
    (void)state;
    efps_ps_config_t cfg;
    efps_server_t *srv;
    server_cfg(&cfg);
    cfg.transport = "tcp";
    assert_int_equal(efps_server_create(&cfg, &srv), EFPS_ERR_AUTH);
    cfg.insecure = 1;
    assert_int_equal(efps_server_create(&cfg, &srv), EFPS_OK);
    efps_server_destroy(srv);
}

static void test_tp_attr(void **state)
{
    (void)state;
    efps_tp_ctx_t *ctx;
    efps_tp_attr_t attr = {0}, q;
    setenv("EFPS_IB_GID", "2", 1);
    setenv("EFPS_CPU_AFFINITY", "none", 1);
    assert_int_equal(efps_tp_open("tcp", &attr, &ctx), EFPS_OK);
    efps_tp_query(ctx, &q);
    assert_string_equal(q.gid, "2");
    assert_string_equal(q.cpu_affinity, "none");
    efps_tp_close(ctx);
    attr.gid = "";
    attr.cpu_affinity = "1";
    assert_int_equal(efps_tp_open("tcp", &attr, &ctx), EFPS_OK);
    efps_tp_query(ctx, &q);
    assert_string_equal(q.gid, "");
    assert_string_equal(q.cpu_affinity, "1");
    efps_tp_close(ctx);
}

static void test_launcher_named(void **state)
{
    (void)state;
    const char *rv = NULL, *sv = NULL;
    assert_null(efps_ps_launcher(&rv, &sv));
    setenv("SLURM_PROCID", "1", 1);
    setenv("SLURM_NTASKS", "3", 1);
    assert_string_equal(efps_ps_launcher(&rv, &sv), "slurm");
    assert_string_equal(rv, "SLURM_PROCID");
    assert_string_equal(sv, "SLURM_NTASKS");
    setenv("OMPI_COMM_WORLD_RANK", "0", 1); /* mpirun comes first */
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    assert_string_equal(efps_ps_launcher(NULL, NULL), "mpirun");
}

/* Each layer declares its own settings; core's table holds only core's. */
static void test_layers(void **state)
{
    (void)state;
    static const char *const order[] = {"core", "compress", "transport", "ps", "bindings"};
    static const struct {
        const char *name, *layer, *deflt;
    } want[] = {{"EFPS_LOG", "core", "warn"},
                {"EFPS_SIMD", "compress", ""},
                {"EFPS_TRANSPORT", "transport", "auto"},
                {"EFPS_TIMEOUT_MS", "transport", "30000"},
                {"EFPS_IB_GID", "transport", ""},
                {"EFPS_CPU_AFFINITY", "transport", "auto"},
                {"EFPS_SERVERS", "ps", ""},
                {"EFPS_COMPRESSOR", "ps", "blocksign"},
                {"EFPS_BLOCK", "ps", "0"},
                {"EFPS_PARTITION_BYTES", "ps", "4194304"},
                {"EFPS_PORT_FILE", "ps", ""},
                {"EFPS_LIBRARY", "bindings", ""}};
    (void)efps_compress_simd(); /* link compress.c, whose table this checks */
    size_t found = 0, last = 0, core = 0;
    for (const efps_config_var_t *v = efps_config_vars(); v->name != NULL; v++) {
        size_t k = 0;
        while (k < sizeof(order) / sizeof(order[0]) && strcmp(order[k], v->layer) != 0)
            k++;
        assert_true(k < sizeof(order) / sizeof(order[0])); /* a known layer */
        assert_true(k >= last);                            /* bottom layer first */
        last = k;
        core += k == 0;
        for (const efps_config_var_t *u = efps_config_vars(); u < v; u++)
            assert_string_not_equal(u->name, v->name); /* declared once */
        for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
            if (strcmp(want[w].name, v->name) != 0)
                continue;
            assert_string_equal(v->layer, want[w].layer);
            assert_string_equal(v->deflt, want[w].deflt);
            assert_string_equal(efps_config_get(v->name), want[w].deflt); /* env unset */
            found++;
        }
    }
    assert_int_equal(found, sizeof(want) / sizeof(want[0]));
    assert_int_equal(core, 1); /* EFPS_LOG alone */
}

static char warned[4096];
static void keep_line(efps_log_level_t level, const char *line, void *arg)
{
    (void)level;
    (void)arg;
    strncat(warned, line, sizeof(warned) - strlen(warned) - 2);
    strcat(warned, "\n");
}

/* A typo is named with the closest setting of any layer; declared ones of
 * every layer are not warned about. */
static void test_check_env_every_layer(void **state)
{
    (void)state;
    efps_log_set_level(EFPS_LOG_WARN);
    efps_log_set_handler(keep_line, NULL);
    warned[0] = '\0';
    const int base = efps_config_check_env();
    setenv("EFPS_IB_GID", "1", 1);
    setenv("EFPS_PORT_FILE", "/tmp/x", 1);
    setenv("EFPS_TIMEOUT", "5", 1);
    warned[0] = '\0';
    assert_int_equal(efps_config_check_env(), base + 1);
    assert_non_null(strstr(warned, "EFPS_TIMEOUT (did you mean EFPS_TIMEOUT_MS?)"));
    unsetenv("EFPS_TIMEOUT");
    efps_log_set_handler(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_ps_variables_when_unset, clean_env),
        cmocka_unit_test_setup(test_ps_struct_wins, clean_env),
        cmocka_unit_test_setup(test_server_port_file_from_struct, clean_env),
        cmocka_unit_test_setup(test_insecure_field, clean_env),
        cmocka_unit_test_setup(test_tp_attr, clean_env),
        cmocka_unit_test_setup(test_launcher_named, clean_env),
        cmocka_unit_test_setup(test_layers, clean_env),
        cmocka_unit_test_setup(test_check_env_every_layer, clean_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
