/* The one table of EFPS_* environment variables, with defaults and meanings.
 * efps-info prints it with the value in effect; efps_config_check_env() warns
 * about typos. */
#include "efps/core.h"

#include <stdlib.h>
#include <string.h>

static const efps_config_var_t vars[] = {
    {"EFPS_LOG", "warn", "log level: error|warn|info|debug|trace"},
    {"EFPS_SIMD", "", "force a kernel variant: scalar|avx2|avx512 (default: best the CPU has)"},
    {"EFPS_ROLE", "",
     "worker|server (unset: worker; under a launcher, ranks below the number of servers serve)"},
    {"EFPS_RANK", "", "rank of this process within its role"},
    {"EFPS_NUM_WORKERS", "", "number of worker processes"},
    {"EFPS_SERVERS", "", "server list host:port,host:port,..."},
    {"EFPS_TRANSPORT", "auto",
     "transport: auto|tcp|verbs (auto = verbs if an active device exists)"},
    {"EFPS_IB_DEV", "", "RDMA device name (default: first active one)"},
    {"EFPS_IB_GID", "", "GID index (default: a RoCE v2 GID when there is one)"},
    {"EFPS_COMPRESSOR", "blocksign", "compressor: none|sign|blocksign"},
    {"EFPS_BLOCK", "0", "elements per block; 0 = one block per tensor part"},
    {"EFPS_PARTITION_BYTES", "4194304", "largest tensor part, in fp32 bytes"},
    {"EFPS_TIMEOUT_MS", "30000", "a peer silent for this long is declared dead"},
    {"EFPS_SECRET", "",
     "shared secret for the handshake (HMAC-SHA256); required: make one with "
     "`openssl rand -hex 32`"},
    {"EFPS_INSECURE", "", "1: run without EFPS_SECRET (anyone who reaches a server can join)"},
    {"EFPS_BIND", "", "server: address:port to listen on (default: its EFPS_SERVERS entry)"},
    {"EFPS_LOGIN_TIMEOUT_MS", "5000",
     "server: a connection that has not authenticated (or, tcp, not sent the transport's "
     "hello) within this is closed"},
    {"EFPS_MAX_PENDING", "256", "server: unauthenticated connections at once, in all"},
    {"EFPS_MAX_PENDING_PER_HOST", "16",
     "server: unauthenticated connections at once from one address"},
    {"EFPS_PORT_FILE", "",
     "server: write the port it listens on to this file (useful with port 0)"},
    {"EFPS_CKPT_DIR", "",
     "server: the only directory its checkpoints go to and come from (default: its working "
     "directory); a worker names the file, never the path"},
    {"EFPS_CPU_AFFINITY", "auto", "pin the progress thread: auto|none|<core>"},
    {"EFPS_LIBRARY", "",
     "python binding: path of the libefps.so to load (else build tree, prefix)"},
    {NULL, NULL, NULL},
};

const efps_config_var_t *efps_config_vars(void)
{
    return vars;
}

const char *efps_config_get(const char *name)
{
    for (const efps_config_var_t *v = vars; v->name != NULL; v++) {
        if (strcmp(v->name, name) == 0) {
            const char *e = getenv(name);
            return (e != NULL && *e != '\0') ? e : v->deflt;
        }
    }
    return NULL;
}

/* Levenshtein distance, bounded to short names: used only to suggest. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];
    if (lb >= 63 || la >= 63)
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

int efps_config_check_env(void)
{
    extern char **environ;
    int unknown = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, "EFPS_", 5) != 0)
            continue;
        char name[64];
        size_t len = strcspn(*e, "=");
        if (len >= sizeof(name))
            len = sizeof(name) - 1;
        memcpy(name, *e, len);
        name[len] = '\0';
        if (efps_config_get(name) != NULL)
            continue;
        const char *best = NULL;
        size_t best_d = (size_t)-1;
        for (const efps_config_var_t *v = vars; v->name != NULL; v++) {
            size_t d = edit_distance(name, v->name);
            if (d < best_d) {
                best_d = d;
                best = v->name;
            }
        }
        efps_warn("unknown environment variable %s%s%s%s", name, best ? " (did you mean " : "",
                  best ? best : "", best ? "?)" : "");
        unknown++;
    }
    return unknown;
}
