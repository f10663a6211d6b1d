/* cnngen runtime: the training loop.
 *
 * Determinism: every random choice of training (the per-epoch permutation, the draws of
 * --order random) comes from one xoshiro256** stream seeded with the seed; the initial
 * weights come from cg_init_params with the same seed. A checkpoint holds everything the
 * next step depends on (weights, buffers, momentum, RNG state, permutation, position, loss
 * accumulators, best-so-far state, log length), so a resumed run continues bit for bit.
 *
 * Memory: everything is allocated before the first step; a step does no malloc and no
 * file I/O (evaluations, log rows, best.npz and checkpoints happen between steps). */
#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "augment.h"
#include "comm.h"
#include "npy.h"
#include "sgd.h"
#include "weights.h"
#include "diverge.h"
#include "threads.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cg_train_opts_init(cg_train_opts *o, const cg_net *net)
{
    memset(o, 0, sizeof *o);
    o->h = net->train;
    if (o->h.epochs <= 0) { /* a hand-written net without a train section: compiler defaults */
        cg_train_defaults d = {.batch = cg_net_step_batch(net), .epochs = 10, .lr = 0.01f, .momentum = 0.0f,
                               .mode = CG_MODE_MINIBATCH, .order = CG_ORDER_SHUFFLE,
                               .schedule = CG_SCHED_CONSTANT, .step_size = 10, .gamma = 0.1f,
                               .patience = 5, .eval_every = 0, .val = -1,
                               .optimizer = CG_OPT_SGD, .beta1 = 0.9f, .beta2 = 0.999f,
                               .eps = 1e-8f};
        o->h = d;
    }
    if (o->h.batch <= 0 || o->h.batch > cg_net_step_batch(net))
        o->h.batch = cg_net_step_batch(net);
    o->progress = -1;
    o->plot = 1;
}

int cg_min_train_batch(const cg_net *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        const cg_layer *l = &net->layers[i];
        if (strcmp(l->kind, "batchnorm") != 0)
            continue;
        size_t per = l->ndim_in <= 1 ? 1 : l->in_size / (size_t)l->in_shape[0];
        if (per <= 1)
            return 2;
    }
    return 1;
}

void cg_evaluate(const cg_net *net, const float *params, float *buffers, float *ws,
                 const cg_dataset *ds, float *xb, int64_t *yb, float *tb, double *loss,
                 double *acc)
{
    cg_evaluate_confusion(net, params, buffers, ws, ds, xb, yb, tb, loss, acc, NULL);
}

void cg_evaluate_confusion(const cg_net *net, const float *params, float *buffers, float *ws,
                           const cg_dataset *ds, float *xb, int64_t *yb, float *tb,
                           double *loss, double *acc, size_t *confusion)
{
    double total = 0.0;
    size_t correct = 0;
    for (size_t start = 0; start < ds->n; start += (size_t)net->batch) {
        int n = (int)(ds->n - start < (size_t)net->batch ? ds->n - start : (size_t)net->batch);
        cg_dataset_gather(ds, NULL, start, n, xb, yb, tb, net->out_size);
        net->forward(params, buffers, xb, ws, n, 0);
        const float *out = ws + net->out_offset;
        const void *target = net->loss == CG_LOSS_SOFTMAX_CE ? (const void *)yb : tb;
        total += (double)cg_net_loss(net, out, target, NULL, n) * n;
        if (ds->labels)
            for (int i = 0; i < n; i++) {
                const float *z = out + (size_t)i * net->out_size;
                size_t best = 0;
                for (size_t j = 1; j < net->out_size; j++)
                    if (z[j] > z[best])
                        best = j;
                correct += (int64_t)best == yb[i];
                if (confusion)
                    confusion[(size_t)yb[i] * net->out_size + best]++;
            }
    }
    *loss = ds->n ? total / (double)ds->n : NAN;
    *acc = ds->n && ds->labels ? (double)correct / (double)ds->n : NAN;
}

/* ---- the run's state ---- */
enum { POS_EPOCH, POS_K, POS_GSTEP, POS_BEST_STEP, POS_BAD, POS_LOG_BYTES, POS_LAST_EVAL,
       POS_EP_N, POS_WIN_N, POS_HAS_BEST, POS_EVALS, POS_OPT_STEP, POS_COUNT };
/* POS_OPT_STEP: optimizer updates made (Adam's step count; skipped steps do not count) */
/* ACC_BEST_LOSS holds the monitored objective at the best point (loss or 0-1 error),
 * ACC_BEST_VLOSS the validation loss there (for the curve) */
enum { ACC_EP_SUM, ACC_WIN_SUM, ACC_BEST_LOSS, ACC_ELAPSED, ACC_BEST_EPOCH, ACC_BEST_ACC,
       ACC_BEST_VLOSS, ACC_COUNT };
enum { CFG_NPARAMS, CFG_NBUF, CFG_NTRAIN, CFG_NVAL, CFG_BATCH, CFG_MODE, CFG_ORDER, CFG_EPOCHS,
       CFG_LR, CFG_MOM, CFG_WD, CFG_SCHED, CFG_STEPSIZE, CFG_GAMMA, CFG_PATIENCE, CFG_EVALEVERY,
       CFG_SEED, CFG_NORM, CFG_HASH, CFG_MONITOR, CFG_DATA, CFG_OPTIMIZER, CFG_BETA1, CFG_BETA2,
       CFG_EPS, CFG_WARMUP, CFG_CROP, CFG_FLIP, CFG_COUNT };

