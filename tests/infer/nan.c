/* NaN and Inf through the inference export (tests/infer/nan_net.yaml: relu, maxpool2d 2x2,
 * leaky_relu 0.1 on 2x4x4), compared with PyTorch's semantics: relu keeps NaN, max pooling
 * takes a NaN in its window, leaky_relu propagates it. Built by tests/infer/run.sh at batch
 * 1 and batch 16 (batch-innermost forms). */
#include <math.h>
#include <stdio.h>

#include "nan_net_infer.h"

#define N 17 /* more than one chunk of 16 */

static float ref_relu(float v) { return isnan(v) ? v : v > 0 ? v : 0.0f; }

int main(void)
{
    static float x[N][32], y[N][8];
    float one = 1.0f, big = 1e30f;
    for (int s = 0; s < N; s++)
        for (int i = 0; i < 32; i++) {
            x[s][i] = (float)((i * 7 + s * 3) % 11) - 5.0f;
            if ((i + s) % 9 == 1) x[s][i] = NAN;
            if ((i + s) % 13 == 3) x[s][i] = (big * big) * one; /* +inf */
            if ((i + s) % 17 == 5) x[s][i] = -(big * big);
        }
    if (nan_net_init(NULL, NULL) != 0 || nan_net_infer(&x[0][0], N, &y[0][0]) != 0) {
        fprintf(stderr, "nan: init/infer failed\n");
        return 1;
    }
    int bad = 0, nans = 0;
    for (int s = 0; s < N; s++)
        for (int c = 0; c < 2; c++)
            for (int oy = 0; oy < 2; oy++)
                for (int ox = 0; ox < 2; ox++) {
                    float m = -INFINITY;
                    for (int ky = 0; ky < 2; ky++)
                        for (int kx = 0; kx < 2; kx++) {
                            float v = ref_relu(x[s][c * 16 + (2 * oy + ky) * 4 + 2 * ox + kx]);
                            if (v > m || isnan(v)) m = v;
                        }
                    float want = m > 0 ? m : m * 0.1f, got = y[s][c * 4 + oy * 2 + ox];
                    nans += isnan(want);
                    if (isnan(want) ? !isnan(got) : got != want) {
                        if (!bad++) fprintf(stderr, "nan: sample %d output %d: got %g, PyTorch %g\n", s, c * 4 + oy * 2 + ox, got, want);
                    }
                }
    if (!nans) {
        fprintf(stderr, "nan: the test inputs reach no NaN output\n");
        return 1;
    }
    return bad ? 1 : 0;
}
