/*
 * verify_ops.h: the engine of the op phase, shared by verify_ops.c (the
 * engine, the op list with its limits, the phase) and the case files
 * (verify_cases_*.c: inputs that respect each op's contract, and shapes).
 *
 * A "side" is one place an op runs: side 0 is the reference (a cpu backend
 * instance of its own, in f64, fault switch off), sides 1.. are the
 * backends under test (f32). A vo_t is one tensor on every side. Case code
 * creates inputs with vo_rand / vo_set / vo_ints (the same values on every
 * side, rounded first to the narrowest dtype any side stores), poisons outputs with vo_poison, calls the op
 * on every side with VO_CALL, compares outputs with vo_check /
 * vo_check_exact, and passes forward outputs a backward needs with vo_share
 * (the reference's values go to every side, so a wrong forward never fails
 * its backward). Every input of an op must come from those functions, never
 * from an earlier op's output on a backend: the engine skips ops that were
 * not selected on the backends.
 * Failures never stop a case: a failed call or transfer is recorded as a
 * check and the case goes on; only the reference failing is fatal.
 */
#ifndef CHIMERA_VERIFY_OPS_H
#define CHIMERA_VERIFY_OPS_H

#include "verify_internal.h"

/* Sides: the reference and up to CHM_VERIFY_MAX_BACKENDS backends. */
#define VO_MAX_SIDES (1 + CHM_VERIFY_MAX_BACKENDS)
/* Most ops the op list holds. */
#define VO_MAX_OPS 48
/* The side's float dtype in vo_new: f64 on the reference; f32 on the backends, or bf16 in
 * the bf16 pass. */
#define VO_FLOAT ((chm_dtype)-1)
/* The side's statistics dtype (chm_dtype_stats of its float dtype: rstd, lse, losses, the
 * master weights and moments of adamw) in vo_new. */
#define VO_STATS ((chm_dtype)-2)
/* The bf16 pass multiplies every op's limit by this: 1e-5 -> 1e-2. bf16 keeps 8 bits of
 * mantissa, so rounding an output alone costs ~1e-3 rel-L2; DESIGN.md's bf16 tolerance. */
#define VO_LOWP_FACTOR 1000.0

typedef struct vo_side {
    chm_backend *be;
    chm_dtype dt;                   /* float dtype of this side */
    bool call_failed[VO_MAX_OPS];   /* the op's last call failed here (recorded already) */
    char broken[256];               /* a transfer failed: later checks here fail with this */
} vo_side;

typedef struct vo_ctx {
    chm_verify_report *r;
    vo_side side[VO_MAX_SIDES];
    int n;                          /* sides, the reference first */
    uint64_t rng;
    const bool *want;               /* [chm_verify_op_count()] ops selected */
    chm_status fatal;               /* the reference failed or memory ran out: stop */
    chm_err *err;                   /* holds the fatal message */
    char what[96];                  /* the case being run, e.g. "rmsnorm 2x37x64" */
    bool lowp;                      /* the bf16 pass: backends compute in bf16 */
} vo_ctx;

/* One tensor on every side (unused sides zero). */
typedef struct vo_t {
    chm_tensor t[VO_MAX_SIDES];
    chm_buffer *b[VO_MAX_SIDES];
    int64_t n;
} vo_t;

/* Uniform in [lo, hi) from the case stream (xorshift64*, seeded by the options). */
double vo_uniform(vo_ctx *x, double lo, double hi);

/* An unset tensor: dt VO_FLOAT or VO_STATS (per side) or a fixed dtype. */
vo_t vo_new(vo_ctx *x, chm_dtype dt, int nd, const int64_t *shape);
/* A float tensor uniform in [lo, hi). */
vo_t vo_rand(vo_ctx *x, int nd, const int64_t *shape, double lo, double hi);
/* Same with dtype dt as in vo_new (VO_STATS for master weights and moments). */
vo_t vo_rand_as(vo_ctx *x, chm_dtype dt, int nd, const int64_t *shape, double lo, double hi);
/* The start of an accumulated gradient: small random values (never zeros). */
vo_t vo_grad0(vo_ctx *x, int nd, const int64_t *shape);
/* An I32 tensor holding v. */
vo_t vo_ints(vo_ctx *x, int nd, const int64_t *shape, const int32_t *v);
/* Upload h to every side, rounded first (h rewritten) to the narrowest dtype t has on any
 * side (bf16 in the bf16 pass, else f32), so that every side holds the same numbers. */
