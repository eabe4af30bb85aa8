/* efps core services: status codes, logging, configuration, CPU features,
 * aligned memory. Every other layer builds on these. */
#ifndef EFPS_CORE_H
#define EFPS_CORE_H

#include "efps/version.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EFPS_API __attribute__((visibility("default")))

/* One X-macro makes the enum, the names and the messages, so they cannot
 * drift apart. EFPS_OK is 0, every error is negative. */
#define EFPS_STATUS_MAP(X)                                                                         \
    X(OK, 0, "success")                                                                            \
    X(ERR_INVALID, -1, "invalid argument")                                                         \
    X(ERR_NOMEM, -2, "out of memory")                                                              \
    X(ERR_NONFINITE, -3, "non-finite value (NaN or Inf) in a block")                               \
    X(ERR_UNSUPPORTED, -4, "not supported on this machine")                                        \
    X(ERR_IO, -5, "input/output error")                                                            \
    X(ERR_CORRUPT, -6, "corrupt or truncated data")                                                \
    X(ERR_TIMEOUT, -7, "timed out")                                                                \
    X(ERR_PEER, -8, "peer failed or disconnected")                                                 \
    X(ERR_PROTO, -9, "protocol violation")                                                         \
    X(ERR_AUTH, -10, "authentication failed")                                                      \
    X(ERR_MISMATCH, -11, "configuration mismatch between peers")                                   \
    X(ERR_NO_RESOURCE, -12, "no resource available now, make progress and retry")                  \
    X(ERR_TRANSPORT, -13, "transport error")                                                       \
    X(ERR_STATE, -14, "call not valid in the current state")                                       \
    X(ERR_SYSTEM, -15, "system call failed")                                                       \
    X(ERR_STOPPED, -16, "stopped on request before the work was done")

typedef enum {
#define EFPS_STATUS_ENUM(name, value, msg) EFPS_##name = value,
    EFPS_STATUS_MAP(EFPS_STATUS_ENUM)
#undef EFPS_STATUS_ENUM
} efps_status_t;

/* A static, human readable message for a status; never NULL. */
EFPS_API const char *efps_strerror(efps_status_t status);
/* The status' symbolic name ("EFPS_ERR_NONFINITE"); never NULL. */
EFPS_API const char *efps_status_name(efps_status_t status);

/* The library's version, "major.minor.patch" (EFPS_VERSION_STRING of the
 * build of libefps in use, which may be newer than the headers'). */
EFPS_API const char *efps_version(void);
/* Its EFPS_VERSION_NUMBER. */
EFPS_API unsigned efps_version_number(void);

/* ---- logging ------------------------------------------------------------
 * Leveled, one line per call (safe from several threads), to stderr or to
 * the program's handler. The level comes from EFPS_LOG=error|warn|info|
 * debug|trace (default warn) or efps_log_set_level. */
typedef enum {
    EFPS_LOG_ERROR = 0,
    EFPS_LOG_WARN = 1,
    EFPS_LOG_INFO = 2,
    EFPS_LOG_DEBUG = 3,
    EFPS_LOG_TRACE = 4,
} efps_log_level_t;

/* Re-reads EFPS_LOG (done once at load time). */
EFPS_API void efps_log_init(void);
EFPS_API void efps_log_set_level(efps_log_level_t level);
EFPS_API efps_log_level_t efps_log_level(void);
/* Receives every line that is logged instead of stderr: its level and the
 * text ("file.c:123: what failed and with whom", no newline), valid during
 * the call. Called from whichever thread logs, possibly several at once; it
 * must not call efps functions that could log. fn NULL: back to stderr. A
 * line logged while the handler is being changed may still reach the
 * previous one. */
typedef void (*efps_log_handler_t)(efps_log_level_t level, const char *line, void *arg);
EFPS_API void efps_log_set_handler(efps_log_handler_t fn, void *arg);
EFPS_API void efps_log_write(efps_log_level_t level, const char *file, int line, const char *fmt,
                             ...) __attribute__((format(printf, 4, 5)));

