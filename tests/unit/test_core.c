/* Unit tests of lib/core: status names and messages, aligned allocation, SIMD
 * names and CPU features, the settings registry with core's own table and the
 * EFPS_* typo check (every layer's: test_config), and
 * logging levels (EFPS_LOG is read at load time, so that case runs in a child). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "efps/core.h"
#include "efps/optim.h"
#include "unit_child.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- stderr capture, for what the library logs ---------------------------- */

typedef struct {
    FILE *file;
    int saved_fd;
} capture_t;

static void capture_begin(capture_t *c)
{
    fflush(stderr);
    c->file = tmpfile();
    assert_non_null(c->file);
    c->saved_fd = dup(STDERR_FILENO);
    assert_true(c->saved_fd >= 0);
    assert_true(dup2(fileno(c->file), STDERR_FILENO) >= 0);
}

/* Restores stderr and returns what was written to it (caller frees). */
static char *capture_end(capture_t *c)
{
    fflush(stderr);
    assert_true(dup2(c->saved_fd, STDERR_FILENO) >= 0);
    close(c->saved_fd);
    const long len = ftell(c->file);
    assert_true(len >= 0);
    char *text = malloc((size_t)len + 1);
    assert_non_null(text);
    rewind(c->file);
    const size_t got = fread(text, 1, (size_t)len, c->file);
    text[got] = '\0';
    fclose(c->file);
    return text;
}

/* ---- status codes ------------------------------------------------------------ */

static const struct {
    efps_status_t status;
    int value;
    const char *name;
} statuses[] = {
#define ROW(name, value, msg) {EFPS_##name, value, "EFPS_" #name},
    EFPS_STATUS_MAP(ROW)
#undef ROW
};

static void test_status_names(void **state)
{
    (void)state;
    assert_int_equal(EFPS_OK, 0);
    for (size_t i = 0; i < COUNT(statuses); i++) {
        const efps_status_t st = statuses[i].status;
        assert_int_equal((int)st, statuses[i].value);
        if (st != EFPS_OK)
            assert_true((int)st < 0); /* every error is negative */
        assert_string_equal(efps_status_name(st), statuses[i].name);
        const char *msg = efps_strerror(st);
        assert_non_null(msg);
        assert_true(strlen(msg) > 0);
        assert_string_not_equal(msg, efps_strerror((efps_status_t)-1000));
        for (size_t j = 0; j < i; j++) {
            assert_int_not_equal((int)st, (int)statuses[j].status);
            assert_string_not_equal(efps_status_name(st), efps_status_name(statuses[j].status));
            assert_string_not_equal(msg, efps_strerror(statuses[j].status));
        }
    }
    /* Unknown values still give a usable string. */
    assert_non_null(efps_strerror((efps_status_t)-1000));
    assert_non_null(efps_status_name((efps_status_t)42));
    assert_true(strlen(efps_status_name((efps_status_t)42)) > 0);
}

/* ---- aligned memory ------------------------------------------------------------ */

static void test_aligned_alloc(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, 3, 63, 64, 65, 1000, 4097, 1 << 20};
    for (size_t k = 0; k < COUNT(sizes); k++) {
        const size_t want = efps_align_up(sizes[k] ? sizes[k] : 1, EFPS_ALIGN);
        /* Fill, free and allocate again, so calloc's zeroing is seen on reused memory. */
        uint8_t *p = efps_aligned_alloc(sizes[k]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % EFPS_ALIGN, 0);
        assert_true(malloc_usable_size(p) >= want);
        memset(p, 0xee, want); /* the whole rounded size is ours (ASan checks) */
        efps_aligned_free(p);
        p = efps_aligned_calloc(sizes[k]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % EFPS_ALIGN, 0);
        for (size_t j = 0; j < want; j++)
            if (p[j] != 0)
                fail_msg("calloc(%zu): byte %zu is 0x%02x", sizes[k], j, p[j]);
        efps_aligned_free(p);
    }
    /* Sizes whose rounding would overflow fail cleanly. */
    assert_null(efps_aligned_alloc(SIZE_MAX));
    assert_null(efps_aligned_alloc(SIZE_MAX - 10));
    assert_null(efps_aligned_calloc(SIZE_MAX));
    efps_aligned_free(NULL);
    assert_int_equal(efps_align_up(0, 64), 0);
    assert_int_equal(efps_align_up(1, 64), 64);
    assert_int_equal(efps_align_up(64, 64), 64);
    assert_int_equal(efps_align_up(65, 64), 128);
    assert_int_equal(efps_align_up(4000012, 64), 4000064);
}

/* ---- SIMD names and CPU features ---------------------------------------------- */

