/* cnngen runtime: the trainer's command line (check / train / eval / predict / --help). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
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
    int eval_mode;             /* check: an inference-mode forward (output and loss only) */
    int confusion;             /* eval: per-class accuracy and the confusion matrix */
    const char *confusion_csv; /* eval: the matrix as CSV (implies confusion) */
    int ieee_subnormals;       /* keep IEEE subnormals instead of FTZ|DAZ (cg_flush_subnormals) */
} opts;

/* the commands, as bits of an option's `cmds` */
enum { C_TRAIN = 1, C_EVAL = 2, C_PREDICT = 4, C_CHECK = 8, C_ALL = 15 };

typedef struct command {
    const char *name;
    unsigned bit;
    int all_options;     /* --help: 1 lists its options after the name, 0 says [options] */
    const char *summary; /* what it does, for --help */
    int (*run)(const cg_net *net, const opts *o);
} command;

static int cmd_train(const cg_net *net, const opts *o);
static int cmd_eval(const cg_net *net, const opts *o);
static int cmd_predict(const cg_net *net, const opts *o);
static int cmd_check(const cg_net *net, const opts *o);

static const command commands[] = {
    {"train", C_TRAIN, 0,
     "train; writes OUT/{final,best,last}.npz, log.csv, curve.png", cmd_train},
    {"eval", C_EVAL, 1,
     "inference-mode loss and accuracy on the test set of PATH (default dataset\n"
     "      when omitted), or on the file / pair given; --confusion adds the per-class\n"
     "      accuracy and the confusion matrix, --confusion-csv also writes it as CSV",
     cmd_eval},
    {"predict", C_PREDICT, 1,
     "inference-mode outputs [N, out] for X [N, input]; X is .npy or IDX (float32,\n"
     "      or uint8 scaled) or .csv (features, or the training layout: label first);\n"
     "      OUT is .npy or .csv (one row a sample), by extension; --softmax: class\n"
     "      probabilities instead of the raw outputs (logits)",
     cmd_predict},
    {"check", C_CHECK, 1,
     "one training-mode forward/backward; OUT (.npz) holds output, loss, grad.input\n"
     "      and grad.<param> for every parameter (dropout's mask from seed 1);\n"
     "      --eval: one inference-mode forward, output and loss; a team's trainer\n"
     "      (cnngen --team) runs its team's code when INPUT has a sample a replica",
     cmd_check},
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

/* What an option's value is. FLAG takes no value and stores `set` into an int; INT, LONG
 * (long long) and FLOAT are range-checked numbers; ENUM stores the index of one of `names`
 * into an int; PATH stores the argument itself (a const char *). */
enum opt_kind { OPT_FLAG, OPT_INT, OPT_LONG, OPT_FLOAT, OPT_ENUM, OPT_PATH };

static const char *const mode_names[] = {"minibatch", "sgd", "full", NULL};
static const char *const order_names[] = {"shuffle", "random", NULL};
static const char *const sched_names[] = {"constant", "step", "cosine", NULL};
static const char *const monitor_names[] = {"loss", "error", NULL};
static const char *const optimizer_names[] = {"sgd", "adam", "adamw", NULL};

typedef struct option {
    const char *name;      /* without the leading "--" */
    unsigned cmds;         /* commands accepting it (C_* bits) */
    unsigned required;     /* commands requiring it */
    enum opt_kind kind;
    size_t field;          /* offsetof(opts, ...) of what it sets */
    const char *arg;       /* the value's placeholder in --help */
    const char *help;
    long long lo, hi;      /* INT, LONG: the accepted range, both ends included */
    double flo, fhi;       /* FLOAT: finite, and lo < v or lo <= v (lo_open), same for hi */
    unsigned char lo_open, hi_open;
    const char *const *names; /* ENUM: NULL-terminated */
    int set;               /* FLAG: the value stored */
    int show_default;      /* --help shows the value the field starts with (the spec's) */
    void (*then)(opts *o); /* after the option was stored */
} option;

static void saw_batch(opts *o) { o->has_batch = 1; }
static void saw_val(opts *o) { o->t.h.val_frac = 0; } /* --val overrides --val-frac before it */

#define OPT(name_, cmds_, required_, kind_, field_, arg_, help_) \
    .name = (name_), .cmds = (cmds_), .required = (required_), .kind = (kind_), \
    .field = offsetof(opts, field_), .arg = (arg_), .help = (help_)
#define INT(lo_, hi_) .lo = (lo_), .hi = (hi_)
#define FLOAT(lo_, lo_open_, hi_, hi_open_) \
    .flo = (lo_), .lo_open = (lo_open_), .fhi = (hi_), .hi_open = (hi_open_)
#define OPEN 1
#define CLOSED 0
enum { BIG = 1 << 30 };

/* Every option of every command, in --help's order; parse_opts and usage both walk it.
 * A new option is one row here (and its field in opts): say which commands take it, its
 * kind and range, and where it goes. */
static const option options[] = {
    /* data */
    {OPT("data", C_TRAIN | C_EVAL, 0, OPT_PATH, t.data, "PATH",
     "directory ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]\n"
     "or train.npz/test.npz with x, y), a .npz (x, y) or a .csv (label\n"
     "first, then the features; the formats: docs/data.md)\n"
     "[" CG_DEFAULT_DATA_DIR " for 1x28x28]")},
    {OPT("data-x", C_TRAIN | C_EVAL, 0, OPT_PATH, t.data_x, "X",
     "inputs instead of --data, .npy or IDX (gz or plain)")},
    {OPT("data-y", C_TRAIN | C_EVAL, 0, OPT_PATH, t.data_y, "Y", "labels or targets for --data-x")},
    {OPT("test", C_TRAIN, 0, OPT_PATH, t.test, "PATH", "test set (default: the --data directory's)")},
    {OPT("test-x", C_TRAIN, 0, OPT_PATH, t.test_x, "X", "test inputs (with --test-y)")},
    {OPT("test-y", C_TRAIN, 0, OPT_PATH, t.test_y, "Y", "test labels or targets")},
    {OPT("val", C_TRAIN, 0, OPT_INT, t.h.val, "N",
     "samples held out from the end of the training data for\n"
     "validation (default: 5000 if >= 10000 samples, else 10%)"), INT(0, BIG), .show_default = 1,
     .then = saw_val},
    {OPT("val-frac", C_TRAIN, 0, OPT_FLOAT, t.h.val_frac, "F",
     "the fraction held out instead"), FLOAT(0, OPEN, 1, OPEN), .show_default = 1},
    {OPT("normalize", C_TRAIN, 0, OPT_FLAG, t.h.normalize, NULL,
     "per-channel standardization with training statistics,\nsaved as OUT/normalize.npz"),
     .set = 1, .show_default = 1},
    {OPT("no-normalize", C_TRAIN, 0, OPT_FLAG, t.h.normalize, NULL, "raw inputs"), .set = 0,
     .show_default = 1},
    {OPT("crop", C_TRAIN, 0, OPT_INT, t.h.aug_crop, "P",
     "augment training batches: zero-pad by P on each side and\n"
     "crop back at a random offset ([C, H, W] inputs; 0: off)"), INT(0, 4096), .show_default = 1},
    {OPT("flip", C_TRAIN, 0, OPT_FLAG, t.h.aug_flip, NULL,
     "augment training batches: horizontal flip, probability 1/2"), .set = 1, .show_default = 1},
    {OPT("no-flip", C_TRAIN, 0, OPT_FLAG, t.h.aug_flip, NULL, "no flip"), .set = 0,
     .show_default = 1},
    /* optimizer */
    {OPT("optimizer", C_TRAIN, 0, OPT_ENUM, t.h.optimizer, NULL,
     "torch.optim.SGD, Adam (L2 weight decay in the gradient) or\n"
     "AdamW (decoupled weight decay)"), .names = optimizer_names, .show_default = 1},
    {OPT("mode", C_TRAIN, 0, OPT_ENUM, t.h.mode, NULL,
     "a batch a step, one sample a step, or the whole training set\na step (accumulated over chunks of the compiled batch)"), .names = mode_names,
     .show_default = 1},
    {OPT("batch", C_TRAIN, 0, OPT_INT, t.h.batch, "B", "samples a step (at most the compiled batch)"),
     INT(1, BIG), .show_default = 1, .then = saw_batch},
    {OPT("order", C_TRAIN, 0, OPT_ENUM, t.h.order, NULL,
     "a permutation an epoch, or independent draws"), .names = order_names, .show_default = 1},
    {OPT("epochs", C_TRAIN, 0, OPT_INT, t.h.epochs, "E", "passes over the training data"),
     INT(0, 1000000), .show_default = 1},
    {OPT("lr", C_TRAIN, 0, OPT_FLOAT, t.h.lr, "LR", "learning rate"), FLOAT(0, OPEN, INFINITY, OPEN),
     .show_default = 1},
    {OPT("momentum", C_TRAIN, 0, OPT_FLOAT, t.h.momentum, "M", "SGD momentum"),
     FLOAT(0, CLOSED, 1, OPEN), .show_default = 1},
    {OPT("beta1", C_TRAIN, 0, OPT_FLOAT, t.h.beta1, "B1", "Adam's first-moment decay"),
     FLOAT(0, CLOSED, 1, OPEN), .show_default = 1},
    {OPT("beta2", C_TRAIN, 0, OPT_FLOAT, t.h.beta2, "B2", "Adam's second-moment decay"),
     FLOAT(0, CLOSED, 1, OPEN), .show_default = 1},
    {OPT("eps", C_TRAIN, 0, OPT_FLOAT, t.h.eps, "EPS", "Adam's denominator term"),
     FLOAT(0, CLOSED, INFINITY, OPEN), .show_default = 1},
    {OPT("weight-decay", C_TRAIN, 0, OPT_FLOAT, t.h.weight_decay, "WD", "L2 penalty"),
     FLOAT(0, CLOSED, INFINITY, OPEN), .show_default = 1},
    {OPT("schedule", C_TRAIN, 0, OPT_ENUM, t.h.schedule, NULL, "how the learning rate changes over the epochs"),
     .names = sched_names, .show_default = 1},
    {OPT("warmup", C_TRAIN, 0, OPT_INT, t.h.warmup, "K",
     "epochs of linear warmup before the schedule: lr*(e+1)/(K+1)\n"
     "in epoch e < K, then the schedule over the other epochs"), INT(0, 1000000),
     .show_default = 1},
    {OPT("step-size", C_TRAIN, 0, OPT_INT, t.h.step_size, "S", "epochs between lr *= gamma (step)"),
     INT(1, 1000000), .show_default = 1},
    {OPT("gamma", C_TRAIN, 0, OPT_FLOAT, t.h.gamma, "G", "lr factor of the step schedule"),
     FLOAT(0, OPEN, 1, CLOSED), .show_default = 1},
    /* early stopping */
    {OPT("patience", C_TRAIN, 0, OPT_INT, t.h.patience, "P",
     "evaluations without improvement before stopping (0: never)"), INT(0, BIG),
     .show_default = 1},
    {OPT("monitor", C_TRAIN, 0, OPT_ENUM, t.h.monitor, NULL,
     "validation loss or 0-1 error to minimize"), .names = monitor_names, .show_default = 1},
    {OPT("eval-every", C_TRAIN, 0, OPT_INT, t.h.eval_every, "K",
     "steps between evaluations (0: once an epoch)"), INT(0, BIG), .show_default = 1},
    /* run */
    {OPT("seed", C_TRAIN, 0, OPT_INT, t.h.seed, "S", "initial weights and sample order"),
     INT(0, 2147483647LL), .show_default = 1},
    {OPT("checkpoint-every", C_TRAIN, 0, OPT_INT, t.h.checkpoint_every, "N",
     "steps between checkpoints, OUT/checkpoint.npz (0: off)"), INT(0, BIG), .show_default = 1},
    {OPT("resume", C_TRAIN, 0, OPT_FLAG, t.resume, NULL,
     "continue from OUT/checkpoint.npz; --epochs, --lr, --momentum,\n"
     "--weight-decay, --beta1, --beta2, --eps, --schedule, --warmup,\n"
     "--step-size, --gamma, --patience, --eval-every, --crop and\n"
     "--flip may change, the other settings and the data not"), .set = 1},
    {OPT("max-steps", C_TRAIN, 0, OPT_LONG, t.max_steps, "N",
     "stop as if killed after N steps (to test --resume)"), INT(1, 2147483647LL)},
    {OPT("threads", C_TRAIN, 0, OPT_INT, t.threads, "T",
     "threads of the generated code's loops, fixed; 0: OpenMP's\n"
     "default (OMP_NUM_THREADS), or 1 whenever one thread ran\nthe last steps faster (timed every 10 s)"),
     INT(0, 1024), .show_default = 1},
    {OPT("plain", C_TRAIN, 0, OPT_FLAG, t.progress, NULL, "no \\r progress line"), .set = 0},
    {OPT("quiet", C_TRAIN, 0, OPT_FLAG, t.quiet, NULL, "print nothing but errors"), .set = 1},
    {OPT("no-plot", C_TRAIN, 0, OPT_FLAG, t.plot, NULL, "no curve.png"), .set = 0},
    /* the files of eval, predict and check (weights and out also train's) */
    {OPT("weights", C_ALL, C_EVAL | C_PREDICT | C_CHECK, OPT_PATH, weights, "W.npz",
     "the weights; train: start from them instead of the\nseeded initialization")},
    {OPT("input", C_PREDICT | C_CHECK, C_PREDICT | C_CHECK, OPT_PATH, input, "X", "inputs")},
    {OPT("target", C_CHECK, C_CHECK, OPT_PATH, target, "T.npy", "labels or targets")},
    {OPT("out", C_TRAIN | C_PREDICT | C_CHECK, C_PREDICT | C_CHECK, OPT_PATH, out, "OUT",
     "train: output directory [.]; predict: Y.npy or Y.csv;\ncheck: R.npz")},
    {OPT("norm", C_EVAL | C_PREDICT, 0, OPT_PATH, norm, "F|none",
     "normalization file (default: normalize.npz next to the\nweights, if any; none: off)")},
    {OPT("eval", C_CHECK, 0, OPT_FLAG, eval_mode, NULL,
     "inference mode: batch norm's running statistics, no\ndropout; OUT holds output and loss only"), .set = 1},
    {OPT("softmax", C_PREDICT, 0, OPT_FLAG, softmax, NULL,
     "class probabilities instead of the raw outputs"), .set = 1},
    {OPT("confusion", C_EVAL, 0, OPT_FLAG, confusion, NULL,
     "per-class accuracy and the confusion matrix"), .set = 1},
    {OPT("confusion-csv", C_EVAL, 0, OPT_PATH, confusion_csv, "FILE.csv",
     "the confusion matrix as CSV (implies --confusion)")},
    /* switches of the whole process (floating-point environment, threads, ...): a FLAG or
     * ENUM row accepted by C_ALL, its field in opts, applied in cg_main */
    {OPT("ieee-subnormals", C_ALL, 0, OPT_FLAG, ieee_subnormals, NULL,
     "keep IEEE subnormal floats (below 1.2e-38); by default they\n"
     "are flushed to zero (x86 MXCSR FTZ|DAZ), which makes no\n"
     "difference to the results beyond that range and avoids the\n"
     "CPU's slow path"), .set = 1},
};
enum { N_OPTIONS = sizeof options / sizeof options[0] };
#undef OPT
#undef INT
#undef FLOAT
#undef OPEN
#undef CLOSED

static void *field_of(opts *o, const option *op) { return (char *)o + op->field; }
static const void *cfield_of(const opts *o, const option *op)
{
    return (const char *)o + op->field;
}

static void shape_text(const cg_net *net, char *buf, size_t cap)
{
    size_t n = 0;
    for (int d = 0; d < net->in_ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%d", d ? "x" : "", net->in_shape[d]);
}

/* "a|b|c" */
static void enum_text(const char *const *names, char *buf, size_t cap, const char *sep)
{
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; names[i] && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? sep : "", names[i]);
}

/* what a value must be, for error messages and --help: "an integer in [0, 100]",
 * "a number in [0, 1)", "a number > 0", "loss or error" */
static void range_text(const option *op, char *buf, size_t cap)
{
    switch (op->kind) {
    case OPT_INT:
    case OPT_LONG:
        snprintf(buf, cap, "an integer in [%lld, %lld]", op->lo, op->hi);
        break;
    case OPT_FLOAT:
        if (isinf(op->fhi))
            snprintf(buf, cap, "a finite number %s %g", op->lo_open ? ">" : ">=", op->flo);
        else
            snprintf(buf, cap, "a number in %c%g, %g%c", op->lo_open ? '(' : '[', op->flo,
                     op->fhi, op->hi_open ? ')' : ']');
        break;
    case OPT_ENUM: {
        size_t n = 0;
        for (int i = 0; op->names[i] && n < cap; i++)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", !i ? "" : op->names[i + 1] ? ", " : " or ",
                                  op->names[i]);
        break;
    }
    default:
        snprintf(buf, cap, "a value");
    }
}

