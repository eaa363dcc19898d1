/*
 * cpu.h: the reference backend's internal interface.
 *
 * Every op of backend.h has a chm_cpu_<op> here with the same signature as
 * its table entry. Each op family lives in its own file named after it
 * (matmul.c, attention.c, selective_scan.c, ...). Float kernels run in f32
 * and f64 (the dtype of their tensors) and answer CHM_ERR_DTYPE for 16-bit
 * ones; the op table reaches them through the chm_cpu_lowp_<op> adapters of
 * lowp.c, which run bf16/f16 tensors as f32 copies rounded back at the end.
 * Shapes and dtypes were checked by the shared layer before these run.
 * The code is plain loops plus OpenMP and CBLAS: obviously correct first.
 */
#ifndef CHIMERA_BACKEND_CPU_H
#define CHIMERA_BACKEND_CPU_H

#include "chimera/backend.h"

/* Host address of a tensor's first element. */
static inline void *chm_cpu_ptr(const chm_tensor *t) {
    return (char *)t->buf->host + t->offset;
}

/* dst[rows, cols] = t's f32/f64 elements at `at + r*stride + c`, as doubles. */
void chm_cpu_load_rows(double *dst, const chm_tensor *t, int64_t at, int64_t rows, int64_t cols,
                       int64_t stride);
/* The inverse of chm_cpu_load_rows: set (add false) or add into t, rounding once. */
void chm_cpu_store_rows(const chm_tensor *t, int64_t at, int64_t rows, int64_t cols,
                        int64_t stride, const double *src, bool add);
/* Scratch of `per` doubles for each thread of the next parallel region (free()), or NULL. */
double *chm_cpu_thread_scratch(int64_t per);
/* This thread's slice of chm_cpu_thread_scratch's memory. */
double *chm_cpu_my_scratch(double *mem, int64_t per);

/* Whether a loop of about `work` multiply-adds is worth an OpenMP team: below
 * this, waking and joining the threads costs more than it saves. */
#define PAR_WORTH(work) ((work) > (int64_t)1 << 20)

/* Raise CHM_ERR_DTYPE for a dtype a kernel cannot compute in (the kernels' guard:
 * through the op table, 16-bit tensors reach them as f32 copies, see lowp.c). */
chm_status chm_cpu_bad_dtype(chm_backend *be, const char *op, chm_dtype dt);

/* Open the cpu backend (registry entry). */
chm_status chm_cpu_open(const chm_backend_options *opts, chm_backend **out, chm_err *err);

/* memory (backend_cpu.c) */
chm_status chm_cpu_buffer_alloc(chm_backend *be, size_t bytes, chm_buffer **out);
void chm_cpu_buffer_free(chm_backend *be, chm_buffer *buf);
chm_status chm_cpu_upload(chm_backend *be, const chm_tensor *dst, const void *src);
chm_status chm_cpu_download(chm_backend *be, const chm_tensor *src, void *dst);
chm_status chm_cpu_sync(chm_backend *be);
chm_status chm_cpu_event_create(chm_backend *be, chm_event **out);
chm_status chm_cpu_event_record(chm_backend *be, chm_event *ev);
chm_status chm_cpu_event_elapsed_ms(chm_backend *be, chm_event *start, chm_event *stop,
                                    double *ms);
void chm_cpu_event_destroy(chm_backend *be, chm_event *ev);

/* fill, copy, cast (convert.c) */
chm_status chm_cpu_fill(chm_backend *be, const chm_tensor *t, double value);
chm_status chm_cpu_copy(chm_backend *be, const chm_tensor *dst, const chm_tensor *src);
chm_status chm_cpu_cast(chm_backend *be, const chm_tensor *dst, const chm_tensor *src);

/* matmul.c */
chm_status chm_cpu_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                          const chm_tensor *B, const chm_tensor *bias, bool trans_a,
                          bool trans_b, double alpha, double beta);
chm_status chm_cpu_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                  const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                                  bool trans_b, double alpha, double beta, bool tail_zero);

/* attention.c */
chm_status chm_cpu_attention_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *lse,
                                 const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                 double scale);
chm_status chm_cpu_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                                 const chm_tensor *dv, const chm_tensor *dout,
                                 const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                 const chm_tensor *out, const chm_tensor *lse, double scale);

/* selective_scan.c */
chm_status chm_cpu_selective_scan_fwd(chm_backend *be, const chm_tensor *y,
                                      const chm_scan_args *a);
chm_status chm_cpu_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                      const chm_tensor *dy, const chm_scan_args *a);

/* causal_conv1d.c */
chm_status chm_cpu_causal_conv1d_fwd(chm_backend *be, const chm_tensor *out,
                                     const chm_tensor *x, const chm_tensor *w,
                                     const chm_tensor *bias, bool silu);
chm_status chm_cpu_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx,
                                     const chm_tensor *dw, const chm_tensor *dbias,
                                     const chm_tensor *dout, const chm_tensor *x,
                                     const chm_tensor *w, const chm_tensor *bias, bool silu,
                                     bool dx_set);

