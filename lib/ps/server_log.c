/* Lines about peers that have not proven anything yet, rate-limited. */
#include "server_int.h"

#include <stdarg.h>
#include <stdio.h>

void efps__srv_stranger_log(server_t *sv, const char *fmt, ...)
{
    const int64_t now = efps__now_ms();
    if (sv->log_last != 0 && now - sv->log_last < 1000) {
        sv->log_suppressed++;
        return;
    }
    char line[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (sv->log_suppressed > 0)
        efps_warn("server %d: %s (and %lu more such lines held back)", sv->cfg.rank, line,
                  sv->log_suppressed);
    else
        efps_warn("server %d: %s", sv->cfg.rank, line);
    sv->log_last = now;
    sv->log_suppressed = 0;
}

/* The count of lines held back, once their second is over. */
void efps__srv_stranger_log_flush(server_t *sv)
{
    if (sv->log_suppressed > 0 && efps__now_ms() - sv->log_last >= 1000) {
        efps_warn("server %d: %lu more lines about unauthenticated peers held back", sv->cfg.rank,
                  sv->log_suppressed);
        sv->log_last = efps__now_ms();
        sv->log_suppressed = 0;
    }
}
