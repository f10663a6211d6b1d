/* Teams (cnngen --team, cnngen.h's cg_team): the barrier and exchange buffers on their
 * own, and a team's replicas against one call of the plain entry points on the same
 * batch: outputs, every parameter gradient (the replicas' parts added), dLoss/dx, and the
 * batch-norm running statistics each replica keeps. The t_team_* test nets are generated
 * with --team (tests/tests.mk). */
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cnngen.h"
#include "data.h"
#include "sgd.h"
#include "train.h"
#include "util.h"
#include "weights.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_nets.h"

/* T threads, many rounds: each writes its row of the exchange buffer with values of its
 * rank and the round, syncs, and checks every row; a missing or late write is counted */
static long sync_round_errors(int T, int rounds)
{
    cg_team m[8];
    cg_team_shared *sh = cg_team_new(T, 5, m);
    ck_assert_ptr_nonnull(sh);
    long bad = 0;
    omp_set_dynamic(0);
#pragma omp parallel num_threads(T) reduction(+ : bad)
    {
        int r = omp_get_thread_num();
        if (omp_get_num_threads() != T)
            bad += 1000000;
        else
            for (int k = 0; k < rounds; k++) {
                double *x = cg_team_xch(&m[r]);
                for (int j = 0; j < 5; j++)
                    x[(size_t)r * 5 + (size_t)j] = 1000.0 * k + 10.0 * r + j;
                cg_team_sync(&m[r]);
                for (int t = 0; t < T; t++)
                    for (int j = 0; j < 5; j++)
                        bad += x[(size_t)t * 5 + (size_t)j] != 1000.0 * k + 10.0 * t + j;
            }
    }
    cg_team_free(sh);
    return bad;
}

START_TEST(test_team_sync)
{
    for (int T = 1; T <= 4; T++)
        ck_assert_msg(sync_round_errors(T, 3000) == 0, "team of %d: rows read before their sync", T);
}
END_TEST

START_TEST(test_team_new_rejects)
{
    cg_team m[1];
    ck_assert_ptr_null(cg_team_new(0, 4, m));
}
END_TEST

/* |a - b| <= atol + rtol |b| for all n; the worst index in *at */
static int close_all(const float *a, const float *b, size_t n, double rtol, double atol, size_t *at)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - (double)b[i]) <= atol + rtol * fabs((double)b[i]))) {
            *at = i;
            return 0;
        }
    return 1;
}

static void fill(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    cg_rng r;
    cg_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * cg_rng_uniform(&r);
}

/* one training step's forward, loss and backward: the plain entry points on nb samples,
 * then a team of T replicas on the same samples; compared */
