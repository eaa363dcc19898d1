/*
 * ops_attention.c: checked wrappers of causal grouped-query attention.
 *
 * q [B,T,H,D], k and v [B,T,Hk,D] with H % Hk == 0, out and dout [B,T,H,D],
 * lse [B,H,T] in chm_dtype_stats(q's dtype). All float tensors share q's
 * dtype. Outputs (out, lse; dq, dk, dv) must not share bytes with any other
 * tensor of the call. The backward ACCUMULATES into dq, dk and dv.
 */
#include "check.h"

#include <math.h>

/* q, k, v: dtypes, ranks, matching B/T/D, H % Hk == 0 and the scale. */
static chm_status check_qkv(chm_backend *be, const char *op, const chm_tensor *q,
                            const chm_tensor *k, const chm_tensor *v, double scale) {
    CHM_TRY(chm_check_float(be, op, "q", q));
    CHM_TRY(chm_check_shape(be, op, "q", q, q->dtype, 4,
                            CHM_DIMS(CHM_ANY, CHM_ANY, CHM_ANY, CHM_ANY)));
    CHM_TRY(chm_check_shape(be, op, "k", k, q->dtype, 4,
                            CHM_DIMS(q->shape[0], q->shape[1], CHM_ANY, q->shape[3])));
    CHM_TRY(chm_check_same(be, op, "v", v, "k", k));
    int64_t H = q->shape[2], Hk = k->shape[2];
    if (Hk < 1 || H % Hk != 0)
        return CHM_ERR(&be->err, CHM_ERR_SHAPE,
                       "%s: k and v have %lld kv heads, which must be at least 1 and divide "
                       "q's %lld heads",
                       op, (long long)Hk, (long long)H);
    return chm_check_arg(be, op, isfinite(scale) && scale > 0,
                         "scale must be positive and finite, got %g", scale);
}

/* A [B,T,H,D] tensor of q's dtype and an lse [B,H,T] of the stats dtype. */
static chm_status check_like_q(chm_backend *be, const char *op, const char *name,
                               const chm_tensor *t, const chm_tensor *q) {
    return chm_check_shape(be, op, name, t, q->dtype, 4,
                           CHM_DIMS(q->shape[0], q->shape[1], q->shape[2], q->shape[3]));
}

static chm_status check_lse(chm_backend *be, const char *op, const chm_tensor *lse,
                            const chm_tensor *q) {
    return chm_check_shape(be, op, "lse", lse, chm_dtype_stats(q->dtype), 3,
                           CHM_DIMS(q->shape[0], q->shape[2], q->shape[1]));
}

chm_status chm_attention_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *lse,
                             const chm_tensor *q, const chm_tensor *k, const chm_tensor *v,
                             double scale) {
    const char *op = "attention_fwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->attention_fwd != NULL));
    CHM_TRY(check_qkv(be, op, q, k, v, scale));
    CHM_TRY(check_like_q(be, op, "out", out, q));
    CHM_TRY(check_lse(be, op, lse, q));
    const chm_tensor *others[] = {q, k, v, lse};
    const char *names[] = {"q", "k", "v", "lse"};
    CHM_TRY(chm_check_apart(be, op, "out", out, 4, others, names));
    CHM_TRY(chm_check_apart(be, op, "lse", lse, 3, others, names));
    return chm_fault_after(be, "attention_fwd", out,
                           be->ops->attention_fwd(be, out, lse, q, k, v, scale));
}

chm_status chm_attention_bwd(chm_backend *be, const chm_tensor *dq, const chm_tensor *dk,
                             const chm_tensor *dv, const chm_tensor *dout, const chm_tensor *q,
                             const chm_tensor *k, const chm_tensor *v, const chm_tensor *out,
                             const chm_tensor *lse, double scale) {
    const char *op = "attention_bwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->attention_bwd != NULL));
    CHM_TRY(check_qkv(be, op, q, k, v, scale));
    CHM_TRY(check_like_q(be, op, "out", out, q));
    CHM_TRY(check_like_q(be, op, "dout", dout, q));
    CHM_TRY(check_lse(be, op, lse, q));
    CHM_TRY(check_like_q(be, op, "dq", dq, q));
    CHM_TRY(chm_check_same(be, op, "dk", dk, "k", k));
    CHM_TRY(chm_check_same(be, op, "dv", dv, "v", v));
    /* Each gradient is checked against the inputs and the gradients after it. */
    const chm_tensor *all[] = {dk, dv, q, k, v, out, lse, dout};
    const char *names[] = {"dk", "dv", "q", "k", "v", "out", "lse", "dout"};
    CHM_TRY(chm_check_apart(be, op, "dq", dq, 8, all, names));
    CHM_TRY(chm_check_apart(be, op, "dk", dk, 7, all + 1, names + 1));
    CHM_TRY(chm_check_apart(be, op, "dv", dv, 6, all + 2, names + 2));
    return chm_fault_after(be, "attention_bwd", dq,
                           be->ops->attention_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, scale));
}
