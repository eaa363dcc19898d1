/*
 * verify_cases_seq.c: op cases of the op phase for the sequence mixers:
 * causal attention (forward, backward, decoding against a cache), the
 * Mamba-1 selective scan (forward, backward, continued from a state) and
 * the causal depthwise conv1d. Shapes cover GQA, T = 1, odd widths and
 * every optional tensor present and absent. Dimension letters as in tensor.h.
 */
#include <math.h>
#include <stdlib.h>

#include "verify_ops.h"

/* ---- attention ---- */

/* q [B,T,H,D], k/v [B,T,Hk,D]: forward, then backward from the reference's out and lse. */
static void attention_case(vo_ctx *x, int64_t B, int64_t T, int64_t H, int64_t Hk, int64_t D) {
    double scale = 1.0 / sqrt((double)D);
    vo_case(x, "attention %lldx%lld h%lld/%lld d%lld", (long long)B, (long long)T, (long long)H,
            (long long)Hk, (long long)D);
    const int64_t *qs = VD(B, T, H, D), *ks = VD(B, T, Hk, D);
    vo_t q = vo_rand(x, 4, qs, -1, 1), k = vo_rand(x, 4, ks, -1, 1), v = vo_rand(x, 4, ks, -1, 1);
    vo_t out = vo_new(x, VO_FLOAT, 4, qs), lse = vo_new(x, VO_STATS, 3, VD(B, H, T));
    vo_poison(x, &out);
    vo_poison(x, &lse);
    VO_CALL(x, "attention_fwd",
            chm_attention_fwd(BE, VT(out), VT(lse), VT(q), VT(k), VT(v), scale));
    vo_check(x, "attention_fwd", "out", &out, 1);
    vo_check(x, "attention_fwd", "lse", &lse, 1);
    vo_share(x, &out);
    vo_share(x, &lse);
    vo_t dout = vo_rand(x, 4, qs, -1, 1), dq = vo_grad0(x, 4, qs);
    vo_t dk = vo_grad0(x, 4, ks), dv = vo_grad0(x, 4, ks);
    VO_CALL(x, "attention_bwd", chm_attention_bwd(BE, VT(dq), VT(dk), VT(dv), VT(dout), VT(q),
                                                  VT(k), VT(v), VT(out), VT(lse), scale));
    vo_check(x, "attention_bwd", "dq", &dq, 1);
    vo_check(x, "attention_bwd", "dk", &dk, 1);
    vo_check(x, "attention_bwd", "dv", &dv, 1);
    VO_FREE(&q, &k, &v, &out, &lse, &dout, &dq, &dk, &dv);
}

void vc_attention(vo_ctx *x) {
    attention_case(x, 1, 7, 2, 1, 16);
    attention_case(x, 2, 37, 4, 2, 16);
    attention_case(x, 1, 33, 2, 2, 64);
    attention_case(x, 1, 1, 1, 1, 8);
}

/* q [B,Tq,H,D] against k/v [B,Tk,Hk,D]. */
static void decode_case(vo_ctx *x, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Hk,
                        int64_t D) {
    vo_case(x, "attention_decode %lldx%lld/%lld h%lld/%lld d%lld", (long long)B, (long long)Tq,
            (long long)Tk, (long long)H, (long long)Hk, (long long)D);
    vo_t q = vo_rand(x, 4, VD(B, Tq, H, D), -1, 1), k = vo_rand(x, 4, VD(B, Tk, Hk, D), -1, 1);
    vo_t v = vo_rand(x, 4, VD(B, Tk, Hk, D), -1, 1), out = vo_new(x, VO_FLOAT, 4, VD(B, Tq, H, D));
    vo_poison(x, &out);
    VO_CALL(x, "attention_decode",
            chm_attention_decode(BE, VT(out), VT(q), VT(k), VT(v), 1.0 / sqrt((double)D)));
    vo_check(x, "attention_decode", "out", &out, 1);
    VO_FREE(&q, &k, &v, &out);
}

void vc_attention_decode(vo_ctx *x) {
    decode_case(x, 2, 1, 37, 4, 2, 16);
    decode_case(x, 1, 5, 33, 2, 1, 64);
    decode_case(x, 2, 7, 7, 3, 3, 13);
}

/* ---- the selective scan ---- */

typedef struct vc_scan {
    int64_t B, T, Di, N;
    bool D, z, bias, softplus;
} vc_scan;

