/* libFuzzer harness: a member list (fuzz_common.h) -> OUT/checkpoint.npz, then cg_train(--resume) of the test net
 * t_train_bn on a fixed in-memory dataset for at most one step (max_steps 1: no final
 * files). Exercises the checkpoint reader (runtime/train.c checkpoint_read: config match,
 * array kinds and sizes, permutation, position counters) and what a resumed run does with
 * what it read. Oracle: sanitizers; a rejection names the checkpoint.
 *
 * CG_FUZZ_WRITE_SEED=PATH: instead of fuzzing, train with checkpoints and copy a valid
 * checkpoint to PATH as a member list (the seeds in tests/fuzz/checkpoint/). */
#include "cnngen.h"
#include "fuzz_common.h"
#include "train.h"

extern const cg_net t_train_bn_net;

enum { NS = 40 };
static float X[NS * 36];
static int64_t Y[NS];
static cg_dataset DS;

static void opts(cg_train_opts *o, const char *out)
{
    cg_train_opts_init(o, &t_train_bn_net);
    o->train_ds = &DS;
    o->out = out;
    o->quiet = 1;
    o->plot = 0;
    o->h.val = 8;
    o->h.epochs = 3;
    o->h.batch = 8;
    o->h.eval_every = 3;
    o->h.patience = 0;
    o->h.seed = 5;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cg_rng r;
    cg_rng_seed(&r, 3);
    for (int i = 0; i < NS; i++) {
        Y[i] = (int64_t)cg_rng_below(&r, 4);
        for (int k = 0; k < 36; k++)
            X[i * 36 + k] = cg_rng_uniform(&r) + (k % 4 == Y[i] ? 0.5f : 0.0f);
    }
    DS.n = NS;
    DS.s_ndim = 3;
    DS.s_shape[0] = 1;
    DS.s_shape[1] = 6;
    DS.s_shape[2] = 6;
    DS.x_size = 36;
    DS.x = X;
    DS.labels = Y;
    DS.n_classes = 4;
    const char *seed = getenv("CG_FUZZ_WRITE_SEED");
    if (seed) {
        cg_train_opts o;
        cg_train_result res;
        cg_err e;
        opts(&o, fz_path("seed"));
        o.h.checkpoint_every = 1;
        o.max_steps = atoi(getenv("CG_FUZZ_SEED_STEPS") ? getenv("CG_FUZZ_SEED_STEPS") : "5");
        if (cg_train(&t_train_bn_net, &o, &res, &e) != 0) {
            fprintf(stderr, "fuzz_checkpoint: %s\n", e.msg);
            exit(1);
        }
        FILE *f = fopen(seed, "wb");
        if (!f)
            exit(1);
        fz_npz_to_list(fz_path("seed/checkpoint.npz"), f);
        exit(fclose(f) == 0 ? 0 : 1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *out = fz_path("run");
    mkdir(out, 0777);
    const char *ck = fz_path("run/checkpoint.npz");
    if (fz_build_npz(ck, data, size) < 0)
        return 0;
    /* the log the checkpoint's byte count refers to: a header and a few rows */
    static const char logtext[] = "step,epoch,train_loss,val_loss,val_acc,lr,time_s\n"
                                  "3,0.75,1.4,1.3,0.25,0.05,0.001\n";
    fz_write(fz_path("run/log.csv"), (const uint8_t *)logtext, sizeof logtext - 1);
    cg_train_opts o;
    cg_train_result res;
    cg_err e = {{0}};
    opts(&o, out);
    o.resume = 1;
    o.max_steps = 1;
    if (cg_train(&t_train_bn_net, &o, &res, &e) != 0 && !e.msg[0]) {
        fprintf(stderr, "fuzz_checkpoint: failed without a message\n");
        abort();
    }
    return 0;
}
