/* bench/abstep.c: two generated networks' training steps timed in one process, in
 * alternating blocks, to tell which is faster on a machine whose speed moves.
 * Built by bench/ab.py with -DCG_NET_A=... -DCG_NET_B=... (the two files' nets renamed
 * when they compile); prints one JSON line.
 *
 * usage: abstep [pairs] [--block-s S] [--warmup-s S] [--dx] [--b-first]
 *   pairs       blocks of A and of B (default 40, at most 4096); the order within a pair
 *               alternates (A B, B A, ...)
 *   --block-s   seconds a block lasts (default 0.1; the steps a block takes are calibrated
 *               on the warm-up, the same count for both networks)
 *   --warmup-s  warm-up of each network (default 0.5)
 *   --dx        the backward also computes dLoss/dx
 *   --b-first   B's memory allocated and first touched before A's (bench/ab.py runs
 *               half the pairs each way: where each side's pages land moves a
 *               process's ratio by a percent or two, in either direction)
 *
 * Why: on the 2-core VMs this project runs on, the same step binary's speed moves by up
 * to 1.7x within seconds and between processes (bench/RESULTS.md, "Two speeds"), so two
 * processes timed one after the other compare minutes, not code. Here a pair's two
 * blocks run a tenth of a second apart in the same process, with the same threads, and
 * the figure is the median over the pairs of B's rate over A's; with it a 95 %
 * distribution-free interval for that median (order statistics of the pairs' ratios,
 * binomial ranks). Each network has its own parameters, workspace and data, and both
 * take steps of the same kind: zero grads, forward, loss, backward, SGD momentum update
 * (bench/step.c's). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnngen.h"
#include "sgd.h"

extern const cg_net CG_NET_A, CG_NET_B;

typedef struct {
    const cg_net *net;
    float *params, *grads, *mom, *buffers, *ws, *x, *dx;
    int64_t *labels;
    float *targets;
    const void *target;
} side;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void side_init(side *s, const cg_net *net, int want_dx)
{
    s->net = net;
    s->params = cg_xcalloc(net->n_params, sizeof(float), "parameters");
    s->grads = cg_xcalloc(net->n_params, sizeof(float), "gradients");
    s->mom = cg_xcalloc(net->n_params, sizeof(float), "momentum");
    s->buffers = cg_xcalloc(net->n_buffers + 1, sizeof(float), "buffers");
    s->ws = cg_xcalloc(net->workspace, sizeof(float), "workspace");
    s->x = cg_xcalloc((size_t)net->batch * net->in_size, sizeof(float), "inputs");
    s->dx = want_dx ? cg_xcalloc((size_t)net->batch * net->in_size, sizeof(float), "input gradient") : NULL;
    s->labels = cg_xcalloc((size_t)net->batch, sizeof(int64_t), "labels");
    s->targets = cg_xcalloc((size_t)net->batch * net->out_size, sizeof(float), "targets");
    cg_init_params(net, s->params, s->buffers, 1);
    uint64_t r = 88172645463325252ull;
    for (size_t i = 0; i < (size_t)net->batch * net->in_size; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        s->x[i] = (float)(r >> 40) / (float)(1 << 24);
    }
    for (int i = 0; i < net->batch; i++)
        s->labels[i] = i % (int)net->out_size;
    s->target = net->loss == CG_LOSS_MSE ? (const void *)s->targets : (const void *)s->labels;
}

static void side_free(side *s)
{
    free(s->params), free(s->grads), free(s->mom), free(s->buffers), free(s->ws);
    free(s->x), free(s->dx), free(s->labels), free(s->targets);
}

static void step(const side *s)
{
    const cg_net *net = s->net;
    int n = net->batch;
    memset(s->grads, 0, net->n_params * sizeof(float));
    net->forward(s->params, s->buffers, s->x, s->ws, n, 1);
    cg_net_loss(net, s->ws + net->out_offset, s->target, s->ws + net->dout_offset, n);
    net->backward(s->params, s->grads, s->x, s->dx, s->ws, n);
    cg_net_sgd_update(net, s->params, s->grads, s->mom, net->n_params, 0.001f, 0.9f, net->train.weight_decay);
}

/* seconds a step of s, over the warm-up's second half (at least warmup_s in all) */
static double warm(const side *s, double warmup_s)
{
    double t0 = now();
    long k = 0;
    do
        step(s), k++;
    while (now() - t0 < warmup_s);
    long h = k / 2 > 0 ? k / 2 : 1;
    double t = now();
    for (long i = 0; i < h; i++)
        step(s);
    return (now() - t) / (double)h;
}

