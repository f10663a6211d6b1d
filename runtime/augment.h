/* cnngen runtime: data augmentation of training batches (train.augment in the spec):
 * random crop after zero padding and horizontal flip of [C, H, W] samples, as
 * torchvision's RandomCrop(size, padding=crop) followed by RandomHorizontalFlip(0.5).
 *
 * The draws of step g come from their own xoshiro256** stream, seeded from the run's seed
 * and g alone (cg_augment_seed), so a step's augmentation does not depend on what ran
 * before it and --resume needs no augmentation state. Per sample, in batch order:
 *   oy = below(2*crop + 1), ox = below(2*crop + 1)   (only when crop > 0)
 *   fl = below(2)                                    (only when flip)
 * and the sample becomes y[c][h][w] = x[c][h + oy - crop][w' + ox - crop] with
 * w' = fl ? W-1-w : w, and 0 where that index is outside x (the zero padding). */
#ifndef CG_AUGMENT_H
#define CG_AUGMENT_H

#include <stdint.h>

#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The stream of global step `step` (0-based) of a run with seed `seed`:
 * cg_rng_seed(r, ((uint64_t)(uint32_t)seed << 32 ^ (uint64_t)step) ^ 0xA0761D6478BD642F). */
void cg_augment_seed(cg_rng *r, int seed, long long step);
/* One sample's draws, in the order above (oy = ox = crop when crop == 0, fl = 0 without flip). */
void cg_augment_draw(cg_rng *r, int crop, int flip, int *oy, int *ox, int *fl);
/* Transform one sample x [C, H, W] in place with the given draws; scratch [C*H*W]. */
void cg_augment_sample(float *x, float *scratch, int C, int H, int W, int crop, int oy, int ox,
                       int fl);
/* Draw and transform n samples x [n, C, H, W] in batch order. */
void cg_augment_batch(float *x, float *scratch, int n, int C, int H, int W, int crop, int flip,
                      cg_rng *r);

#ifdef __cplusplus
}
#endif

#endif
