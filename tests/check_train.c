/* Check suite for the trainer (runtime/train.c, sgd.c, data.c formats, cg_main train/eval/
 * predict): SGD and Adam kernels against the scalar reference, schedules and warmup, the
 * augmentation against a naive pad-crop-flip, every mode and order
 * converging on least squares with a known solution, --mode full against the analytic
 * gradient-descent step, batch-norm running averages against PyTorch's formula, early
 * stopping restoring the best parameters, kill-and-resume equality (in-process step limit
 * and fork + SIGKILL), every data format and malformed files. */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "augment.h"
#include "cnngen.h"
#include "data.h"
#include "npy.h"
#include "sgd.h"
#include "train.h"
#include "util.h"
#include "weights.h"

Suite *make_train_suite(void);
#include "test_nets.h"

/* ---- temp directory per test (files and one level of subdirectories) ---- */
static char tmpdir[256];

static void setup_tmp(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cg_tr_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void rm_tree(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            struct stat st;
            if (depth < 2 && lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                rm_tree(p, depth + 1);
            else
                unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

static void teardown_tmp(void) { rm_tree(tmpdir, 0); }

static const char *tpath(const char *name)
{
    static char buf[8][600];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

/* ---- hand-written dense net IN -> OUT: out = W x + b; W [OUT, IN] at 0, b at OUT*IN ---- */
enum { IN = 2, OUT = 1, DB = 8 };

static void lin_forward(const float *p, float *buffers, const float *x, float *ws, int n,
                        int training)
{
    (void)buffers;
    (void)training;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < OUT; o++) {
            float s = p[OUT * IN + o];
            for (int k = 0; k < IN; k++)
                s += p[o * IN + k] * x[i * IN + k];
            ws[i * OUT + o] = s;
        }
}

static void lin_backward(const float *p, float *g, const float *x, float *dx, float *ws, int n)
{
    const float *d = ws + DB * OUT;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < OUT; o++) {
            for (int k = 0; k < IN; k++)
                g[o * IN + k] += d[i * OUT + o] * x[i * IN + k];
            g[OUT * IN + o] += d[i * OUT + o];
        }
    if (dx)
        for (int i = 0; i < n; i++)
            for (int k = 0; k < IN; k++) {
                float s = 0;
                for (int o = 0; o < OUT; o++)
                    s += d[i * OUT + o] * p[o * IN + k];
                dx[i * IN + k] = s;
            }
}

static const cg_tensor lin_tensors[] = {
    {.name = "0.weight", .kind = CG_PARAM, .layer = 0, .ndim = 2, .shape = {OUT, IN},
     .offset = 0, .size = OUT * IN, .init = CG_INIT_KAIMING_UNIFORM, .fan_in = IN},
    {.name = "0.bias", .kind = CG_PARAM, .layer = 0, .ndim = 1, .shape = {OUT},
     .offset = OUT * IN, .size = OUT, .init = CG_INIT_BIAS_UNIFORM, .fan_in = IN},
};

static const cg_layer lin_layers[] = {
    {.kind = "dense", .ndim_in = 1, .in_shape = {IN}, .ndim_out = 1, .out_shape = {OUT},
     .in_size = IN, .out_size = OUT, .has_bias = 1},
};

static cg_net lin_net(void)
{
    cg_net n = {.abi = CG_ABI_VERSION, .name = "lin", .spec_hash = "0", .in_ndim = 1,
                .in_shape = {IN}, .in_size = IN, .out_size = OUT, .batch = DB,
                .loss = CG_LOSS_MSE, .n_params = OUT * IN + OUT, .n_buffers = 0,
                .workspace = 2 * DB * OUT, .out_offset = 0, .dout_offset = DB * OUT,
                .n_tensors = 2, .tensors = lin_tensors, .n_layers = 1, .layers = lin_layers,
                .forward = lin_forward, .backward = lin_backward};
    return n;
}

static const float W_TRUE[3] = {1.5f, -2.0f, 0.5f}; /* w0, w1, b */

/* x uniform in [-1, 1]; y = W_TRUE . x + b (w0 scaled by `w0` for the early-stopping data) */
typedef struct {
    float x[512 * IN];
    float y[512];
    cg_dataset ds;
} lin_data;

static void make_lin(lin_data *d, int n, uint64_t seed, int n_tail, float tail_w0)
{
    cg_rng r;
    cg_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        float w0 = i >= n - n_tail ? tail_w0 : W_TRUE[0];
        d->x[i * IN] = 2 * cg_rng_uniform(&r) - 1;
        d->x[i * IN + 1] = 2 * cg_rng_uniform(&r) - 1;
        d->y[i] = w0 * d->x[i * IN] + W_TRUE[1] * d->x[i * IN + 1] + W_TRUE[2];
    }
    memset(&d->ds, 0, sizeof d->ds);
    d->ds.n = (size_t)n;
    d->ds.s_ndim = 1;
    d->ds.s_shape[0] = IN;
    d->ds.x_size = IN;
    d->ds.x = d->x;
    d->ds.targets = d->y;
    d->ds.t_size = 1;
}

static void base_opts(cg_train_opts *o, const cg_net *net, const char *outsub)
{
    cg_train_opts_init(o, net);
    o->quiet = 1;
    o->plot = 0;
    o->h.val = 0;
    o->h.patience = 0;
    static char outbuf[600]; /* tpath's buffers rotate */
    snprintf(outbuf, sizeof outbuf, "%s", tpath(outsub));
    o->out = outbuf;
}

static void load_params(const cg_net *net, const char *path, float *p, float *b)
{
    cg_err e;
    ck_assert_msg(cg_weights_load(net, path, p, b, &e) == 0, "%s", e.msg);
}

/* ================================================================================== */
START_TEST(test_sgd_kernel_matches_reference)
{
    enum { N = 1037 };
    static float p1[N], p2[N], g[N], v1[N], v2[N];
    cg_rng r;
    cg_rng_seed(&r, 11);
    for (int i = 0; i < N; i++) {
        p1[i] = p2[i] = 2 * cg_rng_uniform(&r) - 1;
        g[i] = 2 * cg_rng_uniform(&r) - 1;
        v1[i] = v2[i] = cg_rng_uniform(&r) - 0.5f;
    }
    for (int step = 0; step < 5; step++) {
        cg_sgd_update(p1, g, v1, N, 0.05f, 0.9f, 1e-3f);
        cg_sgd_update_ref(p2, g, v2, N, 0.05f, 0.9f, 1e-3f);
    }
    ck_assert_msg(memcmp(p1, p2, sizeof p1) == 0 && memcmp(v1, v2, sizeof v1) == 0,
                  "%s kernel differs from the scalar reference", cg_sgd_kernel_name());
    cg_sgd_update(p1, g, NULL, N, 0.1f, 0.0f, 0.01f);
    cg_sgd_update_ref(p2, g, NULL, N, 0.1f, 0.0f, 0.01f);
    ck_assert(memcmp(p1, p2, sizeof p1) == 0);
    /* the reference against PyTorch's definitions in double */
    float p = 0.7f, gg = -0.3f, v = 0.2f;
    cg_sgd_update_ref(&p, &gg, &v, 1, 0.1f, 0.9f, 0.01f);
    double g2 = -0.3 + 0.01 * 0.7, v2d = 0.9 * 0.2 + g2;
    ck_assert_double_eq_tol(v, v2d, 1e-7);
    ck_assert_double_eq_tol(p, 0.7 - 0.1 * v2d, 1e-7);
    /* cg_scale */
    float y[19];
    for (int i = 0; i < 19; i++)
        y[i] = (float)i;
    cg_scale(y, 19, 0.5f);
    for (int i = 0; i < 19; i++)
        ck_assert_float_eq(y[i], 0.5f * (float)i);
}
END_TEST

/* Adam and AdamW: the vector kernel bitwise equal to the scalar reference (a length that
 * leaves a tail), the reference against torch.optim's formulas in double */
START_TEST(test_adam_kernel_matches_reference)
{
    enum { N = 1037 };
    static float p1[N], p2[N], g[N], m1[N], m2[N], v1[N], v2[N];
    for (int decoupled = 0; decoupled < 2; decoupled++) {
        cg_rng r;
        cg_rng_seed(&r, 12);
        for (int i = 0; i < N; i++) {
            p1[i] = p2[i] = 2 * cg_rng_uniform(&r) - 1;
            m1[i] = m2[i] = v1[i] = v2[i] = 0;
        }
        for (int step = 1; step <= 6; step++) {
            for (int i = 0; i < N; i++)
                g[i] = 2 * cg_rng_uniform(&r) - 1;
            cg_adam_update(p1, g, m1, v1, N, 0.01f, 0.9f, 0.999f, 1e-8f, 0.05f, decoupled, step);
            cg_adam_update_ref(p2, g, m2, v2, N, 0.01f, 0.9f, 0.999f, 1e-8f, 0.05f, decoupled, step);
        }
        ck_assert_msg(memcmp(p1, p2, sizeof p1) == 0 && memcmp(m1, m2, sizeof m1) == 0 &&
                          memcmp(v1, v2, sizeof v1) == 0,
                      "%s Adam kernel (decoupled %d) differs from the scalar reference",
                      cg_sgd_kernel_name(), decoupled);
        /* three steps of one element against torch.optim.Adam / AdamW in double */
        const double lr = 0.02, b1 = 0.8, b2 = 0.99, eps = 1e-3, wd = 0.1;
        const double gs[3] = {0.3, -0.7, 0.2};
        double pd = 0.5, md = 0, vd = 0;
        float p = 0.5f, m = 0, v = 0;
        for (int t = 1; t <= 3; t++) {
            float gf = (float)gs[t - 1];
            cg_adam_update_ref(&p, &gf, &m, &v, 1, (float)lr, (float)b1, (float)b2, (float)eps,
                               (float)wd, decoupled, t);
            double gg = gs[t - 1];
            if (decoupled)
                pd *= 1 - lr * wd;
            else
                gg += wd * pd;
            md = b1 * md + (1 - b1) * gg;
            vd = b2 * vd + (1 - b2) * gg * gg;
            pd -= lr / (1 - pow(b1, t)) * md / (sqrt(vd) / sqrt(1 - pow(b2, t)) + eps);
            ck_assert_double_eq_tol(m, md, 1e-6);
            ck_assert_double_eq_tol(v, vd, 1e-6);
            ck_assert_double_eq_tol(p, pd, 1e-6);
        }
    }
}
END_TEST

/* linear warmup: lr (e+1)/(K+1) for e < K, then the schedule over the remaining epochs */
START_TEST(test_lr_warmup)
{
    for (int e = 0; e < 12; e++) {
        ck_assert_float_eq(cg_lr_warmup_at(0, CG_SCHED_COSINE, 0.1f, e, 12, 3, 0.5f),
                           cg_lr_at(CG_SCHED_COSINE, 0.1f, e, 12, 3, 0.5f));
        double want = e < 3 ? 0.1 * (e + 1) / 4.0 : 0.05 * (1 + cos(3.14159265358979323846 * (e - 3) / 9));
        ck_assert_double_eq_tol(cg_lr_warmup_at(3, CG_SCHED_COSINE, 0.1f, e, 12, 3, 0.5f), want, 1e-8);
        want = e < 2 ? 0.1 * (e + 1) / 3.0 : 0.1 * pow(0.5, (e - 2) / 3);
        ck_assert_double_eq_tol(cg_lr_warmup_at(2, CG_SCHED_STEP, 0.1f, e, 12, 3, 0.5f), want, 1e-8);
        want = e < 5 ? 0.1 * (e + 1) / 6.0 : 0.1;
        ck_assert_double_eq_tol(cg_lr_warmup_at(5, CG_SCHED_CONSTANT, 0.1f, e, 12, 3, 0.5f), want, 1e-8);
    }
}
END_TEST

/* the naive definition: pad by p with zeros, take the H x W window at (oy, ox), mirror it */
static void augment_naive(const float *x, float *y, int C, int H, int W, int p, int oy, int ox,
                          int fl)
{
    const int Hp = H + 2 * p, Wp = W + 2 * p;
    float *pad = calloc((size_t)(C * Hp * Wp), sizeof(float));
    float *win = calloc((size_t)(C * H * W), sizeof(float));
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++)
                pad[(c * Hp + h + p) * Wp + w + p] = x[(c * H + h) * W + w];
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++)
                win[(c * H + h) * W + w] = pad[(c * Hp + h + oy) * Wp + w + ox];
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++)
                y[(c * H + h) * W + w] = win[(c * H + h) * W + (fl ? W - 1 - w : w)];
    free(pad);
    free(win);
}

