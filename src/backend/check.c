/* check.c: the argument checks every op wrapper shares (see check.h). */
#include "check.h"
#include "profile.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

chm_status chm_check_impl(chm_backend *be, const char *op, bool present) {
    if (present) return CHM_OK;
    return CHM_ERR(&be->err, CHM_ERR_UNSUPPORTED,
                   "%s is not implemented by the %s backend yet; run on --backend cpu, "
                   "or see `chimera info` for this backend's coverage",
                   op, be->name);
}

chm_status chm_check_tensor(chm_backend *be, const char *op, const char *name,
                            const chm_tensor *t) {
    if (!t) return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG, "%s: %s is NULL", op, name);
    if (t->ndim < 1 || t->ndim > CHM_MAX_DIMS)
        return CHM_ERR(&be->err, CHM_ERR_SHAPE, "%s: %s has %d dims (1 to %d allowed)", op,
                       name, t->ndim, CHM_MAX_DIMS);
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0)
            return CHM_ERR(&be->err, CHM_ERR_SHAPE, "%s: %s dim %d is negative", op, name, i);
    size_t es = chm_dtype_size(t->dtype);
    if (es == 0)
        return CHM_ERR(&be->err, CHM_ERR_DTYPE, "%s: %s has an unknown dtype %d", op, name,
                       (int)t->dtype);
    if (!t->buf)
        return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG, "%s: %s is not bound to a buffer", op,
                       name);
    if (t->buf->backend != be)
        return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                       "%s: %s lives on the %s backend, not on %s; copy it over first", op, name,
                       t->buf->backend ? t->buf->backend->name : "?", be->name);
    if (t->offset % es)
        return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG, "%s: %s offset %zu is not a multiple of %zu",
                       op, name, t->offset, es);
    size_t nb = chm_tensor_nbytes(t);
    if (t->offset > t->buf->size || nb > t->buf->size - t->offset)
        return CHM_ERR(&be->err, CHM_ERR_SHAPE,
                       "%s: %s (%zu bytes at offset %zu) runs past its %zu-byte buffer", op, name,
                       nb, t->offset, t->buf->size);
    return CHM_OK;
}

chm_status chm_check_shape(chm_backend *be, const char *op, const char *name,
                           const chm_tensor *t, chm_dtype dt, int ndim, const int64_t *want) {
    CHM_TRY(chm_check_tensor(be, op, name, t));
    char have[96];
    if ((int)dt != (int)CHM_ANY_DTYPE && t->dtype != dt)
        return CHM_ERR(&be->err, CHM_ERR_DTYPE, "%s: %s must be %s, got %s", op, name,
                       chm_dtype_name(dt), chm_tensor_describe(t, have, sizeof have));
    if (!want) return CHM_OK;
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        if (want[i] != CHM_ANY && want[i] != t->shape[i]) ok = false;
    if (ok) return CHM_OK;
    char exp[128];
    size_t len = (size_t)snprintf(exp, sizeof exp, "[");
    for (int i = 0; i < ndim && len < sizeof exp; i++) {
        if (want[i] == CHM_ANY)
            len += (size_t)snprintf(exp + len, sizeof exp - len, "%s*", i ? ", " : "");
        else
            len += (size_t)snprintf(exp + len, sizeof exp - len, "%s%lld", i ? ", " : "",
                                    (long long)want[i]);
    }
    if (len < sizeof exp) snprintf(exp + len, sizeof exp - len, "]");
    return CHM_ERR(&be->err, CHM_ERR_SHAPE, "%s: %s must have shape %s, got %s", op, name, exp,
                   chm_tensor_describe(t, have, sizeof have));
}

chm_status chm_check_float(chm_backend *be, const char *op, const char *name,
                           const chm_tensor *t) {
    CHM_TRY(chm_check_tensor(be, op, name, t));
    if (chm_dtype_is_float(t->dtype)) return CHM_OK;
    return CHM_ERR(&be->err, CHM_ERR_DTYPE, "%s: %s must be a float tensor, got %s", op, name,
                   chm_dtype_name(t->dtype));
}

chm_status chm_check_same(chm_backend *be, const char *op, const char *na,
                          const chm_tensor *a, const char *nb, const chm_tensor *b) {
    CHM_TRY(chm_check_tensor(be, op, na, a));
    CHM_TRY(chm_check_tensor(be, op, nb, b));
    if (a->dtype == b->dtype && chm_tensor_same_shape(a, b)) return CHM_OK;
    char da[96], db[96];
    return CHM_ERR(&be->err, a->dtype != b->dtype ? CHM_ERR_DTYPE : CHM_ERR_SHAPE,
                   "%s: %s and %s must match: %s vs %s", op, na, nb,
                   chm_tensor_describe(a, da, sizeof da), chm_tensor_describe(b, db, sizeof db));
}

chm_status chm_check_arg(chm_backend *be, const char *op, bool ok, const char *fmt, ...) {
    if (ok) return CHM_OK;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG, "%s: %s", op, msg);
}

bool chm_tensors_overlap(const chm_tensor *a, const chm_tensor *b) {
    if (!a || !b || a->buf != b->buf) return false;
    size_t a0 = a->offset, a1 = a->offset + chm_tensor_nbytes(a);
    size_t b0 = b->offset, b1 = b->offset + chm_tensor_nbytes(b);
    return a0 < b1 && b0 < a1;
}

chm_status chm_check_apart(chm_backend *be, const char *op, const char *name,
                           const chm_tensor *t, int n, const chm_tensor *const *others,
                           const char *const *names) {
    for (int i = 0; i < n; i++)
        CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(t, others[i]),
                              "%s overlaps %s; outputs need their own memory", name, names[i]));
    return CHM_OK;
}

chm_status chm_check_disjoint(chm_backend *be, const char *op, int n,
                              const chm_tensor *const *t, const char *const *names) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            CHM_TRY(chm_check_arg(be, op, !chm_tensors_overlap(t[i], t[j]),
                                  "%s and %s overlap; outputs need their own memory", names[i],
                                  names[j]));
    return CHM_OK;
}

/* Perturb out in place on its own backend: scale floats, shift anything else by one element. */
static chm_status fault_perturb(chm_backend *be, const chm_tensor *out) {
    if (chm_dtype_is_float(out->dtype)) return be->ops->scale(be, out, out, 1.01);
    int64_t n = chm_tensor_numel(out) - 1;
    if (n < 1) return CHM_OK;
    chm_tensor dst, src;
    CHM_TRY(chm_tensor_view(out, 0, 1, &n, &dst, &be->err));
    CHM_TRY(chm_tensor_view(out, 1, 1, &n, &src, &be->err));
    return be->ops->copy(be, &dst, &src);
}

chm_status chm_fault_after(chm_backend *be, const char *op, const chm_tensor *out, chm_status rc) {
    if (be->profile && rc == CHM_OK) chm_profile_after(be, op);
    if (rc != CHM_OK || !be->debug_fault[0] || !out || strcmp(be->debug_fault, op) != 0)
        return rc;
    return fault_perturb(be, out);
}

const chm_tensor *chm_scan_grads_first(const chm_scan_grads *g) {
    chm_tensor *all[] = {g->du, g->ddelta, g->dA, g->dBm, g->dCm, g->dD, g->dz, g->ddelta_bias};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) return all[i];
    return NULL;
}
