/*
 * verify_ops.c: the op phase of `chimera verify`: the op list with each
 * op's limit, the engine that runs one op on the reference and on every
 * backend and compares (verify_ops.h), and the phase itself. The cases,
 * with their inputs and shapes, are in verify_cases_*.c.
 */
#include "verify_ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"

/* ---- the op list and its limits ---- */

/*
 * Limits on the relative L2 error of an f32 backend against the f64
 * reference (inputs identical, so the difference is the backend's own f32
 * rounding). Every element must also be within 10x the limit relative to
 * |ref| + rms(ref). The base is 1e-5: about 100 f32 ulps, far above the
 * 1e-7..1e-6 an f32 op shows with reductions of a few hundred terms, and far
 * below what a wrong index, a missing term or the 1.01 debug fault give
 * (1e-2). Ops get 2e-5 where an output sums a long chain of terms of both
 * signs (gradients of weights summed over rows, the scan's state carried
 * over time), which can cancel to a small norm while each term's rounding
 * stays.
 */
typedef struct vo_op {
    const char *name;
    double limit;
} vo_op;

static const vo_op vo_ops[] = {
    {"fill", 1e-5},          {"copy", 1e-5},           {"cast", 1e-5},
    {"add", 1e-5},           {"scale", 1e-5},          {"axpy", 1e-5},
    {"sum_rows", 2e-5},      /* column sums over all rows */
    {"matmul", 1e-5},        {"matmul_grouped", 1e-5},
    {"attention_fwd", 1e-5},
    {"attention_bwd", 2e-5}, /* dk, dv sum over every query of a head group */
    {"attention_decode", 1e-5},
    {"selective_scan_fwd", 2e-5}, /* the state carries rounding over T steps */
    {"selective_scan_bwd", 3e-5}, /* dA sums B*T*N-long chains of both signs (cuda_opcheck
                                     gives it 3x too); dD, ddelta_bias sum over B*T */
    {"selective_scan_step", 2e-5},
    {"causal_conv1d_fwd", 1e-5},
    {"causal_conv1d_bwd", 2e-5}, /* dw, dbias sum over B*T */
    {"rmsnorm_fwd", 1e-5},
    {"rmsnorm_bwd", 2e-5},   /* dw sums over rows */
    {"rope_fwd", 1e-5},      {"rope_bwd", 1e-5},
    {"swiglu_fwd", 1e-5},    {"swiglu_bwd", 1e-5},
    {"embedding_fwd", 1e-5},
    {"embedding_bwd", 2e-5}, /* repeated ids sum rows */
    {"router_topk", 1e-5},   {"router_topk_bwd", 1e-5},
    {"select_topk", 1e-5},   {"gather_rows", 1e-5},
    {"scatter_add_rows", 2e-5}, /* repeated rows sum */
    {"cross_entropy", 1e-5},
    {"adamw_step", 1e-5},    {"sum_squares", 1e-5},
    {"row_scale_fwd", 1e-5},
    {"row_scale_bwd", 2e-5}, /* ds sums a row of products */
    {"exp_fwd", 1e-5},       {"exp_bwd", 1e-5},
    {"bce_logits", 1e-5},
    {"moe_aux", 2e-5},       /* the balance loss sums R*E terms */
};
#define N_VO_OPS ((int)(sizeof vo_ops / sizeof vo_ops[0]))
_Static_assert(N_VO_OPS <= VO_MAX_OPS, "raise VO_MAX_OPS");

int chm_verify_op_count(void) { return N_VO_OPS; }

const char *chm_verify_op_name(int i) { return i >= 0 && i < N_VO_OPS ? vo_ops[i].name : NULL; }

int vf_op_index(const char *name) {
    for (int i = 0; i < N_VO_OPS; i++)
        if (!strcmp(vo_ops[i].name, name)) return i;
    return -1;
}

double vf_op_limit(int i) { return i >= 0 && i < N_VO_OPS ? vo_ops[i].limit : 0; }

/* ---- host values <-> storage ---- */

