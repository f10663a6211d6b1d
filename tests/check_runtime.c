/* Check suite for the cnngen runtime: npy/npz, losses, init, weights, IDX data, SGD and
 * cg_main (through a hand-written dense 3->2 network, so no compiler is needed). */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "cnngen.h"
#include "data.h"
#include "npy.h"
#include "sgd.h"
#include "threads.h"
#include "util.h"
#include "weights.h"

Suite *make_runtime_suite(void);

/* ---- temp directory per test ---- */
static char tmpdir[256];

static void setup_tmp(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cg_rt_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown_tmp(void)
{
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(tmpdir);
}

static const char *tpath(const char *name)
{
    static char buf[4][600];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* Write a raw .npy with an arbitrary header dict and payload. */
static void write_npy_raw(const char *path, const char *magic6, const char *dict, const void *data,
                          size_t nbytes)
{
    unsigned char buf[1024];
    size_t hl = strlen(dict);
    memcpy(buf, magic6, 6);
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (unsigned char)(hl & 0xff);
    buf[9] = (unsigned char)(hl >> 8);
    memcpy(buf + 10, dict, hl);
    memcpy(buf + 10 + hl, data, nbytes);
    write_bytes(path, buf, 10 + hl + nbytes);
}

/* ---- the tiny dense 3 -> 2 network: y = W x + b, W [2, 3] at params[0], b [2] at [6] ---- */
enum { TIN = 3, TOUT = 2, TBATCH = 4 };

static void dense_forward(const float *params, float *buffers, const float *x, float *ws, int n,
                          int training)
{
    (void)buffers;
    (void)training;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < TOUT; o++) {
            float s = params[6 + o];
            for (int k = 0; k < TIN; k++)
                s += params[o * TIN + k] * x[i * TIN + k];
            ws[i * TOUT + o] = s;
        }
}

static void dense_backward(const float *params, float *grads, const float *x, float *dx,
                           float *ws, int n)
{
    const float *d = ws + TBATCH * TOUT;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < TOUT; o++) {
            for (int k = 0; k < TIN; k++)
                grads[o * TIN + k] += d[i * TOUT + o] * x[i * TIN + k];
            grads[6 + o] += d[i * TOUT + o];
        }
    if (dx)
        for (int i = 0; i < n; i++)
            for (int k = 0; k < TIN; k++) {
                float s = 0;
                for (int o = 0; o < TOUT; o++)
                    s += d[i * TOUT + o] * params[o * TIN + k];
                dx[i * TIN + k] = s;
            }
}

static const cg_tensor dense_tensors[] = {
    {.name = "0.weight", .kind = CG_PARAM, .layer = 0, .ndim = 2, .shape = {TOUT, TIN},
     .offset = 0, .size = 6, .init = CG_INIT_KAIMING_UNIFORM, .fan_in = TIN},
    {.name = "0.bias", .kind = CG_PARAM, .layer = 0, .ndim = 1, .shape = {TOUT}, .offset = 6,
     .size = 2, .init = CG_INIT_BIAS_UNIFORM, .fan_in = TIN},
};

static cg_net dense_net(int loss)
{
    cg_net n = {
        .abi = CG_ABI_VERSION, .name = "dense", .in_ndim = 1, .in_shape = {TIN}, .in_size = TIN,
        .out_size = TOUT, .batch = TBATCH, .loss = loss, .n_params = 8, .n_buffers = 0,
        .workspace = 2 * TBATCH * TOUT, .out_offset = 0, .dout_offset = TBATCH * TOUT,
        .n_tensors = 2, .tensors = dense_tensors, .train = {4, 3, 0.1f, 0.9f, 0.0f},
        .forward = dense_forward, .backward = dense_backward,
    };
    return n;
}

/* A descriptor-only net with a BN-like layer for init/weights tests. */
static const cg_tensor bn_tensors[] = {
    {.name = "0.weight", .kind = CG_PARAM, .ndim = 2, .shape = {4, 5}, .offset = 0, .size = 20,
     .init = CG_INIT_KAIMING_UNIFORM, .fan_in = 5},
    {.name = "1.weight", .kind = CG_PARAM, .layer = 1, .ndim = 1, .shape = {4}, .offset = 20,
     .size = 4, .init = CG_INIT_ONE},
    {.name = "1.bias", .kind = CG_PARAM, .layer = 1, .ndim = 1, .shape = {4}, .offset = 24,
     .size = 4, .init = CG_INIT_ZERO},
    {.name = "1.running_mean", .kind = CG_BUFFER, .layer = 1, .ndim = 1, .shape = {4},
     .offset = 0, .size = 4, .init = CG_INIT_ZERO},
    {.name = "1.running_var", .kind = CG_BUFFER, .layer = 1, .ndim = 1, .shape = {4},
     .offset = 4, .size = 4, .init = CG_INIT_ZERO},
    {.name = "1.num_batches_tracked", .kind = CG_COUNTER, .layer = 1, .ndim = 0, .offset = 8,
     .size = 1},
};

static cg_net bn_net(void)
{
    cg_net n = {.abi = CG_ABI_VERSION, .name = "bn", .in_ndim = 1, .in_shape = {5}, .in_size = 5,
                .out_size = 4, .batch = 2, .n_params = 28, .n_buffers = 9, .n_tensors = 6,
                .tensors = bn_tensors};
    return n;
}

/* ---- npy ---- */
START_TEST(test_npy_roundtrip_dtypes)
{
    for (int dt = CG_F4; dt <= CG_I1; dt++) {
        cg_array a, b;
        cg_err e;
        int64_t shape[3] = {2, 3, 4};
        ck_assert_int_eq(cg_array_alloc(&a, dt, 3, shape, &e), 0);
        unsigned char *p = a.data;
        for (size_t i = 0; i < a.count * cg_dtype_size(dt); i++)
            p[i] = (unsigned char)(i * 37 + dt);
        const char *path = tpath("a.npy");
        ck_assert_msg(cg_npy_write(path, &a, &e) == 0, "%s", e.msg);
        ck_assert_msg(cg_npy_read(path, &b, &e) == 0, "%s", e.msg);
        ck_assert_int_eq(b.dtype, dt);
        ck_assert_int_eq(b.ndim, 3);
        ck_assert_int_eq(b.shape[0], 2);
        ck_assert_int_eq(b.shape[2], 4);
        ck_assert_uint_eq(b.count, 24);
        ck_assert_mem_eq(a.data, b.data, 24 * cg_dtype_size(dt));
        ck_assert_int_ne(access(tpath("a.npy.tmp"), F_OK), 0);
        cg_array_free(&a);
        cg_array_free(&b);
    }
}
END_TEST

START_TEST(test_npy_scalar_and_1d)
{
    cg_err e;
    cg_array a = {.dtype = CG_F8, .ndim = 0, .count = 1}, b;
    double v = 2.5;
    a.data = &v;
    ck_assert_int_eq(cg_npy_write(tpath("s.npy"), &a, &e), 0);
    ck_assert_int_eq(cg_npy_read(tpath("s.npy"), &b, &e), 0);
    ck_assert_int_eq(b.ndim, 0);
    ck_assert_uint_eq(b.count, 1);
    ck_assert_int_eq(cg_array_to_f32(&b, "s", &e), 0);
    ck_assert_float_eq(((float *)b.data)[0], 2.5f);
    cg_array_free(&b);
    /* header format: 1-D shape written as (5,), data 64-byte aligned */
    float f[5] = {1, 2, 3, 4, 5};
    cg_array c = {.dtype = CG_F4, .ndim = 1, .shape = {5}, .count = 5, .data = f};
    unsigned char *buf;
    size_t len;
    ck_assert_int_eq(cg_npy_encode(&c, &buf, &len, &e), 0);
    ck_assert_uint_eq((len - 20) % 64, 0);
    ck_assert_ptr_nonnull(strstr((char *)buf + 10, "'shape': (5,)"));
    free(buf);
}
END_TEST

