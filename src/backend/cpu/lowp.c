/*
 * lowp.c: bf16 and f16 tensors on the cpu backend (storage only, f32 compute).
 *
 * Every float op of the cpu table goes through an adapter here (backend_cpu.c
 * points at them). An adapter hands each float tensor argument to a per-call
 * "lowp frame": a bf16/f16 tensor gets an f32 host copy (inputs AND outputs,
 * since backward ops accumulate into theirs and matmul reads C when beta != 0)
 * and the adapter receives an f32 view of it; any other tensor (f32, f64, the
 * stats tensors that chm_dtype_stats makes f32, I32) comes back as the
 * caller's own pointer, untouched. The adapter then calls the f32/f64 kernel
 * (chm_cpu_<op>) on what it got, and the frame finishes by rounding every copy
 * the op may have written back into its 16-bit tensor (round to nearest even,
 * through chm_cpu_cast) and freeing the copies. So a 16-bit op gives exactly
 * the f32 op's result on the same values, rounded once at the op boundary.
 * When no argument is 16-bit the frame allocates nothing and the kernel runs
 * on the caller's tensors: the f32/f64 paths are unchanged.
 *
 * Aliasing: tensors with the same bytes (same buffer, offset, dtype and element
 * count, e.g. add's out == a, cross_entropy's dlogits == logits) share ONE copy
 * whose views also share one buffer and offset, so the kernel sees the same
 * aliasing it would see on f32 tensors. The wrappers forbid every other
 * overlap between an output and another tensor, so separate copies are safe.
 * If the kernel fails, nothing is written back: outputs keep their contents.
 *
 * adamw_step is the one exception to "f32 copies": its grad (bf16/f16) is
 * widened to the master param's dtype (f32 or f64, exactly either way), and
 * param_lowp passes through because the kernel writes the rounded copy itself.
 */
#include <stdlib.h>

#include "cpu.h"

/* The most tensor arguments an op has (selective_scan_bwd: 8 inputs, dy, 8 grads). */
#define LOWP_MAX 20

/* One f32 (or f64) host copy of a 16-bit tensor's bytes. */
typedef struct lowp_copy {
    const chm_tensor *orig;  /* the 16-bit tensor first seen with these bytes */
    chm_buffer buf;          /* the copy's host memory (aligned_alloc) as a cpu buffer */
    bool written;            /* the op may write it: round it back at the end */
} lowp_copy;

/* The copies and views of one op call. Lives on the adapter's stack. */
typedef struct lowp_frame {
    chm_backend *be;
    chm_dtype to;                  /* dtype of the copies: f32 (f64 for adamw's f64 grad) */
    chm_status rc;                 /* first failure (no memory), or CHM_OK */
    int ncopy, nview;
    lowp_copy copy[LOWP_MAX];
    chm_tensor view[LOWP_MAX];     /* what the kernel receives; pointers stay valid */
} lowp_frame;

/* Start a frame whose copies have dtype `to`. Only the counters need setting. */
static void lowp_begin(lowp_frame *f, chm_backend *be, chm_dtype to) {
    f->be = be;
    f->to = to;
    f->rc = CHM_OK;
    f->ncopy = f->nview = 0;
}

static bool is_lowp(const chm_tensor *t) {
    return t && (t->dtype == CHM_BF16 || t->dtype == CHM_F16);
}

/* A view of copy c with t's shape (t has c's bytes, possibly another shape). */
static chm_tensor copy_view(lowp_copy *c, chm_dtype to, const chm_tensor *t) {
    return chm_tensor_make(&c->buf, 0, to, t->ndim, t->shape);
}

/* The copy already made of t's bytes, or NULL. */
static lowp_copy *find_copy(lowp_frame *f, const chm_tensor *t) {
    for (int i = 0; i < f->ncopy; i++) {
        const chm_tensor *o = f->copy[i].orig;
        if (o->buf == t->buf && o->offset == t->offset && o->dtype == t->dtype &&
            chm_tensor_numel(o) == chm_tensor_numel(t))
            return &f->copy[i];
    }
    return NULL;
}

