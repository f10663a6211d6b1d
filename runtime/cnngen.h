/* cnngen runtime: the contract between generated networks and the trainer.
 *
 * A generated network NAME.c defines one `const cg_net NAME_net` describing itself and,
 * unless compiled with -DCNNGEN_NO_MAIN, a main() that calls cg_main(&NAME_net, ...).
 *
 * Memory (all float32, sizes in floats, planned by the generator):
 *   params  [n_params]    learned tensors (weights, biases, gamma, beta), PyTorch layouts,
 *                         each tensor contiguous at tensors[i].offset
 *   grads   [n_params]    same layout as params; backward ACCUMULATES (+=) into it
 *   buffers [n_buffers]   running_mean / running_var / num_batches_tracked (stored as a
 *                         float counter, exported to .npz as int64)
 *   ws      [workspace]   activations saved for backward, gradient ping-pong, scratch
 * Dimension legend: N batch (runtime, 1..batch), C channels, H/W or L spatial.
 * Input and output are NCHW (NCL for 1-D, N x F for dense) float32.
 */
#ifndef CNNGEN_H
#define CNNGEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CG_ABI_VERSION 9 /* 3: graph layers (cg_layer inputs, name, p); 4: cg_train_defaults
                            gained optimizer, betas, eps, warmup, augment; 5: cg_layer.inplace;
                            6: cg_net.parallel_for; 7: cg_net.forward_team, backward_team,
                            team_slot; 8: cg_net.threads; 9: cg_net.temp_offset, temp_size */

enum cg_loss_kind { CG_LOSS_SOFTMAX_CE = 0, CG_LOSS_MSE = 1 };
enum cg_tensor_kind { CG_PARAM = 0, CG_BUFFER = 1, CG_COUNTER = 2 };

typedef struct cg_tensor {
    const char *name;      /* state-dict key: "3.weight", "4.running_mean", "fc.bias" (named layer) ... */
    int kind;              /* enum cg_tensor_kind; PARAM lives in params, others in buffers */
    int layer;             /* layer index (= torch.nn.Sequential index) */
    int ndim;
    int shape[4];
    size_t offset;         /* floats, into params (PARAM) or buffers (BUFFER, COUNTER) */
    size_t size;           /* product of shape (1 for a scalar counter) */
    int init;              /* default initialisation, see enum cg_init */
    int fan_in;            /* for CG_INIT_KAIMING_UNIFORM / CG_INIT_BIAS_UNIFORM */
} cg_tensor;

/* Initialisations matching PyTorch's reset_parameters() in distribution. */
enum cg_init {
    CG_INIT_ZERO = 0,
    CG_INIT_ONE = 1,
    CG_INIT_KAIMING_UNIFORM = 2, /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)): kaiming_uniform(a=sqrt 5) */
    CG_INIT_BIAS_UNIFORM = 3     /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
};

typedef struct cg_layer {
    const char *kind;      /* "conv2d", "relu", ... as in the spec */
    int ndim_in;           /* rank of one sample's input: 1 (features), 2 (C,L), 3 (C,H,W) */
    int in_shape[3];
    int ndim_out;
    int out_shape[3];
    size_t in_size, out_size; /* floats per sample */
    /* conv / pool geometry, per axis [h, w] (1-D layers: h entries are 1/0) */
    int kernel[2], stride[2], pad_lo[2], pad_hi[2], dilation[2], groups;
    int has_bias;
    int count_include_pad; /* avgpool */
    float slope;           /* leaky_relu */
    float eps, momentum;   /* batchnorm; momentum < 0 means cumulative average (None) */
    float p;               /* dropout: the probability of zeroing a value */
    size_t act_offset;     /* floats into ws: this layer's output for the batch, [N][out_size],
                              or [out_size][lanes] when lanes > 0 */
    size_t line, col;      /* position of the layer in the spec */
    int lanes;             /* 0: activations are [N][size]; else batch-innermost [size][lanes]
                              (lanes = batch rounded up to whole SIMD vectors) */
    const char *schedule;  /* how the generator computes it: "name: fwd FORM[tile] dw ... dx ..."
                              (compiler/lua/schedule.lua) */
    int n_inputs;          /* tensors it reads: 1, or 2+ for add / concat */
    const int *inputs;     /* [n_inputs]: the index of the layer whose output it reads, -1 for
                              the network's input (a chain: layer i reads i - 1) */
    const char *name;      /* the spec's `name:` (the state-dict prefix), or NULL: the index */
    int inplace;           /* k > 0: the output is written over input k's buffer (act_offset is
                              that input's), whose values backward never needs */
} cg_layer;

