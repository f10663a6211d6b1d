/* cnngen runtime: the trainer's command line (check / train / eval / predict / --help). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cnngen.h"
#include "data.h"
#include "npy.h"
#include "sgd.h"
#include "util.h"
#include "weights.h"

enum { EXIT_USAGE = 2 };

/* ---- options ---- */
typedef struct opts {
    const char *weights, *input, *target, *out, *data;
    int epochs, batch;
    float lr, momentum, weight_decay;
    uint64_t seed;
    int has_epochs, has_batch, has_lr, has_momentum, has_wd, has_seed;
} opts;

typedef struct command {
    const char *name;
    const char *options; /* space-separated, e.g. "weights input out" */
    const char *required;
    int (*run)(const cg_net *net, const opts *o);
} command;

static void shape_text(const cg_net *net, char *buf, size_t cap)
{
    size_t n = 0;
    for (int d = 0; d < net->in_ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%d", d ? "x" : "", net->in_shape[d]);
}

static void usage(const cg_net *net, FILE *f)
{
    char shape[64] = "";
    shape_text(net, shape, sizeof shape);
    fprintf(f,
            "%s: cnngen-generated trainer (input %s, output %zu, %zu parameters, %s loss, "
            "max batch %d)\n"
            "usage:\n"
            "  %s train   [--data DIR] [--epochs E] [--lr LR] [--momentum M] [--weight-decay WD]\n"
            "             [--batch B] [--seed S] [--out DIR] [--weights INIT.npz]\n"
            "      minibatch SGD; prints per-epoch train/val loss and val accuracy, the test\n"
            "      accuracy at the end, and saves OUT/final.npz (default OUT: .)\n"
            "  %s eval    --weights W.npz [--data DIR]\n"
            "      test-set loss and accuracy in inference mode\n"
            "  %s predict --weights W.npz --input X.npy --out Y.npy\n"
            "      inference-mode outputs [N, %zu] for X [N, %s] (float32)\n"
            "  %s check   --weights W.npz --input X.npy --target T.npy --out R.npz\n"
            "      one training-mode forward/backward; R.npz holds output, loss, grad.input and\n"
            "      grad.<param> for every parameter\n"
            "  %s --help\n"
            "DIR holds {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (IDX) or train.npz/test.npz\n"
            "with arrays x and y; default for 1x28x28 inputs: " CG_DEFAULT_DATA_DIR "\n"
            "Options also accept --name=value. Exit status: 0 ok, 1 error, 2 usage.\n",
            net->name, shape, net->out_size, cg_param_count(net),
            net->loss == CG_LOSS_SOFTMAX_CE ? "softmax cross-entropy" : "mse", net->batch,
            net->name, net->name, net->name, net->out_size, shape, net->name, net->name);
}

static int usage_error(const cg_net *net, const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "%s: ", net->name);
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n(run '%s --help' for usage)\n", net->name);
    return EXIT_USAGE;
}

static int word_in(const char *list, const char *w, size_t wl)
{
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, " ");
        if (n == wl && strncmp(p, w, n) == 0)
            return 1;
        p += n;
        while (*p == ' ')
            p++;
    }
    return 0;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return 0;
    *out = (float)v;
    return 1;
}