/* The scan's inputs on every side: u, delta, A, Bm, Cm, D, z, delta_bias. */
typedef struct vc_scan_in {
    vo_t in[8];
    chm_scan_args a[VO_MAX_SIDES];
} vc_scan_in;

/* Inputs in the ranges the model feeds: A = -exp(.) < 0; delta > 0 without softplus. */
static void scan_inputs(vo_ctx *x, const vc_scan *c, vc_scan_in *s) {
    const int64_t *btd = VD(c->B, c->T, c->Di), *btn = VD(c->B, c->T, c->N);
    s->in[0] = vo_rand(x, 3, btd, -1, 1);
    s->in[1] = c->softplus ? vo_rand(x, 3, btd, -3, 1) : vo_rand(x, 3, btd, 0.01, 0.5);
    s->in[2] = vo_new(x, VO_FLOAT, 2, VD(c->Di, c->N));
    double *h = malloc((size_t)(c->Di * c->N) * sizeof *h);
    for (int64_t i = 0; h && i < c->Di * c->N; i++) h[i] = -exp(vo_uniform(x, -1, 1.5));
    if (h) vo_set(x, &s->in[2], h);
    free(h);
    s->in[3] = vo_rand(x, 3, btn, -1, 1);
    s->in[4] = vo_rand(x, 3, btn, -1, 1);
    s->in[5] = vo_rand(x, 1, VD(c->Di), -1, 1);
    s->in[6] = vo_rand(x, 3, btd, -2, 2);
    s->in[7] = vo_rand(x, 1, VD(c->Di), -1, 0);
    for (int k = 0; k < x->n; k++) {
        vo_t *v = s->in;
        s->a[k] = (chm_scan_args){&v[0].t[k], &v[1].t[k], &v[2].t[k], &v[3].t[k], &v[4].t[k],
                                  c->D ? &v[5].t[k] : NULL, c->z ? &v[6].t[k] : NULL,
                                  c->bias ? &v[7].t[k] : NULL, c->softplus, NULL, 0, NULL};
    }
}

static void scan_free(vc_scan_in *s) {
    for (int i = 0; i < 8; i++) VO_FREE(&s->in[i]);
}

static void scan_name(vo_ctx *x, const char *op, const vc_scan *c) {
    vo_case(x, "%s %lldx%lldx%lld n%lld%s%s%s%s", op, (long long)c->B, (long long)c->T,
            (long long)c->Di, (long long)c->N, c->D ? " D" : "", c->z ? " z" : "",
            c->bias ? " bias" : "", c->softplus ? " softplus" : "");
}

/* Backward: every gradient the case has, accumulating into random starts. */
static void scan_backward(vo_ctx *x, const vc_scan *c, vc_scan_in *s) {
    static const char *const names[8] = {"du", "ddelta", "dA", "dBm", "dCm", "dD", "dz",
                                         "ddelta_bias"};
    bool present[8] = {true, true, true, true, true, c->D, c->z, c->bias};
    vo_t g[8], dy = vo_rand(x, 3, VD(c->B, c->T, c->Di), -1, 1);
    chm_scan_grads gr[VO_MAX_SIDES];
    for (int i = 0; i < 8; i++) g[i] = vo_grad0(x, s->in[i].t[0].ndim, s->in[i].t[0].shape);
    for (int k = 0; k < x->n; k++) {
        chm_tensor *p[8];
        for (int i = 0; i < 8; i++) p[i] = present[i] ? &g[i].t[k] : NULL;
        gr[k] = (chm_scan_grads){p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]};
    }
    VO_CALL(x, "selective_scan_bwd",
            chm_selective_scan_bwd(BE, &gr[VO_SIDE], VT(dy), &s->a[VO_SIDE]));
    for (int i = 0; i < 8; i++)
        if (present[i]) vo_check(x, "selective_scan_bwd", names[i], &g[i], 1);
    for (int i = 0; i < 8; i++) VO_FREE(&g[i]);
    VO_FREE(&dy);
}

static void scan_case(vo_ctx *x, const vc_scan *c) {
    vc_scan_in s;
    scan_name(x, "selective_scan", c);
    scan_inputs(x, c, &s);
    vo_t y = vo_new(x, VO_FLOAT, 3, VD(c->B, c->T, c->Di));
    vo_poison(x, &y);
    VO_CALL(x, "selective_scan_fwd", chm_selective_scan_fwd(BE, VT(y), &s.a[VO_SIDE]));
    vo_check(x, "selective_scan_fwd", "y", &y, 1);
    scan_backward(x, c, &s);
    VO_FREE(&y);
    scan_free(&s);
}

