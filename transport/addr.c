/* Address text <-> sockaddr, endpoint names and the clock: shared by every
 * transport (rdma_cm takes the same sockaddr as a socket does). */
#include "transport_int.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Splits "host:port" / "[v6]:port" into host (may be empty) and port text. */
static bool split_host_port(const char *text, char *host, size_t host_cap, const char **port_p)
{
    const char *colon;
    size_t hlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            return false;
        hlen = (size_t)(close - text - 1);
        text++;
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL || memchr(text, ':', (size_t)(colon - text)) != NULL)
            return false; /* bare IPv6 without brackets is ambiguous */
        hlen = (size_t)(colon - text);
    }
    if (hlen >= host_cap)
        return false;
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    *port_p = colon + 1;
    return true;
}

efps_status_t efps__tp_parse_addr(const char *text, bool passive, struct sockaddr_storage *ss_p,
                                  socklen_t *len_p)
{
    char host[256];
    const char *port;
    uint64_t p;
    if (!split_host_port(text, host, sizeof(host), &port)) {
        efps_error("address '%s': expected host:port or [ipv6]:port", text);
        return EFPS_ERR_INVALID;
    }
    if (!efps__parse_u64(port, 0, 65535, &p)) {
        efps_error("address '%s': port '%s' is not a number in 0..65535", text, port);
        return EFPS_ERR_INVALID;
    }
    bool any = host[0] == '\0' || strcmp(host, "*") == 0;
    if (any && !passive) {
        efps_error("address '%s': a host is needed to connect", text);
        return EFPS_ERR_INVALID;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(any ? NULL : host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        efps_error("address '%s': cannot resolve '%s': %s", text, host, gai_strerror(rc));
        return EFPS_ERR_INVALID;
    }
    /* Passive "any": prefer the IPv4 wildcard, which every host has. */
    struct addrinfo *pick = res;
    for (struct addrinfo *ai = res; any && ai != NULL; ai = ai->ai_next)
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    memset(ss_p, 0, sizeof(*ss_p));
    memcpy(ss_p, pick->ai_addr, pick->ai_addrlen);
    *len_p = pick->ai_addrlen;
    freeaddrinfo(res);
    return EFPS_OK;
}

void efps__tp_format_addr(const struct sockaddr *sa, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(buf, cap, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, cap, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, cap, "(family %d)", sa->sa_family);
    }
}

void efps__tp_ep_set_name(efps_tp_ep_t *ep, const char *label, const char *addr)
{
    if (label != NULL && *label != '\0')
        snprintf(ep->name, sizeof(ep->name), "%.60s (%s)", label, addr);
    else
        snprintf(ep->name, sizeof(ep->name), "%s", addr);
}

uint64_t efps__tp_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? 0 : efps__now_ms() + (uint64_t)timeout_ms;
}

bool efps__tp_wait(pthread_cond_t *cond, pthread_mutex_t *lock, uint64_t deadline_ms)
{
    if (deadline_ms == 0) {
        pthread_cond_wait(cond, lock);
        return true;
    }
    const uint64_t now_ns = efps__now_ns(), now = now_ns / 1000000u;
    if (now >= deadline_ms)
        return false;
    const uint64_t ns = now_ns + (deadline_ms - now) * 1000000u;
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    pthread_cond_timedwait(cond, lock, &ts);
    return true;
}
