/*
 * test_vk_cast.c: the vulkan backend's 16-bit conversions (shaders/half.glsl, which every
 * _bf16 and _f16 shader uses) bit for bit against the cpu backend's: every f16 and bf16
 * pattern to f32, and to f16 and bf16 from f32 values that hit every case of the rounding
 * (each 16-bit value, the midpoints between neighbours: ties, and just either side of
 * them, subnormals, overflow, infinities, NaNs) plus random bit patterns. NaN matches NaN.
 */
#include <string.h>

#include "vk_harness.h"

/* n values of dt: src (raw) cast to dst_dt on be, downloaded raw into out. */
static void cast_on(chm_backend *be, chm_dtype src_dt, chm_dtype dst_dt, const void *src,
                    int64_t n, void *out) {
    tt_tensor s = tt_alloc(be, src_dt, 1, &n), d = tt_alloc(be, dst_dt, 1, &n);
    cr_assert_eq(chm_upload(be, &s.t, src), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_cast(be, &d.t, &s.t), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_download(be, &d.t, out), CHM_OK, "%s", be->err.msg);
    tt_free(&s);
    tt_free(&d);
}

/* Whether h is a NaN of dt (f16 or bf16). */
static bool nan16(uint16_t h, chm_dtype dt) {
    if (dt == CHM_F16) return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
    return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu);
}

/* Every 16-bit pattern of dt to f32: the same bits on both backends (NaN as NaN). */
static void check_widen(pair *bp, chm_dtype dt) {
    int64_t n = 65536;
    uint16_t *h = malloc((size_t)n * sizeof *h);
    uint32_t *want = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) h[i] = (uint16_t)i;
    cast_on(bp->cpu, dt, CHM_F32, h, n, want);
    cast_on(bp->vk, dt, CHM_F32, h, n, got);
    for (int64_t i = 0; i < n; i++) {
        float w, g;
        memcpy(&w, &want[i], 4), memcpy(&g, &got[i], 4);
        if (isnan(w) && isnan(g)) continue;
        cr_assert_eq(got[i], want[i], "%s 0x%04x -> f32: vulkan 0x%08x, cpu 0x%08x",
                     chm_dtype_name(dt), (unsigned)i, got[i], want[i]);
    }
    free(h), free(want), free(got);
}

/* f32 values that reach every case of the rounding to dt, then random patterns. */
static void check_narrow(pair *bp, chm_dtype dt) {
    int64_t per = 6, n16 = 65536, nrand = 1 << 16, n = per * n16 + nrand;
    uint16_t *h = malloc((size_t)n16 * sizeof *h);
    float *wide = malloc((size_t)n16 * 4), *src = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n16; i++) h[i] = (uint16_t)i;
    cast_on(bp->cpu, dt, CHM_F32, h, n16, wide);
    tt_rng r = tt_rng_make(4242 + (uint64_t)dt);
    for (int64_t i = 0; i < n16; i++) {
        float a = wide[i], b = wide[(i + 1) % n16]; /* the next pattern: usually the neighbour */
        uint32_t u;
        memcpy(&u, &a, 4);
        float mid = (float)(((double)a + (double)b) / 2), up, dn;
        uint32_t mu;
        memcpy(&mu, &mid, 4);
        uint32_t mu1 = mu + 1, mu0 = mu - 1;
        memcpy(&up, &mu1, 4), memcpy(&dn, &mu0, 4);
        uint32_t lo = u ^ 1u; /* a, one f32 ulp off */
        float al;
        memcpy(&al, &lo, 4);
        float v[6] = {a, mid, up, dn, al, -mid};
        memcpy(src + per * i, v, sizeof v);
    }
    for (int64_t i = 0; i < nrand; i++) {
        uint32_t u = (uint32_t)(tt_next(&r) >> 32);
        memcpy(&src[per * n16 + i], &u, 4);
    }
    uint16_t *want = malloc((size_t)n * 2), *got = malloc((size_t)n * 2);
    cast_on(bp->cpu, CHM_F32, dt, src, n, want);
    cast_on(bp->vk, CHM_F32, dt, src, n, got);
    for (int64_t i = 0; i < n; i++) {
        if (nan16(want[i], dt) && nan16(got[i], dt)) continue;
        uint32_t u;
        memcpy(&u, &src[i], 4);
        cr_assert_eq(got[i], want[i], "f32 0x%08x -> %s: vulkan 0x%04x, cpu 0x%04x", u,
                     chm_dtype_name(dt), got[i], want[i]);
    }
    free(h), free(wide), free(src), free(want), free(got);
}

Test(vk_cast, sixteen_bit_conversions_match_cpu_bit_for_bit) {
    pair bp = pair_open();
    if (!(bp.vk->caps & CHM_CAP_F16)) {
        pair_close(&bp);
        cr_skip_test("the Vulkan device has no 16-bit storage");
    }
    check_widen(&bp, CHM_F16);
    check_widen(&bp, CHM_BF16);
    check_narrow(&bp, CHM_F16);
    check_narrow(&bp, CHM_BF16);
    pair_close(&bp);
}
