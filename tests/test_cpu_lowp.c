/*
 * test_cpu_lowp.c: bf16 and f16 tensors on the cpu backend (lowp.c).
 *
 * Every float op, forward and backward, runs twice on the same values: once
 * with its float tensors in bf16 (or f16), once in f32 holding the 16-bit
 * values exactly. Gradients start at the same random rounded G0 in both runs,
 * outputs are poisoned (NaN, or -7 for I32) in both. Then every argument must
 * agree: a 16-bit tensor bit for bit with the f32 run's tensor rounded to
 * nearest even (inputs thus unchanged, outputs fully written), stats, f64 and
 * I32 tensors exactly. The ops are described by a table (one case per op and
 * variant); aliased arguments (add's out == a, cross_entropy's dlogits ==
 * logits, ...) are cases too. Then adamw with 16-bit grads and param_lowp, a
 * failing op that must leave its 16-bit outputs alone, and the wrapper
 * rejections that 16-bit support must not lift.
 */
#include "core/half.h"
#include "testutil.h"

#define MAXA 18      /* the most arguments of a case (selective_scan_bwd: 17) */
#define I32_POISON (-7)

/* How an argument's dtype follows the run: */
typedef enum arg_cls {
    LP,   /* the op's float dtype: bf16/f16 in the 16-bit run, the reference dtype in the other */
    ST,   /* f32 in both runs (stats of a 16-bit op; f32 master weights) */
    F64,  /* f64 in both runs */
    H16,  /* 16-bit in both runs (adamw's param_lowp) */
    I32   /* indices */
} arg_cls;

typedef enum arg_role { IN, OUT, ACC } arg_role;  /* ACC: starts at random values, written */

/* One argument of a case: class, role, shape, value range; or an alias of an earlier one. */
typedef struct arg_spec {
    arg_cls cls;
    arg_role role;
    int ndim;
    int64_t shape[4];
    double lo, hi;  /* floats: uniform in [lo, hi) ([-1, 1) when equal); I32: ints in [lo, hi] */
    /* 1 + index of an earlier argument whose bytes this one is (0: none); it keeps that
     * argument's shape unless ndim > 0 gives another one (a reshape) */
    int same;
} arg_spec;

/* The op call of a case, on its tensors in table order. */
typedef chm_status (*op_call)(chm_backend *be, const chm_tensor *const *t);

typedef struct op_case {
    const char *name;
    op_call call;
    int n;
    arg_spec a[MAXA];
    chm_dtype ref;  /* LP's dtype in the reference run: f32 (zero) or f64 (adamw's f64 master) */
} op_case;

/* Argument shorthands: float in/out/accumulated, stats, f64, 16-bit, I32, alias. */
#define X(nd, ...) {LP, IN, nd, {__VA_ARGS__}, 0, 0, 0}
#define XR(lo, hi, nd, ...) {LP, IN, nd, {__VA_ARGS__}, lo, hi, 0}
#define O(nd, ...) {LP, OUT, nd, {__VA_ARGS__}, 0, 0, 0}
#define G(nd, ...) {LP, ACC, nd, {__VA_ARGS__}, 0, 0, 0}
#define SI(lo, hi, nd, ...) {ST, IN, nd, {__VA_ARGS__}, lo, hi, 0}
#define SO(nd, ...) {ST, OUT, nd, {__VA_ARGS__}, 0, 0, 0}
#define SG(lo, hi, nd, ...) {ST, ACC, nd, {__VA_ARGS__}, lo, hi, 0}
#define DG(lo, hi, nd, ...) {F64, ACC, nd, {__VA_ARGS__}, lo, hi, 0}
#define DO(nd, ...) {F64, OUT, nd, {__VA_ARGS__}, 0, 0, 0}
#define HO(nd, ...) {H16, OUT, nd, {__VA_ARGS__}, 0, 0, 0}
#define II(lo, hi, nd, ...) {I32, IN, nd, {__VA_ARGS__}, lo, hi, 0}
#define IO(nd, ...) {I32, OUT, nd, {__VA_ARGS__}, 0, 0, 0}
#define SAME(i) {.same = (i) + 1}
#define SAME_AS(i, nd, ...) {.same = (i) + 1, .ndim = nd, .shape = {__VA_ARGS__}}

/* A table entry: name, call, argument count, then the arguments. */
#define CASE(nm, fn, cnt, ...) {.name = nm, .call = fn, .n = cnt, .a = {__VA_ARGS__}}

static const chm_dtype LOWP[] = {CHM_BF16, CHM_F16};

/* ---- 16-bit values ---- */

static uint16_t round16(chm_dtype dt, float f) {
    return dt == CHM_BF16 ? chm_f32_to_bf16(f) : chm_f32_to_f16(f);
}

static float widen16(chm_dtype dt, uint16_t h) {
    return dt == CHM_BF16 ? chm_bf16_to_f32(h) : chm_f16_to_f32(h);
}

