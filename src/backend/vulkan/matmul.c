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
 * One dispatch per call. f32: a tiled shared-memory GEMM (matmul.comp)
 * whose tile sizes are specialization constants picked from the device and
 * the product (pick_tile: 128x64 or 128x128 on a GPU, 64x64 where that
 * leaves it idle, 32x32 on a CPU device). f16 and bf16 (A, B, C and bias of one
 * dtype, as the shared wrapper requires): f16 on cooperative matrices (matmul_cm.comp, tensor
 * cores: f16 products summed in f32) when the device has them (caps.coopmat,
 * vk_coopmat.c), else matmul.comp's 16-bit variants (exact widening, f32
 * math); either way C is rounded once to its dtype. bf16 on cooperative
 * matrices (caps.coopmat_bf16: the default where f16 ones exist;
 * CHIMERA_VULKAN_COOPMAT_BF16=0 keeps it on the plain path) is scaled into
 * f16's range first (cm_scale.comp: one power of two per row of op(A) and
 * per column of op(B), into f16 scratch copies; an operand whose lines are
 * stored rows in one pass that finds and applies them), and matmul_cm.comp
 * scales each product back: bf16's whole range survives (f16's alone
 * flushed the small magnitudes gradients have). f32 never takes the cooperative-matrix
 * path: no silent change of precision. Deterministic: each element of C is
 * summed in one fixed order.
 *
 * Thin products with a long sum, any transposes, one of M and N at most
 * SK_MAX_SMALL and K at least 1024 and 4x the other (chimera-1b's weight
 * gradients of narrow projections: x_proj's [96,2048] = dxp xc, dt_proj's
 * [2048,64] = ddelta^T dtl, the routers' [8,1024] and [1,1024], over K =
 * 16384 tokens), take matmul_splitk.comp in every dtype: the tiled shaders
 * give them a few dozen workgroups that each walk all of K (16x2048x16384
 * bf16: 1.2 ms on an H100; session 7's transposed x_proj gradient cost ~23 ms
 * a step there until split-K took every orientation). Split-K sums slices of K
 * on hundreds of workgroups into f32 partials, then adds the slices in order
 * (f32 products of the stored values: exact for 16-bit operands, no scaling
 * pass). CHIMERA_VULKAN_DISABLE=splitk keeps them on the tiled shaders.
 *
 * Cooperative matrices 2 (caps.coopmat2, vk_coopmat.c) come before all of
 * the above for bf16 where caps.coopmat2_bf16, and for f16 where
 * matmul_cm.comp has no real cooperative matrices (cm2_takes): matmul_cm2.comp
 * reads the 16-bit operands as they are stored (workgroup-scope matrices,
 * tensor-layout loads clamped at the edges), so bf16 needs no scaling pass;
 * products are summed in f32 and C rounded once. Its tile is caps.cm2_tile
 * (64x64 for products with M or N at most 64), the transposes spec
 * constants as for matmul_cm.comp. On an H100 it runs 126 TFLOP/s at f16
 * 4096^3 (matmul_cm.comp: 156 f16, 142 bf16 with its scaling passes), and
 * chimera-1b's bf16 step 4% faster than on matmul_cm.comp (25.0k against
 * 24.1k tokens/s): the scaling passes go. CHIMERA_VULKAN_DISABLE=coopmat2
 * falls back to the paths above.
 *
 * Where the device has bf16 cooperative matrices (VK_KHR_shader_bfloat16 with
 * VK_KHR_cooperative_matrix; caps.coopmat_bf16_native, the default there, or
 * CHIMERA_VULKAN_COOPMAT_BF16=native), bf16 products take matmul_cm.comp's KHR
 * bf16 variant before all of the above: the operands as stored on bf16
 * matrices, no scaling pass (on the H100 24% more chimera-1b tokens/s than
 * the scaled operands: vk_coopmat.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk_dtype.h"

/* Tile sizes: BM x BN of C per workgroup, BK-deep slices, TM x TN per invocation. */
typedef struct mm_tile {
    uint32_t bm, bn, bk, tm, tn;
} mm_tile;

/* matmul.comp's VMAX: 4-element loads per invocation and operand slice. */
#define MM_VMAX 4

/* Why matmul.comp cannot run tile t on this device ("" when it can). */
static void mm_tile_check(const chm_vk *vk, mm_tile t, char *why, size_t n) {
    why[0] = '\0';
    if ((t.tm != 4 && t.tm != 8) || (t.tn != 4 && t.tn != 8) || !t.bm || !t.bn ||
        t.bm % t.tm || t.bn % t.tn || !t.bk || t.bk % 4) {
        snprintf(why, n, "TM and TN must be 4 or 8 and divide BM and BN, BK a multiple of 4");
        return;
    }
    uint64_t wg = (uint64_t)(t.bm / t.tm) * (t.bn / t.tn);
    uint64_t shared = 2ull * t.bk * (t.bm / 4 + 1 + t.bn / 4 + 1) * 16;
    if (wg > vk->caps.max_wg || wg > vk->props.limits.maxComputeWorkGroupSize[0])
        snprintf(why, n, "%llu invocations make a workgroup larger than the device's %u",
                 (unsigned long long)wg, vk->caps.max_wg);
    else if ((uint64_t)t.bm * t.bk / 4 > MM_VMAX * wg || (uint64_t)t.bn * t.bk / 4 > MM_VMAX * wg)
        snprintf(why, n, "a slice needs more than %d loads per invocation", MM_VMAX);
    else if (shared > vk->caps.shared_bytes)
        snprintf(why, n, "%llu bytes of shared memory, the device has %u",
                 (unsigned long long)shared, vk->caps.shared_bytes);
}

/*
 * The plain tile for a product of batch x M x N in dtype dt (matmul.comp):
 *  - CHIMERA_VULKAN_MATMUL_TILE=BMxBNxBK/TMxTN where given (a tuning knob; a config error
 *    when malformed or when the device cannot run it);
 *  - a CPU device (lavapipe) or a small workgroup limit: 32x32 tiles of 8x8 per invocation
 *    (16 invocations; lavapipe runs them 2.3x as fast as 4x4 per invocation, session 15);
 *  - a GPU: 8x8 per invocation in 128x64 tiles for f32, 128x128 for 16-bit tensors (the
 *    faster of each on an H100: f32 31-36 TFLOP/s at 4096^3 and chimera-1b's shapes, 16-bit
 *    30-33), where they make at least half of wg_slots workgroups; else 64x64 (more of them).
 */
static chm_status pick_tile(chm_vk *vk, chm_dtype dt, int64_t batch, int64_t M, int64_t N,
                            mm_tile *out) {
    static const mm_tile small = {32, 32, 8, 8, 8}, few = {64, 64, 8, 8, 8},
                         f32 = {128, 64, 8, 8, 8}, half = {128, 128, 8, 8, 8};
    const char *s = getenv("CHIMERA_VULKAN_MATMUL_TILE");
    char why[160] = "";
    if (s && *s) {
        unsigned v[5];
        int end = 0;
        if (sscanf(s, "%ux%ux%u/%ux%u%n", &v[0], &v[1], &v[2], &v[3], &v[4], &end) != 5 || s[end])
            return CHM_ERR(&vk->be->err, CHM_ERR_CONFIG,
                           "CHIMERA_VULKAN_MATMUL_TILE=%.40s is not BMxBNxBK/TMxTN "
                           "(e.g. 128x64x8/8x8)", s);
        *out = (mm_tile){v[0], v[1], v[2], v[3], v[4]};
        mm_tile_check(vk, *out, why, sizeof why);
        if (why[0])
            return CHM_ERR(&vk->be->err, CHM_ERR_CONFIG,
                           "CHIMERA_VULKAN_MATMUL_TILE=%.40s cannot run on %s: %s", s,
                           vk->props.deviceName, why);
        return CHM_OK;
    }
    *out = small;
    if (vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU || vk->caps.max_wg < 256) return CHM_OK;
    mm_tile big = dt == CHM_F32 ? f32 : half;
    int64_t tiles = batch * ((M + big.bm - 1) / big.bm) * ((N + big.bn - 1) / big.bn);
    /* the first that the device can run (shared memory, workgroup size) of these */
    const mm_tile order[2] = {2 * tiles >= (int64_t)vk->caps.wg_slots ? big : few, few};
    for (int i = 0; i < 2; i++) {
        mm_tile_check(vk, order[i], why, sizeof why);
        if (!why[0]) {
            *out = order[i];
            break;
        }
    }
    return CHM_OK;
}

/* Limits of matmul_cm.comp: its FMAX and NMAX (2 and 4 when emulated), LMAX, and the deepest BK. */
#define CM_FMAX 4
#define CM_NMAX 8
#define CM_FMAX_EMULATED 2
#define CM_NMAX_EMULATED 4
#define CM_LMAX 4
#define CM_BK_MAX 64

/* Cooperative-matrix tile of products with M or N <= 64, where 128-wide tiles waste most work. */
static const chm_vk_cm_tile cm_small = {64, 64, 32, 32, 32, 0};

/* Words (8 f16) of one shared-memory stage of an operand slice (matmul_cm.comp's A_WORDS). */
static uint32_t cm_stage_words(uint32_t rows, uint32_t bk) {
    uint32_t k_fast = rows * (bk / 8 + 1), r_fast = bk * (rows / 8 + 1);
    return k_fast > r_fast ? k_fast : r_fast;
}

/* The shape rules of matmul_cm.comp's spec constants (why[0] stays 0 when they hold). */
static void cm_shape_check(const chm_vk *vk, chm_vk_cm_tile t, char *why, size_t n) {
    bool emu = vk->caps.coopmat_emulated;
    uint32_t fmax = emu ? CM_FMAX_EMULATED : CM_FMAX, nmax = emu ? CM_NMAX_EMULATED : CM_NMAX;
    if ((t.fn != 16 || !vk->caps.cm_n16) && (t.fn != 8 || !vk->caps.cm_n8))
        snprintf(why, n, "the device lists no 16x%ux16 f16 -> f32 matrices", t.fn);
    else if (!t.wm || !t.wn || t.wm % 16 || t.wn % t.fn || t.wm > 16 * fmax || t.wn > t.fn * nmax)
        snprintf(why, n, "WM must be a multiple of 16 up to %u, WN of %u up to %u", 16 * fmax,
                 t.fn, t.fn * nmax);
    else if (!t.bm || !t.bn || t.bm % t.wm || t.bn % t.wn || !t.bk || t.bk % 16 ||
             t.bk > CM_BK_MAX)
        snprintf(why, n, "BM and BN must be multiples of WM and WN, BK a multiple of 16 up to %d",
                 CM_BK_MAX);
}

void chm_vk_cm_tile_check(const chm_vk *vk, chm_vk_cm_tile t, char *why, size_t n) {
    why[0] = '\0';
    cm_shape_check(vk, t, why, n);
    if (why[0]) return;
    uint32_t sg = vk->caps.subgroup_size;
    uint64_t warps = (uint64_t)(t.bm / t.wm) * (t.bn / t.wn), wg = warps * sg;
    uint64_t a = cm_stage_words(t.bm, t.bk), b = cm_stage_words(t.bn, t.bk);
    uint64_t shared = 2 * (a + b) * 16;
    if (wg > vk->caps.max_wg || wg > vk->props.limits.maxComputeWorkGroupSize[0])
        snprintf(why, n, "%llu warps of %u make a workgroup larger than the device's %u",
                 (unsigned long long)warps, sg, vk->caps.max_wg);
    else if ((uint64_t)t.bm * t.bk / 8 > CM_LMAX * wg || (uint64_t)t.bn * t.bk / 8 > CM_LMAX * wg)
        snprintf(why, n, "a slice needs more than %d loads per invocation", CM_LMAX);
    else if (shared > vk->caps.shared_bytes)
        snprintf(why, n, "%llu bytes of shared memory, the device has %u",
                 (unsigned long long)shared, vk->caps.shared_bytes);
    else if (warps * 4 * t.wn > 2 * (a + b)) /* 16 rows of WN f32 a warp */
        snprintf(why, n, "the epilogue scratch of %llu warps does not fit the stages",
                 (unsigned long long)warps);
}

/* matmul_cm2.comp's limits: BK fits spec constant 4's low byte, under the transpose bits. */
#define CM2_BK_MAX 128

void chm_vk_cm2_tile_check(const chm_vk *vk, chm_vk_cm2_tile t, char *why, size_t n) {
    const uint32_t *g = vk->caps.cm2_gran;
    why[0] = '\0';
    if (!t.bm || !t.bn || !t.bk || !g[0] || !g[1] || !g[2] || t.bm % g[0] || t.bn % g[1] ||
        t.bk % g[2] || t.bk > CM2_BK_MAX)
        snprintf(why, n, "BM, BN and BK must be multiples of the device's %ux%ux%u "
                 "granularity, BK at most %d", g[0], g[1], g[2], CM2_BK_MAX);
    else if (!t.wg || t.wg > vk->caps.max_wg || t.wg % vk->caps.subgroup_size)
        snprintf(why, n, "%u invocations do not make a workgroup of whole subgroups on this device",
                 t.wg);
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

/*
 * What one call dispatches: shader variant, workgroup size and specialization
 * constants; `scaled`: bf16 on cooperative matrices (cm_scale.comp first),
 * `trans_spec`: the transposes go into spec constant 4 (matmul_cm.comp).
 */
typedef struct mm_plan {
    char shader[48];
    uint32_t bm, bn, wg;
    uint32_t spec[8];
    int nspec;
    bool scaled, trans_spec;
    bool cm;         /* matmul_cm.comp (any flavour, emulated too) */
    uint32_t ksplit; /* matmul_cm.comp's KSPLIT (workgroups per tile, over K); 0 or 1: none */
} mm_plan;

/* Record the dispatch; third binding is bias (plain) or counts (grouped); exps: scaled bf16. */
static chm_status mm_run(chm_vk *vk, const mm_plan *pl, const chm_tensor *C, const chm_tensor *A,
                         const chm_tensor *B, const chm_tensor *third, const chm_tensor *exps,
                         mm_push *pc) {
    uint64_t groups = (uint64_t)pc->batch * pc->tiles_m * pc->tiles_n * (pl->ksplit ? pl->ksplit : 1);
    if (groups > UINT32_MAX)
        return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                       "%s: %llu tiles are more than one dispatch holds; split the batch",
                       pl->shader, (unsigned long long)groups);
    chm_vk_dispatch d = {
        .shader = pl->shader, .nbind = exps ? 5 : 4, .bind = {A, B, third, C, exps},
        .writes = 1u << 3, .status = third && third->dtype == CHM_I32, .push = pc,
        .push_size = sizeof *pc, .groups = (uint32_t)groups, .wg = pl->wg, .nspec = pl->nspec,
    };
    memcpy(d.spec, pl->spec, sizeof pl->spec);
    if (pl->trans_spec) d.spec[2] |= (pc->flags & MM_TRANS_A ? 256u : 0) |
                                     (pc->flags & MM_TRANS_B ? 512u : 0);
    return chm_vk_run(vk, &d);
}

/* ---- bf16 on cooperative matrices: operands scaled into f16's range (cm_scale.comp) ---- */

/* cm_scale.comp's push block after off[]. */
typedef struct cs_push {
    uint32_t rows, cols, batch, rowmode, out_base, live, vec, phase, chunk;
} cs_push;

/* Stored rows a chunk of cm_scale.comp's column phases. */
#define CS_CHUNK 256

/*
 * The exponents of X's stored columns in cm_scale.comp's two phases: each
 * chunk's largest magnitudes into a scratch, then the largest of the chunks.
 * Binding 3 counts as written in both (the shader declares it writable for
 * phase 3's rows, and synchronisation validation goes by the declaration).
 */
static chm_status cm_scale_cols(chm_vk *vk, const chm_tensor *X, const chm_tensor *counts,
                                const chm_tensor *exps, cs_push *pc) {
    uint32_t chunks = chm_vk_groups(pc->rows, CS_CHUNK), per = pc->vec ? 256 : 32;
    chm_tensor parts = {0};
    CHM_TRY(chm_vk_scratch(vk->be, CHM_I32, (int64_t)pc->batch * chunks * pc->cols, &parts));
    pc->phase = 1;
    chm_vk_dispatch e = {
        .shader = "cm_scale_exp", .nbind = 4, .bind = {X, counts, &parts, NULL},
        .writes = 1u << 2 | 1u << 3, .push = pc, .push_size = sizeof *pc, .wg = 256,
        .groups = pc->batch * chm_vk_groups(pc->cols, per) * chunks,
    };
    chm_status rc = chm_vk_run(vk, &e);
    pc->phase = 2;
    e.bind[2] = exps, e.bind[3] = &parts;
    e.groups = chm_vk_groups((int64_t)pc->batch * pc->cols, 256);
    if (!rc) rc = chm_vk_run(vk, &e);
    chm_vk_scratch_free(vk->be, &parts);
    return rc;
}

/*
 * Scale stored operand X [.., rows, cols] into Y (f16, X's shape): the
 * exponents of its lines (stored rows when rowmode, else stored columns)
 * into exps from out_base, then the values. Stored rows take one dispatch
 * (phase 3: each workgroup scales the rows it has just read, from the
 * caches); stored columns need their maxima over all rows first (two
 * phases), then cm_scale_apply. counts: grouped with trans_a (only the
 * live terms count), else NULL.
 */
static chm_status cm_scale_operand(chm_vk *vk, const chm_tensor *X, bool rowmode,
                                   uint32_t out_base, const chm_tensor *counts,
                                   const chm_tensor *exps, const chm_tensor *Y) {
    /* uvec4 words where X and Y start 16-byte aligned and rows hold whole words */
    bool vec = chm_vk_tensor_range(X).lo % 16 == 0 && chm_vk_tensor_range(Y).lo % 16 == 0 &&
               cols_of(X) % 8 == 0;
    cs_push pc = {(uint32_t)rows_of(X), (uint32_t)cols_of(X), (uint32_t)batch_of(X), rowmode,
                  out_base, counts != NULL, vec, 0, CS_CHUNK};
    if (rowmode) {
        pc.phase = 3;
        chm_vk_dispatch e = {
            .shader = "cm_scale_exp", .nbind = 4, .bind = {X, counts, exps, Y},
            .writes = 1u << 2 | 1u << 3, .push = &pc, .push_size = sizeof pc, .wg = 256,
            .groups = pc.batch * chm_vk_groups(pc.rows, 8),
        };
        return chm_vk_run(vk, &e);
    }
    CHM_TRY(cm_scale_cols(vk, X, counts, exps, &pc));
    chm_vk_dispatch a = {
        .shader = "cm_scale_apply", .nbind = 3, .bind = {X, exps, Y}, .writes = 1u << 2,
        .push = &pc, .push_size = sizeof pc, .wg = 256,
        .groups = chm_vk_groups(chm_tensor_numel(X), pc.vec ? 8 * 256 : 256),
    };
    return chm_vk_run(vk, &a);
}

/* A scratch f16 tensor of X's shape (freed with chm_vk_scratch_free). */
static chm_status scratch_like(chm_backend *be, const chm_tensor *X, chm_tensor *out) {
    CHM_TRY(chm_vk_scratch(be, CHM_F16, chm_tensor_numel(X), out));
    *out = chm_tensor_make(out->buf, 0, CHM_F16, X->ndim, X->shape);
    return CHM_OK;
}

/*
 * The scaled bf16 product: A and B scaled into f16 scratch copies with their
 * exponents (rows of op(A) first, [batch of A, M], then columns of op(B),
 * [batch of B, N], as matmul_cm.comp reads them), then the matmul on them.
 */
static chm_status mm_run_scaled(chm_vk *vk, const mm_plan *pl, const chm_tensor *C,
                                const chm_tensor *A, const chm_tensor *B, const chm_tensor *third,
                                bool grouped, mm_push *pc) {
    chm_backend *be = vk->be;
    bool ta = pc->flags & MM_TRANS_A, tb = pc->flags & MM_TRANS_B;
    int64_t na = batch_of(A) * pc->M, nb = batch_of(B) * pc->N;
    const chm_tensor *counts = grouped && ta ? third : NULL;
    chm_tensor exps = {0}, A16 = {0}, B16 = {0};
    chm_status rc = chm_vk_scratch(be, CHM_I32, na + nb, &exps);
    if (!rc) rc = scratch_like(be, A, &A16);
    if (!rc) rc = scratch_like(be, B, &B16);
    if (!rc) rc = cm_scale_operand(vk, A, !ta, 0, counts, &exps, &A16);
    if (!rc) rc = cm_scale_operand(vk, B, tb, (uint32_t)na, counts, &exps, &B16);
    if (!rc) rc = mm_run(vk, pl, C, &A16, &B16, third, &exps, pc);
    if (exps.buf) chm_vk_scratch_free(be, &exps);
    if (A16.buf) chm_vk_scratch_free(be, &A16);
    if (B16.buf) chm_vk_scratch_free(be, &B16);
    return rc;
}

/* Run a plan: scaled (bf16 on cooperative matrices) or as it is. */
static chm_status mm_dispatch(chm_vk *vk, const mm_plan *pl, const chm_tensor *C,
                              const chm_tensor *A, const chm_tensor *B, const chm_tensor *third,
                              bool grouped, mm_push *pc) {
    if (pl->scaled) return mm_run_scaled(vk, pl, C, A, B, third, grouped, pc);
    return mm_run(vk, pl, C, A, B, third, NULL, pc);
}

/* The cooperative-matrix tile for a product of M x N: the small one for thin products. */
static chm_vk_cm_tile cm_tile_for(const chm_vk *vk, int64_t M, int64_t N) {
    if (M > 64 && N > 64) return vk->caps.cm_tile;
    chm_vk_cm_tile small = cm_small;
    small.fn = vk->caps.cm_tile.fn;
    char why[160];
    chm_vk_cm_tile_check(vk, small, why, sizeof why);
    return why[0] ? vk->caps.cm_tile : small;
}

/* The cm2 tile for a product of M x N: 64x64 for thin products where the device takes it. */
static chm_vk_cm2_tile cm2_tile_for(const chm_vk *vk, int64_t M, int64_t N) {
    chm_vk_cm2_tile t = vk->caps.cm2_tile, small = {64, 64, t.bk, t.wg, t.prefetch};
    if (M > 64 && N > 64) return t;
    char why[160];
    chm_vk_cm2_tile_check(vk, small, why, sizeof why);
    return why[0] ? t : small;
}

/* Whether a product of C's dtype runs on matmul_cm2.comp: bf16 where the device has bf16
   cooperative matrices 2 (no scaling pass) and matmul_cm.comp runs on NVIDIA's matrices; f16
   only where matmul_cm.comp does not run it on real cooperative matrices, which are faster
   for f16 on an H100 (4096^3 A B^T: 153.5 against 127.0 TFLOP/s, session 8 run 5;
   CHIMERA_VULKAN_DISABLE=coopmat sends f16 to cm2). On KHR matrices matmul_cm.comp beats cm2
   for bf16 too, scaling passes included (190.5 against 126.2 TFLOP/s; chimera-1b 26.0k
   against 24.8k tokens/s; session 9). */
static bool cm2_takes(const chm_vk *vk, chm_dtype dt) {
    bool v1 = vk->caps.coopmat && !vk->caps.coopmat_emulated;
    return vk->caps.coopmat2 && ((dt == CHM_F16 && !v1) ||
                                 (dt == CHM_BF16 && vk->caps.coopmat2_bf16 &&
                                  !(v1 && vk->caps.coopmat_khr)));
}

/*
 * Choose the kernel for C's dtype; CHM_ERR_DTYPE / CHM_ERR_UNSUPPORTED when
 * there is none. K is the product's depth: an empty product (M, N or K 0)
 * of bf16 takes the plain path (nothing to scale).
 */
static chm_status mm_plan_make(chm_vk *vk, const char *op, const chm_tensor *C, int64_t K,
                               bool grouped, mm_plan *pl) {
    chm_dtype dt = C->dtype;
    const char *base = grouped ? "matmul_grouped" : "matmul";
    if (dt == CHM_F32 || dt == CHM_F64) {
        CHM_TRY(chm_vk_need_f32(vk->be, op, C));
        mm_tile t;
        CHM_TRY(pick_tile(vk, CHM_F32, batch_of(C), rows_of(C), cols_of(C), &t));
        *pl = (mm_plan){.bm = t.bm, .bn = t.bn, .wg = (t.bm / t.tm) * (t.bn / t.tn),
                        .spec = {t.bm, t.bn, t.bk, t.tm, t.tn}, .nspec = 5};
        snprintf(pl->shader, sizeof pl->shader, "%s", base);
        return CHM_OK;
    }
    if (!vk->caps.storage16)
        return CHM_ERR(&vk->be->err, CHM_ERR_UNSUPPORTED,
                       "%s: %s tensors need 16-bit storage, which %s lacks (or "
                       "CHIMERA_VULKAN_DISABLE=16bit turned off); use f32", op,
                       chm_dtype_name(dt), vk->props.deviceName);
    const char *suffix = dt == CHM_BF16 ? "bf16" : "f16";
    int64_t M = C->shape[C->ndim - 2], N = C->shape[C->ndim - 1];
    bool empty = M == 0 || N == 0 || K == 0;
    bool native = dt == CHM_BF16 && vk->caps.coopmat && vk->caps.coopmat_bf16_native && !empty;
    if (!native && cm2_takes(vk, dt) && !empty) {
        chm_vk_cm2_tile t = cm2_tile_for(vk, M, N);
        *pl = (mm_plan){.bm = t.bm, .bn = t.bn, .wg = t.wg,
                        .spec = {t.bm, t.bn, t.bk | (t.prefetch ? 1024u : 0u)}, .nspec = 3,
                        .trans_spec = true};
        snprintf(pl->shader, sizeof pl->shader, "%s_cm2_%s", base, suffix);
        return CHM_OK;
    }
    if (vk->caps.coopmat && (dt == CHM_F16 || (vk->caps.coopmat_bf16 && !empty))) {
        chm_vk_cm_tile t = cm_tile_for(vk, M, N);
        if (native) t.fn = vk->caps.cm_bf16_fn; /* the warp tiles hold either (vk_coopmat.c) */
        uint32_t warps = (t.bm / t.wm) * (t.bn / t.wn);
        *pl = (mm_plan){.bm = t.bm, .bn = t.bn, .wg = warps * vk->caps.subgroup_size,
                        .spec = {t.bm, t.bn, t.bk, t.wm, t.wn, t.fn, vk->caps.cm_ablate},
                        .nspec = vk->caps.cm_ablate ? 7 : 6,
                        .scaled = dt == CHM_BF16 && !native,
                        .trans_spec = !vk->caps.coopmat_emulated, .cm = true};
        if (native) /* KHR bf16 matrices, also beside NVIDIA's extension (f16's) */
            snprintf(pl->shader, sizeof pl->shader, "%s_cm_%s_bf16n", base,
                     vk->caps.coopmat_emulated ? "emu" : "khr");
        else
            snprintf(pl->shader, sizeof pl->shader, "%s_cm_%s_%s", base, chm_vk_cm_flavor(vk),
                     suffix);
        return CHM_OK;
    }
    mm_tile t;
    CHM_TRY(pick_tile(vk, dt, batch_of(C), M, N, &t));
    *pl = (mm_plan){.bm = t.bm, .bn = t.bn, .wg = (t.bm / t.tm) * (t.bn / t.tn),
                    .spec = {t.bm, t.bn, t.bk, t.tm, t.tn}, .nspec = 5};
    snprintf(pl->shader, sizeof pl->shader, "%s_%s", base, suffix);
    return CHM_OK;
}

/* pick_tile's tile count for push_make, from a plan's BM and BN. */
static mm_tile plan_tile(const mm_plan *pl) { return (mm_tile){pl->bm, pl->bn, 0, 0, 0}; }

/* ---- split-K for thin products with a long sum (matmul_splitk.comp) ---- */

/* Rows of K per slice: a multiple of the shader's KC (32), at least 256. */
#define SK_MIN_ROWS 256
/* Workgroups to aim for over all slices: enough to fill a large GPU several times. */
#define SK_GROUPS 1024
/* Widest small dim: blocks of 64 columns (each block reads the large operand once more). */
#define SK_MAX_SMALL 256

/* K of C = op(A) op(B): A's rows when trans_a (A stored [K,M]), else its columns. */
static int64_t splitk_depth(const chm_tensor *A, bool trans_a) {
    return trans_a ? A->shape[0] : A->shape[1];
}

/* Whether C = alpha*op(A)op(B) + beta*C takes the split-K path (see the file comment). */
static bool splitk_fits(const chm_vk *vk, const chm_tensor *C, const chm_tensor *A,
                        const chm_tensor *B, const chm_tensor *bias, bool trans_a) {
    /* f64, and 16-bit tensors without 16-bit storage: mm_plan_make refuses them */
    chm_dtype dt = C->dtype;
    bool dt_ok = dt == CHM_F32 || ((dt == CHM_BF16 || dt == CHM_F16) && vk->caps.storage16);
    if (!dt_ok || !vk->caps.splitk || bias || C->ndim != 2 || A->ndim != 2 || B->ndim != 2)
        return false;
    int64_t M = C->shape[0], N = C->shape[1], K = splitk_depth(A, trans_a);
    int64_t small = M < N ? M : N, large = M < N ? N : M;
    if (small < 1 || small > SK_MAX_SMALL || K < 1024 || K < 4 * large) return false;
    const chm_tensor *all[] = {A, B, C};
    for (int i = 0; i < 3; i++) { /* each binds whole */
        chm_vk_range r = chm_vk_tensor_range(all[i]);
        VkDeviceSize base, range;
        chm_vk_bind_extent(vk, &r, &base, &range);
        if (range > vk->caps.max_range) return false;
    }
    return true;
}

/* The partial pass: slices x tiles workgroups into part [slices, small, L]. */
static chm_status splitk_part(chm_vk *vk, const chm_tensor *C, const chm_tensor *A,
                              const chm_tensor *B, bool trans_a, bool trans_b,
                              const chm_tensor *part, uint32_t ks, uint32_t slices,
                              uint32_t tiles) {
    uint32_t M = (uint32_t)C->shape[0], N = (uint32_t)C->shape[1];
    uint32_t K = (uint32_t)splitk_depth(A, trans_a), small = M < N ? M : N;
    uint32_t width = small <= 16 ? 16 : 64, jblocks = (small + width - 1) / width;
    /* element (k, m) of op(A) and (k, n) of op(B) in their stored layouts */
    struct {
        uint32_t M, N, K, ks, tiles, small_m, jblocks, a_sk, a_sm, b_sk, b_sn;
    } pc = {M, N, K, ks, tiles, M <= N, jblocks,
            trans_a ? M : 1, trans_a ? 1 : K, trans_b ? 1 : N, trans_b ? K : 1};
    const char *base = width == 16 ? "matmul_splitk_part16" : "matmul_splitk_part64";
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, base, C->dtype, false, name, sizeof name),
        .nbind = 3, .bind = {A, B, part}, .writes = 1u << 2, .push = &pc, .push_size = sizeof pc,
        .groups = slices * jblocks * tiles, .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

/* C = alpha * (the slices of part summed in order) + beta*C; part [slices, M, N] when small_m,
   else [slices, N, M]. */
static chm_status splitk_sum(chm_vk *vk, const chm_tensor *C, const chm_tensor *part,
                             uint32_t slices, double alpha, double beta, bool small_m) {
    uint32_t M = (uint32_t)C->shape[0], N = (uint32_t)C->shape[1];
    struct {
        uint32_t M, N, slices, small_m, beta0;
        float alpha, beta;
    } pc = {M, N, slices, small_m, beta == 0, (float)alpha, (float)beta};
    char name[48];
    chm_vk_dispatch d = {
        .shader = chm_vk_variant_dt(vk, "matmul_splitk_sum", C->dtype, false, name, sizeof name),
        .nbind = 2, .bind = {part, C}, .writes = 1u << 1, .push = &pc, .push_size = sizeof pc,
        .groups = chm_vk_groups((int64_t)M * N, vk->caps.wg_elem), .wg = vk->caps.wg_elem,
    };
    return chm_vk_run(vk, &d);
}

static chm_status matmul_splitk(chm_vk *vk, const chm_tensor *C, const chm_tensor *A,
                                const chm_tensor *B, bool trans_a, bool trans_b, double alpha,
                                double beta) {
    int64_t M = C->shape[0], N = C->shape[1], K = splitk_depth(A, trans_a);
    int64_t small = M < N ? M : N, large = M < N ? N : M;
    uint32_t tiles = chm_vk_groups(large, vk->caps.wg_elem);
    int64_t want = (SK_GROUPS + tiles - 1) / tiles, most = K / SK_MIN_ROWS;
    int64_t slices = want < most ? want : most;
    if (slices < 1) slices = 1;
    int64_t ks = (K + slices - 1) / slices;
    ks = (ks + 31) / 32 * 32;
    slices = (K + ks - 1) / ks;
    chm_tensor part;
    CHM_TRY(chm_vk_scratch(vk->be, CHM_F32, slices * small * large, &part));
    chm_status rc =
        splitk_part(vk, C, A, B, trans_a, trans_b, &part, (uint32_t)ks, (uint32_t)slices, tiles);
    if (!rc) rc = splitk_sum(vk, C, &part, (uint32_t)slices, alpha, beta, M <= N);
    chm_vk_scratch_free(vk->be, &part);
    return rc;
}

/* ---- K split of cooperative-matrix products with few tiles (matmul_cm.comp's KSPLIT) ---- */

/* Terms of K a split sums at least, and the most splits. */
#define KS_MIN_TERMS 1024
#define KS_MAX 16

/*
 * How many splits of K a cooperative-matrix product C [M,N] (one batch entry, no
 * bias) takes: with fewer tiles than the workgroups that run at once, the S of
 * 1..KS_MAX whose waves, ceil(tiles S / slots) of work 1/S each, take least time, or the
 * fewest within 10% of that (more splits, more partials to write and add: chimera-1b's 80-tile
 * 1280x1024x50304 took 13 splits at 8% less wave time than 3 and ran 22% slower), each split
 * summing at least KS_MIN_TERMS terms. chimera-1b's
 * weight gradients on an H100 (264 slots): 128 tiles -> 2, 176 -> 3, 64 -> 4, 80 -> 3; the
 * thin x_proj and dt_proj weight gradients (16 and 32 tiles, K = 16384) -> 15 and 8.
 * CHIMERA_VULKAN_DISABLE=splitk turns it off with the thin products' split.
 */
static uint32_t ksplit_count(const chm_vk *vk, const mm_plan *pl, const mm_push *pc,
                             const chm_tensor *C, const chm_tensor *bias) {
    if (!pl->cm || bias || C->ndim != 2 || pc->batch != 1 || !vk->caps.splitk)
        return 1;
    uint64_t tiles = (uint64_t)pc->tiles_m * pc->tiles_n, slots = vk->caps.wg_slots;
    if (slots == 0 || tiles >= slots) return 1;
    double least = 1.0;
    for (uint32_t s = 2; s <= KS_MAX && (uint64_t)s * KS_MIN_TERMS <= pc->K; s++) {
        double t = (double)((tiles * s + slots - 1) / slots) / s;
        if (t < least) least = t;
    }
    for (uint32_t s = 1; s <= KS_MAX; s++) /* the fewest within 10% of the least */
        if ((double)((tiles * s + slots - 1) / slots) / s <= 1.1 * least + 1e-9) return s;
    return 1;
}

/* C = alpha op(A) op(B) + beta C as S splits of K into an f32 scratch, then their sum. */
static chm_status mm_run_ksplit(chm_vk *vk, const mm_plan *pl, const chm_tensor *C,
                                const chm_tensor *A, const chm_tensor *B, const mm_push *pc,
                                uint32_t S, double alpha, double beta) {
    chm_tensor part;
    CHM_TRY(chm_vk_scratch(vk->be, CHM_F32, (int64_t)S * pc->M * pc->N, &part));
    mm_plan sp = *pl;
    sp.spec[6] = vk->caps.cm_ablate;
    sp.spec[7] = S;
    sp.nspec = 8;
    sp.ksplit = S;
    mm_push q = *pc;
    q.alpha = 1.0f, q.beta = 0.0f, q.flags |= MM_BETA0;
    chm_status rc = mm_dispatch(vk, &sp, &part, A, B, NULL, false, &q);
    if (!rc) rc = splitk_sum(vk, C, &part, S, alpha, beta, true);
    chm_vk_scratch_free(vk->be, &part);
    return rc;
}

chm_status chm_vk_matmul(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                         const chm_tensor *B, const chm_tensor *bias, bool trans_a, bool trans_b,
                         double alpha, double beta) {
    chm_vk *vk = chm_vk_ctx(be);
    /*
     * Thin products with a long sum take matmul_splitk.comp's plain split, except where the
     * product runs on matmul_cm.comp: there its K split (ksplit_count) keeps the tensor cores
     * (chimera-1b's x_proj and dt_proj weight gradients on an H100: 11-12 TFLOP/s on the plain
     * split, session 11).
     */
    bool thin = splitk_fits(vk, C, A, B, bias, trans_a);
    if (thin && C->dtype == CHM_F32) return matmul_splitk(vk, C, A, B, trans_a, trans_b, alpha, beta);
    mm_plan pl;
    CHM_TRY(mm_plan_make(vk, "matmul", C, trans_a ? rows_of(A) : cols_of(A), false, &pl));
    mm_push pc = push_make(C, A, B, trans_a, trans_b, alpha, beta, plan_tile(&pl));
    uint32_t S = ksplit_count(vk, &pl, &pc, C, bias); /* 1 unless on matmul_cm.comp */
    int64_t small = C->shape[0] < C->shape[1] ? C->shape[0] : C->shape[1];
    if (thin && !(S > 1 && small >= 32)) /* the routers' [8,1024] and [1,1024] stay plain */
        return matmul_splitk(vk, C, A, B, trans_a, trans_b, alpha, beta);
    if (S > 1) return mm_run_ksplit(vk, &pl, C, A, B, &pc, S, alpha, beta);
    if (bias) pc.flags |= MM_BIAS;
    return mm_dispatch(vk, &pl, C, A, B, bias, false, &pc);
}

chm_status chm_vk_matmul_grouped(chm_backend *be, const chm_tensor *C, const chm_tensor *A,
                                 const chm_tensor *B, const chm_tensor *counts, bool trans_a,
                                 bool trans_b, double alpha, double beta, bool tail_zero) {
    (void)tail_zero; /* the shaders read the counts and handle the dead rows themselves */
    chm_vk *vk = chm_vk_ctx(be);
    mm_plan pl;
    CHM_TRY(mm_plan_make(vk, "matmul_grouped", C, trans_a ? rows_of(A) : cols_of(A), true, &pl));
    mm_push pc = push_make(C, A, B, trans_a, trans_b, alpha, beta, plan_tile(&pl));
    return mm_dispatch(vk, &pl, C, A, B, counts, true, &pc);
}

const char *chm_vulkan_matmul_path(const chm_backend *be, chm_dtype dt) {
    if (!be || strcmp(be->name, "vulkan") != 0) return NULL;
    const chm_vk *vk = be->ctx;
    if (dt == CHM_F32) return "plain";
    if ((dt != CHM_F16 && dt != CHM_BF16) || !vk->caps.storage16) return NULL;
    bool native = dt == CHM_BF16 && vk->caps.coopmat && vk->caps.coopmat_bf16_native;
    if (native) return vk->caps.coopmat_emulated ? "coopmat-emulated-bf16" : "coopmat-khr-bf16";
    if (cm2_takes(vk, dt)) return "coopmat2";
    if (!vk->caps.coopmat || (dt == CHM_BF16 && !vk->caps.coopmat_bf16)) return "plain";
    return vk->caps.coopmat_emulated ? "coopmat-emulated"
           : vk->caps.coopmat_khr    ? "coopmat-khr"
                                     : "coopmat-nv";
}