/* A new copy of t, converted from t's current contents; NULL (and f->rc) on failure. */
static lowp_copy *new_copy(lowp_frame *f, const chm_tensor *t) {
    size_t bytes = (size_t)chm_tensor_numel(t) * chm_dtype_size(f->to);
    /* 64-byte aligned like the cpu's own buffers, so CBLAS sees the same layout */
    void *mem = aligned_alloc(64, (bytes + 64) / 64 * 64);
    if (!mem) {
        f->rc = CHM_ERR(&f->be->err, CHM_ERR_NOMEM,
                        "cpu: no memory for an f32 copy of a %s tensor (%zu bytes)",
                        chm_dtype_name(t->dtype), bytes);
        return NULL;
    }
    lowp_copy *c = &f->copy[f->ncopy++];
    *c = (lowp_copy){.orig = t, .buf = {.backend = f->be, .size = bytes, .host = mem}};
    chm_tensor v = copy_view(c, f->to, t);
    chm_cpu_cast(f->be, &v, t);
    return c;
}

/*
 * The view the kernel receives for t: NULL when t is absent, not 16-bit, or a
 * failure happened (then the adapter does not call the kernel). `written`
 * marks the copy for rounding back.
 */
static chm_tensor *lowp_view(lowp_frame *f, const chm_tensor *t, bool written) {
    if (!is_lowp(t) || f->rc) return NULL;
    if (f->nview == LOWP_MAX) { /* ncopy <= nview, so this bounds both */
        f->rc = CHM_ERR(&f->be->err, CHM_ERR_INTERNAL,
                        "cpu 16-bit adapter: more than %d tensor arguments", LOWP_MAX);
        return NULL;
    }
    lowp_copy *c = find_copy(f, t);
    if (!c) c = new_copy(f, t);
    if (!c) return NULL;
    c->written |= written;
    chm_tensor *v = &f->view[f->nview++];
    *v = copy_view(c, f->to, t);
    return v;
}

/* An argument the op only reads. */
static const chm_tensor *lowp_in(lowp_frame *f, const chm_tensor *t) {
    chm_tensor *v = lowp_view(f, t, false);
    return v ? v : t;
}

/* An argument the op writes (or accumulates into). */
static const chm_tensor *lowp_out(lowp_frame *f, const chm_tensor *t) {
    chm_tensor *v = lowp_view(f, t, true);
    return v ? v : t;
}

/* lowp_out for the non-const gradient pointers of chm_scan_grads. */
static chm_tensor *lowp_grad(lowp_frame *f, chm_tensor *t) {
    chm_tensor *v = lowp_view(f, t, true);
    return v ? v : t;
}

/* Finish: when the op succeeded, round written copies back; free all; return rc. */
static chm_status lowp_end(lowp_frame *f, chm_status rc) {
    for (int i = 0; i < f->ncopy; i++) {
        lowp_copy *c = &f->copy[i];
        if (rc == CHM_OK && c->written) {
            chm_tensor v = copy_view(c, f->to, c->orig);
            chm_cpu_cast(f->be, c->orig, &v);
        }
        free(c->buf.host);
    }
    return rc;
}

/* Run the kernel call unless the frame failed, then finish the frame. */
#define LOWP_RUN(f, call) lowp_end(&(f), (f).rc ? (f).rc : (call))

/* The scan's inputs, each through the frame (absent ones stay NULL); y_saved is the caller's
   to route (the forward writes it, the backward does not read it on the cpu). */
static chm_scan_args lowp_scan_args(lowp_frame *f, const chm_scan_args *a) {
    chm_scan_args r = *a;
    r.u = lowp_in(f, a->u);
    r.delta = lowp_in(f, a->delta);
    r.A = lowp_in(f, a->A);
    r.Bm = lowp_in(f, a->Bm);
    r.Cm = lowp_in(f, a->Cm);
    r.D = lowp_in(f, a->D);
    r.z = lowp_in(f, a->z);
    r.delta_bias = lowp_in(f, a->delta_bias);
    r.y_saved = NULL;
    return r;
}

