/*
 * test_cross_entropy.c: the fused cross-entropy against a naive softmax in
 * double (vocabularies below, at and past the 4096-column chunk), large
 * logits, ignored targets, in-place gradients, finite differences of the
 * summed loss, the loss-only form, and the argument checks.
 */
#include "testutil.h"

static const chm_dtype dts[] = {CHM_F32, CHM_F64};

/* A random float tensor in [lo, hi); host receives the values as stored. */
static tt_tensor rand_tensor(chm_backend *be, chm_dtype dt, int nd, const int64_t *shape,
                             tt_rng *rng, double lo, double hi, double *host) {
    tt_tensor t = tt_alloc(be, dt, nd, shape);
    tt_fill_uniform(rng, host, chm_tensor_numel(&t.t), lo, hi);
    tt_upload(be, &t, host);
    tt_download(be, &t, host);
    return t;
}

/* Naive loss [R] and gradient [R,V] (grad_scale * (softmax - onehot)) in double. */
static void naive_ce(double *loss, double *dz, const double *z, const int32_t *tg, int64_t R,
                     int64_t V, double scale) {
    for (int64_t r = 0; r < R; r++) {
        const double *zr = z + r * V;
        double mx = zr[0], sum = 0;
        for (int64_t j = 1; j < V; j++) mx = fmax(mx, zr[j]);
        for (int64_t j = 0; j < V; j++) sum += exp(zr[j] - mx);
        double lse = mx + log(sum);
        loss[r] = tg[r] < 0 ? 0 : lse - zr[tg[r]];
        for (int64_t j = 0; j < V; j++)
            dz[r * V + j] = tg[r] < 0 ? 0 : scale * (exp(zr[j] - lse) - (j == tg[r]));
    }
}

/*
 * One case: R rows of V logits in [center-5, center+5), targets in [-1, V)
 * (-1 about one row in five), compared with naive_ce. in_place passes
 * logits as dlogits.
 */
static void ce_case(chm_backend *be, chm_dtype dt, int64_t R, int64_t V, double center,
                    bool in_place, tt_rng *rng) {
    double *z = tt_dalloc(R * V), *dz = tt_dalloc(R * V), *want_dz = tt_dalloc(R * V);
    double *loss = tt_dalloc(R), *want_loss = tt_dalloc(R), scale = 0.37;
    int32_t *tg = calloc((size_t)R, sizeof *tg);
    tt_tensor tz = rand_tensor(be, dt, 2, (int64_t[]){R, V}, rng, center - 5, center + 5, z);
    tt_tensor td = tt_alloc(be, dt, 2, (int64_t[]){R, V});
    tt_tensor tl = tt_alloc(be, dt, 1, (int64_t[]){R});
    tt_tensor tt = tt_alloc(be, CHM_I32, 1, (int64_t[]){R});
    for (int64_t r = 0; r < R; r++)
        tg[r] = tt_next(rng) % 5 == 0 ? -1 : (int32_t)(tt_next(rng) % (uint64_t)V);
    tt_upload_i32(be, &tt, tg);
    tt_tensor *out = in_place ? &tz : &td;
    if (!in_place) tt_poison(be, &td);
    tt_poison(be, &tl);
    cr_assert_eq(chm_cross_entropy(be, &tl.t, &out->t, &tz.t, &tt.t, scale), CHM_OK, "%s",
                 be->err.msg);
    tt_download(be, &tl, loss);
    tt_download(be, out, dz);
    naive_ce(want_loss, want_dz, z, tg, R, V, scale);
    tt_assert_close("losses", loss, want_loss, R, TT_ATOL(dt), TT_RTOL(dt));
    tt_assert_close("dlogits", dz, want_dz, R * V, TT_ATOL(dt), TT_RTOL(dt));
    tt_free(&tz);
    tt_free(&td);
    tt_free(&tl);
    tt_free(&tt);
    free(z);
    free(dz);
    free(want_dz);
    free(loss);
    free(want_loss);
    free(tg);
}

Test(cross_entropy, matches_naive_across_chunk_sizes) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(21);
    static const int64_t shapes[][2] = {{1, 1}, {3, 7}, {13, 5}, {3, 5000}, {2, 8193}, {5, 9000}};
    for (size_t d = 0; d < 2; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            ce_case(be, dts[d], shapes[s][0], shapes[s][1], 0.0, false, &rng);
    chm_backend_close(be);
}

