/* Layer-by-layer checks of every generated test net (tests/nets/NAME.yaml, registered in
 * cg_test_nets by tests/tests.mk):
 *   forward   each layer's saved output vs a naive double-precision reference written
 *             from the definitions, applied to that layer's own input (training and
 *             inference mode; batch-norm running statistics updates; buffers untouched
 *             at inference; descriptor geometry vs the output-size formula)
 *   backward  gradients of the input and of every parameter vs central finite
 *             differences of the loss (cg_loss); gradients must accumulate (+=), dx must
 *             be written, backward(dx = NULL) gives the same parameter gradients
 *   coverage  the test nets reach every layer kind and both emission paths
 *             (straight-line and looped) of conv, pool, dense and activations
 *   detect    the comparisons flag a deliberately perturbed value (they can fail)
 * Every check runs at n = 1 (2 for nets with batch norm) and n = train.batch.
 *
 * Kinks: relu, leaky_relu and max pooling are only placed at layer 0 of the test nets,
 * and the input is a jittered permutation of evenly spaced values in [-2, 2], so no input
 * is within the FD step of 0 or of another value of the same sample: FD is well defined. */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnngen.h"

#include "test_nets.h"

#define FWD_TOL 1e-5       /* forward: |got - ref| <= FWD_TOL * max|ref| (per layer) */
#define FD_EPS 1e-3
#define FD_RTOL 1e-2
#define FD_ATOL 3e-4
#define FD_SAMPLE 48       /* random entries checked per tensor larger than FD_ALL */
#define FD_ALL 64

/* ---- small helpers ---------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unif(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }
static double rng_range(uint64_t *s, double a, double b) { return a + (b - a) * rng_unif(s); }

typedef struct {
    int count;
    char first[1024];
} fails;

static void failf(fails *f, const char *fmt, ...)
{
    if (f->count++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->first, sizeof f->first, fmt, ap);
        va_end(ap);
    }
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    ck_assert_ptr_nonnull(p);
    return p;
}

static int n_test_nets(void)
{
    int n = 0;
    while (cg_test_nets[n]) n++;
    return n;
}

static const cg_tensor *find_tensor(const cg_net *net, int layer, const char *suffix)
{
    for (int i = 0; i < net->n_tensors; i++) {
        const cg_tensor *t = &net->tensors[i];
        const char *dot = strchr(t->name, '.');
        if (t->layer == layer && dot && strcmp(dot + 1, suffix) == 0) return t;
    }
    return NULL;
}

static int is_kind(const cg_layer *L, const char *k) { return strcmp(L->kind, k) == 0; }
static int is_conv(const cg_layer *L) { return is_kind(L, "conv1d") || is_kind(L, "conv2d"); }
static int is_pool(const cg_layer *L)
{
    return strstr(L->kind, "pool") != NULL && !is_kind(L, "global_avgpool");
}
static int is_act(const cg_layer *L)
{
    return is_kind(L, "relu") || is_kind(L, "leaky_relu") || is_kind(L, "sigmoid") || is_kind(L, "tanh");
}

/* the layer whose output input j of L reads (-1: the network's input); a chain when the
 * descriptor has no inputs */
static int input_of(const cg_layer *L, int li, int j)
{
    return L->inputs ? L->inputs[j] : li - 1;
}
static int n_inputs_of(const cg_layer *L) { return L->inputs ? L->n_inputs : 1; }

/* dropout's mask, from its definition (compiler/lua/layers/graph.lua): a 32-bit hash of
 * the forward's `training` seed, the layer, the sample and the element */
static uint32_t mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    return h;
}
static double dropout_mask(int seed, int li, size_t sample, size_t size, size_t i, double p)
{
    uint32_t s = mix32((uint32_t)seed ^ (uint32_t)(li + 1) * 0x85ebca6bu);
    uint32_t h = mix32((uint32_t)(sample * size + i) * 0x9e3779b1u ^ s);
    uint32_t keep = (uint32_t)floor(p * 16777216.0 + 0.5);
    return (h >> 8) >= keep ? 1.0 / (1.0 - p) : 0.0;
}

static int has_bn(const cg_net *net)
{
    for (int i = 0; i < net->n_layers; i++)
        if (is_kind(&net->layers[i], "batchnorm")) return 1;
    return 0;
}

/* Channels and spatial extents of a [C, H, W], [C, L] (H = 1) or [F] (C = F) shape. */
typedef struct { int C, H, W; } dims;
static dims dims_of(int ndim, const int *s)
{
    dims d = {s[0], 1, 1};
    if (ndim == 3) { d.H = s[1]; d.W = s[2]; }
    if (ndim == 2) d.W = s[1];
    return d;
}

/* Would the generator write this layer out as straight-line code? (mirrors the emitters) */
/* Straight-line or not, as the generator's schedule for the layer says (the descriptor
 * carries it; no copy of the generator's thresholds here). Kinds with one form count as
 * straight-line. */
static int unrolled(const cg_layer *L)
{
    ck_assert_msg(L->schedule != NULL && L->schedule[0], "layer %s has no schedule", L->kind);
    if (is_conv(L) || is_pool(L) || is_kind(L, "dense") || is_act(L)) return strncmp(L->schedule, "straight:", 9) == 0;
    return 1;
}

/* The activation a layer applies in its forward's stores ("+relu" after the forward
 * form in its schedule: compiler/lua/fuse.lua, schedule.lua describe), or NULL. */
static const char *fused_act(const cg_layer *L)
{
    const char *f = L->schedule ? strstr(L->schedule, " fwd ") : NULL;
    const char *a = f ? strstr(f, "+relu") : NULL;
    /* "+add+relu": an add fused into a norm's stores (fuse.plan_add); the relu is the
     * add's, whose in-place output (checked as the add's, with its relu) the norm writes */
    const char *add = f ? strstr(f, "+add") : NULL;
    if (add && a && add < a) return NULL;
    return a && (a[5] == ' ' || a[5] == '\0') ? "relu" : NULL;
}

/* ---- naive references (double precision, straight from the definitions) ------------ */

