/* libFuzzer harness: bytes -> cg_csv_load (label first, then features; optional header),
 * then the dataset's invariants: n samples of x_size floats, labels in [0, n_classes);
 * and cg_csv_load_inputs (predict's reader) for a width taken from the input's first byte:
 * x_size is that width, labels only with one more field. */
#include <math.h>

#include "data.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_path("in.csv");
    fz_write(path, data, size);
    cg_dataset ds;
    cg_err e = {{0}};
    if (cg_csv_load(path, &ds, &e) != 0) {
        fz_check_msg(&e, path);
        return 0;
    }
    if (ds.n == 0 || ds.x_size == 0 || !ds.x || (!ds.labels && !ds.targets)) {
        fprintf(stderr, "fuzz_csv: accepted an empty or label-less dataset (n %zu, x_size %zu)\n",
                ds.n, ds.x_size);
        abort();
    }
    double s = 0;
    for (size_t i = 0; i < ds.n * ds.x_size; i++)
        s += ds.x[i];
    (void)s;
    if (ds.labels)
        for (size_t i = 0; i < ds.n; i++)
            if (ds.labels[i] < 0 || ds.labels[i] >= ds.n_classes) {
                fprintf(stderr, "fuzz_csv: label %lld outside [0, %d)\n", (long long)ds.labels[i],
                        ds.n_classes);
                abort();
            }
    cg_dataset_free(&ds);
    const size_t want = size ? (size_t)(data[0] % 8) + 1 : 1;
    if (cg_csv_load_inputs(path, want, &ds, &e) != 0) {
        fz_check_msg(&e, path);
        return 0;
    }
    if (ds.n == 0 || ds.x_size != want || !ds.x) {
        fprintf(stderr, "fuzz_csv: inputs of width %zu read as n %zu, x_size %zu\n", want, ds.n,
                ds.x_size);
        abort();
    }
    cg_dataset_free(&ds);
    return 0;
}