Test(cross_entropy, large_logits_do_not_overflow) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(22);
    for (size_t d = 0; d < 2; d++) {
        ce_case(be, dts[d], 4, 5000, 1000.0, false, &rng);
        ce_case(be, dts[d], 3, 7, -1000.0, false, &rng);
    }
    /* one logit 2000 above the rest: loss ~ 0 for that target, ~2000 for another */
    tt_tensor z = tt_alloc(be, CHM_F32, 2, (int64_t[]){2, 3});
    tt_tensor l = tt_alloc(be, CHM_F32, 1, (int64_t[]){2});
    tt_tensor t = tt_alloc(be, CHM_I32, 1, (int64_t[]){2});
    tt_upload(be, &z, (double[]){1000, -1000, 0, 1000, -1000, 0});
    tt_upload_i32(be, &t, (int32_t[]){0, 1});
    cr_assert_eq(chm_cross_entropy(be, &l.t, &z.t, &z.t, &t.t, 1.0), CHM_OK, "%s", be->err.msg);
    double loss[2], dz[6];
    tt_download(be, &l, loss);
    tt_download(be, &z, dz);
    tt_assert_close("loss", loss, (double[]){0, 2000}, 2, 1e-6, 1e-6);
    tt_assert_close("dlogits", dz, (double[]){0, 0, 0, 1, -1, 0}, 6, 1e-6, 0);
    tt_free(&z);
    tt_free(&l);
    tt_free(&t);
    chm_backend_close(be);
}

Test(cross_entropy, ignored_targets_give_zero_loss_and_gradient) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(23);
    double z[15], loss[3], dz[15];
    tt_tensor tz = rand_tensor(be, CHM_F64, 2, (int64_t[]){3, 5}, &rng, -3, 3, z);
    tt_tensor td = tt_alloc(be, CHM_F64, 2, (int64_t[]){3, 5});
    tt_tensor tl = tt_alloc(be, CHM_F64, 1, (int64_t[]){3});
    tt_tensor tt = tt_alloc(be, CHM_I32, 1, (int64_t[]){3});
    tt_upload_i32(be, &tt, (int32_t[]){-1, 2, -100});
    tt_poison(be, &td);
    tt_poison(be, &tl);
    cr_assert_eq(chm_cross_entropy(be, &tl.t, &td.t, &tz.t, &tt.t, 1.0), CHM_OK, "%s",
                 be->err.msg);
    tt_download(be, &tl, loss);
    tt_download(be, &td, dz);
    cr_assert(loss[0] == 0 && loss[2] == 0 && loss[1] > 0, "losses %g %g %g", loss[0], loss[1],
              loss[2]);
    for (int j = 0; j < 5; j++)
        cr_assert(dz[j] == 0 && dz[10 + j] == 0, "ignored rows must get zero gradients");
    tt_free(&tz);
    tt_free(&td);
    tt_free(&tl);
    tt_free(&tt);
    chm_backend_close(be);
}

Test(cross_entropy, in_place_gradient_matches) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(24);
    for (size_t d = 0; d < 2; d++) {
        ce_case(be, dts[d], 5, 13, 0.0, true, &rng);
        ce_case(be, dts[d], 2, 5000, 0.0, true, &rng);
    }
    chm_backend_close(be);
}

/* Sum of the losses of z [R,V] (f64) for the targets in tt. */
static double loss_sum(chm_backend *be, tt_tensor *tz, tt_tensor *tl, tt_tensor *tt,
                       const double *z, int64_t R) {
    double loss[8], sum = 0;
    tt_upload(be, tz, z);
    cr_assert_eq(chm_cross_entropy(be, &tl->t, NULL, &tz->t, &tt->t, 1.0), CHM_OK, "%s",
                 be->err.msg);
    tt_download(be, tl, loss);
    for (int64_t r = 0; r < R; r++) sum += loss[r];
    return sum;
}

