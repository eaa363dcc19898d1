/*
 * test_attention.c: causal grouped-query attention (forward, backward, checks).
 *
 * The forward is compared with a naive f64 loop (out and lse), causality is
 * checked by changing future keys, the backward against central finite
 * differences of L = sum(out * R), and accumulation against G0 + grad.
 */
#include "testutil.h"

/* One shape: q [B,T,H,D], k and v [B,T,Hk,D]. */
typedef struct attn_case {
    int64_t B, T, H, Hk, D;
} attn_case;

/* The tensors of one case on the backend. */
typedef struct attn_bufs {
    attn_case c;
    tt_tensor q, k, v, out, lse, dout, dq, dk, dv;
} attn_bufs;

static int64_t nq(const attn_case *c) { return c->B * c->T * c->H * c->D; }
static int64_t nkv(const attn_case *c) { return c->B * c->T * c->Hk * c->D; }
static int64_t nlse(const attn_case *c) { return c->B * c->H * c->T; }

/* n uniform values, rounded to f32 when the op runs in f32 (so the reference sees the same). */
static double *rand_vec(tt_rng *r, int64_t n, double lo, double hi, chm_dtype dt) {
    double *x = tt_dalloc(n);
    tt_fill_uniform(r, x, n, lo, hi);
    if (dt == CHM_F32)
        for (int64_t i = 0; i < n; i++) x[i] = (float)x[i];
    return x;
}

static attn_bufs attn_alloc(chm_backend *be, chm_dtype dt, attn_case c) {
    attn_bufs t = {.c = c};
    int64_t qs[4] = {c.B, c.T, c.H, c.D}, ks[4] = {c.B, c.T, c.Hk, c.D};
    int64_t ls[3] = {c.B, c.H, c.T};
    t.q = tt_alloc(be, dt, 4, qs);
    t.out = tt_alloc(be, dt, 4, qs);
    t.dout = tt_alloc(be, dt, 4, qs);
    t.dq = tt_alloc(be, dt, 4, qs);
    t.k = tt_alloc(be, dt, 4, ks);
    t.v = tt_alloc(be, dt, 4, ks);
    t.dk = tt_alloc(be, dt, 4, ks);
    t.dv = tt_alloc(be, dt, 4, ks);
    t.lse = tt_alloc(be, chm_dtype_stats(dt), 3, ls);
    return t;
}

static void attn_free(attn_bufs *t) {
    tt_tensor *all[] = {&t->q, &t->k, &t->v, &t->out, &t->lse, &t->dout, &t->dq, &t->dk, &t->dv};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) tt_free(all[i]);
}

/* Upload q, k, v, run the forward into poisoned outputs, download out (and lse when asked). */
static void attn_run_fwd(chm_backend *be, attn_bufs *t, const double *q, const double *k,
                         const double *v, double scale, double *out, double *lse) {
    tt_upload(be, &t->q, q);
    tt_upload(be, &t->k, k);
    tt_upload(be, &t->v, v);
    tt_poison(be, &t->out);
    tt_poison(be, &t->lse);
    chm_status rc = chm_attention_fwd(be, &t->out.t, &t->lse.t, &t->q.t, &t->k.t, &t->v.t, scale);
    cr_assert_eq(rc, CHM_OK, "%s", be->err.msg);
    tt_download(be, &t->out, out);
    if (lse) tt_download(be, &t->lse, lse);
}

/* Naive causal GQA attention in f64. */
static void ref_attention(const attn_case *c, const double *q, const double *k, const double *v,
                          double scale, double *out, double *lse) {
    int64_t T = c->T, H = c->H, Hk = c->Hk, D = c->D;
    double *s = tt_dalloc(T);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < T; i++) {
                int64_t g = h / (H / Hk);
                const double *qi = q + ((b * T + i) * H + h) * D;
                double m = -INFINITY, sum = 0;
                for (int64_t j = 0; j <= i; j++) {
                    const double *kj = k + ((b * T + j) * Hk + g) * D;
                    s[j] = 0;
                    for (int64_t e = 0; e < D; e++) s[j] += qi[e] * kj[e];
                    s[j] *= scale;
                    m = fmax(m, s[j]);
                }
                for (int64_t j = 0; j <= i; j++) sum += exp(s[j] - m);
                lse[(b * H + h) * T + i] = m + log(sum);
                double *oi = out + ((b * T + i) * H + h) * D;
                for (int64_t e = 0; e < D; e++) {
                    oi[e] = 0;
                    for (int64_t j = 0; j <= i; j++)
                        oi[e] += exp(s[j] - m) / sum * v[((b * T + j) * Hk + g) * D + e];
                }
            }
    free(s);
}