static int parse_opts(const cg_net *net, const command *cmd, int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return usage_error(net, "%s: unexpected argument '%s'", cmd->name, a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        char nm[64];
        snprintf(nm, sizeof nm, "%.*s", (int)(nl < 60 ? nl : 60), name);
        if (!word_in(cmd->options, name, nl))
            return usage_error(net, "%s: unknown option '--%s'", cmd->name, nm);
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (i + 1 >= argc)
                return usage_error(net, "%s: option '--%s' needs a value", cmd->name, nm);
            val = argv[++i];
        }
        long lv;
        if (!strcmp(nm, "weights"))
            o->weights = val;
        else if (!strcmp(nm, "input"))
            o->input = val;
        else if (!strcmp(nm, "target"))
            o->target = val;
        else if (!strcmp(nm, "out"))
            o->out = val;
        else if (!strcmp(nm, "data"))
            o->data = val;
        else if (!strcmp(nm, "epochs")) {
            if (!parse_long(val, 0, 1000000, &lv))
                return usage_error(net, "--epochs: '%s' is not an integer in [0, 1000000]%s", val, "");
            o->epochs = (int)lv;
            o->has_epochs = 1;
        } else if (!strcmp(nm, "batch")) {
            if (!parse_long(val, 1, 1 << 30, &lv))
                return usage_error(net, "--batch: '%s' is not a positive integer%s", val, "");
            o->batch = (int)lv;
            o->has_batch = 1;
        } else if (!strcmp(nm, "seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(val, &end, 0);
            if (errno || end == val || *end || val[0] == '-')
                return usage_error(net, "--seed: '%s' is not a non-negative integer%s", val, "");
            o->seed = s;
            o->has_seed = 1;
        } else {
            float fv;
            if (!parse_float(val, &fv) || fv < 0)
                return usage_error(net, "--%s: '%s' is not a non-negative number", nm, val);
            if (!strcmp(nm, "lr"))
                o->lr = fv, o->has_lr = 1;
            else if (!strcmp(nm, "momentum"))
                o->momentum = fv, o->has_momentum = 1;
            else
                o->weight_decay = fv, o->has_wd = 1;
        }
    }
    const char *p = cmd->required;
    while (*p) {
        size_t n = strcspn(p, " ");
        char nm[64];
        snprintf(nm, sizeof nm, "%.*s", (int)n, p);
        const char *v = !strcmp(nm, "weights") ? o->weights
                        : !strcmp(nm, "input") ? o->input
                        : !strcmp(nm, "target") ? o->target
                        : !strcmp(nm, "out")    ? o->out
                                                : "";
        if (!v)
            return usage_error(net, "%s: missing required option '--%s'", cmd->name, nm);
        p += n;
        while (*p == ' ')
            p++;
    }
    return 0;
}

static int fail(const cg_net *net, const cg_err *e)
{
    fprintf(stderr, "%s: error: %s\n", net->name, e->msg);
    return 1;
}

/* ---- state ---- */
typedef struct state {
    float *params, *grads, *buffers, *ws;
} state;

static void state_alloc(const cg_net *net, state *s)
{
    s->params = cg_xcalloc(net->n_params, sizeof(float), "parameters");
    s->grads = cg_xcalloc(net->n_params, sizeof(float), "gradients");
    s->buffers = cg_xcalloc(net->n_buffers, sizeof(float), "buffers");
    s->ws = cg_xcalloc(net->workspace, sizeof(float), "workspace");
}

static void state_free(state *s)
{
    free(s->params);
    free(s->grads);
    free(s->buffers);
    free(s->ws);
}

/* X [N, *in_shape], float32 (float64 converted); N >= min_n, N <= max_n (0: unlimited). */
static int load_input(const cg_net *net, const char *path, int min_n, int max_n, cg_array *x,
                      cg_err *err)
{
    if (cg_npy_read(path, x, err) != 0)
        return -1;
    char got[128];
    cg_shape_str(x, got, sizeof got);
    int ok = x->ndim == 1 + net->in_ndim;
    for (int d = 0; ok && d < net->in_ndim; d++)
        ok = x->shape[1 + d] == net->in_shape[d];
    if (!ok) {
        char want[64];
        shape_text(net, want, sizeof want);
        cg_array_free(x);
        return cg_fail(err, "%s: input has shape %s, expected [N, %s] for network '%s'", path, got,
                       want, net->name);
    }
    if (x->shape[0] < min_n || (max_n > 0 && x->shape[0] > max_n)) {
        cg_array_free(x);
        if (max_n > 0)
            return cg_fail(err, "%s: input has shape %s; check takes N in 1..%d (the net's batch)",
                           path, got, max_n);
        return cg_fail(err, "%s: input has no samples", path);
    }
    if (x->dtype != CG_F4 && x->dtype != CG_F8) {
        int dt = x->dtype;
        cg_array_free(x);
        return cg_fail(err, "%s: input has dtype %s, expected <f4 (float32)", path,
                       cg_dtype_descr(dt));
    }
    if (cg_array_to_f32(x, path, err) != 0) {
        cg_array_free(x);
        return -1;
    }
    return 0;
}