static void team_vs_single(const char *name, int nb, int T, int training)
{
    const cg_net *net = test_net(name);
    ck_assert_ptr_nonnull(net->forward_team);
    ck_assert_int_gt(net->team_slot, 0);
    size_t P = net->n_params, NB = net->n_buffers + 1, in = net->in_size, out = net->out_size;
    float *params = calloc(P + 1, 4), *x = calloc((size_t)nb * in, 4);
    float *g1 = calloc(P + 1, 4), *b1 = calloc(NB, 4), *ws1 = calloc(net->workspace, 4);
    float *dx1 = calloc((size_t)nb * in, 4), *dxT = calloc((size_t)nb * in, 4), *yT = calloc((size_t)nb * out, 4);
    float *targets = calloc((size_t)nb * out, 4), *gsum = calloc(P + 1, 4);
    int64_t *labels = calloc((size_t)nb, sizeof(int64_t));
    float *gT[4], *bT[4], *wsT[4];
    cg_init_params(net, params, b1, 7);
    /* gamma and beta away from 1 and 0, so their gradients and uses are tested */
    for (int t = 0; t < net->n_tensors; t++) {
        const cg_tensor *tt = &net->tensors[t];
        if (tt->kind == CG_PARAM && !strcmp(net->layers[tt->layer].kind, "batchnorm"))
            fill(params + tt->offset, tt->size, 100 + (uint64_t)t, 0.5f, 1.5f);
    }
    fill(x, (size_t)nb * in, 3, -1.0f, 2.0f);
    fill(targets, (size_t)nb * out, 4, -1.0f, 1.0f);
    for (int i = 0; i < nb; i++)
        labels[i] = (i * 7) % (int)out;
    const void *tgt = net->loss == CG_LOSS_MSE ? (const void *)targets : (const void *)labels;
    for (int r = 0; r < T; r++) {
        gT[r] = calloc(P + 1, 4), bT[r] = calloc(NB, 4), wsT[r] = calloc(net->workspace, 4);
        memcpy(bT[r], b1, NB * 4);
    }

    net->forward(params, b1, x, ws1, nb, training);
    cg_loss(net->loss, ws1 + net->out_offset, tgt, ws1 + net->dout_offset, nb, out);
    net->backward(params, g1, x, dx1, ws1, nb);

    cg_team m[4];
    cg_team_shared *sh = cg_team_new(T, net->team_slot, m);
    ck_assert_ptr_nonnull(sh);
    int got = 0;
    omp_set_dynamic(0);
#pragma omp parallel num_threads(T)
    {
        int r = omp_get_thread_num();
#pragma omp single
        got = omp_get_num_threads();
        if (got == T) {
            int lo = nb * r / T, nr = nb * (r + 1) / T - lo;
            const float *xr = x + (size_t)lo * in;
            const void *tr = net->loss == CG_LOSS_MSE ? (const void *)(targets + (size_t)lo * out)
                                                      : (const void *)(labels + lo);
            float *dout = wsT[r] + net->dout_offset;
            m[r].n0 = lo; /* as cg_net_team_step sets it: dropout's masks are one call's */
            net->forward_team(params, bT[r], xr, wsT[r], nr, training, &m[r]);
            memcpy(yT + (size_t)lo * out, wsT[r] + net->out_offset, (size_t)nr * out * 4);
            cg_loss(net->loss, wsT[r] + net->out_offset, tr, dout, nr, out);
            cg_scale(dout, (size_t)nr * out, (float)nr / (float)nb);
            net->backward_team(params, gT[r], xr, dxT + (size_t)lo * in, wsT[r], nr, &m[r]);
        }
    }
    cg_team_free(sh);
    ck_assert_int_eq(got, T);
    for (int r = 0; r < T; r++)
        for (size_t i = 0; i < P; i++)
            gsum[i] += gT[r][i];

    size_t at = 0;
    ck_assert_msg(close_all(yT, ws1 + net->out_offset, (size_t)nb * out, 1e-4, 1e-5, &at),
                  "%s, team of %d: output %zu: %g, one call %g", name, T, at, yT[at], ws1[net->out_offset + at]);
    ck_assert_msg(close_all(gsum, g1, P, 1e-3, 1e-5, &at), "%s, team of %d: gradient %zu: %g, one call %g", name, T,
                  at, gsum[at], g1[at]);
    ck_assert_msg(close_all(dxT, dx1, (size_t)nb * in, 1e-3, 1e-6, &at), "%s, team of %d: dx %zu: %g, one call %g",
                  name, T, at, dxT[at], dx1[at]);
    for (int r = 0; r < T; r++)
        ck_assert_msg(close_all(bT[r], b1, NB - 1, 1e-5, 1e-6, &at),
                      "%s, team of %d: replica %d's buffer %zu: %g, one call %g", name, T, r, at, bT[r][at], b1[at]);
    /* the parameter gradients are not all zero (a test that can fail) */
    double gn = 0;
    for (size_t i = 0; i < P; i++)
        gn += fabs(g1[i]);
    ck_assert(gn > 1e-3);
    for (int r = 0; r < T; r++)
        free(gT[r]), free(bT[r]), free(wsT[r]);
    free(params), free(x), free(g1), free(b1), free(ws1), free(dx1), free(dxT), free(yT), free(targets), free(gsum);
    free(labels);
}