enum cg_mode { CG_MODE_MINIBATCH = 0, CG_MODE_SGD = 1, CG_MODE_FULL = 2 };
enum cg_order { CG_ORDER_SHUFFLE = 0, CG_ORDER_RANDOM = 1 };
enum cg_schedule { CG_SCHED_CONSTANT = 0, CG_SCHED_STEP = 1, CG_SCHED_COSINE = 2 };
enum cg_monitor { CG_MONITOR_LOSS = 0, CG_MONITOR_ERROR = 1 }; /* validation loss, or 1 - accuracy */
enum cg_optimizer { CG_OPT_SGD = 0, CG_OPT_ADAM = 1, CG_OPT_ADAMW = 2 }; /* torch.optim's definitions */

/* The spec's train: section; the trainer's command line overrides each field. */
typedef struct cg_train_defaults {
    int batch, epochs;
    float lr, momentum, weight_decay;
    int mode;             /* enum cg_mode: minibatch, sgd (one sample a step), full (whole set) */
    int order;            /* enum cg_order: shuffle (a permutation an epoch) or random (draws) */
    int schedule;         /* enum cg_schedule */
    int step_size;        /* epochs between lr *= gamma (step schedule) */
    float gamma;
    int patience;         /* evaluations without improvement before stopping; 0: never */
    int eval_every;       /* steps between validation evaluations; 0: once an epoch */
    int val;              /* training samples held out for validation; -1: default */
    float val_frac;       /* fraction held out instead, when > 0 */
    int seed;
    int normalize;        /* standardize each input channel with training-set statistics */
    int checkpoint_every; /* steps between checkpoints; 0: off */
    int monitor;          /* enum cg_monitor: what early stopping minimizes on validation */
    int optimizer;        /* enum cg_optimizer */
    float beta1, beta2, eps; /* Adam / AdamW (torch.optim.Adam's betas and eps) */
    int warmup;           /* epochs of linear warmup before the schedule: lr * (e+1)/(warmup+1) */
    int aug_crop;         /* training batches: random crop after zero padding by aug_crop
                             on each side ([C, H, W] inputs only); 0: off */
    int aug_flip;         /* training batches: horizontal flip with probability 1/2 */
} cg_train_defaults;

struct cg_team;

