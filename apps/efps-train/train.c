/* One worker of a distributed run. Every tensor of the model is a parameter-
 * server key, except the small ones, which share one (sync.c). Backward
 * pushes each gradient the moment it is final (on_grad hook), so compression
 * and transfer overlap the rest of backward; the next forward waits for a
 * tensor's update only right before it reads that tensor (before_forward hook). Every rank builds
 * the model from the same seed, so all start, and stay, bit-identical (BN running statistics
 * excepted: they are not parameters and stay local). */
#include "train.h"

#include "cli.h"

#include "nn/data.h"
#include "nn/eval.h"
#include "nn/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const train_opts_t *o;
    efps_ps_config_t cfg;
    int rank, workers;
    size_t block; /* the resolved blocksign block */
    nn_dataset_t train, test;
    size_t ntrain, ntest;
    nn_sampler_t sampler;
    nn_model_t *model;
    efps_lr_schedule_t sched;
    float *x;
    int32_t *labels;
} worker_t;

static int load_data(worker_t *w)
{
    const train_opts_t *o = w->o;
    /* both sets are checked against the model: a label past its classes or
     * an image of another size would be read out of bounds */
    const nn_model_config_t *mc = nn_model_config(w->model);
    const nn_data_spec_t spec = {.rows = mc->input.h, .cols = mc->input.w, .classes = mc->classes};
    if (nn_dataset_load_dir(o->data, true, &spec, &w->train) != EFPS_OK)
        return -1;
    if (w->rank == 0 && nn_dataset_load_dir(o->data, false, &spec, &w->test) != EFPS_OK)
        return -1;
    w->ntrain =
        o->train_subset && o->train_subset < w->train.count ? o->train_subset : w->train.count;
    w->ntest = o->test_subset && o->test_subset < w->test.count ? o->test_subset : w->test.count;
    if (nn_sampler_init(&w->sampler, w->ntrain, w->rank, w->workers, (size_t)o->batch, o->seed) !=
        EFPS_OK) {
        fprintf(stderr, "efps-train: %zu training images are too few for %d %s x batch %d\n",
                w->ntrain, w->workers, cli_plural(w->workers, "worker", "workers"), o->batch);
        return -1;
    }
    w->x = malloc((size_t)o->batch * (size_t)w->train.rows * (size_t)w->train.cols * sizeof(float));
    w->labels = malloc((size_t)o->batch * sizeof(int32_t));
    return w->x != NULL && w->labels != NULL ? 0 : -1;
}

/* Same seed on every rank: the same initial bits (on one machine; across
 * machines only if their libm gives the same log and cos). */
static int build_model(worker_t *w)
{
    nn_model_config_t mc;
    if (nn_model_config_named(w->o->model, &mc) != EFPS_OK)
        return -1;
    mc.max_batch = w->o->batch;
    mc.seed = w->o->seed;
    return nn_model_create(&mc, &w->model) == EFPS_OK ? 0 : -1;
}

static int build_schedule(worker_t *w)
{
    const train_opts_t *o = w->o;
    const uint64_t spe = w->sampler.batches_per_epoch;
    efps_lr_schedule_t *s = &w->sched;
    *s = (efps_lr_schedule_t){.base_lr = (float)o->lr,
                              .steps_per_epoch = spe,
                              .gamma = 0.1f,
                              .warmup_steps = (uint64_t)o->warmup_epochs * spe,
                              .total_steps = (uint64_t)o->epochs * spe};
    s->kind = o->schedule == SCHED_STEP     ? EFPS_LR_STEP
              : o->schedule == SCHED_COSINE ? EFPS_LR_COSINE
                                            : EFPS_LR_CONSTANT;
    /* step: x0.1 at half and three quarters of the run (none that would be epoch 0) */
    const uint32_t m[2] = {(uint32_t)(o->epochs / 2), (uint32_t)(o->epochs * 3 / 4)};
    for (int k = 0; k < 2; k++)
        if (m[k] > 0 && (s->num_milestones == 0 || m[k] > s->milestones[s->num_milestones - 1]))
            s->milestones[s->num_milestones++] = m[k];
    return efps_lr_schedule_check(s) == EFPS_OK ? 0 : -1;
}

