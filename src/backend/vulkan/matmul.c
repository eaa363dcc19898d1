/*
 * matmul.c: the vulkan backend's matmul and grouped matmul (shader
 * matmul.comp; contracts in backend.h, shapes checked by ops_matmul.c).
 *
 * A, B and C are viewed as [batch, rows, cols]: op(A) [M,K] (A stored [K,M]
 * when trans_a), op(B) [K,N] (B stored [N,K] when trans_b), C [M,N] per
 * batch entry; an operand of batch 1 is broadcast (batch stride 0).
 * C = alpha*op(A)op(B) + beta*C (+ bias[N] per row), beta = 0 ignoring C.
 * Grouped: [E, ., .] tensors with counts[E] live rows (or live terms of the
 * sum with trans_a); the counts live on the device, so the shader checks
 * their range and reports a bad one as CHM_ERR_INVALID_ARG at the next sync.
 *
 * One dispatch per call: a tiled shared-memory GEMM whose tile sizes are
 * specialization constants, picked here from the device and the size of C
 * (pick_tile). Deterministic: each element of C is summed by one invocation in a
 * fixed order.
 */
#include "vk.h"

/* Tile sizes: BM x BN of C per workgroup, BK-deep slices, TM x TN per invocation. */
typedef struct mm_tile {
    uint32_t bm, bn, bk, tm, tn;
} mm_tile;

/*
 * A CPU device (lavapipe) or a small workgroup limit: 32x32 tiles of 64
 * invocations. A GPU: 64x64 tiles of 256 invocations, 4x4 each (17-19
 * TFLOP/s in f32 at 4096^3 on an H100; 128x128 tiles of 8x8 measured ten
 * times slower there).
 */
static mm_tile pick_tile(const chm_vk *vk) {
    static const mm_tile small = {32, 32, 8, 4, 4}, medium = {64, 64, 16, 4, 4};
    if (vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU || vk->caps.max_wg < 256) return small;
    return medium;
}

/* The push block of matmul.comp after off[]. */
typedef struct mm_push {
    uint32_t M, N, K, lda, ldb;
    uint32_t sa, sb, sc;
    uint32_t batch, tiles_m, tiles_n;
    uint32_t flags;
    float alpha, beta;
} mm_push;

enum { MM_TRANS_A = 1, MM_TRANS_B = 2, MM_BIAS = 4, MM_BETA0 = 8 };

/* Product of the dims before the last two. */
static int64_t batch_of(const chm_tensor *t) {
    int64_t b = 1;
    for (int i = 0; i < t->ndim - 2; i++) b *= t->shape[i];
    return b;
}

static int64_t rows_of(const chm_tensor *t) { return t->shape[t->ndim - 2]; }
static int64_t cols_of(const chm_tensor *t) { return t->shape[t->ndim - 1]; }

/* Fill the shape part of the push block from A, B, C (strides: 0 for a broadcast operand). */
static mm_push push_make(const chm_tensor *C, const chm_tensor *A, const chm_tensor *B,
                         bool trans_a, bool trans_b, double alpha, double beta, mm_tile tile) {
    int64_t batch = batch_of(C), M = rows_of(C), N = cols_of(C);
    mm_push pc = {
        .M = (uint32_t)M, .N = (uint32_t)N,
        .K = (uint32_t)(trans_a ? rows_of(A) : cols_of(A)),
        .lda = (uint32_t)cols_of(A), .ldb = (uint32_t)cols_of(B),
        .sa = batch_of(A) == 1 ? 0 : (uint32_t)(rows_of(A) * cols_of(A)),
        .sb = batch_of(B) == 1 ? 0 : (uint32_t)(rows_of(B) * cols_of(B)),
        .sc = (uint32_t)(M * N), .batch = (uint32_t)batch,
        .tiles_m = chm_vk_groups(M, tile.bm), .tiles_n = chm_vk_groups(N, tile.bn),
        .alpha = (float)alpha, .beta = (float)beta,
    };
    pc.flags = (trans_a ? MM_TRANS_A : 0) | (trans_b ? MM_TRANS_B : 0) | (beta == 0 ? MM_BETA0 : 0);
    return pc;
}

/* Record the dispatch; third binding is bias (plain) or counts (grouped). */
static chm_status mm_run(chm_vk *vk, const char *shader, const chm_tensor *C, const chm_tensor *A,
                         const chm_tensor *B, const chm_tensor *third, mm_push *pc, mm_tile tile) {
    uint64_t groups = (uint64_t)pc->batch * pc->tiles_m * pc->tiles_n;
    if (groups > UINT32_MAX)
        return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                       "%s: %llu tiles are more than one dispatch holds; split the batch", shader,
                       (unsigned long long)groups);
    chm_vk_dispatch d = {
        .shader = shader, .nbind = 4, .bind = {A, B, third, C}, .writes = 1u << 3,
        .status = third && third->dtype == CHM_I32, .push = pc, .push_size = sizeof *pc,
        .groups = (uint32_t)groups, .wg = (tile.bm / tile.tm) * (tile.bn / tile.tn),
        .spec = {tile.bm, tile.bn, tile.bk, tile.tm, tile.tn}, .nspec = 5,
    };
    return chm_vk_run(vk, &d);
}

chm_status chm_vk_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                         const chm_tensor *B, const chm_tensor *bias, bool trans_a, bool trans_b,
                         double alpha, double beta) {
    CHM_TRY(chm_vk_need_f32(be, "matmul", C));
    chm_vk *vk = chm_vk_ctx(be);
    mm_tile tile = pick_tile(vk);
    mm_push pc = push_make(C, A, B, trans_a, trans_b, alpha, beta, tile);
    if (bias) pc.flags |= MM_BIAS;
    return mm_run(vk, "matmul", C, A, B, bias, &pc, tile);
}

chm_status chm_vk_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                 const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                                 bool trans_b, double alpha, double beta) {
    CHM_TRY(chm_vk_need_f32(be, "matmul_grouped", C));
    chm_vk *vk = chm_vk_ctx(be);
    mm_tile tile = pick_tile(vk);
    mm_push pc = push_make(C, A, B, trans_a, trans_b, alpha, beta, tile);
    return mm_run(vk, "matmul_grouped", C, A, B, counts, &pc, tile);
}
