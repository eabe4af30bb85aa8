/* Leveled logging to stderr. Each message is formatted into one buffer and
 * written with one call, so lines from several threads do not interleave. */
#include "efps/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int efps_log_level_current = EFPS_LOG_WARN;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

__attribute__((constructor)) void efps_log_init(void)
{
    const char *v = getenv("EFPS_LOG");
    if (v == NULL || *v == '\0')
        return;
    for (int i = 0; i <= EFPS_LOG_TRACE; i++) {
        if (strcasecmp(v, level_names[i]) == 0) {
            efps_log_level_current = i;
            return;
        }
    }
    fprintf(stderr, "efps: EFPS_LOG='%s' is not one of error|warn|info|debug|trace; using warn\n",
            v);
}

void efps_log_set_level(efps_log_level_t level)
{
    efps_log_level_current = (int)level;
}

void efps_log_write(efps_log_level_t level, const char *file, int line, const char *fmt, ...)
{
    char buf[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const char *base = strrchr(file, '/');
    int len = snprintf(buf, sizeof(buf), "[%ld.%06ld] efps %d %s %s:%d: ", (long)ts.tv_sec,
                       ts.tv_nsec / 1000, (int)getpid(), level_names[level], base ? base + 1 : file,
                       line);
    va_list ap;
    va_start(ap, fmt);
    if (len > 0 && (size_t)len < sizeof(buf))
        len += vsnprintf(buf + len, sizeof(buf) - (size_t)len, fmt, ap);
    va_end(ap);
    if (len < 0)
        return;
    if ((size_t)len >= sizeof(buf) - 1)
        len = sizeof(buf) - 2;
    buf[len++] = '\n';
    /* One write(2): atomic for a pipe up to PIPE_BUF, never interleaved mid-line by stdio. */
    ssize_t rc = write(STDERR_FILENO, buf, (size_t)len);
    (void)rc;
}
