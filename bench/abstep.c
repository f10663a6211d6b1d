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
 * take bench/bench_net.h's step, as bench/step.c does. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_net.h"

extern const cg_net CG_NET_A, CG_NET_B;

/* one side: a plain net, or a team's (cnngen --team T, net->team > 1: bench_team_step);
 * t.b holds the net, its batch and buffers, t.team is set only for a team */
typedef struct {
    bench_team t;
} side;

static int is_team(const side *s) { return s->t.b.net->team > 1; }

static void side_init(side *s, const cg_net *net, int want_dx)
{
    memset(s, 0, sizeof *s);
    if (net->team <= 1) {
        bench_net_init(&s->t.b, net, net->batch, want_dx);
        return;
    }
    const char *err = want_dx ? "--dx is for a layer alone, not a team" : bench_team_init(&s->t, net, cg_net_step_batch(net));
    if (err) {
        fprintf(stderr, "abstep: %s: %s\n", net->name, err);
        exit(1);
    }
}

static void side_step(side *s)
{
    if (!is_team(s))
        bench_net_step(&s->t.b);
    else if (bench_team_step(&s->t)) {
        fprintf(stderr, "abstep: %s: the team could not have its %d threads\n", s->t.b.net->name, s->t.b.net->team);
        exit(1);
    }
}

static void side_free(side *s)
{
    if (is_team(s))
        bench_team_free(&s->t);
    else
        bench_net_free(&s->t.b);
}

/* seconds a step of s, over the warm-up's second half (at least warmup_s in all) */
static double warm(side *s, double warmup_s)
{
    double t0 = bench_now();
    long k = 0;
    do
        side_step(s), k++;
    while (bench_now() - t0 < warmup_s);
    long h = k / 2 > 0 ? k / 2 : 1;
    double t = bench_now();
    for (long i = 0; i < h; i++)
        side_step(s);
    return (bench_now() - t) / (double)h;
}

/* the median of v[0..n), sorted into tmp */
static double median(const double *v, double *tmp, int n)
{
    memcpy(tmp, v, sizeof(double) * (size_t)n);
    qsort(tmp, (size_t)n, sizeof(double), bench_cmp_double);
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

static double block(side *s, int steps)
{
    double t = bench_now();
    for (int k = 0; k < steps; k++)
        side_step(s);
    return bench_now() - t;
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
        ra[p] = steps * (double)a.t.b.n / ta;
        rb[p] = steps * (double)b.t.b.n / tb;
        ratio[p] = rb[p] / ra[p];
    }
    double *sorted = cg_xcalloc((size_t)pairs, sizeof(double), "sorted");
    double ma = median(ra, sorted, pairs), mb = median(rb, sorted, pairs), med = median(ratio, sorted, pairs);
    /* sorted holds the ratios in order now */
    int k = ci_rank(pairs), lo = k > 0 ? k - 1 : 0, hi = pairs - 1 - lo;
    printf("{\"a\": \"%s\", \"b\": \"%s\", \"batch\": %d, \"pairs\": %d, \"steps_per_block\": %d, "
           "\"flush_subnormals\": %s, \"a_img_per_s\": %.1f, \"b_img_per_s\": %.1f, \"ratio\": %.4f, "
           "\"ci95\": [%.4f, %.4f], \"ratios\": [",
           a.t.b.net->name, b.t.b.net->name, a.t.b.n, pairs, steps, flushed ? "true" : "false", ma, mb, med, sorted[lo],
           sorted[hi]);
    for (int p = 0; p < pairs; p++)
        printf("%s%.4f", p ? ", " : "", ratio[p]);
    printf("]}\n");
    free(ra), free(rb), free(ratio), free(sorted);
    side_free(&a), side_free(&b);
    return 0;
}