START_TEST(test_team_resbn)
{
    team_vs_single("t_team_resbn_ln", 17, 2, 1);
    team_vs_single("t_team_resbn_ln", 17, 3, 1);
    team_vs_single("t_team_resbn_ln", 9, 2, 1);
}
END_TEST

START_TEST(test_team_bn_cl)
{
    team_vs_single("t_team_bn_cl_ln", 20, 2, 1);
    team_vs_single("t_team_bn_cl_ln", 20, 4, 1);
}
END_TEST

/* dropout in a team: the replicas' masks are those of one call on the whole batch (a
 * sample's mask is drawn by its place in the team's batch), for three steps' seeds */
START_TEST(test_team_dropout)
{
    team_vs_single("t_team_drop_ln", 17, 2, 1);
    team_vs_single("t_team_drop_ln", 17, 2, 12345);
    team_vs_single("t_team_drop_ln", 11, 3, 7);
}
END_TEST

/* cg_net_team_check (the trainer's check on a team): every replica needs a sample and the
 * team's batch bounds n; within them its outputs and loss are one call's */
START_TEST(test_team_check)
{
    const cg_net *net = test_net("t_team_drop_ln");
    const int T = net->team, nb = T * net->batch;
    size_t P = net->n_params, NB = net->n_buffers + 1, in = net->in_size, out = net->out_size;
    float *params = calloc(P, 4), *b = calloc(NB, 4), *g = calloc(P, 4), *x = calloc((size_t)(nb + 1) * in, 4);
    float *y = calloc((size_t)(nb + 1) * out, 4), *dx = calloc((size_t)(nb + 1) * in, 4), *ws = calloc(net->workspace, 4);
    int64_t *labels = calloc((size_t)nb + 1, sizeof(int64_t));
    cg_init_params(net, params, b, 3);
    fill(x, (size_t)(nb + 1) * in, 5, -1.0f, 1.0f);
    cg_net_team tm;
    ck_assert_ptr_null(cg_net_team_init(&tm, net));
    double sum = -1;
    ck_assert_int_eq(cg_net_team_check(&tm, params, g, b, x, labels, T - 1, 1, y, dx, &sum), -1);
    ck_assert_int_eq(cg_net_team_check(&tm, params, g, b, x, labels, nb + 1, 1, y, dx, &sum), -1);
    ck_assert(sum == -1);
    /* inference mode on the whole batch: one call's outputs in the plain entry points'
     * samples (a replica's batch each) */
    ck_assert_int_eq(cg_net_team_check(&tm, params, g, b, x, labels, nb, 0, y, NULL, &sum), 0);
    double s1 = 0;
    size_t at = 0;
    for (int h = 0; h < T; h++) {
        net->forward(params, b, x + (size_t)h * net->batch * in, ws, net->batch, 0);
        ck_assert_msg(close_all(y + (size_t)h * net->batch * out, ws + net->out_offset, (size_t)net->batch * out,
                                1e-5, 1e-6, &at), "output %zu of part %d", at, h);
        s1 += (double)cg_loss(net->loss, ws + net->out_offset, labels + h * net->batch, ws + net->dout_offset,
                              net->batch, out) * net->batch;
    }
    ck_assert_msg(fabs(sum - s1) <= 1e-5 * fabs(s1), "loss sum %g, one call's %g", sum, s1);
    for (size_t i = 0; i < P; i++)
        ck_assert(g[i] == 0.0f); /* inference mode: the gradients untouched */
    cg_net_team_free(&tm);
    free(params), free(b), free(g), free(x), free(y), free(dx), free(ws), free(labels);
}
END_TEST