static const attn_case fwd_cases[] = {
    {1, 1, 2, 2, 3},  /* T = 1, H = Hk */
    {2, 7, 4, 2, 8},  /* GQA 2:1 */
    {1, 7, 6, 1, 16}, /* all heads share one kv head */
    {2, 13, 3, 3, 5}, /* odd sizes */
};

static void check_forward(chm_dtype dt, attn_case c, uint64_t seed) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(seed);
    attn_bufs t = attn_alloc(be, dt, c);
    double *q = rand_vec(&r, nq(&c), -1, 1, dt), *k = rand_vec(&r, nkv(&c), -1, 1, dt);
    double *v = rand_vec(&r, nkv(&c), -1, 1, dt);
    double *out = tt_dalloc(nq(&c)), *lse = tt_dalloc(nlse(&c));
    double *want = tt_dalloc(nq(&c)), *want_lse = tt_dalloc(nlse(&c));
    double scale = 1.0 / sqrt((double)c.D) * 1.7;
    attn_run_fwd(be, &t, q, k, v, scale, out, lse);
    ref_attention(&c, q, k, v, scale, want, want_lse);
    tt_assert_close("out", out, want, nq(&c), TT_ATOL(dt), TT_RTOL(dt));
    tt_assert_close("lse", lse, want_lse, nlse(&c), TT_ATOL(dt), TT_RTOL(dt));
    free(q), free(k), free(v), free(out), free(lse), free(want), free(want_lse);
    attn_free(&t);
    chm_backend_close(be);
}

Test(attention, forward_matches_naive) {
    for (size_t i = 0; i < sizeof fwd_cases / sizeof *fwd_cases; i++) {
        check_forward(CHM_F32, fwd_cases[i], 10 + i);
        check_forward(CHM_F64, fwd_cases[i], 20 + i);
    }
}

Test(attention, future_keys_do_not_change_the_past) {
    chm_backend *be = tt_open_cpu();
    attn_case c = {2, 9, 4, 2, 5};
    tt_rng r = tt_rng_make(3);
    attn_bufs t = attn_alloc(be, CHM_F32, c);
    double *q = rand_vec(&r, nq(&c), -1, 1, CHM_F32), *k = rand_vec(&r, nkv(&c), -1, 1, CHM_F32);
    double *v = rand_vec(&r, nkv(&c), -1, 1, CHM_F32);
    double *a = tt_dalloc(nq(&c)), *b = tt_dalloc(nq(&c));
    attn_run_fwd(be, &t, q, k, v, 0.5, a, NULL);
    int64_t t0 = 4, row = c.Hk * c.D;
    for (int64_t bi = 0; bi < c.B; bi++)
        for (int64_t i = (bi * c.T + t0 + 1) * row; i < (bi + 1) * c.T * row; i++) {
            k[i] += 0.5;
            v[i] -= 0.75;
        }
    attn_run_fwd(be, &t, q, k, v, 0.5, b, NULL);
    int64_t qrow = c.H * c.D, changed = 0;
    for (int64_t bi = 0; bi < c.B; bi++)
        for (int64_t i = 0; i < c.T; i++)
            for (int64_t e = 0; e < qrow; e++) {
                int64_t at = (bi * c.T + i) * qrow + e;
                if (i <= t0)
                    cr_assert_eq(a[at], b[at], "b=%lld t=%lld changed", (long long)bi,
                                 (long long)i);
                else
                    changed += a[at] != b[at];
            }
    cr_assert(changed > 0, "later outputs should see the changed keys");
    free(q), free(k), free(v), free(a), free(b);
    attn_free(&t);
    chm_backend_close(be);
}

