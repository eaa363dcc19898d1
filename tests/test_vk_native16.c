/*
 * test_vk_native16.c: the vulkan ops with native bf16/f16 shaders (suite
 * vk_native16; shaders/dt.glsl, src/backend/vulkan/vk_dtype.h).
 *
 * adamw_step (16-bit grad), sum_squares (16-bit x), add, scale, axpy,
 * sum_rows, swiglu, exp, rmsnorm, rope, gather_rows, scatter_add_rows,
 * embedding, cross_entropy, row_scale, attention (fwd, bwd, decode), the
 * selective scan (fwd, bwd, step), causal_conv1d, router_topk (and its
 * backward), select_topk, bce_logits and moe_aux (every float op: lowp.c
 * has no adapter left) read and write bf16/f16 words themselves instead of
 * going through f32 scratch copies (the old lowp.c adapters). Every case
 * runs in bf16 and in f16, at sizes with odd tails (element counts and rows
 * not multiples of 2, 4 or 8) on views that start an odd number of elements
 * into their buffers, on three backends from the same bytes:
 *  - cpu (its 16-bit ops compute in f32 and round once): 16-bit outputs
 *    agree within 2 ulps of their dtype (plus 1e-5 of the largest value,
 *    for sums that cancel), f32 outputs (stats, losses, master weights)
 *    within 1e-5, read-only inputs stay bit for bit;
 *  - vulkan ("one"): the op only records commands (no submit), gives its
 *    scratch back, and records exactly as many dispatches as the same op on
 *    f32 tensors of the same shapes. lowp.c's adapters cast every 16-bit
 *    argument to an f32 scratch copy and back with one dispatch each, so an
 *    equal count means no copy was made. With per-dispatch profiling on, no cast
 *    shader ever runs in this suite (the test moves 16-bit data only by
 *    upload, download and fill);
 *  - vulkan under CHIMERA_VULKAN_MAX_RANGE=4099 ("split"): elementwise ops
 *    split into several dispatches (vk_split.c) and equal "one" bit for bit,
 *    as does every op that fits the limit; sum_squares reduces other blocks
 *    there and agrees with the cpu instead.
 * Then: without 16-bit storage the native ops refuse bf16 naming the op, and
 * f64 stays refused. Skipped without a Vulkan device (or without 16-bit
 * storage); the validation layer must stay silent (vk_close).
 */
#include <math.h>
#include <stdio.h>

#include "core/half.h"
#include "vk_harness.h"

#define NARG 17          /* arguments of the largest case (selective_scan_bwd) */
#define SPLIT "4099"     /* the limit of the split backend (test_vk_split.c's) */
#define ELEMS 5003       /* elementwise cases: several chunks under the limit, odd tail */

typedef enum nv_op {
    ADAMW, ADAMW_NOLOWP, SUMSQ, ADD, ADD_INPLACE, SCALE, SCALE_INPLACE, AXPY, SUM_ROWS, SWIGLU_FWD,
    SWIGLU_BWD, EXP_FWD, EXP_BWD, RMS_FWD, RMS_BWD, ROPE_FWD, ROPE_BWD, GATHER, SCATTER, EMB_FWD,
    EMB_BWD, CE, CE_INPLACE, RS_FWD, RS_BWD, ATT_FWD, ATT_BWD, ATT_DECODE,
    SCAN_FWD, SCAN_FWD_BARE, SCAN_BWD, SCAN_STEP, CONV_FWD, CONV_FWD_LIN, CONV_BWD, CONV_BWD_LIN,
    ROUTER_SOFTMAX, ROUTER_SIGMOID, ROUTER_BWD, ROUTER_BWD_SIGMOID, SELECT, BCE, BCE_INPLACE,
    BCE_NOGRAD, MOE_AUX, MOE_AUX_NOGRAD
} nv_op;

/*
 * One argument. kind: 'x' the run's dtype (f32 in the counting run), 'h' the
 * run's dtype but bf16 in the counting run (param_lowp is always 16-bit),
 * 'y' the other 16-bit dtype, 'f' f32, 'i' i32. use: 'r' read (must stay
 * bit for bit), 'w' written (poisoned first), 'a' accumulated (random
 * start). Ids are integers in [lo, hi].
 */
typedef struct nv_arg {
    char kind, use;
    double lo, hi;
    int ndim;
    int64_t shape[4];
} nv_arg;

/* How the split backend runs a case: 'e' split, equal bit for bit; 'n' one dispatch as
 * on "one", equal; 's' split into other blocks, compared with the cpu. */
typedef struct nv_case {
    const char *name;
    nv_op op;
    char split;
    int nargs;
    nv_arg a[NARG];
} nv_case;

#define R1(k, u, lo, hi, d0) {k, u, lo, hi, 1, {d0}}
#define R2(k, u, lo, hi, d0, d1) {k, u, lo, hi, 2, {d0, d1}}
#define R3(k, u, lo, hi, d0, d1, d2) {k, u, lo, hi, 3, {d0, d1, d2}}
#define R4(k, u, lo, hi, d0, d1, d2, d3) {k, u, lo, hi, 4, {d0, d1, d2, d3}}
/* One elementwise argument of ELEMS elements. */
#define EW(k, u, lo, hi) R1(k, u, lo, hi, ELEMS)

/*
 * The selective scan's calls. Its inputs u, delta, A, Bm, Cm, D, z,
 * delta_bias are the last 8 arguments (the last 5 for SCAN_FWD_BARE: no
 * D, z, delta_bias, no softplus); before them y (fwd), y and h (step), or
 * the 8 gradients and dy (bwd).
 */
