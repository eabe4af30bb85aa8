/* A model is a chain of layers; a residual block counts as one layer. The
 * model owns every layer's output (kept for backward), two gradient buffers
 * used in turn, and one work area that all layers share. */
#include "model.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

/* The initial weights' stream; data shuffling uses others (data.c). */
#define INIT_STREAM 0x696e6974ULL

struct nn_model {
    nn_model_config_t cfg;
    nn_params_t params, state;
    nn_layer_t **layers;
    size_t nlayers, cap;
    float **act;    /* act[i] = output of layer i, max_batch examples */
    float *input;   /* copy of the last forward's x */
    float *grad[2]; /* gradients w.r.t. activations, ping-pong */
    float *dlogits;
    float *work;
    int batch;    /* n of the last forward */
    bool trained; /* the last forward ran in training mode */
};

efps_status_t nn_model_config_named(const char *name, nn_model_config_t *cfg_p)
{
    nn_model_config_t cfg = {
        .input = {1, 28, 28},
        .classes = 10,
        .max_batch = 64,
        .seed = 1,
        .resnet_width = 16,
        .resnet_shortcut = NN_SHORTCUT_PAD,
    };
    int depth;
    char tail;
    if (strcmp(name, "mlp") == 0) {
        cfg.kind = NN_MODEL_MLP;
        cfg.mlp_depth = 2;
        cfg.mlp_hidden[0] = 256;
        cfg.mlp_hidden[1] = 128;
    } else if (sscanf(name, "resnet%d%c", &depth, &tail) == 1 && depth >= 8 &&
               (depth - 2) % 6 == 0) {
        cfg.kind = NN_MODEL_RESNET;
        cfg.resnet_blocks = (depth - 2) / 6;
    } else {
        return EFPS_ERR_INVALID; /* the caller names its flag */
    }
    *cfg_p = cfg;
    return EFPS_OK;
}

static efps_status_t push_layer(nn_model_t *m, nn_layer_t *l)
{
    if (m->nlayers == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 16;
        nn_layer_t **layers = realloc(m->layers, cap * sizeof(*layers));
        if (layers == NULL) {
            nn_layer_destroy(l);
            return EFPS_ERR_NOMEM;
        }
        m->layers = layers;
        m->cap = cap;
    }
    m->layers[m->nlayers++] = l;
    return EFPS_OK;
}

/* Adds what a constructor made, or passes its failure on. */
/* (l_p, not the layer: the constructor in the same call sets it.) */
static efps_status_t add(nn_model_t *m, efps_status_t created, nn_layer_t **l_p, nn_shape_t *shape)
{
    if (created != EFPS_OK)
        return created;
    *shape = (*l_p)->out;
    return push_layer(m, *l_p);
}

static efps_status_t build_mlp(nn_model_t *m)
{
    const nn_model_config_t *c = &m->cfg;
    nn_shape_t s = c->input;
    nn_layer_t *l = NULL;
    char name[32];
    efps_status_t status = EFPS_OK;
    for (int i = 0; i < c->mlp_depth && status == EFPS_OK; i++) {
        snprintf(name, sizeof(name), "fc%d", i + 1);
        status = add(m, nn_linear_create(&m->params, name, s, c->mlp_hidden[i], &l), &l, &s);
        if (status == EFPS_OK)
            status = add(m, nn_relu_create(s, &l), &l, &s);
    }
    if (status != EFPS_OK)
        return status;
    snprintf(name, sizeof(name), "fc%d", c->mlp_depth + 1);
    return add(m, nn_linear_create(&m->params, name, s, c->classes, &l), &l, &s);
}

static efps_status_t build_resnet(nn_model_t *m)
{
    const nn_model_config_t *c = &m->cfg;
    nn_shape_t s = c->input;
    nn_layer_t *l = NULL;
    efps_status_t status;
    if ((status = add(m, nn_conv_create(&m->params, "conv1", s, c->resnet_width, 3, 1, 1, &l), &l,
                      &s)) != EFPS_OK ||
        (status = add(m, nn_bn_create(&m->params, &m->state, "bn1", s, &l), &l, &s)) != EFPS_OK ||
        (status = add(m, nn_relu_create(s, &l), &l, &s)) != EFPS_OK)
        return status;
    for (int stage = 0; stage < 3; stage++) {
        for (int b = 0; b < c->resnet_blocks; b++) {
            char name[32];
            snprintf(name, sizeof(name), "layer%d.%d", stage + 1, b);
            int stride = (stage > 0 && b == 0) ? 2 : 1;
            status = add(m,
                         nn_block_create(&m->params, &m->state, name, s, c->resnet_width << stage,
                                         stride, c->resnet_shortcut, c->max_batch, &l),
                         &l, &s);
            if (status != EFPS_OK)
                return status;
        }
    }
    if ((status = add(m, nn_gap_create(s, &l), &l, &s)) != EFPS_OK)
        return status;
    return add(m, nn_linear_create(&m->params, "fc", s, c->classes, &l), &l, &s);
}

