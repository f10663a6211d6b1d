/* bench/xcore.c: how far apart the first two CPUs this process may run on are, as the
 * round trip of one cache line between two threads pinned to them (ns, best of 5 runs
 * of 20,000). On a 2-vCPU VM the host places the vCPUs on cores of one CCX or of two
 * CCDs and moves them while a process runs: 2-core Zen 4, 55 ns against 325-357 ns, and
 * a 2-thread ResNet-20 b64 step 1,540 against 950 img/s (bench/RESULTS.md, session 37).
 * Prints {"round_trip_ns": X}, or null with fewer than two CPUs. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

enum { N = 20000, RUNS = 5 };

static _Alignas(64) atomic_int flag;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int pin(int cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    return pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

static void *pong(void *arg)
{
    const int *cpu = arg;
    pin(*cpu);
    for (int r = 0; r < RUNS; r++)
        for (int i = 0; i < N; i++) {
            const int want = 2 * (r * N + i) + 1;
            while (atomic_load_explicit(&flag, memory_order_acquire) != want)
                ;
            atomic_store_explicit(&flag, want + 1, memory_order_release);
        }
    return NULL;
}

int main(void)
{
    cpu_set_t s;
    int cpus[2], n = 0;
    if (sched_getaffinity(0, sizeof s, &s) == 0)
        for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
            if (CPU_ISSET(c, &s))
                cpus[n++] = c;
    if (n < 2) {
        printf("{\"round_trip_ns\": null}\n");
        return 0;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, pong, &cpus[1]) != 0) {
        printf("{\"round_trip_ns\": null}\n");
        return 0;
    }
    pin(cpus[0]);
    double best = 1e30;
    for (int r = 0; r < RUNS; r++) {
        const double t0 = now();
        for (int i = 0; i < N; i++) {
            const int send = 2 * (r * N + i) + 1;
            atomic_store_explicit(&flag, send, memory_order_release);
            while (atomic_load_explicit(&flag, memory_order_acquire) != send + 1)
                ;
        }
        const double dt = (now() - t0) / N;
        if (dt < best)
            best = dt;
    }
    pthread_join(t, NULL);
    printf("{\"round_trip_ns\": %.0f, \"cpus\": [%d, %d]}\n", best * 1e9, cpus[0], cpus[1]);
    return 0;
}