/* rmsnorm.c */
chm_status chm_cpu_rmsnorm_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                               const chm_tensor *x, const chm_tensor *w, double eps);
chm_status chm_cpu_rmsnorm_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                               const chm_tensor *dout, const chm_tensor *x,
                               const chm_tensor *w, const chm_tensor *rstd);

/* rope.c */
chm_status chm_cpu_rope_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                            double theta, int64_t pos_offset);
chm_status chm_cpu_rope_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                            double theta, int64_t pos_offset);

/* swiglu.c */
chm_status chm_cpu_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                              const chm_tensor *up, const chm_tensor *counts);
chm_status chm_cpu_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                              const chm_tensor *dout, const chm_tensor *gate,
                              const chm_tensor *up, bool accumulate, const chm_tensor *counts);

/* embedding.c */
chm_status chm_cpu_embedding_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *ids,
                                 const chm_tensor *table);
chm_status chm_cpu_embedding_bwd(chm_backend *be, const chm_tensor *dtable,
                                 const chm_tensor *dout, const chm_tensor *ids);

/* elementwise.c */
chm_status chm_cpu_add(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                       const chm_tensor *b);
chm_status chm_cpu_scale(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                         double alpha);
chm_status chm_cpu_axpy(chm_backend *be, const chm_tensor *y, const chm_tensor *x, double alpha);
chm_status chm_cpu_sum_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x);

/* router.c */
chm_status chm_cpu_router_topk(chm_backend *be, const chm_tensor *gates, const chm_tensor *idx,
                               const chm_tensor *probs, const chm_tensor *slot_token,
                               const chm_tensor *slot_ref, const chm_tensor *counts,
                               const chm_tensor *logits, chm_router_score score,
                               bool renormalize);
chm_status chm_cpu_router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                                   const chm_tensor *dgates, const chm_tensor *probs,
                                   const chm_tensor *idx, chm_router_score score,
                                   bool renormalize);
chm_status chm_cpu_select_topk(chm_backend *be, const chm_tensor *idx, const chm_tensor *scores,
                               bool flat);

/* rows.c */
chm_status chm_cpu_gather_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                               const chm_tensor *idx);
chm_status chm_cpu_scatter_add_rows(chm_backend *be, const chm_tensor *out,
                                    const chm_tensor *x, const chm_tensor *idx,
                                    const chm_tensor *weights, int max_repeat);

/* cross_entropy.c */
chm_status chm_cpu_cross_entropy(chm_backend *be, const chm_tensor *losses,
                                 const chm_tensor *dlogits, const chm_tensor *logits,
                                 const chm_tensor *targets, double grad_scale);

/* adamw.c */
chm_status chm_cpu_adamw_step(chm_backend *be, const chm_tensor *param, const chm_tensor *grad,
                              const chm_tensor *m, const chm_tensor *v,
                              const chm_tensor *param_lowp, const chm_adamw_args *args);

/* sum_squares.c */
chm_status chm_cpu_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x);

/* row_scale.c */
chm_status chm_cpu_row_scale_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                 const chm_tensor *s, bool sigmoid);
chm_status chm_cpu_row_scale_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                                 const chm_tensor *dout, const chm_tensor *x,
                                 const chm_tensor *s, bool sigmoid, bool set);

/* exp.c */
chm_status chm_cpu_exp_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                           double alpha);
chm_status chm_cpu_exp_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                           const chm_tensor *out);

/* bce_logits.c */
chm_status chm_cpu_bce_logits(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                              const chm_tensor *logits, const chm_tensor *targets,
                              double grad_scale);

/* moe_aux.c */
chm_status chm_cpu_moe_aux(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                           const chm_tensor *logits, const chm_tensor *idx, double balance_scale,
                           double z_scale);

/* attention_decode.c */
chm_status chm_cpu_attention_decode(chm_backend *be, const chm_tensor *out, const chm_tensor *q,
                                    const chm_tensor *k, const chm_tensor *v, double scale);

/* selective_scan_step.c */
chm_status chm_cpu_selective_scan_step(chm_backend *be, const chm_tensor *y, const chm_tensor *h,
                                       const chm_scan_args *a);

/*
 * lowp.c: one adapter per float op, same signature as chm_cpu_<op>. bf16/f16
 * arguments become f32 host copies for the kernel, written back rounded to
 * nearest even; f32/f64 calls reach the kernel unchanged. The op table uses these.
 */
chm_status chm_cpu_lowp_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                               const chm_tensor *B, const chm_tensor *bias, bool trans_a,
                               bool trans_b, double alpha, double beta);
chm_status chm_cpu_lowp_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                       const chm_tensor *B, const chm_tensor *counts,
                                       bool trans_a, bool trans_b, double alpha, double beta,
                                       bool tail_zero);
chm_status chm_cpu_lowp_attention_fwd(chm_backend *be, const chm_tensor *out,
                                      const chm_tensor *lse, const chm_tensor *q,
                                      const chm_tensor *k, const chm_tensor *v, double scale);
chm_status chm_cpu_lowp_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                                      const chm_tensor *dv, const chm_tensor *dout,
                                      const chm_tensor *q, const chm_tensor *k,
                                      const chm_tensor *v, const chm_tensor *out,
                                      const chm_tensor *lse, double scale);
