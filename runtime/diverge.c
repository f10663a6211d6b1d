#include "diverge.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int cg_all_finite(const float *v, size_t n)
{
    float acc = 0.0f; /* x * 0 is NaN exactly for NaN and Inf */
    for (size_t i = 0; i < n; i++)
        acc += v[i] * 0.0f;
    return acc == 0.0f;
}

/* a layer's output for samples [0, n): [n][out_size], or [out_size][lanes] */
static int layer_out_finite(const cg_layer *l, const float *ws, int n)
{
    const float *a = ws + l->act_offset;
    if (l->lanes <= 0)
        return cg_all_finite(a, (size_t)n * l->out_size);
    for (size_t j = 0; j < l->out_size; j++)
        if (!cg_all_finite(a + j * (size_t)l->lanes, (size_t)n))
            return 0;
    return 1;
}

int cg_diverge_where(const cg_net *net, const float *params, float *buffers, const float *grads,
                      const float *x, float *ws, int n, char *buf, size_t cap)
{
    size_t len = 0;
    int bad_input = 0;
    buf[0] = 0;
#define ADD(...)                                                                             \
    do {                                                                                     \
        if (len < cap)                                                                       \
            len += (size_t)snprintf(buf + len, cap - len, __VA_ARGS__);                      \
    } while (0)
    if (!cg_all_finite(x, (size_t)n * net->in_size)) {
        ADD("the input batch contains NaN or Inf");
        bad_input = 1;
    } else {
        net->forward(params, buffers, x, ws, n, 1);
        int bad = -1;
        for (int i = 0; i < net->n_layers && bad < 0; i++)
            if (!layer_out_finite(&net->layers[i], ws, n))
                bad = i;
        if (bad >= 0)
            ADD("forward: the output of layer %d (%s, spec line %zu) is non-finite", bad,
                net->layers[bad].kind, net->layers[bad].line);
        else
            ADD("the loss is non-finite");
    }
    /* backward runs from the last layer to the first: the highest layer with a bad gradient
     * is where the gradient first went non-finite */
    int gl = -1;
    const char *gname = NULL;
    for (int t = 0; t < net->n_tensors; t++) {
        const cg_tensor *T = &net->tensors[t];
        if (T->kind == CG_PARAM && T->layer > gl && !cg_all_finite(grads + T->offset, T->size)) {
            gl = T->layer;
            gname = T->name;
        }
    }
    if (gname)
        ADD("; backward: the gradient of %s (layer %d, %s) is non-finite", gname, gl,
            net->layers[gl].kind);
#undef ADD
    return bad_input;
}
