/* bench/fma_peak.c: the machine's fp32 FMA throughput, the denominator of `make bench`'s
 * "fraction of peak". Each thread runs ACC independent vector FMA chains (more than
 * latency x pipes = 4 x 2 on Zen 3/4/5) over registers only; flops = 2 per lane per FMA.
 * "Registers only" is what decides the count: with AVX2's 16 ymm registers, 16 chains plus
 * the two constants spill three chains to the stack, whose store-to-load round trip then
 * sets the pace (Zen 3, 2026-12-01: 58 instead of 102 GFLOP/s a core), so AVX2 runs 12.
 * AVX-512 when compiled with it (-march=native on an AVX-512 machine), else AVX2+FMA.
 * Threads: OpenMP, 1 and 2 (or argv[1] for the largest count). Medians of 5 repetitions.
 * Prints one JSON line: {"isa": ..., "gflops": {"1": ..., "2": ...}, "runs": {...}}. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define ISA "avx512"
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define ACC 16
static float hsum(vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 vec;
#define LANES 8
#define ISA "avx2"
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define ACC 12
static float hsum(vec v)
{
    float t[8];
    _mm256_storeu_ps(t, v);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#else
#error "fma_peak needs AVX-512F or AVX2+FMA (build with -march=native)"
#endif

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* iters x ACC FMAs on LANES lanes; returns a value that depends on every chain */
static float kernel(long iters, float seed)
{
    vec a[ACC];
    for (int j = 0; j < ACC; j++)
        a[j] = SET1(seed + 0.01f * (float)j);
    const vec m = SET1(0.999999f), c = SET1(1e-7f);
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 16
        for (int j = 0; j < ACC; j++)
            a[j] = FMA(a[j], m, c);
    }
    vec s = a[0];
    for (int j = 1; j < ACC; j++)
        s = ADD(s, a[j]);
    return hsum(s);
}

static volatile float sink;

/* GFLOP/s of `threads` threads each running iters iterations */
static double measure(int threads, long iters)
{
    double t0 = now();
#pragma omp parallel num_threads(threads)
    {
        float r = kernel(iters, 1.0f + (float)omp_get_thread_num());
#pragma omp atomic
        sink += r;
    }
    double dt = now() - t0;
    return 2.0 * LANES * ACC * (double)iters * threads / dt * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int maxt = argc > 1 ? atoi(argv[1]) : 2;
    if (maxt < 1)
        maxt = 1;
    /* calibrate: about 0.25 s per repetition on one thread; warm up clocks and threads */
    long iters = 1 << 20;
    for (;;) {
        double t0 = now();
        sink += kernel(iters, 1.0f);
        double dt = now() - t0;
        if (dt > 0.05) {
            iters = (long)((double)iters * 0.25 / dt);
            break;
        }
        iters *= 2;
    }
    measure(maxt, iters / 4);
    printf("{\"isa\": \"%s\", \"lanes\": %d, \"accumulators\": %d, \"gflops\": {", ISA, LANES, ACC);
    char runs[4096];
    int off = 0;
    for (int t = 1; t <= maxt; t++) {
        double r[5], s[5];
        for (int k = 0; k < 5; k++)
            s[k] = r[k] = measure(t, iters);
        qsort(s, 5, sizeof(double), cmp);
        printf("%s\"%d\": %.1f", t > 1 ? ", " : "", t, s[2]);
        off += snprintf(runs + off, sizeof runs - (size_t)off, "%s\"%d\": [%.1f, %.1f, %.1f, %.1f, %.1f]",
                        t > 1 ? ", " : "", t, r[0], r[1], r[2], r[3], r[4]);
    }
    printf("}, \"runs\": {%s}}\n", runs);
    return 0;
}
