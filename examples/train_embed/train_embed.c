/* Training a cnngen network inside your own C program (docs/embedding.md).
 *
 * tiny.c, generated from tiny.yaml, is compiled with -DCNNGEN_NO_MAIN and linked with
 * this file and libcnngen:
 *   cnngen tiny.yaml -o gen
 *   cc -O2 $(pkg-config --cflags cnngen) -DCNNGEN_NO_MAIN -c gen/tiny.c -o tiny.o
 *   cc -O2 $(pkg-config --cflags cnngen) -Igen train_embed.c tiny.o \
 *      $(pkg-config --libs cnngen) -o train_embed
 *   ./train_embed OUTDIR
 * Two ways to train: (1) a loop of your own over forward, loss, backward and the SGD
 * update, with every array statically sized from tiny.h; (2) the runtime's training loop,
 * cg_train, on an in-memory dataset (validation, early stopping, OUTDIR/final.npz).
 * Exits 1 if the loss does not go down. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sgd.h"   /* cg_sgd_update */
#include "tiny.h"  /* TINY_* sizes, tiny_forward, tiny_backward, tiny_net */
#include "train.h" /* cg_train, cg_dataset */

enum { N = 96, B = 16 }; /* samples, samples a step (at most TINY_BATCH) */

static float X[N * TINY_IN_SIZE];
static int64_t Y[N];
static _Alignas(64) float params[TINY_N_PARAMS_ALLOC], grads[TINY_N_PARAMS_ALLOC], vel[TINY_N_PARAMS_ALLOC];
static _Alignas(64) float buffers[TINY_N_BUFFERS_ALLOC]; /* TINY_N_BUFFERS is 0: no batch norm */
static _Alignas(64) float ws[TINY_WORKSPACE]; /* 64: see docs/embedding.md */

/* class 0: a bright row, 1: a bright column, 2: the diagonal; uniform noise */
static void make_data(void)
{
    cg_rng r;
    cg_rng_seed(&r, 5);
    for (int i = 0; i < N; i++) {
        int c = i % 3, k = (int)cg_rng_below(&r, 8);
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                int on = c == 0 ? y == k : c == 1 ? x == k : x == y;
                X[i * TINY_IN_SIZE + y * 8 + x] = 0.4f * cg_rng_uniform(&r) + (on ? 0.6f : 0.0f);
            }
        Y[i] = c;
    }
}

/* (1) one SGD step over samples [b, b + B): returns the batch's mean loss */
static float step(int b)
{
    memset(grads, 0, sizeof grads);
    tiny_forward(params, buffers, X + (size_t)b * TINY_IN_SIZE, ws, B, 1);
    float loss = cg_loss(tiny_net.loss, ws + TINY_OUT_OFFSET, Y + b, ws + TINY_DOUT_OFFSET, B,
                         TINY_OUT_SIZE); /* writes dLoss/dOutput where backward reads it */
    tiny_backward(params, grads, X + (size_t)b * TINY_IN_SIZE, NULL, ws, B);
    cg_sgd_update(params, grads, vel, TINY_N_PARAMS, 0.05f, 0.9f, 0.0f);
    return loss;
}

int main(int argc, char **argv)
{
    const char *out = argc > 1 ? argv[1] : "train_embed_out";
    make_data();

    cg_init_params(&tiny_net, params, buffers, 1);
    float first = 0, last = 0;
    for (int s = 0; s < 60; s++) {
        float l = step(s % (N / B) * B);
        if (s < N / B)
            first += l / (N / B);
        if (s >= 60 - N / B)
            last += l / (N / B);
    }
    printf("own loop: 60 steps of %d samples, mean loss %.4f over the first epoch, %.4f over "
           "the last\n", B, first, last);

    cg_dataset ds;
    memset(&ds, 0, sizeof ds);
    ds.n = N;
    ds.s_ndim = 3;
    ds.s_shape[0] = 1, ds.s_shape[1] = 8, ds.s_shape[2] = 8;
    ds.x_size = TINY_IN_SIZE;
    ds.x = X;
    ds.labels = Y;
    ds.n_classes = 3;
    cg_train_opts o;
    cg_train_opts_init(&o, &tiny_net); /* the spec's train: section */
    o.train_ds = &ds;
    o.h.val = 24; /* the last 24 samples validate */
    o.out = out;
    o.quiet = 1;
    o.plot = 0;
    cg_train_result res;
    cg_err err;
    if (cg_train(&tiny_net, &o, &res, &err) != 0) {
        fprintf(stderr, "train_embed: %s\n", err.msg);
        return 1;
    }
    printf("cg_train: %lld steps, %d epochs, last training loss %.4f, best validation "
           "accuracy %.4f; weights in %s/final.npz\n", res.steps, res.epochs_done,
           res.last_train_loss, res.best_val_acc, out);
    return last < first && res.last_train_loss < first ? 0 : 1;
}