chm_status chm_cpu_lowp_attention_decode(chm_backend *be, const chm_tensor *out,
                                         const chm_tensor *q, const chm_tensor *k,
                                         const chm_tensor *v, double scale);
chm_status chm_cpu_lowp_selective_scan_fwd(chm_backend *be, const chm_tensor *y,
                                           const chm_scan_args *a);
chm_status chm_cpu_lowp_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                           const chm_tensor *dy, const chm_scan_args *a);
chm_status chm_cpu_lowp_selective_scan_step(chm_backend *be, const chm_tensor *y,
                                            const chm_tensor *h, const chm_scan_args *a);
chm_status chm_cpu_lowp_causal_conv1d_fwd(chm_backend *be, const chm_tensor *out,
                                          const chm_tensor *x, const chm_tensor *w,
                                          const chm_tensor *bias, bool silu);
chm_status chm_cpu_lowp_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx,
                                          const chm_tensor *dw, const chm_tensor *dbias,
                                          const chm_tensor *dout, const chm_tensor *x,
                                          const chm_tensor *w, const chm_tensor *bias,
                                          bool silu, bool dx_set);
chm_status chm_cpu_lowp_rmsnorm_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                                    const chm_tensor *x, const chm_tensor *w, double eps);
chm_status chm_cpu_lowp_rmsnorm_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                                    const chm_tensor *dout, const chm_tensor *x,
                                    const chm_tensor *w, const chm_tensor *rstd);
chm_status chm_cpu_lowp_rope_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                 double theta, int64_t pos_offset);
chm_status chm_cpu_lowp_rope_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                                 double theta, int64_t pos_offset);
chm_status chm_cpu_lowp_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                                   const chm_tensor *up, const chm_tensor *counts);
chm_status chm_cpu_lowp_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                                   const chm_tensor *dout, const chm_tensor *gate,
                                   const chm_tensor *up, bool accumulate, const chm_tensor *counts);
chm_status chm_cpu_lowp_embedding_fwd(chm_backend *be, const chm_tensor *out,
                                      const chm_tensor *ids, const chm_tensor *table);
chm_status chm_cpu_lowp_embedding_bwd(chm_backend *be, const chm_tensor *dtable,
                                      const chm_tensor *dout, const chm_tensor *ids);
chm_status chm_cpu_lowp_add(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                            const chm_tensor *b);
chm_status chm_cpu_lowp_scale(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                              double alpha);
chm_status chm_cpu_lowp_axpy(chm_backend *be, const chm_tensor *y, const chm_tensor *x,
                             double alpha);
chm_status chm_cpu_lowp_sum_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x);
chm_status chm_cpu_lowp_row_scale_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                      const chm_tensor *s, bool sigmoid);
chm_status chm_cpu_lowp_row_scale_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                                      const chm_tensor *dout, const chm_tensor *x,
                                      const chm_tensor *s, bool sigmoid, bool set);
chm_status chm_cpu_lowp_exp_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                double alpha);
chm_status chm_cpu_lowp_exp_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                                const chm_tensor *out);
chm_status chm_cpu_lowp_router_topk(chm_backend *be, const chm_tensor *gates,
                                    const chm_tensor *idx, const chm_tensor *probs,
                                    const chm_tensor *slot_token, const chm_tensor *slot_ref,
                                    const chm_tensor *counts, const chm_tensor *logits,
                                    chm_router_score score, bool renormalize);
chm_status chm_cpu_lowp_router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                                        const chm_tensor *dgates, const chm_tensor *probs,
                                        const chm_tensor *idx, chm_router_score score,
                                        bool renormalize);
chm_status chm_cpu_lowp_select_topk(chm_backend *be, const chm_tensor *idx,
                                    const chm_tensor *scores, bool flat);
chm_status chm_cpu_lowp_gather_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                    const chm_tensor *idx);
chm_status chm_cpu_lowp_scatter_add_rows(chm_backend *be, const chm_tensor *out,
                                         const chm_tensor *x, const chm_tensor *idx,
                                         const chm_tensor *weights, int max_repeat);
chm_status chm_cpu_lowp_cross_entropy(chm_backend *be, const chm_tensor *losses,
                                      const chm_tensor *dlogits, const chm_tensor *logits,
                                      const chm_tensor *targets, double grad_scale);
chm_status chm_cpu_lowp_bce_logits(chm_backend *be, const chm_tensor *losses,
                                   const chm_tensor *dlogits, const chm_tensor *logits,
                                   const chm_tensor *targets, double grad_scale);
chm_status chm_cpu_lowp_moe_aux(chm_backend *be, const chm_tensor *losses,
                                const chm_tensor *dlogits, const chm_tensor *logits,
                                const chm_tensor *idx, double balance_scale, double z_scale);
chm_status chm_cpu_lowp_adamw_step(chm_backend *be, const chm_tensor *param,
                                   const chm_tensor *grad, const chm_tensor *m,
                                   const chm_tensor *v, const chm_tensor *param_lowp,
                                   const chm_adamw_args *args);
chm_status chm_cpu_lowp_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x);

#endif
