/*
 * cm_probe_ops.glsl: the cooperative-matrix types and operations of
 * tools/vk_bench's probe shaders (cm_probe_mma.comp, cm_probe_load.comp),
 * included after common.glsl. FRAG_N (16 or 8, a define or a spec constant)
 * is the N of the B fragments and accumulators; A fragments are 16x16 f16.
 * -DACC_F16 makes the accumulators f16 (where the device lists that shape).
 * -DPLAIN replaces every matrix by one f32 value per invocation and the
 * operations by plain arithmetic: no result worth reading, but the probe's
 * plumbing (pipelines, bindings, timing) then runs on devices without
 * cooperative matrices (lavapipe), where the real variants cannot.
 * -DCM_KHR: the matrices of GL_KHR_cooperative_matrix instead of NVIDIA's
 * (typed by use; f32 accumulators only).
 * Offsets and strides count elements of the array they address.
 */
#ifdef PLAIN
#define ACC_BITS 32
#define CM_IN_A float
#define CM_IN_B float
#define CM_ACC float
#define CM_ACC_ZERO 0.0
float plain_val(uvec4 w) { return uintBitsToFloat(w.x & 0x3fffffffu); }
float plain_val(float16_t h) { return float(h); }
#define CM_LOAD(f, buf, elem, stride, col) f = plain_val(buf[(elem) + (col ? 0u : stride)])
#define CM_MULADD(x, y, acc) fma(x, y, acc)
#define CM_STORE(acc, buf, elem, stride) \
    buf[(elem) + gl_SubgroupInvocationID] = uvec4(floatBitsToUint(acc))
#else
#ifdef ACC_F16
#define ACC_BITS 16
#else
#define ACC_BITS 32
#endif
#ifdef CM_KHR
#define CM_IN_A coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>
#define CM_IN_B coopmat<float16_t, gl_ScopeSubgroup, 16, FRAG_N, gl_MatrixUseB>
#define CM_ACC coopmat<float, gl_ScopeSubgroup, 16, FRAG_N, gl_MatrixUseAccumulator>
#define CM_ACC_ZERO CM_ACC(0.0)
#define CM_LAYOUT(col) \
    ((col) ? gl_CooperativeMatrixLayoutColumnMajor : gl_CooperativeMatrixLayoutRowMajor)
#define CM_LOAD(f, buf, elem, stride, col) coopMatLoad(f, buf, elem, stride, CM_LAYOUT(col))
#define CM_MULADD(x, y, acc) coopMatMulAdd(x, y, acc)
#define CM_STORE(acc, buf, elem, stride) \
    coopMatStore(acc, buf, elem, stride, gl_CooperativeMatrixLayoutRowMajor)
#else
#define CM_IN_A fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define CM_IN_B fcoopmatNV<16, gl_ScopeSubgroup, 16, FRAG_N>
#define CM_ACC fcoopmatNV<ACC_BITS, gl_ScopeSubgroup, 16, FRAG_N>
#define CM_ACC_ZERO CM_ACC(0.0)
#define CM_LOAD(f, buf, elem, stride, col) coopMatLoadNV(f, buf, elem, stride, col)
#define CM_MULADD(x, y, acc) coopMatMulAddNV(x, y, acc)
#define CM_STORE(acc, buf, elem, stride) coopMatStoreNV(acc, buf, elem, stride, false)
#endif
#endif

/* uvec4 words of one stored accumulator row, and of one accumulator (room for 16 x FRAG_N f32). */
#define ROW_WORDS (FRAG_N * ACC_BITS / 128u)
#define ACC_WORDS (4u * FRAG_N)

/* The first output word of this warp, which stores `count` accumulators. */
uint probe_warp_out(uint count) {
    return (chm_group() * (WG_SIZE / SUBGROUP_SIZE) + gl_SubgroupID) * count * ACC_WORDS;
}
