#include "npy.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

/* The .npy payload is little-endian; this runtime assumes a little-endian host. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cnngen runtime: .npy I/O assumes a little-endian host"
#endif

static const struct {
    const char *descr;
    size_t size;
} dtypes[] = {
    [CG_F4] = {"<f4", 4}, [CG_F8] = {"<f8", 8}, [CG_I8] = {"<i8", 8},
    [CG_I4] = {"<i4", 4}, [CG_U1] = {"|u1", 1}, [CG_I1] = {"|i1", 1},
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

size_t cg_dtype_size(int dtype) { return dtype >= 0 && dtype < N_DTYPES ? dtypes[dtype].size : 0; }
const char *cg_dtype_descr(int dtype)
{
    return dtype >= 0 && dtype < N_DTYPES ? dtypes[dtype].descr : "?";
}
int cg_dtype_is_int(int dtype) { return dtype == CG_I8 || dtype == CG_I4 || dtype == CG_U1 || dtype == CG_I1; }

const char *cg_shape_str(const cg_array *a, char *buf, size_t cap)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "(");
    for (int i = 0; i < a->ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, i ? ", " : "", a->shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, a->ndim == 1 ? ",)" : ")");
    return buf;
}

void cg_array_free(cg_array *a)
{
    if (!a)
        return;
    free(a->data);
    a->data = NULL;
    a->count = 0;
}

static int shape_count(int ndim, const int64_t *shape, size_t *count)
{
    size_t c = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX || !cg_mul_size(c, (size_t)shape[i], &c))
            return 0;
    }
    *count = c;
    return 1;
}

int cg_array_alloc(cg_array *a, int dtype, int ndim, const int64_t *shape, cg_err *err)
{
    memset(a, 0, sizeof *a);
    if (ndim < 0 || ndim > CG_NPY_MAXDIM || cg_dtype_size(dtype) == 0)
        return cg_fail(err, "array: bad dtype or rank");
    a->dtype = dtype;
    a->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        a->shape[i] = shape[i];
    if (!shape_count(ndim, shape, &a->count))
        return cg_fail(err, "array: shape too large");
    a->data = cg_try_alloc(a->count, cg_dtype_size(dtype), "array", err);
    if (!a->data)
        return -1;
    memset(a->data, 0, a->count * cg_dtype_size(dtype));
    return 0;
}

double cg_array_get(const cg_array *a, size_t i)
{
    switch (a->dtype) {
    case CG_F4: return ((const float *)a->data)[i];
    case CG_F8: return ((const double *)a->data)[i];
    case CG_I8: return (double)((const int64_t *)a->data)[i];
    case CG_I4: return ((const int32_t *)a->data)[i];
    case CG_U1: return ((const uint8_t *)a->data)[i];
    case CG_I1: return ((const int8_t *)a->data)[i];
    }
    return 0;
}

int cg_array_to_f32(cg_array *a, const char *what, cg_err *err)
{
    if (a->dtype == CG_F4)
        return 0;
    float *f = cg_try_alloc(a->count, sizeof(float), what, err);
    if (!f)
        return -1;
    for (size_t i = 0; i < a->count; i++)
        f[i] = (float)cg_array_get(a, i);
    free(a->data);
    a->data = f;
    a->dtype = CG_F4;
    return 0;
}

/* ---- header parsing ---- */
typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int parse_str(cursor *c, char *out, size_t cap)
{
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return 0;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (n + 1 >= cap)
            return 0;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return 0;
    c->p++;
    out[n] = 0;
    return 1;
}

static int parse_word(cursor *c, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
        return 0;
    c->p += n;
    return 1;
}

static int parse_shape(cursor *c, cg_array *a)
{
    if (c->p >= c->end || *c->p != '(')
        return 0;
    c->p++;
    a->ndim = 0;
    for (;;) {
        skip_ws(c);
        if (c->p < c->end && *c->p == ')') {
            c->p++;
            return 1;
        }
        if (c->p >= c->end || !isdigit((unsigned char)*c->p))
            return 0;
        int64_t v = 0;
        while (c->p < c->end && isdigit((unsigned char)*c->p)) {
            if (v > (INT64_MAX - 9) / 10)
                return 0;
            v = v * 10 + (*c->p++ - '0');
        }
        if (c->p < c->end && *c->p == 'L')
            c->p++;
        if (a->ndim >= CG_NPY_MAXDIM)
            return 0;
        a->shape[a->ndim++] = v;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == ')') {
            c->p++;
            return 1;
        }
        return 0;
    }
}

