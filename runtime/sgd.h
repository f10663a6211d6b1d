/* cnngen runtime: SGD with momentum and weight decay (PyTorch semantics), learning-rate
 * schedules, and the vectorized update kernels. */
#ifndef CG_SGD_H
#define CG_SGD_H

#include <stddef.h>

#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cg_sgd {
    float lr, momentum, weight_decay;
    size_t n;        /* number of parameters */
    float *velocity; /* [n] momentum buffer, zero-initialised (NULL when momentum == 0) */
} cg_sgd;

int cg_sgd_init(cg_sgd *opt, size_t n, float lr, float momentum, float weight_decay, cg_err *err);
/* torch.optim.SGD (dampening 0, nesterov off): g' = g + wd*p; v = mu*v + g'; p -= lr*v
 * (v = g' on the first step, which equals mu*0 + g'). No allocation. Uses the vectorized
 * kernel. */
void cg_sgd_step(cg_sgd *opt, float *params, const float *grads);
void cg_sgd_free(cg_sgd *opt);

/* The update kernel over n floats; v may be NULL (momentum 0: p -= lr*(g + wd*p)).
 * cg_sgd_update is AVX-512, AVX2 or scalar, chosen at build time (__AVX512F__ / __AVX2__);
 * cg_sgd_update_ref is the scalar reference. Both use separate multiplies and adds (no
 * FMA), in the same order, so they agree bitwise. */
void cg_sgd_update(float *p, const float *g, float *v, size_t n, float lr, float mu, float wd);
void cg_sgd_update_ref(float *p, const float *g, float *v, size_t n, float lr, float mu,
                       float wd);
/* "avx512", "avx2" or "scalar": what cg_sgd_update was compiled to. */
const char *cg_sgd_kernel_name(void);

/* y[i] *= a (used to scale a loss gradient chunk in full-batch mode). Vectorized. */
void cg_scale(float *y, size_t n, float a);

/* Learning rate for 0-based epoch e, PyTorch's schedulers stepped once an epoch:
 * constant: lr; step (StepLR): lr * gamma^floor(e / step_size);
 * cosine (CosineAnnealingLR, eta_min 0, T_max = epochs): lr * (1 + cos(pi e / T_max)) / 2. */
float cg_lr_at(int schedule, float lr, int epoch, int epochs, int step_size, float gamma);

#ifdef __cplusplus
}
#endif

#endif
