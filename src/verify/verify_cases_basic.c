/*
 * verify_cases_basic.c: op cases of the op phase for the memory,
 * elementwise, matmul, normalisation/position/activation/embedding and
 * optimizer ops: each runs its ops at a few shapes (odd sizes, a 1x1, one
 * a little larger) with inputs in the ranges the model produces.
 * Dimension letters as in tensor.h.
 */
#include <math.h>
#include <stdlib.h>

#include "verify_ops.h"

/* ---- memory ---- */

void vc_fill(vo_ctx *x) {
    static const int64_t shapes[][2] = {{1, 37}, {3, 5}, {1, 1}};
    static const double vals[] = {1.0 / 3.0, -2.5e-3, 7e4};
    for (int k = 0; k < 3; k++) {
        char d[48];
        vo_case(x, "fill %s", vo_dims(d, sizeof d, 2, shapes[k]));
        vo_t f = vo_new(x, VO_FLOAT, 2, shapes[k]), i = vo_new(x, CHM_I32, 2, shapes[k]);
        vo_poison(x, &f);
        vo_poison(x, &i);
        VO_CALL(x, "fill", chm_fill(BE, VT(f), vals[k]));
        vo_check(x, "fill", "float", &f, 1);
        VO_CALL(x, "fill", chm_fill(BE, VT(i), -7.0 + k));
        vo_check_exact(x, "fill", "i32", &i);
        VO_FREE(&f, &i);
    }
}

void vc_copy(vo_ctx *x) {
    static const int64_t shapes[][2] = {{7, 13}, {1, 1}, {3, 100}};
    for (int k = 0; k < 3; k++) {
        const int64_t *d = shapes[k];
        char ds[48];
        vo_case(x, "copy %s", vo_dims(ds, sizeof ds, 2, d));
        int32_t *iv = malloc((size_t)(d[0] * d[1]) * sizeof *iv);
        for (int64_t i = 0; iv && i < d[0] * d[1]; i++) iv[i] = (int32_t)vo_uniform(x, -99, 99);
        vo_t src = vo_rand(x, 2, d, -2, 2), dst = vo_new(x, VO_FLOAT, 2, d);
        vo_t isrc = vo_ints(x, 2, d, iv), idst = vo_new(x, CHM_I32, 2, d);
        vo_poison(x, &dst);
        vo_poison(x, &idst);
        VO_CALL(x, "copy", chm_copy(BE, VT(dst), VT(src)));
        vo_check(x, "copy", "float", &dst, 1);
        VO_CALL(x, "copy", chm_copy(BE, VT(idst), VT(isrc)));
        vo_check_exact(x, "copy", "i32", &idst);
        VO_FREE(&src, &dst, &isrc, &idst);
        free(iv);
    }
    /* Overlapping ranges of one buffer: memmove semantics. */
    vo_case(x, "copy 60 of 100 (overlapping)");
    vo_t t = vo_rand(x, 1, VD(100), -1, 1);
    vo_t a = vo_view(&t, 0, 1, VD(60)), b = vo_view(&t, 20, 1, VD(60));
    VO_CALL(x, "copy", chm_copy(BE, VT(b), VT(a)));
    vo_check(x, "copy", "float", &t, 1);
    VO_FREE(&t);
}

/*
 * src (float) -> dt and back. A conversion rounds once from the same value on
 * every side, so it must match exactly; except dt -> bf16 in the bf16 pass,
 * which the f64 reference does not round (a tolerance check then).
 */
static void cast_case(vo_ctx *x, chm_dtype dt, const int64_t *d) {
    char ds[48];
    vo_case(x, "cast %s f32<->%s", vo_dims(ds, sizeof ds, 2, d), chm_dtype_name(dt));
    vo_t src = vo_rand(x, 2, d, -3, 3), lo = vo_new(x, dt, 2, d), back = vo_new(x, VO_FLOAT, 2, d);
    vo_poison(x, &lo);
    VO_CALL(x, "cast", chm_cast(BE, VT(lo), VT(src)));
    vo_check_exact(x, "cast", chm_dtype_name(dt), &lo);
    double *h = malloc((size_t)lo.n * sizeof *h);
    for (int64_t i = 0; h && i < lo.n; i++) h[i] = vo_uniform(x, -100, 100);
    if (h) vo_set(x, &lo, h);
    vo_poison(x, &back);
    VO_CALL(x, "cast", chm_cast(BE, VT(back), VT(lo)));
    if (x->lowp) vo_check(x, "cast", "float", &back, 1);
    else vo_check_exact(x, "cast", "float", &back);
    free(h);
    VO_FREE(&src, &lo, &back);
}

