/*
 * test_rows.c: gather_rows and scatter_add_rows against naive loops (with -1
 * entries, weights and duplicate indices), the bounded scatter and its check, the
 * adjoint identity between them, index range errors and the wrapper's shape/dtype
 * checks.
 */
#include "testutil.h"

static const chm_dtype dts[] = {CHM_F32, CHM_F64};

/*
 * Shapes (R rows of x or out, C columns, M indices); C = 130 spans scatter's
 * column blocks, the last one is large enough for the threaded loops.
 */
static const int64_t shapes[][3] = {{1, 1, 1}, {7, 3, 13}, {13, 7, 5}, {5, 130, 9}, {50, 300, 120}};

/* A random float tensor; host receives the values as stored (rounded for f32). */
static tt_tensor rand_tensor(chm_backend *be, chm_dtype dt, int nd, const int64_t *shape,
                             tt_rng *rng, double *host) {
    tt_tensor t = tt_alloc(be, dt, nd, shape);
    tt_fill_uniform(rng, host, chm_tensor_numel(&t.t), -2, 2);
    tt_upload(be, &t, host);
    tt_download(be, &t, host);
    return t;
}

/* M random indices in [-1, R): about one in four is -1 (skip). */
static void rand_idx(tt_rng *rng, int32_t *idx, int64_t M, int64_t R) {
    for (int64_t m = 0; m < M; m++)
        idx[m] = tt_next(rng) % 4 == 0 ? -1 : (int32_t)(tt_next(rng) % (uint64_t)R);
}

static void naive_gather(double *out, const double *x, const int32_t *idx, int64_t M, int64_t C) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t c = 0; c < C; c++) out[m * C + c] = idx[m] < 0 ? 0 : x[idx[m] * C + c];
}

static void naive_scatter(double *out, const double *x, const int32_t *idx, const double *w,
                          int64_t M, int64_t C) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t c = 0; c < C && idx[m] >= 0; c++)
            out[idx[m] * C + c] += (w ? w[m] : 1.0) * x[m * C + c];
}

Test(rows, gather_matches_naive) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(11);
    for (size_t d = 0; d < 2; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t R = shapes[s][0], C = shapes[s][1], M = shapes[s][2];
            double *x = tt_dalloc(R * C), *got = tt_dalloc(M * C), *want = tt_dalloc(M * C);
            int32_t *idx = calloc((size_t)M, sizeof *idx);
            tt_tensor tx = rand_tensor(be, dts[d], 2, (int64_t[]){R, C}, &rng, x);
            tt_tensor ti = tt_alloc(be, CHM_I32, 1, (int64_t[]){M});
            tt_tensor to = tt_alloc(be, dts[d], 2, (int64_t[]){M, C});
            rand_idx(&rng, idx, M, R);
            tt_upload_i32(be, &ti, idx);
            tt_poison(be, &to);
            cr_assert_eq(chm_gather_rows(be, &to.t, &tx.t, &ti.t), CHM_OK, "%s", be->err.msg);
            tt_download(be, &to, got);
            naive_gather(want, x, idx, M, C);
            tt_assert_close("gather", got, want, M * C, 0, 0);
            tt_free(&tx);
            tt_free(&ti);
            tt_free(&to);
            free(x);
            free(got);
            free(want);
            free(idx);
        }
    chm_backend_close(be);
}

/* One scatter case: out starts at random G0, with or without weights. */
static void scatter_case(chm_backend *be, chm_dtype dt, int64_t R, int64_t C, int64_t M,
                         bool weighted, tt_rng *rng) {
    double *x = tt_dalloc(M * C), *out = tt_dalloc(R * C), *want = tt_dalloc(R * C);
    double *w = tt_dalloc(M);
    int32_t *idx = calloc((size_t)M, sizeof *idx);
    tt_tensor tx = rand_tensor(be, dt, 2, (int64_t[]){M, C}, rng, x);
    tt_tensor to = rand_tensor(be, dt, 2, (int64_t[]){R, C}, rng, want);  /* want starts as G0 */
    tt_tensor tw = rand_tensor(be, dt, 1, (int64_t[]){M}, rng, w);
    tt_tensor ti = tt_alloc(be, CHM_I32, 1, (int64_t[]){M});
    rand_idx(rng, idx, M, R);
    tt_upload_i32(be, &ti, idx);
    cr_assert_eq(chm_scatter_add_rows(be, &to.t, &tx.t, &ti.t, weighted ? &tw.t : NULL), CHM_OK,
                 "%s", be->err.msg);
    tt_download(be, &to, out);
    naive_scatter(want, x, idx, weighted ? w : NULL, M, C);
    tt_assert_close("scatter", out, want, R * C, TT_ATOL(dt), TT_RTOL(dt));
    tt_free(&tx);
    tt_free(&to);
    tt_free(&tw);
    tt_free(&ti);
    free(x);
    free(out);
    free(want);
    free(w);
    free(idx);
}

