/* Check suite for runtime/comm.c: the shards of a batch across data-parallel ranks and the
 * single-process communicator a trainer linked without MPI gets. */
#include <check.h>
#include <stdlib.h>

#include "comm.h"

Suite *make_comm_suite(void);

/* the shards of n over size ranks tile [0, n) in rank order, sizes differ by at most 1,
 * the larger ones first */
START_TEST(test_comm_shard_tiles)
{
    for (size_t n = 0; n <= 70; n++)
        for (int size = 1; size <= 9; size++) {
            size_t next = 0, first = 0;
            for (int r = 0; r < size; r++) {
                size_t lo, hi;
                cg_comm_shard(n, r, size, &lo, &hi);
                ck_assert_uint_eq(lo, next);
                ck_assert_uint_ge(hi, lo);
                if (r == 0)
                    first = hi - lo;
                ck_assert_uint_le(hi - lo, first);
                ck_assert_uint_ge(hi - lo + 1, first);
                next = hi;
            }
            ck_assert_uint_eq(next, n);
        }
    size_t lo, hi;
    cg_comm_shard(64, 1, 2, &lo, &hi);
    ck_assert_uint_eq(lo, 32);
    ck_assert_uint_eq(hi, 64);
    cg_comm_shard(10, 2, 4, &lo, &hi); /* 3 3 2 2 */
    ck_assert_uint_eq(lo, 6);
    ck_assert_uint_eq(hi, 8);
}
END_TEST

/* without MPI linked in: one rank, and the collectives leave the data as it is */
START_TEST(test_comm_single_process)
{
    const cg_comm *c = cg_comm_world();
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(c->rank, 0);
    ck_assert_int_eq(c->size, 1);
    float f[3] = {1.5f, -2.0f, 3.25f};
    double d[2] = {0.1, 7.0};
    int stop = 1;
    c->sum_f32(c, f, 3);
    c->sum_f64(c, d, 2);
    c->bcast(c, &stop, sizeof stop);
    ck_assert(f[0] == 1.5f && f[1] == -2.0f && f[2] == 3.25f);
    ck_assert(d[0] == 0.1 && d[1] == 7.0);
    ck_assert_int_eq(stop, 1);
    ck_assert_ptr_eq(cg_comm_world(), c);
}
END_TEST

Suite *make_comm_suite(void)
{
    Suite *s = suite_create("comm");
    TCase *tc = tcase_create("shards");
    tcase_add_test(tc, test_comm_shard_tiles);
    tcase_add_test(tc, test_comm_single_process);
    suite_add_tcase(s, tc);
    return s;
}
