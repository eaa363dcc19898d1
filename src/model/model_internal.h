/*
 * model_internal.h: the model's private structures, shared by the block
 * files of src/model/ (one file per block kind).
 *
 * Conventions of every block:
 *  - forward functions ALLOCATE their saved activations from the arena
 *    (mdl_alloc) and then compute; backward functions allocate their scratch
 *    after an mdl_mark and release it at the end. Nothing else allocates.
 *  - every backend call goes through MDL_OP, which skips it in a dry run:
 *    chm_model_create runs a whole step with m->dry set to size the arena
 *    exactly by the allocations the real step makes.
 *  - residual-stream outputs ACCUMULATE: a mixer adds its output projection
 *    into the residual tensor it is given (matmul with beta = 1), an FFN
 *    likewise; backward functions accumulate into the input gradient they
 *    are given, as the ops do.
 * Shapes use tensor.h's letters plus R = B*T rows, Di (Mamba d_inner),
 * F (FFN width), Rk (dt_rank), cap (expert capacity), k (MoD tokens).
 */
#ifndef CHIMERA_MODEL_INTERNAL_H
#define CHIMERA_MODEL_INTERNAL_H

#include "chimera/backend.h"
#include "chimera/config.h"
#include "chimera/model.h"

/* Run a backend call unless this is a dry run; return its failure. */
#define MDL_OP(m, call)                                                                            \
    do {                                                                                           \
        if (!(m)->dry) {                                                                           \
            chm_status rc_ = (call);                                                               \
            if (rc_ != CHM_OK) return rc_;                                                         \
        }                                                                                          \
    } while (0)

/* Return from the enclosing function when a model call fails. */
#define MDL_TRY(expr)                                                                              \
    do {                                                                                           \
        chm_status rc_ = (expr);                                                                   \
        if (rc_ != CHM_OK) return rc_;                                                             \
    } while (0)

/* Loss slots of the per-step loss tensor (sums; normalised on the host). */
enum {
    MDL_LOSS_CE = 0,      /* sum of main CE over B*T tokens */
    MDL_LOSS_BALANCE = 1, /* sum over MoE layers of the balance loss */
    MDL_LOSS_Z = 2,       /* sum over MoE layers of the z-loss (next to BALANCE: one axpy) */
    MDL_LOSS_MOD = 3,     /* sum over MoD layers and tokens of the BCE */
    MDL_LOSS_MTP = 4,     /* + k: sum of MTP depth k+1's CE */
    MDL_LOSS_SLOTS = 4 + CHM_MODEL_MAX_MTP
};

/* Parameter indices of one layer (trunk or MTP); -1 where absent. */
typedef struct mdl_layer {
    char mixer;                  /* 'A' attention or 'M' Mamba */
    bool moe, mod;               /* MoE FFN; routed by mixture-of-depths */
    int norm1, norm2;            /* [C] */
    int mod_router;              /* [1,C] */
    int q, k, v, o;              /* [H*D,C], [Hk*D,C] x2, [C,H*D] */
    int in_proj, conv_w, conv_b; /* [2*Di,C] (x rows then z rows), [Di,W], [Di] */
    int x_proj, dt_w, dt_b;      /* [Rk+2N,Di] (dt, B, C rows), [Di,Rk], [Di] */
    int A_log, D, out_proj;      /* [Di,N], [Di], [C,Di] */
    int w1, w3, w2;              /* dense [F,C],[F,C],[C,F]; MoE [E,F,C],[E,F,C],[E,C,F] */
    int router;                  /* MoE [E,C] */
} mdl_layer;

/* One MTP module's parameter indices. */
typedef struct mdl_mtp {
    int norm_h, norm_e; /* [C] */
    int proj;           /* [2,C,C]: h half, then e half */
    int norm_out;       /* [C] */
    mdl_layer layer;
} mdl_mtp;