/* Cross-correlation with zero padding (bounds checks), stride, dilation, groups. */
static void naive_conv(const cg_layer *L, const float *w, const float *b, const float *x, double *y, int n)
{
    dims in = dims_of(L->ndim_in, L->in_shape), out = dims_of(L->ndim_out, L->out_shape);
    int KH = L->kernel[0], KW = L->kernel[1], G = L->groups;
    int cin_g = in.C / G, cout_g = out.C / G;
    for (int s = 0; s < n; s++)
        for (int co = 0; co < out.C; co++)
            for (int oy = 0; oy < out.H; oy++)
                for (int ox = 0; ox < out.W; ox++) {
                    double acc = b ? b[co] : 0.0;
                    int g = co / cout_g;
                    for (int ci = 0; ci < cin_g; ci++)
                        for (int ky = 0; ky < KH; ky++)
                            for (int kx = 0; kx < KW; kx++) {
                                int iy = oy * L->stride[0] - L->pad_lo[0] + ky * L->dilation[0];
                                int ix = ox * L->stride[1] - L->pad_lo[1] + kx * L->dilation[1];
                                if (iy < 0 || iy >= in.H || ix < 0 || ix >= in.W) continue;
                                acc += (double)w[((co * cin_g + ci) * KH + ky) * KW + kx] *
                                       x[(size_t)s * L->in_size + ((size_t)(g * cin_g + ci) * in.H + iy) * in.W + ix];
                            }
                    y[(size_t)s * L->out_size + ((size_t)co * out.H + oy) * out.W + ox] = acc;
                }
}

/* Max (padding = -inf) or average (count_include_pad: / kh*kw, else / in-bounds taps). */
static void naive_pool(const cg_layer *L, const float *x, double *y, int n)
{
    dims in = dims_of(L->ndim_in, L->in_shape), out = dims_of(L->ndim_out, L->out_shape);
    int ismax = strncmp(L->kind, "max", 3) == 0;
    for (int s = 0; s < n; s++)
        for (int c = 0; c < out.C; c++)
            for (int oy = 0; oy < out.H; oy++)
                for (int ox = 0; ox < out.W; ox++) {
                    double m = -INFINITY, sum = 0.0;
                    int cnt = 0;
                    for (int ky = 0; ky < L->kernel[0]; ky++)
                        for (int kx = 0; kx < L->kernel[1]; kx++) {
                            int iy = oy * L->stride[0] - L->pad_lo[0] + ky;
                            int ix = ox * L->stride[1] - L->pad_lo[1] + kx;
                            if (iy < 0 || iy >= in.H || ix < 0 || ix >= in.W) continue;
                            double v = x[(size_t)s * L->in_size + ((size_t)c * in.H + iy) * in.W + ix];
                            if (v > m) m = v;
                            sum += v;
                            cnt++;
                        }
                    double r = ismax ? m
                                     : sum / (L->count_include_pad ? L->kernel[0] * L->kernel[1] : cnt);
                    y[(size_t)s * L->out_size + ((size_t)c * out.H + oy) * out.W + ox] = r;
                }
}

static void naive_dense(const cg_layer *L, const float *w, const float *b, const float *x, double *y, int n)
{
    size_t I = L->in_size, O = L->out_size;
    for (int s = 0; s < n; s++)
        for (size_t o = 0; o < O; o++) {
            double acc = b ? b[o] : 0.0;
            for (size_t i = 0; i < I; i++) acc += (double)w[o * I + i] * x[s * I + i];
            y[s * O + o] = acc;
        }
}

static double naive_act(const cg_layer *L, double v)
{
    if (is_kind(L, "relu")) return v > 0 ? v : 0;
    if (is_kind(L, "leaky_relu")) return v > 0 ? v : v * (double)L->slope;
    if (is_kind(L, "sigmoid")) return 1.0 / (1.0 + exp(-v));
    return tanh(v);
}

/* Batch norm per channel over (batch, spatial). training: batch mean and biased
 * variance; new running stats (unbiased variance) into rm_new/rv_new. Inference: running. */
static void naive_bn(const cg_layer *L, const float *gamma, const float *beta, const float *rm,
                     const float *rv, float nbt, const float *x, double *y, int n, int training,
                     double *rm_new, double *rv_new)
{
    dims d = dims_of(L->ndim_in, L->in_shape);
    size_t sp = (size_t)d.H * d.W, m = (size_t)n * sp;
    for (int c = 0; c < d.C; c++) {
        double mean, var;
        if (training) {
            double s = 0, v = 0;
            for (int k = 0; k < n; k++)
                for (size_t i = 0; i < sp; i++) s += x[k * L->in_size + c * sp + i];
            mean = s / m;
            for (int k = 0; k < n; k++)
                for (size_t i = 0; i < sp; i++) {
                    double t = x[k * L->in_size + c * sp + i] - mean;
                    v += t * t;
                }
            var = v / m;
            double f = L->momentum < 0 ? 1.0 / (nbt + 1.0) : L->momentum;
            double unbiased = m > 1 ? v / (m - 1) : var;
            rm_new[c] = (1 - f) * rm[c] + f * mean;
            rv_new[c] = (1 - f) * rv[c] + f * unbiased;
        } else {
            mean = rm[c];
            var = rv[c];
        }
        double rstd = 1.0 / sqrt(var + L->eps);
        for (int k = 0; k < n; k++)
            for (size_t i = 0; i < sp; i++) {
                size_t j = k * L->in_size + c * sp + i;
                y[j] = (x[j] - mean) * rstd * gamma[c] + beta[c];
            }
    }
}

/* ---- one net's state ---------------------------------------------------------------- */

typedef struct {
    const cg_net *net;
    int n;
    float *params, *buffers, *x, *ws, *grads, *dx, *tgt_f;
    int64_t *tgt_i;
    double *yref;
    size_t max_out;
} state;

static void state_init(state *st, const cg_net *net, int n, uint64_t seed)
{
    memset(st, 0, sizeof *st);
    st->net = net;
    st->n = n;
    st->params = xcalloc(net->n_params, sizeof(float));
    st->grads = xcalloc(net->n_params, sizeof(float));
    st->buffers = xcalloc(net->n_buffers, sizeof(float));
    st->x = xcalloc((size_t)n * net->in_size, sizeof(float));
    st->dx = xcalloc((size_t)n * net->in_size, sizeof(float));
    st->ws = xcalloc(net->workspace, sizeof(float));
    st->tgt_f = xcalloc((size_t)n * net->out_size, sizeof(float));
    st->tgt_i = xcalloc((size_t)n, sizeof(int64_t));
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].out_size > st->max_out) st->max_out = net->layers[i].out_size;
    st->yref = xcalloc((size_t)n * st->max_out, sizeof(double));

    uint64_t r = seed;
    cg_init_params(net, st->params, st->buffers, seed);
    /* non-trivial BN affine parameters and running statistics */
    for (int i = 0; i < net->n_tensors; i++) {
        const cg_tensor *t = &net->tensors[i];
        for (size_t j = 0; j < t->size; j++) {
            if (t->kind == CG_PARAM && (t->init == CG_INIT_ONE || t->init == CG_INIT_ZERO))
                st->params[t->offset + j] += (float)rng_range(&r, -0.5, 0.5);
            else if (t->kind == CG_BUFFER && t->init == CG_INIT_ZERO)
                st->buffers[t->offset + j] = (float)rng_range(&r, -0.5, 0.5);
            else if (t->kind == CG_BUFFER)
                st->buffers[t->offset + j] = (float)rng_range(&r, 0.5, 1.5);
            else if (t->kind == CG_COUNTER)
                st->buffers[t->offset + j] = 3.0f;
        }
    }
    /* input: per sample a jittered permutation of evenly spaced values in [-2, 2] */
    size_t S = net->in_size;
    for (int k = 0; k < n; k++) {
        float *xs = st->x + (size_t)k * S;
        double sp = 4.0 / (double)S;
        for (size_t j = 0; j < S; j++) xs[j] = (float)(-2.0 + sp * ((double)j + 0.5 + rng_range(&r, -0.2, 0.2)));
        for (size_t j = S - 1; j > 0; j--) {
            size_t q = rng_next(&r) % (j + 1);
            float t = xs[j];
            xs[j] = xs[q];
            xs[q] = t;
        }
    }
    for (size_t j = 0; j < (size_t)n * net->out_size; j++) st->tgt_f[j] = (float)rng_range(&r, -1, 1);
    for (int k = 0; k < n; k++) st->tgt_i[k] = (int64_t)(rng_next(&r) % net->out_size);
}

