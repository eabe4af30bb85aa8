/* efps-perf internals: the raw-socket reference and local process launch. */
#ifndef EFPS_PERF_H
#define EFPS_PERF_H

#include "efps/ps.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

double perf_now(void);

/* Raw TCP over loopback between this process and a forked echo child: the
 * seconds that iters iterations (send bytes, receive them back) take after
 * one warm-up iteration; < 0 on failure. */
double raw_socket_seconds(size_t bytes, int iters);

/* Starts S efps servers as child processes on 127.0.0.1 with free ports;
 * fills servers ("host:port,...") and pids. */
int launch_servers(int S, int M, const efps_ps_config_t *base, char *servers, size_t cap,
                   pid_t *pids);
/* Waits for a child, killing it after timeout_s; its exit status or -1. */
int wait_child(pid_t pid, int timeout_s);

#endif
