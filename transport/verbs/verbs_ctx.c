/* The verbs transport's context: device resources, the progress thread
 * (busy-polls the CQ while completions keep coming, then sleeps on the
 * completion channel, the rdma_cm event channel and a kick eventfd), timers
 * and the application's poll. */
#include "verbs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* How long the progress thread keeps polling after the last completion
 * before it sleeps on the completion channel. */
#define VERBS_SPIN_NS 30000u
/* Loop turns between peeks at the event fds while spinning. */
#define VERBS_SPIN_PEEK 16

/* ---- the progress thread ------------------------------------------------ */
int efps__verbs_progress_cq(verbs_ctx_t *ctx)
{
    struct ibv_wc wc[32];
    pthread_mutex_lock(&ctx->cq_lock);
    int n = ibv_poll_cq(ctx->hw_cq, 32, wc);
    pthread_mutex_unlock(&ctx->cq_lock);
    if (n < 0) {
        efps_error("verbs: %s: ibv_poll_cq failed (%d)", ctx->dev_name, n);
        return 0;
    }
    if (n == 0)
        return 0;
    pthread_mutex_lock(&ctx->base.lock);
    for (int i = 0; i < n; i++) {
        /* A failed completion's opcode is undefined: wr_id says which queue. */
        if (wc[i].wr_id & VERBS_WR_RECV) {
            efps__verbs_rx_complete(ctx, &wc[i]);
            continue;
        }
        verbs_ep_t *ep = efps__verbs_ep_by_qp(ctx, wc[i].qp_num);
        if (ep != NULL)
            efps__verbs_tx_complete(ep, &wc[i]);
    }
    efps__verbs_rx_refill(ctx);
    pthread_mutex_unlock(&ctx->base.lock);
    return n;
}

static void check_ep(verbs_ep_t *ep, uint64_t now)
{
    uint32_t timeout = ep->ctx->base.attr.timeout_ms;
    if (ep->base.state == EFPS_TP_EP_DOWN && ep->disc_pending && now >= ep->deadline_ms) {
        /* The device never flushed them: account for them ourselves. */
        efps__verbs_tx_abandon_posted(ep, true);
        efps__verbs_ep_flushed(ep);
        return;
    }
    if (ep->base.state != EFPS_TP_EP_CONNECTED || ep->closing != VCLOSE_NONE)
        return;
    if (!ep->established) {
        if (now >= ep->deadline_ms)
            efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_TIMEOUT,
                             "connection not established within %u ms", timeout);
        return;
    }
    if (now > ep->last_rx_ms && now - ep->last_rx_ms >= timeout) {
        efps__tp_ep_fail(&(ep)->base, EFPS_LOG_ERROR, EFPS_ERR_TIMEOUT,
                         "peer silent for %llu ms (timeout %u ms)",
                         (unsigned long long)(now - ep->last_rx_ms), timeout);
        return;
    }
    if (now > ep->last_tx_ms && now - ep->last_tx_ms >= ep->hb_ms)
        efps__verbs_send_credit(ep, true);
}

void efps__verbs_check_timers(verbs_ctx_t *ctx, uint64_t now)
{
    for (verbs_ep_t *ep = VERBS_EP(ctx->base.eps), *next; ep != NULL; ep = next) {
        next = VERBS_EP(ep->base.next);
        if (ep->base.state == EFPS_TP_EP_QUEUED && now >= ep->deadline_ms && !ep->want_destroy) {
            efps_warn("verbs: connection request from %s not taken within %u ms: rejected",
                      ep->addr, ctx->base.attr.timeout_ms);
            ep->base.rejecting = ep->want_destroy = true;
            ctx->teardown_dirty = true;
            continue;
        }
        check_ep(ep, now);
    }
}

/* Takes the completion channel's events (and acks them in batches). */
static void drain_channel(verbs_ctx_t *ctx)
{
    struct ibv_cq *cq;
    void *cq_ctx;
    while (ibv_get_cq_event(ctx->channel, &cq, &cq_ctx) == 0)
        ctx->cq_events++;
    if (ctx->cq_events >= 256) {
        ibv_ack_cq_events(ctx->hw_cq, ctx->cq_events);
        ctx->cq_events = 0;
    }
}

