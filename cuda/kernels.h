/*
 * kernels.h: the extern "C" launchers of the CUDA kernels (the .cu files of cuda/).
 *
 * The C glue of the cuda backend (src/backend/cuda/) owns tensors, dtypes
 * and error messages; the launchers here see raw device pointers, sizes and a
 * stream, enqueue their kernels and return the launch status (cudaSuccess or
 * the error of the launch). They never synchronise and never allocate: any
 * scratch they need is passed in, sized by the matching *_scratch function.
 *
 * Dtypes are chm_dtype values. Float kernels take f32, bf16 or f16 storage
 * (some only f32 and bf16, as noted) and compute in f32; the glue rejects
 * other dtypes before calling. Shapes use tensor.h's letters.
 *
 * Data errors (an id outside the table, a count above the capacity) cannot be
 * returned by an asynchronous kernel: the kernel records the first one in
 * `flag` (device int[4] = {op, index, value, limit}, see chm_cu_flag_op) and
 * goes on without touching memory out of range; the glue reports it at the
 * next sync or download.
 */
#ifndef CHIMERA_CUDA_KERNELS_H
#define CHIMERA_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chimera/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Which op raised a device-side data error (flag[0]); 0 is "none". */
typedef enum chm_cu_flag_op {
    CHM_CU_FLAG_NONE = 0,
    CHM_CU_FLAG_EMBEDDING_FWD,   /* ids[index] = value outside [0, limit) */
    CHM_CU_FLAG_EMBEDDING_BWD,   /* same */
    CHM_CU_FLAG_GATHER_ROWS,     /* idx[index] = value >= limit rows */
    CHM_CU_FLAG_SCATTER_ADD_ROWS,/* same */
    CHM_CU_FLAG_CROSS_ENTROPY,   /* targets[index] = value >= limit (V) */
    CHM_CU_FLAG_ROUTER_BWD,      /* idx element index = value outside [0, limit) (E) */
    CHM_CU_FLAG_GROUPED_COUNTS,  /* counts[index] = value outside [0, limit] (capacity) */
    CHM_CU_FLAG_MOE_AUX,         /* idx element index = value outside [0, limit) (E) */
    CHM_CU_FLAG_SCATTER_REPEAT,  /* row index is the target of value > limit (max_repeat) rows */
    CHM_CU_FLAG_COUNT
} chm_cu_flag_op;

/* ---- memory (convert.cu) ---- */

/* Write the `esize`-byte pattern (2, 4 or 8 bytes, low bytes of `pattern`) n times at p. */
cudaError_t chm_cu_fill(void *p, int64_t n, int esize, uint64_t pattern, cudaStream_t s);
/* n bytes of device memory src into pinned host memory dst mapped for the device (one block;
 * visible to the host once an event recorded after it has completed). */
cudaError_t chm_cu_copy_to_host(void *dst, const void *src, int n, cudaStream_t s);
/* dst[n] (dtype ddt) = src[n] (dtype sdt), any of f32/f64/bf16/f16, rounded once (nearest even). */
cudaError_t chm_cu_cast(void *dst, chm_dtype ddt, const void *src, chm_dtype sdt, int64_t n,
                        cudaStream_t s);

/* ---- elementwise (elementwise.cu) ---- */

/* out[n] = a[n] + b[n]; out may alias a or b exactly. */
cudaError_t chm_cu_add(void *out, const void *a, const void *b, int64_t n, chm_dtype dt,
                       cudaStream_t s);
/* out[n] = alpha * x[n]; out may alias x exactly. */
cudaError_t chm_cu_scale(void *out, const void *x, double alpha, int64_t n, chm_dtype dt,
                         cudaStream_t s);
/* y[n] += alpha * x[n]. */
cudaError_t chm_cu_axpy(void *y, const void *x, double alpha, int64_t n, chm_dtype dt,
                        cudaStream_t s);

/*
 * Deterministic column sums in two launches. Rows are cut into a number of
 * slabs that depends only on R (chm_cu_colsum_slabs); stage one writes one f32
 * partial per (slab, column), stage two adds the slabs in order into out.
 */
int chm_cu_colsum_slabs(int64_t R);
/* part [S,C] = per-slab sums of x [R,C]. */
cudaError_t chm_cu_colsum_partial(float *part, const void *x, int64_t R, int64_t C, chm_dtype dt,
                                  cudaStream_t s);
/* out [C] (dtype dt) += sum over s of part [S,C], in slab order. */
cudaError_t chm_cu_colsum_finish(void *out, chm_dtype dt, const float *part, int S, int64_t C,
                                 cudaStream_t s);

