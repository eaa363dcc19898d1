/*
 * coopmat_khr.comp: configure-time probe, never shipped. CMake compiles it with
 * glslc to learn whether this glslang knows GL_KHR_cooperative_matrix (glslang
 * 13 added it, 14 fixed its SPIR-V enumerants), which the cross-vendor
 * tensor-core matmul path of the vulkan backend needs.
 */
#version 450
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require

layout(local_size_x = 32) in;
layout(binding = 0) readonly buffer AB { float16_t ab[]; };
layout(binding = 1) writeonly buffer Cbuf { float c[]; };

void main() {
    coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA> a;
    coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseB> b;
    coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator> acc =
        coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>(0.0);
    coopMatLoad(a, ab, 0, 16, gl_CooperativeMatrixLayoutRowMajor);
    coopMatLoad(b, ab, 256, 16, gl_CooperativeMatrixLayoutRowMajor);
    acc = coopMatMulAdd(a, b, acc);
    coopMatStore(acc, c, 0, 16, gl_CooperativeMatrixLayoutRowMajor);
}
