/* Check suite for faults during training (runtime/train.c, diverge.c, npy.c writers):
 * divergence (huge learning rate, NaN in a data file) stops with the step and layer named,
 * the last good checkpoint kept and a non-zero exit; SIGKILL at random moments, repeatedly,
 * during steps and during checkpoint writing: the checkpoint always loads and the resumed
 * run ends with the uninterrupted run's weights bit for bit; a full disk (RLIMIT_FSIZE, and
 * a 64 KiB tmpfs when mounting is allowed) or a read-only output folder gives a clear error
 * and keeps the previous checkpoint. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cnngen.h"
#include "data.h"
#include "npy.h"
#include "train.h"
#include "util.h"
#include "weights.h"

Suite *make_faults_suite(void);
#include "test_nets.h"

static char fdir[256];

static void f_setup(void)
{
    snprintf(fdir, sizeof fdir, "/tmp/cg_fault_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(fdir));
}

static const char *fp(const char *name);
static void f_teardown(void)
{
    umount2(fp("mnt"), MNT_DETACH); /* test_disk_full_tmpfs, if it stopped early */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fdir);
    ck_assert_int_eq(system(cmd), 0);
}

static const char *fp(const char *name)
{
    static char buf[8][600];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", fdir, name);
    return buf[k];
}

/* t_train_bn: 1x6x6 inputs, 4 classes */
enum { NS = 96 };
static float X[NS * 36];
static int64_t Y[NS];
static cg_dataset DS;

static void make_data(void)
{
    cg_rng r;
    cg_rng_seed(&r, 11);
    for (int i = 0; i < NS; i++) {
        Y[i] = (int64_t)cg_rng_below(&r, 4);
        for (int k = 0; k < 36; k++)
            X[i * 36 + k] = cg_rng_uniform(&r) * 0.5f + (k % 4 == Y[i] ? 0.5f : 0.0f);
    }
    memset(&DS, 0, sizeof DS);
    DS.n = NS;
    DS.s_ndim = 3;
    DS.s_shape[0] = 1;
    DS.s_shape[1] = 6;
    DS.s_shape[2] = 6;
    DS.x_size = 36;
    DS.x = X;
    DS.labels = Y;
    DS.n_classes = 4;
}

static void opts(cg_train_opts *o, const cg_net *net, const char *out)
{
    static char outbuf[4][600];
    static int k;
    k = (k + 1) % 4;
    snprintf(outbuf[k], sizeof outbuf[k], "%s", fp(out));
    cg_train_opts_init(o, net);
    o->train_ds = &DS;
    o->out = outbuf[k];
    o->quiet = 1;
    o->plot = 0;
    o->h.val = 16;
    o->h.batch = 8;
    o->h.epochs = 12;
    o->h.lr = 0.05f;
    o->h.momentum = 0.9f;
    o->h.eval_every = 7;
    o->h.patience = 0;
    o->h.seed = 3;
    o->h.checkpoint_every = 1;
}

static void read_bytes(const char *path, unsigned char **b, size_t *n)
{
    cg_err e;
    ck_assert_msg(cg_read_file(path, b, n, &e) == 0, "%s", e.msg);
}

static int copy_file(const char *from, const char *to)
{
    unsigned char *b;
    size_t n;
    read_bytes(from, &b, &n);
    FILE *f = fopen(to, "wb");
    int ok = f && fwrite(b, 1, n, f) == n;
    if (f)
        ok &= fclose(f) == 0;
    free(b);
    return ok ? 0 : -1;
}

static void same_file(const char *a, const char *b)
{
    unsigned char *x, *y;
    size_t n, m;
    read_bytes(a, &x, &n);
    read_bytes(b, &y, &m);
    ck_assert_msg(n == m && memcmp(x, y, n) == 0, "%s and %s differ", a, b);
    free(x);
    free(y);
}

