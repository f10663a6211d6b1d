/* tests/infer/latency.c: single-sample latency of an exported NAME_infer against the
 * trainer's NAME_forward in evaluation mode, same parameters, same input (not part of
 * make test; tests/infer/latency.sh builds and runs it).
 * Build with -DNET=name -DNETUP=NAME (the export, NAME_init form) and -DTNET=tname
 * -DTNETUP=TNAME (the trainer's .c compiled with -DCNNGEN_NO_MAIN), plus libcnngen. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include INFER_H
#include TRAINER_H

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    size_t np = CAT(TNETUP, _N_PARAMS), nbuf = CAT(TNETUP, _N_BUFFERS);
    float *p = malloc((np + 1) * sizeof *p), *b = calloc(nbuf + 1, sizeof *b);
    float *ws = calloc(CAT(TNETUP, _WORKSPACE), sizeof *ws);
    float x[CAT(NETUP, _INFER_IN_SIZE)], y[CAT(NETUP, _INFER_OUT_SIZE)];
    srand(1);
    for (size_t i = 0; i < np; i++)
        p[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.2f;
    for (int i = 0; i < CAT(NETUP, _INFER_IN_SIZE); i++)
        x[i] = rand() / (float)RAND_MAX;
    if (CAT(NET, _init)(p, b) != 0)
        return 1;
    enum { REPS = 9, ITERS = 20000 };
    double ti[REPS], tt[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = now();
        for (int k = 0; k < ITERS; k++)
            CAT(NET, _infer)(x, 1, y);
        double t1 = now();
        for (int k = 0; k < ITERS; k++)
            CAT(TNET, _forward)(p, b, x, ws, 1, 0);
        double t2 = now();
        ti[r] = (t1 - t0) / ITERS;
        tt[r] = (t2 - t1) / ITERS;
    }
    qsort(ti, REPS, sizeof *ti, cmp);
    qsort(tt, REPS, sizeof *tt, cmp);
    float d = 0.0f;
    for (int i = 0; i < CAT(NETUP, _INFER_OUT_SIZE); i++)
        d = fmaxf(d, fabsf(y[i] - ws[CAT(TNETUP, _OUT_OFFSET) + i]));
    printf("export NAME_infer   %8.2f us/sample (median of %d x %d)\n", 1e6 * ti[REPS / 2], REPS, ITERS);
    printf("trainer forward     %8.2f us/sample (eval mode, nb = 1)\n", 1e6 * tt[REPS / 2]);
    printf("max |export - trainer| = %.3g\n", d);
    free(p);
    free(b);
    free(ws);
    return d < 1e-4f ? 0 : 1;
}