/* Saved activations of an attention mixer. */
typedef struct mdl_attn_act {
    chm_tensor q;   /* [B,T,H,D] after RoPE */
    chm_tensor k;   /* [B,T,Hk,D] after RoPE */
    chm_tensor v;   /* [B,T,Hk,D] */
    chm_tensor att; /* [B,T,H,D] attention output */
    chm_tensor lse; /* [B,H,T] stats dtype */
} mdl_attn_act;

/* Saved activations of a Mamba mixer. */
typedef struct mdl_mamba_act {
    chm_tensor xin, z; /* [B,T,Di] in_proj halves */
    chm_tensor xc;     /* [B,T,Di] conv1d + SiLU */
    chm_tensor xpT;    /* [Rk+2N, B*T] x_proj output, transposed: dtl^T, Bm^T, Cm^T rows */
    chm_tensor bm, cm; /* [B,T,N] */
    chm_tensor delta;  /* [B,T,Di] dt_proj output (before bias and softplus) */
    chm_tensor A;      /* [Di,N] = -exp(A_log) */
    chm_tensor y;      /* [B,T,Di] gated scan output */
    chm_tensor hsave;  /* [B,ceil(T/16),Di,N] f32: the scan's saved states (h_saved) */
    chm_tensor ysave;  /* [B,T,Di] the scan's output before the gate (y_saved) */
} mdl_mamba_act;

/* Saved activations of a dense SwiGLU FFN. */
typedef struct mdl_ffn_act {
    chm_tensor g, u, a; /* [R,F] gate, up, silu(gate)*up */
} mdl_ffn_act;

/* Saved activations of a MoE FFN. */
typedef struct mdl_moe_act {
    int64_t cap;              /* slots per expert */
    chm_tensor logits, probs; /* [R,E] */
    chm_tensor gates, idx;    /* [R,K] float, I32 */
    chm_tensor slot_token;    /* [E,cap] I32 */
    chm_tensor slot_ref;      /* [E,cap] I32 */
    chm_tensor counts;        /* [E] I32 */
    chm_tensor slot_gate;     /* [E*cap] gate of each slot (0 for empty) */
    chm_tensor xe;            /* [E,cap,C] dispatched inputs */
    chm_tensor ge, ue, ae;    /* [E,cap,F] */
    chm_tensor ye;            /* [E,cap,C] expert outputs */
    chm_tensor aux;           /* [2] balance, z of this layer (stats dtype) */
    bool kept;                /* slot_ref and counts are given (recompute keeps them) */
    chm_readback counts_rb;   /* counts on their way to the host for the backward (moe.c) */
} mdl_moe_act;

typedef struct mdl_layer_act mdl_layer_act;

/* Saved activations of a mixture-of-depths wrapper (training routing). */
typedef struct mdl_mod_act {
    int64_t k;            /* tokens run per sequence */
    chm_tensor score;     /* [R] router scores x.w */
    chm_tensor idx;       /* [B,k] I32 selected positions, increasing */
    chm_tensor rs;        /* [B*k] selected scores */
    chm_tensor sig;       /* [B*k] sigmoid(rs) */
    chm_tensor ones;      /* [B*k] ones (selection mask, sigmoid) */
    chm_tensor xs, ys;    /* [B,k,C] selected inputs, inner layer outputs */
    chm_tensor delta;     /* [B*k,C] ys - xs */
    chm_tensor mask;      /* [R] 1 where selected */
    chm_tensor bce;       /* [R] per-token BCE (stats dtype) */
    chm_tensor dscore;    /* [R] BCE gradient (written in the forward) */
    mdl_layer_act *inner; /* the layer run on the selected tokens */
    bool kept;            /* idx is given (recompute keeps it) */
} mdl_mod_act;

