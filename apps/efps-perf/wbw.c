/* efps-perf --write-bw: one-way write bandwidth of an efps transport, the
 * figure that perftest's ib_write_bw reports for raw verbs.
 *
 * A receiver process listens, registers a `size`-byte region with remote
 * write and sends its key; a sender process registers a `size`-byte source
 * and streams `iters` efps_tp_write_imm of the whole buffer into it, keeping
 * up to tx_depth writes outstanding, exactly as a `none` push does (one
 * write_imm from registered memory into the server's registered slot, no
 * copy). The receiver polls every RECV (in order, imm checked) and returns
 * credit as the application does; at the end it checks the bytes.
 * BW average = size * iters / (first post .. last WRITE completion), in MB/s
 * of 2^20 bytes like ib_write_bw (the receiver's view is printed too).
 * Both sides are forked children: the parent never touches the device, so
 * a sweep can fork again (a process that used verbs cannot fork a user). */
#include "perf.h"

#include "efps/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    double seconds; /* sender: first post .. last completion; receiver: first .. last RECV */
    int ok;
} wbw_side_t;

static uint8_t pattern(size_t i)
{
    return (uint8_t)(i * 131u + (i >> 12) * 7u + 1u);
}

/* Polls one completion of the wanted type, up to 30 s of silence. */
static int poll_cqe(efps_tp_ctx_t *ctx, efps_tp_cqe_t *cqes, int max, int *n_p)
{
    double end = efps__now_s() + 30;
    while (efps__now_s() < end) {
        if (efps_tp_poll(ctx, cqes, max, 100, n_p) != EFPS_OK)
            return -1;
        if (*n_p > 0)
            return 0;
    }
    fprintf(stderr, "efps-perf --write-bw: nothing completed for 30 s\n");
    return -1;
}

static int receiver(const wbw_opts_t *o, int port_wr, wbw_side_t *r)
{
    efps_tp_ctx_t *ctx = NULL;
    efps_tp_listener_t *l = NULL;
    efps_tp_conn_req_t *req = NULL;
    efps_tp_ep_t *ep = NULL;
    efps_tp_mr_t *mr = NULL;
    uint8_t *dst = efps_aligned_calloc(o->size);
    char addr[300];
    snprintf(addr, sizeof(addr), strchr(o->host, ':') ? "[%s]:0" : "%s:0", o->host);
    if (dst == NULL || efps_tp_open(o->transport, NULL, &ctx) != EFPS_OK ||
        efps_tp_listen(ctx, addr, &l) != EFPS_OK)
        goto out;
    uint16_t port = efps_tp_listener_port(l);
    if (write(port_wr, &port, sizeof(port)) != sizeof(port) ||
        efps_tp_get_request(l, 60000, &req) != EFPS_OK ||
        efps_tp_accept(req, NULL, &ep) != EFPS_OK ||
        efps_tp_mem_reg(ctx, dst, o->size, EFPS_TP_ACCESS_REMOTE_WRITE, &mr) != EFPS_OK)
        goto out;
    efps_tp_rkey_t rkey;
    uint8_t key[EFPS_TP_RKEY_PACKED];
    if (efps_tp_mem_expose(ep, mr, &rkey) != EFPS_OK)
        goto out;
    efps_tp_rkey_pack(&rkey, key);
    if (efps_tp_msg_send(ep, key, sizeof(key)) != EFPS_OK)
        goto out;
    double t0 = 0;
    for (int got = 0; got < o->iters;) {
        efps_tp_cqe_t cqes[64];
        int n = 0;
        if (poll_cqe(ctx, cqes, 64, &n) != 0)
            goto out;
        for (int i = 0; i < n; i++, got++) {
            if (cqes[i].type != EFPS_TP_CQE_RECV || cqes[i].imm != (uint32_t)got) {
                fprintf(stderr, "efps-perf --write-bw: receiver got %s imm %u, expected RECV %d\n",
                        efps_tp_cqe_type_name(cqes[i].type), cqes[i].imm, got);
                goto out;
            }
            if (got == 0)
                t0 = efps__now_s();
        }
    }
    r->seconds = efps__now_s() - t0;
    for (size_t i = 0; i < o->size; i++)
        if (dst[i] != pattern(i)) {
            fprintf(stderr, "efps-perf --write-bw: byte %zu differs at the receiver\n", i);
            goto out;
        }
    r->ok = efps_tp_msg_send(ep, "done", 5) == EFPS_OK;
    /* The sender closes once it has read "done": wait for that, so only one
     * side starts the goodbye. */
    for (double end = efps__now_s() + 30; r->ok && efps__now_s() < end;) {
        efps_tp_cqe_t cqe;
        int n = 0;
        if (efps_tp_poll(ctx, &cqe, 1, 100, &n) != EFPS_OK ||
            (n == 1 && cqe.type == EFPS_TP_CQE_DISCONNECT))
            break;
    }
out:
    efps_tp_ep_destroy(ep);
    efps_tp_listener_destroy(l);
    efps_tp_mem_dereg(mr);
    efps_tp_close(ctx);
    efps_aligned_free(dst);
    return r->ok ? 0 : 1;
}