/* ---- host <-> tensor in any dtype (values already representable in it) ---- */

static void put(chm_backend *be, const tt_tensor *x, const double *v) {
    int64_t n = chm_tensor_numel(&x->t);
    chm_dtype dt = x->t.dtype;
    void *h = malloc((size_t)(n ? n : 1) * chm_dtype_size(dt));
    for (int64_t i = 0; i < n; i++) {
        if (dt == CHM_BF16 || dt == CHM_F16) ((uint16_t *)h)[i] = round16(dt, (float)v[i]);
        if (dt == CHM_F32) ((float *)h)[i] = (float)v[i];
        if (dt == CHM_F64) ((double *)h)[i] = v[i];
        if (dt == CHM_I32) ((int32_t *)h)[i] = (int32_t)v[i];
    }
    cr_assert_eq(chm_upload(be, &x->t, h), CHM_OK, "%s", be->err.msg);
    free(h);
}

/* Elements as doubles; 16-bit ones also as raw bits when bits != NULL. */
static void get(chm_backend *be, const tt_tensor *x, double *v, uint16_t *bits) {
    int64_t n = chm_tensor_numel(&x->t);
    chm_dtype dt = x->t.dtype;
    void *h = malloc((size_t)(n ? n : 1) * chm_dtype_size(dt));
    cr_assert_eq(chm_download(be, &x->t, h), CHM_OK, "%s", be->err.msg);
    for (int64_t i = 0; i < n; i++) {
        if (dt == CHM_BF16 || dt == CHM_F16) v[i] = widen16(dt, ((uint16_t *)h)[i]);
        if ((dt == CHM_BF16 || dt == CHM_F16) && bits) bits[i] = ((uint16_t *)h)[i];
        if (dt == CHM_F32) v[i] = ((float *)h)[i];
        if (dt == CHM_F64) v[i] = ((double *)h)[i];
        if (dt == CHM_I32) v[i] = ((int32_t *)h)[i];
    }
    free(h);
}

/* ---- the two runs of a case ---- */

static int64_t spec_numel(const arg_spec *a) {
    int64_t n = 1;
    for (int d = 0; d < a->ndim; d++) n *= a->shape[d];
    return n;
}

static chm_dtype arg_dtype(const arg_spec *a, chm_dtype ldt, chm_dtype ref, bool lowp) {
    switch (a->cls) {
    case LP: return lowp ? ldt : ref;
    case ST: return CHM_F32;
    case F64: return CHM_F64;
    case H16: return ldt;
    default: return CHM_I32;
    }
}

/* Starting values of argument a (representable in both runs' dtypes), or NULL for OUT. */
static double *start_values(const arg_spec *a, int64_t n, chm_dtype ldt, tt_rng *rng) {
    if (a->role == OUT) return NULL;
    double *v = tt_dalloc(n), lo = a->lo, hi = a->hi;
    if (lo == hi) lo = -1, hi = 1;
    for (int64_t i = 0; i < n; i++) {
        if (a->cls == I32) {
            v[i] = floor(tt_uniform(rng, lo, hi + 1));
            continue;
        }
        v[i] = tt_uniform(rng, lo, hi);
        if (a->cls == LP || a->cls == H16) v[i] = widen16(ldt, round16(ldt, (float)v[i]));
        if (a->cls == ST) v[i] = (float)v[i];
    }
    return v;
}

/* One run's tensors: allocated, aliased, filled with the shared starting values or poisoned. */
typedef struct run_set {
    tt_tensor t[MAXA];
    const chm_tensor *p[MAXA];
} run_set;

static void run_setup(chm_backend *be, run_set *r, const op_case *c, chm_dtype ldt, bool lowp,
                      double *const *start) {
    for (int i = 0; i < c->n; i++) {
        const arg_spec *a = &c->a[i];
        if (a->same) {
            const chm_tensor *o = r->p[a->same - 1];
            r->t[i].t = a->ndim ? chm_tensor_make(o->buf, o->offset, o->dtype, a->ndim, a->shape)
                                : *o;
            r->p[i] = &r->t[i].t;
            continue;
        }
        r->t[i] = tt_alloc(be, arg_dtype(a, ldt, c->ref, lowp), a->ndim, a->shape);
        r->p[i] = &r->t[i].t;
        if (start[i])
            put(be, &r->t[i], start[i]);
        else if (a->cls == I32)
            cr_assert_eq(chm_fill(be, &r->t[i].t, I32_POISON), CHM_OK, "%s", be->err.msg);
        else
            tt_poison(be, &r->t[i]);
    }
}

static void run_free(run_set *r, const op_case *c) {
    for (int i = 0; i < c->n; i++)
        if (!c->a[i].same) tt_free(&r->t[i]);
}

