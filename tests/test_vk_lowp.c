/*
 * test_vk_lowp.c: bf16 and f16 tensors on the vulkan backend (suite vk_lowp;
 * every op's native 16-bit shaders, dt.glsl), against the cpu backend's
 * 16-bit ops.
 *
 * Both backends compute a 16-bit op as the f32 op on the same 16-bit values,
 * rounded once to the op's dtype, so their results differ only by f32
 * summation order turned into at most a rounding step: every 16-bit output
 * must agree within 2 ulps of its dtype (plus 1e-5 of the tensor's largest
 * magnitude, for sums that cancel), f32 outputs (stats, losses, master
 * weights) to 1e-5, int32 outputs exactly, and inputs stay bit for bit.
 * Each op is a case: its arguments in a short spec string (below), one run
 * in bf16 and one in f16 on the same random values; outputs are poisoned
 * (NaN) first, accumulated gradients start at the same random values. The
 * vulkan call must only record commands (no submit: no host round trip) and
 * must give back every byte of scratch it took.
 *
 * Then: an op whose kernel fails writes nothing back; a device without
 * 16-bit storage refuses bf16 (op and trainer) with a clear message; the
 * wrappers' 16-bit rules still hold; one forward+backward of configs/test.yaml
 * in bf16 on vulkan matches cpu bf16 (loss 1e-4 relative, gradient cosines
 * > 0.999); 20 bf16 training steps on vulkan learn as cpu bf16 does; and
 * precision auto picks bf16 only with real cooperative matrices. Skipped without a Vulkan device; the
 * validation layer must stay silent.
 */
#include <math.h>
#include <stdio.h>

#include "chimera/model.h"
#include "chimera/trainer.h"
#include "core/half.h"
#include "train_fixture.h"
#include "vk_harness.h"

#define CORPUS_CACHE "/tmp/chimera-tests-cache/chimera"
#define MAX_SPEC 18    /* arguments of the largest case (selective_scan_bwd: 17) */
#define ULPS 2.0       /* 16-bit outputs: ulps of their dtype allowed between the backends */
#define I32_POISON (-7)

static const chm_dtype DTS[] = {CHM_BF16, CHM_F16};

/* The vulkan backend, or skip the test without a device or without 16-bit storage. */
static chm_backend *vk_open_16bit(void) {
    chm_backend *vk = vk_open();
    if (vk->caps & CHM_CAP_BF16) return vk;
    vk_close(vk);
    cr_skip_test("this Vulkan device has no 16-bit storage");
    return NULL;
}

/* ---- values in any dtype ---------------------------------------------------------------- */

/* Host doubles as the bytes of dt (16-bit: rounded to nearest even through f32). */
static void *encode(chm_dtype dt, const double *v, int64_t n) {
    size_t es = chm_dtype_size(dt);
    unsigned char *raw = malloc((size_t)n * es + 1);
    for (int64_t i = 0; i < n; i++) {
        float f = (float)v[i];
        int32_t k = (int32_t)v[i];
        uint16_t h = dt == CHM_BF16 ? chm_f32_to_bf16(f) : chm_f32_to_f16(f);
        const void *src = dt == CHM_F32 ? (const void *)&f : dt == CHM_I32 ? (const void *)&k : &h;
        memcpy(raw + (size_t)i * es, src, es);
    }
    return raw;
}

/* Element i of raw bytes of dt as a double. */
static double decode(chm_dtype dt, const unsigned char *raw, int64_t i) {
    uint16_t h;
    float f;
    int32_t k;
    switch (chm_dtype_size(dt)) {
    case 2:
        memcpy(&h, raw + 2 * i, 2);
        return dt == CHM_BF16 ? chm_bf16_to_f32(h) : chm_f16_to_f32(h);
    default:
        memcpy(dt == CHM_I32 ? (void *)&k : (void *)&f, raw + 4 * i, 4);
        return dt == CHM_I32 ? k : f;
    }
}

static void put_values(chm_backend *be, const chm_tensor *t, const double *v) {
    void *raw = encode(t->dtype, v, chm_tensor_numel(t));
    cr_assert_eq(chm_upload(be, t, raw), CHM_OK, "%s: %s", be->name, be->err.msg);
    free(raw);
}

/* t's elements as doubles (malloc'ed). */
static double *get_values(chm_backend *be, const chm_tensor *t) {
    int64_t n = chm_tensor_numel(t);
    unsigned char *raw = malloc(chm_tensor_nbytes(t) + 1);
    cr_assert_eq(chm_download(be, t, raw), CHM_OK, "%s: %s", be->name, be->err.msg);
    double *v = tt_dalloc(n);
    for (int64_t i = 0; i < n; i++) v[i] = decode(t->dtype, raw, i);
    free(raw);
    return v;
}

/* The spacing of dt's values at magnitude |v| (bf16: 8 significant bits, f16: 11 and
 * subnormals from 2^-24); 0 at 0. */
static double ulp16(chm_dtype dt, double v) {
    if (v == 0) return 0;
    int e;
    frexp(v, &e);
    double u = ldexp(1.0, e - (dt == CHM_BF16 ? 8 : 11));
    return dt == CHM_F16 ? fmax(u, 0x1p-24) : u;
}

/* ---- the cases -------------------------------------------------------------------------- */

