/* cnngen runtime: the MPI communicator (comm.h), compiled only by MPI=1 builds (mpicc,
 * -DCNNGEN_MPI) into build/libcnngen_mpi.a; libcnngen.a holds this file as an empty unit.
 *
 * The sums are deterministic by construction, not by the MPI library's algorithm choice:
 * a reduce-scatter in rank order then an allgather, i.e.
 *   MPI_Alltoallv: rank k receives block k of every rank's buffer (blocks: comm_shard);
 *   rank k adds its blocks in rank order (b_0 + b_1 + ... + b_{size-1});
 *   MPI_Allgatherv: every rank receives every summed block.
 * Each rank sends and receives 2(size-1)/size x the buffer, what a ring allreduce moves,
 * and every rank holds the same bits. CNNGEN_ALLREDUCE=mpi uses one MPI_Allreduce
 * instead (the library's algorithm: for comparison; its summation order is the
 * implementation's, and a run is then deterministic only as far as the library is).
 *
 * MPI is initialized on the first cg_comm_world() (cg_train's start) and finalized at
 * exit; a trainer built with MPI also runs as a single process without mpirun (MPI's
 * singleton start). */
#ifdef CNNGEN_MPI
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"

typedef struct mpi_impl {
    int native;           /* CNNGEN_ALLREDUCE=mpi */
    int *cnt, *dsp;       /* [size] blocks of the buffer being summed */
    int *rcnt, *rdsp;     /* [size] what this rank receives */
    void *tmp;            /* size x this rank's block */
    size_t tmp_bytes;
} mpi_impl;

static mpi_impl impl;
static cg_comm world;

static void finalize(void)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin)
        MPI_Finalize();
}

static void *grow(size_t bytes)
{
    if (bytes > impl.tmp_bytes) {
        free(impl.tmp);
        impl.tmp = malloc(bytes);
        if (!impl.tmp) {
            fprintf(stderr, "cnngen: rank %d: out of memory (%zu bytes of allreduce scratch)\n",
                    world.rank, bytes);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        impl.tmp_bytes = bytes;
    }
    return impl.tmp;
}

/* the rank-order reduce-scatter + allgather over n elements of `type` (elem bytes);
 * add(acc, b, m): acc[0..m) += b[0..m) */
static void sum_det(const cg_comm *c, void *x, size_t n, MPI_Datatype type, size_t elem,
                    void (*add)(void *acc, const void *b, size_t m))
{
    const int S = c->size;
    if (S == 1) /* one process under MPI: nothing to add */
        return;
    if (n > (size_t)0x7fffffff) {
        fprintf(stderr, "cnngen: rank %d: %zu elements are too many for one MPI call\n",
                c->rank, n);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    size_t mylo = 0, myhi = 0;
    for (int k = 0; k < S; k++) {
        size_t lo, hi;
        cg_comm_shard(n, k, S, &lo, &hi);
        impl.cnt[k] = (int)(hi - lo);
        impl.dsp[k] = (int)lo;
        if (k == c->rank)
            mylo = lo, myhi = hi;
    }
    const size_t m = myhi - mylo;
    char *tmp = grow((size_t)S * (m ? m : 1) * elem);
    for (int k = 0; k < S; k++) {
        impl.rcnt[k] = (int)m;
        impl.rdsp[k] = (int)((size_t)k * m);
    }
    MPI_Alltoallv(x, impl.cnt, impl.dsp, type, tmp, impl.rcnt, impl.rdsp, type, MPI_COMM_WORLD);
    char *mine = (char *)x + mylo * elem;
    memcpy(mine, tmp, m * elem);
    for (int k = 1; k < S; k++)
        add(mine, tmp + (size_t)k * m * elem, m);
    MPI_Allgatherv(MPI_IN_PLACE, 0, type, x, impl.cnt, impl.dsp, type, MPI_COMM_WORLD);
}

static void add_f32(void *acc, const void *b, size_t m)
{
    float *restrict a = acc;
    const float *restrict y = b;
    for (size_t i = 0; i < m; i++)
        a[i] += y[i];
}

static void add_f64(void *acc, const void *b, size_t m)
{
    double *restrict a = acc;
    const double *restrict y = b;
    for (size_t i = 0; i < m; i++)
        a[i] += y[i];
}

static void mpi_sum_f32(const cg_comm *c, float *x, size_t n)
{
    if (impl.native && c->size > 1 && n <= (size_t)0x7fffffff) {
        MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        return;
    }
    sum_det(c, x, n, MPI_FLOAT, sizeof(float), add_f32);
}

static void mpi_sum_f64(const cg_comm *c, double *x, size_t n)
{
    sum_det(c, x, n, MPI_DOUBLE, sizeof(double), add_f64);
}

static void mpi_bcast(const cg_comm *c, void *p, size_t bytes)
{
    (void)c;
    MPI_Bcast(p, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
}

static void mpi_abort(const cg_comm *c, int code)
{
    (void)c;
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
}

const cg_comm *cg_comm_world(void)
{
    if (world.size > 0)
        return &world;
    int init = 0, provided = 0;
    MPI_Initialized(&init);
    if (!init) {
        MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        atexit(finalize);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &world.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world.size);
    world.name = "MPI";
    world.sum_f32 = mpi_sum_f32;
    world.sum_f64 = mpi_sum_f64;
    world.bcast = mpi_bcast;
    world.abort = mpi_abort;
    world.impl = &impl;
    const char *e = getenv("CNNGEN_ALLREDUCE");
    impl.native = e && strcmp(e, "mpi") == 0;
    impl.cnt = calloc((size_t)world.size * 4, sizeof(int));
    if (!impl.cnt) {
        fprintf(stderr, "cnngen: out of memory (MPI communicator)\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    impl.dsp = impl.cnt + world.size;
    impl.rcnt = impl.dsp + world.size;
    impl.rdsp = impl.rcnt + world.size;
    return &world;
}
#else
typedef int cg_mpi_not_built; /* an MPI=1 build compiles this file with -DCNNGEN_MPI */
#endif