/* params + buffers of two weight files, bitwise */
static void same_weights(const cg_net *net, const char *a, const char *b)
{
    float *p1 = calloc(net->n_params, 4), *p2 = calloc(net->n_params, 4);
    float *b1 = calloc(net->n_buffers + 1, 4), *b2 = calloc(net->n_buffers + 1, 4);
    cg_err e;
    ck_assert_msg(cg_weights_load(net, a, p1, b1, &e) == 0, "%s", e.msg);
    ck_assert_msg(cg_weights_load(net, b, p2, b2, &e) == 0, "%s", e.msg);
    ck_assert_msg(memcmp(p1, p2, net->n_params * 4) == 0, "%s and %s: parameters differ", a, b);
    ck_assert_msg(memcmp(b1, b2, net->n_buffers * 4) == 0, "%s and %s: buffers differ", a, b);
    free(p1);
    free(p2);
    free(b1);
    free(b2);
}

/* files in dir whose name starts with prefix (temporary files left behind) */
static int count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/* a checkpoint is being written into dir (its checkpoint.npz.tmp.PID.N exists) */
static int ckpt_tmp_exists(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while (!n && (e = readdir(d)))
        n = strncmp(e->d_name, "checkpoint.npz.tmp.", 19) == 0;
    closedir(d);
    return n;
}

/* the checkpoint loads, its parameters are finite; returns its global step */
static long long checkpoint_step(const cg_net *net, const char *path)
{
    cg_npz z;
    cg_err e;
    ck_assert_msg(cg_npz_read(path, &z, &e) == 0, "checkpoint does not load: %s", e.msg);
    const cg_array *p = cg_npz_get(&z, "params"), *pos = cg_npz_get(&z, "pos");
    ck_assert(p && pos && p->count == net->n_params && pos->dtype == CG_I8);
    for (size_t i = 0; i < p->count; i++)
        ck_assert(isfinite(((const float *)p->data)[i]));
    long long g = ((const int64_t *)pos->data)[2]; /* POS_GSTEP */
    cg_npz_free(&z);
    return g;
}

/* ================================================================================== */
/* divergence: a learning rate of 1e30 */
START_TEST(test_diverge_huge_lr)
{
    const cg_net *net = test_net("t_train_bn");
    make_data();
    cg_train_opts o;
    cg_train_result res;
    cg_err e;
    opts(&o, net, "lr");
    o.h.lr = 1e30f;
    o.h.momentum = 0;
    ck_assert_int_eq(cg_train(net, &o, &res, &e), -1);
    ck_assert_msg(strstr(e.msg, "diverged at step ") && strstr(e.msg, "layer") &&
                      strstr(e.msg, "checkpoint is kept"), "%s", e.msg);
    long long bad = atoll(strstr(e.msg, "at step ") + 8);
    ck_assert_int_ge(bad, 2);
    /* the checkpoint is the one before the bad step, intact; no final files */
    ck_assert_int_eq(checkpoint_step(net, fp("lr/checkpoint.npz")), bad - 1);
    ck_assert_int_eq(access(fp("lr/final.npz"), F_OK), -1);
    ck_assert_int_eq(access(fp("lr/last.npz"), F_OK), -1);
    printf("faults: huge lr: %s\n", e.msg);
}
END_TEST

