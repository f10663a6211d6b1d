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