/* Targets for n samples: int64 class indices (CE) or float [n*out_size] (MSE). */
static int load_target(const cg_net *net, const char *path, int n, cg_array *t, cg_err *err)
{
    if (cg_npy_read(path, t, err) != 0)
        return -1;
    char got[128];
    cg_shape_str(t, got, sizeof got);
    if (net->loss == CG_LOSS_SOFTMAX_CE) {
        if (!cg_dtype_is_int(t->dtype)) {
            cg_fail(err, "%s: targets have dtype %s; softmax cross-entropy needs integer class "
                         "indices (int64, int32 or uint8)", path, cg_dtype_descr(t->dtype));
            goto bad;
        }
        if (t->ndim != 1 || t->shape[0] != n) {
            cg_fail(err, "%s: targets have shape %s, expected (%d,)", path, got, n);
            goto bad;
        }
        int64_t *v = cg_try_alloc((size_t)n, sizeof(int64_t), path, err);
        if (!v)
            goto bad;
        for (int i = 0; i < n; i++) {
            double c = cg_array_get(t, (size_t)i);
            if (c < 0 || c >= (double)net->out_size) {
                free(v);
                cg_fail(err, "%s: class index %.0f at position %d is out of range [0, %zu)", path,
                        c, i, net->out_size);
                goto bad;
            }
            v[i] = (int64_t)c;
        }
        free(t->data);
        t->data = v;
        t->dtype = CG_I8;
        return 0;
    }
    if (t->dtype != CG_F4 && t->dtype != CG_F8) {
        cg_fail(err, "%s: targets have dtype %s; mse needs float32", path, cg_dtype_descr(t->dtype));
        goto bad;
    }
    if (t->ndim < 2 || t->shape[0] != n || t->count != (size_t)n * net->out_size) {
        cg_fail(err, "%s: targets have shape %s, expected (%d, %zu)", path, got, n, net->out_size);
        goto bad;
    }
    if (cg_array_to_f32(t, path, err) != 0)
        goto bad;
    return 0;
bad:
    cg_array_free(t);
    return -1;
}

static int load_weights(const cg_net *net, const char *path, state *s, cg_err *err)
{
    return cg_weights_load(net, path, s->params, s->buffers, err);
}

/* ---- check ---- */
static int cmd_check(const cg_net *net, const opts *o)
{
    cg_err err;
    cg_array x, t;
    if (load_input(net, o->input, 1, net->batch, &x, &err) != 0)
        return fail(net, &err);
    int n = (int)x.shape[0];
    if (load_target(net, o->target, n, &t, &err) != 0) {
        cg_array_free(&x);
        return fail(net, &err);
    }
    state s;
    state_alloc(net, &s);
    float *dx = cg_xcalloc((size_t)n * net->in_size, sizeof(float), "input gradient");
    int rc = 1;
    if (load_weights(net, o->weights, &s, &err) != 0) {
        fail(net, &err);
        goto out;
    }
    net->forward(s.params, s.buffers, x.data, s.ws, n, 1);
    float loss = cg_loss(net->loss, s.ws + net->out_offset, t.data, s.ws + net->dout_offset, n,
                         net->out_size);
    net->backward(s.params, s.grads, x.data, dx, s.ws, n);

    int np = 0;
    for (int i = 0; i < net->n_tensors; i++)
        np += net->tensors[i].kind == CG_PARAM;
    int m = 3 + np;
    const char **keys = cg_xcalloc((size_t)m, sizeof *keys, "keys");
    char **names = cg_xcalloc((size_t)m, sizeof *names, "keys");
    cg_array *arr = cg_xcalloc((size_t)m, sizeof *arr, "arrays");
    keys[0] = "output";
    arr[0] = (cg_array){.dtype = CG_F4, .ndim = 2, .shape = {n, (int64_t)net->out_size},
                        .count = (size_t)n * net->out_size, .data = s.ws + net->out_offset};
    keys[1] = "loss";
    arr[1] = (cg_array){.dtype = CG_F4, .ndim = 0, .count = 1, .data = &loss};
    keys[2] = "grad.input";
    arr[2] = x;
    arr[2].dtype = CG_F4;
    arr[2].data = dx;
    int k = 3;
    for (int i = 0; i < net->n_tensors; i++) {
        const cg_tensor *tt = &net->tensors[i];
        if (tt->kind != CG_PARAM)
            continue;
        size_t len = strlen(tt->name) + 6;
        names[k] = cg_xmalloc(len, 1, "key");
        snprintf(names[k], len, "grad.%s", tt->name);
        keys[k] = names[k];
        arr[k] = (cg_array){.dtype = CG_F4, .ndim = tt->ndim, .count = tt->size,
                            .data = s.grads + tt->offset};
        for (int d = 0; d < tt->ndim; d++)
            arr[k].shape[d] = tt->shape[d];
        k++;
    }
    if (cg_npz_write(o->out, m, keys, arr, &err) != 0)
        fail(net, &err);
    else
        rc = 0;
    for (int i = 0; i < m; i++)
        free(names[i]);
    free(names);
    free(keys);
    free(arr);
out:
    free(dx);
    state_free(&s);
    cg_array_free(&x);
    cg_array_free(&t);
    return rc;
}

