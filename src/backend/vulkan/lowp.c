/*
 * lowp.c: bf16 and f16 tensors for the vulkan ops that compute in f32 only.
 *
 * The vulkan counterpart of cpu/lowp.c. These ops take 16-bit tensors
 * natively (their shaders load the words into f32 and round once on store;
 * vk_dtype.h, shaders/dt.glsl): matmul, matmul_grouped, fill, copy, cast;
 * adamw_step (16-bit grad) and sum_squares (16-bit x); add, scale, axpy,
 * sum_rows, exp_fwd/bwd, swiglu_fwd/bwd, rmsnorm_fwd/bwd, rope_fwd/bwd,
 * gather_rows, scatter_add_rows, embedding_fwd/bwd, cross_entropy,
 * row_scale_fwd/bwd. Every other float op (attention, the selective scan,
 * causal conv1d, the routers, bce_logits, moe_aux) gets an adapter here,
 * which chm_vk_lowp_install puts in the op table in place of the f32
 * kernel. An adapter lists its float tensor arguments with how the
 * kernel uses each (read, written, or both: backward ops accumulate) and
 * opens a "frame": each bf16/f16 argument gets an f32 scratch tensor from
 * the backend's memory pool and the adapter's own argument variable is
 * pointed at an f32 view of it. Arguments the kernel reads are filled by
 * the cast op (exact: every 16-bit value is an f32); arguments it only
 * writes (a forward's output) are not, since the kernel writes every
 * element. The f32 kernel then runs on the views, and closing the frame
 * casts every written copy back into its 16-bit tensor (round to nearest
 * even) and frees the scratch. So a 16-bit op computes exactly the f32
 * op's result on the same values, rounded once at the op boundary, as on
 * the cpu. Everything is recorded into the command stream: no host round
 * trip, and freeing a scratch right after recording is safe (vk_memory.c).
 * Arguments that are absent, f32 (stats, master weights) or I32 pass
 * through untouched; with no 16-bit argument the frame allocates nothing.
 *
 * Aliasing: arguments with the same bytes (buffer, offset, dtype, element
 * count: bce_logits' dlogits == logits) share ONE copy,
 * so the kernel sees the aliasing it would see on f32 tensors; a copy that
 * any of them reads is filled. The shared wrappers forbid every other
 * overlap between an output and another tensor. If recording the kernel
 * fails, nothing is cast back: the 16-bit outputs keep their contents.
 *
 * A device without 16-bit storage gets CHM_CAP_BF16/F16 cleared
 * (backend_vulkan.c), and a 16-bit argument reaching an adapter (or a
 * native op, vk_dtype.h) there is refused naming the op.
 *
 * Cost: one cast pass per 16-bit input, one more per output (two for an
 * accumulated one) and f32 scratch of the op's 16-bit tensors. Native
 * 16-bit shaders remove that op by op: drop the op's line in
 * chm_vk_lowp_install.
 */
#include "vk.h"

/* The most tensor arguments an op has (selective_scan_bwd: 8 grads, dy and 8 inputs). */
#define LP_MAX 20

/* How the kernel uses an argument: bits of lp_arg.use. */
enum { LP_READ = 1, LP_WRITE = 2 };

/* One float argument of an adapter: its own variable, replaced by the f32 view when 16-bit. */
typedef struct lp_arg {
    const chm_tensor **t;
    unsigned use;
} lp_arg;

#define LP_IN(x) {&(x), LP_READ}
#define LP_OUT(x) {&(x), LP_WRITE}
#define LP_ACC(x) {&(x), LP_READ | LP_WRITE}

/* The f32 scratch copy of one 16-bit tensor's bytes. */
typedef struct lp_copy {
    const chm_tensor *orig;  /* the first argument seen with these bytes */
    chm_tensor wide;         /* f32, 1-D, orig's element count */
    bool filled;             /* the cast into it is recorded */
    bool written;            /* the kernel writes it: cast back when the op succeeds */
} lp_copy;