Test(rows, scatter_add_matches_naive_with_weights_and_duplicates) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(12);
    for (size_t d = 0; d < 2; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int weighted = 0; weighted < 2; weighted++)
                scatter_case(be, dts[d], shapes[s][0], shapes[s][1], shapes[s][2], weighted, &rng);
    /* many more indices than rows: every row receives several duplicates */
    scatter_case(be, CHM_F64, 3, 70, 31, true, &rng);
    scatter_case(be, CHM_F32, 3, 70, 31, false, &rng);
    chm_backend_close(be);
}

Test(rows, scatter_is_the_adjoint_of_gather) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(13);
    int64_t R = 9, C = 5, M = 14;
    double x[45], y[70], gx[70], sy[45], zeros[45] = {0};
    int32_t idx[14];
    tt_tensor tx = rand_tensor(be, CHM_F64, 2, (int64_t[]){R, C}, &rng, x);
    tt_tensor ty = rand_tensor(be, CHM_F64, 2, (int64_t[]){M, C}, &rng, y);
    tt_tensor tg = tt_alloc(be, CHM_F64, 2, (int64_t[]){M, C});
    tt_tensor ts = tt_alloc(be, CHM_F64, 2, (int64_t[]){R, C});
    tt_tensor ti = tt_alloc(be, CHM_I32, 1, (int64_t[]){M});
    rand_idx(&rng, idx, M, R);
    tt_upload_i32(be, &ti, idx);
    tt_upload(be, &ts, zeros);
    cr_assert_eq(chm_gather_rows(be, &tg.t, &tx.t, &ti.t), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_scatter_add_rows(be, &ts.t, &ty.t, &ti.t, NULL), CHM_OK, "%s", be->err.msg);
    tt_download(be, &tg, gx);
    tt_download(be, &ts, sy);
    double lhs = 0, rhs = 0;
    for (int64_t i = 0; i < M * C; i++) lhs += gx[i] * y[i];
    for (int64_t i = 0; i < R * C; i++) rhs += x[i] * sy[i];
    cr_assert(fabs(lhs - rhs) <= 1e-12 * (fabs(lhs) + 1),
              "<gather(x), y> = %.17g but <x, scatter(y)> = %.17g", lhs, rhs);
    tt_free(&tx);
    tt_free(&ty);
    tt_free(&tg);
    tt_free(&ts);
    tt_free(&ti);
    chm_backend_close(be);
}

/* The bounded form (no index more than r times) against the naive loop, and its promise
   checked: one index too many is rejected with the row named and out left as it was. */
