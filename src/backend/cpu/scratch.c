/*
 * scratch.c: helpers of the cpu ops that compute in double: copying tensor
 * rows into double scratch and back (one rounding on f32), and per-thread
 * scratch for OpenMP regions, allocated before any output is touched.
 */
#include "cpu.h"

#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* dst[rows, cols] = t's elements at `at + r*stride + c`, as doubles. */
void chm_cpu_load_rows(double *dst, const chm_tensor *t, int64_t at, int64_t rows, int64_t cols,
                       int64_t stride) {
    if (t->dtype == CHM_F64) {
        const double *p = (const double *)chm_cpu_ptr(t) + at;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) dst[r * cols + c] = p[r * stride + c];
    } else {
        const float *p = (const float *)chm_cpu_ptr(t) + at;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) dst[r * cols + c] = p[r * stride + c];
    }
}

/* The inverse of chm_cpu_load_rows: set (add == false) or add into t, rounding once. */
void chm_cpu_store_rows(const chm_tensor *t, int64_t at, int64_t rows, int64_t cols,
                        int64_t stride, const double *src, bool add) {
    if (t->dtype == CHM_F64) {
        double *p = (double *)chm_cpu_ptr(t) + at;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++)
                p[r * stride + c] = (add ? p[r * stride + c] : 0.0) + src[r * cols + c];
    } else {
        float *p = (float *)chm_cpu_ptr(t) + at;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++)
                p[r * stride + c] = (float)((add ? (double)p[r * stride + c] : 0.0) +
                                            src[r * cols + c]);
    }
}

/* Scratch of `per` doubles for each thread of the next parallel region, or NULL. */
double *chm_cpu_thread_scratch(int64_t per) {
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    return malloc((size_t)(nt * per + 1) * sizeof(double));
}

/* This thread's slice of chm_cpu_thread_scratch. */
double *chm_cpu_my_scratch(double *mem, int64_t per) {
    int id = 0;
#ifdef _OPENMP
    id = omp_get_thread_num();
#endif
    return mem + id * per;
}
