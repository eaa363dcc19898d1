/*
 * chimera/backend.h: the device-abstraction layer.
 *
 * One struct of function pointers (chm_backend_ops) per backend, one entry
 * per op at the granularity of a fused kernel, forward and backward. The
 * model, optimizer and trainer call the chm_* wrappers declared below; each
 * wrapper checks shapes and dtypes once (src/backend/ops_*.c) and then calls
 * the backend's entry, so backends receive only validated arguments.
 *
 * Contracts shared by every op:
 *  - Tensors are contiguous and row-major (tensor.h). Float tensors of one op
 *    share a dtype unless an argument says otherwise; index tensors are I32.
 *    Saved statistics (rstd, logsumexp) use chm_dtype_stats(dtype).
 *  - Ops are pure: outputs depend only on inputs and arguments.
 *  - Every _bwd op ACCUMULATES (+=) into all of its gradient outputs, for
 *    parameters and inputs alike. Zeroing happens once, with chm_fill.
 *  - Outputs must not alias inputs unless the op says so.
 *  - A NULL optional tensor means "absent".
 *  - On failure an op returns a code and fills be->err.
 *  - Ops may run asynchronously; chm_sync waits for all submitted work.
 *
 * The struct only grows at the end; api_version is bumped when it does.
 * An entry may be NULL while a backend is under development: the wrapper
 * then returns CHM_ERR_UNSUPPORTED and `chimera info` lists the gap.
 */
#ifndef CHIMERA_BACKEND_H
#define CHIMERA_BACKEND_H

#include "chimera/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CHM_BACKEND_API_VERSION 1

typedef struct chm_event chm_event;
typedef struct chm_profile chm_profile;

/* Score function of a router. */
typedef enum chm_router_score { CHM_ROUTER_SOFTMAX = 0, CHM_ROUTER_SIGMOID = 1 } chm_router_score;

/* Arguments of the Mamba-1 selective scan (shapes in comments). */
typedef struct chm_scan_args {
    const chm_tensor *u;           /* [B,T,Di] input */
    const chm_tensor *delta;       /* [B,T,Di] raw step (before bias/softplus) */
    const chm_tensor *A;           /* [Di,N]   (already -exp(A_log)) */
    const chm_tensor *Bm;          /* [B,T,N]  input projection */
    const chm_tensor *Cm;          /* [B,T,N]  output projection */
    const chm_tensor *D;           /* [Di]     skip, optional */
    const chm_tensor *z;           /* [B,T,Di] gate, optional: y *= silu(z) */
    const chm_tensor *delta_bias;  /* [Di]     optional, added before softplus */
    bool delta_softplus;           /* apply softplus(delta + delta_bias) */
    /* [B, ceil(T/CHM_SCAN_SAVE_STRIDE), Di, N] f32, optional (NULL: none). Entry k holds
     * the state after chunk k, h[min(S (k+1), T) - 1] (S = CHM_SCAN_SAVE_STRIDE), so the
     * last entry is the final state. The forward either writes every entry or leaves the
     * tensor untouched (cpu and cuda write it; vulkan where its register backward runs,
     * N <= 16 with subgroup shuffles, else leaves it); the backward, given
     * it, may read it instead of recomputing the chunk-boundary states, so it must hold
     * what this backend's forward wrote for the same inputs. Results are the same with
     * or without it. The step (selective_scan_step) ignores it. */
    const chm_tensor *h_saved;
    /* Backward only: CHM_SCAN_SET_* bits of the gradients that are written (=) rather
     * than accumulated (+=), so that the caller need not zero them first. 0: all
     * accumulate. */
    unsigned grads_set;
    /* [B,T,Di] in u's dtype, optional, only with z: the output before the gate,
     * sum_n Cm[t,n]*h[t,n] + D[c]*u[t,c]. The forward writes it or leaves it untouched
     * (cpu and cuda write it); the backward, given it, may read it for dz instead of
     * summing it again (cuda does where it writes du, ddelta and dz), so it must hold
     * what this backend's forward wrote for the same inputs; dz then differs only by the
     * rounding of the stored sum to u's dtype. The step ignores it. */
    const chm_tensor *y_saved;
} chm_scan_args;

/* Steps per saved state of chm_scan_args.h_saved (fixed by the contract). */
#define CHM_SCAN_SAVE_STRIDE 16

/* Bits of chm_scan_args.grads_set, in chm_scan_grads' order. */
enum {
    CHM_SCAN_SET_DU = 1u << 0,
    CHM_SCAN_SET_DDELTA = 1u << 1,
    CHM_SCAN_SET_DA = 1u << 2,
    CHM_SCAN_SET_DBM = 1u << 3,
    CHM_SCAN_SET_DCM = 1u << 4,
    CHM_SCAN_SET_DD = 1u << 5,
    CHM_SCAN_SET_DZ = 1u << 6,
    CHM_SCAN_SET_DDELTA_BIAS = 1u << 7
};

