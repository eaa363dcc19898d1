/*
 * cuda_backend.h: the cuda backend's internal interface (C), shared by the
 * glue in src/backend/cuda/ and by the registry.
 *
 * Every op of backend.h has a chm_cuda_<op> here with the signature of its
 * table entry (like cpu.h). The glue turns tensors into device pointers,
 * picks the dtype path, calls a launcher of kernels.h on the backend's one
 * stream and turns CUDA errors into chm_status with a message. Shapes and
 * dtypes were checked by the shared wrappers (src/backend/ops_*.c).
 *
 * Dtypes: compute ops take f32, bf16 and (most) f16 tensors and compute in
 * f32; f64 is the cpu backend's job and gets CHM_ERR_DTYPE. fill, copy, cast,
 * upload and download handle every dtype.
 *
 * Asynchrony: ops only enqueue work. Data errors found on the device (an id
 * outside the table, ...) are recorded in a device flag and reported by the
 * next sync or download, which is where the host waits anyway.
 */
#ifndef CHIMERA_CUDA_BACKEND_H
#define CHIMERA_CUDA_BACKEND_H

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "chimera/backend.h"

/* Pool chunk size: smaller requests are carved out of chunks, bigger ones get their own. */
#define CHM_CUDA_POOL_CHUNK ((size_t)64 << 20)
/* Alignment of every pool block (and of the arena's offsets, CHM_ARENA_ALIGN). */
#define CHM_CUDA_ALIGN 256
/* Pinned staging for upload/download: two halves of this many bytes. */
#define CHM_CUDA_STAGING ((size_t)16 << 20)
/* Readbacks in flight at once (chm_readback_start), each up to CHM_READBACK_MAX bytes. */
#define CHM_CUDA_READBACKS 64
/* cuBLASLt workspace. */
#define CHM_CUDA_LT_WORKSPACE ((size_t)32 << 20)

typedef struct chm_cuda_pool chm_cuda_pool;
typedef struct chm_cuda_lt_cache chm_cuda_lt_cache;

/* One block of device memory handed out by the pool (chm_buffer.impl points at it). */
typedef struct chm_cuda_block {
    char *ptr;                     /* device address */
    size_t size;                   /* bytes, a multiple of CHM_CUDA_ALIGN */
    bool free;                     /* in a chunk's free list */
    struct chm_cuda_chunk *chunk;  /* NULL for a dedicated allocation */
    struct chm_cuda_block *prev, *next;  /* address-ordered neighbours in the chunk */
} chm_cuda_block;

/* The backend's state (chm_backend.ctx). */
typedef struct chm_cuda_ctx {
    int device, cc_major, cc_minor, sm_count;
    cudaStream_t stream;           /* every op runs here, in order */
    chm_cuda_pool *pool;
    cublasLtHandle_t lt;
    chm_cuda_block *lt_ws;         /* cuBLASLt workspace */
    chm_cuda_lt_cache *lt_cache;   /* heuristic results by problem */
    unsigned char *staging[2];     /* pinned host halves */
    cudaEvent_t staging_done[2];   /* last copy through each half */
    int staging_next;
    chm_cuda_block *scratch;       /* grow-only scratch shared by ops (stream-ordered) */
    int *flag;                     /* device int[4]: first data error, see kernels.h */
    int *flag_host;                /* pinned mirror read at sync/download */
    unsigned char *rb_host;        /* pinned [CHM_CUDA_READBACKS][CHM_READBACK_MAX], at first use */
    cudaEvent_t rb_done[CHM_CUDA_READBACKS]; /* each slot's copy */
    uint64_t rb_busy;              /* bit k: slot k holds a readback not yet finished */
} chm_cuda_ctx;

static inline chm_cuda_ctx *chm_cuda_ctx_of(chm_backend *be) { return (chm_cuda_ctx *)be->ctx; }

/* Device address of a tensor's first element (NULL for a NULL tensor). */
static inline void *chm_cuda_ptr(const chm_tensor *t) {
    if (!t) return NULL;
    return ((chm_cuda_block *)t->buf->impl)->ptr + t->offset;
}

/* Open the cuda backend (registry entry). */
chm_status chm_cuda_open(const chm_backend_options *opts, chm_backend **out, chm_err *err);

/* ---- helpers (memory.c) ---- */

