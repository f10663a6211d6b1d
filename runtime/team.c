/* Teams of threads that each run a replica of a network on part of a batch (cnngen.h).
 *
 * The barrier is a counter and a generation number (C11 atomics): the last member to
 * arrive resets the counter and advances the generation; the others wait for the
 * generation to change, spinning first (a sync in a batch norm layer lasts a few hundred
 * nanoseconds when the members are balanced) and yielding the CPU after a while, so a
 * team larger than the machine's free cores still makes progress. */
#include "cnngen.h"

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