/* Gradients of the selective scan; each may be NULL when not wanted (accumulated, or
 * written where chm_scan_args.grads_set says so). */
typedef struct chm_scan_grads {
    chm_tensor *du, *ddelta, *dA, *dBm, *dCm, *dD, *dz, *ddelta_bias;
} chm_scan_grads;

/* Hyper-parameters of one AdamW step. */
typedef struct chm_adamw_args {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step;        /* 1-based step for bias correction */
    double grad_scale;   /* gradients are multiplied by this first (clipping, 1/accum) */
} chm_adamw_args;

/* The op table. Members are in DESIGN.md's order; each says its contract. */
typedef struct chm_backend_ops {
    int api_version;

    /* ---- memory ---- */
    /* Allocate `bytes` of device memory into *out. */
    chm_status (*buffer_alloc)(chm_backend *be, size_t bytes, chm_buffer **out);
    /* Free a buffer from buffer_alloc (NULL is a no-op). */
    void (*buffer_free)(chm_backend *be, chm_buffer *buf);
    /* Copy nbytes(dst) host bytes of dst's dtype into dst. */
    chm_status (*upload)(chm_backend *be, const chm_tensor *dst, const void *src);
    /* Copy nbytes(src) bytes of src into host memory. */
    chm_status (*download)(chm_backend *be, const chm_tensor *src, void *dst);
    /* Set every element to value (converted to the dtype). */
    chm_status (*fill)(chm_backend *be, const chm_tensor *t, double value);
    /* dst = src, same dtype and element count. */
    chm_status (*copy)(chm_backend *be, const chm_tensor *dst, const chm_tensor *src);
    /* dst = src converted between float dtypes, same element count. */
    chm_status (*cast)(chm_backend *be, const chm_tensor *dst, const chm_tensor *src);
    /* Wait until all submitted work has finished. */
    chm_status (*sync)(chm_backend *be);
    /* Event timers: create, record in stream order, elapsed ms between two, destroy. */
    chm_status (*event_create)(chm_backend *be, chm_event **out);
    chm_status (*event_record)(chm_backend *be, chm_event *ev);
    chm_status (*event_elapsed_ms)(chm_backend *be, chm_event *start, chm_event *stop,
                                   double *ms);
    void (*event_destroy)(chm_backend *be, chm_event *ev);
    /* Optional (NULL where unknown): whether a recorded event has been reached by the device,
     * without waiting (the profile's "late" column: the device ran out of queued work). */
    bool (*event_done)(chm_backend *be, chm_event *ev);
    /* Optional (NULL: chm_readback_finish downloads): queue a copy of src (at most
     * CHM_READBACK_MAX bytes) into host memory the backend owns, behind the work already
     * queued, without waiting; *slot names the copy, -1 where no slot is free. */
    chm_status (*readback_start)(chm_backend *be, const chm_tensor *src, int *slot);
    /* Wait for the copy in slot (from readback_start), put its n bytes into dst, free the slot. */
    chm_status (*readback_finish)(chm_backend *be, int slot, void *dst, size_t n);

    /* ---- matmul ---- */
    /* C = alpha*op(A)op(B) + beta*C (+ bias[N] per row); batched, see chm_matmul. */
    chm_status (*matmul)(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                         const chm_tensor *B, const chm_tensor *bias, bool trans_a,
                         bool trans_b, double alpha, double beta);
    /* Optional (NULL: the wrapper copies S into C first): C = alpha*op(A)op(B) + beta*S, S
     * another tensor of C's shape (never C itself, never overlapping it); see chm_matmul_from. */
    chm_status (*matmul_from)(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                              const chm_tensor *B, const chm_tensor *S, bool trans_a, bool trans_b,
                              double alpha, double beta);
    /* Per-group matmul with a row count per group, see chm_matmul_grouped (tail_zero: the
       caller's promise of chm_matmul_grouped_tail_zero). */
    chm_status (*matmul_grouped)(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                 const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                                 bool trans_b, double alpha, double beta, bool tail_zero);

    /* ---- attention ---- */
    chm_status (*attention_fwd)(chm_backend *be, const chm_tensor *out, const chm_tensor *lse,
                                const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                double scale);
    chm_status (*attention_bwd)(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                                const chm_tensor *dv, const chm_tensor *dout,
                                const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                const chm_tensor *out, const chm_tensor *lse, double scale);

    /* ---- Mamba ---- */
    chm_status (*selective_scan_fwd)(chm_backend *be, const chm_tensor *y,
                                     const chm_scan_args *a);
    chm_status (*selective_scan_bwd)(chm_backend *be, const chm_scan_grads *g,
                                     const chm_tensor *dy, const chm_scan_args *a);
    chm_status (*causal_conv1d_fwd)(chm_backend *be, const chm_tensor *out,
                                    const chm_tensor *x, const chm_tensor *w,
                                    const chm_tensor *bias, bool silu);
    chm_status (*causal_conv1d_bwd)(chm_backend *be, const chm_tensor *dx,
                                    const chm_tensor *dw, const chm_tensor *dbias,
                                    const chm_tensor *dout, const chm_tensor *x,
                                    const chm_tensor *w, const chm_tensor *bias, bool silu,
                                    bool dx_set);

    /* ---- normalisation, position, activation, embedding ---- */
    chm_status (*rmsnorm_fwd)(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                              const chm_tensor *x, const chm_tensor *w, double eps);
    chm_status (*rmsnorm_bwd)(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                              const chm_tensor *dout, const chm_tensor *x,
                              const chm_tensor *w, const chm_tensor *rstd);
    chm_status (*rope_fwd)(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                           double theta, int64_t pos_offset);
    chm_status (*rope_bwd)(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                           double theta, int64_t pos_offset);
    /* counts: NULL, or the row counts of chm_swiglu_fwd_tail_zero (the caller's promise). */
    chm_status (*swiglu_fwd)(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                             const chm_tensor *up, const chm_tensor *counts);
    chm_status (*swiglu_bwd)(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                             const chm_tensor *dout, const chm_tensor *gate,
                             const chm_tensor *up, bool accumulate, const chm_tensor *counts);
    chm_status (*embedding_fwd)(chm_backend *be, const chm_tensor *out, const chm_tensor *ids,
                                const chm_tensor *table);
    chm_status (*embedding_bwd)(chm_backend *be, const chm_tensor *dtable,
                                const chm_tensor *dout, const chm_tensor *ids);

    /* ---- elementwise ---- */
    /* out = a + b (out may alias a or b). */
    chm_status (*add)(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                      const chm_tensor *b);
    /* out = alpha * x (out may alias x). */
    chm_status (*scale)(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                        double alpha);
    /* y += alpha * x. */
    chm_status (*axpy)(chm_backend *be, const chm_tensor *y, const chm_tensor *x,
                       double alpha);
    /* out[C] += sum over rows of x[R,C] (bias gradients). */
    chm_status (*sum_rows)(chm_backend *be, const chm_tensor *out, const chm_tensor *x);

    /* ---- routing (MoE, MoD) ---- */
    chm_status (*router_topk)(chm_backend *be, const chm_tensor *gates, const chm_tensor *idx,
                              const chm_tensor *probs, const chm_tensor *slot_token,
                              const chm_tensor *slot_ref, const chm_tensor *counts,
                              const chm_tensor *logits, chm_router_score score,
                              bool renormalize);
    chm_status (*router_topk_bwd)(chm_backend *be, const chm_tensor *dlogits,
                                  const chm_tensor *dgates, const chm_tensor *probs,
                                  const chm_tensor *idx, chm_router_score score,
                                  bool renormalize);
    chm_status (*select_topk)(chm_backend *be, const chm_tensor *idx, const chm_tensor *scores,
                              bool flat);
    chm_status (*gather_rows)(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                              const chm_tensor *idx);
    /* max_repeat: 0, or the most times an index occurs (the caller's promise) */
    chm_status (*scatter_add_rows)(chm_backend *be, const chm_tensor *out,
                                   const chm_tensor *x, const chm_tensor *idx,
                                   const chm_tensor *weights, int max_repeat);

    /* ---- loss and optimizer ---- */
    chm_status (*cross_entropy)(chm_backend *be, const chm_tensor *losses,
                                const chm_tensor *dlogits, const chm_tensor *logits,
                                const chm_tensor *targets, double grad_scale);
    chm_status (*adamw_step)(chm_backend *be, const chm_tensor *param, const chm_tensor *grad,
                             const chm_tensor *m, const chm_tensor *v,
                             const chm_tensor *param_lowp, const chm_adamw_args *args);
    chm_status (*sum_squares)(chm_backend *be, const chm_tensor *out, const chm_tensor *x);

    /* ---- added for the model (issue 3): MoD/MoE scaling, Mamba's A, aux losses, decoding ---- */
    chm_status (*row_scale_fwd)(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                const chm_tensor *s, bool sigmoid);
    chm_status (*row_scale_bwd)(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                                const chm_tensor *dout, const chm_tensor *x, const chm_tensor *s,
                                bool sigmoid, bool set);
    chm_status (*exp_fwd)(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                          double alpha);
    chm_status (*exp_bwd)(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                          const chm_tensor *out);
    chm_status (*bce_logits)(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                             const chm_tensor *logits, const chm_tensor *targets,
                             double grad_scale);
    chm_status (*moe_aux)(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                          const chm_tensor *logits, const chm_tensor *idx, double balance_scale,
                          double z_scale);
    chm_status (*attention_decode)(chm_backend *be, const chm_tensor *out, const chm_tensor *q,
                                   const chm_tensor *k, const chm_tensor *v, double scale);
    chm_status (*selective_scan_step)(chm_backend *be, const chm_tensor *y, const chm_tensor *h,
                                      const chm_scan_args *a);
} chm_backend_ops;

