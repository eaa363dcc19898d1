/*
 * coopmat_nv.comp: configure-time probe, never shipped. CMake compiles it with
 * glslc to learn whether this glslang knows GL_NV_cooperative_matrix, which
 * the NVIDIA tensor-core matmul path of the vulkan backend needs.
 */
#version 450
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require

layout(local_size_x = 32) in;
layout(binding = 0) readonly buffer AB { float16_t ab[]; };
layout(binding = 1) writeonly buffer Cbuf { float c[]; };

void main() {
    fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> a, b;
    fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
    coopMatLoadNV(a, ab, 0, 16, false);
    coopMatLoadNV(b, ab, 256, 16, false);
    acc = coopMatMulAddNV(a, b, acc);
    coopMatStoreNV(acc, c, 0, 16, false);
}
