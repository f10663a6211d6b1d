#include <math.h>

#include "cnngen.h"

#define MSE_BLOCK 1024    /* elements summed in float before a double add */

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
        /* blocks of MSE_BLOCK elements: float differences and 16 float partial sums per
         * block (vectorized), added to a double total */
        const float *t = target;
        size_t total_n = (size_t)n * out_size;
        size_t nblk = (total_n + MSE_BLOCK - 1) / MSE_BLOCK;
        float scale = (float)(2.0 / (double)total_n);
        for (size_t b = 0; b < nblk; b++) {
            size_t k0 = b * MSE_BLOCK, k1 = k0 + MSE_BLOCK < total_n ? k0 + MSE_BLOCK : total_n;
            float s[16] = {0};
            size_t k = k0;
            for (; k + 16 <= k1; k += 16)
                for (int l = 0; l < 16; l++) {
                    float d = out[k + l] - t[k + l];
                    s[l] += d * d;
                    if (dout)
                        dout[k + l] = d * scale;
                }
            for (; k < k1; k++) {
                float d = out[k] - t[k];
                s[0] += d * d;
                if (dout)
                    dout[k] = d * scale;
            }
            for (int l = 0; l < 16; l++)
                total += s[l];
        }
        return (float)(total / (double)total_n);
    }
    return NAN;
}
