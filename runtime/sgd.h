/* cnngen runtime: SGD with momentum and weight decay, PyTorch semantics. */
#ifndef CG_SGD_H
#define CG_SGD_H

#include <stddef.h>

#include "util.h"

typedef struct cg_sgd {
    float lr, momentum, weight_decay;
    size_t n;        /* number of parameters */
    float *velocity; /* [n] momentum buffer, zero-initialised (NULL when momentum == 0) */
} cg_sgd;

int cg_sgd_init(cg_sgd *opt, size_t n, float lr, float momentum, float weight_decay, cg_err *err);
/* torch.optim.SGD (dampening 0, nesterov off): g' = g + wd*p; v = mu*v + g'; p -= lr*v
 * (v = g' on the first step, which equals mu*0 + g'). No allocation. */
void cg_sgd_step(cg_sgd *opt, float *params, const float *grads);
void cg_sgd_free(cg_sgd *opt);

#endif
