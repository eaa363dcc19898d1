/*
 * ops_selective_scan.c: checked wrappers of the Mamba-1 selective scan.
 *
 * u, delta, z (optional), y, dy [B,T,Di]; A [Di,N]; Bm, Cm [B,T,N];
 * D, delta_bias [Di] optional; h_saved [B, ceil(T/16), Di, N] f32 optional and
 * y_saved [B,T,Di] optional, with z only (the forward's outputs, the backward's
 * inputs). All other float tensors share
 * u's dtype. Outputs (y, h_saved, y_saved in the forward; the gradients) must not share
 * bytes with any other tensor of the call. The backward ACCUMULATES into every
 * gradient it is given except those grads_set names (written); a NULL gradient
 * is skipped, and dD, dz, ddelta_bias need their input to be present.
 */
#include "check.h"

/* The tensors of chm_scan_args, in one order, with their names (then h_saved, y_saved and
   dy: the backward's other inputs). The first SCAN_NIN have a gradient in chm_scan_grads. */
#define SCAN_NIN 8
static const char *const scan_in_names[SCAN_NIN + 3] = {
    "u", "delta", "A", "Bm", "Cm", "D", "z", "delta_bias", "h_saved", "y_saved", "dy"};

static void scan_inputs(const chm_scan_args *a, const chm_tensor *in[SCAN_NIN]) {
    const chm_tensor *t[SCAN_NIN] = {a->u, a->delta, a->A, a->Bm, a->Cm, a->D, a->z,
                                     a->delta_bias};
    for (int i = 0; i < SCAN_NIN; i++) in[i] = t[i];
}

/* Every input of the scan: presence, dtype (u's) and shape. */
static chm_status check_args(chm_backend *be, const char *op, const chm_scan_args *a) {
    CHM_TRY(chm_check_arg(be, op, a != NULL, "the scan arguments are NULL"));
    CHM_TRY(chm_check_float(be, op, "u", a->u));
    const chm_tensor *u = a->u;
    chm_dtype dt = u->dtype;
    CHM_TRY(chm_check_shape(be, op, "u", u, dt, 3, CHM_DIMS(CHM_ANY, CHM_ANY, CHM_ANY)));
    int64_t B = u->shape[0], T = u->shape[1], Di = u->shape[2];
    CHM_TRY(chm_check_shape(be, op, "delta", a->delta, dt, 3, CHM_DIMS(B, T, Di)));
    CHM_TRY(chm_check_shape(be, op, "A", a->A, dt, 2, CHM_DIMS(Di, CHM_ANY)));
    int64_t N = a->A->shape[1];
    CHM_TRY(chm_check_shape(be, op, "Bm", a->Bm, dt, 3, CHM_DIMS(B, T, N)));
    CHM_TRY(chm_check_shape(be, op, "Cm", a->Cm, dt, 3, CHM_DIMS(B, T, N)));
    if (a->D) CHM_TRY(chm_check_shape(be, op, "D", a->D, dt, 1, CHM_DIMS(Di)));
    if (a->z) CHM_TRY(chm_check_shape(be, op, "z", a->z, dt, 3, CHM_DIMS(B, T, Di)));
    if (a->delta_bias)
        CHM_TRY(chm_check_shape(be, op, "delta_bias", a->delta_bias, dt, 1, CHM_DIMS(Di)));
    int64_t K = (T + CHM_SCAN_SAVE_STRIDE - 1) / CHM_SCAN_SAVE_STRIDE;
    if (a->h_saved)
        CHM_TRY(chm_check_shape(be, op, "h_saved", a->h_saved, CHM_F32, 4, CHM_DIMS(B, K, Di, N)));
    if (a->y_saved) {
        CHM_TRY(chm_check_arg(be, op, a->z != NULL,
                              "y_saved is given but z is absent: it holds the output before the "
                              "gate z; pass NULL without a gate"));
        CHM_TRY(chm_check_shape(be, op, "y_saved", a->y_saved, dt, 3, CHM_DIMS(B, T, Di)));
    }
    CHM_TRY(chm_check_arg(be, op, a->grads_set < (1u << SCAN_NIN),
                          "grads_set = 0x%x has bits past the %d gradients", a->grads_set,
                          SCAN_NIN));
    return CHM_OK;
}

