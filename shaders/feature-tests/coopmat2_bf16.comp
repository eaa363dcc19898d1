/*
 * coopmat2_bf16.comp: configure-time probe, never shipped. CMake compiles it
 * with tools/glslc_dl.c over the modern glslang library (tools/fetch_glslang.sh)
 * to learn whether that toolchain builds what the newer cooperative-matrix
 * variants use: bf16 (GL_EXT_bfloat16), KHR cooperative matrices and NV's
 * workgroup-scope matrices with tensor-layout loads (GL_NV_cooperative_matrix2).
 */
#version 450
#extension GL_EXT_bfloat16 : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_EXT_shader_explicit_arithmetic_types : require

layout(local_size_x = 128) in;
layout(binding = 0) readonly buffer Abuf { bfloat16_t a[]; };
layout(binding = 1) writeonly buffer Cbuf { float c[]; };
layout(push_constant) uniform Push { uint n; } p;

void main() {
    tensorLayoutNV<2> t = createTensorLayoutNV(2);
    t = setTensorLayoutDimensionNV(t, p.n, p.n);
    coopmat<bfloat16_t, gl_ScopeWorkgroup, 64, 32, gl_MatrixUseA> ma;
    coopmat<bfloat16_t, gl_ScopeWorkgroup, 32, 64, gl_MatrixUseB> mb;
    coopmat<float, gl_ScopeWorkgroup, 64, 64, gl_MatrixUseAccumulator> acc =
        coopmat<float, gl_ScopeWorkgroup, 64, 64, gl_MatrixUseAccumulator>(0.0);
    coopMatLoadTensorNV(ma, a, 0, sliceTensorLayoutNV(t, 0, 64, 0, 32));
    coopMatLoadTensorNV(mb, a, 0, sliceTensorLayoutNV(t, 0, 64, 0, 32),
                        createTensorViewNV(2, false, 1, 0));
    acc = coopMatMulAdd(ma, mb, acc);
    coopMatStoreTensorNV(acc, c, 0, sliceTensorLayoutNV(t, 0, 64, 0, 64));
}
