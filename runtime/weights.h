/* cnngen runtime: network weights <-> .npz in PyTorch state_dict form. */
#ifndef CG_WEIGHTS_H
#define CG_WEIGHTS_H

#include "cnngen.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Strict load (like load_state_dict(strict=True)): every tensor of net->tensors must be
 * present with exactly its shape (float32 or float64; counters: an integer or float scalar
 * of shape ()), and no other keys may appear. params/buffers are only written on success. */
int cg_weights_load(const cg_net *net, const char *path, float *params, float *buffers,
                    cg_err *err);
/* Save params + buffers with torch's state_dict names, shapes and dtypes
 * (float32; counters int64 shape ()). Atomic. */
int cg_weights_save(const cg_net *net, const char *path, const float *params,
                    const float *buffers, cg_err *err);
/* Total floats of learned parameters (sum of CG_PARAM tensor sizes). */
size_t cg_param_count(const cg_net *net);

#ifdef __cplusplus
}
#endif

#endif
