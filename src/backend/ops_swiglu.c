/*
 * ops_swiglu.c: checked wrappers of swiglu_fwd and swiglu_bwd (contracts in backend.h).
 *
 * Every tensor is a float tensor of one dtype and one shape (any rank).
 * Outputs (out; dgate and dup) overlap no other argument.
 */
#include "check.h"

chm_status chm_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                          const chm_tensor *up) {
    const char *op = "swiglu_fwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->swiglu_fwd != NULL));
    CHM_TRY(chm_check_float(be, op, "gate", gate));
    CHM_TRY(chm_check_same(be, op, "up", up, "gate", gate));
    CHM_TRY(chm_check_same(be, op, "out", out, "gate", gate));
    const chm_tensor *ins[] = {gate, up};
    const char *names[] = {"gate", "up"};
    CHM_TRY(chm_check_apart(be, op, "out", out, 2, ins, names));
    return chm_fault_after(be, "swiglu_fwd", out, be->ops->swiglu_fwd(be, out, gate, up));
}

chm_status chm_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                          const chm_tensor *dout, const chm_tensor *gate, const chm_tensor *up,
                          bool accumulate) {
    const char *op = "swiglu_bwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->swiglu_bwd != NULL));
    CHM_TRY(chm_check_float(be, op, "gate", gate));
    CHM_TRY(chm_check_same(be, op, "up", up, "gate", gate));
    CHM_TRY(chm_check_same(be, op, "dout", dout, "gate", gate));
    CHM_TRY(chm_check_same(be, op, "dgate", dgate, "gate", gate));
    CHM_TRY(chm_check_same(be, op, "dup", dup, "gate", gate));
    const chm_tensor *ins[] = {dout, gate, up, dup};
    const char *names[] = {"dout", "gate", "up", "dup"};
    CHM_TRY(chm_check_apart(be, op, "dgate", dgate, 4, ins, names));
    CHM_TRY(chm_check_apart(be, op, "dup", dup, 3, ins, names));
    return chm_fault_after(be, "swiglu_bwd", dgate,
                           be->ops->swiglu_bwd(be, dgate, dup, dout, gate, up, accumulate));
}