/* the field's value as --help shows it; "" when it is outside the option's range (an
 * automatic default such as --val's -1) */
static void value_text(const option *op, const opts *o, char *buf, size_t cap)
{
    const void *p = cfield_of(o, op);
    buf[0] = 0;
    switch (op->kind) {
    case OPT_FLAG:
        if (*(const int *)p == op->set)
            snprintf(buf, cap, "default");
        break;
    case OPT_INT: {
        int v = *(const int *)p;
        if (v >= op->lo && v <= op->hi)
            snprintf(buf, cap, "%d", v);
        break;
    }
    case OPT_LONG: {
        long long v = *(const long long *)p;
        if (v >= op->lo && v <= op->hi)
            snprintf(buf, cap, "%lld", v);
        break;
    }
    case OPT_FLOAT: {
        float v = *(const float *)p;
        if ((op->lo_open ? v > op->flo : v >= op->flo) && (op->hi_open ? v < op->fhi : v <= op->fhi))
            snprintf(buf, cap, "%g", (double)v);
        break;
    }
    case OPT_ENUM: {
        int v = *(const int *)p, k = 0;
        while (op->names[k])
            k++;
        if (v >= 0 && v < k)
            snprintf(buf, cap, "%s", op->names[v]);
        break;
    }
    case OPT_PATH:
        break;
    }
}