/*
 * A case's arguments, space separated. Each is KU[lo,hi]:shape with K the
 * dtype (x: the run's 16-bit dtype, f: f32, i: i32) and U the use (r: read,
 * w: written, poisoned first, a: accumulated, random start); [lo,hi] is the
 * random range ([-1,1] when left out; ids: integers lo..hi); shape is
 * dims joined by x. "=k" (or "=k:shape") is the bytes of argument k again.
 */
typedef struct spec_arg {
    char kind, use;
    double lo, hi;
    int ndim;
    int64_t shape[4];
    int same;  /* argument whose bytes this one is, or -1 */
} spec_arg;

/* Dims "3x5x7" into a (ndim, shape); p points past the ':'. */
static void parse_shape(const char *p, spec_arg *a) {
    char *end;
    a->ndim = 0;
    do {
        a->shape[a->ndim++] = strtoll(p, &end, 10);
        p = end + 1;
    } while (*end == 'x' && a->ndim < 4);
}

static spec_arg parse_arg(const char *tok) {
    spec_arg a = {.lo = -1, .hi = 1, .same = -1};
    char *end = (char *)tok;
    if (tok[0] == '=') {
        a.same = (int)strtol(tok + 1, &end, 10);
    } else {
        a.kind = tok[0], a.use = tok[1];
        end = (char *)tok + 2;
        if (*end == '[') {
            a.lo = strtod(end + 1, &end);
            a.hi = strtod(end + 1, &end);
            end++; /* ']' */
        }
    }
    if (*end == ':') parse_shape(end + 1, &a);
    return a;
}

/* Parse a spec string into a[]; returns the argument count. */
static int parse_spec(const char *spec, spec_arg *a) {
    char buf[512], *save = NULL;
    snprintf(buf, sizeof buf, "%s", spec);
    int n = 0;
    for (char *tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        cr_assert(n < MAX_SPEC, "spec %s: too many arguments", spec);
        a[n++] = parse_arg(tok);
    }
    return n;
}

typedef enum op_id {
    ATT_FWD, ATT_BWD, ATT_DECODE, SCAN_FWD, SCAN_FWD_BARE, SCAN_BWD, SCAN_STEP, CONV_FWD,
    CONV_BWD, RMS_FWD, RMS_BWD, ROPE_FWD, ROPE_BWD, ROPE_FWD_SWAP, SWIGLU_FWD, SWIGLU_BWD,
    EMB_FWD, EMB_BWD, ADD, ADD_SWAP, SCALE, AXPY, SUM_ROWS, RS_FWD, RS_FWD_PLAIN, RS_FWD_SWAP,
    RS_BWD, EXP_FWD, EXP_FWD_SWAP, EXP_BWD, ROUTER_SOFTMAX, ROUTER_SIGMOID, ROUTER_BWD,
    SELECT, GATHER, SCATTER, CE, CE_SWAP, BCE, BCE_SWAP, MOE_AUX, SUMSQ, ADAMW
} op_id;

/* The Test each case belongs to. */
typedef enum family { ATTENTION, MAMBA, LAYERS, ELEMENTWISE, ROUTING, LOSSES, ALIASED } family;

typedef struct lp_case {
    family fam;
    op_id op;
    const char *name;
    const char *spec;
} lp_case;

/* The scan's inputs from t[at..at+7] (u, delta, A, Bm, Cm, D, z, delta_bias). */
static chm_scan_args scan_at(const chm_tensor *const *t, int at, bool bare) {
    chm_scan_args a = {t[at], t[at + 1], t[at + 2], t[at + 3], t[at + 4],
                       NULL,  NULL,      NULL,      !bare,     NULL,      0, NULL};
    if (!bare) a.D = t[at + 5], a.z = t[at + 6], a.delta_bias = t[at + 7];
    return a;
}