/* cg_augment_batch equals the naive pad-crop-flip with the same draws, for crops smaller
 * and larger than the image; the draws cover every offset and both flips; the stream of a
 * step depends on the seed and the step only */
START_TEST(test_augment_matches_naive)
{
    struct { int C, H, W, crop, flip; } cases[] = {
        {1, 6, 6, 1, 1}, {3, 5, 7, 2, 1}, {2, 8, 8, 4, 0}, {1, 4, 3, 9, 1}, {3, 6, 5, 0, 1}};
    enum { NS = 64 };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int C = cases[c].C, H = cases[c].H, W = cases[c].W, P = cases[c].crop;
        const size_t size = (size_t)(C * H * W);
        float *x = malloc(NS * size * sizeof(float)), *y = malloc(NS * size * sizeof(float));
        float *ref = malloc(size * sizeof(float)), *scratch = malloc(size * sizeof(float));
        cg_rng r, rd;
        cg_rng_seed(&r, 5 + c);
        for (size_t i = 0; i < NS * size; i++)
            x[i] = y[i] = cg_rng_uniform(&r) + 0.5f; /* never 0: padding shows */
        cg_augment_seed(&r, 9, (long long)c);
        rd = r;
        cg_augment_batch(y, scratch, NS, C, H, W, P, cases[c].flip, &r);
        int seen_oy[32] = {0}, seen_ox[32] = {0}, seen_fl[2] = {0}, changed = 0;
        for (int i = 0; i < NS; i++) {
            int oy, ox, fl;
            cg_augment_draw(&rd, P, cases[c].flip, &oy, &ox, &fl);
            ck_assert(oy >= 0 && oy <= 2 * P && ox >= 0 && ox <= 2 * P && (fl == 0 || fl == 1));
            seen_oy[oy] = seen_ox[ox] = seen_fl[fl] = 1;
            augment_naive(x + (size_t)i * size, ref, C, H, W, P, oy, ox, fl);
            ck_assert_msg(memcmp(ref, y + (size_t)i * size, size * sizeof(float)) == 0,
                          "case %zu sample %d (oy %d ox %d flip %d) differs from the naive "
                          "pad-crop-flip", c, i, oy, ox, fl);
            changed += memcmp(x + (size_t)i * size, y + (size_t)i * size, size * sizeof(float)) != 0;
        }
        for (int k = 0; k <= 2 * P && 2 * P + 1 <= NS / 4; k++)
            ck_assert_msg(seen_oy[k] && seen_ox[k], "case %zu: offset %d never drawn", c, k);
        ck_assert(seen_fl[0] && seen_fl[1] == cases[c].flip);
        /* a crop keeps a sample with probability 1/(2P+1)^2 (1/2 more with flips); a flip
         * alone keeps half */
        ck_assert_msg(changed >= (P > 0 ? NS * 3 / 4 : NS / 4), "case %zu: only %d of %d samples changed",
                      c, changed, NS);
        free(x);
        free(y);
        free(ref);
        free(scratch);
    }
    /* a step's stream: the seed and the step decide it, nothing else */
    cg_rng a, b;
    cg_augment_seed(&a, 3, 41);
    cg_augment_seed(&b, 3, 41);
    ck_assert(cg_rng_next(&a) == cg_rng_next(&b));
    cg_augment_seed(&b, 3, 42);
    ck_assert(cg_rng_next(&a) != cg_rng_next(&b));
    cg_augment_seed(&b, 4, 41);
    cg_augment_seed(&a, 3, 41);
    ck_assert(cg_rng_next(&a) != cg_rng_next(&b));
}
END_TEST

START_TEST(test_lr_schedules)
{
    for (int e = 0; e < 12; e++) {
        ck_assert_float_eq(cg_lr_at(CG_SCHED_CONSTANT, 0.1f, e, 12, 3, 0.5f), 0.1f);
        ck_assert_double_eq_tol(cg_lr_at(CG_SCHED_STEP, 0.1f, e, 12, 3, 0.5f),
                                0.1 * pow(0.5, e / 3), 1e-8);
        ck_assert_double_eq_tol(cg_lr_at(CG_SCHED_COSINE, 0.1f, e, 12, 3, 0.5f),
                                0.05 * (1 + cos(3.14159265358979323846 * e / 12)), 1e-8);
    }
}
END_TEST

/* every mode and order reaches the least-squares solution */
START_TEST(test_modes_converge)
{
    cg_net net = lin_net();
    static lin_data d;
    make_lin(&d, 64, 5, 0, 0);
    struct { int mode, order, epochs; float lr, mom; } cases[] = {
        {CG_MODE_MINIBATCH, CG_ORDER_SHUFFLE, 40, 0.1f, 0.9f},
        {CG_MODE_MINIBATCH, CG_ORDER_RANDOM, 40, 0.1f, 0.9f},
        {CG_MODE_SGD, CG_ORDER_SHUFFLE, 15, 0.05f, 0.0f},
        {CG_MODE_SGD, CG_ORDER_RANDOM, 15, 0.05f, 0.0f},
        {CG_MODE_FULL, CG_ORDER_SHUFFLE, 150, 0.5f, 0.8f},
        {CG_MODE_FULL, CG_ORDER_RANDOM, 150, 0.5f, 0.8f},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        cg_train_opts o;
        base_opts(&o, &net, "conv");
        o.train_ds = &d.ds;
        o.h.mode = cases[c].mode;
        o.h.order = cases[c].order;
        o.h.epochs = cases[c].epochs;
        o.h.lr = cases[c].lr;
        o.h.momentum = cases[c].mom;
        o.h.seed = 3;
        cg_train_result res;
        cg_err e;
        ck_assert_msg(cg_train(&net, &o, &res, &e) == 0, "%s", e.msg);
        long long spe = cases[c].mode == CG_MODE_FULL  ? 1
                        : cases[c].mode == CG_MODE_SGD ? 64
                                                        : 8;
        ck_assert_int_eq(res.steps, spe * cases[c].epochs);
        float p[3];
        load_params(&net, tpath("conv/final.npz"), p, NULL);
        for (int k = 0; k < 3; k++)
            ck_assert_msg(fabs(p[k] - W_TRUE[k]) < 2e-3, "case %zu: param %d = %g, want %g "
                          "(loss %g)", c, k, p[k], W_TRUE[k], res.last_train_loss);
        ck_assert_msg(res.last_train_loss < 1e-5, "case %zu: loss %g", c, res.last_train_loss);
    }
}
END_TEST

/* --mode full: one step equals the analytic full-batch gradient-descent step (chunks of
 * 8, 8, 7, 7, 7 for N = 37), with weight decay and momentum (first step: v = g + wd p) */
