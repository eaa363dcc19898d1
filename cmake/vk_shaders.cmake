# vk_shaders.cmake: the vulkan backend's shader variants, compiled to SPIR-V,
# validated and embedded in the library (included by CMakeLists.txt's
# "---- Vulkan shaders" section).
#
# The table below is the one list of variants. A variant is a name (what
# src/backend/vulkan/*.c passes to chm_vk_run), a source in shaders/ and the
# -D defines that make it from that source (STYLE.md habit 11: variants are
# never copied files). chimera_vk_variant_sg adds an `_nosg` twin built with
# CHM_NO_SUBGROUP for shaders that reduce with subgroup operations.
# chimera_vk_variant_dt (and _sg_dt) make an op's f32 variant plus `_bf16`
# and `_f16` ones built with DT_BF16 / DT_F16 (shaders/dt.glsl): the same
# shader on 16-bit tensors, loaded into f32 and rounded once on store.
#
# Two ways to get the SPIR-V:
#  * glslc (default): each variant is compiled with
#    `glslc -O --target-env=vulkan1.2` and checked with `spirv-val`.
#  * -DCHIMERA_SPIRV_DIR=<dir>: for machines without glslc (the GPU machine).
#    The .spv files and manifest.txt are taken from <dir>, which this build
#    writes on a machine with glslc:
#        cmake --build build --target chimera_spirv_export
#    (into CHIMERA_SPIRV_EXPORT_DIR, default <build>/spirv-export; copy or
#    carry that folder along with the tree). manifest.txt holds a hash of
#    shaders/ and of this file: configuring against a stale set stops with a
#    message. spirv-val still runs on the imported files when it is installed.
# Either way every variant is embedded as a uint32_t array in
# <build>/generated/vk_shaders.c (table chm_vk_shaders, sorted by name).

set(CHIMERA_SPIRV_DIR "" CACHE PATH "Take the shaders' SPIR-V from this folder (made by the chimera_spirv_export target) instead of running glslc")
set(CHIMERA_SPIRV_EXPORT_DIR "${CMAKE_BINARY_DIR}/spirv-export" CACHE PATH "Where the chimera_spirv_export target writes the SPIR-V set")

set(CHIMERA_VK_VARIANTS "")
macro(chimera_vk_variant name src)
  list(APPEND CHIMERA_VK_VARIANTS ${name})
  set(CHIMERA_VK_SRC_${name} ${src})
  set(CHIMERA_VK_DEFS_${name} ${ARGN})
endmacro()
# Variants written for the modern glslang (CMakeLists.txt: CHIMERA_GLSLC_MODERN; GLSL that
# Debian's glslang 12 rejects: KHR/NV2 cooperative matrices, bf16): in the table only where that
# toolchain was found (or where CHIMERA_SPIRV_DIR holds them); the backend looks every variant
# up by name and takes its older path when one is absent. Compiled for vulkan1.3 (SPIR-V 1.6).
macro(chimera_vk_variant_new name src)
  if(CHIMERA_GLSLC_MODERN OR (CHIMERA_SPIRV_DIR AND EXISTS ${CHIMERA_SPIRV_DIR}/${name}.spv))
    chimera_vk_variant(${name} ${src} ${ARGN})
    set(CHIMERA_VK_NEW_${name} ON)
  endif()
endmacro()
macro(chimera_vk_variant_sg name src)
  chimera_vk_variant(${name} ${src} ${ARGN})
  chimera_vk_variant(${name}_nosg ${src} ${ARGN} CHM_NO_SUBGROUP)
endmacro()
macro(chimera_vk_variant_dt name src)
  chimera_vk_variant(${name} ${src} ${ARGN})
  chimera_vk_variant(${name}_bf16 ${src} ${ARGN} DT_BF16)
  chimera_vk_variant(${name}_f16 ${src} ${ARGN} DT_F16)
