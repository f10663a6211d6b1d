/* Teams of threads that each run a replica of a network on part of a batch (cnngen.h).
 *
 * The barrier is a counter and a generation number (C11 atomics): the last member to
 * arrive resets the counter and advances the generation; the others wait for the
 * generation to change, spinning first (a sync in a batch norm layer lasts a few hundred
 * nanoseconds when the members are balanced) and yielding the CPU after a while, so a
 * team larger than the machine's free cores still makes progress. */
#include "cnngen.h"
#include "comm.h"
#include "sgd.h"
#include "util.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CG_PAUSE() _mm_pause()
#else
#define CG_PAUSE() ((void)0)
#endif

struct cg_team_shared {
    _Alignas(64) atomic_uint arrived;
    _Alignas(64) atomic_uint generation;
    _Alignas(64) int size;
    size_t slot;
    double *buf[2];
};

cg_team_shared *cg_team_new(int size, size_t slot, cg_team *members)
{
    if (size < 1)
        return NULL;
    cg_team_shared *sh = aligned_alloc(64, sizeof *sh);
    if (!sh)
        return NULL;
    memset(sh, 0, sizeof *sh);
    atomic_init(&sh->arrived, 0);
    atomic_init(&sh->generation, 0);
    sh->size = size;
    sh->slot = slot ? slot : 1;
    for (int k = 0; k < 2; k++) {
        sh->buf[k] = calloc((size_t)size * sh->slot, sizeof(double));
        if (!sh->buf[k]) {
            free(sh->buf[0]);
            free(sh);
            return NULL;
        }
    }
    for (int r = 0; r < size; r++)
        members[r] = (cg_team){.rank = r, .size = size, .slot = sh->slot, .phase = 0, .sh = sh};
    return sh;
}

void cg_team_free(cg_team_shared *sh)
{
    if (!sh)
        return;
    free(sh->buf[0]);
    free(sh->buf[1]);
    free(sh);
}

double *cg_team_xch(const cg_team *t)
{
    return t->sh->buf[t->phase & 1u];
}

void cg_team_sync(cg_team *t)
{
    cg_team_shared *sh = t->sh;
    t->phase++;
    if (sh->size == 1)
        return;
    unsigned gen = atomic_load_explicit(&sh->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&sh->arrived, 1u, memory_order_acq_rel) == (unsigned)sh->size - 1u) {
        atomic_store_explicit(&sh->arrived, 0u, memory_order_relaxed);
        atomic_fetch_add_explicit(&sh->generation, 1u, memory_order_release);
        return;
    }
    for (unsigned long spins = 0; atomic_load_explicit(&sh->generation, memory_order_acquire) == gen; spins++) {
        if (spins < (1ul << 16))
            CG_PAUSE();
        else
            sched_yield();
    }
}

/* ---- a network's team (cnngen.h: cg_net_team) ---- */

typedef struct {
    cg_net_team *t;
    const float *params, *x;
    float *grads, *buffers;
    const void *target;
    int n, training;
    float dscale;
    float *out, *dx; /* the trainer's check: the outputs [n][out_size] and dLoss/dx, or NULL */
    double loss[CG_TEAM_MAX];
} team_job;

static void team_body(void *ctx, int r)
{
    team_job *j = ctx;
    cg_net_team *t = j->t;
    const cg_net *net = t->net;
    const int T = t->size;
    size_t lo, hi;
    cg_comm_shard((size_t)j->n, r, T, &lo, &hi);
    int nr = (int)(hi - lo);
    float *ws = t->ws[r], *dout = ws + net->dout_offset;
    float *g = r ? t->grads[r] : j->grads;
    const float *x = j->x + lo * net->in_size;
    const void *tg = net->loss == CG_LOSS_MSE ? (const void *)((const float *)j->target + lo * net->out_size)
                                              : (const void *)((const int64_t *)j->target + lo);
    if (r)
        memset(g, 0, net->n_params * sizeof(float));
    /* dropout draws a sample's mask from the step's seed (training) and the sample's place
     * in the team's batch (n0): the masks of one call on the whole batch */
    t->members[r].n0 = (int)lo;
    net->forward_team(j->params, r ? t->buffers[r] : j->buffers, x, ws, nr, j->training, &t->members[r]);
    j->loss[r] = (double)cg_loss(net->loss, ws + net->out_offset, tg, dout, nr, net->out_size) * nr;
    if (j->out)
        memcpy(j->out + lo * net->out_size, ws + net->out_offset, (size_t)nr * net->out_size * sizeof(float));
    if (!j->training) /* inference mode (the check's --eval): no backward */
        return;
    cg_scale(dout, (size_t)nr * net->out_size, (float)((double)nr / (double)j->n * (double)j->dscale));
    net->backward_team(j->params, g, x, j->dx ? j->dx + lo * net->in_size : NULL, ws, nr, &t->members[r]);
    cg_team_sync(&t->members[r]);
    /* this replica's slice of the parameters: the other replicas' parts added, in rank order */
    size_t plo, phi;
    cg_comm_shard(net->n_params, r, T, &plo, &phi);
    for (int k = 1; k < T; k++) {
        const float *gk = t->grads[k];
        for (size_t i = plo; i < phi; i++)
            j->grads[i] += gk[i];
    }
}