/* Waits up to timeout_ms for any fd; handles the channel and the kicks.
 * Returns true if rdma_cm has events. */
static bool wait_events(verbs_ctx_t *ctx, int timeout_ms)
{
    struct epoll_event evs[4];
    bool cm = false;
    int n = epoll_wait(ctx->epfd, evs, 4, timeout_ms);
    for (int i = 0; i < n; i++) {
        if (evs[i].data.fd == ctx->channel->fd) {
            drain_channel(ctx);
        } else if (evs[i].data.fd == ctx->evfd) {
            uint64_t count;
            ssize_t rc = read(ctx->evfd, &count, sizeof(count));
            (void)rc;
        } else {
            cm = true;
        }
    }
    return cm;
}

static void *progress_main(void *arg)
{
    verbs_ctx_t *ctx = arg;
    uint64_t next_timer = 0, spin_until = 0;
    unsigned turn = 0;
    bool cm = true;
    efps__verbs_pin_thread(ctx);
    for (;;) {
        pthread_mutex_lock(&ctx->base.lock);
        bool stop = ctx->stop,
             work = ctx->kicked || ctx->teardown_dirty || ctx->base.listeners_dirty;
        ctx->kicked = false;
        if (work && !stop)
            efps__verbs_run_teardowns(ctx);
        bool closing = ctx->teardown_dirty;
        uint32_t tick = ctx->tick_ms;
        pthread_mutex_unlock(&ctx->base.lock);
        if (stop)
            break;
        int n = efps__verbs_progress_cq(ctx);
        if (cm)
            efps__verbs_cm_events(ctx);
        cm = false;
        uint64_t now = efps__now_ms();
        if (next_timer > now + tick) /* a new endpoint needs a shorter tick */
            next_timer = now + tick;
        if (now >= next_timer) {
            pthread_mutex_lock(&ctx->base.lock);
            efps__verbs_check_timers(ctx, now);
            next_timer = now + ctx->tick_ms;
            pthread_mutex_unlock(&ctx->base.lock);
            cm = true;
        }
        uint64_t t = efps__now_ns();
        if (n > 0)
            spin_until = t + VERBS_SPIN_NS;
        if (t < spin_until) {
            if (++turn % VERBS_SPIN_PEEK == 0)
                cm = wait_events(ctx, 0); /* kicks and cm events, without sleeping */
            continue;
        }
        /* Idle: ask for an event, then look once more (a completion may have
         * come in between), then sleep until an fd or the next timer. */
        pthread_mutex_lock(&ctx->cq_lock);
        ibv_req_notify_cq(ctx->hw_cq, 0);
        pthread_mutex_unlock(&ctx->cq_lock);
        if (efps__verbs_progress_cq(ctx) > 0) {
            spin_until = efps__now_ns() + VERBS_SPIN_NS;
            continue;
        }
        int sleep_ms = closing ? 1 : (int)(next_timer > now ? next_timer - now : 0);
        cm = wait_events(ctx, sleep_ms);
    }
    return NULL;
}

/* ---- open / close ----------------------------------------------------------- */
static efps_status_t init_sync(verbs_ctx_t *ctx)
{
    if (efps__tp_base_init(&ctx->base) != EFPS_OK || pthread_mutex_init(&ctx->cq_lock, NULL) != 0)
        return EFPS_ERR_SYSTEM;
    return EFPS_OK;
}

static void destroy_sync(verbs_ctx_t *ctx)
{
    pthread_mutex_destroy(&ctx->cq_lock);
    efps__tp_base_destroy(&ctx->base);
}

static bool set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

