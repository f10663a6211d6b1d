/* libFuzzer harness: bytes -> a .npz -> cg_npz_read, and the npz consumers: cg_weights_load
 * (strict state_dict load into the test net t_train_bn), cg_npz_dataset_load (x, y) and
 * cg_norm_load (mean, std). Oracle: sanitizers; rejections name the file; a loaded npz has
 * distinct keys and arrays whose count is the product of their shape.
 * Input: first byte odd ('1'): the rest is the .npz file itself (the zip layer
 * gets fuzzed); even ('L'): the rest is a member list (fuzz_common.h) made a valid zip. */
#include "cnngen.h"
#include "data.h"
#include "fuzz_common.h"
#include "npy.h"
#include "weights.h"

extern const cg_net t_train_bn_net;

/* CG_FUZZ_LIST=FILE.npz: print FILE as a member list (for seeds) */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (getenv("CG_FUZZ_LIST")) {
        fputc('L', stdout);
        fz_npz_to_list(getenv("CG_FUZZ_LIST"), stdout);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const cg_net *net = &t_train_bn_net;
    const char *path = fz_path("in.npz");
    if (size == 0)
        return 0;
    if (data[0] & 1)
        fz_write(path, data + 1, size - 1);
    else if (fz_build_npz(path, data + 1, size - 1) < 0)
        return 0;
    cg_err e = {{0}};
    cg_npz z;
    if (cg_npz_read(path, &z, &e) == 0) {
        for (int i = 0; i < z.n; i++) {
            size_t count = 1;
            for (int d = 0; d < z.arrays[i].ndim; d++)
                count *= (size_t)z.arrays[i].shape[d];
            if (count != z.arrays[i].count)
                abort();
            for (int j = 0; j < i; j++)
                if (!strcmp(z.keys[i], z.keys[j]))
                    abort();
        }
        cg_npz_free(&z);
    } else {
        fz_check_msg(&e, path);
        return 0; /* the consumers read through cg_npz_read: nothing more to see */
    }
    static float params[4096], buffers[4096], mean[64], stdv[64];
    e.msg[0] = 0;
    if (cg_weights_load(net, path, params, buffers, &e) != 0)
        fz_check_msg(&e, path);
    cg_dataset ds;
    e.msg[0] = 0;
    if (cg_npz_dataset_load(path, &ds, &e) == 0) {
        if (ds.n == 0 || !ds.x || (!ds.labels && !ds.targets))
            abort();
        if (cg_dataset_check(&ds, net, "fuzz data", &e) != 0 && !e.msg[0])
            abort();
        cg_dataset_free(&ds);
    } else {
        fz_check_msg(&e, path);
    }
    e.msg[0] = 0;
    if (cg_norm_load(net, path, mean, stdv, &e) != 0)
        fz_check_msg(&e, path);
    return 0;
}
