/* bench/bench_net.h: one generated network's training state on random data, and the
 * step a trainer takes per batch; shared by bench/step.c (one network) and
 * bench/abstep.c (two in one process). Header-only: each bench program is one file.
 *
 * A step = zero grads, forward (training), loss, backward, SGD momentum update
 * (cg_net_sgd_update, the runtime's update kernel on the net's threads; lr 0.001,
 * momentum 0.9, weight decay from the spec). Data: uniform [0, 1) inputs from a fixed
 * xorshift seed, labels i % classes (or zero MSE targets). */
#ifndef CG_BENCH_NET_H
#define CG_BENCH_NET_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnngen.h"
#include "sgd.h"

typedef struct {
    const cg_net *net;
    int n; /* samples a step, at most net->batch */
    float *params, *grads, *mom, *buffers, *ws, *x, *dx;
    int64_t *labels;
    float *targets;
    const void *target;
} bench_net;

static inline double bench_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* allocate (calloc: pages first touched by the first step) and fill; dx only with want_dx */
static inline void bench_net_init(bench_net *b, const cg_net *net, int n, int want_dx)
{
    b->net = net;
    b->n = n;
    b->params = cg_xcalloc(net->n_params, sizeof(float), "parameters");
    b->grads = cg_xcalloc(net->n_params, sizeof(float), "gradients");
    b->mom = cg_xcalloc(net->n_params, sizeof(float), "momentum");
    b->buffers = cg_xcalloc(net->n_buffers + 1, sizeof(float), "buffers");
    b->ws = cg_xcalloc(net->workspace, sizeof(float), "workspace");
    b->x = cg_xcalloc((size_t)n * net->in_size, sizeof(float), "inputs");
    b->dx = want_dx ? cg_xcalloc((size_t)n * net->in_size, sizeof(float), "input gradient") : NULL;
    b->labels = cg_xcalloc((size_t)n, sizeof(int64_t), "labels");
    b->targets = cg_xcalloc((size_t)n * net->out_size, sizeof(float), "targets");
    cg_init_params(net, b->params, b->buffers, 1);
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < (size_t)n * net->in_size; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        b->x[i] = (float)(s >> 40) / (float)(1 << 24);
    }
    for (int i = 0; i < n; i++)
        b->labels[i] = i % (int)net->out_size;
    b->target = net->loss == CG_LOSS_MSE ? (const void *)b->targets : (const void *)b->labels;
}

static inline void bench_net_step(const bench_net *b)
{
    const cg_net *net = b->net;
    memset(b->grads, 0, net->n_params * sizeof(float));
    net->forward(b->params, b->buffers, b->x, b->ws, b->n, 1);
    cg_net_loss(net, b->ws + net->out_offset, b->target, b->ws + net->dout_offset, b->n);
    net->backward(b->params, b->grads, b->x, b->dx, b->ws, b->n);
    cg_net_sgd_update(net, b->params, b->grads, b->mom, net->n_params, 0.001f, 0.9f, net->train.weight_decay);
}

static inline void bench_net_free(bench_net *b)
{
    free(b->params), free(b->grads), free(b->mom), free(b->buffers), free(b->ws);
    free(b->x), free(b->dx), free(b->labels), free(b->targets);
}

/* A team step (cnngen --team T: net->team replicas, one a thread, the runtime's
 * cg_net_team_step): the same step as bench_net_step, the batch split between replicas. */
typedef struct {
    bench_net b;
    cg_net_team team;
} bench_team;

/* NULL, or why not */
static inline const char *bench_team_init(bench_team *t, const cg_net *net, int n)
{
    const char *err = cg_net_team_init(&t->team, net);
    if (err)
        return err;
    if (n > net->team * net->batch)
        return "the batch is larger than the team's";
    bench_net_init(&t->b, net, n, 0);
    return NULL;
}

/* 0, or -1 when the team could not have its threads */
static inline int bench_team_step(bench_team *t)
{
    const bench_net *b = &t->b;
    const cg_net *net = b->net;
    double loss;
    memset(b->grads, 0, net->n_params * sizeof(float));
    if (cg_net_team_step(&t->team, b->params, b->grads, b->buffers, b->x, b->target, b->n, 1, 1.0f, &loss))
        return -1;
    cg_net_sgd_update(net, b->params, b->grads, b->mom, net->n_params, 0.001f, 0.9f, net->train.weight_decay);
    return 0;
}

static inline void bench_team_free(bench_team *t)
{
    cg_net_team_free(&t->team);
    bench_net_free(&t->b);
}


#endif