/* The scan's gradients, each through the frame as an output. */
static chm_scan_grads lowp_scan_grads(lowp_frame *f, const chm_scan_grads *g) {
    chm_scan_grads r = {
        .du = lowp_grad(f, g->du),   .ddelta = lowp_grad(f, g->ddelta),
        .dA = lowp_grad(f, g->dA),   .dBm = lowp_grad(f, g->dBm),
        .dCm = lowp_grad(f, g->dCm), .dD = lowp_grad(f, g->dD),
        .dz = lowp_grad(f, g->dz),   .ddelta_bias = lowp_grad(f, g->ddelta_bias),
    };
    return r;
}

/* ---- matmul ---- */

chm_status chm_cpu_lowp_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                               const chm_tensor *B, const chm_tensor *bias, bool trans_a,
                               bool trans_b, double alpha, double beta) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *c = lowp_out(&f, C), *a = lowp_in(&f, A), *b = lowp_in(&f, B),
                     *bi = lowp_in(&f, bias);
    return LOWP_RUN(f, chm_cpu_matmul(be, c, a, b, bi, trans_a, trans_b, alpha, beta));
}

chm_status chm_cpu_lowp_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                       const chm_tensor *B, const chm_tensor *counts,
                                       bool trans_a, bool trans_b, double alpha, double beta,
                                       bool tail_zero) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *c = lowp_out(&f, C), *a = lowp_in(&f, A), *b = lowp_in(&f, B);
    return LOWP_RUN(f, chm_cpu_matmul_grouped(be, c, a, b, counts, trans_a, trans_b, alpha, beta,
                                              tail_zero));
}

/* ---- attention ---- */

chm_status chm_cpu_lowp_attention_fwd(chm_backend *be, const chm_tensor *out,
                                      const chm_tensor *lse, const chm_tensor *q,
                                      const chm_tensor *k, const chm_tensor *v, double scale) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *q2 = lowp_in(&f, q), *k2 = lowp_in(&f, k),
                     *v2 = lowp_in(&f, v);
    return LOWP_RUN(f, chm_cpu_attention_fwd(be, o, lse, q2, k2, v2, scale));
}

chm_status chm_cpu_lowp_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                                      const chm_tensor *dv, const chm_tensor *dout,
                                      const chm_tensor *q, const chm_tensor *k,
                                      const chm_tensor *v, const chm_tensor *out,
                                      const chm_tensor *lse, double scale) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dq2 = lowp_out(&f, dq), *dk2 = lowp_out(&f, dk), *dv2 = lowp_out(&f, dv),
                     *do2 = lowp_in(&f, dout), *q2 = lowp_in(&f, q), *k2 = lowp_in(&f, k),
                     *v2 = lowp_in(&f, v), *o2 = lowp_in(&f, out);
    return LOWP_RUN(f, chm_cpu_attention_bwd(be, dq2, dk2, dv2, do2, q2, k2, v2, o2, lse, scale));
}

chm_status chm_cpu_lowp_attention_decode(chm_backend *be, const chm_tensor *out,
                                         const chm_tensor *q, const chm_tensor *k,
                                         const chm_tensor *v, double scale) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *q2 = lowp_in(&f, q), *k2 = lowp_in(&f, k),
                     *v2 = lowp_in(&f, v);
    return LOWP_RUN(f, chm_cpu_attention_decode(be, o, q2, k2, v2, scale));
}

/* ---- Mamba ---- */

chm_status chm_cpu_lowp_selective_scan_fwd(chm_backend *be, const chm_tensor *y,
                                           const chm_scan_args *a) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *y2 = lowp_out(&f, y);
    chm_scan_args a2 = lowp_scan_args(&f, a);
    a2.y_saved = lowp_out(&f, a->y_saved);
    return LOWP_RUN(f, chm_cpu_selective_scan_fwd(be, y2, &a2));
}