/* divergence from the data: one sample of a .npy file is NaN; through the CLI (exit 1) */
START_TEST(test_diverge_nan_data)
{
    const cg_net *net = test_net("t_train_bn");
    make_data();
    X[37 * 36 + 5] = NAN;
    cg_array x = {.dtype = CG_F4, .ndim = 4, .shape = {NS, 1, 6, 6}, .count = NS * 36, .data = X};
    cg_array y = {.dtype = CG_I8, .ndim = 1, .shape = {NS}, .count = NS, .data = Y};
    cg_err e;
    ck_assert_msg(cg_npy_write(fp("x.npy"), &x, &e) == 0, "%s", e.msg);
    ck_assert_msg(cg_npy_write(fp("y.npy"), &y, &e) == 0, "%s", e.msg);
    char *argv[] = {"t_train_bn", "train", "--data-x", (char *)fp("x.npy"), "--data-y",
                    (char *)fp("y.npy"), "--out", (char *)fp("nan"), "--val", "0",
                    "--checkpoint-every", "1", "--epochs", "3", "--quiet", "--no-plot", NULL};
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* stderr into a file to look at the message */
        FILE *f = freopen(fp("nan.err"), "w", stderr);
        int rc = f ? cg_main(net, (int)(sizeof argv / sizeof *argv) - 1, argv) : 99;
        fflush(NULL);
        _exit(rc);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 1);
    unsigned char *msg;
    size_t n;
    read_bytes(fp("nan.err"), &msg, &n);
    msg = realloc(msg, n + 1);
    msg[n] = 0;
    ck_assert_msg(strstr((char *)msg, "diverged at step") && strstr((char *)msg, "input batch"),
                  "%s", msg);
    printf("faults: NaN in x.npy: %s", msg);
    free(msg);
    /* sample 37 is in the first epoch: at most one epoch of checkpoints, all finite */
    if (access(fp("nan/checkpoint.npz"), F_OK) == 0)
        ck_assert_int_lt(checkpoint_step(net, fp("nan/checkpoint.npz")), 12);
}
END_TEST

/* ---- SIGKILL at random moments, again and again ---- */
static int exists(const char *p) { return access(p, F_OK) == 0; }

static void sleep_us(long us) { nanosleep(&(struct timespec){us / 1000000, us % 1000000 * 1000}, NULL); }

START_TEST(test_kill9_random_repeated)
{
    const cg_net *net = test_net("t_train_bn");
    make_data();
    cg_train_opts o;
    cg_train_result ra, rb;
    cg_err e;
    opts(&o, net, "a");
    o.h.epochs = 30;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_msg(cg_train(net, &o, &ra, &e) == 0, "%s", e.msg);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const long long total = ra.steps;
    /* random kills up to 1/12 of an uninterrupted run apart, so that a run interrupted
     * 8 times or more can't finish first however fast or loaded the machine is */
    long run_us = (long)((t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000);
    long max_sleep_us = run_us / 12 > 1000 ? run_us / 12 : 1000;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    if (getenv("CG_FAULT_SEED"))
        seed = (unsigned)atoi(getenv("CG_FAULT_SEED"));
    srand(seed);
    char ck[600], bdir[600];
    snprintf(ck, sizeof ck, "%s", fp("b/checkpoint.npz"));
    snprintf(bdir, sizeof bdir, "%s", fp("b"));
    int kills = 0, in_write = 0, done = 0;
    long long last = -1;
    for (int round = 0; round < 40 && kills < 16 && !done; round++) {
        opts(&o, net, "b");
        o.h.epochs = 30;
        o.resume = exists(ck);
        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
            _exit(cg_train(net, &o, &rb, &e) == 0 ? 0 : 3);
        /* odd rounds: kill while a checkpoint is being written (its .tmp exists);
         * even rounds: after a random time up to max_sleep_us */
        int aimed = round & 1;
        if (aimed) {
            for (int i = 0; i < 200000 && !ckpt_tmp_exists(bdir); i++)
                if (waitpid(pid, NULL, WNOHANG) == pid)
                    break;
        } else {
            sleep_us(rand() % max_sleep_us);
        }
        int was_writing = ckpt_tmp_exists(bdir);
        int st;
        if (kill(pid, SIGKILL) == 0)
            kills++;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st)) { /* finished before the kill */
            ck_assert_msg(WEXITSTATUS(st) == 0, "training failed (round %d)", round);
            done = 1;
            break;
        }
        in_write += was_writing;
        /* the latest checkpoint always loads and never goes back */
        if (exists(ck)) {
            long long g = checkpoint_step(net, ck);
            ck_assert_int_ge(g, last);
            last = g;
        }
    }
    if (!done) { /* the rest without kills */
        opts(&o, net, "b");
        o.h.epochs = 30;
        o.resume = exists(ck);
        ck_assert_msg(cg_train(net, &o, &rb, &e) == 0, "%s", e.msg);
        ck_assert_int_eq(rb.steps, total);
    }
    same_weights(net, fp("a/last.npz"), fp("b/last.npz"));
    same_weights(net, fp("a/final.npz"), fp("b/final.npz"));
    printf("faults: kill -9: %d kills (%d during a checkpoint write), seed %u, last checkpoint "
           "before the end at step %lld of %lld; resumed weights bitwise equal\n",
           kills, in_write, seed, last, total);
    ck_assert_int_ge(kills, 8);
}
END_TEST