static chm_status call_scan(chm_backend *be, nv_op op, const chm_tensor *const *t) {
    int first = op == SCAN_BWD ? 9 : op == SCAN_STEP ? 2 : 1;
    const chm_tensor *const *in = t + first;
    bool full = op != SCAN_FWD_BARE;
    chm_scan_args a = {.u = in[0], .delta = in[1], .A = in[2], .Bm = in[3], .Cm = in[4],
                       .D = full ? in[5] : NULL, .z = full ? in[6] : NULL,
                       .delta_bias = full ? in[7] : NULL, .delta_softplus = full};
    if (op == SCAN_FWD || op == SCAN_FWD_BARE) return chm_selective_scan_fwd(be, t[0], &a);
    if (op == SCAN_STEP) return chm_selective_scan_step(be, t[0], t[1], &a);
    chm_tensor *gr[8]; /* the test's own tensors: writable */
    memcpy(gr, t, sizeof gr);
    chm_scan_grads g = {.du = gr[0], .ddelta = gr[1], .dA = gr[2], .dBm = gr[3], .dCm = gr[4],
                        .dD = gr[5], .dz = gr[6], .ddelta_bias = gr[7]};
    return chm_selective_scan_bwd(be, &g, t[8], &a);
}

/* The routers and their losses (outputs first, as the ops take them). */
static chm_status call_routing(chm_backend *be, nv_op op, const chm_tensor *const *t) {
    switch (op) {
    case ROUTER_SOFTMAX:
    case ROUTER_SIGMOID:
        return chm_router_topk(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6],
                               op == ROUTER_SIGMOID ? CHM_ROUTER_SIGMOID : CHM_ROUTER_SOFTMAX,
                               op == ROUTER_SOFTMAX);
    case ROUTER_BWD:
    case ROUTER_BWD_SIGMOID:
        return chm_router_topk_bwd(be, t[0], t[1], t[2], t[3],
                                   op == ROUTER_BWD ? CHM_ROUTER_SOFTMAX : CHM_ROUTER_SIGMOID,
                                   op == ROUTER_BWD);
    case SELECT: return chm_select_topk(be, t[0], t[1], false);
    case BCE: return chm_bce_logits(be, t[0], t[1], t[2], t[3], 0.7);
    case BCE_INPLACE: return chm_bce_logits(be, t[0], t[1], t[1], t[2], 1.5);
    case BCE_NOGRAD: return chm_bce_logits(be, t[0], NULL, t[1], t[2], 1.0);
    case MOE_AUX: return chm_moe_aux(be, t[0], t[1], t[2], t[3], 0.3, 0.05);
    default: return chm_moe_aux(be, t[0], NULL, t[1], t[2], 1.0, 1.0);
    }
}

static chm_status call(chm_backend *be, nv_op op, const chm_tensor *const *t) {
    chm_adamw_args aw = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                         .weight_decay = 0.1, .step = 4, .grad_scale = 0.6};
    switch (op) {
    case ADAMW: return chm_adamw_step(be, t[0], t[1], t[2], t[3], t[4], &aw);
    case ADAMW_NOLOWP: return chm_adamw_step(be, t[0], t[1], t[2], t[3], NULL, &aw);
    case SUMSQ: return chm_sum_squares(be, t[0], t[1]);
    case ADD: return chm_add(be, t[0], t[1], t[2]);
    case ADD_INPLACE: return chm_add(be, t[0], t[1], t[0]);
    case SCALE: return chm_scale(be, t[0], t[1], -0.7);
    case SCALE_INPLACE: return chm_scale(be, t[0], t[0], 1.3);
    case AXPY: return chm_axpy(be, t[0], t[1], -0.4);
    case SUM_ROWS: return chm_sum_rows(be, t[0], t[1]);
    case SWIGLU_FWD: return chm_swiglu_fwd(be, t[0], t[1], t[2]);
    case SWIGLU_BWD: return chm_swiglu_bwd(be, t[0], t[1], t[2], t[3], t[4], true);
    case EXP_FWD: return chm_exp_fwd(be, t[0], t[1], -1.5);
    case EXP_BWD: return chm_exp_bwd(be, t[0], t[1], t[2]);
    case RMS_FWD: return chm_rmsnorm_fwd(be, t[0], t[1], t[2], t[3], 1e-5);
    case RMS_BWD: return chm_rmsnorm_bwd(be, t[0], t[1], t[2], t[3], t[4], t[5]);
    case ROPE_FWD: return chm_rope_fwd(be, t[0], t[1], 1e4, 5);
    case ROPE_BWD: return chm_rope_bwd(be, t[0], t[1], 500.0, 2);
    case GATHER: return chm_gather_rows(be, t[0], t[1], t[2]);
    case SCATTER: return chm_scatter_add_rows(be, t[0], t[1], t[2], t[3]);
    case EMB_FWD: return chm_embedding_fwd(be, t[0], t[1], t[2]);
    case EMB_BWD: return chm_embedding_bwd(be, t[0], t[1], t[2]);
    case CE: return chm_cross_entropy(be, t[0], t[1], t[2], t[3], 0.75);
    case CE_INPLACE: return chm_cross_entropy(be, t[0], t[1], t[1], t[2], 2.0);
    case RS_FWD: return chm_row_scale_fwd(be, t[0], t[1], t[2], true);
    case ATT_FWD: return chm_attention_fwd(be, t[0], t[1], t[2], t[3], t[4], 0.31);
    case ATT_BWD:
        return chm_attention_bwd(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], 0.31);
    case ATT_DECODE: return chm_attention_decode(be, t[0], t[1], t[2], t[3], 0.43);
    case SCAN_FWD:
    case SCAN_FWD_BARE:
    case SCAN_BWD:
    case SCAN_STEP: return call_scan(be, op, t);
    case CONV_FWD: return chm_causal_conv1d_fwd(be, t[0], t[1], t[2], t[3], true);
    case CONV_FWD_LIN: return chm_causal_conv1d_fwd(be, t[0], t[1], t[2], NULL, false);
    case CONV_BWD: return chm_causal_conv1d_bwd(be, t[0], t[1], t[2], t[3], t[4], t[5], t[6], true);
    case CONV_BWD_LIN:
        return chm_causal_conv1d_bwd(be, t[0], t[1], NULL, t[2], t[3], t[4], NULL, false);
    case ROUTER_SOFTMAX:
    case ROUTER_SIGMOID:
    case ROUTER_BWD:
    case ROUTER_BWD_SIGMOID:
    case SELECT:
    case BCE:
    case BCE_INPLACE:
    case BCE_NOGRAD:
    case MOE_AUX:
    case MOE_AUX_NOGRAD: return call_routing(be, op, t);
    default: return chm_row_scale_bwd(be, t[0], t[1], t[2], t[3], t[4], false);
    }
}