static void test_simd_parse(void **state)
{
    (void)state;
    const struct {
        const char *text;
        efps_simd_t simd;
    } good[] = {
        {"scalar", EFPS_SIMD_SCALAR}, {"avx2", EFPS_SIMD_AVX2}, {"avx512", EFPS_SIMD_AVX512}};
    for (size_t k = 0; k < COUNT(good); k++) {
        efps_simd_t s = (efps_simd_t)99;
        assert_int_equal(efps_simd_parse(good[k].text, &s), EFPS_OK);
        assert_int_equal(s, good[k].simd);
        assert_string_equal(efps_simd_name(good[k].simd), good[k].text);
    }
    const char *bad[] = {"", "avx", "avx5", "avx-512", "avx5122", "scalar ", " scalar", "sse", "0"};
    for (size_t k = 0; k < COUNT(bad); k++) {
        efps_simd_t s = (efps_simd_t)99;
        assert_int_equal(efps_simd_parse(bad[k], &s), EFPS_ERR_INVALID);
        assert_int_equal(s, 99); /* output untouched on error */
    }
    efps_simd_t s = (efps_simd_t)99;
    assert_int_equal(efps_simd_parse(NULL, &s), EFPS_ERR_INVALID);
    assert_int_equal(s, 99);
    assert_non_null(efps_simd_name((efps_simd_t)9));
}

static void test_cpu_features(void **state)
{
    (void)state;
    const unsigned f = efps_cpu_features();
    assert_int_equal(efps_cpu_features(), f); /* stable */
    const unsigned need512 = EFPS_CPU_AVX2 | EFPS_CPU_AVX512F | EFPS_CPU_AVX512BW |
                             EFPS_CPU_AVX512VL | EFPS_CPU_AVX512DQ;
    const efps_simd_t want = (f & need512) == need512 ? EFPS_SIMD_AVX512
                             : (f & EFPS_CPU_AVX2)    ? EFPS_SIMD_AVX2
                                                      : EFPS_SIMD_SCALAR;
    assert_int_equal(efps_cpu_best_simd(), want);
    /* Independent witness: GCC's own cpuid + xgetbv detection. */
    __builtin_cpu_init();
    const struct {
        unsigned bit;
        int has;
    } w[] = {
        {EFPS_CPU_AVX2, __builtin_cpu_supports("avx2")},
        {EFPS_CPU_AVX512F, __builtin_cpu_supports("avx512f")},
        {EFPS_CPU_AVX512BW, __builtin_cpu_supports("avx512bw")},
        {EFPS_CPU_AVX512VL, __builtin_cpu_supports("avx512vl")},
        {EFPS_CPU_AVX512DQ, __builtin_cpu_supports("avx512dq")},
    };
    for (size_t k = 0; k < COUNT(w); k++)
        if (((f & w[k].bit) != 0) != (w[k].has != 0))
            fail_msg("feature bit 0x%x: efps says %d, the compiler's runtime says %d", w[k].bit,
                     (f & w[k].bit) != 0, w[k].has != 0);
    print_message("cpu: features 0x%x, best variant %s\n", f, efps_simd_name(want));
}

/* ---- configuration ---------------------------------------------------------------- */

static void test_config_table(void **state)
{
    (void)state;
    const efps_config_var_t *vars = efps_config_vars();
    size_t count = 0;
    for (const efps_config_var_t *v = vars; v->name != NULL; v++, count++) {
        assert_int_equal(strncmp(v->name, "EFPS_", 5), 0);
        assert_non_null(v->deflt);
        assert_non_null(v->help);
        assert_true(strlen(v->help) > 0);
        for (const efps_config_var_t *u = vars; u < v; u++)
            assert_string_not_equal(u->name, v->name); /* declared once */
    }
    assert_true(count > 0);
    /* Core's own (the other layers' are tested in test_config, which links them). */
    assert_non_null(efps_config_get("EFPS_LOG"));
}

static void test_config_get(void **state)
{
    (void)state;
    const struct {
        const char *name, *deflt;
    } defaults[] = {{"EFPS_LOG", "warn"}};
    for (size_t k = 0; k < COUNT(defaults); k++) {
        const char *name = defaults[k].name, *old = getenv(name);
        char *saved = old ? strdup(old) : NULL;
        unsetenv(name);
        assert_string_equal(efps_config_get(name), defaults[k].deflt);
        setenv(name, "", 1); /* empty counts as unset */
        assert_string_equal(efps_config_get(name), defaults[k].deflt);
        setenv(name, "override-42", 1);
        assert_string_equal(efps_config_get(name), "override-42");
        if (saved)
            setenv(name, saved, 1);
        else
            unsetenv(name);
        free(saved);
    }
    /* Every declared variable answers; an undeclared one is NULL even when set. */
    for (const efps_config_var_t *v = efps_config_vars(); v->name != NULL; v++)
        assert_non_null(efps_config_get(v->name));
    setenv("EFPS_NOT_A_SETTING", "1", 1);
    assert_null(efps_config_get("EFPS_NOT_A_SETTING"));
    unsetenv("EFPS_NOT_A_SETTING");
    assert_null(efps_config_get("EFPS_LGO"));
    assert_null(efps_config_get(""));
}