/* Bytes of n values of dt from doubles (floats rounded to nearest even). */
static void *vo_pack(const double *h, int64_t n, chm_dtype dt) {
    void *p = malloc((size_t)(n ? n : 1) * chm_dtype_size(dt));
    for (int64_t i = 0; p && i < n; i++) switch (dt) {
        case CHM_F32: ((float *)p)[i] = (float)h[i]; break;
        case CHM_F64: ((double *)p)[i] = h[i]; break;
        case CHM_BF16: ((uint16_t *)p)[i] = chm_f32_to_bf16((float)h[i]); break;
        case CHM_F16: ((uint16_t *)p)[i] = chm_f32_to_f16((float)h[i]); break;
        case CHM_I32: ((int32_t *)p)[i] = (int32_t)h[i]; break;
        }
    return p;
}

static void vo_unpack(double *h, const void *p, int64_t n, chm_dtype dt) {
    for (int64_t i = 0; i < n; i++) switch (dt) {
        case CHM_F32: h[i] = ((const float *)p)[i]; break;
        case CHM_F64: h[i] = ((const double *)p)[i]; break;
        case CHM_BF16: h[i] = chm_bf16_to_f32(((const uint16_t *)p)[i]); break;
        case CHM_F16: h[i] = chm_f16_to_f32(((const uint16_t *)p)[i]); break;
        case CHM_I32: h[i] = ((const int32_t *)p)[i]; break;
        }
}

/* The narrowest dtype t has on any side: what every side can hold exactly. */
static chm_dtype vo_narrowest(const vo_ctx *x, const vo_t *t) {
    chm_dtype r = t->t[0].dtype;
    for (int s = 1; s < x->n; s++) {
        chm_dtype d = t->t[s].dtype;
        if (d == CHM_BF16 || d == CHM_F16 || d == CHM_I32 || (d == CHM_F32 && r == CHM_F64))
            r = d;
    }
    return r;
}

/* h rounded to dt in place. */
static void vo_round(double *h, int64_t n, chm_dtype dt) {
    void *p = vo_pack(h, n, dt);
    if (p) vo_unpack(h, p, n, dt);
    free(p);
}

static void vo_nomem(vo_ctx *x) {
    if (!x->fatal) x->fatal = CHM_ERR(x->err, CHM_ERR_NOMEM, "verify: out of host memory");
}

static double *vo_dalloc(vo_ctx *x, int64_t n) {
    double *p = calloc((size_t)(n ? n : 1), sizeof *p);
    if (!p) vo_nomem(x);
    return p;
}

/* ---- tensors on every side ---- */

double vo_uniform(vo_ctx *x, double lo, double hi) {
    x->rng ^= x->rng >> 12;
    x->rng ^= x->rng << 25;
    x->rng ^= x->rng >> 27;
    uint64_t r = x->rng * 0x2545F4914F6CDD1Dull;
    return lo + (hi - lo) * ((double)(r >> 11) * (1.0 / 9007199254740992.0));
}

/* A side failed to move data: its later checks fail with this note. */
static void vo_break(vo_ctx *x, int s, const char *what) {
    vo_side *sd = &x->side[s];
    if (s == 0) {
        if (!x->fatal)
            x->fatal = CHM_ERR(x->err, CHM_ERR_INTERNAL,
                               "verify: the cpu reference failed to %s: %s", what,
                               sd->be->err.msg);
        return;
    }
    if (!sd->broken[0])
        snprintf(sd->broken, sizeof sd->broken, "%s failed on %s: %.200s", what, sd->be->name,
                 sd->be->err.msg);
}