static void expect_npy_error(const char *path, const char *needle)
{
    cg_array a;
    cg_err e = {{0}};
    ck_assert_int_eq(cg_npy_read(path, &a, &e), -1);
    ck_assert_msg(strstr(e.msg, needle) != NULL, "message '%s' lacks '%s'", e.msg, needle);
    ck_assert_msg(strstr(e.msg, path) != NULL, "message '%s' lacks the path", e.msg);
}

START_TEST(test_npy_malformed)
{
    float d[4] = {1, 2, 3, 4};
    const char *ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n";
    write_npy_raw(tpath("good.npy"), "\x93NUMPY", ok, d, 16);
    cg_array a;
    cg_err e;
    ck_assert_msg(cg_npy_read(tpath("good.npy"), &a, &e) == 0, "%s", e.msg);
    cg_array_free(&a);

    write_npy_raw(tpath("magic.npy"), "\x93NUMPX", ok, d, 16);
    expect_npy_error(tpath("magic.npy"), "bad magic");
    write_npy_raw(tpath("trunc.npy"), "\x93NUMPY", ok, d, 10);
    expect_npy_error(tpath("trunc.npy"), "truncated");
    write_bytes(tpath("short.npy"), "\x93NUMPY\x01", 7);
    expect_npy_error(tpath("short.npy"), "bad magic");
    write_npy_raw(tpath("hdr.npy"), "\x93NUMPY", "{'descr': '<f4', 'fortran_order': False, 'shape': (4,\n",
                  d, 16);
    expect_npy_error(tpath("hdr.npy"), "malformed");
    write_npy_raw(tpath("hdr2.npy"), "\x93NUMPY", "garbage\n", d, 16);
    expect_npy_error(tpath("hdr2.npy"), "malformed");
    write_npy_raw(tpath("nokey.npy"), "\x93NUMPY", "{'descr': '<f4', 'shape': (4,), }\n", d, 16);
    expect_npy_error(tpath("nokey.npy"), "fortran_order");
    write_npy_raw(tpath("shape.npy"), "\x93NUMPY",
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n", d, 16);
    expect_npy_error(tpath("shape.npy"), "truncated");
    write_npy_raw(tpath("extra.npy"), "\x93NUMPY",
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", d, 16);
    expect_npy_error(tpath("extra.npy"), "trailing");
    write_npy_raw(tpath("fort.npy"), "\x93NUMPY",
                  "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\n", d, 16);
    expect_npy_error(tpath("fort.npy"), "fortran_order");
    write_npy_raw(tpath("dt.npy"), "\x93NUMPY",
                  "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }\n", d, 16);
    expect_npy_error(tpath("dt.npy"), "unsupported dtype");
    write_npy_raw(tpath("be.npy"), "\x93NUMPY",
                  "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }\n", d, 16);
    expect_npy_error(tpath("be.npy"), "unsupported dtype");
    write_npy_raw(tpath("neg.npy"), "\x93NUMPY",
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }\n", d, 16);
    expect_npy_error(tpath("neg.npy"), "shape");
    write_npy_raw(tpath("big.npy"), "\x93NUMPY",
                  "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4), }\n",
                  d, 16);
    expect_npy_error(tpath("big.npy"), "too large");
    /* header length pointing past the end of the file */
    unsigned char h[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0xff, 0x7f, '{', '}'};
    write_bytes(tpath("hlen.npy"), h, sizeof h);
    expect_npy_error(tpath("hlen.npy"), "truncated");
    expect_npy_error(tpath("missing.npy"), "cannot open");
}
END_TEST

/* ---- npz ---- */
START_TEST(test_npz_roundtrip)
{
    float w[6] = {1, 2, 3, 4, 5, 6};
    int64_t c = 42;
    uint8_t u[3] = {7, 8, 9};
    cg_array arr[3] = {
        {.dtype = CG_F4, .ndim = 2, .shape = {2, 3}, .count = 6, .data = w},
        {.dtype = CG_I8, .ndim = 0, .count = 1, .data = &c},
        {.dtype = CG_U1, .ndim = 1, .shape = {3}, .count = 3, .data = u},
    };
    const char *keys[3] = {"0.weight", "n", "grad.input"};
    cg_err e;
    ck_assert_msg(cg_npz_write(tpath("z.npz"), 3, keys, arr, &e) == 0, "%s", e.msg);
    ck_assert_int_ne(access(tpath("z.npz.tmp"), F_OK), 0);
    cg_npz z;
    ck_assert_msg(cg_npz_read(tpath("z.npz"), &z, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(z.n, 3);
    const cg_array *a = cg_npz_get(&z, "0.weight");
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(a->dtype, CG_F4);
    ck_assert_int_eq(a->shape[1], 3);
    ck_assert_mem_eq(a->data, w, sizeof w);
    a = cg_npz_get(&z, "n");
    ck_assert_int_eq(a->ndim, 0);
    ck_assert_int_eq(*(int64_t *)a->data, 42);
    a = cg_npz_get(&z, "grad.input");
    ck_assert_mem_eq(a->data, u, 3);
    ck_assert_ptr_null(cg_npz_get(&z, "nope"));
    cg_npz_free(&z);
    /* overwrite an existing file atomically */
    ck_assert_int_eq(cg_npz_write(tpath("z.npz"), 1, keys, arr, &e), 0);
    ck_assert_int_eq(cg_npz_read(tpath("z.npz"), &z, &e), 0);
    ck_assert_int_eq(z.n, 1);
    cg_npz_free(&z);
    /* empty archive */
    ck_assert_int_eq(cg_npz_write(tpath("e.npz"), 0, keys, arr, &e), 0);
    ck_assert_msg(cg_npz_read(tpath("e.npz"), &z, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(z.n, 0);
    cg_npz_free(&z);
}
END_TEST

START_TEST(test_npz_malformed)
{
    cg_npz z;
    cg_err e;
    write_bytes(tpath("junk.npz"), "this is not a zip file at all, no sir", 37);
    ck_assert_int_eq(cg_npz_read(tpath("junk.npz"), &z, &e), -1);
    ck_assert_ptr_nonnull(strstr(e.msg, "junk.npz"));
    ck_assert_int_eq(cg_npz_read(tpath("nothere.npz"), &z, &e), -1);
    ck_assert_ptr_nonnull(strstr(e.msg, "cannot open"));
    /* truncated zip */
    float w[64] = {0};
    cg_array a = {.dtype = CG_F4, .ndim = 1, .shape = {64}, .count = 64, .data = w};
    const char *k = "w";
    ck_assert_int_eq(cg_npz_write(tpath("t.npz"), 1, &k, &a, &e), 0);
    unsigned char *buf;
    size_t len;
    ck_assert_int_eq(cg_read_file(tpath("t.npz"), &buf, &len, &e), 0);
    write_bytes(tpath("t.npz"), buf, len / 2);
    ck_assert_int_eq(cg_npz_read(tpath("t.npz"), &z, &e), -1);
    /* corrupt member payload (a bad npy inside a valid zip) */
    memcpy(buf + 30 + 5, "XXXXXX", 6); /* local header 30 bytes + "w.npy" -> npy magic */
    write_bytes(tpath("c.npz"), buf, len);
    ck_assert_int_eq(cg_npz_read(tpath("c.npz"), &z, &e), -1);
    free(buf);
}
END_TEST

/* ---- losses ---- */
START_TEST(test_loss_ce_values)
{
    float z[6] = {1, 2, 3, 0, 0, 0}, d[6];
    int64_t t[2] = {2, 0};
    float l = cg_loss(CG_LOSS_SOFTMAX_CE, z, t, d, 2, 3);
    /* sample 0: logsumexp(1,2,3) - 3 = 0.40760596; sample 1: ln 3 = 1.09861229 */
    ck_assert_double_eq_tol(l, (0.40760596 + 1.09861229) / 2, 1e-6);
    const double p0[3] = {0.09003057, 0.24472847, 0.66524096};
    ck_assert_double_eq_tol(d[0], p0[0] / 2, 1e-6);
    ck_assert_double_eq_tol(d[1], p0[1] / 2, 1e-6);
    ck_assert_double_eq_tol(d[2], (p0[2] - 1) / 2, 1e-6);
    ck_assert_double_eq_tol(d[3], (1.0 / 3 - 1) / 2, 1e-6);
    ck_assert_double_eq_tol(d[4], 1.0 / 6, 1e-6);
    /* stability with huge logits */
    float zz[3] = {1000, 0, -1000};
    int64_t t0 = 1;
    l = cg_loss(CG_LOSS_SOFTMAX_CE, zz, &t0, d, 1, 3);
    ck_assert_double_eq_tol(l, 1000.0, 1e-3);
    ck_assert(isfinite(d[0]) && isfinite(d[2]));
    ck_assert_double_eq_tol(d[0], 1.0, 1e-6);
    ck_assert_double_eq_tol(d[1], -1.0, 1e-6);
    /* out-of-range class: NaN, no out-of-bounds access */
    int64_t bad = 3;
    ck_assert(isnan(cg_loss(CG_LOSS_SOFTMAX_CE, z, &bad, NULL, 1, 3)));
}
END_TEST

START_TEST(test_loss_mse_values)
{
    float z[4] = {1, 2, 0.5f, -1}, t[4] = {0, 4, 0.5f, 1}, d[4];
    float l = cg_loss(CG_LOSS_MSE, z, t, d, 2, 2);
    ck_assert_double_eq_tol(l, (1 + 4 + 0 + 4) / 4.0, 1e-6);
    ck_assert_double_eq_tol(d[0], 2 * 1 / 4.0, 1e-7);
    ck_assert_double_eq_tol(d[1], 2 * -2 / 4.0, 1e-7);
    ck_assert_double_eq_tol(d[2], 0, 1e-7);
    ck_assert_double_eq_tol(d[3], 2 * -2 / 4.0, 1e-7);
    ck_assert_float_eq(cg_loss(CG_LOSS_MSE, z, t, NULL, 2, 2), l);
}
END_TEST

/* a parallel_for that runs the pieces backwards, as threads might finish them */
static void reverse_for(int n, void (*body)(void *ctx, int i), void *ctx)
{
    for (int i = n - 1; i >= 0; i--)
        body(ctx, i);
}

/* MSE over several blocks and a ragged end (the vectorized path, loss.c mse_block):
 * against a double reference from the definition, with and without dout, and dout
 * exactly (z - t) * (2 / N) rounded to float */
START_TEST(test_loss_mse_blocks)
{
    enum { NS = 3, SZ = 1031 }; /* 3093 values: 3 whole blocks of 1024 and 21 more */
    size_t N = (size_t)NS * SZ;
    float *z = malloc(N * sizeof(float)), *t = malloc(N * sizeof(float)), *d = malloc(N * sizeof(float));
    ck_assert(z && t && d);
    double ref = 0.0;
    for (size_t i = 0; i < N; i++) {
        z[i] = (float)sin(0.37 * (double)i) * 3.0f;
        t[i] = (float)cos(0.11 * (double)i);
        double e = (double)z[i] - (double)t[i];
        ref += e * e;
    }
    ref /= (double)N;
    float l = cg_loss(CG_LOSS_MSE, z, t, d, NS, SZ);
    ck_assert_double_eq_tol(l, ref, 1e-6 * ref);
    ck_assert_float_eq(cg_loss(CG_LOSS_MSE, z, t, NULL, NS, SZ), l);
    float scale = (float)(2.0 / (double)N);
    for (size_t i = 0; i < N; i++)
        ck_assert_msg(d[i] == (z[i] - t[i]) * scale, "dout[%zu] = %.9g, expected %.9g", i, d[i], (z[i] - t[i]) * scale);
    /* cg_net_loss: the pieces in any order, the same bits as cg_loss */
    cg_net net = {.abi = CG_ABI_VERSION, .loss = CG_LOSS_MSE, .out_size = SZ, .parallel_for = reverse_for};
    float *d2 = malloc(N * sizeof(float));
    ck_assert(d2);
    float l2 = cg_net_loss(&net, z, t, d2, NS);
    ck_assert_msg(memcmp(&l2, &l, sizeof l) == 0, "cg_net_loss %.9g, cg_loss %.9g", l2, l);
    ck_assert(memcmp(d, d2, N * sizeof(float)) == 0);
    free(d2);
    free(z);
    free(t);
    free(d);
}
END_TEST

START_TEST(test_loss_finite_differences)
{
    cg_rng r;
    cg_rng_seed(&r, 7);
    enum { N = 3, K = 5 };
    float z[N * K], d[N * K], tf[N * K];
    int64_t t[N] = {4, 0, 2};
    for (int i = 0; i < N * K; i++) {
        z[i] = 4 * cg_rng_uniform(&r) - 2;
        tf[i] = 2 * cg_rng_uniform(&r) - 1;
    }
    for (int kind = 0; kind < 2; kind++) {
        const void *tg = kind == CG_LOSS_SOFTMAX_CE ? (const void *)t : tf;
        cg_loss(kind, z, tg, d, N, K);
        for (int i = 0; i < N * K; i++) {
            const float h = 1e-2f;
            float save = z[i];
            z[i] = save + h;
            double lp = cg_loss(kind, z, tg, NULL, N, K);
            z[i] = save - h;
            double lm = cg_loss(kind, z, tg, NULL, N, K);
            z[i] = save;
            double num = (lp - lm) / (2.0 * h);
            ck_assert_msg(fabs(num - d[i]) < 2e-4, "kind %d elem %d: analytic %g numeric %g",
                          kind, i, d[i], num);
        }
    }
}
END_TEST

/* ---- init / weights ---- */
START_TEST(test_init_params)
{
    cg_net net = bn_net();
    float p[28], b[9], p2[28], b2[9];
    cg_init_params(&net, p, b, 123);
    cg_init_params(&net, p2, b2, 123);
    ck_assert_mem_eq(p, p2, sizeof p);
    float bound = 1.0f / sqrtf(5.0f);
    int distinct = 0;
    for (int i = 0; i < 20; i++) {
        ck_assert(p[i] >= -bound && p[i] <= bound);
        distinct += i > 0 && p[i] != p[i - 1];
    }
    ck_assert_int_gt(distinct, 15);
    for (int i = 20; i < 24; i++)
        ck_assert_float_eq(p[i], 1.0f);
    for (int i = 24; i < 28; i++)
        ck_assert_float_eq(p[i], 0.0f);
    for (int i = 0; i < 4; i++) {
        ck_assert_float_eq(b[i], 0.0f);
        ck_assert_float_eq(b[4 + i], 1.0f);
    }
    ck_assert_float_eq(b[8], 0.0f);
    cg_init_params(&net, p2, b2, 124);
    ck_assert(memcmp(p, p2, 20 * sizeof(float)) != 0);
}
END_TEST

START_TEST(test_weights_roundtrip_and_strict)
{
    cg_net net = bn_net();
    float p[28], b[9], p2[28] = {0}, b2[9] = {0};
    cg_init_params(&net, p, b, 5);
    b[8] = 17;
    cg_err e;
    ck_assert_msg(cg_weights_save(&net, tpath("w.npz"), p, b, &e) == 0, "%s", e.msg);
    cg_npz z;
    ck_assert_int_eq(cg_npz_read(tpath("w.npz"), &z, &e), 0);
    const cg_array *c = cg_npz_get(&z, "1.num_batches_tracked");
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(c->dtype, CG_I8);
    ck_assert_int_eq(c->ndim, 0);
    ck_assert_int_eq(*(int64_t *)c->data, 17);
    ck_assert_int_eq(cg_npz_get(&z, "0.weight")->dtype, CG_F4);
    ck_assert_int_eq(cg_npz_get(&z, "0.weight")->shape[1], 5);
    ck_assert_msg(cg_weights_load(&net, tpath("w.npz"), p2, b2, &e) == 0, "%s", e.msg);
    ck_assert_mem_eq(p, p2, sizeof p);
    ck_assert_mem_eq(b, b2, sizeof b);

    /* extra key -> error */
    const char *keys[7];
    cg_array arr[7];
    for (int i = 0; i < z.n; i++) {
        keys[i] = z.keys[i];
        arr[i] = z.arrays[i];
    }
    float one = 1;
    keys[6] = "2.weight";
    arr[6] = (cg_array){.dtype = CG_F4, .ndim = 0, .count = 1, .data = &one};
    ck_assert_int_eq(cg_npz_write(tpath("x.npz"), 7, keys, arr, &e), 0);
    ck_assert_int_eq(cg_weights_load(&net, tpath("x.npz"), p2, b2, &e), -1);
    ck_assert_ptr_nonnull(strstr(e.msg, "unexpected tensor '2.weight'"));
    /* missing key -> error */
    ck_assert_int_eq(cg_npz_write(tpath("m.npz"), 5, keys, arr, &e), 0);
    ck_assert_int_eq(cg_weights_load(&net, tpath("m.npz"), p2, b2, &e), -1);
    ck_assert_ptr_nonnull(strstr(e.msg, "missing tensor"));
    /* wrong shape -> error, params untouched */
    cg_array saved = arr[0];
    ck_assert_str_eq(keys[0], "0.weight");
    arr[0].shape[0] = 5;
    arr[0].shape[1] = 4;
    float before[28];
    memcpy(before, p2, sizeof before);
    ck_assert_int_eq(cg_npz_write(tpath("s.npz"), 6, keys, arr, &e), 0);
    ck_assert_int_eq(cg_weights_load(&net, tpath("s.npz"), p2, b2, &e), -1);
    ck_assert_ptr_nonnull(strstr(e.msg, "has shape (5, 4), expected (4, 5)"));
    ck_assert_mem_eq(before, p2, sizeof before);
    /* wrong dtype -> error */
    arr[0] = saved;
    arr[0].dtype = CG_I4;
    ck_assert_int_eq(cg_npz_write(tpath("d.npz"), 6, keys, arr, &e), 0);
    ck_assert_int_eq(cg_weights_load(&net, tpath("d.npz"), p2, b2, &e), -1);
    ck_assert_ptr_nonnull(strstr(e.msg, "dtype"));
    arr[0] = saved;
    cg_npz_free(&z);
}
END_TEST

/* ---- SGD ---- */
/* the updates split over a net's parallel_for (pieces run backwards): bitwise the
 * one-call kernels, for SGD with and without momentum, Adam and AdamW, at a size with a
 * ragged last piece */
START_TEST(test_net_update_pieces)
{
    enum { N = 200003 };
    float *p0 = malloc(N * sizeof(float)), *g = malloc(N * sizeof(float));
    float *pa = malloc(N * sizeof(float)), *pb = malloc(N * sizeof(float));
    float *ma = malloc(N * sizeof(float)), *mb = malloc(N * sizeof(float));
    float *va = malloc(N * sizeof(float)), *vb = malloc(N * sizeof(float));
    ck_assert(p0 && g && pa && pb && ma && mb && va && vb);
    for (int i = 0; i < N; i++) {
        p0[i] = (float)sin(0.013 * i);
        g[i] = (float)cos(0.029 * i) * 0.1f;
    }
    cg_net net = {.abi = CG_ABI_VERSION, .parallel_for = reverse_for};
    for (int kind = 0; kind < 4; kind++) {
        memcpy(pa, p0, N * sizeof(float));
        memcpy(pb, p0, N * sizeof(float));
        for (int i = 0; i < N; i++) ma[i] = mb[i] = va[i] = vb[i] = 0.01f * (float)(i % 7);
        for (int step = 1; step <= 3; step++) {
            if (kind == 0) {
                cg_sgd_update(pa, g, va, N, 0.1f, 0.9f, 1e-4f);
                cg_net_sgd_update(&net, pb, g, vb, N, 0.1f, 0.9f, 1e-4f);
            } else if (kind == 1) {
                cg_sgd_update(pa, g, NULL, N, 0.1f, 0.0f, 0.0f);
                cg_net_sgd_update(&net, pb, g, NULL, N, 0.1f, 0.0f, 0.0f);
            } else {
                cg_adam_update(pa, g, ma, va, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, kind == 3, step);
                cg_net_adam_update(&net, pb, g, mb, vb, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, kind == 3, step);
            }
        }
        ck_assert_msg(memcmp(pa, pb, N * sizeof(float)) == 0, "update kind %d: parameters differ", kind);
        ck_assert_msg(memcmp(va, vb, N * sizeof(float)) == 0, "update kind %d: state differs", kind);
        ck_assert_msg(memcmp(ma, mb, N * sizeof(float)) == 0, "update kind %d: first moment differs", kind);
        ck_assert_msg(memcmp(pa, p0, N * sizeof(float)) != 0, "update kind %d: nothing was updated", kind);
    }
    free(p0); free(g); free(pa); free(pb); free(ma); free(mb); free(va); free(vb);
}
END_TEST

START_TEST(test_sgd_momentum)
{
    cg_sgd opt;
    cg_err e;
    ck_assert_int_eq(cg_sgd_init(&opt, 2, 0.1f, 0.9f, 0.01f, &e), 0);
    float p[2] = {1, -2}, g[2] = {0.5f, 1};
    cg_sgd_step(&opt, p, g);
    /* g' = g + wd p = (0.51, 0.98); v = g'; p -= 0.1 v */
    ck_assert_double_eq_tol(p[0], 1 - 0.051, 1e-6);
    ck_assert_double_eq_tol(p[1], -2 - 0.098, 1e-6);
    cg_sgd_step(&opt, p, g);
    double g0 = 0.5 + 0.01 * (1 - 0.051), v0 = 0.9 * 0.51 + g0;
    ck_assert_double_eq_tol(p[0], 1 - 0.051 - 0.1 * v0, 1e-6);
    cg_sgd_free(&opt);
}
END_TEST

/* ---- floating-point environment: flush-to-zero / denormals-are-zero ---- */
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE2__))
#define HAVE_FTZ 1 /* cg_flush_subnormals must work here */
#else
#define HAVE_FTZ 0
#endif
/* volatile: the products are computed at run time, under the thread's MXCSR */
static volatile float tiny = 1e-20f; /* tiny * tiny = 1e-40, a subnormal result (FTZ) */
static volatile float sub = 1e-40f;  /* a subnormal operand (DAZ) */

static float tiny_product(void)
{
    return tiny * tiny;
}

static float sub_double(void)
{
    return sub * 2.0f;
}

/* cg_sgd_update's momentum decay v = 0.5 v from 1e-38 (the smallest normal is 1.18e-38):
 * the number of the n = 37 lanes (vector body and scalar tail) left nonzero */
static int sgd_subnormal_lanes(void)
{
    enum { n = 37 };
    float p[n], g[n], v[n];
    for (int i = 0; i < n; i++)
        p[i] = 1, g[i] = 0, v[i] = 1e-38f;
    cg_sgd_update(p, g, v, n, 0.0f, 0.5f, 0.0f);
    int nonzero = 0;
    for (int i = 0; i < n; i++)
        nonzero += v[i] != 0;
    return nonzero;
}

START_TEST(test_flush_subnormals)
{
    ck_assert_int_eq(cg_flush_subnormals(1), HAVE_FTZ);
#ifdef _OPENMP
    /* threads started after the call inherit the mode: the trainer's OpenMP workers */
    int kept = 0, threads = 0;
#pragma omp parallel num_threads(2) reduction(+ : kept, threads)
    {
        kept += tiny_product() != 0.0f;
        threads += 1;
    }
    ck_assert_int_eq(threads, 2);
    if (HAVE_FTZ)
        ck_assert_msg(kept == 0, "%d of 2 OpenMP threads kept a subnormal result", kept);
#endif
    if (HAVE_FTZ) {
        ck_assert_float_eq(tiny_product(), 0.0f);
        ck_assert_float_eq(sub_double(), 0.0f);
        ck_assert_int_eq(sgd_subnormal_lanes(), 0);
    }
    /* IEEE kept: subnormal results and operands are exact */
    ck_assert_int_eq(cg_flush_subnormals(0), HAVE_FTZ);
    ck_assert_float_ne(tiny_product(), 0.0f);
    ck_assert_float_ne(sub_double(), 0.0f);
    ck_assert_int_eq(sgd_subnormal_lanes(), 37);
}
END_TEST

/* ---- allocation ---- */
START_TEST(test_alloc_aligned)
{
    /* every block the trainer hands the generated code starts on a cache line (the
     * workspace's vector loads sit at multiples of 64 bytes from it); malloc's 16-byte
     * alignment would fail most of these sizes */
    const size_t sizes[] = {1, 3, 16, 17, 64, 100, 4096, 65537, (size_t)1 << 22};
    void *keep[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        float *p = cg_xmalloc(sizes[i], sizeof(float), "test");
        ck_assert_msg((uintptr_t)p % CG_ALIGN == 0, "cg_xmalloc(%zu floats) = %p", sizes[i], (void *)p);
        p[sizes[i] - 1] = 1.0f;
        float *q = cg_xcalloc(sizes[i], sizeof(float), "test");
        ck_assert_msg((uintptr_t)q % CG_ALIGN == 0, "cg_xcalloc(%zu floats) = %p", sizes[i], (void *)q);
        ck_assert_float_eq(q[sizes[i] - 1], 0.0f);
        keep[i] = q;
        free(p);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        free(keep[i]);
    cg_err e;
    ck_assert_ptr_null(cg_try_alloc(SIZE_MAX / 2, 4, "huge", &e));
    ck_assert_msg(strstr(e.msg, "huge: size overflow") != NULL, "%s", e.msg);
}
END_TEST

/* ---- IDX ---- */
static void write_gz(const char *path, const void *b, size_t n)
{
    gzFile g = gzopen(path, "wb");
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(gzwrite(g, b, (unsigned)n), (int)n);
    gzclose(g);
}

static void write_mnist(const char *prefix, int n, int rows, int cols, int bad_label)
{
    unsigned char img[16 + 64 * 16], lab[8 + 64];
    unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0, (unsigned char)n, 0, 0, 0, (unsigned char)rows,
                            0, 0, 0, (unsigned char)cols};
    unsigned char lh[8] = {0, 0, 8, 1, 0, 0, 0, (unsigned char)n};
    memcpy(img, ih, 16);
    memcpy(lab, lh, 8);
    for (int i = 0; i < n * rows * cols; i++)
        img[16 + i] = (unsigned char)(i * 13);
    for (int i = 0; i < n; i++)
        lab[8 + i] = (unsigned char)(i % 10);
    if (bad_label)
        lab[8] = 10;
    char name[128];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", prefix);
    write_gz(tpath(name), img, 16 + (size_t)(n * rows * cols));
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", prefix);
    write_gz(tpath(name), lab, 8 + (size_t)n);
}

START_TEST(test_idx_load)
{
    write_mnist("train", 5, 2, 3, 0);
    cg_dataset ds;
    cg_err e;
    ck_assert_msg(cg_mnist_load(tmpdir, "train", &ds, &e) == 0, "%s", e.msg);
    ck_assert_uint_eq(ds.n, 5);
    ck_assert_uint_eq(ds.x_size, 6);
    ck_assert_int_eq(ds.s_shape[1], 2);
    ck_assert_int_eq(ds.labels[4], 4);
    ck_assert_double_eq_tol(ds.x[1], 13 / 255.0, 1e-7);
    cg_dataset h, t;
    cg_dataset_split(&ds, 2, &h, &t);
    ck_assert_uint_eq(h.n, 3);
    ck_assert_uint_eq(t.n, 2);
    ck_assert_int_eq(t.labels[0], 3);
    cg_dataset_free(&ds);
    write_mnist("t10k", 3, 2, 3, 1);
    ck_assert_int_eq(cg_mnist_load(tmpdir, "t10k", &ds, &e), -1);
    ck_assert_ptr_nonnull(strstr(e.msg, "out of range"));
}
END_TEST

START_TEST(test_idx_malformed)
{
    int64_t dims[3];
    uint8_t *d;
    cg_err e;
    unsigned char bad[16 + 4] = {0, 0, 8, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4};
    write_gz(tpath("magic.gz"), bad, sizeof bad);
    ck_assert_int_eq(cg_idx_read(tpath("magic.gz"), 3, dims, &d, &e), -1);
    ck_assert_msg(strstr(e.msg, "bad IDX magic") && strstr(e.msg, "magic.gz"), "%s", e.msg);
    bad[3] = 3;
    write_gz(tpath("ok.gz"), bad, sizeof bad);
    ck_assert_msg(cg_idx_read(tpath("ok.gz"), 3, dims, &d, &e) == 0, "%s", e.msg);
    free(d);
    /* data shorter than the dims promise */
    write_gz(tpath("short.gz"), bad, sizeof bad - 1);
    ck_assert_int_eq(cg_idx_read(tpath("short.gz"), 3, dims, &d, &e), -1);
    ck_assert_msg(strstr(e.msg, "truncated"), "%s", e.msg);
    /* truncated gzip stream */
    unsigned char big[16 + 4000];
    memcpy(big, bad, 16);
    big[11] = 40;
    big[15] = 100;
    cg_rng r;
    cg_rng_seed(&r, 1);
    for (int i = 16; i < (int)sizeof big; i++)
        big[i] = (unsigned char)cg_rng_next(&r);
    write_gz(tpath("full.gz"), big, sizeof big);
    unsigned char *raw;
    size_t len;
    ck_assert_int_eq(cg_read_file(tpath("full.gz"), &raw, &len, &e), 0);
    write_bytes(tpath("cut.gz"), raw, len / 2);
    free(raw);
    ck_assert_int_eq(cg_idx_read(tpath("cut.gz"), 3, dims, &d, &e), -1);
    ck_assert_msg(strstr(e.msg, "cut.gz") && (strstr(e.msg, "truncated") || strstr(e.msg, "corrupt")),
                  "%s", e.msg);
    /* implausible dimension */
    big[8] = 0xff;
    write_gz(tpath("dim.gz"), big, 16);
    ck_assert_int_eq(cg_idx_read(tpath("dim.gz"), 3, dims, &d, &e), -1);
    ck_assert_msg(strstr(e.msg, "dimension"), "%s", e.msg);
    ck_assert_int_eq(cg_idx_read(tpath("none.gz"), 3, dims, &d, &e), -1);
}
END_TEST

/* ---- cg_main through the dense network ---- */
static int run_main(cg_net *net, const char *a0, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, a0);
    argv[argc++] = "dense";
    for (const char *a = a0; a; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return cg_main(net, argc, argv);
}

static const float W[8] = {0.5f, -1, 0.25f, 2, 0, -0.5f, 0.1f, -0.2f};

static void write_f32(const char *path, int ndim, const int64_t *shape, const float *v)
{
    cg_array a = {.dtype = CG_F4, .ndim = ndim};
    size_t c = 1;
    for (int i = 0; i < ndim; i++)
        c *= (size_t)(a.shape[i] = shape[i]);
    a.count = c;
    a.data = (void *)v;
    cg_err e;
    ck_assert_msg(cg_npy_write(path, &a, &e) == 0, "%s", e.msg);
}

START_TEST(test_main_check_ce)
{
    cg_net net = dense_net(CG_LOSS_SOFTMAX_CE);
    cg_err e;
    ck_assert_int_eq(cg_weights_save(&net, tpath("w.npz"), W, NULL, &e), 0);
    float x[6] = {1, 2, 3, -1, 0.5f, 2};
    int64_t xs[2] = {2, 3};
    write_f32(tpath("x.npy"), 2, xs, x);
    int32_t t[2] = {1, 0};
    cg_array ta = {.dtype = CG_I4, .ndim = 1, .shape = {2}, .count = 2, .data = t};
    ck_assert_int_eq(cg_npy_write(tpath("t.npy"), &ta, &e), 0);
    ck_assert_int_eq(run_main(&net, "check", "--weights", tpath("w.npz"), "--input", tpath("x.npy"),
                              "--target", tpath("t.npy"), "--out", tpath("r.npz"), NULL),
                     0);
    cg_npz z;
    ck_assert_msg(cg_npz_read(tpath("r.npz"), &z, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(z.n, 5);
    const cg_array *out = cg_npz_get(&z, "output"), *loss = cg_npz_get(&z, "loss"),
                   *gi = cg_npz_get(&z, "grad.input"), *gw = cg_npz_get(&z, "grad.0.weight"),
                   *gb = cg_npz_get(&z, "grad.0.bias");
    ck_assert(out && loss && gi && gw && gb);
    ck_assert_int_eq(out->ndim, 2);
    ck_assert_int_eq(out->shape[1], 2);
    ck_assert_int_eq(loss->ndim, 0);
    ck_assert_int_eq(gi->shape[0], 2);
    ck_assert_int_eq(gi->shape[1], 3);
    ck_assert_int_eq(gw->shape[0], 2);
    ck_assert_int_eq(gw->shape[1], 3);
    ck_assert_int_eq(gb->shape[0], 2);
    /* hand computation */
    double zz[2][2], d[2][2], L = 0;
    const int tt[2] = {1, 0};
    for (int i = 0; i < 2; i++) {
        for (int o = 0; o < 2; o++) {
            zz[i][o] = W[6 + o];
            for (int k = 0; k < 3; k++)
                zz[i][o] += W[o * 3 + k] * x[i * 3 + k];
            ck_assert_double_eq_tol(((float *)out->data)[i * 2 + o], zz[i][o], 1e-5);
        }
        double lse = log(exp(zz[i][0]) + exp(zz[i][1]));
        L += (lse - zz[i][tt[i]]) / 2;
        for (int o = 0; o < 2; o++)
            d[i][o] = (exp(zz[i][o] - lse) - (o == tt[i])) / 2;
    }
    ck_assert_double_eq_tol(*(float *)loss->data, L, 1e-5);
    for (int o = 0; o < 2; o++) {
        ck_assert_double_eq_tol(((float *)gb->data)[o], d[0][o] + d[1][o], 1e-5);
        for (int k = 0; k < 3; k++)
            ck_assert_double_eq_tol(((float *)gw->data)[o * 3 + k],
                                    d[0][o] * x[k] + d[1][o] * x[3 + k], 1e-5);
    }
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 3; k++)
            ck_assert_double_eq_tol(((float *)gi->data)[i * 3 + k],
                                    d[i][0] * W[k] + d[i][1] * W[3 + k], 1e-5);
    cg_npz_free(&z);
}
END_TEST

START_TEST(test_main_check_mse_and_predict)
{
    cg_net net = dense_net(CG_LOSS_MSE);
    cg_err e;
    ck_assert_int_eq(cg_weights_save(&net, tpath("w.npz"), W, NULL, &e), 0);
    float x[3] = {1, 2, 3}, t[2] = {0.5f, -1};
    int64_t xs[2] = {1, 3}, ts[2] = {1, 2};
    write_f32(tpath("x.npy"), 2, xs, x);
    write_f32(tpath("t.npy"), 2, ts, t);
    ck_assert_int_eq(run_main(&net, "check", "--weights", tpath("w.npz"), "--input", tpath("x.npy"),
                              "--target", tpath("t.npy"), "--out=/nonexistent/dir/r.npz", NULL),
                     1);
    ck_assert_int_eq(run_main(&net, "check", "--weights", tpath("w.npz"), "--input", tpath("x.npy"),
                              "--target", tpath("t.npy"), "--out", tpath("r.npz"), NULL),
                     0);
    cg_npz z;
    ck_assert_int_eq(cg_npz_read(tpath("r.npz"), &z, &e), 0);
    double z0 = 0.5 - 2 + 0.75 + 0.1, z1 = 2 + 0 - 1.5 - 0.2;
    double L = ((z0 - 0.5) * (z0 - 0.5) + (z1 + 1) * (z1 + 1)) / 2;
    ck_assert_double_eq_tol(*(float *)cg_npz_get(&z, "loss")->data, L, 1e-5);
    ck_assert_double_eq_tol(((float *)cg_npz_get(&z, "grad.0.bias")->data)[1], (z1 + 1), 1e-5);
    cg_npz_free(&z);

    /* predict over more samples than the batch (4) */
    float xp[7 * 3];
    for (int i = 0; i < 21; i++)
        xp[i] = (float)i * 0.1f;
    int64_t ps[2] = {7, 3};
    write_f32(tpath("xp.npy"), 2, ps, xp);
    ck_assert_int_eq(run_main(&net, "predict", "--weights", tpath("w.npz"), "--input",
                              tpath("xp.npy"), "--out", tpath("y.npy"), NULL),
                     0);
    cg_array y;
    ck_assert_int_eq(cg_npy_read(tpath("y.npy"), &y, &e), 0);
    ck_assert_int_eq(y.shape[0], 7);
    ck_assert_int_eq(y.shape[1], 2);
    for (int i = 0; i < 7; i++) {
        double v = W[7];
        for (int k = 0; k < 3; k++)
            v += W[3 + k] * xp[i * 3 + k];
        ck_assert_double_eq_tol(((float *)y.data)[i * 2 + 1], v, 1e-5);
    }
    cg_array_free(&y);
}
END_TEST

/* every command sets FTZ|DAZ unless --ieee-subnormals (the mode stays after cg_main) */
START_TEST(test_main_subnormals_option)
{
    cg_net net = dense_net(CG_LOSS_MSE);
    cg_err e;
    ck_assert_int_eq(cg_weights_save(&net, tpath("w.npz"), W, NULL, &e), 0);
    float x[3] = {1, 2, 3};
    int64_t xs[2] = {1, 3};
    write_f32(tpath("x.npy"), 2, xs, x);
    cg_flush_subnormals(0);
    ck_assert_int_eq(run_main(&net, "predict", "--weights", tpath("w.npz"), "--input", tpath("x.npy"),
                              "--out", tpath("y.npy"), NULL),
                     0);
    if (HAVE_FTZ)
        ck_assert_float_eq(tiny_product(), 0.0f);
    ck_assert_int_eq(run_main(&net, "predict", "--weights", tpath("w.npz"), "--input", tpath("x.npy"),
                              "--out", tpath("y.npy"), "--ieee-subnormals", NULL),
                     0);
    ck_assert_float_ne(tiny_product(), 0.0f);
    ck_assert_int_eq(run_main(&net, "eval", "--weights", tpath("w.npz"), "--ieee-subnormals=1", NULL), 2);
}
END_TEST

START_TEST(test_main_errors)
{
    cg_net net = dense_net(CG_LOSS_SOFTMAX_CE);
    cg_err e;
    ck_assert_int_eq(cg_weights_save(&net, tpath("w.npz"), W, NULL, &e), 0);
    float x[15] = {0};
    int64_t xs[2] = {5, 3}, xs_bad[2] = {2, 4};
    write_f32(tpath("x5.npy"), 2, xs, x);
    write_f32(tpath("xbad.npy"), 2, xs_bad, x);
    xs[0] = 2;
    write_f32(tpath("x.npy"), 2, xs, x);
    int64_t t[2] = {0, 2}, t_ok[2] = {0, 1};
    cg_array ta = {.dtype = CG_I8, .ndim = 1, .shape = {2}, .count = 2, .data = t};
    ck_assert_int_eq(cg_npy_write(tpath("tbad.npy"), &ta, &e), 0);
    ta.data = t_ok;
    ck_assert_int_eq(cg_npy_write(tpath("t.npy"), &ta, &e), 0);
    const char *W_ = tpath("w.npz");

    ck_assert_int_eq(run_main(&net, NULL), 2);
    ck_assert_int_eq(run_main(&net, "--help", NULL), 0);
    ck_assert_int_eq(run_main(&net, "frobnicate", NULL), 2);
    ck_assert_int_eq(run_main(&net, "check", "--bogus", "1", NULL), 2);
    ck_assert_int_eq(run_main(&net, "check", "--weights", NULL), 2);
    ck_assert_int_eq(run_main(&net, "check", "--weights", W_, NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--epochs", "abc", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--batch", "5", NULL), 2);
    ck_assert_int_eq(run_main(&net, "eval", "--input", "x", NULL), 2);
    /* N > batch, wrong sample shape, class out of range, missing files */
    ck_assert_int_eq(run_main(&net, "check", "--weights", W_, "--input", tpath("x5.npy"), "--target",
                              tpath("t.npy"), "--out", tpath("r.npz"), NULL),
                     1);
    ck_assert_int_eq(run_main(&net, "check", "--weights", W_, "--input", tpath("xbad.npy"),
                              "--target", tpath("t.npy"), "--out", tpath("r.npz"), NULL),
                     1);
    ck_assert_int_eq(run_main(&net, "check", "--weights", W_, "--input", tpath("x.npy"), "--target",
                              tpath("tbad.npy"), "--out", tpath("r.npz"), NULL),
                     1);
    ck_assert_int_eq(run_main(&net, "check", "--weights", tpath("nope.npz"), "--input",
                              tpath("x.npy"), "--target", tpath("t.npy"), "--out", tpath("r.npz"),
                              NULL),
                     1);
    ck_assert_int_eq(run_main(&net, "check", "--weights", tpath("x.npy"), "--input", tpath("x.npy"),
                              "--target", tpath("t.npy"), "--out", tpath("r.npz"), NULL),
                     1);
    ck_assert_int_ne(access(tpath("r.npz"), F_OK), 0);
    /* float targets for CE */
    ck_assert_int_eq(run_main(&net, "check", "--weights", W_, "--input", tpath("x.npy"), "--target",
                              tpath("x.npy"), "--out", tpath("r.npz"), NULL),
                     1);
    /* no default dataset for a 3-feature input */
    ck_assert_int_eq(run_main(&net, "eval", "--weights", W_, NULL), 1);
    ck_assert_int_eq(run_main(&net, "train", "--data", tpath("nodata"), "--out", tmpdir, NULL), 1);
}
END_TEST

static void write_dataset(const char *name, int n, cg_rng *r)
{
    float x[200 * 3];
    int64_t y[200];
    for (int i = 0; i < n; i++) {
        float s = 0;
        for (int k = 0; k < 3; k++)
            s += (x[i * 3 + k] = 2 * cg_rng_uniform(r) - 1) * (float)(k + 1);
        y[i] = s > 0;
    }
    cg_array a[2] = {
        {.dtype = CG_F4, .ndim = 2, .shape = {n, 3}, .count = (size_t)n * 3, .data = x},
        {.dtype = CG_I8, .ndim = 1, .shape = {n}, .count = (size_t)n, .data = y},
    };
    const char *k[2] = {"x", "y"};
    cg_err e;
    ck_assert_int_eq(cg_npz_write(tpath(name), 2, k, a, &e), 0);
}

START_TEST(test_main_train_eval)
{
    cg_net net = dense_net(CG_LOSS_SOFTMAX_CE);
    cg_rng r;
    cg_rng_seed(&r, 3);
    write_dataset("train.npz", 200, &r);
    write_dataset("test.npz", 100, &r);
    ck_assert_int_eq(run_main(&net, "train", "--data", tmpdir, "--epochs", "20", "--lr", "0.5",
                              "--seed", "1", "--out", tmpdir, NULL),
                     0);
    ck_assert_int_eq(access(tpath("final.npz"), F_OK), 0);
    float p[8];
    cg_err e;
    ck_assert_msg(cg_weights_load(&net, tpath("final.npz"), p, NULL, &e) == 0, "%s", e.msg);
    /* the learned boundary should align with (1, 2, 3) */
    float w[3] = {p[3] - p[0], p[4] - p[1], p[5] - p[2]};
    ck_assert_msg(w[2] > w[1] && w[1] > w[0] && w[0] > 0, "w = %g %g %g", w[0], w[1], w[2]);
    ck_assert_int_eq(run_main(&net, "eval", "--weights", tpath("final.npz"), "--data", tmpdir, NULL),
                     0);
    /* resume from weights, MSE net with one-hot targets */
    cg_net mse = dense_net(CG_LOSS_MSE);
    ck_assert_int_eq(run_main(&mse, "train", "--data", tmpdir, "--epochs", "1", "--weights",
                              tpath("final.npz"), "--batch", "3", "--out", tmpdir, NULL),
                     0);
}
END_TEST

/* ---- the trainer's thread count (threads.h) ---- */

/* steps of 32 samples on the count cg_thr_next gives, each taking spt[count] seconds a
 * sample, the clock advancing by the steps' time; used[0] / used[1]: steps on 1 / max */
static void thr_run(cg_thr *c, int steps, const double *spt, double *clock, int *used)
{
    for (int i = 0; i < steps; i++) {
        int t = cg_thr_next(c);
        ck_assert_int_ge(t, 1);
        ck_assert_int_le(t, c->max);
        used[t == 1 ? 0 : 1]++;
        double dt = 32 * spt[t];
        *clock += dt;
        cg_thr_step(c, dt, 32, *clock);
    }
}

START_TEST(test_threads_choice)
{
    double spt[3] = {0, 0, 0}, clock = 0;
    int used[2] = {0, 0};
    cg_thr c;
    /* one thread available: nothing to choose */
    cg_thr_init(&c, 1, 0, 10);
    spt[1] = 1e-3;
    thr_run(&c, 100, spt, &clock, used);
    ck_assert_int_eq(used[0], 100);
    ck_assert_int_eq(c.changes, 0);
    /* 2 threads, as fast as 1: stays on 2 (1 only while it is measured) */
    clock = 0;
    cg_thr_init(&c, 2, 0, 10);
    spt[1] = spt[2] = 1e-4;
    used[0] = used[1] = 0;
    thr_run(&c, 200, spt, &clock, used);
    ck_assert_int_eq(c.cur, 2);
    ck_assert_int_eq(c.changes, 0);
    ck_assert_int_eq(used[0], CG_THR_K); /* one measurement in 200 steps of 3.2 ms */
    /* 2 threads twice as slow as 1 (the far placement): 1 after the first measurement */
    clock = 0;
    cg_thr_init(&c, 2, 0, 10);
    spt[1] = 1e-4, spt[2] = 2e-4;
    used[0] = used[1] = 0;
    thr_run(&c, CG_THR_WARM + 1 + 2 * CG_THR_K, spt, &clock, used);
    ck_assert_int_eq(c.cur, 1);
    ck_assert_int_eq(c.changes, 1);
    ck_assert_int_eq(used[1], CG_THR_WARM + 1 + CG_THR_K);
    /* settled: no measurement before the interval */
    used[0] = used[1] = 0;
    thr_run(&c, 1000, spt, &clock, used); /* 3.2 s */
    ck_assert_int_eq(used[1], 0);
    /* the vCPUs move closer: 2 threads faster again; back to 2 after the next measurement */
    spt[2] = 0.5e-4;
    thr_run(&c, 3000, spt, &clock, used);
    ck_assert_int_eq(c.cur, 2);
    ck_assert_int_eq(c.changes, 2);
    /* within 5 %: no change */
    cg_thr_init(&c, 2, clock, 10);
    spt[1] = 1e-4, spt[2] = 1.03e-4;
    thr_run(&c, 500, spt, &clock, used);
    ck_assert_int_eq(c.cur, 2);
    ck_assert_int_eq(c.changes, 0);
    /* slow steps: the next measurement waits at least 20 x the last one's time */
    cg_thr_init(&c, 2, clock, 0.001);
    spt[1] = spt[2] = 1e-2; /* 0.32 s a step */
    used[0] = used[1] = 0;
    thr_run(&c, CG_THR_WARM + 1 + 2 * CG_THR_K, spt, &clock, used);
    ck_assert_int_eq(used[0], CG_THR_K);
    ck_assert(c.next >= clock + 20 * 2 * CG_THR_K * 0.32 - 1e-6);
    /* skipped steps (no samples) are not counted */
    cg_thr_init(&c, 2, 0, 10);
    for (int i = 0; i < 50; i++)
        cg_thr_step(&c, 1.0, 0, i);
    ck_assert_int_eq((int)c.steps, 0);
}
END_TEST

Suite *make_runtime_suite(void)
{
    Suite *s = suite_create("runtime");
    TCase *tc = tcase_create("io");
    tcase_add_checked_fixture(tc, setup_tmp, teardown_tmp);
    tcase_add_test(tc, test_npy_roundtrip_dtypes);
    tcase_add_test(tc, test_npy_scalar_and_1d);
    tcase_add_test(tc, test_npy_malformed);
    tcase_add_test(tc, test_npz_roundtrip);
    tcase_add_test(tc, test_npz_malformed);
    tcase_add_test(tc, test_weights_roundtrip_and_strict);
    tcase_add_test(tc, test_idx_load);
    tcase_add_test(tc, test_idx_malformed);
    suite_add_tcase(s, tc);

    tc = tcase_create("math");
    tcase_add_test(tc, test_loss_ce_values);
    tcase_add_test(tc, test_loss_mse_values);
    tcase_add_test(tc, test_loss_mse_blocks);
    tcase_add_test(tc, test_loss_finite_differences);
    tcase_add_test(tc, test_init_params);
    tcase_add_test(tc, test_sgd_momentum);
    tcase_add_test(tc, test_net_update_pieces);
    tcase_add_test(tc, test_flush_subnormals);
    tcase_add_test(tc, test_alloc_aligned);
    tcase_add_test(tc, test_threads_choice);
    suite_add_tcase(s, tc);

    tc = tcase_create("main");
    tcase_add_checked_fixture(tc, setup_tmp, teardown_tmp);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_main_check_ce);
    tcase_add_test(tc, test_main_check_mse_and_predict);
    tcase_add_test(tc, test_main_errors);
    tcase_add_test(tc, test_main_subnormals_option);
    tcase_add_test(tc, test_main_train_eval);
    suite_add_tcase(s, tc);
    return s;
}
