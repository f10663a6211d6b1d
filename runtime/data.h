/* cnngen runtime: datasets (IDX gz as in (Fashion-)MNIST, or npz with x/y) and batching. */
#ifndef CG_DATA_H
#define CG_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "cnngen.h"
#include "util.h"

#define CG_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

typedef struct cg_dataset {
    size_t n;           /* samples */
    int s_ndim;         /* rank of one sample (IDX images: 3 = [1, rows, cols]) */
    int64_t s_shape[3];
    size_t x_size;      /* floats per sample */
    float *x;           /* [n, x_size] */
    int64_t *labels;    /* [n] class indices (classification data), or NULL */
    int n_classes;      /* labels lie in [0, n_classes) */
    float *targets;     /* [n, t_size] float targets (regression data), or NULL */
    size_t t_size;
    int owns;           /* 1: the arrays are malloc'd by this dataset; 0: a view */
} cg_dataset;

enum cg_split { CG_SPLIT_TRAIN = 0, CG_SPLIT_TEST = 1 };

/* Read an IDX file of unsigned bytes (gzip-compressed or plain, via zlib's gzread),
 * expecting magic 0x00000800 | ndim. dims[ndim] receives the dimensions; *data the bytes. */
int cg_idx_read(const char *path, int ndim, int64_t *dims, uint8_t **data, cg_err *err);
/* MNIST-layout pair DIR/PREFIX-images-idx3-ubyte[.gz] + DIR/PREFIX-labels-idx1-ubyte[.gz]
 * (prefix "train" or "t10k"): images scaled to [0,1], 10 classes, counts cross-checked. */
int cg_mnist_load(const char *dir, const char *prefix, cg_dataset *out, cg_err *err);
/* npz with "x" (float, [N, ...]) and "y" (integer class indices [N], or float [N, ...]). */
int cg_npz_dataset_load(const char *path, cg_dataset *out, cg_err *err);
/* The split for net from dir (NULL: the default Fashion-MNIST directory, only for nets with
 * a 1x28x28 or 784 input): DIR/{train,t10k}-*-idx*-ubyte.gz, else DIR/{train,test}.npz.
 * Validated against the net with cg_dataset_check. */
int cg_dataset_load(const cg_net *net, const char *dir, int split, cg_dataset *out, cg_err *err);
/* Sample shape matches the net input; labels are in [0, out_size) (softmax CE) or, for MSE,
 * targets have out_size floats per sample (labels become one-hot, needing n_classes <= out_size). */
int cg_dataset_check(const cg_dataset *ds, const cg_net *net, const char *what, cg_err *err);
/* Views (no copy): head = first n - n_tail samples, tail = last n_tail. */
void cg_dataset_split(const cg_dataset *all, size_t n_tail, cg_dataset *head, cg_dataset *tail);
void cg_dataset_free(cg_dataset *ds);

/* Copy samples idx[0..n) (or start..start+n if idx is NULL) into the batch buffers:
 * xb [n, x_size]; labels into yb (if ds has labels and yb != NULL); float targets into
 * tb [n, out_size] (if tb != NULL: ds->targets, or one-hot of the labels). */
void cg_dataset_gather(const cg_dataset *ds, const size_t *idx, size_t start, int n, float *xb,
                       int64_t *yb, float *tb, size_t out_size);

#endif