static bool watch(verbs_ctx_t *ctx, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    return set_nonblock(fd) && epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

/* The queues every endpoint shares. */
static efps_status_t create_queues(verbs_ctx_t *ctx)
{
    const char *what;
    int err;
    what = "ibv_alloc_pd";
    if ((ctx->pd = ibv_alloc_pd(ctx->verbs)) == NULL)
        goto err;
    what = "ibv_create_comp_channel";
    if ((ctx->channel = ibv_create_comp_channel(ctx->verbs)) == NULL)
        goto err;
    ctx->cq_cap = ctx->dev_attr.max_cqe < 4096 ? ctx->dev_attr.max_cqe : 4096;
    what = "ibv_create_cq";
    if ((ctx->hw_cq = ibv_create_cq(ctx->verbs, ctx->cq_cap, ctx, ctx->channel, 0)) == NULL)
        goto err;
    ctx->cq_cap = ctx->hw_cq->cqe;
    struct ibv_srq_init_attr sa = {.attr = {.max_sge = 1}};
    sa.attr.max_wr = ctx->dev_attr.max_srq_wr < 1024 ? (uint32_t)ctx->dev_attr.max_srq_wr : 1024;
    what = "ibv_create_srq";
    if ((ctx->srq = ibv_create_srq(ctx->pd, &sa)) == NULL)
        goto err;
    ctx->srq_cap = sa.attr.max_wr;
    what = "rdma_create_event_channel";
    if ((ctx->cm = rdma_create_event_channel()) == NULL)
        goto err;
    /* Keys bound to one QP need type-2B memory windows (efps_tp_mem_expose). */
    ctx->mw_type2 = (ctx->dev_attr.device_cap_flags & IBV_DEVICE_MEM_WINDOW_TYPE_2B) != 0 &&
                    ctx->dev_attr.max_mw > 0;
    if (!ctx->mw_type2)
        efps_warn("verbs: %s has no type-2B memory windows: a region key will work on every "
                  "connection to this process, not only the one it was given to",
                  ctx->dev_name);
    return EFPS_OK;
err:
    err = efps__verbs_ptr_errno();
    efps_error("verbs: open %s: %s: %s", ctx->dev_name, what, strerror(err));
    return efps__verbs_errno_status(err) == EFPS_ERR_NOMEM ? EFPS_ERR_NOMEM : EFPS_ERR_TRANSPORT;
}

static void destroy_queues(verbs_ctx_t *ctx)
{
    if (ctx->cm != NULL)
        rdma_destroy_event_channel(ctx->cm);
    if (ctx->srq != NULL)
        ibv_destroy_srq(ctx->srq);
    efps__verbs_rx_free(ctx);
    if (ctx->hw_cq != NULL) {
        ibv_ack_cq_events(ctx->hw_cq, ctx->cq_events);
        ibv_destroy_cq(ctx->hw_cq);
    }
    if (ctx->channel != NULL)
        ibv_destroy_comp_channel(ctx->channel);
    if (ctx->pd != NULL)
        ibv_dealloc_pd(ctx->pd);
}

/* Depths the device can take: a queue pair's send queue and an endpoint's
 * share of receive buffers. */
static efps_status_t check_limits(const verbs_ctx_t *ctx, const efps_tp_attr_t *attr)
{
    uint64_t sq = 2ull * attr->sq_depth + EFPS_TP_MSG_DEPTH * VERBS_MSG_CHUNKS + VERBS_CTRL_DEPTH;
    uint64_t rx =
        (uint64_t)attr->rq_depth + EFPS_TP_MSG_DEPTH * VERBS_MSG_CHUNKS + VERBS_CTRL_DEPTH;
    if (sq > (uint64_t)ctx->dev_attr.max_qp_wr || rx > (uint64_t)ctx->dev_attr.max_srq_wr ||
        sq + rx > (uint64_t)ctx->dev_attr.max_cqe) {
        efps_error("verbs: sq_depth %u / rq_depth %u need %llu send and %llu receive work "
                   "requests; %s allows %d, %d (completion queue %d)",
                   attr->sq_depth, attr->rq_depth, (unsigned long long)sq, (unsigned long long)rx,
                   ctx->dev_name, ctx->dev_attr.max_qp_wr, ctx->dev_attr.max_srq_wr,
                   ctx->dev_attr.max_cqe);
        return EFPS_ERR_INVALID;
    }
    return EFPS_OK;
}

static void verbs_free(verbs_ctx_t *ctx)
{
    destroy_queues(ctx);
    if (ctx->evfd >= 0)
        close(ctx->evfd);
    if (ctx->epfd >= 0)
        close(ctx->epfd);
    efps__verbs_free_placement(ctx);
    destroy_sync(ctx);
    free(ctx);
}

static efps_status_t verbs_open(const efps_tp_attr_t *attr, efps_tp_ctx_t **ctx_p)
{
    verbs_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        efps_error("verbs: open: out of memory");
        return EFPS_ERR_NOMEM;
    }
    ctx->base.ops = &efps__verbs_ops;
    ctx->base.attr = *attr;
    ctx->tick_ms = attr->timeout_ms / 8 > 0 ? attr->timeout_ms / 8 : 1;
    ctx->epfd = ctx->evfd = -1;
    if (init_sync(ctx) != EFPS_OK) {
        efps_error("verbs: open: cannot create a mutex");
        free(ctx);
        return EFPS_ERR_SYSTEM;
    }
    efps_status_t status = efps__verbs_pick_device(ctx, attr);
    if (status == EFPS_OK)
        status = check_limits(ctx, attr);
    if (status == EFPS_OK)
        status = create_queues(ctx);
    if (status != EFPS_OK)
        goto err_free;
    status = EFPS_ERR_SYSTEM;
    ctx->epfd = epoll_create1(EPOLL_CLOEXEC);
    ctx->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ctx->epfd < 0 || ctx->evfd < 0 || !watch(ctx, ctx->evfd) || !watch(ctx, ctx->channel->fd) ||
        !watch(ctx, ctx->cm->fd)) {
        efps_error("verbs: open %s: cannot watch its event fds: %s", ctx->dev_name,
                   strerror(errno));
        goto err_free;
    }
    int rc = pthread_create(&ctx->thread, NULL, progress_main, ctx);
    if (rc != 0) {
        efps_error("verbs: open %s: cannot start the progress thread: %s", ctx->dev_name,
                   strerror(rc));
        goto err_free;
    }
    efps_info("verbs: opened %s port %u (max message %u bytes)", ctx->dev_name, ctx->port,
              ctx->max_msg);
    *ctx_p = &ctx->base;
    return EFPS_OK;

