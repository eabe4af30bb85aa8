/* efps-train internals: options, the local launcher, the worker's training
 * loop and its reports (progress line, CSV, summary). */
#ifndef EFPS_TRAIN_H
#define EFPS_TRAIN_H

#include "efps/efps.h"
#include "efps_internal/util.h"
#include "nn/layer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    SCHED_CONSTANT = 0,
    SCHED_STEP = 1,
    SCHED_COSINE = 2,
} sched_kind_t;

typedef struct {
    const char *model, *data, *compressor, *transport, *csv, *dump_params;
    const char *step_csv; /* per-step timing, PATH.<rank> per worker; NULL: none */
    long block;
    size_t group_below; /* tensors of fewer elements share one key; 0: none do */
    int epochs, batch, warmup_epochs, workers, servers;
    double lr, momentum, wd;
    bool nesterov, as_worker;
    sched_kind_t schedule;
    uint64_t seed;
    size_t train_subset, test_subset; /* 0: the whole set */
} train_opts_t;

/* Parses argv into o; prints the reason and returns 2 for a bad command line,
 * 0 to go on, -1 after --help (exit 0). */
int train_parse(int argc, char **argv, train_opts_t *o);

/* Sets OPENBLAS_NUM_THREADS=1 and, on AVX-512 CPUs, OPENBLAS_CORETYPE=SkylakeX
 * unless the user set them; true when something was set (OpenBLAS reads them
 * when it is loaded, so the process must exec itself to apply them). */
bool train_blas_env(void);

/* Local launch: S servers (forked, efps_server_main) and M workers (this
 * program exec'd again) on 127.0.0.1; waits for all of them and stops the
 * rest as soon as one fails. The exit status for main. */
int train_launch(const train_opts_t *o, int argc, char **argv);

/* One worker: rank and servers from the environment (EFPS_* or a launcher).
 * The exit status for main. */
int train_worker(const train_opts_t *o);

/* ---- keys and hooks (sync.c) ---------------------------------------------- */

/* Maps the model's tensors to parameter-server keys (those of fewer than
 * group_below elements share one) and provides the hooks that push each
 * gradient when it is final and pull each update before forward reads it. */
typedef struct sync sync_t;

/* Declares every key on ps; block is the run's blocksign block. *s_p is set
 * even on failure (sync_destroy it). */
efps_status_t sync_create(efps_ps_t *ps, const nn_param_t *params, size_t nparams,
                          size_t group_below, size_t block, sync_t **s_p);
void sync_destroy(sync_t *s);
nn_hooks_t sync_hooks(sync_t *s);
/* eta_t of the step about to run, sent with its pushes. */
void sync_set_lr(sync_t *s, float lr);
/* Pulls every outstanding update: the model is then the step's x. */
efps_status_t sync_all(sync_t *s);
/* Seconds spent so far inside efps_ps_push (encoding, waiting for the
 * previous push of a part to leave) and efps_ps_pull (waiting for the
 * update, applying it). */
void sync_times(const sync_t *s, double *push_s_p, double *pull_s_p);

/* ---- per-step timing, by every worker (steps.c) ---------------------------- */

/* One CSV row per step: when it started, how long it took, how much of it was
 * spent in pushes and pulls (the rest is forward/backward), the bytes pushed,
 * the process' CPU time. */
typedef struct {
    FILE *f;
    double push_s, pull_s; /* sync_times at the start of the step */
    uint64_t wire;         /* efps_ps_traffic at the start of the step */
    double t0, cpu0;       /* monotonic and process CPU time at the start */
} steplog_t;

/* Opens PATH.<rank> (path NULL: a no-op log); -1 (printed) on failure. */
int steplog_open(steplog_t *l, const char *path, int rank);
void steplog_begin(steplog_t *l, const sync_t *s, efps_ps_t *ps);
void steplog_end(steplog_t *l, const sync_t *s, efps_ps_t *ps, int epoch, uint64_t step);
/* -1 (printed) when writing failed. */
int steplog_close(steplog_t *l);

/* ---- reports, by worker 0 ------------------------------------------------ */

typedef struct {
    FILE *csv;
    double t0, last_print;
    int workers, batch;
    uint64_t total_steps;
} report_t;

/* What the run has done so far; bytes are all workers' pushes and pulls. */
typedef struct {
    int epoch, epochs;              /* epoch counts from 1 */
    uint64_t step, steps_per_epoch; /* step within the epoch, counts from 1 */
    uint64_t steps_done;            /* over the whole run */
    float lr;
    double loss;                /* this worker's mean training loss so far this epoch */
    double train_acc;           /* percent */
    double test_loss, test_acc; /* percent; test_acc < 0: not evaluated */
    uint64_t wire_bytes, fp32_bytes;
} report_row_t;

/* Opens the CSV (may be NULL: none) and writes its header; -1 (printed) on failure. */
int report_open(report_t *r, const char *csv_path, int workers, int batch, uint64_t total_steps);
/* A progress line at most every 5 seconds. */
void report_progress(report_t *r, const report_row_t *row);
/* The epoch's line and its CSV row. */
void report_epoch(report_t *r, const report_row_t *row);
/* Final test accuracy, and bytes against fp32. */
void report_summary(const report_t *r, const report_row_t *last);
/* Closes the CSV; -1 (printed) when writing it failed. */
int report_close(report_t *r);

#endif