/* CHM_OK for cudaSuccess, else CHM_ERR_DEVICE naming the op and the CUDA error. */
chm_status chm_cuda_check(chm_backend *be, const char *op, cudaError_t e);
/* Dtype bit for masks: CHM_CUDA_DT(CHM_F32) | CHM_CUDA_DT(CHM_BF16) ... */
#define CHM_CUDA_DT(dt) (1u << (unsigned)(dt))
#define CHM_CUDA_FLOATS (CHM_CUDA_DT(CHM_F32) | CHM_CUDA_DT(CHM_BF16) | CHM_CUDA_DT(CHM_F16))
#define CHM_CUDA_F32_BF16 (CHM_CUDA_DT(CHM_F32) | CHM_CUDA_DT(CHM_BF16))
/* CHM_ERR_DTYPE naming the op unless dt is in mask. */
chm_status chm_cuda_dtype(chm_backend *be, const char *op, chm_dtype dt, unsigned mask);
/* Device scratch of at least `bytes`, valid until the next op asks (stream order keeps it safe). */
chm_status chm_cuda_scratch(chm_backend *be, const char *op, size_t bytes, void **out);
/* Pool allocation for internal use; chm_cuda_pool_free returns it. */
chm_status chm_cuda_pool_alloc(chm_backend *be, size_t bytes, chm_cuda_block **out);
void chm_cuda_pool_free(chm_backend *be, chm_cuda_block *b);
/* Create and destroy the pool (memory.c). */
chm_status chm_cuda_pool_create(chm_cuda_pool **out);
void chm_cuda_pool_destroy(chm_cuda_pool *p);
/* Report (and clear) a data error a kernel recorded; CHM_OK when none. Syncs the stream. */
chm_status chm_cuda_sync_and_check(chm_backend *be, const char *op);

/* ---- memory ops (memory.c) ---- */
chm_status chm_cuda_buffer_alloc(chm_backend *be, size_t bytes, chm_buffer **out);
void chm_cuda_buffer_free(chm_backend *be, chm_buffer *buf);
chm_status chm_cuda_upload(chm_backend *be, const chm_tensor *dst, const void *src);
chm_status chm_cuda_download(chm_backend *be, const chm_tensor *src, void *dst);
chm_status chm_cuda_fill(chm_backend *be, const chm_tensor *t, double value);
chm_status chm_cuda_copy(chm_backend *be, const chm_tensor *dst, const chm_tensor *src);
chm_status chm_cuda_cast(chm_backend *be, const chm_tensor *dst, const chm_tensor *src);
chm_status chm_cuda_sync(chm_backend *be);
chm_status chm_cuda_event_create(chm_backend *be, chm_event **out);
chm_status chm_cuda_event_record(chm_backend *be, chm_event *ev);
chm_status chm_cuda_event_elapsed_ms(chm_backend *be, chm_event *start, chm_event *stop,
                                     double *ms);
void chm_cuda_event_destroy(chm_backend *be, chm_event *ev);
bool chm_cuda_event_done(chm_backend *be, chm_event *ev);
chm_status chm_cuda_readback_start(chm_backend *be, const chm_tensor *src, int *slot);
chm_status chm_cuda_readback_finish(chm_backend *be, int slot, void *dst, size_t n);

/* ---- matmul.c (cuBLASLt) ---- */
chm_status chm_cuda_lt_init(chm_backend *be);
void chm_cuda_lt_free(chm_backend *be);
chm_status chm_cuda_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                           const chm_tensor *B, const chm_tensor *bias, bool trans_a,
                           bool trans_b, double alpha, double beta);
chm_status chm_cuda_matmul_from(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                const chm_tensor *B, const chm_tensor *S, bool trans_a,
                                bool trans_b, double alpha, double beta);
chm_status chm_cuda_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                   const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                                   bool trans_b, double alpha, double beta, bool tail_zero);

/* ---- attention.c ---- */
chm_status chm_cuda_attention_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *lse,
                                  const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                  double scale);
chm_status chm_cuda_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                                  const chm_tensor *dv, const chm_tensor *dout,
                                  const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                  const chm_tensor *out, const chm_tensor *lse, double scale);

/* ---- mamba.c ---- */
chm_status chm_cuda_selective_scan_fwd(chm_backend *be, const chm_tensor *y,
                                       const chm_scan_args *a);
chm_status chm_cuda_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                       const chm_tensor *dy, const chm_scan_args *a);
chm_status chm_cuda_causal_conv1d_fwd(chm_backend *be, const chm_tensor *out,
                                      const chm_tensor *x, const chm_tensor *w,
                                      const chm_tensor *bias, bool silu);
chm_status chm_cuda_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx,
                                      const chm_tensor *dw, const chm_tensor *dbias,
                                      const chm_tensor *dout, const chm_tensor *x,
                                      const chm_tensor *w, const chm_tensor *bias, bool silu,
                                      bool dx_set);