START_TEST(test_full_batch_step_is_analytic)
{
    cg_net net = lin_net();
    static lin_data d;
    make_lin(&d, 37, 9, 0, 0);
    for (int i = 0; i < 37; i++) /* targets off the solution so the gradient is large */
        d.y[i] += (float)(i % 5) * 0.3f;
    float p0[3] = {0.3f, 0.2f, -0.1f};
    cg_err e;
    ck_assert_int_eq(cg_weights_save(&net, tpath("init.npz"), p0, NULL, &e), 0);
    cg_train_opts o;
    base_opts(&o, &net, "full");
    o.train_ds = &d.ds;
    o.init_weights = tpath("init.npz");
    o.h.mode = CG_MODE_FULL;
    o.h.epochs = 1;
    o.h.lr = 0.1f;
    o.h.momentum = 0.9f;
    o.h.weight_decay = 0.01f;
    cg_train_result res;
    ck_assert_msg(cg_train(&net, &o, &res, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(res.steps, 1);
    double g[3] = {0, 0, 0}, loss = 0;
    for (int i = 0; i < 37; i++) {
        double r = p0[0] * d.x[2 * i] + p0[1] * d.x[2 * i + 1] + p0[2] - d.y[i];
        loss += r * r / 37;
        g[0] += 2 * r * d.x[2 * i] / 37;
        g[1] += 2 * r * d.x[2 * i + 1] / 37;
        g[2] += 2 * r / 37;
    }
    float p[3];
    load_params(&net, tpath("full/final.npz"), p, NULL);
    for (int k = 0; k < 3; k++) {
        double want = p0[k] - 0.1 * (g[k] + 0.01 * p0[k]);
        ck_assert_msg(fabs(p[k] - want) < 1e-6, "param %d: %.9g, analytic %.9g", k, p[k], want);
    }
    ck_assert_double_eq_tol(res.last_train_loss, loss, 1e-5);
}
END_TEST

/* batch norm running averages after several steps equal PyTorch's formula
 * running = (1 - m) running + m batch (unbiased variance); validation (every epoch) must run
 * in inference mode and leave them alone */
START_TEST(test_bn_running_averages)
{
    const cg_net *net = test_net("t_bn_f"); /* batchnorm(6) at layer 0, momentum 0.1, batch 4 */
    enum { NT = 4, NV = 3, F = 6, STEPS = 5 };
    static float x[(NT + NV) * F];
    int64_t y[NT + NV];
    cg_rng r;
    cg_rng_seed(&r, 21);
    for (int i = 0; i < (NT + NV) * F; i++)
        x[i] = 3 * cg_rng_uniform(&r) + (float)(i % F);
    for (int i = 0; i < NT + NV; i++)
        y[i] = i % 3;
    cg_dataset ds = {.n = NT + NV, .s_ndim = 1, .s_shape = {F}, .x_size = F, .x = x,
                     .labels = y, .n_classes = 3};
    for (int mode = 0; mode < 2; mode++) {
        cg_train_opts o;
        base_opts(&o, net, "bn");
        o.train_ds = &ds;
        o.h.val = NV;
        o.h.mode = mode ? CG_MODE_FULL : CG_MODE_MINIBATCH; /* one step an epoch either way */
        o.h.batch = 4;
        o.h.epochs = STEPS;
        o.h.lr = 0.05f;
        cg_train_result res;
        cg_err e;
        ck_assert_msg(cg_train(net, &o, &res, &e) == 0, "%s", e.msg);
        ck_assert_int_eq(res.steps, STEPS);
        ck_assert_int_eq(res.evals, STEPS);
        float *p = calloc(net->n_params, sizeof(float)), *b = calloc(net->n_buffers, sizeof(float));
        load_params(net, tpath("bn/last.npz"), p, b);
        const cg_tensor *rm = NULL, *rv = NULL, *nbt0 = NULL, *nbt2 = NULL;
        for (int i = 0; i < net->n_tensors; i++) {
            const cg_tensor *t = &net->tensors[i];
            if (!strcmp(t->name, "0.running_mean")) rm = t;
            if (!strcmp(t->name, "0.running_var")) rv = t;
            if (!strcmp(t->name, "0.num_batches_tracked")) nbt0 = t;
            if (!strcmp(t->name, "2.num_batches_tracked")) nbt2 = t;
        }
        ck_assert(rm && rv && nbt0 && nbt2);
        ck_assert_float_eq(b[nbt0->offset], STEPS);
        ck_assert_float_eq(b[nbt2->offset], STEPS);
        for (int f = 0; f < F; f++) {
            double mean = 0, var = 0;
            for (int i = 0; i < NT; i++)
                mean += x[i * F + f] / (double)NT;
            for (int i = 0; i < NT; i++)
                var += (x[i * F + f] - mean) * (x[i * F + f] - mean) / (NT - 1);
            double m = 0, v = 1;
            for (int s = 0; s < STEPS; s++) {
                m = 0.9 * m + 0.1 * mean;
                v = 0.9 * v + 0.1 * var;
            }
            ck_assert_msg(fabs(b[rm->offset + f] - m) < 1e-5 * (1 + fabs(m)),
                          "running_mean[%d] %g, want %g", f, b[rm->offset + f], m);
            ck_assert_msg(fabs(b[rv->offset + f] - v) < 1e-5 * (1 + fabs(v)),
                          "running_var[%d] %g, want %g", f, b[rv->offset + f], v);
        }
        free(p);
        free(b);
    }
}
END_TEST

/* early stopping: validation targets follow w0 = 1, training targets w0 = 1.5, starting from
 * w0 = 0: validation improves, then worsens; the run stops after `patience` evaluations
 * without improvement and ends with the best parameters (final.npz == best.npz) */
START_TEST(test_early_stopping_restores_best)
{
    cg_net net = lin_net();
    static lin_data d;
    make_lin(&d, 60, 13, 20, 0.5f);
    float p0[3] = {0, 0, 0};
    cg_err e;
    ck_assert_int_eq(cg_weights_save(&net, tpath("zero.npz"), p0, NULL, &e), 0);
    cg_train_opts o;
    base_opts(&o, &net, "es");
    o.train_ds = &d.ds;
    o.init_weights = tpath("zero.npz");
    o.h.val = 20;
    o.h.patience = 3;
    o.h.epochs = 200;
    o.h.lr = 0.02f;
    o.h.momentum = 0;
    o.h.batch = 8;
    o.h.eval_every = 2; /* every 2 steps (5 steps an epoch) */
    cg_train_result res;
    ck_assert_msg(cg_train(&net, &o, &res, &e) == 0, "%s", e.msg);
    ck_assert(res.stopped_early);
    ck_assert_int_lt(res.epochs_done, 200);
    float pf[3], pb[3], pl[3];
    load_params(&net, tpath("es/final.npz"), pf, NULL);
    load_params(&net, tpath("es/best.npz"), pb, NULL);
    load_params(&net, tpath("es/last.npz"), pl, NULL);
    ck_assert(memcmp(pf, pb, sizeof pf) == 0);
    ck_assert(memcmp(pf, pl, sizeof pf) != 0);
    ck_assert_msg(pf[0] > 0.2f && pf[0] < 1.0f && pl[0] > pf[0], "best w0 %g, last w0 %g", pf[0],
                  pl[0]);
    /* the log: the minimum validation loss is at best_step, followed by exactly 3 rows */
    FILE *f = fopen(tpath("es/log.csv"), "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "step,epoch,train_loss,val_loss,val_acc,lr,time_s\n");
    long long best_step = -1, step;
    double best = INFINITY, ep, tl, vl;
    int rows = 0, best_row = -1;
    while (fgets(line, sizeof line, f)) {
        ck_assert_int_ge(sscanf(line, "%lld,%lf,%lf,%lf", &step, &ep, &tl, &vl), 4);
        ck_assert_int_eq(step, 2 * (rows + 1));
        if (vl < best)
            best = vl, best_step = step, best_row = rows;
        rows++;
    }
    fclose(f);
    ck_assert_int_eq(rows, res.evals);
    ck_assert_int_eq(best_step, res.best_step);
    ck_assert_int_eq(rows - 1 - best_row, 3);
    ck_assert_double_eq_tol(best, res.best_val_loss, 1e-6 * best + 1e-12);
    /* the restored parameters give the best validation loss again */
    double vsum = 0;
    for (int i = 40; i < 60; i++) {
        double rr = pf[0] * d.x[2 * i] + pf[1] * d.x[2 * i + 1] + pf[2] - d.y[i];
        vsum += rr * rr / 20;
    }
    ck_assert_double_eq_tol(vsum, res.best_val_loss, 1e-5);
}
END_TEST

/* ---- kill and resume ---- */
typedef struct {
    float x[120 * 36];
    int64_t y[120];
    cg_dataset ds;
} bn_data;

static void make_bn_data(bn_data *d, int n)
{
    cg_rng r;
    cg_rng_seed(&r, 31);
    for (int i = 0; i < n; i++) {
        int c = (int)cg_rng_below(&r, 4);
        d->y[i] = c;
        for (int k = 0; k < 36; k++) /* class c: a bright quadrant */
            d->x[i * 36 + k] = cg_rng_uniform(&r) * 0.5f +
                               ((k / 6 < 3) == (c & 1) && (k % 6 < 3) == (c >> 1) ? 0.6f : 0.0f);
    }
    memset(&d->ds, 0, sizeof d->ds);
    d->ds.n = (size_t)n;
    d->ds.s_ndim = 3;
    d->ds.s_shape[0] = 1;
    d->ds.s_shape[1] = 6;
    d->ds.s_shape[2] = 6;
    d->ds.x_size = 36;
    d->ds.x = d->x;
    d->ds.labels = d->y;
    d->ds.n_classes = 4;
}

static void same_weights(const cg_net *net, const char *a, const char *b)
{
    float *p1 = calloc(net->n_params, 4), *p2 = calloc(net->n_params, 4);
    float *b1 = calloc(net->n_buffers + 1, 4), *b2 = calloc(net->n_buffers + 1, 4);
    load_params(net, a, p1, b1);
    load_params(net, b, p2, b2);
    ck_assert_msg(memcmp(p1, p2, net->n_params * 4) == 0, "%s and %s: parameters differ", a, b);
    ck_assert_msg(memcmp(b1, b2, net->n_buffers * 4) == 0, "%s and %s: buffers differ", a, b);
    free(p1);
    free(p2);
    free(b1);
    free(b2);
}

static int weights_equal(const cg_net *net, const char *a, const char *b)
{
    float *p1 = calloc(net->n_params, 4), *p2 = calloc(net->n_params, 4);
    float *b1 = calloc(net->n_buffers + 1, 4), *b2 = calloc(net->n_buffers + 1, 4);
    load_params(net, a, p1, b1);
    load_params(net, b, p2, b2);
    int eq = memcmp(p1, p2, net->n_params * 4) == 0;
    free(p1);
    free(p2);
    free(b1);
    free(b2);
    return eq;
}

/* log.csv without the wall-time column */
static void same_logs(const char *a, const char *b)
{
    FILE *f = fopen(a, "r"), *g = fopen(b, "r");
    ck_assert(f && g);
    char l1[512], l2[512];
    int n = 0;
    for (;;) {
        char *r1 = fgets(l1, sizeof l1, f), *r2 = fgets(l2, sizeof l2, g);
        ck_assert_msg(!r1 == !r2, "%s and %s: different lengths", a, b);
        if (!r1)
            break;
        *strrchr(l1, ',') = 0;
        *strrchr(l2, ',') = 0;
        ck_assert_msg(!strcmp(l1, l2), "log line %d: '%s' vs '%s'", n, l1, l2);
        n++;
    }
    ck_assert_int_gt(n, 2);
    fclose(f);
    fclose(g);
}

static void resume_opts(cg_train_opts *o, const cg_net *net, const cg_dataset *ds, int mode,
                        int order, const char *out)
{
    base_opts(o, net, out);
    o->train_ds = ds;
    o->h.val = 20;
    o->h.mode = mode;
    o->h.order = order;
    o->h.batch = 8;
    o->h.epochs = mode == CG_MODE_FULL ? 30 : 3;
    o->h.lr = mode == CG_MODE_SGD ? 0.01f : 0.05f;
    o->h.momentum = 0.9f;
    o->h.weight_decay = 1e-3f;
    o->h.schedule = CG_SCHED_COSINE;
    o->h.eval_every = 5;
    o->h.checkpoint_every = 4;
    o->h.seed = 77;
}

START_TEST(test_kill_and_resume_in_process)
{
    const cg_net *net = test_net("t_train_bn");
    static bn_data d;
    make_bn_data(&d, 120);
    struct { int mode, order; } cases[] = {{CG_MODE_MINIBATCH, CG_ORDER_SHUFFLE},
                                           {CG_MODE_SGD, CG_ORDER_RANDOM},
                                           {CG_MODE_FULL, CG_ORDER_SHUFFLE}};
    for (size_t c = 0; c < 3; c++) {
        cg_train_opts o;
        cg_train_result ra, rb;
        cg_err e;
        resume_opts(&o, net, &d.ds, cases[c].mode, cases[c].order, "a");
        ck_assert_msg(cg_train(net, &o, &ra, &e) == 0, "%s", e.msg);
        ck_assert(!ra.killed);
        /* the same run killed twice (after 10 and 9 more steps), resumed each time */
        resume_opts(&o, net, &d.ds, cases[c].mode, cases[c].order, "b");
        o.max_steps = 10;
        ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
        ck_assert(rb.killed);
        ck_assert_int_eq(access(tpath("b/final.npz"), F_OK), -1);
        o.resume = 1;
        o.max_steps = 9;
        ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
        ck_assert(rb.killed);
        ck_assert_int_eq(rb.steps, 8 + 9); /* resumed from the checkpoint at step 8 */
        o.max_steps = 0;
        ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
        ck_assert(!rb.killed);
        ck_assert_int_eq(rb.steps, ra.steps);
        ck_assert_int_eq(rb.best_step, ra.best_step);
        ck_assert(rb.test_acc == ra.test_acc || (isnan(rb.test_acc) && isnan(ra.test_acc)));
        same_weights(net, tpath("a/last.npz"), tpath("b/last.npz"));
        same_weights(net, tpath("a/final.npz"), tpath("b/final.npz"));
        same_weights(net, tpath("a/best.npz"), tpath("b/best.npz"));
        same_logs(tpath("a/log.csv"), tpath("b/log.csv"));
        /* a setting that decides the samples of a step is refused */
        o.h.seed = 78;
        ck_assert_int_eq(cg_train(net, &o, &rb, &e), -1);
        ck_assert_msg(strstr(e.msg, "checkpoint.npz") && strstr(e.msg, "--seed 77"), "%s", e.msg);
        rm_tree(tpath("a"), 1);
        rm_tree(tpath("b"), 1);
    }
}
END_TEST

/* Rewrites one array of an .npz through f (a hand-edited file). */
static void edit_npz(const char *path, const char *key, void (*f)(cg_array *))
{
    cg_npz z;
    cg_err e;
    ck_assert_msg(cg_npz_read(path, &z, &e) == 0, "%s", e.msg);
    int k;
    for (k = 0; k < z.n && strcmp(z.keys[k], key) != 0; k++) {}
    ck_assert_int_lt(k, z.n);
    f(&z.arrays[k]);
    ck_assert_msg(cg_npz_write(path, z.n, (const char *const *)z.keys, z.arrays, &e) == 0, "%s", e.msg);
    cg_npz_free(&z);
}
static void set_nan0(cg_array *a) { ((float *)a->data)[0] = NAN; }
static void set_inf_last(cg_array *a) { ((float *)a->data)[a->count - 1] = INFINITY; }
static void set_epoch_max(cg_array *a) { ((int64_t *)a->data)[0] = INT64_MAX; }
static void set_gstep_max(cg_array *a) { ((int64_t *)a->data)[2] = INT64_MAX; }

static void copy_file(const char *from, const char *to)
{
    FILE *f = fopen(from, "rb"), *g = fopen(to, "wb");
    ck_assert(f && g);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) ck_assert_uint_eq(fwrite(buf, 1, n, g), n);
    fclose(f);
    ck_assert_int_eq(fclose(g), 0);
}

/* Hostile run state: a second run into a locked --out is refused naming the folder;
 * non-finite weights (--weights) and checkpoint tensors, and INT64_MAX counters in a
 * hand-edited checkpoint are refused naming what is wrong; --resume with no checkpoint
 * yet starts fresh. */
START_TEST(test_hostile_run_state)
{
    const cg_net *net = test_net("t_train_bn");
    static bn_data d;
    make_bn_data(&d, 120);
    cg_train_opts o;
    cg_train_result res;
    cg_err e;
    resume_opts(&o, net, &d.ds, CG_MODE_MINIBATCH, CG_ORDER_SHUFFLE, "h");
    o.h.epochs = 1;
    /* resume with nothing to resume from: a fresh run, which writes a checkpoint */
    o.resume = 1;
    ck_assert_msg(cg_train(net, &o, &res, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(access(tpath("h/checkpoint.npz"), F_OK), 0);
    o.resume = 0;

    /* the lock: held by another open file description (another run), the run is refused */
    int fd = open(tpath("h"), O_RDONLY | O_DIRECTORY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    ck_assert_int_eq(cg_train(net, &o, &res, &e), -1);
    ck_assert_msg(strstr(e.msg, tpath("h")) && strstr(e.msg, "another run is training into this output directory"),
                  "%s", e.msg);
    close(fd);
    /* stale temporary files of a killed run go when the next run holds the lock */
    FILE *stale = fopen(tpath("h/checkpoint.npz.tmp.999999.0"), "w");
    ck_assert_ptr_nonnull(stale);
    fclose(stale);
    ck_assert_msg(cg_train(net, &o, &res, &e) == 0, "%s", e.msg);
    ck_assert_int_ne(access(tpath("h/checkpoint.npz.tmp.999999.0"), F_OK), 0);

    /* --weights with a NaN or an Inf: refused, the tensor named */
    float *p = calloc(net->n_params, 4), *b = calloc(net->n_buffers + 1, 4);
    copy_file(tpath("h/final.npz"), tpath("w_nan.npz"));
    edit_npz(tpath("w_nan.npz"), "0.weight", set_nan0);
    ck_assert_int_eq(cg_weights_load(net, tpath("w_nan.npz"), p, b, &e), -1);
    ck_assert_msg(strstr(e.msg, "'0.weight'") && strstr(e.msg, "finite"), "%s", e.msg);
    copy_file(tpath("h/final.npz"), tpath("w_inf.npz"));
    edit_npz(tpath("w_inf.npz"), "5.bias", set_inf_last);
    ck_assert_int_eq(cg_weights_load(net, tpath("w_inf.npz"), p, b, &e), -1);
    ck_assert_msg(strstr(e.msg, "'5.bias'") && strstr(e.msg, "inf"), "%s", e.msg);
    o.init_weights = tpath("w_nan.npz");
    ck_assert_int_eq(cg_train(net, &o, &res, &e), -1);
    ck_assert_msg(strstr(e.msg, "'0.weight'"), "%s", e.msg);
    o.init_weights = NULL;
    free(p);
    free(b);

    /* hand-edited checkpoints */
    struct { const char *key; void (*f)(cg_array *); const char *want; } bad[] = {
        {"pos", set_epoch_max, "corrupt position counters"}, {"pos", set_gstep_max, "corrupt position counters"},
        {"params", set_nan0, "'params' has the non-finite value"},
        {"velocity", set_inf_last, "'velocity' has the non-finite value"}};
    copy_file(tpath("h/checkpoint.npz"), tpath("ck_saved.npz"));
    o.resume = 1;
    o.h.epochs = 3;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        copy_file(tpath("ck_saved.npz"), tpath("h/checkpoint.npz"));
        edit_npz(tpath("h/checkpoint.npz"), bad[i].key, bad[i].f);
        ck_assert_int_eq(cg_train(net, &o, &res, &e), -1);
        ck_assert_msg(strstr(e.msg, bad[i].want), "case %zu: %s", i, e.msg);
    }
    /* a member far larger than anything a checkpoint of this run holds: refused from the
     * zip directory, before it is inflated */
    {
        cg_npz z;
        ck_assert_msg(cg_npz_read(tpath("ck_saved.npz"), &z, &e) == 0, "%s", e.msg);
        const char *keys[16];
        cg_array arrs[16];
        ck_assert_int_lt(z.n, 15);
        for (int k = 0; k < z.n; k++) keys[k] = z.keys[k], arrs[k] = z.arrays[k];
        static float junk[100 * 8 * 8];
        keys[z.n] = "junk";
        arrs[z.n] = (cg_array){.dtype = CG_F4, .ndim = 3, .shape = {100, 8, 8}, .count = 6400, .data = junk};
        ck_assert_msg(cg_npz_write(tpath("h/checkpoint.npz"), z.n + 1, keys, arrs, &e) == 0, "%s", e.msg);
        cg_npz_free(&z);
        ck_assert_int_eq(cg_train(net, &o, &res, &e), -1);
        ck_assert_msg(strstr(e.msg, "junk.npy: member of 25728 bytes, larger than any array expected here"), "%s",
                      e.msg);
    }
    rm_tree(tpath("h"), 1);
}
END_TEST

/* A gz IDX file or an npz member whose header already shows the wrong sample shape is
 * refused from the header, before the data is inflated (a 400 KB .gz grew to 2 GB). */
START_TEST(test_header_refused_before_inflating)
{
    const cg_net *net = test_net("t_train_bn"); /* input 1x6x6: 36 values */
    cg_err e;
    /* 20000 images of 64x64 claimed: 82 MB inflated, about 80 KB compressed */
    gzFile g = gzopen(tpath("big-idx3.gz"), "wb");
    ck_assert_ptr_nonnull(g);
    unsigned char hdr[16] = {0, 0, 8, 3, 0, 0, 0x4e, 0x20, 0, 0, 0, 64, 0, 0, 0, 64};
    ck_assert_int_eq(gzwrite(g, hdr, 16), 16);
    static unsigned char zeros[1 << 16];
    for (int i = 0; i < 20000 * 64 * 64 / (1 << 16); i++) ck_assert_int_eq(gzwrite(g, zeros, sizeof zeros), (int)sizeof zeros);
    ck_assert_int_eq(gzclose(g), Z_OK);
    cg_dataset ds;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(cg_xy_load_expect(tpath("big-idx3.gz"), tpath("big-idx3.gz"), net->in_size, &ds, &e), -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ck_assert_msg(strstr(e.msg, "the IDX header gives samples of 4096 values, the network takes 36"), "%s", e.msg);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    ck_assert_msg(secs < 0.5, "refusing took %.3f s (inflating the whole file takes longer)", secs);
    /* the same through a data directory (train-images-idx3-ubyte.gz) */
    ck_assert_int_eq(mkdir(tpath("idxdir"), 0777), 0);
    ck_assert_int_eq(rename(tpath("big-idx3.gz"), tpath("idxdir/train-images-idx3-ubyte.gz")), 0);
    FILE *f = fopen(tpath("idxdir/train-labels-idx1-ubyte"), "wb");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    ck_assert_int_eq(cg_data_path_load(net, tpath("idxdir"), CG_SPLIT_TRAIN, &ds, &e), -1);
    ck_assert_msg(strstr(e.msg, "the IDX header gives samples of 4096 values"), "%s", e.msg);
    /* an npz whose x member says [100, 8, 8] (a 25 KB member, read header first) */
    cg_array x = {0}, y = {0};
    int64_t xs[3] = {100, 8, 8}, ys[1] = {100};
    ck_assert_int_eq(cg_array_alloc(&x, CG_F4, 3, xs, &e), 0);
    ck_assert_int_eq(cg_array_alloc(&y, CG_I8, 1, ys, &e), 0);
    memset(x.data, 0, x.count * 4);
    memset(y.data, 0, y.count * 8);
    const char *keys[2] = {"x", "y"};
    cg_array arrs[2] = {x, y};
    ck_assert_msg(cg_npz_write(tpath("big.npz"), 2, keys, arrs, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(cg_data_path_load(net, tpath("big.npz"), CG_SPLIT_TRAIN, &ds, &e), -1);
    ck_assert_msg(strstr(e.msg, "big.npz:x.npy: the header gives shape (100, 8, 8), not samples of 36 values"), "%s",
                  e.msg);
    /* a weights file whose member is larger than any tensor of the net (48 floats here):
     * refused from the zip directory */
    const char *wk[1] = {"0.weight"};
    cg_array w[1] = {x};
    ck_assert_msg(cg_npz_write(tpath("bigw.npz"), 1, wk, w, &e) == 0, "%s", e.msg);
    float *p = calloc(net->n_params, 4), *b = calloc(net->n_buffers + 1, 4);
    ck_assert_int_eq(cg_weights_load(net, tpath("bigw.npz"), p, b, &e), -1);
    ck_assert_msg(strstr(e.msg, "bigw.npz:0.weight.npy: member of 25728 bytes, larger than any array expected here"),
                  "%s", e.msg);
    free(p);
    free(b);
    cg_array_free(&x);
    cg_array_free(&y);
}
END_TEST

/* --resume with changed settings: --epochs, --lr, --momentum, --schedule, --patience ...
 * apply from the checkpoint on; batch, mode, order, seed, data, normalization and the
 * monitored objective are refused with the option named */
static void recipe_opts(cg_train_opts *o, const cg_net *net, const cg_dataset *ds, int optimizer,
                        const char *out)
{
    resume_opts(o, net, ds, CG_MODE_MINIBATCH, CG_ORDER_SHUFFLE, out);
    o->h.optimizer = optimizer;
    o->h.momentum = 0;
    o->h.lr = 0.01f;
    o->h.weight_decay = 0.05f;
    o->h.warmup = 1;
    o->h.aug_crop = 1;
    o->h.aug_flip = 1;
}

/* Adam and AdamW with warmup and augmentation: killed twice and resumed, the same run bit
 * for bit; augmentation and the optimizer each change the result (they are applied) */
START_TEST(test_recipes_kill_and_resume)
{
    const cg_net *net = test_net("t_train_bn");
    static bn_data d;
    make_bn_data(&d, 120);
    const int optimizers[2] = {CG_OPT_ADAM, CG_OPT_ADAMW};
    for (int c = 0; c < 2; c++) {
        cg_train_opts o;
        cg_train_result ra, rb;
        cg_err e;
        recipe_opts(&o, net, &d.ds, optimizers[c], "a");
        ck_assert_msg(cg_train(net, &o, &ra, &e) == 0, "%s", e.msg);
        recipe_opts(&o, net, &d.ds, optimizers[c], "b");
        o.max_steps = 10;
        ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
        ck_assert(rb.killed);
        o.resume = 1;
        o.max_steps = 9;
        ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
        ck_assert_int_eq(rb.steps, 8 + 9);
        o.max_steps = 0;
        ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
        ck_assert_int_eq(rb.steps, ra.steps);
        same_weights(net, tpath("a/last.npz"), tpath("b/last.npz"));
        same_weights(net, tpath("a/best.npz"), tpath("b/best.npz"));
        same_logs(tpath("a/log.csv"), tpath("b/log.csv"));
        /* the optimizer cannot change on --resume */
        o.h.optimizer = CG_OPT_SGD;
        ck_assert_int_eq(cg_train(net, &o, &rb, &e), -1);
        ck_assert_msg(strstr(e.msg, "--optimizer") && strstr(e.msg, optimizers[c] == CG_OPT_ADAM ? "adam" : "adamw"),
                      "%s", e.msg);
        /* without augmentation, and with the other Adam, other weights */
        recipe_opts(&o, net, &d.ds, optimizers[c], "c");
        o.h.aug_crop = 0;
        o.h.aug_flip = 0;
        ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
        ck_assert_msg(!weights_equal(net, tpath("a/last.npz"), tpath("c/last.npz")),
                      "augmentation changed nothing");
        recipe_opts(&o, net, &d.ds, optimizers[c], "d");
        o.h.optimizer = CG_OPT_ADAM + CG_OPT_ADAMW - optimizers[c];
        ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
        ck_assert_msg(!weights_equal(net, tpath("a/last.npz"), tpath("d/last.npz")),
                      "Adam and AdamW gave the same weights");
        for (const char *s = "abcd"; *s; s++) {
            char dir[2] = {*s, 0};
            rm_tree(tpath(dir), 1);
        }
    }
    /* augmentation of a network without [C, H, W] inputs is refused */
    cg_net lin = lin_net();
    static lin_data ld;
    make_lin(&ld, 64, 5, 0, 0);
    cg_train_opts o;
    cg_err e;
    base_opts(&o, &lin, "lin");
    o.train_ds = &ld.ds;
    o.h.aug_flip = 1;
    ck_assert_int_eq(cg_train(&lin, &o, NULL, &e), -1);
    ck_assert_msg(strstr(e.msg, "[C, H, W]"), "%s", e.msg);
}
END_TEST

START_TEST(test_resume_changed_settings)
{
    const cg_net *net = test_net("t_train_bn");
    static bn_data d;
    make_bn_data(&d, 120);
    cg_train_opts o;
    cg_train_result ra, rb;
    cg_err e;
    /* A: 5 epochs uninterrupted; B: 3 epochs (ends with a checkpoint although 39 steps is no
     * multiple of 4), then --resume --epochs 5: the same run, bit for bit */
    resume_opts(&o, net, &d.ds, CG_MODE_MINIBATCH, CG_ORDER_SHUFFLE, "a");
    o.h.schedule = CG_SCHED_CONSTANT;
    o.h.eval_every = 0;
    o.h.epochs = 5;
    ck_assert_msg(cg_train(net, &o, &ra, &e) == 0, "%s", e.msg);
    resume_opts(&o, net, &d.ds, CG_MODE_MINIBATCH, CG_ORDER_SHUFFLE, "b");
    o.h.schedule = CG_SCHED_CONSTANT;
    o.h.eval_every = 0;
    ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(rb.steps, 39);
    cg_npz z;
    ck_assert_msg(cg_npz_read(tpath("b/checkpoint.npz"), &z, &e) == 0, "%s", e.msg);
    const cg_array *pos = cg_npz_get(&z, "pos");
    ck_assert(pos && pos->count > 2);
    ck_assert_int_eq(((int64_t *)pos->data)[2], 39); /* the global step: the run's end */
    cg_npz_free(&z);
    o.resume = 1;
    o.h.epochs = 5;
    ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(rb.steps, ra.steps);
    same_weights(net, tpath("a/last.npz"), tpath("b/last.npz"));
    same_weights(net, tpath("a/final.npz"), tpath("b/final.npz"));
    same_weights(net, tpath("a/best.npz"), tpath("b/best.npz"));
    same_logs(tpath("a/log.csv"), tpath("b/log.csv"));
    /* fewer epochs than the checkpoint has begun: refused, naming --epochs */
    o.h.epochs = 4;
    ck_assert_int_eq(cg_train(net, &o, &rb, &e), -1);
    ck_assert_msg(strstr(e.msg, "--epochs 5 or more"), "%s", e.msg);

    /* C: killed at step 20 (checkpoint at 20), resumed with another lr, momentum, schedule,
     * patience: accepted; the log's rows before step 20 are A's, the later ones carry the
     * new lr */
    resume_opts(&o, net, &d.ds, CG_MODE_MINIBATCH, CG_ORDER_SHUFFLE, "c");
    o.h.schedule = CG_SCHED_CONSTANT;
    o.h.eval_every = 0;
    o.h.epochs = 5;
    o.max_steps = 20;
    ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
    ck_assert(rb.killed);
    cg_train_opts c = o;
    c.resume = 1;
    c.max_steps = 0;
    c.h.lr = 0.01f;
    c.h.momentum = 0.5f;
    c.h.weight_decay = 0;
    c.h.schedule = CG_SCHED_STEP;
    c.h.step_size = 2;
    c.h.gamma = 0.5f;
    c.h.patience = 3;
    c.h.eval_every = 7;
    ck_assert_msg(cg_train(net, &c, &rb, &e) == 0, "%s", e.msg);
    FILE *fa = fopen(tpath("a/log.csv"), "r"), *fc = fopen(tpath("c/log.csv"), "r");
    ck_assert(fa && fc);
    char la[256], lc[256];
    int rows = 0, after = 0;
    while (fgets(lc, sizeof lc, fc)) {
        long long step = -1;
        double lr = 0;
        if (sscanf(lc, "%lld,%*[^,],%*[^,],%*[^,],%*[^,],%lf", &step, &lr) != 2)
            continue; /* the header */
        if (step <= 20) {
            ck_assert_ptr_nonnull(fgets(la, sizeof la, fa));
            if (rows == 0) /* A's header */
                ck_assert_ptr_nonnull(fgets(la, sizeof la, fa));
            *strrchr(la, ',') = 0;
            *strrchr(lc, ',') = 0;
            ck_assert_msg(!strcmp(la, lc), "row of step %lld: '%s' vs '%s'", step, la, lc);
            rows++;
        } else {
            double want = 0.01 * pow(0.5, (double)((step - 1) / 13 / 2)); /* the epoch of the step */
            ck_assert_msg(fabs(lr - want) < 1e-7, "step %lld: lr %g, expected %g", step, lr, want);
            after++;
        }
    }
    ck_assert_int_eq(rows, 1); /* the end of epoch 1 */
    ck_assert_int_ge(after, 3);
    fclose(fa);
    fclose(fc);

    /* refused: each names its option and keeps the checkpoint */
    struct { int field; const char *want; } bad[] = {
        {0, "--batch 8"}, {1, "--mode minibatch"}, {2, "--order shuffle"}, {3, "--seed 77"},
        {4, "--normalize off"}, {5, "--monitor loss"}, {6, "the samples differ"},
        {7, "training samples"}};
    static bn_data d2;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cg_train_opts r = o;
        r.resume = 1;
        r.max_steps = 1;
        switch (bad[i].field) {
        case 0: r.h.batch = 4; break;
        case 1: r.h.mode = CG_MODE_FULL; break;
        case 2: r.h.order = CG_ORDER_RANDOM; break;
        case 3: r.h.seed = 78; break;
        case 4: r.h.normalize = 1; break;
        case 5: r.h.monitor = CG_MONITOR_ERROR; break;
        case 6: /* the same size, one value changed */
            d2 = d;
            d2.ds.x = d2.x;
            d2.ds.labels = d2.y;
            d2.x[500] += 0.5f;
            r.train_ds = &d2.ds;
            break;
        case 7: r.h.val = 21; break;
        }
        ck_assert_int_eq(cg_train(net, &r, &rb, &e), -1);
        ck_assert_msg(strstr(e.msg, "c/checkpoint.npz") && strstr(e.msg, bad[i].want),
                      "case %zu: expected '%s' in: %s", i, bad[i].want, e.msg);
    }
}
END_TEST

/* a real kill: a child process trains with a checkpoint every step and gets SIGKILL
 * somewhere after its first checkpoint; resuming gives the uninterrupted run's weights */
START_TEST(test_kill_and_resume_sigkill)
{
    const cg_net *net = test_net("t_train_bn");
    static bn_data d;
    make_bn_data(&d, 120);
    cg_train_opts o;
    cg_train_result ra, rb;
    cg_err e;
    resume_opts(&o, net, &d.ds, CG_MODE_MINIBATCH, CG_ORDER_SHUFFLE, "a");
    o.h.epochs = 40;
    o.h.checkpoint_every = 1;
    ck_assert_msg(cg_train(net, &o, &ra, &e) == 0, "%s", e.msg);
    resume_opts(&o, net, &d.ds, CG_MODE_MINIBATCH, CG_ORDER_SHUFFLE, "b");
    o.h.epochs = 40;
    o.h.checkpoint_every = 1;
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        cg_train(net, &o, &rb, &e);
        _exit(0);
    }
    const char *ck = tpath("b/checkpoint.npz");
    for (int i = 0; i < 20000 && access(ck, F_OK) != 0; i++)
        nanosleep(&(struct timespec){0, 100000}, NULL);
    nanosleep(&(struct timespec){0, 3000000}, NULL);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    ck_assert_int_eq(access(ck, F_OK), 0);
    o.resume = 1;
    ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
    same_weights(net, tpath("a/last.npz"), tpath("b/last.npz"));
    same_weights(net, tpath("a/final.npz"), tpath("b/final.npz"));
    same_logs(tpath("a/log.csv"), tpath("b/log.csv"));
}
END_TEST

/* ---- data formats ---- */
static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void write_gz(const char *path, const void *b, size_t n)
{
    gzFile g = gzopen(path, "wb");
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(gzwrite(g, b, (unsigned)n), (int)n);
    gzclose(g);
}

static void write_arr(const char *path, int dtype, int ndim, const int64_t *shape, void *data)
{
    cg_array a = {.dtype = dtype, .ndim = ndim, .data = data};
    a.count = 1;
    for (int d = 0; d < ndim; d++)
        a.count *= (size_t)(a.shape[d] = shape[d]);
    cg_err e;
    ck_assert_msg(cg_npy_write(path, &a, &e) == 0, "%s", e.msg);
}

/* IDX image: magic 0x0000TTDD, big-endian dims, data */
static size_t idx_image(unsigned char *buf, int type, int ndim, const uint32_t *dims,
                        const void *data, size_t esize)
{
    buf[0] = buf[1] = 0;
    buf[2] = (unsigned char)type;
    buf[3] = (unsigned char)ndim;
    size_t n = 4, count = 1;
    for (int d = 0; d < ndim; d++) {
        buf[n++] = (unsigned char)(dims[d] >> 24);
        buf[n++] = (unsigned char)(dims[d] >> 16);
        buf[n++] = (unsigned char)(dims[d] >> 8);
        buf[n++] = (unsigned char)dims[d];
        count *= dims[d];
    }
    const unsigned char *s = data;
    for (size_t i = 0; i < count; i++)
        for (size_t k = 0; k < esize; k++) /* to big-endian */
            buf[n++] = s[i * esize + esize - 1 - k];
    return n;
}

static int train_files(const cg_net *net, const char *x, const char *y, const char *data,
                       cg_err *e)
{
    cg_train_opts o;
    base_opts(&o, net, "fmt");
    o.data_x = x;
    o.data_y = y;
    o.data = data;
    o.h.epochs = 1;
    o.h.val = 4;
    cg_train_result res;
    int rc = cg_train(net, &o, &res, e);
    if (rc == 0)
        ck_assert_uint_eq(res.n_train + res.n_val, 24);
    return rc;
}

START_TEST(test_data_formats)
{
    const cg_net *net = test_net("t_train_bn"); /* input 1x6x6, 4 classes */
    enum { N = 24 };
    static float xf[N * 36];
    static uint8_t xu[N * 36];
    int64_t y[N];
    uint8_t yu[N];
    for (int i = 0; i < N * 36; i++) {
        xu[i] = (uint8_t)(i * 7);
        xf[i] = xu[i] / 255.0f;
    }
    for (int i = 0; i < N; i++)
        y[i] = yu[i] = (uint8_t)(i % 4);
    cg_err e;
    /* .npy float32 [N, 1, 6, 6] + int64 labels */
    write_arr(tpath("x.npy"), CG_F4, 4, (int64_t[]){N, 1, 6, 6}, xf);
    write_arr(tpath("y.npy"), CG_I8, 1, (int64_t[]){N}, y);
    ck_assert_msg(train_files(net, tpath("x.npy"), tpath("y.npy"), NULL, &e) == 0, "%s", e.msg);
    /* .npy uint8 [N, 6, 6] (scaled to [0, 1]) + uint8 labels */
    write_arr(tpath("xu.npy"), CG_U1, 3, (int64_t[]){N, 6, 6}, xu);
    write_arr(tpath("yu.npy"), CG_U1, 1, (int64_t[]){N}, yu);
    ck_assert_msg(train_files(net, tpath("xu.npy"), tpath("yu.npy"), NULL, &e) == 0, "%s", e.msg);
    cg_dataset ds;
    ck_assert_int_eq(cg_xy_load(tpath("xu.npy"), tpath("yu.npy"), &ds, &e), 0);
    for (int i = 0; i < N * 36; i++)
        ck_assert_float_eq(ds.x[i], xf[i]);
    cg_dataset_free(&ds);
    /* IDX: uint8 images gz [N, 6, 6], labels plain; float32 IDX [N, 36] */
    static unsigned char buf[16 + N * 36 * 8];
    size_t n = idx_image(buf, 0x08, 3, (uint32_t[]){N, 6, 6}, xu, 1);
    write_gz(tpath("img.idx.gz"), buf, n);
    write_bytes(tpath("img.idx"), buf, n);
    write_bytes(tpath("img_short.idx"), buf, n - 5);
    n = idx_image(buf, 0x08, 1, (uint32_t[]){N}, yu, 1);
    write_bytes(tpath("lab.idx"), buf, n);
    yu[5] = 9;
    n = idx_image(buf, 0x08, 1, (uint32_t[]){N}, yu, 1);
    write_bytes(tpath("lab_bad.idx"), buf, n);
    buf[2] = 0x07;
    write_bytes(tpath("lab_magic.idx"), buf, n);
    ck_assert_msg(train_files(net, tpath("img.idx.gz"), tpath("lab.idx"), NULL, &e) == 0, "%s",
                  e.msg);
    ck_assert_int_eq(cg_xy_load(tpath("img.idx.gz"), tpath("lab.idx"), &ds, &e), 0);
    ck_assert_int_eq(ds.s_ndim, 2);
    ck_assert_float_eq(ds.x[37], xf[37]);
    cg_dataset_free(&ds);
    n = idx_image(buf, 0x0D, 2, (uint32_t[]){N, 36}, xf, 4);
    write_bytes(tpath("imgf.idx"), buf, n);
    ck_assert_msg(train_files(net, tpath("imgf.idx"), tpath("y.npy"), NULL, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(cg_xy_load(tpath("imgf.idx"), tpath("y.npy"), &ds, &e), 0);
    ck_assert_float_eq(ds.x[100], xf[100]);
    cg_dataset_free(&ds);
    /* CSV with a header, label first */
    FILE *f = fopen(tpath("d.csv"), "w");
    fputs("label", f);
    for (int k = 0; k < 36; k++)
        fprintf(f, ",p%d", k);
    fputs("\r\n", f);
    for (int i = 0; i < N; i++) {
        fprintf(f, "%d", (int)y[i]);
        for (int k = 0; k < 36; k++)
            fprintf(f, ",%d", xu[i * 36 + k]);
        fputs("\n", f);
    }
    fclose(f);
    ck_assert_msg(train_files(net, NULL, NULL, tpath("d.csv"), &e) == 0, "%s", e.msg);
    ck_assert_int_eq(cg_csv_load(tpath("d.csv"), &ds, &e), 0);
    ck_assert_int_eq(ds.n, N);
    ck_assert(ds.scaled_u8);
    ck_assert_float_eq(ds.x[40], xf[40]);
    ck_assert_int_eq(ds.labels[7], 3);
    cg_dataset_free(&ds);
    /* .npz with x, y */
    cg_array za[2] = {{.dtype = CG_F4, .ndim = 4, .shape = {N, 1, 6, 6}, .count = N * 36, .data = xf},
                      {.dtype = CG_I8, .ndim = 1, .shape = {N}, .count = N, .data = y}};
    ck_assert_int_eq(cg_npz_write(tpath("d.npz"), 2, (const char *[]){"x", "y"}, za, &e), 0);
    ck_assert_msg(train_files(net, NULL, NULL, tpath("d.npz"), &e) == 0, "%s", e.msg);

    /* ---- malformed: a clear error naming the file ---- */
    struct { const char *x, *y, *data, *file, *word; } bad[] = {
        {"img_short.idx", "lab.idx", NULL, "img_short.idx", "truncated"},
        {"img.idx", "lab_magic.idx", NULL, "lab_magic.idx", "magic"},
        {"img.idx", "lab_bad.idx", NULL, "lab_bad.idx", "out of range"},
        {"xbadshape.npy", "y.npy", NULL, "xbadshape.npy", "shape"},
        {"x.npy", "yshort.npy", NULL, "yshort.npy", "samples"},
        {"x.npy", "yfloat.npy", NULL, "yfloat.npy", "integer class labels"},
        {"x.npy", "yneg.npy", NULL, "yneg.npy", "label -1 at index 2 is out of range (class labels count from 0)"},
        {"xtrunc.npy", "y.npy", NULL, "xtrunc.npy", ""},
        {"junk.bin", "y.npy", NULL, "junk.bin", "not a .npy or IDX"},
        {"missing.npy", "y.npy", NULL, "missing.npy", "cannot open"},
        {NULL, NULL, "ragged.csv", "ragged.csv:3", "fields"},
        {NULL, NULL, "nan.csv", "nan.csv:2", "not a number"},
        {NULL, NULL, "hex.csv", "hex.csv:2: field 1: '0x3' is not a number", "not a number"},
        {NULL, NULL, "inf.csv", "inf.csv:1: field 2: 'inf'", "not a number"},
        {NULL, NULL, "neg.csv", "neg.csv:1", "label"},
        {NULL, NULL, "wide.csv", "wide.csv", "shape"},
        {NULL, NULL, "d.txt2", "d.txt2", "unknown data file type"},
    };
    write_arr(tpath("xbadshape.npy"), CG_F4, 3, (int64_t[]){N, 5, 5}, xf);
    write_arr(tpath("yshort.npy"), CG_I8, 1, (int64_t[]){N - 1}, y);
    write_arr(tpath("yfloat.npy"), CG_F4, 1, (int64_t[]){N}, xf);
    int64_t yneg[N];
    memcpy(yneg, y, sizeof yneg);
    yneg[2] = -1;
    write_arr(tpath("yneg.npy"), CG_I8, 1, (int64_t[]){N}, yneg);
    unsigned char *raw;
    size_t len;
    ck_assert_int_eq(cg_read_file(tpath("x.npy"), &raw, &len, &e), 0);
    write_bytes(tpath("xtrunc.npy"), raw, len - 100);
    free(raw);
    write_bytes(tpath("junk.bin"), "hello world", 11);
    write_bytes(tpath("ragged.csv"), "1,2,3\n0,1,2\n1,2\n", 16);
    write_bytes(tpath("nan.csv"), "1,2,3\n0,x,2\n", 12);
    write_bytes(tpath("hex.csv"), "1,2,3\n0x3,1,2\n", 14); /* strtod reads 0x3 as 3 */
    write_bytes(tpath("inf.csv"), "1,inf,3\n0,1,2\n", 14);
    write_bytes(tpath("neg.csv"), "-1,2,3\n0,1,2\n", 13);
    write_bytes(tpath("wide.csv"), "1,2,3\n0,1,2\n", 12);
    write_bytes(tpath("d.txt2"), "1,2,3\n", 6);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char xp[600] = "", yp[600] = "", dp[600] = "";
        if (bad[i].x)
            snprintf(xp, sizeof xp, "%s", tpath(bad[i].x));
        if (bad[i].y)
            snprintf(yp, sizeof yp, "%s", tpath(bad[i].y));
        if (bad[i].data)
            snprintf(dp, sizeof dp, "%s", tpath(bad[i].data));
        ck_assert_int_eq(train_files(net, bad[i].x ? xp : NULL, bad[i].y ? yp : NULL,
                                     bad[i].data ? dp : NULL, &e),
                         -1);
        ck_assert_msg(strstr(e.msg, bad[i].file) && strstr(e.msg, bad[i].word),
                      "case %zu: expected '%s' and '%s' in: %s", i, bad[i].file, bad[i].word,
                      e.msg);
    }
    /* MSE: float targets [N, out] and their width checked */
    cg_net lin = lin_net();
    float t[N];
    for (int i = 0; i < N; i++)
        t[i] = (float)i;
    write_arr(tpath("x2.npy"), CG_F4, 2, (int64_t[]){N, 2}, xf);
    write_arr(tpath("t.npy"), CG_F4, 2, (int64_t[]){N, 1}, t);
    write_arr(tpath("t2.npy"), CG_F4, 2, (int64_t[]){N / 2, 2}, t);
    ck_assert_msg(train_files(&lin, tpath("x2.npy"), tpath("t.npy"), NULL, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(train_files(&lin, tpath("x2.npy"), tpath("t2.npy"), NULL, &e), -1);
    ck_assert_msg(strstr(e.msg, "t2.npy"), "%s", e.msg);
}
END_TEST

/* ---- the command line: train with every option kind, eval, predict with normalization ---- */
static int run_main(const cg_net *net, const char *a0, ...)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "lin";
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    fflush(stdout);
    return cg_main(net, argc, argv);
}

START_TEST(test_cli_train_eval_predict)
{
    cg_net net = lin_net();
    static lin_data d;
    make_lin(&d, 80, 17, 0, 0);
    for (int i = 0; i < 80; i++) { /* shifted, scaled inputs: normalization matters */
        d.x[2 * i] = 5 + 3 * d.x[2 * i];
        d.x[2 * i + 1] = -2 + 0.5f * d.x[2 * i + 1];
    }
    write_arr(tpath("x.npy"), CG_F4, 2, (int64_t[]){80, 2}, d.x);
    write_arr(tpath("y.npy"), CG_F4, 2, (int64_t[]){80, 1}, d.y);
    const char *O = tpath("out");
    ck_assert_int_eq(run_main(&net, "train", "--data-x", tpath("x.npy"), "--data-y", tpath("y.npy"),
                              "--mode", "minibatch", "--order", "random", "--schedule", "step",
                              "--step-size", "5", "--gamma", "0.5", "--epochs", "20", "--lr", "0.1",
                              "--momentum", "0.5", "--weight-decay", "0", "--val-frac", "0.25",
                              "--normalize", "--patience", "0", "--eval-every", "0",
                              "--checkpoint-every", "7", "--seed", "4", "--batch", "8", "--plain",
                              "--no-plot", "--quiet", "--out", O, NULL),
                     0);
    /* normalization statistics come from the 60 training samples only */
    cg_npz z;
    cg_err e;
    ck_assert_msg(cg_npz_read(tpath("out/normalize.npz"), &z, &e) == 0, "%s", e.msg);
    const cg_array *m = cg_npz_get(&z, "mean"), *s = cg_npz_get(&z, "std");
    ck_assert(m && s && m->count == 2);
    for (int k = 0; k < 2; k++) {
        double mu = 0, v = 0;
        for (int i = 0; i < 60; i++)
            mu += d.x[2 * i + k] / 60.0;
        for (int i = 0; i < 60; i++)
            v += (d.x[2 * i + k] - mu) * (d.x[2 * i + k] - mu) / 60.0;
        ck_assert_double_eq_tol(((float *)m->data)[k], mu, 1e-5);
        ck_assert_double_eq_tol(((float *)s->data)[k], sqrt(v), 1e-5);
    }
    /* the model is exact in normalized coordinates too */
    float p[3];
    load_params(&net, tpath("out/final.npz"), p, NULL);
    ck_assert_int_eq(run_main(&net, "predict", "--weights", tpath("out/final.npz"), "--input",
                              tpath("x.npy"), "--out", tpath("pred.npy"), NULL),
                     0);
    cg_array pr;
    ck_assert_int_eq(cg_npy_read(tpath("pred.npy"), &pr, &e), 0);
    for (int i = 0; i < 80; i++)
        ck_assert_msg(fabs(((float *)pr.data)[i] - d.y[i]) < 1e-2, "sample %d: %g vs %g", i,
                      ((float *)pr.data)[i], d.y[i]);
    cg_array_free(&pr);
    /* without the normalization the predictions are different */
    ck_assert_int_eq(run_main(&net, "predict", "--weights", tpath("out/final.npz"), "--input",
                              tpath("x.npy"), "--out", tpath("pred.npy"), "--norm", "none", NULL),
                     0);
    ck_assert_int_eq(cg_npy_read(tpath("pred.npy"), &pr, &e), 0);
    ck_assert(fabs(((float *)pr.data)[0] - d.y[0]) > 1e-2);
    cg_array_free(&pr);
    ck_assert_int_eq(run_main(&net, "eval", "--weights", tpath("out/final.npz"), "--data-x",
                              tpath("x.npy"), "--data-y", tpath("y.npy"), NULL),
                     0);
    /* NaN inputs: the loss is NaN (as PyTorch's), shown, and eval fails instead of printing
     * only an accuracy */
    float keep = d.x[6];
    d.x[6] = NAN;
    write_arr(tpath("xnan.npy"), CG_F4, 2, (int64_t[]){80, 2}, d.x);
    d.x[6] = keep;
    ck_assert_int_eq(run_main(&net, "eval", "--weights", tpath("out/final.npz"), "--data-x",
                              tpath("xnan.npy"), "--data-y", tpath("y.npy"), NULL),
                     1);
    cg_npz_free(&z);
    ck_assert_int_eq(access(tpath("out/checkpoint.npz"), F_OK), 0);
    ck_assert_int_eq(access(tpath("out/log.csv"), F_OK), 0);
    /* usage errors (2) and run errors (1) */
    ck_assert_int_eq(run_main(&net, "train", "--mode", "stochastic", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--order", "sorted", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--val-frac", "1.5", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--momentum", "1", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--resume=1", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--patience", "-1", NULL), 2);
    /* the option table's ranges: --lr finite and > 0, --gamma in (0, 1] (as in a spec) */
    ck_assert_int_eq(run_main(&net, "train", "--lr", "0", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--lr", "inf", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--lr=nan", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--gamma", "0", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--gamma", "1.5", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--gamma", "5", NULL), 2);
    /* ... and hold for the value stored as a float: 1e39 -> inf, 1e-46 -> 0, 1 - 1e-11 -> 1 */
    ck_assert_int_eq(run_main(&net, "train", "--lr", "1e39", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--lr", "1e-46", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--momentum", "0.99999999999", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--weight-decay", "1e39", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--weight-decay", "-1e-4", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--max-steps", "0", NULL), 2);
    ck_assert_int_eq(run_main(&net, "train", "--monitor", "accuracy", NULL), 2);
    ck_assert_int_eq(run_main(&net, "predict", "--weights", "w.npz", "--input", "x.npy", NULL), 2);
    ck_assert_int_eq(run_main(&net, "eval", "--weights", "w.npz", "--resume", NULL), 2);
    /* --resume before the first checkpoint exists: a fresh run (killed before it wrote one) */
    ck_assert_int_eq(run_main(&net, "train", "--data-x", tpath("x.npy"), "--data-y", tpath("y.npy"),
                              "--resume", "--quiet", "--out", tpath("fresh"), NULL),
                     0);
    ck_assert_int_eq(access(tpath("fresh/final.npz"), F_OK), 0);
    ck_assert_int_eq(run_main(&net, "train", "--data-x", tpath("x.npy"), "--quiet", NULL), 1);
    ck_assert_int_eq(run_main(&net, "--help", NULL), 0);
}
END_TEST

/* ---- predict: --softmax, CSV and IDX in, CSV out; eval --confusion ---- */
/* cg_main with args (NULL-terminated, after the program name), stdout into file */
static int run_main_captured(const char *file, const cg_net *net, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "t";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    fflush(stdout);
    int saved = dup(1);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    dup2(fileno(f), 1);
    int rc = cg_main(net, argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    fclose(f);
    return rc;
}
#define RUN_CAPTURED(file, net, ...) run_main_captured(file, net, (const char *const[]){__VA_ARGS__, NULL})

/* a whole text file, NUL-terminated */
static char *read_text(const char *path)
{
    unsigned char *buf;
    size_t len;
    cg_err e;
    ck_assert_msg(cg_read_file(path, &buf, &len, &e) == 0, "%s", e.msg);
    char *t = realloc(buf, len + 1);
    ck_assert_ptr_nonnull(t);
    t[len] = 0;
    return t;
}

/* a CSV of n rows of k numbers (no header) */
static float *read_csv_floats(const char *path, size_t n, size_t k)
{
    char *t = read_text(path);
    ck_assert_msg(strncmp(t, "\x93NUMPY", 6) != 0, "%s is a .npy file", path);
    float *v = calloc(n * k, sizeof(float));
    char *p = t;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < k; j++) {
            char *end;
            v[i * k + j] = strtof(p, &end);
            ck_assert_msg(end != p && *end == (j + 1 < k ? ',' : '\n'),
                          "%s: row %zu field %zu: bad separator in '%.20s'", path, i, j, p);
            p = end + 1;
        }
    ck_assert_msg(*p == 0, "%s: more than %zu rows", path, n);
    free(t);
    return v;
}

START_TEST(test_cli_predict_formats)
{
    const cg_net *net = test_net("t_train_bn"); /* 1x6x6 -> 4 classes, batch 8 */
    enum { N = 13, K = 4 };
    static float x[N * 36], pb[256], bb[256];
    int64_t y[N];
    cg_rng r;
    cg_rng_seed(&r, 3);
    for (int i = 0; i < N * 36; i++)
        x[i] = 2 * cg_rng_uniform(&r) - 0.5f;
    for (int i = 0; i < N; i++)
        y[i] = i % K;
    cg_err e;
    ck_assert_uint_le(net->n_params, 256);
    ck_assert_uint_le(net->n_buffers, 256);
    cg_init_params(net, pb, bb, 5);
    for (size_t i = 0; i < net->n_buffers; i++) /* running statistics that are not 0 / 1 */
        bb[i] += 0.25f;
    ck_assert_msg(cg_weights_save(net, tpath("w.npz"), pb, bb, &e) == 0, "%s", e.msg);
    write_arr(tpath("x.npy"), CG_F4, 4, (int64_t[]){N, 1, 6, 6}, x);
    write_arr(tpath("xflat.npy"), CG_F4, 2, (int64_t[]){N, 36}, x);
    static unsigned char buf[64 + N * 36 * 4];
    write_bytes(tpath("x.idx"), buf, idx_image(buf, 0x0D, 3, (uint32_t[]){N, 6, 6}, x, 4));
    FILE *fl = fopen(tpath("lab.csv"), "w"), *ff = fopen(tpath("feat.csv"), "w"),
         *fb = fopen(tpath("bad.csv"), "w");
    fputs("label", fl);
    for (int k = 0; k < 36; k++)
        fprintf(fl, ",p%d", k);
    fputs("\n", fl);
    for (int i = 0; i < N; i++) {
        fprintf(fl, "%d", (int)y[i]);
        for (int k = 0; k < 36; k++) {
            fprintf(fl, ",%.9g", (double)x[i * 36 + k]);
            fprintf(ff, "%s%.9g", k ? "," : "", (double)x[i * 36 + k]);
            if (k < 35)
                fprintf(fb, "%s%.9g", k ? "," : "", (double)x[i * 36 + k]);
        }
        fputs("\n", fl), fputs("\n", ff), fputs("\n", fb);
    }
    fclose(fl), fclose(ff), fclose(fb);
    char W[600]; /* tpath's buffers rotate */
    snprintf(W, sizeof W, "%s", tpath("w.npz"));

    /* logits, the reference */
    ck_assert_int_eq(run_main(net, "predict", "--weights", W, "--input", tpath("x.npy"), "--out",
                              tpath("p.npy"), NULL), 0);
    cg_array p;
    ck_assert_int_eq(cg_npy_read(tpath("p.npy"), &p, &e), 0);
    ck_assert_int_eq(p.shape[0], N);
    ck_assert_int_eq(p.shape[1], K);
    const float *z = p.data;
    /* --softmax: each row exp(z) / sum exp(z) */
    ck_assert_int_eq(run_main(net, "predict", "--weights", W, "--input", tpath("x.npy"), "--out",
                              tpath("ps.npy"), "--softmax", NULL), 0);
    cg_array ps;
    ck_assert_int_eq(cg_npy_read(tpath("ps.npy"), &ps, &e), 0);
    for (int i = 0; i < N; i++) {
        double sum = 0, ref = 0;
        for (int j = 0; j < K; j++)
            ref += exp((double)z[i * K + j]);
        for (int j = 0; j < K; j++) {
            float q = ((float *)ps.data)[i * K + j];
            ck_assert_double_eq_tol(q, exp((double)z[i * K + j]) / ref, 1e-6);
            ck_assert(q > 0 && q < 1);
            sum += q;
        }
        ck_assert_double_eq_tol(sum, 1.0, 1e-6);
    }
    /* the same inputs from the training CSV (header, label first), a features-only CSV, a
     * flat .npy and a float32 IDX [N, 6, 6]: the same logits; .csv out is one row a sample */
    const char *inputs[] = {"lab.csv", "feat.csv", "xflat.npy", "x.idx"};
    for (int c = 0; c < 4; c++) {
        char in[600];
        snprintf(in, sizeof in, "%s", tpath(inputs[c]));
        ck_assert_int_eq(run_main(net, "predict", "--weights", W, "--input", in, "--out",
                                  tpath("q.csv"), NULL), 0);
        float *q = read_csv_floats(tpath("q.csv"), N, K);
        ck_assert_msg(memcmp(q, z, sizeof(float) * N * K) == 0, "%s: other outputs", inputs[c]);
        free(q);
    }
    ck_assert_int_eq(run_main(net, "predict", "--weights", W, "--input", tpath("feat.csv"),
                              "--out", tpath("qs.csv"), "--softmax", NULL), 0);
    float *q = read_csv_floats(tpath("qs.csv"), N, K);
    ck_assert_msg(memcmp(q, ps.data, sizeof(float) * N * K) == 0, "--softmax to .csv differs");
    free(q);
    /* errors: an output type that is neither .npy nor .csv, softmax of an mse net, a CSV
     * with a field too few; nothing written */
    ck_assert_int_eq(run_main(net, "predict", "--weights", W, "--input", tpath("x.npy"), "--out",
                              tpath("p.txt"), NULL), 2);
    ck_assert_int_eq(access(tpath("p.txt"), F_OK), -1);
    cg_net lin = lin_net();
    ck_assert_int_eq(run_main(&lin, "predict", "--weights", W, "--input", tpath("x.npy"), "--out",
                              tpath("l.npy"), "--softmax", NULL), 2);
    ck_assert_int_eq(run_main(net, "predict", "--weights", W, "--input", tpath("bad.csv"), "--out",
                              tpath("b.csv"), NULL), 1);
    ck_assert_int_eq(access(tpath("b.csv"), F_OK), -1);
    cg_dataset ds;
    ck_assert_int_eq(cg_csv_load_inputs(tpath("bad.csv"), 36, &ds, &e), -1);
    ck_assert_msg(strstr(e.msg, "bad.csv") && strstr(e.msg, "35 fields") &&
                      strstr(e.msg, "36 features"), "%s", e.msg);

    /* eval --confusion: the matrix of (label, argmax of the logits) */
    write_arr(tpath("y.npy"), CG_I8, 1, (int64_t[]){N}, y);
    size_t want[K][K] = {{0}};
    for (int i = 0; i < N; i++) {
        int best = 0;
        for (int j = 1; j < K; j++)
            if (z[i * K + j] > z[i * K + best])
                best = j;
        want[y[i]][best]++;
    }
    ck_assert_int_eq(RUN_CAPTURED(tpath("eval.txt"), net, "eval", "--weights", W, "--data-x",
                                  tpath("x.npy"), "--data-y", tpath("y.npy"), "--confusion-csv",
                                  tpath("c.csv")), 0);
    char *txt = read_text(tpath("c.csv"));
    char *line = strtok(txt, "\n");
    ck_assert_str_eq(line, "class,pred_0,pred_1,pred_2,pred_3,samples,accuracy");
    for (int c = 0; c < K; c++) {
        line = strtok(NULL, "\n");
        ck_assert_ptr_nonnull(line);
        char row[256];
        size_t n = want[c][0] + want[c][1] + want[c][2] + want[c][3];
        snprintf(row, sizeof row, "%d,%zu,%zu,%zu,%zu,%zu,%.6f", c, want[c][0], want[c][1],
                 want[c][2], want[c][3], n, (double)want[c][c] / (double)n);
        ck_assert_str_eq(line, row);
    }
    ck_assert_ptr_null(strtok(NULL, "\n"));
    free(txt);
    txt = read_text(tpath("eval.txt"));
    char row[128];
    snprintf(row, sizeof row, "  class 1: %.4f (%zu / %zu)\n", (double)want[1][1] / 3.0,
             want[1][1], (size_t)3);
    ck_assert_msg(strstr(txt, "per-class accuracy") && strstr(txt, row) &&
                      strstr(txt, "confusion matrix (rows: true class"),
                  "eval --confusion printed:\n%s", txt);
    free(txt);
    /* --confusion alone prints the same, writes no file; float targets have no classes */
    ck_assert_int_eq(RUN_CAPTURED(tpath("eval2.txt"), net, "eval", "--weights", W, "--data-x",
                                  tpath("x.npy"), "--data-y", tpath("y.npy"), "--confusion"), 0);
    txt = read_text(tpath("eval2.txt"));
    ck_assert(strstr(txt, "confusion matrix") != NULL);
    free(txt);
    float t[N];
    for (int i = 0; i < N; i++)
        t[i] = (float)i;
    write_arr(tpath("x2.npy"), CG_F4, 2, (int64_t[]){N, 2}, x);
    write_arr(tpath("t.npy"), CG_F4, 2, (int64_t[]){N, 1}, t);
    ck_assert_msg(cg_weights_save(&lin, tpath("lw.npz"), pb, NULL, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(run_main(&lin, "eval", "--weights", tpath("lw.npz"), "--data-x",
                              tpath("x2.npy"), "--data-y", tpath("t.npy"), "--confusion", NULL), 2);
    cg_array_free(&p);
    cg_array_free(&ps);
}
END_TEST

/* cg_main(net, cmd, opt) with stderr into file */
static int run_main_stderr(const char *file, const cg_net *net, const char *cmd, const char *opt)
{
    char *argv[] = {"t", (char *)cmd, (char *)opt, NULL};
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    dup2(fileno(f), 2);
    int rc = cg_main(net, 3, argv);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(f);
    return rc;
}

/* ---- the option table: every option keeps its name and its commands, and --help lists it ---- */
START_TEST(test_cli_option_table)
{
    cg_net net = lin_net();
    /* the commands' option lists before the table (runtime/main.c word lists; ieee-subnormals
     * in common_options) */
    static const char *const cmd_opts[][2] = {
        {"train", "data data-x data-y test test-x test-y epochs batch lr momentum weight-decay "
                  "mode order schedule step-size gamma patience monitor eval-every val val-frac "
                  "seed normalize no-normalize checkpoint-every resume out weights max-steps plain "
                  "quiet no-plot ieee-subnormals"},
        {"eval", "weights data data-x data-y norm confusion confusion-csv ieee-subnormals"},
        {"predict", "weights input out norm softmax ieee-subnormals"},
        {"check", "weights input target out ieee-subnormals"},
    };
    static const char *const all = "data data-x data-y test test-x test-y epochs batch lr "
        "momentum weight-decay mode order schedule step-size gamma patience monitor eval-every "
        "val val-frac seed normalize no-normalize checkpoint-every resume out weights max-steps "
        "plain quiet no-plot input target norm softmax confusion confusion-csv ieee-subnormals";
    ck_assert_int_eq(RUN_CAPTURED(tpath("help.txt"), &net, "--help"), 0);
    char *help = read_text(tpath("help.txt"));
    char word[64], opt[128];
    for (const char *p = all; *p;) {
        size_t n = strcspn(p, " ");
        snprintf(word, sizeof word, "%.*s", (int)n, p);
        p += n + (p[n] == ' ');
        snprintf(opt, sizeof opt, "\n  --%s ", word); /* a row of its own */
        ck_assert_msg(strstr(help, opt) != NULL, "--help does not list --%s", word);
        for (size_t c = 0; c < sizeof cmd_opts / sizeof cmd_opts[0]; c++) {
            char padded[400];
            snprintf(padded, sizeof padded, " %s ", cmd_opts[c][1]);
            snprintf(opt, sizeof opt, " %s ", word);
            if (strstr(padded, opt))
                continue;
            /* not accepted by this command: a usage error naming it, before any file is read */
            snprintf(opt, sizeof opt, "--%s", word);
            ck_assert_int_eq(run_main_stderr(tpath("err.txt"), &net, cmd_opts[c][0], opt), 2);
            char *msg = read_text(tpath("err.txt"));
            snprintf(opt, sizeof opt, "unknown option '--%s'", word);
            ck_assert_msg(strstr(msg, opt) != NULL, "%s accepts --%s: %s", cmd_opts[c][0], word, msg);
            free(msg);
        }
    }
    free(help);
}
END_TEST

Suite *make_train_suite(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("optimizer");
    tcase_add_test(tc, test_sgd_kernel_matches_reference);
    tcase_add_test(tc, test_lr_schedules);
    tcase_add_test(tc, test_adam_kernel_matches_reference);
    tcase_add_test(tc, test_lr_warmup);
    tcase_add_test(tc, test_augment_matches_naive);
    suite_add_tcase(s, tc);

    tc = tcase_create("trainer");
    tcase_add_checked_fixture(tc, setup_tmp, teardown_tmp);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_modes_converge);
    tcase_add_test(tc, test_full_batch_step_is_analytic);
    tcase_add_test(tc, test_bn_running_averages);
    tcase_add_test(tc, test_early_stopping_restores_best);
    tcase_add_test(tc, test_kill_and_resume_in_process);
    tcase_add_test(tc, test_kill_and_resume_sigkill);
    tcase_add_test(tc, test_resume_changed_settings);
    tcase_add_test(tc, test_recipes_kill_and_resume);
    tcase_add_test(tc, test_hostile_run_state);
    tcase_add_test(tc, test_header_refused_before_inflating);
    tcase_add_test(tc, test_data_formats);
    tcase_add_test(tc, test_cli_train_eval_predict);
    tcase_add_test(tc, test_cli_predict_formats);
    tcase_add_test(tc, test_cli_option_table);
    suite_add_tcase(s, tc);
    return s;
}
