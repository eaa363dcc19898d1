/*
 * common.glsl: what every chimera compute shader includes after its #version
 * and #extension lines (STYLE.md habit 11).
 *
 * The template of a shader:
 *   #version 450, required extensions, optional ones under #ifdef;
 *   #include "common.glsl" (and reduce.glsl, half.glsl as needed);
 *   bindings in the op's argument order, inputs first, outputs last;
 *   one push_constant block whose first member is `uint off[NBIND]`, the
 *   element offset of each binding (vk_commands.c fills it: descriptors bind
 *   at aligned offsets, tensors start anywhere), then shapes and scalars;
 *   tunables as specialization constants: 0 = workgroup size, 1 = subgroup
 *   size, 2.. per shader. Variants (dtypes, fwd/bwd, subgroup or not) come
 *   from -D defines in cmake/vk_shaders.cmake, never from copied files.
 *
 * Shapes use tensor.h's letters; indices are 32-bit (a binding never
 * exceeds maxStorageBufferRange, so element counts fit).
 */
layout(constant_id = 0) const uint WG_SIZE = 256;       /* local_size_x, set by the host */
layout(constant_id = 1) const uint SUBGROUP_SIZE = 32;  /* the device's subgroup size */
layout(local_size_x_id = 0) in;

/* Linear workgroup index: the host spreads grids larger than maxComputeWorkGroupCount.x over y. */
uint chm_group() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }

/* Linear invocation index over the whole grid (one element per invocation). */
uint chm_index() { return chm_group() * WG_SIZE + gl_LocalInvocationID.x; }