/* The selective scan's calls (the backward's grads: t[0..7], which the test owns). */
static chm_status call_scan(chm_backend *be, op_id op, const chm_tensor *const *t) {
    chm_scan_args a = scan_at(t, op == SCAN_BWD ? 9 : op == SCAN_STEP ? 2 : 1, op == SCAN_FWD_BARE);
    if (op == SCAN_STEP) return chm_selective_scan_step(be, t[0], t[1], &a);
    if (op != SCAN_BWD) return chm_selective_scan_fwd(be, t[0], &a);
    chm_tensor *g[8];
    for (int i = 0; i < 8; i++) g[i] = (chm_tensor *)t[i];
    chm_scan_grads gr = {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
    return chm_selective_scan_bwd(be, &gr, t[8], &a);
}

/* One case's op on its tensors in spec order (_SWAP: outputs first, aliasing an input). */
static chm_status call_op(chm_backend *be, op_id op, const chm_tensor *const *t) {
    chm_adamw_args aw = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                         .weight_decay = 0.1, .step = 3, .grad_scale = 0.5};
    switch (op) {
    case ATT_FWD: return chm_attention_fwd(be, t[0], t[1], t[2], t[3], t[4], 0.35);
    case ATT_BWD: return chm_attention_bwd(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7],
                                           t[8], 0.35);
    case ATT_DECODE: return chm_attention_decode(be, t[0], t[1], t[2], t[3], 0.35);
    case CONV_FWD: return chm_causal_conv1d_fwd(be, t[0], t[1], t[2], t[3], true);
    case CONV_BWD: return chm_causal_conv1d_bwd(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6], true);
    case RMS_FWD: return chm_rmsnorm_fwd(be, t[0], t[1], t[2], t[3], 1e-5);
    case RMS_BWD: return chm_rmsnorm_bwd(be, t[0], t[1], t[2], t[3], t[4], t[5]);
    case ROPE_FWD: return chm_rope_fwd(be, t[0], t[1], 1e4, 3);
    case ROPE_BWD: return chm_rope_bwd(be, t[0], t[1], 1e4, 3);
    case ROPE_FWD_SWAP: return chm_rope_fwd(be, t[1], t[0], 1e4, 0);
    case SWIGLU_FWD: return chm_swiglu_fwd(be, t[0], t[1], t[2]);
    case SWIGLU_BWD: return chm_swiglu_bwd(be, t[0], t[1], t[2], t[3], t[4], true);
    case EMB_FWD: return chm_embedding_fwd(be, t[0], t[1], t[2]);
    case EMB_BWD: return chm_embedding_bwd(be, t[0], t[1], t[2]);
    case ADD: return chm_add(be, t[0], t[1], t[2]);
    case ADD_SWAP: return chm_add(be, t[2], t[0], t[1]);
    case SCALE: return chm_scale(be, t[0], t[1], -0.3);
    case AXPY: return chm_axpy(be, t[0], t[1], 0.7);
    case SUM_ROWS: return chm_sum_rows(be, t[0], t[1]);
    case RS_FWD: return chm_row_scale_fwd(be, t[0], t[1], t[2], true);
    case RS_FWD_PLAIN: return chm_row_scale_fwd(be, t[0], t[1], t[2], false);
    case RS_FWD_SWAP: return chm_row_scale_fwd(be, t[2], t[0], t[1], true);
    case RS_BWD: return chm_row_scale_bwd(be, t[0], t[1], t[2], t[3], t[4], true);
    case EXP_FWD: return chm_exp_fwd(be, t[0], t[1], -1);
    case EXP_FWD_SWAP: return chm_exp_fwd(be, t[1], t[0], 2);
    case EXP_BWD: return chm_exp_bwd(be, t[0], t[1], t[2]);
    case ROUTER_SOFTMAX: return chm_router_topk(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6],
                                                CHM_ROUTER_SOFTMAX, true);
    case ROUTER_SIGMOID: return chm_router_topk(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6],
                                                CHM_ROUTER_SIGMOID, false);
    case ROUTER_BWD: return chm_router_topk_bwd(be, t[0], t[1], t[2], t[3], CHM_ROUTER_SOFTMAX,
                                                true);
    case SELECT: return chm_select_topk(be, t[0], t[1], false);
    case GATHER: return chm_gather_rows(be, t[0], t[1], t[2]);
    case SCATTER: return chm_scatter_add_rows(be, t[0], t[1], t[2], t[3]);
    case CE: return chm_cross_entropy(be, t[0], t[1], t[2], t[3], 0.5);
    case CE_SWAP: return chm_cross_entropy(be, t[1], t[2], t[0], t[3], 1.5);
    case BCE: return chm_bce_logits(be, t[0], t[1], t[2], t[3], 0.25);
    case BCE_SWAP: return chm_bce_logits(be, t[1], t[2], t[0], t[3], 1.0);
    case MOE_AUX: return chm_moe_aux(be, t[0], t[1], t[2], t[3], 0.1, 0.01);
    case SUMSQ: return chm_sum_squares(be, t[0], t[1]);
    case ADAMW: return chm_adamw_step(be, t[0], t[1], t[2], t[3], t[4], &aw);
    default: return call_scan(be, op, t);
    }
}

/* ---- one case on both backends ---------------------------------------------------------- */

/* The tensors of one case on one backend. */
typedef struct side_set {
    tt_tensor own[MAX_SPEC];
    chm_tensor t[MAX_SPEC];
    const chm_tensor *p[MAX_SPEC];
} side_set;

static chm_dtype kind_dtype(char kind, chm_dtype dt) {
    return kind == 'x' ? dt : kind == 'f' ? CHM_F32 : CHM_I32;
}

/* Random starting values of a read or accumulated argument. */
static double *start_values(const spec_arg *a, int64_t n, tt_rng *rng) {
    double *v = tt_dalloc(n);
    for (int64_t i = 0; i < n; i++)
        v[i] = a->kind == 'i' ? floor(tt_uniform(rng, a->lo, a->hi + 1))
                              : tt_uniform(rng, a->lo, a->hi);
    return v;
}

/* Allocate s's tensors (aliases share bytes) and fill them: start values, else poison. */
static void side_setup(chm_backend *be, side_set *s, const spec_arg *a, int n, chm_dtype dt,
                       double *const *start) {
    for (int i = 0; i < n; i++) {
        s->p[i] = &s->t[i];
        s->own[i].buf = NULL;
        if (a[i].same >= 0) {
            const chm_tensor *o = &s->t[a[i].same];
            s->t[i] = a[i].ndim ? chm_tensor_make(o->buf, o->offset, o->dtype, a[i].ndim,
                                                  a[i].shape)
                                : *o;
            continue;
        }
        s->own[i] = tt_alloc(be, kind_dtype(a[i].kind, dt), a[i].ndim, a[i].shape);
        s->t[i] = s->own[i].t;
        if (start[i])
            put_values(be, &s->t[i], start[i]);
        else
            cr_assert_eq(chm_fill(be, &s->t[i], a[i].kind == 'i' ? I32_POISON : NAN), CHM_OK,
                         "%s: %s", be->name, be->err.msg);
    }
}

static void side_free(side_set *s, int n) {
    for (int i = 0; i < n; i++) tt_free(&s->own[i]);
}