/* Capability bits a backend reports in chm_backend.caps. */
enum {
    CHM_CAP_F64 = 1u << 0,         /* f64 ops (cpu) */
    CHM_CAP_BF16 = 1u << 1,        /* bf16 storage */
    CHM_CAP_F16 = 1u << 2,         /* f16 storage */
    CHM_CAP_HOST_MEMORY = 1u << 3, /* buffers are host memory (chm_buffer.host set) */
    CHM_CAP_FAST_BF16 = 1u << 4,   /* bf16 matmuls run on matrix units (tensor cores), so bf16
                                      trains faster than f32: precision auto picks it */
    CHM_CAP_SCAN_SAVED = 1u << 5,  /* the scan's backward reads chm_scan_args.h_saved (cuda,
                                      vulkan with subgroup shuffles), so
                                      the model keeps the saved states only on such a backend */
    CHM_CAP_CHEAP_READBACK = 1u << 6, /* a small download mid-step costs little (cpu: host
                                        memory; cuda: the host waits while far ahead), so the
                                        model may read routing counts to size per-expert products;
                                        on vulkan each download submits and waits (14% slower
                                        chimera-1b) */
    CHM_CAP_SCAN_YSAVED = 1u << 7  /* the scan's backward reads chm_scan_args.y_saved (cuda), so
                                      the model keeps the pre-gate outputs only on such a backend */
};

