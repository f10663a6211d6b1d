/* cnngen runtime: the trainer's thread count chosen from its own step times (threads.c) */
#ifndef CG_THREADS_H
#define CG_THREADS_H

#include <stddef.h>

/* A 2-vCPU virtual machine may run the two vCPUs on one core complex or on two (bench/
 * RESULTS.md, session 37), and the host moves them while a program runs: a small
 * network's step on 2 threads then takes 2.5x its time on 1 (bench/specs/conv5.yaml, a
 * 5x5 conv at b64: 39,000 against 100,000 img/s; its data crosses the dies at every
 * parallel loop). So the trainer times its own steps and
 * runs each stretch on whichever of 1 thread and all of them was faster lately. The
 * results are bitwise the same on any thread count (check-threads), so the choice never
 * changes what is trained. */
enum { CG_THR_WARM = 3, CG_THR_K = 5 }; /* steps skipped at the start; steps a measurement */

typedef struct cg_thr {
    int max;            /* the thread count the run started with; 1: nothing to choose */
    int cur;            /* the count the steps use now */
    int phase;          /* 0: settled, 1: timing cur, 2: timing the other count */
    int n;              /* steps timed in this phase */
    double t[2], s[2];  /* seconds and samples timed: [0] cur, [1] the other */
    double next;        /* when (seconds, the caller's clock) to measure again */
    double interval;    /* the least time between two measurements */
    long long steps;    /* steps seen */
    int changes;        /* times cur changed */
} cg_thr;

/* max: the threads available (OpenMP's default); now: the caller's clock; interval: the
 * least seconds between measurements (the trainer's: 10). */
void cg_thr_init(cg_thr *c, int max, double now, double interval);
/* the thread count for the next step */
int cg_thr_next(const cg_thr *c);
/* a step of `samples` samples ran on cg_thr_next()'s count in dt seconds, ending at now
 * (samples 0: a skipped step, not timed) */
void cg_thr_step(cg_thr *c, double dt, size_t samples, double now);

#endif