void vo_set(vo_ctx *x, vo_t *t, double *h);
/* NaN into a float tensor, -12345 into an index tensor, on every side. */
void vo_poison(vo_ctx *x, vo_t *t);
/* The reference's contents of t, to every other side (rounded as vo_set). */
void vo_share(vo_ctx *x, vo_t *t);
/* Name the case the next calls and checks belong to (printf format). */
void vo_case(vo_ctx *x, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* A view of every side's tensor (chm_tensor_view). */
vo_t vo_view(const vo_t *t, int64_t elem_offset, int nd, const int64_t *shape);
/* Free the buffers of n tensors. */
void vo_free_all(vo_t *const *t, int n);
#define VO_FREE(...) vo_free_all((vo_t *const[]){__VA_ARGS__}, \
                                 (int)(sizeof((vo_t *const[]){__VA_ARGS__}) / sizeof(vo_t *)))

/*
 * Compare t on each backend with the reference and record one check of op
 * (named "<case> <out>"); `mult` scales the op's limit for an output that sums more
 * terms than the op's others (say why at the call). Only selected ops are
 * recorded; sides whose call failed are skipped (their failure is recorded).
 */
void vo_check(vo_ctx *x, const char *op, const char *out, const vo_t *t, double mult);
/* Same for index outputs, which must match exactly. */
void vo_check_exact(vo_ctx *x, const char *op, const char *out, const vo_t *t);

/* Whether op runs on side s (the reference always runs; backends when op is selected). */
bool vo_runs(vo_ctx *x, const char *op, int s);
/* After op ran on side s with status rc: sync, then record a failure (or a skip). */
void vo_done(vo_ctx *x, const char *op, int s, chm_status rc);

/*
 * Run `call` on every side that needs it. Inside, BE is the side's backend
 * and VT(v) the side's tensor of v; VO_SIDE is the side's index.
 */
#define VO_CALL(x, op, call)                                   \
    for (int VO_SIDE = 0; VO_SIDE < (x)->n; VO_SIDE++) {       \
        if (!vo_runs((x), (op), VO_SIDE)) continue;            \
        chm_backend *BE = (x)->side[VO_SIDE].be;               \
        vo_done((x), (op), VO_SIDE, (call));                   \
    }
#define VT(v) (&(v).t[VO_SIDE])
/* VT(v) or NULL when `cond` is false (an optional tensor). */
#define VT_IF(cond, v) ((cond) ? VT(v) : NULL)

/* The shape string "2x37x64" of n dims into buf; returns buf. */
const char *vo_dims(char *buf, size_t len, int n, const int64_t *d);

/* A compound literal of dims. */
#define VD(...) ((const int64_t[]){__VA_ARGS__})

/* ---- the cases (verify_cases_*.c): each runs every shape of its ops ---- */
void vc_fill(vo_ctx *x);
void vc_copy(vo_ctx *x);
void vc_cast(vo_ctx *x);
void vc_add(vo_ctx *x);
void vc_scale(vo_ctx *x);
void vc_axpy(vo_ctx *x);
void vc_sum_rows(vo_ctx *x);
void vc_matmul(vo_ctx *x);
void vc_matmul_grouped(vo_ctx *x);
void vc_rmsnorm(vo_ctx *x);
void vc_rope(vo_ctx *x);
void vc_swiglu(vo_ctx *x);
void vc_embedding(vo_ctx *x);
void vc_row_scale(vo_ctx *x);
void vc_exp(vo_ctx *x);
void vc_sum_squares(vo_ctx *x);
void vc_adamw(vo_ctx *x);
void vc_attention(vo_ctx *x);
void vc_attention_decode(vo_ctx *x);
void vc_selective_scan(vo_ctx *x);
void vc_selective_scan_step(vo_ctx *x);
void vc_causal_conv1d(vo_ctx *x);
void vc_router(vo_ctx *x);
void vc_select_topk(vo_ctx *x);
void vc_gather_rows(vo_ctx *x);
void vc_scatter_add_rows(vo_ctx *x);
void vc_cross_entropy(vo_ctx *x);
void vc_bce_logits(vo_ctx *x);
void vc_moe_aux(vo_ctx *x);

#endif