static void state_free(state *st)
{
    free(st->params);
    free(st->grads);
    free(st->buffers);
    free(st->x);
    free(st->dx);
    free(st->ws);
    free(st->tgt_f);
    free(st->tgt_i);
    free(st->yref);
}

static const void *target(const state *st)
{
    return st->net->loss == CG_LOSS_MSE ? (const void *)st->tgt_f : (const void *)st->tgt_i;
}

static void fill_nan(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = NAN;
}

/* ---- forward ------------------------------------------------------------------------ */

/* Reference output of layer li for input xin into st->yref. bufs: the running buffers
 * before the forward; BN training writes the expected new running stats into rm/rv. */
static void reference(const state *st, int li, const float *bufs, const float *const *xins, int training,
                      double *rm_new, double *rv_new)
{
    const float *xin = xins[0];
    const cg_net *net = st->net;
    const cg_layer *L = &net->layers[li];
    const float *P = st->params;
    const cg_tensor *w = find_tensor(net, li, "weight"), *b = find_tensor(net, li, "bias");
    size_t tot = (size_t)st->n * L->out_size;
    if (is_conv(L)) {
        naive_conv(L, P + w->offset, b ? P + b->offset : NULL, xin, st->yref, st->n);
    } else if (is_pool(L)) {
        naive_pool(L, xin, st->yref, st->n);
    } else if (is_kind(L, "dense")) {
        naive_dense(L, P + w->offset, b ? P + b->offset : NULL, xin, st->yref, st->n);
    } else if (is_kind(L, "flatten")) {
        for (size_t j = 0; j < tot; j++) st->yref[j] = xin[j];
    } else if (is_act(L)) {
        for (size_t j = 0; j < tot; j++) st->yref[j] = naive_act(L, xin[j]);
    } else if (is_kind(L, "batchnorm")) {
        const cg_tensor *rm = find_tensor(net, li, "running_mean"), *rv = find_tensor(net, li, "running_var");
        const cg_tensor *nbt = find_tensor(net, li, "num_batches_tracked");
        naive_bn(L, P + w->offset, P + b->offset, bufs + rm->offset, bufs + rv->offset, bufs[nbt->offset], xin,
                 st->yref, st->n, training, rm_new, rv_new);
    } else if (is_kind(L, "add")) {
        for (size_t j = 0; j < tot; j++) {
            double a = 0;
            for (int k = 0; k < L->n_inputs; k++) a += xins[k][j];
            st->yref[j] = a;
        }
    } else if (is_kind(L, "concat")) {
        /* sample s of the output: the inputs' sample s one after another */
        size_t off = 0;
        for (int k = 0; k < L->n_inputs; k++) {
            size_t sz = L->inputs[k] < 0 ? net->in_size : net->layers[L->inputs[k]].out_size;
            for (int s = 0; s < st->n; s++)
                for (size_t j = 0; j < sz; j++) st->yref[(size_t)s * L->out_size + off + j] = xins[k][(size_t)s * sz + j];
            off += sz;
        }
    } else if (is_kind(L, "global_avgpool")) {
        size_t C = (size_t)L->in_shape[0], S = L->in_size / C;
        for (size_t r = 0; r < (size_t)st->n * C; r++) {
            double a = 0;
            for (size_t j = 0; j < S; j++) a += xin[r * S + j];
            st->yref[r] = a / (double)S;
        }
    } else if (is_kind(L, "dropout")) {
        for (size_t j = 0; j < tot; j++)
            st->yref[j] = training ? xin[j] * dropout_mask(training, li, j / L->out_size, L->out_size,
                                                            j % L->out_size, L->p)
                                   : xin[j];
    } else {
        ck_abort_msg("%s: layer %d: no reference for kind %s", net->name, li, L->kind);
    }
}

/* Geometry in the descriptor agrees with the output-size formula and the kind's rules. */
static void check_geometry(const cg_net *net, int li, fails *f)
{
    const cg_layer *L = &net->layers[li];
    if (!is_conv(L) && !is_pool(L)) return;
    dims in = dims_of(L->ndim_in, L->in_shape), out = dims_of(L->ndim_out, L->out_shape);
    int I[2] = {in.H, in.W}, O[2] = {out.H, out.W};
    for (int a = 0; a < 2; a++) {
        int eff = L->dilation[a] * (L->kernel[a] - 1) + 1;
        int want = (I[a] + L->pad_lo[a] + L->pad_hi[a] - eff) / L->stride[a] + 1;
        if (want != O[a])
            failf(f, "%s: layer %d (%s): axis %d output %d, formula gives %d", net->name, li, L->kind, a, O[a], want);
    }
    if (L->ndim_in == 2 && (L->kernel[0] != 1 || L->stride[0] != 1 || L->pad_lo[0] || L->pad_hi[0] ||
                            L->dilation[0] != 1))
        failf(f, "%s: layer %d (%s): 1-D layer with a non-unit h axis", net->name, li, L->kind);
    if (is_pool(L) && (L->dilation[0] != 1 || L->dilation[1] != 1 || L->groups != 1))
        failf(f, "%s: layer %d (%s): pool with dilation/groups", net->name, li, L->kind);
}

/* A layer's saved activation as [n][out_size], whatever layout the generator chose
 * (batch-innermost layers keep [out_size][lanes]); *buf is (re)allocated as needed. */
