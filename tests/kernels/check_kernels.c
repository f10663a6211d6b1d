/* The runtime's SIMD kernels against their scalar references, built once per variant
 * (tests/kernels/kernels.mk: AVX-512, AVX2, scalar, and tile16: the lanes conversions
 * with AVX-512's tile width in scalar code, for lanes past the last whole tile):
 *   sgd     cg_sgd_update == cg_sgd_update_ref bit for bit (no contraction in either)
 *   lanes   cg_to_lanes / cg_from_lanes == their _ref versions bit for bit, from_lanes
 *           inverts to_lanes and writes no sample past nb-1
 *   mse     cg_loss(MSE) within float rounding of a double sum, dout exact
 * VARIANT names the build in the messages. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnngen.h"
#include "sgd.h"

#ifndef VARIANT
#define VARIANT "?"
#endif

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

START_TEST(test_sgd_matches_reference)
{
    static const size_t ns[] = {1, 7, 16, 33, 1000, 65537};
    unsigned seed = 1;
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        size_t n = ns[k];
        float *p1 = malloc(n * sizeof(float)), *p2 = malloc(n * sizeof(float));
        float *v1 = malloc(n * sizeof(float)), *v2 = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
        ck_assert(p1 && p2 && v1 && v2 && g);
        for (size_t i = 0; i < n; i++) {
            p1[i] = p2[i] = frand(&seed);
            v1[i] = v2[i] = 0.1f * frand(&seed);
        }
        for (int step = 0; step < 3; step++) {
            for (size_t i = 0; i < n; i++)
                g[i] = frand(&seed);
            float mu = step == 2 ? 0.0f : 0.9f, wd = step == 1 ? 0.0f : 5e-4f;
            cg_sgd_update(p1, g, mu != 0.0f ? v1 : NULL, n, 0.05f, mu, wd);
            cg_sgd_update_ref(p2, g, mu != 0.0f ? v2 : NULL, n, 0.05f, mu, wd);
            ck_assert_msg(memcmp(p1, p2, n * sizeof(float)) == 0 && memcmp(v1, v2, n * sizeof(float)) == 0,
                          "%s (%s): sgd differs from the reference at n %zu, step %d", VARIANT,
                          cg_sgd_kernel_name(), n, step);
        }
        free(p1);
        free(p2);
        free(v1);
        free(v2);
        free(g);
    }
}
END_TEST

START_TEST(test_lanes_match_reference)
{
    static const size_t sizes[] = {1, 15, 16, 17, 784, 4704};
    static const int Rs[] = {8, 16, 24, 32, 64};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (size_t ri = 0; ri < sizeof Rs / sizeof *Rs; ri++) {
            size_t size = sizes[si], all = size * (size_t)Rs[ri];
            int R = Rs[ri];
            float *x = malloc(all * sizeof(float)), *a = malloc(all * sizeof(float)), *b = malloc(all * sizeof(float));
            ck_assert(x && a && b);
            for (size_t i = 0; i < all; i++)
                x[i] = (float)i;
            for (int nb = 1; nb <= R; nb += nb < 17 ? 1 : 5) {
                memset(a, 0xff, all * sizeof(float));
                memset(b, 0xff, all * sizeof(float));
                cg_to_lanes(x, a, nb, size, R);
                cg_to_lanes_ref(x, b, nb, size, R);
                ck_assert_msg(memcmp(a, b, all * sizeof(float)) == 0, "%s: to_lanes, size %zu R %d nb %d",
                              VARIANT, size, R, nb);
                for (size_t i = 0; i < all; i++)
                    b[i] = -1.0f;
                cg_from_lanes(a, b, nb, size, R);
                ck_assert_msg(memcmp(b, x, size * (size_t)nb * sizeof(float)) == 0,
                              "%s: from_lanes(to_lanes(x)) != x, size %zu R %d nb %d", VARIANT, size, R, nb);
                ck_assert_msg(nb == R || b[size * (size_t)nb] == -1.0f,
                              "%s: from_lanes wrote past sample nb-1, size %zu R %d nb %d", VARIANT, size, R, nb);
                cg_from_lanes_ref(a, b, nb, size, R);
                ck_assert_msg(memcmp(b, x, size * (size_t)nb * sizeof(float)) == 0,
                              "%s: from_lanes_ref(to_lanes(x)) != x, size %zu R %d nb %d", VARIANT, size, R, nb);
            }
            free(x);
            free(a);
            free(b);
        }
}
END_TEST

START_TEST(test_mse_matches_double)
{
    const int n = 29;
    const size_t m = 11113, N = (size_t)n * m;
    float *z = malloc(N * sizeof(float)), *t = malloc(N * sizeof(float)), *d = malloc(N * sizeof(float));
    ck_assert(z && t && d);
    unsigned seed = 7;
    double ref = 0.0;
    for (size_t i = 0; i < N; i++) {
        z[i] = 3.0f * frand(&seed);
        t[i] = frand(&seed);
        double e = (double)(z[i] - t[i]);
        ref += e * e;
    }
    ref /= (double)N;
    float l = cg_loss(CG_LOSS_MSE, z, t, d, n, m);
    ck_assert_msg(fabs(l - ref) <= 1e-6 * ref, "%s: MSE %.9g vs %.9g", VARIANT, l, ref);
    ck_assert_msg(cg_loss(CG_LOSS_MSE, z, t, NULL, n, m) == l, "%s: MSE without dout differs", VARIANT);
    float scale = (float)(2.0 / (double)N);
    for (size_t i = 0; i < N; i++)
        if (d[i] != (z[i] - t[i]) * scale)
            ck_abort_msg("%s: dout[%zu] = %g, expected %g", VARIANT, i, d[i], (z[i] - t[i]) * scale);
    free(z);
    free(t);
    free(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kernels " VARIANT);
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_sgd_matches_reference);
    tcase_add_test(tc, test_lanes_match_reference);
    tcase_add_test(tc, test_mse_matches_double);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