/* ---- matmul helpers (matmul.cu); the products themselves are cuBLASLt calls ---- */

/* C [rows,N] += bias [N] on every row (rows = batch * M). */
cudaError_t chm_cu_bias_add(void *C, const void *bias, int64_t rows, int64_t N, chm_dtype dt,
                            cudaStream_t s);
/*
 * Grouped matmul fix-ups; counts [E] live on the device. x is [E,R,Cc]:
 *  save:    keep [E,R,Cc] = x where row r >= counts[e] (rows below are not touched);
 *  restore: x = beta * keep where r >= counts[e] (beta 0 writes zeros, whatever keep holds);
 *  mask:    dst = src where (rows ? r : c) < counts[e], else 0.
 * Each checks every count against [0, cap] and flags CHM_CU_FLAG_GROUPED_COUNTS.
 */
cudaError_t chm_cu_grouped_save(void *keep, const void *x, const int32_t *counts, int64_t E,
                                int64_t R, int64_t Cc, chm_dtype dt, int *flag, cudaStream_t s);
cudaError_t chm_cu_grouped_restore(void *x, const void *keep, const int32_t *counts, int64_t E,
                                   int64_t R, int64_t Cc, double beta, chm_dtype dt, int *flag,
                                   cudaStream_t s);
cudaError_t chm_cu_grouped_mask(void *dst, const void *src, const int32_t *counts, int64_t E,
                                int64_t R, int64_t Cc, bool rows, int64_t cap, chm_dtype dt,
                                int *flag, cudaStream_t s);

/* ---- normalisation, position, activation (rmsnorm.cu, rope.cu, swiglu.cu) ---- */

/* x, out [R,C]; w [C]; rstd [R] f32. */
cudaError_t chm_cu_rmsnorm_fwd(void *out, float *rstd, const void *x, const void *w, int64_t R,
                               int64_t C, double eps, chm_dtype dt, cudaStream_t s);
/* Slabs of rows the RMSNorm backward cuts R rows into for its dw partials. */
int chm_cu_rmsnorm_slabs(int64_t R);
/*
 * dx [R,C] += ..., dw [C] += ...; part [S,C] f32 scratch (S = chm_cu_rmsnorm_slabs(R))
 * holds dw's slab partials, which a second launch adds in slab order.
 */
cudaError_t chm_cu_rmsnorm_bwd(void *dx, void *dw, float *part, const void *dout, const void *x,
                               const void *w, const float *rstd, int64_t R, int64_t C,
                               chm_dtype dt, cudaStream_t s);
/* x, out [B,T,H,D]; sign +1 (forward, written) or -1 (backward, accumulated into out). */
cudaError_t chm_cu_rope(void *out, const void *x, int64_t B, int64_t T, int64_t H, int64_t D,
                        double theta, int64_t pos_offset, int sign, bool accumulate,
                        chm_dtype dt, cudaStream_t s);
/* The rows of a tail-zero SwiGLU: counts (device I32 [E]) of E groups of cap rows of F
   elements; rows >= counts[e] are written as zeros (left alone when accumulating), their
   inputs unread. counts NULL: every element is live. */
typedef struct chm_cu_swiglu_rows {
    const int32_t *counts;
    int64_t cap, F;
} chm_cu_swiglu_rows;
/* out = silu(gate) * up over n elements (rows: NULL or the tail-zero rows). */
cudaError_t chm_cu_swiglu_fwd(void *out, const void *gate, const void *up, int64_t n,
                              const chm_cu_swiglu_rows *rows, chm_dtype dt, cudaStream_t s);
/* dgate, dup += gradients of swiglu over n elements (= when !accumulate: old contents unread). */
cudaError_t chm_cu_swiglu_bwd(void *dgate, void *dup, const void *dout, const void *gate,
                              const void *up, int64_t n, bool accumulate,
                              const chm_cu_swiglu_rows *rows, chm_dtype dt, cudaStream_t s);

/* ---- rows: embedding, gather, deterministic scatter-add (rows.cu) ---- */

/* out [R,C] = table [V,C] rows ids [R]; a bad id gives a zero row and a flag. */
cudaError_t chm_cu_embedding_fwd(void *out, const int32_t *ids, const void *table, int64_t R,
                                 int64_t V, int64_t C, chm_dtype dt, int *flag, cudaStream_t s);
/* out [M,C] = x [R,C] rows idx [M] (zeros where idx < 0). */
cudaError_t chm_cu_gather_rows(void *out, const void *x, const int32_t *idx, int64_t M,
                               int64_t R, int64_t C, chm_dtype dt, int *flag, cudaStream_t s);
