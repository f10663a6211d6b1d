/* cnngen runtime: the communicator the training loop sees (data-parallel training).
 *
 * train.c asks cg_comm_world() once per run. A trainer linked without MPI gets the
 * single-process communicator of comm.c (size 1: the loop takes none of its distributed
 * paths); one built with `make trainer ... MPI=1` links runtime/mpi.c, whose strong
 * cg_comm_world() initializes MPI on first use and answers MPI_COMM_WORLD.
 *
 * Every collective is deterministic by construction: sums are taken in rank order
 * (rank 0 + rank 1 + ...), whatever the MPI implementation or its algorithm choice, and
 * every rank receives the same bits. A failing collective aborts the job (MPI's default
 * error handler), so the functions return nothing. */
#ifndef CG_COMM_H
#define CG_COMM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cg_comm {
    int rank, size;
    const char *name;   /* "single process", "MPI" */
    /* x[0..n) <- the sum over ranks of x[0..n), in rank order, on every rank. The float
     * one moves one flat buffer (the step's gradients): 2(size-1)/size x 4n bytes a rank,
     * like a ring allreduce. */
    void (*sum_f32)(const struct cg_comm *c, float *x, size_t n);
    void (*sum_f64)(const struct cg_comm *c, double *x, size_t n);
    /* p[0..bytes) <- rank 0's */
    void (*bcast)(const struct cg_comm *c, void *p, size_t bytes);
    /* ends every rank of the job (MPI_Abort: mpirun reports it); a no-op for one process */
    void (*abort)(const struct cg_comm *c, int code);
    void *impl;
} cg_comm;

/* The process's communicator (never NULL). */
const cg_comm *cg_comm_world(void);

/* The shard [*lo, *hi) of n items that rank takes of size ranks: contiguous, in rank
 * order, sizes n/size or n/size + 1 (the first n % size ranks take one more). */
void cg_comm_shard(size_t n, int rank, int size, size_t *lo, size_t *hi);

#ifdef __cplusplus
}
#endif

#endif
