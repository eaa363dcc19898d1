/*
 * convert.c: the vulkan backend's fill, copy and cast (shaders fill.comp,
 * copy.comp, cast.comp).
 *
 * fill and copy handle every dtype as raw words: 16-bit dtypes need the
 * device's 16-bit storage (CHM_CAP_BF16/F16), f64 is two 32-bit words.
 * A fill whose bytes start and end 16-aligned stores 16-byte words (the
 * value's bits repeated), as copy does: one invocation per element of a
 * bf16 tensor was 4-8x the invocations the same bytes need.
 * The fill value is converted on the host exactly as the cpu backend does
 * (rounded once, to nearest even). copy picks the widest word both ends
 * and the size allow (16 bytes, else 4, else 2) and goes through a scratch
 * buffer when src and dst overlap in part. cast converts between f32, bf16
 * and f16; f64 is not a vulkan compute dtype. All three are elementwise:
 * chm_vk_run_elems splits tensors larger than one binding may span
 * (vk_split.c).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/half.h"
#include "vk.h"

/* 16-bit dtypes need 16-bit storage; say so with the switch that may have turned it off. */
static chm_status need_storage16(chm_vk *vk, const char *op, chm_dtype dt) {
    if (vk->caps.storage16) return CHM_OK;
    return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                   "%s: %s tensors need 16-bit storage, which %s lacks (or "
                   "CHIMERA_VULKAN_DISABLE=16bit turned off); use f32", op, chm_dtype_name(dt),
                   vk->props.deviceName);
}