endmacro()
macro(chimera_vk_variant_sg_dt name src)
  chimera_vk_variant_sg(${name} ${src} ${ARGN})
  chimera_vk_variant_sg(${name}_bf16 ${src} ${ARGN} DT_BF16)
  chimera_vk_variant_sg(${name}_f16 ${src} ${ARGN} DT_F16)
endmacro()

# ---- the variant table ----------------------------------------------------------
#                    name                     source              defines
chimera_vk_variant(fill_16                  fill.comp           WORD_BITS=16)
chimera_vk_variant(fill_32                  fill.comp           WORD_BITS=32)
chimera_vk_variant(fill_64                  fill.comp           WORD_BITS=64)
chimera_vk_variant(fill_128                 fill.comp           WORD_BITS=128)
chimera_vk_variant(copy_16                  copy.comp           WORD_BITS=16)
chimera_vk_variant(copy_32                  copy.comp           WORD_BITS=32)
chimera_vk_variant(copy_128                 copy.comp           WORD_BITS=128)
foreach(_s f32 bf16 f16)
  foreach(_d f32 bf16 f16)
    if(NOT _s STREQUAL _d)
      string(TOUPPER ${_s} _S)
      string(TOUPPER ${_d} _D)
      chimera_vk_variant(cast_${_s}_${_d}   cast.comp           SRC_${_S} DST_${_D})
    endif()
  endforeach()
endforeach()
chimera_vk_variant_dt(add                   add.comp)
chimera_vk_variant_dt(scale                 scale.comp)
chimera_vk_variant_dt(axpy                  axpy.comp)
chimera_vk_variant_dt(sum_rows              sum_rows.comp)
chimera_vk_variant_dt(sum_rows_partial      sum_rows.comp       PARTIAL)
chimera_vk_variant(sum_rows_f32_bf16        sum_rows.comp       F32_IN DT_BF16)
chimera_vk_variant(sum_rows_f32_f16         sum_rows.comp       F32_IN DT_F16)
chimera_vk_variant_sg_dt(rmsnorm_fwd        rmsnorm.comp)
chimera_vk_variant_sg_dt(rmsnorm_bwd_dx     rmsnorm_bwd.comp    DX)
chimera_vk_variant_dt(rmsnorm_bwd_dw        rmsnorm_bwd.comp    DW)
chimera_vk_variant_dt(rmsnorm_bwd_dw_partial rmsnorm_bwd.comp   DW PARTIAL)
chimera_vk_variant_dt(swiglu_fwd            swiglu.comp)
chimera_vk_variant_dt(swiglu_bwd            swiglu_bwd.comp)
chimera_vk_variant_dt(embedding_fwd         embedding.comp)
chimera_vk_variant(embedding_bwd_link       embedding_bwd.comp  LINK)
chimera_vk_variant_dt(embedding_bwd_sum     embedding_bwd.comp  SUM)
chimera_vk_variant_sg_dt(sum_squares        sum_squares.comp    PARTIAL)
chimera_vk_variant_sg(sum_squares_final     sum_squares.comp)
# adamw_step[_g<grad dtype>][_<param_lowp dtype>]: the f32 master step with an
# f32, bf16 or f16 gradient, writing a rounded 16-bit copy of param or not.
foreach(_g "" bf16 f16)
  foreach(_l "" bf16 f16)
    set(_name adamw_step)
    set(_defs "")
    if(_g)
      string(TOUPPER ${_g} _G)
      string(APPEND _name _g${_g})
      list(APPEND _defs DT_${_G})
    endif()
    if(_l)
      string(TOUPPER ${_l} _L)
      string(APPEND _name _${_l})
      list(APPEND _defs LOWP_${_L})
    endif()
    chimera_vk_variant(${_name}             adamw.comp          ${_defs})
  endforeach()