/* Argument i of both runs agrees (see the file comment). */
static void compare_arg(chm_backend *be, const op_case *c, int i, const run_set *lp,
                        const run_set *ref, chm_dtype ldt) {
    const arg_spec *a = &c->a[i];
    const tt_tensor *tl = &lp->t[i], *tr = &ref->t[i];
    int64_t n = chm_tensor_numel(&tl->t);
    double *vl = tt_dalloc(n), *vr = tt_dalloc(n);
    uint16_t *bl = calloc((size_t)n + 1, sizeof *bl), *br = calloc((size_t)n + 1, sizeof *br);
    get(be, tl, vl, bl);
    get(be, tr, vr, br);
    const char *dn = chm_dtype_name(ldt);
    for (int64_t e = 0; e < n; e++) {
        if (a->cls == I32) {
            cr_assert(vr[e] != I32_POISON, "%s %s arg %d [%lld]: not written", c->name, dn, i,
                      (long long)e);
            cr_assert_eq(vl[e], vr[e], "%s %s arg %d [%lld]: %g vs %g", c->name, dn, i,
                         (long long)e, vl[e], vr[e]);
            continue;
        }
        cr_assert(isfinite(vr[e]), "%s %s arg %d [%lld]: reference not finite (%g)", c->name, dn,
                  i, (long long)e, vr[e]);
        uint16_t want = a->cls == LP ? round16(ldt, (float)vr[e]) : br[e];
        if (a->cls == LP || a->cls == H16)
            cr_assert_eq(bl[e], want, "%s %s arg %d [%lld]: 0x%04x, want 0x%04x (f32 %.9g)",
                         c->name, dn, i, (long long)e, bl[e], want, vr[e]);
        else
            cr_assert_eq(vl[e], vr[e], "%s %s arg %d [%lld]: %.17g vs %.17g", c->name, dn, i,
                         (long long)e, vl[e], vr[e]);
    }
    free(vl), free(vr), free(bl), free(br);
}

/* Extra checks on the 16-bit run's tensors after a case (NULL: none). */
typedef void (*case_check)(chm_backend *be, const op_case *c, const run_set *lp, chm_dtype ldt);

/* Run case c in dtype ldt and in the reference dtype; compare every argument. */
static void run_case(chm_backend *be, const op_case *c, chm_dtype ldt, tt_rng *rng,
                     case_check extra) {
    double *start[MAXA] = {0};
    for (int i = 0; i < c->n; i++) {
        const arg_spec *a = &c->a[i];
        if (!a->same) start[i] = start_values(a, spec_numel(a), ldt, rng);
    }
    run_set lp, ref;
    run_setup(be, &lp, c, ldt, true, start);
    run_setup(be, &ref, c, ldt, false, start);
    chm_status rc = c->call(be, lp.p);
    cr_assert_eq(rc, CHM_OK, "%s in %s: %s", c->name, chm_dtype_name(ldt), be->err.msg);
    rc = c->call(be, ref.p);
    cr_assert_eq(rc, CHM_OK, "%s reference: %s", c->name, be->err.msg);
    for (int i = 0; i < c->n; i++)
        if (!c->a[i].same) compare_arg(be, c, i, &lp, &ref, ldt);
    if (extra) extra(be, c, &lp, ldt);
    run_free(&lp, c);
    run_free(&ref, c);
    for (int i = 0; i < c->n; i++) free(start[i]);
}

/* Every case of a table, in bf16 and in f16. */
static void run_table(const op_case *cases, size_t n, uint64_t seed) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(seed);
    for (size_t d = 0; d < 2; d++)
        for (size_t i = 0; i < n; i++) run_case(be, &cases[i], LOWP[d], &rng, NULL);
    chm_backend_close(be);
}

#define RUN_TABLE(cases, seed) run_table(cases, sizeof cases / sizeof cases[0], seed)

/* ---- matmul ---- */

static chm_status mm_bias_tb(chm_backend *be, const chm_tensor *const *t) {
    return chm_matmul(be, t[0], t[1], t[2], t[3], false, true, 0.75, 0.5);
}
static chm_status mm_batched(chm_backend *be, const chm_tensor *const *t) {
    return chm_matmul(be, t[0], t[1], t[2], NULL, false, false, 1.25, 0);
}
static chm_status mm_ta(chm_backend *be, const chm_tensor *const *t) {
    return chm_matmul(be, t[0], t[1], t[2], NULL, true, false, 1, 1);
}
static chm_status mmg_plain(chm_backend *be, const chm_tensor *const *t) {
    return chm_matmul_grouped(be, t[0], t[1], t[2], t[3], false, false, 1, 0.5);
}
static chm_status mmg_ta(chm_backend *be, const chm_tensor *const *t) {
    return chm_matmul_grouped(be, t[0], t[1], t[2], t[3], true, false, 0.5, 1);
}

