/* cnngen runtime: the training loop (modes, sample orders, schedules, early stopping,
 * log.csv / curve.png, checkpoints and resume), callable in-process. cg_main only parses
 * the command line into a cg_train_opts. */
#ifndef CG_TRAIN_H
#define CG_TRAIN_H

#include "cnngen.h"
#include "data.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cg_train_opts {
    cg_train_defaults h;             /* hyperparameters; cg_train_opts_init copies net->train */
    const char *data;                /* directory, .npz or .csv; NULL: the default dataset */
    const char *data_x, *data_y;     /* .npy / IDX pair instead of data */
    const char *test;                /* test set file (.npz / .csv) or directory */
    const char *test_x, *test_y;     /* test set pair */
    const cg_dataset *train_ds;      /* in-memory data instead of files (not modified) */
    const cg_dataset *test_ds;       /* optional, with train_ds */
    const char *out;                 /* output directory; NULL: "." */
    const char *init_weights;        /* start from these weights instead of the seeded init */
    int resume;                      /* continue from OUT/checkpoint.npz */
    long long max_steps;             /* stop after this many steps of this process, as if
                                        killed (no final files); 0: no limit */
    int progress;                    /* -1: a \r-updated line if stdout is a TTY, else plain
                                        lines; 0: plain lines; 1: \r line */
    int quiet;                       /* print nothing (errors are returned) */
    int plot;                        /* 1: curve.png through gnuplot when it is installed */
    int threads;                     /* the generated code's threads: T > 0 fixed; 0: OpenMP's
                                        default, or 1 whenever 1 ran the last steps faster */
} cg_train_opts;

typedef struct cg_train_result {
    long long steps;                 /* global steps done (all processes) */
    int epochs_done;
    int stopped_early;               /* patience ran out */
    int killed;                      /* max_steps reached */
    int evals;
    double best_val_loss, best_val_acc, best_epoch; /* NAN without validation data */
    long long best_step;
    double test_loss, test_acc;      /* of the restored best (NAN without a test set) */
    double last_train_loss;
    size_t n_train, n_val, n_test;
} cg_train_result;

/* Defaults: net->train (a zeroed train section means the compiler's defaults), output ".",
 * automatic progress, plots on. */
void cg_train_opts_init(cg_train_opts *o, const cg_net *net);

/* Train. Writes OUT/log.csv, OUT/best.npz (when there is validation data), OUT/last.npz
 * (weights after the last step), OUT/final.npz (the weights the run ends with: the best
 * ones restored when there is validation data), OUT/normalize.npz (with h.normalize),
 * OUT/checkpoint.npz (with h.checkpoint_every), OUT/curve.png. Returns 0 or -1 (err set). */
int cg_train(const cg_net *net, const cg_train_opts *o, cg_train_result *res, cg_err *err);

/* Inference-mode loss and accuracy (NAN without labels) over ds in chunks of net->batch;
 * xb [batch * in_size], yb [batch], tb [batch * out_size] (MSE) are scratch. */
void cg_evaluate(const cg_net *net, const float *params, float *buffers, float *ws,
                 const cg_dataset *ds, float *xb, int64_t *yb, float *tb, double *loss,
                 double *acc);

/* cg_evaluate, and with labels the counts confusion[true class * out_size + predicted class]
 * (argmax of the output) added into confusion [out_size * out_size] unless it is NULL. */
void cg_evaluate_confusion(const cg_net *net, const float *params, float *buffers, float *ws,
                           const cg_dataset *ds, float *xb, int64_t *yb, float *tb,
                           double *loss, double *acc, size_t *confusion);

/* Smallest batch a training-mode forward accepts: 2 if a batch norm normalizes a single
 * value per channel and sample (rank-1 input or a 1x1 map), else 1. */
int cg_min_train_batch(const cg_net *net);

#ifdef __cplusplus
}
#endif

#endif