/* Bytes of scratch chm_cu_scatter_add needs for M indices into `rows` rows. */
size_t chm_cu_scatter_scratch(int64_t M, int64_t rows);
/*
 * out [rows,C] += w[m] * x [M,C] into row idx[m] (w NULL: 1), in increasing m
 * for every target row (a stable sort of the indices, then one ordered sum
 * per run): deterministic, no float atomics. Negative idx: skipped, or
 * flagged as op `fop` when neg_is_error (embedding); idx >= rows: flagged.
 */
cudaError_t chm_cu_scatter_add(void *out, const void *x, const int32_t *idx, const void *w,
                               int64_t M, int64_t rows, int64_t C, chm_dtype dt, bool neg_is_error,
                               chm_cu_flag_op fop, void *scratch, size_t scratch_bytes, int *flag,
                               cudaStream_t s);
/* The largest max_repeat chm_cu_scatter_add_bounded takes. */
#define CHM_CU_SCATTER_MAX_REPEAT 8
/* Bytes of scratch chm_cu_scatter_add_bounded needs for `rows` rows and max_repeat r. */
size_t chm_cu_scatter_bounded_scratch(int64_t rows, int r);
/*
 * chm_cu_scatter_add (the same sums, bitwise, and the same flags for bad indices) for indices
 * of which none occurs more than r (1..CHM_CU_SCATTER_MAX_REPEAT) times, without a sort: each
 * target row's sources are listed (an int atomic picks the slot) and ordered by m in the row's
 * block. A row with more than r sources is flagged (CHM_CU_FLAG_SCATTER_REPEAT).
 */
cudaError_t chm_cu_scatter_add_bounded(void *out, const void *x, const int32_t *idx,
                                       const void *w, int64_t M, int64_t rows, int64_t C, int r,
                                       chm_dtype dt, chm_cu_flag_op fop, void *scratch, int *flag,
                                       cudaStream_t s);

/* ---- routing (router.cu) ---- */

/* gates [R,K], idx [R,K], probs [R,E], slot_token/slot_ref [E,cap], counts [E]; see backend.h. */
cudaError_t chm_cu_router_topk(void *gates, int32_t *idx, void *probs, int32_t *slot_token,
                               int32_t *slot_ref, int32_t *counts, const void *logits, int64_t R,
                               int64_t E, int64_t K, int64_t cap, int sigmoid, bool renormalize,
                               chm_dtype dt, cudaStream_t s);
/* dlogits [R,E] += gradient of the gates given dgates [R,K], probs [R,E], idx [R,K]. */
cudaError_t chm_cu_router_topk_bwd(void *dlogits, const void *dgates, const void *probs,
                                   const int32_t *idx, int64_t R, int64_t E, int64_t K,
                                   int sigmoid, bool renormalize, chm_dtype dt, int *flag,
                                   cudaStream_t s);
/* idx [R,K] = the K best columns of scores [R,C] in increasing column order (+ r*C when flat). */
cudaError_t chm_cu_select_topk(int32_t *idx, const void *scores, int64_t R, int64_t C, int64_t K,
                               bool flat, chm_dtype dt, cudaStream_t s);

/* ---- loss, optimizer, norm (cross_entropy.cu, adamw.cu, sum_squares.cu) ---- */

/* losses [R] f32, dlogits [R,V] or NULL (may be logits), logits [R,V], targets [R]. */
cudaError_t chm_cu_cross_entropy(float *losses, void *dlogits, const void *logits,
                                 const int32_t *targets, int64_t R, int64_t V, double grad_scale,
                                 chm_dtype dt, int *flag, cudaStream_t s);

/* The scalars of one AdamW step, bias corrections included (computed on the host in double). */
typedef struct chm_cu_adamw {
    float lr, beta1, beta2, eps, weight_decay, grad_scale;
    float c1, c2;  /* 1 - beta1^step, 1 - beta2^step */
} chm_cu_adamw;

/* param, m, v [n] f32; grad [n] of gdt; lowp [n] of ldt (bf16/f16) or NULL. */
cudaError_t chm_cu_adamw_step(float *param, const void *grad, chm_dtype gdt, float *m, float *v,
                              void *lowp, chm_dtype ldt, int64_t n, const chm_cu_adamw *a,
                              cudaStream_t s);
/* Bytes of scratch chm_cu_sum_squares needs for n elements. */
size_t chm_cu_sum_squares_scratch(int64_t n);
/* out (f32 or f64, dtype odt) = sum of x[n]^2, two fixed-order passes in double. */
cudaError_t chm_cu_sum_squares(void *out, chm_dtype odt, const void *x, int64_t n, chm_dtype dt,
                               void *scratch, cudaStream_t s);