Test(cross_entropy, gradient_matches_finite_differences) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(25);
    enum { R = 4, V = 7 };
    double z[R * V], dz[R * V], fd[R * V];
    tt_tensor tz = rand_tensor(be, CHM_F64, 2, (int64_t[]){R, V}, &rng, -3, 3, z);
    tt_tensor td = tt_alloc(be, CHM_F64, 2, (int64_t[]){R, V});
    tt_tensor tl = tt_alloc(be, CHM_F64, 1, (int64_t[]){R});
    tt_tensor tt = tt_alloc(be, CHM_I32, 1, (int64_t[]){R});
    tt_upload_i32(be, &tt, (int32_t[]){3, 0, -1, 6});
    cr_assert_eq(chm_cross_entropy(be, &tl.t, &td.t, &tz.t, &tt.t, 1.0), CHM_OK, "%s",
                 be->err.msg);
    tt_download(be, &td, dz);
    for (int i = 0; i < R * V; i++) {
        double h = 1e-6 * fmax(1.0, fabs(z[i])), z0 = z[i];
        z[i] = z0 + h;
        double up = loss_sum(be, &tz, &tl, &tt, z, R);
        z[i] = z0 - h;
        double down = loss_sum(be, &tz, &tl, &tt, z, R);
        z[i] = z0;
        fd[i] = (up - down) / (2 * h);
    }
    double err = tt_rel_l2(dz, fd, R * V);
    cr_assert(err < 1e-6, "dlogits vs finite differences: relative L2 error %g", err);
    tt_free(&tz);
    tt_free(&td);
    tt_free(&tl);
    tt_free(&tt);
    chm_backend_close(be);
}

Test(cross_entropy, target_past_the_vocabulary_is_rejected) {
    chm_backend *be = tt_open_cpu();
    tt_tensor z = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 5});
    tt_tensor l = tt_alloc(be, CHM_F32, 1, (int64_t[]){3});
    tt_tensor t = tt_alloc(be, CHM_I32, 1, (int64_t[]){3});
    tt_upload_i32(be, &t, (int32_t[]){0, 5, -1});
    cr_assert_eq(chm_cross_entropy(be, &l.t, &z.t, &z.t, &t.t, 1.0), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "cross_entropy: targets[1] = 5") != NULL, "%s", be->err.msg);
    tt_free(&z);
    tt_free(&l);
    tt_free(&t);
    chm_backend_close(be);
}

Test(cross_entropy, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor z = tt_alloc(be, CHM_F32, 2, (int64_t[]){4, 5});
    tt_tensor l = tt_alloc(be, CHM_F32, 1, (int64_t[]){4});
    tt_tensor l64 = tt_alloc(be, CHM_F64, 1, (int64_t[]){4});
    tt_tensor t = tt_alloc(be, CHM_I32, 1, (int64_t[]){4});
    tt_tensor tf = tt_alloc(be, CHM_F32, 1, (int64_t[]){4});
    tt_upload_i32(be, &t, (int32_t[]){0, 1, 2, 3});
    chm_tensor l3 = chm_tensor_1d(l.buf, 0, CHM_F32, 3);
    cr_assert_eq(chm_cross_entropy(be, &l3, NULL, &z.t, &t.t, 1.0), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "cross_entropy: losses must have shape [4]") != NULL, "%s",
              be->err.msg);
    cr_assert_eq(chm_cross_entropy(be, &l64.t, NULL, &z.t, &t.t, 1.0), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "cross_entropy: losses must be f32") != NULL, "%s",
              be->err.msg);
    cr_assert_eq(chm_cross_entropy(be, &l.t, NULL, &z.t, &tf.t, 1.0), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "cross_entropy: targets must be i32") != NULL, "%s",
              be->err.msg);
    cr_assert_eq(chm_cross_entropy(be, &l.t, NULL, &z.t, &t.t, NAN), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "cross_entropy: grad_scale") != NULL, "%s", be->err.msg);
    /* dlogits one row further into logits' buffer: a partial overlap */
    chm_tensor z3 = chm_tensor_2d(z.buf, 0, CHM_F32, 3, 5), shifted;
    chm_tensor t3 = chm_tensor_1d(t.buf, 0, CHM_I32, 3);
    chm_err err = {0};
    cr_assert_eq(chm_tensor_view(&z.t, 5, 2, (int64_t[]){3, 5}, &shifted, &err), CHM_OK);
    cr_assert_eq(chm_cross_entropy(be, &l3, &shifted, &z3, &t3, 1.0), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "cross_entropy: dlogits partly overlaps logits") != NULL, "%s",
              be->err.msg);
    tt_free(&z);
    tt_free(&l);
    tt_free(&l64);
    tt_free(&t);
    tt_free(&tf);
    chm_backend_close(be);
}