static const float *act_rows(const state *st, const cg_layer *L, float **buf)
{
    const float *a = st->ws + L->act_offset;
    if (!L->lanes)
        return a;
    float *t = realloc(*buf, sizeof(float) * (size_t)st->n * L->out_size);
    ck_assert_ptr_nonnull(t);
    *buf = t;
    for (int b = 0; b < st->n; b++)
        for (size_t i = 0; i < L->out_size; i++)
            t[(size_t)b * L->out_size + i] = a[i * (size_t)L->lanes + (size_t)b];
    return t;
}

/* Compare every layer's saved activation with the reference on its own input.
 * inject: perturb layer 0's first saved value before comparing (detection test). */
static void check_forward_pass(state *st, int training, const float *bufs_before, int inject, fails *f)
{
    const cg_net *net = st->net;
    double rm_new[4096], rv_new[4096];
    if (inject) st->ws[net->layers[0].act_offset] += 1e-3f;
    float *in_rows[16] = {NULL}, *out_rows = NULL;
    /* a layer written in place over its input leaves that input's saved values
     * overwritten: its reader gets the input's reference (as float) instead, and the
     * overwritten output is checked through the layers that read it */
    int nl = net->n_layers;
    int *overwritten = xcalloc((size_t)nl, sizeof(int));
    float **refs = xcalloc((size_t)nl, sizeof(float *));
    /* fused[q]: the activation layer whose forward layer q's stores apply (the schedule
     * says "+relu"; compiler/lua/fuse.lua), in place over q: q's saved output is the
     * activation of q's reference, compared as such */
    const cg_layer **fused = xcalloc((size_t)nl, sizeof(cg_layer *));
    for (int li = 0; li < nl; li++) {
        const cg_layer *L = &net->layers[li];
        if (L->inplace > 0) {
            int q = input_of(L, li, L->inplace - 1);
            ck_assert_msg(q >= 0, "%s: layer %d in place over the network's input", net->name, li);
            ck_assert_msg(net->layers[q].act_offset == L->act_offset, "%s: layer %d in place but not at its input's offset",
                          net->name, li);
            overwritten[q] = 1;
            if (fused_act(&net->layers[q]) && is_act(L)) {
                ck_assert_msg(is_kind(L, fused_act(&net->layers[q])), "%s: layer %d fuses %s, its in-place reader %d is %s",
                              net->name, q, fused_act(&net->layers[q]), li, L->kind);
                fused[q] = L;
            }
        }
    }
    for (int li = 0; li < nl; li++)
        ck_assert_msg(!fused_act(&net->layers[li]) || fused[li], "%s: layer %d (%s) fuses %s, but no such layer runs in place over it",
                      net->name, li, net->layers[li].kind, fused_act(&net->layers[li]));
    for (int li = 0; li < net->n_layers; li++) {
        const cg_layer *L = &net->layers[li];
        const float *xins[16];
        ck_assert_int_le(n_inputs_of(L), 16);
        for (int k = 0; k < n_inputs_of(L); k++) {
            int q = input_of(L, li, k);
            ck_assert_int_lt(q, li);
            xins[k] = q < 0 ? st->x : overwritten[q] ? refs[q] : act_rows(st, &net->layers[q], &in_rows[k]);
        }
        const float *got = act_rows(st, L, &out_rows);
        ck_assert_int_le(L->in_shape[0], 4096);
        reference(st, li, bufs_before, xins, training, rm_new, rv_new);
        size_t tot = (size_t)st->n * L->out_size;
        if (overwritten[li]) {
            refs[li] = xcalloc(tot, sizeof(float));
            for (size_t j = 0; j < tot; j++) refs[li][j] = (float)st->yref[j];
        }
        double mx = 0;
        for (size_t j = 0; j < tot; j++) mx = fmax(mx, fabs(st->yref[j]));
        double tol = FWD_TOL * fmax(mx, 1e-3);
        for (size_t j = 0; j < tot && (!overwritten[li] || fused[li]); j++) {
            double want = fused[li] ? naive_act(fused[li], st->yref[j]) : st->yref[j];
            double d = fabs((double)got[j] - want);
            if (!(d <= tol))
                failf(f, "%s n=%d %s forward: layer %d (%s%s%s): output[%zu] (sample %zu, %zu) got %.9g, reference %.9g (tol %.3g)",
                      net->name, st->n, training ? "training" : "inference", li, L->kind, fused[li] ? "+" : "",
                      fused[li] ? fused[li]->kind : "", j, j / L->out_size, j % L->out_size, got[j], want, tol);
        }
        if (is_kind(L, "batchnorm") && training) {
            const cg_tensor *rm = find_tensor(net, li, "running_mean"), *rv = find_tensor(net, li, "running_var");
            const cg_tensor *nbt = find_tensor(net, li, "num_batches_tracked");
            for (int c = 0; c < L->in_shape[0]; c++) {
                double g1 = st->buffers[rm->offset + c], g2 = st->buffers[rv->offset + c];
                if (!(fabs(g1 - rm_new[c]) <= 1e-5 * fmax(1, fabs(rm_new[c]))))
                    failf(f, "%s n=%d: layer %d (batchnorm): %s[%d] got %.9g, expected %.9g", net->name, st->n, li,
                          rm->name, c, g1, rm_new[c]);
                if (!(fabs(g2 - rv_new[c]) <= 1e-5 * fmax(1, fabs(rv_new[c]))))
                    failf(f, "%s n=%d: layer %d (batchnorm): %s[%d] got %.9g, expected %.9g", net->name, st->n, li,
                          rv->name, c, g2, rv_new[c]);
            }
            if (st->buffers[nbt->offset] != bufs_before[nbt->offset] + 1.0f)
                failf(f, "%s n=%d: layer %d (batchnorm): %s got %g, expected %g", net->name, st->n, li, nbt->name,
                      st->buffers[nbt->offset], bufs_before[nbt->offset] + 1.0f);
        }
    }
    for (int k = 0; k < 16; k++) free(in_rows[k]);
    free(out_rows);
    for (int li = 0; li < nl; li++) free(refs[li]);
    free(refs);
    free(fused);
    free(overwritten);
}

static void run_forward_checks(const cg_net *net, int n, int inject, fails *f)
{
    state st;
    state_init(&st, net, n, 1000 + (uint64_t)n);
    float *b0 = xcalloc(net->n_buffers, sizeof(float));
    memcpy(b0, st.buffers, net->n_buffers * sizeof(float));
    for (int li = 0; li < net->n_layers; li++) check_geometry(net, li, f);

    fill_nan(st.ws, net->workspace); /* no layer may read what it did not write */
    net->forward(st.params, st.buffers, st.x, st.ws, n, 1);
    check_forward_pass(&st, 1, b0, inject, f);

    /* inference with the updated running statistics; buffers must not change */
    memcpy(b0, st.buffers, net->n_buffers * sizeof(float));
    fill_nan(st.ws, net->workspace);
    net->forward(st.params, st.buffers, st.x, st.ws, n, 0);
    check_forward_pass(&st, 0, b0, 0, f);
    if (net->n_buffers && memcmp(b0, st.buffers, net->n_buffers * sizeof(float)) != 0)
        failf(f, "%s n=%d: inference forward changed the buffers", net->name, n);
    free(b0);
    state_free(&st);
}