/* got (vulkan) against want (cpu) for argument i of a case (see the file comment). */
static void compare_arg(const char *what, const spec_arg *a, int i, chm_dtype dt,
                        const double *got, const double *want, int64_t n) {
    double big = 0;
    for (int64_t e = 0; e < n; e++) big = fmax(big, fabs(want[e]));
    for (int64_t e = 0; e < n; e++) {
        double g = got[e], w = want[e], tol;
        cr_assert(isfinite(w), "%s arg %d [%lld]: the cpu gave %g", what, i, (long long)e, w);
        if (a->use == 'r' || a->kind == 'i')
            tol = 0;
        else if (a->kind == 'x')
            tol = ULPS * ulp16(dt, fmax(fabs(g), fabs(w))) + 1e-5 * big;
        else
            tol = 1e-5 * (big + fabs(w));
        cr_assert(fabs(g - w) <= tol, "%s arg %d [%lld]: vulkan %.9g, cpu %.9g (tolerance %.3g)",
                  what, i, (long long)e, g, w, tol);
    }
}

/*
 * The vulkan call: recorded only (a host round trip, a download, would submit and wait), and
 * every byte of scratch back in the pool.
 */
static chm_status vk_call_checked(chm_backend *vk, const char *what, op_id op,
                                  const chm_tensor *const *t) {
    cr_assert_eq(chm_sync(vk), CHM_OK, "%s", vk->err.msg);
    chm_vulkan_stats s0, s1;
    chm_vulkan_get_stats(vk, &s0);
    chm_status rc = call_op(vk, op, t);
    chm_vulkan_get_stats(vk, &s1);
    cr_assert_eq(s1.submits, s0.submits, "%s: the op submitted work", what);
    cr_assert_eq(s1.bytes_in_use, s0.bytes_in_use, "%s: %lld bytes of scratch not given back",
                 what, (long long)(s1.bytes_in_use - s0.bytes_in_use));
    return rc;
}

/* Case c in dtype dt on both backends; every argument compared. */
static void run_case(pair *bp, const lp_case *c, chm_dtype dt, tt_rng *rng) {
    spec_arg a[MAX_SPEC];
    int n = parse_spec(c->spec, a);
    double *start[MAX_SPEC] = {0};
    for (int i = 0; i < n; i++) {
        cr_assert(a[i].same < i, "%s: argument %d aliases a later one", c->name, i);
        if (a[i].same < 0 && a[i].use != 'w') {
            chm_tensor shape = chm_tensor_make(NULL, 0, CHM_F32, a[i].ndim, a[i].shape);
            start[i] = start_values(&a[i], chm_tensor_numel(&shape), rng);
        }
    }
    char what[96];
    snprintf(what, sizeof what, "%s in %s", c->name, chm_dtype_name(dt));
    side_set sc, sv;
    side_setup(bp->cpu, &sc, a, n, dt, start);
    side_setup(bp->vk, &sv, a, n, dt, start);
    cr_assert_eq(call_op(bp->cpu, c->op, sc.p), CHM_OK, "%s on cpu: %s", what, bp->cpu->err.msg);
    cr_assert_eq(vk_call_checked(bp->vk, what, c->op, sv.p), CHM_OK, "%s on vulkan: %s", what,
                 bp->vk->err.msg);
    cr_assert_eq(chm_sync(bp->vk), CHM_OK, "%s: %s", what, bp->vk->err.msg);
    for (int i = 0; i < n; i++) {
        if (a[i].same >= 0) continue;
        double *want = get_values(bp->cpu, &sc.t[i]), *got = get_values(bp->vk, &sv.t[i]);
        compare_arg(what, &a[i], i, dt, got, want, chm_tensor_numel(&sc.t[i]));
        free(want), free(got), free(start[i]);
    }
    side_free(&sc, n);
    side_free(&sv, n);
}

/* ---- the cases, by family ---------------------------------------------------------------- */

/* Scan inputs, B=1, T=9, Di=5, N=3: u, delta, A (< 0), Bm, Cm, D, z, delta_bias. */
#define SCAN_IN "xr:1x9x5 xr:1x9x5 xr[-1,-0.1]:5x3 xr:1x9x3 xr:1x9x3 xr:5 xr:1x9x5 xr:5"
/* Router, R=6 tokens, E=4 experts, K=2, capacity 3: gates, idx, probs, slot_token, slot_ref,
 * counts, logits. */
#define ROUTER "xw:6x2 iw:6x2 xw:6x4 iw:4x3 iw:4x3 iw:4 xr[-2,2]:6x4"

/*
 * Attention: q [B,T,H,D], k and v [B,T,Hk,D], lse [B,H,T] f32. Aliased: the aliasing an f32
 * call may have (identical bytes), which must share one f32 copy on vulkan too.
 */
