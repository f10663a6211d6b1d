#include "augment.h"

#include <string.h>

void cg_augment_seed(cg_rng *r, int seed, long long step)
{
    cg_rng_seed(r, (((uint64_t)(uint32_t)seed << 32) ^ (uint64_t)step) ^ 0xA0761D6478BD642Full);
}

void cg_augment_draw(cg_rng *r, int crop, int flip, int *oy, int *ox, int *fl)
{
    *oy = *ox = crop;
    *fl = 0;
    if (crop > 0) {
        *oy = (int)cg_rng_below(r, (uint64_t)(2 * crop + 1));
        *ox = (int)cg_rng_below(r, (uint64_t)(2 * crop + 1));
    }
    if (flip)
        *fl = (int)cg_rng_below(r, 2);
}

void cg_augment_sample(float *x, float *scratch, int C, int H, int W, int crop, int oy, int ox,
                       int fl)
{
    const int dy = oy - crop, dx = ox - crop; /* y[h][w'] = x[h + dy][w' + dx] */
    if (dy == 0 && dx == 0 && !fl)
        return;
    const size_t plane = (size_t)H * (size_t)W;
    memcpy(scratch, x, (size_t)C * plane * sizeof(float));
    /* w' (before the flip) reads a column inside x for w' in [lo, hi) */
    const int lo = dx < 0 ? -dx : 0, hi = dx > 0 ? W - dx : W;
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++) {
            float *y = x + (size_t)c * plane + (size_t)h * (size_t)W;
            const int sh = h + dy;
            if (sh < 0 || sh >= H || lo >= hi) {
                memset(y, 0, (size_t)W * sizeof(float));
                continue;
            }
            const float *row = scratch + (size_t)c * plane + (size_t)sh * (size_t)W;
            if (!fl) {
                memset(y, 0, (size_t)lo * sizeof(float));
                memcpy(y + lo, row + lo + dx, (size_t)(hi - lo) * sizeof(float));
                memset(y + hi, 0, (size_t)(W - hi) * sizeof(float));
            } else { /* y[w] = row[W-1-w]: w' = W-1-w in [lo, hi) <=> w in (W-1-hi, W-1-lo] */
                for (int w = 0; w < W - hi; w++)
                    y[w] = 0.0f;
                for (int w = W - hi; w < W - lo; w++)
                    y[w] = row[W - 1 - w + dx];
                for (int w = W - lo; w < W; w++)
                    y[w] = 0.0f;
            }
        }
}

void cg_augment_batch(float *x, float *scratch, int n, int C, int H, int W, int crop, int flip,
                      cg_rng *r)
{
    const size_t size = (size_t)C * (size_t)H * (size_t)W;
    for (int i = 0; i < n; i++) {
        int oy, ox, fl;
        cg_augment_draw(r, crop, flip, &oy, &ox, &fl);
        cg_augment_sample(x + (size_t)i * size, scratch, C, H, W, crop, oy, ox, fl);
    }
}
