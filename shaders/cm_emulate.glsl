/*
 * cm_emulate.glsl: the cooperative-matrix operations of matmul_cm.comp in
 * plain GLSL (its CM_EMULATE variants), for devices without
 * GL_NV_cooperative_matrix: CI runs matmul_cm.comp's staging, fragment
 * offsets, transposes and epilogue on lavapipe through these, and only the
 * four operations below differ from the tensor-core build.
 *
 * An A (16x16) or B (16 x FRAG_N) fragment is where its f16 values lie in
 * matmul_cm.comp's shared array S (first word, row or column stride in
 * words, layout), as coopMatLoadNV would read them; the multiply reads them
 * there (the stage does not change between a load and its multiply:
 * matmul_cm.comp writes the other stage).
 * An accumulator holds the 16 x FRAG_N f32 values, element e = r*FRAG_N + c
 * in invocation e % SUBGROUP_SIZE of the warp. Products of f16 values are
 * exact in f32 and summed in f32, in order of k: the sums may differ from
 * the tensor cores' by rounding only. Needs SUBGROUP_SIZE >= 8 (a power of
 * two; vk_context.c checks), so that 16 x FRAG_N (128 or 256) is a multiple.
 *
 * lavapipe ends every loop of an invocation once they have run 65535
 * iterations between them (gallivm's LP_MAX_TGSI_LOOP_ITERATIONS): a long
 * K loop then silently stops summing. The 16 terms of a product are
 * therefore unrolled; with the emulated default tile (64x64x16/32x32,
 * 16x8 fragments) about 160 iterations remain per BK slice, so emulated
 * products are exact up to about 6500 terms (measured: 6608; the tests use
 * 1000).
 */
#define CM_LANE_MAX 32u /* at most 16 x 16 elements / the smallest subgroup allowed (8) */

struct cm_in {
    uint elem, stride;  /* words: row (or column) i starts at elem + i*stride */
    bool col;           /* column-major */
};

struct cm_acc {
    float v[CM_LANE_MAX];
};

/* f16 (bf16 with CM_BF16_NATIVE) value number `pos` counted from word `word` of S. */
float cm_half(uint word, uint pos) {
    uint h = word * 8u + pos;
    uint w = S[h / 8u][(h % 8u) / 2u];
#ifdef CM_BF16_NATIVE
    return chm_bf16_to_f32((w >> ((h % 2u) * 16u)) & 0xffffu);
#else
    return chm_f16_to_f32((w >> ((h % 2u) * 16u)) & 0xffffu);
#endif
}

/* Element (r, c) of fragment f, as coopMatLoadNV defines it. */
float cm_at(cm_in f, uint r, uint c) {
    return f.col ? cm_half(f.elem + c * f.stride, r) : cm_half(f.elem + r * f.stride, c);
}

cm_acc cm_zero() {
    cm_acc z;
    for (uint t = 0u; t < CM_LANE_MAX; t++) z.v[t] = 0.0;
    return z;
}

cm_acc cm_muladd(cm_in x, cm_in y, cm_acc acc) {
    for (uint t = 0u; t < 16u * FRAG_N / SUBGROUP_SIZE; t++) {
        uint e = gl_SubgroupInvocationID + t * SUBGROUP_SIZE, r = e / FRAG_N, c = e % FRAG_N;
        float s = acc.v[t];
        [[unroll]] for (uint k = 0u; k < 16u; k++) s += cm_at(x, r, k) * cm_at(y, k, c);
        acc.v[t] = s;
    }
    return acc;
}

/* Row r of the 16 x FRAG_N f32 accumulator to words elem + r*stride of S (4 values a word). */
void cm_store(cm_acc acc, uint elem, uint stride) {
    for (uint t = 0u; t < 16u * FRAG_N / SUBGROUP_SIZE; t++) {
        uint e = gl_SubgroupInvocationID + t * SUBGROUP_SIZE, r = e / FRAG_N, c = e % FRAG_N;
        S[elem + r * stride + c / 4u][c % 4u] = floatBitsToUint(acc.v[t]);
    }
}

#define CM_IN_A cm_in
#define CM_IN_B cm_in
#define CM_ACC cm_acc
#define CM_ZERO cm_zero()
#define CM_LOAD(f, e, s, cm) f = cm_in(e, s, cm)
#define CM_MULADD(x, y, acc) cm_muladd(x, y, acc)
#define CM_STORE(acc, e, s) cm_store(acc, e, s)
