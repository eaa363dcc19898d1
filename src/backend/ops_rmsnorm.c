/*
 * ops_rmsnorm.c: checked wrappers of rmsnorm_fwd and rmsnorm_bwd (contracts in backend.h).
 *
 * x is any float tensor seen as [R,C] (C = its last dim, at least 1); out, dx
 * and dout have x's dtype and shape; w and dw are [C]; rstd holds R elements
 * of chm_dtype_stats(dtype) in any shape ([R], or x's shape without its last
 * dim). No output may overlap another argument.
 */
#include <math.h>

#include "check.h"

/* x's C is at least 1, w is [C] in x's dtype, rstd holds R stats values. */
static chm_status check_common(chm_backend *be, const char *op, const chm_tensor *x,
                               const chm_tensor *w, const chm_tensor *rstd) {
    CHM_TRY(chm_check_float(be, op, "x", x));
    int64_t R = chm_tensor_rows(x), C = chm_tensor_cols(x);
    if (C < 1)
        return CHM_ERR(&be->err, CHM_ERR_SHAPE, "%s: x's last dim must be at least 1, got %lld", op,
                       (long long)C);
    CHM_TRY(chm_check_shape(be, op, "w", w, x->dtype, 1, CHM_DIMS(C)));
    CHM_TRY(chm_check_shape(be, op, "rstd", rstd, chm_dtype_stats(x->dtype), 0, NULL));
    if (chm_tensor_numel(rstd) != R)
        return CHM_ERR(&be->err, CHM_ERR_SHAPE,
                       "%s: rstd must hold one value per row of x (%lld), got %lld", op,
                       (long long)R, (long long)chm_tensor_numel(rstd));
    return CHM_OK;
}

chm_status chm_rmsnorm_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *rstd,
                           const chm_tensor *x, const chm_tensor *w, double eps) {
    const char *op = "rmsnorm_fwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->rmsnorm_fwd != NULL));
    CHM_TRY(check_common(be, op, x, w, rstd));
    CHM_TRY(chm_check_same(be, op, "out", out, "x", x));
    CHM_TRY(chm_check_arg(be, op, isfinite(eps) && eps >= 0, "eps must be finite and >= 0, got %g",
                          eps));
    const chm_tensor *ins[] = {x, w, rstd};
    const char *names[] = {"x", "w", "rstd"};
    CHM_TRY(chm_check_apart(be, op, "out", out, 3, ins, names));
    CHM_TRY(chm_check_apart(be, op, "rstd", rstd, 2, ins, names));
    return chm_fault_after(be, "rmsnorm_fwd", out, be->ops->rmsnorm_fwd(be, out, rstd, x, w, eps));
}

chm_status chm_rmsnorm_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *dw,
                           const chm_tensor *dout, const chm_tensor *x, const chm_tensor *w,
                           const chm_tensor *rstd) {
    const char *op = "rmsnorm_bwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->rmsnorm_bwd != NULL));
    CHM_TRY(check_common(be, op, x, w, rstd));
    CHM_TRY(chm_check_same(be, op, "dx", dx, "x", x));
    CHM_TRY(chm_check_same(be, op, "dout", dout, "x", x));
    CHM_TRY(chm_check_same(be, op, "dw", dw, "w", w));
    const chm_tensor *ins[] = {dout, x, w, rstd, dw};
    const char *names[] = {"dout", "x", "w", "rstd", "dw"};
    CHM_TRY(chm_check_apart(be, op, "dx", dx, 5, ins, names));
    CHM_TRY(chm_check_apart(be, op, "dw", dw, 4, ins, names));
    return chm_fault_after(be, "rmsnorm_bwd", dx,
                           be->ops->rmsnorm_bwd(be, dx, dw, dout, x, w, rstd));
}