chm_status chm_selective_scan_fwd(chm_backend *be, const chm_tensor *y, const chm_scan_args *a) {
    const char *op = "selective_scan_fwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->selective_scan_fwd != NULL));
    CHM_TRY(check_args(be, op, a));
    CHM_TRY(chm_check_same(be, op, "y", y, "u", a->u));
    const chm_tensor *in[SCAN_NIN + 2];
    scan_inputs(a, in);
    CHM_TRY(chm_check_apart(be, op, "y", y, SCAN_NIN, in, scan_in_names));
    in[SCAN_NIN] = y;  /* h_saved: apart from the inputs and y; y_saved from those and h_saved */
    in[SCAN_NIN + 1] = a->h_saved;
    static const char *const hs_others[SCAN_NIN + 2] = {
        "u", "delta", "A", "Bm", "Cm", "D", "z", "delta_bias", "y", "h_saved"};
    if (a->h_saved)
        CHM_TRY(chm_check_apart(be, op, "h_saved", a->h_saved, SCAN_NIN + 1, in, hs_others));
    if (a->y_saved)
        CHM_TRY(chm_check_apart(be, op, "y_saved", a->y_saved, SCAN_NIN + 2, in, hs_others));
    return chm_fault_after(be, "selective_scan_fwd", y, be->ops->selective_scan_fwd(be, y, a));
}

/*
 * One optional gradient: absent, or shaped like its input `like` (which must
 * be present: there is no gradient of an absent input).
 */
static chm_status check_grad(chm_backend *be, const char *op, const char *name,
                             const chm_tensor *grad, const char *like_name,
                             const chm_tensor *like) {
    if (!grad) return CHM_OK;
    CHM_TRY(chm_check_arg(be, op, like != NULL, "%s is given but %s is absent", name,
                          like_name));
    return chm_check_same(be, op, name, grad, like_name, like);
}

#define SCAN_NGRAD 8

chm_status chm_selective_scan_bwd(chm_backend *be, const chm_scan_grads *g,
                                  const chm_tensor *dy, const chm_scan_args *a) {
    const char *op = "selective_scan_bwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->selective_scan_bwd != NULL));
    CHM_TRY(check_args(be, op, a));
    CHM_TRY(chm_check_arg(be, op, g != NULL, "the gradient struct is NULL"));
    CHM_TRY(chm_check_same(be, op, "dy", dy, "u", a->u));
    /* Gradients in scan_in_names' order, then h_saved, y_saved and dy: each must stay apart
       from all. */
    const chm_tensor *grads[SCAN_NGRAD] = {g->du, g->ddelta, g->dA, g->dBm,
                                           g->dCm, g->dD,    g->dz, g->ddelta_bias};
    static const char *const grad_names[SCAN_NGRAD] = {"du",  "ddelta", "dA", "dBm",
                                                       "dCm", "dD",     "dz", "ddelta_bias"};
    const chm_tensor *in[SCAN_NIN + 3];
    scan_inputs(a, in);
    in[SCAN_NIN] = a->h_saved;
    in[SCAN_NIN + 1] = a->y_saved;
    in[SCAN_NIN + 2] = dy;
    for (int i = 0; i < SCAN_NGRAD; i++) {
        if (!grads[i]) continue;
        CHM_TRY(check_grad(be, op, grad_names[i], grads[i], scan_in_names[i], in[i]));
        CHM_TRY(chm_check_apart(be, op, grad_names[i], grads[i], SCAN_NIN + 3, in, scan_in_names));
        CHM_TRY(chm_check_apart(be, op, grad_names[i], grads[i], SCAN_NGRAD - i - 1, grads + i + 1,
                            grad_names + i + 1));
    }
    return chm_fault_after(be, "selective_scan_bwd", chm_scan_grads_first(g),
                           be->ops->selective_scan_bwd(be, g, dy, a));
}