/* ---- Mamba (causal_conv1d.cu; selective_scan_fwd/bwd.cu + selective_scan.cuh): f32 and
 * bf16 ---- */

/* out, x [B,T,C]; w [C,W]; bias [C] or NULL. */
cudaError_t chm_cu_conv1d_fwd(void *out, const void *x, const void *w, const void *bias,
                              int64_t B, int64_t T, int64_t C, int64_t W, bool silu, chm_dtype dt,
                              cudaStream_t s);
/* Slabs (row blocks of [B,T]) the conv backward uses for its dw/dbias partials. */
int chm_cu_conv1d_slabs(int64_t B, int64_t T, int64_t W);
/*
 * dx [B,T,C] += ... (= with dx_set: its old values are not read); part [S, C, W+1] f32
 * receives the slab partials of dw (taps 0..W-1) and dbias (entry W);
 * chm_cu_conv1d_bwd_finish adds them.
 */
cudaError_t chm_cu_conv1d_bwd(void *dx, float *part, const void *dout, const void *x,
                              const void *w, const void *bias, int64_t B, int64_t T, int64_t C,
                              int64_t W, bool silu, bool dx_set, chm_dtype dt, cudaStream_t s);
/* dw [C,W] += and dbias [C] (or NULL) += slab sums of part, in slab order. */
cudaError_t chm_cu_conv1d_bwd_finish(void *dw, void *dbias, const float *part, int S, int64_t C,
                                     int64_t W, chm_dtype dt, cudaStream_t s);

/* Largest d_state (N) the scan kernels hold in registers. */
#define CHM_CU_SCAN_MAX_N 16

/* The scan's device pointers (optional ones NULL) and sizes. */
typedef struct chm_cu_scan {
    const void *u, *delta, *A, *Bm, *Cm, *D, *z, *delta_bias;
    int64_t B, T, Di, N;
    bool softplus;
    chm_dtype dt;
} chm_cu_scan;

/* The scan's gradient pointers (each optional, accumulated into unless `set` has its bit:
 * bit i for pointer i, as CHM_SCAN_SET_*) and the forward's saved states, or NULL. */
typedef struct chm_cu_scan_grads {
    void *du, *ddelta, *dA, *dBm, *dCm, *dD, *dz, *ddelta_bias;
    unsigned set;
    const float *hsaved; /* [B, ceil(T/16), Di, N] f32 (chm_scan_args.h_saved) */
    const void *ysaved;  /* [B,T,Di] the forward's pre-gate output (chm_scan_args.y_saved) */
} chm_cu_scan_grads;

/* y [B,T,Di]; hsave [B, ceil(T/16), Di, N] f32 (the state after every 16 steps) or NULL;
   ysave [B,T,Di] (written with a gate z only: the output before it) or NULL. */
cudaError_t chm_cu_scan_fwd(void *y, float *hsave, void *ysave, const chm_cu_scan *a,
                            cudaStream_t s);
/* Bytes of scratch the backward needs. */
size_t chm_cu_scan_bwd_scratch(const chm_cu_scan *a);
/* The gradients given dy [B,T,Di]; states recomputed per chunk from g->hsaved or a pass. */
cudaError_t chm_cu_scan_bwd(const chm_cu_scan_grads *g, const void *dy, const chm_cu_scan *a,
                            void *scratch, cudaStream_t s);

/* ---- attention (attention.cu: any head dim; attention_flash*.cu: bf16, D 64/128) ---- */

/* Sizes of one attention call: q [B,T,H,D], k/v [B,T,Hk,D], lse [B,H,T] f32. */
typedef struct chm_cu_attn {
    int64_t B, T, H, Hk, D;
    float scale;
    chm_dtype dt;
    int wgmma; /* CHM_CU_WGMMA_* bits: the sm_90a kernels it may take */
} chm_cu_attn;
#define CHM_CU_WGMMA_DQ 1   /* off: CHIMERA_CUDA_DISABLE=wgmma or wgmma_dq */
#define CHM_CU_WGMMA_DKDV 2 /* off: CHIMERA_CUDA_DISABLE=wgmma or wgmma_dkdv */
#define CHM_CU_WGMMA_FWD 4  /* off: CHIMERA_CUDA_DISABLE=wgmma or wgmma_fwd */

/*
 * Whether the flash kernels take this call: bf16, D 64 or 128, T below 2^31,
 * scale > 0 and every pointer 16-byte aligned (rows are then 16-byte aligned too).
 */
