/*
 * ops_swiglu.c: checked wrappers of swiglu_fwd and swiglu_bwd (contracts in backend.h).
 *
 * Every tensor is a float tensor of one dtype and one shape (any rank; [E,cap,F] for the
 * tail-zero forms, with counts I32 [E]). Outputs (out; dgate and dup) overlap no other
 * argument.
 */
#include "check.h"

/* The tail-zero forms' counts: I32 [E] for gate [E,cap,F], apart from the outputs. */
static chm_status check_counts(chm_backend *be, const char *op, const chm_tensor *gate,
                               const chm_tensor *counts, const chm_tensor *o1,
                               const chm_tensor *o2) {
    if (!counts) return CHM_OK;
    CHM_TRY(chm_check_shape(be, op, "gate", gate, CHM_ANY_DTYPE, 3,
                            CHM_DIMS(CHM_ANY, CHM_ANY, CHM_ANY)));
    CHM_TRY(chm_check_shape(be, op, "counts", counts, CHM_I32, 1, CHM_DIMS(gate->shape[0])));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(o1, counts), "an output overlaps counts"));
    return chm_check_arg(be, op, !o2 || !chm_tensors_overlap(o2, counts),
                         "an output overlaps counts");
}

static chm_status swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                             const chm_tensor *up, const chm_tensor *counts) {
    const char *op = "swiglu_fwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->swiglu_fwd != NULL));
    CHM_TRY(chm_check_float(be, op, "gate", gate));
    CHM_TRY(chm_check_same(be, op, "up", up, "gate", gate));
    CHM_TRY(chm_check_same(be, op, "out", out, "gate", gate));
    const chm_tensor *ins[] = {gate, up};
    const char *names[] = {"gate", "up"};
    CHM_TRY(chm_check_apart(be, op, "out", out, 2, ins, names));
    CHM_TRY(check_counts(be, op, gate, counts, out, NULL));
    return chm_fault_after(be, "swiglu_fwd", out, be->ops->swiglu_fwd(be, out, gate, up, counts));
}

chm_status chm_swiglu_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                          const chm_tensor *up) {
    return swiglu_fwd(be, out, gate, up, NULL);
}

chm_status chm_swiglu_fwd_tail_zero(chm_backend *be, const chm_tensor *out, const chm_tensor *gate,
                                    const chm_tensor *up, const chm_tensor *counts) {
    CHM_TRY(chm_check_arg(be, "swiglu_fwd", counts != NULL, "the tail-zero form needs counts"));
    return swiglu_fwd(be, out, gate, up, counts);
}

static chm_status swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                             const chm_tensor *dout, const chm_tensor *gate, const chm_tensor *up,
                             bool accumulate, const chm_tensor *counts) {
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
    CHM_TRY(check_counts(be, op, gate, counts, dgate, dup));
    return chm_fault_after(be, "swiglu_bwd", dgate,
                           be->ops->swiglu_bwd(be, dgate, dup, dout, gate, up, accumulate,
                                               counts));
}

chm_status chm_swiglu_bwd(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                          const chm_tensor *dout, const chm_tensor *gate, const chm_tensor *up,
                          bool accumulate) {
    return swiglu_bwd(be, dgate, dup, dout, gate, up, accumulate, NULL);
}

chm_status chm_swiglu_bwd_tail_zero(chm_backend *be, const chm_tensor *dgate, const chm_tensor *dup,
                                    const chm_tensor *dout, const chm_tensor *gate,
                                    const chm_tensor *up, const chm_tensor *counts,
                                    bool accumulate) {
    CHM_TRY(chm_check_arg(be, "swiglu_bwd", counts != NULL, "the tail-zero form needs counts"));
    return swiglu_bwd(be, dgate, dup, dout, gate, up, accumulate, counts);
}
