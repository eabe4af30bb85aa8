/* The reference efps-perf compares against: plain blocking TCP sockets on
 * loopback moving the same bytes as a push and a pull (there and back),
 * with the same socket options as the tcp transport (TCP_NODELAY, large
 * buffers). */
#include "perf.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void tune(int fd)
{
    int one = 1, buf = 4 << 20;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

static int xfer(int fd, char *buf, size_t len, int out)
{
    while (len > 0) {
        ssize_t n = out ? send(fd, buf, len, MSG_NOSIGNAL) : recv(fd, buf, len, 0);
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The echo child: receive `bytes`, send them back, iters + 1 times. */
static void echo(int lfd, size_t bytes, int iters, char *buf)
{
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        _exit(1);
    tune(fd);
    for (int i = 0; i <= iters; i++)
        if (xfer(fd, buf, bytes, 0) != 0 || xfer(fd, buf, bytes, 1) != 0)
            _exit(1);
    _exit(0);
}

double raw_socket_seconds(size_t bytes, int iters)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    char *buf = malloc(bytes);
    if (lfd < 0 || buf == NULL || bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(lfd, 1) != 0 || getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        free(buf);
        return -1;
    }
    memset(buf, 1, bytes);
    pid_t pid = fork();
    if (pid == 0)
        echo(lfd, bytes, iters, buf);
    close(lfd);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    double total = -1, t0 = 0;
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
        tune(fd);
        for (int i = 0; i <= iters; i++) { /* iteration 0 warms up */
            if (i == 1)
                t0 = efps__now_s();
            if (xfer(fd, buf, bytes, 1) != 0 || xfer(fd, buf, bytes, 0) != 0)
                break;
            if (i == iters)
                total = efps__now_s() - t0;
        }
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    if (wait_child(pid, 60) != 0)
        total = -1;
    return total;
}
