/* --step-csv: every worker writes one row per step, so a harness can tell
 * computation from communication on each worker (perf/cluster). A step is
 * everything between two batches: forward and backward with their pushes and
 * pulls, and for an epoch's last step the pulls that end the epoch.
 *
 *   epoch,step,start_s,step_s,compute_s,push_s,pull_s,push_bytes,cpu_s
 *
 * start_s is CLOCK_MONOTONIC, the same clock in every process of a machine,
 * so rows of several workers line up; compute_s = step_s - push_s - pull_s;
 * push_bytes is what this worker pushed (headers included; it pulls as many);
 * cpu_s is the CPU time of the whole process (every thread) during the step:
 * on a shared machine it tells work from waiting for a core. */
#include "train.h"

#include <stdio.h>
#include <time.h>

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int steplog_open(steplog_t *l, const char *path, int rank)
{
    *l = (steplog_t){0};
    if (path == NULL)
        return 0;
    char name[4096];
    snprintf(name, sizeof(name), "%s.%d", path, rank);
    l->f = fopen(name, "w");
    if (l->f == NULL) {
        perror(name);
        return -1;
    }
    fprintf(l->f, "epoch,step,start_s,step_s,compute_s,push_s,pull_s,push_bytes,cpu_s\n");
    return 0;
}

void steplog_begin(steplog_t *l, const sync_t *s, efps_ps_t *ps)
{
    if (l->f == NULL)
        return;
    uint64_t fp32;
    sync_times(s, &l->push_s, &l->pull_s);
    efps_ps_traffic(ps, &l->wire, &fp32);
    l->cpu0 = cpu_now();
    l->t0 = efps__now_s();
}

void steplog_end(steplog_t *l, const sync_t *s, efps_ps_t *ps, int epoch, uint64_t step)
{
    if (l->f == NULL)
        return;
    const double dt = efps__now_s() - l->t0, cpu = cpu_now() - l->cpu0;
    double push, pull;
    uint64_t wire, fp32;
    sync_times(s, &push, &pull);
    efps_ps_traffic(ps, &wire, &fp32);
    push -= l->push_s;
    pull -= l->pull_s;
    fprintf(l->f, "%d,%llu,%.6f,%.6f,%.6f,%.6f,%.6f,%llu,%.6f\n", epoch, (unsigned long long)step,
            l->t0, dt, dt - push - pull, push, pull, (unsigned long long)(wire - l->wire), cpu);
    fflush(l->f); /* a harness watches the file while the run goes on */
}

int steplog_close(steplog_t *l)
{
    int rc = 0;
    if (l->f != NULL) {
        const int failed = ferror(l->f);
        if (fclose(l->f) != 0 || failed) {
            perror("efps-train: writing the step CSV");
            rc = -1;
        }
    }
    l->f = NULL;
    return rc;
}