/* Options for opening a backend. Zero-initialise, then set what you need. */
typedef struct chm_backend_options {
    int device_index;   /* -1: let the backend choose */
    int threads;        /* cpu threads; 0: all cores (OpenMP default) */
    bool quiet;         /* no informational messages */
} chm_backend_options;

/* A backend instance. Created by chm_backend_open, freed by chm_backend_close. */
struct chm_backend {
    int api_version;
    const char *name;              /* "cpu", "vulkan", "cuda" */
    const chm_backend_ops *ops;
    void *ctx;                     /* backend-private state */
    unsigned caps;                 /* CHM_CAP_* bits */
    char device[128];              /* human-readable device name */
    char why[512];                 /* one line: why this backend was chosen */
    chm_err err;                   /* the last error raised by an op */
    void (*close)(chm_backend *be);
    /* Debug only: the op (a chm_backend_op_name) whose first output the shared
     * wrapper perturbs after every call on this backend, so that `chimera verify`
     * can prove it catches a wrong op; "" for none. chm_backend_open sets it from
     * CHIMERA_DEBUG_FAULT="backend:op" when the backend part names this backend. */
    char debug_fault[32];
    /* Per-op times when CHIMERA_PROFILE is set (src/backend/profile.h); NULL otherwise. */
    chm_profile *profile;
};

/* Static description of a backend known to the registry. */
typedef struct chm_backend_info {
    const char *name;       /* "cpu", "vulkan", "cuda" */
    bool compiled;          /* built into this binary */
    bool implemented;       /* has a working op table (not only a device probe) */
} chm_backend_info;

/* Number of backends the registry knows, and the i-th one's description. */
int chm_backend_count(void);
const chm_backend_info *chm_backend_get_info(int i);

/*
 * Open a backend by name: "cpu", "vulkan", "cuda" or "auto". "auto" picks
 * cuda on a supported GPU, else vulkan, else cpu, and writes its reason into
 * (*out)->why. opts may be NULL. Fails with CHM_ERR_UNSUPPORTED and a hint
 * when the named backend is not compiled in or finds no device.
 */
chm_status chm_backend_open(const char *name, const chm_backend_options *opts,
                            chm_backend **out, chm_err *err);

/* Release a backend and everything it owns. NULL is a no-op. */
void chm_backend_close(chm_backend *be);