/* Inputs of a finite-difference run: in[0..2] = q, k, v on the host. */
typedef struct attn_fd {
    chm_backend *be;
    attn_bufs *t;
    double *in[3], *R, *out, scale;
} attn_fd;

static double attn_loss(attn_fd *f) {
    attn_run_fwd(f->be, f->t, f->in[0], f->in[1], f->in[2], f->scale, f->out, NULL);
    double L = 0;
    for (int64_t i = 0; i < nq(&f->t->c); i++) L += f->out[i] * f->R[i];
    return L;
}

/* Central differences of the loss with respect to every element of x[n]. */
static void attn_fd_grad(attn_fd *f, double *x, int64_t n, double *g) {
    for (int64_t i = 0; i < n; i++) {
        double x0 = x[i], h = 1e-6 * fmax(1.0, fabs(x0));
        x[i] = x0 + h;
        double lp = attn_loss(f);
        x[i] = x0 - h;
        double lm = attn_loss(f);
        x[i] = x0;
        g[i] = (lp - lm) / (2 * h);
    }
}

static void assert_grad(const char *what, const double *got, const double *want, int64_t n) {
    double err = tt_rel_l2(got, want, n);
    cr_assert(err < 1e-6, "%s: relative L2 error %g against finite differences", what, err);
}

/* Run the backward on the current inputs with dout = R; gradients start at g0 (3 arrays). */
static void attn_run_bwd(attn_fd *f, double *const g0[3], double *const grads[3]) {
    attn_bufs *t = f->t;
    attn_run_fwd(f->be, t, f->in[0], f->in[1], f->in[2], f->scale, f->out, NULL);
    tt_upload(f->be, &t->dout, f->R);
    tt_tensor *gt[3] = {&t->dq, &t->dk, &t->dv};
    for (int i = 0; i < 3; i++) tt_upload(f->be, gt[i], g0[i]);
    chm_status rc = chm_attention_bwd(f->be, &t->dq.t, &t->dk.t, &t->dv.t, &t->dout.t, &t->q.t,
                                      &t->k.t, &t->v.t, &t->out.t, &t->lse.t, f->scale);
    cr_assert_eq(rc, CHM_OK, "%s", f->be->err.msg);
    for (int i = 0; i < 3; i++) tt_download(f->be, gt[i], grads[i]);
}

static void check_backward(attn_case c, uint64_t seed) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(seed);
    attn_bufs t = attn_alloc(be, CHM_F64, c);
    int64_t n[3] = {nq(&c), nkv(&c), nkv(&c)};
    attn_fd f = {be, &t, {NULL, NULL, NULL}, rand_vec(&r, nq(&c), -1, 1, CHM_F64),
                 tt_dalloc(nq(&c)), 0.8};
    double *g0[3], *got[3], *want[3];
    for (int i = 0; i < 3; i++) {
        f.in[i] = rand_vec(&r, n[i], -1, 1, CHM_F64);
        g0[i] = tt_dalloc(n[i]);
        got[i] = tt_dalloc(n[i]);
        want[i] = tt_dalloc(n[i]);
    }
    attn_run_bwd(&f, g0, got);
    const char *names[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++) {
        attn_fd_grad(&f, f.in[i], n[i], want[i]);
        assert_grad(names[i], got[i], want[i], n[i]);
    }
    for (int i = 0; i < 3; i++) free(f.in[i]), free(g0[i]), free(got[i]), free(want[i]);
    free(f.R), free(f.out);
    attn_free(&t);
    chm_backend_close(be);
}

Test(attention, backward_matches_finite_differences) {
    check_backward((attn_case){2, 5, 4, 2, 3}, 31);
    check_backward((attn_case){1, 4, 3, 1, 2}, 32);
    check_backward((attn_case){1, 3, 2, 2, 8}, 33);
}

