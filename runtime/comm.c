/* cnngen runtime: the single-process communicator (comm.h). cg_comm_world is weak, so
 * that runtime/mpi.c (linked by MPI=1 builds) replaces it. */
#include "comm.h"

static void self_sum_f32(const cg_comm *c, float *x, size_t n) { (void)c, (void)x, (void)n; }
static void self_sum_f64(const cg_comm *c, double *x, size_t n) { (void)c, (void)x, (void)n; }
static void self_bcast(const cg_comm *c, void *p, size_t bytes) { (void)c, (void)p, (void)bytes; }

static void self_abort(const cg_comm *c, int code) { (void)c, (void)code; }

static const cg_comm self = {.rank = 0, .size = 1, .name = "single process",
                             .sum_f32 = self_sum_f32, .sum_f64 = self_sum_f64,
                             .bcast = self_bcast, .abort = self_abort};

#if defined(__GNUC__) || defined(__clang__)
__attribute__((weak))
#endif
const cg_comm *cg_comm_world(void)
{
    return &self;
}

void cg_comm_shard(size_t n, int rank, int size, size_t *lo, size_t *hi)
{
    size_t q = n / (size_t)size, rem = n % (size_t)size, r = (size_t)rank;
    *lo = r * q + (r < rem ? r : rem);
    *hi = *lo + q + (r < rem);
}