/* f64 -> f32 rounded to odd, so that a second rounding to 16 bits is correct (see cpu/convert.c). */
static float to_f32_odd(double d) {
    float f = (float)d;
    if (isnan(d) || (double)f == d) return f;
    if (fabs((double)f) > fabs(d)) f = nextafterf(f, 0.0f);
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u |= 1u;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The bits of `value` in dtype dt: lo (and hi for f64). */
static chm_status fill_bits(chm_vk *vk, chm_dtype dt, double value, uint32_t *lo, uint32_t *hi) {
    *hi = 0;
    switch (dt) {
    case CHM_F32: {
        float f = (float)value;
        memcpy(lo, &f, 4);
        return CHM_OK;
    }
    case CHM_F64: {
        uint64_t u;
        memcpy(&u, &value, 8);
        *lo = (uint32_t)u;
        *hi = (uint32_t)(u >> 32);
        return CHM_OK;
    }
    case CHM_BF16: *lo = chm_f32_to_bf16(to_f32_odd(value)); return CHM_OK;
    case CHM_F16: *lo = chm_f32_to_f16(to_f32_odd(value)); return CHM_OK;
    default:
        /* Converting NaN or an out-of-range double to int is undefined in C. */
        if (!(value >= INT32_MIN && value <= INT32_MAX) || value != floor(value))
            return CHM_ERR(&vk->be->err, CHM_ERR_INVALID_ARG,
                           "fill: %g is not an int32 value, so it cannot fill an i32 tensor",
                           value);
        int32_t v = (int32_t)value;
        memcpy(lo, &v, 4);
        return CHM_OK;
    }
}

chm_status chm_vk_fill(chm_backend *be, const chm_tensor *t, double value) {
    chm_vk *vk = chm_vk_ctx(be);
    size_t es = chm_dtype_size(t->dtype);
    if (es == 2) CHM_TRY(need_storage16(vk, "fill", t->dtype));
    struct {
        uint32_t n, lo, hi; /* n: set per dispatch by chm_vk_run_elems */
    } pc = {0, 0, 0};
    CHM_TRY(fill_bits(vk, t->dtype, value, &pc.lo, &pc.hi));
    chm_vk_dispatch d = {
        .shader = es == 2 ? "fill_16" : es == 4 ? "fill_32" : "fill_64",
        .nbind = 1, .bind = {t}, .writes = 1,
        .push = &pc, .push_size = sizeof pc, .wg = vk->caps.wg_elem,
    };
    chm_vk_range r = chm_vk_tensor_range(t);
    if (r.lo % 16 || r.hi % 16) return chm_vk_run_elems(vk, &d, chm_tensor_numel(t));
    /* 16-byte words: the 64-bit pattern of the value (16-bit: four copies, 32-bit: two) */
    if (es == 2) pc.lo |= pc.lo << 16;
    if (es <= 4) pc.hi = pc.lo;
    d.shader = "fill_128";
    d.unit[0] = 16;
    return chm_vk_run_elems(vk, &d, (int64_t)((r.hi - r.lo) / 16));
}

/* dst = src as words of `unit` bytes; the ranges do not overlap. */
static chm_status copy_words(chm_vk *vk, const chm_tensor *dst, const chm_tensor *src) {
    chm_vk_range rd = chm_vk_tensor_range(dst), rs = chm_vk_tensor_range(src);
    VkDeviceSize bytes = rd.hi - rd.lo;
    uint32_t unit = 2;
    if (rd.lo % 16 == 0 && rs.lo % 16 == 0 && bytes % 16 == 0) unit = 16;
    else if (rd.lo % 4 == 0 && rs.lo % 4 == 0 && bytes % 4 == 0) unit = 4;
    else CHM_TRY(need_storage16(vk, "copy", dst->dtype));
    struct {
        uint32_t n; /* words; set per dispatch by chm_vk_run_elems */
    } pc = {0};
    chm_vk_dispatch d = {
        .shader = unit == 16 ? "copy_128" : unit == 4 ? "copy_32" : "copy_16",
        .nbind = 2, .bind = {src, dst}, .writes = 2, .unit = {(uint8_t)unit, (uint8_t)unit},
        .push = &pc, .push_size = sizeof pc, .wg = vk->caps.wg_elem,
    };
    return chm_vk_run_elems(vk, &d, (int64_t)(bytes / unit));
}

chm_status chm_vk_copy(chm_backend *be, const chm_tensor *dst, const chm_tensor *src) {
    chm_vk *vk = chm_vk_ctx(be);
    if (chm_tensor_nbytes(dst) == 0) return CHM_OK;
    chm_vk_range rd = chm_vk_tensor_range(dst), rs = chm_vk_tensor_range(src);
    bool same_buf = rd.buf == rs.buf;
    if (same_buf && rd.lo == rs.lo) return CHM_OK; /* the same bytes */
    if (!same_buf || rd.hi <= rs.lo || rs.hi <= rd.lo) return copy_words(vk, dst, src);
    /* Overlapping in part: invocations would read bytes others already wrote. */
    chm_tensor tmp;
    CHM_TRY(chm_vk_scratch(be, src->dtype, chm_tensor_numel(src), &tmp));
    chm_status rc = copy_words(vk, &tmp, src);
    if (!rc) rc = copy_words(vk, dst, &tmp);
    chm_vk_scratch_free(be, &tmp);
    return rc;
}

static const char *cast_name(chm_dtype dt) {
    return dt == CHM_F32 ? "f32" : dt == CHM_BF16 ? "bf16" : "f16";
}

chm_status chm_vk_cast(chm_backend *be, const chm_tensor *dst, const chm_tensor *src) {
    chm_vk *vk = chm_vk_ctx(be);
    if (dst->dtype == src->dtype) return chm_vk_copy(be, dst, src);
    if (dst->dtype == CHM_F64 || src->dtype == CHM_F64)
        return CHM_ERR(&be->err, CHM_ERR_DTYPE,
                       "cast: the vulkan backend converts between f32, bf16 and f16, not %s -> "
                       "%s; use --backend cpu for f64", chm_dtype_name(src->dtype),
                       chm_dtype_name(dst->dtype));
    CHM_TRY(need_storage16(vk, "cast", dst->dtype == CHM_F32 ? src->dtype : dst->dtype));
    char name[32];
    snprintf(name, sizeof name, "cast_%s_%s", cast_name(src->dtype), cast_name(dst->dtype));
    struct {
        uint32_t n; /* set per dispatch by chm_vk_run_elems */
    } pc = {0};
    chm_vk_dispatch d = {
        .shader = name, .nbind = 2, .bind = {src, dst}, .writes = 2,
        .push = &pc, .push_size = sizeof pc, .wg = vk->caps.wg_elem,
    };
    return chm_vk_run_elems(vk, &d, chm_tensor_numel(dst));
}