/* ---- the cases, by family (outputs first, as the calls above take them) ---- */

static const nv_case OPTIMIZER[] = {
    /* param, grad, m, v, param_lowp */
    {"adamw_step, 16-bit grad and copy", ADAMW, 'e', 5,
     {EW('f', 'a', -2, 2), EW('x', 'r', -1, 1), EW('f', 'a', -0.1, 0.1), EW('f', 'a', 0.01, 0.1),
      EW('h', 'w', 0, 0)}},
    {"adamw_step, 16-bit grad, no copy", ADAMW_NOLOWP, 'e', 4,
     {EW('f', 'a', -2, 2), EW('x', 'r', -1, 1), EW('f', 'a', -0.1, 0.1),
      EW('f', 'a', 0.01, 0.1)}},
    {"adamw_step, grad and copy of different 16-bit dtypes", ADAMW, 'e', 5,
     {EW('f', 'a', -2, 2), EW('x', 'r', -1, 1), EW('f', 'a', -0.1, 0.1), EW('f', 'a', 0.01, 0.1),
      EW('y', 'w', 0, 0)}},
    {"sum_squares, split blocks", SUMSQ, 's', 2, {R1('f', 'w', 0, 0, 1), EW('x', 'r', -2, 2)}},
    {"sum_squares, one block", SUMSQ, 'n', 2, {R1('f', 'w', 0, 0, 1), R2('x', 'r', -2, 2, 3, 7)}},
};

static const nv_case ELEMENTWISE[] = {
    {"add", ADD, 'e', 3, {EW('x', 'w', 0, 0), EW('x', 'r', -1, 1), EW('x', 'r', -1, 1)}},
    {"add, out == b", ADD_INPLACE, 'e', 2, {EW('x', 'a', -1, 1), EW('x', 'r', -1, 1)}},
    {"scale", SCALE, 'e', 2, {EW('x', 'w', 0, 0), EW('x', 'r', -3, 3)}},
    {"scale, out == x", SCALE_INPLACE, 'e', 1, {EW('x', 'a', -3, 3)}},
    {"axpy", AXPY, 'e', 2, {EW('x', 'a', -1, 1), EW('x', 'r', -1, 1)}},
    {"swiglu_fwd", SWIGLU_FWD, 'e', 3,
     {EW('x', 'w', 0, 0), EW('x', 'r', -4, 4), EW('x', 'r', -1, 1)}},
    {"swiglu_bwd", SWIGLU_BWD, 'e', 5,
     {EW('x', 'a', -1, 1), EW('x', 'a', -1, 1), EW('x', 'r', -1, 1), EW('x', 'r', -4, 4),
      EW('x', 'r', -1, 1)}},
    {"exp_fwd", EXP_FWD, 'e', 2, {EW('x', 'w', 0, 0), EW('x', 'r', -3, 1)}},
    {"exp_bwd", EXP_BWD, 'e', 3, {EW('x', 'a', -1, 1), EW('x', 'r', -1, 1), EW('x', 'r', 0.1, 3)}},
    {"sum_rows", SUM_ROWS, 'n', 2, {R1('x', 'a', -1, 1, 13), R2('x', 'r', -1, 1, 7, 13)}},
    {"sum_rows, chunked", SUM_ROWS, 'n', 2, {R1('x', 'a', -1, 1, 3), R2('x', 'r', -1, 1, 71, 3)}},
};

static const nv_case LAYERS[] = {
    /* out, rstd, x, w */
    {"rmsnorm_fwd", RMS_FWD, 'n', 4,
     {R2('x', 'w', 0, 0, 7, 37), R1('f', 'w', 0, 0, 7), R2('x', 'r', -2, 2, 7, 37),
      R1('x', 'r', 0.5, 1.5, 37)}},
    /* dx, dw, dout, x, w, rstd */
    {"rmsnorm_bwd", RMS_BWD, 'n', 6,
     {R2('x', 'a', -1, 1, 7, 37), R1('x', 'a', -1, 1, 37), R2('x', 'r', -1, 1, 7, 37),
      R2('x', 'r', -2, 2, 7, 37), R1('x', 'r', 0.5, 1.5, 37), R1('f', 'r', 0.5, 2, 7)}},
    {"rmsnorm_bwd, chunked dw", RMS_BWD, 'n', 6,
     {R2('x', 'a', -1, 1, 67, 3), R1('x', 'a', -1, 1, 3), R2('x', 'r', -1, 1, 67, 3),
      R2('x', 'r', -2, 2, 67, 3), R1('x', 'r', 0.5, 1.5, 3), R1('f', 'r', 0.5, 2, 67)}},
    {"rope_fwd", ROPE_FWD, 'n', 2,
     {R4('x', 'w', 0, 0, 1, 5, 3, 6), R4('x', 'r', -1, 1, 1, 5, 3, 6)}},
    {"rope_bwd", ROPE_BWD, 'n', 2,
     {R4('x', 'a', -1, 1, 3, 5, 1, 10), R4('x', 'r', -1, 1, 3, 5, 1, 10)}},
    /* out, ids, table */
    {"embedding_fwd", EMB_FWD, 'n', 3,
     {R2('x', 'w', 0, 0, 15, 7), R1('i', 'r', 0, 10, 15), R2('x', 'r', -1, 1, 11, 7)}},
    /* dtable, dout, ids */
    {"embedding_bwd", EMB_BWD, 'n', 3,
     {R2('x', 'a', -1, 1, 11, 7), R2('x', 'r', -1, 1, 15, 7), R1('i', 'r', 0, 10, 15)}},
};

