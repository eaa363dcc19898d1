/*
 * ops_causal_conv1d.c: checked wrappers of the depthwise causal conv1d.
 *
 * x, out, dout, dx [B,T,C]; w, dw [C,W] with W >= 1; bias, dbias [C]
 * optional. All float tensors share x's dtype. Outputs (out; dx, dw, dbias)
 * must not share bytes with any other tensor of the call. The backward
 * ACCUMULATES into dx, dw and dbias (dx is written instead by
 * chm_causal_conv1d_bwd_set_dx); dbias may be NULL when bias is given, and
 * must be NULL when bias is not.
 */
#include "check.h"

/* x [B,T,C] float, w [C,W] with W >= 1, bias [C] when given. */
static chm_status check_inputs(chm_backend *be, const char *op, const chm_tensor *x,
                               const chm_tensor *w, const chm_tensor *bias) {
    CHM_TRY(chm_check_float(be, op, "x", x));
    CHM_TRY(chm_check_shape(be, op, "x", x, x->dtype, 3, CHM_DIMS(CHM_ANY, CHM_ANY, CHM_ANY)));
    CHM_TRY(chm_check_shape(be, op, "w", w, x->dtype, 2, CHM_DIMS(x->shape[2], CHM_ANY)));
    CHM_TRY(chm_check_arg(be, op, w->shape[1] >= 1, "w must have at least one tap, got W=%lld",
                          (long long)w->shape[1]));
    if (bias)
        CHM_TRY(chm_check_shape(be, op, "bias", bias, x->dtype, 1, CHM_DIMS(x->shape[2])));
    return CHM_OK;
}

chm_status chm_causal_conv1d_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                                 const chm_tensor *w, const chm_tensor *bias, bool silu) {
    const char *op = "causal_conv1d_fwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->causal_conv1d_fwd != NULL));
    CHM_TRY(check_inputs(be, op, x, w, bias));
    CHM_TRY(chm_check_same(be, op, "out", out, "x", x));
    const chm_tensor *in[] = {x, w, bias};
    const char *names[] = {"x", "w", "bias"};
    CHM_TRY(chm_check_apart(be, op, "out", out, 3, in, names));
    return chm_fault_after(be, "causal_conv1d_fwd", out,
                           be->ops->causal_conv1d_fwd(be, out, x, w, bias, silu));
}

static chm_status conv_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                           const chm_tensor *dbias, const chm_tensor *dout, const chm_tensor *x,
                           const chm_tensor *w, const chm_tensor *bias, bool silu, bool dx_set) {
    const char *op = "causal_conv1d_bwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->causal_conv1d_bwd != NULL));
    CHM_TRY(check_inputs(be, op, x, w, bias));
    CHM_TRY(chm_check_same(be, op, "dout", dout, "x", x));
    CHM_TRY(chm_check_same(be, op, "dx", dx, "x", x));
    CHM_TRY(chm_check_same(be, op, "dw", dw, "w", w));
    CHM_TRY(chm_check_arg(be, op, bias || !dbias,
                          "dbias is given but bias is absent; pass NULL for dbias"));
    if (dbias) CHM_TRY(chm_check_same(be, op, "dbias", dbias, "bias", bias));
    /* Each gradient is checked against the inputs and the gradients after it. */
    const chm_tensor *all[] = {dw, dbias, x, w, bias, dout};
    const char *names[] = {"dw", "dbias", "x", "w", "bias", "dout"};
    CHM_TRY(chm_check_apart(be, op, "dx", dx, 6, all, names));
    CHM_TRY(chm_check_apart(be, op, "dw", dw, 5, all + 1, names + 1));
    CHM_TRY(chm_check_apart(be, op, "dbias", dbias, 4, all + 2, names + 2));
    return chm_fault_after(be, "causal_conv1d_bwd", dx,
                           be->ops->causal_conv1d_bwd(be, dx, dw, dbias, dout, x, w, bias, silu,
                                                      dx_set));
}

chm_status chm_causal_conv1d_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                                 const chm_tensor *dbias, const chm_tensor *dout,
                                 const chm_tensor *x, const chm_tensor *w,
                                 const chm_tensor *bias, bool silu) {
    return conv_bwd(be, dx, dw, dbias, dout, x, w, bias, silu, false);
}

chm_status chm_causal_conv1d_bwd_set_dx(chm_backend *be, const chm_tensor *dx,
                                        const chm_tensor *dw, const chm_tensor *dbias,
                                        const chm_tensor *dout, const chm_tensor *x,
                                        const chm_tensor *w, const chm_tensor *bias, bool silu) {
    return conv_bwd(be, dx, dw, dbias, dout, x, w, bias, silu, true);
}
