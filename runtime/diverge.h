/* cnngen runtime: divergence diagnosis (a NaN or Inf in the loss or the gradients). */
#ifndef CG_DIVERGE_H
#define CG_DIVERGE_H

#include <stddef.h>

#include "cnngen.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if every one of the n floats is finite. */
int cg_all_finite(const float *v, size_t n);

/* After a training forward/backward of n samples gave a non-finite loss or gradient: where
 * it first went wrong, as text into buf: the input batch, else the first layer whose forward
 * output is non-finite (the forward is run again on x, training mode: buffers are touched),
 * else the loss, and the first layer in backward order with a non-finite parameter gradient.
 * Returns 1 when the input batch itself holds a NaN or Inf (bad data, not a bad step). */
int cg_diverge_where(const cg_net *net, const float *params, float *buffers, const float *grads,
                      const float *x, float *ws, int n, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
