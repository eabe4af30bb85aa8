/* Leveled logging to stderr or the program's handler. Each message is
 * formatted into one buffer and written with one call, so lines from several
 * threads do not interleave. */
#include "efps/core.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int efps__log_level = EFPS_LOG_WARN;

/* The handler and its argument change together, under the lock; a line is
 * handed to the pair read under it, outside it (a handler may be slow). */
static pthread_mutex_t handler_lock = PTHREAD_MUTEX_INITIALIZER;
static efps_log_handler_t handler_fn;
static void *handler_arg;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

__attribute__((constructor)) void efps_log_init(void)
{
    const char *v = getenv("EFPS_LOG");
    if (v == NULL || *v == '\0')
        return;
    for (int i = 0; i <= EFPS_LOG_TRACE; i++) {
        if (strcasecmp(v, level_names[i]) == 0) {
            efps__log_level = i;
            return;
        }
    }
    fprintf(stderr, "efps: EFPS_LOG='%s' is not one of error|warn|info|debug|trace; using warn\n",
            v);
}

void efps_log_set_level(efps_log_level_t level)
{
    efps__log_level = (int)level;
}

efps_log_level_t efps_log_level(void)
{
    return (efps_log_level_t)efps__log_level;
}

void efps_log_set_handler(efps_log_handler_t fn, void *arg)
{
    pthread_mutex_lock(&handler_lock);
    handler_fn = fn;
    handler_arg = arg;
    pthread_mutex_unlock(&handler_lock);
}

/* The program's handler, if any, takes the line from where its location starts. */
static bool to_handler(efps_log_level_t level, const char *located)
{
    pthread_mutex_lock(&handler_lock);
    const efps_log_handler_t fn = handler_fn;
    void *const arg = handler_arg;
    pthread_mutex_unlock(&handler_lock);
    if (fn == NULL)
        return false;
    fn(level, located, arg);
    return true;
}

void efps_log_write(efps_log_level_t level, const char *file, int line, const char *fmt, ...)
{
    char buf[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const char *base = strrchr(file, '/');
    int len = snprintf(buf, sizeof(buf), "[%ld.%06ld] efps %d %s ", (long)ts.tv_sec,
                       ts.tv_nsec / 1000, (int)getpid(), level_names[level]);
    const int located = len > 0 ? len : 0;
    len += snprintf(buf + located, sizeof(buf) - (size_t)located, "%s:%d: ", base ? base + 1 : file,
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
    buf[len] = '\0';
    if (to_handler(level, buf + located))
        return;
    buf[len++] = '\n';
    /* One write(2): atomic for a pipe up to PIPE_BUF, never interleaved mid-line by stdio. */
    ssize_t rc = write(STDERR_FILENO, buf, (size_t)len);
    (void)rc;
}