endforeach()
# --- vk-a ops ---
chimera_vk_variant(matmul                   matmul.comp)
chimera_vk_variant(matmul_grouped           matmul.comp         GROUPED)
foreach(_t f16 bf16)
  string(TOUPPER ${_t} _T)
  chimera_vk_variant(matmul_${_t}           matmul.comp         DT_${_T})
  chimera_vk_variant(matmul_grouped_${_t}   matmul.comp         DT_${_T} GROUPED)
  # Cooperative matrices (NVIDIA tensor cores), where this glslc compiles
  # GL_NV_cooperative_matrix (the probe in CMakeLists.txt) or an imported
  # SPIR-V set carries them; the backend looks them up at run time.
  # The same shader with the matrix operations in plain GLSL, for tests on any device.
  chimera_vk_variant(matmul_cm_emu_${_t}    matmul_cm.comp      DT_${_T} CM_EMULATE)
  chimera_vk_variant(matmul_grouped_cm_emu_${_t} matmul_cm.comp DT_${_T} CM_EMULATE GROUPED)
  if(CHIMERA_GLSLC_COOPMAT_NV OR (CHIMERA_SPIRV_DIR AND EXISTS ${CHIMERA_SPIRV_DIR}/matmul_cm_nv_${_t}.spv))
    chimera_vk_variant(matmul_cm_nv_${_t}   matmul_cm.comp      DT_${_T})
    chimera_vk_variant(matmul_grouped_cm_nv_${_t} matmul_cm.comp DT_${_T} GROUPED)
  endif()
  # The same shader on VK_KHR_cooperative_matrix (AMD, Intel), where the modern glslang is found.
  chimera_vk_variant_new(matmul_cm_khr_${_t}  matmul_cm.comp      DT_${_T} CM_KHR)
  chimera_vk_variant_new(matmul_grouped_cm_khr_${_t} matmul_cm.comp DT_${_T} CM_KHR GROUPED)
endforeach()
# bf16 operands on bf16 matrices as stored (VK_KHR_shader_bfloat16; no scaling pass), and the
# same emulated for CI.
chimera_vk_variant(matmul_cm_emu_bf16n      matmul_cm.comp      DT_BF16 CM_BF16_NATIVE CM_EMULATE)
chimera_vk_variant(matmul_grouped_cm_emu_bf16n matmul_cm.comp   DT_BF16 CM_BF16_NATIVE CM_EMULATE GROUPED)
chimera_vk_variant_new(matmul_cm_khr_bf16n  matmul_cm.comp      DT_BF16 CM_BF16_NATIVE CM_KHR)
chimera_vk_variant_new(matmul_grouped_cm_khr_bf16n matmul_cm.comp DT_BF16 CM_BF16_NATIVE CM_KHR GROUPED)
# Cooperative matrices 2 (NV, workgroup scope; KHR cooperative matrices, bf16 types): f16 and
# bf16 operands read as stored, no scaling pass. Only where the modern glslang is found.
foreach(_t f16 bf16)
  string(TOUPPER ${_t} _T)
  chimera_vk_variant_new(matmul_cm2_${_t}         matmul_cm2.comp DT_${_T})
  chimera_vk_variant_new(matmul_grouped_cm2_${_t} matmul_cm2.comp DT_${_T} GROUPED)
