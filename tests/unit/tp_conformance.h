/* The transport conformance tests: one body of tests that every transport
 * must pass, run by tests/unit/test_transport_tcp.c on the host and by
 * tests/vm/verbs_tp_test.c on Soft-RoCE in the VM. A transport's test
 * program fills a profile (what differs by design: addresses, sizes, how
 * long things may take, where flow control holds a writer back), sets tpc
 * and lists the tpc_test_* functions next to its own tests. The helpers
 * here serve the transport-specific tests too. */
#ifndef EFPS_TP_CONFORMANCE_H
#define EFPS_TP_CONFORMANCE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "efps/transport.h"
#include "efps_internal/util.h"

#include <pthread.h>
#include <sys/types.h>

#define MIB (1024u * 1024u)

typedef struct {
    const char *transport; /* efps_tp_open's name */
    const char *host;      /* the address both ends listen and connect on */
    /* The fork tests' child: false runs it in the forked process, true
     * execs this program with --child RD WR (verbs state is not usable in
     * a forked child); main then calls tpc_child_main. */
    bool child_exec;
    size_t child_region;       /* bytes the child registers for the parent to write */
    int wait_ms;               /* for a connection request that must come */
    int io_ms;                 /* for a completion of the longest write */
    const size_t *write_sizes; /* test_write_sizes, the largest last */
    size_t n_write_sizes;
    int ordering_writes;  /* test_ordering: writes... */
    uint32_t ordering_rq; /* ...through a receive window this deep */
    int n_endpoints;      /* test_many_endpoints, at most TPC_MAX_EPS */
    /* Flow control: true if a writer without credit keeps its writes (no
     * WRITE completion until the receiver polls), false if they go to the
     * network at once (held back there by the receiver). */
    bool writes_wait_for_credit;
    /* Messages likewise: true if a sender blocks (NO_RESOURCE) once the
     * receiver holds EFPS_TP_MSG_DEPTH and as many are queued; false if
     * every message goes out at once and waits in the network. */
    bool msgs_wait_for_credit;
    uint32_t give_up_ms;                /* the connect timeout of test_reject_and_timeouts */
    uint64_t refused_ms;                /* a connect to a closed port fails within */
    uint64_t killed_ms;                 /* a killed peer is reported within */
    bool late_accept_may_succeed;       /* the connector's giving up may be told later */
    bool queued_request_dies_with_peer; /* its connector gone, the queue drops it */
    uint32_t frozen_timeout_ms;
    size_t frozen_write;       /* bytes of the write posted to a frozen peer */
    bool frozen_write_flushed; /* that write completes with EFPS_ERR_PEER */
    /* test_close_with_everything_open: half-made connections of the
     * transport's own, opened before and closed after the contexts. */
    void (*open_extras)(efps_tp_listener_t *l);
    void (*close_extras)(void);
} tpc_profile_t;

#define TPC_MAX_EPS 24

extern const tpc_profile_t *tpc;

void sleep_ms(unsigned ms);
void fill(uint8_t *p, size_t n, uint32_t seed);

efps_tp_ctx_t *tpc_open(uint32_t sq, uint32_t rq, uint32_t timeout_ms);
/* Listens on tpc->host, port 0; addr gets "host:port" to connect to. */
efps_tp_listener_t *tpc_listen(efps_tp_ctx_t *ctx, char *addr, size_t cap);

/* efps_tp_connect waits for the accept, so it runs in a thread of its own. */
typedef struct {
    pthread_t thread;
    efps_tp_ctx_t *ctx;
    char addr[64];
    efps_tp_conn_param_t param;
    efps_tp_ep_t *ep;
    efps_status_t status;
} connector_t;

void connector_start(connector_t *c, efps_tp_ctx_t *ctx, const char *addr,
                     const efps_tp_conn_param_t *param);
efps_status_t connector_join(connector_t *c);

typedef struct {
    efps_tp_ctx_t *srv, *cli;
    efps_tp_listener_t *listener;
    efps_tp_ep_t *sep, *cep; /* the server's and the client's end */
    char addr[64];
} pair_t;

efps_tp_ep_t *accept_one(efps_tp_listener_t *l, const char *label, void *context);
void pair_open(pair_t *p, uint32_t sq, uint32_t rq, uint32_t timeout_ms);
void pair_close(pair_t *p);

/* The key with which ep's peer may write into mr (asserted to work). */
efps_tp_rkey_t tpc_expose(efps_tp_ep_t *ep, efps_tp_mr_t *mr);

/* Polls until want completions are collected or timeout_ms passes. */
int poll_n(efps_tp_ctx_t *ctx, efps_tp_cqe_t *out, int want, int timeout_ms);
efps_tp_cqe_t poll_one(efps_tp_ctx_t *ctx, int timeout_ms);
/* Waits for ep's DISCONNECT, checking that only writes of ep come first
 * (*flushed_p: how many of them failed with EFPS_ERR_PEER). */
efps_tp_cqe_t wait_disconnect(efps_tp_ctx_t *ctx, efps_tp_ep_t *ep, int timeout_ms, int *flushed_p);
/* Writes and waits for both completions, checking what they say. */
void write_and_wait(pair_t *p, efps_tp_mr_t *src, size_t soff, size_t len,
                    const efps_tp_rkey_t *dst, uint64_t doff, uint32_t imm);

/* Captures what the library logs to stderr between start and stop (the
 * text is echoed to stderr too). */
void capture_start(void);
char *capture_stop(void);

/* The fork tests' child: connects to the parent, registers a region and
 * sends its key, then waits to be killed. */
void tpc_child_main(int port_rd, int ready_wr);

/* The conformance tests. */
void tpc_test_write_sizes(void **state);
void tpc_test_ordering(void **state);
void tpc_test_send_queue_full(void **state);
void tpc_test_receive_backpressure(void **state);
void tpc_test_many_endpoints(void **state);
void tpc_test_private_data_and_messages(void **state);
void tpc_test_reject_and_timeouts(void **state);
void tpc_test_peer_killed(void **state);
void tpc_test_peer_frozen(void **state);
void tpc_test_close_with_everything_open(void **state);
void tpc_test_key_bound_to_connection(void **state);
void tpc_test_connect_before_listen(void **state);

#endif