/* Free when the level is off: the arguments are not even evaluated. Inside
 * the library the level is a hidden variable (one load and compare); a
 * program's own use of the macros asks efps_log_level(). */
#ifdef EFPS_BUILDING_LIBRARY
extern int efps__log_level __attribute__((visibility("hidden")));
#define EFPS_LOG_ENABLED(level) ((int)(level) <= efps__log_level)
#else
#define EFPS_LOG_ENABLED(level) ((int)(level) <= (int)efps_log_level())
#endif
#define EFPS_LOG(level, ...)                                                                       \
    do {                                                                                           \
        if (EFPS_LOG_ENABLED(level))                                                               \
            efps_log_write((level), __FILE__, __LINE__, __VA_ARGS__);                              \
    } while (0)
#define efps_error(...) EFPS_LOG(EFPS_LOG_ERROR, __VA_ARGS__)
#define efps_warn(...)  EFPS_LOG(EFPS_LOG_WARN, __VA_ARGS__)
#define efps_info(...)  EFPS_LOG(EFPS_LOG_INFO, __VA_ARGS__)
#define efps_debug(...) EFPS_LOG(EFPS_LOG_DEBUG, __VA_ARGS__)
#define efps_trace(...) EFPS_LOG(EFPS_LOG_TRACE, __VA_ARGS__)

/* ---- configuration ------------------------------------------------------
 * Every EFPS_* environment variable is declared once, with its default and
 * meaning, by the layer that reads it (core, compress, transport, ps). */
typedef struct {
    const char *name;  /* "EFPS_LOG" */
    const char *deflt; /* default value as text, "" for none */
    const char *help;  /* one line */
    const char *layer; /* who declares it: "core", "compress", "transport", "ps",
                          "bindings" (read by the Python binding) */
} efps_config_var_t;

/* Every declared variable, bottom layer first, terminated by an entry whose
 * name is NULL. (A program linked with libefps.a sees the layers it links:
 * all of them once it calls efps_ps_init or efps_server_create.) */
EFPS_API const efps_config_var_t *efps_config_vars(void);
/* The value of a declared variable: the environment's, else its default.
 * Asking for an undeclared name is a bug and returns NULL. */
EFPS_API const char *efps_config_get(const char *name);
/* Warns once about every EFPS_* variable in the environment that is not
 * declared, naming the closest declared one. Returns how many were unknown. */
EFPS_API int efps_config_check_env(void);

/* ---- CPU features -------------------------------------------------------
 * Read once with cpuid and xgetbv: a SIMD level counts only when the CPU has
 * it and the OS saves its register state. */
typedef enum {
    EFPS_SIMD_SCALAR = 0,
    EFPS_SIMD_AVX2 = 1,   /* AVX2 + FMA-free float ops + BMI2 not required */
    EFPS_SIMD_AVX512 = 2, /* AVX-512 F, BW, VL, DQ */
} efps_simd_t;

#define EFPS_CPU_AVX2     (1u << 0)
#define EFPS_CPU_AVX512F  (1u << 1)
#define EFPS_CPU_AVX512BW (1u << 2)
#define EFPS_CPU_AVX512VL (1u << 3)
#define EFPS_CPU_AVX512DQ (1u << 4)

EFPS_API unsigned efps_cpu_features(void);
/* The best level this machine can run. */
EFPS_API efps_simd_t efps_cpu_best_simd(void);
EFPS_API const char *efps_simd_name(efps_simd_t simd);
/* Parses "scalar", "avx2", "avx512"; EFPS_ERR_INVALID otherwise. */
EFPS_API efps_status_t efps_simd_parse(const char *text, efps_simd_t *simd_p);

/* ---- memory ---------------------------------------------------------------
 * 64-byte aligned, size rounded up to a multiple of 64, so a buffer can be
 * written by AVX-512 stores and registered for RDMA as it is. */
#define EFPS_ALIGN 64
EFPS_API void *efps_aligned_alloc(size_t size);
EFPS_API void *efps_aligned_calloc(size_t size);
EFPS_API void efps_aligned_free(void *ptr);

static inline size_t efps_align_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

#ifdef __cplusplus
}
#endif
#endif