/* ---- backward ----------------------------------------------------------------------- */

static double loss_at(state *st, const float *b0)
{
    const cg_net *net = st->net;
    memcpy(st->buffers, b0, net->n_buffers * sizeof(float));
    net->forward(st->params, st->buffers, st->x, st->ws, st->n, 1);
    return cg_loss(net->loss, st->ws + net->out_offset, target(st), NULL, st->n, net->out_size);
}

/* Central difference of the loss with respect to *v. */
static double fd_at(state *st, const float *b0, float *v)
{
    float keep = *v;
    float hi = (float)(keep + FD_EPS), lo = (float)(keep - FD_EPS);
    *v = hi;
    double lp = loss_at(st, b0);
    *v = lo;
    double lm = loss_at(st, b0);
    *v = keep;
    return (lp - lm) / ((double)hi - (double)lo);
}

/* Indices of a tensor to check: all when small, else first, last and a random sample. */
static size_t pick_indices(size_t size, uint64_t *r, size_t *idx)
{
    if (size <= FD_ALL) {
        for (size_t j = 0; j < size; j++) idx[j] = j;
        return size;
    }
    size_t k = 0;
    idx[k++] = 0;
    idx[k++] = size - 1;
    while (k < FD_SAMPLE) idx[k++] = rng_next(r) % size;
    return k;
}

static double worst_fd_ratio; /* largest |fd - an| / tol seen (CG_TEST_VERBOSE reports it) */
static size_t n_fd;
static double min_an = INFINITY; /* smallest max|analytic| of a checked tensor */

static void fd_compare(const state *st, const char *what, const char *kind, int layer, size_t j, double fd,
                       double an, fails *f)
{
    double tol = FD_RTOL * fmax(fabs(fd), fabs(an)) + FD_ATOL;
    worst_fd_ratio = fmax(worst_fd_ratio, fabs(fd - an) / tol);
    n_fd++;
    if (!(fabs(fd - an) <= tol))
        failf(f, "%s n=%d backward: layer %d (%s): d loss / d %s[%zu]: analytic %.7g, finite difference %.7g (tol %.3g)",
              st->net->name, st->n, layer, kind, what, j, an, fd, tol);
}

/* inject: 1 perturbs the first analytic parameter gradient, 2 the first input gradient. */
static void run_backward_checks(const cg_net *net, int n, int inject, fails *f)
{
    state st;
    state_init(&st, net, n, 2000 + (uint64_t)n);
    uint64_t r = 77 + (uint64_t)n;
    float *b0 = xcalloc(net->n_buffers, sizeof(float));
    float *g0 = xcalloc(net->n_params, sizeof(float));
    double *an = xcalloc(net->n_params, sizeof(double));
    memcpy(b0, st.buffers, net->n_buffers * sizeof(float));
    for (size_t j = 0; j < net->n_params; j++) g0[j] = (float)rng_range(&r, -1, 1);

    /* analytic: forward, loss gradient at dout, backward accumulating onto g0 */
    fill_nan(st.ws, net->workspace);
    fill_nan(st.dx, (size_t)n * net->in_size);
    net->forward(st.params, st.buffers, st.x, st.ws, n, 1);
    cg_loss(net->loss, st.ws + net->out_offset, target(&st), st.ws + net->dout_offset, n, net->out_size);
    /* the layers' temporary region holds nothing the backward may read */
    fill_nan(st.ws + net->temp_offset, net->temp_size);
    memcpy(st.grads, g0, net->n_params * sizeof(float));
    net->backward(st.params, st.grads, st.x, st.dx, st.ws, n);
    for (size_t j = 0; j < net->n_params; j++) an[j] = (double)st.grads[j] - g0[j];
    if (inject == 1 && net->n_params) an[net->tensors[0].offset] += 0.05;
    if (inject == 2) st.dx[0] += 0.05f;

    /* parameters */
    size_t *idx = xcalloc(FD_SAMPLE > FD_ALL ? FD_SAMPLE : FD_ALL, sizeof(size_t));
    for (int t = 0; t < net->n_tensors; t++) {
        const cg_tensor *T = &net->tensors[t];
        if (T->kind != CG_PARAM) continue;
        size_t k = pick_indices(T->size, &r, idx);
        double mx = 0;
        for (size_t j = 0; j < T->size; j++) mx = fmax(mx, fabs(an[T->offset + j]));
        min_an = fmin(min_an, mx);
        for (size_t q = 0; q < k; q++) {
            size_t j = idx[q];
            double fd = fd_at(&st, b0, &st.params[T->offset + j]);
            fd_compare(&st, T->name, net->layers[T->layer].kind, T->layer, j, fd, an[T->offset + j], f);
        }
    }
    /* input */
    size_t nx = (size_t)n * net->in_size;
    size_t k = pick_indices(nx, &r, idx);
    double mx = 0;
    for (size_t j = 0; j < nx; j++) mx = fmax(mx, fabs(st.dx[j]));
    min_an = fmin(min_an, mx);
    for (size_t q = 0; q < k; q++) {
        size_t j = idx[q];
        double fd = fd_at(&st, b0, &st.x[j]);
        fd_compare(&st, "x", net->layers[0].kind, 0, j, fd, st.dx[j], f);
    }

    /* again with dx = NULL: the same parameter gradients, accumulated on top */
    if (!inject) {
        memcpy(st.buffers, b0, net->n_buffers * sizeof(float));
        net->forward(st.params, st.buffers, st.x, st.ws, n, 1);
        cg_loss(net->loss, st.ws + net->out_offset, target(&st), st.ws + net->dout_offset, n, net->out_size);
        float *g1 = xcalloc(net->n_params, sizeof(float));
        memcpy(g1, st.grads, net->n_params * sizeof(float));
        net->backward(st.params, st.grads, st.x, NULL, st.ws, n);
        for (int t = 0; t < net->n_tensors; t++) {
            const cg_tensor *T = &net->tensors[t];
            if (T->kind != CG_PARAM) continue;
            for (size_t j = 0; j < T->size; j++) {
                double got = (double)st.grads[T->offset + j] - g1[T->offset + j], want = an[T->offset + j];
                if (!(fabs(got - want) <= 1e-5 * fmax(1, fabs(want)) + 1e-6))
                    failf(f, "%s n=%d backward(dx=NULL): layer %d (%s): d loss / d %s[%zu]: %.9g, first call %.9g",
                          net->name, n, T->layer, net->layers[T->layer].kind, T->name, j, got, want);
            }
        }
        free(g1);
    }
    free(idx);
    free(an);
    free(g0);
    free(b0);
    state_free(&st);
}

