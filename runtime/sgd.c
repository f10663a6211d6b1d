#include "sgd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnngen.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* No multiply-add contraction: the scalar reference must round exactly like the vector
 * kernels (gcc in ISO C mode does not contract; clang needs telling). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

int cg_sgd_init(cg_sgd *opt, size_t n, float lr, float momentum, float weight_decay, cg_err *err)
{
    memset(opt, 0, sizeof *opt);
    opt->lr = lr;
    opt->momentum = momentum;
    opt->weight_decay = weight_decay;
    opt->n = n;
    if (momentum != 0.0f) {
        opt->velocity = cg_try_alloc(n, sizeof(float), "SGD momentum buffer", err);
        if (!opt->velocity)
            return -1;
        memset(opt->velocity, 0, n * sizeof(float));
    }
    return 0;
}

void cg_sgd_step(cg_sgd *opt, float *params, const float *grads)
{
    cg_sgd_update(params, grads, opt->velocity, opt->n, opt->lr, opt->momentum,
                  opt->weight_decay);
}

void cg_sgd_free(cg_sgd *opt)
{
    free(opt->velocity);
    memset(opt, 0, sizeof *opt);
}

/* One element, the reference order of operations: t = wd*p; g' = g + t; v = mu*v; v = v + g';
 * u = lr*v; p = p - u. (Separate roundings, as the vector kernels do.) */
static inline void update1(float *p, const float *g, float *v, float lr, float mu, float wd)
{
    float gg = *g + wd * *p;
    if (v) {
        *v = mu * *v + gg;
        gg = *v;
    }
    *p = *p - lr * gg;
}

void cg_sgd_update_ref(float *p, const float *g, float *v, size_t n, float lr, float mu, float wd)
{
    for (size_t i = 0; i < n; i++)
        update1(p + i, g + i, v ? v + i : NULL, lr, mu, wd);
}

/* Adam's per-step scalars, in double as PyTorch computes them, rounded once */
typedef struct adam_k {
    float b1, c1, b2, c2, step_size, bc2_sqrt, eps, wd, shrink;
} adam_k;

static adam_k adam_consts(float lr, float beta1, float beta2, float eps, float wd, int decoupled,
                          long long step)
{
    adam_k k;
    const double s = (double)(step > 0 ? step : 1);
    k.b1 = beta1;
    k.c1 = (float)(1.0 - (double)beta1);
    k.b2 = beta2;
    k.c2 = (float)(1.0 - (double)beta2);
    k.step_size = (float)((double)lr / (1.0 - pow((double)beta1, s)));
    k.bc2_sqrt = (float)sqrt(1.0 - pow((double)beta2, s));
    k.eps = eps;
    k.wd = decoupled ? 0.0f : wd;                              /* Adam: L2 in the gradient */
    k.shrink = decoupled ? (float)(1.0 - (double)lr * (double)wd) : 1.0f; /* AdamW */
    return k;
}

/* one element: the reference order of operations (the vector kernels follow it) */
static inline void adam1(float *p, const float *g, float *m, float *v, const adam_k *k)
{
    float pp = *p * k->shrink;
    float gg = *g + k->wd * pp;
    float mm = k->b1 * *m + k->c1 * gg;
    float vv = k->b2 * *v + k->c2 * (gg * gg);
    float den = sqrtf(vv) / k->bc2_sqrt + k->eps;
    *m = mm;
    *v = vv;
    *p = pp - k->step_size * (mm / den);
}

static void adam_tail(float *p, const float *g, float *m, float *v, size_t n, const adam_k *k)
{
    for (size_t i = 0; i < n; i++)
        adam1(p + i, g + i, m + i, v + i, k);
}

void cg_adam_update_ref(float *p, const float *g, float *m, float *v, size_t n, float lr,
                        float beta1, float beta2, float eps, float wd, int decoupled,
                        long long step)
{
    const adam_k k = adam_consts(lr, beta1, beta2, eps, wd, decoupled, step);
    adam_tail(p, g, m, v, n, &k);
}