static const op_case MATMUL[] = {
    CASE("matmul C+=A.B^T+bias", mm_bias_tb, 4, G(2, 5, 7), X(2, 5, 3), X(2, 7, 3), X(1, 7)),
    CASE("matmul batched beta 0", mm_batched, 3, O(3, 2, 3, 4), X(3, 2, 3, 5), X(2, 5, 4)),
    CASE("matmul trans_a", mm_ta, 3, G(2, 4, 6), X(2, 3, 4), X(2, 3, 6)),
    CASE("matmul_grouped", mmg_plain, 4, G(3, 3, 4, 2), X(3, 3, 4, 5), X(3, 3, 5, 2),
         II(0, 4, 1, 3)),
    CASE("matmul_grouped trans_a", mmg_ta, 4,
         G(3, 3, 5, 2), X(3, 3, 4, 5), X(3, 3, 4, 2), II(0, 4, 1, 3)),
};

Test(cpu_lowp, matmul) { RUN_TABLE(MATMUL, 1); }

/* ---- attention ---- */

static chm_status att_fwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_attention_fwd(be, t[0], t[1], t[2], t[3], t[4], 0.4);
}
static chm_status att_bwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_attention_bwd(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], 0.4);
}
static chm_status att_decode(chm_backend *be, const chm_tensor *const *t) {
    return chm_attention_decode(be, t[0], t[1], t[2], t[3], 0.4);
}

static const op_case ATTENTION[] = {
    CASE("attention_fwd", att_fwd, 5,
         O(4, 1, 5, 4, 6), SO(3, 1, 4, 5), X(4, 1, 5, 4, 6), X(4, 1, 5, 2, 6), X(4, 1, 5, 2, 6)),
    CASE("attention_fwd odd", att_fwd, 5,
         O(4, 2, 3, 3, 3), SO(3, 2, 3, 3), X(4, 2, 3, 3, 3), X(4, 2, 3, 1, 3), X(4, 2, 3, 1, 3)),
    CASE("attention_bwd", att_bwd, 9,
         G(4, 1, 5, 4, 6), G(4, 1, 5, 2, 6), G(4, 1, 5, 2, 6), X(4, 1, 5, 4, 6), X(4, 1, 5, 4, 6),
         X(4, 1, 5, 2, 6), X(4, 1, 5, 2, 6), X(4, 1, 5, 4, 6), SI(0.5, 2, 3, 1, 4, 5)),
    CASE("attention_decode", att_decode, 4,
         O(4, 1, 2, 4, 6), X(4, 1, 2, 4, 6), X(4, 1, 5, 2, 6), X(4, 1, 5, 2, 6)),
};

Test(cpu_lowp, attention) { RUN_TABLE(ATTENTION, 2); }

/* ---- Mamba: selective scan (full, step) and causal conv1d ---- */

/* The scan's inputs from t[at..at+7] (u, delta, A, Bm, Cm, D, z, delta_bias; NULL allowed). */
static chm_scan_args scan_from(const chm_tensor *const *t, int at, bool softplus) {
    chm_scan_args a = {t[at],     t[at + 1], t[at + 2], t[at + 3], t[at + 4],
                       t[at + 5], t[at + 6], t[at + 7], softplus, NULL, 0, NULL};
    return a;
}
static chm_status scan_fwd(chm_backend *be, const chm_tensor *const *t) {
    chm_scan_args a = scan_from(t, 1, true);
    return chm_selective_scan_fwd(be, t[0], &a);
}
static chm_status scan_fwd_saved(chm_backend *be, const chm_tensor *const *t) {
    chm_scan_args a = scan_from(t, 2, true);
    a.y_saved = t[1];
    return chm_selective_scan_fwd(be, t[0], &a);
}
static chm_status scan_fwd_bare(chm_backend *be, const chm_tensor *const *t) {
    const chm_tensor *all[9] = {t[0], t[1], t[2], t[3], t[4], t[5], NULL, NULL, NULL};
    chm_scan_args a = scan_from(all, 1, false);
    return chm_selective_scan_fwd(be, t[0], &a);
}
static chm_status scan_bwd(chm_backend *be, const chm_tensor *const *t) {
    chm_tensor *g[8];
    for (int i = 0; i < 8; i++) g[i] = (chm_tensor *)t[i]; /* the test owns these tensors */
    chm_scan_grads gr = {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
    chm_scan_args a = scan_from(t, 9, true);
    return chm_selective_scan_bwd(be, &gr, t[8], &a);
}
static chm_status scan_step(chm_backend *be, const chm_tensor *const *t) {
    chm_scan_args a = scan_from(t, 2, true);
    return chm_selective_scan_step(be, t[0], t[1], &a);
}
static chm_status conv_fwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_causal_conv1d_fwd(be, t[0], t[1], t[2], t[3], true);
}
static chm_status conv_bwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_causal_conv1d_bwd(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6], true);
}

