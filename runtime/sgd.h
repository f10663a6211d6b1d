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

/* One step of torch.optim.Adam (decoupled = 0) or torch.optim.AdamW (decoupled = 1) over n
 * floats, `step` the 1-based count of this update (PyTorch's state['step'] after its +1):
 *   Adam:  g' = g + wd*p                 AdamW: p = p * (1 - lr*wd); g' = g
 *   m = b1*m + (1-b1)*g';  v = b2*v + (1-b2)*g'*g'
 *   p = p - (lr / (1 - b1^step)) * (m / (sqrt(v) / sqrt(1 - b2^step) + eps))
 * The scalars (1-b1, 1-b2, lr/(1-b1^step), sqrt(1-b2^step), 1-lr*wd) are computed in double
 * and rounded to float once, as PyTorch's Python scalars are. cg_adam_update is AVX-512, AVX2
 * or scalar (as cg_sgd_update); cg_adam_update_ref is the scalar reference; both use
 * separate roundings in the same order (no FMA; sqrt and divide are exact-rounded), so they
 * agree bitwise. m and v start at zero. */
void cg_adam_update(float *p, const float *g, float *m, float *v, size_t n, float lr,
                    float beta1, float beta2, float eps, float wd, int decoupled, long long step);
void cg_adam_update_ref(float *p, const float *g, float *m, float *v, size_t n, float lr,
                        float beta1, float beta2, float eps, float wd, int decoupled,
                        long long step);

/* cg_sgd_update / cg_adam_update over net's threads (cg_net.parallel_for, when set): the
 * n floats in pieces of whole 64-float lines, each piece the kernel's own loop, so the
 * results are bitwise those of the one-thread call. */
struct cg_net;
void cg_net_sgd_update(const struct cg_net *net, float *p, const float *g, float *v, size_t n, float lr,
                       float mu, float wd);
void cg_net_adam_update(const struct cg_net *net, float *p, const float *g, float *m, float *v, size_t n,
                        float lr, float beta1, float beta2, float eps, float wd, int decoupled,
                        long long step);

/* y[i] *= a (used to scale a loss gradient chunk in full-batch mode). Vectorized. */
void cg_scale(float *y, size_t n, float a);

/* Learning rate for 0-based epoch e, PyTorch's schedulers stepped once an epoch:
 * constant: lr; step (StepLR): lr * gamma^floor(e / step_size);
 * cosine (CosineAnnealingLR, eta_min 0, T_max = epochs): lr * (1 + cos(pi e / T_max)) / 2. */
float cg_lr_at(int schedule, float lr, int epoch, int epochs, int step_size, float gamma);

/* The same after `warmup` epochs of linear warmup (warmup 0: cg_lr_at):
 *   e < warmup:  lr * (e + 1) / (warmup + 1)
 *   e >= warmup: cg_lr_at(schedule, lr, e - warmup, epochs - warmup, step_size, gamma)
 * i.e. PyTorch's SequentialLR([LinearLR(start_factor=1/(warmup+1), end_factor=1,
 * total_iters=warmup), the schedule over epochs - warmup], milestones=[warmup]). */
float cg_lr_warmup_at(int warmup, int schedule, float lr, int epoch, int epochs, int step_size,
                      float gamma);

#ifdef __cplusplus
}
#endif

#endif
