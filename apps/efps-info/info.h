/* efps-info: what this machine and configuration offer efps, and whether a
 * job would start. Sections (facts.c, rdma.c) and the preflight checks
 * (preflight.c, probe.c) write through the emitter of out.h. */
#ifndef EFPS_INFO_H
#define EFPS_INFO_H

#include "efps/ps.h"
#include "out.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    bool json;
    uint64_t model_bytes; /* --model-bytes; 0: from --params or the default */
    uint64_t params;      /* --params; 0: not given */
    int timeout_ms;       /* each network check */
} info_opts_t;

/* The configuration as a job would see it. resolved is false when
 * efps_ps_config_resolve failed (why: the library's message). */
typedef struct {
    efps_ps_config_t cfg;
    bool resolved;
    char why[512];
    const char *transport; /* what "auto" becomes here: "tcp" or "verbs" */
} info_config_t;

typedef struct {
    int ok, warned, failed, skipped;
} info_tally_t;

/* The library's last warning or error line since info_log_reset (efps-info
 * shows the library's messages inside its report, not on stderr). */
void info_log_install(void);
void info_log_reset(void);
const char *info_log_last(void);

void info_resolve(info_config_t *ic);
void info_version(out_t *o);
void info_config(out_t *o, const info_config_t *ic);
void info_cpu(out_t *o);
void info_topology(out_t *o);
/* RDMA ports and their GIDs; the number of active ports, -1 without verbs. */
int info_rdma(out_t *o);
/* Every preflight check; the tally says how they went. */
void info_preflight(out_t *o, const info_opts_t *opts, const info_config_t *ic, info_tally_t *t);

/* tcp connect to a server entry "host:port" within timeout_ms: true when
 * accepted; else detail says what happened and fix what to do. */
bool info_tcp_connect(const char *entry, int timeout_ms, char *detail, size_t dcap, char *fix,
                      size_t fcap);

/* One check's result, as a line of the report or an object of --json.
 * status: "ok", "warn", "fail" or "skip"; fix only when not ok. */
void info_check(out_t *o, info_tally_t *t, const char *name, const char *status, const char *detail,
                const char *fix);

#endif