/* ---- tests -------------------------------------------------------------------------- */

static void batch_sizes(const cg_net *net, int *ns, int *count)
{
    int lo = has_bn(net) ? 2 : 1;
    if (lo > net->batch) lo = net->batch;
    ns[0] = lo;
    ns[1] = net->batch;
    *count = net->batch > lo ? 2 : 1;
}

START_TEST(test_forward)
{
    const cg_net *net = cg_test_nets[_i];
    int ns[2], cnt;
    batch_sizes(net, ns, &cnt);
    for (int q = 0; q < cnt; q++) {
        fails f = {0};
        run_forward_checks(net, ns[q], 0, &f);
        ck_assert_msg(f.count == 0, "%d mismatches, first: %s", f.count, f.first);
    }
}
END_TEST

START_TEST(test_backward)
{
    const cg_net *net = cg_test_nets[_i];
    int ns[2], cnt;
    batch_sizes(net, ns, &cnt);
    for (int q = 0; q < cnt; q++) {
        fails f = {0};
        worst_fd_ratio = 0;
        n_fd = 0;
        min_an = INFINITY;
        run_backward_checks(net, ns[q], 0, &f);
        if (getenv("CG_TEST_VERBOSE"))
            printf("%-24s n=%d  %4zu FD entries, worst |fd-an|/tol %.3f, smallest max|grad| of a tensor %.3g%s\n",
                   net->name, ns[q], n_fd, worst_fd_ratio, min_an, unrolled(&net->layers[0]) ? "" : "  (layer 0 looped)");
        ck_assert_msg(f.count == 0, "%d mismatches, first: %s", f.count, f.first);
    }
}
END_TEST

/* ---- NaN and Inf: PyTorch's semantics ------------------------------------------------ */

/* PyTorch's value: ReLU propagates NaN (clamp_min), max pooling takes a NaN in the window
 * (a later tap wins when greater or NaN: aten's max_pool kernels); sigmoid, tanh and
 * leaky_relu propagate it arithmetically. */
static int nan_kind(const cg_layer *L) { return is_act(L) || strncmp(L->kind, "maxpool", 7) == 0; }

static double torch_act(const cg_layer *L, double v)
{
    if (is_kind(L, "relu")) return isnan(v) ? v : v > 0 ? v : 0;
    return naive_act(L, v);
}

/* Torch's argmax of max-pool window (oy, ox) of sample s: index into the sample. */
static long torch_argmax(const cg_layer *L, const float *xs, int oy, int ox)
{
    dims in = dims_of(L->ndim_in, L->in_shape);
    double m = -INFINITY;
    long a = -1;
    for (int ky = 0; ky < L->kernel[0]; ky++)
        for (int kx = 0; kx < L->kernel[1]; kx++) {
            int iy = oy * L->stride[0] - L->pad_lo[0] + ky, ix = ox * L->stride[1] - L->pad_lo[1] + kx;
            if (iy < 0 || iy >= in.H || ix < 0 || ix >= in.W) continue;
            long j = ((long)iy * in.W + ix);
            if (a < 0) a = j; /* aten starts at the first valid tap with -inf */
            double v = xs[j];
            if (v > m || isnan(v)) { m = v; a = j; }
        }
    return a;
}

static int same_value(double got, double want, double tol)
{
    if (isnan(want) || isnan(got)) return isnan(want) && isnan(got);
    if (isinf(want) || isinf(got)) return got == want;
    return fabs(got - want) <= tol;
}

/* Every test net made only of activations and max pools, with NaN, +Inf and -Inf among
 * its inputs: each layer's output, and (one-layer nets) the input gradient, are PyTorch's. */
START_TEST(test_nan_semantics)
{
    int tested = 0;
    for (int i = 0; cg_test_nets[i]; i++) {
        const cg_net *net = cg_test_nets[i];
        int ok = 1;
        for (int li = 0; li < net->n_layers; li++) ok &= nan_kind(&net->layers[li]);
        if (!ok) continue;
        tested++;
        int n = net->batch;
        state st;
        state_init(&st, net, n, 3000);
        size_t nx = (size_t)n * net->in_size;
        for (size_t j = 0; j < nx; j++) {
            if (j % 7 == 1) st.x[j] = NAN;
            if (j % 7 == 3) st.x[j] = INFINITY;
            if (j % 11 == 5) st.x[j] = -INFINITY;
        }
        fails f = {0};
        fill_nan(st.ws, net->workspace);
        net->forward(st.params, st.buffers, st.x, st.ws, n, 1);
        float *in_rows = NULL, *out_rows = NULL;
        /* a layer written in place over its input (a chain here) leaves that input's saved
         * values overwritten: it is not compared, and its reader gets its expected output */
        float *prev_want = NULL, *cur_want = NULL;
        for (int li = 0; li < net->n_layers; li++) {
            const cg_layer *L = &net->layers[li];
            int overwritten = li + 1 < net->n_layers && net->layers[li + 1].inplace > 0;
            int prev_overwritten = li > 0 && L->inplace > 0;
            const float *xin = li == 0 ? st.x : prev_overwritten ? prev_want : act_rows(&st, &net->layers[li - 1], &in_rows);
            const float *got = act_rows(&st, L, &out_rows);
            free(cur_want);
            cur_want = xcalloc((size_t)n * L->out_size, sizeof(float));
            dims in = dims_of(L->ndim_in, L->in_shape), out = dims_of(L->ndim_out, L->out_shape);
            for (int s = 0; s < n; s++)
                for (int c = 0; c < out.C; c++)
                    for (int oy = 0; oy < out.H; oy++)
                        for (int ox = 0; ox < out.W; ox++) {
                            size_t o = (size_t)s * L->out_size + ((size_t)c * out.H + oy) * out.W + ox;
                            const float *xs = xin + (size_t)s * L->in_size + (size_t)c * in.H * in.W;
                            double want = is_act(L) ? torch_act(L, xin[o]) : xs[torch_argmax(L, xs, oy, ox)];
                            cur_want[o] = (float)want;
                            if (!overwritten && !same_value(got[o], want, 1e-6 * fmax(1, fabs(want))))
                                failf(&f, "%s layer %d (%s) forward: output[%zu] got %g, PyTorch %g", net->name, li,
                                      L->kind, o, got[o], want);
                        }
            float *t = prev_want;
            prev_want = cur_want;
            cur_want = t;
        }
        free(prev_want);
        free(cur_want);
        if (net->n_layers == 1) {
            const cg_layer *L = &net->layers[0];
            const float *y = act_rows(&st, L, &out_rows);
            uint64_t r = 5;
            float *dy = st.ws + net->dout_offset;
            for (size_t j = 0; j < (size_t)n * L->out_size; j++) dy[j] = (float)rng_range(&r, 0.5, 1.5);
            double *want = xcalloc(nx, sizeof(double));
            dims in = dims_of(L->ndim_in, L->in_shape), out = dims_of(L->ndim_out, L->out_shape);
            for (int s = 0; s < n; s++)
                for (int c = 0; c < out.C; c++)
                    for (int oy = 0; oy < out.H; oy++)
                        for (int ox = 0; ox < out.W; ox++) {
                            size_t o = (size_t)s * L->out_size + ((size_t)c * out.H + oy) * out.W + ox;
                            double d = dy[o], x = st.x[o], yo = y[o];
                            if (is_kind(L, "relu")) want[o] = yo <= 0 ? 0 : d; /* threshold_backward */
                            else if (is_kind(L, "leaky_relu")) want[o] = x > 0 ? d : d * (double)L->slope;
                            else if (is_kind(L, "sigmoid")) want[o] = d * yo * (1 - yo);
                            else if (is_kind(L, "tanh")) want[o] = d * (1 - yo * yo);
                            else {
                                size_t base = (size_t)s * L->in_size + (size_t)c * in.H * in.W;
                                want[base + torch_argmax(L, st.x + base, oy, ox)] += d;
                            }
                        }
            fill_nan(st.dx, nx);
            net->backward(st.params, st.grads, st.x, st.dx, st.ws, n);
            for (size_t j = 0; j < nx; j++)
                if (!same_value(st.dx[j], want[j], 1e-6 * fmax(1, fabs(want[j]))))
                    failf(&f, "%s layer 0 (%s) backward: dx[%zu] (x %g) got %g, PyTorch %g", net->name, L->kind, j,
                          st.x[j], st.dx[j], want[j]);
            free(want);
        }
        free(in_rows);
        free(out_rows);
        state_free(&st);
        ck_assert_msg(f.count == 0, "%d mismatches, first: %s", f.count, f.first);
    }
    ck_assert_int_ge(tested, 20);
}
END_TEST