chm_status chm_cpu_lowp_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                           const chm_tensor *dy, const chm_scan_args *a) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    chm_scan_grads g2 = lowp_scan_grads(&f, g);
    const chm_tensor *dy2 = lowp_in(&f, dy);
    chm_scan_args a2 = lowp_scan_args(&f, a);
    return LOWP_RUN(f, chm_cpu_selective_scan_bwd(be, &g2, dy2, &a2));
}

chm_status chm_cpu_lowp_selective_scan_step(chm_backend *be, const chm_tensor *y,
                                            const chm_tensor *h, const chm_scan_args *a) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *y2 = lowp_out(&f, y), *h2 = lowp_out(&f, h);
    chm_scan_args a2 = lowp_scan_args(&f, a);
    return LOWP_RUN(f, chm_cpu_selective_scan_step(be, y2, h2, &a2));
}

chm_status chm_cpu_lowp_causal_conv1d_fwd(chm_backend *be, const chm_tensor *out,
                                          const chm_tensor *x, const chm_tensor *w,
                                          const chm_tensor *bias, bool silu) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *x2 = lowp_in(&f, x), *w2 = lowp_in(&f, w),
                     *b2 = lowp_in(&f, bias);
    return LOWP_RUN(f, chm_cpu_causal_conv1d_fwd(be, o, x2, w2, b2, silu));
}

chm_status chm_cpu_lowp_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx,
                                          const chm_tensor *dw, const chm_tensor *dbias,
                                          const chm_tensor *dout, const chm_tensor *x,
                                          const chm_tensor *w, const chm_tensor *bias,
                                          bool silu, bool dx_set) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dx2 = lowp_out(&f, dx), *dw2 = lowp_out(&f, dw),
                     *db2 = lowp_out(&f, dbias), *do2 = lowp_in(&f, dout), *x2 = lowp_in(&f, x),
                     *w2 = lowp_in(&f, w), *b2 = lowp_in(&f, bias);
    return LOWP_RUN(f, chm_cpu_causal_conv1d_bwd(be, dx2, dw2, db2, do2, x2, w2, b2, silu,
                                                 dx_set));
}

/* ---- normalisation, position, activation, embedding ---- */

chm_status chm_cpu_lowp_rmsnorm_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                                    const chm_tensor *x, const chm_tensor *w, double eps) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *x2 = lowp_in(&f, x), *w2 = lowp_in(&f, w);
    return LOWP_RUN(f, chm_cpu_rmsnorm_fwd(be, o, rstd, x2, w2, eps));
}

chm_status chm_cpu_lowp_rmsnorm_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                                    const chm_tensor *dout, const chm_tensor *x,
                                    const chm_tensor *w, const chm_tensor *rstd) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dx2 = lowp_out(&f, dx), *dw2 = lowp_out(&f, dw), *do2 = lowp_in(&f, dout),
                     *x2 = lowp_in(&f, x), *w2 = lowp_in(&f, w);
    return LOWP_RUN(f, chm_cpu_rmsnorm_bwd(be, dx2, dw2, do2, x2, w2, rstd));
}

chm_status chm_cpu_lowp_rope_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                 double theta, int64_t pos_offset) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *x2 = lowp_in(&f, x);
    return LOWP_RUN(f, chm_cpu_rope_fwd(be, o, x2, theta, pos_offset));
}

chm_status chm_cpu_lowp_rope_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                                 double theta, int64_t pos_offset) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dx2 = lowp_out(&f, dx), *do2 = lowp_in(&f, dout);
    return LOWP_RUN(f, chm_cpu_rope_bwd(be, dx2, do2, theta, pos_offset));
}

chm_status chm_cpu_lowp_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                                   const chm_tensor *up, const chm_tensor *counts) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *g = lowp_in(&f, gate), *u = lowp_in(&f, up);
    return LOWP_RUN(f, chm_cpu_swiglu_fwd(be, o, g, u, counts));
}