typedef struct cg_net {
    int abi;               /* CG_ABI_VERSION */
    const char *name;
    const char *spec_file, *spec_hash, *generator_version;
    int in_ndim;           /* 1: [F], 2: [C, L], 3: [C, H, W] */
    int in_shape[3];
    size_t in_size;        /* floats per sample */
    size_t out_size;       /* floats per sample of the network output (before the loss) */
    int batch;             /* largest batch forward/backward accept (compile-time) */
    int loss;              /* enum cg_loss_kind */
    size_t n_params, n_buffers, workspace;
    size_t out_offset;     /* floats into ws: network output [N, out_size] */
    size_t dout_offset;    /* floats into ws: where the caller puts dLoss/dOutput [N, out_size] */
    int n_tensors;
    const cg_tensor *tensors;
    int n_layers;
    const cg_layer *layers;
    cg_train_defaults train;
    /* forward: x [N, in_size]; writes activations into ws (output at out_offset).
     * training != 0: batch norm uses batch statistics and updates the running buffers,
     * dropout draws its mask from a hash of `training` (the trainer passes a seed per
     * step; `check` passes 1); training = 0: running statistics, buffers untouched,
     * dropout is the identity. */
    void (*forward)(const float *params, float *buffers, const float *x, float *ws,
                    int n, int training);
    /* backward after a training forward with the same x and ws: reads dLoss/dOutput at
     * ws + dout_offset, accumulates parameter gradients into grads (+=), writes dLoss/dx
     * into dx [N, in_size] unless dx is NULL. */
    void (*backward)(const float *params, float *grads, const float *x, float *dx,
                     float *ws, int n);
    /* body(ctx, i) for every i in [0, n), in any order and on any of the generated code's
     * threads (an OpenMP loop when it was compiled with -fopenmp): the runtime, built
     * without OpenMP, runs its loops over independent pieces (the loss) on it. NULL: the
     * runtime runs them in order on the calling thread. */
    void (*parallel_for)(int n, void (*body)(void *ctx, int i), void *ctx);
    /* Team entry points (the generator's --team; NULL without it): forward and backward
     * of one replica of a team of threads that split a batch between them, each replica
     * with its own buffers and ws and its own slice of the batch (n of its samples).
     * Batch norm's training statistics are those of the whole team's batch: the replicas
     * meet at a cg_team_sync in every batch norm layer, so every member of the team must
     * make the same calls. team = NULL: the plain forward / backward. backward's grads
     * are the replica's part (its samples' sum); the caller adds the parts. */
    void (*forward_team)(const float *params, float *buffers, const float *x, float *ws,
                         int n, int training, struct cg_team *team);
    void (*backward_team)(const float *params, float *grads, const float *x, float *dx,
                          float *ws, int n, struct cg_team *team);
    /* body(ctx, rank) for rank 0..T-1 at once, each on its own thread of the generated
     * code's (OpenMP); 0, having run nothing, when T threads cannot be had */
    int (*team_run)(int T, void (*body)(void *ctx, int rank), void *ctx);
    size_t team_slot;      /* doubles one replica posts per cg_team_sync (cg_team_new) */
    int team;              /* replicas the code was generated for (--team T; 0 without):
                              batch is ceil(train.batch / team) */
    /* the threads the generated code's next parallel loops use: n > 0 sets them
     * (omp_set_num_threads); returns the count in force (1 without OpenMP). NULL (a
     * hand-written net): the trainer leaves its threads alone. */
    int (*threads)(int n);
    /* the layers' shared temporary region in ws (floats; 0, 0: none): what a layer's
     * pass uses and drops, nothing in it lives from one call of a layer to the next, so
     * `check` fills it with NaN between forward and backward to show it */
    size_t temp_offset, temp_size;
} cg_net;

/* ---- teams: threads that each run a replica of the network on part of a batch ----
 * (runtime/team.c). A team of `size` members shares two exchange buffers of
 * [size][slot] doubles; member `rank` writes its row of the current one, cg_team_sync
 * waits until every member has arrived, after which each reads every row. The next sync
 * uses the other buffer, so a member may write again while a slower one still reads the
 * last. The members are threads the caller creates (an OpenMP parallel region of `size`
 * threads, or pthreads); every member must reach every sync. */
typedef struct cg_team_shared cg_team_shared;
typedef struct cg_team {
    int rank, size;
    size_t slot;    /* doubles a row */
    unsigned phase; /* syncs this member has passed: picks the buffer */
    cg_team_shared *sh;
    int n0;         /* the first of this member's samples in the team's batch (dropout
                     * draws a sample's mask by its place there: one call's masks) */
} cg_team;

/* a team of size members with rows of slot doubles: members[0..size) filled in (rank r
 * in members[r]); NULL when out of memory or size < 1 */
cg_team_shared *cg_team_new(int size, size_t slot, cg_team *members);
void cg_team_free(cg_team_shared *sh);
/* the current exchange buffer, [size][slot] doubles: write row t->rank, sync, read */
double *cg_team_xch(const cg_team *t);
/* the team's barrier: returns when all members have called it (spins, then yields) */
void cg_team_sync(cg_team *t);

/* A network generated with --team T (net->team = T >= 2): the replicas' workspaces, and
 * the gradients and running statistics of replicas 1..T-1 (replica 0 uses the caller's). */