void vc_selective_scan(vo_ctx *x) {
    static const vc_scan cases[] = {
        {2, 37, 20, 16, true, true, true, true},
        {1, 1, 5, 3, false, false, false, false},
        {2, 50, 13, 5, true, false, true, true},
        {1, 16, 8, 4, false, true, false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) scan_case(x, &cases[i]);
}

/* The scan continued from a random state h [B,Di,N]: y and the final h. */
static void scan_step_case(vo_ctx *x, const vc_scan *c) {
    vc_scan_in s;
    scan_name(x, "selective_scan_step", c);
    scan_inputs(x, c, &s);
    vo_t y = vo_new(x, VO_FLOAT, 3, VD(c->B, c->T, c->Di));
    vo_t h = vo_rand(x, 3, VD(c->B, c->Di, c->N), -1, 1);
    vo_poison(x, &y);
    VO_CALL(x, "selective_scan_step", chm_selective_scan_step(BE, VT(y), VT(h), &s.a[VO_SIDE]));
    vo_check(x, "selective_scan_step", "y", &y, 1);
    vo_check(x, "selective_scan_step", "h", &h, 1);
    VO_FREE(&y, &h);
    scan_free(&s);
}

void vc_selective_scan_step(vo_ctx *x) {
    static const vc_scan cases[] = {
        {2, 1, 20, 16, true, true, true, true},
        {1, 5, 13, 5, false, false, false, false},
        {1, 1, 1, 1, false, true, false, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) scan_step_case(x, &cases[i]);
}

/* ---- causal conv1d ---- */

/* x [B,T,C], w [C,W], bias [C] optional. */
static void conv_case(vo_ctx *x, int64_t B, int64_t T, int64_t C, int64_t W, bool silu,
                      bool has_bias) {
    vo_case(x, "causal_conv1d %lldx%lldx%lld w%lld%s%s", (long long)B, (long long)T, (long long)C,
            (long long)W, silu ? " silu" : "", has_bias ? " bias" : "");
    const int64_t *btc = VD(B, T, C);
    vo_t in = vo_rand(x, 3, btc, -2, 2), w = vo_rand(x, 2, VD(C, W), -1, 1);
    vo_t bias = vo_rand(x, 1, VD(C), -1, 1), out = vo_new(x, VO_FLOAT, 3, btc);
    vo_poison(x, &out);
    VO_CALL(x, "causal_conv1d_fwd",
            chm_causal_conv1d_fwd(BE, VT(out), VT(in), VT(w), VT_IF(has_bias, bias), silu));
    vo_check(x, "causal_conv1d_fwd", "out", &out, 1);
    vo_t dout = vo_rand(x, 3, btc, -1, 1), dx = vo_grad0(x, 3, btc);
    vo_t dw = vo_grad0(x, 2, VD(C, W)), db = vo_grad0(x, 1, VD(C));
    VO_CALL(x, "causal_conv1d_bwd",
            chm_causal_conv1d_bwd(BE, VT(dx), VT(dw), VT_IF(has_bias, db), VT(dout), VT(in),
                                  VT(w), VT_IF(has_bias, bias), silu));
    vo_check(x, "causal_conv1d_bwd", "dx", &dx, 1);
    vo_check(x, "causal_conv1d_bwd", "dw", &dw, 1);
    if (has_bias) vo_check(x, "causal_conv1d_bwd", "dbias", &db, 1);
    /* the model's call: dx written over whatever it held, dw and dbias accumulated */
    vo_poison(x, &dx);
    VO_CALL(x, "causal_conv1d_bwd",
            chm_causal_conv1d_bwd_set_dx(BE, VT(dx), VT(dw), VT_IF(has_bias, db), VT(dout),
                                         VT(in), VT(w), VT_IF(has_bias, bias), silu));
    vo_check(x, "causal_conv1d_bwd", "dx (set_dx)", &dx, 1);
    vo_check(x, "causal_conv1d_bwd", "dw (set_dx)", &dw, 1);
    VO_FREE(&in, &w, &bias, &out, &dout, &dx, &dw, &db);
}

void vc_causal_conv1d(vo_ctx *x) {
    conv_case(x, 2, 37, 20, 4, true, true);
    conv_case(x, 1, 5, 3, 1, false, false);
    conv_case(x, 2, 30, 13, 3, true, false);
}
