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

#ifdef _OPENMP
#include <omp.h>

#include "comm.h"

/* A team step (cnngen --team, cnngen.h's cg_team): T replicas of the network, one an
 * OpenMP thread, each on its own slice of the batch with its own buffers, workspace and
 * gradients; batch norm meets the team in every layer; then each thread adds the
 * replicas' gradients (in rank order) over its slice of the parameters and updates that
 * slice. The loss is the batch's mean: each replica's dLoss/dout is scaled by its share. */
enum { BENCH_MAX_TEAM = 16 };
typedef struct {
    const cg_net *net;
    int T, n, lo[BENCH_MAX_TEAM + 1];
    float *params, *mom, *gsum, *x, *targets;
    int64_t *labels;
    float *grads[BENCH_MAX_TEAM], *buffers[BENCH_MAX_TEAM], *ws[BENCH_MAX_TEAM];
    cg_team team[BENCH_MAX_TEAM];
    cg_team_shared *sh;
} bench_team;

/* 0, or a message: T replicas of at most net->batch samples must hold n, and OpenMP must
 * give T threads */
static inline const char *bench_team_init(bench_team *b, const cg_net *net, int n, int T)
{
    if (!net->forward_team || !net->backward_team)
        return "the network has no team entry points (generate it with cnngen --team)";
    if (T < 1 || T > BENCH_MAX_TEAM || n < T || (n + T - 1) / T > net->batch)
        return "--team T: T replicas of at most the spec's batch must hold the batch, one sample each at least";
    int got = 0;
    omp_set_dynamic(0);
#pragma omp parallel num_threads(T)
    {
#pragma omp single
        got = omp_get_num_threads();
    }
    if (got != T)
        return "OpenMP did not give a thread to every replica";
    memset(b, 0, sizeof *b);
    b->net = net, b->T = T, b->n = n;
    for (int r = 0; r <= T; r++)
        b->lo[r] = (int)((long)n * r / T);
    b->params = cg_xcalloc(net->n_params, sizeof(float), "parameters");
    b->mom = cg_xcalloc(net->n_params, sizeof(float), "momentum");
    b->gsum = cg_xcalloc(net->n_params, sizeof(float), "gradients");
    b->x = cg_xcalloc((size_t)n * net->in_size, sizeof(float), "inputs");
    b->labels = cg_xcalloc((size_t)n, sizeof(int64_t), "labels");
    b->targets = cg_xcalloc((size_t)n * net->out_size, sizeof(float), "targets");
    for (int r = 0; r < T; r++) {
        b->grads[r] = cg_xcalloc(net->n_params, sizeof(float), "gradients");
        b->buffers[r] = cg_xcalloc(net->n_buffers + 1, sizeof(float), "buffers");
        b->ws[r] = cg_xcalloc(net->workspace, sizeof(float), "workspace");
        cg_init_params(net, b->params, b->buffers[r], 1);
    }
    b->sh = cg_team_new(T, net->team_slot, b->team);
    if (!b->sh)
        return "out of memory for the team";
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < (size_t)n * net->in_size; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        b->x[i] = (float)(s >> 40) / (float)(1 << 24);
    }
    for (int i = 0; i < n; i++)
        b->labels[i] = i % (int)net->out_size;
    return 0;
}

static inline void bench_team_step(bench_team *b)
{
    const cg_net *net = b->net;
#pragma omp parallel num_threads(b->T)
    {
        int r = omp_get_thread_num(), lo = b->lo[r], nr = b->lo[r + 1] - lo;
        float *ws = b->ws[r], *dout = ws + net->dout_offset;
        const float *x = b->x + (size_t)lo * net->in_size;
        const void *target = net->loss == CG_LOSS_MSE ? (const void *)(b->targets + (size_t)lo * net->out_size)
                                                      : (const void *)(b->labels + lo);
        memset(b->grads[r], 0, net->n_params * sizeof(float));
        net->forward_team(b->params, b->buffers[r], x, ws, nr, 1, &b->team[r]);
        cg_loss(net->loss, ws + net->out_offset, target, dout, nr, net->out_size);
        cg_scale(dout, (size_t)nr * net->out_size, (float)nr / (float)b->n);
        net->backward_team(b->params, b->grads[r], x, NULL, ws, nr, &b->team[r]);
        cg_team_sync(&b->team[r]);
        size_t plo, phi;
        cg_comm_shard(net->n_params, r, b->T, &plo, &phi);
        for (size_t i = plo; i < phi; i++) {
            float g = b->grads[0][i];
            for (int t = 1; t < b->T; t++)
                g += b->grads[t][i];
            b->gsum[i] = g;
        }
        cg_sgd_update(b->params + plo, b->gsum + plo, b->mom + plo, phi - plo, 0.001f, 0.9f,
                      net->train.weight_decay);
    }
}

static inline void bench_team_free(bench_team *b)
{
    for (int r = 0; r < b->T; r++)
        free(b->grads[r]), free(b->buffers[r]), free(b->ws[r]);
    cg_team_free(b->sh);
    free(b->params), free(b->mom), free(b->gsum), free(b->x), free(b->labels), free(b->targets);
}
#endif

static inline void bench_net_free(bench_net *b)
{
    free(b->params), free(b->grads), free(b->mom), free(b->buffers), free(b->ws);
    free(b->x), free(b->dx), free(b->labels), free(b->targets);
}

#endif
