#include "data.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* Read `bytes` bytes into a buffer of `alloc` >= bytes bytes, growing it as data arrives so
 * that a header claiming gigabytes in a tiny file costs no more than the file. Returns the
 * buffer (NULL with the message set on a read or allocation error); *got < bytes: EOF. */
static void *gz_read_alloc(gzFile g, const char *path, size_t bytes, size_t alloc, size_t *got,
                           cg_err *err)
{
    size_t cap = alloc < (1u << 20) ? alloc : (1u << 20), have = 0;
    unsigned char *buf = cg_try_alloc(cap ? cap : 1, 1, path, err);
    while (buf) {
        size_t want = (cap < bytes ? cap : bytes) - have;
        long long r = gz_read_full(g, path, buf + have, want, err);
        if (r < 0)
            break;
        have += (size_t)r;
        if ((size_t)r < want || have == bytes) {
            if (have == bytes && cap < alloc) {
                unsigned char *t = realloc(buf, alloc);
                if (!t) {
                    cg_fail(err, "%s: out of memory (%zu bytes)", path, alloc);
                    break;
                }
                buf = t;
            }
            *got = have;
            return buf;
        }
        cap = cap > alloc / 2 ? alloc : cap * 2;
        unsigned char *t = realloc(buf, cap);
        if (!t) {
            cg_fail(err, "%s: out of memory (%zu bytes)", path, cap);
            break;
        }
        buf = t;
    }
    free(buf);
    return NULL;
}

/* A sample (the product of the dimensions after the first) must have `sample` values
 * (0: any): checked from the header, before the data is read and inflated. */
static int idx_sample_ok(const char *path, int ndim, const int64_t *dims, size_t sample, cg_err *err)
{
    size_t per = 1;
    for (int d = 1; d < ndim; d++)
        per *= (size_t)dims[d]; /* each <= 65536, at most 3 of them */
    if (sample && per != sample)
        return cg_fail(err, "%s: the IDX header gives samples of %zu values, the network takes %zu (refused "
                            "before reading the data)", path, per, sample);
    return 0;
}

static int idx_read(const char *path, int ndim, int64_t *dims, uint8_t **data, size_t sample, cg_err *err);

int cg_idx_read(const char *path, int ndim, int64_t *dims, uint8_t **data, cg_err *err)
{
    return idx_read(path, ndim, dims, data, 0, err);
}