void vc_cast(vo_ctx *x) {
    cast_case(x, CHM_BF16, VD(7, 13));
    cast_case(x, CHM_F16, VD(3, 37));
    cast_case(x, CHM_BF16, VD(1, 1));
    vo_case(x, "cast 5x9 float->float");
    vo_t src = vo_rand(x, 2, VD(5, 9), -1, 1), dst = vo_new(x, VO_FLOAT, 2, VD(5, 9));
    vo_poison(x, &dst);
    VO_CALL(x, "cast", chm_cast(BE, VT(dst), VT(src)));
    vo_check(x, "cast", "float", &dst, 1);
    VO_FREE(&src, &dst);
}

/* ---- elementwise ---- */

static const int64_t ew_shapes[][2] = {{7, 13}, {1, 1}, {33, 65}};

void vc_add(vo_ctx *x) {
    for (int k = 0; k < 3; k++) {
        const int64_t *d = ew_shapes[k];
        char ds[48];
        vo_case(x, "add %s", vo_dims(ds, sizeof ds, 2, d));
        vo_t a = vo_rand(x, 2, d, -2, 2), b = vo_rand(x, 2, d, -2, 2);
        vo_t out = vo_new(x, VO_FLOAT, 2, d);
        vo_poison(x, &out);
        VO_CALL(x, "add", chm_add(BE, VT(out), VT(a), VT(b)));
        vo_check(x, "add", "out", &out, 1);
        VO_CALL(x, "add", chm_add(BE, VT(a), VT(a), VT(b)));
        vo_check(x, "add", "out (in place)", &a, 1);
        VO_FREE(&a, &b, &out);
    }
}

void vc_scale(vo_ctx *x) {
    static const double alpha[] = {0.37, -1.3, 2.5};
    for (int k = 0; k < 3; k++) {
        const int64_t *d = ew_shapes[k];
        char ds[48];
        vo_case(x, "scale %s", vo_dims(ds, sizeof ds, 2, d));
        vo_t in = vo_rand(x, 2, d, -2, 2), out = vo_new(x, VO_FLOAT, 2, d);
        vo_poison(x, &out);
        VO_CALL(x, "scale", chm_scale(BE, VT(out), VT(in), alpha[k]));
        vo_check(x, "scale", "out", &out, 1);
        VO_CALL(x, "scale", chm_scale(BE, VT(in), VT(in), alpha[k]));
        vo_check(x, "scale", "out (in place)", &in, 1);
        VO_FREE(&in, &out);
    }
}

void vc_axpy(vo_ctx *x) {
    static const double alpha[] = {-1.3, 0.5, 1.0};
    for (int k = 0; k < 3; k++) {
        const int64_t *d = ew_shapes[k];
        char ds[48];
        vo_case(x, "axpy %s", vo_dims(ds, sizeof ds, 2, d));
        vo_t y = vo_rand(x, 2, d, -1, 1), in = vo_rand(x, 2, d, -2, 2);
        VO_CALL(x, "axpy", chm_axpy(BE, VT(y), VT(in), alpha[k]));
        vo_check(x, "axpy", "y", &y, 1);
        VO_FREE(&y, &in);
    }
}

void vc_sum_rows(vo_ctx *x) {
    static const int64_t shapes[][2] = {{7, 13}, {130, 33}, {1, 5}};
    for (int k = 0; k < 3; k++) {
        int64_t R = shapes[k][0], C = shapes[k][1];
        char ds[48];
        vo_case(x, "sum_rows %s", vo_dims(ds, sizeof ds, 2, shapes[k]));
        vo_t in = vo_rand(x, 2, VD(R, C), -1, 1), out = vo_grad0(x, 1, VD(C));
        VO_CALL(x, "sum_rows", chm_sum_rows(BE, VT(out), VT(in)));
        vo_check(x, "sum_rows", "out", &out, 1);
        VO_FREE(&in, &out);
    }
}

/* ---- matmul ---- */

typedef struct vc_mm {
    int64_t batch, ab, bb, M, K, N;
    bool ta, tb, bias;
    double alpha, beta;
} vc_mm;

/* A [batch?, r, c] operand: 2-D when batch is 1. */
static vo_t vc_mat(vo_ctx *x, int64_t batch, int64_t r, int64_t c) {
    if (batch == 1) return vo_rand(x, 2, VD(r, c), -1, 1);
    return vo_rand(x, 3, VD(batch, r, c), -1, 1);
}