/* Saved activations of one layer. x and out are views given by the caller. */
struct mdl_layer_act {
    int64_t B, T;
    chm_tensor x;          /* [B,T,C] input residual */
    chm_tensor out;        /* [B,T,C] output residual */
    chm_tensor xn1, rstd1; /* [B,T,C], [R] */
    chm_tensor h;          /* [B,T,C] after the mixer */
    chm_tensor xn2, rstd2; /* [B,T,C], [R] */
    mdl_attn_act attn;
    mdl_mamba_act mamba;
    mdl_ffn_act ffn;
    mdl_moe_act moe;
    mdl_mod_act mod;
};

/* Saved activations of one MTP module. */
typedef struct mdl_mtp_act {
    chm_tensor a, rstd_a;  /* [B,T,C] norm_h(h_prev), [R] */
    chm_tensor e;          /* [B,T,C] emb(t+k) */
    chm_tensor b, rstd_b;  /* [B,T,C] norm_e(e), [R] */
    chm_tensor p;          /* [B,T,C] projection: the layer's input */
    chm_tensor hk;         /* [B,T,C] the layer's output */
    chm_tensor dhk;        /* [B,T,C] gradient of hk (from the head and depth k+1) */
    chm_tensor hn, rstd_n; /* [B,T,C] norm_out(hk), [R] */
    mdl_layer_act layer;
} mdl_mtp_act;

/* A range of the gradient buffer that backward stage `stage` finishes (grad_hook.c). */
typedef struct mdl_ready {
    int stage;
    int64_t begin, count; /* elements, padding included */
} mdl_ready;

/* Token-id tensors of one pass (uploaded from the host). */
typedef struct mdl_ids {
    chm_tensor in;                         /* [R] inputs */
    chm_tensor tgt;                        /* [R] targets */
    chm_tensor mtp_in[CHM_MODEL_MAX_MTP];  /* [R] token t+k+1 ... (depth k+1) */
    chm_tensor mtp_tgt[CHM_MODEL_MAX_MTP]; /* [R] target t+k+2, -1 past the end */
} mdl_ids;

struct chm_model {
    chm_config_model cfg;
    chm_backend *be; /* NULL: description only */
    chm_dtype dt;    /* compute dtype: activations, gradients, the weights the ops read */
    chm_dtype mdt;   /* master dtype: the parameter buffer (f32 in mixed precision, else dt) */
    int64_t B, T;    /* micro-batch shape */
    int64_t ce_rows; /* rows per cross-entropy chunk */
    /* dimensions */
    int64_t V, C, L, H, Hk, Dh, Di, N, W, Rk, F, E, K, Fe, depth;
    int n_moe, n_mod;
    /* parameters */
    int n_params;
    chm_model_param *params;
    struct mdl_init *inits;         /* [n_params] how each is initialised (params.c) */
    int64_t numel_decay, numel_all; /* decayed region, whole buffer (elements, padded) */
    int embed, final_norm, lm_head; /* lm_head = embed when tied */
    mdl_layer *layers;              /* [L] */
    mdl_mtp *mtp;                   /* [depth] */
    chm_buffer *pbuf, *gbuf; /* master weights (mdt), gradients (dt) */
    chm_buffer *cbuf;        /* mixed precision: the compute copy (dt), else NULL */
    /* activations */
    chm_arena arena;
    bool dry; /* sizing run: ops skipped, allocations counted */
    size_t dry_used, dry_peak;
    chm_model_routing routing;  /* routing of the pass in progress */
    bool train;                 /* the pass in progress runs a backward */
    double gscale;              /* grad_scale of the pass */
    bool routed;                /* the last pass was a training-routing pass over B x T */
    bool recompute;             /* per-layer recomputation (chm_model_options.recompute) */
    unsigned caps;              /* the backend's CHM_CAP_* (chm_model_options.caps without one) */
    bool moe_grouped;           /* CHIMERA_MOE_GROUPED=1: no host counts in the MoE backward */
    bool replay;                /* re-running a layer's forward in the backward: add no loss */
    size_t mtp_mark;            /* arena mark below the MTP modules' activations */
    mdl_layer_act *acts;        /* [L] */
    mdl_layer_act *inner;       /* [L] MoD inner layers */
    mdl_mtp_act *mtp_acts;      /* [depth] */
    chm_tensor *resid;          /* [L+1] residual stream [B,T,C] */
    chm_tensor dresid;          /* [B,T,C] gradient of the current residual */
    chm_tensor hn, rstd_f;      /* [B,T,C] final norm output, [R] */
    chm_tensor logits, ce_loss; /* [ce_rows,V], [ce_rows] chunk scratch */
    chm_tensor loss;            /* [MDL_LOSS_SLOTS] stats dtype */
    chm_tensor eye;             /* [N,N] identity (Mamba: B and C out of x_proj's transposed rows) */
    chm_tensor eye_x;           /* [Rk+2N,Rk+2N] identity (Mamba: x_proj's output transposed) */
    mdl_ids ids;
    /* host scratch */
    int32_t *host_ids; /* [(2 + 2*depth) * B*T] */
    double *host_loss; /* [MDL_LOSS_SLOTS] */
    double *host_score; /* [T] MoD scores (causal routing, decoding) */
    int32_t *host_counts; /* [E] expert counts of the MoE backward in progress (moe.c) */
    int32_t *host_idx;  /* [T] */
    /* gradient readiness (grad_hook.c) */
    mdl_ready *ready;          /* [n_ready] ranges in the order the backward finishes them */
    int n_ready;
    int ready_next;            /* the next one to report in the pass in progress */
    chm_model_grad_hook hook;  /* NULL: none */
    void *hook_user;
    bool hook_failed;          /* the pass stopped because the hook failed: hook_err says why */
    chm_err hook_err;
};