static int sender(const wbw_opts_t *o, int port_rd, wbw_side_t *r)
{
    efps_tp_ctx_t *ctx = NULL;
    efps_tp_ep_t *ep = NULL;
    efps_tp_mr_t *mr = NULL;
    uint8_t *src = efps_aligned_alloc(o->size);
    uint16_t port;
    char addr[300], buf[EFPS_TP_MSG_MAX];
    size_t len;
    efps_tp_attr_t attr = {.sq_depth = (uint32_t)o->tx_depth};
    if (src == NULL || read(port_rd, &port, sizeof(port)) != sizeof(port))
        goto out;
    for (size_t i = 0; i < o->size; i++)
        src[i] = pattern(i);
    snprintf(addr, sizeof(addr), strchr(o->host, ':') ? "[%s]:%u" : "%s:%u", o->host, port);
    efps_tp_rkey_t key;
    if (efps_tp_open(o->transport, &attr, &ctx) != EFPS_OK ||
        efps_tp_connect(ctx, addr, NULL, &ep) != EFPS_OK ||
        efps_tp_mem_reg(ctx, src, o->size, 0, &mr) != EFPS_OK ||
        efps_tp_msg_recv(ep, buf, sizeof(buf), &len, 30000) != EFPS_OK ||
        len != EFPS_TP_RKEY_PACKED || efps_tp_rkey_unpack((uint8_t *)buf, &key) != EFPS_OK)
        goto out;
    int posted = 0, done = 0;
    double t0 = efps__now_s();
    while (done < o->iters) {
        while (posted < o->iters) {
            efps_status_t s =
                efps_tp_write_imm(ep, mr, 0, o->size, &key, 0, (uint32_t)posted, (uint64_t)posted);
            if (s == EFPS_ERR_NO_RESOURCE)
                break;
            if (s != EFPS_OK)
                goto out;
            posted++;
        }
        efps_tp_cqe_t cqes[64];
        int n = 0;
        if (poll_cqe(ctx, cqes, 64, &n) != 0)
            goto out;
        for (int i = 0; i < n; i++, done++)
            if (cqes[i].type != EFPS_TP_CQE_WRITE || cqes[i].status != EFPS_OK)
                goto out;
    }
    r->seconds = efps__now_s() - t0;
    r->ok = efps_tp_msg_recv(ep, buf, sizeof(buf), &len, 60000) == EFPS_OK && len == 5 &&
            strcmp(buf, "done") == 0;
out:
    efps_tp_ep_destroy(ep);
    efps_tp_mem_dereg(mr);
    efps_tp_close(ctx);
    efps_aligned_free(src);
    return r->ok ? 0 : 1;
}

/* Runs one side in a child; its result comes back through res_fd. */
static pid_t spawn(int (*side)(const wbw_opts_t *, int, wbw_side_t *), const wbw_opts_t *o, int fd,
                   int res_fd)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        wbw_side_t r = {0};
        side(o, fd, &r);
        ssize_t w = write(res_fd, &r, sizeof(r));
        _exit(w == sizeof(r) && r.ok ? 0 : 1);
    }
    return pid;
}

int write_bw_run(const wbw_opts_t *o, double *send_mbs_p, double *recv_mbs_p)
{
    int port[2], sres[2], rres[2];
    if (pipe(port) != 0 || pipe(sres) != 0 || pipe(rres) != 0)
        return -1;
    pid_t rp = spawn(receiver, o, port[1], rres[1]);
    pid_t sp = spawn(sender, o, port[0], sres[1]);
    close(port[0]);
    close(port[1]);
    close(sres[1]);
    close(rres[1]);
    wbw_side_t s = {0}, r = {0};
    int bad = read(sres[0], &s, sizeof(s)) != sizeof(s) || !s.ok;
    bad |= read(rres[0], &r, sizeof(r)) != sizeof(r) || !r.ok;
    close(sres[0]);
    close(rres[0]);
    bad |= wait_child(sp, 60) != 0;
    bad |= wait_child(rp, 60) != 0;
    if (bad) {
        fprintf(stderr, "efps-perf --write-bw: %zu bytes over %s failed\n", o->size, o->transport);
        return -1;
    }
    const double bytes = (double)o->size * o->iters;
    *send_mbs_p = bytes / s.seconds / (1 << 20);
    *recv_mbs_p = r.seconds > 0 ? bytes / r.seconds / (1 << 20) : 0;
    return 0;
}