static void matmul_case(vo_ctx *x, const vc_mm *m) {
    vo_case(x, "matmul %lldx%lldx%lld%s%s%s%s a%g b%g", (long long)m->M, (long long)m->K,
            (long long)m->N, m->batch > 1 ? " batched" : "", m->ta ? " tA" : "",
            m->tb ? " tB" : "", m->bias ? " bias" : "", m->alpha, m->beta);
    vo_t A = m->ta ? vc_mat(x, m->ab, m->K, m->M) : vc_mat(x, m->ab, m->M, m->K);
    vo_t B = m->tb ? vc_mat(x, m->bb, m->N, m->K) : vc_mat(x, m->bb, m->K, m->N);
    vo_t C = vc_mat(x, m->batch, m->M, m->N), bias = vo_rand(x, 1, VD(m->N), -1, 1);
    if (m->beta == 0) vo_poison(x, &C); /* beta 0 must ignore C, NaN included */
    VO_CALL(x, "matmul", chm_matmul(BE, VT(C), VT(A), VT(B), VT_IF(m->bias, bias), m->ta, m->tb,
                                    m->alpha, m->beta));
    vo_check(x, "matmul", "C", &C, 1);
    VO_FREE(&A, &B, &C, &bias);
}

void vc_matmul(vo_ctx *x) {
    static const vc_mm cases[] = {
        {1, 1, 1, 7, 13, 5, false, false, false, 1, 0},
        {1, 1, 1, 7, 13, 5, true, false, true, 0.5, 0},
        {1, 1, 1, 33, 65, 17, false, true, true, 1, 1},
        {1, 1, 1, 33, 65, 17, true, true, false, -0.7, 0.3},
        {3, 3, 1, 16, 32, 24, false, true, true, 1, 0},
        {3, 1, 3, 9, 11, 7, false, false, false, 1, 0.5},
        {2, 2, 2, 64, 128, 96, true, false, false, 1, 0},
        {1, 1, 1, 5, 0, 4, false, false, true, 1, 0.5}, /* K = 0: beta*C + bias */
        {1, 1, 1, 1, 1, 1, false, false, false, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) matmul_case(x, &cases[i]);
}

/* One grouped product: experts E with capacity cap; counts {0, some, full}. tail_zero: A's
   rows past the counts zeroed and the tail-zero form called (checked under the op's name). */
static void grouped_case(vo_ctx *x, bool ta, bool tb, double beta, bool tail_zero) {
    int64_t E = 3, cap = 8, K = 13, N = 7, M = 6;
    int32_t counts[3] = {0, 5, 8};
    vo_case(x, "matmul_grouped E%lld cap%lld%s%s b%g", (long long)E, (long long)cap,
            ta ? " tA" : "", tb ? " tB" : "", beta);
    vo_t cnt = vo_ints(x, 1, VD(E), counts), A, B, C;
    if (!ta) { /* C [E,cap,N] = A [E,cap,K] op(B) */
        A = vo_rand(x, 3, VD(E, cap, K), -1, 1);
        B = tb ? vo_rand(x, 3, VD(E, N, K), -1, 1) : vo_rand(x, 3, VD(E, K, N), -1, 1);
        C = vo_rand(x, 3, VD(E, cap, N), -1, 1);
    } else { /* weight gradients: C [E,M,N] = A[e][:n]^T op(B[e])[:n] */
        A = vo_rand(x, 3, VD(E, cap, M), -1, 1);
        B = tb ? vo_rand(x, 3, VD(E, N, cap), -1, 1) : vo_rand(x, 3, VD(E, cap, N), -1, 1);
        C = vo_rand(x, 3, VD(E, M, N), -1, 1);
    }
    if (beta == 0) vo_poison(x, &C);
    if (tail_zero) { /* A again, its rows >= counts[e] zero */
        int64_t cols = ta ? M : K, n = E * cap * cols;
        double *h = malloc((size_t)n * sizeof *h);
        for (int64_t i = 0; h && i < n; i++)
            h[i] = i / cols % cap < counts[i / (cap * cols)] ? vo_uniform(x, -1, 1) : 0.0;
        if (h) vo_set(x, &A, h);
        free(h);
        VO_CALL(x, "matmul_grouped",
                chm_matmul_grouped_tail_zero(BE, VT(C), VT(A), VT(B), VT(cnt), ta, tb,
                                             ta ? 1.0 : 1.5, beta));
    } else {
        VO_CALL(x, "matmul_grouped",
                chm_matmul_grouped(BE, VT(C), VT(A), VT(B), VT(cnt), ta, tb, ta ? 1.0 : 1.5,
                                   beta));
    }
    vo_check(x, "matmul_grouped", tail_zero ? "C (tail-zero)" : "C", &C, 1);
    VO_FREE(&cnt, &A, &B, &C);
}

void vc_matmul_grouped(vo_ctx *x) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int tz = 0; tz < 2; tz++) grouped_case(x, ta, tb, ta == tb ? 0.0 : 0.5, tz);
}

