/* cnngen runtime: the trainer's command line (check / train / eval / predict / --help). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cnngen.h"
#include "data.h"
#include "npy.h"
#include "sgd.h"
#include "train.h"
#include "util.h"
#include "weights.h"

enum { EXIT_USAGE = 2 };

/* ---- options ---- */
typedef struct opts {
    const char *weights, *input, *target, *out, *norm;
    cg_train_opts t; /* train's settings, starting from the spec's train: section */
    int has_batch;
    int softmax;               /* predict: probabilities instead of the raw outputs */
    int confusion;             /* eval: per-class accuracy and the confusion matrix */
    const char *confusion_csv; /* eval: the matrix as CSV (implies confusion) */
    int ieee_subnormals;       /* keep IEEE subnormals instead of FTZ|DAZ (cg_flush_subnormals) */
} opts;

typedef struct command {
    const char *name;
    const char *options; /* space-separated, e.g. "weights input out" */
    const char *required;
    int (*run)(const cg_net *net, const opts *o);
} command;

/* options that take no value */
static const char *const flag_options =
    "normalize no-normalize resume plain quiet no-plot softmax confusion ieee-subnormals";
/* options every command takes */
static const char *const common_options = "ieee-subnormals";

static void shape_text(const cg_net *net, char *buf, size_t cap)
{
    size_t n = 0;
    for (int d = 0; d < net->in_ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%d", d ? "x" : "", net->in_shape[d]);
}

static const char *const mode_names[] = {"minibatch", "sgd", "full"};
static const char *const order_names[] = {"shuffle", "random"};
static const char *const sched_names[] = {"constant", "step", "cosine"};

static void usage(const cg_net *net, FILE *f)
{
    char shape[64] = "";
    shape_text(net, shape, sizeof shape);
    cg_train_opts d;
    cg_train_opts_init(&d, net);
    const cg_train_defaults *h = &d.h;
    fprintf(f,
            "%s: cnngen-generated trainer (input %s, output %zu, %zu parameters, %s loss, "
            "max batch %d)\n"
            "usage:\n"
            "  %s train [options]     train; writes OUT/{final,best,last}.npz, log.csv, curve.png\n"
            "  %s eval --weights W.npz [--data PATH | --data-x X --data-y Y] [--norm F|none]\n"
            "          [--confusion] [--confusion-csv FILE.csv]\n"
            "      inference-mode loss and accuracy on the test set of PATH (default dataset\n"
            "      when omitted), or on the file / pair given; --confusion adds the per-class\n"
            "      accuracy and the confusion matrix, --confusion-csv also writes it as CSV\n"
            "  %s predict --weights W.npz --input X --out Y [--softmax] [--norm F|none]\n"
            "      inference-mode outputs [N, %zu] for X [N, %s]; X is .npy or IDX (float32,\n"
            "      or uint8 scaled) or .csv (features, or the training layout: label first);\n"
            "      Y is .npy or .csv (one row a sample), by extension; --softmax: class\n"
            "      probabilities instead of the raw outputs (logits)\n"
            "  %s check --weights W.npz --input X.npy --target T.npy --out R.npz\n"
            "      one training-mode forward/backward; R.npz holds output, loss, grad.input and\n"
            "      grad.<param> for every parameter\n"
            "  %s --help\n"
            "train options (defaults from the spec's train: section in brackets):\n"
            "  data:  --data PATH        directory ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]\n"
            "                            or train.npz/test.npz with x, y), a .npz (x, y) or a .csv\n"
            "                            (label first, then the features; the formats: docs/data.md)\n"
            "                            [" CG_DEFAULT_DATA_DIR
            " for 1x28x28]\n"
            "         --data-x X --data-y Y    inputs and labels/targets, each .npy or IDX (gz or plain)\n"
            "         --test PATH | --test-x X --test-y Y    test set (default: the directory's)\n"
            "         --val N | --val-frac F   held out from the end of the training data [%s]\n"
            "         --normalize | --no-normalize   per-channel standardization with training\n"
            "                            statistics, saved as OUT/normalize.npz [%s]\n"
            "  optimizer: --mode sgd|minibatch|full [%s]  --batch B [%d]  --order shuffle|random [%s]\n"
            "         --epochs E [%d]  --lr LR [%g]  --momentum M [%g]  --weight-decay WD [%g]\n"
            "         --schedule constant|step|cosine [%s]  --step-size S [%d]  --gamma G [%g]\n"
            "  early stopping: --patience P (evaluations, 0 never) [%d]\n"
            "                  --monitor loss|error (validation loss or 0-1 error to minimize)\n"
            "         --eval-every K (steps, 0 once an epoch) [%d]\n"
            "  run:   --out DIR [.]  --seed S [%d]  --weights INIT.npz\n"
            "         --checkpoint-every N (steps, 0 off) [%d]  --resume (from OUT/checkpoint.npz;\n"
            "         --epochs, --lr, --momentum, --weight-decay, --schedule, --step-size, --gamma,\n"
            "         --patience and --eval-every may change, the other settings and the data not)\n"
            "         --plain (no \\r progress line)  --quiet  --no-plot  --max-steps N (stop as if\n"
            "         killed after N steps, to test --resume)\n"
            "eval/predict use OUT/normalize.npz next to the weights when it exists (--norm none: off).\n"
            "every command: --ieee-subnormals  keep IEEE subnormal floats (below 1.2e-38); by default\n"
            "         they are flushed to zero (x86 MXCSR FTZ|DAZ), which makes no difference to the\n"
            "         results beyond that range and avoids the CPU's slow path for them\n"
            "Options also accept --name=value. Exit status: 0 ok, 1 error, 2 usage.\n",
            net->name, shape, net->out_size, cg_param_count(net),
            net->loss == CG_LOSS_SOFTMAX_CE ? "softmax cross-entropy" : "mse", net->batch,
            net->name, net->name, net->name, net->out_size, shape, net->name, net->name,
            h->val_frac > 0 ? "fraction" : h->val >= 0 ? "given" : "5000 if >= 10000 samples, else 10%",
            h->normalize ? "on" : "off", mode_names[h->mode], h->batch, order_names[h->order],
            h->epochs, h->lr, h->momentum, h->weight_decay, sched_names[h->schedule],
            h->step_size, h->gamma, h->patience, h->eval_every, h->seed, h->checkpoint_every);
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

static int parse_enum(const char *v, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i]))
            return i;
    return -1;
}