bool chm_cu_flash_ok(const chm_cu_attn *a, const void *const *ptrs, int nptrs);

/*
 * The simple kernels (any D, f32/bf16/f16): one block per query row forward
 * (online softmax over key chunks), and in the backward one block per query
 * row for dq and one per key row for dk/dv (all q heads of its kv head), so
 * every gradient element has one writer: deterministic, no atomics.
 * delta is [B,H,T] f32 from chm_cu_attn_delta. dq, dk, dv accumulate.
 */
cudaError_t chm_cu_attn_fwd(void *out, float *lse, const void *q, const void *k, const void *v,
                            const chm_cu_attn *a, cudaStream_t s);
cudaError_t chm_cu_attn_bwd(void *dq, void *dk, void *dv, const void *dout, const void *q,
                            const void *k, const void *v, const float *lse, const float *delta,
                            const chm_cu_attn *a, cudaStream_t s);
/* The tensor-core kernels (attention_flash.cu, attention_flash_bwd.cu); callers check flash_ok. */
cudaError_t chm_cu_flash_fwd(void *out, float *lse, const void *q, const void *k, const void *v,
                             const chm_cu_attn *a, cudaStream_t s);
cudaError_t chm_cu_flash_bwd(void *dq, void *dk, void *dv, const void *dout, const void *q,
                             const void *k, const void *v, const float *lse, const float *delta,
                             const chm_cu_attn *a, cudaStream_t s);
/* delta [B,H,T] f32 = rowsum(dout * out) (shared by both backward paths). */
cudaError_t chm_cu_attn_delta(float *delta, const void *dout, const void *out,
                              const chm_cu_attn *a, cudaStream_t s);

/* ---- ops added for the model (model_ops.cu): f32 and bf16 ---- */

/* out [M,C] = f(s[m]) * x [M,C], f = sigmoid or identity; out may be x. */
cudaError_t chm_cu_row_scale_fwd(void *out, const void *x, const void *s, int64_t M, int64_t C,
                                 bool sigmoid, chm_dtype dt, cudaStream_t st);
/* dx [M,C] += f(s)*dout; ds [M] += f'(s) * rowsum(dout*x) (= for both with set: their old
   values are not read); either may be NULL. */
cudaError_t chm_cu_row_scale_bwd(void *dx, void *ds, const void *dout, const void *x,
                                 const void *s, int64_t M, int64_t C, bool sigmoid, bool set,
                                 chm_dtype dt, cudaStream_t st);
/* out[n] = alpha * exp(x[n]) (out may be x); dx[n] += dout[n] * out[n]. */
cudaError_t chm_cu_exp_fwd(void *out, const void *x, double alpha, int64_t n, chm_dtype dt,
                           cudaStream_t s);
cudaError_t chm_cu_exp_bwd(void *dx, const void *dout, const void *out, int64_t n, chm_dtype dt,
                           cudaStream_t s);
/* losses [n] f32 = softplus(x) - y*x; dlogits [n] = scale*(sigmoid(x)-y), NULL or = logits. */
cudaError_t chm_cu_bce_logits(float *losses, void *dlogits, const void *logits,
                              const void *targets, int64_t n, double grad_scale, chm_dtype dt,
                              cudaStream_t s);
/* Bytes of scratch chm_cu_moe_aux needs for logits [R,E]. */
size_t chm_cu_moe_aux_scratch(int64_t R, int64_t E);
/*
 * losses [2] f32 = {balance, z-loss}; dlogits [R,E] (or NULL) accumulates;
 * logits [R,E], idx [R,K]. An idx entry outside [0,E) is flagged
 * (CHM_CU_FLAG_MOE_AUX) and left out of the counts.
 */
cudaError_t chm_cu_moe_aux(float *losses, void *dlogits, const void *logits, const int32_t *idx,
                           int64_t R, int64_t E, int64_t K, double balance_scale, double z_scale,
                           chm_dtype dt, void *scratch, int *flag, cudaStream_t s);
/* out, q [B,Tq,H,D]; k, v [B,Tk,Hk,D]; query i sees keys 0..Tk-Tq+i. Shared: 2*D+128 floats. */
cudaError_t chm_cu_attention_decode(void *out, const void *q, const void *k, const void *v,
                                    int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Hk,
                                    int64_t D, double scale, chm_dtype dt, cudaStream_t s);
/* y [B,T,Di]; h [B,Di,N] (N <= CHM_CU_SCAN_MAX_N) is the start state and receives the last. */
cudaError_t chm_cu_scan_step(void *y, void *h, const chm_cu_scan *a, cudaStream_t s);

#ifdef __cplusplus
}
#endif
#endif
