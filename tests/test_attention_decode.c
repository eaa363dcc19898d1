/*
 * test_attention_decode.c: attention of new queries against a key/value
 * cache on the cpu backend: against a naive f64 loop (f32 and f64, GQA,
 * odd sizes, Tq = 1 and Tq > 1), against chm_attention_fwd (Tq = Tk gives
 * its output; the last query alone gives its last row), and the wrapper's
 * rejections.
 */
#include "testutil.h"

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};
/* B, Tq, Tk, H, Hk, D */
static const int64_t SHAPES[][6] = {
    {1, 1, 1, 1, 1, 1}, {2, 3, 7, 4, 2, 5}, {1, 1, 13, 6, 3, 8}, {2, 5, 5, 2, 1, 3}};

static double *rand_upload(chm_backend *be, tt_rng *r, const tt_tensor *t, double lo, double hi) {
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_fill_uniform(r, h, n, lo, hi);
    tt_upload(be, t, h);
    tt_download(be, t, h);
    return h;
}

static void naive(double *out, const double *q, const double *k, const double *v, const int64_t *s,
                  double scale) {
    int64_t B = s[0], Tq = s[1], Tk = s[2], H = s[3], Hk = s[4], D = s[5];
    double *p = tt_dalloc(Tk);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < Tq; i++)
            for (int64_t h = 0; h < H; h++) {
                int64_t kh = h / (H / Hk), pos = Tk - Tq + i;
                const double *qi = q + ((b * Tq + i) * H + h) * D;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j <= pos; j++) {
                    double dot = 0;
                    for (int64_t c = 0; c < D; c++)
                        dot += qi[c] * k[((b * Tk + j) * Hk + kh) * D + c];
                    p[j] = scale * dot;
                    mx = fmax(mx, p[j]);
                }
                for (int64_t j = 0; j <= pos; j++) sum += (p[j] = exp(p[j] - mx));
                for (int64_t c = 0; c < D; c++) {
                    double acc = 0;
                    for (int64_t j = 0; j <= pos; j++)
                        acc += p[j] * v[((b * Tk + j) * Hk + kh) * D + c];
                    out[((b * Tq + i) * H + h) * D + c] = acc / sum;
                }
            }
    free(p);
}

Test(attention_decode, matches_naive) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(1);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < 4; s++) {
            const int64_t *sh = SHAPES[s];
            chm_dtype dt = DTYPES[d];
            int64_t qs[4] = {sh[0], sh[1], sh[3], sh[5]}, ks[4] = {sh[0], sh[2], sh[4], sh[5]};
            tt_tensor q = tt_alloc(be, dt, 4, qs), k = tt_alloc(be, dt, 4, ks),
                      v = tt_alloc(be, dt, 4, ks);
            tt_tensor out = tt_alloc(be, dt, 4, qs);
            double *hq = rand_upload(be, &rng, &q, -1, 1), *hk = rand_upload(be, &rng, &k, -1, 1);
            double *hv = rand_upload(be, &rng, &v, -1, 1);
            int64_t n = chm_tensor_numel(&q.t);
            double *want = tt_dalloc(n), *got = tt_dalloc(n), scale = 1 / sqrt((double)sh[5]);
            naive(want, hq, hk, hv, sh, scale);
            tt_poison(be, &out);
            cr_assert_eq(chm_attention_decode(be, &out.t, &q.t, &k.t, &v.t, scale), CHM_OK, "%s",
                         be->err.msg);
            tt_download(be, &out, got);
            tt_assert_close("attention_decode", got, want, n, TT_ATOL(dt), TT_RTOL(dt));
            free(hq), free(hk), free(hv), free(want), free(got);
            tt_free(&q), tt_free(&k), tt_free(&v), tt_free(&out);
        }
    chm_backend_close(be);
}