chm_status chm_cpu_lowp_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                                   const chm_tensor *dout, const chm_tensor *gate,
                                   const chm_tensor *up, bool accumulate,
                                   const chm_tensor *counts) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dg = lowp_out(&f, dgate), *du = lowp_out(&f, dup), *d = lowp_in(&f, dout),
                     *g = lowp_in(&f, gate), *u = lowp_in(&f, up);
    return LOWP_RUN(f, chm_cpu_swiglu_bwd(be, dg, du, d, g, u, accumulate, counts));
}

chm_status chm_cpu_lowp_embedding_fwd(chm_backend *be, const chm_tensor *out,
                                      const chm_tensor *ids, const chm_tensor *table) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *t = lowp_in(&f, table);
    return LOWP_RUN(f, chm_cpu_embedding_fwd(be, o, ids, t));
}

chm_status chm_cpu_lowp_embedding_bwd(chm_backend *be, const chm_tensor *dtable,
                                      const chm_tensor *dout, const chm_tensor *ids) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dt = lowp_out(&f, dtable), *d = lowp_in(&f, dout);
    return LOWP_RUN(f, chm_cpu_embedding_bwd(be, dt, d, ids));
}

/* ---- elementwise ---- */

chm_status chm_cpu_lowp_add(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                            const chm_tensor *b) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *a2 = lowp_in(&f, a), *b2 = lowp_in(&f, b);
    return LOWP_RUN(f, chm_cpu_add(be, o, a2, b2));
}

chm_status chm_cpu_lowp_scale(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                              double alpha) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *x2 = lowp_in(&f, x);
    return LOWP_RUN(f, chm_cpu_scale(be, o, x2, alpha));
}

chm_status chm_cpu_lowp_axpy(chm_backend *be, const chm_tensor *y, const chm_tensor *x,
                             double alpha) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *y2 = lowp_out(&f, y), *x2 = lowp_in(&f, x);
    return LOWP_RUN(f, chm_cpu_axpy(be, y2, x2, alpha));
}

chm_status chm_cpu_lowp_sum_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *x2 = lowp_in(&f, x);
    return LOWP_RUN(f, chm_cpu_sum_rows(be, o, x2));
}

chm_status chm_cpu_lowp_row_scale_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                      const chm_tensor *s, bool sigmoid) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *x2 = lowp_in(&f, x), *s2 = lowp_in(&f, s);
    return LOWP_RUN(f, chm_cpu_row_scale_fwd(be, o, x2, s2, sigmoid));
}

chm_status chm_cpu_lowp_row_scale_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                                      const chm_tensor *dout, const chm_tensor *x,
                                      const chm_tensor *s, bool sigmoid, bool set) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dx2 = lowp_out(&f, dx), *ds2 = lowp_out(&f, ds), *d = lowp_in(&f, dout),
                     *x2 = lowp_in(&f, x), *s2 = lowp_in(&f, s);
    return LOWP_RUN(f, chm_cpu_row_scale_bwd(be, dx2, ds2, d, x2, s2, sigmoid, set));
}

chm_status chm_cpu_lowp_exp_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                double alpha) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *x2 = lowp_in(&f, x);
    return LOWP_RUN(f, chm_cpu_exp_fwd(be, o, x2, alpha));
}

chm_status chm_cpu_lowp_exp_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dout,
                                const chm_tensor *out) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dx2 = lowp_out(&f, dx), *d = lowp_in(&f, dout), *o = lowp_in(&f, out);
    return LOWP_RUN(f, chm_cpu_exp_bwd(be, dx2, d, o));
}

/* ---- routing ---- */

chm_status chm_cpu_lowp_router_topk(chm_backend *be, const chm_tensor *gates,
                                    const chm_tensor *idx, const chm_tensor *probs,
                                    const chm_tensor *slot_token, const chm_tensor *slot_ref,
                                    const chm_tensor *counts, const chm_tensor *logits,
                                    chm_router_score score, bool renormalize) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *g = lowp_out(&f, gates), *p = lowp_out(&f, probs), *l = lowp_in(&f, logits);
    return LOWP_RUN(f, chm_cpu_router_topk(be, g, idx, p, slot_token, slot_ref, counts, l, score,
                                           renormalize));
}