/* Number of ops the backend implements out of the total; names of missing ones via chm_op_name. */
int chm_backend_op_count(void);
const char *chm_backend_op_name(int i);
bool chm_backend_has_op(const chm_backend *be, int i);

/* ---- memory wrappers ---- */

/* Allocate a buffer of `bytes` on `be`. */
chm_status chm_buffer_alloc(chm_backend *be, size_t bytes, chm_buffer **out);
/* Free a buffer (NULL is a no-op). */
void chm_buffer_free(chm_buffer *buf);
/* Copy host data (dst's dtype, nbytes(dst) bytes) into dst. */
chm_status chm_upload(chm_backend *be, const chm_tensor *dst, const void *src);
/* Copy src into host memory (nbytes(src) bytes). */
chm_status chm_download(chm_backend *be, const chm_tensor *src, void *dst);
/* Set every element of t to value. */
chm_status chm_fill(chm_backend *be, const chm_tensor *t, double value);
/* dst = src (same dtype and element count). */
chm_status chm_copy(chm_backend *be, const chm_tensor *dst, const chm_tensor *src);
/* dst = src converted between float dtypes (same element count). */
chm_status chm_cast(chm_backend *be, const chm_tensor *dst, const chm_tensor *src);
/* Wait for all submitted work. */
chm_status chm_sync(chm_backend *be);
/* Event timers (see the ops table). */
chm_status chm_event_create(chm_backend *be, chm_event **out);
chm_status chm_event_record(chm_backend *be, chm_event *ev);
chm_status chm_event_elapsed_ms(chm_backend *be, chm_event *start, chm_event *stop, double *ms);
void chm_event_destroy(chm_backend *be, chm_event *ev);
/* Largest tensor a backend's readback_start takes (larger ones are downloaded at the finish). */
#define CHM_READBACK_MAX 4096

/* A small read of a device tensor started early and finished later, so that the host need
 * not wait for the device (and the device need not run out of queued work) in between. */
typedef struct chm_readback {
    chm_tensor src; /* the tensor read */
    int slot;       /* the backend's copy in flight; -1: the finish downloads src */
    bool live;      /* started, not yet finished */
} chm_readback;

/* Start reading src into host memory (rb: zeroed or finished before). cuda queues a copy
 * behind the work before it and returns; elsewhere the read happens at the finish, so src
 * must keep its contents until then. */
chm_status chm_readback_start(chm_backend *be, const chm_tensor *src, chm_readback *rb);
/* Finish rb: wait for its copy (or download src now) and put nbytes(src) bytes into dst. */
chm_status chm_readback_finish(chm_backend *be, chm_readback *rb, void *dst);
/* Drop the per-op times profiled so far (CHIMERA_PROFILE), e.g. after warm-up steps whose
 * one-off work (GEMM tuning, kernel loading) would blur the steady state; no-op otherwise. */
void chm_profile_restart(chm_backend *be);

/* ---- op wrappers: shapes and dtypes are checked here, once ---- */

/*
 * Matrix product. A, B and C are viewed as [batch, rows, cols] (2-D tensors
 * have batch 1; for more dims batch is the product of the leading dims).
 * op(A) is [M,K] (A stored [K,M] when trans_a), op(B) is [K,N] (B stored
 * [N,K] when trans_b), C is [M,N]. A or B with batch 1 is broadcast over C's
 * batch. C = alpha*op(A)op(B) + beta*C, then bias[N] (optional) is added to
 * every row. beta = 0 ignores C's old contents (NaN included).
 */
chm_status chm_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                      const chm_tensor *B, const chm_tensor *bias, bool trans_a, bool trans_b,
                      double alpha, double beta);

/*
 * C = alpha*op(A)op(B) + beta*S: chm_matmul (no bias) whose beta term reads S, a tensor of
 * C's dtype and shape, instead of C's old contents (a residual add without a copy first:
 * cuBLASLt reads C and writes D). S may be C itself (then it is chm_matmul) but must not
 * overlap C otherwise, nor may C overlap A or B. Same results as copying S into C, then
 * chm_matmul; backends without a fused form do exactly that.
 */
chm_status chm_matmul_from(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                           const chm_tensor *B, const chm_tensor *S, bool trans_a, bool trans_b,
                           double alpha, double beta);

/*
 * Grouped matmul for experts: A, B, C are [E, ., .] and counts[E] (I32) says
 * how many rows of group e are live (0 <= counts[e] <= capacity). Without
 * trans_a: A [E,cap,K], C [E,cap,N]; rows >= counts[e] of C are set to
 * beta*C. With trans_a (weight gradients): A [E,cap,M], C [E,M,N], B
 * [E,cap,N], and the sum over cap stops at counts[e]. B is [E,K,N], or
 * [E,N,K] with trans_b.
 */