Test(attention_decode, agrees_with_attention_fwd) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(2);
    int64_t B = 2, T = 9, H = 4, Hk = 2, D = 6;
    tt_tensor q = tt_alloc(be, CHM_F64, 4, (int64_t[]){B, T, H, D});
    tt_tensor k = tt_alloc(be, CHM_F64, 4, (int64_t[]){B, T, Hk, D});
    tt_tensor v = tt_alloc(be, CHM_F64, 4, (int64_t[]){B, T, Hk, D});
    tt_tensor full = tt_alloc(be, CHM_F64, 4, (int64_t[]){B, T, H, D});
    tt_tensor dec = tt_alloc(be, CHM_F64, 4, (int64_t[]){B, T, H, D});
    tt_tensor lse = tt_alloc(be, CHM_F64, 3, (int64_t[]){B, H, T});
    double *hq = rand_upload(be, &rng, &q, -1, 1);
    free(rand_upload(be, &rng, &k, -1, 1));
    free(rand_upload(be, &rng, &v, -1, 1));
    double scale = 0.4;
    cr_assert_eq(chm_attention_fwd(be, &full.t, &lse.t, &q.t, &k.t, &v.t, scale), CHM_OK, "%s",
                 be->err.msg);
    cr_assert_eq(chm_attention_decode(be, &dec.t, &q.t, &k.t, &v.t, scale), CHM_OK, "%s",
                 be->err.msg);
    int64_t n = B * T * H * D;
    double *a = tt_dalloc(n), *b = tt_dalloc(n);
    tt_download(be, &full, a);
    tt_download(be, &dec, b);
    tt_assert_close("decode with Tq = Tk vs attention_fwd", b, a, n, 1e-13, 1e-13);
    /* batch 1, the last query alone against all keys: attention_fwd's last row */
    chm_tensor q1 = chm_tensor_4d(q.buf, (size_t)((T - 1) * H * D) * 8, CHM_F64, 1, 1, H, D);
    chm_tensor k1 = chm_tensor_4d(k.buf, 0, CHM_F64, 1, T, Hk, D),
               v1 = chm_tensor_4d(v.buf, 0, CHM_F64, 1, T, Hk, D);
    tt_tensor o1 = tt_alloc(be, CHM_F64, 4, (int64_t[]){1, 1, H, D});
    cr_assert_eq(chm_attention_decode(be, &o1.t, &q1, &k1, &v1, scale), CHM_OK, "%s", be->err.msg);
    double row[4 * 6];
    tt_download(be, &o1, row);
    tt_assert_close("one query vs attention_fwd's last row", row, a + (T - 1) * H * D, H * D, 1e-13,
                    1e-13);
    free(hq), free(a), free(b);
    tt_free(&q), tt_free(&k), tt_free(&v), tt_free(&full), tt_free(&dec), tt_free(&lse),
        tt_free(&o1);
    chm_backend_close(be);
}

Test(attention_decode, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor q = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 3, 4, 2}),
              o = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 3, 4, 2});
    tt_tensor k = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 2, 2, 2}),
              k5 = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 5, 3, 2});
    tt_tensor v5 = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 5, 3, 2}),
              k6 = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 5, 2, 2});
    tt_tensor v6 = tt_alloc(be, CHM_F32, 4, (int64_t[]){1, 5, 2, 2}),
              kd = tt_alloc(be, CHM_F64, 4, (int64_t[]){1, 5, 2, 2});
    cr_assert_eq(chm_attention_decode(be, &o.t, &q.t, &k.t, &k.t, 1), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "attention_decode: needs 1 <= Tq <= Tk"), "%s", be->err.msg);
    cr_assert_eq(chm_attention_decode(be, &o.t, &q.t, &k5.t, &v5.t, 1), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "attention_decode: k and v have 3 kv heads"), "%s", be->err.msg);
    cr_assert_eq(chm_attention_decode(be, &o.t, &q.t, &kd.t, &v6.t, 1), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "attention_decode: k"), "%s", be->err.msg);
    cr_assert_eq(chm_attention_decode(be, &q.t, &q.t, &k6.t, &v6.t, 1), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "attention_decode: out overlaps q"), "%s", be->err.msg);
    cr_assert_eq(chm_attention_decode(be, &o.t, &q.t, &k6.t, &v6.t, 0), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "attention_decode: scale"), "%s", be->err.msg);
    tt_free(&q), tt_free(&o), tt_free(&k), tt_free(&k5), tt_free(&v5), tt_free(&k6), tt_free(&v6),
        tt_free(&kd);
    chm_backend_close(be);
}