static const nv_case ROWS_AND_LOSSES[] = {
    /* out, x, idx */
    {"gather_rows", GATHER, 'n', 3,
     {R2('x', 'w', 0, 0, 9, 13), R2('x', 'r', -1, 1, 5, 13), R1('i', 'r', -1, 4, 9)}},
    /* rows of whole 16-byte words (gather_rows.comp's word copies) */
    {"gather_rows", GATHER, 'n', 3,
     {R2('x', 'w', 0, 0, 9, 24), R2('x', 'r', -1, 1, 5, 24), R1('i', 'r', -1, 4, 9)}},
    /* out, x, idx, weights */
    {"scatter_add_rows", SCATTER, 'n', 4,
     {R2('x', 'a', -1, 1, 5, 13), R2('x', 'r', -1, 1, 9, 13), R1('i', 'r', -1, 4, 9),
      R1('x', 'r', -1, 1, 9)}},
    /* out, x, s */
    {"row_scale_fwd", RS_FWD, 'n', 3,
     {R2('x', 'w', 0, 0, 6, 13), R2('x', 'r', -1, 1, 6, 13), R1('x', 'r', -3, 3, 6)}},
    /* dx, ds, dout, x, s */
    {"row_scale_bwd", RS_BWD, 'n', 5,
     {R2('x', 'a', -1, 1, 6, 13), R1('x', 'a', -1, 1, 6), R2('x', 'r', -1, 1, 6, 13),
      R2('x', 'r', -1, 1, 6, 13), R1('x', 'r', -3, 3, 6)}},
    /* losses, dlogits, logits, targets */
    {"cross_entropy", CE, 'n', 4,
     {R1('f', 'w', 0, 0, 5), R2('x', 'w', 0, 0, 5, 37), R2('x', 'r', -3, 3, 5, 37),
      R1('i', 'r', -1, 36, 5)}},
    {"cross_entropy, dlogits == logits", CE_INPLACE, 'n', 3,
     {R1('f', 'w', 0, 0, 5), R2('x', 'a', -3, 3, 5, 37), R1('i', 'r', -1, 36, 5)}},
};

/* q, out, dout, dq [B,T,H,D]; k, v, dk, dv [B,T,Hk,D]; lse [B,H,T] (f32). */
#define ATT_Q(k, u, lo, hi) R4(k, u, lo, hi, 2, 7, 4, 13)
#define ATT_K(k, u, lo, hi) R4(k, u, lo, hi, 2, 7, 2, 13)
#define ATT_LSE(u, lo, hi) R3('f', u, lo, hi, 2, 4, 7)
/* More than one tile of keys and queries (BC <= 32), one kv head for three q heads. */
#define ATT_QL(k, u, lo, hi) R4(k, u, lo, hi, 1, 37, 3, 6)
#define ATT_KL(k, u, lo, hi) R4(k, u, lo, hi, 1, 37, 1, 6)
#define ATT_LSEL(u, lo, hi) R3('f', u, lo, hi, 1, 3, 37)

static const nv_case ATTENTION[] = {
    /* out, lse, q, k, v */
    {"attention_fwd", ATT_FWD, 'n', 5,
     {ATT_Q('x', 'w', 0, 0), ATT_LSE('w', 0, 0), ATT_Q('x', 'r', -2, 2), ATT_K('x', 'r', -2, 2),
      ATT_K('x', 'r', -1, 1)}},
    {"attention_fwd, several tiles", ATT_FWD, 'n', 5,
     {ATT_QL('x', 'w', 0, 0), ATT_LSEL('w', 0, 0), ATT_QL('x', 'r', -2, 2),
      ATT_KL('x', 'r', -2, 2), ATT_KL('x', 'r', -1, 1)}},
    /* dq, dk, dv, dout, q, k, v, out, lse */
    {"attention_bwd", ATT_BWD, 'n', 9,
     {ATT_Q('x', 'a', -1, 1), ATT_K('x', 'a', -1, 1), ATT_K('x', 'a', -1, 1),
      ATT_Q('x', 'r', -1, 1), ATT_Q('x', 'r', -2, 2), ATT_K('x', 'r', -2, 2),
      ATT_K('x', 'r', -1, 1), ATT_Q('x', 'r', -1, 1), ATT_LSE('r', 1, 3)}},
    {"attention_bwd, several tiles", ATT_BWD, 'n', 9,
     {ATT_QL('x', 'a', -1, 1), ATT_KL('x', 'a', -1, 1), ATT_KL('x', 'a', -1, 1),
      ATT_QL('x', 'r', -1, 1), ATT_QL('x', 'r', -2, 2), ATT_KL('x', 'r', -2, 2),
      ATT_KL('x', 'r', -1, 1), ATT_QL('x', 'r', -1, 1), ATT_LSEL('r', 1, 3)}},
    /* out, q [2,3,4,13], k, v [2,11,2,13] */
    {"attention_decode", ATT_DECODE, 'n', 4,
     {R4('x', 'w', 0, 0, 2, 3, 4, 13), R4('x', 'r', -2, 2, 2, 3, 4, 13),
      R4('x', 'r', -2, 2, 2, 11, 2, 13), R4('x', 'r', -1, 1, 2, 11, 2, 13)}},
};

/*
 * The scan's inputs at B=2, T=9 (three chunks of the backward), Di=5, N=3;
 * the large ones at B=1, T=4, Di=67 (two workgroups of channels), N=2.
 */
#define SCAN_IN                                                                         \
    R3('x', 'r', -1, 1, 2, 9, 5), R3('x', 'r', -1, 1, 2, 9, 5), R2('x', 'r', -1, -0.1, 5, 3), \
        R3('x', 'r', -1, 1, 2, 9, 3), R3('x', 'r', -1, 1, 2, 9, 3), R1('x', 'r', -1, 1, 5),   \
        R3('x', 'r', -2, 2, 2, 9, 5), R1('x', 'r', -0.5, 0.5, 5)
#define SCAN_IN_WIDE                                                                       \
    R3('x', 'r', -1, 1, 1, 4, 67), R3('x', 'r', -1, 1, 1, 4, 67),                          \
        R2('x', 'r', -1, -0.1, 67, 2), R3('x', 'r', -1, 1, 1, 4, 2), R3('x', 'r', -1, 1, 1, 4, 2), \
        R1('x', 'r', -1, 1, 67), R3('x', 'r', -2, 2, 1, 4, 67), R1('x', 'r', -0.5, 0.5, 67)