chm_status chm_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                              const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                              bool trans_b, double alpha, double beta);
/* chm_matmul_grouped (the same results) where rows >= counts[e] of A are zero, and with
   trans_a those of B finite (MoE's gathered slots): backends may then compute them rather
   than keep or mask them (cuda then reads no counts). A nonzero row there is an error where
   the backend checks (cpu). */
chm_status chm_matmul_grouped_tail_zero(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                        const chm_tensor *B, const chm_tensor *counts,
                                        bool trans_a, bool trans_b, double alpha, double beta);

/*
 * Causal attention with grouped-query heads. q [B,T,H,D], k and v [B,T,Hk,D]
 * with H % Hk == 0 (head h reads kv head h / (H/Hk)); out [B,T,H,D]; lse
 * [B,H,T] (stats dtype) receives the logsumexp of each row of scores.
 * scores = scale * q.k, masked to key positions <= query position.
 */
chm_status chm_attention_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *lse,
                             const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                             double scale);
/* Backward of chm_attention_fwd; dq, dk, dv accumulate. out and lse come from the forward. */
chm_status chm_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                             const chm_tensor *dv, const chm_tensor *dout, const chm_tensor *q,
                             const chm_tensor *k, const chm_tensor *v, const chm_tensor *out,
                             const chm_tensor *lse, double scale);

/*
 * Mamba-1 selective scan (chm_scan_args). With d = softplus(delta + delta_bias)
 * (or delta + delta_bias without softplus), per channel c and state n:
 *   h[t] = exp(d[t,c]*A[c,n]) * h[t-1] + d[t,c]*Bm[t,n]*u[t,c],  h[-1] = 0
 *   y[t,c] = sum_n Cm[t,n]*h[t,n] + D[c]*u[t,c];  y *= silu(z[t,c]) when z is given.
 * y is [B,T,Di]; a->h_saved, when given, may receive the chunk-boundary states.
 */
chm_status chm_selective_scan_fwd(chm_backend *be, const chm_tensor *y, const chm_scan_args *a);
/* Backward of the scan given dy [B,T,Di]; states are recomputed (from a->h_saved when
 * given), grads accumulate except those a->grads_set names, which are written. */
chm_status chm_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                  const chm_tensor *dy, const chm_scan_args *a);

/*
 * Causal depthwise conv1d over time: x [B,T,C], w [C,W], bias [C] optional,
 * out[b,t,c] = bias[c] + sum_j w[c,j] * x[b,t-(W-1)+j,c] (zero before t=0),
 * then SiLU when silu is set.
 */
chm_status chm_causal_conv1d_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                 const chm_tensor *w, const chm_tensor *bias, bool silu);
/* Backward of chm_causal_conv1d_fwd; dx, dw, dbias (optional) accumulate. */
chm_status chm_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                                 const chm_tensor *dbias, const chm_tensor *dout,
                                 const chm_tensor *x, const chm_tensor *w,
                                 const chm_tensor *bias, bool silu);
/* The same with dx WRITTEN (its old contents ignored: no zero fill needed first); dw and
   dbias accumulate. */
chm_status chm_causal_conv1d_bwd_set_dx(chm_backend *be, const chm_tensor *dx,
                                        const chm_tensor *dw, const chm_tensor *dbias,
                                        const chm_tensor *dout, const chm_tensor *x,
                                        const chm_tensor *w, const chm_tensor *bias, bool silu);

/* RMSNorm over the last dim: x [R,C], w [C]; out = x * rstd * w, rstd [R] = 1/sqrt(mean(x^2)+eps). */
chm_status chm_rmsnorm_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                           const chm_tensor *x, const chm_tensor *w, double eps);
/* Backward of RMSNorm; dx and dw accumulate; rstd from the forward. */
chm_status chm_rmsnorm_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                           const chm_tensor *dout, const chm_tensor *x, const chm_tensor *w,
                           const chm_tensor *rstd);

/*
 * Rotary embedding on x [B,T,H,D] (D even), "rotate half" convention: the pair
 * (i, i+D/2) at position p = t + pos_offset rotates by p * theta^(-2i/D).
 * out may alias x.
 */
chm_status chm_rope_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                        double theta, int64_t pos_offset);
/* Backward of RoPE (rotation by the opposite angle); dx accumulates. */
chm_status chm_rope_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                        double theta, int64_t pos_offset);

/* SwiGLU: out = silu(gate) * up, all the same shape. */
chm_status chm_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                          const chm_tensor *up);
/* Backward of SwiGLU; dgate and dup accumulate, or are written (old contents, NaN included,
 * never read) when !accumulate: a model that would zero them first saves the fills and reads. */