typedef struct run {
    const cg_net *net;
    const cg_train_opts *o;
    cg_train_result *res;
    cg_train_defaults h;
    const cg_comm *comm; /* data-parallel ranks (size 1: one process); rank 0 writes files */
    /* the state a step reads and writes; checkpointed (with pos, acc and cfg) */
    float *params, *grads, *buffers, *ws, *vel, *best_p, *best_b;
    float *xb, *tb;
    float *vsq;         /* Adam's second moment [n_params] (vel holds the first); NULL for SGD */
    float *aug_scratch; /* one sample, for train.augment */
    cg_rng aug_rng;     /* this step's augmentation draws (cg_augment_seed: not checkpointed) */
    int64_t *yb;
    size_t *perm, *draw;
    cg_rng rng;
    int64_t pos[POS_COUNT];
    double acc[ACC_COUNT];
    double cfg[CFG_COUNT];
    /* the data: tr and val are views into all, test a view of test_all */
    cg_dataset tr, val, test;
    cg_dataset all, test_all;                     /* as loaded (freed at the end) */
    float *nmean, *nstd, *xcopy_all, *xcopy_test; /* --normalize: statistics, private copies */
    long long spe; /* steps an epoch */
    char resumed_changes[512]; /* the settings --resume changed, for the log line */
    int min_batch;
    int last_n, diverged; /* samples of the last forward; a non-finite loss or gradient */
    cg_net_team team;     /* net->team >= 2: the replicas (ws is replica 0's workspace) */
    cg_thr thr;           /* --threads 0: 1 or all threads, by the steps' times (threads.h) */
    /* this process's part of the run (not checkpointed): log file, progress, timing */
    FILE *logf;
    int tty, stop, have_val;
    long long total_steps, steps_here, samples_here;
    double t_start, elapsed0, t_prog;
    char outdir[4096], p_log[4352], p_best[4352], p_ckpt[4352], p_final[4352], p_last[4352],
        p_norm[4352], p_png[4352];
    int lock_fd;        /* OUT/.lock, held (flock) for the whole run; -1 before */
} run;

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; s && *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* FNV-1a over 32-bit words (a trailing partial word byte by byte) */
static uint64_t fnv1a_words(uint64_t h, const void *p, size_t bytes)
{
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 4 <= bytes; i += 4) {
        uint32_t w;
        memcpy(&w, b + i, 4);
        h = (h ^ w) * 1099511628211ull;
    }
    for (; i < bytes; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* the training and validation samples as the run sees them (after --normalize) */
static double data_hash(const run *r)
{
    uint64_t h = 1469598103934665603ull;
    const cg_dataset *parts[2] = {&r->tr, &r->val};
    for (int k = 0; k < 2; k++) {
        const cg_dataset *d = parts[k];
        if (d->x)
            h = fnv1a_words(h, d->x, d->n * d->x_size * sizeof(float));
        if (d->labels)
            h = fnv1a_words(h, d->labels, d->n * sizeof(int64_t));
        if (d->targets)
            h = fnv1a_words(h, d->targets, d->n * d->t_size * sizeof(float));
    }
    return (double)(h >> 12);
}

/* with_data: also the data's hash (a pass over the data: only when checkpoints matter) */
static void make_config(run *r, int with_data)
{
    const cg_train_defaults *h = &r->h;
    double *c = r->cfg;
    c[CFG_NPARAMS] = (double)r->net->n_params;
    c[CFG_NBUF] = (double)r->net->n_buffers;
    c[CFG_NTRAIN] = (double)r->tr.n;
    c[CFG_NVAL] = (double)r->val.n;
    c[CFG_BATCH] = h->batch;
    c[CFG_MODE] = h->mode;
    c[CFG_ORDER] = h->order;
    c[CFG_EPOCHS] = h->epochs;
    c[CFG_LR] = h->lr;
    c[CFG_MOM] = h->momentum;
    c[CFG_WD] = h->weight_decay;
    c[CFG_SCHED] = h->schedule;
    c[CFG_STEPSIZE] = h->step_size;
    c[CFG_GAMMA] = h->gamma;
    c[CFG_PATIENCE] = h->patience;
    c[CFG_EVALEVERY] = h->eval_every;
    c[CFG_SEED] = (double)(uint32_t)h->seed;
    c[CFG_NORM] = h->normalize;
    c[CFG_HASH] = (double)(fnv1a(r->net->spec_hash) >> 12);
    c[CFG_MONITOR] = h->monitor;
    c[CFG_DATA] = with_data ? data_hash(r) : 0;
    c[CFG_OPTIMIZER] = h->optimizer;
    c[CFG_BETA1] = h->optimizer == CG_OPT_SGD ? 0 : h->beta1;
    c[CFG_BETA2] = h->optimizer == CG_OPT_SGD ? 0 : h->beta2;
    c[CFG_EPS] = h->optimizer == CG_OPT_SGD ? 0 : h->eps;
    c[CFG_WARMUP] = h->warmup;
    c[CFG_CROP] = h->aug_crop;
    c[CFG_FLIP] = h->aug_flip;
}

/* What --resume may change. A resumable setting applies from the checkpoint's step on (the
 * steps before it stay the checkpoint's, bit for bit); the others would continue the run
 * as another one (other samples in each step, another network or data), so resume
 * refuses them, naming the setting and why. */
enum { CFG_RESUMABLE, CFG_OPTION, CFG_NETWORK, CFG_DATASET };
static const struct cfg_item {
    const char *name; /* the command-line option, or what the value is */
    int kind;
    const char *why;  /* CFG_OPTION: why it cannot change */
} cfg_items[CFG_COUNT] = {
    [CFG_NPARAMS] = {"parameter count", CFG_NETWORK, NULL},
    [CFG_NBUF] = {"buffer count", CFG_NETWORK, NULL},
    [CFG_HASH] = {"spec hash", CFG_NETWORK, NULL},
    [CFG_NTRAIN] = {"training samples", CFG_DATASET, NULL},
    [CFG_NVAL] = {"validation samples", CFG_DATASET, NULL},
    [CFG_DATA] = {"samples", CFG_DATASET, NULL},
    [CFG_BATCH] = {"--batch", CFG_OPTION, "it decides which samples every step takes"},
    [CFG_MODE] = {"--mode", CFG_OPTION, "it decides which samples every step takes"},
    [CFG_ORDER] = {"--order", CFG_OPTION, "it decides the order of the samples"},
    [CFG_SEED] = {"--seed", CFG_OPTION, "the initial weights and the sample order come from it"},
    [CFG_NORM] = {"--normalize", CFG_OPTION, "the inputs were standardized with it"},
    [CFG_MONITOR] = {"--monitor", CFG_OPTION, "the best point so far was chosen by it"},
    [CFG_OPTIMIZER] = {"--optimizer", CFG_OPTION, "the optimizer's state belongs to it"},
    [CFG_BETA1] = {"--beta1", CFG_RESUMABLE, NULL},
    [CFG_BETA2] = {"--beta2", CFG_RESUMABLE, NULL},
    [CFG_EPS] = {"--eps", CFG_RESUMABLE, NULL},
    [CFG_WARMUP] = {"--warmup", CFG_RESUMABLE, NULL},
    [CFG_CROP] = {"--crop", CFG_RESUMABLE, NULL},
    [CFG_FLIP] = {"--flip", CFG_RESUMABLE, NULL},
    [CFG_EPOCHS] = {"--epochs", CFG_RESUMABLE, NULL},
    [CFG_LR] = {"--lr", CFG_RESUMABLE, NULL},
    [CFG_MOM] = {"--momentum", CFG_RESUMABLE, NULL},
    [CFG_WD] = {"--weight-decay", CFG_RESUMABLE, NULL},
    [CFG_SCHED] = {"--schedule", CFG_RESUMABLE, NULL},
    [CFG_STEPSIZE] = {"--step-size", CFG_RESUMABLE, NULL},
    [CFG_GAMMA] = {"--gamma", CFG_RESUMABLE, NULL},
    [CFG_PATIENCE] = {"--patience", CFG_RESUMABLE, NULL},
    [CFG_EVALEVERY] = {"--eval-every", CFG_RESUMABLE, NULL},
};

static const char *const mode_names[] = {"minibatch", "sgd", "full"};
static const char *const order_names[] = {"shuffle", "random"};
static const char *const sched_names[] = {"constant", "step", "cosine"};
static const char *const monitor_names[] = {"loss", "error"};
static const char *const optimizer_names[] = {"sgd", "adam", "adamw"};

static const char *cfg_value(int i, double v, char *buf, size_t cap)
{
    const int k = v >= 0 && v < 4 && v == floor(v) ? (int)v : -1; /* a name's index, or -1 */
    if (i == CFG_MODE && k >= 0 && k < 3)
        return mode_names[k];
    if (i == CFG_ORDER && k >= 0 && k < 2)
        return order_names[k];
    if (i == CFG_SCHED && k >= 0 && k < 3)
        return sched_names[k];
    if (i == CFG_MONITOR && k >= 0 && k < 2)
        return monitor_names[k];
    if (i == CFG_OPTIMIZER && k >= 0 && k < 3)
        return optimizer_names[k];
    if ((i == CFG_NORM || i == CFG_FLIP) && (k == 0 || k == 1))
        return k ? "on" : "off";
    snprintf(buf, cap, "%g", v);
    return buf;
}

/* cfg: the checkpoint's settings. 0 when this run may continue it (the changes listed in
 * r->resumed_changes), else -1 and why. */
static int config_compare(run *r, const double *cfg, cg_err *err)
{
    size_t used = 0;
    r->resumed_changes[0] = 0;
    for (int i = 0; i < CFG_COUNT; i++) {
        if (cfg[i] == r->cfg[i])
            continue;
        const struct cfg_item *c = &cfg_items[i];
        char was[64], now[64];
        const char *a = cfg_value(i, cfg[i], was, sizeof was);
        const char *b = cfg_value(i, r->cfg[i], now, sizeof now);
        switch (c->kind) {
        case CFG_RESUMABLE:
            if (used < sizeof r->resumed_changes)
                used += (size_t)snprintf(r->resumed_changes + used, sizeof r->resumed_changes - used,
                                         "%s%s %s -> %s", used ? ", " : "", c->name, a, b);
            continue;
        case CFG_NETWORK:
            return cg_fail(err, "%s: written by another network (its %s differs from '%s'); "
                                "resume with the trainer that wrote it", r->p_ckpt, c->name,
                           r->net->name);
        case CFG_DATASET:
            if (i == CFG_DATA)
                return cg_fail(err, "%s: written with other training data (the samples "
                                    "differ); resume with the same --data or --data-x/--data-y "
                                    "and --val/--val-frac", r->p_ckpt);
            return cg_fail(err, "%s: written with other training data (%s %s, this run has %s); "
                                "resume with the same --data or --data-x/--data-y and "
                                "--val/--val-frac", r->p_ckpt, a, c->name, b);
        default:
            return cg_fail(err, "%s: written with %s %s, this run has %s %s; %s cannot change "
                                "on --resume (%s): resume with %s %s, or train afresh in "
                                "another --out", r->p_ckpt, c->name, a, c->name, b, c->name,
                           c->why, c->name, a);
        }
    }
    return 0;
}

/* ---- checkpoint ---- */
static cg_array arr_f4(float *p, size_t n)
{
    return (cg_array){.dtype = CG_F4, .ndim = 1, .shape = {(int64_t)n}, .count = n, .data = p};
}

static int checkpoint_write(run *r, cg_err *err)
{
    const char *keys[13];
    cg_array a[13];
    int k = 0;
    uint64_t rs[4];
    int64_t ranks = r->comm->size;
    memcpy(rs, r->rng.s, sizeof rs);
    keys[k] = "params", a[k++] = arr_f4(r->params, r->net->n_params);
    keys[k] = "buffers", a[k++] = arr_f4(r->buffers, r->net->n_buffers);
    keys[k] = "velocity", a[k++] = arr_f4(r->vel, r->net->n_params);
    if (r->vsq)
        keys[k] = "second_moment", a[k++] = arr_f4(r->vsq, r->net->n_params);
    keys[k] = "best_params", a[k++] = arr_f4(r->best_p, r->net->n_params);
    keys[k] = "best_buffers", a[k++] = arr_f4(r->best_b, r->net->n_buffers);
    keys[k] = "rng", a[k++] = (cg_array){.dtype = CG_I8, .ndim = 1, .shape = {4}, .count = 4,
                                          .data = rs};
    keys[k] = "perm", a[k++] = (cg_array){.dtype = CG_I8, .ndim = 1, .shape = {(int64_t)r->tr.n},
                                           .count = r->tr.n, .data = r->perm};
    keys[k] = "pos", a[k++] = (cg_array){.dtype = CG_I8, .ndim = 1, .shape = {POS_COUNT},
                                          .count = POS_COUNT, .data = r->pos};
    keys[k] = "acc", a[k++] = (cg_array){.dtype = CG_F8, .ndim = 1, .shape = {ACC_COUNT},
                                          .count = ACC_COUNT, .data = r->acc};
    keys[k] = "config", a[k++] = (cg_array){.dtype = CG_F8, .ndim = 1, .shape = {CFG_COUNT},
                                             .count = CFG_COUNT, .data = r->cfg};
    keys[k] = "ranks", a[k++] = (cg_array){.dtype = CG_I8, .ndim = 1, .shape = {1}, .count = 1,
                                            .data = &ranks};
    return cg_npz_write(r->p_ckpt, k, keys, a, err);
}

static int ck_get(const cg_npz *z, const char *path, const char *key, int dtype, size_t count,
                  const cg_array **out, cg_err *err)
{
    const cg_array *a = cg_npz_get(z, key);
    if (!a)
        return cg_fail(err, "%s: not a checkpoint of this trainer (no '%s')", path, key);
    if (a->dtype != dtype || a->count != count)
        return cg_fail(err, "%s: checkpoint array '%s' has %zu elements of %s, expected %zu of %s",
                       path, key, a->count, cg_dtype_descr(a->dtype), count,
                       cg_dtype_descr(dtype));
    *out = a;
    return 0;
}

static int checkpoint_read(run *r, cg_err *err)
{
    cg_npz z;
    if (access(r->p_ckpt, F_OK) != 0)
        return cg_fail(err, "%s: no checkpoint to resume from (train with --checkpoint-every N)",
                       r->p_ckpt);
    /* no member larger than the largest array a checkpoint of this run holds (8 bytes an
     * element, plus a header): refused from the zip directory, before inflating */
    size_t big = r->net->n_params > r->net->n_buffers ? r->net->n_params : r->net->n_buffers;
    if (r->tr.n > big)
        big = r->tr.n;
    if (big < 64)
        big = 64;
    if (cg_npz_read_expect(r->p_ckpt, NULL, 0, big * 8 + 4096, &z, err) != 0)
        return -1;
    const cg_array *a[11] = {0};
    const size_t np = r->net->n_params, nb = r->net->n_buffers;
    int rc = -1;
    if (ck_get(&z, r->p_ckpt, "config", CG_F8, CFG_COUNT, &a[9], err) != 0)
        goto out;
    if (config_compare(r, a[9]->data, err) != 0)
        goto out;
    /* the number of data-parallel ranks (no member: a checkpoint from before ranks were
     * recorded, written by one process). It decides each rank's share of every batch, the
     * batch-norm statistics each rank sees and the order of the gradient sums, so a
     * different count would not continue the same run */
    const cg_array *rk = cg_npz_get(&z, "ranks");
    const int64_t ranks = rk ? (rk->dtype == CG_I8 && rk->count == 1 ? *(const int64_t *)rk->data : -1) : 1;
    if (ranks < 1) {
        cg_fail(err, "%s: checkpoint array 'ranks' is not one positive int64", r->p_ckpt);
        goto out;
    }
    if (ranks != r->comm->size) {
        cg_fail(err, "%s: written by a run over %lld rank%s, this run has %d; the number of "
                     "ranks cannot change on --resume (it decides each rank's share of every "
                     "batch, its batch-norm statistics and the order of the gradient sums): "
                     "resume with mpirun -n %lld, or train afresh in another --out",
                r->p_ckpt, (long long)ranks, ranks == 1 ? "" : "s", r->comm->size, (long long)ranks);
        goto out;
    }
    if (ck_get(&z, r->p_ckpt, "params", CG_F4, np, &a[0], err) ||
        ck_get(&z, r->p_ckpt, "buffers", CG_F4, nb, &a[1], err) ||
        ck_get(&z, r->p_ckpt, "velocity", CG_F4, np, &a[2], err) ||
        ck_get(&z, r->p_ckpt, "best_params", CG_F4, np, &a[3], err) ||
        ck_get(&z, r->p_ckpt, "best_buffers", CG_F4, nb, &a[4], err) ||
        ck_get(&z, r->p_ckpt, "rng", CG_I8, 4, &a[5], err) ||
        ck_get(&z, r->p_ckpt, "perm", CG_I8, r->tr.n, &a[6], err) ||
        ck_get(&z, r->p_ckpt, "pos", CG_I8, POS_COUNT, &a[7], err) ||
        ck_get(&z, r->p_ckpt, "acc", CG_F8, ACC_COUNT, &a[8], err) ||
        (r->vsq && ck_get(&z, r->p_ckpt, "second_moment", CG_F4, np, &a[10], err)))
        goto out;
    const int64_t *perm = a[6]->data, *pos = a[7]->data;
    /* a hand-edited file: every counter in [0, 2^53] (or -1 where "none" is allowed),
     * so that the arithmetic on them below and in the run cannot overflow */
    for (int i = 0; i < POS_COUNT; i++)
        if (pos[i] < -1 || pos[i] > ((int64_t)1 << 53)) {
            cg_fail(err, "%s: corrupt position counters (pos[%d] = %lld)", r->p_ckpt, i, (long long)pos[i]);
            goto out;
        }
    static const char *const ftensor[5] = {"params", "buffers", "velocity", "best_params", "best_buffers"};
    for (int t = 0; t < 5; t++) {
        const float *v = a[t]->data;
        for (size_t i = 0; i < a[t]->count; i++)
            if (!isfinite(v[i])) {
                cg_fail(err, "%s: '%s' has the non-finite value %g at index %zu", r->p_ckpt, ftensor[t], v[i], i);
                goto out;
            }
    }
    const long long need = (long long)pos[POS_EPOCH] + (pos[POS_K] > 0); /* epochs begun */
    if (need > r->h.epochs && pos[POS_EPOCH] >= 0 && pos[POS_K] >= 0) {
        cg_fail(err, "%s: the checkpoint is at step %lld, in epoch %lld; --epochs %d ends before "
                     "it: resume with --epochs %lld or more", r->p_ckpt,
                (long long)pos[POS_GSTEP], need, r->h.epochs, need);
        goto out;
    }
    if (pos[POS_EPOCH] < 0 || pos[POS_K] < 0 ||
        pos[POS_K] >= r->spe || pos[POS_GSTEP] < 0 || pos[POS_LOG_BYTES] < 0 ||
        pos[POS_EP_N] < 0 || pos[POS_WIN_N] < 0 || pos[POS_BAD] < 0 || pos[POS_EVALS] < 0) {
        cg_fail(err, "%s: corrupt position counters", r->p_ckpt);
        goto out;
    }
    for (size_t i = 0; i < r->tr.n; i++)
        if (perm[i] < 0 || (uint64_t)perm[i] >= r->tr.n) {
            cg_fail(err, "%s: corrupt permutation", r->p_ckpt);
            goto out;
        }
    memcpy(r->params, a[0]->data, np * sizeof(float));
    memcpy(r->buffers, a[1]->data, nb * sizeof(float));
    memcpy(r->vel, a[2]->data, np * sizeof(float));
    if (r->vsq)
        memcpy(r->vsq, a[10]->data, np * sizeof(float));
    memcpy(r->best_p, a[3]->data, np * sizeof(float));
    memcpy(r->best_b, a[4]->data, nb * sizeof(float));
    memcpy(r->rng.s, a[5]->data, sizeof r->rng.s);
    for (size_t i = 0; i < r->tr.n; i++)
        r->perm[i] = (size_t)perm[i];
    memcpy(r->pos, a[7]->data, sizeof r->pos);
    memcpy(r->acc, a[8]->data, sizeof r->acc);
    rc = 0;
out:
    cg_npz_free(&z);
    return rc;
}

/* ---- log.csv and curve.png ---- */
static int log_open(run *r, int resume, FILE **f, cg_err *err)
{
    if (resume) {
        struct stat st;
        if (stat(r->p_log, &st) == 0 && st.st_size < r->pos[POS_LOG_BYTES])
            return cg_fail(err, "%s: shorter (%lld bytes) than the checkpoint's %lld bytes",
                           r->p_log, (long long)st.st_size, (long long)r->pos[POS_LOG_BYTES]);
        if (truncate(r->p_log, (off_t)r->pos[POS_LOG_BYTES]) != 0)
            return cg_fail(err, "%s: cannot truncate to the checkpoint's %lld bytes: %s",
                           r->p_log, (long long)r->pos[POS_LOG_BYTES], strerror(errno));
        *f = cg_fopen(r->p_log, "ab", err);
        return *f ? 0 : -1;
    }
    *f = cg_fopen(r->p_log, "wb", err);
    if (!*f)
        return -1;
    fputs("step,epoch,train_loss,val_loss,val_acc,lr,time_s\n", *f);
    if (fflush(*f) != 0)
        return cg_fail(err, "%s: write failed: %s", r->p_log, strerror(errno));
    r->pos[POS_LOG_BYTES] = ftell(*f);
    return 0;
}

static int have_program(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    char buf[4352];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n > 0 && n < 4000) {
            snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, name);
            if (access(buf, X_OK) == 0)
                return 1;
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return 0;
}

