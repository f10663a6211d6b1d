/* bench/mpi_step.c: data-parallel training steps of one generated network (issue 13).
 * Built by bench/mpi_bench.py with mpicc, -DCG_NET=<name>_net, libcnngen_mpi.a and
 * libcnngen.a; run as one process (no mpirun: one rank, no communication) or under
 * `mpirun -np N`. Prints one JSON line from rank 0.
 *
 * usage: mpi_step [steps] [warmup] [comm]   (defaults 20, 3)
 *   comm: no training steps, only the `steps` sums of the gradient buffer after a barrier
 *
 * A step is what cg_train does with ranks: zero the gradients, this rank's shard of the
 * global batch (the spec's batch) forward, loss scaled by the shard's share, backward,
 * then the comm's sum of the flat gradient buffer (+1 float: the loss), then the SGD
 * update. Each phase is timed separately (medians over the steps): compute (forward +
 * loss + backward), allreduce (inside the step: includes waiting for the slower rank),
 * update. Afterwards `steps` sums of the same buffer alone, each after an MPI_Barrier:
 * the allreduce's own time ("allreduce_alone_ms"). Last, what overlap could get from the
 * library: `steps` times, MPI_Iallreduce of a copy of the buffer started, one step's
 * compute run (no MPI call inside, as in the generated backward), then MPI_Wait:
 * "iallreduce_wait_ms" close to "allreduce_alone_ms" means the non-blocking allreduce made
 * no progress while the rank computed (no asynchronous progress), so overlapping buckets
 * with the backward would hide nothing without MPI_Test calls inside the generated code. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cnngen.h"
#include "comm.h"
#include "sgd.h"
#include "util.h"

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

static double median_ms(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return 1e3 * (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

int main(int argc, char **argv)
{
    const cg_net *net = &CG_NET;
    int steps = argc > 1 ? atoi(argv[1]) : 20, warm = argc > 2 ? atoi(argv[2]) : 3;
    const int comm_only = argc > 3 && !strcmp(argv[3], "comm");
    if (steps < 1 || steps > 10000 || warm < 0) {
        fprintf(stderr, "usage: mpi_step [steps 1..10000] [warmup]\n");
        return 2;
    }
    cg_flush_subnormals(1);
    const cg_comm *c = cg_comm_world();
    const int B = net->batch;
    size_t lo, hi;
    cg_comm_shard((size_t)B, c->rank, c->size, &lo, &hi);
    const int n = (int)(hi - lo);
    const size_t np = net->n_params;
    float *params = cg_xmalloc(np, sizeof(float), "params");
    float *grads = cg_xmalloc(np + 1, sizeof(float), "grads");
    float *vel = cg_xcalloc(np, sizeof(float), "momentum");
    float *buffers = cg_xmalloc(net->n_buffers ? net->n_buffers : 1, sizeof(float), "buffers");
    float *ws = cg_xcalloc(net->workspace, sizeof(float), "workspace");
    float *x = cg_xmalloc((size_t)(n ? n : 1) * net->in_size, sizeof(float), "inputs");
    int64_t *y = cg_xcalloc((size_t)(n ? n : 1), sizeof(int64_t), "labels");
    float *t = cg_xcalloc((size_t)(n ? n : 1) * net->out_size, sizeof(float), "targets");
    double *tc = cg_xmalloc((size_t)steps, sizeof(double), "times");
    double *ta = cg_xmalloc((size_t)steps, sizeof(double), "times");
    double *tu = cg_xmalloc((size_t)steps, sizeof(double), "times");
    double *tx = cg_xmalloc((size_t)steps, sizeof(double), "times");
    double *tw = cg_xmalloc((size_t)steps, sizeof(double), "times");
    double *tk = cg_xmalloc((size_t)steps, sizeof(double), "times");
    float *gcopy = cg_xmalloc(np + 1, sizeof(float), "gradient copy");
    cg_init_params(net, params, buffers, 1);
    cg_rng rng;
    cg_rng_seed(&rng, 7 + (uint64_t)c->rank);
    for (size_t i = 0; i < (size_t)n * net->in_size; i++)
        x[i] = cg_rng_uniform(&rng);
    for (int i = 0; i < n; i++)
        y[i] = (int64_t)((lo + (size_t)i) % net->out_size);
    const void *target = net->loss == CG_LOSS_SOFTMAX_CE ? (const void *)y : t;
    MPI_Barrier(MPI_COMM_WORLD);
    double t_all = 0;
    memset(grads, 0, (np + 1) * sizeof(float));
    for (int s = 0; s < steps && comm_only; s++)
        tc[s] = ta[s] = tu[s] = 0, t_all = 1;
    for (int s = -warm; s < steps && !comm_only; s++) {
        double t0 = now();
        memset(grads, 0, (np + 1) * sizeof(float));
        if (n) {
            net->forward(params, buffers, x, ws, n, 1);
            float l = cg_net_loss(net, ws + net->out_offset, target, ws + net->dout_offset, n);
            cg_scale(ws + net->dout_offset, (size_t)n * net->out_size, (float)n / (float)B);
            net->backward(params, grads, x, NULL, ws, n);
            grads[np] = l * (float)n;
        }
        double t1 = now();
        if (c->size > 1)
            c->sum_f32(c, grads, np + 1);
        double t2 = now();
        cg_net_sgd_update(net, params, grads, vel, np, 0.001f, 0.9f, 0.0f);
        double t3 = now();
        if (s >= 0) {
            tc[s] = t1 - t0, ta[s] = t2 - t1, tu[s] = t3 - t2;
            t_all += t3 - t0;
        }
    }
    for (int s = 0; s < steps; s++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now();
        c->sum_f32(c, grads, np + 1);
        tx[s] = now() - t0;
    }
    for (int s = 0; s < steps && c->size > 1 && !comm_only; s++) {
        memcpy(gcopy, grads, (np + 1) * sizeof(float));
        MPI_Request req;
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now();
        MPI_Iallreduce(MPI_IN_PLACE, gcopy, (int)(np + 1), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
        if (n) {
            net->forward(params, buffers, x, ws, n, 1);
            cg_net_loss(net, ws + net->out_offset, target, ws + net->dout_offset, n);
            net->backward(params, grads, x, NULL, ws, n);
        }
        double t1 = now();
        MPI_Wait(&req, MPI_STATUS_IGNORE);
        tk[s] = t1 - t0, tw[s] = now() - t1;
    }
    if (c->size == 1 || comm_only)
        for (int s = 0; s < steps; s++)
            tk[s] = tw[s] = 0;
    if (c->rank == 0) {
        int threads = 1;
#ifdef _OPENMP
        threads = omp_get_max_threads();
#endif
        const char *alg = getenv("CNNGEN_ALLREDUCE");
        printf("{\"net\": \"%s\", \"ranks\": %d, \"threads\": %d, \"batch\": %d, "
               "\"params\": %zu, \"allreduce_bytes\": %zu, \"allreduce\": \"%s\", "
               "\"img_per_s\": %.2f, \"step_ms\": %.3f, \"compute_ms\": %.3f, "
               "\"allreduce_ms\": %.3f, \"update_ms\": %.3f, \"allreduce_alone_ms\": %.3f, "
               "\"iallreduce_compute_ms\": %.3f, \"iallreduce_wait_ms\": %.3f, \"comm_only\": %d}\n",
               net->name, c->size, threads, B, np, (np + 1) * sizeof(float),
               c->size == 1 ? "none" : alg && !strcmp(alg, "mpi") ? "MPI_Allreduce" : "rank-order",
               (double)B * steps / t_all, 1e3 * t_all / steps, median_ms(tc, steps),
               median_ms(ta, steps), median_ms(tu, steps), median_ms(tx, steps),
               median_ms(tk, steps), median_ms(tw, steps), comm_only);
    }
    free(params), free(grads), free(vel), free(buffers), free(ws), free(x), free(y), free(t);
    free(tc), free(ta), free(tu), free(tx), free(tw), free(tk), free(gcopy);
    return 0;
}