static int idx_read(const char *path, int ndim, int64_t *dims, uint8_t **data, size_t sample, cg_err *err)
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
    if (idx_sample_ok(path, ndim, dims, sample, err) != 0)
        goto fail;
    size_t got = 0;
    uint8_t *buf = gz_read_alloc(g, path, total, total, &got, err);
    if (!buf)
        goto fail;
    r = (long long)got;
    if ((size_t)r < total) {
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

static int mnist_load(const char *dir, const char *prefix, size_t sample, cg_dataset *out, cg_err *err);

int cg_mnist_load(const char *dir, const char *prefix, cg_dataset *out, cg_err *err)
{
    return mnist_load(dir, prefix, 0, out, err);
}

static int mnist_load(const char *dir, const char *prefix, size_t sample, cg_dataset *out, cg_err *err)
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
    if (idx_read(ipath, 3, idims, &img, sample, err) != 0)
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
        out->x[i] = img[i] / 255.0f;
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

static int npz_dataset_load(const char *path, size_t sample, cg_dataset *out, cg_err *err);

int cg_npz_dataset_load(const char *path, cg_dataset *out, cg_err *err)
{
    return npz_dataset_load(path, 0, out, err);
}

static int npz_dataset_load(const char *path, size_t sample, cg_dataset *out, cg_err *err)
{
    memset(out, 0, sizeof *out);
    cg_npz z;
    if (cg_npz_read_expect(path, "x", sample, 0, &z, err) != 0)
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
    } else {
        char xn[4200], yn[4200];
        snprintf(xn, sizeof xn, "%s:x", path);
        snprintf(yn, sizeof yn, "%s:y", path);
        rc = cg_dataset_from_arrays(x, y, xn, yn, out, err);
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

/* Sample shapes agree ignoring leading 1s ([28, 28] is [1, 28, 28]). */
static int same_shape(const cg_dataset *ds, const cg_net *net)
{
    int a = 0, b = 0;
    while (a < ds->s_ndim - 1 && ds->s_shape[a] == 1)
        a++;
    while (b < net->in_ndim - 1 && net->in_shape[b] == 1)
        b++;
    if (ds->s_ndim - a != net->in_ndim - b)
        return 0;
    for (; a < ds->s_ndim; a++, b++)
        if (ds->s_shape[a] != net->in_shape[b])
            return 0;
    return 1;
}

int cg_dataset_check_files(const cg_dataset *ds, const cg_net *net, const char *xwhat,
                           const char *ywhat, cg_err *err)
{
    /* same size, and the same shape unless one side is flat (CSV rows, dense inputs) */
    int ok = ds->x_size == net->in_size &&
             (ds->s_ndim == 1 || net->in_ndim == 1 || same_shape(ds, net));
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
        return cg_fail(err, "%s: samples have shape %s but network '%s' takes %s", xwhat, got,
                       net->name, want);
    }
    if (net->loss == CG_LOSS_SOFTMAX_CE) {
        if (!ds->labels)
            return cg_fail(err, "%s: softmax cross-entropy needs integer class labels, got float "
                                "targets", ywhat);
        for (size_t i = 0; i < ds->n; i++)
            if (ds->labels[i] < 0 || (uint64_t)ds->labels[i] >= net->out_size)
                return cg_fail(err, "%s: label %lld at index %zu is out of range [0, %zu)", ywhat,
                               (long long)ds->labels[i], i, net->out_size);
    } else {
        if (ds->targets && ds->t_size != net->out_size)
            return cg_fail(err, "%s: targets have %zu values per sample, network outputs %zu",
                           ywhat, ds->t_size, net->out_size);
        if (!ds->targets && (size_t)ds->n_classes > net->out_size)
            return cg_fail(err, "%s: %d classes do not fit one-hot into %zu outputs", ywhat,
                           ds->n_classes, net->out_size);
    }
    return 0;
}

int cg_dataset_check(const cg_dataset *ds, const cg_net *net, const char *what, cg_err *err)
{
    return cg_dataset_check_files(ds, net, what, what, err);
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
        rc = npz_dataset_load(npz, net->in_size, out, err);
        snprintf(probe, sizeof probe, "%s", npz);
    } else {
        rc = mnist_load(dir, prefix, net->in_size, out, err);
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

/* ===================================================================================
 * Generic formats: IDX of any element type and rank, .npy pairs, CSV; normalization.
 * =================================================================================== */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int idx_read_array(const char *path, size_t sample, cg_array *out, cg_err *err);

int cg_idx_read_array(const char *path, cg_array *out, cg_err *err)
{
    return idx_read_array(path, 0, out, err);
}

static int idx_read_array(const char *path, size_t sample, cg_array *out, cg_err *err)
{
    memset(out, 0, sizeof *out);
    FILE *probe = cg_fopen(path, "rb", err);
    if (!probe)
        return -1;
    fclose(probe);
    gzFile g = gzopen(path, "rb");
    if (!g)
        return cg_fail(err, "%s: cannot open: %s", path, errno ? strerror(errno) : "gzopen failed");
    unsigned char hdr[4 + 4 * 4];
    long long r = gz_read_full(g, path, hdr, 4, err);
    int dtype = -1, esize = 0, ndim = 0;
    void *buf = NULL;
    if (r < 0)
        goto fail;
    if (r < 4) {
        cg_fail(err, "%s: truncated IDX header (%lld of 4 bytes)", path, r);
        goto fail;
    }
    switch (hdr[2]) {
    case 0x08: dtype = CG_U1, esize = 1; break;
    case 0x09: dtype = CG_I1, esize = 1; break;
    case 0x0B: dtype = CG_I4, esize = 2; break; /* int16, widened */
    case 0x0C: dtype = CG_I4, esize = 4; break;
    case 0x0D: dtype = CG_F4, esize = 4; break;
    case 0x0E: dtype = CG_F8, esize = 8; break;
    }
    ndim = hdr[3];
    if (hdr[0] != 0 || hdr[1] != 0 || dtype < 0 || ndim < 1 || ndim > 4) {
        cg_fail(err, "%s: bad IDX magic 0x%08x (expected 0x0000TTDD: type 08/09/0B/0C/0D/0E, "
                     "1-4 dims)", path, be32(hdr));
        goto fail;
    }
    r = gz_read_full(g, path, hdr + 4, 4 * (size_t)ndim, err);
    if (r < 0)
        goto fail;
    if (r < 4 * ndim) {
        cg_fail(err, "%s: truncated IDX header (%lld of %d bytes)", path, r + 4, 4 + 4 * ndim);
        goto fail;
    }
    size_t total = 1;
    for (int d = 0; d < ndim; d++) {
        uint32_t v = be32(hdr + 4 + 4 * d);
        if (v == 0 || v > (d == 0 ? 100000000u : 65536u)) {
            cg_fail(err, "%s: implausible IDX dimension %d = %u", path, d, v);
            goto fail;
        }
        out->shape[d] = v;
        if (!cg_mul_size(total, v, &total)) {
            cg_fail(err, "%s: IDX dimensions overflow", path);
            goto fail;
        }
    }
    if (idx_sample_ok(path, ndim, out->shape, sample, err) != 0)
        goto fail;
    size_t bytes;
    if (!cg_mul_size(total, (size_t)esize, &bytes)) {
        cg_fail(err, "%s: IDX dimensions overflow", path);
        goto fail;
    }
    size_t got = 0, alloc;
    if (!cg_mul_size(total, esize == 2 ? 4 : (size_t)esize, &alloc)) {
        cg_fail(err, "%s: IDX dimensions overflow", path);
        goto fail;
    }
    buf = gz_read_alloc(g, path, bytes, alloc, &got, err);
    if (!buf)
        goto fail;
    r = (long long)got;
    if ((size_t)r < bytes) {
        cg_fail(err, "%s: truncated IDX data (%lld of %zu bytes)", path, r, bytes);
        goto fail;
    }
    unsigned char extra;
    long long e = gz_read_full(g, path, &extra, 1, err);
    if (e != 0) {
        if (e > 0)
            cg_fail(err, "%s: unexpected trailing data after %zu bytes of IDX data", path, bytes);
        goto fail;
    }
    gzclose(g);
    /* big-endian -> host */
    unsigned char *b = buf;
    if (esize == 2) {
        int32_t *w = buf;
        for (size_t i = total; i-- > 0;)
            w[i] = (int16_t)(uint16_t)(b[2 * i] << 8 | b[2 * i + 1]);
    } else if (esize == 4 || esize == 8) {
        for (size_t i = 0; i < total; i++) {
            unsigned char *q = b + i * (size_t)esize;
            for (int k = 0; k < esize / 2; k++) {
                unsigned char t = q[k];
                q[k] = q[esize - 1 - k];
                q[esize - 1 - k] = t;
            }
        }
    }
    out->dtype = dtype;
    out->ndim = ndim;
    out->count = total;
    out->data = buf;
    return 0;
fail:
    free(buf);
    gzclose(g);
    memset(out, 0, sizeof *out);
    return -1;
}

static int array_file_read(const char *path, size_t sample, cg_array *out, cg_err *err);

int cg_array_file_read(const char *path, cg_array *out, cg_err *err)
{
    return array_file_read(path, 0, out, err);
}

static int array_file_read(const char *path, size_t sample, cg_array *out, cg_err *err)
{
    memset(out, 0, sizeof *out);
    FILE *f = cg_fopen(path, "rb", err);
    if (!f)
        return -1;
    unsigned char m[6] = {0};
    size_t got = fread(m, 1, sizeof m, f);
    fclose(f);
    if (got >= 6 && memcmp(m, "\x93NUMPY", 6) == 0)
        return cg_npy_read(path, out, err);
    if ((got >= 2 && m[0] == 0x1f && m[1] == 0x8b) || (got >= 4 && m[0] == 0 && m[1] == 0))
        return idx_read_array(path, sample, out, err);
    if (got < 4)
        return cg_fail(err, "%s: file too short (%zu bytes) for .npy or IDX data", path, got);
    return cg_fail(err, "%s: not a .npy or IDX file (magic %02x %02x %02x %02x)", path, m[0], m[1],
                   m[2], m[3]);
}

int cg_dataset_from_arrays(cg_array *x, cg_array *y, const char *xpath, const char *ypath,
                           cg_dataset *out, cg_err *err)
{
    memset(out, 0, sizeof *out);
    char s1[128], s2[128];
    if (x->ndim < 2 || x->ndim > 4 || x->shape[0] < 1)
        return cg_fail(err, "%s: inputs have shape %s; expected [N, ...] with N >= 1 and 1-3 "
                            "dims a sample", xpath, cg_shape_str(x, s1, sizeof s1));
    if (y->ndim < 1 || y->shape[0] != x->shape[0])
        return cg_fail(err, "%s: labels/targets have shape %s, but %s has %lld samples", ypath,
                       cg_shape_str(y, s2, sizeof s2), xpath, (long long)x->shape[0]);
    size_t n = (size_t)x->shape[0];
    int scale = x->dtype == CG_U1;
    if (!scale && x->dtype != CG_F4 && x->dtype != CG_F8)
        return cg_fail(err, "%s: inputs have dtype %s; expected float32 (<f4), float64 or uint8 "
                            "(scaled to [0, 1])", xpath, cg_dtype_descr(x->dtype));
    if (cg_array_to_f32(x, xpath, err) != 0)
        return -1;
    if (scale)
        for (size_t i = 0; i < x->count; i++)
            ((float *)x->data)[i] /= 255.0f;
    out->n = n;
    out->s_ndim = x->ndim - 1;
    for (int d = 1; d < x->ndim; d++)
        out->s_shape[d - 1] = x->shape[d];
    out->x_size = x->count / n;
    if (cg_dtype_is_int(y->dtype)) {
        if (y->ndim != 1)
            return cg_fail(err, "%s: integer labels must have shape [N], got %s", ypath,
                           cg_shape_str(y, s2, sizeof s2));
        out->labels = cg_try_alloc(n, sizeof(int64_t), ypath, err);
        if (!out->labels)
            return -1;
        int64_t maxl = -1;
        for (size_t i = 0; i < n; i++) {
            double v = cg_array_get(y, i);
            if (v < 0 || v > 1e9) {
                cg_fail(err, "%s: label %.0f at index %zu is out of range (%s)", ypath, v, i,
                        v < 0 ? "class labels count from 0" : "more than 10^9 classes");
                free(out->labels);
                memset(out, 0, sizeof *out);
                return -1;
            }
            out->labels[i] = (int64_t)v;
            if (out->labels[i] > maxl)
                maxl = out->labels[i];
        }
        out->n_classes = (int)maxl + 1;
    } else {
        if (cg_array_to_f32(y, ypath, err) != 0)
            return -1;
        out->targets = y->data;
        out->t_size = y->count / n;
        y->data = NULL;
    }
    out->x = x->data;
    x->data = NULL;
    out->owns = 1;
    return 0;
}

int cg_xy_load(const char *xpath, const char *ypath, cg_dataset *out, cg_err *err)
{
    return cg_xy_load_expect(xpath, ypath, 0, out, err);
}

int cg_xy_load_expect(const char *xpath, const char *ypath, size_t sample, cg_dataset *out, cg_err *err)
{
    memset(out, 0, sizeof *out);
    cg_array x, y;
    if (array_file_read(xpath, sample, &x, err) != 0)
        return -1;
    if (cg_array_file_read(ypath, &y, err) != 0) {
        cg_array_free(&x);
        return -1;
    }
    int rc = cg_dataset_from_arrays(&x, &y, xpath, ypath, out, err);
    cg_array_free(&x);
    cg_array_free(&y);
    return rc;
}

/* ---- CSV: one sample a line, label first, then the features; optional header line ---- */
/* want == 0: a label, then the features (the training CSV); want > 0: rows of want features,
 * optionally after a label column (told apart by the field count) */
static int csv_read(const char *path, size_t want, cg_dataset *out, cg_err *err)
{
    memset(out, 0, sizeof *out);
    unsigned char *buf;
    size_t len;
    if (cg_read_file(path, &buf, &len, err) != 0)
        return -1;
    char *s = (char *)buf;
    /* NUL-terminate (cg_read_file's buffer may be exactly full) */
    char *t = realloc(s, len + 1);
    if (!t) {
        free(s);
        return cg_fail(err, "%s: out of memory", path);
    }
    s = t;
    s[len] = 0;
    if (memchr(s, 0, len))
        goto binary;
    for (size_t i = 0; i < len; i++) /* CRLF: the CR is trailing white space */
        if (s[i] == '\r')
            s[i] = ' ';
    /* pass 1: count rows and fields of the first data row; pass 2: parse */
    size_t rows = 0, fields = 0, line = 0, cap_rows = 0;
    int header = 0; /* the header's line number, 0: none */
    float *x = NULL;
    int64_t *lab = NULL;
    double maxv = 0;
    int all_int = 1, rc = -1, has_label = 1;
    for (int pass = 0; pass < 2; pass++) {
        char *p = s;
        line = 0;
        size_t r = 0;
        while (*p) {
            char *eol = strchr(p, '\n');
            char *next = eol ? eol + 1 : p + strlen(p);
            line++;
            if (eol)
                *eol = 0;
            char *q = p;
            while (*q == ' ' || *q == '\t')
                q++;
            if (!*q) { /* blank line */
                if (eol)
                    *eol = '\n';
                p = next;
                continue;
            }
            if (pass == 0 && r == 0 && !header) {
                char *e;
                strtod(q, &e);
                if (e == q) { /* first field is not a number: a header line */
                    header = (int)line;
                    if (eol)
                        *eol = '\n';
                    p = next;
                    continue;
                }
            }
            if (pass == 1 && header && line == (size_t)header) {
                if (eol)
                    *eol = '\n';
                p = next;
                continue;
            }
            size_t k = 0;
            char *f = q;
            for (;;) {
                char *e;
                errno = 0;
                double v = strtod(f, &e);
                /* decimal only, as the spec's numbers: strtod would also take 0x3, inf, 1p4 */
                int decimal = e != f && strspn(f, " \t") + strspn(f + strspn(f, " \t"), "0123456789+-.eE") >= (size_t)(e - f);
                while (*e == ' ' || *e == '\t')
                    e++;
                if (!decimal || e == f || (*e && *e != ',') || !isfinite(v)) {
                    char tok[40];
                    size_t tl = strcspn(f, ",");
                    snprintf(tok, sizeof tok, "%.*s", (int)(tl < 32 ? tl : 32), f);
                    cg_fail(err, "%s:%zu: field %zu: '%s' is not a number", path, line, k + 1,
                            tok);
                    goto out;
                }
                if (pass == 1) {
                    if (k == 0 && has_label) {
                        if (v < 0 || v != floor(v) || v > 1e9) {
                            cg_fail(err, "%s:%zu: label %g is not a non-negative integer class "
                                         "index", path, line, v);
                            goto out;
                        }
                        lab[r] = (int64_t)v;
                    } else if (k < fields) {
                        x[r * (fields - has_label) + (k - has_label)] = (float)v;
                        if (v != floor(v) || v < 0 || v > 255)
                            all_int = 0;
                        if (v > maxv)
                            maxv = v;
                    }
                }
                k++;
                if (!*e)
                    break;
                f = e + 1;
            }
            if (r == 0 && pass == 0)
                fields = k;
            if (k != fields) {
                cg_fail(err, "%s:%zu: %zu fields, but the first data line has %zu", path, line, k,
                        fields);
                goto out;
            }
            if (want == 0 && fields < 2) {
                cg_fail(err, "%s:%zu: need a label and at least one feature", path, line);
                goto out;
            }
            r++;
            if (eol)
                *eol = '\n';
            p = next;
        }
        if (pass == 0) {
            rows = r;
            if (rows == 0) {
                cg_fail(err, "%s: no data lines", path);
                goto out;
            }
            if (want > 0 && fields != want && fields != want + 1) {
                cg_fail(err, "%s: %zu fields a line; expected %zu features, or a label and %zu "
                             "features", path, fields, want, want);
                goto out;
            }
            has_label = want == 0 || fields == want + 1;
            cap_rows = rows;
            x = cg_try_alloc(rows * (fields - (size_t)has_label), sizeof(float), path, err);
            lab = cg_try_alloc(rows, sizeof(int64_t), path, err);
            if (!x || !lab)
                goto out;
        }
    }
    (void)cap_rows;
    const size_t nf = fields - (size_t)has_label;
    if (all_int && maxv > 1) { /* 0..255 integers: uint8 data, scaled as such */
        for (size_t i = 0; i < rows * nf; i++)
            x[i] /= 255.0f;
        out->scaled_u8 = 1;
    }
    int64_t maxl = 0;
    for (size_t i = 0; has_label && i < rows; i++)
        if (lab[i] > maxl)
            maxl = lab[i];
    out->n = rows;
    out->s_ndim = 1;
    out->s_shape[0] = (int64_t)nf;
    out->x_size = nf;
    out->x = x;
    out->labels = has_label ? lab : NULL;
    out->n_classes = has_label ? (int)maxl + 1 : 0;
    out->owns = 1;
    x = NULL;
    if (has_label)
        lab = NULL;
    rc = 0;
out:
    free(x);
    free(lab);
    free(s);
    return rc;
binary:
    free(s);
    return cg_fail(err, "%s: not a CSV text file (contains NUL bytes)", path);
}

int cg_csv_load(const char *path, cg_dataset *out, cg_err *err)
{
    return csv_read(path, 0, out, err);
}

int cg_csv_load_inputs(const char *path, size_t n_features, cg_dataset *out, cg_err *err)
{
    return csv_read(path, n_features ? n_features : 1, out, err);
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

int cg_data_path_load(const cg_net *net, const char *path, int split, cg_dataset *out,
                      cg_err *err)
{
    memset(out, 0, sizeof *out);
    struct stat st;
    if (path && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return cg_dataset_load(net, path, split, out, err);
    if (!path)
        return cg_dataset_load(net, NULL, split, out, err);
    int rc;
    if (ends_with(path, ".csv") || ends_with(path, ".CSV") || ends_with(path, ".txt"))
        rc = cg_csv_load(path, out, err);
    else if (ends_with(path, ".npz"))
        rc = npz_dataset_load(path, net->in_size, out, err);
    else {
        FILE *f = cg_fopen(path, "rb", err);
        if (!f)
            return -1;
        fclose(f);
        return cg_fail(err, "%s: unknown data file type (expected a directory, .npz or .csv; "
                            "use --data-x/--data-y for .npy or IDX pairs)", path);
    }
    if (rc != 0)
        return -1;
    if (cg_dataset_check_files(out, net, path, path, err) != 0) {
        cg_dataset_free(out);
        return -1;
    }
    return 0;
}

/* ---- per-channel normalization ---- */
size_t cg_norm_channels(const cg_net *net)
{
    return net->in_ndim >= 2 ? (size_t)net->in_shape[0] : net->in_size;
}

void cg_norm_compute(const cg_net *net, const cg_dataset *ds, float *mean, float *std)
{
    size_t C = cg_norm_channels(net), inner = net->in_size / C;
    for (size_t c = 0; c < C; c++) {
        double s = 0, s2 = 0;
        for (size_t i = 0; i < ds->n; i++) {
            const float *p = ds->x + i * ds->x_size + c * inner;
            for (size_t k = 0; k < inner; k++)
                s += p[k];
        }
        double cnt = (double)ds->n * (double)inner;
        double m = cnt > 0 ? s / cnt : 0.0;
        for (size_t i = 0; i < ds->n; i++) {
            const float *p = ds->x + i * ds->x_size + c * inner;
            for (size_t k = 0; k < inner; k++)
                s2 += ((double)p[k] - m) * ((double)p[k] - m);
        }
        double sd = cnt > 0 ? sqrt(s2 / cnt) : 1.0;
        mean[c] = (float)m;
        std[c] = sd > 1e-8 ? (float)sd : 1.0f;
    }
}

void cg_norm_apply(const cg_net *net, float *x, size_t n, const float *mean, const float *std)
{
    size_t C = cg_norm_channels(net), inner = net->in_size / C;
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < C; c++) {
            float *p = x + (i * C + c) * inner;
            float m = mean[c], is = 1.0f / std[c];
            for (size_t k = 0; k < inner; k++)
                p[k] = (p[k] - m) * is;
        }
}

int cg_norm_save(const cg_net *net, const char *path, const float *mean, const float *std,
                 cg_err *err)
{
    size_t C = cg_norm_channels(net);
    cg_array a[2] = {{.dtype = CG_F4, .ndim = 1, .shape = {(int64_t)C}, .count = C,
                      .data = (void *)mean},
                     {.dtype = CG_F4, .ndim = 1, .shape = {(int64_t)C}, .count = C,
                      .data = (void *)std}};
    const char *keys[2] = {"mean", "std"};
    return cg_npz_write(path, 2, keys, a, err);
}

int cg_norm_load(const cg_net *net, const char *path, float *mean, float *std, cg_err *err)
{
    cg_npz z;
    if (cg_npz_read(path, &z, err) != 0)
        return -1;
    size_t C = cg_norm_channels(net);
    const cg_array *m = cg_npz_get(&z, "mean"), *s = cg_npz_get(&z, "std");
    int rc = -1;
    if (!m || !s)
        cg_fail(err, "%s: normalization file needs arrays 'mean' and 'std'", path);
    else if (m->count != C || s->count != C)
        cg_fail(err, "%s: normalization has %zu channels, network '%s' has %zu", path, m->count,
                net->name, C);
    else {
        rc = 0;
        for (size_t c = 0; c < C; c++) {
            mean[c] = (float)cg_array_get(m, c);
            std[c] = (float)cg_array_get(s, c);
            if (!isfinite(mean[c]) || !(std[c] > 0)) {
                rc = cg_fail(err, "%s: channel %zu has mean %g, std %g (std must be > 0)", path,
                             c, mean[c], std[c]);
                break;
            }
        }
    }
    cg_npz_free(&z);
    return rc;
}