vo_t vo_new(vo_ctx *x, chm_dtype dt, int nd, const int64_t *shape) {
    vo_t v;
    memset(&v, 0, sizeof v);
    for (int s = 0; s < x->n && !x->fatal; s++) {
        chm_dtype d = dt == VO_FLOAT ? x->side[s].dt
                      : dt == VO_STATS ? chm_dtype_stats(x->side[s].dt) : dt;
        v.t[s] = chm_tensor_make(NULL, 0, d, nd, shape);
        size_t nb = chm_tensor_nbytes(&v.t[s]);
        if (chm_buffer_alloc(x->side[s].be, nb ? nb : 16, &v.b[s]) != CHM_OK) {
            x->fatal = CHM_ERR(x->err, CHM_ERR_NOMEM, "verify: cannot allocate %zu bytes on %s: %s",
                               nb, x->side[s].be->name, x->side[s].be->err.msg);
            break;
        }
        v.t[s].buf = v.b[s];
    }
    v.n = chm_tensor_numel(&v.t[0]);
    return v;
}

/*
 * A 16-bit tensor on a backend without 16-bit storage: transfers there are
 * skipped (the op's call reports UNSUPPORTED, recorded as a skip).
 */
static bool vo_no_storage(const vo_ctx *x, int s, chm_dtype dt) {
    unsigned cap = dt == CHM_BF16 ? CHM_CAP_BF16 : dt == CHM_F16 ? CHM_CAP_F16 : 0;
    return cap && !(x->side[s].be->caps & cap);
}

void vo_set(vo_ctx *x, vo_t *t, double *h) {
    if (x->fatal) return;
    vo_round(h, t->n, vo_narrowest(x, t));
    for (int s = 0; s < x->n; s++) {
        if (vo_no_storage(x, s, t->t[s].dtype)) continue;
        void *p = vo_pack(h, t->n, t->t[s].dtype);
        if (!p) {
            vo_nomem(x);
            return;
        }
        if (chm_upload(x->side[s].be, &t->t[s], p) != CHM_OK) vo_break(x, s, "upload");
        free(p);
    }
}

vo_t vo_rand(vo_ctx *x, int nd, const int64_t *shape, double lo, double hi) {
    return vo_rand_as(x, VO_FLOAT, nd, shape, lo, hi);
}

vo_t vo_rand_as(vo_ctx *x, chm_dtype dt, int nd, const int64_t *shape, double lo, double hi) {
    vo_t t = vo_new(x, dt, nd, shape);
    double *h = vo_dalloc(x, t.n);
    for (int64_t i = 0; h && i < t.n; i++) h[i] = vo_uniform(x, lo, hi);
    if (h) vo_set(x, &t, h);
    free(h);
    return t;
}

/* Small next to typical gradients, so that the check measures the gradient, not the start. */
vo_t vo_grad0(vo_ctx *x, int nd, const int64_t *shape) {
    return vo_rand(x, nd, shape, -0.05, 0.05);
}

vo_t vo_ints(vo_ctx *x, int nd, const int64_t *shape, const int32_t *v) {
    vo_t t = vo_new(x, CHM_I32, nd, shape);
    double *h = vo_dalloc(x, t.n);
    for (int64_t i = 0; h && i < t.n; i++) h[i] = v[i];
    if (h) vo_set(x, &t, h);
    free(h);
    return t;
}

void vo_poison(vo_ctx *x, vo_t *t) {
    for (int s = 0; s < x->n && !x->fatal; s++) {
        double v = t->t[s].dtype == CHM_I32 ? -12345 : NAN;
        if (vo_no_storage(x, s, t->t[s].dtype)) continue;
        if (chm_fill(x->side[s].be, &t->t[s], v) != CHM_OK) vo_break(x, s, "fill (poison)");
    }
}

/* Download side s of t into h; false (side broken) on failure. */
static bool vo_get(vo_ctx *x, int s, const vo_t *t, double *h) {
    void *p = malloc(chm_tensor_nbytes(&t->t[s]) + 8);
    bool ok = p && chm_download(x->side[s].be, &t->t[s], p) == CHM_OK;
    if (ok) vo_unpack(h, p, t->n, t->t[s].dtype);
    else if (p) vo_break(x, s, "download");
    else vo_nomem(x);
    free(p);
    return ok;
}