/* B=2, T=5, Di=3, N=4: u, delta, A, Bm, Cm, D, z, delta_bias. */
#define SCAN_IN                                                                              \
    X(3, 2, 5, 3), X(3, 2, 5, 3), XR(-1, -0.1, 2, 3, 4), X(3, 2, 5, 4), X(3, 2, 5, 4), X(1, 3), \
        X(3, 2, 5, 3), X(1, 3)

static const op_case MAMBA[] = {
    CASE("selective_scan_fwd", scan_fwd, 9, O(3, 2, 5, 3), SCAN_IN),
    CASE("selective_scan_fwd y_saved", scan_fwd_saved, 10, O(3, 2, 5, 3), O(3, 2, 5, 3), SCAN_IN),
    CASE("selective_scan_fwd bare", scan_fwd_bare, 6,
         O(3, 1, 7, 5), X(3, 1, 7, 5), XR(0.05, 1, 3, 1, 7, 5), XR(-1, -0.1, 2, 5, 1),
         X(3, 1, 7, 1), X(3, 1, 7, 1)),
    CASE("selective_scan_bwd", scan_bwd, 17,
         G(3, 2, 5, 3), G(3, 2, 5, 3), G(2, 3, 4), G(3, 2, 5, 4), G(3, 2, 5, 4), G(1, 3),
         G(3, 2, 5, 3), G(1, 3), X(3, 2, 5, 3), SCAN_IN),
    CASE("selective_scan_step", scan_step, 10, O(3, 2, 5, 3), G(3, 2, 3, 4), SCAN_IN),
    CASE("causal_conv1d_fwd", conv_fwd, 4, O(3, 2, 6, 3), X(3, 2, 6, 3), X(2, 3, 4), X(1, 3)),
    CASE("causal_conv1d_bwd", conv_bwd, 7,
         G(3, 2, 6, 3), G(2, 3, 4), G(1, 3), X(3, 2, 6, 3), X(3, 2, 6, 3), X(2, 3, 4), X(1, 3)),
};

Test(cpu_lowp, mamba) { RUN_TABLE(MAMBA, 3); }

/* ---- normalisation, position, activation, embedding ---- */

static chm_status rms_fwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_rmsnorm_fwd(be, t[0], t[1], t[2], t[3], 1e-5);
}
static chm_status rms_bwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_rmsnorm_bwd(be, t[0], t[1], t[2], t[3], t[4], t[5]);
}
static chm_status rope_fwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_rope_fwd(be, t[0], t[1], 1e4, 2);
}
static chm_status rope_bwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_rope_bwd(be, t[0], t[1], 1e4, 2);
}
static chm_status swiglu_fwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_swiglu_fwd(be, t[0], t[1], t[2]);
}
static chm_status swiglu_bwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_swiglu_bwd(be, t[0], t[1], t[2], t[3], t[4], true);
}
static chm_status emb_fwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_embedding_fwd(be, t[0], t[1], t[2]);
}
static chm_status emb_bwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_embedding_bwd(be, t[0], t[1], t[2]);
}

static const op_case LAYERS[] = {
    CASE("rmsnorm_fwd", rms_fwd, 4, O(2, 3, 7), SO(1, 3), X(2, 3, 7), X(1, 7)),
    CASE("rmsnorm_bwd", rms_bwd, 6,
         G(2, 3, 7), G(1, 7), X(2, 3, 7), X(2, 3, 7), X(1, 7), SI(0.5, 2, 1, 3)),
    CASE("rope_fwd", rope_fwd, 2, O(4, 1, 3, 2, 4), X(4, 1, 3, 2, 4)),
    CASE("rope_bwd", rope_bwd, 2, G(4, 1, 3, 2, 4), X(4, 1, 3, 2, 4)),
    CASE("swiglu_fwd", swiglu_fwd, 3, O(2, 3, 5), X(2, 3, 5), X(2, 3, 5)),
    CASE("swiglu_bwd", swiglu_bwd, 5, G(2, 3, 5), G(2, 3, 5), X(2, 3, 5), X(2, 3, 5), X(2, 3, 5)),
    CASE("embedding_fwd", emb_fwd, 3, O(3, 2, 3, 4), II(0, 8, 2, 2, 3), X(2, 9, 4)),
    CASE("embedding_bwd", emb_bwd, 3, G(2, 9, 4), X(3, 2, 3, 4), II(0, 8, 2, 2, 3)),
};

Test(cpu_lowp, layers) { RUN_TABLE(LAYERS, 4); }

/* ---- elementwise, row scaling, exp ---- */

