/*
 * test_convert.c: fill, copy, cast, upload and download on the cpu backend.
 *
 * Cast results are compared bit for bit (NaN as NaN) with a rounding written
 * here from first principles (round_to_format), not with src/core/half.c, on
 * random bit patterns of every source format plus hand-picked ties,
 * infinities, NaNs, subnormals and overflows.
 */
#include "testutil.h"

#include <float.h>
#include <stdio.h>

static const chm_dtype FLOAT_DTYPES[] = {CHM_F32, CHM_F64, CHM_BF16, CHM_F16};

/* Significand bits and normal exponent range of a float dtype. */
typedef struct fmt {
    int p, emin, emax;
} fmt;

static fmt format_of(chm_dtype dt) {
    switch (dt) {
    case CHM_F32: return (fmt){24, -126, 127};
    case CHM_BF16: return (fmt){8, -126, 127};
    case CHM_F16: return (fmt){11, -14, 15};
    default: return (fmt){53, -1022, 1023};
    }
}

/* v rounded to nearest, ties to even, in format f (subnormals, overflow to inf). */
static double round_to_format(double v, fmt f) {
    if (isnan(v) || isinf(v) || v == 0) return v;
    if (fabs(v) >= ldexp(1.0, f.emax + 1)) return copysign(INFINITY, v);
    int e;
    frexp(fabs(v), &e); /* |v| = m 2^e, m in [0.5, 1): unit exponent e-1 */
    int E = e - 1 < f.emin ? f.emin : e - 1;
    double q = ldexp(1.0, E - (f.p - 1)); /* the spacing of the format at v */
    double r = nearbyint(v / q) * q;      /* exact scaling; default mode is RNE */
    double maxf = ldexp(2.0 - ldexp(1.0, 1 - f.p), f.emax);
    return fabs(r) > maxf ? copysign(INFINITY, v) : r;
}

/* Decode element i of raw storage of dtype dt, independently of src/core/half.c. */
static double decode(const void *raw, chm_dtype dt, int64_t i) {
    if (dt == CHM_F64) return ((const double *)raw)[i];
    if (dt == CHM_F32) return ((const float *)raw)[i];
    uint16_t h = ((const uint16_t *)raw)[i];
    if (dt == CHM_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    int s = h >> 15, ex = (h >> 10) & 31, m = h & 1023;
    double v = ex == 31 ? (m ? NAN : INFINITY) : ex == 0 ? ldexp(m, -24) : ldexp(1024 + m, ex - 25);
    return s ? -v : v;
}

/* Random storage of n elements of dt: random bit patterns for 16/32-bit formats. */
static void random_raw(tt_rng *r, chm_dtype dt, void *raw, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint64_t b = tt_next(r);
        if (dt == CHM_F64) {
            /* magnitudes from 1e-12 to 1e12 and a few far outside every 16-bit range */
            double mag = pow(10.0, tt_uniform(r, -12, 12)) * (i % 17 == 0 ? 1e30 : 1.0);
            ((double *)raw)[i] = (b & 1) ? -mag : mag;
        } else if (dt == CHM_F32) {
            uint32_t u = (uint32_t)(b >> 32);
            memcpy((float *)raw + i, &u, sizeof u);
        } else {
            ((uint16_t *)raw)[i] = (uint16_t)(b >> 48);
        }
    }
}

static void assert_same_value(double got, double want, const char *what, int64_t i) {
    if (isnan(want)) {
        cr_assert(isnan(got), "%s: element %lld is %.17g, expected NaN", what, (long long)i, got);
        return;
    }
    cr_assert(got == want && signbit(got) == signbit(want),
              "%s: element %lld is %.17g, expected %.17g", what, (long long)i, got, want);
}

/* Upload src values (raw, dtype sd), cast to dd, check each element against the rounding. */
static void check_cast(chm_backend *be, chm_dtype sd, chm_dtype dd, const void *raw, int64_t n) {
    tt_tensor s = tt_alloc(be, sd, 1, (int64_t[]){n}), d = tt_alloc(be, dd, 2, (int64_t[]){1, n});
    cr_assert_eq(chm_upload(be, &s.t, raw), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_fill(be, &d.t, 0.0), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_cast(be, &d.t, &s.t), CHM_OK, "%s", be->err.msg);
    unsigned char *out = malloc((size_t)n * 8);
    cr_assert_eq(chm_download(be, &d.t, out), CHM_OK, "%s", be->err.msg);
    char what[64];
    snprintf(what, sizeof what, "cast %s -> %s", chm_dtype_name(sd), chm_dtype_name(dd));
    for (int64_t i = 0; i < n; i++)
        assert_same_value(decode(out, dd, i), round_to_format(decode(raw, sd, i), format_of(dd)),
                          what, i);
    free(out);
    tt_free(&s);
    tt_free(&d);
}

