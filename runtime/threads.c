/* cnngen runtime: the trainer's thread count chosen from its own step times (threads.h).
 *
 * Settled on `cur`, every `interval` seconds at the least it times CG_THR_K steps on cur
 * and the next CG_THR_K on the other count (1 when cur is max, else max), by seconds per
 * sample, and keeps the other when it was 5 % faster. A measurement's steps are real
 * training steps; the next measurement waits at least 20 times as long as this one's
 * steps took, so the steps on the slower count cost at most ~2.5 % of the run. */
#include "threads.h"

void cg_thr_init(cg_thr *c, int max, double now, double interval)
{
    *c = (cg_thr){.max = max > 1 ? max : 1, .cur = max > 1 ? max : 1, .next = now, .interval = interval};
}

static int other(const cg_thr *c)
{
    return c->cur == c->max ? 1 : c->max;
}

int cg_thr_next(const cg_thr *c)
{
    return c->phase == 2 ? other(c) : c->cur;
}

void cg_thr_step(cg_thr *c, double dt, size_t samples, double now)
{
    if (c->max == 1 || samples == 0)
        return;
    if (++c->steps <= CG_THR_WARM) /* page faults and caches of the first steps */
        return;
    if (c->phase == 0) {
        if (now < c->next)
            return;
        /* the measurement starts with the next step */
        c->phase = 1, c->n = 0;
        c->t[0] = c->t[1] = c->s[0] = c->s[1] = 0;
        return;
    }
    int k = c->phase - 1;
    c->t[k] += dt, c->s[k] += (double)samples;
    if (++c->n < CG_THR_K)
        return;
    if (c->phase == 1) {
        c->phase = 2, c->n = 0;
        return;
    }
    const double spent = c->t[0] + c->t[1]; /* the measurement's steps */
    if (c->t[1] / c->s[1] < 0.95 * (c->t[0] / c->s[0])) {
        c->cur = other(c);
        c->changes++;
    }
    c->phase = 0;
    c->next = now + (c->interval > 20 * spent ? c->interval : 20 * spent);
}