/* ---- disk full: files limited to 1000 bytes (RLIMIT_FSIZE, SIGXFSZ ignored) ---- */
START_TEST(test_disk_full_rlimit)
{
    const cg_net *net = test_net("t_train_bn");
    make_data();
    cg_train_opts o;
    cg_train_result res;
    cg_err e;
    opts(&o, net, "a");
    o.h.val = 0; /* no best.npz: the first file written after the resume is a checkpoint */
    ck_assert_msg(cg_train(net, &o, &res, &e) == 0, "%s", e.msg); /* the reference */
    opts(&o, net, "full");
    o.h.val = 0;
    o.max_steps = 10;
    ck_assert_msg(cg_train(net, &o, &res, &e) == 0, "%s", e.msg);
    ck_assert(res.killed);
    ck_assert_msg(copy_file(fp("full/checkpoint.npz"), fp("saved.npz")) == 0, "copy");
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {1000, 1000};
        setrlimit(RLIMIT_FSIZE, &rl);
        FILE *f = fopen(fp("full.err"), "w");
        opts(&o, net, "full");
        o.h.val = 0;
        o.resume = 1;
        int rc = cg_train(net, &o, &res, &e);
        if (f) {
            fprintf(f, "%s\n", rc ? e.msg : "(no error)");
            fclose(f);
        }
        _exit(rc ? 1 : 0);
    }
    int st;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    unsigned char *msg;
    size_t n;
    read_bytes(fp("full.err"), &msg, &n);
    msg = realloc(msg, n + 1);
    msg[n] = 0;
    ck_assert_msg(strstr((char *)msg, fp("full/checkpoint.npz")) && strstr((char *)msg, "File too large"), "%s",
                  msg);
    printf("faults: disk full (RLIMIT_FSIZE): %s", msg);
    free(msg);
    /* the previous checkpoint is untouched, no temporary file is left */
    same_file(fp("saved.npz"), fp("full/checkpoint.npz"));
    ck_assert_int_eq(count_prefixed(fp("full"), "checkpoint.npz.tmp"), 0);
    /* with space again, resuming finishes with the uninterrupted weights */
    opts(&o, net, "full");
    o.h.val = 0;
    o.resume = 1;
    ck_assert_msg(cg_train(net, &o, &res, &e) == 0, "%s", e.msg);
    same_weights(net, fp("a/final.npz"), fp("full/final.npz"));
}
END_TEST

/* A tmpfs of the given size at fp("mnt"), or NULL (and a line saying the test named
 * `what` is skipped) where mounting is not allowed. */
static const char *mount_tmpfs(const char *size, const char *what)
{
    static char mnt[600]; /* fp()'s buffers rotate; the mount point outlives 8 calls */
    snprintf(mnt, sizeof mnt, "%s", fp("mnt"));
    ck_assert_int_eq(mkdir(mnt, 0777), 0);
    if (mount("cg_fault", mnt, "tmpfs", 0, size) != 0) {
        printf("faults: %s test skipped (mount: %s)\n", what, strerror(errno));
        return NULL;
    }
    return mnt;
}