/* Values where a cast can go wrong: ties, double-rounding traps, edges of every range. */
static const double SPECIALS[] = {
    1.0 + 0x1p-8,               /* bf16 tie: to even, 1 */
    1.0 + 3 * 0x1p-8,           /* bf16 tie: to even, 1 + 2^-6 */
    1.0 + 0x1p-8 + 0x1p-30,     /* just above a bf16 tie, but a tie once rounded to f32 */
    -(1.0 + 0x1p-11 + 0x1p-40), /* same trap for f16 */
    1.0 + 0x1p-11,              /* f16 tie */
    1.0 + 0x1p-24,              /* f32 tie */
    65504.0,
    65519.99,
    65520.0,
    -65520.0, /* f16 max, below and at the tie to inf */
    0x1p-24,
    0x1p-25,
    3 * 0x1p-25,
    0x1p-25 + 0x1p-60, /* f16 subnormals and their ties */
    6.0e-5,
    1e-7,
    -3e-6, /* f16 subnormal range */
    1e-40,
    1e-39,
    0x1p-149,
    0x1p-150, /* f32 and bf16 subnormals, the f32 underflow tie */
    1e-300,
    -1e-300,
    1e300,
    -1e300,
    3.4e38,
    (double)FLT_MAX,
    3.3961e38,
    INFINITY,
    -INFINITY,
    NAN,
    -NAN,
    0.0,
    -0.0,
    1.0,
    -2.5,
};
#define N_SPECIALS ((int64_t)(sizeof SPECIALS / sizeof SPECIALS[0]))

/* Source values of dtype sd: every pattern of a 16-bit format, else random plus SPECIALS. */
static int64_t make_sources(chm_dtype sd, void **raw) {
    tt_rng r = tt_rng_make(11 + (uint64_t)sd);
    if (sd == CHM_BF16 || sd == CHM_F16) {
        uint16_t *h = malloc(65536 * sizeof *h);
        for (int64_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
        *raw = h;
        return 65536;
    }
    int64_t n = 4096 + N_SPECIALS;
    *raw = malloc((size_t)n * 8);
    random_raw(&r, sd, *raw, 4096);
    for (int64_t i = 0; i < N_SPECIALS; i++) {
        if (sd == CHM_F64)
            ((double *)*raw)[4096 + i] = SPECIALS[i];
        else
            ((float *)*raw)[4096 + i] = (float)SPECIALS[i];
    }
    return n;
}

Test(convert, cast_all_directions_round_to_nearest_even) {
    chm_backend *be = tt_open_cpu();
    for (int a = 0; a < 4; a++) {
        void *raw;
        int64_t n = make_sources(FLOAT_DTYPES[a], &raw);
        for (int b = 0; b < 4; b++) check_cast(be, FLOAT_DTYPES[a], FLOAT_DTYPES[b], raw, n);
        free(raw);
    }
    chm_backend_close(be);
}

Test(convert, cast_f64_to_16_bit_is_rounded_once) {
    /* Rounding f64 -> f32 -> bf16 naively would give 1.0 here; the right answer is 1 + 2^-7. */
    chm_backend *be = tt_open_cpu();
    const double v[] = {1.0 + 0x1p-8 + 0x1p-30, 1.0 + 0x1p-11 + 0x1p-40, 0x1p-25 + 0x1p-60};
    const uint16_t want_bf16[] = {0x3f81, 0x3f80, 0x3300};
    const uint16_t want_f16[] = {0x3c04, 0x3c01, 0x0001};
    tt_tensor s = tt_alloc(be, CHM_F64, 1, (int64_t[]){3});
    tt_tensor hb = tt_alloc(be, CHM_BF16, 1, (int64_t[]){3}),
              hf = tt_alloc(be, CHM_F16, 1, (int64_t[]){3});
    cr_assert_eq(chm_upload(be, &s.t, v), CHM_OK);
    cr_assert_eq(chm_cast(be, &hb.t, &s.t), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_cast(be, &hf.t, &s.t), CHM_OK, "%s", be->err.msg);
    uint16_t gb[3], gf[3];
    cr_assert_eq(chm_download(be, &hb.t, gb), CHM_OK);
    cr_assert_eq(chm_download(be, &hf.t, gf), CHM_OK);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(gb[i], want_bf16[i], "bf16[%d] = 0x%04x, expected 0x%04x", i, gb[i],
                     want_bf16[i]);
        cr_assert_eq(gf[i], want_f16[i], "f16[%d] = 0x%04x, expected 0x%04x", i, gf[i],
                     want_f16[i]);
    }
    tt_free(&s);
    tt_free(&hb);
    tt_free(&hf);
    chm_backend_close(be);
}

