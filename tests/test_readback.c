/*
 * test_readback.c: chm_readback_start / chm_readback_finish on the cpu backend (which has no
 * queued copy: the finish downloads) and the wrappers' refusals. The queued cuda copy is
 * checked by cuda_opcheck's memory case (70 readbacks, their tensors overwritten after the
 * start), which the Criterion cuda suite runs on a GPU.
 */
#include "testutil.h"

/* Several readbacks in flight at once, finished in another order, give each its own values. */
Test(readback, values_of_many_in_flight) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(11);
    enum { N = 9 };
    tt_tensor t[N];
    chm_readback rb[N];
    int32_t *want[N];
    memset(rb, 0, sizeof rb);
    for (int i = 0; i < N; i++) {
        /* one of them past CHM_READBACK_MAX: read at the finish on every backend */
        int64_t n = i == 4 ? CHM_READBACK_MAX / 4 + 3 : 1 + 29 * i;
        t[i] = tt_alloc(be, CHM_I32, 1, &n);
        want[i] = malloc((size_t)n * sizeof(int32_t));
        for (int64_t j = 0; j < n; j++) want[i][j] = (int32_t)tt_uniform(&r, -2e9, 2e9);
        cr_assert_eq(chm_upload(be, &t[i].t, want[i]), CHM_OK, "%s", be->err.msg);
        cr_assert_eq(chm_readback_start(be, &t[i].t, &rb[i]), CHM_OK, "%s", be->err.msg);
        cr_assert(rb[i].live);
    }
    for (int k = 0; k < N; k++) {
        int i = (k * 4) % N; /* 0, 4, 8, 3, 7, ...: every index once */
        int64_t n = chm_tensor_numel(&t[i].t);
        int32_t *got = malloc((size_t)n * sizeof *got);
        memset(got, 0x5a, (size_t)n * sizeof *got);
        cr_assert_eq(chm_readback_finish(be, &rb[i], got), CHM_OK, "%s", be->err.msg);
        cr_assert(!rb[i].live);
        cr_assert(!memcmp(got, want[i], (size_t)n * sizeof *got), "readback %d differs", i);
        free(got);
    }
    for (int i = 0; i < N; i++) tt_free(&t[i]), free(want[i]);
    chm_backend_close(be);
}

/* A finish without a start, a second finish, a second start and a NULL dst are refused. */
Test(readback, misuse_is_refused) {
    chm_backend *be = tt_open_cpu();
    int64_t n = 3;
    tt_tensor t = tt_alloc(be, CHM_F32, 1, &n);
    const float v[3] = {1.5f, -2.0f, 0.25f};
    float got[3];
    chm_readback rb;
    memset(&rb, 0, sizeof rb);
    cr_assert_eq(chm_upload(be, &t.t, v), CHM_OK);
    cr_assert_eq(chm_readback_finish(be, &rb, got), CHM_ERR_INVALID_ARG);
    cr_assert_eq(chm_readback_start(be, &t.t, &rb), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_readback_start(be, &t.t, &rb), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "finish it"), "message: %s", be->err.msg);
    cr_assert_eq(chm_readback_finish(be, &rb, NULL), CHM_ERR_INVALID_ARG);
    cr_assert_eq(chm_readback_finish(be, &rb, got), CHM_OK, "%s", be->err.msg);
    cr_assert(!memcmp(got, v, sizeof v));
    cr_assert_eq(chm_readback_finish(be, &rb, got), CHM_ERR_INVALID_ARG);
    cr_assert_eq(chm_readback_start(be, &t.t, NULL), CHM_ERR_INVALID_ARG);
    tt_free(&t);
    chm_backend_close(be);
}
