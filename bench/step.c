/* bench/step.c: time training steps of one generated network on random data.
 * Built by `make bench` (bench/run.py) with -DCG_NET=<name>_net; prints one JSON line:
 * {"net": ..., "batch": B, "img_per_s": median, "runs": [...], ...}.
 *
 * usage: step [steps] [reps] [batch] [--fwd] [--dx] [--warmup-s S] [--rep-s S] [--ieee-subnormals]
 *   steps       training steps per timed repetition; 0 = calibrate from the warm-up so
 *               that one repetition lasts about --rep-s seconds (default 0.4)
 *   reps        timed repetitions (default 5, at most 64); the median is reported
 *   batch       samples per step (default and maximum: the spec's train batch)
 *   --fwd       time the training-mode forward only (training=1, no loss/backward/update)
 *   --dx        the backward also computes dLoss/dx (as a layer inside a network must);
 *               default: dx = NULL, as a trainer does for its first layer
 *   --warmup-s  warm-up: at least this many seconds (default 0.5) and at least `steps`
 *               steps before timing
 *   --ieee-subnormals  keep IEEE subnormal floats; default: flush-to-zero and
 *               denormals-are-zero (cg_flush_subnormals), as the trainer's commands do
 *   --team T    T replicas on T threads split the batch (a network generated with
 *               cnngen --team T; runtime/team.c's cg_net_team_step); batch default T x
 *               the compiled (replica's) batch, the spec's train.batch
 *
 * A step = zero grads, forward (training), loss, backward, SGD momentum update
 * (cg_net_sgd_update, the runtime's update kernel on the net's threads; lr 0.001, momentum 0.9, weight decay from
 * the spec): what a trainer does per batch. Data: uniform [0, 1) inputs, labels i % classes
 * (or zero MSE targets), fixed seed.
 *
 * Per repetition it also records the process CPU time (user + system) over wall time, and
 * the minor/major page faults, from getrusage(RUSAGE_SELF): cpu/wall well below the thread
 * count means the threads were descheduled (another process on the machine) and faults
 * during a timed repetition mean memory was still being first-touched. Peak RSS (VmHWM)
 * is printed next to the planned minimum (params, grads, momentum, buffers, workspace,
 * one batch of inputs and targets) and the RSS before those allocations. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench_net.h"
#include "cnngen.h"

extern const cg_net CG_NET;

typedef struct {
    double wall, cpu;
    long minflt, majflt;
} sample;

static sample snap(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    sample s = {bench_now(), (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
                           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec,
                ru.ru_minflt, ru.ru_majflt};
    return s;
}

/* peak resident set of this process image, KiB: VmHWM from /proc/self/status. Not
 * getrusage's ru_maxrss: Linux carries that across execve, so it starts at the RSS of the
 * (forked) parent -- e.g. the Python harness -- and hides a small process's own peak. */
static long maxrss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    if (kb < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = ru.ru_maxrss;
    }
    return kb;
}

static bench_net bn;
static int fwd_only, team_size;
static bench_team bt;

static void step(void)
{
    if (team_size) {
        if (bench_team_step(&bt)) {
            fprintf(stderr, "step: the team of %d could not have its threads (OMP_NUM_THREADS?)\n", team_size);
            exit(1);
        }
        return;
    }
    if (fwd_only)
        bn.net->forward(bn.params, bn.buffers, bn.x, bn.ws, bn.n, 1);
    else
        bench_net_step(&bn);
}

