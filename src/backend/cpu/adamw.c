/*
 * adamw.c: one fused AdamW step on the cpu (decoupled weight decay).
 *
 * Per element, in double:
 *   g = grad_scale * grad
 *   m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
 *   mhat = m / (1 - b1^step)         vhat = v / (1 - b2^step)
 *   param -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * param)
 * (the decay uses the param before this step). param, grad, m, v share the
 * dtype f32 or f64 on the cpu (other backends may take 16-bit grads).
 * param_lowp [same element count] (bf16/f16, optional) receives the new
 * param as stored, rounded to nearest even through f32 (src/core/half.h).
 * Elements are independent: the loop runs in parallel and is deterministic.
 */
#include <math.h>

#include "core/half.h"
#include "cpu.h"

/* The step's scalars, with both bias corrections computed once. */
typedef struct adamw_k {
    double lr, b1, b2, eps, wd, gs;
    double c1, c2;         /* 1 - b1^step, 1 - b2^step */
    uint16_t *lowp;        /* param_lowp data or NULL */
    bool lowp_f16;         /* param_lowp is f16 (else bf16) */
} adamw_k;

/* Round a stored param into the 16-bit copy. */
static inline uint16_t to_lowp(const adamw_k *k, float p) {
    return k->lowp_f16 ? chm_f32_to_f16(p) : chm_f32_to_bf16(p);
}

/* adamw_<sfx>: one step over n elements of p, g, m, v. */
#define ADAMW_DEFINE(T, SFX)                                                             \
    static void adamw_##SFX(T *p, const T *g, T *m, T *v, int64_t n, const adamw_k *k) { \
        _Pragma("omp parallel for schedule(static) if (n > 65536)")                      \
        for (int64_t i = 0; i < n; i++) {                                                \
            double gi = k->gs * (double)g[i];                                            \
            double mi = k->b1 * (double)m[i] + (1.0 - k->b1) * gi;                       \
            double vi = k->b2 * (double)v[i] + (1.0 - k->b2) * gi * gi;                  \
            double pi = (double)p[i];                                                    \
            double upd = (mi / k->c1) / (sqrt(vi / k->c2) + k->eps) + k->wd * pi;        \
            m[i] = (T)mi;                                                                \
            v[i] = (T)vi;                                                                \
            p[i] = (T)(pi - k->lr * upd);                                                \
            if (k->lowp) k->lowp[i] = to_lowp(k, (float)p[i]);                           \
        }                                                                                \
    }

ADAMW_DEFINE(float, f32)
ADAMW_DEFINE(double, f64)

chm_status chm_cpu_adamw_step(chm_backend *be, const chm_tensor *param, const chm_tensor *grad,
                              const chm_tensor *m, const chm_tensor *v,
                              const chm_tensor *param_lowp, const chm_adamw_args *args) {
    if (grad->dtype != param->dtype)
        return CHM_ERR(&be->err, CHM_ERR_DTYPE,
                       "adamw_step: the cpu backend needs grad in param's dtype %s, got %s; "
                       "cast it first",
                       chm_dtype_name(param->dtype), chm_dtype_name(grad->dtype));
    adamw_k k = {
        .lr = args->lr, .b1 = args->beta1, .b2 = args->beta2, .eps = args->eps,
        .wd = args->weight_decay, .gs = args->grad_scale,
        .c1 = 1.0 - pow(args->beta1, (double)args->step),
        .c2 = 1.0 - pow(args->beta2, (double)args->step),
        .lowp = param_lowp ? chm_cpu_ptr(param_lowp) : NULL,
        .lowp_f16 = param_lowp && param_lowp->dtype == CHM_F16,
    };
    int64_t n = chm_tensor_numel(param);
    switch (param->dtype) {
    case CHM_F32:
        adamw_f32(chm_cpu_ptr(param), chm_cpu_ptr(grad), chm_cpu_ptr(m), chm_cpu_ptr(v), n, &k);
        return CHM_OK;
    case CHM_F64:
        adamw_f64(chm_cpu_ptr(param), chm_cpu_ptr(grad), chm_cpu_ptr(m), chm_cpu_ptr(v), n, &k);
        return CHM_OK;
    default:
        return chm_cpu_bad_dtype(be, "adamw_step", param->dtype);
    }
}