endforeach()
# Thin products with a long sum (A^T B, one side at most 16 or 64 wide), split over K.
chimera_vk_variant_dt(matmul_splitk_part16  matmul_splitk.comp  PART SMALL=16)
chimera_vk_variant_dt(matmul_splitk_part64  matmul_splitk.comp  PART SMALL=64)
chimera_vk_variant_dt(matmul_splitk_sum     matmul_splitk.comp  SUM)
# bf16 operands scaled into f16's range for matmul_cm.comp's bf16 variants (exponents, then values).
chimera_vk_variant(cm_scale_exp             cm_scale.comp       EXP)
chimera_vk_variant(cm_scale_apply           cm_scale.comp)
# tools/vk_bench's read-bandwidth probe (issue 6: what bounds matmul_cm.comp's staging).
chimera_vk_variant(l2_probe                 l2_probe.comp)
# tools/vk_bench's cooperative-matrix probe (issue 6), never used by the backend:
# PLAIN stand-ins everywhere (they test the probe's plumbing), the real ones where
# this glslc compiles GL_NV_cooperative_matrix. Load variants: sh(ared) or gl(obal)
# memory, u4 (uvec4) or h (f16) arrays, then A and B read r(ow)- or c(olumn)-major.
chimera_vk_variant(cm_probe_mma_plain       cm_probe_mma.comp   PLAIN)
chimera_vk_variant(cm_probe_load_plain      cm_probe_load.comp  PLAIN)
chimera_vk_variant(cm_probe_load_plain_gl   cm_probe_load.comp  PLAIN GLOBAL)
if(CHIMERA_GLSLC_COOPMAT_NV OR (CHIMERA_SPIRV_DIR AND EXISTS ${CHIMERA_SPIRV_DIR}/cm_probe_mma.spv))
  chimera_vk_variant(cm_probe_mma              cm_probe_mma.comp)
  chimera_vk_variant(cm_probe_mma_h            cm_probe_mma.comp   ACC_F16)
  chimera_vk_variant(cm_probe_mma_dyn          cm_probe_mma.comp   DYNAMIC)
  chimera_vk_variant(cm_probe_load_sh_u4_rc    cm_probe_load.comp)
  chimera_vk_variant(cm_probe_load_sh_u4_rc_n8 cm_probe_load.comp  FRAG_N=8u)
  chimera_vk_variant(cm_probe_load_sh_u4_rr    cm_probe_load.comp  B_ROW)
  chimera_vk_variant(cm_probe_load_sh_u4_rr_n8 cm_probe_load.comp  B_ROW FRAG_N=8u)
  chimera_vk_variant(cm_probe_load_sh_u4_cr    cm_probe_load.comp  A_COL B_ROW)
  chimera_vk_variant(cm_probe_load_sh_u4_cc    cm_probe_load.comp  A_COL)
  chimera_vk_variant(cm_probe_load_sh_h_rc     cm_probe_load.comp  HALF)
  chimera_vk_variant(cm_probe_load_sh_h_rc_n8  cm_probe_load.comp  HALF FRAG_N=8u)
  chimera_vk_variant(cm_probe_load_sh_h_rr     cm_probe_load.comp  HALF B_ROW)
  chimera_vk_variant(cm_probe_load_gl_u4_rc    cm_probe_load.comp  GLOBAL)
  chimera_vk_variant(cm_probe_load_gl_u4_rc_n8 cm_probe_load.comp  GLOBAL FRAG_N=8u)
  chimera_vk_variant(cm_probe_load_gl_u4_rr    cm_probe_load.comp  GLOBAL B_ROW)
  chimera_vk_variant(cm_probe_load_gl_h_rc     cm_probe_load.comp  GLOBAL HALF)
endif()
# The same on KHR matrices (`_khr`; vk_bench runs the flavour the backend opened with).
foreach(_p "mma;cm_probe_mma.comp;" "mma_dyn;cm_probe_mma.comp;DYNAMIC"
           "load_sh_u4_rc;cm_probe_load.comp;" "load_sh_u4_rc_n8;cm_probe_load.comp;FRAG_N=8u"
           "load_sh_u4_rr;cm_probe_load.comp;B_ROW" "load_sh_u4_rr_n8;cm_probe_load.comp;B_ROW FRAG_N=8u"
           "load_sh_u4_cr;cm_probe_load.comp;A_COL B_ROW" "load_sh_u4_cc;cm_probe_load.comp;A_COL"
           "load_sh_h_rc;cm_probe_load.comp;HALF" "load_sh_h_rc_n8;cm_probe_load.comp;HALF FRAG_N=8u"
           "load_sh_h_rr;cm_probe_load.comp;HALF B_ROW" "load_gl_u4_rc;cm_probe_load.comp;GLOBAL"
           "load_gl_u4_rc_n8;cm_probe_load.comp;GLOBAL FRAG_N=8u"
           "load_gl_u4_rr;cm_probe_load.comp;GLOBAL B_ROW" "load_gl_h_rc;cm_probe_load.comp;GLOBAL HALF")
  list(GET _p 0 _n)
  list(GET _p 1 _src)
  list(GET _p 2 _defs)
  separate_arguments(_defs)
  chimera_vk_variant_new(cm_probe_${_n}_khr ${_src} CM_KHR ${_defs})