/* ---- layers.c: normalisation, position, activation, embedding, elementwise ---- */
chm_status chm_cuda_rmsnorm_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                                const chm_tensor *x, const chm_tensor *w, double eps);
chm_status chm_cuda_rmsnorm_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                                const chm_tensor *dout, const chm_tensor *x,
                                const chm_tensor *w, const chm_tensor *rstd);
chm_status chm_cuda_rope_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                             double theta, int64_t pos_offset);
chm_status chm_cuda_rope_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                             double theta, int64_t pos_offset);
chm_status chm_cuda_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                               const chm_tensor *up, const chm_tensor *counts);
chm_status chm_cuda_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                               const chm_tensor *dout, const chm_tensor *gate,
                               const chm_tensor *up, bool accumulate, const chm_tensor *counts);
chm_status chm_cuda_embedding_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *ids,
                                  const chm_tensor *table);
chm_status chm_cuda_embedding_bwd(chm_backend *be, const chm_tensor *dtable,
                                  const chm_tensor *dout, const chm_tensor *ids);
chm_status chm_cuda_add(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                        const chm_tensor *b);
chm_status chm_cuda_scale(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                          double alpha);
chm_status chm_cuda_axpy(chm_backend *be, const chm_tensor *y, const chm_tensor *x,
                         double alpha);
chm_status chm_cuda_sum_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x);

/* ---- routing.c: MoE/MoD routing and row moves ---- */
chm_status chm_cuda_router_topk(chm_backend *be, const chm_tensor *gates, const chm_tensor *idx,
                                const chm_tensor *probs, const chm_tensor *slot_token,
                                const chm_tensor *slot_ref, const chm_tensor *counts,
                                const chm_tensor *logits, chm_router_score score,
                                bool renormalize);
chm_status chm_cuda_router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                                    const chm_tensor *dgates, const chm_tensor *probs,
                                    const chm_tensor *idx, chm_router_score score,
                                    bool renormalize);
chm_status chm_cuda_select_topk(chm_backend *be, const chm_tensor *idx,
                                const chm_tensor *scores, bool flat);
chm_status chm_cuda_gather_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                const chm_tensor *idx);
chm_status chm_cuda_scatter_add_rows(chm_backend *be, const chm_tensor *out,
                                     const chm_tensor *x, const chm_tensor *idx,
                                     const chm_tensor *weights, int max_repeat);

/* ---- training.c: loss, optimizer, norm ---- */
chm_status chm_cuda_cross_entropy(chm_backend *be, const chm_tensor *losses,
                                  const chm_tensor *dlogits, const chm_tensor *logits,
                                  const chm_tensor *targets, double grad_scale);
chm_status chm_cuda_adamw_step(chm_backend *be, const chm_tensor *param, const chm_tensor *grad,
                               const chm_tensor *m, const chm_tensor *v,
                               const chm_tensor *param_lowp, const chm_adamw_args *args);
chm_status chm_cuda_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x);

/* ---- model_ops.c: ops added for the model (row scaling, exp, aux losses, decoding) ---- */
chm_status chm_cuda_row_scale_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                  const chm_tensor *s, bool sigmoid);
chm_status chm_cuda_row_scale_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                                  const chm_tensor *dout, const chm_tensor *x,
                                  const chm_tensor *s, bool sigmoid, bool set);
chm_status chm_cuda_exp_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                            double alpha);
chm_status chm_cuda_exp_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                            const chm_tensor *out);
chm_status chm_cuda_bce_logits(chm_backend *be, const chm_tensor *losses,
                               const chm_tensor *dlogits, const chm_tensor *logits,
                               const chm_tensor *targets, double grad_scale);
chm_status chm_cuda_moe_aux(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                            const chm_tensor *logits, const chm_tensor *idx,
                            double balance_scale, double z_scale);
chm_status chm_cuda_attention_decode(chm_backend *be, const chm_tensor *out, const chm_tensor *q,
                                     const chm_tensor *k, const chm_tensor *v, double scale);
chm_status chm_cuda_selective_scan_step(chm_backend *be, const chm_tensor *y, const chm_tensor *h,
                                        const chm_scan_args *a);

/* ---- comm_ptr.c: for the NCCL transport of src/comm ---- */
/* Device address of t's first element, the backend's one stream, its device index. */
void *chm_cuda_comm_ptr(const chm_tensor *t);
cudaStream_t chm_cuda_comm_stream(chm_backend *be);
int chm_cuda_comm_device(chm_backend *be);
/* A second non-blocking stream on the backend's device (the comm stream of collectives that
 * overlap the compute; ordered against the backend's stream by events); the device becomes
 * current, so events created next belong to it. The caller destroys the stream. */
cudaError_t chm_cuda_comm_side_stream(chm_backend *be, cudaStream_t *out);

#endif