/* gnuplot the lecture's early-stopping picture; 0 drawn, 1 gnuplot missing, -1 failed */
static int plot_curve(run *r, const char *title, double best_epoch, double best_loss)
{
    if (!have_program("gnuplot"))
        return 1;
    FILE *g = popen("gnuplot 2>/dev/null", "w");
    if (!g)
        return -1;
    fprintf(g, "set terminal png size 900,560\n");
    fprintf(g, "set output '%s'\n", r->p_png);
    fprintf(g, "set datafile separator ','\n");
    fprintf(g, "set key top right\nset grid\n");
    fprintf(g, "set title '%s'\n", title);
    fprintf(g, "set xlabel 'epoch'\nset ylabel 'objective (%s)'\n",
            r->net->loss == CG_LOSS_SOFTMAX_CE ? "cross-entropy" : "mse");
    if (isfinite(best_loss)) {
        fprintf(g, "set label 1 sprintf('best (restored): epoch %%.2f, validation %%.4f', %.17g, "
                   "%.17g) at graph 0.02, graph 0.05 left\n", best_epoch, best_loss);
        fprintf(g, "set arrow 1 from %.17g, graph 0 to %.17g, graph 1 nohead dt 2 lc rgb '#888888'\n",
                best_epoch, best_epoch);
        fprintf(g, "plot '%s' skip 1 using 2:3 with linespoints pt 7 ps 0.5 lw 2 title 'training', "
                   "'' skip 1 using 2:4 with linespoints pt 7 ps 0.5 lw 2 title 'validation', "
                   "'-' using 1:2 with points pt 6 ps 3 lw 3 lc rgb 'red' title 'best (restored)'\n",
                r->p_log);
        fprintf(g, "%.17g,%.17g\ne\n", best_epoch, best_loss);
    } else {
        fprintf(g, "plot '%s' skip 1 using 2:3 with linespoints pt 7 ps 0.5 lw 2 title 'training'\n",
                r->p_log);
    }
    int rc = pclose(g);
    return rc == 0 ? 0 : -1;
}

