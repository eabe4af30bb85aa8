/* efps-perf internals: the raw-socket reference and local process launch. */
#ifndef EFPS_PERF_H
#define EFPS_PERF_H

#include "efps/ps.h"
#include "efps_internal/util.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Raw TCP over loopback between this process and a forked echo child: the
 * seconds that iters iterations (send bytes, receive them back) take after
 * one warm-up iteration; < 0 on failure. */
double raw_socket_seconds(size_t bytes, int iters);

/* Starts S efps servers as child processes on host (an IPv4 address or
 * name; 127.0.0.1 for tcp, an RDMA device's address for verbs) with free
 * ports; fills servers ("host:port,...") and pids. */
int launch_servers(int S, int M, const efps_ps_config_t *base, const char *host, char *servers,
                   size_t cap, pid_t *pids);

/* --write-bw (wbw.c): one-way transport write bandwidth, as ib_write_bw. */
typedef struct {
    size_t size;
    int iters, tx_depth;
    const char *transport, *host;
} wbw_opts_t;
/* Sender's and receiver's MB/s (2^20 bytes) of one run; < 0 on failure. */
int write_bw_run(const wbw_opts_t *o, double *send_mbs_p, double *recv_mbs_p);
/* Waits for a child, killing it after timeout_s; its exit status or -1. */
int wait_child(pid_t pid, int timeout_s);

#endif
