/*
 * ops_moe_aux.c: checked wrapper of the fused MoE auxiliary losses (contract
 * in backend.h).
 *
 * logits [R,E] float with R, E >= 1; idx [R,K] I32 with 1 <= K <= E;
 * losses [2] in chm_dtype_stats(dtype); dlogits [R,E] like logits or NULL.
 * Outputs share no byte with any other argument; the scales are finite.
 * idx values are data and are range-checked by the backend.
 */
#include <math.h>

#include "check.h"

chm_status chm_moe_aux(chm_backend *be, const chm_tensor *losses, const chm_tensor *dlogits,
                       const chm_tensor *logits, const chm_tensor *idx, double balance_scale,
                       double z_scale) {
    const char *op = "moe_aux";
    CHM_TRY(chm_check_impl(be, op, be->ops->moe_aux != NULL));
    CHM_TRY(chm_check_float(be, op, "logits", logits));
    CHM_TRY(
        chm_check_shape(be, op, "logits", logits, logits->dtype, 2, CHM_DIMS(CHM_ANY, CHM_ANY)));
    int64_t R = logits->shape[0], E = logits->shape[1];
    CHM_TRY(chm_check_arg(be, op, R >= 1 && E >= 1,
                          "logits must have rows and experts, got [%lld, %lld]", (long long)R,
                          (long long)E));
    CHM_TRY(chm_check_shape(be, op, "idx", idx, CHM_I32, 2, CHM_DIMS(R, CHM_ANY)));
    int64_t K = idx->shape[1];
    CHM_TRY(chm_check_arg(be, op, K >= 1 && K <= E,
                          "top-k needs 1 <= K <= %lld, got K = %lld from idx", (long long)E,
                          (long long)K));
    CHM_TRY(
        chm_check_shape(be, op, "losses", losses, chm_dtype_stats(logits->dtype), 1, CHM_DIMS(2)));
    if (dlogits) CHM_TRY(chm_check_same(be, op, "dlogits", dlogits, "logits", logits));
    CHM_TRY(chm_check_arg(be, op, isfinite(balance_scale) && isfinite(z_scale),
                          "balance_scale and z_scale must be finite, got %g and %g", balance_scale,
                          z_scale));
    const chm_tensor *ins[] = {logits, idx, dlogits};
    const char *names[] = {"logits", "idx", "dlogits"};
    for (int i = 0; i < 3; i++)
        CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(losses, ins[i]), "losses and %s overlap",
                              names[i]));
    CHM_TRY(
        chm_check_arg(be, op, !chm_tensors_overlap(dlogits, logits), "dlogits and logits overlap"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(dlogits, idx), "dlogits and idx overlap"));
    return chm_fault_after(be, "moe_aux", losses,
                           be->ops->moe_aux(be, losses, dlogits, logits, idx, balance_scale,
                                            z_scale));
}