/* ---- evaluation over a dataset (inference mode, chunks of net->batch) ---- */
typedef struct batchbuf {
    float *x;     /* [net->batch, in_size] */
    int64_t *y;   /* [net->batch] */
    float *t;     /* [net->batch, out_size] (MSE only) */
    size_t *perm; /* [n_train] */
} batchbuf;

static void evaluate(const cg_net *net, state *s, const cg_dataset *ds, batchbuf *b,
                     double *loss, double *acc)
{
    double total = 0.0;
    size_t correct = 0;
    for (size_t start = 0; start < ds->n; start += (size_t)net->batch) {
        int n = (int)(ds->n - start < (size_t)net->batch ? ds->n - start : (size_t)net->batch);
        cg_dataset_gather(ds, NULL, start, n, b->x, b->y, b->t, net->out_size);
        net->forward(s->params, s->buffers, b->x, s->ws, n, 0);
        const float *out = s->ws + net->out_offset;
        const void *target = net->loss == CG_LOSS_SOFTMAX_CE ? (const void *)b->y : b->t;
        total += (double)cg_loss(net->loss, out, target, NULL, n, net->out_size) * n;
        if (ds->labels)
            for (int i = 0; i < n; i++) {
                const float *z = out + (size_t)i * net->out_size;
                size_t best = 0;
                for (size_t j = 1; j < net->out_size; j++)
                    if (z[j] > z[best])
                        best = j;
                correct += (int64_t)best == b->y[i];
            }
    }
    *loss = ds->n ? total / (double)ds->n : NAN;
    *acc = ds->n && ds->labels ? (double)correct / (double)ds->n : NAN;
}

static void batchbuf_alloc(const cg_net *net, size_t n_train, batchbuf *b)
{
    b->x = cg_xmalloc((size_t)net->batch * net->in_size, sizeof(float), "batch inputs");
    b->y = cg_xcalloc((size_t)net->batch, sizeof(int64_t), "batch labels");
    b->t = net->loss == CG_LOSS_MSE
               ? cg_xcalloc((size_t)net->batch * net->out_size, sizeof(float), "batch targets")
               : NULL;
    b->perm = cg_xmalloc(n_train ? n_train : 1, sizeof(size_t), "permutation");
}

