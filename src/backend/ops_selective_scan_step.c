/*
 * ops_selective_scan_step.c: checked wrapper of the selective scan continued
 * from a state (contract in backend.h).
 *
 * The scan arguments are checked as for selective_scan_fwd: u, delta, z, y
 * [B,T,Di]; A [Di,N]; Bm, Cm [B,T,N]; D, delta_bias [Di] (optional); one
 * float dtype. h is [B,Di,N] of that dtype, read and written in place. y and
 * h share no byte with each other or with any input.
 */
#include "check.h"

chm_status chm_selective_scan_step(chm_backend *be, const chm_tensor *y, const chm_tensor *h,
                                   const chm_scan_args *a) {
    const char *op = "selective_scan_step";
    CHM_TRY(chm_check_impl(be, op, be->ops->selective_scan_step != NULL));
    CHM_TRY(chm_check_arg(be, op, a != NULL, "the scan arguments are NULL"));
    CHM_TRY(chm_check_float(be, op, "u", a->u));
    chm_dtype dt = a->u->dtype;
    CHM_TRY(chm_check_shape(be, op, "u", a->u, dt, 3, CHM_DIMS(CHM_ANY, CHM_ANY, CHM_ANY)));
    int64_t B = a->u->shape[0], T = a->u->shape[1], Di = a->u->shape[2];
    CHM_TRY(chm_check_shape(be, op, "delta", a->delta, dt, 3, CHM_DIMS(B, T, Di)));
    CHM_TRY(chm_check_shape(be, op, "A", a->A, dt, 2, CHM_DIMS(Di, CHM_ANY)));
    int64_t N = a->A->shape[1];
    CHM_TRY(chm_check_shape(be, op, "Bm", a->Bm, dt, 3, CHM_DIMS(B, T, N)));
    CHM_TRY(chm_check_shape(be, op, "Cm", a->Cm, dt, 3, CHM_DIMS(B, T, N)));
    if (a->D) CHM_TRY(chm_check_shape(be, op, "D", a->D, dt, 1, CHM_DIMS(Di)));
    if (a->z) CHM_TRY(chm_check_shape(be, op, "z", a->z, dt, 3, CHM_DIMS(B, T, Di)));
    if (a->delta_bias)
        CHM_TRY(chm_check_shape(be, op, "delta_bias", a->delta_bias, dt, 1, CHM_DIMS(Di)));
    CHM_TRY(chm_check_same(be, op, "y", y, "u", a->u));
    CHM_TRY(chm_check_shape(be, op, "h", h, dt, 3, CHM_DIMS(B, Di, N)));
    const chm_tensor *in[] = {a->u, a->delta, a->A, a->Bm, a->Cm, a->D, a->z, a->delta_bias, h};
    const char *names[] = {"u", "delta", "A", "Bm", "Cm", "D", "z", "delta_bias", "h"};
    for (int i = 0; i < 9; i++) {
        CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(y, in[i]), "y overlaps %s", names[i]));
        if (i < 8)
            CHM_TRY(
                chm_check_arg(be, op, !chm_tensors_overlap(h, in[i]), "h overlaps %s", names[i]));
    }
    return chm_fault_after(be, "selective_scan_step", y, be->ops->selective_scan_step(be, y, h, a));
}
