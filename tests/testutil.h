/*
 * testutil.h: helpers shared by the Criterion tests.
 *
 * Random inputs come from a small seeded generator (never zeros), outputs are
 * poisoned with NaN before a call so that a test sees every element written,
 * and comparisons report the worst element. Host arrays are double; tensors on
 * the backend are f32 or f64, converted on the way in and out.
 */
#ifndef CHIMERA_TESTUTIL_H
#define CHIMERA_TESTUTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chimera/backend.h"

/* A tensor on the test backend together with its own buffer. */
typedef struct tt_tensor {
    chm_tensor t;
    chm_buffer *buf;
} tt_tensor;

/* A deterministic generator: xorshift64*, seeded per test. */
typedef struct tt_rng {
    uint64_t s;
} tt_rng;

static inline tt_rng tt_rng_make(uint64_t seed) {
    tt_rng r = {seed * 0x9E3779B97F4A7C15ull + 0x1234567ull};
    return r;
}

static inline uint64_t tt_next(tt_rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [lo, hi). */
static inline double tt_uniform(tt_rng *r, double lo, double hi) {
    return lo + (hi - lo) * ((double)(tt_next(r) >> 11) * (1.0 / 9007199254740992.0));
}

/* Fill n doubles uniformly in [lo, hi). */
static inline void tt_fill_uniform(tt_rng *r, double *x, int64_t n, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) x[i] = tt_uniform(r, lo, hi);
}

/* Open the cpu backend or fail the test. */
static inline chm_backend *tt_open_cpu(void) {
    chm_err err = {0};
    chm_backend *be = NULL;
    chm_status rc = chm_backend_open("cpu", NULL, &be, &err);
    cr_assert_eq(rc, CHM_OK, "cannot open cpu backend: %s", err.msg);
    return be;
}

/* Allocate a tensor with its own buffer. */
static inline tt_tensor tt_alloc(chm_backend *be, chm_dtype dt, int ndim, const int64_t *shape) {
    tt_tensor x;
    x.t = chm_tensor_make(NULL, 0, dt, ndim, shape);
    size_t nb = chm_tensor_nbytes(&x.t);
    chm_status rc = chm_buffer_alloc(be, nb ? nb : 1, &x.buf);
    cr_assert_eq(rc, CHM_OK, "alloc failed: %s", be->err.msg);
    x.t.buf = x.buf;
    return x;
}

static inline void tt_free(tt_tensor *x) {
    chm_buffer_free(x->buf);
    x->buf = NULL;
}

/* Upload doubles into a float tensor (converted to its dtype). */
static inline void tt_upload(chm_backend *be, const tt_tensor *x, const double *src) {
    int64_t n = chm_tensor_numel(&x->t);
    if (x->t.dtype == CHM_F64) {
        cr_assert_eq(chm_upload(be, &x->t, src), CHM_OK, "%s", be->err.msg);
        return;
    }
    cr_assert_eq(x->t.dtype, CHM_F32, "tt_upload handles f32 and f64");
    float *tmp = malloc((size_t)(n ? n : 1) * sizeof *tmp);
    for (int64_t i = 0; i < n; i++) tmp[i] = (float)src[i];
    cr_assert_eq(chm_upload(be, &x->t, tmp), CHM_OK, "%s", be->err.msg);
    free(tmp);
}

/* Download a float tensor into doubles. */
static inline void tt_download(chm_backend *be, const tt_tensor *x, double *dst) {
    int64_t n = chm_tensor_numel(&x->t);
    if (x->t.dtype == CHM_F64) {
        cr_assert_eq(chm_download(be, &x->t, dst), CHM_OK, "%s", be->err.msg);
        return;
    }
    cr_assert_eq(x->t.dtype, CHM_F32, "tt_download handles f32 and f64");
    float *tmp = malloc((size_t)(n ? n : 1) * sizeof *tmp);
    cr_assert_eq(chm_download(be, &x->t, tmp), CHM_OK, "%s", be->err.msg);
    for (int64_t i = 0; i < n; i++) dst[i] = tmp[i];
    free(tmp);
}

/* Upload int32 values into an I32 tensor. */
static inline void tt_upload_i32(chm_backend *be, const tt_tensor *x, const int32_t *src) {
    cr_assert_eq(chm_upload(be, &x->t, src), CHM_OK, "%s", be->err.msg);
}

/* Poison a float tensor with NaN (before a call whose output must be fully written). */
static inline void tt_poison(chm_backend *be, const tt_tensor *x) {
    cr_assert_eq(chm_fill(be, &x->t, NAN), CHM_OK, "%s", be->err.msg);
}

/*
 * Compare got against want: every element finite and
 * |got - want| <= atol + rtol*|want|. Reports the worst element with a label.
 */
static inline void tt_assert_close(const char *what, const double *got, const double *want,
                                   int64_t n, double atol, double rtol) {
    int64_t worst = -1;
    double worst_excess = 0;
    for (int64_t i = 0; i < n; i++) {
        cr_assert(isfinite(got[i]), "%s: element %lld is not finite (%g): not written?", what,
                  (long long)i, got[i]);
        double err = fabs(got[i] - want[i]), tol = atol + rtol * fabs(want[i]);
        if (err > tol && err - tol > worst_excess) {
            worst_excess = err - tol;
            worst = i;
        }
    }
    cr_assert(worst < 0, "%s: element %lld is %.17g, expected %.17g (n=%lld, atol %g, rtol %g)",
              what, (long long)worst, worst >= 0 ? got[worst] : 0.0,
              worst >= 0 ? want[worst] : 0.0, (long long)n, atol, rtol);
}

/* Relative L2 error ||got - want|| / max(||want||, tiny). */
static inline double tt_rel_l2(const double *got, const double *want, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    return sqrt(num) / (den > 1e-300 ? sqrt(den) : 1e-150);
}

/* The call returned `code` and be->err's message names `op` and holds `needle`. */
static inline void tt_expect_fail(chm_backend *be, chm_status rc, chm_status code, const char *op,
                                  const char *needle) {
    cr_assert_eq(rc, code, "expected %s, got %s: %s", chm_status_name(code), chm_status_name(rc),
                 be->err.msg);
    cr_assert(strstr(be->err.msg, op) != NULL, "message does not name %s: %s", op, be->err.msg);
    cr_assert(strstr(be->err.msg, needle) != NULL, "message lacks '%s': %s", needle, be->err.msg);
}

/* Default tolerances for comparisons against an f64 reference. */
#define TT_RTOL(dt) ((dt) == CHM_F64 ? 1e-12 : 1e-5)
#define TT_ATOL(dt) ((dt) == CHM_F64 ? 1e-12 : 1e-5)

/* Allocate n doubles (test memory, checked). */
static inline double *tt_dalloc(int64_t n) {
    double *p = calloc((size_t)(n ? n : 1), sizeof *p);
    cr_assert_not_null(p);
    return p;
}

#endif