/* the median of v[0..n), sorted into tmp */
static double median(const double *v, double *tmp, int n)
{
    memcpy(tmp, v, sizeof(double) * (size_t)n);
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

static double block(const side *s, int steps)
{
    double t = now();
    for (int k = 0; k < steps; k++)
        step(s);
    return now() - t;
}

/* the largest k with P(Binomial(n, 1/2) <= k - 1) <= 0.025: the k-th smallest and the
 * k-th largest of n ratios bound their median with 95 % confidence whatever their
 * distribution (0 when n is too small, 5 or fewer: no such interval) */
static int ci_rank(int n)
{
    double p = pow(0.5, n), cum = 0;
    int k = 0;
    for (; k <= n; k++) {
        cum += p;
        if (cum > 0.025)
            break;
        p = p * (double)(n - k) / (double)(k + 1);
    }
    return k;
}

int main(int argc, char **argv)
{
    int pairs = 40, want_dx = 0, b_first = 0, bad = 0;
    double block_s = 0.1, warmup_s = 0.5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dx"))
            want_dx = 1;
        else if (!strcmp(argv[i], "--b-first"))
            b_first = 1;
        else if (!strcmp(argv[i], "--block-s") && i + 1 < argc)
            block_s = atof(argv[++i]);
        else if (!strcmp(argv[i], "--warmup-s") && i + 1 < argc)
            warmup_s = atof(argv[++i]);
        else if (argv[i][0] != '-')
            pairs = atoi(argv[i]);
        else
            bad = 1;
    }
    if (bad || pairs < 1 || pairs > 4096 || !(block_s > 0) || !(warmup_s >= 0)) {
        fprintf(stderr, "usage: %s [pairs<=4096] [--block-s S] [--warmup-s S] [--dx] [--b-first]\n", argv[0]);
        return 2;
    }
    int flushed = cg_flush_subnormals(1);
    side a, b;
    if (b_first)
        side_init(&b, &CG_NET_B, want_dx), side_init(&a, &CG_NET_A, want_dx);
    else
        side_init(&a, &CG_NET_A, want_dx), side_init(&b, &CG_NET_B, want_dx);
    double sb = b_first ? warm(&b, warmup_s) : 0, sa = warm(&a, warmup_s);
    if (!b_first)
        sb = warm(&b, warmup_s);
    double per = sa > sb ? sa : sb;
    int steps = (int)(block_s / per + 0.5);
    if (steps < 1)
        steps = 1;
    double *ra = cg_xcalloc((size_t)pairs, sizeof(double), "rates");
    double *rb = cg_xcalloc((size_t)pairs, sizeof(double), "rates");
    double *ratio = cg_xcalloc((size_t)pairs, sizeof(double), "ratios");
    for (int p = 0; p < pairs; p++) {
        double ta, tb;
        if (p % 2 == 0)
            ta = block(&a, steps), tb = block(&b, steps);
        else
            tb = block(&b, steps), ta = block(&a, steps);
        ra[p] = steps * (double)a.net->batch / ta;
        rb[p] = steps * (double)b.net->batch / tb;
        ratio[p] = rb[p] / ra[p];
    }
    double *sorted = cg_xcalloc((size_t)pairs, sizeof(double), "sorted");
    double ma = median(ra, sorted, pairs), mb = median(rb, sorted, pairs), med = median(ratio, sorted, pairs);
    /* sorted holds the ratios in order now */
    int k = ci_rank(pairs), lo = k > 0 ? k - 1 : 0, hi = pairs - 1 - lo;
    printf("{\"a\": \"%s\", \"b\": \"%s\", \"batch\": %d, \"pairs\": %d, \"steps_per_block\": %d, "
           "\"flush_subnormals\": %s, \"a_img_per_s\": %.1f, \"b_img_per_s\": %.1f, \"ratio\": %.4f, "
           "\"ci95\": [%.4f, %.4f], \"ratios\": [",
           a.net->name, b.net->name, a.net->batch, pairs, steps, flushed ? "true" : "false", ma, mb, med, sorted[lo],
           sorted[hi]);
    for (int p = 0; p < pairs; p++)
        printf("%s%.4f", p ? ", " : "", ratio[p]);
    printf("]}\n");
    free(ra), free(rb), free(ratio), free(sorted);
    side_free(&a), side_free(&b);
    return 0;
}