/* ---- params.c ---- */
chm_status mdl_params_build(chm_model *m, chm_err *err);
chm_status mdl_params_alloc(chm_model *m, chm_err *err);
/* The weight the ops read (the compute copy in mixed precision) / gradient of parameter i. */
static inline const chm_tensor *mdl_w(const chm_model *m, int i) { return &m->params[i].compute; }
static inline const chm_tensor *mdl_g(const chm_model *m, int i) { return &m->params[i].grad; }

/* ---- arena.c ---- */
chm_status mdl_alloc(chm_model *m, chm_dtype dt, int ndim, const int64_t *shape, chm_tensor *out);
size_t mdl_mark(const chm_model *m);
void mdl_release(chm_model *m, size_t mark);
/* Shorthands: float tensors of the model dtype, stats tensors, I32 tensors. */
#define MDL_DIMS(...) ((const int64_t[]){__VA_ARGS__})
#define MDL_NDIMS(...) ((int)(sizeof MDL_DIMS(__VA_ARGS__) / sizeof(int64_t)))
#define MDL_ALLOC(m, t, ...)                                                                       \
    mdl_alloc((m), (m)->dt, MDL_NDIMS(__VA_ARGS__), MDL_DIMS(__VA_ARGS__), (t))
#define MDL_ALLOC_STATS(m, t, ...)                                                                 \
    mdl_alloc((m), chm_dtype_stats((m)->dt), MDL_NDIMS(__VA_ARGS__), MDL_DIMS(__VA_ARGS__), (t))
#define MDL_ALLOC_I32(m, t, ...)                                                                   \
    mdl_alloc((m), CHM_I32, MDL_NDIMS(__VA_ARGS__), MDL_DIMS(__VA_ARGS__), (t))

/*
 * Download float tensor t (any float dtype, n elements) into host doubles
 * out [n], widening in place: the one way the model reads device values
 * (loss slots, logits, MoD scores).
 */
chm_status mdl_download_f64(chm_backend *be, const chm_tensor *t, double *out);

