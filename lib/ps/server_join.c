/* The join phase on the server (issue 12): until every rank has joined at
 * once (the run starts), one bad or lost joiner does not end the run. Its
 * rank is open again for a correct worker until the join deadline
 * (EFPS_TIMEOUT_MS without any event), and every worker that has joined is
 * told at once who was refused or lost and why (a NOTICE), so the user
 * watching any worker sees the culprit. At the deadline the joined workers
 * are told which ranks are missing and the last reason. */
#include "server_int.h"

#include <stdio.h>
#include <string.h>

/* Notices about one rank go out at most once a second: a crowd of strangers
 * claiming it must not flood the workers' logs. */
#define PS_NOTICE_EVERY_MS 1000

static bool has_joined(const worker_t *o)
{
    return o != NULL && o->state >= W_AUTHED && o->state <= W_READY;
}

/* The rank a refused peer claims: an authenticated worker's, or what the
 * hello of an efps worker says (-1: none in range). Not authenticated, so
 * it is only ever reported as claimed, with the address. */
static int claimed_rank(const server_t *sv, const worker_t *w)
{
    const ps_hello_t *h = &w->hello;
    if (w->rank >= 0)
        return w->rank;
    if (h->magic != PS_MAGIC || h->role != EFPS_ROLE_WORKER || h->rank >= (uint32_t)sv->M)
        return -1;
    return (int)h->rank;
}

static void send_notice(const server_t *sv, worker_t *o, int rank)
{
    uint8_t m[8 + PS_NOTICE_MAX];
    const size_t n = strnlen(sv->missing_why[rank], PS_NOTICE_MAX - 1);
    efps__put_le32(m, PS_MSG_NOTICE);
    efps__put_le32(m + 4, (uint32_t)rank);
    memcpy(m + 8, sv->missing_why[rank], n);
    m[8 + n] = '\0';
    (void)efps_tp_msg_send(o->ep, m, 8 + n + 1); /* best effort: a lost one changes nothing */
}

void efps__srv_release_rank(server_t *sv, worker_t *w)
{
    if (w->rank < 0 || sv->by_rank[w->rank] != w)
        return;
    sv->by_rank[w->rank] = NULL;
    /* Before the run starts no part has been reduced: a push it made is
     * still counted in its part's step and must not be counted twice. */
    for (size_t p = 0; has_slots(w) && p < sv->layout.nparts; p++)
        if (sv->parts[p].mine && w->got[p] > sv->parts[p].step)
            sv->parts[p].count--;
}

void efps__srv_notice(server_t *sv, const worker_t *w, const char *what, const char *why)
{
    const int r = claimed_rank(sv, w);
    if (sv->started || r < 0 || sv->by_rank[r] != NULL)
        return; /* no rank it could have taken */
    if (w->rank >= 0)
        snprintf(sv->missing_why[r], PS_NOTICE_MAX, "server %d %s %s: %s", sv->cfg.rank, what,
                 wname(w), why);
    else /* name "peer ADDR" */
        snprintf(sv->missing_why[r], PS_NOTICE_MAX,
                 "server %d %s the peer at %s claiming worker %d: %s", sv->cfg.rank, what,
                 wname(w) + 5, r, why);
    const int64_t now = efps__now_ms();
    if (sv->noticed[r] != 0 && now - sv->noticed[r] < PS_NOTICE_EVERY_MS)
        return;
    sv->noticed[r] = now;
    for (int o = 0; o < sv->M; o++)
        if (has_joined(sv->by_rank[o]))
            send_notice(sv, sv->by_rank[o], r);
}

void efps__srv_notices_to(server_t *sv, worker_t *w)
{
    sv->missing_why[w->rank][0] = '\0'; /* its rank is taken: old news */
    sv->noticed[w->rank] = 0;
    for (int r = 0; !sv->started && r < sv->M; r++)
        if (sv->by_rank[r] == NULL && sv->missing_why[r][0] != '\0')
            send_notice(sv, w, r);
}

void efps__srv_joined(server_t *sv, worker_t *w)
{
    int ready = 0;
    for (int r = 0; r < sv->M; r++)
        ready += sv->by_rank[r] != NULL && sv->by_rank[r]->state >= W_READY;
    efps_info("server %d: %s joined (%d of %d worker%s)", sv->cfg.rank, wname(w), ready, sv->M,
              ps_s(sv->M));
    if (ready == sv->M && !sv->started) {
        sv->started = true;
        efps_info("server %d: all %d worker%s joined: the run starts", sv->cfg.rank, sv->M,
                  ps_s(sv->M));
    }
}

bool efps__srv_lost_joiner(server_t *sv, worker_t *w)
{
    if (sv->started || w->rank < 0 || sv->by_rank[w->rank] != w)
        return false;
    efps_error("server %d: %s disconnected before the run started; its rank is open again until "
               "the join deadline",
               sv->cfg.rank, wname(w));
    efps__srv_release_rank(sv, w);
    efps__srv_notice(sv, w, "lost", "it disconnected before the run started");
    efps_tp_ep_destroy(w->ep); /* its last completion: nothing refers to it */
    w->ep = NULL;
    w->state = W_CLOSED; /* freed by the next sweep */
    return true;
}

static bool is_missing(const server_t *sv, int r)
{
    return sv->by_rank[r] == NULL || sv->by_rank[r]->state < W_READY;
}

/* "worker 2" or "workers 2, 3" (the first eight), and the last reason known
 * about one of them. */
static void missing_ranks(const server_t *sv, char *list, size_t cap, const char **why_p)
{
    int n = 0;
    for (int r = 0; r < sv->M; r++)
        n += is_missing(sv, r);
    size_t len = (size_t)snprintf(list, cap, "worker%s", ps_s(n));
    *why_p = NULL;
    for (int r = 0, k = 0; r < sv->M && len < cap; r++) {
        if (!is_missing(sv, r))
            continue;
        if (*why_p == NULL && sv->missing_why[r][0] != '\0')
            *why_p = sv->missing_why[r];
        if (k < 8)
            len += (size_t)snprintf(list + len, cap - len, "%s%d", k ? ", " : " ", r);
        else if (k == 8)
            len += (size_t)snprintf(list + len, cap - len, ", ...");
        k++;
    }
}

efps_status_t efps__srv_join_failed(server_t *sv, int ready)
{
    char list[128] = "";
    const char *why;
    missing_ranks(sv, list, sizeof(list), &why);
    efps_error("server %d: only %d of %d worker%s joined within %d ms (EFPS_TIMEOUT_MS): %s "
               "missing%s%s",
               sv->cfg.rank, ready, sv->M, ps_s(sv->M), sv->cfg.timeout_ms, list,
               why ? "; last: " : "", why ? why : "");
    for (int r = 0; r < sv->M; r++)
        if (has_joined(sv->by_rank[r]))
            ps_send_refuse(sv->by_rank[r]->ep,
                           "server %d stopped: %s did not join within %d ms "
                           "(EFPS_TIMEOUT_MS)%s%s",
                           sv->cfg.rank, list, sv->cfg.timeout_ms, why ? "; last: " : "",
                           why ? why : "");
    return EFPS_ERR_TIMEOUT;
}