err_free:
    verbs_free(ctx);
    return status;
}

static void verbs_close(efps_tp_ctx_t *base)
{
    verbs_ctx_t *ctx = VERBS_CTX(base);
    pthread_mutex_lock(&ctx->base.lock);
    ctx->stop = true;
    efps__verbs_kick(ctx);
    pthread_mutex_unlock(&ctx->base.lock);
    pthread_join(ctx->thread, NULL);
    /* Alone now: free whatever the application left open. */
    efps__verbs_conn_free_all(ctx);
    while (ctx->mrs != NULL) {
        verbs_mr_t *mr = ctx->mrs;
        ctx->mrs = mr->next;
        ibv_dereg_mr(mr->mr);
        free(mr);
    }
    verbs_free(ctx);
}

/* ---- hooks of the neutral base (lock held) -------------------------------- */

/* Credit goes back to the peer as soon as no CREDIT is in flight. */
static void verbs_rx_credit(efps_tp_ep_t *base, bool message)
{
    verbs_ep_t *ep = VERBS_EP(base);
    if (message)
        ep->owed_msgs++;
    else
        ep->owed_writes++;
    efps__verbs_send_credit(ep, false);
}

static void verbs_kick(efps_tp_ctx_t *ctx)
{
    efps__verbs_kick(VERBS_CTX(ctx));
}

static void verbs_ep_free(efps_tp_ep_t *ep)
{
    efps__verbs_ep_free(VERBS_EP(ep));
}

const struct efps_transport_ops efps__verbs_ops = {
    .name = "verbs",
    .id = EFPS_TP_ID_VERBS,
    .probe = efps__verbs_probe,
    .open = verbs_open,
    .close = verbs_close,
    .mem_reg = efps__verbs_mem_reg,
    .mem_dereg = efps__verbs_mem_dereg,
    .mem_expose = efps__verbs_mem_expose,
    .listen = efps__verbs_listen,
    .accept = efps__verbs_accept,
    .connect = efps__verbs_connect,
    .ep_teardown = efps__verbs_ep_teardown_start,
    .ep_free = verbs_ep_free,
    .write_imm = efps__verbs_write_imm,
    .msg_send = efps__verbs_msg_send,
    .rx_credit = verbs_rx_credit,
    .request_taken = efps__verbs_request_taken,
    .ep_failed = efps__verbs_ep_failed,
    .kick = verbs_kick,
};