static const nv_case SCAN[] = {
    /* y, u, delta, A, Bm, Cm, D, z, delta_bias */
    {"selective_scan_fwd", SCAN_FWD, 'n', 9, {R3('x', 'w', 0, 0, 2, 9, 5), SCAN_IN}},
    {"selective_scan_fwd, no D, z, delta_bias", SCAN_FWD_BARE, 'n', 6,
     {R3('x', 'w', 0, 0, 2, 9, 5), R3('x', 'r', -1, 1, 2, 9, 5), R3('x', 'r', 0.1, 1, 2, 9, 5),
      R2('x', 'r', -1, -0.1, 5, 3), R3('x', 'r', -1, 1, 2, 9, 3), R3('x', 'r', -1, 1, 2, 9, 3)}},
    {"selective_scan_fwd, wide", SCAN_FWD, 'n', 9, {R3('x', 'w', 0, 0, 1, 4, 67), SCAN_IN_WIDE}},
    /* y, h [B,Di,N], then the inputs */
    {"selective_scan_step", SCAN_STEP, 'n', 10,
     {R3('x', 'w', 0, 0, 2, 9, 5), R3('x', 'a', -1, 1, 2, 5, 3), SCAN_IN}},
    /* du, ddelta, dA, dBm, dCm, dD, dz, ddelta_bias, dy, then the inputs */
    {"selective_scan_bwd", SCAN_BWD, 'n', 17,
     {R3('x', 'a', -1, 1, 2, 9, 5), R3('x', 'a', -1, 1, 2, 9, 5), R2('x', 'a', -1, 1, 5, 3),
      R3('x', 'a', -1, 1, 2, 9, 3), R3('x', 'a', -1, 1, 2, 9, 3), R1('x', 'a', -1, 1, 5),
      R3('x', 'a', -1, 1, 2, 9, 5), R1('x', 'a', -1, 1, 5), R3('x', 'r', -1, 1, 2, 9, 5),
      SCAN_IN}},
    {"selective_scan_bwd, wide", SCAN_BWD, 'n', 17,
     {R3('x', 'a', -1, 1, 1, 4, 67), R3('x', 'a', -1, 1, 1, 4, 67), R2('x', 'a', -1, 1, 67, 2),
      R3('x', 'a', -1, 1, 1, 4, 2), R3('x', 'a', -1, 1, 1, 4, 2), R1('x', 'a', -1, 1, 67),
      R3('x', 'a', -1, 1, 1, 4, 67), R1('x', 'a', -1, 1, 67), R3('x', 'r', -1, 1, 1, 4, 67),
      SCAN_IN_WIDE}},
};

/* x [B,T,C], w [C,4]: short rows, and 67 rows of 3 channels (dw summed in chunks). */
#define CONV_X(k, u, lo, hi) R3(k, u, lo, hi, 2, 7, 3)
#define CONV_XL(k, u, lo, hi) R3(k, u, lo, hi, 1, 67, 3)

static const nv_case CONV[] = {
    /* out, x, w, bias (SiLU) */
    {"causal_conv1d_fwd", CONV_FWD, 'n', 4,
     {CONV_X('x', 'w', 0, 0), CONV_X('x', 'r', -2, 2), R2('x', 'r', -1, 1, 3, 4),
      R1('x', 'r', -1, 1, 3)}},
    /* out, x, w (no bias, no SiLU) */
    {"causal_conv1d_fwd, linear", CONV_FWD_LIN, 'n', 3,
     {CONV_X('x', 'w', 0, 0), CONV_X('x', 'r', -2, 2), R2('x', 'r', -1, 1, 3, 4)}},
    /* dx, dw, dbias, dout, x, w, bias (SiLU: g in f32 scratch) */
    {"causal_conv1d_bwd", CONV_BWD, 'n', 7,
     {CONV_X('x', 'a', -1, 1), R2('x', 'a', -1, 1, 3, 4), R1('x', 'a', -1, 1, 3),
      CONV_X('x', 'r', -1, 1), CONV_X('x', 'r', -2, 2), R2('x', 'r', -1, 1, 3, 4),
      R1('x', 'r', -1, 1, 3)}},
    {"causal_conv1d_bwd, chunked", CONV_BWD, 'n', 7,
     {CONV_XL('x', 'a', -1, 1), R2('x', 'a', -1, 1, 3, 4), R1('x', 'a', -1, 1, 3),
      CONV_XL('x', 'r', -1, 1), CONV_XL('x', 'r', -2, 2), R2('x', 'r', -1, 1, 3, 4),
      R1('x', 'r', -1, 1, 3)}},
    /* dx, dw, dout, x, w (g is dout itself) */
    {"causal_conv1d_bwd, linear", CONV_BWD_LIN, 'n', 5,
     {CONV_X('x', 'a', -1, 1), R2('x', 'a', -1, 1, 3, 4), CONV_X('x', 'r', -1, 1),
      CONV_X('x', 'r', -2, 2), R2('x', 'r', -1, 1, 3, 4)}},
    {"causal_conv1d_bwd, linear, chunked", CONV_BWD_LIN, 'n', 5,
     {CONV_XL('x', 'a', -1, 1), R2('x', 'a', -1, 1, 3, 4), CONV_XL('x', 'r', -1, 1),
      CONV_XL('x', 'r', -2, 2), R2('x', 'r', -1, 1, 3, 4)}},
};

/* Router: logits [7,5], K = 2, capacity 3. */
#define ROUTER_OUT                                                                           \
    R2('x', 'w', 0, 0, 7, 2), R2('i', 'w', 0, 0, 7, 2), R2('x', 'w', 0, 0, 7, 5),           \
        R2('i', 'w', 0, 0, 5, 3), R2('i', 'w', 0, 0, 5, 3), R1('i', 'w', 0, 0, 5)