enum { CG_TEAM_MAX = 64 };
typedef struct cg_net_team {
    const struct cg_net *net;
    int size;
    cg_team members[CG_TEAM_MAX];
    cg_team_shared *sh;
    float *ws[CG_TEAM_MAX], *grads[CG_TEAM_MAX], *buffers[CG_TEAM_MAX];
} cg_net_team;
/* NULL, or why the team cannot be made (the net has none; out of memory exits) */
const char *cg_net_team_init(cg_net_team *t, const struct cg_net *net);
void cg_net_team_free(cg_net_team *t);
/* One training step's forward, loss and backward over x [n][in_size] (n <= size x
 * net->batch; training, the dropout seed, nonzero: 0 runs the forward alone), the
 * replicas splitting the samples in order: grads += the batch's
 * gradients, the mean loss's dLoss/dout scaled by dscale (a rank's share of a larger
 * batch, else 1); buffers: the running statistics, updated once; *loss_sum = the loss
 * summed over the n samples. Returns 0, or -1 when n is out of range or the generated
 * code could not have size threads (OMP_NUM_THREADS below the team, or no -fopenmp). */
int cg_net_team_step(cg_net_team *t, const float *params, float *grads, float *buffers, const float *x,
                     const void *target, int n, int training, float dscale, double *loss_sum);
/* The trainer's check on the team's code: as cg_net_team_step (dscale 1) for n from the
 * team's size to size x net->batch, also writing the outputs to out [n][out_size] and,
 * when dx is not NULL, dLoss/dx to dx [n][in_size]; training 0: the forward in inference
 * mode only (grads untouched). Returns 0, or -1 as cg_net_team_step. */
int cg_net_team_check(cg_net_team *t, const float *params, float *grads, float *buffers, const float *x,
                      const void *target, int n, int training, float *out, float *dx, double *loss_sum);

/* The most samples a training step takes: the compiled batch, or a team's (--team T:
 * T replicas of net->batch each). */
static inline int cg_net_step_batch(const cg_net *net)
{
    return net->team > 1 ? net->team * net->batch : net->batch;
}

/* ---- runtime API (libcnngen) ---- */

/* The trainer's command line: train / eval / predict / check / --help. */
int cg_main(const cg_net *net, int argc, char **argv);

/* Flush-to-zero and denormals-are-zero on x86 (MXCSR FTZ|DAZ) for the calling thread and
 * the threads it creates afterwards: flush=1 sets both (subnormal results and operands
 * become 0; the trainer's default, see runtime/fpenv.c), flush=0 clears both (IEEE
 * subnormals). Returns 1 where the mode exists (x86 with SSE), 0 where this is a no-op. */
int cg_flush_subnormals(int flush);

/* Loss over n samples of net output `out` [n, out_size]. target: int64 class indices for
 * CG_LOSS_SOFTMAX_CE (as const int64_t*), float [n, out_size] for CG_LOSS_MSE.
 * Returns the mean loss (PyTorch's reduction='mean'); writes dLoss/dout into dout
 * unless NULL. */
float cg_loss(int kind, const float *out, const void *target, float *dout, int n,
              size_t out_size);
/* The same for net's loss and output size, its pieces on net->parallel_for: the result
 * and dout are bitwise those of cg_loss, whatever the threads. */
float cg_net_loss(const cg_net *net, const float *out, const void *target, float *dout, int n);

/* Batch-innermost layout at a network's edges (runtime/lanes.c): x [nb][size] <->
 * xl [size][R] with R a multiple of 16, lanes nb..R-1 of xl zero. The _ref versions are
 * the scalar definitions the fast ones are tested against. */
void cg_to_lanes(const float *x, float *xl, int nb, size_t size, int R);
void cg_from_lanes(const float *xl, float *x, int nb, size_t size, int R);
void cg_to_lanes_ref(const float *x, float *xl, int nb, size_t size, int R);
void cg_from_lanes_ref(const float *xl, float *x, int nb, size_t size, int R);

/* Fill params/buffers with the net's default initialisation, seeded. */
void cg_init_params(const cg_net *net, float *params, float *buffers, uint64_t seed);

#ifdef __cplusplus
}
#endif

#endif