static void batchbuf_free(batchbuf *b)
{
    free(b->x);
    free(b->y);
    free(b->t);
    free(b->perm);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void print_metric(const char *name, double v)
{
    if (!isnan(v))
        printf("  %s %.4f", name, v);
}

/* ---- train ---- */
static int cmd_train(const cg_net *net, const opts *o)
{
    int batch = o->has_batch ? o->batch : (net->train.batch > 0 ? net->train.batch : net->batch);
    if (batch > net->batch) {
        if (o->has_batch) {
            char b1[32];
            snprintf(b1, sizeof b1, "%d", net->batch);
            return usage_error(net, "--batch must be at most %s (the batch '%s' was compiled for)",
                               b1, net->name);
        }
        batch = net->batch;
    }
    int epochs = o->has_epochs ? o->epochs : (net->train.epochs > 0 ? net->train.epochs : 10);
    float lr = o->has_lr ? o->lr : (net->train.lr > 0 ? net->train.lr : 0.01f);
    float mom = o->has_momentum ? o->momentum : (net->train.momentum > 0 ? net->train.momentum : 0);
    float wd = o->has_wd ? o->weight_decay : (net->train.weight_decay > 0 ? net->train.weight_decay : 0);
    uint64_t seed = o->has_seed ? o->seed : 0;
    const char *outdir = o->out ? o->out : ".";

    cg_err err;
    char final_path[4352];
    if (cg_path_join(final_path, sizeof final_path, outdir, "final.npz", &err) != 0)
        return fail(net, &err);
    if (mkdir(outdir, 0777) != 0 && errno != EEXIST) {
        cg_fail(&err, "%s: cannot create output directory: %s", outdir, strerror(errno));
        return fail(net, &err);
    }
    cg_dataset all, test, tr, val;
    if (cg_dataset_load(net, o->data, CG_SPLIT_TRAIN, &all, &err) != 0)
        return fail(net, &err);
    if (cg_dataset_load(net, o->data, CG_SPLIT_TEST, &test, &err) != 0) {
        cg_dataset_free(&all);
        return fail(net, &err);
    }
    size_t n_val = all.n >= 10000 ? 5000 : all.n / 10;
    cg_dataset_split(&all, n_val, &tr, &val);

    state s;
    state_alloc(net, &s);
    batchbuf b;
    batchbuf_alloc(net, tr.n, &b);
    cg_sgd opt;
    int rc = 1;
    if (cg_sgd_init(&opt, net->n_params, lr, mom, wd, &err) != 0) {
        fail(net, &err);
        goto out_nosgd;
    }
    if (o->weights) {
        if (load_weights(net, o->weights, &s, &err) != 0) {
            fail(net, &err);
            goto out;
        }
    } else {
        cg_init_params(net, s.params, s.buffers, seed);
    }
    cg_rng rng;
    cg_rng_seed(&rng, seed ^ 0x5DEECE66Dull);
    for (size_t i = 0; i < tr.n; i++)
        b.perm[i] = i;
    printf("%s: training on %zu samples (validation %zu, test %zu), %d epochs, batch %d, lr %g, "
           "momentum %g, weight decay %g, seed %llu\n",
           net->name, tr.n, val.n, test.n, epochs, batch, lr, mom, wd, (unsigned long long)seed);
    fflush(stdout);
    const void *target = net->loss == CG_LOSS_SOFTMAX_CE ? (const void *)b.y : b.t;
    for (int ep = 1; ep <= epochs; ep++) {
        double t0 = now(), total = 0.0;
        for (size_t i = tr.n; i > 1; i--) { /* Fisher-Yates */
            size_t j = (size_t)cg_rng_below(&rng, i);
            size_t tmp = b.perm[i - 1];
            b.perm[i - 1] = b.perm[j];
            b.perm[j] = tmp;
        }
        for (size_t start = 0; start < tr.n; start += (size_t)batch) {
            int n = (int)(tr.n - start < (size_t)batch ? tr.n - start : (size_t)batch);
            cg_dataset_gather(&tr, b.perm, start, n, b.x, b.y, b.t, net->out_size);
            memset(s.grads, 0, net->n_params * sizeof(float));
            net->forward(s.params, s.buffers, b.x, s.ws, n, 1);
            float l = cg_loss(net->loss, s.ws + net->out_offset, target, s.ws + net->dout_offset,
                              n, net->out_size);
            net->backward(s.params, s.grads, b.x, NULL, s.ws, n);
            cg_sgd_step(&opt, s.params, s.grads);
            total += (double)l * n;
        }
        double train_loss = tr.n ? total / (double)tr.n : NAN;
        if (tr.n && !isfinite(train_loss)) {
            cg_fail(&err, "training diverged at epoch %d (train loss %g); try a smaller --lr", ep,
                    train_loss);
            fail(net, &err);
            goto out;
        }
        double vl = NAN, va = NAN;
        if (val.n)
            evaluate(net, &s, &val, &b, &vl, &va);
        printf("epoch %d/%d", ep, epochs);
        print_metric("train_loss", train_loss);
        print_metric("val_loss", vl);
        print_metric("val_acc", va);
        printf("  (%.1fs)\n", now() - t0);
        fflush(stdout);
    }
    double tl, ta;
    evaluate(net, &s, &test, &b, &tl, &ta);
    printf("test");
    print_metric("test_loss", tl);
    print_metric("test_acc", ta);
    printf("\n");
    if (cg_weights_save(net, final_path, s.params, s.buffers, &err) != 0) {
        fail(net, &err);
        goto out;
    }
    printf("saved %s\n", final_path);
    rc = 0;
out:
    cg_sgd_free(&opt);
out_nosgd:
    batchbuf_free(&b);
    state_free(&s);
    cg_dataset_free(&all);
    cg_dataset_free(&test);
    return rc;
}

/* ---- eval ---- */
static int cmd_eval(const cg_net *net, const opts *o)
{
    cg_err err;
    cg_dataset test;
    if (cg_dataset_load(net, o->data, CG_SPLIT_TEST, &test, &err) != 0)
        return fail(net, &err);
    state s;
    state_alloc(net, &s);
    batchbuf b;
    batchbuf_alloc(net, 0, &b);
    int rc = 1;
    if (load_weights(net, o->weights, &s, &err) != 0) {
        fail(net, &err);
    } else {
        double tl, ta;
        evaluate(net, &s, &test, &b, &tl, &ta);
        printf("%s: %zu test samples", net->name, test.n);
        print_metric("test_loss", tl);
        print_metric("test_acc", ta);
        printf("\n");
        rc = 0;
    }
    batchbuf_free(&b);
    state_free(&s);
    cg_dataset_free(&test);
    return rc;
}

/* ---- predict ---- */
static int cmd_predict(const cg_net *net, const opts *o)
{
    cg_err err;
    cg_array x;
    if (load_input(net, o->input, 0, 0, &x, &err) != 0)
        return fail(net, &err);
    size_t n = (size_t)x.shape[0];
    state s;
    state_alloc(net, &s);
    cg_array y;
    int64_t shape[2] = {(int64_t)n, (int64_t)net->out_size};
    int rc = 1;
    if (cg_array_alloc(&y, CG_F4, 2, shape, &err) != 0) {
        fail(net, &err);
        goto out_noy;
    }
    if (load_weights(net, o->weights, &s, &err) != 0) {
        fail(net, &err);
        goto out;
    }
    for (size_t start = 0; start < n; start += (size_t)net->batch) {
        int m = (int)(n - start < (size_t)net->batch ? n - start : (size_t)net->batch);
        net->forward(s.params, s.buffers, (const float *)x.data + start * net->in_size, s.ws, m, 0);
        memcpy((float *)y.data + start * net->out_size, s.ws + net->out_offset,
               (size_t)m * net->out_size * sizeof(float));
    }
    if (cg_npy_write(o->out, &y, &err) != 0)
        fail(net, &err);
    else
        rc = 0;
out:
    cg_array_free(&y);
out_noy:
    state_free(&s);
    cg_array_free(&x);
    return rc;
}

static const command commands[] = {
    {"train", "data epochs lr momentum weight-decay batch seed out weights", "", cmd_train},
    {"eval", "weights data", "weights", cmd_eval},
    {"predict", "weights input out", "weights input out", cmd_predict},
    {"check", "weights input target out", "weights input target out", cmd_check},
};

int cg_main(const cg_net *net, int argc, char **argv)
{
    if (net->abi != CG_ABI_VERSION) {
        fprintf(stderr, "%s: network ABI %d does not match runtime ABI %d; regenerate and rebuild\n",
                net->name, net->abi, CG_ABI_VERSION);
        return 1;
    }
    if (argc < 2) {
        usage(net, stderr);
        return EXIT_USAGE;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        usage(net, stdout);
        return 0;
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(net, stdout);
            return 0;
        }
    for (size_t c = 0; c < sizeof commands / sizeof commands[0]; c++) {
        if (strcmp(sub, commands[c].name) != 0)
            continue;
        opts o;
        int rc = parse_opts(net, &commands[c], argc, argv, &o);
        if (rc != 0)
            return rc;
        rc = commands[c].run(net, &o);
        if (fflush(stdout) != 0 && rc == 0) {
            fprintf(stderr, "%s: error writing to standard output: %s\n", net->name, strerror(errno));
            rc = 1;
        }
        return rc;
    }
    return usage_error(net, "unknown command '%s'%s", sub, "");
}
