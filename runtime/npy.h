/* cnngen runtime: .npy / .npz reading and writing (npz through libzip). */
#ifndef CG_NPY_H
#define CG_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CG_NPY_MAXDIM 8

enum cg_dtype { CG_F4 = 0, CG_F8, CG_I8, CG_I4, CG_U1, CG_I1 };

/* An n-dimensional C-order array. ndim 0 is a scalar (count 1). data is owned (malloc'd)
 * when the array came from a reader; writers only read it. */
typedef struct cg_array {
    int dtype; /* enum cg_dtype */
    int ndim;
    int64_t shape[CG_NPY_MAXDIM];
    size_t count; /* product of shape */
    void *data;
} cg_array;

size_t cg_dtype_size(int dtype);
const char *cg_dtype_descr(int dtype); /* "<f4", "|u1", ... */
int cg_dtype_is_int(int dtype);
/* "(3, 4)" into buf; returns buf. */
const char *cg_shape_str(const cg_array *a, char *buf, size_t cap);

void cg_array_free(cg_array *a);
/* Allocates data for a zero-filled array of the given dtype/shape. */
int cg_array_alloc(cg_array *a, int dtype, int ndim, const int64_t *shape, cg_err *err);
/* Convert in place to float32 (from any dtype). */
int cg_array_to_f32(cg_array *a, const char *what, cg_err *err);
/* Element i as double / as int64 (rounding toward zero for floats). */
double cg_array_get(const cg_array *a, size_t i);

/* Parse an in-memory .npy image; `what` names it in messages ("x.npy", "w.npz:0.weight"). */
int cg_npy_parse(const void *buf, size_t len, const char *what, cg_array *out, cg_err *err);
/* Encode into a malloc'd v1.0 .npy image (v2.0 if the header needs it). */
int cg_npy_encode(const cg_array *a, unsigned char **buf, size_t *len, cg_err *err);
int cg_npy_read(const char *path, cg_array *out, cg_err *err);
/* Atomic (path.tmp, fsync, rename). */
int cg_npy_write(const char *path, const cg_array *a, cg_err *err);

/* A loaded .npz: keys are member names without the ".npy" suffix. */
typedef struct cg_npz {
    int n;
    char **keys;
    cg_array *arrays;
} cg_npz;

int cg_npz_read(const char *path, cg_npz *out, cg_err *err);
/* The same; member KEY.npy (when key) must hold samples of `sample` values each ([N, ...]
 * with sample values after the first axis), checked from its header before the rest of a
 * large member is inflated; no member may be larger than max_bytes (0: any), checked from
 * the zip directory before inflating. */
int cg_npz_read_expect(const char *path, const char *key, size_t sample, size_t max_bytes, cg_npz *out,
                       cg_err *err);
const cg_array *cg_npz_get(const cg_npz *z, const char *key);
void cg_npz_free(cg_npz *z);
/* Write n arrays as members "<key>.npy" (stored), atomically. */
int cg_npz_write(const char *path, int n, const char *const *keys, const cg_array *arrays,
                 cg_err *err);

#ifdef __cplusplus
}
#endif

#endif