chm_status chm_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                          const chm_tensor *dout, const chm_tensor *gate, const chm_tensor *up,
                          bool accumulate);
/* chm_swiglu_fwd on [E,cap,F] expert rows whose rows >= counts[e] (counts I32 [E]) of gate and
   up are zero (MoE's empty slots): out's rows there are zero, and backends may write them
   without reading the inputs. A nonzero row there is an error where the backend checks (cpu). */
chm_status chm_swiglu_fwd_tail_zero(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                                    const chm_tensor *up, const chm_tensor *counts);
/* chm_swiglu_bwd with the same promise (and dout finite on those rows): dgate's and dup's rows
   there are zero when written, unchanged when accumulating; backends may skip their reads. */
chm_status chm_swiglu_bwd_tail_zero(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                                    const chm_tensor *dout, const chm_tensor *gate,
                                    const chm_tensor *up, const chm_tensor *counts,
                                    bool accumulate);

/* Embedding lookup: ids [R] (I32, each in [0,V)), table [V,C], out [R,C]. */
chm_status chm_embedding_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *ids,
                             const chm_tensor *table);
/* Backward: dtable[ids[r]] += dout[r] (deterministic order). */
chm_status chm_embedding_bwd(chm_backend *be, const chm_tensor *dtable, const chm_tensor *dout,
                             const chm_tensor *ids);

/* out = a + b, same shapes; out may alias a or b. */
chm_status chm_add(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                   const chm_tensor *b);
/* out = alpha * x; out may alias x. */
chm_status chm_scale(chm_backend *be, const chm_tensor *out, const chm_tensor *x, double alpha);
/* y += alpha * x, same element count. */
chm_status chm_axpy(chm_backend *be, const chm_tensor *y, const chm_tensor *x, double alpha);
/* out [C] += column sums of x viewed as [rows, C]. */
chm_status chm_sum_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x);

/*
 * MoE router: logits [R,E] -> probs [R,E] (softmax over E, or sigmoid),
 * idx [R,K] (I32, the K best experts, best first, ties to the lower index),
 * gates [R,K] (their probs, divided by their sum when renormalize), and the
 * dispatch plan for capacity `cap` = slot_token's second dim:
 *   slot_token [E,cap] (I32): token row of each slot of expert e, in token
 *     order, -1 for empty; slot_ref [E,cap] (I32): r*K+k of the gate that
 *     filled it, -1 for empty; counts [E] (I32): live slots of expert e.
 * Tokens past an expert's capacity are dropped (they appear in no slot).
 */
chm_status chm_router_topk(chm_backend *be, const chm_tensor *gates, const chm_tensor *idx,
                           const chm_tensor *probs, const chm_tensor *slot_token,
                           const chm_tensor *slot_ref, const chm_tensor *counts,
                           const chm_tensor *logits, chm_router_score score, bool renormalize);
/* Backward of the gates with respect to the logits: dlogits [R,E] accumulates. */
chm_status chm_router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                               const chm_tensor *dgates, const chm_tensor *probs,
                               const chm_tensor *idx, chm_router_score score, bool renormalize);
/*
 * Top-k per row for mixture-of-depths: scores [R,C] -> idx [R,K] (I32), the
 * column indices of the K largest scores (ties to the lower index), written
 * in increasing index order so that selected tokens keep their order. With
 * flat, idx[r,k] is r*C + column, the position in the flattened scores (scores
 * [B,T] -> token rows of the whole batch, so one gather/scatter serves all
 * sequences); R*C must then fit in I32.
 */
chm_status chm_select_topk(chm_backend *be, const chm_tensor *idx, const chm_tensor *scores,
                           bool flat);
/* out [M,C]: row m = x[idx[m]] (x [R,C], idx [M] I32), or zeros where idx[m] < 0. */
chm_status chm_gather_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                           const chm_tensor *idx);
/* out [R,C] += w[m] * x[m] into row idx[m] for each m with idx[m] >= 0; weights [M] optional (1). */
chm_status chm_scatter_add_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                const chm_tensor *idx, const chm_tensor *weights);
/* chm_scatter_add_rows where no index occurs more than max_repeat (>= 1) times (MoE's top-k
   slots of a token, MoD's distinct tokens): backends may skip sorting; more is an error. */
chm_status chm_scatter_add_rows_bounded(chm_backend *be, const chm_tensor *out,
                                        const chm_tensor *x, const chm_tensor *idx,
                                        const chm_tensor *weights, int max_repeat);

