/*
 * test_selective_scan_step.c: the selective scan continued from a state on
 * the cpu backend: against a naive f64 recurrence from a random state (f32
 * and f64, with and without D, z, delta_bias and softplus, odd sizes, T = 1
 * and T > 1), stepping token by token from zero equals chm_selective_scan_fwd
 * over the whole sequence, and the wrapper's rejections.
 */
#include "testutil.h"

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};
static const int64_t SHAPES[][4] = {
    {1, 1, 1, 1}, {2, 1, 5, 3}, {1, 7, 3, 4}, {3, 4, 70, 2}}; /* B, T, Di, N */

static double *rand_upload(chm_backend *be, tt_rng *r, const tt_tensor *t, double lo, double hi) {
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_fill_uniform(r, h, n, lo, hi);
    tt_upload(be, t, h);
    tt_download(be, t, h);
    return h;
}

/* Host copies of one case's inputs. */
typedef struct scan_host {
    double *u, *dl, *A, *Bm, *Cm, *D, *z, *db;
    bool softplus;
} scan_host;

static void naive(double *y, double *h, const scan_host *s, const int64_t *sh) {
    int64_t B = sh[0], T = sh[1], Di = sh[2], N = sh[3];
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < Di; c++)
            for (int64_t t = 0; t < T; t++) {
                int64_t i = (b * T + t) * Di + c;
                double x = s->dl[i] + (s->db ? s->db[c] : 0);
                double dt = s->softplus ? log1p(exp(x)) : x, acc = (s->D ? s->D[c] : 0) * s->u[i];
                for (int64_t n = 0; n < N; n++) {
                    double *hn = &h[(b * Di + c) * N + n];
                    *hn =
                        exp(dt * s->A[c * N + n]) * *hn + dt * s->Bm[(b * T + t) * N + n] * s->u[i];
                    acc += s->Cm[(b * T + t) * N + n] * *hn;
                }
                if (s->z) acc *= s->z[i] / (1 + exp(-s->z[i]));
                y[i] = acc;
            }
}

Test(selective_scan_step, matches_naive_from_a_state) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(1);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 4; s++)
            for (int opt = 0; opt < 2; opt++) {
                const int64_t *sh = SHAPES[s];
                int64_t B = sh[0], T = sh[1], Di = sh[2], N = sh[3];
                chm_dtype dt = DTYPES[d];
                int64_t xs[3] = {B, T, Di}, ns[3] = {B, T, N};
                tt_tensor u = tt_alloc(be, dt, 3, xs), dl = tt_alloc(be, dt, 3, xs),
                          z = tt_alloc(be, dt, 3, xs);
                tt_tensor A = tt_alloc(be, dt, 2, (int64_t[]){Di, N}), Bm = tt_alloc(be, dt, 3, ns);
                tt_tensor Cm = tt_alloc(be, dt, 3, ns), D = tt_alloc(be, dt, 1, &Di),
                          db = tt_alloc(be, dt, 1, &Di);
                tt_tensor h = tt_alloc(be, dt, 3, (int64_t[]){B, Di, N}),
                          y = tt_alloc(be, dt, 3, xs);
                scan_host hs = {rand_upload(be, &rng, &u, -1, 1),
                                rand_upload(be, &rng, &dl, -2, 1),
                                rand_upload(be, &rng, &A, -2, -0.1),
                                rand_upload(be, &rng, &Bm, -1, 1),
                                rand_upload(be, &rng, &Cm, -1, 1),
                                rand_upload(be, &rng, &D, -1, 1),
                                rand_upload(be, &rng, &z, -2, 2),
                                rand_upload(be, &rng, &db, -1, 1),
                                opt == 0};
                if (opt == 1) { /* no D, z, bias; raw positive delta */
                    free(hs.D), free(hs.z), free(hs.db);
                    hs.D = hs.z = hs.db = NULL;
                    for (int64_t i = 0; i < B * T * Di; i++) hs.dl[i] = fabs(hs.dl[i]);
                    tt_upload(be, &dl, hs.dl);
                    tt_download(be, &dl, hs.dl);
                }
                double *h0 = rand_upload(be, &rng, &h, -1, 1);
                double *wy = tt_dalloc(B * T * Di), *gy = tt_dalloc(B * T * Di),
                       *gh = tt_dalloc(B * Di * N);
                naive(wy, h0, &hs, sh);
                chm_scan_args a = {&u.t,
                                   &dl.t,
                                   &A.t,
                                   &Bm.t,
                                   &Cm.t,
                                   opt ? NULL : &D.t,
                                   opt ? NULL : &z.t,
                                   opt ? NULL : &db.t,
                                   opt == 0,
                                   NULL,
                                   0, NULL};
                tt_poison(be, &y);
                cr_assert_eq(chm_selective_scan_step(be, &y.t, &h.t, &a), CHM_OK, "%s",
                             be->err.msg);
                tt_download(be, &y, gy);
                tt_download(be, &h, gh);
                double tol = dt == CHM_F64 ? 1e-12 : 2e-5;
                tt_assert_close("scan_step y", gy, wy, B * T * Di, tol, tol);
                tt_assert_close("scan_step state", gh, h0, B * Di * N, tol, tol);
                free(hs.u), free(hs.dl), free(hs.A), free(hs.Bm), free(hs.Cm), free(hs.D),
                    free(hs.z);
                free(hs.db), free(h0), free(wy), free(gy), free(gh);
                tt_free(&u), tt_free(&dl), tt_free(&z), tt_free(&A), tt_free(&Bm), tt_free(&Cm);
                tt_free(&D), tt_free(&db), tt_free(&h), tt_free(&y);
            }
    chm_backend_close(be);
}

