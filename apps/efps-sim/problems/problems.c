/* Synthetic problems for the simulation: least squares (convex) and a
 * two-layer tanh network on a teacher-labelled classification set
 * (nonconvex). Plain loops, a fixed order, no FMA contraction: the same bits
 * everywhere, so simulated runs can be compared bit for bit. */
#include "problems.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum kind { LSQ, MLP };

struct sim_problem {
    enum kind kind;
    size_t dim;     /* parameters */
    size_t samples; /* data set size */
    size_t batch;
    size_t in, hidden, classes; /* MLP shape; LSQ: in = dim */
    float *a;                   /* samples x in */
    float *b;                   /* LSQ targets */
    uint32_t *y;                /* MLP labels */
    float *x0;
    float *h, *p, *dh; /* MLP scratch: activations, probabilities, back-propagated */
};

/* ---- random numbers: splitmix64 stream, Box-Muller normals --------------------- */

typedef struct {
    uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1]. */
static double rng_unit(rng_t *r)
{
    return ((double)(rng_next(r) >> 11) + 1.0) / 9007199254740992.0;
}

static double rng_normal(rng_t *r)
{
    const double u = rng_unit(r), v = rng_unit(r);
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static void fill_normal(rng_t *r, float *v, size_t count, double scale)
{
    for (size_t i = 0; i < count; i++)
        v[i] = (float)(scale * rng_normal(r));
}

/* ---- life cycle ------------------------------------------------------------------ */

void sim_problem_destroy(sim_problem_t *p)
{
    if (p == NULL)
        return;
    free(p->a);
    free(p->b);
    free(p->y);
    free(p->x0);
    free(p->h);
    free(p->p);
    free(p->dh);
    free(p);
}

static sim_problem_t *alloc_problem(enum kind kind, size_t dim, size_t in, size_t samples,
                                    size_t batch)
{
    sim_problem_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->kind = kind;
    p->dim = dim;
    p->in = in;
    p->samples = samples;
    p->batch = batch;
    p->a = malloc(samples * in * sizeof(float));
    p->x0 = calloc(dim, sizeof(float));
    if (p->a == NULL || p->x0 == NULL) {
        sim_problem_destroy(p);
        return NULL;
    }
    return p;
}

/* Sizes small enough that every product below fits in size_t. */
static int sizes_ok(size_t a, size_t b, size_t c)
{
    const size_t lim = (size_t)1 << 20;
    return a > 0 && a <= lim && b > 0 && b <= lim && c > 0 && c <= lim;
}

efps_status_t sim_problem_lsq_create(size_t dim, size_t samples, size_t batch, float noise,
                                     uint64_t seed, sim_problem_t **p_p)
{
    if (p_p == NULL || !sizes_ok(dim, samples, batch) || dim * samples > ((size_t)1 << 28) ||
        !(noise >= 0.0f && isfinite(noise))) {
        efps_error("least-squares problem: bad sizes (dim %zu, samples %zu, batch %zu) or noise",
                   dim, samples, batch);
        return EFPS_ERR_INVALID;
    }
    sim_problem_t *p = alloc_problem(LSQ, dim, dim, samples, batch);
    float *xstar = malloc(dim * sizeof(float));
    if (p == NULL || xstar == NULL || (p->b = malloc(samples * sizeof(float))) == NULL) {
        free(xstar);
        sim_problem_destroy(p);
        return EFPS_ERR_NOMEM;
    }
    rng_t r = {seed};
    fill_normal(&r, p->a, samples * dim, 1.0);
    fill_normal(&r, xstar, dim, 1.0);
    for (size_t j = 0; j < samples; j++) {
        double t = 0.0;
        for (size_t i = 0; i < dim; i++)
            t += (double)p->a[j * dim + i] * xstar[i];
        p->b[j] = (float)(t + noise * rng_normal(&r));
    }
    free(xstar);
    *p_p = p;
    return EFPS_OK;
}

/* ---- the two-layer network --------------------------------------------------------- */

/* Parameter views of x: W1 [hidden][in], b1 [hidden], W2 [classes][hidden], b2 [classes]. */
typedef struct {
    const float *w1, *b1, *w2, *b2;
} mlp_view_t;

static mlp_view_t mlp_view(const sim_problem_t *p, const float *x)
{
    mlp_view_t v;
    v.w1 = x;
    v.b1 = v.w1 + p->hidden * p->in;
    v.w2 = v.b1 + p->hidden;
    v.b2 = v.w2 + p->classes * p->hidden;
    return v;
}

/* Forward pass of one sample: p->h = tanh(W1 a + b1), p->p = softmax(W2 h + b2).
 * Returns -log p[y] (y < classes) or 0. */
static float mlp_forward(sim_problem_t *p, const float *x, const float *a, uint32_t y)
{
    const mlp_view_t v = mlp_view(p, x);
    for (size_t k = 0; k < p->hidden; k++) {
        float z = v.b1[k];
        for (size_t i = 0; i < p->in; i++)
            z += v.w1[k * p->in + i] * a[i];
        p->h[k] = tanhf(z);
    }
    float zmax = -INFINITY;
    for (size_t c = 0; c < p->classes; c++) {
        float z = v.b2[c];
        for (size_t k = 0; k < p->hidden; k++)
            z += v.w2[c * p->hidden + k] * p->h[k];
        p->p[c] = z;
        zmax = z > zmax ? z : zmax;
    }
    float sum = 0.0f;
    for (size_t c = 0; c < p->classes; c++) {
        p->p[c] = expf(p->p[c] - zmax);
        sum += p->p[c];
    }
    for (size_t c = 0; c < p->classes; c++)
        p->p[c] /= sum;
    return y < p->classes ? -logf(fmaxf(p->p[y], 1e-30f)) : 0.0f;
}

/* Adds the gradient of -log p[y] for one sample (after mlp_forward) to g. */
static void mlp_backward(sim_problem_t *p, const float *x, const float *a, uint32_t y, float *g)
{
    const mlp_view_t v = mlp_view(p, x);
    float *gw1 = g, *gb1 = gw1 + p->hidden * p->in, *gw2 = gb1 + p->hidden,
          *gb2 = gw2 + p->classes * p->hidden;
    for (size_t k = 0; k < p->hidden; k++)
        p->dh[k] = 0.0f;
    for (size_t c = 0; c < p->classes; c++) {
        const float dz = p->p[c] - (c == y ? 1.0f : 0.0f);
        gb2[c] += dz;
        for (size_t k = 0; k < p->hidden; k++) {
            gw2[c * p->hidden + k] += dz * p->h[k];
            p->dh[k] += dz * v.w2[c * p->hidden + k];
        }
    }
    for (size_t k = 0; k < p->hidden; k++) {
        const float dz = p->dh[k] * (1.0f - p->h[k] * p->h[k]);
        gb1[k] += dz;
        for (size_t i = 0; i < p->in; i++)
            gw1[k * p->in + i] += dz * a[i];
    }
}

/* Labels drawn from a teacher network's softmax: some noise is inherent, so
 * the best loss is above zero, as in real data. */
static efps_status_t mlp_label(sim_problem_t *p, rng_t *r)
{
    float *teacher = calloc(p->dim, sizeof(float));
    if (teacher == NULL)
        return EFPS_ERR_NOMEM;
    mlp_view_t v = mlp_view(p, teacher);
    fill_normal(r, (float *)v.w1, p->hidden * p->in, 2.0 / sqrt((double)p->in));
    fill_normal(r, (float *)v.w2, p->classes * p->hidden, 3.0 / sqrt((double)p->hidden));
    for (size_t j = 0; j < p->samples; j++) {
        mlp_forward(p, teacher, p->a + j * p->in, UINT32_MAX);
        double u = rng_unit(r), acc = 0.0;
        uint32_t y = (uint32_t)p->classes - 1;
        for (size_t c = 0; c < p->classes; c++) {
            acc += p->p[c];
            if (u <= acc) {
                y = (uint32_t)c;
                break;
            }
        }
        p->y[j] = y;
    }
    free(teacher);
    return EFPS_OK;
}

efps_status_t sim_problem_mlp_create(size_t inputs, size_t hidden, size_t classes, size_t samples,
                                     size_t batch, uint64_t seed, sim_problem_t **p_p)
{
    if (p_p == NULL || !sizes_ok(inputs, hidden, classes) || !sizes_ok(samples, batch, 1) ||
        classes < 2 || inputs * hidden > ((size_t)1 << 24) ||
        hidden * classes > ((size_t)1 << 24) || inputs * samples > ((size_t)1 << 28)) {
        efps_error("network problem: bad sizes (%zu-%zu-%zu, samples %zu, batch %zu)", inputs,
                   hidden, classes, samples, batch);
        return EFPS_ERR_INVALID;
    }
    const size_t dim = hidden * inputs + hidden + classes * hidden + classes;
    sim_problem_t *p = alloc_problem(MLP, dim, inputs, samples, batch);
    if (p == NULL)
        return EFPS_ERR_NOMEM;
    p->hidden = hidden;
    p->classes = classes;
    p->y = malloc(samples * sizeof(uint32_t));
    p->h = malloc(hidden * sizeof(float));
    p->dh = malloc(hidden * sizeof(float));
    p->p = malloc(classes * sizeof(float));
    if (p->y == NULL || p->h == NULL || p->dh == NULL || p->p == NULL) {
        sim_problem_destroy(p);
        return EFPS_ERR_NOMEM;
    }
    rng_t r = {seed};
    fill_normal(&r, p->a, samples * inputs, 1.0);
    if (mlp_label(p, &r) != EFPS_OK) {
        sim_problem_destroy(p);
        return EFPS_ERR_NOMEM;
    }
    mlp_view_t v = mlp_view(p, p->x0);
    fill_normal(&r, (float *)v.w1, hidden * inputs, 1.0 / sqrt((double)inputs));
    fill_normal(&r, (float *)v.w2, classes * hidden, 1.0 / sqrt((double)hidden));
    *p_p = p;
    return EFPS_OK;
}

/* ---- the calls ------------------------------------------------------------------------ */

size_t sim_problem_dim(const sim_problem_t *p)
{
    return p->dim;
}

void sim_problem_init(const sim_problem_t *p, float *x)
{
    memcpy(x, p->x0, p->dim * sizeof(float));
}

static float lsq_residual(const sim_problem_t *p, const float *x, size_t j)
{
    const float *a = p->a + j * p->dim;
    float t = 0.0f;
    for (size_t i = 0; i < p->dim; i++)
        t += a[i] * x[i];
    return t - p->b[j];
}

double sim_problem_loss(sim_problem_t *p, const float *x)
{
    double sum = 0.0;
    for (size_t j = 0; j < p->samples; j++) {
        if (p->kind == LSQ) {
            const double r = lsq_residual(p, x, j);
            sum += 0.5 * r * r;
        } else {
            sum += mlp_forward(p, x, p->a + j * p->in, p->y[j]);
        }
    }
    return sum / (double)p->samples;
}

efps_status_t sim_problem_grad(int worker, uint64_t step, uint64_t seed, const float *x,
                               float *grad, void *problem)
{
    (void)worker, (void)step; /* the minibatch comes from seed alone */
    sim_problem_t *p = problem;
    if (p == NULL || x == NULL || grad == NULL)
        return EFPS_ERR_INVALID;
    memset(grad, 0, p->dim * sizeof(float));
    rng_t r = {seed};
    for (size_t s = 0; s < p->batch; s++) {
        const size_t j = (size_t)(rng_next(&r) % p->samples);
        const float *a = p->a + j * p->in;
        if (p->kind == LSQ) {
            const float res = lsq_residual(p, x, j);
            for (size_t i = 0; i < p->dim; i++)
                grad[i] += res * a[i];
        } else {
            mlp_forward(p, x, a, p->y[j]);
            mlp_backward(p, x, a, p->y[j], grad);
        }
    }
    const float inv = 1.0f / (float)p->batch;
    for (size_t i = 0; i < p->dim; i++)
        grad[i] *= inv;
    return EFPS_OK;
}
