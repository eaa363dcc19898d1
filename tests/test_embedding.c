/*
 * test_embedding.c: embedding lookup forward and backward on the cpu backend.
 *
 * Forward against a plain loop in f32 and f64 for ids of 1 and 2 dims with
 * repeated ids; backward against central finite differences of
 * L = sum(out * w) in f64 (starting from random gradients that must
 * accumulate) and, in f32, bit for bit against a row-order loop (the
 * deterministic order backend.h promises, on a size that runs threaded);
 * ids outside [0, V) are rejected by both ops with the row and id named.
 */
#include "testutil.h"

static const chm_dtype DTYPES[] = {CHM_F32, CHM_F64};

/* Cases: ids shape (ndim, dims), vocabulary V, width C. */
typedef struct emb_case {
    int nd;
    int64_t dims[2], V, C;
} emb_case;

static const emb_case CASES[] = {
    {1, {1, 1}, 1, 1}, {1, {7, 1}, 3, 5}, {2, {2, 3}, 4, 13}, {2, {3, 5}, 11, 2}};
#define N_CASES 4

static double *rand_upload(chm_backend *be, tt_rng *r, const tt_tensor *t) {
    int64_t n = chm_tensor_numel(&t->t);
    double *h = tt_dalloc(n);
    tt_fill_uniform(r, h, n, -1, 1);
    tt_upload(be, t, h);
    tt_download(be, t, h);
    return h;
}

/* Random ids in [0, V) (repeats likely) uploaded into an I32 tensor of the case's shape. */
static tt_tensor rand_ids(chm_backend *be, tt_rng *r, const emb_case *c, int32_t **ids) {
    tt_tensor t = tt_alloc(be, CHM_I32, c->nd, c->dims);
    int64_t R = chm_tensor_numel(&t.t);
    *ids = malloc((size_t)R * sizeof **ids);
    for (int64_t i = 0; i < R; i++) (*ids)[i] = (int32_t)(tt_next(r) % (uint64_t)c->V);
    tt_upload_i32(be, &t, *ids);
    return t;
}

/* out/dout tensor of shape ids' shape + [C]. */
static tt_tensor rows_tensor(chm_backend *be, chm_dtype dt, const emb_case *c) {
    int64_t s[3] = {c->dims[0], c->dims[1], c->C};
    if (c->nd == 1) s[1] = c->C;
    return tt_alloc(be, dt, c->nd + 1, s);
}

Test(embedding, forward_matches_loop) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(1);
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < N_CASES; k++) {
            const emb_case *c = &CASES[k];
            int32_t *ids;
            tt_tensor tid = rand_ids(be, &rng, c, &ids);
            tt_tensor table = tt_alloc(be, DTYPES[d], 2, (int64_t[]){c->V, c->C});
            tt_tensor out = rows_tensor(be, DTYPES[d], c);
            double *ht = rand_upload(be, &rng, &table);
            int64_t R = chm_tensor_numel(&tid.t), n = R * c->C;
            double *want = tt_dalloc(n), *got = tt_dalloc(n);
            for (int64_t r = 0; r < R; r++)
                for (int64_t j = 0; j < c->C; j++) want[r * c->C + j] = ht[ids[r] * c->C + j];
            tt_poison(be, &out);
            cr_assert_eq(chm_embedding_fwd(be, &out.t, &tid.t, &table.t), CHM_OK, "%s",
                         be->err.msg);
            tt_download(be, &out, got);
            tt_assert_close("embedding_fwd", got, want, n, 0, 0);
            free(ids), free(ht), free(want), free(got);
            tt_free(&tid), tt_free(&table), tt_free(&out);
        }
    chm_backend_close(be);
}

/* L = sum(table[ids] * w) through the backend's forward for the current host table. */
static double loss(chm_backend *be, const tt_tensor *table, const tt_tensor *ids,
                   const tt_tensor *out, const double *ht, const double *hw, int64_t n) {
    tt_upload(be, table, ht);
    cr_assert_eq(chm_embedding_fwd(be, &out->t, &ids->t, &table->t), CHM_OK);
    double *y = tt_dalloc(n), L = 0;
    tt_download(be, out, y);
    for (int64_t i = 0; i < n; i++) L += y[i] * hw[i];
    free(y);
    return L;
}