/* ---- normalisation, position, activation, embedding ---- */

void vc_rmsnorm(vo_ctx *x) {
    static const int64_t shapes[][3] = {{1, 7, 13}, {2, 37, 64}, {3, 1, 5}};
    for (int k = 0; k < 3; k++) {
        int64_t B = shapes[k][0], T = shapes[k][1], C = shapes[k][2];
        char ds[48];
        vo_case(x, "rmsnorm %s", vo_dims(ds, sizeof ds, 3, shapes[k]));
        vo_t in = vo_rand(x, 3, VD(B, T, C), -2, 2), w = vo_rand(x, 1, VD(C), 0.5, 1.5);
        vo_t out = vo_new(x, VO_FLOAT, 3, VD(B, T, C)), rstd = vo_new(x, VO_STATS, 2, VD(B, T));
        vo_poison(x, &out);
        vo_poison(x, &rstd);
        VO_CALL(x, "rmsnorm_fwd", chm_rmsnorm_fwd(BE, VT(out), VT(rstd), VT(in), VT(w), 1e-5));
        vo_check(x, "rmsnorm_fwd", "out", &out, 1);
        vo_check(x, "rmsnorm_fwd", "rstd", &rstd, 1);
        vo_share(x, &rstd);
        vo_t dout = vo_rand(x, 3, VD(B, T, C), -1, 1), dx = vo_grad0(x, 3, VD(B, T, C));
        vo_t dw = vo_grad0(x, 1, VD(C));
        VO_CALL(x, "rmsnorm_bwd",
                chm_rmsnorm_bwd(BE, VT(dx), VT(dw), VT(dout), VT(in), VT(w), VT(rstd)));
        vo_check(x, "rmsnorm_bwd", "dx", &dx, 1);
        vo_check(x, "rmsnorm_bwd", "dw", &dw, 1);
        VO_FREE(&in, &w, &out, &rstd, &dout, &dx, &dw);
    }
}

void vc_rope(vo_ctx *x) {
    static const int64_t shapes[][5] = {{2, 7, 3, 16, 0}, {1, 33, 2, 64, 1000}, {1, 3, 1, 2, 5}};
    for (int k = 0; k < 3; k++) {
        const int64_t *d = shapes[k];
        char ds[48];
        vo_case(x, "rope %s pos+%lld", vo_dims(ds, sizeof ds, 4, d), (long long)d[4]);
        vo_t in = vo_rand(x, 4, d, -2, 2), out = vo_new(x, VO_FLOAT, 4, d);
        vo_poison(x, &out);
        VO_CALL(x, "rope_fwd", chm_rope_fwd(BE, VT(out), VT(in), 10000.0, d[4]));
        vo_check(x, "rope_fwd", "out", &out, 1);
        VO_CALL(x, "rope_fwd", chm_rope_fwd(BE, VT(in), VT(in), 500.0, d[4]));
        vo_check(x, "rope_fwd", "out (in place, theta 500)", &in, 1);
        vo_t dout = vo_rand(x, 4, d, -1, 1), dx = vo_grad0(x, 4, d);
        VO_CALL(x, "rope_bwd", chm_rope_bwd(BE, VT(dx), VT(dout), 10000.0, d[4]));
        vo_check(x, "rope_bwd", "dx", &dx, 1);
        VO_FREE(&in, &out, &dout, &dx);
    }
}