static void traffic(const worker_t *w, efps_ps_t *ps, report_row_t *row)
{
    uint64_t wire, fp32;
    efps_ps_traffic(ps, &wire, &fp32);
    /* every worker pushes the same sizes and pulls as many bytes as it pushes */
    row->wire_bytes = 2 * (uint64_t)w->workers * wire;
    row->fp32_bytes = 2 * (uint64_t)w->workers * fp32;
}

/* One epoch; on return every update is pulled, row has the epoch's figures. */
static efps_status_t run_epoch(worker_t *w, efps_ps_t *ps, sync_t *s, report_t *rep, steplog_t *log,
                               report_row_t *row)
{
    const uint64_t spe = w->sampler.batches_per_epoch;
    const nn_hooks_t hooks = sync_hooks(s);
    nn_sampler_set_epoch(&w->sampler, (uint64_t)row->epoch - 1);
    double loss = 0.0;
    size_t correct = 0;
    efps_status_t st = EFPS_OK;
    for (uint64_t b = 0; b < spe && st == EFPS_OK; b++) {
        nn_dataset_batch(&w->train, nn_sampler_batch(&w->sampler, b), w->o->batch,
                         NN_FASHION_MNIST_MEAN, NN_FASHION_MNIST_STD, w->x, w->labels);
        row->lr = efps_lr_at(&w->sched, row->steps_done);
        sync_set_lr(s, row->lr);
        nn_step_result_t r;
        steplog_begin(log, s, ps);
        st = nn_model_train_step(w->model, w->x, w->labels, w->o->batch, &hooks, &r);
        if (st == EFPS_OK && b + 1 == spe)
            st = sync_all(s); /* the epoch's last step ends with every update pulled */
        if (st != EFPS_OK)
            break;
        steplog_end(log, s, ps, row->epoch, b + 1);
        loss += r.loss;
        correct += (size_t)r.correct;
        row->step = b + 1;
        row->steps_done++;
        row->loss = loss / (double)(b + 1);
        if (w->rank == 0 && st == EFPS_OK) {
            traffic(w, ps, row);
            report_progress(rep, row);
        }
    }
    row->train_acc = 100.0 * (double)correct / (double)(spe * (size_t)w->o->batch);
    traffic(w, ps, row);
    return st;
}

/* Rank 0 evaluates on the test set with its own batch-norm statistics. */
static efps_status_t evaluate(worker_t *w, report_row_t *row)
{
    nn_eval_result_t ev;
    efps_status_t st = nn_evaluate(w->model, &w->test, 0, w->ntest, &ev);
    if (st == EFPS_OK) {
        row->test_loss = ev.loss;
        row->test_acc = 100.0 * (double)ev.correct / (double)ev.count;
    }
    return st;
}

static efps_status_t train_loop(worker_t *w, efps_ps_t *ps, report_t *rep, report_row_t *row)
{
    sync_t *s;
    steplog_t log;
    if (steplog_open(&log, w->o->step_csv, w->rank) != 0)
        return EFPS_ERR_IO;
    efps_status_t st = sync_create(ps, nn_model_params(w->model), nn_model_param_count(w->model),
                                   w->o->group_below, w->block, &s);
    for (int e = 1; e <= w->o->epochs && st == EFPS_OK; e++) {
        row->epoch = e;
        st = run_epoch(w, ps, s, rep, &log, row);
        if (st == EFPS_OK && w->rank == 0 && (st = evaluate(w, row)) == EFPS_OK)
            report_epoch(rep, row);
    }
    sync_destroy(s);
    if (steplog_close(&log) != 0 && st == EFPS_OK)
        st = EFPS_ERR_IO;
    return st;
}

/* --dump-params: every tensor's data, raw float32 in key order, to PATH.<rank>. */
static int dump_params(const worker_t *w)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s.%d", w->o->dump_params, w->rank);
    FILE *f = fopen(path, "wb");
    int ok = f != NULL;
    const nn_param_t *p = nn_model_params(w->model);
    for (size_t i = 0; ok && i < nn_model_param_count(w->model); i++)
        ok = fwrite(p[i].data, sizeof(float), p[i].n, f) == p[i].n;
    if (f != NULL)
        ok &= fclose(f) == 0;
    if (!ok)
        fprintf(stderr, "efps-train: worker %d: cannot write %s\n", w->rank, path);
    return ok ? 0 : -1;
}