/* Every 16-bit pattern of dt survives dt -> wide -> dt bit for bit (NaN stays NaN). */
static void check_round_trip(chm_backend *be, chm_dtype dt, chm_dtype wide) {
    int64_t n = 65536;
    uint16_t *in = malloc((size_t)n * 2), *out = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) in[i] = (uint16_t)i;
    tt_tensor h = tt_alloc(be, dt, 1, &n), w = tt_alloc(be, wide, 1, &n);
    cr_assert_eq(chm_upload(be, &h.t, in), CHM_OK);
    cr_assert_eq(chm_cast(be, &w.t, &h.t), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_fill(be, &h.t, 0.0), CHM_OK);
    cr_assert_eq(chm_cast(be, &h.t, &w.t), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_download(be, &h.t, out), CHM_OK);
    for (int64_t i = 0; i < n; i++) {
        if (isnan(decode(in, dt, i)))
            cr_assert(isnan(decode(out, dt, i)), "%s 0x%04x: NaN lost", chm_dtype_name(dt), in[i]);
        else
            cr_assert_eq(out[i], in[i], "%s 0x%04x came back as 0x%04x via %s", chm_dtype_name(dt),
                         in[i], out[i], chm_dtype_name(wide));
    }
    free(in);
    free(out);
    tt_free(&h);
    tt_free(&w);
}

Test(convert, cast_16_bit_round_trips_are_exact) {
    chm_backend *be = tt_open_cpu();
    check_round_trip(be, CHM_BF16, CHM_F32);
    check_round_trip(be, CHM_BF16, CHM_F64);
    check_round_trip(be, CHM_F16, CHM_F32);
    check_round_trip(be, CHM_F16, CHM_F64);
    chm_backend_close(be);
}

Test(convert, cast_f16_subnormals_and_specials) {
    chm_backend *be = tt_open_cpu();
    const float v[] = {0x1p-24f,
                       0x1p-20f + 0x1p-24f,
                       0x1p-14f - 0x1p-24f,
                       0x1p-26f,
                       INFINITY,
                       -INFINITY,
                       NAN,
                       -0.0f,
                       70000.0f};
    const uint16_t want[] = {0x0001, 0x0011, 0x03ff, 0x0000, 0x7c00, 0xfc00, 0, 0x8000, 0x7c00};
    int64_t n = 9;
    tt_tensor s = tt_alloc(be, CHM_F32, 1, &n), h = tt_alloc(be, CHM_F16, 1, &n);
    cr_assert_eq(chm_upload(be, &s.t, v), CHM_OK);
    cr_assert_eq(chm_cast(be, &h.t, &s.t), CHM_OK, "%s", be->err.msg);
    uint16_t got[9];
    cr_assert_eq(chm_download(be, &h.t, got), CHM_OK);
    for (int i = 0; i < 9; i++) {
        if (i == 6)
            cr_assert((got[i] & 0x7c00) == 0x7c00 && (got[i] & 0x3ff), "NaN became 0x%04x", got[i]);
        else
            cr_assert_eq(got[i], want[i], "f16[%d] = 0x%04x, expected 0x%04x", i, got[i], want[i]);
    }
    tt_free(&s);
    tt_free(&h);
    chm_backend_close(be);
}

/* Fill a tensor of dt with value and check every stored element decodes to want. */
static void check_fill(chm_backend *be, chm_dtype dt, double value, double want) {
    int64_t n = 37;
    tt_tensor t = tt_alloc(be, dt, 2, (int64_t[]){1, n});
    cr_assert_eq(chm_fill(be, &t.t, value), CHM_OK, "%s", be->err.msg);
    unsigned char raw[37 * 8];
    cr_assert_eq(chm_download(be, &t.t, raw), CHM_OK);
    for (int64_t i = 0; i < n; i++) {
        double got = dt == CHM_I32 ? ((int32_t *)raw)[i] : decode(raw, dt, i);
        assert_same_value(got, want, chm_dtype_name(dt), i);
    }
    tt_free(&t);
}

