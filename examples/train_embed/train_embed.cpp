// Training a cnngen network inside a C++ program (docs/embedding.md): the generated
// tiny.c is compiled as C with -DCNNGEN_NO_MAIN; tiny.h and the runtime headers declare
// everything extern "C". Built like train_embed.c, with c++ for this file:
//   c++ -O2 $(pkg-config --cflags cnngen) -Igen train_embed.cpp tiny.o
//       $(pkg-config --libs cnngen) -o train_embed_cpp          (one command line)
// A few SGD steps, then the weights saved to OUTDIR/cpp.npz (PyTorch state-dict names)
// and loaded back. Exits 1 if the loss does not go down or the weights do not round-trip.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "sgd.h"
#include "tiny.h"
#include "util.h"
#include "weights.h"

int main(int argc, char **argv)
{
    const std::string out = argc > 1 ? argv[1] : ".";
    const int n = 48, b = 16;
    std::vector<float> x(n * TINY_IN_SIZE);
    std::vector<int64_t> y(n);
    cg_rng r;
    cg_rng_seed(&r, 9);
    for (int i = 0; i < n; i++) { // class 0: a bright row, 1: a bright column, 2: the diagonal
        int c = i % 3, k = (int)cg_rng_below(&r, 8);
        for (int p = 0; p < 64; p++) {
            int on = c == 0 ? p / 8 == k : c == 1 ? p % 8 == k : p / 8 == p % 8;
            x[i * TINY_IN_SIZE + p] = 0.4f * cg_rng_uniform(&r) + (on ? 0.6f : 0.0f);
        }
        y[i] = c;
    }

    static float params[TINY_N_PARAMS_ALLOC], grads[TINY_N_PARAMS_ALLOC], vel[TINY_N_PARAMS_ALLOC];
    static float buffers[TINY_N_BUFFERS_ALLOC]; // TINY_N_BUFFERS is 0; a [0] array is not C++
    std::vector<float> ws(TINY_WORKSPACE);
    cg_init_params(&tiny_net, params, buffers, 1);
    float first = 0, last = 0;
    for (int s = 0; s < 30; s++) {
        const int at = s % (n / b) * b;
        std::memset(grads, 0, sizeof grads);
        tiny_forward(params, buffers, &x[at * TINY_IN_SIZE], ws.data(), b, 1);
        float loss = cg_loss(tiny_net.loss, ws.data() + TINY_OUT_OFFSET, &y[at],
                             ws.data() + TINY_DOUT_OFFSET, b, TINY_OUT_SIZE);
        tiny_backward(params, grads, &x[at * TINY_IN_SIZE], nullptr, ws.data(), b);
        cg_sgd_update(params, grads, vel, TINY_N_PARAMS, 0.05f, 0.9f, 0.0f);
        if (s == 0)
            first = loss;
        last = loss;
    }
    std::printf("c++: 30 steps of %d samples, loss %.4f at the first step, %.4f at the last\n", b,
                first, last);

    const std::string path = out + "/cpp.npz";
    cg_err err;
    static float back[TINY_N_PARAMS_ALLOC], back_buffers[TINY_N_BUFFERS_ALLOC];
    if (cg_weights_save(&tiny_net, path.c_str(), params, buffers, &err) != 0 ||
        cg_weights_load(&tiny_net, path.c_str(), back, back_buffers, &err) != 0) {
        std::fprintf(stderr, "train_embed_cpp: %s\n", err.msg);
        return 1;
    }
    const bool same = std::memcmp(back, params, sizeof params) == 0;
    std::printf("c++: weights saved to %s and loaded back %s\n", path.c_str(),
                same ? "unchanged" : "DIFFERENT");
    return last < first && same ? 0 : 1;
}
