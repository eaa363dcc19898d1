/*
 * ops_adamw.c: checked wrapper of the fused AdamW step.
 *
 * param, m, v: one shape, f32 or f64 (master weights and moments);
 * grad: param's shape, any float dtype (a backend may insist on param's);
 * param_lowp: optional bf16/f16 copy with param's element count.
 * No two of them may share bytes. Scalars: lr >= 0, 0 <= beta1, beta2 < 1,
 * eps > 0, weight_decay >= 0, step >= 1, all finite, grad_scale finite.
 */
#include <math.h>

#include "check.h"

/* The step's scalars are in range (see the file comment). */
static chm_status check_hparams(chm_backend *be, const char *op, const chm_adamw_args *a) {
    CHM_TRY(chm_check_arg(be, op, a != NULL, "args is NULL"));
    CHM_TRY(chm_check_arg(be, op, isfinite(a->lr) && a->lr >= 0,
                          "lr must be finite and >= 0, got %g", a->lr));
    CHM_TRY(chm_check_arg(be, op, a->beta1 >= 0 && a->beta1 < 1,
                          "beta1 must be in [0, 1), got %g", a->beta1));
    CHM_TRY(chm_check_arg(be, op, a->beta2 >= 0 && a->beta2 < 1,
                          "beta2 must be in [0, 1), got %g", a->beta2));
    CHM_TRY(chm_check_arg(be, op, isfinite(a->eps) && a->eps > 0,
                          "eps must be finite and > 0, got %g", a->eps));
    CHM_TRY(chm_check_arg(be, op, isfinite(a->weight_decay) && a->weight_decay >= 0,
                          "weight_decay must be finite and >= 0, got %g", a->weight_decay));
    CHM_TRY(chm_check_arg(be, op, a->step >= 1, "step must be >= 1 (1-based), got %lld",
                          (long long)a->step));
    CHM_TRY(chm_check_arg(be, op, isfinite(a->grad_scale), "grad_scale must be finite, got %g",
                          a->grad_scale));
    return CHM_OK;
}

chm_status chm_adamw_step(chm_backend *be, const chm_tensor *param, const chm_tensor *grad,
                          const chm_tensor *m, const chm_tensor *v, const chm_tensor *param_lowp,
                          const chm_adamw_args *args) {
    const char *op = "adamw_step";
    CHM_TRY(chm_check_impl(be, op, be->ops->adamw_step != NULL));
    CHM_TRY(chm_check_tensor(be, op, "param", param));
    if (param->dtype != CHM_F32 && param->dtype != CHM_F64)
        return CHM_ERR(&be->err, CHM_ERR_DTYPE,
                       "%s: param must be f32 or f64 (master weights), got %s", op,
                       chm_dtype_name(param->dtype));
    CHM_TRY(chm_check_same(be, op, "param", param, "m", m));
    CHM_TRY(chm_check_same(be, op, "param", param, "v", v));
    CHM_TRY(chm_check_float(be, op, "grad", grad));
    CHM_TRY(chm_check_shape(be, op, "grad", grad, CHM_ANY_DTYPE, param->ndim, param->shape));
    if (param_lowp) {
        CHM_TRY(chm_check_tensor(be, op, "param_lowp", param_lowp));
        if (param_lowp->dtype != CHM_BF16 && param_lowp->dtype != CHM_F16)
            return CHM_ERR(&be->err, CHM_ERR_DTYPE, "%s: param_lowp must be bf16 or f16, got %s",
                           op, chm_dtype_name(param_lowp->dtype));
        if (chm_tensor_numel(param_lowp) != chm_tensor_numel(param))
            return CHM_ERR(&be->err, CHM_ERR_SHAPE, "%s: param_lowp has %lld elements, param %lld",
                           op, (long long)chm_tensor_numel(param_lowp),
                           (long long)chm_tensor_numel(param));
    }
    CHM_TRY(check_hparams(be, op, args));
    const chm_tensor *all[] = {param, grad, m, v, param_lowp};
    const char *const names[] = {"param", "grad", "m", "v", "param_lowp"};
    CHM_TRY(chm_check_disjoint(be, op, 5, all, names));
    return chm_fault_after(be, "adamw_step", param,
                           be->ops->adamw_step(be, param, grad, m, v, param_lowp, args));
}