Test(embedding, backward_matches_finite_differences_and_accumulates) {
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(2);
    for (int k = 0; k < N_CASES; k++) {
        const emb_case *c = &CASES[k];
        int32_t *ids;
        tt_tensor tid = rand_ids(be, &rng, c, &ids);
        tt_tensor table = tt_alloc(be, CHM_F64, 2, (int64_t[]){c->V, c->C});
        tt_tensor dtable = tt_alloc(be, CHM_F64, 2, (int64_t[]){c->V, c->C});
        tt_tensor out = rows_tensor(be, CHM_F64, c), w = rows_tensor(be, CHM_F64, c);
        double *ht = rand_upload(be, &rng, &table), *hw = rand_upload(be, &rng, &w);
        double *g0 = rand_upload(be, &rng, &dtable);
        int64_t n = chm_tensor_numel(&out.t), nt = c->V * c->C;
        cr_assert_eq(chm_embedding_bwd(be, &dtable.t, &w.t, &tid.t), CHM_OK, "%s", be->err.msg);
        double *want = tt_dalloc(nt), *got = tt_dalloc(nt);
        for (int64_t i = 0; i < nt; i++) {
            double v0 = ht[i], h = 1e-6 * fmax(1.0, fabs(v0));
            ht[i] = v0 + h;
            double lp = loss(be, &table, &tid, &out, ht, hw, n);
            ht[i] = v0 - h;
            double lm = loss(be, &table, &tid, &out, ht, hw, n);
            ht[i] = v0;
            want[i] = g0[i] + (lp - lm) / (2 * h);
        }
        tt_download(be, &dtable, got);
        double err = tt_rel_l2(got, want, nt);
        cr_assert(err < 1e-6, "embedding dtable: relative L2 error %g", err);
        free(ids), free(ht), free(hw), free(g0), free(want), free(got);
        tt_free(&tid), tt_free(&table), tt_free(&dtable), tt_free(&out), tt_free(&w);
    }
    chm_backend_close(be);
}

Test(embedding, backward_sums_repeated_ids_in_row_order) {
    /* Large enough to run threaded; few ids, so every row repeats many times. */
    chm_backend *be = tt_open_cpu();
    tt_rng rng = tt_rng_make(3);
    emb_case c = {1, {3000, 1}, 5, 131};
    int32_t *ids;
    tt_tensor tid = rand_ids(be, &rng, &c, &ids);
    tt_tensor dout = rows_tensor(be, CHM_F32, &c),
              dt = tt_alloc(be, CHM_F32, 2, (int64_t[]){c.V, c.C});
    double *hd = rand_upload(be, &rng, &dout), *h0 = rand_upload(be, &rng, &dt);
    int64_t R = c.dims[0], C = c.C;
    float *want = malloc((size_t)(c.V * C) * sizeof *want),
          *got = malloc((size_t)(c.V * C) * sizeof *got);
    for (int64_t i = 0; i < c.V * C; i++) want[i] = (float)h0[i];
    for (int64_t r = 0; r < R; r++) /* f32 additions in row order */
        for (int64_t j = 0; j < C; j++) want[ids[r] * C + j] += (float)hd[r * C + j];
    cr_assert_eq(chm_embedding_bwd(be, &dt.t, &dout.t, &tid.t), CHM_OK, "%s", be->err.msg);
    cr_assert_eq(chm_download(be, &dt.t, got), CHM_OK);
    cr_assert(memcmp(want, got, (size_t)(c.V * C) * sizeof *got) == 0,
              "embedding_bwd is not the row-order sum bit for bit");
    free(ids), free(hd), free(h0), free(want), free(got);
    tt_free(&tid), tt_free(&dout), tt_free(&dt);
    chm_backend_close(be);
}