static void check_accumulates(chm_dtype dt) {
    chm_backend *be = tt_open_cpu();
    attn_case c = {2, 6, 4, 2, 3};
    tt_rng r = tt_rng_make(41);
    attn_bufs t = attn_alloc(be, dt, c);
    int64_t n[3] = {nq(&c), nkv(&c), nkv(&c)};
    attn_fd f = {be, &t, {NULL, NULL, NULL}, rand_vec(&r, nq(&c), -1, 1, dt), tt_dalloc(nq(&c)),
                 0.6};
    double *zero[3], *g0[3], *grad[3], *got[3];
    for (int i = 0; i < 3; i++) {
        f.in[i] = rand_vec(&r, n[i], -1, 1, dt);
        zero[i] = tt_dalloc(n[i]);
        g0[i] = rand_vec(&r, n[i], -2, 2, dt);
        grad[i] = tt_dalloc(n[i]);
        got[i] = tt_dalloc(n[i]);
    }
    attn_run_bwd(&f, zero, grad);
    attn_run_bwd(&f, g0, got);
    for (int i = 0; i < 3; i++) {
        for (int64_t j = 0; j < n[i]; j++) grad[i][j] += g0[i][j];
        tt_assert_close("G0 + grad", got[i], grad[i], n[i], TT_ATOL(dt), TT_RTOL(dt));
    }
    for (int i = 0; i < 3; i++)
        free(f.in[i]), free(zero[i]), free(g0[i]), free(grad[i]), free(got[i]);
    free(f.R), free(f.out);
    attn_free(&t);
    chm_backend_close(be);
}

Test(attention, backward_accumulates) {
    check_accumulates(CHM_F32);
    check_accumulates(CHM_F64);
}

Test(attention, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    attn_bufs t = attn_alloc(be, CHM_F32, (attn_case){1, 4, 4, 2, 3});
    attn_bufs odd = attn_alloc(be, CHM_F32, (attn_case){1, 4, 4, 3, 3});
    tt_tensor lse64 = tt_alloc(be, CHM_F64, 3, (int64_t[]){1, 4, 4});
    tt_tensor lse_bad = tt_alloc(be, CHM_F32, 3, (int64_t[]){1, 4, 3});
    const char *fw = "attention_fwd", *bw = "attention_bwd";
    tt_expect_fail(be, chm_attention_fwd(be, &odd.out.t, &odd.lse.t, &odd.q.t, &odd.k.t, &odd.v.t, 1),
                CHM_ERR_SHAPE, fw, "kv heads");
    tt_expect_fail(be, chm_attention_fwd(be, &t.out.t, &lse64.t, &t.q.t, &t.k.t, &t.v.t, 1),
                CHM_ERR_DTYPE, fw, "lse");
    tt_expect_fail(be, chm_attention_fwd(be, &t.out.t, &lse_bad.t, &t.q.t, &t.k.t, &t.v.t, 1),
                CHM_ERR_SHAPE, fw, "lse");
    tt_expect_fail(be, chm_attention_fwd(be, &t.q.t, &t.lse.t, &t.q.t, &t.k.t, &t.v.t, 1),
                CHM_ERR_INVALID_ARG, fw, "out overlaps q");
    tt_expect_fail(be, chm_attention_fwd(be, &t.out.t, &t.lse.t, &t.q.t, &t.k.t, &t.v.t, NAN),
                CHM_ERR_INVALID_ARG, fw, "scale");
    tt_expect_fail(be, chm_attention_fwd(be, &t.out.t, &t.lse.t, &t.q.t, &t.k.t, &t.v.t, 0),
                CHM_ERR_INVALID_ARG, fw, "scale");
    tt_expect_fail(be, chm_attention_fwd(be, &t.out.t, &t.lse.t, &t.q.t, &t.k.t, &t.out.t, 1),
                CHM_ERR_SHAPE, fw, "v and k");
    tt_expect_fail(be, chm_attention_bwd(be, &t.dq.t, &t.dq.t, &t.dv.t, &t.dout.t, &t.q.t, &t.k.t,
                                      &t.v.t, &t.out.t, &t.lse.t, 1),
                CHM_ERR_SHAPE, bw, "dk");
    tt_expect_fail(be, chm_attention_bwd(be, &t.dq.t, &t.dk.t, &t.k.t, &t.dout.t, &t.q.t, &t.k.t,
                                      &t.v.t, &t.out.t, &t.lse.t, 1),
                CHM_ERR_INVALID_ARG, bw, "dv overlaps k");
    tt_free(&lse64);
    tt_free(&lse_bad);
    attn_free(&odd);
    attn_free(&t);
    chm_backend_close(be);
}