Test(rows, bounded_scatter_matches_naive_and_rejects_a_broken_bound) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(14);
    int64_t R = 11, C = 67, M = 30;
    for (int r = 1; r <= 3; r++) {
        double x[30 * 67], w[30], out[11 * 67], want[11 * 67];
        int32_t idx[30], seen[11] = {0};
        for (int64_t m = 0; m < M; m++) { /* about one in four skipped, no row more than r */
            int32_t i = (int32_t)(tt_next(&rng) % (uint64_t)R);
            idx[m] = tt_next(&rng) % 4 == 0 || seen[i] >= r ? -1 : i;
            if (idx[m] >= 0) seen[i]++;
        }
        tt_tensor tx = rand_tensor(be, CHM_F64, 2, (int64_t[]){M, C}, &rng, x);
        tt_tensor to = rand_tensor(be, CHM_F64, 2, (int64_t[]){R, C}, &rng, want);
        tt_tensor tw = rand_tensor(be, CHM_F64, 1, (int64_t[]){M}, &rng, w);
        tt_tensor ti = tt_alloc(be, CHM_I32, 1, (int64_t[]){M});
        tt_upload_i32(be, &ti, idx);
        cr_assert_eq(chm_scatter_add_rows_bounded(be, &to.t, &tx.t, &ti.t, &tw.t, r), CHM_OK,
                     "%s", be->err.msg);
        tt_download(be, &to, out);
        naive_scatter(want, x, idx, w, M, C);
        tt_assert_close("bounded scatter", out, want, R * C, 1e-12, 1e-12);
        /* a row one over the bound: row 4 taken r + 1 times */
        for (int k = 0; k <= r; k++) idx[2 * k] = 4;
        tt_upload_i32(be, &ti, idx);
        cr_assert_eq(chm_scatter_add_rows_bounded(be, &to.t, &tx.t, &ti.t, NULL, r),
                     CHM_ERR_INVALID_ARG);
        cr_assert(strstr(be->err.msg, "row 4 is the target of more than max_repeat") != NULL,
                  "%s", be->err.msg);
        double after[11 * 67];
        tt_download(be, &to, after);
        tt_assert_close("untouched", after, out, R * C, 0, 0);
        cr_assert_eq(chm_scatter_add_rows_bounded(be, &to.t, &tx.t, &ti.t, NULL, 0),
                     CHM_ERR_INVALID_ARG, "a bound of 0 is refused");
        tt_free(&tx);
        tt_free(&to);
        tt_free(&tw);
        tt_free(&ti);
    }
    chm_backend_close(be);
}

Test(rows, index_past_the_rows_is_rejected_by_position) {
    chm_backend *be = tt_open_cpu();
    tt_tensor x = tt_alloc(be, CHM_F32, 2, (int64_t[]){4, 3});
    tt_tensor out = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 3});
    tt_tensor ti = tt_alloc(be, CHM_I32, 1, (int64_t[]){3});
    tt_upload_i32(be, &ti, (int32_t[]){0, -1, 4});
    cr_assert_eq(chm_gather_rows(be, &out.t, &x.t, &ti.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "gather_rows: idx[2] = 4") != NULL, "%s", be->err.msg);
    /* scatter: out has 4 rows, x 3 */
    cr_assert_eq(chm_scatter_add_rows(be, &x.t, &out.t, &ti.t, NULL), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "scatter_add_rows: idx[2] = 4") != NULL, "%s", be->err.msg);
    tt_free(&x);
    tt_free(&out);
    tt_free(&ti);
    chm_backend_close(be);
}

Test(rows, wrapper_rejects_bad_shapes_and_dtypes) {
    chm_backend *be = tt_open_cpu();
    tt_tensor x = tt_alloc(be, CHM_F32, 2, (int64_t[]){4, 3});
    tt_tensor out = tt_alloc(be, CHM_F32, 2, (int64_t[]){5, 3});
    tt_tensor x64 = tt_alloc(be, CHM_F64, 2, (int64_t[]){3, 3});
    tt_tensor ti = tt_alloc(be, CHM_I32, 1, (int64_t[]){3});
    tt_tensor tf = tt_alloc(be, CHM_F32, 1, (int64_t[]){3});
    cr_assert_eq(chm_gather_rows(be, &out.t, &x.t, &ti.t), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "gather_rows: out must have shape [3, 3]") != NULL, "%s",
              be->err.msg);
    cr_assert_eq(chm_gather_rows(be, &x.t, &x.t, &tf.t), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "gather_rows: idx must be i32") != NULL, "%s", be->err.msg);
    cr_assert_eq(chm_scatter_add_rows(be, &x.t, &x64.t, &ti.t, NULL), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "scatter_add_rows: x must be f32") != NULL, "%s", be->err.msg);
    cr_assert_eq(chm_scatter_add_rows(be, &out.t, &x.t, &ti.t, &tf.t), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "scatter_add_rows: x must have shape [3, 3]") != NULL, "%s",
              be->err.msg);
    tt_free(&x);
    tt_free(&out);
    tt_free(&x64);
    tt_free(&ti);
    tt_free(&tf);
    chm_backend_close(be);
}
