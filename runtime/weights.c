#include "weights.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "npy.h"

size_t cg_param_count(const cg_net *net)
{
    size_t n = 0;
    for (int i = 0; i < net->n_tensors; i++)
        if (net->tensors[i].kind == CG_PARAM)
            n += net->tensors[i].size;
    return n;
}

static const char *tensor_shape_str(const cg_tensor *t, char *buf, size_t cap)
{
    cg_array a;
    memset(&a, 0, sizeof a);
    a.ndim = t->ndim;
    for (int d = 0; d < t->ndim && d < 4; d++)
        a.shape[d] = t->shape[d];
    return cg_shape_str(&a, buf, cap);
}

static int shape_matches(const cg_tensor *t, const cg_array *a)
{
    if (t->kind == CG_COUNTER && a->ndim == 0)
        return 1;
    if (a->ndim != t->ndim)
        return 0;
    for (int d = 0; d < t->ndim; d++)
        if (a->shape[d] != t->shape[d])
            return 0;
    return 1;
}

int cg_weights_load(const cg_net *net, const char *path, float *params, float *buffers,
                    cg_err *err)
{
    /* no member larger than the largest tensor as float64 plus a header: a small file
     * claiming gigabytes is refused before it is inflated */
    size_t max_bytes = 0;
    for (int i = 0; i < net->n_tensors; i++)
        if (net->tensors[i].size * 8 + 4096 > max_bytes)
            max_bytes = net->tensors[i].size * 8 + 4096;
    cg_npz z;
    if (cg_npz_read_expect(path, NULL, 0, max_bytes, &z, err) != 0)
        return -1;
    char s1[128], s2[128];
    int rc = -1;
    /* validate everything first so a bad file leaves params untouched */
    for (int i = 0; i < net->n_tensors; i++) {
        const cg_tensor *t = &net->tensors[i];
        const cg_array *a = cg_npz_get(&z, t->name);
        if (!a) {
            cg_fail(err, "%s: missing tensor '%s' (shape %s) required by network '%s'", path,
                    t->name, tensor_shape_str(t, s1, sizeof s1), net->name);
            goto out;
        }
        if (t->kind == CG_COUNTER ? 0 : (a->dtype != CG_F4 && a->dtype != CG_F8)) {
            cg_fail(err, "%s: tensor '%s' has dtype %s, expected <f4 (or <f8)", path, t->name,
                    cg_dtype_descr(a->dtype));
            goto out;
        }
        if (!shape_matches(t, a)) {
            cg_fail(err, "%s: tensor '%s' has shape %s, expected %s", path, t->name,
                    cg_shape_str(a, s1, sizeof s1), tensor_shape_str(t, s2, sizeof s2));
            goto out;
        }
        if (a->count != t->size) {
            cg_fail(err, "%s: tensor '%s' has %zu elements, expected %zu", path, t->name,
                    a->count, t->size);
            goto out;
        }
        /* every value finite as the float it becomes (NaN weights would train or score
         * as numbers after a ReLU or a max); a counter non-negative */
        for (size_t k = 0; k < a->count; k++) {
            double v = cg_array_get(a, k);
            if (!isfinite((float)v) || (t->kind == CG_COUNTER && v < 0)) {
                cg_fail(err, "%s: tensor '%s' has the value %g at index %zu (%s)", path, t->name, v, k,
                        t->kind == CG_COUNTER ? "a counter must be non-negative" : "every value must be finite");
                goto out;
            }
        }
    }
    for (int k = 0; k < z.n; k++) {
        int found = 0;
        for (int i = 0; i < net->n_tensors && !found; i++)
            found = strcmp(net->tensors[i].name, z.keys[k]) == 0;
        if (!found) {
            cg_fail(err, "%s: unexpected tensor '%s' (not in network '%s')", path, z.keys[k],
                    net->name);
            goto out;
        }
    }
    for (int i = 0; i < net->n_tensors; i++) {
        const cg_tensor *t = &net->tensors[i];
        const cg_array *a = cg_npz_get(&z, t->name);
        float *dst = (t->kind == CG_PARAM ? params : buffers) + t->offset;
        for (size_t k = 0; k < t->size; k++)
            dst[k] = (float)cg_array_get(a, k);
    }
    rc = 0;
out:
    cg_npz_free(&z);
    return rc;
}

int cg_weights_save(const cg_net *net, const char *path, const float *params,
                    const float *buffers, cg_err *err)
{
    int n = net->n_tensors;
    const char **keys = cg_try_alloc((size_t)n + 1, sizeof *keys, path, err);
    cg_array *arr = cg_try_alloc((size_t)n + 1, sizeof *arr, path, err);
    int64_t *counters = cg_try_alloc((size_t)n + 1, sizeof *counters, path, err);
    int rc = -1;
    if (!keys || !arr || !counters)
        goto out;
    for (int i = 0; i < n; i++) {
        const cg_tensor *t = &net->tensors[i];
        const float *src = (t->kind == CG_PARAM ? params : buffers) + t->offset;
        keys[i] = t->name;
        memset(&arr[i], 0, sizeof arr[i]);
        if (t->kind == CG_COUNTER) {
            counters[i] = (int64_t)llround(src[0]);
            arr[i].dtype = CG_I8;
            arr[i].ndim = 0;
            arr[i].count = 1;
            arr[i].data = &counters[i];
        } else {
            arr[i].dtype = CG_F4;
            arr[i].ndim = t->ndim;
            for (int d = 0; d < t->ndim; d++)
                arr[i].shape[d] = t->shape[d];
            arr[i].count = t->size;
            arr[i].data = (void *)src;
        }
    }
    rc = cg_npz_write(path, n, keys, arr, err);
out:
    free(keys);
    free(arr);
    free(counters);
    return rc;
}