static const lp_case CASES[] = {
    {ATTENTION, ATT_FWD, "attention_fwd", "xw:1x7x4x8 fw:1x4x7 xr:1x7x4x8 xr:1x7x2x8 xr:1x7x2x8"},
    {ATTENTION, ATT_FWD, "attention_fwd odd",
     "xw:2x3x3x5 fw:2x3x3 xr:2x3x3x5 xr:2x3x1x5 xr:2x3x1x5"},
    {ATTENTION, ATT_BWD, "attention_bwd",
     "xa:1x7x4x8 xa:1x7x2x8 xa:1x7x2x8 xr:1x7x4x8 xr:1x7x4x8 xr:1x7x2x8 xr:1x7x2x8 "
     "xr:1x7x4x8 fr[0.5,2]:1x4x7"},
    {ATTENTION, ATT_DECODE, "attention_decode", "xw:1x2x4x6 xr:1x2x4x6 xr:1x5x2x6 xr:1x5x2x6"},
    {MAMBA, SCAN_FWD, "selective_scan_fwd", "xw:1x9x5 " SCAN_IN},
    {MAMBA, SCAN_FWD_BARE, "selective_scan_fwd bare",
     "xw:2x4x3 xr:2x4x3 xr[0.05,1]:2x4x3 xr[-1,-0.1]:3x2 xr:2x4x2 xr:2x4x2"},
    {MAMBA, SCAN_BWD, "selective_scan_bwd",
     "xa:1x9x5 xa:1x9x5 xa:5x3 xa:1x9x3 xa:1x9x3 xa:5 xa:1x9x5 xa:5 xr:1x9x5 " SCAN_IN},
    {MAMBA, SCAN_STEP, "selective_scan_step", "xw:1x9x5 xa:1x5x3 " SCAN_IN},
    {MAMBA, CONV_FWD, "causal_conv1d_fwd", "xw:2x7x3 xr:2x7x3 xr:3x4 xr:3"},
    {MAMBA, CONV_BWD, "causal_conv1d_bwd", "xa:2x7x3 xa:3x4 xa:3 xr:2x7x3 xr:2x7x3 xr:3x4 xr:3"},
    /* C even: the fused backward's channel pairs (35 over two workgroups), two slabs */
    {MAMBA, CONV_BWD, "causal_conv1d_bwd, channel pairs",
     "xa:2x150x70 xa:70x4 xa:70 xr:2x150x70 xr:2x150x70 xr:70x4 xr:70"},
    {LAYERS, RMS_FWD, "rmsnorm_fwd", "xw:5x13 fw:5 xr:5x13 xr:13"},
    {LAYERS, RMS_BWD, "rmsnorm_bwd", "xa:5x13 xa:13 xr:5x13 xr:5x13 xr:13 fr[0.5,2]:5"},
    {LAYERS, RMS_BWD, "rmsnorm_bwd chunked dw", "xa:67x3 xa:3 xr:67x3 xr:67x3 xr:3 fr[0.5,2]:67"},
    {LAYERS, ROPE_FWD, "rope_fwd", "xw:2x3x2x6 xr:2x3x2x6"},
    {LAYERS, ROPE_BWD, "rope_bwd", "xa:1x5x3x4 xr:1x5x3x4"},
    {LAYERS, SWIGLU_FWD, "swiglu_fwd", "xw:3x7 xr:3x7 xr:3x7"},
    {LAYERS, SWIGLU_BWD, "swiglu_bwd", "xa:3x7 xa:3x7 xr:3x7 xr:3x7 xr:3x7"},
    {LAYERS, EMB_FWD, "embedding_fwd", "xw:2x3x5 ir[0,10]:2x3 xr:11x5"},
    {LAYERS, EMB_BWD, "embedding_bwd", "xa:11x5 xr:2x3x5 ir[0,10]:2x3"},
    {ELEMENTWISE, ADD, "add", "xw:3x5 xr:3x5 xr:3x5"},
    {ELEMENTWISE, SCALE, "scale", "xw:13 xr:13"},
    {ELEMENTWISE, AXPY, "axpy", "xa:15 xr:3x5"},
    {ELEMENTWISE, SUM_ROWS, "sum_rows", "xa:5 xr:7x5"},
    {ELEMENTWISE, SUM_ROWS, "sum_rows chunked", "xa:3 xr:70x3"},
    {ELEMENTWISE, RS_FWD, "row_scale_fwd sigmoid", "xw:4x5 xr:4x5 xr:4"},
    {ELEMENTWISE, RS_FWD_PLAIN, "row_scale_fwd", "xw:1x3 xr:1x3 xr:1"},
    {ELEMENTWISE, RS_BWD, "row_scale_bwd", "xa:4x5 xa:4 xr:4x5 xr:4x5 xr:4"},
    {ELEMENTWISE, EXP_FWD, "exp_fwd", "xw:3x4 xr[-2,1]:3x4"},
    {ELEMENTWISE, EXP_BWD, "exp_bwd", "xa:3x4 xr:3x4 xr[0.1,2]:3x4"},
    {ROUTING, ROUTER_SOFTMAX, "router_topk softmax", ROUTER},
    {ROUTING, ROUTER_SIGMOID, "router_topk sigmoid", ROUTER},
    {ROUTING, ROUTER_BWD, "router_topk_bwd", "xa:6x4 xr:6x2 xr[0.05,1]:6x4 ir[0,3]:6x2"},
    {ROUTING, SELECT, "select_topk", "iw:3x3 xr:3x7"},
    {ROUTING, GATHER, "gather_rows", "xw:5x3 xr:4x3 ir[-1,3]:5"},
    {ROUTING, SCATTER, "scatter_add_rows", "xa:4x3 xr:5x3 ir[-1,3]:5 xr:5"},
    {LOSSES, CE, "cross_entropy", "fw:5 xw:5x7 xr[-3,3]:5x7 ir[-1,6]:5"},
    {LOSSES, BCE, "bce_logits", "fw:9 xw:9 xr[-3,3]:9 xr[0,1]:9"},
    {LOSSES, MOE_AUX, "moe_aux", "fw:2 xa:5x4 xr[-2,2]:5x4 ir[0,3]:5x2"},
    {LOSSES, SUMSQ, "sum_squares", "fw:1 xr:3x7"},
    {LOSSES, SUMSQ, "sum_squares two passes", "fw:1 xr:61x97"},
    {LOSSES, ADAMW, "adamw_step 16-bit grad",
     "fa[-2,2]:3x11 xr:3x11 fa[-0.1,0.1]:3x11 fa[0.01,0.1]:3x11 xw:33"},
    {ALIASED, ADD_SWAP, "add out == a", "xa:3x5 xr:3x5 =0"},
    {ALIASED, ADD_SWAP, "add out == a == b", "xa:7 =0 =0"},
    {ALIASED, SCALE, "scale out == x", "xa:9 =0"},
    {ALIASED, AXPY, "axpy y == x reshaped", "xa:15 =0:3x5"},
    {ALIASED, CE_SWAP, "cross_entropy dlogits == logits", "xa[-3,3]:4x6 fw:4 =0 ir[-1,5]:4"},
    {ALIASED, BCE_SWAP, "bce_logits dlogits == logits", "xa[-3,3]:8 fw:8 =0 xr[0,1]:8"},
    {ALIASED, ROPE_FWD_SWAP, "rope_fwd out == x", "xa:2x3x1x6 =0"},
    {ALIASED, EXP_FWD_SWAP, "exp_fwd out == x", "xa:2x5 =0"},
    {ALIASED, RS_FWD_SWAP, "row_scale_fwd out == x", "xa:3x4 xr:3 =0"},
};