void vo_share(vo_ctx *x, vo_t *t) {
    if (x->fatal) return;
    double *h = vo_dalloc(x, t->n);
    if (h && vo_get(x, 0, t, h)) vo_set(x, t, h);
    free(h);
}

vo_t vo_view(const vo_t *t, int64_t elem_offset, int nd, const int64_t *shape) {
    vo_t v;
    memset(&v, 0, sizeof v);
    for (int s = 0; s < VO_MAX_SIDES; s++)
        if (t->t[s].buf) chm_tensor_view(&t->t[s], elem_offset, nd, shape, &v.t[s], NULL);
    v.n = chm_tensor_numel(&v.t[0]);
    return v;
}

void vo_free_all(vo_t *const *t, int n) {
    for (int i = 0; i < n; i++)
        for (int s = 0; s < VO_MAX_SIDES; s++) {
            chm_buffer_free(t[i]->b[s]);
            t[i]->b[s] = NULL;
        }
}

const char *vo_dims(char *buf, size_t len, int n, const int64_t *d) {
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%lld", i ? "x" : "", (long long)d[i]);
    return buf;
}

void vo_case(vo_ctx *x, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->what, sizeof x->what, fmt, ap);
    va_end(ap);
}

/* ---- calls ---- */

bool vo_runs(vo_ctx *x, const char *op, int s) {
    if (x->fatal) return false;
    if (s == 0) return true;
    int oi = vf_op_index(op);
    return oi >= 0 && x->want[oi];
}

/* A check of op on side s with the case's name, to fill in. */
static chm_verify_check vo_base(const vo_ctx *x, const char *op, const char *out, int s) {
    chm_verify_check c;
    memset(&c, 0, sizeof c);
    snprintf(c.op, sizeof c.op, "%s", op);
    snprintf(c.what, sizeof c.what, "%s%s%s", x->what, out[0] ? " " : "", out);
    snprintf(c.backend, sizeof c.backend, "%s", x->side[s].be->name);
    c.dtype = x->side[s].dt;
    return c;
}

static void vo_record(vo_ctx *x, const chm_verify_check *c) {
    if (!x->fatal) x->fatal = vf_add_check(x->r, c, x->err);
}

void vo_done(vo_ctx *x, const char *op, int s, chm_status rc) {
    vo_side *sd = &x->side[s];
    if (rc == CHM_OK) rc = chm_sync(sd->be); /* asynchronous backends report at sync */
    int oi = vf_op_index(op);
    if (oi >= 0) sd->call_failed[oi] = rc != CHM_OK;
    if (rc == CHM_OK) return;
    if (s == 0) {
        if (!x->fatal)
            x->fatal = CHM_ERR(x->err, CHM_ERR_INTERNAL, "verify: the cpu reference failed on %s "
                               "(%s): %s", op, x->what, sd->be->err.msg);
        return;
    }
    chm_verify_check c = vo_base(x, op, "", s);
    bool offered = rc != CHM_ERR_UNSUPPORTED && !(x->lowp && rc == CHM_ERR_DTYPE);
    c.result = offered ? CHM_VERIFY_FAIL : CHM_VERIFY_SKIP; /* bf16 compute is optional */
    snprintf(c.note, sizeof c.note, "%s: %.200s", chm_status_name(rc), sd->be->err.msg);
    vo_record(x, &c);
}

/* ---- comparisons ---- */

/* NaN first, then the sign of infinities: a note when got is not the same kind as ref. */
static bool vo_nonfinite(chm_verify_check *c, const double *got, const double *ref, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        bool same = isfinite(ref[i]) ? isfinite(got[i])
                    : isnan(ref[i]) ? isnan(got[i]) : got[i] == ref[i];
        if (same) continue;
        snprintf(c->note, sizeof c->note, "element %lld is %g on %s, %g on the reference%s",
                 (long long)i, got[i], c->backend, ref[i],
                 isnan(got[i]) ? " (not written?)" : "");
        return true;
    }
    return false;
}