static chm_status add_(chm_backend *be, const chm_tensor *const *t) {
    return chm_add(be, t[0], t[1], t[2]);
}
static chm_status scale_(chm_backend *be, const chm_tensor *const *t) {
    return chm_scale(be, t[0], t[1], -0.3);
}
static chm_status axpy_(chm_backend *be, const chm_tensor *const *t) {
    return chm_axpy(be, t[0], t[1], 0.7);
}
static chm_status sum_rows_(chm_backend *be, const chm_tensor *const *t) {
    return chm_sum_rows(be, t[0], t[1]);
}
static chm_status rs_fwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_row_scale_fwd(be, t[0], t[1], t[2], true);
}
static chm_status rs_fwd_plain(chm_backend *be, const chm_tensor *const *t) {
    return chm_row_scale_fwd(be, t[0], t[1], t[2], false);
}
static chm_status rs_bwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_row_scale_bwd(be, t[0], t[1], t[2], t[3], t[4], true);
}
static chm_status exp_fwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_exp_fwd(be, t[0], t[1], -1);
}
static chm_status exp_bwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_exp_bwd(be, t[0], t[1], t[2]);
}

static const op_case ELEMENTWISE[] = {
    CASE("add", add_, 3, O(2, 3, 5), X(2, 3, 5), X(2, 3, 5)),
    CASE("scale", scale_, 2, O(1, 13), X(1, 13)),
    CASE("axpy", axpy_, 2, G(1, 15), X(2, 3, 5)),
    CASE("sum_rows", sum_rows_, 2, G(1, 5), X(3, 7, 1, 5)),
    CASE("row_scale_fwd sigmoid", rs_fwd, 3, O(2, 4, 5), X(2, 4, 5), X(1, 4)),
    CASE("row_scale_fwd", rs_fwd_plain, 3, O(2, 1, 3), X(2, 1, 3), X(1, 1)),
    CASE("row_scale_bwd", rs_bwd, 5, G(2, 4, 5), G(1, 4), X(2, 4, 5), X(2, 4, 5), X(1, 4)),
    CASE("exp_fwd", exp_fwd, 2, O(2, 3, 4), XR(-2, 1, 2, 3, 4)),
    CASE("exp_bwd", exp_bwd, 3, G(2, 3, 4), X(2, 3, 4), XR(0.1, 2, 2, 3, 4)),
};

Test(cpu_lowp, elementwise) { RUN_TABLE(ELEMENTWISE, 5); }

/* ---- routing and rows ---- */

static chm_status router_softmax(chm_backend *be, const chm_tensor *const *t) {
    return chm_router_topk(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6], CHM_ROUTER_SOFTMAX, true);
}
static chm_status router_sigmoid(chm_backend *be, const chm_tensor *const *t) {
    return chm_router_topk(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6], CHM_ROUTER_SIGMOID,
                           false);
}
static chm_status router_bwd(chm_backend *be, const chm_tensor *const *t) {
    return chm_router_topk_bwd(be, t[0], t[1], t[2], t[3], CHM_ROUTER_SOFTMAX, true);
}
static chm_status select_(chm_backend *be, const chm_tensor *const *t) {
    return chm_select_topk(be, t[0], t[1], false);
}
static chm_status gather_(chm_backend *be, const chm_tensor *const *t) {
    return chm_gather_rows(be, t[0], t[1], t[2]);
}
static chm_status scatter_(chm_backend *be, const chm_tensor *const *t) {
    return chm_scatter_add_rows(be, t[0], t[1], t[2], t[3]);
}

/* R=6 tokens, E=4 experts, K=2, capacity 3. */
#define ROUTER_ARGS \
    O(2, 6, 2), IO(2, 6, 2), O(2, 6, 4), IO(2, 4, 3), IO(2, 4, 3), IO(1, 4), XR(-2, 2, 2, 6, 4)

static const op_case ROUTING[] = {
    CASE("router_topk softmax", router_softmax, 7, ROUTER_ARGS),
    CASE("router_topk sigmoid", router_sigmoid, 7, ROUTER_ARGS),
    CASE("router_topk_bwd", router_bwd, 4,
         G(2, 6, 4), X(2, 6, 2), XR(0.05, 1, 2, 6, 4), II(0, 3, 2, 6, 2)),
    CASE("select_topk", select_, 2, IO(2, 3, 3), X(2, 3, 7)),
    CASE("gather_rows", gather_, 3, O(2, 5, 3), X(2, 4, 3), II(-1, 3, 1, 5)),
    CASE("scatter_add_rows", scatter_, 4, G(2, 4, 3), X(2, 5, 3), II(-1, 3, 1, 5), X(1, 5)),
};

Test(cpu_lowp, routing) { RUN_TABLE(ROUTING, 6); }

/* ---- losses and the gradient norm ---- */

static chm_status ce_(chm_backend *be, const chm_tensor *const *t) {
    return chm_cross_entropy(be, t[0], t[1], t[2], t[3], 0.5);
}
static chm_status bce_(chm_backend *be, const chm_tensor *const *t) {
    return chm_bce_logits(be, t[0], t[1], t[2], t[3], 0.25);
}
static chm_status moe_aux_(chm_backend *be, const chm_tensor *const *t) {
    return chm_moe_aux(be, t[0], t[1], t[2], t[3], 0.1, 0.01);
}
static chm_status sumsq_(chm_backend *be, const chm_tensor *const *t) {
    return chm_sum_squares(be, t[0], t[1]);
}

