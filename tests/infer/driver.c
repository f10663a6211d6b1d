/* tests/infer/driver.c: runs an exported NAME_infer on DIR/X.bin and writes OUT (raw
 * float32), for tests/infer/run.sh. Written in the common subset of C99 and C++ (it is
 * also built as C++ against the C-compiled export). Build with -DNET=name -DNETUP=NAME
 * -DINFER_H='"name_infer.h"' and -DWITH_INIT when the export takes NAME_init.
 * usage: driver DIR OUT N */
#include <stdio.h>
#include <stdlib.h>

#include INFER_H

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(s) CAT(NET, s)
#define MAC(s) CAT(NETUP, s)

static float *read_floats(const char *dir, const char *name, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    float *p = (float *)malloc((n ? n : 1) * sizeof(float));
    FILE *f = fopen(path, "rb");
    if (!p || !f || fread(p, sizeof(float), n, f) != n || fgetc(f) != EOF) {
        fprintf(stderr, "driver: %s: cannot read %zu floats\n", path, n);
        exit(1);
    }
    fclose(f);
    return p;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: driver DIR OUT N\n");
        return 2;
    }
    int n = atoi(argv[3]);
    float *x = read_floats(argv[1], "X.bin", (size_t)n * MAC(_INFER_IN_SIZE));
    float *y = (float *)calloc((size_t)n * MAC(_INFER_OUT_SIZE) + 1, sizeof(float));
#ifdef WITH_INIT
    if (FN(_infer)(x, n, y) != -1) {
        fprintf(stderr, "driver: infer before init did not fail\n");
        return 1;
    }
    float *p = read_floats(argv[1], "P.bin", MAC(_INFER_N_PARAMS));
    float *b = read_floats(argv[1], "B.bin", MAC(_INFER_N_BUFFERS));
    if (FN(_init)(p, b) != 0) {
        fprintf(stderr, "driver: init failed\n");
        return 1;
    }
    free(p);
    free(b);
#endif
    if (FN(_infer)(x, -1, y) != -1 || FN(_infer)(x, 0, y) != 0 || FN(_infer)(x, n, y) != 0) {
        fprintf(stderr, "driver: infer's return values are wrong\n");
        return 1;
    }
    FILE *f = fopen(argv[2], "wb");
    if (!f || fwrite(y, sizeof(float), (size_t)n * MAC(_INFER_OUT_SIZE), f) != (size_t)n * MAC(_INFER_OUT_SIZE) ||
        fclose(f) != 0) {
        fprintf(stderr, "driver: cannot write %s\n", argv[2]);
        return 1;
    }
    free(x);
    free(y);
    return 0;
}