endforeach()
chimera_vk_variant_dt(exp_fwd               exp.comp)
chimera_vk_variant_dt(exp_bwd               exp.comp            BWD)
chimera_vk_variant_dt(row_scale_fwd         row_scale.comp      FWD)
chimera_vk_variant_sg_dt(row_scale_bwd      row_scale.comp      BWD)
chimera_vk_variant_dt(bce_logits            bce_logits.comp)
chimera_vk_variant_dt(rope_fwd              rope.comp)
chimera_vk_variant_dt(rope_bwd              rope.comp           BWD)
chimera_vk_variant_dt(gather_rows           gather_rows.comp)
chimera_vk_variant(scatter_add_rows_count   scatter_add_rows.comp COUNT)
chimera_vk_variant(scatter_add_rows_scan    scatter_add_rows.comp SCAN)
chimera_vk_variant(scatter_add_rows_place   scatter_add_rows.comp PLACE)
chimera_vk_variant(scatter_add_rows_sort    scatter_add_rows.comp SORT)
chimera_vk_variant_dt(scatter_add_rows_sum  scatter_add_rows.comp SUM)
chimera_vk_variant(scatter_add_rows_list   scatter_add_rows.comp LIST)
chimera_vk_variant_dt(scatter_add_rows_sum_bounded scatter_add_rows.comp SUM BOUNDED)
chimera_vk_variant_dt(router_topk_route     router_topk.comp    ROUTE)
chimera_vk_variant(router_topk_plan         router_topk.comp    PLAN)
chimera_vk_variant_dt(router_topk_bwd       router_topk_bwd.comp)
chimera_vk_variant_dt(select_topk           select_topk.comp)
chimera_vk_variant_dt(select_topk_rank      select_topk.comp    RANK)
chimera_vk_variant(select_topk_place        select_topk.comp    PLACE)
chimera_vk_variant_sg_dt(cross_entropy      cross_entropy.comp)
chimera_vk_variant_dt(moe_aux_rows          moe_aux.comp        ROWS)
chimera_vk_variant_sg_dt(moe_aux_cols       moe_aux.comp        COLS)
chimera_vk_variant_sg(moe_aux_loss          moe_aux.comp        LOSS)
chimera_vk_variant_dt(moe_aux_grad          moe_aux.comp        GRAD)
# --- end vk-a ops ---
# --- vk-b ops: attention, selective scan, causal conv1d ---
chimera_vk_variant_dt(attention_fwd         attention_fwd.comp)
chimera_vk_variant_dt(attention_decode      attention_fwd.comp  DECODE)
chimera_vk_variant_dt(attention_bwd_delta   attention_bwd.comp  DELTA)
chimera_vk_variant_dt(attention_bwd_dq      attention_bwd.comp  DQ)
chimera_vk_variant_dt(attention_bwd_dkv     attention_bwd.comp  DKV)
chimera_vk_variant_dt(attention_bwd_dkv_reg attention_bwd.comp  DKV DKV_EREG)
# attention_fwd of f16/bf16 tensors on cooperative matrices (emulated for CI, like matmul_cm)
foreach(_t bf16 f16)
  string(TOUPPER ${_t} _T)
  chimera_vk_variant(attention_cm_emu_${_t} attention_cm.comp   DT_${_T} CM_EMULATE)
  if(CHIMERA_GLSLC_COOPMAT_NV OR (CHIMERA_SPIRV_DIR AND EXISTS ${CHIMERA_SPIRV_DIR}/attention_cm_nv_${_t}.spv))
    chimera_vk_variant(attention_cm_nv_${_t} attention_cm.comp  DT_${_T})
  endif()
  chimera_vk_variant_new(attention_cm_khr_${_t} attention_cm.comp DT_${_T} CM_KHR)
