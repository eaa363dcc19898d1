# spirv_export.cmake: copy the compiled SPIR-V set and a manifest into DST,
# for building on a machine without glslc (-DCHIMERA_SPIRV_DIR=DST).
# Usage: cmake -DSRC=spirv -DDST=dir -DNAMES=a,b -DROOT=<source dir> -P spirv_export.cmake
include(${ROOT}/cmake/vk_shader_hash.cmake)
string(REPLACE "," ";" _names "${NAMES}")
file(MAKE_DIRECTORY ${DST})
chimera_vk_shader_hash(${ROOT} _hash)
set(_manifest "sources ${_hash}\n")
foreach(name IN LISTS _names)
  file(COPY_FILE ${SRC}/${name}.spv ${DST}/${name}.spv ONLY_IF_DIFFERENT)
  file(SHA256 ${SRC}/${name}.spv _h)
  string(APPEND _manifest "${name} ${_h}\n")
endforeach()
file(WRITE ${DST}/manifest.txt "${_manifest}")
list(LENGTH _names _n)
message(STATUS "chimera: ${_n} SPIR-V shader variants in ${DST}; configure with -DCHIMERA_SPIRV_DIR=${DST} where there is no glslc")