static int check_env_captured(char **log_p)
{
    capture_t c;
    const int saved_level = (int)efps_log_level();
    efps_log_set_level(EFPS_LOG_WARN);
    capture_begin(&c);
    const int unknown = efps_config_check_env();
    *log_p = capture_end(&c);
    efps_log_set_level((efps_log_level_t)saved_level);
    return unknown;
}

static void test_config_check_env(void **state)
{
    (void)state;
    char *log;
    unsetenv("EFPS_LGO");
    /* The baseline counts whatever unknown EFPS_* the caller's environment has. */
    const int base = check_env_captured(&log);
    assert_true(base >= 0);
    assert_int_equal(unit_count(log, "EFPS_LGO"), 0);
    free(log);

    setenv("EFPS_LGO", "x", 1);
    assert_int_equal(check_env_captured(&log), base + 1);
    /* warned once, naming the closest declared variable */
    assert_int_equal(unit_count(log, "unknown environment variable EFPS_LGO"), 1);
    assert_non_null(strstr(log, "did you mean EFPS_LOG?"));
    free(log);

    /* Declared names and non-EFPS_ names are not counted. */
    const char *old = getenv("EFPS_LOG");
    char *saved = old ? strdup(old) : NULL;
    setenv("EFPS_LOG", "warn", 1);
    setenv("XEFPS_LGO", "x", 1);
    setenv("efps_lgo", "x", 1);
    assert_int_equal(check_env_captured(&log), base + 1);
    free(log);
    if (saved)
        setenv("EFPS_LOG", saved, 1);
    else
        unsetenv("EFPS_LOG");
    free(saved);
    unsetenv("XEFPS_LGO");
    unsetenv("efps_lgo");
    unsetenv("EFPS_LGO");
    assert_int_equal(check_env_captured(&log), base);
    free(log);
}

/* ---- logging ---------------------------------------------------------------------- */

static int evaluated;

static int side_effect(void)
{
    return ++evaluated;
}

static void test_log_levels(void **state)
{
    (void)state;
    const int saved = (int)efps_log_level();
    capture_t c;
    char *log;

    efps_log_set_level(EFPS_LOG_ERROR);
    assert_int_equal((int)efps_log_level(), EFPS_LOG_ERROR);
    evaluated = 0;
    capture_begin(&c);
    efps_warn("hidden %d", side_effect());
    efps_info("hidden %d", side_effect());
    efps_error("shown %d", 7);
    log = capture_end(&c);
    assert_int_equal(evaluated, 0); /* arguments of a disabled level are not evaluated */
    assert_int_equal(unit_count(log, "hidden"), 0);
    assert_int_equal(unit_count(log, "\n"), 1);
    assert_non_null(strstr(log, " error test_core.c:"));
    assert_non_null(strstr(log, ": shown 7\n"));
    free(log);

    efps_log_set_level(EFPS_LOG_DEBUG);
    capture_begin(&c);
    efps_debug("dbg %s", "x");
    efps_trace("trc %d", side_effect());
    efps_info("inf");
    log = capture_end(&c);
    assert_int_equal(evaluated, 0);
    assert_non_null(strstr(log, " debug test_core.c:"));
    assert_non_null(strstr(log, ": dbg x\n"));
    assert_non_null(strstr(log, " info test_core.c:"));
    assert_int_equal(unit_count(log, "trc"), 0);
    free(log);

    /* A message longer than the line buffer is cut, still one line. */
    char big[3000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    capture_begin(&c);
    efps_error("%s", big);
    log = capture_end(&c);
    assert_int_equal(unit_count(log, "\n"), 1);
    assert_true(strlen(log) <= 1024);
    assert_int_equal(log[strlen(log) - 1], '\n');
    free(log);
    efps_log_set_level((efps_log_level_t)saved);
}

typedef struct {
    int calls;
    efps_log_level_t level;
    char line[1100];
} got_t;

static void on_line(efps_log_level_t level, const char *line, void *arg)
{
    got_t *g = arg;
    g->calls++;
    g->level = level;
    snprintf(g->line, sizeof(g->line), "%s", line);
}

/* A program's handler gets each enabled line (level, "file:line: text"),
 * and stderr none of them; NULL gives stderr back. */
static void test_log_handler(void **state)
{
    (void)state;
    const efps_log_level_t saved = efps_log_level();
    efps_log_set_level(EFPS_LOG_WARN);
    got_t g = {0};
    capture_t c;
    efps_log_set_handler(on_line, &g);
    capture_begin(&c);
    efps_warn("to the handler %d", 42);
    efps_info("below the level %d", side_effect());
    char *log = capture_end(&c);
    assert_string_equal(log, "");
    free(log);
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.level, EFPS_LOG_WARN);
    assert_non_null(strstr(g.line, "test_core.c:"));
    assert_non_null(strstr(g.line, ": to the handler 42"));
    assert_null(strchr(g.line, '\n'));
    /* The library's own lines go there too. */
    const efps_optim_config_t bad = {.momentum = 2.0f};
    assert_int_equal(efps_optim_config_check(&bad), EFPS_ERR_INVALID);
    assert_int_equal(g.calls, 2);
    assert_int_equal(g.level, EFPS_LOG_ERROR);
    efps_log_set_handler(NULL, NULL);
    capture_begin(&c);
    efps_warn("back to stderr");
    log = capture_end(&c);
    assert_non_null(strstr(log, "back to stderr\n"));
    free(log);
    efps_log_set_level(saved);
}

