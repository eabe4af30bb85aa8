/* Re-running the test program in a child process, for behaviour that is fixed
 * once per process (a variable read at load time or on first use). The child
 * is "<this program> --child <mode>" with one environment variable changed;
 * its stderr (where it reports, and where efps logs) is captured. */
#ifndef EFPS_TEST_UNIT_CHILD_H
#define EFPS_TEST_UNIT_CHILD_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs the child with name=value (value NULL: name unset). Returns its exit
 * code, or -1 when it did not exit normally (signal) or could not start.
 * out receives up to outlen-1 bytes of its stderr, NUL-terminated. */
static inline int unit_run_child(const char *mode, const char *name, const char *value, char *out,
                                 size_t outlen)
{
    out[0] = '\0';
    FILE *cap = tmpfile();
    if (cap == NULL)
        return -1;
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid == 0) {
        if (dup2(fileno(cap), STDERR_FILENO) < 0)
            _exit(126);
        if (value != NULL)
            setenv(name, value, 1);
        else
            unsetenv(name);
        execl("/proc/self/exe", "efps-unit-child", "--child", mode, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    const int waited = pid > 0 && waitpid(pid, &status, 0) == pid;
    rewind(cap);
    const size_t got = fread(out, 1, outlen - 1, cap);
    out[got] = '\0';
    fclose(cap);
    if (!waited || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

/* How many times needle occurs in haystack. */
static inline int unit_count(const char *haystack, const char *needle)
{
    int c = 0;
    for (const char *p = strstr(haystack, needle); p != NULL; p = strstr(p + 1, needle))
        c++;
    return c;
}

#endif