static efps_status_t check_config(const nn_model_config_t *c)
{
    bool ok =
        c->input.c > 0 && c->input.h > 0 && c->input.w > 0 && c->classes > 1 && c->max_batch > 0;
    if (c->kind == NN_MODEL_MLP) {
        ok = ok && c->mlp_depth >= 0 && c->mlp_depth <= NN_MLP_MAX_HIDDEN;
        for (int i = 0; ok && i < c->mlp_depth; i++)
            ok = c->mlp_hidden[i] > 0;
    } else if (c->kind == NN_MODEL_RESNET) {
        ok = ok && c->resnet_blocks > 0 && c->resnet_width > 0 && c->resnet_width <= 4096;
    } else {
        ok = false;
    }
    if (!ok)
        efps_error("invalid model configuration (kind %d, input %dx%dx%d, %d classes, batch %d)",
                   (int)c->kind, c->input.c, c->input.h, c->input.w, c->classes, c->max_batch);
    return ok ? EFPS_OK : EFPS_ERR_INVALID;
}

/* Buffers sized for max_batch, after the layers exist. */
static efps_status_t alloc_buffers(nn_model_t *m)
{
    size_t mb = (size_t)m->cfg.max_batch, widest = nn_shape_size(m->cfg.input), work = 0;
    m->act = calloc(m->nlayers, sizeof(*m->act));
    if (m->act == NULL)
        return EFPS_ERR_NOMEM;
    for (size_t i = 0; i < m->nlayers; i++) {
        nn_layer_t *l = m->layers[i];
        size_t out = nn_shape_size(l->out);
        if ((m->act[i] = efps_aligned_alloc(mb * out * sizeof(float))) == NULL)
            return EFPS_ERR_NOMEM;
        widest = out > widest ? out : widest;
        work = l->work_floats > work ? l->work_floats : work;
    }
    m->input = efps_aligned_alloc(mb * nn_shape_size(m->cfg.input) * sizeof(float));
    m->grad[0] = efps_aligned_alloc(mb * widest * sizeof(float));
    m->grad[1] = efps_aligned_alloc(mb * widest * sizeof(float));
    m->dlogits = efps_aligned_alloc(mb * (size_t)m->cfg.classes * sizeof(float));
    m->work = efps_aligned_alloc(work * sizeof(float));
    if (!m->input || !m->grad[0] || !m->grad[1] || !m->dlogits || !m->work)
        return EFPS_ERR_NOMEM;
    return EFPS_OK;
}

efps_status_t nn_model_create(const nn_model_config_t *cfg, nn_model_t **model_p)
{
    efps_status_t status = check_config(cfg);
    if (status != EFPS_OK)
        return status;
    /* Several worker processes share few cores: BLAS threads would only fight. */
    openblas_set_num_threads(1);

    nn_model_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return EFPS_ERR_NOMEM;
    m->cfg = *cfg;
    nn_params_init(&m->params, true);
    nn_params_init(&m->state, false);
    status = cfg->kind == NN_MODEL_MLP ? build_mlp(m) : build_resnet(m);
    if (status == EFPS_OK)
        status = nn_params_finalize(&m->params);
    if (status == EFPS_OK)
        status = nn_params_finalize(&m->state);
    if (status == EFPS_OK)
        status = alloc_buffers(m);
    if (status != EFPS_OK) {
        if (status == EFPS_ERR_NOMEM)
            efps_error("out of memory building a %s model", cfg->kind ? "resnet" : "mlp");
        nn_model_destroy(m);
        return status;
    }
    nn_rng_t rng;
    nn_rng_seed(&rng, cfg->seed, INIT_STREAM);
    for (size_t i = 0; i < m->nlayers; i++)
        nn_layer_init(m->layers[i], &rng);
    *model_p = m;
    return EFPS_OK;
}

