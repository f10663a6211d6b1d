/* classify: one Fashion-MNIST image (784 raw bytes, row-major 28x28) through the LeNet-5
 * exported by `cnngen specs/lenet5.yaml --inference --weights best.npz -o DIR` (`make embed`).
 * Build: cc -std=c99 -O2 -march=native -IDIR classify.c DIR/lenet5_infer.c -lm -o classify
 * usage: classify IMAGE.u8     (see the README: one image from the test set) */
#include <stdio.h>

#include "lenet5_infer.h"

static const char *const names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

int main(int argc, char **argv)
{
    unsigned char img[LENET5_INFER_IN_SIZE];
    float x[LENET5_INFER_IN_SIZE], p[LENET5_INFER_OUT_SIZE];
    FILE *f = argc == 2 ? fopen(argv[1], "rb") : NULL;
    if (!f || fread(img, 1, sizeof img, f) != sizeof img) {
        fprintf(stderr, "usage: classify IMAGE.u8 (784 bytes)\n");
        return 1;
    }
    fclose(f);
    for (int i = 0; i < LENET5_INFER_IN_SIZE; i++)
        x[i] = img[i] / 255.0f; /* the trainer's scaling of IDX images */
    lenet5_infer(x, 1, p);
    lenet5_softmax(p, 1, p);
    int best = 0;
    for (int k = 1; k < LENET5_INFER_OUT_SIZE; k++)
        if (p[k] > p[best])
            best = k;
    printf("%s (class %d, p = %.3f)\n", names[best], best, p[best]);
    return 0;
}
