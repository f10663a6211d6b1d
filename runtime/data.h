/* cnngen runtime: datasets (IDX gz as in (Fashion-)MNIST, or npz with x/y) and batching. */
#ifndef CG_DATA_H
#define CG_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "cnngen.h"
#include "npy.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

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
    int scaled_u8;      /* CSV: integer features in 0..255 were scaled to [0, 1] */
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
/* The same with separate names for the input and the label file in messages. */
int cg_dataset_check_files(const cg_dataset *ds, const cg_net *net, const char *xwhat,
                           const char *ywhat, cg_err *err);

/* ---- generic formats ---- */
/* IDX of any element type (08 u8, 09 i8, 0B i16, 0C i32, 0D f32, 0E f64) and 1-4 dims,
 * gzip-compressed or plain; int16 widens to int32. */
int cg_idx_read_array(const char *path, cg_array *out, cg_err *err);
/* .npy or IDX (gz or plain), recognised by content. */
int cg_array_file_read(const char *path, cg_array *out, cg_err *err);
/* Dataset from inputs x [N, ...] (float32/float64, or uint8 scaled to [0, 1]) and labels y
 * (integer [N]) or float targets y [N, ...]; consumes the arrays' data on success. */
int cg_dataset_from_arrays(cg_array *x, cg_array *y, const char *xpath, const char *ypath,
                           cg_dataset *out, cg_err *err);
/* --data-x X --data-y Y: each .npy or IDX. Not checked against a net. */
int cg_xy_load(const char *xpath, const char *ypath, cg_dataset *out, cg_err *err);
/* The same, refusing inputs whose samples do not have `sample` values (0: any) from an
 * IDX header, before the data is read and inflated. */
int cg_xy_load_expect(const char *xpath, const char *ypath, size_t sample, cg_dataset *out, cg_err *err);
/* CSV: label first, then the features, one sample a line; an optional header line (first
 * field not a number) is skipped; all-integer features in 0..255 are taken as uint8 and
 * scaled to [0, 1]. Samples are flat [F]. */
int cg_csv_load(const char *path, cg_dataset *out, cg_err *err);
/* CSV inputs to predict: rows of n_features values, or the training layout (a label, then
 * n_features values; the labels are kept), told apart by the field count; the same header
 * and uint8 rules. */
int cg_csv_load_inputs(const char *path, size_t n_features, cg_dataset *out, cg_err *err);
/* PATH is a directory (cg_dataset_load), a .npz (x, y) or a .csv; checked against net.
 * NULL: the default dataset. */
int cg_data_path_load(const cg_net *net, const char *path, int split, cg_dataset *out,
                      cg_err *err);

/* ---- per-channel normalization (x - mean[c]) / std[c] ----
 * Channels: in_shape[0] for [C, L] / [C, H, W] inputs, every feature for flat inputs. */
size_t cg_norm_channels(const cg_net *net);
/* Statistics of ds (population std; std < 1e-8 becomes 1). */
void cg_norm_compute(const cg_net *net, const cg_dataset *ds, float *mean, float *std);
void cg_norm_apply(const cg_net *net, float *x, size_t n, const float *mean, const float *std);
/* NAME.npz with float32 arrays "mean" and "std" [C]. */
int cg_norm_save(const cg_net *net, const char *path, const float *mean, const float *std,
                 cg_err *err);
int cg_norm_load(const cg_net *net, const char *path, float *mean, float *std, cg_err *err);

/* Views (no copy): head = first n - n_tail samples, tail = last n_tail. */
void cg_dataset_split(const cg_dataset *all, size_t n_tail, cg_dataset *head, cg_dataset *tail);
void cg_dataset_free(cg_dataset *ds);

/* Copy samples idx[0..n) (or start..start+n if idx is NULL) into the batch buffers:
 * xb [n, x_size]; labels into yb (if ds has labels and yb != NULL); float targets into
 * tb [n, out_size] (if tb != NULL: ds->targets, or one-hot of the labels). */
void cg_dataset_gather(const cg_dataset *ds, const size_t *idx, size_t start, int n, float *xb,
                       int64_t *yb, float *tb, size_t out_size);

#ifdef __cplusplus
}
#endif

#endif