/* efps_log_init re-reads EFPS_LOG. */
static void test_log_init(void **state)
{
    (void)state;
    const int saved = (int)efps_log_level();
    const char *names[] = {"error", "warn", "info", "debug", "trace"};
    for (int lvl = 0; lvl < (int)COUNT(names); lvl++) {
        efps_log_set_level(lvl == 0 ? EFPS_LOG_TRACE : EFPS_LOG_ERROR);
        setenv("EFPS_LOG", names[lvl], 1);
        efps_log_init();
        assert_int_equal((int)efps_log_level(), lvl);
    }
    /* A bad value is reported and does not change the level. */
    efps_log_set_level(EFPS_LOG_WARN);
    setenv("EFPS_LOG", "verbose", 1);
    capture_t c;
    capture_begin(&c);
    efps_log_init();
    char *log = capture_end(&c);
    assert_int_equal((int)efps_log_level(), EFPS_LOG_WARN);
    assert_non_null(strstr(log, "EFPS_LOG='verbose'"));
    free(log);
    unsetenv("EFPS_LOG");
    efps_log_set_level((efps_log_level_t)saved);
}

/* In a fresh process, EFPS_LOG sets the level before main (load time). */
static void test_log_env_child(void **state)
{
    (void)state;
    char out[4096];
    const struct {
        const char *value;
        int level;
    } cases[] = {{NULL, EFPS_LOG_WARN},     {"error", EFPS_LOG_ERROR}, {"info", EFPS_LOG_INFO},
                 {"debug", EFPS_LOG_DEBUG}, {"trace", EFPS_LOG_TRACE}, {"nonsense", EFPS_LOG_WARN}};
    for (size_t k = 0; k < COUNT(cases); k++) {
        const int rc = unit_run_child("log-level", "EFPS_LOG", cases[k].value, out, sizeof(out));
        if (rc != 10 + cases[k].level)
            fail_msg("EFPS_LOG=%s: child exited %d, want %d; stderr:\n%s",
                     cases[k].value ? cases[k].value : "(unset)", rc, 10 + cases[k].level, out);
    }
    /* The bad value was reported by the child. */
    assert_int_equal(unit_run_child("log-level", "EFPS_LOG", "nonsense", out, sizeof(out)),
                     10 + EFPS_LOG_WARN);
    assert_non_null(strstr(out, "EFPS_LOG='nonsense'"));
}

int main(int argc, char **argv)
{
    /* Child of test_log_env_child: report the level chosen at load time. */
    if (argc == 3 && strcmp(argv[1], "--child") == 0)
        return strcmp(argv[2], "log-level") == 0 ? 10 + (int)efps_log_level() : 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names),     cmocka_unit_test(test_aligned_alloc),
        cmocka_unit_test(test_simd_parse),       cmocka_unit_test(test_cpu_features),
        cmocka_unit_test(test_config_table),     cmocka_unit_test(test_config_get),
        cmocka_unit_test(test_config_check_env), cmocka_unit_test(test_log_levels),
        cmocka_unit_test(test_log_init),         cmocka_unit_test(test_log_handler),
        cmocka_unit_test(test_log_env_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