void vc_swiglu(vo_ctx *x) {
    static const int64_t shapes[][2] = {{7, 143}, {1, 1}, {3, 64}};
    for (int k = 0; k < 3; k++) {
        const int64_t *d = shapes[k];
        char ds[48];
        vo_case(x, "swiglu %s", vo_dims(ds, sizeof ds, 2, d));
        vo_t g = vo_rand(x, 2, d, -4, 4), u = vo_rand(x, 2, d, -2, 2);
        vo_t out = vo_new(x, VO_FLOAT, 2, d);
        vo_poison(x, &out);
        VO_CALL(x, "swiglu_fwd", chm_swiglu_fwd(BE, VT(out), VT(g), VT(u)));
        vo_check(x, "swiglu_fwd", "out", &out, 1);
        vo_t dout = vo_rand(x, 2, d, -1, 1), dg = vo_grad0(x, 2, d), du = vo_grad0(x, 2, d);
        /* the middle shape writes the gradients (the model's mode), the others accumulate */
        VO_CALL(x, "swiglu_bwd",
                chm_swiglu_bwd(BE, VT(dg), VT(du), VT(dout), VT(g), VT(u), k != 1));
        vo_check(x, "swiglu_bwd", "dgate", &dg, 1);
        vo_check(x, "swiglu_bwd", "dup", &du, 1);
        VO_FREE(&g, &u, &out, &dout, &dg, &du);
    }
}

/* ids [B,T] in [0, V) with repeats; table [V,C]. */
static void embedding_case(vo_ctx *x, int64_t V, int64_t C, int64_t B, int64_t T) {
    vo_case(x, "embedding V%lld C%lld ids %lldx%lld", (long long)V, (long long)C, (long long)B,
            (long long)T);
    int32_t *ids = malloc((size_t)(B * T) * sizeof *ids);
    for (int64_t i = 0; ids && i < B * T; i++) ids[i] = (int32_t)vo_uniform(x, 0, (double)V);
    vo_t tab = vo_rand(x, 2, VD(V, C), -1, 1), id = vo_ints(x, 2, VD(B, T), ids);
    vo_t out = vo_new(x, VO_FLOAT, 3, VD(B, T, C));
    vo_poison(x, &out);
    VO_CALL(x, "embedding_fwd", chm_embedding_fwd(BE, VT(out), VT(id), VT(tab)));
    vo_check(x, "embedding_fwd", "out", &out, 1);
    vo_t dtab = vo_grad0(x, 2, VD(V, C)), dout = vo_rand(x, 3, VD(B, T, C), -1, 1);
    VO_CALL(x, "embedding_bwd", chm_embedding_bwd(BE, VT(dtab), VT(dout), VT(id)));
    vo_check(x, "embedding_bwd", "dtable", &dtab, 1);
    VO_FREE(&tab, &id, &out, &dtab, &dout);
    free(ids);
}

void vc_embedding(vo_ctx *x) {
    embedding_case(x, 11, 33, 7, 10);
    embedding_case(x, 5, 4, 3, 1);
    embedding_case(x, 264, 16, 2, 9);
}

/* ---- the model's small ops: row scaling, exp ---- */

static void row_scale_case(vo_ctx *x, int64_t M, int64_t C, bool sig) {
    const int64_t *mc = VD(M, C);
    vo_case(x, "row_scale %lldx%lld%s", (long long)M, (long long)C, sig ? " sigmoid" : "");
    vo_t in = vo_rand(x, 2, mc, -2, 2), s = vo_rand(x, 1, VD(M), -3, 3);
    vo_t out = vo_new(x, VO_FLOAT, 2, mc);
    vo_poison(x, &out);
    VO_CALL(x, "row_scale_fwd", chm_row_scale_fwd(BE, VT(out), VT(in), VT(s), sig));
    vo_check(x, "row_scale_fwd", "out", &out, 1);
    vo_t dout = vo_rand(x, 2, mc, -1, 1), dx = vo_grad0(x, 2, mc), ds = vo_grad0(x, 1, VD(M));
    vo_t ds2 = vo_grad0(x, 1, VD(M));
    VO_CALL(x, "row_scale_bwd",
            chm_row_scale_bwd(BE, VT(dx), VT(ds), VT(dout), VT(in), VT(s), sig));
    vo_check(x, "row_scale_bwd", "dx", &dx, 1);
    vo_check(x, "row_scale_bwd", "ds", &ds, 1);
    VO_CALL(x, "row_scale_bwd", chm_row_scale_bwd(BE, NULL, VT(ds2), VT(dout), VT(in), VT(s), sig));
    vo_check(x, "row_scale_bwd", "ds (no dx)", &ds2, 1);
    vo_t *set_out[] = {&dx, &ds2}; /* written over NaN, not accumulated */
    for (int i = 0; i < 2; i++) vo_poison(x, set_out[i]);
    VO_CALL(x, "row_scale_bwd",
            chm_row_scale_bwd_set(BE, VT(dx), VT(ds2), VT(dout), VT(in), VT(s), sig));
    vo_check(x, "row_scale_bwd", "dx (set)", &dx, 1);
    vo_check(x, "row_scale_bwd", "ds (set)", &ds2, 1);
    VO_CALL(x, "row_scale_fwd", chm_row_scale_fwd(BE, VT(in), VT(in), VT(s), sig));
    vo_check(x, "row_scale_fwd", "out (in place)", &in, 1);
    VO_FREE(&in, &s, &out, &dout, &dx, &ds, &ds2);
}

