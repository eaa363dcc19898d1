/*
 * convert.c: the cpu backend's fill, copy and cast.
 *
 * These are the only cpu ops that touch bf16 and f16 (storage formats here).
 * fill and copy work for every dtype, I32 included; cast converts between
 * f32, f64, bf16 and f16 in any direction. Every element is read exactly as a
 * double and rounded ONCE to the destination, round-to-nearest-even: f64 ->
 * bf16/f16 goes through f32 rounded to odd (below), so the result equals the
 * correctly rounded value rather than a double rounding through f32.
 */
#include "cpu.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/half.h"

/* Below this many elements one thread is faster than waking the team. */
#define PAR_MIN 32768

/*
 * f64 -> f32 rounded to odd: truncate toward zero, then set the last mantissa
 * bit when the truncation was inexact. Rounding that result to nearest-even
 * in any format at least 2 bits narrower than f32 (bf16 keeps 8, f16 11 of
 * f32's 24) gives the same answer as rounding the f64 directly (Boldo and
 * Melquiond, "When double rounding is odd", 2005). NaN and infinities pass.
 */
static float f64_to_f32_odd(double d) {
    float f = (float)d;
    if (isnan(d) || (double)f == d) return f;
    if (fabs((double)f) > fabs(d)) f = nextafterf(f, 0.0f); /* rounded away: step back */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u |= 1u;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Element i of a float tensor's storage, exactly, as a double. */
static double load_float(const void *p, chm_dtype dt, int64_t i) {
    switch (dt) {
    case CHM_F32: return ((const float *)p)[i];
    case CHM_F64: return ((const double *)p)[i];
    case CHM_BF16: return chm_bf16_to_f32(((const uint16_t *)p)[i]);
    case CHM_F16: return chm_f16_to_f32(((const uint16_t *)p)[i]);
    default: return 0; /* not reached: the wrappers admit float dtypes only */
    }
}

/* Store v into element i of a float tensor's storage, rounded to nearest even. */
static void store_float(void *p, chm_dtype dt, int64_t i, double v) {
    switch (dt) {
    case CHM_F32: ((float *)p)[i] = (float)v; break;
    case CHM_F64: ((double *)p)[i] = v; break;
    case CHM_BF16: ((uint16_t *)p)[i] = chm_f32_to_bf16(f64_to_f32_odd(v)); break;
    case CHM_F16: ((uint16_t *)p)[i] = chm_f32_to_f16(f64_to_f32_odd(v)); break;
    default: break; /* not reached */
    }
}

/* Repeat one element's bytes (2, 4 or 8 of them) n times from p. */
static void fill_pattern(void *p, int64_t n, const unsigned char *elem, size_t es) {
    if (es == 2) {
        uint16_t v, *d = p;
        memcpy(&v, elem, sizeof v);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) d[i] = v;
    } else if (es == 4) {
        uint32_t v, *d = p;
        memcpy(&v, elem, sizeof v);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) d[i] = v;
    } else {
        uint64_t v, *d = p;
        memcpy(&v, elem, sizeof v);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) d[i] = v;
    }
}

chm_status chm_cpu_fill(chm_backend *be, const chm_tensor *t, double value) {
    unsigned char elem[8] = {0};
    if (t->dtype == CHM_I32) {
        /* Converting NaN or an out-of-range double to int is undefined in C. */
        if (!(value >= INT32_MIN && value <= INT32_MAX) || value != floor(value))
            return CHM_ERR(&be->err, CHM_ERR_INVALID_ARG,
                           "fill: %g is not an int32 value, so it cannot fill an i32 tensor",
                           value);
        int32_t v = (int32_t)value;
        memcpy(elem, &v, sizeof v);
    } else {
        store_float(elem, t->dtype, 0, value);
    }
    fill_pattern(chm_cpu_ptr(t), chm_tensor_numel(t), elem, chm_dtype_size(t->dtype));
    return CHM_OK;
}

chm_status chm_cpu_copy(chm_backend *be, const chm_tensor *dst, const chm_tensor *src) {
    (void)be;
    /* memmove: the wrapper does not forbid overlapping dst and src. */
    memmove(chm_cpu_ptr(dst), chm_cpu_ptr(src), chm_tensor_nbytes(dst));
    return CHM_OK;
}

chm_status chm_cpu_cast(chm_backend *be, const chm_tensor *dst, const chm_tensor *src) {
    (void)be;
    int64_t n = chm_tensor_numel(dst);
    if (dst->dtype == src->dtype) {
        memcpy(chm_cpu_ptr(dst), chm_cpu_ptr(src), chm_tensor_nbytes(dst));
        return CHM_OK;
    }
    void *d = chm_cpu_ptr(dst);
    const void *s = chm_cpu_ptr(src);
    chm_dtype dd = dst->dtype, sd = src->dtype;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) store_float(d, dd, i, load_float(s, sd, i));
    return CHM_OK;
}
