/* The probes behind efps-info's network checks: a tcp connect with a
 * deadline, and the problem + fix for each way it fails. */
#include "info.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* "host:port" or "[v6]:port" into host and port; false when malformed. */
static bool split(const char *entry, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon = strrchr(entry, ':');
    if (colon == NULL || colon[1] == '\0')
        return false;
    size_t hlen = (size_t)(colon - entry);
    if (entry[0] == '[' && hlen >= 2 && entry[hlen - 1] == ']') {
        entry++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= hcap || strlen(colon + 1) >= pcap)
        return false;
    memcpy(host, entry, hlen);
    host[hlen] = '\0';
    snprintf(port, pcap, "%s", colon + 1);
    return true;
}

/* 0 when connect() on one address succeeded within timeout_ms, else errno. */
static int try_connect(const struct addrinfo *ai, int timeout_ms)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int err = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        err = errno;
        if (err == EINPROGRESS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            socklen_t len = sizeof(err);
            if (poll(&pfd, 1, timeout_ms) <= 0)
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                err = errno;
        }
    }
    close(fd);
    return err;
}

bool info_tcp_connect(const char *entry, int timeout_ms, char *detail, size_t dcap, char *fix,
                      size_t fcap)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res = NULL;
    if (!split(entry, host, sizeof(host), port, sizeof(port))) {
        snprintf(detail, dcap, "'%s' is not host:port", entry);
        snprintf(fix, fcap, "write EFPS_SERVERS as host:port,host:port,... in rank order");
        return false;
    }
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(detail, dcap, "cannot resolve '%s': %s", host, gai_strerror(rc));
        snprintf(fix, fcap, "use an IP address or a name this machine resolves (/etc/hosts, DNS)");
        return false;
    }
    int err = ENOENT;
    for (struct addrinfo *ai = res; ai != NULL && err != 0; ai = ai->ai_next)
        err = try_connect(ai, timeout_ms);
    freeaddrinfo(res);
    if (err == 0) {
        snprintf(detail, dcap, "accepts tcp connections");
        return true;
    }
    snprintf(detail, dcap, "tcp connect: %s", err == ETIMEDOUT ? "no answer" : strerror(err));
    if (err == ECONNREFUSED)
        snprintf(fix, fcap,
                 "nothing listens on port %s of %s: start efps-server there (or fix "
                 "the port in EFPS_SERVERS)",
                 port, host);
    else if (err == ETIMEDOUT)
        snprintf(fix, fcap,
                 "no answer within %d ms: the host is down or a firewall drops port %s "
                 "(open it, e.g. nft/iptables accept tcp dport %s)",
                 timeout_ms, port, port);
    else
        snprintf(fix, fcap, "check the address and the route to %s (ip route get %s)", host, host);
    return false;
}