Test(embedding, ids_out_of_range_are_rejected) {
    chm_backend *be = tt_open_cpu();
    tt_tensor ids = tt_alloc(be, CHM_I32, 1, (int64_t[]){5}),
              table = tt_alloc(be, CHM_F32, 2, (int64_t[]){9, 4});
    tt_tensor out = tt_alloc(be, CHM_F32, 2, (int64_t[]){5, 4});
    const int32_t high[] = {0, 8, 2, 9, 1}, low[] = {0, -1, 2, 3, 4};
    tt_upload_i32(be, &ids, high);
    cr_assert_eq(chm_embedding_fwd(be, &out.t, &ids.t, &table.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "embedding_fwd: ids[3] = 9 is outside [0, 9)"), "%s",
              be->err.msg);
    cr_assert_eq(chm_embedding_bwd(be, &table.t, &out.t, &ids.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "embedding_bwd: ids[3] = 9"), "%s", be->err.msg);
    tt_upload_i32(be, &ids, low);
    cr_assert_eq(chm_embedding_fwd(be, &out.t, &ids.t, &table.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "embedding_fwd: ids[1] = -1"), "%s", be->err.msg);
    cr_assert_eq(chm_embedding_bwd(be, &table.t, &out.t, &ids.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "embedding_bwd: ids[1] = -1"), "%s", be->err.msg);
    tt_free(&ids), tt_free(&table), tt_free(&out);
    chm_backend_close(be);
}

Test(embedding, wrapper_rejects_bad_arguments) {
    chm_backend *be = tt_open_cpu();
    tt_tensor ids = tt_alloc(be, CHM_I32, 2, (int64_t[]){2, 3}),
              fids = tt_alloc(be, CHM_F32, 2, (int64_t[]){2, 3});
    tt_tensor table = tt_alloc(be, CHM_F32, 2, (int64_t[]){9, 4}),
              t3 = tt_alloc(be, CHM_F32, 3, (int64_t[]){1, 9, 4});
    tt_tensor out = tt_alloc(be, CHM_F32, 3, (int64_t[]){2, 3, 4}),
              flat = tt_alloc(be, CHM_F32, 2, (int64_t[]){6, 4});
    tt_tensor od = tt_alloc(be, CHM_F64, 3, (int64_t[]){2, 3, 4});
    cr_assert_eq(chm_embedding_fwd(be, &out.t, &fids.t, &table.t), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "embedding_fwd: ids must be i32"), "%s", be->err.msg);
    cr_assert_eq(chm_embedding_fwd(be, &flat.t, &ids.t, &table.t), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "embedding_fwd: out must have shape [2, 3, 4]"), "%s",
              be->err.msg);
    cr_assert_eq(chm_embedding_fwd(be, &od.t, &ids.t, &table.t), CHM_ERR_DTYPE);
    cr_assert(strstr(be->err.msg, "embedding_fwd: out must be f32"), "%s", be->err.msg);
    cr_assert_eq(chm_embedding_fwd(be, &out.t, &ids.t, &t3.t), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "embedding_fwd: table"), "%s", be->err.msg);
    cr_assert_eq(chm_embedding_bwd(be, &t3.t, &out.t, &ids.t), CHM_ERR_SHAPE);
    cr_assert(strstr(be->err.msg, "embedding_bwd: dtable"), "%s", be->err.msg);
    chm_tensor inside = chm_tensor_2d(table.buf, 0, CHM_F32, 6, 4);
    cr_assert_eq(chm_embedding_bwd(be, &table.t, &inside, &ids.t), CHM_ERR_SHAPE);
    chm_tensor inside3 = chm_tensor_3d(table.buf, 0, CHM_F32, 2, 3, 4);
    cr_assert_eq(chm_embedding_bwd(be, &table.t, &inside3, &ids.t), CHM_ERR_INVALID_ARG);
    cr_assert(strstr(be->err.msg, "embedding_bwd: dtable overlaps dout"), "%s", be->err.msg);
    tt_free(&ids), tt_free(&fids), tt_free(&table), tt_free(&t3), tt_free(&out), tt_free(&flat);
    tt_free(&od);
    chm_backend_close(be);
}