/* Every case of family fam in bf16 and in f16. */
static void run_family(family fam, uint64_t seed) {
    chm_backend *vk = vk_open_16bit();
    pair bp = {tt_open_cpu(), vk};
    tt_rng rng = tt_rng_make(seed);
    for (int d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
            if (CASES[i].fam == fam) run_case(&bp, &CASES[i], DTS[d], &rng);
    pair_close(&bp);
}

Test(vk_lowp, attention) { run_family(ATTENTION, 1); }
Test(vk_lowp, mamba) { run_family(MAMBA, 2); }
Test(vk_lowp, layers) { run_family(LAYERS, 3); }
Test(vk_lowp, elementwise) { run_family(ELEMENTWISE, 4); }
Test(vk_lowp, routing) { run_family(ROUTING, 5); }
Test(vk_lowp, losses_and_optimizer) { run_family(LOSSES, 6); }
Test(vk_lowp, aliased_arguments_share_one_copy) { run_family(ALIASED, 7); }

/* ---- failures and refusals -------------------------------------------------------------- */

/* A kernel that fails while recording (rope positions past 2^32) leaves its 16-bit output be. */
Test(vk_lowp, failed_op_writes_nothing_back) {
    chm_backend *vk = vk_open_16bit();
    tt_rng rng = tt_rng_make(8);
    for (int d = 0; d < 2; d++) {
        int64_t shape[] = {1, 3, 2, 4};
        tt_tensor dx = tt_alloc(vk, DTS[d], 4, shape), dout = tt_alloc(vk, DTS[d], 4, shape);
        double v[24];
        tt_fill_uniform(&rng, v, 24, -1, 1);
        put_values(vk, &dx.t, v);
        put_values(vk, &dout.t, v);
        double *before = get_values(vk, &dx.t);
        tt_expect_fail(vk, chm_rope_bwd(vk, &dx.t, &dout.t, 1e4, (int64_t)1 << 33),
                       CHM_ERR_UNSUPPORTED, "rope_bwd", "2^32");
        double *after = get_values(vk, &dx.t);
        cr_assert_arr_eq(after, before, 24 * sizeof *after, "%s dx changed by a failed call",
                         chm_dtype_name(DTS[d]));
        free(before), free(after);
        tt_free(&dx), tt_free(&dout);
    }
    vk_close(vk);
}

/* Without 16-bit storage: no bf16/f16 caps, adapted ops and the trainer refuse, naming why. */
Test(vk_lowp, no_16bit_storage_refuses_bf16) {
    setenv("CHIMERA_VULKAN_DISABLE", "16bit", 1);
    chm_backend *vk = vk_open();
    cr_assert_eq(vk->caps & (CHM_CAP_BF16 | CHM_CAP_F16), 0);
    tt_tensor x = tt_alloc(vk, CHM_BF16, 2, (int64_t[]){3, 5}),
              o = tt_alloc(vk, CHM_BF16, 2, (int64_t[]){3, 5});
    tt_tensor w = tt_alloc(vk, CHM_BF16, 1, (int64_t[]){5}), r = tt_alloc(vk, CHM_F32, 1,
                                                                           (int64_t[]){3});
    tt_expect_fail(vk, chm_rmsnorm_fwd(vk, &o.t, &r.t, &x.t, &w.t, 1e-5), CHM_ERR_UNSUPPORTED,
                   "rmsnorm_fwd", "16-bit storage");
    tt_expect_fail(vk, chm_swiglu_fwd(vk, &o.t, &x.t, &x.t), CHM_ERR_UNSUPPORTED, "swiglu_fwd",
                   "bf16");
    tt_free(&x), tt_free(&o), tt_free(&w), tt_free(&r);
    vk_close(vk);
    chm_config cfg;
    load_config(&cfg, "precision=bf16");
    char *dir = make_tmpdir_named("chm-vklowp-");
    chm_trainer_options to = {.out_dir = dir, .backend = "vulkan", .quiet = true, .threads = 1,
                              .cache_dir = CORPUS_CACHE, .peak_tflops = 1};
    chm_trainer *t = NULL;
    chm_err err = {0};
    cr_assert_eq(chm_trainer_open(&cfg, &to, &t, &err), CHM_ERR_UNSUPPORTED, "%s", err.msg);
    cr_assert(strstr(err.msg, "precision bf16") && strstr(err.msg, "16-bit storage"), "%s",
              err.msg);
    cr_assert_null(t);
    chm_config_free(&cfg);
    remove_tmpdir(dir);
}

/* The wrappers' 16-bit rules hold on vulkan too (checked before any adapter runs). */
Test(vk_lowp, wrappers_keep_their_16_bit_rules) {
    chm_backend *vk = vk_open();
    enum { HB, HF, PF, S3, W4, ONE, NT };  /* bf16, f16, f32 [3,4]; bf16 [3], [4], [1] */
    const chm_dtype dt[NT] = {CHM_BF16, CHM_F16, CHM_F32, CHM_BF16, CHM_BF16, CHM_BF16};
    const int64_t dims[NT][2] = {{3, 4}, {3, 4}, {3, 4}, {3, 0}, {4, 0}, {1, 0}};
    tt_tensor x[NT];
    for (int i = 0; i < NT; i++) x[i] = tt_alloc(vk, dt[i], dims[i][1] ? 2 : 1, dims[i]);
    tt_expect_fail(vk, chm_add(vk, &x[HB].t, &x[HB].t, &x[HF].t), CHM_ERR_DTYPE, "add",
                   "out and b must match");
    tt_expect_fail(vk, chm_rmsnorm_fwd(vk, &x[HB].t, &x[S3].t, &x[HB].t, &x[W4].t, 1e-5),
                   CHM_ERR_DTYPE, "rmsnorm_fwd", "rstd must be f32");
    tt_expect_fail(vk, chm_sum_squares(vk, &x[ONE].t, &x[HB].t), CHM_ERR_DTYPE, "sum_squares",
                   "out must be f32 or f64");
    tt_expect_fail(vk, chm_swiglu_fwd(vk, &x[HB].t, &x[HB].t, &x[PF].t), CHM_ERR_DTYPE,
                   "swiglu_fwd", "up");
    for (int i = 0; i < NT; i++) tt_free(&x[i]);
    vk_close(vk);
}

/* ---- the model -------------------------------------------------------------------------- */

static chm_model *bf16_model(const chm_config *cfg, chm_backend *be) {
    chm_model_options mo = {.dtype = CHM_BF16, .batch = cfg->train.micro_batch,
                            .seq_len = cfg->train.seq_len};
    chm_model *m = NULL;
    chm_err err = {0};
    cr_assert_eq(chm_model_create(&cfg->model, be, &mo, &m, &err), CHM_OK, "%s: %s", be->name,
                 err.msg);
    cr_assert_eq(chm_model_init_params(m, 11, &err), CHM_OK, "%s", err.msg);
    return m;
}

/* One micro batch of random ids on m; its routing digest in *digest. */
static chm_model_loss one_pass(chm_model *m, const int32_t *ids, uint64_t *digest) {
    chm_model_loss l;
    chm_err err = {0};
    cr_assert_eq(chm_model_zero_grad(m, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_forward_backward(m, ids, 1.0, &l, &err), CHM_OK, "%s", err.msg);
    cr_assert_eq(chm_model_routing_digest(m, digest, &err), CHM_OK, "%s", err.msg);
    return l;
}

/* Worst cosine of the two models' parameter gradients (parameters no token reached skipped). */
static double worst_grad_cosine(chm_model *a, chm_model *b, const char **at) {
    double worst = 2;
    for (int i = 0; i < chm_model_param_count(a); i++) {
        const chm_model_param *p = chm_model_param_get(a, i), *q = chm_model_param_get(b, i);
        double *x = get_values(chm_model_backend(a), &p->grad);
        double *y = get_values(chm_model_backend(b), &q->grad);
        double xy = 0, xx = 0, yy = 0;
        for (int64_t k = 0; k < p->numel; k++)
            xy += x[k] * y[k], xx += x[k] * x[k], yy += y[k] * y[k];
        free(x), free(y);
        cr_assert(xx > 0 || yy == 0, "%s: the cpu gradient is zero, vulkan's is not", p->name);
        double cs = xx == 0 ? 1 : yy == 0 ? 0 : xy / sqrt(xx * yy);
        if (cs < worst) worst = cs, *at = p->name;
    }
    return worst;
}

/*
 * configs/test.yaml in bf16, one forward+backward from the same weights on both backends. A
 * batch where a routing decision (MoE top-k, capacity, MoD top-k) falls the other way is a
 * discrete change that no tolerance covers, so the first of a few batches that route alike
 * is compared.
 */
Test(vk_lowp, model_bf16_matches_cpu_bf16) {
    chm_backend *vk = vk_open_16bit(), *cpu = tt_open_cpu();
    chm_config cfg;
    chm_err err = {0};
    cr_assert_eq(chm_config_load_builtin("test", NULL, 0, &cfg, &err), CHM_OK, "%s", err.msg);
    chm_model *mc = bf16_model(&cfg, cpu), *mv = bf16_model(&cfg, vk);
    int64_t n = cfg.train.micro_batch * (cfg.train.seq_len + 1);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    bool alike = false;
    chm_model_loss lc = {0}, lv = {0};
    for (uint64_t seed = 1; seed <= 6 && !alike; seed++) {
        tt_rng r = tt_rng_make(seed);
        for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(tt_next(&r) % (uint64_t)cfg.model.vocab);
        uint64_t dc, dv;
        lc = one_pass(mc, ids, &dc);
        lv = one_pass(mv, ids, &dv);
        alike = dc == dv;
    }
    cr_assert(alike, "every batch routes differently on vulkan and cpu");
    const char *at = "";
    double cs = worst_grad_cosine(mc, mv, &at), rel = fabs(lv.total - lc.total) / lc.total;
    printf("vk_lowp model bf16: loss %.7f vulkan, %.7f cpu (rel %.1e); worst gradient cosine "
           "%.6f (%s)\n", lv.total, lc.total, rel, cs, at);
    cr_assert(rel <= 1e-4, "loss %.9g on vulkan, %.9g on cpu", lv.total, lc.total);
    cr_assert(fabs(lv.ce - lc.ce) <= 1e-4 * lc.ce, "ce %.9g vs %.9g", lv.ce, lc.ce);
    cr_assert(cs > 0.999, "%s: gradient cosine %.6f", at, cs);
    free(ids);
    chm_model_free(mc);
    chm_model_free(mv);
    chm_config_free(&cfg);
    chm_backend_close(cpu);
    vk_close(vk);
}

/* n steps of the tiny test config with precision `prec` on backend: losses; the model dtype. */
static chm_dtype train(const char *backend, const char *prec, int n, double *loss) {
    chm_config cfg;
    load_config(&cfg, prec);
    char *dir = make_tmpdir_named("chm-vklowp-");
    chm_trainer_options to = {.out_dir = dir, .backend = backend, .quiet = true, .threads = 1,
                              .cache_dir = CORPUS_CACHE, .peak_tflops = 1};
    chm_trainer *t = NULL;
    chm_err err = {0};
    cr_assert_eq(chm_trainer_open(&cfg, &to, &t, &err), CHM_OK, "%s: %s", backend, err.msg);
    chm_dtype dt = chm_model_dtype(chm_trainer_model(t));
    for (int i = 0; i < n; i++) {
        chm_train_step s;
        cr_assert_eq(chm_trainer_step(t, &s, &err), CHM_OK, "%s step %d: %s", backend, i + 1,
                     err.msg);
        cr_assert(!s.skipped, "%s: step %d skipped", backend, i + 1);
        loss[i] = s.loss.total;
    }
    chm_trainer_close(t);
    chm_config_free(&cfg);
    remove_tmpdir(dir);
    return dt;
}

/*
 * 20 bf16 steps from the same weights and batches on both backends: the first losses agree
 * to 1e-4 and the mean of the last 5 falls at least 80% as far on vulkan as on the cpu (the
 * check of test_model_lowp: a stale compute copy, lost updates or flushed gradients fall far
 * short; routing flips make the curves drift apart by bf16 noise only).
 */
Test(vk_lowp, bf16_trains_like_cpu_bf16) {
    vk_close(vk_open_16bit()); /* skip without a usable device */
    enum { N = 20 };
    double c[N], v[N];
    cr_assert_eq(train("cpu", "precision=bf16", N, c), CHM_BF16);
    cr_assert_eq(train("vulkan", "precision=bf16", N, v), CHM_BF16);
    double end_c = 0, end_v = 0;
    for (int i = N - 5; i < N; i++) end_c += c[i] / 5, end_v += v[i] / 5;
    double drop_c = c[0] - end_c, drop_v = v[0] - end_v;
    printf("vk_lowp %d bf16 steps: cpu %.4f -> %.4f, vulkan %.4f -> %.4f\n", N, c[0], end_c, v[0],
           end_v);
    cr_assert(fabs(v[0] - c[0]) <= 1e-4 * c[0], "step 1: vulkan %.9g, cpu %.9g", v[0], c[0]);
    cr_assert(drop_c > 0.1, "cpu bf16 does not learn (drop %.4f)", drop_c);
    cr_assert(drop_v > 0.8 * drop_c, "vulkan drops %.4f, less than 80%% of the cpu's %.4f", drop_v,
              drop_c);
    cr_assert_eq(chm_vulkan_validation_messages(), 0, "the validation layer reported %llu messages",
                 (unsigned long long)chm_vulkan_validation_messages());
}

/* auto is bf16 on vulkan exactly where bf16 matmuls run on cooperative matrices (the backend's
 * CHM_CAP_FAST_BF16: never on lavapipe, nor with the emulated shaders), else f32. */
Test(vk_lowp, precision_auto_follows_fast_bf16) {
    chm_backend *vk = vk_open();
    unsigned caps = vk->caps;
    vk_close(vk);
    chm_dtype want = (caps & CHM_CAP_FAST_BF16) ? CHM_BF16 : CHM_F32;
    cr_assert_eq(chm_train_auto_dtype(NULL, "vulkan"), CHM_F32, "by name, vulkan is f32");
    cr_assert_eq(chm_train_auto_dtype(NULL, "cuda"), CHM_BF16, "by name, cuda is bf16");
    double loss[1];
    cr_assert_eq(train("vulkan", "precision=auto", 1, loss), want);
    cr_assert(isfinite(loss[0]));
}