/* with team NULL the team entry points are the plain ones, bit for bit */
START_TEST(test_team_null_is_plain)
{
    const cg_net *net = test_net("t_team_resbn_ln");
    int nb = 17;
    size_t P = net->n_params, NB = net->n_buffers + 1;
    float *params = calloc(P, 4), *b1 = calloc(NB, 4), *b2 = calloc(NB, 4), *x = calloc((size_t)nb * net->in_size, 4);
    float *w1 = calloc(net->workspace, 4), *w2 = calloc(net->workspace, 4);
    cg_init_params(net, params, b1, 5);
    memcpy(b2, b1, NB * 4);
    fill(x, (size_t)nb * net->in_size, 9, 0.0f, 1.0f);
    net->forward(params, b1, x, w1, nb, 1);
    net->forward_team(params, b2, x, w2, nb, 1, NULL);
    ck_assert(!memcmp(w1 + net->out_offset, w2 + net->out_offset, (size_t)nb * net->out_size * 4));
    ck_assert(!memcmp(b1, b2, NB * 4));
    free(params), free(b1), free(b2), free(x), free(w1), free(w2);
}
END_TEST

/* The trainer on a team net (cg_train, runtime/train.c's cg_net_team_step): one
 * full-batch step over 18 samples, which the team splits 9 + 9, equals the plain entry
 * points' step over the 18 at once (SGD, no momentum: p - lr (g + wd p)); the running
 * statistics too. And a batch above the team's is refused. */