static int parse_opts(const cg_net *net, const command *cmd, int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    cg_train_opts_init(&o->t, net);
    cg_train_defaults *h = &o->t.h;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return usage_error(net, "%s: unexpected argument '%s'", cmd->name, a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        char nm[64];
        snprintf(nm, sizeof nm, "%.*s", (int)(nl < 60 ? nl : 60), name);
        if (!word_in(cmd->options, name, nl) && !word_in(common_options, name, nl))
            return usage_error(net, "%s: unknown option '--%s'", cmd->name, nm);
        if (word_in(flag_options, name, nl)) {
            if (eq)
                return usage_error(net, "%s: option '--%s' takes no value", cmd->name, nm);
            if (!strcmp(nm, "normalize"))
                h->normalize = 1;
            else if (!strcmp(nm, "no-normalize"))
                h->normalize = 0;
            else if (!strcmp(nm, "resume"))
                o->t.resume = 1;
            else if (!strcmp(nm, "plain"))
                o->t.progress = 0;
            else if (!strcmp(nm, "quiet"))
                o->t.quiet = 1;
            else if (!strcmp(nm, "no-plot"))
                o->t.plot = 0;
            else if (!strcmp(nm, "softmax"))
                o->softmax = 1;
            else if (!strcmp(nm, "confusion"))
                o->confusion = 1;
            else if (!strcmp(nm, "ieee-subnormals"))
                o->ieee_subnormals = 1;
            continue;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (i + 1 >= argc)
                return usage_error(net, "%s: option '--%s' needs a value", cmd->name, nm);
            val = argv[++i];
        }
        long lv;
        float fv;
        int ev;
        /* strings */
        const char **sp = !strcmp(nm, "weights") ? &o->weights
                          : !strcmp(nm, "input")  ? &o->input
                          : !strcmp(nm, "target") ? &o->target
                          : !strcmp(nm, "out")    ? &o->out
                          : !strcmp(nm, "norm")   ? &o->norm
                          : !strcmp(nm, "data")   ? &o->t.data
                          : !strcmp(nm, "data-x") ? &o->t.data_x
                          : !strcmp(nm, "data-y") ? &o->t.data_y
                          : !strcmp(nm, "test")   ? &o->t.test
                          : !strcmp(nm, "test-x") ? &o->t.test_x
                          : !strcmp(nm, "test-y") ? &o->t.test_y
                          : !strcmp(nm, "confusion-csv") ? &o->confusion_csv
                                                  : NULL;
        if (sp) {
            *sp = val;
            continue;
        }
        /* enums */
        if (!strcmp(nm, "monitor")) {
            static const char *const monitor_names[] = {"loss", "error"};
            ev = parse_enum(val, monitor_names, 2);
            if (ev < 0)
                return usage_error(net, "--%s: unknown value '%s' (loss or error)", nm, val);
            h->monitor = ev;
            continue;
        }
        if (!strcmp(nm, "mode") || !strcmp(nm, "order") || !strcmp(nm, "schedule")) {
            int is_mode = nm[0] == 'm', is_order = nm[0] == 'o';
            const char *const *names = is_mode ? mode_names : is_order ? order_names : sched_names;
            ev = parse_enum(val, names, is_order ? 2 : 3);
            if (ev < 0)
                return usage_error(net, "--%s: unknown value '%s'", nm, val);
            *(is_mode ? &h->mode : is_order ? &h->order : &h->schedule) = ev;
            continue;
        }
        /* integers */
        struct { const char *n; int *dst; long lo, hi; } ints[] = {
            {"epochs", &h->epochs, 0, 1000000},     {"batch", &h->batch, 1, 1 << 30},
            {"step-size", &h->step_size, 1, 1000000}, {"patience", &h->patience, 0, 1 << 30},
            {"eval-every", &h->eval_every, 0, 1 << 30}, {"val", &h->val, 0, 1 << 30},
            {"seed", &h->seed, 0, 2147483647L},     {"checkpoint-every", &h->checkpoint_every, 0, 1 << 30},
        };
        int done = 0;
        for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !done; k++)
            if (!strcmp(nm, ints[k].n)) {
                if (!parse_long(val, ints[k].lo, ints[k].hi, &lv)) {
                    char range[64];
                    snprintf(range, sizeof range, "an integer in [%ld, %ld]", ints[k].lo, ints[k].hi);
                    fprintf(stderr, "%s: --%s: '%s' is not %s\n(run '%s --help' for usage)\n",
                            net->name, nm, val, range, net->name);
                    return EXIT_USAGE;
                }
                *ints[k].dst = (int)lv;
                if (!strcmp(nm, "batch"))
                    o->has_batch = 1;
                if (!strcmp(nm, "val"))
                    h->val_frac = 0;
                done = 1;
            }
        if (done)
            continue;
        if (!strcmp(nm, "max-steps")) {
            if (!parse_long(val, 1, 2147483647L, &lv))
                return usage_error(net, "--max-steps: '%s' is not a positive integer%s", val, "");
            o->t.max_steps = lv;
            continue;
        }
        /* non-negative numbers */
        if (!parse_float(val, &fv) || fv < 0)
            return usage_error(net, "--%s: '%s' is not a non-negative number", nm, val);
        if (!strcmp(nm, "lr"))
            h->lr = fv;
        else if (!strcmp(nm, "momentum")) {
            if (fv >= 1)
                return usage_error(net, "--momentum: '%s' must be in [0, 1)%s", val, "");
            h->momentum = fv;
        } else if (!strcmp(nm, "weight-decay"))
            h->weight_decay = fv;
        else if (!strcmp(nm, "gamma"))
            h->gamma = fv;
        else if (!strcmp(nm, "val-frac")) {
            if (fv <= 0 || fv >= 1)
                return usage_error(net, "--val-frac: '%s' must be in (0, 1)%s", val, "");
            h->val_frac = fv;
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

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* the extensions cg_data_path_load reads as CSV */
static int is_csv(const char *path)
{
    return ends_with(path, ".csv") || ends_with(path, ".CSV") || ends_with(path, ".txt");
}

/* A sample shape the net takes: its input shape, with leading 1s dropped or added
 * ([28, 28] for 1x28x28), or flat [in_size] (C-order, as CSV rows are). */
static int input_shape_ok(const cg_net *net, const cg_array *x)
{
    size_t count = 1;
    for (int d = 1; d < x->ndim; d++)
        count *= (size_t)x->shape[d];
    if (x->ndim < 2 || count != net->in_size)
        return 0;
    if (x->ndim == 2)
        return 1;
    int a = 1, b = 0;
    while (a < x->ndim - 1 && x->shape[a] == 1)
        a++;
    while (b < net->in_ndim - 1 && net->in_shape[b] == 1)
        b++;
    if (x->ndim - a != net->in_ndim - b)
        return 0;
    for (; a < x->ndim; a++, b++)
        if (x->shape[a] != net->in_shape[b])
            return 0;
    return 1;
}

/* X [N, *in_shape] from .npy or IDX (by content) or CSV (by extension, the training
 * layout or features only); float32 (float64 converted, uint8 scaled to [0, 1]);
 * N >= min_n, N <= max_n (0: unlimited). */
static int load_input(const cg_net *net, const char *path, int min_n, int max_n, cg_array *x,
                      cg_err *err)
{
    if (is_csv(path)) {
        cg_dataset ds;
        if (cg_csv_load_inputs(path, net->in_size, &ds, err) != 0)
            return -1;
        if (ds.scaled_u8)
            fprintf(stderr, "%s: note: %s: integer features in 0..255 taken as uint8 and scaled "
                            "to [0, 1]\n", net->name, path);
        *x = (cg_array){.dtype = CG_F4, .ndim = 2, .shape = {(int64_t)ds.n, (int64_t)ds.x_size},
                        .count = ds.n * ds.x_size, .data = ds.x};
        ds.x = NULL;
        cg_dataset_free(&ds);
    } else if (cg_array_file_read(path, x, err) != 0) {
        return -1;
    }
    char got[128];
    cg_shape_str(x, got, sizeof got);
    if (!input_shape_ok(net, x)) {
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
    if (x->dtype != CG_F4 && x->dtype != CG_F8 && x->dtype != CG_U1) {
        int dt = x->dtype;
        cg_array_free(x);
        return cg_fail(err, "%s: input has dtype %s, expected <f4 (float32) or |u1 (uint8, "
                            "scaled to [0, 1])", path, cg_dtype_descr(dt));
    }
    int u8 = x->dtype == CG_U1;
    if (cg_array_to_f32(x, path, err) != 0) {
        cg_array_free(x);
        return -1;
    }
    if (u8)
        for (size_t i = 0; i < x->count; i++)
            ((float *)x->data)[i] /= 255.0f;
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

static void print_metric(const char *name, double v)
{
    if (!isnan(v))
        printf("  %s %.4f", name, v);
}

/* Normalization for eval/predict: --norm FILE, --norm none, or normalize.npz next to the
 * weights. Returns 0 with *mean == NULL when there is none. */
static int load_norm(const cg_net *net, const opts *o, float **mean, float **std, cg_err *err)
{
    *mean = *std = NULL;
    char path[4352];
    if (o->norm && !strcmp(o->norm, "none"))
        return 0;
    if (o->norm) {
        snprintf(path, sizeof path, "%s", o->norm);
    } else {
        const char *slash = strrchr(o->weights, '/');
        if (slash)
            snprintf(path, sizeof path, "%.*s/normalize.npz", (int)(slash - o->weights), o->weights);
        else
            snprintf(path, sizeof path, "normalize.npz");
        if (access(path, F_OK) != 0)
            return 0;
    }
    size_t C = cg_norm_channels(net);
    *mean = cg_xmalloc(C, sizeof(float), "normalization");
    *std = cg_xmalloc(C, sizeof(float), "normalization");
    if (cg_norm_load(net, path, *mean, *std, err) != 0) {
        free(*mean);
        free(*std);
        *mean = *std = NULL;
        return -1;
    }
    fprintf(stderr, "%s: inputs normalized with %s (--norm none: off)\n", net->name, path);
    return 0;
}

/* ---- train ---- */
static int cmd_train(const cg_net *net, const opts *o)
{
    cg_train_opts t = o->t;
    if (t.h.mode != CG_MODE_SGD && t.h.batch > net->batch) {
        if (o->has_batch) {
            char b1[32];
            snprintf(b1, sizeof b1, "%d", net->batch);
            return usage_error(net, "--batch must be at most %s (the batch '%s' was compiled for)",
                               b1, net->name);
        }
        t.h.batch = net->batch;
    }
    t.out = o->out;
    t.init_weights = o->weights;
    cg_err err;
    cg_train_result res;
    if (cg_train(net, &t, &res, &err) != 0)
        return fail(net, &err);
    if (res.killed)
        printf("%s: stopped after --max-steps at step %lld (resume with --resume)\n", net->name,
               res.steps);
    return 0;
}

/* ---- eval ---- */
/* text into path, atomically; the text comes from a memstream (NULL: out of memory) */
static int write_text(const char *path, char *text, size_t len, cg_err *err)
{
    if (!text)
        return cg_fail(err, "%s: out of memory", path);
    int rc = cg_write_file_atomic(path, text, len, err);
    free(text);
    return rc;
}

/* conf [K][K]: rows the true class, columns the predicted one */
static void print_confusion(const size_t *conf, size_t K)
{
    size_t w = 5;
    for (size_t i = 0; i < K * K; i++) {
        char b[32];
        size_t l = (size_t)snprintf(b, sizeof b, "%zu", conf[i]);
        if (l + 1 > w)
            w = l + 1;
    }
    printf("per-class accuracy (true class: correct / samples):\n");
    for (size_t c = 0; c < K; c++) {
        size_t n = 0;
        for (size_t j = 0; j < K; j++)
            n += conf[c * K + j];
        if (n)
            printf("  class %zu: %.4f (%zu / %zu)\n", c, (double)conf[c * K + c] / (double)n,
                   conf[c * K + c], n);
        else
            printf("  class %zu: - (0 samples)\n", c);
    }
    printf("confusion matrix (rows: true class, columns: predicted class):\n%*s", 10, "true\\pred");
    for (size_t j = 0; j < K; j++)
        printf("%*zu", (int)w, j);
    printf("\n");
    for (size_t c = 0; c < K; c++) {
        printf("%10zu", c);
        for (size_t j = 0; j < K; j++)
            printf("%*zu", (int)w, conf[c * K + j]);
        printf("\n");
    }
}

/* class,pred_0..pred_{K-1},samples,accuracy: one row per true class */
static int write_confusion_csv(const char *path, const size_t *conf, size_t K, cg_err *err)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return cg_fail(err, "%s: out of memory", path);
    fprintf(f, "class");
    for (size_t j = 0; j < K; j++)
        fprintf(f, ",pred_%zu", j);
    fprintf(f, ",samples,accuracy\n");
    for (size_t c = 0; c < K; c++) {
        size_t n = 0;
        fprintf(f, "%zu", c);
        for (size_t j = 0; j < K; j++) {
            fprintf(f, ",%zu", conf[c * K + j]);
            n += conf[c * K + j];
        }
        if (n)
            fprintf(f, ",%zu,%.6f\n", n, (double)conf[c * K + c] / (double)n);
        else
            fprintf(f, ",0,\n");
    }
    if (fclose(f) != 0) {
        free(text);
        return cg_fail(err, "%s: out of memory", path);
    }
    return write_text(path, text, len, err);
}

static int cmd_eval(const cg_net *net, const opts *o)
{
    cg_err err;
    cg_dataset test;
    int rc;
    if (o->t.data_x || o->t.data_y) {
        if (!o->t.data_x || !o->t.data_y)
            return usage_error(net, "eval: --data-x and --data-y go together%s%s", "", "");
        rc = cg_xy_load(o->t.data_x, o->t.data_y, &test, &err);
        if (rc == 0 && (rc = cg_dataset_check_files(&test, net, o->t.data_x, o->t.data_y, &err)))
            cg_dataset_free(&test);
    } else {
        rc = cg_data_path_load(net, o->t.data, CG_SPLIT_TEST, &test, &err);
    }
    if (rc != 0)
        return fail(net, &err);
    const int confusion = o->confusion || o->confusion_csv;
    if (confusion && !test.labels) {
        cg_dataset_free(&test);
        return usage_error(net, "eval: --confusion needs class labels; the %s has float targets%s",
                           o->t.data_y ? "--data-y file" : "data", "");
    }
    const size_t K = net->out_size;
    size_t *conf = confusion ? cg_xcalloc(K * K, sizeof(size_t), "confusion matrix") : NULL;
    float *params = cg_xcalloc(net->n_params, sizeof(float), "parameters");
    float *buffers = cg_xcalloc(net->n_buffers, sizeof(float), "buffers");
    float *ws = cg_xcalloc(net->workspace, sizeof(float), "workspace");
    float *xb = cg_xcalloc((size_t)net->batch * net->in_size, sizeof(float), "batch");
    int64_t *yb = cg_xcalloc((size_t)net->batch, sizeof(int64_t), "batch labels");
    float *tb = cg_xcalloc((size_t)net->batch * net->out_size, sizeof(float), "batch targets");
    float *mean = NULL, *std = NULL;
    rc = 1;
    if (cg_weights_load(net, o->weights, params, buffers, &err) != 0 ||
        load_norm(net, o, &mean, &std, &err) != 0) {
        fail(net, &err);
    } else {
        if (mean)
            cg_norm_apply(net, test.x, test.n, mean, std);
        double tl, ta;
        cg_evaluate_confusion(net, params, buffers, ws, &test, xb, yb, tb, &tl, &ta, conf);
        printf("%s: %zu test samples", net->name, test.n);
        print_metric("test_loss", tl);
        print_metric("test_acc", ta);
        printf("\n");
        rc = 0;
        if (conf) {
            print_confusion(conf, K);
            if (o->confusion_csv && write_confusion_csv(o->confusion_csv, conf, K, &err) != 0)
                rc = fail(net, &err);
        }
    }
    free(conf);
    free(mean);
    free(std);
    free(params);
    free(buffers);
    free(ws);
    free(xb);
    free(yb);
    free(tb);
    cg_dataset_free(&test);
    return rc;
}

/* ---- predict ---- */
/* y [n][k] as CSV, one row per sample, values that read back as the same float32 */
static int write_csv_rows(const char *path, const float *y, size_t n, size_t k, cg_err *err)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return cg_fail(err, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < k; j++)
            fprintf(f, "%.9g%c", (double)y[i * k + j], j + 1 < k ? ',' : '\n');
    if (fclose(f) != 0) {
        free(text);
        return cg_fail(err, "%s: out of memory", path);
    }
    return write_text(path, text, len, err);
}

/* each row of y [n][k] becomes softmax(row), as torch.softmax(dim=1) */
static void softmax_rows(float *y, size_t n, size_t k)
{
    for (size_t i = 0; i < n; i++) {
        float *z = y + i * k, m = z[0];
        for (size_t j = 1; j < k; j++)
            m = z[j] > m ? z[j] : m;
        double sum = 0;
        for (size_t j = 0; j < k; j++)
            sum += (double)(z[j] = expf(z[j] - m));
        for (size_t j = 0; j < k; j++)
            z[j] = (float)((double)z[j] / sum);
    }
}

static int cmd_predict(const cg_net *net, const opts *o)
{
    const int csv_out = ends_with(o->out, ".csv") || ends_with(o->out, ".CSV");
    if (!csv_out && !ends_with(o->out, ".npy"))
        return usage_error(net, "predict: --out %s: the file type comes from the extension, "
                                ".npy or .csv%s", o->out, "");
    if (o->softmax && net->loss != CG_LOSS_SOFTMAX_CE)
        return usage_error(net, "predict: --softmax: network '%s' has an mse loss, its outputs "
                                "are not class scores%s", net->name, "");
    cg_err err;
    cg_array x;
    if (load_input(net, o->input, 0, 0, &x, &err) != 0)
        return fail(net, &err);
    size_t n = (size_t)x.shape[0];
    state s;
    state_alloc(net, &s);
    cg_array y;
    int64_t shape[2] = {(int64_t)n, (int64_t)net->out_size};
    float *mean = NULL, *std = NULL;
    int rc = 1;
    if (cg_array_alloc(&y, CG_F4, 2, shape, &err) != 0) {
        fail(net, &err);
        goto out_noy;
    }
    if (load_weights(net, o->weights, &s, &err) != 0 || load_norm(net, o, &mean, &std, &err) != 0) {
        fail(net, &err);
        goto out;
    }
    if (mean)
        cg_norm_apply(net, x.data, n, mean, std);
    for (size_t start = 0; start < n; start += (size_t)net->batch) {
        int m = (int)(n - start < (size_t)net->batch ? n - start : (size_t)net->batch);
        net->forward(s.params, s.buffers, (const float *)x.data + start * net->in_size, s.ws, m, 0);
        memcpy((float *)y.data + start * net->out_size, s.ws + net->out_offset,
               (size_t)m * net->out_size * sizeof(float));
    }
    if (o->softmax)
        softmax_rows(y.data, n, net->out_size);
    if ((csv_out ? write_csv_rows(o->out, y.data, n, net->out_size, &err)
                 : cg_npy_write(o->out, &y, &err)) != 0)
        fail(net, &err);
    else
        rc = 0;
out:
    free(mean);
    free(std);
    cg_array_free(&y);
out_noy:
    state_free(&s);
    cg_array_free(&x);
    return rc;
}

static const command commands[] = {
    {"train",
     "data data-x data-y test test-x test-y epochs batch lr momentum weight-decay mode order "
     "schedule step-size gamma patience monitor eval-every val val-frac seed normalize no-normalize "
     "checkpoint-every resume out weights max-steps plain quiet no-plot",
     "", cmd_train},
    {"eval", "weights data data-x data-y norm confusion confusion-csv", "weights", cmd_eval},
    {"predict", "weights input out norm softmax", "weights input out", cmd_predict},
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
        /* before the first OpenMP region: the worker threads inherit the mode */
        cg_flush_subnormals(!o.ieee_subnormals);
        rc = commands[c].run(net, &o);
        if (fflush(stdout) != 0 && rc == 0) {
            fprintf(stderr, "%s: error writing to standard output: %s\n", net->name, strerror(errno));
            rc = 1;
        }
        return rc;
    }
    return usage_error(net, "unknown command '%s'%s", sub, "");
}