void nn_model_destroy(nn_model_t *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nlayers; i++) {
        nn_layer_destroy(m->layers[i]);
        if (m->act != NULL)
            efps_aligned_free(m->act[i]);
    }
    free(m->layers);
    free(m->act);
    efps_aligned_free(m->input);
    efps_aligned_free(m->grad[0]);
    efps_aligned_free(m->grad[1]);
    efps_aligned_free(m->dlogits);
    efps_aligned_free(m->work);
    nn_params_release(&m->params);
    nn_params_release(&m->state);
    free(m);
}

size_t nn_model_param_count(const nn_model_t *m)
{
    return m->params.count;
}

const nn_param_t *nn_model_params(const nn_model_t *m)
{
    return m->params.list;
}

size_t nn_model_param_floats(const nn_model_t *m)
{
    return nn_params_total(&m->params);
}

size_t nn_model_state_count(const nn_model_t *m)
{
    return m->state.count;
}

const nn_param_t *nn_model_state(const nn_model_t *m)
{
    return m->state.list;
}

const nn_model_config_t *nn_model_config(const nn_model_t *m)
{
    return &m->cfg;
}

efps_status_t nn_model_forward(nn_model_t *m, const float *x, int n, bool train,
                               const nn_hooks_t *hooks, const float **logits_p)
{
    if (n < 1 || n > m->cfg.max_batch) {
        efps_error("forward: batch %d is not in 1..%d", n, m->cfg.max_batch);
        return EFPS_ERR_INVALID;
    }
    m->trained = false;
    memcpy(m->input, x, (size_t)n * nn_shape_size(m->cfg.input) * sizeof(float));
    nn_run_t run = {.train = train, .hooks = hooks, .work = m->work};
    const float *in = m->input;
    for (size_t i = 0; i < m->nlayers; i++) {
        efps_status_t status = nn_layer_forward(m->layers[i], &run, in, m->act[i], n);
        if (status != EFPS_OK)
            return status;
        in = m->act[i];
    }
    m->batch = n;
    m->trained = train;
    *logits_p = m->act[m->nlayers - 1];
    return EFPS_OK;
}

efps_status_t nn_model_backward(nn_model_t *m, const float *dlogits, const nn_hooks_t *hooks)
{
    if (!m->trained) {
        efps_error("backward without a training-mode forward before it");
        return EFPS_ERR_STATE;
    }
    nn_run_t run = {.train = true, .hooks = hooks, .work = m->work};
    const float *dy = dlogits;
    for (size_t i = m->nlayers; i-- > 0;) {
        const float *x = i ? m->act[i - 1] : m->input;
        float *dx = i ? m->grad[i % 2] : NULL; /* nobody needs dL/d(input) */
        efps_status_t status =
            nn_layer_backward(m->layers[i], &run, x, m->act[i], dy, dx, m->batch);
        if (status != EFPS_OK)
            return status;
        dy = dx;
    }
    return EFPS_OK;
}

efps_status_t nn_model_train_step(nn_model_t *m, const float *x, const int32_t *labels, int n,
                                  const nn_hooks_t *hooks, nn_step_result_t *result_p)
{
    const float *logits;
    efps_status_t status = nn_model_forward(m, x, n, true, hooks, &logits);
    if (status != EFPS_OK)
        return status;
    nn_step_result_t r;
    r.loss = nn_softmax_ce(logits, labels, n, m->cfg.classes, m->dlogits, &r.correct);
    status = nn_model_backward(m, m->dlogits, hooks);
    if (status != EFPS_OK)
        return status;
    *result_p = r;
    return EFPS_OK;
}

efps_status_t nn_model_eval_batch(nn_model_t *m, const float *x, const int32_t *labels, int n,
                                  const nn_hooks_t *hooks, nn_step_result_t *result_p)
{
    const float *logits;
    efps_status_t status = nn_model_forward(m, x, n, false, hooks, &logits);
    if (status != EFPS_OK)
        return status;
    nn_step_result_t r;
    r.loss = nn_softmax_ce(logits, labels, n, m->cfg.classes, NULL, &r.correct);
    *result_p = r;
    return EFPS_OK;
}

void nn_model_describe(const nn_model_t *m, FILE *out)
{
    nn_shape_t s = m->cfg.input;
    fprintf(out, "input      %dx%dx%d\n", s.c, s.h, s.w);
    for (size_t i = 0; i < m->nlayers; i++) {
        const nn_layer_t *l = m->layers[i];
        fprintf(out, "%-10s %dx%dx%d\n", l->ops->kind, l->out.c, l->out.h, l->out.w);
    }
    fprintf(out, "%zu parameter tensors, %zu parameters\n", m->params.count,
            nn_params_total(&m->params));
}