static const op_case LOSSES[] = {
    CASE("cross_entropy", ce_, 4, SO(1, 5), O(2, 5, 7), XR(-3, 3, 2, 5, 7), II(-1, 6, 1, 5)),
    CASE("bce_logits", bce_, 4, SO(1, 9), O(1, 9), XR(-3, 3, 1, 9), XR(0, 1, 1, 9)),
    CASE("moe_aux", moe_aux_, 4, SO(1, 2), G(2, 5, 4), XR(-2, 2, 2, 5, 4), II(0, 3, 2, 5, 2)),
    CASE("sum_squares f32", sumsq_, 2, SO(1, 1), X(2, 3, 7)),
    CASE("sum_squares f64", sumsq_, 2, DO(1, 1), X(1, 13)),
};

Test(cpu_lowp, losses) { RUN_TABLE(LOSSES, 7); }

/* ---- aliased arguments: the 16-bit run sees the same aliasing as the f32 run ---- */

static chm_status add_out_a(chm_backend *be, const chm_tensor *const *t) {
    return chm_add(be, t[2], t[0], t[1]);
}
static chm_status add_out_b(chm_backend *be, const chm_tensor *const *t) {
    return chm_add(be, t[2], t[1], t[0]);
}
static chm_status ce_alias(chm_backend *be, const chm_tensor *const *t) {
    return chm_cross_entropy(be, t[1], t[2], t[0], t[3], 1.5);
}
static chm_status bce_alias(chm_backend *be, const chm_tensor *const *t) {
    return chm_bce_logits(be, t[1], t[2], t[0], t[3], 1.0);
}
static chm_status rope_alias(chm_backend *be, const chm_tensor *const *t) {
    return chm_rope_fwd(be, t[1], t[0], 1e4, 0);
}
static chm_status exp_alias(chm_backend *be, const chm_tensor *const *t) {
    return chm_exp_fwd(be, t[1], t[0], 2);
}
static chm_status rs_alias(chm_backend *be, const chm_tensor *const *t) {
    return chm_row_scale_fwd(be, t[2], t[0], t[1], true);
}

static const op_case ALIASED[] = {
    CASE("add out == a", add_out_a, 3, G(2, 3, 5), X(2, 3, 5), SAME(0)),
    CASE("add out == b", add_out_b, 3, G(2, 3, 5), X(2, 3, 5), SAME(0)),
    CASE("add out == a == b", add_out_a, 3, G(1, 7), SAME(0), SAME(0)),
    CASE("scale out == x", scale_, 2, G(1, 9), SAME(0)),
    CASE("axpy y == x", axpy_, 2, G(2, 3, 5), SAME(0)),
    CASE("axpy y == x reshaped", axpy_, 2, G(1, 15), SAME_AS(0, 2, 3, 5)),
    CASE("matmul A == B", mm_bias_tb, 4, G(2, 6, 6), X(2, 6, 3), SAME(1), X(1, 6)),
    CASE("cross_entropy dlogits == logits", ce_alias, 4,
         {LP, ACC, 2, {4, 6}, -3, 3, 0}, SO(1, 4), SAME(0), II(-1, 5, 1, 4)),
    CASE("bce_logits dlogits == logits", bce_alias, 4,
         {LP, ACC, 1, {8}, -3, 3, 0}, SO(1, 8), SAME(0), XR(0, 1, 1, 8)),
    CASE("rope_fwd out == x", rope_alias, 2, G(4, 2, 3, 1, 6), SAME(0)),
    CASE("exp_fwd out == x", exp_alias, 2, G(2, 2, 5), SAME(0)),
    CASE("row_scale_fwd out == x", rs_alias, 3, G(2, 3, 4), X(1, 3), SAME(0)),
};

Test(cpu_lowp, aliased_arguments_share_one_copy) { RUN_TABLE(ALIASED, 8); }

/* ---- adamw: 16-bit grads, f32/f64 master, 16-bit param_lowp ---- */

static chm_status adamw_(chm_backend *be, const chm_tensor *const *t) {
    chm_adamw_args a = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                        .weight_decay = 0.1, .step = 3, .grad_scale = 0.5};
    return chm_adamw_step(be, t[0], t[1], t[2], t[3], t[4], &a);
}

/* param_lowp holds the new master rounded (through f32) to the 16-bit dtype. */
static void lowp_is_rounded_master(chm_backend *be, const op_case *c, const run_set *lp,
                                   chm_dtype ldt) {
    int64_t n = chm_tensor_numel(&lp->t[0].t);
    double *p = tt_dalloc(n), *q = tt_dalloc(n);
    uint16_t *bits = calloc((size_t)n, sizeof *bits);
    get(be, &lp->t[0], p, NULL);
    get(be, &lp->t[4], q, bits);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(bits[i], round16(ldt, (float)p[i]),
                     "%s %s: param_lowp[%lld] 0x%04x, master %.9g", c->name, chm_dtype_name(ldt),
                     (long long)i, bits[i], p[i]);
    free(p), free(q), free(bits);
}