static const nv_case ROUTING[] = {
    /* gates, idx, probs, slot_token, slot_ref, counts, logits */
    {"router_topk, softmax, renormalized", ROUTER_SOFTMAX, 'n', 7,
     {ROUTER_OUT, R2('x', 'r', -2, 2, 7, 5)}},
    {"router_topk, sigmoid", ROUTER_SIGMOID, 'n', 7, {ROUTER_OUT, R2('x', 'r', -2, 2, 7, 5)}},
    /* dlogits, dgates, probs, idx */
    {"router_topk_bwd, softmax, renormalized", ROUTER_BWD, 'n', 4,
     {R2('x', 'a', -1, 1, 7, 5), R2('x', 'r', -1, 1, 7, 2), R2('x', 'r', 0.05, 1, 7, 5),
      R2('i', 'r', 0, 4, 7, 2)}},
    {"router_topk_bwd, sigmoid", ROUTER_BWD_SIGMOID, 'n', 4,
     {R2('x', 'a', -1, 1, 7, 5), R2('x', 'r', -1, 1, 7, 2), R2('x', 'r', 0.05, 1, 7, 5),
      R2('i', 'r', 0, 4, 7, 2)}},
    /* idx, scores */
    {"select_topk", SELECT, 'n', 2, {R2('i', 'w', 0, 0, 3, 5), R2('x', 'r', -1, 1, 3, 37)}},
    /* losses, dlogits, logits, targets */
    {"bce_logits", BCE, 'n', 4,
     {R1('f', 'w', 0, 0, 9), R1('x', 'w', 0, 0, 9), R1('x', 'r', -3, 3, 9),
      R1('x', 'r', 0, 1, 9)}},
    {"bce_logits, dlogits == logits", BCE_INPLACE, 'n', 3,
     {R1('f', 'w', 0, 0, 9), R1('x', 'a', -3, 3, 9), R1('x', 'r', 0, 1, 9)}},
    {"bce_logits, no dlogits", BCE_NOGRAD, 'n', 3,
     {R1('f', 'w', 0, 0, 9), R1('x', 'r', -3, 3, 9), R1('x', 'r', 0, 1, 9)}},
    /* losses, dlogits, logits, idx */
    {"moe_aux", MOE_AUX, 'n', 4,
     {R1('f', 'w', 0, 0, 2), R2('x', 'a', -1, 1, 9, 5), R2('x', 'r', -2, 2, 9, 5),
      R2('i', 'r', 0, 4, 9, 2)}},
    {"moe_aux, no dlogits", MOE_AUX_NOGRAD, 'n', 3,
     {R1('f', 'w', 0, 0, 2), R2('x', 'r', -2, 2, 9, 5), R2('i', 'r', 0, 4, 9, 2)}},
};

/* ---- one case on the three backends ---- */

/* The three backends of a Test. */
typedef struct trio {
    chm_backend *cpu, *one, *split;
} trio;

/* Vulkan with bindings limited to `range` bytes (NULL: the device's own), env restored. */
static chm_backend *open_range(const char *range) {
    const char *old = getenv("CHIMERA_VULKAN_MAX_RANGE");
    char *saved = old ? strdup(old) : NULL;
    if (range) setenv("CHIMERA_VULKAN_MAX_RANGE", range, 1);
    chm_backend *be = vk_open();
    if (saved) setenv("CHIMERA_VULKAN_MAX_RANGE", saved, 1);
    else unsetenv("CHIMERA_VULKAN_MAX_RANGE");
    free(saved);
    return be;
}

static trio trio_open(void) {
    trio b = {NULL, open_range(NULL), NULL};
    if (!(b.one->caps & CHM_CAP_BF16)) {
        vk_close(b.one);
        cr_skip_test("this Vulkan device has no 16-bit storage");
    }
    b.cpu = tt_open_cpu();
    b.split = open_range(SPLIT);
    chm_vulkan_set_profile(b.one, true);
    return b;
}

/* No cast ran on "one" (see the file comment), then close all three. */
static void trio_close(trio *b) {
    static char report[16384];
    cr_assert_eq(chm_vulkan_profile_report(b->one, report, sizeof report), CHM_OK, "%s",
                 b->one->err.msg);
    cr_assert(strstr(report, "cast_") == NULL, "a cast ran:\n%s", report);
    chm_backend_close(b->cpu);
    vk_close(b->one);
    vk_close(b->split);
}

static chm_dtype kind_dtype(char kind, chm_dtype run) {
    switch (kind) {
    case 'x': return run;
    case 'h': return run == CHM_F32 ? CHM_BF16 : run;
    case 'y': return run == CHM_BF16 ? CHM_F16 : CHM_BF16;
    case 'f': return CHM_F32;
    default: return CHM_I32;
    }
}

/* A case's tensors on one backend: each a view `lead` elements into its own buffer. */
typedef struct nv_side {
    tt_tensor buf[NARG];
    chm_tensor t[NARG];
    const chm_tensor *p[NARG];
} nv_side;

/* Bytes of v[0..n) in dt (16-bit: rounded to nearest even through f32). */
static void *to_bytes(chm_dtype dt, const double *v, int64_t n) {
    void *raw = malloc((size_t)n * chm_dtype_size(dt) + 1);
    uint16_t *w = raw;
    float *f = raw;
    int32_t *k = raw;
    for (int64_t i = 0; i < n; i++) {
        if (dt == CHM_I32) k[i] = (int32_t)v[i];
        else if (dt == CHM_F32) f[i] = (float)v[i];
        else w[i] = dt == CHM_BF16 ? chm_f32_to_bf16((float)v[i]) : chm_f32_to_f16((float)v[i]);
    }
    return raw;
}

/* Allocate and fill the tensors of c in dtype run: start values v[i], or NaN for outputs. */
static void side_make(chm_backend *be, nv_side *s, const nv_case *c, chm_dtype run,
                      double *const *v) {
    for (int i = 0; i < c->nargs; i++) {
        const nv_arg *a = &c->a[i];
        chm_dtype dt = kind_dtype(a->kind, run);
        int64_t lead = 1 + i; /* odd and different starts: unaligned windows */
        chm_tensor want = chm_tensor_make(NULL, 0, dt, a->ndim, a->shape);
        int64_t whole = chm_tensor_numel(&want) + lead;
        s->buf[i] = tt_alloc(be, dt, 1, &whole);
        s->t[i] = chm_tensor_make(s->buf[i].buf, (size_t)lead * chm_dtype_size(dt), dt, a->ndim,
                                  a->shape);
        s->p[i] = &s->t[i];
        if (a->use == 'w') { /* poisoned: NaN, or -7 for int outputs */
            double poison = dt == CHM_I32 ? -7 : NAN;
            cr_assert_eq(chm_fill(be, &s->t[i], poison), CHM_OK, "%s", be->err.msg);
            continue;
        }
        void *b = to_bytes(dt, v[i], chm_tensor_numel(&s->t[i]));
        cr_assert_eq(chm_upload(be, &s->t[i], b), CHM_OK, "%s: %s", be->name, be->err.msg);
        free(b);
    }
}