/* The comparisons flag a perturbed activation, parameter gradient and input gradient. */
START_TEST(test_detects_errors)
{
    int tried = 0;
    for (int i = 0; cg_test_nets[i]; i++) {
        const cg_net *net = cg_test_nets[i];
        if (net->n_params == 0) continue;
        fails f1 = {0}, f2 = {0}, f3 = {0};
        run_forward_checks(net, 1, 1, &f1);
        run_backward_checks(net, 1, 1, &f2);
        run_backward_checks(net, 1, 2, &f3);
        ck_assert_msg(f1.count > 0, "%s: a perturbed activation went unnoticed", net->name);
        ck_assert_msg(f2.count > 0, "%s: a perturbed parameter gradient went unnoticed", net->name);
        ck_assert_msg(f3.count > 0, "%s: a perturbed input gradient went unnoticed", net->name);
        if (++tried == 3) break;
    }
    ck_assert_int_gt(tried, 0);
}
END_TEST

/* The test nets reach every layer kind, option and both emission paths. The nets are
 * generated for the host's ISA, and the forms and tiles a net gets depend on its vector
 * width: where a net was sized for AVX2's 8 floats, a sibling sized for AVX-512's 16
 * covers the same form there (t_fuse_wv_loop16, t_fuse_bwd_conv_ln56). */