static void worker_free(worker_t *w)
{
    nn_model_destroy(w->model);
    nn_sampler_free(&w->sampler);
    nn_dataset_free(&w->train);
    nn_dataset_free(&w->test);
    free(w->x);
    free(w->labels);
}

static void ps_config(const train_opts_t *o, efps_ps_config_t *cfg)
{
    efps_ps_config_init(cfg);
    const char *role = getenv("EFPS_ROLE");
    /* started by a launcher on every node: a worker, unless told otherwise */
    cfg->role = role != NULL && strcmp(role, "server") == 0 ? EFPS_ROLE_SERVER : EFPS_ROLE_WORKER;
    cfg->num_workers = o->workers; /* 0: from the environment */
    cfg->transport = o->transport;
    cfg->compressor = o->compressor;
    cfg->block = o->block;
    cfg->momentum = (float)o->momentum;
    cfg->nesterov = o->nesterov;
    cfg->weight_decay = (float)o->wd;
}

static void print_header(const worker_t *w, const efps_ps_config_t *cfg)
{
    const train_opts_t *o = w->o;
    static const char *const sched[] = {"constant", "step", "cosine"};
    printf("efps-train: %s (%zu parameters in %zu tensors), %d %s x batch %d, %zu training / "
           "%zu test images\n",
           o->model, nn_model_param_floats(w->model), nn_model_param_count(w->model), w->workers,
           cli_plural(w->workers, "worker", "workers"), o->batch, w->ntrain, w->ntest);
    printf("efps-train: compressor %s (block %ld), servers %s, transport %s; lr %g %s, momentum "
           "%g%s, wd %g, %d %s of %zu steps\n",
           cfg->compressor, cfg->block, cfg->servers, cfg->transport, o->lr, sched[o->schedule],
           o->momentum, o->nesterov ? " nesterov" : "", o->wd, o->epochs,
           cli_plural(o->epochs, "epoch", "epochs"), w->sampler.batches_per_epoch);
    fflush(stdout);
}

int train_worker(const train_opts_t *o)
{
    worker_t w = {.o = o};
    efps_ps_config_t res;
    ps_config(o, &w.cfg);
    if (efps_ps_config_resolve(&w.cfg, &res) != EFPS_OK)
        return 1;
    if (res.role == EFPS_ROLE_SERVER)
        return efps_server_main(&w.cfg);
    w.rank = res.rank;
    w.block = (size_t)res.block;
    w.workers = res.num_workers;
    /* data and model before connecting: a bad path fails before servers wait */
    int rc = 1;
    report_t rep = {0};
    report_row_t row = {.epochs = o->epochs, .test_acc = -1.0};
    efps_ps_t *ps = NULL;
    if (build_model(&w) != 0 || load_data(&w) != 0 || build_schedule(&w) != 0)
        goto out_free;
    row.steps_per_epoch = w.sampler.batches_per_epoch;
    if (w.rank == 0) {
        print_header(&w, &res);
        if (report_open(&rep, o->csv, w.workers, o->batch,
                        (uint64_t)o->epochs * w.sampler.batches_per_epoch) != 0)
            goto out_free;
    }
    if (efps_ps_init(&w.cfg, &ps) != EFPS_OK)
        goto out_report;
    efps_status_t st = train_loop(&w, ps, &rep, &row);
    efps_status_t fin = efps_ps_finalize(ps);
    if (st == EFPS_OK)
        st = fin;
    if (st != EFPS_OK)
        fprintf(stderr, "efps-train: worker %d failed: %s\n", w.rank, efps_strerror(st));
    else
        rc = o->dump_params != NULL && dump_params(&w) != 0;
out_report:
    if (w.rank == 0 && rc == 0)
        report_summary(&rep, &row);
    if (report_close(&rep) != 0)
        rc = 1;
out_free:
    worker_free(&w);
    return rc;
}