chm_status chm_cpu_lowp_router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                                        const chm_tensor *dgates, const chm_tensor *probs,
                                        const chm_tensor *idx, chm_router_score score,
                                        bool renormalize) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dl = lowp_out(&f, dlogits), *dg = lowp_in(&f, dgates),
                     *p = lowp_in(&f, probs);
    return LOWP_RUN(f, chm_cpu_router_topk_bwd(be, dl, dg, p, idx, score, renormalize));
}

chm_status chm_cpu_lowp_select_topk(chm_backend *be, const chm_tensor *idx,
                                    const chm_tensor *scores, bool flat) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *s = lowp_in(&f, scores);
    return LOWP_RUN(f, chm_cpu_select_topk(be, idx, s, flat));
}

chm_status chm_cpu_lowp_gather_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                    const chm_tensor *idx) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *x2 = lowp_in(&f, x);
    return LOWP_RUN(f, chm_cpu_gather_rows(be, o, x2, idx));
}

chm_status chm_cpu_lowp_scatter_add_rows(chm_backend *be, const chm_tensor *out,
                                         const chm_tensor *x, const chm_tensor *idx,
                                         const chm_tensor *weights, int max_repeat) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *o = lowp_out(&f, out), *x2 = lowp_in(&f, x), *w = lowp_in(&f, weights);
    return LOWP_RUN(f, chm_cpu_scatter_add_rows(be, o, x2, idx, w, max_repeat));
}

/* ---- losses and optimizer ---- */

chm_status chm_cpu_lowp_cross_entropy(chm_backend *be, const chm_tensor *losses,
                                      const chm_tensor *dlogits, const chm_tensor *logits,
                                      const chm_tensor *targets, double grad_scale) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dl = lowp_out(&f, dlogits), *l = lowp_in(&f, logits);
    return LOWP_RUN(f, chm_cpu_cross_entropy(be, losses, dl, l, targets, grad_scale));
}

chm_status chm_cpu_lowp_bce_logits(chm_backend *be, const chm_tensor *losses,
                                   const chm_tensor *dlogits, const chm_tensor *logits,
                                   const chm_tensor *targets, double grad_scale) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dl = lowp_out(&f, dlogits), *l = lowp_in(&f, logits),
                     *t = lowp_in(&f, targets);
    return LOWP_RUN(f, chm_cpu_bce_logits(be, losses, dl, l, t, grad_scale));
}

chm_status chm_cpu_lowp_moe_aux(chm_backend *be, const chm_tensor *losses,
                                const chm_tensor *dlogits, const chm_tensor *logits,
                                const chm_tensor *idx, double balance_scale, double z_scale) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *dl = lowp_out(&f, dlogits), *l = lowp_in(&f, logits);
    return LOWP_RUN(f, chm_cpu_moe_aux(be, losses, dl, l, idx, balance_scale, z_scale));
}

/* grad is widened to param's dtype; param_lowp is the kernel's own 16-bit output. */
chm_status chm_cpu_lowp_adamw_step(chm_backend *be, const chm_tensor *param,
                                   const chm_tensor *grad, const chm_tensor *m,
                                   const chm_tensor *v, const chm_tensor *param_lowp,
                                   const chm_adamw_args *args) {
    lowp_frame f;
    lowp_begin(&f, be, param->dtype);
    const chm_tensor *g = lowp_in(&f, grad);
    return LOWP_RUN(f, chm_cpu_adamw_step(be, param, g, m, v, param_lowp, args));
}

chm_status chm_cpu_lowp_sum_squares(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    lowp_frame f;
    lowp_begin(&f, be, CHM_F32);
    const chm_tensor *x2 = lowp_in(&f, x);
    return LOWP_RUN(f, chm_cpu_sum_squares(be, out, x2));
}
