/* Local launch for efps-perf: servers as forked children running
 * efps_server_main on port 0, their ports read back from port files. */
#include "perf.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int wait_child(pid_t pid, int timeout_s)
{
    for (int i = 0; i < timeout_s * 100; i++) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (r < 0)
            return -1;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

int launch_servers(int S, int M, const efps_ps_config_t *base, const char *host, char *servers,
                   size_t cap, pid_t *pids)
{
    char dir[] = "/tmp/efps-perf.XXXXXX", path[64], list[1024] = "", bind[300];
    snprintf(bind, sizeof(bind), "%s:0", host);
    if (mkdtemp(dir) == NULL)
        return -1;
    for (int s = 0; s < S; s++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", s ? "," : "", bind);
    for (int s = 0; s < S; s++) {
        snprintf(path, sizeof(path), "%s/port.%d", dir, s);
        pids[s] = fork();
        if (pids[s] == 0) {
            efps_ps_config_t cfg = *base;
            cfg.role = EFPS_ROLE_SERVER;
            cfg.rank = s;
            cfg.num_workers = M;
            cfg.servers = list;
            cfg.bind = bind;
            cfg.port_file = path;
            _exit(efps_server_main(&cfg));
        }
    }
    servers[0] = '\0';
    int rc = 0;
    for (int s = 0; s < S && rc == 0; s++) {
        snprintf(path, sizeof(path), "%s/port.%d", dir, s);
        unsigned port = 0;
        for (int i = 0; i < 500 && port == 0; i++) {
            FILE *f = fopen(path, "r");
            if (f == NULL || fscanf(f, "%u", &port) != 1)
                usleep(10000);
            if (f != NULL)
                fclose(f);
        }
        if (port == 0)
            rc = -1;
        snprintf(servers + strlen(servers), cap - strlen(servers), "%s%s:%u", s ? "," : "", host,
                 port);
        unlink(path);
    }
    rmdir(dir);
    return rc;
}