START_TEST(test_coverage)
{
    static const char *const kinds[] = {"conv1d", "conv2d", "maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d",
                                        "dense", "flatten", "relu", "leaky_relu", "sigmoid", "tanh", "batchnorm",
                                        "add", "concat", "global_avgpool", "dropout"};
    enum { NK = sizeof kinds / sizeof kinds[0] };
    int seen[NK][2] = {{0}}; /* [kind][unrolled] */
    int seen_lanes[NK] = {0};
    int dense_bias[2] = {0}, conv_bias[2] = {0}, avg_cip[2][2] = {{0}}, bn_dim[4] = {0}, bn_null[4] = {0};
    int conv_groups = 0, conv_dw = 0, conv_dil = 0, conv_stride = 0, conv_asym = 0, conv1d_geom = 0;
    /* every conv form the schedules offer (compiler/lua/layers/conv.lua) */
    static const char *const forms[] = {"straight:", "loop:", "wv:", "cv:", "cv+dx:wv:", "lanes:", "lanes+padw:"};
    enum { NF = sizeof forms / sizeof forms[0] };
    int seen_form[NF] = {0};
    for (int i = 0; cg_test_nets[i]; i++)
        for (int li = 0; li < cg_test_nets[i]->n_layers; li++) {
            const cg_layer *L = &cg_test_nets[i]->layers[li];
            ck_assert_msg(L->schedule && L->schedule[0], "%s layer %d: no schedule", cg_test_nets[i]->name, li);
            for (int f = 0; f < NF; f++)
                if (is_conv(L) && strncmp(L->schedule, forms[f], strlen(forms[f])) == 0) seen_form[f] = 1;
        }
    for (int f = 0; f < NF; f++) ck_assert_msg(seen_form[f], "no test net has a conv layer of schedule %s", forms[f]);
    /* a relu fused into every producer kind and forward form that fuses (fuse.lua) */
    static const struct { const char *kind, *fwd; } fuses[] = {
        {"conv2d", " fwd straight+"}, {"conv2d", " fwd loop+"}, {"conv2d", " fwd wv["}, {"conv2d", " fwd cv["},
        {"conv2d", " fwd lanes["}, {"dense", " fwd straight+"}, {"dense", " fwd loop["}, {"dense", " fwd gemm["},
        {"dense", " fwd lanes["}, {"batchnorm", " fwd loop+"}, {"batchnorm", " fwd lanes+"}};
    enum { NFU = sizeof fuses / sizeof fuses[0] };
    int seen_fuse[NFU] = {0};
    for (int i = 0; cg_test_nets[i]; i++)
        for (int li = 0; li < cg_test_nets[i]->n_layers; li++) {
            const cg_layer *L = &cg_test_nets[i]->layers[li];
            for (int f = 0; f < NFU; f++)
                if (fused_act(L) && is_kind(L, fuses[f].kind) && strstr(L->schedule, fuses[f].fwd)) seen_fuse[f] = 1;
        }
    for (int f = 0; f < NFU; f++)
        ck_assert_msg(seen_fuse[f], "no test net fuses a relu into a %s of forward form '%s'", fuses[f].kind, fuses[f].fwd);
    /* an add fused into a batch norm's stores (fuse.plan_add), in both layouts (with the
     * add's relu: tests/torchnets/t_addbn_ln.yaml, against PyTorch) */
    static const char *const add_fuses[] = {" fwd loop+add ", " fwd lanes+add "};
    for (int f = 0; f < 2; f++) {
        int seen_add = 0;
        for (int i = 0; cg_test_nets[i]; i++)
            for (int li = 0; li < cg_test_nets[i]->n_layers; li++) {
                const cg_layer *L = &cg_test_nets[i]->layers[li];
                if (is_kind(L, "batchnorm") && strstr(L->schedule, add_fuses[f])) seen_add = 1;
            }
        ck_assert_msg(seen_add, "no test net fuses an add into a batch norm of forward '%s'", add_fuses[f]);
    }
    /* a relu's derivative masking every consumer kind and dx form that masks (fuse.lua:
     * "+relu'" after the form that writes dx) */
    static const struct { const char *kind, *form; } masks[] = {
        {"maxpool2d", " dw straight+relu'"}, {"maxpool2d", " dw loop+relu'"}, {"maxpool2d", " dw lanes+relu'"},
        {"dense", " dw straight+relu'"}, {"dense", " dx gemm["}, {"dense", " dx lanes[TB"}, {"dense", " dx lanes[KB"},
        {"conv2d", " dx lanes[PY"}, {"conv2d", " dx lanes+padw[TB=2,TCI=1,TX=4]"}};
    enum { NMA = sizeof masks / sizeof masks[0] };
    int seen_mask[NMA] = {0};
    for (int i = 0; cg_test_nets[i]; i++)
        for (int li = 0; li < cg_test_nets[i]->n_layers; li++) {
            const cg_layer *L = &cg_test_nets[i]->layers[li];
            const char *at;
            for (int f = 0; f < NMA; f++)
                if (is_kind(L, masks[f].kind) && (at = strstr(L->schedule, masks[f].form)) != NULL && strstr(at, "+relu'"))
                    seen_mask[f] = 1;
        }
    for (int f = 0; f < NMA; f++)
        ck_assert_msg(seen_mask[f], "no test net masks the dx of a %s of form '%s' with a relu's derivative", masks[f].kind, masks[f].form);
    for (int i = 0; cg_test_nets[i]; i++) {
        const cg_net *net = cg_test_nets[i];
        ck_assert_msg(strncmp(net->name, "t_", 2) == 0, "test net %s: name must start with t_", net->name);
        /* naming convention: NAME_ln nets are batch-innermost (lanes), NAME_loop nets
         * exercise the looped path at layer 0 of the [N][size] emitters */
        ck_assert_msg((strstr(net->name, "_ln") != NULL) == (net->layers[0].lanes > 0),
                      "test net %s: lanes %d disagrees with its name", net->name, net->layers[0].lanes);
        if (net->layers[0].lanes) {
            for (int li = 0; li < net->n_layers; li++) {
                int k;
                for (k = 0; k < NK && !is_kind(&net->layers[li], kinds[k]); k++) {}
                if (k < NK) seen_lanes[k] = 1;
            }
            continue;
        }
        ck_assert_msg((strstr(net->name, "_loop") != NULL) == !unrolled(&net->layers[0]),
                      "test net %s: layer 0 (%s) is %s", net->name, net->layers[0].kind,
                      unrolled(&net->layers[0]) ? "straight-line but the name says _loop" : "looped but the name lacks _loop");
        for (int li = 0; li < net->n_layers; li++) {
            const cg_layer *L = &net->layers[li];
            int k;
            for (k = 0; k < NK && !is_kind(L, kinds[k]); k++) {}
            ck_assert_msg(k < NK, "%s: unknown kind %s", net->name, L->kind);
            seen[k][unrolled(L)] = 1;
            if (is_kind(L, "dense")) dense_bias[L->has_bias] = 1;
            if (is_conv(L)) {
                conv_bias[L->has_bias] = 1;
                if (L->groups > 1 && L->groups < L->in_shape[0]) conv_groups = 1;
                if (L->groups > 1 && L->groups == L->in_shape[0]) conv_dw = 1;
                if (L->dilation[1] > 1) conv_dil = 1;
                if (L->stride[1] > 1) conv_stride = 1;
                if (L->pad_lo[1] != L->pad_hi[1] || L->pad_lo[0] != L->pad_hi[0]) conv_asym = 1;
                if (L->ndim_in == 2 && L->pad_lo[1] > 0 && L->stride[1] > 1) conv1d_geom = 1;
            }
            if (strncmp(L->kind, "avgpool", 7) == 0) avg_cip[L->ndim_in == 3][L->count_include_pad] = 1;
            if (is_kind(L, "batchnorm")) {
                bn_dim[L->ndim_in] = 1;
                if (L->momentum < 0) bn_null[L->ndim_in] = 1;
            }
        }
    }
    for (int k = 0; k < NK; k++) {
        ck_assert_msg(seen[k][0] || seen[k][1], "no test net has a %s layer", kinds[k]);
        if (k < 7 || (k >= 8 && k < 12)) {
            ck_assert_msg(seen[k][1], "no test net has a straight-line %s layer", kinds[k]);
            ck_assert_msg(seen[k][0], "no test net has a looped %s layer", kinds[k]);
        for (int k2 = 0; k2 < NK; k2++)
            ck_assert_msg(seen_lanes[k2], "no batch-innermost (_ln) test net has a %s layer", kinds[k2]);
        }
    }
    ck_assert(dense_bias[0] && dense_bias[1] && conv_bias[0] && conv_bias[1]);
    ck_assert(avg_cip[0][0] && avg_cip[0][1] && avg_cip[1][0] && avg_cip[1][1]);
    for (int d = 1; d <= 3; d++) ck_assert_msg(bn_dim[d] && bn_null[d], "batchnorm over rank %d (momentum null)", d);
    ck_assert(conv_groups && conv_dw && conv_dil && conv_stride && conv_asym && conv1d_geom);
}
END_TEST

Suite *make_layers_suite(void)
{
    Suite *s = suite_create("layers");
    int n = n_test_nets();
    TCase *tc = tcase_create("forward");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_forward, 0, n);
    suite_add_tcase(s, tc);
    tc = tcase_create("backward");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_backward, 0, n);
    suite_add_tcase(s, tc);
    tc = tcase_create("meta");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_coverage);
    tcase_add_test(tc, test_detects_errors);
    tcase_add_test(tc, test_nan_semantics);
    suite_add_tcase(s, tc);
    return s;
}