/* The copies and views of one op call; lives on the adapter's stack (views are pointed at). */
typedef struct lp_frame {
    chm_backend *be;
    chm_status rc;           /* first failure, or CHM_OK */
    int ncopy, nview;
    lp_copy copy[LP_MAX];
    chm_tensor view[LP_MAX];
} lp_frame;

static bool is_16bit(const chm_tensor *t) {
    return t && (t->dtype == CHM_BF16 || t->dtype == CHM_F16);
}

/* The copy of t's bytes made earlier in this frame, or NULL. */
static lp_copy *copy_find(lp_frame *f, const chm_tensor *t) {
    int64_t n = chm_tensor_numel(t);
    for (int i = 0; i < f->ncopy; i++) {
        const chm_tensor *o = f->copy[i].orig;
        if (o->buf == t->buf && o->offset == t->offset && o->dtype == t->dtype &&
            chm_tensor_numel(o) == n)
            return &f->copy[i];
    }
    return NULL;
}

/* A new, unfilled copy of t; NULL with f->rc set when the device or the pool says no. */
static lp_copy *copy_new(lp_frame *f, const char *op, const chm_tensor *t) {
    chm_vk *vk = chm_vk_ctx(f->be);
    if (!vk->caps.storage16) {
        f->rc = CHM_ERR(&f->be->err, CHM_ERR_UNSUPPORTED,
                        "%s: %s tensors need 16-bit storage, which %s lacks (or "
                        "CHIMERA_VULKAN_DISABLE=16bit turned it off); use f32 on this device",
                        op, chm_dtype_name(t->dtype), vk->props.deviceName);
        return NULL;
    }
    lp_copy *c = &f->copy[f->ncopy];
    *c = (lp_copy){.orig = t};
    f->rc = chm_vk_scratch(f->be, CHM_F32, chm_tensor_numel(t), &c->wide);
    if (f->rc) return NULL;
    f->ncopy++;
    return c;
}

/*
 * Start a frame: every 16-bit argument of a[0..n) gets its copy (filled
 * when read) and its variable now points at an f32 view of it. On failure
 * f->rc is set and the adapter does not call the kernel.
 */
static void lp_open(lp_frame *f, chm_backend *be, const char *op, const lp_arg *a, int n) {
    *f = (lp_frame){.be = be};
    if (n > LP_MAX) {
        f->rc = CHM_ERR(&be->err, CHM_ERR_INTERNAL, "%s: more than %d tensors for the vulkan "
                        "16-bit adapter", op, LP_MAX);
        return;
    }
    for (int i = 0; i < n && !f->rc; i++) {
        const chm_tensor *t = *a[i].t;
        if (!is_16bit(t)) continue;
        lp_copy *c = copy_find(f, t);
        if (!c && !(c = copy_new(f, op, t))) return;
        if ((a[i].use & LP_READ) && !c->filled && chm_tensor_numel(t) > 0)
            f->rc = chm_vk_cast(be, &c->wide, c->orig);
        c->filled |= (a[i].use & LP_READ) != 0;
        c->written |= (a[i].use & LP_WRITE) != 0;
        chm_tensor *v = &f->view[f->nview++];
        *v = chm_tensor_make(c->wide.buf, 0, CHM_F32, t->ndim, t->shape);
        *a[i].t = v;
    }
}

/* Finish a frame: when the kernel succeeded, cast written copies back; free every copy. */
static chm_status lp_close(lp_frame *f, chm_status rc) {
    for (int i = 0; i < f->ncopy; i++) {
        lp_copy *c = &f->copy[i];
        if (rc == CHM_OK && c->written && chm_tensor_numel(c->orig) > 0)
            rc = chm_vk_cast(f->be, c->orig, &c->wide);
        chm_vk_scratch_free(f->be, &c->wide);
    }
    return rc;
}

/* Declare frame f and open it over the listed arguments (LP_IN / LP_OUT / LP_ACC). */
#define LP_FRAME(f, be, op, ...)                                       \
    lp_frame f;                                                        \
    lp_open(&f, be, op, (const lp_arg[]){__VA_ARGS__},                 \
            (int)(sizeof((const lp_arg[]){__VA_ARGS__}) / sizeof(lp_arg)))

