/* libFuzzer harness: bytes -> cg_npy_parse (the .npy reader under npz, weights, checkpoints
 * and data files). Oracle: sanitizers; an accepted array has count = product of its shape,
 * converts to float32, and re-encodes to an image that parses to the same array. */
#include "fuzz_common.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cg_array a;
    cg_err e = {{0}};
    memset(&a, 0, sizeof a);
    if (cg_npy_parse(data, size, "fuzz.npy", &a, &e) != 0) {
        fz_check_msg(&e, "fuzz.npy");
        return 0;
    }
    size_t count = 1;
    for (int d = 0; d < a.ndim; d++)
        count *= (size_t)a.shape[d];
    if (a.ndim < 0 || a.ndim > CG_NPY_MAXDIM || count != a.count) {
        fprintf(stderr, "fuzz_npy: ndim %d, count %zu vs shape product %zu\n", a.ndim, a.count, count);
        abort();
    }
    double s = 0;
    for (size_t i = 0; i < a.count; i++)
        s += cg_array_get(&a, i);
    (void)s;
    unsigned char *img;
    size_t len;
    if (cg_npy_encode(&a, &img, &len, &e) != 0) {
        fprintf(stderr, "fuzz_npy: cannot re-encode an accepted array: %s\n", e.msg);
        abort();
    }
    cg_array b;
    if (cg_npy_parse(img, len, "re.npy", &b, &e) != 0) {
        fprintf(stderr, "fuzz_npy: re-encoded array does not parse: %s\n", e.msg);
        abort();
    }
    size_t bytes = a.count * cg_dtype_size(a.dtype);
    if (b.dtype != a.dtype || b.ndim != a.ndim || b.count != a.count ||
        memcmp(b.shape, a.shape, sizeof a.shape[0] * (size_t)a.ndim) != 0 ||
        (bytes && memcmp(a.data, b.data, bytes) != 0)) {
        fprintf(stderr, "fuzz_npy: round trip changed the array\n");
        abort();
    }
    cg_array_free(&b);
    free(img);
    if (cg_array_to_f32(&a, "fuzz.npy", &e) != 0)
        fz_check_msg(&e, "fuzz.npy");
    cg_array_free(&a);
    return 0;
}