/* Fill c's errors and verdict for got against ref with the rel-L2 limit. */
static void vo_compare_into(chm_verify_check *c, const double *got, const double *ref, int64_t n,
                            double limit) {
    c->n = n;
    c->limit = limit;
    c->result = CHM_VERIFY_FAIL;
    if (vo_nonfinite(c, got, ref, n)) {
        c->max_abs = c->rel_l2 = INFINITY;
        return;
    }
    double num = 0, den = 0, worst_excess = 0;
    int64_t worst = -1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(ref[i])) continue;
        double e = fabs(got[i] - ref[i]);
        num += e * e;
        den += ref[i] * ref[i];
        if (e > c->max_abs) c->max_abs = e;
    }
    double rms = sqrt(den / (double)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        double excess = fabs(got[i] - ref[i]) - 10 * limit * (fabs(ref[i]) + rms);
        if (isfinite(ref[i]) && excess > worst_excess) worst_excess = excess, worst = i;
    }
    c->rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    if (c->exact && c->max_abs > 0)
        for (int64_t i = 0; i < n; i++)
            if (got[i] != ref[i]) {
                snprintf(c->note, sizeof c->note, "element %lld is %.9g, the reference %.9g "
                         "(must match exactly)", (long long)i, got[i], ref[i]);
                return;
            }
    if (c->rel_l2 > limit)
        snprintf(c->note, sizeof c->note, "rel-L2 %.2e over the limit %.1e (max|err| %.2e)",
                 c->rel_l2, limit, c->max_abs);
    else if (worst >= 0)
        snprintf(c->note, sizeof c->note, "element %lld is %.9g, the reference %.9g: beyond "
                 "10 x %.1e x (|ref| + rms)", (long long)worst, got[worst], ref[worst], limit);
    else c->result = CHM_VERIFY_PASS;
}

static void vo_check_any(vo_ctx *x, const char *op, const char *out, const vo_t *t, double mult,
                         bool exact) {
    int oi = vf_op_index(op);
    if (x->fatal || oi < 0 || !x->want[oi]) return;
    double *ref = vo_dalloc(x, t->n), *got = vo_dalloc(x, t->n);
    if (ref && got && vo_get(x, 0, t, ref))
        for (int s = 1; s < x->n && !x->fatal; s++) {
            if (x->side[s].call_failed[oi]) continue;
            chm_verify_check c = vo_base(x, op, out, s);
            c.exact = exact;
            if (x->side[s].broken[0] || !vo_get(x, s, t, got)) {
                c.result = CHM_VERIFY_FAIL;
                snprintf(c.note, sizeof c.note, "%s", x->side[s].broken);
            } else {
                double lim = vf_op_limit(oi) * mult * (x->lowp ? VO_LOWP_FACTOR : 1);
                vo_compare_into(&c, got, ref, t->n, exact ? 0 : lim);
            }
            vo_record(x, &c);
        }
    free(ref);
    free(got);
}

void vo_check(vo_ctx *x, const char *op, const char *out, const vo_t *t, double mult) {
    vo_check_any(x, op, out, t, mult, false);
}

void vo_check_exact(vo_ctx *x, const char *op, const char *out, const vo_t *t) {
    vo_check_any(x, op, out, t, 1, true);
}

/* ---- the phase ---- */

/* A case: the function that runs its shapes and the ops it covers. */
typedef struct vo_case_entry {
    const char *name;
    void (*run)(vo_ctx *x);
    const char *ops[3];
} vo_case_entry;