/* Run the kernel call unless opening failed, then close the frame. */
#define LP_RUN(f, call) lp_close(&(f), (f).rc ? (f).rc : (call))

/* ---- attention ---- */

static chm_status attention_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *lse,
                                const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                                double scale) {
    LP_FRAME(f, be, "attention_fwd", LP_OUT(out), LP_IN(q), LP_IN(k), LP_IN(v));
    return LP_RUN(f, chm_vk_attention_fwd(be, out, lse, q, k, v, scale));
}

static chm_status attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                                const chm_tensor *dv, const chm_tensor *dout, const chm_tensor *q,
                                const chm_tensor *k, const chm_tensor *v, const chm_tensor *out,
                                const chm_tensor *lse, double scale) {
    LP_FRAME(f, be, "attention_bwd", LP_ACC(dq), LP_ACC(dk), LP_ACC(dv), LP_IN(dout), LP_IN(q),
            LP_IN(k), LP_IN(v), LP_IN(out));
    return LP_RUN(f, chm_vk_attention_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, scale));
}

static chm_status attention_decode(chm_backend *be, const chm_tensor *out, const chm_tensor *q,
                                   const chm_tensor *k, const chm_tensor *v, double scale) {
    LP_FRAME(f, be, "attention_decode", LP_OUT(out), LP_IN(q), LP_IN(k), LP_IN(v));
    return LP_RUN(f, chm_vk_attention_decode(be, out, q, k, v, scale));
}

/* ---- Mamba ---- */

/* The scan's inputs, listed from a copy of the caller's args (the copy gets the views). */
#define LP_SCAN_IN(a)                                                                  \
    LP_IN((a).u), LP_IN((a).delta), LP_IN((a).A), LP_IN((a).Bm), LP_IN((a).Cm), LP_IN((a).D), \
        LP_IN((a).z), LP_IN((a).delta_bias)

static chm_status selective_scan_fwd(chm_backend *be, const chm_tensor *y, const chm_scan_args *a) {
    chm_scan_args w = *a;
    LP_FRAME(f, be, "selective_scan_fwd", LP_OUT(y), LP_SCAN_IN(w));
    return LP_RUN(f, chm_vk_selective_scan_fwd(be, y, &w));
}

/*
 * The gradients go through const pointers (lp_arg's type) and back into a
 * chm_scan_grads; each is either the caller's own non-const tensor or a
 * view in the frame, so dropping the const again is sound.
 */
static chm_status selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                     const chm_tensor *dy, const chm_scan_args *a) {
    const chm_tensor *d[8] = {g->du, g->ddelta, g->dA, g->dBm, g->dCm, g->dD, g->dz,
                              g->ddelta_bias};
    chm_scan_args w = *a;
    LP_FRAME(f, be, "selective_scan_bwd", LP_ACC(d[0]), LP_ACC(d[1]), LP_ACC(d[2]), LP_ACC(d[3]),
            LP_ACC(d[4]), LP_ACC(d[5]), LP_ACC(d[6]), LP_ACC(d[7]), LP_IN(dy), LP_SCAN_IN(w));
    chm_scan_grads wg = {(chm_tensor *)d[0], (chm_tensor *)d[1], (chm_tensor *)d[2],
                         (chm_tensor *)d[3], (chm_tensor *)d[4], (chm_tensor *)d[5],
                         (chm_tensor *)d[6], (chm_tensor *)d[7]};
    return LP_RUN(f, chm_vk_selective_scan_bwd(be, &wg, dy, &w));
}

static chm_status selective_scan_step(chm_backend *be, const chm_tensor *y, const chm_tensor *h,
                                      const chm_scan_args *a) {
    chm_scan_args w = *a;
    LP_FRAME(f, be, "selective_scan_step", LP_OUT(y), LP_ACC(h), LP_SCAN_IN(w));
    return LP_RUN(f, chm_vk_selective_scan_step(be, y, h, &w));
}