int main(int argc, char **argv)
{
    const cg_net *net = &CG_NET;
    long rss0 = maxrss_kb();
    int pos[3] = {0, 5, net->batch}, npos = 0, want_dx = 0, ieee = 0;
    double warmup_s = 0.5, rep_s = 0.4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--fwd"))
            fwd_only = 1;
        else if (!strcmp(argv[i], "--dx"))
            want_dx = 1;
        else if (!strcmp(argv[i], "--ieee-subnormals"))
            ieee = 1;
        else if (!strcmp(argv[i], "--warmup-s") && i + 1 < argc)
            warmup_s = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rep-s") && i + 1 < argc)
            rep_s = atof(argv[++i]);
        else if (!strcmp(argv[i], "--team") && i + 1 < argc)
            team_size = atoi(argv[++i]);
        else if (argv[i][0] != '-' && npos < 3)
            pos[npos++] = atoi(argv[i]);
        else
            npos = 99;
    }
    int steps = pos[0], reps = pos[1];
    int n = pos[2], maxn = net->batch;
    if (team_size > 0) {
        maxn = team_size * net->batch;
        if (npos < 3)
            n = maxn;
    }
    if (npos > 3 || steps < 0 || reps < 1 || n < 1 || n > maxn || rep_s <= 0 || team_size < 0 ||
        (team_size && (fwd_only || want_dx))) {
        fprintf(stderr,
                "usage: %s [steps|0=auto] [reps] [batch<=%d] [--fwd] [--dx] [--warmup-s S] [--rep-s S] "
                "[--ieee-subnormals] [--team T (not with --fwd, --dx)]\n",
                argv[0], maxn);
        return 2;
    }
    if (reps > 64)
        reps = 64;
    /* before the first OpenMP region, so that the worker threads inherit it */
    int flushed = ieee ? 0 : cg_flush_subnormals(1);
    if (team_size) {
        const char *err = team_size != net->team ? "the network was generated for another team (cnngen --team T)"
                                                 : bench_team_init(&bt, net, n);
        if (err) {
            fprintf(stderr, "%s: --team %d: %s\n", argv[0], team_size, err);
            return 2;
        }
    } else
        bench_net_init(&bn, net, n, want_dx);
    /* planned minimum, bytes: what this process must hold (the generated header's macros) */
    double planned = 4.0 * (3.0 * (double)net->n_params + (double)net->n_buffers + (double)net->workspace +
                            (double)n * (double)net->in_size * (want_dx ? 2 : 1) + (double)n * (double)net->out_size) +
                     8.0 * n;

    /* warm-up: first touch of every page, OpenMP thread start, caches, CPU clocks */
    sample w0 = snap();
    double t_first = 0;
    long warm_steps = 0;
    do {
        double t = bench_now();
        step();
        if (warm_steps == 0)
            t_first = bench_now() - t;
        warm_steps++;
    } while (warm_steps < (steps > 0 ? steps : 1) || bench_now() - w0.wall < warmup_s);
    sample w1 = snap();
    double per_step = (w1.wall - w0.wall) / (double)warm_steps;
    if (steps == 0) {
        /* calibrate on the second half of the warm-up, away from first-step effects */
        long k = warm_steps / 2 > 0 ? warm_steps / 2 : 1;
        double t = bench_now();
        for (long i = 0; i < k; i++)
            step();
        per_step = (bench_now() - t) / (double)k;
        steps = (int)(rep_s / per_step + 0.5);
        if (steps < 1)
            steps = 1;
    }

    double runs[64], util[64];
    long minflt[64], majflt[64];
    int threads = 1;
#ifdef _OPENMP
    threads = team_size ? team_size : omp_get_max_threads();
#endif
    for (int r = 0; r < reps; r++) {
        sample a = snap();
        for (int k = 0; k < steps; k++)
            step();
        sample b = snap();
        runs[r] = (double)steps * n / (b.wall - a.wall);
        util[r] = (b.cpu - a.cpu) / (b.wall - a.wall);
        minflt[r] = b.minflt - a.minflt;
        majflt[r] = b.majflt - a.majflt;
    }
    double sorted[64];
    memcpy(sorted, runs, sizeof(double) * (size_t)reps);
    qsort(sorted, (size_t)reps, sizeof(double), bench_cmp_double);
    printf("{\"net\": \"%s\", \"mode\": \"%s\", \"batch\": %d, \"threads\": %d, \"team\": %d, \"steps\": %d, "
           "\"img_per_s\": %.1f, \"flush_subnormals\": %s, \"runs\": [",
           net->name, fwd_only ? "fwd" : want_dx ? "train_dx" : "train", n, threads, team_size, steps, sorted[reps / 2],
           flushed ? "true" : "false");
    for (int r = 0; r < reps; r++)
        printf("%s%.1f", r ? ", " : "", runs[r]);
    printf("], \"cpu_per_wall\": [");
    for (int r = 0; r < reps; r++)
        printf("%s%.3f", r ? ", " : "", util[r]);
    printf("], \"minflt\": [");
    for (int r = 0; r < reps; r++)
        printf("%s%ld", r ? ", " : "", minflt[r]);
    printf("], \"majflt\": [");
    for (int r = 0; r < reps; r++)
        printf("%s%ld", r ? ", " : "", majflt[r]);
    printf("], \"warmup\": {\"steps\": %ld, \"s\": %.4f, \"first_step_s\": %.6f, \"mean_step_s\": %.6f, "
           "\"minflt\": %ld, \"cpu_per_wall\": %.3f}",
           warm_steps, w1.wall - w0.wall, t_first, (w1.wall - w0.wall) / (double)warm_steps, w1.minflt - w0.minflt,
           (w1.cpu - w0.cpu) / (w1.wall - w0.wall));
    printf(", \"rss_start_kb\": %ld, \"maxrss_kb\": %ld, \"planned_bytes\": %.0f}\n", rss0, maxrss_kb(), planned);
    if (team_size)
        bench_team_free(&bt);
    else
        bench_net_free(&bn);
    return 0;
}
