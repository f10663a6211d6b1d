#include <math.h>

#include "cnngen.h"

#define MSE_BLOCK 1024    /* elements summed in float before a double add */

/* One block of MSE: the sum of (z - t)^2 in 16 float partial sums (lane l takes the
 * elements i = l mod 16), and d = (z - t) * scale when d is not NULL. The loops have no
 * branch and restrict pointers, so they vectorize (with a test of d inside the loop and
 * d possibly aliasing z, gcc emitted scalar code: 12 % of a conv3_224 training step). */
static double mse_block(const float *restrict z, const float *restrict t, float *restrict d, size_t len,
                        float scale)
{
    float s[16] = {0};
    size_t k = 0;
    if (d) {
        for (; k + 16 <= len; k += 16)
            for (int l = 0; l < 16; l++) {
                float e = z[k + l] - t[k + l];
                s[l] += e * e;
                d[k + l] = e * scale;
            }
    } else {
        for (; k + 16 <= len; k += 16)
            for (int l = 0; l < 16; l++) {
                float e = z[k + l] - t[k + l];
                s[l] += e * e;
            }
    }
    for (; k < len; k++) {
        float e = z[k] - t[k];
        s[0] += e * e;
        if (d)
            d[k] = e * scale;
    }
    double total = 0.0;
    for (int l = 0; l < 16; l++)
        total += s[l];
    return total;
}

/* MSE in MSE_CHUNKS fixed pieces of whole blocks (fixed by the size alone, not by the
 * threads), each summed in order into a double, then the pieces in order: cg_loss runs
 * them one after the other, cg_net_loss on the net's threads, to the same bits. */
#define MSE_CHUNKS 64
typedef struct {
    const float *z, *t;
    float *d;
    size_t total_n;
    float scale;
    double part[MSE_CHUNKS];
} mse_job;

static void mse_chunk(void *ctx, int c)
{
    mse_job *j = ctx;
    size_t nblk = (j->total_n + MSE_BLOCK - 1) / MSE_BLOCK;
    size_t b0 = nblk * (size_t)c / MSE_CHUNKS, b1 = nblk * (size_t)(c + 1) / MSE_CHUNKS;
    double s = 0.0;
    for (size_t b = b0; b < b1; b++) {
        size_t k0 = b * MSE_BLOCK;
        size_t len = j->total_n - k0 < MSE_BLOCK ? j->total_n - k0 : MSE_BLOCK;
        s += mse_block(j->z + k0, j->t + k0, j->d ? j->d + k0 : NULL, len, j->scale);
    }
    j->part[c] = s;
}

/* MSE over total_n > 0 values, the pieces on pfor (NULL: in order, here) */
static float mse(const float *out, const float *t, float *dout, size_t total_n,
                 void (*pfor)(int n, void (*body)(void *ctx, int i), void *ctx))
{
    mse_job job = {out, t, dout, total_n, (float)(2.0 / (double)total_n), {0}};
    if (pfor)
        pfor(MSE_CHUNKS, mse_chunk, &job);
    else
        for (int c = 0; c < MSE_CHUNKS; c++)
            mse_chunk(&job, c);
    double total = 0.0;
    for (int c = 0; c < MSE_CHUNKS; c++)
        total += job.part[c];
    return (float)(total / (double)total_n);
}

float cg_net_loss(const cg_net *net, const float *out, const void *target, float *dout, int n)
{
    if (net->loss != CG_LOSS_MSE || n <= 0 || net->out_size == 0)
        return cg_loss(net->loss, out, target, dout, n, net->out_size);
    return mse(out, target, dout, (size_t)n * net->out_size, net->parallel_for);
}

/* Softmax cross-entropy: mean_n(logsumexp(z) - z[t]); dout = (softmax - onehot) / n.
 * MSE: mean over n*out_size of (z - t)^2; dout = 2 (z - t) / (n * out_size).
 * Accumulates in double. Class indices out of [0, out_size) are the caller's to reject;
 * here they make the result NaN (and that sample's dout NaN) rather than read out of bounds. */
float cg_loss(int kind, const float *out, const void *target, float *dout, int n,
              size_t out_size)
{
    if (n <= 0 || out_size == 0)
        return 0.0f;
    double total = 0.0;
    if (kind == CG_LOSS_SOFTMAX_CE) {
        const int64_t *t = target;
        double inv_n = 1.0 / n;
        for (int i = 0; i < n; i++) {
            const float *z = out + (size_t)i * out_size;
            double m = z[0];
            for (size_t j = 1; j < out_size; j++)
                if (z[j] > m)
                    m = z[j];
            double s = 0.0;
            for (size_t j = 0; j < out_size; j++)
                s += exp((double)z[j] - m);
            double lse = m + log(s);
            int ok = t[i] >= 0 && (uint64_t)t[i] < out_size;
            total += ok ? lse - z[t[i]] : NAN;
            if (dout) {
                float *d = dout + (size_t)i * out_size;
                for (size_t j = 0; j < out_size; j++) {
                    double p = exp((double)z[j] - lse);
                    d[j] = ok ? (float)((p - ((int64_t)j == t[i])) * inv_n) : NAN;
                }
            }
        }
        return (float)(total * inv_n);
    }
    if (kind == CG_LOSS_MSE) {
        return mse(out, target, dout, (size_t)n * out_size, NULL);
    }
    return NAN;
}
