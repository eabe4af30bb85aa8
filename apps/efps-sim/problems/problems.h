/* The simulation's synthetic problems (efps-sim, and the tests that compare
 * runs with it): not part of libefps, whose API is the communication library.
 * Each gives an efps_sim_grad_fn for efps_sim_create / efps_sim_load. */
#ifndef EFPS_SIM_PROBLEMS_H
#define EFPS_SIM_PROBLEMS_H

#include "efps/optim.h"

/* Synthetic, deterministic for a seed, computed in plain loops (so the same
 * bits everywhere). Workers draw iid minibatches from the whole data set with
 * the per-call seed. A problem keeps scratch buffers: one thread at a time. */
typedef struct sim_problem sim_problem_t;

/* Least squares: f(x) = 1/(2N) sum_j (a_j . x - b_j)^2, a_j ~ N(0, I_dim),
 * b = A x* + noise * N(0, 1), x* ~ N(0, I). x0 = 0. */
efps_status_t sim_problem_lsq_create(size_t dim, size_t samples, size_t batch, float noise,
                                     uint64_t seed, sim_problem_t **p_p);
/* Two-layer network (inputs -> hidden tanh -> classes, softmax cross-entropy,
 * mean over samples) on a synthetic classification set: inputs ~ N(0, I),
 * labels from a random teacher network of the same shape. x0: small random
 * weights, zero biases. Parameter layout: W1 [hidden][inputs], b1 [hidden],
 * W2 [classes][hidden], b2 [classes]. */
efps_status_t sim_problem_mlp_create(size_t inputs, size_t hidden, size_t classes, size_t samples,
                                     size_t batch, uint64_t seed, sim_problem_t **p_p);
void sim_problem_destroy(sim_problem_t *p);
/* Number of parameters. */
size_t sim_problem_dim(const sim_problem_t *p);
/* The initial parameters (dim floats). */
void sim_problem_init(const sim_problem_t *p, float *x);
/* Full-data loss at x (accumulated in double). */
double sim_problem_loss(sim_problem_t *p, const float *x);
/* Minibatch gradient; an efps_sim_grad_fn with user = the problem. */
efps_status_t sim_problem_grad(int worker, uint64_t step, uint64_t seed, const float *x,
                               float *grad, void *problem);

#endif