/* A view of t's bytes from element `off` with a new shape (no checks: callers stay inside). */
chm_tensor mdl_view(const chm_tensor *t, int64_t off, int ndim, const int64_t *shape);
#define MDL_VIEW(t, off, ...) mdl_view((t), (off), MDL_NDIMS(__VA_ARGS__), MDL_DIMS(__VA_ARGS__))

/* ---- layer.c: linear maps shared by every block (PyTorch layout: W [out,in]) ---- */
/* y [R,out] = x [R,in] W^T + beta*y. */
chm_status mdl_linear_fwd(chm_model *m, const chm_tensor *y, const chm_tensor *x,
                          const chm_tensor *W, double beta);
/* y [R,out] = base [R,out] + x [R,in] W^T (base may be y itself): a residual add with no copy
 * first where the backend reads the beta term from another tensor (chm_matmul_from). */
chm_status mdl_linear_fwd_from(chm_model *m, const chm_tensor *y, const chm_tensor *x,
                               const chm_tensor *W, const chm_tensor *base);
/* gW [out,in] += dy^T x; dx [R,in] = dy W + dx_beta*dx (dx may be NULL). */
chm_status mdl_linear_bwd(chm_model *m, const chm_tensor *W, const chm_tensor *gW,
                          const chm_tensor *dy, const chm_tensor *x, const chm_tensor *dx,
                          double dx_beta);

/* The mixers' and the dense FFN's backwards WRITE dxn (its old contents are not read: their
 * first input-gradient product has beta 0, which saves a fill and a read per layer); the MoE
 * backward ACCUMULATES into it (a scatter). */

/* The forwards write out = resid + block(xn) (resid [B,T,C] the residual stream, may be out). */

/* ---- attention_block.c ---- */
chm_status mdl_attn_fwd(chm_model *m, const mdl_layer *ly, mdl_attn_act *a, const chm_tensor *xn,
                        const chm_tensor *resid, const chm_tensor *out, int64_t B, int64_t T);
chm_status mdl_attn_bwd(chm_model *m, const mdl_layer *ly, const mdl_attn_act *a,
                        const chm_tensor *xn, const chm_tensor *dout, const chm_tensor *dxn,
                        int64_t B, int64_t T);

/* ---- mamba_block.c ---- */
chm_status mdl_mamba_fwd(chm_model *m, const mdl_layer *ly, mdl_mamba_act *a, const chm_tensor *xn,
                         const chm_tensor *resid, const chm_tensor *out, int64_t B, int64_t T);
chm_status mdl_mamba_bwd(chm_model *m, const mdl_layer *ly, const mdl_mamba_act *a,
                         const chm_tensor *xn, const chm_tensor *dout, const chm_tensor *dxn,
                         int64_t B, int64_t T);
/* Allocate and upload the pass's identities, [N,N] and [Rk+2N,Rk+2N] (pass start, models with
 * Mamba layers). */
chm_status mdl_mamba_pass_begin(chm_model *m);
/* Weight views of a Mamba layer's in_proj halves (values or gradients); x_proj is used whole. */
typedef struct mdl_mamba_w {
    chm_tensor in_x, in_z; /* [Di,C] */
} mdl_mamba_w;
mdl_mamba_w mdl_mamba_views(const chm_model *m, const chm_tensor *in_proj);

/* ---- ffn.c ---- */
chm_status mdl_ffn_fwd(chm_model *m, const mdl_layer *ly, mdl_ffn_act *a, const chm_tensor *xn,
                       const chm_tensor *resid, const chm_tensor *out, int64_t R);
chm_status mdl_ffn_bwd(chm_model *m, const mdl_layer *ly, const mdl_ffn_act *a,
                       const chm_tensor *xn, const chm_tensor *dout, const chm_tensor *dxn,
                       int64_t R);