static int le32(const unsigned char *b) { return b[0] | b[1] << 8 | b[2] << 16 | (int)((unsigned)b[3] << 24); }

/* The header of a .npy in buf[0, len): dtype, shape and count into *out (no data), the
 * offset of the data into *data_at. */
static int npy_header(const unsigned char *b, size_t len, const char *what, cg_array *out, size_t *data_at,
                      cg_err *err)
{
    memset(out, 0, sizeof *out);
    if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return cg_fail(err, "%s: not a .npy file (bad magic)", what);
    int major = b[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return cg_fail(err, "%s: truncated .npy header", what);
        hlen = (size_t)(unsigned)le32(b + 8);
        hstart = 12;
    } else {
        return cg_fail(err, "%s: unsupported .npy format version %d.%d", what, major, b[7]);
    }
    if (hlen > len - hstart)
        return cg_fail(err, "%s: truncated .npy header (header claims %zu bytes, file has %zu)",
                       what, hlen, len - hstart);
    cursor c = {(const char *)b + hstart, (const char *)b + hstart + hlen};
    char key[64], descr[64] = "";
    int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0;
    cg_array a;
    memset(&a, 0, sizeof a);
    skip_ws(&c);
    if (c.p >= c.end || *c.p++ != '{')
        return cg_fail(err, "%s: malformed .npy header (expected '{')", what);
    for (;;) {
        skip_ws(&c);
        if (c.p < c.end && *c.p == '}') {
            c.p++;
            break;
        }
        if (!parse_str(&c, key, sizeof key))
            return cg_fail(err, "%s: malformed .npy header (expected a quoted key)", what);
        skip_ws(&c);
        if (c.p >= c.end || *c.p++ != ':')
            return cg_fail(err, "%s: malformed .npy header (expected ':' after '%s')", what, key);
        skip_ws(&c);
        if (strcmp(key, "descr") == 0) {
            if (!parse_str(&c, descr, sizeof descr))
                return cg_fail(err, "%s: unsupported dtype (structured or non-string descr)",
                               what);
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (parse_word(&c, "True"))
                fortran = 1;
            else if (parse_word(&c, "False"))
                fortran = 0;
            else
                return cg_fail(err, "%s: malformed .npy header (fortran_order must be True/False)",
                               what);
            have_fortran = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (!parse_shape(&c, &a))
                return cg_fail(err, "%s: malformed .npy header (bad shape tuple, or more than %d dims)",
                               what, CG_NPY_MAXDIM);
            have_shape = 1;
        } else {
            return cg_fail(err, "%s: malformed .npy header (unexpected key '%s')", what, key);
        }
        skip_ws(&c);
        if (c.p < c.end && *c.p == ',') {
            c.p++;
            continue;
        }
        if (c.p < c.end && *c.p == '}') {
            c.p++;
            break;
        }
        return cg_fail(err, "%s: malformed .npy header (expected ',' or '}')", what);
    }
    skip_ws(&c);
    if (c.p != c.end)
        return cg_fail(err, "%s: malformed .npy header (trailing characters)", what);
    if (!have_descr || !have_fortran || !have_shape)
        return cg_fail(err, "%s: malformed .npy header (missing %s)", what,
                       !have_descr ? "'descr'" : !have_fortran ? "'fortran_order'" : "'shape'");
    if (fortran)
        return cg_fail(err, "%s: fortran_order=True arrays are not supported (save C-contiguous: "
                            "np.ascontiguousarray)", what);
    a.dtype = -1;
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(descr, dtypes[i].descr) == 0)
            a.dtype = i;
    if (strcmp(descr, "<u1") == 0 || strcmp(descr, "u1") == 0)
        a.dtype = CG_U1;
    if (strcmp(descr, "<i1") == 0 || strcmp(descr, "i1") == 0)
        a.dtype = CG_I1;
    if (a.dtype < 0)
        return cg_fail(err, "%s: unsupported dtype '%s' (supported: <f4 <f8 <i8 <i4 |u1 |i1)", what,
                       descr);
    if (!shape_count(a.ndim, a.shape, &a.count))
        return cg_fail(err, "%s: shape too large", what);
    size_t bytes;
    if (!cg_mul_size(a.count, cg_dtype_size(a.dtype), &bytes))
        return cg_fail(err, "%s: shape too large", what);
    *out = a;
    *data_at = hstart + hlen;
    return 0;
}