endforeach()
# attention_bwd's dq and dk/dv passes of f16/bf16 tensors on cooperative matrices (emulated for CI)
foreach(_t bf16 f16)
  string(TOUPPER ${_t} _T)
  chimera_vk_variant(attention_bwd_cm_dq_emu_${_t}  attention_bwd_cm.comp DT_${_T} CM_EMULATE DQ)
  chimera_vk_variant(attention_bwd_cm_dkv_emu_${_t} attention_bwd_cm.comp DT_${_T} CM_EMULATE)
  if(CHIMERA_GLSLC_COOPMAT_NV OR (CHIMERA_SPIRV_DIR AND EXISTS ${CHIMERA_SPIRV_DIR}/attention_bwd_cm_dq_nv_${_t}.spv))
    chimera_vk_variant(attention_bwd_cm_dq_nv_${_t}  attention_bwd_cm.comp DT_${_T} DQ)
    chimera_vk_variant(attention_bwd_cm_dkv_nv_${_t} attention_bwd_cm.comp DT_${_T})
  endif()
  chimera_vk_variant_new(attention_bwd_cm_dq_khr_${_t}  attention_bwd_cm.comp DT_${_T} CM_KHR DQ)
  chimera_vk_variant_new(attention_bwd_cm_dkv_khr_${_t} attention_bwd_cm.comp DT_${_T} CM_KHR)
endforeach()
# bf16 attention on bf16 matrices as stored (VK_KHR_shader_bfloat16: no scaled staging), and
# the same emulated for CI.
chimera_vk_variant(attention_cm_emu_bf16n           attention_cm.comp     DT_BF16 CM_BF16_NATIVE CM_EMULATE)
chimera_vk_variant_new(attention_cm_khr_bf16n       attention_cm.comp     DT_BF16 CM_BF16_NATIVE CM_KHR)
chimera_vk_variant(attention_bwd_cm_dq_emu_bf16n    attention_bwd_cm.comp DT_BF16 CM_BF16_NATIVE CM_EMULATE DQ)
chimera_vk_variant(attention_bwd_cm_dkv_emu_bf16n   attention_bwd_cm.comp DT_BF16 CM_BF16_NATIVE CM_EMULATE)
chimera_vk_variant_new(attention_bwd_cm_dq_khr_bf16n  attention_bwd_cm.comp DT_BF16 CM_BF16_NATIVE CM_KHR DQ)
chimera_vk_variant_new(attention_bwd_cm_dkv_khr_bf16n attention_bwd_cm.comp DT_BF16 CM_BF16_NATIVE CM_KHR)
chimera_vk_variant_dt(selective_scan_fwd    selective_scan_fwd.comp)
chimera_vk_variant_dt(selective_scan_step   selective_scan_fwd.comp STEP)
chimera_vk_variant_dt(selective_scan_fwd_save selective_scan_fwd.comp SAVE)
chimera_vk_variant_dt(selective_scan_bwd    selective_scan_bwd.comp)
chimera_vk_variant_dt(selective_scan_bwd_sum selective_scan_bwd.comp SUM)
chimera_vk_variant_dt(selective_scan_bwd_sg selective_scan_bwd_sg.comp)
chimera_vk_variant_dt(selective_scan_bwd_sg_l8 selective_scan_bwd_sg.comp L8)
chimera_vk_variant_dt(selective_scan_bwd_sg_half selective_scan_bwd_sg.comp HALF)
chimera_vk_variant_dt(causal_conv1d_fwd     causal_conv1d_fwd.comp)
chimera_vk_variant_dt(causal_conv1d_bwd_fused causal_conv1d_bwd.comp FUSED)
chimera_vk_variant_dt(causal_conv1d_bwd_grad causal_conv1d_bwd.comp GRAD)
chimera_vk_variant_dt(causal_conv1d_bwd_dx  causal_conv1d_bwd.comp DX)
chimera_vk_variant_dt(causal_conv1d_bwd_dw  causal_conv1d_bwd.comp DW)
chimera_vk_variant_dt(causal_conv1d_bwd_dw_partial causal_conv1d_bwd.comp DW PARTIAL)
# 16-bit tensors: the fused pass on channel pairs (32-bit words); g in the f32 scratch of
# the fused SiLU (the three older passes)
foreach(_d bf16 f16)
  string(TOUPPER ${_d} _D)
  chimera_vk_variant(causal_conv1d_bwd_fused_pair_${_d} causal_conv1d_bwd.comp FUSED PAIR DT_${_D})
  chimera_vk_variant(causal_conv1d_bwd_dx_gf32_${_d} causal_conv1d_bwd.comp DX G_F32 DT_${_D})
  chimera_vk_variant(causal_conv1d_bwd_dw_gf32_${_d} causal_conv1d_bwd.comp DW G_F32 DT_${_D})
  chimera_vk_variant(causal_conv1d_bwd_dw_partial_gf32_${_d} causal_conv1d_bwd.comp
                     DW PARTIAL G_F32 DT_${_D})