Test(convert, fill_every_dtype) {
    chm_backend *be = tt_open_cpu();
    check_fill(be, CHM_F32, 1.25, 1.25);
    check_fill(be, CHM_F64, -0.1, -0.1);
    check_fill(be, CHM_F32, 0.1, (float)0.1);
    check_fill(be, CHM_BF16, 1.0 + 0x1p-8 + 0x1p-30, 1.0 + 0x1p-7);
    check_fill(be, CHM_BF16, -3.0, -3.0);
    check_fill(be, CHM_F16, 0.1, round_to_format(0.1, format_of(CHM_F16)));
    check_fill(be, CHM_F16, 1e6, INFINITY);
    check_fill(be, CHM_F16, NAN, NAN);
    check_fill(be, CHM_I32, -7, -7);
    check_fill(be, CHM_I32, 2147483647.0, 2147483647.0);
    chm_backend_close(be);
}

Test(convert, fill_i32_rejects_non_integers) {
    chm_backend *be = tt_open_cpu();
    tt_tensor t = tt_alloc(be, CHM_I32, 1, (int64_t[]){4});
    const double bad[] = {2.5, NAN, 3e9, -INFINITY};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(chm_fill(be, &t.t, bad[i]), CHM_ERR_INVALID_ARG, "value %g", bad[i]);
        cr_assert(strstr(be->err.msg, "fill") && strstr(be->err.msg, "i32"), "%s", be->err.msg);
    }
    tt_free(&t);
    chm_backend_close(be);
}

Test(convert, copy_every_dtype_bit_for_bit) {
    chm_backend *be = tt_open_cpu();
    tt_rng r = tt_rng_make(5);
    const chm_dtype dts[] = {CHM_F32, CHM_F64, CHM_BF16, CHM_F16, CHM_I32};
    const int64_t sizes[] = {1, 6, 1000};
    for (int d = 0; d < 5; d++) {
        for (int s = 0; s < 3; s++) {
            int64_t n = sizes[s];
            size_t nb = (size_t)n * chm_dtype_size(dts[d]);
            unsigned char *in = malloc(nb), *out = malloc(nb);
            for (size_t i = 0; i < nb; i++) in[i] = (unsigned char)(tt_next(&r) >> 56);
            /* dst has another shape with the same element count */
            tt_tensor a = tt_alloc(be, dts[d], 1, &n),
                      b = tt_alloc(be, dts[d], 2, (int64_t[]){n, 1});
            cr_assert_eq(chm_upload(be, &a.t, in), CHM_OK);
            cr_assert_eq(chm_copy(be, &b.t, &a.t), CHM_OK, "%s", be->err.msg);
            cr_assert_eq(chm_download(be, &b.t, out), CHM_OK);
            cr_assert(memcmp(in, out, nb) == 0, "copy of %lld %s changed bytes", (long long)n,
                      chm_dtype_name(dts[d]));
            free(in);
            free(out);
            tt_free(&a);
            tt_free(&b);
        }
    }
    chm_backend_close(be);
}

Test(convert, upload_and_download_touch_only_the_tensor) {
    chm_backend *be = tt_open_cpu();
    tt_tensor all = tt_alloc(be, CHM_F64, 1, (int64_t[]){16});
    cr_assert_eq(chm_fill(be, &all.t, -1.0), CHM_OK);
    chm_tensor mid = chm_tensor_2d(all.buf, 5 * sizeof(double), CHM_F64, 2, 3);
    const double v[6] = {1, 2, 3, 4, 5, 6};
    double back[6], whole[16];
    cr_assert_eq(chm_upload(be, &mid, v), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_download(be, &mid, back), CHM_OK, "%s", be->err.msg);
    cr_assert(memcmp(v, back, sizeof v) == 0);
    cr_assert_eq(chm_download(be, &all.t, whole), CHM_OK);
    for (int i = 0; i < 16; i++)
        cr_assert_eq(whole[i], i >= 5 && i < 11 ? v[i - 5] : -1.0, "element %d", i);
    tt_free(&all);
    chm_backend_close(be);
}

Test(convert, wrappers_reject_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor f = tt_alloc(be, CHM_F32, 1, (int64_t[]){6}),
              d = tt_alloc(be, CHM_F64, 1, (int64_t[]){6});
    tt_tensor i = tt_alloc(be, CHM_I32, 1, (int64_t[]){6}),
              s = tt_alloc(be, CHM_F64, 1, (int64_t[]){5});
    cr_assert_eq(chm_copy(be, &d.t, &f.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "copy") && strstr(be->err.msg, "cast"), "%s", be->err.msg);
    cr_assert_eq(chm_cast(be, &i.t, &f.t), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "cast") && strstr(be->err.msg, "dst"), "%s", be->err.msg);
    cr_assert_eq(chm_cast(be, &s.t, &f.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "cast") && strstr(be->err.msg, "elements"), "%s", be->err.msg);
    tt_free(&f);
    tt_free(&d);
    tt_free(&i);
    tt_free(&s);
    chm_backend_close(be);
}