/* ---- disk full for real: a 64 KiB tmpfs (skipped where mounting is not allowed) ---- */
START_TEST(test_disk_full_tmpfs)
{
    const cg_net *net = test_net("t_train_bn");
    make_data();
    const char *mnt = mount_tmpfs("size=64k", "tmpfs");
    if (!mnt)
        return;
    cg_train_opts o;
    cg_train_result res;
    cg_err e;
    opts(&o, net, "mnt/run");
    o.max_steps = 10;
    ck_assert_msg(cg_train(net, &o, &res, &e) == 0, "%s", e.msg);
    long long g = checkpoint_step(net, fp("mnt/run/checkpoint.npz"));
    ck_assert_int_eq(g, 10);
    /* fill the rest of the disk */
    FILE *f = fopen(fp("mnt/filler"), "wb");
    ck_assert_ptr_nonnull(f);
    static char junk[4096];
    while (fwrite(junk, 1, sizeof junk, f) == sizeof junk && fflush(f) == 0)
        ;
    fclose(f);
    opts(&o, net, "mnt/run");
    o.resume = 1;
    int rc = cg_train(net, &o, &res, &e);
    ck_assert_int_eq(rc, -1);
    printf("faults: disk full (64 KiB tmpfs): %s\n", e.msg);
    ck_assert_msg(strstr(e.msg, "space") || strstr(e.msg, "No space"), "%s", e.msg);
    ck_assert_int_eq(checkpoint_step(net, fp("mnt/run/checkpoint.npz")), 10);
    umount2(mnt, MNT_DETACH);
}
END_TEST

/* ---- unwritable output folder: the tmpfs remounted read-only (root ignores mode bits) ---- */
START_TEST(test_unwritable_readonly_mount)
{
    const cg_net *net = test_net("t_train_bn");
    make_data();
    const char *mnt = mount_tmpfs("size=1m", "read-only");
    if (!mnt)
        return;
    cg_train_opts o;
    cg_train_result res;
    cg_err e;
    opts(&o, net, "mnt/run");
    o.max_steps = 10;
    ck_assert_msg(cg_train(net, &o, &res, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(copy_file(fp("mnt/run/checkpoint.npz"), fp("saved.npz")), 0);
    ck_assert_int_eq(mount(NULL, mnt, NULL, MS_REMOUNT | MS_RDONLY, NULL), 0);
    opts(&o, net, "mnt/run");
    o.resume = 1;
    ck_assert_int_eq(cg_train(net, &o, &res, &e), -1);
    printf("faults: read-only output folder: %s\n", e.msg);
    ck_assert_msg(strstr(e.msg, "Read-only file system") && strstr(e.msg, fp("mnt/run/")), "%s",
                  e.msg);
    same_file(fp("saved.npz"), fp("mnt/run/checkpoint.npz"));
    umount2(mnt, MNT_DETACH);
}
END_TEST

/* found while writing tests/fuzz/fuzz_csv.c: a header after blank lines was taken as a
 * header when counting and as data when parsing */
START_TEST(test_csv_header_after_blank_line)
{
    FILE *f = fopen(fp("h.csv"), "w");
    ck_assert_ptr_nonnull(f);
    fputs("\n\nlabel,a,b\n0,1,2.5\n\n1,3,4.5\n", f);
    fclose(f);
    cg_dataset ds;
    cg_err e;
    ck_assert_msg(cg_csv_load(fp("h.csv"), &ds, &e) == 0, "%s", e.msg);
    ck_assert_uint_eq(ds.n, 2);
    ck_assert_uint_eq(ds.x_size, 2);
    ck_assert(ds.x[3] == 4.5f && ds.labels[1] == 1);
    cg_dataset_free(&ds);
}
END_TEST

Suite *make_faults_suite(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("faults");
    tcase_add_checked_fixture(tc, f_setup, f_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_diverge_huge_lr);
    tcase_add_test(tc, test_diverge_nan_data);
    tcase_add_test(tc, test_kill9_random_repeated);
    tcase_add_test(tc, test_disk_full_rlimit);
    tcase_add_test(tc, test_disk_full_tmpfs);
    tcase_add_test(tc, test_unwritable_readonly_mount);
    tcase_add_test(tc, test_csv_header_after_blank_line);
    suite_add_tcase(s, tc);
    return s;
}
