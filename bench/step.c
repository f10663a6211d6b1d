/* bench/step.c: time training steps of one generated network on random data.
 * Built by `make bench` with -DCG_NET=<name>_net; prints one JSON line:
 * {"net": ..., "batch": B, "img_per_s": median, "runs": [...]}.
 * A step = zero grads, forward (training), loss, backward, SGD update: what a trainer does. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnngen.h"

extern const cg_net CG_NET;

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

int main(int argc, char **argv)
{
    const cg_net *net = &CG_NET;
    int steps = argc > 1 ? atoi(argv[1]) : 50;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    int n = argc > 3 ? atoi(argv[3]) : net->batch;
    if (steps < 1 || reps < 1 || n < 1 || n > net->batch) {
        fprintf(stderr, "usage: %s [steps] [reps] [batch<=%d]\n", argv[0], net->batch);
        return 2;
    }
    float *params = calloc(net->n_params, sizeof(float));
    float *grads = calloc(net->n_params, sizeof(float));
    float *mom = calloc(net->n_params, sizeof(float));
    float *buffers = calloc(net->n_buffers + 1, sizeof(float));
    float *ws = calloc(net->workspace, sizeof(float));
    float *x = calloc((size_t)n * net->in_size, sizeof(float));
    int64_t *labels = calloc((size_t)n, sizeof(int64_t));
    float *targets = calloc((size_t)n * net->out_size, sizeof(float));
    if (!params || !grads || !mom || !buffers || !ws || !x || !labels || !targets) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    cg_init_params(net, params, buffers, 1);
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < (size_t)n * net->in_size; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = (float)(s >> 40) / (float)(1 << 24);
    }
    for (int i = 0; i < n; i++)
        labels[i] = i % (int)net->out_size;
    const void *target = net->loss == CG_LOSS_MSE ? (const void *)targets : (const void *)labels;
    double runs[64];
    if (reps > 64)
        reps = 64;
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        double t0 = now();
        for (int k = 0; k < steps; k++) {
            memset(grads, 0, net->n_params * sizeof(float));
            net->forward(params, buffers, x, ws, n, 1);
            cg_loss(net->loss, ws + net->out_offset, target, ws + net->dout_offset, n, net->out_size);
            net->backward(params, grads, x, NULL, ws, n);
            for (size_t i = 0; i < net->n_params; i++) {
                mom[i] = 0.9f * mom[i] + grads[i];
                params[i] -= 0.001f * mom[i];
            }
        }
        double dt = now() - t0;
        if (r >= 0)
            runs[r] = (double)steps * n / dt;
    }
    double sorted[64];
    memcpy(sorted, runs, sizeof(double) * (size_t)reps);
    qsort(sorted, (size_t)reps, sizeof(double), cmp_double);
    printf("{\"net\": \"%s\", \"batch\": %d, \"steps\": %d, \"img_per_s\": %.1f, \"runs\": [", net->name, n, steps,
           sorted[reps / 2]);
    for (int r = 0; r < reps; r++)
        printf("%s%.1f", r ? ", " : "", runs[r]);
    printf("]}\n");
    free(params), free(grads), free(mom), free(buffers), free(ws), free(x), free(labels), free(targets);
    return 0;
}