int cg_npy_parse(const void *buf, size_t len, const char *what, cg_array *out, cg_err *err)
{
    const unsigned char *b = buf;
    memset(out, 0, sizeof *out);
    cg_array a;
    size_t at, bytes;
    if (npy_header(b, len, what, &a, &at, err) != 0)
        return -1;
    cg_mul_size(a.count, cg_dtype_size(a.dtype), &bytes); /* checked by npy_header */
    size_t have = len - at;
    if (have < bytes)
        return cg_fail(err, "%s: truncated data (shape needs %zu bytes, file has %zu)", what, bytes,
                       have);
    if (have > bytes)
        return cg_fail(err, "%s: %zu unexpected trailing bytes after the array data", what,
                       have - bytes);
    a.data = cg_try_alloc(bytes ? bytes : 1, 1, what, err);
    if (!a.data)
        return -1;
    memcpy(a.data, b + at, bytes);
    *out = a;
    return 0;
}

int cg_npy_encode(const cg_array *a, unsigned char **buf, size_t *len, cg_err *err)
{
    char hdr[512];
    size_t n = 0;
    size_t esz = cg_dtype_size(a->dtype), bytes, count;
    if (!esz || a->ndim < 0 || a->ndim > CG_NPY_MAXDIM)
        return cg_fail(err, "npy encode: bad dtype or rank");
    if (!shape_count(a->ndim, a->shape, &count) || count != a->count ||
        !cg_mul_size(count, esz, &bytes))
        return cg_fail(err, "npy encode: shape does not match element count");
    n += (size_t)snprintf(hdr + n, sizeof hdr - n, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                          cg_dtype_descr(a->dtype));
    for (int i = 0; i < a->ndim; i++)
        n += (size_t)snprintf(hdr + n, sizeof hdr - n, "%s%" PRId64, i ? ", " : "", a->shape[i]);
    n += (size_t)snprintf(hdr + n, sizeof hdr - n, "%s), }", a->ndim == 1 ? "," : "");
    /* Pad with spaces so that the data starts at a multiple of 64, end with '\n'. */
    size_t pre = 10, total = pre + n + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = n + pad + 1;
    size_t out_len = pre + hlen + bytes;
    if (out_len < bytes)
        return cg_fail(err, "npy encode: array too large");
    unsigned char *o = cg_try_alloc(out_len, 1, "npy encode", err);
    if (!o)
        return -1;
    memcpy(o, "\x93NUMPY\x01\x00", 8);
    o[8] = (unsigned char)(hlen & 0xff);
    o[9] = (unsigned char)(hlen >> 8);
    memcpy(o + pre, hdr, n);
    memset(o + pre + n, ' ', pad);
    o[pre + n + pad] = '\n';
    if (bytes)
        memcpy(o + pre + hlen, a->data, bytes);
    *buf = o;
    *len = out_len;
    return 0;
}

int cg_npy_read(const char *path, cg_array *out, cg_err *err)
{
    unsigned char *buf;
    size_t len;
    memset(out, 0, sizeof *out);
    if (cg_read_file(path, &buf, &len, err) != 0)
        return -1;
    int rc = cg_npy_parse(buf, len, path, out, err);
    free(buf);
    return rc;
}

int cg_npy_write(const char *path, const cg_array *a, cg_err *err)
{
    unsigned char *buf;
    size_t len;
    if (cg_npy_encode(a, &buf, &len, err) != 0)
        return cg_fail(err, "%s: %s", path, err ? err->msg : "");
    int rc = cg_write_file_atomic(path, buf, len, err);
    free(buf);
    return rc;
}

/* ---- npz ---- */
void cg_npz_free(cg_npz *z)
{
    if (!z)
        return;
    for (int i = 0; i < z->n; i++) {
        free(z->keys[i]);
        cg_array_free(&z->arrays[i]);
    }
    free(z->keys);
    free(z->arrays);
    memset(z, 0, sizeof *z);
}

const cg_array *cg_npz_get(const cg_npz *z, const char *key)
{
    for (int i = 0; i < z->n; i++)
        if (strcmp(z->keys[i], key) == 0)
            return &z->arrays[i];
    return NULL;
}