/* ---- moe.c ---- */
int64_t mdl_moe_capacity(const chm_model *m, int64_t R);
/* Finish (and discard) the expert-count readbacks a pass left in flight without its backward. */
chm_status mdl_moe_readbacks_drop(chm_model *m);
chm_status mdl_moe_fwd(chm_model *m, const mdl_layer *ly, mdl_moe_act *a, const chm_tensor *xn,
                       const chm_tensor *out, int64_t R);
chm_status mdl_moe_bwd(chm_model *m, const mdl_layer *ly, mdl_moe_act *a,
                       const chm_tensor *xn, const chm_tensor *dout, const chm_tensor *dxn,
                       int64_t R);

/* ---- layer.c ---- */
/* One layer on act->x [B,T,C] into act->out (set by the caller); MoD handled here. */
chm_status mdl_layer_fwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act, int64_t B,
                         int64_t T);
/* Backward: dres [B,T,C] holds d(out) and becomes d(x) (in place, accumulating). */
chm_status mdl_layer_bwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act,
                         const chm_tensor *dres);
/* The layer without its MoD wrapper (used by mod.c for the selected tokens). */
chm_status mdl_layer_core_fwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act, int64_t B,
                              int64_t T);
chm_status mdl_layer_core_bwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act,
                              const chm_tensor *dres);

/* ---- mod.c ---- */
/* Tokens per sequence a MoD layer runs in training routing: ceil(capacity*T) in [1, T]. */
int64_t mdl_mod_tokens(const chm_model *m, int64_t T);
chm_status mdl_mod_fwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act, int64_t B, int64_t T);
chm_status mdl_mod_bwd(chm_model *m, const mdl_layer *ly, mdl_layer_act *act,
                       const chm_tensor *dres);

/* ---- loss.c ---- */
/*
 * Final norm + unembedding + chunked cross-entropy of hidden [R,C] against
 * targets [R] into loss slot `slot`, with gradient scale `scale` per token;
 * in training, the gradient of hidden ACCUMULATES into dhidden [R,C].
 */
chm_status mdl_head(chm_model *m, int norm, const chm_tensor *hidden, const chm_tensor *hn,
                    const chm_tensor *rstd, const chm_tensor *targets, int slot, double scale,
                    const chm_tensor *dhidden);
/* The loss view of one slot ([1]) or of n slots from `slot`. */
chm_tensor mdl_loss_slot(const chm_model *m, int slot, int64_t n);
/* Download the loss slots and fill *loss. */
chm_status mdl_loss_read(chm_model *m, chm_model_loss *loss);

/* ---- mtp.c ---- */
chm_status mdl_mtp_fwd(chm_model *m, int k, const chm_tensor *h_prev);
chm_status mdl_mtp_bwd(chm_model *m, int k, const chm_tensor *h_prev, const chm_tensor *dh_prev);

/* ---- grad_hook.c ---- */
/* Stages of a training backward, in the order they run: the heads (finished in the forward),
 * MTP module k for k = depth-1 .. 0, layer l for l = L-1 .. 0, the embedding. */
enum { MDL_STAGE_HEADS = 0 };
static inline int mdl_stage_mtp(const chm_model *m, int k) { return 1 + (int)(m->depth - 1 - k); }
static inline int mdl_stage_layer(const chm_model *m, int l) {
    return 1 + (int)(m->depth + m->L - 1 - l);
}
static inline int mdl_stage_embed(const chm_model *m) { return 1 + (int)(m->depth + m->L); }
/* Build m->ready from the parameter table (after mdl_params_build). */
chm_status mdl_ready_plan(chm_model *m, chm_err *err);
/* Report the ranges stage `stage` finished to the hook (nothing without one or in a dry run;
 * a failing hook sets hook_failed). */
chm_status mdl_ready_report(chm_model *m, int stage);

/* ---- model.c ---- */
/* Dimensions and checks of a config (no allocation). */
chm_status mdl_dims(chm_model *m, const chm_config_model *cfg, int64_t T, chm_err *err);

#endif