Test(selective_scan_step, token_by_token_equals_the_full_scan) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(2);
    int64_t B = 1, T = 9, Di = 6, N = 4;
    int64_t xs[3] = {B, T, Di}, ns[3] = {B, T, N};
    tt_tensor u = tt_alloc(be, CHM_F64, 3, xs), dl = tt_alloc(be, CHM_F64, 3, xs),
              z = tt_alloc(be, CHM_F64, 3, xs);
    tt_tensor A = tt_alloc(be, CHM_F64, 2, (int64_t[]){Di, N}), Bm = tt_alloc(be, CHM_F64, 3, ns);
    tt_tensor Cm = tt_alloc(be, CHM_F64, 3, ns), D = tt_alloc(be, CHM_F64, 1, &Di),
              db = tt_alloc(be, CHM_F64, 1, &Di);
    tt_tensor y = tt_alloc(be, CHM_F64, 3, xs), ys = tt_alloc(be, CHM_F64, 3, xs);
    tt_tensor h = tt_alloc(be, CHM_F64, 3, (int64_t[]){B, Di, N});
    free(rand_upload(be, &rng, &u, -1, 1)), free(rand_upload(be, &rng, &dl, -2, 1));
    free(rand_upload(be, &rng, &z, -2, 2)), free(rand_upload(be, &rng, &A, -2, -0.1));
    free(rand_upload(be, &rng, &Bm, -1, 1)), free(rand_upload(be, &rng, &Cm, -1, 1));
    free(rand_upload(be, &rng, &D, -1, 1)), free(rand_upload(be, &rng, &db, -1, 1));
    chm_scan_args a = {&u.t, &dl.t, &A.t, &Bm.t, &Cm.t, &D.t, &z.t, &db.t, true, NULL, 0, NULL};
    cr_assert_eq(chm_selective_scan_fwd(be, &y.t, &a), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_fill(be, &h.t, 0), CHM_OK);
    for (int64_t t = 0; t < T; t++) {
        size_t ox = (size_t)(t * Di) * 8, on = (size_t)(t * N) * 8;
        chm_tensor ut = chm_tensor_3d(u.buf, ox, CHM_F64, 1, 1, Di),
                   dt = chm_tensor_3d(dl.buf, ox, CHM_F64, 1, 1, Di);
        chm_tensor zt = chm_tensor_3d(z.buf, ox, CHM_F64, 1, 1, Di),
                   yt = chm_tensor_3d(ys.buf, ox, CHM_F64, 1, 1, Di);
        chm_tensor bt = chm_tensor_3d(Bm.buf, on, CHM_F64, 1, 1, N),
                   ct = chm_tensor_3d(Cm.buf, on, CHM_F64, 1, 1, N);
        chm_scan_args at = {&ut, &dt, &A.t, &bt, &ct, &D.t, &zt, &db.t, true, NULL, 0, NULL};
        cr_assert_eq(chm_selective_scan_step(be, &yt, &h.t, &at), CHM_OK, "%s", be->err.msg);
    }
    double *a1 = tt_dalloc(T * Di), *a2 = tt_dalloc(T * Di);
    tt_download(be, &y, a1);
    tt_download(be, &ys, a2);
    tt_assert_close("steps vs full scan", a2, a1, T * Di, 1e-13, 1e-13);
    free(a1), free(a2);
    tt_free(&u), tt_free(&dl), tt_free(&z), tt_free(&A), tt_free(&Bm), tt_free(&Cm), tt_free(&D);
    tt_free(&db), tt_free(&y), tt_free(&ys), tt_free(&h);
    chm_backend_close(be);
}

Test(selective_scan_step, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    int64_t xs[3] = {1, 2, 3}, ns[3] = {1, 2, 4};
    tt_tensor u = tt_alloc(be, CHM_F32, 3, xs), dl = tt_alloc(be, CHM_F32, 3, xs),
              y = tt_alloc(be, CHM_F32, 3, xs);
    tt_tensor A = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4}), Bm = tt_alloc(be, CHM_F32, 3, ns);
    tt_tensor Cm = tt_alloc(be, CHM_F32, 3, ns), h = tt_alloc(be, CHM_F32, 3, (int64_t[]){1, 3, 4});
    tt_tensor h5 = tt_alloc(be, CHM_F32, 3, (int64_t[]){1, 3, 5}),
              hd = tt_alloc(be, CHM_F64, 3, (int64_t[]){1, 3, 4});
    chm_scan_args a = {&u.t, &dl.t, &A.t, &Bm.t, &Cm.t, NULL, NULL, NULL, true, NULL, 0, NULL};
    cr_assert_eq(chm_selective_scan_step(be, &y.t, &h5.t, &a), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "selective_scan_step: h"), "%s", be->err.msg);
    cr_assert_eq(chm_selective_scan_step(be, &y.t, &hd.t, &a), CHM_ERR_DTYPE);
    cr_assert_eq(chm_selective_scan_step(be, &y.t, &u.t, &a), CHM_ERR_SHAPE);
    cr_assert_eq(chm_selective_scan_step(be, &u.t, &h.t, &a), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "selective_scan_step: y overlaps u"), "%s", be->err.msg);
    chm_scan_args bad = a;
    bad.Bm = &Cm.t, bad.Cm = &A.t;
    cr_assert_eq(chm_selective_scan_step(be, &y.t, &h.t, &bad), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "selective_scan_step: Cm"), "%s", be->err.msg);
    cr_assert_eq(chm_selective_scan_step(be, &y.t, &h.t, NULL), CHM_ERR_INVALID_ARG);
    tt_free(&u), tt_free(&dl), tt_free(&y), tt_free(&A), tt_free(&Bm), tt_free(&Cm), tt_free(&h),
        tt_free(&h5), tt_free(&hd);
    chm_backend_close(be);
}