void vc_row_scale(vo_ctx *x) {
    row_scale_case(x, 7, 13, true);
    row_scale_case(x, 1, 3, false);
    row_scale_case(x, 33, 65, true);
    row_scale_case(x, 5, 7, false);
}

void vc_exp(vo_ctx *x) {
    static const int64_t shapes[][2] = {{7, 13}, {1, 1}, {33, 101}};
    static const double alpha[] = {-1.0, 0.5, -1.0};
    for (int k = 0; k < 3; k++) {
        const int64_t *d = shapes[k];
        char ds[48];
        vo_case(x, "exp %s alpha %g", vo_dims(ds, sizeof ds, 2, d), alpha[k]);
        vo_t in = vo_rand(x, 2, d, -3, 1.5), out = vo_new(x, VO_FLOAT, 2, d);
        vo_poison(x, &out);
        VO_CALL(x, "exp_fwd", chm_exp_fwd(BE, VT(out), VT(in), alpha[k]));
        vo_check(x, "exp_fwd", "out", &out, 1);
        vo_share(x, &out);
        vo_t dout = vo_rand(x, 2, d, -1, 1), dx = vo_grad0(x, 2, d);
        VO_CALL(x, "exp_bwd", chm_exp_bwd(BE, VT(dx), VT(dout), VT(out)));
        vo_check(x, "exp_bwd", "dx", &dx, 1);
        VO_CALL(x, "exp_fwd", chm_exp_fwd(BE, VT(in), VT(in), alpha[k]));
        vo_check(x, "exp_fwd", "out (in place)", &in, 1);
        VO_FREE(&in, &out, &dout, &dx);
    }
}

/* ---- gradient norm and optimizer ---- */

void vc_sum_squares(vo_ctx *x) {
    static const int64_t shapes[][2] = {{7, 1001}, {1, 1}, {3, 5}};
    for (int k = 0; k < 3; k++) {
        char ds[48];
        vo_case(x, "sum_squares %s", vo_dims(ds, sizeof ds, 2, shapes[k]));
        vo_t in = vo_rand(x, 2, shapes[k], -1, 1), out = vo_new(x, VO_STATS, 1, VD(1));
        vo_poison(x, &out);
        VO_CALL(x, "sum_squares", chm_sum_squares(BE, VT(out), VT(in)));
        vo_check(x, "sum_squares", "out", &out, 1);
        VO_FREE(&in, &out);
    }
}

void vc_adamw(vo_ctx *x) {
    static const int64_t sizes[] = {1001, 7, 1};
    for (int k = 0; k < 3; k++) {
        int64_t n = sizes[k];
        vo_case(x, "adamw_step %lld", (long long)n);
        /* f32 master weights and moments (f64 on the reference), gradients in the pass's dtype */
        vo_t p = vo_rand_as(x, VO_STATS, 1, VD(n), -1, 1), g = vo_rand(x, 1, VD(n), -1, 1);
        vo_t m = vo_rand_as(x, VO_STATS, 1, VD(n), -0.01, 0.01);
        vo_t v = vo_rand_as(x, VO_STATS, 1, VD(n), 1e-6, 1e-3);
        vo_t lowp = vo_new(x, CHM_BF16, 1, VD(n));
        chm_adamw_args a = {1e-3, 0.9, 0.95, 1e-8, 0.1, 7 + k, 0.5};
        if (x->lowp) vo_poison(x, &lowp); /* the bf16 pass also writes the rounded copy */
        VO_CALL(x, "adamw_step",
                chm_adamw_step(BE, VT(p), VT(g), VT(m), VT(v), VT_IF(x->lowp, lowp), &a));
        vo_check(x, "adamw_step", "param", &p, 1);
        vo_check(x, "adamw_step", "m", &m, 1);
        vo_check(x, "adamw_step", "v", &v, 1);
        if (x->lowp) vo_check(x, "adamw_step", "param_lowp", &lowp, 1);
        VO_FREE(&p, &g, &m, &v, &lowp);
    }
}