/* the vector kernel, written once for both widths from the intrinsics of one ISA */
#define ADAM_KERNEL(W, T, SET1, LOAD, STORE, ADD, SUB, MUL, DIV, SQRT)                     \
    void cg_adam_update(float *p, const float *g, float *m, float *v, size_t n, float lr,  \
                        float beta1, float beta2, float eps, float wd, int decoupled,      \
                        long long step)                                                    \
    {                                                                                      \
        const adam_k k = adam_consts(lr, beta1, beta2, eps, wd, decoupled, step);          \
        const T shrink = SET1(k.shrink), vwd = SET1(k.wd), b1 = SET1(k.b1), c1 = SET1(k.c1), \
                b2 = SET1(k.b2), c2 = SET1(k.c2), bc2 = SET1(k.bc2_sqrt), ve = SET1(k.eps),  \
                ss = SET1(k.step_size);                                                    \
        size_t i = 0;                                                                      \
        for (; i + (W) <= n; i += (W)) {                                                   \
            T pp = MUL(LOAD(p + i), shrink);                                               \
            T gg = ADD(LOAD(g + i), MUL(vwd, pp));                                         \
            T mm = ADD(MUL(b1, LOAD(m + i)), MUL(c1, gg));                                 \
            T vv = ADD(MUL(b2, LOAD(v + i)), MUL(c2, MUL(gg, gg)));                        \
            T den = ADD(DIV(SQRT(vv), bc2), ve);                                           \
            STORE(m + i, mm);                                                              \
            STORE(v + i, vv);                                                              \
            STORE(p + i, SUB(pp, MUL(ss, DIV(mm, den))));                                  \
        }                                                                                  \
        adam_tail(p + i, g + i, m + i, v + i, n - i, &k);                                  \
    }

#if defined(__AVX512F__)
ADAM_KERNEL(16, __m512, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_add_ps,
            _mm512_sub_ps, _mm512_mul_ps, _mm512_div_ps, _mm512_sqrt_ps)
#elif defined(__AVX2__)
ADAM_KERNEL(8, __m256, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps,
            _mm256_sub_ps, _mm256_mul_ps, _mm256_div_ps, _mm256_sqrt_ps)
#else
void cg_adam_update(float *p, const float *g, float *m, float *v, size_t n, float lr,
                    float beta1, float beta2, float eps, float wd, int decoupled, long long step)
{
    cg_adam_update_ref(p, g, m, v, n, lr, beta1, beta2, eps, wd, decoupled, step);
}
#endif

#if defined(__AVX512F__)
const char *cg_sgd_kernel_name(void) { return "avx512"; }
void cg_sgd_update(float *p, const float *g, float *v, size_t n, float lr, float mu, float wd)
{
    const __m512 vlr = _mm512_set1_ps(lr), vmu = _mm512_set1_ps(mu), vwd = _mm512_set1_ps(wd);
    size_t i = 0;
    if (v)
        for (; i + 16 <= n; i += 16) {
            __m512 pp = _mm512_loadu_ps(p + i);
            __m512 gg = _mm512_add_ps(_mm512_loadu_ps(g + i), _mm512_mul_ps(vwd, pp));
            __m512 vv = _mm512_add_ps(_mm512_mul_ps(vmu, _mm512_loadu_ps(v + i)), gg);
            _mm512_storeu_ps(v + i, vv);
            _mm512_storeu_ps(p + i, _mm512_sub_ps(pp, _mm512_mul_ps(vlr, vv)));
        }
    else
        for (; i + 16 <= n; i += 16) {
            __m512 pp = _mm512_loadu_ps(p + i);
            __m512 gg = _mm512_add_ps(_mm512_loadu_ps(g + i), _mm512_mul_ps(vwd, pp));
            _mm512_storeu_ps(p + i, _mm512_sub_ps(pp, _mm512_mul_ps(vlr, gg)));
        }
    cg_sgd_update_ref(p + i, g + i, v ? v + i : NULL, n - i, lr, mu, wd);
}
void cg_scale(float *y, size_t n, float a)
{
    const __m512 va = _mm512_set1_ps(a);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(y + i), va));
    for (; i < n; i++)
        y[i] *= a;
}
#elif defined(__AVX2__)
const char *cg_sgd_kernel_name(void) { return "avx2"; }
void cg_sgd_update(float *p, const float *g, float *v, size_t n, float lr, float mu, float wd)
{
    const __m256 vlr = _mm256_set1_ps(lr), vmu = _mm256_set1_ps(mu), vwd = _mm256_set1_ps(wd);
    size_t i = 0;
    if (v)
        for (; i + 8 <= n; i += 8) {
            __m256 pp = _mm256_loadu_ps(p + i);
            __m256 gg = _mm256_add_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(vwd, pp));
            __m256 vv = _mm256_add_ps(_mm256_mul_ps(vmu, _mm256_loadu_ps(v + i)), gg);
            _mm256_storeu_ps(v + i, vv);
            _mm256_storeu_ps(p + i, _mm256_sub_ps(pp, _mm256_mul_ps(vlr, vv)));
        }
    else
        for (; i + 8 <= n; i += 8) {
            __m256 pp = _mm256_loadu_ps(p + i);
            __m256 gg = _mm256_add_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(vwd, pp));
            _mm256_storeu_ps(p + i, _mm256_sub_ps(pp, _mm256_mul_ps(vlr, gg)));
        }
    cg_sgd_update_ref(p + i, g + i, v ? v + i : NULL, n - i, lr, mu, wd);
}
void cg_scale(float *y, size_t n, float a)
{
    const __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), va));
    for (; i < n; i++)
        y[i] *= a;
}
#else
const char *cg_sgd_kernel_name(void) { return "scalar"; }
void cg_sgd_update(float *p, const float *g, float *v, size_t n, float lr, float mu, float wd)
{
    cg_sgd_update_ref(p, g, v, n, lr, mu, wd);
}
void cg_scale(float *y, size_t n, float a)
{
    for (size_t i = 0; i < n; i++)
        y[i] *= a;
}
#endif