/* help text continued on further lines, indented to column `col` */
static void print_wrapped(FILE *f, const char *text, int col)
{
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, "\n");
        fprintf(f, "%.*s", (int)n, p);
        p += n;
        if (*p == '\n') {
            p++;
            fprintf(f, "\n%*s", col, "");
        }
    }
}

/* the value's placeholder: "PATH", "loss|error", "" for a flag */
static void arg_text(const option *op, char *buf, size_t cap)
{
    if (op->kind == OPT_ENUM)
        enum_text(op->names, buf, cap, "|");
    else
        snprintf(buf, cap, "%s", op->arg ? op->arg : "");
}

/* "  NAME cmd --required X [--optional Y] ...", wrapped, then what it does */
static void print_synopsis(FILE *f, const cg_net *net, const command *cmd)
{
    int col = fprintf(f, "  %s %s", net->name, cmd->name);
    if (!cmd->all_options)
        col += fprintf(f, " [options]");
    for (int pass = 0; pass < 2 && cmd->all_options; pass++) /* the required ones first */
        for (int i = 0; i < N_OPTIONS; i++) {
            const option *op = &options[i];
            int req = (op->required & cmd->bit) != 0;
            if (!(op->cmds & cmd->bit) || req != !pass)
                continue;
            char arg[96], item[160];
            arg_text(op, arg, sizeof arg);
            int n = snprintf(item, sizeof item, "%s--%s%s%s%s", req ? "" : "[", op->name,
                             arg[0] ? " " : "", arg, req ? "" : "]");
            if (col + 1 + n > 90)
                col = fprintf(f, "\n         ") - 1;
            col += fprintf(f, " %s", item);
        }
    fprintf(f, "\n      %s\n", cmd->summary);
}