static chm_status causal_conv1d_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                    const chm_tensor *w, const chm_tensor *bias, bool silu) {
    LP_FRAME(f, be, "causal_conv1d_fwd", LP_OUT(out), LP_IN(x), LP_IN(w), LP_IN(bias));
    return LP_RUN(f, chm_vk_causal_conv1d_fwd(be, out, x, w, bias, silu));
}

static chm_status causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                                    const chm_tensor *dbias, const chm_tensor *dout,
                                    const chm_tensor *x, const chm_tensor *w,
                                    const chm_tensor *bias, bool silu) {
    LP_FRAME(f, be, "causal_conv1d_bwd", LP_ACC(dx), LP_ACC(dw), LP_ACC(dbias), LP_IN(dout),
            LP_IN(x), LP_IN(w), LP_IN(bias));
    return LP_RUN(f, chm_vk_causal_conv1d_bwd(be, dx, dw, dbias, dout, x, w, bias, silu));
}

/* ---- routing ---- */

static chm_status router_topk(chm_backend *be, const chm_tensor *gates, const chm_tensor *idx,
                              const chm_tensor *probs, const chm_tensor *slot_token,
                              const chm_tensor *slot_ref, const chm_tensor *counts,
                              const chm_tensor *logits, chm_router_score score, bool renormalize) {
    LP_FRAME(f, be, "router_topk", LP_OUT(gates), LP_OUT(probs), LP_IN(logits));
    return LP_RUN(f, chm_vk_router_topk(be, gates, idx, probs, slot_token, slot_ref, counts,
                                        logits, score, renormalize));
}

static chm_status router_topk_bwd(chm_backend *be, const chm_tensor *dlogits,
                                  const chm_tensor *dgates, const chm_tensor *probs,
                                  const chm_tensor *idx, chm_router_score score,
                                  bool renormalize) {
    LP_FRAME(f, be, "router_topk_bwd", LP_ACC(dlogits), LP_IN(dgates), LP_IN(probs));
    return LP_RUN(f, chm_vk_router_topk_bwd(be, dlogits, dgates, probs, idx, score, renormalize));
}

static chm_status select_topk(chm_backend *be, const chm_tensor *idx, const chm_tensor *scores) {
    LP_FRAME(f, be, "select_topk", LP_IN(scores));
    return LP_RUN(f, chm_vk_select_topk(be, idx, scores));
}

/* ---- losses ---- */

static chm_status bce_logits(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                             const chm_tensor *logits, const chm_tensor *targets,
                             double grad_scale) {
    LP_FRAME(f, be, "bce_logits", LP_OUT(dlogits), LP_IN(logits), LP_IN(targets));
    return LP_RUN(f, chm_vk_bce_logits(be, losses, dlogits, logits, targets, grad_scale));
}

static chm_status moe_aux(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                          const chm_tensor *logits, const chm_tensor *idx, double balance_scale,
                          double z_scale) {
    LP_FRAME(f, be, "moe_aux", LP_ACC(dlogits), LP_IN(logits));
    return LP_RUN(f, chm_vk_moe_aux(be, losses, dlogits, logits, idx, balance_scale, z_scale));
}

void chm_vk_lowp_install(chm_backend_ops *o) {
    o->attention_fwd = attention_fwd;
    o->attention_bwd = attention_bwd;
    o->attention_decode = attention_decode;
    o->selective_scan_fwd = selective_scan_fwd;
    o->selective_scan_bwd = selective_scan_bwd;
    o->selective_scan_step = selective_scan_step;
    o->causal_conv1d_fwd = causal_conv1d_fwd;
    o->causal_conv1d_bwd = causal_conv1d_bwd;
    o->router_topk = router_topk;
    o->router_topk_bwd = router_topk_bwd;
    o->select_topk = select_topk;
    o->bce_logits = bce_logits;
    o->moe_aux = moe_aux;
}
