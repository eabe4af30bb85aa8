/* nn-smoke: trains a model on Fashion-MNIST in one process with plain SGD +
 * momentum, to check that the networks learn, and measures forward+backward
 * throughput. A validation tool, not the trainer: efps-train distributes the
 * same model over the parameter server.
 *
 *   nn-smoke --model mlp --epochs 1
 *   nn-smoke --model resnet8 --train-subset 6000 --test-subset 2000 --epochs 2
 *   nn-smoke --bench --model resnet20 --batch 32
 */
#include "cli.h"
#include "efps_internal/util.h"
#include "nn/data.h"
#include "nn/eval.h"
#include "nn/model.h"

#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *model, *data;
    int epochs, batch;
    double lr, momentum;
    size_t train_subset, test_subset;
    uint64_t seed;
    bool bench, shortcut_conv;
    double bench_seconds;
} options_t;

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: nn-smoke [--model mlp|resnet20|resnet8|resnet<6n+2>] [--data DIR]\n"
                 "                [--epochs N] [--batch N] [--lr X] [--momentum X] [--seed N]\n"
                 "                [--train-subset N] [--test-subset N] [--shortcut-conv]\n"
                 "       nn-smoke --bench [--model M] [--batch N] [--seconds X]\n");
}

/* One option into o, every number checked; 0 or CLI_USAGE. */
static int set_opt(options_t *o, int c, const char *opt, const char *text)
{
    long v = 0;
    uint64_t u = 0;
    int rc = 0;
    switch (c) {
    case 'm':
        o->model = text;
        break;
    case 'd':
        o->data = text;
        break;
    case 'e':
        rc = cli_long(opt, text, 1, 100000, &v);
        o->epochs = (int)v;
        break;
    case 'b':
        rc = cli_long(opt, text, 1, 65536, &v);
        o->batch = (int)v;
        break;
    case 'l':
        rc = cli_double(opt, text, 1e-9, 1e3, &o->lr);
        break;
    case 'u':
        rc = cli_double(opt, text, 0.0, 0.999999, &o->momentum);
        break;
    case 's':
        rc = cli_u64(opt, text, 0, UINT64_MAX, &o->seed);
        break;
    case 't':
        rc = cli_u64(opt, text, 1, SIZE_MAX, &u);
        o->train_subset = (size_t)u;
        break;
    case 'T':
        rc = cli_u64(opt, text, 1, SIZE_MAX, &u);
        o->test_subset = (size_t)u;
        break;
    case 'B':
        o->bench = true;
        break;
    case 'S':
        rc = cli_double(opt, text, 0.1, 3600, &o->bench_seconds);
        break;
    case 'C':
        o->shortcut_conv = true;
        break;
    }
    return rc;
}

static int parse(int argc, char **argv, options_t *o)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"data", required_argument, NULL, 'd'},
        {"epochs", required_argument, NULL, 'e'},
        {"batch", required_argument, NULL, 'b'},
        {"lr", required_argument, NULL, 'l'},
        {"momentum", required_argument, NULL, 'u'},
        {"seed", required_argument, NULL, 's'},
        {"train-subset", required_argument, NULL, 't'},
        {"test-subset", required_argument, NULL, 'T'},
        {"bench", no_argument, NULL, 'B'},
        {"seconds", required_argument, NULL, 'S'},
        {"shortcut-conv", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (options_t){.model = "mlp",
                     .data = NN_FASHION_MNIST_DIR,
                     .epochs = 1,
                     .batch = 64,
                     .lr = 0.05,
                     .momentum = 0.9,
                     .seed = 1,
                     .bench_seconds = 5.0};
    int c, li = -1;
    cli_init("nn-smoke");
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
        const char *opt = cli_opt_name(longopts, li, c);
        li = -1;
        if (c == 'h') {
            usage(stdout);
            exit(0);
        }
        if (c == '?' || c == ':')
            return cli_getopt_error(c, argv);
        if (set_opt(o, c, opt, optarg) != 0)
            return CLI_USAGE;
    }
    if (optind != argc)
        return cli_unexpected(argv[optind]);
    return 0;
}

/* x -= lr * v, v = momentum * v + g: the optimizer efps-train replaces. */
static void sgd_step(nn_model_t *m, float **velocity, float lr, float momentum)
{
    const nn_param_t *p = nn_model_params(m);
    for (size_t i = 0; i < nn_model_param_count(m); i++) {
        for (size_t j = 0; j < p[i].n; j++) {
            velocity[i][j] = momentum * velocity[i][j] + p[i].grad[j];
            p[i].data[j] -= lr * velocity[i][j];
        }
    }
}

