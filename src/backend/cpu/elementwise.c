/*
 * elementwise.c: the cpu backend's add, scale, axpy and sum_rows.
 *
 * add:      out[n] = a[n] + b[n]        (out may alias a or b exactly)
 * scale:    out[n] = alpha * x[n]       (out may alias x exactly)
 * axpy:     y[n] += alpha * x[n]
 * sum_rows: out[C] += sum_r x[r,C]      (bias gradients; ACCUMULATES)
 *
 * Each body is written once by a macro and instantiated for float and double;
 * the arithmetic on alpha is done in double and rounded once per element.
 * Exact aliasing is safe because element i is read before it is written and
 * by the same iteration. sum_rows reduces each column in row order in double,
 * one column per iteration, so its result does not depend on the threads.
 */
#include "cpu.h"

/* Below this many elements one thread is faster than waking the team. */
#define PAR_MIN 32768

#define ELEMENTWISE_OPS(T)                                                                         \
    static void add_##T(T *out, const T *a, const T *b, int64_t n) {                               \
        _Pragma("omp parallel for schedule(static) if (n > PAR_MIN)")                              \
        for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];                                      \
    }                                                                                              \
    static void scale_##T(T *out, const T *x, double alpha, int64_t n) {                           \
        _Pragma("omp parallel for schedule(static) if (n > PAR_MIN)")                              \
        for (int64_t i = 0; i < n; i++) out[i] = (T)(alpha * x[i]);                                \
    }                                                                                              \
    static void axpy_##T(T *y, const T *x, double alpha, int64_t n) {                              \
        _Pragma("omp parallel for schedule(static) if (n > PAR_MIN)")                              \
        for (int64_t i = 0; i < n; i++) y[i] = (T)(y[i] + alpha * x[i]);                           \
    }                                                                                              \
    /* out[C] += column sums of x [R,C], each summed in row order in double. */                    \
    static void sum_rows_##T(T *out, const T *x, int64_t rows, int64_t cols) {                     \
        _Pragma("omp parallel for schedule(static) if (rows * cols > PAR_MIN)")                    \
        for (int64_t c = 0; c < cols; c++) {                                                       \
            double s = 0;                                                                          \
            for (int64_t r = 0; r < rows; r++) s += x[r * cols + c];                               \
            out[c] = (T)(out[c] + s);                                                              \
        }                                                                                          \
    }

ELEMENTWISE_OPS(float)
ELEMENTWISE_OPS(double)

chm_status chm_cpu_add(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                       const chm_tensor *b) {
    int64_t n = chm_tensor_numel(out);
    switch (out->dtype) {
    case CHM_F32: add_float(chm_cpu_ptr(out), chm_cpu_ptr(a), chm_cpu_ptr(b), n); break;
    case CHM_F64: add_double(chm_cpu_ptr(out), chm_cpu_ptr(a), chm_cpu_ptr(b), n); break;
    default: return chm_cpu_bad_dtype(be, "add", out->dtype);
    }
    return CHM_OK;
}

chm_status chm_cpu_scale(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                         double alpha) {
    int64_t n = chm_tensor_numel(out);
    switch (out->dtype) {
    case CHM_F32: scale_float(chm_cpu_ptr(out), chm_cpu_ptr(x), alpha, n); break;
    case CHM_F64: scale_double(chm_cpu_ptr(out), chm_cpu_ptr(x), alpha, n); break;
    default: return chm_cpu_bad_dtype(be, "scale", out->dtype);
    }
    return CHM_OK;
}

chm_status chm_cpu_axpy(chm_backend *be, const chm_tensor *y, const chm_tensor *x, double alpha) {
    int64_t n = chm_tensor_numel(y);
    switch (y->dtype) {
    case CHM_F32: axpy_float(chm_cpu_ptr(y), chm_cpu_ptr(x), alpha, n); break;
    case CHM_F64: axpy_double(chm_cpu_ptr(y), chm_cpu_ptr(x), alpha, n); break;
    default: return chm_cpu_bad_dtype(be, "axpy", y->dtype);
    }
    return CHM_OK;
}

chm_status chm_cpu_sum_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    int64_t rows = chm_tensor_rows(x), cols = chm_tensor_cols(x);
    switch (x->dtype) {
    case CHM_F32: sum_rows_float(chm_cpu_ptr(out), chm_cpu_ptr(x), rows, cols); break;
    case CHM_F64: sum_rows_double(chm_cpu_ptr(out), chm_cpu_ptr(x), rows, cols); break;
    default: return chm_cpu_bad_dtype(be, "sum_rows", x->dtype);
    }
    return CHM_OK;
}
