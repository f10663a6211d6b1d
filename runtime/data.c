#include "data.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "npy.h"

/* gzread that fills `len` bytes unless EOF/error; returns bytes read or -1 (message set). */
static long long gz_read_full(gzFile g, const char *path, void *buf, size_t len, cg_err *err)
{
    size_t got = 0;
    while (got < len) {
        size_t chunk = len - got > (1u << 30) ? (1u << 30) : len - got;
        int r = gzread(g, (unsigned char *)buf + got, (unsigned)chunk);
        if (r < 0) {
            int code;
            const char *m = gzerror(g, &code);
            cg_fail(err, "%s: corrupt or truncated gzip data: %s", path,
                    code == Z_ERRNO ? strerror(errno) : m);
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (long long)got;
}

int cg_idx_read(const char *path, int ndim, int64_t *dims, uint8_t **data, cg_err *err)
{
    *data = NULL;
    FILE *probe = cg_fopen(path, "rb", err);
    if (!probe)
        return -1;
    fclose(probe);
    gzFile g = gzopen(path, "rb");
    if (!g)
        return cg_fail(err, "%s: cannot open: %s", path, errno ? strerror(errno) : "gzopen failed");
    unsigned char hdr[4 + 4 * 3];
    size_t hlen = 4 + 4 * (size_t)ndim;
    long long r = gz_read_full(g, path, hdr, hlen, err);
    if (r < 0)
        goto fail;
    if ((size_t)r < hlen) {
        cg_fail(err, "%s: truncated IDX header (%lld of %zu bytes)", path, r, hlen);
        goto fail;
    }
    uint32_t magic = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    uint32_t want = 0x800u | (uint32_t)ndim;
    if (magic != want) {
        cg_fail(err, "%s: bad IDX magic 0x%08x, expected 0x%08x (unsigned bytes, %d dims)", path,
                magic, want, ndim);
        goto fail;
    }
    size_t total = 1;
    for (int d = 0; d < ndim; d++) {
        const unsigned char *p = hdr + 4 + 4 * d;
        uint32_t v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (v == 0 || v > (d == 0 ? 100000000u : 65536u)) {
            cg_fail(err, "%s: implausible IDX dimension %d = %u", path, d, v);
            goto fail;
        }
        dims[d] = v;
        if (!cg_mul_size(total, v, &total)) {
            cg_fail(err, "%s: IDX dimensions overflow", path);
            goto fail;
        }
    }
    uint8_t *buf = cg_try_alloc(total, 1, path, err);
    if (!buf)
        goto fail;
    r = gz_read_full(g, path, buf, total, err);
    if (r >= 0 && (size_t)r < total) {
        cg_fail(err, "%s: truncated IDX data (%lld of %zu bytes)", path, r, total);
        r = -1;
    }
    if (r >= 0) {
        unsigned char extra;
        long long e = gz_read_full(g, path, &extra, 1, err);
        if (e != 0) {
            if (e > 0)
                cg_fail(err, "%s: unexpected trailing data after %zu bytes of IDX data", path, total);
            r = -1;
        }
    }
    if (r < 0) {
        free(buf);
        goto fail;
    }
    gzclose(g);
    *data = buf;
    return 0;
fail:
    gzclose(g);
    return -1;
}

static int find_idx(const char *dir, const char *name, char *out, size_t cap, cg_err *err)
{
    char gz[4200];
    if (snprintf(gz, sizeof gz, "%s.gz", name) >= (int)sizeof gz)
        return cg_fail(err, "%s: name too long", name);
    if (cg_path_join(out, cap, dir, gz, err) != 0)
        return -1;
    if (access(out, F_OK) == 0)
        return 0;
    if (cg_path_join(out, cap, dir, name, err) != 0)
        return -1;
    if (access(out, F_OK) == 0)
        return 0;
    return cg_path_join(out, cap, dir, gz, err); /* open will report the .gz as missing */
}

int cg_mnist_load(const char *dir, const char *prefix, cg_dataset *out, cg_err *err)
{
    memset(out, 0, sizeof *out);
    char name[256], ipath[4352], lpath[4352];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    if (find_idx(dir, name, ipath, sizeof ipath, err) != 0)
        return -1;
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    if (find_idx(dir, name, lpath, sizeof lpath, err) != 0)
        return -1;
    int64_t idims[3] = {0, 0, 0}, ldims[1] = {0};
    uint8_t *img = NULL, *lab = NULL;
    if (cg_idx_read(ipath, 3, idims, &img, err) != 0)
        return -1;
    if (cg_idx_read(lpath, 1, ldims, &lab, err) != 0) {
        free(img);
        return -1;
    }
    if (idims[0] != ldims[0]) {
        free(img);
        free(lab);
        return cg_fail(err, "%s has %lld images but %s has %lld labels", ipath, (long long)idims[0],
                       lpath, (long long)ldims[0]);
    }
    size_t n = (size_t)idims[0], sz = (size_t)(idims[1] * idims[2]);
    for (size_t i = 0; i < n; i++)
        if (lab[i] >= 10) {
            cg_fail(err, "%s: label %u at index %zu is out of range [0, 10)", lpath, lab[i], i);
            free(img);
            free(lab);
            return -1;
        }
    out->x = cg_try_alloc(n * sz, sizeof(float), ipath, err); /* n*sz checked by cg_idx_read */
    out->labels = cg_try_alloc(n, sizeof(int64_t), lpath, err);
    if (!out->x || !out->labels) {
        free(out->x);
        free(out->labels);
        free(img);
        free(lab);
        memset(out, 0, sizeof *out);
        return -1;
    }
    for (size_t i = 0; i < n * sz; i++)
        out->x[i] = img[i] * (1.0f / 255.0f);
    for (size_t i = 0; i < n; i++)
        out->labels[i] = lab[i];
    free(img);
    free(lab);
    out->n = n;
    out->s_ndim = 3;
    out->s_shape[0] = 1;
    out->s_shape[1] = idims[1];
    out->s_shape[2] = idims[2];
    out->x_size = sz;
    out->n_classes = 10;
    out->owns = 1;
    return 0;
}

int cg_npz_dataset_load(const char *path, cg_dataset *out, cg_err *err)
{
    memset(out, 0, sizeof *out);
    cg_npz z;
    if (cg_npz_read(path, &z, err) != 0)
        return -1;
    cg_array *x = NULL, *y = NULL;
    for (int i = 0; i < z.n; i++) {
        if (strcmp(z.keys[i], "x") == 0)
            x = &z.arrays[i];
        else if (strcmp(z.keys[i], "y") == 0)
            y = &z.arrays[i];
    }
    int rc = -1;
    if (!x || !y) {
        cg_fail(err, "%s: a dataset npz needs arrays 'x' and 'y'", path);
        goto out;
    }
    if (x->ndim < 2 || x->ndim > 4 || x->shape[0] < 1) {
        cg_fail(err, "%s: 'x' must have shape [N, ...] with N >= 1 and 1-3 sample dims", path);
        goto out;
    }
    if (y->ndim < 1 || y->shape[0] != x->shape[0]) {
        cg_fail(err, "%s: 'y' must have shape [N, ...] with the same N as 'x' (%lld)", path,
                (long long)x->shape[0]);
        goto out;
    }
    if (x->dtype != CG_F4 && x->dtype != CG_F8) {
        cg_fail(err, "%s: 'x' has dtype %s, expected <f4 (or <f8)", path, cg_dtype_descr(x->dtype));
        goto out;
    }
    if (cg_array_to_f32(x, path, err) != 0)
        goto out;
    size_t n = (size_t)x->shape[0];
    out->n = n;
    out->s_ndim = x->ndim - 1;
    for (int d = 1; d < x->ndim; d++)
        out->s_shape[d - 1] = x->shape[d];
    out->x_size = x->count / n;
    if (cg_dtype_is_int(y->dtype)) {
        if (y->ndim != 1) {
            cg_fail(err, "%s: integer 'y' (class indices) must have shape [N]", path);
            goto out;
        }
        out->labels = cg_try_alloc(n, sizeof(int64_t), path, err);
        if (!out->labels)
            goto out;
        int64_t maxl = -1;
        for (size_t i = 0; i < n; i++) {
            double v = cg_array_get(y, i);
            if (v < 0 || v > 1e9) {
                cg_fail(err, "%s: class index %.0f at %zu is out of range", path, v, i);
                goto out;
            }
            out->labels[i] = (int64_t)v;
            if (out->labels[i] > maxl)
                maxl = out->labels[i];
        }
        out->n_classes = (int)maxl + 1;
    } else {
        if (cg_array_to_f32(y, path, err) != 0)
            goto out;
        out->targets = y->data;
        out->t_size = y->count / n;
        y->data = NULL;
    }
    out->x = x->data;
    x->data = NULL;
    out->owns = 1;
    rc = 0;
out:
    if (rc != 0) {
        free(out->labels);
        free(out->targets);
        memset(out, 0, sizeof *out);
    }
    cg_npz_free(&z);
    return rc;
}

static int shape_is(const cg_net *net, int c, int h, int w)
{
    return (net->in_ndim == 3 && net->in_shape[0] == c && net->in_shape[1] == h &&
            net->in_shape[2] == w) ||
           (net->in_ndim == 1 && net->in_shape[0] == c * h * w);
}

int cg_dataset_check(const cg_dataset *ds, const cg_net *net, const char *what, cg_err *err)
{
    int ok = ds->x_size == net->in_size;
    if (ok && ds->s_ndim == net->in_ndim)
        for (int d = 0; d < net->in_ndim; d++)
            ok = ok && ds->s_shape[d] == net->in_shape[d];
    else if (ok) /* flattened images into a dense input */
        ok = net->in_ndim == 1;
    if (!ok) {
        char got[64], want[64];
        cg_array a = {0};
        a.ndim = ds->s_ndim;
        for (int d = 0; d < ds->s_ndim; d++)
            a.shape[d] = ds->s_shape[d];
        cg_shape_str(&a, got, sizeof got);
        a.ndim = net->in_ndim;
        for (int d = 0; d < net->in_ndim; d++)
            a.shape[d] = net->in_shape[d];
        cg_shape_str(&a, want, sizeof want);
        return cg_fail(err, "%s: samples have shape %s but network '%s' takes %s", what, got,
                       net->name, want);
    }
    if (net->loss == CG_LOSS_SOFTMAX_CE) {
        if (!ds->labels)
            return cg_fail(err, "%s: softmax cross-entropy needs integer class labels", what);
        for (size_t i = 0; i < ds->n; i++)
            if (ds->labels[i] < 0 || (uint64_t)ds->labels[i] >= net->out_size)
                return cg_fail(err, "%s: label %lld at index %zu is out of range [0, %zu)", what,
                               (long long)ds->labels[i], i, net->out_size);
    } else {
        if (ds->targets && ds->t_size != net->out_size)
            return cg_fail(err, "%s: targets have %zu values per sample, network outputs %zu",
                           what, ds->t_size, net->out_size);
        if (!ds->targets && (size_t)ds->n_classes > net->out_size)
            return cg_fail(err, "%s: %d classes do not fit one-hot into %zu outputs", what,
                           ds->n_classes, net->out_size);
    }
    return 0;
}

int cg_dataset_load(const cg_net *net, const char *dir, int split, cg_dataset *out, cg_err *err)
{
    memset(out, 0, sizeof *out);
    if (!dir) {
        if (!shape_is(net, 1, 28, 28))
            return cg_fail(err, "network '%s' has no default dataset (input is not 1x28x28); "
                                "pass --data DIR", net->name);
        dir = CG_DEFAULT_DATA_DIR;
    }
    const char *prefix = split == CG_SPLIT_TRAIN ? "train" : "t10k";
    char probe[4352], npz[4352];
    int rc;
    snprintf(probe, sizeof probe, "%s-images-idx3-ubyte", prefix);
    char p1[4352], p2[4360];
    if (cg_path_join(p1, sizeof p1, dir, probe, err) != 0)
        return -1;
    snprintf(p2, sizeof p2, "%s.gz", p1);
    if (cg_path_join(npz, sizeof npz, dir, split == CG_SPLIT_TRAIN ? "train.npz" : "test.npz",
                     err) != 0)
        return -1;
    int have_idx = access(p1, F_OK) == 0 || access(p2, F_OK) == 0;
    if (!have_idx && access(npz, F_OK) != 0)
        return cg_fail(err, "%s: no %s data: expected %s-images-idx3-ubyte.gz (+ labels) or %s",
                       dir, prefix, prefix, npz);
    if (!have_idx) {
        rc = cg_npz_dataset_load(npz, out, err);
        snprintf(probe, sizeof probe, "%s", npz);
    } else {
        rc = cg_mnist_load(dir, prefix, out, err);
        snprintf(probe, sizeof probe, "%s (%s set)", dir, prefix);
    }
    if (rc != 0)
        return -1;
    if (cg_dataset_check(out, net, probe, err) != 0) {
        cg_dataset_free(out);
        return -1;
    }
    return 0;
}

void cg_dataset_split(const cg_dataset *all, size_t n_tail, cg_dataset *head, cg_dataset *tail)
{
    if (n_tail > all->n)
        n_tail = all->n;
    size_t nh = all->n - n_tail;
    *head = *all;
    *tail = *all;
    head->owns = tail->owns = 0;
    head->n = nh;
    tail->n = n_tail;
    tail->x = all->x ? all->x + nh * all->x_size : NULL;
    tail->labels = all->labels ? all->labels + nh : NULL;
    tail->targets = all->targets ? all->targets + nh * all->t_size : NULL;
}

void cg_dataset_free(cg_dataset *ds)
{
    if (ds && ds->owns) {
        free(ds->x);
        free(ds->labels);
        free(ds->targets);
    }
    if (ds)
        memset(ds, 0, sizeof *ds);
}

void cg_dataset_gather(const cg_dataset *ds, const size_t *idx, size_t start, int n, float *xb,
                       int64_t *yb, float *tb, size_t out_size)
{
    for (int i = 0; i < n; i++) {
        size_t s = idx ? idx[start + (size_t)i] : start + (size_t)i;
        memcpy(xb + (size_t)i * ds->x_size, ds->x + s * ds->x_size, ds->x_size * sizeof(float));
        if (yb && ds->labels)
            yb[i] = ds->labels[s];
        if (tb) {
            float *t = tb + (size_t)i * out_size;
            if (ds->targets) {
                memcpy(t, ds->targets + s * ds->t_size, out_size * sizeof(float));
            } else {
                memset(t, 0, out_size * sizeof(float));
                if (ds->labels && (uint64_t)ds->labels[s] < out_size)
                    t[ds->labels[s]] = 1.0f;
            }
        }
    }
}