static void usage(const cg_net *net, FILE *f)
{
    char shape[64] = "";
    shape_text(net, shape, sizeof shape);
    opts d; /* the defaults, as parse_opts starts */
    memset(&d, 0, sizeof d);
    cg_train_opts_init(&d.t, net);
    fprintf(f,
            "%s: cnngen-generated trainer (input %s, output %zu, %zu parameters, %s loss, "
            "max batch %d)\nusage:\n",
            net->name, shape, net->out_size, cg_param_count(net),
            net->loss == CG_LOSS_SOFTMAX_CE ? "softmax cross-entropy" : "mse", cg_net_step_batch(net));
    for (int c = 0; c < N_COMMANDS; c++)
        print_synopsis(f, net, &commands[c]);
    fprintf(f, "  %s --help\n", net->name);
    fprintf(f, "options (the commands taking each; defaults from the spec's train: section in "
               "brackets):\n");
    enum { COL = 28 };
    for (int i = 0; i < N_OPTIONS; i++) {
        const option *op = &options[i];
        char arg[96], val[64], range[96], cmds[64];
        arg_text(op, arg, sizeof arg);
        char head[160];
        int hl = snprintf(head, sizeof head, "  --%s%s%s", op->name, arg[0] ? " " : "", arg);
        fprintf(f, "%s", head);
        if (hl >= COL - 1)
            fprintf(f, "\n%*s", COL, "");
        else
            fprintf(f, "%*s", COL - hl, "");
        print_wrapped(f, op->help, COL);
        if (op->kind == OPT_FLOAT) {
            range_text(op, range, sizeof range);
            fprintf(f, ", %s", range);
        }
        if (op->show_default) {
            value_text(op, &d, val, sizeof val);
            if (val[0])
                fprintf(f, " [%s]", val);
        }
        if (op->cmds == C_ALL) {
            fprintf(f, " (every command)");
        } else if (op->cmds != C_TRAIN) {
            size_t n = 0;
            cmds[0] = 0;
            for (int c = 0; c < N_COMMANDS; c++)
                if (op->cmds & commands[c].bit)
                    n += (size_t)snprintf(cmds + n, sizeof cmds - n, "%s%s", n ? ", " : "",
                                          commands[c].name);
            fprintf(f, " (%s)", cmds);
        }
        fprintf(f, "\n");
    }
    fprintf(f, "Options without a command list are train's. eval/predict use OUT/normalize.npz "
               "next to the\nweights when it exists (--norm none: off). Options also accept "
               "--name=value.\nExit status: 0 ok, 1 error, 2 usage.\n");
}