endforeach()
# --- end of vk-b ops ---
# ----------------------------------------------------------------------------------

list(SORT CHIMERA_VK_VARIANTS)  # the C side looks names up by binary search

# Check an imported SPIR-V set (CHIMERA_SPIRV_DIR) against this tree's shaders, at configure time.
function(chimera_vk_check_import)
  include(${CMAKE_SOURCE_DIR}/cmake/vk_shader_hash.cmake)
  chimera_vk_shader_hash(${CMAKE_SOURCE_DIR} _hash)
  set(_manifest ${CHIMERA_SPIRV_DIR}/manifest.txt)
  if(NOT EXISTS ${_manifest})
    message(FATAL_ERROR "CHIMERA_SPIRV_DIR=${CHIMERA_SPIRV_DIR} has no manifest.txt: make it with `cmake --build <build> --target chimera_spirv_export` on a machine with glslc")
  endif()
  file(STRINGS ${_manifest} _lines REGEX "^sources ")
  if(NOT _lines STREQUAL "sources ${_hash}")
    message(FATAL_ERROR "the SPIR-V in ${CHIMERA_SPIRV_DIR} was compiled from other shader sources than this tree's (shaders/ or cmake/vk_shaders.cmake changed): export it again")
  endif()
  set(_missing "")
  foreach(v IN LISTS CHIMERA_VK_VARIANTS)
    if(NOT EXISTS ${CHIMERA_SPIRV_DIR}/${v}.spv)
      list(APPEND _missing ${v})
    endif()
  endforeach()
  if(_missing)
    message(FATAL_ERROR "CHIMERA_SPIRV_DIR=${CHIMERA_SPIRV_DIR} lacks: ${_missing}")
  endif()
endfunction()