/* ---- progress ---- */
static void fmt_dur(double s, char *buf, size_t cap)
{
    if (!isfinite(s) || s < 0)
        s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

/* ---- data ---- */
static int dir_has_split(const char *dir, int split)
{
    const char *prefix = split == CG_SPLIT_TRAIN ? "train" : "t10k";
    char p[4352], q[4400];
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte", dir, prefix);
    snprintf(q, sizeof q, "%s.gz", p);
    if (access(p, F_OK) == 0 || access(q, F_OK) == 0)
        return 1;
    snprintf(p, sizeof p, "%s/%s", dir, split == CG_SPLIT_TRAIN ? "train.npz" : "test.npz");
    return access(p, F_OK) == 0;
}

static int is_dir(const char *p)
{
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int load_pair(const cg_net *net, const char *x, const char *y, const char *opt,
                     cg_dataset *out, cg_err *err)
{
    if (!x || !y)
        return cg_fail(err, "--%s-x and --%s-y go together", opt, opt);
    if (cg_xy_load_expect(x, y, net->in_size, out, err) != 0)
        return -1;
    if (cg_dataset_check_files(out, net, x, y, err) != 0) {
        cg_dataset_free(out);
        return -1;
    }
    return 0;
}

/* all (train + validation) and test; test->n == 0 when there is no test set */
static int load_data(const cg_net *net, const cg_train_opts *o, cg_dataset *all,
                     cg_dataset *test, cg_err *err)
{
    memset(all, 0, sizeof *all);
    memset(test, 0, sizeof *test);
    if (o->train_ds) {
        if (cg_dataset_check(o->train_ds, net, "training data", err) != 0)
            return -1;
        *all = *o->train_ds;
        all->owns = 0;
        if (o->test_ds) {
            if (cg_dataset_check(o->test_ds, net, "test data", err) != 0)
                return -1;
            *test = *o->test_ds;
            test->owns = 0;
        }
        return 0;
    }
    int rc;
    if (o->data_x || o->data_y)
        rc = load_pair(net, o->data_x, o->data_y, "data", all, err);
    else
        rc = cg_data_path_load(net, o->data, CG_SPLIT_TRAIN, all, err);
    if (rc != 0)
        return -1;
    if (o->test_x || o->test_y)
        rc = load_pair(net, o->test_x, o->test_y, "test", test, err);
    else if (o->test)
        rc = cg_data_path_load(net, o->test, CG_SPLIT_TEST, test, err);
    else if (!o->data_x && (!o->data || is_dir(o->data))) {
        const char *dir = o->data ? o->data : CG_DEFAULT_DATA_DIR;
        if (dir_has_split(dir, CG_SPLIT_TEST))
            rc = cg_data_path_load(net, o->data, CG_SPLIT_TEST, test, err);
    }
    if (rc != 0) {
        cg_dataset_free(all);
        return -1;
    }
    return 0;
}

/* Borrowed (in-memory) data is normalized in a private copy of x; *copied says to free it. */
static int own_copy(cg_dataset *ds, float **copied, cg_err *err)
{
    *copied = NULL;
    if (ds->owns || !ds->n)
        return 0;
    float *x = cg_try_alloc(ds->n, ds->x_size * sizeof(float), "dataset copy", err);
    if (!x)
        return -1;
    memcpy(x, ds->x, ds->n * ds->x_size * sizeof(float));
    ds->x = x;
    *copied = x;
    return 0;
}

/* ---- the loop ---- */
static void run_free(run *r)
{
    if (r->lock_fd >= 0)
        close(r->lock_fd); /* and with it the lock */
    r->lock_fd = -1;
    if (r->logf)
        fclose(r->logf);
    r->logf = NULL;
    free(r->params);
    free(r->grads);
    free(r->buffers);
    if (r->team.size)
        cg_net_team_free(&r->team); /* frees ws */
    else
        free(r->ws);
    free(r->vel);
    free(r->vsq);
    free(r->aug_scratch);
    free(r->best_p);
    free(r->best_b);
    free(r->xb);
    free(r->tb);
    free(r->yb);
    free(r->perm);
    free(r->draw);
    free(r->nmean);
    free(r->nstd);
    free(r->xcopy_all);
    free(r->xcopy_test);
    cg_dataset_free(&r->all);
    cg_dataset_free(&r->test_all);
}

/* The `training` argument of a training forward: nonzero, a hash of the seed, the step
 * and the chunk of the step, so that dropout draws new masks every step and the same
 * ones after --resume (splitmix64's finalizer). */
static int step_seed(const run *r, size_t start)
{
    uint64_t z = ((uint64_t)(uint32_t)r->h.seed << 32) ^ (uint64_t)r->pos[POS_GSTEP] * 0x9E3779B97F4A7C15ull ^
                 (uint64_t)start * 0xD1B54A32D192ED03ull;
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    z ^= z >> 31;
    int s = (int)(z & 0x7fffffff);
    return s ? s : 1;
}

/* One optimizer step over samples idx[0..n) of the training set (n <= net->batch); returns
 * the mean loss. */
static double forward_backward(run *r, const size_t *idx, size_t start, int n, float dscale)
{
    const cg_net *net = r->net;
    cg_dataset_gather(&r->tr, idx, start, n, r->xb, r->yb, r->tb, net->out_size);
    if (r->h.aug_crop > 0 || r->h.aug_flip)
        cg_augment_batch(r->xb, r->aug_scratch, n, net->in_shape[0], net->in_shape[1],
                         net->in_shape[2], r->h.aug_crop, r->h.aug_flip, &r->aug_rng);
    const void *target = net->loss == CG_LOSS_SOFTMAX_CE ? (const void *)r->yb : r->tb;
    if (r->team.size) {
        /* the replicas split the samples; replica 0's (the first) stay in ws for
         * cg_diverge_where */
        double lsum;
        if (cg_net_team_step(&r->team, r->params, r->grads, r->buffers, r->xb, target, n, step_seed(r, start),
                             dscale, &lsum) != 0) {
            fprintf(stderr, "%s: the team of %d replicas lost its threads\n", net->name, r->team.size);
            abort();
        }
        size_t lo, hi;
        cg_comm_shard((size_t)n, 0, n < r->team.size ? 1 : r->team.size, &lo, &hi);
        r->last_n = (int)hi;
        return lsum / n;
    }
    net->forward(r->params, r->buffers, r->xb, r->ws, n, step_seed(r, start));
    r->last_n = n;
    float l = cg_net_loss(net, r->ws + net->out_offset, target, r->ws + net->dout_offset, n);
    if (dscale != 1.0f)
        cg_scale(r->ws + net->dout_offset, (size_t)n * net->out_size, dscale);
    net->backward(r->params, r->grads, r->xb, NULL, r->ws, n);
    return (double)l;
}

static void team_probe(void *ctx, int rank)
{
    (void)ctx, (void)rank;
}

/* ranks: the augmentation draws of the n samples of the step before this rank's shard,
 * skipped, so that every sample is cropped and flipped as in one process */
static void aug_skip(run *r, size_t n)
{
    if (!(r->h.aug_crop > 0 || r->h.aug_flip))
        return;
    for (size_t i = 0; i < n; i++) {
        int oy, ox, fl;
        cg_augment_draw(&r->aug_rng, r->h.aug_crop, r->h.aug_flip, &oy, &ox, &fl);
    }
}

/* Returns the samples used (0 if the step was skipped), the loss sum in *lsum. */
static size_t train_step(run *r, float lr, double *lsum)
{
    const cg_net *net = r->net;
    const size_t N = r->tr.n;
    const long long k = r->pos[POS_K];
    const int S = r->comm->size;
    memset(r->grads, 0, (net->n_params + 1) * sizeof(float));
    cg_augment_seed(&r->aug_rng, r->h.seed, r->pos[POS_GSTEP]);
    size_t used = 0;
    double sum = 0.0;
    if (r->h.mode == CG_MODE_FULL) {
        /* ranks: each takes a contiguous run of the single process's chunks */
        size_t SB = (size_t)cg_net_step_batch(net);
        size_t chunks = (N + SB - 1) / SB, start = 0, c0 = 0,
               c1 = chunks;
        cg_comm_shard(chunks, r->comm->rank, S, &c0, &c1);
        for (size_t c = 0; c < c1; c++) {
            size_t m = N / chunks + (c < N % chunks);
            if (c < c0)
                aug_skip(r, m);
            else {
                double l = forward_backward(r, NULL, start, (int)m, (float)((double)m / (double)N));
                sum += l * (double)m;
            }
            start += m;
        }
        used = N;
    } else {
        size_t B = (size_t)r->h.batch, start = (size_t)k * B;
        size_t m = N - start < B ? N - start : B;
        if ((int)m < r->min_batch || (S > 1 && r->min_batch > 1 && m / (size_t)S < (size_t)r->min_batch))
            return 0; /* a last batch too small for batch norm: skipped, like drop_last */
        const size_t *idx = r->perm;
        if (r->h.order == CG_ORDER_RANDOM) {
            for (size_t i = 0; i < m; i++)
                r->draw[i] = (size_t)cg_rng_below(&r->rng, N);
            idx = r->draw;
            start = 0;
        }
        /* ranks: this rank's shard of the global batch, its loss weighted by its share */
        size_t lo = 0, hi = m;
        cg_comm_shard(m, r->comm->rank, S, &lo, &hi);
        aug_skip(r, lo);
        if (hi > lo)
            sum = forward_backward(r, idx, start + lo, (int)(hi - lo),
                                   S > 1 ? (float)((double)(hi - lo) / (double)m) : 1.0f) *
                  (double)(hi - lo);
        used = m;
    }
    if (S > 1) { /* one sum of one flat buffer: the gradients and the loss */
        r->grads[net->n_params] = (float)sum;
        r->comm->sum_f32(r->comm, r->grads, net->n_params + 1);
        sum = (double)r->grads[net->n_params];
    }
    *lsum = sum;
    if (!isfinite(sum) || !cg_all_finite(r->grads, net->n_params)) {
        r->diverged = 1; /* no update: the weights stay those of the last good step */
        return used;
    }
    const cg_train_defaults *h = &r->h;
    r->pos[POS_OPT_STEP]++;
    if (h->optimizer == CG_OPT_SGD)
        cg_net_sgd_update(net, r->params, r->grads, r->vel, net->n_params, lr, h->momentum,
                          h->weight_decay);
    else
        cg_net_adam_update(net, r->params, r->grads, r->vel, r->vsq, net->n_params, lr, h->beta1,
                           h->beta2, h->eps, h->weight_decay, h->optimizer == CG_OPT_ADAMW,
                           (long long)r->pos[POS_OPT_STEP]);
    return used;
}

static void say(const cg_train_opts *o, const char *fmt, ...) CG_PRINTF(2, 3);
static void say(const cg_train_opts *o, const char *fmt, ...)
{
    if (o->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

/* ---- ranks (comm.h): batch-norm running buffers, sharded evaluation ---- */

/* Every rank's running buffers <- their mean over the ranks (each rank's batch norms see
 * only its shards, like DistributedDataParallel's); counters (num_batches_tracked) <-
 * rank 0's, which takes part in every step. Called before evaluations, checkpoints and
 * the final files, so that every rank holds the same state. */
static void sync_buffers(run *r)
{
    const cg_net *net = r->net;
    const int S = r->comm->size;
    if (S == 1 || net->n_buffers == 0)
        return;
    for (int i = 0; i < net->n_tensors; i++) {
        const cg_tensor *t = &net->tensors[i];
        if (t->kind == CG_COUNTER)
            for (size_t j = t->offset; j < t->offset + t->size; j++)
                r->buffers[j] = r->comm->rank == 0 ? r->buffers[j] * (float)S : 0.0f;
    }
    r->comm->sum_f32(r->comm, r->buffers, net->n_buffers);
    for (size_t j = 0; j < net->n_buffers; j++)
        r->buffers[j] /= (float)S;
}

/* cg_evaluate over ds, each rank taking its contiguous shard; the loss sums and correct
 * counts summed over the ranks in rank order, so every rank gets the same result. */
static void eval_set(run *r, const cg_dataset *ds, double *loss, double *acc)
{
    const cg_net *net = r->net;
    const cg_comm *c = r->comm;
    if (c->size == 1) {
        cg_evaluate(net, r->params, r->buffers, r->ws, ds, r->xb, r->yb, r->tb, loss, acc);
        return;
    }
    size_t lo, hi;
    cg_comm_shard(ds->n, c->rank, c->size, &lo, &hi);
    cg_dataset before, from_lo, part, after;
    cg_dataset_split(ds, ds->n - lo, &before, &from_lo);      /* [lo, n) */
    cg_dataset_split(&from_lo, from_lo.n - (hi - lo), &part, &after); /* [lo, hi) */
    double s[2] = {0.0, 0.0}, l = 0.0, a = 0.0;
    if (hi > lo) {
        cg_evaluate(net, r->params, r->buffers, r->ws, &part, r->xb, r->yb, r->tb, &l, &a);
        s[0] = l * (double)(hi - lo);
        s[1] = ds->labels ? round(a * (double)(hi - lo)) : 0.0;
    }
    c->sum_f64(c, s, 2);
    *loss = ds->n ? s[0] / (double)ds->n : NAN;
    *acc = ds->n && ds->labels ? s[1] / (double)ds->n : NAN;
}

/* ---- setup: settings, output paths, data, state ---- */

/* One run an output directory: an advisory lock (flock) on the directory itself, held
 * until the run ends (the kernel drops it when the process dies; no lock file is left).
 * Holding it, the temporary files a killed run left there (NAME.tmp.PID.N,
 * runtime/util.c) are removed. */
static int lock_outdir(run *r, const char *outdir, cg_err *err)
{
    r->lock_fd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r->lock_fd < 0)
        return cg_fail(err, "%s: cannot open the output directory: %s", outdir, strerror(errno));
    if (flock(r->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK)
            return cg_fail(err, "%s: another run is training into this output directory (it holds its "
                                "lock); wait for it or choose another --out", outdir);
        return cg_fail(err, "%s: cannot lock the output directory: %s", outdir, strerror(e));
    }
    static const char *const outputs[] = {"log.csv.tmp.", "best.npz.tmp.", "checkpoint.npz.tmp.",
                                          "final.npz.tmp.", "last.npz.tmp.", "normalize.npz.tmp."};
    DIR *d = opendir(outdir);
    for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d))
        for (size_t i = 0; i < sizeof outputs / sizeof outputs[0]; i++)
            if (strncmp(e->d_name, outputs[i], strlen(outputs[i])) == 0) {
                char p[4352];
                if (cg_path_join(p, sizeof p, outdir, e->d_name, err) == 0)
                    remove(p);
            }
    if (d)
        closedir(d);
    return 0;
}

/* Checks the settings and creates the output directory; fills r->h, r->min_batch and the
 * output paths. */
static int setup_settings(run *r, cg_err *err)
{
    const cg_net *net = r->net;
    const cg_train_opts *o = r->o;
    cg_train_defaults *h = &r->h;
    if (h->mode < 0 || h->mode > 2 || h->order < 0 || h->order > 1 || h->schedule < 0 ||
        h->schedule > 2)
        return cg_fail(err, "invalid mode/order/schedule");
    if (h->mode == CG_MODE_SGD)
        h->batch = 1;
    if (h->batch <= 0)
        h->batch = cg_net_step_batch(net);
    if (h->batch > cg_net_step_batch(net))
        return cg_fail(err, "batch %d is larger than the batch network '%s' was compiled for (%d)",
                       h->batch, net->name, cg_net_step_batch(net));
    if (h->epochs < 0 || !(h->lr >= 0) || !(h->momentum >= 0) || !(h->weight_decay >= 0))
        return cg_fail(err, "epochs, lr, momentum and weight decay must be non-negative");
    if (h->schedule == CG_SCHED_STEP && h->step_size <= 0)
        return cg_fail(err, "the step schedule needs step_size >= 1");
    if (h->optimizer < CG_OPT_SGD || h->optimizer > CG_OPT_ADAMW)
        return cg_fail(err, "invalid optimizer");
    if (h->optimizer != CG_OPT_SGD &&
        !(h->beta1 >= 0 && h->beta1 < 1 && h->beta2 >= 0 && h->beta2 < 1 && h->eps >= 0))
        return cg_fail(err, "Adam needs betas in [0, 1) and eps >= 0");
    if (h->warmup < 0 || h->aug_crop < 0)
        return cg_fail(err, "warmup and crop must be non-negative");
    if ((h->aug_crop > 0 || h->aug_flip) && net->in_ndim != 3)
        return cg_fail(err, "augmentation (crop, flip) needs [C, H, W] inputs; network '%s' "
                            "takes %s inputs", net->name,
                       net->in_ndim == 2 ? "1-D [C, L]" : "flat [N]");
    r->min_batch = cg_min_train_batch(net);
    if (h->mode != CG_MODE_FULL && h->batch < r->min_batch)
        return cg_fail(err, "network '%s' has a batch norm over one value per channel, which "
                            "needs at least 2 samples a step: %s is not possible",
                       net->name, h->mode == CG_MODE_SGD ? "--mode sgd" : "--batch 1");
    const int S = r->comm->size;
    if (S > 1 && h->mode != CG_MODE_FULL && h->batch / S < r->min_batch)
        return cg_fail(err, "network '%s' has a batch norm over one value per channel, which "
                            "needs at least 2 samples a rank and step: --batch %d over %d ranks "
                            "gives shards of %d; use --batch %d or more", net->name, h->batch, S,
                       h->batch / S, 2 * S);

    const char *outdir = o->out ? o->out : ".";
    snprintf(r->outdir, sizeof r->outdir, "%s", outdir);
    if (mkdir(outdir, 0777) != 0 && errno != EEXIST)
        return cg_fail(err, "%s: cannot create output directory: %s", outdir, strerror(errno));
    /* under MPI only rank 0 writes OUT/, so only rank 0 holds its lock */
    if (r->comm->rank == 0 && lock_outdir(r, outdir, err) != 0)
        return -1;
    if (cg_path_join(r->p_log, sizeof r->p_log, outdir, "log.csv", err) ||
        cg_path_join(r->p_best, sizeof r->p_best, outdir, "best.npz", err) ||
        cg_path_join(r->p_ckpt, sizeof r->p_ckpt, outdir, "checkpoint.npz", err) ||
        cg_path_join(r->p_final, sizeof r->p_final, outdir, "final.npz", err) ||
        cg_path_join(r->p_last, sizeof r->p_last, outdir, "last.npz", err) ||
        cg_path_join(r->p_norm, sizeof r->p_norm, outdir, "normalize.npz", err) ||
        cg_path_join(r->p_png, sizeof r->p_png, outdir, "curve.png", err))
        return -1;
    return 0;
}

/* Loads the data, holds out the validation split, normalizes (--normalize); fills r->tr,
 * r->val, r->test, r->spe and the run's configuration (for checkpoints). */
static int setup_data(run *r, cg_err *err)
{
    const cg_net *net = r->net;
    const cg_train_opts *o = r->o;
    const cg_train_defaults *h = &r->h;
    if (load_data(net, o, &r->all, &r->test_all, err) != 0) {
        /* load_data freed what it loaded */
        memset(&r->all, 0, sizeof r->all);
        memset(&r->test_all, 0, sizeof r->test_all);
        return -1;
    }
    cg_dataset *all = &r->all, *test = &r->test_all;
    if (all->scaled_u8)
        say(o, "note: %s: integer features in 0..255 taken as uint8 and scaled to [0, 1]\n",
            o->data ? o->data : "data");
    size_t n_val;
    if (h->val_frac > 0)
        n_val = (size_t)llround((double)h->val_frac * (double)all->n);
    else if (h->val >= 0)
        n_val = (size_t)h->val;
    else
        n_val = all->n >= 10000 ? 5000 : all->n / 10;
    if (n_val >= all->n)
        return cg_fail(err, "validation split of %zu leaves no training samples (of %zu)", n_val,
                       all->n);
    if (h->normalize) {
        if (own_copy(all, &r->xcopy_all, err) || own_copy(test, &r->xcopy_test, err))
            return -1;
        size_t C = cg_norm_channels(net);
        r->nmean = cg_try_alloc(C, sizeof(float), "normalization", err);
        r->nstd = cg_try_alloc(C, sizeof(float), "normalization", err);
        if (!r->nmean || !r->nstd)
            return -1;
        cg_dataset head, tail;
        cg_dataset_split(all, n_val, &head, &tail);
        cg_norm_compute(net, &head, r->nmean, r->nstd);
        cg_norm_apply(net, all->x, all->n, r->nmean, r->nstd);
        if (test->n)
            cg_norm_apply(net, test->x, test->n, r->nmean, r->nstd);
        if (r->comm->rank == 0 && cg_norm_save(net, r->p_norm, r->nmean, r->nstd, err) != 0)
            return -1;
    } else if (r->comm->rank == 0) {
        remove(r->p_norm); /* a stale one would make eval/predict normalize */
    }
    cg_dataset_split(all, n_val, &r->tr, &r->val);
    r->test = *test;
    r->test.owns = 0;
    const size_t N = r->tr.n;
    r->res->n_train = N, r->res->n_val = r->val.n, r->res->n_test = test->n;

    r->spe = h->mode == CG_MODE_FULL ? 1
             : h->mode == CG_MODE_SGD ? (long long)N
                                      : (long long)((N + (size_t)h->batch - 1) / (size_t)h->batch);
    make_config(r, o->resume || h->checkpoint_every > 0);
    return 0;
}

/* Allocates everything a step uses, then starts from the checkpoint (--resume), the given
 * weights or the seeded initialization; opens log.csv and prints the run's settings. */
static int setup_state(run *r, cg_err *err)
{
    const cg_net *net = r->net;
    const cg_train_opts *o = r->o;
    const cg_train_defaults *h = &r->h;
    const size_t N = r->tr.n;
    const size_t np = net->n_params, nb = net->n_buffers, B = (size_t)cg_net_step_batch(net);
    r->params = cg_try_alloc(np, sizeof(float), "parameters", err);
    r->grads = cg_try_alloc(np + 1, sizeof(float), "gradients", err); /* + the loss (ranks) */
    r->vel = cg_try_alloc(np, sizeof(float), "momentum buffer", err);
    r->best_p = cg_try_alloc(np, sizeof(float), "best parameters", err);
    r->buffers = cg_try_alloc(nb, sizeof(float), "buffers", err);
    r->best_b = cg_try_alloc(nb, sizeof(float), "best buffers", err);
    if (net->team > 1) {
        const char *terr = cg_net_team_init(&r->team, net);
        if (terr)
            return cg_fail(err, "network '%s': %s", net->name, terr), -1;
        r->ws = r->team.ws[0];
        if (!net->team_run(net->team, team_probe, NULL))
            return cg_fail(err, "network '%s' was generated for a team of %d threads (cnngen --team %d), "
                                "which its code could not have: build it with -fopenmp",
                           net->name, net->team, net->team), -1;
    } else
        r->ws = cg_try_alloc(net->workspace, sizeof(float), "workspace", err);
    r->xb = cg_try_alloc(B * net->in_size, sizeof(float), "batch inputs", err);
    r->yb = cg_try_alloc(B, sizeof(int64_t), "batch labels", err);
    r->tb = cg_try_alloc(B * net->out_size, sizeof(float), "batch targets", err);
    r->perm = cg_try_alloc(N, sizeof(size_t), "permutation", err);
    r->draw = cg_try_alloc(B, sizeof(size_t), "draws", err);
    if (!r->params || !r->grads || !r->vel || !r->best_p || !r->buffers || !r->best_b || !r->ws ||
        !r->xb || !r->yb || !r->tb || !r->perm || !r->draw)
        return -1;
    if (h->optimizer != CG_OPT_SGD &&
        !(r->vsq = cg_try_alloc(np, sizeof(float), "Adam second moment", err)))
        return -1;
    if ((h->aug_crop > 0 || h->aug_flip) &&
        !(r->aug_scratch = cg_try_alloc(net->in_size, sizeof(float), "augmentation", err)))
        return -1;
    memset(r->vel, 0, np * sizeof(float));
    if (r->vsq)
        memset(r->vsq, 0, np * sizeof(float));
    memset(r->ws, 0, net->workspace * sizeof(float));
    memset(r->yb, 0, B * sizeof(int64_t));
    memset(r->tb, 0, B * net->out_size * sizeof(float));
    for (size_t i = 0; i < N; i++)
        r->perm[i] = i;
    cg_rng_seed(&r->rng, (uint64_t)(uint32_t)h->seed ^ 0x5DEECE66Dull);
    r->acc[ACC_BEST_LOSS] = INFINITY;
    r->acc[ACC_BEST_EPOCH] = NAN;
    r->acc[ACC_BEST_ACC] = NAN;
    r->pos[POS_BEST_STEP] = -1;

    int resume = o->resume;
    if (resume && access(r->p_ckpt, F_OK) != 0 && errno == ENOENT) {
        /* killed before its first checkpoint: nothing to continue, so begin */
        say(o, "%s: %s does not exist yet (no checkpoint was written): starting a fresh run\n", net->name,
            r->p_ckpt);
        resume = 0;
    }
    if (resume) {
        if (checkpoint_read(r, err) != 0)
            return -1;
        if (r->comm->rank == 0 && log_open(r, 1, &r->logf, err) != 0)
            return -1;
        if (r->pos[POS_HAS_BEST] && r->comm->rank == 0 &&
            cg_weights_save(net, r->p_best, r->best_p, r->best_b, err) != 0)
            return -1;
        say(o, "%s: resuming %s at step %lld (epoch %lld, step %lld of %lld)\n", net->name,
            r->p_ckpt, (long long)r->pos[POS_GSTEP], (long long)r->pos[POS_EPOCH] + 1,
            (long long)r->pos[POS_K], r->spe);
        if (r->resumed_changes[0])
            say(o, "%s: changed from step %lld on: %s\n", net->name,
                (long long)r->pos[POS_GSTEP], r->resumed_changes);
    } else {
        if (o->init_weights) {
            if (cg_weights_load(net, o->init_weights, r->params, r->buffers, err) != 0)
                return -1;
        } else {
            cg_init_params(net, r->params, r->buffers, (uint64_t)(uint32_t)h->seed);
        }
        memcpy(r->best_p, r->params, np * sizeof(float));
        memcpy(r->best_b, r->buffers, nb * sizeof(float));
        if (r->comm->rank == 0) {
            remove(r->p_best);
            if (log_open(r, 0, &r->logf, err) != 0)
                return -1;
        }
    }

    char optim[160], warm[48] = "", aug[48] = "";
    if (h->optimizer == CG_OPT_SGD)
        snprintf(optim, sizeof optim, "momentum %g, weight decay %g", h->momentum,
                 h->weight_decay);
    else
        snprintf(optim, sizeof optim, "%s betas (%g, %g), eps %g, weight decay %g%s",
                 optimizer_names[h->optimizer], h->beta1, h->beta2, h->eps, h->weight_decay,
                 h->momentum != 0.0f ? " (momentum unused)" : "");
    if (h->warmup)
        snprintf(warm, sizeof warm, ", %d warmup epochs", h->warmup);
    if (h->aug_crop || h->aug_flip)
        snprintf(aug, sizeof aug, ", augment:%s%.0d%s", h->aug_crop ? " crop " : "",
                 h->aug_crop, h->aug_flip ? " flip" : "");
    say(o, "%s: %zu training samples, %zu validation, %zu test; mode %s (batch %d), order %s, "
           "%d epochs of %lld steps; lr %g (%s%s), %s; patience %d, seed %d%s%s; sgd kernel %s\n",
        net->name, N, r->val.n, r->test.n, mode_names[h->mode],
        h->mode == CG_MODE_FULL ? cg_net_step_batch(net) : h->batch, order_names[h->order], h->epochs,
        r->spe, h->lr, sched_names[h->schedule], warm, optim, h->patience, h->seed,
        h->normalize ? ", normalized inputs" : "", aug, cg_sgd_kernel_name());
    if (r->comm->size > 1)
        say(o, "%s: data-parallel over %d ranks (%s): each takes 1/%d of every batch; batch-norm "
               "statistics per rank\n", net->name, r->comm->size, r->comm->name, r->comm->size);
    if (r->team.size)
        say(o, "%s: a team of %d threads (cnngen --team %d): each replica takes 1/%d of every batch "
               "(at most %d samples); batch-norm statistics over the team's batch\n",
            net->name, r->team.size, r->team.size, r->team.size, net->batch);
    /* the generated code's threads: fixed by --threads, else chosen between 1 and all of
     * them by the steps' times (not in a team, whose replicas are its threads, nor over
     * MPI, whose ranks wait for each other) */
    cg_thr_init(&r->thr, 1, 0.0, 0.0);
    if (net->threads && o->threads > 0)
        net->threads(o->threads);
    else if (net->threads && !r->team.size && r->comm->size == 1) {
        cg_thr_init(&r->thr, net->threads(0), now(), 10.0);
        if (r->thr.max > 1)
            say(o, "%s: %d threads (OpenMP's default), or 1 whenever one ran the last steps faster "
                   "(timed every 10 s; --threads T fixes them)\n", net->name, r->thr.max);
    }

    r->tty = o->progress > 0 || (o->progress < 0 && isatty(fileno(stdout)));
    if (o->quiet)
        r->tty = 0;
    r->total_steps = (long long)h->epochs * r->spe;
    r->t_start = now();
    r->elapsed0 = r->acc[ACC_ELAPSED];
    r->have_val = r->val.n > 0;
    return 0;
}

/* ---- logging: log.csv rows and the terminal ---- */

/* One row of log.csv at global step g, flushed; its length is checkpointed so that a
 * resumed run cuts the log back to it. */
static int log_row(run *r, long long g, double epoch_f, double tl, double vl, double va, float lr,
                   double wall, cg_err *err)
{
    if (!r->logf) /* ranks other than 0 write no files */
        return 0;
    fprintf(r->logf, "%lld,%.6f,%.9g,%.9g,%.9g,%.9g,%.3f\n", g, epoch_f, tl, vl, va, (double)lr,
            wall);
    if (fflush(r->logf) != 0)
        return cg_fail(err, "%s: write failed: %s", r->p_log, strerror(errno));
    r->pos[POS_LOG_BYTES] = ftell(r->logf);
    return 0;
}

/* the line printed at each evaluation */
static void print_eval_line(const run *r, long long g, double epoch_f, double tl, double vl,
                            double va, float lr, double wall, double t, const char *mark)
{
    printf("%sepoch %7.2f/%d  step %lld  train_loss %.4f", r->tty ? "\r\033[K" : "", epoch_f,
           r->h.epochs, g, tl);
    if (r->have_val)
        printf("  val_loss %.4f  val_acc %.4f", vl, va);
    printf("  lr %.4g  %.0f img/s  %.1fs%s%s\n", (double)lr,
           (double)r->samples_here / (t - r->t_start), wall, mark,
           r->stop ? "  (patience exhausted: stopping)" : "");
    fflush(stdout);
}

/* the \r-updated progress line between evaluations (terminal only) */
static void print_progress(run *r, int ep, double t)
{
    char eta[32];
    fmt_dur((double)(r->total_steps - r->pos[POS_GSTEP]) * (t - r->t_start) /
                (double)r->steps_here,
            eta, sizeof eta);
    printf("\r\033[Kepoch %d/%d  step %lld/%lld  loss %.4f  %.0f img/s  ETA %s", ep + 1,
           r->h.epochs, (long long)r->pos[POS_K], r->spe,
           r->pos[POS_WIN_N] ? r->acc[ACC_WIN_SUM] / (double)r->pos[POS_WIN_N] : 0.0,
           (double)r->samples_here / (t - r->t_start), eta);
    fflush(stdout);
    r->t_prog = t;
}

/* ---- evaluation: validation, log row, best-so-far, early stopping ---- */
static int evaluate(run *r, float lr, double t, cg_err *err)
{
    const cg_net *net = r->net;
    const cg_train_defaults *h = &r->h;
    const long long g = r->pos[POS_GSTEP];
    double vl = NAN, va = NAN;
    sync_buffers(r);
    if (r->have_val)
        eval_set(r, &r->val, &vl, &va);
    double tl = r->pos[POS_WIN_N] ? r->acc[ACC_WIN_SUM] / (double)r->pos[POS_WIN_N] : NAN;
    double epoch_f = (double)g / (double)r->spe;
    double wall = r->elapsed0 + (t - r->t_start);
    r->pos[POS_LAST_EVAL] = g;
    r->pos[POS_EVALS]++;
    r->acc[ACC_WIN_SUM] = 0;
    r->pos[POS_WIN_N] = 0;
    if (log_row(r, g, epoch_f, tl, vl, va, lr, wall, err) != 0)
        return -1;
    const char *mark = "";
    /* the monitored objective: validation loss, or validation 0-1 error */
    const double crit = h->monitor == CG_MONITOR_ERROR ? 1.0 - va : vl;
    if (r->have_val && crit < r->acc[ACC_BEST_LOSS]) {
        r->acc[ACC_BEST_LOSS] = crit;
        r->acc[ACC_BEST_VLOSS] = vl;
        r->acc[ACC_BEST_EPOCH] = epoch_f;
        r->acc[ACC_BEST_ACC] = va;
        r->pos[POS_BEST_STEP] = g;
        r->pos[POS_BAD] = 0;
        r->pos[POS_HAS_BEST] = 1;
        memcpy(r->best_p, r->params, net->n_params * sizeof(float));
        memcpy(r->best_b, r->buffers, net->n_buffers * sizeof(float));
        if (r->comm->rank == 0 && cg_weights_save(net, r->p_best, r->best_p, r->best_b, err) != 0)
            return -1;
        mark = "  *best";
    } else if (r->have_val) {
        r->pos[POS_BAD]++;
        if (h->patience > 0 && r->pos[POS_BAD] >= h->patience)
            r->stop = 1;
    }
    r->comm->bcast(r->comm, &r->stop, sizeof r->stop); /* rank 0 decides */
    if (!r->o->quiet)
        print_eval_line(r, g, epoch_f, tl, vl, va, lr, wall, t, mark);
    r->t_prog = t;
    return 0;
}

/* ---- checkpoint: the whole state, between steps ---- */
static int checkpoint(run *r, cg_err *err)
{
    sync_buffers(r);
    r->acc[ACC_ELAPSED] = r->elapsed0 + (now() - r->t_start);
    return r->comm->rank == 0 ? checkpoint_write(r, err) : 0;
}

/* ---- one step of the loop ---- */
enum { STEP_ON = 0, STEP_KILLED = 1 }; /* or -1: an error (err set) */

/* The next step: the epoch's permutation when it begins, the update, the counters, then
 * what is due between steps (evaluation, progress line, checkpoint, --max-steps). */
static int step(run *r, cg_err *err)
{
    const cg_net *net = r->net;
    const cg_train_defaults *h = &r->h;
    const size_t N = r->tr.n;
    const int ep = (int)r->pos[POS_EPOCH];
    const float lr = cg_lr_warmup_at(h->warmup, h->schedule, h->lr, ep, h->epochs, h->step_size,
                                     h->gamma);
    if (r->pos[POS_K] == 0 && h->order == CG_ORDER_SHUFFLE && h->mode != CG_MODE_FULL) {
        for (size_t i = N; i > 1; i--) { /* Fisher-Yates */
            size_t j = (size_t)cg_rng_below(&r->rng, i);
            size_t t = r->perm[i - 1];
            r->perm[i - 1] = r->perm[j];
            r->perm[j] = t;
        }
    }
    double lsum = 0.0;
    if (r->thr.max > 1) /* omp_set_num_threads: an assignment, no thread is started */
        net->threads(cg_thr_next(&r->thr));
    const double t0 = now();
    size_t used = train_step(r, lr, &lsum);
    if (r->thr.max > 1) {
        const double t1 = now();
        cg_thr_step(&r->thr, t1 - t0, used, t1);
    }
    if (used && r->diverged) {
        char where[600];
        int bad_data = cg_diverge_where(net, r->params, r->buffers, r->grads, r->xb, r->ws,
                                        r->last_n, where, sizeof where);
        return cg_fail(err, "training diverged at step %lld (epoch %d, step %lld of %lld; loss "
                            "%g): %s. Stopped before this step's update%s; %s",
                       (long long)r->pos[POS_GSTEP] + 1, ep + 1, (long long)r->pos[POS_K] + 1,
                       r->spe, lsum / (double)used, where,
                       h->checkpoint_every > 0 ? ", the last checkpoint is kept" : "",
                       bad_data ? "check the training data" : "try a smaller --lr");
    }
    r->acc[ACC_EP_SUM] += lsum;
    r->acc[ACC_WIN_SUM] += lsum;
    r->pos[POS_EP_N] += (int64_t)used;
    r->pos[POS_WIN_N] += (int64_t)used;
    r->pos[POS_GSTEP]++;
    r->pos[POS_K]++;
    r->steps_here++;
    r->samples_here += (long long)used;
    int epoch_end = r->pos[POS_K] >= r->spe;
    if (epoch_end) {
        r->res->last_train_loss = r->pos[POS_EP_N] ? r->acc[ACC_EP_SUM] / (double)r->pos[POS_EP_N]
                                                   : NAN;
        r->pos[POS_EPOCH]++;
        r->pos[POS_K] = 0;
        r->acc[ACC_EP_SUM] = 0;
        r->pos[POS_EP_N] = 0;
    }
    const long long g = r->pos[POS_GSTEP];
    int last = r->pos[POS_EPOCH] >= h->epochs;
    int do_eval = (h->eval_every > 0 ? g % h->eval_every == 0 : epoch_end) ||
                  (last && r->pos[POS_LAST_EVAL] != g);
    double t = now();
    if (do_eval) {
        if (evaluate(r, lr, t, err) != 0)
            return -1;
    } else if (r->tty && t - r->t_prog > 0.25) {
        print_progress(r, ep, t);
    }
    if (!r->stop && h->checkpoint_every > 0 && g % h->checkpoint_every == 0 &&
        checkpoint(r, err) != 0)
        return -1;
    if (r->o->max_steps > 0 && r->steps_here >= r->o->max_steps && !r->stop &&
        r->pos[POS_EPOCH] < h->epochs) {
        r->res->killed = 1;
        r->res->steps = g;
        if (r->tty)
            printf("\n");
        return STEP_KILLED;
    }
    return STEP_ON;
}

/* ---- the end: a last checkpoint, last.npz, the best restored, final.npz, test, curve ---- */
static int finish(run *r, cg_err *err)
{
    const cg_net *net = r->net;
    const cg_train_opts *o = r->o;
    const cg_train_defaults *h = &r->h;
    cg_train_result *res = r->res;
    if (r->tty && r->pos[POS_LAST_EVAL] != r->pos[POS_GSTEP])
        printf("\n");
    /* a run that went through its epochs ends with a checkpoint, so that --resume with more
     * --epochs continues it */
    if (!r->stop && r->steps_here > 0 && h->checkpoint_every > 0 &&
        r->pos[POS_GSTEP] % h->checkpoint_every != 0 && checkpoint(r, err) != 0)
        return -1;
    res->steps = r->pos[POS_GSTEP];
    res->epochs_done = (int)r->pos[POS_EPOCH];
    if (r->thr.changes)
        say(o, "%s: the steps changed between 1 and %d threads %d time%s; the last ran on %d\n", net->name,
            r->thr.max, r->thr.changes, r->thr.changes == 1 ? "" : "s", r->thr.cur);
    res->stopped_early = r->stop;
    res->evals = (int)r->pos[POS_EVALS];

    sync_buffers(r);
    if (r->comm->rank == 0 && cg_weights_save(net, r->p_last, r->params, r->buffers, err) != 0)
        return -1;
    if (r->pos[POS_HAS_BEST]) {
        memcpy(r->params, r->best_p, net->n_params * sizeof(float));
        memcpy(r->buffers, r->best_b, net->n_buffers * sizeof(float));
        res->best_val_loss = r->acc[ACC_BEST_LOSS];
        res->best_val_acc = r->acc[ACC_BEST_ACC];
        res->best_epoch = r->acc[ACC_BEST_EPOCH];
        res->best_step = r->pos[POS_BEST_STEP];
        say(o, "restored the best parameters: step %lld (epoch %.2f), val_loss %.4f, val_acc "
               "%.4f (monitored: validation %s)\n", (long long)res->best_step, res->best_epoch,
            r->acc[ACC_BEST_VLOSS], res->best_val_acc, h->monitor == CG_MONITOR_ERROR ? "error" : "loss");
    }
    if (r->comm->rank == 0 && cg_weights_save(net, r->p_final, r->params, r->buffers, err) != 0)
        return -1;
    if (r->test.n) {
        eval_set(r, &r->test, &res->test_loss, &res->test_acc);
        say(o, "test: %zu samples  test_loss %.4f", r->test.n, res->test_loss);
        if (!isnan(res->test_acc))
            say(o, "  test_acc %.4f", res->test_acc);
        say(o, "\n");
    }
    if (r->logf)
        fclose(r->logf);
    r->logf = NULL;
    if (o->plot) {
        char title[256];
        snprintf(title, sizeof title, "%s: training and validation objective", net->name);
        int p = plot_curve(r, title, res->best_epoch, r->acc[ACC_BEST_VLOSS]);
        if (p == 0)
            say(o, "curve: %s\n", r->p_png);
        else if (p > 0)
            say(o, "curve: gnuplot is not installed; no %s (data in %s)\n", r->p_png, r->p_log);
        else
            say(o, "warning: gnuplot failed; no %s (data in %s)\n", r->p_png, r->p_log);
    }
    say(o, "saved %s%s%s\n", r->p_final, r->pos[POS_HAS_BEST] ? ", best " : "",
        r->pos[POS_HAS_BEST] ? r->p_best : "");
    return 0;
}

/* The training run: setup_settings, setup_data, setup_state, then step() until the epochs
 * are done, patience runs out or --max-steps kills it, then finish(). */
int cg_train(const cg_net *net, const cg_train_opts *o, cg_train_result *res, cg_err *err)
{
    cg_train_result dummy;
    if (!res)
        res = &dummy;
    memset(res, 0, sizeof *res);
    res->best_val_loss = res->best_val_acc = res->best_epoch = NAN;
    res->test_loss = res->test_acc = NAN;
    run *r = calloc(1, sizeof *r);
    if (!r)
        return cg_fail(err, "out of memory (training state)");
    r->net = net;
    r->o = o;
    r->res = res;
    r->lock_fd = -1;
    r->h = o->h;
    const cg_comm *comm = r->comm = cg_comm_world();
    cg_train_opts silent; /* ranks other than 0 print nothing (rank 0 speaks for the job) */
    if (comm->rank != 0) {
        silent = *o;
        silent.quiet = 1;
        silent.plot = 0;
        r->o = &silent;
    }
    int rc = setup_settings(r, err);
    if (rc == 0)
        rc = setup_data(r, err);
    if (rc == 0)
        rc = setup_state(r, err);
    while (rc == STEP_ON && r->pos[POS_EPOCH] < r->h.epochs && !r->stop)
        rc = step(r, err);
    if (rc == STEP_ON)
        rc = finish(r, err);
    run_free(r);
    free(r);
    if (rc < 0 && comm->size > 1) { /* an error on one rank ends the job */
        fprintf(stderr, "%s: rank %d of %d: %s\n", net->name, comm->rank, comm->size,
                err ? err->msg : "error");
        comm->abort(comm, 1);
    }
    return rc == STEP_KILLED ? 0 : rc;
}
