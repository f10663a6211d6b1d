#include <math.h>
#include <string.h>

#include "cnngen.h"
#include "util.h"

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Each tensor is drawn from its own stream derived from (seed, tensor index), so adding or
 * reordering unrelated layers does not reshuffle the others' values. */
void cg_init_params(const cg_net *net, float *params, float *buffers, uint64_t seed)
{
    for (int i = 0; i < net->n_tensors; i++) {
        const cg_tensor *t = &net->tensors[i];
        float *p = (t->kind == CG_PARAM ? params : buffers) + t->offset;
        if (t->kind == CG_COUNTER) {
            for (size_t k = 0; k < t->size; k++)
                p[k] = 0.0f;
            continue;
        }
        if (t->kind == CG_BUFFER) {
            float v = (t->init == CG_INIT_ONE || ends_with(t->name, "running_var")) ? 1.0f : 0.0f;
            for (size_t k = 0; k < t->size; k++)
                p[k] = v;
            continue;
        }
        switch (t->init) {
        case CG_INIT_ONE:
            for (size_t k = 0; k < t->size; k++)
                p[k] = 1.0f;
            break;
        case CG_INIT_KAIMING_UNIFORM:
        case CG_INIT_BIAS_UNIFORM: {
            cg_rng rng;
            cg_rng_seed(&rng, seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(i + 1)));
            float bound = t->fan_in > 0 ? (float)(1.0 / sqrt((double)t->fan_in)) : 0.0f;
            for (size_t k = 0; k < t->size; k++)
                p[k] = bound * (2.0f * cg_rng_uniform(&rng) - 1.0f);
            break;
        }
        default: /* CG_INIT_ZERO */
            for (size_t k = 0; k < t->size; k++)
                p[k] = 0.0f;
        }
    }
}