# The rule that makes <build>/spirv/<variant>.spv, by glslc or by copying from CHIMERA_SPIRV_DIR.
function(chimera_vk_spv_rule v spv)
  set(_src ${CMAKE_SOURCE_DIR}/shaders/${CHIMERA_VK_SRC_${v}})
  set(_val "")
  if(CHIMERA_SPIRV_VAL AND NOT CHIMERA_VK_NEW_${v})
    set(_val COMMAND ${CHIMERA_SPIRV_VAL} --target-env vulkan1.2 ${spv})
  endif()
  if(CHIMERA_SPIRV_DIR)
    add_custom_command(OUTPUT ${spv}
      COMMAND ${CMAKE_COMMAND} -E copy ${CHIMERA_SPIRV_DIR}/${v}.spv ${spv} ${_val}
      DEPENDS ${CHIMERA_SPIRV_DIR}/${v}.spv
      COMMENT "SPIR-V ${v} (from ${CHIMERA_SPIRV_DIR})" VERBATIM)
    return()
  endif()
  set(_defs "")
  foreach(d IN LISTS CHIMERA_VK_DEFS_${v})
    list(APPEND _defs -D${d})
  endforeach()
  file(GLOB _includes ${CMAKE_SOURCE_DIR}/shaders/*.glsl)
  if(CHIMERA_VK_NEW_${v})
    # tools/glslc_dl.c validates with the library's own (current) SPIRV-Tools: Debian's
    # spirv-val does not know these instructions.
    add_custom_command(OUTPUT ${spv}
      COMMAND ${CHIMERA_GLSLC_MODERN} --lib ${CHIMERA_GLSLANG_LIB_USED} -O
              --target-env=vulkan1.3 -fshader-stage=compute -I${CMAKE_SOURCE_DIR}/shaders
              ${_defs} -o ${spv} ${_src}
      DEPENDS ${_src} ${_includes} ${CMAKE_SOURCE_DIR}/cmake/vk_shaders.cmake
              ${CMAKE_SOURCE_DIR}/tools/glslc_dl.c
      COMMENT "glslc (modern glslang) ${v}" VERBATIM)
    return()
  endif()
  add_custom_command(OUTPUT ${spv}
    COMMAND ${CHIMERA_GLSLC} -O --target-env=vulkan1.2 -fshader-stage=compute
            -I${CMAKE_SOURCE_DIR}/shaders ${_defs} -o ${spv} ${_src}
    ${_val}
    DEPENDS ${_src} ${_includes} ${CMAKE_SOURCE_DIR}/cmake/vk_shaders.cmake
    COMMENT "glslc ${v}" VERBATIM)
endfunction()

# Compile (or import) every variant and embed them all into out_c; add the export target.
function(chimera_vk_shaders out_c)
  if(CHIMERA_SPIRV_DIR)
    chimera_vk_check_import()
  endif()
  set(_dir ${CMAKE_BINARY_DIR}/spirv)
  file(MAKE_DIRECTORY ${_dir})
  set(_spvs "")
  foreach(v IN LISTS CHIMERA_VK_VARIANTS)
    chimera_vk_spv_rule(${v} ${_dir}/${v}.spv)
    list(APPEND _spvs ${_dir}/${v}.spv)
  endforeach()
  string(REPLACE ";" "," _names "${CHIMERA_VK_VARIANTS}")
  list(LENGTH CHIMERA_VK_VARIANTS _count)
  add_custom_command(OUTPUT ${out_c}
    COMMAND ${CMAKE_COMMAND} -DOUT=${out_c} -DDIR=${_dir} -DNAMES=${_names}
            -P ${CMAKE_SOURCE_DIR}/cmake/embed_spirv.cmake
    DEPENDS ${_spvs} ${CMAKE_SOURCE_DIR}/cmake/embed_spirv.cmake
    COMMENT "Embedding ${_count} SPIR-V shader variants" VERBATIM)
  add_custom_target(chimera_spirv_export
    COMMAND ${CMAKE_COMMAND} -DSRC=${_dir} -DDST=${CHIMERA_SPIRV_EXPORT_DIR} -DNAMES=${_names}
            -DROOT=${CMAKE_SOURCE_DIR} -P ${CMAKE_SOURCE_DIR}/cmake/spirv_export.cmake
    DEPENDS ${_spvs}
    COMMENT "Exporting the SPIR-V set to ${CHIMERA_SPIRV_EXPORT_DIR}" VERBATIM)
endfunction()
