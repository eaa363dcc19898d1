/*
 * elementwise.c: the vulkan backend's add, scale, axpy and sum_rows
 * (shaders add.comp, scale.comp, axpy.comp, sum_rows.comp), and the
 * chunked column-sum plan that sum_rows and rmsnorm's dw share.
 *
 * add:      out[n] = a[n] + b[n]        (out may alias a or b exactly)
 * scale:    out[n] = alpha * x[n]       (out may alias x exactly)
 * axpy:     y[n] += alpha * x[n]
 * sum_rows: out[C] += sum_r x[r,C]      (ACCUMULATES; deterministic, f32 sums)
 * alpha travels as an f32 push constant. One invocation per element; add,
 * scale and axpy split tensors larger than one binding may span (vk_split.c).
 *
 * Tensors are f32, or bf16/f16 (all of one op's tensors share the dtype)
 * through the shaders' _bf16/_f16 variants: loaded into f32, computed as in
 * f32, rounded once on store (vk_dtype.h). sum_rows' chunk sums stay f32,
 * and the column-sum finish adds f32 chunk sums into an out of any of the
 * three dtypes (rmsnorm's dw shares it).
 */
#include "vk_dtype.h"

/*
 * Elementwise dispatch of shader `op` (in the variant of the last binding's
 * dtype, which every binding shares) over n elements of the bindings
 * (split when they are large).
 */
static chm_status run_elementwise(chm_backend *be, const char *op, int nbind,
                                  const chm_tensor *const *bind, uint32_t writes, const void *pc,
                                  uint32_t pc_size, int64_t n) {
    CHM_TRY(chm_vk_need_float(be, op, bind[nbind - 1]));
    chm_vk *vk = chm_vk_ctx(be);
    char name[48];
    chm_vk_dispatch d = {.shader = chm_vk_variant_dt(vk, op, bind[nbind - 1]->dtype, false, name,
                                                     sizeof name),
                         .nbind = nbind, .writes = writes, .push = pc, .push_size = pc_size,
                         .wg = vk->caps.wg_elem};
    for (int i = 0; i < nbind; i++) d.bind[i] = bind[i];
    return chm_vk_run_elems(vk, &d, n);
}

chm_status chm_vk_add(chm_backend *be, const chm_tensor *out, const chm_tensor *a,
                      const chm_tensor *b) {
    struct {
        uint32_t n; /* set per dispatch */
    } pc = {0};
    const chm_tensor *bind[] = {a, b, out};
    return run_elementwise(be, "add", 3, bind, 1u << 2, &pc, sizeof pc, chm_tensor_numel(out));
}

chm_status chm_vk_scale(chm_backend *be, const chm_tensor *out, const chm_tensor *x,
                        double alpha) {
    struct {
        uint32_t n; /* set per dispatch */
        float alpha;
    } pc = {0, (float)alpha};
    const chm_tensor *bind[] = {x, out};
    return run_elementwise(be, "scale", 2, bind, 1u << 1, &pc, sizeof pc, chm_tensor_numel(out));
}

chm_status chm_vk_axpy(chm_backend *be, const chm_tensor *y, const chm_tensor *x, double alpha) {
    struct {
        uint32_t n; /* set per dispatch */
        float alpha;
    } pc = {0, (float)alpha};
    const chm_tensor *bind[] = {x, y};
    return run_elementwise(be, "axpy", 2, bind, 1u << 1, &pc, sizeof pc, chm_tensor_numel(y));
}

/*
 * Enough chunks to give the device ~64k invocations, each adding at least
 * 16 rows; the plan depends only on the shape, so results are reproducible.
 */
chm_vk_colsum_plan chm_vk_colsum_plan_make(int64_t rows, int64_t cols) {
    int64_t chunks = 1;
    if (rows >= 32 && cols > 0 && cols < 65536) {
        chunks = 65536 / cols;
        if (chunks > rows / 16) chunks = rows / 16;
        if (chunks < 1) chunks = 1;
    }
    int64_t per = (rows + chunks - 1) / chunks;
    if (per < 1) per = 1;
    chunks = (rows + per - 1) / per;
    return (chm_vk_colsum_plan){(uint32_t)(chunks < 1 ? 1 : chunks), (uint32_t)per};
}

/*
 * One pass of sum_rows variant `shader` over x viewed [rows, cols] (a
 * partial variant writes f32 chunk sums into out [chunks, cols]).
 */
static chm_status sum_rows_pass(chm_vk *vk, const char *shader, const chm_tensor *out,
                                const chm_tensor *x, int64_t rows, int64_t cols,
                                chm_vk_colsum_plan plan) {
    struct {
        uint32_t rows, cols, per, chunks;
    } pc = {(uint32_t)rows, (uint32_t)cols, plan.rows_per_chunk, plan.chunks};
    /* Not elementwise (x and out differ in size): one dispatch, bindings whole. */
    chm_vk_dispatch d = {
        .shader = shader, .nbind = 2, .bind = {x, out},
        .writes = 1u << 1, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups((int64_t)plan.chunks * cols, vk->caps.wg_elem),
        .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

/* part is f32; out f32 (sum_rows) or 16-bit (sum_rows_f32_bf16 / _f16). */
chm_status chm_vk_colsum_finish(chm_vk *vk, const chm_tensor *out, const chm_tensor *part,
                                uint32_t chunks, int64_t cols) {
    chm_vk_colsum_plan one = {1, chunks};
    char name[48];
    const char *base = out->dtype == CHM_F32 ? "sum_rows" : "sum_rows_f32";
    return sum_rows_pass(vk, chm_vk_variant_dt(vk, base, out->dtype, false, name, sizeof name),
                         out, part, chunks, cols, one);
}

chm_status chm_vk_sum_rows(chm_backend *be, const chm_tensor *out, const chm_tensor *x) {
    CHM_TRY(chm_vk_need_float(be, "sum_rows", x));
    chm_vk *vk = chm_vk_ctx(be);
    int64_t rows = chm_tensor_rows(x), cols = chm_tensor_cols(x);
    if (rows == 0 || cols == 0) return CHM_OK;
    chm_vk_colsum_plan plan = chm_vk_colsum_plan_make(rows, cols);
    char name[48];
    if (plan.chunks == 1)
        return sum_rows_pass(vk, chm_vk_variant_dt(vk, "sum_rows", x->dtype, false, name,
                                                   sizeof name),
                             out, x, rows, cols, plan);
    chm_tensor part;
    CHM_TRY(chm_vk_scratch(be, CHM_F32, (int64_t)plan.chunks * cols, &part));
    chm_status rc = sum_rows_pass(vk, chm_vk_variant_dt(vk, "sum_rows_partial", x->dtype, false,
                                                        name, sizeof name),
                                  &part, x, rows, cols, plan);
    if (!rc) rc = chm_vk_colsum_finish(vk, out, &part, plan.chunks, cols);
    chm_vk_scratch_free(be, &part);
    return rc;
}