static void side_drop(nv_side *s, int n) {
    for (int i = 0; i < n; i++) tt_free(&s->buf[i]);
}

/* A tensor's raw bytes (malloc'ed). */
static unsigned char *bytes_of(chm_backend *be, const chm_tensor *t) {
    unsigned char *b = malloc(chm_tensor_nbytes(t) + 1);
    cr_assert_eq(chm_download(be, t, b), CHM_OK, "%s: %s", be->name, be->err.msg);
    return b;
}

/* Element i of raw bytes of dt as a double. */
static double value_at(chm_dtype dt, const unsigned char *b, int64_t i) {
    if (dt == CHM_BF16 || dt == CHM_F16) {
        uint16_t h;
        memcpy(&h, b + 2 * i, 2);
        return dt == CHM_BF16 ? chm_bf16_to_f32(h) : chm_f16_to_f32(h);
    }
    if (dt == CHM_I32) {
        int32_t k;
        memcpy(&k, b + 4 * i, 4);
        return k;
    }
    float f;
    memcpy(&f, b + 4 * i, 4);
    return f;
}

/* The gap between neighbours of dt at magnitude m (f16: subnormal steps of 2^-24 at least). */
static double gap16(chm_dtype dt, double m) {
    if (m == 0) return dt == CHM_F16 ? 0x1p-24 : 0;
    double g = ldexp(1.0, ilogb(m) - (dt == CHM_BF16 ? 7 : 10));
    return dt == CHM_F16 && g < 0x1p-24 ? 0x1p-24 : g;
}

/* Argument i of the cpu (want) and vulkan (got) against the file comment's tolerances. */
static void agree(const char *what, int i, const nv_arg *a, chm_dtype dt,
                  const unsigned char *got, const unsigned char *want, int64_t n) {
    if (a->use == 'r' || dt == CHM_I32) {
        cr_assert(memcmp(got, want, (size_t)n * chm_dtype_size(dt)) == 0,
                  "%s: argument %d changed", what, i);
        return;
    }
    double big = 0;
    for (int64_t e = 0; e < n; e++) big = fmax(big, fabs(value_at(dt, want, e)));
    for (int64_t e = 0; e < n; e++) {
        double g = value_at(dt, got, e), w = value_at(dt, want, e);
        double tol = dt == CHM_F32 ? 1e-5 * (big + fabs(w))
                                   : 2 * gap16(dt, fmax(fabs(g), fabs(w))) + 1e-5 * big;
        cr_assert(isfinite(w), "%s: argument %d [%lld] is %g on the cpu", what, i, (long long)e,
                  w);
        cr_assert(fabs(g - w) <= tol, "%s: argument %d [%lld]: vulkan %.9g, cpu %.9g (tol %.3g)",
                  what, i, (long long)e, g, w, tol);
    }
}

/* Run c on be: recorded only, scratch given back; returns the dispatches it recorded. */
static uint64_t run_counted(chm_backend *be, const char *what, const nv_case *c,
                            const nv_side *s) {
    cr_assert_eq(chm_sync(be), CHM_OK, "%s", be->err.msg);
    chm_vulkan_stats s0, s1;
    chm_vulkan_get_stats(be, &s0);
    cr_assert_eq(call(be, c->op, s->p), CHM_OK, "%s on vulkan: %s", what, be->err.msg);
    chm_vulkan_get_stats(be, &s1);
    cr_assert_eq(s1.submits, s0.submits, "%s: the op submitted work", what);
    cr_assert_eq(s1.bytes_in_use, s0.bytes_in_use, "%s: %lld bytes of scratch kept", what,
                 (long long)(s1.bytes_in_use - s0.bytes_in_use));
    cr_assert_eq(chm_sync(be), CHM_OK, "%s: %s", what, be->err.msg);
    return s1.dispatches - s0.dispatches;
}

/* Dispatches of c on f32 tensors (16-bit where the op insists) of the same shapes. */
static uint64_t f32_dispatches(chm_backend *be, const nv_case *c, double *const *v) {
    nv_side s;
    side_make(be, &s, c, CHM_F32, v);
    uint64_t n = run_counted(be, c->name, c, &s);
    side_drop(&s, c->nargs);
    return n;
}

/* The outputs of "split" against "one" (bit for bit) or, for split blocks, the cpu. */
static void check_split(const char *what, const trio *b, const nv_case *c, const nv_side *one,
                        const nv_side *split, const nv_side *cpu) {
    bool loose = c->split == 's';
    for (int i = 0; i < c->nargs; i++) {
        const chm_tensor *t = &one->t[i];
        size_t nb = chm_tensor_nbytes(t);
        unsigned char *x = bytes_of(b->split, &split->t[i]);
        unsigned char *y = bytes_of(loose ? b->cpu : b->one, loose ? &cpu->t[i] : t);
        if (loose)
            agree(what, i, &c->a[i], t->dtype, x, y, chm_tensor_numel(t));
        else
            cr_assert(memcmp(x, y, nb) == 0, "%s: argument %d differs split and whole", what, i);
        free(x), free(y);
    }
}

/* Start values of c's read and accumulated arguments (NULL for outputs). */
static void start_values(const nv_case *c, tt_rng *rng, double **v) {
    for (int i = 0; i < c->nargs; i++) {
        const nv_arg *a = &c->a[i];
        chm_tensor shape = chm_tensor_make(NULL, 0, CHM_F32, a->ndim, a->shape);
        int64_t n = chm_tensor_numel(&shape);
        v[i] = NULL;
        if (a->use == 'w') continue;
        v[i] = tt_dalloc(n);
        for (int64_t e = 0; e < n; e++)
            v[i][e] = a->kind == 'i' ? floor(tt_uniform(rng, a->lo, a->hi + 1))
                                     : tt_uniform(rng, a->lo, a->hi);
    }
}