float cg_lr_at(int schedule, float lr, int epoch, int epochs, int step_size, float gamma)
{
    switch (schedule) {
    case CG_SCHED_STEP:
        return (float)((double)lr * pow((double)gamma, (double)(epoch / (step_size > 0 ? step_size : 1))));
    case CG_SCHED_COSINE: {
        int T = epochs > 0 ? epochs : 1;
        return (float)((double)lr * 0.5 * (1.0 + cos(3.14159265358979323846 * (double)epoch / (double)T)));
    }
    default:
        return lr;
    }
}

float cg_lr_warmup_at(int warmup, int schedule, float lr, int epoch, int epochs, int step_size,
                      float gamma)
{
    if (warmup <= 0)
        return cg_lr_at(schedule, lr, epoch, epochs, step_size, gamma);
    if (epoch < warmup)
        return (float)((double)lr * (double)(epoch + 1) / (double)(warmup + 1));
    return cg_lr_at(schedule, lr, epoch - warmup, epochs - warmup, step_size, gamma);
}

/* ---- the updates on the net's threads ------------------------------------------------ */

/* Pieces: up to UPDATE_PIECES runs of whole 64-float lines (the vector kernels' widths
 * divide 64, so each piece runs the same vector and scalar-tail code as one call over
 * everything would at those elements; elementwise, the results do not depend on the
 * split). Below UPDATE_MIN_SPLIT floats one call: waking the threads costs more. */
#define UPDATE_PIECES 64
#define UPDATE_MIN_SPLIT ((size_t)1 << 16)

typedef struct {
    float *p, *m, *v;
    const float *g;
    size_t n, piece;
    float lr, mu, wd, b1, b2, eps;
    int decoupled, adam;
    long long step;
} update_job;

static void update_piece(void *ctx, int i)
{
    const update_job *j = ctx;
    size_t a = (size_t)i * j->piece;
    if (a >= j->n)
        return;
    size_t len = j->n - a < j->piece ? j->n - a : j->piece;
    if (j->adam)
        cg_adam_update(j->p + a, j->g + a, j->m + a, j->v + a, len, j->lr, j->b1, j->b2, j->eps, j->wd,
                       j->decoupled, j->step);
    else
        cg_sgd_update(j->p + a, j->g + a, j->v ? j->v + a : NULL, len, j->lr, j->mu, j->wd);
}

static void run_update(const cg_net *net, update_job *j)
{
    if (!net || !net->parallel_for || j->n < UPDATE_MIN_SPLIT) {
        j->piece = j->n;
        update_piece(j, 0);
        return;
    }
    size_t lines = (j->n + 63) / 64;
    j->piece = (lines + UPDATE_PIECES - 1) / UPDATE_PIECES * 64;
    net->parallel_for((int)((j->n + j->piece - 1) / j->piece), update_piece, j);
}

void cg_net_sgd_update(const cg_net *net, float *p, const float *g, float *v, size_t n, float lr, float mu,
                       float wd)
{
    update_job j = {.p = p, .g = g, .v = v, .n = n, .lr = lr, .mu = mu, .wd = wd};
    run_update(net, &j);
}

void cg_net_adam_update(const cg_net *net, float *p, const float *g, float *m, float *v, size_t n, float lr,
                        float beta1, float beta2, float eps, float wd, int decoupled, long long step)
{
    update_job j = {.p = p, .g = g, .m = m, .v = v, .n = n, .lr = lr, .wd = wd, .b1 = beta1, .b2 = beta2,
                    .eps = eps, .decoupled = decoupled, .adam = 1, .step = step};
    run_update(net, &j);
}