static int zip_open_error(const char *path, int code, cg_err *err)
{
    zip_error_t ze;
    zip_error_init_with_code(&ze, code);
    cg_fail(err, "%s: cannot open as .npz (zip): %s", path, zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return -1;
}

int cg_npz_read(const char *path, cg_npz *out, cg_err *err)
{
    return cg_npz_read_expect(path, NULL, 0, 0, out, err);
}

/* Members larger than this are read header first: a wrong shape is refused before the
 * rest is inflated (a 1 MB npz can claim gigabytes). */
enum { NPZ_PEEK = 16384 };

int cg_npz_read_expect(const char *path, const char *key, size_t sample, size_t max_bytes, cg_npz *out,
                       cg_err *err)
{
    memset(out, 0, sizeof *out);
    FILE *probe = cg_fopen(path, "rb", err); /* clear errno-based message for missing files */
    if (!probe)
        return -1;
    fclose(probe);
    int code = 0;
    zip_t *za = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &code);
    if (!za)
        return zip_open_error(path, code, err);
    zip_int64_t ne = zip_get_num_entries(za, 0);
    if (ne < 0 || ne > 1000000) {
        zip_discard(za);
        return cg_fail(err, "%s: bad number of zip entries", path);
    }
    cg_npz z;
    memset(&z, 0, sizeof z);
    z.keys = cg_try_alloc((size_t)ne + 1, sizeof *z.keys, path, err);
    z.arrays = cg_try_alloc((size_t)ne + 1, sizeof *z.arrays, path, err);
    if (!z.keys || !z.arrays)
        goto fail;
    for (zip_int64_t i = 0; i < ne; i++) {
        zip_stat_t st;
        zip_stat_init(&st);
        if (zip_stat_index(za, (zip_uint64_t)i, 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) ||
            !(st.valid & ZIP_STAT_SIZE)) {
            cg_fail(err, "%s: cannot stat zip entry %lld: %s", path, (long long)i, zip_strerror(za));
            goto fail;
        }
        size_t nl = strlen(st.name);
        if (nl < 5 || strcmp(st.name + nl - 4, ".npy") != 0) {
            cg_fail(err, "%s: member '%s' is not a .npy array", path, st.name);
            goto fail;
        }
        char what[1024];
        snprintf(what, sizeof what, "%s:%s", path, st.name);
        if (st.size > (zip_uint64_t)SIZE_MAX - 1) {
            cg_fail(err, "%s: member too large", what);
            goto fail;
        }
        size_t sz = (size_t)st.size;
        if (max_bytes && sz > max_bytes) {
            cg_fail(err, "%s: member of %zu bytes, larger than any array expected here (%zu bytes; refused "
                         "before decompressing)", what, sz, max_bytes);
            goto fail;
        }
        zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)i, 0);
        if (!zf) {
            cg_fail(err, "%s: cannot open member: %s", what, zip_strerror(za));
            goto fail;
        }
        size_t got = 0;
        int bad = 0;
        unsigned char head[NPZ_PEEK];
        if (sz > NPZ_PEEK) { /* the header alone first: is the member what it must be? */
            while (got < NPZ_PEEK) {
                zip_int64_t r = zip_fread(zf, head + got, NPZ_PEEK - got);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            cg_array h;
            size_t at, bytes;
            char s0[128];
            int is_key = key && nl - 4 == strlen(key) && strncmp(st.name, key, nl - 4) == 0;
            if (got < NPZ_PEEK) {
                bad = cg_fail(err, "%s: member has %zu bytes, zip directory says %zu", what, got, sz);
            } else if (npy_header(head, got, what, &h, &at, err) != 0) {
                bad = 1;
            } else if (cg_mul_size(h.count, cg_dtype_size(h.dtype), &bytes), bytes != sz - at) {
                bad = cg_fail(err, "%s: the header's shape %s needs %zu bytes of data, the member has %zu", what,
                              cg_shape_str(&h, s0, sizeof s0), bytes, sz - at);
            } else if (is_key && sample && (h.ndim < 1 || h.shape[0] == 0 || h.count / (size_t)h.shape[0] != sample)) {
                char s1[128];
                bad = cg_fail(err, "%s: the header gives shape %s, not samples of %zu values (refused before "
                                   "decompressing)", what, cg_shape_str(&h, s1, sizeof s1), sample);
            }
            if (bad) {
                zip_fclose(zf);
                goto fail;
            }
        }
        unsigned char *buf = cg_try_alloc(sz + 1, 1, what, err);
        if (!buf) {
            zip_fclose(zf);
            goto fail;
        }
        memcpy(buf, head, got);
        while (got < sz + 1) {
            zip_int64_t r = zip_fread(zf, buf + got, sz + 1 - got);
            if (r < 0) {
                cg_fail(err, "%s: read error: %s", what, zip_file_strerror(zf));
                bad = 1;
                break;
            }
            if (r == 0)
                break;
            got += (size_t)r;
        }
        if (!bad && got != sz) {
            cg_fail(err, "%s: member has %zu bytes, zip directory says %zu", what, got, sz);
            bad = 1;
        }
        int crc = zip_fclose(zf);
        if (!bad && crc != 0) {
            zip_error_t ze;
            zip_error_init_with_code(&ze, crc);
            cg_fail(err, "%s: %s", what, zip_error_strerror(&ze));
            zip_error_fini(&ze);
            bad = 1;
        }
        if (bad) {
            free(buf);
            goto fail;
        }
        int rc = cg_npy_parse(buf, sz, what, &z.arrays[z.n], err);
        free(buf);
        if (rc != 0)
            goto fail;
        z.keys[z.n] = malloc(nl - 3);
        if (!z.keys[z.n]) {
            cg_array_free(&z.arrays[z.n]);
            cg_fail(err, "%s: out of memory", what);
            goto fail;
        }
        memcpy(z.keys[z.n], st.name, nl - 4);
        z.keys[z.n][nl - 4] = 0;
        z.n++;
        for (int j = 0; j < z.n - 1; j++)
            if (strcmp(z.keys[j], z.keys[z.n - 1]) == 0) {
                cg_fail(err, "%s: duplicate member '%s'", path, st.name);
                goto fail;
            }
    }
    zip_discard(za);
    *out = z;
    return 0;