static const op_case ADAMW[] = {
    CASE("adamw f32 master", adamw_, 5,
         SG(-2, 2, 2, 3, 11), X(2, 3, 11), SG(-0.1, 0.1, 2, 3, 11), SG(0.01, 0.1, 2, 3, 11),
         HO(1, 33)),
    {.name = "adamw f64 master",
     .call = adamw_,
     .n = 5,
     .a = {DG(-2, 2, 1, 17), X(1, 17), DG(-0.1, 0.1, 1, 17), DG(0.01, 0.1, 1, 17), HO(1, 17)},
     .ref = CHM_F64},
};

Test(cpu_lowp, adamw_takes_16_bit_grads) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(9);
    for (size_t d = 0; d < 2; d++)
        for (size_t i = 0; i < 2; i++)
            run_case(be, &ADAMW[i], LOWP[d], &rng, lowp_is_rounded_master);
    chm_backend_close(be);
}

/* A kernel that fails (a target outside the vocabulary) leaves the 16-bit outputs as they were. */
Test(cpu_lowp, failed_op_writes_nothing_back) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(10);
    for (size_t d = 0; d < 2; d++) {
        tt_tensor z = tt_alloc(be, LOWP[d], 2, (int64_t[]){3, 4}),
                  dz = tt_alloc(be, LOWP[d], 2, (int64_t[]){3, 4});
        tt_tensor l = tt_alloc(be, CHM_F32, 1, (int64_t[]){3}),
                  tg = tt_alloc(be, CHM_I32, 1, (int64_t[]){3});
        double zv[12], dv[12], after[12];
        tt_fill_uniform(&rng, zv, 12, -1, 1);
        tt_fill_uniform(&rng, dv, 12, -1, 1);
        put(be, &z, zv);
        put(be, &dz, dv);
        uint16_t before[12], now[12];
        get(be, &dz, after, before);
        tt_upload_i32(be, &tg, (int32_t[]){0, 4, 1});
        tt_expect_fail(be, chm_cross_entropy(be, &l.t, &dz.t, &z.t, &tg.t, 1.0),
                       CHM_ERR_INVALID_ARG, "cross_entropy", "target");
        get(be, &dz, after, now);
        cr_assert_arr_eq(now, before, sizeof now, "%s dlogits changed by a failed call",
                         chm_dtype_name(LOWP[d]));
        tt_free(&z), tt_free(&dz), tt_free(&l), tt_free(&tg);
    }
    chm_backend_close(be);
}

/* The wrappers still refuse 16-bit tensors where an op's contract does. */
Test(cpu_lowp, wrappers_keep_their_16_bit_rules) {
    chm_backend *be = tt_open_cpu();
    tt_tensor hb = tt_alloc(be, CHM_BF16, 2, (int64_t[]){3, 4}),
              hf = tt_alloc(be, CHM_F16, 2, (int64_t[]){3, 4});
    tt_tensor pf = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4}),
              pf2 = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4}),
              pf3 = tt_alloc(be, CHM_F32, 2, (int64_t[]){3, 4});
    tt_tensor ob = tt_alloc(be, CHM_BF16, 1, (int64_t[]){1}),
              rb = tt_alloc(be, CHM_BF16, 1, (int64_t[]){3}),
              w = tt_alloc(be, CHM_BF16, 1, (int64_t[]){4});
    chm_adamw_args a = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .step = 1,
                        .grad_scale = 1};
    /* master weights stay f32/f64 */
    tt_expect_fail(be, chm_adamw_step(be, &hb.t, &pf.t, &pf2.t, &pf3.t, NULL, &a), CHM_ERR_DTYPE,
                   "adamw_step", "param must be f32 or f64");
    /* the gradient norm's output stays f32/f64 */
    tt_expect_fail(be, chm_sum_squares(be, &ob.t, &hb.t), CHM_ERR_DTYPE, "sum_squares",
                   "out must be f32 or f64");
    /* the float tensors of one op share one dtype: bf16 and f16 do not mix */
    tt_expect_fail(be, chm_add(be, &hb.t, &hb.t, &hf.t), CHM_ERR_DTYPE, "add",
                   "out and b must match");
    /* stats of a 16-bit op are f32, not 16-bit */
    tt_expect_fail(be, chm_rmsnorm_fwd(be, &pf.t, &rb.t, &hb.t, &w.t, 1e-5), CHM_ERR_DTYPE,
                   "rmsnorm_fwd", "rstd must be f32");
    tt_free(&hb), tt_free(&hf), tt_free(&pf), tt_free(&pf2), tt_free(&pf3);
    tt_free(&ob), tt_free(&rb), tt_free(&w);
    chm_backend_close(be);
}
