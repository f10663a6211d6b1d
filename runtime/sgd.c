#include "sgd.h"

#include <stdlib.h>
#include <string.h>

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
    const float lr = opt->lr, mu = opt->momentum, wd = opt->weight_decay;
    float *v = opt->velocity;
    for (size_t i = 0; i < opt->n; i++) {
        float g = grads[i] + wd * params[i];
        if (v) {
            v[i] = mu * v[i] + g;
            g = v[i];
        }
        params[i] -= lr * g;
    }
}

void cg_sgd_free(cg_sgd *opt)
{
    free(opt->velocity);
    memset(opt, 0, sizeof *opt);
}