/* Case c in dtype dt on the three backends (see the file comment). */
static void run_case(const trio *b, const nv_case *c, chm_dtype dt, tt_rng *rng) {
    char what[128];
    snprintf(what, sizeof what, "%s in %s", c->name, chm_dtype_name(dt));
    double *v[NARG];
    start_values(c, rng, v);
    nv_side sc, so, ss;
    side_make(b->cpu, &sc, c, dt, v);
    side_make(b->one, &so, c, dt, v);
    side_make(b->split, &ss, c, dt, v);
    cr_assert_eq(call(b->cpu, c->op, sc.p), CHM_OK, "%s on cpu: %s", what, b->cpu->err.msg);
    uint64_t n16 = run_counted(b->one, what, c, &so), nsplit = run_counted(b->split, what, c, &ss);
    uint64_t n32 = f32_dispatches(b->one, c, v);
    cr_assert_eq(n16, n32, "%s: %llu dispatches, %llu in f32: a cast ran", what,
                 (unsigned long long)n16, (unsigned long long)n32);
    cr_assert(c->split == 'n' ? nsplit == n16 : nsplit > n16,
              "%s: %llu dispatches split, %llu whole", what, (unsigned long long)nsplit,
              (unsigned long long)n16);
    for (int i = 0; i < c->nargs; i++) {
        unsigned char *got = bytes_of(b->one, &so.t[i]), *want = bytes_of(b->cpu, &sc.t[i]);
        agree(what, i, &c->a[i], so.t[i].dtype, got, want, chm_tensor_numel(&so.t[i]));
        free(got), free(want), free(v[i]);
    }
    check_split(what, b, c, &so, &ss, &sc);
    side_drop(&sc, c->nargs), side_drop(&so, c->nargs), side_drop(&ss, c->nargs);
}

/* Every case of a family in bf16 and in f16. */
static void run_family(const nv_case *cases, int n, uint64_t seed) {
    trio b = trio_open();
    tt_rng rng = tt_rng_make(seed);
    const chm_dtype dts[] = {CHM_BF16, CHM_F16};
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < n; k++) run_case(&b, &cases[k], dts[d], &rng);
    trio_close(&b);
}

#define FAMILY(cases, seed) run_family(cases, (int)(sizeof cases / sizeof cases[0]), seed)

Test(vk_native16, optimizer_and_gradient_norm) { FAMILY(OPTIMIZER, 1); }
Test(vk_native16, elementwise) { FAMILY(ELEMENTWISE, 2); }
Test(vk_native16, layers) { FAMILY(LAYERS, 3); }
Test(vk_native16, rows_and_losses) { FAMILY(ROWS_AND_LOSSES, 4); }
Test(vk_native16, attention) { FAMILY(ATTENTION, 5); }
Test(vk_native16, selective_scan) { FAMILY(SCAN, 6); }
Test(vk_native16, causal_conv1d) { FAMILY(CONV, 7); }
Test(vk_native16, routing_and_router_losses) { FAMILY(ROUTING, 8); }

/* ---- refusals ---- */

/* Without 16-bit storage the native ops refuse 16-bit tensors, naming the op and why. */
Test(vk_native16, no_16bit_storage_refuses) {
    setenv("CHIMERA_VULKAN_DISABLE", "16bit", 1);
    chm_backend *vk = vk_open();
    unsetenv("CHIMERA_VULKAN_DISABLE");
    int64_t n = 7;
    tt_tensor h = tt_alloc(vk, CHM_BF16, 1, &n), g = tt_alloc(vk, CHM_F16, 1, &n);
    tt_tensor f[3], one = tt_alloc(vk, CHM_F32, 1, (int64_t[]){1});
    for (int i = 0; i < 3; i++) f[i] = tt_alloc(vk, CHM_F32, 1, &n);
    chm_adamw_args aw = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .step = 1,
                         .grad_scale = 1};
    tt_expect_fail(vk, chm_add(vk, &h.t, &h.t, &h.t), CHM_ERR_UNSUPPORTED, "add",
                   "16-bit storage");
    tt_expect_fail(vk, chm_exp_fwd(vk, &g.t, &g.t, 1.0), CHM_ERR_UNSUPPORTED, "exp_fwd", "f16");
    tt_expect_fail(vk, chm_sum_squares(vk, &one.t, &h.t), CHM_ERR_UNSUPPORTED, "sum_squares",
                   "16-bit storage");
    tt_expect_fail(vk, chm_adamw_step(vk, &f[0].t, &g.t, &f[1].t, &f[2].t, NULL, &aw),
                   CHM_ERR_UNSUPPORTED, "adamw_step", "16-bit storage");
    tt_expect_fail(vk, chm_bce_logits(vk, &f[0].t, NULL, &h.t, &h.t, 1.0), CHM_ERR_UNSUPPORTED,
                   "bce_logits", "16-bit storage");
    for (int i = 0; i < 3; i++) tt_free(&f[i]);
    tt_free(&h), tt_free(&g), tt_free(&one);
    vk_close(vk);
}

/* f64 stays an f32-only backend's refusal (CHM_ERR_DTYPE), whatever the op's 16-bit support. */
Test(vk_native16, f64_still_refused) {
    chm_backend *vk = vk_open();
    int64_t n = 5;
    tt_tensor d = tt_alloc(vk, CHM_F64, 1, &n), one = tt_alloc(vk, CHM_F32, 1, (int64_t[]){1});
    tt_expect_fail(vk, chm_scale(vk, &d.t, &d.t, 2.0), CHM_ERR_DTYPE, "scale", "f64");
    tt_expect_fail(vk, chm_sum_squares(vk, &one.t, &d.t), CHM_ERR_DTYPE, "sum_squares", "f64");
    tt_free(&d), tt_free(&one);
    vk_close(vk);
}
