/*
 * check.h: argument checks shared by every op wrapper (src/backend/ops_*.c).
 *
 * Each check returns CHM_OK or fills be->err with a message naming the op,
 * the argument, what was expected and what was found, and returns the code.
 * Backends never repeat these checks.
 */
#ifndef CHIMERA_BACKEND_CHECK_H
#define CHIMERA_BACKEND_CHECK_H

#include "chimera/backend.h"

/* Return from the enclosing function when a check fails. */
#define CHM_TRY(expr)                  \
    do {                               \
        chm_status rc_ = (expr);       \
        if (rc_ != CHM_OK) return rc_; \
    } while (0)

/* Shape wildcard for chm_check_shape. */
#define CHM_ANY (-1)

/* An int64_t array literal: CHM_DIMS(B, T, C). */
#define CHM_DIMS(...) ((const int64_t[]){__VA_ARGS__})

/* Any dtype accepted by chm_check_shape's dtype argument (float or not). */
#define CHM_ANY_DTYPE ((chm_dtype)-1)

/* The op is present in be's table, else CHM_ERR_UNSUPPORTED naming the backend. */
chm_status chm_check_impl(chm_backend *be, const char *op, bool present);

/*
 * t is non-NULL (unless optional and NULL), bound to a buffer of `be`, inside
 * that buffer, aligned to its element size, with 1..4 non-negative dims.
 */
chm_status chm_check_tensor(chm_backend *be, const char *op, const char *name,
                            const chm_tensor *t);

/*
 * Full check of one tensor: chm_check_tensor, then dtype (CHM_ANY_DTYPE to
 * skip) and, when want != NULL, ndim and every dim (CHM_ANY to skip one).
 */
chm_status chm_check_shape(chm_backend *be, const char *op, const char *name,
                           const chm_tensor *t, chm_dtype dt, int ndim, const int64_t *want);

/* t's dtype is a float type. */
chm_status chm_check_float(chm_backend *be, const char *op, const char *name,
                           const chm_tensor *t);

/* a and b have the same dtype and shape. */
chm_status chm_check_same(chm_backend *be, const char *op, const char *na,
                          const chm_tensor *a, const char *nb, const chm_tensor *b);

/* a condition on arguments that must hold, with a formatted explanation. */
chm_status chm_check_arg(chm_backend *be, const char *op, bool ok, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* Output t shares no byte with any of the n named tensors (NULL entries are skipped). */
chm_status chm_check_apart(chm_backend *be, const char *op, const char *name,
                           const chm_tensor *t, int n, const chm_tensor *const *others,
                           const char *const *names);

/* No two of the n named tensors share a byte (NULL entries are skipped). */
chm_status chm_check_disjoint(chm_backend *be, const char *op, int n,
                              const chm_tensor *const *t, const char *const *names);

/* Two tensors' byte ranges overlap (same buffer). */
bool chm_tensors_overlap(const chm_tensor *a, const chm_tensor *b);

/*
 * The final call of every op wrapper: `return chm_fault_after(be, op, out,
 * be->ops->op(...));` returns rc unchanged, unless the op succeeded and
 * be->debug_fault names it (debug only, CHIMERA_DEBUG_FAULT): then `out`, the
 * op's first output (NULL: nothing to perturb), is perturbed with the
 * backend's own ops, in stream order (so it works on asynchronous backends):
 * a float output is scaled by 1.01, any other is shifted by one element
 * (copy of elements 1..n-1 onto 0..n-2). A failing perturbation returns its
 * error. With no fault set this costs one byte test.
 */
chm_status chm_fault_after(chm_backend *be, const char *op, const chm_tensor *out, chm_status rc);

/* The first gradient a selective-scan backward writes (its fault hook's output), or NULL. */
const chm_tensor *chm_scan_grads_first(const chm_scan_grads *g);

#endif