static int usage_error(const cg_net *net, const char *fmt, ...) CG_PRINTF(2, 3);
static int usage_error(const cg_net *net, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", net->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(run '%s --help' for usage)\n", net->name);
    return EXIT_USAGE;
}

static const option *find_option(const char *name, size_t len)
{
    for (int i = 0; i < N_OPTIONS; i++)
        if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

/* Stores val (the text after the option) into o as op says; 0, or EXIT_USAGE after the
 * message */
static int set_option(const cg_net *net, const option *op, const char *val, opts *o)
{
    void *p = field_of(o, op);
    char *end;
    char range[128];
    errno = 0;
    switch (op->kind) {
    case OPT_FLAG:
        *(int *)p = op->set;
        break;
    case OPT_PATH:
        *(const char **)p = val;
        break;
    case OPT_INT:
    case OPT_LONG: {
        long long v = strtoll(val, &end, 10);
        if (errno || end == val || *end || v < op->lo || v > op->hi) {
            range_text(op, range, sizeof range);
            return usage_error(net, "--%s: '%s' is not %s", op->name, val, range);
        }
        if (op->kind == OPT_INT)
            *(int *)p = (int)v;
        else
            *(long long *)p = v;
        break;
    }
    case OPT_FLOAT: {
        double v = strtod(val, &end);
        /* the range holds for the value as stored, a float (1e39 -> inf, 1e-46 -> 0,
         * 0.99999999999 -> 1): the same rule as the spec's numbers */
        double f = (float)v;
        if (errno || end == val || *end || !isfinite(v) || !isfinite(f) ||
            (op->lo_open ? v <= op->flo || f <= op->flo : v < op->flo || f < op->flo) ||
            (op->hi_open ? v >= op->fhi || f >= op->fhi : v > op->fhi || f > op->fhi)) {
            range_text(op, range, sizeof range);
            return usage_error(net, "--%s: '%s' is not %s", op->name, val, range);
        }
        *(float *)p = (float)v;
        break;
    }
    case OPT_ENUM: {
        int k = 0;
        while (op->names[k] && strcmp(op->names[k], val) != 0)
            k++;
        if (!op->names[k]) {
            range_text(op, range, sizeof range);
            return usage_error(net, "--%s: unknown value '%s' (%s)", op->name, val, range);
        }
        *(int *)p = k;
        break;
    }
    }
    if (op->then)
        op->then(o);
    return 0;
}

static int parse_opts(const cg_net *net, const command *cmd, int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    cg_train_opts_init(&o->t, net);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return usage_error(net, "%s: unexpected argument '%s'", cmd->name, a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        char nm[64];
        snprintf(nm, sizeof nm, "%.*s", (int)(nl < 60 ? nl : 60), name);
        const option *op = find_option(name, nl);
        if (!op || !(op->cmds & cmd->bit))
            return usage_error(net, "%s: unknown option '--%s'", cmd->name, nm);
        const char *val = eq ? eq + 1 : NULL;
        if (op->kind == OPT_FLAG) {
            if (eq)
                return usage_error(net, "%s: option '--%s' takes no value", cmd->name, nm);
        } else if (!val) {
            if (i + 1 >= argc)
                return usage_error(net, "%s: option '--%s' needs a value", cmd->name, nm);
            val = argv[++i];
        }
        int rc = set_option(net, op, val, o);
        if (rc != 0)
            return rc;
    }
    for (int i = 0; i < N_OPTIONS; i++) {
        const option *op = &options[i];
        if ((op->required & cmd->bit) && !*(const char *const *)cfield_of(o, op))
            return usage_error(net, "%s: missing required option '--%s'", cmd->name, op->name);
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
    if (load_input(net, o->input, 1, cg_net_step_batch(net), &x, &err) != 0)
        return fail(net, &err);
    int n = (int)x.shape[0];
    if (load_target(net, o->target, n, &t, &err) != 0) {
        cg_array_free(&x);
        return fail(net, &err);
    }
    state s;
    state_alloc(net, &s);
    float *dx = cg_xcalloc((size_t)n * net->in_size, sizeof(float), "input gradient");
    /* a team's trainer checks the code it trains with: the team's, when every replica has
     * a sample (cg_net_team_check); else (and without a team) the plain entry points */
    const int team = net->team > 1 && n >= net->team;
    float *y = team ? cg_xcalloc((size_t)n * net->out_size, sizeof(float), "outputs") : s.ws + net->out_offset;
    int rc = 1;
    float loss;
    if (load_weights(net, o->weights, &s, &err) != 0) {
        fail(net, &err);
        goto out;
    }
    if (team) {
        cg_net_team tm;
        const char *why = cg_net_team_init(&tm, net);
        if (why) {
            fprintf(stderr, "%s: check: %s\n", net->name, why);
            goto out;
        }
        double sum;
        int bad = cg_net_team_check(&tm, s.params, s.grads, s.buffers, x.data, t.data, n, o->eval_mode ? 0 : 1,
                                    y, o->eval_mode ? NULL : dx, &sum);
        cg_net_team_free(&tm);
        if (bad) {
            fprintf(stderr, "%s: check: the team of %d could not have its threads (OMP_NUM_THREADS is below "
                            "it, or the trainer was built without -fopenmp)\n", net->name, net->team);
            goto out;
        }
        loss = (float)(sum / n);
    } else {
        net->forward(s.params, s.buffers, x.data, s.ws, n, o->eval_mode ? 0 : 1);
        loss = cg_net_loss(net, s.ws + net->out_offset, t.data, s.ws + net->dout_offset, n);
        /* what the backward reads must not be in the temporary region: NaN there would
         * reach the gradients the check compares */
        for (size_t i = 0; i < net->temp_size; i++) s.ws[net->temp_offset + i] = NAN;
        if (!o->eval_mode)
            net->backward(s.params, s.grads, x.data, dx, s.ws, n);
    }

    int np = 0;
    for (int i = 0; i < net->n_tensors; i++)
        np += net->tensors[i].kind == CG_PARAM;
    int m = o->eval_mode ? 2 : 3 + np;
    const char **keys = cg_xcalloc((size_t)m, sizeof *keys, "keys");
    char **names = cg_xcalloc((size_t)m, sizeof *names, "keys");
    cg_array *arr = cg_xcalloc((size_t)m, sizeof *arr, "arrays");
    keys[0] = "output";
    arr[0] = (cg_array){.dtype = CG_F4, .ndim = 2, .shape = {n, (int64_t)net->out_size},
                        .count = (size_t)n * net->out_size, .data = y};
    keys[1] = "loss";
    arr[1] = (cg_array){.dtype = CG_F4, .ndim = 0, .count = 1, .data = &loss};
    if (!o->eval_mode) {
        keys[2] = "grad.input";
        arr[2] = x;
        arr[2].dtype = CG_F4;
        arr[2].data = dx;
    }
    int k = 3;
    for (int i = 0; i < net->n_tensors && !o->eval_mode; i++) {
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
    if (team)
        free(y);
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
    if (t.h.mode != CG_MODE_SGD && t.h.batch > cg_net_step_batch(net)) {
        if (o->has_batch) {
            char b1[32];
            snprintf(b1, sizeof b1, "%d", cg_net_step_batch(net));
            return usage_error(net, "--batch must be at most %s (the batch '%s' was compiled for)",
                               b1, net->name);
        }
        t.h.batch = cg_net_step_batch(net);
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
        rc = cg_xy_load_expect(o->t.data_x, o->t.data_y, net->in_size, &test, &err);
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
        if (test.n && !isfinite(tl))
            printf("  test_loss %g", tl); /* never hidden: a NaN loss is the news */
        else
            print_metric("test_loss", tl);
        print_metric("test_acc", ta);
        printf("\n");
        rc = 0;
        if (test.n && !isfinite(tl)) {
            cg_fail(&err, "the test loss is %g: the inputs (%s) hold NaN or Inf (the weights were checked)", tl,
                    o->t.data_x ? o->t.data_x : o->t.data ? o->t.data : "the default dataset");
            rc = fail(net, &err);
        }
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
    for (int c = 0; c < N_COMMANDS; c++) {
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