const char *cg_net_team_init(cg_net_team *t, const cg_net *net)
{
    memset(t, 0, sizeof *t);
    t->net = net;
    if (!net->forward_team || !net->backward_team || !net->team_run || net->team < 2)
        return "the network was not generated for a team (cnngen --team T, T >= 2)";
    if (net->team > CG_TEAM_MAX)
        return "the network's team is larger than the runtime's CG_TEAM_MAX";
    t->sh = cg_team_new(net->team, net->team_slot, t->members);
    if (!t->sh)
        return "out of memory for the team";
    t->size = net->team;
    for (int r = 0; r < t->size; r++) {
        t->ws[r] = cg_xcalloc(net->workspace, sizeof(float), "a replica's workspace");
        if (r) {
            t->grads[r] = cg_xcalloc(net->n_params + 1, sizeof(float), "a replica's gradients");
            t->buffers[r] = cg_xcalloc(net->n_buffers + 1, sizeof(float), "a replica's buffers");
        }
    }
    return NULL;
}

void cg_net_team_free(cg_net_team *t)
{
    for (int r = 0; r < t->size; r++) {
        free(t->ws[r]);
        free(t->grads[r]);
        free(t->buffers[r]);
    }
    cg_team_free(t->sh);
    memset(t, 0, sizeof *t);
}

/* the replicas on job j (n >= the team's size); *loss_sum = the loss summed over the samples */
static int team_run(cg_net_team *t, team_job *j, double *loss_sum)
{
    const cg_net *net = t->net;
    /* In training the replicas' buffers are written, never read: batch norm normalises
     * with the team's batch statistics, and only replica 0's running statistics (the
     * caller's buffers) are kept. Evaluation (training 0) reads them: the caller's then. */
    if (!j->training)
        for (int r = 1; r < t->size; r++)
            memcpy(t->buffers[r], j->buffers, net->n_buffers * sizeof(float));
    if (!net->team_run(t->size, team_body, j))
        return -1;
    double s = 0;
    for (int r = 0; r < t->size; r++)
        s += j->loss[r];
    *loss_sum = s;
    return 0;
}

int cg_net_team_step(cg_net_team *t, const float *params, float *grads, float *buffers, const float *x,
                     const void *target, int n, int training, float dscale, double *loss_sum)
{
    const cg_net *net = t->net;
    if (t->size < 2 || n < 1 || n > t->size * net->batch)
        return -1;
    if (n < t->size) {
        /* fewer samples than replicas: the plain entry points on replica 0's workspace */
        net->forward(params, buffers, x, t->ws[0], n, training);
        float *dout = t->ws[0] + net->dout_offset;
        *loss_sum = (double)cg_loss(net->loss, t->ws[0] + net->out_offset, target, dout, n, net->out_size) * n;
        if (dscale != 1.0f)
            cg_scale(dout, (size_t)n * net->out_size, dscale);
        net->backward(params, grads, x, NULL, t->ws[0], n);
        return 0;
    }
    team_job j = {.t = t, .params = params, .x = x, .grads = grads, .buffers = buffers, .target = target,
                  .n = n, .training = training, .dscale = dscale};
    return team_run(t, &j, loss_sum);
}

int cg_net_team_check(cg_net_team *t, const float *params, float *grads, float *buffers, const float *x,
                      const void *target, int n, int training, float *out, float *dx, double *loss_sum)
{
    if (t->size < 2 || n < t->size || n > t->size * t->net->batch)
        return -1;
    team_job j = {.t = t, .params = params, .x = x, .grads = grads, .buffers = buffers, .target = target,
                  .n = n, .training = training, .dscale = 1.0f, .out = out, .dx = dx};
    return team_run(t, &j, loss_sum);
}