START_TEST(test_team_trainer_step)
{
    const cg_net *net = test_net("t_team_bn_cl_ln");
    enum { N = 18 };
    size_t P = net->n_params, NB = net->n_buffers, in = net->in_size, out = net->out_size;
    float *p0 = calloc(P, 4), *b0 = calloc(NB + 1, 4), *p1 = calloc(P, 4), *b1 = calloc(NB + 1, 4);
    float *g = calloc(P, 4), *ws = calloc(net->workspace, 4), *x = calloc(N * in, 4), *t = calloc(N * out, 4);
    cg_init_params(net, p0, b0, 3);
    fill(x, N * in, 21, -1.0f, 2.0f);
    fill(t, N * out, 22, -0.5f, 0.5f);
    char dir[] = "/tmp/cg_team_XXXXXX", init[600], fin[600];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(init, sizeof init, "%s/init.npz", dir);
    snprintf(fin, sizeof fin, "%s/final.npz", dir);
    cg_err e;
    ck_assert_msg(cg_weights_save(net, init, p0, b0, &e) == 0, "%s", e.msg);
    cg_dataset ds = {.n = N, .s_ndim = 2, .s_shape = {3, 7}, .x_size = in, .x = x, .targets = t, .t_size = out};
    cg_train_opts o;
    cg_train_opts_init(&o, net);
    ck_assert_int_eq(o.h.batch, 40); /* the team's batch: 2 x 20 */
    o.quiet = 1, o.plot = 0, o.h.val = 0, o.h.patience = 0;
    o.train_ds = &ds, o.init_weights = init, o.out = dir;
    o.h.mode = CG_MODE_FULL, o.h.epochs = 1, o.h.lr = 0.1f, o.h.momentum = 0.0f, o.h.weight_decay = 0.01f;
    o.h.schedule = CG_SCHED_CONSTANT, o.h.warmup = 0, o.h.normalize = 0;
    o.h.optimizer = CG_OPT_SGD;
    cg_train_result res;
    ck_assert_msg(cg_train(net, &o, &res, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(res.steps, 1);
    ck_assert_msg(cg_weights_load(net, fin, p1, b1, &e) == 0, "%s", e.msg);

    net->forward(p0, b0, x, ws, N, 1);
    cg_loss(net->loss, ws + net->out_offset, t, ws + net->dout_offset, N, out);
    net->backward(p0, g, x, NULL, ws, N);
    size_t at = 0;
    for (size_t i = 0; i < P; i++)
        g[i] = p0[i] - 0.1f * (g[i] + 0.01f * p0[i]);
    ck_assert_msg(close_all(p1, g, P, 1e-4, 1e-6, &at), "parameter %zu: trained %g, one call's step %g", at, p1[at],
                  g[at]);
    ck_assert_msg(close_all(b1, b0, NB, 1e-5, 1e-6, &at), "buffer %zu: trained %g, one call's %g", at, b1[at], b0[at]);

    o.h.mode = CG_MODE_MINIBATCH, o.h.batch = 41;
    ck_assert_int_ne(cg_train(net, &o, &res, &e), 0);
    ck_assert_msg(strstr(e.msg, "40"), "the refusal names the team's batch: %s", e.msg);

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    free(p0), free(b0), free(p1), free(b1), free(g), free(ws), free(x), free(t);
}
END_TEST

/* A team trainer killed after 3 steps and resumed from its checkpoint at step 2 ends
 * with the parameters and running statistics of the run that was not killed, bit for
 * bit (the replicas' statistics come back through the caller's buffers each step) */
START_TEST(test_team_kill_and_resume)
{
    const cg_net *net = test_net("t_team_bn_cl_ln");
    enum { N = 100 };
    size_t P = net->n_params, NB = net->n_buffers, in = net->in_size, out = net->out_size;
    float *x = calloc(N * in, 4), *t = calloc(N * out, 4);
    float *pa = calloc(P, 4), *ba = calloc(NB + 1, 4), *pb = calloc(P, 4), *bb = calloc(NB + 1, 4);
    fill(x, N * in, 31, -1.0f, 2.0f);
    fill(t, N * out, 32, -0.5f, 0.5f);
    cg_dataset ds = {.n = N, .s_ndim = 2, .s_shape = {3, 7}, .x_size = in, .x = x, .targets = t, .t_size = out};
    char dir[] = "/tmp/cg_team_XXXXXX", outd[2][600], fin[700];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    cg_train_result res[2];
    cg_err e;
    for (int run = 0; run < 2; run++) {
        snprintf(outd[run], sizeof outd[run], "%s/%c", dir, 'a' + run);
        ck_assert_int_eq(mkdir(outd[run], 0700), 0);
        cg_train_opts o;
        cg_train_opts_init(&o, net);
        o.quiet = 1, o.plot = 0, o.h.val = 20, o.h.patience = 0, o.h.seed = 5;
        o.train_ds = &ds, o.out = outd[run];
        o.h.mode = CG_MODE_MINIBATCH, o.h.order = CG_ORDER_SHUFFLE, o.h.batch = 40, o.h.epochs = 4;
        o.h.lr = 0.05f, o.h.momentum = 0.9f, o.h.checkpoint_every = 2;
        if (run == 1) {
            o.max_steps = 3;
            ck_assert_msg(cg_train(net, &o, &res[1], &e) == 0, "%s", e.msg);
            ck_assert(res[1].killed);
            o.max_steps = 0, o.resume = 1;
        }
        ck_assert_msg(cg_train(net, &o, &res[run], &e) == 0, "%s", e.msg);
        ck_assert(!res[run].killed);
    }
    ck_assert_int_eq(res[0].steps, 8); /* 80 training samples, 2 steps an epoch */
    ck_assert_int_eq(res[1].steps, res[0].steps);
    snprintf(fin, sizeof fin, "%s/final.npz", outd[0]);
    ck_assert_msg(cg_weights_load(net, fin, pa, ba, &e) == 0, "%s", e.msg);
    snprintf(fin, sizeof fin, "%s/final.npz", outd[1]);
    ck_assert_msg(cg_weights_load(net, fin, pb, bb, &e) == 0, "%s", e.msg);
    ck_assert_msg(!memcmp(pa, pb, P * 4), "resumed team run: parameters differ from the uninterrupted run's");
    ck_assert_msg(!memcmp(ba, bb, NB * 4), "resumed team run: running statistics differ from the uninterrupted run's");
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    free(x), free(t), free(pa), free(ba), free(pb), free(bb);
}
END_TEST

Suite *make_team_suite(void)
{
    Suite *s = suite_create("team");
    TCase *tc = tcase_create("team");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_team_sync);
    tcase_add_test(tc, test_team_new_rejects);
    tcase_add_test(tc, test_team_resbn);
    tcase_add_test(tc, test_team_bn_cl);
    tcase_add_test(tc, test_team_dropout);
    tcase_add_test(tc, test_team_check);
    tcase_add_test(tc, test_team_null_is_plain);
    tcase_add_test(tc, test_team_trainer_step);
    tcase_add_test(tc, test_team_kill_and_resume);
    suite_add_tcase(s, tc);
    return s;
}
