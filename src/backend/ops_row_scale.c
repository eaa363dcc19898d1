/*
 * ops_row_scale.c: checked wrappers of row_scale_fwd and row_scale_bwd
 * (contracts in backend.h).
 *
 * x, out, dout, dx [M,C] and s, ds [M], all one float dtype. out may be x
 * itself (exact alias) or share no byte with it; dx and ds (each optional)
 * share no byte with any other argument.
 */
#include "check.h"

/* x [M,C] float and s [M] of its dtype. */
static chm_status check_xs(chm_backend *be, const char *op, const chm_tensor *x,
                           const chm_tensor *s) {
    CHM_TRY(chm_check_float(be, op, "x", x));
    CHM_TRY(chm_check_shape(be, op, "x", x, x->dtype, 2, CHM_DIMS(CHM_ANY, CHM_ANY)));
    return chm_check_shape(be, op, "s", s, x->dtype, 1, CHM_DIMS(x->shape[0]));
}

/* The output `out` overlaps none of the n tensors in `others` (NULL entries skipped). */
static chm_status check_disjoint(chm_backend *be, const char *op, const char *nout,
                                 const chm_tensor *out, int n, const chm_tensor *const *others,
                                 const char *const *names) {
    for (int i = 0; i < n; i++)
        CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(out, others[i]), "%s overlaps %s", nout,
                              names[i]));
    return CHM_OK;
}

chm_status chm_row_scale_fwd(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                             const chm_tensor *s, bool sigmoid) {
    const char *op = "row_scale_fwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->row_scale_fwd != NULL));
    CHM_TRY(check_xs(be, op, x, s));
    CHM_TRY(chm_check_same(be, op, "out", out, "x", x));
    bool exact = out->buf == x->buf && out->offset == x->offset;
    CHM_TRY(chm_check_arg(be, op, exact || !chm_tensors_overlap(out, x),
                          "out overlaps x in part; it may alias it exactly or not at all"));
    CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(out, s), "out overlaps s"));
    return chm_fault_after(be, "row_scale_fwd", out,
                           be->ops->row_scale_fwd(be, out, x, s, sigmoid));
}

static chm_status row_scale_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                                const chm_tensor *dout, const chm_tensor *x, const chm_tensor *s,
                                bool sigmoid, bool set) {
    const char *op = "row_scale_bwd";
    CHM_TRY(chm_check_impl(be, op, be->ops->row_scale_bwd != NULL));
    CHM_TRY(check_xs(be, op, x, s));
    CHM_TRY(chm_check_same(be, op, "dout", dout, "x", x));
    if (dx) CHM_TRY(chm_check_same(be, op, "dx", dx, "x", x));
    if (ds) CHM_TRY(chm_check_same(be, op, "ds", ds, "s", s));
    const chm_tensor *all[] = {ds, dout, x, s};
    const char *names[] = {"ds", "dout", "x", "s"};
    if (dx) CHM_TRY(check_disjoint(be, op, "dx", dx, 4, all, names));
    if (ds) CHM_TRY(check_disjoint(be, op, "ds", ds, 3, all + 1, names + 1));
    return chm_fault_after(be, "row_scale_bwd", dx ? dx : ds,
                           be->ops->row_scale_bwd(be, dx, ds, dout, x, s, sigmoid, set));
}

chm_status chm_row_scale_bwd(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                             const chm_tensor *dout, const chm_tensor *x, const chm_tensor *s,
                             bool sigmoid) {
    return row_scale_bwd(be, dx, ds, dout, x, s, sigmoid, false);
}

chm_status chm_row_scale_bwd_set(chm_backend *be, const chm_tensor *dx, const chm_tensor *ds,
                                 const chm_tensor *dout, const chm_tensor *x, const chm_tensor *s,
                                 bool sigmoid) {
    return row_scale_bwd(be, dx, ds, dout, x, s, sigmoid, true);
}