fail:
    zip_discard(za);
    cg_npz_free(&z);
    return -1;
}

int cg_npz_write(const char *path, int n, const char *const *keys, const cg_array *arrays,
                 cg_err *err)
{
    char tmp[4096];
    if (cg_tmp_name(tmp, sizeof tmp, path, err) != 0)
        return -1;
    if (n == 0) { /* libzip deletes empty archives: write an empty zip (EOCD only) */
        static const unsigned char eocd[22] = {'P', 'K', 5, 6};
        return cg_write_file_atomic(path, eocd, sizeof eocd, err);
    }
    remove(tmp);
    int code = 0;
    zip_t *za = zip_open(tmp, ZIP_CREATE | ZIP_TRUNCATE, &code);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, code);
        cg_fail(err, "%s: cannot create zip: %s", tmp, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char name[1024];
        if (snprintf(name, sizeof name, "%s.npy", keys[i]) >= (int)sizeof name) {
            cg_fail(err, "%s: key too long: %s", path, keys[i]);
            goto fail;
        }
        unsigned char *buf;
        size_t len;
        if (cg_npy_encode(&arrays[i], &buf, &len, err) != 0) {
            char m[sizeof err->msg];
            snprintf(m, sizeof m, "%s", err ? err->msg : "");
            cg_fail(err, "%s: member '%s': %s", path, keys[i], m);
            goto fail;
        }
        zip_source_t *src = zip_source_buffer(za, buf, len, 1);
        if (!src) {
            free(buf);
            cg_fail(err, "%s: %s", path, zip_strerror(za));
            goto fail;
        }
        zip_int64_t idx = zip_file_add(za, name, src, ZIP_FL_ENC_UTF_8);
        if (idx < 0) {
            cg_fail(err, "%s: cannot add '%s': %s", path, name, zip_strerror(za));
            zip_source_free(src);
            goto fail;
        }
        if (zip_set_file_compression(za, (zip_uint64_t)idx, ZIP_CM_STORE, 0) != 0) {
            cg_fail(err, "%s: %s", path, zip_strerror(za));
            goto fail;
        }
    }
    if (zip_close(za) != 0) {
        cg_fail(err, "%s: cannot write zip: %s", tmp, zip_strerror(za));
        zip_discard(za);
        remove(tmp);
        return -1;
    }
    if (cg_fsync_path(tmp, err) != 0) {
        remove(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return cg_fail(err, "%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    }
    return 0;
fail:
    zip_discard(za);
    remove(tmp);
    return -1;
}
