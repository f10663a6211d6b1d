/* libFuzzer harness: bytes (IDX, plain or gzip) -> cg_idx_read_array, cg_array_file_read
 * (.npy or IDX by content) and cg_idx_read (the MNIST uint8 reader, rank 1 and 3).
 * Oracle: sanitizers; rejections name the file; accepted arrays have count = shape product. */
#include "data.h"
#include "fuzz_common.h"
#include "npy.h"

static void check_array(const cg_array *a)
{
    size_t count = 1;
    for (int d = 0; d < a->ndim; d++)
        count *= (size_t)a->shape[d];
    if (count != a->count) {
        fprintf(stderr, "fuzz_idx: count %zu vs shape product %zu\n", a->count, count);
        abort();
    }
    double s = 0;
    for (size_t i = 0; i < a->count; i++)
        s += cg_array_get(a, i);
    (void)s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_path("in.idx");
    fz_write(path, data, size);
    cg_array a;
    cg_err e = {{0}};
    if (cg_idx_read_array(path, &a, &e) == 0) {
        check_array(&a);
        cg_array_free(&a);
    } else {
        fz_check_msg(&e, path);
    }
    e.msg[0] = 0;
    if (cg_array_file_read(path, &a, &e) == 0) {
        check_array(&a);
        cg_array_free(&a);
    } else {
        fz_check_msg(&e, path);
    }
    for (int ndim = 1; ndim <= 3; ndim += 2) {
        int64_t dims[3];
        uint8_t *bytes = NULL;
        e.msg[0] = 0;
        if (cg_idx_read(path, ndim, dims, &bytes, &e) == 0) {
            size_t n = 1;
            for (int d = 0; d < ndim; d++)
                n *= (size_t)dims[d];
            unsigned s = 0;
            for (size_t i = 0; i < n; i++)
                s += bytes[i];
            (void)s;
            free(bytes);
        } else {
            fz_check_msg(&e, path);
        }
    }
    return 0;
}
