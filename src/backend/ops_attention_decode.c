/*
 * ops_attention_decode.c: checked wrapper of attention against a key/value
 * cache (contract in backend.h).
 *
 * q and out [B,Tq,H,D], k and v [B,Tk,Hk,D], one float dtype; 1 <= Tq <= Tk;
 * Hk >= 1 divides H; scale positive and finite. out shares no byte with
 * q, k or v.
 */
#include <math.h>

#include "check.h"

chm_status chm_attention_decode(chm_backend *be, const chm_tensor *out, const chm_tensor *q,
                                const chm_tensor *k, const chm_tensor *v, double scale) {
    const char *op = "attention_decode";
    CHM_TRY(chm_check_impl(be, op, be->ops->attention_decode != NULL));
    CHM_TRY(chm_check_float(be, op, "q", q));
    CHM_TRY(
        chm_check_shape(be, op, "q", q, q->dtype, 4, CHM_DIMS(CHM_ANY, CHM_ANY, CHM_ANY, CHM_ANY)));
    CHM_TRY(chm_check_shape(be, op, "k", k, q->dtype, 4,
                            CHM_DIMS(q->shape[0], CHM_ANY, CHM_ANY, q->shape[3])));
    CHM_TRY(chm_check_same(be, op, "v", v, "k", k));
    CHM_TRY(chm_check_same(be, op, "out", out, "q", q));
    int64_t Tq = q->shape[1], Tk = k->shape[1], H = q->shape[2], Hk = k->shape[2];
    CHM_TRY(chm_check_arg(be, op, Tq >= 1 && Tq <= Tk,
                          "needs 1 <= Tq <= Tk (new queries are the last Tq of Tk positions), "
                          "got Tq = %lld, Tk = %lld",
                          (long long)Tq, (long long)Tk));
    if (Hk < 1 || H % Hk != 0)
        return CHM_ERR(&be->err, CHM_ERR_SHAPE,
                       "%s: k and v have %lld kv heads, which must be at least 1 and divide "
                       "q's %lld heads",
                       op, (long long)Hk, (long long)H);
    CHM_TRY(chm_check_arg(be, op, isfinite(scale) && scale > 0,
                          "scale must be positive and finite, got %g", scale));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(out, q), "out overlaps q"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(out, k), "out overlaps k"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(out, v), "out overlaps v"));
    return chm_fault_after(be, "attention_decode", out,
                           be->ops->attention_decode(be, out, q, k, v, scale));
}