static const vo_case_entry vo_cases[] = {
    {"fill", vc_fill, {"fill"}},
    {"copy", vc_copy, {"copy"}},
    {"cast", vc_cast, {"cast"}},
    {"add", vc_add, {"add"}},
    {"scale", vc_scale, {"scale"}},
    {"axpy", vc_axpy, {"axpy"}},
    {"sum_rows", vc_sum_rows, {"sum_rows"}},
    {"matmul", vc_matmul, {"matmul"}},
    {"matmul_grouped", vc_matmul_grouped, {"matmul_grouped"}},
    {"attention", vc_attention, {"attention_fwd", "attention_bwd"}},
    {"attention_decode", vc_attention_decode, {"attention_decode"}},
    {"selective_scan", vc_selective_scan, {"selective_scan_fwd", "selective_scan_bwd"}},
    {"selective_scan_step", vc_selective_scan_step, {"selective_scan_step"}},
    {"causal_conv1d", vc_causal_conv1d, {"causal_conv1d_fwd", "causal_conv1d_bwd"}},
    {"rmsnorm", vc_rmsnorm, {"rmsnorm_fwd", "rmsnorm_bwd"}},
    {"rope", vc_rope, {"rope_fwd", "rope_bwd"}},
    {"swiglu", vc_swiglu, {"swiglu_fwd", "swiglu_bwd"}},
    {"embedding", vc_embedding, {"embedding_fwd", "embedding_bwd"}},
    {"router", vc_router, {"router_topk", "router_topk_bwd"}},
    {"select_topk", vc_select_topk, {"select_topk"}},
    {"gather_rows", vc_gather_rows, {"gather_rows"}},
    {"scatter_add_rows", vc_scatter_add_rows, {"scatter_add_rows"}},
    {"cross_entropy", vc_cross_entropy, {"cross_entropy"}},
    {"adamw_step", vc_adamw, {"adamw_step"}},
    {"sum_squares", vc_sum_squares, {"sum_squares"}},
    {"row_scale", vc_row_scale, {"row_scale_fwd", "row_scale_bwd"}},
    {"exp", vc_exp, {"exp_fwd", "exp_bwd"}},
    {"bce_logits", vc_bce_logits, {"bce_logits"}},
    {"moe_aux", vc_moe_aux, {"moe_aux"}},
};
#define N_VO_CASES ((int)(sizeof vo_cases / sizeof vo_cases[0]))

static bool vo_case_wanted(const vo_case_entry *c, const bool *want) {
    for (int k = 0; k < 3 && c->ops[k]; k++)
        if (want[vf_op_index(c->ops[k])]) return true;
    return false;
}

chm_status vf_ops_run(chm_verify_report *r, chm_backend *const *bes, int n, const bool *want,
                      chm_dtype dt, uint64_t seed, int threads, FILE *progress, chm_err *err) {
    chm_backend_options bo = {.device_index = -1, .threads = threads, .quiet = true};
    chm_backend *ref = NULL;
    chm_status rc = chm_backend_open("cpu", &bo, &ref, err);
    if (rc) return rc;
    ref->debug_fault[0] = '\0'; /* the reference stays right when the cpu is the one faulted */
    vo_ctx x;
    memset(&x, 0, sizeof x);
    x.r = r;
    x.err = err;
    x.want = want;
    x.rng = (seed ? seed : 1) * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    x.lowp = dt == CHM_BF16 || dt == CHM_F16;
    x.side[x.n++] = (vo_side){.be = ref, .dt = CHM_F64};
    for (int i = 0; i < n && i < CHM_VERIFY_MAX_BACKENDS; i++)
        if (!x.lowp || (bes[i]->caps & (dt == CHM_BF16 ? CHM_CAP_BF16 : CHM_CAP_F16)))
            x.side[x.n++] = (vo_side){.be = bes[i], .dt = dt};
    if (x.n == 1) { /* no backend stores bf16: no pass */
        chm_backend_close(ref);
        return CHM_OK;
    }
    int total = 0, at = 0;
    for (int i = 0; i < N_VO_CASES; i++) total += vo_case_wanted(&vo_cases[i], want);
    for (int i = 0; i < N_VO_CASES && !x.fatal; i++) {
        if (!vo_case_wanted(&vo_cases[i], want)) continue;
        vf_progress(progress, "verify: ops%s [%d/%d] %s", x.lowp ? " in bf16" : "", ++at, total,
                    vo_cases[i].name);
        vo_cases[i].run(&x);
    }
    chm_backend_close(ref);
    return x.fatal;
}