/*
 * Fused cross-entropy over the vocabulary, chunked so no softmax is stored:
 * logits [R,V], targets [R] (I32; < 0 means ignore: loss 0, no gradient).
 * losses [R] = logsumexp(logits) - logits[target]; dlogits [R,V] is WRITTEN
 * (not accumulated) as grad_scale * (softmax - onehot), and may alias logits.
 */
chm_status chm_cross_entropy(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                             const chm_tensor *logits, const chm_tensor *targets,
                             double grad_scale);

/*
 * One fused AdamW step (decoupled weight decay) on f32/f64 param, m, v with
 * grad of any float dtype: g = grad_scale*grad; m = b1 m + (1-b1) g;
 * v = b2 v + (1-b2) g^2; param -= lr*(mhat/(sqrt(vhat)+eps) + wd*param).
 * param_lowp (optional, bf16/f16) receives a rounded copy of param.
 */
chm_status chm_adamw_step(chm_backend *be, const chm_tensor *param, const chm_tensor *grad,
                          const chm_tensor *m, const chm_tensor *v, const chm_tensor *param_lowp,
                          const chm_adamw_args *args);

/* out (one element, f32 or f64) = sum of x^2 over all elements of x. */
chm_status chm_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x);

/* ---- ops added for the model (issue 3) ---- */

/*
 * Row scaling: x [M,C], s [M], out [M,C]; out[m,:] = f(s[m]) * x[m,:] with
 * f = sigmoid when `sigmoid` (mixture-of-depths: a routed layer's output times
 * sigmoid(router score)), else f(s) = s (MoE: an expert row times its gate).
 * out may alias x exactly.
 */
chm_status chm_row_scale_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                             const chm_tensor *s, bool sigmoid);
/* Backward: dx [M,C] += f(s)*dout; ds [M] += f'(s) * rowsum(dout*x). Both optional, both accumulate. */
chm_status chm_row_scale_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                             const chm_tensor *dout, const chm_tensor *x, const chm_tensor *s,
                             bool sigmoid);
/* The same with dx and ds WRITTEN (their old contents ignored: no zero fills needed first). */
chm_status chm_row_scale_bwd_set(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                                 const chm_tensor *dout, const chm_tensor *x, const chm_tensor *s,
                                 bool sigmoid);

/* out = alpha * exp(x), any shape (Mamba: A = -exp(A_log)); out may alias x exactly. */
chm_status chm_exp_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x, double alpha);
/* Backward of chm_exp_fwd from its output: dx += dout * out (accumulates). */
chm_status chm_exp_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                       const chm_tensor *out);

/*
 * Binary cross-entropy with logits (mixture-of-depths router): logits and
 * targets [R] (targets in [0,1], same dtype), losses [R] (stats dtype) =
 * softplus(x) - y*x; dlogits [R] (optional) is WRITTEN, not accumulated, as
 * grad_scale * (sigmoid(x) - y), and may alias logits exactly.
 */
chm_status chm_bce_logits(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                          const chm_tensor *logits, const chm_tensor *targets, double grad_scale);

/*
 * MoE auxiliary losses, forward and backward fused, for a softmax router:
 * logits [R,E], idx [R,K] (I32, routed experts before capacity). losses [2]
 * (stats dtype) is WRITTEN with the Switch load-balancing loss
 * E * sum_e f_e P_e (f_e: fraction of the R*K assignments to e, P_e: mean
 * softmax prob of e; 1 when balanced) and the ST-MoE z-loss mean_r lse_r^2.
 * dlogits [R,E] (optional) ACCUMULATES balance_scale * d(balance) +
 * z_scale * d(z); f is treated as a constant.
 */
chm_status chm_moe_aux(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                       const chm_tensor *logits, const chm_tensor *idx, double balance_scale,
                       double z_scale);

/*
 * Causal attention of new queries against a key/value cache (decoding):
 * q, out [B,Tq,H,D]; k, v [B,Tk,Hk,D] with Tq <= Tk. Query i is position
 * Tk - Tq + i and attends keys 0..Tk - Tq + i (Tq = Tk gives attention_fwd's
 * mask). Forward only; no logsumexp.
 */
chm_status chm_attention_decode(chm_backend *be, const chm_tensor *out, const chm_tensor *q,
                                const chm_tensor *k, const chm_tensor *v, double scale);

/*
 * The selective scan continued from a state (decoding): like
 * chm_selective_scan_fwd, but the state starts at h [B,Di,N] (u's dtype)
 * instead of zero, and the state after the last step is written back to h.
 */
chm_status chm_selective_scan_step(chm_backend *be, const chm_tensor *y, const chm_tensor *h,
                                   const chm_scan_args *a);

#ifdef __cplusplus
}
#endif
#endif
