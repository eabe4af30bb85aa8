/* What worker 0 tells the user: a progress line, one line and one CSV row
 * per epoch, and a summary of accuracy and bytes against an fp32 run. */
#include "train.h"

#include "cli.h"

#include <stdio.h>
#include <time.h>

static void human_bytes(uint64_t b, char *buf, size_t cap)
{
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1000.0 && u < 4) {
        v /= 1000.0;
        u++;
    }
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f %s", v, units[u]);
}

static void human_time(double s, char *buf, size_t cap)
{
    long t = s > 0 ? (long)(s + 0.5) : 0;
    snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

int report_open(report_t *r, const char *csv_path, int workers, int batch, uint64_t total_steps)
{
    *r = (report_t){.workers = workers, .batch = batch, .total_steps = total_steps};
    r->t0 = r->last_print = efps__now_s();
    if (csv_path == NULL)
        return 0;
    r->csv = fopen(csv_path, "w");
    if (r->csv == NULL) {
        perror(csv_path);
        return -1;
    }
    fprintf(r->csv, "epoch,steps,lr,train_loss,train_acc,test_loss,test_acc,wall_s,images_per_s,"
                    "wire_bytes,fp32_bytes\n");
    return 0;
}

static double images_per_s(const report_t *r, uint64_t steps, double elapsed)
{
    return elapsed > 0 ? (double)steps * r->batch * r->workers / elapsed : 0.0;
}

void report_progress(report_t *r, const report_row_t *row)
{
    double now = efps__now_s(), elapsed = now - r->t0;
    if (now - r->last_print < 5.0)
        return;
    r->last_print = now;
    char wire[32], eta[32];
    human_bytes(row->wire_bytes, wire, sizeof(wire));
    double per_step = elapsed / (double)row->steps_done;
    human_time(per_step * (double)(r->total_steps - row->steps_done), eta, sizeof(eta));
    printf("epoch %d/%d step %llu/%llu loss %.4f %.0f img/s wire %s ETA %s\n", row->epoch,
           row->epochs, (unsigned long long)row->step, (unsigned long long)row->steps_per_epoch,
           row->loss, images_per_s(r, row->steps_done, elapsed), wire, eta);
    fflush(stdout);
}

void report_epoch(report_t *r, const report_row_t *row)
{
    double elapsed = efps__now_s() - r->t0;
    char wire[32];
    human_bytes(row->wire_bytes, wire, sizeof(wire));
    double ips = images_per_s(r, row->steps_done, elapsed);
    printf("epoch %d/%d done: train loss %.4f acc %.2f%% | test loss %.4f acc %.2f%% | %.1f s, "
           "%.0f img/s, wire %s\n",
           row->epoch, row->epochs, row->loss, row->train_acc, row->test_loss, row->test_acc,
           elapsed, ips, wire);
    fflush(stdout);
    r->last_print = efps__now_s();
    if (r->csv != NULL) {
        fprintf(r->csv, "%d,%llu,%.6g,%.6f,%.4f,%.6f,%.4f,%.3f,%.1f,%llu,%llu\n", row->epoch,
                (unsigned long long)row->steps_done, (double)row->lr, row->loss, row->train_acc,
                row->test_loss, row->test_acc, elapsed, ips, (unsigned long long)row->wire_bytes,
                (unsigned long long)row->fp32_bytes);
        fflush(r->csv);
    }
}

void report_summary(const report_t *r, const report_row_t *last)
{
    char wire[32], fp32[32], saved[32];
    human_bytes(last->wire_bytes, wire, sizeof(wire));
    human_bytes(last->fp32_bytes, fp32, sizeof(fp32));
    human_bytes(last->fp32_bytes > last->wire_bytes ? last->fp32_bytes - last->wire_bytes : 0,
                saved, sizeof(saved));
    double ratio = last->wire_bytes ? (double)last->fp32_bytes / (double)last->wire_bytes : 0.0;
    printf("final test accuracy: %.2f%%\n", last->test_acc);
    printf("bytes on the wire: %s (%llu) for %d %s, pushes and pulls\n", wire,
           (unsigned long long)last->wire_bytes, r->workers,
           cli_plural(r->workers, "worker", "workers"));
    printf("an fp32 run would have moved %s (%llu): %.1fx more, %s saved\n", fp32,
           (unsigned long long)last->fp32_bytes, ratio, saved);
    printf("wall time %.1f s, %.0f images/s\n", efps__now_s() - r->t0,
           images_per_s(r, last->steps_done, efps__now_s() - r->t0));
    fflush(stdout);
}

int report_close(report_t *r)
{
    int rc = 0;
    if (r->csv != NULL && fclose(r->csv) != 0) {
        perror("efps-train: closing the CSV");
        rc = -1;
    }
    r->csv = NULL;
    return rc;
}