static int bench(nn_model_t *m, const options_t *o)
{
    const nn_model_config_t *cfg = nn_model_config(m);
    size_t in = nn_shape_size(cfg->input) * (size_t)o->batch;
    float *x = malloc(in * sizeof(float));
    int32_t *labels = malloc((size_t)o->batch * sizeof(int32_t));
    nn_rng_t rng;
    nn_rng_seed(&rng, 7, 0);
    for (size_t i = 0; i < in; i++)
        x[i] = (float)nn_rng_normal(&rng);
    for (int i = 0; i < o->batch; i++)
        labels[i] = (int32_t)nn_rng_below(&rng, (uint64_t)cfg->classes);
    nn_step_result_t r;
    if (nn_model_train_step(m, x, labels, o->batch, NULL, &r) != EFPS_OK) /* warm-up */
        return 1;
    /* CPU time too: on a shared machine it is the fairer measure of one core */
    int steps = 0;
    double t0 = efps__now_s(), c0 = cpu_now(), t;
    do {
        if (nn_model_train_step(m, x, labels, o->batch, NULL, &r) != EFPS_OK)
            return 1;
        steps++;
        t = efps__now_s() - t0;
    } while (t < o->bench_seconds);
    double c = cpu_now() - c0;
    printf("%s batch %d: %d steps, %.1f ms/step, %.1f images/s wall, %.1f images/s per CPU "
           "second (forward+backward; OpenBLAS %s, %d thread)\n",
           o->model, o->batch, steps, 1e3 * t / steps, steps * o->batch / t, steps * o->batch / c,
           openblas_get_corename(), openblas_get_num_threads());
    free(x);
    free(labels);
    return 0;
}

static int train(nn_model_t *m, const options_t *o)
{
    nn_dataset_t tr, te;
    const nn_model_config_t *mc = nn_model_config(m);
    const nn_data_spec_t spec = {.rows = mc->input.h, .cols = mc->input.w, .classes = mc->classes};
    if (nn_dataset_load_dir(o->data, true, &spec, &tr) != EFPS_OK ||
        nn_dataset_load_dir(o->data, false, &spec, &te) != EFPS_OK)
        return 1;
    size_t ntrain = o->train_subset && o->train_subset < tr.count ? o->train_subset : tr.count;
    size_t ntest = o->test_subset && o->test_subset < te.count ? o->test_subset : te.count;
    nn_sampler_t s;
    if (nn_sampler_init(&s, ntrain, 0, 1, (size_t)o->batch, o->seed) != EFPS_OK)
        return 1;
    size_t np = nn_model_param_count(m);
    const nn_param_t *p = nn_model_params(m);
    float **velocity = calloc(np, sizeof(float *));
    for (size_t i = 0; i < np; i++)
        velocity[i] = calloc(p[i].n, sizeof(float));
    float *x = malloc((size_t)o->batch * tr.rows * tr.cols * sizeof(float));
    int32_t *labels = malloc((size_t)o->batch * sizeof(int32_t));

    printf("%s: %zu parameters, %zu training / %zu test images, batch %d, lr %g, momentum %g\n",
           o->model, nn_model_param_floats(m), ntrain, ntest, o->batch, o->lr, o->momentum);
    int rc = 0;
    for (int e = 0; e < o->epochs && rc == 0; e++) {
        nn_sampler_set_epoch(&s, (uint64_t)e);
        double t0 = efps__now_s(), loss = 0.0;
        size_t correct = 0;
        for (size_t b = 0; b < s.batches_per_epoch; b++) {
            nn_dataset_batch(&tr, nn_sampler_batch(&s, b), o->batch, NN_FASHION_MNIST_MEAN,
                             NN_FASHION_MNIST_STD, x, labels);
            nn_step_result_t r;
            if (nn_model_train_step(m, x, labels, o->batch, NULL, &r) != EFPS_OK) {
                rc = 1;
                break;
            }
            sgd_step(m, velocity, (float)o->lr, (float)o->momentum);
            loss += r.loss;
            correct += (size_t)r.correct;
        }
        double t_train = efps__now_s() - t0;
        nn_eval_result_t ev;
        if (rc == 0 && nn_evaluate(m, &te, 0, ntest, &ev) != EFPS_OK)
            rc = 1;
        if (rc != 0)
            break;
        size_t seen = s.batches_per_epoch * (size_t)o->batch;
        printf("epoch %d: train loss %.4f acc %.2f%% (%.1f s, %.0f images/s) | test loss %.4f "
               "acc %.2f%%\n",
               e + 1, loss / (double)s.batches_per_epoch, 100.0 * (double)correct / (double)seen,
               t_train, (double)seen / t_train, ev.loss,
               100.0 * (double)ev.correct / (double)ev.count);
        fflush(stdout);
    }
    for (size_t i = 0; i < np; i++)
        free(velocity[i]);
    free(velocity);
    free(x);
    free(labels);
    nn_sampler_free(&s);
    nn_dataset_free(&tr);
    nn_dataset_free(&te);
    return rc;
}

int main(int argc, char **argv)
{
    options_t o;
    if (parse(argc, argv, &o) != 0)
        return CLI_USAGE;
    nn_model_config_t cfg;
    if (nn_model_config_named(o.model, &cfg) != EFPS_OK)
        return cli_bad("--model", o.model, "mlp, resnet8, resnet20 or resnet<6n+2> (n >= 1)");
    cfg.max_batch = o.batch;
    cfg.seed = o.seed;
    if (o.shortcut_conv)
        cfg.resnet_shortcut = NN_SHORTCUT_CONV;
    nn_model_t *m;
    if (nn_model_create(&cfg, &m) != EFPS_OK)
        return 1;
    int rc = o.bench ? bench(m, &o) : train(m, &o);
    nn_model_destroy(m);
    return rc;
}
